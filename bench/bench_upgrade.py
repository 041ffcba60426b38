"""Time `opskit upgrade` with pip and with uv against the raw pip pair, on three package sizes.

The baseline is what an operator does by hand at the least:
`python -m pip install --no-deps --force-reinstall REQ` then `python -m pip check`.
Against it, on packages the size of urllib3, django and numpy (built here, with the
file counts, kinds and bytes of the real wheels), in one throwaway venv each:

- `opskit upgrade --installer pip REQ` and `opskit upgrade --installer uv REQ`, each
  repetition moving the package to its other version;
- a rollback: the same upgrade with a smoke command that fails, so opskit installs,
  checks, restores the snapshot and proves it, with pip and with uv.

Every repetition runs each way once, the order rotated from one repetition to the next,
so load on a shared machine falls on all alike; the numbers are the medians of the
per-repetition ratios (and their spread), not ratios of medians. uv runs with an empty
cache each time: a new version has never been unpacked on the host (`--warm` adds uv
runs that keep their cache).

    python bench/bench_upgrade.py                        # print the result
    python bench/bench_upgrade.py --write docs/benchmarks/upgrade.md
    python bench/bench_upgrade.py --check                # exit 1 when a target is missed
"""

from __future__ import annotations

import argparse
import base64
import bisect
import hashlib
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

#: Targets, as medians of per-repetition ratios.
PIP_TARGET = 1.2
UV_TARGETS = {"urllib3": 0.5, "django": 0.35, "numpy": 0.35}
ROLLBACK_TARGET = 0.3
PIP_FLAGS = ["--disable-pip-version-check", "--no-input"]
FAIL = "python -c 'raise SystemExit(1)'"


@dataclass(frozen=True)
class Part:
    """Files of one kind in a package: how many, their suffix, their bytes together."""

    count: int
    suffix: str
    size: int
    #: "py" (Python that compiles), "text" or "binary" (incompressible).
    kind: str


#: The real wheels' make-up (urllib3 2.8.0, django 5.2.19, numpy 2.4.6 cp311 manylinux,
#: from the package registry, 2026-12): files by kind and their uncompressed bytes.
SIZES: dict[str, tuple[Part, ...]] = {
    "urllib3": (Part(36, ".py", 434_671, "py"), Part(6, ".txt", 15_790, "text")),
    "django": (
        Part(885, ".py", 5_691_290, "py"),
        Part(1226, ".po", 8_778_877, "text"),
        Part(1226, ".mo", 6_824_971, "binary"),
        Part(333, ".html", 2_127_066, "text"),
    ),
    "numpy": (
        Part(487, ".py", 9_118_732, "py"),
        Part(264, ".pyi", 1_588_319, "text"),
        Part(22, ".so", 44_280_950, "binary"),
        Part(393, ".dat", 2_372_223, "text"),
    ),
}


def python_sources() -> list[bytes]:
    """Real Python to stand in for a package's modules: the stdlib's own, smallest first.

    Made-up code of the same size compiles about three times slower than real modules,
    with their comments and docstrings, and bytecode compilation is much of an install.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for path in sorted(root.glob("*.py")) + sorted(root.glob("*/*.py")):
        if {"test", "tests", "idle_test"} & set(path.parts):
            continue
        data = path.read_bytes()
        try:
            compile(data, str(path), "exec", dont_inherit=True)
        except (SyntaxError, ValueError):
            continue
        out.append(data)
    return sorted(out, key=len)


def _python_source(size: int, sources: list[bytes], tag: str) -> bytes:
    """The stdlib module closest in size, marked so that two versions differ."""
    lengths = [len(s) for s in sources]
    i = min(bisect.bisect_left(lengths, size), len(sources) - 1)
    return sources[i] + f"\n# {tag}\n".encode()


def _sizes(part: Part, rng: random.Random) -> list[int]:
    """Uneven file sizes adding up to the part's bytes (a few big files, many small)."""
    weights = [rng.paretovariate(1.2) for _ in range(part.count)]
    scale = part.size / sum(weights)
    return [max(1, int(w * scale)) for w in weights]


SOURCES: list[bytes] = []


def make_wheel(directory: Path, name: str, ver: str, parts: tuple[Part, ...]) -> Path:
    """A wheel with the make-up of ``parts``; the two versions differ in every .py file."""
    if not SOURCES:
        SOURCES.extend(python_sources())
    rng = random.Random(f"{name}-{ver}")
    dist = f"{name}-{ver}"
    target = directory / f"{dist}-py3-none-any.whl"
    record: list[str] = []
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:

        def put(path: str, data: bytes) -> None:
            z.writestr(path, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            record.append(f"{path},sha256={digest.decode()},{len(data)}")

        put(f"{name}/__init__.py", f"VERSION = {ver!r}\n".encode())
        for part in parts:
            for i, size in enumerate(_sizes(part, rng)):
                path = f"{name}/{part.suffix[1:]}/m{i}{part.suffix}"
                if part.kind == "py":
                    data = _python_source(size, SOURCES, f"{ver} {i}")
                elif part.kind == "binary":
                    data = rng.randbytes(size)
                else:
                    data = (f"text {ver} " * (size // 10 + 1)).encode()[:size]
                put(path, data)
        put(
            f"{dist}.dist-info/METADATA",
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {ver}\n".encode(),
        )
        put(
            f"{dist}.dist-info/WHEEL",
            b"Wheel-Version: 1.0\nGenerator: bench\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        record.append(f"{dist}.dist-info/RECORD,,")
        z.writestr(f"{dist}.dist-info/RECORD", "\n".join(record) + "\n")
    return target


def opskit_argv() -> list[str]:
    """opskit's console script beside this interpreter, started by this interpreter."""
    script = Path(sys.executable).parent / "opskit"
    if script.is_file():
        return [sys.executable, str(script)]
    return [sys.executable, "-m", "opskit"]


def run(argv: list[str], cwd: str, env: dict[str, str], expect: int = 0) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != expect:
        raise SystemExit(f"bench_upgrade: {argv} exited {proc.returncode}: {proc.stderr!r}")
    return elapsed


def spread(values: list[float]) -> tuple[float, float, float, float, float]:
    """Median, p25, p75, min, max."""
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q2, q1, q3, min(values), max(values)


@dataclass
class Package:
    """One package size: the times of each way, in seconds, one per repetition."""

    name: str
    files: int
    size: int
    times: dict[str, list[float]] = field(default_factory=dict)

    def ratios(self, top: str, bottom: str) -> list[float]:
        return [a / b for a, b in zip(self.times[top], self.times[bottom], strict=True)]


#: The ways to upgrade, in the order the first repetition runs them.
WAYS = ("raw pip", "raw uv", "opskit pip", "opskit uv", "rollback pip", "rollback uv")


def _pip_wheel(root: Path) -> Path:
    """The pip running this bench, as a wheel (opskit's own snapshot), for the venvs."""
    from opskit.proc import SubprocessRunner
    from opskit.upgrade.environment import read_environment
    from opskit.upgrade.snapshot import wheel_from_installed

    env = read_environment(sys.executable, ["pip"], runner=SubprocessRunner())
    return wheel_from_installed(env.installed["pip"], env, root / "pip-wheel")


def _environment() -> dict[str, str]:
    """No pip or uv configuration; bytecode written, as on a host where pip installed it.

    A machine that sets PYTHONDONTWRITEBYTECODE would have every start of pip (and of
    opskit from a checkout) compile its modules from source again, a cost an installed
    pip or opskit does not have. The warm-up writes it once.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_"))}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("PYTHONPYCACHEPREFIX", None)
    env["PIP_CONFIG_FILE"] = os.devnull
    return env


def measure_package(
    name: str, parts: tuple[Part, ...], root: Path, repeat: int, warmup: int, warm: bool
) -> Package:
    from opskit.upgrade.installer import find_uv

    uv = find_uv()
    if uv is None:
        raise SystemExit("bench_upgrade: uv is not installed (pip install 'opskit[uv]')")
    here = root / name
    venv, wheels, cwd = here / "venv", here / "wheels", here / "cwd"
    for d in (wheels, cwd):
        d.mkdir(parents=True)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    pip_wheel = (
        _pip_wheel(root)
        if not (root / "pip-wheel").is_dir()
        else next((root / "pip-wheel").glob("*.whl"))
    )
    make_wheel(wheels, "benchpkg", "1.0", parts)
    make_wheel(wheels, "benchpkg", "2.0", parts)
    # No pip configuration at all: every side installs from the same directory alike.
    env = _environment()
    index = ["--no-index", "--find-links", str(wheels)]
    subprocess.run(
        [str(uv), "pip", "install", "--python", python, "--no-index", str(pip_wheel)],
        check=True,
        capture_output=True,
        env=env,
    )
    install = [python, "-m", "pip", "install", *PIP_FLAGS, "--no-deps", "--force-reinstall"]
    check = [python, "-m", "pip", "check", *PIP_FLAGS]
    # uv's own pair, as opskit runs it (bytecode compiled, as pip does): the floor under
    # opskit + uv, which adds its start-up, the inspection and the snapshot to it.
    uv_install = [str(uv), "pip", "install", "--python", python, "--no-deps", "--reinstall"]
    uv_install += ["--compile-bytecode", "--no-config", *index]
    uv_check = [str(uv), "pip", "check", "--python", python, "--no-config"]
    run([*install, *index, "benchpkg==1.0"], str(cwd), env)
    opskit = [*opskit_argv(), "upgrade", "--python", python, *index, "--no-lock"]
    state = {"version": "1.0"}

    def other() -> str:
        return "2.0" if state["version"] == "1.0" else "1.0"

    def forward(argv: list[str], extra: dict[str, str] | None = None) -> float:
        req = f"benchpkg=={other()}"
        took = run([*argv, req], str(cwd), {**env, **(extra or {})})
        state["version"] = other()
        return took

    def cold(argv: list[str], then: list[str] | None = None) -> float:
        # A new version has never been unpacked into uv's cache on the host.
        cache = tempfile.mkdtemp(prefix="uv-cache-", dir=here)
        try:
            took = forward(argv, {"UV_CACHE_DIR": cache})
            if then is not None:
                took += run(then, str(cwd), {**env, "UV_CACHE_DIR": cache})
            return took
        finally:
            shutil.rmtree(cache, ignore_errors=True)

    def rollback(installer: str) -> float:
        argv = [*opskit, "--installer", installer, "--smoke", FAIL, f"benchpkg=={other()}"]
        cache = tempfile.mkdtemp(prefix="uv-cache-", dir=here)
        try:
            return run(argv, str(cwd), {**env, "UV_CACHE_DIR": cache}, expect=1)
        finally:
            shutil.rmtree(cache, ignore_errors=True)

    warm_cache = str(here / "uv-cache-warm")
    ways: dict[str, Callable[[], float]] = {
        "raw pip": lambda: forward(install + index) + run(check, str(cwd), env),
        "raw uv": lambda: cold(uv_install, uv_check),
        "opskit pip": lambda: forward([*opskit, "--installer", "pip"]),
        "opskit uv": lambda: cold([*opskit, "--installer", "uv"]),
        "rollback pip": lambda: rollback("pip"),
        "rollback uv": lambda: rollback("uv"),
    }
    if warm:
        ways["opskit uv warm"] = lambda: forward(
            [*opskit, "--installer", "uv"], {"UV_CACHE_DIR": warm_cache}
        )
    names = list(ways)
    for _ in range(warmup):
        for way in names:
            ways[way]()
    times: dict[str, list[float]] = {way: [] for way in names}
    for i in range(repeat):
        for way in names[i % len(names) :] + names[: i % len(names)]:
            times[way].append(ways[way]())
        print(f"  {name}: repetition {i + 1} of {repeat}", file=sys.stderr)
    with zipfile.ZipFile(next(wheels.glob("benchpkg-1.0-*.whl"))) as z:
        members = z.infolist()
    return Package(name, len(members), sum(m.file_size for m in members), times)


@dataclass(frozen=True)
class Result:
    packages: tuple[Package, ...]
    parts: dict[str, list[float]]
    pip: str
    uv: str
    repeat: int


def measure(repeat: int, warmup: int, warm: bool, only: list[str]) -> Result:
    from opskit.proc import SubprocessRunner
    from opskit.upgrade.installer import find_uv, uv_version

    with tempfile.TemporaryDirectory(prefix="opskit-bench-upgrade-") as tmp:
        root = Path(tmp)
        packages = tuple(
            measure_package(name, SIZES[name], root, repeat, warmup, warm) for name in only
        )
        env = _environment()
        start = [run([*opskit_argv(), "--version"], tmp, env) for _ in range(repeat + 1)][1:]
        pip_version = subprocess.run(
            [str(root / only[0] / "venv/bin/python"), "-m", "pip", "--version"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()[1]
    uv = find_uv()
    assert uv is not None
    return Result(
        packages,
        {"start-up": start},
        pip_version,
        uv_version(uv, runner=SubprocessRunner()),
        repeat,
    )


def verdicts(result: Result) -> list[tuple[str, str, float, float, bool]]:
    """(package, comparison, median ratio, target, met) for every target."""
    out = []
    for p in result.packages:
        for label, top, bottom, target in (
            ("opskit+pip / raw pip pair", "opskit pip", "raw pip", PIP_TARGET),
            ("opskit+uv / raw pip pair", "opskit uv", "raw pip", UV_TARGETS[p.name]),
            ("rollback uv / rollback pip", "rollback uv", "rollback pip", ROLLBACK_TARGET),
        ):
            mid = statistics.median(p.ratios(top, bottom))
            out.append((p.name, label, mid, target, mid <= target))
    return out


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}"


def context() -> dict[str, str]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "opskit": version("opskit"),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end",
    }


def report_text(result: Result) -> str:
    lines = []
    for p in result.packages:
        lines.append(f"{p.name}-size ({p.files} files, {p.size / 1e6:.1f} MB), ms:")
        for way, values in p.times.items():
            mid, q1, q3, lo, hi = spread(values)
            lines.append(
                f"  {way:15} median {ms(mid):>6}  p25-p75 {ms(q1)}-{ms(q3)}"
                f"  min-max {ms(lo)}-{ms(hi)}"
            )
    for name, label, mid, target, met in verdicts(result):
        lines.append(
            f"{name:8} {label:28} {mid:.2f}x  target {target}x  {'met' if met else 'MISSED'}"
        )
    return "\n".join(lines) + "\n"


def _ratio_row(p: Package, label: str, top: str, bottom: str, target: float | None) -> str:
    """A table row; no target: a floor, shown beside the uv target it bounds."""
    mid, q1, q3, lo, hi = spread(p.ratios(top, bottom))
    if target is None:
        bound = UV_TARGETS[p.name]
        verdict = f"floor: {'under' if mid <= bound else '**above**'} the {bound}x target"
    else:
        verdict = f"{target}x {'met' if mid <= target else '**missed**'}"
    return (
        f"| {p.name} | {label} | **{mid:.2f}x** | {q1:.2f}x-{q3:.2f}x | {lo:.2f}x-{hi:.2f}x "
        f"| {verdict} |"
    )


def report_markdown(result: Result, info: dict[str, str]) -> str:
    sizes = "\n".join(
        f"| {p.name} | {p.files:,} | {p.size / 1e6:.1f} MB |" for p in result.packages
    )
    ratios = []
    for p in result.packages:
        ratios.append(
            _ratio_row(p, "opskit + pip / raw pip pair", "opskit pip", "raw pip", PIP_TARGET)
        )
        ratios.append(
            _ratio_row(p, "opskit + uv / raw pip pair", "opskit uv", "raw pip", UV_TARGETS[p.name])
        )
        ratios.append(_ratio_row(p, "raw uv pair / raw pip pair", "raw uv", "raw pip", None))
        if "opskit uv warm" in p.times:
            ratios.append(
                _ratio_row(
                    p,
                    "opskit + uv, warm cache / raw pip pair",
                    "opskit uv warm",
                    "raw pip",
                    UV_TARGETS[p.name],
                )
            )
        ratios.append(
            _ratio_row(
                p, "rollback uv / rollback pip", "rollback uv", "rollback pip", ROLLBACK_TARGET
            )
        )
    times = []
    for p in result.packages:
        for way, values in p.times.items():
            mid, q1, q3, lo, hi = spread(values)
            times.append(
                f"| {p.name} | {way} | {ms(mid)} | {ms(q1)}-{ms(q3)} | {ms(lo)}-{ms(hi)} |"
            )
    mid, q1, q3, lo, hi = spread(result.parts["start-up"])
    return f"""# `opskit upgrade` overhead, with pip and with uv

What an upgrade costs over the two commands it wraps, done by hand:
`python -m pip install --no-deps --force-reinstall REQ` followed by `python -m pip check`
(the raw pip pair); and what a rollback costs with each installer.

Targets, each the median of the per-repetition ratios: `opskit upgrade --installer pip`
at most {PIP_TARGET}x the raw pip pair; `--installer uv` at most {UV_TARGETS["django"]}x on the
django- and numpy-size packages and {UV_TARGETS["urllib3"]}x on the urllib3-size one (where
opskit's fixed cost dominates); a rollback with uv at most {ROLLBACK_TARGET}x a rollback with pip.

## How it was measured

Measured {info["date"]}: Python {info["python"]}, pip {result.pip} (in each throwaway venv),
uv {result.uv}, opskit {info["opskit"]}; {info["machine"]}.

Bytecode is written and kept for every command alike, as on a host where pip installed
pip and opskit: a machine that sets PYTHONDONTWRITEBYTECODE (this one does) would
otherwise compile pip, and opskit from its checkout, from source at each start.

Three packages built by the benchmark with the file counts, kinds and bytes of real
wheels (urllib3 2.8.0, django 5.2.19, numpy 2.4.6): real Python modules (the standard
library's own, each picked for the size of a module of the real package), text, and
incompressible binary files standing in for `.mo` catalogues and extension modules.

| package size | files | bytes |
|---|---|---|
{sizes}

Each in its own venv, from a local `--find-links` directory (`--no-index`, no pip
configuration), so every side does the same work. {result.repeat} repetitions; in each, every
way runs once, moving the package to its other version, the order rotated between
repetitions, after warm-up runs. uv starts each run with an empty cache (the new
version of a real upgrade has never been unpacked on the host). A rollback is a whole
`opskit upgrade` whose smoke command fails: install, check, smoke, restore of the
snapshot, the proof of it, and the check again. The raw uv pair is uv's own two
commands as opskit runs them (`uv pip install --no-deps --reinstall --compile-bytecode`,
then `uv pip check`, cold cache): the floor under opskit + uv, which runs exactly those
and adds its start-up, the inspection and the snapshot.

## Result

| package | ratio | median | p25-p75 | min-max | target |
|---|---|---|---|---|---|
{chr(10).join(ratios)}

The times behind them (ms):

| package | way | median | p25-p75 | min-max |
|---|---|---|---|---|
{chr(10).join(times)}

opskit's start-up alone (`opskit --version`), the same in every run: median {ms(mid)} ms
(p25-p75 {ms(q1)}-{ms(q3)}, min-max {ms(lo)}-{ms(hi)}).

## Where the time goes

- Both installers: opskit's start-up, one start of the target interpreter to read the
  environment, and the snapshot: the replaced package's files read once and stored,
  uncompressed, in a wheel. On a rollback, the proof of the restore reads every file
  of the snapshot again (sha256).
- pip: `pip install` and `pip check` start pip, which dominates on a small package;
  opskit runs the same two commands.
- uv: one binary, no interpreter start-up of its own; it unpacks the wheel into its
  cache and links the files into site-packages, and compiles bytecode
  (`--compile-bytecode`, as pip does) with the target interpreter. The restore runs with
  `--no-cache` (see [upgrade.md](../upgrade.md#uv-instead-of-pip)).

## Why uv gains less here than its raw speed suggests

The uv targets come from uv's bare install and check, without bytecode and with a warm
cache. The row "raw uv pair / raw pip pair" is uv alone doing what opskit has it do:
where that row is above a target, no wrapper of those commands can meet it. What opskit
runs differs from uv's bare speed on these counts, each visible in the tables:

- Bytecode: `--compile-bytecode` (for parity with pip, which always compiles) makes uv
  compile every module of the package with the target interpreter. That is the same
  CPU work pip does, and on a 2-CPU machine shared with other jobs uv's parallel
  workers win little of it back.
- A cold cache: uv first unpacks the wheel into its cache, then links each file into
  site-packages, where pip unpacks straight into site-packages (compare the rows with
  a warm cache, which skip the unpacking).
- Fixed costs: opskit's start-up, reading the environment and the snapshot are the
  same with either installer, and on the urllib3-size package they are most of a run
  (also why opskit + pip is furthest from the raw pip pair there). A rollback adds the
  proof of the restore (every file of the snapshot hashed) and a second check, the
  same with either installer; only the two installs get faster.
- Load: the machine is shared, and two runs on the same day differed by more than the
  targets' margins on the django-size package (see min-max); the ratios of one run
  are comparable with each other, less so across runs.

## How to rerun

    .venv/bin/python bench/bench_upgrade.py       # --repeat N, --only numpy, --warm, --check
    .venv/bin/python bench/bench_upgrade.py --write docs/benchmarks/upgrade.md

The machine is shared, so single runs wander (see min-max); the rotation puts that noise
on every way alike, which is why the per-repetition ratio is the number to compare.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=6, help="repetitions [6]")
    parser.add_argument("--warmup", type=int, default=1, help="warm-up repetitions [1]")
    parser.add_argument("--only", action="append", choices=list(SIZES), help="package sizes")
    parser.add_argument("--warm", action="store_true", help="also uv with a kept cache")
    parser.add_argument("--write", type=Path, help="write the markdown report to this file")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    if args.repeat < 2:
        parser.error("--repeat: at least 2")
    result = measure(args.repeat, args.warmup, args.warm, args.only or list(SIZES))
    sys.stdout.write(report_text(result))
    if args.write is not None:
        from opskit.write import atomic_write

        args.write.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(args.write, report_markdown(result, context()), 0o644)
        sys.stdout.write(f"wrote {args.write}\n")
    return 1 if args.check and not all(met for *_, met in verdicts(result)) else 0


if __name__ == "__main__":
    sys.exit(main())
