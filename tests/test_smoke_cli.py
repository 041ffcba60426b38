from __future__ import annotations

from pathlib import Path

from tests.conftest import needs_analyze, verify


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
