"""``protocol amend``: preview and apply a protocol amendment for the registered patients."""

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from ._common import AsOf, Db, Site, _as_of, _emit, _run, _site, app

amend_app = typer.Typer(
    help="Amendments for living patients: whose schedule changes, and how (preview), then move them to the "
    "new version (apply, audited; undone by retract).\n\nExample: protocol amend preview amendment.yaml --db protocol.db",
    no_args_is_help=True,
)
app.add_typer(amend_app, name="amend")

NewFile = Annotated[Path, typer.Argument(help="The amended definition (YAML/JSON), with a greater version.",
                                         metavar="NEW.yaml")]
Patients = Annotated[list[str] | None, typer.Option(
    "--patients", help="Only these patients (repeat, or separate with commas). Default: every patient on the "
    "protocol.", metavar="ID")]
By = Annotated[str | None, typer.Option("--by", help="Who applies it (default: $USER).", metavar="NAME")]
Out = Annotated[Path | None, typer.Option("-o", "--out", help="Write to this file instead of stdout.",
                                          metavar="FILE")]


class Format(str, Enum):
    text = "text"
    json = "json"
    csv = "csv"


def _ids(patients: list[str] | None) -> list[str] | None:
    if not patients:
        return None
    return [p.strip() for part in patients for p in part.split(",") if p.strip()]


@amend_app.command("preview")
def amend_preview(
    new: NewFile,
    db: Db = None,
    site: Site = None,
    patients: Patients = None,
    as_of: AsOf = None,
    fmt: Annotated[Format, typer.Option("--format", help="text, json or csv (one row per change).")] = Format.text,
    output: Out = None,
    from_site: Annotated[Path | None, typer.Option(
        "--from-site", help="Compare with this site amendment instead of the one each patient is planned with in the "
        "registry ('none': none).", metavar="FILE")] = None,
) -> None:
    """Re-plan every registered patient on the amended protocol under the new version and
    report what changes from the as-of day on: doses (old → new, with evidence), dates moved,
    items added or removed, decisions whose outcome changes, and patients with no change.
    Items already recorded never change. Writes nothing. Each patient is compared as the
    registry plans it now (its version and site amendment); the new version carries that
    site amendment over unless --site names another ('none': none).

    Example: protocol amend preview tests/data/amendments/hsct-threshold.yaml --db protocol.db

    Verified values changed: protocol amend preview interfant06-blinatumomab --site new-site.yaml
    """
    from .._amend import preview
    from .._loading import dumps
    from .._registry import open_registry

    def run() -> Any:
        with open_registry(db) as reg:
            chosen = _site(site)
            chosen = "" if chosen is not None and str(chosen) == "none" else chosen
            return preview(reg, new, site=chosen, as_of=_as_of(as_of), patients=_ids(patients),
                           from_site=None if from_site is None else "" if str(from_site) == "none" else from_site)

    result = _run(run)
    text = (dumps(result.to_dict()) if fmt is Format.json else result.to_csv() if fmt is Format.csv
            else result.to_text())
    _run(_emit, text, output)


@amend_app.command("apply")
def amend_apply(
    new: NewFile,
    reason: Annotated[str, typer.Option("--reason", help="Why: which amendment, approved by whom (required).",
                                        metavar="TEXT")],
    db: Db = None,
    patients: Patients = None,
    by: By = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    site: Annotated[Path | None, typer.Option(
        "--site", help="The site amendment (verified values) to plan them with from now on ('none': none). Default: "
        "the one each patient is planned with now, carried over.", metavar="FILE")] = None,
) -> None:
    """Move the chosen patients (default: every patient on the protocol) to the new version:
    one audited entry of the version log per patient (who, when, why, from → to, sha256).
    A patient whose recorded history is invalid under the new version is refused, with the
    problems, and stays on its version (exit 2 if any is refused). A change of verified
    values alone: the version patients are on as NEW.yaml, and the new site file as --site.

    Example: protocol amend apply amendment.yaml --reason "amendment 3, approved 2027-01-10" --db protocol.db

    Verified values: protocol amend apply interfant06-blinatumomab --site site.yaml --reason "verified by pharmacy"
    """
    from .._amend import apply
    from .._loading import dumps
    from .._registry import open_registry

    def run() -> Any:
        with open_registry(db) as reg:
            return apply(reg, new, reason=reason, patients=_ids(patients), by=by,
                         site=None if site is None else "" if str(site) == "none" else site)

    result = _run(run)
    if json_output:
        sys.stdout.write(dumps(result.to_dict()))
    else:
        for pid, seq, old, to in result.moved:
            typer.echo(f"moved {pid}: {old} → {to} (#{seq})")
        for pid in result.already:
            typer.echo(f"{pid}: already on {result.to}")
    for pid, problems in result.refused:
        typer.echo(f"error: refused {pid}: its recorded history is invalid under {result.to}; it stays on its "
                   "version:", err=True)
        for message in problems:
            typer.echo(f"  - {message}", err=True)
    if result.refused:
        raise typer.Exit(2)


@amend_app.command("retract")
def amend_retract(
    patient: Annotated[str, typer.Argument(help="The patient id.", metavar="PATIENT")],
    seq: Annotated[int, typer.Argument(help="The move to undo (#seq from `amend apply` / `amend history`).",
                                       metavar="SEQ")],
    reason: Annotated[str, typer.Option("--reason", help="Why the move was wrong (required).", metavar="TEXT")],
    db: Db = None,
    by: By = None,
) -> None:
    """Undo a patient's move to a new version (a retraction, audited like any correction):
    the patient is planned with the version it was on before.

    Example: protocol amend retract INF-0001 41 --reason "applied to the wrong patient"
    """
    from .._amend import retract
    from .._registry import open_registry

    def run() -> Any:
        with open_registry(db) as reg:
            return retract(reg, patient, seq, reason=reason, by=by)

    typer.echo(f"retracted #{seq} of {patient} (#{_run(run)})")


@amend_app.command("history")
def amend_history(
    patient: Annotated[str, typer.Argument(help="The patient id.", metavar="PATIENT")],
    db: Db = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The patient's version log: the version it was registered with, every move and retraction.

    Example: protocol amend history INF-0001
    """
    from .._loading import dumps
    from .._registry import open_registry
    from .._versions import version_history

    def run() -> Any:
        with open_registry(db) as reg:
            reg.patient(patient)
            return version_history(reg, patient)

    rows = _run(run)
    if json_output:
        sys.stdout.write(dumps({"patient": patient, "versions": rows}))
        return
    for r in rows:
        if r["retracts"] is not None:
            what = f"retracts #{r['retracts']}"
        elif r["from"] is None:
            what = f"registered on {r['to_label']}"
        else:
            what = f"{r['from_label']} → {r['to_label']}"
        mark = f" (retracted by #{r['retracted_by']})" if r["retracted_by"] else ""
        mark += f" [signed: {r['signature']}]" if r.get("signature") else ""
        why = f": {r['reason']}" if r["reason"] else ""
        typer.echo(f"#{r['seq']} {r['recorded_at']} {r['recorded_by']} {what}{mark}{why}")
