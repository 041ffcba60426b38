"""``opskit deploy``, ``opskit rollback`` and ``opskit releases``: releases beside the live one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from opskit.commands import app, spec_command
from opskit.options import SpecArgs, say

if TYPE_CHECKING:
    from opskit.deploy.switch import Outcome

_Json = Annotated[bool, typer.Option("--json", help="Print the outcome as JSON on stdout.")]


def _project(spec: SpecArgs) -> Path:
    from opskit.config import find_config

    source = spec.config if spec.config is not None else find_config(Path.cwd())
    return source.resolve().parent if source is not None else Path.cwd()


def _finish(outcome: Outcome, json_out: bool) -> int:
    if json_out:
        typer.echo(json.dumps(outcome.as_dict(), indent=2, sort_keys=True))
    return 1 if outcome.status in ("refused", "rolled-back") else 0


def _run(json_out: bool, call: Any) -> int:
    from opskit.deploy.switch import DeployFailed

    try:
        return _finish(call(), json_out)
    except DeployFailed as exc:
        if json_out:
            typer.echo(json.dumps(exc.outcome.as_dict(), indent=2, sort_keys=True))
        raise


@spec_command(app, "deploy", name="option")
def deploy(
    source: Annotated[
        str | None,
        typer.Argument(
            help="A wheel, an sdist, a project directory or a git ref [the project directory].",
            show_default=False,
        ),
    ] = None,
    *,
    spec: SpecArgs,
    requirements: Annotated[
        Path | None,
        typer.Option(
            "--requirements", metavar="FILE", help="The lock [the source's requirements.txt]."
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say which release it would build or reuse.")
    ] = False,
    json_out: _Json = False,
) -> int:
    """Build a release beside the live one, prove it, switch BASE/current, reload, verify."""
    from opskit.deploy import run
    from opskit.proc import SubprocessRunner

    loaded = spec.load()
    project = _project(spec)
    runner = SubprocessRunner(say)
    return _run(
        json_out,
        lambda: run.deploy(
            loaded,
            source,
            project,
            requirements=requirements,
            dry_run=dry_run,
            runner=runner,
            say=say,
        ),
    )


@spec_command(app, "rollback", name="option")
def rollback(
    release: Annotated[
        str | None,
        typer.Argument(help="The release ID [the one live before].", show_default=False),
    ] = None,
    *,
    spec: SpecArgs,
    json_out: _Json = False,
) -> int:
    """Switch BASE/current back to an earlier release and reload it, verified."""
    from opskit.deploy import run
    from opskit.proc import SubprocessRunner

    loaded = spec.load()
    runner = SubprocessRunner(say)
    return _run(json_out, lambda: run.rollback(loaded, release, runner=runner, say=say))


@spec_command(app, "releases")
def releases(*, spec: SpecArgs, json_out: _Json = False) -> int:
    """List the releases: the live one, the previous one, and which one each process serves."""
    from opskit.deploy import run
    from opskit.proc import SubprocessRunner

    data = run.releases(spec.load(), runner=SubprocessRunner(say), say=say)
    if json_out:
        typer.echo(json.dumps(data, indent=2, sort_keys=True))
        return 0
    if not data["releases"]:
        say(f"no releases in {data['base']}/releases yet (opskit deploy)")
    for row in data["releases"]:
        mark = "*" if row["live"] else ("-" if row["previous"] else " ")
        pids = f"  serving: pid {', '.join(map(str, row['pids']))}" if row["pids"] else ""
        typer.echo(f"{mark} {row['id']}  {row['source']}{pids}")
    if data["outside_releases"]:
        pids = ", ".join(map(str, data["outside_releases"]))
        typer.echo(f"! processes of the service outside every release: pid {pids}")
    if data["journal"] is not None:
        typer.echo(f"! an unfinished switch: {data['journal']} (opskit deploy repairs it)")
    return 0
