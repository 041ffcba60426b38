"""Real gunicorn, uvicorn and uWSGI run with the generated logging config: read their streams."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from opskit.spec import AppSpec
from opskit.systemd.units import environment, runtime_dir, server_unit
from tests.conftest import EXAMPLE

pytestmark = [pytest.mark.servers, pytest.mark.timeout(180)]

BIN = Path(sys.executable).parent

# A wrapper around the example app that also logs through "earlybird", a logger that
# sitecustomize creates before any server has configured logging and that the config
# does not name: with disable_existing_loggers left at true it would go silent.
PROBE_APP = """\
import logging

import demoapp

early = logging.getLogger("earlybird")


def app(environ, start_response):
    if environ.get("PATH_INFO") == "/log":
        early.info("earlybird info line")
    return demoapp.app(environ, start_response)


async def asgi(scope, receive, send):
    if scope["type"] == "http" and scope["path"] == "/log":
        early.info("earlybird info line")
    await demoapp.asgi(scope, receive, send)
"""
SITECUSTOMIZE = 'import logging\n\nlogging.getLogger("earlybird")\n'


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Served:
    stdout: str
    stderr: str


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    out: Path
    err: Path
    stop_signal: int

    def get(self, path: str) -> str:
        url = f"http://127.0.0.1:{self.port}{path}"
        request = urllib.request.Request(url, headers={"Connection": "close"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return str(response.read().decode())

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"server exited with {self.proc.returncode}: {self.err.read_text()}")
            try:
                if self.get("/health") == "ok\n":
                    return
            except OSError:
                pass
            time.sleep(0.2)
        pytest.fail(f"server did not answer /health: {self.err.read_text()}")

    def wait_for(self, *needles: str) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            text = self.err.read_text(errors="replace")
            if all(n in text for n in needles):
                return
            time.sleep(0.1)

    def stop(self) -> Served:
        if self.proc.poll() is None:
            self.proc.send_signal(self.stop_signal)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        return Served(self.out.read_text(errors="replace"), self.err.read_text(errors="replace"))


@pytest.fixture
def serve(tmp_path: Path, cli) -> Iterator:
    """Generate the logging config with the CLI, then start a server the way its unit would."""
    started: list[Server] = []

    def start(server: str, fmt: str, *, workers: int = 2) -> Server:
        if server != "command" and shutil.which(server, path=str(BIN)) is None:
            pytest.skip(f"{server} is not installed in the test environment")
        app_dir = tmp_path / "app"
        site_dir = tmp_path / "site"
        conf_dir = tmp_path / "conf"
        run_dir = tmp_path / "run"
        for directory in (app_dir, site_dir, run_dir):
            directory.mkdir()
        for name in ("demoapp.py", "VERSION"):
            shutil.copy2(EXAMPLE / name, app_dir / name)
        (app_dir / "probeapp.py").write_text(PROBE_APP)
        (site_dir / "sitecustomize.py").write_text(SITECUSTOMIZE)
        entry = "probeapp:asgi" if server == "uvicorn" else "probeapp:app"
        port = free_port()
        spec = AppSpec(
            name="demo",
            server=server,
            app=entry,
            port=port,
            workers=workers,
            working_directory=str(app_dir),
            venv=sys.prefix,
            log_config=str(conf_dir / "logging.json"),
            log_format=fmt,
        )
        result = cli(
            "logging",
            "init",
            "demo",
            "--server",
            server,
            "--app",
            entry,
            "--format",
            fmt,
            "--set",
            f"log-config={spec.log_config}",
            "-o",
            str(conf_dir),
        )
        assert result.code == 0, result.err
        unit = server_unit(spec)
        # The unit's runtime directory (/run/demo) becomes a temporary one here.
        argv = [a.replace(runtime_dir(spec), str(run_dir)) for a in unit.argv]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "OPSKIT"))}
        env.update(environment(spec))
        env["PYTHONPATH"] = f"{env['PYTHONPATH']}:{site_dir}"
        out, err = tmp_path / "stdout", tmp_path / "stderr"
        with out.open("wb") as out_f, err.open("wb") as err_f:
            proc = subprocess.Popen(
                argv,
                cwd=app_dir,
                env=env,
                stdout=out_f,
                stderr=err_f,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        stop = getattr(signal, unit.kill_signal) if unit.kill_signal else signal.SIGTERM
        handle = Server(proc, port, out, err, stop)
        started.append(handle)
        handle.wait_ready()
        return handle

    yield start
    for handle in started:
        if handle.proc.poll() is None:
            os.killpg(handle.proc.pid, signal.SIGKILL)
            handle.proc.wait(timeout=10)


ACCESS = {
    "gunicorn": '"GET /log HTTP/1.1" 200',
    "uvicorn": '"GET /log HTTP/1.1" 200',
    # uWSGI writes its request lines itself, outside Python logging, to stderr.
    "uwsgi": "GET /log => generated",
}
CASES = [("gunicorn", 2), ("uvicorn", 1), ("uvicorn", 2), ("uwsgi", 2)]


def _exchange(server: Server, kind: str) -> Served:
    assert server.get("/log") == "logged\n"
    server.wait_for("demoapp warning line", "earlybird info line", ACCESS[kind])
    return server.stop()


def _lines(text: str, needle: str) -> list[str]:
    return [line for line in text.splitlines() if needle in line]


@pytest.mark.parametrize(("kind", "workers"), CASES)
@pytest.mark.parametrize("fmt", ["journald", "plain"])
def test_each_record_once_on_stderr(serve, kind: str, workers: int, fmt: str) -> None:
    served = _exchange(serve(kind, fmt, workers=workers), kind)
    assert served.stdout == "", f"stdout must stay empty:\n{served.stdout}"
    for needle in ("demoapp info line", "demoapp warning line", "earlybird info line"):
        assert len(_lines(served.stderr, needle)) == 1, f"{needle!r}:\n{served.stderr}"
    assert len(_lines(served.stderr, ACCESS[kind])) == 1, served.stderr
    if fmt == "plain":
        # Timestamped for terminals: "2026-01-01 12:00:00,000 INFO ..."
        (line,) = _lines(served.stderr, "demoapp info line")
        assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO ", line), line


@pytest.mark.parametrize(("kind", "workers"), [("gunicorn", 2), ("uvicorn", 2), ("uwsgi", 2)])
def test_journald_prefixes_match_levels(serve, kind: str, workers: int) -> None:
    served = _exchange(serve(kind, "journald", workers=workers), kind)
    (info,) = _lines(served.stderr, "demoapp info line")
    (warning,) = _lines(served.stderr, "demoapp warning line")
    (early,) = _lines(served.stderr, "earlybird info line")
    assert info.startswith("<6>INFO ")
    assert warning.startswith("<4>WARNING ")
    assert early.startswith("<6>")
    assert "\x1b[" not in served.stderr
    if kind == "uwsgi":
        # uWSGI's own lines are not Python logging; journald gives them its default (info).
        return
    (access,) = _lines(served.stderr, ACCESS[kind])
    assert access.startswith("<6>")
    # Everything the server itself logged went through the config: no timestamps, no
    # unprefixed line (journald would stamp a second time and lose the priority).
    for line in served.stderr.splitlines():
        if line.strip():
            assert re.match(r"^<[2-7]>[A-Z]+ ", line), f"unprefixed line: {line!r}"
