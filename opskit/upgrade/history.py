"""An upgrade's state: the history file, and the snapshots kept for a manual roll-back."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from opskit.upgrade.environment import Environment

#: Snapshots of successful upgrades kept for a manual roll-back; older ones are pruned.
#: Each holds the replaced packages in full (numpy: ~80 MB), inside the venv.
KEEP_SNAPSHOTS = 3


def default_state_dir(env: Environment) -> Path:
    """Where history and snapshots live: inside the venv, else the user's state directory.

    Inside the venv they travel with what they describe, and whoever may upgrade the
    venv may write there.
    """
    if env.is_venv:
        return Path(env.prefix) / "opskit"
    return user_state_dir()


def user_state_dir() -> Path:
    """The state directory of an interpreter that is not a venv's: the user's own."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "opskit"


def tree_size(path: Path) -> int:
    """The bytes of the files under ``path`` (0 when it is gone)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += (Path(root) / name).lstat().st_size
            except OSError:
                continue
    return total


def snapshots(root: Path) -> list[tuple[Path, int]]:
    """The kept snapshot directories, oldest first, with their sizes."""
    if not root.is_dir():
        return []
    dirs = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.name)
    return [(d, tree_size(d)) for d in dirs]


def append_history(path: Path, record: Mapping[str, Any]) -> None:
    """Append one JSON line to the history file (creating it and its directory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, sort_keys=True) + "\n").encode("utf-8")
    # One write() with O_APPEND: lines from concurrent upgrades never interleave, and
    # the existing lines are never rewritten, so an atomic rename would buy nothing.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def prune_snapshots(root: Path, keep: int = KEEP_SNAPSHOTS) -> None:
    """Remove all but the newest ``keep`` snapshot directories."""
    if not root.is_dir():
        return
    dirs = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.name)
    for old in dirs[:-keep] if keep else dirs:
        shutil.rmtree(old, ignore_errors=True)
