"""Build a release: its code, shared links, and a venv made fresh from the lock.

Never a copied venv: a venv's console scripts name its interpreter's path in their #!
line, so a copy keeps running the old one. With pip, every package comes from
BASE/wheels, the wheel cache: only pins it lacks are fetched (with pip's own
configuration: index, find-links), so a release that changes one pin installs the
others from local wheels. With ``installer = "uv"`` uv makes the venv (no pip in it)
and installs from BASE/wheels and its own cache, fetching what neither has with pip's
configuration carried over (opskit.upgrade.installer); ``uv pip check`` then checks.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from packaging.utils import canonicalize_name, parse_wheel_filename

from opskit.deploy.layout import MANIFEST, Layout, write_json
from opskit.deploy.source import Staged
from opskit.errors import OperationFailed
from opskit.proc import Runner
from opskit.spec import AppSpec

if TYPE_CHECKING:
    from opskit.upgrade.installer import Installer

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


class _Tools:
    """The venv maker and the installer of one build: pip (the venv's own) or uv."""

    def __init__(
        self,
        spec: AppSpec,
        venv: Path,
        pip_args: Sequence[str],
        *,
        runner: Runner,
        say: Callable[[str], None],
    ) -> None:
        self.spec, self.venv, self.runner = spec, venv, runner
        self.python = str(venv / "bin" / "python")
        self.uv: Installer | None = None
        if spec.installer == "uv":
            self.uv = _uv(self.python, venv, pip_args, runner=runner, say=say)

    @property
    def name(self) -> str:
        return "pip" if self.uv is None else "uv"

    def make_venv(self) -> None:
        interpreter = self.spec.interpreter
        if self.uv is None:
            argv = [interpreter, "-m", "venv", str(self.venv)]
        else:
            assert self.uv.uv is not None
            # --no-project: a pyproject.toml in the cwd must not choose the interpreter;
            # --no-python-downloads: the interpreter named, never one uv would fetch.
            argv = [self.uv.uv, "venv", "--quiet", "--no-project", "--no-config",
                    "--no-python-downloads", "--python", interpreter, str(self.venv)]  # fmt: skip
        made = self.runner(argv, timeout=300)
        if not made.ok:
            raise OperationFailed(f"making the venv with {interpreter} failed: {made.reason()}")

    def install(self, args: Sequence[str], what: str) -> None:
        if self.uv is None:
            argv = [self.python, "-m", "pip", "--disable-pip-version-check", "-q", "install"]
            env = None
        else:
            assert self.uv.uv is not None
            # pip writes bytecode as it installs; uv only when told (field facts).
            argv = [self.uv.uv, "pip", "install", "--quiet", "--python", self.python,
                    "--compile-bytecode", *self.uv.args]  # fmt: skip
            env = self.uv.environ
        done = self.runner([*argv, *args], env=env, timeout=PIP_TIMEOUT)
        if not done.ok:
            reason = done.reason() if self.uv is None else self.uv.reason(done)
            raise OperationFailed(f"installing {what} failed: {reason}")

    def check(self) -> None:
        from opskit.upgrade.installer import Installer
        from opskit.upgrade.pipcheck import check

        # uv pip install exits 0 on a conflict (field facts): the check decides.
        problems = check(self.uv or Installer("pip", self.python), runner=self.runner)
        if problems:
            raise OperationFailed(
                f"the release's dependencies conflict ({self.name} check): "
                + "; ".join(p.line for p in problems[:3])
            )


def _uv(
    python: str,
    venv: Path,
    pip_args: Sequence[str],
    *,
    runner: Runner,
    say: Callable[[str], None],
) -> Installer:
    """The uv of a build: found, working, and given pip's configuration (uv reads none of it)."""
    from opskit.errors import UsageError
    from opskit.upgrade.installer import (
        UV_TESTED,
        Installer,
        find_uv,
        in_tested_range,
        pip_settings,
        uv_config,
        uv_version,
    )

    uv = find_uv()
    if uv is None:
        raise UsageError(
            "installer = uv: uv was not found (pip install 'opskit[uv]', or put uv on PATH)"
        )
    version = uv_version(uv, runner=runner)
    base = dict(os.environ)
    # pip_args holds the wheel cache's --find-links: pip's find-links become flags too.
    config = uv_config(pip_settings(str(venv), base), base, pip_args)
    say(f"build: uv {version} at {uv}")
    if not in_tested_range(version):
        say(f"build: uv {version} is outside the range opskit is tested with ({UV_TESTED})")
    for note in config.notes:
        say(f"build: {note}")
    return Installer(
        "uv", python, uv=uv, version=version, args=config.args,
        environ={**base, **config.variables}, notes=config.notes,
    )  # fmt: skip


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
        cache = ["--find-links", str(layout.wheels)]
        # uv refuses a --find-links directory that does not exist (pip makes it first).
        layout.wheels.mkdir(parents=True, exist_ok=True)
        tools = _Tools(spec, release / "venv", [*pip_args, *cache], runner=runner, say=say)
        python = tools.python
        say(f"build: venv with {spec.interpreter} ({tools.name})")
        tools.make_venv()
        if lock is not None:
            if tools.uv is None:
                fetched = fill_cache(python, lock, layout.wheels, runner, pip_args)
                say(
                    f"build: fetched {len(fetched)} package(s) into the wheel cache"
                    if fetched
                    else "build: every pinned package is in the wheel cache"
                )
                where = ["--no-index", *cache]
            else:
                # uv has its own cache: what BASE/wheels lacks it takes from there, or
                # fetches with the index settings.
                where = [*cache, *pip_args]
            # A lock of pins is the whole environment: installed as it is (--no-deps),
            # then pip check says whether it holds together, as for an upgrade.
            exact = ["--no-deps"] if _pins(lock) is not None else []
            tools.install([*where, *exact, "-r", str(lock)], "the lock")
        deps = ["--no-deps"] if staged.lock is not None else []
        if tools.uv is not None:
            deps += pip_args
        if staged.wheel is not None:
            tools.install([*deps, *cache, str(staged.wheel)], staged.wheel.name)
        elif (release / "pyproject.toml").is_file() or (release / "setup.py").is_file():
            tools.install([*deps, str(release)], "the project")
        tools.check()
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
                "installer": tools.name,
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
