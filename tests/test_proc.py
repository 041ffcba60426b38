"""The one process runner, on real processes: no shell, group kill on timeout, Ctrl-C."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from opskit.proc import InterruptGuard, SubprocessRunner, shown

pytestmark = pytest.mark.timeout(120)


def gone(pid: int, within: float = 10.0) -> bool:
    """Whether the process ends within the time: no such process, or a zombie."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


def test_runner_runs_argument_lists_without_a_shell(tmp_path):
    run = SubprocessRunner()
    done = run([sys.executable, "-c", "import sys; print(sys.argv[1])", "$HOME; echo x"])
    assert done.ok and done.stdout == "$HOME; echo x\n"
    assert not done.timed_out and done.start_error is None
    failed = run([sys.executable, "-c", "import sys; sys.exit('boom')"])
    assert failed.returncode == 1 and failed.tail() == "boom"
    noisy = run([sys.executable, "-c", "print('progress'); import sys; sys.exit('the reason')"])
    assert noisy.tail() == "the reason"
    missing = run([str(tmp_path / "no-such-program")])
    assert missing.returncode == 127 and "cannot run" in missing.stderr
    assert isinstance(missing.start_error, FileNotFoundError)


def test_runner_gives_the_child_its_own_session():
    done = SubprocessRunner()([sys.executable, "-c", "import os; print(os.getsid(0))"])
    assert done.ok and int(done.stdout) != os.getsid(0)


def test_runner_timeout_kills_the_process_group(tmp_path):
    pid_file = tmp_path / "grandchild"
    # The child starts a grandchild that holds the output pipe open, then both sleep:
    # killing only the child would leave the runner waiting for the grandchild's pipe.
    child = [
        sys.executable,
        "-c",
        "import subprocess, sys, time\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "open(sys.argv[1], 'w').write(str(p.pid))\n"
        "time.sleep(60)\n",
        str(pid_file),
    ]
    started = time.monotonic()
    done = SubprocessRunner()(child, timeout=2)
    assert time.monotonic() - started < 30
    assert done.timed_out and not done.ok and "timed out after 2 s" in done.stderr
    assert gone(int(pid_file.read_text()))


def test_first_ctrl_c_lets_the_child_finish_then_raises(tmp_path):
    notices: list[str] = []
    done = tmp_path / "finished"
    # The child itself delivers the Ctrl-C to its parent (this process), so the signal
    # arrives while the runner waits, never before; then it works on for a while.
    child = [
        sys.executable,
        "-c",
        "import os, signal, sys, time; os.kill(os.getppid(), signal.SIGINT); "
        "time.sleep(0.5); open(sys.argv[1], 'w').close()",
        str(done),
    ]
    with pytest.raises(KeyboardInterrupt):
        SubprocessRunner(notify=notices.append)(child)
    # It waited for the child to finish its work instead of abandoning it.
    assert done.exists()
    assert notices == [f"interrupted: letting {Path(sys.executable).name} finish first"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_second_ctrl_c_reaches_the_child():
    notices: list[str] = []
    child = [
        sys.executable,
        "-c",
        "import os, signal, time; os.kill(os.getppid(), signal.SIGINT); time.sleep(0.5); "
        "os.kill(os.getppid(), signal.SIGINT); time.sleep(60)",
    ]
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        SubprocessRunner(notify=notices.append)(child)
    assert time.monotonic() - started < 30
    name = Path(sys.executable).name
    assert notices == [
        f"interrupted: letting {name} finish first",
        f"interrupted again: stopping {name}",
    ]


def test_unshielded_ctrl_c_kills_the_child_at_once(tmp_path):
    pid_file = tmp_path / "child"
    child = [
        sys.executable,
        "-c",
        "import os, signal, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); "
        "os.kill(os.getppid(), signal.SIGINT); time.sleep(60)",
        str(pid_file),
    ]
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        SubprocessRunner(shield=False)(child)
    assert time.monotonic() - started < 30
    assert gone(int(pid_file.read_text()))


def test_guard_ignores_ctrl_c_while_restoring():
    notices: list[str] = []
    guard = InterruptGuard(notices.append, step="pip install")
    with guard.installed():
        guard.handle(signal.SIGINT, None)
        guard.restoring = True
        guard.handle(signal.SIGINT, None)
    assert guard.count == 1
    assert notices == [
        "interrupted: letting pip install finish first",
        "interrupt ignored: restoring the snapshot first",
    ]


def test_shown_is_a_line_a_shell_reads_back():
    assert shown(["python", "-c", "import x; print('a b')", "$HOME"]) == (
        "python -c 'import x; print('\"'\"'a b'\"'\"')' '$HOME'"
    )


def test_a_failed_build_is_told_by_its_own_last_line(tmp_path):
    """pip's last ERROR line of a failed build names no cause; its build's output does."""
    project = tmp_path / "needs_cc"
    project.mkdir()
    (project / "setup.py").write_text(
        "import sys\n"
        "from setuptools import setup\n"
        "if 'bdist_wheel' in sys.argv:\n"
        "    sys.exit('error: no C compiler found (install gcc)')\n"
        "setup(name='needs_cc', version='1.0')\n"
    )
    done = SubprocessRunner()(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-index", "--no-cache-dir",
         "--no-build-isolation", "--disable-pip-version-check", "-q",
         "--wheel-dir", str(tmp_path / "out"), str(project)],
        timeout=120,
    )  # fmt: skip
    assert not done.ok
    assert "Failed to build" in done.stderr  # what the reason used to be
    assert done.reason() == (
        "Failed building wheel for needs-cc: error: no C compiler found (install gcc)"
    ), done.stderr
