"""Golden units for every server x socket x profile: byte for byte, verified and scored.

Refresh with ``pytest tests/test_golden.py --update-golden`` after a deliberate change,
then read the diff of tests/golden/ before committing it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from opskit.spec import build_spec
from opskit.systemd.analyze import security_score as opskit_security_score
from opskit.systemd.units import render_units
from tests.conftest import needs_analyze, verify
from tests.unitfile import exec_words, parse, security_score, value, values

GOLDEN = Path(__file__).resolve().parent / "golden" / "systemd"

SERVERS = ("gunicorn", "uvicorn", "uwsgi")
PROFILES = ("default", "relaxed", "off")


def _case_id(server: str, socket: bool, profile: str) -> str:
    return f"{server}-{'socket' if socket else 'tcp'}-{profile}"


CASES = [
    *[(s, sock, p) for s in SERVERS for sock in (False, True) for p in PROFILES],
    *[("command", False, p) for p in PROFILES],
]
IDS = [_case_id(*case) for case in CASES]

# Exposure from `systemd-analyze security --offline=yes` (systemd 252), recorded exactly so
# that any change in hardening shows up here as a failure to look at.
EXPECTED_SCORE = {
    ("default", False): 0.9,
    ("default", True): 0.4,
    ("relaxed", False): 2.7,
    ("relaxed", True): 2.7,
    ("off", False): 8.4,
    ("off", True): 8.4,
}


def _spec(server: str, socket: bool, profile: str):
    # Fixed values only: the golden files must not depend on the machine or the user.
    raw: dict[str, object] = {
        "name": "app",
        "server": server,
        "working_directory": "/srv/app",
        "socket": socket,
        "hardening": {"profile": profile},
    }
    if server == "command":
        raw["command"] = ["/srv/app/.venv/bin/python", "-m", "app.serve", "--port", "8000"]
    else:
        raw["app"] = "app.asgi:app" if server == "uvicorn" else "app.wsgi:app"
    return build_spec(raw)


def _rendered(case: tuple[str, bool, str]) -> dict[str, str]:
    return {f.name: f.content for f in render_units(_spec(*case))}


@pytest.fixture(scope="module")
def update(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_golden(case: tuple[str, bool, str], update: bool) -> None:
    directory = GOLDEN / _case_id(*case)
    files = _rendered(case)
    if update:
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.iterdir():
            if old.name not in files:
                old.unlink()
        for name, content in files.items():
            (directory / name).write_bytes(content.encode())
    on_disk = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
    assert on_disk == sorted(files), f"run pytest --update-golden for {directory.name}"
    for name, content in files.items():
        assert (directory / name).read_bytes() == content.encode(), (
            f"{directory.name}/{name} differs from the generator (pytest --update-golden)"
        )


def test_no_stale_golden_directories() -> None:
    assert sorted(p.name for p in GOLDEN.iterdir()) == sorted(IDS)


@needs_analyze
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_golden_units_verify_clean(case: tuple[str, bool, str]) -> None:
    directory = GOLDEN / _case_id(*case)
    for unit in sorted(directory.iterdir()):
        assert verify(unit) == "", unit.name


@needs_analyze
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_security_score(case: tuple[str, bool, str]) -> None:
    _server, socket, profile = case
    score = security_score(GOLDEN / _case_id(*case) / "app.service")
    assert score == EXPECTED_SCORE[(profile, socket)]
    if profile == "default":
        assert score <= (0.5 if socket else 1.0)


@needs_analyze
def test_opskit_reads_the_same_score() -> None:
    unit = GOLDEN / "gunicorn-socket-default" / "app.service"
    assert opskit_security_score(unit) == security_score(unit) == 0.4


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_mission_directives_in_their_sections(case: tuple[str, bool, str]) -> None:
    sections = parse((GOLDEN / _case_id(*case) / "app.service").read_text())
    assert list(sections)[:2] == ["Unit", "Service"]
    # In [Service] systemd ignores StartLimitIntervalSec= with only a warning.
    assert value(sections, "Unit", "StartLimitIntervalSec") == "0"
    assert values(sections, "Service", "StartLimitIntervalSec") == []
    assert value(sections, "Service", "Restart") == "always"
    assert value(sections, "Service", "RestartSec") == "5"
    for key in ("Restart", "RestartSec"):
        assert values(sections, "Unit", key) == []
        assert values(sections, "Install", key) == []


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_server_directives(case: tuple[str, bool, str]) -> None:
    server, socket, profile = case
    sections = parse((GOLDEN / _case_id(*case) / "app.service").read_text())
    argv = exec_words(value(sections, "Service", "ExecStart"))
    service_type = value(sections, "Service", "Type")
    kill_signal = values(sections, "Service", "KillSignal")
    reload = values(sections, "Service", "ExecReload")
    if server == "gunicorn":
        assert argv[0] == "/srv/app/.venv/bin/gunicorn" and argv[-1] == "app.wsgi:app"
        assert service_type == "notify" and reload and not kill_signal
        assert ("--bind" in argv) is not socket
    elif server == "uvicorn":
        assert argv[:2] == ["/srv/app/.venv/bin/python", "-c"] and argv[3] == "app.asgi:app"
        assert argv[argv.index("--http") + 1] == "opskit_uvicorn:DrainingH11Protocol"
        assert service_type == "exec"
        # The default two workers make HUP a reload; fd 3 is the socket unit's.
        assert reload
        assert (argv[argv.index("--fd") + 1] == "3") if socket else "--port" in argv
    elif server == "uwsgi":
        assert argv[0] == "/srv/app/.venv/bin/uwsgi"
        # SIGTERM is "brutal reload" to uWSGI: it is stopped with SIGQUIT.
        assert kill_signal == ["SIGQUIT"] and service_type == "notify" and reload
    else:
        assert argv == ["/srv/app/.venv/bin/python", "-m", "app.serve", "--port", "8000"]
        assert not reload
    assert value(sections, "Service", "KillMode") == "mixed"
    # Longer than the graceful timeout (30 s), so systemd never kills a draining worker.
    assert int(value(sections, "Service", "TimeoutStopSec")) > 30
    assert value(sections, "Service", "WorkingDirectory") == "/srv/app"
    hardened = values(sections, "Service", "NoNewPrivileges")
    assert hardened == ([] if profile == "off" else ["yes"])


@pytest.mark.parametrize(
    "case", [c for c in CASES if c[1]], ids=[_case_id(*c) for c in CASES if c[1]]
)
def test_socket_unit_pairs_with_the_service(case: tuple[str, bool, str]) -> None:
    directory = GOLDEN / _case_id(*case)
    service = parse((directory / "app.service").read_text())
    socket = parse((directory / "app.socket").read_text())
    assert value(socket, "Socket", "ListenStream") == "127.0.0.1:8000"
    assert value(service, "Unit", "Requires") == "app.socket"
    assert "app.socket" in value(service, "Unit", "After").split()
    assert value(service, "Install", "Also") == "app.socket"


# Beyond the matrix: the other shapes a spec takes must verify just as clean.
VARIANTS = {
    "unix socket in the runtime dir": {"unix_socket": "/run/app/app.sock"},
    "unix socket, socket unit": {"unix_socket": "/run/app-socket/app.sock", "socket": True},
    "unix socket in /tmp, static user": {"unix_socket": "/tmp/app.sock", "user": "www"},
    "unix socket in /tmp, socket unit": {"unix_socket": "/tmp/app.sock", "socket": True},
    "unix socket elsewhere, uwsgi": {
        "unix_socket": "/srv/sock/app.sock",
        "server": "uwsgi",
        "socket": True,
    },
    "ipv6 socket unit": {"host": "::1", "socket": True},
    "all interfaces": {"host": "0.0.0.0"},
    "all interfaces, socket unit": {"host": "0.0.0.0", "socket": True},
    "host name": {"host": "example.com"},
    "static user": {"user": "www", "group": "www"},
    "uvicorn single worker": {"server": "uvicorn", "workers": 1},
    "outbound with socket": {"socket": True, "hardening": {"allow_outbound": True}},
    "ip allow list": {"hardening": {"ip_address_allow": ["10.0.0.0/8", "2001:db8::5"]}},
    "ip allow list, socket unit": {"socket": True, "hardening": {"ip_address_allow": ["::1"]}},
    "database by address": {"environment": {"DATABASE_URL": "postgresql://u:p%40ss@10.0.0.5/db"}},
    "database by name": {"environment": {"DATABASE_URL": "postgresql://u@db.internal/db"}},
    "code under home": {"working_directory": "/home/u/app"},
    "allow home and wx": {"hardening": {"allow_home": True, "allow_wx": True}},
    "log config, uwsgi": {"server": "uwsgi", "log_config": "/etc/app/log.json"},
    "log config, uvicorn": {"server": "uvicorn", "log_config": "/etc/app/log.json"},
    "log config, gunicorn": {"log_config": "/etc/app/log.json"},
    "uwsgi without lazy apps, preload": {"server": "uwsgi", "lazy_apps": False, "preload": True},
    "env file and writable paths": {
        "environment_file": "/etc/app/env",
        "hardening": {"writable_paths": ["/var/lib/app", "/srv/my data"]},
    },
    "app factory": {"app": 'app.wsgi:create("prod 100%")'},
    "restart in ms": {"restart_sec": "500ms"},
}


@needs_analyze
@pytest.mark.parametrize("extra", VARIANTS.values(), ids=VARIANTS.keys())
def test_variants_verify_clean(extra: dict[str, object], tmp_path: Path) -> None:
    raw: dict[str, object] = {"name": "app", "app": "app.wsgi:app", **extra}
    for file in render_units(build_spec(raw)):
        (tmp_path / file.name).write_text(file.content)
    for unit in sorted(tmp_path.iterdir()):
        assert verify(unit) == "", unit.read_text()
    sections = parse((tmp_path / "app.service").read_text())
    assert value(sections, "Unit", "StartLimitIntervalSec") == "0"
    assert value(sections, "Service", "Restart") == "always"
