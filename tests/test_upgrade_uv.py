# ruff: noqa: F401, F811 (the tests and fixtures of the pip suites run here again, with uv)
"""opskit upgrade with uv installing: the real-pip suites again, a uv venv, uv pip check, config.

``INSTALLER = "uv"`` makes the ``venv`` fixture of test_upgrade_pip install with uv and
pass ``--installer uv`` to opskit, so every test imported below runs again against a
real uv, in throwaway venvs, offline, with wheels the tests write.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from opskit.upgrade.installer import (
    UV_TESTED,
    Installer,
    find_uv,
    in_tested_range,
    pip_config_items,
    pip_settings,
    uv_config,
)
from opskit.upgrade.pipcheck import check, parse_pip_check, parse_uv_check
from tests.test_upgrade_faults import (
    _bulk,
    _kill_tree,
    _opskit,
    test_a_dist_info_in_the_current_directory_is_not_taken_for_installed,
    test_a_double_ctrl_c_is_restored_or_said_not_to_be,
    test_no_wait_names_the_holder,
    test_recover_on_its_own,
    test_the_run_after_a_sigkill_restores_the_snapshot,
    test_two_upgrades_of_one_venv_take_turns,
)
from tests.test_upgrade_pip import (
    Venv,
    _pip_child,
    _rest,
    _start,
    _wait_for,
    assert_one_error_line,
    big_wheel,
    history,
    install_then_forget,
    locked,
    make_wheel,
    processes,
    template_venv,
    test_config_gives_venv_and_smoke,
    test_corrupt_wheel_is_rolled_back,
    test_dry_run_changes_nothing_and_exits_1,
    test_failing_smoke_is_rolled_back_with_scripts_and_data,
    test_json_outcome_and_nothing_to_do,
    test_lock_left_alone_on_failure_and_with_no_lock,
    test_lock_moves_the_pin_after_success,
    test_lock_that_cannot_resolve_stops_before_any_change,
    test_no_rollback_leaves_the_environment,
    test_old_version_on_no_index_is_restored,
    test_pip_check_conflict_is_rolled_back,
    test_second_sigint_stops_pip_and_still_restores,
    test_several_packages_one_failing_restores_all,
    test_sigint_during_install_restores,
    test_upgrade_succeeds_and_records_history,
    tool_wheel,
    upgrade_args,
    venv,
    wheels,
    workdir,
)

pytestmark = [pytest.mark.pip, pytest.mark.timeout(600)]

#: Read by test_upgrade_pip's ``venv`` fixture: install with uv, upgrade with --installer uv.
INSTALLER = "uv"
UV = find_uv()


@pytest.fixture(autouse=True, scope="module")
def uv_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """uv's cache of this module's runs, thrown away after them (not the user's)."""
    assert UV is not None, "uv is not installed: pip install -e '.[test]'"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("UV_CACHE_DIR", str(tmp_path_factory.mktemp("uv-cache")))
        yield


def _uv(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(UV), *args], capture_output=True, text=True, timeout=300, check=False
    )


def test_the_uv_in_use_is_in_the_tested_range():
    version = _uv("--version").stdout.split()[1]
    assert in_tested_range(version), (
        f"uv {version} is not in {UV_TESTED}: test it, then move the range"
    )
    assert not in_tested_range("0.12.24") and not in_tested_range("0.14.0")


# --- the installer is uv: commands, a venv without pip ---------------------------------------


def _uv_venv(path: Path) -> Venv:
    done = _uv("venv", "--quiet", "--python", sys.executable, str(path))
    assert done.returncode == 0, done.stderr
    made = Venv(path, "uv")
    assert not list(path.glob("lib/python*/site-packages/pip"))
    return made


def test_a_venv_made_by_uv_is_upgraded_with_uv_unasked(cli, workdir, tmp_path):
    env = _uv_venv(tmp_path / "uv-venv")
    install_then_forget(env, tmp_path, [("tool", "1.0"), ("alpha", "1.0")])
    links = tmp_path / "new"
    tool_wheel(links, "2.0", broken=True)
    make_wheel(links, "alpha", "2.0")
    before = env.versions(), env.files()
    base = ["upgrade", "--python", env.python, "--no-index", "-f", str(links)]
    smoke = "python -c 'import tool.cli; tool.cli.check()'"
    failed = cli(*base, "tool==2.0", "--smoke", smoke)
    assert failed.code == 1
    assert "(no pip in that environment)" in failed.err
    assert_one_error_line(failed.err, "smoke command failed", "back as it was (tool 1.0)")
    assert (env.versions(), env.files()) == before
    assert _uv("pip", "check", "--python", env.python).returncode == 0

    done = cli(*base, "alpha==2.0", "--json")
    assert done.code == 0, done.err
    outcome = json.loads(done.out)
    assert outcome["installer"]["name"] == "uv" and outcome["installer"]["path"] == str(UV)
    assert history(env)[-1]["installer"] == "uv"
    # Bytecode, as pip would have written it (uv writes none unless asked).
    site = next(env.path.glob("lib/python*/site-packages"))
    assert list((site / "alpha" / "__pycache__").glob("__init__.*.pyc"))
    assert (site / "alpha-2.0.dist-info" / "INSTALLER").read_text().strip() == "uv"


def test_a_killed_uv_run_is_recovered_with_uv(venv, wheels, workdir, tmp_path, processes):
    _bulk(venv, tmp_path, wheels)
    before = venv.state()
    with venv.hold():
        proc = _start(venv, wheels, workdir, "bulk==2.0")
        processes.append(proc)
        _wait_for(proc, "install")
        child = _pip_child(proc)
        _kill_tree(proc.pid, child)
    proc.wait(timeout=30)
    marker = json.loads((venv.path / "opskit" / "upgrade-in-progress.json").read_text())
    assert marker["installer"] == "uv" and marker["uv"] == str(UV)
    result = _opskit("upgrade", "--recover", "--python", venv.python, cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert f"{UV} pip install --python {venv.python} --no-config --offline" in result.stderr
    assert venv.state() == before


# --- uv pip check, parsed as pip check is ----------------------------------------------------


def test_uv_pip_check_gives_the_problems_pip_check_gives(venv, tmp_path):
    uv = Installer("uv", venv.python, uv=str(UV))
    assert check(uv, runner=_runner()) == []
    links = tmp_path / "links"
    make_wheel(links, "beta", "1.0", requires=["alpha<2", "zeta"])
    make_wheel(links, "alpha", "2.0")
    make_wheel(links, "gamma", "1.0", requires=["Delta_Lib>=1; python_version > '3'"])
    venv.pip("install", "--no-deps", "beta==1.0", "alpha==2.0", "gamma==1.0", links=links)
    raw = _uv("pip", "check", "--python", venv.python)
    assert raw.returncode == 1, raw.stderr
    parsed = parse_uv_check(raw.stderr)
    assert check(uv, runner=_runner()) == parsed
    _, pip_out = venv.pip_check()

    def key(problems):
        return sorted((p.kind, p.package, p.dependency, p.installed) for p in problems)

    assert (
        key(parsed)
        == key(parse_pip_check(pip_out))
        == [
            ("conflict", "beta", "alpha", "2.0"),
            ("missing", "beta", "zeta", None),
            ("missing", "gamma", "delta-lib", None),
        ]
    )
    conflict = next(p for p in parsed if p.kind == "conflict")
    assert conflict.requirement == "alpha<2" and conflict.involves(["alpha"])
    assert not conflict.involves(["gamma"])


def test_uv_reports_what_pip_check_cannot_see(venv, tmp_path):
    links = tmp_path / "links"
    make_wheel(links, "alpha", "2.0")
    venv.pip("install", "--no-deps", "alpha==2.0", links=links)
    site = next(venv.path.glob("lib/python*/site-packages"))
    # What an interrupted install leaves: a second metadata directory, and a broken one.
    shutil.copytree(site / "alpha-2.0.dist-info", site / "alpha-1.0.dist-info")
    (site / "omega-1.0.dist-info").mkdir()
    problems = parse_uv_check(_uv("pip", "check", "--python", venv.python).stderr)
    kinds = sorted((p.kind, p.package) for p in problems)
    assert kinds == [("duplicate", "alpha"), ("incomplete", "omega")], problems
    duplicate = next(p for p in problems if p.kind == "duplicate")
    assert "alpha-1.0.dist-info" in duplicate.line and "alpha-2.0.dist-info" in duplicate.line
    assert duplicate.involves(["alpha"])


def test_uv_check_lines_read_without_uv():
    text = (
        "Using Python 3.11.7 environment at: venv\n"
        "Checked 3 packages in 0.4ms\n"
        "Found 3 incompatibilities\n"
        "The package `old` requires Python <3, but `3.11.7` is installed\n"
        "The package `a-b` requires `c>=2`, but `1.0` is installed\n"
        "Something uv may say one day\n"
    )
    problems = parse_uv_check(text)
    assert [(p.kind, p.package, p.requirement, p.installed) for p in problems] == [
        ("unsupported", "old", "Python <3", "3.11.7"),
        ("conflict", "a-b", "c>=2", "1.0"),
        ("other", "", None, None),
    ]
    # A line opskit cannot read counts against every upgrade.
    assert problems[-1].involves(["anything"])
    assert (
        parse_uv_check("Checked 3 packages in 0.4ms\nAll installed packages are compatible\n") == []
    )


def _runner():
    from opskit.proc import SubprocessRunner

    return SubprocessRunner()


# --- pip's configuration, carried over to uv ---------------------------------------------------


@pytest.fixture
def pip_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No PIP_* variable, and pip's global and user files in a directory of the test's own."""
    for name in list(os.environ):
        if name.startswith(("PIP_", "UV_")) and name != "UV_CACHE_DIR":
            monkeypatch.delenv(name)
    root = tmp_path / "pipconf"
    monkeypatch.setenv("XDG_CONFIG_DIRS", str(root / "xdg"))
    monkeypatch.setenv("HOME", str(root / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(root / "config"))
    return root


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _pip_config_list(venv: Venv) -> dict[str, str]:
    done = subprocess.run(
        [venv.python, "-I", "-m", "pip", "config", "list"],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    import ast

    pairs = (line.partition("=") for line in done.stdout.splitlines())
    return {k: ast.literal_eval(v) for k, _, v in pairs if not k.startswith(":env:")}


def test_pip_config_is_read_as_pip_config_list_reads_it(venv, pip_env, monkeypatch):
    _write(pip_env / "xdg/pip/pip.conf", "[global]\nindex-url = https://a.example/simple\n")
    _write(pip_env / "home/.pip/pip.conf", "[global]\ntimeout = 5\nfind-links = /x /y\n")
    _write(
        pip_env / "config/pip/pip.conf",
        "[global]\nfind-links = /z\n[install]\nTrusted_Host = h.example\n--no-index = yes\n",
    )
    _write(venv.path / "pip.conf", "[global]\nindex-url = https://site.example/simple\n")

    def ours() -> dict[str, str]:
        return {k: v for k, (v, _) in pip_config_items(str(venv.path), os.environ).items()}

    assert ours() == _pip_config_list(venv)
    assert ours()["global.index-url"] == "https://site.example/simple"
    settings = pip_settings(str(venv.path), os.environ)
    assert settings["find-links"][0] == "/z" and settings["no-index"][0] == "yes"
    # PIP_CONFIG_FILE: read last, and the user's files are then left out.
    given = _write(pip_env / "given.conf", "[install]\nfind-links = /given\n")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(given))
    assert ours() == _pip_config_list(venv)
    assert "global.timeout" not in ours()
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    assert ours() == _pip_config_list(venv) == {}


def test_pip_settings_map_to_uv_each_said_once():
    settings = {
        "index-url": ("https://me:s3cret@private.example/simple", "pip.conf [global]"),
        "extra-index-url": ("https://one.example/simple\nhttps://two.example/simple", "f"),
        "find-links": ("/a /b", "PIP_FIND_LINKS"),
        "constraint": ("c1.txt c2.txt", "PIP_CONSTRAINT"),
        "no-index": ("true", "PIP_NO_INDEX"),
        "trusted-host": ("h1 h2", "f"),
        "no-binary": (":all:", "f"),
        "disable-pip-version-check": ("1", "f"),
    }
    mapped = uv_config(settings, {"UV_CONSTRAINT": "mine.txt"}, [])
    assert mapped.variables == {
        "UV_DEFAULT_INDEX": "https://me:s3cret@private.example/simple",
        "UV_INDEX": "https://one.example/simple https://two.example/simple",
        "UV_INDEX_STRATEGY": "unsafe-best-match",
        "UV_FIND_LINKS": "/a,/b",
        "UV_INSECURE_HOST": "h1 h2",
    }
    assert mapped.args == ("--no-index",)
    said = "\n".join(mapped.notes)
    assert "s3cret" not in said and "https://me:****@private.example/simple" in said
    assert (
        "pip's constraint (PIP_CONSTRAINT) not carried over: UV_CONSTRAINT is already set" in said
    )
    assert "not carried over to uv (no counterpart here): no-binary (f)" in said
    assert "disable-pip-version-check" not in said
    assert len(mapped.notes) == len(set(mapped.notes)) == 8
    # Given -f as well, uv would ignore UV_FIND_LINKS; pip uses both: both go on the command.
    both = uv_config({"find-links": ("/a", "f")}, {}, ["--no-index", "--find-links", "/c"])
    assert both.args == ("--find-links", "/a") and both.variables == {}


def test_pip_configuration_reaches_uv(cli, venv, workdir, tmp_path, pip_env, monkeypatch):
    install_then_forget(venv, tmp_path, [("alpha", "1.0"), ("tool", "1.0")])
    links = tmp_path / "links"
    make_wheel(links, "alpha", "2.0")
    tool_wheel(links, "2.0")
    constraints = _write(tmp_path / "constraints.txt", "tool<2\n")
    conf = _write(
        tmp_path / "pip.conf",
        "[global]\nindex-url = http://me:s3cret@127.0.0.1:9/simple\n"
        f"[install]\nfind-links = {links}\n",
    )
    monkeypatch.setenv("PIP_CONFIG_FILE", str(conf))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_CONSTRAINT", str(constraints))
    args = ["upgrade", "--python", venv.python, "--installer", "uv"]
    # No -f and no --no-index for opskit: the wheels are found where pip's config says.
    done = cli(*args, "alpha==2.0")
    assert done.code == 0, done.err
    lines = done.err.splitlines()
    said = f"{'uv':<10} pip's"
    assert f"{said} find-links ({conf} [install]) -> UV_FIND_LINKS={links}" in lines
    assert f"{said} no-index (PIP_NO_INDEX) -> --no-index" in lines
    index = f"{said} index-url ({conf} [global]) -> UV_DEFAULT_INDEX="
    assert index + "http://me:****@127.0.0.1:9/simple" in lines
    assert "s3cret" not in done.err
    assert venv.versions()["alpha"] == "2.0"
    # pip's constraint holds for uv too: tool 2.0 is refused, and nothing changed.
    before = venv.state()
    refused = cli(*args, "tool==2.0")
    assert refused.code == 1
    assert_one_error_line(refused.err, "uv pip install failed: ", "back as it was (tool 1.0)")
    assert "unsatisfiable" in refused.err
    assert venv.state() == before
    # A setting given to uv itself wins over pip's, and says so.
    monkeypatch.setenv("UV_CONSTRAINT", str(_write(tmp_path / "none.txt", "")))
    allowed = cli(*args, "tool==2.0")
    assert allowed.code == 0, allowed.err
    assert "not carried over: UV_CONSTRAINT is already set" in allowed.err


def test_the_restore_leaves_uv_settings_out(cli, venv, wheels, workdir, tmp_path, monkeypatch):
    install_then_forget(venv, tmp_path, [("tool", "1.0")])
    tool_wheel(wheels, "2.0", broken=True)
    # Fine for the upgrade, fatal for the restore if the restore honoured it.
    monkeypatch.setenv("UV_CONSTRAINT", str(_write(tmp_path / "c.txt", "tool>=2\n")))
    before = venv.state()
    smoke = "python -c 'import tool.cli; tool.cli.check()'"
    result = cli(*upgrade_args(venv, wheels, "tool==2.0"), "--smoke", smoke)
    assert result.code == 1
    assert_one_error_line(result.err, "smoke command failed", "back as it was (tool 1.0)")
    assert venv.state() == before


# --- without uv ----------------------------------------------------------------------------------


def _opskit_without_uv(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """opskit as it runs where the uv package is not installed and no uv is on PATH."""
    path = os.pathsep.join(p for p in ("/usr/bin", "/bin") if Path(p).is_dir())
    assert shutil.which("uv", path=path) is None, f"a uv on {path}"
    code = "import sys; sys.modules['uv'] = None; from opskit.cli import main; sys.exit(main())"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        env={**os.environ, "PATH": path},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_without_uv_pip_still_works_and_uv_is_refused_clearly(venv, wheels, workdir, tmp_path):
    install_then_forget(venv, tmp_path, [("alpha", "1.0")])
    make_wheel(wheels, "alpha", "2.0")
    pip_args = ["upgrade", "alpha==2.0", "--python", venv.python, "--no-index", "-f", str(wheels)]
    asked = _opskit_without_uv(*pip_args, "--installer", "uv", cwd=workdir)
    assert asked.returncode == 2
    assert asked.stderr == (
        "opskit: error: --installer uv: uv was not found "
        "(pip install 'opskit[uv]', or put uv on PATH)\n"
    )
    plain = _opskit_without_uv(*pip_args, cwd=workdir)
    assert plain.returncode == 0, plain.stderr
    assert venv.versions()["alpha"] == "2.0"
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    refused = _opskit_without_uv(
        "upgrade", "alpha==2.0", "--python", f"{bare}/bin/python", cwd=workdir
    )
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    assert "pip is not installed in that environment, and uv was not found" in refused.stderr


def test_a_bad_installer_is_refused(cli, venv, workdir):
    result = cli("upgrade", "alpha==1.0", "--python", venv.python, "--installer", "conda")
    assert result.code == 2
    assert result.err == "opskit: error: installer: expected one of pip, uv, got 'conda'\n"


def test_uv_errors_become_one_line_even_wrapped():
    from opskit.proc import Completed
    from opskit.upgrade.installer import uv_reason

    # uv 0.13.9 with COLUMNS=60.
    err = (
        "Using Python 3.11.7 environment at: /venv\n"
        "error: No solution found when resolving dependencies\n"
        "  cause: Because there is no version of tool==9.0 and\n"
        "         you require tool==9.0, we can conclude that your\n"
        "         requirements are unsatisfiable.\n"
    )
    assert uv_reason(Completed(("uv",), 1, "", err)) == (
        "No solution found when resolving dependencies: Because there is no version of "
        "tool==9.0 and you require tool==9.0, we can conclude that your requirements are "
        "unsatisfiable."
    )
