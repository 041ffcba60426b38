"""Reload under steady load: failed requests and time to new code, naive vs native vs opskit.

For each server (gunicorn, uvicorn --workers 2, uWSGI with lazy-apps) and each way of
loading new code, the bench starts the bundled example app on a free loopback port,
drives it with CLIENTS threads at RATE requests/s each (a new connection per request,
GET /version), changes the VERSION file and reloads at RELOAD_AT seconds, and stops the
load at DURATION seconds. Ways:

- naive:  stop the server (SIGTERM, wait for it to exit), start it again;
- native: the server's best own mechanism, measured in the same run (gunicorn and
  uvicorn: SIGHUP to the master; uWSGI: chain reload, "c" into the master FIFO);
- opskit: the generated reload script (pidfile mode), preflight and verification included.

"new code after" is the time from the action (and, for the script, from its signal) to
the first response after which every response shows the new version. Everything is
bounded: CLIENTS x RATE x DURATION requests per run, loopback only.

    python bench/bench_reload.py                                   # 3 runs of 15 s per cell
    python bench/bench_reload.py --reps 1 --duration 8 --reload-at 3 --servers gunicorn
    python bench/bench_reload.py --write docs/benchmarks/reload.md
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import http.client
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from opskit.reload.render import render_reload  # noqa: E402
from opskit.spec import build_spec  # noqa: E402
from opskit.write import write  # noqa: E402

EXAMPLE = ROOT / "opskit" / "example"
BIN = Path(sys.executable).parent
SERVERS = ("gunicorn", "uvicorn", "uwsgi")
WAYS = ("naive", "native", "opskit")
NATIVE = {
    "gunicorn": "SIGHUP",
    "uvicorn": "SIGHUP (--workers 2)",
    "uwsgi": "chain reload (FIFO c, lazy-apps)",
}
TARGET_RATIO = 1.2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fetch(port: int, path: str = "/version") -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        body = response.read().decode().strip()
        if response.status != 200:
            raise OSError(f"HTTP {response.status}")
        return body
    finally:
        conn.close()


@dataclass
class Load:
    """CLIENTS threads, each sending RATE requests/s on a fixed schedule, for DURATION s."""

    port: int
    clients: int
    rate: float
    duration: float
    t0: float = 0.0
    samples: list[tuple[float, str | None]] = field(default_factory=list)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _client(self, index: int) -> None:
        count = int(self.duration * self.rate)
        offset = index / (self.clients * self.rate)
        mine: list[tuple[float, str | None]] = []
        for i in range(count):
            due = self.t0 + offset + i / self.rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            try:
                body: str | None = fetch(self.port)
            except (OSError, http.client.HTTPException) as exc:
                body = None
                with self.lock:
                    self.errors[type(exc).__name__] += 1
            mine.append((time.monotonic() - self.t0, body))
        with self.lock:
            self.samples.extend(mine)

    def start(self) -> list[threading.Thread]:
        self.t0 = time.monotonic() + 0.2
        threads = [
            threading.Thread(target=self._client, args=(i,), daemon=True)
            for i in range(self.clients)
        ]
        for thread in threads:
            thread.start()
        return threads


class Site:
    """An app directory, its generated script and ini, and the server processes started."""

    def __init__(self, server: str, root: Path) -> None:
        self.server = server
        self.dir = root / server
        self.dir.mkdir(parents=True)
        for name in ("demoapp.py", "VERSION"):
            shutil.copy2(EXAMPLE / name, self.dir / name)
        self.port = free_port()
        self.pidfile = self.dir / "server.pid"
        spec = build_spec(
            {
                "name": "bench",
                "server": server,
                "app": "demoapp:asgi" if server == "uvicorn" else "demoapp:app",
                "port": self.port,
                "workers": 2,
                "working_directory": str(self.dir),
                "venv": str(BIN.parent),
                "supervisor": "pidfile",
                "pidfile": str(self.pidfile),
                # The example app has both routes; the script checks the deploy id there.
                "health_path": "/health",
                "version_path": "/version",
            }
        )
        write(render_reload(spec), self.dir / "deploy", force=True)
        self.script = self.dir / "deploy" / "reload-bench.sh"
        self.procs: list[subprocess.Popen[bytes]] = []

    def argv(self) -> list[str]:
        if self.server == "gunicorn":
            return [
                str(BIN / "gunicorn"), "--workers", "2", "--bind", f"127.0.0.1:{self.port}",
                "--pid", str(self.pidfile), "--no-control-socket", "demoapp:app",
            ]  # fmt: skip
        if self.server == "uvicorn":
            return [
                str(BIN / "uvicorn"), "demoapp:asgi", "--host", "127.0.0.1",
                "--port", str(self.port), "--workers", "2",
            ]  # fmt: skip
        return [str(BIN / "uwsgi"), "--ini", str(self.dir / "deploy" / "bench.uwsgi.ini")]

    def start(self, *, wait: bool = True) -> None:
        log = (self.dir / "server.log").open("ab")
        proc = subprocess.Popen(
            self.argv(), cwd=self.dir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.procs.append(proc)
        if self.server == "uvicorn":
            self.pidfile.write_text(f"{proc.pid}\n")
        if not wait:
            return
        deadline = time.monotonic() + 60
        seen: set[str] = set()
        while len(seen) < 2:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"{self.server} did not start; see {self.dir}/server.log")
            with contextlib.suppress(OSError, http.client.HTTPException):
                seen.add(fetch(self.port, "/pid"))
            time.sleep(0.02)

    def master(self) -> int:
        return int(self.pidfile.read_text())

    def stop(self) -> None:
        """Graceful stop of the current master, waiting for it to exit."""
        proc = self.procs[-1]
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)

    def kill(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        self.procs.clear()


@dataclass(frozen=True)
class Run:
    """One reload under load."""

    server: str
    way: str
    requests: int
    failed: int
    new_after: float | None  # seconds from the action
    new_after_signal: float | None  # seconds from the signal (the script's preflight excluded)
    exit_code: int | None = None
    errors: tuple[tuple[str, int], ...] = ()


def new_code_time(samples: list[tuple[float, str | None]], since: float) -> float | None:
    """Seconds from ``since`` to the first response after which all responses are new."""
    last_not_new = since
    seen_new = False
    for t, body in sorted(samples):
        if t < since:
            continue
        if body == "v2":
            seen_new = True
        elif body is not None:
            last_not_new = t
            seen_new = False
    if not seen_new:
        return None
    first_new = min(t for t, body in samples if body == "v2" and t >= last_not_new)
    return first_new - since


def one_run(server: str, way: str, args: argparse.Namespace, root: Path) -> Run:
    site = Site(server, root)
    try:
        (site.dir / "VERSION").write_text("v1\n")
        site.start()
        load = Load(site.port, args.clients, args.rate, args.duration)
        threads = load.start()
        time.sleep(max(0.0, load.t0 + args.reload_at - time.monotonic()))
        (site.dir / "VERSION").write_text("v2\n")
        action = time.monotonic() - load.t0
        signalled = action
        code = None
        if way == "naive":
            site.stop()
            site.start(wait=False)
        elif way == "native" and server == "uwsgi":
            with (site.dir / "uwsgi.fifo").open("w") as fifo:
                fifo.write("c")
        elif way == "native":
            os.kill(site.master(), signal.SIGHUP)
        else:
            proc = subprocess.Popen(
                ["bash", str(site.script), "v2"], stderr=subprocess.PIPE, text=True
            )
            assert proc.stderr is not None
            for line in proc.stderr:
                if ": reload: " in line:
                    signalled = time.monotonic() - load.t0
                if ": FAILED: " in line:
                    print(f"  {server} opskit: {line.strip()}", file=sys.stderr)
            code = proc.wait()
            print(
                f"  script: signal at +{signalled - action:.2f} s, "
                f"exit {code} at +{time.monotonic() - load.t0 - action:.2f} s",
                file=sys.stderr,
            )
        for thread in threads:
            thread.join()
        samples = load.samples
        after = new_code_time(samples, action)
        after_signal = new_code_time(samples, signalled)
        return Run(
            server,
            way,
            len(samples),
            sum(1 for _, body in samples if body is None),
            after,
            after_signal,
            code,
            tuple(sorted(load.errors.items())),
        )
    finally:
        site.kill()


def _fmt(values: list[float | None]) -> str:
    if any(v is None for v in values):
        return "never"
    return f"{statistics.median([v for v in values if v is not None]):.2f}"


def report(runs: list[Run], args: argparse.Namespace, elapsed: float) -> str:
    lines = [
        "| server | way | runs | requests/run | failed (per run) | new code after, s (median) "
        "| from the signal, s (median) |",
        "|---|---|---|---|---|---|---|",
    ]
    verdicts = []
    for server in args.servers:
        native_times: list[float | None] = []
        for way in WAYS:
            cell = [r for r in runs if r.server == server and r.way == way]
            if not cell:
                continue
            label = {
                "naive": "stop, then start",
                "native": NATIVE[server],
                "opskit": "opskit script",
            }
            failed = ", ".join(str(r.failed) for r in cell)
            exits = {r.exit_code for r in cell if r.exit_code is not None}
            name = label[way] + (f" (exit {', '.join(map(str, sorted(exits)))})" if exits else "")
            requests = statistics.median(r.requests for r in cell)
            lines.append(
                f"| {server} | {name} | {len(cell)} | {requests:.0f} "
                f"| {failed} | {_fmt([r.new_after for r in cell])} "
                f"| {_fmt([r.new_after_signal for r in cell])} |"
            )
            if way == "native":
                native_times = [r.new_after for r in cell]
            if way == "opskit" and native_times and None not in native_times:
                native = statistics.median(t for t in native_times if t is not None)
                mine = [r.new_after_signal for r in cell]
                total = [r.new_after for r in cell]
                if None in mine or None in total:
                    verdicts.append(f"- {server}: the script's runs did not all reach new code")
                    continue
                ratio = statistics.median(t for t in mine if t is not None) / native
                ratio_total = statistics.median(t for t in total if t is not None) / native
                zero = all(r.failed == 0 for r in cell)
                verdicts.append(
                    f"- {server}: failed {'0 in every run' if zero else 'NOT 0'}; new code "
                    f"{ratio:.2f}x the native time counted from the signal "
                    f"({'within' if ratio <= TARGET_RATIO else 'over'} {TARGET_RATIO}x), "
                    f"{ratio_total:.2f}x counted from the script's start (preflight included)"
                )
    head = (
        f"{args.clients} clients x {args.rate:g} req/s, {args.duration:g} s per run, "
        f"reload at {args.reload_at:g} s, {args.reps} run(s) per cell; "
        f"{datetime.now(timezone.utc):%Y-%m-%d}, Python {platform.python_version()}, "
        f"gunicorn {version('gunicorn')}, uvicorn {version('uvicorn')}, uWSGI {version('uwsgi')}, "
        f"{os.cpu_count()} CPUs (shared), {elapsed:.0f} s in all, load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end."
    )
    kinds: collections.Counter[str] = collections.Counter()
    for r in runs:
        for kind, count in r.errors:
            kinds[f"{r.server} {r.way}: {kind}"] += count
    out = [head, "", *lines, ""]
    if verdicts:
        out += [*verdicts, ""]
    if kinds:
        out += ["Failed requests by error, all runs:", ""]
        out += [f"- {k}: {n}" for k, n in sorted(kinds.items())] + [""]
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", nargs="+", choices=SERVERS, default=list(SERVERS))
    parser.add_argument("--ways", nargs="+", choices=WAYS, default=list(WAYS))
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rate", type=float, default=100.0, help="requests/s per client")
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--reload-at", type=float, default=5.0)
    parser.add_argument("--write", type=Path, help="also write the result (markdown) here")
    args = parser.parse_args()
    if not 0 < args.reload_at < args.duration or args.reps < 1:
        parser.error("need 0 < --reload-at < --duration and --reps >= 1")
    started = time.monotonic()
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="bench-reload-") as tmp:
        for rep in range(args.reps):
            # Interleave the ways, so a burst of load on a shared machine hits all of them.
            for server in args.servers:
                for way in args.ways:
                    run = one_run(server, way, args, Path(tmp) / f"{rep}-{way}")
                    print(
                        f"{server:9} {way:7} run {rep + 1}: {run.failed}/{run.requests} failed, "
                        f"new code after {run.new_after}",
                        file=sys.stderr,
                    )
                    runs.append(run)
    text = report(runs, args, time.monotonic() - started)
    print(text)
    if args.write:
        args.write.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
