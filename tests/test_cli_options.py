from __future__ import annotations

import pytest


@pytest.mark.parametrize("flag", ["--check", "--diff"])
def test_check_and_diff_refuse_stdout(cli, flag):
    result = cli("systemd", "x", "--app", "a:b", "-o", "-", flag)
    assert result.code == 2
    assert result.out == ""
    assert len(result.err.strip().splitlines()) == 1
    assert "-o -" in result.err


def test_env_flag_and_set_environment_are_both_kept(cli):
    result = cli(
        "systemd", "x", "--app", "a:b", "-o", "-", "--env", "B=2", "--set", "environment.A=x"
    )
    assert result.code == 0, result.err
    assert 'Environment="B=2"' in result.out
    assert 'Environment="A=x"' in result.out


def test_error_names_the_file_only_when_the_bad_value_is_in_it(cli, tmp_path, monkeypatch):
    (tmp_path / "opskit.toml").write_text('name = "app"\napp = "pkg:app"\nport = 0\n')
    monkeypatch.chdir(tmp_path)
    from_file = cli("systemd", "-o", "-")
    assert from_file.code == 2
    assert from_file.err.startswith("opskit: error: opskit.toml: port:")
    from_flag = cli("systemd", "-o", "-", "--port", "80", "--workers", "0")
    assert from_flag.code == 2
    assert from_flag.err.startswith("opskit: error: workers:")


def test_set_keeps_the_spelling_of_logger_and_variable_names(cli):
    from opskit.options import load

    spec = load("x", None, ["loggers.my-lib=DEBUG", "log-level=INFO"], app="a:b")
    assert spec.loggers == (("my-lib", "DEBUG"),)
    assert spec.log_level == "INFO"
