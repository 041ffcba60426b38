"""The generated reload script against real gunicorn, uvicorn and uWSGI processes (pidfile mode)."""

from __future__ import annotations

import collections
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import EXAMPLE

pytestmark = [pytest.mark.servers, pytest.mark.timeout(300)]

BIN = Path(sys.executable).parent
BROKEN = '\nraise RuntimeError("a broken deploy")\n'
#: The example app's routes, set explicitly: the spec has no default for either.
PATHS = {"health-path": "/health", "version-path": "/version"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return str(response.read().decode().strip())


@dataclass
class Site:
    """One app directory with a running server, the generated script, and what to clean up."""

    dir: Path
    port: int
    server: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def pidfile(self) -> Path:
        return self.dir / "run" / "server.pid"

    def version(self) -> str:
        return get(self.port, "/version")

    def start(
        self,
        argv: list[str],
        *,
        pidfile: Path | None = None,
        env: dict[str, str] | None = None,
        workers: int = 2,
    ) -> subprocess.Popen[bytes]:
        log = (self.dir / f"server-{len(self.procs)}.log").open("wb")
        # A session of its own: the finalizer kills the whole group, workers included.
        proc = subprocess.Popen(
            argv,
            cwd=self.dir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
        self.procs.append(proc)
        if pidfile is not None:
            pidfile.write_text(f"{proc.pid}\n")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"{argv[0]} exited: {self.logs()}")
            try:
                # Every worker up, not just the first: one still importing would pick
                # up code a test changes next, and the test would race the server.
                if len(pids(self.port, 40)) >= workers:
                    return proc
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"{argv[0]} did not answer in 60 s: {self.logs()}")

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.dir.glob("*.log")))

    def script(self, cli, *extra: str, paths: dict[str, str] = PATHS) -> Path:
        config = self.dir / "opskit.toml"
        app = "demoapp:asgi" if self.server == "uvicorn" else "demoapp:app"
        config.write_text(
            f'name = "demo"\nserver = "{self.server}"\napp = "{app}"\nport = {self.port}\n'
            f'working-directory = "{self.dir}"\nvenv = "{BIN.parent}"\n'
            f'supervisor = "pidfile"\npidfile = "{self.pidfile}"\n'
            + "".join(f'{key} = "{value}"\n' for key, value in paths.items())
        )
        out = self.dir / "deploy"
        result = cli("reload-script", "--config", str(config), *extra, "-o", str(out), "--force")
        assert result.code == 0, result.err
        return out / "reload-demo.sh"

    def kill(self) -> None:
        for proc in self.procs:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=10)
                    break
                except subprocess.TimeoutExpired:
                    continue
            # Workers outlive a master killed first: sweep the group once more.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    for name in ("demoapp.py", "VERSION"):
        shutil.copy2(EXAMPLE / name, tmp_path / name)
    (tmp_path / "VERSION").write_text("v1\n")
    (tmp_path / "run").mkdir()
    s = Site(tmp_path, free_port(), "gunicorn")
    yield s
    s.kill()


def run_script(
    script: Path, *args: str, timeout: int = 30, tmpdir: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RELOAD_TIMEOUT": str(timeout)}
    if tmpdir is not None:
        env["TMPDIR"] = str(tmpdir)
    return subprocess.run(
        ["bash", str(script), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout + 120,
        check=False,
    )


def get_status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def pids(port: int, count: int = 12) -> set[str]:
    return {get(port, "/pid") for _ in range(count)}


def workers(site: Site) -> set[str]:
    """Every process under the master, whether or not a sampled request reached it."""
    import psutil

    master = psutil.Process(int(site.pidfile.read_text().strip()))
    return {str(child.pid) for child in master.children(recursive=True)}


def gunicorn(site: Site, *extra: str) -> list[str]:
    return [
        str(BIN / "gunicorn"), "--workers", "2", "--bind", f"127.0.0.1:{site.port}",
        "--pid", str(site.pidfile), "--no-control-socket", *extra, "demoapp:app",
    ]  # fmt: skip


def uvicorn(site: Site) -> list[str]:
    return [
        str(BIN / "uvicorn"), "demoapp:asgi", "--host", "127.0.0.1", "--port", str(site.port),
        "--workers", "2",
    ]  # fmt: skip


def start(site: Site, cli, server: str, paths: dict[str, str] = PATHS) -> Path:
    site.server = server
    script = site.script(cli, paths=paths)
    if server == "gunicorn":
        site.start(gunicorn(site))
    elif server == "uvicorn":
        # uvicorn writes no pidfile: whoever starts it does.
        site.start(uvicorn(site), pidfile=site.pidfile)
    else:
        site.start([str(BIN / "uwsgi"), "--ini", str(script.parent / "demo.uwsgi.ini")])
    return script


@pytest.mark.parametrize("server", ["gunicorn", "uvicorn", "uwsgi"])
def test_new_code_serves_after_the_script(site: Site, cli, server):
    script = start(site, cli, server)
    assert site.version() == "v1"
    before = pids(site.port)
    (site.dir / "VERSION").write_text("v2\n")
    proc = run_script(script, "v2")
    assert proc.returncode == 0, proc.stderr + site.logs()
    assert "ok: version v1 -> v2, health answers, one server on port" in proc.stderr
    assert "could not check" not in proc.stderr
    assert {site.version() for _ in range(12)} == {"v2"}
    assert not before & pids(site.port), "an old worker still answers"


#: The example app without a route at "/": it answers 404 there, like many real apps.
NO_ROOT = ('    if path == "/":\n', '    if path == "/index":\n')
#: New code that imports but fails every request to "/".
ROOT_FAILS = """
_respond_v1 = _respond


def _respond(path):
    return ("500 Internal Server Error", b"boom\\n") if path == "/" else _respond_v1(path)
"""


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1
    path.write_text(text.replace(old, new))


@pytest.mark.parametrize("server", ["gunicorn", "uvicorn", "uwsgi"])
def test_without_paths_the_processes_prove_the_reload(site: Site, cli, server):
    """No health or version path: "/" answering 404 is alive, no version is checked."""
    _edit(site.dir / "demoapp.py", *NO_ROOT)
    script = start(site, cli, server, paths={})
    assert get_status(site.port, "/") == 404
    before = pids(site.port)
    (site.dir / "VERSION").write_text("v2\n")
    proc = run_script(script)
    assert proc.returncode == 0, proc.stderr + site.logs()
    lines = proc.stderr.splitlines()
    assert "reload-demo: ok: / answers 404, one server on port " + str(site.port) in lines
    said = [line for line in lines if "could not check" in line]
    assert said == [
        "reload-demo: could not check the version: no version-path is set; "
        "the new code is proved by the replaced processes alone"
    ]
    # The workers it names as replaced are gone, and only new code answers.
    replaced = re.search(r"workers ([\d ]+) -> ([\d ]+)", proc.stderr)
    assert replaced, proc.stderr
    old, new = replaced.groups()
    assert not set(old.split()) & set(new.split())
    assert {site.version() for _ in range(12)} == {"v2"}
    assert not before & pids(site.port), "an old worker still answers"
    # A version given to a script that cannot check one is a usage error, before anything.
    refused = run_script(script, "v3")
    assert refused.returncode == 2
    assert "no version-path is set to check it against" in refused.stderr


def test_without_a_health_path_a_server_error_at_root_fails(site: Site, cli):
    script = start(site, cli, "gunicorn", paths={})
    before = workers(site)
    with (site.dir / "demoapp.py").open("a") as handle:
        handle.write(ROOT_FAILS)
    proc = run_script(script, timeout=8)
    assert proc.returncode == 1, proc.stderr
    # The canary served the new code first: refused before any signal.
    assert "FAILED: canary: the new code does not serve: / answers '500 boom'" in proc.stderr
    assert "reload:" not in proc.stderr
    assert before <= workers(site)
    assert get_status(site.port, "/") == 200


def test_without_the_canary_a_server_error_at_root_fails_only_after_the_reload(site: Site, cli):
    """What --no-canary gives up: new code that imports but fails is caught after the signal."""
    site.server = "gunicorn"
    script = site.script(cli, "--no-canary", paths={})
    site.start(gunicorn(site))
    with (site.dir / "demoapp.py").open("a") as handle:
        handle.write(ROOT_FAILS)
    proc = run_script(script, timeout=8)
    assert proc.returncode == 1, proc.stderr
    assert "preflight: importing the new code (no canary" in proc.stderr
    assert "FAILED: after 8s: / answers '500 boom'" in proc.stderr


@pytest.mark.parametrize("server", ["gunicorn", "uvicorn", "uwsgi"])
def test_a_health_path_the_app_does_not_serve_is_refused_before_any_signal(site: Site, cli, server):
    script = start(site, cli, server, paths={"health-path": "/healthz"})
    master = site.pidfile.read_text().strip()
    before = workers(site)
    (site.dir / "VERSION").write_text("v2\n")
    started = time.monotonic()
    proc = run_script(script, timeout=60)
    seconds = time.monotonic() - started
    assert proc.returncode == 1, proc.stderr
    assert (
        "FAILED: health-path /healthz answers '404 not found' on the running server, "
        "expected 2xx; nothing reloaded"
    ) in proc.stderr
    assert "canary:" not in proc.stderr and "reload:" not in proc.stderr
    assert seconds < 20, f"refused after {seconds:.1f} s, not at once"
    # Nothing was signalled: the same master and workers serve the old code.
    assert site.pidfile.read_text().strip() == master
    assert before <= workers(site)
    assert pids(site.port) <= before
    assert {site.version() for _ in range(12)} == {"v1"}


@pytest.mark.parametrize("server", ["gunicorn", "uvicorn", "uwsgi"])
def test_broken_code_is_not_reloaded(site: Site, cli, server):
    script = start(site, cli, server)
    assert site.version() == "v1"
    # Twelve requests need not reach every worker (uWSGI often answers from one), so the
    # processes are taken from the master's tree, not from a sample.
    before = workers(site)
    (site.dir / "VERSION").write_text("v2\n")
    with (site.dir / "demoapp.py").open("a") as handle:
        handle.write(BROKEN)
    proc = run_script(script, "v2")
    assert proc.returncode == 1
    assert "a broken deploy" in proc.stderr, proc.stderr + site.logs()
    assert "FAILED: canary: the new code's server exited before it answered" in proc.stderr
    # Nothing was signalled: the same processes serve the old code.
    assert {site.version() for _ in range(12)} == {"v1"}
    assert pids(site.port) <= before
    assert before <= workers(site)  # none of them was replaced
    assert all(p.poll() is None for p in site.procs)


def test_deploy_id_file_is_written_and_served(site: Site, cli):
    site.server = "gunicorn"
    version_file = site.dir / "deploy-id"
    version_file.write_text("first\n")
    script = site.script(cli, "--deploy-id-file", str(version_file))
    site.start(gunicorn(site), env={"DEMOAPP_VERSION_FILE": str(version_file)})
    assert site.version() == "first"
    proc = subprocess.run(
        ["bash", str(script)],
        capture_output=True,
        text=True,
        env={**os.environ, "DEMOAPP_VERSION_FILE": str(version_file), "RELOAD_TIMEOUT": "30"},
        timeout=150,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr + site.logs()
    deploy_id = version_file.read_text().strip()
    assert deploy_id != "first"
    assert site.version() == deploy_id


@pytest.mark.parametrize("before", [None, "first"], ids=["no file before", "a file before"])
def test_a_refused_reload_leaves_the_deploy_id_file_as_it_was(site: Site, cli, before):
    site.server = "gunicorn"
    version_file = site.dir / "deploy-id"
    if before is not None:
        version_file.write_text(f"{before}\n")
    script = site.script(cli, "--deploy-id-file", str(version_file))
    site.start(gunicorn(site))
    with (site.dir / "demoapp.py").open("a") as handle:
        handle.write(BROKEN)
    proc = run_script(script, "v2")
    assert proc.returncode == 1
    assert "nothing reloaded" in proc.stderr
    if before is None:
        assert not version_file.exists()
    else:
        assert version_file.read_text() == f"{before}\n"
    assert not list(site.dir.glob("deploy-id.tmp.*"))


def test_an_interrupted_reload_leaves_the_deploy_id_file_as_it_was(site: Site, cli):
    site.server = "gunicorn"
    version_file = site.dir / "deploy-id"
    version_file.write_text("first\n")
    script = site.script(cli, "--deploy-id-file", str(version_file))
    site.start(gunicorn(site))
    # The canary of this code takes its time to answer: the interrupt lands before the
    # reload signal, while the new id is already in the file.
    with (site.dir / "demoapp.py").open("a") as handle:
        handle.write("\nimport time\ntime.sleep(30)\n")
    proc = subprocess.Popen(
        ["bash", str(script), "v2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "RELOAD_TIMEOUT": "60"},
    )
    deadline = time.monotonic() + 60
    while version_file.read_text() != "v2\n":
        assert time.monotonic() < deadline and proc.poll() is None, "the id was never written"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert version_file.read_text() == "first\n"
    assert {site.version() for _ in range(6)} == {"v1"}


def test_an_interrupt_before_the_canary_starts_exits_130(site: Site, cli, tmp_path: Path):
    """SIGINT after the canary is marked running but before it is launched (no $! yet).

    A mktemp that takes a second holds the script in exactly that window: bash runs the
    INT trap once the command substitution returns. The trap must stop a canary that
    does not exist, remove its directory and restore the deploy id: exit 130, not
    "$!: unbound variable" under set -u (seen once in CI, unforced).
    """
    site.server = "gunicorn"
    version_file = site.dir / "deploy-id"
    version_file.write_text("first\n")
    script = site.script(cli, "--deploy-id-file", str(version_file))
    site.start(gunicorn(site))
    shim = tmp_path / "shim"
    shim.mkdir()
    marker = tmp_path / "mktemp-started"
    real = shutil.which("mktemp")
    assert real is not None
    (shim / "mktemp").write_text(f'#!/bin/sh\ntouch {marker}\nsleep 1\nexec {real} "$@"\n')
    (shim / "mktemp").chmod(0o755)
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {
        **os.environ,
        "RELOAD_TIMEOUT": "60",
        "TMPDIR": str(tmpdir),
        "PATH": f"{shim}:{os.environ['PATH']}",
    }
    proc = subprocess.Popen(["bash", str(script), "v2"], stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert time.monotonic() < deadline and proc.poll() is None, "mktemp never ran"
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "unbound variable" not in err
    assert version_file.read_text() == "first\n"
    assert list(tmpdir.iterdir()) == []
    assert {site.version() for _ in range(6)} == {"v1"}


def test_stale_master_on_the_same_port_is_detected(site: Site, cli):
    site.server = "gunicorn"
    script = site.script(cli)
    site.start(gunicorn(site, "--reuse-port"))
    # A second server on the same port, as left behind by a deploy that started a new
    # master without stopping the old one: SO_REUSEPORT lets both listen.
    stale = [*gunicorn(site, "--reuse-port")]
    stale[stale.index("--pid") + 1] = str(site.dir / "run" / "stale.pid")
    site.start(stale)
    stale_master = _wait_for_children(site.dir / "run" / "stale.pid")
    (site.dir / "VERSION").write_text("v2\n")
    proc = run_script(script, "v2")
    assert proc.returncode == 1
    assert "another server also listens on port" in proc.stderr
    # The message names the stale server's processes, and only those.
    named = {int(pid) for pid in re.findall(r"(\d+)\(", proc.stderr)}
    family = {stale_master, *_children(stale_master)}
    assert named and named <= family, (proc.stderr, family)


def _children(pid: int) -> set[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return {int(child) for child in path.read_text().split()}


def _wait_for_children(pidfile: Path) -> int:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if pidfile.exists() and pidfile.read_text().strip():
            pid = int(pidfile.read_text())
            if _children(pid):
                time.sleep(1)  # let the workers bind
                return pid
        time.sleep(0.1)
    raise AssertionError(f"{pidfile}: no workers after 60 s")


@pytest.mark.parametrize("server", ["gunicorn-preload", "uwsgi-eager"])
def test_a_reload_that_keeps_old_code_fails(site: Site, cli, server):
    """The spec says preload off / lazy-apps on, the running server disagrees: exit 1."""
    if server == "gunicorn-preload":
        site.server = "gunicorn"
        script = site.script(cli)
        site.start(gunicorn(site, "--preload"))
    else:
        site.server = "uwsgi"
        script = site.script(cli)
        ini = script.parent / "demo.uwsgi.ini"
        eager = ini.read_text().replace("lazy-apps = true\n", "")
        (site.dir / "eager.ini").write_text(eager)
        site.start([str(BIN / "uwsgi"), "--ini", str(site.dir / "eager.ini")])
    (site.dir / "VERSION").write_text("v2\n")
    proc = run_script(script, "v2", timeout=8)
    assert proc.returncode == 1, proc.stderr
    assert "FAILED: after 8s: /version answers '200 v1', expected '200 v2'" in proc.stderr


def test_unix_socket_server(site: Site, cli, tmp_path: Path):
    """The /proc/net/unix path: gunicorn on a unix socket, probed over it."""
    sock = site.dir / "run" / "app.sock"
    site.server = "gunicorn"
    script = site.script(cli, "--unix-socket", str(sock))
    argv = gunicorn(site)
    argv[argv.index("--bind") + 1] = f"unix:{sock}"
    proc = subprocess.Popen(argv, cwd=site.dir, start_new_session=True)
    site.procs.append(proc)
    deadline = time.monotonic() + 60
    while not sock.exists() or not _children_of_pidfile(site.pidfile, 2):
        assert time.monotonic() < deadline and proc.poll() is None, "gunicorn did not start"
        time.sleep(0.1)
    time.sleep(1)  # both workers import before the code changes
    (site.dir / "VERSION").write_text("v2\n")
    result = run_script(script, "v2")
    assert result.returncode == 0, result.stderr
    assert f"one server on unix socket {sock}" in result.stderr
    assert "ok: version v1 -> v2" in result.stderr


def _children_of_pidfile(pidfile: Path, count: int) -> bool:
    if not pidfile.exists() or not pidfile.read_text().strip():
        return False
    pid = int(pidfile.read_text())
    return len(_children(pid)) >= count


#: New code that imports, while every request raises (the server answers 500).
EVERY_REQUEST_RAISES = """

def _respond(path):
    raise RuntimeError("a handler that raises")
"""


class Load:
    """A bounded load on /version from 4 threads (at most 25 req/s each) while it runs."""

    def __init__(self, port: int) -> None:
        import threading

        self.port = port
        self.ok = 0
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client) for _ in range(4)]

    def _client(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                body = get(self.port, "/version")
                self.ok += 1
                if body != "v1":
                    self.failed.append(f"served {body!r}")
            except (OSError, urllib.error.URLError) as exc:
                self.failed.append(type(exc).__name__)
            time.sleep(max(0.0, 0.04 - (time.monotonic() - began)))

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        time.sleep(0.3)
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.3)
        self._stop.set()
        for thread in self._threads:
            thread.join(10)


@pytest.mark.parametrize("server", ["gunicorn", "uvicorn", "uwsgi"])
@pytest.mark.parametrize("breakage", ["import", "lazy"])
def test_a_broken_release_is_refused_by_the_canary_under_load(site: Site, cli, server, breakage):
    script = start(site, cli, server)
    before = workers(site)
    (site.dir / "VERSION").write_text("v2\n")
    with (site.dir / "demoapp.py").open("a") as handle:
        handle.write(BROKEN if breakage == "import" else EVERY_REQUEST_RAISES)
    tmpdir = site.dir / "tmp"
    tmpdir.mkdir()
    with Load(site.port) as load:
        proc = run_script(script, "v2", timeout=60, tmpdir=tmpdir)
    assert proc.returncode == 1, proc.stderr + site.logs()
    assert "FAILED: canary: " in proc.stderr, proc.stderr
    assert "canary| " in proc.stderr
    assert load.ok > 0 and load.failed == [], load.failed[:5]
    # Nothing was signalled, and the canary left nothing behind.
    assert before <= workers(site)
    assert {site.version() for _ in range(12)} == {"v1"}
    assert list(tmpdir.iterdir()) == []


@pytest.mark.parametrize("signo", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_script_leaves_no_canary_behind(site: Site, cli, signo):
    script = start(site, cli, "gunicorn")
    before = workers(site)
    (site.dir / "VERSION").write_text("v2\n")
    with (site.dir / "demoapp.py").open("a") as handle:
        # Imports slowly: the canary is still starting when the signal comes.
        handle.write("\nimport time as _time\n\n_time.sleep(60)\n")
    tmpdir = site.dir / "tmp"
    tmpdir.mkdir()
    proc = subprocess.Popen(
        ["bash", str(script), "v2"],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(tmpdir)},
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    # The canary's directory appears once it is being started.
    while not list(tmpdir.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(tmpdir.iterdir()), "the canary never started"
    time.sleep(0.5)
    # To the whole group, as a terminal's Ctrl-C does (SIGTERM: as a supervisor does).
    os.killpg(proc.pid, signo)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == (130 if signo == signal.SIGINT else 143), err
    assert list(tmpdir.iterdir()) == []
    leftover = subprocess.run(
        ["pgrep", "-f", f"{tmpdir}/"], capture_output=True, text=True, check=False
    ).stdout
    assert leftover == "", leftover
    assert before <= workers(site)
    assert {site.version() for _ in range(12)} == {"v1"}
    assert "Traceback" not in err, err


# --- keep-alive clients ------------------------------------------------------------------


def unit_spec(site: Site, **extra: object):
    """The spec site.script() writes to opskit.toml, for the server's own command line."""
    from opskit.spec import build_spec

    return build_spec(
        {
            "name": "demo",
            "server": site.server,
            "app": "demoapp:asgi" if site.server == "uvicorn" else "demoapp:app",
            "port": site.port,
            "working_directory": str(site.dir),
            "venv": str(BIN.parent),
            "supervisor": "pidfile",
            "pidfile": str(site.pidfile),
            **extra,
        }
    )


SOCKET_ACTIVATE = shutil.which("systemd-socket-activate")


def start_as_the_unit(site: Site, cli, server: str, *extra: str, socket: bool = False) -> Path:
    """Start uvicorn or uWSGI with the command line opskit generates (pidfile mode).

    With ``socket``, as the socket unit would: systemd-socket-activate holds the port and
    passes it as fd 3 (LISTEN_FDS), and the server gets the --socket command line.
    """
    from opskit.systemd.units import server_unit

    site.server = server
    script = site.script(cli, *(["--socket"] if socket else []))
    if server == "uvicorn":
        argv = [*server_unit(unit_spec(site, socket=socket)).argv, *extra]
    else:
        argv = [str(BIN / "uwsgi"), "--ini", str(script.parent / "demo.uwsgi.ini"), *extra]
    if socket:
        assert SOCKET_ACTIVATE is not None
        argv = [SOCKET_ACTIVATE, "--listen", f"127.0.0.1:{site.port}", *argv]
    # systemd-socket-activate execs the server: its pid is the server's.
    site.start(argv, pidfile=site.pidfile if server == "uvicorn" else None)
    return script


class KeepAliveLoad:
    """4 threads, at most 25 req/s each, each on ONE connection it reuses, as urllib3 does.

    Before reusing its connection a thread checks it: one the server closed while idle
    (readable, EOF) is replaced, and so is one whose last answer said Connection: close.
    A request that then gets no answer is a failure, not retried. Every answer's
    Connection header is kept, and whether its request went out on a reused connection.
    """

    def __init__(self, port: int) -> None:
        import threading

        self.port = port
        self.answers: list[tuple[str, str, bool]] = []  # (body, Connection header, reused)
        self.failed: list[tuple[type[BaseException], bool]] = []  # (error, reused)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client) for _ in range(4)]

    def _client(self) -> None:
        import http.client
        import select

        conn: http.client.HTTPConnection | None = None
        while not self._stop.is_set():
            began = time.monotonic()
            if conn is not None and (conn.sock is None or select.select([conn.sock], [], [], 0)[0]):
                conn.close()
                conn = None
            reused = conn is not None
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                    conn.connect()
                conn.request("GET", "/version")
                response = conn.getresponse()
                body = response.read().decode().strip()
                header = (response.getheader("Connection") or "").lower()
                if response.will_close:
                    conn.close()
                    conn = None
                with self._lock:
                    self.answers.append((body, header, reused))
            except (OSError, http.client.HTTPException) as exc:
                if conn is not None:
                    conn.close()
                    conn = None
                with self._lock:
                    self.failed.append((type(exc), reused))
            time.sleep(max(0.0, 0.04 - (time.monotonic() - began)))
        if conn is not None:
            conn.close()

    def __enter__(self) -> KeepAliveLoad:
        for thread in self._threads:
            thread.start()
        # Until every thread has had answers: the reload then meets connections in use.
        deadline = time.monotonic() + 30
        while len(self.answers) < 40 and time.monotonic() < deadline:
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        # As many answers again after the reload, from the new code.
        start = len(self.answers)
        deadline = time.monotonic() + 30
        while len(self.answers) < start + 40 and time.monotonic() < deadline:
            time.sleep(0.05)
        self._stop.set()
        for thread in self._threads:
            thread.join(30)


@pytest.mark.parametrize(
    "socket",
    [
        False,
        pytest.param(
            True,
            marks=pytest.mark.skipif(
                SOCKET_ACTIVATE is None, reason="systemd-socket-activate is not installed"
            ),
        ),
    ],
    ids=["bound", "socket-activated"],
)
@pytest.mark.parametrize("server", ["uvicorn", "uwsgi"])
def test_keep_alive_clients_lose_nothing_across_the_script(site: Site, cli, server, socket):
    """Every answer says Connection: close, so no client reuses a connection a reload closes.

    Before, uvicorn kept connections open and closed the idle ones of each worker it
    retired, and uWSGI's http-socket closed each one after its answer without saying so:
    a client sending its next request on such a connection met a reset (uvicorn 0-8,
    uWSGI 0-74 per reload under load, docs/benchmarks/reload.md). Now no request goes
    out on a reused connection at all, with the port bound by the server or passed in
    by socket activation (uWSGI's --protocol http instead of --http-socket).
    """
    script = start_as_the_unit(site, cli, server, socket=socket)
    if socket and server == "uwsgi":
        assert "\nprotocol = http\n" in (script.parent / "demo.uwsgi.ini").read_text()
    with KeepAliveLoad(site.port) as load:
        (site.dir / "VERSION").write_text("v2\n")
        proc = run_script(script, "v2")
        assert proc.returncode == 0, proc.stderr + site.logs()
    assert {body for body, _, _ in load.answers} == {"v1", "v2"}
    headers = collections.Counter(header for _, header, _ in load.answers)
    assert headers == {"close": len(load.answers)}, headers
    assert not any(reused for *_, reused in [*load.answers, *load.failed])
    if server == "uwsgi":
        assert load.failed == [], load.failed
    else:
        # What is left is uvicorn's own shutdown race, not keep-alive: a retiring worker
        # closes a connection it accepted in the same event-loop turn but has not read
        # yet (its HTTP protocol's shutdown(): no request cycle, so close), and that
        # fresh connection's one request meets a reset. At most one connection per
        # client can be in that state when each of the two old workers shuts down. The
        # client sees a reset, or EOF instead of an answer (RemoteDisconnected, a subclass).
        assert all(issubclass(error, ConnectionResetError) for error, _ in load.failed), load.failed
        assert len(load.failed) <= 2 * 4, load.failed


@pytest.mark.parametrize("server", ["gunicorn", "uvicorn", "uwsgi"])
def test_the_server_closes_the_connection_it_says_it_closes(site: Site, cli, server):
    """An HTTP/1.1 request without Connection: close: the answer says close, then EOF.

    uvicorn gets a keep-alive timeout of an hour, so only the header can make it close.
    """
    if server == "gunicorn":
        site.server = server
        site.start(gunicorn(site))
    elif server == "uvicorn":
        start_as_the_unit(site, cli, server, "--timeout-keep-alive", "3600")
    else:
        start_as_the_unit(site, cli, server)
    with socket.create_connection(("127.0.0.1", site.port), timeout=60) as sock:
        sock.sendall(b"GET /version HTTP/1.1\r\nHost: localhost\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):  # b"": the server closed; a timeout fails
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().lower().split("\r\n")
    assert lines[0].startswith("http/1.1 200"), data
    assert "connection: close" in lines[1:], data
    assert body == b"v1\n", data


def test_keep_alive_true_leaves_uvicorn_keeping_connections_open(site: Site):
    """The opt-out: keep-alive = true is uvicorn's own behaviour, the header is gone."""
    from opskit.systemd.units import server_unit

    site.server = "uvicorn"
    argv = list(server_unit(unit_spec(site, keep_alive=True)).argv)
    assert "connection:close" not in argv
    site.start(argv, pidfile=site.pidfile)
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", site.port, timeout=30)
    conn.connect()
    first = conn.sock
    try:
        for _ in range(3):
            conn.request("GET", "/version")
            response = conn.getresponse()
            assert response.read() == b"v1\n"
            assert response.getheader("Connection") is None
            assert not response.will_close
            sock = conn.sock
            assert sock is not None and sock is first, "not the same connection"
    finally:
        conn.close()


@pytest.mark.parametrize("protocol", ["opskit", "h11"])
def test_a_stopping_uvicorn_answers_a_connection_it_had_not_read(site: Site, protocol):
    """uvicorn's shutdown closes an accepted, unread connection; opskit's protocol answers it.

    A connection is opened and left silent, so the server has accepted it and read
    nothing. SIGTERM starts the shutdown, which stops listening and shuts every
    connection down in one step: once a new connect is refused, that step is done.
    Only then does the request go out. With opskit's protocol it is answered; with
    uvicorn's own h11 protocol (``--http h11`` after it, which wins), the connection is
    already closed: that is what a request that arrives in that moment meets.
    """
    from opskit.systemd.units import server_unit

    site.server = "uvicorn"
    argv = list(server_unit(unit_spec(site, workers=1)).argv)
    assert argv[argv.index("--http") + 1] == "opskit_uvicorn:DrainingH11Protocol"
    if protocol == "h11":
        argv += ["--http", "h11"]
    server = site.start(argv, workers=1)
    with socket.create_connection(("127.0.0.1", site.port), timeout=30) as sock:
        time.sleep(0.2)  # accepted into the event loop, not only into the backlog
        server.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", site.port), timeout=5).close()
            except ConnectionRefusedError:
                break
            assert time.monotonic() < deadline, "uvicorn still listens 30 s after SIGTERM"
            time.sleep(0.01)
        data = b""
        try:
            sock.sendall(b"GET /version HTTP/1.1\r\nHost: localhost\r\n\r\n")
            while chunk := sock.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass
    if protocol == "opskit":
        assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"v1\n"), data
    else:
        assert data == b"", data
    # uvicorn ends by raising the signal it was stopped by again, once it has shut down.
    assert server.wait(timeout=30) == -signal.SIGTERM, site.logs()
