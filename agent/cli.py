"""The ``retest`` console script: one typer app; each command group lives in ``agent.commands``.

Errors derived from :class:`core.errors.RetestError` become one line on stderr and the
contract's exit code (2 bad input, 3 degraded, 4 locked, 5 disk full or read-only); nothing
reaches the user as a traceback unless ``RETEST_DEBUG=1``.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

# No code may fetch weights or data from a hub at run time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")  # chromadb's telemetry

import typer  # noqa: E402

from core.errors import EXIT_FAILURE, RetestError  # noqa: E402
from core.fsutil import as_write_error  # noqa: E402

app = typer.Typer(
    name="retest",
    help="Re-test dated claims from the ML literature against newer arXiv work and local evals.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Each module defines register(app). A command is listed here only once it works.
COMMAND_MODULES = [
    "agent.commands.server",
    "agent.commands.papers",
    "agent.commands.ask",
    "agent.commands.report",
    "agent.commands.evaluate",
    "agent.commands.dedup",
    "agent.commands.schedule",
    "agent.commands.finetune",
    "agent.commands.judge_eval",
]


def _register_commands() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the process exit code."""
    logging.basicConfig(
        level=os.environ.get("RETEST_LOG_LEVEL", "WARNING").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    _register_commands()
    try:
        # Without standalone mode click returns a command's typer.Exit code instead of raising.
        code = app(args=argv, standalone_mode=False)
        if isinstance(code, int):
            return code
    except RetestError as exc:
        print(f"retest: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except (typer.Abort, KeyboardInterrupt):
        print("retest: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the last line of defence: one line, not a traceback
        if os.environ.get("RETEST_DEBUG"):
            raise
        if _is_click_usage_error(exc):
            exc.show()  # type: ignore[attr-defined]
            return 2
        storage = as_write_error(exc)  # a full or read-only disk no command mapped itself
        if storage is not None:
            print(f"retest: error: {storage}", file=sys.stderr)
            return storage.exit_code
        print(f"retest: internal error: {type(exc).__name__}: {exc} (RETEST_DEBUG=1 for details)",
              file=sys.stderr)
        return EXIT_FAILURE
    return 0


def _is_click_usage_error(exc: Exception) -> bool:
    """Tell a usage error (bad option value, unknown option) from a crash.

    Typer 0.29 raises its own vendored copy of click's exceptions (``typer._click``) for range
    and type checks, which is not ``click.ClickException``; both are matched by class name.
    """
    return any(cls.__name__ == "ClickException" for cls in type(exc).__mro__) and hasattr(
        exc, "show")


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
