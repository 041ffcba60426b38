"""The real-app corpus: published apps and frameworks, each in a small project of the test's own.

Apps no one here wrote, served under a real systemd from the corpus venv (CORPUS_VENV:
gunicorn, uvicorn, uWSGI and the pins of corpus.txt, built once from the wheelhouse,
offline). Each app lives in a project directory under PROJECTS, which the ``corpus_boot``
fixture binds writable into the container (a test may break or change a project)::

    box = corpus_boot("httpbin")
    spec = corpus.HTTPBIN.spec("gunicorn")                   # an AppSpec, like demo_spec
    box.install_units(render_units(spec))
    box.systemctl("start", f"{spec.name}.service")
    corpus.wait_serving(box, corpus.HTTPBIN)                 # its real route answers 200

- HTTPBIN: the published httpbin package's Flask app (``httpbin:app``), from an
  otherwise empty project that only declares the dependency;
- DJANGO: ``django-admin startproject mysite``, run inside the container by
  ``startproject(box)``, then ALLOWED_HOSTS for 127.0.0.1, DEBUG off and one view;
- FASTAPI: a FastAPI app with a few routes (``main:app``);
- DBAPP: a Flask app that queries PostgreSQL at DATABASE_URL; ``start_postgres(box)``
  runs Debian's PostgreSQL 15 inside the container as a unit of its own and returns the
  URLs (TCP on 127.0.0.1, and its unix socket in /run/postgresql).

``opskit(box, *args)`` runs this checkout's opskit inside the container (TOOL_VENV), and
``App.cli_args(server)`` gives the flags that describe the app to it.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opskit.spec import AppSpec, build_spec
from tests.real_systemd.nspawn import CORPUS_VENV, TOOL_VENV, Container, HarnessError

#: The pins the corpus venv is built from (wheelhouse.sh downloads them).
REQUIREMENTS = Path(__file__).resolve().with_name("corpus.txt")
#: Where the test's project directories are bound (writable) inside the container.
PROJECTS = "/srv/corpus"
#: The container has a private network: a fixed port cannot collide with anything.
PORT = 8000
#: This checkout's opskit, installed in the container's TOOL_VENV.
OPSKIT = f"{TOOL_VENV}/bin/opskit"


@dataclass(frozen=True)
class App:
    """One app of the corpus: where its project lives inside, how each server imports it."""

    key: str
    #: The project directory inside the container (the unit's working directory).
    directory: str
    #: server -> the import path that server is given (``--app``), first the default one.
    targets: dict[str, str]
    #: A real route of the app that answers 200, and a piece of its answer.
    route: str
    expect: str
    #: What the project declares it depends on (its pyproject.toml), None for Django's.
    dependencies: tuple[str, ...] | None = None

    @property
    def servers(self) -> tuple[str, ...]:
        return tuple(self.targets)

    def spec(self, server: str | None = None, name: str | None = None, **overrides: Any) -> AppSpec:
        """An AppSpec for this app under ``server``, served from the corpus venv.

        ``overrides`` are build_spec keys (``environment={"DATABASE_URL": ...}``,
        ``hardening={"profile": "relaxed"}``, ``socket=True`` ...).
        """
        server = server or self.servers[0]
        raw: dict[str, Any] = {
            "name": name or f"{self.key}-{server}",
            "server": server,
            "app": self.targets[server],
            "port": PORT,
            "workers": 2,
            "working_directory": self.directory,
            "venv": CORPUS_VENV,
            # Short drains keep stop and restart quick; nothing here is long-running.
            "graceful_timeout": 5,
        }
        raw.update(overrides)
        return build_spec(raw)

    def cli_args(self, server: str | None = None) -> tuple[str, ...]:
        """The opskit flags that describe this app under ``server`` (what ``spec`` builds)."""
        server = server or self.servers[0]
        return (
            *("--server", server, "--app", self.targets[server]),
            *("--workdir", self.directory, "--venv", CORPUS_VENV),
            *("--port", str(PORT), "--workers", "2", "--graceful-timeout", "5"),
        )

    def url(self, path: str | None = None) -> str:
        """The URL of ``path`` (default: the app's real route) from inside the container."""
        return url(self.route if path is None else path)


HTTPBIN = App(
    "httpbin",
    f"{PROJECTS}/httpbin",
    {"gunicorn": "httpbin:app", "uwsgi": "httpbin:app"},
    "/get",
    '"url": "http://127.0.0.1:8000/get"',
    dependencies=("httpbin==0.10.4",),
)
DJANGO = App(
    "django",
    f"{PROJECTS}/mysite",
    {
        "gunicorn": "mysite.wsgi:application",
        "uwsgi": "mysite.wsgi:application",
        "uvicorn": "mysite.asgi:application",
    },
    "/hello/",
    '"hello": "from mysite"',
)
FASTAPI = App(
    "fastapi",
    f"{PROJECTS}/shop",
    {"uvicorn": "main:app"},
    "/items/42",
    '"name":"answer"',
    dependencies=("fastapi==0.165.0",),
)
DBAPP = App(
    "dbapp",
    f"{PROJECTS}/dbapp",
    {"gunicorn": "dbapp:app", "uwsgi": "dbapp:app"},
    "/db",
    '"result":1',
    dependencies=("flask==3.1.3", "psycopg[binary]==3.3.9"),
)
APPS = {app.key: app for app in (HTTPBIN, DJANGO, FASTAPI, DBAPP)}


def url(path: str = "/", port: int = PORT) -> str:
    """A URL on the container's loopback."""
    return f"http://127.0.0.1:{port}{path}"


# --- the projects --------------------------------------------------------------------------

FASTAPI_MAIN = '''\
"""A small FastAPI service: a few routes, as an ordinary app has them."""

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

app = FastAPI(title="shop")
ITEMS = {1: "apple", 42: "answer"}


class Item(BaseModel):
    name: str
    price: float = 0.0


@app.get("/")
def index() -> dict:
    return {"service": "shop", "items": len(ITEMS)}


@app.get("/items/{item_id}")
def read_item(item_id: int) -> dict:
    if item_id not in ITEMS:
        raise HTTPException(status_code=404, detail="no such item")
    return {"item_id": item_id, "name": ITEMS[item_id]}


@app.post("/items")
def create_item(item: Item) -> dict:
    return {"created": item.name, "price": item.price}
'''

DBAPP_MODULE = '''\
"""A Flask app that queries PostgreSQL; DATABASE_URL names the database (libpq's URL)."""

import os

import psycopg
from flask import Flask, jsonify

app = Flask(__name__)
#: Seconds psycopg waits for the server to accept before it gives up.
CONNECT_TIMEOUT = int(os.environ.get("DB_CONNECT_TIMEOUT", "5"))


def connect():
    return psycopg.connect(os.environ["DATABASE_URL"], connect_timeout=CONNECT_TIMEOUT)


@app.get("/")
def index():
    return jsonify(service="dbapp")


@app.get("/db")
def db():
    try:
        with connect() as conn:
            value = conn.execute("SELECT 1").fetchone()[0]
            version = conn.execute("SHOW server_version").fetchone()[0]
    except (KeyError, psycopg.Error) as exc:
        app.logger.error("database query failed: %s: %s", type(exc).__name__, exc)
        return jsonify(error=f"{type(exc).__name__}: {exc}"), 500
    return jsonify(result=value, server_version=version)


@app.get("/visits")
def visits():
    try:
        with connect() as conn:
            conn.execute("INSERT INTO visits DEFAULT VALUES")
            count = conn.execute("SELECT count(*) FROM visits").fetchone()[0]
    except (KeyError, psycopg.Error) as exc:
        app.logger.error("database query failed: %s: %s", type(exc).__name__, exc)
        return jsonify(error=f"{type(exc).__name__}: {exc}"), 500
    return jsonify(visits=count)
'''


def _pyproject(name: str, dependencies: tuple[str, ...]) -> str:
    deps = "".join(f'    "{d}",\n' for d in dependencies)
    return f'[project]\nname = "{name}"\nversion = "1.0"\ndependencies = [\n{deps}]\n'


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o755)
    path.write_text(text)
    path.chmod(0o644)


def make_projects(directory: Path) -> Path:
    """Write the project directories (all but Django's) under ``directory``, bound at PROJECTS.

    World-readable, since the units run as a dynamic user. Django's project is made
    inside the container, by ``startproject``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    for app in (HTTPBIN, FASTAPI, DBAPP):
        project = directory / Path(app.directory).name
        assert app.dependencies is not None
        _write(project / "pyproject.toml", _pyproject(project.name, app.dependencies))
    _write(directory / "shop" / "main.py", FASTAPI_MAIN)
    _write(directory / "dbapp" / "dbapp.py", DBAPP_MODULE)
    return directory


DJANGO_VIEWS = '''\
"""The one view of the corpus's Django site."""

import django
from django.http import JsonResponse


def hello(request):
    return JsonResponse({"hello": "from mysite", "django": django.get_version()})
'''


DJANGO_URLS = """
from mysite.views import hello  # noqa: E402

urlpatterns += [path("hello/", hello)]
"""


def startproject(box: Container) -> str:
    """``django-admin startproject mysite`` inside, then make it servable; its directory.

    Edits only what a deployment must: ALLOWED_HOSTS for 127.0.0.1 (and localhost),
    DEBUG off, and one view at /hello/ (startproject's URLconf has only the admin).
    """
    box.run(
        "/bin/sh",
        "-c",
        f"umask 022 && cd {shlex.quote(PROJECTS)} && "
        f"{CORPUS_VENV}/bin/django-admin startproject mysite",
    )
    site = f"{DJANGO.directory}/mysite"
    settings = box.read_file(f"{site}/settings.py")
    for old, new in (
        ("DEBUG = True", "DEBUG = False"),
        ("ALLOWED_HOSTS = []", 'ALLOWED_HOSTS = ["127.0.0.1", "localhost"]'),
    ):
        if old not in settings:
            raise HarnessError(f"startproject's settings.py has no {old!r}")
        settings = settings.replace(old, new)
    box.write_file(f"{site}/settings.py", settings)
    box.write_file(f"{site}/views.py", DJANGO_VIEWS)
    urls = box.read_file(f"{site}/urls.py")
    box.write_file(
        f"{site}/urls.py",
        urls + DJANGO_URLS,
    )
    return DJANGO.directory


# --- PostgreSQL inside the container -----------------------------------------------------------

PG_BIN = "/usr/lib/postgresql/15/bin"
PG_UNIT = "corpus-postgres.service"
PG_SOCKET_DIR = "/run/postgresql"
PG_DATA = "/var/lib/postgresql/data"


@dataclass(frozen=True)
class Database:
    """The corpus's database as the app reaches it: by TCP, or by the unix socket."""

    host: str
    port: int
    name: str = "corpus"
    user: str = "corpus"
    password: str = "corpus-secret"
    socket_dir: str = PG_SOCKET_DIR
    unit: str = PG_UNIT

    @property
    def tcp_url(self) -> str:
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{self.name}"

    @property
    def unix_url(self) -> str:
        return (
            f"postgresql://{self.user}:{self.password}@/{self.name}"
            f"?host={self.socket_dir}&port={self.port}"
        )

    def url_at(self, host: str) -> str:
        """The TCP URL with another host (e.g. an address the unit's firewall denies)."""
        return f"postgresql://{self.user}:{self.password}@{host}:{self.port}/{self.name}"

    def psql(self, box: Container, sql: str) -> str:
        """Run ``sql`` as the superuser over the unix socket; its unaligned output."""
        proc = box.run(
            # Not runuser: the container's /etc has no PAM configuration.
            *("setpriv", "--reuid=postgres", "--regid=postgres", "--clear-groups"),
            f"{PG_BIN}/psql",
            *("-h", self.socket_dir, "-p", str(self.port), "-d", self.name),
            *("-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql),
        )
        return proc.stdout.strip()


def _pg_init(db: Database) -> str:
    # Run by the unit as the postgres user, before the server: once per container (the
    # state directory keeps the cluster across restarts of the unit).
    return textwrap.dedent(
        f"""\
        #!/bin/sh
        set -eu
        [ -s "$PGDATA/PG_VERSION" ] && exit 0
        {PG_BIN}/initdb --pgdata="$PGDATA" --username=postgres --encoding=UTF8 \\
            --no-locale --no-sync --auth-local=peer --auth-host=scram-sha-256
        cat > "$PGDATA/pg_hba.conf" <<'EOF'
        local all postgres peer
        local all all scram-sha-256
        host all all 0.0.0.0/0 scram-sha-256
        host all all ::/0 scram-sha-256
        EOF
        {PG_BIN}/postgres --single -D "$PGDATA" postgres <<'EOF'
        CREATE ROLE {db.user} LOGIN PASSWORD '{db.password}';
        CREATE DATABASE {db.name} OWNER {db.user};
        EOF
        {PG_BIN}/postgres --single -D "$PGDATA" {db.name} <<'EOF'
        CREATE TABLE visits (id serial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now());
        ALTER TABLE visits OWNER TO {db.user};
        EOF
        """
    )


def _pg_unit(db: Database, listen: tuple[str, ...]) -> str:
    return textwrap.dedent(
        f"""\
        [Unit]
        Description=PostgreSQL 15 for the corpus's database app

        [Service]
        # Debian's postgres is built with sd_notify: READY=1 once it accepts connections.
        Type=notify
        User=postgres
        StateDirectory=postgresql
        RuntimeDirectory=postgresql
        RuntimeDirectoryMode=0755
        Environment=PGDATA={PG_DATA}
        ExecStartPre=/bin/sh /etc/opskit-test/postgres-init.sh
        ExecStart={PG_BIN}/postgres -D {PG_DATA} -c listen_addresses={",".join(listen)} \\
            -c port={db.port} -c unix_socket_directories={db.socket_dir} \\
            -c fsync=off -c synchronous_commit=off -c full_page_writes=off \\
            -c log_connections=on
        ExecReload=/bin/kill -HUP $MAINPID
        KillMode=mixed
        KillSignal=SIGINT
        TimeoutSec=150
        """
    )


def start_postgres(
    box: Container, *, listen: tuple[str, ...] = ("127.0.0.1",), port: int = 5432
) -> Database:
    """Run PostgreSQL 15 (Debian's, from the host's /usr) inside ``box`` as PG_UNIT.

    The unit creates the cluster, the role and the database in its ExecStartPre, listens
    on ``listen`` (addresses of the container; see add_address) and on a unix socket in
    /run/postgresql, and is started before this returns (Type=notify: accepting
    connections). Returns the Database with both URLs.
    """
    if not Path(f"{PG_BIN}/postgres").exists():
        raise HarnessError(f"{PG_BIN}/postgres is missing: apt-get install postgresql")
    db = Database(host=listen[0], port=port)
    # The container's /etc is empty: the postgres user first.
    box.run("systemd-sysusers", "--inline", 'u postgres - "PostgreSQL" /var/lib/postgresql')
    box.write_file("/etc/opskit-test/postgres-init.sh", _pg_init(db), mode=0o755)
    box.install_units([(PG_UNIT, _pg_unit(db, listen))])
    try:
        box.systemctl("start", PG_UNIT, timeout=180)
    except HarnessError as exc:
        raise HarnessError(f"{exc}\n{box.journal(PG_UNIT, lines=40)}") from None
    return db


def add_address(box: Container, address: str) -> None:
    """Give the container's loopback one more address (a "remote" host for the firewall).

    systemd's ``IPAddressAllow=localhost`` covers 127.0.0.0/8 and ::1 only: a database
    listening on, say, 10.10.0.5 here is another host as far as the unit's rules go.
    """
    box.run("ip", "address", "add", f"{address}/32", "dev", "lo")


# --- requests and the CLI inside ----------------------------------------------------------------


def wait_serving(box: Container, app: App, timeout: float = 90.0) -> float:
    """Wait (bounded) until the app's real route answers 200; the seconds it took."""
    return box.wait_http(app.url(), timeout=timeout)


def http_json(
    box: Container, target: str, data: Any = None, timeout: float = 15.0
) -> tuple[int, Any]:
    """GET ``target`` (POST ``data`` as JSON when given) from inside; status and parsed body.

    A body that is not JSON comes back as text; no answer at all raises HarnessError.
    """
    script = textwrap.dedent(
        """\
        import json, sys, urllib.error, urllib.request
        url, data, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
        body = None if data == "" else data.encode()
        headers = {"Content-Type": "application/json", "Connection": "close"}
        req = urllib.request.Request(url, data=body, headers=headers)
        try:
            resp = urllib.request.urlopen(req, timeout=timeout)
        except urllib.error.HTTPError as err:
            resp = err
        print(json.dumps({"status": resp.status, "body": resp.read().decode("utf-8", "replace")}))
        """
    )
    payload = "" if data is None else json.dumps(data)
    proc = box.python(
        "-c", script, target, payload, str(timeout), check=False, timeout=timeout + 30
    )
    try:
        answer = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise HarnessError(f"{box.name}: no answer from {target}: {proc.stderr}") from None
    try:
        body = json.loads(answer["body"])
    except ValueError:
        body = answer["body"]
    return int(answer["status"]), body


def opskit(
    box: Container,
    *args: str,
    cwd: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 180.0,
) -> subprocess.CompletedProcess[str]:
    """Run this checkout's opskit inside the container, as root (in ``cwd``, a project
    directory whose config it then reads; with ``env`` added to its environment); never
    raises on its exit code."""
    argv = [OPSKIT, *args]
    if env:
        argv = ["env", *(f"{k}={v}" for k, v in env.items()), *argv]
    if cwd is not None:
        argv = ["/bin/sh", "-c", f'cd {shlex.quote(cwd)} && exec "$@"', "opskit", *argv]
    return box.run(*argv, check=False, timeout=timeout)
