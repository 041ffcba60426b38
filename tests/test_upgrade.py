"""opskit upgrade without pip: pins, the plan, pip check's lines, history, bad input.

The real pip runs in tests/test_upgrade_pip.py.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from opskit.errors import UsageError
from opskit.upgrade.environment import Distribution, Environment
from opskit.upgrade.history import append_history, prune_snapshots
from opskit.upgrade.installer import pip_install_argv
from opskit.upgrade.lock import _header_command, _pinned
from opskit.upgrade.pins import Pin, parse_pins
from opskit.upgrade.pipcheck import Problem, parse_pip_check
from opskit.upgrade.plan import Change, build_plan
from opskit.upgrade.smoke import smoke_argv
from opskit.upgrade.snapshot import _wheel_tags, wheel_from_installed

# --- pins --------------------------------------------------------------------------------


def test_pins_are_normalised():
    assert parse_pins(["Foo_Bar==1.2", "zope.interface==6.0", "x==1.0+local"]) == (
        Pin("foo-bar", "1.2"),
        Pin("zope-interface", "6.0"),
        Pin("x", "1.0+local"),
    )
    assert Pin("foo-bar", "1.2").requirement == "foo-bar==1.2"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("foo", "must be an exact pin NAME==VERSION"),
        ("foo>=1.0", "must be an exact pin"),
        ("foo~=1.0", "must be an exact pin"),
        ("foo==1.0,<2", "must be an exact pin"),
        ("foo===1.0", "must be an exact pin"),
        ("foo!=1.0", "must be an exact pin"),
        ("foo==1.*", "a wildcard is not an exact pin"),
        ("foo[extra]==1.0", "extras are not installed with --no-deps"),
        ("foo==1.0; python_version > '3'", "markers are not supported"),
        ("foo @ https://example.invalid/foo-1.0.whl", "a URL is not a pin"),
        ("pip==24.0", "not for pip itself"),
        ("foo==1.0 ; %%%", "not a valid requirement"),
        ("", "not a valid requirement"),
        ("foo==1.0\nbar==2.0", "not a valid requirement"),
    ],
)
def test_bad_pins_are_usage_errors(text, reason):
    with pytest.raises(UsageError) as err:
        parse_pins([text])
    assert reason in str(err.value)
    assert "\n" not in str(err.value).replace(repr(text), "")


def test_a_package_given_twice_is_refused():
    with pytest.raises(UsageError, match="foo-bar is given twice"):
        parse_pins(["foo_bar==1.0", "Foo-Bar==2.0"])


@given(st.text(max_size=30))
def test_any_text_is_a_pin_or_a_usage_error(text):
    try:
        pins = parse_pins([text])
    except UsageError as exc:
        assert str(exc)
    else:
        assert len(pins) == 1 and pins[0].version


# --- the plan -----------------------------------------------------------------------------


def environment(**installed: str) -> Environment:
    return Environment(
        python="/venv/bin/python",
        prefix="/venv",
        base_prefix="/usr",
        version="3.11.7",
        scripts="/venv/bin",
        purelib="/venv/lib/python3.11/site-packages",
        platlib="/venv/lib/python3.11/site-packages",
        has_pip=True,
        installed={
            name: Distribution(name, version, f"/venv/lib/{name}-{version}.dist-info")
            for name, version in installed.items()
        },
    )


def test_plan_says_what_changes():
    env = environment(a="1.0", b="2.0", c="1.0", d="1.0.0")
    pins = parse_pins(["a==1.1", "b==1.9", "c==1.0", "d==1.0", "e==0.1"])
    plan = build_plan(pins, env)
    assert [(c.name, c.old, c.new, c.action) for c in plan.changes] == [
        ("a", "1.0", "1.1", "upgrade"),
        ("b", "2.0", "1.9", "downgrade"),
        ("c", "1.0", "1.0", "unchanged"),
        # 1.0 and 1.0.0 are the same version (PEP 440): nothing to do.
        ("d", "1.0.0", "1.0", "unchanged"),
        ("e", None, "0.1", "install"),
    ]
    assert [p.name for p in plan.pins] == ["a", "b", "e"]
    assert plan.changed
    assert not build_plan(parse_pins(["c==1.0"]), env).changed


def test_install_command_is_an_argument_list():
    argv = pip_install_argv("/venv/bin/python", [Pin("a", "1.1")], ["--no-index"])
    assert argv[:5] == ["/venv/bin/python", "-I", "-m", "pip", "install"]
    assert "--no-deps" in argv and "--force-reinstall" in argv
    assert argv[-2:] == ["--no-index", "a==1.1"]


def test_change_describes_itself():
    assert Change("a", None, "1.0", "install").describe() == "a (not installed) -> 1.0 (install)"
    assert Change("a", "1.0", "1.0", "unchanged").describe() == "a 1.0 (unchanged)"


# --- pip check's lines ----------------------------------------------------------------------

# As pip 23 to 26 print them.
PIP_CHECK_OUTPUT = """\
Foo-Bar 1.0 has requirement alpha<4,>=2.5, but you have alpha 2.4.
beta 1.0 requires Zope.Interface, which is not installed.
gamma 2.0 is not supported on this platform
ui 9.0 has requirement ui-core==9.0; os_name == "nt", but you have ui-core 8.0.
something pip has not printed before
"""


def test_pip_check_lines_are_parsed():
    problems = parse_pip_check(PIP_CHECK_OUTPUT)
    assert [(p.kind, p.package, p.version, p.dependency) for p in problems] == [
        ("conflict", "foo-bar", "1.0", "alpha"),
        ("missing", "beta", "1.0", "zope-interface"),
        ("unsupported", "gamma", "2.0", None),
        ("conflict", "ui", "9.0", "ui-core"),
        ("other", "", "", None),
    ]
    assert problems[0].requirement == "alpha<4,>=2.5" and problems[0].installed == "2.4"
    assert problems[3].requirement == 'ui-core==9.0; os_name == "nt"'
    assert problems[3].installed == "8.0"
    assert problems[4].line == "something pip has not printed before"
    assert parse_pip_check("No broken requirements found.\n") == []


def test_which_problems_the_upgrade_caused():
    conflict, missing, unsupported, _, other = parse_pip_check(PIP_CHECK_OUTPUT)
    assert conflict.involves(["alpha"]) and conflict.involves(["foo-bar"])
    assert not conflict.involves(["beta"])
    assert missing.involves(["zope-interface"])
    assert unsupported.involves(["gamma"]) and not unsupported.involves(["alpha"])
    # A line opskit cannot read might be anyone's: it counts against the upgrade.
    assert other.involves(["anything"])
    assert Problem("missing", "a", "1", "a 1 requires b").as_dict()["kind"] == "missing"


# --- history, snapshots, lock header ---------------------------------------------------------


def test_history_is_appended_one_json_line_each(tmp_path):
    path = tmp_path / "state" / "history.jsonl"
    append_history(path, {"result": "ok", "packages": ["a"]})
    append_history(path, {"result": "rolled-back", "note": "line\nbreak é"})
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["result"] for line in lines] == ["ok", "rolled-back"]
    assert json.loads(lines[1])["note"] == "line\nbreak é"


def test_old_snapshots_are_pruned(tmp_path):
    for i in range(8):
        (tmp_path / f"2026010{i}T000000-1").mkdir()
    prune_snapshots(tmp_path, keep=5)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"2026010{i}T000000-1" for i in (3, 4, 5, 6, 7)
    ]
    prune_snapshots(tmp_path / "missing")


def test_wheel_tags_from_the_wheel_file():
    assert _wheel_tags("Wheel-Version: 1.0\nTag: py3-none-any\n") == "py3-none-any"
    two = "Tag: py2-none-any\nTag: py3-none-any\n"
    assert _wheel_tags(two) == "py2.py3-none-any"
    many = "Tag: cp311-cp311-manylinux_2_17_x86_64\nTag: cp311-cp311-manylinux2014_x86_64\n"
    assert _wheel_tags(many) == "cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64"
    assert _wheel_tags("Wheel-Version: 1.0\n") == "py3-none-any"


def test_lock_header_and_pins_are_read():
    text = (
        "#\n# This file is autogenerated by pip-compile with Python 3.11\n"
        "# by the following command:\n#\n#    pip-compile --generate-hashes requirements.in\n#\n"
        "Alpha_One==1.0 \\\n    --hash=sha256:abc\nbeta[x]==2.0 ; python_version > '3'\n"
        "    # via -r requirements.in\n"
    )
    assert _header_command(text) == "pip-compile --generate-hashes requirements.in"
    assert _header_command("alpha==1.0\n") is None
    assert _pinned(text) == {"alpha-one": "1.0", "beta": "2.0"}


def test_smoke_command_is_split_like_a_shell_would():
    assert smoke_argv("python -c 'import myapp'") == ["python", "-c", "import myapp"]
    with pytest.raises(UsageError, match="cannot split"):
        smoke_argv("python -c 'import")
    with pytest.raises(UsageError, match="empty"):
        smoke_argv("   ")


# --- the command line: bad input is exit 2, one line, nothing written ---------------------------


@pytest.fixture
def empty_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["foo>=1"], "'foo>=1': must be an exact pin NAME==VERSION"),
        (["foo==1.*"], "a wildcard is not an exact pin"),
        (["foo==1", "--python", "no/such/python"], "--python no/such/python: no such file"),
        (["foo==1", "--smoke", "python -c 'x"], "--smoke: cannot split"),
        (["foo==1", "--config", "missing.toml"], "--config: no such file"),
        (["foo==1", "--python", "/bin/true"], "/bin/true: not a working Python interpreter"),
        (["foo==1", "--smoke", "no-such-smoke-program"], "'no-such-smoke-program' not found"),
    ],
)
def test_bad_input_is_one_line_exit_2_nothing_written(cli, empty_dir, argv, message):
    history = empty_dir / "history.jsonl"
    result = cli("upgrade", *argv, "--history", str(history))
    assert result.code == 2, result.err
    assert result.err.count("\n") == 1 and result.err.startswith("opskit: error: ")
    assert message in result.err
    assert "Traceback" not in result.err
    assert list(empty_dir.iterdir()) == []


def test_no_requirement_is_a_usage_error(cli, empty_dir):
    result = cli("upgrade")
    assert result.code == 2
    assert "give the exact pins to install (NAME==VERSION), or --recover, --status" in result.err
    assert len(result.err.splitlines()) == 1


@pytest.mark.parametrize("flag", ["--recover", "--status"])
def test_recover_and_status_take_no_pins(cli, empty_dir, flag):
    result = cli("upgrade", flag, "a==1")
    assert result.code == 2
    assert (
        result.err == "opskit: error: --recover and --status take no REQ: run them on their own\n"
    )


def test_spec_venv_that_does_not_exist_is_named(cli, empty_dir):
    (empty_dir / "opskit.toml").write_text(
        'name = "myapp"\napp = "myapp.wsgi:app"\nvenv = "/nonexistent/venv"\n'
    )
    result = cli("upgrade", "foo==1.0")
    assert result.code == 2
    assert "/nonexistent/venv/bin/python (the spec's venv) does not exist" in result.err


def test_dry_run_on_this_interpreter(cli, empty_dir):
    # Reads the environment (one interpreter start), runs no pip: nothing can change.
    from importlib.metadata import version

    have = version("packaging")
    same = cli("upgrade", f"packaging=={have}", "--dry-run", "--python", sys.executable)
    assert same.code == 0, same.err
    assert f"packaging {have} (unchanged)" in same.out
    other = cli("upgrade", "packaging==0.1", "--dry-run", "--json", "--python", sys.executable)
    assert other.code == 1, other.err
    data = json.loads(other.out)
    assert data["result"] == "dry-run"
    assert data["packages"] == [
        {"name": "packaging", "from": have, "to": "0.1", "action": "downgrade"}
    ]
    assert data["commands"][0].endswith("--no-deps --force-reinstall packaging==0.1")
    assert list(empty_dir.iterdir()) == []


# --- the snapshot wheel, from an installed tree laid out by hand ------------------------------


def installed_tree(root: Path) -> tuple[Environment, Distribution]:
    """A venv-like tree holding 'demo 1.0' as pip would have installed it."""
    site = root / "lib" / "python3.11" / "site-packages"
    info = site / "demo-1.0.dist-info"
    files = {
        site / "demo" / "__init__.py": b"VERSION = '1.0'\n",
        site / "demo" / "__pycache__" / "__init__.cpython-311.pyc": b"\0bytecode",
        info / "METADATA": b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n",
        info / "WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        info / "entry_points.txt": b"[console_scripts]\ndemo = demo:main\n",
        info / "INSTALLER": b"pip\n",
        info / "REQUESTED": b"",
        info / "direct_url.json": b'{"url": "file:///src/demo", "dir_info": {}}',
        root / "bin" / "demo": b"#!/venv/bin/python\n# entry point wrapper\n",
        root / "bin" / "demo-tool": b"#!/venv/bin/python\nprint('tool')\n",
        root / "share" / "demo" / "notes.txt": "notes, é\n".encode(),
    }
    for path, body in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
    (root / "bin" / "demo-tool").chmod(0o755)
    rows = [os.path.relpath(p, site) + ",," for p in files]
    rows.append("demo-1.0.dist-info/RECORD,,")
    rows.append("demo/gone.py,,")  # listed, but deleted since: nothing to keep
    (info / "RECORD").write_text("\n".join(rows) + "\n")
    env = Environment(
        python=str(root / "bin" / "python"),
        prefix=str(root),
        base_prefix="/usr",
        version="3.11.7",
        scripts=str(root / "bin"),
        purelib=str(site),
        platlib=str(site),
        has_pip=True,
        installed={},
    )
    return env, Distribution("demo", "1.0", str(info))


def test_snapshot_wheel_carries_what_pip_will_not_write_again(tmp_path):
    import base64
    import hashlib
    import zipfile

    env, demo = installed_tree(tmp_path / "venv")
    wheel = wheel_from_installed(demo, env, tmp_path / "snap")
    assert wheel.name == "demo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert names == {
            "demo/__init__.py",
            "demo-1.0.dist-info/METADATA",
            "demo-1.0.dist-info/WHEEL",
            "demo-1.0.dist-info/entry_points.txt",
            "demo-1.0.dist-info/direct_url.json",
            "demo-1.0.dist-info/RECORD",
            # Not an entry point: kept, byte for byte, at the same place under the prefix.
            "demo-1.0.data/data/bin/demo-tool",
            "demo-1.0.data/data/share/demo/notes.txt",
        }
        info = archive.getinfo("demo-1.0.data/data/bin/demo-tool")
        assert (info.external_attr >> 16) & 0o111
        record = archive.read("demo-1.0.dist-info/RECORD").decode()
        for line in record.splitlines():
            name, digest, size = line.rsplit(",", 2)
            if name.endswith("RECORD"):
                continue
            body = archive.read(name)
            expect = base64.urlsafe_b64encode(hashlib.sha256(body).digest()).rstrip(b"=")
            assert digest == "sha256=" + expect.decode() and int(size) == len(body)


def test_snapshot_refuses_what_it_cannot_rebuild(tmp_path):
    from opskit.errors import OperationFailed

    env, demo = installed_tree(tmp_path / "venv")
    record = Path(demo.dist_info) / "RECORD"
    text = record.read_text()
    record.write_text(text + "../../../../outside.txt,,\n")
    (tmp_path / "outside.txt").write_text("x")
    with pytest.raises(OperationFailed, match=r"outside\.txt lies outside the environment"):
        wheel_from_installed(demo, env, tmp_path / "snap")
    record.unlink()
    with pytest.raises(OperationFailed, match="has no RECORD"):
        wheel_from_installed(demo, env, tmp_path / "snap")
