"""Stale code: a server older than the app's code, and ``doctor --fix`` stopping it.

Which processes listen where, and what they run, is opskit.doctor.processes; here is
the finding (a server started before the code last changed), the decision of --fix
(every condition that makes a server this app's stale one) and the signalling, which
never hits a PID reused in between.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from opskit.doctor.findings import Finding, Severity, evidence_path
from opskit.doctor.processes import (
    Listener,
    owner_problem,
    program_interpreters,
    runs_app,
    runs_program,
    server_program,
    spec_address,
    spec_addresses,
)

if TYPE_CHECKING:
    from opskit.doctor.checks import Context


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
    fixable = {decision.proc.pid for decision in plan_fix(ctx) if decision.stop}
    for proc in _older_than_code(ctx):
        findings.append(
            Finding(
                Severity.WARNING,
                "stale-code",
                f"a server on {spec_address(ctx.spec)} started before the code changed",
                f"pid {proc.pid} ({proc.cmdline}) started {_when(proc.started)}; "
                f"{evidence_path(path, ctx.project)} changed {_when(mtime)}",
                "reload or restart the service"
                + (" (or opskit doctor --fix)" if proc.pid in fixable else "")
                + " so it runs the code on disk",
            )
        )
    return findings


@dataclass(frozen=True)
class FixDecision:
    """What ``--fix`` does with one server on the app's address, and why."""

    proc: Listener
    #: Why it is left running; empty when it is this app's stale server, which --fix stops.
    reasons: tuple[str, ...]
    #: What makes it this app's stale server, shown before it is stopped.
    why: str = ""

    @property
    def stop(self) -> bool:
        """Whether ``--fix`` stops it."""
        return not self.reasons


def plan_fix(ctx: Context) -> list[FixDecision]:
    """For each server on the app's address: stop it (this app's stale server) or why not.

    Only a process that is the spec's server program, owned by the unit's user, holding
    the spec's own address, running this app and older than the code is stopped: a
    command line anyone can write (``python3 -c ... shop.wsgi:app``) proves nothing.
    """
    spec = ctx.spec
    program = server_program(spec)
    interpreters = program_interpreters(spec, program)
    wanted = spec_addresses(spec)
    stale = {proc.pid for proc in _older_than_code(ctx)}
    plan = []
    for proc in ctx.listeners:
        reasons = []
        if not runs_program(proc, program, interpreters):
            reasons.append(
                f"not the spec's server {program} (its executable is {proc.exe or 'unreadable'})"
            )
        owner = owner_problem(proc, spec)
        if owner:
            reasons.append(owner)
        held = sorted(wanted.intersection(proc.addresses))
        if not held:
            reasons.append(f"listens on {', '.join(proc.addresses) or '?'}, not {spec.bind}")
        if not runs_app(proc.argv, spec):
            reasons.append(
                "its command line does not contain the spec's command"
                if spec.server == "command"
                else f"its command line does not name {spec.app}"
            )
        if proc.pid not in stale:
            reasons.append("not older than the code")
        why = ""
        if not reasons and ctx.newest_source is not None:
            changed = evidence_path(ctx.newest_source[0], ctx.project)
            why = (
                f"the spec's server {program}, owned by {proc.user}, on {' and '.join(held)}, "
                f"started before {changed} changed"
            )
        plan.append(FixDecision(proc, tuple(reasons), why))
    return plan


def stop_processes(
    procs: Sequence[Listener], *, timeout: float, signum: int = signal.SIGTERM
) -> list[str]:
    """Send ``signum`` to each process (SIGKILL after ``timeout``); return what happened.

    SIGTERM stops gunicorn and uvicorn; uWSGI 2.0 takes it as a brutal reload, so its
    caller passes SIGQUIT, the signal its unit stops it with.

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
            os.kill(proc.pid, signum)
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
            name = signal.Signals(signum).name
            lines.append(f"killed     pid {proc.pid} (no exit {timeout:g} s after {name})")
        except psutil.NoSuchProcess:
            lines.append(f"stopped    pid {proc.pid}")
    return lines
