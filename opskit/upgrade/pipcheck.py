"""``pip check`` (or ``uv pip check``) in the target environment, its lines parsed into problems.

The two say the same things in other words; both become the same ``Problem``s, so a
problem that was there before the upgrade is told from a new one by the names it
involves, whichever installer ran.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from opskit.errors import OperationFailed
from opskit.proc import Runner, SubprocessRunner
from opskit.upgrade.installer import Installer

_CONFLICT = re.compile(
    r"^(?P<pkg>\S+) (?P<ver>\S+) has requirement (?P<req>.+), but you have "
    r"(?P<dep>\S+) (?P<have>\S+?)\.?$"
)
_MISSING = re.compile(
    r"^(?P<pkg>\S+) (?P<ver>\S+) requires (?P<dep>\S+), which is not installed\.?$"
)
_UNSUPPORTED = re.compile(r"^(?P<pkg>\S+) (?P<ver>\S+) is not supported on this platform\.?$")

# uv's wording (uv-installer's SitePackagesDiagnostic): names are already normalised, and
# the package's own version is not said.
_UV_NOT_INSTALLED = re.compile(
    r"^The package `(?P<pkg>[^`]+)` requires `(?P<req>[^`]+)`, but it's not installed\.?$"
)
_UV_CONFLICT = re.compile(
    r"^The package `(?P<pkg>[^`]+)` requires `(?P<req>[^`]+)`, but `(?P<have>[^`]+)` is "
    r"installed\.?$"
)
_UV_PYTHON = re.compile(
    r"^The package `(?P<pkg>[^`]+)` requires Python (?P<req>.+), but `(?P<have>[^`]+)` is "
    r"installed\.?$"
)
_UV_DUPLICATE = re.compile(r"^The package `(?P<pkg>[^`]+)` has multiple installed distributions")
_UV_BROKEN = re.compile(r"^The package `(?P<pkg>[^`]+)` is broken or incomplete")
_UV_CHATTER = ("Using Python ", "Checked ", "Found ", "All installed packages are compatible")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class Problem:
    """One problem the check found: a conflict, a missing dependency, an unsupported package.

    Only uv reports ``duplicate`` (two metadata directories for a name) and ``incomplete``
    (no readable metadata); a line neither can be read as is kind ``other``.
    """

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


def parse_uv_check(text: str) -> list[Problem]:
    """Parse ``uv pip check``'s output (on stderr) into the same problems as pip check's."""
    from packaging.utils import canonicalize_name

    problems: list[Problem] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(_UV_CHATTER) or line.lower().startswith("warning:"):
            continue
        if line.startswith("- ") and problems and problems[-1].kind == "duplicate":
            # The paths of a duplicate, one per line under it.
            last = problems[-1]
            glue = " " if last.line.endswith(":") else ", "
            problems[-1] = Problem("duplicate", last.package, "", last.line + glue + line[2:])
            continue
        if m := _UV_NOT_INSTALLED.match(line) or _UV_CONFLICT.match(line):
            name = _NAME.match(m["req"])
            have = m.groupdict().get("have")
            problems.append(
                Problem(
                    "conflict" if have else "missing",
                    canonicalize_name(m["pkg"]),
                    "",
                    line,
                    dependency=canonicalize_name(name[0]) if name else None,
                    requirement=m["req"],
                    installed=have,
                )
            )
        elif m := _UV_PYTHON.match(line):
            problems.append(
                Problem(
                    "unsupported",
                    canonicalize_name(m["pkg"]),
                    "",
                    line,
                    requirement=f"Python {m['req']}",
                    installed=m["have"],
                )
            )
        elif m := _UV_DUPLICATE.match(line):
            problems.append(Problem("duplicate", canonicalize_name(m["pkg"]), "", line))
        elif m := _UV_BROKEN.match(line):
            problems.append(Problem("incomplete", canonicalize_name(m["pkg"]), "", line))
        else:
            problems.append(Problem("other", "", "", line))
    return problems


def check(installer: Installer, *, runner: Runner) -> list[Problem]:
    """Run the installer's check in its environment; the parsed problems, [] when clean.

    Raises OperationFailed when the check itself cannot run (no pip, a broken interpreter).
    """
    result = installer.check(runner=runner)
    if result.ok:
        return []
    if installer.name == "pip":
        problems = parse_pip_check(result.stdout)
    else:
        problems = parse_uv_check(result.stderr)
    if result.returncode != 1 or not problems:
        raise OperationFailed(
            f"{installer.command} check did not run in {installer.python}: {result.tail()}"
        )
    return problems


def pip_check(python: str, *, runner: Runner | None = None) -> list[Problem]:
    """Run ``pip check`` in ``python``'s environment; the parsed problems, [] when clean.

    Raises OperationFailed when pip itself cannot run (no pip, a broken interpreter).
    """
    return check(Installer("pip", python), runner=runner or SubprocessRunner())
