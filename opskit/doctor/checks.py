"""``opskit doctor``: the classic failures of a Python service, each with evidence and a fix."""

from __future__ import annotations

import ast
import configparser
import json
import os
import shlex
import signal
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from opskit.spec import AppSpec
from opskit.systemd.unitfile import UnitLine, exec_argv, parse_timespan, parse_unit

if TYPE_CHECKING:
    from opskit.upgrade.run import Runner as PipRunner

SEVERITIES = ("error", "warning", "info")

# Directories that hold other people's code or build output, never the project's own.
_SKIP_DIRS = {
    ".git",
    ".hg",
    ".venv",
    "venv",
    "env",
    "node_modules",
    "site-packages",
    "build",
    "dist",
    "__pycache__",
    ".tox",
    ".nox",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
}

Signaller = Callable[[int, int], None]


@dataclass(frozen=True)
class Finding:
    """One problem: how bad it is, what shows it, and what to do about it."""

    severity: str
    check: str
    problem: str
    evidence: str
    fix: str


@dataclass(frozen=True)
class Listener:
    """A server process (the root of its process tree) listening on the app's address."""

    pid: int
    argv: tuple[str, ...]
    started: float
    pids: tuple[int, ...] = ()
    newest_start: float = 0.0

    @property
    def cmdline(self) -> str:
        """The command line as one shell-readable string."""
        return shlex.join(self.argv)


@dataclass(frozen=True)
class Report:
    """Everything doctor found, and the stale processes ``--fix`` may stop."""

    findings: list[Finding]
    stale: list[Listener] = field(default_factory=list)

    @property
    def errors(self) -> int:
        """How many findings have error severity (the exit code depends on it)."""
        return sum(1 for f in self.findings if f.severity == "error")


# --- files of the project --------------------------------------------------------------


def python_files(project: Path) -> list[Path]:
    """The project's own .py files, skipping virtual environments and build output."""
    out: list[Path] = []
    for root, dirs, files in os.walk(project):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
        out.extend(Path(root) / f for f in sorted(files) if f.endswith(".py"))
    return out


def newest_source(project: Path) -> tuple[Path, float] | None:
    """The most recently modified source file of the project and its mtime."""
    newest: tuple[Path, float] | None = None
    for path in python_files(project):
        try:
            mtime = path.stat().st_mtime
        except OSError:
            continue
        if newest is None or mtime > newest[1]:
            newest = (path, mtime)
    return newest


def _parse(path: Path) -> ast.Module | None:
    try:
        return ast.parse(path.read_bytes(), filename=str(path))
    except (OSError, SyntaxError, ValueError):
        return None


def _rel(path: Path, project: Path) -> str:
    try:
        return str(path.relative_to(project))
    except ValueError:
        return str(path)


def scan_del(project: Path) -> list[Finding]:
    """Classes in the project's code that define ``__del__``."""
    findings = []
    for path in python_files(project):
        tree = _parse(path)
        if tree is None:
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.ClassDef):
                continue
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and (
                    item.name == "__del__"
                ):
                    findings.append(
                        Finding(
                            "warning",
                            "del-method",
                            f"class {node.name} defines __del__",
                            f"{_rel(path, project)}:{item.lineno}: def __del__",
                            "release resources explicitly (close(), a context manager) or with "
                            "weakref.finalize: __del__ runs only when the object is collected, "
                            "which for an object in a reference cycle waits for the cyclic "
                            "collector, and its exceptions are only printed, so sockets, files "
                            "and memory leak in a long-running worker",
                        )
                    )
    return findings


# Calls that start a thread (or a pool of them) when executed.
_THREAD_CALLS = {"Thread", "Timer", "start_new_thread", "ThreadPoolExecutor", "BackgroundScheduler"}


def _call_name(node: ast.Call) -> str | None:
    func = node.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def import_time_threads(path: Path) -> list[int]:
    """Line numbers where module-level code (run at import) creates a thread."""
    tree = _parse(path)
    if tree is None:
        return []
    lines: list[int] = []
    pending: list[ast.AST] = list(tree.body)
    while pending:
        node = pending.pop()
        # Code in a function or class body runs later, not at import.
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            continue
        if isinstance(node, ast.Call) and _call_name(node) in _THREAD_CALLS:
            lines.append(node.lineno)
        pending.extend(ast.iter_child_nodes(node))
    return sorted(lines)


def module_file(module: str, roots: Iterable[Path]) -> Path | None:
    """The file of an importable module ("pkg.mod" or "pkg.mod:app") under one of ``roots``."""
    name = module.split(":", 1)[0].strip()
    if not name:
        return None
    parts = name.split(".")
    for root in roots:
        for candidate in (
            root.joinpath(*parts).with_suffix(".py"),
            root.joinpath(*parts, "__init__.py"),
        ):
            if candidate.is_file():
                return candidate
    return None


def _uwsgi_ini_modules(project: Path) -> list[tuple[str, str]]:
    """(where, module) for each uWSGI ini in the project that loads an app without lazy-apps."""
    out = []
    for ini in sorted(project.glob("**/*.ini")):
        if any(part in _SKIP_DIRS for part in ini.relative_to(project).parts):
            continue
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        try:
            parser.read_string(ini.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, configparser.Error):
            continue
        if not parser.has_section("uwsgi"):
            continue
        section = parser["uwsgi"]
        lazy = (section.get("lazy-apps") or section.get("lazy") or "").strip().lower()
        if lazy in ("true", "1", "yes", "on"):
            continue
        module = section.get("module") or section.get("wsgi") or section.get("wsgi-file")
        if module:
            out.append((_rel(ini, project), module.strip()))
    return out


def check_uwsgi_threads(
    spec: AppSpec, project: Path, unit_argvs: Sequence[tuple[str, tuple[str, ...]]]
) -> list[Finding]:
    """Find uWSGI loading an app without lazy-apps while that app starts threads at import."""
    sources: list[tuple[str, str]] = _uwsgi_ini_modules(project)
    if spec.server == "uwsgi" and not spec.lazy_apps and spec.app:
        sources.append(("the app spec (lazy-apps = false)", spec.app))
    for where, argv in unit_argvs:
        if _is_server(argv, "uwsgi") and "--lazy-apps" not in argv:
            for flag in ("--module", "--wsgi", "--wsgi-file"):
                if flag in argv[:-1]:
                    sources.append((where, argv[argv.index(flag) + 1]))
    findings = []
    seen: set[tuple[str, str]] = set()
    roots = [project, Path(spec.working_directory)]
    for where, module in sources:
        file = Path(module) if module.endswith(".py") else module_file(module, roots)
        if file is None or not file.is_file() or (where, str(file)) in seen:
            continue
        seen.add((where, str(file)))
        lines = import_time_threads(file)
        if lines:
            findings.append(
                Finding(
                    "error",
                    "uwsgi-lazy-apps",
                    "uWSGI loads the app once and forks, but the app starts threads at import",
                    f"{where} has no lazy-apps; {_rel(file, project)} line "
                    f"{', '.join(map(str, lines))} starts a thread at import",
                    "set lazy-apps = true (opskit: lazy-apps = true in the spec): threads do "
                    "not survive fork, and a lock held at fork time deadlocks the workers",
                )
            )
    return findings


# --- unit files --------------------------------------------------------------------------


def _is_server(argv: tuple[str, ...], server: str) -> bool:
    if not argv:
        return False
    if Path(argv[0]).name == server:
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
        if _is_server(argv, server):
            value = _flag_value(argv, flag)
            if value is not None:
                seconds = parse_timespan(value)
                return (f"{server} {flag} {value}", seconds) if seconds is not None else None
            if default is not None:
                return f"{server}'s default graceful timeout", default
            return None
    return "the spec's graceful-timeout", float(spec.graceful_timeout)


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
                    "error",
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
                "error",
                "unit-restart",
                "the service is not restarted when it dies (systemd's default is Restart=no)",
                shown,
                "set Restart=always in [Service]",
            )
        )
    elif restart.value != "always":
        findings.append(
            Finding(
                "warning",
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
                "warning",
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
                "error",
                "unit-stop-timeout",
                "systemd kills the server before its graceful timeout ends",
                f"{where}: {shown} < {grace[0]} ({grace[1]:g} s)",
                f"set TimeoutStopSec= above the graceful timeout, e.g. {int(grace[1]) + 10}",
            )
        )
    if _is_server(argv, "uwsgi"):
        kill = last("Service", "KillSignal")
        quit_signal = kill is not None and kill.value.upper() in ("SIGQUIT", "QUIT", "3")
        if not quit_signal and "--die-on-term" not in argv:
            shown = f"KillSignal={kill.value}" if kill else "no KillSignal= (SIGTERM)"
            findings.append(
                Finding(
                    "error",
                    "unit-uwsgi-signal",
                    "uWSGI treats SIGTERM as 'brutal reload', so systemctl stop does not stop it",
                    f"{where}: {shown}, no --die-on-term in ExecStart",
                    "set KillSignal=SIGQUIT (or pass --die-on-term)",
                )
            )
    reload = last("Service", "ExecReload")
    if (
        _is_server(argv, "gunicorn")
        and "--preload" in argv
        and reload is not None
        and "HUP" in reload.value.upper()
    ):
        findings.append(
            Finding(
                "error",
                "unit-preload-reload",
                "gunicorn --preload with a HUP reload: reload keeps serving the old code",
                f"{where}:{reload.line}: ExecReload={reload.value} and --preload in ExecStart",
                "drop --preload (HUP then loads new code in new workers), or reload by "
                "restarting (with a .socket unit, so no request is refused)",
            )
        )
    return findings


def unit_files(spec: AppSpec, project: Path, units: Sequence[Path] | None) -> list[Path]:
    """The service units to check: those given, else the project's deploy/ and the host's."""
    found: list[Path] = []
    candidates: list[Path] = (
        list(units)
        if units
        else [
            project / "deploy",
            Path("/etc/systemd/system") / f"{spec.name}.service",
        ]
    )
    for path in candidates:
        if path.is_dir():
            found.extend(sorted(path.glob("*.service")))
        elif path.is_file() and path.suffix == ".service":
            # Restart= and the rest belong to services; a .socket unit has none of them.
            found.append(path)
    return found


# --- processes (psutil) ------------------------------------------------------------------


def _listens(conn: object, spec: AppSpec) -> bool:
    import psutil

    laddr = getattr(conn, "laddr", None)
    if spec.unix_socket:
        return bool(laddr == spec.unix_socket)
    return bool(
        getattr(conn, "status", None) == psutil.CONN_LISTEN
        and laddr
        and getattr(laddr, "port", None) == spec.port
    )


def listeners(spec: AppSpec) -> list[Listener]:
    """The server processes listening on the app's port or unix socket, one per process tree.

    psutil names one holder per socket, often a worker of a pre-fork server, so each
    holder is walked up to the topmost ancestor that listens there too: the master, which
    is the server (one server, not one per worker). PID 1 holding the socket is systemd's
    socket activation, not a server.
    """
    import psutil

    kind = "unix" if spec.unix_socket else "inet"
    holders = {
        conn.pid
        for conn in psutil.net_connections(kind=kind)
        if conn.pid is not None and conn.pid != 1 and _listens(conn, spec)
    }
    roots: dict[int, psutil.Process] = {}
    for pid in holders:
        try:
            root = psutil.Process(pid)
            for parent in root.parents():
                if parent.pid == 1:
                    break
                try:
                    if parent.pid in holders or any(
                        _listens(c, spec) for c in parent.net_connections(kind=kind)
                    ):
                        root = parent
                except psutil.AccessDenied:
                    continue
            roots[root.pid] = root
        except psutil.Error:
            continue
    out = []
    for pid, root in sorted(roots.items()):
        try:
            tree = [root, *root.children(recursive=True)]
            starts = []
            for proc in tree:
                try:
                    starts.append(proc.create_time())
                except psutil.Error:
                    continue
            out.append(
                Listener(
                    pid=pid,
                    argv=tuple(root.cmdline()),
                    started=root.create_time(),
                    pids=tuple(sorted(p.pid for p in tree)),
                    newest_start=max(starts),
                )
            )
        except psutil.Error:
            continue
    return out


def runs_app(argv: Sequence[str], spec: AppSpec) -> bool:
    """Whether a command line runs this app (its import path, or the spec's command)."""
    if spec.app:
        return any(arg == spec.app or arg.endswith("=" + spec.app) for arg in argv)
    n = len(spec.command)
    return n > 0 and any(tuple(argv[i : i + n]) == spec.command for i in range(len(argv)))


_START_MARGIN = 1.0


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def check_listeners(
    spec: AppSpec,
    found: Sequence[Listener],
    newest: tuple[Path, float] | None,
    project: Path,
) -> tuple[list[Finding], list[Listener]]:
    """Several servers on one address, and servers older than the code: findings, stale ones."""
    address = spec.unix_socket or f"port {spec.port}"
    findings = []
    if len(found) > 1:
        findings.append(
            Finding(
                "error",
                "port-shared",
                f"{len(found)} separate servers listen on {address}",
                "; ".join(f"pid {p.pid}: {p.cmdline}" for p in found),
                "stop all but one: with SO_REUSEPORT the kernel spreads connections over "
                "every listener, so some requests reach an old server "
                "(opskit doctor --fix stops the stale ones running this app)",
            )
        )
    stale = []
    if newest is not None:
        path, mtime = newest
        for proc in found:
            # A reloaded pre-fork server has old master but new workers: what counts is
            # the youngest process of the tree, the last one to import the code. Start
            # times derive from a boot time rounded to the second, hence the margin.
            if max(proc.started, proc.newest_start) + _START_MARGIN < mtime:
                matches = runs_app(proc.argv, spec)
                if matches:
                    stale.append(proc)
                findings.append(
                    Finding(
                        "warning",
                        "stale-code",
                        f"a server on {address} started before the code changed",
                        f"pid {proc.pid} ({proc.cmdline}) started {_when(proc.started)}; "
                        f"{_rel(path, project)} changed {_when(mtime)}",
                        "reload or restart the service"
                        + (" (or opskit doctor --fix)" if matches else "")
                        + " so it runs the code on disk",
                    )
                )
    return findings, stale


def stop_processes(
    procs: Sequence[Listener],
    *,
    send: Signaller = os.kill,
    timeout: float = 30.0,
) -> list[str]:
    """Send SIGTERM to each process (SIGKILL after ``timeout``); return what happened.

    A process is signalled only while its PID still belongs to the process found (same
    start time), so a PID reused in between is never hit.
    """
    import psutil

    lines = []
    alive: list[tuple[Listener, psutil.Process]] = []
    for proc in procs:
        try:
            current = psutil.Process(proc.pid)
            if abs(current.create_time() - proc.started) > 0.01:
                lines.append(f"skipped    pid {proc.pid}: a different process now")
                continue
            send(proc.pid, signal.SIGTERM)
            alive.append((proc, current))
        except (psutil.NoSuchProcess, ProcessLookupError):
            lines.append(f"gone       pid {proc.pid}")
    deadline = time.monotonic() + timeout
    for proc, current in alive:
        try:
            current.wait(timeout=max(0.0, deadline - time.monotonic()))
            lines.append(f"stopped    pid {proc.pid}")
        except psutil.TimeoutExpired:
            send(proc.pid, signal.SIGKILL)
            lines.append(f"killed     pid {proc.pid} (no exit {timeout:g} s after SIGTERM)")
        except psutil.NoSuchProcess:
            lines.append(f"stopped    pid {proc.pid}")
    return lines


# --- the app's environment -----------------------------------------------------------------


def check_pip(spec: AppSpec, *, runner: PipRunner | None = None) -> list[Finding]:
    """``pip check`` failures in the app's virtual environment (run by opskit.upgrade.pipcheck)."""
    from opskit.errors import OperationFailed
    from opskit.upgrade.run import pip_check

    python = spec.python
    if not Path(python).exists():
        return [
            Finding(
                "info",
                "pip-check",
                "the app's environment is not on this host; pip check skipped",
                f"{python}: not found",
                "run doctor where the app is deployed, or pass --venv",
            )
        ]
    try:
        problems = pip_check(python, runner=runner)
    except OperationFailed as exc:
        return [Finding("warning", "pip-check", "pip check could not run", str(exc), "")]
    if not problems:
        return []
    return [
        Finding(
            "error",
            "pip-check",
            "installed packages do not satisfy each other's requirements",
            "; ".join(p.line for p in problems),
            "install the versions the requirements ask for (opskit upgrade runs pip check "
            "after every change); pip itself exits 0 even when it leaves conflicts",
        )
    ]


def check_logging_setup(spec: AppSpec, project: Path) -> list[Finding]:
    """Where the app's log records go: opskit.logconfig.check loads the config or the app.

    The target is the spec's log-config when it exists on this host, else the app's own
    module (its import-time logging setup), loaded by the app's interpreter when present.
    """
    from opskit.errors import OpskitError
    from opskit.logconfig.build import app_package
    from opskit.logconfig.check import Target, check_logging, relevant_loggers

    roots = [project, Path(spec.working_directory)]
    path = [str(r) for r in roots if r.is_dir()]
    if spec.log_config and Path(spec.log_config).is_file():
        target = Target("file", spec.log_config)
        path.insert(0, str(Path(spec.log_config).parent))
    elif spec.app and module_file(spec.app, roots) is not None:
        target = Target("module", spec.app)
    else:
        return []
    python = spec.python if Path(spec.python).exists() else sys.executable
    loggers = relevant_loggers(app_package(spec), [n for n, _ in spec.loggers])
    try:
        report = check_logging(target, python=python, loggers=loggers, path=path, cwd=project)
    except OpskitError as exc:
        return [
            Finding(
                "warning",
                "logging",
                f"the logging check could not load {target.value}",
                str(exc),
                f"opskit logging check {target.value}",
            )
        ]
    return [
        Finding(
            "warning",
            "logging",
            f"{item.logger or target.value}: log records go astray",
            f"loading {target.value}: {item.message}",
            "use a config from 'opskit logging init' (log-config in the spec); "
            f"details: opskit logging check {target.value}",
        )
        for item in report.findings
    ]


# --- all of it --------------------------------------------------------------------------


def diagnose(
    spec: AppSpec,
    *,
    project: Path,
    units: Sequence[Path] | None = None,
    pip_runner: PipRunner | None = None,
) -> Report:
    """Run every check against this host and project."""
    project = project.resolve()
    findings: list[Finding] = []
    unit_argvs: list[tuple[str, tuple[str, ...]]] = []
    for path in unit_files(spec, project, units):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            findings.append(
                Finding("warning", "unit-read", "cannot read a unit file", f"{path}: {exc}", "")
            )
            continue
        where = _rel(path, project)
        findings.extend(check_unit(where, text, spec))
        start = [d for d in parse_unit(text) if d.section == "Service" and d.key == "ExecStart"]
        if start:
            unit_argvs.append((where, exec_argv(start[-1].value)))
    findings.extend(check_uwsgi_threads(spec, project, unit_argvs))
    if spec.port is not None or spec.unix_socket:
        process_findings, stale = check_listeners(
            spec, listeners(spec), newest_source(project), project
        )
        findings.extend(process_findings)
    else:
        stale = []
    findings.extend(scan_del(project))
    findings.extend(check_logging_setup(spec, project))
    findings.extend(check_pip(spec, runner=pip_runner))
    findings.sort(key=lambda f: SEVERITIES.index(f.severity))
    return Report(findings, stale)


def to_json(findings: Sequence[Finding]) -> str:
    """The findings for machines."""
    return json.dumps(
        {
            "errors": sum(1 for f in findings if f.severity == "error"),
            "findings": [asdict(f) for f in findings],
        },
        indent=2,
    )


def table(findings: Sequence[Finding]) -> str:
    """The findings for people: one block per finding, then a count."""
    if not findings:
        return "no problems found"
    width = max(len(f.check) for f in findings)
    blocks = []
    indent = " " * (8 + width + 2)
    for f in findings:
        blocks.append(f"{f.severity:<7} {f.check:<{width}}  {f.problem}")
        blocks.append(f"{indent}evidence: {f.evidence}")
        if f.fix:
            blocks.append(f"{indent}fix:      {f.fix}")
    counts = {s: sum(1 for f in findings if f.severity == s) for s in SEVERITIES}
    blocks.append("")
    plural = {"error": "errors", "warning": "warnings", "info": "info"}
    blocks.append(", ".join(f"{n} {s if n == 1 else plural[s]}" for s, n in counts.items()))
    return "\n".join(blocks)
