"""Commands about protocol definitions themselves: diff. Each parses its arguments, calls one
library function and prints the result; no clinical logic lives here."""

import sys
from typing import Annotated

import typer

from ._common import _run, app


@app.command("diff")
def diff_command(
    a: Annotated[str, typer.Argument(help="The old definition: a shipped protocol id (id or id@version) or a "
                                     "definition file (YAML/JSON).", metavar="A")],
    b: Annotated[str, typer.Argument(help="The new definition, given the same way.", metavar="B")],
    json_output: Annotated[bool, typer.Option("--json", help="Print the changes as JSON.")] = False,
    exit_code: Annotated[bool, typer.Option("--exit-code", help="Exit with 1 when the definitions differ, "
                                            "0 when they do not.")] = False,
) -> None:
    """Show what changed between two protocol definitions, e.g. to review an amendment.

    Elements added, removed or reordered; administrations and assessments; doses, days and
    lengths; guards and thresholds (each guard also in words, before and after); evidence
    levels, sources and notes; risk groups, eligibility, randomisations; version and status.
    Lines start with + (added), - (removed) or ~ (changed), then the category (dose, days,
    guard, structure, evidence, source, metadata); clinical changes come first in each section.
    Exit code 0 whether or not they differ (1 with --exit-code when they do), 2 for bad input.

    Example: protocol diff interfant06-blinatumomab site-amendment.yaml --json
    """
    from .._diff import diff_protocols

    result = _run(diff_protocols, a, b)
    sys.stdout.write(result.to_json() if json_output else result.to_text())
    if exit_code and not result.identical:
        raise typer.Exit(1)
