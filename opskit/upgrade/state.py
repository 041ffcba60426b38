"""An upgrade's hold on its environment: the venv lock, and the marker of an unfinished run.

The lock is an flock on ``STATE/upgrade.lock`` (STATE: the venv's ``opskit`` directory),
held from the plan to the end of the restore, so two upgrades of one venv never plan
on each other's half-done state. The kernel drops it when its holder dies, however it
dies; the file keeps the holder's PID only to name it. A raw ``pip install`` run by
hand does not take it.

The marker, ``STATE/upgrade-in-progress.json``, is written before the first change and
removed only once the outcome is verified (upgraded and checked, or restored and
checked). A marker found by a run that holds the lock was left by a run that died
(SIGKILL, a power cut): it names the snapshot that puts the environment back.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from opskit.errors import OperationFailed

LOCK_NAME = "upgrade.lock"
MARKER_NAME = "upgrade-in-progress.json"


class LockBusy(OperationFailed):
    """Another upgrade holds the venv lock and the caller asked not to wait."""


def state_dir_for(python: str) -> Path:
    """The state directory of the environment ``python`` belongs to, without running it.

    A venv's interpreter is VENV/bin/python (pyvenv.cfg beside bin/); its state lives in
    VENV/opskit, as history.default_state_dir() says once the interpreter has answered.
    """
    venv = Path(python).parent.parent
    if (venv / "pyvenv.cfg").is_file():
        return venv / "opskit"
    from opskit.upgrade.history import user_state_dir

    return user_state_dir()


def _holder(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError:
        return "unknown"
    return text if text.isdigit() else "unknown"


@contextlib.contextmanager
def venv_lock(
    state: Path, *, wait: bool, notify: Callable[[str], None], poll: float = 0.2
) -> Iterator[None]:
    """Hold the venv lock for the block; wait for it (saying so), or raise LockBusy."""
    state.mkdir(parents=True, exist_ok=True)
    path = state / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
            holder = _holder(path)
            if not wait:
                raise LockBusy(
                    f"another opskit upgrade (pid {holder}) is changing this environment; "
                    "try again when it ends (without --no-wait opskit waits for it)"
                )
            if not told:
                notify(f"waiting: another opskit upgrade (pid {holder}) holds {path}")
                told = True
            # Polled rather than a blocking flock: a Ctrl-C while waiting stays a plain
            # KeyboardInterrupt, raised between two tries.
            time.sleep(poll)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
    finally:
        os.close(fd)


def lock_holder(state: Path) -> str | None:
    """The PID holding the venv lock now, or None when nobody does (does not take it)."""
    path = state / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return _holder(path)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def write_marker(state: Path, record: dict[str, Any]) -> None:
    """Write the marker atomically (a half-written marker would be unreadable)."""
    state.mkdir(parents=True, exist_ok=True)
    temp = state / f".{MARKER_NAME}.{os.getpid()}"
    with temp.open("w", encoding="utf-8") as handle:
        json.dump(record, handle, indent=1, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    temp.replace(state / MARKER_NAME)


def read_marker(state: Path) -> dict[str, Any] | None:
    """The marker of an unfinished upgrade, or None; an unreadable one is an error."""
    path = state / MARKER_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise OperationFailed(
            f"{path}: unreadable ({exc}); remove it after checking the venv"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("saved"), list):
        raise OperationFailed(f"{path}: not an opskit marker; remove it after checking the venv")
    return data


def remove_marker(state: Path) -> None:
    """Remove the marker: the outcome it guarded is verified."""
    with contextlib.suppress(FileNotFoundError):
        (state / MARKER_NAME).unlink()
