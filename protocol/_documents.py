"""Documents: the printable roadmap (HTML, Markdown) and the plan as a terminal table.

Templates are Jinja2 files in the top-level ``templates/`` folder (shipped inside the wheel
as ``protocol/templates``). One ``Environment`` is built per template search path and
re-used. Templates receive a view model of plain, pre-formatted values (dates as strings,
doses with their working), so a template never computes anything clinical.

Every placeholder value is marked *unverified* wherever it is printed, with a legend and a
list of the unverified values used; every page footer carries the protocol version, the
generation date and "check against the official protocol document".
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

from ._errors import InputError, Problem
from ._loading import evidence_counts, placeholder_rows
from ._machine import Slot
from ._schedule import Item, Plan, fmt_amount, mosteller

__all__ = ["plan_table", "render_roadmap", "templates_dir"]

FORMATS = ("html", "md")
_UNIT = {"per_m2": "/m²", "per_kg": "/kg", "fixed": "", "age_banded": ""}
_PER = {"dose": "", "day": "/day", "week": "/week"}
_FREQ = {"once_per_day": "", "q12h": "every 12 h (2 doses a day)", "continuous": "continuous infusion"}
_RUN = 8  # a daily run longer than this is shown on its first and last day in the day grid


def templates_dir() -> Path:
    """The built-in templates: ``protocol/templates`` in an installed wheel, or the
    checkout's top-level ``templates/`` in a development install."""
    packaged = Path(str(resources.files("protocol"))) / "templates"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "templates"


@lru_cache(maxsize=8)
def _environment(search: tuple[str, ...]) -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(list(search)),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "htm", "xml", "html.j2"),
                                            default_for_string=True, default=False),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    return env


def _env(templates: str | os.PathLike[str] | None) -> Any:
    search = (str(templates_dir()),)
    if templates is not None:
        override = Path(templates)
        if not override.is_dir():
            raise InputError(Problem(str(templates), "", "expected a folder of templates, got no such folder"))
        search = (str(override), *search)
    return _environment(search)


# --------------------------------------------------------------------------- view model


class DrugRow(NamedTuple):
    key: str
    drug: str
    route: str
    dosage: str
    dosage_unverified: bool
    calculated: str
    calculated_unverified: bool
    days: str
    days_unverified: bool
    frequency: str
    notes: tuple[str, ...]
    kind: str


class GridRow(NamedTuple):
    date: str
    weekday: str
    element_day: int
    study_day: int
    cells: tuple[tuple[str, bool], ...]  # (calculated dose, unverified)
    studies: str
    comment: str


class Section(NamedTuple):
    id: str
    title: str
    status: str
    branch: str | None
    planned_start: str
    planned_end: str
    actual_start: str
    actual_end: str
    length: str
    length_unverified: bool
    length_note: str
    drugs: tuple[DrugRow, ...]
    columns: tuple[str, ...]
    grid: tuple[GridRow, ...]
    next_row: str
    notes: tuple[str, ...]
    decision: Any


def _fmt_date(day: dt.date | None) -> str:
    return "" if day is None else day.isoformat()


def _dosage(slot: Slot) -> tuple[str, bool]:
    d = slot.source.dose  # type: ignore[union-attr]
    unverified = False
    if d.basis == "age_banded":
        parts = []
        for band in d.bands:
            v = band.amount.value
            unverified |= band.amount.evidence == "placeholder"
            label = f"< {band.below_age_years} y" if band.below_age_years else ("all ages" if len(d.bands) == 1
                                                                                  else "older")
            parts.append(f"{label}: {'not specified' if v is None else f'{v:g} {d.unit}'}")
        text = "age-banded (" + "; ".join(parts) + ")"
    else:
        v = d.amount.value
        unverified = d.amount.evidence == "placeholder"
        text = "not specified" if v is None else f"{v:g} {d.unit}{_UNIT[d.basis]}{_PER[d.per]}"
        if d.basis == "fixed" and v is not None:
            text += " (fixed)"
    if d.cap is not None:
        unverified |= d.cap.evidence == "placeholder"
        text += f", max {d.cap.value:g} {d.unit}"
    return text, unverified


def _section(plan: Plan, span: Any, items: list[Item], decision: Any) -> Section:
    p = plan.protocol
    el = p.elements[span.id]
    model = el.model
    adms = [s for s in el.slots if s.kind == "administration"]
    drugs = []
    for s in el.slots:
        if s.kind == "administration":
            dosage, unverified = _dosage(s)
            doses = sorted({i.dose.text for i in items if i.slot is s and i.dose is not None})
            calculated = ", ".join(doses) if doses else "no dates (days not specified)"
            drugs.append(DrugRow(s.key, s.name, s.route or "", dosage, unverified, calculated,
                                 bool(doses) and s.evidence == "placeholder", s.days_text,
                                 s.source.days.evidence == "placeholder", _FREQ.get(s.frequency or "", ""),
                                 s.notes, "administration"))
        else:
            drugs.append(DrugRow(s.key, s.name, "", "", False, "", False, s.days_text,
                                 s.source.days.evidence == "placeholder", "", (), "assessment"))
    # Day grid: one row per date with something due; long daily runs on first and last day only.
    run_days: dict[int, tuple[int, int]] = {}
    for s in adms:
        own = [i.ordinal for i in items if i.slot is s]
        if len(own) > _RUN and own[-1] - own[0] + 1 == len(own):
            run_days[id(s)] = (own[0], own[-1])
    by_date: dict[int, list[Item]] = {}
    for i in items:
        run = run_days.get(id(i.slot))
        if run is not None and i.ordinal not in run:
            continue
        by_date.setdefault(i.ordinal, []).append(i)
    grid = []
    for ordinal in sorted(by_date):
        cells = []
        todays = by_date[ordinal]
        for s in adms:
            hit = next((i for i in todays if i.slot is s), None)
            if hit is None or hit.dose is None:
                cells.append(("", False))
                continue
            text = hit.dose.text
            run = run_days.get(id(s))
            if run is not None:
                text = (f"{text} — start, daily to {dt.date.fromordinal(run[1]).isoformat()}" if ordinal == run[0]
                        else f"{text} — last day")
            cells.append((text, s.evidence == "placeholder"))
        studies = "; ".join(i.slot.name for i in todays if i.slot.kind == "assessment")
        first = todays[0]
        day = dt.date.fromordinal(ordinal)
        grid.append(GridRow(day.isoformat(), day.strftime("%a"), first.element_day, first.study_day, tuple(cells),
                            studies, ""))
    start = span.actual_start or span.planned_start
    next_row = ""
    if el.length is not None and start is not None:
        nxt = start + dt.timedelta(days=el.length)
        next_row = f"Day {el.first_day + el.length} ({nxt.isoformat()}): begin next element"
    elif el.open_ended and span.planned_end is not None:
        next_row = f"{span.planned_end.isoformat()}: last day of therapy (end of therapy)"
    if el.open_ended:
        length = f"until {_fmt_date(plan.end_of_therapy)} (end of therapy)"
        eot = p.definition.end_of_therapy
        length_unverified = eot is not None and eot.weeks.evidence == "placeholder"
        length_note = "" if eot is None else (f"{eot.weeks.value:g} weeks after {eot.anchor}"
                                              + (f" — {eot.weeks.note}" if eot.weeks.note else ""))
    elif model.length_days is not None:
        length = f"{el.length} days (days {el.first_day}–{el.first_day + (el.length or 1) - 1})"
        length_unverified = model.length_days.evidence == "placeholder"
        length_note = model.length_days.note or ""
    else:
        length, length_unverified, length_note = "", False, ""
    notes = tuple(model.notes) + ((model.description,) if model.description else ())
    return Section(span.id, span.title, span.status, span.branch, _fmt_date(span.planned_start),
                   _fmt_date(span.planned_end), _fmt_date(span.actual_start), _fmt_date(span.actual_end), length,
                   length_unverified, length_note, tuple(drugs), tuple(s.name for s in adms), tuple(grid), next_row,
                   notes, decision)


def roadmap_context(plan: Plan, generated: dt.datetime | None = None) -> dict[str, Any]:
    """The values a roadmap template receives (all pre-formatted)."""
    p = plan.protocol
    patient = plan.patient
    if generated is None:
        generated = _generated_at()
    by_element: dict[tuple[str, str | None], list[Item]] = {}
    for item in plan.items:
        by_element.setdefault((item.slot.element, item.branch), []).append(item)
    decisions_at = {(d.at, d.branch): d for d in plan.decisions}
    sections = [_section(plan, span, by_element.get((span.id, span.branch), []),
                         decisions_at.get((span.id, span.branch))) for span in plan.elements]
    latest = None
    in_force = [m for m in patient.measurements if m.date <= plan.as_of]
    if in_force:
        m = max(in_force, key=lambda m: m.date)
        latest = {"date": m.date.isoformat(), "height_cm": f"{m.height_cm:g}", "weight_kg": f"{m.weight_kg:g}",
                  "bsa": f"{round(mosteller(m.height_cm, m.weight_kg), 2):.2f}"}
    placeholders = placeholder_rows(p)
    return {
        "patient": {"id": patient.id, "birth_date": patient.birth_date.isoformat(), "sex": patient.sex,
                    "diagnosis_date": patient.diagnosis_date.isoformat(),
                    "treatment_start": patient.start_date.isoformat(), "kmt2a": patient.kmt2a,
                    "wbc": f"{patient.wbc_at_diagnosis:g}", "cns": patient.cns_status or "not recorded",
                    "prednisone_response": plan.facts.get("prednisone_response", "not known yet")},
        "protocol": {"id": p.id, "version": p.version, "title": p.definition.title, "status": p.definition.status,
                     "sources": p.definition.sources},
        "risk": plan.risk,
        "measurement": latest,
        "as_of": plan.as_of.isoformat(),
        "end_of_therapy": _fmt_date(plan.end_of_therapy),
        "outcome": None if plan.outcome is None else {"type": plan.outcome[0].replace("_", " "),
                                                     "date": plan.outcome[1].isoformat()},
        "elements": plan.elements,
        "sections": sections,
        "decisions": plan.decisions,
        "warnings": plan.warnings,
        "placeholders": placeholders,
        "evidence": evidence_counts(p),
        "generated": generated.strftime("%Y-%m-%d %H:%M UTC"),
        "fmt_amount": fmt_amount,
    }


def _generated_at() -> dt.datetime:
    # SOURCE_DATE_EPOCH (reproducible builds) fixes the generation stamp.
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch and epoch.isdigit():
        return dt.datetime.fromtimestamp(int(epoch), tz=dt.UTC)
    return dt.datetime.now(tz=dt.UTC)


def render_roadmap(plan: Plan, format: str = "html", templates: str | os.PathLike[str] | None = None,
                   generated: dt.datetime | None = None) -> str:
    """Render a patient's printable roadmap as HTML or Markdown text.

    ``templates``: a folder whose ``roadmap.html.j2`` / ``roadmap.md.j2`` override the built-in
    ones. ``generated``: the timestamp printed in the footer (default: now, or
    ``SOURCE_DATE_EPOCH`` when set).

    >>> html = render_roadmap(plan("examples/patients/mr-on-time.yaml"))  # doctest: +SKIP
    """
    if format not in FORMATS:
        raise InputError(Problem("", "format", f"expected one of {', '.join(FORMATS)}, got {format!r}"))
    template = _env(templates).get_template(f"roadmap.{format}.j2")
    return template.render(**roadmap_context(plan, generated))


def plan_table(plan: Plan, width: int | None = None) -> str:
    """The plan as a terminal table (text), headed by the risk group and pending decisions."""
    import io

    from rich.console import Console
    from rich.table import Table

    buf = io.StringIO()
    console = Console(file=buf, width=width or int(os.environ.get("COLUMNS", "160")), color_system=None,
                      highlight=False, soft_wrap=False)
    risk = plan.risk
    console.print(f"{plan.patient.id} · {plan.protocol.id} {plan.protocol.version} · as of {plan.as_of} · "
                  f"risk {risk.group or risk.status} · end of therapy {_fmt_date(plan.end_of_therapy) or '—'}")
    for d in plan.decisions:
        if d.status == "pending":
            console.print(f"PENDING decision {d.id} (after {d.at}, {d.date}): waits for {', '.join(d.waiting_for)}; "
                          + "; ".join(f"→ {b['to']} " + ("otherwise" if b["when"] == "otherwise" else f"if {b['when']}")
                                     for b in d.branches))
    for w in plan.warnings:
        console.print(f"warning: {w}")
    table = Table(show_lines=False, pad_edge=False, box=None)
    for head in ("date", "element", "day", "study day", "item", "route", "dose", "status", "evidence", "branch"):
        table.add_column(head, overflow="fold")
    for row in plan_rows(plan):
        table.add_row(*row)
    console.print(table)
    console.print("UNVERIFIED = placeholder value not confirmed from a public source; check against the official "
                  "protocol document.")
    return buf.getvalue()


def plan_rows(plan: Plan) -> Sequence[tuple[str, ...]]:
    """The plan's items as text rows for a terminal table."""
    return [(i.date.isoformat(), i.slot.element, str(i.element_day), str(i.study_day), i.slot.name,
             i.slot.route or "", "" if i.dose is None else i.dose.text, i.status,
             "UNVERIFIED" if i.slot.evidence == "placeholder" else i.slot.evidence, i.branch or "")
            for i in plan.items]
