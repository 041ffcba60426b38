"""Ask the host's systemd-analyze about a unit file (verify and offline security score)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

_SCORE = re.compile(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)")


def security_score(unit: Path) -> float | None:
    """The offline exposure score (0 best, 10 worst), or None without systemd-analyze."""
    exe = shutil.which("systemd-analyze")
    if exe is None:
        return None
    proc = subprocess.run(
        [exe, "security", "--offline=yes", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    match = _SCORE.search(proc.stdout + proc.stderr)
    return float(match.group(1)) if match else None


def verify(unit: Path) -> tuple[int, str]:
    """Run ``systemd-analyze verify`` and return its exit code and stderr.

    It exits 0 on warnings such as a key in the wrong section, so callers must read stderr.
    """
    exe = shutil.which("systemd-analyze")
    if exe is None:
        raise FileNotFoundError("systemd-analyze")
    proc = subprocess.run(
        [exe, "verify", "--man=no", str(unit)], capture_output=True, text=True, check=False
    )
    return proc.returncode, proc.stderr
