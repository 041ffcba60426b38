"""Doctor's checks of the servers on this host (psutil), and the stop that ``--fix`` does."""

from __future__ import annotations

import os
import shlex
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from opskit.doctor.findings import Finding, Severity, evidence_path
from opskit.spec import AppSpec

if TYPE_CHECKING:
    from opskit.doctor.checks import Context


@dataclass(frozen=True)
class Listener:
    """A server process (the root of its process tree) listening on the app's address."""

    pid: int
    argv: tuple[str, ...]
    started: float
    newest_start: float = 0.0
    #: The owner's user name (or uid, where it has no name).
    user: str = "?"

    @property
    def cmdline(self) -> str:
        """The command line as one shell-readable string."""
        return shlex.join(self.argv)


def _listens(conn: object, spec: AppSpec) -> bool:
    import psutil

    laddr = getattr(conn, "laddr", None)
    if spec.unix_socket:
        return bool(laddr == spec.unix_socket)
    return bool(
        getattr(conn, "status", None) == psutil.CONN_LISTEN
        and laddr
        and getattr(laddr, "port", None) == spec.port
    )


def listeners(spec: AppSpec) -> list[Listener]:
    """The server processes listening on the app's port or unix socket, one per process tree.

    psutil names one holder per socket, often a worker of a pre-fork server, so each
    holder is walked up to the topmost ancestor that listens there too: the master, which
    is the server (one server, not one per worker). PID 1 holding the socket is systemd's
    socket activation, not a server.
    """
    import psutil

    kind = "unix" if spec.unix_socket else "inet"
    holders = {
        conn.pid
        for conn in psutil.net_connections(kind=kind)
        if conn.pid is not None and conn.pid != 1 and _listens(conn, spec)
    }
    roots: dict[int, psutil.Process] = {}
    for pid in holders:
        try:
            root = psutil.Process(pid)
            for parent in root.parents():
                if parent.pid == 1:
                    break
                try:
                    if parent.pid in holders or any(
                        _listens(c, spec) for c in parent.net_connections(kind=kind)
                    ):
                        root = parent
                except psutil.AccessDenied:
                    continue
            roots[root.pid] = root
        except psutil.Error:
            continue
    out = []
    for pid, root in sorted(roots.items()):
        try:
            starts = []
            for proc in [root, *root.children(recursive=True)]:
                try:
                    starts.append(proc.create_time())
                except psutil.Error:
                    continue
            out.append(
                Listener(
                    pid=pid,
                    argv=tuple(root.cmdline()),
                    started=root.create_time(),
                    newest_start=max(starts),
                    user=_user(root),
                )
            )
        except psutil.Error:
            continue
    return out


def _user(proc: object) -> str:
    import psutil

    try:
        return str(proc.username())  # type: ignore[attr-defined]
    except (psutil.Error, KeyError):
        # KeyError: a uid with no passwd entry (a dynamic user seen from outside).
        try:
            return str(proc.uids().real)  # type: ignore[attr-defined]
        except psutil.Error:
            return "?"


def runs_app(argv: Sequence[str], spec: AppSpec) -> bool:
    """Whether a command line runs this app (its import path, or the spec's command)."""
    if spec.app:
        return any(arg == spec.app or arg.endswith("=" + spec.app) for arg in argv)
    n = len(spec.command)
    return n > 0 and any(tuple(argv[i : i + n]) == spec.command for i in range(len(argv)))


def _address(spec: AppSpec) -> str:
    return spec.unix_socket or f"port {spec.port}"


def check_shared_port(ctx: Context) -> list[Finding]:
    """Several servers on the app's one address."""
    found = ctx.listeners
    if len(found) <= 1:
        return []
    return [
        Finding(
            Severity.ERROR,
            "port-shared",
            f"{len(found)} separate servers listen on {_address(ctx.spec)}",
            "; ".join(f"pid {p.pid}: {p.cmdline}" for p in found),
            "stop all but one: with SO_REUSEPORT the kernel spreads connections over "
            "every listener, so some requests reach an old server "
            "(opskit doctor --fix stops the stale ones running this app)",
        )
    ]


# Start times derive from a boot time that psutil reads rounded to the second.
_START_MARGIN = 1.0


def _older_than_code(ctx: Context) -> list[Listener]:
    if ctx.newest_source is None:
        return []
    _, mtime = ctx.newest_source
    # A reloaded pre-fork server has old master but new workers: what counts is the
    # youngest process of the tree, the last one to import the code.
    return [
        proc
        for proc in ctx.listeners
        if max(proc.started, proc.newest_start) + _START_MARGIN < mtime
    ]


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def check_stale_code(ctx: Context) -> list[Finding]:
    """Servers that started before the newest source file of the project changed."""
    if ctx.newest_source is None:
        return []
    path, mtime = ctx.newest_source
    findings = []
    for proc in _older_than_code(ctx):
        fixable = runs_app(proc.argv, ctx.spec)
        findings.append(
            Finding(
                Severity.WARNING,
                "stale-code",
                f"a server on {_address(ctx.spec)} started before the code changed",
                f"pid {proc.pid} ({proc.cmdline}) started {_when(proc.started)}; "
                f"{evidence_path(path, ctx.project)} changed {_when(mtime)}",
                "reload or restart the service"
                + (" (or opskit doctor --fix)" if fixable else "")
                + " so it runs the code on disk",
            )
        )
    return findings


def stale_processes(ctx: Context) -> list[Listener]:
    """The stale servers that run this app: the only ones ``--fix`` may stop."""
    return [proc for proc in _older_than_code(ctx) if runs_app(proc.argv, ctx.spec)]


def stop_processes(procs: Sequence[Listener], *, timeout: float) -> list[str]:
    """Send SIGTERM to each process (SIGKILL after ``timeout``); return what happened.

    A process is signalled only while its PID still belongs to the process found (same
    start time), so a PID reused in between is never hit.
    """
    import psutil

    lines = []
    alive: list[tuple[Listener, psutil.Process]] = []
    for proc in procs:
        try:
            current = psutil.Process(proc.pid)
            if abs(current.create_time() - proc.started) > 0.01:
                lines.append(f"skipped    pid {proc.pid}: a different process now")
                continue
            os.kill(proc.pid, signal.SIGTERM)
            alive.append((proc, current))
        except (psutil.NoSuchProcess, ProcessLookupError):
            lines.append(f"gone       pid {proc.pid}")
    deadline = time.monotonic() + timeout
    for proc, current in alive:
        try:
            current.wait(timeout=max(0.0, deadline - time.monotonic()))
            lines.append(f"stopped    pid {proc.pid}")
        except psutil.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            lines.append(f"killed     pid {proc.pid} (no exit {timeout:g} s after SIGTERM)")
        except psutil.NoSuchProcess:
            lines.append(f"stopped    pid {proc.pid}")
    return lines
