"""`opskit logging init`: the dictConfig, its four forms, the journald formatter, the CLI."""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from opskit.logconfig.build import ACCESS_LOGGERS, ERROR_LOGGERS, build_config, render_logging
from opskit.spec import LOG_FORMATS, build_spec
from tests.conftest import verify


def spec(**raw: Any):
    return build_spec({"name": "demo", "app": "demoapp.web:app", **raw})


def files(**raw: Any) -> dict[str, str]:
    options = {k: raw.pop(k) for k in ("output", "fmt", "access") if k in raw}
    return {f.name: f.content for f in render_logging(spec(**raw), **options)}


def load_module(path: Path) -> ModuleType:
    module_spec = importlib.util.spec_from_file_location(path.stem, path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


# --- the dictConfig -------------------------------------------------------------------


@pytest.mark.parametrize("fmt", LOG_FORMATS)
@pytest.mark.parametrize("access", ["stderr", "stdout", "off"])
def test_config_invariants(fmt: str, access: str) -> None:
    config = build_config(spec(), fmt=fmt, access=access)
    assert config["version"] == 1
    assert config["disable_existing_loggers"] is False
    for name, handler in config["handlers"].items():
        assert handler["level"] in ("DEBUG", "INFO"), name
        expected = f"ext://sys.{access}" if name == "access" else "ext://sys.stderr"
        assert handler["stream"] == expected
    assert config["root"] == {"level": "INFO", "handlers": ["stderr"]}
    loggers = config["loggers"]
    for name in (*ERROR_LOGGERS, *ACCESS_LOGGERS, "demoapp"):
        assert loggers[name]["level"] in ("INFO", "WARNING")
    # Everything but access lines reaches root's handler and only that one.
    for name in (*ERROR_LOGGERS, "demoapp"):
        assert loggers[name]["handlers"] == []
        assert loggers[name]["propagate"] is True
    for name in ACCESS_LOGGERS:
        assert loggers[name]["propagate"] is False
        assert len(loggers[name]["handlers"]) == 1


def test_levels_and_logger_overrides() -> None:
    config = build_config(
        spec(log_level="debug", loggers={"sqlalchemy.engine": "warning", "uvicorn": "ERROR"})
    )
    assert config["root"]["level"] == "DEBUG"
    assert config["loggers"]["demoapp"]["level"] == "DEBUG"
    assert config["loggers"]["sqlalchemy.engine"] == {
        "level": "WARNING",
        "handlers": [],
        "propagate": True,
    }
    # An override of a server logger changes its level, not its routing.
    assert config["loggers"]["uvicorn"] == {"level": "ERROR", "handlers": [], "propagate": True}


def test_access_off_drops_only_access_lines() -> None:
    config = build_config(spec(), access="off")
    assert "access" not in config["handlers"]
    for name in ACCESS_LOGGERS:
        assert config["loggers"][name]["level"] == "WARNING"


def test_default_format_follows_the_unit() -> None:
    def formatter(**raw: Any) -> dict[str, str]:
        return dict(build_config(spec(**raw))["formatters"]["default"])

    assert "asctime" in formatter()["format"]
    journald = formatter(log_config="/etc/demo/logging.json")
    assert journald["()"] == "opskit_logging.JournaldFormatter"
    assert "asctime" not in journald["fmt"]
    assert formatter(log_config="/etc/demo/logging.json", log_format="plain")["format"]
    assert formatter(log_format="json")["()"] == "pythonjsonlogger.json.JsonFormatter"


# --- the forms ------------------------------------------------------------------------


def test_json_yaml_and_python_forms_hold_the_same_config() -> None:
    yaml = pytest.importorskip("yaml")
    from_json = json.loads(files()["logging.json"])
    assert from_json == build_config(spec())
    assert yaml.safe_load(files(output="yaml")["logging.yaml"]) == from_json
    namespace: dict[str, Any] = {}
    exec(
        compile(files(output="python")["logging_config.py"], "logging_config.py", "exec"), namespace
    )
    assert namespace["LOGGING"] == from_json
    assert callable(namespace["configure"])


def test_yaml_quotes_hard_values() -> None:
    yaml = pytest.importorskip("yaml")
    text = files(output="yaml", loggers={"a.b-c": "ERROR"}, fmt="plain")["logging.yaml"]
    data = yaml.safe_load(text)
    assert data["loggers"]["a.b-c"]["level"] == "ERROR"
    assert data["formatters"]["default"]["format"].startswith("%(asctime)s")
    assert data["loggers"]["demoapp"]["handlers"] == []


def test_django_snippet_quiets_djangos_own_handlers() -> None:
    namespace: dict[str, Any] = {}
    exec(files(output="django")["django_logging.py"], namespace)
    loggers = namespace["LOGGING"]["loggers"]
    assert loggers["django"] == {"level": "INFO", "handlers": [], "propagate": True}
    assert loggers["django.server"]["propagate"] is False


def test_helper_modules_only_where_needed() -> None:
    assert sorted(files(fmt="plain")) == ["logging.json"]
    assert sorted(files(fmt="journald")) == ["logging.json", "opskit_logging.py"]
    assert sorted(files(fmt="plain", server="uwsgi")) == [
        "logging.json",
        "opskit_logging.py",
        "opskit_logsetup.py",
    ]
    assert "log.json" in files(log_config="/etc/demo/log.json")
    # A log-config of another form does not rename this one.
    assert "logging.yaml" in files(log_config="/etc/demo/log.json", output="yaml")


# --- the journald formatter (the shipped, stdlib-only module) --------------------------


@pytest.fixture(scope="module")
def helper(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    directory = tmp_path_factory.mktemp("helper")
    path = directory / "opskit_logging.py"
    path.write_text(files(fmt="journald")["opskit_logging.py"])
    return load_module(path)


def record(level: int, msg: str, exc_info: Any = None) -> logging.LogRecord:
    return logging.LogRecord("demoapp", level, __file__, 1, msg, None, exc_info)


@pytest.mark.parametrize(
    ("level", "prefix"),
    [
        (logging.DEBUG, "<7>"),
        (logging.INFO, "<6>"),
        (25, "<5>"),
        (logging.WARNING, "<4>"),
        (logging.ERROR, "<3>"),
        (logging.CRITICAL, "<2>"),
    ],
)
def test_journald_prefix_per_level(helper: ModuleType, level: int, prefix: str) -> None:
    formatter = helper.JournaldFormatter(fmt="%(levelname)s %(name)s: %(message)s")
    assert formatter.format(record(level, "hello")).startswith(f"{prefix}")
    assert formatter.format(record(level, "hello")).endswith("demoapp: hello")


def test_journald_prefixes_every_line_and_strips_colour(helper: ModuleType) -> None:
    formatter = helper.JournaldFormatter(fmt="%(message)s")
    try:
        raise ValueError("boom")
    except ValueError:
        exc_info = sys.exc_info()
    text = formatter.format(record(logging.ERROR, "\x1b[31mred\x1b[0m\nsecond", exc_info))
    lines = text.split("\n")
    assert lines[0] == "<3>red"
    assert lines[1] == "<3>second"
    assert all(line.startswith("<3>") for line in lines)
    assert lines[-1] == "<3>ValueError: boom"
    assert "\x1b" not in text


def test_helper_configure_reads_the_env(
    helper: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPSKIT_LOG_CONFIG", raising=False)
    with pytest.raises(RuntimeError, match="OPSKIT_LOG_CONFIG is not set"):
        helper.configure()
    path = tmp_path / "logging.json"
    path.write_text(files(fmt="plain")["logging.json"])
    assert helper.load(str(path))["root"]["level"] == "INFO"


# --- the command --------------------------------------------------------------------------


def test_init_writes_then_is_identical_then_refuses_to_clobber(cli, tmp_path: Path) -> None:
    args = ("logging", "init", "demo", "--app", "demoapp:app", "-o", str(tmp_path))
    first = cli(*args)
    assert first.code == 0, first.err
    assert "create" in first.err
    assert first.out == ""
    path = tmp_path / "logging.json"
    json.loads(path.read_text())
    assert "identical" in cli(*args).err
    changed = cli(*args, "--level", "DEBUG")
    assert changed.code == 1
    assert "exists and differs" in changed.err
    assert json.loads(path.read_text())["root"]["level"] == "INFO"
    assert cli(*args, "--level", "DEBUG", "--check").code == 1
    forced = cli(*args, "--level", "DEBUG", "--force")
    assert forced.code == 0
    assert "overwrite" in forced.err
    assert json.loads(path.read_text())["root"]["level"] == "DEBUG"
    assert cli(*args, "--level", "DEBUG", "--check").code == 0


def test_init_to_stdout(cli) -> None:
    result = cli("logging", "init", "demo", "--app", "demoapp:app", "--format", "plain", "-o", "-")
    assert result.code == 0
    assert json.loads(result.out)["loggers"]["demoapp"]["level"] == "INFO"


def test_init_merges_loggers_from_config_and_flags(cli, tmp_path: Path) -> None:
    config = tmp_path / "opskit.toml"
    config.write_text(
        'name = "demo"\napp = "demoapp:app"\nlog-level = "WARNING"\n'
        '[loggers]\n"sqlalchemy.engine" = "ERROR"\n'
    )
    result = cli(
        "logging",
        "init",
        "--config",
        str(config),
        "--logger",
        "httpx=DEBUG",
        "--format",
        "plain",
        "-o",
        "-",
    )
    assert result.code == 0, result.err
    loggers = json.loads(result.out)["loggers"]
    assert loggers["sqlalchemy.engine"]["level"] == "ERROR"
    assert loggers["httpx"]["level"] == "DEBUG"
    assert loggers["demoapp"]["level"] == "WARNING"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--format", "xml"), "--format: expected one of plain, journald, json"),
        (("--as", "toml"), "--as: expected one of json, yaml, python, django"),
        (("--access", "file"), "--access: expected one of stderr, stdout, off"),
        (("--logger", "sqlalchemy"), "--logger: expected NAME=LEVEL"),
        (("--logger", "x=LOUD"), "loggers.x: expected one of DEBUG"),
        (("--logger", "bad name=INFO"), "loggers: invalid name"),
        (("--level", "LOUD"), "log-level: expected one of DEBUG"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(cli, tmp_path: Path, extra, message: str) -> None:
    result = cli("logging", "init", "demo", "--app", "demoapp:app", *extra, "-o", str(tmp_path))
    assert result.code == 2, result.err
    (line,) = result.err.strip().splitlines()
    assert message in line
    assert list(tmp_path.iterdir()) == []


# --- the systemd unit passes the config to the server -----------------------------------------


@pytest.mark.parametrize(
    ("server", "expected"),
    [
        ("gunicorn", ["--log-config-json /etc/demo/logging.json"]),
        ("uvicorn", ["--log-config /etc/demo/logging.json"]),
        ("uwsgi", ["--import opskit_logsetup", '"OPSKIT_LOG_CONFIG=/etc/demo/logging.json"']),
        ("command", ['"OPSKIT_LOG_CONFIG=/etc/demo/logging.json"']),
    ],
)
def test_unit_passes_the_config(cli, tmp_path: Path, server: str, expected: list[str]) -> None:
    app = ("--command", "/srv/app/.venv/bin/python -m demo") if server == "command" else ()
    result = cli(
        "systemd",
        "demo",
        "--server",
        server,
        "--app",
        "demoapp:app",
        *app,
        "--set",
        "log-config=/etc/demo/logging.json",
        "-o",
        str(tmp_path),
    )
    assert result.code == 0, result.err
    unit = (tmp_path / "demo.service").read_text()
    for text in [*expected, 'Environment="PYTHONPATH=/etc/demo"']:
        assert text in unit
    if shutil.which("systemd-analyze"):
        assert verify(tmp_path / "demo.service") == ""
