"""Document commands: the printable roadmap (HTML, Markdown, PDF), the calendar (ICS) and FHIR."""

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from ._common import app, AsOf, Db, PatientRef, Site, _as_of, _emit, _patient, _protocol_for, _run, _site


class RoadmapFormat(str, Enum):
    html = "html"
    md = "md"
    pdf = "pdf"


class PdfEngine(str, Enum):
    typst = "typst"
    weasyprint = "weasyprint"


def _bad(field: str, message: str) -> None:
    from .._errors import InputError, Problem

    raise InputError(Problem("", field, message))


def _check_folder(output: Path) -> None:
    """Fail before minutes of rendering, with the message the write itself would give."""
    folder = output.parent if str(output.parent) else Path(".")
    if not folder.is_dir():
        _bad("--output", f"{output}: cannot write: the folder {str(folder)!r} does not exist")


def _write_bytes(data: bytes, output: Path) -> None:
    from .._io import write_atomic

    write_atomic(output, lambda fh: fh.write(data), binary=True)
    typer.echo(f"wrote {output}", err=True)


@app.command("roadmap")
def roadmap_command(
    patient: PatientRef,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout "
                                                "(required for pdf).")] = None,
    format: Annotated[RoadmapFormat | None, typer.Option(
        "--format", "-f", help="html, md or pdf (default: from the -o file name, else html).")] = None,
    as_of: AsOf = None,
    templates: Annotated[Path | None, typer.Option("--templates", help="A folder of templates overriding the "
                                                   "built-in ones.")] = None,
    engine: Annotated[PdfEngine, typer.Option("--engine", help="PDF engine: typst (fast, built in) or weasyprint "
                                              "(the HTML through WeasyPrint; needs the weasyprint package).")]
    = PdfEngine.typst,
    db: Db = None,
    site: Site = None,
) -> None:
    """Render the printable roadmap (HTML, Markdown or PDF) for a patient.

    A cover page (risk group, pathway, timeline) and one page per element in the layout of a
    Therapy Delivery Map. Every placeholder value is marked unverified, with a legend and a
    list at the end; every printed page says "check against the official protocol document".
    For a registry patient each dose-critical entry shows its sign-off beside the value and on
    the cover: "awaiting verification (recorded by ...)" or "dose verified by ...".

    Example: protocol roadmap examples/patients/mr-on-time.yaml --format pdf -o roadmap.pdf
    """
    from .._documents import render_pdf, render_roadmap
    from ..schedule import plan

    suffix = output.suffix.lower().lstrip(".") if output is not None else ""
    fmt = format.value if format else (suffix if suffix in ("md", "pdf") else "html")
    if fmt == "pdf" and output is None:
        _run(_bad, "--output", "expected -o FILE.pdf for --format pdf (a PDF is not written to the terminal), "
             "got no -o")
    if fmt == "pdf" and output is not None:
        _run(_check_folder, output)
    who = _run(_patient, patient, db)
    result = _run(plan, who, _run(_protocol_for, who, site), as_of=_run(_as_of, as_of))
    signoffs = _run(_signoffs, who, db)
    if fmt == "pdf":
        assert output is not None
        _run(_write_bytes, _run(render_pdf, result, templates, None, engine.value, signoffs), output)
        return
    _run(_emit, _run(render_roadmap, result, fmt, templates, None, signoffs), output)


def _signoffs(who: object, db: str | None) -> tuple[object, ...]:
    """A registry patient's dose-critical entries and their sign-off (none for a patient file)."""
    if isinstance(who, str):
        return ()
    from .._registry import open_registry
    from .._signoff import marks

    with open_registry(db) as reg:
        return marks(reg, who.id)  # type: ignore[attr-defined]


@app.command("calendar")
def calendar_command(
    patient: PatientRef,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this .ics file instead of "
                                                "stdout.")] = None,
    remind_days: Annotated[int | None, typer.Option(
        "--remind-days", min=0, max=365, metavar="N",
        help="Add a reminder at 09:00, N days before each event (0 = on the day).")] = None,
    previous: Annotated[Path | None, typer.Option(
        "--previous", metavar="OLD.ics", help="An earlier export of this patient's calendar: changed events get a "
        "higher SEQUENCE, events no longer planned are sent as cancelled (not needed for a registry patient: "
        "its SEQUENCE comes from the registry's history).")] = None,
    as_of: AsOf = None,
    db: Db = None,
    site: Site = None,
) -> None:
    """Export the patient's plan as an iCalendar (.ics) file to import or subscribe to.

    All-day events per treatment day, long daily runs, assessments, elements and decisions.
    UIDs do not depend on dates: re-importing after a delay moves the events (SEQUENCE goes
    up) instead of duplicating them. For a registry patient SEQUENCE is the number of recorded
    changes that moved or changed each event, so every export updates in place by itself.
    Placeholder doses are marked UNVERIFIED in titles, alarms and descriptions.

    Example: protocol calendar examples/patients/hr-to-hsct.yaml -o INF-0002.ics --remind-days 1
    """
    from .._calendar import calendar_for, to_ics
    from ..schedule import plan

    who = _run(_patient, patient, db)
    protocol = _run(_protocol_for, who, site)
    day = _run(_as_of, as_of)
    if isinstance(who, str):  # a patient file: no history, SEQUENCE from the plan (and --previous)
        data = _run(to_ics, _run(plan, who, protocol, as_of=day), remind_days, previous)
    else:
        data = _run(calendar_for, db, who.id, protocol=protocol, as_of=day, remind_days=remind_days,
                    previous=previous)
    if output is None:
        typer.echo(data.decode("utf-8"), nl=False)
        return
    _run(_write_bytes, data, output)


@app.command("fhir")
def fhir_command(
    patient: Annotated[str | None, typer.Argument(
        help="A patient file (YAML/JSON) or registry id: export the plan as a CarePlan bundle.",
        metavar="[PATIENT]", show_default=False)] = None,
    protocol_ref: Annotated[str | None, typer.Option(
        "--protocol", metavar="ID", help="Export a protocol (shipped id or definition file) as a PlanDefinition "
        "instead.")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file instead of "
                                                "stdout.")] = None,
    as_of: AsOf = None,
    db: Db = None,
    site: Site = None,
) -> None:
    """Export FHIR R5 JSON: a patient's plan (Bundle of Patient, CarePlan, RequestOrchestration
    and PlanDefinition) or, with --protocol, the protocol as a PlanDefinition.

    Every resource is validated by fhir.resources (once); placeholder values carry an evidence
    extension and say UNVERIFIED, items that depend on them carry an unverified flag, and a
    plan with unverified values is a draft CarePlan.

    Example: protocol fhir --protocol interfant06-blinatumomab -o plandefinition.json
    """
    from .._fhir import care_plan_json, plan_definition_json

    if (patient is None) == (protocol_ref is None):
        _run(_bad, "PATIENT", "expected a patient or --protocol ID (exactly one), got "
             + ("both" if patient is not None else "neither"))
    if protocol_ref is not None:
        from .._loading import load_protocol

        text = _run(plan_definition_json, _run(load_protocol, protocol_ref, _site(site)))
    else:
        from ..schedule import plan

        who = _run(_patient, patient, db)
        result = _run(plan, who, _run(_protocol_for, who, site), as_of=_run(_as_of, as_of))
        text = _run(care_plan_json, result)
    _run(_emit, text, output)
