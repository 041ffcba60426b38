"""The reload script's HTTP probe (templates/reload/probe.py) against real servers on loopback.

The probe runs as the script runs it: ``python -I -S -`` with the file on stdin. Each test
starts its own tiny server (or a socket that refuses, stalls or hangs up) and reads the
probe's output lines: ``health STATUS FIRST-LINE`` once, then ``version ...`` per probe,
``000 ExceptionName`` for a request that got no HTTP answer.
"""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from opskit.reload.render import render_reload
from opskit.render import templates_dir
from opskit.spec import build_spec

PROBE = templates_dir() / "reload" / "probe.py"
#: What the probe prints for a request it could not complete: its timeout is 5 s.
TIMEOUT = 5


def run_probe(
    *,
    host: str = "",
    port: int | str = "",
    uds: str = "",
    health: str = "/health",
    version: str = "/version",
    probes: int = 3,
) -> list[str]:
    """Run the probe exactly as the script does and return its output lines."""
    proc = subprocess.run(
        [sys.executable, "-I", "-S", "-", host, str(port), uds, health, version, str(probes)],
        input=PROBE.read_text(encoding="utf-8"),
        capture_output=True,
        text=True,
        encoding="utf-8",
        # A UTF-8 locale, so that a replacement character in a body can be printed.
        env={"PATH": os.environ.get("PATH", ""), "LC_ALL": "C.UTF-8"},
        timeout=2 * TIMEOUT * (probes + 1) + 30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    return proc.stdout.splitlines()


class _Handler(http.server.BaseHTTPRequestHandler):
    """Answers from the server's routes: path -> (status, body); records every request."""

    server: _Server

    def do_GET(self) -> None:
        self.server.seen.append((self.path, self.headers.get("Connection"), self.client_address))
        status, body = self.server.routes.get(self.path, (404, b"not found\n"))
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    routes: dict[str, tuple[int, bytes]]
    seen: list[tuple[str, str | None, object]]


class _Server6(_Server):
    address_family = socket.AF_INET6


class _UnixServer(_Server):
    address_family = socket.AF_UNIX

    def server_bind(self) -> None:
        # HTTPServer.server_bind takes a host and port from the address: a path has none.
        self.socket.bind(self.server_address)
        self.server_name, self.server_port = "localhost", 0

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        conn, _ = self.socket.accept()
        # BaseHTTPRequestHandler formats client_address[0]: give it a host-like pair.
        return conn, ("unix", 0)


@contextmanager
def serving(
    routes: dict[str, tuple[int, bytes]], address: str | tuple[str, int] = ("127.0.0.1", 0)
) -> Iterator[_Server]:
    """A real HTTP server on loopback (or a unix socket) for the duration of a block."""
    if isinstance(address, str):
        server: _Server = _UnixServer(address, _Handler)
    elif ":" in address[0]:
        server = _Server6(address, _Handler)
    else:
        server = _Server(address, _Handler)
    server.routes, server.seen = routes, []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


ROUTES = {"/health": (200, b"ok\n"), "/version": (200, b"v1\n")}


def test_answers_health_once_then_the_version_per_probe():
    with serving(ROUTES) as server:
        lines = run_probe(host="127.0.0.1", port=server.server_port, probes=3)
    assert lines == ["health 200 ok", "version 200 v1", "version 200 v1", "version 200 v1"]
    assert [path for path, _, _ in server.seen] == ["/health", "/version", "/version", "/version"]


def test_every_request_on_a_fresh_connection():
    # The script relies on this: with several sockets on the port (SO_REUSEPORT) only
    # fresh connections reach more than one server.
    with serving(ROUTES) as server:
        run_probe(host="127.0.0.1", port=server.server_port, probes=8)
    assert len(server.seen) == 9
    assert {connection for _, connection, _ in server.seen} == {"close"}
    assert len({client for _, _, client in server.seen}) == 9


def test_status_and_first_line_of_any_answer():
    routes = {
        "/health": (500, b"boom\ntraceback line\n"),
        "/version": (200, b"  v2 \n\nmore\n"),
    }
    with serving(routes) as server:
        lines = run_probe(host="127.0.0.1", port=server.server_port, probes=1)
    assert lines == ["health 500 boom", "version 200 v2"]


def test_not_found_and_an_empty_body():
    with serving({"/health": (204, b"")}) as server:
        lines = run_probe(host="127.0.0.1", port=server.server_port, probes=2)
    assert lines == ["health 204", "version 404 not found", "version 404 not found"]


def test_a_body_that_is_not_utf8_is_replaced_not_fatal():
    with serving({"/health": (200, b"ok\n"), "/version": (200, b"\xff\xfev3\n")}) as server:
        lines = run_probe(host="127.0.0.1", port=server.server_port, probes=1)
    assert lines == ["health 200 ok", "version 200 \ufffd\ufffdv3"]


def test_paths_are_sent_as_given():
    routes = {"/he'alth?x=1": (200, b"fine\n"), "/api/v": (200, b"7\n")}
    with serving(routes) as server:
        lines = run_probe(
            host="127.0.0.1",
            port=server.server_port,
            health="/he'alth?x=1",
            version="/api/v",
            probes=1,
        )
    assert lines == ["health 200 fine", "version 200 7"]


@pytest.mark.parametrize("host", ["0.0.0.0", ""])
def test_a_wildcard_host_is_probed_on_loopback(host):
    with serving(ROUTES) as server:
        lines = run_probe(host=host, port=server.server_port, probes=1)
    assert lines == ["health 200 ok", "version 200 v1"]


def test_the_ipv6_wildcard_is_probed_on_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    with serving(ROUTES, ("::1", 0)) as server:
        lines = run_probe(host="::", port=server.server_port, probes=1)
    assert lines == ["health 200 ok", "version 200 v1"]


def test_unix_socket(tmp_path: Path):
    path = str(tmp_path / "app.sock")
    with serving(ROUTES, path) as server:
        # host and port are ignored when a socket path is given.
        lines = run_probe(host="127.0.0.1", port="1", uds=path, probes=2)
    assert lines == ["health 200 ok", "version 200 v1", "version 200 v1"]
    assert len(server.seen) == 3


def test_refused_connection():
    # Bound but not listening: the kernel refuses, and no other process can take the port.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        lines = run_probe(host="127.0.0.1", port=sock.getsockname()[1], probes=1)
    assert lines == ["health 000 ConnectionRefusedError", "version 000 ConnectionRefusedError"]


def test_unix_socket_that_does_not_exist(tmp_path: Path):
    lines = run_probe(uds=str(tmp_path / "missing.sock"), probes=1)
    assert lines == ["health 000 FileNotFoundError", "version 000 FileNotFoundError"]


def test_hang_up_without_an_answer():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()

        def hang_up() -> None:
            for _ in range(2):
                conn, _ = listener.accept()
                with conn:
                    # Read the whole request first, so the client sees the close while
                    # it waits for the answer, not while it is still sending.
                    data = b""
                    while b"\r\n\r\n" not in data:
                        data += conn.recv(4096)

        thread = threading.Thread(target=hang_up, daemon=True)
        thread.start()
        lines = run_probe(host="127.0.0.1", port=listener.getsockname()[1], probes=1)
        thread.join(timeout=10)
    assert lines == ["health 000 RemoteDisconnected", "version 000 RemoteDisconnected"]


def test_a_server_that_never_answers_times_out():
    # Listening, never accepting: the connection completes in the backlog and the
    # request is sent, but no answer comes.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        lines = run_probe(host="127.0.0.1", port=listener.getsockname()[1], probes=0)
    assert lines == ["health 000 TimeoutError"]


@pytest.mark.parametrize("supervisor", ["systemd", "pidfile"])
def test_the_script_runs_exactly_this_file(supervisor):
    script = render_reload(
        build_spec({"name": "demo", "app": "demoapp:app", "supervisor": supervisor})
    )
    heredoc = "<<'EOF'\n" + PROBE.read_text(encoding="utf-8") + "EOF\n"
    assert script[0].content.count(heredoc) == 1
