"""The core commands: list, validate, schema, risk, plan, diagram. Each parses its arguments,
calls one library function and prints the result; no clinical logic lives here."""

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ._common import (AsOf, Db, PatientRef, PlanFormat, Site, _as_of, _emit, _fit, _paragraph, _patient, _protocol_for,
                      _run, _shown, _site, _width, app)

@app.command("list")
def list_command() -> None:
    """List the shipped protocol definitions with how much of each is verified.

    Example: protocol list
    """
    from .._loading import evidence_counts, list_protocols

    for p in _run(list_protocols):
        c = evidence_counts(p)
        typer.echo(f"{p.id}\t{p.version}\t{p.definition.status}\t{p.definition.title}\t"
                   f"published {c['published']}, derived {c['derived']}, placeholder {c['placeholder']}")


@app.command("validate")
def validate_command(
    file: Annotated[str, typer.Argument(help="A definition file (YAML/JSON) or a shipped protocol id.")],
    json_output: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    site: Site = None,
) -> None:
    """Check a protocol definition and list its placeholder (unverified) values.

    With --site, apply a site amendment first: list the values the site verified and what
    remains placeholder.

    Checks the schema, references between elements, days inside element lengths, that
    every source key resolves, that every element is reachable and that only final
    elements are dead ends. Exit code 2 and one line per problem when it fails.

    Example: protocol validate protocol/definitions/interfant06-blinatumomab.yaml
    """
    from .._loading import validation_report

    report = _run(validation_report, file, _site(site))
    if json_output:
        from .._loading import dumps

        sys.stdout.write(dumps(report))
        return
    c = report["evidence"]
    typer.echo(f"ok: {report['id']} {report['version']} ({report['status']}): {report['elements']} elements, "
               f"{report['transitions']} transitions")
    typer.echo(f"values: {c['published']} published, {c['derived']} derived, "
               + (f"{c['site']} site-verified, " if c["site"] else "") + f"{c['placeholder']} placeholder")
    if report["site"] is not None:
        s = report["site"]
        typer.echo(f"site amendment {s['file']} ({s['site']}): {len(s['values'])} values verified")
        for row in s["values"]:
            typer.echo(f"  {row['field']}  [{row['label']}] = {row['value']}  — verified by {row['verified_by']} on "
                       f"{row['verified_on']}, {row['section']}")
    typer.echo(f"placeholders ({len(report['placeholders'])}), shown as unverified in every document:")
    for row in report["placeholders"]:
        value = "not specified" if row["value"] is None else row["value"]
        typer.echo(f"  {row['field']}  [{row['label']}] = {value}" + (f"  — {row['note']}" if row["note"] else ""))


@app.command("schema")
def schema_command(
    patient: Annotated[bool, typer.Option("--patient", help="The patient file schema instead.")] = False,
) -> None:
    """Print the JSON Schema of the protocol definition format (or of patient files).

    Example: protocol schema > protocol.schema.json
    """
    from .._loading import definition_schema, dumps, patient_schema

    sys.stdout.write(dumps(_run(patient_schema if patient else definition_schema)))


@app.command("risk")
def risk_command(
    patient: PatientRef,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    as_of: AsOf = None,
    db: Db = None,
    site: Site = None,
) -> None:
    """Show the patient's risk group and which rule matched, and why.

    Example: protocol risk examples/patients/hr-to-hsct.yaml
    """
    from .._loading import dumps
    from ..schedule import risk as risk_of

    who = _run(_patient, patient, db)
    result = _run(risk_of, who, _run(_protocol_for, who, site), as_of=_run(_as_of, as_of))
    if json_output:
        sys.stdout.write(dumps(result.to_dict()))
        return
    head = result.group or result.status
    typer.echo(f"risk group: {head}" + (f" ({result.label})" if result.label else "")
               + (" ⚠ UNVERIFIED" if result.unverified else ""))
    for why in result.unverified_reasons:
        typer.echo(f"  UNVERIFIED: {why}")
    if result.status == "pending":
        typer.echo(f"  still possible: {', '.join(result.candidates)}; waiting for: {', '.join(result.waiting_for)}")
    for line in result.reasons:
        typer.echo(f"  {line}")


#: The plan table's columns; the ones a narrow terminal hides go first in ``_HIDE``.
_PLAN_COLUMNS = ["date", "element", "day", "study day", "item", "route", "dose", "status", "evidence", "branch",
                 "ref", "note"]
_HIDE = ("note", "ref", "study day", "branch", "route", "day")
#: Prose wraps first; ids (an element, a status) only when nothing else is left to narrow.
_WRAP = ({"item", "note", "branch"}, {"dose"}, {"element", "status"})
_LEGEND = ("UNVERIFIED = placeholder value not confirmed from a public source; check against the official "
           "protocol document.")


@app.command("plan")
def plan_command(
    patient: PatientRef,
    format: Annotated[PlanFormat, typer.Option("--format", "-f", help="Output format.")] = PlanFormat.table,
    as_of: AsOf = None,
    element: Annotated[list[str] | None, typer.Option(
        "--element", "-e", help="Only this element (course); repeat for several.", metavar="ELEMENT",
        show_default=False)] = None,
    start: Annotated[str | None, typer.Option("--from", help="Only items dated on or after this day.",
                                              metavar="DATE", show_default=False)] = None,
    end: Annotated[str | None, typer.Option("--to", help="Only items dated on or before this day.",
                                            metavar="DATE", show_default=False)] = None,
    status: Annotated[list[str] | None, typer.Option(
        "--status", "-s", help="Only items with this status (planned, overdue, unrecorded, given, omitted, done, "
        "held, pending_decision); repeat for several.", metavar="STATUS", show_default=False)] = None,
    wide: Annotated[bool, typer.Option("--wide", "-w", help="Every column at full width (ref and note "
                                       "included), whatever the terminal's width.")] = False,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")] = None,
    db: Db = None,
    site: Site = None,
) -> None:
    """Print the patient's dated plan: every administration and assessment with its dose.

    The table fits the terminal ($COLUMNS, else its width): long text wraps between words, and
    the columns it cannot hold (note, ref, study day, ...) are hidden and named under the
    table; --wide shows them all. Output to a pipe or a file is never narrowed.

    Example: protocol plan examples/patients/mr-on-time.yaml --element maintenance --from 2026-12-01 --to 2026-12-31
    """
    from .._io import parse_date
    from .._refs import only, select
    from ..schedule import plan

    who = _run(_patient, patient, db)
    result = _run(plan, who, _run(_protocol_for, who, site), as_of=_run(_as_of, as_of))
    first = None if start is None else _run(parse_date, start, "--from")
    last = None if end is None else _run(parse_date, end, "--to")
    filtered = bool(element or status or first or last)
    items = _run(select, result, elements=element or (), start=first, end=last, statuses=status or ()) \
        if filtered else result.items
    if format is PlanFormat.json:
        _run(_emit, (only(result, items) if filtered else result).to_json(), output)
    elif format is PlanFormat.csv:
        _run(_emit, _shown((only(result, items) if filtered else result).to_csv(), keep="\n"), output)
    else:
        width = None if wide or output is not None else _width()
        _run(_emit, _plan_text(result, items, width, filtered), output)


def _plan_text(result: Any, items: list[Any], width: int | None, filtered: bool) -> str:
    """The plan as plain fixed-width text: the header lines, the table, the legend."""
    from .._dose import fmt_amount

    risk = result.risk
    head = [f"{result.patient.id} · {result.protocol.id} {result.protocol.version} · as of {result.as_of} · "
            f"risk {risk.group or risk.status}{' ⚠ UNVERIFIED' if risk.unverified else ''} · end of therapy "
            f"{result.end_of_therapy.isoformat() if result.end_of_therapy else '—'}"]
    if risk.unverified:
        head.append(f"risk group UNVERIFIED: {'; '.join(risk.unverified_reasons)}")
    provenance = getattr(result.protocol, "provenance", None)
    if provenance:
        head.append(str(provenance))
    for d in result.decisions:
        mark = f" ⚠ UNVERIFIED ({'; '.join(d.unverified_reasons)})" if d.unverified else ""
        if d.status == "pending":
            head.append(f"PENDING decision {d.id} (after {d.at}, {d.date}): waits for {', '.join(d.waiting_for)}; "
                        + "; ".join(f"→ {b['to']} " + ("otherwise" if b["when"] == "otherwise" else f"if {b['when']}")
                                   for b in d.branches) + mark)
        elif d.unverified:
            head.append(f"decision {d.id} ({d.status}: {d.outcome}){mark}")
    cumulative = result.cumulative_anthracycline()
    if cumulative is not None:
        eq = cumulative["doxorubicin_equivalent"]
        parts = [f"{d['drug']} planned {fmt_amount(d['planned_mg_m2'])}, given {fmt_amount(d['given_mg_m2'])}"
                 for d in cumulative["drugs"]]
        equivalent = (f"doxorubicin equivalent planned {fmt_amount(eq['planned'])}, given {fmt_amount(eq['given'])}"
                      if eq["computable"] else "doxorubicin equivalent not computable (a factor is not known)")
        head.append(f"cumulative anthracycline (mg/m²): {'; '.join(parts)}; {equivalent}"
                    + (" ⚠ UNVERIFIED" if cumulative["unverified"] else ""))
    head.extend(f"warning: {w}" for w in result.warnings)
    head.extend(f"deviation {d['date']} {d['kind']}: {d['message']}" + (f" [{d['item']}]" if d["item"] else "")
                for d in result.deviations)
    rows = [[i.date.isoformat(), i.slot.element, str(i.element_day), str(i.study_day), i.slot.name,
             i.slot.route or "", "" if i.dose is None else i.dose.text, i.status,
             "UNVERIFIED" if i.unverified else i.evidence, i.branch or "", i.ref,
             _shown(i.note or "")] for i in items]
    text = "".join(_paragraph(_shown(line), width) for line in head)
    if filtered:
        text += f"{len(items)} of {len(result.items)} items shown (filtered)\n"
    if rows:
        table, shown = _fit(_PLAN_COLUMNS, rows, width, keep={"date", "item", "status", "evidence"}, drop=_HIDE,
                            wrap=_WRAP)
        text += table
        hidden = [c for c in _HIDE if c not in shown and any(r[_PLAN_COLUMNS.index(c)] for r in rows)]
        if hidden:
            text += _paragraph(f"(hidden at this width: {', '.join(hidden)}; see --wide)", width)
    else:
        text += "no items\n"
    return text + _paragraph(_LEGEND, width)


@app.command("diagram")
def diagram_command(
    protocol: Annotated[str, typer.Argument(help="A shipped protocol id or a definition file.")],
) -> None:
    """Print the protocol as a Mermaid state diagram, with the guards on its edges.

    Example: protocol diagram interfant06-blinatumomab
    """
    from .._loading import load_protocol

    sys.stdout.write(_run(load_protocol, protocol).mermaid())
