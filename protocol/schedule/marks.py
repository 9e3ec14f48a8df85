"""What the emitted rows of a plan are marked with afterwards: the past items of the element
under way (overdue, a deviation to chase, or unrecorded) and the warning about per-m² infant
doses without a rule."""

from __future__ import annotations

import datetime as dt
from bisect import bisect_left
from functools import lru_cache
from operator import itemgetter
from typing import Any

from .._rules import add_months

from .context import chased_positions

_ORDINAL, _SLOT, _STATUS = itemgetter(0), itemgetter(3), itemgetter(5)


@lru_cache(maxsize=64)
def _unruled(protocol: Any) -> frozenset[Any]:
    """The protocol's per-m² slots with no infant rule: no age fraction, no weight switch, no
    sourced statement that the full dose applies (what :meth:`warn_infant_doses` names)."""
    return frozenset(s for e in protocol.elements.values() for s in e.slots
                     if (d := s.dose) is not None and d.basis == "per_m2" and d.age_fractions is None
                     and d.weight_switch is None and d.infant_full_dose is None)


class _Marks:
    """Overdue items of the element under way, and the infant-dose warning."""

    def overdue(self, el: Any, length: int, rows: list[tuple[Any, ...]], mark: int) -> None:
        """Past assessments and windowed items of the element under way, emitted from ``mark``
        in template order, with nothing recorded and past their window: ``overdue``, a
        deviation to chase (the other past items were emitted ``unrecorded``). Visits only the
        template positions of such items, not every row."""
        today = self.as_of_ord
        n = len(rows)
        for pos in chased_positions(el, length):
            k = mark + pos
            if k >= n:
                break
            r = rows[k]
            if r[0] >= today:
                break
            if r[5] != "planned":
                continue
            self._past_window(rows, k, today)

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
            self._past_window(rows, n, today)

    def _past_window(self, rows: list[tuple[Any, ...]], k: int, today: int) -> None:
        """Row ``k`` (planned, dated before ``today``) becomes ``overdue``, with its deviation,
        once its window (if any) has passed."""
        r = rows[k]
        slot = r[3]
        late = 0 if slot.window is None else slot.window[1]
        if r[0] + late < today:
            rows[k] = (*r[:5], "overdue", *r[6:])
            self.deviations.append((r[0], slot.element, f"{slot.element}:{slot.key}@{r[1]}", "overdue",
                                    f"{slot.name} due {dt.date.fromordinal(r[0])}"
                                    + (f" (window +{late} days)" if late else "") + ": nothing recorded"))

    def warn_infant_doses(self, rows: list[tuple[Any, ...]]) -> None:
        """Warn, once, about per-m² doses planned before the first birthday whose definition has
        no infant rule: no age fraction, no weight switch, no sourced statement that the full
        dose applies. BSA dosing under 10 kg can overdose (clinical-facts §3.10 [43]): never
        leave that silent."""
        first_birthday = add_months(self.patient.birth_date, 12).toordinal()
        before = rows[:bisect_left(rows, first_birthday, key=_ORDINAL)]  # rows are in date order
        unruled = _unruled(self.p)
        if not unruled or not before:
            return
        if {"given", "omitted"}.isdisjoint(map(_STATUS, before)):
            slots = dict.fromkeys(map(_SLOT, before))  # in order of first appearance
        else:
            slots = dict.fromkeys(r[3] for r in before if r[5] not in ("given", "omitted"))
        names = dict.fromkeys(s.name for s in slots if s in unruled)
        if names:
            self.warnings.append(
                f"per-m² doses planned before the first birthday with no infant rule in the definition (an age "
                f"fraction, a weight switch, or a sourced statement that the full dose applies): "
                f"{', '.join(names)}. Check each against the protocol document: BSA dosing under 10 kg can "
                f"overdose.")
