"""The worklist (``protocol._worklist``) and its projection in the registry: the rows equal what
the patients' plans say, the projection is maintained by every write and refreshed only when
stale (another day, a longer horizon, another protocol definition), and a patient that cannot
be planned is listed, never dropped.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

import protocol
from protocol import schedule as _schedule
from protocol._errors import PatientError, Problem
from protocol._registry import Registry
from protocol._worklist import CATEGORIES, Worklist, project

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = [ROOT / "examples" / "patients" / f"{name}.yaml" for name in ("hr-to-hsct", "mr-on-time", "mr-pending-mrd")]
TODAY = dt.date(2026, 11, 21)


@pytest.fixture()
def reg(db_url: str) -> Iterator[Registry]:
    """A registry on SQLite, then on PostgreSQL."""
    r = Registry(db_url, create=True, today=lambda: TODAY)
    for example in EXAMPLES:
        r.add_patient(example, by="alice")
    yield r
    r.close()


def rows_of(p: Any, start: dt.date, days: int, as_of: dt.date) -> set[tuple[str, str, str, str | None]]:
    """(date, patient, category, item) of one plan made as of ``as_of``, for the window
    ``[start, start + days)``, independently of the projection."""
    end = start + dt.timedelta(days=days)
    pid = p.patient.id
    out: set[tuple[str, str, str, str | None]] = set()
    listed = set()
    first: dict[tuple[str, str], tuple[str, str, str, str | None]] = {}
    for item in p.items:
        if item.status == "overdue":
            out.add((item.date.isoformat(), pid, "overdue", item.ref))
            listed.add(item.ref)
        elif item.date < as_of and (item.status == "unrecorded" or (item.status == "planned" and item.branch is None)):
            # One row per drug of an element, dated and named by its first item.
            first.setdefault((item.slot.element, item.slot.key), (item.date.isoformat(), pid, "unrecorded", item.ref))
            listed.add(item.ref)
        elif max(start, as_of) <= item.date < end and item.status in ("planned", "pending_decision"):
            out.add((item.date.isoformat(), pid, "due", item.ref))
    out |= set(first.values())
    for e in p.elements:
        if e.status == "planned" and e.branch is None and e.actual_start is None and e.planned_start < as_of:
            out.add((e.planned_start.isoformat(), pid, "overdue", None))
    if p.risk.status == "pending":
        out.add((as_of.isoformat(), pid, "waiting", None))
    for d in p.pending:
        if d.date < end:
            out.add((d.date.isoformat(), pid, "waiting", d.id))
    for dev in p.deviations:
        if start - dt.timedelta(days=days) <= dt.date.fromisoformat(dev["date"]) < end \
                and not (dev["kind"] == "overdue" and dev["item"] in listed):
            out.add((dev["date"], pid, "deviation", dev["item"]))
    return out


def expected_rows(start: dt.date, days: int, as_of: dt.date | None = None) -> set[tuple[str, str, str, str | None]]:
    """The rows of every example, planned as of ``as_of`` (default ``start``)."""
    out = set()
    for example in EXAMPLES:
        out |= rows_of(protocol.plan(protocol.load_patient(example), as_of=as_of or start), start, days,
                       as_of or start)
    return out


@pytest.mark.parametrize("start, days, as_of", [
    (TODAY, 7, None), (TODAY, 28, None), (dt.date(2026, 8, 1), 14, dt.date(2026, 8, 1)),
    (dt.date(2026, 9, 20), 7, dt.date(2026, 9, 20)),
    (TODAY + dt.timedelta(days=10), 7, None),  # a window ahead: the plans stay as of today
    (dt.date(2026, 11, 1), 7, None),  # a window behind
])
def test_rows_are_what_the_plans_say(reg: Registry, start: dt.date, days: int, as_of: dt.date | None) -> None:
    wl = reg.worklist(start, days, as_of)
    assert wl.as_of == (as_of or TODAY)
    got = {(r[0], r[1], r[2], r[6]) for r in wl.rows}
    assert got == expected_rows(start, days, as_of or TODAY)
    if start >= TODAY:
        assert any(r[2] == "due" for r in wl.rows)
    if start == dt.date(2026, 9, 20):  # INF-0003's weight change of 2026-09-14 is in the look-back
        assert [(r[1], r[3]) for r in wl.rows if r[2] == "deviation"] == [("INF-0003", "weight_change")]
    keys = [(r[0], r[1]) for r in wl.rows]
    assert keys == sorted(keys)


def test_the_window_moves_the_listing_only(reg: Registry) -> None:
    ahead = reg.worklist(TODAY + dt.timedelta(days=10), 7)
    now = reg.worklist(TODAY, 7)
    assert ahead.as_of == now.as_of == TODAY
    # What is overdue or unrecorded does not depend on the window; nothing of the days between
    # today and the window's start turns overdue.
    past = {r for r in now.rows if r[2] in ("overdue", "unrecorded")}
    assert past == {r for r in ahead.rows if r[2] in ("overdue", "unrecorded")}
    assert all(r[0] < TODAY.isoformat() for r in past)
    assert all(r[0] >= (TODAY + dt.timedelta(days=10)).isoformat() for r in ahead.rows if r[2] == "due")
    assert "as of 2026-11-21" in ahead.table().splitlines()[0]


def test_a_patient_registered_late_shows_every_overdue_item_and_the_missing_start(tmp_path: Path) -> None:
    late = tmp_path / "late.yaml"
    late.write_text("id: LATE-01\nprotocol: interfant06-blinatumomab\nbirth_date: 2026-06-01\nsex: female\n"
                    "diagnosis_date: 2026-11-02\nkmt2a: rearranged\nwbc_at_diagnosis: 120\ncns_status: CNS1\n"
                    "measurements:\n  - {date: 2026-11-02, height_cm: 62, weight_kg: 6.5}\n", encoding="utf-8")
    today = dt.date(2026, 12, 2)
    with Registry(tmp_path / "late.db", create=True, today=lambda: today) as r:
        r.add_patient(late, by="alice")
        wl = r.worklist(today, 7)
    p = protocol.plan(protocol.load_patient(late), as_of=today)
    past = [i for i in p.items if i.date < today and i.branch is None]
    assert past  # induction's first month
    # One row per drug or assessment, naming its first item, saying how many and which days.
    unrecorded = {r[6]: r for r in wl.rows if r[2] == "unrecorded"}
    slots: dict[str, list[Any]] = {}
    for i in past:
        slots.setdefault(i.slot.key, []).append(i)
    assert set(unrecorded) == {items[0].ref for items in slots.values()}
    for items in slots.values():
        detail = unrecorded[items[0].ref][8]
        assert (f"{len(items)} with nothing recorded" in detail) if len(items) > 1 else "nothing recorded" in detail
    assert "induction:day8_blasts@8" in unrecorded  # the assessment the risk group waits for
    assert "7 with nothing recorded: days 1-7 (30 to 24 days ago)" in unrecorded["induction:prednisone@1"][8]
    assert "days 8, 15, 22, 29 (23 to 2 days ago)" in unrecorded["induction:vincristine@8"][8]
    start = [r for r in wl.rows if r[3] == "element_start"]
    assert [(r[0], r[2], r[5]) for r in start] == [("2026-11-02", "overdue", "induction")]
    assert "30 days ago" in start[0][8] and "protocol record LATE-01 started induction" in start[0][8]
    risk = [r for r in wl.rows if r[2] == "waiting" and r[3] == "risk"]
    assert len(risk) == 1 and "prednisone response" in risk[0][8]
    assert "due 23 days ago, nothing recorded" in unrecorded["induction:day8_blasts@8"][8]
    text = wl.table()
    assert "UNRECORDED" in text and f"{len(unrecorded)} unrecorded" in text.splitlines()[0]


def test_due_assessments_waiting_decisions_and_overdue(reg: Registry) -> None:
    rows = reg.worklist(TODAY, 7).rows
    waiting = [r for r in rows if r[2] == "waiting"]
    assert [(r[1], r[6], r[8]) for r in waiting] == [("INF-0003", "pre_octadad", "waits for mrd:pre_octadad")]
    unrecorded = [r for r in rows if r[2] == "unrecorded"]
    assert unrecorded and all(r[0] < TODAY.isoformat() and "nothing recorded" in r[8] and " ago" in r[8] for r in unrecorded)
    overdue = [r for r in rows if r[2] == "overdue"]
    assert overdue and all(r[0] < TODAY.isoformat() for r in overdue)
    assert {r[3] for r in rows} <= {"administration", "assessment", "decision", "bag_change", "infusion_bag", "risk",
                                    "element_start",
                                    "out_of_window", "overdue", "weight_change", "count_gate", "dose_above_plan"}
    # Doses are on the due administrations.
    assert all(r[8] for r in rows if r[2] == "due" and r[3] == "administration")


def test_writes_keep_the_projection_fresh(reg: Registry) -> None:
    assert reg.worklist(TODAY, 7).refreshed == 0  # every add projected its patient as of today
    reg.record("INF-0003", "mrd", {"timepoint": "pre_octadad", "date": "2026-11-20", "value": 0}, by="bob")
    wl = reg.worklist(TODAY, 7)
    assert wl.refreshed == 0
    assert not [r for r in wl.rows if r[2] == "waiting"]
    assert not [r for r in wl.rows if r[1] == "INF-0003" and r[10]]  # no pending branch left
    assert {(r[0], r[1], r[2], r[6]) for r in wl.rows} == {
        (d, p, c, i) for d, p, c, i in _with_result(TODAY, 7)}


def _with_result(start: dt.date, days: int) -> set[tuple[str, str, str, str | None]]:
    rows = {r for r in expected_rows(start, days) if r[1] != "INF-0003"}
    data = protocol.load_patient(ROOT / "examples/patients/mr-pending-mrd.yaml").model_dump(mode="json")
    data["mrd"].append({"timepoint": "pre_octadad", "date": "2026-11-20", "value": 0})
    return rows | rows_of(protocol.plan(protocol.Patient.model_validate(data), as_of=start), start, days, start)


def test_staleness_rules(reg: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    tomorrow = TODAY + dt.timedelta(days=1)
    assert reg.worklist(tomorrow, 7).refreshed == 3  # computed for another day
    assert reg.worklist(tomorrow, 7).refreshed == 0
    assert reg.worklist(tomorrow, 30).refreshed == 3  # a longer horizon than stored
    assert reg.worklist(tomorrow, 10).refreshed == 0  # a shorter one is served
    # A new release: every key (shipped definitions and recorded versions) names the release.
    monkeypatch.setattr(protocol, "__version__", "another release")
    monkeypatch.setattr("protocol._registry._KEY_CACHE", {})
    assert reg.worklist(tomorrow, 10).refreshed == 3  # computed by another release/definition
    assert reg.worklist(tomorrow, 10).refreshed == 0


def test_a_fresh_projection_is_served_without_planning(reg: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_plan(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("plan() called for a fresh projection")

    monkeypatch.setattr(_schedule, "plan", no_plan)
    monkeypatch.setattr(_schedule, "plan_rows_before", no_plan)  # what a refresh plans with
    wl = reg.worklist(TODAY, 7)
    assert wl.refreshed == 0 and wl.rows


def test_a_patient_that_cannot_be_planned_is_listed(reg: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    real = _schedule.plan

    real_cut = _schedule.plan_rows_before

    def broken_for_one(patient: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(patient, "id", None) == "INF-0002":
            raise PatientError(Problem("INF-0002", "protocol", "no such protocol"))
        return real(patient, *args, **kwargs)

    def cut_broken_for_one(patient: Any, *args: Any, **kwargs: Any) -> Any:  # what a refresh plans with
        if getattr(patient, "id", None) == "INF-0002":
            raise PatientError(Problem("INF-0002", "protocol", "no such protocol"))
        return real_cut(patient, *args, **kwargs)

    monkeypatch.setattr(_schedule, "plan", broken_for_one)
    monkeypatch.setattr(_schedule, "plan_rows_before", cut_broken_for_one)
    wl = reg.worklist(TODAY + dt.timedelta(days=1), 7)
    problems = [r for r in wl.rows if r[2] == "problem"]
    assert [(r[1], r[8]) for r in problems] == [("INF-0002", "INF-0002: protocol: no such protocol")]
    assert {r[1] for r in wl.rows} == {"INF-0001", "INF-0002", "INF-0003"}
    assert "1 patients that cannot be planned" in wl.table()


def test_days_must_be_positive(reg: Registry) -> None:
    with pytest.raises(protocol.InputError, match="--days"):
        reg.worklist(TODAY, 0)


# --------------------------------------------------------------------------- project() on its own


def _item(date: dt.date, ref: str, status: str, kind: str = "administration", study: str | None = None) -> Any:
    element, rest = ref.split(":")
    key, day = rest.split("@")
    slot = SimpleNamespace(element=element, key=key, kind=kind, study=study, name=key.title(),
                           route="IV" if kind == "administration" else None, evidence="published")
    return SimpleNamespace(ordinal=date.toordinal(), date=date, status=status, slot=slot, ref=ref,
                           element_day=int(day), dose=None, branch=None, note=None)


def test_project_selects_by_status_and_window() -> None:
    d = TODAY
    plan = SimpleNamespace(
        items=[
            _item(d - dt.timedelta(days=3), "ib:marrow@29", "overdue", "assessment", "mrd"),
            _item(d - dt.timedelta(days=1), "ib:drug@27", "unrecorded"),
            _item(d, "ib:drug@30", "given"),
            _item(d, "ib:lp@30", "planned", "assessment", "lumbar_puncture"),
            _item(d + dt.timedelta(days=1), "ib:drug@31", "held"),
            _item(d + dt.timedelta(days=2), "ib:drug@32", "omitted"),
            _item(d + dt.timedelta(days=6), "ib:drug@36", "planned"),
            _item(d + dt.timedelta(days=7), "ib:drug@37", "planned"),  # past the horizon
        ],
        pending=[SimpleNamespace(date=d + dt.timedelta(days=2), at="ib", id="soon", waiting_for=("mrd:x",),
                                 status="pending", branch=None),
                 SimpleNamespace(date=d + dt.timedelta(days=40), at="ib", id="later", waiting_for=("mrd:y",),
                                 status="pending", branch=None)],
        deviations=[
            {"date": (d - dt.timedelta(days=3)).isoformat(), "element": "ib", "item": "ib:marrow@29",
             "kind": "overdue", "message": "nothing recorded"},  # already an overdue row
            {"date": (d - dt.timedelta(days=5)).isoformat(), "element": "ib", "item": "ib:drug@25",
             "kind": "out_of_window", "message": "given 3 days late"},
            {"date": (d - dt.timedelta(days=30)).isoformat(), "element": "ib", "item": None,
             "kind": "weight_change", "message": "too old for this worklist"},
        ],
    )
    rows = project(plan, d, 7)
    assert [(r[1], r[5]) for r in rows] == [("overdue", "ib:marrow@29"), ("due", "ib:lp@30"), ("due", "ib:drug@36"),
                                            ("unrecorded", "ib:drug@27"), ("waiting", "soon"),
                                            ("deviation", "ib:drug@25")]
    assert rows[1][3] == "lumbar_puncture" and rows[4][7] == "waits for mrd:x"
    assert rows[0][7] == "due 3 days ago, nothing recorded" and rows[3][7] == "IV; due 1 day ago, nothing recorded"
    several = SimpleNamespace(items=[_item(d - dt.timedelta(days=n), f"ib:drug@{30 - n}", "unrecorded")
                                     for n in (9, 8, 7, 2)], pending=[], deviations=[])
    assert [(r[1], r[5], r[7]) for r in project(several, d, 7)] == [
        ("unrecorded", "ib:drug@21", "IV; 4 with nothing recorded: days 21, 22, 23, 28 (9 to 2 days ago)")]


def test_output_forms() -> None:
    rows = [("2026-11-21", "P-1", "due", "administration", None, "ib", "ib:x@1", "X", "IV 1 mg", "planned", None),
            ("2026-11-21", "P-22", "waiting", "decision", None, "ib", "d", "decision d", "waits for mrd:d",
             "pending", "a→b")]
    wl = Worklist(TODAY, 7, rows, 0)
    data = json.loads(wl.to_json())
    assert data == wl.to_dict()
    assert data["to"] == "2026-11-27" and data["counts"]["due"] == 1
    assert [dict(zip(data["fields"], r)) for r in data["rows"]] == wl.records()
    assert wl.records()[1]["branch"] == "a→b"
    text = wl.table()
    assert text.splitlines()[0].startswith("worklist 2026-11-21 to 2026-11-27 (7 days): 1 due, 0 overdue, 0 unrecorded")
    assert "P-22" in text and "WAITING" in text and "(if a→b)" in text
    assert "nothing to do" in Worklist(TODAY, 7, [], 0).table()
    assert json.loads(Worklist(TODAY, 7, [], 0).to_json())["rows"] == []
    assert set(CATEGORIES) == {"problem", "overdue", "unrecorded", "waiting", "deviation", "due"}
    noisy = Worklist(TODAY, 7, [("2026-11-21", "P-1", "due", "administration", None, "ib", "ib:x@1", "X",
                                 "held \x1b[31m[bold]RED\x07", "planned", None)], 0).table()
    assert "\x1b" not in noisy and "\x07" not in noisy and "held \\x1b[31m[bold]RED\\x07" in noisy


def test_the_readme_worklist_example_is_true(tmp_path: Path) -> None:
    import os
    import shlex
    import subprocess
    import sys

    section = (ROOT / "README.md").read_text(encoding="utf-8").split("\n### The worklist\n", 1)[1].split("\n## ", 1)[0]
    (tmp_path / "late.yaml").write_text(section.split("```yaml\n", 1)[1].split("```", 1)[0], encoding="utf-8")
    block = section.split("```text\n", 1)[1].split("```", 1)[0].splitlines()
    env = {k: v for k, v in os.environ.items() if k not in ("PROTOCOL_DEBUG", "PROTOCOL_DB", "COLUMNS")}
    script = Path(sys.executable).parent / "protocol"
    out = ""
    for line in block:
        if line.startswith("$ protocol "):
            done = subprocess.run([str(script), *shlex.split(line)[2:]], cwd=tmp_path, env=env, capture_output=True,
                                  text=True, encoding="utf-8", timeout=60)
            assert done.returncode == 0, done.stderr
            out = done.stdout
    shown = [line for line in block if not line.startswith("$ ") and line != "..."]
    assert shown and out.splitlines()[:len(shown)] == shown


def test_the_worklist_does_not_wait_for_a_writer(reg: Registry, db_url: str, tmp_path: Path) -> None:
    """Issue 16 §5: while another connection holds the write lock, a worklist that needs its
    projection refreshed is computed from a read snapshot in well under the 30 s busy timeout,
    gives the same rows as after the writer is done, and writes nothing."""
    import sqlite3
    import time

    expected = reg.worklist(TODAY, 7).rows  # stored as of TODAY; the reader below plans as of TODAY + 1
    if reg.dialect == "postgresql":
        # The writer holds a patient's lock (what every write of it takes first), not the file.
        other = Registry(db_url, today=lambda: TODAY)
        other._db.begin(True)
        other._db.lock_patient(reg.patients()[0].id)
    else:
        other = sqlite3.connect(reg.path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # the writer
    try:
        reader = Registry(db_url, today=lambda: TODAY)
        fresh = Registry(tmp_path / "fresh.db", create=True, today=lambda: TODAY)
        for example in EXAMPLES:
            fresh.add_patient(example, by="alice")
        want = fresh.worklist(TODAY, 7, as_of=TODAY + dt.timedelta(days=1)).rows
        fresh.close()
        t0 = time.perf_counter()
        wl = reader.worklist(TODAY, 7, as_of=TODAY + dt.timedelta(days=1))
        elapsed = time.perf_counter() - t0
        assert elapsed < 5, elapsed
        assert wl.rows == want and wl.rows != expected
        # Nothing was written: the stored projection is still the one as of TODAY.
        conn = other._db if isinstance(other, Registry) else other
        stored = {r[0] for r in conn.execute("SELECT computed_for FROM projection")}
        assert stored == {TODAY.isoformat()}
        reader.close()
    finally:
        if isinstance(other, Registry):
            other._db.rollback()
        else:
            other.execute("ROLLBACK")
        other.close()


@pytest.mark.parametrize("json_output", [False, True], ids=["table", "json"])
def test_the_streamed_worklist_is_the_worklist_text(reg: Registry, tmp_path: Path, json_output: bool) -> None:
    """``Registry.write_worklist`` (what ``protocol worklist`` prints, issue 14: streamed from
    the projection, never holding every row) writes exactly ``worklist().table()`` /
    ``.to_json()``: for windows before, on and after the as-of day, a day with nothing listed,
    and small chunks (rows written in several pieces)."""
    import io

    from protocol import _worklist

    cases = [(TODAY, 7, TODAY), (TODAY, 28, TODAY), (TODAY - dt.timedelta(days=40), 3, TODAY),
             (TODAY + dt.timedelta(days=2), 5, TODAY + dt.timedelta(days=1))]
    for start, days, as_of in cases:
        wl = reg.worklist(start, days, as_of)
        assert wl.rows
        for chunk in (1, 3, 4096):
            out = io.StringIO()
            with reg._read() as conn:
                _worklist.stream(conn, start, days, as_of, wl.refreshed, out, json_output, chunk=chunk)
            assert out.getvalue() == (wl.to_json() if json_output else wl.table())
        out = io.StringIO()
        reg.write_worklist(out, start, days, as_of, json_output=json_output)
        assert out.getvalue() == (reg.worklist(start, days, as_of).to_json() if json_output
                                  else reg.worklist(start, days, as_of).table())
    with Registry(tmp_path / "empty.db", create=True, today=lambda: TODAY) as empty:
        out = io.StringIO()
        empty.write_worklist(out, TODAY, 7, json_output=json_output)
        wl = empty.worklist(TODAY, 7)
        assert not wl.rows and out.getvalue() == (wl.to_json() if json_output else wl.table())


def test_the_streamed_table_escapes_what_the_table_escapes(reg: Registry) -> None:
    """The streamed table (on SQLite its lines are built by the database) writes exactly
    ``Worklist.table()`` for rows whose text is not plain ASCII: a detail with a terminal
    escape, a bidirectional override and a tab (escaped), a detail, a study and an element with
    accents and symbols (kept), an empty detail and branch, a long element and item."""
    import io

    from protocol import _worklist

    pid = reg.worklist(TODAY, 7).rows[0][1]
    odd = [(pid, TODAY.isoformat(), 0, "due", "administration", None, "indüction", "a:b@1", "Médicament",
            "note \x1b[31mred\x1b[0m \u202eevil\tend", "planned", None),
           (pid, TODAY.isoformat(), 1, "deviation", "deviation", "étude-1", "ib", None, "dose",
            "6 mg/m² × 0.5 µg", "", "decision→hr"),
           (pid, TODAY.isoformat(), 2, "due", "assessment", None, "élément-très-long-pour-la-colonne", "x" * 30,
            "BM", "", None, "")]
    db = reg._db
    db.begin(True)
    try:
        db.executemany("INSERT INTO worklist_rows (patient, date, pos, category, kind, study, element, item, "
                       "name, detail, status, branch) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       [(p, d, 1000 + i, *rest) for i, (p, d, _, *rest) in enumerate(odd)])
        want = Worklist(TODAY, 7, _worklist.query(db, TODAY, 7, TODAY), 0, None, TODAY).table()
        assert "\\x1b[31m" in want and "µg" in want
        for chunk in (1, 4096):
            out = io.StringIO()
            _worklist.stream(db, TODAY, 7, TODAY, 0, out, False, chunk=chunk)
            assert out.getvalue() == want
    finally:
        db.rollback()


def test_a_page_of_the_worklist_is_its_slice_for_the_sites_asked(db_url: str) -> None:
    """``Registry.worklist_page`` (the web's worklist page): the rows from ``offset`` are the
    same slice of ``worklist()`` restricted to the sites asked for, in the same order, and the
    counts and total are those of the whole restricted list; no site asked, nothing listed."""
    r = Registry(db_url, create=True, today=lambda: TODAY)
    from protocol._auth import add_site

    for site in ("site-a", "site-b"):
        add_site(r, site)
    r.add_patient(EXAMPLES[0], by="alice", site="site-a")
    r.add_patient(EXAMPLES[1], by="alice", site="site-b")
    r.add_patient(EXAMPLES[2], by="alice")  # the default site
    try:
        whole = r.worklist(None, 28)
        ids = {row[1] for row in whole.rows}
        a_id = protocol.load_patient(EXAMPLES[0]).id
        assert len(ids) == 3 and a_id in ids
        for sites, keep in ((["site-a"], {a_id}), (["site-a", "default", "site-b"], ids), ([], set())):
            mine = [row for row in whole.rows if row[1] in keep]
            counts = dict.fromkeys(CATEGORIES, 0)
            for row in mine:
                counts[row[2]] += 1
            for offset, limit in ((0, 5), (5, 5), (0, 10_000), (len(mine) - 1, 5), (len(mine) + 3, 5)):
                page = r.worklist_page(None, 28, sites=sites, offset=max(0, offset), limit=limit)
                assert page.rows == mine[max(0, offset):max(0, offset) + limit]
                assert page.counts() == counts and page.total == len(mine)
    finally:
        r.close()


@pytest.mark.slow
def test_rows_cut_at_the_horizon_give_the_full_plans_worklist_rows() -> None:
    """The registry projects a plan whose elements not under way are emitted only up to the
    horizon (``plan_rows_before``): its worklist rows equal those of the full plan, on every
    example patient (every shipped protocol) with generated recorded histories (the
    generator of ``tests/test_schedule.py``), as of a generated day, for 7 to 60 days.
    The plan cut short keeps every row before the horizon but those done (which no worklist
    lists), and every element, decision and deviation. The histories also hold re-weighings
    (weight changes flagged as deviations) and doses recorded given early, for items past the
    horizon (the element then takes the general path)."""
    from hypothesis import given
    from hypothesis import strategies as st

    from protocol.schedule.builder import plan_rows_before

    from .test_schedule import ALL_EXAMPLES, _recorded

    loaded = [protocol.load_patient(f) for f in ALL_EXAMPLES]
    end = dt.date(2026, 11, 21)

    @given(st.sampled_from(loaded), st.data())
    def check(patient: protocol.Patient, data: Any) -> None:
        pr = protocol.load_protocol(patient.protocol)
        as_of = data.draw(st.dates(min_value=patient.start_date + dt.timedelta(days=3), max_value=end))
        horizon = data.draw(st.sampled_from([7, 14, 28, 60]))
        base = patient.model_dump(mode="json")
        try:
            bare = protocol.plan(patient, pr, as_of)
        except protocol.ProtocolError:
            return
        base["events"] = [*base["events"], *_recorded(data.draw, bare, as_of)]
        ahead = [i for i in bare.items if i.branch is None and as_of < i.date <= as_of + dt.timedelta(days=horizon + 40)]
        for i in data.draw(st.lists(st.sampled_from(ahead), max_size=3, unique_by=lambda i: i.ref)) if ahead else ():
            day = as_of - dt.timedelta(days=data.draw(st.integers(0, 3)))
            if day >= patient.start_date:
                base["events"].append({"type": "item_given", "item": i.ref, "date": day.isoformat()})
        base["measurements"] = _reweighed(data.draw, base["measurements"], patient.start_date, as_of)
        try:
            generated = protocol.Patient.model_validate(base)
        except ValueError:  # a re-weighing the model refuses (e.g. two measurements on one day)
            return
        try:
            full = protocol.plan(generated, pr, as_of)
        except protocol.ProtocolError as exc:
            with pytest.raises(type(exc)):
                plan_rows_before(generated, pr, as_of, as_of + dt.timedelta(days=horizon))
            return
        cut = plan_rows_before(generated, pr, as_of, as_of + dt.timedelta(days=horizon))
        before = (as_of + dt.timedelta(days=horizon)).toordinal()
        def shown(p: Any) -> list[dict[str, Any]]:  # doses compared by value, not by identity
            return [protocol.Item._make(r).to_dict() for r in p.rows if r[0] < before and r[5] != "done"]

        assert shown(cut) == shown(full)
        assert [e.to_dict() for e in cut.elements] == [e.to_dict() for e in full.elements]
        assert cut.deviations == full.deviations
        assert [d.to_dict() for d in cut.decisions] == [d.to_dict() for d in full.decisions]
        assert project(cut, as_of, horizon) == project(full, as_of, horizon)

    check()


def _reweighed(draw: Any, measurements: list[dict[str, Any]], start: dt.date, as_of: dt.date) -> list[dict[str, Any]]:
    """The measurements with up to three re-weighings between the start and ``as_of``, some
    more than 10 % from the last weight (the plan flags those and recomputes the doses)."""
    from hypothesis import strategies as st

    if not measurements or as_of <= start:
        return measurements
    last = measurements[-1]
    days = draw(st.lists(st.integers(0, (as_of - start).days), max_size=3, unique=True))
    taken = {str(m["date"]) for m in measurements}
    extra = [{"date": d.isoformat(), "height_cm": last["height_cm"],
              "weight_kg": round(last["weight_kg"] * draw(st.sampled_from([0.85, 0.95, 1.05, 1.15])), 2)}
             for d in (start + dt.timedelta(days=n) for n in days) if d.isoformat() not in taken]
    return sorted([*measurements, *extra], key=lambda m: str(m["date"]))


def _weight_rows(patient: dict[str, Any], as_of: dt.date, horizon: int) -> tuple[list[Any], list[Any]]:
    """The weight-change rows of the worklist of the full plan and of the plan cut at the horizon."""
    from protocol.schedule.builder import plan_rows_before

    p = protocol.Patient.model_validate(patient)
    pr = protocol.load_protocol(p.protocol)
    full = protocol.plan(p, pr, as_of, today=dt.date(2026, 11, 21))
    cut = plan_rows_before(p, pr, as_of, as_of + dt.timedelta(days=horizon))
    rows_full, rows_cut = project(full, as_of, horizon), project(cut, as_of, horizon)
    assert rows_cut == rows_full
    return [r for r in rows_full if r[2] == "weight_change"], [r for r in rows_cut if r[2] == "weight_change"]


@pytest.mark.parametrize("recorded_until", ["2026-06-01", "2026-05-31"], ids=["under-way", "not-started"])
def test_a_weight_change_in_an_element_with_no_row_before_the_horizon_is_listed(recorded_until: str) -> None:
    """Consolidation whose only item is after the horizon, under way (start recorded on
    2026-06-01) or not started though its planned start has passed: its weight change (−13 %)
    is still a deviation on the worklist, as in the full plan (the cut emitted no row, and
    flagged nothing, before; not started, it was missing before this cut too)."""
    base = yaml.safe_load((ROOT / "examples" / "patients" / "aall1731-sr-average.yaml").read_text())
    base["measurements"] = [{"date": "2026-05-04", "height_cm": 112, "weight_kg": 19.5},
                            {"date": "2026-06-05", "height_cm": 112, "weight_kg": 17.0}]
    base["mrd"] = [m for m in base["mrd"] if str(m["date"]) <= "2026-06-10"]
    base["events"] = [e for e in base["events"] if str(e["date"]) <= recorded_until]
    full, cut = _weight_rows(base, dt.date(2026, 6, 10), 7)
    assert len(full) == 1 and "weight 17 kg on 2026-06-05 is -13%" in full[0][7]
    assert cut == full


def test_a_dose_given_early_past_the_horizon_lists_its_weight_change_once() -> None:
    """A dose recorded given for an item past the horizon sends the element to the general path:
    the weight change the first emit flagged is not flagged twice (it was listed twice before)."""
    base = yaml.safe_load((ROOT / "examples" / "patients" / "mr-on-time.yaml").read_text())
    base["measurements"] = [{"date": "2026-05-04", "height_cm": 66, "weight_kg": 7.4},
                            {"date": "2026-05-10", "height_cm": 66, "weight_kg": 8.5}]
    base["mrd"] = []
    base["events"] = [{"type": "element_started", "element": "induction", "date": "2026-05-04"},
                      {"type": "item_given", "item": "induction:dexamethasone@22", "date": "2026-05-12"}]
    full, cut = _weight_rows(base, dt.date(2026, 5, 12), 7)
    assert len(full) == 1 and full[0][0] == "2026-05-10"
    assert cut == full


_ROW_TEXT = st.one_of(st.none(), st.sampled_from(["", "ib", "marma", "ib:x@1", "ib:x@2", "élément", "Z", "a b", "µ"]))


@given(st.lists(st.tuples(st.sampled_from(["2026-11-20", "2026-11-21", "2026-12-01"]), st.sampled_from(CATEGORIES),
                          _ROW_TEXT, _ROW_TEXT), max_size=30),
       st.lists(st.sampled_from(["A-1", "A-2", "B"]), min_size=1, max_size=3, unique=True))
def test_the_stored_position_orders_rows_as_sql_sorts_their_fields(rows: list[tuple[Any, ...]],
                                                                    patients: list[str]) -> None:
    """``in_listing_order`` numbers each patient's rows so that the table's key ``(date,
    patient, pos)`` lists them exactly as ``ORDER BY date, patient, rank, element, item`` does
    in SQL (NULL first, then by code point), whatever the rows hold."""
    import sqlite3

    from protocol._registry import MIGRATIONS, _statements
    from protocol._worklist import RANK, _ORDER, in_listing_order

    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE projection (patient TEXT)")
    for statement in _statements(MIGRATIONS[-1][2]):
        conn.execute(statement.replace("DROP TABLE worklist_rows", "SELECT 1"))
    for pid in patients:
        projected = [(d, c, "administration", None, e, i, "name", None, "planned", None) for d, c, e, i in rows]
        conn.executemany("INSERT INTO worklist_rows VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         in_listing_order(pid, projected))
    rank_sql = "CASE category " + " ".join(f"WHEN '{c}' THEN {n}" for c, n in RANK.items()) + " END"
    fields = f"SELECT date, patient, {rank_sql} AS rank, element, item FROM worklist_rows"
    stored = conn.execute(f"{fields} {_ORDER}").fetchall()
    assert stored == conn.execute(f"{fields} ORDER BY date, patient, rank, element, item").fetchall()
    assert len(stored) == len(rows) * len(patients) and {r[2] for r in stored} <= set(RANK.values())


def test_the_worklist_is_read_in_the_tables_order_on_both_databases(reg: Registry) -> None:
    """What the worklist queries return is in listing order on SQLite and PostgreSQL alike
    (date, patient, category rank, element, item; NULL first), and on SQLite a week is one
    range of the table's primary key: no sort, no look-up per row (``EXPLAIN QUERY PLAN``)."""
    from protocol import _worklist

    reg.worklist(TODAY, 28)
    db = reg._db
    rows = _worklist.query(db, TODAY, 28, TODAY)
    rank = _worklist.RANK
    key = [(r[0], r[1], rank[r[2]], r[5] is not None, r[5] or "", r[6] is not None, r[6] or "") for r in rows]
    assert len(rows) > 50 and key == sorted(key)
    if getattr(db, "dialect", None) != "sqlite":
        return
    where, args = _worklist._where(TODAY, 7, TODAY)
    for sql, params in ((_worklist._SQLITE_LINE.format(where=where, order=_worklist._ORDER), (9, 9, 9, *args)),
                        (f"SELECT * FROM worklist_rows WHERE {where} {_worklist._ORDER} LIMIT 5", args)):
        plan = " | ".join(r[-1] for r in db.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall())
        assert "USING PRIMARY KEY (date<?)" in plan and "TEMP B-TREE" not in plan, plan


def test_a_row_that_depends_on_a_placeholder_says_unverified_beside_its_dose(reg: Registry) -> None:
    """Clinical safety rule: a dose, days or date that depend on a placeholder are shown as
    unverified where the reader looks. On the worklist (its table, its JSON, the web page, all
    from the stored detail) that is the row's detail, beside the dose: exactly the rows whose
    plan item is ``unverified``, and none other."""
    from protocol._worklist import UNVERIFIED

    wl = reg.worklist(TODAY, 28)
    marked = {(r[1], r[6]) for r in wl.rows if r[8] and UNVERIFIED in r[8]}
    want = set()
    for example in EXAMPLES:
        p = protocol.load_patient(example)
        for item in protocol.plan(p, None, TODAY).items:
            if item.unverified and item.status not in ("given", "omitted", "done", "held"):
                want.add((p.id, item.ref))
    listed = {(r[1], r[6]) for r in wl.rows if r[3] == "administration" and r[2] in ("due", "overdue")}
    assert listed and marked & listed == want & listed
    assert all(UNVERIFIED in r[8] for r in wl.rows if (r[1], r[6]) in want & listed)
    assert UNVERIFIED in wl.table()
