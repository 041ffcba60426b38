"""ExecReload= only where a HUP really loads new code."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import needs_analyze, verify


@pytest.mark.parametrize(
    ("args", "reloads"),
    [
        (["--server", "gunicorn"], True),
        (["--server", "gunicorn", "--set", "preload=true"], False),
        (["--server", "uvicorn", "--workers", "2"], True),
        (["--server", "uvicorn", "--workers", "1"], False),
        (["--server", "uwsgi"], True),
    ],
)
@needs_analyze
def test_exec_reload_only_when_hup_loads_new_code(cli, tmp_path: Path, args, reloads):
    result = cli("systemd", "app", "--app", "pkg.mod:app", *args, "-o", str(tmp_path))
    assert result.code == 0, result.err
    unit = tmp_path / "app.service"
    lines = unit.read_text().splitlines()
    assert any(line.startswith("ExecReload=") for line in lines) is reloads
    if not reloads:
        assert any(line.startswith("# No ExecReload=") for line in lines)
    assert verify(unit) == ""
