"""``opskit doctor``: diagnose the classic failures of the service and the project."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from opskit.commands import app, spec_command
from opskit.options import SpecArgs, say


@spec_command(app, "doctor")
def doctor(
    *,
    spec: SpecArgs,
    project: Annotated[
        Path,
        typer.Option(
            "--project", help="Project directory to scan [the current one].", file_okay=False
        ),
    ] = Path(),
    units: Annotated[
        list[Path] | None,
        typer.Option(
            "--units", help="Unit file or directory to check, repeatable [PROJECT/deploy]."
        ),
    ] = None,
    fix: Annotated[
        bool,
        typer.Option("--fix", help="Stop the stale processes that are this app's server."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Findings as JSON on stdout.")] = False,
) -> None:
    """Diagnose the classic failures of the service on this host and in this project."""
    import signal

    from opskit.doctor.checks import diagnose
    from opskit.doctor.findings import Severity, table, to_json
    from opskit.doctor.stale import stop_processes
    from opskit.errors import CheckFailed

    loaded = spec.load()
    report = diagnose(loaded, project=project, units=units)
    if fix:
        # Say what is stopped and what is left alone, and why, before any signal is sent.
        for decision in report.fix_plan:
            proc = decision.proc
            if decision.stop:
                say(f"stopping   pid {proc.pid} ({proc.user}): {proc.cmdline}")
                say(f"           {decision.why}")
            else:
                say(f"left alone pid {proc.pid} ({proc.user}): {'; '.join(decision.reasons)}")
        stale = report.stale
        if stale:
            stop = signal.SIGQUIT if loaded.server == "uwsgi" else signal.SIGTERM
            for line in stop_processes(stale, timeout=loaded.graceful_timeout + 10, signum=stop):
                say(line)
            # Report the state after the fix, not the one that was just repaired.
            report = diagnose(loaded, project=project, units=units)
        else:
            say("nothing to fix: no stale process is this app's server")
    if as_json:
        typer.echo(to_json(report.findings))
    else:
        typer.echo(table(report.findings))
    errors = [f for f in report.findings if f.severity is Severity.ERROR]
    if errors:
        raise CheckFailed(f"doctor: {len(errors)} error finding(s)")
