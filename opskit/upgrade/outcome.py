"""What an upgrade is asked to do, what it did, and the errors that carry that outcome."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from opskit.errors import ExitCode, OperationFailed
from opskit.proc import shown
from opskit.upgrade.lock import LockFiles
from opskit.upgrade.pins import Pin
from opskit.upgrade.pipcheck import Problem
from opskit.upgrade.plan import Plan

Progress = Callable[[str, str], None]


def no_progress(step: str, message: str) -> None:
    """Discard progress; the default for callers that only want the outcome."""


@dataclass(frozen=True)
class UpgradeRequest:
    """Everything an upgrade needs, validated by the caller."""

    pins: tuple[Pin, ...]
    python: str
    smoke: tuple[str, ...] | None = None
    smoke_cwd: str | None = None
    rollback: bool = True
    lock: LockFiles | None = None
    history: Path | None = None
    pip_args: tuple[str, ...] = ()
    #: Wait for another upgrade of the same venv (False: fail at once, naming it).
    wait: bool = True
    #: "pip", "uv", or None: pip, else uv in an environment without pip.
    installer: str | None = None


@dataclass
class Outcome:
    """What an upgrade did, for the screen, --json and the history file."""

    result: str
    python: str
    plan: Plan
    step: str | None = None
    reason: str | None = None
    problems: list[Problem] = field(default_factory=list)
    unrelated: list[Problem] = field(default_factory=list)
    after_restore: list[Problem] = field(default_factory=list)
    restored: dict[str, str | None] | None = None
    commands: list[list[str]] = field(default_factory=list)
    recovery: list[list[str]] = field(default_factory=list)
    lock: str | None = None
    history: str | None = None
    snapshot: str | None = None
    snapshot_bytes: int | None = None
    recovered: str | None = None
    #: Which installer ran, its version and the configuration carried over to it.
    installer: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        """The outcome as JSON-ready data."""
        return {
            "result": self.result,
            "python": self.python,
            "packages": [
                {"name": c.name, "from": c.old, "to": c.new, "action": c.action}
                for c in self.plan.changes
            ],
            "step": self.step,
            "reason": self.reason,
            "problems": [p.as_dict() for p in self.problems],
            "unrelated_problems": [p.as_dict() for p in self.unrelated],
            "after_restore": [p.as_dict() for p in self.after_restore],
            "restored": self.restored,
            "commands": [shown(a) for a in self.commands],
            "recovery": [shown(a) for a in self.recovery],
            "lock": self.lock,
            "history": self.history,
            "snapshot": self.snapshot,
            "snapshot_bytes": self.snapshot_bytes,
            "recovered": self.recovered,
            "installer": self.installer,
        }

    def history_record(self) -> dict[str, Any]:
        """The history line: time, packages, from, to, result (and why it failed)."""
        pending = self.plan.pending
        return {
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "python": self.python,
            "packages": [c.name for c in pending],
            "from": {c.name: c.old for c in pending},
            "to": {c.name: c.new for c in pending},
            "result": self.result,
            "step": self.step,
            "reason": self.reason,
            "snapshot": self.snapshot,
            "snapshot_bytes": self.snapshot_bytes,
            "installer": (self.installer or {}).get("name", "pip"),
        }


class UpgradeFailed(OperationFailed):
    """Raised when a step of an upgrade fails; carries the outcome (restored or not)."""

    def __init__(self, message: str, outcome: Outcome) -> None:
        super().__init__(message)
        self.outcome = outcome


class UpgradeInterrupted(UpgradeFailed):
    """Raised when Ctrl-C stops an upgrade; the environment was restored first if it changed."""

    exit_code = ExitCode.INTERRUPTED
