"""The app spec: defaults, derived values, and one clear SpecError per bad field."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from opskit.errors import ExitCode, SpecError, UsageError
from opskit.spec import SPEC_KEYS, AppSpec, Hardening, build_spec
from opskit.validate import validate_unit_name


def spec(**raw: Any) -> AppSpec:
    raw.setdefault("name", "web")
    if raw["name"] is None:
        del raw["name"]  # as when neither the config nor the command line names it
    if raw.get("server", "gunicorn") != "command":
        raw.setdefault("app", "pkg.wsgi:app")
    return build_spec(raw)


def rejects(match: str, **raw: Any) -> None:
    with pytest.raises(SpecError, match=match):
        spec(**raw)


def test_defaults() -> None:
    s = spec()
    assert s == AppSpec(name="web", app="pkg.wsgi:app")
    assert (s.server, s.host, s.port, s.workers) == ("gunicorn", "127.0.0.1", 8000, 2)
    assert s.working_directory == "/srv/app"
    assert s.venv_path == "/srv/app/.venv" and s.python == "/srv/app/.venv/bin/python"
    assert s.dynamic_user and s.hardening == Hardening()
    assert s.bind == "127.0.0.1:8000"
    # Most apps have neither route: no default, so nothing probes a path the app lacks.
    assert (s.health_path, s.version_path) == (None, None)


def test_health_and_version_paths_when_given() -> None:
    s = spec(health_path="/-/ready?full=1", version_path="/api/version")
    assert (s.health_path, s.version_path) == ("/-/ready?full=1", "/api/version")
    assert spec(health_path=None, version_path=None).health_path is None


def test_the_spec_is_frozen() -> None:
    s = spec()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.port = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.hardening.profile = "off"  # type: ignore[misc]


def test_lists_become_tuples() -> None:
    s = spec(server_args=["--a", "b"], environment={"A": "1"}, hardening={"writable_paths": ["/x"]})
    assert s.server_args == ("--a", "b")
    assert s.environment == (("A", "1"),)
    assert s.hardening.writable_paths == ("/x",)
    hash(s)


def test_derived_values() -> None:
    assert spec(working_directory="/opt/w/").venv_path == "/opt/w/.venv"
    assert spec(venv="/opt/venv/").venv_path == "/opt/venv"
    assert spec(host="::1").bind == "[::1]:8000"
    unix = spec(unix_socket="/run/web/web.sock")
    assert unix.bind == "unix:/run/web/web.sock" and unix.port is None
    assert not spec(user="www", group="www").dynamic_user


@pytest.mark.parametrize(
    ("server", "workers", "reloadable"),
    [
        ("gunicorn", 1, True),
        ("uwsgi", 1, True),
        ("uvicorn", 1, False),
        ("uvicorn", 2, True),
        ("command", 4, False),
    ],
)
def test_reloadable(server: str, workers: int, reloadable: bool) -> None:
    raw: dict[str, Any] = {"server": server, "workers": workers}
    if server == "command":
        raw["command"] = ["/bin/true"]
    assert spec(**raw).reloadable is reloadable


def test_command_from_a_string_is_split_like_a_shell() -> None:
    s = spec(server="command", command="/usr/bin/python3 -m 'my mod' --x=\"a b\"")
    assert s.command == ("/usr/bin/python3", "-m", "my mod", "--x=a b")


def test_hard_but_valid_values_are_accepted() -> None:
    s = spec(
        description='Shop 100% ünïcödé "quoted" $HOME; it\'s',
        server_args=["--x=%h", "$VAR", ";", "", "a\\b", "日本"],
        environment={"URL": "postgres://u:p%40ss@h/db?x=$y", "EMPTY": "", "Q": '"\\'},
        working_directory="/srv/my app/100%",
        venv="/opt/venv",
        hardening={"writable_paths": ["/var/lib/my app", "/srv/ä"]},
    )
    assert s.environment[0] == ("URL", "postgres://u:p%40ss@h/db?x=$y")


def test_levels_are_case_insensitive() -> None:
    s = spec(log_level="debug", loggers={"sqlalchemy.engine": "warning"})
    assert s.log_level == "DEBUG" and s.loggers == (("sqlalchemy.engine", "WARNING"),)


def test_port_as_digits_from_a_flag() -> None:
    assert spec(port="8080").port == 8080


@pytest.mark.parametrize(
    ("match", "raw"),
    [
        ("unknown key 'colour'", {"colour": "red"}),
        ("name: missing", {"name": None}),
        ("server: expected one of", {"server": "nginx"}),
        ("app: required", {"app": None}),
        ("app: expected an import path", {"app": "not a path"}),
        ("app: expected an import path", {"app": "pkg.wsgi"}),
        ("command: required", {"server": "command"}),
        ("command: cannot split", {"server": "command", "command": '/bin/x "open'}),
        ("command\\[0\\].*absolute", {"server": "command", "command": ["python3", "app.py"]}),
        ("command\\[0\\].*quotes", {"server": "command", "command": ["/srv/o'brien/run"]}),
        ("command\\[0\\].*backslash", {"server": "command", "command": ["/srv/a\\b/run"]}),
        ("command\\[0\\].*directory", {"server": "command", "command": ["/usr/bin/"]}),
        ("port: expected a whole number", {"port": 0}),
        ("port: expected a whole number", {"port": 65536}),
        ("port: expected a whole number", {"port": "http"}),
        ("port: expected a whole number", {"port": True}),
        ("port: expected a whole number", {"port": 80.5}),
        ("workers: expected a whole number", {"workers": 0}),
        ("host: expected an address", {"host": "a b"}),
        ("host: expected an address", {"host": "[::1]"}),
        ("host: must not be empty", {"host": ""}),
        ("user: .* not a valid user", {"user": "Root"}),
        ("user: .* not a valid user", {"user": "www$"}),
        ("user: .* not a valid user", {"user": "u" * 32}),
        ("user: .* not a valid user", {"user": "1abc"}),
        ("group: needs user", {"group": "www"}),
        ("working-directory: must be an absolute path", {"working_directory": "srv/app"}),
        ("working-directory: must not contain", {"working_directory": "/srv/../etc"}),
        ("working-directory: must not contain", {"working_directory": "/srv/./app"}),
        ("working-directory: must not end with a backslash", {"working_directory": "/srv/a\\"}),
        ("working-directory: systemd refuses quotes", {"working_directory": '/srv/"app"'}),
        ("venv: systemd refuses quotes", {"venv": "/opt/o'brien"}),
        ("venv: must be an absolute path", {"venv": "venv"}),
        ("environment: invalid name", {"environment": {"1A": "x"}}),
        ("environment: invalid name", {"environment": {"A-B": "x"}}),
        ("environment: invalid name", {"environment": {"": "x"}}),
        ("environment: expected NAME=VALUE", {"environment": ["NOVALUE"]}),
        ("environment.A: expected a string", {"environment": {"A": 1}}),
        ("environment: expected a table", {"environment": "A=1"}),
        ("environment-file: must be an absolute path", {"environment_file": ".env"}),
        ("graceful-timeout: expected a whole number", {"graceful_timeout": 0}),
        ("health-path: expected a URL path", {"health_path": "health"}),
        ("health-path: expected a URL path", {"health_path": "/a b"}),
        ("version-path: expected a URL path", {"version_path": "version"}),
        ("version-path: must not be empty", {"version_path": ""}),
        ("restart-sec: expected a duration", {"restart_sec": "soon"}),
        ("restart-sec: expected a duration", {"restart_sec": "-1"}),
        ("socket: expected true or false", {"socket": "yes"}),
        ("socket: socket activation needs", {"server": "command", "command": "/x", "socket": True}),
        ("description: must not end with a backslash", {"description": "trailing \\"}),
        ("server-args: expected a list", {"server_args": "--a --b"}),
        ("server-args\\[1\\]: expected a string", {"server_args": ["a", 1]}),
        ("log-format: expected one of", {"log_format": "xml"}),
        ("log-level: expected one of", {"log_level": "LOUD"}),
        ("loggers: invalid name", {"loggers": {"a b": "INFO"}}),
        ("loggers.x: expected one of", {"loggers": {"x": "LOUD"}}),
        ("hardening: expected a table", {"hardening": "strict"}),
        ("hardening: unknown key 'allow-all'", {"hardening": {"allow_all": True}}),
        ("hardening.profile: expected one of", {"hardening": {"profile": "paranoid"}}),
        ("hardening.writable-paths: must be an absolute", {"hardening": {"writable_paths": ["x"]}}),
        ("hardening.writable-paths: expected a list", {"hardening": {"writable_paths": "/x"}}),
        ("hardening.allow-wx: expected true or false", {"hardening": {"allow_wx": 1}}),
        ("unix-socket: at most 107 bytes", {"unix_socket": "/run/" + "s" * 103}),
    ],
)
def test_bad_values_name_the_field(match: str, raw: dict[str, Any]) -> None:
    rejects(match, **raw)


@pytest.mark.parametrize("char", ["\n", "\r", "\t", "\x00", "\x1b", "\x7f"])
@pytest.mark.parametrize(
    "key", ["description", "working_directory", "environment_file", "host", "smoke"]
)
def test_control_characters_are_refused_everywhere(key: str, char: str) -> None:
    value = f"/srv/a{char}b" if key in ("working_directory", "environment_file") else f"a{char}b"
    rejects(f"{key.replace('_', '-')}: control character", **{key: value})


@pytest.mark.parametrize("char", ["\n", "\x00", "\ufffe", "\uffff", "\ufdd0", "\udc80"])
def test_bad_characters_in_lists_and_tables(char: str) -> None:
    rejects("server-args\\[0\\]", server_args=[f"a{char}"])
    rejects("environment.A", environment={"A": f"x{char}y"})
    rejects("hardening.writable-paths", hardening={"writable_paths": [f"/srv/{char}"]})
    rejects("command\\[1\\]", server="command", command=["/bin/x", f"a{char}"])


def test_a_newline_cannot_inject_a_directive() -> None:
    rejects("description: control character", description="x\nExecStartPre=/bin/rm -rf /")
    # "$" in a regex also matches before a final newline: names are matched in full.
    rejects("environment: invalid name", environment={"A\n": "x"})
    rejects("loggers: invalid name", loggers={"app\n": "INFO"})


@pytest.mark.parametrize(
    "name", ["web", "Web2", "my-app", "my_app", "api.v2", "0day", "a", "x" * 247, "a..b"]
)
def test_valid_unit_names(name: str) -> None:
    assert validate_unit_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "x" * 248,
        "web@1",
        "web@",
        "my app",
        "-web",
        "_web",
        ".web",
        "web/x",
        "web:x",
        "web\\x",
        "wéb",
        "web%i",
        "web$",
        "web\n",
        None,
        3,
    ],
)
def test_invalid_unit_names(name: Any) -> None:
    with pytest.raises(SpecError, match=r"^name: "):
        validate_unit_name(name)


def test_spec_error_is_a_usage_error_with_exit_2() -> None:
    assert issubclass(SpecError, UsageError)
    assert SpecError("x").exit_code == ExitCode.USAGE


def test_every_field_is_a_config_key() -> None:
    names = {f.name for f in dataclasses.fields(AppSpec)} - {"hardening"}
    assert set(SPEC_KEYS) == names
