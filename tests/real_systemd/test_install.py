"""`opskit systemd --install` against a real systemd: installs and starts, then changes nothing."""

from __future__ import annotations

import pytest

from tests.real_systemd import nspawn
from tests.real_systemd.demo import APP_DIR, url

pytestmark = [pytest.mark.systemd, pytest.mark.timeout(600)]

OPSKIT = f"{nspawn.TOOL_VENV}/bin/opskit"
ARGS = (
    "systemd",
    "demo",
    "--server",
    "gunicorn",
    "--app",
    "demoapp:app",
    "--workdir",
    APP_DIR,
    "--venv",
    nspawn.SERVERS_VENV,
    "--graceful-timeout",
    "5",
)
UNIT = "/etc/systemd/system/demo.service"


def _state(box) -> dict[str, str]:
    return box.show(
        "demo.service",
        "ActiveState",
        "MainPID",
        "InvocationID",
        "ExecMainStartTimestampMonotonic",
        "NRestarts",
        "NeedDaemonReload",
    )


def _reloads(box) -> int:
    # PID 1 logs "Reloading." once per daemon-reload.
    out = box.run("journalctl", "--no-pager", "_PID=1", "-o", "cat", check=False).stdout
    return sum(1 for line in out.splitlines() if line.startswith("Reloading"))


def test_install_enable_starts_and_second_run_changes_nothing(boot, measure):
    box = boot("install")
    first = box.run(OPSKIT, *ARGS, "--install", "--enable", check=False, timeout=180)
    assert first.returncode == 0, first.stderr
    assert f"create     {UNIT}" in first.stderr
    assert "systemctl  daemon-reload" in first.stderr
    assert "systemctl  enable demo.service" in first.stderr
    assert "systemctl  start demo.service" in first.stderr
    assert box.systemctl("is-enabled", "demo.service").strip() == "enabled"
    assert box.wait_http(url("/health"), timeout=30) < 30
    before, reloads = _state(box), _reloads(box)
    assert before["ActiveState"] == "active"

    second = box.run(OPSKIT, *ARGS, "--install", "--enable", check=False, timeout=180)
    assert second.returncode == 0, second.stderr
    assert f"identical  {UNIT}" in second.stderr
    assert "systemctl  nothing to do" in second.stderr
    assert _state(box) == before  # same process, same invocation, no restart
    assert _reloads(box) == reloads  # and no daemon-reload

    # A changed spec: refused without --force (the file on disk differs) ...
    changed = (*ARGS, "--workers", "3")
    refused = box.run(OPSKIT, *changed, "--install", "--enable", check=False, timeout=180)
    assert refused.returncode == 1
    assert "not overwritten" in refused.stderr
    # ... written with --force, but the running service is left alone without --restart ...
    forced = box.run(OPSKIT, *changed, "--install", "--enable", "--force", check=False)
    assert forced.returncode == 0, forced.stderr
    assert f"overwrite  {UNIT}" in forced.stderr
    assert "runs its old definition" in forced.stderr
    assert _state(box)["MainPID"] == before["MainPID"]
    assert "--workers 3" in box.read_file(UNIT)
    # ... until a run with --restart, even one whose files are already identical: the
    # service has run since before its file was written, so it has the old definition.
    restarted = box.run(OPSKIT, *changed, "--install", "--restart", check=False, timeout=180)
    assert restarted.returncode == 0, restarted.stderr
    assert f"identical  {UNIT}" in restarted.stderr
    assert "systemctl  restart demo.service" in restarted.stderr
    after = _state(box)
    assert after["MainPID"] != before["MainPID"]
    assert after["ActiveState"] == "active"
    # Now the running definition is the file's: nothing left to do, nothing restarted.
    again = box.run(OPSKIT, *changed, "--install", "--restart", check=False, timeout=180)
    assert again.returncode == 0, again.stderr
    assert "systemctl  nothing to do" in again.stderr
    assert "old definition" not in again.stderr
    assert _state(box) == after
    # Back to the first spec in one step: overwrite, daemon-reload, restart.
    back = box.run(OPSKIT, *ARGS, "--install", "--restart", "--force", check=False, timeout=180)
    assert back.returncode == 0, back.stderr
    assert f"overwrite  {UNIT}" in back.stderr
    assert "systemctl  daemon-reload" in back.stderr
    assert "systemctl  restart demo.service" in back.stderr
    assert _state(box)["MainPID"] != after["MainPID"]
    assert box.wait_http(url("/health"), timeout=30) < 30
    measure(
        "install: --install --enable then an identical run: "
        f"second run kept MainPID {before['MainPID']} and ran no daemon-reload"
    )


def test_install_refuses_non_root(boot):
    box = boot("install-nonroot")
    proc = box.run(
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        OPSKIT,
        *ARGS,
        "--install",
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "opskit: error: --install: must run as root (it writes system units and runs "
        "systemctl); write the files with -o DIR instead"
    ]
    assert box.run("test", "-e", UNIT, check=False).returncode != 0


def test_install_refuses_without_running_systemd(venvs):
    # The same container without --boot: a root shell where PID 1 is not systemd.
    proc = nspawn.run_once(
        "install-nosystemd",
        [
            "/bin/sh",
            "-c",
            f"{OPSKIT} {' '.join(ARGS)} --install; echo exit=$?; ls /etc/systemd/system",
        ],
        binds=venvs.binds,
        timeout=120,
    )
    assert "exit=2" in proc.stdout
    assert "demo.service" not in proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("opskit")]
    assert errors == [
        "opskit: error: --install: systemd is not running on this machine "
        "(no /run/systemd/system); write the files with -o DIR instead"
    ], proc.stderr
