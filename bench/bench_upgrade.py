"""Time `opskit upgrade` against the two raw pip commands it wraps, on the same venv and wheels.

The baseline is what the mission asks for at the least, by hand:
`python -m pip install --no-deps --force-reinstall REQ` then `python -m pip check`.
`opskit upgrade REQ` adds its own start-up, reading the environment, the snapshot of the
replaced package, the plan and the history line. The target is opskit's median at most
1.3 times the baseline's, both measured in the same run: each repetition of either
moves the package between two versions of the same size, and the two alternate which
goes first, so load on a shared machine hits both alike.

    python bench/bench_upgrade.py                        # print the result
    python bench/bench_upgrade.py --write docs/benchmarks/upgrade.md
    python bench/bench_upgrade.py --check                # exit 1 when over the target
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

TARGET = 1.3
PIP_FLAGS = ["--disable-pip-version-check", "--no-input"]
# A package of a realistic small size: a few dozen modules, a console script.
MODULES = 40


@dataclass(frozen=True)
class Sample:
    """The wall-clock times of one way to upgrade, in seconds."""

    label: str
    shown: str
    times: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def quartiles(self) -> tuple[float, float]:
        q1, _, q3 = statistics.quantiles(self.times, n=4, method="inclusive")
        return q1, q3


def _hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def make_wheel(directory: Path, name: str, ver: str) -> None:
    """A pure-Python wheel with MODULES modules and a console script."""
    dist = f"{name}-{ver}"
    files = {f"{name}/__init__.py": f"VERSION = {ver!r}\n"}
    for i in range(MODULES):
        files[f"{name}/mod{i}.py"] = f"# {ver}\n" + "def f(x):\n    return x + 1\n" * 40
    files[f"{dist}.dist-info/METADATA"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: {ver}\n"
    files[f"{dist}.dist-info/WHEEL"] = (
        "Wheel-Version: 1.0\nGenerator: bench\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    files[f"{dist}.dist-info/entry_points.txt"] = f"[console_scripts]\n{name} = {name}:VERSION\n"
    record = [f"{path},{_hash(text.encode())},{len(text.encode())}" for path, text in files.items()]
    record.append(f"{dist}.dist-info/RECORD,,")
    files[f"{dist}.dist-info/RECORD"] = "\n".join(record) + "\n"
    with zipfile.ZipFile(directory / f"{dist}-py3-none-any.whl", "w", zipfile.ZIP_DEFLATED) as z:
        for path, text in files.items():
            z.writestr(path, text)


def opskit_argv() -> list[str]:
    """opskit's console script beside this interpreter, started by this interpreter."""
    script = Path(sys.executable).parent / "opskit"
    if script.is_file():
        return [sys.executable, str(script)]
    return [sys.executable, "-m", "opskit"]


def run(argv: list[str], cwd: str, env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"bench_upgrade: {argv} exited {proc.returncode}: {proc.stderr!r}")
    return elapsed


@dataclass(frozen=True)
class Result:
    """The two sides, and opskit's parts measured on their own."""

    raw: Sample
    opskit: Sample
    startup: Sample
    inspect: Sample
    snapshot: Sample
    pip: str

    @property
    def ratio(self) -> float:
        return self.opskit.median / self.raw.median

    @property
    def paired(self) -> tuple[float, float, float]:
        """Median and quartiles of each repetition's own ratio: how much the ratio wanders."""
        ratios = [o / r for o, r in zip(self.opskit.times, self.raw.times, strict=True)]
        q1, q2, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
        return q2, q1, q3


def measure(repeat: int, warmup: int) -> Result:
    from opskit.proc import SubprocessRunner
    from opskit.upgrade.environment import read_environment
    from opskit.upgrade.snapshot import wheel_from_installed

    with tempfile.TemporaryDirectory(prefix="opskit-bench-upgrade-") as tmp:
        root = Path(tmp)
        venv, wheels, cwd = root / "venv", root / "wheels", root / "cwd"
        wheels.mkdir()
        cwd.mkdir()
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        python = str(venv / "bin" / "python")
        make_wheel(wheels, "benchpkg", "1.0")
        make_wheel(wheels, "benchpkg", "2.0")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
        index = ["--no-index", "--find-links", str(wheels)]
        install = [python, "-m", "pip", "install", *PIP_FLAGS, "--no-deps", "--force-reinstall"]
        check = [python, "-m", "pip", "check", *PIP_FLAGS]
        run([*install, *index, "benchpkg==1.0"], str(cwd), env)
        pip_version = subprocess.run(
            [python, "-m", "pip", "--version"], capture_output=True, text=True, check=True
        ).stdout.split()[1]
        opskit = [*opskit_argv(), "upgrade", "--python", python, *index, "--no-lock"]
        floor = [*opskit_argv(), "--version"]
        state = {"version": "1.0"}

        def flip() -> str:
            state["version"] = "2.0" if state["version"] == "1.0" else "1.0"
            return f"benchpkg=={state['version']}"

        def raw_once() -> float:
            req = flip()
            return run([*install, *index, req], str(cwd), env) + run(check, str(cwd), env)

        def opskit_once() -> float:
            return run([*opskit, flip()], str(cwd), env)

        for _ in range(warmup):
            raw_once()
            opskit_once()
        raw: list[float] = []
        ops: list[float] = []
        start: list[float] = []
        for i in range(repeat):
            # Alternate which goes first, so neither always runs right after the other.
            if i % 2 == 0:
                raw.append(raw_once())
                ops.append(opskit_once())
            else:
                ops.append(opskit_once())
                raw.append(raw_once())
            start.append(run(floor, str(cwd), env))

        # opskit's own steps, each timed alone: reading the environment (one start of
        # the target interpreter) and the snapshot of the installed package.
        runner = SubprocessRunner()
        inspect: list[float] = []
        snapshot: list[float] = []
        for i in range(repeat):
            begin = time.perf_counter()
            environment = read_environment(python, ["benchpkg"], runner=runner)
            inspect.append(time.perf_counter() - begin)
            begin = time.perf_counter()
            wheel_from_installed(environment.installed["benchpkg"], environment, root / f"s{i}")
            snapshot.append(time.perf_counter() - begin)
    return Result(
        Sample("raw pip", "`pip install --no-deps --force-reinstall` + `pip check`", tuple(raw)),
        Sample("opskit", "`opskit upgrade --no-lock`", tuple(ops)),
        Sample("start-up", "`opskit --version`", tuple(start)),
        Sample("env read", "the target interpreter reports its paths and packages", tuple(inspect)),
        Sample("snapshot", "the installed package rebuilt as a wheel", tuple(snapshot)),
        pip_version,
    )


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}" if seconds < 0.01 else f"{seconds * 1000:.0f}"


def context() -> dict[str, str]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "opskit": version("opskit"),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end",
    }


def rows(samples: tuple[Sample, ...]) -> list[str]:
    out = []
    for s in samples:
        q1, q3 = s.quartiles
        out.append(
            f"| {s.label} | {s.shown} | {ms(s.median)} | {ms(q1)}-{ms(q3)} "
            f"| {ms(min(s.times))}-{ms(max(s.times))} |"
        )
    return out


def report_text(result: Result) -> str:
    lines = [f"{'':9} {'median':>7} {'p25':>6} {'p75':>6} {'min':>6} {'max':>6}  (ms)"]
    for s in (result.raw, result.opskit, result.startup, result.inspect, result.snapshot):
        q1, q3 = s.quartiles
        lines.append(
            f"{s.label:9} {ms(s.median):>7} {ms(q1):>6} {ms(q3):>6} "
            f"{ms(min(s.times)):>6} {ms(max(s.times)):>6}  {s.shown}"
        )
    verdict = "within" if result.ratio <= TARGET else "OVER"
    lines.append(
        f"ratio of medians opskit/raw: {result.ratio:.2f}x ({verdict} the target of {TARGET}x)"
    )
    mid, q1, q3 = result.paired
    lines.append(f"per-repetition ratios: median {mid:.2f}x, p25-p75 {q1:.2f}x-{q3:.2f}x")
    return "\n".join(lines) + "\n"


def report_markdown(result: Result, info: dict[str, str]) -> str:
    raw, ops = result.raw, result.opskit
    table = "\n".join(rows((raw, ops)))
    parts = "\n".join(rows((result.startup, result.inspect, result.snapshot)))
    verdict = "within" if result.ratio <= TARGET else "over"
    extra = ops.median - raw.median
    mid, q1, q3 = result.paired
    return f"""# `opskit upgrade` overhead

What an upgrade costs over doing by hand the two commands it wraps:
`python -m pip install --no-deps --force-reinstall REQ` followed by `python -m pip check`.
Target: `opskit upgrade REQ` takes at most {TARGET}x the median of those two together.

## Result

Measured {info["date"]}: Python {info["python"]}, pip {info["pip"]} (the throwaway venv's),
opskit {info["opskit"]}; {info["machine"]}.
{len(raw.times)} repetitions of each, alternating which goes first, after warm-up runs. Every
repetition moves a {MODULES}-module package with a console script between two versions,
from a local `--find-links` directory (`--no-index`), so both sides do the same pip work.

| | command | median (ms) | p25-p75 (ms) | min-max (ms) |
|---|---|---|---|---|
{table}

Ratio of the medians, opskit / raw pip: **{result.ratio:.2f}x**, {verdict} the target of \
{TARGET}x. opskit's extra time is {ms(extra)} ms per upgrade (difference of the medians).
Each repetition's own ratio (opskit run / the raw pair next to it): median {mid:.2f}x,
p25-p75 {q1:.2f}x-{q3:.2f}x, which is how far one run of this benchmark can wander on
a shared machine.

## Where the extra time goes

opskit's own parts, each timed alone in the same run ({len(result.inspect.times)} times):

| | what | median (ms) | p25-p75 (ms) | min-max (ms) |
|---|---|---|---|---|
{parts}

- Start-up: Python, typer and the CLI, the same for every opskit command (see
  [startup.md](startup.md)); most of the difference.
- Reading the environment: one start of the target interpreter, which lists the
  `.dist-info` directories on its `sys.path`. It imports neither `importlib.metadata`
  (a first version did: 50-85 ms for this step, and one run, under heavier load than
  this one, measured 1.42x overall) nor pip (`pip inspect` or `pip list` would start
  pip itself once more, as the baseline's `pip check` does).
- The snapshot: the replaced package's files read once and stored, not compressed, in
  a wheel.
- One `pip check`, as in the baseline: problems that exist before the upgrade are told
  apart from new ones by the names they involve, not by a second `pip check` first.
- A restore costs nothing on success; on failure it is one more offline pip install and
  one more `pip check`, the price of proving the environment is back.

## How to rerun

    .venv/bin/python bench/bench_upgrade.py                 # --repeat N, --check
    .venv/bin/python bench/bench_upgrade.py --write docs/benchmarks/upgrade.md

The machine is shared, so single runs wander (see min-max); the interleaving puts that
noise on both sides alike, which is why the ratio is the number to compare.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=12, help="runs of each [12]")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up runs of each [2]")
    parser.add_argument("--write", type=Path, help="write the markdown report to this file")
    parser.add_argument("--check", action="store_true", help="exit 1 when over the target")
    args = parser.parse_args(argv)
    if args.repeat < 2:
        parser.error("--repeat: at least 2")
    result = measure(args.repeat, args.warmup)
    sys.stdout.write(report_text(result))
    if args.write is not None:
        from opskit.write import atomic_write

        args.write.parent.mkdir(parents=True, exist_ok=True)
        info = {**context(), "pip": result.pip}
        atomic_write(args.write, report_markdown(result, info), 0o644)
        sys.stdout.write(f"wrote {args.write}\n")
    return 1 if args.check and result.ratio > TARGET else 0


if __name__ == "__main__":
    sys.exit(main())
