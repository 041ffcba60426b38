"""Start-up time of `opskit systemd` against the floor of importing typer and jinja2.

Every opskit command pays for Python, typer and jinja2 before it does any work, so the
bare `python -c "import typer, jinja2"` is the floor; the target is opskit's median at
most 1.3 times that floor's median, both measured in the same run with the same
interpreter. The two commands alternate (so a burst of load on a shared machine hits both)
after a few warm-up runs each (so both read warm bytecode and page caches).

    python bench/bench_startup.py                       # print the result
    python bench/bench_startup.py --write docs/benchmarks/startup.md
    python bench/bench_startup.py --check               # exit 1 when over the target
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

TARGET = 1.3
APP_ARGS = ["systemd", "myapp", "--app", "pkg.wsgi:app", "-o", "-"]


@dataclass(frozen=True)
class Sample:
    """The times of one command's runs, in seconds: wall clock, and CPU (user + system)."""

    label: str
    shown: str
    times: tuple[float, ...]
    cpu: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu)

    @property
    def quartiles(self) -> tuple[float, float]:
        q1, _, q3 = statistics.quantiles(self.times, n=4, method="inclusive")
        return q1, q3


def opskit_argv() -> tuple[list[str], str]:
    """The opskit command, run by this interpreter: its console script if installed beside it."""
    script = Path(sys.executable).parent / "opskit"
    if script.is_file():
        # The real entry point, but started by sys.executable itself, so the interpreter
        # is the floor's even if the script's shebang names another one.
        return [sys.executable, str(script), *APP_ARGS], "opskit " + " ".join(APP_ARGS)
    return [sys.executable, "-m", "opskit", *APP_ARGS], "python -m opskit " + " ".join(APP_ARGS)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_once(argv: list[str], cwd: str) -> tuple[float, float]:
    """Run one command; return its wall-clock and CPU seconds."""
    cpu_before = _children_cpu()
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"bench_startup: {argv} exited {proc.returncode}: {proc.stderr!r}")
    # CPU time counts only this child's own work, so it moves far less than the wall
    # clock when other jobs compete for the cores: a cross-check on the wall-clock ratio.
    return elapsed, _children_cpu() - cpu_before


def compile_opskit() -> None:
    """Write opskit's bytecode, as `pip install` of its wheel does.

    typer and jinja2 come with bytecode from their install; an editable opskit does not,
    and with PYTHONDONTWRITEBYTECODE set (common in containers and CI) every run would
    compile opskit from source, measuring the compiler instead of the start-up a user
    of the installed tool pays. compileall is run by the interpreter being measured.
    """
    code = (
        "import compileall, opskit, os, sys; "
        "sys.exit(not compileall.compile_dir(os.path.dirname(opskit.__file__), quiet=1))"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def measure(repeat: int, warmup: int) -> tuple[Sample, Sample]:
    compile_opskit()
    floor_argv = [sys.executable, "-c", "import typer, jinja2"]
    app_argv, app_shown = opskit_argv()
    # An empty directory: no opskit.toml or pyproject.toml to find, so the run measures a
    # spec given entirely by flags, as the issue asks.
    with tempfile.TemporaryDirectory(prefix="opskit-bench-") as cwd:
        out = subprocess.run(app_argv, cwd=cwd, capture_output=True, text=True, check=False)
        if out.returncode != 0 or "[Service]" not in out.stdout:
            raise SystemExit(f"bench_startup: opskit did not render a unit: {out.stderr.strip()}")
        for _ in range(warmup):
            run_once(floor_argv, cwd)
            run_once(app_argv, cwd)
        floor: list[tuple[float, float]] = []
        app: list[tuple[float, float]] = []
        for i in range(repeat):
            # Alternate which goes first, so neither always runs right after the other.
            if i % 2 == 0:
                floor.append(run_once(floor_argv, cwd))
                app.append(run_once(app_argv, cwd))
            else:
                app.append(run_once(app_argv, cwd))
                floor.append(run_once(floor_argv, cwd))
    return (
        Sample(
            "floor",
            'python -c "import typer, jinja2"',
            tuple(t for t, _ in floor),
            tuple(c for _, c in floor),
        ),
        Sample("opskit", app_shown, tuple(t for t, _ in app), tuple(c for _, c in app)),
    )


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def context() -> dict[str, str]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "typer": version("typer"),
        "jinja2": version("jinja2"),
        "opskit": version("opskit"),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end",
    }


def pair_ratios(floor: Sample, app: Sample) -> tuple[float, float, float]:
    """Quartiles of opskit/floor within each interleaved pair (both ran back to back)."""
    ratios = [a / f for a, f in zip(app.times, floor.times, strict=True)]
    q1, q2, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
    return q1, q2, q3


def report_text(floor: Sample, app: Sample, info: dict[str, str]) -> str:
    ratio = app.median / floor.median
    lines = [
        f"opskit start-up, {len(app.times)} interleaved runs each "
        f"(Python {info['python']}, typer {info['typer']}, jinja2 {info['jinja2']})",
        f"{'':8} {'median':>8} {'p25':>7} {'p75':>7} {'min':>7} {'max':>7} {'cpu':>7}  (ms)",
    ]
    for s in (floor, app):
        q1, q3 = s.quartiles
        lines.append(
            f"{s.label:8} {ms(s.median):>8} {ms(q1):>7} {ms(q3):>7} "
            f"{ms(min(s.times)):>7} {ms(max(s.times)):>7} {ms(s.cpu_median):>7}  {s.shown}"
        )
    verdict = "within" if ratio <= TARGET else "OVER"
    lines.append(f"ratio of medians: {ratio:.2f}x ({verdict} the target of {TARGET}x)")
    lines.append(f"ratio of CPU-time medians: {app.cpu_median / floor.cpu_median:.2f}x")
    lo, mid, hi = pair_ratios(floor, app)
    lines.append(f"per-pair ratios: median {mid:.2f}x, p25-p75 {lo:.2f}x-{hi:.2f}x")
    return "\n".join(lines) + "\n"


def report_markdown(floor: Sample, app: Sample, info: dict[str, str]) -> str:
    ratio = app.median / floor.median
    cpu_ratio = app.cpu_median / floor.cpu_median
    lo, mid, hi = pair_ratios(floor, app)
    rows = []
    for s in (floor, app):
        q1, q3 = s.quartiles
        rows.append(
            f"| `{s.shown}` | {ms(s.median)} | {ms(q1)}-{ms(q3)} "
            f"| {ms(min(s.times))}-{ms(max(s.times))} | {ms(s.cpu_median)} |"
        )
    verdict = "within" if ratio <= TARGET else "over"
    rounds_line = ""
    if "," in info["rounds"]:
        per_round = len(app.times) // (info["rounds"].count(",") + 1)
        rounds_line = (
            f"Ratio of the medians in each round of {per_round} pairs, measured one after "
            f"another: {info['rounds']}.\n"
        )
    return f"""# Start-up time

Every opskit command starts Python, typer and jinja2 before it does any work. The floor
is the bare import of those two, `python -c "import typer, jinja2"`; the target is that
`opskit systemd` with a fully specified app takes at most {TARGET}x the floor's median
wall-clock time, both run by the same interpreter in the same run.

opskit's bytecode is compiled first (`compileall`), as installing its wheel does: typer
and jinja2 arrive compiled, and an editable install under PYTHONDONTWRITEBYTECODE would
otherwise recompile opskit's modules on every run and measure the compiler.

## Result

Measured {info["date"]}: Python {info["python"]}, typer {info["typer"]}, \
jinja2 {info["jinja2"]}, opskit {info["opskit"]}; {info["machine"]}.
{len(app.times)} runs of each command, alternating, after warm-up runs.

| command | median (ms) | p25-p75 (ms) | min-max (ms) | CPU, median (ms) |
|---|---|---|---|---|
{rows[0]}
{rows[1]}

Ratio of the wall-clock medians: **{ratio:.2f}x**, {verdict} the target of {TARGET}x.
Ratio of the CPU-time (user + system) medians: {cpu_ratio:.2f}x.
Ratio within each back-to-back pair: median {mid:.2f}x, p25-p75 {lo:.2f}x-{hi:.2f}x.
{rounds_line}
The machine is shared, so single runs wander (see min-max); the interleaving puts that
noise on both commands alike, which is why the ratio, not the absolute time, is the
number to compare between runs. CPU time counts only the process's own work and moves
much less with the load: when the two ratios disagree, the load moved the wall clock.

## How to rerun

    make bench                                    # runs every bench/bench_*.py
    .venv/bin/python bench/bench_startup.py       # this one only; --repeat N, --check
    .venv/bin/python bench/bench_startup.py --write docs/benchmarks/startup.md

`--check` exits 1 when the wall-clock ratio is over the target. To see what a start-up imports:

    .venv/bin/python -X importtime -m opskit systemd myapp --app pkg.wsgi:app -o - \\
        2>&1 >/dev/null | sort -t'|' -k2 -n | tail

What keeps opskit near the floor: each command imports its own modules (generators,
config reading, helpers) inside the command function, and pyproject.toml pins typer below
0.29, which builds every command through pydantic.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30, help="runs of each command [30]")
    parser.add_argument("--warmup", type=int, default=3, help="warm-up runs of each [3]")
    parser.add_argument("--write", type=Path, help="write the markdown report to this file")
    parser.add_argument("--check", action="store_true", help="exit 1 when over the target")
    parser.add_argument(
        "--rounds", type=int, default=1, help="measure this many times, to show the spread [1]"
    )
    args = parser.parse_args(argv)
    if args.repeat < 2 or args.rounds < 1:
        parser.error("--repeat: at least 2; --rounds: at least 1")
    rounds = [measure(args.repeat, args.warmup) for _ in range(args.rounds)]
    floor = Sample(
        "floor",
        rounds[0][0].shown,
        tuple(t for f, _ in rounds for t in f.times),
        tuple(c for f, _ in rounds for c in f.cpu),
    )
    app = Sample(
        rounds[0][1].label,
        rounds[0][1].shown,
        tuple(t for _, a in rounds for t in a.times),
        tuple(c for _, a in rounds for c in a.cpu),
    )
    ratio = app.median / floor.median
    info = context()
    info["rounds"] = ", ".join(f"{a.median / f.median:.2f}x" for f, a in rounds)
    sys.stdout.write(report_text(floor, app, info))
    if args.rounds > 1:
        sys.stdout.write(f"ratio of medians per round of {args.repeat}: {info['rounds']}\n")
    if args.write is not None:
        from opskit.write import atomic_write

        args.write.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(args.write, report_markdown(floor, app, info), 0o644)
        sys.stdout.write(f"wrote {args.write}\n")
    return 1 if args.check and ratio > TARGET else 0


if __name__ == "__main__":
    sys.exit(main())
