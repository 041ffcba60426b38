"""Every spec option, declared once, and the typer parameters each command gets from it.

The table ``SPEC_OPTIONS`` is the one place a flag that sets a spec key is written: its
flags, spec key, type, help text and which commands show it. The options that describe
the app and how it runs are flags on every command that reads the spec; the others are
flags of their own commands and reachable everywhere through ``--set``. ``spec_command``
adds them (with ``--config``, ``--set`` and, for commands that write files, the output
options) to a command's signature, so typer sees ordinary parameters, and hands the
command a ``SpecArgs`` (and an ``Output``) instead of a dozen loose values.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import typer.core

from opskit.errors import UsageError

if TYPE_CHECKING:
    from typer._click.core import Context
    from typer._click.formatting import HelpFormatter

    from opskit.render import RenderedFile
    from opskit.spec import AppSpec


def command_group(name: str, help: str) -> typer.Typer:
    """A typer app as opskit's commands need it: help without rich, no pretty tracebacks."""
    return typer.Typer(
        name=name,
        help=help,
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
    )


app = command_group("opskit", "Production-hardened deployment artifacts for Python web services.")

#: The --help sections, in the order they are shown.
APP_PANEL = "App options (every command that reads the spec)"
COMMAND_PANEL = "Options"
SPEC_PANEL = "Spec options of this command (elsewhere: --set KEY=VALUE)"
CONFIG_PANEL = "Configuration"
OUTPUT_PANEL = "Output"
PANELS = (APP_PANEL, SPEC_PANEL, COMMAND_PANEL, CONFIG_PANEL, OUTPUT_PANEL)


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

    def annotation(self) -> Any:
        """The typer annotation of the parameter."""
        kind: Any = {str: str, int: int, bool: bool, list: list[str]}[self.kind]
        decls = [f"{self.flags[0]}/--no-{self.flags[0][2:]}", *self.flags[1:]]
        option = typer.Option(
            *(decls if self.toggle else self.flags),
            help=self.help,
            metavar=self.metavar,
            show_default=False,
            rich_help_panel=APP_PANEL if self.everywhere else SPEC_PANEL,
        )
        return Annotated[kind | None, option]

    def argv(self, value: Any) -> list[str]:
        """The flags that give ``value`` again (for ops.mk, which re-runs opskit)."""
        if self.kind is bool:
            if self.toggle and not value:
                return [f"--no-{self.flags[0][2:]}"]
            return [self.flags[0]] if value else []
        if self.kind is list:
            return [word for item in value for word in (self.flags[0], str(item))]
        return [self.flags[0], str(value)]


_S, _R = ("systemd",), ("reload-script",)

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
        "Keep the network with --socket (databases).",
        _S,
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


# --- the generated parameters ----------------------------------------------------------------

_Name = Annotated[
    str | None, typer.Argument(help="Service name (unit name); default: name in the config.")
]
_NameOption = Annotated[
    str | None,
    typer.Option(
        "--name",
        help="Service name in the config.",
        show_default=False,
        rich_help_panel=CONFIG_PANEL,
    ),
]
_Config = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="opskit.toml or pyproject.toml to read.",
        dir_okay=False,
        rich_help_panel=CONFIG_PANEL,
    ),
]
_Set = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="Any spec key, KEY=VALUE with a TOML value (e.g. --set hardening.allow-wx=true).",
        rich_help_panel=CONFIG_PANEL,
    ),
]
_OutputDir = Annotated[
    str | None,
    typer.Option(
        "--output",
        "-o",
        help="Directory to write into, or '-' for stdout.",
        rich_help_panel=OUTPUT_PANEL,
    ),
]
_Force = Annotated[
    bool, typer.Option("--force", help="Overwrite files that differ.", rich_help_panel=OUTPUT_PANEL)
]
_Check = Annotated[
    bool,
    typer.Option(
        "--check",
        help="Exit 1 if the files on disk differ; write nothing.",
        rich_help_panel=OUTPUT_PANEL,
    ),
]
_Diff = Annotated[
    bool,
    typer.Option(
        "--diff",
        help="Show how the files on disk differ; write nothing.",
        rich_help_panel=OUTPUT_PANEL,
    ),
]
_OUTPUT_PARAMS = {
    "output_dir": (_OutputDir, None),
    "force": (_Force, False),
    "check": (_Check, False),
    "diff": (_Diff, False),
}
_KW = inspect.Parameter.KEYWORD_ONLY
_POS = inspect.Parameter.POSITIONAL_OR_KEYWORD


class GroupedCommand(typer.core.TyperCommand):
    """A command whose --help lists its options in sections (typer's panels, without rich)."""

    def format_options(self, ctx: Context, formatter: HelpFormatter) -> None:
        """Write the options section by section, in the order of ``PANELS``."""
        sections: dict[str, list[tuple[str, str]]] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                panel = "Arguments"
            else:
                panel = getattr(param, "rich_help_panel", None) or COMMAND_PANEL
            sections.setdefault(panel, []).append(record)
        order = ["Arguments", *PANELS, *(p for p in sections if p not in PANELS)]
        for panel in dict.fromkeys(order):
            if sections.get(panel):
                with formatter.section(panel):
                    formatter.write_dl(sections[panel])


def spec_command(
    target: typer.Typer,
    command: str,
    *,
    output: str | None = None,
    name: str = "argument",
    help: str | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a command that reads the spec, with the spec options it shows as flags.

    The decorated function takes its own parameters plus ``spec: SpecArgs`` (and, with
    ``output`` set to its default directory, ``out: Output``). ``name`` is "argument" (a
    positional NAME) or "option" (``--name``, for commands whose argument is something else).
    """

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        options = options_for(command)
        hints = typing.get_type_hints(func, include_extras=True)
        own = [
            p.replace(annotation=hints[p.name])
            for p in inspect.signature(func).parameters.values()
            if p.name not in ("spec", "out")
        ]
        if name == "argument":
            head = [inspect.Parameter("name", _POS, default=None, annotation=_Name)]
        else:
            head = [inspect.Parameter("name", _KW, default=None, annotation=_NameOption)]
        positional = [p for p in own if p.kind is not _KW]
        keyword = [p for p in own if p.kind is _KW]
        if positional and name == "argument":
            raise TypeError(f"{command}: a positional NAME and other arguments")
        generated = [
            inspect.Parameter(o.param, _KW, default=None, annotation=o.annotation())
            for o in options
        ]
        tail = [
            inspect.Parameter("config", _KW, default=None, annotation=_Config),
            inspect.Parameter("sets", _KW, default=None, annotation=_Set),
        ]
        if output is not None:
            tail += [
                inspect.Parameter(key, _KW, default=default, annotation=annotation)
                for key, (annotation, default) in _OUTPUT_PARAMS.items()
            ]
        params = [*positional, *head, *generated, *keyword, *tail]

        @functools.wraps(func)
        def wrapper(**values: Any) -> Any:
            given = tuple(
                (o, values.pop(o.param)) for o in options if values.get(o.param) is not None
            )
            for o in options:
                values.pop(o.param, None)
            spec = SpecArgs(
                command,
                values.pop("name"),
                values.pop("config"),
                tuple(values.pop("sets") or ()),
                given,
            )
            if output is not None:
                values["out"] = Output(
                    values.pop("output_dir"),
                    values.pop("force"),
                    values.pop("check"),
                    values.pop("diff"),
                    output,
                )
            return func(spec=spec, **values)

        wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        target.command(command.rpartition(" ")[2], cls=GroupedCommand, help=help)(wrapper)
        return func

    return decorate


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
    return load_spec(merged, config=config)


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
