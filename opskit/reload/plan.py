"""The graceful reload planner: pick the mechanism per server and supervisor, or refuse."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from opskit.errors import SpecError
from opskit.spec import AppSpec
from opskit.systemd.hardening import runtime_dir
from opskit.systemd.units import server_unit

#: How the script makes the server load new code.
HUP = "hup"  # SIGHUP to the master (pidfile mode)
SYSTEMCTL_RELOAD = "systemctl-reload"  # ExecReload=, which sends SIGHUP to $MAINPID
SYSTEMCTL_RESTART = "systemctl-restart"  # a restart while the .socket unit holds the port
CHAIN = "chain"  # uWSGI chain reload: "c" written to the master FIFO
FULL = "full"  # uWSGI graceful reload: "r" to the FIFO, the master re-executes itself


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


def fifo_path(spec: AppSpec) -> str:
    """The master FIFO of uWSGI: the unit's --master-fifo, or beside the pidfile outside systemd."""
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
        if spec.base and not (systemd and spec.socket):
            raise SpecError(
                "socket: with base, uvicorn's HUP would start workers in the old release's "
                "directory; set socket = true, so that a deploy restarts it behind the "
                "socket unit"
            )
        if spec.base:
            mechanism = SYSTEMCTL_RESTART
            description = "systemctl restart behind the socket unit (a new master in the release)"
        elif spec.workers >= 2:
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
        if spec.base:
            # A chain reload forks workers from a master that stays in the old release's
            # directory (uWSGI does not re-read chdir): re-execute the master instead.
            mechanism = FULL
            description = "uWSGI graceful reload (the master re-executes) through the master FIFO"
        else:
            mechanism = CHAIN
            description = "uWSGI chain reload (one worker at a time) through the master FIFO"
    return ReloadPlan(
        mechanism=mechanism,
        description=description,
        warnings=tuple(warnings),
        pidfile=None if systemd else pidfile_path(spec),
        fifo=fifo_path(spec) if mechanism in (CHAIN, FULL) else None,
        preflight=_preflight(spec),
    )
