"""Commands: opskit reload-script (registered on the shared app)."""

from __future__ import annotations

from typing import Annotated

import typer

from opskit.options import (
    AppOpt,
    CheckOpt,
    ConfigOpt,
    DiffOpt,
    EnvFileOpt,
    EnvOpt,
    ForceOpt,
    GraceOpt,
    HostOpt,
    Name,
    OutputOpt,
    PortOpt,
    ServerOpt,
    SetOpt,
    UnixOpt,
    VenvOpt,
    WorkdirOpt,
    WorkersOpt,
    app,
    emit,
    load,
    say,
)


@app.command("reload-script")
def reload_script(
    name: Name = None,
    *,
    config: ConfigOpt = None,
    server: ServerOpt = None,
    app_path: AppOpt = None,
    host: HostOpt = None,
    port: PortOpt = None,
    unix_socket: UnixOpt = None,
    workers: WorkersOpt = None,
    workdir: WorkdirOpt = None,
    venv: VenvOpt = None,
    env: EnvOpt = None,
    env_file: EnvFileOpt = None,
    graceful_timeout: GraceOpt = None,
    supervisor: Annotated[
        str | None, typer.Option(help="Who runs the server: systemd or pidfile [systemd].")
    ] = None,
    pidfile: Annotated[
        str | None, typer.Option(help="The master's pidfile [/run/NAME/SERVER.pid].")
    ] = None,
    deploy_id_file: Annotated[
        str | None,
        typer.Option("--deploy-id-file", help="File the app reads its version from at import."),
    ] = None,
    socket: Annotated[
        bool | None, typer.Option("--socket/--no-socket", help="A .socket unit holds the port.")
    ] = None,
    preload: Annotated[
        bool | None, typer.Option("--preload/--no-preload", help="gunicorn --preload.")
    ] = None,
    lazy_apps: Annotated[
        bool | None, typer.Option("--lazy-apps/--no-lazy-apps", help="uWSGI lazy-apps.")
    ] = None,
    sets: SetOpt = None,
    output: OutputOpt = None,
    force: ForceOpt = False,
    check: CheckOpt = False,
    diff: DiffOpt = False,
) -> None:
    """Write reload-NAME.sh: reload gracefully, then prove the new code serves."""
    from opskit.reload.plan import plan_reload, render_reload

    spec = load(
        name,
        config,
        sets,
        server=server,
        app=app_path,
        host=host,
        port=port,
        unix_socket=unix_socket,
        workers=workers,
        working_directory=workdir,
        venv=venv,
        environment=env,
        environment_file=env_file,
        graceful_timeout=graceful_timeout,
        supervisor=supervisor,
        pidfile=pidfile,
        deploy_id_file=deploy_id_file,
        socket=socket,
        preload=preload,
        lazy_apps=lazy_apps,
    )
    files = render_reload(spec)
    for warning in plan_reload(spec).warnings:
        say(f"warning: {warning}")
    target = output if output is not None else "deploy/reload"
    if output is None and not (check or diff):
        say(f"writing to {target}/ (the default; -o DIR or -o - to change)")
    emit(files, target, force=force, check=check, diff=diff)
