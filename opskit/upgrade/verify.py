"""Proof that a restore put the environment back, read from the files, not from pip.

pip's own view can lie after an interrupted install: two .dist-info directories for one
name hide the package from ``pip list``, and the ``~``-prefixed directories pip stashes
an uninstalled package in stay behind. So the restore is followed by a reading of
site-packages itself: exactly one .dist-info per restored package with the snapshot's
version (none for a package that was absent), no stash of a touched package left, and
every file of the snapshot's RECORD back with the same hash.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import shutil
import zipfile
from base64 import urlsafe_b64encode
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from opskit.upgrade.environment import Environment


def canonical(name: str) -> str:
    """A distribution name as PEP 503 compares it."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Found:
    """One metadata directory of a distribution in a site directory."""

    name: str
    version: str
    path: Path


def site_dirs(env: Environment) -> list[Path]:
    """The site directories, purelib and platlib, once each."""
    return [Path(p) for p in dict.fromkeys((env.purelib, env.platlib))]


def metadata_dirs(env: Environment, names: Iterable[str]) -> dict[str, list[Found]]:
    """Every .dist-info (and .egg-info) directory of each of ``names``, duplicates included."""
    wanted: dict[str, list[Found]] = {canonical(n): [] for n in names}
    for site in site_dirs(env):
        try:
            entries = sorted(p.name for p in site.iterdir())
        except OSError:
            continue
        for entry in entries:
            for suffix in (".dist-info", ".egg-info"):
                if entry.endswith(suffix) and not entry.startswith("~"):
                    raw, sep, rest = entry[: -len(suffix)].partition("-")
                    name = canonical(raw)
                    if sep and name in wanted:
                        wanted[name].append(Found(name, rest.split("-")[0], site / entry))
    return wanted


def _top_names(dist: Path) -> set[str]:
    """The top-level entries of site-packages that a .dist-info's RECORD lists."""
    names = {dist.name}
    record = dist / "RECORD"
    try:
        text = record.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return names
    for row in csv.reader(io.StringIO(text)):
        if row and row[0] and not row[0].startswith(("/", "..")):
            names.add(row[0].split("/", 1)[0])
    return names


def _wheel_top_names(wheel: str) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return {
            n.split("/", 1)[0] for n in archive.namelist() if ".data/" not in n.split("/", 1)[0]
        }


def _stashed(entry: str, originals: set[str]) -> bool:
    """Whether ``entry`` is pip's stash of one of ``originals`` ("~umpy" for "numpy")."""
    stripped = entry.lstrip("~")
    cut = len(entry) - len(stripped)
    return cut > 0 and any(len(o) == len(entry) and o[cut:] == stripped for o in originals)


def touched_names(env: Environment, names: Sequence[str], wheels: Sequence[str]) -> set[str]:
    """The site-packages entries the packages ``names`` own, now or in the snapshot."""
    originals: set[str] = set()
    for found in metadata_dirs(env, names).values():
        for item in found:
            originals |= _top_names(item.path)
    for wheel in wheels:
        try:
            originals |= _wheel_top_names(wheel)
        except (OSError, zipfile.BadZipFile):
            continue
    return originals


def stashes(env: Environment, originals: set[str]) -> list[Path]:
    """The ``~`` stashes pip left of the given top-level entries (directories or files)."""
    out = []
    for site in site_dirs(env):
        try:
            entries = sorted(p.name for p in site.iterdir())
        except OSError:
            continue
        out += [site / e for e in entries if e.startswith("~") and _stashed(e, originals)]
    return out


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _inside(path: Path, bases: Sequence[Path]) -> bool:
    real = os.path.realpath(path)
    return any(real.startswith(os.path.realpath(b) + os.sep) for b in bases)


def _remove_recorded(found: Found, env: Environment) -> None:
    """Uninstall one .dist-info by its RECORD, touching nothing outside the environment."""
    bases = [Path(env.prefix), *site_dirs(env)]
    record = found.path / "RECORD"
    try:
        rows = list(csv.reader(io.StringIO(record.read_text(encoding="utf-8", errors="replace"))))
    except OSError:
        rows = []
    for row in rows:
        if not row or not row[0]:
            continue
        target = Path(os.path.normpath(found.path.parent / row[0]))
        if _inside(target, bases) and (target.is_file() or target.is_symlink()):
            target.unlink(missing_ok=True)
    _remove(found.path)


def scrub(
    env: Environment, saved: Sequence[tuple[str, str | None]], wheels: Sequence[str]
) -> list[str]:
    """Clear what an interrupted pip leaves, before the restore; return what was removed.

    Removed: pip's ``~`` stashes of the touched packages, and every extra .dist-info of
    a touched package (all of them for a package that was absent), each with the files
    its RECORD lists. A single .dist-info of the snapshot's version is left for pip's
    own --force-reinstall to replace.
    """
    names = [n for n, _ in saved]
    originals = touched_names(env, names, wheels)
    removed: list[str] = []
    found = metadata_dirs(env, names)
    for name, version in saved:
        items = found.get(canonical(name), [])
        keep = next((f for f in items if f.version == version), None) if version else None
        for item in items:
            if item is not keep:
                _remove_recorded(item, env)
                removed.append(str(item.path))
    for stash in stashes(env, originals):
        _remove(stash)
        removed.append(str(stash))
    return removed


def _hash(path: Path) -> str | None:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    except OSError:
        return None
    return "sha256=" + urlsafe_b64encode(digest.digest()).rstrip(b"=").decode("ascii")


def _recorded(wheel: str) -> list[tuple[str, str]]:
    with zipfile.ZipFile(wheel) as archive:
        record = next(n for n in archive.namelist() if n.endswith(".dist-info/RECORD"))
        text = archive.read(record).decode("utf-8")
    return [(row[0], row[1]) for row in csv.reader(io.StringIO(text)) if len(row) > 1 and row[1]]


def differences(env: Environment, saved: Sequence[tuple[str, str | None, str | None]]) -> list[str]:
    """How the environment differs from the snapshot (empty: it is as it was).

    ``saved`` holds (name, version, wheel) per package; a version of None means the
    package was not installed.
    """
    problems: list[str] = []
    names = [n for n, _, _ in saved]
    found = metadata_dirs(env, names)
    originals = touched_names(env, names, [w for _, _, w in saved if w])
    for name, version, wheel in saved:
        items = found.get(canonical(name), [])
        if version is None:
            problems += [f"{name}: {i.path.name} is there, but it was not installed" for i in items]
            continue
        if len(items) != 1:
            shown = ", ".join(i.path.name for i in items) or "none"
            problems.append(f"{name}: {len(items)} metadata directories ({shown}), expected one")
            continue
        if items[0].version != version:
            problems.append(f"{name}: {items[0].version} installed, not {version}")
            continue
        if wheel is None:
            continue
        site = items[0].path.parent
        data_prefix = f"{items[0].path.name[: -len('.dist-info')]}.data/data/"
        try:
            recorded = _recorded(wheel)
        except (OSError, KeyError, StopIteration, zipfile.BadZipFile) as exc:
            problems.append(f"{name}: the snapshot {wheel} is unreadable ({exc})")
            continue
        wrong = []
        for arcname, digest in recorded:
            if arcname.startswith(data_prefix):
                target = Path(env.prefix) / arcname[len(data_prefix) :]
            else:
                target = site / arcname
            if _hash(target) != digest:
                wrong.append(arcname)
        if wrong:
            problems.append(
                f"{name}: {len(wrong)} of {len(recorded)} files differ from the snapshot "
                f"(first: {wrong[0]})"
            )
    problems += [f"pip's stash {p.name} is left in {p.parent}" for p in stashes(env, originals)]
    return problems
