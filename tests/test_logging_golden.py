"""Golden logging artifacts, byte for byte: every form, and the helper modules.

Refresh with ``pytest tests/test_logging_golden.py --update-golden`` after a deliberate
change, then read the diff of tests/golden/logging/ before committing it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from opskit.logconfig.build import render_logging
from opskit.spec import build_spec

GOLDEN = Path(__file__).resolve().parent / "golden" / "logging"

CASES = {
    # Fixed values only: the golden files must not depend on the machine.
    "uwsgi-journald-json": ({"server": "uwsgi", "log_config": "/etc/app/logging.json"}, "json"),
    "gunicorn-plain-yaml": ({"log_format": "plain", "loggers": {"sqlalchemy": "WARNING"}}, "yaml"),
    "uvicorn-json-python": ({"server": "uvicorn", "log_format": "json"}, "python"),
    "gunicorn-plain-django": ({"log_format": "plain", "log_level": "WARNING"}, "django"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case: str, request: pytest.FixtureRequest) -> None:
    raw, output = CASES[case]
    spec = build_spec({"name": "app", "app": "app.wsgi:app", **raw})
    directory = GOLDEN / case
    files = render_logging(spec, output=output)
    if request.config.getoption("--update-golden"):
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.iterdir():
            old.unlink()
        for file in files:
            (directory / file.name).write_text(file.content, encoding="utf-8")
    assert sorted(f.name for f in files) == sorted(p.name for p in directory.iterdir())
    for file in files:
        assert file.content == (directory / file.name).read_text(encoding="utf-8"), file.name
