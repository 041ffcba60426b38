"""The write step in real processes: signals at every rename, concurrent runs, odd files."""

from __future__ import annotations

import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import ROOT

ENV = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
APP = ["demo", "--app", "a:b", "--workdir", "/srv/demo", "--venv", "/srv/demo/.venv"]
#: From the old set to the new: three files replaced (unit, reload script, ops.mk) and
#: three created (the uWSGI ini and the logging helpers), so both kinds of rename occur.
OLD = ["bundle", *APP]
NEW = ["bundle", *APP, "--server", "uwsgi", "--force"]
#: How each signal ends the CLI: SIGINT through KeyboardInterrupt to exit code 130, the
#: others by their default action (subprocess reports -N).
ENDS = {signal.SIGINT: 130, signal.SIGTERM: -signal.SIGTERM, signal.SIGHUP: -signal.SIGHUP}

# Runs the CLI with os.NAME (each name in argv[3]) wrapped to send the process argv[1]
# just before the argv[2]-th call of any of them; counts the calls on stderr at the end.
HOOKED = r"""
import os, sys

sig, at, names = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3].split(",")
calls = 0


def hooked(real):
    def call(*args, **kwargs):
        global calls
        calls += 1
        if calls == at:
            os.kill(os.getpid(), sig)
        return real(*args, **kwargs)

    return call


for name in names:
    setattr(os, name, hooked(getattr(os, name)))
from opskit.cli import run

code = run(sys.argv[4:])
print(f"calls={calls}", file=sys.stderr)
sys.exit(code)
"""

# Runs the CLI with opskit.write.write waiting at a barrier: it touches argv[1], then
# opens the FIFO argv[2], which returns once the test opens its other end.
BARRIER = r"""
import os, sys
from pathlib import Path
from opskit import write

real = write.write


def after_barrier(*args, **kwargs):
    Path(sys.argv[1]).touch()
    os.close(os.open(sys.argv[2], os.O_RDONLY))
    return real(*args, **kwargs)


write.write = after_barrier
from opskit.cli import run

sys.exit(run(sys.argv[3:]))
"""

State = dict[str, tuple[bytes, int]]


def state(directory: Path) -> State:
    return {p.name: (p.read_bytes(), p.stat().st_mode & 0o777) for p in directory.iterdir()}


def restore(directory: Path, files: State) -> None:
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir()
    for name, (data, mode) in files.items():
        (directory / name).write_bytes(data)
        (directory / name).chmod(mode)


def opskit(cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "opskit", *argv],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def hooked(
    cwd: Path, sig: int, at: int, names: str, *argv: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", HOOKED, str(int(sig)), str(at), names, *argv],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def old_and_new(tmp_path: Path, out: Path) -> tuple[State, State]:
    """The directory's files before and after ``NEW`` ran over ``OLD`` without a signal."""
    assert opskit(tmp_path, *OLD, "-o", str(out)).returncode == 0
    old = state(out)
    done = opskit(tmp_path, *NEW, "-o", str(out))
    assert done.returncode == 0, done.stderr
    new = state(out)
    assert len([n for n in new if old.get(n) != new[n]]) == 6
    return old, new


def signalled_at_every_call(tmp_path: Path, names: str, *, ends_with: str) -> list[str]:
    """Send each signal at each call of ``names`` in turn; return what went wrong.

    Afterwards the directory must hold exactly the ``ends_with`` set ("old" or "new").
    """
    out = tmp_path / "out"
    old, new = old_and_new(tmp_path, out)
    restore(out, old)
    counted = hooked(tmp_path, signal.SIGINT, 0, names, *NEW, "-o", str(out))
    assert counted.returncode == 0, counted.stderr
    calls = int(counted.stderr.rsplit("calls=", 1)[1])
    assert calls >= 6
    wrong = []
    for sig in ENDS:
        for at in range(1, calls + 1):
            restore(out, old)
            done = hooked(tmp_path, sig, at, names, *NEW, "-o", str(out))
            after = state(out)
            what = f"{signal.Signals(sig).name} at {names} call {at}"
            if after != {"old": old, "new": new}[ends_with]:
                changed = sorted(n for n in after if after[n] != old.get(n))
                wrong.append(f"{what}: not the {ends_with} set, changed: {changed}")
            if done.returncode != ENDS[sig]:
                wrong.append(f"{what}: exit {done.returncode}, not {ENDS[sig]}: {done.stderr}")
            if "Traceback" in done.stderr:
                wrong.append(f"{what}: {done.stderr}")
    return wrong


def test_a_signal_at_any_rename_ends_the_run_after_the_whole_new_set(tmp_path: Path) -> None:
    assert signalled_at_every_call(tmp_path, "replace,rename,link", ends_with="new") == []


def test_a_signal_while_staging_leaves_the_old_set_and_no_temporary_file(tmp_path: Path) -> None:
    assert signalled_at_every_call(tmp_path, "fsync", ends_with="old") == []


def test_atomic_write_leaves_no_temporary_file_on_a_signal(tmp_path: Path) -> None:
    target = tmp_path / "pyproject.toml"
    target.write_text("old\n")
    script = HOOKED.replace(
        "code = run(sys.argv[4:])",
        "from pathlib import Path\n"
        "from opskit.write import atomic_write\n"
        "atomic_write(Path(sys.argv[4]), 'new\\n', 0o644)\n"
        "code = 0",
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(int(signal.SIGTERM)), "1", "fsync", str(target)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == -signal.SIGTERM, done.stderr
    assert state(tmp_path) == {"pyproject.toml": (b"old\n", 0o644)}


def test_bundles_killed_at_random_moments_leave_one_whole_set(tmp_path: Path) -> None:
    out = tmp_path / "out"
    # Alternating --force runs of two specs: each goes from one whole set to the other.
    sets = {}
    for argv in (OLD, NEW, OLD):
        assert opskit(tmp_path, *argv, "--force", "-o", str(out)).returncode == 0
        sets[argv[-1]] = state(out)
    chooser = random.Random(20261202)
    before = sets[OLD[-1]]
    for run in range(24):
        argv = NEW if run % 2 == 0 else OLD
        sig = (signal.SIGINT, signal.SIGTERM)[chooser.randrange(2)]
        proc = subprocess.Popen(
            [sys.executable, "-m", "opskit", *argv, "--force", "-o", str(out)],
            cwd=tmp_path,
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        in_write = run % 3 != 0
        if not in_write:
            # Anywhere in the run, most often while it starts up.
            time.sleep(chooser.uniform(0, 0.3))
        else:
            # In the write itself: once its first temporary file appears, after a few
            # more looks at the directory.
            extra = chooser.randrange(40)
            while proc.poll() is None:
                if any(p.name.startswith(".opskit-") for p in out.iterdir()):
                    extra -= 1
                    if extra < 0:
                        break
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        after = state(out)
        assert after in (before, sets[argv[-1]]), (run, sig, sorted(after), err)
        if in_write:
            # 0: it ended first; -SIGINT: the signal came as the interpreter shut down.
            # (Earlier, a SIGINT can stop the interpreter's own start-up with exit code 1.)
            assert proc.returncode in (0, ENDS[sig], -sig), (run, sig, err)
        before = after


ONE_UNIT = ("demo", "--app", "a:b", "--set", "watchdog=0")


def test_concurrent_runs_without_force_one_creates_the_other_conflicts(tmp_path: Path) -> None:
    unit = {}
    for workers in ("2", "3"):
        # One file per run (no watchdog units): the write step is what is under test.
        shown = opskit(tmp_path, "systemd", *ONE_UNIT, "--workers", workers, "-o", "-")
        assert shown.returncode == 0, shown.stderr
        unit[workers] = shown.stdout
    for pair in range(20):
        out = tmp_path / f"out{pair}"
        gate = tmp_path / f"gate{pair}"
        os.mkfifo(gate)
        procs = {
            workers: subprocess.Popen(
                [
                    *(sys.executable, "-c", BARRIER, str(tmp_path / f"ready{pair}-{workers}")),
                    *(str(gate), "systemd", *ONE_UNIT, "--workers", workers),
                    *("-o", str(out)),
                ],
                cwd=tmp_path,
                env=ENV,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for workers in unit
        }
        # Both wait at the barrier, then enter the write step together.
        deadline = time.monotonic() + 120
        while not all((tmp_path / f"ready{pair}-{w}").exists() for w in unit):
            assert all(p.poll() is None for p in procs.values()), [
                p.communicate() for p in procs.values()
            ]
            assert time.monotonic() < deadline, "the processes never reached the write step"
            time.sleep(0.005)
        opened = os.open(gate, os.O_RDWR | os.O_NONBLOCK)
        try:
            errs = {w: p.communicate(timeout=120)[1] for w, p in procs.items()}
        finally:
            os.close(opened)
        codes = {w: p.returncode for w, p in procs.items()}
        winners = [w for w, code in codes.items() if code == 0]
        assert sorted(codes.values()) == [0, 1], (pair, codes, errs)
        (winner,) = winners
        (loser,) = set(unit) - {winner}
        assert f"create     {out / 'demo.service'}" in errs[winner]
        assert (
            f"opskit: error: {out / 'demo.service'}: exists and differs; not overwritten"
            in errs[loser]
        ), errs[loser]
        assert state(out) == {"demo.service": (unit[winner].encode(), 0o644)}


def _limit_memory() -> None:
    # Reading /dev/zero fills memory until MemoryError: let a regression fail at 1 GiB,
    # not take the machine's memory with it.
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


def test_a_fifo_or_a_device_in_place_of_a_file_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    target = out / "demo.service"
    os.mkfifo(target)
    for extra in ([], ["--diff"]):
        done = opskit(tmp_path, "systemd", "demo", "--app", "a:b", "-o", str(out), *extra)
        assert done.returncode == 2
        assert done.stderr == f"opskit: error: {target}: is a FIFO, not a file\n"
    target.unlink()
    target.symlink_to("/dev/zero")
    done = subprocess.run(
        [sys.executable, "-m", "opskit", "systemd", "demo", "--app", "a:b", "-o", str(out)],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        preexec_fn=_limit_memory,
    )
    assert done.returncode == 2
    assert done.stderr == (
        f"opskit: error: {target}: is a symlink to /dev/zero, a character device, not a file\n"
    )
    assert [p.name for p in out.iterdir()] == ["demo.service"]
