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
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opskit.deploy import serving
from opskit.deploy.build import build
from opskit.deploy.layout import Layout, new_id
from opskit.deploy.source import content_hash, stage
from opskit.errors import OperationFailed, UsageError
from opskit.proc import Runner
from opskit.spec import AppSpec

Say = Callable[[str], None]
HELD = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


class DeployFailed(OperationFailed):
    """Raised when a release is refused or a switch undone; the outcome says what serves."""

    def __init__(self, message: str, outcome: Outcome) -> None:
        """Keep the outcome for --json."""
        super().__init__(message)
        self.outcome = outcome


@dataclass
class Outcome:
    """What a deploy, rollback or repair did, for the report and --json."""

    action: str
    release: str | None = None
    previous: str | None = None
    status: str = "planned"
    built: bool = False
    serving: str | None = None
    steps: list[str] = field(default_factory=list)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return dict(self.__dict__)


def layout_of(spec: AppSpec) -> Layout:
    """The spec's base, or a usage error naming the key."""
    if spec.base is None:
        raise UsageError("base: not set; releases need one (--base /srv/NAME, or base = ...)")
    if spec.supervisor != "systemd":
        raise UsageError("supervisor: releases are deployed to a systemd service")
    return Layout(Path(spec.base))


@contextlib.contextmanager
def _held() -> Iterator[None]:
    """Hold SIGINT, SIGTERM and SIGHUP; delivered (and acted on) when the block ends."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, HELD)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _unit(spec: AppSpec) -> str:
    return f"{spec.name}.service"


def _systemctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemctl", *args], capture_output=True, text=True, timeout=300)


def _active(spec: AppSpec) -> bool:
    return _systemctl("is-active", "--quiet", _unit(spec)).returncode == 0


def _script_args(spec: AppSpec, release_id: str) -> list[str]:
    # Without a version path or deploy-id file the script takes no id: nothing would check it.
    return [release_id] if spec.version_path or spec.deploy_id_file else []


def _run_script(
    spec: AppSpec, layout: Layout, release_id: str, step: str, *, canary: bool, runner: Runner
) -> tuple[bool, str]:
    """Run the release's reload script for one step; (passed, its last lines)."""
    from opskit.reload.render import render_deploy_reload

    text = render_deploy_reload(spec, str(layout.release(release_id)), canary=canary)
    path = layout.base / f".opskit-reload.{os.getpid()}.sh"
    path.write_text(text, encoding="utf-8")
    path.chmod(0o700)
    try:
        env = {**os.environ, "OPSKIT_STEP": step}
        done = runner(
            ["/bin/bash", str(path), *_script_args(spec, release_id)],
            env=env,
            timeout=float(spec.graceful_timeout * 2 + 180),
        )
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    return done.ok, "\n".join(lines[-15:])


def _served_by(spec: AppSpec, layout: Layout) -> set[str | None]:
    return {p.release for p in serving.unit_processes(layout, _unit(spec))}


def _start_and_wait(spec: AppSpec, layout: Layout, release_id: str) -> tuple[bool, str]:
    """A first release (nothing was serving): start the service and wait for it to answer."""
    from opskit.serving import wait_serving

    done = _systemctl("restart", _unit(spec))
    if done.returncode != 0:
        return False, f"systemctl restart {_unit(spec)}: {done.stderr.strip()}"
    result = wait_serving(spec, deadline=float(spec.graceful_timeout + 60))
    if not result.ok:
        return False, f"{_unit(spec)} does not serve: {result.reason}"
    return True, result.reason


def _server_version(layout: Layout, release_id: str, server: str) -> str | None:
    """The server's version in a release's venv, from its dist-info directory's name."""
    found = sorted(
        layout.release(release_id).glob(f"venv/lib/python*/site-packages/{server}-*.dist-info")
    )
    return found[0].name[len(server) + 1 : -len(".dist-info")] if found else None


def _server_changed(spec: AppSpec, layout: Layout, old: str | None, new: str) -> str | None:
    """Why the new release needs a new master (its interpreter or server differs), or None."""
    if old is None or spec.server == "command":
        return None
    before, after = layout.manifest(old) or {}, layout.manifest(new) or {}
    if before.get("python") != after.get("python"):
        return f"Python {before.get('python')} -> {after.get('python')}"
    was, now = _server_version(layout, old, spec.server), _server_version(layout, new, spec.server)
    if was != now:
        return f"{spec.server} {was} -> {now}"
    return None


def _verified(spec: AppSpec, layout: Layout, release_id: str) -> str | None:
    """None when every process of the service runs in ``release_id``, else why not."""
    served = _served_by(spec, layout)
    if served == {release_id}:
        return None
    if not served:
        return f"{_unit(spec)} runs no process"
    others = sorted(str(r) for r in served - {release_id})
    return f"processes of {_unit(spec)} still serve from {', '.join(others)}"


def _go_live(
    spec: AppSpec,
    layout: Layout,
    to: str,
    outcome: Outcome,
    *,
    canary: bool,
    runner: Runner,
    say: Say,
) -> str | None:
    """Switch to ``to`` and make the service serve it, proved; None, or why it failed.

    Called with the signals held and the journal written.
    """
    was_active = _active(spec)
    previous = layout.live()
    changed = _server_changed(spec, layout, previous, to)
    layout.switch(to)
    outcome.steps.append(f"switched {layout.current} -> releases/{to}")
    say(f"switch: {layout.current} -> releases/{to}")
    if not was_active:
        ok, detail = _start_and_wait(spec, layout, to)
    elif changed is not None:
        # The master keeps the server code it imported; only a new master runs the new one.
        say(
            f"restart: {changed}; a reload would keep the old server running"
            + ("" if spec.socket else " (without socket = true, connections are refused meanwhile)")
        )
        outcome.steps.append(f"restarted: {changed}")
        ok, detail = _start_and_wait(spec, layout, to)
    else:
        ok, detail = _run_script(spec, layout, to, "reload", canary=canary, runner=runner)
    if not ok:
        return detail or "the reload failed"
    why = _verified(spec, layout, to)
    if why is not None:
        return why
    outcome.steps.append(f"verified: every process of {_unit(spec)} serves from {to}")
    say(f"verified: every process of {_unit(spec)} serves from releases/{to}")
    return None


def _switch_verified(
    spec: AppSpec,
    layout: Layout,
    to: str,
    previous: str | None,
    outcome: Outcome,
    *,
    canary: bool,
    runner: Runner,
    say: Say,
) -> None:
    """The journaled switch; on failure the previous release is switched back and reloaded."""
    with _held():
        layout.write_journal({"from": previous, "to": to, "pid": os.getpid(), "at": time.time()})
        failure = _go_live(spec, layout, to, outcome, canary=canary, runner=runner, say=say)
        if failure is None:
            layout.record_live(to)
            layout.clear_journal()
            outcome.status = "live"
            outcome.serving = to
            return
        say(f"FAILED after the switch: {failure}")
        outcome.error = failure
        undone = _undo(spec, layout, previous, outcome, runner=runner, say=say)
        if undone:
            layout.clear_journal()
    where = f"releases/{previous} serves again" if undone and previous else "nothing serves"
    if not undone:
        where = f"the previous release could not be verified; {layout.journal} is kept"
    raise DeployFailed(f"{to}: {failure}; switched back, {where}", outcome)


def _undo(
    spec: AppSpec,
    layout: Layout,
    previous: str | None,
    outcome: Outcome,
    *,
    runner: Runner,
    say: Say,
) -> bool:
    """Switch back to ``previous`` and reload it; whether it then serves, verified."""
    outcome.status = "rolled-back"
    if previous is None:
        layout.switch(None)
        _systemctl("stop", _unit(spec))
        outcome.serving = None
        outcome.steps.append("removed the link of a first release and stopped the service")
        return True
    layout.switch(previous)
    say(f"switch back: {layout.current} -> releases/{previous}")
    ok, detail = _run_script(spec, layout, previous, "reload", canary=False, runner=runner)
    if not ok and not _active(spec):
        ok, detail = _start_and_wait(spec, layout, previous)
    why = _verified(spec, layout, previous) if ok else detail
    if why is not None:
        say(f"FAILED to bring back {previous}: {why}")
        outcome.steps.append(f"switched back to {previous}, NOT verified: {why}")
        return False
    outcome.serving = previous
    outcome.steps.append(f"switched back to {previous}, verified serving")
    say(f"ok: releases/{previous} serves again, verified")
    return True


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
    if to is not None and live == to and _verified(spec, layout, to) is None and _answers(spec):
        layout.record_live(to)
        layout.clear_journal()
        outcome.status = "live"
        outcome.serving = to
        outcome.steps.append(f"kept {to}: every process serves from it and it answers")
        say(f"repair: kept releases/{to}: every process of {_unit(spec)} serves from it")
        return outcome
    with _held():
        undone = _undo(spec, layout, previous, outcome, runner=runner, say=say)
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


def _pre_switch(spec: AppSpec, release: Path, runner: Runner, say: Say) -> None:
    """Run the spec's pre-switch commands in the new release, with the service's environment."""
    import shlex

    from opskit.appcheck import service_environment
    from opskit.reload.render import release_spec

    env, problems = service_environment(release_spec(spec, str(release)))
    if problems:
        raise OperationFailed(problems[0].message)
    env["PATH"] = f"{release}/venv/bin:{env['PATH']}"
    env["VIRTUAL_ENV"] = f"{release}/venv"
    for command in spec.pre_switch:
        say(f"pre-switch: {command}")
        done = runner(shlex.split(command), env=env, cwd=str(release), timeout=3600)
        if not done.ok:
            raise OperationFailed(f"pre-switch {command!r} failed: {done.reason()}")


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
            repaired = repair(spec, layout, runner=runner, say=say)
            if repaired is not None:
                outcome.steps.extend(f"repair: {s}" for s in repaired.steps)
            for leftover in layout.incomplete():
                shutil.rmtree(leftover, ignore_errors=True)
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
            if existing:
                say(f"release {release_id}: the same content was built before")
            if dry_run:
                outcome.steps.append(
                    f"would {'reuse' if existing else 'build'} releases/{release_id}"
                )
                outcome.status = "unchanged" if live == release_id else "planned"
                return outcome
            if live == release_id and _verified(spec, layout, release_id) is None:
                outcome.status = "unchanged"
                outcome.serving = live
                say(f"release {release_id} is live and serves already: nothing to do")
                return outcome
            if not existing:
                say(f"build: releases/{release_id} from {staged.label}")
                try:
                    build(spec, layout, staged, release_id, digest, runner=runner, say=say)
                except OperationFailed as exc:
                    outcome.status = "refused"
                    outcome.error = str(exc)
                    outcome.serving = live
                    keeps = f"releases/{live} keeps serving" if live else "nothing was switched"
                    raise DeployFailed(f"refused {release_id}: {exc}; {keeps}", outcome) from None
                outcome.built = True
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
        if _active(spec):
            ok, detail = _run_script(
                spec, layout, release_id, "check", canary=spec.canary, runner=runner
            )
            if not ok:
                raise OperationFailed(f"the new release does not pass its checks:\n{detail}")
            outcome.steps.append("checked: " + ("canary answered" if spec.canary else "imports"))
        _pre_switch(spec, release, runner, say)
    except OperationFailed as exc:
        outcome.status = "refused"
        outcome.error = str(exc)
        outcome.serving = live
        keeps = f"releases/{live} keeps serving" if live else "nothing was switched"
        raise DeployFailed(f"refused {release_id}: {exc}; {keeps}", outcome) from None
    _switch_verified(
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
        if target == live and _verified(spec, layout, target) is None:
            outcome.status = "unchanged"
            say(f"release {target} is live and serves already: nothing to do")
            return outcome
        _switch_verified(spec, layout, target, live, outcome, canary=False, runner=runner, say=say)
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
    processes = serving.unit_processes(layout, _unit(spec))
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
