"""The ``protocol`` command line. Each command parses its arguments, calls one library
function and prints the result; no clinical logic lives here.

Exit codes: 0 success, 2 bad input (message on stderr, no traceback), 1 internal error.
Library modules are imported inside the commands so that ``protocol --help`` stays fast.
"""

from __future__ import annotations

import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

app = typer.Typer(
    name="protocol",
    help="Treatment protocols as data: validate a definition, stratify a patient, plan the dated "
    "schedule and print the roadmap.\n\nExample: protocol roadmap examples/patients/mr-on-time.yaml -o roadmap.html",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class PlanFormat(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


class RoadmapFormat(str, Enum):
    html = "html"
    md = "md"


AsOf = Annotated[str | None, typer.Option("--as-of", help="Only count events and results up to this date "
                                          "(YYYY-MM-DD or 'today'; default today).", metavar="DATE")]


def _fail(exc: BaseException) -> NoReturn:
    from ._errors import InputError

    if isinstance(exc, InputError):
        for problem in exc.problems:
            typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(2)
    if os.environ.get("PROTOCOL_DEBUG"):
        raise exc
    typer.echo(f"internal error: {type(exc).__name__}: {exc}\n(set PROTOCOL_DEBUG=1 for a traceback; "
               "please report it)", err=True)
    raise typer.Exit(1)


def _run(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except typer.Exit:
        raise
    except Exception as exc:  # noqa: BLE001 - the CLI boundary turns every error into an exit code
        _fail(exc)


def _as_of(text: str | None) -> Any:
    from ._io import parse_date

    return None if text is None else parse_date(text, "--as-of")


def _emit(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text)
        return
    from ._io import write_atomic

    write_atomic(output, lambda fh: fh.write(text))
    typer.echo(f"wrote {output}", err=True)


@app.command("list")
def list_command() -> None:
    """List the shipped protocol definitions with how much of each is verified.

    Example: protocol list
    """
    from ._loading import evidence_counts, list_protocols

    for p in _run(list_protocols):
        c = evidence_counts(p)
        typer.echo(f"{p.id}\t{p.version}\t{p.definition.status}\t{p.definition.title}\t"
                   f"published {c['published']}, derived {c['derived']}, placeholder {c['placeholder']}")


@app.command("validate")
def validate_command(
    file: Annotated[str, typer.Argument(help="A definition file (YAML/JSON) or a shipped protocol id.")],
    json_output: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Check a protocol definition and list its placeholder (unverified) values.

    Checks the schema, references between elements, days inside element lengths, that
    every source key resolves, that every element is reachable and that only final
    elements are dead ends. Exit code 2 and one line per problem when it fails.

    Example: protocol validate protocol/definitions/interfant06-blinatumomab.yaml
    """
    from ._loading import validation_report

    report = _run(validation_report, file)
    if json_output:
        from ._loading import dumps

        sys.stdout.write(dumps(report))
        return
    c = report["evidence"]
    typer.echo(f"ok: {report['id']} {report['version']} ({report['status']}): {report['elements']} elements, "
               f"{report['transitions']} transitions")
    typer.echo(f"values: {c['published']} published, {c['derived']} derived, {c['placeholder']} placeholder")
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
    from ._loading import definition_schema, dumps, patient_schema

    sys.stdout.write(dumps(_run(patient_schema if patient else definition_schema)))


@app.command("risk")
def risk_command(
    patient: Annotated[str, typer.Argument(help="A patient file (YAML/JSON).")],
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    as_of: AsOf = None,
) -> None:
    """Show the patient's risk group and which rule matched, and why.

    Example: protocol risk examples/patients/hr-to-hsct.yaml
    """
    from ._loading import dumps
    from ._schedule import risk as risk_of

    result = _run(risk_of, patient, as_of=_run(_as_of, as_of))
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
    patient: Annotated[str, typer.Argument(help="A patient file (YAML/JSON).")],
    format: Annotated[PlanFormat, typer.Option("--format", "-f", help="Output format.")] = PlanFormat.table,
    as_of: AsOf = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")] = None,
) -> None:
    """Print the patient's dated plan: every administration and assessment with its dose.

    Example: protocol plan examples/patients/mr-pending-mrd.yaml --format json --as-of 2026-11-21
    """
    from ._schedule import plan

    result = _run(plan, patient, as_of=_run(_as_of, as_of))
    if format is PlanFormat.json:
        _run(_emit, result.to_json(), output)
    elif format is PlanFormat.csv:
        _run(_emit, result.to_csv(), output)
    else:
        from ._documents import plan_table

        _run(_emit, plan_table(result), output)


@app.command("roadmap")
def roadmap_command(
    patient: Annotated[str, typer.Argument(help="A patient file (YAML/JSON).")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")] = None,
    format: Annotated[RoadmapFormat | None, typer.Option(
        "--format", "-f", help="html or md (default: from the -o file name, else html).")] = None,
    as_of: AsOf = None,
    templates: Annotated[Path | None, typer.Option("--templates", help="A folder of templates overriding the "
                                                   "built-in ones.")] = None,
) -> None:
    """Render the printable roadmap (HTML or Markdown) for a patient.

    Every placeholder value is marked unverified, with a legend and a list at the end.

    Example: protocol roadmap examples/patients/mr-on-time.yaml -o roadmap.html
    """
    from ._documents import render_roadmap
    from ._schedule import plan

    fmt = format.value if format else ("md" if output is not None and output.suffix.lower() == ".md" else "html")
    result = _run(plan, patient, as_of=_run(_as_of, as_of))
    _run(_emit, _run(render_roadmap, result, fmt, templates), output)


@app.command("diagram")
def diagram_command(
    protocol: Annotated[str, typer.Argument(help="A shipped protocol id or a definition file.")],
) -> None:
    """Print the protocol as a Mermaid state diagram, with the guards on its edges.

    Example: protocol diagram interfant06-blinatumomab
    """
    from ._loading import load_protocol

    sys.stdout.write(_run(load_protocol, protocol).mermaid())


def main() -> None:
    """Console entry point."""
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover
        typer.echo("interrupted", err=True)
        sys.exit(130)
