"""`opskit systemd --install` proves the app serves, and says the real cause when it does not."""

from __future__ import annotations

import pytest

from tests.real_systemd import nspawn
from tests.real_systemd.demo import APP_DIR, squat, url

pytestmark = [pytest.mark.systemd, pytest.mark.timeout(600)]

OPSKIT = f"{nspawn.TOOL_VENV}/bin/opskit"
UNIT_DIR = "/etc/systemd/system"


def args(server: str = "gunicorn", app: str = "demoapp:app", *extra: str) -> tuple[str, ...]:
    return (
        "systemd",
        "demo",
        "--server",
        server,
        "--app",
        app,
        "--workdir",
        APP_DIR,
        "--venv",
        nspawn.SERVERS_VENV,
        "--graceful-timeout",
        "5",
        "--set",
        "health-path=/health",
        *extra,
    )


def install(box, *argv: str, timeout: float = 240):
    return box.run(OPSKIT, *argv, "--install", "--enable", check=False, timeout=timeout)


@pytest.mark.parametrize("server", ["gunicorn", "uwsgi"])
def test_a_wrong_app_path_is_refused_before_anything_is_installed(boot, server):
    box = boot(f"wrong-app-{server}")
    done = install(box, *args(server, "demoap:app"))
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("opskit: error:")]
    assert len(errors) == 1, done.stderr
    assert "No module named 'demoap'" in errors[0]
    assert "nothing installed" in errors[0]
    assert box.run("test", "-e", f"{UNIT_DIR}/demo.service", check=False).returncode != 0


def test_a_healthy_service_is_proven_to_serve(boot):
    box = boot("serves")
    done = install(box, *args())
    assert done.returncode == 0, done.stderr
    assert "serving    demo.service: 5 answers in a row (GET /health: 200)" in done.stderr
    assert box.http_get(url("/health")).status == 200


def test_an_app_the_service_user_cannot_read_fails_with_its_journal(boot, demo_dir):
    # Root (opskit) can import it; the service's dynamic user cannot read the file: the
    # import check passes, the service does not serve, and the journal says why.
    (demo_dir / "demoapp.py").chmod(0o600)
    box = boot("unreadable")
    done = install(box, *args("uwsgi"))
    assert done.returncode == 1, done.stderr
    assert "demo.service does not serve" in done.stderr
    assert "state    demo.service:" in done.stderr
    assert "journal  (journalctl -u demo.service" in done.stderr
    # uWSGI's own words for a worker that could not load the app.
    assert "Permission denied" in done.stderr or "no app loaded" in done.stderr, done.stderr


def test_a_foreign_process_on_the_port_is_named(boot):
    box = boot("port-held")
    squat(box)
    for server in ("gunicorn", "uvicorn"):
        app = "demoapp:asgi" if server == "uvicorn" else "demoapp:app"
        done = box.run(
            OPSKIT, *args(server, app), "--install", "--enable", "--force", check=False, timeout=240
        )
        assert done.returncode == 1, done.stderr
        assert "port 8000 is held by pid" in done.stderr, done.stderr
        assert "http.server --bind 127.0.0.1 8000" in done.stderr, done.stderr
        box.systemctl("stop", "demo.service", check=False)
        box.systemctl("reset-failed", "demo.service", check=False)


def test_switching_to_a_socket_and_back_under_install(boot):
    box = boot("socket-switch")
    plain = install(box, *args(), "--restart")
    assert plain.returncode == 0, plain.stderr
    to_socket = install(box, *args("gunicorn", "demoapp:app", "--socket"), "--force", "--restart")
    assert to_socket.returncode == 0, to_socket.stderr
    assert "stop demo.service (to move it behind demo.socket)" in to_socket.stderr
    assert box.systemctl("is-active", "demo.socket").strip() == "active"
    assert box.http_get(url("/health")).status == 200
    back = install(box, *args(), "--force", "--restart")
    assert back.returncode == 0, back.stderr
    assert "disable --now demo.socket, removed (no longer generated)" in back.stderr
    assert box.run("test", "-e", f"{UNIT_DIR}/demo.socket", check=False).returncode != 0
    assert box.systemctl("is-active", "demo.socket", check=False).strip() != "active"
    assert box.http_get(url("/health")).status == 200
    # The service binds the port itself again: its own process holds the socket.
    main = box.main_pid("demo.service")
    holders = box.run("ss", "-Hltnp", "sport = :8000").stdout
    assert f"pid={main}," in holders or "gunicorn" in holders, holders


@pytest.mark.parametrize(
    ("server", "app"),
    [("gunicorn", "demoapp:app"), ("uvicorn", "demoapp:asgi"), ("uwsgi", "demoapp:app")],
)
def test_a_unix_socket_serves_under_the_default_profile(boot, server, app):
    # gunicorn chowns the socket it binds: without SystemCallFilter=@chown after
    # ~@privileged, the bind fails with EPERM and gunicorn exits.
    box = boot(f"unix-{server}")
    done = install(box, *args(server, app, "--unix-socket", "/run/demo/app.sock"))
    assert done.returncode == 0, done.stderr
    assert "serving    demo.service: 5 answers in a row (GET /health: 200)" in done.stderr
    answer = box.run("curl", "-sf", "--unix-socket", "/run/demo/app.sock", "http://x/health")
    assert answer.stdout.strip() == "ok"
