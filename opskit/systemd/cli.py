"""``opskit systemd``: write the units, or install them into the running systemd."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from opskit.commands import app, spec_command
from opskit.options import Output, SpecArgs, say

if TYPE_CHECKING:
    from opskit.render import RenderedFile
    from opskit.spec import AppSpec


@spec_command(app, "systemd", output="deploy/systemd")
def systemd(
    *,
    spec: SpecArgs,
    out: Output,
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

    _validate_install_flags(install, unit_dir, enable, restart, out)
    from opskit.systemd.dependencies import project_dir
    from opskit.systemd.hardening import warnings_about
    from opskit.systemd.network import network_needs

    loaded = spec.load()
    decision = network_needs(loaded, project_dir(loaded))
    files = render_units(loaded, decision)
    for note in decision.notes:
        say(f"network    {note}")
    for warning in warnings_about(loaded):
        say(f"warning    {warning}")
    _warn_about_log_config(loaded)
    if install:
        _install(loaded, files, unit_dir, force=out.force, enable=enable, restart=restart)
        return
    from opskit.appcheck import warn_about_app

    warn_about_app(loaded, say)
    out.emit(files)
    if out.writes:
        for file in files:
            _say_score(Path(out.target) / file.name)


def _say_score(path: Path) -> None:
    from opskit.systemd.analyze import security_score

    if path.name.endswith(".service"):
        score = security_score(path)
        if score is not None:
            say(f"security   {path.name}: exposure {score} (systemd-analyze security)")


def _validate_install_flags(
    install: bool, unit_dir: Path | None, enable: bool, restart: bool, out: Output
) -> None:
    from opskit.errors import UsageError

    if not install:
        for flag, given in (("--unit-dir", unit_dir), ("--enable", enable), ("--restart", restart)):
            if given:
                raise UsageError(f"{flag} needs --install")
        return
    given_out = (
        ("--output", out.directory is not None),
        ("--check", out.check),
        ("--diff", out.diff),
    )
    for flag, given in given_out:
        if given:
            raise UsageError(f"--install writes into --unit-dir; it cannot be combined with {flag}")


def _install(
    spec: AppSpec,
    files: list[RenderedFile],
    unit_dir: Path | None,
    *,
    force: bool,
    enable: bool,
    restart: bool,
) -> None:
    from opskit.appcheck import import_app
    from opskit.errors import OperationFailed
    from opskit.proc import SubprocessRunner
    from opskit.systemd import install as installer

    installer.validate_can_install()
    # Before anything is written: an app that does not import would only loop.
    problems = import_app(spec)
    for problem in problems:
        if not problem.is_error:
            say(f"warning: {problem.message}")
    errors = [p.message for p in problems if p.is_error]
    if errors:
        raise OperationFailed(f"{errors[0]}; nothing installed")
    done = installer.install_units(
        files,
        unit_dir or installer.SYSTEM_UNIT_DIR,
        force=force,
        enable=enable,
        restart=restart,
        runner=SubprocessRunner(notify=lambda message: say(f"interrupt  {message}")),
        spec=spec,
        progress=lambda message: say(f"{'systemctl':<10} {message}"),
    )
    for item in done.files:
        say(f"{item.action.value:<10} {item.path}")
    for step in done.steps:
        say(f"systemctl  {step}")
    if not done.steps:
        say("systemctl  nothing to do")
    if done.serving:
        say(f"serving    {done.serving}")
    for unit in done.stale:
        say(f"note       {unit} runs its old definition until restarted (--restart)")
    for item in done.files:
        _say_score(item.path)


def _warn_about_log_config(spec: AppSpec) -> None:
    """Say when log-config's directory is here but lacks what the unit imports from it.

    uWSGI (and a command) load the config through ``--import opskit_logsetup``; when that
    module is missing uWSGI logs a ModuleNotFoundError and serves on, unconfigured.
    """
    if not spec.log_config or spec.server not in ("uwsgi", "command"):
        return
    directory = Path(spec.log_config).parent
    if directory.is_dir() and not (directory / "opskit_logsetup.py").is_file():
        say(
            f"warning    log-config: {directory} has no opskit_logsetup.py, which {spec.server} "
            "imports to apply the config: run opskit logging init for this spec there"
        )
