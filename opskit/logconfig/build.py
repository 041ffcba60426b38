"""The logging configuration for an app and its server: a dictConfig, rendered in four forms."""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import Any

from opskit.errors import UsageError
from opskit.render import RenderedFile, render_template
from opskit.spec import LEVELS, LOG_FORMATS, AppSpec

#: The forms ``opskit logging init`` writes, and the file each gets unless the spec's
#: log-config names one with the same suffix.
OUTPUTS: dict[str, str] = {
    "json": "logging.json",
    "yaml": "logging.yaml",
    "python": "logging_config.py",
    "django": "django_logging.py",
}
ACCESS_TARGETS = ("stderr", "stdout", "off")
#: Logging libraries beside the stdlib's that the config routes through it when the app
#: depends on them (the helper module's Route filter).
ROUTED_LIBRARIES = ("structlog", "loguru")

#: The stdlib-only module written next to the config: the journald formatter and a loader.
HELPER_MODULE = "opskit_logging"
#: Importing this module applies the file named by OPSKIT_LOG_CONFIG (uWSGI's --import).
SETUP_MODULE = "opskit_logsetup"

# The servers' own loggers. Each is configured explicitly: left alone, gunicorn gives
# its loggers handlers of their own and uvicorn's default config sends access lines to
# stdout, so a record would be written twice or to the wrong stream.
ERROR_LOGGERS = ("gunicorn.error", "uvicorn", "uvicorn.error")
ACCESS_LOGGERS = ("gunicorn.access", "uvicorn.access")
# Django applies its DEFAULT_LOGGING before settings.LOGGING: "django" keeps a console
# handler of its own (under DEBUG) and would print every line twice through root.
DJANGO_LOGGERS = ("django",)
DJANGO_ACCESS_LOGGERS = ("django.server",)

_FORMATS: dict[str, dict[str, str]] = {
    # For terminals and files: a timestamp, the level and the process, since workers share it.
    "plain": {"format": "%(asctime)s %(levelname)-8s [%(process)d] %(name)s: %(message)s"},
    # journald stamps each line itself; the <N> prefix (added by the formatter) sets the
    # entry's priority, so `journalctl -p warning` filters correctly.
    "journald": {
        "()": f"{HELPER_MODULE}.JournaldFormatter",
        "fmt": "%(levelname)s [%(process)d] %(name)s: %(message)s",
    },
    "json": {
        "()": "pythonjsonlogger.json.JsonFormatter",
        "fmt": "%(asctime)s %(levelname)s %(process)d %(name)s %(message)s",
    },
}


def app_package(spec: AppSpec) -> str | None:
    """The top-level package of the app's import path (``pkg`` of ``pkg.wsgi:app``)."""
    if not spec.app:
        return None
    return spec.app.split(":", 1)[0].split(".", 1)[0]


def django_settings(spec: AppSpec, project: Path) -> tuple[str, str] | None:
    """The Django settings module the app runs with, and where that was read; None if no Django.

    The spec's environment (DJANGO_SETTINGS_MODULE) wins, as it does in the unit; else
    the project's manage.py, read (not run) the way ``opskit init`` reads it.
    """
    for name, value in spec.environment:
        if name == "DJANGO_SETTINGS_MODULE" and value:
            return value, "the spec's environment"
    from opskit.init.sources import django_settings_module

    found = django_settings_module(project)
    return (found.value, found.source) if found else None


def libraries_to_route(spec: AppSpec, project: Path) -> tuple[str, ...]:
    """The logging libraries of ROUTED_LIBRARIES that the app declares or has installed."""
    from opskit.systemd.dependencies import dependencies

    names = dependencies(spec, project).names
    return tuple(lib for lib in ROUTED_LIBRARIES if lib in names)


def resolve_format(spec: AppSpec, fmt: str | None = None) -> str:
    """The format: the flag, else the spec's, else journald when a unit uses the config."""
    chosen = fmt or spec.log_format
    if chosen is None:
        # A spec with log-config is one whose systemd unit passes the file to the server,
        # so its lines land in the journal; anything else is most likely a terminal.
        chosen = "journald" if spec.log_config else "plain"
    if chosen not in LOG_FORMATS:
        raise UsageError(f"--format: expected one of {', '.join(LOG_FORMATS)}, got {chosen!r}")
    return chosen


def _logger(level: str, handlers: list[str], *, propagate: bool) -> dict[str, Any]:
    return {"level": level, "handlers": handlers, "propagate": propagate}


def build_config(
    spec: AppSpec,
    *,
    fmt: str | None = None,
    access: str = "stderr",
    django: bool = False,
    route: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The dictConfig for the spec: every record once, on stderr, with explicit levels.

    Everything but access lines travels to root's one handler: the servers' error
    loggers and the app's own loggers have no handlers and propagate, so no record can
    be written twice. Access loggers get their own handler and stop propagating, which
    keeps them out of root's stream and lets them go to stdout or nowhere on request.
    """
    if access not in ACCESS_TARGETS:
        raise UsageError(f"--access: expected one of {', '.join(ACCESS_TARGETS)}, got {access!r}")
    level = spec.log_level
    handlers: dict[str, Any] = {
        # DEBUG, not NOTSET: explicit, and the loggers' levels alone decide what passes.
        "stderr": {
            "class": "logging.StreamHandler",
            "level": "DEBUG",
            "formatter": "default",
            "stream": "ext://sys.stderr",
        },
    }
    access_handlers: list[str] = ["stderr"]
    access_level = "INFO"
    if access == "off":
        # Access lines are INFO records: a WARNING threshold drops them and nothing else.
        access_level = "WARNING"
    else:
        handlers["access"] = {
            "class": "logging.StreamHandler",
            "level": "INFO",
            "formatter": "default",
            "stream": f"ext://sys.{access}",
        }
        access_handlers = ["access"]

    loggers: dict[str, dict[str, Any]] = {}
    for name in ERROR_LOGGERS + (DJANGO_LOGGERS if django else ()):
        loggers[name] = _logger(level, [], propagate=True)
    for name in ACCESS_LOGGERS + (DJANGO_ACCESS_LOGGERS if django else ()):
        loggers[name] = _logger(access_level, list(access_handlers), propagate=False)
    package = app_package(spec)
    if package:
        loggers.setdefault(package, _logger(level, [], propagate=True))
    for name, override in spec.loggers:
        if name in loggers:
            loggers[name]["level"] = override
        else:
            loggers[name] = _logger(override, [], propagate=True)

    config: dict[str, Any] = {
        "version": 1,
        # Loggers created at import time, before this runs, must keep working.
        "disable_existing_loggers": False,
        "formatters": {"default": dict(_FORMATS[resolve_format(spec, fmt)])},
    }
    if route:
        # Built (and so run) by dictConfig, attached to nothing: see the helper module.
        config["filters"] = {"route": {"()": f"{HELPER_MODULE}.Route", "libraries": list(route)}}
    return {
        **config,
        "handlers": handlers,
        # gunicorn merges this file shallowly over its defaults: "root" must be given,
        # or its default root refers to a handler this file replaced.
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": loggers,
    }


def config_name(spec: AppSpec, output: str) -> str:
    """The config's file name: the spec's log-config when its suffix fits the form."""
    default = OUTPUTS[output]
    if spec.log_config:
        base = posixpath.basename(spec.log_config)
        if posixpath.splitext(base)[1] == posixpath.splitext(default)[1]:
            return base
    return default


def render_logging(
    spec: AppSpec,
    *,
    output: str = "json",
    fmt: str | None = None,
    access: str = "stderr",
    django: bool = False,
    route: tuple[str, ...] = (),
) -> list[RenderedFile]:
    """Render the logging config and the helper modules it needs, for one directory.

    The helper module holds the journald formatter and a loader; it is stdlib-only, since
    the app's environment does not have opskit. The server finds it through PYTHONPATH,
    which the systemd unit sets to the config's directory. ``django`` adds
    django_logging.py beside the server's config: Django applies its own defaults in each
    worker after the server's config, and only settings.LOGGING comes after those.
    """
    if output not in OUTPUTS:
        raise UsageError(f"--as: expected one of {', '.join(OUTPUTS)}, got {output!r}")
    chosen = resolve_format(spec, fmt)
    config = build_config(spec, fmt=chosen, access=access, django=output == "django", route=route)
    name = config_name(spec, output)
    context = {
        "spec": spec,
        "config": config,
        "format": chosen,
        "file_name": name,
        "helper": HELPER_MODULE,
        "levels": LEVELS,
    }
    files = [RenderedFile(name, render_template(f"logging/{output}.j2", **context))]
    if django and output != "django":
        django_context = {
            **context,
            "config": build_config(spec, fmt=chosen, access=access, django=True, route=route),
            "file_name": OUTPUTS["django"],
        }
        files.append(
            RenderedFile(OUTPUTS["django"], render_template("logging/django.j2", **django_context))
        )
    needs_loader = spec.server in ("uwsgi", "command") and output != "django"
    if chosen == "journald" or needs_loader or route:
        files.append(
            RenderedFile(f"{HELPER_MODULE}.py", render_template("logging/helper.py.j2", **context))
        )
    if needs_loader:
        files.append(
            RenderedFile(f"{SETUP_MODULE}.py", render_template("logging/setup.py.j2", **context))
        )
    return files
