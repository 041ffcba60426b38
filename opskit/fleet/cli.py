"""``opskit ansible``: the playbooks of a fleet rollout; ``--validate`` has Ansible read them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from opskit.commands import app, spec_command
from opskit.options import Output, SpecArgs, say

DEFAULT_DIR = "ansible"


@spec_command(app, "ansible", output=DEFAULT_DIR)
def ansible(
    *,
    spec: SpecArgs,
    out: Output,
    validate: Annotated[
        bool,
        typer.Option(
            "--validate",
            help="Then run ansible-playbook --syntax-check on the files (needs opskit[fleet]).",
        ),
    ] = False,
) -> None:
    """Write an Ansible rolling deploy: opskit deploy per host, gated, rolled back on failure."""
    from opskit import __version__
    from opskit.errors import UsageError
    from opskit.fleet.ansible import render_ansible

    if validate and out.target == "-":
        raise UsageError("--validate reads the files in a directory; not with -o -")
    program = find_ansible_playbook() if validate else None
    if validate and program is None:
        # Before anything is written: a run that cannot do what it was asked writes nothing.
        raise UsageError("--validate: ansible-playbook not found (pip install 'opskit[fleet]')")
    loaded = spec.load()
    project = (spec.config.resolve().parent if spec.config else Path.cwd()).resolve()
    files = render_ansible(loaded, spec.raw(), project=project, version=__version__)
    out.emit(files, announce=False)
    if program is not None:
        _validate(program, Path(out.target))


def find_ansible_playbook() -> str | None:
    """ansible-playbook beside this Python (opskit[fleet] in its venv), else on PATH."""
    import shutil
    import sys

    beside = Path(sys.executable).parent / "ansible-playbook"
    return str(beside) if beside.is_file() else shutil.which("ansible-playbook")


def _validate(program: str, directory: Path) -> None:
    """ansible-playbook --syntax-check of both playbooks against the example inventory."""
    import subprocess

    from opskit.errors import OperationFailed
    from opskit.fleet.ansible import INVENTORY, PLAYBOOKS

    done = subprocess.run(
        [program, "--syntax-check", "-i", INVENTORY, *PLAYBOOKS],
        cwd=str(directory), capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        raise OperationFailed(f"ansible-playbook --syntax-check: {' '.join(lines[-3:])}")
    say(f"{'valid':<10} {', '.join(PLAYBOOKS)} (ansible-playbook --syntax-check)")
