"""Real apps' logging in the journal: Django's own handlers, structlog and loguru.

Each record must be one journal entry with the PRIORITY of its level. The baseline of the
same run is the server's config alone (Django: settings without opskit's LOGGING; structlog
and loguru: the config without its Route filter), measured and reported beside it.
"""

from __future__ import annotations

import json
import uuid

import pytest

from tests.real_systemd import corpus

pytestmark = [pytest.mark.systemd, pytest.mark.timeout(600)]


def _entries(box, unit: str, needle: str) -> list[dict]:
    return [
        e
        for e in box.journal_json(unit)
        if isinstance(e.get("MESSAGE"), str) and needle in e["MESSAGE"]
    ]


def _logged(box, unit: str, path: str, needles: list[str]) -> dict[str, list[dict]]:
    """GET ``path``, then a second request; the entries holding each needle, once every
    needle and the second request's line are in the journal.

    The second request's line comes after every line of the first on the unit's stderr
    (its workers share it, and a request's lines are written before its answer); a line
    on stdout is another stream, whose order against stderr journald does not keep, so
    each needle is also waited for.
    """
    box.http_get(corpus.url(path))
    flush = f"/flush-{uuid.uuid4().hex[:8]}"
    box.http_get(corpus.url(flush))

    def arrived() -> bool:
        return all(_entries(box, unit, n) for n in [flush, *needles])

    box.wait_for(f"{path}'s lines in the journal", arrived, timeout=30)
    return {n: _entries(box, unit, n) for n in needles}


# --- Django ------------------------------------------------------------------------------


def test_each_django_warning_is_one_entry_at_priority_4(corpus_boot, measure):
    box = corpus_boot("log-django")
    corpus.startproject(box)
    site = corpus.DJANGO.directory
    settings_path = f"{site}/mysite/settings.py"
    # DEBUG on, as on a staging host: Django's default console handler is then active.
    settings = box.read_file(settings_path).replace("DEBUG = False", "DEBUG = True")
    box.write_file(settings_path, settings)
    conf = f"{site}/deploy/logging"
    log_config = ("--set", f"log-config={conf}/logging.json")

    def served(server: str, tag: str) -> list[dict]:
        # The config's files depend on the server (uWSGI's loader module): written per server.
        args = (*corpus.DJANGO.cli_args(server), *log_config)
        done = corpus.opskit(box, "logging", "init", "site", *args, "-o", conf, "--force", cwd=site)
        assert done.returncode == 0, done.stderr
        assert "django     mysite.settings (manage.py): add 'from django_logging import" in (
            done.stderr
        )
        done = corpus.opskit(
            box, "systemd", "site", *args, "--install", "--enable", "--force", cwd=site,
            timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "has no opskit_logsetup.py" not in done.stderr, done.stderr
        needle = f"Not Found: /nope-{tag}"
        try:
            return _logged(box, "site.service", f"/nope-{tag}", [needle])[needle]
        finally:
            box.systemctl("stop", "site.service")

    servers = list(corpus.DJANGO.servers)
    before = {s: served(s, f"{s}-before") for s in servers}
    box.write_file(settings_path, settings + "\nfrom django_logging import LOGGING  # noqa: E402\n")
    after = {s: served(s, f"{s}-after") for s in servers}
    for server in servers:
        old = sorted(e["PRIORITY"] for e in before[server])
        new = sorted(e["PRIORITY"] for e in after[server])
        measure(
            f"django logging under {server}: a django.request warning was {len(old)} entries "
            f"(PRIORITY {', '.join(old)}) with the server's config alone, {len(new)} "
            f"(PRIORITY {', '.join(new)}) with opskit's LOGGING"
        )
        # The baseline shows the defect: Django's console handler writes it a second time.
        assert len(old) == 2 and "6" in old, (server, before[server])
        assert new == ["4"], (server, after[server])
        assert not after[server][0]["MESSAGE"].startswith("<")


# --- structlog and loguru ------------------------------------------------------------------

LIBS_APP = '''\
"""An app that logs through structlog (its WSGI side) and loguru (its ASGI side)."""

import structlog
from loguru import logger

log = structlog.get_logger("libsapp")


def app(environ, start_response):
    token = environ["PATH_INFO"].rsplit("/", 1)[-1]
    log.info("structlog-info token=" + token, path=environ["PATH_INFO"])
    log.warning("structlog-warning token=" + token)
    log.error("structlog-error token=" + token)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


async def asgi(scope, receive, send):
    if scope["type"] != "http":
        return
    token = scope["path"].rsplit("/", 1)[-1]
    logger.info("loguru-info token={}", token)
    logger.warning("loguru-warning token={}", token)
    logger.error("loguru-error token={}", token)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})
'''

PRIORITY = {"info": "6", "warning": "4", "error": "3"}


@pytest.mark.parametrize(
    ("library", "server", "app"),
    [("structlog", "gunicorn", "libsapp:app"), ("loguru", "uvicorn", "libsapp:asgi")],
)
def test_structlog_and_loguru_records_are_one_entry_each(
    corpus_boot, corpus_dir, measure, library, server, app
):
    project = corpus_dir / "libs"
    corpus._write(project / "pyproject.toml", corpus._pyproject("libs", ("structlog", "loguru")))
    corpus._write(project / "libsapp.py", LIBS_APP)
    box = corpus_boot(f"log-{library}")
    directory = f"{corpus.PROJECTS}/libs"
    conf = f"{directory}/deploy/logging"
    flags = (
        *("--server", server, "--app", app, "--workdir", directory, "--venv", corpus.CORPUS_VENV),
        *("--port", str(corpus.PORT), "--workers", "2", "--graceful-timeout", "5"),
        *("--set", f"log-config={conf}/logging.json"),
    )
    done = corpus.opskit(box, "logging", "init", "libs", *flags, "-o", conf, cwd=directory)
    assert done.returncode == 0, done.stderr
    assert f"route      {library}:" in done.stderr
    routed = box.read_file(f"{conf}/logging.json")
    config = json.loads(routed)
    assert config["filters"]["route"]["libraries"] == ["structlog", "loguru"]
    del config["filters"]
    unrouted = json.dumps(config)

    def served(text: str, tag: str) -> dict[str, list[dict]]:
        box.write_file(f"{conf}/logging.json", text)
        done = corpus.opskit(
            box, "systemd", "libs", *flags, "--install", "--enable", "--force", timeout=300
        )
        assert done.returncode == 0, done.stderr
        needles = {level: f"{library}-{level} token={tag}" for level in PRIORITY}
        try:
            found = _logged(box, "libs.service", f"/emit/{tag}", list(needles.values()))
            return {level: found[needle] for level, needle in needles.items()}
        finally:
            box.systemctl("stop", "libs.service")

    before = served(unrouted, "before")
    after = served(routed, "after")
    for level, priority in PRIORITY.items():
        old = [e["PRIORITY"] for e in before[level]]
        new = [e["PRIORITY"] for e in after[level]]
        measure(
            f"{library} under {server}: a {level} record was {len(old)} entries "
            f"(PRIORITY {', '.join(old)}) unrouted, {len(new)} (PRIORITY {', '.join(new)}) routed"
        )
        # Unrouted, the library writes by itself: one unprefixed line, filed as info.
        assert old == ["6"], (level, before[level])
        assert new == [priority], (level, after[level])
