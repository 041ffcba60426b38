"""The write step: create/identical/overwrite/conflict, all or nothing, atomic, check and diff."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from opskit.errors import CheckFailed, ConflictError, UsageError
from opskit.render import RenderedFile
from opskit.write import Action, atomic_write, check, diff, plan, to_stream, write

A = RenderedFile("a.service", "[Unit]\nDescription=a\n")
B = RenderedFile("b.sh", "#!/bin/sh\necho b\n", 0o755)


def listing(directory: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(directory.iterdir())}


def test_create_into_a_new_directory(tmp_path: Path) -> None:
    target = tmp_path / "deploy" / "systemd"
    done = write([A, B], target, force=False)
    assert [p.action for p in done] == [Action.CREATE, Action.CREATE]
    assert listing(target) == {"a.service": A.content, "b.sh": B.content}
    assert (target / "a.service").stat().st_mode & 0o777 == 0o644
    assert (target / "b.sh").stat().st_mode & 0o777 == 0o755


def test_identical_is_not_rewritten(tmp_path: Path) -> None:
    write([A], tmp_path, force=False)
    before = (tmp_path / "a.service").stat().st_ino
    done = write([A], tmp_path, force=False)
    assert [p.action for p in done] == [Action.IDENTICAL]
    assert (tmp_path / "a.service").stat().st_ino == before


def test_a_different_file_is_a_conflict_and_nothing_is_written(tmp_path: Path) -> None:
    (tmp_path / "b.sh").write_text("mine\n")
    with pytest.raises(ConflictError, match=r"b\.sh: exists and differs"):
        write([A, B], tmp_path, force=False)
    # a.service would have been new, but the run stops before the first write.
    assert listing(tmp_path) == {"b.sh": "mine\n"}


def test_force_overwrites(tmp_path: Path) -> None:
    (tmp_path / "a.service").write_text("old\n")
    done = write([A, B], tmp_path, force=True)
    assert [p.action for p in done] == [Action.OVERWRITE, Action.CREATE]
    assert listing(tmp_path)["a.service"] == A.content


def test_a_mode_change_alone_is_not_identical(tmp_path: Path) -> None:
    write([B], tmp_path, force=False)
    (tmp_path / "b.sh").chmod(0o644)
    assert [p.action for p in plan([B], tmp_path, force=False)] == [Action.CONFLICT]
    write([B], tmp_path, force=True)
    assert (tmp_path / "b.sh").stat().st_mode & 0o777 == 0o755


def test_plan_reads_only(tmp_path: Path) -> None:
    (tmp_path / "a.service").write_text("old\n")
    actions = [p.action for p in plan([A, B], tmp_path, force=False)]
    assert actions == [Action.CONFLICT, Action.CREATE]
    assert listing(tmp_path) == {"a.service": "old\n"}


def test_no_temporary_files_are_left(tmp_path: Path) -> None:
    write([A, B], tmp_path, force=False)
    write([RenderedFile("a.service", "new\n")], tmp_path, force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.service", "b.sh"]


def test_the_longest_unit_name_can_be_written(tmp_path: Path) -> None:
    # 247 + ".service" = 255 = NAME_MAX: the temporary file's name must not be longer.
    name = "x" * 247 + ".service"
    write([RenderedFile(name, "x\n")], tmp_path, force=False)
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_a_failing_second_file_leaves_the_first_untouched(tmp_path: Path) -> None:
    (tmp_path / "a.service").write_text("old\n")
    too_long = RenderedFile("y" * 300, "y\n")
    with pytest.raises(UsageError, match="File name too long"):
        write([RenderedFile("a.service", "new\n"), too_long], tmp_path, force=True)
    assert listing(tmp_path) == {"a.service": "old\n"}


def test_a_failed_write_into_a_new_directory_leaves_no_directory(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot write: File name too long"):
        write([A, RenderedFile("y" * 300, "y\n")], tmp_path / "new", force=False)
    assert not (tmp_path / "new").exists()


def test_output_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    with pytest.raises(UsageError, match="exists and is not a directory"):
        write([A], tmp_path / "f", force=False)
    with pytest.raises(UsageError, match="cannot read: Not a directory"):
        write([A], tmp_path / "f" / "sub", force=False)


def test_target_file_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "a.service").mkdir()
    with pytest.raises(UsageError, match="is a directory"):
        write([A], tmp_path, force=True)


def test_a_binary_file_is_a_conflict(tmp_path: Path) -> None:
    (tmp_path / "a.service").write_bytes(b"\xff\xfe")
    assert [p.action for p in plan([A], tmp_path, force=False)] == [Action.CONFLICT]


def test_atomic_write_replaces_in_one_step(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_text("old")
    atomic_write(target, "new ✓\r\n", 0o600)
    assert target.read_bytes() == "new ✓\r\n".encode()
    assert target.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


def test_check(tmp_path: Path) -> None:
    with pytest.raises(CheckFailed, match=r"a.service \(missing\)"):
        check([A], tmp_path)
    write([A], tmp_path, force=False)
    assert [p.action for p in check([A], tmp_path)] == [Action.IDENTICAL]
    (tmp_path / "a.service").write_text("drifted\n")
    with pytest.raises(CheckFailed, match=r"a.service \(differs\)"):
        check([A], tmp_path)
    assert (tmp_path / "a.service").read_text() == "drifted\n"


def test_diff(tmp_path: Path) -> None:
    assert diff([A], tmp_path).startswith("--- /dev/null\n")
    write([A], tmp_path, force=False)
    assert diff([A], tmp_path) == ""
    (tmp_path / "a.service").write_text("[Unit]\nDescription=old\n")
    text = diff([A], tmp_path)
    assert "-Description=old\n+Description=a\n" in text
    assert (tmp_path / "a.service").read_text() == "[Unit]\nDescription=old\n"


def test_to_stream() -> None:
    one = io.StringIO()
    to_stream([A], one)
    assert one.getvalue() == A.content
    two = io.StringIO()
    to_stream([A, B], two)
    assert two.getvalue() == f"# a.service\n{A.content}# b.sh\n{B.content}"
