"""What the reload script's canary costs, and what it keeps out, against the same run's baseline.

For each server (gunicorn, uvicorn --workers 2, uWSGI with lazy-apps) in pidfile mode:

- cost: the script's time for a good deploy with the canary and with --no-canary
  (alternating, REPS each), against the server's own cold start measured in the same
  run (a fresh server process until /health answers). The target: the canary adds at
  most 1.5x the cold start;
- bad deploys under load: new code broken at import, and new code that imports but
  whose every request raises, each reloaded with the canary while CLIENTS threads send
  RATE requests/s each to /version. The target: 0 failed requests, exit 1.

    python bench/bench_canary.py                       # print the result
    python bench/bench_canary.py --reps 3 --servers gunicorn
    python bench/bench_canary.py --write docs/benchmarks/canary.md
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_reload import SERVERS, Load, Site, fetch

from opskit.reload.render import render_reload
from opskit.spec import build_spec
from opskit.write import atomic_write, write

TARGET = 1.5
BROKEN_AT_IMPORT = '\nraise RuntimeError("a broken deploy")\n'
BROKEN_LAZILY = '\n\ndef _respond(path):\n    raise RuntimeError("a handler that raises")\n'


def no_canary_script(site: Site) -> Path:
    """The same script as the site's, generated with canary = false."""
    spec = build_spec(
        {
            "name": "bench",
            "server": site.server,
            "app": "demoapp:asgi" if site.server == "uvicorn" else "demoapp:app",
            "port": site.port,
            "workers": 2,
            "working_directory": str(site.dir),
            "venv": str(Path(sys.executable).parent.parent),
            "supervisor": "pidfile",
            "pidfile": str(site.pidfile),
            "health_path": "/health",
            "version_path": "/version",
        }
    )
    write(render_reload(replace(spec, canary=False)), site.dir / "plain", force=True)
    return site.dir / "plain" / "reload-bench.sh"


def run_script(script: Path, version: str, tmp: Path) -> tuple[int, float, str]:
    """Run the script; its exit code, the seconds of its preflight step, and its stderr.

    The step is timed from the script's own lines as they arrive: from "canary: a
    throwaway ..." (or "preflight: importing ...") to the line after it ends. The
    verification after the signal varies by a second from run to run (uvicorn restarts
    its workers), which would drown the difference in whole-script times.
    """
    proc = subprocess.Popen(
        ["bash", str(script), version],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "RELOAD_TIMEOUT": "60", "TMPDIR": str(tmp)},
    )
    assert proc.stderr is not None
    lines: list[tuple[float, str]] = [(time.monotonic(), line) for line in proc.stderr]
    proc.wait(timeout=180)
    start = next((t for t, line in lines if "canary: a throwaway" in line
                  or "preflight: importing" in line), None)  # fmt: skip
    end = next((t for t, line in lines if start is not None and t > start
                and ("stopped" in line or "reload:" in line)), None)  # fmt: skip
    step = (end - start) if start is not None and end is not None else float("nan")
    return proc.returncode, step, "".join(line for _, line in lines)


def cold_start(site: Site) -> float:
    """A fresh server of the site's kind (own port) until /health answers: seconds."""
    probe = Site.__new__(Site)
    probe.__dict__.update(site.__dict__)
    probe.port = _free_port()
    probe.pidfile = site.dir / "cold.pid"
    probe.procs = []
    argv = [a.replace(str(site.port), str(probe.port)) for a in site.argv()]
    argv = [a.replace(str(site.pidfile), str(probe.pidfile)) for a in argv]
    if site.server == "uwsgi":
        ini = site.dir / "deploy" / "bench.uwsgi.ini"
        cold_ini = site.dir / "cold.uwsgi.ini"
        text = ini.read_text().replace(str(site.port), str(probe.port))
        text = text.replace(str(site.pidfile), str(probe.pidfile)).replace(
            "uwsgi.fifo", "cold.fifo"
        )
        cold_ini.write_text(text)
        argv = [argv[0], "--ini", str(cold_ini)]
    started = time.monotonic()
    proc = subprocess.Popen(
        argv, cwd=site.dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        while True:
            with contextlib.suppress(OSError, http.client.HTTPException):
                if fetch(probe.port, "/health") == "ok":
                    return time.monotonic() - started
            if proc.poll() is not None or time.monotonic() - started > 60:
                raise RuntimeError(f"cold start of {site.server} failed")
            time.sleep(0.01)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        proc.wait(timeout=10)


def _free_port() -> int:
    from bench_reload import free_port

    return free_port()


def measure(server: str, reps: int, clients: int, rate: float, root: Path) -> dict[str, object]:
    site = Site(server, root)
    plain = no_canary_script(site)
    tmp = root / f"tmp-{server}"
    tmp.mkdir()
    site.start()
    cold: list[float] = []
    with_canary: list[float] = []
    without: list[float] = []
    version = 1
    try:
        for i in range(reps):
            cold.append(cold_start(site))
            order = [(site.script, with_canary), (plain, without)]
            for script, into in order if i % 2 == 0 else reversed(order):
                version += 1
                # A fresh server per deploy: a second uWSGI chain reload of one master
                # stalls on a worker (see docs/benchmarks/canary.md), whatever the canary.
                site.kill()
                site.start()
                (site.dir / "VERSION").write_text(f"v{version}\n")
                code, seconds, err = run_script(script, f"v{version}", tmp)
                if code != 0:
                    raise RuntimeError(f"{server}: a good deploy failed: {err}")
                into.append(seconds)
        bad = {}
        good_source = (site.dir / "demoapp.py").read_text()
        cases = (
            ("import", BROKEN_AT_IMPORT, site.script),
            ("lazy", BROKEN_LAZILY, site.script),
            # The baseline: the same lazy breakage through the script without the canary.
            ("lazy-no-canary", BROKEN_LAZILY, plain),
        )
        for kind, breakage, script in cases:
            site.kill()
            site.start()
            current = fetch(site.port, "/version")
            (site.dir / "VERSION").write_text("v-broken\n")
            (site.dir / "demoapp.py").write_text(good_source + breakage)
            load = Load(site.port, clients, rate, 5.0)
            threads = load.start()
            time.sleep(1.0)
            code, _, _ = run_script(script, "v-broken", tmp)
            for thread in threads:
                thread.join(30)
            failed = sum(1 for _, body in load.samples if body != current)
            bad[kind] = {"exit": code, "requests": len(load.samples), "failed": failed}
            (site.dir / "demoapp.py").write_text(good_source)
            (site.dir / "VERSION").write_text(f"{current}\n")
    finally:
        site.kill()
    overhead = statistics.median(with_canary) - statistics.median(without)
    return {
        "server": server,
        "cold": cold,
        "with": with_canary,
        "without": without,
        "overhead": overhead,
        "ratio": overhead / statistics.median(cold),
        "bad": bad,
    }


def _ms(values: list[float]) -> str:
    return (
        f"{statistics.median(values) * 1000:.0f} ({min(values) * 1000:.0f}-"
        f"{max(values) * 1000:.0f})"
    )


def report(results: list[dict], reps: int, clients: int, rate: float) -> str:
    load = os.getloadavg()
    lines = [
        "# The reload canary: its cost and what it keeps out",
        "",
        "bench/bench_canary.py, pidfile mode, the bundled example app. Measured "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC: Python {platform.python_version()}; "
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, load average "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end.",
        "",
        f"Cost: {reps} good deploys with the canary and {reps} with `--no-canary`, "
        "alternating; the script's preflight step is timed from its own lines (the canary, "
        "or the import check it replaces), against the server's own cold start (a fresh "
        "server until /health answers) in the same run. Times in ms, median (min-max).",
        "",
        "| server | cold start | step, canary | step, --no-canary (import check) | canary adds "
        "| ÷ cold start |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        verdict = "within" if r["ratio"] <= TARGET else "OVER"
        lines.append(
            f"| {r['server']} | {_ms(r['cold'])} | {_ms(r['with'])} | {_ms(r['without'])} "
            f"| {r['overhead'] * 1000:.0f} | **{r['ratio']:.2f}x** ({verdict} {TARGET}x) |"
        )
    lines += [
        "",
        f"Bad deploys under load ({clients} clients x {rate:g} req/s on /version, a new "
        "connection per request), reloaded with the canary; failed = a request that got an "
        "error or anything but the running version:",
        "",
        "| server | broken at import | broken lazily (every request raises) "
        "| broken lazily, `--no-canary` (baseline) |",
        "|---|---|---|---|",
    ]
    for r in results:
        cells = [
            f"exit {b['exit']}, {b['failed']} of {b['requests']} failed"
            for b in (r["bad"]["import"], r["bad"]["lazy"], r["bad"]["lazy-no-canary"])
        ]
        lines.append(f"| {r['server']} | {cells[0]} | {cells[1]} | {cells[2]} |")
    lines += [
        "",
        "Each deploy starts from a fresh server: on uWSGI 2.0.31 a second chain reload of",
        "the same master, seconds after the first, stalls with one worker of the first",
        "never replaced (the script then fails its verification after RELOAD_TIMEOUT),",
        "with or without the canary; that belongs to the work on hung services.",
        "",
        "The cold start includes the server's own Python start and the app's import; the",
        "canary's cost is a cold start of a one-worker server plus the script's polling",
        "(every 0.05 s) and its stop. `--no-canary` still imports the code once",
        "(gunicorn `--check-config`, or an import with the app's interpreter), which is",
        "why the difference, not the whole canary step, is the number to compare.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--servers", nargs="+", choices=SERVERS, default=list(SERVERS))
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rate", type=float, default=25.0)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="opskit-bench-canary-") as tmp:
        results = [measure(s, args.reps, args.clients, args.rate, Path(tmp)) for s in args.servers]
    text = report(results, args.reps, args.clients, args.rate)
    sys.stdout.write(text)
    if args.write:
        atomic_write(args.write, text, 0o644)
    ok = all(r["ratio"] <= TARGET for r in results) and all(
        r["bad"][k]["failed"] == 0 and r["bad"][k]["exit"] == 1
        for r in results
        for k in ("import", "lazy")
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
