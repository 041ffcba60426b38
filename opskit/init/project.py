"""``opskit init``: add a starter [tool.opskit] table to an existing pyproject.toml."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from opskit.errors import ConflictError, UsageError
from opskit.write import atomic_write

_SERVERS = ("gunicorn", "uvicorn", "uwsgi")

# Most apps have neither route, and a guessed path would make probes fail on an app that
# serves fine: the starter table only says how to add them.
PATHS_COMMENT = (
    'The app\'s health and version routes, if it has them (unset: "/" is probed, and',
    "the reload script proves new code by its processes, not by a version):",
    'health-path = "/health"',
    'version-path = "/version"',
)


def detect_server(dependencies: list[str]) -> str | None:
    """The first server named among the project's dependencies, or None."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    names = set()
    for dep in dependencies:
        try:
            names.add(canonicalize_name(Requirement(dep).name))
        except InvalidRequirement:
            continue
    return next((s for s in _SERVERS if s in names), None)


def starter_table(project: dict[str, Any]) -> dict[str, Any]:
    """The starter settings for a project: its name, detected server and a guessed app path."""
    raw_name = str(project.get("name") or "app")
    # A unit name starts with a letter or digit; a module name not with a digit.
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", raw_name).strip("-._") or "app"
    module = re.sub(r"[^A-Za-z0-9_]", "_", raw_name.lower()).strip("_") or "app"
    if module[0].isdigit():
        module = f"_{module}"
    deps = [str(d) for d in project.get("dependencies", [])]
    server = detect_server(deps) or "gunicorn"
    app = f"{module}.asgi:app" if server == "uvicorn" else f"{module}.wsgi:app"
    return {
        "name": name,
        "server": server,
        "app": app,
        "host": "127.0.0.1",
        "port": 8000,
        "workers": 2,
        "working-directory": f"/srv/{name}",
    }


def init_pyproject(directory: Path, *, force: bool) -> tuple[Path, str]:
    """Add [tool.opskit] to DIRECTORY/pyproject.toml without disturbing the rest of the file."""
    import tomlkit
    from tomlkit.exceptions import TOMLKitError

    path = directory / "pyproject.toml"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(
            f"{path}: not found (opskit init edits an existing pyproject.toml)"
        ) from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not valid TOML: not UTF-8") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        doc = tomlkit.parse(text)
    except TOMLKitError as exc:
        raise UsageError(f"{path}: not valid TOML: {exc}") from None
    tool = doc.get("tool")
    if tool is not None and not isinstance(tool, dict):
        raise UsageError(f"{path}: 'tool' must be a table")
    project = doc.get("project") or {}
    if not isinstance(project, dict):
        raise UsageError(f"{path}: 'project' must be a table")
    action = "create"
    if tool is not None and "opskit" in tool:
        if not force:
            raise ConflictError(f"{path}: already has [tool.opskit]; not replaced (use --force)")
        action = "overwrite"
    table = tomlkit.table()
    table.comment("opskit's app spec: docs/configuration.md lists every key")
    for key, value in starter_table(dict(project)).items():
        table.add(key, value)
    for line in PATHS_COMMENT:
        table.add(tomlkit.comment(line))
    if tool is None:
        tool = tomlkit.table(is_super_table=True)
        doc.add("tool", tool)
    tool["opskit"] = table
    try:
        atomic_write(path, tomlkit.dumps(doc), path.stat().st_mode & 0o777)
    except OSError as exc:
        raise UsageError(f"{path}: cannot write: {exc.strerror}") from None
    return path, action
