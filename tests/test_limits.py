"""Limits, worker timeouts, recycling and the watchdog units, as generated and as read."""

from __future__ import annotations

from pathlib import Path

import pytest

from opskit.errors import SpecError
from opskit.spec import build_spec
from opskit.systemd.units import render_units, server_unit
from tests.conftest import needs_analyze, verify
from tests.unitfile import exec_words, parse, value

BASE = {"name": "web", "app": "pkg.wsgi:app"}


def units(**raw) -> dict[str, str]:
    return {f.name: f.content for f in render_units(build_spec({**BASE, **raw}))}


def service(**raw):
    return parse(units(**raw)["web.service"])


def test_defaults() -> None:
    sections = service()
    assert [
        (k, value(sections, "Service", k))
        for k in ("MemoryHigh", "MemoryMax", "TasksMax", "LimitNOFILE", "OOMPolicy")
    ] == [
        ("MemoryHigh", "45%"),
        ("MemoryMax", "50%"),
        ("TasksMax", "1024"),
        ("LimitNOFILE", "65536"),
        ("OOMPolicy", "continue"),
    ]
    assert value(sections, "Unit", "Wants") == "web-watchdog.timer"


@pytest.mark.parametrize(
    ("raw", "policy"),
    [
        ({"server": "gunicorn"}, "continue"),
        ({"server": "uwsgi"}, "continue"),
        ({"server": "uvicorn", "workers": 2}, "continue"),
        ({"server": "uvicorn", "workers": 1}, "stop"),
        ({"server": "command", "command": ["/bin/app"]}, "stop"),
        ({"server": "gunicorn", "oom_policy": "kill"}, "kill"),
    ],
)
def test_oom_policy_follows_who_replaces_a_killed_worker(raw, policy) -> None:
    assert value(service(**raw), "Service", "OOMPolicy") == policy


@pytest.mark.parametrize(
    ("limit", "high"), [("2G", str(int((2 << 30) * 0.9))), ("80%", "72%"), ("infinity", None)]
)
def test_memory_high_is_below_memory_max(limit, high) -> None:
    sections = service(memory_max=limit)
    assert value(sections, "Service", "MemoryMax") == limit
    highs = [v for k, v in sections["Service"] if k == "MemoryHigh"]
    assert highs == ([high] if high else [])


@pytest.mark.parametrize(
    ("server", "expected"),
    [
        (
            "gunicorn",
            ["--timeout", "30", "--max-requests", "10000", "--max-requests-jitter", "1000"],
        ),
        ("uwsgi", ["--harakiri", "30", "--max-requests", "10000", "--max-requests-delta", "500"]),
        ("uvicorn", ["--limit-max-requests", "10000", "--limit-max-requests-jitter", "1000"]),
    ],
)
def test_worker_timeout_and_recycling_reach_the_server(server, expected) -> None:
    argv = list(server_unit(build_spec({**BASE, "server": server})).argv)
    start = argv.index(expected[0])
    assert argv[start : start + len(expected)] == expected


def test_off_means_off() -> None:
    spec = build_spec({**BASE, "server": "uwsgi", "worker_timeout": 0, "max_requests": 0})
    argv = server_unit(spec).argv
    assert "--harakiri" not in argv and "--max-requests" not in argv
    single = build_spec({**BASE, "server": "uvicorn", "workers": 1})
    # A single uvicorn exits at the limit: recycling only with a supervisor.
    assert "--limit-max-requests" not in server_unit(single).argv
    assert list(units(watchdog=0)) == ["web.service"]
    assert "Wants=" not in units(watchdog=0)["web.service"]


def test_a_command_gets_a_watchdog_only_with_a_health_path() -> None:
    command = {"server": "command", "command": ["/bin/app"]}
    assert list(units(**command)) == ["web.service"]
    assert list(units(**command, health_path="/health")) == [
        "web.service",
        "web-watchdog.timer",
        "web-watchdog.service",
    ]


def test_the_probe_gets_the_address_and_the_bound() -> None:
    files = units(host="0.0.0.0", port=9000, health_path="/health", watchdog=7)
    timer = parse(files["web-watchdog.timer"])
    assert value(timer, "Timer", "OnUnitActiveSec") == "7"
    assert value(timer, "Unit", "PartOf") == "web.service"
    argv = exec_words(value(parse(files["web-watchdog.service"]), "Service", "ExecStart"))
    assert argv[0] == "/srv/app/.venv/bin/python" and argv[1:3] == ["-I", "-c"]
    # The probe's code arrives as the file it is, newlines and all.
    code = (Path(__file__).parent.parent / "templates/systemd/watchdog_probe.py").read_text()
    assert argv[3] == code
    assert argv[4:] == [
        "web.service",
        "tcp:127.0.0.1:9000",
        "/health",
        "3",
        "7",
        "5",
        "/run/web-watchdog",
    ]
    unix = units(unix_socket="/run/web/app.sock")["web-watchdog.service"]
    assert "unix:/run/web/app.sock" in unix


@needs_analyze
@pytest.mark.parametrize(
    "raw",
    [
        {},
        {"socket": True},
        {"server": "uwsgi", "memory_max": "1.5G", "tasks_max": "infinity"},
        {"server": "uvicorn", "unix_socket": "/run/web/app.sock", "memory_max": "100%"},
    ],
)
def test_systemd_accepts_every_unit(tmp_path: Path, raw) -> None:
    for name, text in units(**raw).items():
        (tmp_path / name).write_text(text)
    for name in units(**raw):
        assert verify(tmp_path / name) == "", name


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"memory_max": "lots"}, "memory-max: expected bytes (512M, 2G), a percentage"),
        ({"memory_max": "150%"}, "memory-max: a percentage from 0 to 100"),
        ({"memory_high": "1Q"}, "memory-high: expected bytes"),
        ({"tasks_max": "many"}, "tasks-max: expected a whole number from 16"),
        ({"oom_policy": "ignore"}, "oom-policy: expected one of continue, stop, kill"),
        ({"watchdog_failures": 0}, "watchdog-failures: expected a whole number from 1"),
        ({"worker_timeout": -1}, "worker-timeout: expected a whole number from 0"),
    ],
)
def test_bad_values_are_refused(raw, message) -> None:
    with pytest.raises(SpecError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        build_spec({**BASE, **raw})
