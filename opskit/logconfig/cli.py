"""``opskit logging init`` and ``opskit logging check``: write a logging config, or trace one."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from opskit.commands import app, command_group, spec_command
from opskit.errors import CheckFailed, UsageError
from opskit.options import Output, SpecArgs

if TYPE_CHECKING:
    from opskit.spec import AppSpec

logging_app = command_group(
    "logging", "Logging that reaches stderr (and the journal) once, at the right level."
)
app.add_typer(logging_app, name="logging")

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


def _load_with_loggers(spec: SpecArgs, loggers: list[str] | None) -> AppSpec:
    """Load the spec; --logger entries are merged into the config's loggers, not replacing them."""
    loaded = spec.load()
    extra = _logger_pairs(loggers)
    if not extra:
        return loaded
    return spec.load(loggers={**dict(loaded.loggers), **extra})


@spec_command(logging_app, "logging init", output="deploy/logging")
def init(
    *,
    spec: SpecArgs,
    out: Output,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="plain, journald or json [journald when the unit uses the config, else plain].",
        ),
    ] = None,
    loggers: LoggerOpt = None,
    kind: Annotated[
        str, typer.Option("--as", help="json, yaml, python (a module) or django (LOGGING).")
    ] = "json",
    access: Annotated[
        str, typer.Option("--access", help="Where access lines go: stderr, stdout or off.")
    ] = "stderr",
) -> None:
    """Write a logging config: every record once, to stderr, with explicit levels."""
    from opskit.logconfig.build import render_logging

    files = render_logging(_load_with_loggers(spec, loggers), output=kind, fmt=fmt, access=access)
    out.emit(files)


@spec_command(logging_app, "logging check", name="option")
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
    spec: SpecArgs,
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

    loaded = None
    wanted = spec.config is not None or spec.name is not None or spec.given or spec.sets
    if target is None or wanted or find_config(Path.cwd()):
        loaded = spec.load()
    if target is None:
        assert loaded is not None
        if loaded.log_config:
            target = loaded.log_config
        elif loaded.app:
            target = loaded.app
        else:
            raise UsageError("nothing to check: give a config file or module:attribute")
    parsed = Target.parse(target)

    path = [str(Path.cwd())]
    extra = list(loggers or [])
    package = None
    if loaded is not None:
        package = app_package(loaded)
        extra += [n for n, _ in loaded.loggers]
        if Path(loaded.working_directory).is_dir():
            path.append(loaded.working_directory)
    if parsed.kind == "module":
        # The loaded module's own loggers, created at its import, are the ones that matter.
        extra.append(parsed.value.split(":", 1)[0].split(".", 1)[0])
    if parsed.kind == "file":
        # The helper module (journald formatter) lives next to the config, as in the unit.
        path.insert(0, str(Path(parsed.value).parent))
    if python is None:
        python = (
            loaded.python if loaded is not None and Path(loaded.python).exists() else sys.executable
        )

    report = check_logging(
        parsed, python=python, loggers=relevant_loggers(package, extra), path=path
    )
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
    else:
        typer.echo(format_table(report), nl=False)
    if not report.ok:
        raise CheckFailed(f"logging check: {len(report.findings)} problem(s) in {target}")
