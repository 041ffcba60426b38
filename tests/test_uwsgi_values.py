"""Every value opskit hands to uWSGI arrives literally, from the ini and from the command line.

uWSGI rewrites option values: "%" and the character after it in a config file, and
"$(...)", "@(...)" and "%(...)" everywhere, command line included. These tests start a
real uWSGI from what opskit generates and read back what the app really got: its working
directory, its socket, its pidfile and the variables set with --env.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from opskit.errors import SpecError
from opskit.reload.render import uwsgi_options
from opskit.spec import build_spec
from opskit.systemd.units import server_unit

pytestmark = [pytest.mark.servers, pytest.mark.timeout(300)]

UWSGI = str(Path(sys.executable).parent / "uwsgi")
PROBE = """\
import json
import os


def app(environ, start_response):
    body = json.dumps(
        {
            "cwd": os.getcwd(),
            "env": {k: v for k, v in os.environ.items() if k.startswith("RT_")},
        }
    ).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Connection", "close")])
    return [body]
"""
#: Values uWSGI would rewrite if opskit passed them on as they are.
AWKWARD = [
    "100% %d %n %p %s %% %",
    "$HOME ${HOME} $x $ ( $$",
    "@ @file @/etc/hostname @",
    "( ) %) $) @)",
    "ü ☃ ; # = \\ \" ' end",
]
#: A directory name with uWSGI's magic in it (kept short: the socket path has 107 bytes).
AWKWARD_DIR = "w %d %n $HOME @x 100%"


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=10)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(self.unix_path)


def ask(sock: str) -> dict[str, object]:
    conn = UnixHTTPConnection(sock)
    try:
        conn.request("GET", "/")
        return dict(json.loads(conn.getresponse().read()))
    finally:
        conn.close()


@contextlib.contextmanager
def serving(argv: list[str], cwd: Path, sock: str) -> Iterator[subprocess.Popen[bytes]]:
    log = cwd / f"uwsgi-{time.monotonic_ns()}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 60
        while not Path(sock).exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"uWSGI did not listen on {sock!r}:\n{log.read_text()}")
            time.sleep(0.05)
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def make_spec(base: Path, env_values: list[str]) -> tuple[dict[str, object], Path]:
    workdir = base / AWKWARD_DIR
    (workdir / "run").mkdir(parents=True)
    (workdir / "probe.py").write_text(PROBE)
    raw: dict[str, object] = {
        "name": "rt",
        "server": "uwsgi",
        "app": "probe:app",
        "workers": 1,
        "working_directory": str(workdir),
        "venv": str(Path(sys.executable).parent.parent),
        "unix_socket": str(workdir / "run" / "a.sock"),
        "supervisor": "pidfile",
        "pidfile": str(workdir / "run" / "u.pid"),
        "server_args": [arg for i, v in enumerate(env_values) for arg in ("--env", f"RT_{i}={v}")],
    }
    return raw, workdir


def ini_argv(out: Path) -> list[str]:
    return [UWSGI, "--ini", str(out / "rt.uwsgi.ini")]


def command_line_argv(raw: dict[str, object]) -> list[str]:
    """The same options as uWSGI arguments: what a unit's ExecStart passes (after systemd)."""
    argv = [UWSGI]
    for key, value in uwsgi_options(build_spec(raw)):
        argv += [f"--{key}"] if value == "true" else [f"--{key}", value]
    return argv


def toml(raw: dict[str, object]) -> str:
    """A config file of the spec (JSON's string escapes are TOML's for the BMP)."""
    lines = []
    for key, value in raw.items():
        if isinstance(value, dict):
            value = "{" + ", ".join(f"{k} = {json.dumps(v)}" for k, v in value.items()) + "}"
        else:
            value = json.dumps(value)
        lines.append(f"{key.replace('_', '-')} = {value}")
    return "\n".join(lines) + "\n"


def round_trip(cli, base: Path, env_values: list[str], how: str) -> None:
    # A short base: the socket path below it must fit uWSGI's 102 bytes.
    base = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    try:
        _round_trip(cli, base, env_values, how)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _round_trip(cli, base: Path, env_values: list[str], how: str) -> None:
    raw, workdir = make_spec(base, env_values)
    config = base / "opskit.toml"
    config.write_text(toml(raw))
    out = base / "out"
    argv = ini_argv(out) if how == "ini" else command_line_argv(raw)
    result = cli("reload-script", "--config", str(config), "-o", str(out))
    assert result.code == 0, result.err
    sock = str(raw["unix_socket"])
    with serving(argv, base, sock):
        # The socket file appears at bind(), a moment before listen(): retry a refusal.
        deadline = time.monotonic() + 60
        while True:
            try:
                got = ask(sock)
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline, "uWSGI never accepted"
                time.sleep(0.05)
        pidfile = Path(str(raw["pidfile"]))
        assert pidfile.read_text().strip().isdigit()
    assert got["cwd"] == str(workdir)
    assert got["env"] == {f"RT_{i}": v for i, v in enumerate(env_values)}


@pytest.mark.parametrize("how", ["ini", "command line"])
def test_awkward_values_arrive_literally(cli, tmp_path: Path, how: str) -> None:
    round_trip(cli, tmp_path, AWKWARD, how)


# Printable text with uWSGI's special characters over-represented.
_SPECIAL = st.sampled_from([*"%$@()dnps ", "%d", "$(", "@(", "%(", "ü", "☃"])
_CHAR = st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"), max_codepoint=0x2FFF)
VALUE = (
    st.lists(st.one_of(_SPECIAL, _CHAR), min_size=1, max_size=12)
    .map(lambda parts: "".join(parts).strip())
    .filter(bool)
)


def _refused(value: str) -> bool:
    return any(seq in value for seq in ("$(", "@(", "%("))


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(values=st.lists(VALUE, min_size=1, max_size=8), how=st.sampled_from(["ini", "args"]))
def test_accepted_values_arrive_literally(cli, tmp_path_factory, values, how) -> None:
    """Whatever opskit accepts for uWSGI, a real uWSGI receives unchanged."""
    assume(not any(_refused(v) for v in values))
    assume(not any(v.startswith((";", "#")) for v in values))
    round_trip(cli, tmp_path_factory.mktemp("rt"), values, how)


@settings(max_examples=60, deadline=None)
@given(values=st.lists(VALUE, min_size=1, max_size=4))
def test_what_uwsgi_would_expand_is_refused(values) -> None:
    """Refused exactly when uWSGI would rewrite a value; the message names the key."""
    raw = {
        "name": "rt",
        "server": "uwsgi",
        "app": "probe:app",
        "venv": str(Path(sys.executable).parent.parent),
        "server_args": [arg for i, v in enumerate(values) for arg in ("--env", f"RT_{i}={v}")],
    }
    try:
        server_unit(build_spec(raw))
    except SpecError as exc:
        assert any(_refused(v) for v in values)
        assert str(exc).startswith("server-args[")
    else:
        assert not any(_refused(v) for v in values)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("working-directory", "/srv/w$(HOME)"),
        ("unix-socket", "/run/rt/@(/etc/hostname).sock"),
        ("server-args", ["--env", "X=$(HOME)"]),
        ("server-args", ["--env", "Z=@(/etc/hostname)"]),
        ("app", "probe:make('%(processes)')"),
        ("environment", {"UWSGI_ENV": "X=$(HOME)"}),
    ],
)
def test_every_key_refuses_what_uwsgi_expands(cli, tmp_path: Path, key: str, value: object):
    raw = {
        "name": "rt",
        "server": "uwsgi",
        "app": "probe:app",
        "venv": "/srv/rt/venv",
        "supervisor": "pidfile",
        "working_directory": "/srv/rt",
        key.replace("-", "_"): value,
    }
    config = tmp_path / "opskit.toml"
    config.write_text(toml(raw))
    for command in (
        ["systemd", "--config", str(config)],
        ["reload-script", "--config", str(config)],
    ):
        result = cli(*command, "-o", str(tmp_path / "out"))
        assert result.code == 2
        assert result.err.count("\n") == 1 and "Traceback" not in result.err
        assert (
            result.err.startswith(f"opskit: error: {key}") and "uWSGI would replace" in result.err
        )
        assert not (tmp_path / "out").exists()


def test_a_socket_path_uwsgi_cannot_bind_is_refused(cli, tmp_path: Path) -> None:
    path = "/run/rt-s/" + "s" * 90 + ".sock"  # 105 bytes: sun_path takes it, uWSGI does not
    config = tmp_path / "opskit.toml"
    config.write_text(toml({"name": "rt", "server": "uwsgi", "app": "a:b", "unix_socket": path}))
    result = cli("systemd", "--config", str(config), "-o", str(tmp_path / "out"))
    assert result.code == 2
    assert result.err == (
        f"opskit: error: unix-socket: uWSGI binds at most 102 bytes, got 105 in {path!r} "
        "(or use --socket)\n"
    )
    # With --socket systemd binds it, and uWSGI only takes the descriptor.
    assert cli("systemd", "--config", str(config), "--socket", "-o", "-").code == 0
