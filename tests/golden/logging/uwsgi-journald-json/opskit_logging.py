"""Logging helpers for app, written by opskit next to logging.json; stdlib only.

JournaldFormatter gives each line the <N> priority prefix of sd-daemon(3), and no
timestamp or colour, since journald adds the one and cannot show the other. configure()
applies a config file; uWSGI imports opskit_logsetup, which calls it, because uWSGI has
no option that loads a Python logging config.
"""

import json
import logging
import logging.config
import os
import re

# ANSI escape sequences (colours): journald stores a line holding one as binary data.
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def priority(levelno):
    """The syslog priority of a logging level: <2> crit ... <7> debug."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno > logging.INFO:
        # Custom levels between INFO and WARNING: syslog's "notice".
        return 5
    if levelno >= logging.INFO:
        return 6
    return 7


class JournaldFormatter(logging.Formatter):
    """Prefix every line of a record (tracebacks too) with its priority, without colour."""

    def format(self, record):
        text = _ANSI.sub("", super().format(record))
        prefix = "<%d>" % priority(record.levelno)
        # journald splits the stream at newlines: each line needs its own prefix, or a
        # traceback's lines would be logged at the default priority (info).
        return "\n".join(prefix + line for line in text.split("\n"))


def load(path):
    """Read a dictConfig from a .json, .yaml/.yml (needs PyYAML) or .py (LOGGING) file."""
    if path.endswith((".yaml", ".yml")):
        import yaml

        with open(path, encoding="utf-8") as handle:
            return yaml.safe_load(handle)
    if path.endswith(".py"):
        import runpy

        return runpy.run_path(path)["LOGGING"]
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def configure(path=None):
    """Apply the config at path, or at the path OPSKIT_LOG_CONFIG names."""
    path = path or os.environ.get("OPSKIT_LOG_CONFIG")
    if not path:
        raise RuntimeError("opskit_logging: OPSKIT_LOG_CONFIG is not set")
    logging.config.dictConfig(load(path))


# --- structlog and loguru: one logging system, the stdlib's ------------------------------
# Left alone, structlog prints to stdout by itself and loguru keeps its own stderr sink:
# their records reach the journal unprefixed (priority 6, info) beside the stdlib's, or
# twice. Routed, each record goes through the stdlib logger tree to root's one handler.


def _render_structlog(logger, method_name, event_dict):
    """structlog's last processor: "event key=value ...", for the stdlib formatter."""
    event = str(event_dict.pop("event", ""))
    extra = " ".join("%s=%r" % item for item in event_dict.items())
    return event + (" " + extra if extra else "")


def route_structlog():
    """Send structlog's events through the stdlib logging (and so through this config)."""
    import structlog

    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            _render_structlog,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


class _ToStdlib(logging.Handler):
    """A loguru sink: hand each record to the stdlib logger of its module, to propagate."""

    def emit(self, record):
        logging.getLogger(record.name).handle(record)


_loguru_sink = None


def route_loguru():
    """Replace loguru's own stderr sink by one that hands records to the stdlib logging."""
    global _loguru_sink
    from loguru import logger

    if _loguru_sink is not None:
        try:
            logger.remove(_loguru_sink)
        except ValueError:
            pass
    else:
        # The sink loguru adds at import (id 0) writes to stderr by itself.
        try:
            logger.remove(0)
        except ValueError:
            pass
    _loguru_sink = logger.add(_ToStdlib(), format="{message}", level=0)


class Route(logging.Filter):
    """Route the named libraries when dictConfig builds this filter (the config's "filters").

    dictConfig instantiates every entry of "filters", attached or not, so a config that
    lists this one routes structlog and loguru wherever it is applied: by gunicorn,
    uvicorn, opskit_logsetup under uWSGI, or Django's LOGGING. A library that is not
    installed is skipped.
    """

    def __init__(self, libraries=()):
        super().__init__()
        for name in libraries:
            try:
                {"structlog": route_structlog, "loguru": route_loguru}[name]()
            except ImportError:
                pass
