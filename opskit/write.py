"""The one write step: atomic, never clobbers without --force, reports what it did per file."""

from __future__ import annotations

import contextlib
import difflib
import os
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TextIO

from opskit.errors import CheckFailed, ConflictError, UsageError
from opskit.render import RenderedFile


class Action(str, Enum):
    """What the write step does (or would do) to one file."""

    CREATE = "create"
    IDENTICAL = "identical"
    OVERWRITE = "overwrite"
    CONFLICT = "conflict"


@dataclass(frozen=True)
class Planned:
    """One file and what happens to it."""

    file: RenderedFile
    path: Path
    action: Action


def _existing(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        return "\0binary"
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory, not a file") from None
    except OSError as exc:
        # e.g. -o FILE/sub: a path component is a file (ENOTDIR), or no permission.
        raise UsageError(f"{path}: cannot read: {exc.strerror}") from None


def plan(files: Iterable[RenderedFile], directory: Path, *, force: bool) -> list[Planned]:
    """Compare each file with what is on disk; pure apart from reading."""
    out = []
    for file in files:
        path = directory / file.name
        old = _existing(path)
        if old is None:
            action = Action.CREATE
        elif old == file.content and (path.stat().st_mode & 0o777) == file.mode:
            action = Action.IDENTICAL
        else:
            action = Action.OVERWRITE if force else Action.CONFLICT
        out.append(Planned(file, path, action))
    return out


def _stage(path: Path, content: str, mode: int) -> Path:
    """Write ``content`` to a new temporary file beside ``path`` and return the temporary."""
    # A short fixed prefix, not the file's name: a unit name may be 247 characters, and
    # ".NAME.service.XXXXXXXX.tmp" would pass NAME_MAX (255) and fail with ENAMETOOLONG.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".opskit-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        Path(tmp).chmod(mode)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def atomic_write(path: Path, content: str, mode: int) -> None:
    """Write through a temporary file in the same directory and rename it into place."""
    tmp = _stage(path, content, mode)
    try:
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write(files: Sequence[RenderedFile], directory: Path, *, force: bool) -> list[Planned]:
    """Write every file, or none: a conflict anywhere stops the run before the first write."""
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"{directory}: exists and is not a directory")
    planned = plan(files, directory, force=force)
    conflicts = [p for p in planned if p.action is Action.CONFLICT]
    if conflicts:
        names = ", ".join(str(p.path) for p in conflicts)
        raise ConflictError(
            f"{names}: exists and differs; not overwritten (use --force, or --diff)"
        )
    created = not directory.exists()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{directory}: cannot create directory: {exc.strerror}") from None
    # Stage every file first and rename only once all are on disk, so a failure part-way
    # (disk full, a name too long) leaves the old set in place, not half of a new one.
    staged: list[tuple[Path, Path]] = []
    try:
        for item in planned:
            if item.action is not Action.IDENTICAL:
                try:
                    staged.append((_stage(item.path, item.file.content, item.file.mode), item.path))
                except OSError as exc:
                    raise UsageError(f"{item.path}: cannot write: {exc.strerror}") from None
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        if created:
            with contextlib.suppress(OSError):
                directory.rmdir()
        raise
    existing = {p.path for p in planned if p.action is not Action.CREATE}
    for index, (tmp, path) in enumerate(staged):
        try:
            tmp.replace(path)
        except OSError as exc:
            for left, _ in staged[index:]:
                left.unlink(missing_ok=True)
            # Files this run created are taken back; a rename into the same directory
            # fails in practice only on a name the file system refuses, before any
            # existing file was replaced.
            for _, done in staged[:index]:
                if done not in existing:
                    done.unlink(missing_ok=True)
            if created:
                with contextlib.suppress(OSError):
                    directory.rmdir()
            raise UsageError(f"{path}: cannot write: {exc.strerror}") from None
    return planned


def diff(files: Sequence[RenderedFile], directory: Path) -> str:
    """A unified diff from what is on disk to what would be generated."""
    chunks: list[str] = []
    for file in files:
        path = directory / file.name
        old = _existing(path) or ""
        chunks.extend(
            difflib.unified_diff(
                old.splitlines(keepends=True),
                file.content.splitlines(keepends=True),
                fromfile=str(path) if path.exists() else "/dev/null",
                tofile=str(path),
            )
        )
    return "".join(chunks)


def check(files: Sequence[RenderedFile], directory: Path) -> list[Planned]:
    """Raise CheckFailed when any file on disk differs from what would be generated."""
    planned = plan(files, directory, force=False)
    drift = [p for p in planned if p.action is not Action.IDENTICAL]
    if drift:
        names = ", ".join(
            f"{p.path} ({'missing' if p.action is Action.CREATE else 'differs'})" for p in drift
        )
        raise CheckFailed(f"drift: {names}")
    return planned


def to_stream(files: Sequence[RenderedFile], stream: TextIO | None = None) -> None:
    """Print the files for ``-o -``; with several, a comment line names each."""
    # Looked up per call: a default bound at import keeps whatever stdout was then
    # (a closed capture, a replaced stream) instead of the one in use now.
    if stream is None:
        stream = sys.stdout
    for file in files:
        if len(files) > 1:
            stream.write(f"# {file.name}\n")
        stream.write(file.content)
