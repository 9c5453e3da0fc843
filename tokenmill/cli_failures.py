"""How the command line ends on a failure: one `error: …` line (a spec error: one line per problem), exit status 1,
and with `tokenmill --debug` the traceback first. Shared by every command (cli.py, cli_models.py)."""

from __future__ import annotations

import traceback

from rich.console import Console
from rich.markup import escape

from tokenmill.engine.cluster import ClusterError
from tokenmill.engine.config_file import SpecError
from tokenmill.engine.fsio import InputNotFound
from tokenmill.engine.output_dir import OutputError

console = Console(stderr=True)
# Failures a user can fix from the message alone: no "internal error" wording for them.
EXPECTED = (SpecError, InputNotFound, ClusterError, OutputError, ImportError, OSError)
_DEBUG_HINT = " (run `tokenmill --debug ...` for the traceback)"
_state = {"debug": False}


def set_debug(debug: bool) -> None:
    _state["debug"] = debug


def debugging() -> bool:
    return _state["debug"]


def fail(exc: BaseException, expected: bool | None = None) -> None:
    """End the command: exit status 1 and the failure as one line (a SpecError: one line per problem); with
    `--debug`, the traceback first. Unexpected exceptions (bugs) say so and name their type."""
    if _state["debug"]:
        console.print("".join(traceback.format_exception(exc)), markup=False, highlight=False, soft_wrap=True)
    if expected is None:
        expected = isinstance(exc, EXPECTED)
    error(describe_failure(exc) if expected else f"internal error: {type(exc).__name__}: {exc}{_DEBUG_HINT}")
    raise SystemExit(1)


def describe_failure(exc: BaseException) -> str:
    """A failure the user can act on, in their terms: an OSError names its file, an ImportError its module."""
    if isinstance(exc, OSError) and not isinstance(exc, InputNotFound) and exc.strerror:
        where = f" {exc.filename}" if exc.filename else ""
        return f"{type(exc).__name__}:{where}: {exc.strerror}"
    return str(exc)


def error(message: str) -> None:
    console.print(f"[bold red]error:[/bold red] {escape(message)}", highlight=False, soft_wrap=True)
