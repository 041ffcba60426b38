"""The watchdog: a timer that probes the service and kills it when it stops answering.

None of gunicorn, uvicorn or uWSGI sends WATCHDOG=1, and Restart=always does nothing
for a process that hangs without exiting. So a timer (NAME-watchdog.timer) starts a
oneshot probe (NAME-watchdog.service) every ``watchdog`` seconds; the probe asks the
health path (else "/") over the service's own address, and any HTTP answer, even an
error, counts as alive: a server that answers is not hung, and a restart would not mend
a broken app. Once the service has given no answer for ``watchdog-failures`` x
``watchdog`` seconds (from its last answer, its start or the end of a pause), the probe
that is asking sends SIGKILL to the whole service (a stop would wait out
TimeoutStopSec= on a hung process) and Restart=always starts it again. The same two
systemd units serve all four kinds of server, with no code inside the app.

The probe skips (and counts the time without an answer from there again) while the
service is not active and running, so it never fires during a start, a stop or
``systemctl reload``, and never starts a socket-activated service that was stopped on
purpose; the timer is PartOf= the service, so it stops with it. The reload script
pauses it for the length of a reload.
"""

from __future__ import annotations

from opskit.render import RenderedFile, templates_dir
from opskit.spec import AppSpec

#: Seconds a probe waits for an answer (at most the interval).
PROBE_TIMEOUT = 5


def watchdog_enabled(spec: AppSpec) -> bool:
    """Whether the spec gets a watchdog: on, and an HTTP address to probe."""
    if spec.watchdog == 0:
        return False
    # A command may not speak HTTP: only a health path says that it does.
    return spec.server != "command" or (spec.health_path is not None and spec.port is not None)


def probe_address(spec: AppSpec) -> str:
    """Where the probe connects: ``unix:PATH`` or ``tcp:HOST:PORT`` (a wildcard as loopback)."""
    if spec.unix_socket:
        return f"unix:{spec.unix_socket}"
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(spec.host, spec.host)
    return f"tcp:{f'[{host}]' if ':' in host else host}:{spec.port}"


def state_dir(spec: AppSpec) -> str:
    """The probe's RuntimeDirectory: the time of the last answer, the reload script's pause."""
    return f"/run/{spec.name}-watchdog"


def probe_code() -> str:
    """The probe, run by the app's own Python (templates/systemd/watchdog_probe.py)."""
    return (templates_dir() / "systemd" / "watchdog_probe.py").read_text(encoding="utf-8")


def timeout(spec: AppSpec) -> int:
    return max(1, min(PROBE_TIMEOUT, spec.watchdog))


def bound(spec: AppSpec) -> int:
    """Seconds from a hang to the SIGKILL, at most (plus the timer's 0.1 s accuracy).

    K x interval from the last answer, which came no later than the hang. Only with
    K = 1 can the next probe start after that deadline; its first try then waits for
    the timeout (1 s at least) before it kills.
    """
    interval = spec.watchdog
    return max(spec.watchdog_failures * interval, interval + timeout(spec))


def render_watchdog(spec: AppSpec, context: dict[str, object]) -> list[RenderedFile]:
    """NAME-watchdog.timer and NAME-watchdog.service."""
    from opskit.render import render_template

    argv = [
        spec.python,
        "-I",
        "-c",
        probe_code(),
        f"{spec.name}.service",
        probe_address(spec),
        spec.health_path or "/",
        str(spec.watchdog_failures),
        str(spec.watchdog),
        str(timeout(spec)),
        state_dir(spec),
    ]
    watch = {**context, "probe_argv": argv, "probe_timeout": timeout(spec), "bound": bound(spec)}
    return [
        RenderedFile(
            f"{spec.name}-watchdog.timer", render_template("systemd/watchdog.timer.j2", **watch)
        ),
        RenderedFile(
            f"{spec.name}-watchdog.service",
            render_template("systemd/watchdog.service.j2", **watch),
        ),
    ]
