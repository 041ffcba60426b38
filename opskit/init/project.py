"""``opskit init``: add a starter [tool.opskit] table to an existing pyproject.toml."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opskit.errors import ConflictError, UsageError
from opskit.init.detect import SERVERS, detect
from opskit.write import atomic_write

#: Where a project cannot be served from as it is: DynamicUser= implies PrivateTmp=, and
#: ProtectHome= hides /home and /root (docs/hardening.md).
HIDDEN_PREFIXES = ("/tmp/", "/var/tmp/", "/home/", "/root/", "/run/user/")

# Said when no route was found: a guessed path would make probes fail on an app that
# serves fine.
PATHS_COMMENT = (
    'No health or version route found in the code (unset: "/" is probed, and the reload',
    "script proves new code by its processes, not by a version). If the app has them:",
    'health-path = "/health"',
    'version-path = "/version"',
)


@dataclass(frozen=True)
class Starter:
    """The table init writes, the comments under it, and what it says on stderr."""

    values: dict[str, Any]
    comments: tuple[str, ...]
    #: ``(label, text)``: "found" (and where), "default" (nothing found), "note", "warning".
    lines: tuple[tuple[str, str], ...]


def detect_server(dependencies: list[str]) -> str | None:
    """The first server named among requirement strings, or None."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    names = set()
    for dep in dependencies:
        try:
            names.add(canonicalize_name(Requirement(dep).name))
        except InvalidRequirement:
            continue
    return next((s for s in SERVERS if s in names), None)


def _hidden(path: str) -> bool:
    return any(f"{path.rstrip('/')}/".startswith(p) for p in HIDDEN_PREFIXES)


def starter(
    directory: Path, project: dict[str, Any], environ: dict[str, str] | None = None
) -> Starter:
    """Read the project in ``directory`` and build the starter table from what was found."""
    found = detect(directory, project, environ)
    d = found
    values: dict[str, Any] = {"name": d.name.value}
    comments: list[str] = []
    lines = [("found", f"name = {d.name.value}  ({d.name.source})")]
    assert d.server is not None
    values["server"] = d.server.value
    lines.append(("found", f"server = {d.server.value}  ({d.server.source})"))
    if d.app is not None:
        values["app"] = d.app.target
        lines.append(("found", f"app = {d.app.target}  ({d.app.framework} app, {d.app.source})"))
    else:
        comments.append('No app found in the code: set app = "module:callable" (or command).')
        comments.append('app = "module:callable"')
        lines.append(("warning", 'no app found in the code: set app = "module:callable"'))
    values.update({"host": "127.0.0.1", "port": 8000, "workers": 2})
    project_dir = str(directory.absolute())
    if _hidden(project_dir):
        workdir = f"/srv/{d.name.value}"
        top = "/" + project_dir.split("/")[1]
        lines.append(
            (
                "default",
                f"working-directory = {workdir}  (the hardened unit cannot see {top}: "
                "deploy the project there)",
            )
        )
    else:
        workdir = project_dir
        lines.append(("found", f"working-directory = {workdir}  (this directory)"))
    values["working-directory"] = workdir
    if d.venv is not None:
        venv = d.venv.value
        inside = venv.startswith(project_dir.rstrip("/") + "/")
        if inside and workdir != project_dir:
            venv = workdir + venv[len(project_dir) :]
        if venv != f"{workdir}/.venv":
            values["venv"] = venv
        lines.append(("found", f"venv = {venv}  ({d.venv.source})"))
        if _hidden(venv):
            lines.append(("warning", f"the hardened unit cannot see the venv {venv}"))
    else:
        lines.append(
            ("default", f"venv = {workdir}/.venv  (none found: .venv, venv, $VIRTUAL_ENV)")
        )
    for key, route in (("health-path", d.health_path), ("version-path", d.version_path)):
        if route is not None:
            values[key] = route.value
            lines.append(("found", f"{key} = {route.value}  (a route in {route.source})"))
    if d.health_path is None and d.version_path is None:
        comments.extend(PATHS_COMMENT)
    if d.django_settings is not None:
        settings = d.django_settings.value
        package = settings.rpartition(".")[0] or "."
        lines.append(
            (
                "note",
                f"Django settings {settings} ({d.django_settings.source}): for each django.* "
                f"record once, opskit logging init -o {package}/ writes LOGGING for them",
            )
        )
    lines.extend(("note", line) for line in _network_lines(d.dependencies))
    lines.extend(("note", line) for line in d.notes)
    return Starter(values, tuple(comments), tuple(lines))


def _network_lines(names: frozenset[str]) -> list[str]:
    from opskit.systemd.dependencies import DEPENDENCIES
    from opskit.systemd.endpoints import KIND_NAMES

    clients = sorted(n for n in names if DEPENDENCIES.get(n) not in (None, "http", "cloud"))
    if not clients:
        return []
    kinds = sorted({KIND_NAMES[DEPENDENCIES[n]] for n in clients})
    return [
        f"network: {', '.join(clients)} ({', '.join(kinds)}): give the URL in environment "
        "(DATABASE_URL = ...) so opskit systemd allows it, or use its unix socket"
    ]


def _read_document(path: Path) -> Any:
    import tomlkit
    from tomlkit.exceptions import TOMLKitError

    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not valid TOML: not UTF-8") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        return tomlkit.parse(text)
    except TOMLKitError as exc:
        raise UsageError(f"{path}: not valid TOML: {exc}") from None


def _fill(table: Any, start: Starter) -> None:
    import tomlkit

    for key, value in start.values.items():
        table.add(key, value)
    for line in start.comments:
        table.add(tomlkit.comment(line))


def init_project(
    directory: Path, *, force: bool, environ: dict[str, str] | None = None
) -> tuple[Path, str, tuple[tuple[str, str], ...]]:
    """Write the starter table where the config lives; return the file, the action, the findings.

    The table goes into opskit.toml if it exists, else into pyproject.toml, else into a new
    opskit.toml (a Django project has no pyproject.toml). The action is "create" or
    "overwrite".
    """
    import tomlkit

    if not directory.is_dir():
        raise UsageError(f"{directory}: not a directory")
    own = directory / "opskit.toml"
    pyproject = directory / "pyproject.toml"
    if own.exists() or not pyproject.exists():
        return _init_opskit_toml(own, force=force, environ=environ)
    doc = _read_document(pyproject)
    tool = doc.get("tool")
    if tool is not None and not isinstance(tool, dict):
        raise UsageError(f"{pyproject}: 'tool' must be a table")
    project = doc.get("project") or {}
    if not isinstance(project, dict):
        raise UsageError(f"{pyproject}: 'project' must be a table")
    action = "create"
    if tool is not None and "opskit" in tool:
        if not force:
            raise ConflictError(
                f"{pyproject}: already has [tool.opskit]; not replaced (use --force)"
            )
        action = "overwrite"
    start = starter(directory, dict(project), environ)
    table = tomlkit.table()
    table.comment("opskit's app spec: docs/configuration.md lists every key")
    _fill(table, start)
    if tool is None:
        tool = tomlkit.table(is_super_table=True)
        doc.add("tool", tool)
    tool["opskit"] = table
    _write(pyproject, tomlkit.dumps(doc))
    return pyproject, action, start.lines


def _init_opskit_toml(
    path: Path, *, force: bool, environ: dict[str, str] | None
) -> tuple[Path, str, tuple[tuple[str, str], ...]]:
    import tomlkit

    action = "create"
    if path.exists():
        if not force:
            raise ConflictError(f"{path}: already exists; not replaced (use --force)")
        _read_document(path)  # an unreadable file is reported, not silently replaced
        action = "overwrite"
    start = starter(path.parent, {}, environ)
    doc = tomlkit.document()
    doc.add(tomlkit.comment("opskit's app spec: docs/configuration.md lists every key"))
    _fill(doc, start)
    _write(path, tomlkit.dumps(doc), mode=None if action == "create" else path.stat().st_mode)
    return path, action, start.lines


def _write(path: Path, text: str, mode: int | None = -1) -> None:
    if mode == -1:
        mode = path.stat().st_mode
    try:
        atomic_write(path, text, (mode if mode is not None else 0o644) & 0o777)
    except OSError as exc:
        raise UsageError(f"{path}: cannot write: {exc.strerror}") from None
