"""Each server's default hardened unit starts on a real systemd, serves, and is really sandboxed."""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path

import pytest

from opskit.spec import build_spec
from opskit.systemd.analyze import security_score
from opskit.systemd.units import render_units
from tests.real_systemd.demo import demo_spec, url

pytestmark = [pytest.mark.systemd, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
SERVERS = ["gunicorn", "uvicorn", "uwsgi"]


def documented_scores() -> dict[str, float]:
    """The "default" row of the measured-scores table in docs/hardening.md, by column."""
    lines = (ROOT / "docs" / "hardening.md").read_text(encoding="utf-8").splitlines()
    header = next(line for line in lines if line.startswith("| profile | gunicorn |"))
    row = next(line for line in lines if line.startswith("| default |"))
    names = [c.strip().replace("`", "").replace("uWSGI", "uwsgi") for c in header.split("|")[2:-1]]
    values = [float(c) for c in row.split("|")[2:-1]]
    return dict(zip(names, values, strict=True))


def _status(box, pid: int) -> dict[str, str]:
    pairs = (line.partition(":") for line in box.read_file(f"/proc/{pid}/status").splitlines())
    return {k: v.strip() for k, _, v in pairs}


def _mount_options(box, pid: int, mountpoint: str = "/") -> set[str]:
    """The options of the process's topmost mount at ``mountpoint``, both kinds."""
    # mountinfo: id parent major:minor root mountpoint options [tags] - type source
    # super-options (proc(5)); a later line for the same mount point is on top.
    for line in box.read_file(f"/proc/{pid}/mountinfo").splitlines():
        fields = line.split()
        if fields[4] == mountpoint:
            options = set(fields[5].split(","))
            options |= set(fields[fields.index("-") + 3].split(","))
    return options


@pytest.mark.parametrize("server", SERVERS)
def test_default_hardened_unit_serves_sandboxed(server, boot, tmp_path, measure):
    spec = demo_spec(server)
    files = render_units(spec)
    (tmp_path / files[0].name).write_text(files[0].content)
    box = boot(f"hardened-{server}")
    box.install_units(files)
    started = time.monotonic()
    box.systemctl("start", f"{spec.name}.service")
    box.wait_http(url("/health"), timeout=60)
    seconds = time.monotonic() - started
    measure(f"{server}: default hardened unit, systemctl start to /health 200: {seconds:.2f} s")
    assert box.show(f"{spec.name}.service", "ActiveState")["ActiveState"] == "active"

    pid = box.main_pid(f"{spec.name}.service")
    status = _status(box, pid)
    assert status["NoNewPrivs"] == "1"
    assert status["Seccomp"] == "2"  # 2 = filter mode
    assert int(status["CapEff"], 16) == 0
    assert int(status["CapBnd"], 16) == 0
    assert "ro" in _mount_options(box, pid)
    # The server runs with what ProcSubset=pid and PrivateIPC= give it: its own /proc
    # of process directories only, and an IPC namespace that is not the container's.
    assert "subset=pid" in _mount_options(box, pid, "/proc")
    ipc = box.run("readlink", f"/proc/{pid}/ns/ipc", "/proc/1/ns/ipc").stdout.split()
    assert ipc[0] != ipc[1]
    # The service still writes where it must: its runtime directory.
    assert box.run("test", "-d", f"/run/{spec.name}", check=False).returncode == 0

    score = security_score(tmp_path / files[0].name)
    assert score == documented_scores()[server], box.journal(f"{spec.name}.service")


# Run as the service: what it reaches of /proc, of the system's files and of the IPC
# objects the container's root made outside it; one journal line.
PROBE = textwrap.dedent(
    """\
    import ctypes, errno, json, os, sys, time
    libc = ctypes.CDLL(None, use_errno=True)
    key, queue = int(sys.argv[1]), sys.argv[2].encode()
    def verdict(ok):
        return "ok" if ok else errno.errorcode[ctypes.get_errno()]
    result = {}
    for path in sys.argv[3:]:
        try:
            with open(path, "rb") as f:
                f.read(1)
            result[path] = "ok"
        except OSError as exc:
            result[path] = errno.errorcode[exc.errno]
    try:
        open("/etc/passwd", "a").close()
        result["write /etc/passwd"] = "ok"
    except OSError as exc:
        result["write /etc/passwd"] = errno.errorcode[exc.errno]
    result["shmget"] = verdict(libc.shmget(key, 0, 0) >= 0)
    result["msgget"] = verdict(libc.msgget(key, 0) >= 0)
    result["mq_open"] = verdict(libc.mq_open(queue, os.O_RDONLY) >= 0)
    result["cpu_count"] = os.cpu_count()
    print("PROBE " + json.dumps(result), flush=True)
    time.sleep(3600)
    """
)
# Made by the container's root, outside any sandbox: a SysV shared-memory segment and
# message queue under KEY, and a POSIX message queue; all outlive the process.
HOST_IPC = textwrap.dedent(
    """\
    import ctypes, os, sys
    libc = ctypes.CDLL(None, use_errno=True)
    key, queue = int(sys.argv[1]), sys.argv[2].encode()
    IPC_CREAT = 0o1000
    assert libc.shmget(key, 4096, IPC_CREAT | 0o666) >= 0, ctypes.get_errno()
    assert libc.msgget(key, IPC_CREAT | 0o666) >= 0, ctypes.get_errno()
    assert libc.mq_open(queue, os.O_CREAT | os.O_RDONLY, 0o666, None) >= 0, ctypes.get_errno()
    """
)
IPC_KEY = "424242"
QUEUE = "/opskit-probe"
PROC_FILES = ["/proc/meminfo", "/proc/cpuinfo", "/proc/loadavg", "/proc/sys/kernel/pid_max"]


def _probe(box, unit: str) -> dict[str, object]:
    """What the unit's current run of the probe reported."""
    invocation = box.show(unit, "InvocationID")["InvocationID"]

    def journal() -> str:
        match = f"_SYSTEMD_INVOCATION_ID={invocation}"
        return box.run("journalctl", "--no-pager", match, "-o", "cat").stdout

    box.wait_for(f"{unit}'s probe", lambda: "PROBE " in journal(), timeout=60)
    line = next(line for line in journal().splitlines() if line.startswith("PROBE "))
    result: dict[str, object] = json.loads(line.removeprefix("PROBE "))
    return result


def test_proc_subset_and_private_ipc_are_enforced(boot, tmp_path, measure):
    """A root service under the default profile: no host /proc files, no host IPC, no /etc."""
    box = boot("hardened-probe", app=False)
    box.write_file("/opt/probe/probe.py", PROBE)
    box.write_file("/opt/probe/host_ipc.py", HOST_IPC)
    box.python("/opt/probe/host_ipc.py", IPC_KEY, QUEUE)
    argv = ["/usr/bin/python3", "/opt/probe/probe.py", IPC_KEY, QUEUE, *PROC_FILES]
    spec = build_spec(
        {
            "name": "probe",
            "server": "command",
            "command": [*argv, "/proc/self/status"],
            "working_directory": "/opt/probe",
            # The worst case: root owns the host's files and IPC objects alike.
            "user": "root",
        }
    )
    files = render_units(spec)
    assert "\nProcSubset=pid\n" in files[0].content
    assert "\nPrivateIPC=yes\n" in files[0].content
    box.install_units(files)
    box.systemctl("start", "probe.service")
    result = _probe(box, "probe.service")
    measure(f"hardening: default profile, root probe inside the service: {json.dumps(result)}")
    for path in PROC_FILES:
        assert result[path] == "ENOENT", result
    assert result["/proc/self/status"] == "ok", result
    # ProtectSystem=strict: read-only for root too, whatever the file's owner may do.
    assert result["write /etc/passwd"] == "EROFS", result
    assert (result["shmget"], result["msgget"], result["mq_open"]) == ("ENOENT",) * 3, result
    # CPU counts come from sched_getaffinity() and /sys, not /proc/cpuinfo.
    assert isinstance(result["cpu_count"], int) and result["cpu_count"] >= 1, result

    # The control: the same unit with only the two directives undone reaches all of it,
    # so they, and nothing else of the sandbox, are what hid it.
    box.drop_in("probe.service", "control", "[Service]\nProcSubset=all\nPrivateIPC=no\n")
    box.systemctl("restart", "probe.service")
    result = _probe(box, "probe.service")
    for path in PROC_FILES:
        assert result[path] == "ok", result
    assert (result["shmget"], result["msgget"], result["mq_open"]) == ("ok",) * 3, result
    assert result["write /etc/passwd"] == "EROFS", result

    # What opskit refuses to write (tests/test_hardening_paths.py): with /etc among the
    # writable paths, root opens the host's /etc/passwd for writing.
    box.drop_in("probe.service", "etc", "[Service]\nReadWritePaths=/etc\n")
    box.systemctl("restart", "probe.service")
    assert _probe(box, "probe.service")["write /etc/passwd"] == "ok"
