"""``opskit ansible`` for real: ansible-playbook over SSH into three booted systemd hosts.

Each host is an nspawn container with a real systemd, in a network namespace of its own
with a veth pair and addresses made here (10.231.N.2, the controller's end 10.231.N.1),
and an sshd of its own (its config and host key made here). Ansible logs in as a
non-root user with sudo (become). The controller is this machine: it builds the wheels
offline from the wheelhouse and gates each host over its veth address. No traffic goes
anywhere but to the addresses made here.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.real_systemd import nspawn
from tests.real_systemd.demo import EXAMPLE, url

pytestmark = [pytest.mark.systemd, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
HOSTS = 3
NAME = "fleetapp"
BASE = f"/srv/{NAME}"
SSH_DIR = "/etc/ssh-fleet"
#: The Host header the gates send to host N; v3 refuses h2's, as Django's ALLOWED_HOSTS
#: refuses a name it lacks (the host's own canary asks by its loopback address and passes).
FQDN = "h{}.fleet.test"
REFUSE_H2 = """

_served = app


def app(environ, start_response):
    if environ.get("HTTP_HOST", "").split(":")[0] == "h2.fleet.test":
        start_response("400 Bad Request", [("Content-Type", "text/plain")])
        return [b"Invalid HTTP_HOST header\\n"]
    return _served(environ, start_response)
"""
PYPROJECT = """\
[project]
name = "fleetapp"
version = "1"

[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[tool.hatch.build.targets.wheel]
include = ["demoapp.py"]

[tool.opskit]
name = "fleetapp"
server = "gunicorn"
app = "demoapp:app"
host = "0.0.0.0"
port = 8000
workers = 2
base = "/srv/fleetapp"
health-path = "/health"
version-path = "/version"
deploy-id-file = "/srv/fleetapp/current/VERSION"
interpreter = "/usr/bin/python3"
installer = "uv"
watchdog = 0
# h1 and h2 in the first batch, h3 in the next: a failure on h2 stops h3.
serial = [2, "100%"]
graceful-timeout = 5

# The module is installed from the app's wheel, away from the release: it reads the
# release's deploy-id file from its working directory, the new release in the canary.
[tool.opskit.environment]
DEMOAPP_VERSION_FILE = "VERSION"
"""
SSHD_CONFIG = """\
ListenAddress {address}
Port 22
HostKey {dir}/host_ed25519
AuthorizedKeysFile {dir}/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin no
PidFile /run/sshd-fleet.pid
Subsystem sftp /usr/lib/openssh/sftp-server
"""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def _address(i: int, end: int) -> str:
    return f"10.231.{i}.{end}"


@contextlib.contextmanager
def _network(i: int) -> Iterator[str]:
    """A network namespace with a veth pair: 10.231.I.1 here, 10.231.I.2 inside."""
    netns, veth = f"opskit-fleet-{os.getpid()}-{i}", f"ofl{os.getpid() % 100000}-{i}"
    # A run that was killed may have left its pair holding the subnet.
    for line in _ip("-o", "-4", "addr", "show", "to", f"10.231.{i}.0/24").stdout.splitlines():
        _ip("link", "del", line.split()[1].split("@")[0], check=False)
    _ip("netns", "add", netns)
    try:
        _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
        _ip("addr", "add", f"{_address(i, 1)}/24", "dev", veth)
        _ip("link", "set", veth, "up")
        _ip("-n", netns, "addr", "add", f"{_address(i, 2)}/24", "dev", "eth0")
        _ip("-n", netns, "link", "set", "eth0", "up")
        _ip("-n", netns, "link", "set", "lo", "up")
        yield netns
    finally:
        _ip("link", "del", veth, check=False)
        _ip("netns", "del", netns, check=False)


def _sshd(box: nspawn.Container, i: int) -> None:
    """The deploy user with sudo, sshd's own user, and sshd on the host's veth address."""
    # Installed on this machine, openssh-server's presets enable ssh.socket in a volatile
    # container: it holds port 22 for an sshd with no config, which resets every login.
    box.run("systemctl", "stop", "ssh.socket", "ssh.service", check=False)
    for argv in (
        ["useradd", "--system", "--no-create-home", "--home-dir", "/run/sshd",
         "--shell", "/usr/sbin/nologin", "sshd"],
        ["useradd", "--create-home", "--shell", "/bin/bash", "deploy"],
        # A usable password field: a locked account ("!") may not log in, even by key.
        ["usermod", "-p", "*", "deploy"],
        ["mkdir", "-p", "-m", "0755", "/run/sshd"],
    ):  # fmt: skip
        box.run(*argv)
    # No PAM session: the host's session stack (pam_systemd, pam_limits) fails in here.
    sudoers = "Defaults !pam_session\ndeploy ALL=(ALL:ALL) NOPASSWD: ALL\n"
    box.write_file("/etc/sudoers", sudoers, mode=0o440)
    # sudo looks its host name up: a volatile /etc has no /etc/hosts.
    box.write_file("/etc/hosts", f"127.0.0.1 localhost {box.name}\n")
    box.run(
        "systemd-run", "--unit=sshd-fleet", "/usr/sbin/sshd", "-D", "-e",
        "-f", f"{SSH_DIR}/sshd_config",
    )  # fmt: skip


def _keys(tmp: Path) -> Path:
    key = tmp / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key


def _host_dir(tmp: Path, i: int, pub: str) -> Path:
    directory = tmp / f"ssh-h{i}"
    directory.mkdir(mode=0o755)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(directory / "host_ed25519")],
        check=True,
    )
    (directory / "sshd_config").write_text(SSHD_CONFIG.format(address=_address(i, 2), dir=SSH_DIR))
    (directory / "authorized_keys").write_text(pub)
    for path in directory.iterdir():
        path.chmod(0o600 if path.name == "host_ed25519" else 0o644)
    return directory


class Fleet:
    """The controller's side: the app project, the generated files, ansible-playbook."""

    def __init__(
        self,
        tmp: Path,
        wheelhouse: Path,
        key: Path,
        boxes: list[nspawn.Container],
        pyproject: str = PYPROJECT,
    ) -> None:
        self.tmp, self.wheelhouse, self.boxes = tmp, wheelhouse, boxes
        self.project = tmp / "app"
        self.project.mkdir()
        (self.project / "pyproject.toml").write_text(pyproject)
        pins = [self._pin("gunicorn"), self._pin("packaging")]
        (self.project / "requirements.txt").write_text("\n".join(pins) + "\n")
        self.out = tmp / "ansible"
        made = subprocess.run(
            [sys.executable, "-m", "opskit", "ansible", "--config",
             str(self.project / "pyproject.toml"), "-o", str(self.out), "--validate"],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
        hosts = {
            f"h{i}": {"ansible_host": _address(i, 2), "opskit_http_host": FQDN.format(i)}
            for i in range(1, HOSTS + 1)
        }
        inventory = {
            "all": {
                "children": {
                    NAME: {
                        "hosts": hosts,
                        "vars": {
                            "ansible_user": "deploy",
                            "ansible_ssh_private_key_file": str(key),
                            "ansible_python_interpreter": nspawn.SYSTEM_PYTHON,
                            "ansible_ssh_common_args": (
                                "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"
                            ),
                        },
                    }
                }
            }
        }
        # JSON is YAML.
        (self.out / "inventory.yml").write_text(json.dumps(inventory, indent=1))
        home = tmp / "ansible-home"
        self.env = {
            **os.environ,
            "ANSIBLE_CONFIG": str(self.out / "ansible.cfg"),
            "ANSIBLE_HOME": str(home),
            "ANSIBLE_LOCAL_TEMP": str(home / "tmp"),
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(home / "cp"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
        }
        self.extra = {
            "opskit_pip_args": ["--no-index", "--find-links", str(wheelhouse)],
            # This checkout, not a release from an index.
            "opskit_package": f"{ROOT}[uv]",
            "opskit_gate_retries": 3,
        }

    def _pin(self, name: str) -> str:
        wheel = next(self.wheelhouse.glob(f"{name}-*.whl"))
        return f"{name}=={wheel.name.split('-')[1]}"

    def release(self, tag: str, extra: str = "") -> None:
        code = (EXAMPLE / "demoapp.py").read_text() + f"\n# release {tag}\n" + extra
        (self.project / "demoapp.py").write_text(code)

    def bin(self, name: str) -> str:
        return str(Path(sys.executable).parent / name)

    def playbook(self, name: str, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
        started = time.monotonic()
        done = subprocess.run(
            [self.bin("ansible-playbook"), name, "-e", json.dumps(self.extra), *args],
            cwd=self.out, env=self.env, capture_output=True, text=True, timeout=400,
            check=False,
        )  # fmt: skip
        return done, time.monotonic() - started

    def hostnames(self) -> dict[str, str]:
        done = subprocess.run(
            [self.bin("ansible"), NAME, "-m", "command", "-a", "hostname", "-o"],
            cwd=self.out, env=self.env, capture_output=True, text=True, timeout=120,
            check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        found = re.findall(r"^(h\d) \| CHANGED \| rc=0 \| \(stdout\) (\S+)$", done.stdout, re.M)
        return dict(found)

    def live(self, box: nspawn.Container) -> str:
        return box.run("readlink", f"{BASE}/current").stdout.strip().removeprefix("releases/")

    def releases(self, box: nspawn.Container) -> list[str]:
        return box.run("ls", f"{BASE}/releases").stdout.split()

    def serves(self, box: nspawn.Container) -> str:
        """The release the host answers on /version, the same as its live release."""
        answer = box.http_get(url("/version")).body.strip()
        assert answer == self.live(box), (answer, self.live(box))
        return answer


def content(release: str) -> str:
    """A release ID's content hash: each host builds at its own time, with the same hash."""
    return release.rsplit("-", 1)[1]


def _recap(stdout: str) -> dict[str, dict[str, int]]:
    out = {}
    for host, counts in re.findall(r"^(\S+)\s+:\s+(ok=.*)$", stdout, re.M):
        out[host] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", counts)}
    return out


@contextlib.contextmanager
def _loads(boxes: list[nspawn.Container], seconds: float = 300) -> Iterator[list[dict[str, Any]]]:
    """A bounded load on each host (4 clients x 25 req/s on /version), until the block ends."""
    results: list[dict[str, Any]] = []
    procs = []
    for box in boxes:
        box.run("rm", "-f", "/run/fleet-load.stop")
        proc = box.popen(
            nspawn.SYSTEM_PYTHON, "/srv/harness/inside.py", "load", url("/version"),
            "--seconds", str(seconds), "--clients", "4", "--rate", "25",
            "--stop-file", "/run/fleet-load.stop",
        )  # fmt: skip
        assert proc.stdout is not None and proc.stdout.readline().strip() == "started"
        procs.append(proc)
    try:
        yield results
    finally:
        for box in boxes:
            box.run("touch", "/run/fleet-load.stop")
        for proc in procs:
            out, _ = proc.communicate(timeout=60)
            results.append(json.loads(out.strip().splitlines()[-1]))


@contextlib.contextmanager
def hosts(tmp: Path, count: int = HOSTS) -> Iterator[tuple[list[nspawn.Container], Path]]:
    """``count`` booted hosts, each with its network and sshd, and the key that logs in."""
    key = _keys(tmp)
    pub = key.with_suffix(".pub").read_text()
    with contextlib.ExitStack() as stack:
        boxes = []
        for i in range(1, count + 1):
            netns = stack.enter_context(_network(i))
            binds = [
                nspawn.Bind(_host_dir(tmp, i, pub), SSH_DIR),
                # sudo reads its PAM stack; a volatile /etc has none.
                nspawn.Bind(Path("/etc/pam.d"), "/etc/pam.d"),
            ]
            box = nspawn.Container(f"fleet-h{i}", tmp / "containers", binds=binds, netns=netns)
            stack.callback(box.teardown)
            box.boot()
            _sshd(box, i)
            boxes.append(box)
        yield boxes, key


@pytest.fixture
def fleet(wheelhouse: Path, tmp_path: Path) -> Iterator[Fleet]:
    if shutil.which("sshd") is None and not Path("/usr/sbin/sshd").exists():
        pytest.fail("openssh-server is not installed (.ci/run installs it)")
    with hosts(tmp_path) as (boxes, key):
        yield Fleet(tmp_path, wheelhouse, key, boxes)


def test_a_rolling_deploy_gated_per_host_stops_and_rolls_back_at_the_failing_one(
    fleet: Fleet, measure
) -> None:
    boxes = fleet.boxes
    # Each host answers as itself: no shared ssh connection runs one host's tasks on another.
    names = fleet.hostnames()
    assert names == {f"h{i}": boxes[i - 1].name for i in range(1, HOSTS + 1)}, names

    fleet.release("v1")
    done, took = fleet.playbook("deploy.yml")
    measure(f"fleet: v1 to 3 hosts (first, opskit installed on each) in {took:.1f} s")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    v1 = {content(fleet.serves(box)) for box in boxes}
    assert len(v1) == 1, v1

    fleet.release("v2")
    with _loads(boxes) as loads:
        done, took = fleet.playbook("deploy.yml")
    failed = sum(load["failed"] for load in loads)
    total = failed + sum(load["ok"] for load in loads)
    measure(f"fleet: v1 -> v2 on 3 hosts under load in {took:.1f} s, {failed} of {total} failed")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert failed == 0, loads
    v2_ids = [fleet.serves(box) for box in boxes]
    v2 = {content(r) for r in v2_ids}
    assert len(v2) == 1 and v2 != v1, (v1, v2)

    # The same release again: nothing changes anywhere.
    done, took = fleet.playbook("deploy.yml")
    measure(f"fleet: the same release again in {took:.1f} s")
    assert done.returncode == 0, done.stdout[-3000:]
    recap = _recap(done.stdout)
    assert {h: c["changed"] for h, c in recap.items()} == {
        "localhost": 0, "h1": 0, "h2": 0, "h3": 0,
    }, recap  # fmt: skip
    check, _ = fleet.playbook("deploy.yml", "--check", "--diff")
    assert check.returncode == 0, check.stdout[-3000:]
    assert all(c["changed"] == 0 for c in _recap(check.stdout).values()), check.stdout[-2000:]

    fleet.release("v3", REFUSE_H2)
    with _loads(boxes) as loads:
        done, took = fleet.playbook("deploy.yml")
    failed = sum(load["failed"] for load in loads)
    measure(f"fleet: v3 refused by h2's gate in {took:.1f} s, {failed} failed")
    assert done.returncode != 0, done.stdout[-3000:]
    assert failed == 0, loads
    h1, h2, h3 = boxes
    v3 = content(fleet.serves(h1))
    assert v3 not in v2
    # h2 built v3 and went back to its v2; h3 was never touched.
    assert fleet.serves(h2) == v2_ids[1]
    assert v3 in {content(r) for r in fleet.releases(h2)}
    assert fleet.serves(h3) == v2_ids[2]
    assert v3 not in {content(r) for r in fleet.releases(h3)}
    message = done.stdout + done.stderr
    assert 'h2 failed "Gate - the health path answers, asked from the controller"' in message, (
        message[-3000:]
    )
    assert f"rolled back to {v2_ids[1]}" in message and "the rollout stops here" in message


def test_the_rollback_playbook_takes_every_host_back_gated_under_load(
    fleet: Fleet, measure
) -> None:
    boxes = fleet.boxes
    fleet.release("v1")
    # --limit leaves the controller's build play out unless it names localhost too.
    done, _ = fleet.playbook("deploy.yml", "--limit", "h1")
    assert done.returncode != 0
    assert "with --limit, name localhost" in done.stdout, done.stdout[-3000:]
    assert "nothing was switched there" in done.stdout
    done, _ = fleet.playbook("deploy.yml")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    v1_ids = [fleet.serves(box) for box in boxes]
    fleet.release("v2")
    done, _ = fleet.playbook("deploy.yml")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    v2_ids = [fleet.serves(box) for box in boxes]
    assert {content(r) for r in v2_ids}.isdisjoint(content(r) for r in v1_ids)

    with _loads(boxes) as loads:
        done, took = fleet.playbook("rollback.yml")
    failed = sum(load["failed"] for load in loads)
    total = failed + sum(load["ok"] for load in loads)
    measure(
        f"fleet: rollback.yml, 3 hosts back under load in {took:.1f} s, {failed} of {total} failed"
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert failed == 0, loads
    assert [fleet.serves(box) for box in boxes] == v1_ids
    # Forward again: the same v2 content, so each host switches to the v2 it built (the
    # same release IDs: a rebuild would have a new time in its ID).
    done, took = fleet.playbook("deploy.yml")
    measure(f"fleet: forward again to the v2 each host built in {took:.1f} s")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert [fleet.serves(box) for box in boxes] == v2_ids
