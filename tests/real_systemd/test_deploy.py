"""Releases on a real systemd: deploy beside the live release, switch, verify, roll back.

The example app is deployed from project directories written here, each with a lock of
the wheelhouse's gunicorn; opskit runs inside the container (this checkout, TOOL_VENV)
and builds every release's venv with the container's own Python, offline, from the
base's wheel cache. Every check is made from outside opskit as well: the version the
service answers, and the working directory of every process of the unit in /proc.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shlex
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from opskit.spec import build_spec
from opskit.systemd.units import render_units
from tests.real_systemd import nspawn
from tests.real_systemd.corpus import OPSKIT
from tests.real_systemd.demo import EXAMPLE, url
from tests.real_systemd.test_canary import BROKEN_AT_IMPORT, BROKEN_LAZILY, _under_load

pytestmark = [pytest.mark.systemd, pytest.mark.timeout(600)]

BASE = "/srv/rel"
CONFIG = "/srv/deploy/opskit.toml"
WHEELS = "/srv/wheels"
RAW: dict[str, Any] = {
    "name": "demo",
    "server": "gunicorn",
    "app": "demoapp:app",
    "port": 8000,
    "workers": 2,
    "base": BASE,
    "graceful_timeout": 5,
    "health_path": "/health",
    "version_path": "/version",
    "deploy_id_file": f"{BASE}/current/VERSION",
    "interpreter": nspawn.SYSTEM_PYTHON,
    "watchdog": 0,
}


def _wheel_pin(wheelhouse: Path, name: str) -> tuple[str, str]:
    path = next(wheelhouse.glob(f"{name}-*.whl"))
    return path.name, path.name.split("-")[1]


def pure_wheel(
    dist: str, version: str, files: dict[str, bytes], requires: tuple[str, ...] = ()
) -> tuple[str, bytes]:
    """A pure-Python wheel of ``files``, with its METADATA, WHEEL and RECORD."""
    info = f"{dist}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {dist.replace('_', '-')}\nVersion: {version}\n"
    metadata += "".join(f"Requires-Dist: {r}\n" for r in requires)
    files = {
        **files,
        f"{info}/METADATA": metadata.encode(),
        f"{info}/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = "".join(
        f"{path},sha256="
        f"{base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},"
        f"{len(data)}\n"
        for path, data in files.items()
    )
    record += f"{info}/RECORD,,\n"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
        archive.writestr(f"{info}/RECORD", record)
    return f"{dist}-{version}-py3-none-any.whl", buffer.getvalue()


def _conflicting_wheel() -> tuple[str, bytes]:
    """A wheel that needs packaging < 1: installed beside packaging 26, pip check fails."""
    return pure_wheel(
        "needs_old_packaging", "1.0", {"needs_old_packaging.py": b""}, ("packaging<1",)
    )


#: uvicorn with a base: a deploy restarts it behind its socket unit (required).
UVICORN = {**RAW, "server": "uvicorn", "app": "demoapp:asgi", "socket": True}
#: What each server's releases lock: the server, its dependencies, and packaging.
UWSGI = {**RAW, "server": "uwsgi"}
LOCKED = {
    "gunicorn": ("gunicorn", "packaging"),
    "uvicorn": ("uvicorn", "click", "h11", "packaging"),
    # uWSGI is an sdist in the wheelhouse: the first deploy builds its wheel into the
    # base's cache (pip wheel, offline from the wheelhouse), later ones reuse it.
    "uwsgi": ("packaging",),
}
SPECS = {"uvicorn": UVICORN, "uwsgi": UWSGI}


def _toml(raw: dict[str, Any]) -> str:
    # JSON strings, numbers and booleans are TOML too.
    return "\n".join(f"{k.replace('_', '-')} = {json.dumps(v)}" for k, v in raw.items())


class Site:
    """One container with the units installed and the wheel cache filled."""

    def __init__(self, box: nspawn.Container, wheelhouse: Path, raw: dict[str, Any] = RAW) -> None:
        self.box = box
        names = []
        self.lock = ""
        for package in LOCKED[raw["server"]]:
            filename, version = _wheel_pin(wheelhouse, package)
            names.append(filename)
            self.lock += f"{package}=={version}\n"
        box.run("mkdir", "-p", f"{BASE}/wheels", "/srv/deploy")
        for filename in names:
            box.run("cp", f"{WHEELS}/{filename}", f"{BASE}/wheels/")
        name, data = _conflicting_wheel()
        box.write_file(f"{BASE}/wheels/{name}", data)
        if raw["server"] == "uwsgi":
            sdist = next(wheelhouse.glob("uwsgi-*.tar.gz"))
            self.lock += f"uWSGI=={sdist.name.removesuffix('.tar.gz').split('-')[1]}\n"
        box.write_file(CONFIG, _toml(raw) + "\n")
        box.install_units(render_units(build_spec(raw)))

    def project(self, tag: str, extra: str = "", lock_extra: str = "") -> str:
        directory = f"/srv/projects/{tag}"
        source = (EXAMPLE / "demoapp.py").read_text() + f"\n# release {tag}\n" + extra
        self.box.write_file(f"{directory}/demoapp.py", source)
        self.box.write_file(f"{directory}/VERSION", "0\n")
        self.box.write_file(f"{directory}/requirements.txt", self.lock + lock_extra)
        return directory

    def opskit(self, *args: str, timeout: float = 600.0):
        # Offline: a pin the base's cache lacks can come from the wheelhouse only.
        env = ["env", f"PIP_FIND_LINKS={WHEELS}", "PIP_NO_INDEX=1"]
        return self.box.run(*env, OPSKIT, *args, "--config", CONFIG, check=False, timeout=timeout)

    def deploy(self, directory: str) -> tuple[Any, dict[str, Any]]:
        proc = self.opskit("deploy", directory, "--json")
        return proc, json.loads(proc.stdout) if proc.stdout.strip() else {}

    def rollback(self, took: list[float]):
        """``opskit rollback --json``, its seconds from the command to verified into ``took``."""
        started = time.monotonic()
        done = self.opskit("rollback", "--json")
        took.append(time.monotonic() - started)
        return done

    def version(self) -> str:
        return self.box.http_get(url("/version")).body.strip()

    def cwds(self) -> set[str]:
        """The working directory of every process of demo.service, from /proc."""
        group = self.box.systemctl("show", "--property=ControlGroup", "--value", "demo.service")
        script = (
            f"for p in $(cat /sys/fs/cgroup{shlex.quote(group.strip())}/cgroup.procs); "
            'do readlink "/proc/$p/cwd"; done'
        )
        out = self.box.run("sh", "-c", script).stdout.split()
        assert out, "demo.service runs no process"
        return set(out)

    def serves(self, release: str) -> None:
        assert self.box.run("readlink", f"{BASE}/current").stdout.strip() == f"releases/{release}"
        for _ in range(8):
            assert self.version() == release
        assert self.cwds() == {f"{BASE}/releases/{release}"}


@pytest.fixture
def site(boot, wheelhouse: Path) -> Site:
    box = boot("deploy", binds=(nspawn.Bind(wheelhouse, WHEELS),), app=False)
    return Site(box, wheelhouse)


def test_deploy_switch_refuse_and_roll_back_under_load(site: Site, measure) -> None:
    proc, first = site.deploy(site.project("v1"))
    assert proc.returncode == 0, proc.stderr + site.box.journal("demo.service")
    v1 = first["release"]
    assert first["status"] == "live" and first["built"], first
    site.serves(v1)

    v2_dir = site.project("v2")
    (proc, second), load = _under_load(site.box, lambda: site.deploy(v2_dir), seconds=30)
    measure(f"deploy v1 -> v2 (gunicorn): {load['failed']} of {load['ok'] + load['failed']} failed")
    assert proc.returncode == 0, proc.stderr
    assert load["failed"] == 0, load
    v2 = second["release"]
    assert v2 != v1 and second["previous"] == v1
    site.serves(v2)

    for tag, extra, lock_extra, why in (
        ("import", BROKEN_AT_IMPORT, "", "does not pass its checks"),
        ("lazy", BROKEN_LAZILY, "", "does not pass its checks"),
        ("conflict", "", "needs-old-packaging==1.0\n", "dependencies conflict"),
    ):
        directory = site.project(f"v3-{tag}", extra, lock_extra)
        (proc, refused), load = _under_load(
            site.box, lambda d=directory: site.deploy(d), seconds=20
        )
        measure(f"deploy v3 broken ({tag}): exit {proc.returncode}, {load['failed']} failed")
        assert proc.returncode == 1, proc.stderr
        assert why in proc.stderr, proc.stderr
        assert refused["status"] == "refused", refused
        assert load["failed"] == 0, load
        site.serves(v2)
        # A refused build leaves no release behind (a refused check keeps its, for rollback
        # and inspection, until pruning).
        if tag == "conflict":
            assert refused["release"] not in site.box.run("ls", f"{BASE}/releases").stdout

    proc, again = site.deploy(v2_dir)
    assert proc.returncode == 0, proc.stderr
    assert again["release"] == v2 and again["status"] == "unchanged", again
    assert "nothing to do" in proc.stderr

    took: list[float] = []
    proc, load = _under_load(site.box, lambda: site.rollback(took), seconds=10)
    measure(f"rollback v2 -> v1 (gunicorn), command to verified: {took[0]:.2f} s under load")
    assert proc.returncode == 0, proc.stderr
    assert load["failed"] == 0, load
    assert json.loads(proc.stdout)["release"] == v1
    site.serves(v1)
    listing = json.loads(site.opskit("releases", "--json").stdout)
    assert listing["live"] == v1 and listing["journal"] is None
    live = [r for r in listing["releases"] if r["live"]]
    assert [r["id"] for r in live] == [v1] and live[0]["pids"], listing


@pytest.mark.parametrize("server", ["uvicorn", "uwsgi"])
def test_uvicorn_and_uwsgi_deploy_and_roll_back_under_load(
    boot, wheelhouse: Path, measure, server: str
) -> None:
    """uvicorn restarts behind its socket unit, uWSGI re-executes (graceful reload): each
    lands in the new release, every process's cwd there, and rolls back alike."""
    box = boot(f"deploy-{server}", binds=(nspawn.Bind(wheelhouse, WHEELS),), app=False)
    site = Site(box, wheelhouse, SPECS[server])
    proc, first = site.deploy(site.project("v1"))
    assert proc.returncode == 0, proc.stderr + box.journal("demo.service")
    v1 = first["release"]
    site.serves(v1)
    v2_dir = site.project("v2")
    (proc, second), load = _under_load(box, lambda: site.deploy(v2_dir), seconds=30)
    measure(f"deploy v1 -> v2 ({server}): {load['failed']} of {load['ok'] + load['failed']} failed")
    assert proc.returncode == 0, proc.stderr
    assert load["failed"] == 0, load
    v2 = second["release"]
    assert v2 != v1 and second["previous"] == v1
    site.serves(v2)
    if server == "uvicorn":
        # The protocol module came from the bootstrap, into the service's runtime directory.
        module = "/run/demo/opskit-python/opskit_uvicorn.py"
        assert box.run("test", "-f", module, check=False).returncode == 0

    took: list[float] = []
    proc, load = _under_load(box, lambda: site.rollback(took), seconds=10)
    measure(
        f"rollback v2 -> v1 ({server}), command to verified: {took[0]:.2f} s, "
        f"{load['failed']} of {load['ok'] + load['failed']} failed"
    )
    assert proc.returncode == 0, proc.stderr
    assert load["failed"] == 0, load
    site.serves(v1)


def test_gunicorn_reloads_after_the_release_it_started_in_is_pruned(boot, wheelhouse: Path):
    """The master started in v1; v1 is pruned; a HUP still reloads (found by bench_deploy).

    gunicorn validates its --chdir default, the cwd it was imported in, on every HUP:
    without $PWD through the link, that was v1's path, and the HUP ended the master.
    """
    box = boot("deploy-prune", binds=(nspawn.Bind(wheelhouse, WHEELS),), app=False)
    site = Site(box, wheelhouse, {**RAW, "keep_releases": 2})
    ids = []
    for tag in ("v1", "v2", "v3"):
        proc, done = site.deploy(site.project(tag))
        assert proc.returncode == 0, proc.stderr + box.journal("demo.service")
        ids.append(done["release"])
    releases = box.run("ls", f"{BASE}/releases").stdout.split()
    assert ids[0] not in releases and ids[2] in releases, releases
    before = box.show("demo.service", "MainPID", "NRestarts")
    box.systemctl("reload", "demo.service")
    site.serves(ids[2])
    assert box.show("demo.service", "MainPID", "NRestarts") == before, box.journal("demo.service")


#: When opskit is killed, as a shell test that turns true at that point of a real run.
KILL_AT = {
    # Its reload script runs its checks (the canary): nothing is switched yet.
    "check": "pgrep -f 'opskit-reload\\.[0-9]+\\.sh' >/dev/null",
    # The journal is written: the switch is next.
    "journal": f"[ -e {BASE}/.opskit-journal.json ]",
    # After the switch, its reload script signals and verifies.
    "reload": (
        f"[ -e {BASE}/.opskit-journal.json ] && pgrep -f 'opskit-reload\\.[0-9]+\\.sh' >/dev/null"
    ),
}


@pytest.mark.parametrize("when", list(KILL_AT))
def test_a_killed_deploy_is_repaired_by_the_next_run(site: Site, when: str, measure) -> None:
    proc, first = site.deploy(site.project("v1"))
    assert proc.returncode == 0, proc.stderr
    v1 = first["release"]
    directory = site.project("v2")
    # SIGKILL to opskit alone (its reload script lives on, orphaned), at a real point.
    script = (
        f"{shlex.quote(OPSKIT)} deploy {directory} --config {CONFIG} & pid=$!; "
        f"until {KILL_AT[when]}; do sleep 0.005; done; kill -KILL $pid; wait $pid; "
        "echo killed $?"
    )
    killed = site.box.run("sh", "-c", script, check=False, timeout=600)
    assert "killed 137" in killed.stdout, killed.stdout + killed.stderr
    proc = site.opskit("releases", "--json")
    assert proc.returncode == 0, proc.stderr
    listing = json.loads(proc.stdout)
    assert listing["journal"] is None, listing
    live = listing["live"]
    if when == "check":
        # Killed before the switch: nothing to repair, the old release serves.
        assert "repair:" not in proc.stderr, proc.stderr
        assert live == v1
    else:
        assert "repair: a deploy switching" in proc.stderr, proc.stderr
    measure(f"deploy killed at {when}: the next run kept {'v1' if live == v1 else 'v2'}")
    site.serves(live)
    # And the next deploy of v2 goes through.
    proc, again = site.deploy(directory)
    assert proc.returncode == 0, proc.stderr
    site.serves(again["release"])


def test_a_release_built_by_uv_deploys_under_load_and_a_conflict_is_refused(
    boot, wheelhouse: Path, measure
) -> None:
    """installer = uv: uv makes each release's venv (no pip in it) and installs it from the
    wheel cache, offline with pip's settings carried over; uv pip check refuses a conflict
    (uv pip install exits 0 on one)."""
    box = boot("deploy-uv", binds=(nspawn.Bind(wheelhouse, WHEELS),), app=False)
    site = Site(box, wheelhouse, {**RAW, "installer": "uv"})
    proc, first = site.deploy(site.project("v1"))
    assert proc.returncode == 0, proc.stderr + box.journal("demo.service")
    v1 = first["release"]
    site.serves(v1)
    assert "build: pip's no-index (PIP_NO_INDEX) -> --no-index" in proc.stderr, proc.stderr
    venv = f"{BASE}/releases/{v1}/venv"
    assert box.run("test", "-e", f"{venv}/bin/pip", check=False).returncode != 0
    assert "uv = " in box.run("cat", f"{venv}/pyvenv.cfg").stdout

    v2_dir = site.project("v2")
    (proc, second), load = _under_load(box, lambda: site.deploy(v2_dir), seconds=30)
    measure(f"deploy v1 -> v2 (uv-built): {load['failed']} of {load['ok'] + load['failed']} failed")
    assert proc.returncode == 0, proc.stderr
    assert load["failed"] == 0, load
    v2 = second["release"]
    assert v2 != v1
    site.serves(v2)

    directory = site.project("v3", lock_extra="needs-old-packaging==1.0\n")
    (proc, refused), load = _under_load(box, lambda: site.deploy(directory), seconds=20)
    measure(f"deploy v3 conflicting (uv-built): exit {proc.returncode}, {load['failed']} failed")
    assert proc.returncode == 1, proc.stderr
    assert "dependencies conflict (uv check)" in proc.stderr, proc.stderr
    assert load["failed"] == 0, load
    site.serves(v2)
    assert refused["release"] not in box.run("ls", f"{BASE}/releases").stdout


#: Pre-switch commands of test_shared_paths_and_pre_switch: where each ran, and from which
#: python (the new release's venv must come first on PATH); the second refuses a release
#: that carries the file REFUSE.
PRE_SWITCH = [
    f"sh -c 'echo \"$PWD $(command -v python)\" >> {BASE}/shared/media/pre.log'",
    "sh -c 'test ! -e REFUSE'",
]


def test_shared_paths_and_pre_switch_commands(boot, wheelhouse: Path, measure) -> None:
    """A shared path is the same directory in every release, readable by a dynamic user;
    pre-switch commands run in the new release, before the switch, and one that fails
    refuses the release while the old one serves."""
    box = boot("deploy-shared", binds=(nspawn.Bind(wheelhouse, WHEELS),), app=False)
    site = Site(box, wheelhouse, {**RAW, "shared": ["media"], "pre_switch": PRE_SWITCH})
    v1_dir = site.project("v1")
    box.write_file(f"{v1_dir}/media/seed.txt", "from v1\n")
    proc, first = site.deploy(v1_dir)
    assert proc.returncode == 0, proc.stderr + box.journal("demo.service")
    v1 = first["release"]
    site.serves(v1)

    v2_dir = site.project("v2")
    box.write_file(f"{v2_dir}/media/seed.txt", "from v2\n")
    (proc, second), load = _under_load(box, lambda: site.deploy(v2_dir), seconds=30)
    measure(f"deploy with shared + pre-switch: {load['failed']} of {load['ok'] + load['failed']}")
    assert proc.returncode == 0, proc.stderr
    assert load["failed"] == 0, load
    v2 = second["release"]
    site.serves(v2)
    log = box.run("cat", f"{BASE}/shared/media/pre.log").stdout.splitlines()
    assert log == [f"{BASE}/releases/{r} {BASE}/releases/{r}/venv/bin/python" for r in (v1, v2)], (
        log
    )
    # The first release seeded the shared directory; later ones link to it, their own
    # copy of the path left out.
    assert box.run("readlink", f"{BASE}/releases/{v2}/media").stdout.strip() == (
        f"{BASE}/shared/media"
    )
    read = box.run(
        "systemd-run", "--wait", "--pipe", "--quiet", "-p", "DynamicUser=yes",
        "cat", f"{BASE}/current/media/seed.txt",
    )  # fmt: skip
    assert read.stdout == "from v1\n", read.stdout + read.stderr

    v3_dir = site.project("v3")
    box.write_file(f"{v3_dir}/REFUSE", "")
    (proc, refused), load = _under_load(box, lambda: site.deploy(v3_dir), seconds=20)
    measure(f"deploy refused by pre-switch: exit {proc.returncode}, {load['failed']} failed")
    assert proc.returncode == 1, proc.stderr
    assert "pre-switch \"sh -c 'test ! -e REFUSE'\" failed" in proc.stderr, proc.stderr
    assert refused["status"] == "refused", refused
    assert load["failed"] == 0, load
    site.serves(v2)
