"""Deploy, roll back, repair: build beside the live release, prove it, switch, reload, verify.

The consistency model (docs/deploy.md): before BASE/current changes, a journal records
the switch (from, to). It is removed only when the new release is verified serving, or
when the switch is undone and the previous release verified again. A run that finds a
journal (a deploy or rollback killed after its switch) repairs it before anything else:
it keeps the new release when every process of the service serves from it and the
service answers, and otherwise switches back and reloads the previous one. SIGINT,
SIGTERM and SIGHUP are held from the journal to its removal, so only SIGKILL (or a
crash) leaves a journal behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opskit.deploy import serving, switch
from opskit.deploy.build import build
from opskit.deploy.layout import Layout, new_id
from opskit.deploy.source import Staged, content_hash, stage
from opskit.deploy.switch import DeployFailed, Outcome, Say
from opskit.errors import OperationFailed, UsageError
from opskit.proc import Runner
from opskit.spec import AppSpec


def layout_of(spec: AppSpec) -> Layout:
    """The spec's base, or a usage error naming the key."""
    if spec.base is None:
        raise UsageError("base: not set; releases need one (--base /srv/NAME, or base = ...)")
    if spec.supervisor != "systemd":
        raise UsageError("supervisor: releases are deployed to a systemd service")
    return Layout(Path(spec.base))


def repair(spec: AppSpec, layout: Layout, *, runner: Runner, say: Say) -> Outcome | None:
    """Finish or undo the switch a killed run left (the lock is held); None if there was none."""
    journal = layout.read_journal()
    if journal is None:
        return None
    to, previous = journal.get("to"), journal.get("from")
    outcome = Outcome("repair", release=to, previous=previous)
    _wait_for_orphans(layout, journal.get("pid"), spec, say)
    live = layout.live()
    say(
        f"repair: a deploy switching {previous or 'nothing'} -> {to} did not finish "
        f"(pid {journal.get('pid', '?')}); {layout.current} points at {live or 'nothing'}"
    )
    if (
        to is not None
        and live == to
        and switch.verified(spec, layout, to) is None
        and _answers(spec)
    ):
        layout.record_live(to)
        layout.clear_journal()
        outcome.status = "live"
        outcome.serving = to
        outcome.steps.append(f"kept {to}: every process serves from it and it answers")
        say(f"repair: kept releases/{to}: every process of {switch.unit_name(spec)} serves from it")
        return outcome
    with switch.held():
        undone = switch.undo(spec, layout, previous, outcome, runner=runner, say=say)
        if not undone:
            raise DeployFailed("repair: the previous release could not be verified", outcome)
        layout.clear_journal()
    return outcome


def _wait_for_orphans(layout: Layout, pid: object, spec: AppSpec, say: Say) -> None:
    """Let a reload script the killed run started finish first: two reloads never overlap."""
    if not isinstance(pid, int):
        return
    script = layout.base / f".opskit-reload.{pid}.sh"
    deadline = time.monotonic() + spec.graceful_timeout * 2 + 180
    told = False
    while serving.running_with_argument(str(script)) and time.monotonic() < deadline:
        if not told:
            say(f"repair: waiting for the reload script of pid {pid} to finish")
            told = True
        time.sleep(0.2)
    with contextlib.suppress(FileNotFoundError):
        script.unlink()


def _answers(spec: AppSpec) -> bool:
    from opskit.serving import probe

    return probe(spec).ok


def _interpreter_version(spec: AppSpec, runner: Runner) -> str:
    done = runner(
        [spec.interpreter, "-I", "-c", "import sys; print(sys.version.split()[0])"], timeout=60
    )
    if not done.ok:
        raise UsageError(f"interpreter: {spec.interpreter} does not run: {done.reason()}")
    return done.stdout.strip()


def _release_environment(spec: AppSpec, release: Path) -> dict[str, str]:
    """The service's environment, with the release's venv first on PATH as if activated."""
    from opskit.appcheck import service_environment
    from opskit.reload.render import release_spec

    env, problems = service_environment(release_spec(spec, str(release)))
    if problems:
        raise OperationFailed(problems[0].message)
    env["PATH"] = f"{release}/venv/bin:{env['PATH']}"
    env["VIRTUAL_ENV"] = f"{release}/venv"
    return env


def _pre_switch(spec: AppSpec, release: Path, runner: Runner, say: Say) -> None:
    """Run the smoke command, then the pre-switch commands, in the new release."""
    import shlex

    if not spec.smoke and not spec.pre_switch:
        return
    env = _release_environment(spec, release)
    if spec.smoke:
        from opskit.upgrade.smoke import SMOKE_TIMEOUT, smoke_argv

        say(f"smoke: {spec.smoke}")
        done = runner(smoke_argv(spec.smoke), env=env, cwd=str(release), timeout=SMOKE_TIMEOUT)
        if not done.ok:
            raise OperationFailed(f"the smoke command {spec.smoke!r} failed: {done.reason()}")
    for command in spec.pre_switch:
        say(f"pre-switch: {command}")
        done = runner(shlex.split(command), env=env, cwd=str(release), timeout=3600)
        if not done.ok:
            raise OperationFailed(f"pre-switch {command!r} failed: {done.reason()}")


def begin(spec: AppSpec, layout: Layout, outcome: Outcome, *, runner: Runner, say: Say) -> None:
    """With the lock held: repair a killed run's switch, remove half-built releases."""
    repaired = repair(spec, layout, runner=runner, say=say)
    if repaired is not None:
        outcome.steps.extend(f"repair: {s}" for s in repaired.steps)
    for leftover in layout.incomplete():
        shutil.rmtree(leftover, ignore_errors=True)


def build_or_reuse(
    spec: AppSpec,
    layout: Layout,
    staged: Staged,
    digest: str,
    release_id: str,
    live: str | None,
    outcome: Outcome,
    *,
    runner: Runner,
    say: Say,
    pip_args: Sequence[str] = (),
) -> None:
    """Build releases/ID, or reuse it when that content was built before; refuse on failure."""
    if layout.manifest(release_id) is not None:
        say(f"release {release_id}: the same content was built before")
        return
    say(f"build: releases/{release_id} from {staged.label}")
    try:
        build(spec, layout, staged, release_id, digest, runner=runner, say=say, pip_args=pip_args)
    except OperationFailed as exc:
        raise switch.refuse(outcome, release_id, live, exc) from None
    outcome.built = True


def deploy(
    spec: AppSpec,
    source: str | None,
    project: Path,
    *,
    requirements: Path | None,
    dry_run: bool,
    runner: Runner,
    say: Say,
) -> Outcome:
    """Build (or find) the release of ``source``, prove it, switch to it, verify; or refuse."""
    layout = layout_of(spec)
    outcome = Outcome("deploy")
    with layout.locked(say):
        if not dry_run:
            begin(spec, layout, outcome, runner=runner, say=say)
        live = layout.live()
        outcome.previous = live
        staging = layout.base / f".staging.{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            staged = stage(source, project, staging, requirements)
            digest = content_hash(staged, _interpreter_version(spec, runner))
            existing = layout.by_hash(digest)
            release_id = existing or new_id(digest)
            outcome.release = release_id
            if dry_run:
                step = f"would {'reuse' if existing else 'build'} releases/{release_id}"
                outcome.steps.append(step)
                say(f"dry run: {step}" + (" (live now)" if live == release_id else ""))
                outcome.status = "unchanged" if live == release_id else "planned"
                return outcome
            if live == release_id and switch.verified(spec, layout, release_id) is None:
                outcome.status = "unchanged"
                outcome.serving = live
                say(f"release {release_id} is live and serves already: nothing to do")
                return outcome
            build_or_reuse(
                spec, layout, staged, digest, release_id, live, outcome, runner=runner, say=say
            )
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return _prove_and_switch(spec, layout, release_id, live, outcome, runner=runner, say=say)


def _prove_and_switch(
    spec: AppSpec,
    layout: Layout,
    release_id: str,
    live: str | None,
    outcome: Outcome,
    *,
    runner: Runner,
    say: Say,
) -> Outcome:
    release = layout.release(release_id)
    try:
        if switch.active(spec):
            ok, detail = switch.run_script(
                spec, layout, release_id, "check", canary=spec.canary, runner=runner
            )
            if not ok:
                raise OperationFailed(f"the new release does not pass its checks:\n{detail}")
            outcome.steps.append("checked: " + ("canary answered" if spec.canary else "imports"))
        _pre_switch(spec, release, runner, say)
    except OperationFailed as exc:
        raise switch.refuse(outcome, release_id, live, exc) from None
    switch.switch_verified(
        spec, layout, release_id, live, outcome, canary=spec.canary, runner=runner, say=say
    )
    prune(spec, layout, say)
    return outcome


def rollback(spec: AppSpec, target: str | None, *, runner: Runner, say: Say) -> Outcome:
    """Switch back to ``target`` (default: the release live before this one), verified."""
    layout = layout_of(spec)
    outcome = Outcome("rollback")
    with layout.locked(say):
        repair(spec, layout, runner=runner, say=say)
        live = layout.live()
        target = target or layout.previous(live)
        if target is None:
            raise UsageError("rollback: no previous release to go back to (opskit releases)")
        if layout.manifest(target) is None:
            raise UsageError(f"rollback: no release {target!r} (opskit releases lists them)")
        outcome.release, outcome.previous = target, live
        if target == live and switch.verified(spec, layout, target) is None:
            outcome.status = "unchanged"
            say(f"release {target} is live and serves already: nothing to do")
            return outcome
        switch.switch_verified(
            spec, layout, target, live, outcome, canary=False, runner=runner, say=say
        )
    return outcome


def prune(spec: AppSpec, layout: Layout, say: Say) -> list[str]:
    """Remove old releases past keep-releases; never the live, the previous or a serving one."""
    ids = layout.ids()
    live = layout.live()
    keep = set(ids[-spec.keep_releases :]) | {live, layout.previous(live)}
    keep |= {p.release for p in serving.every_process_in_releases(layout)}
    removed = []
    for release_id in ids:
        if release_id not in keep:
            shutil.rmtree(layout.release(release_id), ignore_errors=True)
            removed.append(release_id)
    if removed:
        say(f"pruned {len(removed)} old release(s): {', '.join(removed)}")
    return removed


def releases(spec: AppSpec, *, runner: Runner, say: Say) -> dict[str, Any]:
    """The releases, the live one, and which release each process of the service serves."""
    layout = layout_of(spec)
    journal = layout.read_journal()
    if journal is not None and os.geteuid() == 0:
        with contextlib.suppress(OperationFailed), layout.locked(say, wait=False):
            repair(spec, layout, runner=runner, say=say)
            journal = layout.read_journal()
    live = layout.live()
    processes = serving.unit_processes(layout, switch.unit_name(spec))
    rows = []
    for release_id in layout.ids():
        manifest = layout.manifest(release_id) or {}
        rows.append(
            {
                "id": release_id,
                "live": release_id == live,
                "previous": release_id == layout.previous(live),
                "source": manifest.get("source"),
                "built": manifest.get("built"),
                "pids": [p.pid for p in processes if p.release == release_id],
            }
        )
    stray = [p.pid for p in processes if p.release is None]
    return {"base": str(layout.base), "live": live, "releases": rows, "journal": journal,
            "outside_releases": stray}  # fmt: skip
