"""The installer, pip or uv: its command lines, which one an upgrade uses, pip's config for uv.

Both do the same three things for an upgrade: install exact pins without touching the
dependencies, check the environment, and put a snapshot back offline. pip runs as the
target's own ``python -I -m pip``; uv is one binary that is pointed at the target with
``--python``. uv reads neither pip.conf nor ``PIP_*`` (field facts), so the settings of
pip's that decide where packages come from are carried over to uv's own variables and
flags, each one said, and uv is left alone for the restore, which needs none of them.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opskit.errors import UsageError
from opskit.proc import Completed, Runner
from opskit.upgrade.pins import Pin
from opskit.upgrade.plan import CHECK_TIMEOUT, INSTALL_TIMEOUT

if TYPE_CHECKING:
    from opskit.upgrade.environment import Environment
    from opskit.upgrade.snapshot import Snapshot

#: ``pip`` flags on every call: no version check against an index, never a prompt.
PIP_QUIET = ("--disable-pip-version-check", "--no-input")

#: The uv releases opskit is tested with (pyproject's ``uv`` extra pins the same range).
UV_TESTED = ">=0.13.0,<0.14"

#: Seconds ``uv --version`` may take.
ASK_TIMEOUT = 60.0


def pip(python: str) -> list[str]:
    """The pip of ``python``, isolated: ``-m`` would also import a ``pip`` from the cwd."""
    return [python, "-I", "-m", "pip"]


def pip_install_argv(python: str, pins: Sequence[Pin], pip_args: Sequence[str] = ()) -> list[str]:
    """The pip install command: exact pins, no dependency changes, reinstalled in place."""
    # --no-deps: without it --force-reinstall re-resolves and may upgrade the whole
    # dependency closure; it also skips pip's conflict check, hence pip check after.
    return [
        *pip(python),
        "install",
        *PIP_QUIET,
        "--no-deps",
        "--force-reinstall",
        *pip_args,
        *(p.requirement for p in pins),
    ]


def pip_check_argv(python: str) -> list[str]:
    """The pip check command."""
    return [*pip(python), "check", *PIP_QUIET]


# uv's settings that choose what is installed; dropped from the restore's environment,
# which installs the snapshot and nothing else (pip's restore runs --isolated for this).
_RESOLUTION = re.compile(
    r"UV_(DEFAULT_INDEX|INDEX.*|EXTRA_INDEX_URL|FIND_LINKS|NO_INDEX|CONSTRAINT|OVERRIDE|"
    r"BUILD_CONSTRAINT|EXCLUDE.*|PRERELEASE|RESOLUTION|NO_BINARY.*|NO_BUILD.*|CONFIG_FILE|"
    r"LINK_MODE|TORCH_BACKEND|KEYRING_PROVIDER|REQUIRE_HASHES)"
)


@dataclass(frozen=True)
class Installer:
    """pip or uv for one interpreter: the commands that install, check and restore."""

    name: str
    python: str
    #: The uv executable (uv only).
    uv: str | None = None
    version: str | None = None
    #: uv's install arguments that carry pip's configuration (``--no-index`` ...).
    args: tuple[str, ...] = ()
    #: uv's install environment: the caller's plus pip's configuration (None: inherited).
    environ: Mapping[str, str] | None = field(default=None, compare=False)
    #: What was carried over from pip's configuration, and what was not, one line each.
    notes: tuple[str, ...] = ()

    @property
    def command(self) -> str:
        """How messages name it: ``pip`` (pip install, pip check) or ``uv pip``."""
        return "pip" if self.name == "pip" else "uv pip"

    def _base(self) -> list[str]:
        return pip(self.python) if self.uv is None else [self.uv, "pip"]

    def _target(self) -> list[str]:
        return [] if self.uv is None else ["--python", self.python]

    def install_argv(self, pins: Sequence[Pin], pip_args: Sequence[str] = ()) -> list[str]:
        """The one install command of an upgrade."""
        if self.uv is None:
            return pip_install_argv(self.python, pins, pip_args)
        # --reinstall with --no-deps reinstalls the named packages only; uv writes no
        # bytecode unless told, and pip does: --compile-bytecode keeps the two alike.
        return [
            *self._base(),
            "install",
            *self._target(),
            "--no-deps",
            "--reinstall",
            "--compile-bytecode",
            *self.args,
            *pip_args,
            *(p.requirement for p in pins),
        ]

    def check_argv(self) -> list[str]:
        """The verification command."""
        if self.uv is None:
            return pip_check_argv(self.python)
        return [*self._base(), "check", *self._target()]

    def restore_argvs(self, snapshot: Snapshot) -> list[list[str]]:
        """The commands that put the snapshot back, offline; also the manual recovery.

        The wheels are found by name in the snapshot directory rather than given as paths:
        pip records a path install in direct_url.json, and pip freeze would then show the
        package as installed from the (soon deleted) snapshot. Configuration stays out:
        pip's ``--isolated``, uv's ``--no-config`` (and an environment without its
        resolution settings); a find-links with another build of the same version would
        otherwise be a candidate too.
        """
        if self.uv is None:
            quiet: tuple[str, ...] = ("--isolated", *PIP_QUIET)
            remove = ["uninstall", *quiet, "--yes"]
            install = ["install", *quiet, "--no-deps", "--force-reinstall"]
        else:
            quiet = (*self._target(), "--no-config")
            remove = ["uninstall", *quiet]
            # --no-cache: uv would keep an unpacked copy of every snapshot it restores.
            install = ["install", *quiet, "--offline", "--no-cache", "--no-deps", "--reinstall"]
            install.append("--compile-bytecode")
        argvs = []
        if snapshot.absent:
            argvs.append([*self._base(), *remove, *snapshot.absent])
        if snapshot.wheels:
            where = ["--no-index", "--find-links", snapshot.directory]
            argvs.append([*self._base(), *install, *where, *snapshot.pins])
        return argvs

    def install(self, pins: Sequence[Pin], pip_args: Sequence[str], *, runner: Runner) -> Completed:
        """Run the one install of the plan."""
        argv = self.install_argv(pins, pip_args)
        return runner(argv, env=self.environ, timeout=INSTALL_TIMEOUT)

    def check(self, *, runner: Runner) -> Completed:
        """Run the check; parsed by ``pipcheck``."""
        return runner(self.check_argv(), timeout=CHECK_TIMEOUT)

    def restore(self, snapshot: Snapshot, *, runner: Runner) -> list[Completed]:
        """Put every saved package back as it was (removing those that were absent)."""
        env = None if self.uv is None else restore_environ(os.environ)
        return [runner(a, env=env, timeout=INSTALL_TIMEOUT) for a in self.restore_argvs(snapshot)]

    def reason(self, done: Completed) -> str:
        """Why an install failed, in one line."""
        return done.reason() if self.uv is None else uv_reason(done)

    def describe(self) -> dict[str, Any]:
        """The installer for --json: name, version, path, what was carried over."""
        return {"name": self.name, "version": self.version, "path": self.uv, "config": self.notes}


def restore_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` without uv's settings of where packages come from and how."""
    return {k: v for k, v in environ.items() if not _RESOLUTION.fullmatch(k)}


def uv_reason(done: Completed) -> str:
    """The ``error:`` line of uv and its last ``cause:``, as one line."""
    # uv wraps its messages to $COLUMNS: an indented line that starts no cause goes on
    # the one before.
    items: list[str] = []
    for raw in done.stderr.splitlines():
        line = raw.strip()
        if not line:
            continue
        if raw[:1].isspace() and items and not line.startswith(("cause:", "Caused by:")):
            items[-1] += f" {line}"
        else:
            items.append(line)
    errors = [i[len("error:") :].strip() for i in items if i.startswith("error:")]
    if not errors:
        return done.tail()
    causes = [i.partition(":")[2].strip() for i in items if i.startswith(("cause:", "Caused by:"))]
    return f"{errors[-1]}: {causes[-1]}" if causes else errors[-1]


# --- finding uv ----------------------------------------------------------------------------


def find_uv() -> str | None:
    """The uv of opskit's ``uv`` extra (the ``uv`` package), else the first ``uv`` on PATH."""
    try:
        from uv import find_uv_bin
    except ImportError:
        pass
    else:
        try:
            return str(find_uv_bin())
        except FileNotFoundError:
            pass
    return shutil.which("uv")


def uv_version(uv: str, *, runner: Runner) -> str:
    """``uv --version``'s version; UsageError when the program does not run as uv."""
    done = runner([uv, "--version"], timeout=ASK_TIMEOUT)
    words = done.stdout.split()
    if not done.ok or len(words) < 2 or words[0] != "uv":
        raise UsageError(f"{uv}: not a working uv ({done.tail()})")
    return words[1]


def in_tested_range(version: str) -> bool:
    """Whether ``version`` is in the tested uv range."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    try:
        return Version(version) in SpecifierSet(UV_TESTED)
    except InvalidVersion:
        return False


# --- pip's configuration, carried over to uv -----------------------------------------------

#: pip's settings and uv's variable for each: pip's separator, uv's separator (None: one value).
_UV_VARIABLES: dict[str, tuple[str, str | None]] = {
    "index-url": ("UV_DEFAULT_INDEX", None),
    "extra-index-url": ("UV_INDEX", " "),
    "find-links": ("UV_FIND_LINKS", ","),
    "constraint": ("UV_CONSTRAINT", " "),
    "trusted-host": ("UV_INSECURE_HOST", " "),
    "cert": ("SSL_CERT_FILE", None),
    "client-cert": ("SSL_CLIENT_CERT", None),
    "timeout": ("UV_HTTP_TIMEOUT", None),
    "default-timeout": ("UV_HTTP_TIMEOUT", None),
}
#: uv's older spelling of a variable: set by the user, it also counts as set.
_ALIASES = {"UV_DEFAULT_INDEX": ("UV_INDEX_URL",), "UV_INDEX": ("UV_EXTRA_INDEX_URL",)}
#: pip settings with no bearing on which files a --no-deps install of exact pins puts there.
_HARMLESS = frozenset(
    {
        *("disable-pip-version-check", "no-input", "progress-bar", "quiet", "verbose"),
        *("no-color", "cache-dir", "no-cache-dir", "root-user-action", "retries", "log"),
        *("no-python-version-warning", "require-virtualenv", "pre", "upgrade-strategy"),
        *("no-warn-script-location", "no-warn-conflicts", "compile", "no-compile", "index"),
        *("no-deps", "src", "exists-action"),
    }
)
_TRUE = frozenset(("1", "true", "yes", "y", "on", "t"))


def pip_config_files(prefix: str, environ: Mapping[str, str]) -> list[Path]:
    """The configuration files pip reads, the lowest priority first (pip's configuration.py).

    Global (each of ``$XDG_CONFIG_DIRS``/pip, then /etc), the user's (~/.pip, then
    ``$XDG_CONFIG_HOME``/pip; skipped when ``PIP_CONFIG_FILE`` names a file that
    exists), the environment's own (``PREFIX/pip.conf``), then ``PIP_CONFIG_FILE``;
    none at all when that is os.devnull.
    """
    given = environ.get("PIP_CONFIG_FILE")
    if given == os.devnull:
        return []
    dirs = environ.get("XDG_CONFIG_DIRS", "").strip() or "/etc/xdg"
    files = [Path(d) / "pip" / "pip.conf" for d in dirs.split(os.pathsep) if d]
    files.append(Path("/etc/pip.conf"))
    if not (given and Path(given).exists()):
        home = Path(environ.get("HOME") or Path.home())
        config_home = environ.get("XDG_CONFIG_HOME", "").strip() or str(home / ".config")
        files += [home / ".pip" / "pip.conf", Path(config_home) / "pip" / "pip.conf"]
    files.append(Path(prefix) / "pip.conf")
    if given:
        files.append(Path(given))
    return files


def pip_config_items(prefix: str, environ: Mapping[str, str]) -> dict[str, tuple[str, Path]]:
    """Every ``section.key`` of pip's files, the later file winning, as ``pip config list``."""
    import configparser

    items: dict[str, tuple[str, Path]] = {}
    for path in pip_config_files(prefix, environ):
        parser = configparser.RawConfigParser()
        try:
            parser.read(path, encoding="utf-8")
        except (OSError, UnicodeDecodeError, configparser.Error):
            continue
        for section in parser.sections():
            for raw, value in parser.items(section):
                key = raw.lower().replace("_", "-").removeprefix("--")
                items[f"{section}.{key}"] = (value, path)
    return items


def pip_settings(prefix: str, environ: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """The pip settings of an install in PREFIX: key -> (value, where it was set).

    Read as pip reads them: its files in order, ``[install]`` over ``[global]``, and the
    ``PIP_*`` variables over both. Not by running ``pip config list``: pip's start-up
    alone costs more than uv's whole install, and a venv made by uv has no pip at all.
    tests/test_upgrade_uv.py holds the two readings equal.
    """
    found: dict[str, tuple[str, str]] = {}
    items = pip_config_items(prefix, environ).items()
    for section in ("global", "install"):
        for name, (value, path) in items:
            head, _, key = name.partition(".")
            if head == section:
                found[key] = (value, f"{path} [{section}]")
    for var, value in environ.items():
        if var.startswith("PIP_") and var != "PIP_CONFIG_FILE":
            found[var[4:].lower().replace("_", "-")] = (value, var)
    return found


def _redacted(value: str) -> str:
    """A URL's password hidden: the mapping is said on stderr."""
    return re.sub(r"(//[^/@:\s]+):[^/@\s]+@", r"\1:****@", value)


@dataclass(frozen=True)
class UvConfig:
    """pip's configuration as uv's: variables to set, install arguments, one note each."""

    variables: dict[str, str]
    args: tuple[str, ...]
    notes: tuple[str, ...]


def uv_config(
    settings: Mapping[str, tuple[str, str]], environ: Mapping[str, str], pip_args: Sequence[str]
) -> UvConfig:
    """Carry pip's settings over to uv's; a variable the user set for uv wins over pip's."""
    variables: dict[str, str] = {}
    args: list[str] = []
    notes: list[str] = []
    unmapped: list[str] = []
    for key, (value, source) in settings.items():
        if key == "no-index":
            if value.strip().lower() in _TRUE and "--no-index" not in pip_args:
                args.append("--no-index")
                notes.append(f"pip's no-index ({source}) -> --no-index")
            continue
        if key not in _UV_VARIABLES:
            if key not in _HARMLESS:
                unmapped.append(f"{key} ({source})")
            continue
        var, sep = _UV_VARIABLES[key]
        items = value.split() if sep else [value.strip()]
        if not any(items):
            continue
        if key == "find-links" and "--find-links" in pip_args:
            # Given -f on the command line, uv ignores UV_FIND_LINKS; pip uses both.
            args += [word for item in items for word in ("--find-links", item)]
            notes.append(f"pip's find-links ({source}) -> --find-links {' '.join(items)}")
            continue
        taken = next((v for v in (var, *_ALIASES.get(var, ())) if v in environ), None)
        if taken is not None:
            notes.append(f"pip's {key} ({source}) not carried over: {taken} is already set")
            continue
        variables[var] = (sep or "").join(items)
        notes.append(f"pip's {key} ({source}) -> {var}={_redacted(variables[var])}")
        if key == "extra-index-url" and "UV_INDEX_STRATEGY" not in environ:
            # pip takes the best match over all its indexes; uv stops at the first index
            # that has the name, which would miss a pinned version found only on another.
            variables["UV_INDEX_STRATEGY"] = "unsafe-best-match"
            notes.append("pip looks in every index -> UV_INDEX_STRATEGY=unsafe-best-match")
    if unmapped:
        notes.append(f"not carried over to uv (no counterpart here): {', '.join(unmapped)}")
    return UvConfig(variables, tuple(args), tuple(notes))


# --- which installer --------------------------------------------------------------------------


def choose_installer(
    requested: str | None,
    env: Environment,
    pip_args: Sequence[str],
    *,
    runner: Runner,
    environ: Mapping[str, str] | None = None,
) -> Installer:
    """The installer of an upgrade: the requested one, else pip, else uv where pip is missing.

    Raises UsageError when the one needed is not there.
    """
    python = env.python
    if requested == "pip" or (requested is None and env.has_pip):
        if not env.has_pip:
            raise UsageError(f"--python {python}: pip is not installed in that environment")
        return Installer("pip", python)
    uv = find_uv()
    if uv is None:
        if requested is None:
            raise UsageError(
                f"--python {python}: pip is not installed in that environment, and uv was not "
                "found (pip install 'opskit[uv]', or put uv on PATH)"
            )
        raise UsageError(
            "--installer uv: uv was not found (pip install 'opskit[uv]', or put uv on PATH)"
        )
    version = uv_version(uv, runner=runner)
    base = dict(os.environ if environ is None else environ)
    settings = pip_settings(env.prefix, base)
    config = uv_config(settings, base, pip_args)
    why = "--installer uv" if requested else "no pip in that environment"
    head = [f"{version} at {uv} ({why})"]
    if not in_tested_range(version):
        head.append(f"uv {version} is outside the range opskit is tested with ({UV_TESTED})")
    return Installer(
        "uv",
        python,
        uv=uv,
        version=version,
        args=config.args,
        environ={**base, **config.variables},
        notes=(*head, *config.notes),
    )


def restorer(name: str | None, uv: str | None, python: str) -> Installer:
    """The installer that restores a snapshot an earlier run took (its marker names it)."""
    if name != "uv":
        return Installer("pip", python)
    path = uv if uv is not None and os.access(uv, os.X_OK) else find_uv()
    if path is None:
        raise UsageError(
            "the unfinished upgrade ran uv, and uv was not found "
            "(pip install 'opskit[uv]', or put uv on PATH)"
        )
    return Installer("uv", python, uv=path)
