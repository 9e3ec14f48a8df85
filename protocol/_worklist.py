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

Rows (one per line of the worklist), by ``category``:

- ``overdue``: an item whose status on the plan is ``overdue`` (any date before ``F``);
- ``due``: an item dated in ``[F, F + N)`` still to do (administrations, assessments such
  as MRD samples and lumbar punctures, bag changes; not those given, omitted, done or held),
  with its dose and what changed it (a delay, a dose modification);
- ``waiting``: a decision that waits for a result (``Plan.pending``), due before ``F + N``;
- ``deviation``: an entry of ``Plan.deviations`` (out of window, overdue, weight change...)
  dated in ``[F - N, F + N)``;
- ``problem``: a patient that cannot be planned any more (e.g. its protocol file is gone);
  listed, never dropped.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path
from typing import Any

__all__ = ["CATEGORIES", "Worklist", "problem_row", "project", "query"]

#: Row categories, in the order a day's rows are listed.
CATEGORIES = ("problem", "overdue", "waiting", "deviation", "due")
RANK = {c: i for i, c in enumerate(CATEGORIES)}
#: Item statuses not listed as due: recorded (given, omitted, done), held with their element, or
#: past and counted as done when the element's completion is recorded (unrecorded).
_NOT_DUE = frozenset({"done", "given", "omitted", "held", "unrecorded"})
_FIELDS = ("date", "patient", "category", "kind", "study", "element", "item", "name", "detail", "status", "branch")


def _ref(item: Any) -> str:
    ref = getattr(item, "ref", None)
    return ref if ref else f"{item.element}:{item.slot.key}@{item.element_day}"


def _get(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def _iso(value: Any) -> str:
    return value.isoformat() if isinstance(value, dt.date) else str(value)


def _selected(plan: Any, start: int, end: int) -> list[Any]:
    """The items of a plan the worklist lists: overdue ones, and those in ``[start, end)`` still to do.

    Filters the plan's row tuples first (a plan holds hundreds of rows; a worklist needs a few)
    and makes :class:`~protocol.Item` records only of those kept.
    """
    rows = getattr(plan, "rows", None)
    if rows is None:  # anything with ``items`` (tests use simple stand-ins)
        return [i for i in plan.items if i.status == "overdue"
                or (start <= i.ordinal < end and i.status not in _NOT_DUE)]
    from ._schedule import Item

    ordinal, status = Item._fields.index("ordinal"), Item._fields.index("status")
    not_due = _NOT_DUE
    return [Item._make(r) for r in rows
            if r[status] == "overdue" or (start <= r[ordinal] < end and r[status] not in not_due)]


def project(plan: Any, day: dt.date, horizon: int) -> list[tuple[Any, ...]]:
    """The worklist rows of one patient's plan made as of ``day``, covering ``horizon`` days.

    Each row is ``(date, category, kind, study, element, item, name, detail, status, branch)``.
    """
    start = day.toordinal()
    end = start + horizon
    out: list[tuple[Any, ...]] = []
    overdue: set[str] = set()
    for item in _selected(plan, start, end):
        status = item.status
        category = "overdue" if status == "overdue" else "due"
        slot = item.slot
        ref = _ref(item)
        if category == "overdue":
            overdue.add(ref)
        dose = item.dose
        detail = " ".join(p for p in (slot.route, None if dose is None else dose.text) if p)
        note = getattr(item, "note", None)
        if note:
            detail = f"{detail} ({note})" if detail else note
        out.append((item.date.isoformat(), category, slot.kind, slot.study, slot.element, ref, slot.name,
                    detail or None, status, item.branch))
    for d in plan.pending:
        if d.date is not None and d.date.toordinal() < end:
            out.append((d.date.isoformat(), "waiting", "decision", None, d.at, d.id, f"decision {d.id}",
                        "waits for " + ", ".join(d.waiting_for), d.status, d.branch))
    back = dt.date.fromordinal(start - horizon).isoformat()
    last = dt.date.fromordinal(end).isoformat()
    for dev in getattr(plan, "deviations", None) or ():
        when = _iso(_get(dev, "date"))
        kind = str(_get(dev, "kind") or "deviation")
        ref = _get(dev, "item")
        if not (back <= when < last) or (kind == "overdue" and ref in overdue):
            continue
        out.append((when, "deviation", kind, None, _get(dev, "element"), ref, kind.replace("_", " "),
                    _get(dev, "message"), None, None))
    return out


def problem_row(day: dt.date, exc: BaseException) -> tuple[Any, ...]:
    """The row that stands for a patient whose plan cannot be made."""
    problems = getattr(exc, "problems", None)
    message = "; ".join(str(p) for p in problems) if problems else f"{type(exc).__name__}: {exc}"
    return (day.isoformat(), "problem", "error", None, None, None, "cannot plan", message, None, None)


def query(conn: sqlite3.Connection, start: dt.date, days: int) -> list[tuple[Any, ...]]:
    """The worklist rows for ``[start, start + days)`` from a fresh projection, sorted by date."""
    first = start.isoformat()
    end = (start + dt.timedelta(days=days)).isoformat()
    back = (start - dt.timedelta(days=days)).isoformat()
    # Every row dated before the end, in index order; past 'due' and old deviations are dropped here.
    return conn.execute(
        f"SELECT {', '.join(_FIELDS)} FROM worklist_rows WHERE date < ? "
        "AND (category IN ('overdue', 'waiting', 'problem') OR (category = 'due' AND date >= ?) "
        "OR (category = 'deviation' AND date >= ?)) "
        "ORDER BY date, patient, rank, element, item",
        (end, first, back)).fetchall()


class Worklist:
    """The worklist from ``start`` for ``days`` days: ``rows`` are tuples in :data:`fields`
    order, sorted by date then patient. ``refreshed`` counts the patients re-planned to serve it.
    """

    fields = _FIELDS

    def __init__(self, start: dt.date, days: int, rows: list[tuple[Any, ...]], refreshed: int,
                 db: Path | None = None) -> None:
        self.start = start
        self.days = days
        self.rows = rows
        self.refreshed = refreshed
        self.db = db

    @property
    def end(self) -> dt.date:
        """The last day covered."""
        return self.start + dt.timedelta(days=self.days - 1)

    def counts(self) -> dict[str, int]:
        """Rows per category."""
        out = dict.fromkeys(CATEGORIES, 0)
        for row in self.rows:
            out[row[2]] += 1
        return out

    def records(self) -> list[dict[str, Any]]:
        """The rows as mappings ``{"date": ..., "patient": ..., ...}``."""
        fields = self.fields
        return [dict(zip(fields, row, strict=True)) for row in self.rows]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as :meth:`to_json` writes it (rows as arrays in ``fields`` order)."""
        return {"from": self.start.isoformat(), "to": self.end.isoformat(), "days": self.days,
                "counts": self.counts(), "refreshed": self.refreshed, "fields": list(self.fields),
                "rows": [list(row) for row in self.rows]}

    def to_json(self) -> str:
        """The worklist as JSON text: ``fields`` names the columns, each of ``rows`` is an array
        of values in that order, one row per line (a 10,000-patient week is ~60,000 rows, and
        arrays encode 3× faster than objects and are 40 % smaller)."""
        head = {"from": self.start.isoformat(), "to": self.end.isoformat(), "days": self.days,
                "counts": self.counts(), "refreshed": self.refreshed, "fields": list(self.fields)}
        encode = json.JSONEncoder(ensure_ascii=False).encode
        text = encode(head)[:-1]
        if not self.rows:
            return text + ', "rows": []}\n'
        return text + ', "rows": [\n  ' + ",\n  ".join(map(encode, self.rows)) + "\n]}\n"

    def table(self) -> str:
        """Plain-text table: one line per row, a summary line first."""
        c = self.counts()
        head = (f"worklist {self.start.isoformat()} to {self.end.isoformat()} ({self.days} days): {c['due']} due, "
                f"{c['overdue']} overdue, {c['waiting']} decisions waiting for a result, {c['deviation']} deviations"
                + (f", {c['problem']} patients that cannot be planned" if c["problem"] else ""))
        if not self.rows:
            return head + "\nnothing to do\n"
        label = {"due": "due      ", "overdue": "OVERDUE  ", "waiting": "WAITING  ", "deviation": "DEVIATION",
                 "problem": "PROBLEM  "}
        rows = self.rows
        wp = max(7, max(len(r[1]) for r in rows))
        we = max(7, max(len(r[5] or "") for r in rows))
        wi = max(4, max(len(r[6] or "") for r in rows))
        # One comprehension: a 10,000-patient week is ~60,000 lines.
        lines = [head, f"{'date':<10}  {'patient':<{wp}}  {'what':<9}  {'element':<{we}}  {'item':<{wi}}  name / detail",
                 *(f"{d}  {p:<{wp}}  {label[cat]}  {e or '':<{we}}  {i or '':<{wi}}  {n}{': ' + x if x else ''}"
                   f"{' [' + s + ']' if s else ''}{' (if ' + b + ')' if b else ''}"
                   for d, p, cat, _, s, e, i, n, x, _, b in rows)]
        return "\n".join(lines) + "\n"
