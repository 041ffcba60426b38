"""The renderer: the escaping filters on hard inputs, the strict environment, templates_dir.

The filters are checked against tests/unitfile.py, a small reader of unit files and
Exec= lines that follows systemd's own rules.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import jinja2
import pytest

from opskit import render
from opskit.render import (
    RenderedFile,
    make_var,
    shell_quote,
    systemd_env,
    systemd_exec,
    systemd_exec_arg,
    systemd_value,
    systemd_word,
)
from tests.conftest import needs_analyze, verify
from tests.unitfile import env_assignment, exec_words, list_words

# --- the filters --------------------------------------------------------------------------

HARD = [
    "plain",
    "",
    " ",
    "two words",
    "tab\there",
    "100%",
    "%n %i %%",
    "$HOME",
    "${HOME}",
    "$$",
    "a$",
    'say "hi"',
    "it's",
    "back\\slash",
    "ends\\",
    "\\\\",
    ";",
    "a;b",
    ";;",
    "-leading-dash",
    "@at",
    "+plus",
    "!bang",
    "ünïcödé ✓ 日本",
    "#hash",
    "=equals=",
    "{{ jinja }}",
]


@pytest.mark.parametrize("text", HARD)
def test_exec_arg_round_trips_through_systemd_word_splitting(text: str) -> None:
    rendered = systemd_exec_arg(text)
    assert "\n" not in rendered
    assert exec_words(f"/bin/true {rendered}") == ["/bin/true", text]


def test_exec_arg_escapes_exactly() -> None:
    assert systemd_exec_arg("plain") == "plain"
    assert systemd_exec_arg("100%") == "100%%"
    assert systemd_exec_arg("$HOME") == "$$HOME"
    assert systemd_exec_arg("") == '""'
    assert systemd_exec_arg(";") == "\\;"
    assert systemd_exec_arg("a;b") == "a;b"
    assert systemd_exec_arg("two words") == '"two words"'
    assert systemd_exec_arg('say "hi"') == '"say \\"hi\\""'
    assert systemd_exec_arg("back\\slash") == '"back\\\\slash"'
    assert systemd_exec_arg("it's") == '"it\'s"'
    assert systemd_exec_arg("ünï") == "ünï"


def test_exec_joins_a_whole_argv() -> None:
    argv = ["/srv/app/.venv/bin/python", "-c", "print('%s' % 1)", "", ";", "a b"]
    line = systemd_exec(argv)
    assert exec_words(line) == argv
    assert systemd_exec(tuple(argv)) == line


@pytest.mark.parametrize("text", HARD)
def test_env_round_trips(text: str) -> None:
    rendered = systemd_env(("NAME", text))
    assert rendered.startswith('"') and rendered.endswith('"')
    assert env_assignment(rendered) == ("NAME", text)


def test_env_escapes_percent_not_dollar() -> None:
    # Environment= does no $ expansion, so "$" stays single; "%" is still a specifier.
    assert systemd_env(("URL", "postgres://u:p%40ss@h/$db")) == '"URL=postgres://u:p%%40ss@h/$db"'
    assert systemd_env(("E", "")) == '"E="'
    assert systemd_env(("Q", 'a"b\\c')) == '"Q=a\\"b\\\\c"'


@pytest.mark.parametrize("text", HARD)
def test_value_doubles_percent_and_nothing_else(text: str) -> None:
    assert systemd_value(text) == text.replace("%", "%%")


@pytest.mark.parametrize("text", HARD)
def test_word_is_one_word(text: str) -> None:
    rendered = systemd_word(text)
    # ReadWritePaths= splits like Exec lines but expands no "$".
    assert list_words(rendered) == [text]


def test_word_quotes_only_when_needed() -> None:
    assert systemd_word("/srv/app") == "/srv/app"
    assert systemd_word("/srv/my app") == '"/srv/my app"'
    assert systemd_word("/srv/100%") == "/srv/100%%"
    assert systemd_word("") == '""'


@pytest.mark.parametrize("text", [*HARD, "'", "a'b'c", "new\nline", "-n"])
def test_shell_quote_round_trips_through_a_real_shell(text: str) -> None:
    out = subprocess.run(
        ["sh", "-c", f"printf '%s' {shell_quote(text)}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out == text


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize("text", ["plain", "$HOME", "a#b", "\\#", "ends\\", "  lead", "100%"])
def test_make_var_round_trips_through_gnu_make(text: str, tmp_path: Path) -> None:
    makefile = tmp_path / "Makefile"
    makefile.write_text(f"V := {make_var(text)}\nall:\n\t@printf '%s' '$(V)'\n")
    out = subprocess.run(
        ["make", "-s", "-f", str(makefile)], capture_output=True, text=True, check=True
    ).stdout
    assert out == text


def test_filters_are_registered_once_in_the_one_environment() -> None:
    env = render.environment()
    assert env is render.environment()
    for name in ("systemd_value", "systemd_word", "systemd_exec", "systemd_env", "shell_quote"):
        assert env.filters[name] is render.FILTERS[name]
    assert env.undefined is jinja2.StrictUndefined
    assert env.keep_trailing_newline and not env.autoescape


def test_a_missing_variable_is_an_error_not_empty_text() -> None:
    template = render.environment().from_string("Description={{ missing }}\n")
    with pytest.raises(jinja2.UndefinedError):
        template.render()


def test_no_html_escaping() -> None:
    template = render.environment().from_string("{{ v }}")
    assert template.render(v="<a & 'b'>") == "<a & 'b'>"


def test_templates_dir_holds_the_systemd_templates() -> None:
    directory = render.templates_dir()
    assert (directory / "systemd" / "service.j2").is_file()
    assert (directory / "systemd" / "socket.j2").is_file()


def test_rendered_file_defaults_to_a_plain_mode() -> None:
    file = RenderedFile("x.service", "text")
    assert file.mode == 0o644
    with pytest.raises(AttributeError):
        file.name = "y"  # type: ignore[misc]


@needs_analyze
def test_hard_exec_args_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    # One unit with every hard input as an argument: systemd must accept each one.
    argv = ["/usr/bin/printf", *HARD]
    unit = tmp_path / "hard.service"
    unit.write_text(
        f"[Unit]\nDescription={systemd_value('%d 100%')}\n"
        "[Service]\nType=exec\n"
        f"ExecStart={systemd_exec(argv)}\n"
        + "".join(f"Environment={systemd_env((f'V{i}', t))}\n" for i, t in enumerate(HARD))
        + f"ReadWritePaths={' '.join(systemd_word('/srv/' + t) for t in HARD if t)}\n"
    )
    assert verify(unit) == ""
