"""``opskit makefile`` and ``opskit bundle``: ops.mk, and every artifact in one directory."""

from __future__ import annotations

from typing import TYPE_CHECKING

from opskit.commands import app, spec_command
from opskit.options import Output, SpecArgs, say

if TYPE_CHECKING:
    from opskit.bundle.artifacts import Origin
    from opskit.spec import AppSpec

DEFAULT_DIR = "deploy"


def _spec_and_origin(spec: SpecArgs, out: Output) -> tuple[AppSpec, Origin]:
    """Load the spec, and record the command line that rebuilds the same spec.

    ops.mk passes that argv to every opskit call, so ``make ops-check`` compares the
    files on disk with what this very command line generated.
    """
    from opskit.bundle.artifacts import Origin

    directory = out.target if out.target != "-" else DEFAULT_DIR
    config = str(spec.config) if spec.config else None
    return spec.load(), Origin(directory=directory, config=config, args=spec.argv())


def _say_include(out: Output, origin: Origin) -> None:
    from opskit.bundle.makefile import include_line

    if out.writes:
        say(f"add this line to your Makefile:  {include_line(origin.directory)}")


@spec_command(app, "makefile", output=DEFAULT_DIR)
def makefile(*, spec: SpecArgs, out: Output) -> None:
    """Write ops.mk: make targets to regenerate, check, install, reload and diagnose the app."""
    from opskit.bundle.makefile import render_makefile

    loaded, origin = _spec_and_origin(spec, out)
    files = render_makefile(
        loaded, directory=origin.directory, config=origin.config, args=origin.args
    )
    out.emit(files, announce=False)
    _say_include(out, origin)


@spec_command(app, "bundle", output=DEFAULT_DIR)
def bundle(*, spec: SpecArgs, out: Output) -> None:
    """Write every artifact of the app into one directory: units, logging, reload, ops.mk."""
    from opskit.appcheck import warn_about_app
    from opskit.bundle.artifacts import render_bundle

    loaded, origin = _spec_and_origin(spec, out)
    warn_about_app(loaded, say)
    result = render_bundle(loaded, origin)
    for artifact, reason in result.skipped:
        say(f"{'skipped':<10} {artifact}: {reason}")
    out.emit(result.files, announce=False)
    _say_include(out, origin)
