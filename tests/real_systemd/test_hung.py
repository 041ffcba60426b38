"""Hung and leaking services under a real systemd: the watchdog, worker timeouts, recycling.

The app is this file's own (HANG_APP, bound at /srv/hang): a route that deadlocks the
worker that takes it, and one that leaks 1 MiB per request, capped at 64 MiB per
process so that no regression can eat the machine's memory.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from opskit.systemd.units import render_units
from opskit.systemd.watchdog import bound
from tests.real_systemd import nspawn
from tests.real_systemd.demo import demo_spec, url

pytestmark = [pytest.mark.systemd, pytest.mark.timeout(600)]

HANG_DIR = "/srv/hang"
HANG_APP = """\
import os
import threading

LEAK = []
LOCK = threading.Lock()


def _answer(path):
    if path == "/hang":
        LOCK.acquire()
        LOCK.acquire()  # never returns: this worker is deadlocked
    if path == "/leak" and len(LEAK) < 64:
        LEAK.append(bytearray(1 << 20))
    return f"{os.getpid()} {len(LEAK)}\\n".encode()


def app(environ, start_response):
    body = _answer(environ.get("PATH_INFO") or "/")
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


async def asgi(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = _answer(scope.get("path") or "/")
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})
"""
APPS = {"gunicorn": "hangapp:app", "uwsgi": "hangapp:app", "uvicorn": "hangapp:asgi"}


@pytest.fixture
def hang_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "hang"
    directory.mkdir()
    (directory / "hangapp.py").write_text(HANG_APP)
    directory.chmod(0o755)
    (directory / "hangapp.py").chmod(0o644)
    return directory


def spec_for(server: str, name: str, **overrides):
    raw = {
        "app": APPS[server],
        "working_directory": HANG_DIR,
        "health_path": None,
        "version_path": None,
        "restart_sec": "1",
    }
    raw.update(overrides)
    return demo_spec(server, name=name, **raw)


def start(boot, hang_dir: Path, box_name: str, spec):
    box = boot(box_name, binds=(nspawn.Bind(hang_dir, HANG_DIR),), app=False)
    box.install_units(render_units(spec))
    box.systemctl("start", f"{spec.name}.service")
    box.wait_http(url("/"), timeout=60)
    return box


def props(box, spec) -> dict[str, str]:
    return box.show(f"{spec.name}.service", "MainPID", "NRestarts", "ActiveState")


def assert_not_restarted(box, spec, before: dict[str, str]) -> None:
    """The same main process as ``before``, and no restart since."""
    after = props(box, spec)
    assert after["MainPID"] == before["MainPID"] and after["NRestarts"] == before["NRestarts"]


def wait_restarted(box, spec, before: dict[str, str], since: float) -> None:
    """Wait (at most 120 s from ``since``) until systemd has restarted the service."""
    while props(box, spec)["NRestarts"] == before["NRestarts"]:
        assert time.monotonic() < since + 120, box.journal(f"{spec.name}-watchdog.service")
        time.sleep(0.2)


def fire_and_forget(box, path: str) -> None:
    """Send a request that will never be answered, and let the client give up at once."""
    script = (
        "import socket; s = socket.create_connection(('127.0.0.1', 8000)); "
        f"s.sendall(b'GET {path} HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n'); import time; time.sleep(0.5)"
    )
    box.run(nspawn.SYSTEM_PYTHON, "-c", script)


def serving_again(box, since: float, timeout: float) -> float:
    """Seconds from ``since`` until the app answers again (fails after ``timeout``)."""
    box.wait_http(url("/"), timeout=timeout)
    return time.monotonic() - since


@pytest.mark.parametrize("server", ["gunicorn", "uvicorn", "uwsgi"])
def test_a_frozen_service_is_killed_and_serves_again(boot, hang_dir, measure, server):
    spec = spec_for(server, f"frozen-{server}", watchdog=2, watchdog_failures=2)
    box = start(boot, hang_dir, f"frozen-{server}", spec)
    before = props(box, spec)
    # Every process of the service stopped in its tracks: nothing answers, nothing exits.
    frozen = time.monotonic()
    box.run("systemctl", "kill", "--signal=SIGSTOP", f"{spec.name}.service")
    deadline = frozen + 120
    while props(box, spec)["MainPID"] in ("0", before["MainPID"]):
        assert time.monotonic() < deadline, box.journal(f"{spec.name}-watchdog.service")
        time.sleep(0.2)
    took = serving_again(box, frozen, timeout=60)
    after = props(box, spec)
    assert int(after["NRestarts"]) == int(before["NRestarts"]) + 1
    journal = box.journal(f"{spec.name}-watchdog.service")
    assert "killing it (SIGKILL)" in journal and "killed at 4 s" in journal
    measure(
        f"watchdog, {server}: frozen (SIGSTOP) to serving again {took:.1f} s "
        f"(bound {bound(spec)} s + RestartSec 1 s + start)"
    )


def test_a_deadlocked_app_is_killed_and_serves_again(boot, hang_dir, measure):
    # One worker and no worker timeout: only the watchdog can end the deadlock.
    spec = spec_for("gunicorn", "deadlock", workers=1, worker_timeout=0, watchdog=2,
                    watchdog_failures=2)  # fmt: skip
    box = start(boot, hang_dir, "deadlock", spec)
    before = props(box, spec)
    stuck = time.monotonic()
    fire_and_forget(box, "/hang")
    wait_restarted(box, spec, before, stuck)
    took = serving_again(box, stuck, timeout=60)
    assert props(box, spec)["MainPID"] != before["MainPID"]
    measure(f"watchdog, gunicorn: deadlocked app to serving again {took:.1f} s")


@pytest.mark.parametrize("server", ["gunicorn", "uwsgi"])
def test_a_stuck_worker_is_replaced_without_a_restart(boot, hang_dir, measure, server):
    spec = spec_for(server, f"stuck-{server}", worker_timeout=3, watchdog=0)
    box = start(boot, hang_dir, f"stuck-{server}", spec)
    before = props(box, spec)
    main = int(before["MainPID"])
    # The first worker to answer is not the last to start: wait for both.
    deadline = time.monotonic() + 60
    while len(workers := set(box.run("pgrep", "-P", str(main), check=False).stdout.split())) < 2:
        assert time.monotonic() < deadline, workers
        time.sleep(0.1)
    assert len(workers) == 2, workers
    fire_and_forget(box, "/hang")
    deadline = time.monotonic() + 90
    while True:
        now = set(box.run("pgrep", "-P", str(main), check=False).stdout.split())
        if len(now) == 2 and now != workers:
            break
        assert time.monotonic() < deadline, (workers, now, box.journal(f"{spec.name}.service"))
        time.sleep(0.2)
    assert_not_restarted(box, spec, before)
    assert len(now & workers) == 1  # the idle worker lives on
    measure(f"{server}: a deadlocked worker replaced by the worker timeout, no restart")


def test_a_leak_is_bounded_by_worker_recycling(boot, hang_dir, measure):
    spec = spec_for("gunicorn", "leak", max_requests=10, watchdog=0)
    box = start(boot, hang_dir, "leak", spec)
    before = props(box, spec)
    script = (
        "import json, urllib.request\n"
        "seen = []\n"
        "for _ in range(120):\n"
        "    with urllib.request.urlopen('http://127.0.0.1:8000/leak', timeout=10) as r:\n"
        "        pid, held = r.read().split()\n"
        "        seen.append((int(pid), int(held)))\n"
        "print(json.dumps(seen))\n"
    )
    seen = json.loads(box.run(nspawn.SYSTEM_PYTHON, "-c", script).stdout)
    held = max(h for _, h in seen)
    pids = {p for p, _ in seen}
    # Without recycling each of the 2 workers would hold about 60 MiB by the end.
    assert held <= 10 + 1, held  # max-requests 10, jitter 1
    assert len(pids) >= 6, pids
    assert_not_restarted(box, spec, before)
    measure(
        f"recycling: 120 leaking requests, at most {held} MiB held by a worker, {len(pids)} workers"
    )


def test_no_false_restart_under_load(boot, hang_dir, measure):
    """60 s of steady load on the default watchdog: not one restart."""
    spec = spec_for("gunicorn", "steady")
    box = start(boot, hang_dir, "steady", spec)
    before = props(box, spec)
    script = (
        "import time, urllib.request\n"
        "end = time.monotonic() + 60; n = failed = 0\n"
        "while time.monotonic() < end:\n"
        "    try:\n"
        "        urllib.request.urlopen('http://127.0.0.1:8000/', timeout=10).read()\n"
        "    except OSError:\n"
        "        failed += 1\n"
        "    n += 1; time.sleep(0.02)\n"
        "print(n, failed)\n"
    )
    sent, failed = map(int, box.run(nspawn.SYSTEM_PYTHON, "-c", script, timeout=180).stdout.split())
    assert failed == 0
    assert_not_restarted(box, spec, before)
    probes = box.journal_json(f"{spec.name}-watchdog.service")
    runs = [e for e in probes if str(e.get("MESSAGE", "")).startswith("Finished ")]
    assert len(runs) >= 4, len(runs)  # the watchdog did probe, every 10 s
    measure(f"watchdog: {sent} requests over 60 s, {len(runs)} probes, 0 restarts")


def test_the_watchdog_waits_for_a_reload_and_leaves_a_stopped_socket_service(
    boot, hang_dir, measure
):
    spec = spec_for("gunicorn", "paused", socket=True, watchdog=2, watchdog_failures=2)
    box = start(boot, hang_dir, "paused", spec)
    before = props(box, spec)
    # A reload in progress (the reload script writes its PID): the watchdog leaves a
    # frozen service alone for as long as that process lives.
    holder = box.popen("sleep", "300")
    try:
        pid = box.run("pgrep", "-n", "-x", "sleep").stdout.strip()
        # As the reload script does it, whether or not a probe has run yet.
        pause = f"/run/{spec.name}-watchdog"
        box.run("sh", "-c", f"mkdir -p {pause} && echo {pid} > {pause}/pause")
        box.run("systemctl", "kill", "--signal=SIGSTOP", f"{spec.name}.service")
        time.sleep(bound(spec) + 4)
        assert props(box, spec)["NRestarts"] == before["NRestarts"]
        box.run("kill", pid)
        wait_restarted(box, spec, before, time.monotonic())
    finally:
        holder.kill()
    box.wait_http(url("/"), timeout=60)
    # Stopped on purpose behind its socket: the timer stops with it, and no probe
    # starts the service again through the socket.
    box.systemctl("stop", f"{spec.name}.service")
    time.sleep(3 * spec.watchdog + 2)
    assert box.show(f"{spec.name}.service", "ActiveState")["ActiveState"] == "inactive"
    timer = box.show(f"{spec.name}-watchdog.timer", "ActiveState")["ActiveState"]
    assert timer == "inactive"
    measure("watchdog: paused during a reload; a stopped socket-activated service stays stopped")


def test_the_limits_are_what_systemd_reads(boot, hang_dir):
    """The test containers enforce no memory or pids controller: the properties prove
    that systemd takes the limits; killing by them needs a host with cgroup v2 controllers."""
    spec = spec_for("gunicorn", "limits", memory_max="512M", tasks_max=300, nofile=4096)
    box = start(boot, hang_dir, "limits", spec)
    shown = box.show(
        "limits.service", "MemoryMax", "MemoryHigh", "TasksMax", "LimitNOFILE", "OOMPolicy"
    )
    assert shown == {
        "MemoryMax": str(512 << 20),
        "MemoryHigh": str(int((512 << 20) * 0.9)),
        "TasksMax": "300",
        "LimitNOFILE": "4096",
        "OOMPolicy": "continue",
    }
    main = box.main_pid("limits.service")
    limits = box.read_file(f"/proc/{main}/limits")
    assert any(ln.startswith("Max open files") and ln.split()[3:5] == ["4096", "4096"]
               for ln in limits.splitlines())  # fmt: skip


def test_doctor_sees_a_running_service_leak(boot, hang_dir, measure):
    spec = spec_for("gunicorn", "leaky", workers=1, max_requests=0, watchdog=0)
    box = start(boot, hang_dir, "leaky", spec)
    doctor = [
        f"{nspawn.TOOL_VENV}/bin/opskit", "doctor", "leaky", "--app", spec.app,
        "--workdir", HANG_DIR, "--venv", nspawn.SERVERS_VENV, "--project", HANG_DIR, "--json",
    ]  # fmt: skip

    def growth() -> list[dict]:
        done = box.run(*doctor, check=False, timeout=180)
        assert "Traceback" not in done.stderr, done.stderr
        return [f for f in json.loads(done.stdout)["findings"] if f["check"] == "memory-growth"]

    assert growth() == []  # idle: nothing grows
    # 4 requests/s of 1 MiB each, for up to 16 s (the app stops at 64 MiB).
    client = box.popen(
        nspawn.SYSTEM_PYTHON,
        "-c",
        "import time, urllib.request\n"
        "for _ in range(64):\n"
        "    urllib.request.urlopen('http://127.0.0.1:8000/leak', timeout=10).read()\n"
        "    time.sleep(0.25)\n",
    )
    try:
        time.sleep(0.5)
        (finding,) = growth()
    finally:
        client.kill()
    assert finding["severity"] == "warning"
    assert "leaky.service's memory grew in every sample" in finding["problem"]
    measure(f"doctor: {finding['evidence']}")
