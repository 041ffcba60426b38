"""Which release each running process serves, read from /proc (its cwd, not its exe).

``/proc/PID/exe`` is the interpreter, the same for every release; the working
directory is the release a server changed into when it (re)loaded its code.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from opskit.deploy.layout import RELEASE_ID, Layout


@dataclass(frozen=True)
class Process:
    """One process and the release its working directory is in (None: outside releases)."""

    pid: int
    release: str | None
    cwd: str


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: the fields follow the last ")".
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 1:
            tree.setdefault(int(fields[1]), []).append(int(entry.name))
    return tree


def _release_of(layout: Layout, cwd: str) -> str | None:
    prefix = str(layout.releases) + "/"
    if not cwd.startswith(prefix):
        return None
    name = cwd[len(prefix) :].split("/", 1)[0]
    return name if RELEASE_ID.fullmatch(name) else None


def _describe(layout: Layout, pid: int) -> Process | None:
    try:
        cwd = str(Path(f"/proc/{pid}/cwd").readlink())
    except OSError:
        return None
    return Process(pid, _release_of(layout, cwd), cwd)


def main_pid(unit: str) -> int | None:
    """The unit's MainPID, or None when it runs nothing (or systemctl is missing)."""
    try:
        out = subprocess.run(
            ["systemctl", "show", "--property=MainPID", "--value", unit],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = out.stdout.strip()
    return int(text) if out.returncode == 0 and text.isdigit() and text != "0" else None


def unit_processes(layout: Layout, unit: str) -> list[Process]:
    """The service's main process and all its descendants, with their releases."""
    root = main_pid(unit)
    if root is None:
        return []
    tree = _children()
    out: list[Process] = []
    todo = [root]
    while todo:
        pid = todo.pop()
        found = _describe(layout, pid)
        if found is not None:
            out.append(found)
        todo.extend(tree.get(pid, []))
    return sorted(out, key=lambda p: p.pid)


def every_process_in_releases(layout: Layout) -> list[Process]:
    """Every process on the machine whose working directory is in one of the releases."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            found = _describe(layout, int(entry.name))
            if found is not None and found.release is not None:
                out.append(found)
    return sorted(out, key=lambda p: p.pid)


def running_with_argument(argument: str) -> bool:
    """Whether any process has ``argument`` as one of its command-line words."""
    word = argument.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            words = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if word in words:
            return True
    return False
