"""The bundled example app as the systemd tests serve it: where it lives inside, its specs."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from opskit.spec import AppSpec, build_spec
from tests.real_systemd.nspawn import SERVERS_VENV, SYSTEM_PYTHON

EXAMPLE = Path(__file__).resolve().parents[2] / "opskit" / "example"
#: Where the app directory is bound inside every container.
APP_DIR = "/srv/demoapp"
#: The container has a private network, so a fixed port cannot collide with anything.
PORT = 8000
APPS = {"gunicorn": "demoapp:app", "uwsgi": "demoapp:app", "uvicorn": "demoapp:asgi"}


def make_app_dir(directory: Path, version: str = "1") -> Path:
    """Copy demoapp.py and a VERSION file into ``directory``, readable by a dynamic user."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(EXAMPLE / "demoapp.py", directory / "demoapp.py")
    set_version(directory, version)
    directory.chmod(0o755)
    (directory / "demoapp.py").chmod(0o644)
    return directory


def set_version(directory: Path, version: str) -> None:
    """Replace VERSION atomically (the app reads it once, at import)."""
    tmp = directory / ".VERSION.tmp"
    tmp.write_text(f"{version}\n")
    tmp.chmod(0o644)
    tmp.replace(directory / "VERSION")


def demo_spec(server: str, name: str | None = None, **overrides: Any) -> AppSpec:
    """A spec for the example app under ``server``, served from the session's venv."""
    raw: dict[str, Any] = {
        "name": name or f"demo-{server}",
        "server": server,
        "app": APPS[server],
        "port": PORT,
        "workers": 2,
        "working_directory": APP_DIR,
        "venv": SERVERS_VENV,
        # Short drains keep stop and restart quick; nothing is long-running here.
        "graceful_timeout": 5,
        # The example app's routes, as its pyproject.toml sets them: the spec has no
        # default for either (override with None for an app without them).
        "health_path": "/health",
        "version_path": "/version",
    }
    raw.update(overrides)
    return build_spec(raw)


def url(path: str = "/health", port: int = PORT) -> str:
    """The app's URL from inside the container."""
    return f"http://127.0.0.1:{port}{path}"


def squat(box, port: int = PORT) -> None:
    """A foreign server on the app's port: python's http.server, as its own unit "squatter"."""
    box.run(
        "systemd-run",
        "--unit=squatter",
        "--property=Type=exec",
        SYSTEM_PYTHON,
        "-m",
        "http.server",
        "--bind",
        "127.0.0.1",
        str(port),
    )
    box.wait_http(url("/", port), timeout=30)
