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
        Path, typer.Argument(help="Project directory holding pyproject.toml.", file_okay=False)
    ] = Path(),
    *,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing table.")] = False,
) -> None:
    """Add a starter [tool.opskit] table to pyproject.toml, keeping the rest of the file."""
    from opskit.init.project import init_pyproject

    path, action = init_pyproject(directory, force=force)
    say(f"{action:<10} {path} [tool.opskit]")
