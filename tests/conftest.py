"""Shared fixtures: run the CLI in-process, find the example app, ask systemd-analyze."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from opskit.cli import run

ROOT = Path(__file__).resolve().parent.parent
#: The wheels make test downloads (make wheelhouse): published packages, installed offline.
WHEELHOUSE = Path(os.environ.get("OPSKIT_WHEELHOUSE", ROOT / "build" / "wheelhouse"))


def wheelhouse_venv(path: Path, *packages: str) -> Path:
    """A throwaway venv at ``path`` with ``packages`` from the wheelhouse (offline, no deps)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "--python", str(path / "bin" / "python"), "install"),
            *("--no-index", "--no-deps", "--find-links", str(WHEELHOUSE), *packages),
        ],
        check=True,
        capture_output=True,
        timeout=300,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    return path


EXAMPLE = ROOT / "opskit" / "example"


@dataclass
class Result:
    code: int
    out: str
    err: str


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="Rewrite tests/golden/ from the current generators instead of comparing.",
    )


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    """Run opskit in-process with argv; return its exit code, stdout and stderr."""

    def invoke(*argv: str) -> Result:
        capsys.readouterr()
        code = run(list(argv))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return invoke


needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


def verify(unit: Path) -> str:
    """Return systemd-analyze verify's stderr for a unit (empty when clean).

    verify exits 0 on warnings, so the stderr is what a test must look at. A missing
    executable is the one complaint filtered out: golden units name paths of a machine
    that the test does not build.
    """
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [
        line
        for line in proc.stderr.splitlines()
        if "is not executable: No such file or directory" not in line
    ]
    assert proc.returncode == 0 or not lines, proc.stderr
    return "\n".join(lines)
