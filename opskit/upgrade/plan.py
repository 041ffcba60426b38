"""The plan: what happens to each pinned package; pure (the installer module runs it)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from opskit.upgrade.environment import Environment
from opskit.upgrade.pins import Pin


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


#: Seconds an install (or a restore) may run before its process group is killed; the
#: check and the inspection answer in seconds.
INSTALL_TIMEOUT = 3600.0
CHECK_TIMEOUT = 600.0
