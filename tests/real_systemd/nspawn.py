"""A throwaway real systemd for integration tests: boot, run inside, install units, tear down.

The container boots the host's own ``/usr`` read-only on a tmpfs root
(``systemd-nspawn --directory=/ --volatile=yes --boot``), with a private network (loopback
only), so ports never collide with the host or with another container. There is no
machined or D-Bus on the host, so everything inside is driven through ``nsenter`` into
the container's PID 1.

API (see tests/real_systemd/README.md for a walk-through)::

    with Container("demo", workdir, binds=[Bind(app_dir, "/srv/demoapp")]) as box:
        box.install_units(render_units(spec))        # into /etc/systemd/system + daemon-reload
        box.systemctl("start", "demo.service")
        assert box.http_get("http://127.0.0.1:8000/health").status == 200
        box.run("cat", "/proc/1/status")               # any command, as root, inside

Every container gets its own cgroup subtree on the host (both hierarchies); teardown
powers the container off (SIGTERM to nspawn), falls back to SIGKILL of the nspawn
process group and of every process left in that subtree, then removes the subtree.
Mounts live in nspawn's own mount namespace and vanish with it.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import itertools
import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HARNESS = Path(__file__).resolve().parent
#: Where the harness directory (inside.py, the HTTP client) is visible in every container.
HARNESS_MOUNT = "/srv/harness"
#: Where the prebuilt virtual environments are visible in every container: the servers
#: (gunicorn, uvicorn, uWSGI) in one, this checkout's opskit in the other.
SERVERS_VENV = "/opt/opskit-test/servers"
TOOL_VENV = "/opt/opskit-test/tool"
#: The real-app corpus (tests/real_systemd/corpus.py): the three servers and the published
#: apps and frameworks of corpus.txt in one venv, so each app can be served by each server.
CORPUS_VENV = "/opt/opskit-test/corpus"
#: Debian's interpreter: the container sees the host's /usr, not the project's own Python.
SYSTEM_PYTHON = "/usr/bin/python3"

_CGROUP_ROOTS = (Path("/sys/fs/cgroup/systemd"), Path("/sys/fs/cgroup/unified"))
_INSIDE_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_counter = itertools.count()
_live: set[Container] = set()


class HarnessError(RuntimeError):
    """Raised when the container cannot be booted, driven or a command inside fails."""


def _unique(name: str) -> str:
    """A machine name no other container on this host has: NAME-PID-N.

    The PID tells apart the pytest processes that boot containers at once (make test runs
    two workers), the counter the containers of one process. Machine names become the
    container's hostname (and its cgroup's name): short and plain.
    """
    return f"{name[:40]}-{os.getpid()}-{next(_counter)}"


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created) for the ``with`` block.

    For what one of several processes builds and the others then use: the pytest
    workers of one run, and other runs on the same machine sharing build/.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def unavailable_reason() -> str | None:
    """Why real-systemd tests cannot run on this machine, or None when they can."""
    if os.geteuid() != 0:
        return "needs root (systemd-nspawn boots a container)"
    for tool in ("systemd-nspawn", "nsenter"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install systemd-container util-linux)"
    if not Path(SYSTEM_PYTHON).is_file():
        return f"{SYSTEM_PYTHON} is missing (the container's interpreter)"
    if not all(root.is_dir() for root in _CGROUP_ROOTS[1:]):
        return "no cgroup2 hierarchy at /sys/fs/cgroup/unified"
    return None


@dataclass(frozen=True)
class Bind:
    """A host directory (or file) made visible at ``target`` inside the container."""

    source: Path
    target: str
    read_only: bool = True

    def flag(self) -> str:
        """The systemd-nspawn option for this bind."""
        kind = "--bind-ro" if self.read_only else "--bind"
        return f"{kind}={self.source}:{self.target}"


@dataclass(frozen=True)
class HttpResponse:
    """One answer of the in-container HTTP client (status 0 and ``error`` when none came)."""

    status: int
    body: str
    seconds: float
    error: str | None = None


def _nspawn_base(name: str, binds: Iterable[Bind], netns: str | None = None) -> list[str]:
    # Loopback only (--private-network): fixed ports inside can never collide with
    # anything. A test that needs a network between containers makes a namespace with a
    # veth pair and addresses of its own, and gives it here instead.
    network = f"--network-namespace-path=/run/netns/{netns}" if netns else "--private-network"
    return [
        "systemd-nspawn",
        "--quiet",
        "--directory=/",
        # A tmpfs root with the host's /usr read-only: nothing the container does can
        # change the host, and every boot starts from an empty /etc and /var.
        "--volatile=yes",
        # No machined or system bus on the host: without both, nspawn fails to register.
        "--register=no",
        "--keep-unit",
        network,
        f"--machine={name}",
        *(b.flag() for b in binds),
    ]


class _Cgroup:
    """A cgroup subtree of our own in both hierarchies, so cleanup can find every process."""

    def __init__(self, name: str) -> None:
        self.dirs = [root / name for root in _CGROUP_ROOTS if root.is_dir()]
        for path in self.dirs:
            path.mkdir(exist_ok=True)

    def enter_script(self) -> str:
        """Shell lines that move the current shell (then exec'd into nspawn) into the subtree."""
        return "".join(f"echo $$ > {shlex.quote(str(d / 'cgroup.procs'))}; " for d in self.dirs)

    def pids(self) -> set[int]:
        found: set[int] = set()
        for top in self.dirs:
            for procs in top.rglob("cgroup.procs"):
                with contextlib.suppress(OSError, ValueError):
                    found.update(int(p) for p in procs.read_text().split())
        return found

    def kill_all(self) -> None:
        for top in self.dirs:
            kill_file = top / "cgroup.kill"
            if kill_file.exists():
                with contextlib.suppress(OSError):
                    kill_file.write_text("1")
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def remove(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.kill_all() if self.pids() else None
            left = []
            for top in self.dirs:
                if not top.exists():
                    continue
                # Deepest first: a cgroup directory can only go once its children are gone.
                for path in sorted(
                    (p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)
                ):
                    with contextlib.suppress(OSError):
                        path.rmdir()
                try:
                    top.rmdir()
                except OSError:
                    left.append(top)
            if not left:
                return
            if time.monotonic() > deadline:
                raise HarnessError(f"cgroups not removable: {', '.join(map(str, left))}")
            time.sleep(0.1)


def run_once(
    name: str,
    command: Sequence[str],
    *,
    binds: Iterable[Bind] = (),
    timeout: float = 600.0,
    setenv: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run one command in a throwaway container without booting systemd (no PID 1 manager).

    Used to build the session's venvs at the path they have in every later container,
    and to show what opskit does where systemd is not running.
    """
    # Unique per process and call, like a booted container's: two pytest workers may build
    # or run at once, and nspawn keeps per-machine state under /run/systemd/nspawn.
    name = _unique(name)
    cgroup = _Cgroup(f"opskit-test-{name}")
    env_flags = [f"--setenv={k}={v}" for k, v in {**(setenv or {})}.items()]
    argv = [
        *_nspawn_base(name, binds),
        "--as-pid2",
        # The command's own stdin/stdout/stderr, not a pseudo-terminal that merges them.
        "--console=pipe",
        f"--setenv={_INSIDE_PATH}",
        "--setenv=LANG=C.UTF-8",
        *env_flags,
        *command,
    ]
    script = cgroup.enter_script() + 'exec "$@"'
    proc = subprocess.Popen(
        ["/bin/sh", "-c", script, "sh", *argv],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"},
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise HarnessError(f"{name}: {command[0]} timed out after {timeout:.0f}s\n{err}") from None
    finally:
        cgroup.remove()
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


class Container:
    """A booted systemd in a throwaway nspawn container; use as a context manager."""

    def __init__(
        self,
        name: str,
        workdir: Path,
        *,
        binds: Sequence[Bind] = (),
        boot_timeout: float = 90.0,
        stop_timeout: float = 20.0,
        netns: str | None = None,
    ) -> None:
        self.name = _unique(name)
        self.netns = netns
        self.workdir = workdir
        self.binds = [Bind(HARNESS, HARNESS_MOUNT), *binds]
        self.boot_timeout = boot_timeout
        self.stop_timeout = stop_timeout
        self.console = workdir / f"{self.name}.console.log"
        self.boot_seconds = 0.0
        self._proc: subprocess.Popen[bytes] | None = None
        self._pid1: int | None = None
        self._cgroup: _Cgroup | None = None
        self.nspawn_pid: int | None = None

    # --- life cycle ---------------------------------------------------------------------

    def __enter__(self) -> Container:
        self.boot()
        return self

    def __exit__(self, *exc: object) -> None:
        self.teardown()

    def boot(self) -> None:
        """Start the container and wait until its systemd reports the boot finished."""
        started = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._cgroup = _Cgroup(f"opskit-test-{self.name}")
        argv = [
            *_nspawn_base(self.name, self.binds, self.netns),
            "--boot",
            # Without it nspawn's own seccomp filter blocks the BPF programs that
            # enforce IPAddressDeny=, which would then be silently ignored.
            "--system-call-filter=bpf",
            # Kernel command-line words for the container's PID 1: boot only to
            # basic.target (tests start what they need) and never ask first-boot questions.
            "systemd.unit=basic.target",
            "systemd.firstboot=no",
        ]
        script = self._cgroup.enter_script() + 'exec "$@"'
        _live.add(self)
        with self.console.open("wb") as log:
            self._proc = subprocess.Popen(
                ["/bin/sh", "-c", script, "sh", *argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"},
            )
        self.nspawn_pid = self._proc.pid
        try:
            self._pid1 = self._find_pid1(started + self.boot_timeout)
            self._wait_booted(started + self.boot_timeout)
        except BaseException:
            self.teardown()
            raise
        self.boot_seconds = time.monotonic() - started

    def _find_pid1(self, deadline: float) -> int:
        assert self._proc is not None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise HarnessError(
                    f"{self.name}: nspawn exited {self._proc.returncode}: {self.tail()}"
                )
            children = Path(f"/proc/{self._proc.pid}/task/{self._proc.pid}/children")
            with contextlib.suppress(OSError):
                for pid in children.read_text().split():
                    comm = Path(f"/proc/{pid}/comm").read_text().strip()
                    if comm == "systemd":
                        return int(pid)
            time.sleep(0.05)
        raise HarnessError(f"{self.name}: no systemd process appeared: {self.tail()}")

    def _wait_booted(self, deadline: float) -> None:
        state = ""
        while time.monotonic() < deadline:
            # "offline" until PID 1 listens on its private socket; then --wait blocks
            # until the boot transaction is done.
            left = max(1.0, deadline - time.monotonic())
            proc = self.run("systemctl", "is-system-running", "--wait", check=False, timeout=left)
            state = proc.stdout.strip()
            if state in ("running", "degraded"):
                return
            time.sleep(0.1)
        raise HarnessError(f"{self.name}: not booted in time (state {state!r}): {self.tail()}")

    @property
    def cgroups(self) -> list[Path]:
        """The host cgroup directories of this container (gone after teardown)."""
        return list(self._cgroup.dirs) if self._cgroup is not None else []

    @property
    def pid1(self) -> int:
        """The container's PID 1 (systemd), as the host sees it."""
        if self._pid1 is None:
            raise HarnessError(f"{self.name}: not booted")
        return self._pid1

    @property
    def root(self) -> Path:
        """The container's root directory as the host can reach it (for reading and writing)."""
        return Path(f"/proc/{self.pid1}/root")

    def teardown(self) -> None:
        """Power off; if that hangs, kill everything. Safe to call twice."""
        _live.discard(self)
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            # SIGTERM to nspawn = a clean poweroff of the container (well under a second).
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=10)
        if self._cgroup is not None:
            self._cgroup.remove()
            self._cgroup = None
        self._pid1 = None

    def tail(self, lines: int = 30) -> str:
        """The last lines of the container's console, for error messages."""
        try:
            text = self.console.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # --- running things inside ------------------------------------------------------------

    def command(self, *argv: str) -> list[str]:
        """The host command line that runs ``argv`` inside the container, as root."""
        # nsenter hands the host's environment in: start from a clean one instead.
        return [
            "nsenter",
            "--target",
            str(self.pid1),
            "--all",
            "--",
            "env",
            "-i",
            _INSIDE_PATH,
            "LANG=C.UTF-8",
            *argv,
        ]

    def run(
        self,
        *argv: str,
        check: bool = True,
        timeout: float = 60.0,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside and wait; raise HarnessError on failure when ``check``."""
        try:
            proc = subprocess.run(
                self.command(*argv),
                capture_output=True,
                text=True,
                input=input,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise HarnessError(f"{self.name}: {shlex.join(argv)} timed out ({timeout}s)") from None
        if check and proc.returncode != 0:
            raise HarnessError(
                f"{self.name}: {shlex.join(argv)} exited {proc.returncode}\n"
                f"{proc.stdout}{proc.stderr}"
            )
        return proc

    def popen(self, *argv: str) -> subprocess.Popen[str]:
        """Start a command inside without waiting (stdout and stderr piped, text)."""
        return subprocess.Popen(
            self.command(*argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def python(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """Run Debian's python3 inside (``self.python("-c", "...")``)."""
        return self.run(SYSTEM_PYTHON, *args, **kwargs)

    # --- files ----------------------------------------------------------------------------

    def write_file(self, path: str, content: str | bytes, mode: int = 0o644) -> None:
        """Create or replace a file inside (parents created)."""
        target = self.root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        data = content.encode() if isinstance(content, str) else content
        target.write_bytes(data)
        target.chmod(mode)

    def read_file(self, path: str) -> str:
        """The text of a file inside."""
        return (self.root / path.lstrip("/")).read_text(encoding="utf-8")

    def copy_in(self, source: Path, target: str) -> None:
        """Copy a host file or directory tree in (binds are fixed at boot; this is not)."""
        dest = self.root / target.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, dest, dirs_exist_ok=True)
        else:
            shutil.copy2(source, dest)

    # --- systemd ----------------------------------------------------------------------------

    def systemctl(self, *args: str, check: bool = True, timeout: float = 120.0) -> str:
        """Run systemctl inside and return its stdout."""
        return self.run("systemctl", "--no-pager", *args, check=check, timeout=timeout).stdout

    def install_units(
        self, files: Iterable[Any], directory: str = "/etc/systemd/system", reload: bool = True
    ) -> list[str]:
        """Write unit files (RenderedFiles, or (name, text) pairs) and daemon-reload."""
        names = []
        for item in files:
            name, content = (item.name, item.content) if hasattr(item, "content") else item
            self.write_file(f"{directory}/{name}", content)
            names.append(name)
        if reload:
            self.systemctl("daemon-reload")
        return names

    def drop_in(self, unit: str, name: str, content: str, reload: bool = True) -> None:
        """Add /etc/systemd/system/UNIT.d/NAME.conf and daemon-reload."""
        self.write_file(f"/etc/systemd/system/{unit}.d/{name}.conf", content)
        if reload:
            self.systemctl("daemon-reload")

    def show(self, unit: str, *props: str) -> dict[str, str]:
        """``systemctl show -p ...`` as a dict."""
        args = [f"--property={p}" for p in props]
        out = self.systemctl("show", *args, unit)
        pairs = (line.partition("=") for line in out.splitlines() if "=" in line)
        return {k: v for k, _, v in pairs}

    def main_pid(self, unit: str) -> int:
        """The unit's MainPID inside the container (0 when not running)."""
        return int(self.show(unit, "MainPID")["MainPID"])

    def wait_for(
        self, what: str, predicate: Callable[[], bool], timeout: float, interval: float = 0.2
    ) -> float:
        """Poll until ``predicate()`` is true; return the seconds it took."""
        started = time.monotonic()
        while not predicate():
            if time.monotonic() - started > timeout:
                raise HarnessError(f"{self.name}: timed out after {timeout}s waiting for {what}")
            time.sleep(interval)
        return time.monotonic() - started

    def journal(self, unit: str | None = None, lines: int = 200) -> str:
        """Recent journal lines inside (of one unit, or all)."""
        args = ["journalctl", "--no-pager", "-n", str(lines)]
        if unit:
            args += ["-u", unit]
        return self.run(*args, check=False).stdout

    def journal_json(self, unit: str) -> list[dict[str, Any]]:
        """The unit's journal entries (PID 1's messages about it included) as dicts."""
        out = self.run("journalctl", "--no-pager", "-o", "json", "-u", unit, check=False).stdout
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]

    # --- HTTP from inside (the container has its own loopback) ---------------------------------

    def _inside(self, *args: str, timeout: float) -> dict[str, Any]:
        proc = self.python(f"{HARNESS_MOUNT}/inside.py", *args, check=False, timeout=timeout)
        try:
            data: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            raise HarnessError(
                f"{self.name}: inside.py {args}: {proc.stdout}{proc.stderr}"
            ) from None
        return data

    def http_get(self, url: str, timeout: float = 10.0) -> HttpResponse:
        """One GET from inside the container."""
        data = self._inside("get", url, "--timeout", str(timeout), timeout=timeout + 30)
        return HttpResponse(data["status"], data["body"], data["seconds"], data.get("error"))

    def wait_http(self, url: str, timeout: float = 60.0, body: str | None = None) -> float:
        """Poll from inside until ``url`` answers 200 (with ``body`` when given); return seconds."""
        args = ["wait", url, "--timeout", str(timeout)]
        if body is not None:
            args += ["--body", body]
        data = self._inside(*args, timeout=timeout + 30)
        if not data.get("ok"):
            raise HarnessError(f"{self.name}: {url} did not answer in {timeout}s: {data}")
        return float(data["seconds"])


@contextlib.contextmanager
def booted(name: str, workdir: Path, binds: Sequence[Bind] = ()) -> Iterator[Container]:
    """Boot a container for the duration of a ``with`` block (torn down even on errors)."""
    box = Container(name, workdir, binds=binds)
    try:
        box.boot()
        yield box
    finally:
        box.teardown()


def teardown_all() -> None:
    """Tear down every container still running (end of session, or an interrupted run)."""
    for box in list(_live):
        with contextlib.suppress(Exception):
            box.teardown()


atexit.register(teardown_all)


def _build_venv(dest: Path, mount: str, script: str, binds: list[Bind], timeout: float) -> None:
    """Run ``script`` in a throwaway container where ``dest`` is bound writable at ``mount``."""
    dest.mkdir(parents=True, exist_ok=True)
    dest.chmod(0o755)
    proc = run_once(
        "build-venv",
        ["/bin/sh", "-c", f"set -e; {script}"],
        binds=[Bind(dest, mount, read_only=False), *binds],
        # No pip configuration of the host (extra indexes, caches) leaks into the build.
        setenv={"PIP_CONFIG_FILE": "/dev/null", "HOME": "/srv"},
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise HarnessError(f"building {mount} failed:\n{proc.stdout}{proc.stderr}")


_PIP = "-m pip install --quiet --disable-pip-version-check --no-index --find-links /srv/wheels"


def servers_venv(cache: Path, wheelhouse: Path, *, timeout: float = 900.0) -> tuple[Path, float]:
    """The venv with gunicorn, uvicorn and uWSGI (bound at SERVERS_VENV); built once, cached.

    Built inside a throwaway container with Debian's python3 at the path it has in every
    later container, so its scripts' shebangs and uWSGI's link to libpython are right
    there. Compiling uWSGI dominates (tens of seconds), so the result is kept in
    ``cache`` under a key of the wheelhouse's file names and reused by later runs.
    Returns the host directory and the seconds spent building (0 when cached).
    """
    names = sorted(p.name for p in wheelhouse.iterdir() if not p.name.startswith("."))
    key = hashlib.sha256("\n".join(names).encode())
    final = cache / f"servers-{key.hexdigest()[:16]}"
    # One build at a time: a second pytest worker (or another run) waits for the first
    # and then finds the cache filled, instead of compiling uWSGI beside it.
    with locked(cache / ".servers.lock"):
        if (final / "bin" / "uwsgi").exists():
            return final, 0.0
        return final, _build_servers_venv(final, wheelhouse, timeout)


def _build_servers_venv(final: Path, wheelhouse: Path, timeout: float) -> float:
    started = time.monotonic()
    cache = final.parent
    tmp = cache / f"{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    _build_venv(
        tmp,
        SERVERS_VENV,
        f"{SYSTEM_PYTHON} -m venv {SERVERS_VENV} && "
        f"{SERVERS_VENV}/bin/python {_PIP} --use-pep517 gunicorn uvicorn uwsgi",
        [Bind(wheelhouse, "/srv/wheels")],
        timeout,
    )
    if (final / "bin" / "uwsgi").exists():  # built meanwhile by a run without the lock
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        shutil.rmtree(final, ignore_errors=True)  # an interrupted build's leftover, if any
        tmp.rename(final)
    return time.monotonic() - started


def tool_venv(dest: Path, wheelhouse: Path, source: Path, *, timeout: float = 600.0) -> float:
    """Install this checkout of opskit (not editable) into a venv bound at TOOL_VENV.

    Built fresh each session, since the sources change; returns the seconds it took.
    """
    started = time.monotonic()
    _build_venv(
        dest,
        TOOL_VENV,
        f"{SYSTEM_PYTHON} -m venv {TOOL_VENV} && mkdir -p /srv/opskit-src && "
        # A copy of the checkout: the build writes next to the sources, the bind is read-only.
        "tar -C /src/opskit --exclude=./.venv --exclude=./.git --exclude=./build "
        "-cf - . | tar -C /srv/opskit-src -xf - && "
        # [uv]: releases of a spec with installer = uv are built by it.
        f"{TOOL_VENV}/bin/python {_PIP} '/srv/opskit-src[uv]'",
        [Bind(wheelhouse, "/srv/wheels"), Bind(source, "/src/opskit")],
        timeout,
    )
    return time.monotonic() - started


def corpus_venv(
    cache: Path, wheelhouse: Path, requirements: Path, *, timeout: float = 900.0
) -> tuple[Path, float]:
    """The corpus venv (bound at CORPUS_VENV): the servers plus ``requirements``; cached.

    Built like the servers' venv (inside a throwaway container, offline from the
    wheelhouse, uWSGI compiled there), under its own lock, and kept in ``cache`` under a
    key of the wheelhouse's file names and the requirements' text. Returns the host
    directory and the seconds spent building (0 when cached).
    """
    names = sorted(p.name for p in wheelhouse.iterdir() if not p.name.startswith("."))
    key = hashlib.sha256("\n".join([*names, requirements.read_text()]).encode())
    final = cache / f"corpus-{key.hexdigest()[:16]}"
    with locked(cache / ".corpus.lock"):
        if (final / "bin" / "uwsgi").exists():
            return final, 0.0
        started = time.monotonic()
        tmp = cache / f"{final.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        _build_venv(
            tmp,
            CORPUS_VENV,
            f"{SYSTEM_PYTHON} -m venv {CORPUS_VENV} && "
            f"{CORPUS_VENV}/bin/python {_PIP} --use-pep517 gunicorn uvicorn uwsgi "
            "-r /srv/corpus.txt",
            [Bind(wheelhouse, "/srv/wheels"), Bind(requirements.resolve(), "/srv/corpus.txt")],
            timeout,
        )
        shutil.rmtree(final, ignore_errors=True)  # an interrupted build's leftover, if any
        tmp.rename(final)
        return final, time.monotonic() - started
