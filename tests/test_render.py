"""The renderer: the escaping filters on hard inputs, the strict environment, templates_dir.

The first half is a small reader of systemd unit files and Exec= lines that the golden
and property tests share. It follows systemd.syntax(7) and systemd.service(5) closely
enough to check what opskit writes: sections, repeated keys, line continuations,
comments, and the word splitting of ExecStart= (quotes, C escapes, ``%%`` and ``$$``).
"""

from __future__ import annotations

import re
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

Sections = dict[str, list[tuple[str, str]]]
WHITESPACE = " \t\n\r"


def parse(text: str) -> Sections:
    """Sections in order, each a list of (key, value) pairs with systemd's line rules."""
    sections: Sections = {}
    current: list[tuple[str, str]] | None = None
    pending = ""
    for raw in text.split("\n"):
        line = pending + raw
        pending = ""
        # systemd strips ASCII whitespace only (a no-break space is part of the value).
        stripped = line.strip(WHITESPACE)
        if not stripped or stripped[0] in "#;":
            continue
        # An odd number of trailing backslashes continues the line (systemd.syntax(7)).
        trailing = len(line) - len(line.rstrip("\\"))
        if trailing % 2:
            pending = line[:-1] + " "
            continue
        if stripped.startswith("[") and stripped.endswith("]"):
            name = stripped[1:-1]
            assert name not in sections, f"section [{name}] twice"
            current = sections[name] = []
            continue
        assert current is not None, f"directive outside a section: {line!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not KEY=VALUE: {line!r}"
        current.append((key.strip(WHITESPACE), value.strip(WHITESPACE)))
    return sections


def values(sections: Sections, section: str, key: str) -> list[str]:
    """Every value of ``key`` in ``section`` (a key may repeat)."""
    return [v for k, v in sections.get(section, []) if k == key]


def value(sections: Sections, section: str, key: str) -> str:
    """The one value of ``key`` in ``section``; fails when it is missing or repeated."""
    found = values(sections, section, key)
    assert len(found) == 1, f"{section}/{key}: {found}"
    return found[0]


_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    '"': '"',
    "'": "'",
    "s": " ",
    ";": ";",
}


def _specifiers(word: str) -> str:
    # Only "%%" may appear in what opskit writes; any other specifier is a bug.
    bad = re.findall(r"%(.|$)", word.replace("%%", ""))
    assert not bad, f"unescaped specifier in {word!r}"
    return word.replace("%%", "%")


def exec_words(line: str) -> list[str]:
    """Split an ExecStart= value into argv the way systemd does (quotes, escapes, %%, $$)."""
    words: list[str] = []
    i = 0
    n = len(line)
    while True:
        while i < n and line[i] in " \t":
            i += 1
        if i >= n:
            return words
        word = ""
        quote: str | None = None
        started = False
        while i < n:
            c = line[i]
            if quote is None and c in " \t":
                break
            if c == "\\":
                nxt = line[i + 1]
                assert nxt in _ESCAPES, f"unknown escape \\{nxt} in {line!r}"
                word += _ESCAPES[nxt]
                i += 2
                started = True
                continue
            if quote is None and c in "\"'" and not started:
                quote = c
                i += 1
                started = True
                continue
            if quote is not None and c == quote:
                quote = None
                i += 1
                continue
            word += c
            started = True
            i += 1
        assert quote is None, f"unbalanced quotes in {line!r}"
        words.append(_dollars(_specifiers(word)))


def _dollars(word: str) -> str:
    # "$$" is a literal "$"; a lone "$NAME" or "${NAME}" would be expanded by systemd.
    bad = re.findall(r"\$(?:\{|[A-Za-z_])", word.replace("$$", ""))
    assert not bad, f"variable expansion in {word!r}"
    return word.replace("$$", "$")


def env_assignment(raw: str) -> tuple[str, str]:
    """Undo one Environment= value as opskit writes it (one quoted NAME=VALUE word)."""
    words = exec_words(raw.replace("$", "$$"))
    assert len(words) == 1, f"Environment= holds {len(words)} words: {raw!r}"
    name, sep, val = words[0].partition("=")
    assert sep
    return name, val


def security_score(unit: Path) -> float:
    """``systemd-analyze security --offline=yes``'s overall exposure for a unit file."""
    proc = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout)
    assert match, proc.stdout + proc.stderr
    return float(match.group(1))


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
    # ReadWritePaths= splits like Exec lines but expands no "$": compare with "$" doubled.
    assert exec_words(rendered.replace("$", "$$")) == [text]


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
