"""Doctor's checks of the project's own code: ``__del__`` methods, threads started at import."""

from __future__ import annotations

import ast
import configparser
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from opskit.doctor.findings import Finding, Severity, evidence_path
from opskit.doctor.units import exec_start, is_server

if TYPE_CHECKING:
    from opskit.doctor.checks import Context

# Directories that hold other people's code or build output, never the project's own.
_SKIP_DIRS = {
    ".git",
    ".hg",
    ".venv",
    "venv",
    "env",
    "node_modules",
    "site-packages",
    "build",
    "dist",
    "__pycache__",
    ".tox",
    ".nox",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
}


def python_files(project: Path) -> list[Path]:
    """The project's own .py files, skipping virtual environments and build output."""
    out: list[Path] = []
    for root, dirs, files in os.walk(project):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
        out.extend(Path(root) / f for f in sorted(files) if f.endswith(".py"))
    return out


def newest_source(project: Path) -> tuple[Path, float] | None:
    """The most recently modified source file of the project and its mtime."""
    newest: tuple[Path, float] | None = None
    for path in python_files(project):
        try:
            mtime = path.stat().st_mtime
        except OSError:
            continue
        if newest is None or mtime > newest[1]:
            newest = (path, mtime)
    return newest


def module_file(module: str, roots: Iterable[Path]) -> Path | None:
    """The file of an importable module ("pkg.mod" or "pkg.mod:app") under one of ``roots``."""
    name = module.split(":", 1)[0].strip()
    if not name:
        return None
    parts = name.split(".")
    for root in roots:
        for candidate in (
            root.joinpath(*parts).with_suffix(".py"),
            root.joinpath(*parts, "__init__.py"),
        ):
            if candidate.is_file():
                return candidate
    return None


def _parse(path: Path) -> ast.Module | None:
    try:
        return ast.parse(path.read_bytes(), filename=str(path))
    except (OSError, SyntaxError, ValueError):
        return None


def check_del_methods(ctx: Context) -> list[Finding]:
    """Classes in the project's code that define ``__del__``."""
    findings = []
    for path in python_files(ctx.project):
        tree = _parse(path)
        if tree is None:
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.ClassDef):
                continue
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and (
                    item.name == "__del__"
                ):
                    findings.append(
                        Finding(
                            Severity.WARNING,
                            "del-method",
                            f"class {node.name} defines __del__",
                            f"{evidence_path(path, ctx.project)}:{item.lineno}: def __del__",
                            "release resources explicitly (close(), a context manager) or with "
                            "weakref.finalize: __del__ runs only when the object is collected, "
                            "which for an object in a reference cycle waits for the cyclic "
                            "collector, and its exceptions are only printed, so sockets, files "
                            "and memory leak in a long-running worker",
                        )
                    )
    return findings


# Calls that start a thread (or a pool of them) when executed.
_THREAD_CALLS = {"Thread", "Timer", "start_new_thread", "ThreadPoolExecutor", "BackgroundScheduler"}


def _call_name(node: ast.Call) -> str | None:
    func = node.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def import_time_threads(path: Path) -> list[int]:
    """Line numbers where module-level code (run at import) creates a thread."""
    tree = _parse(path)
    if tree is None:
        return []
    lines: list[int] = []
    pending: list[ast.AST] = list(tree.body)
    while pending:
        node = pending.pop()
        # Code in a function or class body runs later, not at import.
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            continue
        if isinstance(node, ast.Call) and _call_name(node) in _THREAD_CALLS:
            lines.append(node.lineno)
        pending.extend(ast.iter_child_nodes(node))
    return sorted(lines)


def _uwsgi_ini_modules(project: Path) -> list[tuple[str, str]]:
    """(where, module) for each uWSGI ini in the project that loads an app without lazy-apps."""
    out = []
    for ini in sorted(project.glob("**/*.ini")):
        if any(part in _SKIP_DIRS for part in ini.relative_to(project).parts):
            continue
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        try:
            parser.read_string(ini.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, configparser.Error):
            continue
        if not parser.has_section("uwsgi"):
            continue
        section = parser["uwsgi"]
        lazy = (section.get("lazy-apps") or section.get("lazy") or "").strip().lower()
        if lazy in ("true", "1", "yes", "on"):
            continue
        module = section.get("module") or section.get("wsgi") or section.get("wsgi-file")
        if module:
            out.append((evidence_path(ini, project), module.strip()))
    return out


def check_uwsgi_threads(ctx: Context) -> list[Finding]:
    """Find uWSGI loading an app without lazy-apps while that app starts threads at import.

    The uWSGI configurations looked at: the project's ini files, the spec, and the
    command line of each unit file.
    """
    spec, project = ctx.spec, ctx.project
    sources: list[tuple[str, str]] = _uwsgi_ini_modules(project)
    if spec.server == "uwsgi" and not spec.lazy_apps and spec.app:
        sources.append(("the app spec (lazy-apps = false)", spec.app))
    for unit in ctx.unit_files:
        argv = exec_start(unit.text) if unit.text is not None else None
        if argv is not None and is_server(argv, "uwsgi") and "--lazy-apps" not in argv:
            for flag in ("--module", "--wsgi", "--wsgi-file"):
                if flag in argv[:-1]:
                    sources.append((unit.where, argv[argv.index(flag) + 1]))
    findings = []
    seen: set[tuple[str, str]] = set()
    roots = [project, Path(spec.working_directory)]
    for where, module in sources:
        file = Path(module) if module.endswith(".py") else module_file(module, roots)
        if file is None or not file.is_file() or (where, str(file)) in seen:
            continue
        seen.add((where, str(file)))
        lines = import_time_threads(file)
        if lines:
            findings.append(
                Finding(
                    Severity.ERROR,
                    "uwsgi-lazy-apps",
                    "uWSGI loads the app once and forks, but the app starts threads at import",
                    f"{where} has no lazy-apps; {evidence_path(file, project)} line "
                    f"{', '.join(map(str, lines))} starts a thread at import",
                    "set lazy-apps = true (opskit: lazy-apps = true in the spec): threads do "
                    "not survive fork, and a lock held at fork time deadlocks the workers",
                )
            )
    return findings
