"""opskit logging check's probe: load a logging config, log one record per level and logger.

Runs as ``python -c SOURCE PARAMS_JSON`` in the app's interpreter, stdlib only. It writes
its findings about the logger tree to the report file PARAMS names; the parent counts
the records' markers on this process's real stdout and stderr.
"""

import importlib
import inspect
import json
import logging
import logging.config
import os
import sys
import traceback

params = json.loads(sys.argv[1])
# opskit.spec.LEVELS, passed in: this script cannot import opskit.
LEVELS = tuple(params["levels"])
for entry in reversed(params["path"]):
    if entry not in sys.path:
        sys.path.insert(0, entry)

events = []
_basic = logging.basicConfig
_dict = logging.config.dictConfig
_file = logging.config.fileConfig


def basic_config(*args, **kwargs):
    before = len(logging.root.handlers)
    _basic(*args, **kwargs)
    events.append(
        {
            "call": "basicConfig",
            "handlers_before": before,
            "handlers_after": len(logging.root.handlers),
            "force": bool(kwargs.get("force")),
        }
    )


def dict_config(config):
    _dict(config)
    events.append({"call": "dictConfig"})


def file_config(*args, **kwargs):
    _file(*args, **kwargs)
    events.append({"call": "fileConfig"})


def handle_error(self, record):
    # A formatter or stream that fails loses the record; say so instead of printing the
    # record's arguments (with the marker) to stderr, which would count as delivered.
    events.append(
        {
            "call": "handleError",
            "handler": self.get_name() or type(self).__name__,
            "logger": record.name,
            "error": repr(sys.exc_info()[1]),
        }
    )


logging.basicConfig = basic_config
logging.Handler.handleError = handle_error
logging.config.dictConfig = dict_config
logging.config.fileConfig = file_config

# Loggers an app creates at import time exist before any configuration runs.
for name in params["loggers"]:
    logging.getLogger(name)


def load(kind, value):
    if kind == "file":
        if value.endswith((".yaml", ".yml")):
            import yaml

            with open(value, encoding="utf-8") as handle:
                logging.config.dictConfig(yaml.safe_load(handle))
        elif value.endswith(".json"):
            with open(value, encoding="utf-8") as handle:
                logging.config.dictConfig(json.load(handle))
        elif value.endswith(".py"):
            import runpy

            logging.config.dictConfig(runpy.run_path(value)["LOGGING"])
        else:
            logging.config.fileConfig(value)
        return
    module_name, _, attribute = value.partition(":")
    target = importlib.import_module(module_name)
    for part in attribute.split("."):
        target = getattr(target, part)
    if isinstance(target, dict):
        logging.config.dictConfig(target)
    elif callable(target) and not inspect.isclass(target):
        try:
            signature = inspect.signature(target)
        except (TypeError, ValueError):
            return
        required = [
            p
            for p in signature.parameters.values()
            if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        # A setup function is called; an app (WSGI/ASGI callable) configured logging, if
        # at all, when its module was imported.
        if not required:
            target()


report = {"events": events, "loggers": [], "handlers": {}, "error": None}
try:
    load(params["kind"], params["value"])
except BaseException as exc:  # the app's own failure is the finding, whatever it is
    messages = []
    while exc is not None:
        # dictConfig wraps the real cause ("No module named ...") in a generic ValueError.
        messages.append("".join(traceback.format_exception_only(type(exc), exc)).strip())
        exc = exc.__cause__
    report["error"] = ": ".join(messages)


def _failure(exc):
    messages = []
    while exc is not None:
        messages.append("".join(traceback.format_exception_only(type(exc), exc)).strip())
        exc = exc.__cause__
    return ": ".join(messages)


# What a worker does after the server applied the config: Django's setup applies its own
# defaults and then settings.LOGGING; the app's import may configure structlog or loguru.
if params.get("django_settings") and report["error"] is None:
    os.environ["DJANGO_SETTINGS_MODULE"] = params["django_settings"]
    try:
        import django

        django.setup(set_prefix=False)
    except BaseException as exc:
        report["django_error"] = _failure(exc)
if params.get("app_module") and report["error"] is None:
    try:
        importlib.import_module(params["app_module"])
    except BaseException as exc:
        report["app_error"] = _failure(exc)

names = ["root", *params["loggers"]]
for name, obj in sorted(logging.root.manager.loggerDict.items()):
    # Loggers the config or the app set up themselves are relevant too.
    if isinstance(obj, logging.Logger) and name not in names:
        if obj.handlers or obj.level != logging.NOTSET or obj.disabled:
            names.append(name)
names = names[: params["limit"]]


def stream_of(handler):
    stream = getattr(handler, "stream", None)
    if stream is None:
        return getattr(handler, "baseFilename", None) or "-"
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return "other"
    return {1: "stdout", 2: "stderr"}.get(fd, getattr(stream, "name", "other"))


def handler_key(handler):
    key = handler.get_name() or "%s@%x" % (type(handler).__name__, id(handler))
    if key not in report["handlers"]:
        report["handlers"][key] = {
            "class": type(handler).__module__ + "." + type(handler).__name__,
            "level": logging.getLevelName(handler.level),
            "stream": stream_of(handler),
        }
    return key


for index, name in enumerate(names):
    logger = logging.getLogger(None if name == "root" else name)
    chain = []
    current = logger
    while current is not None:
        chain.extend(handler_key(h) for h in current.handlers)
        if not current.propagate:
            break
        current = current.parent
    report["loggers"].append(
        {
            "name": name,
            "marker": index,
            "level": logging.getLevelName(logger.getEffectiveLevel()),
            "own_level": logging.getLevelName(logger.level),
            "disabled": bool(logger.disabled),
            "propagate": bool(logger.propagate),
            "handlers": chain,
        }
    )
    for level in LEVELS:
        marker = "opskit-probe#%d.%s#" % (index, level)
        if name.endswith(".access"):
            # Shaped like the servers' access records: uvicorn's access formatter needs
            # exactly these five arguments.
            args = ("127.0.0.1:9", "GET", "/" + marker, "1.1", 200)
            logger.log(getattr(logging, level), '%s - "%s %s HTTP/%s" %d', *args)
        else:
            logger.log(getattr(logging, level), "%s", marker)

# structlog and loguru beside the stdlib: one record each, counted on the streams by the
# parent, and noted here when it passed through a stdlib handler (the config's).
through = []


class _Seen(logging.Filter):
    def filter(self, record):
        try:
            message = record.getMessage()
        except Exception:
            return True
        if "opskit-probe#lib." in message:
            through.append(message.split("opskit-probe#lib.", 1)[1].split("#", 1)[0])
        return True


# The handlers of the logger tree only: loguru's routing sink is a Handler too, outside it.
_tree = [logging.root] + [
    obj for obj in logging.root.manager.loggerDict.values() if isinstance(obj, logging.Logger)
]
_seen = _Seen()
for _logger in _tree:
    for _handler in _logger.handlers:
        if _seen not in _handler.filters:
            _handler.addFilter(_seen)
report["libraries"] = []
for library in ("structlog", "loguru"):
    if library not in sys.modules:
        continue
    marker = "opskit-probe#lib.%s#" % library
    try:
        if library == "structlog":
            import structlog

            structlog.get_logger("opskit.probe").warning(marker)
        else:
            from loguru import logger as loguru_logger

            loguru_logger.warning(marker)
    except Exception as exc:
        report["libraries"].append({"library": library, "error": repr(exc)})
        continue
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    report["libraries"].append({"library": library, "marker": marker})
report["through"] = through

for stream in (sys.stdout, sys.stderr):
    stream.flush()
logging.shutdown()
with open(params["report"], "w", encoding="utf-8") as handle:
    json.dump(report, handle)
sys.stdout.flush()
os._exit(0)
