"""The app spec: one validated, frozen description of a service that every generator reads."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from opskit.errors import SpecError

SERVERS = ("gunicorn", "uvicorn", "uwsgi", "command")
PROFILES = ("default", "relaxed", "off")
LOG_FORMATS = ("plain", "journald", "json")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
SUPERVISORS = ("systemd", "pidfile")

# systemd.unit(5) allows ASCII letters, digits, ":", "-", "_", ".", "\\" (and "@" for
# templates), at most 255 bytes with the suffix. The name also becomes RuntimeDirectory=,
# StateDirectory= and SyslogIdentifier=, where ":" means a symlink (systemd >= 250) and "\\"
# an escape, so opskit accepts the subset that is safe in all of them.
_UNIT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_LONGEST_SUFFIX = len(".service")
# UNIT_NAME_MAX is 256 including the final NUL: 255 characters with the suffix, which is
# also NAME_MAX for the file.
_UNIT_NAME_MAX = 255
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# A Python import path with an attribute: "package.module:attribute".
_APP_PATH = re.compile(
    r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_.]*(\(.*\))?$"
)
_LOGGER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
# systemd's strict user-name rules (a longer name or a trailing "$" draws a warning from
# every systemd-analyze verify): at most 31 characters, to fit utmp.
_USER = re.compile(r"^[a-z_][a-z0-9_-]*$")
_USER_MAX = 31
# A unix socket path must fit sockaddr_un.sun_path (108 bytes with the final NUL).
_SUN_PATH_MAX = 107
_DURATION = re.compile(r"^\d+(\.\d+)?(ms|s|min)?$")


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
    log_config: str | None = None
    log_format: str | None = None
    log_level: str = "INFO"
    loggers: tuple[tuple[str, str], ...] = ()
    smoke: str | None = None
    # Reload script: who runs the server (systemd, or a pidfile for anything else), and a
    # file the app reads its version from at import, which the script fills with a deploy id.
    supervisor: str = "systemd"
    pidfile: str | None = None
    deploy_id_file: str | None = None
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
# The words IPAddressAllow= takes besides addresses and prefixes (systemd.resource-control(5)).
IP_ADDRESS_WORDS = ("any", "localhost", "link-local", "multicast")
SPEC_KEYS = tuple(f.name for f in fields(AppSpec) if f.name != "hardening")


def _validate_text(key: str, value: Any, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise SpecError(f"{key}: expected a string, got {type(value).__name__} {value!r}")
    if not value and not allow_empty:
        raise SpecError(f"{key}: must not be empty")
    for char in value:
        # A newline would inject a new directive into a unit file; other control
        # characters have no business in any artifact opskit writes.
        if ord(char) < 0x20 or ord(char) == 0x7F:
            raise SpecError(f"{key}: control character {char!r} is not allowed in {value!r}")
        if _not_unit_text(char):
            raise SpecError(f"{key}: character {char!r} is not allowed in {value!r}")
    return value


def _not_unit_text(char: str) -> bool:
    # A lone surrogate (undecodable bytes in argv) cannot be written as UTF-8 at all, and
    # systemd's utf8_is_valid() also refuses Unicode noncharacters (U+FDD0..U+FDEF and
    # U+xFFFE/U+xFFFF): it drops the whole line ("String is not UTF-8 clean, ignoring").
    code = ord(char)
    return 0xD800 <= code <= 0xDFFF or 0xFDD0 <= code <= 0xFDEF or (code & 0xFFFE) == 0xFFFE


def validate_path(key: str, value: Any) -> str:
    """Validate an absolute path by the rules systemd applies to it and return it."""
    path = _validate_text(key, value)
    if not path.startswith("/"):
        raise SpecError(f"{key}: must be an absolute path, got {path!r}")
    # systemd refuses paths with "." or ".." components ("path is not normalized") and
    # drops the directive, WorkingDirectory= and ExecStart= fatally.
    if any(part in (".", "..") for part in path.split("/")):
        raise SpecError(f"{key}: must not contain '.' or '..' components, got {path!r}")
    if path.endswith(" "):
        # systemd strips it from a whole-line value: WorkingDirectory= would name another path.
        raise SpecError(f"{key}: must not end with a space, got {path!r}")
    _validate_line_end(key, path)
    return path


def _validate_line_end(key: str, value: str) -> None:
    # A unit-file line ending in an odd number of backslashes continues on the next line:
    # "WorkingDirectory=/srv/app\" would swallow the line after it (DynamicUser=yes).
    if (len(value) - len(value.rstrip("\\"))) % 2:
        raise SpecError(f"{key}: must not end with a backslash, got {value!r}")


def _validate_executable(key: str, path: str) -> None:
    # systemd's string_is_safe() refuses quotes and backslashes in the executable of an
    # Exec line, however they are quoted ("Executable name contains special characters").
    if any(c in path for c in "\\\"'"):
        raise SpecError(f"{key}: systemd refuses quotes or backslashes in {path!r}")
    if path.endswith("/"):
        raise SpecError(f"{key}: names a directory, not an executable: {path!r}")


def _validate_bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise SpecError(f"{key}: expected true or false, got {value!r}")
    return value


def _validate_int(key: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise SpecError(f"{key}: expected a whole number from {low} to {high}, got {value!r}")
    return value


def _validate_choice(key: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise SpecError(f"{key}: expected one of {', '.join(choices)}, got {value!r}")
    return str(value)


def _validate_level(key: str, value: Any) -> str:
    level = _validate_text(key, value).upper()
    return _validate_choice(key, level, LEVELS)


def _validate_str_list(key: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        raise SpecError(f"{key}: expected a list of strings, got the string {value!r}")
    if not isinstance(value, (list, tuple)):
        raise SpecError(f"{key}: expected a list of strings, got {value!r}")
    return tuple(
        _validate_text(f"{key}[{i}]", item, allow_empty=True) for i, item in enumerate(value)
    )


def _validate_pairs(key: str, value: Any, name_re: re.Pattern[str]) -> tuple[tuple[str, str], ...]:
    if isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, (list, tuple)):
        items = []
        for item in value:
            text = _validate_text(key, item)
            if "=" not in text:
                raise SpecError(f"{key}: expected NAME=VALUE, got {text!r}")
            name, _, rest = text.partition("=")
            items.append((name, rest))
    else:
        raise SpecError(f"{key}: expected a table of NAME = VALUE, got {value!r}")
    pairs = []
    for name, val in items:
        if not isinstance(name, str) or not name_re.fullmatch(name):
            raise SpecError(f"{key}: invalid name {name!r}")
        if not isinstance(val, str):
            raise SpecError(f"{key}.{name}: expected a string, got {val!r}")
        pairs.append((name, _validate_text(f"{key}.{name}", val, allow_empty=True)))
    return tuple(pairs)


def validate_unit_name(name: Any) -> str:
    """Validate a unit name by systemd's rules and return it."""
    text = _validate_text("name", name)
    if "@" in text:
        raise SpecError(f"name: template units ('@') are not generated, got {text!r}")
    if not _UNIT_NAME.fullmatch(text):
        raise SpecError(
            f"name: {text!r} is not a valid unit name "
            "(an ASCII letter or digit, then letters, digits, '-', '_', '.')"
        )
    if len(text) + _LONGEST_SUFFIX > _UNIT_NAME_MAX:
        raise SpecError(
            f"name: at most {_UNIT_NAME_MAX - _LONGEST_SUFFIX} characters, got {len(text)}"
        )
    return text


def _build_hardening(raw: Mapping[str, Any]) -> Hardening:
    unknown = sorted(set(raw) - set(HARDENING_KEYS))
    if unknown:
        raise SpecError(
            f"hardening: unknown key {unknown[0].replace('_', '-')!r} "
            f"(allowed: {', '.join(k.replace('_', '-') for k in HARDENING_KEYS)})"
        )
    values: dict[str, Any] = {}
    if "profile" in raw:
        values["profile"] = _validate_choice("hardening.profile", raw["profile"], PROFILES)
    if "writable_paths" in raw:
        paths = _validate_str_list("hardening.writable-paths", raw["writable_paths"])
        values["writable_paths"] = tuple(
            validate_path("hardening.writable-paths", p) for p in paths
        )
    if "ip_address_allow" in raw:
        entries = _validate_str_list("hardening.ip-address-allow", raw["ip_address_allow"])
        allow = (
            validate_ip_entry(f"hardening.ip-address-allow[{i}]", e) for i, e in enumerate(entries)
        )
        values["ip_address_allow"] = tuple(dict.fromkeys(allow))
    for key in ("allow_outbound", "allow_home", "allow_wx"):
        if key in raw:
            values[key] = _validate_bool(f"hardening.{key.replace('_', '-')}", raw[key])
    return Hardening(**values)


def validate_ip_entry(key: str, value: str) -> str:
    """One IPAddressAllow= entry: an address, an address/prefix, or one of systemd's words.

    Returned normalised (``2001:DB8::5`` -> ``2001:db8::5``). systemd drops an entry it
    cannot parse ("Address prefix is invalid, ignoring assignment"), which would leave
    the app denied: a zone (``fe80::1%eth0``) or a prefix beyond /32 (/128) is refused here.
    """
    text = value.strip().lower()
    if text in IP_ADDRESS_WORDS:
        return text
    try:
        if "%" in text:
            raise ValueError("a zone (%...) is not accepted by systemd")
        if "/" in text:
            return str(ipaddress.ip_interface(text))
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise SpecError(
            f"{key}: expected an IP address, ADDRESS/PREFIX or one of "
            f"{', '.join(IP_ADDRESS_WORDS)}, got {value!r}"
        ) from None


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
    server = v["server"] = _validate_choice("server", raw.get("server", "gunicorn"), SERVERS)

    if "app" in raw and raw["app"] is not None:
        app = _validate_text("app", raw["app"])
        if not _APP_PATH.fullmatch(app):
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
        v["command"] = _validate_str_list("command", command)
    if server == "command":
        if not v.get("command"):
            raise SpecError("command: required when server = 'command'")
        validate_path("command[0] (the executable)", v["command"][0])
        _validate_executable("command[0] (the executable)", v["command"][0])
    elif "app" not in v:
        raise SpecError(
            f"app: required for server = {server!r} (an import path like 'pkg.wsgi:app')"
        )

    if raw.get("unix_socket") is not None:
        v["unix_socket"] = validate_path("unix-socket", raw["unix_socket"])
        if len(v["unix_socket"].encode()) > _SUN_PATH_MAX:
            raise SpecError(
                f"unix-socket: at most {_SUN_PATH_MAX} bytes (sun_path), got {v['unix_socket']!r}"
            )
        v["port"] = None
    else:
        if "port" in raw and raw["port"] is not None:
            v["port"] = _validate_int("port", raw["port"], 1, 65535)
        if "host" in raw:
            host = _validate_text("host", raw["host"])
            if any(c.isspace() or c in "/[]" for c in host):
                raise SpecError(f"host: expected an address or host name, got {host!r}")
            v["host"] = host
    if "workers" in raw:
        v["workers"] = _validate_int("workers", raw["workers"], 1, 512)
    for key in ("user", "group"):
        if raw.get(key) is not None:
            text = _validate_text(key, raw[key])
            if not _USER.fullmatch(text) or len(text) > _USER_MAX:
                raise SpecError(f"{key}: {text!r} is not a valid user or group name")
            v[key] = text
    if raw.get("group") is not None and raw.get("user") is None:
        raise SpecError("group: needs user as well (without user, systemd allocates both)")
    if "working_directory" in raw:
        v["working_directory"] = validate_path("working-directory", raw["working_directory"])
    if raw.get("venv") is not None:
        v["venv"] = validate_path("venv", raw["venv"]).rstrip("/") or "/"
    if "environment" in raw:
        v["environment"] = _validate_pairs("environment", raw["environment"], _ENV_NAME)
    if raw.get("environment_file") is not None:
        v["environment_file"] = validate_path("environment-file", raw["environment_file"])
    if "graceful_timeout" in raw:
        v["graceful_timeout"] = _validate_int("graceful-timeout", raw["graceful_timeout"], 1, 3600)
    for key in ("health_path", "version_path"):
        if raw.get(key) is not None:
            path = _validate_text(key.replace("_", "-"), raw[key])
            if not path.startswith("/") or any(c.isspace() for c in path):
                raise SpecError(f"{key.replace('_', '-')}: expected a URL path like '/health'")
            v[key] = path
    if "restart_sec" in raw:
        sec = str(raw["restart_sec"]).strip()
        if not _DURATION.fullmatch(sec):
            raise SpecError(f"restart-sec: expected a duration like 5, 500ms or 1min, got {sec!r}")
        v["restart_sec"] = sec
    for key in ("socket", "preload", "lazy_apps"):
        if key in raw:
            v[key] = _validate_bool(key.replace("_", "-"), raw[key])
    if raw.get("description") is not None:
        v["description"] = _validate_text("description", raw["description"])
        _validate_line_end("description", v["description"])
    if "server_args" in raw:
        v["server_args"] = _validate_str_list("server-args", raw["server_args"])
    if raw.get("log_config") is not None:
        v["log_config"] = validate_path("log-config", raw["log_config"])
    if raw.get("log_format") is not None:
        v["log_format"] = _validate_choice("log-format", raw["log_format"], LOG_FORMATS)
    if "log_level" in raw:
        v["log_level"] = _validate_level("log-level", raw["log_level"])
    if "loggers" in raw:
        pairs = _validate_pairs("loggers", raw["loggers"], _LOGGER_NAME)
        v["loggers"] = tuple((n, _validate_level(f"loggers.{n}", lvl)) for n, lvl in pairs)
    if raw.get("smoke") is not None:
        v["smoke"] = _validate_text("smoke", raw["smoke"])
    if "supervisor" in raw:
        v["supervisor"] = _validate_choice("supervisor", raw["supervisor"], SUPERVISORS)
    for key in ("pidfile", "deploy_id_file"):
        if raw.get(key) is not None:
            v[key] = validate_path(key.replace("_", "-"), raw[key])
    if "hardening" in raw:
        hardening = raw["hardening"]
        if not isinstance(hardening, Mapping):
            raise SpecError(f"hardening: expected a table, got {hardening!r}")
        v["hardening"] = _build_hardening(hardening)
    spec = AppSpec(**v)
    if spec.server != "command":
        _validate_executable("venv" if spec.venv else "working-directory", spec.venv_path)
    if spec.socket and spec.server == "command":
        raise SpecError(
            "socket: socket activation needs a server that reads the socket "
            "(gunicorn, uvicorn or uwsgi), not server = 'command'"
        )
    return spec
