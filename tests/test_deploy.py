"""Releases without a service: the spec keys, the content hash, the layout, a real build.

The switch, reload and repair under a real systemd are in tests/real_systemd/test_deploy.py.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from opskit.deploy.build import build
from opskit.deploy.layout import Layout, new_id
from opskit.deploy.source import content_hash, stage
from opskit.errors import OperationFailed, SpecError, UsageError
from opskit.proc import SubprocessRunner
from opskit.reload.plan import plan_reload
from opskit.reload.render import render_deploy_reload
from opskit.spec import build_spec
from opskit.systemd.units import environment, server_unit
from tests.test_reload import needs_shellcheck
from tests.test_upgrade_pip import make_wheel

BASE = "/srv/shop"


def spec(**extra):
    raw = {"name": "shop", "app": "shop:app", "base": BASE, **extra}
    return build_spec(raw)


# --- the spec ---------------------------------------------------------------------------


def test_a_base_fixes_the_working_directory_and_the_venv():
    s = spec()
    assert s.working_directory == f"{BASE}/current"
    assert s.venv_path == f"{BASE}/current/venv"
    with pytest.raises(SpecError, match="working-directory: with base"):
        spec(working_directory="/srv/other")
    with pytest.raises(SpecError, match="venv: with base"):
        spec(venv="/srv/other/venv")
    with pytest.raises(SpecError, match="base: must be a directory of its own"):
        spec(base="/")


@pytest.mark.parametrize("bad", ["../etc", "/etc/passwd", "a/../b", "venv", ""])
def test_shared_paths_stay_inside_the_release(bad):
    with pytest.raises(SpecError, match="shared"):
        spec(shared=[bad])


def test_cli_without_a_base_is_one_line_and_exit_2(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = cli("deploy", "--name", "shop", "--app", "shop:app", "--workdir", str(tmp_path))
    assert result.code == 2
    assert result.err.count("\n") == 1 and "base: not set" in result.err, result.err


# --- what the servers run --------------------------------------------------------------


def test_servers_run_through_current_so_a_reload_finds_the_live_release():
    gunicorn = server_unit(spec()).argv
    assert gunicorn[:3] == (f"{BASE}/current/venv/bin/python", "-m", "gunicorn")
    assert gunicorn[gunicorn.index("--chdir") + 1] == f"{BASE}/current"
    # gunicorn's --chdir default (validated on every HUP) comes from $PWD: the link.
    assert ("PWD", f"{BASE}/current") in environment(spec())
    assert "PWD" not in dict(environment(spec(server="uwsgi")))
    uvicorn = server_unit(spec(server="uvicorn", socket=True)).argv
    assert uvicorn[uvicorn.index("--app-dir") + 1] == f"{BASE}/current"
    uwsgi = server_unit(spec(server="uwsgi")).argv
    assert uwsgi[uwsgi.index("--virtualenv") + 1] == f"{BASE}/current/venv"
    assert plan_reload(spec(server="uwsgi")).mechanism == "full"
    assert plan_reload(spec(server="uvicorn", socket=True)).mechanism == "systemctl-restart"
    with pytest.raises(SpecError, match="socket: with base, uvicorn"):
        plan_reload(spec(server="uvicorn"))


@needs_shellcheck
@pytest.mark.parametrize(
    "extra", [{}, {"server": "uvicorn", "socket": True}, {"server": "uwsgi"}], ids=str
)
def test_deploy_script_is_shellcheck_clean_and_checks_the_release(extra, tmp_path):
    release = f"{BASE}/releases/20260101T000000Z-0123456789ab"
    s = spec(version_path="/v", deploy_id_file=f"{BASE}/current/VERSION", **extra)
    text = render_deploy_reload(s, release, canary=True)
    assert f"WORKDIR={release}\n" in text
    assert f"DEPLOY_ID_FILE={release}/VERSION\n" in text
    path = tmp_path / "reload.sh"
    path.write_text(text)
    done = subprocess.run(["shellcheck", "--severity=style", str(path)], capture_output=True)
    assert done.returncode == 0, done.stdout.decode()
    bad = subprocess.run(
        ["bash", str(path)], env={**os.environ, "OPSKIT_STEP": "bogus"}, capture_output=True
    )
    assert bad.returncode == 2 and b"OPSKIT_STEP must be check, reload" in bad.stderr


# --- the content hash ------------------------------------------------------------------


def _project(directory: Path, body: str = "app = 1\n") -> Path:
    directory.mkdir(parents=True)
    (directory / "shop.py").write_text(body)
    (directory / "requirements.txt").write_text("flask==3.1.3\n")
    (directory / "__pycache__").mkdir()
    (directory / "__pycache__" / "shop.cpython-311.pyc").write_bytes(b"junk")
    return directory


def _hash(source: str | None, project: Path, into: Path) -> str:
    return content_hash(stage(source, project, into, None), "3.11.7")


def test_the_same_content_hashes_the_same_however_it_is_packed(tmp_path):
    project = _project(tmp_path / "p")
    by_dir = _hash(None, project, tmp_path / "s1")
    sdists = []
    for n in (1, 2):
        sdist = tmp_path / f"shop-{n}.tar.gz"
        with tarfile.open(sdist, "w:gz") as archive:
            for name in ("shop.py", "requirements.txt"):
                info = archive.gettarinfo(project / name, f"shop-1.0/{name}")
                info.mtime = n * 1000  # other archive bytes, the same content
                with (project / name).open("rb") as handle:
                    archive.addfile(info, handle)
        sdists.append(sdist)
    assert sdists[0].read_bytes() != sdists[1].read_bytes()
    assert _hash(str(sdists[0]), project, tmp_path / "s2") == by_dir
    assert _hash(str(sdists[1]), project, tmp_path / "s3") == by_dir
    if shutil.which("git"):
        git = ["git", "-C", str(project), "-c", "user.name=t", "-c", "user.email=t@t"]
        subprocess.run([*git, "init", "-q"], check=True)
        (project / ".gitignore").write_text("__pycache__/\n")
        subprocess.run([*git, "add", "shop.py", "requirements.txt"], check=True)
        subprocess.run([*git, "commit", "-qm", "v1"], check=True)
        (project / ".gitignore").unlink()
        assert _hash("HEAD", project, tmp_path / "s4") == by_dir


def test_a_byte_a_mode_or_the_interpreter_changes_the_hash(tmp_path):
    project = _project(tmp_path / "p")
    first = _hash(None, project, tmp_path / "a")
    (project / "shop.py").write_text("app = 2\n")
    second = _hash(None, project, tmp_path / "b")
    (project / "shop.py").chmod(0o755)
    third = _hash(None, project, tmp_path / "c")
    other_python = content_hash(stage(None, project, tmp_path / "d", None), "3.12.0")
    assert len({first, second, third, other_python}) == 4


def test_an_unknown_source_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="not a wheel, an sdist"):
        stage("no-such-ref", tmp_path, tmp_path / "s", None)


# --- the layout ------------------------------------------------------------------------


def test_switch_history_previous_and_journal(tmp_path):
    layout = Layout(tmp_path)
    ids = [new_id(f"{n:064x}", now=1_700_000_000 + n) for n in (1, 2, 3)]
    for release_id in ids:
        layout.release(release_id).mkdir(parents=True)
        (layout.release(release_id) / ".opskit-release.json").write_text('{"hash": "x"}')
    assert layout.ids() == sorted(ids)
    for release_id in (ids[0], ids[2], ids[1]):
        layout.switch(release_id)
        layout.record_live(release_id)
    assert str((tmp_path / "current").readlink()) == f"releases/{ids[1]}"
    assert layout.live() == ids[1]
    assert layout.previous(ids[1]) == ids[2]
    layout.write_journal({"from": ids[2], "to": ids[1]})
    assert layout.read_journal() == {"from": ids[2], "to": ids[1]}
    layout.clear_journal()
    assert layout.read_journal() is None
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_the_lock_names_its_holder(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pathlib import Path; from opskit.deploy.layout import Layout\n"
         "with Layout(Path(sys.argv[1])).locked(print):\n"
         "    print('held', flush=True); time.sleep(60)",
         str(tmp_path)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with (
            pytest.raises(OperationFailed, match=f"pid {holder.pid}"),
            Layout(tmp_path).locked(print, wait=False),
        ):
            pass
    finally:
        holder.kill()
        holder.wait()
    with Layout(tmp_path).locked(print, wait=False):
        pass


# --- a real build, offline ---------------------------------------------------------------


@pytest.mark.pip
@pytest.mark.timeout(600)
@pytest.mark.parametrize("installer", ["pip", "uv"])
def test_a_release_is_built_fresh_from_the_cache_and_a_conflict_is_refused(
    tmp_path, monkeypatch, installer
):
    base = tmp_path / "base"
    wheels = base / "wheels"
    make_wheel(wheels, "alpha", "1.0", requires=["beta>=2"])
    make_wheel(wheels, "beta", "2.0")
    make_wheel(wheels, "beta", "1.0")
    extra = tmp_path / "extra"
    make_wheel(extra, "gamma", "1.0")
    # Offline as pip is told to be, gamma only in pip's find-links: uv gets both settings
    # carried over (it reads no PIP_*).
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(extra))
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))
    s = spec(base=str(base), interpreter=sys.executable, shared=["media"], installer=installer)
    layout = Layout(base)
    said: list[str] = []
    runner = SubprocessRunner()

    def release(tag: str, lock: str) -> tuple[str, Path]:
        project = tmp_path / tag
        project.mkdir()
        (project / "shop.py").write_text(f"app = {tag!r}\n")
        (project / "requirements.txt").write_text(lock)
        staged = stage(None, project, tmp_path / f"stage-{tag}", None)
        digest = content_hash(staged, "3.11")
        release_id = new_id(digest, now=time.time())
        build(s, layout, staged, release_id, digest, runner=runner, say=said.append)
        return release_id, layout.release(release_id)

    release_id, path = release("one", "alpha==1.0\nbeta==2.0\ngamma==1.0\n")
    python = path / "venv" / "bin" / "python"
    shown = subprocess.run(
        [str(python), "-c", "import alpha, beta, gamma; print(alpha.VERSION, beta.VERSION)"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert shown.stdout.split() == ["1.0", "2.0"]
    if installer == "pip":
        assert "build: fetched 1 package(s) into the wheel cache" in said
        # A fresh venv at the release's own path, not a copy: its scripts name it.
        # (a long path gets pip's /bin/sh trampoline instead of a #! line: it names it too)
        assert str(python) in (path / "venv" / "bin" / "pip").read_text()
    else:
        assert "build: pip's no-index (PIP_NO_INDEX) -> --no-index" in said, said
        assert f"build: pip's find-links (PIP_FIND_LINKS) -> --find-links {extra}" in said
        # uv's venv has no pip; its bytecode was written as pip writes it.
        assert "uv = " in (path / "venv" / "pyvenv.cfg").read_text()
        assert not (path / "venv" / "bin" / "pip").exists()
        assert list((path / "venv").glob("lib/python*/site-packages/alpha/__pycache__/*.pyc"))
    assert layout.manifest(release_id)["installer"] == installer
    assert (path / "media").is_symlink() and (base / "shared" / "media").is_dir()
    assert layout.manifest(release_id) is not None
    assert oct(path.stat().st_mode & 0o777) == "0o755"

    with pytest.raises(OperationFailed, match=f"dependencies conflict \\({installer} check\\)"):
        release("two", "alpha==1.0\nbeta==1.0\n")
    assert [p.name for p in layout.releases.iterdir()] == [release_id]


def test_doctor_names_an_unfinished_switch_and_a_dangling_current(tmp_path):
    from opskit.doctor.checks import diagnose

    layout = Layout(tmp_path / "base")
    release_id = new_id("0" * 64, now=1_700_000_000)
    layout.release(release_id).mkdir(parents=True)
    (layout.release(release_id) / ".opskit-release.json").write_text("{}")
    layout.write_journal({"from": None, "to": release_id})
    s = spec(base=str(layout.base))
    checks = {f.check: f for f in diagnose(s, project=tmp_path).findings}
    assert checks["release-journal"].severity == "error"
    assert release_id in checks["release-journal"].evidence
    assert "release-live" in checks  # current points at nothing
    layout.switch(release_id)
    layout.clear_journal()
    checks = {f.check for f in diagnose(s, project=tmp_path).findings}
    assert not checks & {"release-journal", "release-live"}


def test_a_new_server_version_or_python_needs_a_new_master(tmp_path):
    from opskit.deploy.switch import server_changed as _server_changed

    layout = Layout(tmp_path)
    old, new = (new_id(f"{n:064x}", now=1_700_000_000 + n) for n in (1, 2))
    for release_id, gunicorn, python in ((old, "27.0.1", "3.11.2"), (new, "27.0.1", "3.11.2")):
        site = layout.release(release_id) / "venv/lib/python3.11/site-packages"
        (site / f"gunicorn-{gunicorn}.dist-info").mkdir(parents=True)
        (layout.release(release_id) / ".opskit-release.json").write_text(
            f'{{"python": "{python}"}}'
        )
    s = spec(base=str(tmp_path))
    assert _server_changed(s, layout, old, new) is None
    assert _server_changed(s, layout, None, new) is None
    site = layout.release(new) / "venv/lib/python3.11/site-packages"
    (site / "gunicorn-27.0.1.dist-info").rename(site / "gunicorn-27.1.0.dist-info")
    assert _server_changed(s, layout, old, new) == "gunicorn 27.0.1 -> 27.1.0"
    (layout.release(new) / ".opskit-release.json").write_text('{"python": "3.12.1"}')
    assert _server_changed(s, layout, old, new) == "Python 3.11.2 -> 3.12.1"


# --- locks other than requirements.txt ---------------------------------------------------

PYLOCK = """\
lock-version = "1.0"
created-by = "uv"

[[packages]]
name = "alpha"
version = "1.0"
wheels = [{ url = "https://example.invalid/alpha-1.0-py3-none-any.whl", hashes = {} }]

[[packages]]
name = "beta"
version = "2.0"
marker = "python_version >= '3.8'"
"""


def test_a_pylock_becomes_the_releases_pins(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "shop.py").write_text("app = 1\n")
    (project / "pylock.toml").write_text(PYLOCK)
    staged = stage(None, project, tmp_path / "stage", None)
    assert staged.lock is not None and not staged.lock.is_relative_to(staged.tree)
    pins = [line for line in staged.lock.read_text().splitlines() if not line.startswith("#")]
    assert pins == ["alpha==1.0", "beta==2.0 ; python_version >= '3.8'"]
    # The lock is part of the content: another pylock is another release.
    first = content_hash(staged, "3.11")
    (project / "pylock.toml").write_text(PYLOCK.replace('"2.0"', '"2.1"'))
    again = stage(None, project, tmp_path / "stage2", None)
    assert content_hash(again, "3.11") != first


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("lock-version = '1.0'\n", "no [[packages]] table"),
        ("[[packages]]\nname = 'x'\ndirectory = { path = '.' }\n", "package x: no version"),
        ("[[packages]]\nname = 'x'\nversion = '1'\nvcs = { url = 'u' }\n", "from a vcs"),
        ("[[packages]\n", "not a readable TOML file"),
    ],
)
def test_a_pylock_that_pins_nothing_fetchable_is_refused(tmp_path, text, why):
    project = tmp_path / "project"
    project.mkdir()
    (project / "pylock.toml").write_text(text)
    with pytest.raises(UsageError, match=re.escape(why)):
        stage(None, project, tmp_path / "stage", None)


@pytest.mark.pip
def test_a_uv_lock_is_exported_without_the_project_and_dev_packages(tmp_path, monkeypatch):
    from opskit.upgrade.installer import find_uv

    uv = find_uv()
    assert uv is not None, "uv is not installed: pip install -e '.[test]'"
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))
    wheels = tmp_path / "wheels"
    make_wheel(wheels, "alpha", "1.0")
    make_wheel(wheels, "devtool", "3.0")
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text(
        '[project]\nname = "shop"\nversion = "1.0"\nrequires-python = ">=3.10"\n'
        'dependencies = ["alpha"]\n[dependency-groups]\ndev = ["devtool"]\n'
    )
    locked = subprocess.run(
        [uv, "lock", "--offline", "--no-index", "--find-links", str(wheels)],
        cwd=project, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert locked.returncode == 0, locked.stderr
    staged = stage(None, project, tmp_path / "stage", None)
    assert staged.lock is not None
    pins = [
        line.strip() for line in staged.lock.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]  # fmt: skip
    assert pins == ["alpha==1.0"]
