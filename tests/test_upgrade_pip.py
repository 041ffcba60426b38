"""opskit upgrade against a real pip in throwaway venvs, with wheels these tests write.

Every package is installed from a find-links directory that is deleted before the
upgrade, so each restore below also proves that the old version needed no index.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from opskit.upgrade.pipcheck import parse_pip_check, pip_check

pytestmark = [pytest.mark.pip, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parent.parent
OFFLINE = {"PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


# --- wheels, written by hand --------------------------------------------------------------


def _hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def make_wheel(
    directory: Path,
    name: str,
    version: str,
    *,
    requires: Sequence[str] = (),
    files: Mapping[str, str] | None = None,
    console: Mapping[str, str] | None = None,
    scripts: Mapping[str, str] | None = None,
    data: Mapping[str, str] | None = None,
) -> Path:
    """A pure-Python wheel: a package NAME with VERSION in it, and whatever else is asked."""
    directory.mkdir(parents=True, exist_ok=True)
    dist = f"{name}-{version}"
    members: dict[str, tuple[bytes, int]] = {}
    module = f"VERSION = {version!r}\n"
    members[f"{name}/__init__.py"] = (module.encode(), 0o644)
    for path, text in (files or {}).items():
        members[path] = (text.encode(), 0o644)
    for script, text in (scripts or {}).items():
        members[f"{dist}.data/scripts/{script}"] = (text.encode(), 0o755)
    for path, text in (data or {}).items():
        members[f"{dist}.data/data/{path}"] = (text.encode(), 0o644)
    meta = [f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"]
    meta += [f"Requires-Dist: {r}\n" for r in requires]
    members[f"{dist}.dist-info/METADATA"] = ("".join(meta).encode(), 0o644)
    members[f"{dist}.dist-info/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: opskit-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        0o644,
    )
    if console:
        lines = "".join(f"{k} = {v}\n" for k, v in console.items())
        members[f"{dist}.dist-info/entry_points.txt"] = (
            f"[console_scripts]\n{lines}".encode(),
            0o644,
        )
    record = [f"{path},{_hash(body)},{len(body)}" for path, (body, _) in members.items()]
    record.append(f"{dist}.dist-info/RECORD,,")
    members[f"{dist}.dist-info/RECORD"] = (("\n".join(record) + "\n").encode(), 0o644)
    target = directory / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path, (body, mode) in members.items():
            info = zipfile.ZipInfo(path, date_time=(2024, 1, 1, 0, 0, 0))
            info.external_attr = (0o100000 | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, body)
    return target


def corrupt(wheel: Path) -> None:
    """Damage the first member's compressed bytes; the metadata at the end still reads."""
    with zipfile.ZipFile(wheel) as archive:
        first = archive.infolist()[0]
    blob = bytearray(wheel.read_bytes())
    start = first.header_offset + 30 + len(first.filename.encode()) + len(first.extra)
    for i in range(start, start + min(first.compress_size, 40)):
        blob[i] ^= 0x5A
    wheel.write_bytes(bytes(blob))


def tool_wheel(directory: Path, version: str, *, broken: bool = False) -> Path:
    """A package with everything a snapshot must carry: console script, script, data file."""
    check = "raise SystemExit('tool is broken')" if broken else "return 0"
    main = f"def main():\n    print('tool {version}')\n    return 0\n\ndef check():\n    {check}\n"
    extra = {"tool/cli.py": main}
    if version != "1.0":
        extra["tool/new_in_2.py"] = "NEW = True\n"
    return make_wheel(
        directory,
        "tool",
        version,
        files=extra,
        console={"tool": "tool.cli:main"},
        scripts={"tool-legacy": f"#!python\nprint('legacy {version}')\n"},
        data={f"share/tool/notes-{version}.txt": f"notes for {version}\n"},
    )


# --- throwaway venvs -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def template_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One venv with pip, made once; every test works on a copy of it."""
    path = tmp_path_factory.mktemp("template") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=300)
    return path


@dataclass
class Venv:
    """A copy of the template venv, and the helpers to look into it.

    ``installer`` is what installs into it, for the tests and for opskit: "pip", or "uv"
    when test_upgrade_uv.py runs these tests again (its module sets ``INSTALLER``).
    """

    path: Path
    installer: str = "pip"

    @property
    def python(self) -> str:
        return str(self.path / "bin" / "python")

    @property
    def tool(self) -> str:
        """How opskit names the installer's commands: "pip" (install) or "uv pip"."""
        return "pip" if self.installer == "pip" else "uv pip"

    @property
    def flags(self) -> list[str]:
        return [] if self.installer == "pip" else ["--installer", self.installer]

    def pip(self, *args: str, links: Path | None = None) -> None:
        extra = ["--find-links", str(links)] if links else []
        argv = [self.python, "-m", "pip", *args, *extra]
        if self.installer == "uv" and args[0] in ("install", "uninstall"):
            from opskit.upgrade.installer import find_uv

            offline = ["--no-index"] if args[0] == "install" else []
            argv = [str(find_uv()), "pip", args[0], "--python", self.python, *offline]
            argv += [*args[1:], *extra]
        subprocess.run(
            argv, check=True, capture_output=True, env={**os.environ, **OFFLINE}, timeout=300
        )

    @property
    def commands(self) -> tuple[str, str]:
        """How opskit's install and check commands for this venv begin."""
        if self.installer == "uv":
            from opskit.upgrade.installer import find_uv

            uv, python = find_uv(), f"--python {self.python}"
            install = f"{uv} pip install {python} --no-deps --reinstall --compile-bytecode"
            return install, f"{uv} pip check {python}"
        pip = f"{self.python} -I -m pip"
        return f"{pip} install --disable-pip-version-check --no-input --no-deps", f"{pip} check"

    def conflict(self, pkg: str, ver: str, req: str, have: str) -> str:
        """The check's line for a requirement of PKG that the installed HAVE breaks."""
        if self.installer == "uv":
            return f"The package `{pkg}` requires `{req}`, but `{have}` is installed"
        return (
            f"{pkg} {ver} has requirement {req}, but you have {re.split('[<>=!~]', req)[0]} {have}"
        )

    def missing(self, pkg: str, ver: str, req: str) -> str:
        """The check's line for a requirement of PKG that nothing installed provides."""
        if self.installer == "uv":
            return f"The package `{pkg}` requires `{req}`, but it's not installed"
        return f"{pkg} {ver} requires {re.split('[<>=!~]', req)[0]}, which is not installed"

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """While the block runs, an install started in it cannot end (a race-free window).

        uv waits for the flock on VENV/.lock that it takes for every change; pip has no
        such lock, and its install of big_wheel outlasts what the tests do meanwhile.
        """
        if self.installer != "uv":
            yield
            return
        fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def versions(self) -> dict[str, str]:
        script = (
            "import importlib.metadata as m, json\n"
            "print(json.dumps({d.metadata['Name'].lower(): d.version for d in m.distributions()}))"
        )
        out = subprocess.run(
            [self.python, "-c", script], check=True, capture_output=True, text=True
        )
        return dict(json.loads(out.stdout))

    def pip_check(self) -> tuple[int, str]:
        proc = subprocess.run(
            [self.python, "-m", "pip", "check"],
            capture_output=True,
            text=True,
            env={**os.environ, **OFFLINE},
            check=False,
        )
        return proc.returncode, proc.stdout

    def files(self) -> dict[str, str]:
        """Every file of the venv with its hash, but bytecode and opskit's own state."""
        out = {}
        for path in self.path.rglob("*"):
            rel = path.relative_to(self.path)
            if rel.parts[0] == "opskit" or "__pycache__" in rel.parts or path.is_dir():
                continue
            if path.name in ("RECORD", "uv_cache.json"):
                # pip writes RECORD's lines in its own order; the files it lists are
                # compared one by one here anyway. uv_cache.json notes when the wheel
                # uv installed from was made, a snapshot's after a restore.
                out[str(rel)] = path.name
                continue
            out[str(rel)] = hashlib.sha256(path.read_bytes()).hexdigest()
        return out

    def state(self) -> tuple[dict[str, str], tuple[int, str], dict[str, str]]:
        return self.versions(), self.pip_check(), self.files()


@pytest.fixture
def venv(template_venv: Path, tmp_path: Path, request: pytest.FixtureRequest) -> Venv:
    path = tmp_path / "venv"
    shutil.copytree(template_venv, path, symlinks=True)
    return Venv(path, getattr(request.module, "INSTALLER", "pip"))


@pytest.fixture
def wheels(tmp_path: Path) -> Path:
    """The find-links directory of the new versions."""
    return tmp_path / "wheels"


def install_then_forget(venv: Venv, tmp_path: Path, specs: Sequence[tuple[str, str]]) -> None:
    """Install old versions from a directory that is then deleted: no index has them."""
    old = tmp_path / "old-wheels"
    for name, version in specs:
        if name == "tool":
            tool_wheel(old, version)
        else:
            make_wheel(old, name, version)
    venv.pip("install", "--no-deps", *(f"{n}=={v}" for n, v in specs), links=old)
    shutil.rmtree(old)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty current directory: no config, no requirements files."""
    path = tmp_path / "work"
    path.mkdir()
    monkeypatch.chdir(path)
    return path


def upgrade_args(venv: Venv, wheels: Path, *reqs: str) -> list[str]:
    return ["upgrade", *reqs, "--python", venv.python, "--no-index", "-f", str(wheels), *venv.flags]


def history(venv: Venv) -> list[dict[str, object]]:
    path = venv.path / "opskit" / "upgrade-history.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_one_error_line(err: str, *needles: str) -> None:
    errors = [line for line in err.splitlines() if line.startswith("opskit: error:")]
    assert len(errors) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in errors[0], errors[0]


# --- success --------------------------------------------------------------------------------


def test_upgrade_succeeds_and_records_history(cli, venv, wheels, workdir, tmp_path):
    install_then_forget(venv, tmp_path, [("tool", "1.0"), ("alpha", "1.0")])
    tool_wheel(wheels, "2.0")
    result = cli(*upgrade_args(venv, wheels, "Tool==2.0", "alpha==1.0"))
    assert result.code == 0, result.err
    assert "tool 1.0 -> 2.0 (upgrade)" in result.err
    assert "alpha 1.0 (unchanged)" in result.err
    versions = venv.versions()
    assert versions["tool"] == "2.0" and versions["alpha"] == "1.0"
    assert venv.pip_check() == (0, "No broken requirements found.\n")
    # The console script was written again by pip, for the new version.
    out = subprocess.run([str(venv.path / "bin" / "tool")], capture_output=True, text=True)
    assert out.stdout == "tool 2.0\n"
    [line] = history(venv)
    assert line["packages"] == ["tool"]
    assert line["from"] == {"tool": "1.0"} and line["to"] == {"tool": "2.0"}
    assert line["result"] == "ok"
    # The snapshot of a success is kept for a manual roll-back.
    assert list((venv.path / "opskit" / "snapshots").glob("*/tool-1.0-py3-none-any.whl"))


def test_json_outcome_and_nothing_to_do(cli, venv, wheels, workdir, tmp_path):
    install_then_forget(venv, tmp_path, [("alpha", "1.0")])
    # A problem that was there before and names nothing the upgrade touches.
    broken = tmp_path / "broken"
    make_wheel(broken, "zeta", "1.0", requires=["not-installed-anywhere"])
    venv.pip("install", "--no-deps", "zeta==1.0", links=broken)
    make_wheel(wheels, "alpha", "1.1")
    result = cli(*upgrade_args(venv, wheels, "alpha==1.1"), "--json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert data["result"] == "ok"
    assert data["packages"] == [{"name": "alpha", "from": "1.0", "to": "1.1", "action": "upgrade"}]
    assert data["problems"] == []
    assert [p["package"] for p in data["unrelated_problems"]] == ["zeta"]
    assert data["history"].endswith("/opskit/upgrade-history.jsonl")
    assert result.err == ""
    again = cli(*upgrade_args(venv, wheels, "alpha==1.1"))
    assert again.code == 0
    assert "nothing to do" in again.err
    assert len(history(venv)) == 1


def test_dry_run_changes_nothing_and_exits_1(cli, venv, wheels, workdir, tmp_path):
    install_then_forget(venv, tmp_path, [("alpha", "1.0")])
    make_wheel(wheels, "alpha", "2.0")
    before = venv.state()
    result = cli(*upgrade_args(venv, wheels, "alpha==2.0"), "--dry-run")
    assert result.code == 1, result.err
    assert "alpha 1.0 -> 2.0 (upgrade)" in result.out
    install, check = venv.commands
    assert install in result.out
    assert check in result.out
    assert venv.state() == before
    assert not (venv.path / "opskit").exists()
    same = cli(*upgrade_args(venv, wheels, "alpha==1.0"), "--dry-run")
    assert same.code == 0, same.err


def test_config_gives_venv_and_smoke(cli, venv, wheels, workdir, tmp_path):
    install_then_forget(venv, tmp_path, [("alpha", "1.0")])
    make_wheel(wheels, "alpha", "2.0")
    (workdir / "opskit.toml").write_text(
        textwrap.dedent(f"""\
        name = "myapp"
        app = "myapp.wsgi:app"
        venv = "{venv.path}"
        installer = "{venv.installer}"
        smoke = "python -c 'import alpha, sys; sys.exit(alpha.VERSION != \\"1.0\\")'"
        """)
    )
    before = venv.state()
    result = cli("upgrade", "alpha==2.0", "--no-index", "-f", str(wheels))
    assert result.code == 1, result.err
    assert "smoke command failed" in result.err
    assert venv.state() == before


# --- failures, each restored ----------------------------------------------------------------


def test_pip_check_conflict_is_rolled_back(cli, venv, wheels, workdir, tmp_path):
    install_then_forget(venv, tmp_path, [("alpha", "1.0")])
    old = tmp_path / "beta-old"
    make_wheel(old, "beta", "1.0", requires=["alpha<2"])
    venv.pip("install", "--no-deps", "beta==1.0", links=old)
    shutil.rmtree(old)
    make_wheel(wheels, "alpha", "2.0")
    before = venv.state()
    assert before[1][0] == 0
    result = cli(*upgrade_args(venv, wheels, "alpha==2.0"))
    assert result.code == 1
    assert_one_error_line(
        result.err, venv.conflict("beta", "1.0", "alpha<2", "2.0"), "back as it was (alpha 1.0)"
    )
    assert venv.state() == before
    [line] = history(venv)
    assert line["result"] == "rolled-back" and line["step"] == "pip check"
    # Restored and proven: the snapshot is gone, and the history names none.
    assert line["snapshot"] is None
    assert list((venv.path / "opskit" / "snapshots").iterdir()) == []


def test_corrupt_wheel_is_rolled_back(cli, venv, wheels, workdir, tmp_path):
    install_then_forget(venv, tmp_path, [("tool", "1.0")])
    corrupt(tool_wheel(wheels, "2.0"))
    before = venv.state()
    result = cli(*upgrade_args(venv, wheels, "tool==2.0"))
    assert result.code == 1
    assert_one_error_line(result.err, "pip install failed: ", "back as it was (tool 1.0)")
    # The reason is pip's last word on stderr (the decompression error), not the last
    # line of its progress on stdout.
    reason = result.err.split("pip install failed: ", 1)[1].split(";", 1)[0]
    assert "error" in reason.lower() and "Moving to" not in reason, reason
    assert venv.state() == before


def test_failing_smoke_is_rolled_back_with_scripts_and_data(cli, venv, wheels, workdir, tmp_path):
    install_then_forget(venv, tmp_path, [("tool", "1.0")])
    tool_wheel(wheels, "2.0", broken=True)
    before = venv.state()
    smoke = "python -c 'import tool.cli; tool.cli.check()'"
    result = cli(*upgrade_args(venv, wheels, "tool==2.0"), "--smoke", smoke)
    assert result.code == 1
    assert_one_error_line(result.err, "smoke command failed", "tool is broken")
    assert venv.state() == before
    bin_dir = venv.path / "bin"
    assert subprocess.run([bin_dir / "tool"], capture_output=True, text=True).stdout == "tool 1.0\n"
    legacy = subprocess.run([bin_dir / "tool-legacy"], capture_output=True, text=True)
    assert legacy.stdout == "legacy 1.0\n"
    assert (venv.path / "share/tool/notes-1.0.txt").read_text() == "notes for 1.0\n"
    assert not (venv.path / "share/tool/notes-2.0.txt").exists()


def test_old_version_on_no_index_is_restored(cli, venv, wheels, workdir, tmp_path):
    # install_then_forget deleted the only copy of tool 1.0; make sure pip agrees.
    install_then_forget(venv, tmp_path, [("tool", "1.0")])
    tool_wheel(wheels, "2.0", broken=True)
    with pytest.raises(subprocess.CalledProcessError):
        venv.pip("download", "--no-deps", "-d", str(tmp_path / "dl"), "tool==1.0", links=wheels)
    before = venv.state()
    smoke = "python -c 'import tool.cli; tool.cli.check()'"
    result = cli(*upgrade_args(venv, wheels, "tool==2.0"), "--smoke", smoke)
    assert result.code == 1
    assert venv.state() == before
    assert "--find-links" in result.err and "/opskit/snapshots/" in result.err
    # pip freeze shows a plain pin, not a path into the (deleted) snapshot.
    freeze = subprocess.run(
        [venv.python, "-m", "pip", "freeze"], capture_output=True, text=True, check=True
    )
    assert "tool==1.0" in freeze.stdout.splitlines()


def test_several_packages_one_failing_restores_all(cli, venv, wheels, workdir, tmp_path):
    install_then_forget(venv, tmp_path, [("alpha", "1.0"), ("tool", "1.0")])
    make_wheel(wheels, "alpha", "2.0")
    tool_wheel(wheels, "2.0")
    make_wheel(wheels, "gamma", "3.0", requires=["missing-dependency>=1"])
    before = venv.state()
    result = cli(*upgrade_args(venv, wheels, "alpha==2.0", "tool==2.0", "gamma==3.0"))
    assert result.code == 1
    assert_one_error_line(
        result.err,
        venv.missing("gamma", "3.0", "missing-dependency>=1"),
        "alpha 1.0, tool 1.0, gamma (not installed)",
    )
    assert venv.state() == before
    assert "gamma" not in venv.versions()


def test_no_rollback_leaves_the_environment(cli, venv, wheels, workdir, tmp_path):
    install_then_forget(venv, tmp_path, [("alpha", "1.0")])
    make_wheel(wheels, "alpha", "2.0", requires=["missing-dependency"])
    result = cli(*upgrade_args(venv, wheels, "alpha==2.0"), "--no-rollback")
    assert result.code == 1
    assert_one_error_line(result.err, "left as it is (--no-rollback)", "to restore:")
    assert venv.versions()["alpha"] == "2.0"
    # Not restored: the snapshot stays, named in the history, for the recovery below.
    [line] = history(venv)
    assert line["result"] == "not-rolled-back"
    assert list(Path(str(line["snapshot"])).glob("alpha-1.0-*.whl"))
    # The printed recovery command is exact: run it and the old version is back.
    recovery = result.err.split("to restore: ", 1)[1].strip()
    for part in recovery.split(" && "):
        subprocess.run(part, shell=True, check=True, capture_output=True)
    assert venv.versions()["alpha"] == "1.0"
    assert venv.pip_check()[0] == 0


# --- Ctrl-C ---------------------------------------------------------------------------------


def _start(venv: Venv, wheels: Path, cwd: Path, *reqs: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "opskit", *upgrade_args(venv, wheels, *reqs)],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _rest(proc: subprocess.Popen[str]) -> str:
    # Keep reading through the same buffered file: communicate() would bypass lines
    # already in its buffer.
    assert proc.stderr is not None
    text = proc.stderr.read()
    proc.wait(timeout=300)
    return text


def _pip_child(proc: subprocess.Popen[str], timeout: float = 30.0) -> int:
    """The pid of the ``pip install`` opskit runs (in a session of its own)."""
    import psutil

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for child in psutil.Process(proc.pid).children(recursive=True):
            try:
                argv = child.cmdline()
            except psutil.Error:
                continue
            if "pip" in argv and "install" in argv:
                return child.pid
        time.sleep(0.01)
    raise AssertionError("no pip install started")


def _wait_for(proc: subprocess.Popen[str], prefix: str) -> list[str]:
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.startswith(prefix):
            return seen
    raise AssertionError(f"never saw {prefix!r}: {''.join(seen)}")


def big_wheel(directory: Path, version: str) -> Path:
    # Enough files that pip is still installing when the interrupt arrives.
    files = {f"bulk/m{i}.py": f"X = {i}\n" for i in range(1500)}
    return make_wheel(directory, "bulk", version, files=files)


def test_sigint_during_install_restores(venv, wheels, workdir, tmp_path, processes):
    install_then_forget(venv, tmp_path, [("alpha", "1.0")])
    old = tmp_path / "bulk-old"
    big_wheel(old, "1.0")
    venv.pip("install", "--no-deps", "bulk==1.0", links=old)
    shutil.rmtree(old)
    big_wheel(wheels, "2.0")
    make_wheel(wheels, "alpha", "2.0")
    before = venv.state()
    with venv.hold():
        proc = _start(venv, wheels, workdir, "alpha==2.0", "bulk==2.0")
        processes.append(proc)
        seen = _wait_for(proc, "install")
        # A terminal's Ctrl-C goes to the whole foreground process group.
        os.killpg(proc.pid, signal.SIGINT)
        seen += _wait_for(proc, "interrupt")
    rest = _rest(proc)
    err = "".join(seen) + rest
    assert proc.returncode == 130, err
    assert f"interrupted: letting {venv.tool} install finish first" in err, err
    assert "interrupted during install" in err and "back as it was" in err
    assert venv.state() == before
    [line] = history(venv)
    assert line["result"] == "interrupted"


def test_second_sigint_stops_pip_and_still_restores(venv, wheels, workdir, tmp_path, processes):
    old = tmp_path / "bulk-old"
    big_wheel(old, "1.0")
    venv.pip("install", "--no-deps", "bulk==1.0", links=old)
    shutil.rmtree(old)
    big_wheel(wheels, "2.0")
    before = venv.state()
    with venv.hold():
        proc = _start(venv, wheels, workdir, "bulk==2.0")
        processes.append(proc)
        seen = _wait_for(proc, "install")
        # Hold pip still until the second Ctrl-C has been passed on to it: on a busy
        # machine the install could otherwise finish between the two, and the second
        # would then meet the restore instead (which ignores it, by design).
        pip = _pip_child(proc)
        os.killpg(pip, signal.SIGSTOP)
    try:
        os.killpg(proc.pid, signal.SIGINT)
        seen += _wait_for(proc, "interrupt")  # the notice that opskit waits for pip
        os.killpg(proc.pid, signal.SIGINT)
        seen += _wait_for(proc, "interrupt")  # "interrupted again: stopping pip install"
    finally:
        os.killpg(pip, signal.SIGCONT)
    rest = _rest(proc)
    err = "".join(seen) + rest
    assert proc.returncode == 130, err
    assert f"interrupted again: stopping {venv.tool} install" in err, err
    if "the restore failed" in err:
        # The other promise: the exact commands that restore it, and they do.
        recovery = err.split("to restore by hand: ", 1)[1].strip()
        for part in recovery.split(" && "):
            subprocess.run(part, shell=True, check=True, capture_output=True)
    else:
        assert "back as it was" in err
    versions, check, files = venv.state()
    assert versions == before[0] and check == before[1]
    # pip stopped mid-install may leave stray files of bulk 2.0 behind, but never
    # missing ones of bulk 1.0.
    assert set(before[2]) <= set(files)


# --- pip check, parsed -------------------------------------------------------------------


def test_pip_check_api_on_a_real_environment(venv, tmp_path):
    assert pip_check(venv.python) == []
    links = tmp_path / "links"
    make_wheel(links, "beta", "1.0", requires=["alpha<2", "zeta"])
    make_wheel(links, "alpha", "2.0")
    venv.pip("install", "--no-deps", "beta==1.0", "alpha==2.0", links=links)
    problems = sorted(pip_check(venv.python), key=lambda p: p.kind)
    assert [(p.kind, p.package, p.dependency) for p in problems] == [
        ("conflict", "beta", "alpha"),
        ("missing", "beta", "zeta"),
    ]
    assert problems[0].requirement == "alpha<2" and problems[0].installed == "2.0"
    _, raw = venv.pip_check()
    assert parse_pip_check(raw) == pip_check(venv.python)


# --- the lock file (pip-tools, offline) -------------------------------------------------------


def _compile(project: Path, links: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "piptools",
            "compile",
            "--quiet",
            "--no-index",
            "--find-links",
            str(links),
            "--no-emit-find-links",
            "--output-file",
            "requirements.txt",
            "requirements.in",
        ],
        cwd=project,
        check=True,
        capture_output=True,
        timeout=300,
    )


@pytest.fixture
def locked(venv: Venv, workdir: Path, tmp_path: Path) -> Path:
    """A pip-tools project: beta needs alpha<2; both pinned, both installed."""
    links = tmp_path / "links"
    make_wheel(links, "beta", "1.0", requires=["alpha<2"])
    make_wheel(links, "alpha", "1.0")
    (workdir / "requirements.in").write_text("beta\n")
    _compile(workdir, links)
    venv.pip("install", "--no-deps", "beta==1.0", "alpha==1.0", links=links)
    make_wheel(links, "alpha", "1.1")
    make_wheel(links, "alpha", "2.0")
    return links


def test_lock_moves_the_pin_after_success(cli, venv, workdir, locked):
    before = (workdir / "requirements.txt").read_text()
    assert "alpha==1.0" in before
    result = cli(*upgrade_args(venv, locked, "alpha==1.1"))
    assert result.code == 0, result.err
    after = (workdir / "requirements.txt").read_text()
    assert "alpha==1.1" in after and "beta==1.0" in after
    # The header still names the command that made the file, not a temporary file.
    assert after.splitlines()[:6] == before.splitlines()[:6]
    assert sorted(p.name for p in workdir.iterdir()) == ["requirements.in", "requirements.txt"]


def test_lock_left_alone_on_failure_and_with_no_lock(cli, venv, workdir, locked):
    before = (workdir / "requirements.txt").read_bytes()
    failed = cli(*upgrade_args(venv, locked, "alpha==1.1"), "--smoke", "python -c 'exit(3)'")
    assert failed.code == 1
    assert (workdir / "requirements.txt").read_bytes() == before
    skipped = cli(*upgrade_args(venv, locked, "alpha==1.1"), "--no-lock")
    assert skipped.code == 0, skipped.err
    assert (workdir / "requirements.txt").read_bytes() == before
    assert sorted(p.name for p in workdir.iterdir()) == ["requirements.in", "requirements.txt"]


def test_lock_that_cannot_resolve_stops_before_any_change(cli, venv, workdir, locked):
    before = venv.state()
    text = (workdir / "requirements.txt").read_bytes()
    result = cli(*upgrade_args(venv, locked, "alpha==2.0"))
    assert result.code == 1
    assert_one_error_line(result.err, "pip-compile could not pin alpha==2.0", "nothing changed")
    assert venv.state() == before
    assert (workdir / "requirements.txt").read_bytes() == text
    # Only the venv lock: no snapshot, no history, no marker.
    assert [p.name for p in (venv.path / "opskit").iterdir()] == ["upgrade.lock"]
