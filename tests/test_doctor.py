"""opskit doctor: each failure reproduced for real (units, processes, threads, pip), then found."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import zipfile
from pathlib import Path

import psutil
import pytest

from opskit.doctor.checks import CHECKS, diagnose
from opskit.doctor.findings import Finding, Severity, table, to_json
from opskit.doctor.live import systemd_running
from opskit.doctor.project import import_time_threads
from opskit.doctor.units import check_unit
from opskit.spec import build_spec
from opskit.systemd.unitfile import parse_timespan
from opskit.systemd.units import render_units
from tests.conftest import EXAMPLE, needs_analyze

MISSING_VENV = "/nonexistent/opskit-doctor-venv"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    app = tmp_path / "project"
    app.mkdir()
    for name in ("demoapp.py", "VERSION", "pyproject.toml"):
        shutil.copy2(EXAMPLE / name, app / name)
    # The code was written long before anything in a test starts.
    old = time.time() - 3600
    os.utime(app / "demoapp.py", (old, old))
    return app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def doctor(cli, project: Path, *extra: str, port: int | None = None, venv: str = MISSING_VENV):
    """Run doctor with --json; return the exit code, the findings and stderr."""
    result = cli(
        "doctor",
        "demoapp",
        "--config",
        str(project / "pyproject.toml"),
        "--project",
        str(project),
        "--venv",
        venv,
        "--port",
        str(port or free_port()),
        "--json",
        *extra,
    )
    assert "Traceback" not in result.err
    report = json.loads(result.out)
    return result.code, report["findings"], result.err


def checks(findings: list[dict]) -> dict[str, str]:
    """Each finding's check and severity, without the one that says no systemd runs here."""
    return {
        f["check"]: f["severity"]
        for f in findings
        if not (f["check"] == "live-units" and f["severity"] == "info")
    }


# --- unit files ---------------------------------------------------------------------


def unit_text(**raw) -> str:
    spec = build_spec({"name": "demoapp", "app": "demoapp:app", **raw})
    return render_units(spec)[0].content


def test_generated_unit_is_clean(cli, project: Path):
    unit = project / "deploy" / "demoapp.service"
    unit.parent.mkdir()
    unit.write_text(unit_text())
    code, findings, err = doctor(cli, project)
    assert code == 0, err
    assert not [f for f in findings if f["check"].startswith("unit-")]
    # The example app configures no logging, so its INFO lines are lost: a warning.
    assert checks(findings) == {"pip-check": "info", "logging": "warning"}


@needs_analyze
def test_start_limit_in_service_section(cli, project: Path, tmp_path: Path):
    text = unit_text().replace("StartLimitIntervalSec=0\n", "")
    text = text.replace("[Service]\n", "[Service]\nStartLimitIntervalSec=0\n")
    unit = tmp_path / "misplaced.service"
    unit.write_text(text)
    # systemd itself only warns and exits 0: the reason doctor has to look.
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert "Unknown key 'StartLimitIntervalSec' in section [Service]" in proc.stderr
    code, findings, err = doctor(cli, project, "--units", str(unit))
    assert code == 1
    assert "1 error finding" in err
    (finding,) = [f for f in findings if f["check"] == "unit-start-limit"]
    assert finding["severity"] == "error"
    line = text.splitlines().index("StartLimitIntervalSec=0") + 1
    assert f"misplaced.service:{line}: StartLimitIntervalSec=0" in finding["evidence"]
    assert "[Unit]" in finding["fix"]


@pytest.mark.parametrize(
    ("edit", "check", "severity"),
    [
        (lambda t: t.replace("Restart=always\n", ""), "unit-restart", "error"),
        (lambda t: t.replace("Restart=always\n", "Restart=no\n"), "unit-restart", "error"),
        (lambda t: t.replace("Restart=always", "Restart=on-failure"), "unit-restart", "warning"),
        (lambda t: t.replace("RestartSec=5\n", ""), "unit-restart-sec", "warning"),
        (
            lambda t: t.replace("TimeoutStopSec=40", "TimeoutStopSec=20s"),
            "unit-stop-timeout",
            "error",
        ),
        (lambda t: re.sub(r"MemoryMax=\S+\n", "", t), "unit-memory-limit", "warning"),
        (
            lambda t: re.sub(r"MemoryMax=\S+", "MemoryMax=infinity", t),
            "unit-memory-limit",
            "warning",
        ),
        (lambda t: re.sub(r"Wants=\S+-watchdog.timer\n", "", t), "unit-watchdog", "warning"),
        (lambda t: t.replace("--timeout 30", "--timeout 0"), "unit-worker-timeout", "warning"),
    ],
)
def test_unit_mistakes(edit, check: str, severity: str):
    text = unit_text()
    edited = edit(text)
    assert edited != text
    found = {
        f.check: f for f in check_unit("x.service", edited, build_spec({"name": "x", "app": "a:b"}))
    }
    assert set(found) == {check}
    assert found[check].severity == severity


def test_stop_timeout_below_the_graceful_timeout_on_the_command_line(cli, project: Path):
    unit = project / "deploy" / "demoapp.service"
    unit.parent.mkdir()
    unit.write_text(
        unit_text(graceful_timeout=60).replace("TimeoutStopSec=70", "TimeoutStopSec=0.5min")
    )
    code, findings, _ = doctor(cli, project)
    assert code == 1
    (finding,) = [f for f in findings if f["check"] == "unit-stop-timeout"]
    assert "TimeoutStopSec=0.5min < gunicorn --graceful-timeout 60" in finding["evidence"]


def test_the_uvicorn_bootstrap_is_read_as_uvicorn():
    """uvicorn runs as ``python -c BOOTSTRAP``: doctor still reads its graceful timeout."""
    spec = build_spec({"name": "x", "app": "a:b"})
    good = unit_text(server="uvicorn", graceful_timeout=60)
    assert check_unit("x.service", good, spec) == []
    bad = good.replace("TimeoutStopSec=70", "TimeoutStopSec=20")
    (finding,) = check_unit("x.service", bad, spec)
    assert finding.check == "unit-stop-timeout"
    assert "uvicorn --timeout-graceful-shutdown 60" in finding.evidence


def test_uwsgi_without_harakiri():
    good = unit_text(server="uwsgi")
    spec = build_spec({"name": "x", "app": "a:b"})
    assert check_unit("x.service", good, spec) == []
    bad = re.sub(r" --harakiri \d+", "", good)
    assert bad != good
    assert [f.check for f in check_unit("x.service", bad, spec)] == ["unit-harakiri"]


def test_uwsgi_needs_sigquit(cli, project: Path, tmp_path: Path):
    good = unit_text(server="uwsgi")
    assert "KillSignal=SIGQUIT" in good
    spec = build_spec({"name": "x", "app": "a:b"})
    assert check_unit("x.service", good, spec) == []
    bad = good.replace("KillSignal=SIGQUIT\n", "")
    unit = tmp_path / "uwsgi.service"
    unit.write_text(bad)
    code, findings, _ = doctor(cli, project, "--units", str(unit))
    assert code == 1
    assert checks(findings)["unit-uwsgi-signal"] == "error"
    # --die-on-term makes SIGTERM a stop, which is as good.
    die = bad.replace("--master", "--master --die-on-term")
    assert check_unit("x.service", die, spec) == []


def test_gunicorn_preload_with_hup_reload(cli, project: Path, tmp_path: Path):
    text = unit_text()
    assert "ExecReload=/bin/kill -s HUP $MAINPID" in text
    text = text.replace(" demoapp:app\n", " --preload demoapp:app\n")
    unit = tmp_path / "preload.service"
    unit.write_text(text)
    code, findings, _ = doctor(cli, project, "--units", str(unit))
    assert code == 1
    (finding,) = [f for f in findings if f["check"] == "unit-preload-reload"]
    assert "ExecReload=/bin/kill -s HUP $MAINPID" in finding["evidence"]
    assert check_unit("x.service", unit_text(), build_spec({"name": "x", "app": "a:b"})) == []


def test_timespans():
    assert parse_timespan("40") == 40
    assert parse_timespan("1min 30s") == 90
    assert parse_timespan("500ms") == 0.5
    assert parse_timespan("infinity") is None
    assert parse_timespan("0.5min") == 30
    assert parse_timespan("2 hours") == 7200
    assert parse_timespan("soon") is None


# --- the project's code -----------------------------------------------------------------

THREADED = """\
import threading
import time


def _poll():
    while True:
        time.sleep(1)


if True:
    threading.Thread(target=_poll, daemon=True).start()


def later():
    threading.Thread(target=_poll).start()


def app(environ, start_response):
    start_response("200 OK", [])
    return [b"ok"]
"""


def test_threads_at_import_are_found_outside_functions_only(tmp_path: Path):
    module = tmp_path / "threaded.py"
    module.write_text(THREADED)
    assert import_time_threads(module) == [11]


@pytest.mark.parametrize("lazy", ["", "lazy-apps = true\n"])
def test_uwsgi_ini_without_lazy_apps_and_threads_at_import(cli, project: Path, lazy: str):
    (project / "threaded.py").write_text(THREADED)
    (project / "app.ini").write_text(f"[uwsgi]\nmodule = threaded:app\nmaster = true\n{lazy}")
    code, findings, _ = doctor(cli, project)
    if lazy:
        assert code == 0
        assert "uwsgi-lazy-apps" not in checks(findings)
    else:
        assert code == 1
        (finding,) = [f for f in findings if f["check"] == "uwsgi-lazy-apps"]
        assert "app.ini has no lazy-apps; threaded.py line 11" in finding["evidence"]


def test_uwsgi_unit_without_lazy_apps_and_threads_at_import(cli, project: Path):
    (project / "threaded.py").write_text(THREADED)
    unit = project / "deploy" / "demoapp.service"
    unit.parent.mkdir()
    text = unit_text(server="uwsgi", app="threaded:app", lazy_apps=False)
    assert "--lazy-apps" not in text
    unit.write_text(text)
    code, findings, _ = doctor(cli, project)
    assert code == 1
    (finding,) = [f for f in findings if f["check"] == "uwsgi-lazy-apps"]
    assert finding["evidence"].startswith("deploy/demoapp.service has no lazy-apps")


def test_classes_with_del_are_found(cli, project: Path):
    package = project / "pkg"
    package.mkdir()
    (package / "res.py").write_text(
        "class Plain:\n    pass\n\n\nclass Holder:\n    def __del__(self):\n        pass\n"
    )
    vendored = project / ".venv" / "lib" / "dep.py"
    vendored.parent.mkdir(parents=True)
    vendored.write_text("class Theirs:\n    def __del__(self):\n        pass\n")
    code, findings, _ = doctor(cli, project)
    assert code == 0  # a warning, not an error
    (finding,) = [f for f in findings if f["check"] == "del-method"]
    assert finding["severity"] == "warning"
    assert finding["problem"] == "class Holder defines __del__"
    assert finding["evidence"].startswith("pkg/res.py:6")


def test_logging_problems_come_from_logging_check(cli, project: Path, tmp_path: Path):
    code, findings, _ = doctor(cli, project)
    assert code == 0
    logging_findings = [f for f in findings if f["check"] == "logging"]
    assert any("root logger at WARNING" in f["evidence"] for f in logging_findings)
    assert all(f["severity"] == "warning" for f in logging_findings)

    # With the config opskit generates named in the spec, nothing goes astray.
    from opskit.logconfig.build import render_logging

    spec = build_spec({"name": "demoapp", "app": "demoapp:app"})
    config = tmp_path / "logging.json"
    config.write_text(render_logging(spec)[0].content)
    code, findings, _ = doctor(cli, project, "--set", f"log-config={json.dumps(str(config))}")
    assert code == 0
    assert "logging" not in checks(findings)


# --- processes ----------------------------------------------------------------------------

LISTENER = """\
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen()
print(s.getsockname()[1], flush=True)
time.sleep(600)
"""


@pytest.fixture
def spawn(tmp_path: Path):
    """Start listeners on one port (SO_REUSEPORT); every one is killed at the end."""
    script = tmp_path / "listener.py"
    script.write_text(LISTENER)
    procs: list[subprocess.Popen[str]] = []

    def start(port: int, *label: str) -> tuple[subprocess.Popen[str], int]:
        proc = subprocess.Popen(
            [sys.executable, str(script), str(port), *label],
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        # Reap it as soon as it exits, as an init would, so a stopped one is gone.
        threading.Thread(target=proc.wait, daemon=True).start()
        assert proc.stdout is not None
        return proc, int(proc.stdout.readline())

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def alive(proc: subprocess.Popen[str]) -> bool:
    try:
        os.kill(proc.pid, 0)
    except ProcessLookupError:
        return False
    return proc.poll() is None


def test_two_listeners_on_one_port(cli, project: Path, spawn):
    first, port = spawn(0, "demoapp:app")
    second, _ = spawn(port, "something-else")
    code, findings, _err = doctor(cli, project, port=port)
    assert code == 1
    (finding,) = [f for f in findings if f["check"] == "port-shared"]
    assert f"pid {first.pid}:" in finding["evidence"]
    assert f"pid {second.pid}:" in finding["evidence"]
    assert "demoapp:app" in finding["evidence"]
    # Code older than both: nothing stale.
    assert "stale-code" not in checks(findings)


def change_code(project: Path) -> None:
    """A real change of the code after every server started (create times have 10 ms ticks
    and a boot time rounded to the second)."""
    time.sleep(1.5)
    (project / "demoapp.py").write_text((EXAMPLE / "demoapp.py").read_text() + "\n# v2\n")


def wait_stopped(proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while alive(proc) and time.monotonic() < deadline:
        time.sleep(0.05)


# Listens on argv[1]:argv[2] (SO_REUSEPORT) and ignores the rest of its arguments: run as
# `python -c LISTEN_AT HOST PORT demoapp:app` it merely carries the app path in its argv.
LISTEN_AT = """\
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen()
print(s.getsockname()[1], flush=True)
time.sleep(600)
"""

#: An interpreter another user can run (the test venv's base may sit under /root).
SYSTEM_PYTHON = "/usr/bin/python3"

needs_other_user = pytest.mark.skipif(
    os.geteuid() != 0 or not Path(SYSTEM_PYTHON).exists(),
    reason="needs root (to start a process as nobody) and /usr/bin/python3",
)


@pytest.fixture
def start():
    """Start a process, as another user if asked; every one is killed at the end."""
    procs: list[subprocess.Popen[str]] = []

    def run(argv: list[str], *, user: str | None = None) -> subprocess.Popen[str]:
        as_user = {}
        if user is not None:
            entry = pwd.getpwnam(user)
            as_user = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd="/",
            # Its own process group, so that the end kills a gunicorn's workers too.
            start_new_session=True,
            **as_user,
        )
        procs.append(proc)
        # Reap it as soon as it exits, as an init would, so a stopped one is gone.
        threading.Thread(target=proc.wait, daemon=True).start()
        return proc

    yield run
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def listening(proc: subprocess.Popen[str], port: int, *, children: int = 0) -> None:
    """Wait until ``proc`` (or a child: gunicorn --reuse-port binds in each worker) listens
    on ``port`` and has forked ``children`` workers."""
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, f"{proc.args} exited"
        try:
            master = psutil.Process(proc.pid)
            tree = [master, *master.children()]
            ready = len(tree) > children and any(
                c.status == psutil.CONN_LISTEN and c.laddr.port == port
                for p in tree
                for c in p.net_connections(kind="inet")
            )
        except psutil.Error:
            ready = False
        if ready:
            return
        assert time.monotonic() < deadline, f"{proc.args} does not listen on {port}"
        time.sleep(0.1)


@needs_other_user
def test_fix_leaves_another_users_listener_with_the_app_path_running(cli, project: Path, start):
    # The attack: nobody's plain `python3 -c` on 0.0.0.0 whose argv names the app.
    port = free_port()
    theirs = start(
        [SYSTEM_PYTHON, "-c", LISTEN_AT, "0.0.0.0", str(port), "demoapp:app"], user="nobody"
    )
    assert theirs.stdout is not None and int(theirs.stdout.readline()) == port
    change_code(project)

    _, findings, err = doctor(cli, project, "--fix", "--user", "root", port=port, venv=sys.prefix)
    assert "stopping" not in err
    assert alive(theirs)
    gunicorn = f"{sys.prefix}/bin/gunicorn"
    (line,) = [ln for ln in err.splitlines() if f"pid {theirs.pid} " in ln]
    assert line.startswith(
        f"left alone pid {theirs.pid} (nobody): not the spec's server {gunicorn}"
    )
    assert "owned by nobody, not the unit's user root" in line
    assert f"listens on 0.0.0.0:{port}, not 127.0.0.1:{port}" in line
    # Still reported, and --fix is not offered for it.
    (stale,) = [f for f in findings if f["check"] == "stale-code"]
    assert f"pid {theirs.pid} " in stale["evidence"]
    assert "doctor --fix" not in stale["fix"]


def test_fix_stops_only_the_stale_process_running_the_app(
    cli, project: Path, spawn, start, tmp_path: Path
):
    # server = "command": a script whose #! names the interpreter. Pidfile mode and no user:
    # the server runs as whoever starts it, so doctor stops only its own user's processes.
    port = free_port()
    script = tmp_path / "serve.py"
    script.write_text(f"#!{sys.executable}\n{LISTEN_AT}")
    script.chmod(0o755)
    command = [str(script), "127.0.0.1", str(port)]
    mine = start(command)
    # The same user's process whose argv holds the whole command and the app path, but runs
    # something else (with the base interpreter of the command's #!, by a venv's link).
    lookalike = start([sys.executable, "-c", LISTEN_AT, *command[1:], *command, "demoapp:app"])
    other, _ = spawn(port, "not-this-app")
    for proc in (mine, lookalike):
        assert proc.stdout is not None and int(proc.stdout.readline()) == port
    change_code(project)
    spec_args = ("--server", "command", "--command", shlex.join(command))
    spec_args += ("--set", 'supervisor="pidfile"')

    code, findings, _ = doctor(cli, project, *spec_args, port=port)
    assert code == 1
    stale = {f["evidence"].split(" ")[1]: f for f in findings if f["check"] == "stale-code"}
    assert set(stale) == {str(mine.pid), str(lookalike.pid), str(other.pid)}
    assert "demoapp.py changed" in stale[str(mine.pid)]["evidence"]
    # --fix is offered for the one it would stop, and only for it.
    assert "doctor --fix" in stale[str(mine.pid)]["fix"]
    assert "doctor --fix" not in stale[str(lookalike.pid)]["fix"]

    code, findings, err = doctor(cli, project, "--fix", *spec_args, port=port)
    lines = err.splitlines()
    at = lines.index(f"stopping   pid {mine.pid} (root): {sys.executable} {shlex.join(command)}")
    assert lines[at + 1].strip() == (
        f"the spec's server {script}, owned by root, on 127.0.0.1:{port}, "
        "started before demoapp.py changed"
    )
    assert f"stopped    pid {mine.pid}" in lines
    (left,) = [ln for ln in lines if ln.startswith(f"left alone pid {lookalike.pid} ")]
    assert f"not the spec's server {script} (its executable is " in left
    (left,) = [ln for ln in lines if ln.startswith(f"left alone pid {other.pid} ")]
    assert f"not the spec's server {script}" in left
    assert "does not contain the spec's command" in left
    wait_stopped(mine)
    assert not alive(mine)
    assert alive(lookalike) and alive(other)
    # What is left: two (stale) listeners, still one error.
    assert code == 1
    assert checks(findings)["port-shared"] == "error"
    assert f"pid {mine.pid}:" not in json.dumps(findings)


@pytest.mark.parametrize(
    ("args", "script"),
    [
        (["/v/bin/gunicorn", "demoapp:app"], "/v/bin/gunicorn"),
        (["-u", "-W", "ignore", "-Xdev", "/v/bin/gunicorn"], "/v/bin/gunicorn"),
        (["-BW", "ignore", "--", "/v/bin/gunicorn"], "/v/bin/gunicorn"),
        (["--check-hash-based-pycs", "never", "/v/bin/gunicorn"], "/v/bin/gunicorn"),
        # Code, a module or stdin: whatever follows is only argv, not what runs.
        (["-c", "import x", "/v/bin/gunicorn"], None),
        (["-Bc", "import x", "/v/bin/gunicorn"], None),
        (["-X", "dev", "-m", "gunicorn", "/v/bin/gunicorn"], None),
        (["-", "/v/bin/gunicorn"], None),
        ([], None),
    ],
)
def test_the_script_an_interpreter_runs(args: list[str], script: str | None):
    from opskit.doctor.processes import _script_argument

    assert _script_argument(["/v/bin/python", *args]) == script


def gunicorn_at(project: Path, bind: str, *interpreter: str) -> list[str]:
    """The spec's server (the test venv's gunicorn) with the app, as a unit would run it."""
    return [
        *interpreter,
        f"{sys.prefix}/bin/gunicorn",
        *("--workers", "1", "--bind", bind, "--reuse-port", "--chdir", str(project)),
        # Not the default ~/.gunicorn/gunicorn.ctl, which every gunicorn of the user shares.
        "--no-control-socket",
        "demoapp:app",
    ]


@pytest.mark.servers
@needs_other_user
def test_fix_stops_the_apps_stale_gunicorn_and_nothing_else_on_the_port(cli, project: Path, start):
    port = free_port()
    # The real stale servers: the venv's console script, and the venv's python running it.
    script = start(gunicorn_at(project, f"127.0.0.1:{port}"))
    python = start(gunicorn_at(project, f"127.0.0.1:{port}", f"{sys.prefix}/bin/python"))
    # The spec's server with the app, but on another address of the same port.
    elsewhere = start(gunicorn_at(project, f"127.0.0.3:{port}"))
    # Plain listeners carrying the app path: one of the same user on the very address (its
    # executable is the venv's base interpreter too), one of nobody's on another address.
    plain = start([sys.executable, "-c", LISTEN_AT, "127.0.0.1", str(port), "demoapp:app"])
    theirs = start(
        [SYSTEM_PYTHON, "-c", LISTEN_AT, "127.0.0.2", str(port), "demoapp:app"], user="nobody"
    )
    for proc in (script, python, elsewhere):
        listening(proc, port, children=1)
    for proc in (plain, theirs):
        listening(proc, port)
    change_code(project)
    gunicorn = f"{sys.prefix}/bin/gunicorn"

    # No user in the spec: DynamicUser=, so root's servers are not the unit's.
    _, _, err = doctor(cli, project, "--fix", port=port, venv=sys.prefix)
    assert "stopping" not in err
    left = {ln.split()[3]: ln for ln in err.splitlines() if ln.startswith("left alone pid ")}
    procs = (script, python, elsewhere, plain, theirs)
    assert set(left) == {str(p.pid) for p in procs}
    for proc in (script, python):
        assert left[str(proc.pid)] == (
            f"left alone pid {proc.pid} (root): owned by root, not the unit's dynamic user demoapp"
        )
    assert all(alive(p) for p in procs)

    _, _, err = doctor(cli, project, "--fix", "--user", "root", port=port, venv=sys.prefix)
    lines = err.splitlines()
    for proc in (script, python):
        assert any(ln.startswith(f"stopping   pid {proc.pid} (root): ") for ln in lines)
        assert f"stopped    pid {proc.pid}" in lines
    left = {ln.split()[3]: ln for ln in lines if ln.startswith("left alone pid ")}
    assert set(left) == {str(p.pid) for p in (elsewhere, plain, theirs)}
    assert left[str(elsewhere.pid)] == (
        f"left alone pid {elsewhere.pid} (root): listens on 127.0.0.3:{port}, not 127.0.0.1:{port}"
    )
    assert f"(root): not the spec's server {gunicorn} (its executable is " in left[str(plain.pid)]
    assert f"(nobody): not the spec's server {gunicorn}" in left[str(theirs.pid)]
    assert "owned by nobody, not the unit's user root" in left[str(theirs.pid)]
    for proc in (script, python):
        wait_stopped(proc)
        assert not alive(proc)
    assert all(alive(p) for p in (elsewhere, plain, theirs))


@pytest.mark.servers
def test_gunicorn_with_workers_is_one_server_and_goes_stale(cli, project: Path):
    port = free_port()
    gunicorn = Path(sys.prefix) / "bin" / "gunicorn"
    proc = subprocess.Popen(
        [
            str(gunicorn),
            "--workers",
            "2",
            "--bind",
            f"127.0.0.1:{port}",
            "--chdir",
            str(project),
            "demoapp:app",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, "gunicorn did not start"
                assert proc.poll() is None, "gunicorn exited"
                time.sleep(0.1)
        time.sleep(1.5)  # let both workers boot, as the stale check looks at the youngest
        code, findings, _ = doctor(cli, project, port=port)
        # The master and its workers share one socket: one server, not three.
        assert "port-shared" not in checks(findings)
        assert "stale-code" not in checks(findings)
        assert code == 0

        time.sleep(1.0)
        (project / "demoapp.py").write_text((EXAMPLE / "demoapp.py").read_text() + "\n# v2\n")
        code, findings, _ = doctor(cli, project, port=port)
        (finding,) = [f for f in findings if f["check"] == "stale-code"]
        assert finding["evidence"].startswith(f"pid {proc.pid} (")
        assert "gunicorn" in finding["evidence"]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


# --- the app's environment ----------------------------------------------------------------


def build_wheel(directory: Path, name: str, version: str, requires: list[str]) -> Path:
    """A minimal pure-Python wheel, written by hand (no build backend, no network)."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": "",
        f"{dist}/METADATA": "Metadata-Version: 2.1\n"
        f"Name: {name}\nVersion: {version}\n" + "".join(f"Requires-Dist: {r}\n" for r in requires),
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: opskit-tests\n"
        "Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        data = text.encode()
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist}/RECORD,,")
    wheel = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
        zf.writestr(f"{dist}/RECORD", "\n".join(record) + "\n")
    return wheel


@pytest.mark.pip
def test_pip_check_failures_in_the_apps_environment(cli, project: Path, tmp_path: Path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    build_wheel(wheels, "doctor_alpha", "1.0", ["doctor-beta>=2"])
    build_wheel(wheels, "doctor_beta", "1.0", [])
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = str(venv / "bin" / "python")
    # --no-deps skips pip's own conflict check, as a hand-made upgrade would.
    subprocess.run(
        [
            python,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-index",
            "--find-links",
            str(wheels),
            "--no-deps",
            "doctor_alpha",
            "doctor_beta",
        ],
        check=True,
        timeout=300,
    )
    result = cli(
        "doctor",
        "demoapp",
        "--config",
        str(project / "pyproject.toml"),
        "--project",
        str(project),
        "--venv",
        str(venv),
        "--port",
        str(free_port()),
        "--json",
    )
    assert result.code == 1
    (finding,) = [f for f in json.loads(result.out)["findings"] if f["check"] == "pip-check"]
    assert finding["severity"] == "error"
    assert (
        "doctor-alpha 1.0 has requirement doctor-beta>=2, but you have doctor-beta 1.0"
        in (finding["evidence"])
    )

    # Repaired: the satisfying version installed, pip check passes, no finding.
    build_wheel(wheels, "doctor_beta", "2.0", [])
    subprocess.run(
        [
            python,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-index",
            "--find-links",
            str(wheels),
            "doctor_beta==2.0",
        ],
        check=True,
        timeout=300,
    )
    result = cli(
        "doctor",
        "demoapp",
        "--config",
        str(project / "pyproject.toml"),
        "--project",
        str(project),
        "--venv",
        str(venv),
        "--port",
        str(free_port()),
    )
    assert result.code == 0, result.out + result.err
    assert "pip-check" not in result.out


def test_table_on_screen(cli, project: Path, tmp_path: Path):
    unit = tmp_path / "bare.service"
    unit.write_text("[Service]\nExecStart=/usr/bin/true\n")
    result = cli(
        "doctor",
        "demoapp",
        "--config",
        str(project / "pyproject.toml"),
        "--project",
        str(project),
        "--units",
        str(unit),
        "--venv",
        MISSING_VENV,
        "--port",
        str(free_port()),
    )
    assert result.code == 1
    lines = result.out.splitlines()
    assert lines[0].startswith("error   unit-restart")
    assert any(
        line.strip().startswith("evidence: ") and "bare.service: no Restart=" in line
        for line in lines
    )
    assert any(line.strip().startswith("fix:") for line in lines)
    # The unit: no Restart= (error); no RestartSec=, no MemoryMax=, no watchdog
    # (warnings); two logging warnings.
    infos = 1 if systemd_running() else 2  # pip check's, and no systemd running here
    assert lines[-1] == f"1 error, 5 warnings, {infos} info"
    assert result.err == "opskit: error: doctor: 1 error finding(s)\n"


def test_bad_input(cli, project: Path):
    result = cli("doctor", "demoapp", "--config", str(project / "pyproject.toml"), "--port", "0")
    assert result.code == 2
    assert result.err.count("\n") == 1 and "port" in result.err


def test_threads_helper_ignores_unparsable_files(tmp_path: Path):
    bad = tmp_path / "bad.py"
    bad.write_text(textwrap.dedent("def (:\n"))
    assert import_time_threads(bad) == []


# --- the registry and the output ------------------------------------------------------------


def test_findings_come_errors_first_then_in_registry_order(project: Path):
    unit = project / "deploy" / "demoapp.service"
    unit.parent.mkdir()
    text = unit_text().replace("Restart=always", "Restart=on-failure").replace("RestartSec=5\n", "")
    unit.write_text(text.replace("[Service]\n", "[Service]\nStartLimitBurst=3\n"))
    (project / "res.py").write_text("class Holder:\n    def __del__(self):\n        pass\n")
    raw = {"name": "demoapp", "app": "demoapp:app", "venv": MISSING_VENV, "port": free_port()}
    spec = build_spec(raw)
    report = diagnose(spec, project=project, units=None)
    assert [(f.severity, f.check) for f in report.findings] == [
        ("error", "unit-start-limit"),
        # Warnings in the order of CHECKS: the unit file's, then __del__, then logging.
        ("warning", "unit-restart"),
        ("warning", "unit-restart-sec"),
        ("warning", "del-method"),
        ("warning", "logging"),
        ("warning", "logging"),
        # Infos in order too: no systemd runs here (as in CI), then no venv for pip check.
        *([] if systemd_running() else [("info", "live-units")]),
        ("info", "pip-check"),
    ]
    assert report.stale == []
    names = [name for name, _ in CHECKS]
    assert len(set(names)) == len(names)


def test_severity_is_written_as_its_plain_value():
    finding = Finding(Severity.ERROR, "unit-restart", "problem", "x.service: no Restart=", "fix")
    assert finding.severity == "error"
    assert to_json([finding]) == textwrap.dedent(
        """\
        {
          "errors": 1,
          "findings": [
            {
              "severity": "error",
              "check": "unit-restart",
              "problem": "problem",
              "evidence": "x.service: no Restart=",
              "fix": "fix"
            }
          ]
        }"""
    )
    info = Finding(Severity.INFO, "pip-check", "skipped", "no venv", "")
    assert table([finding, info]).splitlines() == [
        "error   unit-restart  problem",
        "                      evidence: x.service: no Restart=",
        "                      fix:      fix",
        "info    pip-check     skipped",
        "                      evidence: no venv",
        "",
        "1 error, 0 warnings, 1 info",
    ]


@pytest.mark.servers
def test_fix_stops_a_stale_uwsgi_with_its_stop_signal(cli, project: Path, start):
    """uWSGI 2.0 takes SIGTERM for a brutal reload: --fix stops it with SIGQUIT, at once."""
    port = free_port()
    proc = start(
        [
            f"{sys.prefix}/bin/uwsgi",
            *("--master", "--module", "demoapp:app", "--http-socket", f"127.0.0.1:{port}"),
            *("--processes", "1", "--chdir", str(project), "--need-app"),
        ]
    )
    listening(proc, port, children=1)
    change_code(project)
    _, _, err = doctor(
        cli, project, "--fix", "--user", "root", "--server", "uwsgi", port=port, venv=sys.prefix
    )
    # After SIGTERM the master re-executes itself and lives on until the SIGKILL
    # ("killed ... no exit 40 s after SIGTERM").
    assert f"stopped    pid {proc.pid}" in err.splitlines(), err
    wait_stopped(proc)
    assert not alive(proc)


@pytest.mark.pip
def test_a_venv_uv_built_without_pip_is_checked_by_uv(cli, project: Path, tmp_path: Path):
    """installer = uv: a release's venv has no pip; doctor's check runs uv pip check."""
    from opskit.upgrade.installer import find_uv

    uv = find_uv()
    assert uv is not None, "uv is not installed: pip install -e '.[test]'"
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    build_wheel(wheels, "doctor_alpha", "1.0", ["doctor-beta>=2"])
    build_wheel(wheels, "doctor_beta", "1.0", [])
    venv = tmp_path / "venv"
    env = {**os.environ, "UV_CACHE_DIR": str(tmp_path / "uv-cache")}
    run = {"check": True, "timeout": 300, "env": env, "capture_output": True}
    subprocess.run([uv, "venv", "--no-config", "--python", sys.executable, str(venv)], **run)
    subprocess.run(
        [uv, "pip", "install", "--python", str(venv / "bin" / "python"), "--no-index",
         "--find-links", str(wheels), "--no-deps", "doctor_alpha", "doctor_beta"], **run,
    )  # fmt: skip
    assert not (venv / "bin" / "pip").exists()
    args = ["doctor", "demoapp", "--config", str(project / "pyproject.toml"), "--project",
            str(project), "--venv", str(venv), "--port", str(free_port()), "--json"]  # fmt: skip
    config = project / "pyproject.toml"
    plain = config.read_text()
    config.write_text(plain.replace("[tool.opskit]\n", '[tool.opskit]\ninstaller = "uv"\n'))
    (finding,) = [
        f for f in json.loads(cli(*args).out)["findings"] if f["check"] == "pip-check"
    ]  # fmt: skip
    assert finding["severity"] == "error", finding
    assert "doctor-beta" in finding["evidence"] and "doctor-alpha" in finding["evidence"]
    # Without installer = uv, pip cannot run there: said, not hidden.
    config.write_text(plain)
    (finding,) = [
        f for f in json.loads(cli(*args).out)["findings"] if f["check"] == "pip-check"
    ]  # fmt: skip
    assert finding["severity"] == "warning" and finding["problem"] == "pip check could not run"
