"""The canary: the new code served by a throwaway server before the real one is signalled.

An import check cannot see code that imports but fails on a request: Django loads the
URLconf and the views on the first request, a handler may raise. The canary is the same
server started as the service starts it, with one worker on a private unix socket, and
with the paths that would collide with the running server's moved into its own
directory (pidfile, master FIFO, control and stats sockets). Under systemd it is a
transient unit carrying the service's own properties (user, environment, environment
file, sandbox); in pidfile mode a plain process group. The script asks it for the health
and version paths and stops it; it reloads only when the canary answered.

This module decides the canary's command line and unit properties; the script
(templates/reload/reload.sh.j2) runs it. The command line is a list of ``(kind, value)``:
``("lit", word)``, ``("sock", prefix)`` for the canary's socket (after ``prefix``, as in
gunicorn's ``unix:PATH``), ``("dir", name)`` for a file in its directory, which the
template writes as shell words.
"""

from __future__ import annotations

from dataclasses import dataclass

from opskit.errors import SpecError
from opskit.spec import AppSpec
from opskit.systemd.hardening import gunicorn_chowns_its_socket
from opskit.systemd.unitfile import parse_unit
from opskit.systemd.units import render_units, server_unit

Word = tuple[str, str]

#: Options whose value is a path of the running server's: the canary gets its own file.
_OWN_FILES = {
    "gunicorn": {"--control-socket": "gunicorn.ctl", "--pid": "gunicorn.pid", "-p": "gunicorn.pid"},
    "uwsgi": {
        "--master-fifo": "uwsgi.fifo",
        "--pidfile": "uwsgi.pid",
        "--safe-pidfile": "uwsgi.pid",
        "--stats": "stats.sock",
        "--stats-server": "stats.sock",
        "--touch-reload": "touch-reload",
        "--touch-chain-reload": "touch-chain-reload",
    },
    "uvicorn": {},
}
#: Options (with their value) the canary drops: where the real server listens, how many
#: workers it runs, and what would make the canary outlive the script.
_DROPPED = {
    "gunicorn": {"--bind": 1, "-b": 1, "--workers": 1, "-w": 1, "--daemon": 0, "-D": 0},
    "uvicorn": {"--host": 1, "--port": 1, "--uds": 1, "--fd": 1, "--workers": 1, "--reload": 0},
    "uwsgi": {
        "--http-socket": 1,
        "--http11-socket": 1,
        "--socket": 1,
        "--protocol": 1,
        "--processes": 1,
        "--workers": 1,
        "--lazy-apps": 0,
        "--lazy": 0,
        "--daemonize": 1,
        "--daemonize2": 1,
    },
}
#: [Service] directives that describe how the real service runs, not what the code sees:
#: the canary is a transient unit of its own kind (Type=exec), stopped at once by the
#: script (STOP_SIGNAL, KillMode=control-group, a short TimeoutStopSec=),
#: with a runtime directory of its own (sharing /run/NAME would let systemd remove the
#: running server's FIFO and control socket when the canary stops).
_NOT_FOR_THE_CANARY = frozenset(
    {
        "Type", "ExecStart", "ExecStartPre", "ExecStartPost", "ExecReload", "ExecStop",
        "ExecStopPost", "Restart", "RestartSec", "KillMode", "KillSignal", "TimeoutStopSec",
        "TimeoutStartSec", "RuntimeDirectory", "RuntimeDirectoryMode", "StateDirectory",
        "StateDirectoryMode", "SyslogIdentifier", "NotifyAccess", "PIDFile", "WatchdogSec",
        "Sockets", "FileDescriptorStoreMax", "RestartPreventExitStatus",
    }
)  # fmt: skip


#: How the script stops a canary: at once. It has served its one check and has nothing
#: to drain, its files live in its own directory, and a graceful stop costs time (gunicorn
#: waits for its worker; uWSGI's SIGTERM would even reload it instead of stopping it).
STOP_SIGNAL = "SIGKILL"
#: Seconds systemd waits for the processes to go.
STOP_TIMEOUT = 10


@dataclass(frozen=True)
class Canary:
    """How the script starts the canary."""

    argv: tuple[Word, ...]
    #: ``--property=`` values for systemd-run (systemd mode); empty in pidfile mode.
    properties: tuple[str, ...]
    #: What it is, for the script's own lines.
    description: str


def _rewrite(server: str, argv: list[str]) -> list[Word]:
    own, dropped = _OWN_FILES[server], _DROPPED[server]
    out: list[Word] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        key, eq, _ = arg.partition("=")
        if key in dropped:
            i += 1 if eq or dropped[key] == 0 else 2
            continue
        if key in own:
            out += [("lit", key), ("dir", own[key])]
            i += 1 if eq else 2
            continue
        out.append(("lit", arg))
        i += 1
    return out


def canary_argv(spec: AppSpec) -> list[Word]:
    """The service's own command line, for one worker on the canary's unix socket."""
    argv = list(server_unit(spec).argv)
    binary, rest = argv[0], argv[1:]
    words = [("lit", binary), *_rewrite(spec.server, rest)]
    if spec.server == "gunicorn":
        # The app path is the last word (after the server's and the user's arguments).
        return [*words[:-1], ("lit", "--workers"), ("lit", "1"), ("lit", "--bind"),
                ("sock", "unix:"), words[-1]]  # fmt: skip
    if spec.server == "uvicorn":
        return [*words, ("lit", "--uds"), ("sock", "")]
    # uWSGI: the app loaded once, before the one worker, so that an app that does not
    # load stops the canary at once (--need-app) instead of looping in a lazy worker.
    return [*words, ("lit", "--http-socket"), ("sock", ""), ("lit", "--processes"), ("lit", "1")]


def _property_value(key: str, value: str) -> str:
    # Unit files escape "%" as "%%" (specifiers); systemd-run's properties expand none.
    return f"{key}={value.replace('%%', '%')}"


def canary_properties(spec: AppSpec) -> list[str]:
    """The service's [Service] directives that shape what the code sees, for systemd-run."""
    service = render_units(spec)[0].content
    properties = []
    for line in parse_unit(service):
        if line.section != "Service" or line.key in _NOT_FOR_THE_CANARY:
            continue
        properties.append(_property_value(line.key, line.value))
    if spec.server == "gunicorn" and not gunicorn_chowns_its_socket(spec):
        # The canary's gunicorn binds a unix socket, and chowns it (see hardening.py).
        properties.append("SystemCallFilter=@chown")
    properties += [
        f"KillSignal={STOP_SIGNAL}",
        "KillMode=control-group",
        f"TimeoutStopSec={STOP_TIMEOUT}",
    ]
    return properties


def plan_canary(spec: AppSpec) -> Canary | None:
    """The canary for ``spec``, or None when the spec turns it off (canary = false)."""
    if not spec.canary:
        return None
    if spec.server not in ("gunicorn", "uvicorn", "uwsgi"):
        raise SpecError(f"server: no canary for {spec.server!r}")
    properties = canary_properties(spec) if spec.supervisor == "systemd" else []
    where = "a transient unit with the service's properties" if properties else "a process"
    return Canary(
        argv=tuple(canary_argv(spec)),
        properties=tuple(properties),
        description=f"a throwaway {spec.server} with 1 worker on a private unix socket, as {where}",
    )
