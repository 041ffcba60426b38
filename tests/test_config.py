"""Configuration: [tool.opskit] in pyproject.toml or opskit.toml, under command-line overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from opskit.config import find_config, load_spec, parse_assignment, read_config
from opskit.errors import SpecError, UsageError

PYPROJECT = """\
[project]
name = "shop"

[tool.opskit]
name = "shop"
app = "shop.wsgi:app"
port = 9000
working-directory = "/srv/shop"
server-args = ["--max-requests", "1000"]

[tool.opskit.environment]
DJANGO_SETTINGS_MODULE = "shop.settings"
lower_case = "kept"

[tool.opskit.loggers]
"shop.payments" = "debug"

[tool.opskit.hardening]
profile = "relaxed"
writable-paths = ["/var/lib/shop"]
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    return tmp_path


def test_pyproject_table_with_kebab_keys(project: Path) -> None:
    spec = load_spec({}, directory=project)
    assert (spec.name, spec.app, spec.port) == ("shop", "shop.wsgi:app", 9000)
    assert spec.working_directory == "/srv/shop"
    assert spec.server_args == ("--max-requests", "1000")
    # Variable and logger names keep their spelling; only keys are kebab -> snake.
    assert dict(spec.environment) == {
        "DJANGO_SETTINGS_MODULE": "shop.settings",
        "lower_case": "kept",
    }
    assert spec.loggers == (("shop.payments", "DEBUG"),)
    assert spec.hardening.profile == "relaxed"
    assert spec.hardening.writable_paths == ("/var/lib/shop",)


def test_opskit_toml_at_top_level(tmp_path: Path) -> None:
    (tmp_path / "opskit.toml").write_text('name = "api"\nserver = "uvicorn"\napp = "api:app"\n')
    spec = load_spec({}, directory=tmp_path)
    assert (spec.name, spec.server) == ("api", "uvicorn")


def test_opskit_toml_may_also_use_a_tool_table(tmp_path: Path) -> None:
    (tmp_path / "opskit.toml").write_text('[tool.opskit]\nname = "api"\napp = "api:app"\n')
    assert load_spec({}, directory=tmp_path).name == "api"


def test_opskit_toml_wins_over_pyproject(project: Path) -> None:
    (project / "opskit.toml").write_text('name = "other"\napp = "o:app"\n')
    assert find_config(project) == project / "opskit.toml"
    assert load_spec({}, directory=project).name == "other"


def test_pyproject_without_the_table_is_not_a_config(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n[tool.black]\nx = 1\n')
    assert find_config(tmp_path) is None
    spec = load_spec({"name": "x", "app": "x:app"}, directory=tmp_path)
    assert spec.port == 8000


def test_overrides_win_and_none_means_not_given(project: Path) -> None:
    spec = load_spec(
        {"port": 9100, "host": None, "app": None, "workers": 4, "name": None}, directory=project
    )
    assert (spec.port, spec.workers, spec.app, spec.name) == (9100, 4, "shop.wsgi:app", "shop")


def test_hardening_overrides_merge_key_by_key(project: Path) -> None:
    spec = load_spec(
        {"hardening": {"profile": None, "allow_wx": True, "writable_paths": None}},
        directory=project,
    )
    assert spec.hardening.profile == "relaxed"
    assert spec.hardening.allow_wx is True
    assert spec.hardening.writable_paths == ("/var/lib/shop",)


def test_env_flags_add_to_the_file_table(project: Path) -> None:
    spec = load_spec({"environment": ["EXTRA=1", "lower_case=over"]}, directory=project)
    assert dict(spec.environment) == {
        "DJANGO_SETTINGS_MODULE": "shop.settings",
        "lower_case": "over",
        "EXTRA": "1",
    }
    spec = load_spec({"environment": {"TABLE": "t"}}, directory=project)
    assert dict(spec.environment)["TABLE"] == "t"


def test_explicit_config_path(tmp_path: Path) -> None:
    other = tmp_path / "elsewhere.toml"
    other.write_text('name = "e"\napp = "e:app"\n')
    assert load_spec({}, config=other, directory=tmp_path / "nowhere").name == "e"


def test_missing_explicit_config_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--config: no such file"):
        load_spec({}, config=tmp_path / "nope.toml")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("name = \n", "opskit.toml: not valid TOML"),
        ("name = 'x'\nname = 'y'\n", "opskit.toml: not valid TOML"),
        ("[tool]\nopskit = 3\n", r"\[tool.opskit\] must be a table"),
    ],
)
def test_bad_files(tmp_path: Path, text: str, match: str) -> None:
    (tmp_path / "opskit.toml").write_text(text)
    with pytest.raises(UsageError, match=match):
        load_spec({}, directory=tmp_path)


def test_non_utf8_file(tmp_path: Path) -> None:
    (tmp_path / "opskit.toml").write_bytes(b'name = "\xff"\n')
    with pytest.raises(UsageError, match="not valid TOML"):
        load_spec({}, directory=tmp_path)


def test_pyproject_without_table_given_explicitly(tmp_path: Path) -> None:
    path = tmp_path / "pyproject.toml"
    path.write_text('[project]\nname = "x"\n')
    with pytest.raises(UsageError, match=r"has no \[tool.opskit\] table"):
        read_config(path)


def test_errors_name_the_file_and_the_key(project: Path) -> None:
    (project / "pyproject.toml").write_text(PYPROJECT.replace("port = 9000", "port = 'http'"))
    with pytest.raises(SpecError, match=r"^pyproject.toml: port: "):
        load_spec({}, directory=project)
    (project / "pyproject.toml").write_text(PYPROJECT + "\n[tool.opskit.extra]\n")
    with pytest.raises(SpecError, match="unknown key 'extra'"):
        load_spec({}, directory=project)


def test_non_table_hardening_override_is_a_spec_error(project: Path) -> None:
    with pytest.raises(SpecError, match="hardening: expected a table"):
        load_spec({"hardening": 1}, directory=project)


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("port=9000", ("port", 9000)),
        ("socket=true", ("socket", True)),
        ("server-args=['--a', 'b']", ("server_args", ["--a", "b"])),
        ("description=plain words", ("description", "plain words")),
        ('description="quoted = sign"', ("description", "quoted = sign")),
        ("hardening.allow-wx=true", ("hardening.allow_wx", True)),
        ("app=pkg.wsgi:app", ("app", "pkg.wsgi:app")),
        ("empty=", ("empty", "")),
    ],
)
def test_parse_assignment(item: str, expected: tuple[str, object]) -> None:
    assert parse_assignment(item) == expected


@pytest.mark.parametrize("item", ["port", "=3", ""])
def test_parse_assignment_needs_key_and_value(item: str) -> None:
    with pytest.raises(UsageError, match="--set: expected KEY=VALUE"):
        parse_assignment(item)


def test_a_non_table_hardening_in_the_file_is_not_ignored(tmp_path: Path) -> None:
    (tmp_path / "opskit.toml").write_text('name = "x"\napp = "x:app"\nhardening = "strict"\n')
    with pytest.raises(SpecError, match="hardening: expected a table"):
        load_spec({"hardening": {"profile": None}}, directory=tmp_path)


def test_a_misspelt_tool_table_is_named_not_ignored(cli, tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "shop"\n\n[tool.opskt]\nname = "shop"\napp = "shop:app"\n'
    )
    monkeypatch.chdir(tmp_path)
    result = cli("systemd", "-o", "-")
    assert result.code == 2
    assert result.err.strip() == (
        "opskit: error: pyproject.toml: has [tool.opskt] but no [tool.opskit]: a typo? "
        "(rename the table, or give the settings as flags)"
    )
    # Another tool's table is not taken for a typo.
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "shop"\n\n[tool.ruff]\n')
    other = cli("systemd", "-o", "-")
    assert other.code == 2
    assert "no opskit.toml or [tool.opskit] in" in other.err
    assert "typo" not in other.err
