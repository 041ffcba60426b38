"""The one exception hierarchy: the core raises these, the CLI maps them to exit codes."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """opskit's exit codes, stable and documented in docs/cli.md."""

    OK = 0
    #: A check found drift or a problem, or an operation failed.
    FAILED = 1
    #: Bad usage or input; nothing was written.
    USAGE = 2
    #: Interrupted (128 + SIGINT, as shells report it).
    INTERRUPTED = 130


class OpskitError(Exception):
    """Base of every error opskit reports to a user; raised by the core, caught by the CLI."""

    exit_code: int = ExitCode.FAILED


class UsageError(OpskitError):
    """Raised when the input (flags, configuration, arguments) is invalid; exit code 2."""

    exit_code = ExitCode.USAGE


class SpecError(UsageError):
    """Raised when a configuration value fails validation; the message names the field."""


class ConflictError(OpskitError):
    """Raised when a write would overwrite a different existing file without --force."""


class CheckFailed(OpskitError):
    """Raised when a check finds drift or a problem (``--check``, ``doctor``); exit code 1."""


class OperationFailed(OpskitError):
    """Raised when an external operation (pip, systemctl, a server) fails; exit code 1."""
