"""Every bad input: exit 2, one line on stderr naming the problem, no traceback, nothing written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

GOOD = ("systemd", "web", "--app", "pkg.wsgi:app")


def snapshot(directory: Path) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    for path in sorted(directory.rglob("*")):
        out[str(path.relative_to(directory))] = path.read_bytes() if path.is_file() else None
    return out


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty current directory with a file and a config the cases can point at."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("not a directory\n")
    (tmp_path / "bad.toml").write_text("name = \n")
    (tmp_path / "unknown.toml").write_text('name = "web"\napp = "a:b"\ncolour = "red"\n')
    (tmp_path / "noapp.toml").write_text('name = "web"\n')
    (tmp_path / "badport.toml").write_text('name = "web"\napp = "a:b"\nport = 0\n')
    for name, text in CONFIGS.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


DEEP = "[" * 5000 + "]" * 5000
#: Config files that no parser step may answer with a traceback.
CONFIGS = {
    "int-tool/pyproject.toml": "tool = 5\n",
    "list-tool/pyproject.toml": 'tool = ["opskit"]\n',
    "string-tool/opskit.toml": 'tool = "opskit"\n',
    "deep-array.toml": f'name = "web"\napp = "a:b"\nx = {DEEP}\n',
    "deep-table.toml": 'name = "web"\napp = "a:b"\n[' + ".".join(["t"] * 5000) + "]\n",
    "twice.toml": 'name = "web"\napp = "a:b"\nworking_directory = "/a"\nworking-directory = "/b"\n',
    "twice-hardening.toml": (
        'name = "web"\napp = "a:b"\n[hardening]\nallow_wx = true\nallow-wx = false\n'
    ),
    "superscript.toml": 'name = "web"\napp = "a:b"\nport = "²"\n',
    "arabic.toml": 'name = "web"\napp = "a:b"\nworkers = "٣"\n',
    "long-line.toml": f'name = "web"\napp = "a:b"\n[environment]\nA = "{"x" * (1 << 20)}"\n',
}


CASES = {
    "port out of range": (["--port", "0"], "port: expected a whole number"),
    "port not a number": (["--port", "http"], "'--port': 'http' is not a whole number"),
    # int() takes these, and int("²") raises: ASCII digits only.
    "port superscript": (["--port", "²"], "'--port': '²' is not a whole number"),
    "port arabic digit": (["--port", "٣"], "'--port': '٣' is not a whole number"),
    "port full-width": (
        ["--port", "\uff18\uff10"],
        "'--port': '\uff18\uff10' is not a whole number",
    ),
    "workers arabic digit": (["--workers", "٣"], "'--workers': '٣' is not a whole number"),
    "--set port superscript": (["--set", 'port="²"'], "port: expected a whole number"),
    "--set graceful-timeout": (
        ["--set", 'graceful-timeout="\uff18\uff10"'],
        "graceful-timeout: expected",
    ),
    "restart-sec arabic": (["--restart-sec", "٣"], "restart-sec: expected a duration"),
    "--set nested deep": (["--set", f"x={DEEP}"], "--set x: nested more than 32 levels"),
    "bad server": (["--server", "nginx"], "server: expected one of"),
    "bad name": (["my app", "--app", "a:b"], "name: 'my app' is not a valid unit name"),
    "template name": (["web@1", "--app", "a:b"], "name: template units"),
    "name too long": (["w" * 248, "--app", "a:b"], "name: at most 247 characters"),
    "unknown option": (["--bogus"], "No such option: --bogus"),
    "missing option value": (["-o"], "requires an argument"),
    "bad app": (["--app", "a b"], "app: expected an import path"),
    "bad --set": (["--set", "port"], "--set: expected KEY=VALUE"),
    "unknown --set key": (["--set", "colour=red"], "unknown key 'colour'"),
    "--set hardening not a table": (["--set", "hardening=1"], "hardening: expected a table"),
    "unknown --set hardening key": (["--set", "hardening.x=1"], "hardening: unknown key 'x'"),
    "bad profile": (["--profile", "paranoid"], "hardening.profile: expected one of"),
    "relative workdir": (["--workdir", "srv"], "working-directory: must be an absolute path"),
    "dotdot workdir": (["--workdir", "/srv/../etc"], "working-directory: must not contain"),
    "env without =": (["--env", "FOO"], "environment: expected NAME=VALUE"),
    "bad env name": (["--env", "1FOO=x"], "environment: invalid name '1FOO'"),
    "newline in env": (["--env", "A=x\nExecStartPre=/bin/sh"], "control character"),
    "undecodable argv": (["--env", "A=\udcff"], "character '\\udcff' is not allowed"),
    "group without user": (["--group", "www"], "group: needs user"),
    "bad user": (["--user", "Root"], "user: 'Root' is not a valid user"),
    "socket on a host name": (["--socket", "--host", "localhost"], "a .socket unit listens"),
    "bad restart-sec": (["--restart-sec", "soon"], "restart-sec: expected a duration"),
    "workers zero": (["--workers", "0"], "workers: expected a whole number"),
    "output is a file": (["-o", "a-file"], "a-file: exists and is not a directory"),
    "output under a file": (["-o", "a-file/sub"], "Not a directory"),
    "missing config": (["--config", "nope.toml"], "--config: no such file"),
    "bad TOML": (["--config", "bad.toml"], "bad.toml: not valid TOML"),
    "unknown config key": (["--config", "unknown.toml"], "unknown.toml: unknown key 'colour'"),
    "bad config value": (["--config", "badport.toml"], "badport.toml: port: expected"),
    "tool an int": (["--config", "int-tool/pyproject.toml"], "'tool' must be a table"),
    "tool a list": (["--config", "list-tool/pyproject.toml"], "'tool' must be a table"),
    "tool a string": (["--config", "string-tool/opskit.toml"], "'tool' must be a table"),
    "nested arrays": (["--config", "deep-array.toml"], "deep-array.toml: nested more than"),
    "nested tables": (["--config", "deep-table.toml"], "deep-table.toml: nested more than"),
    "one key twice": (
        ["--config", "twice.toml"],
        "'working_directory' and 'working-directory' are the same key",
    ),
    "a hardening key twice": (
        ["--config", "twice-hardening.toml"],
        "hardening: 'allow_wx' and 'allow-wx' are the same key",
    ),
    "superscript port in a file": (["--config", "superscript.toml"], "port: expected a whole"),
    "arabic workers in a file": (["--config", "arabic.toml"], "workers: expected a whole"),
    "a line over 1 MiB": (["--config", "long-line.toml"], "systemd reads at most 1048575 bytes"),
}


@pytest.mark.parametrize(("args", "expected"), CASES.values(), ids=CASES.keys())
def test_bad_input(cli, workdir: Path, args: list[str], expected: str | None) -> None:
    before = snapshot(workdir)
    # Flags go after a good command line; a case starting with a name replaces it.
    argv = [*GOOD, *args] if args[0].startswith("-") else ["systemd", *args]
    if "-o" not in args and "--config" not in args:
        argv += ["-o", "out"]
    result = cli(*argv)
    assert result.code == 2, result
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("opskit: error: ")
    if expected:
        assert expected in lines[0]
    assert "Traceback" not in result.err
    assert result.out == ""
    assert snapshot(workdir) == before


@pytest.mark.parametrize(
    "argv",
    [
        ["systemd", "--app", "a:b", "-o", "out"],
        ["systemd", "--config", "noapp.toml", "-o", "out"],
    ],
    ids=["missing name", "missing app"],
)
def test_missing_required_values(cli, workdir: Path, argv: list[str]) -> None:
    before = snapshot(workdir)
    result = cli(*argv)
    assert result.code == 2
    assert len(result.err.splitlines()) == 1
    assert ("name: missing" in result.err) or ("app: required" in result.err)
    assert snapshot(workdir) == before


def test_unknown_command(cli) -> None:
    result = cli("launch")
    assert result.code == 2
    assert result.err == "opskit: error: No such command 'launch'.\n"


def test_no_arguments_prints_help_with_the_usage_code(cli) -> None:
    result = cli()
    assert result.code == 2
    assert "Usage: opskit" in result.err and "systemd" in result.err


def test_unwritable_directory(cli, workdir: Path) -> None:
    # Root may write anywhere a mode allows, so use a directory no one can create files in.
    target = "/proc/self"
    result = cli(*GOOD, "-o", target)
    assert result.code == 2
    assert len(result.err.splitlines()) == 1
    assert result.err.startswith(f"opskit: error: {target}/web.service: cannot write")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory modes")
def test_read_only_directory(cli, workdir: Path) -> None:
    target = workdir / "ro"
    target.mkdir()
    target.chmod(0o500)
    try:
        result = cli(*GOOD, "-o", str(target))
    finally:
        target.chmod(0o700)
    assert result.code == 2
    assert "cannot write: Permission denied" in result.err
    assert list(target.iterdir()) == []


def test_the_installed_entry_point_prints_no_traceback(tmp_path: Path) -> None:
    # Through the real console script path (python -m opskit), not the in-process runner.
    proc = subprocess.run(
        [sys.executable, "-m", "opskit", "systemd", "web", "--app", "a:b", "--port", "99999"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr == (
        "opskit: error: port: expected a whole number from 1 to 65535, got 99999\n"
    )
    assert list(tmp_path.iterdir()) == []
