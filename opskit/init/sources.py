"""The app in a project's Python sources, read with ``ast``: nothing is imported or run.

App objects (``shop = Flask(__name__)``, ``FastAPI()``, ``falcon.App()``), factories
(``create_app()``), bare WSGI and ASGI callables, Django's settings (manage.py's
DJANGO_SETTINGS_MODULE, then ``WSGI_APPLICATION``), and the literal routes a module
declares (for the health and version paths). ``opskit.init.detect`` puts them together
with the server, the venv and the dependencies.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

#: Directories never searched for the app's source.
SKIP_DIRS = frozenset(
    {".git", ".hg", ".svn", ".tox", ".nox", ".venv", "venv", "env", ".env", "node_modules",
     "__pycache__", "build", "dist", "site-packages", ".mypy_cache", ".pytest_cache",
     ".ruff_cache", "migrations", "static", "media", "templates", "docs", "tests", "test"}
)  # fmt: skip
#: How deep and how much of a tree is read, so a huge checkout cannot make init slow.
MAX_DEPTH = 4
MAX_FILES = 2000
MAX_BYTES = 1_000_000

#: Framework constructors of an app object, by the name they are called with, and whether
#: the object is a WSGI or an ASGI app.
CONSTRUCTORS = {
    "Flask": "wsgi",
    "Bottle": "wsgi",
    "Pyramid": "wsgi",
    "FastAPI": "asgi",
    "Starlette": "asgi",
    "Quart": "asgi",
    "Litestar": "asgi",
}
#: Modules whose ``App(...)`` is an app: falcon's is WSGI, falcon.asgi's ASGI.
APP_MODULES = {"falcon": "wsgi", "falcon.asgi": "asgi"}
#: Names of factory functions that return the app.
FACTORIES = ("create_app", "make_app", "build_app", "get_app", "application_factory")
#: Module names an app usually lives in, best first (a tie among several candidates).
USUAL_MODULES = ("wsgi", "asgi", "app", "main", "application", "server", "api", "web")
#: Literal routes taken as a health check, best first, and as a version route.
HEALTH_ROUTES = ("/health", "/healthz", "/healthcheck", "/_health", "/livez", "/ping")
VERSION_ROUTES = ("/version", "/__version__", "/_version")
#: Frameworks that route by decorator: ``@app.get("/x")``, ``@bp.route("/x")``.
ROUTE_METHODS = frozenset({"route", "get", "api_route", "add_url_rule", "add_route"})
#: Django's URLconf: ``path("health/", view)``, ``re_path(r"^health/$", view)``.
DJANGO_ROUTES = frozenset({"path", "re_path", "url"})


@dataclass(frozen=True)
class Found:
    """One detected value and where it was read."""

    value: str
    source: str


@dataclass(frozen=True)
class AppCandidate:
    """An importable app: the ``module:attribute`` path, WSGI or ASGI, and its source."""

    target: str
    kind: str
    source: str
    #: The framework it was made with ("Flask", "Django", ...), for messages.
    framework: str
    #: The file it was found in (the routes of the app are searched there).
    path: Path


# --- reading sources -----------------------------------------------------------------------


def python_files(root: Path) -> Iterator[Path]:
    """The project's Python files, shallow first, skipping venvs, caches and build output."""
    count = 0
    level = [root]
    for _ in range(MAX_DEPTH + 1):
        below: list[Path] = []
        for directory in level:
            try:
                entries = sorted(directory.iterdir())
            except OSError:
                continue
            for entry in entries:
                if entry.is_symlink():
                    continue
                if entry.is_dir():
                    if entry.name not in SKIP_DIRS and not (entry / "pyvenv.cfg").exists():
                        below.append(entry)
                elif entry.suffix == ".py":
                    count += 1
                    if count > MAX_FILES:
                        return
                    yield entry
        level = below


def parse(path: Path) -> ast.Module | None:
    """The module's syntax tree, or None for a file that is too big, unreadable or broken."""
    try:
        if path.stat().st_size > MAX_BYTES:
            return None
        return ast.parse(path.read_bytes(), filename=str(path))
    except (OSError, SyntaxError, ValueError):
        return None


def module_name(root: Path, path: Path) -> str | None:
    """The import name of ``path`` under ``root`` (``src/`` layouts included), or None."""
    try:
        parts = list(path.relative_to(root).with_suffix("").parts)
    except ValueError:
        return None
    if parts and parts[0] == "src":
        parts = parts[1:]
    if parts and parts[-1] == "__init__":
        parts = parts[:-1]
    if not parts or not all(p.isidentifier() for p in parts):
        return None
    return ".".join(parts)


def _call_name(node: ast.expr) -> tuple[str, str]:
    """``(module_path, name)`` of a call target: ``Flask`` -> ("", "Flask")."""
    if isinstance(node, ast.Name):
        return "", node.id
    if isinstance(node, ast.Attribute):
        owner = []
        cur: ast.expr = node.value
        while isinstance(cur, ast.Attribute):
            owner.append(cur.attr)
            cur = cur.value
        if isinstance(cur, ast.Name):
            owner.append(cur.id)
        return ".".join(reversed(owner)), node.attr
    return "", ""


def _imported_from(tree: ast.Module) -> dict[str, str]:
    """Local name -> the module it was imported from (``from falcon import App``)."""
    names: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                names[alias.asname or alias.name] = node.module
        elif isinstance(node, ast.Import):
            for alias in node.names:
                names[alias.asname or alias.name.split(".")[0]] = alias.name
    return names


def _app_kind(tree: ast.Module, call: ast.Call) -> tuple[str, str] | None:
    """("wsgi"|"asgi", framework) when ``call`` builds an app object."""
    owner, name = _call_name(call.func)
    if name in CONSTRUCTORS:
        return CONSTRUCTORS[name], name
    if name == "App":
        imported = _imported_from(tree)
        module = imported.get(owner.split(".")[0], owner) if owner else imported.get("App", "")
        if owner and "." in owner:
            module = owner
        if module in APP_MODULES:
            return APP_MODULES[module], "falcon"
    if name in ("get_wsgi_application", "get_asgi_application"):
        return ("wsgi" if "wsgi" in name else "asgi"), "Django"
    return None


def _frameworks(tree: ast.Module) -> set[str]:
    """The framework modules a file imports (``flask``, ``fastapi`` ...)."""
    return {m.split(".")[0] for m in _imported_from(tree).values()}


def _params(func: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    return [a.arg for a in func.args.args]


def app_candidates(tree: ast.Module, module: str, source: str, path: Path) -> list[AppCandidate]:
    """Module-level app objects, factories and bare WSGI/ASGI callables of one module."""
    found: list[AppCandidate] = []
    for node in tree.body:
        if isinstance(node, ast.Assign | ast.AnnAssign) and isinstance(node.value, ast.Call):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            kind = _app_kind(tree, node.value)
            for target in targets:
                if kind and isinstance(target, ast.Name):
                    found.append(
                        AppCandidate(f"{module}:{target.id}", kind[0], source, kind[1], path)
                    )
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            params = _params(node)
            if node.name in FACTORIES:
                # The server calls a factory without arguments.
                required = len(node.args.args) - len(node.args.defaults)
                if required == 0:
                    frameworks = _frameworks(tree)
                    kind_name = "asgi" if frameworks & {"fastapi", "starlette", "quart"} else "wsgi"
                    framework = next(
                        (f for f in ("flask", "fastapi", "starlette", "quart") if f in frameworks),
                        "a factory",
                    )
                    found.append(
                        AppCandidate(f"{module}:{node.name}()", kind_name, source, framework, path)
                    )
            elif node.name in ("application", "app"):
                if isinstance(node, ast.AsyncFunctionDef) and len(params) == 3:
                    found.append(
                        AppCandidate(f"{module}:{node.name}", "asgi", source, "ASGI", path)
                    )
                elif isinstance(node, ast.FunctionDef) and len(params) == 2:
                    found.append(
                        AppCandidate(f"{module}:{node.name}", "wsgi", source, "WSGI", path)
                    )
    return found


def _reexported(root: Path, candidate: AppCandidate) -> AppCandidate:
    """``pkg:app`` for ``pkg.core:app`` when pkg/__init__.py imports it from .core."""
    module, _, attribute = candidate.target.partition(":")
    if "." not in module or attribute.endswith("()"):
        return candidate
    package, _, leaf = module.rpartition(".")
    init = candidate.path.parent / "__init__.py"
    tree = parse(init) if init.is_file() else None
    if tree is None:
        return candidate
    for node in tree.body:
        if not isinstance(node, ast.ImportFrom):
            continue
        relative = node.level == 1 and node.module == leaf
        absolute = node.level == 0 and node.module == module
        if (relative or absolute) and any(a.name in ("*", attribute) for a in node.names):
            return AppCandidate(
                f"{package}:{attribute}",
                candidate.kind,
                f"{candidate.source}, re-exported by {package}/__init__.py",
                candidate.framework,
                candidate.path,
            )
    return candidate


def rank(candidate: AppCandidate) -> tuple[int, int, int, str]:
    module = candidate.target.partition(":")[0]
    leaf = module.rsplit(".", 1)[-1]
    usual = USUAL_MODULES.index(leaf) if leaf in USUAL_MODULES else len(USUAL_MODULES)
    # An object beats a factory beats a bare callable; a shallow module a deep one.
    if candidate.target.endswith("()"):
        shape = 1
    elif candidate.framework in ("WSGI", "ASGI"):
        shape = 2
    else:
        shape = 0
    return (shape, module.count("."), usual, candidate.target)


def find_apps(
    root: Path, files: Iterable[Path], *, shown_root: Path | None = None
) -> list[AppCandidate]:
    """Every app candidate in ``files`` (paths under ``root``), best first."""
    found: list[AppCandidate] = []
    for path in files:
        module = module_name(root, path)
        tree = parse(path) if module else None
        if tree is None or module is None:
            continue
        source = str(path.relative_to(shown_root or root))
        found.extend(_reexported(root, c) for c in app_candidates(tree, module, source, path))
    unique = {c.target: c for c in found}
    return sorted(unique.values(), key=rank)


# --- Django --------------------------------------------------------------------------------


def _string(node: ast.expr | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def django_settings_module(root: Path) -> Found | None:
    """DJANGO_SETTINGS_MODULE as manage.py sets it (``os.environ.setdefault(...)``)."""
    manage = root / "manage.py"
    tree = parse(manage) if manage.is_file() else None
    if tree is None:
        return None
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and _call_name(node.func)[1] == "setdefault"
            and len(node.args) == 2
            and _string(node.args[0]) == "DJANGO_SETTINGS_MODULE"
        ):
            value = _string(node.args[1])
            if value:
                return Found(value, "manage.py")
    return None


def module_file(root: Path, module: str) -> Path | None:
    """The file of ``module`` under ``root`` (or root/src), if it is there."""
    for base in (root, root / "src"):
        stem = base.joinpath(*module.split("."))
        for path in (stem.with_suffix(".py"), stem / "__init__.py"):
            if path.is_file():
                return path
    return None


def django_app(root: Path, settings: Found, server: str | None) -> AppCandidate | None:
    """The settings' ``WSGI_APPLICATION`` as module:attr, else ``PKG.wsgi:application``.

    For uvicorn: ``ASGI_APPLICATION``, else ``PKG.asgi:application`` (startproject's
    settings name no ASGI_APPLICATION, but write asgi.py beside wsgi.py).
    """
    path = module_file(root, settings.value)
    tree = parse(path) if path else None
    if tree is None or path is None:
        return None
    kind = "asgi" if server == "uvicorn" else "wsgi"
    key = f"{kind.upper()}_APPLICATION"
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], _string(node.value)
            if isinstance(target, ast.Name) and target.id == key and value and "." in value:
                module, _, attribute = value.rpartition(".")
                source = f"{path.relative_to(root)}: {key}"
                return AppCandidate(f"{module}:{attribute}", kind, source, "Django", path)
    package = settings.value.rpartition(".")[0]
    module = f"{package}.{kind}" if package else kind
    file = module_file(root, module)
    if file is None:
        return None
    return AppCandidate(f"{module}:application", kind, str(file.relative_to(root)), "Django", file)


# --- routes --------------------------------------------------------------------------------


def literal_routes(tree: ast.Module) -> set[str]:
    """Literal route paths the module declares, as URLs (``path("health/")`` -> /health/)."""
    routes: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        name = _call_name(node.func)[1]
        first = _string(node.args[0])
        if first is None:
            continue
        if name in ROUTE_METHODS and first.startswith("/"):
            routes.add(first)
        elif name in DJANGO_ROUTES:
            text = first.removeprefix("^").removesuffix("$")
            if re.fullmatch(r"[A-Za-z0-9_./-]*", text):
                routes.add("/" + text.lstrip("/"))
    return routes


def find_route(routes: set[str], wanted: tuple[str, ...]) -> str | None:
    for route in wanted:
        for form in (route, route + "/"):
            if form in routes:
                return form
    return None
