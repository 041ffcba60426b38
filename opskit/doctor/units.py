"""Doctor's unit-file checks: restart, start-limit, stop-timeout and reload mistakes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from opskit.doctor.findings import Finding, Severity, evidence_path
from opskit.spec import AppSpec
from opskit.systemd import uvicorn
from opskit.systemd.install import is_helper_unit
from opskit.systemd.unitfile import UnitLine, exec_argv, parse_timespan, parse_unit

if TYPE_CHECKING:
    from opskit.doctor.checks import Context


@dataclass(frozen=True)
class UnitFile:
    """A service unit file as doctor read it: its text, or why it could not be read."""

    path: Path
    where: str
    text: str | None
    error: str = ""


def unit_paths(spec: AppSpec, project: Path, given: Sequence[Path] | None) -> list[Path]:
    """The service units to check: those given, else the project's deploy/ and the host's."""
    found: list[Path] = []
    candidates: list[Path] = (
        list(given)
        if given
        else [
            project / "deploy",
            Path("/etc/systemd/system") / f"{spec.name}.service",
        ]
    )
    for path in candidates:
        if path.is_dir():
            # opskit systemd writes deploy/systemd/, a bundle deploy/: look below too.
            # The watchdog's probe and the config reload are oneshots of opskit's own.
            found.extend(p for p in sorted(path.rglob("*.service")) if not is_helper_unit(p.name))
        elif path.is_file() and path.suffix == ".service":
            # Restart= and the rest belong to services; a .socket unit has none of them.
            found.append(path)
    return found


def read_unit_files(paths: Sequence[Path], project: Path) -> tuple[UnitFile, ...]:
    """Read each unit once, for every check that looks at units."""
    out = []
    for path in paths:
        where = evidence_path(path, project)
        try:
            out.append(UnitFile(path, where, path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            out.append(UnitFile(path, where, None, str(exc)))
    return tuple(out)


def exec_start(text: str) -> tuple[str, ...] | None:
    """The command line of a unit's (last) ``ExecStart=``, None when it has none."""
    start = [d for d in parse_unit(text) if d.section == "Service" and d.key == "ExecStart"]
    return exec_argv(start[-1].value) if start else None


def is_server(argv: tuple[str, ...], server: str) -> bool:
    """Whether a command line runs ``server`` (its executable, or ``python -m server``)."""
    if not argv:
        return False
    if Path(argv[0]).name == server:
        return True
    if server == "uvicorn" and uvicorn.is_boot(argv):
        return True
    return "-m" in argv[:-1] and argv[argv.index("-m") + 1] == server


def _flag_value(argv: tuple[str, ...], flag: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


# What each server waits for its workers to finish on a graceful stop, and its default.
_GRACE_FLAGS = {
    "gunicorn": ("--graceful-timeout", 30.0),
    "uvicorn": ("--timeout-graceful-shutdown", None),
    "uwsgi": ("--worker-reload-mercy", 60.0),
}
# DefaultTimeoutStopSec= of systemd-system.conf(5).
_DEFAULT_STOP = 90.0


def _graceful(argv: tuple[str, ...], spec: AppSpec) -> tuple[str, float] | None:
    for server, (flag, default) in _GRACE_FLAGS.items():
        if is_server(argv, server):
            value = _flag_value(argv, flag)
            if value is not None:
                seconds = parse_timespan(value)
                return (f"{server} {flag} {value}", seconds) if seconds is not None else None
            if default is not None:
                return f"{server}'s default graceful timeout", default
            return None
    return "the spec's graceful-timeout", float(spec.graceful_timeout)


def check_units(ctx: Context) -> list[Finding]:
    """Every unit file's mistakes, and the ones that could not be read, in file order."""
    findings: list[Finding] = []
    for unit in ctx.unit_files:
        if unit.text is None:
            findings.append(
                Finding(
                    Severity.WARNING,
                    "unit-read",
                    "cannot read a unit file",
                    f"{unit.path}: {unit.error}",
                    "",
                )
            )
        else:
            findings.extend(check_unit(unit.where, unit.text, ctx.spec))
    return findings


def check_unit(where: str, text: str, spec: AppSpec) -> list[Finding]:
    """The restart, stop and reload mistakes in one service unit's text."""
    lines = parse_unit(text)

    def last(section: str, key: str) -> UnitLine | None:
        found = [d for d in lines if d.section == section and d.key == key]
        return found[-1] if found else None

    findings: list[Finding] = []
    for d in lines:
        if d.section == "Service" and d.key in ("StartLimitIntervalSec", "StartLimitBurst"):
            findings.append(
                Finding(
                    Severity.ERROR,
                    "unit-start-limit",
                    f"{d.key}= in [Service] is ignored: systemd reads it in [Unit] only",
                    f"{where}:{d.line}: {d.key}={d.value}",
                    f"move {d.key}={d.value} to [Unit]; until then the default start limit "
                    "(5 starts in 10 s) can leave a crashing service 'failed' for good",
                )
            )
    restart = last("Service", "Restart")
    if restart is None or restart.value == "no":
        shown = f"{where}:{restart.line}: Restart=no" if restart else f"{where}: no Restart="
        findings.append(
            Finding(
                Severity.ERROR,
                "unit-restart",
                "the service is not restarted when it dies (systemd's default is Restart=no)",
                shown,
                "set Restart=always in [Service]",
            )
        )
    elif restart.value != "always":
        findings.append(
            Finding(
                Severity.WARNING,
                "unit-restart",
                f"Restart={restart.value} leaves the service down after some exits",
                f"{where}:{restart.line}: Restart={restart.value}",
                "set Restart=always: a web service should run whatever way it ended "
                "(a clean exit 0 or a stop by a signal are not failures to on-failure)",
            )
        )
    if last("Service", "RestartSec") is None:
        findings.append(
            Finding(
                Severity.WARNING,
                "unit-restart-sec",
                "RestartSec= missing: systemd restarts after 100 ms",
                f"{where}: no RestartSec= in [Service]",
                "set RestartSec=5 (a crash loop at 100 ms burns through the start limit "
                "in half a second and floods the journal)",
            )
        )
    start = last("Service", "ExecStart")
    argv = exec_argv(start.value) if start else ()
    stop = last("Service", "TimeoutStopSec")
    stop_seconds = parse_timespan(stop.value) if stop else _DEFAULT_STOP
    grace = _graceful(argv, spec)
    if grace is not None and stop_seconds is not None and stop_seconds < grace[1]:
        shown = f"TimeoutStopSec={stop.value}" if stop else "systemd's default 90 s"
        findings.append(
            Finding(
                Severity.ERROR,
                "unit-stop-timeout",
                "systemd kills the server before its graceful timeout ends",
                f"{where}: {shown} < {grace[0]} ({grace[1]:g} s)",
                f"set TimeoutStopSec= above the graceful timeout, e.g. {int(grace[1]) + 10}",
            )
        )
    if is_server(argv, "uwsgi"):
        kill = last("Service", "KillSignal")
        quit_signal = kill is not None and kill.value.upper() in ("SIGQUIT", "QUIT", "3")
        if not quit_signal and "--die-on-term" not in argv:
            shown = f"KillSignal={kill.value}" if kill else "no KillSignal= (SIGTERM)"
            findings.append(
                Finding(
                    Severity.ERROR,
                    "unit-uwsgi-signal",
                    "uWSGI treats SIGTERM as 'brutal reload', so systemctl stop does not stop it",
                    f"{where}: {shown}, no --die-on-term in ExecStart",
                    "set KillSignal=SIGQUIT (or pass --die-on-term)",
                )
            )
    findings += _hang_and_leak(where, lines, argv, last)
    reload = last("Service", "ExecReload")
    if (
        is_server(argv, "gunicorn")
        and "--preload" in argv
        and reload is not None
        and "HUP" in reload.value.upper()
    ):
        findings.append(
            Finding(
                Severity.ERROR,
                "unit-preload-reload",
                "gunicorn --preload with a HUP reload: reload keeps serving the old code",
                f"{where}:{reload.line}: ExecReload={reload.value} and --preload in ExecStart",
                "drop --preload (HUP then loads new code in new workers), or reload by "
                "restarting (with a .socket unit, so no request is refused)",
            )
        )
    return findings


def _hang_and_leak(
    where: str,
    lines: Sequence[UnitLine],
    argv: tuple[str, ...],
    last: Callable[[str, str], UnitLine | None],
) -> list[Finding]:
    """A unit that nothing restarts when it hangs, and nothing stops when it leaks."""
    findings: list[Finding] = []
    memory = last("Service", "MemoryMax")
    if memory is None or memory.value in ("", "infinity"):
        findings.append(
            Finding(
                Severity.WARNING,
                "unit-memory-limit",
                "no MemoryMax=: a leak grows until the host's OOM killer picks a victim, "
                "perhaps another service",
                f"{where}: " + (f"MemoryMax={memory.value}" if memory else "no MemoryMax="),
                "set MemoryMax= (opskit's default: 50% of the host) and let Restart=always "
                "bring the service back (docs/limits.md)",
            )
        )
    wants = " ".join(d.value for d in lines if d.section == "Unit" and d.key == "Wants")
    watchdog = "-watchdog.timer" in wants or last("Service", "WatchdogSec") is not None
    if not watchdog:
        findings.append(
            Finding(
                Severity.WARNING,
                "unit-watchdog",
                "no watchdog: a server that hangs without exiting is never restarted",
                f"{where}: no Wants=...-watchdog.timer, no WatchdogSec=",
                "regenerate the unit with opskit (watchdog = 10), which adds "
                "NAME-watchdog.timer and its probe (docs/limits.md)",
            )
        )
    if is_server(argv, "gunicorn") and (_flag_value(argv, "--timeout") or "30") == "0":
        findings.append(
            Finding(
                Severity.WARNING,
                "unit-worker-timeout",
                "gunicorn --timeout 0: a worker stuck on a request is never replaced",
                f"{where}: --timeout 0 in ExecStart",
                "drop --timeout 0 (gunicorn's default is 30 s), or give the longest request's time",
            )
        )
    if is_server(argv, "uwsgi") and (_flag_value(argv, "--harakiri") or "0") == "0":
        findings.append(
            Finding(
                Severity.WARNING,
                "unit-harakiri",
                "uWSGI without harakiri: a worker stuck on a request is never replaced",
                f"{where}: no --harakiri in ExecStart",
                "add --harakiri 30 (seconds; opskit's worker-timeout)",
            )
        )
    return findings
