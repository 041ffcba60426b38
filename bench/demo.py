"""`make demo`: generate the artifacts for the bundled example app and validate them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from opskit.cli import run

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "opskit" / "example"


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "build/demo").resolve()
    app_dir = out / "app"
    app_dir.mkdir(parents=True, exist_ok=True)
    for name in ("demoapp.py", "VERSION", "pyproject.toml"):
        shutil.copy2(EXAMPLE / name, app_dir / name)
    venv = Path(sys.prefix)
    common = [
        "--config",
        str(app_dir / "pyproject.toml"),
        "--workdir",
        str(app_dir),
        "--venv",
        str(venv),
        "--force",
    ]
    steps = [
        ["systemd", "demoapp", *common, "-o", str(out / "systemd")],
        ["systemd", "demoapp", *common, "--socket", "-o", str(out / "systemd-socket")],
    ]
    for argv in steps:
        code = run(argv)
        if code != 0:
            return code
    analyze = shutil.which("systemd-analyze")
    failed = False
    if analyze:
        for unit in sorted(out.glob("systemd*/*.service")):
            proc = subprocess.run(
                [analyze, "verify", "--man=no", str(unit)],
                capture_output=True,
                text=True,
                check=False,
            )
            verdict = "ok" if proc.returncode == 0 and not proc.stderr.strip() else "FAILED"
            failed |= verdict != "ok"
            print(f"verify     {unit.relative_to(out)}: {verdict} {proc.stderr.strip()}")
    else:
        print("systemd-analyze not found: units written but not verified")
    print(f"\nThe demo's artifacts are in {out}:")
    for path in sorted(p for p in out.rglob("*") if p.is_file() and "app" not in p.parts[-2:-1]):
        print(f"  {path.relative_to(out)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
