"""The snapshot: installed distributions rebuilt as wheels, and the offline restore from them.

pip cannot export an installed distribution, and the old version may be on no index.
The snapshot rebuilds a wheel from the files its RECORD lists plus its .dist-info, so
a restore is an ordinary offline install of it (``pip install --no-deps
--force-reinstall``, or uv's; ``installer.Installer.restore_argvs``): the installer
removes whatever is there now, regenerates console scripts from entry_points.txt and
recompiles bytecode, and the same command is the manual recovery.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import zipfile
from base64 import urlsafe_b64encode
from dataclasses import dataclass
from pathlib import Path

from opskit.errors import OperationFailed
from opskit.upgrade.environment import Distribution, Environment
from opskit.upgrade.plan import Plan


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


def wheel_from_installed(dist: Distribution, env: Environment, directory: Path) -> Path:
    """Rebuild the wheel of an installed distribution from its RECORD; return its path.

    Files under site-packages go in as they are; other files of the environment (scripts
    that are not entry points, data files, headers) go under ``.data/data/`` relative to
    the prefix, so pip puts the same bytes back at the same path. Console scripts are
    left out: pip writes them again from entry_points.txt. Bytecode is left out: pip
    compiles it again. Raises OperationFailed when the distribution cannot be rebuilt.
    """
    dist_info = Path(dist.dist_info)
    record = dist_info / "RECORD"
    if dist_info.suffix != ".dist-info" or not record.is_file():
        raise OperationFailed(
            f"cannot snapshot {dist.name} {dist.version}: it has no RECORD "
            f"(installed without pip?); reinstall it with pip first"
        )
    location = dist_info.parent
    # Locations as the interpreter reports them may differ from the real paths (symlinks).
    prefix = os.path.realpath(env.prefix)
    scripts = os.path.realpath(env.scripts)
    site_dirs = {os.path.realpath(env.purelib), os.path.realpath(env.platlib)}
    if os.path.realpath(location) not in site_dirs and _within(str(location), prefix) is None:
        raise OperationFailed(
            f"cannot snapshot {dist.name}: installed outside the environment ({location})"
        )
    entry_points = _console_scripts(dist_info)
    wheel_file = dist_info / "WHEEL"
    wheel_meta = (
        wheel_file.read_text(encoding="utf-8", errors="replace") if wheel_file.is_file() else ""
    )
    dist_name = dist_info.name[: -len(".dist-info")]
    data_dir = f"{dist_name}.data"
    # The installer writes these again on install (uv_cache.json: uv's note of the
    # archive it unpacked, which a restore by uv writes for the snapshot's).
    # direct_url.json stays: it is what makes pip freeze show the package as installed
    # from a URL or a path, as before.
    skip_meta = {"RECORD", "INSTALLER", "REQUESTED", "uv_cache.json"}
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
                    f"cannot snapshot {dist.name}: {rel} lies outside the environment"
                )
            members[f"{data_dir}/data/{under.replace(os.sep, '/')}"] = source
    tags = _wheel_tags(wheel_meta)
    filename = f"{dist_name.split('-')[0]}-{dist.version.replace('-', '_')}-{tags}.whl"
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
