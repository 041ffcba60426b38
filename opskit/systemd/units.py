"""The systemd generator: a service unit (and a socket unit) per app spec, hardened by profile."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from opskit.errors import SpecError
from opskit.render import RenderedFile, render_template, systemd_value, uwsgi_arg
from opskit.spec import AppSpec
from opskit.systemd import uvicorn
from opskit.systemd.configwatch import render_config_watch
from opskit.systemd.hardening import hardening, runtime_dir, under
from opskit.systemd.limits import resource_directives, worker_args
from opskit.systemd.network import NetworkDecision, decide
from opskit.systemd.watchdog import render_watchdog, watchdog_enabled


@dataclass(frozen=True)
class ServerUnit:
    """How one server runs under systemd: its command line and process-management directives."""

    argv: tuple[str, ...]
    type: str
    kill_mode: str = "mixed"
    kill_signal: str | None = None
    reload: bool = False
    no_reload_reason: str | None = None


def _listen_args(spec: AppSpec, *, tcp: list[str], unix: list[str]) -> list[str]:
    return unix if spec.unix_socket else tcp


def server_unit(spec: AppSpec) -> ServerUnit:
    """Derive the server's command line and directives from how that server really behaves.

    gunicorn: sd_notify since 20 (Type=notify), HUP = new workers with new code, and
    TERM to the master = graceful stop, so KillMode=mixed lets it drain its workers.
    uvicorn: no sd_notify, so Type=exec; a single process dies on HUP, so reload only
    with --workers >= 2. uWSGI: sd_notify from the master (NotifyAccess=all as its docs
    say); SIGTERM means "brutal reload", so stop with SIGQUIT; HUP = graceful reload.
    """
    bin_dir = f"{spec.venv_path}/bin"
    extra = list(spec.server_args)
    if spec.server == "gunicorn":
        argv = [*_launcher(spec, "gunicorn"), "--workers", str(spec.workers)]
        if spec.base:
            # Given explicitly, --chdir is the symlink's path, which gunicorn re-reads and
            # chdirs to on every HUP: the master and new workers move to the live release
            # (by default it keeps the resolved directory it started in).
            argv += ["--chdir", spec.working_directory]
        # With socket activation gunicorn takes LISTEN_FDS and ignores --bind.
        if not spec.socket:
            argv += ["--bind", spec.bind]
        argv += ["--graceful-timeout", str(spec.graceful_timeout)]
        # gunicorn >= 25.1 opens a control socket in the working directory, which is
        # read-only under ProtectSystem=strict: keep it in the runtime directory.
        argv += ["--control-socket", f"{runtime_dir(spec)}/gunicorn.ctl"]
        if spec.preload:
            argv.append("--preload")
        if spec.log_config:
            argv += ["--log-config-json", spec.log_config]
        argv += worker_args(spec)
        argv += [*extra, str(spec.app)]
        return ServerUnit(
            tuple(argv),
            "notify",
            reload=spec.reloadable,
            no_reload_reason="with --preload a HUP forks new workers from the old, imported code",
        )
    if spec.server == "uvicorn":
        # The bootstrap runs uvicorn through BASE/current's python too (see _launcher).
        argv = [*uvicorn.launcher(spec), str(spec.app)]
        if spec.base:
            argv += ["--app-dir", spec.working_directory]
        if spec.socket:
            # The .socket unit passes the listening socket as fd 3 (SD_LISTEN_FDS_START).
            argv += ["--fd", "3"]
        else:
            argv += _listen_args(
                spec,
                tcp=["--host", spec.host, "--port", str(spec.port)],
                unix=["--uds", str(spec.unix_socket)],
            )
        if spec.workers >= 2:
            argv += ["--workers", str(spec.workers)]
        argv += ["--timeout-graceful-shutdown", str(spec.graceful_timeout)]
        if spec.log_config:
            argv += ["--log-config", spec.log_config]
        argv += worker_args(spec)
        if not spec.keep_alive:
            # Every answer says Connection: close, and uvicorn (h11) then closes the
            # connection itself: no client holds an idle connection for a worker that a
            # reload or --limit-max-requests retires to close under its next request.
            argv += ["--header", "connection:close"]
        # A retiring worker leaves a connection it has not read yet open for its
        # request (opskit.systemd.uvicorn): no reset for a request already sent.
        argv += ["--http", uvicorn.PROTOCOL]
        argv += extra
        return ServerUnit(
            tuple(argv),
            "exec",
            reload=spec.reloadable,
            no_reload_reason="a single uvicorn process exits on HUP instead of reloading",
        )
    if spec.server == "uwsgi":
        _refuse_uwsgi_expansion(spec)
        argv = [f"{bin_dir}/uwsgi", "--master", "--module", str(spec.app)]
        if spec.base:
            # A graceful reload re-executes uWSGI with these options: it changes to the
            # live release and its venv again (the binary it re-executes is the old
            # release's, by /proc/self/exe, which keeps the previous release in use).
            argv += ["--chdir", spec.working_directory, "--virtualenv", spec.venv_path]
        if spec.socket:
            # uWSGI makes each LISTEN_FDS socket a socket of its own with the default
            # protocol (uwsgi, not HTTP) and then skips --http-socket for the same
            # address (core/setup_utils.c): on a real systemd every request was dropped
            # as "invalid request block size". Make HTTP the default protocol instead.
            argv += ["--protocol", "http"]
        else:
            address = spec.unix_socket if spec.unix_socket else spec.bind
            argv += ["--http-socket", address]
        argv += ["--processes", str(spec.workers), "--enable-threads", "--need-app"]
        # The http-socket closes the connection after every answer without saying so
        # (proto/base.c, HTTP/1.1 included): a keep-alive client (urllib3, requests)
        # sends its next request into the closed connection and meets a reset. Say it.
        argv += ["--add-header", "Connection: close"]
        if spec.lazy_apps:
            # Load the app in each worker: threads started at import do not survive
            # fork, and chain reload loads new code only with lazy-apps.
            argv.append("--lazy-apps")
        argv += ["--master-fifo", f"{runtime_dir(spec)}/uwsgi.fifo"]
        argv += ["--worker-reload-mercy", str(spec.graceful_timeout), "--vacuum"]
        if spec.log_config:
            # uWSGI has no Python logging-config option: this module (written next to
            # the config by `opskit logging init`) applies OPSKIT_LOG_CONFIG in every
            # process that loads the app, before the app is imported.
            argv += ["--import", "opskit_logsetup"]
        argv += worker_args(spec)
        argv += extra
        # uWSGI's master, the main process, sends READY=1 itself, so the default
        # NotifyAccess=main suffices (its docs' NotifyAccess=all costs exposure).
        return ServerUnit(tuple(argv), "notify", kill_signal="SIGQUIT", reload=True)
    return ServerUnit(tuple(spec.command), "exec")


def _launcher(spec: AppSpec, module: str) -> list[str]:
    """The server's own script, or with releases ``python -m SERVER`` through BASE/current.

    A console script's #! names the interpreter of the venv it was installed into, the
    release's real path; run as BASE/current/venv/bin/python, the interpreter's prefix
    and site-packages stay paths through the symlink, so every process started after a
    switch (a worker uvicorn spawns, a module a new worker imports) finds the live
    release's packages.
    """
    if spec.base:
        return [spec.python, "-m", module]
    return [f"{spec.venv_path}/bin/{module}"]


#: The longest unix socket path uWSGI binds itself.
UWSGI_SUN_PATH_MAX = 102


def _refuse_uwsgi_expansion(spec: AppSpec) -> None:
    """Refuse every spec value that uWSGI would read as an option and rewrite.

    The values on its command line and in NAME.uwsgi.ini, and UWSGI_* environment
    variables, which uWSGI reads as options too (core/uwsgi.c parse_sys_envs()).
    """
    values: list[tuple[str, str]] = [("app", str(spec.app))]
    if spec.unix_socket:
        values.append(("unix-socket", spec.unix_socket))
    else:
        values.append(("host", spec.host))
    if spec.supervisor == "pidfile":
        # Outside systemd the ini also carries chdir, pidfile and the FIFO beside it.
        values.append(("working-directory", spec.working_directory))
        values += [("pidfile", spec.pidfile)] if spec.pidfile else []
    values += [(f"server-args[{i}]", arg) for i, arg in enumerate(spec.server_args)]
    values += [
        (f"environment.{name}", value)
        for name, value in spec.environment
        if name.startswith("UWSGI_")
    ]
    for key, value in values:
        try:
            uwsgi_arg(value)
        except ValueError as exc:
            raise SpecError(f"{key}: {exc}") from None
    socket = spec.unix_socket
    if socket and not spec.socket and len(socket.encode()) > UWSGI_SUN_PATH_MAX:
        # uWSGI keeps a byte of sun_path for the abstract namespace (core/socket.c) and
        # exits with "invalid socket name"; with --socket systemd binds it instead.
        raise SpecError(
            f"unix-socket: uWSGI binds at most {UWSGI_SUN_PATH_MAX} bytes, "
            f"got {len(socket.encode())} in {socket!r} (or use --socket)"
        )


def environment(spec: AppSpec) -> list[tuple[str, str]]:
    """Environment= pairs: unbuffered output first, then the spec's own (which may override)."""
    env: dict[str, str] = {"PYTHONUNBUFFERED": "1"}
    if spec.log_config and spec.server in ("uwsgi", "command"):
        # Neither has a logging-config flag: the app applies the file this names.
        env["OPSKIT_LOG_CONFIG"] = spec.log_config
    if spec.log_config:
        # The config's directory holds opskit_logging (journald formatter, loader), which
        # the server imports while it applies the config.
        env["PYTHONPATH"] = spec.log_config.rsplit("/", 1)[0] or "/"
    if spec.base and spec.server == "gunicorn":
        # gunicorn takes its --chdir default from the cwd when it is imported, resolved
        # by the kernel to the release it started in (util.getcwd() prefers $PWD when it
        # is the same directory), and validates that default again on every HUP before
        # --chdir replaces it: once that release is pruned, the HUP ends the master
        # ("can't chdir to"). $PWD as the link keeps the default a path that exists.
        env["PWD"] = spec.working_directory
    env.update(dict(spec.environment))
    return list(env.items())


def _validate_hidden_paths(spec: AppSpec) -> None:
    """Refuse code or a venv that the unit's own sandbox would hide from the service."""
    if not spec.dynamic_user:
        return
    for key, path in (("working-directory", spec.working_directory), ("venv", spec.venv_path)):
        tmp = next((t for t in ("/tmp", "/var/tmp") if under(path, t)), None)
        if tmp is not None:
            # DynamicUser= implies PrivateTmp=yes, which no setting can switch off: the
            # service sees an empty /tmp ("Failed to locate executable", 203/EXEC).
            raise SpecError(
                f"{key}: {path} is under {tmp}, "
                "which a dynamic user's service cannot see (DynamicUser= implies PrivateTmp=); "
                "move it (e.g. to /srv), or set user"
            )


def _validate_socket_spec(spec: AppSpec) -> None:
    if spec.unix_socket:
        if spec.socket and under(spec.unix_socket, runtime_dir(spec)):
            # systemd empties RuntimeDirectory= whenever the service stops, deleting the
            # socket unit's file while the socket unit goes on listening on nothing.
            raise SpecError(
                f"unix-socket: with --socket the socket cannot live in {runtime_dir(spec)}/, "
                f"which systemd removes when the service stops; use e.g. "
                f"/run/{spec.name}-socket/app.sock"
            )
        in_tmp = under(spec.unix_socket, "/tmp", "/var/tmp")
        if in_tmp and not spec.socket and spec.dynamic_user:
            # DynamicUser= implies PrivateTmp=yes, which cannot be switched off.
            raise SpecError(
                "unix-socket: a dynamic user's /tmp is private, so no proxy can reach a socket "
                f"there; use /run/{spec.name}/app.sock, --socket, or set user"
            )
        return
    if spec.socket:
        try:
            ipaddress.ip_address(spec.host)
        except ValueError:
            raise SpecError(
                f"host: a .socket unit listens on an IP address, not a host name ({spec.host!r})"
            ) from None


def listen_address(spec: AppSpec) -> str:
    """The ListenStream= value of the socket unit."""
    if spec.unix_socket:
        return spec.unix_socket
    host = f"[{spec.host}]" if ":" in spec.host else spec.host
    return f"{host}:{spec.port}"


def render_units(spec: AppSpec, network: NetworkDecision | None = None) -> list[RenderedFile]:
    """Render NAME.service, and NAME.socket when the spec asks for socket activation.

    ``network`` is what ``opskit.systemd.network.network_needs`` decided (the CLI passes
    it, to print its notes); without it the same decision is made from the spec alone,
    which is all the unit depends on. A spec the network rules would break is refused.
    """
    _validate_hidden_paths(spec)
    _validate_socket_spec(spec)
    network = network or decide(spec)
    if network.errors:
        more = len(network.errors) - 1
        raise SpecError(network.errors[0] + (f" (and {more} more like it)" if more else ""))
    server = server_unit(spec)
    directives, notes = hardening(spec, network)
    context = {
        "spec": spec,
        "server": server,
        "description": spec.description or f"{spec.name} ({spec.server})",
        "environment": environment(spec),
        "hardening": directives,
        "limits": resource_directives(spec),
        "hardening_notes": notes,
        "timeout_stop": spec.graceful_timeout + 10,
        "listen": systemd_value(listen_address(spec)),
    }
    context["watchdog"] = watchdog_enabled(spec)
    files = [RenderedFile(f"{spec.name}.service", render_template("systemd/service.j2", **context))]
    if spec.socket:
        files.append(
            RenderedFile(f"{spec.name}.socket", render_template("systemd/socket.j2", **context))
        )
    if context["watchdog"]:
        files += render_watchdog(spec, context)
    files += render_config_watch(spec)
    for file in files:
        _refuse_long_lines(file)
    return files


#: systemd reads a unit file a line at a time into a buffer of LONG_LINE_MAX (1 MiB),
#: newline included; a longer line fails the whole unit ("No buffer space available").
LINE_MAX = 1024 * 1024 - 1


def _refuse_long_lines(file: RenderedFile) -> None:
    for line in file.content.split("\n"):
        size = len(line.encode())
        if size > LINE_MAX:
            directive = line.split("=", 1)[0]
            raise SpecError(
                f"{directive}=: a value makes this line of {file.name} {size} bytes long; "
                f"systemd reads at most {LINE_MAX} bytes a line and would not load the unit"
            )
