"""The Makefile generator: an include-able ops.mk whose targets drive opskit and systemd."""

from __future__ import annotations

from collections.abc import Sequence

from opskit.render import RenderedFile, render_template, shell_quote
from opskit.spec import AppSpec

FILENAME = "ops.mk"

# systemd-analyze security --threshold is on a 0-100 scale (ten times the exposure score).
# Measured with systemd 252: the default profile scores 0.9, relaxed 2.7, off 8.4, so the
# gate sits above each profile's score with room for the spec's escape hatches.
_THRESHOLDS = {"default": 20, "relaxed": 40, "off": 100}


def unit_names(spec: AppSpec) -> list[str]:
    """The unit files the systemd generator writes for this spec, helpers included.

    ops-check verifies and ops-install copies every one: a service whose Wants= names a
    helper that was never installed would start without its watchdog or config watch.
    """
    from opskit.systemd.configwatch import config_unit_names
    from opskit.systemd.watchdog import watchdog_enabled

    names = [f"{spec.name}.service"]
    if spec.socket:
        names.append(f"{spec.name}.socket")
    if watchdog_enabled(spec):
        names += [f"{spec.name}-watchdog.timer", f"{spec.name}-watchdog.service"]
    if spec.watch:
        names += config_unit_names(spec.name)
    return names


def reload_script(spec: AppSpec) -> str | None:
    """The reload script's file name, or None where the reload generator refuses the spec."""
    from opskit.errors import SpecError
    from opskit.reload.render import render_reload

    try:
        return render_reload(spec)[0].name
    except SpecError:
        return None


def include_line(directory: str) -> str:
    """The line a project's Makefile needs to pick up the targets."""
    return f"include {directory.rstrip('/') or '/'}/{FILENAME}"


def render_makefile(
    spec: AppSpec,
    *,
    directory: str = "deploy",
    config: str | None = None,
    args: Sequence[str] = (),
) -> list[RenderedFile]:
    """Render ops.mk for a bundle kept in ``directory`` (relative to where make runs).

    ``config`` and ``args`` are the config file and the command-line overrides the spec
    was built from: the targets pass them again, so a regeneration yields the same spec.
    Each value is a shell word (quoted for sh), then escaped for Make by the template.
    """
    # gunicorn's master with --preload keeps the code it imported across a HUP.
    in_place = spec.reloadable and not (spec.server == "gunicorn" and spec.preload)
    script = reload_script(spec)
    if script:
        reload_help = "load new code: preflight, reload, prove it serves (reload script)"
    else:
        reload_help = "load new code (systemctl reload)" if in_place else "restart the service"
    context = {
        "spec": spec,
        "reload_script": shell_quote(script) if script else "",
        "reload_in_place": in_place,
        "reload_help": reload_help,
        "include_path": f"{directory.rstrip('/') or '/'}/{FILENAME}",
        "directory": shell_quote(directory),
        "config": shell_quote(config) if config else "",
        "args": " ".join(shell_quote(a) for a in args),
        "units": " ".join(shell_quote(u) for u in unit_names(spec)),
        "python": shell_quote(spec.python),
        "threshold": _THRESHOLDS[spec.hardening.profile],
        "watch": bool(spec.watch),
    }
    return [RenderedFile(FILENAME, render_template("make/ops.mk.j2", **context))]
