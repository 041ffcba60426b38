"""Properties: every accepted value renders a unit systemd accepts; every bad one is refused.

Each example of the accepting properties runs ``systemd-analyze verify`` (~50 ms), so the
example counts stay modest. The values also round-trip through the reader of
tests/unitfile.py, a model of systemd's own word splitting.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from opskit.errors import SpecError
from opskit.spec import build_spec
from opskit.systemd.units import render_units
from opskit.validate import system_directory, validate_unit_name
from tests.conftest import needs_analyze, verify
from tests.unitfile import (
    env_assignment,
    exec_argv0,
    exec_words,
    list_words,
    parse,
    value,
    values,
)

SLOW = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FAST = settings(max_examples=200, deadline=None)

# Printable text with the characters that need escaping in unit files over-represented.
_HARD = st.sampled_from([*"%$\"'\\ ;#=@-+!:/*?[]{}~`&|<>", "ü", "日", "✓", "\u00a0"])
_PRINTABLE = st.characters(
    blacklist_categories=("Cc", "Cs"),
    blacklist_characters="\ufffe\uffff",
    max_codepoint=0x2FFFF,
).filter(lambda c: not 0xFDD0 <= ord(c) <= 0xFDEF and (ord(c) & 0xFFFE) != 0xFFFE)
CHAR = st.one_of(_HARD, _PRINTABLE)
TEXT = st.text(CHAR, max_size=20)
# A path component: no "/" (it separates), not "." or "..", no trailing backslash.
SEGMENT = (
    st.text(CHAR.filter(lambda c: c != "/"), min_size=1, max_size=10)
    .filter(lambda s: s not in (".", ".."))
    .filter(lambda s: (len(s) - len(s.rstrip("\\"))) % 2 == 0)
)
PATH = (
    st.lists(SEGMENT, min_size=1, max_size=3)
    .map(lambda parts: "/" + "/".join(parts))
    .filter(lambda p: not p.endswith(" "))
)
EXE_SEGMENT = SEGMENT.filter(lambda s: not any(c in s for c in "\\\"'"))
EXE = (
    st.lists(EXE_SEGMENT, min_size=1, max_size=3)
    .map(lambda parts: "/" + "/".join(parts))
    .filter(lambda p: not p.endswith(" "))
)
ENV_NAME = st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_]{0,12}\Z")


def _render_and_verify(raw: dict[str, Any]) -> dict[str, list[tuple[str, str]]]:
    spec = build_spec(raw)
    files = render_units(spec)
    with tempfile.TemporaryDirectory() as tmp:
        for file in files:
            (Path(tmp) / file.name).write_text(file.content, encoding="utf-8")
        for file in files:
            assert verify(Path(tmp) / file.name) == "", file.content
    return parse(files[0].content)


@needs_analyze
@SLOW
@given(
    server=st.sampled_from(["gunicorn", "uvicorn", "uwsgi"]),
    server_args=st.lists(TEXT, max_size=4),
    env=st.dictionaries(ENV_NAME, TEXT, max_size=3),
    description=TEXT.filter(lambda s: s.strip() == s and not s.endswith("\\")),
    workdir=PATH,
    venv=EXE,
    # Writable system directories are refused (tests/test_hardening_paths.py), and so is
    # a unix socket directly in one, such as /x.sock in /.
    writable=st.lists(PATH.filter(lambda p: system_directory(p) is None), max_size=2),
    env_file=PATH,
    profile=st.sampled_from(["default", "relaxed", "off"]),
    socket=st.booleans(),
    unix=st.one_of(
        st.none(),
        PATH.filter(lambda p: len(p.encode()) <= 107).filter(
            lambda p: system_directory(p.rsplit("/", 1)[0] or "/") is None
        ),
    ),
)
def test_accepted_values_verify_and_round_trip(
    server: str,
    server_args: list[str],
    env: dict[str, str],
    description: str,
    workdir: str,
    venv: str,
    writable: list[str],
    env_file: str,
    profile: str,
    socket: bool,
    unix: str | None,
) -> None:
    raw: dict[str, Any] = {
        "name": "prop",
        "server": server,
        "app": "pkg.wsgi:app",
        "server_args": server_args,
        "environment": env,
        "working_directory": workdir,
        "venv": venv,
        "environment_file": env_file,
        "socket": socket,
        "hardening": {"profile": profile, "writable_paths": writable},
        "unix_socket": unix,
    }
    if description:
        raw["description"] = description
    if server == "uwsgi":
        # What uWSGI would expand is refused for it (tests/test_uwsgi_values.py).
        assume(not any(s in v for v in [*server_args, unix or ""] for s in ("$(", "@(", "%(")))
    sections = _render_and_verify(raw)
    argv = exec_words(value(sections, "Service", "ExecStart"))
    # uvicorn runs from opskit's bootstrap by the venv's python (docs/systemd.md).
    binary = "python" if server == "uvicorn" else server
    assert argv[0] == f"{venv.rstrip('/')}/bin/{binary}"
    tail = argv[len(argv) - len(server_args) - (1 if server == "gunicorn" else 0) :]
    assert tail[: len(server_args)] == server_args
    environment = dict(env_assignment(v) for v in values(sections, "Service", "Environment"))
    for name, val in env.items():
        assert environment[name] == val
    assert value(sections, "Service", "WorkingDirectory") == workdir.replace("%", "%%")
    assert value(sections, "Service", "EnvironmentFile") == env_file.replace("%", "%%")
    if description:
        assert value(sections, "Unit", "Description") == description.replace("%", "%%")
    if writable and profile != "off":
        paths = list_words(value(sections, "Service", "ReadWritePaths"))
        assert paths[: len(writable)] == writable
    if unix and socket:
        listen = parse(render_units(build_spec(raw))[1].content)
        assert value(listen, "Socket", "ListenStream") == unix.replace("%", "%%")


@needs_analyze
@SLOW
@given(exe=EXE, args=st.lists(TEXT, max_size=6))
def test_accepted_commands_verify_and_round_trip(exe: str, args: list[str]) -> None:
    sections = _render_and_verify({"name": "cmd", "server": "command", "command": [exe, *args]})
    line = value(sections, "Service", "ExecStart")
    # The path systemd executes, then the arguments; argv[0] is expanded separately.
    assert exec_words(line) == [exe, *args]
    assert exec_argv0(line) == exe


UNIT_CHARS = st.sampled_from("abcXYZ019_.-")


@needs_analyze
@settings(max_examples=30, deadline=None)
@given(
    name=st.builds(
        lambda first, rest: first + rest,
        st.sampled_from("aZ09"),
        st.text(UNIT_CHARS, max_size=30),
    )
)
def test_accepted_unit_names_verify(name: str) -> None:
    assert validate_unit_name(name) == name
    _render_and_verify({"name": name, "app": "pkg.wsgi:app"})


# --- everything refused is a SpecError, never another exception ----------------------------

CONTROL = st.sampled_from([chr(c) for c in [*range(0x20), 0x7F]])
BAD_CHAR = st.one_of(
    CONTROL, st.sampled_from(["\ufffe", "\uffff", "\ufdd0", "\U0001fffe", "\udc80"])
)


@st.composite
def with_bad_char(draw: st.DrawFn, base: st.SearchStrategy[str] = TEXT) -> str:
    text = draw(base)
    at = draw(st.integers(0, len(text)))
    return text[:at] + draw(BAD_CHAR) + text[at:]


TEXT_FIELDS = ["description", "host", "smoke", "health_path", "log_level", "app"]
PATH_FIELDS = ["working_directory", "venv", "environment_file", "unix_socket", "log_config"]


@FAST
@given(field=st.sampled_from(TEXT_FIELDS + PATH_FIELDS), bad=with_bad_char())
def test_control_characters_are_refused_in_every_field(field: str, bad: str) -> None:
    raw: dict[str, Any] = {"name": "web", "app": "pkg.wsgi:app"}
    raw[field] = "/" + bad if field in PATH_FIELDS else bad
    with pytest.raises(SpecError):
        build_spec(raw)


@FAST
@given(bad=with_bad_char(), where=st.sampled_from(["args", "env", "writable", "command"]))
def test_control_characters_are_refused_in_lists_and_tables(bad: str, where: str) -> None:
    raw: dict[str, Any] = {"name": "web", "app": "pkg.wsgi:app"}
    if where == "args":
        raw["server_args"] = ["--ok", bad]
    elif where == "env":
        raw["environment"] = {"OK": "x", "BAD": bad}
    elif where == "writable":
        raw["hardening"] = {"writable_paths": ["/" + bad]}
    else:
        raw.update(server="command", command=["/bin/x", bad])
    with pytest.raises(SpecError):
        build_spec(raw)


@FAST
@given(name=st.text(max_size=12))
def test_bad_unit_names_raise_spec_error(name: str) -> None:
    valid = (
        bool(name)
        and name[0].isascii()
        and name[0].isalnum()
        and all(c.isascii() and (c.isalnum() or c in "_.-") for c in name)
    )
    assume(not valid)
    with pytest.raises(SpecError):
        validate_unit_name(name)


@FAST
@given(name=st.text(min_size=1, max_size=12))
def test_bad_env_names_raise_spec_error(name: str) -> None:
    assume(
        not (name[0].isascii() and (name[0].isalpha() or name[0] == "_"))
        or not all(c.isascii() and (c.isalnum() or c == "_") for c in name)
    )
    with pytest.raises(SpecError):
        build_spec({"name": "web", "app": "a:b", "environment": {name: "x"}})


@FAST
@given(value=st.one_of(st.integers(), st.floats(), st.booleans(), st.lists(TEXT)))
def test_wrong_types_raise_spec_error(value: object) -> None:
    for key in ("description", "working_directory", "host", "app", "user"):
        with pytest.raises(SpecError):
            build_spec({"name": "web", "app": "a:b", key: value})
