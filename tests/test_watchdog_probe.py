"""The watchdog's probe, run as systemd runs it (the app's Python, ``-I -c CODE``).

Its decisions: when to kill, when not to. systemctl is a stand-in script here that
answers ``show`` from a file and records ``kill`` with the time it came; the probe's
talk with a real systemd (and the kill and restart) is tests/real_systemd/test_hung.py.
The servers are real sockets: one that answers, one that takes connections into its
backlog and never answers (a hung server), and a closed port.
"""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from opskit.spec import build_spec
from opskit.systemd.units import render_units
from tests.unitfile import exec_words, parse, value

FAKE_SYSTEMCTL = """#!{python}
import os, sys, time
from pathlib import Path
here = Path(sys.argv[0]).parent
if sys.argv[1] == "show":
    print((here / "props").read_text(), end="")
elif sys.argv[1] == "kill":
    with (here / "kills").open("a") as f:
        f.write(repr(time.monotonic()) + " " + " ".join(sys.argv[2:]) + "\\n")
"""


class Probe:
    """The probe's argv from a rendered unit, a stand-in systemctl, a state directory."""

    def __init__(self, tmp_path: Path, port: int, failures: int, interval: int) -> None:
        spec = build_spec(
            {
                "name": "web",
                "app": "pkg.wsgi:app",
                "port": port,
                "watchdog": interval,
                "watchdog_failures": failures,
            }
        )
        files = {f.name: f.content for f in render_units(spec)}
        argv = exec_words(value(parse(files["web-watchdog.service"]), "Service", "ExecStart"))
        self.state = tmp_path / "state"
        self.state.mkdir()
        # This interpreter for the app's, this directory for /run/web-watchdog.
        self.argv = [sys.executable, *argv[1:-1], str(self.state)]
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        fake = self.bin / "systemctl"
        fake.write_text(FAKE_SYSTEMCTL.format(python=sys.executable))
        fake.chmod(0o755)
        self.props(started=time.monotonic())

    def props(self, started: float, state: str = "active", sub: str = "running") -> None:
        (self.bin / "props").write_text(
            f"ActiveState={state}\nSubState={sub}\n"
            f"ExecMainStartTimestampMonotonic={int(started * 1e6)}\n"
        )

    def answered(self, when: float) -> None:
        (self.state / "alive").write_text(repr(when))

    def run(self) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PATH": f"{self.bin}:{os.environ['PATH']}"}
        return subprocess.run(self.argv, env=env, capture_output=True, text=True, timeout=60)

    def kills(self) -> list[float]:
        path = self.bin / "kills"
        if not path.exists():
            return []
        return [float(line.split()[0]) for line in path.read_text().splitlines()]

    def alive(self) -> float:
        return float((self.state / "alive").read_text())


@pytest.fixture
def hung() -> Iterator[int]:
    """A port that takes connections and never answers them."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield sock.getsockname()[1]


@pytest.fixture
def serving() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_argv_carries_interval_and_timeout(tmp_path: Path) -> None:
    probe = Probe(tmp_path, 9000, failures=3, interval=7)
    assert probe.argv[4:10] == ["web.service", "tcp:127.0.0.1:9000", "/", "3", "7", "5"]


@pytest.mark.parametrize("port", ["hung", "closed"])
def test_the_kill_comes_at_the_deadline_not_before(tmp_path: Path, request, port) -> None:
    """No answer for K x interval since the last one: killed, and never before that."""
    number = request.getfixturevalue("hung") if port == "hung" else closed_port()
    probe = Probe(tmp_path, number, failures=2, interval=1)
    last = time.monotonic() - 0.5
    probe.answered(last)
    done = probe.run()
    assert done.returncode == 0, done.stderr
    [killed] = probe.kills()
    assert killed >= last + 2.0
    assert "killing it (SIGKILL)" in done.stdout
    # One line per reason, not one per try.
    assert done.stdout.count("no answer on") == 1, done.stdout
    assert "killed at 2 s" in done.stdout


def test_a_service_that_answers_is_left_alone(tmp_path: Path, serving: int) -> None:
    probe = Probe(tmp_path, serving, failures=2, interval=1)
    probe.answered(time.monotonic() - 100)
    before = time.monotonic()
    done = probe.run()
    assert done.returncode == 0, done.stderr
    assert probe.kills() == []
    assert probe.alive() >= before


def test_the_time_counts_from_a_start_after_the_last_answer(tmp_path: Path, hung: int) -> None:
    """A service restarted since its last answer gets K x interval from its start."""
    probe = Probe(tmp_path, hung, failures=2, interval=1)
    probe.answered(time.monotonic() - 100)
    started = time.monotonic()
    probe.props(started=started)
    probe.run()
    [killed] = probe.kills()
    assert killed >= started + 2.0


@pytest.mark.parametrize(
    ("state", "sub"), [("activating", "start"), ("reloading", "running"), ("inactive", "dead")]
)
def test_a_service_not_up_is_not_probed(tmp_path: Path, hung: int, state, sub) -> None:
    probe = Probe(tmp_path, hung, failures=1, interval=1)
    probe.answered(time.monotonic() - 100)
    probe.props(started=0, state=state, sub=sub)
    before = time.monotonic()
    done = probe.run()
    assert (done.returncode, done.stdout, probe.kills()) == (0, "", [])
    # ... and its time without an answer starts again from now.
    assert probe.alive() >= before


def test_a_pause_stops_the_count(tmp_path: Path, hung: int) -> None:
    probe = Probe(tmp_path, hung, failures=1, interval=1)
    probe.answered(time.monotonic() - 100)
    (probe.state / "pause").write_text(str(os.getpid()))
    done = probe.run()
    assert (done.returncode, probe.kills()) == (0, [])


def test_a_late_probe_still_asks_before_it_kills(tmp_path: Path, hung: int) -> None:
    """Long past the deadline (a probe that started late): one try of a second first."""
    probe = Probe(tmp_path, hung, failures=1, interval=2)
    probe.answered(time.monotonic() - 100)
    probe.props(started=time.monotonic() - 100)
    before = time.monotonic()
    probe.run()
    [killed] = probe.kills()
    assert killed >= before + 1.0
