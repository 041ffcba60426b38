"""``opskit init``: a starter [tool.opskit] in pyproject.toml, the rest left byte-identical."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import tomlkit

from opskit.config import load_spec
from opskit.init.project import detect_server, starter_table


def load(text: str) -> dict[str, Any]:
    return tomlkit.parse(text).unwrap()


PYPROJECT = """\
# Project metadata; keep the comments.
[build-system]
requires = ["hatchling"]   # the backend
build-backend = "hatchling.build"

[project]
name = "My.Shop"
version = "1.0"
dependencies = [
    "Django>=5",
    # the server:
    "gunicorn[gevent] >= 23 ; sys_platform == 'linux'",
]

[tool.ruff]
line-length   =   100   # odd spacing survives
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    return tmp_path


def test_adds_the_table_and_keeps_the_rest_byte_identical(cli, project: Path) -> None:
    result = cli("init")
    assert result.code == 0, result.err
    assert result.err.split() == ["create", "pyproject.toml", "[tool.opskit]"]
    text = (project / "pyproject.toml").read_text()
    assert text.startswith(PYPROJECT)
    added = text[len(PYPROJECT) :]
    assert "[tool.opskit]" in added
    table = load(text)["tool"]["opskit"]
    assert table["name"] == "My.Shop"
    assert table["server"] == "gunicorn"
    assert table["app"] == "my_shop.wsgi:app"
    assert load(text)["tool"]["ruff"] == {"line-length": 100}


def test_the_starter_table_is_a_valid_spec(cli, project: Path) -> None:
    cli("init")
    spec = load_spec({}, directory=project)
    assert (spec.name, spec.server, spec.port) == ("My.Shop", "gunicorn", 8000)
    result = cli("systemd", "-o", "-")
    assert result.code == 0, result.err
    assert result.out.startswith("# My.Shop.service")


def test_health_and_version_paths_are_only_suggested(cli, project: Path) -> None:
    # Most apps have neither route: the starter table leaves both unset and says how to
    # add them, as comments that become a valid spec once uncommented.
    cli("init")
    path = project / "pyproject.toml"
    text = path.read_text()
    table = load(text)["tool"]["opskit"]
    assert "health-path" not in table and "version-path" not in table
    spec = load_spec({}, directory=project)
    assert (spec.health_path, spec.version_path) == (None, None)
    assert '\n# health-path = "/health"\n# version-path = "/version"\n' in text
    path.write_text(
        text.replace('# health-path = "/health"', 'health-path = "/health"').replace(
            '# version-path = "/version"', 'version-path = "/version"'
        )
    )
    spec = load_spec({}, directory=project)
    assert (spec.health_path, spec.version_path) == ("/health", "/version")


def test_a_second_run_refuses_without_force(cli, project: Path) -> None:
    cli("init")
    first = (project / "pyproject.toml").read_bytes()
    result = cli("init")
    assert result.code == 1
    assert result.err.splitlines() == [
        "opskit: error: pyproject.toml: already has [tool.opskit]; not replaced (use --force)"
    ]
    assert (project / "pyproject.toml").read_bytes() == first


def test_force_replaces_only_the_table(cli, project: Path) -> None:
    path = project / "pyproject.toml"
    path.write_text(PYPROJECT + '\n[tool.opskit]\nname = "old"\nport = 1\n')
    result = cli("init", "--force")
    assert result.code == 0, result.err
    assert result.err.split()[0] == "overwrite"
    text = path.read_text()
    assert text.startswith(PYPROJECT)
    assert load(text)["tool"]["opskit"]["port"] == 8000
    assert "old" not in text


def test_other_directory_and_mode_kept(cli, tmp_path: Path) -> None:
    path = tmp_path / "pyproject.toml"
    path.write_text('[project]\nname = "api"\ndependencies = ["uvicorn[standard]"]\n')
    path.chmod(0o640)
    result = cli("init", str(tmp_path))
    assert result.code == 0, result.err
    assert path.stat().st_mode & 0o777 == 0o640
    table = load(path.read_text())["tool"]["opskit"]
    assert (table["server"], table["app"]) == ("uvicorn", "api.asgi:app")
    assert [p.name for p in tmp_path.iterdir()] == ["pyproject.toml"]


@pytest.mark.parametrize(
    ("deps", "server"),
    [
        (["Django", "gunicorn>=23"], "gunicorn"),
        (["fastapi", "Uvicorn[standard]>=0.30"], "uvicorn"),
        (["flask", "uWSGI==2.0.31"], "uwsgi"),
        (["uvicorn", "gunicorn"], "gunicorn"),
        (["flask"], None),
        (["gunicorn-extras"], None),
        (["not a requirement !!", "uwsgi"], "uwsgi"),
        ([], None),
    ],
)
def test_detect_server(deps: list[str], server: str | None) -> None:
    assert detect_server(deps) == server


def test_no_server_dependency_means_gunicorn() -> None:
    table = starter_table({"name": "tool", "dependencies": ["flask"]})
    assert (table["server"], table["app"]) == ("gunicorn", "tool.wsgi:app")


@pytest.mark.parametrize(
    ("name", "unit", "module"),
    [("shop", "shop", "shop"), ("9lives", "9lives", "_9lives"), ("_x-y_", "x-y", "x_y")],
)
def test_starter_names_are_valid(name: str, unit: str, module: str) -> None:
    table = starter_table({"name": name})
    assert table["name"] == unit and table["app"] == f"{module}.wsgi:app"
    load_spec({k.replace("-", "_"): v for k, v in table.items()})


def test_missing_pyproject(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = cli("init")
    assert result.code == 2
    assert result.err.splitlines() == [
        "opskit: error: pyproject.toml: not found (opskit init edits an existing pyproject.toml)"
    ]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "text",
    ["[project\nname = 1\n", "tool = 1\n", "project = 'x'\n", "a = 1\na = 2\n"],
    ids=["not TOML", "tool not a table", "project not a table", "duplicate key"],
)
def test_invalid_pyproject(cli, project: Path, text: str) -> None:
    path = project / "pyproject.toml"
    path.write_text(text)
    result = cli("init", "--force")
    assert result.code == 2, result
    assert len(result.err.splitlines()) == 1 and "Traceback" not in result.err
    assert path.read_text() == text


def test_a_directory_argument_that_is_a_file(cli, project: Path) -> None:
    result = cli("init", "pyproject.toml")
    assert result.code == 2
    assert len(result.err.splitlines()) == 1


def test_force_replaces_a_non_table_opskit_key(cli, project: Path) -> None:
    path = project / "pyproject.toml"
    path.write_text("[tool]\nopskit = 1\n")
    assert cli("init").code == 1
    assert cli("init", "--force").code == 0
    assert load(path.read_text())["tool"]["opskit"]["server"] == "gunicorn"


def test_unreadable_pyproject(cli, tmp_path: Path) -> None:
    (tmp_path / "dir" / "pyproject.toml").mkdir(parents=True)
    (tmp_path / "latin1").mkdir()
    (tmp_path / "latin1" / "pyproject.toml").write_bytes(b'[project]\nname = "\xff"\n')
    for directory, problem in (("dir", "cannot read: Is a directory"), ("latin1", "not UTF-8")):
        result = cli("init", str(tmp_path / directory))
        assert result.code == 2
        assert len(result.err.splitlines()) == 1 and problem in result.err
