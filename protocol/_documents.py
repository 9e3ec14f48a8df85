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
import re
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

from ._errors import InputError, Problem
from ._loading import evidence_counts, placeholder_rows
from ._machine import walk_values
from ._machine import Slot
from ._dose import fmt_amount, mosteller
from .schedule import Item, Plan

__all__ = ["pathway_svg", "plan_table", "render_pdf", "render_roadmap", "render_typst", "roadmap_context",
           "templates_dir", "timeline_svg"]

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


@lru_cache(maxsize=1)
def _bytecode_cache() -> Any:
    """Compiled templates kept between processes (Jinja's per-user cache folder, mode 0700;
    keyed by the template's source, so an edited or overriding template is recompiled): a
    command renders one document, and compiling the roadmap templates took 70-80 ms of it."""
    import jinja2

    try:
        return jinja2.FileSystemBytecodeCache()
    except (OSError, RuntimeError):  # no usable temporary folder: compile every time
        return None


@lru_cache(maxsize=8)
def _environment(search: tuple[str, ...]) -> Any:
    import jinja2
    from jinja2.sandbox import SandboxedEnvironment

    # A --templates folder is the site's code: it renders in Jinja's sandbox, so a template
    # cannot reach Python objects (issue 16 §4: {{ cycler.__init__.__globals__.os.popen(...) }}).
    kind = SandboxedEnvironment if len(search) > 1 else jinja2.Environment
    env = kind(
        loader=jinja2.FileSystemLoader(list(search)),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "htm", "xml", "html.j2"),
                                            default_for_string=True, default=False),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        bytecode_cache=_bytecode_cache(),
    )
    env.filters["css_string"] = _css_string
    return env


def _css_string(value: Any) -> Any:
    """A value as a CSS string literal (for ``content:`` in ``@page`` rules): quotes,
    backslashes, ``<`` and non-ASCII written as CSS escapes, so no HTML escaping is needed."""
    from markupsafe import Markup

    out = []
    for ch in str(value):
        if ch.isascii() and ch.isprintable() and ch not in '"\\<>&':
            out.append(ch)
        else:
            out.append(f"\\{ord(ch):x} ")
    return Markup('"' + "".join(out) + '"')


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


class Observation(NamedTuple):
    """An assessment of an element, lettered as in a TDM's observations list (a., b., ...)."""

    letter: str
    name: str
    days: str
    days_unverified: bool


class Cell(NamedTuple):
    """One drug's cell in a day-grid row: what was planned and what was recorded.

    ``state``: ``given`` / ``omitted`` (recorded), ``not_recorded`` (past, or its element
    completed, with nothing recorded for it), ``planned`` (still to come), ``held``,
    ``pending_decision``; empty for a cell with nothing due.
    """

    text: str  # the planned (calculated) dose, or the kind of task
    unverified: bool
    state: str = ""
    given_date: str = ""
    given_dose: str = ""
    reason: str = ""  # why it was omitted
    signoff: str = ""  # a dose-critical entry on this item: "awaiting verification (recorded by ...)"
    awaiting: bool = False  # ... of which one still waits for its sign-off


class GridRow(NamedTuple):
    date: str
    weekday: str
    element_day: int
    study_day: int
    cells: tuple[Cell, ...]
    studies: str
    comment: str
    date_given: str = ""  # the date every item given on this row was given, when they agree
    moved_from: str = ""  # a delayed row: the date it was due before the delay
    repeat: str = ""  # a folded row: how it repeats ("weekly × 77, weeks 2–78: ...")
    until: str = ""  # a folded row: the date of its last repeat (it repeats every 7 days)


class Record(NamedTuple):
    """A hold, interruption or deviation shown on an element page."""

    date: str
    kind: str
    text: str


class Measure(NamedTuple):
    """The height, weight and BSA a page's doses use, and from when."""

    date: str  # measured on
    height_cm: str
    weight_kg: str
    bsa: str
    first_use: str  # the first dose date of this element that uses it


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
    observations: tuple[Observation, ...] = ()
    decision_row: str = ""
    measures: tuple[Measure, ...] = ()
    records: tuple[Record, ...] = ()  # holds and interruptions, with dates and reasons
    deviations: tuple[Record, ...] = ()
    values: int = 0  # values printed on this element's page(s)
    unverified_values: int = 0  # of which placeholders (marked)
    widths: tuple[float, ...] = ()  # relative widths of the day grid's columns (for the PDF)
    start_signoff: str = ""  # the element was started before the counts recovered: its sign-off
    start_awaiting: bool = False


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
    site = [n for n in (d.amount, d.cap, *(b.amount for b in d.bands or ())) if n is not None and n.evidence == "site"]
    if site:
        text += " ✓ site-verified"
    return text, unverified


def _days_unverified(slot: Slot) -> bool:
    days = getattr(slot.source, "days", None)
    return (getattr(days, "evidence", None) or slot.evidence) == "placeholder"


_ROUTINE = frozenset({"planned", "done", "pending_decision"})


_NOT_RECORDED = {"done": "not_recorded", "unrecorded": "not_recorded", "overdue": "overdue"}
_MOVED = re.compile(r"\b(?:delayed|moved) (\d+) (?:more )?days")
_PAUSES = {"element_held": "on hold", "element_resumed": "resumed after the hold",
           "infusion_interrupted": "infusion interrupted", "infusion_resumed": "infusion resumed"}


def _recorded_events(plan: Plan) -> dict[str, list[Any]]:
    """The patient's ``item_given`` / ``item_omitted`` events by item ref, in date order (an
    item recorded twice across cycles of one element takes them in turn)."""
    out: dict[str, list[Any]] = {}
    for ev in sorted((e for e in plan.patient.events if e.type in ("item_given", "item_omitted") and e.item),
                     key=lambda e: e.date):
        out.setdefault(str(ev.item).lower(), []).append(ev)
    return out


def _take(item: Item, recorded: dict[str, list[Any]]) -> Any:
    """The event that recorded this given or omitted item (None if there is none)."""
    kind = "item_given" if item.status == "given" else "item_omitted"
    queue = recorded.get(item.ref.lower(), [])
    ev = next((e for e in queue if e.type == kind), None)
    if ev is not None:
        queue.remove(ev)
    return ev


def _cell(item: Item, text: str, unverified: bool, recorded: dict[str, list[Any]], as_of: dt.date) -> Cell:
    state = _NOT_RECORDED.get(item.status, item.status)
    if item.status == "given":
        ev = _take(item, recorded)
        dose = "" if ev is None or ev.dose is None or item.dose is None else f"{ev.dose:g} {item.dose.unit}"
        when = "" if ev is None else ev.date.isoformat()
        if "(out of window)" in (item.note or ""):
            when += " (out of window)"
        return Cell(text, unverified, "given", when, dose)
    if item.status == "omitted":
        ev = _take(item, recorded)
        return Cell(text, unverified, "omitted", reason="" if ev is None else str(ev.reason or ""))
    return Cell(text, unverified, state)


def _study_state(item: Item, recorded: dict[str, list[Any]], as_of: dt.date) -> str:
    if item.status == "given":
        ev = _take(item, recorded)
        return f" — done {ev.date.isoformat()}" if ev is not None else " — done"
    if item.status == "omitted":
        ev = _take(item, recorded)
        return f" — omitted: {ev.reason}" if ev is not None else " — omitted"
    if item.status == "done":
        return " — result recorded"
    if item.status in ("unrecorded", "overdue"):
        return " — not recorded" + (" (overdue)" if item.status == "overdue" else "")
    return ""


def _comment(item: Item) -> str:
    parts = [part for part in (item.note or "").split("; ")
             if part and not part.startswith(("given on ", "omitted on "))]
    if item.status == "held":
        parts.insert(0, "held")
    return "; ".join(parts)


def _moved_days(items: list[Item]) -> int:
    """How many days a row's items were moved by delays and holds (0: on their planned date)."""
    return max((sum(int(n) for n in _MOVED.findall(i.note or "")) for i in items), default=0)


def _fold(built: list[tuple[GridRow, bool]]) -> list[GridRow]:
    """Runs of three or more identical weekly rows with nothing recorded become one row with its
    repeat; every date stays in the calendar and the plan."""
    out: list[GridRow] = []
    k = 0
    while k < len(built):
        row, foldable = built[k]
        j = k + 1
        if foldable:
            key = tuple(c[:2] for c in row.cells)
            while j < len(built):
                nxt, ok = built[j]
                prev = built[j - 1][0]
                if not ok or tuple(c[:2] for c in nxt.cells) != key or \
                        dt.date.fromisoformat(nxt.date) - dt.date.fromisoformat(prev.date) != dt.timedelta(days=7):
                    break
                j += 1
        if j - k >= 3:
            last = built[j - 1][0]
            w1, w2 = (row.element_day - 1) // 7 + 1, (last.element_day - 1) // 7 + 1
            out.append(row._replace(repeat=f"weekly × {j - k}, weeks {w1}–{w2}: {row.date} to {last.date} "
                                           f"(every date in the calendar and the plan)", until=last.date))
            k = j
        else:
            out.append(row)
            k += 1
    return out


def _measures(items: list[Item]) -> tuple[Measure, ...]:
    """The measurements this element's doses use (per m² and per kg), in the order first used."""
    seen: dict[tuple[Any, ...], Measure] = {}
    for i in items:
        d = i.dose
        if d is None or d.basis not in ("per_m2", "per_kg") or d.measurement is None:
            continue
        m = d.measurement
        key = (m.date, m.height_cm, m.weight_kg)
        if key not in seen:
            bsa = d.bsa if d.bsa is not None else mosteller(m.height_cm, m.weight_kg)
            seen[key] = Measure(m.date.isoformat(), f"{m.height_cm:g}", f"{m.weight_kg:g}", f"{bsa:.3f}",
                                i.date.isoformat())
    return tuple(sorted(seen.values(), key=lambda m: m.first_use))


def _pause_records(plan: Plan, span: Any) -> tuple[Record, ...]:
    if span.branch is not None:
        return ()
    out = [Record(e.date.isoformat(), _PAUSES[e.type], str(e.reason or ""))
           for e in plan.patient.events if e.type in _PAUSES and e.element == span.id]
    out.sort(key=lambda r: r.date)
    if span.note:
        out.append(Record("", "effect on the plan", span.note))
    return tuple(out)


def _anthracycline_lines(plan: Plan) -> list[dict[str, Any]]:
    """The cover's cumulative anthracycline lines (``text``, ``unverified``): each drug's
    planned and given mg/m², then the doxorubicin equivalent (issue 11)."""
    c = plan.cumulative_anthracycline()
    if c is None:
        return []
    lines = [{"text": f"{d['drug']}: planned {fmt_amount(d['planned_mg_m2'])} mg/m², given "
                      f"{fmt_amount(d['given_mg_m2'])} mg/m² (factor "
                      f"{'not known' if d['factor'] is None else format(d['factor'], 'g')})",
              "unverified": d["unverified"]} for d in c["drugs"]]
    eq = c["doxorubicin_equivalent"]
    lines.append({"text": (f"Doxorubicin equivalent: planned {fmt_amount(eq['planned'])} mg/m², given "
                           f"{fmt_amount(eq['given'])} mg/m²") if eq["computable"]
                  else "Doxorubicin equivalent: not computable (a conversion factor is not known)",
                  "unverified": c["unverified"]})
    return lines


def _deviation_records(plan: Plan, element: str | None = None) -> tuple[Record, ...]:
    return tuple(Record(d["date"], str(d["kind"]).replace("_", " "),
                        d["message"] + (f" [{d['item']}]" if d.get("item") else "")
                        + ("" if element is not None else f" ({d['element']})"))
                 for d in plan.deviations if element is None or d["element"] == element)


def _grid_widths(section: Section) -> tuple[float, ...]:
    """Relative column widths of the day grid, so that the longest word of each drug's header
    fits its column (no header runs into the next one, none is hyphenated): date due, date
    given, day, study day, one per drug, studies due, comments."""
    # 9 units: "⚠ unverified" in bold fits a drug column unbroken even with 7 drug columns.
    drugs = [max(9.0, 0.66 * max((len(w) for w in name.split()), default=1) + 1.0) for name in section.columns]
    studies = 11.0 if any(r.studies for r in section.grid) else 5.0
    comments = 11.0 if any(r.comment for r in section.grid) else 8.0
    if not drugs:
        studies += 40.0
    return (8.5, 5.5, 3.5, 4.5, *drugs, studies, comments)


def _count(section: Section) -> tuple[int, int]:
    """(values printed, of which unverified) on an element's page(s): its length, each dosage,
    calculated dose and days, each observation's days and each dose in the day grid."""
    marks = [section.length_unverified] if section.length else []
    for d in section.drugs:
        if d.kind == "assessment":
            continue
        marks += [d.dosage_unverified, d.days_unverified]
        if d.calculated_unverified or d.calculated and not d.calculated.startswith("no dates"):
            marks.append(d.calculated_unverified)
    marks += [o.days_unverified for o in section.observations]
    marks += [c.unverified for r in section.grid for c in r.cells if c.text]
    return len(marks), sum(marks)


def _signed_text(found: list[Any]) -> tuple[str, bool]:
    """The sign-off words of the dose-critical entries ``found`` on one value, and whether one waits."""
    return "; ".join(m.text for m in found), any(not m.signed for m in found)


def _section(plan: Plan, span: Any, items: list[Item], decision: Any,
             recorded: dict[str, list[Any]] | None = None, marks: dict[str, list[Any]] | None = None) -> Section:
    p = plan.protocol
    marks = {} if marks is None else marks
    el = p.elements[span.id]
    model = el.model
    # Every slot that is not an assessment (administrations, and any other kind of task such as
    # infusion-bag changes) gets a column in the day grid; assessments are the observations.
    recorded = {} if recorded is None else recorded
    adms = [s for s in el.slots if s.kind != "assessment"]
    assessments = [s for s in el.slots if s.kind == "assessment"]
    drugs = []
    for s in el.slots:
        if s.kind == "assessment":
            drugs.append(DrugRow(s.key, s.name, "", "", False, "", False, s.days_text, _days_unverified(s), "", (),
                                 "assessment"))
        elif s.dose is not None:
            dosage, unverified = _dosage(s)
            doses = sorted({i.dose.text for i in items if i.slot is s and i.dose is not None})
            calculated = ", ".join(doses) if doses else "no dates (days not specified)"
            drugs.append(DrugRow(s.key, s.name, s.route or "", dosage, unverified, calculated,
                                 bool(doses) and s.evidence == "placeholder", s.days_text, _days_unverified(s),
                                 _FREQ.get(s.frequency or "", ""), s.notes, s.kind))
        else:
            drugs.append(DrugRow(s.key, s.name, s.route or "", str(s.kind).replace("_", " "), False, "", False,
                                 s.days_text, s.evidence == "placeholder", "", s.notes, s.kind))
    # Observations are lettered as on a COG Therapy Delivery Map; the day grid cites the letters.
    observations = tuple(Observation(chr(ord("a") + n % 26) * (1 + n // 26), s.name, s.days_text,
                                     _days_unverified(s)) for n, s in enumerate(assessments))
    letters = {s.key: o.letter for s, o in zip(assessments, observations)}
    # Day grid: one row per date and element day with something due (a delayed item is its own
    # row: it never shares a day number with another day's items); long daily runs on their first
    # and last day only.
    run_days: dict[int, tuple[int, int]] = {}
    for s in adms:
        own = [i.ordinal for i in items if i.slot is s]
        if len(own) > _RUN and own[-1] - own[0] + 1 == len(own):
            run_days[id(s)] = (own[0], own[-1])
    by_day: dict[tuple[int, int], list[Item]] = {}
    for i in items:
        run = run_days.get(id(i.slot))
        if run is not None and i.ordinal not in run and i.status in _ROUTINE and not getattr(i, "note", None):
            continue
        by_day.setdefault((i.ordinal, i.element_day), []).append(i)
    built: list[tuple[GridRow, bool]] = []  # (row, foldable: nothing recorded and nothing to say)
    for ordinal, element_day in sorted(by_day):
        cells = []
        todays = by_day[(ordinal, element_day)]
        for s in adms:
            hit = next((i for i in todays if i.slot is s), None)
            if hit is None:
                cells.append(Cell("", False))
                continue
            text = hit.dose.short_text if hit.dose is not None else str(s.kind).replace("_", " ")
            run = run_days.get(id(s))
            if run is not None and ordinal == run[0]:
                text = f"{text} — start, daily to {dt.date.fromordinal(run[1]).isoformat()}"
            elif run is not None and ordinal == run[1]:
                text = f"{text} — last day"
            cell = _cell(hit, text, hit.unverified, recorded, plan.as_of)
            found = marks.get(hit.ref.lower())
            if found:
                cell = cell._replace(**dict(zip(("signoff", "awaiting"), _signed_text(found), strict=True)))
            cells.append(cell)
        studies = "; ".join(f"{letters[i.slot.key]}. {i.slot.name}" + _study_state(i, recorded, plan.as_of)
                            for i in todays if i.slot.key in letters and i.slot.kind == "assessment")
        # What the columns do not hold (a delay, a dose modification, a hold...) goes in the
        # comments; the date and dose given and an omission's reason have their own places.
        comment = "; ".join(f"{i.slot.name}: {c}" for i in todays for c in [_comment(i)] if c)
        first = todays[0]
        day = dt.date.fromordinal(ordinal)
        given_dates = {c.given_date for c in cells if c.state == "given"}
        moved = _moved_days(todays)
        built.append((GridRow(day.isoformat(), day.strftime("%a"), element_day, first.study_day, tuple(cells),
                              studies, comment, given_dates.pop() if len(given_dates) == 1 else "",
                              dt.date.fromordinal(ordinal - moved).isoformat() if moved else ""),
                      not studies and not comment and all(i.status == "planned" for i in todays)
                      and not any(c.signoff for c in cells)))
    grid = _fold(built)
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
        length_unverified = eot is not None and eot.length.evidence == "placeholder"
        length_note = "" if eot is None else (f"{eot.text} after {eot.anchor}"
                                              + (f" — {eot.length.note}" if eot.length.note else ""))
    elif model.length_days is not None:
        length = f"{el.length} days (days {el.first_day}–{el.first_day + (el.length or 1) - 1})"
        length_unverified = model.length_days.evidence == "placeholder"
        length_note = model.length_days.note or ""
    else:
        length, length_unverified, length_note = "", False, ""
    notes = tuple(model.notes) + ((model.description,) if model.description else ())
    decision_row = "" if decision is None else _decision_text(decision)
    section = Section(span.id, span.title, span.status, span.branch, _fmt_date(span.planned_start),
                      _fmt_date(span.planned_end), _fmt_date(span.actual_start), _fmt_date(span.actual_end), length,
                      length_unverified, length_note, tuple(drugs), tuple(s.name for s in adms), tuple(grid),
                      next_row, notes, decision, observations, decision_row, _measures(items),
                      _pause_records(plan, span), () if span.branch else _deviation_records(plan, span.id))
    values, unverified = _count(section)
    started = marks.get(f"start:{span.id}") if span.branch is None else None
    start_signoff, start_awaiting = _signed_text(started) if started else ("", False)
    return section._replace(values=values, unverified_values=unverified, widths=_grid_widths(section),
                            start_signoff=start_signoff, start_awaiting=start_awaiting)


def _decision_text(d: Any) -> str:
    """One line for the end of an element's day grid: what the decision is and where it stands."""
    rules = "; ".join(f"→ {b['to']} " + ("otherwise" if b["when"] == "otherwise" else f"if {b['when']}")
                      for b in d.branches)
    if d.status == "pending":
        state = f"PENDING: waits for {', '.join(d.waiting_for)}"
    elif d.outcome:
        state = f"{str(d.status).replace('_', ' ')}: {d.outcome}"
    else:
        state = str(d.status).replace("_", " ")
    return f"Decision {d.id} ({state}): {rules}"


def _marks_by_place(signoffs: Sequence[Any]) -> dict[str, list[Any]]:
    """Sign-off marks by where the roadmap prints them: an item's ref, or ``start:ELEMENT``."""
    out: dict[str, list[Any]] = {}
    for m in signoffs:
        if m.item:
            out.setdefault(m.item.lower(), []).append(m)
        elif m.type == "element_started" and m.element:
            out.setdefault(f"start:{m.element}", []).append(m)
    return out


def roadmap_context(plan: Plan, generated: dt.datetime | None = None, signoffs: Sequence[Any] = ()) -> dict[str, Any]:
    """The values a roadmap template receives (all pre-formatted).

    ``signoffs``: the patient's dose-critical entries (:func:`protocol._signoff.marks`; a
    registry patient's, none for a patient file), printed beside the values they changed and
    listed on the cover, signed ("dose verified by ...") or waiting ("awaiting verification").
    """
    p = plan.protocol
    patient = plan.patient
    if generated is None:
        generated = _generated_at()
    by_element: dict[tuple[str, str | None], list[Item]] = {}
    for item in plan.items:
        by_element.setdefault((item.slot.element, item.branch), []).append(item)
    decisions_at = {(d.at, d.branch): d for d in plan.decisions}
    recorded = _recorded_events(plan)
    marks = _marks_by_place(signoffs)
    sections = [_section(plan, span, by_element.get((span.id, span.branch), []),
                         decisions_at.get((span.id, span.branch)), recorded, marks) for span in plan.elements]
    latest = None
    in_force = [m for m in patient.measurements if m.date <= plan.as_of]
    if in_force:
        m = max(in_force, key=lambda m: m.date)
        latest = {"date": m.date.isoformat(), "height_cm": f"{m.height_cm:g}", "weight_kg": f"{m.weight_kg:g}",
                  "bsa": f"{mosteller(m.height_cm, m.weight_kg):.3f}"}  # as in the doses' working
    placeholders = placeholder_rows(p)
    site = None
    if p.site is not None:
        site = {"name": p.site[0], "file": p.site[1],
                "values": [{"label": " › ".join(label), "value": v.value if not isinstance(v.value, float)
                            else f"{v.value:g}", "by": v.verified.by, "on": v.verified.on.isoformat(),
                            "section": v.verified.section}
                           for _, label, v in walk_values(p.source) if v.verified is not None]}
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
        "deviations": _deviation_records(plan),
        "signoffs": [{"summary": m.summary, "text": m.text, "signed": m.signed} for m in signoffs],
        "awaiting_signoff": sum(not m.signed for m in signoffs),
        "anthracycline": _anthracycline_lines(plan),
        "site": site,
        "evidence": evidence_counts(p),
        "generated": generated.strftime("%Y-%m-%d %H:%M UTC"),
        "generated_iso": generated.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "fmt_amount": fmt_amount,
        "pathway_svg": pathway_svg(plan),
        "timeline_svg": timeline_svg(plan),
        "timeline_svg_cover": timeline_svg(plan, 600),
    }


def _generated_at() -> dt.datetime:
    # SOURCE_DATE_EPOCH (reproducible builds) fixes the generation stamp.
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch and epoch.isdigit():
        return dt.datetime.fromtimestamp(int(epoch), tz=dt.UTC)
    return dt.datetime.now(tz=dt.UTC)


def render_roadmap(plan: Plan, format: str = "html", templates: str | os.PathLike[str] | None = None,
                   generated: dt.datetime | None = None, signoffs: Sequence[Any] = ()) -> str:
    """Render a patient's printable roadmap as HTML or Markdown text.

    ``templates``: a folder whose ``roadmap.html.j2`` / ``roadmap.md.j2`` override the built-in
    ones. ``generated``: the timestamp printed in the footer (default: now, or
    ``SOURCE_DATE_EPOCH`` when set). ``signoffs``: a registry patient's dose-critical entries
    (:func:`protocol._signoff.marks`), see :func:`roadmap_context`.

    >>> html = render_roadmap(plan("examples/patients/mr-on-time.yaml"))  # doctest: +SKIP
    """
    if format not in FORMATS:
        raise InputError(Problem("", "format", f"expected one of {', '.join(FORMATS)}, got {format!r}"))
    import jinja2
    from jinja2.sandbox import SecurityError

    name = f"roadmap.{format}.j2"
    try:
        return _env(templates).get_template(name).render(**roadmap_context(plan, generated, signoffs))
    except (SecurityError, jinja2.TemplateError) as exc:
        if templates is None:
            raise
        raise InputError(Problem(str(templates), getattr(exc, "name", None) or name,
                                 f"expected a template the roadmap can render, got: {exc}")) from None


PDF_ENGINES = ("typst", "weasyprint")


class _Typst(str):
    """Text that is already typst (markup or code) and is written as it is."""

    __slots__ = ()


def _typst_string(value: Any) -> _Typst:
    """A value as a typst string literal: ``"a \\"b\\""``; backslashes, quotes and control
    characters escaped, so the text can never become markup or code."""
    out = []
    for ch in str(value):
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 or ch in "\u2028\u2029":
            out.append(f"\\u{{{ord(ch):x}}}")
        else:
            out.append(ch)
    return _Typst('"' + "".join(out) + '"')


def _typst_finalize(value: Any) -> Any:
    """What ``{{ value }}`` writes in a typst template: the value as a string, inserted in the
    markup as ``#"...";`` (the semicolon ends the expression, whatever follows)."""
    if isinstance(value, _Typst):
        return value
    if value is None:
        return ""
    return _Typst("#" + _typst_string(value) + ";")


def _typst_number(value: Any) -> _Typst:
    """A number for a code argument (``colspan: 7``, ``12.50fr``); anything else is refused."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expected a number for a typst argument, got {value!r}")
    return _Typst(str(value) if isinstance(value, int) else f"{value:.2f}")


@lru_cache(maxsize=8)
def _typst_environment(search: tuple[str, ...]) -> Any:
    import jinja2
    from jinja2.sandbox import SandboxedEnvironment

    # Sandboxed: a --templates folder's typst template cannot reach Python objects.
    env = SandboxedEnvironment(
        loader=jinja2.FileSystemLoader(list(search)),
        autoescape=False,  # escaping is the finalize below: every value becomes a typst string
        finalize=_typst_finalize,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        bytecode_cache=_bytecode_cache(),
    )
    env.filters["str"] = _typst_string
    env.filters["num"] = _typst_number
    env.filters["raw"] = _Typst  # a block already rendered by this template ({% set x %}...{% endset %})
    return env


def render_typst(plan: Plan, templates: str | os.PathLike[str] | None = None,
                 generated: dt.datetime | None = None, signoffs: Sequence[Any] = ()) -> str:
    """The roadmap as typst source (``templates/roadmap.typ.j2``): what :func:`render_pdf`
    compiles. Every value from the definition or the patient file is a typst string literal.

    >>> source = render_typst(plan("examples/patients/mr-on-time.yaml"))  # doctest: +SKIP
    >>> source.startswith("#set document(")  # doctest: +SKIP
    True
    """
    if generated is None:
        generated = _generated_at()
    search = _env(templates).loader.searchpath
    context = roadmap_context(plan, generated, signoffs)
    g = generated.astimezone(dt.UTC)
    context["generated_parts"] = (g.year, g.month, g.day, g.hour, g.minute, g.second)
    import jinja2
    from jinja2.sandbox import SecurityError

    try:
        return _typst_environment(tuple(search)).get_template("roadmap.typ.j2").render(**context)
    except (SecurityError, jinja2.TemplateError) as exc:
        if templates is None:
            raise
        name = getattr(exc, "name", None) or "roadmap.typ.j2"
        raise InputError(Problem(str(templates), name, f"expected a template the roadmap can render, got: "
                                 f"{exc}")) from None


def render_pdf(plan: Plan, templates: str | os.PathLike[str] | None = None,
               generated: dt.datetime | None = None, engine: str = "typst", signoffs: Sequence[Any] = ()) -> bytes:
    """Render a patient's printable roadmap as PDF bytes.

    ``engine="typst"`` (default): ``templates/roadmap.typ.j2`` compiled in-process by the
    ``typst`` package (about 15 ms a page); page size, running header and footer (protocol
    version, generation date, "check against the official protocol document", page X of Y) in
    ``roadmap.page.typ.j2``, which a ``templates`` folder may replace. ``engine="weasyprint"``:
    the HTML roadmap through WeasyPrint (about ten times slower; needs the optional
    ``weasyprint`` package and the Pango library), with ``roadmap.print.css``. With
    ``SOURCE_DATE_EPOCH`` set (or ``generated`` given) the output is byte-identical from run to run.
    ``signoffs``: a registry patient's dose-critical entries, see :func:`roadmap_context`.

    >>> data = render_pdf(plan("examples/patients/mr-on-time.yaml"))  # doctest: +SKIP
    >>> data[:5]  # doctest: +SKIP
    b'%PDF-'
    """
    if engine not in PDF_ENGINES:
        raise InputError(Problem("", "engine", f"expected one of {', '.join(PDF_ENGINES)}, got {engine!r}"))
    if generated is None:
        generated = _generated_at()
    if engine == "weasyprint":
        return _weasyprint_pdf(plan, templates, generated, signoffs)
    import typst

    source = render_typst(plan, templates, generated, signoffs)
    try:
        return typst.compile(source.encode("utf-8"), timestamp=int(generated.timestamp()))
    except typst.TypstError as exc:
        where = str(templates) if templates is not None else str(templates_dir())
        raise InputError(Problem(where, "roadmap.typ.j2", f"expected typst the compiler accepts, got: "
                                 f"{exc.message if hasattr(exc, 'message') else exc}")) from None


def _weasyprint_pdf(plan: Plan, templates: str | os.PathLike[str] | None, generated: dt.datetime,
                    signoffs: Sequence[Any] = ()) -> bytes:
    html = render_roadmap(plan, "html", templates, generated, signoffs)
    try:
        import weasyprint
    except ImportError:
        raise InputError(Problem("", "--engine", "expected the weasyprint package for --engine weasyprint "
                                 "(pip install weasyprint; it also needs the Pango library), got none installed")) from None
    except OSError as exc:  # pragma: no cover - depends on the machine's libraries
        raise RuntimeError("PDF output needs the Pango library (Debian/Ubuntu: apt-get install libpango-1.0-0 "
                           f"libpangoft2-1.0-0 libharfbuzz-subset0): {exc}") from None
    folders = ([Path(templates)] if templates is not None else []) + [templates_dir()]
    css = next((f / "roadmap.print.css" for f in folders if (f / "roadmap.print.css").is_file()), None)
    stylesheets = [] if css is None else [weasyprint.CSS(string=css.read_text(encoding="utf-8"))]
    document = weasyprint.HTML(string=html, base_url=str(folders[0])).render(stylesheets=stylesheets)
    # The PDF identifier is otherwise random-ish: derive it from the content for reproducibility.
    import hashlib

    ident = hashlib.md5(html.encode("utf-8"), usedforsecurity=False).hexdigest().encode("ascii")
    return document.write_pdf(pdf_identifier=ident)


def plan_table(plan: Plan, width: int | None = None) -> str:
    """The plan as a terminal table (text), headed by the risk group and pending decisions."""
    import io

    from rich.console import Console
    from rich.table import Table

    buf = io.StringIO()
    console = Console(file=buf, width=width or int(os.environ.get("COLUMNS", "220")), color_system=None,
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
    for d in plan.deviations:
        console.print(f"deviation {d['date']} {d['kind']}: {d['message']}" + (f" [{d['item']}]" if d["item"] else ""))
    table = Table(show_lines=False, pad_edge=False, box=None)
    for head in ("date", "element", "day", "study day", "item", "route", "dose", "status", "evidence", "branch"):
        table.add_column(head, overflow="fold")
    # The ref is what `protocol record` takes: never folded or cut, so it can be copied whole.
    table.add_column("ref", no_wrap=True, min_width=max((len(i.ref) for i in plan.items), default=3))
    table.add_column("note", overflow="fold")
    for row in plan_rows(plan):
        table.add_row(*row)
    console.print(table)
    console.print("UNVERIFIED = placeholder value not confirmed from a public source; check against the official "
                  "protocol document.")
    return buf.getvalue()


def plan_rows(plan: Plan) -> Sequence[tuple[str, ...]]:
    """The plan's items as text rows for a terminal table (``ref`` is what ``protocol record``
    takes to name an item; ``note`` says what a recorded event changed)."""
    return [(i.date.isoformat(), i.slot.element, str(i.element_day), str(i.study_day), i.slot.name,
             i.slot.route or "", "" if i.dose is None else i.dose.text, i.status,
             "UNVERIFIED" if i.slot.evidence == "placeholder" else i.slot.evidence, i.branch or "", i.ref,
             i.note or "")
            for i in plan.items]


# --------------------------------------------------------------------------- pictures (static SVG)
#
# Both pictures are plain SVG written here (no JavaScript, no external files), so they look the
# same in a browser, in print and in the PDF. Every state is written in words as well as in
# colour, so a black-and-white printout still reads.

_STATE_STYLE = {  # fill, stroke, dash, text colour
    "completed": ("#d1fae5", "#065f46", "", "#111"),
    "in_progress": ("#fef3c7", "#92400e", "", "#111"),
    "planned": ("#ffffff", "#333333", "", "#111"),
    "pending_decision": ("#eff6ff", "#1d4ed8", "5 3", "#111"),
    "stopped": ("#fee2e2", "#991b1b", "", "#111"),
    "not_taken": ("#f3f4f6", "#9ca3af", "2 3", "#6b7280"),
}
_OTHER_STYLE = ("#ffffff", "#333333", "", "#111")


def _short(title: str) -> str:
    """``Induction (IA) with 7-day prednisone prephase`` → ``Induction``; ``MARMA`` stays."""
    return title.split(":")[0].split(" (")[0].strip() or title


def _wrap(text: str, width: int = 17, lines: int = 2) -> list[str]:
    out: list[str] = []
    for word in text.split():
        if out and len(out[-1]) + 1 + len(word) <= width:
            out[-1] += " " + word
        else:
            out.append(word)
    cut = len(out) > lines
    out = [line if len(line) <= width else line[: width - 1] + "…" for line in out[:lines]]
    if cut and not out[-1].endswith("…"):
        out[-1] = out[-1][: width - 1] + "…"
    return out


def _depths(table: dict[str, tuple[Any, ...]], node: str, seen: frozenset[str] = frozenset()) -> int:
    if node in seen:
        return 0
    return 1 + max((_depths(table, e.dest, seen | {node}) for e in table.get(node, ())), default=0)


def pathway_svg(plan: Plan) -> str:
    """The protocol's elements in order as a static SVG flow chart, with this patient's state:
    each element completed / in progress / planned / pending a decision / not taken, and each
    decision point as a diamond whose branches are marked taken, pending or not taken."""
    from markupsafe import Markup, escape

    p = plan.protocol
    table = p.table
    pos: dict[str, tuple[int, int]] = {}
    diamonds: dict[str, tuple[int, int]] = {}
    rows = [0]

    def place(node: str, col: int, row: int) -> None:
        if node in pos:
            return
        pos[node] = (col, row)
        edges = sorted(table.get(node, ()), key=lambda e: -_depths(table, e.dest))
        nxt = col + 1
        if len(edges) > 1:
            diamonds[node] = (col + 1, row)
            nxt = col + 2
        for k, e in enumerate(edges):
            if k:
                rows[0] += 1
            place(e.dest, nxt, row if k == 0 else rows[0])

    place(p.initial, 0, 0)
    for eid in p.elements:  # anything unreachable (a validated protocol has none) goes last
        if eid not in pos:
            rows[0] += 1
            place(eid, 0, rows[0])
    spans: dict[str, Any] = {}
    for span in plan.elements:
        spans.setdefault(span.id, span)
    decisions: dict[str, Any] = {}
    for d in plan.decisions:
        if d.at not in decisions or d.branch is None:
            decisions[d.at] = d

    cw, rh, bw, bh, pad = 150, 86, 128, 66, 10
    ncols = max(c for c, _ in [*pos.values(), *diamonds.values()]) + 1
    nrows = rows[0] + 1
    width, height = ncols * cw + pad, nrows * rh + pad + 34

    def box_xy(col: int, row: int) -> tuple[float, float]:
        return pad + col * cw, pad + row * rh

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="pathway" viewBox="0 0 {width} {height}" '
           f'width="{width}" height="{height}" font-family="DejaVu Sans, Arial, sans-serif" role="img" '
           'aria-labelledby="pathway-title">',
           f'<title id="pathway-title">Treatment pathway of {escape(p.id)} {escape(p.version)} for '
           f'{escape(plan.patient.id)}</title>',
           '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
           'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#333"/></marker></defs>']

    def edge_class(src: str, dest: str) -> str:
        d = decisions.get(src)
        if d is None:
            return "taken" if src in spans and dest in spans else "future"
        if d.status == "pending":
            return "pending" if dest in spans else "not_taken"
        return "taken" if d.outcome == dest else "not_taken"

    line_style = {"taken": ('#111', '', '2'), "pending": ('#1d4ed8', '5 3', '1.6'),
                  "not_taken": ('#9ca3af', '2 3', '1.2'), "future": ('#333', '', '1.2')}
    for src, edges in table.items():
        if src not in pos:
            continue
        sc, sr = pos[src]
        sx, sy = box_xy(sc, sr)
        start = (sx + bw, sy + bh / 2)
        if src in diamonds:
            dc, dr = diamonds[src]
            dx, dy = box_xy(dc, dr)
            cx, cy = dx + bw / 2, dy + bh / 2
            colour, dash, stroke = line_style["taken" if src in spans and src in decisions else "future"]
            out.append(f'<path d="M{start[0]},{start[1]} L{cx - 16},{cy}" stroke="{colour}" stroke-width="{stroke}" '
                       f'fill="none" marker-end="url(#arrow)"/>')
            start = (cx + 16, cy)
        for e in edges:
            if e.dest not in pos:
                continue
            tc, tr = pos[e.dest]
            tx, ty = box_xy(tc, tr)
            cls = edge_class(src, e.dest)
            colour, dash, stroke = line_style[cls]
            end = (tx, ty + bh / 2)
            mid = start[0] + 12
            d = (f"M{start[0]},{start[1]} L{end[0]},{end[1]}" if start[1] == end[1]
                 else f"M{start[0]},{start[1]} L{mid},{start[1]} L{mid},{end[1]} L{end[0]},{end[1]}")
            dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
            out.append(f'<path d="{d}" stroke="{colour}" stroke-width="{stroke}" fill="none"{dash_attr} '
                       f'marker-end="url(#arrow)"><title>{escape(src)} → {escape(e.dest)}: '
                       f'{escape(cls.replace("_", " "))}</title></path>')
            if src in diamonds:
                label = _wrap(e.label or ("otherwise" if e.condition is None else e.dest), 13, 1)[0]
                word = {"taken": "taken", "pending": "pending", "not_taken": "not taken"}.get(cls, "")
                lx = (start[0] + end[0]) / 2 if start[1] == end[1] else (mid + end[0]) / 2
                out.append(f'<text x="{lx}" y="{end[1] - 4}" font-size="8" text-anchor="middle" '
                           f'fill="{colour}">{escape(label)}</text>')
                if word:
                    out.append(f'<text x="{lx}" y="{end[1] + 10}" font-size="7.5" font-style="italic" '
                               f'text-anchor="middle" fill="{colour}">{word}</text>')
    for src, (dc, dr) in diamonds.items():
        dx, dy = box_xy(dc, dr)
        cx, cy = dx + bw / 2, dy + bh / 2
        d = decisions.get(src)
        state = "not reached" if d is None else str(d.status).replace("_", " ")
        fill = "#eff6ff" if d is not None and d.status == "pending" else "#fff"
        name = table[src][0].decision
        out.append(f'<polygon points="{cx},{cy - 16} {cx + 16},{cy} {cx},{cy + 16} {cx - 16},{cy}" fill="{fill}" '
                   f'stroke="#1d4ed8" stroke-width="1.5"><title>decision {escape(name)}: {escape(state)}</title>'
                   f'</polygon>')
        out.append(f'<text x="{cx}" y="{cy + 28}" font-size="9" text-anchor="middle">{escape(name)}</text>')
        out.append(f'<text x="{cx}" y="{cy + 38}" font-size="8" text-anchor="middle" fill="#1d4ed8">'
                   f'{escape(state)}</text>')
    for eid, (col, row) in pos.items():
        x, y = box_xy(col, row)
        span = spans.get(eid)
        state = "not_taken" if span is None else span.status
        fill, stroke, dash, ink = _STATE_STYLE.get(state, _OTHER_STYLE)
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        width_ = "2.4" if state == "in_progress" else "1.3"
        title = p.elements[eid].title
        out.append(f'<g class="node {escape(state)}"><title>{escape(title)}</title>'
                   f'<rect x="{x}" y="{y}" width="{bw}" height="{bh}" rx="6" fill="{fill}" stroke="{stroke}" '
                   f'stroke-width="{width_}"{dash_attr}/>')
        lines = _wrap(_short(title), 17, 3)  # wrapped on up to three lines, so no name is cut short
        for k, line in enumerate(lines):
            out.append(f'<text x="{x + bw / 2}" y="{y + 15 + k * 12}" font-size="11" font-weight="bold" '
                       f'text-anchor="middle" fill="{ink}">{escape(line)}</text>')
        if span is not None:
            start = span.actual_start or span.planned_start
            when = "" if start is None else ("from " if span.actual_start else "due ") + start.isoformat()
        else:
            when = "—"
        words = "not taken" if span is None else state.replace("_", " ")
        out.append(f'<text x="{x + bw / 2}" y="{y + bh - 17}" font-size="8.5" text-anchor="middle" '
                   f'fill="{ink}">{escape(when)}</text>')
        out.append(f'<text x="{x + bw / 2}" y="{y + bh - 6}" font-size="8.5" font-style="italic" '
                   f'text-anchor="middle" fill="{ink}">{escape(words)}</text></g>')
    # Legend.
    lx, ly = pad, height - 22
    for state in ("completed", "in_progress", "planned", "pending_decision", "not_taken"):
        fill, stroke, dash, _ = _STATE_STYLE[state]
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(f'<rect x="{lx}" y="{ly}" width="14" height="10" fill="{fill}" stroke="{stroke}"{dash_attr}/>'
                   f'<text x="{lx + 18}" y="{ly + 9}" font-size="9">{state.replace("_", " ")}</text>')
        lx += 118
    out.append("</svg>")
    return Markup("".join(out))


def _wrap_all(text: str, width: int) -> list[str]:
    """``text`` in lines of at most ``width`` characters, broken between words, never cut (a
    longer word keeps its own line)."""
    out: list[str] = []
    for word in text.split():
        if out and len(out[-1]) + 1 + len(word) <= width:
            out[-1] += " " + word
        else:
            out.append(word)
    return out or [""]


def timeline_svg(plan: Plan, width: int = 1000) -> str:
    """The patient's elements on a date axis as static SVG: per element a hollow bar for the
    planned dates and a filled bar for the actual ones, branch elements dashed, a line at the
    plan's as-of date. ``width``: the drawing's width in its own units, for the width it is
    shown at (the PDF cover uses 600, beside the risk group, so its text stays legible);
    element names are wrapped, never cut."""
    from markupsafe import Markup, escape

    spans = plan.elements
    start = plan.patient.start_date.toordinal()
    ends = [start + 1, plan.as_of.toordinal()]
    for s in spans:
        for day in (s.planned_start, s.planned_end, s.actual_start, s.actual_end):
            if day is not None:
                ends.append(day.toordinal())
        if s.planned_end is None and s.planned_start is not None:
            ends.append(s.planned_start.toordinal() + 45)  # room for the label of an open element
    end = max(ends)
    left, right, top = (200, 990, 24) if width >= 1000 else (140, width - 10, 24)
    labels = [_wrap_all(_short(s.title) + (f" (if {s.branch.split('→')[-1]})" if s.branch else ""),
                        22 if width >= 1000 else 20) for s in spans]
    heights = [26 if len(lines) <= 2 else 26 + 11 * (len(lines) - 2) for lines in labels]
    rows = [top + sum(heights[:n]) for n in range(len(spans))]
    height = top + sum(heights) + 46
    scale = (right - left) / max(1, end - start)

    def x(day: dt.date | int) -> float:
        ordinal = day if isinstance(day, int) else day.toordinal()
        return round(left + (ordinal - start) * scale, 1)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="timeline" viewBox="0 0 {width} {height}" '
           f'width="{width}" height="{height}" font-family="DejaVu Sans, Arial, sans-serif" role="img" '
           'aria-labelledby="timeline-title">',
           f'<title id="timeline-title">Timeline of the elements for {escape(plan.patient.id)}: planned and '
           f'actual dates</title>']
    # Axis: a tick on the first of every quarter (every year on long plans).
    first = dt.date.fromordinal(start)
    months = 3 if (end - start) < 4 * 366 else 12
    tick = dt.date(first.year, 1, 1)
    while tick.toordinal() <= end:
        if tick.toordinal() >= start:
            tx = x(tick)
            # A label near the right edge ends at its tick, so the drawing never cuts it.
            anchor = "end" if tx > width - 22 else "middle"
            out.append(f'<line x1="{tx}" y1="{top - 6}" x2="{tx}" y2="{height - 40}" stroke="#e5e7eb"/>'
                       f'<text x="{tx}" y="{top - 9}" font-size="9" text-anchor="{anchor}" fill="#555">'
                       f'{tick.year}-{tick.month:02d}</text>')
        month = tick.month - 1 + months
        tick = dt.date(tick.year + month // 12, month % 12 + 1, 1)
    for n, s in enumerate(spans):
        y = rows[n]
        fill, stroke, dash, ink = _STATE_STYLE.get(s.status, _OTHER_STYLE)
        lines = labels[n]
        first = 15 if len(lines) == 1 else 10
        out.append(f'<text x="{left - 6}" y="{y + first}" font-size="10" text-anchor="end" fill="{ink}">'
                   + "".join(f'<tspan x="{left - 6}" dy="{0 if i == 0 else 11}">{escape(line)}</tspan>'
                             for i, line in enumerate(lines)) + "</text>")
        dash_attr = f' stroke-dasharray="{dash or "5 3"}"' if s.branch else ""
        tip = (f"{s.title}: planned {_fmt_date(s.planned_start)} – {_fmt_date(s.planned_end) or 'open'}; "
               f"actual {_fmt_date(s.actual_start) or 'not started'} – {_fmt_date(s.actual_end) or 'not ended'}; "
               f"{s.status.replace('_', ' ')}")
        out.append(f'<g><title>{escape(tip)}</title>')
        if s.planned_start is not None and s.planned_end is not None:
            out.append(f'<rect x="{x(s.planned_start)}" y="{y + 3}" width="{max(1.5, x(s.planned_end.toordinal() + 1) - x(s.planned_start))}" '
                       f'height="8" fill="#fff" stroke="#333" stroke-width="1"{dash_attr}/>')
        elif s.planned_start is not None:
            px = x(s.planned_start)
            out.append(f'<polygon points="{px},{y + 3} {px + 8},{y + 7} {px},{y + 11}" fill="#fff" stroke="#333"/>'
                       f'<text x="{px + 12}" y="{y + 11}" font-size="9">from {s.planned_start.isoformat()}</text>')
        if s.actual_start is not None:
            stop = s.actual_end or min(plan.as_of, s.planned_end or plan.as_of)
            if stop >= s.actual_start:
                ax = x(s.actual_start)
                out.append(f'<rect x="{ax}" y="{y + 13}" width="{max(1.5, x(stop.toordinal() + 1) - ax)}" height="8" '
                           f'fill="{stroke}"/>')
        out.append("</g>")
    ax = x(plan.as_of)
    out.append(f'<line x1="{ax}" y1="{top - 4}" x2="{ax}" y2="{height - 40}" stroke="#b91c1c" '
               f'stroke-dasharray="4 2" stroke-width="1.2"/>')
    out.append(f'<text x="{ax + 3}" y="{height - 42}" font-size="9" fill="#b91c1c">as of {plan.as_of.isoformat()}</text>')
    ly = height - 22
    out.append(f'<rect x="{left}" y="{ly}" width="24" height="8" fill="#fff" stroke="#333"/>'
               f'<text x="{left + 30}" y="{ly + 8}" font-size="9">planned</text>'
               f'<rect x="{left + 90}" y="{ly}" width="24" height="8" fill="#065f46"/>'
               f'<text x="{left + 120}" y="{ly + 8}" font-size="9">actual (so far)</text>'
               f'<rect x="{left + 220}" y="{ly}" width="24" height="8" fill="#fff" stroke="#333" '
               f'stroke-dasharray="5 3"/><text x="{left + 250}" y="{ly + 8}" font-size="9">on a pending branch</text>'
               f'<line x1="{left + 370}" y1="{ly - 2}" x2="{left + 370}" y2="{ly + 10}" stroke="#b91c1c" '
               f'stroke-dasharray="4 2"/><text x="{left + 376}" y="{ly + 8}" font-size="9">plan as of</text>')
    out.append("</svg>")
    return Markup("".join(out))
