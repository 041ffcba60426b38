"""The one process runner: argument lists, never a shell, own session, group kill on timeout.

Every command opskit runs (pip, pip-compile, the smoke command, systemctl,
systemd-analyze, the logging probe) goes through ``SubprocessRunner``. Each child gets
its own session, so a Ctrl-C at the terminal reaches opskit only, and opskit decides:
a shielded run lets the child finish (a step that must not be cut, such as a
``pip install``), an unshielded one kills the child's process group at once.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class Completed:
    """What a finished command left: its argv, exit code and output."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    #: Whether it ran out of time and was killed, with its process group.
    timed_out: bool = False
    #: Why it could not be started at all (no such program, not executable); None if it ran.
    start_error: OSError | None = field(default=None, compare=False)

    @property
    def ok(self) -> bool:
        """Whether the command exited 0."""
        return self.returncode == 0

    def tail(self, lines: int = 1) -> str:
        """The last lines of stderr (else stdout) that say something, as a one-line reason."""
        for stream in (self.stderr, self.stdout):
            found = [
                ln.strip()
                for ln in stream.splitlines()
                if ln.strip() and not ln.lstrip().startswith("WARNING:")
            ]
            if found:
                return " | ".join(found[-lines:])
        return f"exit code {self.returncode}"

    def reason(self) -> str:
        """Why pip (or pip-compile) failed: its last ``ERROR:`` line, else the tail.

        A build that failed ends in "Failed to build one or more wheels", which names no
        cause: then the cause is the last line of the build's own output (pip frames it
        between "╰─> [N lines of output]" and "[end of output]"), with the package.
        """
        lines = self.stderr.splitlines()
        errors = [
            ln.strip()[len("ERROR:") :].strip()
            for ln in lines
            if ln.strip().startswith("ERROR:") and ln.strip() != "ERROR: Exception:"
        ]
        if not errors:
            return self.tail()
        failed = [e for e in errors if e.startswith("Failed building wheel for ")]
        output: list[str] = []
        inside = False
        for ln in lines:
            if "╰─>" in ln:
                inside, output = True, []
            elif "[end of output]" in ln:
                inside = False
            elif inside and ln.strip():
                output.append(ln.strip())
        if failed and output:
            return f"{failed[-1]}: {output[-1]}"
        return errors[-1]


class Runner(Protocol):
    """Runs one command given as an argument list and returns what it left."""

    def __call__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
    ) -> Completed: ...


# The children SubprocessRunner is waiting for, so that a second Ctrl-C can reach them.
_RUNNING: set[int] = set()


class SubprocessRunner:
    """Run commands for real, each in its own session, never through a shell.

    Shielded (the default), a Ctrl-C at the terminal does not cut the child: on the
    first one opskit lets it finish (an interrupted ``pip install`` can leave a package
    half uninstalled) and then raises KeyboardInterrupt; a second one is passed on to
    the child. Inside an upgrade, ``InterruptGuard`` handles Ctrl-C instead and the
    runner raises nothing: the upgrade checks the guard between steps. Unshielded, a
    Ctrl-C kills the child's process group and raises KeyboardInterrupt at once, for
    commands that only read (a probe, an analysis).
    """

    def __init__(self, notify: Callable[[str], None] | None = None, *, shield: bool = True) -> None:
        """Keep the callback that tells the user why opskit is still waiting."""
        self.notify = notify or (lambda message: None)
        self.shield = shield

    def __call__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
    ) -> Completed:
        """Run ``argv`` and wait for it; after ``timeout`` seconds kill its process group."""
        if not self.shield:
            return _run(argv, env, cwd, timeout, kill_on_interrupt=True)
        guard = InterruptGuard(self.notify, step=_short(argv))
        # The handler is in place before the child starts: a KeyboardInterrupt raised
        # inside Popen would leave a pip running unwatched.
        with guard.installed():
            done = _run(argv, env, cwd, timeout, kill_on_interrupt=False)
        if guard.count:
            raise KeyboardInterrupt
        return done


def _run(
    argv: Sequence[str],
    env: Mapping[str, str] | None,
    cwd: str | None,
    timeout: float | None,
    *,
    kill_on_interrupt: bool,
) -> Completed:
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    except OSError as exc:
        return Completed(
            tuple(argv), 127, "", f"cannot run {argv[0]}: {exc.strerror}", start_error=exc
        )
    _RUNNING.add(proc.pid)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # The whole group: a child's own children (pip's build backends, a server the
        # smoke command started) would otherwise live on and keep the pipes open.
        _signal_group(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        err += f"\ntimed out after {timeout:g} s"
        return Completed(tuple(argv), proc.returncode, out, err, timed_out=True)
    except KeyboardInterrupt:
        if kill_on_interrupt:
            # In its own session the child saw no Ctrl-C: stop it as the terminal would have.
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
        raise
    finally:
        _RUNNING.discard(proc.pid)
    return Completed(tuple(argv), proc.returncode, out, err)


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


def _short(argv: Sequence[str]) -> str:
    words = list(argv)
    if len(words) > 2 and words[1] == "-m":
        return f"{words[2]} {words[3]}" if len(words) > 3 else words[2]
    return Path(words[0]).name


class InterruptGuard:
    """Ctrl-C, remembered instead of raised, so that no step stops half way.

    The first Ctrl-C lets the running step finish; the caller looks at ``count``
    between steps. A second one passes SIGINT on to the running children. While
    ``restoring`` is set every Ctrl-C is ignored: a half-done restore is the worst case.
    Only Python's default handler is replaced (and only in the main thread, the one
    place signal handlers can be set), so an outer guard keeps precedence.
    """

    def __init__(self, notify: Callable[[str], None], step: str = "the running step") -> None:
        """Start with no interrupt seen."""
        self.notify = notify
        self.step = step
        self.count = 0
        self.restoring = False

    def handle(self, signum: int, frame: object) -> None:
        """The SIGINT handler."""
        if self.restoring:
            self.notify("interrupt ignored: restoring the snapshot first")
            return
        self.count += 1
        if self.count == 1:
            self.notify(f"interrupted: letting {self.step} finish first")
        else:
            self.notify(f"interrupted again: stopping {self.step}")
            for pid in list(_RUNNING):
                _signal_group(pid, signal.SIGINT)

    @contextlib.contextmanager
    def installed(self) -> Iterator[InterruptGuard]:
        """Handle SIGINT with this guard for the duration of the block."""
        if threading.current_thread() is not threading.main_thread() or (
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler
        ):
            yield self
            return
        previous = signal.signal(signal.SIGINT, self.handle)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)


def shown(argv: Sequence[str]) -> str:
    """An argument list as a line a user can paste into a POSIX shell."""
    return shlex.join(argv)
