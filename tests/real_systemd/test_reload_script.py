"""The reload script's systemd mode on a real systemd: systemctl reload, restart, FIFO, refusal."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from opskit.reload.render import render_reload
from opskit.systemd.units import render_units
from tests.real_systemd.demo import PORT, demo_spec, set_version, url

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


#: Run inside the container: GET /pid on fresh connections from 4 threads until COUNT
#: different processes have answered, or TIMEOUT; prints the PIDs seen as JSON. Several
#: clients at once because one busy worker leaves the next connection to another, where
#: one client in a loop can be answered by the same worker every time (uWSGI often is).
_WARM = r"""
import http.client, json, sys, threading, time

port, count, timeout = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
seen, stop = set(), time.monotonic() + timeout


def client():
    while len(seen) < count and time.monotonic() < stop:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", "/pid", headers={"Connection": "close"})
            response = conn.getresponse()
            if response.status == 200:
                seen.add(int(response.read()))
        except (OSError, http.client.HTTPException):
            time.sleep(0.02)
        finally:
            conn.close()


threads = [threading.Thread(target=client) for _ in range(4)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(json.dumps(sorted(seen)))
"""


def wait_for_workers(box, count: int, timeout: float = 30.0) -> set[int]:
    """Wait until ``count`` different processes answer /pid; return their PIDs.

    A process that answers has imported the app, and so read VERSION: until then a
    worker is still booting and would read whatever VERSION says when it gets there.
    systemctl start returns before gunicorn has forked a single worker (its master
    sends READY=1 first), and gunicorn forks them one at a time with a random pause of
    up to 0.1 s between them (Arbiter.spawn_workers): the first /version answer says
    nothing about the others.
    """
    proc = box.python("-c", _WARM, str(PORT), str(count), str(timeout), timeout=timeout + 30)
    seen = set(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert len(seen) >= count, f"only workers {sorted(seen)} answered in {timeout}s"
    return seen


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
    # Every worker must serve version 1 before VERSION changes: one still booting would
    # read 2 and serve it before any reload, and the script would start from "2 -> 2".
    warm = wait_for_workers(box, spec.workers)
    main_before = box.main_pid(unit)
    set_version(demo_dir, "2")
    proc, seconds = _reload(box, "2")
    assert proc.returncode == 0, proc.stderr + box.journal(unit)
    assert f"reload: {how}" in proc.stderr
    assert "ok: version 1 -> 2" in proc.stderr
    restarted = spec.socket
    if not restarted:
        # The workers the script replaced are the ones that had answered version 1.
        old = re.search(r"workers ([\d ]*) -> ", proc.stderr)
        assert old and {int(pid) for pid in old.group(1).split()} == warm, proc.stderr
    for _ in range(8):
        assert box.http_get(url("/version")).body.strip() == "2"
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
    wait_for_workers(box, spec.workers)
    set_version(demo_dir, "2")
    with (demo_dir / "demoapp.py").open("a") as handle:
        handle.write(BROKEN)
    proc, _ = _reload(box, "2")
    assert proc.returncode == 1
    assert "FAILED: canary: the new code's server exited before it answered" in proc.stderr
    # The canary's own log lines, from its transient unit's journal, name the cause.
    assert "canary| " in proc.stderr and "RuntimeError" in proc.stderr, proc.stderr
    assert box.http_get(url("/version")).body.strip() == "1"
    assert box.main_pid(unit) == main_before
    # Nothing was signalled: systemd logged no reload of the unit.
    assert "Reloading" not in box.journal(unit)
    # The canary left no unit and no runtime directory behind.
    units = box.run("systemctl", "list-units", "--all", "--plain", "--no-legend", "demo-canary-*")
    assert units.stdout.strip() == "", units.stdout
    assert box.run("sh", "-c", "ls -d /run/demo-canary-* 2>/dev/null", check=False).stdout == ""


def test_stopped_service_is_reported(boot):
    spec = demo_spec("gunicorn", name="demo")
    box = boot("reload-stopped")
    unit = _install(box, spec)
    box.systemctl("stop", unit)
    proc, _ = _reload(box)
    assert proc.returncode == 1
    assert f"FAILED: {unit} has no running main process" in proc.stderr


def test_run_as_another_user_it_names_the_cause(boot):
    # The service runs as a dynamic user; the script as nobody cannot read its sockets.
    spec = demo_spec("gunicorn", name="demo")
    box = boot("reload-nonroot")
    unit = _install(box, spec)
    before = box.main_pid(unit)
    proc = box.run(
        "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", SCRIPT, check=False
    )
    assert proc.returncode == 2, proc.stderr
    assert f"cannot read the server's sockets in /proc/{before}/fd" in proc.stderr
    assert "run as root" in proc.stderr
    assert "does not listen" not in proc.stderr
    assert box.main_pid(unit) == before


def test_without_paths_the_processes_prove_the_reload(boot, demo_dir: Path):
    # The spec an app without /health and /version gets: "/" is probed, no version checked.
    spec = demo_spec("gunicorn", name="demo", health_path=None, version_path=None)
    box = boot("reload-nopaths")
    unit = _install(box, spec)
    warm = wait_for_workers(box, spec.workers)
    main_before = box.main_pid(unit)
    set_version(demo_dir, "2")
    proc, _ = _reload(box)
    assert proc.returncode == 0, proc.stderr + box.journal(unit)
    assert "ok: / answers 200, one server on port 8000" in proc.stderr
    assert "could not check the version: no version-path is set" in proc.stderr
    old = re.search(r"workers ([\d ]*) -> ", proc.stderr)
    assert old and {int(pid) for pid in old.group(1).split()} == warm, proc.stderr
    for _ in range(8):
        assert box.http_get(url("/version")).body.strip() == "2"
    assert box.main_pid(unit) == main_before


def test_a_health_path_the_app_does_not_serve_is_refused_before_any_signal(boot, demo_dir: Path):
    spec = demo_spec("gunicorn", name="demo", health_path="/healthz")
    box = boot("reload-nohealth")
    unit = _install(box, spec)
    main_before = box.main_pid(unit)
    wait_for_workers(box, spec.workers)
    set_version(demo_dir, "2")
    proc, _ = _reload(box, "2")
    assert proc.returncode == 1
    assert "FAILED: health-path /healthz answers '404 not found'" in proc.stderr
    assert box.http_get(url("/version")).body.strip() == "1"
    assert box.main_pid(unit) == main_before
    # Nothing was signalled: systemd logged no reload of the unit.
    assert "Reloading" not in box.journal(unit)
