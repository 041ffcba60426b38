"""Render the reload script and, for uWSGI, its ini file from the spec and its plan."""

from __future__ import annotations

from dataclasses import replace

from opskit.errors import SpecError
from opskit.reload.canary import plan_canary
from opskit.reload.plan import fifo_path, pidfile_path, plan_reload
from opskit.render import RenderedFile, ini_value, render_template
from opskit.spec import AppSpec
from opskit.systemd.units import environment, server_unit
from opskit.systemd.watchdog import state_dir, watchdog_enabled


def uwsgi_options(spec: AppSpec) -> list[tuple[str, str]]:
    """The uWSGI ini options: the unit's command line, key by key, plus what pidfile mode needs.

    Derived from systemd.server_unit() so that the ini and the unit cannot disagree.
    """
    argv = list(server_unit(spec).argv[1:])
    options: list[tuple[str, str]] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--") or len(arg) == 2:
            raise SpecError(f"server-args: {arg!r} cannot be written to the uWSGI ini")
        key, eq, value = arg[2:].partition("=")
        if not eq:
            value = "true"
            if i + 1 < len(argv) and not argv[i + 1].startswith("-"):
                value = argv[i + 1]
                i += 1
        options.append((key, value))
        i += 1
    if spec.supervisor == "pidfile":
        options = [(k, fifo_path(spec) if k == "master-fifo" else v) for k, v in options]
        # Outside systemd the stop signal is usually SIGTERM, which uWSGI 2.0 takes as
        # "brutal reload": die-on-term makes it stop instead.
        options += [
            ("chdir", spec.working_directory),
            ("pidfile", pidfile_path(spec)),
            ("die-on-term", "true"),
        ]
    for key, value in options:
        try:
            ini_value(value)
        except ValueError:
            raise SpecError(f"{key}: {value!r} cannot be written to the uWSGI ini") from None
    return options


def release_spec(spec: AppSpec, release_dir: str) -> AppSpec:
    """The spec as one release runs it: its own directory and venv, not BASE/current's.

    What the deploy's checks run (preflight, canary) before BASE/current points at it.
    """
    assert spec.base is not None
    current = spec.working_directory
    deploy_id_file = spec.deploy_id_file
    if deploy_id_file and deploy_id_file.startswith(current + "/"):
        deploy_id_file = release_dir + deploy_id_file[len(current) :]
    return replace(
        spec,
        base=None,
        working_directory=release_dir,
        venv=f"{release_dir}/venv",
        deploy_id_file=deploy_id_file,
    )


def render_reload(spec: AppSpec) -> list[RenderedFile]:
    """Render reload-NAME.sh (executable) and, for uWSGI, NAME.uwsgi.ini."""
    return _render(spec, spec)


def render_deploy_reload(spec: AppSpec, release_dir: str, *, canary: bool) -> str:
    """The script a deploy runs for one release: OPSKIT_STEP=check, then =reload.

    Its preflight and canary run the release from its own directory; its signal and
    verification are the service's, through BASE/current.
    """
    checked = release_spec(spec, release_dir)
    if not canary:
        checked = replace(checked, canary=False)
    return _render(spec, checked, steps=True)[0].content


def _render(spec: AppSpec, checked: AppSpec, *, steps: bool = False) -> list[RenderedFile]:
    plan = replace(plan_reload(spec), preflight=plan_reload(checked).preflight)
    script = render_template(
        "reload/reload.sh.j2",
        spec=checked,
        plan=plan,
        steps=steps,
        canary=plan_canary(checked),
        unit=f"{spec.name}.service",
        environment=environment(spec),
        timeout=spec.graceful_timeout + 30,
        watchdog_dir=(
            state_dir(spec) if spec.supervisor == "systemd" and watchdog_enabled(spec) else None
        ),
    )
    files = [RenderedFile(f"reload-{spec.name}.sh", script, 0o755)]
    if spec.server == "uwsgi":
        ini = render_template("reload/uwsgi.ini.j2", spec=spec, options=uwsgi_options(spec))
        files.append(RenderedFile(f"{spec.name}.uwsgi.ini", ini))
    return files
