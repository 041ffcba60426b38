"""Doctor's checks of the servers on this host (psutil), and the stop that ``--fix`` does."""

from __future__ import annotations

import ipaddress
import os
import pwd
import shlex
import shutil
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from opskit.doctor.findings import Finding, Severity
from opskit.spec import AppSpec

if TYPE_CHECKING:
    from opskit.doctor.checks import Context


@dataclass(frozen=True)
class Listener:
    """A server process (the root of its process tree) listening on the app's address."""

    pid: int
    argv: tuple[str, ...]
    started: float
    newest_start: float = 0.0
    #: The owner's user name (or uid, where it has no name).
    user: str = "?"
    #: The kernel's path of its executable (symlinks resolved); "" where it cannot be read.
    exe: str = ""
    #: Its real and effective uid; None where they cannot be read.
    uids: tuple[int, int] | None = None
    #: Its working directory, against which a relative script path in argv is resolved.
    cwd: str = ""
    #: Where its tree listens on the app's port or socket: ``host:port`` or ``unix:/path``.
    addresses: tuple[str, ...] = ()

    @property
    def cmdline(self) -> str:
        """The command line as one shell-readable string."""
        return shlex.join(self.argv)


def _listens(conn: object, spec: AppSpec) -> bool:
    import psutil

    laddr = getattr(conn, "laddr", None)
    if spec.unix_socket:
        return bool(laddr == spec.unix_socket)
    return bool(
        getattr(conn, "status", None) == psutil.CONN_LISTEN
        and laddr
        and getattr(laddr, "port", None) == spec.port
    )


def listeners(spec: AppSpec) -> list[Listener]:
    """The server processes listening on the app's port or unix socket, one per process tree.

    psutil names one holder per socket, often a worker of a pre-fork server, so each
    holder is walked up to the topmost ancestor that listens there too, or that has the
    holder's very command line (a fork: gunicorn --reuse-port binds a socket in each
    worker and none in the master): the master, which is the server (one server, not one
    per worker). PID 1 holding the socket is systemd's socket activation, not a server.
    """
    import psutil

    kind = "unix" if spec.unix_socket else "inet"
    bound: dict[int, set[str]] = {}
    for conn in psutil.net_connections(kind=kind):
        if conn.pid is not None and conn.pid != 1 and _listens(conn, spec):
            bound.setdefault(conn.pid, set()).add(_shown_address(conn.laddr))
    roots: dict[int, psutil.Process] = {}
    for pid in bound:
        try:
            root = psutil.Process(pid)
            argv = root.cmdline()
            for parent in root.parents():
                if parent.pid == 1:
                    break
                try:
                    if (
                        parent.pid in bound
                        or parent.cmdline() == argv
                        or any(_listens(c, spec) for c in parent.net_connections(kind=kind))
                    ):
                        root = parent
                except psutil.AccessDenied:
                    continue
            roots[root.pid] = root
        except psutil.Error:
            continue
    out = []
    for pid, root in sorted(roots.items()):
        try:
            tree = [root, *root.children(recursive=True)]
            starts = []
            for proc in tree:
                try:
                    starts.append(proc.create_time())
                except psutil.Error:
                    continue
            addresses = {a for proc in tree for a in bound.get(proc.pid, ())}
            out.append(
                Listener(
                    pid=pid,
                    argv=tuple(root.cmdline()),
                    started=root.create_time(),
                    newest_start=max(starts),
                    user=_user(root),
                    exe=_readable(root.exe),
                    uids=_uids(root),
                    cwd=_readable(root.cwd),
                    addresses=tuple(sorted(addresses)),
                )
            )
        except psutil.Error:
            continue
    return out


def _host_port(ip: str, port: object) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _shown_address(laddr: object) -> str:
    if isinstance(laddr, str):
        return f"unix:{laddr}"
    return _host_port(str(getattr(laddr, "ip", "?")), getattr(laddr, "port", "?"))


def _readable(read: object) -> str:
    import psutil

    try:
        return str(read())  # type: ignore[operator]
    except psutil.AccessDenied:
        # Another user's process seen by a user who is not root: not provably the server.
        return ""


def _uids(proc: object) -> tuple[int, int] | None:
    import psutil

    try:
        uids = proc.uids()  # type: ignore[attr-defined]
    except psutil.AccessDenied:
        return None
    return int(uids.real), int(uids.effective)


def _user(proc: object) -> str:
    import psutil

    try:
        return str(proc.username())  # type: ignore[attr-defined]
    except (psutil.Error, KeyError):
        # KeyError: a uid with no passwd entry (a dynamic user seen from outside).
        try:
            return str(proc.uids().real)  # type: ignore[attr-defined]
        except psutil.Error:
            return "?"


def runs_app(argv: Sequence[str], spec: AppSpec) -> bool:
    """Whether a command line runs this app: the spec's whole command, else its import path."""
    if spec.server == "command":
        n = len(spec.command)
        return n > 0 and any(tuple(argv[i : i + n]) == spec.command for i in range(len(argv)))
    app = spec.app
    return app is not None and any(arg == app or arg.endswith("=" + app) for arg in argv)


def server_program(spec: AppSpec) -> str:
    """The program the unit's ExecStart= runs: the venv's server, or the command's executable."""
    if spec.server == "command":
        return spec.command[0]
    return f"{spec.venv_path}/bin/{spec.server}"


def _shebang(path: str) -> str | None:
    try:
        with Path(path).open("rb") as f:
            line = f.readline(512)
    except OSError:
        return None
    if not line.startswith(b"#!"):
        return None
    words = os.fsdecode(line[2:]).split()
    if not words:
        return None
    if Path(words[0]).name == "env":
        # `#!/usr/bin/env python3`: the kernel runs env, which execs the first python on PATH.
        names = [w for w in words[1:] if not w.startswith("-") and "=" not in w]
        return shutil.which(names[0]) if names else None
    return words[0]


def program_interpreters(spec: AppSpec, program: str) -> set[str]:
    """The interpreters whose process may be ``program`` run as a script, symlinks resolved."""
    found = set()
    if spec.server != "command":
        # A console script's #! is the venv's python; a server started as
        # `VENV/bin/python VENV/bin/gunicorn` is the same server. pip writes a /bin/sh
        # #! that execs the venv's python when that path is long or has spaces.
        found.add(spec.python)
    interpreter = _shebang(program)
    if interpreter:
        # A copied venv's scripts keep the old venv's python in their #!: it still counts.
        found.add(interpreter)
    return {os.path.realpath(path) for path in found}


def _script_argument(argv: Sequence[str]) -> str | None:
    """The script of ``INTERPRETER [OPTIONS] SCRIPT ...``; None for -c, -m or stdin.

    The kernel runs a #! script as ``INTERPRETER [#! ARG] SCRIPT ARGS``, so the script is
    the first argument that is no option; options are read as python(1) does (short
    flags combine, and -c, -m, -W, -X take the rest of the word or the next one).
    """
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            return argv[i + 1] if i + 1 < len(argv) else None
        if arg == "-":
            return None
        if arg.startswith("--"):
            i += 2 if arg == "--check-hash-based-pycs" else 1
            continue
        if not arg.startswith("-"):
            return arg
        i += 1
        for pos, flag in enumerate(arg[1:]):
            if flag in "cm":
                return None
            if flag in "WX":
                if not arg[pos + 2 :]:
                    i += 1  # its value is the next argument, not the rest of this one
                break
    return None


def runs_program(proc: Listener, program: str, interpreters: set[str]) -> bool:
    """Whether the process is ``program``: its executable, or an interpreter running it.

    Both sides have their symlinks resolved: the kernel's /proc/PID/exe already is (a venv's
    python is a link to the base interpreter, so its process shows the base's path).
    """
    if not proc.exe:
        return False
    exe = os.path.realpath(proc.exe)
    real = os.path.realpath(program)
    if exe == real:
        return True
    script = _script_argument(proc.argv)
    if not script or exe not in interpreters:
        return False
    path = Path(script)
    if not path.is_absolute():
        if not proc.cwd:
            return False
        # The working directory now, which may not be the one it started in: a mismatch
        # leaves the process running, never the reverse.
        path = Path(proc.cwd) / path
    return os.path.realpath(path) == real


#: systemd.exec(5), DynamicUser=: the range systemd allocates dynamic users' uids from.
DYNAMIC_UIDS = range(61184, 65520)


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def owner_problem(proc: Listener, spec: AppSpec) -> str | None:
    """Why the process's owner is not the one the app's server runs as (None: it is)."""
    if proc.uids is None:
        return f"its owner ({proc.user}) cannot be read"
    if spec.user is not None:
        try:
            uid = pwd.getpwnam(spec.user).pw_uid
        except KeyError:
            return f"the unit's user {spec.user} does not exist on this host"
        ok = proc.uids == (uid, uid)
        owner = f"the unit's user {spec.user}"
    elif spec.supervisor == "systemd":
        # Without User=, DynamicUser=yes names the user after the unit and picks its uid
        # from DYNAMIC_UIDS (systemd.exec(5)); nss-systemd resolves it while the unit runs.
        # Root or a login user running the same server is someone else's process.
        ok = all(uid in DYNAMIC_UIDS for uid in proc.uids) and proc.user == spec.name
        owner = f"the unit's dynamic user {spec.name}"
    else:
        # Pidfile mode without a user: the reload script starts the server as the user
        # who runs it, so the server's owner is whoever runs opskit; as root, only root's.
        me = os.geteuid()
        ok = proc.uids == (me, me)
        owner = f"{_user_name(me)}, who runs opskit (the spec has no user)"
    return None if ok else f"owned by {proc.user}, not {owner}"


def spec_addresses(spec: AppSpec) -> set[str]:
    """The addresses the app's server binds, written as ``Listener.addresses`` are."""
    if spec.unix_socket:
        return {f"unix:{spec.unix_socket}"}
    try:
        ips = {ipaddress.ip_address(spec.host).compressed}
    except ValueError:
        # A host name: the servers bind what it resolves to.
        try:
            infos = socket.getaddrinfo(spec.host, spec.port, type=socket.SOCK_STREAM)
        except OSError:
            infos = []
        ips = {str(info[4][0]) for info in infos}
    return {_host_port(ip, spec.port) for ip in ips}


def spec_address(spec: AppSpec) -> str:
    return spec.unix_socket or f"port {spec.port}"


def check_shared_port(ctx: Context) -> list[Finding]:
    """Several servers on the app's one address."""
    found = ctx.listeners
    if len(found) <= 1:
        return []
    return [
        Finding(
            Severity.ERROR,
            "port-shared",
            f"{len(found)} separate servers listen on {spec_address(ctx.spec)}",
            "; ".join(f"pid {p.pid}: {p.cmdline}" for p in found),
            "stop all but one: with SO_REUSEPORT the kernel spreads connections over "
            "every listener, so some requests reach an old server "
            "(opskit doctor --fix stops the stale ones that are this app's server)",
        )
    ]
