"""`opskit init` on real projects no one here wrote, then `--install` from what it wrote.

The corpus's projects (tests/real_systemd/corpus.py): httpbin, a project that only
declares the published package; a `django-admin startproject` site, which has no
pyproject.toml; a FastAPI app; and a Flask app whose object is not called ``app``. init
runs inside the container with the corpus venv active ($VIRTUAL_ENV), as a user would
after ``source .venv/bin/activate``; what it writes must serve as it is.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import tomllib

from tests.real_systemd import corpus

pytestmark = [pytest.mark.systemd, pytest.mark.timeout(600)]

NAMED_WEB = '''\
"""A Flask app whose object has its own name, with a health route."""

from flask import Flask

site = Flask(__name__)


@site.get("/")
def index():
    return {"service": "named"}


@site.get("/healthz")
def health():
    return "ok"
'''

#: project directory -> (config file, name, app, server, health path).
EXPECTED = {
    corpus.HTTPBIN.directory: ("pyproject.toml", "httpbin", "httpbin:app", "gunicorn", None),
    corpus.DJANGO.directory: ("opskit.toml", "mysite", "mysite.wsgi:application", "gunicorn", None),
    corpus.FASTAPI.directory: ("pyproject.toml", "shop", "main:app", "uvicorn", None),
    f"{corpus.PROJECTS}/named": (
        "pyproject.toml",
        "named",
        "named.web:site",
        "gunicorn",
        "/healthz",
    ),
}


def _table(box, directory: str, config: str) -> dict:
    data = tomllib.loads(box.read_file(f"{directory}/{config}"))
    return data["tool"]["opskit"] if config == "pyproject.toml" else data


def test_init_detects_each_real_app_and_its_spec_serves(corpus_boot, corpus_dir: Path, measure):
    named = corpus_dir / "named"
    corpus._write(named / "pyproject.toml", corpus._pyproject("named", ("flask==3.1.3",)))
    corpus._write(named / "named" / "__init__.py", "")
    corpus._write(named / "named" / "web.py", NAMED_WEB)
    box = corpus_boot("init-corpus")
    corpus.startproject(box)
    active = {"VIRTUAL_ENV": corpus.CORPUS_VENV}
    routes = {
        corpus.HTTPBIN.directory: corpus.HTTPBIN.route,
        corpus.DJANGO.directory: corpus.DJANGO.route,
        corpus.FASTAPI.directory: corpus.FASTAPI.route,
        f"{corpus.PROJECTS}/named": "/healthz",
    }
    for directory, (config, name, app, server, health) in EXPECTED.items():
        done = corpus.opskit(box, "init", cwd=directory, env=active)
        assert done.returncode == 0, done.stderr
        table = _table(box, directory, config)
        assert (table["name"], table["app"], table["server"]) == (name, app, server), done.stderr
        assert table["venv"] == corpus.CORPUS_VENV
        assert table["working-directory"] == directory
        # No route invented: only the app that has one gets a health path.
        assert table.get("health-path") == health
        assert "version-path" not in table
        assert f"found      app = {app}" in done.stderr
        # What init wrote is the whole spec: --install from it proves the app serves.
        done = corpus.opskit(box, "systemd", "--install", "--enable", cwd=directory, timeout=300)
        assert done.returncode == 0, done.stderr
        serving = [line for line in done.stderr.splitlines() if line.startswith("serving")]
        assert len(serving) == 1, done.stderr
        measure(f"init: {name} detected as {app} under {server}; {serving[0].split(': ', 1)[1]}")
        box.wait_http(corpus.url(routes[directory]), timeout=30)
        box.systemctl("disable", "--now", f"{name}.service")
