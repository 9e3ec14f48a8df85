"""Document commands: the printable roadmap (and, with issue 4, calendars and FHIR)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from ._common import AsOf, Db, PatientRef, _as_of, _emit, _patient, _run, app


class RoadmapFormat(str, Enum):
    html = "html"
    md = "md"


@app.command("roadmap")
def roadmap_command(
    patient: PatientRef,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")] = None,
    format: Annotated[RoadmapFormat | None, typer.Option(
        "--format", "-f", help="html or md (default: from the -o file name, else html).")] = None,
    as_of: AsOf = None,
    templates: Annotated[Path | None, typer.Option("--templates", help="A folder of templates overriding the "
                                                   "built-in ones.")] = None,
    db: Db = None,
) -> None:
    """Render the printable roadmap (HTML or Markdown) for a patient.

    Every placeholder value is marked unverified, with a legend and a list at the end.

    Example: protocol roadmap examples/patients/mr-on-time.yaml -o roadmap.html
    """
    from .._documents import render_roadmap
    from .._schedule import plan

    fmt = format.value if format else ("md" if output is not None and output.suffix.lower() == ".md" else "html")
    result = _run(plan, _run(_patient, patient, db), as_of=_run(_as_of, as_of))
    _run(_emit, _run(render_roadmap, result, fmt, templates), output)
