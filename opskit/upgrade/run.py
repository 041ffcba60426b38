"""``opskit upgrade``: plan exact-pin upgrades, snapshot, install, verify, and restore on failure.

This module is the orchestration; each step lives in its own module. The planning half
(``pins``, ``environment``, ``plan``, parsing in ``pipcheck``) is pure. The side effects
live in the functions named for them (``snapshot_packages``, the ``Installer``'s
``install``, ``check`` and ``restore``, ``run_smoke``, ``prepare_lock``/``commit_lock``,
``append_history``), each running its commands as argument lists through an explicit
``opskit.proc`` runner. What goes in and comes out is in ``outcome``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from opskit.errors import OperationFailed, UsageError
from opskit.proc import InterruptGuard, Runner, shown
from opskit.upgrade.environment import Environment, installed_versions, read_environment
from opskit.upgrade.history import (
    append_history,
    default_state_dir,
    prune_snapshots,
    tree_size,
)
from opskit.upgrade.installer import Installer, choose_installer, restorer
from opskit.upgrade.lock import commit_lock, lock_argv, prepare_lock
from opskit.upgrade.outcome import (
    Outcome,
    Progress,
    UpgradeFailed,
    UpgradeInterrupted,
    UpgradeRequest,
    no_progress,
)
from opskit.upgrade.pipcheck import check
from opskit.upgrade.plan import Plan, build_plan
from opskit.upgrade.smoke import run_smoke, validate_smoke
from opskit.upgrade.snapshot import Saved, Snapshot, snapshot_packages
from opskit.upgrade.state import read_marker, remove_marker, state_dir_for, venv_lock, write_marker
from opskit.upgrade.verify import differences, scrub


def dry_run_commands(request: UpgradeRequest, plan: Plan, installer: Installer) -> list[list[str]]:
    """The commands an upgrade would run, in order (snapshot and restore aside)."""
    argvs = []
    if request.lock is not None:
        argvs.append(lock_argv(request.lock, plan.pins, request.lock.output, request.pip_args))
    argvs.append(installer.install_argv(plan.pins, request.pip_args))
    argvs.append(installer.check_argv())
    if request.smoke:
        argvs.append(list(request.smoke))
    return argvs


def plan_upgrade(request: UpgradeRequest, *, runner: Runner) -> tuple[Environment, Plan, Installer]:
    """Read the environment, choose the installer and build the plan; changes nothing."""
    env = read_environment(request.python, [p.name for p in request.pins], runner=runner)
    installer = choose_installer(request.installer, env, request.pip_args, runner=runner)
    if request.smoke:
        validate_smoke(request.smoke, env)
    return env, build_plan(request.pins, env), installer


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
    state = state_dir_for(request.python)
    # Held from the plan to the end of the restore: a second upgrade of this venv plans
    # on what the first one left, never on its half-installed packages.
    with venv_lock(state, wait=request.wait, notify=lambda m: progress("wait", m)):
        recovered = recover(request.python, state, runner=runner, progress=progress)
        env, plan, installer = plan_upgrade(request, runner=runner)
        for note in installer.notes:
            progress("uv", note)
        for change in plan.changes:
            progress("plan", change.describe())
        outcome = Outcome("unchanged", request.python, plan, recovered=recovered)
        outcome.installer = installer.describe()
        if not plan.changed:
            progress("done", "nothing to do: every package is at the requested version")
            return outcome
        guard = InterruptGuard(notify or (lambda message: progress("interrupt", message)))
        with guard.installed():
            return _upgrade(
                request,
                env,
                plan,
                installer,
                outcome,
                guard,
                state,
                runner=runner,
                progress=progress,
            )


def recover(python: str, state: Path, *, runner: Runner, progress: Progress) -> str | None:
    """Put back the snapshot of an upgrade that died before its end; say what was found.

    Called with the venv lock held, so the run that wrote the marker is gone. Returns a
    description of what was recovered, None when there was nothing to do; raises
    UpgradeFailed when the environment cannot be proven back.
    """
    marker = read_marker(state)
    if marker is None:
        return None
    saved = tuple(Saved(str(n), v, w) for n, v, w in marker["saved"])
    snapshot = Snapshot(str(marker["snapshot"]), saved)
    found = (
        f"an upgrade (pid {marker.get('pid')}, started {marker.get('time')}) ended without "
        f"finishing ({marker.get('step', 'install')}): "
        + ", ".join(f"{n} {marker.get('to', {}).get(n)}" for n in (s.name for s in saved))
    )
    progress("recover", found)
    progress("recover", f"restoring its snapshot {snapshot.directory}")
    plan = Plan(python, ())
    outcome = Outcome("recovered", python, plan, snapshot=snapshot.directory)
    installer = restorer(marker.get("installer"), marker.get("uv"), python)
    outcome.installer = installer.describe()
    missing = [w for w in snapshot.wheels if not Path(w).is_file()]
    if missing:
        reason = f"{found}; its snapshot is gone ({missing[0]}): the environment may be mixed"
        outcome.result, outcome.reason = "restore-failed", reason
        raise UpgradeFailed(f"{reason}; reinstall {', '.join(snapshot.pins)} by hand", outcome)
    guard = InterruptGuard(lambda message: progress("interrupt", message))
    guard.restoring = True
    with guard.installed():
        error = _restore(installer, snapshot, outcome, runner=runner, progress=progress)
    if error is not None:
        outcome.result, outcome.reason = "restore-failed", f"{found}; restore: {error}"
        raise UpgradeFailed(_not_as_it_was(found, error, installer, snapshot), outcome)
    remove_marker(state)
    shutil.rmtree(snapshot.directory, ignore_errors=True)
    back = ", ".join(f"{n} {v or '(not installed)'}" for n, v in snapshot.versions().items())
    progress("recover", f"the environment is back as it was before that upgrade ({back})")
    history = Path(str(marker.get("history") or state / "upgrade-history.jsonl"))
    outcome.reason = found
    _record(history, outcome, progress)
    return f"{found}; restored ({back})"


def _not_as_it_was(failure: str, error: str, installer: Installer, snapshot: Snapshot) -> str:
    """The message of a restore that could not be proven: never "back as it was"."""
    recovery = " && ".join(shown(a) for a in installer.restore_argvs(snapshot))
    python = shown([installer.python])
    return (
        f"{failure}; the environment is NOT as it was: {error}; "
        f"run opskit upgrade --recover --python {python}, or by hand: {recovery}"
    )


def _upgrade(
    request: UpgradeRequest,
    env: Environment,
    plan: Plan,
    installer: Installer,
    outcome: Outcome,
    guard: InterruptGuard,
    marker_dir: Path,
    *,
    runner: Runner,
    progress: Progress,
) -> Outcome:
    state = default_state_dir(env)
    history = request.history or state / "upgrade-history.jsonl"
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + f"-{os.getpid()}"
    snap_dir = state / "snapshots" / stamp
    pins = plan.pins
    with contextlib.ExitStack() as cleanup:
        # Every way out, a return, a failure or an exception opskit did not foresee,
        # leaves the snapshot only while the outcome names it (the environment changed
        # and was not proven restored: it is the way back), and never a compiled lock
        # left beside requirements.txt (commit_lock renames it away on success).
        cleanup.callback(_drop_unnamed_snapshot, snap_dir, outcome)
        lock_temp: Path | None = None
        try:
            if request.lock is not None:
                guard.step = "pip-compile"
                moving = " ".join(p.requirement for p in pins)
                progress("lock", f"{request.lock.output}: pip-compile --upgrade-package {moving}")
                lock_temp = prepare_lock(request.lock, pins, request.pip_args, runner=runner)
                cleanup.callback(lock_temp.unlink, missing_ok=True)
            guard.step = "the snapshot"
            if not guard.count:
                snapshot = snapshot_packages(plan, env, snap_dir)
        except KeyboardInterrupt:
            guard.count += 1
        except OperationFailed as exc:
            message = str(exc)
            if "nothing changed" not in message:
                message += " (nothing changed)"
            outcome.result, outcome.reason = "failed", message
            outcome.step = "lock" if guard.step == "pip-compile" else "snapshot"
            raise UpgradeFailed(message, outcome) from None
        if guard.count:
            outcome.result, outcome.step = "interrupted", guard.step
            outcome.reason = "interrupted before any change"
            raise UpgradeInterrupted("interrupted; nothing changed", outcome)
        outcome.snapshot = snapshot.directory
        outcome.snapshot_bytes = tree_size(Path(snapshot.directory))
        outcome.recovery = installer.restore_argvs(snapshot)
        # Before the first change: a run killed from here on leaves the marker, and
        # the next run (or --recover) restores this snapshot.
        write_marker(
            marker_dir,
            {
                "pid": os.getpid(),
                "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "python": request.python,
                "snapshot": snapshot.directory,
                "saved": [[s.name, s.version, s.wheel] for s in snapshot.saved],
                "to": {p.name: p.version for p in pins},
                "step": "install",
                "history": str(history),
                "installer": installer.name,
                "uv": installer.uv,
            },
        )
        for saved in snapshot.saved:
            what = Path(saved.wheel).name if saved.wheel else "not installed: removed on restore"
            progress("snapshot", f"{saved.name} {saved.version or ''} {what}".replace("  ", " "))

        step, failure, interrupted = _apply(
            request, env, plan, installer, outcome, guard, runner, progress
        )
        if failure is None:
            # Upgraded and verified: nothing is left to undo.
            remove_marker(marker_dir)
            lock_error = None
            if lock_temp is not None and request.lock is not None:
                try:
                    commit_lock(lock_temp, request.lock)
                    outcome.lock = str(request.lock.output_path)
                    moved = ", ".join(p.requirement for p in pins)
                    progress("lock", f"{request.lock.output}: {moved}")
                except OSError as exc:
                    lock_error = f"{request.lock.output}: cannot replace it: {exc.strerror}"
            outcome.result = "ok"
            _record(history, outcome, progress)
            prune_snapshots(snap_dir.parent)
            progress("done", ", ".join(f"{p.name} {p.version}" for p in pins))
            if lock_error is not None:
                raise UpgradeFailed(f"upgraded and verified, but {lock_error}", outcome)
            return outcome

        outcome.step, outcome.reason = step, failure
        progress("failed", failure)
        recovery = " && ".join(shown(a) for a in outcome.recovery)
        fail = UpgradeInterrupted if interrupted else UpgradeFailed
        if not request.rollback:
            # Left as it is on purpose: the next run must not undo it behind the user.
            remove_marker(marker_dir)
            outcome.result = "not-rolled-back"
            _record(history, outcome, progress)
            raise fail(f"{failure}; left as it is (--no-rollback); to restore: {recovery}", outcome)
        guard.restoring = True
        restore_error = _restore(installer, snapshot, outcome, runner=runner, progress=progress)
        if restore_error is not None:
            # The marker stays: the next run, or --recover, tries this snapshot again.
            outcome.result = "restore-failed"
            outcome.reason = f"{failure}; restore: {restore_error}"
            _record(history, outcome, progress)
            raise fail(_not_as_it_was(failure, restore_error, installer, snapshot), outcome)
        remove_marker(marker_dir)
        outcome.result = "interrupted" if interrupted else "rolled-back"
        # Restored and proven: the snapshot has done its job, and goes on the way out.
        outcome.snapshot = None
        _record(history, outcome, progress)
        back = ", ".join(f"{n} {v or '(not installed)'}" for n, v in snapshot.versions().items())
        raise fail(f"{failure}; the environment is back as it was ({back})", outcome)


def _drop_unnamed_snapshot(snap_dir: Path, outcome: Outcome) -> None:
    """Remove the snapshot unless the outcome names it as the way back."""
    if outcome.snapshot is None:
        shutil.rmtree(snap_dir, ignore_errors=True)


def _apply(
    request: UpgradeRequest,
    env: Environment,
    plan: Plan,
    installer: Installer,
    outcome: Outcome,
    guard: InterruptGuard,
    runner: Runner,
    progress: Progress,
) -> tuple[str, str | None, bool]:
    """Install, check, smoke; return the step reached, why it failed, and if by Ctrl-C."""
    names = [p.name for p in plan.pins]
    tool = installer.command
    step = "install"
    try:
        guard.step = f"{tool} install"
        argv = installer.install_argv(plan.pins, request.pip_args)
        outcome.commands.append(argv)
        progress("install", shown(argv))
        done = installer.install(plan.pins, request.pip_args, runner=runner)
        if guard.count:
            return step, f"interrupted during {step}", True
        if not done.ok:
            return step, f"{tool} install failed: {installer.reason(done)}", False

        # The step's name in the history stays "pip check" for uv's check too.
        step, guard.step = "pip check", f"{tool} check"
        outcome.commands.append(installer.check_argv())
        problems = check(installer, runner=runner)
        if guard.count:
            return step, f"interrupted during {step}", True
        outcome.problems = [p for p in problems if p.involves(names)]
        outcome.unrelated = [p for p in problems if not p.involves(names)]
        for problem in outcome.unrelated:
            progress("check", f"already broken, not by this upgrade: {problem.line}")
        if outcome.problems:
            lines = "; ".join(p.line.rstrip(".") for p in outcome.problems)
            return step, f"{tool} check found: {lines}", False
        progress("check", f"{tool} check: no problem with the upgraded packages")

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


def _restore(
    installer: Installer,
    snapshot: Snapshot,
    outcome: Outcome,
    *,
    runner: Runner,
    progress: Progress,
) -> str | None:
    """Restore and prove it (versions equal the snapshot's, the check runs); None or why not."""
    names = [s.name for s in snapshot.saved]
    python = installer.python
    try:
        # What an interrupted pip leaves (a second .dist-info, its "~" stashes) would
        # survive pip's own reinstall: cleared first.
        before = read_environment(python, names, runner=runner)
        cleared = scrub(before, [(s.name, s.version) for s in snapshot.saved], snapshot.wheels)
    except (OperationFailed, UsageError, OSError) as exc:
        return f"cannot read the environment: {exc}"
    for path in cleared:
        progress("restore", f"removed {path} (left by the interrupted install)")
    for argv in installer.restore_argvs(snapshot):
        progress("restore", shown(argv))
    results = installer.restore(snapshot, runner=runner)
    bad = [r for r in results if not r.ok]
    if bad:
        return f"{installer.name} exited {bad[0].returncode}: {installer.reason(bad[0])}"
    try:
        after = read_environment(python, names, runner=runner)
        now = installed_versions(after, names)
        outcome.restored = now
        if now != snapshot.versions():
            return f"installed afterwards: {now}, not {snapshot.versions()}"
        wrong = differences(after, [(s.name, s.version, s.wheel) for s in snapshot.saved])
        if wrong:
            more = f" (and {len(wrong) - 3} more)" if len(wrong) > 3 else ""
            return "; ".join(wrong[:3]) + more
        outcome.after_restore = check(installer, runner=runner)
    except (OperationFailed, UsageError) as exc:
        return str(exc)
    progress("restore", "versions: " + ", ".join(f"{n} {v or '(absent)'}" for n, v in now.items()))
    if outcome.after_restore:
        for problem in outcome.after_restore:
            progress("check", f"as before the upgrade: {problem.line}")
    else:
        progress("check", f"{installer.command} check: no broken requirements")
    return None
