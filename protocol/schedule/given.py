"""Stage 2, fast path: an element whose recorded item events are all ``item_given`` (the
common case: doses given as planned). Each event finds its row through the element's reference
index (``ELEMENT:SLOT@DAY`` → position in the day template), in bulk: C-level maps over the
events, no Python loop per event, and the rows given on their day are emitted ``given`` (no
tuple built twice). Anything else (a dose given outside its window, an amount, a reference the
template lacks) goes through the same checks as :meth:`_ItemEvents.given`, or the whole element
through :meth:`_ItemEvents.adjust`. :class:`_Index` groups the item events by element first."""

from __future__ import annotations

import datetime as dt
from collections import deque
from functools import lru_cache
from itertools import compress, groupby, repeat
from operator import attrgetter, is_not, itemgetter, not_, sub
from typing import Any

from .._machine import CompiledElement
from .._models import Event

from .common import _ADJUSTING

_INDEX, _EVENT = itemgetter(0), itemgetter(1)
_IS_GIVEN = "item_given".__eq__
_OTHER_ADJUSTING = _ADJUSTING - {"item_given"}
#: The element of an item reference ("induction:prednisone@1" → "induction"), shared by every plan.
_ELEMENT_OF: dict[str, str] = {}
_ITEM, _DATE, _DOSE = attrgetter("item"), attrgetter("date"), attrgetter("dose")
_TOORDINAL = dt.date.toordinal
#: (each event's template position, the note per position (None: not given by the fast path),
#: the events (by position in the list) for the general checks, the events' indices)
_Prepared = tuple[list[int], list["str | None"], "list[int] | tuple[()]", list[int]]


def _consume(it: Any) -> None:
    deque(it, maxlen=0)


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
    """Recorded ``item_given`` events applied to an element's rows as they are emitted."""

    def prepare_given(self, el: Any, start: int, length: int, events: list[tuple[int, Event]]) -> _Prepared | None:
        """What the events of one element do to its rows, found in bulk (C-level maps, no loop
        per event in the common case): each event's template position, and the note of each
        position given on its planned day without an amount (emitted ``given`` directly).

        None, with nothing changed or reported, when an event needs the general path (its
        reference is not in the template once, or two events name one row); the caller then
        runs :meth:`_ItemEvents.adjust`.
        """
        cols = self.given_cols.get(el.id)
        if cols is not None:  # indexed in bulk
            indices, refs, dates, amount = cols
        else:
            indices = list(map(_INDEX, events))
            evs = list(map(_EVENT, events))
            refs, dates = list(map(_ITEM, evs)), list(map(_DATE, evs))
            amount = any(map(is_not, map(_DOSE, evs), repeat(None)))
        found = list(map(ref_positions(el, length).get, refs, repeat(-1)))
        if min(found) < 0 or len(set(found)) != len(found):
            return None
        days = (el.fixed if length == el.length and el.fixed is not None else el.template(length))[0]
        # Given on the planned day (event ordinal − template day is the element's base for all
        # of them) and no amount recorded: the common case, emitted as given.
        offsets = list(map(sub, map(_TOORDINAL, dates), map(days.__getitem__, found)))
        base = start - el.first_day
        over: list[str | None] = [None] * len(days)
        if not amount and offsets.count(base) == len(offsets):
            texts = list(map(_GIVEN_ON.get, dates))
            if None in texts:
                texts = list(map(given_on, dates))
            _consume(map(over.__setitem__, found, texts))
            return found, over, (), indices
        slow: list[int] = []  # positions in ``events`` that take the general path, in date order
        for k, (pos, day, (_, ev), off) in enumerate(zip(found, dates, events, offsets, strict=True)):
            if ev.dose is None and off == base:
                over[pos] = _GIVEN_ON.get(day) or given_on(day)
            else:
                slow.append(k)
        return found, over, slow, indices

    def finish_given(self, rows: list[tuple[Any, ...]], mark: int, start: int, events: list[tuple[int, Event]],
                     prepared: _Prepared) -> bool:
        """After the element's rows ``rows[mark:]`` were emitted with :meth:`prepare_given`'s
        notes: False (the caller then drops them and runs :meth:`_ItemEvents.adjust`) when an
        event names a row past the emitted ones; else the events are consumed, and those given
        on another day, or with an amount, go through every check of the general path, in date
        order (the same statuses, notes, problems and deviations as that path)."""
        found, _, slow, indices = prepared
        if max(found) >= len(rows) - mark:
            return False
        self.consumed.update(indices)
        for k in slow:
            i, ev = events[k]
            pos = found[k] + mark
            row = list(rows[pos])
            self.given(row, ev, i, start)
            rows[pos] = tuple(row)
        return True


class _Index:
    """The recorded events that change an element's items, grouped by element in date order."""

    def _index_given(self, events: list[Event], order: list[int], types: list[str]) -> list[tuple[int, Event]] | None:
        """:meth:`index_adjustments` when the only events on items are ``item_given`` on known
        elements (the common case), in bulk: C-level maps and one step per run of consecutive
        events of one element, no Python loop per event; each element's events also kept as
        columns (:attr:`given_cols`) for :meth:`_Given.prepare_given`. None (nothing changed)
        otherwise."""
        given = list(map(_IS_GIVEN, map(types.__getitem__, order)))
        gi = list(compress(order, given))
        evs = list(map(events.__getitem__, gi))
        refs = list(map(_ITEM, evs))
        elems = list(map(_ELEMENT_OF.get, refs))
        if None in elems:
            if len(_ELEMENT_OF) > 200_000:  # pragma: no cover - bounded: every reference of every protocol
                _ELEMENT_OF.clear()
            elems = [_ELEMENT_OF.setdefault(r, r.partition(":")[0]) for r in refs]
        if not self.p.elements.keys() >= set(elems):
            return None
        doses = list(map(_DOSE, evs))
        dates = list(map(self.ev_dates.__getitem__, gi))
        by_element, cols = self.by_element, self.given_cols
        a = 0
        for element, run in groupby(elems):
            b = a + len(list(run))
            by_element.setdefault(element, []).extend(zip(gi[a:b], evs[a:b]))
            amount = doses[a:b].count(None) != b - a
            if element in cols:  # its events interleave with another element's
                idx, rs, ds, am = cols[element]
                cols[element] = (idx + gi[a:b], rs + refs[a:b], ds + dates[a:b], am or amount)
            else:
                cols[element] = (gi[a:b], refs[a:b], dates[a:b], amount)
            a = b
        mi = list(compress(order, map(not_, given)))
        return list(zip(mi, map(events.__getitem__, mi)))

    def index_adjustments(self, events: list[Event], order: list[int]) -> list[tuple[int, Event]]:
        """Group the events that change an element's items by element, in date order, checking
        what can be checked before the plan exists (the element is known, it has an infusion...).
        Returns the other events (moves through the protocol), in date order."""
        types, kinds = self.ev_types, self.ev_kinds
        if "item_given" in kinds and _OTHER_ADJUSTING.isdisjoint(kinds):
            moves = self._index_given(events, order, types)
            if moves is not None:
                return moves
        p = self.p
        elements = p.elements
        by_element = self.by_element
        moves = []
        for i in order:
            ev = events[i]
            t = ev.type
            if t == "item_given":  # the common case, first
                element = ev.item.partition(":")[0]  # type: ignore[union-attr]
                group = by_element.get(element)
                if group is not None:
                    group.append((i, ev))
                    continue
                if element in elements:
                    by_element[element] = [(i, ev)]
                    continue
            elif t not in _ADJUSTING:
                moves.append((i, ev))
                continue
            if ev.item is not None:
                element = ev.item.partition(":")[0]
                field_ = "item"
            else:
                element, field_ = str(ev.element), "element"
            el = p.elements.get(element)
            if el is None:
                self.problem(("events", i, field_), f"expected an element of {p.id} ({', '.join(p.elements)}), got "
                             f"{element!r}" + (f" in {ev.item!r}" if ev.item else ""))
                continue
            if ev.type.startswith("infusion_") and el.infusion is None:
                self.problem(("events", i, "element"), f"{element!r} has no continuous infusion with interruption "
                             f"rules: record element_held / element_resumed instead")
                continue
            if ev.type == "infusion_resumed" and ev.bag_hours is not None:
                self.choose_bag(i, ev, element, store=False)
            if ev.type != "item_given":
                self.mixed.add(element)
            by_element.setdefault(element, []).append((i, ev))
        return moves
