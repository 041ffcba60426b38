"""Install rendered units into a running systemd: write, daemon-reload, enable/start on request."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from opskit import write as writer
from opskit.errors import OperationFailed, UsageError
from opskit.proc import Completed, Runner
from opskit.render import RenderedFile
from opskit.systemd.unitfile import parse_timespan, parse_unit

#: Where administrators' units live (systemd.unit(5)): above vendor units, kept on upgrades.
SYSTEM_UNIT_DIR = Path("/etc/systemd/system")
#: sd_booted(3): this directory exists only when PID 1 is systemd.
BOOTED_MARKER = Path("/run/systemd/system")
#: How long a systemctl call that waits for no unit job (a query, daemon-reload, enable)
#: may take; past it PID 1 is stuck, and waiting longer would not help.
SYSTEMCTL_TIMEOUT = 120.0
#: DefaultTimeoutStartSec= and DefaultTimeoutStopSec= (systemd-system.conf(5)).
DEFAULT_JOB_TIMEOUT = 90.0


@dataclass(frozen=True)
class InstallResult:
    """What an install did: each file's write action and each systemctl step taken."""

    files: list[writer.Planned]
    steps: list[str]
    #: Running units older than their file that were not restarted (no --restart).
    stale: list[str]


def validate_can_install(*, euid: int | None = None, booted_marker: Path = BOOTED_MARKER) -> None:
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


def _systemctl(
    runner: Runner, *args: str, check: bool = True, timeout: float = SYSTEMCTL_TIMEOUT
) -> Completed:
    """Run ``systemctl ARGS`` (never through a shell); OperationFailed unless it answered.

    With ``check`` a non-zero exit is a failure too; without, the exit code is the answer
    (is-active exits 3 for "inactive").
    """
    exe = shutil.which("systemctl") or "systemctl"
    done = runner([exe, "--no-pager", *args], timeout=timeout)
    if done.start_error is not None:
        raise OperationFailed(f"systemctl: cannot run: {done.start_error.strerror}")
    if done.timed_out:
        raise OperationFailed(f"systemctl {' '.join(args)}: no answer within {timeout:g} s")
    if check and done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        reason = detail[0] if detail else f"exit code {done.returncode}"
        raise OperationFailed(f"systemctl {' '.join(args)}: {reason}")
    return done


def _job_timeout(files: Sequence[RenderedFile]) -> float:
    """How long ``systemctl start`` or ``try-restart`` may wait for these units' jobs.

    systemctl waits until systemd finishes the job, which the unit's own timeouts bound:
    a restart is a stop (TimeoutStopSec=, the graceful timeout and more) and a start.
    """
    stop = start = DEFAULT_JOB_TIMEOUT
    for file in files:
        for line in parse_unit(file.content):
            seconds = parse_timespan(line.value) if line.section == "Service" else None
            if seconds is None:
                continue
            if line.key in ("TimeoutStopSec", "TimeoutSec"):
                stop = max(stop, seconds)
            if line.key in ("TimeoutStartSec", "TimeoutSec"):
                start = max(start, seconds)
    return stop + start + SYSTEMCTL_TIMEOUT


def _active_since(runner: Runner, unit: str) -> float | None:
    """When the unit last became active (epoch seconds, microsecond precision), or None."""
    text = _systemctl(
        runner,
        "show",
        "--timestamp=us+utc",
        "--property=ActiveEnterTimestamp",
        "--value",
        unit,
        check=False,
    ).stdout.strip()
    try:
        moment = datetime.strptime(text, "%a %Y-%m-%d %H:%M:%S.%f UTC")
    except ValueError:  # empty or "n/a": never active
        return None
    return moment.replace(tzinfo=timezone.utc).timestamp()


def _answer(runner: Runner, verb: str, unit: str) -> str:
    # is-enabled / is-active exit non-zero for "disabled" / "inactive": that is an answer.
    return _systemctl(runner, verb, unit, check=False).stdout.strip()


def install_units(
    files: Sequence[RenderedFile],
    unit_dir: Path = SYSTEM_UNIT_DIR,
    *,
    force: bool,
    enable: bool,
    restart: bool,
    runner: Runner,
) -> InstallResult:
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
            _systemctl(runner, "start", *to_start, timeout=_job_timeout(files))
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
        _systemctl(runner, "try-restart", *stale, timeout=_job_timeout(files))
        steps.append(f"restart {' '.join(stale)}")
        stale = []
    return InstallResult(planned, steps, stale)
