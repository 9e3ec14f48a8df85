"""Item references: ``ELEMENT:SLOT@DAY`` as a person types it, checked against a plan.

A reference names one dated item of a plan (``induction:dexamethasone@8``: element id,
administration or assessment id, element day). People type them from a screen, so case and
surrounding spaces do not matter, and a reference that names nothing gets a message in words
with the nearest references that do exist (never a regular expression).

>>> canonical(" Induction:Dexamethasone@8 ")
'induction:dexamethasone@8'
"""

from __future__ import annotations

import datetime as dt
import difflib
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from ._errors import InputError, Problem

__all__ = ["STATUSES", "Ref", "canonical", "due_on", "items_of_day", "only", "open_before", "parse", "resolve",
           "resolve_all", "select"]

#: Statuses of an item that still waits for something to be recorded (see :class:`protocol.Item`).
OPEN = frozenset({"planned", "overdue", "unrecorded"})
#: How many near matches a message lists.
NEAR = 5
#: The form of a reference, in words, for messages.
FORM = "ELEMENT:ITEM@DAY, e.g. induction:dexamethasone@8 (see the ref column of `protocol plan --wide`)"


class Ref(NamedTuple):
    """A parsed reference: element id, slot (administration or assessment) id, element day."""

    element: str
    slot: str
    day: int

    def __str__(self) -> str:
        return f"{self.element}:{self.slot}@{self.day}"


def _word(text: str) -> bool:
    return bool(text) and text[0].isascii() and text[0].isalpha() and all(
        c.isascii() and (c.isalnum() or c == "_") for c in text)


def parse(text: str, label: str = "ITEM") -> Ref:
    """Read a reference, ignoring case and surrounding spaces; bad form raises
    :class:`~protocol.InputError` saying in words which part is wrong.

    >>> parse("MARMA:Mercaptopurine@15")
    Ref(element='marma', slot='mercaptopurine', day=15)
    """
    raw = str(text)
    s = raw.strip().lower()
    element, colon, rest = s.partition(":")
    slot, at, day = rest.partition("@")
    element, slot, day = element.strip(), slot.strip(), day.strip()
    problem = None
    if not colon or not at:
        problem = f"expected a reference of the form {FORM}, got {raw!r}"
    elif not _word(element):
        problem = (f"the element (before ':') should be an id such as induction (letters, digits and _, starting "
                   f"with a letter), got {raw!r}")
    elif not _word(slot):
        problem = (f"the item (between ':' and '@') should be an id such as dexamethasone (letters, digits and _, "
                   f"starting with a letter), got {raw!r}")
    else:
        digits = day[1:] if day.startswith("-") else day
        if not digits.isdigit() or not digits.isascii() or len(digits) > 4:
            problem = f"the day (after '@') should be a whole number of at most 4 digits, such as 8, got {raw!r}"
    if problem:
        raise InputError(Problem("record", label, problem))
    return Ref(element, slot, int(day))


def canonical(text: str, label: str = "ITEM") -> str:
    """The reference as the library writes it (lower case, no spaces).

    >>> canonical("IB:Cyclophosphamide@1")
    'ib:cyclophosphamide@1'
    """
    return str(parse(text, label))


def _near(ref: Ref, plan: Any) -> list[str]:
    """References of the plan closest to ``ref``: the same item on other days, then the
    element's other items around that day, then anything that reads alike."""
    items = plan.items
    wanted = str(ref)
    same_slot = sorted({(abs(i.element_day - ref.day), i.ref) for i in items
                        if i.slot.element == ref.element and i.slot.key == ref.slot})
    if same_slot:
        return [r for _, r in sorted(same_slot[:NEAR], key=lambda x: parse(x[1]).day)]
    same_day = sorted({i.ref for i in items if i.slot.element == ref.element and i.element_day == ref.day})
    if same_day:
        return same_day[:NEAR]
    refs = sorted({i.ref for i in items})
    return difflib.get_close_matches(wanted, refs, n=NEAR, cutoff=0.6)


def resolve(text: str, plan: Any, label: str = "ITEM") -> str:
    """The canonical reference of an item of ``plan`` (a :class:`~protocol.Plan`); a reference
    that names no item raises :class:`~protocol.InputError` listing the nearest ones.

    >>> resolve("Induction:Dexamethasone@8", plan)  # doctest: +SKIP
    'induction:dexamethasone@8'
    """
    ref = parse(text, label)
    wanted = str(ref)
    items = plan.items
    if any(i.ref == wanted for i in items):
        return wanted
    elements = {e.id for e in plan.elements} | {i.slot.element for i in items}
    if ref.element not in elements:
        close = difflib.get_close_matches(ref.element, sorted(elements), n=NEAR, cutoff=0.5)
        message = (f"{text.strip()!r}: this plan has no element {ref.element!r}; its elements are "
                   f"{', '.join(sorted(elements))}" + (f" (did you mean {' or '.join(close)}?)" if close else ""))
    else:
        keys = {i.slot.key for i in items if i.slot.element == ref.element}
        if ref.slot not in keys:
            close = difflib.get_close_matches(ref.slot, sorted(keys), n=NEAR, cutoff=0.5)
            message = (f"{text.strip()!r}: {ref.element} has no item {ref.slot!r}; its items are "
                       f"{', '.join(sorted(keys))}" + (f" (did you mean {' or '.join(close)}?)" if close else ""))
        else:
            near = _near(ref, plan)
            message = (f"{text.strip()!r}: {ref.slot} is not planned on day {ref.day} of {ref.element}"
                       + (f"; nearest: {', '.join(near)}" if near else ""))
    raise InputError(Problem("record", label, message))


def resolve_all(texts: Iterable[str], plan: Any, label: str = "ITEM") -> list[str]:
    """Every reference resolved (see :func:`resolve`), duplicates refused; all problems are
    reported together, so one run shows every mistyped reference.

    >>> resolve_all(["induction:vincristine@8", "INDUCTION:daunorubicin@8"], plan)  # doctest: +SKIP
    ['induction:vincristine@8', 'induction:daunorubicin@8']
    """
    out: list[str] = []
    problems: list[Problem] = []
    for text in texts:
        try:
            ref = resolve(text, plan, label)
        except InputError as exc:
            problems.extend(exc.problems)
            continue
        if ref in out:
            problems.append(Problem("record", label, f"{ref} is named twice"))
        else:
            out.append(ref)
    if problems:
        raise InputError(problems)
    return out


def items_of_day(plan: Any, element: str, day: int, *, open_only: bool = True,
                 kinds: Sequence[str] = ("administration", "bag_change")) -> list[Any]:
    """The items of ``element`` on element day ``day`` of the ``kinds`` given (by default what
    is given: administrations and bag changes, not assessments, which their results record),
    still to record (not given, omitted, done or held) unless ``open_only`` is False; none
    raises :class:`~protocol.InputError` saying which days the element has.

    >>> [i.ref for i in items_of_day(plan, "induction", 8)]  # doctest: +SKIP
    ['induction:dexamethasone@8', 'induction:vincristine@8', 'induction:daunorubicin@8', ...]
    """
    element = element.strip().lower()
    items = [i for i in plan.items if i.slot.element == element]
    if not items:
        elements = sorted({e.id for e in plan.elements})
        close = difflib.get_close_matches(element, elements, n=NEAR, cutoff=0.5)
        raise InputError(Problem("record", "--element", f"this plan has no element {element!r}; its elements are "
                                 f"{', '.join(elements)}" + (f" (did you mean {' or '.join(close)}?)" if close else "")))
    on_day = [i for i in items if i.element_day == day and i.slot.kind in kinds]
    if not on_day:
        days = sorted({i.element_day for i in items if i.slot.kind in kinds})
        near = sorted(days, key=lambda d: (abs(d - day), d))[:NEAR]
        raise InputError(Problem("record", "--day", f"nothing of {element} to give is planned on day {day}; nearest "
                                 "days: "
                                 f"{', '.join(map(str, sorted(near)))}"))
    chosen = [i for i in on_day if i.status in OPEN] if open_only else on_day
    if not chosen:
        raise InputError(Problem("record", "--day", f"everything of {element} on day {day} is already recorded or "
                                 f"held: " + ", ".join(f"{i.ref} ({i.status})" for i in on_day)))
    return chosen


def open_before(plan: Any, day: dt.date) -> list[Any]:
    """The items dated before ``day`` still to record (overdue or unrecorded, on the certain
    path): what a coordinator has to catch up on.

    >>> len(open_before(plan, dt.date(2026, 11, 9)))  # doctest: +SKIP
    12
    """
    ordinal = day.toordinal()
    return [i for i in plan.items if i.ordinal < ordinal and i.status in OPEN and i.status != "planned"
            and i.branch is None]


def due_on(plan: Any, day: dt.date) -> tuple[list[Any], list[Any]]:
    """What a plan has on ``day``: ``(due, other)``. ``due`` are the items still to record on
    the certain path (planned, overdue or unrecorded); ``other`` those recorded, held or on a
    branch that waits for a decision.

    >>> due, other = due_on(plan, dt.date(2026, 5, 11))  # doctest: +SKIP
    """
    ordinal = day.toordinal()
    rows: Sequence[Any] = [i for i in plan.items if i.ordinal == ordinal]
    due = [i for i in rows if i.status in OPEN and i.branch is None]
    other = [i for i in rows if not (i.status in OPEN and i.branch is None)]
    return due, other


#: Every status an item of a plan can have (see :class:`protocol.Item`).
STATUSES = ("planned", "overdue", "unrecorded", "given", "omitted", "done", "held", "pending_decision")


def select(plan: Any, *, elements: Sequence[str] = (), start: dt.date | None = None, end: dt.date | None = None,
           statuses: Sequence[str] = ()) -> list[Any]:
    """The items of ``plan`` in ``elements`` (ids, any case, or comma-separated lists), dated from ``start`` to ``end``
    (both included) and with one of ``statuses``; an empty filter keeps everything. An
    element or status the plan cannot have raises :class:`~protocol.InputError` naming the
    ones it can.

    >>> [i.ref for i in select(plan, elements=["induction"], statuses=["overdue"])]  # doctest: +SKIP
    ['induction:day8_blasts@8']
    """
    problems: list[Problem] = []
    elements = [part for e in elements for part in e.split(",")]
    statuses = [part for s in statuses for part in s.split(",")]
    wanted_el = {e.strip().lower() for e in elements if e.strip()}
    known = {e.id for e in plan.elements} | {i.slot.element for i in plan.items}
    for e in sorted(wanted_el - known):
        close = difflib.get_close_matches(e, sorted(known), n=NEAR, cutoff=0.5)
        problems.append(Problem("plan", "--element", f"this plan has no element {e!r}; its elements are "
                                f"{', '.join(sorted(known))}" + (f" (did you mean {' or '.join(close)}?)"
                                                                 if close else "")))
    wanted_st = {s.strip().lower().replace("-", "_").replace(" ", "_") for s in statuses if s.strip()}
    for s in sorted(wanted_st - set(STATUSES)):
        problems.append(Problem("plan", "--status", f"expected one of {', '.join(STATUSES)}, got {s!r}"))
    if start is not None and end is not None and end < start:
        problems.append(Problem("plan", "--to", f"expected a date on or after --from {start}, got {end}"))
    if problems:
        raise InputError(problems)
    lo = None if start is None else start.toordinal()
    hi = None if end is None else end.toordinal()
    return [i for i in plan.items
            if (not wanted_el or i.slot.element in wanted_el) and (not wanted_st or i.status in wanted_st)
            and (lo is None or i.ordinal >= lo) and (hi is None or i.ordinal <= hi)]


def only(plan: Any, items: Sequence[Any]) -> Any:
    """A copy of ``plan`` whose items are ``items`` (everything else, risk, elements and
    decisions, as it is), for writing a filtered plan as JSON or CSV.

    >>> only(plan, select(plan, elements=["marma"])).to_csv()  # doctest: +SKIP
    """
    import copy

    out = copy.copy(plan)
    out.rows = [tuple(i) for i in items]
    out._items = list(items)
    return out
