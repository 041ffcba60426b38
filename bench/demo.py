"""`make demo`: bundle every artifact of the example app into build/demo and validate them."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from opskit.cli import run

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "opskit" / "example"


def check(
    label: str, argv: list[str], env: dict[str, str] | None = None, *, quiet: bool = True
) -> bool:
    """Run one validator; ok means exit 0 and, if ``quiet``, nothing on stderr.

    systemd-analyze verify exits 0 on warnings, which it prints on stderr.
    """
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, env=env)
    ok = proc.returncode == 0 and not (quiet and proc.stderr.strip())
    detail = "" if ok else f"\n{proc.stdout}{proc.stderr}".rstrip()
    print(f"{'ok' if ok else 'FAILED':<10} {label}{detail}")
    return ok


def skipped(label: str, tool: str) -> None:
    print(f"{'skipped':<10} {label} ({tool} is not installed)")


def validate(out: Path) -> bool:
    """Check each artifact with the tool that will read it."""
    ok = True
    analyze = shutil.which("systemd-analyze")
    for unit in sorted([*out.glob("*.service"), *out.glob("*.socket")]):
        label = f"systemd-analyze verify {unit.name}"
        if analyze:
            ok &= check(label, [analyze, "verify", "--man=no", str(unit)])
        else:
            skipped(label, "systemd-analyze")
    # The logging config must load in a fresh interpreter, with the helper modules beside
    # it importable (the unit puts that directory on PYTHONPATH).
    loaders = {
        ".json": "import json, logging.config, sys; "
        "logging.config.dictConfig(json.load(open(sys.argv[1])))",
        ".yaml": "import yaml, logging.config, sys; "
        "logging.config.dictConfig(yaml.safe_load(open(sys.argv[1])))",
    }
    env = {**os.environ, "PYTHONPATH": str(out)}
    for config in sorted(p for p in out.iterdir() if p.suffix in loaders and "logging" in p.name):
        argv = [sys.executable, "-c", loaders[config.suffix], str(config)]
        ok &= check(f"logging config {config.name} loads", argv, env)
    shellcheck = shutil.which("shellcheck")
    for script in sorted(out.glob("*.sh")):
        # Parse it with the shell it names (the reload script uses bash arrays).
        first = script.read_text(encoding="utf-8").splitlines()[0]
        shell = first.removeprefix("#!").split()[0] if first.startswith("#!") else "sh"
        ok &= check(f"{Path(shell).name} -n {script.name}", [shell, "-n", str(script)])
        if shellcheck:
            ok &= check(f"shellcheck {script.name}", [shellcheck, str(script)])
        else:
            skipped(f"shellcheck {script.name}", "shellcheck")
    make = shutil.which("make")
    label = "make -f ops.mk ops-check (drift, verify, security)"
    if make and analyze:
        opskit = f"OPSKIT={shlex.quote(sys.executable)} -m opskit"
        # opskit reports each file on stderr: here only the exit status counts.
        argv = [make, "-s", "-f", str(out / "ops.mk"), "ops-check", opskit]
        ok &= check(label, argv, quiet=False)
    else:
        skipped(label, "make or systemd-analyze")
    return ok


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "build/demo").resolve()
    app_dir = out / "app"
    app_dir.mkdir(parents=True, exist_ok=True)
    for name in ("demoapp.py", "VERSION", "pyproject.toml"):
        shutil.copy2(EXAMPLE / name, app_dir / name)
    # The units run the app from this copy with the servers of the environment running
    # this script, so systemd-analyze verify finds every executable they name.
    argv = [
        "bundle",
        "demoapp",
        "--config",
        str(app_dir / "pyproject.toml"),
        "--workdir",
        str(app_dir),
        "--venv",
        sys.prefix,
        "--output",
        str(out),
        "--force",
    ]
    print("$ opskit " + shlex.join(argv), flush=True)
    code = run(argv)
    sys.stderr.flush()
    if code != 0:
        return code
    print()
    ok = validate(out)
    print(f"\nThe demo's artifacts are in {out}:")
    for path in sorted(p for p in out.iterdir() if p.is_file()):
        print(f"  {path.name}")
    print(f"  app/  (the example app: {', '.join(sorted(p.name for p in app_dir.iterdir()))})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
