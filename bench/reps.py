"""What the repetition benches share: ``--reps`` and ``--write``, and how a result is kept.

Each bench runs its repetitions in a throwaway directory, renders its report with the
command line that reproduces it, prints it, and with ``--write`` keeps it under docs/.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from opskit.write import atomic_write  # noqa: E402


def main(
    script: str,
    doc: str,
    run: Callable[[int, Path], Any],
    report: Callable[[Any, int, float, str], str],
    check: Callable[[], str | None] = lambda: None,
) -> int:
    """Parse --reps/--write, run, report; ``check`` returns why the bench cannot run."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    reason = check()
    if reason:
        sys.stderr.write(f"{script}: {reason}\n")
        return 2
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"opskit-{Path(script).stem}-") as tmp:
        result = run(args.reps, Path(tmp))
    shown = ["--reps", str(args.reps)]
    if args.write is not None:
        shown += ["--write", os.path.relpath(args.write.resolve(), ROOT)]
    command = shlex.join(["python", f"bench/{script}", *shown])
    text = report(result, args.reps, time.monotonic() - started, command)
    sys.stdout.write(text)
    if args.write is not None:
        atomic_write(args.write, text, 0o644)
    return 0


def containers_unavailable(wheelhouse: Path) -> str | None:
    """Why a bench that boots real-systemd containers cannot run here, or None."""
    from tests.real_systemd import nspawn

    reason = nspawn.unavailable_reason()
    if reason:
        return reason
    if not any(wheelhouse.glob("gunicorn-*")):
        return "no wheelhouse: run make wheelhouse"
    return None
