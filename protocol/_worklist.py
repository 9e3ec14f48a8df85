"""The worklist: what is due across all patients, what is overdue, which decisions wait for a
result, which items were done out of window.

Planning every patient on every call would not scale (a plan costs ~0.1-0.3 ms plus loading
the patient; 10,000 patients is seconds), so the registry keeps a *projection*: for each
patient, the worklist rows of its plan, computed as of one day (``computed_for``) and
covering ``horizon`` days from it. It is maintained in the same transaction as every write
to the patient (as of the day of the write), and a worklist query is plain SQL over an
indexed date column.

Staleness rule: a patient's rows serve a worklist from ``F`` for ``N`` days only if they were
computed for exactly ``F``, with a horizon of at least ``N`` days, by this release with the
same protocol definition (file content). Any other patient is re-planned (and its rows
stored) before the query. Statuses such as *overdue* depend on the day a plan is made for,
so rows computed for another day are never reused: the first worklist of a new day
re-plans every patient (see the README for the figures; a nightly ``protocol worklist``
keeps the day's first call fast).

The as-of day (what counts as past: ``overdue``, ``unrecorded``) is today unless given; the
listing window ``[F, F + N)`` only chooses which ``due`` rows (and deviations) are listed, so
moving it never turns a future dose into an overdue one. Rows are projected as of the as-of
day, covering the days up to the window's end.

Rows (one per line of the worklist), by ``category``:

- ``overdue``: an item whose status on the plan is ``overdue`` (any date before the as-of
  day), with how many days ago it was due; and an element that should have started (its
  planned start is past, on the certain path) with no start recorded;
- ``unrecorded``: the past administrations or assessments with nothing recorded: of the
  element under way (status ``unrecorded``), or of an element whose start is not recorded (a
  patient registered late); one row per drug (or assessment) of an element, dated and named
  by its first item, with the element days and how many days ago;
- ``due``: an item dated in ``[F, F + N)`` still to do (administrations, assessments such
  as MRD samples and lumbar punctures, bag changes; not those given, omitted, done or held),
  with its dose and what changed it (a delay, a dose modification);
- ``waiting``: a decision that waits for a result (``Plan.pending``), due before ``F + N``,
  and a risk group that waits for a result (the day-8 blast count, say);
- ``deviation``: an entry of ``Plan.deviations`` (out of window, overdue, weight change...)
  dated in ``[F - N, F + N)``;
- ``problem``: a patient that cannot be planned any more (e.g. its protocol file is gone);
  listed, never dropped.
"""

from __future__ import annotations

import datetime as dt
import json
from bisect import bisect_left
import re
from operator import itemgetter
import sqlite3
from pathlib import Path
from collections.abc import Callable, Iterator
from typing import IO, Any

__all__ = ["ALWAYS", "CATEGORIES", "Worklist", "problem_row", "project", "query", "stream"]

#: Row categories, in the order a day's rows are listed.
CATEGORIES = ("problem", "overdue", "unrecorded", "waiting", "deviation", "due")
RANK = {c: i for i, c in enumerate(CATEGORIES)}
#: Item statuses not listed as due: recorded (given, omitted, done), held with their element, or
#: past with nothing recorded (unrecorded: listed as such).
_NOT_DUE = frozenset({"done", "given", "omitted", "held", "unrecorded"})
#: Categories listed whatever the window (everything still to catch up on).
ALWAYS = ("overdue", "unrecorded", "problem")
_FIELDS = ("date", "patient", "category", "kind", "study", "element", "item", "name", "detail", "status", "branch")


#: Characters a terminal would act on (ANSI escapes, BEL, bidirectional overrides): what a
#: person typed into a note is shown with them escaped, never acted on.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _shown(text: str) -> str:
    """``text`` with each control character written as an escape (``\\x1b``)."""
    if not _CONTROL.search(text):
        return text
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}",
                        text)


def _get(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def _iso(value: Any) -> str:
    return value.isoformat() if isinstance(value, dt.date) else str(value)


def _past_open(status: str, ordinal: int, start: int, branch: Any) -> bool:
    """Past with nothing recorded: ``unrecorded``, or still ``planned`` on the certain path
    (its element has no start recorded)."""
    return ordinal < start and (status == "unrecorded" or (status == "planned" and branch is None))


def _selected(plan: Any, start: int, end: int) -> list[tuple[Any, ...]]:
    """The items of a plan the worklist lists, as tuples in :class:`~protocol.Item` field
    order: overdue ones, past ones with nothing recorded, and those in ``[start, end)`` still
    to do.

    Filters the plan's row tuples (a plan holds hundreds of rows; a worklist needs a few),
    cut by date: rows are in date order.
    """
    rows = getattr(plan, "rows", None)
    if rows is None:  # anything with ``items`` (tests use simple stand-ins)
        return [(i.ordinal, i.element_day, None, i.slot, i.dose, i.status, i.branch, getattr(i, "note", None), None)
                for i in plan.items
                if i.status == "overdue" or _past_open(i.status, i.ordinal, start, i.branch)
                or (start <= i.ordinal < end and i.status not in _NOT_DUE)]
    key = itemgetter(0)  # the ordinal
    # An overdue item is dated before the as-of day: nothing from the window's end on is listed.
    as_of = getattr(plan, "as_of", None)
    cut = max(end, as_of.toordinal()) if isinstance(as_of, dt.date) else end
    stop = bisect_left(rows, cut, key=key)
    mid = bisect_left(rows, start, 0, stop, key=key)
    last = bisect_left(rows, end, mid, stop, key=key)
    # Before the window: overdue, unrecorded, or planned on the certain path (_past_open);
    # in it: all still to do (overdue is not in _NOT_DUE); after it: overdue only.
    past_kept = _PAST_KEPT
    not_due = _NOT_DUE
    out = [r for r in rows[:mid] if r[5] in past_kept and (r[5] != "planned" or r[6] is None)]
    out += [r for r in rows[mid:last] if r[5] not in not_due]
    if last < stop:
        out += [r for r in rows[last:stop] if r[5] == "overdue"]
    return out


#: Statuses of the past items listed (a planned one only on the certain path).
_PAST_KEPT = frozenset({"overdue", "unrecorded", "planned"})


def _ref_of(row: tuple[Any, ...]) -> str:
    """``ELEMENT:SLOT@DAY`` of an item tuple (:attr:`Item.ref`)."""
    slot = row[3]
    return f"{slot.element}:{slot.key}@{row[1]}"


def _ago(days: int) -> str:
    return "today" if days == 0 else "1 day ago" if days == 1 else f"{days} days ago"


def _days(days: list[int]) -> str:
    """Element days in words: ``1-7``, ``8, 15, 22``; a long irregular list is cut."""
    if len(days) > 1 and days[-1] - days[0] == len(days) - 1:
        return f"{days[0]}-{days[-1]}"
    text = [str(d) for d in days]
    return ", ".join(text if len(text) <= 8 else [*text[:3], "...", *text[-3:]])


#: Beside a worklist row whose dose, days or date depend on a placeholder (as ``Item.unverified``):
#: the list a nurse works from says so where she reads the dose; the patient page gives the reasons.
#: Plain ASCII, as on the patient page: a non-ASCII mark on most of 77,000 lines made the
#: 10,000-patient worklist command 0.44 -> 0.57 s.
UNVERIFIED = "[UNVERIFIED]"


def _detail(item: tuple[Any, ...], unverified: Callable[[tuple[Any, ...]], bool]) -> str:
    """The route, the dose and the item's note (what changed it), in words (of an item tuple),
    marked :data:`UNVERIFIED` when ``unverified`` says so (``schedule.records.row_unverified``,
    passed by :func:`project`: this module is imported without the plan's)."""
    dose = item[4]
    route = item[3].route
    text = None if dose is None else dose.text
    detail = f"{route} {text}" if route and text else route or text or ""
    if unverified(item):
        detail = f"{detail} {UNVERIFIED}" if detail else UNVERIFIED
    note = item[7]
    if note:
        detail = f"{detail} ({note})" if detail else note
    return detail


def _unrecorded(group: list[Any], start: int, not_started: set[str],
                unverified: Callable[[tuple[Any, ...]], bool]) -> tuple[Any, ...]:
    """One row for the past items of one drug (or assessment) of one element with nothing
    recorded: dated and named by the first, the days, how long ago, the dose of the last
    (its words computed for it alone: a patient registered late has hundreds of such items)."""
    first = group[0]
    last = group[-1]
    detail = _detail(last, unverified)
    slot = first[3]
    n = len(group)
    if n == 1:
        when = f"due {_ago(start - first[0])}, nothing recorded"
    else:
        a, b = start - first[0], start - last[0]
        ago = f"{a} to {b} days ago" if b > 1 else f"{a} days ago to {_ago(b)}"
        when = f"{n} with nothing recorded: days {_days([i[1] for i in group])} ({ago})"
    if slot.element in not_started:
        when += f" ({slot.element} has no start recorded)"
    return (dt.date.fromordinal(first[0]).isoformat(), "unrecorded", slot.kind, slot.study, slot.element,
            _ref_of(first), slot.name, f"{detail}; {when}" if detail else when, first[5], first[6])


def project(plan: Any, day: dt.date, horizon: int) -> list[tuple[Any, ...]]:
    """The worklist rows of one patient's plan made as of ``day``, covering ``horizon`` days.

    Each row is ``(date, category, kind, study, element, item, name, detail, status, branch)``.

    >>> project(plan("examples/patients/mr-pending-mrd.yaml", as_of=day), day, 7)  # doctest: +SKIP
    [('2026-09-16', 'unrecorded', 'administration', None, 'marma', 'marma:cytarabine_hd@1', ...), ...]
    """
    from .schedule.records import row_unverified as unverified

    start = day.toordinal()
    end = start + horizon
    out: list[tuple[Any, ...]] = []
    past_items: list[Any] = []  # their refs are what an overdue deviation is not listed again for
    unrecorded: dict[tuple[str, str], list[Any]] = {}
    not_started = {e.id for e in getattr(plan, "elements", None) or () if _get(e, "status") == "planned"}
    fromordinal = dt.date.fromordinal
    for item in _selected(plan, start, end):  # tuples in Item field order
        ordinal, status, slot = item[0], item[5], item[3]
        past = ordinal < start
        if past:
            past_items.append(item)
            if status != "overdue":  # unrecorded: one row per drug or assessment of an element (see _unrecorded)
                key = (slot.element, slot.key)
                group = unrecorded.get(key)
                if group is None:
                    unrecorded[key] = [item]
                else:
                    group.append(item)
                continue
        category = "overdue" if status == "overdue" else "due"
        detail = _detail(item, unverified)
        if past:
            late = f"due {_ago(start - ordinal)}, nothing recorded"
            detail = f"{detail}; {late}" if detail else late
        out.append((fromordinal(ordinal).isoformat(), category, slot.kind, slot.study, slot.element,
                    f"{slot.element}:{slot.key}@{item[1]}", slot.name, detail or None, status, item[6]))
    for group in unrecorded.values():
        out.append(_unrecorded(group, start, not_started, unverified))
    pid = getattr(getattr(plan, "patient", None), "id", None) or "PATIENT"
    for e in getattr(plan, "elements", None) or ():
        begin = _get(e, "planned_start")
        if (_get(e, "status") == "planned" and _get(e, "branch") is None and _get(e, "actual_start") is None
                and isinstance(begin, dt.date) and begin.toordinal() < start):
            out.append((begin.isoformat(), "overdue", "element_start", None, e.id, None, f"start of {e.id}",
                        f"due {_ago(start - begin.toordinal())} ({begin.isoformat()}): no start recorded "
                        f"(protocol record {pid} started {e.id} --date ...)", "planned", None))
    risk = getattr(plan, "risk", None)
    if risk is not None and _get(risk, "status") == "pending" and _get(risk, "waiting_for"):
        waits = [w.replace("_", " ") for w in _get(risk, "waiting_for")]
        out.append((day.isoformat(), "waiting", "risk", None, None, None, "risk group",
                    f"waits for {', '.join(waits)} (still possible: {', '.join(_get(risk, 'candidates') or ())})",
                    "pending", None))
    for d in plan.pending:
        if d.date is not None and d.date.toordinal() < end:
            out.append((d.date.isoformat(), "waiting", "decision", None, d.at, d.id, f"decision {d.id}",
                        "waits for " + ", ".join(d.waiting_for), d.status, d.branch))
    back = dt.date.fromordinal(start - horizon).isoformat()
    last = dt.date.fromordinal(end).isoformat()
    listed: set[str] | None = None
    for dev in getattr(plan, "deviations", None) or ():
        when = _iso(_get(dev, "date"))
        kind = str(_get(dev, "kind") or "deviation")
        ref = _get(dev, "item")
        if not back <= when < last:
            continue
        if kind == "overdue":
            if listed is None:
                listed = {_ref_of(i) for i in past_items}
            if ref in listed:
                continue
        out.append((when, "deviation", kind, None, _get(dev, "element"), ref, kind.replace("_", " "),
                    _get(dev, "message"), None, None))
    return out


def problem_row(day: dt.date, exc: BaseException) -> tuple[Any, ...]:
    """The row that stands for a patient whose plan cannot be made."""
    problems = getattr(exc, "problems", None)
    message = "; ".join(str(p) for p in problems) if problems else f"{type(exc).__name__}: {exc}"
    return (day.isoformat(), "problem", "error", None, None, None, "cannot plan", message, None, None)


def _where(start: dt.date, days: int, as_of: dt.date | None) -> tuple[str, tuple[str, ...]]:
    """The ``WHERE`` clause (and its parameters) of the worklist rows for ``[start, start + days)``."""
    first = start.isoformat()
    end = (start + dt.timedelta(days=days)).isoformat()
    back = (start - dt.timedelta(days=days)).isoformat()
    # Rows to catch up on are dated before the as-of day (a problem row on it): bound the
    # indexed scan by whichever is later.
    bound = max(end, ((as_of or start) + dt.timedelta(days=1)).isoformat())
    return ("date < ? AND (category IN ('overdue', 'unrecorded', 'problem') OR (category = 'waiting' AND date < ?) "
            "OR (category = 'due' AND date >= ? AND date < ?) OR (category = 'deviation' AND date >= ? AND date < ?))",
            (bound, end, first, end, back, end))


#: The listing order: the worklist table's primary key (see :func:`in_listing_order`).
_ORDER = "ORDER BY date, patient, pos"


def in_listing_order(patient: str, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """``patient``'s :func:`project` rows as the worklist table stores them, ``(patient, date,
    pos, *row[1:])``: ``pos`` numbers the rows sorted by date, category rank, element and item
    (an absent element or item first, before an empty one, as SQL sorts NULL), so that the
    table's key ``(date, patient, pos)`` is the listing order; rows alike on all four keep
    their order.

    >>> in_listing_order("P", [("2026-11-22", "due", "administration", None, "ib", "ib:x@1", "X", None, "planned", None),
    ...                        ("2026-11-21", "due", "administration", None, "ib", "ib:y@1", "Y", None, "planned", None)])[0][:5]
    ('P', '2026-11-21', 0, 'due', 'administration')
    """
    rank = RANK
    ordered = sorted(rows, key=lambda r: (r[0], rank[r[1]], r[4] is not None, r[4] or "", r[5] is not None,
                                          r[5] or ""))
    return [(patient, r[0], pos, *r[1:]) for pos, r in enumerate(ordered)]


def query(conn: sqlite3.Connection, start: dt.date, days: int, as_of: dt.date | None = None) -> list[tuple[Any, ...]]:
    """The worklist rows for ``[start, start + days)`` from a fresh projection made as of
    ``as_of`` (default ``start``), sorted by date: every overdue, unrecorded and problem row,
    the decisions due before the window's end, the due rows and recent deviations of the window.
    """
    where, args = _where(start, days, as_of)
    return conn.execute(f"SELECT {', '.join(_FIELDS)} FROM worklist_rows WHERE {where} {_ORDER}", args).fetchall()


def stream(conn: sqlite3.Connection, start: dt.date, days: int, as_of: dt.date, refreshed: int, out: IO[str],
           json_output: bool = False, chunk: int = 4096) -> None:
    """Write the worklist's table (or JSON) text to ``out``, exactly as :meth:`Worklist.table`
    (:meth:`Worklist.to_json`) would, without holding its rows: the counts and column widths
    come from one aggregate query, then the rows are read and written ``chunk`` at a time
    (10,000 patients are ~77,000 rows: held as Python objects, ~70 MB).

    >>> stream(conn, dt.date(2026, 11, 21), 7, dt.date(2026, 11, 21), 0, sys.stdout)  # doctest: +SKIP
    """
    where, args = _where(start, days, as_of)
    counts = dict.fromkeys(CATEGORIES, 0)
    wp = we = wi = 0
    for category, n, lp, le, li in conn.execute(
            "SELECT category, count(*), max(length(patient)), max(length(coalesce(element, ''))), "
            f"max(length(coalesce(item, ''))) FROM worklist_rows WHERE {where} GROUP BY category", args):
        counts[category] = n
        wp, we, wi = max(wp, lp or 0), max(we, le or 0), max(wi, li or 0)
    head = Worklist(start, days, [], refreshed, None, as_of)
    select = f"SELECT {', '.join(_FIELDS)} FROM worklist_rows WHERE {where} {_ORDER}"
    if json_output:
        cursor = conn.execute(select, args)
        encode = json.JSONEncoder(ensure_ascii=False).encode
        text = encode(head._head(counts))[:-1]
        first = cursor.fetchmany(chunk)
        if not first:
            out.write(text + ', "rows": []}\n')
            return
        out.write(text + ', "rows": [\n  ' + ",\n  ".join(map(encode, first)))
        while rows := cursor.fetchmany(chunk):
            out.write(",\n  " + ",\n  ".join(map(encode, rows)))
        out.write("\n]}\n")
        return
    if not sum(counts.values()):
        out.write(_table_head(head, counts) + "\nnothing to do\n")
        return
    widths = (max(7, wp), max(7, we), max(4, wi))
    out.write(_table_head(head, counts) + "\n" + _column_head(*widths) + "\n")
    if getattr(conn, "dialect", None) == "sqlite":
        _stream_sqlite_lines(conn, where, args, widths, out, chunk)
        return
    cursor = conn.execute(select, args)
    while rows := cursor.fetchmany(chunk):
        out.write("\n".join(_lines(rows, *widths)) + "\n")


#: One table line built by SQLite (what :func:`_lines` builds, widths in characters). Control
#: characters are escaped afterwards, in Python (see :func:`_stream_sqlite_lines`): a ``GLOB``
#: per row in SQL cost a third of the query.
_SQLITE_LINE = (
    "SELECT date || '  ' || printf('%!-*s', ?, patient) || '  ' || CASE category "
    + " ".join(f"WHEN '{c}' THEN '{label}'" for c, label in (
        ("due", "due       "), ("overdue", "OVERDUE   "), ("unrecorded", "UNRECORDED"), ("waiting", "WAITING   "),
        ("deviation", "DEVIATION "), ("problem", "PROBLEM   ")))
    + " END || '  ' || printf('%!-*s', ?, coalesce(element, '')) || '  ' || printf('%!-*s', ?, coalesce(item, ''))"
    " || '  ' || name || CASE WHEN detail <> '' THEN ': ' || detail ELSE '' END || "
    "CASE WHEN study <> '' THEN ' [' || study || ']' ELSE '' END || "
    "CASE WHEN branch <> '' THEN ' (if ' || branch || ')' ELSE '' END "
    "FROM worklist_rows WHERE {where} {order}")
_LINE = itemgetter(0)


def _stream_sqlite_lines(conn: Any, where: str, args: tuple[Any, ...], widths: tuple[int, int, int], out: IO[str],
                         chunk: int) -> None:
    """The table's rows as SQLite builds them: one string per row instead of eleven values,
    written ``chunk`` rows at a time. A chunk whose text is printable (no control character,
    which :data:`_CONTROL` only holds non-printable ones of) is written as it is, else each
    of its lines is escaped (:func:`_shown`, as :func:`_lines` does)."""
    wp, we, wi = widths
    cursor = conn.execute(_SQLITE_LINE.format(where=where, order=_ORDER), (wp, we, wi, *args))
    while rows := cursor.fetchmany(chunk):
        lines = list(map(_LINE, rows))
        if not "".join(lines).isprintable():
            lines = list(map(_shown, lines))
        out.write("\n".join(lines) + "\n")


def page(conn: sqlite3.Connection, start: dt.date, days: int, as_of: dt.date, sites: list[str] | None,
         offset: int, limit: int) -> tuple[dict[str, int], list[tuple[Any, ...]]]:
    """One page of the worklist's rows (``limit`` rows from ``offset``, in the order of
    :func:`query`) and the counts per category of all of them, filtered in SQL to the patients
    of ``sites`` (``None``: every site): what the web page shows without reading a thousand
    patients' rows to display 250 of them.

    >>> counts, rows = page(conn, dt.date(2026, 11, 21), 7, dt.date(2026, 11, 21), ["site-a"], 0, 250)  # doctest: +SKIP
    """
    if sites is not None and not sites:
        return dict.fromkeys(CATEGORIES, 0), []
    where, args = _where(start, days, as_of)
    mine: tuple[str, ...] = ()
    if sites is not None:
        # A patient without a site row is in 'default' (as Scoped.visible reads it).
        where += (" AND patient IN (SELECT p.id FROM patients AS p LEFT JOIN patient_sites AS s ON s.patient = p.id "
                  f"WHERE coalesce(s.site, 'default') IN ({', '.join('?' * len(sites))}))")
        mine = tuple(sites)
    counts = dict.fromkeys(CATEGORIES, 0)
    for category, n in conn.execute(
            f"SELECT category, count(*) FROM worklist_rows WHERE {where} GROUP BY category", (*args, *mine)):
        counts[category] = n
    rows = conn.execute(f"SELECT {', '.join(_FIELDS)} FROM worklist_rows WHERE {where} {_ORDER} LIMIT ? OFFSET ?",
                        (*args, *mine, limit, offset)).fetchall()
    return counts, rows

def _table_head(wl: Worklist, c: dict[str, int]) -> str:
    return (f"worklist {wl.start.isoformat()} to {wl.end.isoformat()} ({wl.days} days"
            + ("" if wl.as_of == wl.start else f", as of {wl.as_of.isoformat()}")
            + f"): {c['due']} due, {c['overdue']} overdue, {c['unrecorded']} unrecorded, {c['waiting']} waiting "
            f"for a result, {c['deviation']} deviations"
            + (f", {c['problem']} patients that cannot be planned" if c["problem"] else ""))


def _column_head(wp: int, we: int, wi: int) -> str:
    return f"{'date':<10}  {'patient':<{wp}}  {'what':<10}  {'element':<{we}}  {'item':<{wi}}  name / detail"


_LABEL = {"due": "due       ", "overdue": "OVERDUE   ", "unrecorded": "UNRECORDED", "waiting": "WAITING   ",
          "deviation": "DEVIATION ", "problem": "PROBLEM   "}


def _lines(rows: list[tuple[Any, ...]], wp: int, we: int, wi: int) -> Iterator[str]:
    """One line of the table per row (a generator: a 10,000-patient week is ~77,000 lines),
    each with its control characters escaped (:func:`_shown`): what a person typed into a
    note, like any other field, is shown, never acted on by the terminal."""
    label, shown = _LABEL, _shown
    return (shown(f"{d}  {p:<{wp}}  {label[cat]}  {e or '':<{we}}  {i or '':<{wi}}  {n}{': ' + x if x else ''}"
                  f"{' [' + s + ']' if s else ''}{' (if ' + b + ')' if b else ''}")
            for d, p, cat, _, s, e, i, n, x, _, b in rows)


class Worklist:
    """The worklist from ``start`` for ``days`` days: ``rows`` are tuples in :data:`fields`
    order, sorted by date then patient. ``refreshed`` counts the patients re-planned to serve it.
    """

    fields = _FIELDS

    def __init__(self, start: dt.date, days: int, rows: list[tuple[Any, ...]], refreshed: int,
                 db: Path | None = None, as_of: dt.date | None = None,
                 counted: dict[str, int] | None = None) -> None:
        # ``counted``: the counts of the whole list when ``rows`` is one page of it.
        self.counted = counted
        self.start = start
        self.as_of = as_of or start
        self.days = days
        self.rows = rows
        self.refreshed = refreshed
        self.db = db

    @property
    def end(self) -> dt.date:
        """The last day covered."""
        return self.start + dt.timedelta(days=self.days - 1)

    @property
    def total(self) -> int:
        """How many rows the whole list has (more than ``len(rows)`` for one page of it)."""
        return sum(self.counted.values()) if self.counted is not None else len(self.rows)

    def counts(self) -> dict[str, int]:
        """Rows per category (of the whole list, when ``rows`` is one page)."""
        if self.counted is not None:
            return dict(self.counted)
        out = dict.fromkeys(CATEGORIES, 0)
        for row in self.rows:
            out[row[2]] += 1
        return out

    def records(self) -> list[dict[str, Any]]:
        """The rows as mappings ``{"date": ..., "patient": ..., ...}``."""
        fields = self.fields
        return [dict(zip(fields, row, strict=True)) for row in self.rows]

    def _head(self, counts: dict[str, int]) -> dict[str, Any]:
        return {"from": self.start.isoformat(), "to": self.end.isoformat(), "days": self.days,
                "as_of": self.as_of.isoformat(), "counts": counts, "refreshed": self.refreshed,
                "fields": list(self.fields)}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as :meth:`to_json` writes it (rows as arrays in ``fields`` order)."""
        return {**self._head(self.counts()), "rows": [list(row) for row in self.rows]}

    def to_json(self) -> str:
        """The worklist as JSON text: ``fields`` names the columns, each of ``rows`` is an array
        of values in that order, one row per line (a 10,000-patient week is ~60,000 rows, and
        arrays encode 3× faster than objects and are 40 % smaller)."""
        encode = json.JSONEncoder(ensure_ascii=False).encode
        text = encode(self._head(self.counts()))[:-1]
        if not self.rows:
            return text + ', "rows": []}\n'
        return text + ', "rows": [\n  ' + ",\n  ".join(map(encode, self.rows)) + "\n]}\n"

    def table(self) -> str:
        """Plain-text table: one line per row, a summary line first."""
        c = self.counts()
        head = _table_head(self, c)
        if not self.rows:
            return head + "\nnothing to do\n"
        rows = self.rows
        wp = max(7, max(len(r[1]) for r in rows))
        we = max(7, max(len(r[5] or "") for r in rows))
        wi = max(4, max(len(r[6] or "") for r in rows))
        return "\n".join([head, _column_head(wp, we, wi), *_lines(rows, wp, we, wi)]) + "\n"
