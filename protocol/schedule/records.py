"""The plan's records: dated items, element spans, decisions and the :class:`Plan` with
its JSON, CSV and cumulative anthracycline."""

from __future__ import annotations

import csv
import datetime as dt
import io
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple


from .._dose import DoseResult
from .._loading import dumps
from .._machine import Edge, Protocol, Slot
from .._models import Patient
from .._rules import RiskResult, explain

__all__ = ["LEGEND", "Decision", "ElementSpan", "Item", "Plan"]


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
        return row_unverified(self)

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


def row_unverified(row: tuple[Any, ...]) -> bool:
    """:attr:`Item.unverified` of a plan row (a plain tuple in :class:`Item` field order, as the
    worklist reads them): its dose or days depend on a placeholder, or, unless it was recorded,
    its date does."""
    dose = row[4]
    return (row[3].evidence if dose is None else dose.evidence) == "placeholder" or (
        row[8] is not None and row[5] not in _RECORDED)


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

    __slots__ = ("_edges", "_facts", "_inherited", "at", "branch", "date", "depends_on", "id", "outcome", "status",
                 "waiting_for")

    def __init__(self, edges: tuple[Edge, ...], chosen: Edge | None, status: str, date: dt.date | None,
                 facts: dict[str, Any], branch: str | None, inherited: tuple[str, ...] = ()) -> None:
        self._edges = edges
        self._inherited = inherited  # placeholders behind the facts it reads (an unverified risk group)
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

    @property
    def unverified_reasons(self) -> tuple[str, ...]:
        """Why the decision rests on a placeholder (a placeholder rule or threshold of any of
        its branches); empty when every rule and number is sourced."""
        return tuple(dict.fromkeys([*(r for e in self._edges for r in e.unverified), *self._inherited]))

    @property
    def unverified(self) -> bool:
        """True when a rule or threshold of the decision is a placeholder."""
        return bool(self.unverified_reasons)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"id": self.id, "at": self.at, "status": self.status, "unverified": self.unverified,
                "unverified_reasons": list(self.unverified_reasons), "depends_on": list(self.depends_on),
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
            "cumulative_anthracycline": self.cumulative_anthracycline(),
            "legend": LEGEND,
        }

    def to_json(self) -> str:
        """The plan as JSON text (ISO 8601 dates)."""
        return dumps(self.to_dict())

    def cumulative_anthracycline(self) -> dict[str, Any] | None:
        """Cumulative anthracycline exposure in mg/m², planned (the certain path, omissions
        left out) and given (items recorded as given, at their planned per-m² dose), per drug
        and as doxorubicin equivalents with each drug's factor and its evidence; None when the
        protocol has no anthracycline. Unverified where a dose or a factor is a placeholder.

        >>> plan("examples/patients/mr-on-time.yaml").cumulative_anthracycline()["drugs"][0]["drug"]  # doctest: +SKIP
        'Daunorubicin'
        """
        drugs: dict[str, dict[str, Any]] = {}
        for i in self.items:
            factor = getattr(i.slot.source, "anthracycline", None)
            if factor is None or i.branch is not None or i.status == "omitted":
                continue
            d = drugs.setdefault(i.slot.name, {"drug": i.slot.name, "planned_mg_m2": 0.0, "given_mg_m2": 0.0,
                                               "factor": factor.value, "factor_evidence": factor.evidence,
                                               "factor_source": factor.source, "factor_note": factor.note,
                                               "computable": True, "unverified_reasons": []})
            dose = i.dose
            per_m2 = None
            if dose is not None and dose.basis == "per_m2" and dose.standard is not None:
                per_m2 = dose.standard * (getattr(dose, "percent", 100.0) / 100.0)
            if per_m2 is None:
                d["computable"] = False
                continue
            d["planned_mg_m2"] += per_m2
            if i.status == "given":
                d["given_mg_m2"] += per_m2
            if dose is not None and dose.unverified:
                d["unverified_reasons"] = list(dict.fromkeys([*d["unverified_reasons"], *dose.unverified_reasons]))
        if not drugs:
            return None
        total: dict[str, Any] = {"planned": 0.0, "given": 0.0, "computable": True}
        for d in drugs.values():
            d["planned_mg_m2"], d["given_mg_m2"] = round(d["planned_mg_m2"], 6), round(d["given_mg_m2"], 6)
            if d["factor"] is None or not d["computable"]:
                total["computable"] = False
            else:
                total["planned"] += d["planned_mg_m2"] * d["factor"]
                total["given"] += d["given_mg_m2"] * d["factor"]
            if d["factor_evidence"] == "placeholder":
                d["unverified_reasons"].append("the doxorubicin-equivalence factor is a placeholder")
            d["unverified"] = bool(d["unverified_reasons"])
        if not total["computable"]:
            total["planned"] = total["given"] = None
        else:
            total["planned"], total["given"] = round(total["planned"], 6), round(total["given"], 6)
        return {"unit": "mg/m²", "drugs": list(drugs.values()), "doxorubicin_equivalent": total,
                "unverified": any(d["unverified"] for d in drugs.values())}

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
