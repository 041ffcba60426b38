"""Validators for the values of the app spec, by the rules of the programs that read them.

Each takes the key it validates (for the message) and the raw value from TOML or a flag,
and returns the value or raises SpecError naming the key: systemd's rules for unit names,
paths, executables and unit-file text, IPAddressAllow= entries, and the plain types.
``opskit.spec`` puts them together into an AppSpec.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
from collections.abc import Mapping
from typing import Any

from opskit.errors import SpecError

# systemd.unit(5) allows ASCII letters, digits, ":", "-", "_", ".", "\\" (and "@" for
# templates), at most 255 bytes with the suffix. The name also becomes RuntimeDirectory=,
# StateDirectory= and SyslogIdentifier=, where ":" means a symlink (systemd >= 250) and "\\"
# an escape, so opskit accepts the subset that is safe in all of them.
UNIT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
LONGEST_SUFFIX = len(".service")
# UNIT_NAME_MAX is 256 including the final NUL: 255 characters with the suffix, which is
# also NAME_MAX for the file.
UNIT_NAME_MAX = 255
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# A Python import path with an attribute: "package.module:attribute".
APP_PATH = re.compile(
    r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_.]*(\(.*\))?$"
)
LOGGER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
# systemd's strict user-name rules (a longer name or a trailing "$" draws a warning from
# every systemd-analyze verify): at most 31 characters, to fit utmp.
USER = re.compile(r"^[a-z_][a-z0-9_-]*$")
USER_MAX = 31
# A unix socket path must fit sockaddr_un.sun_path (108 bytes with the final NUL).
SUN_PATH_MAX = 107
# [0-9], not \d: \d matches every Unicode digit (Arabic-Indic, full-width ...).
ASCII_DIGITS = re.compile(r"[0-9]+")
DURATION = re.compile(r"[0-9]+(\.[0-9]+)?(ms|s|min)?")

# The words IPAddressAllow= takes besides addresses and prefixes (systemd.resource-control(5)).
IP_ADDRESS_WORDS = ("any", "localhost", "link-local", "multicast")


def validate_text(key: str, value: Any, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise SpecError(f"{key}: expected a string, got {type(value).__name__} {value!r}")
    if not value and not allow_empty:
        raise SpecError(f"{key}: must not be empty")
    for char in value:
        # A newline would inject a new directive into a unit file; other control
        # characters have no business in any artifact opskit writes.
        if ord(char) < 0x20 or ord(char) == 0x7F:
            raise SpecError(f"{key}: control character {char!r} is not allowed in {value!r}")
        if not_unit_text(char):
            raise SpecError(f"{key}: character {char!r} is not allowed in {value!r}")
    return value


def not_unit_text(char: str) -> bool:
    # A lone surrogate (undecodable bytes in argv) cannot be written as UTF-8 at all, and
    # systemd's utf8_is_valid() also refuses Unicode noncharacters (U+FDD0..U+FDEF and
    # U+xFFFE/U+xFFFF): it drops the whole line ("String is not UTF-8 clean, ignoring").
    code = ord(char)
    return 0xD800 <= code <= 0xDFFF or 0xFDD0 <= code <= 0xFDEF or (code & 0xFFFE) == 0xFFFE


def validate_path(key: str, value: Any) -> str:
    """Validate an absolute path by the rules systemd applies to it and return it."""
    path = validate_text(key, value)
    if not path.startswith("/"):
        raise SpecError(f"{key}: must be an absolute path, got {path!r}")
    # systemd refuses paths with "." or ".." components ("path is not normalized") and
    # drops the directive, WorkingDirectory= and ExecStart= fatally.
    if any(part in (".", "..") for part in path.split("/")):
        raise SpecError(f"{key}: must not contain '.' or '..' components, got {path!r}")
    if path.endswith(" "):
        # systemd strips it from a whole-line value: WorkingDirectory= would name another path.
        raise SpecError(f"{key}: must not end with a space, got {path!r}")
    validate_line_end(key, path)
    return path


def validate_line_end(key: str, value: str) -> None:
    # A unit-file line ending in an odd number of backslashes continues on the next line:
    # "WorkingDirectory=/srv/app\" would swallow the line after it (DynamicUser=yes).
    if (len(value) - len(value.rstrip("\\"))) % 2:
        raise SpecError(f"{key}: must not end with a backslash, got {value!r}")


def validate_executable(key: str, path: str) -> None:
    # systemd's string_is_safe() refuses quotes and backslashes in the executable of an
    # Exec line, however they are quoted ("Executable name contains special characters").
    if any(c in path for c in "\\\"'"):
        raise SpecError(f"{key}: systemd refuses quotes or backslashes in {path!r}")
    if path.endswith("/"):
        raise SpecError(f"{key}: names a directory, not an executable: {path!r}")


def validate_bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise SpecError(f"{key}: expected true or false, got {value!r}")
    return value


def validate_int(key: str, value: Any, low: int, high: int) -> int:
    # ASCII digits only: str.isdigit() and int() also take superscripts, Arabic-Indic
    # or full-width digits, which no program reading the unit would (and int() raises
    # on a superscript).
    if isinstance(value, str) and ASCII_DIGITS.fullmatch(value.strip()):
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise SpecError(f"{key}: expected a whole number from {low} to {high}, got {value!r}")
    return value


def validate_choice(key: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise SpecError(f"{key}: expected one of {', '.join(choices)}, got {value!r}")
    return str(value)


def validate_str_list(key: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        raise SpecError(f"{key}: expected a list of strings, got the string {value!r}")
    if not isinstance(value, (list, tuple)):
        raise SpecError(f"{key}: expected a list of strings, got {value!r}")
    return tuple(
        validate_text(f"{key}[{i}]", item, allow_empty=True) for i, item in enumerate(value)
    )


def validate_pairs(key: str, value: Any, name_re: re.Pattern[str]) -> tuple[tuple[str, str], ...]:
    if isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, (list, tuple)):
        items = []
        for item in value:
            text = validate_text(key, item)
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
        pairs.append((name, validate_text(f"{key}.{name}", val, allow_empty=True)))
    return tuple(pairs)


def validate_unit_name(name: Any) -> str:
    """Validate a unit name by systemd's rules and return it."""
    text = validate_text("name", name)
    if "@" in text:
        raise SpecError(f"name: template units ('@') are not generated, got {text!r}")
    if not UNIT_NAME.fullmatch(text):
        raise SpecError(
            f"name: {text!r} is not a valid unit name "
            "(an ASCII letter or digit, then letters, digits, '-', '_', '.')"
        )
    if len(text) + LONGEST_SUFFIX > UNIT_NAME_MAX:
        raise SpecError(
            f"name: at most {UNIT_NAME_MAX - LONGEST_SUFFIX} characters, got {len(text)}"
        )
    return text


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


# The directories of the system itself, which ProtectSystem= and ProtectHome= keep
# read-only (or hidden) and which the kernel's pseudo-file systems live in. A service
# that may write one of them, or a directory above one, may rewrite the host: with
# User=root every root-owned file there (/etc/passwd, /etc/systemd/system) is writable,
# since owning a file needs no capability. /efi is the ESP beside /boot; /var/run is a
# symlink to /run on every systemd system, and ReadWritePaths= follows symlinks.
SYSTEM_DIRECTORIES = (
    "/etc",
    "/usr",
    "/boot",
    "/efi",
    "/proc",
    "/sys",
    "/dev",
    "/home",
    "/root",
    "/var",
    "/run",
    "/var/run",
)


def normalised_path(path: str) -> str:
    """``path`` with ``.``, ``..``, repeated and trailing slashes resolved, as the kernel reads it.

    posixpath.normpath alone keeps a leading ``//`` (POSIX leaves its meaning open; Linux
    reads it as ``/``), so the path is made to start with exactly one.
    """
    return posixpath.normpath("/" + path.lstrip("/"))


def system_directory(path: str) -> str | None:
    """What makes ``path`` dangerous to write: the system directory it is or holds, else None.

    ``/etc`` is one; ``/`` holds them all; ``/srv/shop`` and ``/run/shop`` are neither.
    """
    target = normalised_path(path)
    if target in SYSTEM_DIRECTORIES:
        return f"the system directory {target}"
    held = [d for d in SYSTEM_DIRECTORIES if d.startswith(target.rstrip("/") + "/")]
    if held:
        return f"{target}, which holds the system directories {', '.join(held[:3])} ..."
    return None


def validate_writable_path(key: str, value: Any, name: str) -> str:
    """Validate a path for ReadWritePaths= (``name`` is the unit's) and return it as given."""
    path = validate_path(key, value)
    danger = system_directory(path)
    if danger is not None:
        raise SpecError(
            f"{key}: ReadWritePaths={path!r} would let the service rewrite {danger}; "
            f"give a directory of the app's own, such as /srv/{name}/data, or write to "
            f"/var/lib/{name} (StateDirectory=, writable already)"
        )
    return path


_PERCENT = re.compile(r"([1-9][0-9]?|100)%")


def validate_serial(key: str, value: Any) -> tuple[int | str, ...]:
    """Ansible's ``serial``: hosts per batch (1 or more), "N%" (1-100), or a list of them."""
    items = value if isinstance(value, (list, tuple)) else [value]
    if not items:
        raise SpecError(f"{key}: an empty list (give a batch size, like 1 or '25%')")
    out: list[int | str] = []
    for item in items:
        if isinstance(item, str) and item.strip().isdigit():
            item = int(item)
        if isinstance(item, bool) or not isinstance(item, (int, str)):
            raise SpecError(f"{key}: {item!r} must be a host count or a percentage like '25%'")
        if isinstance(item, int):
            if not 1 <= item <= 10000:
                raise SpecError(f"{key}: {item} must be 1 to 10000 hosts")
        elif _PERCENT.fullmatch(item.strip()) is None:
            raise SpecError(f"{key}: {item!r} must be a host count or a percentage like '25%'")
        else:
            item = item.strip()
        out.append(item)
    return tuple(out)
