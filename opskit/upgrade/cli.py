"""``opskit upgrade``: exact pins installed, verified, and restored on any failure."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from opskit.commands import app, spec_command
from opskit.options import SpecArgs, say

if TYPE_CHECKING:
    from opskit.proc import Runner
    from opskit.spec import AppSpec
    from opskit.upgrade.outcome import UpgradeRequest
    from opskit.upgrade.pins import Pin


def _project(spec: SpecArgs) -> tuple[AppSpec | None, Path]:
    """The spec and the project directory: the config file's, or the current one without.

    An upgrade needs no spec: without a config file (and without --name) the flags that
    matter to it, --venv and --workdir, stand on their own.
    """
    from opskit.config import find_config

    source = spec.config if spec.config is not None else find_config(Path.cwd())
    if source is None and spec.name is None:
        return None, Path.cwd()
    project = source.resolve().parent if source is not None else Path.cwd()
    return spec.load(), project


def _venv_python(spec: SpecArgs, loaded: AppSpec | None) -> str | None:
    """The interpreter of the app's venv: the spec's, else --venv's or --workdir's."""
    from opskit.validate import validate_path

    if loaded is not None:
        return loaded.python
    venv, workdir = spec.value("venv"), spec.value("working_directory")
    if venv is not None:
        return f"{validate_path('venv', venv).rstrip('/')}/bin/python"
    if workdir is not None:
        return f"{validate_path('working-directory', workdir).rstrip('/')}/.venv/bin/python"
    return None


def _python(given: str | None, spec: SpecArgs, loaded: AppSpec | None) -> str:
    """--python, else the venv (--venv, the spec's), else the interpreter running opskit."""
    import os
    import sys

    from opskit.errors import UsageError

    venv_python = _venv_python(spec, loaded)
    if given is not None:
        # Absolute but not resolved: a venv's bin/python is a symlink to the base
        # interpreter, and resolving it would step out of the venv.
        path = os.path.normpath(Path(given).absolute())
        if not Path(path).is_file():
            raise UsageError(f"--python {given}: no such file")
        venv = spec.value("venv")
        if venv is not None and venv_python is not None and not _same_env(path, venv_python):
            raise UsageError(f"--python {given} is not the interpreter of --venv {venv}")
        return path
    if venv_python is not None:
        if not Path(venv_python).is_file():
            raise UsageError(f"{venv_python} (the spec's venv) does not exist; give --python PATH")
        return venv_python
    return sys.executable


def _same_env(python: str, venv_python: str) -> bool:
    """Whether two interpreter paths belong to one environment (bin/python, bin/python3 ...)."""
    a, b = Path(python).parent.parent, Path(venv_python).parent.parent
    return a == b or (a.exists() and b.exists() and a.samefile(b))


@spec_command(app, "upgrade", name="option")
def upgrade(
    requirements: Annotated[
        list[str] | None,
        typer.Argument(
            help="Exact pins, NAME==VERSION, one or more.", metavar="REQ...", show_default=False
        ),
    ] = None,
    *,
    spec: SpecArgs,
    python: Annotated[
        str | None,
        typer.Option(
            "--python",
            metavar="PATH",
            help="Interpreter of the environment [--venv's, else this Python].",
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Print the plan and commands; exit 1 if it would change."),
    ] = False,
    smoke: Annotated[
        str | None,
        typer.Option(
            "--smoke",
            metavar="CMD",
            help="Command that must succeed afterwards, e.g. \"python -c 'import myapp'\" "
            "[the spec's smoke; '' for none].",
        ),
    ] = None,
    no_rollback: Annotated[
        bool, typer.Option("--no-rollback", help="On failure, leave the environment as it is.")
    ] = False,
    no_lock: Annotated[
        bool, typer.Option("--no-lock", help="Leave requirements.txt (pip-tools) alone.")
    ] = False,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the outcome as JSON on stdout, no progress.")
    ] = False,
    history: Annotated[
        Path | None,
        typer.Option(
            "--history",
            help="JSON-lines file to append to [VENV/opskit/upgrade-history.jsonl].",
            dir_okay=False,
        ),
    ] = None,
    find_links: Annotated[
        list[str] | None,
        typer.Option(
            "--find-links", "-f", metavar="DIR", help="Also look for wheels here; repeatable."
        ),
    ] = None,
    no_index: Annotated[
        bool, typer.Option("--no-index", help="Use --find-links only, no package index.")
    ] = False,
    no_wait: Annotated[
        bool,
        typer.Option("--no-wait", help="Exit 1 at once if another upgrade of the venv is running."),
    ] = False,
    recover: Annotated[
        bool,
        typer.Option(
            "--recover",
            help="Only restore the snapshot of an upgrade that died before its end.",
        ),
    ] = False,
    status: Annotated[
        bool,
        typer.Option(
            "--status", help="Show an unfinished upgrade, the lock holder and the snapshots."
        ),
    ] = False,
    release: Annotated[
        bool,
        typer.Option(
            "--release",
            help="Build a new release with the changed pins and deploy it (needs base).",
        ),
    ] = False,
) -> int | None:
    """Upgrade packages to exact pins, verified, and restore the old ones on any failure.

    Runs pip install --no-deps --force-reinstall (or uv pip install), then pip check and
    the smoke command; snapshots the replaced packages first (they may be on no index)
    and restores them offline when a step fails. Updates requirements.txt where
    pip-tools pins the project. With --release (the spec has a base) the pins go into a
    new release instead, deployed like opskit deploy; the live venv is never changed.
    Exit codes: 0 done (or nothing to do), 1 failed (restored unless --no-rollback),
    2 bad input, 130 interrupted; with --dry-run 1 means something would change.
    """
    import json

    from opskit.errors import UsageError
    from opskit.proc import SubprocessRunner
    from opskit.upgrade.lock import find_lock
    from opskit.upgrade.outcome import UpgradeFailed, UpgradeRequest, no_progress
    from opskit.upgrade.pins import parse_pins
    from opskit.upgrade.run import run_upgrade
    from opskit.upgrade.smoke import smoke_argv

    if (recover or status) and requirements:
        raise UsageError("--recover and --status take no REQ: run them on their own")
    if not (recover or status or requirements):
        raise UsageError("give the exact pins to install (NAME==VERSION), or --recover, --status")
    loaded, project = _project(spec)
    index_args: list[str] = ["--no-index"] if no_index else []
    for link in find_links or []:
        index_args += ["--find-links", str(Path(link).resolve())]
    if release:
        given = {"--python": python, "--recover": recover, "--status": status,
                 "--no-rollback": no_rollback, "--history": history}  # fmt: skip
        for flag, value in given.items():
            if value:
                raise UsageError(
                    f"{flag}: not with --release (a release is never changed in place)"
                )
        return _release(
            loaded, project, parse_pins(requirements or []), smoke, index_args,
            no_lock=no_lock, dry_run=dry_run, json_out=json_out,
        )  # fmt: skip
    target = _python(python, spec, loaded)
    if status:
        _status(target, json_out=json_out)
        return None
    if recover:
        _recover(target, wait=not no_wait, json_out=json_out)
        return None
    pins = parse_pins(requirements or [])
    command = smoke if smoke is not None else (loaded.smoke if loaded is not None else None)
    request = UpgradeRequest(
        pins=pins,
        python=target,
        wait=not no_wait,
        smoke=tuple(smoke_argv(command)) if command else None,
        smoke_cwd=str(project),
        rollback=not no_rollback,
        lock=None if no_lock else find_lock(project),
        history=history,
        pip_args=tuple(index_args),
        installer=_installer(spec, loaded),
    )

    def notify(message: str) -> None:
        # Even with --json: a Ctrl-C deserves an answer on the terminal.
        say(f"{'interrupt':<10} {message}")

    runner = SubprocessRunner(notify=notify)

    if dry_run:
        _dry_run(request, runner, json_out=json_out)
        return None

    def progress(step: str, message: str) -> None:
        say(f"{step:<10} {message}")

    try:
        outcome = run_upgrade(
            request,
            runner=runner,
            progress=no_progress if json_out else progress,
            notify=notify,
        )
    except UpgradeFailed as exc:
        if json_out:
            typer.echo(json.dumps(exc.outcome.as_dict(), indent=2))
        raise
    if json_out:
        typer.echo(json.dumps(outcome.as_dict(), indent=2))
    return None


def _release(
    loaded: AppSpec | None,
    project: Path,
    pins: tuple[Pin, ...],
    smoke: str | None,
    index_args: list[str],
    *,
    no_lock: bool,
    dry_run: bool,
    json_out: bool,
) -> int:
    """``upgrade --release``: the pins as a new release, through opskit deploy's path."""
    from dataclasses import replace

    from opskit.deploy.cli import _run
    from opskit.deploy.upgrade import upgrade_release
    from opskit.errors import UsageError
    from opskit.proc import SubprocessRunner
    from opskit.upgrade.lock import find_lock

    if loaded is None:
        raise UsageError("--release: needs the app's spec (an opskit.toml with base, or --name)")
    if smoke is not None:
        loaded = replace(loaded, smoke=smoke or None)
    spec = loaded
    runner = SubprocessRunner(say)
    return _run(
        json_out,
        lambda: upgrade_release(
            spec,
            pins,
            project_lock=None if no_lock else find_lock(project),
            index_args=index_args,
            dry_run=dry_run,
            runner=runner,
            say=say,
        ),
    )


def _installer(spec: SpecArgs, loaded: AppSpec | None) -> str | None:
    """--installer, else the spec's ``installer``; None lets the environment decide."""
    from opskit.spec import INSTALLERS
    from opskit.validate import validate_choice

    if loaded is not None:
        return loaded.installer
    given = spec.value("installer")
    return None if given is None else validate_choice("installer", given, INSTALLERS)


def _dry_run(request: UpgradeRequest, runner: Runner, *, json_out: bool) -> None:
    """Print the plan and the exact commands on stdout; change nothing."""
    import json

    from opskit.proc import shown
    from opskit.upgrade.outcome import Outcome
    from opskit.upgrade.run import dry_run_commands, plan_upgrade

    _, plan, installer = plan_upgrade(request, runner=runner)
    outcome = Outcome("dry-run", request.python, plan, installer=installer.describe())
    if plan.changed:
        outcome.commands = dry_run_commands(request, plan, installer)
    if json_out:
        typer.echo(json.dumps(outcome.as_dict(), indent=2))
    else:
        for note in installer.notes:
            say(f"{'uv':<10} {note}")
        for change in plan.changes:
            typer.echo(f"plan       {change.describe()}")
        for argv in outcome.commands:
            typer.echo(f"would run  {shown(argv)}")
    # pip-tools' convention: a dry run that finds work exits 1, so CI can gate on it.
    if plan.changed:
        raise typer.Exit(1)


def _status(python: str, *, json_out: bool) -> None:
    """Print what holds the venv now: an unfinished upgrade, the lock, the snapshots."""
    import json

    from opskit.upgrade.history import snapshots
    from opskit.upgrade.state import MARKER_NAME, lock_holder, read_marker, state_dir_for

    state = state_dir_for(python)
    marker = read_marker(state)
    holder = lock_holder(state)
    kept = snapshots(state / "snapshots")
    if json_out:
        data = {
            "python": python,
            "state": str(state),
            "unfinished": marker,
            "lock_holder": int(holder) if holder and holder.isdigit() else holder,
            "snapshots": [{"path": str(p), "bytes": n} for p, n in kept],
        }
        typer.echo(json.dumps(data, indent=2))
        return
    typer.echo(f"state      {state}")
    if holder is None:
        typer.echo("lock       free")
    else:
        typer.echo(f"lock       held by pid {holder} (an upgrade of this venv is running)")
    if marker is None:
        typer.echo("unfinished none")
    else:
        typer.echo(
            f"unfinished {state / MARKER_NAME}: pid {marker.get('pid')}, "
            f"started {marker.get('time')}, snapshot {marker.get('snapshot')}"
            + ("" if holder else " (its run is gone: opskit upgrade --recover restores it)")
        )
    for path, size in kept:
        typer.echo(f"snapshot   {path} ({size / 1e6:.1f} MB)")
    if not kept:
        typer.echo("snapshot   none")


def _recover(python: str, *, wait: bool, json_out: bool) -> None:
    """Restore the snapshot of a dead upgrade, under the venv lock; say so if there is none."""
    import json

    from opskit.proc import SubprocessRunner
    from opskit.upgrade.outcome import UpgradeFailed
    from opskit.upgrade.run import recover
    from opskit.upgrade.state import state_dir_for, venv_lock

    def progress(step: str, message: str) -> None:
        if not json_out:
            say(f"{step:<10} {message}")

    state = state_dir_for(python)
    runner = SubprocessRunner(notify=lambda message: say(f"{'interrupt':<10} {message}"))
    try:
        with venv_lock(state, wait=wait, notify=lambda m: say(f"{'wait':<10} {m}")):
            found = recover(python, state, runner=runner, progress=progress)
    except UpgradeFailed as exc:
        if json_out:
            typer.echo(json.dumps(exc.outcome.as_dict(), indent=2))
        raise
    if json_out:
        typer.echo(json.dumps({"python": python, "recovered": found}, indent=2))
    elif found is None:
        say("recover    nothing to recover: no upgrade of this venv was left unfinished")
