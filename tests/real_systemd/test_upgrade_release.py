"""Upgrades and config changes as releases, on a real systemd.

``opskit upgrade --release``: a package moved in a new release built from the live one's
lock, deployed through the release path; the live venv is never touched. ``watch``: a
changed configuration file reloads the service through the verified reload script, and
a broken one is refused with the live workers keeping the old configuration. Each check
is made from outside opskit too: what the service answers, the cwd of every process of
the unit, the package in each release's venv.
"""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path

import pytest

from tests.real_systemd import nspawn
from tests.real_systemd.demo import url
from tests.real_systemd.test_canary import _under_load
from tests.real_systemd.test_deploy import BASE, RAW, WHEELS, Site, pure_wheel

pytestmark = [pytest.mark.systemd, pytest.mark.timeout(600)]

#: Wheels of probe-pkg that are not in the base's cache: upgrade --release fetches them.
EXTRA = "/srv/extra"
#: The project beside the config file: a pip-tools pair, updated only when a release serves.
PROJECT = "/srv/deploy"

#: demoapp answers /pkg with the probe package it imported.
PKG_ROUTE = """
import probe_pkg as _probe

_plain = _respond


def _respond(path):
    if path == "/pkg":
        return "200 OK", f"{_probe.VERSION}\\n".encode()
    return _plain(path)
"""


def _probe(version: str, *, ok: bool = True, requires: tuple[str, ...] = ()) -> tuple[str, bytes]:
    code = f"VERSION = {version!r}\nOK = {ok}\n".encode()
    return pure_wheel("probe_pkg", version, {"probe_pkg.py": code}, requires)


def _site_with_probe(boot, wheelhouse: Path, name: str, raw=RAW) -> Site:
    box = boot(name, binds=(nspawn.Bind(wheelhouse, WHEELS),), app=False)
    site = Site(box, wheelhouse, raw)
    filename, data = _probe("1.0")
    box.write_file(f"{BASE}/wheels/{filename}", data)
    for version, ok, requires in (
        ("2.0", True, ()),
        ("3.0", True, ("packaging<1",)),  # pip check fails beside packaging 26
        ("4.0", False, ()),  # installs and imports; the smoke command fails
    ):
        filename, data = _probe(version, ok=ok, requires=requires)
        box.write_file(f"{EXTRA}/{filename}", data)
    return site


def _pkg(site: Site) -> set[str]:
    return {site.box.http_get(url("/pkg")).body.strip() for _ in range(8)}


def _in_venv(site: Site, release: str) -> list[str]:
    out = site.box.run(
        "sh", "-c", f"ls -d {BASE}/releases/{release}/venv/lib/python*/site-packages/probe_pkg-*"
    )
    return [Path(p).name for p in out.stdout.split()]


def test_upgrade_release_under_load_and_refusals(boot, wheelhouse: Path, measure) -> None:
    site = _site_with_probe(boot, wheelhouse, "upgrade-release")
    box = site.box
    lock = site.lock + "probe-pkg==1.0\n"
    box.write_file(f"{PROJECT}/requirements.in", "gunicorn\npackaging\nprobe-pkg\n")
    box.write_file(f"{PROJECT}/requirements.txt", lock)
    proc, first = site.deploy(site.project("v1", PKG_ROUTE, "probe-pkg==1.0\n"))
    assert proc.returncode == 0, proc.stderr + box.journal("demo.service")
    v1 = first["release"]
    site.serves(v1)
    assert _pkg(site) == {"1.0"}

    def upgrade(pin: str, *more: str):
        done = site.opskit("upgrade", "--release", pin, "--find-links", EXTRA, "--json", *more)
        return done, json.loads(done.stdout) if done.stdout.strip() else {}

    (proc, up), load = _under_load(box, lambda: upgrade("probe-pkg==2.0"), seconds=30)
    measure(
        f"upgrade --release probe-pkg 1.0 -> 2.0: {load['failed']} of "
        f"{load['ok'] + load['failed']} failed"
    )
    assert proc.returncode == 0, proc.stderr
    assert load["failed"] == 0, load
    v2 = up["release"]
    assert up["status"] == "live" and up["built"] and up["previous"] == v1, up
    site.serves(v2)
    assert _pkg(site) == {"2.0"}
    # The old release is intact: its own venv still holds 1.0, for a rollback.
    assert _in_venv(site, v1) == ["probe_pkg-1.0.dist-info"]
    assert _in_venv(site, v2) == ["probe_pkg-2.0.dist-info"]
    # The project's lock moved, now that the release serves.
    text = box.run("cat", f"{PROJECT}/requirements.txt").stdout
    assert "probe-pkg==2.0" in text and "probe-pkg==1.0" not in text, text
    assert "probe-pkg==2.0" in box.run("cat", f"{BASE}/releases/{v2}/requirements.txt").stdout

    for pin, more, why in (
        # --no-lock: pip-compile would refuse 3.0 first; the release's own pip check is tested.
        ("probe-pkg==3.0", ("--no-lock",), "dependencies conflict"),
        (
            "probe-pkg==4.0",
            ("--smoke", "python -c 'import probe_pkg, sys; sys.exit(0 if probe_pkg.OK else 1)'"),
            "smoke command",
        ),
    ):
        (proc, refused), load = _under_load(box, lambda p=pin, m=more: upgrade(p, *m), seconds=20)
        measure(f"upgrade --release {pin} refused: exit {proc.returncode}, {load['failed']} failed")
        assert proc.returncode == 1, proc.stderr
        assert why in proc.stderr, proc.stderr
        assert refused["status"] == "refused", refused
        assert load["failed"] == 0, load
        site.serves(v2)
        assert _pkg(site) == {"2.0"}
        text = box.run("cat", f"{PROJECT}/requirements.txt").stdout
        assert "probe-pkg==2.0" in text, text
        left = box.run("sh", "-c", f"ls -a {PROJECT}").stdout.split()
        assert [n for n in left if ".opskit-" in n] == [], left

    proc, same = upgrade("probe-pkg==2.0")
    assert proc.returncode == 0, proc.stderr
    assert same["status"] == "unchanged", same
    # A rollback goes back to the release with 1.0, which was never changed.
    proc = site.opskit("rollback")
    assert proc.returncode == 0, proc.stderr
    site.serves(v1)
    assert _pkg(site) == {"1.0"}


#: demoapp answers /conf with the value it read from the watched file at import.
CONF = "/etc/demo/config.json"
CONF_ROUTE = f"""
import json as _json

with open({CONF!r}, encoding="utf-8") as _handle:
    _CONF = _json.load(_handle)

_plain = _respond


def _respond(path):
    if path == "/conf":
        return "200 OK", f"{{_CONF['value']}}\\n".encode()
    return _plain(path)
"""


def _conf(site: Site) -> set[str]:
    return {site.box.http_get(url("/conf")).body.strip() for _ in range(8)}


def _write_conf(site: Site, text: str) -> None:
    # As a config client writes it: a temporary file renamed over the old one.
    write = f"printf %s {shlex.quote(text)} > {CONF}.tmp && mv -f {CONF}.tmp {CONF}"
    script = f"mkdir -p /etc/demo && {write}"
    site.box.run("sh", "-c", script)


def _config_unit(site: Site) -> dict[str, str]:
    return site.box.show("demo-config.service", "ActiveState", "Result", "InvocationID")


def _wait(predicate, what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.25)


def test_a_watched_config_change_reloads_verified_and_a_broken_one_is_refused(
    boot, wheelhouse: Path, measure
) -> None:
    raw = {**RAW, "watch": [CONF]}
    box = boot("config-watch", binds=(nspawn.Bind(wheelhouse, WHEELS),), app=False)
    site = Site(box, wheelhouse, raw)
    _write_conf(site, '{"value": "one"}')
    proc, first = site.deploy(site.project("v1", CONF_ROUTE))
    assert proc.returncode == 0, proc.stderr + box.journal("demo.service")
    v1 = first["release"]
    assert box.show("demo-config.path", "ActiveState")["ActiveState"] == "active"
    assert _conf(site) == {"one"}
    pids = box.show("demo.service", "MainPID")

    def change_and_wait() -> float:
        started = time.monotonic()
        _write_conf(site, '{"value": "two"}')
        _wait(lambda: _conf(site) == {"two"}, "the new value to serve")
        return time.monotonic() - started

    took, load = _under_load(box, change_and_wait, seconds=20)
    measure(f"watched config changed -> served in {took:.1f} s, {load['failed']} failed")
    assert load["failed"] == 0, load
    _wait(lambda: _config_unit(site)["ActiveState"] == "inactive", "the reload to end")
    assert _config_unit(site)["Result"] == "success"
    # A reload, not a restart: the same master, every process still in v1's release.
    assert box.show("demo.service", "MainPID") == pids
    site.serves(v1)

    def break_and_wait() -> None:
        _write_conf(site, "{not json")
        _wait(lambda: _config_unit(site)["ActiveState"] == "failed", "the reload to be refused")

    _, load = _under_load(box, break_and_wait, seconds=20)
    measure(f"broken watched config: refused, {load['failed']} failed")
    assert load["failed"] == 0, load
    assert _conf(site) == {"two"}
    status = box.systemctl("status", "demo-config.service", check=False)
    assert "REFUSED" in status, status
    doctor = site.opskit("doctor")
    assert doctor.returncode == 1, doctor.stdout + doctor.stderr
    assert "configuration reload of demo.service was refused" in doctor.stdout, doctor.stdout

    _write_conf(site, '{"value": "three"}')
    _wait(lambda: _conf(site) == {"three"}, "the fixed value to serve")
    _wait(lambda: _config_unit(site)["ActiveState"] == "inactive", "the reload to end")
    assert _config_unit(site)["Result"] == "success"
