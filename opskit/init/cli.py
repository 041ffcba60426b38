"""``opskit init``: add a starter [tool.opskit] table to the project."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from opskit.commands import app
from opskit.options import say


@app.command()
def init(
    directory: Annotated[
        Path, typer.Argument(help="The project directory.", file_okay=False)
    ] = Path(),
    *,
    force: Annotated[
        bool, typer.Option("--force", help="Detect again and replace an existing table.")
    ] = False,
) -> None:
    """Read the project and write its app spec: [tool.opskit] in pyproject.toml, else opskit.toml.

    The app, its server, venv and routes are read from the files (nothing is imported);
    each finding is printed with the file it came from.
    """
    from opskit.init.project import init_project

    path, action, lines = init_project(directory, force=force)
    for label, text in lines:
        say(f"{label:<10} {text}")
    say(f"{action:<10} {path}{' [tool.opskit]' if path.name == 'pyproject.toml' else ''}")
