"""Read the app spec from ``[tool.opskit]`` (pyproject.toml) or opskit.toml, then overrides."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from opskit.errors import SpecError, UsageError
from opskit.spec import AppSpec, build_spec

CONFIG_NAMES = ("opskit.toml", "pyproject.toml")


def toml_module() -> Any:
    """The TOML parser, imported when a file or a --set value is read (not at start-up)."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised only on 3.10
        import tomli as tomllib
    return tomllib


def _snake(table: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    spelt: dict[str, str] = {}
    for key, value in table.items():
        name = key.replace("-", "_")
        if name in spelt:
            # working_directory and working-directory are one key: which one wins would
            # depend on their order in the file.
            raise SpecError(f"{where}{spelt[name]!r} and {key!r} are the same key: keep one")
        spelt[name] = key
        if name in ("environment", "loggers"):
            # Their keys are variable and logger names, which keep their spelling.
            out[name] = value
        elif isinstance(value, Mapping):
            out[name] = _snake(value, f"{where}{key}: ")
        else:
            out[name] = value
    return out


def find_config(start: Path) -> Path | None:
    """Return opskit.toml, or a pyproject.toml with a [tool.opskit] table, in ``start``.

    A pyproject.toml whose [tool] table has a name close to "opskit" ([tool.opskt]) is
    a typo, not a missing config: say so rather than carry on with no settings at all.
    """
    for name in CONFIG_NAMES:
        path = start / name
        if path.is_file():
            tools = _tool_table(path, _read_toml(path))
            if name == "pyproject.toml" and "opskit" not in tools:
                _refuse_a_misspelt_table(path, tools)
                continue
            return path
    return None


def _refuse_a_misspelt_table(path: Path, tools: object) -> None:
    import difflib

    if not isinstance(tools, Mapping):
        return
    close = difflib.get_close_matches("opskit", [str(k) for k in tools], n=1, cutoff=0.7)
    if close:
        raise UsageError(
            f"{path.name}: has [tool.{close[0]}] but no [tool.opskit]: a typo? "
            "(rename the table, or give the settings as flags)"
        )


#: The deepest nesting of tables and arrays read from TOML. No spec key is nested more
#: than two levels; past Python's recursion limit the parser would raise RecursionError.
MAX_DEPTH = 32


def _depth(value: Any) -> int:
    """How deeply tables and arrays nest in ``value``, without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, Mapping):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, level + 1)
            if deepest > MAX_DEPTH:
                break
            stack.extend((child, level + 1) for child in item)
    return deepest


def load_toml(text: str, what: str) -> dict[str, Any]:
    """Parse TOML text, refusing what no spec holds: a nesting deeper than MAX_DEPTH."""
    try:
        data: dict[str, Any] = toml_module().loads(text)
    except RecursionError:
        raise UsageError(f"{what}: nested more than {MAX_DEPTH} levels deep") from None
    if _depth(data) > MAX_DEPTH:
        raise UsageError(f"{what}: nested more than {MAX_DEPTH} levels deep")
    return data


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return load_toml(path.read_text(encoding="utf-8"), path.name)
    except OSError as exc:
        raise UsageError(f"{path.name}: cannot read: {exc.strerror}") from None
    except (toml_module().TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path.name}: not valid TOML: {exc}") from None


def _tool_table(path: Path, data: Mapping[str, Any]) -> Mapping[str, Any]:
    tools = data.get("tool", {})
    if not isinstance(tools, Mapping):
        raise UsageError(f"{path.name}: 'tool' must be a table ([tool.opskit]), got {tools!r}")
    return tools


def read_config(path: Path) -> dict[str, Any]:
    """Return the opskit table of ``path`` with snake_case keys."""
    data = _read_toml(path)
    table: Any = data
    if path.name == "pyproject.toml" or "tool" in data:
        # opskit.toml holds the keys at its top, or (copied from a pyproject.toml) in
        # [tool.opskit]; a "tool" that is not a table is an error either way.
        tools = _tool_table(path, data)
        if path.name == "pyproject.toml" or "opskit" in tools:
            table = tools.get("opskit")
    if table is None:
        raise UsageError(f"{path.name}: has no [tool.opskit] table (run 'opskit init')")
    if not isinstance(table, Mapping):
        raise UsageError(f"{path.name}: [tool.opskit] must be a table")
    return _snake(table, f"{path.name}: ")


def load_spec(
    overrides: Mapping[str, Any],
    *,
    config: Path | None = None,
    directory: Path | None = None,
) -> AppSpec:
    """Build the one validated spec: the config file (explicit or found) under the overrides.

    Overrides whose value is None were not given and leave the file's value alone;
    ``hardening`` overrides merge key by key into the file's hardening table.
    """
    raw, source = merged_raw(overrides, config=config, directory=directory)
    try:
        return build_spec(raw)
    except SpecError as exc:
        # Name the file only when the bad value came from it, not from a flag.
        where = f"{source.name}: " if source is not None and not _overridden(exc, overrides) else ""
        found = ""
        if source is None and str(exc).startswith(("name: missing", "app: required")):
            # The usual cause: the command ran outside the project, or before opskit init.
            found = f"; no opskit.toml or [tool.opskit] in {directory or Path.cwd()}"
        raise SpecError(f"{where}{exc}{found}") from None


def merged_raw(
    overrides: Mapping[str, Any],
    *,
    config: Path | None = None,
    directory: Path | None = None,
) -> tuple[dict[str, Any], Path | None]:
    """The config file's table under the overrides, not yet validated, and the file."""
    raw: dict[str, Any] = {}
    source = config if config is not None else find_config(directory or Path.cwd())
    if config is not None and not config.is_file():
        raise UsageError(f"--config: no such file: {config}")
    if source is not None:
        raw = read_config(source)
    for key, value in overrides.items():
        if value is None:
            continue
        if key == "hardening" and isinstance(value, Mapping):
            base = raw.get("hardening", {})
            if not isinstance(base, Mapping):
                raise SpecError(f"hardening: expected a table, got {base!r}")
            merged = dict(base)
            merged.update({k: v for k, v in value.items() if v is not None})
            raw["hardening"] = merged
        elif key == "environment" and isinstance(raw.get("environment"), Mapping):
            # --env A=1 (a list) and --set environment.A=1 (a table) both add to the file's
            # table variable by variable instead of replacing it.
            merged_env = dict(raw["environment"])
            if isinstance(value, Mapping):
                merged_env.update(value)
            elif isinstance(value, (list, tuple)):
                for item in value:
                    if not isinstance(item, str) or "=" not in item:
                        raise SpecError(f"environment: expected NAME=VALUE, got {item!r}")
                    name, _, val = item.partition("=")
                    merged_env[name] = val
            else:
                raise SpecError(f"environment: expected a table of NAME = VALUE, got {value!r}")
            raw["environment"] = merged_env
        else:
            raw[key] = value
    return raw, source


def _overridden(exc: SpecError, overrides: Mapping[str, Any]) -> bool:
    """Whether the field a SpecError names ("log-level: ...") was given on the command line."""
    field = str(exc).split(":", 1)[0]
    top, _, sub = field.partition(".")
    top = top.split("[", 1)[0].replace("-", "_")
    value = overrides.get(top)
    if isinstance(value, Mapping) and sub:
        return value.get(sub.split("[", 1)[0].replace("-", "_")) is not None
    return value is not None


def parse_assignment(item: str) -> tuple[str, Any]:
    """Parse ``--set key=value``: the value as TOML (true, 3, ["a"]), else as a plain string."""
    key, sep, text = item.partition("=")
    table, dot, sub = key.strip().partition(".")
    table = table.replace("-", "_")
    # Variable and logger names keep their spelling (--set loggers.my-lib=DEBUG).
    if table not in ("environment", "loggers"):
        sub = sub.replace("-", "_")
    key = f"{table}{dot}{sub}"
    if not sep or not table:
        raise UsageError(f"--set: expected KEY=VALUE, got {item!r}")
    try:
        value = load_toml(f"v = {text}", f"--set {key}")["v"]
    except toml_module().TOMLDecodeError:
        value = text
    return key, value
