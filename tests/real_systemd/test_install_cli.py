"""`opskit systemd --install` flag checks: bad combinations exit 2 with one line, write nothing."""

from __future__ import annotations

import pytest

BASE = ("systemd", "demo", "--app", "demoapp:app")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--enable",), "--enable needs --install"),
        (("--restart",), "--restart needs --install"),
        (("--unit-dir", "units"), "--unit-dir needs --install"),
        (("--install", "-o", "out"), "cannot be combined with --output"),
        (("--install", "--check"), "cannot be combined with --check"),
        (("--install", "--diff"), "cannot be combined with --diff"),
    ],
)
def test_bad_install_flags(cli, tmp_path, monkeypatch, extra, message):
    monkeypatch.chdir(tmp_path)
    result = cli(*BASE, *extra)
    assert result.code == 2
    assert result.err.count("\n") == 1 and message in result.err
    assert list(tmp_path.iterdir()) == []


def test_bad_spec_is_reported_before_any_install_check(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = cli("systemd", "bad name", "--app", "demoapp:app", "--install")
    assert result.code == 2
    assert result.err.startswith("opskit: error: name:")
    assert list(tmp_path.iterdir()) == []


def test_install_refuses_non_root_before_anything(tmp_path):
    from opskit.errors import UsageError
    from opskit.systemd.install import validate_can_install

    with pytest.raises(UsageError, match="must run as root"):
        validate_can_install(euid=1000, booted_marker=tmp_path)
    with pytest.raises(UsageError, match="systemd is not running"):
        validate_can_install(euid=0, booted_marker=tmp_path / "missing")
    validate_can_install(euid=0, booted_marker=tmp_path)  # root, systemd's marker present
