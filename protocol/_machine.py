"""Compile a validated definition once: checks, day templates, a transition table, a Machine.

From one :class:`~protocol._models.ProtocolDefinition` this module derives

- the cross-reference checks pydantic cannot do field by field (sources resolve, days lie
  inside their element, every element is reachable, no dead ends, no cycles...);
- per-element *day templates*: sorted ``(element_day, slot)`` tuples on integer days, which
  the scheduler walks without touching pydantic;
- a dict transition table ``{element: (Edge, ...)}`` evaluated with three-valued guards to
  project a plan (and, later, to simulate cohorts);
- one ``transitions.Machine`` per protocol (``model=None``, ``auto_transitions=False``) that
  replays a patient's recorded events: a patient is a small cursor object passed to
  ``machine.events[name].trigger(cursor)``, never a model added to the machine.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from pydantic import BaseModel

from ._models import (
    EVIDENCE_RANK,
    AgeFraction,
    Administration,
    Assessment,
    Condition,
    DayTerm,
    Dose,
    Element,
    InfantFullDose,
    ProtocolDefinition,
    Randomisation,
    SourcedDays,
    SourcedNumber,
    StartRule,
    TimePoint,
    Transition,
)
from ._rules import FACTS, Guard, RuleSet, compile_condition, depends_on, describe, placeholders

__all__ = ["OUTCOMES", "Protocol", "Edge", "Slot", "compile_definition"]

#: States a patient leaves the protocol into, from any element.
OUTCOMES = ("relapse", "death", "off_protocol")

logging.getLogger("transitions").setLevel(logging.WARNING)


# --------------------------------------------------------------------------- compiled pieces


@dataclass(frozen=True, slots=True, eq=False)
class Slot:
    """One administration or assessment of one element, ready for scheduling."""

    element: str
    index: int
    kind: str  # "administration" | "assessment"
    key: str
    name: str
    route: str | None
    frequency: str | None
    days: tuple[DayTerm, ...]
    days_text: str
    dose: Dose | None
    evidence: str  # weakest evidence of the days and the dose parts that do not vary by patient
    timepoint: str | None
    study: str | None  # assessment kind
    notes: tuple[str, ...]
    source: Administration | Assessment = field(repr=False)
    window: tuple[int, int] | None = None  # (days early, days late) allowed around the due date

    @property
    def infusion(self) -> bool:
        """True for a continuous infusion with interruption and bag rules."""
        return getattr(self.source, "infusion", None) is not None


@dataclass(frozen=True, slots=True, eq=False)
class Edge:
    """A transition: destination, compiled guard (None = default edge), decision id."""

    source: str
    dest: str
    guard: Guard | None
    condition: Condition | None
    decision: str
    label: str | None
    depends_on: tuple[str, ...]
    text: str  # the condition in words ("otherwise" for the default edge)
    #: Why the edge's rule is unverified: a placeholder rule (``rule_evidence``) or threshold.
    unverified: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, eq=False)
class CompiledElement:
    """An element on integer days."""

    id: str
    index: int
    title: str
    length: int | None  # None: open-ended or a final element without length
    open_ended: bool
    final: bool
    first_day: int
    gap: int
    slots: tuple[Slot, ...]
    evidence: str  # of the length (or of end_of_therapy for an open-ended element)
    model: Element = field(repr=False)
    timepoints: frozenset[str] = frozenset()  # time points sampled in this element
    fixed: Template | None = field(default=None, repr=False)  # the template for the planned length
    gate: CountGateRule | None = None  # blood counts that must recover before the element starts
    infusion: InfusionRule | None = None  # interruption and bag rules of its continuous infusion
    #: (guard, rule, condition in words) a patient must meet to be planned into the element.
    requires: tuple[tuple[Guard, Any, str], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "timepoints", frozenset(s.timepoint for s in self.slots if s.timepoint))
        if self.length is not None:
            object.__setattr__(self, "fixed", _template(self, self.length))

    def template(self, length: int) -> Template:
        """The element's items for an element of ``length`` days, as parallel tuples in day order."""
        return _template(self, length)


@dataclass(frozen=True, slots=True)
class CountGateRule:
    """A compiled start gate: thresholds (None when not given or unknown) and their evidence."""

    anc_min: float | None
    platelets_min: float | None
    unknown: tuple[str, ...]  # thresholds that are placeholders without value
    evidence: str
    text: str  # e.g. "ANC ≥ 0.5 ×10⁹/L and platelets ≥ 50 ×10⁹/L"


@dataclass(frozen=True, slots=True)
class InfusionRule:
    """A compiled continuous-infusion rule (blinatumomab label, clinical-facts §5.1)."""

    slot: int  # index of the infusion's administration slot
    bag_slot: int  # index of the synthetic bag-change slot
    first_day: int  # first and last element day of the infusion
    last_day: int
    max_interruption_days: int
    bags: dict[int, float | None]  # hours -> minimum weight (kg) or None
    default_hours: int
    evidence: str


class Template(tuple[tuple[int, ...], tuple[int, ...], tuple[Slot, ...]]):
    """``(days, slot_indices, slots)``: three parallel tuples, sorted by day then slot.

    Parallel tuples let the scheduler build items with C-level ``map``/``zip``.
    """

    __slots__ = ()


@lru_cache(maxsize=1024)
def _template(element: CompiledElement, length: int) -> Template:
    first, last = element.first_day, element.first_day + length - 1
    pairs: list[tuple[int, int, Slot]] = []
    for slot in element.slots:
        for start, stop, step in slot.days:
            end = last if stop is None else min(stop, last)
            pairs.extend((day, slot.index, slot) for day in range(start, end + 1, step) if day >= first)
    pairs.sort(key=lambda p: (p[0], p[1]))
    return Template((tuple(p[0] for p in pairs), tuple(p[1] for p in pairs), tuple(p[2] for p in pairs)))


def _window(window: Any) -> tuple[int, int] | None:
    if window is None:
        return None
    return int(window.before.value), int(window.after.value)


def _gate(e: Element) -> CountGateRule | None:
    g = None if e.start is None else e.start.counts
    if g is None:
        return None
    parts, unknown, levels = [], [], []
    for name, label, n in (("anc_min", "ANC", g.anc_min), ("platelets_min", "platelets", g.platelets_min)):
        if n is None:
            continue
        levels.append(n.evidence)
        if n.value is None:
            unknown.append(name)
            parts.append(f"{label} ≥ ? ×10⁹/L (not specified)")
        else:
            parts.append(f"{label} ≥ {n.value:g} ×10⁹/L")
    return CountGateRule(None if g.anc_min is None else g.anc_min.value,
                         None if g.platelets_min is None else g.platelets_min.value,
                         tuple(unknown), _weakest(*levels), " and ".join(parts))


def bag_slot(element: str, index: int, a: Administration, hours: int, first: int, last: int, evidence: str) -> Slot:
    """The synthetic slot of an infusion's bag changes: a new bag every ``hours`` from the
    infusion's first day (the label's bag durations; clinical-facts §5.1)."""
    step = max(1, hours // 24)
    return Slot(element, index, "bag_change", f"{a.key}_bag", f"{a.drug} bag ({hours} h)", a.route, None,
                ((first, last, step),), f"{first}-{last}/{step}", None, evidence, None, None,
                ("Do not flush the line when changing bags (label).",), a)


def _weakest(*levels: str | None) -> str:
    present = [lvl for lvl in levels if lvl is not None]
    return min(present, key=EVIDENCE_RANK.__getitem__) if present else "published"


def _dose_evidence(dose: Dose) -> str:
    parts = [dose.amount, dose.cap] if dose.basis != "age_banded" else [dose.cap, *(b.amount for b in dose.bands or ())]
    return _weakest(*(p.evidence for p in parts if p is not None))


# --------------------------------------------------------------------------- walking provenance


def walk_values(model: Any, loc: tuple[Any, ...] = (), label: tuple[str, ...] = ()) -> Iterator[
    tuple[tuple[Any, ...], tuple[str, ...], SourcedNumber | SourcedDays]
]:
    """Yield ``(loc, label, value)`` for every sourced number or day list in a definition.

    ``loc`` is the field path; ``label`` a readable path of ids (``induction › prednisone``).
    """
    if isinstance(model, (SourcedNumber, SourcedDays, AgeFraction, InfantFullDose)):
        yield loc, label, model
        return
    if isinstance(model, BaseModel):
        if not isinstance(model, ProtocolDefinition):
            ident = model.key if isinstance(model, Administration) else getattr(model, "id", None)
            if isinstance(ident, str):
                label = (*label, ident)
        for name, info in type(model).model_fields.items():
            value = getattr(model, name)
            if value is None:
                continue
            alias = info.alias or name
            leaf = isinstance(value, (SourcedNumber, SourcedDays, AgeFraction, InfantFullDose))
            yield from walk_values(value, (*loc, alias), (*label, alias) if leaf else label)
    elif isinstance(model, (list, tuple)):
        for i, item in enumerate(model):
            yield from walk_values(item, (*loc, i), label)


def _source_refs(defn: ProtocolDefinition) -> Iterator[tuple[tuple[Any, ...], str]]:
    for loc, _, value in walk_values(defn):
        if value.source is not None:
            yield (*loc, "source"), value.source
    for i, g in enumerate(defn.risk_groups):
        yield ("risk_groups", i, "source"), g.source
    for i, r in enumerate(defn.eligibility):
        yield ("eligibility", i, "source"), r.source
    for i, rnd in enumerate(defn.randomisations):
        yield ("randomisations", i, "source"), rnd.source
    for i, t in enumerate(defn.transitions):
        if t.rule_source is not None:
            yield ("transitions", i, "rule_source"), t.rule_source
    for i, e in enumerate(defn.elements):
        for j, r in enumerate(e.requires):
            yield ("elements", i, "requires", j, "source"), r.source


def _conditions(defn: ProtocolDefinition) -> Iterator[tuple[tuple[Any, ...], Condition]]:
    for i, g in enumerate(defn.risk_groups):
        if g.when is not None:
            yield ("risk_groups", i, "when"), g.when
    for i, r in enumerate(defn.eligibility):
        yield ("eligibility", i, "when"), r.when
    for i, d in enumerate(defn.derived_facts):
        for j, case in enumerate(d.cases):
            yield ("derived_facts", i, "cases", j, "when"), case.when
    for i, t in enumerate(defn.transitions):
        if t.when is not None:
            yield ("transitions", i, "when"), t.when
    for i, e in enumerate(defn.elements):
        for j, r in enumerate(e.requires):
            yield ("elements", i, "requires", j, "when"), r.when


def _leaves(c: Condition, loc: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], Condition]]:
    for name, group in (("all", c.all_), ("any", c.any_)):
        for i, x in enumerate(group or ()):
            yield from _leaves(x, (*loc, name, i))
    if c.not_ is not None:
        yield from _leaves(c.not_, (*loc, "not"))
    if c.fact is not None or c.mrd is not None or c.arm is not None:
        yield loc, c


# --------------------------------------------------------------------------- checks


def _whole(v: SourcedNumber | None, minimum: int) -> int | None:
    if v is None or v.value is None or v.value != int(v.value) or v.value < minimum:
        return None
    return int(v.value)


def check_definition(defn: ProtocolDefinition) -> list[tuple[tuple[Any, ...], str]]:
    """Cross-reference checks; returns ``(field path, message)`` for every problem."""
    problems: list[tuple[tuple[Any, ...], str]] = []
    add = problems.append

    keys = [s.key for s in defn.sources]
    for i, k in enumerate(keys):
        if k in keys[:i]:
            add((("sources", i, "key"), f"duplicate source key {k!r}"))
    for loc, key in _source_refs(defn):
        if key not in keys:
            add((loc, f"expected the key of an entry in `sources` ({', '.join(keys)}), got {key!r}"))

    ids = [e.id for e in defn.elements]
    by_id = {e.id: e for e in defn.elements}
    reserved = set(OUTCOMES)
    for i, e in enumerate(defn.elements):
        if e.id in ids[:i]:
            add((("elements", i, "id"), f"duplicate element id {e.id!r}"))
        if e.id in reserved:
            add((("elements", i, "id"), f"{e.id!r} is reserved for an outcome ({', '.join(OUTCOMES)})"))
    timepoints = [t.id for t in defn.timepoints]
    for i, t in enumerate(timepoints):
        if t in timepoints[:i]:
            add((("timepoints", i, "id"), f"duplicate time point {t!r}"))
    groups = [g.id for g in defn.risk_groups]
    for i, g in enumerate(groups):
        if g in groups[:i]:
            add((("risk_groups", i, "id"), f"duplicate risk group {g!r}"))
    for i, g in enumerate(defn.risk_groups[:-1]):
        if g.when is None:
            add((("risk_groups", i, "when"), "only the last risk group may omit `when` (it takes everyone left)"))

    # Elements: lengths, days inside the element, ids.
    for i, e in enumerate(defn.elements):
        loc = ("elements", i)
        length = None
        if e.length_days is not None:
            length = _whole(e.length_days, 1)
            if length is None:
                add(((*loc, "length_days", "value"),
                     "a length cannot be unknown (value: null): the plan needs its days; give the planning value "
                     "as a placeholder with a note" if e.length_days.value is None else
                     f"expected a whole number of days >= 1, got {e.length_days.value:g}"))
        if e.until == "end_of_therapy" and defn.end_of_therapy is None:
            add(((*loc, "until"), "runs until end_of_therapy, but the definition has no `end_of_therapy`"))
        if e.start is not None and e.start.gap_days is not None and _whole(e.start.gap_days, 0) is None:
            add(((*loc, "start", "gap_days", "value"),
                 "a gap cannot be unknown (value: null): give the planning value as a placeholder with a note"
                 if e.start.gap_days.value is None else
                 f"expected a whole number of days >= 0, got {e.start.gap_days.value:g}"))
        if e.final and e.length_days is None and e.until is None and (e.administrations or e.assessments):
            add((loc, "a final element without length_days cannot schedule administrations or assessments"))
        infusions = [j for j, a in enumerate(e.administrations) if a.infusion is not None]
        for j in infusions[1:]:
            add(((*loc, "administrations", j, "infusion"), "expected at most one continuous infusion with `infusion` "
                 "rules per element"))
        for j in infusions[:1]:
            a = e.administrations[j]
            inf = a.infusion
            assert inf is not None
            for b_i, b in enumerate(inf.bags):
                if (b.hours.value or 0) % 24:
                    add(((*loc, "administrations", j, "infusion", "bags", b_i, "hours", "value"),
                         f"expected a bag duration in whole days (a multiple of 24 hours), got {b.hours.value:g}"))
            if inf.max_interruption_days.value is not None and inf.max_interruption_days.value != int(
                    inf.max_interruption_days.value):
                add(((*loc, "administrations", j, "infusion", "max_interruption_days", "value"),
                     f"expected a whole number of days, got {inf.max_interruption_days.value:g}"))
            if any(t[1] is None for t in a.days.terms):
                add(((*loc, "administrations", j, "days"), "expected the infusion's last day (not 'end') so that "
                     "bag changes and interruptions can be planned"))
        adm_keys = [a.key for a in e.administrations]
        for j, a in enumerate(e.administrations):
            if a.key in adm_keys[:j]:
                add(((*loc, "administrations", j, "id"),
                     f"two administrations of {a.drug!r} in {e.id!r}: give each a distinct `id`"))
        assess_ids = [a.id for a in e.assessments]
        for j, a in enumerate(e.assessments):
            if a.id in assess_ids[:j]:
                add(((*loc, "assessments", j, "id"), f"duplicate assessment id {a.id!r}"))
            if a.timepoint is not None:
                if a.timepoint not in timepoints:
                    add(((*loc, "assessments", j, "timepoint"),
                         f"expected a declared time point ({', '.join(timepoints) or 'none declared'}), "
                         f"got {a.timepoint!r}"))
                terms = a.days.terms
                if len(terms) != 1 or terms[0][1] != terms[0][0]:
                    add(((*loc, "assessments", j, "days"), "an assessment with a time point must be on one day"))
        last = None if length is None else e.first_day + length - 1
        for kind, items in (("administrations", e.administrations), ("assessments", e.assessments)):
            for j, a in enumerate(items):
                for start, stop, _ in a.days.terms:
                    where = (*loc, kind, j, "days", "value")
                    if start < e.first_day:
                        add((where, f"day {start} is before the element's first day {e.first_day}"))
                    if stop is None and e.until is None:
                        add((where, "'end' is only allowed in an open-ended element (until: end_of_therapy)"))
                    if last is not None and (stop if stop is not None else start) > last:
                        add((where, f"day {stop if stop is not None else start} is after the element's last day "
                                    f"{last} ({e.id!r} has {length} days from day {e.first_day})"))

    # Conditions: facts, values, time points, risk groups.
    arms = {r.id: [a.id for a in r.arms] for r in defn.randomisations}
    for i, r in enumerate(defn.randomisations):
        if r.id in list(arms)[:i]:
            add((("randomisations", i, "id"), f"duplicate randomisation {r.id!r}"))
        ids_ = [a.id for a in r.arms]
        for j, a in enumerate(ids_):
            if a in ids_[:j]:
                add((("randomisations", i, "arms", j, "id"), f"duplicate arm {a!r}"))
    for base, cond in _conditions(defn):
        for loc, leaf in _leaves(cond, base):
            if leaf.arm is not None:
                if leaf.arm not in arms:
                    add(((*loc, "arm"), f"expected a declared randomisation ({', '.join(arms) or 'none declared'}), "
                                        f"got {leaf.arm!r}"))
                    continue
                op, operand = leaf.op
                for value in operand if op == "in" else [operand]:
                    if value not in arms[leaf.arm]:
                        add(((*loc, op), f"expected an arm of {leaf.arm} ({', '.join(arms[leaf.arm])}), "
                                         f"got {value!r}"))
                continue
            if leaf.mrd is not None:
                if leaf.mrd not in timepoints:
                    add(((*loc, "mrd"), f"expected a declared time point ({', '.join(timepoints) or 'none'}), "
                                        f"got {leaf.mrd!r}"))
                continue
            spec = FACTS.get(str(leaf.fact))
            if spec is None:
                add(((*loc, "fact"), f"expected a known fact ({', '.join(sorted(FACTS))}), got {leaf.fact!r}"))
                continue
            op, operand = leaf.op
            if spec.kind == "numeric" and op in ("eq", "ne", "in"):
                add(((*loc, op), f"{leaf.fact} is a number: compare it with lt, lte, gt or gte"))
            elif spec.kind == "categorical":
                if op in ("lt", "lte", "gt", "gte"):
                    add(((*loc, op), f"{leaf.fact} is categorical: compare it with eq, ne or in"))
                    continue
                allowed = tuple(groups) if leaf.fact == "risk_group" else spec.values
                for value in operand if op == "in" else [operand]:
                    if value not in allowed:
                        add(((*loc, op), f"expected one of {', '.join(allowed)}, got {value!r}"))
    for i, d in enumerate(defn.derived_facts):
        spec = FACTS.get(d.id)
        if spec is None or spec.kind != "categorical":
            add((("derived_facts", i, "id"), f"expected a categorical fact to derive, got {d.id!r}"))
            continue
        for j, case in enumerate(d.cases):
            if case.value not in spec.values:
                add((("derived_facts", i, "cases", j, "value"),
                     f"expected one of {', '.join(spec.values)}, got {case.value!r}"))
        if d.otherwise is not None and d.otherwise not in spec.values:
            add((("derived_facts", i, "otherwise"), f"expected one of {', '.join(spec.values)}, got {d.otherwise!r}"))

    # Graph: references, default edges last, decisions, reachability, dead ends, cycles.
    initial = defn.initial or (ids[0] if ids else None)
    if defn.initial is not None and defn.initial not in by_id:
        add((("initial",), f"expected an element id ({', '.join(ids)}), got {defn.initial!r}"))
    out: dict[str, list[int]] = {}
    for i, t in enumerate(defn.transitions):
        for end in ("source", "to"):
            name = getattr(t, end)
            if name not in by_id:
                add((("transitions", i, "from" if end == "source" else "to"),
                     f"expected an element id ({', '.join(ids)}), got {name!r}"))
        if t.when is not None and (t.rule_source is None or t.rule_evidence is None):
            add((("transitions", i), "a guarded transition needs rule_source and rule_evidence (where the rule "
                                     "comes from, and how sure it is)"))
        out.setdefault(t.source, []).append(i)
    for source, edges in out.items():
        dests = [defn.transitions[i].to for i in edges]
        for k, i in enumerate(edges):
            t = defn.transitions[i]
            if t.to in dests[:k]:
                add((("transitions", i, "to"), f"a second transition from {source!r} to {t.to!r}"))
            if t.when is None and k != len(edges) - 1:
                add((("transitions", i, "when"),
                     f"the default transition from {source!r} (no `when`) must come last; later ones never apply"))
        decisions = {defn.transitions[i].decision for i in edges}
        if len(decisions) > 1:
            add((("transitions", edges[-1], "decision"),
                 f"transitions from {source!r} name different decisions: {sorted(map(str, decisions))}"))
        if source in by_id and by_id[source].final:
            add((("transitions", edges[0], "from"), f"{source!r} is final: a final element has no transitions out"))
    for i, e in enumerate(defn.elements):
        if not e.final and e.id not in out:
            add((("elements", i), f"{e.id!r} is a dead end: give it a transition out, or mark it final: true"))
    if defn.end_of_therapy is not None:
        eot = defn.end_of_therapy
        if eot.element not in by_id:
            add((("end_of_therapy", "element"), f"expected an element id ({', '.join(ids)}), got {eot.element!r}"))
        elif by_id[eot.element].until != "end_of_therapy":
            add((("end_of_therapy", "element"), f"{eot.element!r} must have until: end_of_therapy"))
        if eot.weeks is not None and (eot.weeks.value is None or eot.weeks.value <= 0
                                      or eot.weeks.value * 7 != int(eot.weeks.value * 7)):
            add((("end_of_therapy", "weeks", "value"), f"expected a positive number of weeks, got {eot.weeks.value}"))
    if initial in by_id:
        seen = {initial}
        stack = [initial]
        while stack:
            here = stack.pop()
            for i in out.get(here, ()):
                nxt = defn.transitions[i].to
                if nxt in by_id and nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        for i, e in enumerate(defn.elements):
            if e.id not in seen:
                add((("elements", i, "id"), f"{e.id!r} cannot be reached from the first element {initial!r}"))
        # Cycles: depth-first search with colours.
        colour: dict[str, int] = {}

        def visit(node: str, path: list[str]) -> None:
            colour[node] = 1
            for i in out.get(node, ()):
                nxt = defn.transitions[i].to
                if colour.get(nxt) == 1:
                    add((("transitions", i, "to"), "cycle: " + " → ".join([*path, node, nxt])
                         + " (repeat an element with a count instead)"))
                elif nxt in by_id and colour.get(nxt) is None:
                    visit(nxt, [*path, node])
            colour[node] = 2

        visit(initial, [])
    return problems


# --------------------------------------------------------------------------- compile


class _Cursor:
    """The replay model: where one patient is, and the facts its guards read."""

    __slots__ = ("facts", "state")

    def __init__(self, state: str, facts: dict[str, Any]) -> None:
        self.state = state
        self.facts = facts


def _replay_condition(edges: tuple[Edge, ...], index: int) -> Any:
    """The condition the replay machine checks before taking ``edges[index]``.

    Edges out of an element are ordered: the first whose rule holds is the protocol's path.
    A recorded move is accepted unless the protocol definitely says otherwise: its own rule
    is not definitely false, and no earlier edge's rule definitely holds (a high-risk patient
    cannot be recorded as starting OCTADAD when the HSCT rule holds). A move recorded while a
    rule is still unknown is accepted; the plan reports it as a warning.
    """
    rule = _replay_rule(edges, index)

    def rule_allows(event: Any) -> bool:
        return rule(event.model.facts)

    return rule_allows


def _replay_rule(edges: tuple[Edge, ...], index: int) -> Callable[[dict[str, Any]], bool]:
    """``_replay_condition`` on the facts alone: what the per-patient replay calls directly
    (the same predicate the machine checks, so the two cannot disagree)."""
    earlier = tuple(e.guard for e in edges[:index] if e.guard is not None)
    own = edges[index].guard

    def allows(facts: dict[str, Any]) -> bool:
        if own is not None and own(facts) is False:
            return False
        return not any(g(facts) is True for g in earlier)

    return allows


class Protocol:
    """A validated protocol definition, compiled once for planning (see :func:`protocol.load_protocol`).

    Attributes: ``definition`` (the pydantic model), ``elements`` (id → CompiledElement, in
    order), ``initial``, ``table`` (id → edges), ``rules`` (eligibility/derived/risk),
    ``eot_days`` and ``eot_anchor`` (end of therapy), ``machine`` (the transitions Machine).
    """

    def __init__(self, defn: ProtocolDefinition, core: ProtocolDefinition | None = None) -> None:
        #: The definition as written (what validation reports and site amendments address).
        self.source = defn
        if core is None:
            core = expand(defn)[0]
        #: The core definition the machine runs on: repeats and replacements expanded.
        self.definition = defn = core
        #: ``(site name, amendment file)`` when a site amendment was applied (see ``_site``).
        self.site: tuple[str, str] | None = None
        self.path: str | None = None
        self.id = defn.id
        self.version = defn.version
        self.rules = RuleSet(defn.eligibility, defn.derived_facts, defn.risk_groups)
        self.timepoints = {t.id: t.label for t in defn.timepoints}
        self.randomisations = {r.id: tuple(a.id for a in r.arms) for r in defn.randomisations}
        #: Clinical choices (``kind: choice``): recording the start they lead to records them.
        self.choices = frozenset(r.id for r in defn.randomisations if r.kind == "choice")
        self.elements: dict[str, CompiledElement] = {}
        eot = defn.end_of_therapy
        for index, e in enumerate(defn.elements):
            slots: list[Slot] = []
            for a in e.administrations:
                slots.append(Slot(e.id, len(slots), "administration", a.key, a.drug, a.route, a.frequency,
                                  a.days.terms, a.days.text, a.dose, _weakest(a.days.evidence, _dose_evidence(a.dose)),
                                  None, None, tuple(a.notes), a, _window(a.window)))
            for s in e.assessments:
                slots.append(Slot(e.id, len(slots), "assessment", s.id, s.name, None, None, s.days.terms,
                                  s.days.text, None, s.days.evidence, s.timepoint, s.kind, (), s, _window(s.window)))
            infusion = None
            for a_index, a in enumerate(e.administrations):
                if a.infusion is None or not a.days.terms:
                    continue
                inf = a.infusion
                hours = int(inf.default_bag_hours.value or 24)
                first = min(t[0] for t in a.days.terms)
                last = max((t[1] if t[1] is not None else t[0]) for t in a.days.terms)
                ev = _weakest(inf.default_bag_hours.evidence, *(b.hours.evidence for b in inf.bags))
                infusion = InfusionRule(a_index, len(slots), first, last, int(inf.max_interruption_days.value or 0),
                                        {int(b.hours.value or 0): None if b.min_weight_kg is None
                                         else b.min_weight_kg.value for b in inf.bags},
                                        hours, _weakest(ev, inf.max_interruption_days.evidence))
                slots.append(bag_slot(e.id, len(slots), a, hours, first, last, ev))
                break  # one infusion with bag rules per element
            if e.length_days is not None:
                evidence = e.length_days.evidence
            elif e.until and eot is not None:
                evidence = eot.length.evidence
            else:
                evidence = "published"
            self.elements[e.id] = CompiledElement(
                e.id, index, e.title,
                None if e.length_days is None or e.length_days.value is None else int(e.length_days.value),
                e.until == "end_of_therapy", e.final, e.first_day,
                0 if e.start is None or e.start.gap_days is None or e.start.gap_days.value is None
                else int(e.start.gap_days.value),
                tuple(slots), evidence, e, gate=_gate(e), infusion=infusion,
                requires=tuple((compile_condition(r.when), r, describe(r.when)) for r in e.requires),
            )
        self.initial = defn.initial or defn.elements[0].id
        table: dict[str, list[Edge]] = {}
        for t in defn.transitions:
            siblings = [x for x in defn.transitions if x.source == t.source]
            decision = t.decision or (f"after_{t.source}" if len(siblings) > 1 else f"{t.source}_to_{t.to}")
            table.setdefault(t.source, []).append(Edge(
                t.source, t.to, None if t.when is None else compile_condition(t.when), t.when, decision, t.label,
                () if t.when is None else depends_on(t.when),
                "otherwise" if t.when is None else describe(t.when),
                (((f"the rule {t.source} → {t.to} is a placeholder",) if t.rule_evidence == "placeholder" else ())
                 + (() if t.when is None else placeholders(t.when))),
            ))
        self.table: dict[str, tuple[Edge, ...]] = {k: tuple(v) for k, v in table.items()}
        self.age_banded = any(s.dose is not None and s.dose.basis == "age_banded"
                              for e in self.elements.values() for s in e.slots)
        #: Ages in completed months at which an age-fraction dose changes (issue 11), sorted.
        self.age_months = tuple(sorted({a.below_age_months for e in self.elements.values() for s in e.slots
                                        if s.dose is not None for a in (s.dose.age_fractions or ())}))
        self.eot_anchor = eot.anchor if eot else None
        tol = defn.dose_tolerance_percent
        #: (fraction, evidence): how far a given dose may differ from the computed one (issue 11:
        #: default ±5 %, a placeholder to verify).
        self.dose_tolerance = ((5.0 if tol is None or tol.value is None else tol.value) / 100.0,
                               "placeholder" if tol is None else tol.evidence)
        #: Calendar years of therapy (None when the length is in weeks): the plan ends on the
        #: anchor's date N years on minus a day; ``eot_days`` is then the simulator's estimate.
        self.eot_years = None if eot is None or eot.years is None or eot.years.value is None else int(eot.years.value)
        if eot is None or eot.length.value is None:
            self.eot_days = None
        elif eot.weeks is not None:
            self.eot_days = round(eot.length.value * 7)
        else:
            self.eot_days = round(eot.length.value * 365.25)
        self.eot_element = eot.element if eot else None
        self.eot_anchor_element = eot.anchor_element if eot else None
        # (source, dest) -> the rules of the edges between them, in order: the replay takes a
        # recorded move when one allows it, exactly as the machine's trigger would (it tries
        # the transitions of a trigger in order). ``None``: no edge, the move is refused.
        self.moves: dict[tuple[str, str], tuple[Callable[[dict[str, Any]], bool] | None, ...]] = {}
        for source, edges in self.table.items():
            for index, edge in enumerate(edges):
                rule = _replay_rule(edges, index) if edge.guard is not None or index > 0 else None
                self.moves[(source, edge.dest)] = (*self.moves.get((source, edge.dest), ()), rule)
        self.machine = self._build_machine()

    def allows(self, source: str, dest: str, facts: dict[str, Any]) -> bool:
        """Whether a recorded start of ``dest`` from ``source`` is accepted by the protocol's
        rules: the compiled table's answer, equal to triggering ``start_<dest>`` on the
        ``transitions`` machine (``tests/test_machine.py`` holds the two equal).

        >>> pr = load_protocol("interfant06-blinatumomab")  # doctest: +SKIP
        >>> pr.allows("marma", "octadad", {"risk_group": "HR"})  # doctest: +SKIP
        False
        """
        rules = self.moves.get((source, dest))
        if rules is None:
            return False
        return any(rule is None or rule(facts) for rule in rules)

    # -- the transitions machine ------------------------------------------------------

    def machine_spec(self) -> dict[str, Any]:
        """States and transitions as ``transitions`` keyword arguments (shared by the replay
        machine and the diagram machine, so both come from the same definition)."""
        states = [*self.elements, *OUTCOMES]
        transitions: list[dict[str, Any]] = []
        for source, edges in self.table.items():
            for index, edge in enumerate(edges):
                spec: dict[str, Any] = {"trigger": f"start_{edge.dest}", "source": source, "dest": edge.dest}
                if edge.guard is not None or index > 0:
                    spec["conditions"] = [_replay_condition(edges, index)]
                transitions.append(spec)
        for outcome in OUTCOMES:
            transitions.append({"trigger": outcome, "source": list(self.elements), "dest": outcome})
        return {"states": states, "transitions": transitions, "initial": self.initial}

    def _build_machine(self) -> Any:
        from transitions import Machine

        spec = self.machine_spec()
        return Machine(model=None, states=spec["states"], transitions=spec["transitions"],
                       initial=spec["initial"], auto_transitions=False, send_event=True)

    def cursor(self, facts: dict[str, Any]) -> _Cursor:
        """A fresh replay cursor at the initial element."""
        return _Cursor(self.initial, facts)

    def mermaid(self) -> str:
        """A Mermaid ``stateDiagram-v2`` of the protocol, drawn by transitions' GraphMachine,
        with each guard written out on its edge."""
        from transitions.extensions.diagrams import GraphMachine

        spec = self.machine_spec()
        labelled = []
        for t in spec["transitions"]:
            t = dict(t)
            edge = next((e for e in self.table.get(t["source"], ()) if f"start_{e.dest}" == t["trigger"]), None) \
                if isinstance(t["source"], str) else None
            if edge is not None and edge.guard is not None:
                t["conditions"] = [_named_true(edge.text)]
            elif edge is not None and len(self.table[edge.source]) > 1:
                t["conditions"] = [_named_true("otherwise")]
            labelled.append(t)
        labelled = [t for t in labelled if t["trigger"] not in OUTCOMES]
        model = type("DiagramModel", (), {})()  # GraphMachine attaches helpers to its model
        graph = GraphMachine(model=model, states=list(self.elements), transitions=labelled, initial=spec["initial"],
                             auto_transitions=False, graph_engine="mermaid", show_conditions=True,
                             title=f"{self.id} {self.version}")
        text = graph.get_graph().draw(None)
        lines = [ln for ln in text.splitlines() if not ln.strip().startswith(("classDef ", "Class "))]
        for e in self.elements.values():
            if e.final:
                lines.append(f"  {e.id} --> [*]")
        return "\n".join(lines).rstrip() + "\n"


def _named_true(text: str) -> Any:
    def cond(_: Any) -> bool:
        return True

    cond.__name__ = text
    return cond


# --------------------------------------------------------------------------- format sugar

Loc = tuple[Any, ...]


def check_sugar(defn: ProtocolDefinition) -> list[tuple[Loc, str]]:
    """Checks of the constructs that :func:`expand` rewrites (repeats, replacements, an
    element-anchored end of therapy), against the file as written."""
    problems: list[tuple[Loc, str]] = []
    add = problems.append
    ids = [e.id for e in defn.elements]
    tps = {t.id for t in defn.timepoints}
    initial = defn.initial or (ids[0] if ids else None)
    for i, e in enumerate(defn.elements):
        loc = ("elements", i)
        if e.repeat is not None and e.repeat.count.value is not None:
            if e.final:
                add(((*loc, "repeat"), "a final element cannot repeat"))
            for k in range(2, int(e.repeat.count.value) + 1):
                if f"{e.id}_{k}" in ids:
                    add(((*loc, "repeat"), f"cycle {k} would be {e.id}_{k!s}, which is already an element id"))
                for a in e.assessments:
                    if a.timepoint is not None and f"{a.timepoint}_{k}" in tps:
                        add(((*loc, "repeat"), f"cycle {k} samples time point {a.timepoint}_{k}, which is already "
                             f"declared: leave cycle time points to the repeat"))
            rids = {r.id for r in defn.randomisations}
            if e.repeat.up_to and any(f"{e.id}_after_{k}" in rids for k in range(1, int(e.repeat.count.value))):
                add(((*loc, "repeat", "up_to"), f"the choices {e.id}_after_<k> are made by the repeat: a "
                     f"randomisation of that name already exists"))
            if e.repeat.gap_days is not None and _whole(e.repeat.gap_days, 0) is None:
                add(((*loc, "repeat", "gap_days", "value"), "expected a whole number of days >= 0"))
        r = e.replaces
        if r is None:
            continue
        if r.element not in ids:
            add(((*loc, "replaces", "element"), f"expected an element id ({', '.join(ids)}), got {r.element!r}"))
        elif r.element == e.id:
            add(((*loc, "replaces", "element"), "an element cannot replace itself"))
        elif r.element == initial:
            add(((*loc, "replaces", "element"), f"the first element {initial!r} cannot be replaced"))
        if e.id == initial:
            add(((*loc, "replaces"), "the first element cannot replace another"))
        for j, t in enumerate(defn.transitions):
            if e.id in (t.source, t.to):
                add((("transitions", j), f"{e.id!r} replaces {r.element!r} and takes its transitions from it: "
                     f"remove this transition"))
    eot = defn.end_of_therapy
    if eot is not None and eot.anchor_element is not None and eot.anchor_element not in ids:
        add((("end_of_therapy", "anchor_element"), f"expected an element id ({', '.join(ids)}), got "
             f"{eot.anchor_element!r}"))
    return problems


def expand(defn: ProtocolDefinition) -> tuple[ProtocolDefinition, list[Loc], list[Loc]]:
    """Rewrite repeats and replacements into plain elements and transitions.

    Returns the core definition the machine runs on, and for each of its elements and
    transitions the place in the file it comes from (to point errors at the right line).
    Cycle 1 of a repeated element keeps its id (events recorded before a second cycle was
    added stay valid); cycle k is ``<id>_<k>``. A replacement is entered by a copy of each
    transition into the element it replaces, tried first, guarded by both conditions, and
    leaves by copies of that element's transitions out.
    """
    elements = list(defn.elements)
    eloc: list[Loc] = [("elements", i) for i in range(len(elements))]
    transitions = list(defn.transitions)
    tloc: list[Loc] = [("transitions", i) for i in range(len(transitions))]
    if not any(e.repeat is not None or e.replaces is not None for e in elements):
        return defn, eloc, tloc
    timepoints = list(defn.timepoints)
    randomisations = list(defn.randomisations)
    for r_i, e in enumerate(defn.elements):
        r = e.replaces
        if r is None:
            continue
        new_t: list[Transition] = []
        new_loc: list[Loc] = []
        for t, loc in zip(transitions, tloc, strict=True):
            if t.to == r.element:
                when = r.when if t.when is None else Condition.model_validate({"all": [t.when, r.when]})
                new_t.append(Transition.model_validate({
                    "from": t.source, "to": e.id, "when": when, "decision": t.decision,
                    "label": f"replaces {r.element}", "rule_source": r.rule_source, "rule_evidence": r.rule_evidence}))
                new_loc.append(("elements", r_i, "replaces"))
            new_t.append(t)
            new_loc.append(loc)
        for t in list(new_t):
            if t.source == r.element:
                new_t.append(t.model_copy(update={"source": e.id}))
                new_loc.append(("elements", r_i, "replaces"))
        transitions, tloc = new_t, new_loc
        elements[r_i] = elements[r_i].model_copy(update={
            "replaces": None, "notes": [*e.notes, f"Replaces {r.element} when {describe(r.when)}."]})
    for i, e in enumerate(defn.elements):
        rep = e.repeat
        if rep is None or rep.count.value is None:
            continue
        n = int(rep.count.value)
        last = f"{e.id}_{n}"
        exits = [t for t in transitions if t.source == e.id]
        transitions = [t.model_copy(update={"source": last}) if t.source == e.id else t for t in transitions]
        base = elements[i]
        prev = e.id
        for k in range(2, n + 1):
            cid = f"{e.id}_{k}"
            assessments = []
            for a in base.assessments:
                if a.timepoint is not None:
                    label = next((t.label for t in defn.timepoints if t.id == a.timepoint), a.timepoint)
                    timepoints.append(TimePoint(id=f"{a.timepoint}_{k}", label=f"{label} (cycle {k})"))
                    a = a.model_copy(update={"timepoint": f"{a.timepoint}_{k}", "name": f"{a.name} (cycle {k})"})
                assessments.append(a)
            start = StartRule(gap_days=rep.gap_days, counts=None if base.start is None else base.start.counts)
            elements.append(base.model_copy(update={
                "id": cid, "title": f"{e.title} (cycle {k} of {n})", "repeat": None, "start": start,
                "assessments": assessments, "notes": [*base.notes, f"Cycle {k} of {n} of {e.id}."]}))
            eloc.append(("elements", i))
            if not rep.up_to:
                transitions.append(Transition.model_validate({"from": prev, "to": cid}))
                tloc.append(("elements", i, "repeat"))
            else:
                # Another cycle, or the element's way out: a clinical choice per cycle.
                rid = f"{e.id}_after_{k - 1}"
                source = rep.count.source or defn.sources[0].key
                randomisations.append(Randomisation.model_validate({
                    "id": rid, "label": f"{e.title}: another cycle after cycle {k - 1}?", "kind": "choice",
                    "arms": [{"id": "another_cycle", "label": f"cycle {k}"},
                             {"id": "no_more_cycles", "label": "no more cycles"}],
                    "source": source, "evidence": rep.count.evidence}))
                transitions.append(Transition.model_validate({
                    "from": prev, "to": cid, "when": {"arm": rid, "eq": "another_cycle"},
                    "decision": rid, "rule_source": source, "rule_evidence": rep.count.evidence}))
                tloc.append(("elements", i, "repeat"))
                for t in exits:
                    transitions.append(t.model_copy(update={"source": prev, "decision": rid}))
                    tloc.append(("elements", i, "repeat"))
            prev = cid
        elements[i] = base.model_copy(update={"title": f"{e.title} (cycle 1 of {n})", "repeat": None})
    core = defn.model_copy(update={"elements": elements, "transitions": transitions, "timepoints": timepoints,
                                   "randomisations": randomisations})
    return core, eloc, tloc


def _remap(loc: Loc, eloc: list[Loc], tloc: list[Loc]) -> Loc:
    if len(loc) >= 2 and loc[0] == "elements" and isinstance(loc[1], int) and loc[1] < len(eloc):
        origin = eloc[loc[1]]
        return origin if origin[:2] != loc[:2] and len(origin) > 2 else (*origin, *loc[2:])
    if len(loc) >= 2 and loc[0] == "transitions" and isinstance(loc[1], int) and loc[1] < len(tloc):
        origin = tloc[loc[1]]
        return origin if origin[0] != "transitions" else (*origin, *loc[2:])
    return loc


def compile_definition(defn: ProtocolDefinition) -> tuple[Protocol | None, list[tuple[tuple[Any, ...], str]]]:
    """Check and compile; returns ``(compiled, [])`` or ``(None, problems)``.

    Repeats and replacements are checked as written, then expanded (:func:`expand`) and the
    core definition is checked; its problems point back at the file's lines.
    """
    problems = check_sugar(defn)
    if problems:
        return None, problems
    core, eloc, tloc = expand(defn)
    problems = [(_remap(loc, eloc, tloc), msg) for loc, msg in check_definition(core)]
    if problems:
        return None, problems
    return Protocol(defn, core), []
