"""Doctor's checks of the live system: the units as systemd runs them, the port, the app itself.

Where no systemd runs (a container, a laptop), the file checks still run and one info
finding says that the live ones could not.
"""

from __future__ import annotations

import itertools
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

from opskit.doctor.findings import Finding, Severity

if TYPE_CHECKING:
    from opskit.doctor.checks import Context
    from opskit.proc import Runner
    from opskit.systemd.status import UnitStatus

#: sd_booted(3): this directory exists only when PID 1 is systemd.
BOOTED_MARKER = Path("/run/systemd/system")
#: Restarts after which a unit that is up again still counts as looping.
LOOPING = 3
#: A unit restarted automatically and up for less than this (seconds) counts as looping.
RECENT = 60.0

# What a denied network looks like from inside the app, in the journal: the unit's
# IPAddressDeny= drops SYNs (the client waits for its own timeout), PrivateNetwork= and
# RestrictAddressFamilies= leave no route or no socket family (notes in docs/hardening.md).
DENIED_NETWORK = re.compile(
    r"WORKER TIMEOUT|timed out|timeout expired|Address family not supported"
    r"|Temporary failure in name resolution|Name or service not known"
    r"|Network is unreachable|connection is bad: no error details available"
    r"|Operation not permitted",
    re.IGNORECASE,
)


def _runner() -> Runner:
    from opskit.proc import SubprocessRunner

    return SubprocessRunner(shield=False)


def systemd_running() -> bool:
    """Whether this machine runs systemd (so the live checks can ask it)."""
    return BOOTED_MARKER.is_dir()


def _unit_names(ctx: Context) -> list[str]:
    names = {f"{ctx.spec.name}.service"}
    if ctx.spec.socket:
        names.add(f"{ctx.spec.name}.socket")
    if ctx.spec.watch:
        names.add(f"{ctx.spec.name}-config.service")
    for unit in ctx.unit_files:
        names.add(Path(unit.where).name)
    return sorted(names, key=lambda n: (not n.endswith(".socket"), n))


def check_live_units(ctx: Context) -> list[Finding]:
    """Each unit of the project as systemd runs it: failed, restart-looping, or fine."""
    if not systemd_running():
        return [
            Finding(
                Severity.INFO,
                "live-units",
                "systemd is not running on this machine: only the files were checked",
                f"no {BOOTED_MARKER}",
                "run opskit doctor on the host that runs the service",
            )
        ]
    from opskit.systemd.status import error_lines, journal_tail, read_status

    runner = _runner()
    out = []
    for name in _unit_names(ctx):
        status = read_status(name, runner=runner)
        if status.load == "not-found":
            continue
        problem = _trouble(status)
        if problem is None:
            continue
        # Enough lines that a worker's traceback above the master's last words is kept.
        journal = journal_tail(name, runner=runner, lines=60)
        evidence = status.line()
        if journal:
            evidence += " | journal: " + " / ".join(error_lines(journal))
        out.append(Finding(Severity.ERROR, "live-unit", problem, evidence, _fix(status)))
    return out


def _trouble(status: UnitStatus) -> str | None:
    if status.unit.endswith("-config.service"):
        if status.active != "failed":
            return None
        served = status.unit.removesuffix("-config.service") + ".service"
        return (
            f"the last configuration reload of {served} was refused ({status.unit} failed): "
            "its workers keep the configuration they read before"
        )
    kind = "socket" if status.unit.endswith(".socket") else "service"
    if status.active == "failed":
        return f"the {kind} {status.unit} has failed"
    if status.sub == "auto-restart":
        return f"{status.unit} is in a restart loop (waiting to restart after a failure)"
    if status.restarts and not status.running:
        # Caught between two attempts (starting again): a loop all the same.
        return (
            f"{status.unit} is in a restart loop ({status.active}/{status.sub} "
            f"after {status.restarts} restarts)"
        )
    young = status.running_for is not None and status.running_for < RECENT
    if status.restarts and young:
        # A pre-fork master can report ready before its workers fail: up for a moment,
        # between two automatic restarts (a manual restart does not count in NRestarts).
        return (
            f"{status.unit} is in a restart loop ({status.restarts} automatic restarts, "
            f"the current attempt is {status.running_for:.0f} s old)"
        )
    if status.restarts >= LOOPING:
        return f"{status.unit} keeps restarting ({status.restarts} restarts since it was started)"
    return None


def _fix(status: UnitStatus) -> str:
    if status.unit.endswith("-config.service"):
        return (
            f"fix the watched configuration (journalctl -u {status.unit} says why the reload "
            "was refused); its next change reloads again"
        )
    exit_text = status.last_exit()
    if "203/EXEC" in exit_text:
        return "fix ExecStart='s program (the venv path), then systemctl restart"
    if "200/CHDIR" in exit_text:
        return "create WorkingDirectory= (readable by the service's user), then restart"
    if status.unit.endswith(".socket"):
        return f"journalctl -u {status.unit}; then systemctl reset-failed and start {status.unit}"
    return f"read journalctl -u {status.unit}, fix the cause, then systemctl restart {status.unit}"


def check_port_holder(ctx: Context) -> list[Finding]:
    """A process that is not the unit's holds the app's port or unix socket."""
    if not systemd_running() or not ctx.listeners:
        return []
    from opskit.systemd.install import foreign_holders
    from opskit.systemd.status import read_status

    service = f"{ctx.spec.name}.service"
    status = read_status(service, runner=_runner())
    if status.load == "not-found":
        return []
    return [
        Finding(
            Severity.ERROR,
            "port-holder",
            f"another process holds the address {service} serves on",
            line,
            "stop that process (or move the app to another port), then restart the service",
        )
        for line in foreign_holders(ctx.spec, status.main_pid)
    ]


def check_app(ctx: Context) -> list[Finding]:
    """The app imports as the service runs it (only where its code is on this machine)."""
    spec = ctx.spec
    if spec.server == "command" or not Path(spec.working_directory).is_dir():
        # Not this host's code: an installed unit without it fails, which the live-unit
        # check reports with systemd's own 200/CHDIR.
        return []
    from opskit.appcheck import import_app

    return [
        Finding(
            Severity.ERROR if p.is_error else Severity.WARNING,
            "app",
            "the app does not import as the service runs it"
            if p.is_error
            else "the app may not run as the service runs it",
            p.message,
            "fix the app path or the code; opskit systemd --install checks it again",
        )
        for p in import_app(spec)
    ]


def check_denied_network(ctx: Context) -> list[Finding]:
    """Journal lines of a blocked network, in a unit whose sandbox blocks it."""
    if not systemd_running():
        return []
    from opskit.systemd.unitfile import parse_unit

    rules = [
        line
        for unit in ctx.unit_files
        for line in parse_unit(unit.text or "")
        if (line.key, line.value) in (("IPAddressDeny", "any"), ("PrivateNetwork", "yes"))
        or (line.key == "RestrictAddressFamilies" and line.value == "AF_UNIX")
    ]
    if not rules:
        return []
    from opskit.systemd.status import journal_tail

    service = f"{ctx.spec.name}.service"
    hits = [
        line
        for line in journal_tail(service, runner=_runner(), lines=200)
        if DENIED_NETWORK.search(line)
    ]
    if not hits:
        return []
    rule = ", ".join(sorted({f"{r.key}={r.value}" for r in rules}))
    return [
        Finding(
            Severity.ERROR,
            "denied-network",
            f"the app's network connections look blocked by the unit's sandbox ({rule})",
            f"{service} journal: {hits[-1]}",
            "IPAddressDeny= drops the SYNs (connects hang until the client's timeout): "
            "allow the address with --ip-address-allow, or --allow-outbound; with --socket "
            "use the database's unix socket",
        )
    ]


#: How long and how often doctor samples a running service's memory.
RSS_SAMPLES = 4
RSS_INTERVAL = 1.0
#: Growth that counts: this share of the first sample and at least this many bytes, in
#: every interval (a service warming its caches grows once, then settles).
RSS_GROWTH = 0.02
RSS_MIN_BYTES = 1 << 20


def service_rss(main_pid: int) -> int | None:
    """The resident memory of a service's main process and all its descendants."""
    import psutil

    try:
        main = psutil.Process(main_pid)
        procs = [main, *main.children(recursive=True)]
    except psutil.Error:
        return None
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            continue
    return total


def check_memory_growth(ctx: Context) -> list[Finding]:
    """A running service whose memory grows in every sample over a few seconds: a leak."""
    if not systemd_running():
        return []
    from opskit.systemd.status import read_status

    status = read_status(f"{ctx.spec.name}.service", runner=_runner())
    if not status.running or status.main_pid <= 0:
        return []
    samples = []
    for i in range(RSS_SAMPLES):
        if i:
            time.sleep(RSS_INTERVAL)
        rss = service_rss(status.main_pid)
        if rss is None:
            return []
        samples.append(rss)
    steps = [b - a for a, b in itertools.pairwise(samples)]
    if not all(s >= max(RSS_MIN_BYTES, samples[0] * RSS_GROWTH) for s in steps):
        return []
    mib = [f"{s / (1 << 20):.0f}" for s in samples]
    rate = (samples[-1] - samples[0]) / ((RSS_SAMPLES - 1) * RSS_INTERVAL) / (1 << 20)
    return [
        Finding(
            Severity.WARNING,
            "memory-growth",
            f"{status.unit}'s memory grew in every sample, {rate:.1f} MiB/s: a leak, or a "
            "cache without a bound",
            f"RSS of pid {status.main_pid} and its children, {RSS_INTERVAL:g} s apart: "
            + " -> ".join(mib)
            + " MiB",
            "let workers recycle (max-requests), bound the service's memory (memory-max), "
            "and look for the leak (docs/limits.md)",
        )
    ]
