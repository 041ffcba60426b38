"""The reload script's canary on a real systemd: a broken release never serves.

New code that does not import, and new code that imports but whose every request raises,
are both refused under a bounded load: the canary (a transient unit with the service's
properties, one worker on a private unix socket) serves the new code first, so the real
service is never signalled. A good release still reloads. The canary leaves no unit, no
runtime directory and no process behind, also when the script is interrupted.

Every worker answers before the code changes, and none is recycled during a test: a
worker that starts after the code is replaced in place imports the new files
(docs/reload.md), which is what releases (not in-place edits) are for.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from opskit.reload.render import render_reload
from opskit.systemd.units import render_units
from tests.real_systemd import corpus
from tests.real_systemd.demo import demo_spec, set_version, url
from tests.real_systemd.test_reload_script import SCRIPT, _install, wait_for_workers

pytestmark = [pytest.mark.systemd, pytest.mark.timeout(600)]

BROKEN_AT_IMPORT = '\nraise RuntimeError("a broken deploy")\n'
#: Imports fine; every request raises (the server answers 500).
BROKEN_LAZILY = """

def _respond(path):
    raise RuntimeError("a handler that raises")
"""
#: Imports slowly: the canary is still starting when the script is interrupted.
SLOW_IMPORT = "\nimport time as _time\n\n_time.sleep(60)\n"


def _under_load(box, run, seconds: float = 6.0) -> tuple[Any, dict[str, Any]]:
    """``run()`` during a bounded load on /version (4 clients x 25 req/s, loopback)."""
    load = box.popen(
        "/usr/bin/python3", "/srv/harness/inside.py", "load", url("/version"),
        "--seconds", str(seconds), "--clients", "4", "--rate", "25",
    )  # fmt: skip
    try:
        assert load.stdout is not None
        assert load.stdout.readline().strip() == "started"
        time.sleep(0.5)
        result = run()
        out, _ = load.communicate(timeout=seconds + 60)
    finally:
        if load.poll() is None:
            load.kill()
            load.wait()
    return result, json.loads(out.strip().splitlines()[-1])


def _no_canary_left(box, name: str = "demo") -> None:
    units = box.run(
        "systemctl", "list-units", "--all", "--plain", "--no-legend", f"{name}-canary-*"
    )
    assert units.stdout.strip() == "", units.stdout
    left = box.run("sh", "-c", f"ls -d /run/{name}-canary-* 2>/dev/null", check=False)
    assert left.stdout == "", left.stdout


@pytest.mark.parametrize("server", ["gunicorn", "uvicorn", "uwsgi"])
def test_broken_releases_are_refused_under_load_and_a_good_one_reloads(
    server, boot, demo_dir: Path, measure
):
    spec = demo_spec(server, name="demo")
    box = boot(f"canary-{server}")
    unit = _install(box, spec)
    warm = wait_for_workers(box, spec.workers)
    main = box.main_pid(unit)
    source = demo_dir / "demoapp.py"
    good = source.read_text()
    for kind, breakage in (("import", BROKEN_AT_IMPORT), ("lazy", BROKEN_LAZILY)):
        set_version(demo_dir, "2")
        source.write_text(good + breakage)
        proc, load = _under_load(box, lambda: box.run(SCRIPT, "2", check=False, timeout=180))
        measure(
            f"canary, {server}, broken {kind}: exit {proc.returncode}, "
            f"{load['failed']} of {load['ok'] + load['failed']} requests failed"
        )
        assert proc.returncode == 1, proc.stderr
        assert "FAILED: canary: " in proc.stderr, proc.stderr
        assert "nothing reloaded, the old code keeps serving" in proc.stderr
        assert "canary| " in proc.stderr  # its own log lines
        assert load["failed"] == 0, load
        assert box.http_get(url("/version")).body.strip() == "1"
        assert box.main_pid(unit) == main
        assert wait_for_workers(box, spec.workers) == warm, "a worker was replaced"
        _no_canary_left(box)
        source.write_text(good)
        set_version(demo_dir, "1")

    set_version(demo_dir, "3")
    proc, load = _under_load(box, lambda: box.run(SCRIPT, "3", check=False, timeout=180))
    measure(
        f"canary, {server}, good release: exit {proc.returncode}, "
        f"{load['failed']} of {load['ok'] + load['failed']} requests failed"
    )
    assert proc.returncode == 0, proc.stderr
    assert "canary: /health answered 200, version 3; stopped" in proc.stderr
    assert "ok: version 1 -> 3" in proc.stderr
    if server == "gunicorn":
        # uWSGI's and uvicorn's keep-alive resets across a reload are another matter.
        assert load["failed"] == 0, load
    _no_canary_left(box)


def test_an_interrupted_script_leaves_no_canary(boot, demo_dir: Path):
    spec = demo_spec("gunicorn", name="demo")
    box = boot("canary-interrupted")
    unit = _install(box, spec)
    wait_for_workers(box, spec.workers)
    main = box.main_pid(unit)
    set_version(demo_dir, "2")
    (demo_dir / "demoapp.py").write_text((demo_dir / "demoapp.py").read_text() + SLOW_IMPORT)
    # SIGINT after 3 s, as Ctrl-C would: the canary is still importing.
    proc = box.run(
        "timeout", "--preserve-status", "-s", "INT", "3", SCRIPT, "2", check=False, timeout=120
    )
    assert proc.returncode == 130, proc.stderr
    assert "canary: a throwaway gunicorn" in proc.stderr
    _no_canary_left(box)
    # No canary process either: only the service's own processes run the app.
    procs = box.run("pgrep", "-af", "canary[.]sock", check=False).stdout
    assert procs.strip() == "", procs
    assert box.main_pid(unit) == main
    assert box.http_get(url("/version")).body.strip() == "1"


DJANGO_BROKEN_VIEW = """
def hello(request)
    return None
"""


def test_a_django_view_with_a_syntax_error_is_refused(corpus_boot):
    box = corpus_boot("canary-django")
    corpus.startproject(box)
    # One worker, warmed by the first request: Django imports the views on a worker's first
    # request, so a second, cold worker would import the broken file in place (the very
    # reason for releases), whatever the script does.
    spec = corpus.DJANGO.spec("gunicorn", name="site", workers=1)
    box.install_units(render_units(spec))
    script = render_reload(spec)[0]
    box.write_file("/opt/reload/reload-site.sh", script.content, mode=script.mode)
    box.systemctl("start", "site.service")
    corpus.wait_serving(box, corpus.DJANGO, timeout=60)
    main = box.main_pid("site.service")
    views = f"{corpus.DJANGO.directory}/mysite/views.py"
    good = box.read_file(views)
    # Importing mysite.wsgi does not import the views: only a request (or the checks) does.
    box.write_file(views, good + DJANGO_BROKEN_VIEW)
    proc = box.run("/opt/reload/reload-site.sh", check=False, timeout=180)
    assert proc.returncode == 1, proc.stderr
    assert "FAILED: preflight: manage.py check failed" in proc.stderr
    assert "SyntaxError" in proc.stderr
    assert box.main_pid("site.service") == main
    status, _ = corpus.http_json(box, corpus.DJANGO.url())
    assert status == 200
    _no_canary_left(box, "site")
