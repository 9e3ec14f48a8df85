"""Registry commands: patients add/list, record (one subcommand per event type), retract,
history, export, worklist. Each parses its arguments, calls one registry method and prints."""

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from ._common import (AsOf, Db, PatientRef, Site, _as_of, _emit, _fit, _paragraph, _patient, _protocol_for, _run,
                      _shown, _typed, _width, app)

# --------------------------------------------------------------------------- shared options

By = Annotated[str | None, typer.Option("--by", help="Who records this (default: $USER).", metavar="NAME",
                                        show_default=False)]
Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]
Date = Annotated[str, typer.Option("--date", help="When it happened: YYYY-MM-DD or 'today'.", metavar="DATE")]
Supersedes = Annotated[int | None, typer.Option(
    "--supersedes", help="Correct entry SEQ (see `protocol history`): this entry takes its place. Needs --why.",
    metavar="SEQ", show_default=False)]
Why = Annotated[str | None, typer.Option("--why", help="Why this entry is recorded; required with --supersedes.",
                                         metavar="TEXT", show_default=False)]
Note = Annotated[str | None, typer.Option("--note", help="A free-text note kept with the event.", metavar="TEXT",
                                          show_default=False)]
AsOfRecorded = Annotated[str | None, typer.Option(
    "--as-of-recorded", help="Show the record as it was known then: a date (end of that day, UTC) or a "
    "date-time YYYY-MM-DDTHH:MM[:SS][Z] (UTC unless a zone is given).", metavar="TS", show_default=False)]
Item = Annotated[str, typer.Argument(help="The plan item as ELEMENT:SLOT@DAY (element id, administration or "
                                     "assessment id, element day), e.g. induction:dexamethasone@8.", metavar="ITEM")]
Element = Annotated[str, typer.Argument(help="The element (course) id, e.g. induction.", metavar="ELEMENT")]
Reason = Annotated[str, typer.Option("--reason", help="Why (required).", metavar="TEXT")]
OptReason = Annotated[str | None, typer.Option("--reason", help="Details (optional).", metavar="TEXT",
                                               show_default=False)]
BagHours = Annotated[int | None, typer.Option("--bag-hours", help="Bag duration chosen for the continuous "
                                              "infusion (hours, e.g. 24, 48, 72, 96).", metavar="H",
                                              show_default=False)]


class Scope(str, Enum):
    item = "item"
    element = "element"
    all = "all"


class DoseScope(str, Enum):
    item = "item"
    element = "element"


class Of(str, Enum):
    standard = "standard"
    previous = "previous"


class ExportFormat(str, Enum):
    yaml = "yaml"
    json = "json"


# --------------------------------------------------------------------------- patients


patients_app = typer.Typer(
    help="Register patients and list them.\n\nExample: protocol patients add examples/patients/mr-on-time.yaml",
    no_args_is_help=True, rich_markup_mode=None)
app.add_typer(patients_app, name="patients")


@patients_app.command("add")
def patients_add(
    file: Annotated[Path, typer.Argument(help="A patient file (YAML/JSON).", metavar="FILE")],
    by: By = None,
    site: Annotated[str, typer.Option("--site", help="The trial site the patient belongs to (created with "
                                      "`protocol sites add SITE`).", metavar="SITE")] = "default",
    db: Db = None,
) -> None:
    """Register a patient from a patient file: its base record and every measurement, result
    and event become entries of the audit log, in a site (default: `default`). Creates the
    registry (mode 0600) if needed.

    Example: protocol patients add examples/patients/mr-on-time.yaml --site leeds --db protocol.db
    """
    from .._registry import open_registry

    def add() -> Any:
        with open_registry(db, create=True) as reg:
            return reg.add_patient(file, by=by, site=site), reg.path

    entries, path = _run(add)
    typer.echo(f"added {entries[0].patient} to {path}: {len(entries)} entries (#{entries[0].seq}-#{entries[-1].seq})")


@patients_app.command("list")
def patients_list(json_output: Json = False, db: Db = None) -> None:
    """List the registered patients: id, protocol, diagnosis date, entries, last recorded.

    Example: protocol patients list --json
    """
    from .._registry import open_registry

    def summaries() -> Any:
        with open_registry(db) as reg:
            return reg.patients()

    rows = _run(summaries)
    if json_output:
        from .._loading import dumps

        sys.stdout.write(dumps({"patients": [r.to_dict() for r in rows]}))
        return
    if not rows:
        typer.echo("no patients registered")
        return
    _table(["id", "protocol", "diagnosis", "entries", "last recorded (UTC)", "by"],
           [[r.id, r.protocol, r.diagnosis_date, str(r.entries), _when(r.last_recorded_at), r.last_recorded_by]
            for r in rows])


# --------------------------------------------------------------------------- record


record_app = typer.Typer(
    help="Record what happened to a registered patient: one subcommand per kind of event.\n\n"
    "`protocol record PATIENT EVENT --help` shows an event's options. The patient is validated with the new entry (and its protocol's rules) before anything is "
    "written. Correct an entry with --supersedes SEQ --why TEXT, or withdraw it with `protocol retract`.\n\n"
    "Example: protocol record INF-0001 given induction:dexamethasone@8 --date 2026-07-01 --dose 2.2",
    no_args_is_help=True, rich_markup_mode=None)
app.add_typer(record_app, name="record")


@record_app.callback()
def record_patient(
    ctx: typer.Context,
    patient: Annotated[str, typer.Argument(help="The registry id of the patient, e.g. INF-0001.",
                                           metavar="PATIENT")],
) -> None:
    """Record what happened to a registered patient: one subcommand per kind of event.

    Example: protocol record INF-0001 measurement --date 2026-11-20 --height-cm 72 --weight-kg 8.9
    """
    ctx.obj = patient


def _record(ctx: typer.Context, kind: str, data: dict[str, Any], *, date: str | None, by: str | None,
            supersedes: int | None, why: str | None, db: Path | None, positional: dict[str, str],
            prefix: str = "--") -> None:
    """Build the entry, call :meth:`Registry.record`, print it; problems name the options."""
    from .._errors import InputError, Problem
    from .._io import parse_date
    from .._registry import open_registry

    patient = ctx.obj
    for key in ("reason", "note"):  # what a person typed: no control characters
        if isinstance(data.get(key), str):
            _typed(data[key], f"--{key}")
    why = _typed(why, "--why")
    by = _typed(by, "--by")
    if date is not None:
        data["date"] = _run(parse_date, date, "--date").isoformat()
    for key in ("to",):
        if isinstance(data.get(key), str):
            data[key] = _run(parse_date, data[key], f"--{key}").isoformat()
    # 72.0 from a float option is written 72, as a person would in a patient file.
    data = {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in data.items()
            if v is not None or kind == "base"}  # a base correction's None removes the field
    if supersedes is not None and not (why or "").strip():
        _run(_raise, InputError(Problem("record", "--why", "a correction (--supersedes) needs --why: why the entry "
                                        "it replaces was wrong")))

    def write() -> Any:
        try:
            with open_registry(db) as reg:
                return reg.record(patient, kind, data, by=by, reason=why, supersedes=supersedes)
        except InputError as exc:
            raise type(exc)([_option(p, positional, prefix) for p in exc.problems]) from None

    entry = _run(write)
    typer.echo(f"recorded #{entry.seq} for {entry.patient}: {_shown(entry.what)} (by {entry.recorded_by}, "
               f"{_when(entry.recorded_at)} UTC)")


def _item(ctx: typer.Context, item: str, date: str, db: Path | None) -> str:
    """An ITEM argument as the library writes it (any case accepted), checked against the
    patient's plan so that a mistyped one gets the nearest refs."""
    return _run(_resolve_items, ctx.obj, [item], None, None, date, db)[0]


def _raise(exc: BaseException) -> None:
    raise exc


def _option(problem: Any, positional: dict[str, str], prefix: str = "--") -> Any:
    """Name the command-line option (``--height-cm``) or argument (``ITEM``) a field came from."""
    from .._errors import Problem

    if problem.file not in ("record", "retract") or not problem.field or "." in problem.field \
            or "[" in problem.field:
        return problem
    name = positional.get(problem.field) or (prefix + (problem.field if prefix != "--" else
                                                       problem.field.replace("_", "-")))
    return Problem(problem.file, name, problem.message, problem.line)


def _event(event_type: str, **fields: Any) -> dict[str, Any]:
    return {"type": event_type, **fields}


@record_app.command("given")
def record_given(
    ctx: typer.Context,
    items: Annotated[list[str] | None, typer.Argument(
        help="The plan items as ELEMENT:SLOT@DAY (any case), e.g. induction:vincristine@8; several at once are "
        "recorded together, all or none.", metavar="ITEM...", show_default=False)] = None,
    element: Annotated[str | None, typer.Option("--element", help="Instead of ITEMs: every administration of this "
                                                "element on --day still to record.", metavar="ELEMENT",
                                                show_default=False)] = None,
    day: Annotated[int | None, typer.Option("--day", help="The element day, with --element.", metavar="DAY",
                                            show_default=False)] = None,
    date: Date = "today",
    dose: Annotated[float | None, typer.Option("--dose", help="The amount actually given, in the item's "
                                               "unit (as on the plan); one item only.", show_default=False)] = None,
    note: Note = None, by: By = None, supersedes: Supersedes = None, why: Why = None,
    db: Db = None,
) -> None:
    """Items of the plan were given (with the amount actually given, for one item).

    Several items at once (`given REF REF ...`, or `--element induction --day 8` for every
    administration of that day still to record) are checked together and recorded all or
    none. `protocol due PATIENT` lists the refs of a day, ready to paste.

    Example: protocol record INF-0001 given induction:vincristine@8 induction:daunorubicin@8 --date 2026-05-11
    """
    from .._errors import InputError, Problem

    note = _typed(note, "--note")
    why = _typed(why, "--why")
    texts = list(items or [])
    problems = []
    if texts and (element is not None or day is not None):
        problems.append(Problem("record", "ITEM", "give either ITEMs or --element with --day, not both"))
    elif not texts and (element is None or day is None):
        problems.append(Problem("record", "ITEM", "name the items given (ELEMENT:SLOT@DAY, see `protocol due "
                                f"{ctx.obj}`), or give --element and --day"))
    if dose is not None and (len(texts) != 1 or element is not None):
        problems.append(Problem("record", "--dose", "a dose given is recorded for one item at a time: name one ITEM"))
    if supersedes is not None and (len(texts) != 1 or element is not None):
        problems.append(Problem("record", "--supersedes", "a correction replaces one entry: name one ITEM"))
    if problems:
        _run(_raise, InputError(problems))
    refs = _run(_resolve_items, ctx.obj, texts, element, day, date, db)
    if len(refs) == 1:
        _record(ctx, "event", _event("item_given", item=refs[0], date=None, dose=dose, note=note), date=date, by=by,
                supersedes=supersedes, why=why, db=db, positional={"item": "ITEM"})
        return
    _record_many(ctx, [_event("item_given", item=ref, date=None, note=note) for ref in refs], refs, date=date, by=by,
                 db=db)


def _resolve_items(patient: str, texts: list[str], element: str | None, day: int | None, date: str,
                   db: Path | None) -> list[str]:
    """The canonical refs the user named (any case), checked against the patient's plan as of
    ``date``: a ref that names nothing gets the nearest ones in the message."""
    from .._io import parse_date
    from .._refs import items_of_day, resolve_all
    from .._registry import open_registry
    from .._schedule import plan

    when = parse_date(date, "--date")
    with open_registry(db) as reg:
        who = reg.patient(patient)
    result = plan(who, as_of=when)
    if texts:
        return resolve_all(texts, result)
    assert element is not None and day is not None
    return [i.ref for i in items_of_day(result, element, day)]


def _record_many(ctx: typer.Context, events: list[dict[str, Any]], labels: list[str], *, date: str, by: str | None,
                 db: Path | None) -> None:
    """Record several events of one patient at once (all or none), print each entry."""
    from .._errors import InputError
    from .._io import parse_date
    from .._registry import open_registry

    day = _run(parse_date, date, "--date").isoformat()
    events = [{k: v for k, v in {**e, "date": day}.items() if v is not None} for e in events]

    def write() -> Any:
        try:
            with open_registry(db) as reg:
                return reg.record_many(ctx.obj, [("event", e) for e in events], by=by, labels=labels)
        except InputError as exc:
            raise type(exc)([_option(p, {"item": "ITEM"}) for p in exc.problems]) from None

    for entry in _run(write):
        typer.echo(f"recorded #{entry.seq} for {entry.patient}: {_shown(entry.what)} (by {entry.recorded_by}, "
                   f"{_when(entry.recorded_at)} UTC)")


@record_app.command("omitted")
def record_omitted(ctx: typer.Context, item: Item, reason: Reason, date: Date = "today", note: Note = None,
                   by: By = None, supersedes: Supersedes = None, why: Why = None, db: Db = None) -> None:
    """An item of the plan was not given, and why.

    Example: protocol record INF-0001 omitted induction:vincristine@15 --date 2026-05-18 --reason "ileus"
    """
    _record(ctx, "event", _event("item_omitted", item=_item(ctx, item, date, db), date=None, reason=reason, note=note), date=date, by=by,
            supersedes=supersedes, why=why, db=db, positional={"item": "ITEM"})


@record_app.command("delayed")
def record_delayed(
    ctx: typer.Context, item: Item,
    to: Annotated[str, typer.Option("--to", help="The new date of the item: YYYY-MM-DD.", metavar="DATE")],
    scope: Annotated[Scope, typer.Option("--scope", help="item: move this item only; element: also the rest of its "
                                         "element; all: every later date of the treatment.")],
    reason: Reason, date: Date = "today", note: Note = None, by: By = None, supersedes: Supersedes = None,
    why: Why = None, db: Db = None,
) -> None:
    """An item is postponed to a new date; --scope says what moves with it.

    Example: protocol record INF-0001 delayed ib:cyclophosphamide@36 --to 2026-07-10 --scope element --reason "neutropenia"
    """
    _record(ctx, "event", _event("item_delayed", item=_item(ctx, item, date, db), date=None, to=to, scope=scope.value, reason=reason,
                                 note=note), date=date, by=by, supersedes=supersedes, why=why, db=db,
            positional={"item": "ITEM"})


@record_app.command("dose-modified")
def record_dose_modified(
    ctx: typer.Context, item: Item,
    percent: Annotated[float, typer.Option("--percent", help="The new dose as a percentage (above 0, at most 100).",
                                           metavar="P")],
    of: Annotated[Of, typer.Option("--of", help="Percentage of the standard dose or of the previous dose.")],
    scope: Annotated[DoseScope, typer.Option("--scope", help="item: this dose only; element: this and the "
                                             "element's later doses of the drug.")],
    reason: Reason, date: Date = "today", note: Note = None, by: By = None, supersedes: Supersedes = None,
    why: Why = None, db: Db = None,
) -> None:
    """A dose is reduced to a percentage of the standard (or previous) dose; never above standard.

    Example: protocol record INF-0001 dose-modified ib:mercaptopurine@36 --percent 50 --of standard --scope element --reason "liver toxicity"
    """
    _record(ctx, "event", _event("dose_modified", item=_item(ctx, item, date, db), date=None, percent=percent, of=of.value,
                                 scope=scope.value, reason=reason, note=note), date=date, by=by,
            supersedes=supersedes, why=why, db=db, positional={"item": "ITEM"})


@record_app.command("started")
def record_started(ctx: typer.Context, element: Element, date: Date = "today", bag_hours: BagHours = None,
                   note: Note = None, by: By = None, supersedes: Supersedes = None, why: Why = None,
                   db: Db = None) -> None:
    """An element (course) started.

    Example: protocol record INF-0001 started blinatumomab --date 2026-06-08 --bag-hours 96
    """
    _record(ctx, "event", _event("element_started", element=element.strip().lower(), date=None, bag_hours=bag_hours, note=note),
            date=date, by=by, supersedes=supersedes, why=why, db=db, positional={"element": "ELEMENT"})


@record_app.command("completed")
def record_completed(ctx: typer.Context, element: Element, date: Date = "today", note: Note = None,
                     by: By = None, supersedes: Supersedes = None, why: Why = None, db: Db = None) -> None:
    """An element (course) was completed.

    Example: protocol record INF-0001 completed induction --date 2026-06-07
    """
    _record(ctx, "event", _event("element_completed", element=element.strip().lower(), date=None, note=note), date=date, by=by,
            supersedes=supersedes, why=why, db=db, positional={"element": "ELEMENT"})


@record_app.command("hold")
def record_hold(ctx: typer.Context, element: Element, reason: Reason, date: Date = "today", note: Note = None,
                by: By = None, supersedes: Supersedes = None, why: Why = None, db: Db = None) -> None:
    """An element is put on hold (nothing of it is given until it is resumed).

    Example: protocol record INF-0001 hold marma --date 2026-08-20 --reason "febrile neutropenia"
    """
    _record(ctx, "event", _event("element_held", element=element.strip().lower(), date=None, reason=reason, note=note), date=date,
            by=by, supersedes=supersedes, why=why, db=db, positional={"element": "ELEMENT"})


@record_app.command("resume")
def record_resume(ctx: typer.Context, element: Element, date: Date = "today", note: Note = None, by: By = None,
                  supersedes: Supersedes = None, why: Why = None, db: Db = None) -> None:
    """An element on hold is resumed.

    Example: protocol record INF-0001 resume marma --date 2026-08-27
    """
    _record(ctx, "event", _event("element_resumed", element=element.strip().lower(), date=None, note=note), date=date, by=by,
            supersedes=supersedes, why=why, db=db, positional={"element": "ELEMENT"})


@record_app.command("interrupted")
def record_interrupted(ctx: typer.Context, element: Element, reason: Reason, date: Date = "today",
                       note: Note = None, by: By = None, supersedes: Supersedes = None, why: Why = None,
                       db: Db = None) -> None:
    """The continuous infusion of an element is interrupted.

    Example: protocol record INF-0001 interrupted blinatumomab --date 2026-06-15 --reason "cytokine release syndrome"
    """
    _record(ctx, "event", _event("infusion_interrupted", element=element.strip().lower(), date=None, reason=reason, note=note),
            date=date, by=by, supersedes=supersedes, why=why, db=db, positional={"element": "ELEMENT"})


@record_app.command("infusion-resumed")
def record_infusion_resumed(ctx: typer.Context, element: Element, date: Date = "today", bag_hours: BagHours = None,
                            note: Note = None, by: By = None, supersedes: Supersedes = None, why: Why = None,
                            db: Db = None) -> None:
    """An interrupted continuous infusion is resumed.

    Example: protocol record INF-0001 infusion-resumed blinatumomab --date 2026-06-18 --bag-hours 48
    """
    _record(ctx, "event", _event("infusion_resumed", element=element.strip().lower(), date=None, bag_hours=bag_hours, note=note),
            date=date, by=by, supersedes=supersedes, why=why, db=db, positional={"element": "ELEMENT"})


@record_app.command("randomised")
def record_randomised(
    ctx: typer.Context,
    randomisation: Annotated[str, typer.Argument(help="The randomisation id.", metavar="RANDOMISATION")],
    arm: Annotated[str, typer.Argument(help="The arm allocated.", metavar="ARM")],
    date: Date = "today", note: Note = None, by: By = None, supersedes: Supersedes = None, why: Why = None,
    db: Db = None,
) -> None:
    """The patient was randomised to an arm.

    Example: protocol record INF-0001 randomised consolidation standard --date 2026-07-20
    """
    _record(ctx, "event", _event("randomised", randomisation=randomisation.strip().lower(),
                                 arm=arm.strip().lower(), date=None, note=note),
            date=date, by=by, supersedes=supersedes, why=why, db=db,
            positional={"randomisation": "RANDOMISATION", "arm": "ARM"})


def _outcome(event_type: str, example: str, doc: str) -> None:
    def command(ctx: typer.Context, date: Date = "today", reason: OptReason = None, note: Note = None,
                by: By = None, supersedes: Supersedes = None, why: Why = None, db: Db = None) -> None:
        _record(ctx, "event", _event(event_type, date=None, reason=reason, note=note), date=date, by=by,
                supersedes=supersedes, why=why, db=db, positional={})

    command.__doc__ = f"{doc}\n\n    Example: {example}\n    "
    record_app.command(event_type)(command)


_outcome("hsct", "protocol record INF-0002 hsct --date 2026-12-01", "The patient went to haematopoietic stem "
         "cell transplantation.")
_outcome("relapse", "protocol record INF-0001 relapse --date 2027-03-01", "The leukaemia relapsed.")
_outcome("death", "protocol record INF-0001 death --date 2027-03-01 --reason \"sepsis\"", "The patient died.")


@record_app.command("off-protocol")
def record_off_protocol(ctx: typer.Context, reason: Reason, date: Date = "today", note: Note = None, by: By = None,
                        supersedes: Supersedes = None, why: Why = None, db: Db = None) -> None:
    """The patient left the protocol, and why.

    Example: protocol record INF-0001 off-protocol --date 2026-09-01 --reason "parents withdrew consent"
    """
    _record(ctx, "event", _event("off_protocol", date=None, reason=reason, note=note), date=date, by=by,
            supersedes=supersedes, why=why, db=db, positional={})


@record_app.command("measurement")
def record_measurement(
    ctx: typer.Context,
    height_cm: Annotated[float, typer.Option("--height-cm", help="Height in cm.", metavar="CM")],
    weight_kg: Annotated[float, typer.Option("--weight-kg", help="Weight in kg.", metavar="KG")],
    date: Date = "today", by: By = None, supersedes: Supersedes = None, why: Why = None, db: Db = None,
) -> None:
    """A height and weight measurement (doses per m² and per kg use the latest one).

    Example: protocol record INF-0001 measurement --date 2026-11-20 --height-cm 72 --weight-kg 8.9
    """
    _record(ctx, "measurement", {"date": None, "height_cm": height_cm, "weight_kg": weight_kg}, date=date, by=by,
            supersedes=supersedes, why=why, db=db, positional={})


@record_app.command("mrd")
def record_mrd(
    ctx: typer.Context,
    timepoint: Annotated[str, typer.Argument(help="The MRD time point, e.g. pre_octadad.", metavar="TIMEPOINT")],
    value: Annotated[float, typer.Option("--value", help="MRD as a fraction (3e-4 = 0.03 %; 0 = negative).",
                                         metavar="FRACTION")],
    date: Date = "today", by: By = None, supersedes: Supersedes = None, why: Why = None, db: Db = None,
) -> None:
    """An MRD result at a protocol time point (the date the sample was taken).

    Example: protocol record INF-0003 mrd pre_octadad --value 3e-4 --date 2026-11-02
    """
    _record(ctx, "mrd", {"timepoint": timepoint.strip().lower(), "date": None, "value": value}, date=date, by=by,
            supersedes=supersedes, why=why, db=db, positional={"timepoint": "TIMEPOINT"})


@record_app.command("counts")
def record_counts(
    ctx: typer.Context,
    anc: Annotated[float | None, typer.Option("--anc", help="Neutrophils ×10⁹/L.", show_default=False)] = None,
    platelets: Annotated[float | None, typer.Option("--platelets", help="Platelets ×10⁹/L.",
                                                    show_default=False)] = None,
    date: Date = "today", by: By = None, supersedes: Supersedes = None, why: Why = None, db: Db = None,
) -> None:
    """A blood count (start gates read it).

    Example: protocol record INF-0001 counts --date 2026-07-01 --anc 0.8 --platelets 60
    """
    _record(ctx, "count", {"date": None, "anc": anc, "platelets": platelets}, date=date, by=by,
            supersedes=supersedes, why=why, db=db, positional={})


@record_app.command("base")
def record_base(
    ctx: typer.Context,
    why: Annotated[str, typer.Option("--why", help="Why the base record is corrected (required).", metavar="TEXT")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="FIELD=VALUE to set (repeatable); VALUE is read "
                                                   "as in a YAML patient file.", metavar="FIELD=VALUE",
                                                   show_default=False)] = None,
    unset: Annotated[list[str] | None, typer.Option("--unset", help="An optional FIELD to remove (repeatable).",
                                                    metavar="FIELD", show_default=False)] = None,
    by: By = None, db: Db = None,
) -> None:
    """Correct the base record (birth date, WBC, ...): a new base entry replaces the current one.

    Example: protocol record INF-0001 base --set wbc_at_diagnosis=165 --why "lab value mistyped"
    """
    from .._errors import InputError, Problem
    from .._io import parse_text

    changes: dict[str, Any] = {}
    for pair in set_ or []:
        field, sep, text = pair.partition("=")
        if not sep or not field.strip():
            _run(_raise, InputError(Problem("record", "--set", f"expected FIELD=VALUE, got {pair!r}")))
        changes[field.strip()] = _run(parse_text, text, "--set").data
    for field in unset or []:
        changes[field.strip()] = None
    if not changes:
        _run(_raise, InputError(Problem("record", "--set", "nothing to correct: give --set FIELD=VALUE or --unset "
                                        "FIELD")))
    _record(ctx, "base", changes, date=None, by=by, supersedes=None, why=why, db=db, positional={"reason": "--why"},
            prefix="--set ")


@app.command("due")
def due_command(
    patient: PatientRef,
    date: Annotated[str, typer.Option("--date", help="The day: YYYY-MM-DD or 'today'.", metavar="DATE")] = "today",
    as_of: AsOf = None,
    db: Db = None,
    site: Site = None,
) -> None:
    """What is due for one patient on a day, with the refs ready to paste into `protocol record`.

    Lists the items of that day still to record, then the command that records the
    administrations as given, then what else is on that day (already recorded, held, or on a
    branch that waits for a decision) and how many earlier items are still unrecorded.

    Example: protocol due INF-0001 --date 2026-05-11
    """
    from .._io import parse_date
    from .._refs import due_on, open_before
    from .._schedule import plan

    day = _run(parse_date, date, "--date")
    who = _run(_patient, patient, db)
    result = _run(plan, who, _run(_protocol_for, who, site), as_of=_run(_as_of, as_of))
    due, other = due_on(result, day)
    pid = result.patient.id
    width = _width()
    out = [_paragraph(f"{pid} · {result.protocol.id} {result.protocol.version} · due on {day.isoformat()} · as of "
                      f"{result.as_of}", width)]

    def rows(items: list[Any]) -> str:
        body = [[i.slot.element, str(i.element_day), i.slot.name, i.slot.route or "",
                 "" if i.dose is None else i.dose.text, i.status,
                 "UNVERIFIED" if i.unverified else i.evidence, i.branch or "", i.ref,
                 _shown(i.note or "")] for i in items]
        return _fit(["element", "day", "item", "route", "dose", "status", "evidence", "branch", "ref", "note"], body,
                    None)[0]

    if due:
        out.append(rows(due))
        given = [i.ref for i in due if i.slot.kind != "assessment"]
        if given:
            out.append("\nto record them as given:\n")
            out.append(f"  protocol record {pid} given {' '.join(given)} --date {day.isoformat()}\n")
        if any(i.slot.kind == "assessment" for i in due):
            out.append("(an assessment is done when its result is recorded, not with `given`)\n")
    else:
        out.append("nothing due on this day\n")
    if other:
        out.append("\nalso on this day (recorded, held, or waiting for a decision):\n")
        out.append(rows(other))
    late = open_before(result, day)
    if late:
        out.append(f"\n{len(late)} earlier items are still unrecorded or overdue (the first on "
                   f"{late[0].date.isoformat()}): see `protocol plan {patient} --status overdue,unrecorded`\n")
    if any(i.unverified for i in (*due, *other)):
        out.append(_paragraph("UNVERIFIED = placeholder value not confirmed from a public source; check against the "
                              "official protocol document.", width))
    sys.stdout.write("".join(out))


# --------------------------------------------------------------------------- corrections, history, export


@app.command("retract")
def retract_command(
    patient: Annotated[str, typer.Argument(help="The registry id of the patient.", metavar="PATIENT")],
    seq: Annotated[int, typer.Argument(help="The entry to withdraw (see `protocol history`).", metavar="SEQ")],
    reason: Annotated[str, typer.Option("--reason", help="Why the entry was wrong (required).", metavar="TEXT")],
    by: By = None,
    db: Db = None,
) -> None:
    """Withdraw an entry recorded in error. It stays in the audit log, marked retracted.

    Example: protocol retract INF-0001 42 --reason "recorded for the wrong patient"
    """
    from .._registry import open_registry

    from .._errors import InputError

    reason = _typed(reason, "--reason") or ""
    by = _typed(by, "--by")

    def retract() -> Any:
        try:
            with open_registry(db) as reg:
                return reg.retract(patient, seq, by=by, reason=reason)
        except InputError as exc:
            raise type(exc)([_option(p, {"seq": "SEQ"}) for p in exc.problems]) from None

    entry = _run(retract)
    typer.echo(f"recorded #{entry.seq} for {entry.patient}: {_shown(entry.what)} (by {entry.recorded_by}, "
               f"{_when(entry.recorded_at)} UTC)")


@app.command("history")
def history_command(
    patient: Annotated[str, typer.Argument(help="The registry id of the patient.", metavar="PATIENT")],
    json_output: Json = False,
    as_of_recorded: AsOfRecorded = None,
    db: Db = None,
) -> None:
    """The audit trail of a patient: every entry with when and by whom it was recorded, why, and
    what corrected it.

    Example: protocol history INF-0001 --as-of-recorded 2026-11-01
    """
    from .._registry import open_registry

    from .._registry import parse_recorded

    if as_of_recorded is not None:
        _run(parse_recorded, as_of_recorded, "--as-of-recorded")

    def history() -> Any:
        with open_registry(db) as reg:
            return reg.history(patient, as_of_recorded=as_of_recorded)

    entries = _run(history)
    if json_output:
        from .._loading import dumps

        sys.stdout.write(dumps({"patient": patient, "as_of_recorded": as_of_recorded,
                                "entries": [e.to_dict() for e in entries]}))
        return
    rows = []
    for e in entries:
        why = e.reason or (e.data.get("reason") if isinstance(e.data, dict) else None) or ""
        mark = (f"SUPERSEDED by #{e.superseded_by}" if e.superseded_by is not None
                else f"RETRACTED by #{e.retracted_by}" if e.retracted_by is not None else "")
        rows.append([str(e.seq), _when(e.recorded_at), e.recorded_by, e.what, why, mark])
    live = sum(e.live for e in entries)
    typer.echo(f"{patient}: {len(entries)} entries, {live} in force"
               + (f" (as recorded up to {as_of_recorded})" if as_of_recorded else ""))
    _table(["seq", "recorded (UTC)", "by", "what", "why", ""], rows)


@app.command("export")
def export_command(
    patient: Annotated[str, typer.Argument(help="The registry id of the patient.", metavar="PATIENT")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")] = None,
    format: Annotated[ExportFormat | None, typer.Option(
        "--format", "-f", help="yaml or json (default: from the -o file name, else yaml).")] = None,
    as_of_recorded: AsOfRecorded = None,
    db: Db = None,
) -> None:
    """Write a registered patient back as a patient file (it loads to the same patient).

    Example: protocol export INF-0001 -o INF-0001.yaml
    """
    from .._registry import open_registry

    from .._registry import parse_recorded

    fmt = format.value if format else ("json" if output is not None and output.suffix.lower() == ".json" else "yaml")
    if as_of_recorded is not None:
        _run(parse_recorded, as_of_recorded, "--as-of-recorded")

    def export() -> Any:
        with open_registry(db) as reg:
            return reg.export(patient, format=fmt, as_of_recorded=as_of_recorded)

    _run(_emit, _run(export), output)


# --------------------------------------------------------------------------- worklist


@app.command("worklist")
def worklist_command(
    days: Annotated[int, typer.Option("--days", "-n", min=1, max=3660, help="How many days to cover.")] = 7,
    start: Annotated[str | None, typer.Option(
        "--from", help="First day listed: YYYY-MM-DD or 'today' (default: the as-of day). Moves the listing window "
        "only.", metavar="DATE", show_default=False)] = None,
    as_of: AsOf = None,
    json_output: Json = False,
    db: Db = None,
) -> None:
    """Across all registered patients: what is due, what is overdue or unrecorded (past items
    with nothing recorded, elements that should have started), which decisions and risk groups
    wait for a result and which items were out of window, sorted by date.

    --from moves the window of what is listed as due; what counts as past is decided by
    --as-of (default today).

    Example: protocol worklist --days 14 --from 2026-11-21
    """
    from .._io import parse_date
    from .._registry import open_registry

    day = _run(_as_of, as_of)
    first = None if start is None else _run(parse_date, start, "--from")

    def worklist() -> None:
        with open_registry(db) as reg:
            reg.write_worklist(sys.stdout, first, days, day, json_output=json_output)

    _run(worklist)


# --------------------------------------------------------------------------- output helpers


def _when(stamp: str) -> str:
    """``2026-11-21T15:49:03.123456Z`` → ``2026-11-21 15:49:03``."""
    return stamp[:19].replace("T", " ")


def _table(header: list[str], rows: list[list[str]]) -> None:
    """Plain columns; what a person typed is shown with control characters escaped."""
    rows = [[_shown(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(f"{c:<{w}}" for c, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]]
    sys.stdout.write("\n".join(lines) + "\n")
