"""A patient's dated plan: replay what happened, project the rest, compute the doses.

The pipeline for one patient:

1. facts from the patient file (results recorded up to ``as_of``), derived facts
   (prednisone response from the day-8 blast count), eligibility, risk group;
2. replay of the recorded events through the protocol's shared ``transitions`` machine,
   which rejects what the protocol does not allow (e.g. HSCT when its rule is false);
3. projection of the remaining elements on the compiled transition table; a decision whose
   guard is *unknown* is reported as pending and every possible branch is projected;
4. items: each element's day template walked on integer ordinals, with doses computed once
   per element and per change of the inputs (a new measurement, a birthday), not per item.

Dates are ``datetime.date`` only at the edges (``Item.date``, JSON, documents).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
import os
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from functools import partial
from operator import itemgetter
from typing import Any, NamedTuple

from transitions import MachineError

from ._dose import DoseResult, ModifiedDose, fmt_amount, mosteller
from ._errors import DefinitionError, IneligibleError, PatientError, Problem
from ._growth import check_measurement
from ._io import format_loc
from ._loading import dumps, load_patient, load_protocol
from ._machine import OUTCOMES, Edge, Protocol, Slot, bag_slot
from ._models import Event, Measurement, Patient
from ._rules import RiskResult, add_months, birthday, completed_months, depends_on, explain, patient_facts

__all__ = ["Decision", "DoseResult", "ElementSpan", "Item", "Plan", "mosteller", "plan", "risk"]

#: Patient fields that hold the facts an eligibility rule reads (to name the field in errors).
_FIELD_OF_FACT = {
    "age_at_diagnosis_days": "birth_date", "age_at_diagnosis_months": "birth_date",
    "age_at_diagnosis_years": "birth_date", "day8_blasts_per_ul": "day8_blasts_per_ul",
}


# --------------------------------------------------------------------------- plan records


class Item(NamedTuple):
    """One dated administration, assessment or infusion-bag change of the plan.

    ``status``: ``given`` or ``omitted`` (recorded for this item), ``done`` (its element's
    completion, or its result, is recorded), ``planned``, ``overdue`` (an assessment or an item
    with a window, past due in the element under way with nothing recorded), ``unrecorded``
    (another past item of the element under way), ``held`` (its element is on hold) or
    ``pending_decision`` (on a branch of a decision that waits for a result).
    ``branch`` names that branch (``pre_octadad→octadad``), None on the certain path.
    ``note`` says what changed it: a delay, a hold, a dose modification, the dose given.
    """

    ordinal: int
    element_day: int
    study_day: int
    slot: Slot
    dose: DoseResult | None
    status: str
    branch: str | None
    note: str | None = None
    #: Why the planned date depends on a placeholder (it follows a placeholder length), if it does.
    dated: str | None = None

    @property
    def ref(self) -> str:
        """The item's reference for recording events: ``ELEMENT:SLOT@DAY``."""
        return f"{self.slot.element}:{self.slot.key}@{self.element_day}"

    @property
    def date(self) -> dt.date:
        """The planned date."""
        return dt.date.fromordinal(self.ordinal)

    @property
    def element(self) -> str:
        """Id of the element this item belongs to."""
        return self.slot.element

    @property
    def kind(self) -> str:
        """``administration`` or ``assessment``."""
        return self.slot.kind

    @property
    def name(self) -> str:
        """Drug or assessment name."""
        return self.slot.name

    @property
    def route(self) -> str | None:
        """Route of an administration (IV, PO, IT, ...); None for an assessment."""
        return self.slot.route

    @property
    def evidence(self) -> str:
        """Weakest evidence level of the numbers behind this item: its days and the parts of its
        dose used for this patient on this day (an applied placeholder age fraction counts)."""
        dose = self.dose
        return self.slot.evidence if dose is None else dose.evidence

    @property
    def unverified(self) -> bool:
        """True when the item's date, days or dose depend on a placeholder (shown as UNVERIFIED).
        A recorded item's date is a fact: only its dose can stay unverified."""
        return self.evidence == "placeholder" or (self.dated is not None and self.status not in _RECORDED)

    @property
    def unverified_reasons(self) -> tuple[str, ...]:
        """Why the item is unverified, in words (empty when it is not)."""
        dose = self.dose
        why: list[str] = []
        if dose is not None:
            why.extend(dose.unverified_reasons)
        elif self.slot.evidence == "placeholder":
            why.append("its days are a placeholder")
        if self.dated is not None and self.status not in _RECORDED:
            why.append(f"its date {self.dated}")
        return tuple(why)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the ``items`` of ``Plan.to_dict()``)."""
        slot = self.slot
        return {"date": dt.date.fromordinal(self.ordinal).isoformat(), "element": slot.element,
                "element_day": self.element_day, "study_day": self.study_day, "kind": slot.kind, "name": slot.name,
                "route": slot.route, "dose": None if self.dose is None else self.dose.to_dict(),
                "status": self.status, "evidence": self.evidence, "unverified": self.unverified,
                "unverified_reasons": list(self.unverified_reasons), "branch": self.branch,
                "ref": f"{slot.element}:{slot.key}@{self.element_day}", "note": self.note,
                "window": None if slot.window is None else {"before": slot.window[0], "after": slot.window[1]}}


_as_item = partial(tuple.__new__, Item)
_RECORDED = frozenset({"given", "omitted"})


@dataclass(slots=True)
class ElementSpan:
    """One element of the plan, planned versus actual.

    ``planned_start`` is when the element is due given what happened before it;
    ``status``: ``completed``, ``in_progress``, ``planned``, ``pending_decision`` or ``stopped``.
    """

    id: str
    title: str
    planned_start: dt.date | None
    planned_end: dt.date | None
    actual_start: dt.date | None = None
    actual_end: dt.date | None = None
    status: str = "planned"
    branch: str | None = None
    evidence: str = "published"
    note: str | None = None  # what moved it: a count gate, a hold, an interruption, a delay
    #: Why its planned dates depend on a placeholder (an earlier or its own placeholder length).
    unverified_reasons: tuple[str, ...] = ()

    @property
    def unverified(self) -> bool:
        """True when the element's planned start or end depends on a placeholder."""
        return bool(self.unverified_reasons)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        iso = _iso
        return {"id": self.id, "title": self.title, "planned_start": iso(self.planned_start),
                "planned_end": iso(self.planned_end), "actual_start": iso(self.actual_start),
                "actual_end": iso(self.actual_end), "status": self.status, "branch": self.branch,
                "evidence": self.evidence, "note": self.note, "unverified": self.unverified,
                "unverified_reasons": list(self.unverified_reasons)}


class Decision:
    """A decision point of the protocol (e.g. ``pre_octadad``: HSCT or OCTADAD).

    ``status``: ``recorded`` (taken by a recorded event), ``decided`` (known facts settle it),
    ``pending`` (waits for ``waiting_for``) or ``no_rule_applies``. ``branches`` lists each
    possible destination with its condition in words and how it evaluates now (True, False,
    or None for unknown); ``explanation`` spells the rules out against the patient's facts.
    """

    __slots__ = ("_edges", "_facts", "at", "branch", "date", "depends_on", "id", "outcome", "status",
                 "waiting_for")

    def __init__(self, edges: tuple[Edge, ...], chosen: Edge | None, status: str, date: dt.date | None,
                 facts: dict[str, Any], branch: str | None) -> None:
        self._edges = edges
        self._facts = dict(facts)
        self.id = edges[0].decision
        self.at = edges[0].source
        self.status = status
        self.outcome = None if chosen is None else chosen.dest
        self.date = date
        self.branch = branch
        self.depends_on = tuple(dict.fromkeys(k for e in edges for k in e.depends_on))
        self.waiting_for = tuple(k for k in self.depends_on if k not in facts) if status == "pending" else ()

    @property
    def branches(self) -> list[dict[str, Any]]:
        """``[{"to", "when", "now"}]`` for every edge of the decision, in order."""
        f = self._facts
        return [{"to": e.dest, "when": e.text, "now": True if e.guard is None else e.guard(f)} for e in self._edges]

    @property
    def explanation(self) -> list[str]:
        """Each branch's rule, part by part, marked ✓ ✗ or ? against the patient's facts."""
        lines: list[str] = []
        for e in self._edges:
            if e.condition is None:
                lines.append(f"→ {e.dest} otherwise")
            else:
                lines.append(f"→ {e.dest} if {e.text}:")
                lines.extend("  " + line for line in explain(e.condition, self._facts))
        return lines

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"id": self.id, "at": self.at, "status": self.status, "depends_on": list(self.depends_on),
                "outcome": self.outcome, "date": _iso(self.date), "branches": self.branches,
                "waiting_for": list(self.waiting_for), "explanation": self.explanation, "branch": self.branch}


#: What the marks of every output mean (the ``legend`` of the plan JSON).
LEGEND = {
    "unverified": "UNVERIFIED: the value, or a value it depends on (a dose factor, an earlier element's length, "
                  "a threshold), is a placeholder not confirmed from a public source; check it against the "
                  "official protocol document before use",
    "evidence": "published: from a cited public source; derived: computed from published values; site: verified "
                "by the site (who, when, which section); placeholder: not confirmed",
    "dose": "amount per administration (per dose) or per day, how many administrations a day, and the working "
            "with every factor; the amount is rounded once, at the end",
}


def _iso(day: dt.date | None) -> str | None:
    return None if day is None else day.isoformat()


class Plan:
    """A patient's plan: risk, elements, dated items and decisions. Build it with :func:`plan`.

    ``items`` are :class:`Item` records in date order; ``rows`` holds the same records as
    plain tuples (the form the scheduler builds; ``items`` wraps them once, on first use).

    >>> p = plan("examples/patients/mr-on-time.yaml", as_of=dt.date(2026, 11, 21))  # doctest: +SKIP
    >>> p.risk.group, p.elements[0].id, p.items[0].name  # doctest: +SKIP
    ('MR', 'induction', 'Prednisone (prephase)')
    """

    __slots__ = ("_items", "as_of", "decisions", "deviations", "elements", "end_of_therapy", "facts", "outcome",
                 "patient", "protocol", "risk", "rows", "warnings")

    def __init__(self, patient: Patient, protocol: Protocol, as_of: dt.date, risk: RiskResult,
                 elements: list[ElementSpan], rows: list[tuple[Any, ...]], decisions: list[Decision],
                 warnings: list[str], end_of_therapy: dt.date | None, outcome: tuple[str, dt.date] | None,
                 facts: dict[str, Any], deviations: list[dict[str, Any]] | None = None) -> None:
        self.patient = patient
        self.protocol = protocol
        self.as_of = as_of
        self.risk = risk
        self.elements = elements
        self.rows = rows
        self.decisions = decisions
        self.warnings = warnings
        self.end_of_therapy = end_of_therapy
        self.outcome = outcome
        self.facts = facts
        #: Protocol deviations and flags, in date order: ``{"date", "element", "item", "kind",
        #: "message"}`` with kind ``out_of_window``, ``overdue``, ``weight_change``, ``count_gate``,
        #: ``dose_above_plan`` or ``dose_below_plan`` (beyond the dose tolerance).
        self.deviations = deviations or []
        self._items: list[Item] | None = None

    @property
    def items(self) -> list[Item]:
        """Every dated administration and assessment, in date order."""
        if self._items is None:
            self._items = list(map(_as_item, self.rows))
        return self._items

    def to_dict(self) -> dict[str, Any]:
        """The plan as JSON-ready data (the format of ``protocol plan --format json``)."""
        p = self.protocol
        return {
            "patient": self.patient.id,
            "protocol": {"id": p.id, "version": p.version, "title": p.definition.title,
                         "status": p.definition.status, "sha256": getattr(p, "sha256", None),
                         "origin": getattr(p, "origin", None), "provenance": getattr(p, "provenance", None)},
            "as_of": self.as_of.isoformat(),
            "risk": self.risk.to_dict(),
            "end_of_therapy": _iso(self.end_of_therapy),
            "outcome": None if self.outcome is None else {"type": self.outcome[0], "date": self.outcome[1].isoformat()},
            "elements": [e.to_dict() for e in self.elements],
            "items": [i.to_dict() for i in self.items],
            "decisions": [d.to_dict() for d in self.decisions],
            "deviations": list(self.deviations),
            "warnings": list(self.warnings),
            "legend": LEGEND,
        }

    def to_json(self) -> str:
        """The plan as JSON text (ISO 8601 dates)."""
        return dumps(self.to_dict())

    def to_csv(self) -> str:
        """One row per item, spreadsheet-friendly, ISO dates."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["date", "element", "element_day", "study_day", "kind", "name", "route", "dose", "dose_amount",
                    "dose_unit", "dose_per", "frequency", "administrations_per_day", "dose_working", "status",
                    "evidence", "unverified", "branch", "ref", "note"])
        for i in self.items:
            d = i.dose
            why = i.unverified_reasons if i.unverified else ()
            w.writerow([i.date.isoformat(), i.slot.element, i.element_day, i.study_day, i.slot.kind, i.slot.name,
                        i.slot.route or "", "" if d is None else d.text,
                        "" if d is None or d.amount is None else d.amount, "" if d is None else d.unit,
                        "" if d is None else d.per, i.slot.frequency or "",
                        "" if d is None or d.administrations_per_day is None else d.administrations_per_day,
                        "" if d is None else d.working, i.status, i.evidence,
                        f"UNVERIFIED: {'; '.join(why)}" if i.unverified else "", i.branch or "", i.ref,
                        i.note or ""])
        return buf.getvalue()

    @property
    def pending(self) -> list[Decision]:
        """Decisions waiting for a result."""
        return [d for d in self.decisions if d.status == "pending"]


# --------------------------------------------------------------------------- building


#: Doses are recomputed within an element when the weight has changed by more than this
#: fraction since the measurement they were computed from (the ±10 % re-check of chemotherapy
#: order entry, anchors.md §1.9); otherwise only at each element start.
WEIGHT_CHANGE = 0.10


class _Context:
    """Per-patient inputs on integer days, shared by replay and projection."""

    __slots__ = ("age_banded", "age_months", "birth", "birthdays", "bsa", "flags", "horizon", "m_ords",
                 "measurements", "month_points", "results", "t0", "weights")

    def __init__(self, protocol: Protocol, patient: Patient, as_of_ord: int, horizon: int) -> None:
        self.t0 = patient.start_date.toordinal()
        ms = sorted((m for m in patient.measurements if m.date.toordinal() <= as_of_ord), key=lambda m: m.date)
        self.measurements = ms
        self.m_ords = [m.date.toordinal() for m in ms]
        self.weights = [m.weight_kg for m in ms]
        # Unrounded (issue 11): rounding the BSA first moved infant doses by up to 1.5 %.
        self.bsa = [mosteller(m.height_cm, m.weight_kg) for m in ms]
        # Ages only matter for age-banded doses: birthdays up to the end of the plan.
        self.birth = patient.birth_date
        self.birthdays = [self.birth.toordinal()]
        self.age_banded = protocol.age_banded
        # Age-fraction doses change on the days the child reaches each limit (6, 12 months...).
        self.age_months = bool(protocol.age_months)
        self.month_points = sorted(add_months(self.birth, n).toordinal() for n in protocol.age_months)
        self.horizon = 0
        self.cover(horizon)
        self.results = {r.timepoint for r in patient.mrd if r.date.toordinal() <= as_of_ord}
        self.flags: list[tuple[int, str, str]] = []  # (ordinal, element, message): weight changes

    def cover(self, last: int) -> None:
        """Make sure every birthday up to ``last`` is known (ages only matter for age bands)."""
        if last <= self.horizon:
            return
        self.horizon = last
        if not self.age_banded:
            return
        k = len(self.birthdays)
        while (day := birthday(self.birth, k).toordinal()) <= last:
            self.birthdays.append(day)
            k += 1

    def doses_at(self, slots: tuple[Slot, ...], ordinal: int, m_index: int) -> list[DoseResult | None]:
        """Doses of every slot on ``ordinal`` from measurement ``m_index`` (-1: none)."""
        m, bsa = (self.measurements[m_index], self.bsa[m_index]) if m_index >= 0 else (None, None)
        age = bisect_right(self.birthdays, ordinal) - 1
        months = completed_months(self.birth, dt.date.fromordinal(ordinal)) if self.age_months else None
        return [None if s.dose is None else DoseResult(s, m, bsa, age, months) for s in slots]

    def change_points(self, element: str, start: int, last: int) -> tuple[int, list[tuple[int, int]]]:
        """The measurement used from ``start`` and the later points where doses are recomputed:
        a birthday (age bands), or a weight more than 10 % away from the one in use (flagged)."""
        m_ords = self.m_ords
        used = bisect_right(m_ords, start) - 1
        first = used
        points: list[tuple[int, int]] = []
        hi = bisect_right(m_ords, last)
        weights = self.weights
        for j in range(used + 1, hi):
            # A small tolerance: 7.4 → 8.14 kg is a change of exactly 10 %, not more.
            if used >= 0 and abs(weights[j] - weights[used]) <= WEIGHT_CHANGE * weights[used] + 1e-9:
                continue
            if used >= 0:
                change = (weights[j] - weights[used]) / weights[used]
                m0, m1 = self.measurements[used], self.measurements[j]
                self.flags.append((m_ords[j], element, f"weight {m1.weight_kg:g} kg on {m1.date} is {change:+.0%} "
                                   f"from the {m0.weight_kg:g} kg of {m0.date} used for the doses: doses recomputed "
                                   f"from {m1.date}"))
            points.append((m_ords[j], j))
            used = j
        if self.age_banded or self.age_months:
            b = self.birthdays if self.age_banded else []
            mp = self.month_points
            bdays = sorted({*b[bisect_right(b, start):bisect_right(b, last)],
                            *mp[bisect_right(mp, start):bisect_right(mp, last)]})
            if bdays:
                merged = sorted([*points, *((d, -2) for d in bdays)])
                points, cur = [], first
                for day, j in merged:
                    if j == -2:
                        points.append((day, cur))
                    else:
                        cur = j
                        points.append((day, j))
        return first, points

    def emit(self, element: Any, start: int, length: int, stop: int | None, status: str, branch: str | None,
             out: list[tuple[Any, ...]], dated: str | None = None) -> None:
        """Append the items of one element occurrence starting on ordinal ``start``.

        Rows are plain tuples in :class:`Item` field order, built by one comprehension per
        segment between changes of the dose inputs; doses are computed once per segment.
        """
        if length <= 0 or not element.slots:
            return
        days, ks, slots = element.fixed if length == element.length else element.template(length)
        base = start - element.first_day
        last = start + length - 1 if stop is None else min(stop, start + length - 1)
        if last > self.horizon:
            self.cover(last + 366)
        end = bisect_right(days, last - base)
        if end == 0:
            return
        all_slots = element.slots
        per_slot: list[str] | None = None
        if status != "pending_decision" and element.timepoints and not self.results.isdisjoint(element.timepoints):
            per_slot = [("done" if s.timepoint in self.results else status) for s in all_slots]
        m_first, cps = self.change_points(element.id, start, last)
        bounds = [0, *(bisect_left(days, cp - base, 0, end) for cp, _ in cps), end]
        ats = [(start, m_first), *cps]
        sbase = base - self.t0 + 1
        for lo, hi, (at, m_index) in zip(bounds, bounds[1:], ats, strict=False):
            if hi <= lo:
                continue
            dl = self.doses_at(all_slots, at, m_index)
            seg = zip(days[lo:hi], ks[lo:hi], slots[lo:hi])
            if per_slot is None:
                out.extend([(base + d, d, sbase + d, s, dl[k], status, branch, None, dated) for d, k, s in seg])
            else:
                out.extend([(base + d, d, sbase + d, s, dl[k], per_slot[k], branch, None, dated)
                            for d, k, s in seg])


class _Builder:
    """Replays a patient's events, then projects the rest of the plan."""

    #: Replay recorded moves by triggering the ``transitions`` machine instead of the compiled
    #: table (the reference the table is tested against: ``tests/test_machine.py``).
    via_machine = False

    def __init__(self, protocol: Protocol, patient: Patient, as_of: dt.date, today: dt.date | None = None) -> None:
        self.p = protocol
        self.patient = patient
        self.as_of = as_of
        #: Nothing can have happened after this day (an entry dated after it is refused).
        self.today = dt.date.today() if today is None else today
        self.name = patient._source
        self.doc = patient._lines
        self.problems: list[Problem] = []
        self.warnings: list[str] = []
        self.elements: list[ElementSpan] = []
        self.rows: list[tuple[Any, ...]] = []
        self.decisions: list[Decision] = []
        self.outcome: tuple[str, dt.date] | None = None
        # The end of therapy is fixed from its anchor: the diagnosis date, the treatment start,
        # or (element_start) the start of an element, set when the plan reaches it.
        self.eot: int | None = None
        if protocol.eot_days is not None and protocol.eot_anchor != "element_start":
            eot_anchor = patient.diagnosis_date if protocol.eot_anchor == "diagnosis" else patient.start_date
            self.eot = self.eot_from(eot_anchor.toordinal())
        horizon = max(self.eot or 0, as_of.toordinal()) + 366
        self.ctx = _Context(protocol, patient, as_of.toordinal(), horizon)
        self.as_of_ord = as_of.toordinal()
        self.deviations: list[tuple[int, str, str, str, str]] = []  # (ordinal, element, item, kind, message)
        self.by_element: dict[str, list[tuple[int, Event]]] = {}  # events that adjust an element's items
        self.bag_hours: dict[str, tuple[int, int]] = {}  # element -> (event index, hours chosen)
        self.consumed: set[int] = set()
        self.dating: str | None = None  # why the element being emitted has placeholder-dependent dates
        self.end_reason: str | None = None  # why the last closed element's end depends on a placeholder
        self.adjusted = False
        self.counts = sorted((c for c in patient.counts if c.date.toordinal() <= self.as_of_ord),
                             key=lambda c: c.date)
        self._row_index: tuple[list[list[Any]] | None, dict[tuple[str, int], list[list[Any]]]] = (None, {})

    # -- problems -------------------------------------------------------------------

    def problem(self, loc: tuple[Any, ...], message: str) -> None:
        line = self.doc.line_of(loc) if self.doc is not None else None
        self.problems.append(Problem(self.name, format_loc(loc), message, line))

    # -- facts ----------------------------------------------------------------------

    def eot_from(self, anchor: int) -> int:
        """The last day of therapy from the anchor's ordinal: N weeks (anchor + 7N − 1) or N
        calendar years (the anchor's date N years on, minus a day)."""
        years = self.p.eot_years
        if years is not None:
            return add_months(dt.date.fromordinal(anchor), 12 * years).toordinal() - 1
        return anchor + self.p.eot_days - 1  # type: ignore[operator]

    def check_recorded(self) -> None:
        """Refuse what cannot have happened (a date after today) or cannot be a child's
        measurement (WHO implausible limits, grams for kilograms, a BSA outside 0.1-2.5 m²), and
        warn about measurements beyond ±3 z (issue 11; clinical-facts §10)."""
        patient, today = self.patient, self.today
        late = f"on or before today ({today})"
        for name in ("birth_date", "diagnosis_date"):
            value = getattr(patient, name, None)
            if isinstance(value, dt.date) and value > today:
                self.problem((name,), f"expected a date {late}, got {value}")
        for field_, records in (("events", patient.events), ("measurements", patient.measurements),
                                ("mrd", patient.mrd), ("counts", patient.counts)):
            for i, r in enumerate(records):
                if r.date > today:
                    what = "an entry cannot be dated after the day it is recorded"
                    self.problem((field_, i, "date"), f"expected a date {late} ({what}), got {r.date}")
        birth = patient.birth_date
        for i, m in enumerate(patient.measurements):
            if m.date < birth:
                continue
            for f in check_measurement(birth, patient.sex, m.date, m.height_cm, m.weight_kg):
                if f.refused:
                    self.problem(("measurements", i, f.field), f.message)
                else:
                    self.warnings.append(f"measurements[{i}]: {f.message}")

    def facts(self) -> tuple[dict[str, Any], RiskResult]:
        p, patient = self.p, self.patient
        self.check_recorded()
        facts = patient_facts(patient, self.as_of)
        for i, r in enumerate(patient.mrd):
            if r.timepoint not in p.timepoints:
                self.problem(("mrd", i, "timepoint"), f"expected a time point of {p.id} "
                             f"({', '.join(p.timepoints)}), got {r.timepoint!r}")
        seen_arms: dict[str, int] = {}
        for i, ev in enumerate(patient.events):
            if ev.type != "randomised":
                continue
            arms = p.randomisations.get(str(ev.randomisation))
            if arms is None:
                self.problem(("events", i, "randomisation"), f"expected a randomisation of {p.id} "
                             f"({', '.join(p.randomisations) or 'none'}), got {ev.randomisation!r}")
            elif ev.arm not in arms:
                self.problem(("events", i, "arm"), f"expected an arm of {ev.randomisation} ({', '.join(arms)}), "
                             f"got {ev.arm!r}")
            elif str(ev.randomisation) in seen_arms:
                self.problem(("events", i, "randomisation"), f"{ev.randomisation} is already recorded in "
                             f"events[{seen_arms[str(ev.randomisation)]}]: a patient is randomised once")
            seen_arms.setdefault(str(ev.randomisation), i)
        for fact, given, derived in p.rules.derive(facts):
            self.problem((fact,), f"given as {given!r}, but the protocol's rule gives {derived!r} from the "
                         f"recorded values (e.g. day8_blasts_per_ul); correct one of them")
        failed = p.rules.ineligible(facts)
        if failed:
            raise IneligibleError([
                Problem(self.name, _eligibility_field(rule.when), f"{rule.message} ({'; '.join(s.strip() for s in lines)})",
                        self.doc.line_of((_eligibility_field(rule.when),)) if self.doc is not None else None)
                for rule, lines in failed
            ])
        risk = p.rules.stratify(facts)
        if risk.group is not None:
            facts["risk_group"] = risk.group
        elif risk.status == "unassigned":
            self.warnings.append("no risk-group rule applies to this patient: decisions that use the risk group "
                                 "stay pending")
        return facts, risk

    # -- replay ---------------------------------------------------------------------

    def build(self) -> Plan:
        facts, risk = self.facts()
        if self.problems:
            raise PatientError(self.problems)
        p = self.p
        t0 = self.ctx.t0
        cur = _Open(p.initial, t0)
        cursor = p.cursor(facts)
        as_of_ord = self.as_of.toordinal()
        order = sorted(((i, e) for i, e in enumerate(self.patient.events) if e.date.toordinal() <= as_of_ord),
                       key=lambda ie: ie[1].date)
        self.index_adjustments(order)
        for i, ev in order:
            if ev.type in _ADJUSTING:
                continue
            loc = ("events", i)
            when = ev.date.toordinal()
            if self.outcome is not None:
                self.problem((*loc, "type"), f"{ev.type} on {ev.date} comes after the patient left the protocol "
                             f"({self.outcome[0]} on {self.outcome[1]})")
                continue
            if when < t0:
                self.problem((*loc, "date"), f"expected a date on or after treatment start "
                             f"{self.patient.start_date}, got {ev.date}")
                continue
            if ev.type == "randomised":
                continue  # the arm is a fact (see patient_facts); guards read it
            if ev.type in OUTCOMES:
                if self.via_machine:  # an outcome ends any element: the table needs no check
                    cursor.state = cur.id
                    p.machine.events[ev.type].trigger(cursor)
                self.close(cur, "stopped", stop=when - 1)
                self.outcome = (ev.type, ev.date)
                continue
            target = "hsct" if ev.type == "hsct" else ev.element
            if target not in p.elements:
                field_ = "type" if ev.type == "hsct" else "element"
                self.problem((*loc, field_), f"expected an element of {p.id} ({', '.join(p.elements)}), "
                             f"got {target!r}")
                continue
            if ev.type == "element_completed":
                later = next((e.date for _, e in order if e.type == "element_started" and e.element == target
                              and e.date > ev.date), None)
                if later is not None and (target != cur.id or cur.actual_start is None):
                    self.problem((*loc, "date"), f"completion on {ev.date} is before the start of {target!r} "
                                 f"on {later}")
                elif target != cur.id:
                    self.problem((*loc, "element"), f"completes {target!r}, but the current element is {cur.id!r}")
                elif cur.actual_start is None:
                    self.problem((*loc, "element"), f"{target!r} completed before it was started: record "
                                 f"element_started first")
                elif cur.actual_end is not None:
                    self.problem((*loc, "element"), f"{target!r} is already completed on "
                                 f"{dt.date.fromordinal(cur.actual_end)}")
                elif when < cur.actual_start:
                    self.problem((*loc, "date"), f"completion on {ev.date} is before the start on "
                                 f"{dt.date.fromordinal(cur.actual_start)}")
                else:
                    cur.actual_end = when
                continue
            # element_started (or hsct): the current element, or a move to the next one.
            if ev.bag_hours is not None:
                self.choose_bag(i, ev, target)
            if target == cur.id:
                if cur.actual_start is not None:
                    self.problem((*loc, "element"), f"{target!r} already started on "
                                 f"{dt.date.fromordinal(cur.actual_start)}")
                else:
                    cur.actual_start = when
                continue
            nxt = self.advance(cur, target, when, cursor, facts, (*loc, "type" if ev.type == "hsct" else "element"))
            if nxt is not None:
                cur = nxt
        if self.problems:
            raise PatientError(self.problems)
        if self.outcome is None:
            self.project(cur, facts, branch=None)
        if self.outcome is not None:
            left = self.outcome[1]
            for events in self.by_element.values():
                for i, ev in events:
                    if ev.date > left:
                        self.consumed.add(i)
                        self.problem(("events", i, "date"), f"{ev.type} on {ev.date} comes after the patient left "
                                     f"the protocol ({self.outcome[0]} on {left})")
        for events in self.by_element.values():
            for i, ev in events:
                if i not in self.consumed:
                    where = ("item", ev.item) if ev.item is not None else ("element", ev.element)
                    self.problem(("events", i, where[0]), f"{where[1]!r} is not on this patient's plan (its element "
                                 f"is not reached, or the patient left the protocol before it)")
        if self.problems:
            raise PatientError(self.problems)
        for ordinal, element, message in self.ctx.flags:
            self.deviations.append((ordinal, element, "", "weight_change", message))
        self.deviations.sort(key=itemgetter(0))
        deviations = [{"date": dt.date.fromordinal(o).isoformat(), "element": e, "item": ref or None, "kind": k,
                       "message": m} for o, e, ref, k, m in self.deviations]
        rows = self._sorted_rows()
        self.warn_infant_doses(rows)
        return Plan(self.patient, p, self.as_of, risk, self.elements, rows, self.decisions,
                    self.warnings, None if self.eot is None else dt.date.fromordinal(self.eot), self.outcome, facts,
                    deviations)

    def warn_infant_doses(self, rows: list[tuple[Any, ...]]) -> None:
        """Warn, once, about per-m² doses planned before the first birthday whose definition has
        no infant rule: no age fraction, no weight switch, no sourced statement that the full
        dose applies. BSA dosing under 10 kg can overdose (clinical-facts §3.10 [43]): never
        leave that silent."""
        first_birthday = add_months(self.patient.birth_date, 12).toordinal()
        names: dict[str, None] = {}
        for row in rows:
            if row[0] >= first_birthday:
                break
            d = row[3].dose
            if (d is not None and d.basis == "per_m2" and d.age_fractions is None and d.weight_switch is None
                    and d.infant_full_dose is None and row[5] not in ("given", "omitted")):
                names[row[3].name] = None
        if names:
            self.warnings.append(
                f"per-m² doses planned before the first birthday with no infant rule in the definition (an age "
                f"fraction, a weight switch, or a sourced statement that the full dose applies): "
                f"{', '.join(names)}. Check each against the protocol document: BSA dosing under 10 kg can "
                f"overdose.")

    def _sorted_rows(self) -> list[tuple[Any, ...]]:
        rows = self.rows
        if self.adjusted or any(d.status == "pending" for d in self.decisions):
            rows.sort(key=itemgetter(0))  # branches interleave in time; the sort is stable
        return rows

    def advance(self, cur: _Open, target: str, when: int, cursor: Any, facts: dict[str, Any],
                field: tuple[Any, ...]) -> _Open | None:
        """Move from ``cur`` to ``target`` on a recorded start, through the protocol's machine."""
        loc = field[:-1]
        p = self.p
        el = p.elements[cur.id]
        edges = p.table.get(cur.id, ())
        edge = next((e for e in edges if e.dest == target), None)
        if edge is None:
            allowed = ", ".join(e.dest for e in edges) or "nothing (it is final)"
            self.problem(field, f"{target!r} cannot follow {cur.id!r}: the protocol goes from "
                         f"{cur.id!r} to {allowed}")
            return None
        last = cur.actual_end if cur.actual_end is not None else cur.actual_start
        if last is not None and when <= last:
            self.problem((*loc, "date"), f"{target!r} starts on {dt.date.fromordinal(when)}, not after "
                         f"{cur.id!r} {'ended' if cur.actual_end is not None else 'started'} on "
                         f"{dt.date.fromordinal(last)}")
            return None
        if p.choices:
            # A clinical choice (another cycle, or not) is recorded by the start it leads to.
            keys = {k for e in edges for k in e.depends_on
                    if k.startswith("arm:") and k[4:] in p.choices and k not in facts}
            if keys:
                domains = {k: frozenset(p.randomisations[k[4:]]) for k in keys}
                _, narrowed = _narrow(edges, [(e, None) for e in edges], facts, domains)
                for k, values in narrowed.get(id(edge), {}).items():
                    if k in keys and len(values) == 1:
                        facts[k] = next(iter(values))
        if self.via_machine:
            cursor.state = cur.id
            try:
                moved = p.machine.events[f"start_{target}"].trigger(cursor)
            except MachineError:  # pragma: no cover - the table and the machine come from one definition
                moved = False
        else:
            moved = p.allows(cur.id, target, facts)
        if not moved:
            index = edges.index(edge)
            holds = [e for e in edges[:index] if e.guard is not None and e.guard(facts) is True]
            rule = holds[0] if holds else edge
            assert rule.condition is not None
            verdict = f"the rule for {rule.dest} holds" if holds else f"its rule ({edge.text}) does not hold"
            self.problem(field, f"{target!r} on {dt.date.fromordinal(when)} contradicts the protocol's rule for "
                         f"the {edge.decision} decision: {verdict}: "
                         + "; ".join(s.strip() for s in explain(rule.condition, facts))
                         + ". If the patient left the protocol path, record an off_protocol event with the reason")
            return None
        if len(edges) > 1 or edge.guard is not None:
            self.decide(edges, edge, "recorded", dt.date.fromordinal(when), facts, None)
            result = None if edge.guard is None else edge.guard(facts)
            unknown = [e for e in edges[: edges.index(edge) + (1 if edge.guard is not None else 0)]
                       if e.guard is not None and e.guard(facts) is None]
            if result is None and unknown:
                waiting = sorted({k for e in unknown for k in e.depends_on if k not in facts})
                self.warnings.append(f"decision {edge.decision}: {target} was started on "
                                     f"{dt.date.fromordinal(when)} before {', '.join(waiting)} was recorded")
        end = self.close(cur, "completed", stop=cur.actual_end if cur.actual_end is not None else when - 1)
        gap = p.elements[target].gap
        planned = (end + 1 + gap) if end is not None else when
        if end is not None:
            self.check_gate(target, end, when)
        nxt = _Open(target, planned)
        nxt.actual_start = when
        return nxt

    # -- projection -----------------------------------------------------------------

    def close(self, cur: _Open, status: str, branch: str | None = None, stop: int | None = None) -> int | None:
        """Record the span of ``cur`` and emit its items up to ordinal ``stop`` (inclusive).

        Returns the element's last day: the recorded end, else the planned end moved by the
        recorded holds, interruptions and delays (None for a final element without length).
        """
        el = self.p.elements[cur.id]
        start = cur.actual_start if cur.actual_start is not None else cur.planned_start
        if el.id == self.p.eot_anchor_element and self.eot is None and self.p.eot_days is not None:
            self.eot = self.eot_from(start)
        length = self.length_of(el, start)
        # Provenance of the dates (issue 11): a projected start follows the earlier elements'
        # lengths; a placeholder among them makes this element's dates unverified too.
        dated = None if cur.actual_start is not None else cur.dated
        gap = el.model.start.gap_days if el.model.start is not None else None
        if cur.actual_start is None and gap is not None and gap.evidence == "placeholder" and dated is None:
            dated = f"follows the placeholder gap before {el.id}"
        own = None
        if cur.actual_end is None and el.evidence == "placeholder" and not el.open_ended and length:
            own = f"follows the placeholder length of {el.id} ({length} days)"
        self.dating = dated
        self.end_reason = None if cur.actual_end is not None else (dated or own)
        # Items of a completed element count as done; a stopped element's later items are dropped.
        item_status = {"completed": "done", "pending_decision": "pending_decision"}.get(status, "planned")
        span = ElementSpan(el.id, el.title, dt.date.fromordinal(cur.planned_start), None,
                           None if cur.actual_start is None else dt.date.fromordinal(cur.actual_start),
                           None if cur.actual_end is None else dt.date.fromordinal(cur.actual_end), status, branch,
                           el.evidence, cur.note, tuple(f"its {w} date {r}" for w, r in
                                                         (("start", dated), ("end", dated or own)) if r))
        self.elements.append(span)
        if length is None:
            return cur.actual_end
        end = start + length - 1
        events = self.by_element.get(el.id)
        bag = self.bag_hours.get(el.id)
        rows = self.rows
        if events or (bag is not None and el.infusion is not None and bag[1] != el.infusion.default_hours):
            tmp, end, notes = self.adjust(el, start, length, item_status, branch, events or [], bag,
                                          cur.actual_start is not None, cur.actual_end)
            if stop is not None:  # what was recorded stays, even when dated after the element ended
                tmp = [r for r in tmp if r[0] <= stop or r[5] in ("given", "omitted")]
            if notes:
                span.note = "; ".join(filter(None, [span.note, *notes]))
            mark = len(rows)
            rows.extend(map(tuple, tmp))
            self.adjusted = True
        else:
            mark = len(rows)
            self.ctx.emit(el, start, length, stop, item_status, branch, rows, dated)
        if not el.open_ended:
            span.planned_end = dt.date.fromordinal(end)
        elif self.eot is not None:
            span.planned_end = dt.date.fromordinal(self.eot)
        if status == "in_progress":
            self.mark_overdue(rows, mark)
        return cur.actual_end if cur.actual_end is not None else end

    def mark_overdue(self, rows: list[tuple[Any, ...]], mark: int) -> None:
        """Past items of the element under way with nothing recorded, as of the plan's date.

        An assessment (a sample, a marrow, a lumbar puncture) or an item with a window that is
        past its window is ``overdue``: a deviation to chase. Other administrations are
        ``unrecorded``: the element's recorded completion will count them as done.
        """
        today = self.as_of_ord
        for n in range(mark, len(rows)):
            r = rows[n]
            if r[5] != "planned" or r[0] >= today:
                continue
            slot = r[3]
            if slot.kind != "assessment" and slot.window is None:
                rows[n] = (*r[:5], "unrecorded", *r[6:])
                continue
            late = 0 if slot.window is None else slot.window[1]
            if r[0] + late < today:
                rows[n] = (*r[:5], "overdue", *r[6:])
                self.deviations.append((r[0], slot.element, f"{slot.element}:{slot.key}@{r[1]}", "overdue",
                                        f"{slot.name} due {dt.date.fromordinal(r[0])}"
                                        + (f" (window +{late} days)" if late else "") + ": nothing recorded"))

    # -- recorded changes to items -----------------------------------------------------

    def index_adjustments(self, order: list[tuple[int, Event]]) -> None:
        """Group the events that change an element's items by element, checking what can be
        checked before the plan exists (the element is known, it has an infusion...)."""
        p = self.p
        for i, ev in order:
            if ev.type not in _ADJUSTING:
                continue
            if ev.item is not None:
                element = ev.item.partition(":")[0]
                field_ = "item"
            else:
                element, field_ = str(ev.element), "element"
            el = p.elements.get(element)
            if el is None:
                self.problem(("events", i, field_), f"expected an element of {p.id} ({', '.join(p.elements)}), got "
                             f"{element!r}" + (f" in {ev.item!r}" if ev.item else ""))
                continue
            if ev.type.startswith("infusion_") and el.infusion is None:
                self.problem(("events", i, "element"), f"{element!r} has no continuous infusion with interruption "
                             f"rules: record element_held / element_resumed instead")
                continue
            if ev.type == "infusion_resumed" and ev.bag_hours is not None:
                self.choose_bag(i, ev, element, store=False)
            self.by_element.setdefault(element, []).append((i, ev))

    def choose_bag(self, i: int, ev: Event, element: str, store: bool = True) -> None:
        """Check a recorded bag duration against the definition's bags and their weight limits;
        ``store``: it applies from the element's start (not only from a resumption)."""
        el = self.p.elements.get(element)
        inf = None if el is None else el.infusion
        if inf is None:
            self.problem(("events", i, "bag_hours"), f"{element!r} has no continuous infusion with bag rules")
            return
        hours = int(ev.bag_hours or 0)
        if hours not in inf.bags:
            self.problem(("events", i, "bag_hours"), f"expected a bag duration of the definition "
                         f"({', '.join(f'{h} h' for h in inf.bags)}), got {hours}")
            return
        min_kg = inf.bags[hours]
        if min_kg is not None:
            ctx = self.ctx
            k = bisect_right(ctx.m_ords, ev.date.toordinal()) - 1
            if k < 0 or ctx.weights[k] < min_kg:
                got = "no weight recorded" if k < 0 else f"{ctx.weights[k]:g} kg on {ctx.measurements[k].date}"
                self.problem(("events", i, "bag_hours"), f"a {hours} h bag is not for patients under {min_kg:g} kg "
                             f"(label), got {got}")
                return
        if store:
            self.bag_hours[element] = (i, hours)

    def gated(self, element: str, prev_end: int) -> _Open:
        """The next element, starting after ``prev_end`` plus its gap, or later when its
        start gate's blood counts have not recovered ("day X or recovery, whichever is later")."""
        el = self.p.elements[element]
        planned = prev_end + 1 + el.gap
        gate = el.gate
        if gate is None:
            return _Open(element, planned)
        if gate.unknown:
            return _Open(element, planned, f"starts when counts recover ({gate.text}): the thresholds are not "
                         f"specified in the definition (placeholder); projected on the earliest date",
                         f"is projected past a count gate whose thresholds are placeholders ({element})")
        since = [c for c in self.counts if c.date.toordinal() >= prev_end]
        for c in since:
            if _recovered(gate, c):
                day = max(planned, c.date.toordinal())
                return _Open(element, day, f"counts recovered on {c.date} ({gate.text})")
        if not since:
            return _Open(element, planned, f"starts when counts recover ({gate.text}): projected on the earliest "
                         f"date until counts are recorded")
        last = since[-1]
        day = max(planned, self.as_of_ord + 1)
        return _Open(element, day, f"waiting for counts to recover ({gate.text}); last count {last.date}: "
                     f"{_count_text(last)}; projected from the day after {self.as_of}")

    def check_gate(self, element: str, prev_end: int, when: int) -> None:
        """A recorded start before the counts recovered is a deviation (when counts were recorded)."""
        gate = self.p.elements[element].gate
        if gate is None or gate.unknown:
            return
        since = [c for c in self.counts if prev_end <= c.date.toordinal() <= when]
        if since and not any(_recovered(gate, c) for c in since):
            last = since[-1]
            self.deviations.append((when, element, "", "count_gate",
                                    f"{element} started on {dt.date.fromordinal(when)} before counts recovered "
                                    f"({gate.text}); last count {last.date}: {_count_text(last)}"))

    def adjust(self, el: Any, start: int, length: int, status: str, branch: str | None,
               events: list[tuple[int, Event]], bag: tuple[int, int] | None, started: bool = True,
               ended: int | None = None) -> tuple[list[list[Any]], int, list[str]]:
        """The items of an element with recorded changes, applied in date order.

        Returns the rows (as lists), the element's last day and notes for its span.
        Delay scopes follow chemotherapy order entry (anchors.md §1.9): ``item`` moves one
        item; ``element`` also the element's later items (its end moves only as far as they
        need); ``all`` also moves the element's end, so everything after it moves too.
        ``started``: the element's start is recorded (what happened in it can be recorded);
        ``ended``: its recorded last day (a pause still open then ended with it).
        """
        ctx = self.ctx
        tmp: list[tuple[Any, ...]] = []
        ctx.emit(el, start, length, None, status, branch, tmp, self.dating)
        rows = [list(r) for r in tmp]
        end = start + length - 1
        notes: list[str] = []
        inf = el.infusion
        hours = None if inf is None else (bag[1] if bag is not None else inf.default_hours)
        if inf is not None and bag is not None and bag[1] != inf.default_hours:
            self.consumed.add(bag[0])
            rows = self.rebag(el, rows, start, hours or 24, status=status)
        # id(row) -> (position of the delay that set its date, the pause's length the plan assumed
        # then): a delay recorded during a pause was relative to the plan as shown (the pause
        # ending the day after); the pause's resumption moves it only by what it lasted beyond that.
        pinned: dict[int, tuple[int, int]] = {}
        deferred: list[tuple[int, int, Event]] = []
        pause: tuple[int, int, str, int] | None = None  # (event index, ordinal, "hold" | "interruption", position)
        for position, (i, ev) in enumerate(sorted(events, key=lambda ie: (ie[1].date, ie[0]))):
            when = ev.date.toordinal()
            t = ev.type
            loc = ("events", i)
            if not started and t in ("item_given", "element_held", "element_resumed", "infusion_interrupted",
                                     "infusion_resumed"):
                self.consumed.add(i)
                if when < start:
                    field_, message = "date", (f"expected a date on or after the start of {el.id} "
                                               f"({dt.date.fromordinal(start)}), got {ev.date}")
                else:
                    field_, message = "type", (f"{el.id} has no recorded start: record element_started before "
                                               f"what happened in it ({t} on {ev.date})")
                self.problem((*loc, field_), message)
                continue
            if t in ("element_held", "infusion_interrupted"):
                kind = "hold" if t == "element_held" else "interruption"
                if pause is not None:
                    self.problem((*loc, "type"), f"{el.id} is already paused ({pause[2]} on "
                                 f"{dt.date.fromordinal(pause[1])}); record the resumption first")
                elif when < start:
                    self.problem((*loc, "date"), f"expected a date on or after the start of {el.id} "
                                 f"({dt.date.fromordinal(start)}), got {ev.date}")
                else:
                    pause = (i, when, kind, position)
                self.consumed.add(i)
                continue
            if t in ("element_resumed", "infusion_resumed"):
                self.consumed.add(i)
                kind = "hold" if t == "element_resumed" else "interruption"
                if pause is None or pause[2] != kind:
                    before = "element_held" if kind == "hold" else "infusion_interrupted"
                    self.problem((*loc, "type"), f"{t} without an earlier {before} for {el.id}")
                    continue
                if ev.bag_hours is not None:
                    hours = ev.bag_hours
                rows, end, note = self.resume(el, rows, start, end, pause, when, status, branch, hours, pinned)
                notes.append(note)
                pause = None
                continue
            row = self.find_row(rows, ev, i, el, report=False)
            self.consumed.add(i)
            if row is None:
                # Not there yet: an item the plan shows only once a pause is resolved (a bag
                # change re-planned from the resumption). Tried again at the end.
                deferred.append((position, i, ev))
                continue
            if t == "item_given":
                self.given(row, ev, i, start)
            elif t == "item_omitted":
                if row[5] in ("given", "omitted"):
                    self.problem((*loc, "item"), f"{_ref(row)} is already recorded as {row[5]}")
                    continue
                row[5] = "omitted"
                row[7] = _join(row[7], f"omitted on {ev.date}: {ev.reason}")
            elif t == "item_delayed":
                end = self.delay(el, rows, row, ev, i, end, pinned, position, pause)
            else:
                self.modify(rows, row, ev, i)
        if pause is not None and ended is None:
            # Still paused on the plan's date: project the resumption for tomorrow.
            tomorrow = self.as_of_ord + 1
            kind = pause[2]
            rows, end, note = self.resume(el, rows, start, end, pause, max(tomorrow, pause[1]), status, branch, hours,
                                          pinned, ongoing=True)
            notes.append(note)
            self.warnings.append(f"{el.id}: {note}")
            if kind == "hold":
                for r in rows:
                    if r[0] >= tomorrow and r[5] == "planned":
                        r[5] = "held"
        elif pause is not None:
            notes.append(f"{'on hold' if pause[2] == 'hold' else 'infusion interrupted'} from "
                         f"{dt.date.fromordinal(pause[1])} until its recorded end on {dt.date.fromordinal(ended)}")
        for position, i, ev in deferred:
            row = self.find_row(rows, ev, i, el)
            if row is None:
                continue
            if ev.type == "item_given":
                self.given(row, ev, i, start)
            elif ev.type == "item_omitted":
                if row[5] in ("given", "omitted"):
                    self.problem(("events", i, "item"), f"{_ref(row)} is already recorded as {row[5]}")
                    continue
                row[5] = "omitted"
                row[7] = _join(row[7], f"omitted on {ev.date}: {ev.reason}")
            elif ev.type == "item_delayed":
                end = self.delay(el, rows, row, ev, i, end, pinned, position)
            else:
                self.modify(rows, row, ev, i)
        rows.sort(key=itemgetter(0))
        if el.open_ended and self.eot is not None:
            if any(r[0] > self.eot for r in rows):
                notes.append(f"delays move items past the end of therapy on {dt.date.fromordinal(self.eot)}: they "
                             f"are dropped (the end of therapy stays anchored; the element is shortened)")
            rows = [r for r in rows if r[0] <= self.eot]
            end = self.eot
        elif rows:
            end = max(end, rows[-1][0])
        return rows, end, notes

    def resume(self, el: Any, rows: list[list[Any]], start: int, end: int, pause: tuple[int, int, str, int], when: int,
               status: str, branch: str | None, hours: int | None, pinned: dict[int, tuple[int, int]],
               ongoing: bool = False
               ) -> tuple[list[list[Any]], int, str]:
        """Apply a hold or an infusion interruption that ends on ``when``."""
        _, since, kind, began = pause
        gap = when - since
        d0, d1 = dt.date.fromordinal(since), dt.date.fromordinal(when)
        inf = el.infusion
        what = f"on hold from {d0}" if kind == "hold" else f"infusion interrupted from {d0}"
        until = f"; dates assume it resumes on {d1}" if ongoing else f" to {d1}"
        recorded = ("given", "omitted")
        if kind == "interruption" and inf is not None and gap > inf.max_interruption_days:
            # Label (clinical-facts §5.1): an interruption of more than 7 days starts a new cycle.
            kept = [r for r in rows if r[0] < since or r[5] in recorded]
            fresh: list[tuple[Any, ...]] = []
            cycle = el.length or (end - start + 1)
            self.ctx.emit(el, when, cycle, None, status, branch, fresh, self.dating)
            why = f"new cycle after a {gap}-day interruption"
            new = [list(r) for r in fresh]
            for r in new:
                r[7] = why
            if hours is not None and hours != inf.default_hours:
                new = self.rebag(el, new, when, hours, status=status, note=why)
            return (kept + new, when + cycle - 1,
                    f"{what}{until} ({gap} days, more than {inf.max_interruption_days}): a new cycle starts on {d1}")
        t0 = self.ctx.t0
        label = f"moved {gap} days by the {'hold' if kind == 'hold' else 'interruption'} from {d0}"
        for r in rows:
            pin = pinned.get(id(r))
            if pin is not None and pin[0] > began:
                extra = gap - pin[1]
                if extra > 0 and r[5] != "given":
                    r[0] += extra
                    r[2] = r[0] - t0 + 1
                    r[7] = _join(r[7], f"moved {extra} more days by the {'hold' if kind == 'hold' else 'interruption'}"
                                 f" from {d0}")
                continue
            if r[0] >= since and r[5] != "given":
                r[0] += gap
                r[2] = r[0] - t0 + 1
                r[7] = _join(r[7], label)
        if kind == "interruption" and inf is not None:
            rows = self.rebag(el, rows, when, hours or inf.default_hours, from_ord=when, status=status)
            note = (f"{what}{until} ({gap} days, at most {inf.max_interruption_days}): the cycle continues to "
                    f"{inf.last_day - inf.first_day + 1} infusion days; its end moves {gap} days")
        else:
            note = f"{what}{until}: later items and the end move {gap} days"
        return rows, end + gap, note

    def rebag(self, el: Any, rows: list[list[Any]], start: int, hours: int, from_ord: int | None = None,
              status: str = "planned", note: str | None = None) -> list[list[Any]]:
        """Replace the planned bag changes from ``from_ord`` (default: all) by a new bag every
        ``hours``, from ``start`` to the infusion's last day. Recorded bag changes stay."""
        inf = el.infusion
        bag_index = inf.bag_slot
        lo = start if from_ord is None else from_ord
        infusion_rows = sorted((r for r in rows if r[3].index == inf.slot), key=itemgetter(0))
        kept = [r for r in rows if r[3].index != bag_index or r[0] < lo or r[5] in ("given", "omitted")]
        if not infusion_rows:
            return kept
        last = infusion_rows[-1][0]
        admin = el.slots[inf.slot].source
        slot = bag_slot(el.id, bag_index, admin, hours, inf.first_day, inf.last_day, el.slots[bag_index].evidence)
        t0 = self.ctx.t0
        step = max(1, hours // 24)
        ords = [r[0] for r in infusion_rows]
        days = [r[1] for r in infusion_rows]
        taken = {r[1] for r in kept if r[3].index == bag_index}
        bags = []
        prev = max((d for d in taken), default=inf.first_day - 1)
        for o in range(lo, last + 1, step):
            # The bag starts the infusion day on or after it (element days stay unique and in order).
            k = bisect_left(ords, o)
            day = max(days[k] if k < len(days) else days[-1] + (o - ords[-1]), prev + 1)
            prev = day
            bags.append([o, day, o - t0 + 1, slot, None, status, None, note, self.dating])
        return sorted(kept + bags, key=itemgetter(0))

    def find_row(self, rows: list[list[Any]], ev: Event, i: int, el: Any, report: bool = True) -> list[Any] | None:
        """The row an item event names (``ELEMENT:SLOT@DAY``), or (``report``) a problem saying
        what exists."""
        assert ev.item is not None
        _, _, rest = ev.item.partition(":")
        key, _, day_s = rest.partition("@")
        day = int(day_s)
        # Indexed by (slot, element day), rebuilt only when ``rows`` is a new list (a re-bag or
        # a new cycle): a scan per event made a plan quadratic in what was recorded. Delays
        # change dates, never element days, so the index stays valid while the list does.
        indexed, index = self._row_index
        if indexed is not rows:
            index = {}
            for r in rows:
                index.setdefault((r[3].key, r[1]), []).append(r)
            self._row_index = (rows, index)
        matches = index.get((key, day), ())
        if matches:
            open_ = [r for r in matches if r[5] not in ("given", "omitted")]
            return (open_ or matches)[-1]
        slot = next((s for s in el.slots if s.key == key), None)
        if not report:
            return None
        if slot is None:
            self.problem(("events", i, "item"), f"expected an item of {el.id} ({', '.join(s.key for s in el.slots)}),"
                         f" got {key!r} in {ev.item!r}")
        else:
            self.problem(("events", i, "item"), f"{slot.name} is not planned on day {day} of {el.id} (its days: "
                         f"{slot.days_text}), got {ev.item!r}")
        return None

    def given(self, row: list[Any], ev: Event, i: int, start: int) -> None:
        when = ev.date.toordinal()
        slot = row[3]
        ref = _ref(row)
        if row[5] in ("given", "omitted"):
            self.problem(("events", i, "item"), f"{ref} is already recorded as {row[5]}")
            return
        if when < start:
            self.problem(("events", i, "date"), f"expected a date on or after the start of {slot.element} "
                         f"({dt.date.fromordinal(start)}), got {ev.date}")
            return
        dose = row[4]
        text = f"given on {ev.date}"
        if ev.dose is not None:
            if dose is None:
                self.problem(("events", i, "dose"), f"{slot.name} has no dose to record (it is not an administration "
                             f"with a dose)")
                return
            standard = self.standard_on(dose, when)
            tol, tol_evidence = self.p.dose_tolerance
            # The pharmacy rounds what it prepares: within ±tolerance of the computed dose is the
            # dose (issue 11); above the standard dose beyond it, refused; below the plan, a deviation.
            tolerance = f"{tol * 100:g} % tolerance" + (" (placeholder)" if tol_evidence == "placeholder" else "")
            if standard is not None and ev.dose > standard * (1 + tol) * (1 + 1e-9):
                self.problem(("events", i, "dose"), f"expected at most the standard dose {fmt_amount(standard)} "
                             f"{dose.unit} + {tolerance} = {fmt_amount(standard * (1 + tol))} {dose.unit} "
                             f"({dose.working}), got {ev.dose:g}")
                return
            text += f": {ev.dose:g} {dose.unit}"
            planned = dose.amount
            if planned is not None and ev.dose > planned * (1 + tol) * (1 + 1e-9):
                self.deviations.append((row[0], slot.element, ref, "dose_above_plan",
                                        f"{slot.name} given {ev.dose:g} {dose.unit}, above the modified dose "
                                        f"{dose.amount_text} (+{tolerance})"))
            elif planned is not None and ev.dose < planned * (1 - tol) * (1 - 1e-9):
                self.deviations.append((row[0], slot.element, ref, "dose_below_plan",
                                        f"{slot.name} given {ev.dose:g} {dose.unit}, below the planned dose "
                                        f"{dose.amount_text} (−{tolerance})"))
        window = slot.window
        if window is not None and not row[0] - window[0] <= when <= row[0] + window[1]:
            self.deviations.append((row[0], slot.element, ref, "out_of_window",
                                    f"{slot.name} due {dt.date.fromordinal(row[0])} (window -{window[0]}/+{window[1]} "
                                    f"days) was given on {ev.date}"))
            text += " (out of window)"
        elif when != row[0]:
            text += f" (due {dt.date.fromordinal(row[0])})"
        row[5] = "given"
        row[7] = _join(row[7], text)

    def standard_on(self, dose: DoseResult, when: int) -> float | None:
        """The most that may be given on ``when``: the standard dose (before any modification)
        from the inputs in use, or from the measurement in force the day before when the child
        was weighed that same day (the dose was prepared from the earlier weight)."""
        plain = DoseResult(dose.slot, dose.measurement, dose.bsa, dose.age_years, dose.age_months)
        amount = plain.amount
        m = dose.measurement
        if m is not None and m.date.toordinal() >= when:
            ctx = self.ctx
            k = bisect_right(ctx.m_ords, when - 1) - 1
            if k >= 0:
                before = DoseResult(dose.slot, ctx.measurements[k], ctx.bsa[k], dose.age_years, dose.age_months).amount
                if before is not None and (amount is None or before > amount):
                    amount = before
        return amount

    def delay(self, el: Any, rows: list[list[Any]], row: list[Any], ev: Event, i: int, end: int,
              pinned: dict[int, tuple[int, int]], position: int,
              pause: tuple[int, int, str, int] | None = None) -> int:
        due, to = row[0], ev.to.toordinal()  # type: ignore[union-attr]
        slot = row[3]
        if row[5] in ("given", "omitted"):
            self.problem(("events", i, "item"), f"{_ref(row)} is already recorded as {row[5]}: it cannot be delayed")
            return end
        # While paused, the plan shows the item moved by the pause as if it ended the day after
        # the delay was recorded: the delay must go later than that.
        shown = due
        if pause is not None and due >= pause[1]:
            shown = due + max(0, ev.date.toordinal() + 1 - pause[1])
        if to <= shown:
            if shown == due or pause is None:
                self.problem(("events", i, "to"), f"expected a date after the item's due date "
                             f"{dt.date.fromordinal(due)} (a delay moves an item later), got {ev.to}")
            else:
                self.problem(("events", i, "to"), f"expected a date after {dt.date.fromordinal(shown)}, the item's "
                             f"date as the plan showed it during the {pause[2]} from "
                             f"{dt.date.fromordinal(pause[1])} (a delay moves an item later), got {ev.to}")
            return end
        if ev.scope == "item":
            last = self.eot if el.open_ended and self.eot is not None else None
            later = [r[0] for r in rows if r[3].key == slot.key and r[0] > due and r is not row
                     and (last is None or r[0] <= last)]
            if later and to >= min(later):
                self.problem(("events", i, "to"), f"{ev.to} is on or after the next {slot.name} "
                             f"({dt.date.fromordinal(min(later))}): delay with scope element to move the later "
                             f"doses too")
                return end
        if ev.scope != "item":
            passed = [r for r in rows if r[3].key == slot.key and r[1] > row[1] and r[5] in ("given", "omitted")
                      and r[0] <= to]
            if passed:
                self.problem(("events", i, "to"), f"{ev.to} is on or after {_ref(passed[0])}, already recorded as "
                             f"{passed[0][5]} on {dt.date.fromordinal(passed[0][0])}: a delay cannot move an item "
                             f"past one already recorded")
                return end
        delta = to - due
        t0 = self.ctx.t0
        why = f"delayed {delta} days on {ev.date}: {ev.reason}"
        moved = [row] if ev.scope == "item" else [r for r in rows if r[0] >= due and r[5] not in ("given", "omitted")]
        assumed = 0 if pause is None else max(0, ev.date.toordinal() + 1 - pause[1])
        for r in moved:
            r[0] += delta
            r[2] = r[0] - t0 + 1
            r[7] = _join(r[7], why if r is row else f"moved {delta} days with {slot.key}@{row[1]} ({ev.reason})")
            pinned[id(r)] = (position, assumed)
        if ev.scope == "all" and not el.open_ended:
            return end + delta
        return end

    def modify(self, rows: list[list[Any]], row: list[Any], ev: Event, i: int) -> None:
        slot = row[3]
        dose = row[4]
        if dose is None:
            self.problem(("events", i, "item"), f"{slot.name} has no dose to modify")
            return
        if row[5] in ("given", "omitted") and ev.scope == "item":
            self.problem(("events", i, "item"), f"{_ref(row)} is already recorded as {row[5]}: its dose cannot be "
                         f"modified")
            return
        percent = float(ev.percent or 0)
        if ev.of == "previous":
            # The dose of this drug immediately before this one (modified or not).
            before = [r for r in rows if r[3].key == slot.key and r[0] < row[0]]
            prev = before[-1][4] if before else None
            percent = (prev.percent if isinstance(prev, ModifiedDose) else 100.0) * percent / 100.0
        why = f"{ev.reason}, {ev.date}"
        targets = [row] if ev.scope == "item" else [
            r for r in rows if r[3].key == slot.key and r[0] >= row[0] and r[5] not in ("given", "omitted")]
        for r in targets:
            base = r[4]
            if isinstance(base, ModifiedDose):
                base = DoseResult(base.slot, base.measurement, base.bsa, base.age_years, base.age_months)
            r[4] = ModifiedDose(base, percent, why)
            r[7] = _join(r[7], f"dose {percent:g} % of standard ({ev.reason})")

    def length_of(self, el: Any, start: int) -> int | None:
        if el.open_ended:
            if self.eot is None:
                return None
            length = self.eot - start + 1
            if length <= 0:
                self.warnings.append(f"{el.id} would start on {dt.date.fromordinal(start)}, after the end of therapy "
                                     f"on {dt.date.fromordinal(self.eot)}: it has no days left")
                return 0
            return length
        return el.length

    def project(self, cur: _Open, facts: dict[str, Any], branch: str | None, depth: int = 0,
                domains: dict[str, frozenset[str]] | None = None) -> None:
        """Project the rest of the plan from ``cur``.

        ``domains``: the arms still possible for each randomisation not yet recorded. A pending
        branch narrows them (the branch "randomisation→arm b" assumes arm b), so a later
        decision on the same randomisation follows that assumption instead of projecting
        impossible combinations (AALL1731's two non-sequential blinatumomab cycles).
        """
        p = self.p
        pending = branch is not None
        if domains is None:
            domains = {f"arm:{r}": frozenset(arms) for r, arms in p.randomisations.items() if f"arm:{r}" not in facts}
        while True:
            el = p.elements[cur.id]
            if pending:
                status = "pending_decision"
            elif cur.actual_end is not None:
                status = "completed"
            elif cur.actual_start is not None:
                status = "in_progress"
            else:
                status = "planned"
            end = self.close(cur, status, branch, stop=cur.actual_end)
            reason = self.end_reason
            if el.final:
                return
            edges = p.table[cur.id]
            chosen: list[tuple[Edge, bool | None]] = []
            unknown = False
            for e in edges:
                r = True if e.guard is None else e.guard(facts)
                if r is True:
                    chosen.append((e, True))
                    break
                if r is None:
                    chosen.append((e, None))
                    unknown = True
            narrowed: dict[int, dict[str, frozenset[str]]] = {}
            if unknown and domains:
                chosen, narrowed = _narrow(edges, chosen, facts, domains)
                unknown = len(chosen) > 1 or (bool(chosen) and chosen[0][1] is None)
            if end is None:  # pragma: no cover - only final elements lack an end
                return
            when = end + 1
            if not chosen:
                self.decide(edges, None, "no_rule_applies", dt.date.fromordinal(when), facts, branch)
                self.warnings.append(f"no transition out of {cur.id} applies to this patient; the plan stops there")
                return
            if not unknown:
                edge = chosen[0][0]
                if len(edges) > 1 or edge.guard is not None:
                    self.decide(edges, edge, "decided", dt.date.fromordinal(when), facts, branch)
                domains = narrowed.get(id(edge), domains)
                cur = self.gated(edge.dest, end)
                cur.dated = cur.dated or reason
                continue
            self.decide(edges, None, "pending", dt.date.fromordinal(when), facts, branch)
            if depth >= 8:  # pragma: no cover - a protocol with more than 8 nested pending decisions
                self.warnings.append("more than 8 nested pending decisions: projection stops")
                return
            # An end of therapy anchored to an element's start belongs to each branch.
            saved, seen = self.eot, []
            for edge, _ in chosen:
                label = f"{edge.decision}→{edge.dest}"
                self.eot = saved
                nxt = self.gated(edge.dest, end)
                nxt.dated = nxt.dated or reason
                self.project(nxt, facts,
                             label if branch is None else f"{branch} / {label}", depth + 1,
                             narrowed.get(id(edge), domains))
                seen.append(self.eot)
            # The plan's end of therapy is the branches' one when they agree (a branch that
            # never reaches the anchor, e.g. HSCT, has none); else it stays unknown.
            ends = {x for x in seen if x is not None}
            self.eot = ends.pop() if len(ends) == 1 else saved
            return

    def decide(self, edges: tuple[Edge, ...], chosen: Edge | None, status: str, when: dt.date,
               facts: dict[str, Any], branch: str | None) -> None:
        self.decisions.append(Decision(edges, chosen, status, when, facts, branch))


class _Open:
    """The element a replay or projection is in."""

    __slots__ = ("actual_end", "actual_start", "dated", "id", "note", "planned_start")

    def __init__(self, element: str, planned_start: int, note: str | None = None,
                 dated: str | None = None) -> None:
        self.id = element
        self.planned_start = planned_start
        self.actual_start: int | None = None
        self.actual_end: int | None = None
        self.note = note
        #: Why the planned start depends on a placeholder (an earlier placeholder length), if it does.
        self.dated = dated


#: Events that change items of an element rather than move through the protocol.
_ADJUSTING = frozenset({"item_given", "item_omitted", "item_delayed", "dose_modified", "element_held",
                        "element_resumed", "infusion_interrupted", "infusion_resumed"})


def _narrow(edges: tuple[Edge, ...], chosen: list[tuple[Edge, bool | None]], facts: dict[str, Any],
            domains: dict[str, frozenset[str]]) -> tuple[list[tuple[Edge, bool | None]],
                                                         dict[int, dict[str, frozenset[str]]]]:
    """Which of a decision's edges are still possible given the arms a branch assumes.

    Enumerates the possible arms of the randomisations the guards read (small finite sets);
    returns the possible edges (``True`` when only one remains) and, for each, the arms under
    which it is taken. Other unknown facts (an MRD result) stay unknown.
    """
    keys = sorted({k for e in edges for k in e.depends_on if k in domains and k not in facts})
    if not keys:
        return chosen, {}
    combos: list[dict[str, str]] = [{}]
    for k in keys:
        combos = [{**c, k: v} for c in combos for v in sorted(domains[k])]
        if len(combos) > 512:  # pragma: no cover - more arms than any protocol has
            return chosen, {}
    possible: dict[int, tuple[Edge, list[dict[str, str]], bool]] = {}
    for combo in combos:
        f = {**facts, **combo}
        for e in edges:
            r = True if e.guard is None else e.guard(f)
            if r is False:
                continue
            entry = possible.setdefault(id(e), (e, [], True))
            entry[1].append(combo)
            if r is None:
                possible[id(e)] = (e, entry[1], False)
            if r is True:
                break
    order = [e for e in edges if id(e) in possible]
    narrowed = {id(e): {**domains, **{k: frozenset(c[k] for c in possible[id(e)][1]) for k in keys}}
                for e in order}
    if len(order) == 1 and possible[id(order[0])][2]:
        return [(order[0], True)], narrowed
    return [(e, None) for e in order], narrowed


def _ref(row: list[Any]) -> str:
    return f"{row[3].element}:{row[3].key}@{row[1]}"


def _join(a: str | None, b: str) -> str:
    return b if not a else f"{a}; {b}"


def _recovered(gate: Any, count: Any) -> bool:
    if gate.anc_min is not None and (count.anc is None or count.anc < gate.anc_min):
        return False
    return not (gate.platelets_min is not None and (count.platelets is None or count.platelets < gate.platelets_min))


def _count_text(count: Any) -> str:
    parts = []
    if count.anc is not None:
        parts.append(f"ANC {count.anc:g}")
    if count.platelets is not None:
        parts.append(f"platelets {count.platelets:g}")
    return ", ".join(parts) + " ×10⁹/L"


def _eligibility_field(cond: Any) -> str:
    keys = depends_on(cond)
    return _FIELD_OF_FACT.get(keys[0], keys[0]) if keys else ""


# --------------------------------------------------------------------------- entry point


def plan(patient: Patient | str | os.PathLike[str], protocol: Protocol | str | os.PathLike[str] | None = None,
         as_of: dt.date | None = None, today: dt.date | None = None) -> Plan:
    """Build a patient's dated plan.

    ``patient``: a :class:`Patient` or a path to a patient file. ``protocol``: a loaded
    :class:`Protocol`, a shipped id or a path; by default the one the patient file names.
    ``as_of``: only events and results recorded on or before this date count (default: today).
    ``today``: nothing may be dated after it (default: the real today; a simulation of future
    patients passes its own).

    Raises :class:`PatientError` or :class:`IneligibleError` (bad or inconsistent input) and
    :class:`DefinitionError` (bad protocol file).

    >>> p = plan("examples/patients/mr-on-time.yaml", as_of=dt.date(2025, 6, 1))  # doctest: +SKIP
    >>> [e.id for e in p.elements]  # doctest: +SKIP
    ['induction', 'blinatumomab', 'ib', 'marma', 'octadad', 'maintenance']
    """
    patient, protocol = _resolve(patient, protocol)
    if as_of is None:
        as_of = dt.date.today()
    return _Builder(protocol, patient, as_of, today).build()


def risk(patient: Patient | str | os.PathLike[str], protocol: Protocol | str | os.PathLike[str] | None = None,
         as_of: dt.date | None = None) -> RiskResult:
    """Stratify a patient: eligibility first (raises :class:`IneligibleError`), then the risk
    group with the explanation of which rule matched.

    >>> risk("examples/patients/hr-to-hsct.yaml").group  # doctest: +SKIP
    'HR'
    """
    patient, protocol = _resolve(patient, protocol)
    builder = _Builder(protocol, patient, as_of or dt.date.today())
    _, result = builder.facts()
    if builder.problems:
        raise PatientError(builder.problems)
    return result


def _resolve(patient: Patient | str | os.PathLike[str],
             protocol: Protocol | str | os.PathLike[str] | None) -> tuple[Patient, Protocol]:
    if not isinstance(patient, Patient):
        patient = load_patient(patient)
    if protocol is None:
        try:
            protocol = load_protocol(patient.protocol)
        except DefinitionError as exc:
            doc = patient._lines
            raise PatientError(Problem(patient._source, "protocol", "; ".join(p.message for p in exc.problems)
                                       + f" (got {patient.protocol!r})",
                                       doc.line_of(("protocol",)) if doc is not None else None)) from None
    elif not isinstance(protocol, Protocol):
        protocol = load_protocol(protocol)
    name, _, version = patient.protocol.partition("@")
    if name != protocol.id or (version and version != protocol.version):
        raise PatientError(Problem(patient._source, "protocol", f"expected {protocol.id}"
                                   f"{'@' + protocol.version if version else ''} (the protocol being planned), "
                                   f"got {patient.protocol!r}"))
    return patient, protocol

