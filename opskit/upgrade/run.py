"""``opskit upgrade``: plan exact-pin upgrades, snapshot, install, verify, and restore on failure.

The planning half (parsing pins, reading the installed set, building the plan, parsing
``pip check``) is pure. The side effects live in the functions named for them
(``snapshot_packages``, ``install_packages``, ``pip_check``, ``run_smoke``,
``restore_snapshot``, ``prepare_lock``/``commit_lock``, ``append_history``), each running
its commands as argument lists through an explicit runner.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shlex
import shutil
import sys
import zipfile
from base64 import urlsafe_b64encode
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from opskit.errors import ExitCode, OperationFailed, UsageError
from opskit.proc import Completed, InterruptGuard

# Re-exported only until opskit/upgrade/cli.py imports them from opskit.proc.
from opskit.proc import Runner as Runner
from opskit.proc import SubprocessRunner as SubprocessRunner
from opskit.proc import shown as shown

#: ``pip`` flags on every call: no version check against an index, never a prompt.
PIP_QUIET = ("--disable-pip-version-check", "--no-input")
#: How long a smoke command may run before it counts as failed.
SMOKE_TIMEOUT = 300.0
#: Snapshots of successful upgrades kept for a manual roll-back; older ones are pruned.
KEEP_SNAPSHOTS = 5

Progress = Callable[[str, str], None]


def no_progress(step: str, message: str) -> None:
    """Discard progress; the default for callers that only want the outcome."""


# --- errors ---------------------------------------------------------------------------


class UpgradeFailed(OperationFailed):
    """Raised when a step of an upgrade fails; carries the outcome (restored or not)."""

    def __init__(self, message: str, outcome: Outcome) -> None:
        super().__init__(message)
        self.outcome = outcome


class UpgradeInterrupted(UpgradeFailed):
    """Raised when Ctrl-C stops an upgrade; the environment was restored first if it changed."""

    exit_code = ExitCode.INTERRUPTED


# --- requirements -------------------------------------------------------------------------


@dataclass(frozen=True)
class Pin:
    """One requested package at one exact version, its name normalised (PEP 503)."""

    name: str
    version: str

    @property
    def requirement(self) -> str:
        """The requirement as pip gets it."""
        return f"{self.name}=={self.version}"


def parse_pins(texts: Sequence[str]) -> tuple[Pin, ...]:
    """Validate requirements as exact pins ``NAME==VERSION``; UsageError names the bad one."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import InvalidVersion, Version

    if not texts:
        raise UsageError("give at least one requirement, e.g. 'mypkg==1.2'")
    pins: dict[str, Pin] = {}
    for text in texts:
        try:
            req = Requirement(text)
        except InvalidRequirement as exc:
            reason = str(exc).splitlines()[0]
            raise UsageError(f"{text!r}: not a valid requirement ({reason})") from None
        if req.url:
            raise UsageError(f"{text!r}: a URL is not a pin; give NAME==VERSION")
        if req.marker is not None:
            raise UsageError(f"{text!r}: markers are not supported; give NAME==VERSION")
        if req.extras:
            # --no-deps installs no extra's dependencies, so the extra would be a promise
            # the upgrade does not keep.
            raise UsageError(f"{text!r}: extras are not installed with --no-deps; drop them")
        specs = list(req.specifier)
        if len(specs) != 1 or specs[0].operator != "==":
            raise UsageError(f"{text!r}: must be an exact pin NAME==VERSION")
        version = specs[0].version
        if version.endswith(".*"):
            raise UsageError(f"{text!r}: a wildcard is not an exact pin; give the full version")
        try:
            Version(version)
        except InvalidVersion:
            raise UsageError(f"{text!r}: {version!r} is not a valid version") from None
        name = canonicalize_name(req.name)
        if name == "pip":
            raise UsageError(f"{text!r}: not for pip itself (pip is what restores the rest)")
        if name in pins:
            raise UsageError(f"{text!r}: {name} is given twice")
        pins[name] = Pin(name, version)
    return tuple(pins.values())


# --- the environment ----------------------------------------------------------------------

# Runs inside the target interpreter: where it installs, and which requested distributions
# it has, the first on sys.path winning as for an import. The .dist-info directory names
# carry name and version (the wheel spec normalises both), so no METADATA is parsed and
# importlib.metadata, which would double this script's start-up, is not imported.
_INSPECT = """\
import json, os, sys, sysconfig
want = set(json.loads(sys.argv[1])) | {"pip"}
found = {}
for entry in sys.path:
    entry = os.path.abspath(entry or ".")
    try:
        listing = sorted(os.listdir(entry))
    except OSError:
        continue
    for item in listing:
        if item.endswith(".dist-info"):
            stem = item[:-10]
        elif item.endswith(".egg-info"):
            stem = item[:-9]
        else:
            continue
        raw, sep, rest = stem.partition("-")
        name = "-".join(filter(None, raw.lower().replace("_", "-").replace(".", "-").split("-")))
        if sep and name in want and name not in found:
            found[name] = {"version": rest.split("-")[0], "path": os.path.join(entry, item)}
paths = sysconfig.get_paths()
print(json.dumps({
    "prefix": sys.prefix,
    "base_prefix": getattr(sys, "base_prefix", sys.prefix),
    "version": "%d.%d.%d" % sys.version_info[:3],
    "scripts": paths["scripts"],
    "purelib": paths["purelib"],
    "platlib": paths["platlib"],
    "installed": found,
}))
"""


@dataclass(frozen=True)
class Installed:
    """One installed distribution: its version and its .dist-info directory."""

    name: str
    version: str
    dist_info: str


@dataclass(frozen=True)
class Environment:
    """The target interpreter as pip sees it, and the requested packages installed in it."""

    python: str
    prefix: str
    base_prefix: str
    version: str
    scripts: str
    purelib: str
    platlib: str
    has_pip: bool
    installed: Mapping[str, Installed]

    @property
    def is_venv(self) -> bool:
        """Whether the interpreter runs in a virtual environment."""
        return self.prefix != self.base_prefix


def read_environment(python: str, names: Sequence[str], *, runner: Runner) -> Environment:
    """Ask the target interpreter where it installs and which of ``names`` it has."""
    result = runner([python, "-c", _INSPECT, json.dumps(sorted(names))])
    wanted = set(names)
    try:
        data = json.loads(result.stdout) if result.ok else {}
        installed = {
            name: Installed(name, str(item["version"]), str(item["path"]))
            for name, item in data["installed"].items()
            if name in wanted
        }
        return Environment(
            python=python,
            prefix=str(data["prefix"]),
            base_prefix=str(data["base_prefix"]),
            version=str(data["version"]),
            scripts=str(data["scripts"]),
            purelib=str(data["purelib"]),
            platlib=str(data["platlib"]),
            has_pip="pip" in data["installed"],
            installed=installed,
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        raise UsageError(f"{python}: not a working Python interpreter ({result.tail()})") from None


def installed_versions(env: Environment, names: Sequence[str]) -> dict[str, str | None]:
    """The version of each name in ``env`` (None when absent)."""
    return {n: (env.installed[n].version if n in env.installed else None) for n in names}


# --- the plan -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """What happens to one package: install, upgrade, downgrade or unchanged."""

    name: str
    old: str | None
    new: str
    action: str

    def describe(self) -> str:
        """``name old -> new (action)`` for the screen."""
        if self.action == "unchanged":
            return f"{self.name} {self.new} (unchanged)"
        return f"{self.name} {self.old or '(not installed)'} -> {self.new} ({self.action})"


@dataclass(frozen=True)
class Plan:
    """Every requested package and what happens to it; pure data."""

    python: str
    changes: tuple[Change, ...]

    @property
    def pending(self) -> tuple[Change, ...]:
        """The changes that need pip (not already at the requested version)."""
        return tuple(c for c in self.changes if c.action != "unchanged")

    @property
    def changed(self) -> bool:
        """Whether anything would change."""
        return bool(self.pending)

    @property
    def pins(self) -> tuple[Pin, ...]:
        """The pins pip installs."""
        return tuple(Pin(c.name, c.new) for c in self.pending)


def build_plan(pins: Sequence[Pin], env: Environment) -> Plan:
    """Compare each pin with the installed version; pure."""
    from packaging.version import InvalidVersion, Version

    changes = []
    for pin in pins:
        have = env.installed.get(pin.name)
        if have is None:
            action = "install"
        else:
            try:
                old, new = Version(have.version), Version(pin.version)
                action = "unchanged" if old == new else "upgrade" if new > old else "downgrade"
            except InvalidVersion:
                # A legacy version string installed long ago: only equality is meaningful.
                action = "unchanged" if have.version == pin.version else "upgrade"
        changes.append(Change(pin.name, have.version if have else None, pin.version, action))
    return Plan(env.python, tuple(changes))


def pip_install_argv(python: str, pins: Sequence[Pin], pip_args: Sequence[str] = ()) -> list[str]:
    """The one install command: exact pins, no dependency changes, reinstalled in place."""
    # --no-deps: without it --force-reinstall re-resolves and may upgrade the whole
    # dependency closure; it also skips pip's conflict check, hence pip check after.
    return [
        python,
        "-m",
        "pip",
        "install",
        *PIP_QUIET,
        "--no-deps",
        "--force-reinstall",
        *pip_args,
        *(p.requirement for p in pins),
    ]


def pip_check_argv(python: str) -> list[str]:
    """The verification command."""
    return [python, "-m", "pip", "check", *PIP_QUIET]


# --- pip check ----------------------------------------------------------------------------

_CONFLICT = re.compile(
    r"^(?P<pkg>\S+) (?P<ver>\S+) has requirement (?P<req>.+), but you have "
    r"(?P<dep>\S+) (?P<have>\S+?)\.?$"
)
_MISSING = re.compile(
    r"^(?P<pkg>\S+) (?P<ver>\S+) requires (?P<dep>\S+), which is not installed\.?$"
)
_UNSUPPORTED = re.compile(r"^(?P<pkg>\S+) (?P<ver>\S+) is not supported on this platform\.?$")


@dataclass(frozen=True)
class Problem:
    """One line of ``pip check``, parsed: a conflict, a missing or an unsupported package."""

    kind: str
    package: str
    version: str
    line: str
    dependency: str | None = None
    requirement: str | None = None
    installed: str | None = None

    def involves(self, names: Sequence[str]) -> bool:
        """Whether the problem may come from ``names``: it names one, or cannot be read."""
        if self.kind == "other":
            return True
        return self.package in names or (self.dependency is not None and self.dependency in names)

    def as_dict(self) -> dict[str, str | None]:
        """The problem as JSON-ready data."""
        return {
            "kind": self.kind,
            "package": self.package,
            "version": self.version,
            "dependency": self.dependency,
            "requirement": self.requirement,
            "installed": self.installed,
            "line": self.line,
        }


def parse_pip_check(text: str) -> list[Problem]:
    """Parse ``pip check``'s output into problems; an unknown line is kept as kind "other"."""
    from packaging.utils import canonicalize_name

    problems = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("No broken requirements") or line.startswith("WARNING"):
            continue
        if m := _CONFLICT.match(line):
            problems.append(
                Problem(
                    "conflict",
                    canonicalize_name(m["pkg"]),
                    m["ver"],
                    line,
                    dependency=canonicalize_name(m["dep"]),
                    requirement=m["req"],
                    installed=m["have"],
                )
            )
        elif m := _MISSING.match(line):
            problems.append(
                Problem(
                    "missing",
                    canonicalize_name(m["pkg"]),
                    m["ver"],
                    line,
                    dependency=canonicalize_name(m["dep"]),
                )
            )
        elif m := _UNSUPPORTED.match(line):
            problems.append(Problem("unsupported", canonicalize_name(m["pkg"]), m["ver"], line))
        else:
            problems.append(Problem("other", "", "", line))
    return problems


def pip_check(python: str, *, runner: Runner | None = None) -> list[Problem]:
    """Run ``pip check`` in ``python``'s environment; the parsed problems, [] when clean.

    Raises OperationFailed when pip itself cannot run (no pip, a broken interpreter).
    """
    result = (runner or SubprocessRunner())(pip_check_argv(python))
    if result.ok:
        return []
    problems = parse_pip_check(result.stdout)
    if result.returncode != 1 or not problems:
        raise OperationFailed(f"pip check did not run in {python}: {result.tail()}")
    return problems


# --- the snapshot: installed distributions rebuilt as wheels --------------------------------
#
# pip cannot export an installed distribution, and the old version may be on no index.
# The snapshot rebuilds a wheel from the files its RECORD lists plus its .dist-info, so
# a restore is an ordinary offline ``pip install --no-deps --force-reinstall WHEEL``:
# pip removes whatever is there now, regenerates console scripts from entry_points.txt
# and recompiles bytecode, and the same command is the manual recovery.


@dataclass(frozen=True)
class Saved:
    """One package as it was before: its version and the rebuilt wheel (None: was absent)."""

    name: str
    version: str | None
    wheel: str | None


@dataclass(frozen=True)
class Snapshot:
    """The packages an upgrade replaces, as they were, and where their wheels are."""

    directory: str
    saved: tuple[Saved, ...]

    @property
    def wheels(self) -> list[str]:
        """The rebuilt wheels to reinstall."""
        return [s.wheel for s in self.saved if s.wheel]

    @property
    def pins(self) -> list[str]:
        """The saved packages as exact pins, to find among the wheels."""
        return [f"{s.name}=={s.version}" for s in self.saved if s.wheel]

    @property
    def absent(self) -> list[str]:
        """The packages that were not installed, to remove again."""
        return [s.name for s in self.saved if s.version is None]

    def versions(self) -> dict[str, str | None]:
        """The versions to restore, per package."""
        return {s.name: s.version for s in self.saved}


def _record_hash(digest: bytes) -> str:
    return "sha256=" + urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _wheel_tags(wheel_text: str) -> str:
    tags = [ln.split(":", 1)[1].strip() for ln in wheel_text.splitlines() if ln.startswith("Tag:")]
    if not tags:
        return "py3-none-any"
    parts = [t.split("-") for t in tags if t.count("-") == 2]
    if not parts:
        return "py3-none-any"
    # The compressed tag set of a wheel file name (PEP 425): each part dot-joined.
    return "-".join(".".join(dict.fromkeys(p[i] for p in parts)) for i in range(3))


def _console_scripts(dist_info: Path) -> set[str]:
    """The script names entry_points.txt declares (pip writes those scripts itself)."""
    # A plain reading of the INI-like file: importlib.metadata would cost more start-up
    # than the rest of the snapshot of a small package.
    path = dist_info / "entry_points.txt"
    if not path.is_file():
        return set()
    names: set[str] = set()
    section = ""
    for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
        elif section in ("console_scripts", "gui_scripts") and "=" in line:
            names.add(line.split("=", 1)[0].strip())
    return names


def _within(path: str, base: str) -> str | None:
    rel = os.path.relpath(path, base)
    return None if rel == ".." or rel.startswith("../") or Path(rel).is_absolute() else rel


def wheel_from_installed(installed: Installed, env: Environment, directory: Path) -> Path:
    """Rebuild the wheel of an installed distribution from its RECORD; return its path.

    Files under site-packages go in as they are; other files of the environment (scripts
    that are not entry points, data files, headers) go under ``.data/data/`` relative to
    the prefix, so pip puts the same bytes back at the same path. Console scripts are
    left out: pip writes them again from entry_points.txt. Bytecode is left out: pip
    compiles it again. Raises OperationFailed when the distribution cannot be rebuilt.
    """
    dist_info = Path(installed.dist_info)
    record = dist_info / "RECORD"
    if dist_info.suffix != ".dist-info" or not record.is_file():
        raise OperationFailed(
            f"cannot snapshot {installed.name} {installed.version}: it has no RECORD "
            f"(installed without pip?); reinstall it with pip first"
        )
    location = dist_info.parent
    # Locations as the interpreter reports them may differ from the real paths (symlinks).
    prefix = os.path.realpath(env.prefix)
    scripts = os.path.realpath(env.scripts)
    site_dirs = {os.path.realpath(env.purelib), os.path.realpath(env.platlib)}
    if os.path.realpath(location) not in site_dirs and _within(str(location), prefix) is None:
        raise OperationFailed(
            f"cannot snapshot {installed.name}: installed outside the environment ({location})"
        )
    entry_points = _console_scripts(dist_info)
    wheel_file = dist_info / "WHEEL"
    wheel_meta = (
        wheel_file.read_text(encoding="utf-8", errors="replace") if wheel_file.is_file() else ""
    )
    dist_name = dist_info.name[: -len(".dist-info")]
    data_dir = f"{dist_name}.data"
    # pip writes these three again on install. direct_url.json stays: it is what makes
    # pip freeze show the package as installed from a URL or a path, as before.
    skip_meta = {"RECORD", "INSTALLER", "REQUESTED"}
    members: dict[str, Path] = {}
    with record.open(encoding="utf-8", newline="") as handle:
        for row in csv.reader(handle):
            if not row or not row[0]:
                continue
            rel = row[0]
            source = Path(os.path.normpath(location / rel))
            if source.suffix == ".pyc" or "__pycache__" in source.parts:
                continue
            if source.parent == dist_info and source.name in skip_meta:
                continue
            if not source.is_file():
                # A file gone already is also gone after the restore: no difference.
                continue
            inside = _within(str(source), str(location))
            if inside is not None:
                members[inside.replace(os.sep, "/")] = source
                continue
            real = os.path.realpath(source)
            if str(Path(real).parent) == scripts and source.name in entry_points:
                continue
            under = _within(real, prefix)
            if under is None:
                raise OperationFailed(
                    f"cannot snapshot {installed.name}: {rel} lies outside the environment"
                )
            members[f"{data_dir}/data/{under.replace(os.sep, '/')}"] = source
    tags = _wheel_tags(wheel_meta)
    filename = f"{dist_name.split('-')[0]}-{installed.version.replace('-', '_')}-{tags}.whl"
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / filename
    lines: list[list[str]] = []
    # Stored, not deflated: the snapshot is read back once, locally, and compressing a
    # large package (numpy, torch) would cost more than every other step together.
    # Not strict about timestamps: a file dated before 1980 (SOURCE_DATE_EPOCH=0 builds)
    # is stored as of 1980 rather than refused.
    with zipfile.ZipFile(
        target, "w", compression=zipfile.ZIP_STORED, strict_timestamps=False
    ) as archive:
        for arcname, source in members.items():
            info = zipfile.ZipInfo.from_file(source, arcname, strict_timestamps=False)
            digest = hashlib.sha256()
            size = 0
            with source.open("rb") as src, archive.open(info, "w") as dst:
                while chunk := src.read(1 << 20):
                    digest.update(chunk)
                    size += len(chunk)
                    dst.write(chunk)
            lines.append([arcname, _record_hash(digest.digest()), str(size)])
        record_name = f"{dist_info.name}/RECORD"
        lines.append([record_name, "", ""])
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(lines)
        archive.writestr(record_name, buffer.getvalue())
    return target


def snapshot_packages(plan: Plan, env: Environment, directory: Path) -> Snapshot:
    """Save every package the plan replaces as a wheel in ``directory`` (writes files)."""
    saved = []
    for change in plan.pending:
        have = env.installed.get(change.name)
        if have is None:
            saved.append(Saved(change.name, None, None))
        else:
            try:
                wheel = wheel_from_installed(have, env, directory)
            except OSError as exc:
                raise OperationFailed(
                    f"cannot snapshot {change.name} {have.version}: {exc.filename}: {exc.strerror}"
                ) from None
            saved.append(Saved(change.name, have.version, str(wheel)))
    return Snapshot(str(directory), tuple(saved))


def restore_argvs(python: str, snapshot: Snapshot) -> list[list[str]]:
    """The commands that put the snapshot back, offline; also the manual recovery.

    The wheels are found by name in the snapshot directory rather than given as paths:
    pip records a path install in direct_url.json, and pip freeze would then show the
    package as installed from the (soon deleted) snapshot. ``--isolated`` keeps pip's
    configuration (a PIP_FIND_LINKS with another build of the same version) out of it.
    """
    argvs = []
    if snapshot.absent:
        argvs.append(
            [python, "-m", "pip", "uninstall", "--isolated", *PIP_QUIET, "--yes", *snapshot.absent]
        )
    if snapshot.wheels:
        argvs.append(
            [
                python,
                "-m",
                "pip",
                "install",
                "--isolated",
                *PIP_QUIET,
                "--no-deps",
                "--force-reinstall",
                "--no-index",
                "--find-links",
                snapshot.directory,
                *snapshot.pins,
            ]
        )
    return argvs


def restore_snapshot(python: str, snapshot: Snapshot, *, runner: Runner) -> list[Completed]:
    """Put every saved package back as it was (removing those that were absent)."""
    return [runner(argv) for argv in restore_argvs(python, snapshot)]


# --- install and smoke --------------------------------------------------------------------


def install_packages(
    python: str, pins: Sequence[Pin], pip_args: Sequence[str], *, runner: Runner
) -> Completed:
    """Run the one pip install of the plan."""
    return runner(pip_install_argv(python, pins, pip_args))


def smoke_argv(command: str) -> list[str]:
    """Split a smoke command line like a shell would (no shell runs it); UsageError if bad."""
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise UsageError(f"--smoke: cannot split {command!r}: {exc}") from None
    if not argv:
        raise UsageError("--smoke: empty command")
    return argv


def smoke_environ(env: Environment, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The smoke command's environment: the target's bin first on PATH, as if activated."""
    out = dict(os.environ if base is None else base)
    out.pop("PYTHONHOME", None)
    bindir = str(Path(env.python).parent)
    out["PATH"] = os.pathsep.join([bindir, out.get("PATH", os.defpath)])
    if env.is_venv:
        out["VIRTUAL_ENV"] = env.prefix
    return out


def check_smoke(argv: Sequence[str], env: Environment) -> None:
    """Fail early, before any change, when the smoke command's program cannot be found."""
    path = smoke_environ(env)["PATH"]
    if shutil.which(argv[0], path=path) is None:
        raise UsageError(f"--smoke: {argv[0]!r} not found (looked on {env.python}'s PATH)")


def run_smoke(
    argv: Sequence[str], env: Environment, cwd: str | None, *, runner: Runner
) -> Completed:
    """Run the smoke command against the upgraded environment."""
    return runner(argv, env=smoke_environ(env), cwd=cwd, timeout=SMOKE_TIMEOUT)


# --- the lock file (pip-tools) --------------------------------------------------------------


@dataclass(frozen=True)
class LockFiles:
    """A pip-tools pair: requirements.in and the requirements.txt compiled from it."""

    directory: str
    source: str = "requirements.in"
    output: str = "requirements.txt"

    @property
    def output_path(self) -> Path:
        """The lock file."""
        return Path(self.directory) / self.output


def find_lock(directory: Path) -> LockFiles | None:
    """The pip-tools pair in ``directory``, or None when the project does not pin that way."""
    if (directory / "requirements.in").is_file() and (directory / "requirements.txt").is_file():
        return LockFiles(str(directory))
    return None


def _header_command(text: str) -> str | None:
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("# by the following command:"):
            for follow in lines[i + 1 : i + 4]:
                command = follow.lstrip("#").strip()
                if command:
                    return command
    return None


def lock_argv(
    lock: LockFiles,
    pins: Sequence[Pin],
    output: str,
    index_args: Sequence[str],
    *,
    header: bool = True,
) -> list[str]:
    """pip-compile moving only the upgraded pins, writing to ``output``.

    pip-tools runs from opskit's own environment (it is a dependency of opskit), as a
    subprocess: it uses pip internals that change between pip releases.
    """
    upgrades = [arg for pin in pins for arg in ("--upgrade-package", pin.requirement)]
    # Find-links given for this run are where the wheels are today, not part of the lock.
    emit = ["--no-emit-find-links"] if "--find-links" in index_args else []
    return [
        sys.executable,
        "-m",
        "piptools",
        "compile",
        "--quiet",
        *([] if header else ["--no-header"]),
        *upgrades,
        *index_args,
        *emit,
        "--output-file",
        output,
        lock.source,
    ]


def prepare_lock(
    lock: LockFiles, pins: Sequence[Pin], index_args: Sequence[str], *, runner: Runner
) -> Path:
    """Compile the new lock into a temporary file beside it (writes it); return its path.

    pip-compile keeps the other pins by reading them from its output file, so it works
    on a copy, which ``commit_lock`` renames into place only after the upgrade succeeded.
    """
    target = lock.output_path
    temp = target.with_name(f".{target.name}.opskit-{os.getpid()}")
    try:
        shutil.copy2(target, temp)
        text = target.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise OperationFailed(f"{lock.output}: cannot copy it: {exc.strerror}") from None
    env = dict(os.environ)
    header = _header_command(text)
    if header is not None:
        # The header names the command that made the file; keep it rather than show the
        # temporary file's name.
        env["CUSTOM_COMPILE_COMMAND"] = header
    has_header = "autogenerated by pip-compile" in text
    argv = lock_argv(lock, pins, temp.name, index_args, header=has_header)
    result = runner(argv, env=env, cwd=lock.directory)
    if not result.ok:
        temp.unlink(missing_ok=True)
        raise OperationFailed(
            f"pip-compile could not pin {', '.join(p.requirement for p in pins)} in "
            f"{lock.output}: {result.reason()} (nothing changed; --no-lock skips the lock file)"
        )
    pinned = _pinned(temp.read_text(encoding="utf-8", errors="replace"))
    for pin in pins:
        if pin.name in pinned and pinned[pin.name] != pin.version:
            temp.unlink(missing_ok=True)
            raise OperationFailed(
                f"pip-compile pinned {pin.name}=={pinned[pin.name]}, not {pin.version} "
                f"(nothing changed)"
            )
    return temp


def _pinned(text: str) -> dict[str, str]:
    from packaging.utils import canonicalize_name

    out: dict[str, str] = {}
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;\\]+)", line)
        if m:
            out[canonicalize_name(m[1])] = m[3]
    return out


def commit_lock(temp: Path, lock: LockFiles) -> None:
    """Rename the compiled lock into place: atomic, so a reader sees the old or the new."""
    temp.replace(lock.output_path)


# --- history ------------------------------------------------------------------------------


def default_state_dir(env: Environment) -> Path:
    """Where history and snapshots live: inside the venv, else the user's state directory.

    Inside the venv they travel with what they describe, and whoever may upgrade the
    venv may write there.
    """
    if env.is_venv:
        return Path(env.prefix) / "opskit"
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "opskit"


def append_history(path: Path, record: Mapping[str, Any]) -> None:
    """Append one JSON line to the history file (creating it and its directory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, sort_keys=True) + "\n").encode("utf-8")
    # One write() with O_APPEND: lines from concurrent upgrades never interleave, and
    # the existing lines are never rewritten, so an atomic rename would buy nothing.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def prune_snapshots(root: Path, keep: int = KEEP_SNAPSHOTS) -> None:
    """Remove all but the newest ``keep`` snapshot directories."""
    if not root.is_dir():
        return
    dirs = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.name)
    for old in dirs[:-keep] if keep else dirs:
        shutil.rmtree(old, ignore_errors=True)


# --- the whole upgrade ---------------------------------------------------------------------


@dataclass(frozen=True)
class UpgradeRequest:
    """Everything an upgrade needs, validated by the caller."""

    pins: tuple[Pin, ...]
    python: str
    smoke: tuple[str, ...] | None = None
    smoke_cwd: str | None = None
    rollback: bool = True
    lock: LockFiles | None = None
    history: Path | None = None
    pip_args: tuple[str, ...] = ()


@dataclass
class Outcome:
    """What an upgrade did, for the screen, --json and the history file."""

    result: str
    python: str
    plan: Plan
    step: str | None = None
    reason: str | None = None
    problems: list[Problem] = field(default_factory=list)
    unrelated: list[Problem] = field(default_factory=list)
    after_restore: list[Problem] = field(default_factory=list)
    restored: dict[str, str | None] | None = None
    commands: list[list[str]] = field(default_factory=list)
    recovery: list[list[str]] = field(default_factory=list)
    lock: str | None = None
    history: str | None = None
    snapshot: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The outcome as JSON-ready data."""
        return {
            "result": self.result,
            "python": self.python,
            "packages": [
                {"name": c.name, "from": c.old, "to": c.new, "action": c.action}
                for c in self.plan.changes
            ],
            "step": self.step,
            "reason": self.reason,
            "problems": [p.as_dict() for p in self.problems],
            "unrelated_problems": [p.as_dict() for p in self.unrelated],
            "after_restore": [p.as_dict() for p in self.after_restore],
            "restored": self.restored,
            "commands": [shown(a) for a in self.commands],
            "recovery": [shown(a) for a in self.recovery],
            "lock": self.lock,
            "history": self.history,
            "snapshot": self.snapshot,
        }

    def history_record(self) -> dict[str, Any]:
        """The history line: time, packages, from, to, result (and why it failed)."""
        pending = self.plan.pending
        return {
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "python": self.python,
            "packages": [c.name for c in pending],
            "from": {c.name: c.old for c in pending},
            "to": {c.name: c.new for c in pending},
            "result": self.result,
            "step": self.step,
            "reason": self.reason,
            "snapshot": self.snapshot,
        }


def dry_run_commands(request: UpgradeRequest, plan: Plan) -> list[list[str]]:
    """The commands an upgrade would run, in order (snapshot and restore aside)."""
    argvs = []
    if request.lock is not None:
        argvs.append(lock_argv(request.lock, plan.pins, request.lock.output, request.pip_args))
    argvs.append(pip_install_argv(request.python, plan.pins, request.pip_args))
    argvs.append(pip_check_argv(request.python))
    if request.smoke:
        argvs.append(list(request.smoke))
    return argvs


def plan_upgrade(request: UpgradeRequest, *, runner: Runner) -> tuple[Environment, Plan]:
    """Read the environment and build the plan; changes nothing."""
    env = read_environment(request.python, [p.name for p in request.pins], runner=runner)
    if not env.has_pip:
        raise UsageError(f"--python {request.python}: pip is not installed in that environment")
    if request.smoke:
        check_smoke(request.smoke, env)
    return env, build_plan(request.pins, env)


def run_upgrade(
    request: UpgradeRequest,
    *,
    runner: Runner,
    progress: Progress = no_progress,
    notify: Callable[[str], None] | None = None,
) -> Outcome:
    """Plan, snapshot, install, check, smoke, and lock; restore on any failure.

    Returns the outcome of a successful (or needless) upgrade; raises UpgradeFailed
    (exit 1) or UpgradeInterrupted (exit 130), carrying the outcome, when it did not
    happen, after restoring the environment unless ``rollback`` is off. ``notify``
    tells the user what a Ctrl-C does (default: through ``progress``).
    """
    env, plan = plan_upgrade(request, runner=runner)
    for change in plan.changes:
        progress("plan", change.describe())
    outcome = Outcome("unchanged", request.python, plan)
    if not plan.changed:
        progress("done", "nothing to do: every package is at the requested version")
        return outcome
    guard = InterruptGuard(notify or (lambda message: progress("interrupt", message)))
    with guard.installed():
        return _upgrade(request, env, plan, outcome, guard, runner=runner, progress=progress)


def _upgrade(
    request: UpgradeRequest,
    env: Environment,
    plan: Plan,
    outcome: Outcome,
    guard: InterruptGuard,
    *,
    runner: Runner,
    progress: Progress,
) -> Outcome:
    state = default_state_dir(env)
    history = request.history or state / "upgrade-history.jsonl"
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + f"-{os.getpid()}"
    snap_dir = state / "snapshots" / stamp
    pins = plan.pins
    lock_temp: Path | None = None
    try:
        if request.lock is not None:
            guard.step = "pip-compile"
            moving = " ".join(p.requirement for p in pins)
            progress("lock", f"{request.lock.output}: pip-compile --upgrade-package {moving}")
            lock_temp = prepare_lock(request.lock, pins, request.pip_args, runner=runner)
        guard.step = "the snapshot"
        if not guard.count:
            snapshot = snapshot_packages(plan, env, snap_dir)
    except KeyboardInterrupt:
        guard.count += 1
    except OperationFailed as exc:
        _discard(lock_temp, snap_dir)
        message = str(exc)
        if "nothing changed" not in message:
            message += " (nothing changed)"
        outcome.result, outcome.reason = "failed", message
        outcome.step = "lock" if guard.step == "pip-compile" else "snapshot"
        raise UpgradeFailed(message, outcome) from None
    except BaseException:
        _discard(lock_temp, snap_dir)
        raise
    if guard.count:
        _discard(lock_temp, snap_dir)
        outcome.result, outcome.step = "interrupted", guard.step
        outcome.reason = "interrupted before any change"
        raise UpgradeInterrupted("interrupted; nothing changed", outcome)
    outcome.snapshot = snapshot.directory
    outcome.recovery = restore_argvs(request.python, snapshot)
    for saved in snapshot.saved:
        what = Path(saved.wheel).name if saved.wheel else "not installed: removed on restore"
        progress("snapshot", f"{saved.name} {saved.version or ''} {what}".replace("  ", " "))

    step, failure, interrupted = _apply(request, env, plan, outcome, guard, runner, progress)
    if failure is None:
        lock_error = None
        if lock_temp is not None and request.lock is not None:
            try:
                commit_lock(lock_temp, request.lock)
                outcome.lock = str(request.lock.output_path)
                moved = ", ".join(p.requirement for p in pins)
                progress("lock", f"{request.lock.output}: {moved}")
            except OSError as exc:
                lock_temp.unlink(missing_ok=True)
                lock_error = f"{request.lock.output}: cannot replace it: {exc.strerror}"
        outcome.result = "ok"
        _record(history, outcome, progress)
        prune_snapshots(snap_dir.parent)
        progress("done", ", ".join(f"{p.name} {p.version}" for p in pins))
        if lock_error is not None:
            raise UpgradeFailed(f"upgraded and verified, but {lock_error}", outcome)
        return outcome

    _discard(lock_temp, None)
    outcome.step, outcome.reason = step, failure
    progress("failed", failure)
    recovery = " && ".join(shown(a) for a in outcome.recovery)
    fail = UpgradeInterrupted if interrupted else UpgradeFailed
    if not request.rollback:
        outcome.result = "not-rolled-back"
        _record(history, outcome, progress)
        raise fail(f"{failure}; left as it is (--no-rollback); to restore: {recovery}", outcome)
    guard.restoring = True
    restore_error = _restore(request, snapshot, outcome, runner=runner, progress=progress)
    if restore_error is not None:
        outcome.result = "restore-failed"
        outcome.reason = f"{failure}; restore: {restore_error}"
        _record(history, outcome, progress)
        raise fail(
            f"{failure}; the restore failed too ({restore_error}); to restore by hand: {recovery}",
            outcome,
        )
    outcome.result = "interrupted" if interrupted else "rolled-back"
    # Restored and proven: the snapshot has done its job.
    shutil.rmtree(snap_dir, ignore_errors=True)
    outcome.snapshot = None
    _record(history, outcome, progress)
    back = ", ".join(f"{n} {v or '(not installed)'}" for n, v in snapshot.versions().items())
    raise fail(f"{failure}; the environment is back as it was ({back})", outcome)


def _apply(
    request: UpgradeRequest,
    env: Environment,
    plan: Plan,
    outcome: Outcome,
    guard: InterruptGuard,
    runner: Runner,
    progress: Progress,
) -> tuple[str, str | None, bool]:
    """Install, pip check, smoke; return the step reached, why it failed, and if by Ctrl-C."""
    names = [p.name for p in plan.pins]
    step = "install"
    try:
        guard.step = "pip install"
        argv = pip_install_argv(request.python, plan.pins, request.pip_args)
        outcome.commands.append(argv)
        progress("install", shown(argv))
        done = install_packages(request.python, plan.pins, request.pip_args, runner=runner)
        if guard.count:
            return step, f"interrupted during {step}", True
        if not done.ok:
            return step, f"pip install failed: {done.reason()}", False

        step = guard.step = "pip check"
        outcome.commands.append(pip_check_argv(request.python))
        problems = pip_check(request.python, runner=runner)
        if guard.count:
            return step, f"interrupted during {step}", True
        outcome.problems = [p for p in problems if p.involves(names)]
        outcome.unrelated = [p for p in problems if not p.involves(names)]
        for problem in outcome.unrelated:
            progress("check", f"already broken, not by this upgrade: {problem.line}")
        if outcome.problems:
            lines = "; ".join(p.line.rstrip(".") for p in outcome.problems)
            return step, f"pip check found: {lines}", False
        progress("check", "pip check: no problem with the upgraded packages")

        if request.smoke:
            step, guard.step = "smoke", "the smoke command"
            outcome.commands.append(list(request.smoke))
            progress("smoke", shown(request.smoke))
            ran = run_smoke(request.smoke, env, request.smoke_cwd, runner=runner)
            if guard.count:
                return step, f"interrupted during {step}", True
            if not ran.ok:
                return step, f"smoke command failed ({shown(request.smoke)}): {ran.tail()}", False
    except KeyboardInterrupt:
        return step, f"interrupted during {step}", True
    except OperationFailed as exc:
        return step, str(exc), False
    return step, None, False


def _record(history: Path, outcome: Outcome, progress: Progress) -> None:
    """Append the outcome to the history; a history that cannot be written is only reported.

    By then the environment is upgraded or restored: failing the command for its log
    line would misreport what happened to it.
    """
    try:
        append_history(history, outcome.history_record())
    except OSError as exc:
        progress("history", f"not written: {history}: {exc.strerror}")
        return
    outcome.history = str(history)


def _discard(lock_temp: Path | None, snap_dir: Path | None) -> None:
    if lock_temp is not None:
        lock_temp.unlink(missing_ok=True)
    if snap_dir is not None:
        shutil.rmtree(snap_dir, ignore_errors=True)


def _restore(
    request: UpgradeRequest,
    snapshot: Snapshot,
    outcome: Outcome,
    *,
    runner: Runner,
    progress: Progress,
) -> str | None:
    """Restore and prove it (versions equal the snapshot's, pip check runs); None or why not."""
    names = [s.name for s in snapshot.saved]
    for argv in restore_argvs(request.python, snapshot):
        progress("restore", shown(argv))
    results = restore_snapshot(request.python, snapshot, runner=runner)
    bad = [r for r in results if not r.ok]
    if bad:
        return f"pip exited {bad[0].returncode}: {bad[0].reason()}"
    try:
        after = read_environment(request.python, names, runner=runner)
        now = installed_versions(after, names)
        outcome.restored = now
        if now != snapshot.versions():
            return f"installed afterwards: {now}, not {snapshot.versions()}"
        outcome.after_restore = pip_check(request.python, runner=runner)
    except (OperationFailed, UsageError) as exc:
        return str(exc)
    progress("restore", "versions: " + ", ".join(f"{n} {v or '(absent)'}" for n, v in now.items()))
    if outcome.after_restore:
        for problem in outcome.after_restore:
            progress("check", f"as before the upgrade: {problem.line}")
    else:
        progress("check", "pip check: no broken requirements")
    return None
