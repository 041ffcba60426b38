"""Check a logging config by running it: which records reach stderr, stdout, twice, or never."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from opskit.errors import OperationFailed, UsageError
from opskit.logconfig.build import ACCESS_LOGGERS, ERROR_LOGGERS
from opskit.proc import SubprocessRunner
from opskit.spec import LEVELS

_LEVEL_NO = {name: 10 * (i + 1) for i, name in enumerate(LEVELS)}
#: At most this many loggers are probed (the named ones first).
LOGGER_LIMIT = 60
CONFIG_SUFFIXES = (".json", ".yaml", ".yml", ".py", ".ini", ".conf", ".cfg")


@dataclass(frozen=True)
class LogProblem:
    """One logging problem: a stable code, the logger it concerns, a sentence for people."""

    code: str
    message: str
    logger: str | None = None


@dataclass(frozen=True)
class Cell:
    """Where the records of one logger at one level went."""

    expected: bool
    stderr: int
    stdout: int

    @property
    def text(self) -> str:
        """The table's short form: '.' not emitted, 'err', 'out', 'err x2', 'LOST'."""
        if not self.expected and not (self.stderr or self.stdout):
            return "."
        if not (self.stderr or self.stdout):
            return "LOST"
        parts = []
        for label, count in (("err", self.stderr), ("out", self.stdout)):
            if count:
                parts.append(label if count == 1 else f"{label} x{count}")
        return "+".join(parts)


@dataclass(frozen=True)
class LoggerRow:
    """One probed logger: effective level, state, the handlers its records reach."""

    name: str
    level: str
    disabled: bool
    handlers: tuple[str, ...]
    cells: dict[str, Cell] = field(default_factory=dict)


@dataclass(frozen=True)
class HandlerInfo:
    """A handler reached by some probed logger."""

    name: str
    cls: str
    level: str
    stream: str


@dataclass(frozen=True)
class LogReport:
    """The outcome of a check; ``ok`` when there is no finding."""

    target: str
    rows: tuple[LoggerRow, ...]
    handlers: tuple[HandlerInfo, ...]
    findings: tuple[LogProblem, ...]
    #: What the check could not do, without making it fail (the app did not import here).
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """Whether nothing is off."""
        return not self.findings

    def as_dict(self) -> dict[str, Any]:
        """Plain data for ``--json`` and for other commands (doctor)."""
        data = asdict(self)
        data["ok"] = self.ok
        for row, raw in zip(self.rows, data["rows"], strict=True):
            for level, cell in row.cells.items():
                raw["cells"][level]["text"] = cell.text
        return data


@dataclass(frozen=True)
class Target:
    """What to load: a config file, or ``module:attribute`` (a config, a setup function, an app)."""

    kind: str
    value: str

    @classmethod
    def parse(cls, text: str) -> Target:
        """A path when it looks like a file, else ``module:attribute``; UsageError otherwise."""
        path = Path(text)
        if path.suffix in CONFIG_SUFFIXES or path.exists() or "/" in text:
            if not path.is_file():
                raise UsageError(f"{text}: no such logging config file")
            return cls("file", str(path.resolve()))
        module, sep, attribute = text.partition(":")
        names = module.split(".") + (attribute.split(".") if sep else [])
        if not sep or not all(n.isidentifier() for n in names):
            raise UsageError(
                f"{text!r}: expected a config file or 'module:attribute' "
                "(e.g. 'pkg.settings:LOGGING')"
            )
        return cls("module", text)


def relevant_loggers(app_package: str | None = None, extra: Sequence[str] = ()) -> list[str]:
    """The loggers worth probing: the servers', the app's package, and any named ones."""
    names = [*ERROR_LOGGERS, *ACCESS_LOGGERS]
    if app_package:
        names.append(app_package)
    names.extend(extra)
    return list(dict.fromkeys(n for n in names if n and n != "root"))


def run_probe(
    target: Target,
    *,
    python: str,
    loggers: Sequence[str],
    path: Sequence[str] = (),
    cwd: Path | None = None,
    timeout: float = 60,
    django_settings: str | None = None,
    app_module: str | None = None,
) -> tuple[dict[str, Any], str, str]:
    """Run the probe in a subprocess of ``python``; return its report, stdout and stderr.

    A subprocess, because loading a config (or an app) changes the interpreter's global
    logging state for good, and because it must run in the app's own environment.
    """
    source = Path(__file__).with_name("probe.py").read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory(prefix="opskit-logcheck-") as tmp:
        report_path = Path(tmp) / "report.json"
        params = {
            "kind": target.kind,
            "value": target.value,
            "loggers": list(loggers),
            "path": list(path),
            "report": str(report_path),
            "limit": LOGGER_LIMIT,
            "levels": list(LEVELS),
            "django_settings": django_settings,
            "app_module": app_module,
        }
        # Unshielded: the probe only reads, so a Ctrl-C stops it (and whatever the app
        # started) at once.
        proc = SubprocessRunner(shield=False)(
            [python, "-c", source, json.dumps(params)],
            cwd=str(cwd) if cwd is not None else None,
            timeout=timeout,
        )
        if isinstance(proc.start_error, FileNotFoundError):
            raise UsageError(f"--python: no such interpreter: {python}")
        if proc.start_error is not None:
            raise UsageError(f"--python: cannot run {python}: {proc.start_error.strerror}")
        if proc.timed_out:
            raise OperationFailed(f"the probe did not finish within {timeout:g} s")
        try:
            report: dict[str, Any] = json.loads(report_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise OperationFailed(
                f"the probe failed (exit {proc.returncode}) before reporting: {last}"
            ) from None
    return report, proc.stdout, proc.stderr


def analyse(target: str, report: dict[str, Any], stdout: str, stderr: str) -> LogReport:
    """Turn the probe's report and the captured streams into rows and findings."""
    findings: list[LogProblem] = []
    if report.get("error"):
        findings.append(LogProblem("load-failed", f"loading {target} failed: {report['error']}"))
    if report.get("django_error"):
        findings.append(
            LogProblem("django-setup", f"Django's setup failed: {report['django_error']}")
        )
    notes = []
    if report.get("app_error"):
        # Not a finding: the check is often run where the app's code or venv is not.
        notes.append(
            f"the app was not imported ({report['app_error']}): a structlog or loguru set up "
            "at its import is not seen"
        )
    findings.extend(_library_findings(report, stdout, stderr))
    handlers = tuple(
        HandlerInfo(name, info["class"], info["level"], info["stream"])
        for name, info in report["handlers"].items()
    )
    by_name = {h.name: h for h in handlers}
    rows: list[LoggerRow] = []
    for entry in report["loggers"]:
        name = entry["name"]
        level_no = _LEVEL_NO.get(entry["level"], 0)
        cells: dict[str, Cell] = {}
        for level in LEVELS:
            marker = f"opskit-probe#{entry['marker']}.{level}#"
            expected = not entry["disabled"] and _LEVEL_NO[level] >= level_no
            cells[level] = Cell(expected, stderr.count(marker), stdout.count(marker))
        rows.append(
            LoggerRow(name, entry["level"], entry["disabled"], tuple(entry["handlers"]), cells)
        )
        findings.extend(_row_findings(entry, cells, by_name))
    unhandled = [e["name"] for e in report["loggers"] if not e["handlers"] and not e["disabled"]]
    if unhandled:
        # One finding, not one per logger: the cause is nearly always a root without handlers.
        findings.append(
            LogProblem(
                "no-handler",
                f"no handler reached from {', '.join(unhandled)}: only logging.lastResort "
                "prints their WARNING and above, unformatted",
                unhandled[0],
            )
        )
    findings.extend(_root_findings(report))
    findings.extend(_event_findings(report["events"]))
    for handler in handlers:
        if handler.level == "NOTSET":
            findings.append(
                LogProblem(
                    "handler-no-level",
                    f"handler {handler.name} ({handler.cls}) has no explicit level",
                )
            )
    return LogReport(target, tuple(rows), handlers, tuple(findings), tuple(notes))


# Django's defaults give "django" a console handler (under DEBUG) of its own.
DJANGO_HINT = (
    "; Django's default handlers: put 'from django_logging import LOGGING' in the settings "
    "(opskit logging init writes it for a Django project)"
)

#: How each library writes when it is not routed through the stdlib, for the finding.
_OWN_OUTPUT = {
    "structlog": "its default logger prints to stdout",
    "loguru": "its own sink (added at import) writes to stderr",
}


def _library_findings(report: dict[str, Any], stdout: str, stderr: str) -> list[LogProblem]:
    """Where a record of structlog or loguru went, when either writes beside the stdlib's."""
    out: list[LogProblem] = []
    through = report.get("through", [])
    for entry in report.get("libraries", []):
        library = entry["library"]
        if "error" in entry:
            out.append(LogProblem("second-system", f"{library}: logging a record failed: "
                                  f"{entry['error']}", library))  # fmt: skip
            continue
        marker = entry["marker"]
        on_err, on_out = stderr.count(marker), stdout.count(marker)
        routed = through.count(library)
        written = on_err + on_out
        if written == 1 and routed == 1 and not on_out:
            continue
        where = (
            ", ".join(f"{n} to {name}" for n, name in ((on_err, "stderr"), (on_out, "stdout")) if n)
            or "nowhere"
        )
        by_itself = max(written - routed, 0)
        out.append(
            LogProblem(
                "second-system",
                f"{library} writes beside the stdlib logging: its WARNING record went {where}, "
                f"{routed} time(s) through the config's handlers and {by_itself} time(s) by "
                f"itself ({_OWN_OUTPUT[library]}); route it through the stdlib: "
                f"opskit logging init adds the Route filter for an app that depends on it",
                library,
            )
        )
    return out


def _row_findings(
    entry: dict[str, Any], cells: dict[str, Cell], handlers: dict[str, HandlerInfo]
) -> list[LogProblem]:
    name = entry["name"]
    out: list[LogProblem] = []
    if entry["disabled"]:
        out.append(
            LogProblem(
                "disabled",
                f"logger {name} is disabled: it existed before a config with "
                "disable_existing_loggers (true unless set) ran, so it logs nothing",
                name,
            )
        )
        return out
    stdout_levels = [lvl for lvl, c in cells.items() if c.stdout]
    if stdout_levels:
        via = sorted({h for h in entry["handlers"] if handlers[h].stream == "stdout"})
        out.append(
            LogProblem(
                "stdout",
                f"logger {name}: {', '.join(stdout_levels)} records reach stdout"
                + (f" (handler {', '.join(via)})" if via else ""),
                name,
            )
        )
    dup_levels = [lvl for lvl, c in cells.items() if c.stderr + c.stdout > 1]
    if dup_levels:
        out.append(
            LogProblem(
                "duplicate",
                f"logger {name}: each {', '.join(dup_levels)} record is written "
                f"{max(cells[lvl].stderr + cells[lvl].stdout for lvl in dup_levels)} times "
                f"(handlers along the propagation chain: {', '.join(entry['handlers'])})"
                + (DJANGO_HINT if name == "django" or name.startswith("django.") else ""),
                name,
            )
        )
    lost = [lvl for lvl, c in cells.items() if c.expected and not (c.stderr or c.stdout)]
    if lost and entry["handlers"]:
        out.append(
            LogProblem(
                "lost",
                f"logger {name}: {', '.join(lost)} records pass its level but reach "
                "neither stderr nor stdout",
                name,
            )
        )
    return out


def _root_findings(report: dict[str, Any]) -> list[LogProblem]:
    for entry in report["loggers"]:
        if entry["name"] == "root" and _LEVEL_NO.get(entry["level"], 0) > _LEVEL_NO["INFO"]:
            return [
                LogProblem(
                    "root-level",
                    f"root logger at {entry['level']}: INFO records of every logger "
                    "without its own level are dropped; give root an explicit level",
                    "root",
                )
            ]
    return []


def _event_findings(events: list[dict[str, Any]]) -> list[LogProblem]:
    out: list[LogProblem] = []
    configured = False
    failed: dict[tuple[str, str], str] = {}
    for event in events:
        if event["call"] == "handleError":
            failed.setdefault((event["handler"], event["logger"]), event["error"])
            continue
        if event["call"] in ("dictConfig", "fileConfig"):
            configured = True
        elif event["call"] == "basicConfig" and configured:
            if event["handlers_after"] > event["handlers_before"] and not event["force"]:
                effect = "added a second handler to root"
            elif event["force"]:
                effect = "replaced root's handlers (force=True)"
            else:
                effect = "did nothing, since root already had a handler"
            out.append(
                LogProblem(
                    "basicconfig-after-config",
                    f"logging.basicConfig() was called after the configuration and {effect}",
                )
            )
    for (handler, logger), error in failed.items():
        out.append(
            LogProblem(
                "handler-error",
                f"handler {handler} failed on a record of {logger} and dropped it: {error}",
                logger,
            )
        )
    return out


def check_logging(
    target: Target,
    *,
    python: str,
    loggers: Sequence[str],
    path: Sequence[str] = (),
    cwd: Path | None = None,
    django_settings: str | None = None,
    app_module: str | None = None,
) -> LogReport:
    """Load the target in a subprocess, log a record per level and logger, and analyse.

    With ``django_settings``, Django's setup runs after the target, as in a worker; with
    ``app_module``, that module is imported after both (its structlog or loguru setup).
    """
    report, out, err = run_probe(
        target,
        python=python,
        loggers=loggers,
        path=path,
        cwd=cwd,
        django_settings=django_settings,
        app_module=app_module,
    )
    return analyse(target.value, report, out, err)


def format_table(report: LogReport) -> str:
    """The report for people: one row per logger, one column per level, then the findings."""
    header = ["logger", "level", *LEVELS, "handlers"]
    lines = [header]
    for row in report.rows:
        level = "disabled" if row.disabled else row.level
        reached = ", ".join(
            f"{h}({info.stream}, {info.level})"
            for h in row.handlers
            for info in [next(i for i in report.handlers if i.name == h)]
        )
        lines.append(
            [row.name, level, *(row.cells[lvl].text for lvl in LEVELS), reached or "(none)"]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    text = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=False))
        + "  "
        + line[-1]
        for line in lines
    ]
    text.append("")
    text.append("cells: err/out = written once to stderr/stdout, x2 = twice, . = below level")
    text.extend(f"note: {n}" for n in report.notes)
    if report.findings:
        text.append(f"{len(report.findings)} problem(s):")
        text.extend(f"  [{f.code}] {f.message}" for f in report.findings)
    else:
        text.append("ok: every record that passes its level is written once, to stderr")
    return "\n".join(line.rstrip() for line in text) + "\n"
