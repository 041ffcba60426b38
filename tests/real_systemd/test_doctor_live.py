"""`opskit doctor` reads the live system: crash loops, a foreign port holder, a failed socket."""

from __future__ import annotations

import json

import pytest

from opskit.systemd.units import render_units
from tests.real_systemd import nspawn
from tests.real_systemd.demo import APP_DIR, demo_spec, squat, url

pytestmark = [pytest.mark.systemd, pytest.mark.timeout(600)]

OPSKIT = f"{nspawn.TOOL_VENV}/bin/opskit"


def doctor(box, *extra: str) -> tuple[int, list[dict]]:
    done = box.run(
        OPSKIT,
        "doctor",
        "demo",
        "--app",
        "demoapp:app",
        "--workdir",
        APP_DIR,
        "--venv",
        nspawn.SERVERS_VENV,
        "--project",
        APP_DIR,
        "--json",
        *extra,
        check=False,
        timeout=180,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, json.loads(done.stdout)["findings"]


def errors(findings: list[dict]) -> list[dict]:
    return [f for f in findings if f["severity"] == "error"]


def test_a_healthy_unit_gives_no_error(boot):
    box = boot("doctor-healthy")
    box.install_units(render_units(demo_spec("gunicorn", name="demo")))
    box.systemctl("start", "demo.service")
    box.wait_http(url("/health"), timeout=60)
    code, findings = doctor(box)
    assert errors(findings) == [], findings
    assert code == 0
    assert not [f for f in findings if f["check"] == "live-units"]


def test_a_restart_loop_is_an_error_with_its_cause(boot):
    box = boot("doctor-loop")
    spec = demo_spec("gunicorn", name="demo", venv="/opt/no-such-venv")
    box.install_units(render_units(spec))
    box.systemctl("start", "demo.service", check=False)
    box.wait_for(
        "a restart loop",
        lambda: box.show("demo.service", "SubState")["SubState"] == "auto-restart",
        timeout=30,
    )
    code, findings = doctor(box)
    assert code == 1
    live = [f for f in errors(findings) if f["check"] == "live-unit"]
    assert len(live) == 1, findings
    assert "restart loop" in live[0]["problem"]
    assert "203/EXEC" in live[0]["evidence"]
    assert "ExecStart=" in live[0]["fix"]


def test_a_foreign_port_holder_and_a_failed_socket(boot):
    box = boot("doctor-port")
    squat(box)
    # The socket unit cannot listen where http.server already does: it fails.
    spec = demo_spec("gunicorn", name="demo", socket=True)
    box.install_units(render_units(spec))
    box.systemctl("start", "demo.socket", check=False)
    box.wait_for(
        "a failed socket",
        lambda: box.show("demo.socket", "ActiveState")["ActiveState"] == "failed",
        timeout=30,
    )
    code, findings = doctor(box, "--set", "socket=true")
    assert code == 1
    found = {f["check"]: f for f in errors(findings)}
    assert "the socket demo.socket has failed" in found["live-unit"]["problem"], findings
    holder = found["port-holder"]
    assert "port 8000 is held by pid" in holder["evidence"]
    assert "http.server --bind 127.0.0.1 8000" in holder["evidence"]
