"""The reload script's systemd mode on a real systemd: systemctl reload, restart, FIFO, refusal."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from opskit.reload.render import render_reload
from opskit.systemd.units import render_units
from tests.real_systemd.demo import demo_spec, set_version, url

pytestmark = [pytest.mark.systemd, pytest.mark.timeout(600)]

SCRIPT = "/opt/reload/reload-demo.sh"
BROKEN = '\nraise RuntimeError("a broken deploy")\n'


def _install(box, spec) -> str:
    """Install the units and the script, start the service; return the unit name."""
    box.install_units(render_units(spec))
    script = render_reload(spec)[0]
    box.write_file(SCRIPT, script.content, mode=script.mode)
    unit = f"{spec.name}.service"
    if spec.socket:
        box.systemctl("start", f"{spec.name}.socket")
    box.systemctl("start", unit)
    box.wait_http(url("/version"), timeout=60, body="1")
    return unit


def _wait_for_workers(box, count: int, timeout: float = 30.0) -> None:
    """Poll /pid until ``count`` different workers have answered (each has the app loaded)."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while len(seen) < count:
        assert time.monotonic() < deadline, f"only workers {seen} answered in {timeout}s"
        answer = box.http_get(url("/pid"))
        if answer.status == 200:
            seen.add(answer.body.strip())


def _reload(box, *args: str):
    started = time.monotonic()
    proc = box.run(SCRIPT, *args, check=False, timeout=180)
    return proc, time.monotonic() - started


@pytest.mark.parametrize(
    ("server", "overrides", "how"),
    [
        ("gunicorn", {}, "systemctl reload demo.service"),
        ("uvicorn", {"workers": 2}, "systemctl reload demo.service"),
        ("uvicorn", {"workers": 1, "socket": True}, "systemctl restart demo.service"),
        ("uwsgi", {}, "chain reload through /run/demo/uwsgi.fifo"),
    ],
)
def test_new_code_serves_after_the_script(server, overrides, how, boot, demo_dir: Path, measure):
    spec = demo_spec(server, name="demo", **overrides)
    box = boot(f"reload-{server}-{spec.workers}")
    unit = _install(box, spec)
    main_before = box.main_pid(unit)
    set_version(demo_dir, "2")
    proc, seconds = _reload(box, "2")
    assert proc.returncode == 0, proc.stderr + box.journal(unit)
    assert f"reload: {how}" in proc.stderr
    assert "ok: version 1 -> 2" in proc.stderr
    for _ in range(8):
        assert box.http_get(url("/version")).body.strip() == "2"
    restarted = spec.socket
    assert (box.main_pid(unit) != main_before) == restarted
    assert box.show(unit, "ActiveState")["ActiveState"] == "active"
    measure(f"reload script, {server} ({how}): exit 0 after {seconds:.2f} s")


def test_broken_code_keeps_the_old_code_serving(boot, demo_dir: Path):
    spec = demo_spec("gunicorn", name="demo")
    box = boot("reload-broken")
    unit = _install(box, spec)
    main_before = box.main_pid(unit)
    # Both workers must have imported the app before the code breaks: a worker still
    # booting would import the broken file, and gunicorn halts when a worker cannot boot.
    _wait_for_workers(box, spec.workers)
    set_version(demo_dir, "2")
    with (demo_dir / "demoapp.py").open("a") as handle:
        handle.write(BROKEN)
    proc, _ = _reload(box, "2")
    assert proc.returncode == 1
    assert "FAILED: preflight: the new code does not import" in proc.stderr
    assert box.http_get(url("/version")).body.strip() == "1"
    assert box.main_pid(unit) == main_before
    # Nothing was signalled: systemd logged no reload of the unit.
    assert "Reloading" not in box.journal(unit)


def test_stopped_service_is_reported(boot):
    spec = demo_spec("gunicorn", name="demo")
    box = boot("reload-stopped")
    unit = _install(box, spec)
    box.systemctl("stop", unit)
    proc, _ = _reload(box)
    assert proc.returncode == 1
    assert f"FAILED: {unit} has no running main process" in proc.stderr
