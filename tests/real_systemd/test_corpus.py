"""The real-app corpus served under a real systemd with the units opskit generates today.

A baseline for the corpus infrastructure (tests/real_systemd/corpus.py): each app, in a
project of the test's own, from the corpus venv, with render_units' service unit
installed and started, answers a real request on a real route.
"""

from __future__ import annotations

import time

import pytest

from opskit.systemd.units import render_units
from tests.real_systemd import corpus

pytestmark = [pytest.mark.systemd, pytest.mark.timeout(600)]


def _serve(box, spec, app, measure=None) -> float:
    """Install and start the spec's units; wait for the app's real route; the seconds."""
    box.install_units(render_units(spec))
    started = time.monotonic()
    box.systemctl("start", f"{spec.name}.service")
    try:
        corpus.wait_serving(box, app)
    except Exception:
        print(box.journal(f"{spec.name}.service", lines=60))
        raise
    seconds = time.monotonic() - started
    if measure is not None:
        measure(f"corpus: {spec.name}: systemctl start to 200 on {app.route} in {seconds:.2f} s")
    assert box.show(f"{spec.name}.service", "ActiveState")["ActiveState"] == "active"
    return seconds


@pytest.mark.parametrize("server", corpus.HTTPBIN.servers)
def test_httpbin_serves(corpus_boot, measure, server):
    box = corpus_boot(f"httpbin-{server}")
    spec = corpus.HTTPBIN.spec(server)
    _serve(box, spec, corpus.HTTPBIN, measure)
    status, body = corpus.http_json(box, corpus.HTTPBIN.url())
    assert status == 200
    assert body["url"] == "http://127.0.0.1:8000/get"
    assert body["headers"]["Host"] == "127.0.0.1:8000"
    # Another route of the published app, and its own 404.
    assert corpus.http_json(box, corpus.HTTPBIN.url("/status/418"))[0] == 418
    assert corpus.http_json(box, corpus.HTTPBIN.url("/no-such-route"))[0] == 404


@pytest.mark.parametrize("server", corpus.DJANGO.servers)
def test_django_startproject_serves(corpus_boot, measure, server):
    box = corpus_boot(f"django-{server}")
    corpus.startproject(box)
    # What startproject made, inside the container, with the corpus venv's Django.
    assert box.run("test", "-f", f"{corpus.DJANGO.directory}/manage.py").returncode == 0
    spec = corpus.DJANGO.spec(server)
    _serve(box, spec, corpus.DJANGO, measure)
    status, body = corpus.http_json(box, corpus.DJANGO.url())
    assert status == 200
    assert body["hello"] == "from mysite"
    assert body["django"].startswith("5.2")
    # DEBUG is off: Django's own 404 (no debug page), and a Host outside ALLOWED_HOSTS
    # is refused with 400.
    status, page = corpus.http_json(box, corpus.DJANGO.url("/missing/"))
    assert status == 404
    assert "Using the URLconf" not in str(page)
    proc = box.python(
        "-c",
        "import http.client as h; c = h.HTTPConnection('127.0.0.1', 8000, timeout=10); "
        "c.request('GET', '/hello/', headers={'Host': 'evil.example'}); "
        "print(c.getresponse().status)",
    )
    assert proc.stdout.strip() == "400"


def test_fastapi_serves(corpus_boot, measure):
    box = corpus_boot("fastapi")
    spec = corpus.FASTAPI.spec("uvicorn")
    _serve(box, spec, corpus.FASTAPI, measure)
    assert corpus.http_json(box, corpus.FASTAPI.url()) == (200, {"item_id": 42, "name": "answer"})
    assert corpus.http_json(box, corpus.FASTAPI.url("/items/7"))[0] == 404
    created = corpus.http_json(box, corpus.FASTAPI.url("/items"), {"name": "pear", "price": 2.5})
    assert created == (200, {"created": "pear", "price": 2.5})
    # pydantic-core validates: a price that is not a number is a 422.
    assert (
        corpus.http_json(box, corpus.FASTAPI.url("/items"), {"name": "x", "price": "?"})[0] == 422
    )
    status, openapi = corpus.http_json(box, corpus.FASTAPI.url("/openapi.json"))
    assert status == 200
    assert set(openapi["paths"]) == {"/", "/items/{item_id}", "/items"}


@pytest.mark.parametrize("via", ["tcp", "unix"])
def test_dbapp_queries_postgres(corpus_boot, measure, via):
    box = corpus_boot(f"dbapp-{via}")
    started = time.monotonic()
    db = corpus.start_postgres(box)
    ready = time.monotonic() - started
    measure(f"corpus: PostgreSQL unit (initdb, role, database) ready in {ready:.2f} s")
    assert db.psql(box, "SELECT current_user") == "postgres"
    database_url = db.tcp_url if via == "tcp" else db.unix_url
    # Today's default profile: served on 127.0.0.1, so IPAddressAllow=localhost with
    # IPAddressDeny=any, which lets a database on 127.0.0.1 through.
    spec = corpus.DBAPP.spec("gunicorn", name="dbapp", environment={"DATABASE_URL": database_url})
    unit = render_units(spec)[0].content
    assert "IPAddressAllow=localhost" in unit
    assert "IPAddressDeny=any" in unit
    _serve(box, spec, corpus.DBAPP, measure)
    status, body = corpus.http_json(box, corpus.DBAPP.url())
    assert status == 200
    assert body["result"] == 1
    assert body["server_version"].startswith("15.")
    # A table of its own: each visit writes a row.
    assert corpus.http_json(box, corpus.DBAPP.url("/visits")) == (200, {"visits": 1})
    assert corpus.http_json(box, corpus.DBAPP.url("/visits")) == (200, {"visits": 2})
    assert db.psql(box, "SELECT count(*) FROM visits") == "2"
    # The server saw the app connect the way its URL says.
    log = box.run("journalctl", "--no-pager", "-u", db.unit, "-o", "cat").stdout
    assert ("host=127.0.0.1" if via == "tcp" else "host=[local]") in log
    # With the database gone, the route answers 500 and says why.
    box.systemctl("stop", db.unit)
    status, body = corpus.http_json(box, corpus.DBAPP.url())
    assert status == 500
    assert "OperationalError" in body["error"]
    assert "database query failed" in box.journal("dbapp.service")


def test_opskit_cli_installs_a_corpus_app_inside(corpus_boot):
    # The CLI path a test of `--install` takes: opskit run inside, from TOOL_VENV.
    box = corpus_boot("corpus-cli")
    proc = corpus.opskit(
        box,
        "systemd",
        "httpbin",
        *corpus.HTTPBIN.cli_args("uwsgi"),
        "--install",
        "--enable",
        cwd=corpus.HTTPBIN.directory,
    )
    assert proc.returncode == 0, proc.stderr
    assert "/etc/systemd/system/httpbin.service" in proc.stderr
    corpus.wait_serving(box, corpus.HTTPBIN)
    assert box.systemctl("is-enabled", "httpbin.service").strip() == "enabled"
    status, body = corpus.http_json(box, corpus.HTTPBIN.url())
    assert (status, body["url"]) == (200, "http://127.0.0.1:8000/get")
    assert "--module httpbin:app" in box.read_file("/etc/systemd/system/httpbin.service")
