"""The generated units never give up: a crash loop, the start limit, and a SIGKILLed server."""

from __future__ import annotations

import itertools
import time

import pytest

from opskit.systemd.units import render_units
from tests.real_systemd.demo import demo_spec, url

pytestmark = [pytest.mark.systemd, pytest.mark.timeout(600)]

FAST = "[Service]\nRestartSec=100ms\n"


def _starts(box, unit: str) -> list[float]:
    """Monotonic seconds of each "Starting ..." PID 1 logged for the unit (one per attempt)."""
    return [
        int(e["__MONOTONIC_TIMESTAMP"]) / 1e6
        for e in box.journal_json(unit)
        if e.get("_PID") == "1" and str(e.get("MESSAGE", "")).startswith("Starting ")
    ]


def _exits(box, unit: str) -> list[float]:
    return [
        int(e["__MONOTONIC_TIMESTAMP"]) / 1e6
        for e in box.journal_json(unit)
        if e.get("_PID") == "1" and "Main process exited" in str(e.get("MESSAGE", ""))
    ]


def test_crash_loop_never_ends_failed(boot, measure):
    # The app raises at import, so gunicorn exits at every start: a broken deploy.
    crashing = {"environment": {"DEMOAPP_FAIL_IMPORT": "1"}}
    slow = render_units(demo_spec("gunicorn", name="crash-slow", **crashing))[0]
    fast = render_units(demo_spec("gunicorn", name="crash-fast", **crashing))[0]
    # The control is the very same unit without StartLimitIntervalSec=0: if the test could
    # not tell the two apart, the control would pass as well.
    control_text = fast.content.replace("crash-fast", "crash-control")
    assert "\nStartLimitIntervalSec=0\n" in control_text
    control_text = control_text.replace("\nStartLimitIntervalSec=0\n", "\n")
    box = boot("crashloop")
    box.install_units([slow, fast, ("crash-control.service", control_text)], reload=False)
    box.drop_in("crash-fast.service", "fast", FAST, reload=False)
    box.drop_in("crash-control.service", "fast", FAST)
    units = ["crash-slow.service", "crash-fast.service", "crash-control.service"]
    box.systemctl("start", "--no-block", *units)

    states: dict[str, set[str]] = {u: set() for u in units}

    def observe() -> dict[str, dict[str, str]]:
        seen = {u: box.show(u, "ActiveState", "NRestarts", "Result") for u in units}
        for unit, props in seen.items():
            states[unit].add(props["ActiveState"])
        return seen

    started = time.monotonic()
    while True:
        seen = observe()
        if int(seen["crash-slow.service"]["NRestarts"]) >= 8:
            break
        assert time.monotonic() - started < 120, seen
        time.sleep(0.5)
    seen = observe()

    # RestartSec=5: restarted 8 times, never "failed", still trying.
    assert "failed" not in states["crash-slow.service"], states
    assert seen["crash-slow.service"]["ActiveState"] in ("activating", "active"), seen
    starts = _starts(box, "crash-slow.service")
    exits = _exits(box, "crash-slow.service")
    periods = [b - a for a, b in itertools.pairwise(starts)]
    # Each exit is followed by the next start (the last exit may still be waiting).
    gaps = [s - e for e, s in zip(exits, starts[1:], strict=False)]
    assert len(periods) >= 8, starts
    # From an exit to the next start is RestartSec; start to start adds the time the
    # app takes to crash, which on a busy machine varies by seconds.
    assert all(4.9 <= g <= 6.0 for g in gaps), gaps
    assert all(4.9 <= p <= 20.0 for p in periods), periods
    measure(
        f"crash loop, RestartSec=5: {len(periods)} restarts, exit to next start "
        f"{min(gaps):.2f}-{max(gaps):.2f} s, start to start {min(periods):.2f}-{max(periods):.2f} s"
    )

    # RestartSec=100ms: far past the default burst of 5 and never failed with the
    # generated StartLimitIntervalSec=0; the control hit the limit and stopped for good.
    assert int(seen["crash-fast.service"]["NRestarts"]) >= 12, seen
    assert "failed" not in states["crash-fast.service"], states
    assert seen["crash-control.service"]["ActiveState"] == "failed", seen
    journal = box.journal("crash-control.service")
    assert "Start request repeated too quickly" in journal
    measure(
        f"crash loop, RestartSec=100ms: generated unit {seen['crash-fast.service']['NRestarts']} "
        f"restarts and still trying; control without StartLimitIntervalSec=0 failed after "
        f"{seen['crash-control.service']['NRestarts']} restarts"
    )


@pytest.mark.parametrize("server", ["gunicorn", "uvicorn", "uwsgi"])
def test_sigkill_of_main_process_recovers(server, boot, measure):
    spec = demo_spec(server)
    unit = f"{spec.name}.service"
    box = boot(f"sigkill-{server}")
    box.install_units(render_units(spec))
    began = time.monotonic()
    box.systemctl("start", unit)
    box.wait_http(url("/health"), timeout=60)
    cold = time.monotonic() - began
    old = box.main_pid(unit)

    began = time.monotonic()
    box.run("kill", "-KILL", str(old))
    # Answered by the new server: a new main process, and /health from it.
    box.wait_for("a new main process", lambda: box.main_pid(unit) not in (0, old), 60, 0.05)
    box.wait_http(url("/health"), timeout=60)
    gap = time.monotonic() - began
    props = box.show(unit, "NRestarts", "ActiveState")
    assert props == {"NRestarts": "1", "ActiveState": "active"}
    # RestartSec plus a start-up: the cold start measured above, with slack for a busy
    # machine (two cores shared with other work).
    bound = float(spec.restart_sec) + 2 * cold + 2.0
    assert gap <= bound, (gap, bound, box.journal(unit))
    measure(
        f"{server}: SIGKILL of the main process to /health 200 again: {gap:.2f} s "
        f"(RestartSec={spec.restart_sec}, cold start {cold:.2f} s)"
    )
