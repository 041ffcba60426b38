"""reload-script generator: mechanism per server and supervisor, refusals, quoting, uWSGI ini."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from opskit.reload.plan import (
    CHAIN,
    HUP,
    SYSTEMCTL_RELOAD,
    SYSTEMCTL_RESTART,
    plan_reload,
)
from opskit.reload.render import render_reload, uwsgi_options
from opskit.render import templates_dir
from opskit.spec import build_spec
from opskit.systemd.units import server_unit

needs_shellcheck = pytest.mark.skipif(
    shutil.which("shellcheck") is None, reason="shellcheck is not installed"
)

#: The Jinja-free pieces of reload.sh.j2, which it includes verbatim.
PARTIALS = [
    templates_dir() / "reload" / name for name in ("proc_stat.sh", "proc_holders.sh", "probe.py")
]

HARD_DIR = '/srv/it\'s a "dir" $HOME `x` %n \\ ü'


def spec(**raw):
    raw.setdefault("name", "demo")
    raw.setdefault("app", "demoapp:app")
    return build_spec(raw)


@pytest.mark.parametrize(
    ("raw", "mechanism"),
    [
        ({"server": "gunicorn"}, SYSTEMCTL_RELOAD),
        ({"server": "gunicorn", "supervisor": "pidfile"}, HUP),
        ({"server": "gunicorn", "preload": True, "socket": True}, SYSTEMCTL_RESTART),
        ({"server": "uvicorn", "workers": 2}, SYSTEMCTL_RELOAD),
        ({"server": "uvicorn", "workers": 2, "supervisor": "pidfile"}, HUP),
        ({"server": "uvicorn", "workers": 1, "socket": True}, SYSTEMCTL_RESTART),
        ({"server": "uwsgi"}, CHAIN),
        ({"server": "uwsgi", "supervisor": "pidfile"}, CHAIN),
    ],
)
def test_mechanism_per_server_and_supervisor(raw, mechanism):
    assert plan_reload(spec(**raw)).mechanism == mechanism


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ({"server": "gunicorn", "preload": True}, "preload"),
        ({"server": "gunicorn", "server_args": ["--preload"]}, "preload"),
        ({"server": "gunicorn", "preload": True, "supervisor": "pidfile"}, "preload"),
        ({"server": "uwsgi", "lazy_apps": False}, "lazy-apps"),
        ({"server": "uvicorn", "workers": 1}, "workers"),
        ({"server": "uvicorn", "workers": 1, "supervisor": "pidfile", "socket": True}, "workers"),
        ({"server": "command", "command": ["/bin/true"], "app": None}, "server"),
    ],
)
def test_configurations_that_keep_old_code_are_refused(cli, tmp_path: Path, raw, words):
    args = ["reload-script", "demo", "-o", str(tmp_path / "out")]
    for key, value in raw.items():
        if value is not None:
            args += ["--set", f"{key}={value!r}".replace("True", "true").replace("False", "false")]
    if "app" not in raw:
        args += ["--app", "demoapp:app"]
    result = cli(*args)
    assert result.code == 2, result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"opskit: error: {words}:"), result.err
    assert "Traceback" not in result.err
    assert not (tmp_path / "out").exists()


def test_preload_behind_a_socket_unit_warns_and_restarts(cli, tmp_path: Path):
    result = cli(
        "reload-script", "demo", "--app", "demoapp:app", "--preload", "--socket",
        "-o", str(tmp_path),
    )  # fmt: skip
    assert result.code == 0, result.err
    assert "warning: preload = true" in result.err
    text = (tmp_path / "reload-demo.sh").read_text()
    assert 'systemctl restart "$UNIT"' in text
    assert "kill -HUP" not in text


@pytest.mark.parametrize("server", ["gunicorn", "uvicorn", "uwsgi"])
@pytest.mark.parametrize("socket", [False, True])
def test_never_usr2_under_systemd(server, socket):
    (script, *_) = render_reload(spec(server=server, socket=socket, preload=False))
    assert "USR2" not in script.content
    assert "kill -HUP" not in script.content  # systemd sends the signal (ExecReload=)


def test_script_is_executable_and_written_through_the_write_step(cli, tmp_path: Path):
    args = ("reload-script", "demo", "--app", "demoapp:app", "-o", str(tmp_path))
    assert cli(*args).code == 0
    script = tmp_path / "reload-demo.sh"
    assert script.stat().st_mode & 0o777 == 0o755
    assert cli(*args, "--check").code == 0
    script.write_text(script.read_text() + "# local edit\n")
    result = cli(*args)
    assert result.code == 1 and "exists and differs" in result.err
    assert script.read_text().endswith("# local edit\n")
    assert cli(*args, "--check").code == 1
    assert cli(*args, "--force").code == 0
    assert cli(*args, "--check").code == 0


def _hard_spec(server: str, supervisor: str, **more):
    return spec(**{**_hard_values(server, supervisor), **more})


def _hard_values(server: str, supervisor: str) -> dict:
    return dict(
        server=server,
        workers=2,
        supervisor=supervisor,
        working_directory=HARD_DIR,
        # systemd refuses quotes and backslashes in an executable's path (the spec checks).
        venv="/opt/my venv $x `y` %n ü",
        pidfile=f"{HARD_DIR}/x.pid",
        deploy_id_file=f"{HARD_DIR}/VERSION",
        environment={"A": 'it\'s "q" $x `y` %40 \\', "B": ""},
        environment_file="/etc/my env's file",
        health_path="/he'alth",
        version_path="/v$x`y`'\"%n",
        server_args=["--x", "a b"] if server != "uwsgi" else [],
    )


#: Which of health-path and version-path a spec sets: each combination is its own script.
PATHS = {
    "both": {},
    "none": {"health_path": None, "version_path": None, "deploy_id_file": None},
    "health": {"version_path": None},
    "version": {"health_path": None},
}


@needs_shellcheck
@pytest.mark.parametrize("server", ["gunicorn", "uvicorn", "uwsgi"])
@pytest.mark.parametrize("supervisor", ["systemd", "pidfile"])
@pytest.mark.parametrize("unix", [False, True])
@pytest.mark.parametrize("paths", list(PATHS))
def test_script_is_shellcheck_clean_with_hard_values(
    tmp_path: Path, server, supervisor, unix, paths
):
    more = {"unix_socket": f"{HARD_DIR}/app.sock"} if unix else {}
    more.update(PATHS[paths])
    (script, *_) = render_reload(_hard_spec(server, supervisor, **more))
    path = tmp_path / script.name
    path.write_text(script.content)
    proc = subprocess.run(
        ["shellcheck", "--severity=style", str(path)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0


@needs_shellcheck
@pytest.mark.parametrize(
    "partial", [p for p in PARTIALS if p.suffix == ".sh"], ids=lambda p: p.name
)
def test_shell_partials_are_shellcheck_clean_as_they_are(partial: Path):
    # Checked as the file ships: it cannot carry a shebang or a shell directive, which
    # would land in the middle of the script, so the shell is named on the command line.
    proc = subprocess.run(
        ["shellcheck", "--shell=bash", "--severity=style", str(partial)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout


@pytest.mark.parametrize("partial", PARTIALS, ids=lambda p: p.name)
@pytest.mark.parametrize("server", ["gunicorn", "uvicorn", "uwsgi"])
@pytest.mark.parametrize("supervisor", ["systemd", "pidfile"])
@pytest.mark.parametrize("unix", [False, True])
def test_partials_are_included_verbatim(partial: Path, server, supervisor, unix):
    text = partial.read_text(encoding="utf-8")
    # No Jinja syntax, so that {% include %} renders the file exactly as it is.
    assert "{{" not in text and "{%" not in text and "{#" not in text
    more = {"unix_socket": f"{HARD_DIR}/app.sock"} if unix else {}
    (script, *_) = render_reload(_hard_spec(server, supervisor, **more))
    assert script.content.count(text) == 1


def test_values_reach_the_script_unchanged(tmp_path: Path):
    """Run the script with hard values: it must name the exact pidfile it could not read."""
    (script, *_) = render_reload(_hard_spec("gunicorn", "pidfile"))
    path = tmp_path / script.name
    path.write_text(script.content)
    proc = subprocess.run(["bash", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert f"no running server in {HARD_DIR}/x.pid; nothing to reload" in proc.stderr
    bad = subprocess.run(["bash", str(path), "a", "b"], capture_output=True, text=True)
    assert bad.returncode == 2 and "usage:" in bad.stderr


def test_a_deploy_id_without_a_version_path_is_a_usage_error(tmp_path: Path):
    """Nothing would check it, and nothing would write it: exit 2 before anything else."""
    (script, *_) = render_reload(spec(supervisor="pidfile", pidfile=f"{tmp_path}/x.pid"))
    path = tmp_path / script.name
    path.write_text(script.content)
    proc = subprocess.run(["bash", str(path), "v2"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr == (
        "reload-demo: usage: reload-demo.sh "
        "(no DEPLOY_ID: no version-path is set to check it against)\n"
    )
    # With a deploy-id file the id is still written there, so it is accepted.
    with_file = spec(
        supervisor="pidfile", pidfile=f"{tmp_path}/x.pid", deploy_id_file=f"{tmp_path}/ID"
    )
    path.write_text(render_reload(with_file)[0].content)
    proc = subprocess.run(["bash", str(path), "v2"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert f"no running server in {tmp_path}/x.pid" in proc.stderr


@pytest.mark.parametrize("supervisor", ["systemd", "pidfile"])
def test_uwsgi_ini_agrees_with_the_unit(supervisor):
    s = spec(server="uwsgi", supervisor=supervisor, pidfile="/run/demo/w.pid", port=8123)
    options = dict(uwsgi_options(s))
    argv = server_unit(s).argv
    for flag in ("--master", "--enable-threads", "--need-app", "--lazy-apps", "--vacuum"):
        assert flag in argv and options[flag[2:]] == "true"
    for flag in ("--module", "--http-socket", "--processes", "--worker-reload-mercy"):
        assert options[flag[2:]] == argv[argv.index(flag) + 1]
    fifo = argv[argv.index("--master-fifo") + 1]
    if supervisor == "systemd":
        assert options["master-fifo"] == fifo
        assert "pidfile" not in options
    else:
        assert options["master-fifo"] == "/run/demo/uwsgi.fifo"
        assert options["pidfile"] == "/run/demo/w.pid"
        assert options["die-on-term"] == "true"
    ini = render_reload(s)[1]
    assert ini.name == "demo.uwsgi.ini" and ini.mode == 0o644
    assert "\nlazy-apps = true\n" in ini.content


def test_uwsgi_ini_refuses_what_it_cannot_hold(cli, tmp_path: Path):
    result = cli(
        "reload-script", "demo", "--server", "uwsgi", "--app", "demoapp:app",
        "--set", 'server-args=["-x"]', "-o", str(tmp_path / "out"),
    )  # fmt: skip
    assert result.code == 2
    assert result.err.strip() == (
        "opskit: error: server-args: '-x' cannot be written to the uWSGI ini"
    )
    assert not (tmp_path / "out").exists()


def test_bad_supervisor_is_one_line(cli, tmp_path: Path):
    result = cli(
        "reload-script", "demo", "--app", "demoapp:app", "--supervisor", "runit",
        "-o", str(tmp_path / "out"),
    )  # fmt: skip
    assert result.code == 2
    assert result.err.strip() == (
        "opskit: error: supervisor: expected one of systemd, pidfile, got 'runit'"
    )
    assert not (tmp_path / "out").exists()
