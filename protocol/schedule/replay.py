"""Stage 1 of a plan: replay what was recorded.

Facts and risk from the patient file, refusals of what cannot have happened (a date after
today, a WHO-implausible measurement), then each recorded start, completion and outcome through
the protocol's rules (the compiled table, or the ``transitions`` machine when
``_Builder.via_machine`` is set); :meth:`_Replay.build` runs every stage in order."""

from __future__ import annotations

import datetime as dt
from operator import attrgetter, itemgetter
from typing import Any

from transitions import MachineError

from .._errors import IneligibleError, PatientError, Problem
from .._growth import check_measurement
from .._io import format_loc
from .._machine import OUTCOMES
from .._models import Event
from .._rules import RiskResult, add_months, explain, patient_facts

from .common import _eligibility_field, _narrow, _Open
from .records import Plan

_DATE = attrgetter("date")
_FIRST = itemgetter(0)


class _Replay:
    """The replay of recorded element events: facts and eligibility, what cannot have happened,
    recorded moves through the protocol, the end of therapy, and the build that runs every stage."""

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
            if not records or (max(self.ev_dates) if field_ == "events" else max(map(_DATE, records))) <= today:
                continue
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
        facts = patient_facts(patient, self.as_of, self.ev_kinds)
        for i, r in enumerate(patient.mrd):
            if r.timepoint not in p.timepoints:
                self.problem(("mrd", i, "timepoint"), f"expected a time point of {p.id} "
                             f"({', '.join(p.timepoints)}), got {r.timepoint!r}")
        seen_arms: dict[str, int] = {}
        for i, ev in enumerate(patient.events if "randomised" in self.ev_kinds else ()):
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
        self.risk = risk
        if self.problems:
            raise PatientError(self.problems)
        p = self.p
        t0 = self.ctx.t0
        cur = _Open(p.initial, t0)
        cursor = p.cursor(facts)
        events = self.patient.events
        dates = self.ev_dates
        order = sorted(range(len(events)), key=dates.__getitem__)  # stable: same-day entries in file order
        if order and dates[order[-1]] > self.as_of:
            as_of = self.as_of
            order = [i for i in order if dates[i] <= as_of]
        moves = self.index_adjustments(events, order)
        # Recorded starts by element, in date order: a completion looks up the next start of
        # its element here (a scan of every event per completion grew with what was recorded).
        starts: dict[str, list[dt.date]] = {}
        for _, e in moves:
            if e.type == "element_started" and e.element is not None:
                starts.setdefault(e.element, []).append(e.date)
        for i, ev in moves:
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
                if self.via_machine or self.reference:  # an outcome ends any element: the table needs no check
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
                later = next((d for d in starts.get(target, ()) if d > ev.date), None)
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
        for element, events in self.by_element.items():
            cols = self.given_cols.get(element)
            if self.consumed.issuperset(map(_FIRST, events) if cols is None else cols[0]):
                continue
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
        failed, _ = self.unmet(target, facts)
        if failed:
            self.problem(field, f"the patient may not start {target!r}: {'; '.join(failed)}")
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
        if self.via_machine or self.reference:
            cursor.state = cur.id
            try:
                moved = p.machine.events[f"start_{target}"].trigger(cursor)
            except MachineError:  # pragma: no cover - the table and the machine come from one definition
                moved = False
        else:
            moved = p.allows(cur.id, target, facts)
        if not moved and (getattr(p, "settled", None) or {}).get(edge.decision) == target:
            # Taken before the patient moved to this version (issue 15): judged by the version
            # in force then, kept as it was taken; said, since this version's rule differs.
            moved = True
            self.warnings.append(f"decision {edge.decision}: {target} was taken under an earlier version of the "
                                 f"protocol; this version's rule ({edge.text}) is not applied to it")
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
