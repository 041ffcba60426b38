"""``opskit init``: a starter [tool.opskit] in pyproject.toml, the rest left byte-identical."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import tomlkit

from opskit.config import load_spec
from opskit.init.detect import detect
from opskit.init.project import detect_server


def load(text: str) -> dict[str, Any]:
    return tomlkit.parse(text).unwrap()


PYPROJECT = """\
# Project metadata; keep the comments.
[build-system]
requires = ["hatchling"]   # the backend
build-backend = "hatchling.build"

[project]
name = "My.Shop"
version = "1.0"
dependencies = [
    "Django>=5",
    # the server:
    "gunicorn[gevent] >= 23 ; sys_platform == 'linux'",
]

[tool.ruff]
line-length   =   100   # odd spacing survives
"""


SHOP_APP = """\
from flask import Flask

shop = Flask(__name__)


@shop.route("/")
def index():
    return "shop"
"""


@pytest.fixture(autouse=True)
def no_active_venv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Detection reads $VIRTUAL_ENV and Poetry's cache: keep the test's own out of it."""
    for name in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT", "POETRY_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "shop"
    (root / "my_shop").mkdir(parents=True)
    monkeypatch.chdir(root)
    (root / "pyproject.toml").write_text(PYPROJECT)
    (root / "my_shop" / "__init__.py").write_text("")
    (root / "my_shop" / "web.py").write_text(SHOP_APP)
    return root


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def fake_venv(path: Path, *dists: str) -> Path:
    """A directory shaped like a venv (pyvenv.cfg, bin/python, dist-info) with ``dists``."""
    (path / "bin").mkdir(parents=True)
    (path / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (path / "bin" / "python").symlink_to("/usr/bin/python3")
    site = path / "lib" / "python3.11" / "site-packages"
    site.mkdir(parents=True)
    for dist in dists:
        (site / f"{dist}-1.0.dist-info").mkdir()
    return path


def test_adds_the_table_and_keeps_the_rest_byte_identical(cli, project: Path) -> None:
    result = cli("init")
    assert result.code == 0, result.err
    assert result.err.splitlines()[-1].split() == ["create", "pyproject.toml", "[tool.opskit]"]
    text = (project / "pyproject.toml").read_text()
    assert text.startswith(PYPROJECT)
    added = text[len(PYPROJECT) :]
    assert "[tool.opskit]" in added
    table = load(text)["tool"]["opskit"]
    assert table["name"] == "My.Shop"
    assert table["server"] == "gunicorn"
    # The Flask object is called shop, in my_shop/web.py: read from the source.
    assert table["app"] == "my_shop.web:shop"
    assert load(text)["tool"]["ruff"] == {"line-length": 100}


def test_each_finding_names_its_file(cli, project: Path) -> None:
    result = cli("init")
    lines = result.err.splitlines()
    assert "found      name = My.Shop  (pyproject.toml [project].name)" in lines
    assert "found      server = gunicorn  (pyproject.toml)" in lines
    assert "found      app = my_shop.web:shop  (Flask app, my_shop/web.py)" in lines
    # The test's directory is under /tmp, which DynamicUser's PrivateTmp hides.
    assert any(
        line.startswith("default    working-directory = /srv/My.Shop  (the hardened unit")
        for line in lines
    ), lines
    assert "default    venv = /srv/My.Shop/.venv  (none found: .venv, venv, $VIRTUAL_ENV)" in lines


def test_the_starter_table_is_a_valid_spec(cli, project: Path) -> None:
    cli("init")
    spec = load_spec({}, directory=project)
    assert (spec.name, spec.server, spec.port) == ("My.Shop", "gunicorn", 8000)
    result = cli("systemd", "-o", "-")
    assert result.code == 0, result.err
    assert result.out.startswith("# My.Shop.service")


def test_health_and_version_paths_are_only_suggested(cli, project: Path) -> None:
    # The app has neither route: the starter table leaves both unset and says how to add
    # them, as comments that become a valid spec once uncommented.
    cli("init")
    path = project / "pyproject.toml"
    text = path.read_text()
    table = load(text)["tool"]["opskit"]
    assert "health-path" not in table and "version-path" not in table
    spec = load_spec({}, directory=project)
    assert (spec.health_path, spec.version_path) == (None, None)
    assert '\n# health-path = "/health"\n# version-path = "/version"\n' in text
    path.write_text(
        text.replace('# health-path = "/health"', 'health-path = "/health"').replace(
            '# version-path = "/version"', 'version-path = "/version"'
        )
    )
    spec = load_spec({}, directory=project)
    assert (spec.health_path, spec.version_path) == ("/health", "/version")


def test_routes_found_in_the_code_are_written(cli, project: Path) -> None:
    (project / "my_shop" / "web.py").write_text(
        SHOP_APP
        + '\n\n@shop.get("/healthz")\ndef health():\n    return "ok"\n'
        + '\n\n@shop.route("/version/")\ndef version():\n    return "1"\n'
        + '\n\n@shop.route("/status/<int:code>")\ndef status(code):\n    return ""\n'
    )
    result = cli("init")
    table = load((project / "pyproject.toml").read_text())["tool"]["opskit"]
    assert (table["health-path"], table["version-path"]) == ("/healthz", "/version/")
    assert "found      health-path = /healthz  (a route in my_shop/web.py)" in result.err


def test_a_second_run_refuses_without_force(cli, project: Path) -> None:
    cli("init")
    first = (project / "pyproject.toml").read_bytes()
    result = cli("init")
    assert result.code == 1
    assert result.err.splitlines() == [
        "opskit: error: pyproject.toml: already has [tool.opskit]; not replaced (use --force)"
    ]
    assert (project / "pyproject.toml").read_bytes() == first


def test_force_detects_again_and_replaces_only_the_table(cli, project: Path) -> None:
    path = project / "pyproject.toml"
    path.write_text(PYPROJECT + '\n[tool.opskit]\nname = "old"\nport = 1\n')
    result = cli("init", "--force")
    assert result.code == 0, result.err
    assert result.err.splitlines()[-1].split()[0] == "overwrite"
    text = path.read_text()
    assert text.startswith(PYPROJECT)
    assert load(text)["tool"]["opskit"]["port"] == 8000
    assert load(text)["tool"]["opskit"]["app"] == "my_shop.web:shop"
    assert "old" not in text


def test_other_directory_and_mode_kept(cli, tmp_path: Path) -> None:
    root = write(
        tmp_path / "api",
        {
            "pyproject.toml": '[project]\nname = "api"\ndependencies = ["fastapi", "uvicorn"]\n',
            "api/main.py": "from fastapi import FastAPI\n\napi = FastAPI()\n",
        },
    )
    path = root / "pyproject.toml"
    path.chmod(0o640)
    result = cli("init", str(root))
    assert result.code == 0, result.err
    assert path.stat().st_mode & 0o777 == 0o640
    table = load(path.read_text())["tool"]["opskit"]
    assert (table["server"], table["app"]) == ("uvicorn", "api.main:api")
    assert sorted(p.name for p in root.iterdir()) == ["api", "pyproject.toml"]


@pytest.mark.parametrize(
    ("deps", "server"),
    [
        (["Django", "gunicorn>=23"], "gunicorn"),
        (["fastapi", "Uvicorn[standard]>=0.30"], "uvicorn"),
        (["flask", "uWSGI==2.0.31"], "uwsgi"),
        (["uvicorn", "gunicorn"], "gunicorn"),
        (["flask"], None),
        (["gunicorn-extras"], None),
        (["not a requirement !!", "uwsgi"], "uwsgi"),
        ([], None),
    ],
)
def test_detect_server(deps: list[str], server: str | None) -> None:
    assert detect_server(deps) == server


# --- what detection reads ------------------------------------------------------------------


DJANGO_MANAGE = """\
import os
import sys


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
"""

DJANGO_SETTINGS = """\
ROOT_URLCONF = "mysite.urls"
WSGI_APPLICATION = "mysite.wsgi.application"
"""


def django_project(root: Path) -> Path:
    return write(
        root,
        {
            "manage.py": DJANGO_MANAGE,
            "mysite/__init__.py": "",
            "mysite/settings.py": DJANGO_SETTINGS,
            "mysite/wsgi.py": (
                "import os\nfrom django.core.wsgi import get_wsgi_application\n\n"
                "application = get_wsgi_application()\n"
            ),
            "mysite/asgi.py": (
                "from django.core.asgi import get_asgi_application\n\n"
                "application = get_asgi_application()\n"
            ),
            "mysite/urls.py": (
                "from django.urls import path\nfrom . import views\n\n"
                'urlpatterns = [path("healthz/", views.health), path("items/<int:pk>/", views.x)]\n'
            ),
        },
    )


def test_a_django_project_without_pyproject_gets_opskit_toml(cli, tmp_path: Path) -> None:
    root = django_project(tmp_path / "mysite")
    result = cli("init", str(root))
    assert result.code == 0, result.err
    assert sorted(p.name for p in root.iterdir()) == ["manage.py", "mysite", "opskit.toml"]
    table = load((root / "opskit.toml").read_text())
    # wsgi.py defines application, not app: WSGI_APPLICATION says so.
    assert table["app"] == "mysite.wsgi:application"
    assert table["server"] == "gunicorn"
    assert table["health-path"] == "/healthz/"
    assert "version-path" not in table
    assert "(Django app, mysite/settings.py: WSGI_APPLICATION)" in result.err
    assert "Django settings mysite.settings (manage.py)" in result.err
    # The written file is the config every later command reads.
    spec = load_spec({}, directory=root)
    assert (spec.name, spec.app) == ("mysite", "mysite.wsgi:application")
    again = cli("init", str(root))
    assert again.code == 1 and "opskit.toml: already exists" in again.err
    assert cli("init", str(root), "--force").code == 0


def test_django_under_uvicorn_serves_the_asgi_application(tmp_path: Path) -> None:
    root = django_project(tmp_path / "mysite")
    write(root, {"requirements.txt": "django>=5\nuvicorn[standard]\n"})
    found = detect(root, {})
    assert found.server is not None and found.app is not None
    assert (found.server.value, found.app.target) == ("uvicorn", "mysite.asgi:application")
    assert found.server.source == "requirements.txt"


@pytest.mark.parametrize(
    ("files", "app", "server"),
    [
        (
            {
                "web/factory.py": (
                    "from flask import Flask\n\ndef create_app():\n    return Flask('x')\n"
                )
            },
            "web.factory:create_app()",
            "gunicorn",
        ),
        (
            {"svc.py": "import falcon\n\nthing = falcon.App()\n"},
            "svc:thing",
            "gunicorn",
        ),
        (
            {"svc.py": "import falcon.asgi\n\nthing = falcon.asgi.App()\n"},
            "svc:thing",
            "uvicorn",
        ),
        (
            {"hello.py": "def application(environ, start_response):\n    return [b'']\n"},
            "hello:application",
            "gunicorn",
        ),
        (
            {"hello.py": "async def app(scope, receive, send):\n    pass\n"},
            "hello:app",
            "uvicorn",
        ),
        (
            {
                "pkg/__init__.py": "from .core import *\n",
                "pkg/core.py": (
                    "from starlette.applications import Starlette\n\nsite = Starlette()\n"
                ),
            },
            "pkg:site",
            "uvicorn",
        ),
        (
            {"Procfile": "web: gunicorn project.wsgi --log-file -\n", "x.py": ""},
            "project.wsgi:application",
            "gunicorn",
        ),
    ],
    ids=[
        "factory",
        "falcon",
        "falcon-asgi",
        "wsgi-function",
        "asgi-function",
        "re-export",
        "Procfile",
    ],
)
def test_app_shapes(tmp_path: Path, files: dict[str, str], app: str, server: str) -> None:
    found = detect(write(tmp_path / "p", files), {})
    assert found.app is not None and found.server is not None
    assert (found.app.target, found.server.value) == (app, server)


def test_a_server_config_file_comes_first(tmp_path: Path) -> None:
    root = write(
        tmp_path / "p",
        {
            "uwsgi.ini": "[uwsgi]\n",
            "requirements.txt": "gunicorn\nflask\n",
            "app.py": "from flask import Flask\napp = Flask(__name__)\n",
        },
    )
    found = detect(root, {})
    assert found.server is not None and (found.server.value, found.server.source) == (
        "uwsgi",
        "uwsgi.ini",
    )


def test_an_asgi_app_passes_over_a_wsgi_only_server(tmp_path: Path) -> None:
    root = write(
        tmp_path / "p",
        {
            "requirements.txt": "gunicorn\nfastapi\n",
            "main.py": "from fastapi import FastAPI\napp = FastAPI()\n",
        },
    )
    found = detect(root, {})
    assert found.server is not None and found.server.value == "uvicorn"
    assert any("cannot serve an ASGI app" in n for n in found.notes), found.notes


def test_the_venv(tmp_path: Path) -> None:
    root = write(tmp_path / "p", {"app.py": "from flask import Flask\napp = Flask('a')\n"})
    assert detect(root, {}, {}).venv is None
    other = fake_venv(tmp_path / "elsewhere", "uwsgi")
    found = detect(root, {}, {"VIRTUAL_ENV": str(other)})
    assert found.venv is not None and (found.venv.value, found.venv.source) == (
        str(other),
        "$VIRTUAL_ENV",
    )
    # The venv's installed server is the one used when nothing declares one.
    assert found.server is not None and (found.server.value, found.server.source) == (
        "uwsgi",
        "the venv",
    )
    fake_venv(root / ".venv", "gunicorn")
    found = detect(root, {}, {"VIRTUAL_ENV": str(other)})
    assert found.venv is not None and found.venv.source == ".venv"
    home = tmp_path / "home"
    poetry = fake_venv(home / ".cache/pypoetry/virtualenvs/shop-AbCd1234-py3.11")
    found = detect(write(tmp_path / "q", {"app.py": ""}), {"name": "shop"}, {"HOME": str(home)})
    assert found.venv is not None and (found.venv.value, found.venv.source) == (
        str(poetry),
        "Poetry's cache",
    )


def test_nothing_found_invents_nothing(cli, tmp_path: Path) -> None:
    root = write(tmp_path / "empty", {"pyproject.toml": '[project]\nname = "tool"\n'})
    result = cli("init", str(root))
    assert result.code == 0, result.err
    text = (root / "pyproject.toml").read_text()
    table = load(text)["tool"]["opskit"]
    assert "app" not in table and "health-path" not in table
    assert '# app = "module:callable"' in text
    assert 'warning    no app found in the code: set app = "module:callable"' in result.err


def test_skipped_directories_and_broken_files(tmp_path: Path) -> None:
    root = write(
        tmp_path / "p",
        {
            "broken.py": "def (:\n",
            "node_modules/x/app.py": "from flask import Flask\napp = Flask('no')\n",
            "tests/app.py": "from flask import Flask\napp = Flask('no')\n",
            "site/wsgi.py": "from flask import Flask\nsite = Flask('yes')\n",
        },
    )
    found = detect(root, {})
    assert found.app is not None and found.app.target == "site.wsgi:site"


def test_database_clients_draw_a_network_note(cli, tmp_path: Path) -> None:
    root = write(
        tmp_path / "db",
        {
            "pyproject.toml": (
                '[project]\nname = "db"\ndependencies = ["flask", "psycopg[binary]"]\n'
            ),
            "db.py": "from flask import Flask\napp = Flask('db')\n",
        },
    )
    result = cli("init", str(root))
    assert "note       network: psycopg (a PostgreSQL client): give the URL" in result.err


@pytest.mark.parametrize(
    "text",
    ["[project\nname = 1\n", "tool = 1\n", "project = 'x'\n", "a = 1\na = 2\n"],
    ids=["not TOML", "tool not a table", "project not a table", "duplicate key"],
)
def test_invalid_pyproject(cli, project: Path, text: str) -> None:
    path = project / "pyproject.toml"
    path.write_text(text)
    result = cli("init", "--force")
    assert result.code == 2, result
    assert len(result.err.splitlines()) == 1 and "Traceback" not in result.err
    assert path.read_text() == text


def test_a_directory_argument_that_is_a_file(cli, project: Path) -> None:
    result = cli("init", "pyproject.toml")
    assert result.code == 2
    assert len(result.err.splitlines()) == 1


def test_force_replaces_a_non_table_opskit_key(cli, project: Path) -> None:
    path = project / "pyproject.toml"
    path.write_text("[tool]\nopskit = 1\n")
    assert cli("init").code == 1
    assert cli("init", "--force").code == 0
    assert load(path.read_text())["tool"]["opskit"]["server"] == "gunicorn"


def test_a_missing_directory(cli, tmp_path: Path) -> None:
    result = cli("init", str(tmp_path / "nope"))
    assert result.code == 2
    assert len(result.err.splitlines()) == 1 and "Traceback" not in result.err
    assert list(tmp_path.iterdir()) == []


def test_unreadable_pyproject(cli, tmp_path: Path) -> None:
    (tmp_path / "dir" / "pyproject.toml").mkdir(parents=True)
    (tmp_path / "latin1").mkdir()
    (tmp_path / "latin1" / "pyproject.toml").write_bytes(b'[project]\nname = "\xff"\n')
    for directory, problem in (("dir", "cannot read: Is a directory"), ("latin1", "not UTF-8")):
        result = cli("init", str(tmp_path / directory))
        assert result.code == 2
        assert len(result.err.splitlines()) == 1 and problem in result.err
