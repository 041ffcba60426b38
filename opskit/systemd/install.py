"""Install rendered units into a running systemd: write, daemon-reload, enable/start on request."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from opskit import write as writer
from opskit.errors import OperationFailed, UsageError
from opskit.render import RenderedFile

#: Where administrators' units live (systemd.unit(5)): above vendor units, kept on upgrades.
SYSTEM_UNIT_DIR = Path("/etc/systemd/system")
#: sd_booted(3): this directory exists only when PID 1 is systemd.
BOOTED_MARKER = Path("/run/systemd/system")

#: Runs ``systemctl ARGS...`` and returns the finished process (exit code, stdout, stderr).
Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


def run_systemctl(args: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """The real runner: call systemctl with a list of arguments (never through a shell)."""
    exe = shutil.which("systemctl") or "systemctl"
    try:
        return subprocess.run(
            [exe, "--no-pager", *args], capture_output=True, text=True, check=False
        )
    except OSError as exc:
        raise OperationFailed(f"systemctl: cannot run: {exc.strerror}") from None


@dataclass(frozen=True)
class Installed:
    """What an install did: each file's write action and each systemctl step taken."""

    files: list[writer.Planned]
    steps: list[str]
    #: Running units older than their file that were not restarted (no --restart).
    stale: list[str]


def check_can_install(*, euid: int | None = None, booted_marker: Path = BOOTED_MARKER) -> None:
    """Raise UsageError unless this process is root on a machine where systemd runs."""
    if (os.geteuid() if euid is None else euid) != 0:
        raise UsageError(
            "--install: must run as root (it writes system units and runs systemctl); "
            "write the files with -o DIR instead"
        )
    if not booted_marker.is_dir():
        raise UsageError(
            f"--install: systemd is not running on this machine (no {booted_marker}); "
            "write the files with -o DIR instead"
        )


def _systemctl(runner: Runner, *args: str) -> subprocess.CompletedProcess[str]:
    proc = runner(args)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        reason = detail[0] if detail else f"exit code {proc.returncode}"
        raise OperationFailed(f"systemctl {' '.join(args)}: {reason}")
    return proc


def _active_since(runner: Runner, unit: str) -> float | None:
    """When the unit last became active (epoch seconds, microsecond precision), or None."""
    text = runner(
        ("show", "--timestamp=us+utc", "--property=ActiveEnterTimestamp", "--value", unit)
    ).stdout.strip()
    try:
        moment = datetime.strptime(text, "%a %Y-%m-%d %H:%M:%S.%f UTC")
    except ValueError:  # empty or "n/a": never active
        return None
    return moment.replace(tzinfo=timezone.utc).timestamp()


def _answer(runner: Runner, verb: str, unit: str) -> str:
    # is-enabled / is-active exit non-zero for "disabled" / "inactive": that is an answer.
    return runner((verb, unit)).stdout.strip()


def install_units(
    files: Sequence[RenderedFile],
    unit_dir: Path = SYSTEM_UNIT_DIR,
    *,
    force: bool,
    enable: bool,
    restart: bool,
    runner: Runner,
) -> Installed:
    """Write the units, reload systemd if any changed, then enable/start or restart on request.

    Idempotent: identical files cause no daemon-reload, an enabled unit is not re-enabled,
    an active one is not started again, and --restart restarts only running units that
    are stale, so a second identical run changes nothing. Stale means running since
    before its file was last written (by this run or an earlier one without --restart):
    systemd keeps running the old definition until a restart.
    """
    units = [f.name for f in files]
    # A .socket unit first: the service Requires= it, and it must hold the port before
    # the service takes the inherited socket.
    units.sort(key=lambda name: not name.endswith(".socket"))
    active_before = {u: _answer(runner, "is-active", u) == "active" for u in units}
    planned = writer.write(files, unit_dir, force=force)
    changed = [p.file.name for p in planned if p.action is not writer.Action.IDENTICAL]
    steps: list[str] = []
    if changed:
        _systemctl(runner, "daemon-reload")
        steps.append("daemon-reload")
    if enable:
        to_enable = [u for u in units if _answer(runner, "is-enabled", u) != "enabled"]
        if to_enable:
            _systemctl(runner, "enable", *to_enable)
            steps.append(f"enable {' '.join(to_enable)}")
        to_start = [u for u in units if not active_before[u]]
        if to_start:
            _systemctl(runner, "start", *to_start)
            steps.append(f"start {' '.join(to_start)}")
    stale = []
    for item in planned:
        unit = item.file.name
        since = _active_since(runner, unit) if active_before[unit] else None
        if since is not None and since < item.path.stat().st_mtime:
            stale.append(unit)
    stale.sort(key=units.index)
    if restart and stale:
        # try-restart: a unit stopped meanwhile stays stopped; systemd orders the jobs.
        _systemctl(runner, "try-restart", *stale)
        steps.append(f"restart {' '.join(stale)}")
        stale = []
    return Installed(planned, steps, stale)
