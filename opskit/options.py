"""Every spec option, declared once; what a command receives; loading the spec; output.

The table ``SPEC_OPTIONS`` is the one place a flag that sets a spec key is written: its
flags, spec key, type, help text and which commands show it. The options that describe
the app and how it runs are flags on every command that reads the spec; the others are
flags of their own commands and reachable everywhere through ``--set``. opskit.commands
turns the table into each command's typer parameters and hands the command a
``SpecArgs`` (and an ``Output``) instead of a dozen loose values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from opskit.errors import UsageError

if TYPE_CHECKING:
    from opskit.render import RenderedFile
    from opskit.spec import AppSpec


@dataclass(frozen=True)
class SpecOption:
    """One spec key as a command-line flag."""

    #: The spec key in snake_case, ``hardening.KEY`` for a key of the hardening table.
    key: str
    #: The flag's spellings; with ``toggle`` the first is ``--x`` and ``--no-x`` is added.
    flags: tuple[str, ...]
    #: str, int, bool or list (repeatable, of str).
    kind: type
    help: str
    #: The commands that show it besides the spec's own options; () for every command.
    commands: tuple[str, ...] = ()
    toggle: bool = False
    metavar: str | None = None

    @property
    def param(self) -> str:
        """The Python parameter name: the key without its table."""
        return self.key.rpartition(".")[2]

    @property
    def everywhere(self) -> bool:
        """Whether every command that reads the spec shows this flag."""
        return not self.commands

    def argv(self, value: Any) -> list[str]:
        """The flags that give ``value`` again (for ops.mk, which re-runs opskit)."""
        if self.kind is bool:
            if self.toggle and not value:
                return [f"--no-{self.flags[0][2:]}"]
            return [self.flags[0]] if value else []
        if self.kind is list:
            return [word for item in value for word in (self.flags[0], str(item))]
        return [self.flags[0], str(value)]


_S, _R, _D = ("systemd",), ("reload-script",), ("deploy",)

#: Every spec option, in the order --help and docs/cli.md list them.
SPEC_OPTIONS: tuple[SpecOption, ...] = (
    # What the app is and how it runs: on every command that reads the spec.
    SpecOption("server", ("--server",), str, "gunicorn, uvicorn, uwsgi or command."),
    SpecOption("app", ("--app",), str, "Import path, e.g. 'pkg.wsgi:app'."),
    SpecOption("command", ("--command",), str, "Command line for server 'command'."),
    SpecOption("host", ("--host",), str, "Address to bind [127.0.0.1]."),
    SpecOption("port", ("--port",), int, "Port to bind [8000]."),
    SpecOption("unix_socket", ("--unix-socket",), str, "Bind a unix socket instead."),
    SpecOption("workers", ("--workers",), int, "Worker processes [2]."),
    SpecOption("user", ("--user",), str, "Run as this user [a dynamic user]."),
    SpecOption("group", ("--group",), str, "Run with this group."),
    SpecOption("working_directory", ("--workdir",), str, "Working directory, absolute [/srv/app]."),
    SpecOption("venv", ("--venv",), str, "Virtual environment [WORKDIR/.venv]."),
    SpecOption("environment", ("--env", "-e"), list, "NAME=VALUE, repeatable."),
    SpecOption("environment_file", ("--env-file",), str, "EnvironmentFile= path."),
    SpecOption("graceful_timeout", ("--graceful-timeout",), int, "Seconds to drain on stop [30]."),
    SpecOption(
        "base",
        ("--base",),
        str,
        "Releases under BASE/releases, the live one BASE/current (workdir and venv follow).",
    ),
    # The units.
    SpecOption("restart_sec", ("--restart-sec",), str, "RestartSec= [5].", _S),
    SpecOption(
        "socket",
        ("--socket",),
        bool,
        "Socket activation: a .socket unit holds the port.",
        ("systemd", "reload-script"),
        toggle=True,
    ),
    SpecOption("hardening.profile", ("--profile",), str, "Hardening: default, relaxed or off.", _S),
    SpecOption(
        "hardening.writable_paths", ("--writable",), list, "ReadWritePaths=, repeatable.", _S
    ),
    SpecOption(
        "hardening.allow_outbound",
        ("--allow-outbound",),
        bool,
        "No IPAddressDeny= (nor PrivateNetwork= with --socket): connect anywhere.",
        _S,
    ),
    SpecOption(
        "hardening.ip_address_allow",
        ("--ip-address-allow",),
        list,
        "Allow ADDR[/PREFIX] despite IPAddressDeny=any (IPAddressAllow=); repeatable.",
        _S,
        metavar="ADDR",
    ),
    SpecOption(
        "hardening.allow_home", ("--allow-home",), bool, "ProtectHome=read-only, not yes.", _S
    ),
    SpecOption(
        "hardening.allow_wx",
        ("--allow-wx",),
        bool,
        "Drop MemoryDenyWriteExecute= (cffi callbacks, JITs).",
        _S,
    ),
    # The reload script.
    SpecOption(
        "supervisor", ("--supervisor",), str, "Who runs the server: systemd or pidfile.", _R
    ),
    SpecOption("pidfile", ("--pidfile",), str, "The master's pidfile [/run/NAME/SERVER.pid].", _R),
    SpecOption(
        "deploy_id_file",
        ("--deploy-id-file",),
        str,
        "File the app reads its version from at import.",
        _R,
    ),
    SpecOption("preload", ("--preload",), bool, "gunicorn --preload.", _R, toggle=True),
    SpecOption("lazy_apps", ("--lazy-apps",), bool, "uWSGI lazy-apps.", _R, toggle=True),
    SpecOption(
        "keep_alive",
        ("--keep-alive",),
        bool,
        "uvicorn: keep connections open between requests [off: Connection: close].",
        ("systemd", "reload-script"),
        toggle=True,
    ),
    SpecOption(
        "canary",
        ("--canary",),
        bool,
        "Serve the new code from a throwaway server before the reload [on].",
        _R,
        toggle=True,
    ),
    SpecOption(
        "watch",
        ("--watch",),
        list,
        "File or directory whose change reloads the service, verified; repeatable.",
        _S,
        metavar="PATH",
    ),
    # Releases.
    SpecOption("keep_releases", ("--keep-releases",), int, "Releases kept [5].", _D),
    SpecOption("shared", ("--shared",), list, "Path in BASE/shared linked into each release.", _D),
    SpecOption(
        "pre_switch",
        ("--pre-switch",),
        list,
        "Command run in the new release before the switch; repeatable.",
        _D,
        metavar="CMD",
    ),
    SpecOption(
        "interpreter", ("--interpreter",), str, "Python that makes release venvs [python3].", _D
    ),
    # The fleet.
    SpecOption(
        "serial",
        ("--serial",),
        list,
        "Hosts per batch: N, N%, or repeated for a ramp (1, 25%, 100%) [1].",
        ("ansible",),
        metavar="N|N%",
    ),
    # The upgrade.
    SpecOption(
        "installer",
        ("--installer",),
        str,
        "pip, or uv if no pip (deploy: what builds the release [pip]).",
        ("upgrade", "deploy"),
        metavar="pip|uv",
    ),
    # The logging config.
    SpecOption(
        "log_level",
        ("--level",),
        str,
        "Level of root and the app's loggers [INFO].",
        ("logging init",),
    ),
)


def options_for(command: str) -> tuple[SpecOption, ...]:
    """The spec options ``command`` shows as flags, in table order."""
    return tuple(o for o in SPEC_OPTIONS if o.everywhere or command in o.commands)


# --- what a command receives --------------------------------------------------------------


@dataclass(frozen=True)
class SpecArgs:
    """The spec as the command line gave it: name, config file, flags and --set items."""

    command: str
    name: str | None
    config: Path | None
    sets: tuple[str, ...]
    #: The flags given, as (option, value), in table order.
    given: tuple[tuple[SpecOption, Any], ...]

    def overrides(self) -> dict[str, Any]:
        """The given flags as spec overrides, hardening keys in their own table."""
        out: dict[str, Any] = {}
        for option, value in self.given:
            table, dot, key = option.key.rpartition(".")
            if dot:
                out.setdefault(table, {})[key] = value
            else:
                out[key] = value
        return out

    def value(self, key: str) -> Any:
        """The value a flag gave for ``key``, or None."""
        return next((v for o, v in self.given if o.key == key), None)

    def argv(self) -> tuple[str, ...]:
        """The flags and --set items that rebuild the same spec."""
        args = [word for option, value in self.given for word in option.argv(value)]
        for item in self.sets:
            args += ["--set", item]
        return tuple(args)

    def load(self, **extra: Any) -> AppSpec:
        """Build the spec from the config file under these overrides (and ``extra``)."""
        return load(self.name, self.config, list(self.sets), **self.overrides(), **extra)

    def raw(self) -> dict[str, Any]:
        """What ``load`` validates: the config file's table under these overrides."""
        from opskit.config import merged_raw

        merged = _merged(self.name, list(self.sets), self.overrides())
        return merged_raw(merged, config=self.config)[0]


@dataclass(frozen=True)
class Output:
    """Where a command's files go: -o, --force, --check, --diff."""

    directory: str | None
    force: bool
    check: bool
    diff: bool
    #: The command's default directory.
    default: str

    @property
    def target(self) -> str:
        """The directory to write into, or '-' for stdout."""
        return self.directory if self.directory is not None else self.default

    @property
    def writes(self) -> bool:
        """Whether the files are written into a directory (not stdout, --check or --diff)."""
        return self.target != "-" and not (self.check or self.diff)

    def emit(self, files: list[RenderedFile], *, announce: bool = True) -> None:
        """Send the files where the output options say; name the default directory once."""
        if announce and self.directory is None and self.writes:
            say(f"writing to {self.target}/ (the default; -o DIR or -o - to change)")
        emit(files, self.target, force=self.force, check=self.check, diff=self.diff)


# --- loading the spec --------------------------------------------------------------------


def _parse_set(items: Sequence[str] | None) -> dict[str, Any]:
    """Turn ``--set key=toml-value`` items into a nested override mapping."""
    from opskit.config import parse_assignment

    out: dict[str, Any] = {}
    for item in items or []:
        key, value = parse_assignment(item)
        if "." in key:
            table, _, sub = key.partition(".")
            out.setdefault(table, {})[sub] = value
        else:
            out[key] = value
    return out


def load(
    name: str | None,
    config: Path | None,
    sets: Sequence[str] | None = None,
    **overrides: Any,
) -> AppSpec:
    """Build the spec from the config file under the command-line overrides."""
    from opskit.config import load_spec

    return load_spec(_merged(name, sets, overrides), config=config)


def _merged(
    name: str | None, sets: Sequence[str] | None, overrides: dict[str, Any]
) -> dict[str, Any]:
    """The command line's overrides: flags, NAME and --set items in one mapping."""
    merged: dict[str, Any] = {"name": name, **overrides}
    for key, value in _parse_set(sets).items():
        current = merged.get(key)
        if isinstance(value, dict) and isinstance(current, list):
            # --env A=1 arrives as a list, --set environment.B=2 as a table: keep both.
            pairs = dict(item.partition("=")[::2] for item in current if "=" in item)
            bad = [item for item in current if "=" not in item]
            if bad:
                raise UsageError(f"--env: expected NAME=VALUE, got {bad[0]!r}")
            merged[key] = {**pairs, **value}
        elif isinstance(value, dict) and isinstance(current, dict):
            merged[key] = {**current, **value}
        else:
            merged[key] = value
    return merged


# --- output helpers --------------------------------------------------------------------


def say(message: str) -> None:
    """Progress and reports go to stderr, so stdout stays clean for ``-o -``."""
    typer.echo(message, err=True)


def emit(files: list[RenderedFile], output: str, *, force: bool, check: bool, diff: bool) -> None:
    """Send rendered files to stdout, or check, diff or write them into a directory."""
    from opskit import write as writer

    if output == "-" and (check or diff):
        raise UsageError("--check and --diff compare files in a directory; not with -o -")
    if output == "-":
        writer.to_stream(files)
        return
    directory = Path(output)
    if diff:
        text = writer.diff(files, directory)
        typer.echo(text, nl=False)
        if text:
            raise typer.Exit(1)
        return
    if check:
        for item in writer.check(files, directory):
            say(f"identical  {item.path}")
        return
    for item in writer.write(files, directory, force=force):
        say(f"{item.action.value:<10} {item.path}")
