"""The app check, with a real interpreter and real project directories of the test's own."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from opskit.appcheck import import_app, locate_app, parse_environment_file
from opskit.spec import build_spec

VENV = str(Path(sys.executable).parent.parent)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    site = tmp_path / "proj"
    (site / "mysite").mkdir(parents=True)
    (site / "mysite" / "__init__.py").write_text("raise RuntimeError('package init ran')\n")
    (site / "mysite" / "wsgi.py").write_text(
        "def application(environ, start_response):\n    pass\n"
    )
    (site / "broken.py").write_text("import no_such_module_here\napp = None\n")
    (site / "notcallable.py").write_text("app = 42\n")
    (site / "factory.py").write_text("def create_app(name='x'):\n    return lambda e, s: name\n")
    (site / "needsenv.py").write_text("import os\napp = lambda e, s: None\nos.environ['SECRET']\n")
    return site


def spec(project: Path, app: str, **raw):
    return build_spec(
        {"name": "x", "app": app, "working_directory": str(project), "venv": VENV, **raw}
    )


def messages(problems) -> list[str]:
    return [p.message for p in problems]


def test_locate_finds_the_module_without_running_any_of_it(project: Path):
    # mysite/__init__.py raises: locating mysite.wsgi must not run it.
    assert messages(locate_app(spec(project, "mysite.wsgi:application"))) == []
    assert not list(project.rglob("__pycache__")), "locate_app wrote bytecode"


def test_locate_names_a_missing_module_and_a_wrong_attribute(project: Path):
    [missing] = locate_app(spec(project, "mysitee.wsgi:app"))
    assert missing.severity == "warning"
    assert "No module named 'mysitee'" in missing.message
    [attr] = locate_app(spec(project, "mysite.wsgi:app"))
    assert "defines no 'app'; it defines application" in attr.message


def test_locate_says_nothing_for_another_hosts_paths():
    other = build_spec({"name": "x", "app": "shop.wsgi:app", "working_directory": "/srv/nope"})
    assert locate_app(other) == []


def test_import_names_the_real_failure(project: Path):
    [broken] = import_app(spec(project, "broken:app"))
    assert broken.is_error
    assert "ModuleNotFoundError: No module named 'no_such_module_here'" in broken.message
    assert f"at {project}/broken.py:1" in broken.message
    [init] = import_app(spec(project, "mysite.wsgi:application"))
    assert "RuntimeError: package init ran" in init.message
    [number] = import_app(spec(project, "notcallable:app"))
    assert "is a int, not a WSGI or ASGI callable" in number.message
    assert import_app(spec(project, "factory:create_app('shop')")) == []


def test_import_uses_the_services_environment_and_env_file(project: Path, tmp_path: Path):
    [missing] = import_app(spec(project, "needsenv:app"))
    assert "KeyError: 'SECRET'" in missing.message
    assert import_app(spec(project, "needsenv:app", environment={"SECRET": "x"})) == []
    env_file = tmp_path / "app.env"
    env_file.write_text('# a comment\nSECRET="quoted \\"value\\""\n')
    assert import_app(spec(project, "needsenv:app", environment_file=str(env_file))) == []
    [unreadable] = import_app(
        spec(project, "needsenv:app", environment_file=str(tmp_path / "none.env"))
    )
    assert "environment-file: cannot read" in unreadable.message


def test_import_refuses_a_missing_workdir_or_venv(tmp_path: Path):
    [workdir] = import_app(
        build_spec(
            {"name": "x", "app": "a:b", "working_directory": str(tmp_path / "no"), "venv": VENV}
        )
    )
    assert "200/CHDIR" in workdir.message
    [venv] = import_app(build_spec({"name": "x", "app": "a:b", "venv": str(tmp_path / "novenv")}))
    assert "no interpreter at" in venv.message


def test_environment_file_syntax():
    text = (
        "A=1\n export_not=2\n; semicolon comment\nB='single $kept'\n"
        'C="esc \\$ \\\\ x"\nD=a \\\n b\n'
    )
    assert parse_environment_file(text) == {
        "A": "1",
        "export_not": "2",
        "B": "single $kept",
        "C": "esc $ \\ x",
        "D": "a b",
    }


def test_generators_warn_and_tmp_code_is_refused(cli, project: Path):
    result = cli(
        "systemd",
        "x",
        "--app",
        "mysitee.wsgi:app",
        "--workdir",
        str(project),
        "--venv",
        VENV,
        # The test's project lies under /tmp: a named user keeps it visible to the service.
        "--user",
        "shop",
        "-o",
        "-",
    )
    assert result.code == 0
    assert "warning: app mysitee.wsgi:app: No module named 'mysitee'" in result.err
    refused = cli(
        "systemd", "x", "--app", "a:b", "--workdir", "/tmp/shop", "--venv", "/srv/venv", "-o", "-"
    )
    assert refused.code == 2
    assert refused.err.strip() == (
        "opskit: error: working-directory: /tmp/shop is under /tmp, which a dynamic user's "
        "service cannot see (DynamicUser= implies PrivateTmp=); move it (e.g. to /srv), or "
        "set user"
    )
    with_user = cli(
        "systemd", "x", "--app", "a:b", "--workdir", "/tmp/shop", "--user", "shop", "-o", "-"
    )
    assert with_user.code == 0, with_user.err
