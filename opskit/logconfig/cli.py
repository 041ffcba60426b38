"""Commands: opskit logging init / opskit logging check (registered on the shared app)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from opskit.errors import CheckFailed, UsageError
from opskit.options import (
    AppOpt,
    CheckOpt,
    ConfigOpt,
    DiffOpt,
    ForceOpt,
    Name,
    OutputOpt,
    ServerOpt,
    SetOpt,
    app,
    emit,
    load,
    say,
)

if TYPE_CHECKING:
    from opskit.spec import AppSpec

logging_app = typer.Typer(
    name="logging",
    help="Logging that reaches stderr (and the journal) once, at the right level.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(logging_app, name="logging")

LevelOpt = Annotated[
    str | None, typer.Option("--level", help="Level of root and the app's loggers [INFO].")
]
LoggerOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--logger", help="NAME=LEVEL for one logger, repeatable (e.g. sqlalchemy=WARNING)."
    ),
]


def _logger_pairs(items: list[str] | None) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in items or []:
        name, sep, level = item.partition("=")
        if not sep or not name or not level:
            raise UsageError(f"--logger: expected NAME=LEVEL, got {item!r}")
        pairs[name.strip()] = level.strip()
    return pairs


def _load_with_loggers(
    name: str | None,
    config: Path | None,
    sets: list[str] | None,
    loggers: list[str] | None,
    **overrides: object,
) -> AppSpec:
    """Load the spec; --logger entries are merged into the config's loggers, not replacing them."""
    spec = load(name, config, sets, **overrides)
    extra = _logger_pairs(loggers)
    if not extra:
        return spec
    merged = {**dict(spec.loggers), **extra}
    return load(name, config, sets, **overrides, loggers=merged)


@logging_app.command("init")
def init(
    name: Name = None,
    *,
    config: ConfigOpt = None,
    server: ServerOpt = None,
    app_path: AppOpt = None,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="plain, journald or json [journald when the unit uses the config, else plain].",
        ),
    ] = None,
    level: LevelOpt = None,
    loggers: LoggerOpt = None,
    kind: Annotated[
        str, typer.Option("--as", help="json, yaml, python (a module) or django (LOGGING).")
    ] = "json",
    access: Annotated[
        str, typer.Option("--access", help="Where access lines go: stderr, stdout or off.")
    ] = "stderr",
    sets: SetOpt = None,
    output: OutputOpt = None,
    force: ForceOpt = False,
    check: CheckOpt = False,
    diff: DiffOpt = False,
) -> None:
    """Write a logging config: every record once, to stderr, with explicit levels."""
    from opskit.logconfig.build import render_logging

    spec = _load_with_loggers(
        name, config, sets, loggers, server=server, app=app_path, log_level=level
    )
    files = render_logging(spec, output=kind, fmt=fmt, access=access)
    target = output if output is not None else "deploy/logging"
    if output is None and not (check or diff):
        say(f"writing to {target}/ (the default; -o DIR or -o - to change)")
    emit(files, target, force=force, check=check, diff=diff)


@logging_app.command("check")
def check(
    target: Annotated[
        str | None,
        typer.Argument(
            help="A config file, or module:attribute (a dict, a setup function or the app); "
            "default: the spec's log-config, else its app.",
            show_default=False,
        ),
    ] = None,
    *,
    name: Annotated[str | None, typer.Option("--name", help="Service name in the config.")] = None,
    config: ConfigOpt = None,
    python: Annotated[
        str | None,
        typer.Option(
            "--python", help="Interpreter to load it with [the app's venv, else this one]."
        ),
    ] = None,
    loggers: Annotated[
        list[str] | None, typer.Option("--logger", help="Another logger to probe, repeatable.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Load a logging config in a subprocess and report where each level's records go."""
    import json

    from opskit.config import find_config
    from opskit.logconfig.build import app_package
    from opskit.logconfig.check import Target, check_logging, format_table, relevant_loggers

    spec = None
    if target is None or config is not None or name is not None or find_config(Path.cwd()):
        spec = load(name, config)
    if target is None:
        assert spec is not None
        if spec.log_config:
            target = spec.log_config
        elif spec.app:
            target = spec.app
        else:
            raise UsageError("nothing to check: give a config file or module:attribute")
    parsed = Target.parse(target)

    path = [str(Path.cwd())]
    extra = list(loggers or [])
    package = None
    if spec is not None:
        package = app_package(spec)
        extra += [n for n, _ in spec.loggers]
        if Path(spec.working_directory).is_dir():
            path.append(spec.working_directory)
    if parsed.kind == "module":
        # The loaded module's own loggers, created at its import, are the ones that matter.
        extra.append(parsed.value.split(":", 1)[0].split(".", 1)[0])
    if parsed.kind == "file":
        # The helper module (journald formatter) lives next to the config, as in the unit.
        path.insert(0, str(Path(parsed.value).parent))
    if python is None:
        python = spec.python if spec is not None and Path(spec.python).exists() else sys.executable

    report = check_logging(
        parsed, python=python, loggers=relevant_loggers(package, extra), path=path
    )
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        typer.echo(format_table(report), nl=False)
    if not report.ok:
        raise CheckFailed(f"logging check: {len(report.findings)} problem(s) in {target}")
