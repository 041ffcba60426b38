"""What every command shares: the typer app, the spec options (defined once), output helpers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from opskit.errors import UsageError
from opskit.render import RenderedFile
from opskit.spec import AppSpec

app = typer.Typer(
    name="opskit",
    help="Production-hardened deployment artifacts for Python web services.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

# --- options shared by every command that reads the app spec (defined once) --------------

Name = Annotated[
    str | None, typer.Argument(help="Service name (unit name); default: name in the config.")
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="opskit.toml or pyproject.toml to read.", dir_okay=False),
]
ServerOpt = Annotated[
    str | None, typer.Option(help="gunicorn, uvicorn, uwsgi or command.", show_default=False)
]
AppOpt = Annotated[str | None, typer.Option("--app", help="Import path, e.g. 'pkg.wsgi:app'.")]
CommandOpt = Annotated[
    str | None, typer.Option("--command", help="Command line for server 'command'.")
]
HostOpt = Annotated[str | None, typer.Option(help="Address to bind [127.0.0.1].")]
PortOpt = Annotated[int | None, typer.Option(help="Port to bind [8000].")]
UnixOpt = Annotated[str | None, typer.Option("--unix-socket", help="Bind a unix socket instead.")]
WorkersOpt = Annotated[int | None, typer.Option(help="Worker processes [2].")]
UserOpt = Annotated[str | None, typer.Option(help="Run as this user [a dynamic user].")]
GroupOpt = Annotated[str | None, typer.Option(help="Run with this group.")]
WorkdirOpt = Annotated[
    str | None, typer.Option("--workdir", help="Working directory, absolute [/srv/app].")
]
VenvOpt = Annotated[str | None, typer.Option(help="Virtual environment [WORKDIR/.venv].")]
EnvOpt = Annotated[list[str] | None, typer.Option("--env", "-e", help="NAME=VALUE, repeatable.")]
EnvFileOpt = Annotated[str | None, typer.Option("--env-file", help="EnvironmentFile= path.")]
GraceOpt = Annotated[
    int | None, typer.Option("--graceful-timeout", help="Seconds to drain on stop [30].")
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="Any spec key, KEY=VALUE with a TOML value (e.g. --set hardening.allow-wx=true).",
    ),
]


def _parse_set(items: list[str] | None) -> dict[str, Any]:
    """Turn ``--set key=toml-value`` items into a nested override mapping."""
    from opskit.config import parse_assignment

    out: dict[str, Any] = {}
    for item in items or []:
        key, value = parse_assignment(item)
        if "." in key:
            table, _, sub = key.partition(".")
            out.setdefault(table, {})[sub] = value
        else:
            out[key] = value
    return out


def load(
    name: str | None,
    config: Path | None,
    sets: list[str] | None = None,
    **overrides: Any,
) -> AppSpec:
    """Build the spec from the config file under the command-line overrides."""
    from opskit.config import load_spec

    merged: dict[str, Any] = {"name": name, **overrides}
    for key, value in _parse_set(sets).items():
        current = merged.get(key)
        if isinstance(value, dict) and isinstance(current, list):
            # --env A=1 arrives as a list, --set environment.B=2 as a table: keep both.
            pairs = dict(item.partition("=")[::2] for item in current if "=" in item)
            bad = [item for item in current if "=" not in item]
            if bad:
                raise UsageError(f"--env: expected NAME=VALUE, got {bad[0]!r}")
            merged[key] = {**pairs, **value}
        elif isinstance(value, dict) and isinstance(current, dict):
            current.update(value)
        else:
            merged[key] = value
    return load_spec(merged, config=config)


# --- output helpers --------------------------------------------------------------------


def say(message: str) -> None:
    """Progress and reports go to stderr, so stdout stays clean for ``-o -``."""
    typer.echo(message, err=True)


def emit(files: list[RenderedFile], output: str, *, force: bool, check: bool, diff: bool) -> None:
    """Send rendered files to stdout, or check, diff or write them into a directory."""
    from opskit import write as writer

    if output == "-" and (check or diff):
        raise UsageError("--check and --diff compare files in a directory; not with -o -")
    if output == "-":
        writer.to_stream(files)
        return
    directory = Path(output)
    if diff:
        text = writer.diff(files, directory)
        typer.echo(text, nl=False)
        if text:
            raise typer.Exit(1)
        return
    if check:
        for item in writer.check(files, directory):
            say(f"identical  {item.path}")
        return
    for item in writer.write(files, directory, force=force):
        say(f"{item.action.value:<10} {item.path}")


OutputOpt = Annotated[
    str | None,
    typer.Option("--output", "-o", help="Directory to write into, or '-' for stdout."),
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite files that differ.")]
CheckOpt = Annotated[
    bool, typer.Option("--check", help="Exit 1 if the files on disk differ; write nothing.")
]
DiffOpt = Annotated[
    bool, typer.Option("--diff", help="Show how the files on disk differ; write nothing.")
]
