"""Commands: opskit makefile, opskit bundle and opskit doctor (registered on the shared app)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from opskit.options import (
    AppOpt,
    CheckOpt,
    ConfigOpt,
    DiffOpt,
    ForceOpt,
    Name,
    OutputOpt,
    PortOpt,
    ServerOpt,
    SetOpt,
    VenvOpt,
    WorkdirOpt,
    app,
    emit,
    load,
    say,
)

if TYPE_CHECKING:
    from opskit.bundle.artifacts import Origin
    from opskit.spec import AppSpec

DEFAULT_DIR = "deploy"


def _spec_and_origin(
    name: str | None,
    config: Path | None,
    sets: list[str] | None,
    directory: str,
    **given: str | int | None,
) -> tuple[AppSpec, Origin]:
    """Load the spec, and record the overrides as the argv that rebuilds the same spec.

    ops.mk passes that argv to every opskit call, so ``make ops-check`` compares the
    files on disk with what this very command line generated.
    """
    from opskit.bundle.artifacts import Origin

    flags = {"server": "--server", "app": "--app", "port": "--port"}
    flags.update(working_directory="--workdir", venv="--venv")
    args: list[str] = []
    for key, value in given.items():
        if value is not None:
            args += [flags[key], str(value)]
    for item in sets or []:
        args += ["--set", item]
    spec = load(name, config, sets, **given)
    origin = Origin(directory=directory, config=str(config) if config else None, args=tuple(args))
    return spec, origin


@app.command()
def makefile(
    name: Name = None,
    *,
    config: ConfigOpt = None,
    server: ServerOpt = None,
    app_path: AppOpt = None,
    port: PortOpt = None,
    workdir: WorkdirOpt = None,
    venv: VenvOpt = None,
    sets: SetOpt = None,
    output: OutputOpt = None,
    force: ForceOpt = False,
    check: CheckOpt = False,
    diff: DiffOpt = False,
) -> None:
    """Write ops.mk: make targets to regenerate, check, install, reload and diagnose the app."""
    from opskit.bundle.makefile import include_line, render_makefile

    target = output if output is not None else DEFAULT_DIR
    spec, origin = _spec_and_origin(
        name,
        config,
        sets,
        target if target != "-" else DEFAULT_DIR,
        server=server,
        app=app_path,
        port=port,
        working_directory=workdir,
        venv=venv,
    )
    files = render_makefile(
        spec, directory=origin.directory, config=origin.config, args=origin.args
    )
    emit(files, target, force=force, check=check, diff=diff)
    if target != "-" and not (check or diff):
        say(f"add this line to your Makefile:  {include_line(origin.directory)}")


@app.command()
def bundle(
    name: Name = None,
    *,
    config: ConfigOpt = None,
    server: ServerOpt = None,
    app_path: AppOpt = None,
    port: PortOpt = None,
    workdir: WorkdirOpt = None,
    venv: VenvOpt = None,
    sets: SetOpt = None,
    output: OutputOpt = None,
    force: ForceOpt = False,
    check: CheckOpt = False,
    diff: DiffOpt = False,
) -> None:
    """Write every artifact of the app into one directory: units, logging, reload, ops.mk."""
    from opskit.bundle.artifacts import render_bundle
    from opskit.bundle.makefile import include_line

    target = output if output is not None else DEFAULT_DIR
    spec, origin = _spec_and_origin(
        name,
        config,
        sets,
        target if target != "-" else DEFAULT_DIR,
        server=server,
        app=app_path,
        port=port,
        working_directory=workdir,
        venv=venv,
    )
    result = render_bundle(spec, origin)
    for artifact, reason in result.skipped:
        say(f"{'skipped':<10} {artifact}: {reason}")
    emit(result.files, target, force=force, check=check, diff=diff)
    if target != "-" and not (check or diff):
        say(f"add this line to your Makefile:  {include_line(origin.directory)}")


@app.command()
def doctor(
    name: Name = None,
    *,
    config: ConfigOpt = None,
    server: ServerOpt = None,
    app_path: AppOpt = None,
    port: PortOpt = None,
    workdir: WorkdirOpt = None,
    venv: VenvOpt = None,
    sets: SetOpt = None,
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
        typer.Option("--fix", help="Stop stale processes running the app's command line."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Findings as JSON on stdout.")] = False,
) -> None:
    """Diagnose the classic failures of the service on this host and in this project."""
    from opskit.doctor import checks as doc
    from opskit.errors import CheckFailed

    overrides: dict[str, Any] = {
        "server": server,
        "app": app_path,
        "port": port,
        "working_directory": workdir,
        "venv": venv,
    }
    spec = load(name, config, sets, **overrides)
    report = doc.diagnose(spec, project=project, units=units)
    if fix:
        stale = report.stale
        if stale:
            for proc in stale:
                say(f"stopping   pid {proc.pid}: {proc.cmdline}")
            for line in doc.stop_processes(stale, timeout=spec.graceful_timeout + 10):
                say(line)
            # Report the state after the fix, not the one that was just repaired.
            report = doc.diagnose(spec, project=project, units=units)
        else:
            say("nothing to fix: no stale process runs the app's command line")
    if as_json:
        typer.echo(doc.to_json(report.findings))
    else:
        typer.echo(doc.table(report.findings))
    errors = [f for f in report.findings if f.severity == "error"]
    if errors:
        raise CheckFailed(f"doctor: {len(errors)} error finding(s)")
