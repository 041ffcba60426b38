"""The command line's edge: which feature a command belongs to, and the one exception funnel.

Each feature's commands live in its own ``opskit/FEATURE/cli.py`` (the only modules that
import typer, with opskit.options) and register on the shared app when imported. A run
imports only the feature it names, so start-up does not grow with the number of commands.
"""

from __future__ import annotations

import copy
import importlib
import os
import sys
from typing import Annotated

import typer

from opskit import __version__
from opskit.commands import app
from opskit.errors import ExitCode, OpskitError

#: Command name -> the module that registers it.
COMMANDS = {
    "init": "opskit.init.cli",
    "systemd": "opskit.systemd.cli",
    "logging": "opskit.logconfig.cli",
    "upgrade": "opskit.upgrade.cli",
    "reload-script": "opskit.reload.cli",
    "makefile": "opskit.bundle.cli",
    "bundle": "opskit.bundle.cli",
    "doctor": "opskit.doctor.cli",
    "deploy": "opskit.deploy.cli",
    "rollback": "opskit.deploy.cli",
    "releases": "opskit.deploy.cli",
    "ansible": "opskit.fleet.cli",
}


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


def _app_for(argv: list[str]) -> typer.Typer:
    """The app to build for this run: only the command argv names, when it names one.

    typer inspects the signature and options of every registered command before it
    parses anything, the largest part of start-up beyond importing typer and jinja2
    (bench/bench_startup.py); a run needs only its own command, and only its module.
    Root options, completion and unknown names get the whole app and its messages.
    """
    word = argv[0] if argv else ""
    if word not in COMMANDS or "_OPSKIT_COMPLETE" in os.environ:
        for module in dict.fromkeys(COMMANDS.values()):
            importlib.import_module(module)
        return app
    importlib.import_module(COMMANDS[word])
    lean = copy.copy(app)
    lean.registered_commands = [
        info
        for info in app.registered_commands
        if info.callback is not None
        and (info.name or typer.main.get_command_name(info.callback.__name__)) == word
    ]
    lean.registered_groups = [
        info
        for info in app.registered_groups
        if (info.name or (info.typer_instance and info.typer_instance.info.name)) == word
    ]
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
        return ExitCode.USAGE
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        typer.echo("opskit: aborted", err=True)
        return ExitCode.INTERRUPTED
    return result if isinstance(result, int) else ExitCode.OK


def main() -> None:
    """Console-script entry point."""
    sys.exit(run())
