"""Ask the host's systemd-analyze about a unit file (verify and offline security score)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from opskit.proc import SubprocessRunner

_SCORE = re.compile(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)")
#: systemd-analyze reads one unit file (verify also loads the units it names): seconds
#: at most, so a minute means it hangs.
ANALYZE_TIMEOUT = 60.0


def security_score(unit: Path) -> float | None:
    """The offline exposure score (0 best, 10 worst), or None without systemd-analyze."""
    exe = shutil.which("systemd-analyze")
    if exe is None:
        return None
    # Unshielded: it only reads, so a Ctrl-C may stop it at once.
    done = SubprocessRunner(shield=False)(
        [exe, "security", "--offline=yes", "--no-pager", str(unit)], timeout=ANALYZE_TIMEOUT
    )
    match = _SCORE.search(done.stdout + done.stderr)
    return float(match.group(1)) if match else None


def verify(unit: Path) -> tuple[int, str]:
    """Run ``systemd-analyze verify`` and return its exit code and stderr.

    It exits 0 on warnings such as a key in the wrong section, so callers must read stderr.
    """
    exe = shutil.which("systemd-analyze")
    if exe is None:
        raise FileNotFoundError("systemd-analyze")
    done = SubprocessRunner(shield=False)(
        [exe, "verify", "--man=no", str(unit)], timeout=ANALYZE_TIMEOUT
    )
    return done.returncode, done.stderr
