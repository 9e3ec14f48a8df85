"""Stage 2, fast path: an element whose recorded item events are all ``item_given`` (the
common case: doses given as planned). Its rows stay tuples; each event finds its row through
the element's reference index (``ELEMENT:SLOT@DAY`` → position in the day template), so the
cost is one dict look-up and one tuple per event, never a scan. Anything else (a dose given
outside its window, an amount, a reference the template lacks) goes through the same checks as
:meth:`_ItemEvents.given`, or the whole element through :meth:`_ItemEvents.adjust`."""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from typing import Any

from .._machine import CompiledElement
from .._models import Event


@lru_cache(maxsize=1024)
def ref_positions(element: CompiledElement, length: int) -> dict[str, int]:
    """``{"ELEMENT:SLOT@DAY": position}`` in the element's day template for ``length`` days;
    -1 for a reference the template holds twice (found by the general path instead).

    >>> from protocol import load_protocol  # doctest: +SKIP
    >>> el = load_protocol("interfant06-blinatumomab").elements["induction"]  # doctest: +SKIP
    >>> ref_positions(el, el.length)["induction:prednisone@1"]  # doctest: +SKIP
    0
    """
    days, _, slots = element.fixed if length == element.length and element.fixed is not None \
        else element.template(length)
    out: dict[str, int] = {}
    for pos, (day, slot) in enumerate(zip(days, slots, strict=True)):
        ref = f"{element.id}:{slot.key}@{day}"
        out[ref] = -1 if ref in out else pos
    return out


#: "given on 2026-03-04" by date: the note of a dose given on its day, shared by every plan
#: (a registry's patients share their days; formatting a date is most of an event's cost).
_GIVEN_ON: dict[dt.date, str] = {}


def given_on(day: dt.date) -> str:
    """The note of an item given on ``day`` as planned.

    >>> given_on(dt.date(2026, 3, 4))
    'given on 2026-03-04'
    """
    text = _GIVEN_ON.get(day)
    if text is None:
        if len(_GIVEN_ON) > 100_000:  # pragma: no cover - bounded: about 270 years of days
            _GIVEN_ON.clear()
        text = _GIVEN_ON[day] = f"given on {day.isoformat()}"
    return text


class _Given:
    """Recorded ``item_given`` events applied in place to an element's freshly emitted rows."""

    def apply_given(self, el: Any, start: int, length: int, rows: list[tuple[Any, ...]], mark: int,
                    events: list[tuple[int, Event]]) -> bool:
        """Mark the rows ``rows[mark:]`` (the element's items, in template order) as given.

        Returns False, with nothing changed or reported, when an event needs the general path
        (its row is not in the template once, or two events name one row); the caller then runs
        :meth:`_ItemEvents.adjust`. Otherwise the same statuses, notes, problems and deviations
        as that path, in the same order (events in date order).
        """
        get = ref_positions(el, length).get
        found = [get(ev.item, -1) for _, ev in events]  # type: ignore[arg-type]
        if min(found) < 0 or max(found) >= len(rows) - mark or len(set(found)) != len(found):
            return False
        self.consumed.update(i for i, _ in events)
        memo = _GIVEN_ON
        for pos, (i, ev) in zip(found, events, strict=True):
            k = pos + mark
            r = rows[k]
            day = ev.date
            if day.toordinal() == r[0] and ev.dose is None:  # emitted rows have no note yet
                text = memo.get(day) or given_on(day)
                rows[k] = (r[0], r[1], r[2], r[3], r[4], "given", r[6], text, r[8])
            else:  # given on another day, or an amount recorded: every check of the general path
                row = list(r)
                self.given(row, ev, i, start)
                rows[k] = tuple(row)
        return True
