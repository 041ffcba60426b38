"""The app spec: one validated, frozen description of a service that every generator reads."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from opskit.errors import SpecError
from opskit.validate import (
    APP_PATH,
    DURATION,
    ENV_NAME,
    LOGGER_NAME,
    SUN_PATH_MAX,
    USER,
    USER_MAX,
    validate_bool,
    validate_choice,
    validate_executable,
    validate_int,
    validate_ip_entry,
    validate_line_end,
    validate_pairs,
    validate_path,
    validate_serial,
    validate_str_list,
    validate_text,
    validate_unit_name,
    validate_writable_path,
)

SERVERS = ("gunicorn", "uvicorn", "uwsgi", "command")
PROFILES = ("default", "relaxed", "off")
LOG_FORMATS = ("plain", "journald", "json")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
SUPERVISORS = ("systemd", "pidfile")
INSTALLERS = ("pip", "uv")


@dataclass(frozen=True)
class Hardening:
    """Which hardening profile a unit gets, and the targeted escape hatches from it."""

    profile: str = "default"
    writable_paths: tuple[str, ...] = ()
    allow_outbound: bool = False
    #: IPAddressAllow= entries besides localhost (IPAddressDeny=any stays).
    ip_address_allow: tuple[str, ...] = ()
    allow_home: bool = False
    allow_wx: bool = False


@dataclass(frozen=True)
class AppSpec:
    """A Python web service, as every opskit generator sees it."""

    name: str
    server: str = "gunicorn"
    app: str | None = None
    command: tuple[str, ...] = ()
    host: str = "127.0.0.1"
    port: int | None = 8000
    unix_socket: str | None = None
    workers: int = 2
    user: str | None = None
    group: str | None = None
    working_directory: str = "/srv/app"
    venv: str | None = None
    environment: tuple[tuple[str, str], ...] = ()
    environment_file: str | None = None
    graceful_timeout: int = 30
    # No default: most apps have neither route. Unset, probes use "/" (any answer below
    # 500 is alive) and the reload script proves new code by its processes alone.
    health_path: str | None = None
    version_path: str | None = None
    restart_sec: str = "5"
    socket: bool = False
    description: str | None = None
    server_args: tuple[str, ...] = ()
    preload: bool = False
    lazy_apps: bool = True
    # uvicorn: keep connections open between requests (off: every answer says
    # Connection: close, so no reload closes an idle connection under a client).
    keep_alive: bool = False
    # Reload script: boot the new code in a throwaway server before signalling the real one.
    canary: bool = True
    log_config: str | None = None
    log_format: str | None = None
    log_level: str = "INFO"
    loggers: tuple[tuple[str, str], ...] = ()
    smoke: str | None = None
    # Upgrade: pip or uv; unset, pip, or uv in a venv without pip.
    installer: str | None = None
    # Reload script: who runs the server (systemd, or a pidfile for anything else), and a
    # file the app reads its version from at import, which the script fills with a deploy id.
    supervisor: str = "systemd"
    pidfile: str | None = None
    deploy_id_file: str | None = None
    # Hung and leaking services (docs/limits.md): a worker silent this long is killed and
    # replaced (gunicorn --timeout, uWSGI harakiri; 0: off); workers are recycled after
    # this many requests (0: off); the cgroup's limits; the watchdog's probe interval
    # (0: off) and K: K x that interval without an answer restarts the service.
    worker_timeout: int = 30
    max_requests: int = 10000
    memory_max: str = "50%"
    memory_high: str | None = None
    tasks_max: str = "1024"
    nofile: int = 65536
    oom_policy: str | None = None
    watchdog: int = 10
    watchdog_failures: int = 3
    # Files or directories whose change reloads the service, verified (NAME-config.path).
    watch: tuple[str, ...] = ()
    # Releases (docs/deploy.md): BASE/releases/ID each with its code and venv, BASE/current
    # the live one. With a base, the service runs from BASE/current and its venv.
    base: str | None = None
    keep_releases: int = 5
    # Paths relative to a release that live in BASE/shared and are linked into each one.
    shared: tuple[str, ...] = ()
    # Commands run in the new release before the switch (Django: migrate, collectstatic).
    pre_switch: tuple[str, ...] = ()
    # The Python that creates each release's venv.
    interpreter: str = "python3"
    # A fleet rollout (opskit ansible): hosts per batch, a count or "N%", or a ramp of them.
    serial: tuple[int | str, ...] = (1,)
    hardening: Hardening = field(default_factory=Hardening)

    @property
    def venv_path(self) -> str:
        """The virtual environment the server runs from (default: WORKDIR/.venv)."""
        return self.venv or f"{self.working_directory.rstrip('/')}/.venv"

    @property
    def python(self) -> str:
        """The interpreter of the app's environment."""
        return f"{self.venv_path}/bin/python"

    @property
    def dynamic_user(self) -> bool:
        """Whether systemd allocates a throwaway user (no user given)."""
        return self.user is None

    @property
    def bind(self) -> str:
        """The address in the servers' own syntax: ``host:port`` or ``unix:/path``."""
        if self.unix_socket:
            return f"unix:{self.unix_socket}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def reloadable(self) -> bool:
        """Whether a SIGHUP loads new code (not gunicorn --preload; uvicorn only with workers >= 2).

        gunicorn with --preload imports the app once in the master, so a HUP forks new
        workers from the old code; uWSGI's HUP re-executes the whole stack.
        """
        if self.server == "gunicorn":
            return not self.preload
        if self.server == "uwsgi":
            return True
        return self.server == "uvicorn" and self.workers >= 2


# The keys a configuration file may hold, in the order docs/configuration.md lists them.
# Kebab-case in TOML (like pyproject's other tables), snake_case in Python.
HARDENING_KEYS = (
    "profile",
    "writable_paths",
    "allow_outbound",
    "ip_address_allow",
    "allow_home",
    "allow_wx",
)
SPEC_KEYS = tuple(f.name for f in fields(AppSpec) if f.name != "hardening")


def _validate_level(key: str, value: Any) -> str:
    level = validate_text(key, value).upper()
    return validate_choice(key, level, LEVELS)


def _build_hardening(raw: Mapping[str, Any], name: str) -> Hardening:
    unknown = sorted(set(raw) - set(HARDENING_KEYS))
    if unknown:
        raise SpecError(
            f"hardening: unknown key {unknown[0].replace('_', '-')!r} "
            f"(allowed: {', '.join(k.replace('_', '-') for k in HARDENING_KEYS)})"
        )
    values: dict[str, Any] = {}
    if "profile" in raw:
        values["profile"] = validate_choice("hardening.profile", raw["profile"], PROFILES)
    if "writable_paths" in raw:
        paths = validate_str_list("hardening.writable-paths", raw["writable_paths"])
        values["writable_paths"] = tuple(
            validate_writable_path("hardening.writable-paths", p, name) for p in paths
        )
    if "ip_address_allow" in raw:
        entries = validate_str_list("hardening.ip-address-allow", raw["ip_address_allow"])
        allow = (
            validate_ip_entry(f"hardening.ip-address-allow[{i}]", e) for i, e in enumerate(entries)
        )
        values["ip_address_allow"] = tuple(dict.fromkeys(allow))
    for key in ("allow_outbound", "allow_home", "allow_wx"):
        if key in raw:
            values[key] = validate_bool(f"hardening.{key.replace('_', '-')}", raw[key])
    return Hardening(**values)


OOM_POLICIES = ("continue", "stop", "kill")
# MemoryMax= and friends: bytes with an optional K, M, G or T (base 1024), a percentage
# of the host's memory, or infinity (systemd.resource-control(5)).
_SIZE = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?[KMGT]?|[0-9]+(?:\.[0-9]+)?%|infinity)")


def _size(key: str, value: Any) -> str:
    text = str(value).strip() if isinstance(value, (str, int)) else ""
    if isinstance(value, bool) or not _SIZE.fullmatch(text):
        raise SpecError(
            f"{key}: expected bytes (512M, 2G), a percentage of the host's memory (50%) "
            f"or infinity, got {value!r}"
        )
    if text.endswith("%") and not 0 < float(text[:-1]) <= 100:
        raise SpecError(f"{key}: a percentage from 0 to 100, got {value!r}")
    return text


def _limits(raw: Mapping[str, Any], v: dict[str, Any]) -> None:
    """The keys against hung and leaking services."""
    for key, low, high in (
        ("worker_timeout", 0, 86400),
        ("max_requests", 0, 10**9),
        ("nofile", 64, 1 << 20),
        ("watchdog", 0, 3600),
        ("watchdog_failures", 1, 100),
    ):
        if key in raw:
            v[key] = validate_int(key.replace("_", "-"), raw[key], low, high)
    for key in ("memory_max", "memory_high"):
        if raw.get(key) is not None:
            v[key] = _size(key.replace("_", "-"), raw[key])
    if "tasks_max" in raw:
        tasks = str(raw["tasks_max"]).strip()
        if tasks != "infinity":
            tasks = str(validate_int("tasks-max", raw["tasks_max"], 16, 1 << 22))
        v["tasks_max"] = tasks
    if "watch" in raw:
        watched = [
            validate_path("watch", p).rstrip("/") or "/"
            for p in validate_str_list("watch", raw["watch"])
        ]
        v["watch"] = tuple(dict.fromkeys(watched))
    if raw.get("oom_policy") is not None:
        v["oom_policy"] = validate_choice("oom-policy", raw["oom_policy"], OOM_POLICIES)


def _releases(raw: Mapping[str, Any], v: dict[str, Any]) -> None:
    """The release keys; a base fixes the working directory and the venv."""
    if "keep_releases" in raw:
        v["keep_releases"] = validate_int("keep-releases", raw["keep_releases"], 2, 1000)
    if "shared" in raw:
        shared = []
        for item in validate_str_list("shared", raw["shared"]):
            parts = item.strip("/").split("/")
            if item.startswith("/") or any(p in ("", ".", "..") for p in parts):
                raise SpecError(
                    f"shared: {item!r} must be a path inside the release, like 'media' or '.env'"
                )
            if parts[0] in ("venv", ".opskit-release.json"):
                raise SpecError(f"shared: {item!r} is the release's own")
            shared.append("/".join(parts))
        v["shared"] = tuple(dict.fromkeys(shared))
    if "pre_switch" in raw:
        v["pre_switch"] = validate_str_list("pre-switch", raw["pre_switch"])
    if raw.get("interpreter") is not None:
        v["interpreter"] = validate_text("interpreter", raw["interpreter"])
    if raw.get("serial") is not None:
        v["serial"] = validate_serial("serial", raw["serial"])
    if raw.get("base") is None:
        return
    base = validate_path("base", raw["base"]).rstrip("/")
    if base in ("", "/"):
        raise SpecError("base: must be a directory of its own, like /srv/NAME")
    v["base"] = base
    for key, derived in (
        ("working_directory", f"{base}/current"),
        ("venv", f"{base}/current/venv"),
    ):
        given = v.get(key)
        if given is not None and given.rstrip("/") != derived:
            raise SpecError(
                f"{key.replace('_', '-')}: with base = {base!r} the service runs from "
                f"{derived}; remove {key.replace('_', '-')}"
            )
        v[key] = derived


def build_spec(raw: Mapping[str, Any]) -> AppSpec:
    """Validate a flat mapping of snake_case keys into an AppSpec; raise SpecError naming the field.

    ``raw`` is the merge of a configuration file and command-line overrides, with
    ``hardening`` as a nested mapping.
    """
    unknown = sorted(set(raw) - set(SPEC_KEYS) - {"hardening"})
    if unknown:
        raise SpecError(
            f"unknown key {unknown[0].replace('_', '-')!r} "
            f"(allowed: {', '.join(k.replace('_', '-') for k in (*SPEC_KEYS, 'hardening'))})"
        )
    if "name" not in raw:
        raise SpecError("name: missing (give it as an argument or as name = ... in the config)")
    v: dict[str, Any] = {"name": validate_unit_name(raw["name"])}
    server = v["server"] = validate_choice("server", raw.get("server", "gunicorn"), SERVERS)

    if "app" in raw and raw["app"] is not None:
        app = validate_text("app", raw["app"])
        if not APP_PATH.fullmatch(app):
            raise SpecError(f"app: expected an import path like 'package.module:app', got {app!r}")
        v["app"] = app
    if "command" in raw and raw["command"] is not None:
        command = raw["command"]
        if isinstance(command, str):
            import shlex

            try:
                command = shlex.split(command)
            except ValueError as exc:
                raise SpecError(f"command: cannot split {command!r}: {exc}") from None
        v["command"] = validate_str_list("command", command)
    if server == "command":
        if not v.get("command"):
            raise SpecError("command: required when server = 'command'")
        validate_path("command[0] (the executable)", v["command"][0])
        validate_executable("command[0] (the executable)", v["command"][0])
    elif "app" not in v:
        raise SpecError(
            f"app: required for server = {server!r} (an import path like 'pkg.wsgi:app')"
        )

    if raw.get("unix_socket") is not None:
        v["unix_socket"] = validate_path("unix-socket", raw["unix_socket"])
        if len(v["unix_socket"].encode()) > SUN_PATH_MAX:
            raise SpecError(
                f"unix-socket: at most {SUN_PATH_MAX} bytes (sun_path), got {v['unix_socket']!r}"
            )
        v["port"] = None
    else:
        if "port" in raw and raw["port"] is not None:
            v["port"] = validate_int("port", raw["port"], 1, 65535)
        if "host" in raw:
            host = validate_text("host", raw["host"])
            if any(c.isspace() or c in "/[]" for c in host):
                raise SpecError(f"host: expected an address or host name, got {host!r}")
            v["host"] = host
    if "workers" in raw:
        v["workers"] = validate_int("workers", raw["workers"], 1, 512)
    for key in ("user", "group"):
        if raw.get(key) is not None:
            text = validate_text(key, raw[key])
            if not USER.fullmatch(text) or len(text) > USER_MAX:
                raise SpecError(f"{key}: {text!r} is not a valid user or group name")
            v[key] = text
    if raw.get("group") is not None and raw.get("user") is None:
        raise SpecError("group: needs user as well (without user, systemd allocates both)")
    if "working_directory" in raw:
        v["working_directory"] = validate_path("working-directory", raw["working_directory"])
    if raw.get("venv") is not None:
        v["venv"] = validate_path("venv", raw["venv"]).rstrip("/") or "/"
    if "environment" in raw:
        v["environment"] = validate_pairs("environment", raw["environment"], ENV_NAME)
    if raw.get("environment_file") is not None:
        v["environment_file"] = validate_path("environment-file", raw["environment_file"])
    if "graceful_timeout" in raw:
        v["graceful_timeout"] = validate_int("graceful-timeout", raw["graceful_timeout"], 1, 3600)
    for key in ("health_path", "version_path"):
        if raw.get(key) is not None:
            path = validate_text(key.replace("_", "-"), raw[key])
            if not path.startswith("/") or any(c.isspace() for c in path):
                raise SpecError(f"{key.replace('_', '-')}: expected a URL path like '/health'")
            v[key] = path
    if "restart_sec" in raw:
        sec = str(raw["restart_sec"]).strip()
        if not DURATION.fullmatch(sec):
            raise SpecError(f"restart-sec: expected a duration like 5, 500ms or 1min, got {sec!r}")
        v["restart_sec"] = sec
    for key in ("socket", "preload", "lazy_apps", "canary", "keep_alive"):
        if key in raw:
            v[key] = validate_bool(key.replace("_", "-"), raw[key])
    if raw.get("description") is not None:
        v["description"] = validate_text("description", raw["description"])
        validate_line_end("description", v["description"])
    if "server_args" in raw:
        v["server_args"] = validate_str_list("server-args", raw["server_args"])
    if raw.get("log_config") is not None:
        v["log_config"] = validate_path("log-config", raw["log_config"])
    if raw.get("log_format") is not None:
        v["log_format"] = validate_choice("log-format", raw["log_format"], LOG_FORMATS)
    if "log_level" in raw:
        v["log_level"] = _validate_level("log-level", raw["log_level"])
    if "loggers" in raw:
        pairs = validate_pairs("loggers", raw["loggers"], LOGGER_NAME)
        v["loggers"] = tuple((n, _validate_level(f"loggers.{n}", lvl)) for n, lvl in pairs)
    if raw.get("smoke") is not None:
        v["smoke"] = validate_text("smoke", raw["smoke"])
    if raw.get("installer") is not None:
        v["installer"] = validate_choice("installer", raw["installer"], INSTALLERS)
    if "supervisor" in raw:
        v["supervisor"] = validate_choice("supervisor", raw["supervisor"], SUPERVISORS)
    for key in ("pidfile", "deploy_id_file"):
        if raw.get(key) is not None:
            v[key] = validate_path(key.replace("_", "-"), raw[key])
    _limits(raw, v)
    _releases(raw, v)
    if "hardening" in raw:
        hardening = raw["hardening"]
        if not isinstance(hardening, Mapping):
            raise SpecError(f"hardening: expected a table, got {hardening!r}")
        v["hardening"] = _build_hardening(hardening, v["name"])
    spec = AppSpec(**v)
    if spec.server != "command":
        validate_executable("venv" if spec.venv else "working-directory", spec.venv_path)
    if spec.socket and spec.server == "command":
        raise SpecError(
            "socket: socket activation needs a server that reads the socket "
            "(gunicorn, uvicorn or uwsgi), not server = 'command'"
        )
    return spec
