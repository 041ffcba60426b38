"""Config changes as verified reloads: NAME-config.path and NAME-config.service.

A worker that read its configuration at import keeps serving it until it is replaced:
a file written later (by hand, by a config client) changes nothing until a reload. With
spec key ``watch``, NAME-config.path (``PathChanged=``: a file closed after writing, a
rename or a removal) starts NAME-config.service, a oneshot that waits until the watched
paths have been quiet for a moment (debounce), then runs the service's verified reload
script, the same one ``opskit reload-script`` writes: its import check and canary run
the new configuration first, so a broken one is refused and the workers keep the old.
A refused reload fails the oneshot: ``systemctl status NAME-config.service`` and
``opskit doctor`` show it. A change made while a reload runs is seen when it ends, and
reloaded again.

The watched paths live outside the releases (opskit.deploy): a rollback switches the
code, not the configuration.
"""

from __future__ import annotations

from dataclasses import replace

from opskit.errors import SpecError
from opskit.render import RenderedFile
from opskit.spec import AppSpec

#: Seconds the watched paths must stay unchanged before the reload starts.
DEBOUNCE = 1
#: Reloads in a row when the paths keep changing during the reload.
ROUNDS = 5
#: The heredoc's end line: must not appear in the reload script.
END = "OPSKIT_RELOAD_SCRIPT_END"


def config_unit_names(name: str) -> tuple[str, str]:
    """NAME-config.path and NAME-config.service."""
    return f"{name}-config.path", f"{name}-config.service"


def lock_path(spec: AppSpec) -> str:
    """The lock a config reload takes: a deploy's, with a base (they never interleave)."""
    return f"{spec.base}/.opskit-deploy.lock" if spec.base else f"/run/{spec.name}-config.lock"


def render_config_watch(spec: AppSpec) -> list[RenderedFile]:
    """The path unit and its oneshot; the reload script travels inside the oneshot."""
    from opskit.reload.render import render_reload
    from opskit.render import render_template

    if not spec.watch:
        return []
    if spec.supervisor != "systemd":
        raise SpecError("watch: needs supervisor = systemd (a .path unit starts the reload)")
    # The reload script reads the service unit (the canary runs with its properties):
    # rendered without the watch, which only adds the units made here.
    script = render_reload(replace(spec, watch=()))[0].content
    if any(line.strip() == END for line in script.splitlines()):
        raise SpecError(f"watch: the reload script contains the line {END}")  # pragma: no cover
    body = render_template(
        "systemd/config_reload.sh.j2",
        spec=spec,
        script=script,
        end=END,
        debounce=DEBOUNCE,
        rounds=ROUNDS,
        lock=lock_path(spec),
    )
    path_unit, service_unit = config_unit_names(spec.name)
    context = {
        "spec": spec,
        "argv": ["/bin/bash", "-c", body, service_unit.removesuffix(".service")],
        "path_unit": path_unit,
        "service_unit": service_unit,
        "timeout": (spec.graceful_timeout * 2 + 120) * ROUNDS,
    }
    return [
        RenderedFile(path_unit, render_template("systemd/config.path.j2", **context)),
        RenderedFile(service_unit, render_template("systemd/config.service.j2", **context)),
    ]
