"""``opskit upgrade --release``: an upgrade built as a new release, never in the live venv.

The live release's lock, with the requested pins changed, is the new release's lock; its
code is the live release's code. The release is built like any deploy (a fresh venv,
``pip install --no-deps`` of every pin from the wheel cache, ``pip check``), then the
smoke command, the canary, the pre-switch commands, the switch and the verified reload
run, and any failure leaves the live release serving. The running server never sees a
half-installed package: the venv being installed is not the one it serves from. The
project's pip-tools lock is compiled first (a pin it cannot take refuses the upgrade
before anything is built) and renamed into place only once the new release serves.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

from packaging.utils import canonicalize_name

from opskit.deploy import switch
from opskit.deploy.build import KEPT_LOCK, KEPT_SOURCE
from opskit.deploy.layout import MANIFEST, Layout, new_id
from opskit.deploy.run import (
    _interpreter_version,
    _prove_and_switch,
    begin,
    build_or_reuse,
    layout_of,
)
from opskit.deploy.source import SKIPPED, Staged, content_hash
from opskit.deploy.switch import Outcome, Say
from opskit.errors import OperationFailed, UsageError
from opskit.proc import Runner
from opskit.spec import AppSpec
from opskit.upgrade.lock import LockFiles
from opskit.upgrade.pins import Pin

_PIN_LINE = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?P<extras>\[[^\]]*\])?==(?P<version>[^\s;\\]+)"
)


def repin(text: str, pins: Sequence[Pin]) -> tuple[str, list[str]]:
    """The lock ``text`` with each pin's version changed; and what changed, as messages.

    A pin the lock lacks is added at the end. A lock that pins a changed package with
    hashes is refused: the new version's hashes are not known here.
    """
    wanted = {p.name: p for p in pins}
    lines = text.splitlines()
    seen: set[str] = set()
    changes: list[str] = []
    for i, line in enumerate(lines):
        match = _PIN_LINE.match(line)
        if match is None:
            continue
        name = str(canonicalize_name(match["name"]))
        if name not in wanted:
            continue
        seen.add(name)
        if "--hash" in line or (line.rstrip().endswith("\\") and _hashed(lines, i)):
            raise UsageError(
                f"the live release's lock pins {name} with hashes; the new version's hashes "
                "are not known: recompile the lock (pip-compile --generate-hashes) and deploy it"
            )
        version = wanted[name].version
        if match["version"] != version:
            lines[i] = line[: match.start("version")] + version + line[match.end("version") :]
            changes.append(f"{name} {match['version']} -> {version}")
    for name, pin in wanted.items():
        if name not in seen:
            lines.append(pin.requirement)
            changes.append(f"{name} {pin.version} (added: not in the lock)")
    return "\n".join(lines) + "\n", changes


def _hashed(lines: list[str], i: int) -> bool:
    for follow in lines[i + 1 :]:
        if "--hash" in follow:
            return True
        if not follow.rstrip().endswith("\\"):
            return False
    return False


def _copy_release_tree(release: Path, into: Path, skip: set[str]) -> None:
    """The release's code without its venv and what opskit wrote into it."""
    from opskit.deploy.source import _copy_tree

    _copy_tree(release, into)
    for name in skip:
        path = into / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def stage_from_release(
    spec: AppSpec, layout: Layout, live: str, pins: Sequence[Pin], into: Path
) -> tuple[Staged, list[str]]:
    """Stage the live release's code with its lock re-pinned; and the pin changes."""
    release = layout.release(live)
    manifest = layout.manifest(live) or {}
    lock_rel = manifest.get("lock")
    if lock_rel is None and (release / "requirements.txt").is_file():
        lock_rel = "requirements.txt"  # a release built before the manifest named its lock
    if not isinstance(lock_rel, str) or not (release / lock_rel).is_file():
        raise UsageError(
            f"upgrade --release: releases/{live} was built without a lock (requirements.txt); "
            "there is no pin to change: deploy a lock with opskit deploy --requirements"
        )
    from opskit.deploy.build import _pins

    if _pins(release / lock_rel) is None:
        raise UsageError(
            f"upgrade --release: releases/{live}'s lock has lines that are not NAME==VERSION "
            "pins (a URL, -e, -r): change it in the project and deploy it"
        )
    text, changes = repin((release / lock_rel).read_text(encoding="utf-8"), pins)
    into.mkdir(parents=True, exist_ok=True)
    tree = into / "tree"
    skip = {MANIFEST, KEPT_LOCK, KEPT_SOURCE, *spec.shared}
    current = spec.working_directory + "/"
    if spec.deploy_id_file and spec.deploy_id_file.startswith(current):
        skip.add(spec.deploy_id_file[len(current) :])
    _copy_release_tree(release, tree, skip - SKIPPED)
    lock = into / "requirements.txt" if lock_rel == KEPT_LOCK else tree / lock_rel
    lock.write_text(text, encoding="utf-8")
    wheel = None
    wheel_rel = manifest.get("wheel")
    if isinstance(wheel_rel, str):
        wheel = into / Path(wheel_rel).name
        shutil.copyfile(release / wheel_rel, wheel)
    elif manifest.get("kind") == "wheel":
        raise UsageError(
            f"upgrade --release: releases/{live} was built from a wheel it does not keep "
            "(built by an older opskit): deploy the wheel again first"
        )
    moved = ", ".join(p.requirement for p in pins)
    label = f"releases/{live} with {moved}"
    return Staged(label=label, kind="upgrade", tree=tree, wheel=wheel, lock=lock), changes


def upgrade_release(
    spec: AppSpec,
    pins: Sequence[Pin],
    *,
    project_lock: LockFiles | None,
    index_args: Sequence[str],
    dry_run: bool,
    runner: Runner,
    say: Say,
) -> Outcome:
    """Build the live release again with ``pins`` changed, prove it, switch, verify."""
    from opskit.upgrade.lock import commit_lock, prepare_lock

    layout = layout_of(spec)
    outcome = Outcome("upgrade-release")
    with layout.locked(say):
        if not dry_run:
            begin(spec, layout, outcome, runner=runner, say=say)
        live = layout.live()
        if live is None or layout.manifest(live) is None:
            raise UsageError(
                f"upgrade --release: no live release in {layout.base} (opskit deploy first)"
            )
        outcome.previous = live
        staging = layout.base / f".staging.{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        lock_temp: Path | None = None
        try:
            staged, changes = stage_from_release(spec, layout, live, pins, staging)
            if not changes:
                outcome.status = "unchanged"
                outcome.serving = live
                say(f"releases/{live} pins {', '.join(p.requirement for p in pins)} already")
                return outcome
            say(f"upgrade: {'; '.join(changes)}")
            outcome.steps.append("pins: " + "; ".join(changes))
            digest = content_hash(staged, _interpreter_version(spec, runner))
            existing = layout.by_hash(digest)
            release_id = existing or new_id(digest)
            outcome.release = release_id
            if dry_run:
                step = f"would {'reuse' if existing else 'build'} releases/{release_id}"
                outcome.steps.append(step)
                say(f"dry run: {step} from {staged.label}")
                return outcome
            if project_lock is not None:
                say(f"lock: {project_lock.output}: pip-compile --upgrade-package")
                try:
                    lock_temp = prepare_lock(project_lock, pins, index_args, runner=runner)
                except OperationFailed as exc:
                    raise switch.refuse(outcome, release_id, live, exc) from None
            build_or_reuse(
                spec, layout, staged, digest, release_id, live, outcome,
                runner=runner, say=say, pip_args=index_args,
            )  # fmt: skip
            shutil.rmtree(staging, ignore_errors=True)
            _prove_and_switch(spec, layout, release_id, live, outcome, runner=runner, say=say)
            if lock_temp is not None and project_lock is not None:
                commit_lock(lock_temp, project_lock)
                lock_temp = None
                outcome.steps.append(f"lock: {project_lock.output_path} updated")
                say(f"lock: {project_lock.output} updated, now that releases/{release_id} serves")
            return outcome
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            if lock_temp is not None:
                lock_temp.unlink(missing_ok=True)
