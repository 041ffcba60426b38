"""Does the app serve? One HTTP probe of the app's address, and a bounded wait for a steady answer.

A probe asks the health path where the spec has one (a 2xx or 3xx answer counts), else
``/``, where any HTTP answer below 500 counts: a 404 from an app with no root route is
still an app that serves. A reset, an EOF, a refusal or a timeout never counts.
"""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opskit.spec import AppSpec

#: Consecutive good answers, INTERVAL apart, that make "serves" (about 2 s of them).
CONSECUTIVE = 5
INTERVAL = 0.4
#: How long a start may take to serve before it counts as failed.
DEADLINE = 60.0
#: One probe's own bound.
PROBE_TIMEOUT = 3.0


@dataclass(frozen=True)
class Answer:
    """One probe: the HTTP status, or why there was none."""

    path: str
    status: int | None = None
    error: str | None = None
    #: Whether the status counts as serving for this path.
    ok: bool = False

    def describe(self) -> str:
        """'GET /health: 200', 'GET /: connection refused'."""
        what = str(self.status) if self.status is not None else (self.error or "no answer")
        return f"GET {self.path}: {what}"


class _UnixConnection(http.client.HTTPConnection):
    """HTTP over a unix socket (http.client speaks only TCP)."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.unix_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def probe_address(spec: AppSpec) -> tuple[str, int | None]:
    """Where to probe: the unix socket, or the host and port (a wildcard bind via loopback)."""
    if spec.unix_socket:
        return spec.unix_socket, None
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(spec.host, spec.host)
    return host, spec.port


def probe(spec: AppSpec, *, timeout: float = PROBE_TIMEOUT) -> Answer:
    """Ask the app once, on a fresh connection."""
    path = spec.health_path or "/"
    host, port = probe_address(spec)
    conn: http.client.HTTPConnection
    if port is None:
        conn = _UnixConnection(host, timeout)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close", "User-Agent": "opskit"})
        status = conn.getresponse().status
    except (OSError, http.client.HTTPException) as exc:
        return Answer(path, error=_why(exc))
    finally:
        conn.close()
    ok = 200 <= status < 400 if spec.health_path else status < 500
    return Answer(path, status=status, ok=ok)


def _why(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "no answer in time"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "closed without an answer"
    if isinstance(exc, FileNotFoundError):
        return "no socket at that path"
    return f"{type(exc).__name__}: {exc}"


@dataclass(frozen=True)
class Serving:
    """The outcome of a wait: did it serve steadily, the last answer, and why it stopped."""

    ok: bool
    last: Answer | None
    reason: str


def wait_serving(
    spec: AppSpec,
    *,
    still_starting: Callable[[], str | None] = lambda: None,
    deadline: float = DEADLINE,
    consecutive: int = CONSECUTIVE,
    interval: float = INTERVAL,
) -> Serving:
    """Probe until ``consecutive`` answers in a row count, or the deadline passes.

    ``still_starting`` is asked between probes and returns a reason to give up at once
    (the unit failed, or restarted: a crash loop does not get better by waiting), or None.
    """
    end = time.monotonic() + deadline
    good = 0
    last: Answer | None = None
    while True:
        last = probe(spec)
        good = good + 1 if last.ok else 0
        if good >= consecutive:
            return Serving(True, last, f"{consecutive} answers in a row ({last.describe()})")
        stop = still_starting()
        if stop is not None:
            return Serving(False, last, stop)
        if time.monotonic() + interval > end:
            return Serving(False, last, f"not serving after {deadline:g} s")
        time.sleep(interval)
