"""The ``protocol`` command line. Each command parses its arguments, calls one library
function and prints the result; no clinical logic lives here.

Exit codes: 0 success, 2 bad input (message on stderr, no traceback), 1 internal error,
141 (quietly) when the reader of the output went away (``protocol plan X | head -1``).
Library modules are imported inside the commands so that ``protocol --help`` stays fast.
Commands are grouped one module per area; importing them registers them on ``app``.
"""

# No `from __future__ import annotations` in the command modules: typer resolves every
# parameter's annotation of every command at each start, and string annotations cost it an
# eval each (about 25 ms of every command, measured on `protocol worklist`).
import os
import sys

import typer

from . import amend, core, db, definitions, documents, registry, simulation, web  # noqa: F401 - registers the commands
from ._common import app

__all__ = ["app", "main"]


#: The exit code when the output pipe was closed by its reader: 128 + SIGPIPE, what a shell
#: shows for ``cat`` in ``cat big | head -1``. Nothing is printed.
BROKEN_PIPE = 141


def main(argv: list[str] | None = None) -> None:
    """Console entry point: ``protocol ARGS``; ``argv`` (without the program name) for tests.

    Example: ``main(["validate", "interfant06-blinatumomab"])`` exits 0.
    """
    code: int | str | None = 0
    try:
        app(args=argv, prog_name="protocol")
    except SystemExit as exc:
        code = exc.code
    except KeyboardInterrupt:  # pragma: no cover
        typer.echo("interrupted", err=True)
        code = 130
    except BrokenPipeError:
        code = BROKEN_PIPE
    except Exception as exc:  # noqa: BLE001 - what a command let through: still exit 2 or 1, no traceback
        from ._common import _fail

        try:
            _fail(exc)
        except typer.Exit as done:
            code = done.exit_code
    # click answers a broken pipe itself (exit 1, stdout replaced by a wrapper that ignores
    # the final flush); tell it apart from an internal error.
    if type(sys.stdout).__name__ == "PacifyFlushWrapper":
        code = BROKEN_PIPE
    try:
        sys.stdout.flush()  # what is still buffered goes now, not in the interpreter's exit
    except BrokenPipeError:
        code = BROKEN_PIPE
    if code == BROKEN_PIPE:
        # Point stdout at /dev/null so the interpreter's own last flush stays silent.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.__stdout__.fileno() if sys.__stdout__ else 1)
        except (OSError, ValueError):  # pragma: no cover - stdout already gone
            pass
    sys.exit(code)
