"""Logging beside the stdlib's: Django's own handlers, structlog and loguru, checked for real.

A throwaway venv gets Django, structlog and loguru from the wheelhouse (offline); the
probe of ``opskit logging check`` runs in it, applies opskit's config, runs Django's
setup and imports the app as a server's worker would, and counts each record on the real
streams. The same config under real servers and journald is tested in
tests/real_systemd/test_logging_real_apps.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import WHEELHOUSE, wheelhouse_venv

pytestmark = [pytest.mark.pip, pytest.mark.timeout(300)]

PACKAGES = ("django", "asgiref", "sqlparse", "structlog", "loguru")

LIBS_APP = """\
import logging

import structlog
from loguru import logger

log = structlog.get_logger("libsapp")
std = logging.getLogger("libsapp.std")


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
"""


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not all(any(WHEELHOUSE.glob(f"{p}-*")) for p in PACKAGES):
        pytest.skip(f"the wheelhouse lacks one of {', '.join(PACKAGES)} (make wheelhouse)")
    return wheelhouse_venv(tmp_path_factory.mktemp("libs") / "venv", *PACKAGES)


def write_project(root: Path, venv: Path, deps: list[str], **table: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    lines = [f"{k.replace('_', '-')} = {json.dumps(v)}" for k, v in table.items()]
    (root / "pyproject.toml").write_text(
        f'[project]\nname = "x"\nversion = "1"\ndependencies = {json.dumps(deps)}\n\n'
        "[tool.opskit]\n"
        + "\n".join([*lines, f'venv = "{venv}"', f'working-directory = "{root}"'])
        + "\n"
    )
    return root


def opskit(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "opskit", *args],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )


def check(root: Path, *args: str) -> tuple[int, dict]:
    done = opskit(root, "logging", "check", "--json", *args)
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, json.loads(done.stdout)


def codes(report: dict) -> list[str]:
    return [f["code"] for f in report["findings"]]


def test_structlog_and_loguru_beside_the_stdlib_are_reported(venv: Path, tmp_path: Path) -> None:
    root = write_project(tmp_path / "p", venv, [], name="libsapp", app="libsapp:app",
                         log_config=str(tmp_path / "p" / "log" / "logging.json"))  # fmt: skip
    (root / "libsapp.py").write_text(LIBS_APP)
    assert opskit(root, "logging", "init", "-o", "log").returncode == 0
    # The same config without its Route filter: as an app's own config, or one written
    # before the app took up structlog and loguru.
    path = root / "log" / "logging.json"
    config = json.loads(path.read_text())
    assert config.pop("filters")["route"]["libraries"] == ["structlog", "loguru"]
    path.write_text(json.dumps(config))
    code, report = check(root)
    assert code == 1
    found = {f["logger"]: f["message"] for f in report["findings"] if f["code"] == "second-system"}
    assert set(found) == {"structlog", "loguru"}, report["findings"]
    assert "went 1 to stdout, 0 time(s) through the config's handlers" in found["structlog"]
    assert "went 1 to stderr, 0 time(s) through the config's handlers" in found["loguru"]


def test_the_route_filter_sends_each_record_through_the_config_once(
    venv: Path, tmp_path: Path
) -> None:
    log_config = str(tmp_path / "p" / "log" / "logging.json")
    root = write_project(tmp_path / "p", venv, ["structlog", "loguru"], name="libsapp",
                         app="libsapp:app", log_config=log_config)  # fmt: skip
    (root / "libsapp.py").write_text(LIBS_APP)
    done = opskit(root, "logging", "init", "-o", "log")
    assert done.returncode == 0, done.stderr
    assert "route      structlog:" in done.stderr and "route      loguru:" in done.stderr
    config = json.loads((root / "log" / "logging.json").read_text())
    assert config["filters"]["route"] == {
        "()": "opskit_logging.Route",
        "libraries": ["structlog", "loguru"],
    }
    code, report = check(root)
    assert code == 0, report["findings"]
    assert "second-system" not in codes(report)


DEBUG_SETTINGS = "DEBUG = True\n"


def startproject(venv: Path, parent: Path) -> Path:
    subprocess.run(
        [str(venv / "bin" / "django-admin"), "startproject", "mysite"],
        cwd=parent,
        check=True,
        timeout=60,
    )
    root = parent / "mysite"
    settings = root / "mysite" / "settings.py"
    text = settings.read_text()
    assert "DEBUG = True" in text  # startproject's default, as on a staging host
    return root


def test_django_default_handlers_are_found_and_the_django_form_fixes_them(
    venv: Path, tmp_path: Path
) -> None:
    root = startproject(venv, tmp_path)
    log = root / "deploy" / "logging"
    (root / "opskit.toml").write_text(
        f'name = "mysite"\napp = "mysite.wsgi:application"\nvenv = "{venv}"\n'
        f'working-directory = "{root}"\nlog-config = "{log}/logging.json"\n'
    )
    done = opskit(root, "logging", "init")
    assert done.returncode == 0, done.stderr
    # A Django project: the server's config and, beside it, LOGGING for settings.py.
    assert sorted(p.name for p in log.iterdir()) == [
        "django_logging.py",
        "logging.json",
        "opskit_logging.py",
    ]
    assert "django     mysite.settings (manage.py): add 'from django_logging import" in done.stderr

    code, report = check(root)
    assert code == 1
    duplicated = {f["logger"] for f in report["findings"] if f["code"] == "duplicate"}
    assert {"django", "django.request"} <= duplicated, report["findings"]
    assert any("Django's default handlers" in f["message"] for f in report["findings"])

    settings = root / "mysite" / "settings.py"
    settings.write_text(settings.read_text() + "\nfrom django_logging import LOGGING  # noqa\n")
    code, report = check(root)
    assert code == 0, report["findings"]
    rows = {r["name"]: r for r in report["rows"]}
    assert rows["django.request"]["cells"]["WARNING"]["text"] == "err"


def test_a_settings_module_that_fails_is_named(venv: Path, tmp_path: Path) -> None:
    root = startproject(venv, tmp_path)
    (root / "opskit.toml").write_text(
        f'name = "mysite"\napp = "mysite.wsgi:application"\nvenv = "{venv}"\n'
        f'working-directory = "{root}"\n'
    )
    (root / "mysite" / "settings.py").write_text("import no_such_module_here\n")
    code, report = check(root, "--django-settings", "mysite.settings")
    assert code == 1
    assert any(
        f["code"] in ("django-setup", "load-failed") and "no_such_module_here" in f["message"]
        for f in report["findings"]
    ), report["findings"]
