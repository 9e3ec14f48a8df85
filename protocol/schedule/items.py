"""Stage 2: recorded item events applied to an element's rows (given, omitted, delayed,
dose modified; holds and interruptions through :mod:`.infusions`). Rows are found through an
index by (slot, element day), never by a scan per event."""

from __future__ import annotations

import datetime as dt
from bisect import bisect_right
from operator import itemgetter
from typing import Any


from .._dose import DoseResult, ModifiedDose, fmt_amount
from .._models import Event

from .common import _join, _ref


class _ItemEvents:
    """Item events applied to an element's rows: given, omitted, delayed, dose modified."""

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
                rows, end, note = self.resume(el, rows, start, end, pause, when, status, branch, hours, pinned,
                                              interruption_hours=ev.interruption_hours)
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
