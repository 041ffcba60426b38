"""Each server's default hardened unit starts on a real systemd, serves, and is really sandboxed."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from opskit.systemd.analyze import security_score
from opskit.systemd.units import render_units
from tests.real_systemd.demo import demo_spec, url

pytestmark = [pytest.mark.systemd, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
SERVERS = ["gunicorn", "uvicorn", "uwsgi"]


def documented_scores() -> dict[str, float]:
    """The "default" row of the measured-scores table in docs/hardening.md, by column."""
    lines = (ROOT / "docs" / "hardening.md").read_text(encoding="utf-8").splitlines()
    header = next(line for line in lines if line.startswith("| profile | gunicorn |"))
    row = next(line for line in lines if line.startswith("| default |"))
    names = [c.strip().replace("`", "").replace("uWSGI", "uwsgi") for c in header.split("|")[2:-1]]
    values = [float(c) for c in row.split("|")[2:-1]]
    return dict(zip(names, values, strict=True))


def _status(box, pid: int) -> dict[str, str]:
    pairs = (line.partition(":") for line in box.read_file(f"/proc/{pid}/status").splitlines())
    return {k: v.strip() for k, _, v in pairs}


def _root_mount_options(box, pid: int) -> set[str]:
    # mountinfo: id parent major:minor root mountpoint options ... (proc(5))
    for line in box.read_file(f"/proc/{pid}/mountinfo").splitlines():
        fields = line.split()
        if fields[4] == "/":
            root_options = set(fields[5].split(","))
    return root_options


@pytest.mark.parametrize("server", SERVERS)
def test_default_hardened_unit_serves_sandboxed(server, boot, tmp_path, measure):
    spec = demo_spec(server)
    files = render_units(spec)
    (tmp_path / files[0].name).write_text(files[0].content)
    box = boot(f"hardened-{server}")
    box.install_units(files)
    started = time.monotonic()
    box.systemctl("start", f"{spec.name}.service")
    box.wait_http(url("/health"), timeout=60)
    seconds = time.monotonic() - started
    measure(f"{server}: default hardened unit, systemctl start to /health 200: {seconds:.2f} s")
    assert box.show(f"{spec.name}.service", "ActiveState")["ActiveState"] == "active"

    pid = box.main_pid(f"{spec.name}.service")
    status = _status(box, pid)
    assert status["NoNewPrivs"] == "1"
    assert status["Seccomp"] == "2"  # 2 = filter mode
    assert int(status["CapEff"], 16) == 0
    assert int(status["CapBnd"], 16) == 0
    assert "ro" in _root_mount_options(box, pid)
    # The service still writes where it must: its runtime directory.
    assert box.run("test", "-d", f"/run/{spec.name}", check=False).returncode == 0

    score = security_score(tmp_path / files[0].name)
    assert score == documented_scores()[server], box.journal(f"{spec.name}.service")
