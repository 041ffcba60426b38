"""Real apps no one here wrote, through `opskit systemd --install` and `opskit doctor`.

Each app of the corpus (tests/real_systemd/corpus.py) under each of its servers: --install
proves it serves; a wrong app path exits 1 naming the import error before anything is
installed; doctor names a Django crash loop and reports nothing on the healthy unit.
"""

from __future__ import annotations

import json
import re

import pytest

from tests.real_systemd import corpus

pytestmark = [pytest.mark.systemd, pytest.mark.timeout(600)]

CASES = [
    (app, server)
    for app in (corpus.HTTPBIN, corpus.DJANGO, corpus.FASTAPI)
    for server in app.servers
]


def install(box, app, server, *extra: str):
    return corpus.opskit(
        box, "systemd", "site", *app.cli_args(server), *extra, "--install", "--enable", timeout=300
    )


def prepare(box, app) -> None:
    if app is corpus.DJANGO:
        corpus.startproject(box)


@pytest.mark.parametrize(("app", "server"), CASES, ids=[f"{a.key}-{s}" for a, s in CASES])
def test_install_proves_each_real_app_serves(corpus_boot, measure, app, server):
    box = corpus_boot(f"inst-{app.key}-{server}")
    prepare(box, app)
    done = install(box, app, server)
    assert done.returncode == 0, done.stderr
    serving = [line for line in done.stderr.splitlines() if line.startswith("serving")]
    # No health path: any answer below 500 from / counts (Django with no root route: 404).
    assert len(serving) == 1, done.stderr
    assert re.fullmatch(
        r"serving    site\.service: 5 answers in a row \(GET /: [1-4]\d\d\)", serving[0]
    )
    measure(f"corpus --install: {app.key} under {server}: {serving[0].split(': ', 1)[1]}")
    corpus.wait_serving(box, app, timeout=30)


@pytest.mark.parametrize(
    ("app", "server", "wrong", "named"),
    [
        (corpus.HTTPBIN, "uwsgi", "httpbinn:app", "No module named 'httpbinn'"),
        (corpus.DJANGO, "uwsgi", "mysite.wsgi:app", "has no attribute 'app'"),
        (corpus.FASTAPI, "uvicorn", "main:api", "has no attribute 'api'"),
    ],
    ids=["httpbin", "django", "fastapi"],
)
def test_a_wrong_app_path_exits_1_naming_the_import_error(corpus_boot, app, server, wrong, named):
    box = corpus_boot(f"wrong-{app.key}")
    prepare(box, app)
    args = [*app.cli_args(server)]
    args[args.index("--app") + 1] = wrong
    done = corpus.opskit(box, "systemd", "site", *args, "--install", "--enable", timeout=300)
    assert done.returncode == 1, done.stderr
    assert named in done.stderr
    assert "nothing installed" in done.stderr
    assert box.run("test", "-e", "/etc/systemd/system/site.service", check=False).returncode != 0


def test_doctor_names_a_django_crash_loop_and_nothing_on_the_healthy_unit(corpus_boot):
    box = corpus_boot("doctor-django")
    corpus.startproject(box)
    app, server = corpus.DJANGO, "gunicorn"
    assert install(box, app, server).returncode == 0

    def doctor() -> tuple[int, list[dict]]:
        done = corpus.opskit(
            box, "doctor", "site", *app.cli_args(server), "--project", app.directory, "--json"
        )
        assert "Traceback" not in done.stderr, done.stderr
        return done.returncode, json.loads(done.stdout)["findings"]

    code, findings = doctor()
    assert [f for f in findings if f["severity"] == "error"] == [], findings
    assert code == 0

    # A settings module that no longer imports: every gunicorn worker fails to boot, the
    # master exits, systemd restarts it, and so on.
    settings = f"{app.directory}/mysite/settings.py"
    box.write_file(settings, box.read_file(settings) + "\nimport no_such_settings_helper\n")
    box.systemctl("restart", "site.service", check=False)
    box.wait_for(
        "a restart loop",
        lambda: box.show("site.service", "NRestarts")["NRestarts"] not in ("", "0"),
        timeout=60,
    )
    code, findings = doctor()
    assert code == 1
    by_check = {f["check"]: f for f in findings if f["severity"] == "error"}
    live = by_check["live-unit"]
    assert "site.service" in live["problem"]
    assert "no_such_settings_helper" in live["evidence"], live
    # The import check names the same cause, as the service would meet it.
    assert "No module named 'no_such_settings_helper'" in by_check["app"]["evidence"]
