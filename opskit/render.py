"""The one Jinja environment and the named escaping filters, one per target syntax."""

from __future__ import annotations

import functools
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2


@dataclass(frozen=True)
class RenderedFile:
    """An artifact as text, not yet on disk: the write step decides what happens to it."""

    name: str
    content: str
    mode: int = 0o644


def templates_dir() -> Path:
    """The templates: inside the installed package, or at the top of a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "templates", here.parent / "templates"):
        if candidate.is_dir():
            return candidate
    raise RuntimeError("opskit's templates are missing from this installation")


# --- systemd (systemd.syntax(7), systemd.service(5)) -------------------------------------

_NEEDS_QUOTES = re.compile(r"""[\s"'\\]""")


def _systemd_quoted(text: str) -> str:
    # Inside double quotes systemd undoes C-style escapes, so only backslash and the
    # quote itself need escaping; everything else (non-ASCII included) stays as it is.
    # A newline or tab (only ever in opskit's own text, such as the watchdog's probe
    # code: spec values refuse control characters) is written as its C escape.
    text = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + text.replace("\n", "\\n").replace("\t", "\\t") + '"'


def systemd_value(text: str) -> str:
    """Escape a whole-line value (Description=, WorkingDirectory=): ``%`` starts a specifier."""
    return str(text).replace("%", "%%")


def systemd_word(text: str) -> str:
    """Escape one item of a space-separated list (ReadWritePaths=), quoting when needed."""
    text = systemd_value(text)
    return _systemd_quoted(text) if not text or _NEEDS_QUOTES.search(text) else text


def systemd_exec_arg(text: str) -> str:
    """Escape one ExecStart= argument: ``%%`` for specifiers, ``$$`` against variable expansion."""
    text = systemd_value(text).replace("$", "$$")
    if text == ";":
        # A lone ";" separates commands on an Exec line; "\;" passes it literally.
        return "\\;"
    return _systemd_quoted(text) if not text or _NEEDS_QUOTES.search(text) else text


def systemd_executable(text: str) -> str:
    """Escape the executable of an Exec line: specifiers apply to it, ``$`` expansion does not.

    systemd never expands ``$`` in the path it executes, so it never undoes ``$$`` there
    ("/srv/a$$b/venv/bin/gunicorn" fails with 203/EXEC). Quotes and backslashes are
    refused earlier (validate_executable).
    """
    text = systemd_value(text)
    return _systemd_quoted(text) if _NEEDS_QUOTES.search(text) else text


def systemd_exec(argv: list[str] | tuple[str, ...]) -> str:
    """Join an argument vector into an ExecStart= value."""
    words = [systemd_exec_arg(a) for a in argv[1:]]
    if "$" in argv[0]:
        # The path is taken literally but argv[0] is expanded like every argument: the
        # "@" prefix gives them separately, so each gets the escaping its own rules need.
        return " ".join(["@" + systemd_executable(argv[0]), systemd_exec_arg(argv[0]), *words])
    return " ".join([systemd_executable(argv[0]), *words])


def systemd_env(pair: tuple[str, str]) -> str:
    """Render one Environment= assignment, always quoted by systemd's (not the shell's) rules."""
    name, value = pair
    return _systemd_quoted(systemd_value(f"{name}={value}"))


# --- other syntaxes ------------------------------------------------------------------------


def shell_quote(text: str) -> str:
    """Quote for POSIX sh."""
    return shlex.quote(str(text))


def make_var(text: str) -> str:
    """Escape a value for a Make variable assignment: ``$`` doubled, ``#`` escaped."""
    text = str(text)
    if "\n" in text:
        raise ValueError(f"value cannot be written to a Make variable: {text!r}")
    text = text.replace("$", "$$")
    # GNU Make reads "\#" as "#" but "\\#" as "\" then a comment: double the backslashes
    # in front of a "#". "$()" expands to nothing and guards what Make would otherwise
    # eat: leading blanks (stripped) and a trailing backslash (a line continuation).
    text = re.sub(r"(\\*)#", lambda m: m.group(1) * 2 + "\\#", text)
    if text[:1].isspace():
        text = "$()" + text
    if text.endswith("\\"):
        text += "$()"
    return text


# --- YAML that Ansible reads ----------------------------------------------------------------


def ansible_unsafe(value: Any) -> str:
    """A YAML value Ansible never templates: ``!unsafe`` on every string, lists of them.

    A string is a JSON string, which is also a YAML double-quoted scalar (its escapes
    are YAML's); ``!unsafe`` keeps a ``{{`` or ``{%`` in it literal when Ansible uses it.
    Numbers and booleans are plain; a list is a flow sequence of the same.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(ansible_unsafe(v) for v in value) + "]"
    import json

    # Not ensure_ascii: JSON writes astral characters as surrogate pairs, which YAML does
    # not join. What YAML reads as a line break or refuses is escaped as YAML's own \u.
    text = json.dumps(str(value), ensure_ascii=False)
    return "!unsafe " + _YAML_ESCAPE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


_YAML_ESCAPE = re.compile("[\x7f-\x9f\u2028\u2029\ufeff\ufffe\uffff]")


# --- uWSGI --------------------------------------------------------------------------------

# After reading every option (command line, ini, UWSGI_* environment variables) uWSGI
# rewrites each value in three passes (core/uwsgi.c): "$(NAME)" becomes an environment
# variable, "@(FILE)" a file's contents, "%(NAME)" another option's value; a result is
# scanned again. Nothing escapes them, so opskit refuses the opening sequences.
_UWSGI_EXPANSION = re.compile(r"[$@%]\(")


def uwsgi_arg(text: str) -> str:
    """Return a uWSGI option value unchanged, or raise ValueError if uWSGI would rewrite it."""
    text = str(text)
    found = _UWSGI_EXPANSION.search(text)
    if found:
        raise ValueError(
            f"uWSGI would replace {found.group()}...) in {text!r} "
            "(its config expansion has no escape)"
        )
    return text


def ini_value(text: str) -> str:
    """Escape a value for uWSGI's ini parser: ``%%`` for ``%``; refuse what it cannot hold.

    Reading a config file, uWSGI replaces ``%`` and the character after it (core/utils.c
    magic_sub(): ``%d`` the file's directory, ``%n`` its name, an unknown letter nothing),
    and ``%%`` by ``%``. The parser has no quoting: a newline ends the value, blanks at
    either end are stripped.
    """
    text = uwsgi_arg(text)
    if "\n" in text or text != text.strip() or text.startswith((";", "#")):
        raise ValueError(f"value cannot be written to an ini file: {text!r}")
    return text.replace("%", "%%")


def json_value(value: Any, indent: int | None = None) -> str:
    """Render a value as JSON (also a valid YAML flow scalar or sequence); never HTML-escaped."""
    import json

    return json.dumps(value, indent=indent, ensure_ascii=False)


def python_literal(value: Any) -> str:
    """Render plain data (dicts, lists, strings, numbers, booleans) as a Python literal."""
    import pprint

    return pprint.pformat(value, indent=1, width=88, sort_dicts=False)


FILTERS: dict[str, Any] = {
    "json_value": json_value,
    "python_literal": python_literal,
    "systemd_value": systemd_value,
    "systemd_word": systemd_word,
    "systemd_exec": systemd_exec,
    "systemd_exec_arg": systemd_exec_arg,
    "systemd_env": systemd_env,
    "shell_quote": shell_quote,
    "make_var": make_var,
    "ini_value": ini_value,
    "ansible_unsafe": ansible_unsafe,
}


def _bytecode_cache() -> jinja2.BytecodeCache | None:
    """Compiled templates kept in the user's cache directory, or None where it cannot be made.

    Compiling a template (and the lexer's regular expressions behind it) is the largest
    cost of a command's start-up after importing typer and jinja2 (bench/bench_startup.py).
    Jinja keys each entry by the template's source checksum and the Python version and
    writes it atomically, so an entry is never stale or half-written; the cache only saves
    time, and without it everything works the same.
    """
    import os

    base = os.environ.get("XDG_CACHE_HOME") or Path("~/.cache").expanduser()
    directory = Path(base, "opskit", "templates")
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not os.access(directory, os.W_OK | os.X_OK):
            return None
    except (OSError, RuntimeError):  # RuntimeError: no home directory to expand
        return None
    return jinja2.FileSystemBytecodeCache(str(directory))


@functools.cache
def environment() -> jinja2.Environment:
    """The Jinja environment, built once: strict, no HTML escaping, the filters registered."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        bytecode_cache=_bytecode_cache(),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters.update(FILTERS)
    return env


def render_template(name: str, **context: Any) -> str:
    """Render one template with the shared environment."""
    return environment().get_template(name).render(**context)
