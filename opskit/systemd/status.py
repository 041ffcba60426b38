"""What a running systemd says about a unit: its state, its last exit explained, its journal.

Read with ``systemctl show`` and ``journalctl`` through the one process runner; used by
``--install`` to say why a service does not serve, and by doctor to look at live units.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from opskit.proc import Runner

#: The properties read, in one ``systemctl show`` call.
PROPERTIES = (
    "LoadState",
    "ActiveState",
    "SubState",
    "Result",
    "NRestarts",
    "ExecMainCode",
    "ExecMainStatus",
    "MainPID",
    "FragmentPath",
    "ExecMainStartTimestampMonotonic",
)
#: How long a query of systemctl or journalctl may take.
QUERY_TIMEOUT = 30.0

# systemd.exec(5), "Process Exit Codes": what the service manager could not do before
# the program ran, and the usual cause in a generated unit.
EXIT_CODES: dict[int, tuple[str, str]] = {
    200: ("CHDIR", "WorkingDirectory= is missing or not readable by the service's user"),
    203: (
        "EXEC",
        "the ExecStart= program is missing or not executable for the service "
        "(a wrong venv, or a path that PrivateTmp=/ProtectHome= hide from it)",
    ),
    204: ("MEMORY", "out of memory"),
    205: ("LIMITS", "a resource limit could not be set"),
    208: ("STDIN", "standard input could not be set up"),
    209: ("STDOUT", "standard output could not be set up"),
    210: ("CHROOT", "RootDirectory= could not be entered"),
    214: ("SETSCHEDULER", "the scheduling policy could not be set"),
    216: ("GROUP", "Group= does not exist"),
    217: ("USER", "User= does not exist (create it, or drop user for a dynamic user)"),
    218: ("CAPABILITIES", "the capabilities could not be set"),
    219: ("CGROUP", "the cgroup could not be set up"),
    222: ("STDERR", "standard error could not be set up"),
    225: ("NETWORK", "the private network could not be set up"),
    226: (
        "NAMESPACE",
        "a sandbox mount failed: a path in ReadWritePaths= (or another path setting) "
        "does not exist",
    ),
    227: ("NO_NEW_PRIVILEGES", "NoNewPrivileges= could not be set"),
    228: ("SECCOMP", "the system call filter could not be set"),
    232: ("ADDRESS_FAMILIES", "RestrictAddressFamilies= could not be set"),
    233: ("RUNTIME_DIRECTORY", "RuntimeDirectory= could not be created"),
    235: ("CHOWN", "a directory could not be given to the service's user"),
    237: ("KEYRING", "the kernel keyring could not be set up"),
    238: ("STATE_DIRECTORY", "StateDirectory= could not be created"),
    243: ("CREDENTIALS", "the credentials could not be set up"),
}
# The LSB codes a program itself may exit with (systemd.exec(5) as well).
_LSB = {
    1: "a generic failure of the program itself",
    2: "invalid arguments (the server refused its command line)",
    3: "not implemented",
    4: "insufficient privileges",
    5: "not installed",
    6: "not configured",
    7: "not running",
}


@dataclass(frozen=True)
class UnitStatus:
    """A unit as systemd sees it now."""

    unit: str
    load: str
    active: str
    sub: str
    result: str
    restarts: int
    exit_code: str
    exit_status: int
    main_pid: int
    #: Seconds since the main process started (CLOCK_MONOTONIC), None if it never did.
    running_for: float | None = None

    @property
    def running(self) -> bool:
        """Whether it is active and running (or, for a socket, listening)."""
        return self.active == "active" and self.sub in ("running", "listening")

    @property
    def failing(self) -> bool:
        """Whether it failed, or is restarting after a failure."""
        return (
            self.active == "failed"
            or (self.active in ("activating", "deactivating") and self.sub == "auto-restart")
            or self.result not in ("success", "")
        )

    def last_exit(self) -> str:
        """The main process's last exit, explained: '203/EXEC: ...', 'killed by SIGKILL'."""
        return explain_exit(self.exit_code, self.exit_status)

    def line(self) -> str:
        """One line: state, result, restarts and the last exit."""
        parts = [f"{self.unit}: {self.active}/{self.sub}"]
        if self.result and self.result != "success":
            parts.append(f"result {self.result}")
        if self.restarts:
            parts.append(f"{self.restarts} restart{'s' if self.restarts != 1 else ''}")
        exit_text = self.last_exit()
        if exit_text:
            parts.append(f"last exit {exit_text}")
        return ", ".join(parts)


#: ``systemctl show`` gives ExecMainCode= as the number of waitid(2)'s si_code.
_CLD = {"1": "exited", "2": "killed", "3": "dumped"}


def explain_exit(code: str, status: int) -> str:
    """The main process's exit as a person reads it; '' when it has not exited."""
    code = _CLD.get(code, code)
    if code in ("killed", "dumped"):
        import signal

        try:
            name = signal.Signals(status).name
        except ValueError:
            name = f"signal {status}"
        return f"killed by {name}" + (" (core dumped)" if code == "dumped" else "")
    if code != "exited" or status == 0:
        return ""
    if status in EXIT_CODES:
        name, why = EXIT_CODES[status]
        return f"{status}/{name}: {why}"
    if status in _LSB:
        return f"status {status}: {_LSB[status]}"
    return f"status {status}"


def read_status(unit: str, *, runner: Runner) -> UnitStatus:
    """Ask systemd for the unit's state (a unit it does not know reads as not-found)."""
    done = runner(
        ["systemctl", "show", "--no-pager", f"--property={','.join(PROPERTIES)}", unit],
        timeout=QUERY_TIMEOUT,
    )
    values: dict[str, str] = {}
    for line in done.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key] = value

    def number(key: str) -> int:
        text = values.get(key, "")
        return int(text) if text.isdigit() else 0

    return UnitStatus(
        unit=unit,
        load=values.get("LoadState", "not-found"),
        active=values.get("ActiveState", "inactive"),
        sub=values.get("SubState", "dead"),
        result=values.get("Result", ""),
        restarts=number("NRestarts"),
        exit_code=values.get("ExecMainCode", ""),
        exit_status=number("ExecMainStatus"),
        main_pid=number("MainPID"),
        running_for=_since(number("ExecMainStartTimestampMonotonic")),
    )


def _since(monotonic_us: int) -> float | None:
    import time

    # systemd's monotonic timestamps and Python's time.monotonic() read one clock.
    return time.monotonic() - monotonic_us / 1e6 if monotonic_us else None


#: Lines of a journal that say what went wrong (the servers' and Python's own words).
_TELLING = re.compile(
    r"error|fail|denied|refus|traceback|exception|errno|game over|no app loaded|in use"
    r"|not found|no module|cannot|can't|unable|killed|timeout|timed out",
    re.IGNORECASE,
)


def journal_tail(
    unit: str, *, runner: Runner, lines: int = 12, since: float | None = None
) -> list[str]:
    """The unit's journal lines that tell what happened, oldest first; [] when none.

    A server prints a banner of a dozen lines at every start, so the plain last lines of a
    crash loop are the next start's banner: this keeps the last lines that name an error
    (up to ``lines`` in all) and the very last few. ``since`` (epoch seconds) keeps only
    what this start wrote, not an older run's lines.
    """
    argv = ["journalctl", "--no-pager", "--quiet", "--output=cat", "--lines=300", "-u", unit]
    if since is not None:
        argv.append(f"--since=@{since:.0f}")
    done = runner(argv, timeout=QUERY_TIMEOUT)
    if not done.ok:
        return []
    return telling_lines(done.stdout.splitlines(), lines)


#: A line that states a root cause: a Python exception, or a server's own verdict.
_CAUSE = re.compile(
    r"\b\w*(Error|Exception)\b: |No module named|GAME OVER|no app loaded|Permission denied"
    r"|Address already in use|Connection in use"
)


def error_lines(journal: list[str], most: int = 3) -> list[str]:
    """The root cause (the last exception line) and the last lines that name an error.

    A pre-fork server's last words are its own ("Worker failed to boot"); the reason
    is the worker's traceback above them.
    """
    causes = [i for i, line in enumerate(journal) if _CAUSE.search(line)]
    named = [i for i, line in enumerate(journal) if _TELLING.search(line)]
    picked = set(causes[-1:])
    for i in reversed(named or range(len(journal))):
        if len(picked) >= most:
            break
        picked.add(i)
    return [journal[i] for i in sorted(picked)]


def telling_lines(journal: list[str], lines: int = 12) -> list[str]:
    """Of a journal's lines, the last that name an error and the final three, in order."""
    text = [line for line in journal if line.strip()]
    last = set(range(max(0, len(text) - 3), len(text)))
    telling = [i for i, line in enumerate(text) if _TELLING.search(line) and i not in last]
    room = max(lines - len(last), 0)
    keep = sorted({*(telling[-room:] if room else []), *last})
    return [text[i] for i in keep]
