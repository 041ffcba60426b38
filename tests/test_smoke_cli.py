from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, needs_analyze, verify


def test_version(cli):
    result = cli("--version")
    assert result.code == 0
    assert result.out.startswith("opskit ")


@needs_analyze
def test_default_gunicorn_unit_verifies(cli, tmp_path: Path):
    result = cli("systemd", "myapp", "--app", "pkg.wsgi:app", "-o", str(tmp_path))
    assert result.code == 0, result.err
    unit = tmp_path / "myapp.service"
    text = unit.read_text()
    assert "\nStartLimitIntervalSec=0\n" in text.split("\n[Service]\n")[0]
    assert "\nRestart=always\n" in text
    assert verify(unit) == ""


def test_help_lists_the_commands(cli):
    result = cli("--help")
    assert result.code == 0
    for command in ("systemd", "init"):
        assert f"  {command} " in result.out


def test_systemd_help_is_its_docstring(cli):
    result = cli("systemd", "--help")
    assert result.code == 0
    assert "Write NAME.service" in result.out
    for option in ("--app", "--socket", "--profile", "--check", "--diff", "--force", "--set"):
        assert option in result.out


def test_python_dash_m_opskit(tmp_path: Path):
    proc = subprocess.run(
        [sys.executable, "-m", "opskit", "systemd", "x", "--app", "a:b", "-o", "-"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("# x.service")
    assert proc.stderr == ""
