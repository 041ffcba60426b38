"""The harness cleans up after itself: on errors, and when the container will not power off."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.real_systemd import nspawn

pytestmark = [pytest.mark.systemd, pytest.mark.timeout(300)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes; it only waits for its parent.
    return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"


def test_error_inside_tears_everything_down(systemd_host, tmp_path):
    pids: list[int] = []
    cgroups: list[Path] = []
    with pytest.raises(RuntimeError, match="boom"), nspawn.booted("harness", tmp_path) as box:
        pids += [box.pid1, box.nspawn_pid or 0]
        cgroups += box.cgroups
        assert box.systemctl("is-system-running").strip() in ("running", "degraded")
        box.write_file("/etc/marker", "x")
        assert box.run("cat", "/etc/marker").stdout == "x"
        raise RuntimeError("boom")
    assert not any(_alive(pid) for pid in pids)
    assert cgroups and not any(p.exists() for p in cgroups)


def test_hung_poweroff_is_killed(systemd_host, tmp_path):
    box = nspawn.Container("harness-hung", tmp_path, stop_timeout=2)
    box.boot()
    # Start a service inside, then freeze nspawn itself: SIGTERM cannot power it off.
    box.run("systemd-run", "--unit=sleeper", "/usr/bin/sleep", "600")
    assert int(box.show("sleeper.service", "MainPID")["MainPID"]) > 0
    cgroups = box.cgroups
    # Every process of the container as the host sees it: nspawn, PID 1, the sleeper ...
    pids = {int(p) for d in cgroups for f in d.rglob("cgroup.procs") for p in f.read_text().split()}
    assert box.pid1 in pids and len(pids) >= 4
    assert box.nspawn_pid is not None
    os.kill(box.nspawn_pid, signal.SIGSTOP)
    box.teardown()
    assert not any(_alive(pid) for pid in pids)
    assert not any(p.exists() for p in cgroups)


def test_containers_of_one_name_keep_apart(systemd_host, tmp_path):
    # make test boots two containers at once (two pytest workers): the same test name, or
    # two tests asking for the same name, must never meet in a machine name, a cgroup or
    # a file. Within one process the counter tells them apart, across processes the PID.
    with (
        nspawn.booted("harness-twin", tmp_path) as one,
        nspawn.booted("harness-twin", tmp_path) as two,
    ):
        assert one.name != two.name
        assert one.name.startswith(f"harness-twin-{os.getpid()}-")
        assert not set(one.cgroups) & set(two.cgroups)
        for box in (one, two):
            assert box.run("cat", "/proc/sys/kernel/hostname").stdout.strip() == box.name
        one.write_file("/etc/marker", "one")
        assert two.run("test", "-e", "/etc/marker", check=False).returncode != 0
        # Each has its own loopback: the same port is free in both.
        for box in (one, two):
            box.run(
                "systemd-run",
                "--unit=listener",
                *("/usr/bin/python3", "-m", "http.server", "--bind", "127.0.0.1", "8000"),
            )
        for box in (one, two):
            box.wait_http("http://127.0.0.1:8000/", timeout=30)
        cgroups = one.cgroups
        one.teardown()
        assert not any(p.exists() for p in cgroups)
        assert two.systemctl("is-active", "listener.service").strip() == "active"
