"""Unix sockets: refused where systemd would make them unreachable, writable where allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import needs_analyze, verify


@pytest.mark.parametrize(
    ("args", "words"),
    [
        # DynamicUser= forces a private /tmp: a proxy could never find the socket.
        (["--unix-socket", "/tmp/app.sock"], ["private", "/run/app/app.sock"]),
        # RuntimeDirectory= is removed on every stop, taking the socket unit's file along.
        (["--unix-socket", "/run/app/app.sock", "--socket"], ["removes", "/run/app-socket"]),
    ],
)
def test_unreachable_unix_socket_is_refused(cli, tmp_path: Path, args, words):
    result = cli("systemd", "app", "--app", "pkg:app", *args, "-o", str(tmp_path))
    assert result.code == 2
    assert len(result.err.strip().splitlines()) == 1
    assert "unix-socket" in result.err
    for word in words:
        assert word in result.err
    assert list(tmp_path.iterdir()) == []


@needs_analyze
def test_socket_in_tmp_with_a_user_gets_a_writable_shared_tmp(cli, tmp_path: Path):
    result = cli(
        "systemd",
        "app",
        "--app",
        "pkg:app",
        "--unix-socket",
        "/tmp/app.sock",
        "--user",
        "www",
        "-o",
        str(tmp_path),
    )
    assert result.code == 0, result.err
    lines = (tmp_path / "app.service").read_text().splitlines()
    assert "PrivateTmp=no" in lines
    assert "ReadWritePaths=/tmp" in lines
    assert verify(tmp_path / "app.service") == ""


@needs_analyze
@pytest.mark.parametrize("server", ["gunicorn", "uvicorn", "uwsgi"])
def test_gunicorn_may_chown_the_socket_it_binds(cli, tmp_path: Path, server):
    app = "pkg:asgi" if server == "uvicorn" else "pkg:app"
    result = cli(
        "systemd", "app", "--server", server, "--app", app,
        "--unix-socket", "/run/app/app.sock", "-o", str(tmp_path),
    )  # fmt: skip
    assert result.code == 0, result.err
    lines = (tmp_path / "app.service").read_text().splitlines()
    filters = [line for line in lines if line.startswith("SystemCallFilter=")]
    # gunicorn chowns its unix socket after bind (sock.py); @privileged holds chown.
    expected = ["@system-service", "~@privileged @resources"]
    if server == "gunicorn":
        expected.append("@chown")
        assert (
            "# Relaxed: SystemCallFilter=@chown: gunicorn chowns its unix socket after bind"
            in lines
        )
    assert [f.split("=", 1)[1] for f in filters] == expected
    assert verify(tmp_path / "app.service") == ""
