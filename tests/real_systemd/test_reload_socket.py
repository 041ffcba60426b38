"""Reload loads new code in place; socket activation keeps restarts from dropping requests."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from opskit.systemd.units import render_units
from tests.real_systemd.demo import demo_spec, set_version, url
from tests.real_systemd.test_reload_script import wait_for_workers

pytestmark = [pytest.mark.systemd, pytest.mark.timeout(600)]

SERVERS = ["gunicorn", "uvicorn", "uwsgi"]


@pytest.mark.parametrize("server", SERVERS)
def test_reload_loads_new_code_keeping_main_pid(server, boot, demo_dir, measure):
    spec = demo_spec(server, workers=2)
    assert spec.reloadable
    unit = f"{spec.name}.service"
    box = boot(f"reload-{server}")
    files = render_units(spec)
    assert "\nExecReload=" in files[0].content
    box.install_units(files)
    box.systemctl("start", unit)
    box.wait_http(url("/version"), timeout=60, body="1")
    # Every worker up before VERSION changes: a late one would serve 2 without a reload.
    wait_for_workers(box, spec.workers)
    pid = box.main_pid(unit)

    set_version(demo_dir, "2")
    began = time.monotonic()
    box.systemctl("reload", unit)
    # Every worker must have the new code: ask until several answers in a row say 2.
    for _ in range(6):
        box.wait_http(url("/version"), timeout=60, body="2")
    seconds = time.monotonic() - began
    assert box.main_pid(unit) == pid
    assert box.show(unit, "ActiveState", "NRestarts") == {"ActiveState": "active", "NRestarts": "0"}
    measure(f"{server}: systemctl reload to new /version, same MainPID: {seconds:.2f} s")


@pytest.mark.parametrize(
    ("server", "overrides"),
    [("uvicorn", {"workers": 1}), ("gunicorn", {"preload": True})],
)
def test_no_reload_where_hup_keeps_old_code(server, overrides, boot):
    # A lone uvicorn process dies on SIGHUP and gunicorn --preload forks workers from the
    # old code: systemd itself must say such a unit cannot reload, so a deploy restarts.
    spec = demo_spec(server, **overrides)
    assert not spec.reloadable
    unit = f"{spec.name}.service"
    box = boot(f"noreload-{server}")
    box.install_units(render_units(spec))
    assert box.show(unit, "CanReload") == {"CanReload": "no"}
    box.systemctl("start", unit)
    box.wait_http(url("/health"), timeout=60)
    pid = box.main_pid(unit)
    # The running service refuses the reload outright instead of pretending to load code.
    assert box.run("systemctl", "reload", unit, check=False).returncode != 0
    assert box.main_pid(unit) == pid


def _restarts_under_load(box, unit: str, seconds: float = 8.0) -> dict[str, Any]:
    """Bounded load from inside (4 clients x 25 req/s, loopback) with two restarts in it."""
    load = box.popen(
        "/usr/bin/python3",
        "/srv/harness/inside.py",
        "load",
        url("/health"),
        "--seconds",
        str(seconds),
        "--clients",
        "4",
        "--rate",
        "25",
    )
    try:
        assert load.stdout is not None
        assert load.stdout.readline().strip() == "started"
        time.sleep(1.0)
        box.systemctl("restart", unit)
        time.sleep(2.0)
        box.systemctl("restart", unit)
        out, _ = load.communicate(timeout=seconds + 60)
    finally:
        if load.poll() is None:
            load.kill()
            load.wait()
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("server", SERVERS)
def test_socket_activation_drops_nothing_across_restarts(server, boot, measure):
    with_socket = demo_spec(server, name=f"sock-{server}", socket=True)
    without = demo_spec(server, name=f"bind-{server}")
    box = boot(f"socket-{server}")

    box.install_units(render_units(with_socket))
    box.systemctl("start", f"sock-{server}.socket", f"sock-{server}.service")
    box.wait_http(url("/health"), timeout=60)
    held = _restarts_under_load(box, f"sock-{server}.service")
    box.systemctl("stop", f"sock-{server}.service", f"sock-{server}.socket")

    box.install_units(render_units(without))
    box.systemctl("start", f"bind-{server}.service")
    box.wait_http(url("/health"), timeout=60)
    bound = _restarts_under_load(box, f"bind-{server}.service")

    measure(
        f"{server}: two restarts under load: with the .socket unit {held['failed']} failed "
        f"of {int(held['ok']) + int(held['failed'])}; binding the port itself "
        f"{bound['failed']} failed of {int(bound['ok']) + int(bound['failed'])} {bound['errors']}"
    )
    # uvicorn closes a connection it has accepted but not yet read a request from when it
    # shuts down (its HTTP protocol's shutdown(): no request cycle yet, so close), and the
    # client's request meets a reset: a race inside uvicorn, seen once in ~700 requests
    # in one of several CI runs. The socket unit still removes every refused connection.
    allowed = 2 if server == "uvicorn" else 0
    assert int(held["failed"]) <= allowed, held
    assert int(held["ok"]) > 100, held
    # The control: the same app without the socket unit does drop requests, so a
    # harness that could not see failures would fail here.
    assert int(bound["failed"]) > 0, bound
    assert int(held["failed"]) * 10 < int(bound["failed"]), (held, bound)
