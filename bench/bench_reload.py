"""Reload under steady load: failed requests and time to new code, naive vs native vs opskit.

For each server (gunicorn, uvicorn --workers 2, uWSGI with lazy-apps) and each way of
loading new code, the bench starts the bundled example app on a free loopback port,
drives it with CLIENTS threads at RATE requests/s each (GET /version), changes the
VERSION file and reloads at RELOAD_AT seconds, and stops the load at DURATION seconds.

Clients (--client):

- fresh:     a new connection per request;
- keepalive: each thread keeps ONE http.client connection and reuses it, as a urllib3
  pool does: before reusing it, a connection the server closed cleanly while it was idle
  (readable: EOF) is replaced, and so is one after an answer that said Connection:
  close. A reset, refusal, timeout or missing answer on a request is a failure; nothing
  is retried.

Settings (--settings): "opskit", the server command line opskit generates now, and
"before", the same without the Connection: close settings (uvicorn's
--header connection:close, uWSGI's add-header) and without uvicorn's draining HTTP
protocol (--http opskit_uvicorn:..., opskit.systemd.uvicorn), as generated before them.
gunicorn's sync workers close every connection and say so in both. "header" (uvicorn
only): Connection: close without the protocol, what opskit generated in between, whose
shutdown closes a connection that uvicorn has accepted but not yet read, with the
request already in it. --burn N runs N CPU burners
(``while 1: pass``) for the whole bench, so the servers run under contention.

Ways:

- naive:  stop the server (SIGTERM, wait for it to exit), start it again;
- native: the server's best own mechanism, measured in the same run (gunicorn and
  uvicorn: SIGHUP to the master; uWSGI: chain reload, "c" into the master FIFO);
- opskit: the generated reload script (pidfile mode), preflight and verification included.

"new code after" is the time from the action (and, for the script, from its signal) to
the first response after which every response shows the new version. Everything is
bounded: CLIENTS x RATE x DURATION requests per run, loopback only.

    python bench/bench_reload.py                                   # 3 runs of 15 s per cell
    python bench/bench_reload.py --client keepalive --burn 2 --reps 5 --ways opskit \
        --settings before opskit                                   # the keep-alive section
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
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from opskit.reload.render import render_reload  # noqa: E402
from opskit.spec import build_spec  # noqa: E402
from opskit.systemd.units import server_unit  # noqa: E402
from opskit.systemd.uvicorn import PROTOCOL as uvicorn_protocol  # noqa: E402
from opskit.write import write  # noqa: E402

EXAMPLE = ROOT / "opskit" / "example"
BIN = Path(sys.executable).parent
SERVERS = ("gunicorn", "uvicorn", "uwsgi")
WAYS = ("naive", "native", "opskit")
CLIENTS = ("fresh", "keepalive")
SETTINGS = ("before", "opskit", "header")
#: What "before" leaves out: the options that make uvicorn and uWSGI say Connection: close.
CLOSE_ARGS = {"uvicorn": ("--header", "connection:close"), "uwsgi": ("add-header",)}
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


class KeepAlive:
    """One client's single HTTP/1.1 connection, reused for every request while it may be.

    Like urllib3's pool: before a request the idle connection is checked, and one the
    server has closed (the socket is readable while no answer is due: EOF) is replaced
    by a new one; so is a connection whose last answer said Connection: close. A request
    that then fails (reset, refused, timeout, no answer) is not retried.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn: http.client.HTTPConnection | None = None
        self.opened = 0

    def _idle_closed(self) -> bool:
        sock = self.conn.sock if self.conn is not None else None
        if sock is None:
            return True
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable)

    def fetch(self) -> str:
        if self.conn is not None and self._idle_closed():
            self.close()
        if self.conn is None:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            self.opened += 1
            conn.connect()
            self.conn = conn
        try:
            self.conn.request("GET", "/version")
            response = self.conn.getresponse()
            body = response.read().decode().strip()
        except BaseException:
            self.close()
            raise
        if response.will_close:
            self.close()
        if response.status != 200:
            raise OSError(f"HTTP {response.status}")
        return body

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


@dataclass
class Load:
    """CLIENTS threads, each sending RATE requests/s on a fixed schedule, for DURATION s."""

    port: int
    clients: int
    rate: float
    duration: float
    client: str = "fresh"
    t0: float = 0.0
    samples: list[tuple[float, str | None]] = field(default_factory=list)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    connections: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _client(self, index: int) -> None:
        count = int(self.duration * self.rate)
        offset = index / (self.clients * self.rate)
        mine: list[tuple[float, str | None]] = []
        keep = KeepAlive(self.port) if self.client == "keepalive" else None
        for i in range(count):
            due = self.t0 + offset + i / self.rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            try:
                body: str | None = keep.fetch() if keep is not None else fetch(self.port)
            except (OSError, http.client.HTTPException) as exc:
                body = None
                with self.lock:
                    self.errors[type(exc).__name__] += 1
            mine.append((time.monotonic() - self.t0, body))
        if keep is not None:
            keep.close()
        with self.lock:
            self.samples.extend(mine)
            self.connections += keep.opened if keep is not None else count

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

    def __init__(self, server: str, root: Path, settings: str = "opskit") -> None:
        self.server = server
        self.settings = settings
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
                # "before": uvicorn as opskit ran it before it said Connection: close.
                "keep_alive": settings == "before",
            }
        )
        write(render_reload(spec), self.dir / "deploy", force=True)
        self.script = self.dir / "deploy" / "reload-bench.sh"
        self.ini = self.dir / "deploy" / "bench.uwsgi.ini"
        if server == "uwsgi" and settings == "before":
            lines = self.ini.read_text().splitlines(keepends=True)
            kept = [line for line in lines if not line.startswith("add-header = ")]
            assert len(kept) == len(lines) - 1, "no add-header line in the ini"
            self.ini.write_text("".join(kept))
        # uvicorn as the unit runs it (pidfile mode: the same command line, by hand).
        self.uvicorn = list(server_unit(spec).argv)
        if server == "uvicorn":
            has_close = "connection:close" in self.uvicorn
            assert has_close == (settings != "before"), self.uvicorn
            if settings != "opskit":
                at = self.uvicorn.index("--http")
                assert self.uvicorn[at + 1] == uvicorn_protocol, self.uvicorn
                del self.uvicorn[at : at + 2]
        self.procs: list[subprocess.Popen[bytes]] = []

    def argv(self) -> list[str]:
        if self.server == "gunicorn":
            return [
                str(BIN / "gunicorn"), "--workers", "2", "--bind", f"127.0.0.1:{self.port}",
                "--pid", str(self.pidfile), "--no-control-socket", "demoapp:app",
            ]  # fmt: skip
        if self.server == "uvicorn":
            return self.uvicorn
        return [str(BIN / "uwsgi"), "--ini", str(self.ini)]

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
    settings: str
    requests: int
    failed: int
    new_after: float | None  # seconds from the action
    new_after_signal: float | None  # seconds from the signal (the script's preflight excluded)
    exit_code: int | None = None
    errors: tuple[tuple[str, int], ...] = ()
    connections: int = 0


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


def one_run(server: str, way: str, settings: str, args: argparse.Namespace, root: Path) -> Run:
    site = Site(server, root, settings)
    try:
        (site.dir / "VERSION").write_text("v1\n")
        site.start()
        load = Load(site.port, args.clients, args.rate, args.duration, args.client)
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
            settings,
            len(samples),
            sum(1 for _, body in samples if body is None),
            after,
            after_signal,
            code,
            tuple(sorted(load.errors.items())),
            load.connections,
        )
    finally:
        site.kill()


def _fmt(values: list[float | None]) -> str:
    if any(v is None for v in values):
        return "never"
    return f"{statistics.median([v for v in values if v is not None]):.2f}"


def report(runs: list[Run], args: argparse.Namespace, elapsed: float) -> str:
    lines = [
        "| server | settings | way | runs | requests/run | connections/run "
        "| failed (per run) | new code after, s (median) | from the signal, s (median) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    verdicts = []
    label = {"naive": "stop, then start", "opskit": "opskit script"}
    for server in args.servers:
        for settings in SETTINGS:
            native_times: list[float | None] = []
            for way in WAYS:
                cell = [r for r in runs if (r.server, r.settings, r.way) == (server, settings, way)]
                if not cell:
                    continue
                failed = ", ".join(str(r.failed) for r in cell)
                exits = {r.exit_code for r in cell if r.exit_code is not None}
                name = label.get(way, NATIVE[server])
                name += f" (exit {', '.join(map(str, sorted(exits)))})" if exits else ""
                requests = statistics.median(r.requests for r in cell)
                connections = statistics.median(r.connections for r in cell)
                lines.append(
                    f"| {server} | {settings} | {name} | {len(cell)} | {requests:.0f} "
                    f"| {connections:.0f} | {failed} | {_fmt([r.new_after for r in cell])} "
                    f"| {_fmt([r.new_after_signal for r in cell])} |"
                )
                zero = all(r.failed == 0 for r in cell)
                total_failed = sum(r.failed for r in cell)
                verdict = (
                    f"- {server}, {settings} settings, {label.get(way, 'native')}: failed "
                    + ("0 in every run" if zero else f"NOT 0 ({total_failed} in all)")
                    + f" of {len(cell)}"
                )
                if way == "native":
                    native_times = [r.new_after for r in cell]
                if way == "opskit" and native_times and None not in native_times:
                    native = statistics.median(t for t in native_times if t is not None)
                    mine = [r.new_after_signal for r in cell]
                    if None not in mine and native > 0:
                        ratio = statistics.median(t for t in mine if t is not None) / native
                        verdict += (
                            f"; new code {ratio:.2f}x the native time counted from the signal "
                            f"({'within' if ratio <= TARGET_RATIO else 'over'} {TARGET_RATIO}x)"
                        )
                if way != "naive":
                    verdicts.append(verdict)
    burn = f", {args.burn} CPU burner(s) running" if args.burn else ""
    head = (
        f"{args.clients} {args.client} clients x {args.rate:g} req/s, {args.duration:g} s per "
        f"run, reload at {args.reload_at:g} s, {args.reps} run(s) per cell{burn}; "
        f"{datetime.now(timezone.utc):%Y-%m-%d}, Python {platform.python_version()}, "
        f"gunicorn {version('gunicorn')}, uvicorn {version('uvicorn')}, uWSGI {version('uwsgi')}, "
        f"{os.cpu_count()} CPUs (shared), {elapsed:.0f} s in all, load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end."
    )
    kinds: collections.Counter[str] = collections.Counter()
    for r in runs:
        for kind, count in r.errors:
            kinds[f"{r.server} {r.settings} {r.way}: {kind}"] += count
    out = [head, "", *lines, ""]
    if verdicts:
        out += [*verdicts, ""]
    if kinds:
        out += ["Failed requests by error, all runs:", ""]
        out += [f"- {k}: {n}" for k, n in sorted(kinds.items())] + [""]
    return "\n".join(out)


@contextlib.contextmanager
def burners(count: int) -> Iterator[None]:
    """COUNT processes that spin on a core each while the bench runs, killed after it."""
    procs = [
        subprocess.Popen([sys.executable, "-c", "while 1: pass"], start_new_session=True)
        for _ in range(count)
    ]
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def cost(rounds: int, requests: int, root: Path) -> str:
    """What Connection: close costs uvicorn: one client's sequential requests, per request.

    The same server command line with and without --header connection:close ("opskit"
    and "before"), each started once; then ``rounds`` alternating rounds of ``requests``
    requests, a keep-alive client (one reused connection while the server allows it).
    """
    per: dict[str, list[float]] = {"before": [], "opskit": []}
    sites = {settings: Site("uvicorn", root / f"cost-{settings}", settings) for settings in per}
    try:
        for site in sites.values():
            (site.dir / "VERSION").write_text("v1\n")
            site.start()
        for _ in range(rounds):
            for settings, site in sites.items():
                client = KeepAlive(site.port)
                began = time.perf_counter()
                for _ in range(requests):
                    client.fetch()
                per[settings].append((time.perf_counter() - began) / requests)
                client.close()
    finally:
        for site in sites.values():
            site.kill()
    ratios = sorted(c / k for c, k in zip(per["opskit"], per["before"], strict=True))
    return (
        f"uvicorn --workers 2, one sequential client, {rounds} alternating rounds of "
        f"{requests} requests: keep-alive (before) {statistics.median(per['before']) * 1e6:.0f} "
        f"us per request, Connection: close (opskit) "
        f"{statistics.median(per['opskit']) * 1e6:.0f} us; ratio close / keep-alive per round "
        f"median {statistics.median(ratios):.2f} (range {ratios[0]:.2f}-{ratios[-1]:.2f}); "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}."
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", nargs="+", choices=SERVERS, default=list(SERVERS))
    parser.add_argument("--ways", nargs="+", choices=WAYS, default=list(WAYS))
    parser.add_argument("--settings", nargs="+", choices=SETTINGS, default=["opskit"])
    parser.add_argument("--client", choices=CLIENTS, default="fresh")
    parser.add_argument("--burn", type=int, default=0, help="CPU burners to run meanwhile")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rate", type=float, default=100.0, help="requests/s per client")
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--reload-at", type=float, default=5.0)
    parser.add_argument("--write", type=Path, help="also write the result (markdown) here")
    parser.add_argument(
        "--cost", action="store_true", help="only measure what Connection: close costs uvicorn"
    )
    args = parser.parse_args()
    if args.cost:
        with tempfile.TemporaryDirectory(prefix="bench-reload-") as tmp, burners(args.burn):
            print(cost(max(args.reps, 5), 2000, Path(tmp)))
        return 0
    if not 0 < args.reload_at < args.duration or args.reps < 1 or not 0 <= args.burn <= 64:
        parser.error("need 0 < --reload-at < --duration, --reps >= 1 and 0 <= --burn <= 64")
    started = time.monotonic()
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="bench-reload-") as tmp, burners(args.burn):
        for rep in range(args.reps):
            # Interleave the cells, so a burst of load on a shared machine hits all of them.
            for server in args.servers:
                for settings in args.settings:
                    if settings == "before" and server not in CLOSE_ARGS:
                        continue  # gunicorn's command line is the same in both
                    if settings == "header" and server != "uvicorn":
                        continue
                    for way in args.ways:
                        root = Path(tmp) / f"{rep}-{settings}-{way}"
                        run = one_run(server, way, settings, args, root)
                        print(
                            f"{server:9} {settings:6} {way:7} run {rep + 1}: "
                            f"{run.failed}/{run.requests} failed {dict(run.errors)}, "
                            f"{run.connections} connections, new code after {run.new_after}",
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
