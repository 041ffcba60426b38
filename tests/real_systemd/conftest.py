"""Fixtures for the real-systemd tests: the offline wheelhouse, the session's venvs, containers.

Every test here boots its own container (tests/real_systemd/nspawn.py); the venvs with the
servers and with opskit are built once per session and bound read-only into each one.
The measured numbers the tests record are printed at the end of the run.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.real_systemd import nspawn
from tests.real_systemd.demo import APP_DIR, make_app_dir

ROOT = Path(__file__).resolve().parents[2]
#: Filled by tests/real_systemd/wheelhouse.sh (make test's prerequisite) from the registry.
DEFAULT_WHEELHOUSE = ROOT / "build" / "wheelhouse"
#: A hung container must not eat CI's time: past this many seconds of systemd tests, the
#: remaining ones fail at once instead of booting (each test also has a pytest-timeout).
BUDGET = float(os.environ.get("OPSKIT_SYSTEMD_BUDGET", "1500"))

_started = time.monotonic()
_measured: list[str] = []
_boots: list[float] = []


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
    """The servers' venv (cached across runs in build/) and opskit's venv (built per session)."""
    servers, built = nspawn.servers_venv(ROOT / "build" / "systemd-venvs", wheelhouse)
    tool = tmp_path_factory.mktemp("tool-venv")
    tool_seconds = nspawn.tool_venv(tool, wheelhouse, ROOT)
    cached = "cached" if not built else f"built in {built:.1f} s"
    record(f"venvs: servers {cached}; opskit's own built in {tool_seconds:.1f} s")
    return Venvs(servers, tool)


def record(line: str) -> None:
    """Keep a measured number for the summary at the end of the run."""
    _measured.append(line)


@pytest.fixture
def measure() -> Callable[[str], None]:
    """Record a measured number (printed in the run's summary)."""
    return record


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _boots:
        record(
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
        if time.monotonic() - _started > BUDGET:
            pytest.fail(f"systemd test budget of {BUDGET:.0f} s used up; not booting {name}")
        all_binds = [*venvs.binds, *binds]
        if app:
            all_binds.append(nspawn.Bind(demo_dir, APP_DIR))
        box = nspawn.Container(name, tmp_path / "containers", binds=all_binds)
        boxes.append(box)
        box.boot()
        _boots.append(box.boot_seconds)
        return box

    try:
        yield start
    finally:
        for box in boxes:
            box.teardown()
