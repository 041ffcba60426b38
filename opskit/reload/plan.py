"""The graceful reload builder: pick the mechanism per server and supervisor, render the script."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from opskit.errors import SpecError
from opskit.render import RenderedFile, ini_value, render_template
from opskit.spec import AppSpec
from opskit.systemd.hardening import runtime_dir
from opskit.systemd.units import environment, server_unit

#: How the script makes the server load new code.
HUP = "hup"  # SIGHUP to the master (pidfile mode)
SYSTEMCTL_RELOAD = "systemctl-reload"  # ExecReload=, which sends SIGHUP to $MAINPID
SYSTEMCTL_RESTART = "systemctl-restart"  # a restart while the .socket unit holds the port
CHAIN = "chain"  # uWSGI chain reload: "c" written to the master FIFO


@dataclass(frozen=True)
class ReloadPlan:
    """What the reload script does for one spec, and what the generator has to say about it."""

    mechanism: str
    description: str
    warnings: tuple[str, ...]
    pidfile: str | None
    fifo: str | None
    preflight: tuple[str, ...]


def pidfile_path(spec: AppSpec) -> str:
    """The pidfile the script reads in pidfile mode (default: /run/NAME/SERVER.pid)."""
    return spec.pidfile or f"{runtime_dir(spec)}/{spec.server}.pid"


def _fifo(spec: AppSpec) -> str:
    if spec.supervisor == "pidfile":
        # Outside systemd nothing creates /run/NAME: keep the FIFO beside the pidfile.
        return posixpath.join(posixpath.dirname(pidfile_path(spec)), "uwsgi.fifo")
    argv = server_unit(spec).argv
    return argv[argv.index("--master-fifo") + 1]


def _has_flag(spec: AppSpec, *flags: str) -> bool:
    return any(
        arg in flags or arg.startswith(tuple(f"{f}=" for f in flags)) for arg in spec.server_args
    )


def _preflight(spec: AppSpec) -> tuple[str, ...]:
    if spec.server == "gunicorn":
        # --check-config imports the app exactly as the workers will, then exits:
        # non-zero when the new code does not import.
        return (
            f"{spec.venv_path}/bin/gunicorn",
            "--check-config",
            *spec.server_args,
            str(spec.app),
        )
    # uvicorn and uWSGI have no such switch: import the module and resolve the attribute
    # with the app's own interpreter, from the working directory, as both servers do.
    return (spec.python, "-c", _IMPORT_CHECK, str(spec.app))


_IMPORT_CHECK = (
    "import functools, importlib, sys; "
    "module, _, attr = sys.argv[1].split('(')[0].partition(':'); "
    "functools.reduce(getattr, attr.split('.'), importlib.import_module(module))"
)


def plan_reload(spec: AppSpec) -> ReloadPlan:
    """Decide how a reload loads new code without dropping requests; refuse where none can.

    Refusals (SpecError, exit 2) are the configurations in which a reload would keep
    serving old code or drop requests while reporting success.
    """
    systemd = spec.supervisor == "systemd"
    warnings: list[str] = []
    if spec.server == "command":
        raise SpecError(
            "server: 'command' gives opskit no way to know how the server reloads; "
            "use gunicorn, uvicorn or uwsgi for reload-script"
        )
    if spec.server == "gunicorn":
        preload = spec.preload or _has_flag(spec, "--preload")
        if not preload:
            mechanism = SYSTEMCTL_RELOAD if systemd else HUP
            description = "SIGHUP: gunicorn starts new workers, which import the new code"
        elif systemd and spec.socket:
            # With --preload the master holds the imported app and HUP forks it again:
            # only a new master loads new code, and the .socket unit keeps the port open.
            mechanism = SYSTEMCTL_RESTART
            description = "systemctl restart behind the socket unit (preload: HUP keeps old code)"
            warnings.append(
                "preload = true: a HUP would fork the old code again, so the script "
                "restarts the service while the socket unit holds the port"
            )
        else:
            raise SpecError(
                "preload: with preload = true gunicorn's HUP keeps serving the old code; "
                "set preload = false (or socket = true under systemd, to restart instead)"
            )
    elif spec.server == "uvicorn":
        if spec.workers >= 2:
            mechanism = SYSTEMCTL_RELOAD if systemd else HUP
            description = "SIGHUP: uvicorn starts new workers, then stops the old ones"
        elif systemd and spec.socket:
            # A single uvicorn process dies on SIGHUP; restarting it behind the socket
            # unit queues connections instead of refusing them.
            mechanism = SYSTEMCTL_RESTART
            description = "systemctl restart behind the socket unit (single uvicorn process)"
        else:
            raise SpecError(
                "workers: a single uvicorn process dies on SIGHUP and a restart drops "
                "requests; set workers >= 2"
                + (
                    " or socket = true"
                    if systemd
                    else " (or run it under systemd with socket = true)"
                )
            )
    else:
        lazy = spec.lazy_apps or _has_flag(spec, "--lazy-apps", "--lazy")
        if not lazy:
            raise SpecError(
                "lazy-apps: without lazy-apps uWSGI's workers are forked from the master's "
                "copy of the app, so a chain reload keeps serving old code; set lazy-apps = true"
            )
        mechanism = CHAIN
        description = "uWSGI chain reload (one worker at a time) through the master FIFO"
    return ReloadPlan(
        mechanism=mechanism,
        description=description,
        warnings=tuple(warnings),
        pidfile=None if systemd else pidfile_path(spec),
        fifo=_fifo(spec) if mechanism == CHAIN else None,
        preflight=_preflight(spec),
    )


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
        options = [(k, _fifo(spec) if k == "master-fifo" else v) for k, v in options]
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


def render_reload(spec: AppSpec) -> list[RenderedFile]:
    """Render reload-NAME.sh (executable) and, for uWSGI, NAME.uwsgi.ini."""
    plan = plan_reload(spec)
    script = render_template(
        "reload/reload.sh.j2",
        spec=spec,
        plan=plan,
        unit=f"{spec.name}.service",
        environment=environment(spec),
        timeout=spec.graceful_timeout + 30,
    )
    files = [RenderedFile(f"reload-{spec.name}.sh", script, 0o755)]
    if spec.server == "uwsgi":
        ini = render_template("reload/uwsgi.ini.j2", spec=spec, options=uwsgi_options(spec))
        files.append(RenderedFile(f"{spec.name}.uwsgi.ini", ini))
    return files
