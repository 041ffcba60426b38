"""The options table: every command that reads the spec takes the app options, docs match it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from opskit.cli import COMMANDS
from opskit.options import SPEC_OPTIONS, options_for
from opskit.spec import SPEC_KEYS

ROOT = Path(__file__).resolve().parent.parent
APP_OPTIONS = [o for o in SPEC_OPTIONS if o.everywhere]
#: Every command that reads the spec, as its words on the command line.
SPEC_COMMANDS = [
    ("systemd",),
    ("logging", "init"),
    ("logging", "check"),
    ("reload-script",),
    ("upgrade",),
    ("makefile",),
    ("bundle",),
    ("doctor",),
    ("deploy",),
    ("rollback",),
    ("releases",),
    ("ansible",),
]


def _kebab(key: str) -> str:
    return key.replace("_", "-")


def test_every_option_sets_a_real_spec_key():
    from opskit.spec import HARDENING_KEYS

    hardening = set(HARDENING_KEYS)
    for option in SPEC_OPTIONS:
        table, dot, key = option.key.rpartition(".")
        if dot:
            assert table == "hardening" and key in hardening, option.key
        else:
            assert key in SPEC_KEYS, option.key
    flags = [f for o in SPEC_OPTIONS for f in o.flags]
    assert len(flags) == len(set(flags)), "a flag is declared twice"


def test_every_command_that_reads_the_spec_is_a_real_command():
    assert {words[0] for words in SPEC_COMMANDS} == set(COMMANDS) - {"init"}
    for option in SPEC_OPTIONS:
        for command in option.commands:
            assert tuple(command.split()) in SPEC_COMMANDS, (option.key, command)


@pytest.mark.parametrize("words", SPEC_COMMANDS, ids=" ".join)
def test_help_shows_every_app_option_and_only_the_commands_own(cli, words):
    result = cli(*words, "--help")
    assert result.code == 0, result.err
    shown = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", result.out))
    for option in options_for(" ".join(words)):
        assert option.flags[0] in shown, (words, option.flags[0])
    others = {o.flags[0] for o in SPEC_OPTIONS} - {o.flags[0] for o in options_for(" ".join(words))}
    # logging check's --logger (a logger to probe) is its own option, not a spec option.
    assert not (others & shown), (words, others & shown)
    assert "App options" in result.out and "Configuration" in result.out


def test_bundle_takes_the_app_options_and_ops_mk_passes_them_on(cli, tmp_path: Path):
    out = tmp_path / "deploy"
    result = cli(
        "bundle",
        "shop",
        "--app",
        "shop.wsgi:app",
        "--workers",
        "1",
        "--env",
        "A=x y",
        "--graceful-timeout",
        "7",
        "--set",
        "hardening.profile=relaxed",
        "-o",
        str(out),
    )
    assert result.code == 0, result.err
    unit = (out / "shop.service").read_text()
    assert "--workers 1" in unit and 'Environment="A=x y"' in unit
    assert "--graceful-timeout 7" in unit and "ProtectSystem=full" in unit
    ops_args = next(
        line for line in (out / "ops.mk").read_text().splitlines() if line.startswith("OPS_ARGS")
    )
    for word in ("--app", "--workers", "--env", "--graceful-timeout", "--set"):
        assert word in ops_args, ops_args
    # The same command line again finds every file identical: the recorded argv is whole.
    again = cli("bundle", "shop", *ops_words(ops_args), "-o", str(out), "--check")
    assert again.code == 0, again.err


def ops_words(line: str) -> list[str]:
    """The shell words of ``OPS_ARGS ?= ...`` as make and sh would pass them."""
    value = line.split("?=", 1)[1].strip().replace("$$", "$")
    done = subprocess.run(
        ["sh", "-c", f'for w in {value}; do printf "%s\\0" "$w"; done'],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.split("\0")[:-1]


def test_doctor_and_reload_script_take_the_app_options(cli, tmp_path: Path):
    reload_out = cli(
        "reload-script",
        "shop",
        "--app",
        "shop.wsgi:app",
        "--workers",
        "3",
        "--unix-socket",
        "/run/shop/app.sock",
        "-o",
        "-",
    )
    assert reload_out.code == 0, reload_out.err
    assert "/run/shop/app.sock" in reload_out.out
    doctor = cli(
        "doctor",
        "shop",
        "--app",
        "shop.wsgi:app",
        "--workers",
        "1",
        "--venv",
        str(tmp_path / "no-venv"),
        "--project",
        str(tmp_path),
        "--json",
    )
    assert "No such option" not in doctor.err
    # It ran its checks for that spec: the venv it was given is the one it looked in.
    assert doctor.code in (0, 1), doctor.err
    assert str(tmp_path / "no-venv") in doctor.out


def _venv_without_pip(path: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    return path


def test_upgrade_takes_venv_without_a_config_file(cli, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    venv = _venv_without_pip(tmp_path / "app venv")
    result = cli("upgrade", "--venv", str(venv), "--installer", "pip", "--dry-run", "pkg==1.0")
    # The interpreter asked is the venv's own: pip is missing there, and it says so.
    assert result.code == 2
    assert result.err.strip() == (
        f"opskit: error: --python {venv}/bin/python: pip is not installed in that environment"
    )


def test_upgrade_python_and_venv_must_agree(cli, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    one = _venv_without_pip(tmp_path / "one")
    two = _venv_without_pip(tmp_path / "two")
    result = cli("upgrade", "--venv", str(one), "--python", str(two / "bin" / "python"), "pkg==1.0")
    assert result.code == 2
    assert len(result.err.strip().splitlines()) == 1
    assert "is not the interpreter of --venv" in result.err
    same = cli("upgrade", "--venv", str(one), "--python", str(one / "bin" / "python3"), "pkg==1.0")
    assert "is not the interpreter of --venv" not in same.err


def test_upgrade_venv_flag_is_validated_like_the_spec(cli, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = cli("upgrade", "--venv", "relative/venv", "pkg==1.0")
    assert result.code == 2
    assert result.err.startswith("opskit: error: venv: must be an absolute path")


def _table(text: str, heading: str) -> list[list[str]]:
    section = text.split(heading, 1)[1].split("\n#", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return [[cell.strip() for cell in re.split(r"(?<!\\)\|", row)[1:-1]] for row in rows]


def test_docs_cli_lists_every_option_with_its_key():
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    shared = _table(text, "## Options shared by every command that reads the spec")
    own = _table(text, "### Spec options of one command")
    for option in SPEC_OPTIONS:
        key = _kebab(option.key)
        rows = shared if option.everywhere else own
        match = [r for r in rows if f"`{option.flags[0]}" in r[0]]
        assert match, f"docs/cli.md does not list {option.flags[0]}"
        assert f"`{key}`" in match[0][1], (option.flags[0], match[0])
        if not option.everywhere:
            assert match[0][2] == ", ".join(f"`{c}`" for c in option.commands), match[0]
    # And nothing there that the table does not declare.
    declared = {f for o in SPEC_OPTIONS for f in o.flags}
    for row in shared[2:-1] + own:
        for flag in re.findall(r"`(--[a-z-]+|-[a-z])", row[0]):
            if not flag.startswith("--no-"):
                assert flag in declared, flag
