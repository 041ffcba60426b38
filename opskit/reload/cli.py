"""``opskit reload-script``: write the graceful, verified reload script."""

from __future__ import annotations

from opskit.commands import app, spec_command
from opskit.options import Output, SpecArgs, say


@spec_command(app, "reload-script", output="deploy/reload")
def reload_script(*, spec: SpecArgs, out: Output) -> None:
    """Write reload-NAME.sh: reload gracefully, then prove the new code serves."""
    from opskit.appcheck import warn_about_app
    from opskit.reload.plan import plan_reload
    from opskit.reload.render import render_reload

    loaded = spec.load()
    warn_about_app(loaded, say)
    files = render_reload(loaded)
    for warning in plan_reload(loaded).warnings:
        say(f"warning: {warning}")
    out.emit(files)
