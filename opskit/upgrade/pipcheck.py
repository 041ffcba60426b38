"""``pip check`` in the target environment, its lines parsed into problems."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from opskit.errors import OperationFailed
from opskit.proc import Runner, SubprocessRunner
from opskit.upgrade.plan import CHECK_TIMEOUT, pip_check_argv

_CONFLICT = re.compile(
    r"^(?P<pkg>\S+) (?P<ver>\S+) has requirement (?P<req>.+), but you have "
    r"(?P<dep>\S+) (?P<have>\S+?)\.?$"
)
_MISSING = re.compile(
    r"^(?P<pkg>\S+) (?P<ver>\S+) requires (?P<dep>\S+), which is not installed\.?$"
)
_UNSUPPORTED = re.compile(r"^(?P<pkg>\S+) (?P<ver>\S+) is not supported on this platform\.?$")


@dataclass(frozen=True)
class Problem:
    """One line of ``pip check``, parsed: a conflict, a missing or an unsupported package."""

    kind: str
    package: str
    version: str
    line: str
    dependency: str | None = None
    requirement: str | None = None
    installed: str | None = None

    def involves(self, names: Sequence[str]) -> bool:
        """Whether the problem may come from ``names``: it names one, or cannot be read."""
        if self.kind == "other":
            return True
        return self.package in names or (self.dependency is not None and self.dependency in names)

    def as_dict(self) -> dict[str, str | None]:
        """The problem as JSON-ready data."""
        return {
            "kind": self.kind,
            "package": self.package,
            "version": self.version,
            "dependency": self.dependency,
            "requirement": self.requirement,
            "installed": self.installed,
            "line": self.line,
        }


def parse_pip_check(text: str) -> list[Problem]:
    """Parse ``pip check``'s output into problems; an unknown line is kept as kind "other"."""
    from packaging.utils import canonicalize_name

    problems = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("No broken requirements") or line.startswith("WARNING"):
            continue
        if m := _CONFLICT.match(line):
            problems.append(
                Problem(
                    "conflict",
                    canonicalize_name(m["pkg"]),
                    m["ver"],
                    line,
                    dependency=canonicalize_name(m["dep"]),
                    requirement=m["req"],
                    installed=m["have"],
                )
            )
        elif m := _MISSING.match(line):
            problems.append(
                Problem(
                    "missing",
                    canonicalize_name(m["pkg"]),
                    m["ver"],
                    line,
                    dependency=canonicalize_name(m["dep"]),
                )
            )
        elif m := _UNSUPPORTED.match(line):
            problems.append(Problem("unsupported", canonicalize_name(m["pkg"]), m["ver"], line))
        else:
            problems.append(Problem("other", "", "", line))
    return problems


def pip_check(python: str, *, runner: Runner | None = None) -> list[Problem]:
    """Run ``pip check`` in ``python``'s environment; the parsed problems, [] when clean.

    Raises OperationFailed when pip itself cannot run (no pip, a broken interpreter).
    """
    result = (runner or SubprocessRunner())(pip_check_argv(python), timeout=CHECK_TIMEOUT)
    if result.ok:
        return []
    problems = parse_pip_check(result.stdout)
    if result.returncode != 1 or not problems:
        raise OperationFailed(f"pip check did not run in {python}: {result.tail()}")
    return problems
