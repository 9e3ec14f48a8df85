"""The ``protocol`` command line. Each command parses its arguments, calls one library
function and prints the result; no clinical logic lives here.

Exit codes: 0 success, 2 bad input (message on stderr, no traceback), 1 internal error.
Library modules are imported inside the commands so that ``protocol --help`` stays fast.
Commands are grouped one module per area; importing them registers them on ``app``.
"""

from __future__ import annotations

import sys

import typer

from . import core, definitions, documents, registry, simulation  # noqa: F401 - registers the commands
from ._common import app

__all__ = ["app", "main"]


def main() -> None:
    """Console entry point."""
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover
        typer.echo("interrupted", err=True)
        sys.exit(130)
