"""Fixtures for the real-systemd tests: the offline wheelhouse, the session's venvs, containers.

Every test here boots its own container (tests/systemd/nspawn.py); the venvs with the
servers and with opskit are built once per session and bound read-only into each one.
The measured numbers the tests record are printed at the end of the run.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.systemd import nspawn
from tests.systemd.demo import APP_DIR, make_app_dir

ROOT = Path(__file__).resolve().parents[2]
#: Filled by tests/systemd/wheelhouse.sh (called from .ci/run) while the registry is reachable.
DEFAULT_WHEELHOUSE = ROOT / "build" / "wheelhouse"
#: A hung container must not eat CI's time: past this many seconds of systemd tests, the
#: remaining ones fail at once instead of booting (each test also has a pytest-timeout).
BUDGET = float(os.environ.get("OPSKIT_SYSTEMD_BUDGET", "1500"))

_started = time.monotonic()
_measured: list[str] = []


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
    path = Path(os.environ.get("OPSKIT_WHEELHOUSE", DEFAULT_WHEELHOUSE))
    if not any(path.glob("gunicorn-*")) or not any(path.glob("uwsgi-*")):
        _skip_or_fail(f"no wheelhouse at {path}: run tests/systemd/wheelhouse.sh first")
    return path


@pytest.fixture(scope="session")
def venvs(wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Host directory holding the servers' venv and opskit's venv (bound at nspawn.ENV_MOUNT)."""
    dest = tmp_path_factory.mktemp("venvs")
    timings = nspawn.build_venvs(dest, wheelhouse, ROOT)
    record(
        "venvs built once per session: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items())
    )
    return dest


def record(line: str) -> None:
    """Keep a measured number for the summary at the end of the run."""
    _measured.append(line)


@pytest.fixture
def measure() -> Callable[[str], None]:
    """Record a measured number (printed in the run's summary)."""
    return record


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
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
def boot(venvs: Path, demo_dir: Path, tmp_path: Path) -> Iterator[BootFn]:
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
        all_binds = [nspawn.Bind(venvs, nspawn.ENV_MOUNT), *binds]
        if app:
            all_binds.append(nspawn.Bind(demo_dir, APP_DIR))
        box = nspawn.Container(name, tmp_path / "containers", binds=all_binds)
        boxes.append(box)
        box.boot()
        return box

    try:
        yield start
    finally:
        for box in boxes:
            box.teardown()
