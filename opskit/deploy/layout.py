"""The release layout of one base: its releases, the live link, the lock, journal and history.

BASE/releases/ID/        a release: its code, its venv, .opskit-release.json last
BASE/current -> releases/ID
BASE/shared/PATH         linked into every release (spec key ``shared``)
BASE/wheels/             the wheel cache every release's venv installs from
BASE/.opskit-deploy.lock the deploy lock (flock), holding the holder's PID
BASE/.opskit-journal.json a switch not yet verified: what the next run repairs
BASE/.opskit-history     the releases that went live, one ID a line, oldest first
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opskit.errors import OperationFailed

MANIFEST = ".opskit-release.json"
#: A release ID: sortable by when it was first built, and naming its content's hash.
RELEASE_ID = re.compile(r"[0-9]{8}T[0-9]{6}Z-[0-9a-f]{12}")


def new_id(digest: str, now: float | None = None) -> str:
    """The ID of a release first built now: UTC time, then the content hash's first 12 digits."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    return f"{stamp}-{digest[:12]}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` atomically (a temporary file renamed over it)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)
    _fsync_dir(path.parent)


@dataclass(frozen=True)
class Layout:
    """The paths of one base, and the few operations on them."""

    base: Path

    @property
    def releases(self) -> Path:
        """BASE/releases."""
        return self.base / "releases"

    @property
    def current(self) -> Path:
        """BASE/current, the live link."""
        return self.base / "current"

    @property
    def shared(self) -> Path:
        """BASE/shared."""
        return self.base / "shared"

    @property
    def wheels(self) -> Path:
        """BASE/wheels, the wheel cache."""
        return self.base / "wheels"

    @property
    def journal(self) -> Path:
        """The switch in progress, if a deploy or rollback died before it was verified."""
        return self.base / ".opskit-journal.json"

    @property
    def history(self) -> Path:
        """The releases that went live, oldest first."""
        return self.base / ".opskit-history"

    def release(self, release_id: str) -> Path:
        """BASE/releases/ID."""
        return self.releases / release_id

    def manifest(self, release_id: str) -> dict[str, Any] | None:
        """A complete release's manifest; None for one that is missing or half built."""
        try:
            data = json.loads((self.release(release_id) / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def ids(self) -> list[str]:
        """The complete releases, oldest first."""
        try:
            names = sorted(p.name for p in self.releases.iterdir())
        except FileNotFoundError:
            return []
        return [n for n in names if RELEASE_ID.fullmatch(n) and self.manifest(n) is not None]

    def incomplete(self) -> list[Path]:
        """Release directories without a manifest: builds that died (the lock is held)."""
        try:
            entries = list(self.releases.iterdir())
        except FileNotFoundError:
            return []
        return [
            p
            for p in entries
            if (RELEASE_ID.fullmatch(p.name) and self.manifest(p.name) is None)
            or p.name.startswith(".build-")
        ]

    def by_hash(self, digest: str) -> str | None:
        """The complete release with this content hash, if one was built before."""
        for release_id in self.ids():
            manifest = self.manifest(release_id) or {}
            if manifest.get("hash") == digest:
                return release_id
        return None

    def live(self) -> str | None:
        """The release BASE/current points at, or None."""
        try:
            target = str(self.current.readlink())
        except OSError:
            return None
        name = target.rstrip("/").rpartition("/")[2]
        return name if RELEASE_ID.fullmatch(name) else None

    def went_live(self) -> list[str]:
        """The history: every release that went live, oldest first."""
        try:
            lines = self.history.read_text(encoding="utf-8").split()
        except OSError:
            return []
        return [line for line in lines if RELEASE_ID.fullmatch(line)]

    def record_live(self, release_id: str) -> None:
        """Append ``release_id`` to the history (kept to its last 100 entries)."""
        lines = [*self.went_live(), release_id][-100:]
        tmp = self.history.with_name(f".{self.history.name}.{os.getpid()}.tmp")
        tmp.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
        tmp.replace(self.history)

    def previous(self, live: str | None) -> str | None:
        """The release that was live before ``live``, still on disk."""
        present = set(self.ids())
        for release_id in reversed(self.went_live()):
            if release_id != live and release_id in present:
                return release_id
        return None

    def switch(self, release_id: str | None) -> None:
        """Point BASE/current at the release: a new link renamed over the old one (atomic).

        None removes the link (undoing a first deploy).
        """
        if release_id is None:
            with contextlib.suppress(FileNotFoundError):
                self.current.unlink()
            _fsync_dir(self.base)
            return
        tmp = self.base / f".current.{os.getpid()}.tmp"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(f"releases/{release_id}")
        tmp.replace(self.current)
        _fsync_dir(self.base)

    def read_journal(self) -> dict[str, Any] | None:
        """The unverified switch a killed run left, or None."""
        try:
            data = json.loads(self.journal.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {"from": None, "to": None, "broken": True}
        return data if isinstance(data, dict) else {"from": None, "to": None, "broken": True}

    def write_journal(self, data: dict[str, Any]) -> None:
        """Record a switch about to happen."""
        write_json(self.journal, data)

    def clear_journal(self) -> None:
        """The switch is verified, or undone."""
        with contextlib.suppress(FileNotFoundError):
            self.journal.unlink()
        _fsync_dir(self.base)

    @contextlib.contextmanager
    def locked(self, say: Callable[[str], None], *, wait: bool = True) -> Iterator[None]:
        """Hold the base's deploy lock: two deploys (or rollbacks) never interleave."""
        self.base.mkdir(parents=True, exist_ok=True)
        path = self.base / ".opskit-deploy.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                if not wait:
                    raise OperationFailed(
                        f"another deploy of {self.base} holds its lock (pid {holder})"
                    ) from None
                say(f"waiting for another deploy of {self.base} (pid {holder}) to finish")
                fcntl.flock(fd, fcntl.LOCK_EX)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)
