"""Exit codes of the command-line contract and the errors that map onto them.

The CLI turns these into one line on stderr and the matching exit code; nothing else in the
project calls ``sys.exit``.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_DEGRADED = 3
EXIT_LOCKED = 4
EXIT_STORAGE = 5  # a file could not be written: disk full, read-only, no permission


class RetestError(Exception):
    """Base class of errors the CLI reports as one line."""

    exit_code = EXIT_FAILURE


class BadInputError(RetestError):
    """The user's input (file, flag, config, id) is unusable; exit 2."""

    exit_code = EXIT_BAD_INPUT


class LockedError(RetestError):
    """Another run holds the data directory's lock; exit 4."""

    exit_code = EXIT_LOCKED


class ServiceError(RetestError):
    """A required service (LLM server, arXiv) failed beyond its retries; exit 1."""

    exit_code = EXIT_FAILURE
