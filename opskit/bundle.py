"""``opskit bundle``: every artifact of an app, from its one spec, rendered for one directory."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from opskit.errors import OpskitError
from opskit.render import RenderedFile
from opskit.spec import AppSpec


@dataclass(frozen=True)
class Origin:
    """Where the spec came from and where the bundle goes: what ops.mk needs to regenerate."""

    directory: str = "deploy"
    config: str | None = None
    args: tuple[str, ...] = ()


Generator = Callable[[AppSpec, Origin], list[RenderedFile]]


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
    from opskit.makefile import render_makefile

    return render_makefile(spec, directory=origin.directory, config=origin.config, args=origin.args)


#: The artifacts of a bundle, in the order they are written and reported.
#: A generator that lands later is one more line here.
ARTIFACTS: tuple[tuple[str, Generator], ...] = (
    ("units", _lazy("opskit.systemd:render_units")),
    ("logging config", _lazy("opskit.logconf:render_logging")),
    ("ops.mk", _ops_mk),
)


def render_bundle(
    spec: AppSpec,
    origin: Origin | None = None,
    *,
    artifacts: Sequence[tuple[str, Generator]] = ARTIFACTS,
) -> list[RenderedFile]:
    """Render every artifact; two generators naming the same file is a bug, not a choice."""
    origin = origin or Origin()
    files: list[RenderedFile] = []
    owner: dict[str, str] = {}
    for artifact, generate in artifacts:
        for file in generate(spec, origin):
            if file.name in owner:
                raise OpskitError(
                    f"{file.name}: written by both the {owner[file.name]} and the {artifact}"
                )
            owner[file.name] = artifact
            files.append(file)
    return files
