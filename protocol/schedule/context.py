"""Per-patient inputs on integer days (measurements, BSA, ages) and the emission of an element's
items, with doses computed once per segment between changes of their inputs."""

from __future__ import annotations

import datetime as dt
from bisect import bisect_left, bisect_right
from functools import lru_cache
from operator import attrgetter
from typing import Any


from .._dose import DoseResult, mosteller
from .._machine import Protocol, Slot
from .._models import Patient
from .._rules import add_months, birthday, completed_months



#: Doses are recomputed within an element when the weight has changed by more than this
#: fraction since the measurement they were computed from (the ±10 % re-check of chemotherapy
#: order entry, anchors.md §1.9); otherwise only at each element start.
WEIGHT_CHANGE = 0.10


_DATE = attrgetter("date")


@lru_cache(maxsize=4096)
def _month_points(birth: dt.date, months: tuple[int, ...]) -> tuple[int, ...]:
    """Ordinals of the days a child born on ``birth`` reaches each age in ``months``, sorted."""
    return tuple(sorted(add_months(birth, n).toordinal() for n in months))


@lru_cache(maxsize=4096)
def _birthdays(birth: dt.date, years: int) -> tuple[int, ...]:
    """Ordinals of the birth day and the first ``years - 1`` birthdays."""
    return tuple(birthday(birth, k).toordinal() for k in range(years))


@lru_cache(maxsize=1024)
def _has_age_fractions(slots: tuple[Slot, ...]) -> bool:
    return any(s.dose is not None and s.dose.age_fractions for s in slots)


@lru_cache(maxsize=1024)
def chased_positions(element: Any, length: int) -> tuple[int, ...]:
    """Positions in the element's day template of the items that can be overdue (assessments
    and items with a window), in day order."""
    _, _, slots = element.fixed if length == element.length and element.fixed is not None \
        else element.template(length)
    return tuple(pos for pos, s in enumerate(slots) if s.kind == "assessment" or s.window is not None)


def _segment(out: list[tuple[Any, ...]], base: int, sbase: int, days: tuple[int, ...], ks: tuple[int, ...],
             slots: tuple[Slot, ...], lo: int, hi: int, doses: list[DoseResult | None], status: str,
             per_slot: list[str] | None, branch: str | None, dated: str | None,
             over: list[str | None] | None = None) -> None:
    """Append the rows of template positions ``lo:hi`` (one dose per slot), plain tuples in
    :class:`Item` field order built by one comprehension. ``over``: by template position, the
    note of an item recorded given (its status ``given``), None for the others."""
    if lo or hi != len(days):
        days, ks, slots = days[lo:hi], ks[lo:hi], slots[lo:hi]
        if over is not None:
            over = over[lo:hi]
    if over is not None:
        seg4 = zip(days, ks, slots, over)
        if per_slot is None:
            out.extend([(base + d, d, sbase + d, s, doses[k], status if n is None else "given", branch, n, dated)
                        for d, k, s, n in seg4])
        else:
            out.extend([(base + d, d, sbase + d, s, doses[k], per_slot[k] if n is None else "given", branch, n,
                         dated) for d, k, s, n in seg4])
        return
    seg = zip(days, ks, slots)
    if per_slot is None:
        out.extend([(base + d, d, sbase + d, s, doses[k], status, branch, None, dated) for d, k, s in seg])
    else:
        out.extend([(base + d, d, sbase + d, s, doses[k], per_slot[k], branch, None, dated) for d, k, s in seg])


class _Context:
    """Per-patient inputs on integer days, shared by replay and projection."""

    __slots__ = ("age_banded", "age_months", "birth", "birthdays", "bsa", "flags", "horizon", "m_ords",
                 "measurements", "month_points", "results", "t0", "weights")

    def __init__(self, protocol: Protocol, patient: Patient, as_of_ord: int, horizon: int) -> None:
        self.t0 = patient.start_date.toordinal()
        as_of = dt.date.fromordinal(as_of_ord)
        ms = sorted((m for m in patient.measurements if m.date <= as_of), key=_DATE)
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
        self.month_points = _month_points(self.birth, protocol.age_months)
        self.horizon = 0
        self.cover(horizon)
        self.results = {r.timepoint for r in patient.mrd if r.date <= as_of}
        self.flags: list[tuple[int, str, str]] = []  # (ordinal, element, message): weight changes

    def cover(self, last: int) -> None:
        """Make sure every birthday up to ``last`` is known (ages only matter for age bands)."""
        if last <= self.horizon:
            return
        self.horizon = last
        if not self.age_banded:
            return
        # Birthdays by birth date and count: a registry's patients share birth dates.
        years = (last - self.birthdays[0]) // 365 + 2
        known = _birthdays(self.birth, years)
        self.birthdays = list(known[:bisect_right(known, last)])

    def doses_at(self, slots: tuple[Slot, ...], ordinal: int, m_index: int) -> list[DoseResult | None]:
        """Doses of every slot on ``ordinal`` from measurement ``m_index`` (-1: none)."""
        m, bsa = (self.measurements[m_index], self.bsa[m_index]) if m_index >= 0 else (None, None)
        age = bisect_right(self.birthdays, ordinal) - 1
        months = (completed_months(self.birth, dt.date.fromordinal(ordinal))
                  if self.age_months and _has_age_fractions(slots) else None)
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
            b = self.birthdays if self.age_banded else ()
            mp = self.month_points
            lo_b, hi_b = bisect_right(b, start), bisect_right(b, last)
            lo_m, hi_m = bisect_right(mp, start), bisect_right(mp, last)
            bdays = sorted({*b[lo_b:hi_b], *mp[lo_m:hi_m]}) if lo_b < hi_b or lo_m < hi_m else ()
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

    def flag_only(self, element: Any, start: int, length: int, stop: int | None) -> None:
        """What :meth:`emit` records besides the rows, without them: the weight changes flagged
        in the occurrence (for a reader that lists none of its rows, see ``plan_rows_before``)."""
        if length <= 0 or not element.slots:
            return
        days = (element.fixed if length == element.length else element.template(length))[0]
        last = start + length - 1 if stop is None else min(stop, start + length - 1)
        if last > self.horizon:
            self.cover(last + 366)
        if bisect_right(days, last - (start - element.first_day)) == 0:
            return
        self.change_points(element.id, start, last)

    def emit(self, element: Any, start: int, length: int, stop: int | None, status: str, branch: str | None,
             out: list[tuple[Any, ...]], dated: str | None = None, today: int | None = None,
             over: list[str | None] | None = None) -> None:
        """Append the items of one element occurrence starting on ordinal ``start``.

        Rows are plain tuples in :class:`Item` field order, built by one comprehension per
        segment between changes of the dose inputs; doses are computed once per segment.
        ``today`` (the element is under way): a planned administration dated before it, with
        no window, is emitted ``unrecorded`` (assessments and windowed items are left to
        :meth:`_Projection.overdue`). ``over``: notes of the items recorded given, by template
        position (see :func:`_segment`).
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
        sbase = base - self.t0 + 1
        if not cps and today is None:  # one segment (the common case)
            _segment(out, base, sbase, days, ks, slots, 0, end, self.doses_at(all_slots, start, m_first),
                     status, per_slot, branch, dated, over)
            return
        bounds = [0, *(bisect_left(days, cp - base, 0, end) for cp, _ in cps), end]
        ats = [(start, m_first), *cps]
        cut = 0 if today is None else bisect_left(days, today - base, 0, end)  # rows before: in the past
        past: list[str] = []
        if cut:
            past = [("unrecorded" if st == "planned" and s.kind != "assessment" and s.window is None else st)
                    for s, st in zip(all_slots, per_slot or [status] * len(all_slots), strict=True)]
        for lo, hi, (at, m_index) in zip(bounds, bounds[1:], ats, strict=False):
            if hi <= lo:
                continue
            dl = self.doses_at(all_slots, at, m_index)
            if lo < cut:
                mid = min(cut, hi)
                _segment(out, base, sbase, days, ks, slots, lo, mid, dl, status, past, branch, dated, over)
                if mid == hi:
                    continue
                lo = mid
            _segment(out, base, sbase, days, ks, slots, lo, hi, dl, status, per_slot, branch, dated, over)
