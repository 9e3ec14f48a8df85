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

from ._errors import DefinitionError, IneligibleError, PatientError, Problem
from ._io import format_loc
from ._loading import dumps, load_patient, load_protocol
from ._machine import OUTCOMES, Edge, Protocol, Slot
from ._models import Measurement, Patient
from ._rules import RiskResult, birthday, depends_on, explain, patient_facts

__all__ = ["Decision", "DoseResult", "ElementSpan", "Item", "Plan", "mosteller", "plan", "risk"]

_UNIT_LABEL = {"per_m2": "/m²", "per_kg": "/kg", "fixed": "", "age_banded": ""}
_PER_LABEL = {"dose": "", "day": "/day", "week": "/week"}
#: Patient fields that hold the facts an eligibility rule reads (to name the field in errors).
_FIELD_OF_FACT = {
    "age_at_diagnosis_days": "birth_date", "age_at_diagnosis_months": "birth_date",
    "age_at_diagnosis_years": "birth_date", "day8_blasts_per_ul": "day8_blasts_per_ul",
}


def mosteller(height_cm: float, weight_kg: float) -> float:
    """Body-surface area in m² by Mosteller: ``sqrt(height_cm × weight_kg / 3600)``.

    >>> round(mosteller(60, 6), 3)
    0.316
    """
    return math.sqrt(height_cm * weight_kg / 3600.0)


def fmt_amount(x: float) -> str:
    """Three significant figures, never in exponent form: 18.6, 4.65, 0.465, 3100."""
    if x == 0:
        return "0"
    rounded = float(f"{x:.3g}")  # round first: 9.996 becomes 10.0, not 10.00
    digits = max(0, 2 - math.floor(math.log10(abs(rounded))))
    return f"{rounded:.{digits}f}"


# --------------------------------------------------------------------------- doses


class DoseResult:
    """A computed dose with its working shown.

    ``amount`` is None when it cannot be computed: the definition's value is an unknown
    placeholder, or no height/weight is recorded on or before the date (``reason`` says which).
    BSA is Mosteller rounded to 2 decimals, and the dose is computed from the rounded BSA, so
    the working shown is arithmetically exact; doses are shown to 3 significant figures.
    """

    __slots__ = ("_dict", "_result", "age_years", "bsa", "measurement", "slot")

    def __init__(self, slot: Slot, measurement: Measurement | None, bsa: float | None, age_years: int) -> None:
        # Only the inputs are stored; the arithmetic runs on first use (most plans are
        # rendered, but a cohort simulation never reads a dose).
        self.slot = slot
        self.measurement = measurement
        self.bsa = bsa
        self.age_years = age_years
        self._result: tuple[float | None, bool, str | None] | None = None  # (amount, capped, reason)
        self._dict: dict[str, Any] | None = None

    def _computed(self) -> tuple[float | None, bool, str | None]:
        """``(amount, capped, reason)``, computed on first use and kept."""
        if self._result is None:
            self._result = self._compute()
        return self._result

    def _compute(self) -> tuple[float | None, bool, str | None]:
        d = self.slot.dose
        assert d is not None
        standard = self.standard
        if standard is None:
            return None, False, "not specified in the definition (placeholder)"
        if d.basis == "per_m2":
            if self.bsa is None:
                return None, False, "no height/weight recorded on or before this date"
            value = standard * self.bsa
        elif d.basis == "per_kg":
            if self.measurement is None:
                return None, False, "no weight recorded on or before this date"
            value = standard * self.measurement.weight_kg
        else:
            value = standard
        cap = d.cap
        if cap is not None and cap.value is not None and value > cap.value:
            return round(cap.value, 6), True, None
        return round(value, 6), False, None

    @property
    def standard(self) -> float | None:
        """The definition's amount (per m², per kg, fixed, or the age band's), or None if unknown."""
        d = self.slot.dose
        assert d is not None
        if d.basis == "age_banded":
            age = self.age_years
            return next(b.amount.value for b in d.bands or () if b.below_age_years is None or age < b.below_age_years)
        return d.amount.value  # type: ignore[union-attr]

    @property
    def amount(self) -> float | None:
        """The computed dose in ``unit``, or None when it cannot be computed (see ``reason``)."""
        return self._computed()[0]

    @property
    def capped(self) -> bool:
        """True when the computed dose was reduced to the definition's cap."""
        return self._computed()[1]

    @property
    def reason(self) -> str | None:
        """Why there is no amount (a placeholder without value, or no measurement)."""
        return self._computed()[2]

    @property
    def unit(self) -> str:
        """Unit of the amount (mg, µg, IU...)."""
        return self.slot.dose.unit  # type: ignore[union-attr]

    @property
    def per(self) -> str:
        """What the amount covers: dose, day or week."""
        return self.slot.dose.per  # type: ignore[union-attr]

    @property
    def basis(self) -> str:
        """per_m2, per_kg, fixed or age_banded."""
        return self.slot.dose.basis  # type: ignore[union-attr]

    @property
    def cap(self) -> float | None:
        """The per-administration maximum, if the definition sets one."""
        cap = self.slot.dose.cap  # type: ignore[union-attr]
        return None if cap is None else cap.value

    @property
    def evidence(self) -> str:
        """Weakest evidence of the numbers behind this dose and its days."""
        return self.slot.evidence

    @property
    def text(self) -> str:
        """The dose as written on a roadmap: ``18.6 mg/day``, or why there is none."""
        if self.amount is None:
            return "not specified" if self.standard is None else "not computable"
        return f"{fmt_amount(self.amount)} {self.unit}{_PER_LABEL[self.per]}"

    @property
    def working(self) -> str:
        """How the dose was computed, e.g. ``60 mg/m²/day × 0.31 m² = 18.6 mg/day``."""
        per = _PER_LABEL[self.per]
        std = "?" if self.standard is None else f"{self.standard:g}"
        standard = f"{std} {self.unit}{_UNIT_LABEL[self.basis]}{per}"
        if self.basis == "age_banded":
            standard = f"age {self.age_years} y on the day → band dose {std} {self.unit}{per}"
        if self.amount is None:
            return f"{standard}: {self.reason}"
        m = self.measurement
        if self.basis == "per_m2":
            assert m is not None and self.bsa is not None
            raw = self.standard * self.bsa  # type: ignore[operator]
            out = (f"{standard} × {self.bsa:.2f} m² = {fmt_amount(raw)} {self.unit}{per} "
                   f"(BSA Mosteller, {m.height_cm:g} cm, {m.weight_kg:g} kg on {m.date.isoformat()})")
        elif self.basis == "per_kg":
            assert m is not None
            raw = self.standard * m.weight_kg  # type: ignore[operator]
            out = f"{standard} × {m.weight_kg:g} kg (on {m.date.isoformat()}) = {fmt_amount(raw)} {self.unit}{per}"
        elif self.basis == "fixed":
            out = f"{standard} (fixed dose)"
        else:
            out = standard
        if self.capped:
            out += f", capped at {self.cap:g} {self.unit}"
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (computed once: one dose object serves every item of its segment)."""
        if self._dict is None:
            self._dict = self._as_dict()
        return self._dict

    def _as_dict(self) -> dict[str, Any]:
        return {"amount": self.amount, "unit": self.unit, "per": self.per, "basis": self.basis,
                "standard": self.standard, "bsa_m2": self.bsa if self.basis == "per_m2" else None,
                "capped": self.capped,
                "text": self.text, "working": self.working, "evidence": self.evidence}


# --------------------------------------------------------------------------- plan records


class Item(NamedTuple):
    """One dated administration or assessment of the plan.

    ``status``: ``done`` (its element's completion, or its result, is recorded), ``planned``,
    or ``pending_decision`` (on a branch of a decision that waits for a result).
    ``branch`` names that branch (``pre_octadad→octadad``), None on the certain path.
    """

    ordinal: int
    element_day: int
    study_day: int
    slot: Slot
    dose: DoseResult | None
    status: str
    branch: str | None

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
        """Weakest evidence level of the numbers behind this item (its days and its dose)."""
        return self.slot.evidence

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the ``items`` of ``Plan.to_dict()``)."""
        slot = self.slot
        return {"date": dt.date.fromordinal(self.ordinal).isoformat(), "element": slot.element,
                "element_day": self.element_day, "study_day": self.study_day, "kind": slot.kind, "name": slot.name,
                "route": slot.route, "dose": None if self.dose is None else self.dose.to_dict(),
                "status": self.status, "evidence": slot.evidence, "branch": self.branch}


_as_item = partial(tuple.__new__, Item)


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

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        iso = _iso
        return {"id": self.id, "title": self.title, "planned_start": iso(self.planned_start),
                "planned_end": iso(self.planned_end), "actual_start": iso(self.actual_start),
                "actual_end": iso(self.actual_end), "status": self.status, "branch": self.branch,
                "evidence": self.evidence}


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

    __slots__ = ("_items", "as_of", "decisions", "elements", "end_of_therapy", "facts", "outcome", "patient",
                 "protocol", "risk", "rows", "warnings")

    def __init__(self, patient: Patient, protocol: Protocol, as_of: dt.date, risk: RiskResult,
                 elements: list[ElementSpan], rows: list[tuple[Any, ...]], decisions: list[Decision],
                 warnings: list[str], end_of_therapy: dt.date | None, outcome: tuple[str, dt.date] | None,
                 facts: dict[str, Any]) -> None:
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
                         "status": p.definition.status},
            "as_of": self.as_of.isoformat(),
            "risk": self.risk.to_dict(),
            "end_of_therapy": _iso(self.end_of_therapy),
            "outcome": None if self.outcome is None else {"type": self.outcome[0], "date": self.outcome[1].isoformat()},
            "elements": [e.to_dict() for e in self.elements],
            "items": [i.to_dict() for i in self.items],
            "decisions": [d.to_dict() for d in self.decisions],
            "warnings": list(self.warnings),
        }

    def to_json(self) -> str:
        """The plan as JSON text (ISO 8601 dates)."""
        return dumps(self.to_dict())

    def to_csv(self) -> str:
        """One row per item, spreadsheet-friendly, ISO dates."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["date", "element", "element_day", "study_day", "kind", "name", "route", "dose", "dose_amount",
                    "dose_unit", "dose_working", "status", "evidence", "branch"])
        for i in self.items:
            d = i.dose
            w.writerow([i.date.isoformat(), i.slot.element, i.element_day, i.study_day, i.slot.kind, i.slot.name,
                        i.slot.route or "", "" if d is None else d.text,
                        "" if d is None or d.amount is None else d.amount, "" if d is None else d.unit,
                        "" if d is None else d.working, i.status, i.slot.evidence, i.branch or ""])
        return buf.getvalue()

    @property
    def pending(self) -> list[Decision]:
        """Decisions waiting for a result."""
        return [d for d in self.decisions if d.status == "pending"]


# --------------------------------------------------------------------------- building


class _Context:
    """Per-patient inputs on integer days, shared by replay and projection."""

    __slots__ = ("age_banded", "birth", "birthdays", "bsa", "change_points", "horizon", "m_ords", "measurements",
                 "results", "t0")

    def __init__(self, protocol: Protocol, patient: Patient, as_of_ord: int, horizon: int) -> None:
        self.t0 = patient.start_date.toordinal()
        ms = sorted((m for m in patient.measurements if m.date.toordinal() <= as_of_ord), key=lambda m: m.date)
        self.measurements = ms
        self.m_ords = [m.date.toordinal() for m in ms]
        self.bsa = [round(mosteller(m.height_cm, m.weight_kg), 2) for m in ms]
        # Ages only matter for age-banded doses: birthdays up to the end of the plan.
        self.birth = patient.birth_date
        self.birthdays = [self.birth.toordinal()]
        self.age_banded = protocol.age_banded
        self.horizon = 0
        self.change_points = sorted(self.m_ords)
        self.cover(horizon)
        self.results = {r.timepoint for r in patient.mrd if r.date.toordinal() <= as_of_ord}

    def cover(self, last: int) -> None:
        """Make sure every birthday up to ``last`` is known (ages only matter for age bands)."""
        if last <= self.horizon:
            return
        self.horizon = last
        if not self.age_banded:
            return
        k = len(self.birthdays)
        added = False
        while (day := birthday(self.birth, k).toordinal()) <= last:
            self.birthdays.append(day)
            added = True
            k += 1
        if added:
            self.change_points = sorted({*self.m_ords, *self.birthdays[1:]})

    def doses_at(self, slots: tuple[Slot, ...], ordinal: int) -> list[DoseResult | None]:
        """Doses of every slot for inputs in force on ``ordinal``."""
        i = bisect_right(self.m_ords, ordinal)
        m, bsa = (self.measurements[i - 1], self.bsa[i - 1]) if i else (None, None)
        age = bisect_right(self.birthdays, ordinal) - 1
        return [None if s.dose is None else DoseResult(s, m, bsa, age) for s in slots]

    def emit(self, element: Any, start: int, length: int, stop: int | None, status: str, branch: str | None,
             out: list[tuple[Any, ...]]) -> None:
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
        # Segments between changes of the dose inputs (a new measurement, a birthday).
        cps = self.change_points[bisect_right(self.change_points, start):bisect_right(self.change_points, last)]
        bounds = [0, *(bisect_left(days, cp - base, 0, end) for cp in cps), end]
        sbase = base - self.t0 + 1
        for lo, hi, at in zip(bounds, bounds[1:], [start, *cps], strict=False):
            if hi <= lo:
                continue
            dl = self.doses_at(all_slots, at)
            seg = zip(days[lo:hi], ks[lo:hi], slots[lo:hi])
            if per_slot is None:
                out.extend([(base + d, d, sbase + d, s, dl[k], status, branch) for d, k, s in seg])
            else:
                out.extend([(base + d, d, sbase + d, s, dl[k], per_slot[k], branch) for d, k, s in seg])


class _Builder:
    """Replays a patient's events, then projects the rest of the plan."""

    def __init__(self, protocol: Protocol, patient: Patient, as_of: dt.date) -> None:
        self.p = protocol
        self.patient = patient
        self.as_of = as_of
        self.name = patient._source
        self.doc = patient._lines
        self.problems: list[Problem] = []
        self.warnings: list[str] = []
        self.elements: list[ElementSpan] = []
        self.rows: list[tuple[Any, ...]] = []
        self.decisions: list[Decision] = []
        self.outcome: tuple[str, dt.date] | None = None
        eot_anchor = patient.diagnosis_date if protocol.eot_anchor == "diagnosis" else patient.start_date
        self.eot = None if protocol.eot_days is None else eot_anchor.toordinal() + protocol.eot_days - 1
        horizon = max(self.eot or 0, as_of.toordinal()) + 366
        self.ctx = _Context(protocol, patient, as_of.toordinal(), horizon)

    # -- problems -------------------------------------------------------------------

    def problem(self, loc: tuple[Any, ...], message: str) -> None:
        line = self.doc.line_of(loc) if self.doc is not None else None
        self.problems.append(Problem(self.name, format_loc(loc), message, line))

    # -- facts ----------------------------------------------------------------------

    def facts(self) -> tuple[dict[str, Any], RiskResult]:
        p, patient = self.p, self.patient
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
        for i, ev in order:
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
        return Plan(self.patient, p, self.as_of, risk, self.elements, self._sorted_rows(), self.decisions,
                    self.warnings, None if self.eot is None else dt.date.fromordinal(self.eot), self.outcome, facts)

    def _sorted_rows(self) -> list[tuple[Any, ...]]:
        rows = self.rows
        if any(d.status == "pending" for d in self.decisions):
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
        cursor.state = cur.id
        try:
            moved = p.machine.events[f"start_{target}"].trigger(cursor)
        except MachineError:  # pragma: no cover - the table and the machine come from one definition
            moved = False
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
        end = self.span_end(el, cur)
        self.close(cur, "completed", stop=cur.actual_end if cur.actual_end is not None else when - 1)
        gap = p.elements[target].gap
        planned = (end + 1 + gap) if end is not None else when
        nxt = _Open(target, planned)
        nxt.actual_start = when
        return nxt

    # -- projection -----------------------------------------------------------------

    def span_end(self, el: Any, cur: _Open) -> int | None:
        if cur.actual_end is not None:
            return cur.actual_end
        start = cur.actual_start if cur.actual_start is not None else cur.planned_start
        if el.open_ended:
            return self.eot
        if el.length is None:
            return None
        return start + el.length - 1

    def close(self, cur: _Open, status: str, branch: str | None = None, stop: int | None = None) -> None:
        """Record the span of ``cur`` and emit its items up to ordinal ``stop`` (inclusive)."""
        el = self.p.elements[cur.id]
        start = cur.actual_start if cur.actual_start is not None else cur.planned_start
        planned_end = self.eot if el.open_ended else None if el.length is None else start + el.length - 1
        self.elements.append(ElementSpan(
            el.id, el.title, dt.date.fromordinal(cur.planned_start),
            None if planned_end is None else dt.date.fromordinal(planned_end),
            None if cur.actual_start is None else dt.date.fromordinal(cur.actual_start),
            None if cur.actual_end is None else dt.date.fromordinal(cur.actual_end), status, branch, el.evidence,
        ))
        length = self.length_of(el, start)
        if length is None:
            return
        # Items of a completed element count as done; a stopped element's later items are dropped.
        item_status = {"completed": "done", "pending_decision": "pending_decision"}.get(status, "planned")
        self.ctx.emit(el, start, length, stop, item_status, branch, self.rows)

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

    def project(self, cur: _Open, facts: dict[str, Any], branch: str | None, depth: int = 0) -> None:
        p = self.p
        pending = branch is not None
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
            end = self.span_end(el, cur)
            self.close(cur, status, branch, stop=cur.actual_end)
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
                cur = _Open(edge.dest, when + p.elements[edge.dest].gap)
                continue
            self.decide(edges, None, "pending", dt.date.fromordinal(when), facts, branch)
            if depth >= 8:  # pragma: no cover - a protocol with more than 8 nested pending decisions
                self.warnings.append("more than 8 nested pending decisions: projection stops")
                return
            for edge, _ in chosen:
                label = f"{edge.decision}→{edge.dest}"
                self.project(_Open(edge.dest, when + p.elements[edge.dest].gap), facts,
                             label if branch is None else f"{branch} / {label}", depth + 1)
            return

    def decide(self, edges: tuple[Edge, ...], chosen: Edge | None, status: str, when: dt.date,
               facts: dict[str, Any], branch: str | None) -> None:
        self.decisions.append(Decision(edges, chosen, status, when, facts, branch))


class _Open:
    """The element a replay or projection is in."""

    __slots__ = ("actual_end", "actual_start", "id", "planned_start")

    def __init__(self, element: str, planned_start: int) -> None:
        self.id = element
        self.planned_start = planned_start
        self.actual_start: int | None = None
        self.actual_end: int | None = None


def _eligibility_field(cond: Any) -> str:
    keys = depends_on(cond)
    return _FIELD_OF_FACT.get(keys[0], keys[0]) if keys else ""


# --------------------------------------------------------------------------- entry point


def plan(patient: Patient | str | os.PathLike[str], protocol: Protocol | str | os.PathLike[str] | None = None,
         as_of: dt.date | None = None) -> Plan:
    """Build a patient's dated plan.

    ``patient``: a :class:`Patient` or a path to a patient file. ``protocol``: a loaded
    :class:`Protocol`, a shipped id or a path; by default the one the patient file names.
    ``as_of``: only events and results recorded on or before this date count (default: today).

    Raises :class:`PatientError` or :class:`IneligibleError` (bad or inconsistent input) and
    :class:`DefinitionError` (bad protocol file).

    >>> p = plan("examples/patients/mr-on-time.yaml", as_of=dt.date(2025, 6, 1))  # doctest: +SKIP
    >>> [e.id for e in p.elements]  # doctest: +SKIP
    ['induction', 'blinatumomab', 'ib', 'marma', 'octadad', 'maintenance']
    """
    patient, protocol = _resolve(patient, protocol)
    if as_of is None:
        as_of = dt.date.today()
    return _Builder(protocol, patient, as_of).build()


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

