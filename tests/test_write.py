"""The write step: create/identical/overwrite/conflict, all or nothing, atomic, check and diff."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from opskit import write as write_module
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
    with pytest.raises(UsageError, match="File name too long"):
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


def test_a_file_that_appears_after_the_plan_is_not_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another writer (a second opskit on a file system without locks, an editor) creates
    # a.service between this run's plan and its renames.
    real_stage = write_module._stage

    def stage_then_someone_else_writes(path: Path, content: str, mode: int) -> Path:
        staged = real_stage(path, content, mode)
        if path.name == "b.sh":
            (tmp_path / "a.service").write_text("theirs\n")
        return staged

    monkeypatch.setattr(write_module, "_stage", stage_then_someone_else_writes)
    with pytest.raises(ConflictError, match=r"a\.service: exists and differs"):
        write([A, B], tmp_path, force=False)
    assert listing(tmp_path) == {"a.service": "theirs\n"}


def test_a_dangling_symlink_is_not_replaced_without_force(tmp_path: Path) -> None:
    (tmp_path / "a.service").symlink_to(tmp_path / "gone")
    with pytest.raises(ConflictError, match=r"a\.service: exists and differs"):
        write([A], tmp_path, force=False)
    assert (tmp_path / "a.service").is_symlink()
    assert [p.action for p in write([A], tmp_path, force=True)] == [Action.OVERWRITE]
    assert not (tmp_path / "a.service").is_symlink()
    assert listing(tmp_path) == {"a.service": A.content}


def test_a_symlink_to_a_device_is_refused_even_with_force(tmp_path: Path) -> None:
    # How systemctl masks a unit: replacing the link would unmask it behind one's back.
    (tmp_path / "a.service").symlink_to("/dev/null")
    message = r"a\.service: is a symlink to /dev/null, a character device, not a file$"
    with pytest.raises(UsageError, match=message):
        write([A], tmp_path, force=True)
    with pytest.raises(UsageError, match=message):
        diff([A], tmp_path)
    assert (tmp_path / "a.service").readlink() == Path("/dev/null")


def test_a_file_larger_than_opskit_writes_is_refused(tmp_path: Path) -> None:
    size = 5 * 1024 * 1024
    with (tmp_path / "a.service").open("wb") as handle:
        handle.truncate(size)
    with pytest.raises(UsageError, match=r"a\.service: larger than 4 MiB, not a file opskit"):
        write([A], tmp_path, force=True)
    assert (tmp_path / "a.service").stat().st_size == size


def test_identical_means_the_same_bytes(tmp_path: Path) -> None:
    crlf = RenderedFile("x.bat", "echo x\r\n")
    write([crlf], tmp_path, force=False)
    assert [p.action for p in write([crlf], tmp_path, force=False)] == [Action.IDENTICAL]
    (tmp_path / "a.service").write_bytes(A.content.replace("\n", "\r\n").encode())
    assert [p.action for p in plan([A], tmp_path, force=False)] == [Action.CONFLICT]


def test_a_dead_runs_temporary_files_are_removed(tmp_path: Path) -> None:
    # What a SIGKILL during the write leaves: the next write into the directory cleans up,
    # and leaves alone what only looks similar.
    (tmp_path / ".opskit-k3_x9q0a.tmp").write_text("half a unit")
    (tmp_path / ".opskit-mine.tmp").write_text("someone's own file")
    write([A], tmp_path, force=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".opskit-mine.tmp", "a.service"]
