"""The smoke command: split like a shell would, found on the target's PATH, run against it."""

from __future__ import annotations

import os
import shlex
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from opskit.errors import UsageError
from opskit.proc import Completed, Runner
from opskit.upgrade.environment import Environment

#: How long a smoke command may run before it counts as failed.
SMOKE_TIMEOUT = 300.0


def smoke_argv(command: str) -> list[str]:
    """Split a smoke command line like a shell would (no shell runs it); UsageError if bad."""
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise UsageError(f"--smoke: cannot split {command!r}: {exc}") from None
    if not argv:
        raise UsageError("--smoke: empty command")
    return argv


def smoke_environ(env: Environment, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The smoke command's environment: the target's bin first on PATH, as if activated."""
    out = dict(os.environ if base is None else base)
    out.pop("PYTHONHOME", None)
    bindir = str(Path(env.python).parent)
    out["PATH"] = os.pathsep.join([bindir, out.get("PATH", os.defpath)])
    if env.is_venv:
        out["VIRTUAL_ENV"] = env.prefix
    return out


def validate_smoke(argv: Sequence[str], env: Environment) -> None:
    """Fail early, before any change, when the smoke command's program cannot be found."""
    path = smoke_environ(env)["PATH"]
    if shutil.which(argv[0], path=path) is None:
        raise UsageError(f"--smoke: {argv[0]!r} not found (looked on {env.python}'s PATH)")


def run_smoke(
    argv: Sequence[str], env: Environment, cwd: str | None, *, runner: Runner
) -> Completed:
    """Run the smoke command against the upgraded environment."""
    return runner(argv, env=smoke_environ(env), cwd=cwd, timeout=SMOKE_TIMEOUT)
