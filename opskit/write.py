"""The one write step: atomic, never clobbers without --force, reports what it did per file."""

from __future__ import annotations

import contextlib
import difflib
import errno
import fcntl
import os
import re
import signal
import stat
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TextIO

from opskit.errors import CheckFailed, ConflictError, OperationFailed, UsageError
from opskit.render import RenderedFile

#: What a user, a CI runner or a supervisor sends to stop a run. A write holds them from
#: its first temporary file to its last rename, so they end it before or after the set
#: changes, never half-way through it.
HELD_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
#: Far above anything opskit generates (systemd refuses a unit line over 1 MiB): a larger
#: file at a target path is not one opskit wrote, and is neither compared nor replaced.
MAX_EXISTING = 4 * 1024 * 1024
#: The names tempfile.mkstemp gives the temporary files below (8 characters of its
#: alphabet between prefix and suffix): only these are taken for a dead run's leftovers.
TEMP_NAME = re.compile(r"\.opskit-[a-z0-9_]{8}\.tmp")

_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


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


class _Interrupted(Exception):
    """Raised inside a write when a held signal arrived before its first rename."""


def _too_large(path: Path) -> UsageError:
    return UsageError(
        f"{path}: larger than {MAX_EXISTING // (1024 * 1024)} MiB, "
        "not a file opskit wrote; not read or replaced"
    )


def _refuse_unless_regular(path: Path, info: os.stat_result) -> None:
    if stat.S_ISREG(info.st_mode):
        if info.st_size > MAX_EXISTING:
            raise _too_large(path)
        return
    if stat.S_ISDIR(info.st_mode):
        raise UsageError(f"{path}: is a directory, not a file")
    kind = _KINDS.get(stat.S_IFMT(info.st_mode), "not a regular file")
    if path.is_symlink():
        # A masked unit is a symlink to /dev/null: say where it points.
        raise UsageError(f"{path}: is a symlink to {path.readlink()}, {kind}, not a file")
    raise UsageError(f"{path}: is {kind}, not a file")


def _read(path: Path) -> tuple[str, int] | None:
    """The text and permission bits of the file at ``path``; None when nothing is there.

    A symlink is followed, as systemd and an editor follow it (a write then replaces the
    link itself, never its target). Only a regular file is opened: reading a FIFO waits
    for a writer forever, /dev/zero never ends. O_NONBLOCK and the second look after
    opening keep a file swapped in between from doing either.
    """
    try:
        _refuse_unless_regular(path, path.stat())
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        # e.g. -o FILE/sub: a path component is a file (ENOTDIR), or no permission.
        raise UsageError(f"{path}: cannot read: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        _refuse_unless_regular(path, info)
        data = handle.read(MAX_EXISTING + 1)
    if len(data) > MAX_EXISTING:
        raise _too_large(path)
    mode = info.st_mode & 0o777
    try:
        return data.decode("utf-8"), mode
    except UnicodeDecodeError:
        return "\0binary", mode


def _existing(path: Path) -> str | None:
    found = _read(path)
    return None if found is None else found[0]


def plan(files: Iterable[RenderedFile], directory: Path, *, force: bool) -> list[Planned]:
    """Compare each file with what is on disk; pure apart from reading."""
    out = []
    for file in files:
        path = directory / file.name
        found = _read(path)
        if found is None and not os.path.lexists(path):
            action = Action.CREATE
        elif found == (file.content, file.mode):
            action = Action.IDENTICAL
        else:
            # Other bytes or another mode, or a dangling symlink: something is there.
            action = Action.OVERWRITE if force else Action.CONFLICT
        out.append(Planned(file, path, action))
    return out


def _conflict(paths: Iterable[Path]) -> ConflictError:
    names = ", ".join(str(p) for p in paths)
    return ConflictError(f"{names}: exists and differs; not overwritten (use --force, or --diff)")


@contextlib.contextmanager
def _signals_held() -> Iterator[set[int]]:
    """Block SIGINT, SIGTERM and SIGHUP for the block; yield the set of those that came.

    When the block ends they are delivered as they would have been: SIGTERM and SIGHUP
    end the process by their default action (exit status 128 + N), SIGINT raises
    KeyboardInterrupt (the CLI exits 130), an ignored one stays ignored. The mask is the
    calling thread's: opskit writes from its only thread, so no other one takes them.
    """
    pending: set[int] = set()
    old = signal.pthread_sigmask(signal.SIG_BLOCK, HELD_SIGNALS)
    try:
        try:
            yield pending
        finally:
            # Restoring the mask delivers what is pending, within this call.
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
    except _Interrupted:
        # Still running: a handler the caller installed let the process go on. Nothing
        # was renamed; say so rather than report the files as written.
        names = ", ".join(sorted(signal.Signals(s).name for s in pending))
        raise OperationFailed(f"interrupted ({names}) before any file was written") from None


@contextlib.contextmanager
def _signals_released() -> Iterator[None]:
    """Let the held signals through for the block (a wait that may take long)."""
    old = signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _stop_if_signalled(pending: set[int]) -> None:
    """Raise _Interrupted when a held signal that would stop the process is pending."""
    pending.update(
        sig
        for sig in signal.sigpending() & HELD_SIGNALS
        if signal.getsignal(sig) is not signal.SIG_IGN
    )
    if pending:
        raise _Interrupted


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


def _lock(directory: Path) -> int | None:
    """An exclusive flock on ``directory`` itself, held until the returned fd is closed.

    The directory's own descriptor, not a lock file: nothing is left in -o directories or
    /etc/systemd/system, and a killed run's lock goes with its process. None where the
    file system or the directory's permissions give no lock (NFS refuses flock on a
    read-only descriptor; a directory without read permission cannot be opened): the
    exclusive create of new files still holds there.
    """
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except PermissionError:
        return None
    except NotADirectoryError:
        raise UsageError(f"{directory}: exists and is not a directory") from None
    except OSError as exc:
        raise UsageError(f"{directory}: cannot open directory: {exc.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # Another run is writing here. Waiting for it may take as long as its disk
            # does; Ctrl-C must still end the wait, and nothing of this run is on disk.
            with _signals_released():
                fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def _locked_directory(directory: Path) -> Iterator[int | None]:
    """Create ``directory`` if missing and hold its lock for the block.

    A directory this call created is removed again when the block fails.
    """
    created = False
    for _ in range(5):
        try:
            directory.mkdir(parents=True)
            created = True
        except FileExistsError:
            pass
        except OSError as exc:
            raise UsageError(f"{directory}: cannot create directory: {exc.strerror}") from None
        fd = _lock(directory)
        if fd is None:
            break
        # A run that created the directory removes it when its write fails: one that
        # waited for the lock meanwhile would hold a lock on a removed directory.
        with contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.fstat(fd), directory.stat()):
                break
        os.close(fd)
    else:
        raise UsageError(f"{directory}: removed or replaced again and again while locking it")
    try:
        yield fd
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                directory.rmdir()
        raise
    finally:
        if fd is not None:
            os.close(fd)


def _remove_leftovers(fd: int) -> None:
    """Remove the temporary files of a run that died here (SIGKILL, a power cut).

    Called with the lock held: every opskit run writing here holds it while its own
    temporary files exist, so any found now belong to no live run.
    """
    with os.scandir(fd) as entries:
        for entry in entries:
            if TEMP_NAME.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.name, dir_fd=fd)


def _stage_all(planned: Sequence[Planned], pending: set[int]) -> list[tuple[Path, Planned]]:
    """Write each changed file to a temporary beside it; on any failure remove them all.

    A held signal stops the staging before the next file: all of it is still undone.
    """
    staged: list[tuple[Path, Planned]] = []
    try:
        for item in planned:
            _stop_if_signalled(pending)
            if item.action is Action.IDENTICAL:
                continue
            try:
                # A generator's file in a subdirectory of its own (Ansible's group_vars/).
                item.path.parent.mkdir(parents=True, exist_ok=True)
                staged.append((_stage(item.path, item.file.content, item.file.mode), item))
            except OSError as exc:
                raise UsageError(f"{item.path}: cannot write: {exc.strerror}") from None
        _stop_if_signalled(pending)
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    return staged


def _create(tmp: Path, path: Path) -> None:
    """Give the staged ``tmp`` the name ``path``, failing if anything has that name."""
    try:
        # link(2) fails with EEXIST where a rename would replace: a file another writer
        # created since the plan is reported, never silently replaced.
        os.link(tmp, path)
    except FileExistsError:
        raise _conflict([path]) from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP):
            raise
        # A file system without hard links (vfat, some network mounts): the lock keeps
        # other opskit runs out, a look just before the rename is what is left.
        if os.path.lexists(path):
            raise _conflict([path]) from None
        tmp.replace(path)


def _commit(staged: Sequence[tuple[Path, Planned]]) -> None:
    """Put every staged file in place: first the new names, then the replacements.

    A new name can fail (it appeared meanwhile, the file system refuses it) while no
    existing file has been touched; the new names taken so far are then given back.
    """
    new = [(tmp, p.path) for tmp, p in staged if p.action is Action.CREATE]
    replaced = [(tmp, p.path) for tmp, p in staged if p.action is not Action.CREATE]
    taken: list[tuple[Path, os.stat_result]] = []
    try:
        for tmp, path in new:
            ours = tmp.stat()
            try:
                _create(tmp, path)
            except OSError as exc:
                raise UsageError(f"{path}: cannot write: {exc.strerror}") from None
            taken.append((path, ours))
        for tmp, path in replaced:
            try:
                tmp.replace(path)
            except OSError as exc:
                # A rename over an existing name in its own directory fails only when
                # that name became something else meanwhile (a directory, a mount point).
                raise UsageError(f"{path}: cannot write: {exc.strerror}") from None
    except BaseException:
        for path, ours in taken:
            with contextlib.suppress(OSError):
                if os.path.samestat(path.lstat(), ours):
                    path.unlink()
        raise
    finally:
        # A new name is a second link to its temporary: drop the temporary's name.
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)


def atomic_write(path: Path, content: str, mode: int) -> None:
    """Write through a temporary file in the same directory and rename it into place."""
    with _signals_held() as pending:
        fd = _lock(path.parent) if path.parent.is_dir() else None
        try:
            tmp = _stage(path, content, mode)
            try:
                _stop_if_signalled(pending)
                tmp.replace(path)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        finally:
            if fd is not None:
                os.close(fd)


def write(files: Sequence[RenderedFile], directory: Path, *, force: bool) -> list[Planned]:
    """Write every file, or none: a conflict anywhere stops the run before the first write.

    Runs writing into one directory take turns (a lock on it from the plan to the last
    rename), so a later run plans against the files of an earlier one: a conflict, or
    with --force one whole set over another. SIGINT, SIGTERM and SIGHUP take effect
    before the first rename or after the last.
    """
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"{directory}: exists and is not a directory")
    if not directory.exists():
        # Nothing to compare with yet: planning first reports a bad path (a component
        # that is a file) as such, and creates no directory for a run that fails.
        plan(files, directory, force=force)
    with _signals_held() as pending, _locked_directory(directory) as fd:
        if fd is not None:
            _remove_leftovers(fd)
        planned = plan(files, directory, force=force)
        conflicts = [p.path for p in planned if p.action is Action.CONFLICT]
        if conflicts:
            raise _conflict(conflicts)
        # Stage every file first and rename only once all are on disk, so a failure or a
        # signal part-way (disk full, a name too long, Ctrl-C) leaves the old set in
        # place, not half of a new one.
        staged = _stage_all(planned, pending)
        _commit(staged)
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
