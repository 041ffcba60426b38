"""Read unit files as systemd does: sections, directives, continuations, time spans, Exec lines."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass


@dataclass(frozen=True)
class UnitLine:
    """One directive of a unit file, with the line it starts on."""

    section: str
    key: str
    value: str
    line: int


def parse_unit(text: str) -> list[UnitLine]:
    """Parse a unit file into directives (systemd.syntax(7): sections, continuations)."""
    out: list[UnitLine] = []
    section = ""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        start = i
        raw = lines[i].strip()
        i += 1
        if not raw or raw[0] in "#;":
            continue
        if raw.startswith("[") and raw.endswith("]"):
            section = raw[1:-1]
            continue
        while raw.endswith("\\") and i < len(lines):
            raw = raw[:-1] + " " + lines[i].strip()
            i += 1
        key, sep, value = raw.partition("=")
        if sep:
            out.append(UnitLine(section, key.strip(), value.strip(), start + 1))
    return out


# The time units of systemd.time(7), longest spelling first so "min" is not read as "m".
_UNIT_SECONDS = {
    "usec": 1e-6,
    "us": 1e-6,
    "µs": 1e-6,
    "msec": 1e-3,
    "ms": 1e-3,
    "seconds": 1.0,
    "second": 1.0,
    "sec": 1.0,
    "s": 1.0,
    "minutes": 60.0,
    "minute": 60.0,
    "min": 60.0,
    "m": 60.0,
    "hours": 3600.0,
    "hour": 3600.0,
    "hr": 3600.0,
    "h": 3600.0,
    "days": 86400.0,
    "day": 86400.0,
    "d": 86400.0,
    "weeks": 604800.0,
    "week": 604800.0,
    "w": 604800.0,
}
_SPAN = re.compile(
    r"(\d+(?:\.\d+)?)\s*("
    + "|".join(sorted(map(re.escape, _UNIT_SECONDS), key=len, reverse=True))
    + r")?"
)


def parse_timespan(text: str) -> float | None:
    """Seconds in a systemd time span ("40", "1min 30s", "500ms"); None for infinity/unknown."""
    text = text.strip()
    if not text or text == "infinity":
        return None
    total = 0.0
    pos = 0
    for match in _SPAN.finditer(text):
        if text[pos : match.start()].strip():
            return None
        total += float(match.group(1)) * _UNIT_SECONDS.get(match.group(2) or "s", 1.0)
        pos = match.end()
    return total if not text[pos:].strip() else None


def exec_argv(value: str) -> tuple[str, ...]:
    """The argument list of an Exec line's value, its prefixes taken off the executable."""
    try:
        argv = shlex.split(value)
    except ValueError:
        argv = value.split()
    if argv:
        # Exec prefixes (systemd.service(5)): "-", "@", ":", "+", "!".
        argv[0] = argv[0].lstrip("-@:+!")
    return tuple(argv)
