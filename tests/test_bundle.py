"""opskit bundle: every artifact into one directory, reported per file, never clobbered."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from opskit.bundle.artifacts import ARTIFACTS, Origin, render_bundle
from opskit.errors import OpskitError
from opskit.render import RenderedFile
from opskit.spec import build_spec
from tests.conftest import EXAMPLE, needs_analyze, verify


@pytest.fixture
def project(tmp_path: Path) -> Path:
    app = tmp_path / "app"
    app.mkdir()
    for name in ("demoapp.py", "VERSION", "pyproject.toml"):
        shutil.copy2(EXAMPLE / name, app / name)
    return app


def bundle(cli, project: Path, out: Path, *extra: str):
    return cli(
        "bundle",
        "demoapp",
        "--config",
        str(project / "pyproject.toml"),
        "--workdir",
        str(project),
        "--venv",
        sys.prefix,
        # The test's paths lie under /tmp, which a dynamic user's PrivateTmp= would hide.
        "--user",
        "opskit-test",
        "-o",
        str(out),
        *extra,
    )


def reported(err: str) -> dict[str, str]:
    """{file name: action} from the per-file report lines."""
    actions = {}
    for line in err.splitlines():
        action, _, path = line.partition(" ")
        if action in ("create", "identical", "overwrite"):
            actions[Path(path.strip()).name] = action
    return actions


def test_every_generator_contributes_a_file():
    spec = build_spec({"name": "demoapp", "app": "demoapp:app"})
    bundle = render_bundle(spec)
    assert bundle.skipped == []
    names = [f.name for f in bundle.files]
    assert names[0] == "demoapp.service"
    assert "logging.json" in names
    assert "reload-demoapp.sh" in names
    assert names[-1] == "ops.mk"
    assert len(names) == len(set(names))
    assert len(names) >= len(ARTIFACTS)


def test_a_refused_optional_artifact_is_skipped_with_the_reason(cli, tmp_path: Path):
    # A single uvicorn process dies on SIGHUP: no reload script, everything else.
    out = tmp_path / "bundle"
    result = cli(
        "bundle",
        "api",
        "--server",
        "uvicorn",
        "--app",
        "demoapp:asgi",
        "--set",
        "workers=1",
        "-o",
        str(out),
    )
    assert result.code == 0, result.err
    assert (
        "skipped    reload script: workers: a single uvicorn process dies on SIGHUP" in result.err
    )
    names = sorted(p.name for p in out.iterdir())
    assert "api.service" in names and "ops.mk" in names
    assert not [n for n in names if n.startswith("reload-")]


def test_two_generators_writing_one_file_is_an_error():
    spec = build_spec({"name": "demoapp", "app": "demoapp:app"})

    def one(spec, origin):
        return [RenderedFile("same.txt", "a\n")]

    with pytest.raises(OpskitError, match=r"same\.txt: written by both the first and the second"):
        render_bundle(spec, Origin(), artifacts=[("first", one, False), ("second", one, False)])


def test_create_identical_overwrite(cli, project: Path, tmp_path: Path):
    out = tmp_path / "bundle"
    first = bundle(cli, project, out)
    assert first.code == 0, first.err
    actions = reported(first.err)
    written = sorted(p.name for p in out.iterdir())
    assert sorted(actions) == written
    assert set(actions.values()) == {"create"}
    assert f"include {out}/ops.mk" in first.err

    second = bundle(cli, project, out)
    assert second.code == 0, second.err
    assert set(reported(second.err).values()) == {"identical"}

    # Another worker count changes the unit and nothing else.
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    conflict = bundle(cli, project, out, "--set", "workers=3")
    assert conflict.code == 1
    assert "demoapp.service" in conflict.err and "exists and differs" in conflict.err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before

    forced = bundle(cli, project, out, "--set", "workers=3", "--force")
    assert forced.code == 0, forced.err
    actions = reported(forced.err)
    assert actions["demoapp.service"] == "overwrite"
    # ops.mk records the new override, so ops-check compares against the same spec.
    assert actions["ops.mk"] == "overwrite"
    assert "--set workers=3" in (out / "ops.mk").read_text()
    others = {k: v for k, v in actions.items() if k not in ("demoapp.service", "ops.mk")}
    assert set(others.values()) <= {"identical"}


def test_check_reports_drift(cli, project: Path, tmp_path: Path):
    out = tmp_path / "bundle"
    assert bundle(cli, project, out).code == 0
    clean = bundle(cli, project, out, "--check")
    assert clean.code == 0, clean.err
    unit = out / "demoapp.service"
    unit.write_text(unit.read_text() + "# edited\n")
    drift = bundle(cli, project, out, "--check")
    assert drift.code == 1
    assert "drift" in drift.err and "demoapp.service (differs)" in drift.err


def test_bad_input_writes_nothing(cli, project: Path, tmp_path: Path):
    out = tmp_path / "bundle"
    result = bundle(cli, project, out, "--set", "port=0")
    assert result.code == 2
    assert result.err.count("\n") == 1 and "port" in result.err
    assert "Traceback" not in result.err
    assert not out.exists()


def test_stdout_mode_names_each_file(project: Path):
    # A real process: write.to_stream binds sys.stdout when it is imported, which an
    # in-process capture cannot see.
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "opskit",
            "bundle",
            "demoapp",
            "--config",
            str(project / "pyproject.toml"),
            "-o",
            "-",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "# demoapp.service\n" in proc.stdout
    assert "# ops.mk\n" in proc.stdout


@needs_analyze
def test_artifacts_are_valid(cli, project: Path, tmp_path: Path):
    out = tmp_path / "bundle"
    assert bundle(cli, project, out, "--set", "socket=true").code == 0
    assert verify(out / "demoapp.service") == ""
    assert verify(out / "demoapp.socket") == ""
    for config in out.glob("*.json"):
        # The logging config loads in a fresh interpreter, with the bundle's helper
        # modules importable as the unit arranges (PYTHONPATH).
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                "import json, logging.config, sys; "
                "logging.config.dictConfig(json.load(open(sys.argv[1])))",
                str(config),
            ],
            env={**os.environ, "PYTHONPATH": str(out)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        json.loads(config.read_text())
    scripts = list(out.glob("*.sh"))
    assert scripts
    for script in scripts:
        assert os.access(script, os.X_OK)
        shell = script.read_text().splitlines()[0].removeprefix("#!")
        assert subprocess.run([shell, "-n", str(script)], check=False).returncode == 0


def test_a_bundle_with_a_base_deploys_through_ops_mk(cli, project: Path, tmp_path: Path):
    """ops.mk's ops-deploy runs opskit deploy with the bundle's spec; a dry run says so."""
    text = (project / "pyproject.toml").read_text()
    base = tmp_path / "base"
    # With a base, the release layout decides the working directory.
    text = text.replace('working-directory = "/srv/demoapp"\n', f'base = "{base}"\n')
    assert f'base = "{base}"' in text
    (project / "pyproject.toml").write_text(text)
    (project / "requirements.txt").write_text("")
    out = project / "deploy"
    result = cli(
        "bundle", "demoapp", "--config", str(project / "pyproject.toml"), "--user",
        "opskit-test", "-o", str(out),
    )  # fmt: skip
    assert result.code == 0, result.err
    opskit = f"{sys.executable} -m opskit"
    make = [
        "make", "--no-print-directory", "-f", str(out / "ops.mk"), f"OPSKIT={opskit}",
        "OPS_ARGS=--user opskit-test --dry-run",
    ]  # fmt: skip
    done = subprocess.run(
        [*make, "ops-deploy", f"SOURCE={project}"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{opskit} deploy --name demoapp" in done.stdout
    assert "dry run: would build releases/" in done.stderr, done.stderr
    # Nothing was built, nothing switched.
    assert not (base / "releases").exists() or not any((base / "releases").iterdir())
    assert not (base / "current").exists()
    listing = subprocess.run(
        [*make[:5], "ops-releases"], cwd=project, capture_output=True, text=True, timeout=120
    )
    assert listing.returncode == 0, listing.stdout + listing.stderr
    assert f"{opskit} releases" in listing.stdout


def test_with_a_base_ops_upgrade_reaches_the_release_path(cli, project: Path, tmp_path: Path):
    """ops.mk's ops-upgrade passes the spec to opskit upgrade --release, which accepts it all.

    With nothing deployed yet the release path itself refuses, naming the base: every
    option the recipe passes was accepted before that.
    """
    text = (project / "pyproject.toml").read_text()
    base = tmp_path / "base"
    text = text.replace('working-directory = "/srv/demoapp"\n', f'base = "{base}"\n')
    (project / "pyproject.toml").write_text(text)
    out = project / "deploy"
    result = cli(
        "bundle", "demoapp", "--config", str(project / "pyproject.toml"), "--user",
        "opskit-test", "-o", str(out),
    )  # fmt: skip
    assert result.code == 0, result.err
    done = subprocess.run(
        ["make", "--no-print-directory", "-f", str(out / "ops.mk"),
         f"OPSKIT={sys.executable} -m opskit", "OPS_ARGS=--user opskit-test --dry-run",
         "ops-upgrade", "PKG=gunicorn==23.0.0"],
        cwd=project, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"upgrade --release: no live release in {base} (opskit deploy first)" in done.stderr
    # Nothing was built or switched (the base keeps only the deploy lock it took).
    assert not (base / "releases").exists() and not (base / "current").exists()
