"""Against hung and leaking services: the cgroup's limits, worker timeouts and recycling.

Three layers, gentlest first. Worker recycling (a worker is replaced after so many
requests) keeps a slow leak from ever growing large, at the cost of one worker start
per N requests. A worker timeout (gunicorn --timeout, uWSGI harakiri) kills a worker
stuck on one request and lets the master start another; the service stays up.
MemoryMax= is the hard stop: past it the kernel kills inside the service's cgroup only,
never elsewhere on the host; MemoryHigh= below it first makes the kernel reclaim the
service's own memory. A whole server that stops answering is the watchdog's
(opskit.systemd.watchdog).
"""

from __future__ import annotations

import re

from opskit.spec import AppSpec

#: MemoryHigh= as a share of MemoryMax= when not given: reclaim starts a little before
#: the kill, so a service near its limit slows down instead of dying at once.
HIGH_SHARE = 0.9

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def memory_high(spec: AppSpec) -> str | None:
    """MemoryHigh=: the spec's, else 90% of MemoryMax= (None when there is no limit)."""
    if spec.memory_high is not None:
        return spec.memory_high
    limit = spec.memory_max
    if limit == "infinity":
        return None
    if limit.endswith("%"):
        return f"{float(limit[:-1]) * HIGH_SHARE:g}%"
    number, unit = re.fullmatch(r"([0-9.]+)([KMGT]?)", limit).groups()  # type: ignore[union-attr]
    return str(int(float(number) * _UNITS[unit] * HIGH_SHARE))


def oom_policy(spec: AppSpec) -> str:
    """OOMPolicy=: continue where a master replaces a killed worker, else stop (restart).

    gunicorn's arbiter, uWSGI's master and uvicorn's supervisor (with --workers) start a
    new worker when one dies: the service keeps serving. A single process, or a command
    opskit knows nothing about, is better stopped and restarted whole by Restart=always.
    """
    if spec.oom_policy is not None:
        return spec.oom_policy
    if spec.server in ("gunicorn", "uwsgi") or (spec.server == "uvicorn" and spec.workers >= 2):
        return "continue"
    return "stop"


def resource_directives(spec: AppSpec) -> list[tuple[str, str]]:
    """The [Service] lines that bound what the service may take from the host."""
    out: list[tuple[str, str]] = []
    high = memory_high(spec)
    if high is not None:
        out.append(("MemoryHigh", high))
    out.append(("MemoryMax", spec.memory_max))
    out += [
        ("TasksMax", spec.tasks_max),
        ("LimitNOFILE", str(spec.nofile)),
        ("OOMPolicy", oom_policy(spec)),
    ]
    return out


def worker_args(spec: AppSpec) -> list[str]:
    """The server's own timeout and recycling flags (nothing for server = 'command')."""
    args: list[str] = []
    jitter = max(1, spec.max_requests // 10)
    if spec.server == "gunicorn":
        # gunicorn's default is 30 s too; written out so the unit says what holds.
        args += ["--timeout", str(spec.worker_timeout)]
        if spec.max_requests:
            # Jitter: workers started together do not all restart at the same request.
            args += ["--max-requests", str(spec.max_requests)]
            args += ["--max-requests-jitter", str(jitter)]
    elif spec.server == "uwsgi":
        if spec.worker_timeout:
            args += ["--harakiri", str(spec.worker_timeout)]
        if spec.max_requests:
            # max-requests-delta staggers the workers by worker id times the delta.
            args += ["--max-requests", str(spec.max_requests)]
            args += ["--max-requests-delta", str(max(1, jitter // max(1, spec.workers)))]
    elif spec.server == "uvicorn" and spec.workers >= 2 and spec.max_requests:
        # A single uvicorn exits at the limit (a restart, with a gap); with --workers the
        # supervisor replaces the worker. uvicorn has no per-request worker timeout.
        args += ["--limit-max-requests", str(spec.max_requests)]
        args += ["--limit-max-requests-jitter", str(jitter)]
    return args
