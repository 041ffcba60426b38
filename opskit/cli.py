"""The command line: parse, call one core function, map the result to an exit code.

Shared options and helpers live in opskit.options; the commands of each later
artifact live in opskit/cli_*.py and register on the same app when imported below.
"""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from opskit import __version__
from opskit.errors import EXIT_USAGE, OpskitError
from opskit.options import (
    AppOpt,
    CheckOpt,
    CommandOpt,
    ConfigOpt,
    DiffOpt,
    EnvFileOpt,
    EnvOpt,
    ForceOpt,
    GraceOpt,
    GroupOpt,
    HostOpt,
    Name,
    OutputOpt,
    PortOpt,
    ServerOpt,
    SetOpt,
    UnixOpt,
    UserOpt,
    VenvOpt,
    WorkdirOpt,
    WorkersOpt,
    app,
    emit,
    load,
    say,
)

if TYPE_CHECKING:
    from opskit.render import RenderedFile

# --- commands --------------------------------------------------------------------------


def _version(value: bool) -> None:
    if value:
        typer.echo(f"opskit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """Production-hardened deployment artifacts for Python web services."""


@app.command()
def systemd(
    name: Name = None,
    *,
    config: ConfigOpt = None,
    server: ServerOpt = None,
    app_path: AppOpt = None,
    command: CommandOpt = None,
    host: HostOpt = None,
    port: PortOpt = None,
    unix_socket: UnixOpt = None,
    workers: WorkersOpt = None,
    user: UserOpt = None,
    group: GroupOpt = None,
    workdir: WorkdirOpt = None,
    venv: VenvOpt = None,
    env: EnvOpt = None,
    env_file: EnvFileOpt = None,
    graceful_timeout: GraceOpt = None,
    restart_sec: Annotated[
        str | None, typer.Option("--restart-sec", help="RestartSec= [5].")
    ] = None,
    socket: Annotated[
        bool | None, typer.Option("--socket/--no-socket", help="Also write a .socket unit.")
    ] = None,
    profile: Annotated[
        str | None, typer.Option(help="Hardening profile: default, relaxed or off.")
    ] = None,
    writable: Annotated[
        list[str] | None, typer.Option("--writable", help="ReadWritePaths=, repeatable.")
    ] = None,
    allow_outbound: Annotated[
        bool | None,
        typer.Option("--allow-outbound", help="Keep the network with --socket (databases)."),
    ] = None,
    allow_home: Annotated[
        bool | None, typer.Option("--allow-home", help="ProtectHome=read-only instead of yes.")
    ] = None,
    allow_wx: Annotated[
        bool | None,
        typer.Option("--allow-wx", help="Drop MemoryDenyWriteExecute= (cffi callbacks, JITs)."),
    ] = None,
    sets: SetOpt = None,
    output: OutputOpt = None,
    force: ForceOpt = False,
    check: CheckOpt = False,
    diff: DiffOpt = False,
    install: Annotated[
        bool,
        typer.Option(
            "--install",
            help="Write into the unit directory of the running systemd and daemon-reload.",
        ),
    ] = False,
    unit_dir: Annotated[
        Path | None,
        typer.Option(
            "--unit-dir",
            help="Unit directory for --install [/etc/systemd/system].",
            file_okay=False,
        ),
    ] = None,
    enable: Annotated[
        bool, typer.Option("--enable", help="With --install: enable and start the units.")
    ] = False,
    restart: Annotated[
        bool,
        typer.Option("--restart", help="With --install: restart running units whose file changed."),
    ] = False,
) -> None:
    """Write NAME.service (and NAME.socket with --socket): always restarting, hardened.

    With --install, write them where systemd reads them, daemon-reload, and with --enable
    enable and start them; a second identical run changes nothing.
    """
    from opskit.systemd.units import render_units

    _check_install_flags(
        install=install,
        unit_dir=unit_dir,
        enable=enable,
        restart=restart,
        output=output,
        check=check,
        diff=diff,
    )

    spec = load(
        name,
        config,
        sets,
        server=server,
        app=app_path,
        command=command,
        host=host,
        port=port,
        unix_socket=unix_socket,
        workers=workers,
        user=user,
        group=group,
        working_directory=workdir,
        venv=venv,
        environment=env,
        environment_file=env_file,
        graceful_timeout=graceful_timeout,
        restart_sec=restart_sec,
        socket=socket,
        hardening={
            "profile": profile,
            "writable_paths": writable,
            "allow_outbound": allow_outbound,
            "allow_home": allow_home,
            "allow_wx": allow_wx,
        },
    )
    files = render_units(spec)
    if install:
        _install(files, unit_dir, force=force, enable=enable, restart=restart)
        return
    target = output if output is not None else "deploy/systemd"
    if output is None and not (check or diff):
        say(f"writing to {target}/ (the default; -o DIR or -o - to change)")
    emit(files, target, force=force, check=check, diff=diff)
    if target != "-" and not (check or diff):
        from opskit.systemd.analyze import security_score

        for file in files:
            if file.name.endswith(".service"):
                score = security_score(Path(target) / file.name)
                if score is not None:
                    say(f"security   {file.name}: exposure {score} (systemd-analyze security)")


def _check_install_flags(
    *,
    install: bool,
    unit_dir: Path | None,
    enable: bool,
    restart: bool,
    output: str | None,
    check: bool,
    diff: bool,
) -> None:
    from opskit.errors import UsageError

    if not install:
        for flag, given in (("--unit-dir", unit_dir), ("--enable", enable), ("--restart", restart)):
            if given:
                raise UsageError(f"{flag} needs --install")
        return
    for flag, given in (("--output", output is not None), ("--check", check), ("--diff", diff)):
        if given:
            raise UsageError(f"--install writes into --unit-dir; it cannot be combined with {flag}")


def _install(
    files: list[RenderedFile], unit_dir: Path | None, *, force: bool, enable: bool, restart: bool
) -> None:
    from opskit.systemd import install as installer
    from opskit.systemd.analyze import security_score

    installer.check_can_install()
    directory = unit_dir or installer.SYSTEM_UNIT_DIR
    done = installer.install_units(
        files,
        directory,
        force=force,
        enable=enable,
        restart=restart,
        runner=installer.run_systemctl,
    )
    for item in done.files:
        say(f"{item.action.value:<10} {item.path}")
    for step in done.steps:
        say(f"systemctl  {step}")
    if not done.steps:
        say("systemctl  nothing to do")
    for unit in done.stale:
        say(f"note       {unit} runs its old definition until restarted (--restart)")
    for item in done.files:
        if item.file.name.endswith(".service"):
            score = security_score(item.path)
            if score is not None:
                say(f"security   {item.file.name}: exposure {score} (systemd-analyze security)")


@app.command()
def init(
    directory: Annotated[
        Path, typer.Argument(help="Project directory holding pyproject.toml.", file_okay=False)
    ] = Path(),
    *,
    force: ForceOpt = False,
) -> None:
    """Add a starter [tool.opskit] table to pyproject.toml, keeping the rest of the file."""
    from opskit.init.project import init_pyproject

    path, action = init_pyproject(directory, force=force)
    say(f"{action:<10} {path} [tool.opskit]")


# --- the other artifacts' commands register on ``app`` when imported ----------------------

from opskit.bundle import cli as cli_ops  # noqa: E402
from opskit.logconfig import cli as cli_logging  # noqa: E402
from opskit.reload import cli as cli_reload  # noqa: E402
from opskit.upgrade import cli as cli_upgrade  # noqa: E402

__all__ = ["app", "cli_logging", "cli_ops", "cli_reload", "cli_upgrade", "main", "run"]


# --- the exception funnel ----------------------------------------------------------------


def _app_for(argv: list[str]) -> typer.Typer:
    """The app to build for this run: only the command argv names, when it names one.

    typer inspects the signature and options of every registered command before it
    parses anything, the largest part of start-up beyond importing typer and jinja2
    (bench/bench_startup.py), and it grows with each command; a run needs only its own.
    Root options, completion and unknown names get the whole app and its messages.
    """
    if not argv or argv[0].startswith("-") or "_OPSKIT_COMPLETE" in os.environ:
        return app
    word = argv[0]
    commands = [
        info
        for info in app.registered_commands
        if info.callback is not None
        and (info.name or typer.main.get_command_name(info.callback.__name__)) == word
    ]
    groups = [
        info
        for info in app.registered_groups
        if (info.name or (info.typer_instance and info.typer_instance.info.name)) == word
    ]
    if not commands and not groups:
        return app
    lean = copy.copy(app)
    lean.registered_commands = commands
    lean.registered_groups = groups
    return lean


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code; the one place errors become messages."""
    command = typer.main.get_command(_app_for(sys.argv[1:] if argv is None else argv))
    try:
        result = command.main(args=argv, prog_name="opskit", standalone_mode=False)
    except OpskitError as exc:
        typer.echo(f"opskit: error: {exc}", err=True)
        return exc.exit_code
    except typer.TyperException as exc:
        # typer's own usage errors (unknown option, bad value). With no arguments at all
        # the help is the most useful answer, still with the usage exit code.
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
            typer.echo(ctx.get_help(), err=True)
        else:
            typer.echo(f"opskit: error: {exc.format_message()}", err=True)
        return EXIT_USAGE
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        typer.echo("opskit: aborted", err=True)
        return 130
    return result if isinstance(result, int) else 0


def main() -> None:
    """Console-script entry point."""
    sys.exit(run())
