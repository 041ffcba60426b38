"""The in-place window: what a running server sees while ``opskit upgrade`` installs.

An in-place upgrade replaces a package's files under the running workers: pip moves the
old files aside, writes the new ones one by one, then the new metadata; uv links them
from its cache. A worker that reads one of those files in between (a lazy import, a
template, a translation catalogue, ``importlib.metadata``) sees neither version, or
both. Releases avoid it (docs/deploy.md): the venv being installed is never the one
that serves.

The bench runs gunicorn (2 sync workers) from a throwaway venv on the host, with a
django-size package (bench_upgrade's make-up: 3,674 files, 23.7 MB) that the app reads
on every request: its metadata version and five of its files, spread over the package.
A request answers ``ok`` when all six name one version, ``mixed`` when they name two,
``error`` when one is missing. Four clients keep asking, as fast as the server answers.
Per repetition, under that load:

- **steady**: 2 s with nothing installed, the baseline (every answer should be ``ok``);
- **pip**: ``opskit upgrade probe==V`` (pip) moving the package to its other version;
- **uv**: the same with ``--installer uv``.

Reported per way: the answers that were not ``ok``, against all answers during the
upgrade, and the window from the first such answer to the last, against the upgrade's
duration; medians and ranges over the repetitions.

    python bench/bench_window.py --reps 5
    python bench/bench_window.py --reps 5 --write docs/benchmarks/window.md

Needs the wheelhouse of ``make wheelhouse`` (gunicorn, offline) and uv (the test extra).
"""

from __future__ import annotations

import http.client
import os
import platform
import shlex
import socket
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_upgrade import SIZES, make_wheel, opskit_argv  # noqa: E402
from opskit.upgrade.installer import find_uv  # noqa: E402

WHEELHOUSE = ROOT / "build" / "wheelhouse"
CLIENTS = 4
STEADY = 2.0
#: Files the app reads on every request, spread over the package's make-up.
READS = ("py/m0.py", "py/m440.py", "py/m884.py", "html/m0.html", "po/m1225.po")

APP = """
import importlib.metadata
import pathlib

import probe

ROOT = pathlib.Path(probe.__file__).parent
READS = {reads!r}


def _version(path):
    # py: the stdlib module ends with "# VERSION i"; text: "text VERSION text ...".
    data = (ROOT / path).read_text(errors="replace")
    return data.rstrip().rsplit("# ", 1)[1].split()[0] if path.endswith(".py") else data.split()[1]


def app(environ, start_response):
    try:
        seen = {{importlib.metadata.version("probe")}} | {{_version(p) for p in READS}}
        body = ("ok " if len(seen) == 1 else "mixed ") + " ".join(sorted(seen))
    except Exception as exc:  # what a worker would have raised mid-request
        body = f"error {{type(exc).__name__}}"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Connection", "close")])
    return [body.encode()]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Load:
    """CLIENTS threads asking until stopped; every answer kept with its time."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.answers: list[tuple[float, str]] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._ask, daemon=True) for _ in range(CLIENTS)]

    def _ask(self) -> None:
        while not self.stop.is_set():
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                conn.request("GET", "/")
                kind = conn.getresponse().read().decode().split()[0]
                conn.close()
            except OSError as exc:
                kind = f"failed-{type(exc).__name__}"
            with self.lock:
                self.answers.append((time.monotonic(), kind))

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=15)

    def between(self, start: float, end: float) -> list[tuple[float, str]]:
        with self.lock:
            return [(t, k) for t, k in self.answers if start <= t <= end]


def _count(answers: list[tuple[float, str]], start: float, took: float) -> dict[str, Any]:
    bad = [t for t, k in answers if k != "ok"]
    kinds: dict[str, int] = {}
    for _, kind in answers:
        kinds[kind] = kinds.get(kind, 0) + 1
    return {
        "answers": len(answers),
        "bad": len(bad),
        "kinds": kinds,
        "window": (max(bad) - min(bad)) if bad else 0.0,
        "took": took,
    }


def run(reps: int, work: Path) -> dict[str, Any]:
    uv = find_uv()
    if uv is None:
        raise SystemExit("bench_window.py: uv is not installed (pip install -e '.[test]')")
    wheels = work / "wheels"
    wheels.mkdir()
    for version in ("1.0", "2.0"):
        make_wheel(wheels, "probe", version, SIZES["django"])
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    offline = ["--no-index", "--find-links", str(WHEELHOUSE), "--find-links", str(wheels)]
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", *offline,
         "gunicorn", "probe==1.0"],
        check=True,
    )  # fmt: skip
    appdir = work / "app"
    appdir.mkdir()
    (appdir / "windowapp.py").write_text(APP.format(reads=READS))
    port = free_port()
    server = subprocess.Popen(
        [str(venv / "bin" / "gunicorn"), "--chdir", str(appdir), "-w", "2", "-b",
         f"127.0.0.1:{port}", "--log-level", "warning", "windowapp:app"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    env = {**os.environ, "UV_CACHE_DIR": str(work / "uv-cache")}
    result: dict[str, Any] = {"steady": [], "pip": [], "uv": []}
    version = "1.0"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("bench_window.py: gunicorn did not start") from None
                time.sleep(0.1)
        with Load(port) as load:
            time.sleep(1.0)
            for rep in range(1, reps + 1):
                start = time.monotonic()
                time.sleep(STEADY)
                result["steady"].append(
                    _count(load.between(start, time.monotonic()), start, STEADY)
                )
                ways = ["pip", "uv"] if rep % 2 else ["uv", "pip"]
                for way in ways:
                    version = "2.0" if version == "1.0" else "1.0"
                    argv = [*opskit_argv(), "upgrade", f"probe=={version}", "--python", python,
                            "--no-index", "--find-links", str(wheels), "--no-lock"]  # fmt: skip
                    if way == "uv":
                        argv += ["--installer", "uv"]
                    start = time.monotonic()
                    done = subprocess.run(argv, env=env, capture_output=True, text=True)
                    end = time.monotonic()
                    if done.returncode != 0:
                        raise SystemExit(f"bench_window.py: {shlex.join(argv)}:\n{done.stderr}")
                    time.sleep(0.5)  # answers that were already in flight
                    result[way].append(_count(load.between(start, end + 0.5), start, end - start))
                sys.stderr.write(
                    f"rep {rep}/{reps}: "
                    + ", ".join(
                        f"{way} {result[way][-1]['bad']} of {result[way][-1]['answers']} not ok "
                        f"in {result[way][-1]['took']:.2f} s"
                        for way in ("steady", "pip", "uv")
                    )
                    + "\n"
                )
    finally:
        server.terminate()
        server.wait(timeout=30)
    result["python"] = platform.python_version()
    return result


def _s(values: list[float], fmt: str = "{:.2f}") -> str:
    low, high = fmt.format(min(values)), fmt.format(max(values))
    return f"{fmt.format(statistics.median(values))} ({low}-{high})"


def report(result: dict[str, Any], reps: int, elapsed: float, command: str) -> str:
    rows = []
    for way, label in (("steady", "steady, nothing installed (baseline)"),
                       ("pip", "opskit upgrade, pip"), ("uv", "opskit upgrade, uv")):  # fmt: skip
        runs = result[way]
        share = [r["bad"] / r["answers"] * 100 if r["answers"] else 0.0 for r in runs]
        window = [r["window"] / r["took"] * 100 if r["took"] else 0.0 for r in runs]
        kinds: dict[str, int] = {}
        for r in runs:
            for kind, n in r["kinds"].items():
                kinds[kind] = kinds.get(kind, 0) + n
        rows.append(
            f"| {label} | {_s([r['took'] for r in runs])} | "
            f"{_s([float(r['bad']) for r in runs], '{:.0f}')} of "
            f"{_s([float(r['answers']) for r in runs], '{:.0f}')} | "
            f"{_s(share, '{:.1f}')} % | {_s([r['window'] for r in runs])} | "
            f"{_s(window, '{:.0f}')} % | "
            + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items()))
            + " |"
        )
    return "\n".join(
        [
            "# The in-place window: what a running server sees during an upgrade",
            "",
            "See bench/bench_window.py's docstring: gunicorn (2 sync workers) serving from",
            "a venv whose django-size package (3,674 files, 23.7 MB) `opskit upgrade`",
            "moves between two versions in place, while 4 clients ask as fast as it",
            "answers. Each answer reads the package's metadata version and five of its",
            "files: `ok` when all name one version, `mixed` when two, `error` when one",
            "is missing.",
            "",
            "Command line (from the repository root):",
            "",
            f"    {command}",
            "",
            "## Result",
            "",
            f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; Python "
            f"{result['python']}; {platform.system()} {platform.release()}, "
            f"{os.cpu_count()} CPUs shared with the clients and other work, load average "
            f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end; {elapsed:.0f} s in "
            "all.",
            "",
            f"Median (min-max) of {reps} repetitions; the window is from the first answer",
            "that was not `ok` to the last:",
            "",
            "| | seconds | answers not ok | share | window, s | window / duration | "
            "answers by kind, all repetitions |",
            "|---|---|---|---|---|---|---|",
            *rows,
            "",
        ]
    )


def _unavailable() -> str | None:
    if not any(WHEELHOUSE.glob("gunicorn-*")):
        return "no wheelhouse: run make wheelhouse"
    return None


def main() -> int:
    from bench.reps import main as bench_main

    return bench_main("bench_window.py", __doc__ or "", run, report, _unavailable)


if __name__ == "__main__":
    sys.exit(main())
