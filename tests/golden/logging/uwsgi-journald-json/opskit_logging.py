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
