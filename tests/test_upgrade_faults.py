# ruff: noqa: F811 (the fixtures of test_upgrade_pip are shared by importing them)
"""Upgrades under faults: double Ctrl-C, SIGKILL, two at once, a hostile cwd, a hung --python.

Real pip in throwaway venvs, wheels built here, offline. Each test asserts what the
user is told AND what the environment really is: "back as it was" must be true to the
file, and a run after a killed one must find it and put the snapshot back.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from opskit.upgrade import environment
from tests.test_upgrade_pip import (  # noqa: F401 (fixtures)
    Venv,
    _pip_child,
    _rest,
    _wait_for,
    big_wheel,
    history,
    install_then_forget,
    make_wheel,
    processes,
    template_venv,
    upgrade_args,
    venv,
    wheels,
    workdir,
)

pytestmark = [pytest.mark.pip, pytest.mark.timeout(600)]


def _opskit(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "opskit", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _start(cwd: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "opskit", *args],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _stashes(venv: Venv) -> list[str]:
    site = next(venv.path.glob("lib/python*/site-packages"))
    return sorted(p.name for p in site.iterdir() if p.name.startswith("~"))


def _bulk(venv: Venv, tmp_path: Path, wheels: Path) -> None:
    old = tmp_path / "bulk-old"
    big_wheel(old, "1.0")
    venv.pip("install", "--no-deps", "bulk==1.0", links=old)
    import shutil

    shutil.rmtree(old)
    big_wheel(wheels, "2.0")


def _tree(pids: tuple[int, ...]) -> list[psutil.Process]:
    """The processes and everything under them; one that exits meanwhile is left out."""
    found: dict[int, psutil.Process] = {}
    for pid in pids:
        try:
            parent = psutil.Process(pid)
            found.setdefault(parent.pid, parent)
            for child in parent.children(recursive=True):
                found.setdefault(child.pid, child)
        except psutil.NoSuchProcess:
            continue
    return list(found.values())


def _kill_tree(*pids: int) -> None:
    """SIGKILL the processes and everything under them.

    SIGSTOP first, so that none of them can start another while the tree is read;
    then the tree is read again from the stopped processes and all of it is killed.
    A process that exits on its own in between is simply gone."""
    stopped = _tree(pids)
    for proc in stopped:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.suspend()
    procs = _tree(tuple(p.pid for p in stopped))
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(procs, timeout=30)


# --- double Ctrl-C ------------------------------------------------------------------------


@pytest.mark.parametrize("gap", [0.0, 0.15, 0.4, 0.8])
def test_a_double_ctrl_c_is_restored_or_said_not_to_be(
    venv, wheels, workdir, tmp_path, processes, gap
):
    """Never a false "back as it was": either the files are exactly as before, or the
    message says the environment is NOT as it was."""
    _bulk(venv, tmp_path, wheels)
    before = venv.state()
    proc = _start(workdir, *upgrade_args(venv, wheels, "bulk==2.0"))
    processes.append(proc)
    seen = _wait_for(proc, "install")
    _pip_child(proc)
    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(gap)
    os.killpg(proc.pid, signal.SIGINT)
    err = "".join(seen) + _rest(proc)
    assert proc.returncode in (1, 130), err
    if "back as it was" in err:
        assert venv.state() == before, err
        assert _stashes(venv) == []
    else:
        assert "the environment is NOT as it was" in err, err
        # ... and what it names as the way back works.
        result = _opskit("upgrade", "--recover", "--python", venv.python, cwd=workdir)
        assert result.returncode == 0, result.stderr
        assert venv.state() == before


# --- SIGKILL ------------------------------------------------------------------------------


def _kill_at(proc: subprocess.Popen[str], point: str) -> str:
    """Run until ``point``, then SIGKILL opskit and its children (pip, the smoke command)."""
    if point == "snapshot":
        seen = _wait_for(proc, "snapshot")
    elif point == "install start":
        seen = _wait_for(proc, "install")
        _pip_child(proc)
    elif point == "mid-install":
        seen = _wait_for(proc, "install")
        _pip_child(proc)
        time.sleep(0.4)
    else:
        seen = _wait_for(proc, "smoke")
    _kill_tree(proc.pid)
    proc.wait(timeout=30)
    return "".join(seen)


@pytest.mark.parametrize("point", ["snapshot", "install start", "mid-install", "smoke"])
def test_the_run_after_a_sigkill_restores_the_snapshot(
    venv, wheels, workdir, tmp_path, processes, point
):
    _bulk(venv, tmp_path, wheels)
    before = venv.state()
    smoke = "python -c 'import time; time.sleep(60)'"
    proc = _start(workdir, *upgrade_args(venv, wheels, "bulk==2.0"), "--smoke", smoke)
    processes.append(proc)
    _kill_at(proc, point)

    status = _opskit("upgrade", "--status", "--python", venv.python, cwd=workdir)
    assert status.returncode == 0, status.stderr
    if point != "snapshot":
        assert "unfinished" in status.stdout and "its run is gone" in status.stdout, status.stdout
    assert "lock       free" in status.stdout

    # The next upgrade finds the dead one's marker first, and puts its snapshot back.
    result = _opskit(*upgrade_args(venv, wheels, "bulk==1.0"), cwd=workdir)
    assert result.returncode == 0, result.stderr
    if point != "snapshot":
        assert "ended without finishing" in result.stderr
        assert "back as it was before that upgrade (bulk 1.0)" in result.stderr
    assert "nothing to do" in result.stderr
    assert venv.state() == before
    assert _stashes(venv) == []
    status = _opskit("upgrade", "--status", "--python", venv.python, cwd=workdir)
    assert "unfinished none" in status.stdout


def test_recover_on_its_own(venv, wheels, workdir, tmp_path, processes):
    _bulk(venv, tmp_path, wheels)
    before = venv.state()
    proc = _start(workdir, *upgrade_args(venv, wheels, "bulk==2.0"))
    processes.append(proc)
    _kill_at(proc, "mid-install")
    result = _opskit("upgrade", "--recover", "--python", venv.python, cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert "restoring its snapshot" in result.stderr
    assert venv.state() == before
    again = _opskit("upgrade", "--recover", "--python", venv.python, cwd=workdir)
    assert again.returncode == 0
    assert "nothing to recover" in again.stderr
    assert history(venv)[-1]["result"] == "recovered"


# --- two upgrades at once -----------------------------------------------------------------


def test_two_upgrades_of_one_venv_take_turns(venv, wheels, workdir, tmp_path, processes):
    _bulk(venv, tmp_path, wheels)
    big_wheel(wheels, "3.0")
    first = _start(workdir, *upgrade_args(venv, wheels, "bulk==2.0"))
    processes.append(first)
    seen = _wait_for(first, "install")
    second = _start(workdir, *upgrade_args(venv, wheels, "bulk==3.0"))
    processes.append(second)
    waiting = _wait_for(second, "wait")
    assert f"another opskit upgrade (pid {first.pid})" in waiting[-1]
    assert _rest(first) is not None and first.returncode == 0, "".join(seen)
    err = "".join(waiting) + _rest(second)
    assert second.returncode == 0, err
    # The second planned on what the first left: 2.0 -> 3.0, not 1.0 -> 3.0.
    assert "bulk 2.0 -> 3.0" in err, err
    assert venv.versions()["bulk"] == "3.0"
    lines = history(venv)
    assert [(h["from"], h["to"], h["result"]) for h in lines] == [
        ({"bulk": "1.0"}, {"bulk": "2.0"}, "ok"),
        ({"bulk": "2.0"}, {"bulk": "3.0"}, "ok"),
    ]


def test_no_wait_names_the_holder(venv, wheels, workdir, tmp_path, processes):
    _bulk(venv, tmp_path, wheels)
    with venv.hold():
        first = _start(workdir, *upgrade_args(venv, wheels, "bulk==2.0"))
        processes.append(first)
        _wait_for(first, "install")
        pip = _pip_child(first)
        # Hold the first run inside its install while the second looks at the lock.
        os.killpg(pip, signal.SIGSTOP)
    try:
        second = _opskit(*upgrade_args(venv, wheels, "bulk==2.0"), "--no-wait", cwd=workdir)
        status = _opskit("upgrade", "--status", "--python", venv.python, cwd=workdir)
    finally:
        os.killpg(pip, signal.SIGCONT)
    assert second.returncode == 1, second.stderr
    assert f"another opskit upgrade (pid {first.pid}) is changing this environment" in (
        second.stderr
    )
    assert f"held by pid {first.pid}" in status.stdout
    _rest(first)
    assert first.returncode == 0


# --- the inspection ------------------------------------------------------------------------


def test_a_dist_info_in_the_current_directory_is_not_taken_for_installed(
    cli, venv, wheels, workdir, tmp_path
):
    install_then_forget(venv, tmp_path, [("alpha", "1.0")])
    make_wheel(wheels, "alpha", "3.0")
    # What unpacking a wheel or a build leaves in a project directory.
    meta = workdir / "alpha-3.0.dist-info"
    meta.mkdir()
    (meta / "METADATA").write_text("Metadata-Version: 2.1\nName: alpha\nVersion: 3.0\n")
    result = cli(*upgrade_args(venv, wheels, "alpha==3.0"))
    assert result.code == 0, result.err
    assert "alpha 1.0 -> 3.0" in result.err
    assert venv.versions()["alpha"] == "3.0"


def test_a_python_that_never_answers_is_refused(cli, workdir, monkeypatch):
    hung = workdir / "python"
    hung.write_text("#!/bin/sh\nexec sleep 600\n")
    hung.chmod(0o755)
    monkeypatch.setattr(environment, "INSPECT_TIMEOUT", 1.0)
    started = time.monotonic()
    result = cli("upgrade", "alpha==1.0", "--python", str(hung))
    assert result.code == 2
    assert result.err == f"opskit: error: {hung}: did not answer within 1 s; is it Python?\n"
    assert time.monotonic() - started < 60
    assert not [
        p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == ["sleep", "600"]
    ]
