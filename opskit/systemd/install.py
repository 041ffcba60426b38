"""Install rendered units into a running systemd: write, daemon-reload, enable/start on request."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from opskit import write as writer
from opskit.errors import OperationFailed, UsageError
from opskit.proc import Completed, Runner
from opskit.render import RenderedFile
from opskit.spec import AppSpec
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
    #: How the started service proved it serves, when one was started or restarted.
    serving: str | None = None


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


def _generated_by_opskit(path: Path) -> bool:
    """Whether a unit file carries the header opskit writes on every unit."""
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            first = handle.readline()
    except OSError:
        return False
    return first.startswith(f"# {path.name}, generated by opskit")


def obsolete_units(files: Sequence[RenderedFile], unit_dir: Path) -> list[str]:
    """Units opskit generated earlier for this service and no longer generates.

    Moving a service off socket activation leaves NAME.socket installed and enabled,
    holding the port the service now wants to bind itself.
    """
    names = {f.name for f in files}
    services = [
        n.removesuffix(".service")
        for n in names
        if n.endswith(".service") and not is_helper_unit(n)
    ]
    out = []
    for service in services:
        # A .socket after --no-socket; the watchdog's two units after watchdog = 0; the
        # config watch's two without watch.
        for unit in (
            f"{service}.socket",
            f"{service}-watchdog.timer",
            f"{service}-watchdog.service",
            f"{service}-config.path",
            f"{service}-config.service",
        ):
            if unit not in names and _generated_by_opskit(unit_dir / unit):
                out.append(unit)
    return out


def install_units(
    files: Sequence[RenderedFile],
    unit_dir: Path = SYSTEM_UNIT_DIR,
    *,
    force: bool,
    enable: bool,
    restart: bool,
    runner: Runner,
    spec: AppSpec | None = None,
    progress: Callable[[str], None] = lambda message: None,
) -> InstallResult:
    """Write the units, reload systemd if any changed, then enable/start or restart on request.

    Idempotent: identical files cause no daemon-reload, an enabled unit is not re-enabled,
    an active one is not started again, and --restart restarts only running units that
    are stale, so a second identical run changes nothing. Stale means running since
    before its file was last written (by this run or an earlier one without --restart):
    systemd keeps running the old definition until a restart.

    Units opskit generated before and no longer generates (a .socket after --no-socket)
    are stopped, disabled and removed. With ``spec``, a service that was started or
    restarted must then serve (opskit.serving): otherwise OperationFailed names the cause.
    """
    units = [f.name for f in files]
    # A .socket unit first: the service Requires= it, and it must hold the port before
    # the service takes the inherited socket.
    units.sort(key=lambda name: not name.endswith(".socket"))
    active_before = {u: _answer(runner, "is-active", u) == "active" for u in units}
    obsolete = obsolete_units(files, unit_dir) if force else []
    planned = writer.write(files, unit_dir, force=force)
    changed = [p.file.name for p in planned if p.action is not writer.Action.IDENTICAL]
    steps: list[str] = []
    started_at = time.time()
    for unit in obsolete:
        # Stop it before the service restarts to bind the port itself.
        _systemctl(runner, "disable", "--now", unit, timeout=_job_timeout(files))
        (unit_dir / unit).unlink(missing_ok=True)
        steps.append(f"disable --now {unit}, removed (no longer generated)")
    if changed or obsolete:
        _systemctl(runner, "daemon-reload")
        steps.append("daemon-reload")
    touched: list[str] = []
    # The watchdog's timer and the config watch's path unit are pulled in by the
    # service's Wants=, their oneshots by them: none has an [Install] section of its
    # own, nor is started here.
    primary = [u for u in units if not is_helper_unit(u)]
    if enable:
        to_enable = [u for u in primary if _answer(runner, "is-enabled", u) != "enabled"]
        if to_enable:
            _systemctl(runner, "enable", *to_enable)
            steps.append(f"enable {' '.join(to_enable)}")
        to_start = [u for u in primary if not active_before[u]]
        sockets = [u for u in to_start if u.endswith(".socket")]
        for socket in sockets:
            service = socket.removesuffix(".socket") + ".service"
            if active_before.get(service):
                # systemd refuses to start a .socket whose service already runs ("Socket
                # service ... already active, refusing"): the service bound the port
                # itself. Stop it; it starts again behind the socket below.
                _systemctl(runner, "stop", service, timeout=_job_timeout(files))
                steps.append(f"stop {service} (to move it behind {socket})")
                active_before[service] = False
                to_start.append(service)
        to_start = sorted(set(to_start), key=units.index)
        if to_start:
            _start(runner, spec, files, "start", to_start, started_at)
            steps.append(f"start {' '.join(to_start)}")
            touched += to_start
    stale = []
    for item in planned:
        unit = item.file.name
        since = _active_since(runner, unit) if active_before[unit] else None
        if since is not None and since < item.path.stat().st_mtime:
            stale.append(unit)
    stale.sort(key=units.index)
    if restart and stale:
        # try-restart: a unit stopped meanwhile stays stopped; systemd orders the jobs.
        _start(runner, spec, files, "try-restart", stale, started_at)
        steps.append(f"restart {' '.join(stale)}")
        touched += stale
        stale = []
    services = [u for u in dict.fromkeys(touched) if u.endswith(".service")]
    serving = None
    if spec is not None and services:
        progress(f"waiting for {services[0]} to serve ({_where(spec)})")
        serving = prove_serving(spec, services[0], runner=runner, since=started_at)
    return InstallResult(planned, steps, stale, serving)


def is_helper_unit(name: str) -> bool:
    """Whether a unit file is a helper of a service: the watchdog's, or the config watch's.

    Helpers are pulled in by the service's Wants= (opskit.systemd.watchdog,
    opskit.systemd.configwatch), never enabled or started on their own.
    """
    return name.endswith(
        ("-watchdog.timer", "-watchdog.service", "-config.path", "-config.service")
    )


def _where(spec: AppSpec) -> str:
    from opskit.serving import probe_address

    host, port = probe_address(spec)
    target = host if port is None else f"{host}:{port}"
    return f"GET {spec.health_path or '/'} on {target}"


def _start(
    runner: Runner,
    spec: AppSpec | None,
    files: Sequence[RenderedFile],
    verb: str,
    units: list[str],
    since: float,
) -> None:
    """Start or restart; a failed job is explained by the unit's own state and journal."""
    try:
        _systemctl(runner, verb, *units, timeout=_job_timeout(files))
    except OperationFailed as exc:
        service = next((u for u in units if u.endswith(".service")), units[0])
        raise OperationFailed(
            "\n".join([str(exc), *diagnose(spec, service, runner=runner, since=since)])
        ) from None


def prove_serving(spec: AppSpec, unit: str, *, runner: Runner, since: float) -> str:
    """Wait until the unit is active and the app answers steadily; say how, or raise.

    A unit that fails or restarts meanwhile stops the wait at once: a crash loop does
    not get better by waiting.
    """
    from opskit.serving import wait_serving
    from opskit.systemd.status import read_status

    first = read_status(unit, runner=runner)

    def still_starting() -> str | None:
        now = read_status(unit, runner=runner)
        if now.active == "failed":
            return f"{unit} failed"
        if now.restarts > first.restarts:
            return f"{unit} restarted ({now.restarts - first.restarts} times while waiting)"
        return None

    outcome = wait_serving(spec, still_starting=still_starting)
    if outcome.ok:
        # The answers must come from this unit: another process on the port answers too.
        status = read_status(unit, runner=runner)
        strangers = foreign_holders(spec, status.main_pid)
        if status.active == "active" and not strangers:
            return f"{unit}: {outcome.reason}"
        why = strangers[0] if strangers else status.line()
        lines = [f"{unit} does not serve: the answers came from another process: {why}"]
        raise OperationFailed(
            "\n".join([*lines, *diagnose(spec, unit, runner=runner, since=since)])
        )
    last = f" (last: {outcome.last.describe()})" if outcome.last else ""
    lines = [f"{unit} does not serve: {outcome.reason}{last}"]
    raise OperationFailed("\n".join([*lines, *diagnose(spec, unit, runner=runner, since=since)]))


def diagnose(spec: AppSpec | None, unit: str, *, runner: Runner, since: float) -> list[str]:
    """Why a unit does not serve: its state, last exit, who holds its port, its journal."""
    from opskit.systemd.status import journal_tail, read_status

    status = read_status(unit, runner=runner)
    lines = [f"  state    {status.line()}"]
    if spec is not None:
        lines += [f"  port     {line}" for line in foreign_holders(spec, status.main_pid)]
    journal = journal_tail(unit, runner=runner, since=since)
    if journal:
        lines.append(f"  journal  (journalctl -u {unit}, the last {len(journal)} lines)")
        lines += [f"    {line}" for line in journal]
    return lines


def foreign_holders(spec: AppSpec, main_pid: int) -> list[str]:
    """Processes that are not the unit's and listen on its address: 'PID N (user): cmd'."""
    import psutil

    from opskit.doctor.processes import listeners

    own: set[int] = set()
    if main_pid:
        try:
            main = psutil.Process(main_pid)
            own = {main_pid, *(p.pid for p in main.children(recursive=True))}
        except psutil.Error:
            own = {main_pid}
    out = []
    for holder in listeners(spec):
        if holder.pid in own:
            continue
        address = spec.unix_socket or f"port {spec.port}"
        out.append(f"{address} is held by pid {holder.pid} ({holder.user}): {holder.cmdline}")
    return out
