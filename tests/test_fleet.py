"""``opskit ansible`` without hosts: the files, their escaping, and a real ansible reading them.

The rollout itself, over SSH into three booted systemd hosts, is in
tests/real_systemd/test_fleet.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from opskit.config import load_spec
from opskit.spec import build_spec
from tests.conftest import EXAMPLE

ANSIBLE = Path(sys.executable).parent / "ansible-playbook"
needs_ansible = pytest.mark.skipif(
    not ANSIBLE.exists(), reason="ansible-core is not installed (pip install -e '.[test]')"
)


class UnsafeLoader(yaml.SafeLoader):
    """PyYAML with Ansible's !unsafe tag kept visible: a string becomes Unsafe(str)."""


class Unsafe(str):
    pass


UnsafeLoader.add_constructor("!unsafe", lambda loader, node: Unsafe(loader.construct_scalar(node)))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    app = tmp_path / "app {{ braces }}"
    app.mkdir()
    shutil.copy2(EXAMPLE / "demoapp.py", app / "demoapp.py")
    text = (EXAMPLE / "pyproject.toml").read_text()
    text = text.replace('working-directory = "/srv/demoapp"\n', 'base = "/srv/demoapp"\n')
    text = text.replace('host = "127.0.0.1"\n', 'host = "0.0.0.0"\n')
    text += "\"JINJA\" = \"{{ lookup('pipe', 'id') }}\"\n"
    (app / "pyproject.toml").write_text(text)
    (app / "requirements.txt").write_text("gunicorn==25.1.0\n")
    return app


def generate(cli, project: Path, *extra: str):
    return cli("ansible", "--config", str(project / "pyproject.toml"), *extra)


def test_the_files_and_every_written_value_unsafe(cli, project: Path, tmp_path: Path):
    out = tmp_path / "fleet"
    result = generate(cli, project, "-o", str(out), "--serial", "1", "--serial", "25%",
                      "--serial", "100%")  # fmt: skip
    assert result.code == 0, result.err
    names = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert names == sorted([
        "deploy.yml", "rollback.yml", "group_vars/all.yml", "inventory.example.yml",
        "ansible.cfg", "opskit.toml", "demoapp.service", "demoapp-watchdog.timer",
        "demoapp-watchdog.service",
    ]), names  # fmt: skip
    defaults = yaml.load((out / "group_vars" / "all.yml").read_text(), Loader=UnsafeLoader)
    assert defaults["opskit_project"] == str(project)
    strings = [v for v in defaults.values() if isinstance(v, str)]
    strings += [s for v in defaults.values() if isinstance(v, list) for s in v]
    assert strings and all(isinstance(s, Unsafe) for s in strings), defaults
    plays = yaml.load((out / "deploy.yml").read_text(), Loader=UnsafeLoader)
    rollout = plays[1]
    assert rollout["serial"] == [1, "25%", "100%"] and rollout["max_fail_percentage"] == 0
    assert rollout["hosts"] == "demoapp" and rollout["become"] is True
    assert [t["name"] for t in rollout["tasks"][0]["rescue"]][-1] == "Stop the rollout"


def test_each_hosts_spec_is_the_controllers(cli, project: Path, tmp_path: Path):
    out = tmp_path / "fleet"
    assert generate(cli, project, "-o", str(out), "--serial", "2").code == 0
    here = load_spec({"serial": ["2"]}, config=project / "pyproject.toml")
    there = load_spec({}, config=out / "opskit.toml")
    assert there == here
    # The TOML is written by a TOML library: the Jinja text in a value is just text.
    assert ("JINJA", "{{ lookup('pipe', 'id') }}") in there.environment


@needs_ansible
def test_ansible_reads_the_files_and_templates_no_written_value(cli, project: Path, tmp_path):
    out = tmp_path / "fleet"
    result = generate(cli, project, "-o", str(out), "--validate")
    assert result.code == 0, result.err
    assert "valid      deploy.yml, rollback.yml (ansible-playbook --syntax-check)" in result.err
    # A play beside the generated ones prints a value with "{{" in it, through Ansible.
    (out / "show.yml").write_text(
        "- hosts: localhost\n  gather_facts: false\n  vars_files: [group_vars/all.yml]\n"
        '  tasks:\n    - ansible.builtin.debug:\n        msg: "{{ opskit_project }}"\n'
    )
    shown = subprocess.run(
        [str(ANSIBLE), "-i", "localhost,", "-c", "local", "show.yml"],
        cwd=out, capture_output=True, text=True, timeout=120, check=False,
        env={"PATH": "/usr/bin:/bin", "ANSIBLE_HOME": str(tmp_path / "home"),
             "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp")},
    )  # fmt: skip
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert json.dumps(str(project)) in shown.stdout, shown.stdout


def test_validate_without_ansible_is_one_line(cli, project, tmp_path, monkeypatch):
    import opskit.fleet.cli

    monkeypatch.setattr(opskit.fleet.cli, "find_ansible_playbook", lambda: None)
    result = generate(cli, project, "-o", str(tmp_path / "fleet"), "--validate")
    assert result.code == 2, result.err
    assert result.err == (
        "opskit: error: --validate: ansible-playbook not found (pip install 'opskit[fleet]')\n"
    )
    assert not (tmp_path / "fleet").exists()
    refused = generate(cli, project, "-o", "-", "--validate")
    assert refused.code == 2 and "not with -o -" in refused.err


def test_check_reports_drift_and_force_is_needed_to_overwrite(cli, project: Path, tmp_path):
    out = tmp_path / "fleet"
    assert generate(cli, project, "-o", str(out)).code == 0
    assert generate(cli, project, "-o", str(out), "--check").code == 0
    (out / "group_vars" / "all.yml").write_text("opskit_port: 1\n")
    assert generate(cli, project, "-o", str(out), "--check").code == 1
    again = generate(cli, project, "-o", str(out))
    assert again.code == 1 and "exists and differs" in again.err
    assert (out / "group_vars" / "all.yml").read_text() == "opskit_port: 1\n"


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (('base = "/srv/demoapp"\n', 'working-directory = "/srv/demoapp"\n'), "needs base"),
        (('host = "0.0.0.0"\n', 'host = "127.0.0.1"\n'), "not reachable from the controller"),
    ],
)
def test_a_spec_the_rollout_cannot_gate_is_refused(cli, project, tmp_path, change, why):
    config = project / "pyproject.toml"
    config.write_text(config.read_text().replace(*change))
    result = generate(cli, project, "-o", str(tmp_path / "fleet"))
    assert result.code == 2, result.err
    assert result.err.count("\n") == 1 and why in result.err, result.err
    assert not (tmp_path / "fleet").exists()


@pytest.mark.parametrize("bad", ["0", "101%", "abc", "-1", "1.5"])
def test_serial_takes_counts_and_percentages_only(cli, project, tmp_path, bad):
    result = generate(cli, project, "-o", str(tmp_path / "fleet"), "--serial", bad)
    assert result.code == 2, result.err
    assert result.err.startswith("opskit: error: serial:") and "Traceback" not in result.err
    assert not (tmp_path / "fleet").exists()


def test_serial_in_the_spec():
    assert build_spec({"name": "a", "app": "a:app", "serial": [1, "25%", " 100% "]}).serial == (
        1, "25%", "100%",
    )  # fmt: skip
    assert build_spec({"name": "a", "app": "a:app", "serial": 3}).serial == (3,)
    assert build_spec({"name": "a", "app": "a:app"}).serial == (1,)
