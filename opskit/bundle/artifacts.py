"""``opskit bundle``: every artifact of an app, from its one spec, rendered for one directory."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from opskit.errors import OpskitError, SpecError
from opskit.render import RenderedFile
from opskit.spec import AppSpec


@dataclass(frozen=True)
class Origin:
    """Where the spec came from and where the bundle goes: what ops.mk needs to regenerate."""

    directory: str = "deploy"
    config: str | None = None
    args: tuple[str, ...] = ()


Generator = Callable[[AppSpec, Origin], list[RenderedFile]]
#: (what it is, how to render it, whether the bundle goes on when it refuses the spec)
Artifact = tuple[str, Generator, bool]


def _lazy(target: str) -> Generator:
    """A generator imported on first use ("module:function" taking the spec only).

    Importing every generator up front would slow down every opskit start-up.
    """
    module_name, _, function = target.partition(":")

    def generate(spec: AppSpec, origin: Origin) -> list[RenderedFile]:
        render: Callable[[AppSpec], list[RenderedFile]] = getattr(
            importlib.import_module(module_name), function
        )
        return list(render(spec))

    return generate


def _ops_mk(spec: AppSpec, origin: Origin) -> list[RenderedFile]:
    from opskit.bundle.makefile import render_makefile

    return render_makefile(spec, directory=origin.directory, config=origin.config, args=origin.args)


#: The artifacts of a bundle, in the order they are written and reported, and whether the
#: bundle goes on without one whose generator refuses the spec. A generator that lands
#: later is one more line here.
ARTIFACTS: tuple[Artifact, ...] = (
    ("units", _lazy("opskit.systemd.units:render_units"), False),
    ("logging config", _lazy("opskit.logconfig.build:render_logging"), False),
    # The reload script refuses specs whose reload would keep old code or drop requests
    # (a single uvicorn process, gunicorn --preload without a socket unit, ...): the rest
    # of the bundle is still right for them, and ops-reload then restarts instead.
    ("reload script", _lazy("opskit.reload.render:render_reload"), True),
    ("ops.mk", _ops_mk, False),
)


@dataclass(frozen=True)
class Bundle:
    """The rendered files, and the optional artifacts left out with the reason."""

    files: list[RenderedFile]
    skipped: list[tuple[str, str]]


def render_bundle(
    spec: AppSpec,
    origin: Origin | None = None,
    *,
    artifacts: Sequence[Artifact] = ARTIFACTS,
) -> Bundle:
    """Render every artifact; two generators naming the same file is a bug, not a choice."""
    origin = origin or Origin()
    files: list[RenderedFile] = []
    skipped: list[tuple[str, str]] = []
    owner: dict[str, str] = {}
    for artifact, generate, optional in artifacts:
        try:
            rendered = generate(spec, origin)
        except SpecError as exc:
            if not optional:
                raise
            skipped.append((artifact, str(exc)))
            continue
        for file in rendered:
            if file.name in owner:
                raise OpskitError(
                    f"{file.name}: written by both the {owner[file.name]} and the {artifact}"
                )
            owner[file.name] = artifact
            files.append(file)
    return Bundle(files, skipped)
