"""A small reader of systemd unit files and Exec= lines, shared by the unit-file tests.

It follows systemd.syntax(7) and systemd.service(5) closely enough to check what opskit
writes: sections, repeated keys, line continuations, comments, and the word splitting of
ExecStart= (quotes, C escapes, ``%%`` and ``$$``). test_render.py checks the filters
against it; the golden, property and CLI tests read units with it.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

Sections = dict[str, list[tuple[str, str]]]
WHITESPACE = " \t\n\r"


def parse(text: str) -> Sections:
    """Sections in order, each a list of (key, value) pairs with systemd's line rules."""
    sections: Sections = {}
    current: list[tuple[str, str]] | None = None
    pending = ""
    for raw in text.split("\n"):
        line = pending + raw
        pending = ""
        # systemd strips ASCII whitespace only (a no-break space is part of the value).
        stripped = line.strip(WHITESPACE)
        if not stripped or stripped[0] in "#;":
            continue
        # An odd number of trailing backslashes continues the line (systemd.syntax(7)).
        trailing = len(line) - len(line.rstrip("\\"))
        if trailing % 2:
            pending = line[:-1] + " "
            continue
        if stripped.startswith("[") and stripped.endswith("]"):
            name = stripped[1:-1]
            assert name not in sections, f"section [{name}] twice"
            current = sections[name] = []
            continue
        assert current is not None, f"directive outside a section: {line!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not KEY=VALUE: {line!r}"
        current.append((key.strip(WHITESPACE), value.strip(WHITESPACE)))
    return sections


def values(sections: Sections, section: str, key: str) -> list[str]:
    """Every value of ``key`` in ``section`` (a key may repeat)."""
    return [v for k, v in sections.get(section, []) if k == key]


def value(sections: Sections, section: str, key: str) -> str:
    """The one value of ``key`` in ``section``; fails when it is missing or repeated."""
    found = values(sections, section, key)
    assert len(found) == 1, f"{section}/{key}: {found}"
    return found[0]


_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    '"': '"',
    "'": "'",
    "s": " ",
    ";": ";",
}


def _specifiers(word: str) -> str:
    # Only "%%" may appear in what opskit writes; any other specifier is a bug.
    bad = re.findall(r"%(.|$)", word.replace("%%", ""))
    assert not bad, f"unescaped specifier in {word!r}"
    return word.replace("%%", "%")


def exec_words(line: str) -> list[str]:
    """Split an ExecStart= value into argv the way systemd does (quotes, escapes, %%, $$).

    systemd expands $NAME (and undoes $$) in argv but not in the path it executes: with
    an "@" prefix the path is the first word and argv starts with the second, both
    returned here (the path first), so a caller sees each as systemd does.
    """
    if line.startswith("@"):
        path, *argv = list_words(line[1:])
        return [path, *(_dollars(word) for word in argv[1:])] if argv else [path]
    words = list_words(line)
    return words[:1] + [_dollars(word) for word in words[1:]]


def exec_argv0(line: str) -> str:
    """The argv[0] systemd passes for an ExecStart= value (the second word after "@")."""
    words = list_words(line.removeprefix("@"))
    return _dollars(words[1] if line.startswith("@") else words[0])


def list_words(line: str) -> list[str]:
    """Split a quoted list (ReadWritePaths=, Environment=) as systemd does: no $ expansion."""
    words: list[str] = []
    i = 0
    n = len(line)
    while True:
        while i < n and line[i] in " \t":
            i += 1
        if i >= n:
            return words
        word = ""
        quote: str | None = None
        started = False
        while i < n:
            c = line[i]
            if quote is None and c in " \t":
                break
            if c == "\\":
                nxt = line[i + 1]
                assert nxt in _ESCAPES, f"unknown escape \\{nxt} in {line!r}"
                word += _ESCAPES[nxt]
                i += 2
                started = True
                continue
            if quote is None and c in "\"'" and not started:
                quote = c
                i += 1
                started = True
                continue
            if quote is not None and c == quote:
                quote = None
                i += 1
                continue
            word += c
            started = True
            i += 1
        assert quote is None, f"unbalanced quotes in {line!r}"
        words.append(_specifiers(word))


def _dollars(word: str) -> str:
    # "$$" is a literal "$"; a lone "$NAME" or "${NAME}" would be expanded by systemd.
    bad = re.findall(r"\$(?:\{|[A-Za-z_])", word.replace("$$", ""))
    assert not bad, f"variable expansion in {word!r}"
    return word.replace("$$", "$")


def env_assignment(raw: str) -> tuple[str, str]:
    """Undo one Environment= value as opskit writes it (one quoted NAME=VALUE word)."""
    words = list_words(raw)
    assert len(words) == 1, f"Environment= holds {len(words)} words: {raw!r}"
    name, sep, val = words[0].partition("=")
    assert sep
    return name, val


def security_score(unit: Path) -> float:
    """``systemd-analyze security --offline=yes``'s overall exposure for a unit file."""
    proc = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout)
    assert match, proc.stdout + proc.stderr
    return float(match.group(1))


def stream_files(out: str) -> dict[str, str]:
    """Split ``opskit ... -o -`` output into its files (a "# NAME" line before each of several)."""
    parts = re.split(r"^# (\S+)\n(?=# \1, generated by opskit)", out, flags=re.MULTILINE)
    if len(parts) == 1:
        name = out.split(",", 1)[0].removeprefix("# ")
        return {name: out}
    return dict(zip(parts[1::2], parts[2::2], strict=True))
