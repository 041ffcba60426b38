"""The hardening profiles: which sandboxing directives a unit gets, and what is relaxed and why."""

from __future__ import annotations

from opskit.errors import SpecError
from opskit.render import systemd_word
from opskit.spec import AppSpec
from opskit.systemd.network import NetworkDecision, decide
from opskit.validate import system_directory


def runtime_dir(spec: AppSpec) -> str:
    """The RuntimeDirectory= that systemd creates for the service (/run/NAME)."""
    return f"/run/{spec.name}"


def under(path: str, *roots: str) -> bool:
    """Whether ``path`` is one of ``roots`` or lies below one."""
    return any(path == r or path.startswith(r + "/") for r in roots)


def hardening(
    spec: AppSpec, network: NetworkDecision | None = None
) -> tuple[list[tuple[str, str]], list[str]]:
    """The hardening directives (values already escaped) and notes on what was relaxed and why.

    docs/hardening.md explains every directive. The default profile scores <= 1.0 in
    ``systemd-analyze security --offline=yes`` (<= 0.5 with socket activation). What it
    adds beyond the score (PrivateIPC=) or what apps might miss (ProcSubset=pid) is in it
    because gunicorn, uvicorn, uWSGI and the real-app corpus serve under it on a real
    systemd, where each is also shown enforced (tests/real_systemd/test_hardened.py).
    Its network rules (IPAddressDeny=, or with socket activation PrivateNetwork=) are
    ``network``'s, decided from the spec by opskit.systemd.network when not given.
    """
    h = spec.hardening
    notes: list[str] = []
    if h.profile == "off":
        return [], notes
    code_paths = [spec.working_directory, spec.venv_path]
    protect_home = "yes"
    if h.allow_home:
        protect_home = "read-only"
    elif any(under(p, "/home", "/root", "/run/user") for p in code_paths):
        protect_home = "read-only"
        notes.append("ProtectHome=read-only: the code or venv lives under a home directory")
    private_tmp = True
    in_tmp = bool(spec.unix_socket) and under(str(spec.unix_socket), "/tmp", "/var/tmp")
    if in_tmp and not spec.socket:
        # The server creates the socket: a proxy outside must see the same /tmp.
        private_tmp = False
        notes.append("PrivateTmp= off: the unix socket in /tmp must be visible to the proxy")
    writable = list(h.writable_paths)
    if spec.unix_socket and not spec.socket and not under(spec.unix_socket, runtime_dir(spec)):
        parent = spec.unix_socket.rsplit("/", 1)[0] or "/"
        _refuse_system_socket_directory(spec, spec.unix_socket, parent)
        if parent not in writable:
            writable.append(parent)
            notes.append(f"ReadWritePaths={parent}: the server creates its unix socket there")

    d: list[tuple[str, str]] = [("NoNewPrivileges", "yes")]
    if h.profile == "relaxed":
        # For apps the default profile breaks: no user namespace, no W^X, no namespace
        # or IP restrictions, home and /etc readable; still no privileges at all.
        d += [
            ("ProtectSystem", "full"),
            ("ProtectHome", "read-only"),
            ("PrivateTmp", "yes" if private_tmp else "no"),
            ("PrivateDevices", "yes"),
            ("ProtectHostname", "yes"),
            ("ProtectClock", "yes"),
            ("ProtectKernelTunables", "yes"),
            ("ProtectKernelModules", "yes"),
            ("ProtectKernelLogs", "yes"),
            ("ProtectControlGroups", "yes"),
            ("RestrictSUIDSGID", "yes"),
            ("RestrictRealtime", "yes"),
            ("LockPersonality", "yes"),
            ("CapabilityBoundingSet", ""),
            ("SystemCallArchitectures", "native"),
            ("SystemCallFilter", "@system-service"),
            ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX AF_NETLINK"),
        ]
    else:
        d += [
            ("ProtectSystem", "strict"),
            ("ProtectHome", protect_home),
            ("PrivateTmp", "yes" if private_tmp else "no"),
            ("PrivateDevices", "yes"),
            ("PrivateMounts", "yes"),
            ("PrivateUsers", "yes"),
            # Unscored by systemd-analyze 252, but enforced by an IPC namespace: the host's
            # SysV IPC objects and POSIX message queues are out of the service's reach.
            ("PrivateIPC", "yes"),
            ("ProtectHostname", "yes"),
            ("ProtectClock", "yes"),
            ("ProtectKernelTunables", "yes"),
            ("ProtectKernelModules", "yes"),
            ("ProtectKernelLogs", "yes"),
            ("ProtectControlGroups", "yes"),
            ("ProtectProc", "invisible"),
            # Only the process directories in /proc: no /proc/meminfo, /proc/stat or
            # /proc/sys. The servers and the real-app corpus serve without them (CPU
            # counts come from sched_getaffinity() and /sys); psutil's host-wide figures
            # (virtual_memory(), cpu_percent(), boot_time()) raise FileNotFoundError.
            ("ProcSubset", "pid"),
            ("RestrictNamespaces", "yes"),
            ("RestrictRealtime", "yes"),
            ("RestrictSUIDSGID", "yes"),
            ("LockPersonality", "yes"),
            ("RemoveIPC", "yes"),
            ("KeyringMode", "private"),
            ("DevicePolicy", "closed"),
            ("CapabilityBoundingSet", ""),
            ("AmbientCapabilities", ""),
            ("SystemCallArchitectures", "native"),
            ("SystemCallFilter", "@system-service"),
            ("SystemCallFilter", "~@privileged @resources"),
        ]
        if gunicorn_chowns_its_socket(spec):
            # gunicorn chown()s a unix socket to its own user after bind; @privileged
            # holds chown, so the bind fails with EPERM. A later allow entry adds it back.
            d.append(("SystemCallFilter", "@chown"))
            notes.append("SystemCallFilter=@chown: gunicorn chowns its unix socket after bind")
        d += [
            ("SystemCallErrorNumber", "EPERM"),
            ("UMask", "0077"),
        ]
        if not h.allow_wx:
            d.append(("MemoryDenyWriteExecute", "yes"))
        network = network or decide(spec)
        d += network.directives
        notes += network.relaxed
    if writable:
        d.append(("ReadWritePaths", " ".join(systemd_word(p) for p in writable)))
    return d, notes


def gunicorn_chowns_its_socket(spec: AppSpec) -> bool:
    """Whether gunicorn binds a unix socket itself (and so calls chown on it)."""
    return spec.server == "gunicorn" and bool(spec.unix_socket) and not spec.socket


def _refuse_system_socket_directory(spec: AppSpec, socket: str, parent: str) -> None:
    # The server creates its socket, so its directory becomes a ReadWritePaths= entry:
    # for /etc or / that would undo ProtectSystem= for the whole service. With --socket
    # systemd creates the socket before the sandbox exists, so any directory works.
    danger = system_directory(parent)
    if danger is None:
        return
    file = socket.rsplit("/", 1)[-1] or "app.sock"
    raise SpecError(
        f"unix-socket: the server creates {socket!r}, and ReadWritePaths= for its "
        f"directory would let the service rewrite {danger}; use /run/{spec.name}/{file} "
        f"(writable already), a directory of its own such as /srv/{spec.name}/run/{file}, "
        "or --socket (systemd then creates the socket)"
    )


def warnings_about(spec: AppSpec) -> list[str]:
    """What the sandbox cannot make safe in ``spec``: one line each for stderr.

    root owns the system's files, and writing a file one owns needs no capability: the
    empty CapabilityBoundingSet= does not stop a root service from rewriting any
    root-owned file in what stays writable (its state directory, ReadWritePaths=).
    """
    if spec.user != "root":
        return []
    return [
        "user: root owns the system's files, so the service may rewrite every root-owned "
        "file the sandbox leaves writable, capabilities or not; leave user unset for a "
        "dynamic user, or name an unprivileged one"
    ]
