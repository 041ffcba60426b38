import http.client
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

unit, address, path, limit, timeout, state = sys.argv[1:7]
count = Path(state, "failures")


def show(prop):
    out = subprocess.run(["systemctl", "show", "-P", prop, unit], capture_output=True, text=True)
    return out.stdout.strip()


def failures(n):
    Path(f"{count}.tmp").write_text(str(n))
    Path(f"{count}.tmp").replace(count)


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
# purpose (with a .socket unit a probe would start it again), nor during a reload.
if show("ActiveState") != "active" or show("SubState") != "running" or paused():
    failures(0)
    sys.exit(0)
kind, _, where = address.partition(":")
try:
    if kind == "unix":
        conn = http.client.HTTPConnection("localhost", timeout=float(timeout))
        conn.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.sock.settimeout(float(timeout))
        conn.sock.connect(where)
    else:
        host, _, port = where.rpartition(":")
        conn = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=float(timeout))
    conn.request("GET", path, headers={"Connection": "close", "User-Agent": "opskit-watchdog"})
    conn.getresponse().read()
    failures(0)
    sys.exit(0)
except Exception as exc:  # noqa: BLE001 - any failure to answer counts
    reason = f"{type(exc).__name__}: {exc}"
try:
    n = int(count.read_text() or 0) + 1
except (OSError, ValueError):
    n = 1
print(f"{unit}: no answer on {address}{path} ({reason}), {n} of {limit} in a row", flush=True)
if n < int(limit):
    failures(n)
    sys.exit(0)
failures(0)
# SIGKILL, not a stop: a hung process would make systemd wait out TimeoutStopSec=.
# Restart=always then starts the service again after RestartSec=.
print(f"{unit}: killing it (SIGKILL); Restart=always starts it again", flush=True)
subprocess.run(["systemctl", "kill", "--signal=SIGKILL", unit], check=False)
