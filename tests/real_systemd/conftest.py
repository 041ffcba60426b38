"""Fixtures for the real-systemd tests: the offline wheelhouse, the session's venvs, containers.

Every test here boots its own container (tests/real_systemd/nspawn.py); the venvs with the
servers and with opskit are built once per run and bound read-only into each one.
The measured numbers the tests record are printed at the end of the run.

``make test`` runs the tests that assert no timing in two pytest-xdist workers (two
containers at once) and the ``timing`` ones afterwards, alone; nothing here depends on
which: container names carry the worker's PID, the venvs are built under a lock.
"""

from __future__ import annotations

import os
import re
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.real_systemd import corpus, nspawn
from tests.real_systemd.demo import APP_DIR, make_app_dir

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
#: Filled by tests/real_systemd/wheelhouse.sh (make test's prerequisite) from the registry.
DEFAULT_WHEELHOUSE = ROOT / "build" / "wheelhouse"

# --- the time budget ------------------------------------------------------------------------
# A hung or slow container must not take CI past its limit: once BUDGET seconds have passed
# since the test runs began, the remaining container tests fail at once instead of booting.
# After that moment the run can still take: the container tests already running (each
# stopped by its pytest.mark.timeout, at most TEST_TIMEOUT), then the tests without a
# container. Before the tests: .ci/run's apt installs, make's venv, the wheelhouse, ruff and
# mypy. So BUDGET = CI_LIMIT - SETUP - REST - TEST_TIMEOUT - MARGIN (docs/integration.md).
#: CI stops a run of .ci/run after 90 minutes.
CI_LIMIT = float(os.environ.get("OPSKIT_CI_LIMIT", "5400"))
#: apt installs, venv, wheelhouse, ruff and mypy: measured 2-4 minutes from a clean clone.
SETUP = 600.0
#: The suite without containers (servers, pip, the fast tests): measured about 3 minutes.
REST = 600.0
#: The longest pytest.mark.timeout a container test may have (checked at collection).
TEST_TIMEOUT = 600.0
#: For a machine slower than the one these were measured on.
MARGIN = 0.1 * CI_LIMIT
BUDGET = float(
    os.environ.get("OPSKIT_SYSTEMD_BUDGET", CI_LIMIT - SETUP - REST - TEST_TIMEOUT - MARGIN)
)
#: make test runs pytest twice (the parallel container tests, then the rest) and sets this
#: to the epoch second it began, so both runs (and every xdist worker) share one budget.
_started = float(os.environ.get("OPSKIT_TEST_STARTED") or time.time())

# --- which tests run alone ---------------------------------------------------------------------
#: Tests that measure time or count failures under load ("module::function": what they
#: assert): a second container beside them would change what they measure, so they get the
#: ``timing`` marker and make test runs them in its serial pass. A test may also carry
#: ``@pytest.mark.timing`` itself; every other container test may run beside another.
TIMING = {
    "test_restart.py::test_crash_loop_never_ends_failed": (
        "restart gaps of 4.9-6.0 s; >= 12 fast restarts by the time the slow unit has 8"
    ),
    "test_restart.py::test_sigkill_of_main_process_recovers": (
        "/health again within RestartSec + twice the cold start + 2 s"
    ),
    "test_reload_socket.py::test_socket_activation_drops_nothing_across_restarts": (
        "failed requests of a rate-bound load across two restarts"
    ),
    "test_canary.py::test_broken_releases_are_refused_under_load_and_a_good_one_reloads": (
        "failed requests of a rate-bound load across refused and good reloads"
    ),
    # Asserts no time, but gives the access line a fixed 0.5 s to reach the journal
    # (time.sleep) instead of waiting for it: beside a neighbour that can be too short.
    "test_logging_journal.py::test_journal_priorities_follow_levels": (
        "the access line in the journal 0.5 s after the warning line"
    ),
    # A probe that times out (5 s) three times in a row on a starved machine would be a
    # restart this test exists to rule out, and its load must see 0 failed requests.
    "test_hung.py::test_no_false_restart_under_load": (
        "0 failed requests and no watchdog restart over 60 s of load"
    ),
    # A paused watchdog is checked by sleeping past its bound (time.sleep).
    "test_hung.py::test_the_watchdog_waits_for_a_reload_and_leaves_a_stopped_socket_service": (
        "no restart within the watchdog's bound while paused"
    ),
    "test_hung.py::test_doctor_sees_a_running_service_leak": (
        "a 4 requests/s leak must still grow while doctor samples"
    ),
    # Three containers at once, each under load while Ansible rolls the release out.
    "test_fleet.py::test_a_rolling_deploy_gated_per_host_stops_and_rolls_back_at_the_failing_one": (
        "0 failed requests of a rate-bound load on three hosts across rollouts"
    ),
    "test_fleet.py::test_the_rollback_playbook_takes_every_host_back_gated_under_load": (
        "0 failed requests of a rate-bound load on three hosts across the rollback"
    ),
}

_measured: list[str] = []
_boots: list[float] = []
#: Recorded in this process, not yet attached to a test report (see pytest_runtest_makereport).
_pending: list[tuple[str, str | float]] = []


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: Sequence[pytest.Item]) -> None:
    """Mark the TIMING tests; refuse container tests without a timeout the budget allows for."""
    modules = {}
    for item in items:
        path = Path(str(item.path))
        if path.parent != HERE or item.get_closest_marker("systemd") is None:
            continue
        modules[path.name] = getattr(item, "module", None)
        function = getattr(item, "originalname", item.name)
        if f"{path.name}::{function}" in TIMING:
            item.add_marker(pytest.mark.timing)
        marker = item.get_closest_marker("timeout")
        seconds = None
        if marker is not None:
            seconds = marker.kwargs.get("timeout", marker.args[0] if marker.args else None)
        if seconds is None or float(seconds) > TEST_TIMEOUT:
            raise pytest.UsageError(
                f"{item.nodeid}: a container test needs pytest.mark.timeout(<= {TEST_TIMEOUT:.0f})"
                f" (the time budget allows for that much after it runs out), has {seconds}"
            )
    # A renamed test must not leave the list and quietly run beside another container.
    for key in TIMING:
        name, _, function = key.partition("::")
        if name in modules and not hasattr(modules[name], function):
            raise pytest.UsageError(f"conftest.TIMING names {key}, which does not exist")


def _skip_or_fail(reason: str) -> None:
    # In CI the machine has everything: a missing piece is a failure, not a quiet skip.
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def systemd_host() -> None:
    """Skip (fail in CI) unless this machine can boot a container."""
    reason = nspawn.unavailable_reason()
    if reason:
        _skip_or_fail(reason)


@pytest.fixture(scope="session")
def wheelhouse(systemd_host: None) -> Path:
    """The directory of wheels and sdists the venvs are installed from, offline."""
    # Absolute: it becomes a bind source, and nspawn refuses relative ones.
    path = Path(os.environ.get("OPSKIT_WHEELHOUSE", DEFAULT_WHEELHOUSE)).resolve()
    if not any(path.glob("gunicorn-*")) or not any(path.glob("uwsgi-*")):
        _skip_or_fail(f"no wheelhouse at {path}: run make wheelhouse (make test fills it)")
    return path


@dataclass(frozen=True)
class Venvs:
    """Host directories of the two prebuilt venvs and the binds that show them inside."""

    servers: Path
    tool: Path

    @property
    def binds(self) -> list[nspawn.Bind]:
        return [
            nspawn.Bind(self.servers, nspawn.SERVERS_VENV),
            nspawn.Bind(self.tool, nspawn.TOOL_VENV),
        ]


@pytest.fixture(scope="session")
def venvs(wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory) -> Venvs:
    """The servers' venv (cached across runs in build/) and opskit's venv (built per run).

    Under pytest-xdist every worker asks for them: the servers' venv is built under a lock
    in its cache, opskit's by the first process that gets its lock, in a directory all of
    them share; the others wait and reuse it. That directory is OPSKIT_TEST_SHARED when
    set (make test makes one for both its pytest runs: the sources do not change between
    them), else the run's base directory (the workers' common parent).
    """
    servers, built = nspawn.servers_venv(ROOT / "build" / "systemd-venvs", wheelhouse)
    if os.environ.get("OPSKIT_TEST_SHARED"):
        shared = Path(os.environ["OPSKIT_TEST_SHARED"]).resolve()
    else:
        shared = tmp_path_factory.getbasetemp()
        if os.environ.get("PYTEST_XDIST_WORKER"):
            shared = shared.parent
    tool = shared / "tool-venv"
    done = shared / "tool-venv.built"
    with nspawn.locked(shared / "tool-venv.lock"):
        if done.exists():
            tool_built = "reused (built by another worker or pytest run)"
        else:
            tool_built = f"built in {nspawn.tool_venv(tool, wheelhouse, ROOT):.1f} s"
            done.touch()
    cached = "cached" if not built else f"built in {built:.1f} s"
    record(f"venvs: servers {cached}; opskit's own {tool_built}")
    return Venvs(servers, tool)


def record(line: str) -> None:
    """Keep a measured number for the summary at the end of the run."""
    _pending.append(("opskit-measure", line))


@pytest.fixture
def measure() -> Callable[[str], None]:
    """Record a measured number (printed in the run's summary)."""
    return record


# The numbers travel in the test reports (user_properties), so the summary has those of
# every pytest-xdist worker: the workers' own lists never reach the main process.
@pytest.hookimpl(tryfirst=True)  # before the report is made from the item
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> None:
    if call.when == "teardown" and _pending:
        item.user_properties.extend(_pending)
        _pending.clear()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when != "teardown":
        return
    for key, value in report.user_properties:
        if key == "opskit-measure":
            _measured.append(str(value))
        elif key == "opskit-boot":
            _boots.append(float(value))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _boots:
        _measured.append(
            f"containers: {len(_boots)} booted, boot to 'running' "
            f"{min(_boots):.2f}-{max(_boots):.2f} s (median {statistics.median(_boots):.2f} s)"
        )
    if _measured:
        terminalreporter.section("opskit real-systemd measurements")
        for line in _measured:
            terminalreporter.write_line(line)


@pytest.fixture
def demo_dir(tmp_path: Path) -> Path:
    """A host copy of the example app (VERSION 1), bound at APP_DIR by ``boot``."""
    return make_app_dir(tmp_path / "app")


BootFn = Callable[..., nspawn.Container]


@pytest.fixture
def boot(venvs: Venvs, demo_dir: Path, tmp_path: Path) -> Iterator[BootFn]:
    """Boot containers with the venvs and the example app bound in; all torn down after.

    ``boot(name, binds=[...], app=True)``: ``binds`` adds nspawn.Bind()s; ``app=False``
    leaves the example app out.
    """
    boxes: list[nspawn.Container] = []

    def start(
        name: str = "opskit", binds: tuple[nspawn.Bind, ...] = (), app: bool = True
    ) -> nspawn.Container:
        if time.time() - _started > BUDGET:
            pytest.fail(f"systemd test budget of {BUDGET:.0f} s used up; not booting {name}")
        all_binds = [*venvs.binds, *binds]
        if app:
            all_binds.append(nspawn.Bind(demo_dir, APP_DIR))
        box = nspawn.Container(name, tmp_path / "containers", binds=all_binds)
        boxes.append(box)
        box.boot()
        _pending.append(("opskit-boot", box.boot_seconds))
        return box

    try:
        yield start
    finally:
        for box in boxes:
            box.teardown()


# --- the real-app corpus (tests/real_systemd/corpus.py) ----------------------------------------


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def missing_pins(wheelhouse: Path, requirements: Path) -> list[str]:
    """The ``name==version`` pins of ``requirements`` with no file in ``wheelhouse``."""
    present = set()
    for path in wheelhouse.iterdir():
        stem = path.name.removesuffix(".tar.gz").removesuffix(".zip")
        if path.suffix == ".whl":
            name, version = stem.split("-")[:2]
        else:
            name, _, version = stem.rpartition("-")
        present.add((_norm(name), version))
    missing = []
    for line in requirements.read_text().splitlines():
        pin = re.match(r"\s*([A-Za-z0-9._-]+)(?:\[[^]]*\])?==([^\s;#]+)", line)
        if pin and (_norm(pin[1]), pin[2]) not in present:
            missing.append(f"{pin[1]}=={pin[2]}")
    return missing


@pytest.fixture(scope="session")
def corpus_venv(wheelhouse: Path) -> Path:
    """The corpus venv (servers and corpus.txt) on the host, cached in build/ like the servers'."""
    missing = missing_pins(wheelhouse, corpus.REQUIREMENTS)
    if missing:
        _skip_or_fail(
            f"the wheelhouse at {wheelhouse} lacks {', '.join(missing[:3])} (of corpus.txt):"
            " run make wheelhouse"
        )
    path, built = nspawn.corpus_venv(
        ROOT / "build" / "systemd-venvs", wheelhouse, corpus.REQUIREMENTS
    )
    record(f"venvs: corpus {'cached' if not built else f'built in {built:.1f} s'}")
    return path


@pytest.fixture
def corpus_dir(tmp_path: Path) -> Path:
    """The test's own project directories (corpus.make_projects), bound at corpus.PROJECTS."""
    return corpus.make_projects(tmp_path / "corpus")


@pytest.fixture
def corpus_boot(boot: BootFn, corpus_venv: Path, corpus_dir: Path) -> BootFn:
    """Boot a container with the corpus venv and the projects (writable) bound in.

    ``corpus_boot(name, binds=(...))``; the container also has ``boot``'s two venvs
    (TOOL_VENV runs opskit inside: corpus.opskit), not the example app. Django's project
    is made in it by ``corpus.startproject(box)``, PostgreSQL by ``corpus.start_postgres(box)``.
    """

    def start(name: str = "corpus", binds: tuple[nspawn.Bind, ...] = ()) -> nspawn.Container:
        own = (
            nspawn.Bind(corpus_venv, nspawn.CORPUS_VENV),
            nspawn.Bind(corpus_dir, corpus.PROJECTS, read_only=False),
        )
        return boot(name, binds=(*own, *binds), app=False)

    return start
