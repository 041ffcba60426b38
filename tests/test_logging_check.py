"""`opskit logging check`: each classic logging mistake is caught, the generated config passes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from opskit.logconfig.check import Target, check_logging
from tests.conftest import EXAMPLE

pytestmark = pytest.mark.timeout(120)

STDERR = {"class": "logging.StreamHandler", "level": "DEBUG", "stream": "ext://sys.stderr"}


def good_config(**changes: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"stderr": dict(STDERR)},
        "root": {"level": "INFO", "handlers": ["stderr"]},
        "loggers": {"demoapp": {"level": "INFO", "handlers": [], "propagate": True}},
    }
    config.update(changes)
    return config


@pytest.fixture
def check(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Run `opskit logging check --json` on a config; return (exit code, report, stderr)."""
    monkeypatch.chdir(tmp_path)

    def run(target: dict[str, Any] | str, *extra: str) -> tuple[int, dict[str, Any], str]:
        if isinstance(target, dict):
            path = tmp_path / "logging.json"
            path.write_text(json.dumps(target))
            target = str(path)
        result = cli("logging", "check", target, "--logger", "demoapp", "--json", *extra)
        report = json.loads(result.out) if result.out.strip() else {}
        return result.code, report, result.err

    return run


def codes(report: dict[str, Any]) -> list[str]:
    return [f["code"] for f in report["findings"]]


def row(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(r for r in report["rows"] if r["name"] == name)


def test_good_config_passes(check) -> None:
    code, report, err = check(good_config())
    assert code == 0, err
    assert report["ok"] is True
    assert report["findings"] == []
    assert row(report, "demoapp")["cells"]["INFO"]["stderr"] == 1
    assert row(report, "demoapp")["cells"]["DEBUG"]["text"] == "."


def test_root_left_at_warning(check) -> None:
    config = good_config(root={"handlers": ["stderr"]}, loggers={})
    code, report, _ = check(config)
    assert code == 1
    assert codes(report) == ["root-level"]
    # The symptom the finding explains: the app's INFO record is not written at all.
    assert row(report, "demoapp")["cells"]["INFO"]["stderr"] == 0
    assert row(report, "demoapp")["level"] == "WARNING"


def test_duplicate_propagation(check) -> None:
    config = good_config(
        loggers={"demoapp": {"level": "INFO", "handlers": ["stderr"], "propagate": True}}
    )
    code, report, _ = check(config)
    assert code == 1
    assert codes(report) == ["duplicate"]
    assert row(report, "demoapp")["cells"]["INFO"]["stderr"] == 2
    assert row(report, "demoapp")["cells"]["INFO"]["text"] == "err x2"


def test_disabled_existing_loggers(check) -> None:
    # dictConfig's default: every logger created before it runs, and not named, goes silent.
    config = good_config(loggers={})
    del config["disable_existing_loggers"]
    code, report, _ = check(config)
    assert code == 1
    assert "disabled" in codes(report)
    assert row(report, "demoapp")["disabled"] is True
    assert row(report, "demoapp")["cells"]["WARNING"]["stderr"] == 0


def test_basicconfig_after_configuration(check, tmp_path: Path) -> None:
    (tmp_path / "setup_twice.py").write_text(
        "import logging, logging.config\n"
        "\n"
        "def setup():\n"
        f"    logging.config.dictConfig({good_config()!r})\n"
        "    logging.basicConfig(level=logging.DEBUG)\n"
    )
    code, report, _ = check("setup_twice:setup")
    assert code == 1
    assert codes(report) == ["basicconfig-after-config"]
    assert "did nothing" in report["findings"][0]["message"]


def test_basicconfig_after_configuration_duplicates(check, tmp_path: Path) -> None:
    # The config put its handler on the app's logger only; basicConfig then adds one to
    # root, and every app record is written twice.
    config = good_config(
        root={"level": "INFO", "handlers": []},
        loggers={"demoapp": {"level": "INFO", "handlers": ["stderr"], "propagate": True}},
    )
    (tmp_path / "setup_dup.py").write_text(
        "import logging, logging.config\n"
        "\n"
        "def setup():\n"
        f"    logging.config.dictConfig({config!r})\n"
        "    logging.basicConfig()\n"
    )
    code, report, _ = check("setup_dup:setup")
    assert code == 1
    assert set(codes(report)) >= {"basicconfig-after-config", "duplicate"}


def test_stdout_handler(check) -> None:
    handlers = {"stderr": dict(STDERR), "out": {**STDERR, "stream": "ext://sys.stdout"}}
    config = good_config(
        handlers=handlers,
        loggers={"demoapp": {"level": "INFO", "handlers": ["out"], "propagate": False}},
    )
    code, report, _ = check(config)
    assert code == 1
    assert codes(report) == ["stdout"]
    assert row(report, "demoapp")["cells"]["INFO"]["stdout"] == 1
    assert row(report, "demoapp")["cells"]["INFO"]["stderr"] == 0


def test_handler_without_level(check) -> None:
    handler = {k: v for k, v in STDERR.items() if k != "level"}
    code, report, _ = check(good_config(handlers={"stderr": handler}))
    assert code == 1
    assert codes(report) == ["handler-no-level"]
    assert "stderr" in report["findings"][0]["message"]


def test_uvicorns_default_config_sends_access_lines_to_stdout(check) -> None:
    pytest.importorskip("uvicorn")
    code, report, _ = check("uvicorn.config:LOGGING_CONFIG")
    assert code == 1
    stdout = [f for f in report["findings"] if f["code"] == "stdout"]
    assert [f["logger"] for f in stdout] == ["uvicorn.access"]


def test_the_app_itself_without_config(check, tmp_path: Path) -> None:
    for name in ("demoapp.py", "VERSION"):
        (tmp_path / name).write_text((EXAMPLE / name).read_text())
    code, report, _ = check("demoapp:app")
    assert code == 1
    assert set(codes(report)) == {"no-handler", "root-level"}


def test_config_that_fails_to_load(check) -> None:
    config = good_config(handlers={"stderr": {**STDERR, "class": "logging.NoSuchHandler"}})
    code, report, _ = check(config)
    assert code == 1
    (failure,) = [f for f in report["findings"] if f["code"] == "load-failed"]
    assert "NoSuchHandler" in failure["message"]


@pytest.mark.parametrize("fmt", ["plain", "journald", "json"])
@pytest.mark.parametrize(("kind", "target"), [("json", None), ("yaml", None), ("python", "py")])
def test_generated_config_passes(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str, kind: str, target: str | None
) -> None:
    if kind == "yaml":
        pytest.importorskip("yaml")
    if fmt == "json":
        pytest.importorskip("pythonjsonlogger")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "conf"
    init = ("logging", "init", "demo", "--app", "demoapp:app", "--format", fmt, "--as", kind)
    result = cli(*init, "-o", str(out))
    assert result.code == 0, result.err
    written = sorted(p.name for p in out.iterdir())
    config = next(n for n in written if n.startswith("logging"))
    if target == "py":
        monkeypatch.syspath_prepend(str(out))
        argument = f"{config.removesuffix('.py')}:configure"
        monkeypatch.chdir(out)
    else:
        argument = str(out / config)
    result = cli("logging", "check", argument, "--logger", "demoapp")
    assert result.code == 0, result.out + result.err
    assert "ok: every record" in result.out
    # The human table: one row per logger, a column per level.
    assert "demoapp" in result.out
    assert "DEBUG  INFO" in result.out


def test_check_reports_a_table_and_exit_1(cli, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "dup.json"
    path.write_text(
        json.dumps(
            good_config(
                loggers={"demoapp": {"level": "INFO", "handlers": ["stderr"], "propagate": True}}
            )
        )
    )
    result = cli("logging", "check", str(path), "--logger", "demoapp")
    assert result.code == 1
    assert "err x2" in result.out
    assert "[duplicate] logger demoapp" in result.out
    assert result.err.strip().splitlines() == [
        f"opskit: error: logging check: 1 problem(s) in {path}"
    ]


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("missing.json", "missing.json: no such logging config file"),
        ("not a target", "expected a config file or 'module:attribute'"),
        ("pkg.module", "expected a config file or 'module:attribute'"),
    ],
)
def test_bad_target_is_a_usage_error(cli, tmp_path, monkeypatch, target: str, message: str) -> None:
    monkeypatch.chdir(tmp_path)
    result = cli("logging", "check", target)
    assert result.code == 2
    assert result.out == ""
    (line,) = result.err.strip().splitlines()
    assert message in line
    assert "Traceback" not in result.err


def test_missing_interpreter_is_a_usage_error(cli, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "logging.json"
    path.write_text(json.dumps(good_config()))
    result = cli("logging", "check", str(path), "--python", str(tmp_path / "nope" / "python"))
    assert result.code == 2
    assert "--python: no such interpreter" in result.err


def test_a_probe_that_hangs_is_stopped_with_its_children(tmp_path: Path) -> None:
    # An app whose import starts a helper process and then hangs: past the timeout both
    # are gone, and the check fails with one sentence instead of waiting for ever.
    import sys
    import time

    from opskit.errors import OperationFailed
    from opskit.logconfig.check import run_probe

    pid_file = tmp_path / "helper.pid"
    (tmp_path / "hangs.py").write_text(
        "import subprocess, sys, time\n"
        "helper = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(helper.pid))\n"
        "time.sleep(60)\n"
    )
    started = time.monotonic()
    with pytest.raises(OperationFailed, match="the probe did not finish within 3 s"):
        run_probe(
            Target("module", "hangs:app"),
            python=sys.executable,
            loggers=[],
            path=[str(tmp_path)],
            timeout=3,
        )
    assert time.monotonic() - started < 30
    stat = Path(f"/proc/{pid_file.read_text()}/stat")
    deadline = time.monotonic() + 10
    while True:
        try:
            if stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":
                break
        except FileNotFoundError:
            break
        assert time.monotonic() < deadline, "the probe's helper outlived the timeout"
        time.sleep(0.05)


def test_findings_are_data_for_other_commands(tmp_path: Path) -> None:
    # The API `opskit doctor` reuses: structured findings, nothing printed.
    import sys

    path = tmp_path / "logging.json"
    path.write_text(json.dumps(good_config(root={"handlers": ["stderr"]})))
    report = check_logging(Target.parse(str(path)), python=sys.executable, loggers=["demoapp"])
    assert not report.ok
    assert [f.code for f in report.findings] == ["root-level"]
    assert report.as_dict()["findings"][0]["logger"] == "root"


def test_django_snippet_passes(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = cli("logging", "init", "demo", "--app", "demoapp:app", "--as", "django", "-o", ".")
    assert result.code == 0, result.err
    result = cli("logging", "check", "django_logging:LOGGING", "--logger", "django")
    assert result.code == 0, result.out + result.err
    assert "django.server" in result.out


def test_without_target_checks_the_specs_config(cli, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "opskit.toml").write_text(
        f'name = "demo"\napp = "demoapp:app"\nlog-config = "{tmp_path / "conf" / "logging.json"}"\n'
    )
    assert cli("logging", "init", "-o", "conf").code == 0
    result = cli("logging", "check")
    # journald format (the unit uses the config): the helper beside it is found.
    assert result.code == 0, result.out + result.err
    assert "demoapp" in result.out
    # Without log-config, the app itself is loaded: the example app configures nothing.
    for name in ("demoapp.py", "VERSION"):
        (tmp_path / name).write_text((EXAMPLE / name).read_text())
    (tmp_path / "opskit.toml").write_text('name = "demo"\napp = "demoapp:app"\n')
    result = cli("logging", "check")
    assert result.code == 1
    assert "[root-level]" in result.out
