"""``opskit upgrade --release`` without a service: the re-pinned lock and the staged release.

The build is real (pip, offline, wheels made here); the switch under a real systemd is in
tests/real_systemd/test_upgrade_release.py.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from opskit.deploy.build import build
from opskit.deploy.layout import Layout, new_id
from opskit.deploy.source import content_hash, stage
from opskit.deploy.upgrade import repin, stage_from_release
from opskit.errors import UsageError
from opskit.proc import SubprocessRunner
from opskit.upgrade.pins import parse_pins
from tests.test_deploy import spec
from tests.test_upgrade_pip import make_wheel

LOCK = """\
# a comment stays
Alpha==1.0 ; python_version >= "3"  # via shop
beta[extra]==2.0
gamma==3.0
"""


def test_repin_moves_only_the_named_pins_and_keeps_the_rest_of_each_line():
    text, changes = repin(LOCK, parse_pins(["alpha==1.1", "beta==2.0"]))
    assert text.splitlines() == [
        "# a comment stays",
        'Alpha==1.1 ; python_version >= "3"  # via shop',
        "beta[extra]==2.0",
        "gamma==3.0",
    ]
    assert changes == ["alpha 1.0 -> 1.1"]


def test_repin_adds_a_pin_the_lock_lacks():
    text, changes = repin("alpha==1.0\n", parse_pins(["delta==4.0"]))
    assert text == "alpha==1.0\ndelta==4.0\n"
    assert changes == ["delta 4.0 (added: not in the lock)"]


@pytest.mark.parametrize(
    "lock",
    ["alpha==1.0 --hash=sha256:00\n", "alpha==1.0 \\\n    --hash=sha256:00\nbeta==2.0\n"],
)
def test_repin_refuses_a_hashed_pin(lock):
    with pytest.raises(UsageError, match="with hashes"):
        repin(lock, parse_pins(["alpha==1.1"]))


def test_the_live_release_is_built_again_with_the_pin_moved(tmp_path):
    base = tmp_path / "base"
    wheels = base / "wheels"
    make_wheel(wheels, "alpha", "1.0")
    make_wheel(wheels, "alpha", "1.1")
    make_wheel(wheels, "beta", "2.0")
    s = spec(base=str(base), interpreter=sys.executable, shared=["media"])
    layout = Layout(base)
    runner = SubprocessRunner()
    said: list[str] = []
    project = tmp_path / "project"
    project.mkdir()
    (project / "shop.py").write_text("app = 'one'\n")
    (project / "requirements.txt").write_text("alpha==1.0\nbeta==2.0\n")
    staged = stage(None, project, tmp_path / "stage-one", None)
    digest = content_hash(staged, "3.11")
    one = new_id(digest, now=time.time() - 10)
    build(s, layout, staged, one, digest, runner=runner, say=said.append)
    layout.switch(one)
    assert layout.manifest(one)["lock"] == "requirements.txt"

    staged, changes = stage_from_release(s, layout, one, parse_pins(["alpha==1.1"]), tmp_path / "u")
    assert changes == ["alpha 1.0 -> 1.1"]
    names = sorted(p.name for p in staged.tree.iterdir())
    # The code and the lock; not the venv, the manifest or the shared link.
    assert names == ["requirements.txt", "shop.py"], names
    assert (staged.tree / "requirements.txt").read_text() == "alpha==1.1\nbeta==2.0\n"
    digest2 = content_hash(staged, "3.11")
    assert digest2 != digest
    two = new_id(digest2)
    build(s, layout, staged, two, digest2, runner=runner, say=said.append)

    def version(release: str) -> str:
        python = layout.release(release) / "venv" / "bin" / "python"
        done = subprocess.run(
            [str(python), "-c", "import alpha; print(alpha.VERSION)"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        return done.stdout.strip()

    assert (version(one), version(two)) == ("1.0", "1.1")
    assert (layout.release(two) / "media").is_symlink()
    # The same upgrade staged again is the same content: the same release.
    again, _ = stage_from_release(s, layout, one, parse_pins(["alpha==1.1"]), tmp_path / "u2")
    assert content_hash(again, "3.11") == digest2

    # Nothing to move: no change is reported.
    _, none = stage_from_release(s, layout, one, parse_pins(["alpha==1.0"]), tmp_path / "u3")
    assert none == []


def test_a_lock_outside_the_tree_and_a_wheel_source_are_kept_in_the_release(tmp_path):
    base = tmp_path / "base"
    wheels = base / "wheels"
    make_wheel(wheels, "alpha", "1.0")
    make_wheel(wheels, "alpha", "1.1")
    app_wheel = make_wheel(tmp_path / "dist", "shop", "1.0")
    lock = tmp_path / "locked.txt"
    lock.write_text("alpha==1.0\n")
    s = spec(base=str(base), interpreter=sys.executable)
    layout = Layout(base)
    staged = stage(str(app_wheel), tmp_path, tmp_path / "stage", lock)
    digest = content_hash(staged, "3.11")
    one = new_id(digest)
    build(s, layout, staged, one, digest, runner=SubprocessRunner(), say=lambda m: None)
    manifest = layout.manifest(one)
    assert manifest["lock"] == ".opskit-lock.txt"
    assert manifest["wheel"] == f".opskit-source/{app_wheel.name}"
    staged, changes = stage_from_release(s, layout, one, parse_pins(["alpha==1.1"]), tmp_path / "u")
    assert changes == ["alpha 1.0 -> 1.1"]
    assert staged.wheel is not None and staged.wheel.name == app_wheel.name
    assert staged.lock is not None and staged.lock.read_text() == "alpha==1.1\n"
    assert list(staged.tree.iterdir()) == []


def test_cli_release_needs_a_base_and_refuses_in_place_flags(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ("upgrade", "--release", "alpha==1.1", "--name", "shop", "--app", "shop:app")
    result = cli(*args, "--workdir", str(tmp_path))
    assert result.code == 2
    assert result.err.count("\n") == 1 and "base: not set" in result.err, result.err
    result = cli(*args, "--python", sys.executable)
    assert result.code == 2
    assert result.err.count("\n") == 1 and "--python: not with --release" in result.err


def test_cli_release_without_a_live_release_is_one_line(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = tmp_path / "base"
    result = cli(
        "upgrade", "--release", "alpha==1.1", "--name", "shop", "--app", "shop:app",
        "--set", f"base={base}",
    )  # fmt: skip
    assert result.code == 2, result.err
    assert result.err.count("\n") == 1 and "no live release" in result.err, result.err


@pytest.mark.pip
def test_a_uv_built_release_from_a_pylock_is_upgraded_by_uv(tmp_path, monkeypatch):
    """installer = uv and a pylock.toml: the kept lock is the pins, re-pinned like any."""
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    base = tmp_path / "base"
    wheels = base / "wheels"
    make_wheel(wheels, "alpha", "1.0")
    make_wheel(wheels, "alpha", "1.1")
    s = spec(base=str(base), interpreter=sys.executable, installer="uv")
    layout = Layout(base)
    runner = SubprocessRunner()
    project = tmp_path / "project"
    project.mkdir()
    (project / "shop.py").write_text("app = 'one'\n")
    (project / "pylock.toml").write_text(
        'lock-version = "1.0"\ncreated-by = "uv"\n\n[[packages]]\nname = "alpha"\nversion = "1.0"\n'
    )
    staged = stage(None, project, tmp_path / "stage-one", None)
    digest = content_hash(staged, "3.11")
    one = new_id(digest, now=time.time() - 10)
    build(s, layout, staged, one, digest, runner=runner, say=print)
    layout.switch(one)
    assert layout.manifest(one)["lock"] == ".opskit-lock.txt"
    staged, changes = stage_from_release(s, layout, one, parse_pins(["alpha==1.1"]), tmp_path / "u")
    assert changes == ["alpha 1.0 -> 1.1"]
    digest2 = content_hash(staged, "3.11")
    two = new_id(digest2)
    build(s, layout, staged, two, digest2, runner=runner, say=print)
    for release, version in ((one, "1.0"), (two, "1.1")):
        venv = layout.release(release) / "venv"
        assert not (venv / "bin" / "pip").exists()
        done = subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import alpha; print(alpha.VERSION)"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert done.stdout.strip() == version
        assert layout.manifest(release)["installer"] == "uv"
