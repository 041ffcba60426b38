"""A hung service serving again: the watchdog's time against interval x K + RestartSec + start-up.

For each server (gunicorn, uvicorn, uWSGI, and `command`: the stdlib's single-threaded
wsgiref server), the bench boots a real systemd in a throwaway nspawn container (the
real-systemd tests' harness, tests/real_systemd/nspawn.py; at most two at a time),
installs opskit's units for test_hung's HANG_APP with a short watchdog (probe every
INTERVAL s, a kill after FAILURES x INTERVAL s without an answer, RestartSec=RESTART_SEC),
and per hang kind
repeats REPS times:

- the baseline, in the same container just before: ``systemctl stop``, then the time
  from ``systemctl start`` to the first 200 (the start-up that the bound adds), and the
  time from ``systemctl restart`` to the first 200;
- one hang, at a random phase of the probe timer (after a probe that found the
  service answering, a uniform random wait of 0 to INTERVAL s), of one kind:
  - frozen: every process of the service stopped (``systemctl kill --signal=SIGSTOP``);
  - deadlock: one worker and no worker timeout, and a request to /hang, which deadlocks
    it (gunicorn's sync worker, uWSGI's one process, uvicorn's event loop, wsgiref);
  and the time from the hang to the first 200 again, measured inside the container by a
  client that polls every 20 ms (a request waits at most 1 s). Each repetition checks that
  the watchdog did it: one "killing it (SIGKILL)" line more in the probe's journal, one
  restart more (NRestarts), a new main process.

The bound is computed from the start-up measured in the same run: interval x K +
RestartSec + start-up, as the issue states it and docs/limits.md documents it (the
probe kills at K x interval from the last answer, which came no later than the hang).
The exit status is 1 when a repetition exceeds it taken with the slowest start-up
measured.

    python bench/bench_watchdog.py                                 # print the result
    python bench/bench_watchdog.py --reps 3 --servers gunicorn uwsgi --parallel 1
    python bench/bench_watchdog.py --write docs/benchmarks/watchdog.md

Needs what the real-systemd tests need (root, systemd-nspawn, the wheelhouse of
``make wheelhouse``); the servers' venv is the tests' own, cached in build/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NoReturn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from opskit.spec import AppSpec, build_spec  # noqa: E402
from opskit.systemd.units import render_units  # noqa: E402
from opskit.systemd.watchdog import bound as probe_bound  # noqa: E402
from opskit.systemd.watchdog import state_dir  # noqa: E402
from opskit.systemd.watchdog import timeout as probe_timeout  # noqa: E402
from opskit.write import atomic_write  # noqa: E402
from tests.real_systemd import nspawn  # noqa: E402
from tests.real_systemd.demo import PORT  # noqa: E402

# The app and the specs of the real-systemd test of the watchdog, not a copy of them.
from tests.real_systemd.test_hung import HANG_APP, HANG_DIR, spec_for  # noqa: E402

SERVERS = ("gunicorn", "uvicorn", "uwsgi", "command")
KINDS = ("frozen", "deadlock")
#: The watchdog under test: a probe every INTERVAL s, a kill after FAILURES x INTERVAL s.
INTERVAL = 2
FAILURES = 2
RESTART_SEC = 1
#: The longest a hang may take to end before the repetition counts as failed (seconds).
HANG_LIMIT = 120.0
WHEELHOUSE = ROOT / "build" / "wheelhouse"

#: server = "command": the stdlib's wsgiref server, one thread, so /hang hangs it all.
SERVE = """\
import sys
from wsgiref.simple_server import WSGIRequestHandler, make_server

sys.path.insert(0, "/srv/hang")
import hangapp


class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


make_server("127.0.0.1", int(sys.argv[1]), hangapp.app, handler_class=Quiet).serve_forever()
"""

#: The client inside the container (Debian's python3, stdlib only). One JSON line out:
#: t0 (the action, CLOCK_MONOTONIC, which the host, systemd and the journal share) and
#: ok (the first 200). A hang counts once a request has timed out or been refused.
DRIVER = r"""
import http.client, json, socket, subprocess, sys, time

mode, unit, port, limit = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])


def get(path="/"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        resp = conn.getresponse()
        body = resp.read().decode("utf-8", "replace")
        return ("ok" if resp.status == 200 else f"HTTP {resp.status}"), body
    except TimeoutError:
        return "hung", ""
    except (OSError, http.client.HTTPException) as exc:
        return "down", type(exc).__name__
    finally:
        conn.close()


def systemctl(*args):
    subprocess.run(["systemctl", *args], check=True, capture_output=True, timeout=120)


def until_ok(t0, hang, old=None):
    down, hung = None, False
    while time.monotonic() - t0 < limit:
        state, body = get()
        now = time.monotonic()
        if state == "ok":
            if not hang:
                return {"ok": now}
            if old is not None and body.split()[:1] == [old]:
                if hung or down is not None:
                    return {"error": f"the deadlocked worker {old} answered again"}
                continue  # a request ahead of /hang: the worker has not taken it yet
            if not hung:
                return {"error": f"answered {body!r} without a hang first"}
            return {"ok": now}
        if state == "hung":
            hung = True
        else:
            if down is None:
                down = now
            time.sleep(0.02)
    return {"error": f"no 200 within {limit} s (hung seen: {hung}, down at {down})"}


state, body = get()
if mode == "start":
    systemctl("stop", unit)
    t0 = time.monotonic()
    systemctl("start", unit)
    result = until_ok(t0, False)
elif mode == "restart":
    t0 = time.monotonic()
    systemctl("restart", unit)
    result = until_ok(t0, False)
elif state != "ok":
    t0, result = time.monotonic(), {"error": f"not serving before the hang: {state}"}
elif mode == "frozen":
    t0 = time.monotonic()
    systemctl("kill", "--signal=SIGSTOP", unit)
    result = until_ok(t0, True)
else:
    old = body.split()[0]
    t0 = time.monotonic()
    hold = socket.create_connection(("127.0.0.1", port), timeout=5)
    hold.sendall(b"GET /hang HTTP/1.1\r\nHost: bench\r\n\r\n")
    result = until_ok(t0, True, old)
print(json.dumps({"t0": t0, **result}), flush=True)
"""


class BenchError(RuntimeError):
    """Raised when a repetition does not show what it must (the watchdog's restart)."""


def spec_of(server: str, kind: str) -> AppSpec:
    """The unit under test: test_hung's, with this bench's watchdog and RestartSec."""
    name = f"wd-{server}-{kind}"
    watch: dict[str, Any] = {
        "watchdog": INTERVAL,
        "watchdog_failures": FAILURES,
        "restart_sec": str(RESTART_SEC),
    }
    if kind == "deadlock":
        # One worker and no worker timeout: only the watchdog can end the deadlock
        # (gunicorn's --timeout and uWSGI's harakiri would replace the worker first).
        watch.update(workers=1, worker_timeout=0)
    if server != "command":
        spec: AppSpec = spec_for(server, name, **watch)
        return spec
    return build_spec(
        {
            "name": name,
            "server": "command",
            "command": [f"{nspawn.SERVERS_VENV}/bin/python", f"{HANG_DIR}/serve.py", str(PORT)],
            "port": PORT,
            "working_directory": HANG_DIR,
            "venv": nspawn.SERVERS_VENV,
            "graceful_timeout": 5,
            # A command gets a watchdog only with a health path (it may not speak HTTP).
            "health_path": "/",
            "version_path": None,
            **watch,
        }
    )


@dataclass
class Cell:
    """One server and hang kind: the measured seconds of every repetition."""

    server: str
    kind: str
    spec: AppSpec
    start: list[float] = field(default_factory=list)
    restart: list[float] = field(default_factory=list)
    first: list[float] = field(default_factory=list)
    down: list[float] = field(default_factory=list)
    serving: list[float] = field(default_factory=list)

    @property
    def bound(self) -> float:
        return probe_bound(self.spec) + RESTART_SEC + statistics.median(self.start)

    @property
    def within_bound(self) -> bool:
        worst = probe_bound(self.spec) + RESTART_SEC + max(self.start)
        return max(self.serving) <= worst


_print_lock = threading.Lock()


def say(line: str) -> None:
    with _print_lock:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()


def drive(box: nspawn.Container, mode: str, spec: AppSpec) -> dict[str, float]:
    """Run the in-container client in ``mode``; its times (t0, ok)."""
    proc = box.run(
        nspawn.SYSTEM_PYTHON,
        "-c",
        DRIVER,
        mode,
        f"{spec.name}.service",
        str(PORT),
        str(HANG_LIMIT),
        check=False,
        timeout=HANG_LIMIT + 60,
    )
    try:
        result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise BenchError(f"{spec.name}: the client failed: {proc.stdout}{proc.stderr}") from None
    if "error" in result:
        raise BenchError(f"{spec.name} {mode}: {result['error']}\n{box.journal(lines=60)}")
    return result


def kills(box: nspawn.Container, spec: AppSpec) -> int:
    """How many times the probe has said it kills the service."""
    log = box.run("journalctl", "--no-pager", "-o", "cat", "-u", f"{spec.name}-watchdog.service")
    return log.stdout.count("killing it (SIGKILL)")


def wait_clean_probe(box: nspawn.Container, spec: AppSpec, since: float) -> None:
    """Wait for a probe that started after ``since`` (monotonic) and found the service answering.

    So that every hang starts from an answer the probe has seen: a probe that caught a
    starting service (Type=exec is "running" before it listens) records no answer.
    """
    unit = f"{spec.name}-watchdog.service"
    alive = f"{state_dir(spec)}/alive"
    deadline = time.monotonic() + 60
    while True:
        shown = box.show(unit, "ExecMainStartTimestampMonotonic", "ActiveState")
        started = int(shown.get("ExecMainStartTimestampMonotonic") or 0) / 1e6
        if started > since and shown.get("ActiveState") == "inactive":
            try:
                if float(box.read_file(alive).strip()) >= started:
                    return
            except (OSError, ValueError):
                pass
        if time.monotonic() > deadline:
            raise BenchError(f"{spec.name}: no clean probe within 60 s\n{box.journal(unit)}")
        time.sleep(0.1)


def hang_once(box: nspawn.Container, cell: Cell, since: float, rng: random.Random) -> None:
    """One hang of the cell's kind; appends its times, after checking the watchdog ended it."""
    spec = cell.spec
    unit = f"{spec.name}.service"
    wait_clean_probe(box, spec, since)
    # A uniform phase of the probe timer, not the one the previous recovery left behind.
    time.sleep(rng.uniform(0, INTERVAL))
    before = box.show(unit, "MainPID", "NRestarts")
    killed = kills(box, spec)
    result = drive(box, cell.kind, spec)
    after = box.show(unit, "MainPID", "NRestarts")
    if int(after["NRestarts"]) != int(before["NRestarts"]) + 1 or after["MainPID"] in (
        "0",
        before["MainPID"],
    ):
        raise BenchError(f"{unit}: not restarted once: {before} -> {after}")
    # The probe's line reaches the journal through its stdout stream: wait for it (bounded).
    box.wait_for("the probe's kill line", lambda: kills(box, spec) == killed + 1, timeout=30)
    # The kill as systemd saw it (the client's view lags once a full backlog drops SYNs).
    died = [
        int(entry["__MONOTONIC_TIMESTAMP"]) / 1e6
        for entry in box.journal_json(unit)
        if "Main process exited, code=killed, status=9/KILL" in str(entry.get("MESSAGE"))
        and int(entry["__MONOTONIC_TIMESTAMP"]) / 1e6 > result["t0"]
    ]
    if len(died) != 1:
        raise BenchError(f"{unit}: {len(died)} SIGKILLed main processes after the hang")
    failed = [
        int(entry["__MONOTONIC_TIMESTAMP"]) / 1e6
        for entry in box.journal_json(f"{spec.name}-watchdog.service")
        if "no answer on" in str(entry.get("MESSAGE"))
        and int(entry["__MONOTONIC_TIMESTAMP"]) / 1e6 > result["t0"]
    ]
    if not failed:
        raise BenchError(f"{spec.name}-watchdog.service: no failed probe after the hang")
    cell.first.append(min(failed) - result["t0"])
    cell.down.append(died[0] - result["t0"])
    cell.serving.append(result["ok"] - result["t0"])


def measure_server(
    server: str, reps: int, seed: str, work: Path, venv: Path
) -> tuple[list[Cell], dict[str, str]]:
    """Boot one container for ``server``, measure both hang kinds in it; and its versions."""
    hang = work / f"hang-{server}"
    hang.mkdir()
    (hang / "hangapp.py").write_text(HANG_APP)
    (hang / "serve.py").write_text(SERVE)
    hang.chmod(0o755)
    for path in hang.iterdir():
        path.chmod(0o644)
    binds = [nspawn.Bind(venv, nspawn.SERVERS_VENV), nspawn.Bind(hang, HANG_DIR)]
    cells = []
    with nspawn.booted(f"wd-{server}", work / "containers", binds) as box:
        found = versions(box)
        for kind in KINDS:
            cell = Cell(server, kind, spec_of(server, kind))
            rng = random.Random(f"{seed}-{server}-{kind}")
            unit = f"{cell.spec.name}.service"
            box.install_units(render_units(cell.spec))
            box.systemctl("start", unit)
            box.wait_http(f"http://127.0.0.1:{PORT}/", timeout=60)
            for rep in range(1, reps + 1):
                started = drive(box, "start", cell.spec)
                cell.start.append(started["ok"] - started["t0"])
                restarted = drive(box, "restart", cell.spec)
                cell.restart.append(restarted["ok"] - restarted["t0"])
                hang_once(box, cell, restarted["ok"], rng)
                say(
                    f"{server} {kind} {rep}/{reps}: start {cell.start[-1]:.2f} s, restart "
                    f"{cell.restart[-1]:.2f} s; hang -> killed {cell.down[-1]:.2f} s, "
                    f"-> serving {cell.serving[-1]:.2f} s"
                )
            box.systemctl("stop", unit)
            cells.append(cell)
    return cells, found


VERSIONS = (
    "import importlib.metadata as m, json, platform; print(json.dumps({'python': "
    "platform.python_version(), **{n: m.version(n) for n in ('gunicorn', 'uvicorn', 'uWSGI')}}))"
)


def versions(box: nspawn.Container) -> dict[str, str]:
    """The servers', Python's and systemd's versions, as the container runs them."""
    found: dict[str, str] = json.loads(
        box.run(f"{nspawn.SERVERS_VENV}/bin/python", "-c", VERSIONS).stdout
    )
    found["systemd"] = box.run("systemctl", "--version").stdout.split("\n")[0]
    return found


def _git(*args: str) -> str:
    out = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else ""


def _commit() -> str:
    """The checkout the units were rendered from: its commit, and whether it was edited."""
    try:
        commit = _git("rev-parse", "--short", "HEAD")
        # Only opskit's sources and templates render the units.
        dirty = _git("--no-optional-locks", "status", "--porcelain", "--", "opskit", "templates")
    except OSError:
        return "unknown"
    if not commit:
        return "unknown"
    return f"{commit} with uncommitted changes" if dirty else commit


def _s(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def report(cells: list[Cell], info: dict[str, Any]) -> str:
    v = info["versions"]
    spec = cells[0].spec
    timeout = probe_timeout(spec)
    lines = [
        "# The watchdog: a hung service serving again",
        "",
        "Target (issue 16): a hung service serves again within interval x K + RestartSec + "
        "start-up, recorded per server. Here the watchdog probes every "
        f"{INTERVAL} s (`watchdog = {INTERVAL}`) and kills once the service has given no "
        f"answer for K x interval = {FAILURES} x {INTERVAL} s (`watchdog-failures = "
        f"{FAILURES}`); each try waits at most {timeout} s, and RestartSec={RESTART_SEC}.",
        "",
        "## Method",
        "",
        "`bench/bench_watchdog.py` boots the machine's own systemd in a throwaway nspawn",
        "container per server (the real-systemd tests' harness, "
        f"{info['parallel']} at a time), installs",
        "the units `opskit systemd` renders for the app of tests/real_systemd/test_hung.py",
        f"(imported from it), and for each hang kind repeats {info['reps']} times:",
        "",
        "- **start-up**, the baseline, just before each hang: `systemctl stop`, then the",
        "  time from `systemctl start` to the first 200. The restart after a kill starts",
        "  a service whose processes are gone, so this is the start-up the bound adds.",
        "  `systemctl restart` to the first 200 (a stop included) is shown beside it;",
        "- **the hang**, at a uniform random phase of the probe timer (after a probe",
        "  that found the service answering, a random wait of 0 to the interval):",
        "  - *frozen*: every process of the service stopped (`systemctl kill",
        "    --signal=SIGSTOP`), 2 workers (gunicorn, uvicorn `--workers 2`, uWSGI);",
        "  - *deadlock*: one worker, no worker timeout (`worker-timeout = 0`: gunicorn's",
        "    `--timeout` and uWSGI's harakiri would otherwise replace the worker first), and",
        "    a request to `/hang`, which deadlocks it: gunicorn's sync worker, uWSGI's one",
        "    process, uvicorn's event loop, the single thread of `command` (the stdlib's",
        "    wsgiref server);",
        "",
        "  then the time from the hang to the first 200 again. Every time is taken inside",
        "  the container by one client that polls `GET /` every 20 ms (a request waits at",
        "  most 1 s), from just before the action. *first failed try* is when the probe",
        '  logged its first "no answer on", *killed* when systemd logged the main',
        '  process "killed, status=9/KILL" (journal timestamps: CLOCK_MONOTONIC, the',
        "  client's clock). Each repetition checks that the watchdog did it: one more",
        '  "killing it (SIGKILL)" line in the probe\'s journal, NRestarts one higher, a new',
        "  main process.",
        "",
        "The bound, from the median start-up measured in the same run, as the issue states "
        "it and docs/limits.md documents it: interval x K + RestartSec + start-up = "
        f"{INTERVAL} x {FAILURES} + {RESTART_SEC} + start-up.",
        "",
        "Command line (as root, from the repository root; `--write` makes this page):",
        "",
        f"    {info['command']}",
        "",
        "## Result",
        "",
        f"Measured {info['date']}: opskit {info['commit']}; {v['systemd']}; "
        f"Python {v['python']} in the containers; gunicorn {v['gunicorn']}, uvicorn "
        f"{v['uvicorn']}, uWSGI {v['uWSGI']}; {platform.system()} {platform.release()} "
        f"{platform.machine()}, {os.cpu_count()} CPUs shared with other work; load "
        f"average {info['load_before']} before, {info['load_after']} after (other work "
        "ran beside the bench; its load is in the spread of the start-ups). "
        f"{info['elapsed']:.0f} s in all, random phases seeded with `{info['seed']}`.",
        "",
        "Seconds, median (min-max) of "
        f"{info['reps']} repetitions; the ratios are measured / bound, for the median and "
        "(in brackets) the slowest repetition.",
        "",
        "| server | hang | start-up | restart | hang to first failed try | hang to killed "
        "| hang to serving | bound | ratio |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cells:
        med = statistics.median(c.serving)
        worst = max(c.serving)
        lines.append(
            f"| {c.server} | {c.kind} | {_s(c.start)} | {_s(c.restart)} | {_s(c.first)} "
            f"| {_s(c.down)} "
            f"| {_s(c.serving)} | {c.bound:.2f} | {med / c.bound:.2f} "
            f"({worst / c.bound:.2f}) |"
        )
    n = sum(len(c.serving) for c in cells)
    within = sum(1 for c in cells for x in c.serving if x <= c.bound)
    medians = [statistics.median(c.serving) / c.bound for c in cells]
    worst_all = max(max(c.serving) / c.bound for c in cells)
    held = sum(1 for c in cells if c.within_bound)
    lines += [
        "",
        f"**The bound held in {within} of {n} repetitions** against the median start-up, "
        f"and in {held} of {len(cells)} cells against the slowest start-up of the cell: the "
        f"medians are {min(medians):.2f}-{max(medians):.2f}x of it, the slowest repetition "
        f"{worst_all:.2f}x.",
    ]
    recover = [s - d for c in cells for s, d in zip(c.serving, c.down, strict=True)]
    down = [d for c in cells for d in c.down]
    first = [f for c in cells for f in c.first]
    later = [d - f for c in cells for d, f in zip(c.down, c.first, strict=True)]
    lines += [
        "",
        "Where the time goes, all cells together: hang to the first failed try "
        f"{_s(first)} s (the wait for the next probe, then a try's wait of at most "
        f"{timeout} s); from there to the kill {_s(later)} s (tries until the deadline); "
        f"hang to killed {_s(down)} s, against K x interval = {INTERVAL * FAILURES} s from "
        f"the last answer; killed to serving {_s(recover)} s (RestartSec={RESTART_SEC}, "
        "systemd's own scheduling, then the start).",
        "",
    ]
    lines += info["notes"]
    return "\n".join(lines)


NOTES = [
    "How the probe meets the bound: it remembers when the service last answered (on",
    "CLOCK_MONOTONIC, in its runtime directory), and a probe that finds no answer keeps",
    "asking, a new connection each time, until the answer comes or K x interval has",
    "passed since that last answer; then it kills. The last answer came no later than",
    "the hang, so the kill comes at most K x interval after it, whichever probe happens",
    "to be running. A hung server still accepts connections (the kernel completes them",
    "into its listen backlog), so each try fails only when its wait runs out, and the",
    "last try's wait is cut to the deadline. The timer fires within `AccuracySec=100ms`.",
    "",
]


def shown_args(args: argparse.Namespace) -> list[str]:
    """The command line's options, with --write relative to the repository."""
    shown = ["--reps", str(args.reps), "--parallel", str(args.parallel)]
    if list(args.servers) != list(SERVERS):
        shown += ["--servers", *args.servers]
    if args.seed != "opskit":
        shown += ["--seed", args.seed]
    if args.write is not None:
        target = args.write.resolve()
        shown += [
            "--write",
            str(target.relative_to(ROOT) if target.is_relative_to(ROOT) else args.write),
        ]
    return shown


class Parser(argparse.ArgumentParser):
    """argparse, with a bad argument as one line on stderr (exit 2), no usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"bench_watchdog.py: {message}\n")


def main(argv: list[str] | None = None) -> int:
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5, help="repetitions per server and kind [5]")
    parser.add_argument("--servers", nargs="+", choices=SERVERS, default=list(SERVERS))
    parser.add_argument(
        "--parallel", type=int, choices=(1, 2), default=2, help="containers at a time [2]"
    )
    parser.add_argument("--seed", default="opskit", help="seed of the random phases")
    parser.add_argument("--write", type=Path, help="write the markdown report to this file")
    args = parser.parse_args(argv)
    if args.reps < 1:
        parser.error("--reps: at least 1")
    reason = nspawn.unavailable_reason()
    if reason:
        parser.exit(2, f"bench_watchdog.py: cannot boot a container: {reason}\n")
    wheelhouse = Path(os.environ.get("OPSKIT_WHEELHOUSE", WHEELHOUSE)).resolve()
    if not any(wheelhouse.glob("gunicorn-*")) or not any(wheelhouse.glob("uwsgi-*")):
        parser.exit(2, f"bench_watchdog.py: no wheelhouse at {wheelhouse}: run make wheelhouse\n")
    started = time.monotonic()
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    venv, built = nspawn.servers_venv(ROOT / "build" / "systemd-venvs", wheelhouse)
    if built:
        say(f"the servers' venv built in {built:.0f} s")
    with tempfile.TemporaryDirectory(prefix="opskit-bench-watchdog-") as tmp:
        work = Path(tmp)
        with ThreadPoolExecutor(max_workers=args.parallel) as pool:
            futures = [
                pool.submit(measure_server, s, args.reps, args.seed, work, venv)
                for s in args.servers
            ]
            try:
                results = [future.result() for future in futures]
            except (BenchError, nspawn.HarnessError) as exc:
                for future in futures:
                    future.cancel()
                sys.stderr.write(f"bench_watchdog.py: {exc}\n")
                return 1
    cells = [cell for found_cells, _ in results for cell in found_cells]
    found = results[0][1]
    info = {
        "reps": args.reps,
        "parallel": args.parallel,
        "seed": args.seed,
        "versions": found,
        "commit": _commit(),
        "date": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        "load_before": load_before,
        "load_after": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "elapsed": time.monotonic() - started,
        "command": shlex.join(["python", "bench/bench_watchdog.py", *shown_args(args)]),
        "notes": NOTES,
    }
    text = report(cells, info)
    sys.stdout.write(text)
    if args.write is not None:
        atomic_write(args.write, text, 0o644)
        sys.stdout.write(f"wrote {args.write}\n")
    return 0 if all(c.within_bound for c in cells) else 1


if __name__ == "__main__":
    sys.exit(main())
