"""The requested packages: exact pins ``NAME==VERSION``, their names normalised (PEP 503)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from opskit.errors import UsageError


@dataclass(frozen=True)
class Pin:
    """One requested package at one exact version, its name normalised (PEP 503)."""

    name: str
    version: str

    @property
    def requirement(self) -> str:
        """The requirement as pip gets it."""
        return f"{self.name}=={self.version}"


def parse_pins(texts: Sequence[str]) -> tuple[Pin, ...]:
    """Validate requirements as exact pins ``NAME==VERSION``; UsageError names the bad one."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import InvalidVersion, Version

    if not texts:
        raise UsageError("give at least one requirement, e.g. 'mypkg==1.2'")
    pins: dict[str, Pin] = {}
    for text in texts:
        try:
            req = Requirement(text)
        except InvalidRequirement as exc:
            reason = str(exc).splitlines()[0]
            raise UsageError(f"{text!r}: not a valid requirement ({reason})") from None
        if req.url:
            raise UsageError(f"{text!r}: a URL is not a pin; give NAME==VERSION")
        if req.marker is not None:
            raise UsageError(f"{text!r}: markers are not supported; give NAME==VERSION")
        if req.extras:
            # --no-deps installs no extra's dependencies, so the extra would be a promise
            # the upgrade does not keep.
            raise UsageError(f"{text!r}: extras are not installed with --no-deps; drop them")
        specs = list(req.specifier)
        if len(specs) != 1 or specs[0].operator != "==":
            raise UsageError(f"{text!r}: must be an exact pin NAME==VERSION")
        version = specs[0].version
        if version.endswith(".*"):
            raise UsageError(f"{text!r}: a wildcard is not an exact pin; give the full version")
        try:
            Version(version)
        except InvalidVersion:
            raise UsageError(f"{text!r}: {version!r} is not a valid version") from None
        name = canonicalize_name(req.name)
        if name == "pip":
            raise UsageError(f"{text!r}: not for pip itself (pip is what restores the rest)")
        if name in pins:
            raise UsageError(f"{text!r}: {name} is given twice")
        pins[name] = Pin(name, version)
    return tuple(pins.values())
