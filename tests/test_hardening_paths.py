"""Hardening is never relaxed to the system's own directories; root draws a warning.

A writable path, or the directory of a unix socket the server creates (which becomes a
ReadWritePaths= entry), that is /etc, /usr ... or / itself would undo ProtectSystem= for
the whole service: refused with one line, exit 2, nothing written.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from opskit.errors import SpecError
from opskit.spec import build_spec
from opskit.systemd.units import render_units
from tests.conftest import needs_analyze, verify
from tests.unitfile import list_words, parse, value, values

APP = ("systemd", "shop", "--app", "shop.wsgi:app")
SYSTEM = [
    "/etc",
    "/usr",
    "/boot",
    "/efi",
    "/proc",
    "/sys",
    "/dev",
    "/home",
    "/root",
    "/var",
    "/run",
]


def refused(result, key: str, given: str, out: Path) -> None:
    assert result.code == 2, result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert "Traceback" not in result.err
    assert f"{key}: " in lines[0] and repr(given) in lines[0]
    assert not out.exists() or list(out.iterdir()) == []


def writable(cli, out: Path, *args: str) -> list[str]:
    """The ReadWritePaths= of the unit these flags give, checked by systemd-analyze verify."""
    result = cli(*APP, *args, "-o", str(out))
    assert result.code == 0, result.err
    if shutil.which("systemd-analyze"):
        assert verify(out / "shop.service") == ""
    found = values(parse((out / "shop.service").read_text()), "Service", "ReadWritePaths")
    return [word for line in found for word in list_words(line)]


@pytest.mark.parametrize(
    "path",
    [
        *SYSTEM,
        "/",
        # The same directories, spelled as systemd and the kernel still read them.
        "//",
        "//etc",
        "/etc/",
        "/usr//",
        "///var/",
        # A symlink to /run on every systemd system; ReadWritePaths= follows it.
        "/var/run",
    ],
)
def test_a_system_directory_is_never_writable(cli, tmp_path: Path, path: str) -> None:
    out = tmp_path / "units"
    result = cli(*APP, "--writable", "/srv/shop/data", "--writable", path, "-o", str(out))
    refused(result, "hardening.writable-paths", path, out)
    # What to use instead: a directory of the app's own, or its state directory; it works.
    assert "/srv/shop/data" in result.err and "/var/lib/shop" in result.err
    assert writable(cli, out, "--writable", "/srv/shop/data") == ["/srv/shop/data"]


@pytest.mark.parametrize("profile", ["default", "relaxed", "off"])
def test_the_config_file_is_refused_alike(tmp_path: Path, profile: str) -> None:
    with pytest.raises(SpecError, match=r"^hardening\.writable-paths: ReadWritePaths='/' "):
        build_spec(
            {
                "name": "shop",
                "app": "shop.wsgi:app",
                "hardening": {"profile": profile, "writable_paths": ["/"]},
            }
        )


@pytest.mark.parametrize(
    "socket",
    [
        "/etc/shop.sock",
        "/a.sock",
        "/run/shop.sock",
        "//run/shop.sock",
        "/var/shop.sock",
        "/home/shop.sock",
        "/root/shop.sock",
        "/usr//shop.sock",
        "/var/run/shop.sock",
    ],
)
@pytest.mark.parametrize("profile", ["default", "relaxed"])
def test_a_socket_the_server_creates_never_opens_a_system_directory(
    cli, tmp_path: Path, socket: str, profile: str
) -> None:
    out = tmp_path / "units"
    result = cli(
        *APP, "--unix-socket", socket, "--user", "www", "--profile", profile, "-o", str(out)
    )
    refused(result, "unix-socket", socket, out)
    name = socket.rsplit("/", 1)[1]
    for fix in (f"/run/shop/{name}", f"/srv/shop/run/{name}", "--socket"):
        assert fix in result.err
    # Each fix works: the runtime directory is writable already, a directory of its own
    # is made writable, and with --socket systemd creates the socket, sandbox untouched.
    user = ("--user", "www", "--profile", profile)
    assert writable(cli, out / "run", "--unix-socket", f"/run/shop/{name}", *user) == []
    own = writable(cli, out / "own", "--unix-socket", f"/srv/shop/run/{name}", *user)
    assert own == ["/srv/shop/run"]
    assert writable(cli, out / "socket", "--unix-socket", socket, "--socket", *user) == []


def test_a_root_service_draws_a_warning(cli, tmp_path: Path) -> None:
    result = cli(*APP, "--user", "root", "-o", str(tmp_path))
    assert result.code == 0, result.err
    warnings = [line for line in result.err.splitlines() if line.startswith("warning")]
    assert len(warnings) == 1, result.err
    assert "user: root" in warnings[0] and "leave user unset" in warnings[0]
    assert (tmp_path / "shop.service").is_file()

    other = cli(*APP, "--user", "www", "-o", str(tmp_path / "www"))
    assert other.code == 0, other.err
    assert "user: root" not in other.err


@needs_analyze
@pytest.mark.parametrize("server", ["gunicorn", "uvicorn", "uwsgi", "command"])
def test_the_default_profile_hides_host_proc_files_and_ipc(tmp_path: Path, server: str) -> None:
    raw: dict[str, object] = {"name": "shop", "server": server}
    if server == "command":
        raw["command"] = ["/usr/bin/python3", "-m", "http.server"]
    else:
        raw["app"] = "shop.asgi:app" if server == "uvicorn" else "shop.wsgi:app"
    default = render_units(build_spec(raw))[0].content
    sections = parse(default)
    assert value(sections, "Service", "ProcSubset") == "pid"
    assert value(sections, "Service", "PrivateIPC") == "yes"
    (tmp_path / "shop.service").write_text(default)
    assert verify(tmp_path / "shop.service") == ""
    # Only the default profile: relaxed is for the apps the default breaks.
    relaxed = render_units(build_spec({**raw, "hardening": {"profile": "relaxed"}}))[0].content
    assert "ProcSubset=" not in relaxed and "PrivateIPC=" not in relaxed
