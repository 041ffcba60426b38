"""The one exception hierarchy: the core raises these, the CLI maps them to exit codes."""

from __future__ import annotations

#: Exit codes, stable and documented in docs/cli.md.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class OpskitError(Exception):
    """Base of every error opskit reports to a user; raised by the core, caught by the CLI."""

    exit_code = EXIT_FAILED


class UsageError(OpskitError):
    """Raised when the input (flags, configuration, arguments) is invalid; exit code 2."""

    exit_code = EXIT_USAGE


class SpecError(UsageError):
    """Raised when a configuration value fails validation; the message names the field."""


class ConflictError(OpskitError):
    """Raised when a write would overwrite a different existing file without --force."""


class CheckFailed(OpskitError):
    """Raised when a check finds drift or a problem (``--check``, ``doctor``); exit code 1."""


class OperationFailed(OpskitError):
    """Raised when an external operation (pip, systemctl, a server) fails; exit code 1."""
