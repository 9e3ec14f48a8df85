"""Stage 3: holds and continuous-infusion interruptions (blinatumomab label, clinical-facts
§5.1): resumption in the same cycle or a new one, bag changes re-planned, premedication planned
again on a restart."""

from __future__ import annotations

import datetime as dt
from bisect import bisect_left, bisect_right
from operator import itemgetter
from typing import Any


from .._machine import bag_slot
from .._models import Event

from .common import _join


class _Infusions:
    """Holds and infusion interruptions: resumption, a new cycle, bag changes, premedication on restart."""

    def resume(self, el: Any, rows: list[list[Any]], start: int, end: int, pause: tuple[int, int, str, int], when: int,
               status: str, branch: str | None, hours: int | None, pinned: dict[int, tuple[int, int]],
               ongoing: bool = False, interruption_hours: float | None = None
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
            rows = [*rows, *self.restart_items(el, rows, start, when, status, branch, interruption_hours)]
        else:
            note = f"{what}{until}: later items and the end move {gap} days"
        return rows, end + gap, note

    def restart_items(self, el: Any, rows: list[list[Any]], start: int, when: int, status: str, branch: str | None,
                      interruption_hours: float | None) -> list[list[Any]]:
        """Items planned again on the day a continuous infusion restarts: the administrations
        with ``on_infusion_restart`` (blinatumomab label, clinical-facts §5.1: dexamethasone
        premedication when restarting after an interruption of 4 h or more in the first cycle).
        Planned unless the interruption is recorded as shorter than the limit."""
        out: list[list[Any]] = []
        for slot in el.slots:
            limit = getattr(slot.source, "on_infusion_restart", None)
            if limit is None or limit.value is None:
                continue
            if interruption_hours is not None and interruption_hours < limit.value:
                continue
            why = (f"restart after a {interruption_hours:g}-hour interruption" if interruption_hours is not None
                   else "restart after an interruption whose length in hours is not recorded")
            day = when - start + 1
            m = bisect_right(self.ctx.m_ords, when) - 1
            [dose] = self.ctx.doses_at((slot,), when, m)
            out.append([when, day, when - self.ctx.t0 + 1, slot, dose, status, branch,
                        f"{why}: planned again before the restart (≥ {limit.value:g} h)", self.dating])
        return out

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
