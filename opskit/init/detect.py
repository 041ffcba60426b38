"""What ``opskit init`` reads from a project: the app, its server, its venv and its routes.

Everything comes from files: Python sources are parsed with ``ast`` (nothing of the app is
imported or run), the server's own config files and the Procfile are read as text, the
venv's packages by their metadata directories. Each finding carries the file it came
from, which ``opskit init`` prints, so a wrong guess can be traced and corrected.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opskit.init.sources import (
    HEALTH_ROUTES,
    VERSION_ROUTES,
    AppCandidate,
    Found,
    django_app,
    django_settings_module,
    find_apps,
    find_route,
    literal_routes,
    parse,
    python_files,
    rank,
)
from opskit.systemd.dependencies import declared, installed

SERVERS = ("gunicorn", "uvicorn", "uwsgi")


@dataclass
class Detection:
    """Everything init found, with the lines it says on stderr."""

    name: Found
    app: AppCandidate | None = None
    server: Found | None = None
    venv: Found | None = None
    health_path: Found | None = None
    version_path: Found | None = None
    django_settings: Found | None = None
    dependencies: frozenset[str] = frozenset()
    notes: list[str] = field(default_factory=list)


# --- the server ----------------------------------------------------------------------------

_PROCFILE_WEB = re.compile(r"^web\s*:\s*(.+)$", re.MULTILINE)


def server_from_files(root: Path) -> tuple[Found | None, str | None]:
    """The server an existing config file or the Procfile names, and the Procfile's app."""
    for name, server in (
        ("gunicorn.conf.py", "gunicorn"),
        ("gunicorn_config.py", "gunicorn"),
        ("uwsgi.ini", "uwsgi"),
        ("uwsgi.yaml", "uwsgi"),
    ):
        if (root / name).is_file():
            return Found(server, name), None
    procfile = root / "Procfile"
    try:
        text = procfile.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None, None
    match = _PROCFILE_WEB.search(text)
    if not match:
        return None, None
    words = match.group(1).split()
    for i, word in enumerate(words):
        base = word.rsplit("/", 1)[-1]
        if base in SERVERS:
            app = next(
                (w for w in words[i + 1 :] if ":" in w or re.fullmatch(r"[A-Za-z_][\w.]*", w)),
                None,
            )
            if app and base == "gunicorn" and ":" not in app:
                app = f"{app}:application"  # gunicorn's own default attribute
            return Found(base, "Procfile"), app
    return None, None


def top_level_packages(meta: Path) -> list[str]:
    """The importable top-level names of an installed distribution."""
    top = meta / "top_level.txt"
    try:
        names = [n.strip() for n in top.read_text(encoding="utf-8").splitlines() if n.strip()]
    except OSError:
        names = []
    if names:
        return names
    try:
        record = (meta / "RECORD").read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    tops = []
    for line in record:
        first = line.split(",", 1)[0].split("/", 1)[0]
        if first.isidentifier() and first not in tops and not first.endswith(".dist-info"):
            tops.append(first.removesuffix(".py"))
    return tops


def choose_server(
    kind: str | None, *named: tuple[Iterable[str], str]
) -> tuple[Found | None, str | None]:
    """The first server among each ``(names, source)`` in turn that can serve ``kind``.

    gunicorn and uWSGI serve WSGI only (opskit gives gunicorn no ASGI worker class), so for
    an ASGI-only app uvicorn wins wherever it is named. Returns the choice and a note when
    a named server was passed over.
    """
    note = None
    for names, source in named:
        present = [s for s in SERVERS if s in set(names)]
        if not present:
            continue
        if kind == "asgi":
            if "uvicorn" in present:
                return Found("uvicorn", source), note
            note = f"{source} names {present[0]}, which cannot serve an ASGI app"
            continue
        if kind == "wsgi":
            wsgi = [s for s in present if s != "uvicorn"]
            if wsgi:
                return Found(wsgi[0], source), note
            continue
        return Found(present[0], source), note
    return None, note


# --- the venv -----------------------------------------------------------------------------


def find_venv(root: Path, name: str, environ: dict[str, str] | None = None) -> Found | None:
    """The project's venv: .venv, venv, $VIRTUAL_ENV, uv's or Poetry's."""
    env = os.environ if environ is None else environ

    def is_venv(path: Path) -> bool:
        return (path / "pyvenv.cfg").is_file() and (path / "bin" / "python").exists()

    uv = env.get("UV_PROJECT_ENVIRONMENT")
    uv_path = [(root / uv, "UV_PROJECT_ENVIRONMENT")] if uv else []  # "/abs" / "x" is "/abs"
    candidates = [
        *uv_path,
        (root / ".venv", ".venv"),
        (root / "venv", "venv"),
        (root / "env", "env"),
    ]  # fmt: skip
    if env.get("VIRTUAL_ENV"):
        candidates.append((Path(env["VIRTUAL_ENV"]), "$VIRTUAL_ENV"))
    for path, source in candidates:
        if is_venv(path):
            return Found(str(path.absolute()), source)
    # Poetry keeps its venvs in its cache: NAME-HASH-pyX.Y.
    cache = Path(env.get("POETRY_CACHE_DIR") or Path(env.get("HOME", "/root")) / ".cache/pypoetry")
    poetry_name = re.sub(r"[ $`!*@\"\\\r\n\t]", "_", name.lower())[:42]
    matches = sorted((cache / "virtualenvs").glob(f"{poetry_name}-*-py*"))
    matches = [m for m in matches if is_venv(m)]
    if len(matches) == 1:
        return Found(str(matches[0]), "Poetry's cache")
    return None


# --- all of it ---------------------------------------------------------------------------


def detect(root: Path, project: dict[str, Any], environ: dict[str, str] | None = None) -> Detection:
    """Read ``root`` (a project directory) and say what it serves, how, and from where."""
    root = root.absolute()
    raw_name = str(project.get("name") or root.name or "app")
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", raw_name).strip("-._") or "app"
    source_name = "pyproject.toml [project].name" if project.get("name") else "the directory name"
    d = Detection(name=Found(name, source_name))

    configured, procfile_app = server_from_files(root)
    listed = declared(root)
    declared_names, declared_sources = set(listed.names), listed.sources
    d.venv = find_venv(root, raw_name, environ)
    venv_packages = (installed(Path(d.venv.value)) if d.venv else None) or {}
    d.dependencies = frozenset(declared_names | set(venv_packages))

    files = list(python_files(root))
    d.django_settings = django_settings_module(root)
    hint = configured or choose_server(None, (declared_names, "declared"))[0]
    server_hint = hint.value if hint else None
    if d.django_settings:
        d.app = django_app(root, d.django_settings, server_hint)
    if d.app is None and procfile_app:
        d.app = AppCandidate(procfile_app, "", "Procfile", "Procfile", root / "Procfile")
    if d.app is None:
        apps = find_apps(root, files)
        if not apps:
            # A project that only declares its app as a dependency (httpbin): look in the
            # venv at the declared distributions' own packages.
            apps = _apps_in_dependencies(declared_names, venv_packages)
        if apps:
            d.app = apps[0]
            others = [c.target for c in apps[1:4] if c.target != apps[0].target]
            if others:
                d.notes.append(f"other candidates: {', '.join(others)} (set app to choose)")

    kind = d.app.kind if d.app and d.app.kind else None
    if d.app and d.app.framework == "Django":
        kind = None  # Django serves both: the settings' choice stands
    if configured:
        d.server = configured
    else:
        d.server, passed = choose_server(
            kind,
            (declared_names, " and ".join(declared_sources) or "the declared dependencies"),
            (venv_packages, "the venv"),
        )
        if passed:
            d.notes.append(passed)
    if d.server is None:
        default = "uvicorn" if kind == "asgi" else "gunicorn"
        what = "ASGI" if kind == "asgi" else "WSGI"
        d.server = Found(default, f"the app is {what}, no server found installed or declared")
    if d.app and d.app.framework == "Django" and d.django_settings:
        # Re-read for the chosen server: uvicorn serves the ASGI application.
        d.app = django_app(root, d.django_settings, d.server.value) or d.app

    routes: set[str] = set()
    search = {d.app.path} if d.app else set()
    search |= {p for p in files if p.name in ("urls.py", "routes.py", "views.py", "api.py")}
    if d.app and d.app.path.is_file():
        search |= {p for p in d.app.path.parent.glob("*.py")}
    for path in sorted(search):
        tree = parse(path) if path.suffix == ".py" else None
        if tree is not None:
            found = literal_routes(tree)
            health = find_route(found, HEALTH_ROUTES)
            version = find_route(found, VERSION_ROUTES)
            shown = _shown(root, path)
            if health and d.health_path is None:
                d.health_path = Found(health, shown)
            if version and d.version_path is None:
                d.version_path = Found(version, shown)
            routes |= found
    return d


def _shown(root: Path, path: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        parts = path.parts
        if "site-packages" in parts:
            return "/".join(parts[parts.index("site-packages") + 1 :]) + " (in the venv)"
        return path.name


def _apps_in_dependencies(declared: set[str], venv_packages: dict[str, Path]) -> list[AppCandidate]:
    found: list[AppCandidate] = []
    for dist in sorted(declared):
        meta = venv_packages.get(dist)
        if meta is None:
            continue
        site = meta.parent
        for top in top_level_packages(meta):
            package = site / top
            if not package.is_dir():
                continue
            files = [p for p in python_files(package)][:200]
            for candidate in find_apps(site, files, shown_root=site):
                found.append(
                    AppCandidate(
                        candidate.target,
                        candidate.kind,
                        f"{candidate.source} of the installed {dist}",
                        candidate.framework,
                        candidate.path,
                    )
                )
    return sorted(found, key=rank)
