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
