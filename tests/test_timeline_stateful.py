"""Stateful tests of the live plan (issue 3): a hypothesis ``RuleBasedStateMachine`` records a
patient's history day by day on ``tests/data/timeline/timeline.yaml`` (see
``tests/test_timeline.py`` for its dates) and re-plans after every step.

Rules: start and complete the elements in order (with a bag duration for the blinatumomab
element), give / omit / delay items (every scope), modify doses (of standard or previous,
item or element scope), hold and resume an element, interrupt and resume the infusion
(short and long interruptions, a new bag duration), add measurements and blood counts, and
let the days pass. Every event is dated "today" and is valid by construction, so the engine
must accept it.

Invariants after every step:

- statuses (items, elements) and deviation kinds are from the documented sets;
- items are in date order; within an element, each slot's occurrences keep their element-day
  order (restarting at a new blinatumomab cycle);
- no item of an element before the element starts; elements do not overlap;
- the end of therapy stays anchored to diagnosis (2026-05-24), maintenance ends on it and no
  item is after it;
- exactly the items recorded as given / omitted have that status;
- no dose is above its standard dose;
- the recorded past stays put: an item of an element under way or completed that was dated
  before the previous plan's date keeps its date and dose;
- replay: ``plan()`` of the final patient file at each earlier as-of date equals the plan seen
  on that day, step by step (checked for recent days at each step and for all at the end).

The rules steer around the engine bugs still documented by strict xfail tests in
``test_timeline.py``: nothing recorded about items while the element is paused (delays,
given, omitted), no pause while a later item is already recorded, no delay of an item whose
slot has a later occurrence already recorded, no delay of a maintenance item past the end of
therapy. (They used to steer around more; those bugs are fixed and the rules now
exercise those paths: bag changes recorded, completion while paused, bag durations on
resumption, items given early, interruptions on a day with a recorded item, delays of single
infusion days, weighing on the day of a dose, a pause on the day of a delay.)
"""

from __future__ import annotations

import copy
import datetime as dt
import re
from pathlib import Path
from typing import Any

from hypothesis import Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import protocol
from protocol._models import Patient
from protocol._schedule import DoseResult, ModifiedDose

HERE = Path(__file__).resolve().parent
PROTO = protocol.load_protocol(HERE / "data" / "timeline" / "timeline.yaml")
D = dt.date.fromisoformat
DAY = dt.timedelta(days=1)
DIAGNOSIS = D("2026-01-05")
EOT = D("2026-05-24")  # 20 weeks from diagnosis, day 1 = diagnosis
ORDER = ("alpha", "blina", "gamma", "maint")
ITEM_STATUSES = {"given", "omitted", "done", "planned", "overdue", "unrecorded", "held", "pending_decision"}
ELEMENT_STATUSES = {"completed", "in_progress", "planned", "pending_decision", "stopped"}
DEVIATIONS = {"out_of_window", "overdue", "weight_change", "count_gate", "dose_above_plan", "dose_below_plan"}
BASE: dict[str, Any] = {
    "id": "TL-STATE", "protocol": "timeline-test", "birth_date": "2025-01-01", "sex": "female",
    "diagnosis_date": DIAGNOSIS.isoformat(), "kmt2a": "rearranged", "wbc_at_diagnosis": 10,
}
PICK = st.integers(min_value=0, max_value=10_000)
NEW_CYCLE = re.compile(r"a new cycle starts on (\d{4}-\d{2}-\d{2})")


def fingerprint(p: protocol.Plan) -> tuple[Any, ...]:
    """Everything a plan says, as comparable tuples (cheaper than ``to_dict``): each item's
    date, element day, study day, element, slot, dose and working, status, branch and note;
    the elements; decisions; deviations; warnings; the end of therapy."""
    doses: dict[int, Any] = {}  # one dose object serves many items: its working is formatted once

    def dose(d: Any) -> Any:
        key = id(d)
        if key not in doses:
            doses[key] = None if d is None else (d.amount, d.working)
        return doses[key]

    rows = tuple((r[0], r[1], r[2], r[3].element, r[3].key, r[3].name, dose(r[4]), r[5], r[6], r[7]) for r in p.rows)
    elements = tuple(tuple(e.to_dict().values()) for e in p.elements)
    decisions = tuple((d.id, d.status, d.outcome, d.date) for d in p.decisions)
    deviations = tuple(tuple(d.values()) for d in p.deviations)
    return rows, elements, decisions, deviations, tuple(p.warnings), p.end_of_therapy


class Timeline(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.today = DIAGNOSIS
        self.events: list[dict[str, Any]] = []
        self.counts: list[dict[str, Any]] = []
        self.measurements: list[dict[str, Any]] = [{"date": DIAGNOSIS.isoformat(), "height_cm": 80, "weight_kg": 11.25}]
        self.current = -1  # index in ORDER of the element started last
        self.started_on: dt.date | None = None
        self.done = False
        self.last_end = DIAGNOSIS - DAY  # last recorded completion
        self.pause: tuple[str, dt.date] | None = None  # ("hold" | "interruption", since)
        self.recorded: dict[str, str] = {}  # ref -> given | omitted
        self.snapshots: dict[dt.date, dict[str, Any]] = {}
        self.previous: protocol.Plan | None = None
        self.plan = self.replan()

    # -- plumbing -----------------------------------------------------------------

    def patient(self) -> Patient:
        data = copy.deepcopy(BASE)
        data.update(events=self.events, counts=self.counts, measurements=self.measurements)
        return Patient.model_validate(data)

    def replan(self) -> protocol.Plan:
        self.current_patient = self.patient()
        p = protocol.plan(self.current_patient, PROTO, as_of=self.today)
        self.previous = getattr(self, "plan", None)
        self.plan = p
        self.snapshots[self.today] = fingerprint(p)
        return p

    def record(self, event: dict[str, Any]) -> None:
        self.events.append({**event, "date": self.today.isoformat()})
        self.replan()

    @property
    def element(self) -> str | None:
        return ORDER[self.current] if self.current >= 0 else None

    def under_way(self) -> bool:
        return self.current >= 0 and not self.done

    def items_of_current(self, *statuses: str) -> list[protocol.Item]:
        return [i for i in self.plan.items if i.element == self.element and i.status in statuses]

    # -- time, measurements, counts -----------------------------------------------------

    @rule(days=st.integers(min_value=1, max_value=9))
    def advance(self, days: int) -> None:
        if self.today + days * DAY > EOT + 10 * DAY:
            return
        self.today += days * DAY
        self.replan()

    @rule(factor=st.floats(min_value=0.85, max_value=1.15))
    def measure(self, factor: float) -> None:
        if any(m["date"] == self.today.isoformat() for m in self.measurements):
            return
        self.measurements.append({"date": self.today.isoformat(), "height_cm": 80, "weight_kg": round(11.25 * factor, 1)})
        self.replan()

    @rule(anc=st.sampled_from([0.1, 0.4, 0.5, 1.2]), platelets=st.sampled_from([10, 49, 50, 150]))
    def blood_count(self, anc: float, platelets: float) -> None:
        if any(c["date"] == self.today.isoformat() for c in self.counts):
            return
        self.counts.append({"date": self.today.isoformat(), "anc": anc, "platelets": platelets})
        self.replan()

    # -- elements -------------------------------------------------------------------

    @precondition(lambda self: self.pause is None and self.current < len(ORDER) - 1
                  and (self.current < 0 or self.done))
    @rule(bag=st.sampled_from([None, 24, 48, 72, 96]))
    def start_next(self, bag: int | None) -> None:
        if self.today <= self.last_end:
            return
        self.current += 1
        self.done = False
        self.started_on = self.today
        event: dict[str, Any] = {"type": "element_started", "element": self.element}
        if self.element == "blina" and bag is not None:
            event["bag_hours"] = bag
        self.record(event)

    @precondition(lambda self: self.under_way() and self.element != "maint")
    @rule()
    def complete(self) -> None:
        self.done = True
        self.pause = None  # a pause still open ends with the element
        self.last_end = self.today
        self.record({"type": "element_completed", "element": self.element})

    @initialize(days=st.integers(min_value=0, max_value=2), first=st.integers(min_value=0, max_value=len(ORDER) - 1),
                bag=st.sampled_from([None, 48, 96]))
    def start_treatment(self, days: int, first: int, bag: int | None) -> None:
        """Start alpha, then (to reach every element in a few steps) complete the elements before
        ``ORDER[first]`` on their planned last days and start each next one the day after."""
        self.today += days * DAY
        self.start_next(bag)
        for _ in range(first):
            end = next(e for e in self.plan.elements if e.id == self.element).planned_end
            self.today = max(self.today, end)
            self.complete()
            self.today += DAY
            self.start_next(bag)

    @precondition(lambda self: self.under_way() and self.pause is None and self.element != "maint")
    @rule(days=st.integers(min_value=0, max_value=12), bag=st.sampled_from([None, 24, 72]))
    def progress(self, days: int, bag: int | None) -> None:
        """Let some days pass, complete the element and start the next one the day after."""
        self.today += days * DAY
        self.complete()
        self.today += DAY
        self.start_next(bag)

    def recorded_ahead(self) -> bool:
        return any(i.element == self.element and i.date > self.today and i.status in ("given", "omitted")
                   for i in self.plan.items)

    @precondition(lambda self: self.under_way() and self.pause is None)
    @rule()
    def hold(self) -> None:
        if self.recorded_ahead():
            return  # the pause would move items past them (xfail test)
        self.pause = ("hold", self.today)
        self.record({"type": "element_held", "element": self.element, "reason": "infection"})

    @precondition(lambda self: self.pause is not None and self.pause[0] == "hold")
    @rule()
    def resume(self) -> None:
        self.pause = None
        self.record({"type": "element_resumed", "element": self.element})

    @precondition(lambda self: self.under_way() and self.pause is None and ORDER[self.current] == "blina")
    @rule()
    def interrupt(self) -> None:
        if self.recorded_ahead():
            return  # the pause would move items past them (xfail test)
        self.pause = ("interruption", self.today)
        self.record({"type": "infusion_interrupted", "element": "blina", "reason": "CRS"})

    @precondition(lambda self: self.pause is not None and self.pause[0] == "interruption")
    @rule(bag=st.sampled_from([None, 24, 72, 96]))
    def resume_infusion(self, bag: int | None) -> None:
        self.pause = None
        event: dict[str, Any] = {"type": "infusion_resumed", "element": "blina"}
        if bag is not None:
            event["bag_hours"] = bag
        self.record(event)

    # -- items ----------------------------------------------------------------------

    def _recordable(self) -> list[protocol.Item]:
        return [i for i in self.items_of_current("planned", "unrecorded", "overdue")
                if i.date <= self.today + DAY and i.ref not in self.recorded]

    @precondition(lambda self: self.under_way() and self.pause is None)
    @rule(pick=PICK, how=st.sampled_from(["no dose", "planned dose", "less"]))
    def give(self, pick: int, how: str) -> None:
        candidates = self._recordable()
        if not candidates:
            return
        it = candidates[pick % len(candidates)]
        event: dict[str, Any] = {"type": "item_given", "item": it.ref}
        if how != "no dose" and it.dose is not None and it.dose.amount is not None:
            shown = float(it.dose.text.split()[0])
            event["dose"] = shown if how == "planned dose" else round(shown * 0.9, 3)
        self.recorded[it.ref] = "given"
        self.record(event)

    @precondition(lambda self: self.under_way() and self.pause is None)
    @rule(pick=PICK)
    def omit(self, pick: int) -> None:
        candidates = self._recordable()
        if not candidates:
            return
        it = candidates[pick % len(candidates)]
        self.recorded[it.ref] = "omitted"
        self.record({"type": "item_omitted", "item": it.ref, "reason": "parents declined"})

    @precondition(lambda self: self.under_way() and self.pause is None)
    @rule(pick=PICK, days=st.integers(min_value=1, max_value=5), scope=st.sampled_from(["item", "element", "all"]))
    def delay(self, pick: int, days: int, scope: str) -> None:
        candidates = [i for i in self.items_of_current("planned") if i.date >= self.today]
        if not candidates:
            return
        it = candidates[pick % len(candidates)]
        same_slot = [i for i in self.plan.items if i.element == it.element and i.slot.key == it.slot.key]
        if any(i.element_day > it.element_day and i.status in ("given", "omitted") for i in same_slot):
            return  # it would pass a later occurrence already recorded (xfail test)
        if it.element == "maint" and it.date + days * DAY > EOT:
            return  # refused because of items past the end of therapy, not on the plan (xfail test)
        if scope == "item":  # before the slot's next occurrence (on or after it is refused)
            later = [i.date for i in self.plan.items if i.element == it.element and i.slot.key == it.slot.key
                     and i.element_day > it.element_day]
            if later:
                days = min(days, (min(later) - it.date).days - 1)
            if days < 1:
                return
        self.record({"type": "item_delayed", "item": it.ref, "to": (it.date + days * DAY).isoformat(), "scope": scope,
                     "reason": "low counts"})

    @precondition(lambda self: self.under_way() and self.pause is None)
    @rule(pick=PICK, percent=st.sampled_from([50, 75, 80, 100]), of=st.sampled_from(["standard", "previous"]),
          scope=st.sampled_from(["item", "element"]))
    def modify(self, pick: int, percent: int, of: str, scope: str) -> None:
        candidates = [i for i in self.items_of_current("planned") if i.date >= self.today and i.dose is not None
                      and i.dose.amount is not None]
        if not candidates:
            return
        it = candidates[pick % len(candidates)]
        self.record({"type": "dose_modified", "item": it.ref, "percent": percent, "of": of, "scope": scope,
                     "reason": "toxicity"})

    # -- invariants -----------------------------------------------------------------------

    @invariant()
    def documented_statuses(self) -> None:
        p = self.plan
        assert {i.status for i in p.items} <= ITEM_STATUSES
        assert {e.status for e in p.elements} <= ELEMENT_STATUSES
        assert {d["kind"] for d in p.deviations} <= DEVIATIONS

    @invariant()
    def dates_never_go_backwards(self) -> None:
        items = self.plan.items
        assert [i.date for i in items] == sorted(i.date for i in items)
        # A long interruption starts a new cycle (element days restart): the span note says when.
        cycles = {e.id: sorted(D(d) for d in NEW_CYCLE.findall(e.note or "")) for e in self.plan.elements}
        last_day: dict[tuple[str, str, int], int] = {}
        for i in items:
            key = (i.element, i.slot.key, sum(1 for d in cycles.get(i.element, ()) if d <= i.date))
            assert i.element_day >= last_day.get(key, i.element_day), (i.ref, i.date, i.note)
            last_day[key] = i.element_day

    @invariant()
    def nothing_before_its_element_starts(self) -> None:
        p = self.plan
        for e in p.elements:
            start = e.actual_start or e.planned_start
            early = [i.ref for i in p.items if i.element == e.id and i.date < start]
            assert not early, (e.id, start, early)
        for a, b in zip(p.elements, p.elements[1:], strict=False):
            end = a.actual_end or a.planned_end
            assert (b.actual_start or b.planned_start) > end, (a, b)

    @invariant()
    def end_of_therapy_is_anchored(self) -> None:
        p = self.plan
        assert p.end_of_therapy == EOT
        maint = next(e for e in p.elements if e.id == "maint")
        assert maint.planned_end == EOT
        if maint.planned_start <= EOT:
            assert all(i.date <= EOT for i in p.items), max(i.date for i in p.items)

    @invariant()
    def recorded_items_have_their_status(self) -> None:
        by_ref: dict[str, set[str]] = {}
        for i in self.plan.items:
            by_ref.setdefault(i.ref, set()).add(i.status)
        for ref, status in self.recorded.items():
            assert status in by_ref.get(ref, set()), (ref, status, by_ref.get(ref))
        flagged = {i.ref: i.status for i in self.plan.items if i.status in ("given", "omitted")}
        assert flagged == {r: s for r, s in self.recorded.items() if r in flagged}
        assert set(flagged) == set(self.recorded)

    @invariant()
    def never_above_standard(self) -> None:
        for i in self.plan.items:
            d = i.dose
            if isinstance(d, ModifiedDose) and d.amount is not None:
                standard = DoseResult(d.slot, d.measurement, d.bsa, d.age_years).amount
                assert standard is not None and d.amount <= standard + 1e-9, (i.ref, d.amount, standard)

    @invariant()
    def the_past_stays_put(self) -> None:
        before, now = self.previous, self.plan
        if before is None:
            return
        live = {e.id for e in before.elements if e.status in ("in_progress", "completed")}
        past = {(i.ref, i.date, None if i.dose is None else i.dose.amount) for i in before.items
                if i.element in live and i.date < before.as_of}
        kept = {(i.ref, i.date, None if i.dose is None else i.dose.amount) for i in now.items}
        assert past <= kept, sorted(past - kept)

    @invariant()
    def replay_of_the_log_equals_what_was_seen(self) -> None:
        # The plan as of the last few recorded days, rebuilt from today's whole patient file.
        patient = self.current_patient
        for day in sorted(self.snapshots)[-2:]:
            assert fingerprint(protocol.plan(patient, PROTO, as_of=day)) == self.snapshots[day], day

    def teardown(self) -> None:
        patient = self.patient()
        for day, seen in self.snapshots.items():
            assert fingerprint(protocol.plan(patient, PROTO, as_of=day)) == seen, day


# No shrinking phase: a failing run of 35 steps can take hypothesis minutes to shrink, which
# would blow the suite's time budget; the unshrunk steps are printed and are enough to debug.
Timeline.TestCase.settings = settings(max_examples=30, stateful_step_count=35, deadline=None,
                                      phases=(Phase.explicit, Phase.reuse, Phase.generate))
TestTimeline = Timeline.TestCase
