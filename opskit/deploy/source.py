"""What a release is made of: a project directory, an sdist, a wheel or a git ref, and its hash.

The hash is of the content, never of archive bytes: the same files (names, executable
bits, bytes), the same lock and the same interpreter version give the same hash, however
the archive was packed, so the same code deploys to the same release.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import subprocess
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from opskit.errors import UsageError

#: Never part of a release: version control, environments, caches, build output.
SKIPPED = frozenset(
    {
        ".git",
        ".hg",
        ".svn",
        ".venv",
        "venv",
        "__pycache__",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        ".tox",
        ".nox",
        "node_modules",
        "build",
        "dist",
        ".opskit",
    }
)


@dataclass(frozen=True)
class Staged:
    """A release's content, unpacked into a directory of its own."""

    #: What the user named, for messages and the manifest.
    label: str
    kind: str
    #: The code tree (empty for a wheel).
    tree: Path
    #: The wheel to install, for a wheel source.
    wheel: Path | None
    #: The lock (requirements.txt), if there is one.
    lock: Path | None


def _copy_tree(src: Path, dst: Path) -> None:
    """Copy a project tree without what SKIPPED names; modes normalised to 644/755."""
    for root, dirs, files in os.walk(src):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED)
        rel = Path(root).relative_to(src)
        target = dst / rel
        target.mkdir(mode=0o755, exist_ok=True)
        for name in sorted(files):
            if name.endswith((".pyc", ".pyo")):
                continue
            path = Path(root) / name
            out = target / name
            if path.is_symlink():
                out.symlink_to(path.readlink())
                continue
            shutil.copyfile(path, out)
            executable = path.stat().st_mode & stat.S_IXUSR
            out.chmod(0o755 if executable else 0o644)
        for name in dirs:
            if (Path(root) / name).is_symlink():
                (target / name).symlink_to((Path(root) / name).readlink())
        dirs[:] = [d for d in dirs if not (Path(root) / d).is_symlink()]


def _extract_tar(data: bytes, dst: Path, *, strip: bool) -> None:
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        members = archive.getmembers()
        if strip:
            tops = {m.name.split("/", 1)[0] for m in members}
            if len(tops) != 1:
                raise UsageError("the sdist has no single top directory")
            for member in members:
                member.name = member.name.split("/", 1)[1] if "/" in member.name else ""
            members = [m for m in members if m.name]
        # The "data" filter refuses absolute paths, "..", devices and links out of the tree.
        archive.extractall(dst, members=members, filter="data")
    _copy_normalised(dst)


def _copy_normalised(tree: Path) -> None:
    """Drop what SKIPPED names from an unpacked tree and normalise its modes."""
    staging = tree.with_name(tree.name + ".n")
    _copy_tree(tree, staging)
    shutil.rmtree(tree)
    staging.rename(tree)


def _git_ref(project: Path, ref: str) -> bytes | None:
    """The tree of ``ref`` in the project's git repository as a tar, or None if it is no ref."""
    if not (project / ".git").exists() or shutil.which("git") is None:
        return None
    check = subprocess.run(
        ["git", "-C", str(project), "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
        capture_output=True,
        timeout=60,
    )
    if check.returncode != 0:
        return None
    out = subprocess.run(
        ["git", "-C", str(project), "archive", "--format=tar", ref],
        capture_output=True,
        timeout=600,
    )
    if out.returncode != 0:
        raise UsageError(f"git archive {ref}: {out.stderr.decode(errors='replace').strip()}")
    return out.stdout


def stage(source: str | None, project: Path, into: Path, requirements: Path | None) -> Staged:
    """Unpack ``source`` (default: the project directory) into ``into``/tree."""
    tree = into / "tree"
    tree.mkdir(parents=True, mode=0o755)
    label = source or str(project)
    path = Path(source) if source else project
    wheel: Path | None = None
    if source and source.endswith(".whl") and path.is_file():
        kind = "wheel"
        wheel = into / path.name
        shutil.copyfile(path, wheel)
    elif source and source.endswith((".tar.gz", ".tgz")) and path.is_file():
        kind = "sdist"
        _extract_tar(path.read_bytes(), tree, strip=True)
    elif path.is_dir():
        kind = "directory"
        tree.rmdir()
        _copy_tree(path, tree)
    elif source and (archive := _git_ref(project, source)) is not None:
        kind = "git"
        _extract_tar(archive, tree, strip=False)
    else:
        raise UsageError(
            f"deploy: {label!r} is not a wheel, an sdist (.tar.gz), a directory or a git ref "
            "of the project"
        )
    lock: Path | None = None
    if requirements is not None:
        if not requirements.is_file():
            raise UsageError(f"--requirements {requirements}: no such file")
        lock = into / "requirements.txt"
        if requirements.name == "pylock.toml" or requirements.name.startswith("pylock."):
            lock.write_text(pylock_requirements(requirements), encoding="utf-8")
        else:
            shutil.copyfile(requirements, lock)
    elif (tree / "requirements.txt").is_file():
        lock = tree / "requirements.txt"
    elif (tree / "pylock.toml").is_file():
        lock = into / "requirements.txt"
        lock.write_text(pylock_requirements(tree / "pylock.toml"), encoding="utf-8")
    elif (tree / "uv.lock").is_file():
        lock = into / "requirements.txt"
        lock.write_text(uv_lock_requirements(tree), encoding="utf-8")
    return Staged(label=label, kind=kind, tree=tree, wheel=wheel, lock=lock)


def pylock_requirements(path: Path) -> str:
    """A pylock.toml (PEP 751) as the NAME==VERSION lock a release is built from.

    Every package must come from an index (a version, wheels or an sdist): one from a
    directory, an archive URL or a VCS has no pin to fetch into the wheel cache and is
    refused. Markers are kept; the hashes are not (the pins go through the wheel cache,
    which holds no index's hashes).
    """
    from opskit.config import toml_module

    tomllib = toml_module()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"{path.name}: not a readable TOML file ({exc})") from None
    packages = data.get("packages")
    if not isinstance(packages, list):
        raise UsageError(f"{path.name}: no [[packages]] table (not a pylock.toml)")
    lines = [f"# from {path.name}, by opskit deploy"]
    for package in packages:
        name = package.get("name") if isinstance(package, dict) else None
        version = package.get("version") if isinstance(package, dict) else None
        if not isinstance(name, str) or not isinstance(version, str):
            raise UsageError(
                f"{path.name}: package {name or '?'}: no version (from a directory, an "
                "archive or a VCS): give a lock of index packages, or --requirements"
            )
        for other in ("vcs", "directory", "archive"):
            if other in package:
                raise UsageError(f"{path.name}: package {name} comes from a {other}: not pinned")
        marker = package.get("marker")
        lines.append(f"{name}=={version}" + (f" ; {marker}" if isinstance(marker, str) else ""))
    return "\n".join(lines) + "\n"


def uv_lock_requirements(project: Path) -> str:
    """A uv.lock as the lock a release is built from: ``uv export``, the project left out.

    ``--frozen``: the lock as it is, never re-resolved; ``--no-dev``: what production runs;
    ``--no-hashes`` as for pylock.toml.
    """
    from opskit.upgrade.installer import find_uv

    uv = find_uv()
    if uv is None:
        raise UsageError(
            "uv.lock: exporting it needs uv (pip install 'opskit[uv]', or put uv on PATH), "
            "or give --requirements"
        )
    out = subprocess.run(
        [uv, "export", "--quiet", "--frozen", "--no-dev", "--no-hashes", "--no-emit-project",
         "--format", "requirements-txt", "--project", str(project)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    if out.returncode != 0:
        lines = [line for line in out.stderr.splitlines() if line.strip()]
        raise UsageError(f"uv.lock: uv export failed: {lines[-1] if lines else out.returncode}")
    return out.stdout


def _wheel_entries(wheel: Path) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(wheel) as archive:
        return sorted(
            (info.filename, archive.read(info)) for info in archive.infolist() if not info.is_dir()
        )


def content_hash(staged: Staged, python_version: str) -> str:
    """The release's identity: its files, its lock and its interpreter's version."""
    digest = hashlib.sha256()
    digest.update(f"python {python_version}\n".encode())
    for root, dirs, files in os.walk(staged.tree):
        dirs.sort()
        for name in sorted(files + [d for d in dirs if (Path(root) / d).is_symlink()]):
            path = Path(root) / name
            rel = path.relative_to(staged.tree).as_posix()
            if path.is_symlink():
                digest.update(f"l {rel} {path.readlink()}\n".encode())
                continue
            mode = "x" if path.stat().st_mode & stat.S_IXUSR else "-"
            body = hashlib.sha256(path.read_bytes()).hexdigest()
            digest.update(f"{mode} {rel} {body}\n".encode())
    if staged.wheel is not None:
        for name, data in _wheel_entries(staged.wheel):
            digest.update(f"w {name} {hashlib.sha256(data).hexdigest()}\n".encode())
    if staged.lock is not None and not staged.lock.is_relative_to(staged.tree):
        digest.update(b"lock " + hashlib.sha256(staged.lock.read_bytes()).digest() + b"\n")
    return digest.hexdigest()
