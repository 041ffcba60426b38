"""The config watch: NAME-config.path and its oneshot, rendered, verified and run.

The oneshot's wrapper (debounce, refusal, a change during the reload) runs here for real
with bash and a stand-in reload script; the real reload of a real service after a real
change is in tests/real_systemd/test_upgrade_release.py.
"""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from opskit.render import render_template
from opskit.spec import build_spec
from opskit.systemd.units import render_units
from tests.conftest import needs_analyze, verify
from tests.unitfile import exec_words, parse, value, values

RAW = {"name": "shop", "app": "shop:app", "working_directory": "/srv/shop"}


def test_watch_adds_a_path_unit_and_a_oneshot_pulled_in_by_the_service(tmp_path):
    files = {
        f.name: f.content
        for f in render_units(build_spec({**RAW, "watch": ["/etc/shop/a.json", "/etc/shop/d/"]}))
    }
    assert {"shop-config.path", "shop-config.service"} <= set(files)
    path = parse(files["shop-config.path"])
    assert values(path, "Path", "PathChanged") == ["/etc/shop/a.json", "/etc/shop/d"]
    assert value(path, "Unit", "PartOf") == "shop.service"
    assert "shop-config.path" in values(parse(files["shop.service"]), "Unit", "Wants")
    argv = exec_words(value(parse(files["shop-config.service"]), "Service", "ExecStart"))
    assert argv[:2] == ["/bin/bash", "-c"]
    checked = subprocess.run(["bash", "-n", "-c", argv[2]], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    assert "shop-config.path" not in render_units(build_spec(RAW))[0].content


@needs_analyze
def test_the_config_units_verify_clean(tmp_path):
    for f in render_units(build_spec({**RAW, "watch": ["/etc/shop/a.json"]})):
        (tmp_path / f.name).write_text(f.content)
    for name in ("shop-config.path", "shop-config.service"):
        assert verify(tmp_path / name) == "", name


@pytest.mark.parametrize("bad", ["relative/path", "/etc/../x"])
def test_a_watch_path_must_be_absolute_and_normal(cli, tmp_path, monkeypatch, bad):
    monkeypatch.chdir(tmp_path)
    result = cli("systemd", "shop", "--app", "shop:app", "--watch", bad, "-o", str(tmp_path / "o"))
    assert result.code == 2
    assert result.err.count("\n") == 1 and "watch" in result.err, result.err
    assert not (tmp_path / "o").exists()


def _wrapper(
    tmp_path: Path, script: str, lock: Path | None = None
) -> tuple[list[str], dict[str, str]]:
    watched = tmp_path / "conf.json"
    watched.write_text("1")
    raw = {**RAW, "watch": [str(watched)], "deploy_id_file": str(tmp_path / "ID")}
    if lock is not None:
        # With a base, the oneshot takes the deploy lock.
        raw = {k: v for k, v in raw.items() if k != "working_directory"}
        raw["base"] = str(lock.parent)
        raw["deploy_id_file"] = str(lock.parent / "current" / "ID")
    spec = build_spec(raw)
    body = render_template(
        "systemd/config_reload.sh.j2", spec=spec, script=script, end="END_OF_IT",
        debounce=0.2, rounds=3, lock=str(lock or ""),
    )  # fmt: skip
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "systemctl"
    fake.write_text('#!/bin/sh\nexit "${FAKE_ACTIVE:-0}"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    runtime = tmp_path / "run"
    runtime.mkdir()
    env = {
        **os.environ,
        "PATH": f"{bindir}:{os.environ['PATH']}",
        "RUNTIME_DIRECTORY": str(runtime),
    }
    return ["bash", "-c", body, "shop-config"], env


def test_the_oneshot_reloads_with_the_current_deploy_id(tmp_path):
    (tmp_path / "ID").write_text("R1\n")
    argv, env = _wrapper(tmp_path, f'echo "reload $*" >> {tmp_path}/log\nexit 0')
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "log").read_text() == "reload R1\n"
    assert "ok: shop.service serves the changed configuration" in done.stderr


def test_a_refused_reload_fails_the_oneshot(tmp_path):
    argv, env = _wrapper(tmp_path, "exit 3")
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "REFUSED" in done.stderr and "exit 3" in done.stderr, done.stderr


def test_a_change_during_the_reload_reloads_again(tmp_path):
    script = (
        f"echo reload >> {tmp_path}/log\n"
        f'[ "$(wc -l < {tmp_path}/log)" -gt 1 ] || echo 2 > {tmp_path}/conf.json\n'
    )
    argv, env = _wrapper(tmp_path, script)
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "log").read_text() == "reload\nreload\n"
    assert "changed during the reload" in done.stderr


def test_a_stopped_service_is_not_reloaded(tmp_path):
    argv, env = _wrapper(tmp_path, f"echo reload >> {tmp_path}/log")
    done = subprocess.run(argv, env={**env, "FAKE_ACTIVE": "3"}, capture_output=True, text=True)
    assert done.returncode == 0
    assert not (tmp_path / "log").exists() and "not running" in done.stderr


def test_the_oneshot_holds_the_deploy_lock_with_its_pid_in_it(tmp_path):
    """A deploy that waits for a config reload names the reload's PID, as for a deploy."""
    from opskit.deploy.layout import Layout

    lock = tmp_path / "base" / ".opskit-deploy.lock"
    lock.parent.mkdir()
    lock.write_text("99999999\n")  # a holder long gone
    # Run by the stand-in reload script, while the oneshot holds the lock: a deploy's try.
    check = (
        "import pathlib\nfrom opskit.deploy.layout import Layout\n"
        "try:\n"
        f"    with Layout(pathlib.Path({str(lock.parent)!r})).locked(print, wait=False):\n"
        "        print('not held')\n"
        "except Exception as exc:\n"
        "    print(exc)\n"
    )
    script = (
        f'echo "$PPID" > {tmp_path}/holder\n'
        f"{shlex.quote(sys.executable)} -c {shlex.quote(check)} > {tmp_path}/seen\n"
    )
    argv, env = _wrapper(tmp_path, script, lock)
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    holder = (tmp_path / "holder").read_text().strip()
    seen = (tmp_path / "seen").read_text().strip()
    assert seen == f"another deploy of {lock.parent} holds its lock (pid {holder})", seen
    # Released at the end: a deploy takes it at once.
    with Layout(lock.parent).locked(print, wait=False):
        pass
