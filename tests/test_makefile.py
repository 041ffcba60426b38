"""ops.mk: generated, then run by GNU Make itself (dry-run where root or systemd is needed)."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opskit.bundle.makefile import render_makefile
from opskit.render import make_var
from opskit.spec import build_spec
from tests.conftest import EXAMPLE, needs_analyze

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")

# Stands in for opskit where only the arguments matter: prints the argv it got as JSON.
ECHO_ARGV = f"{shlex.quote(sys.executable)} -c 'import json,sys; print(json.dumps(sys.argv[1:]))'"
OPSKIT = f"{shlex.quote(sys.executable)} -m opskit"
HOSTILE = [
    "with space",
    "dollar $HOME $(shell id) ${X}",
    "hash # not a comment",
    "back\\slash \\# and \\\\#",
    "quotes ' and \"",
    "trailing backslash\\",
    "  leading blanks",
    "semi;colon && pipe | star * tilde ~",
    "percent %n and non-ASCII é ✓",
]


def make(mk: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", "-f", str(mk), *args],
        capture_output=True,
        text=True,
        cwd=cwd or mk.parent,
        timeout=120,
        check=False,
    )


def write_mk(tmp_path: Path, **kwargs) -> Path:
    spec = kwargs.pop("spec", None) or build_spec({"name": "demoapp", "app": "demoapp:app"})
    (file,) = render_makefile(spec, **kwargs)
    path = tmp_path / file.name
    path.write_text(file.content)
    return path


def test_make_var_leaves_plain_text_alone():
    assert make_var("/srv/app") == "/srv/app"
    assert make_var("a$b#c") == "a$$b\\#c"


def test_make_var_refuses_a_newline():
    with pytest.raises(ValueError):
        make_var("a\nb")


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_value_arrives_intact_in_the_recipe(tmp_path: Path, value: str):
    mk = write_mk(tmp_path, directory=value, config=value, args=["--workdir", value])
    result = make(mk, "ops-units", f"OPSKIT={ECHO_ARGV}")
    assert result.returncode == 0, result.stderr
    argv = json.loads(result.stdout.splitlines()[-1])
    assert argv == [
        "bundle",
        "demoapp",
        "--config",
        value,
        "--workdir",
        value,
        "--output",
        value,
        "--force",
    ]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.text(
        st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\x00"),
        min_size=1,
        max_size=30,
    )
)
def test_any_text_survives_make_and_the_shell(tmp_path: Path, value: str):
    mk = write_mk(tmp_path, directory="deploy", args=["--set", value])
    result = make(mk, "ops-units", f"OPSKIT={ECHO_ARGV}")
    assert result.returncode == 0, result.stderr
    argv = json.loads(result.stdout.splitlines()[-1])
    assert argv[2:4] == ["--set", value]


def test_variables_are_overridable_from_the_command_line(tmp_path: Path):
    mk = write_mk(tmp_path)
    result = make(mk, "-n", "ops-status", "ops-logs", "SYSTEMCTL=my-systemctl", "OPS_LOG_ARGS=-f")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "my-systemctl status --no-pager demoapp.service",
        "journalctl --unit=demoapp.service -f",
    ]


def test_root_targets_dry_run(tmp_path: Path):
    spec = build_spec({"name": "demoapp", "app": "demoapp:app", "socket": True})
    mk = write_mk(tmp_path, spec=spec, directory="deploy dir")
    result = make(mk, "-n", "OPSKIT=opskit", "ops-install", "ops-reload", "ops-restart")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    # ops-install runs ops-check first, then copies every unit (the watchdog's too, on by
    # default) and reloads systemd.
    assert lines[0] == "opskit bundle demoapp --output 'deploy dir' --check"
    units = "demoapp.service demoapp.socket demoapp-watchdog.timer demoapp-watchdog.service"
    assert f"cd 'deploy dir' && install -m 0644 {units} /etc/systemd/system/" in lines
    assert lines[-3:] == [
        "systemctl daemon-reload",
        "'deploy dir'/reload-demoapp.sh ${DEPLOY_ID:+\"$DEPLOY_ID\"}",
        "systemctl restart demoapp.service",
    ]


@pytest.mark.parametrize(
    ("raw", "recipe"),
    [
        # The reload generator refuses these (a reload would not load new code): restart.
        ({"server": "uvicorn", "app": "demoapp:asgi", "workers": 1}, "restart"),
        ({"server": "gunicorn", "app": "demoapp:app", "preload": True}, "restart"),
        ({"server": "command", "command": ["/usr/bin/app"]}, "restart"),
        # These get the reload script: preflight, the graceful reload, proof.
        ({"server": "uvicorn", "app": "demoapp:asgi", "workers": 2}, "script"),
        ({"server": "gunicorn", "app": "demoapp:app"}, "script"),
        ({"server": "uwsgi", "app": "demoapp:app"}, "script"),
    ],
)
def test_reload_only_where_the_server_loads_new_code(tmp_path: Path, raw: dict, recipe: str):
    mk = write_mk(tmp_path, spec=build_spec({"name": "demoapp", **raw}))
    result = make(mk, "-n", "ops-reload")
    if recipe == "script":
        assert result.stdout.startswith("deploy/reload-demoapp.sh ")
    else:
        assert result.stdout.strip() == f"systemctl {recipe} demoapp.service"


def test_reload_passes_the_deploy_id_as_one_argument(tmp_path: Path):
    mk = write_mk(tmp_path)
    given = make(mk, "ops-reload", f"OPS_RELOAD={ECHO_ARGV}", "DEPLOY_ID=v 2; echo x")
    assert given.returncode == 0, given.stderr
    assert json.loads(given.stdout.splitlines()[-1]) == ["v 2; echo x"]
    none = make(mk, "ops-reload", f"OPS_RELOAD={ECHO_ARGV}")
    assert json.loads(none.stdout.splitlines()[-1]) == []


def test_reload_without_a_version_path_refuses_a_deploy_id(tmp_path: Path):
    # ops.mk still passes DEPLOY_ID on; the generated script, which has no version to
    # check it against, refuses it before doing anything.
    from opskit.reload.render import render_reload

    spec = build_spec({"name": "demoapp", "app": "demoapp:app"})
    mk = write_mk(tmp_path, spec=spec, directory=".")
    assert "refuses a DEPLOY_ID" in mk.read_text()
    (script, *_) = render_reload(spec)
    (tmp_path / script.name).write_text(script.content)
    (tmp_path / script.name).chmod(script.mode)
    result = make(mk, "ops-reload", "DEPLOY_ID=v2")
    assert result.returncode == 2, result.stderr
    assert "no DEPLOY_ID: no version-path is set to check it against" in result.stderr


def test_upgrade_passes_the_requirement_as_one_argument(tmp_path: Path):
    mk = write_mk(tmp_path, config="pyproject.toml")
    result = make(mk, "ops-upgrade", "PKG=name==1.2 ; echo injected", f"OPSKIT={ECHO_ARGV}")
    assert result.returncode == 0, result.stderr
    argv = json.loads(result.stdout.splitlines()[-1])
    python = "/srv/app/.venv/bin/python"
    assert argv == [
        "upgrade",
        "--config",
        "pyproject.toml",
        "--python",
        python,
        "name==1.2 ; echo injected",
    ]


def test_upgrade_without_pkg_is_a_usage_error(tmp_path: Path):
    mk = write_mk(tmp_path)
    result = make(mk, "ops-upgrade", "OPSKIT=false")
    assert result.returncode == 2
    assert "usage: make ops-upgrade PKG=name==1.2" in result.stderr


def test_help_is_the_default_alone_and_leaves_an_including_makefile_alone(tmp_path: Path):
    mk = write_mk(tmp_path)
    alone = make(mk)
    assert alone.returncode == 0, alone.stderr
    assert "ops-check" in alone.stdout
    for order in ("first", "last"):
        user = ["all:", "\t@echo user-all", "help:", "\t@echo user-help"]
        lines = ["include ops.mk", *user] if order == "first" else [*user, "include ops.mk"]
        (tmp_path / "Makefile").write_text("\n".join(lines) + "\n")
        default = make(tmp_path / "Makefile")
        assert default.stdout == "user-all\n", (order, default.stderr)
        helped = make(tmp_path / "Makefile", "help")
        assert helped.returncode == 0, helped.stderr
        assert "ops-units" in helped.stdout and helped.stdout.endswith("user-help\n")


def test_cli_writes_ops_mk_and_shows_the_include_line(cli, tmp_path: Path):
    out = tmp_path / "deploy"
    result = cli("makefile", "demoapp", "--app", "demoapp:app", "-o", str(out))
    assert result.code == 0, result.err
    assert f"create     {out / 'ops.mk'}" in result.err
    assert f"include {out}/ops.mk" in result.err
    again = cli("makefile", "demoapp", "--app", "demoapp:app", "-o", str(out))
    assert again.code == 0 and "identical" in again.err
    before = (out / "ops.mk").read_text()
    changed = cli("makefile", "demoapp", "--app", "demoapp:app", "--port", "9000", "-o", str(out))
    assert changed.code == 1
    assert "exists and differs" in changed.err
    assert (out / "ops.mk").read_text() == before


def test_cli_bad_input_writes_nothing(cli, tmp_path: Path):
    out = tmp_path / "deploy"
    result = cli("makefile", "demoapp", "--app", "demoapp:app", "--port", "0", "-o", str(out))
    assert result.code == 2
    assert result.err.count("\n") == 1 and "port" in result.err
    assert "Traceback" not in result.err
    assert not out.exists()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the example app whose spec runs from this checkout's venv (gunicorn exists)."""
    app = tmp_path / "my app"
    app.mkdir()
    for name in ("demoapp.py", "VERSION", "pyproject.toml"):
        shutil.copy2(EXAMPLE / name, app / name)
    return app


@needs_analyze
def test_ops_units_then_ops_check_for_real(cli, project: Path):
    venv = str(Path(sys.prefix))
    # The config watch's units (and the watchdog's, on by default) are verified too.
    config = project / "pyproject.toml"
    watch = "[tool.opskit]\nwatch = ['/etc/demoapp']\n"
    text = config.read_text().replace("[tool.opskit]\n", watch)
    assert "watch = " in text
    config.write_text(text)
    result = cli(
        "makefile",
        "demoapp",
        "--config",
        str(project / "pyproject.toml"),
        "--workdir",
        str(project),
        "--venv",
        venv,
        # The test's paths lie under /tmp, which a dynamic user's PrivateTmp= would hide.
        "--user",
        "opskit-test",
        "-o",
        str(project / "deploy"),
    )
    assert result.code == 0, result.err
    mk = project / "deploy" / "ops.mk"
    units = make(mk, "ops-units", f"OPSKIT={OPSKIT}", cwd=project)
    assert units.returncode == 0, units.stderr
    assert (project / "deploy" / "demoapp.service").is_file()
    check = make(mk, "ops-check", f"OPSKIT={OPSKIT}", cwd=project)
    assert check.returncode == 0, check.stdout + check.stderr
    planned = make(mk, "-n", "ops-check", f"OPSKIT={OPSKIT}", cwd=project).stdout
    verified = planned.split("verify --man=no", 1)[1].split("2>&1", 1)[0].split()
    assert verified == [
        "demoapp.service", "demoapp-watchdog.timer", "demoapp-watchdog.service",
        "demoapp-config.path", "demoapp-config.service",
    ]  # fmt: skip
    assert "verify     ok" in check.stdout
    assert "Overall exposure level for demoapp.service" in check.stdout

    # Drift: a hand edit is caught before anything else runs.
    unit = project / "deploy" / "demoapp.service"
    text = unit.read_text()
    unit.write_text(text.replace("[Service]\n", "[Service]\nStartLimitIntervalSec=0\n"))
    drift = make(mk, "ops-check", f"OPSKIT={OPSKIT}", cwd=project)
    assert drift.returncode != 0
    assert "drift" in drift.stderr and "demoapp.service" in drift.stderr

    # verify exits 0 on the misplaced key; ops-check fails on its warning all the same.
    skip_drift = make(mk, "ops-check", "OPSKIT=true", cwd=project)
    assert skip_drift.returncode != 0
    assert "Unknown key 'StartLimitIntervalSec' in section [Service]" in skip_drift.stderr


def test_upgrade_recipe_is_accepted_by_the_real_upgrade_command(tmp_path: Path):
    # A requirement without a version stops opskit upgrade at its first step (the pins),
    # after it has accepted every option the recipe passes: nothing is installed.
    mk = write_mk(tmp_path)
    result = make(
        mk, "ops-upgrade", "PKG=gunicorn", f"OPSKIT={OPSKIT}", f"OPS_PYTHON={sys.executable}"
    )
    assert result.returncode != 0
    assert "opskit: error: 'gunicorn': must be an exact pin NAME==VERSION" in result.stderr
    assert "No such option" not in result.stderr and "Got unexpected" not in result.stderr


def test_every_unit_the_spec_renders_is_checked_and_installed(tmp_path: Path):
    # The service Wants= its helpers: one left out of ops-install would be missing at start.
    from opskit.systemd.units import render_units

    spec = build_spec(
        {"name": "demoapp", "app": "demoapp:app", "socket": True, "watchdog": 10,
         "watch": ["/etc/demoapp/settings.toml"]}
    )  # fmt: skip
    mk = write_mk(tmp_path, spec=spec)
    result = make(mk, "-n", "OPSKIT=opskit", "ops-install")
    assert result.returncode == 0, result.stderr
    rendered = [f.name for f in render_units(spec)]
    assert len(rendered) == 6
    assert f"cd deploy && install -m 0644 {' '.join(rendered)} /etc/systemd/system/" in (
        result.stdout.splitlines()
    )
    assert f"verify --man=no {' '.join(rendered)} 2>&1" in result.stdout


def test_config_reload_runs_the_oneshot_and_shows_why_it_refused(tmp_path: Path):
    spec = build_spec({"name": "demoapp", "app": "demoapp:app", "watch": ["/etc/demoapp"]})
    mk = write_mk(tmp_path, spec=spec)
    assert "ops-config-reload" in make(mk).stdout
    # A stand-in systemctl whose start fails, as systemctl start of a failed oneshot does.
    fake = tmp_path / "systemctl"
    fake.write_text('#!/bin/sh\necho "$@"\n[ "$1" != start ]\n')
    fake.chmod(0o755)
    result = make(mk, "-s", "ops-config-reload", f"SYSTEMCTL={fake}")
    assert result.returncode != 0
    assert result.stdout.splitlines() == ["start demoapp-config.service"]
    assert "status --no-pager --lines=20 demoapp-config.service" in result.stderr
    (tmp_path / "plain").mkdir()
    assert "ops-config-reload" not in write_mk(tmp_path / "plain").read_text()


def test_with_a_base_ops_upgrade_builds_a_new_release(tmp_path: Path):
    spec = build_spec({"name": "demoapp", "app": "demoapp:app", "base": "/srv/demoapp"})
    mk = write_mk(tmp_path, spec=spec, config="pyproject.toml", args=["--user", "web"])
    result = make(mk, "ops-upgrade", "PKG=name==1.2 ; echo injected", f"OPSKIT={ECHO_ARGV}")
    assert result.returncode == 0, result.stderr
    argv = json.loads(result.stdout.splitlines()[-1])
    assert argv == [
        "upgrade", "--name", "demoapp", "--config", "pyproject.toml", "--user", "web",
        "--release", "name==1.2 ; echo injected",
    ]  # fmt: skip
    assert "--python" not in mk.read_text().split("ops-upgrade:", 1)[1].split("\n\n", 1)[0]
