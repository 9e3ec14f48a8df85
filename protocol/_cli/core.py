"""The core commands: list, validate, schema, risk, plan, diagram. Each parses its arguments,
calls one library function and prints the result; no clinical logic lives here."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ._common import AsOf, Db, PatientRef, PlanFormat, Site, _as_of, _emit, _patient, _protocol_for, _run, _site, app

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
    from .._schedule import risk as risk_of

    who = _run(_patient, patient, db)
    result = _run(risk_of, who, _run(_protocol_for, who, site), as_of=_run(_as_of, as_of))
    if json_output:
        sys.stdout.write(dumps(result.to_dict()))
        return
    head = result.group or result.status
    typer.echo(f"risk group: {head}" + (f" ({result.label})" if result.label else ""))
    if result.status == "pending":
        typer.echo(f"  still possible: {', '.join(result.candidates)}; waiting for: {', '.join(result.waiting_for)}")
    for line in result.reasons:
        typer.echo(f"  {line}")


@app.command("plan")
def plan_command(
    patient: PatientRef,
    format: Annotated[PlanFormat, typer.Option("--format", "-f", help="Output format.")] = PlanFormat.table,
    as_of: AsOf = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")] = None,
    db: Db = None,
    site: Site = None,
) -> None:
    """Print the patient's dated plan: every administration and assessment with its dose.

    Example: protocol plan examples/patients/mr-pending-mrd.yaml --format json --as-of 2026-11-21
    """
    from .._schedule import plan

    who = _run(_patient, patient, db)
    result = _run(plan, who, _run(_protocol_for, who, site), as_of=_run(_as_of, as_of))
    if format is PlanFormat.json:
        _run(_emit, result.to_json(), output)
    elif format is PlanFormat.csv:
        _run(_emit, result.to_csv(), output)
    else:
        from .._documents import plan_table

        _run(_emit, plan_table(result), output)


@app.command("diagram")
def diagram_command(
    protocol: Annotated[str, typer.Argument(help="A shipped protocol id or a definition file.")],
) -> None:
    """Print the protocol as a Mermaid state diagram, with the guards on its edges.

    Example: protocol diagram interfant06-blinatumomab
    """
    from .._loading import load_protocol

    sys.stdout.write(_run(load_protocol, protocol).mermaid())
