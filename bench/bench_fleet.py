"""A rolling deploy to 3 hosts through the generated playbook, against one host's deploy.

The issue's target (19): a 3-host rollout within 3x one host's deploy + 10 s of
Ansible overhead, with per-host times recorded.

The hosts are those of the real-systemd fleet test (tests/real_systemd/test_fleet.py,
not a copy): three nspawn containers with a real systemd each, in network namespaces
of their own with veth addresses made here, each with its own sshd; Ansible logs in as
a non-root user with sudo. The app is the test's (the example app under gunicorn, two
workers, built by uv from its two-package lock), with ``serial = 1``: one host at a
time, the slowest and most common rollout. The first rollout installs opskit on each
host and is not counted. Then, per repetition:

- **rollout**: a new release of the app (its code changed), ``ansible-playbook
  deploy.yml`` to all 3 hosts, from the command to its end: the controller's wheel
  build, then per host the pushes, ``opskit deploy`` there and the controller's gates.
  Per-host times come from a callback the bench installs (each task's start and end
  on each host);
- **the playbook on one host**: the same with ``--limit h1,localhost`` (localhost: the
  controller's build play);
- **one host's deploy**: a new release, its wheel pushed to h1 (not counted), then
  ``opskit deploy`` run there directly, as the playbook runs it.

opskit goes to the hosts as a wheel built once (as an index would give it), not built
from the checkout on every run as the fleet test does. The order of the three rotates
from one repetition to the next. The ratios per repetition are rollout / (3 x one
host's deploy + 10 s), and the same with the playbook on one host: at most 1 meets the
target.

    python bench/bench_fleet.py --reps 5
    python bench/bench_fleet.py --reps 5 --write docs/benchmarks/fleet.md

Needs root, systemd-nspawn, openssh-server, ansible-core in this interpreter's venv
(``opskit[fleet]``, in the test extra) and the wheelhouse of ``make wheelhouse``.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from opskit.fleet.ansible import HOST_CONFIG, HOST_DIR  # noqa: E402
from tests.real_systemd.test_fleet import HOSTS, NAME, PYPROJECT, Fleet, hosts  # noqa: E402

WHEELHOUSE = ROOT / "build" / "wheelhouse"
OVERHEAD = 10.0
#: One host at a time.
SERIAL_1 = re.sub(r"(?m)^serial = .*$", "serial = 1", PYPROJECT)
TOOL_DIR = HOST_DIR.format(name=NAME)
CONFIG = HOST_CONFIG.format(name=NAME)


#: A callback written for the bench: each task's time on each host, one JSON line per
#: task and host (ansible-core's junit callback times a task from its first batch, so
#: with serial batches its later hosts would be charged for the earlier ones).
CALLBACK = """\
import json, os, time
from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "opskit_bench_times"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self.began = {}

    def v2_runner_on_start(self, host, task):
        self.began[(host.name, task._uuid)] = time.monotonic()

    def _end(self, result, *args, **kwargs):
        key = (result._host.name, result._task._uuid)
        began = self.began.pop(key, None)
        if began is not None:
            line = [key[0], result._task.get_name(), began, time.monotonic()]
            with open(os.environ["OPSKIT_BENCH_TIMES"], "a") as out:
                out.write(json.dumps(line) + "\\n")

    v2_runner_on_ok = v2_runner_on_failed = v2_runner_on_skipped = _end
    v2_runner_on_unreachable = _end
"""


@dataclass
class Rollout:
    """One playbook run: its wall time, and per host its span and its opskit deploy task."""

    took: float
    span: dict[str, float]
    deploy: dict[str, float]
    #: Per task name, its seconds summed over the hosts (the build play's included).
    tasks: dict[str, float]


class Bench:
    def __init__(self, fleet: Fleet, work: Path) -> None:
        self.fleet, self.work = fleet, work
        self.tag = 0
        plugins = work / "callbacks"
        plugins.mkdir()
        (plugins / "opskit_bench_times.py").write_text(CALLBACK)
        fleet.env.update(
            ANSIBLE_CALLBACK_PLUGINS=str(plugins),
            ANSIBLE_CALLBACKS_ENABLED="opskit_bench_times",
        )

    def release(self) -> None:
        self.tag += 1
        self.fleet.release(f"bench-{self.tag}")

    def rollout(self, *args: str) -> Rollout:
        """deploy.yml of a new release: its wall time, and each host's times."""
        self.release()
        times = self.work / f"times-{self.tag}.jsonl"
        self.fleet.env["OPSKIT_BENCH_TIMES"] = str(times)
        done, took = self.fleet.playbook("deploy.yml", *args)
        if done.returncode != 0:
            raise SystemExit(f"deploy.yml: exit {done.returncode}\n{done.stdout[-4000:]}")
        first: dict[str, float] = {}
        last: dict[str, float] = {}
        deploy: dict[str, float] = defaultdict(float)
        tasks: dict[str, float] = defaultdict(float)
        for line in times.read_text().splitlines():
            host, task, began, ended = json.loads(line)
            tasks[task] += ended - began
            first[host] = min(first.get(host, began), began)
            last[host] = max(last.get(host, ended), ended)
            if task.startswith("opskit deploy ("):
                deploy[host] += ended - began
        span = {host: last[host] - first[host] for host in first}
        return Rollout(took, span, dict(deploy), dict(tasks))

    def one_host(self) -> float:
        """``opskit deploy`` of a new release, run on the first host as the playbook runs it."""
        self.release()
        wheels = self.work / f"app-{self.tag}"
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
             "--no-deps", "--no-index", "--find-links", str(WHEELHOUSE), "--wheel-dir",
             str(wheels), str(self.fleet.project)],
            env={**os.environ, "SOURCE_DATE_EPOCH": "315532800"}, check=True, timeout=300,
        )  # fmt: skip
        wheel = next(wheels.glob("*.whl"))
        box = self.fleet.boxes[0]
        box.copy_in(wheel, f"{TOOL_DIR}/app/{wheel.name}")
        started = time.monotonic()
        box.run(
            "env", "PIP_NO_INDEX=1", f"PIP_FIND_LINKS={TOOL_DIR}/wheels",
            f"{TOOL_DIR}/tool/bin/opskit", "deploy", f"{TOOL_DIR}/app/{wheel.name}",
            "--config", CONFIG, "--json", "--requirements", f"{TOOL_DIR}/requirements.txt",
            timeout=300,
        )  # fmt: skip
        return time.monotonic() - started


def run(count: int, work: Path) -> dict[str, Any]:
    result: dict[str, Any] = {"rollout": [], "limit": [], "one": []}
    with hosts(work) as (boxes, key):
        fleet = Fleet(work, WHEELHOUSE, key, boxes, pyproject=SERIAL_1)
        # opskit as a released wheel, as an index would give it, rather than the
        # checkout built again on every run (the fleet test builds the checkout).
        built = work / "opskit-wheel"
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
             "--no-deps", "--no-index", "--find-links", str(WHEELHOUSE), "--wheel-dir",
             str(built), str(ROOT)],
            check=True, timeout=300,
        )  # fmt: skip
        fleet.extra["opskit_package"] = f"opskit[uv] @ {next(built.glob('*.whl')).as_uri()}"
        bench = Bench(fleet, work)
        started = time.monotonic()
        bench.rollout()
        result["first"] = time.monotonic() - started
        steps = {
            "rollout": bench.rollout,
            "limit": lambda: bench.rollout("--limit", "h1,localhost"),
            "one": bench.one_host,
        }
        names = list(steps)
        for rep in range(1, count + 1):
            # The order rotated, so that a slow patch of the machine hits each alike.
            shift = (rep - 1) % len(names)
            for name in names[shift:] + names[:shift]:
                result[name].append(steps[name]())
            done = result["rollout"][-1]
            sys.stderr.write(
                f"rep {rep}/{count}: rollout {done.took:.2f} s ("
                + ", ".join(f"{h} {s:.2f} s" for h, s in sorted(done.span.items()))
                + f"), playbook on h1 alone {result['limit'][-1].took:.2f} s, "
                f"opskit deploy on h1 {result['one'][-1]:.2f} s\n"
            )
        python = boxes[0].python("-c", "import platform; print(platform.python_version())")
        result["python"] = python.stdout.strip()
    result["ansible"] = subprocess.run(
        [fleet.bin("ansible"), "--version"], capture_output=True, text=True, check=True
    ).stdout.splitlines()[0]
    return result


def _s(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def report(result: dict[str, Any], count: int, elapsed: float, command: str) -> str:
    rollouts: list[Rollout] = result["rollout"]
    limits: list[Rollout] = result["limit"]
    one: list[float] = result["one"]
    took = [r.took for r in rollouts]
    alone = [r.took for r in limits]
    strict = [t / (HOSTS * o + OVERHEAD) for t, o in zip(took, one, strict=True)]
    loose = [t / (HOSTS * a + OVERHEAD) for t, a in zip(took, alone, strict=True)]
    names = sorted({h for r in rollouts for h in r.span if h != "localhost"})
    rows = [
        f"| {h}: its tasks, first start to last end | {_s([r.span[h] for r in rollouts])} |"
        f" {_s([r.deploy[h] for r in rollouts])} |"
        for h in names
    ]
    ansible = [t - sum(r.deploy.values()) for t, r in zip(took, rollouts, strict=True)]
    by_task = {
        task: statistics.median(r.tasks.get(task, 0.0) for r in rollouts)
        for task in rollouts[0].tasks
    }
    slowest = sorted(by_task.items(), key=lambda item: -item[1])
    task_rows = [f"| {task} | {seconds:.2f} |" for task, seconds in slowest]
    return "\n".join(
        [
            "# Fleet: a rolling deploy to 3 hosts",
            "",
            "Target (issue 19): a 3-host rollout within 3x one host's deploy + 10 s of",
            "Ansible overhead, with per-host times recorded.",
            "",
            "## Method",
            "",
            "See bench/bench_fleet.py's docstring: three nspawn hosts with a real systemd",
            "each, reached over SSH on veth addresses, the fleet test's app (gunicorn, two",
            "workers, releases built by uv) with `serial = 1`. Per repetition, each a new",
            "release, the order rotated: `ansible-playbook deploy.yml` to the 3 hosts (the",
            "controller's wheel build, then per host the pushes, `opskit deploy` and the",
            "controller's gates); the same playbook with `--limit h1,localhost`; `opskit deploy`",
            "run directly on h1, as the playbook runs it. Per-host times come from a",
            "callback the bench installs (each task's start and end on each host).",
            "",
            "Command line (as root, from the repository root):",
            "",
            f"    {command}",
            "",
            "## Result",
            "",
            f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {result['ansible']};"
            f" Python {result['python']} on the hosts; {platform.system()} "
            f"{platform.release()}, {os.cpu_count()} CPUs shared by the controller and the "
            f"three hosts, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at "
            f"the end; {elapsed:.0f} s in all. The first rollout (opskit installed on each "
            f"host, the service started) took {result['first']:.1f} s and is not counted.",
            "",
            f"Seconds, median (min-max) of {count} repetitions:",
            "",
            "| | seconds | of which `opskit deploy` |",
            "|---|---|---|",
            f"| rollout to 3 hosts, command to end | {_s(took)} |"
            f" {_s([sum(r.deploy.values()) for r in rollouts])} |",
            f"| the controller's build play | {_s([r.span['localhost'] for r in rollouts])} | |",
            *rows,
            f"| the same playbook, `--limit h1,localhost` | {_s(alone)} |"
            f" {_s([r.deploy['h1'] for r in limits])} |",
            f"| `opskit deploy` run directly on h1 | {_s(one)} | {_s(one)} |",
            f"| rollout - its 3 `opskit deploy` tasks (Ansible's part) | {_s(ansible)} | |",
            "",
            "Ratios per repetition, median (min-max); at most 1 meets the target:",
            "",
            f"- rollout / (3 x `opskit deploy` on one host + 10 s): **{_s(strict)}**, "
            f"within in {sum(1 for r in strict if r <= 1.0)} of {count};",
            f"- rollout / (3 x the playbook on one host + 10 s): **{_s(loose)}**, "
            f"within in {sum(1 for r in loose if r <= 1.0)} of {count}.",
            "",
            "Where a rollout's time goes: each task's seconds, summed over the hosts it",
            "ran on (the controller's build play once), median of the repetitions; tasks",
            "of one name count together (\"The app's wheel\" is the controller's build of it",
            "and each host's copy of it):",
            "",
            "| task | seconds |",
            "|---|---|",
            *task_rows,
            "",
        ]
    )


def _unavailable() -> str | None:
    from bench.reps import containers_unavailable

    reason = containers_unavailable(WHEELHOUSE)
    if reason:
        return reason
    if not Path("/usr/sbin/sshd").exists():
        return "openssh-server is not installed (.ci/run installs it)"
    if shutil.which("ansible-playbook", path=str(Path(sys.executable).parent)) is None:
        return "ansible-playbook is not beside this interpreter: run it with .venv/bin/python"
    return None


def main() -> int:
    from bench.reps import main as bench_main

    return bench_main("bench_fleet.py", __doc__ or "", run, report, _unavailable)


if __name__ == "__main__":
    sys.exit(main())
