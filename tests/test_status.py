"""Reading systemd's answers: exit codes explained, the journal lines that tell."""

from __future__ import annotations

from opskit.systemd.status import UnitStatus, explain_exit, telling_lines


def test_exit_codes_as_systemctl_show_gives_them():
    # ExecMainCode= is waitid()'s si_code: 1 exited, 2 killed, 3 dumped.
    assert explain_exit("1", 203).startswith("203/EXEC: the ExecStart= program is missing")
    assert explain_exit("1", 200).startswith("200/CHDIR")
    assert (
        explain_exit("1", 2) == "status 2: invalid arguments (the server refused its command line)"
    )
    assert explain_exit("1", 77) == "status 77"
    assert explain_exit("1", 0) == ""
    assert explain_exit("2", 9) == "killed by SIGKILL"
    assert explain_exit("3", 11) == "killed by SIGSEGV (core dumped)"
    assert explain_exit("0", 0) == ""


def test_a_status_line_says_state_result_restarts_and_exit():
    status = UnitStatus(
        "shop.service", "loaded", "activating", "auto-restart", "exit-code", 4, "1", 203, 0
    )
    assert status.failing and not status.running
    assert status.line() == (
        "shop.service: activating/auto-restart, result exit-code, 4 restarts, last exit "
        + explain_exit("1", 203)
    )


def test_the_journal_lines_kept_are_the_errors_and_the_last_three():
    banner = [f"*** banner line {i} ***" for i in range(20)]
    journal = [
        "Starting shop.service...",
        "Traceback (most recent call last):",
        "ModuleNotFoundError: No module named 'shopp'",
        *banner,
    ]
    kept = telling_lines(journal, lines=6)
    assert kept == [
        "Traceback (most recent call last):",
        "ModuleNotFoundError: No module named 'shopp'",
        *banner[-3:],
    ]
    assert telling_lines([], 6) == []
    assert telling_lines(["only"], 6) == ["only"]


def test_error_lines_prefer_the_lines_naming_an_error():
    from opskit.systemd.status import error_lines

    journal = [
        "Booting worker",
        "ModuleNotFoundError: No module named 'x'",
        "Started x",
        "Listening",
    ]
    assert error_lines(journal) == ["ModuleNotFoundError: No module named 'x'"]
    assert error_lines(["a", "b", "c", "d"]) == ["b", "c", "d"]
