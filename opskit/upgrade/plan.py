"""The plan: what happens to each pinned package, and the one pip install that does it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from opskit.proc import Completed, Runner
from opskit.upgrade.environment import Environment
from opskit.upgrade.pins import Pin

#: ``pip`` flags on every call: no version check against an index, never a prompt.
PIP_QUIET = ("--disable-pip-version-check", "--no-input")


@dataclass(frozen=True)
class Change:
    """What happens to one package: install, upgrade, downgrade or unchanged."""

    name: str
    old: str | None
    new: str
    action: str

    def describe(self) -> str:
        """``name old -> new (action)`` for the screen."""
        if self.action == "unchanged":
            return f"{self.name} {self.new} (unchanged)"
        return f"{self.name} {self.old or '(not installed)'} -> {self.new} ({self.action})"


@dataclass(frozen=True)
class Plan:
    """Every requested package and what happens to it; pure data."""

    python: str
    changes: tuple[Change, ...]

    @property
    def pending(self) -> tuple[Change, ...]:
        """The changes that need pip (not already at the requested version)."""
        return tuple(c for c in self.changes if c.action != "unchanged")

    @property
    def changed(self) -> bool:
        """Whether anything would change."""
        return bool(self.pending)

    @property
    def pins(self) -> tuple[Pin, ...]:
        """The pins pip installs."""
        return tuple(Pin(c.name, c.new) for c in self.pending)


def build_plan(pins: Sequence[Pin], env: Environment) -> Plan:
    """Compare each pin with the installed version; pure."""
    from packaging.version import InvalidVersion, Version

    changes = []
    for pin in pins:
        have = env.installed.get(pin.name)
        if have is None:
            action = "install"
        else:
            try:
                old, new = Version(have.version), Version(pin.version)
                action = "unchanged" if old == new else "upgrade" if new > old else "downgrade"
            except InvalidVersion:
                # A legacy version string installed long ago: only equality is meaningful.
                action = "unchanged" if have.version == pin.version else "upgrade"
        changes.append(Change(pin.name, have.version if have else None, pin.version, action))
    return Plan(env.python, tuple(changes))


#: Seconds an install (or a restore) may run before its process group is killed; pip
#: check and the inspection answer in seconds.
INSTALL_TIMEOUT = 3600.0
CHECK_TIMEOUT = 600.0


def pip(python: str) -> list[str]:
    """The pip of ``python``, isolated: ``-m`` would also import a ``pip`` from the cwd."""
    return [python, "-I", "-m", "pip"]


def pip_install_argv(python: str, pins: Sequence[Pin], pip_args: Sequence[str] = ()) -> list[str]:
    """The one install command: exact pins, no dependency changes, reinstalled in place."""
    # --no-deps: without it --force-reinstall re-resolves and may upgrade the whole
    # dependency closure; it also skips pip's conflict check, hence pip check after.
    return [
        *pip(python),
        "install",
        *PIP_QUIET,
        "--no-deps",
        "--force-reinstall",
        *pip_args,
        *(p.requirement for p in pins),
    ]


def pip_check_argv(python: str) -> list[str]:
    """The verification command."""
    return [*pip(python), "check", *PIP_QUIET]


def install_packages(
    python: str, pins: Sequence[Pin], pip_args: Sequence[str], *, runner: Runner
) -> Completed:
    """Run the one pip install of the plan."""
    return runner(pip_install_argv(python, pins, pip_args), timeout=INSTALL_TIMEOUT)
