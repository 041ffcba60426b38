"""Build a release: its code, shared links, and a venv made fresh from the lock.

Never a copied venv: a venv's console scripts name its interpreter's path in their #!
line, so a copy keeps running the old one. Every package comes from BASE/wheels, the
wheel cache: only pins it lacks are fetched (with pip's own configuration: index,
find-links), so a release that changes one pin installs the others from local wheels.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from packaging.utils import canonicalize_name, parse_wheel_filename

from opskit.deploy.layout import MANIFEST, Layout, write_json
from opskit.deploy.source import Staged
from opskit.errors import OperationFailed
from opskit.proc import Runner
from opskit.spec import AppSpec

#: A lock line opskit can look up in the cache: NAME==VERSION, markers and hashes aside.
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")
PIP_TIMEOUT = 1800.0


def _pins(lock: Path) -> list[tuple[str, str]] | None:
    """The lock's NAME==VERSION pins; None when a line is something else (a URL, -e, -r)."""
    pins = []
    for raw in lock.read_text(encoding="utf-8").splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#") or line.startswith("--hash"):
            continue
        match = _PIN.match(line)
        if match is None:
            return None
        pins.append((str(canonicalize_name(match[1])), match[2]))
    return pins


def _cached(wheels: Path) -> set[tuple[str, str]]:
    out = set()
    for path in wheels.glob("*.whl"):
        try:
            name, version, _, _ = parse_wheel_filename(path.name)
        except ValueError:
            continue
        out.add((str(name), str(version)))
    return out


def fill_cache(
    python: str, lock: Path, wheels: Path, runner: Runner, pip_args: Sequence[str] = ()
) -> list[str]:
    """Put a wheel of every pin into the cache; return the pins it had to fetch."""
    wheels.mkdir(parents=True, exist_ok=True)
    pins = _pins(lock)
    if pins is None:
        missing = ["-r", str(lock)]
        fetched = [f"everything in {lock.name} (not only NAME==VERSION lines)"]
    else:
        have = _cached(wheels)
        todo = [f"{n}=={v}" for n, v in pins if (n, v) not in have]
        if not todo:
            return []
        missing, fetched = ["--no-deps", *todo], todo
    done = runner(
        # --use-pep517: a project with only setup.py (uWSGI) is built in an isolated
        # environment with its build requirements, not by "setup.py bdist_wheel" in a
        # fresh venv that has no wheel package.
        [python, "-m", "pip", "wheel", "--disable-pip-version-check", "-q", "--use-pep517",
         "--wheel-dir", str(wheels), "--find-links", str(wheels), *pip_args, *missing],
        timeout=PIP_TIMEOUT,
    )  # fmt: skip
    if not done.ok:
        raise OperationFailed(f"fetching the lock's packages failed: {done.reason()}")
    return fetched


def _link_shared(spec: AppSpec, layout: Layout, release: Path) -> None:
    for item in spec.shared:
        shared = layout.shared / item
        inside = release / item
        if not shared.exists() and not shared.is_symlink():
            shared.parent.mkdir(parents=True, exist_ok=True)
            if inside.is_dir() and not inside.is_symlink():
                shutil.copytree(inside, shared, symlinks=True)
            elif inside.exists():
                shutil.copy2(inside, shared)
            else:
                shared.mkdir(mode=0o755)
        if inside.is_dir() and not inside.is_symlink():
            shutil.rmtree(inside)
        elif inside.exists() or inside.is_symlink():
            inside.unlink()
        inside.parent.mkdir(parents=True, exist_ok=True)
        inside.symlink_to(shared)


def _write_deploy_id(spec: AppSpec, release: Path, release_id: str) -> None:
    """A deploy-id file inside the release holds the release's ID: what its version path says."""
    current = spec.working_directory + "/"
    if spec.deploy_id_file and spec.deploy_id_file.startswith(current):
        target = release / spec.deploy_id_file[len(current) :]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(f"{release_id}\n", encoding="utf-8")
        target.chmod(0o644)


#: Inside a release: the lock it was built from, when that was not in its tree.
KEPT_LOCK = ".opskit-lock.txt"
#: Inside a release: the wheel it was built from (a wheel source).
KEPT_SOURCE = ".opskit-source"


def _keep_inputs(staged: Staged, release: Path, lock: Path | None) -> tuple[str | None, str | None]:
    """Keep the lock and the wheel in the release; their paths relative to it."""
    kept_lock = None
    if lock is not None:
        if lock.is_relative_to(release):
            kept_lock = lock.relative_to(release).as_posix()
        else:
            shutil.copyfile(lock, release / KEPT_LOCK)
            (release / KEPT_LOCK).chmod(0o644)
            kept_lock = KEPT_LOCK
    kept_wheel = None
    if staged.wheel is not None:
        (release / KEPT_SOURCE).mkdir(mode=0o755, exist_ok=True)
        shutil.copyfile(staged.wheel, release / KEPT_SOURCE / staged.wheel.name)
        (release / KEPT_SOURCE / staged.wheel.name).chmod(0o644)
        kept_wheel = f"{KEPT_SOURCE}/{staged.wheel.name}"
    return kept_lock, kept_wheel


def build(
    spec: AppSpec,
    layout: Layout,
    staged: Staged,
    release_id: str,
    digest: str,
    *,
    runner: Runner,
    say: Callable[[str], None],
    pip_args: Sequence[str] = (),
) -> Path:
    """Make BASE/releases/ID complete; on any failure remove it and raise OperationFailed."""
    release = layout.release(release_id)
    layout.releases.mkdir(parents=True, exist_ok=True)
    old_umask = os.umask(0o022)
    try:
        # The venv is made at its final path: its scripts and pyvenv.cfg name it.
        lock = staged.lock
        if lock is not None and lock.is_relative_to(staged.tree):
            lock = release / lock.relative_to(staged.tree)
        staged.tree.rename(release)
        release.chmod(0o755)
        _link_shared(spec, layout, release)
        python = str(release / "venv" / "bin" / "python")
        say(f"build: venv with {spec.interpreter}")
        made = runner([spec.interpreter, "-m", "venv", str(release / "venv")], timeout=300)
        if not made.ok:
            raise OperationFailed(f"{spec.interpreter} -m venv failed: {made.reason()}")
        pip = [python, "-m", "pip", "--disable-pip-version-check", "-q"]
        offline = ["--no-index", "--find-links", str(layout.wheels)]
        if lock is not None:
            fetched = fill_cache(python, lock, layout.wheels, runner, pip_args)
            say(
                f"build: fetched {len(fetched)} package(s) into the wheel cache"
                if fetched
                else "build: every pinned package is in the wheel cache"
            )
            # A lock of pins is the whole environment: installed as it is (--no-deps),
            # then pip check says whether it holds together, as for an upgrade.
            exact = ["--no-deps"] if _pins(lock) is not None else []
            done = runner([*pip, "install", *offline, *exact, "-r", str(lock)], timeout=PIP_TIMEOUT)
            if not done.ok:
                raise OperationFailed(f"installing the lock failed: {done.reason()}")
        if staged.wheel is not None:
            deps = ["--no-deps"] if staged.lock is not None else []
            done = runner(
                [*pip, "install", *deps, "--find-links", str(layout.wheels), str(staged.wheel)],
                timeout=PIP_TIMEOUT,
            )
            if not done.ok:
                raise OperationFailed(f"installing {staged.wheel.name} failed: {done.reason()}")
        elif (release / "pyproject.toml").is_file() or (release / "setup.py").is_file():
            deps = ["--no-deps"] if staged.lock is not None else []
            done = runner([*pip, "install", *deps, str(release)], timeout=PIP_TIMEOUT)
            if not done.ok:
                raise OperationFailed(f"installing the project failed: {done.reason()}")
        from opskit.upgrade.pipcheck import pip_check

        problems = pip_check(python, runner=runner)
        if problems:
            raise OperationFailed(
                "the release's dependencies conflict (pip check): "
                + "; ".join(p.line for p in problems[:3])
            )
        _write_deploy_id(spec, release, release_id)
        kept_lock, kept_wheel = _keep_inputs(staged, release, lock)
        version = runner([python, "-I", "-c", "import sys; print(sys.version.split()[0])"])
        write_json(
            release / MANIFEST,
            {
                "id": release_id,
                "hash": digest,
                "source": staged.label,
                "kind": staged.kind,
                "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "python": version.stdout.strip(),
                # What the release was built from, inside it: opskit upgrade --release
                # builds the next one from them.
                "lock": kept_lock,
                "wheel": kept_wheel,
            },
        )
        (release / MANIFEST).chmod(0o644)
    except BaseException:
        shutil.rmtree(release, ignore_errors=True)
        raise
    finally:
        os.umask(old_umask)
    return release
