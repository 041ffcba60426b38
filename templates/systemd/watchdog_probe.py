import http.client
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

unit, address, path, limit, interval, timeout, state = sys.argv[1:8]
# The service is killed once it has given no answer for limit x interval seconds,
# counted on CLOCK_MONOTONIC from its last answer, its start, or the end of a pause.
allowed = int(limit) * float(interval)
alive = Path(state, "alive")


def show():
    props = ("ActiveState", "SubState", "ExecMainStartTimestampMonotonic")
    argv = ["systemctl", "show", unit, *(f"--property={p}" for p in props)]
    out = subprocess.run(argv, capture_output=True, text=True).stdout
    return dict(line.partition("=")[::2] for line in out.splitlines())


def remember(when):
    Path(f"{alive}.tmp").write_text(repr(when))
    Path(f"{alive}.tmp").replace(alive)


# The reload script writes its PID here for the length of a reload (at most 10 min).
def paused():
    pause = Path(state, "pause")
    try:
        pid = int(pause.read_text().strip() or 0)
        if time.time() - pause.stat().st_mtime > 600 or pid <= 0:
            return False
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return True


# Only a service that is up: never one being started, reloaded, stopped or stopped on
# purpose (with a .socket unit a probe would start it again), nor during a reload. Its
# time without an answer counts from here again.
def watched():
    props = show()
    if props.get("ActiveState") != "active" or props.get("SubState") != "running" or paused():
        remember(time.monotonic())
        return None
    started = int(props.get("ExecMainStartTimestampMonotonic") or 0) / 1e6
    try:
        last = float(alive.read_text())
    except (OSError, ValueError):
        last = 0.0
    return max(last, started) or time.monotonic()


def answers(wait):
    kind, _, where = address.partition(":")
    if kind == "unix":
        conn = http.client.HTTPConnection("localhost", timeout=wait)
        conn.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.sock.settimeout(wait)
        conn.sock.connect(where)
    else:
        host, _, port = where.rpartition(":")
        conn = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=wait)
    try:
        conn.request("GET", path, headers={"Connection": "close", "User-Agent": "opskit-watchdog"})
        conn.getresponse().read()
    finally:
        conn.close()


# Any HTTP answer, even an error, counts as alive. A failed try is tried again until the
# answer comes or the deadline passes, so the kill comes at the deadline, not at the end
# of whichever probe runs then. Every probe gets at least one try of a second (or the
# timeout, if shorter), so one that starts late never kills without asking.
said = None
tried = False
while True:
    since = watched()
    if since is None:
        sys.exit(0)
    asked = time.monotonic()
    left = since + allowed - asked
    if tried and left <= 0:
        break
    wait = min(float(timeout), max(left, 0.1 if tried else 1.0))
    try:
        answers(wait)
        remember(asked)
        sys.exit(0)
    except Exception as exc:  # any failure to answer counts
        reason = f"{type(exc).__name__}: {exc}"
    tried = True
    if reason != said:
        print(
            f"{unit}: no answer on {address}{path} ({reason}); "
            f"{time.monotonic() - since:.1f} s without one, killed at {allowed:g} s",
            flush=True,
        )
        said = reason
    time.sleep(max(0.0, min(0.5, since + allowed - time.monotonic())))
# SIGKILL, not a stop: a hung process would make systemd wait out TimeoutStopSec=.
# Restart=always then starts the service again after RestartSec=.
print(f"{unit}: killing it (SIGKILL); Restart=always starts it again", flush=True)
remember(time.monotonic())
subprocess.run(["systemctl", "kill", "--signal=SIGKILL", unit], check=False)
