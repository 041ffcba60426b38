"""Awkward but valid spec values survive the trip through a unit file into a real systemd."""

from __future__ import annotations

import json

import pytest

from opskit.spec import build_spec
from opskit.systemd.units import environment, render_units, server_unit

pytestmark = [pytest.mark.systemd, pytest.mark.timeout(600)]

ARGS = [
    "two  spaced words",
    'double " quote',
    "single ' quote",
    "100% done %n %% %i",
    "back\\slash and trailing\\",
    "ünïcødé ☃",
    "$HOME and ${PATH} and $$",
    ";",
    "",
    "--opt=a=b",
]
ENV = {
    "SPACES": "a b  c ",
    "QUOTES": "he said \"hi\" 'there'",
    "PERCENT": "user%40host %n 100%",
    "BACKSLASH": "C:\\dir\\",
    "UNICODE": "ünï ☃",
    "DOLLAR": "$HOME ${X} $$",
    "EMPTY": "",
    "EQUALS": "a=b=c",
}
WORKDIR = "/srv/dir with space %and ü"


def split_shown(text: str) -> list[str]:
    """Split a list as systemctl show prints it: blank-separated words, double-quoted
    where needed, with a backslash before \\ " ` and $ inside the quotes (shell style,
    which shlex does not undo for $)."""
    words: list[str] = []
    word: list[str] | None = None
    quoted = False
    chars = iter(text)
    for char in chars:
        if char == "\\":
            word = (word or []) + [next(chars)]
        elif char == '"':
            quoted = not quoted
            word = word or []
        elif char == " " and not quoted:
            if word is not None:
                words.append("".join(word))
            word = None
        else:
            word = (word or []) + [char]
    if word is not None:
        words.append("".join(word))
    return words


def test_awkward_values_round_trip(boot, measure):
    spec = build_spec(
        {
            "name": "awkward",
            "server": "command",
            "command": ["/usr/bin/python3", "-c", "import time; time.sleep(3600)", *ARGS],
            "working_directory": WORKDIR,
            "environment": ENV,
            "description": 'A 100% "quoted" \\ description, ünï',
        }
    )
    argv = list(server_unit(spec).argv)
    env = [f"{k}={v}" for k, v in environment(spec)]
    box = boot("roundtrip", app=False)
    box.run("mkdir", "-p", "-m", "0755", WORKDIR)
    box.install_units(render_units(spec))
    box.systemctl("start", "awkward.service")
    props = box.show(
        "awkward.service", "Environment", "ExecStart", "WorkingDirectory", "Description"
    )

    # Environment= as systemctl show prints it, quoted by its rules, split back.
    assert split_shown(props["Environment"]) == env
    assert props["WorkingDirectory"] == WORKDIR
    assert props["Description"] == spec.description
    # ExecStart as systemctl show prints it (words joined by blanks, "$" still escaped
    # as "$$": systemd expands variables only when it executes the command) ...
    stored = [a.replace("$", "$$") for a in argv]
    assert f"argv[]={' '.join(stored)} ;" in props["ExecStart"]
    # ... and word by word from the same D-Bus property systemctl reads.
    bus = box.run(
        "busctl",
        "--json=short",
        "get-property",
        "org.freedesktop.systemd1",
        "/org/freedesktop/systemd1/unit/awkward_2eservice",
        "org.freedesktop.systemd1.Service",
        "ExecStart",
    )
    assert json.loads(bus.stdout)["data"][0][1] == stored

    # What the process really got: exactly the spec's argv and environment.
    pid = box.main_pid("awkward.service")
    cmdline = (box.root / f"proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
    assert cmdline == argv
    environ = (box.root / f"proc/{pid}/environ").read_bytes().decode().split("\0")
    assert set(env) <= set(environ)
    assert box.run("readlink", f"/proc/{pid}/cwd").stdout == WORKDIR + "\n"
    measure(f"round trip: {len(ARGS)} awkward arguments and {len(ENV)} variables exact")


#: An executable path with the characters an Exec line's first word treats specially.
EXE_DIR = "/opt/c$x ${HOME} 100%n $$"


def test_an_executable_path_with_dollars_runs(boot, measure):
    """systemd never expands "$" in the path it executes, but does in argv[0]."""
    exe = f"{EXE_DIR}/python3"
    spec = build_spec(
        {
            "name": "dollar",
            "server": "command",
            "command": [exe, "-c", "import time; time.sleep(3600)", "$HOME"],
            "working_directory": EXE_DIR,
        }
    )
    box = boot("dollarexe", app=False)
    box.run("mkdir", "-p", "-m", "0755", EXE_DIR)
    box.run("ln", "-s", "/usr/bin/python3", exe)
    box.install_units(render_units(spec))
    box.systemctl("start", "dollar.service")
    pid = box.main_pid("dollar.service")
    cmdline = (box.root / f"proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
    assert cmdline == list(server_unit(spec).argv)
    assert box.run("readlink", f"/proc/{pid}/exe").stdout.startswith("/usr/bin/python3")
    measure("an executable under a path with '$', '${', '%' and '$$' runs with its argv exact")
