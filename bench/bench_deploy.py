"""A release that changes one pinned package in a 40-package venv: deploy against reload + install.

The issue's targets (17): such a deploy within 3x of a reload plus one package
installed in place, and a rollback from the command to verified within 2 s (gunicorn).

The bench boots a real systemd in a throwaway nspawn container (the real-systemd
tests' harness), with this checkout's opskit inside (TOOL_VENV) and the wheelhouse
bound in. The app is the example app under gunicorn with a base (BASE/releases,
BASE/current), locked to 40 packages: 39 dependency-closed wheels of the wheelhouse
(LOCKED; gunicorn among them) and ``bench_changed``, a wheel built here in a new
version for every release. The first deploy fills the base's wheel cache and is not
counted. Then, per repetition, in the same container:

- **deploy**: ``opskit deploy`` of the project with ``bench_changed`` one version up.
  A new release: its code, a fresh venv with all 40 packages from the wheel cache
  (39 reused, one fetched into it from the local directory), ``pip check``, the
  canary, the switch and the verified reload;
- **deploy with uv**: the same with ``installer = "uv"`` in the spec (a second config
  file): uv makes the venv and installs the 40 packages (``--compile-bytecode``, as
  pip writes bytecode), ``uv pip check``, then the same canary, switch and reload;
- **baseline**: what the same change costs in place, on the live release: ``pip install
  --no-deps`` of the next ``bench_changed`` into its venv, then the reload script opskit
  generates for the spec (its checks, canary included, and the verified reload);
- **rollback**: ``opskit rollback`` to the release before, from the command to verified,
  then a deploy forward again (not counted), so that every repetition starts alike.

Ratios are per repetition (deploy / baseline of the same repetition), reported as the
median and the range.

    python bench/bench_deploy.py --reps 5
    python bench/bench_deploy.py --reps 5 --write docs/benchmarks/deploy.md

Needs root, systemd-nspawn and the wheelhouse of ``make wheelhouse``, as the real-systemd
tests do.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from opskit.spec import build_spec  # noqa: E402
from opskit.systemd.units import render_units  # noqa: E402
from tests.real_systemd import nspawn  # noqa: E402
from tests.real_systemd.corpus import OPSKIT  # noqa: E402
from tests.real_systemd.demo import EXAMPLE  # noqa: E402

# The spec and paths of the real-systemd deploy tests, not a copy of them.
from tests.real_systemd.test_deploy import BASE, CONFIG, RAW, WHEELS, _toml  # noqa: E402
from tests.test_upgrade_pip import make_wheel  # noqa: E402

WHEELHOUSE = ROOT / "build" / "wheelhouse"
CHANGED = "/srv/changed"
CONFIG_UV = "/srv/deploy/opskit-uv.toml"
SCRIPT_DIR = "/srv/deploy/script"
#: 39 wheels of the wheelhouse that need nothing outside themselves (pip check is
#: clean over them); with bench_changed, 40 packages.
LOCKED = [
    "annotated_doc",
    "annotated_types",
    "anyio",
    "asgiref",
    "blinker",
    "brotlicffi",
    "build",
    "certifi",
    "cffi",
    "charset_normalizer",
    "click",
    "decorator",
    "django",
    "fastapi",
    "flask",
    "greenlet",
    "gunicorn",
    "h11",
    "hatchling",
    "idna",
    "itsdangerous",
    "jinja2",
    "markupsafe",
    "opentelemetry_api",
    "packaging",
    "pathspec",
    "pluggy",
    "pycparser",
    "pydantic",
    "pydantic_core",
    "pyproject_hooks",
    "six",
    "sqlparse",
    "starlette",
    "tomlkit",
    "trove_classifiers",
    "typing_extensions",
    "typing_inspection",
    "werkzeug",
]


def _pins() -> str:
    lines = []
    for name in LOCKED:
        path = next(WHEELHOUSE.glob(f"{name}-*.whl"))
        lines.append(f"{name}=={path.name.split('-')[1]}")
    return "\n".join(lines) + "\n"


class Bench:
    def __init__(self, box: nspawn.Container, changed: Path) -> None:
        self.box = box
        self.changed = changed
        self.pins = _pins()
        self.version = 0
        box.run("mkdir", "-p", f"{BASE}/wheels", "/srv/deploy")
        for name in LOCKED:
            box.run("sh", "-c", f"cp {WHEELS}/{name}-*.whl {BASE}/wheels/")
        box.write_file(CONFIG, _toml(RAW) + "\n")
        box.write_file(CONFIG_UV, _toml({**RAW, "installer": "uv"}) + "\n")
        box.install_units(render_units(build_spec(RAW)))

    def next_wheel(self) -> str:
        """A new version of bench_changed, built on the host, seen inside at CHANGED."""
        self.version += 1
        make_wheel(self.changed, "bench_changed", f"1.{self.version}")
        return f"1.{self.version}"

    def project(self, version: str) -> str:
        directory = f"/srv/projects/{version}"
        self.box.write_file(f"{directory}/demoapp.py", (EXAMPLE / "demoapp.py").read_text())
        self.box.write_file(f"{directory}/VERSION", "0\n")
        lock = self.pins + f"bench_changed=={version}\n"
        self.box.write_file(f"{directory}/requirements.txt", lock)
        return directory

    def opskit(self, *args: str, config: str = CONFIG) -> tuple[float, Any]:
        # PIP_FIND_LINKS: the one package the cache lacks is fetched from there, offline.
        env = f"PIP_FIND_LINKS={CHANGED}"
        started = time.monotonic()
        done = self.box.run(
            "env", env, "PIP_NO_INDEX=1", OPSKIT, *args, "--config", config, check=False,
            timeout=900,
        )  # fmt: skip
        took = time.monotonic() - started
        if done.returncode != 0:
            raise SystemExit(f"opskit {' '.join(args)}: exit {done.returncode}\n{done.stderr}")
        return took, done

    def deploy(self, config: str = CONFIG) -> float:
        version = self.next_wheel()
        took, _ = self.opskit("deploy", self.project(version), config=config)
        return took

    def live(self) -> str:
        return self.box.run("readlink", f"{BASE}/current").stdout.strip().split("/")[-1]

    def baseline(self) -> float:
        """pip install of the next bench_changed into the live venv, then the reload script."""
        version = self.next_wheel()
        release = self.live()
        venv = f"{BASE}/releases/{release}/venv"
        started = time.monotonic()
        self.box.run(
            f"{venv}/bin/python", "-m", "pip", "install", "--no-deps", "--no-index",
            "--find-links", CHANGED, "--disable-pip-version-check", "--quiet",
            f"bench_changed=={version}", timeout=600,
        )  # fmt: skip
        done = self.box.run(
            "bash", f"{SCRIPT_DIR}/reload-demo.sh", release, check=False, timeout=600
        )
        took = time.monotonic() - started
        if done.returncode != 0:
            journal = self.box.journal("demo.service")
            raise SystemExit(f"reload script: exit {done.returncode}\n{done.stderr}\n{journal}")
        return took


def run(reps: int, work: Path) -> dict[str, Any]:
    tool = work / "tool"
    built = nspawn.tool_venv(tool, WHEELHOUSE, ROOT)
    changed = work / "changed"
    changed.mkdir()
    binds = [
        nspawn.Bind(tool, nspawn.TOOL_VENV),
        nspawn.Bind(WHEELHOUSE, WHEELS),
        nspawn.Bind(changed, CHANGED),
    ]
    result: dict[str, Any] = {
        "deploy": [], "uv": [], "baseline": [], "rollback": [], "tool": built,
    }  # fmt: skip
    with nspawn.booted("bench-deploy", work / "containers", binds) as box:
        bench = Bench(box, changed)
        started = time.monotonic()
        bench.deploy()
        result["first"] = time.monotonic() - started
        box.run(OPSKIT, "reload-script", "--config", CONFIG, "-o", SCRIPT_DIR, "--force")
        bench.deploy(CONFIG_UV)  # uv's own cache filled, as the first deploy filled pip's
        steps = {
            "deploy": bench.deploy,
            "uv": lambda: bench.deploy(CONFIG_UV),
            "baseline": bench.baseline,
        }
        for rep in range(1, reps + 1):
            # Alternate the order, so that a slow patch of the machine hits each. The
            # baseline always follows a pip deploy: it installs in place with the live
            # venv's pip, and a uv-built venv has none.
            order = ["deploy", "baseline", "uv"] if rep % 2 else ["uv", "deploy", "baseline"]
            for key in order:
                result[key].append(steps[key]())
            took, _ = bench.opskit("rollback")
            result["rollback"].append(took)
            bench.deploy()  # forward again: not counted
            sys.stderr.write(
                f"rep {rep}/{reps}: deploy {result['deploy'][-1]:.2f} s, with uv "
                f"{result['uv'][-1]:.2f} s, baseline {result['baseline'][-1]:.2f} s, "
                f"rollback {took:.2f} s\n"
            )
        versions = box.run(
            nspawn.SYSTEM_PYTHON, "-c", "import platform; print(platform.python_version())"
        ).stdout.strip()
        result["python"] = versions
    return result


def _s(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def report(result: dict[str, Any], reps: int, elapsed: float, command: str) -> str:
    ratios = [d / b for d, b in zip(result["deploy"], result["baseline"], strict=True)]
    uv = [d / b for d, b in zip(result["uv"], result["baseline"], strict=True)]
    rollback = result["rollback"]
    within = sum(1 for r in rollback if r <= 2.0)
    return "\n".join(
        [
            "# Deploy: one changed package in a 40-package venv",
            "",
            "Targets (issue 17): a release that changes one pinned package in a 40-package",
            "venv deploys within 3x of a reload plus one package install; a rollback takes",
            "at most 2 s from the command to verified (gunicorn).",
            "",
            "## Method",
            "",
            "See bench/bench_deploy.py's docstring: gunicorn (2 workers) under a real",
            "systemd in an nspawn container, the example app locked to 39 wheels of the",
            "wheelhouse and `bench_changed`, built in a new version for each release.",
            "Per repetition: `opskit deploy` (a new release with its own fresh venv from",
            "the base's wheel cache, pip check, the canary, the switch and the verified",
            "reload), against the baseline of the same change in place (`pip install",
            "--no-deps` of one wheel into the live venv, then the generated reload script:",
            "its checks, the canary and the verified reload); the same deploy with",
            '`installer = "uv"` (uv makes the venv and installs, `--compile-bytecode`,',
            "then `uv pip check`); then `opskit rollback`.",
            "",
            "Command line (as root, from the repository root):",
            "",
            f"    {command}",
            "",
            "## Result",
            "",
            f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; Python "
            f"{result['python']} in the container; {platform.system()} {platform.release()}, "
            f"{os.cpu_count()} CPUs shared with other work, load average "
            f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end; {elapsed:.0f} s in "
            f"all. The first deploy (it starts the service; the cache starts with the 39 wheels) "
            f"took {result['first']:.2f} s and is not counted.",
            "",
            f"Seconds, median (min-max) of {reps} repetitions:",
            "",
            "| | seconds | ratio deploy / baseline, per repetition |",
            "|---|---|---|",
            f"| deploy (pip) | {_s(result['deploy'])} | {_s(ratios)} |",
            f"| deploy with installer = uv | {_s(result['uv'])} | {_s(uv)} |",
            f"| baseline: pip install of one wheel + reload script | {_s(result['baseline'])} | |",
            f"| rollback, command to verified | {_s(rollback)} | |",
            "",
            f"**Deploy within 3x of the baseline in "
            f"{sum(1 for r in ratios if r <= 3.0)} of {reps} repetitions with pip** (median "
            f"{statistics.median(ratios):.2f}x), **in {sum(1 for r in uv if r <= 3.0)} of "
            f"{reps} with uv** (median {statistics.median(uv):.2f}x). **Rollback within 2 s "
            f"in {within} of {reps}.**",
            "",
        ]
    )


def main() -> int:
    from bench.reps import containers_unavailable
    from bench.reps import main as bench_main

    def unavailable() -> str | None:
        return containers_unavailable(WHEELHOUSE)

    return bench_main("bench_deploy.py", __doc__ or "", run, report, unavailable)


if __name__ == "__main__":
    sys.exit(main())
