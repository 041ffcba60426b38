"""What ``opskit doctor`` reports: one Finding type, its Severity, and the table and JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opskit.doctor.processes import Listener
    from opskit.doctor.stale import FixDecision


class Severity(str, Enum):
    """How bad a finding is, most severe first; the value is what the table and JSON show.

    A str Enum (Python 3.10 has no StrEnum): a member equals its value (``== "error"``)
    and ``json`` writes it as that plain string.
    """

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"

    def __str__(self) -> str:
        """The value, as ``format()`` gives it on every Python version (3.12 changed it)."""
        return self.value


@dataclass(frozen=True)
class Finding:
    """One problem: how bad it is, what shows it, and what to do about it."""

    severity: Severity
    check: str
    problem: str
    evidence: str
    fix: str


@dataclass(frozen=True)
class Report:
    """Everything doctor found, and what ``--fix`` would do with each server on the address."""

    findings: list[Finding]
    fix_plan: list[FixDecision] = field(default_factory=list)

    @property
    def stale(self) -> list[Listener]:
        """The stale servers of this app: the only processes ``--fix`` stops."""
        return [decision.proc for decision in self.fix_plan if decision.stop]


def evidence_path(path: Path, project: Path) -> str:
    """A file as evidence names it: relative to the project when it is inside it."""
    try:
        return str(path.relative_to(project))
    except ValueError:
        return str(path)


def _count(findings: Sequence[Finding], severity: Severity) -> int:
    return sum(1 for f in findings if f.severity == severity)


def to_json(findings: Sequence[Finding]) -> str:
    """The findings for machines."""
    return json.dumps(
        {
            "errors": _count(findings, Severity.ERROR),
            "findings": [asdict(f) for f in findings],
        },
        indent=2,
    )


_PLURAL = {Severity.ERROR: "errors", Severity.WARNING: "warnings", Severity.INFO: "info"}


def table(findings: Sequence[Finding]) -> str:
    """The findings for people: one block per finding, then a count."""
    if not findings:
        return "no problems found"
    width = max(len(f.check) for f in findings)
    blocks = []
    indent = " " * (8 + width + 2)
    for f in findings:
        blocks.append(f"{f.severity.value:<7} {f.check:<{width}}  {f.problem}")
        blocks.append(f"{indent}evidence: {f.evidence}")
        if f.fix:
            blocks.append(f"{indent}fix:      {f.fix}")
    counts = {s: _count(findings, s) for s in Severity}
    blocks.append("")
    blocks.append(", ".join(f"{n} {s.value if n == 1 else _PLURAL[s]}" for s, n in counts.items()))
    return "\n".join(blocks)
