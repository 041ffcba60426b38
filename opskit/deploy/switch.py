"""The switch of BASE/current: journaled, reloaded by the release's script, verified, undone.

Called with the deploy lock held (opskit.deploy.run). Every function here that changes
what serves runs with SIGINT, SIGTERM and SIGHUP held (docs/deploy.md).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from opskit.deploy import serving
from opskit.deploy.layout import Layout
from opskit.errors import OperationFailed
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


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Hold SIGINT, SIGTERM and SIGHUP; delivered (and acted on) when the block ends."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, HELD)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def unit_name(spec: AppSpec) -> str:
    return f"{spec.name}.service"


def systemctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemctl", *args], capture_output=True, text=True, timeout=300)


def active(spec: AppSpec) -> bool:
    return systemctl("is-active", "--quiet", unit_name(spec)).returncode == 0


def script_args(spec: AppSpec, release_id: str) -> list[str]:
    # Without a version path or deploy-id file the script takes no id: nothing would check it.
    return [release_id] if spec.version_path or spec.deploy_id_file else []


def run_script(
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
            ["/bin/bash", str(path), *script_args(spec, release_id)],
            env=env,
            timeout=float(spec.graceful_timeout * 2 + 180),
        )
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    return done.ok, "\n".join(lines[-15:])


def served_by(spec: AppSpec, layout: Layout) -> set[str | None]:
    return {p.release for p in serving.unit_processes(layout, unit_name(spec))}


def start_and_wait(spec: AppSpec, layout: Layout, release_id: str) -> tuple[bool, str]:
    """A first release (nothing was serving): start the service and wait for it to answer."""
    from opskit.serving import wait_serving

    done = systemctl("restart", unit_name(spec))
    if done.returncode != 0:
        return False, f"systemctl restart {unit_name(spec)}: {done.stderr.strip()}"
    result = wait_serving(spec, deadline=float(spec.graceful_timeout + 60))
    if not result.ok:
        return False, f"{unit_name(spec)} does not serve: {result.reason}"
    return True, result.reason


def server_version(layout: Layout, release_id: str, server: str) -> str | None:
    """The server's version in a release's venv, from its dist-info directory's name."""
    found = sorted(
        layout.release(release_id).glob(f"venv/lib/python*/site-packages/{server}-*.dist-info")
    )
    return found[0].name[len(server) + 1 : -len(".dist-info")] if found else None


def server_changed(spec: AppSpec, layout: Layout, old: str | None, new: str) -> str | None:
    """Why the new release needs a new master (its interpreter or server differs), or None."""
    if old is None or spec.server == "command":
        return None
    before, after = layout.manifest(old) or {}, layout.manifest(new) or {}
    if before.get("python") != after.get("python"):
        return f"Python {before.get('python')} -> {after.get('python')}"
    was, now = server_version(layout, old, spec.server), server_version(layout, new, spec.server)
    if was != now:
        return f"{spec.server} {was} -> {now}"
    return None


def verified(spec: AppSpec, layout: Layout, release_id: str) -> str | None:
    """None when every process of the service runs in ``release_id``, else why not."""
    served = served_by(spec, layout)
    if served == {release_id}:
        return None
    if not served:
        return f"{unit_name(spec)} runs no process"
    others = sorted(str(r) for r in served - {release_id})
    return f"processes of {unit_name(spec)} still serve from {', '.join(others)}"


def go_live(
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
    was_active = active(spec)
    previous = layout.live()
    changed = server_changed(spec, layout, previous, to)
    layout.switch(to)
    outcome.steps.append(f"switched {layout.current} -> releases/{to}")
    say(f"switch: {layout.current} -> releases/{to}")
    if not was_active:
        ok, detail = start_and_wait(spec, layout, to)
    elif changed is not None:
        # The master keeps the server code it imported; only a new master runs the new one.
        say(
            f"restart: {changed}; a reload would keep the old server running"
            + ("" if spec.socket else " (without socket = true, connections are refused meanwhile)")
        )
        outcome.steps.append(f"restarted: {changed}")
        ok, detail = start_and_wait(spec, layout, to)
    else:
        ok, detail = run_script(spec, layout, to, "reload", canary=canary, runner=runner)
    if not ok:
        return detail or "the reload failed"
    why = verified(spec, layout, to)
    if why is not None:
        return why
    outcome.steps.append(f"verified: every process of {unit_name(spec)} serves from {to}")
    say(f"verified: every process of {unit_name(spec)} serves from releases/{to}")
    return None


def switch_verified(
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
    with held():
        layout.write_journal({"from": previous, "to": to, "pid": os.getpid(), "at": time.time()})
        failure = go_live(spec, layout, to, outcome, canary=canary, runner=runner, say=say)
        if failure is None:
            layout.record_live(to)
            layout.clear_journal()
            outcome.status = "live"
            outcome.serving = to
            return
        say(f"FAILED after the switch: {failure}")
        outcome.error = failure
        undone = undo(spec, layout, previous, outcome, runner=runner, say=say)
        if undone:
            layout.clear_journal()
    where = f"releases/{previous} serves again" if undone and previous else "nothing serves"
    if not undone:
        where = f"the previous release could not be verified; {layout.journal} is kept"
    raise DeployFailed(f"{to}: {failure}; switched back, {where}", outcome)


def undo(
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
        systemctl("stop", unit_name(spec))
        outcome.serving = None
        outcome.steps.append("removed the link of a first release and stopped the service")
        return True
    layout.switch(previous)
    say(f"switch back: {layout.current} -> releases/{previous}")
    ok, detail = run_script(spec, layout, previous, "reload", canary=False, runner=runner)
    if not ok and not active(spec):
        ok, detail = start_and_wait(spec, layout, previous)
    why = verified(spec, layout, previous) if ok else detail
    if why is not None:
        say(f"FAILED to bring back {previous}: {why}")
        outcome.steps.append(f"switched back to {previous}, NOT verified: {why}")
        return False
    outcome.serving = previous
    outcome.steps.append(f"switched back to {previous}, verified serving")
    say(f"ok: releases/{previous} serves again, verified")
    return True


def refuse(outcome: Outcome, release_id: str, live: str | None, exc: Exception) -> DeployFailed:
    """The error for a release refused before the switch: the live release keeps serving."""
    outcome.status = "refused"
    outcome.error = str(exc)
    outcome.serving = live
    keeps = f"releases/{live} keeps serving" if live else "nothing was switched"
    return DeployFailed(f"refused {release_id}: {exc}; {keeps}", outcome)
