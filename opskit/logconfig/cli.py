"""``opskit logging init`` and ``opskit logging check``: write a logging config, or trace one."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from opskit.commands import app, command_group, spec_command
from opskit.errors import CheckFailed, UsageError
from opskit.options import Output, SpecArgs, say

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
        str | None,
        typer.Option(
            "--as",
            help="json, yaml, python (a module) or django (LOGGING) "
            "[json; for a Django project json and django_logging.py].",
        ),
    ] = None,
    access: Annotated[
        str, typer.Option("--access", help="Where access lines go: stderr, stdout or off.")
    ] = "stderr",
) -> None:
    """Write a logging config: every record once, to stderr, with explicit levels."""
    from opskit.logconfig.build import django_settings, libraries_to_route, render_logging
    from opskit.systemd.dependencies import project_dir

    loaded = _load_with_loggers(spec, loggers)
    project = project_dir(loaded)
    django = django_settings(loaded, project) if kind is None else None
    route = libraries_to_route(loaded, project)
    files = render_logging(
        loaded,
        output=kind or "json",
        fmt=fmt,
        access=access,
        django=django is not None,
        route=route,
    )
    out.emit(files)
    for library in route:
        say(
            f"route      {library}: the config routes it through the stdlib logging "
            "(opskit_logging.Route), so each of its records is written once, with its priority"
        )
    if django is not None:
        settings, source = django
        where = settings.replace(".", "/") + ".py"
        say(
            f"django     {settings} ({source}): add 'from django_logging import LOGGING' to "
            f"{where}, so that each django.* record is written once (with log-config set, the "
            "unit puts the config's directory on PYTHONPATH)"
        )


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
    django: Annotated[
        str | None,
        typer.Option(
            "--django-settings",
            metavar="MODULE",
            help="Run Django's setup with these settings after the config, as a worker "
            "does [found from manage.py or DJANGO_SETTINGS_MODULE; 'none': not at all].",
        ),
    ] = None,
) -> None:
    """Load a logging config in a subprocess and report where each level's records go.

    As a worker of the server would, it then runs Django's setup (a Django project) and
    imports the app (when the target is a config file), so Django's own handlers and a
    structlog or loguru beside the stdlib logging show up in the report.
    """
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

    from opskit.logconfig.build import django_settings
    from opskit.systemd.dependencies import project_dir

    settings = None if django == "none" else django
    app_module = None
    if loaded is not None:
        if django is None:
            found = django_settings(loaded, project_dir(loaded))
            settings = found[0] if found else None
        if parsed.kind == "file" and loaded.app:
            app_module = loaded.app.split(":", 1)[0]
    if settings:
        # Django's loggers: its defaults give "django" a handler of its own.
        extra += ["django", "django.request"]
    report = check_logging(
        parsed,
        python=python,
        loggers=relevant_loggers(package, extra),
        path=path,
        django_settings=settings,
        app_module=app_module,
    )
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
    else:
        typer.echo(format_table(report), nl=False)
    if not report.ok:
        raise CheckFailed(f"logging check: {len(report.findings)} problem(s) in {target}")
