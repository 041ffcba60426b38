"""The target interpreter as pip sees it: where it installs, which distributions it has."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from opskit.errors import UsageError
from opskit.proc import Runner

# Runs inside the target interpreter: where it installs, and which requested distributions
# it has, the first on sys.path winning as for an import. The .dist-info directory names
# carry name and version (the wheel spec normalises both), so no METADATA is parsed and
# importlib.metadata, which would double this script's start-up, is not imported.
_INSPECT = """\
import json, os, sys, sysconfig
want = set(json.loads(sys.argv[1])) | {"pip"}
found = {}
for entry in sys.path:
    entry = os.path.abspath(entry or ".")
    try:
        listing = sorted(os.listdir(entry))
    except OSError:
        continue
    for item in listing:
        if item.endswith(".dist-info"):
            stem = item[:-10]
        elif item.endswith(".egg-info"):
            stem = item[:-9]
        else:
            continue
        raw, sep, rest = stem.partition("-")
        name = "-".join(filter(None, raw.lower().replace("_", "-").replace(".", "-").split("-")))
        if sep and name in want and name not in found:
            found[name] = {"version": rest.split("-")[0], "path": os.path.join(entry, item)}
paths = sysconfig.get_paths()
print(json.dumps({
    "prefix": sys.prefix,
    "base_prefix": getattr(sys, "base_prefix", sys.prefix),
    "version": "%d.%d.%d" % sys.version_info[:3],
    "scripts": paths["scripts"],
    "purelib": paths["purelib"],
    "platlib": paths["platlib"],
    "installed": found,
}))
"""


@dataclass(frozen=True)
class Distribution:
    """One installed distribution: its version and its .dist-info directory."""

    name: str
    version: str
    dist_info: str


@dataclass(frozen=True)
class Environment:
    """The target interpreter as pip sees it, and the requested packages installed in it."""

    python: str
    prefix: str
    base_prefix: str
    version: str
    scripts: str
    purelib: str
    platlib: str
    has_pip: bool
    installed: Mapping[str, Distribution]

    @property
    def is_venv(self) -> bool:
        """Whether the interpreter runs in a virtual environment."""
        return self.prefix != self.base_prefix


#: Seconds the inspection may take: an interpreter answers in well under one; a
#: --python that never exits must not hang opskit.
INSPECT_TIMEOUT = 30.0


def read_environment(python: str, names: Sequence[str], *, runner: Runner) -> Environment:
    """Ask the target interpreter where it installs and which of ``names`` it has.

    Isolated (-I): ``python -c`` would put the current directory first on sys.path, and
    a .dist-info there would be taken for an installed distribution. Nor do PYTHONPATH
    or the user's site-packages belong to the environment pip installs into.
    """
    result = runner(
        [python, "-I", "-c", _INSPECT, json.dumps(sorted(names))], timeout=INSPECT_TIMEOUT
    )
    if result.timed_out:
        raise UsageError(f"{python}: did not answer within {INSPECT_TIMEOUT:g} s; is it Python?")
    wanted = set(names)
    try:
        data = json.loads(result.stdout) if result.ok else {}
        installed = {
            name: Distribution(name, str(item["version"]), str(item["path"]))
            for name, item in data["installed"].items()
            if name in wanted
        }
        return Environment(
            python=python,
            prefix=str(data["prefix"]),
            base_prefix=str(data["base_prefix"]),
            version=str(data["version"]),
            scripts=str(data["scripts"]),
            purelib=str(data["purelib"]),
            platlib=str(data["platlib"]),
            has_pip="pip" in data["installed"],
            installed=installed,
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        raise UsageError(f"{python}: not a working Python interpreter ({result.tail()})") from None


def installed_versions(env: Environment, names: Sequence[str]) -> dict[str, str | None]:
    """The version of each name in ``env`` (None when absent)."""
    return {n: (env.installed[n].version if n in env.installed else None) for n in names}
