"""The patient registry (``protocol._registry``): the append-only log, corrections, replay and
"as recorded" history, validation of every write, permissions, schema migrations, and what
survives crashes and concurrent writers.

Reliability tests fork writer processes (POSIX only): the children inherit the imported
package, so a restart costs nothing and the 1,000 writes dominate. Each child prints the seq
of every write after ``record`` returned (the commit is on disk); the parent SIGKILLs it at
random points and checks that nothing acknowledged is lost and nothing is half-written.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import random
import signal
import sqlite3
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import protocol
from protocol._db import IntegrityError
from protocol._errors import InputError, PatientError
from protocol._io import read_document
from protocol._registry import (
    APPLICATION_ID,
    MIGRATIONS,
    SCHEMA_VERSION,
    Registry,
    _statements,
    default_db_path,
    describe_entry,
    parse_recorded,
    resolve_patient,
)

from .conftest import plausible_measurement

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples" / "patients").glob("*.yaml"))
ON_TIME = ROOT / "examples" / "patients" / "mr-on-time.yaml"
V1_FIXTURE = ROOT / "tests" / "data" / "registry" / "v1.sql"
TODAY = dt.date(2026, 11, 21)
POSIX = pytest.mark.skipif(not hasattr(os, "fork"), reason="forks writer processes")

#: A small eligible patient (medium risk): base record and one measurement.
SMALL: dict[str, Any] = {
    "id": "REG-0001", "protocol": "interfant06-blinatumomab", "birth_date": "2025-10-20", "sex": "female",
    "diagnosis_date": "2026-05-04", "kmt2a": "rearranged", "wbc_at_diagnosis": 150, "day8_blasts_per_ul": 300,
    "measurements": [{"date": "2026-05-04", "height_cm": 66, "weight_kg": 7.4}],
}


class Clock:
    """A recording clock that moves one second per reading (and can be set back)."""

    def __init__(self, start: dt.datetime = dt.datetime(2026, 11, 21, 9, 0, tzinfo=dt.timezone.utc)) -> None:
        self.t = start

    def __call__(self) -> dt.datetime:
        self.t += dt.timedelta(seconds=1)
        return self.t


def open_reg(path: Path | str, clock: Callable[[], dt.datetime] | None = None, create: bool = True) -> Registry:
    return Registry(path, create=create, today=lambda: TODAY, now=clock or Clock())


@pytest.fixture()
def reg(db_url: str) -> Iterator[Registry]:
    """A new registry, once on SQLite and once on PostgreSQL."""
    r = open_reg(db_url)
    yield r
    r.close()


def small(**over: Any) -> dict[str, Any]:
    data = copy.deepcopy(SMALL)
    data.update(over)
    return data


def dump(path: Path | Registry) -> list[str]:
    """Every row of every table (SQLite: the file's dump; a registry: its tables, read through it)."""
    if isinstance(path, Registry):
        with path._read() as conn:
            return [f"{t} {row!r}" for t in conn.tables() for row in conn.execute(f"SELECT * FROM {t} ORDER BY 1")]
    conn = sqlite3.connect(path)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def same(a: protocol.Patient, b: protocol.Patient) -> bool:
    return a.model_dump() == b.model_dump()


# --------------------------------------------------------------------------- add, replay, export


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_add_replay_and_export_round_trip(reg: Registry, example: Path, tmp_path: Path) -> None:
    entries = reg.add_patient(example, by="alice")
    original = protocol.load_patient(example)
    raw = read_document(example).data
    assert len(entries) == 1 + sum(len(raw.get(k, [])) for k in ("measurements", "mrd", "counts", "events"))
    assert [e.kind for e in entries][0] == "base" and all(e.recorded_by == "alice" for e in entries)
    assert same(reg.patient(original.id), original)
    # Stored as the exact mappings of the file.
    assert reg.patient_data(original.id) == {k: v for k, v in raw.items()}
    for fmt, suffix in (("yaml", ".yaml"), ("json", ".json")):
        out = tmp_path / f"{original.id}{suffix}"
        out.write_text(reg.export(original.id, format=fmt), encoding="utf-8")
        assert same(protocol.load_patient(out), original)


_text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30).filter(lambda s: s.strip())


@st.composite
def patients(draw: st.DrawFn) -> dict[str, Any]:
    """Eligible patients (KMT2A-rearranged, under 1 year) with awkward text and numbers."""
    # Every generated date stays before the day the entries are recorded (future dates are refused).
    birth = draw(st.dates(dt.date(2024, 1, 1), dt.date(2025, 5, 1)))
    diagnosis = birth + dt.timedelta(days=draw(st.integers(0, 360)))
    data: dict[str, Any] = {
        "id": "RT-" + draw(st.from_regex(r"[A-Z]{2}[0-9]{1,4}", fullmatch=True)),
        "protocol": "interfant06-blinatumomab", "birth_date": birth.isoformat(),
        "sex": draw(st.sampled_from(["female", "male", "unknown"])), "diagnosis_date": diagnosis.isoformat(),
        "kmt2a": "rearranged",
        "wbc_at_diagnosis": draw(st.one_of(st.integers(0, 4999), st.floats(0, 4999, allow_nan=False))),
    }
    if draw(st.booleans()):
        data["prednisone_response"] = draw(st.sampled_from(["good", "poor"]))
    if draw(st.booleans()):
        data["notes"] = draw(_text)
    days = draw(st.lists(st.integers(0, 300), unique=True, max_size=5))
    # Heights and weights of a real child (WHO z within ±2; the plan refuses implausible ones).
    z = draw(st.floats(-2, 2))
    data["measurements"] = [plausible_measurement(data["sex"], birth, birth + dt.timedelta(days=d), z,
                                                  max(-2.0, min(2.0, z + draw(st.floats(-1, 1))))) for d in days]
    points = ["end_of_induction", "blinatumomab_day15", "blinatumomab_day29"]
    data["mrd"] = [{"timepoint": t, "date": (diagnosis + dt.timedelta(days=draw(st.integers(0, 90)))).isoformat(),
                    "value": draw(st.sampled_from([0, 1e-5, 3e-4, 0.5, 1]))}
                   for t in draw(st.lists(st.sampled_from(points), unique=True))]
    counts = []
    for d in draw(st.lists(st.integers(0, 200), unique=True, max_size=3)):
        count: dict[str, Any] = {"date": (diagnosis + dt.timedelta(days=d)).isoformat()}
        for key in draw(st.sampled_from([("anc",), ("platelets",), ("anc", "platelets")])):
            count[key] = draw(st.one_of(st.integers(0, 500), st.floats(0, 999, allow_nan=False)))
        counts.append(count)
    if counts:
        data["counts"] = counts
    if draw(st.booleans()):
        start = diagnosis + dt.timedelta(days=draw(st.integers(0, 5)))
        event: dict[str, Any] = {"type": "element_started", "element": "induction", "date": start.isoformat()}
        if draw(st.booleans()):
            event["note"] = draw(_text)
        data["events"] = [event]
    return data


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=patients())
def test_export_round_trip_generated_patients(tmp_path: Path, data: dict[str, Any]) -> None:
    source = tmp_path / "in.json"
    source.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    original = protocol.load_patient(source)
    db = tmp_path / f"r-{time.monotonic_ns()}.db"
    with open_reg(db) as reg:
        reg.add_patient(source, by="alice")
        for fmt in ("yaml", "json"):
            out = tmp_path / f"out.{fmt}"
            out.write_text(reg.export(original.id, format=fmt), encoding="utf-8")
            assert same(protocol.load_patient(out), original)


def test_add_refuses_a_taken_id_and_invalid_files(reg: Registry, tmp_path: Path) -> None:
    reg.add_patient(ON_TIME, by="alice")
    before = dump(reg)
    with pytest.raises(PatientError, match="already in the registry"):
        reg.add_patient(ON_TIME, by="bob")
    bad = ROOT / "tests" / "data" / "malformed" / "patients" / "event-before-diagnosis.yaml"
    with pytest.raises(PatientError) as info:
        reg.add_patient(bad, by="bob")
    assert info.value.problems[0].file == str(bad) and info.value.problems[0].line is not None
    assert dump(reg) == before


# --------------------------------------------------------------------------- the log


def test_the_log_is_append_only(reg: Registry) -> None:
    reg.add_patient(small(), by="alice")
    for sql in ("UPDATE entries SET recorded_by = 'mallory'", "DELETE FROM entries",
                "UPDATE patients SET base = '{}'", "DELETE FROM patients"):
        with pytest.raises(IntegrityError, match="never|append-only"), reg._write() as conn:
            conn.execute(sql)
    # A correction must target an entry of the same patient and kind, once.
    reg.add_patient(small(id="REG-0002"), by="alice")
    with pytest.raises(IntegrityError), reg._write() as conn:
        conn.execute("INSERT INTO entries (patient, kind, data, recorded_by, recorded_at, reason, supersedes) "
                          "VALUES ('REG-0002', 'measurement', '{}', 'x', 'now', 'r', 2)")


def test_correction_takes_the_place_of_the_entry(reg: Registry) -> None:
    reg.add_patient(small(), by="alice")
    # A plausible typo (7.7 for 7.0): 70 kg is refused outright as WHO-implausible (issue 11).
    second = reg.record("REG-0001", "measurement", {"date": "2026-06-01", "height_cm": 67, "weight_kg": 7.7}, by="bob")
    reg.record("REG-0001", "measurement", {"date": "2026-07-01", "height_cm": 68, "weight_kg": 7.9}, by="bob")
    fixed = reg.record("REG-0001", "measurement", {"date": "2026-06-01", "height_cm": 67, "weight_kg": 7.0},
                       by="carol", supersedes=second.seq, reason="weight typed wrong")
    assert [m["weight_kg"] for m in reg.patient_data("REG-0001")["measurements"]] == [7.4, 7.0, 7.9]
    history = {e.seq: e for e in reg.history("REG-0001")}
    assert history[second.seq].superseded_by == fixed.seq and not history[second.seq].live
    assert history[fixed.seq].supersedes == second.seq and history[fixed.seq].live
    assert history[second.seq].data["weight_kg"] == 7.7  # the wrong value is kept, marked
    assert "replaces #" in describe_entry(history[fixed.seq])


def test_retraction_removes_the_entry_from_the_patient(reg: Registry) -> None:
    reg.add_patient(small(), by="alice")
    wrong = reg.record("REG-0001", "mrd", {"timepoint": "end_of_induction", "date": "2026-06-05", "value": 0.01},
                       by="bob")
    gone = reg.retract("REG-0001", wrong.seq, by="bob", reason="result of another patient")
    assert "mrd" not in reg.patient_data("REG-0001")
    h = {e.seq: e for e in reg.history("REG-0001")}
    assert h[wrong.seq].retracted_by == gone.seq and h[gone.seq].what == f"retracts #{wrong.seq}"


@pytest.mark.parametrize("case", ["no reason", "base", "twice", "superseded", "other patient", "other kind",
                                  "no such entry", "a retraction"])
def test_invalid_corrections_are_refused(reg: Registry, case: str) -> None:
    reg.add_patient(small(), by="alice")
    other = reg.add_patient(small(id="REG-0002"), by="alice")
    m = reg.record("REG-0001", "measurement", {"date": "2026-06-01", "height_cm": 67, "weight_kg": 7}, by="b")
    e = reg.record("REG-0001", "event", {"type": "element_started", "element": "induction", "date": "2026-05-04"},
                   by="b")
    gone = reg.retract("REG-0001", e.seq, by="b", reason="r")
    new = {"date": "2026-06-01", "height_cm": 67, "weight_kg": 7.1}
    if case == "superseded":
        reg.record("REG-0001", "measurement", new, by="b", supersedes=m.seq, reason="r")
    before = dump(reg)
    calls: dict[str, Callable[[], Any]] = {
        "no reason": lambda: reg.record("REG-0001", "measurement", new, by="b", supersedes=m.seq),
        "base": lambda: reg.retract("REG-0001", 1, by="b", reason="r"),
        "twice": lambda: reg.retract("REG-0001", e.seq, by="b", reason="r"),
        "superseded": lambda: reg.record("REG-0001", "measurement", new, by="b", supersedes=m.seq, reason="r"),
        "other patient": lambda: reg.retract("REG-0001", other[1].seq, by="b", reason="r"),
        "other kind": lambda: reg.record("REG-0001", "mrd", {"timepoint": "day8", "date": "2026-05-11", "value": 0},
                                         by="b", supersedes=m.seq, reason="r"),
        "no such entry": lambda: reg.retract("REG-0001", 999, by="b", reason="r"),
        "a retraction": lambda: reg.retract("REG-0001", gone.seq, by="b", reason="r"),
    }
    messages = {"no reason": "needs a reason", "base": "cannot be retracted", "twice": "already retracted",
                "superseded": "already superseded", "other patient": "belongs to patient 'REG-0002'",
                "other kind": "is a measurement entry", "no such entry": "no entry #999",
                "a retraction": "itself a retraction"}
    with pytest.raises(InputError, match=messages[case]):
        calls[case]()
    assert dump(reg) == before


def test_base_correction_replaces_the_base_record(reg: Registry) -> None:
    reg.add_patient(small(), by="alice")
    reg.record("REG-0001", "base", {"wbc_at_diagnosis": 165, "notes": "checked"}, by="b", reason="lab typo")
    reg.record("REG-0001", "base", {"notes": None}, by="b", reason="note not needed")
    data = reg.patient_data("REG-0001")
    assert data["wbc_at_diagnosis"] == 165 and "notes" not in data
    changes = [e.changes for e in reg.history("REG-0001") if e.kind == "base"]
    assert changes == ["registered", "wbc_at_diagnosis 150 → 165, notes = checked", "notes removed"]
    assert [p.diagnosis_date for p in reg.patients()] == ["2026-05-04"]
    with pytest.raises(InputError, match="never changed"):
        reg.record("REG-0001", "base", {"id": "REG-9"}, by="b", reason="r")
    with pytest.raises(InputError, match="nothing to correct"):
        reg.record("REG-0001", "base", {"wbc_at_diagnosis": 165}, by="b", reason="r")
    with pytest.raises(PatientError, match="required field is missing"):
        reg.record("REG-0001", "base", {"sex": None}, by="b", reason="r")


def test_history_as_recorded(tmp_path: Path) -> None:
    clock = Clock()
    with open_reg(tmp_path / "r.db", clock) as reg:
        reg.add_patient(small(), by="alice")
        first = clock.t
        m = reg.record("REG-0001", "measurement", {"date": "2026-06-01", "height_cm": 67, "weight_kg": 7.7}, by="b")
        second = clock.t
        reg.record("REG-0001", "measurement", {"date": "2026-06-01", "height_cm": 67, "weight_kg": 7}, by="b",
                   supersedes=m.seq, reason="unit")
        then = reg.patient_data("REG-0001", as_of_recorded=first)
        assert then["measurements"] == SMALL["measurements"]
        assert reg.patient_data("REG-0001", as_of_recorded=second)["measurements"][1]["weight_kg"] == 7.7
        assert reg.patient_data("REG-0001")["measurements"][1]["weight_kg"] == 7
        assert len(reg.history("REG-0001", as_of_recorded=second)) == 3
        # A date means the end of that day; before the patient was added it is unknown.
        assert len(reg.history("REG-0001", as_of_recorded=dt.date(2026, 11, 21))) == 4
        with pytest.raises(PatientError, match="not registered yet"):
            reg.patient_data("REG-0001", as_of_recorded="2026-11-20")
        assert same(reg.patient("REG-0001", as_of_recorded=first), protocol.Patient.model_validate(SMALL))


def test_recorded_at_never_goes_back(tmp_path: Path) -> None:
    clock = Clock()
    with open_reg(tmp_path / "r.db", clock) as reg:
        reg.add_patient(small(), by="alice")
        clock.t -= dt.timedelta(days=1)  # the system clock is set back
        late = reg.record("REG-0001", "measurement", {"date": "2026-06-01", "height_cm": 67, "weight_kg": 7}, by="b")
        stamps = [e.recorded_at for e in reg.history("REG-0001")]
        assert stamps == sorted(stamps) and late.recorded_at == stamps[0]


def test_parse_recorded() -> None:
    assert parse_recorded("2026-11-21") == "2026-11-21T23:59:59.999999Z"
    assert parse_recorded("2026-11-21T10:00") == "2026-11-21T10:00:00.000000Z"
    assert parse_recorded("2026-11-21T10:00:00+01:00") == "2026-11-21T09:00:00.000000Z"
    for bad in ("yesterday", "2026-02-30", "21/11/2026", "2026-11-21T25:00"):
        with pytest.raises(InputError, match="expected a date"):
            parse_recorded(bad)


# --------------------------------------------------------------------------- validation of writes


BAD_WRITES: dict[str, tuple[str, dict[str, Any], str]] = {
    "event before diagnosis": ("event", {"type": "relapse", "date": "2026-01-01"},
                               "on or after diagnosis_date 2026-05-04"),
    "completion before start": ("event", {"type": "element_completed", "element": "induction", "date": "2026-05-08"},
                                "completion on 2026-05-08 is before the start of 'induction' on 2026-05-10"),
    "completion of another element": ("event", {"type": "element_completed", "element": "blinatumomab",
                                                "date": "2026-06-07"}, "the current element is 'induction'"),
    "unknown element": ("event", {"type": "element_started", "element": "consolidation", "date": "2026-05-04"},
                        "expected an element of interfant06-blinatumomab"),
    "impossible date": ("measurement", {"date": "2026-02-30", "height_cm": 66, "weight_kg": 7}, "no such day"),
    "date format": ("measurement", {"date": "21/11/2026", "height_cm": 66, "weight_kg": 7}, "YYYY-MM-DD"),
    "negative weight": ("measurement", {"date": "2026-06-01", "height_cm": 66, "weight_kg": -7}, "> 0"),
    "same date twice": ("measurement", {"date": "2026-05-04", "height_cm": 66, "weight_kg": 7},
                        "a second measurement on 2026-05-04 \\(#2\\)"),
    "unknown time point": ("mrd", {"timepoint": "day99", "date": "2026-06-01", "value": 0}, "expected a time point"),
    "unknown field": ("count", {"date": "2026-06-01", "anc": 1, "colour": "red"}, "unknown field"),
    "unknown event type": ("event", {"type": "teleported", "date": "2026-06-01"}, "expected"),
    "forbidden branch": ("event", {"type": "hsct", "date": "2026-06-01"}, "'hsct' cannot follow 'induction'"),
}


@pytest.mark.parametrize("case", list(BAD_WRITES))
def test_bad_writes_change_nothing(reg: Registry, case: str) -> None:
    reg.add_patient(small(events=[{"type": "element_started", "element": "induction", "date": "2026-05-10"}]),
                    by="alice")
    kind, data, message = BAD_WRITES[case]
    before = dump(reg)
    with pytest.raises(InputError, match=message) as info:
        reg.record("REG-0001", kind, data, by="bob")
    assert info.value.problems[0].file == "record"
    assert dump(reg) == before


def test_problems_name_log_entries(reg: Registry) -> None:
    reg.add_patient(small(), by="alice")
    start = reg.record("REG-0001", "event", {"type": "element_started", "element": "induction", "date": "2026-05-04"},
                       by="b")
    done = reg.record("REG-0001", "event", {"type": "element_completed", "element": "induction",
                                            "date": "2026-06-07"}, by="b")
    with pytest.raises(PatientError) as info:
        reg.retract("REG-0001", start.seq, by="b", reason="r")
    assert info.value.problems[0].file == f"REG-0001 #{done.seq}"


def test_unknown_patient_says_how_to_add_it(reg: Registry, tmp_path: Path) -> None:
    reg.add_patient(small(), by="alice")
    with pytest.raises(PatientError, match="no patient 'NOPE'.*REG-0001.*protocol patients add"):
        reg.record("NOPE", "measurement", {"date": "2026-06-01", "height_cm": 1, "weight_kg": 1}, by="b")
    with pytest.raises(PatientError, match="no patient 'NOPE'"):
        resolve_patient("NOPE", reg.path)
    with pytest.raises(PatientError, match="no registry at"):
        resolve_patient("NOPE", tmp_path / "missing.db")
    assert same(resolve_patient("REG-0001", reg.path), protocol.Patient.model_validate(SMALL))


def test_who_records(reg: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USER", "dora")
    assert reg.add_patient(small(), by="  ")[0].recorded_by == "dora"
    monkeypatch.setenv("USER", "")
    monkeypatch.setattr("getpass.getuser", lambda: "")
    with pytest.raises(InputError, match="--by"):
        reg.record("REG-0001", "measurement", {"date": "2026-06-01", "height_cm": 1, "weight_kg": 1})


# --------------------------------------------------------------------------- the file


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077])
def test_registry_file_is_owner_only(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        with open_reg(tmp_path / "r.db") as reg:
            reg.add_patient(small(), by="alice")
            files = [p for p in tmp_path.iterdir() if p.name.startswith("r.db")]
            assert {p.name for p in files} >= {"r.db", "r.db-wal", "r.db-shm"}
            for p in files:
                assert stat.S_IMODE(p.stat().st_mode) & 0o077 == 0, p
            assert stat.S_IMODE((tmp_path / "r.db").stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_wal_full_sync_and_integrity(tmp_path: Path) -> None:
    reg = open_reg(tmp_path / "r.db")
    assert reg._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert reg._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert reg._conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert reg.integrity_check() == "ok"


def test_default_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("PROTOCOL_DB", raising=False)
    assert default_db_path() == Path("protocol.db")
    monkeypatch.setenv("PROTOCOL_DB", str(tmp_path / "x.db"))
    assert default_db_path() == tmp_path / "x.db"


def test_missing_or_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no registry here"):
        Registry(tmp_path / "none.db")
    assert not (tmp_path / "none.db").exists()
    with pytest.raises(InputError, match="folder"):
        Registry(tmp_path / "no" / "such" / "dir.db", create=True)
    text = tmp_path / "text.db"
    text.write_text("not a database at all", encoding="utf-8")
    with pytest.raises(InputError, match="not an SQLite database"):
        Registry(text)
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE t (x)")
    conn.close()
    with pytest.raises(InputError, match="other tables"):
        Registry(other)


# --------------------------------------------------------------------------- migrations


def _from_script(path: Path, script: str) -> None:
    conn = sqlite3.connect(path)
    conn.executescript(script)
    conn.close()


def test_a_version_1_database_opens_and_migrates(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    _from_script(db, V1_FIXTURE.read_text(encoding="utf-8"))
    before = [r for r in dump(db) if ("entries" in r or "patients" in r) and "sqlite_sequence" not in r]
    with open_reg(db, create=False) as reg:
        version = reg._conn.execute("PRAGMA user_version").fetchone()[0]
        assert version == SCHEMA_VERSION > 1
        meta = dict(reg._conn.execute("SELECT key, value FROM meta"))
        assert all(f"migration.{n}" in meta for n, _, _ in MIGRATIONS)
        # Nothing recorded by the old release changed; its corrections still apply.
        history = reg.history("INF-0003")
        assert [e.seq for e in history if not e.live] == [22]
        assert reg.patient_data("INF-0003")["measurements"][-1]["weight_kg"] == 8.1
        assert "measurements" in reg.patient_data("INF-0002") and len(reg.patient_data("INF-0002")["measurements"]) == 2
        # The example file gained cd19 and eoi_marrow_blasts_percent after version 1 was dumped.
        example = protocol.load_patient(ROOT / "examples/patients/hr-to-hsct.yaml").model_dump(mode="json")
        example.pop("cd19"), example.pop("eoi_marrow_blasts_percent")
        assert same(reg.patient("INF-0002"), protocol.Patient.model_validate(example))
        # The new release writes to it and serves the worklist from it.
        reg.record("INF-0003", "mrd", {"timepoint": "pre_octadad", "date": "2026-11-02", "value": 0}, by="carol")
        assert reg.worklist(TODAY, 7).rows
        assert reg.integrity_check() == "ok"
    after = [r for r in dump(db) if r in before]
    assert after == before


def test_a_version_6_projection_is_rebuilt_clustered(tmp_path: Path) -> None:
    """Migration 7 stores the worklist rows clustered by their listing key: the old cache (rows
    in the version 3 layout) is dropped, nothing recorded is touched, every patient is
    re-planned on the next worklist, and the rows come back in listing order."""
    db = tmp_path / "v6.db"
    with open_reg(db) as reg:
        reg.add_patient(ON_TIME, by="alice")
        want = reg.worklist(TODAY, 7).rows
    conn = sqlite3.connect(db)
    conn.executescript("DROP TABLE worklist_rows; DELETE FROM projection;\n"
                       + "\n".join(s + ";" for s in _statements(MIGRATIONS[2][2]) if "DROP" not in s and "DELETE" not in s)
                       + "\nINSERT INTO projection VALUES ('INF-0001', '2026-11-21', 7, 'interfant06-blinatumomab', 'k', 1, 'x');"
                       "INSERT INTO worklist_rows VALUES ('INF-0001', '2026-11-21', 0, 'due', 'administration', NULL,"
                       " 'marma', 'marma:x@1', 'X', NULL, 'planned', NULL); PRAGMA user_version = 6;")
    conn.close()
    entries = [r for r in dump(db) if r.startswith('INSERT INTO "entries"')]
    with open_reg(db, create=False) as reg:
        assert reg._conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 7
        assert reg._conn.execute("SELECT count(*) FROM projection").fetchone()[0] == 0
        sql = reg._conn.execute("SELECT sql FROM sqlite_master WHERE name = 'worklist_rows'").fetchone()[0]
        assert "WITHOUT ROWID" in sql and "PRIMARY KEY (date, patient, pos)" in sql
        wl = reg.worklist(TODAY, 7)
        assert wl.refreshed == 1 and wl.rows == want and "marma:x@1" not in {r[6] for r in wl.rows}
    assert [r for r in dump(db) if r.startswith('INSERT INTO "entries"')] == entries


def test_a_version_2_projection_is_rebuilt(tmp_path: Path) -> None:
    """Migration 3 changed the projection's layout: the old cache is dropped, nothing recorded
    is touched, and every patient is re-planned on the next worklist."""
    db = tmp_path / "v2.db"
    v2 = "\n".join(_statements(MIGRATIONS[1][2]))
    _from_script(db, V1_FIXTURE.read_text(encoding="utf-8") + "\n" + v2 + "\nPRAGMA user_version = 2;\n"
                 "INSERT INTO projection VALUES ('INF-0003', '2026-11-21', 7, 'interfant06-blinatumomab', 'k', 25, 'x');"
                 "INSERT INTO worklist_rows VALUES ('INF-0003', '2026-11-21', 'due', 'administration', NULL, 'marma',"
                 " 'marma:x@1', 'X', NULL, 'planned', NULL);")
    entries = [r for r in dump(db) if r.startswith('INSERT INTO "entries"')]
    with open_reg(db, create=False) as reg:
        assert reg._conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert reg._conn.execute("SELECT count(*) FROM projection").fetchone()[0] == 0
        wl = reg.worklist(TODAY, 7)
        assert wl.refreshed == 2 and "marma:x@1" not in {r[6] for r in wl.rows}
    assert [r for r in dump(db) if r.startswith('INSERT INTO "entries"')] == entries


def test_migration_1_is_frozen() -> None:
    """Migration 1 must still create exactly the schema the first release wrote: a migration
    is never edited in place (add a new one instead)."""
    def schema(script: str) -> set[str]:
        conn = sqlite3.connect(":memory:")
        conn.executescript(script)
        rows = {r[0] for r in conn.execute("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL "
                                           "AND name NOT LIKE 'sqlite_%'")}
        conn.close()
        return rows

    fixture = "\n".join(line for line in V1_FIXTURE.read_text(encoding="utf-8").splitlines()
                        if not line.startswith("INSERT") and not line.startswith("DELETE"))
    assert schema(fixture) == schema(MIGRATIONS[0][2])
    assert [n for n, _, _ in MIGRATIONS] == list(range(1, SCHEMA_VERSION + 1))
    assert all(list(_statements(sql)) for _, _, sql in MIGRATIONS)


def test_a_database_from_a_newer_release_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "new.db"
    with open_reg(db) as reg:
        reg.add_patient(small(), by="alice")
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    before = dump(db)
    with pytest.raises(InputError, match="newer release"):
        open_reg(db, create=False)
    assert dump(db) == before
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA application_id = 7")
    conn.close()
    with pytest.raises(InputError, match="another application"):
        open_reg(db, create=False)


def test_application_id_is_set(tmp_path: Path) -> None:
    with open_reg(tmp_path / "r.db") as reg:
        assert reg._conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID


# --------------------------------------------------------------------------- crashes and concurrency


def _writer(db: str, patients: list[str], total: int, fd: int) -> None:
    """Child process: write measurements until ``total`` exist, printing ``seq k`` after each commit.

    Write number k goes to patient ``k % len(patients)`` on day ``k // len(patients)`` after
    diagnosis; k continues from the number of measurements already in the log, so a write that
    committed but was killed before it was printed is never repeated.
    """
    reg = Registry(db, today=lambda: TODAY)
    k = reg._conn.execute("SELECT count(*) FROM entries WHERE kind = 'measurement'").fetchone()[0]
    while k < total:
        day = dt.date(2026, 5, 5) + dt.timedelta(days=k // len(patients))
        entry = reg.record(patients[k % len(patients)], "measurement",
                           {"date": day.isoformat(), "height_cm": 66, "weight_kg": 7 + k / 10000}, by=f"w{k}")
        os.write(fd, f"{entry.seq} {k}\n".encode())
        k += 1
    reg.close()


def _fork(target: Callable[[], None]) -> int:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            target()
        except BaseException:  # noqa: BLE001
            import traceback

            traceback.print_exc()
            code = 1
        os._exit(code)
    return pid


def _registry_with(tmp_path: Path, n: int) -> tuple[Path, list[str]]:
    db = tmp_path / "r.db"
    ids = [f"W-{i}" for i in range(n)]
    with open_reg(db) as reg:
        for pid in ids:
            reg.add_patient(small(id=pid, measurements=[]), by="setup")
    return db, ids


@POSIX
def test_sigkill_during_1000_writes_loses_nothing_acknowledged(tmp_path: Path) -> None:
    total = 1000
    db, ids = _registry_with(tmp_path, 10)
    rng = random.Random(20261121)
    kill_at = sorted(rng.sample(range(20, total - 200), 6))  # the margin: never kill a writer that just finished
    acked: dict[int, int] = {}  # seq -> k
    kills = 0
    buffer = b""
    while True:
        r, w = os.pipe()
        pid = _fork(lambda w=w: _writer(str(db), ids, total, w))  # type: ignore[misc]
        os.close(w)
        target = kill_at[kills] if kills < len(kill_at) else None
        killed = False
        while True:
            chunk = os.read(r, 65536)
            if not chunk:
                break
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                seq, k = map(int, line.split())
                acked[seq] = k
            if target is not None and len(acked) >= target and not killed:
                time.sleep(rng.uniform(0, 0.004))  # land anywhere in the next write
                os.kill(pid, signal.SIGKILL)
                killed = True
        os.close(r)
        _, status = os.waitpid(pid, 0)
        if killed:
            kills += 1
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
            continue
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        break
    assert kills == len(kill_at)
    with open_reg(db, create=False) as reg:
        assert reg.integrity_check() == "ok"
        rows = reg._conn.execute("SELECT seq, patient, data, recorded_by FROM entries WHERE kind = 'measurement' "
                                 "ORDER BY seq").fetchall()
        assert len(rows) == total  # every write exactly once, acknowledged or not
        by_seq = {seq: (patient, json.loads(data), who) for seq, patient, data, who in rows}
        for seq, k in acked.items():
            patient, data, who = by_seq[seq]
            assert (patient, who) == (ids[k % len(ids)], f"w{k}")
            assert data == {"date": (dt.date(2026, 5, 5) + dt.timedelta(days=k // len(ids))).isoformat(),
                            "height_cm": 66, "weight_kg": 7 + k / 10000}
        assert sorted(int(who[1:]) for _, _, who in by_seq.values()) == list(range(total))
        for pid in ids:  # every patient still replays to a valid patient
            assert len(reg.patient(pid).measurements) == total // len(ids)
    assert len(acked) >= total - kills


def _concurrent(db: str, ids: list[str], writer: int, n: int, fd: int) -> None:
    reg = Registry(db, today=lambda: TODAY)
    for i in range(n):
        k = i * 4 + writer  # the four writers interleave days on the same patients
        day = dt.date(2026, 5, 5) + dt.timedelta(days=k // len(ids))
        entry = reg.record(ids[k % len(ids)], "measurement", {"date": day.isoformat(), "height_cm": 66,
                                                              "weight_kg": 7}, by=f"writer{writer}")
        os.write(fd, f"{entry.seq} {k}\n".encode())
    reg.close()


@POSIX
def test_four_concurrent_writers_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    n = 60
    db, ids = _registry_with(tmp_path, 2)
    children = []
    for writer in range(4):
        r, w = os.pipe()
        pid = _fork(lambda writer=writer, w=w: _concurrent(str(db), ids, writer, n, w))  # type: ignore[misc]
        os.close(w)
        children.append((pid, r))
    acked: dict[int, int] = {}
    for pid, r in children:
        out = b""
        while chunk := os.read(r, 65536):
            out += chunk
        os.close(r)
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        for line in out.decode().splitlines():
            seq, k = map(int, line.split())
            assert seq not in acked
            acked[seq] = k
    assert sorted(acked.values()) == list(range(4 * n))
    with open_reg(db, create=False) as reg:
        rows = reg._conn.execute("SELECT seq FROM entries WHERE kind = 'measurement'").fetchall()
        assert sorted(r[0] for r in rows) == sorted(acked)
        assert sum(len(reg.patient(pid).measurements) for pid in ids) == 4 * n
        assert reg.integrity_check() == "ok"


# --------------------------------------------------------------------------- stateful: replay == incremental state


TIMEPOINTS = ["end_of_induction", "blinatumomab_day15", "blinatumomab_day29", "pre_octadad"]


class RegistryMachine(RuleBasedStateMachine):
    """Random records, corrections and retractions on one patient. The registry's replay of its
    log must always equal a model kept incrementally here, every earlier state must still be
    readable "as recorded" then, and no row of the log ever changes."""

    def __init__(self) -> None:
        super().__init__()
        import tempfile

        self.dir = tempfile.TemporaryDirectory()
        self.clock = Clock()
        self.reg = open_reg(Path(self.dir.name) / "r.db", self.clock)
        self.lists: dict[str, list[list[Any]]] = {"measurements": [], "mrd": []}  # [seq, data] in place
        self.base: dict[str, Any] = {}
        self.rows: dict[int, tuple[Any, ...]] = {}
        self.snapshots: list[tuple[dt.datetime, dict[str, Any]]] = []

    @initialize()
    def add(self) -> None:
        entries = self.reg.add_patient(small(), by="alice")
        self.base = {k: v for k, v in SMALL.items() if k != "measurements"}
        self.lists["measurements"] = [[entries[1].seq, SMALL["measurements"][0]]]
        self.snap()

    def teardown(self) -> None:
        self.reg.close()
        self.dir.cleanup()

    def expected(self) -> dict[str, Any]:
        out = dict(self.base)
        for name, entries in self.lists.items():
            if entries:
                out[name] = [data for _, data in entries]
        return out

    def snap(self) -> None:
        self.snapshots.append((self.clock.t, copy.deepcopy(self.expected())))

    def attempt(self, ok: bool, call: Callable[[], Any]) -> Any:
        before = self.reg._conn.execute("SELECT count(*) FROM entries").fetchone()[0]
        if ok:
            return call()
        with pytest.raises(InputError):
            call()
        assert self.reg._conn.execute("SELECT count(*) FROM entries").fetchone()[0] == before
        return None

    def dates(self, skip: int | None = None) -> set[str]:
        return {d["date"] for seq, d in self.lists["measurements"] if seq != skip}

    @rule(day=st.integers(0, 200), weight=st.integers(60, 95))  # 6-9.5 kg at 66 cm: a real child
    def measure(self, day: int, weight: int) -> None:
        data = {"date": (dt.date(2026, 5, 4) + dt.timedelta(days=day)).isoformat(), "height_cm": 66,
                "weight_kg": weight / 10}
        entry = self.attempt(data["date"] not in self.dates(),
                             lambda: self.reg.record("REG-0001", "measurement", data, by="m"))
        if entry:
            self.lists["measurements"].append([entry.seq, data])
            self.snap()

    @rule(point=st.sampled_from(TIMEPOINTS), day=st.integers(-5, 200), value=st.sampled_from([0, 1e-4, 5e-4, 0.02]))
    def mrd(self, point: str, day: int, value: float) -> None:
        data = {"timepoint": point, "date": (dt.date(2026, 5, 4) + dt.timedelta(days=day)).isoformat(),
                "value": value}
        entry = self.attempt(day >= 0, lambda: self.reg.record("REG-0001", "mrd", data, by="m"))
        if entry:
            self.lists["mrd"].append([entry.seq, data])
            self.snap()

    @precondition(lambda self: any(self.lists.values()))
    @rule(data=st.data(), day=st.integers(0, 200))
    def correct(self, data: st.DataObject, day: int) -> None:
        name = data.draw(st.sampled_from([n for n, v in self.lists.items() if v]))
        slot = data.draw(st.sampled_from(self.lists[name]))
        new = dict(slot[1])
        new["date"] = (dt.date(2026, 5, 4) + dt.timedelta(days=day)).isoformat()
        ok = name == "mrd" or new["date"] not in self.dates(skip=slot[0])
        kind = "measurement" if name == "measurements" else "mrd"
        entry = self.attempt(ok, lambda: self.reg.record("REG-0001", kind, new, by="c", supersedes=slot[0],
                                                         reason="typo"))
        if entry:
            slot[:] = [entry.seq, new]
            self.snap()

    @precondition(lambda self: any(self.lists.values()))
    @rule(data=st.data())
    def retract(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from([n for n, v in self.lists.items() if v]))
        slot = data.draw(st.sampled_from(self.lists[name]))
        self.attempt(True, lambda: self.reg.retract("REG-0001", slot[0], by="r", reason="wrong patient"))
        self.lists[name].remove(slot)
        self.snap()

    @rule(wbc=st.integers(0, 999), note=st.one_of(st.none(), _text))
    def correct_base(self, wbc: int, note: str | None) -> None:
        new = {**self.base, "wbc_at_diagnosis": wbc}
        if note is not None:
            new["notes"] = note
        else:
            new.pop("notes", None)
        entry = self.attempt(new != self.base, lambda: self.reg.record(
            "REG-0001", "base", {"wbc_at_diagnosis": wbc, "notes": note}, by="b", reason="checked"))
        if entry:
            self.base = new
            self.snap()

    @invariant()
    def replay_equals_incremental_state(self) -> None:
        if self.base:
            assert self.reg.patient_data("REG-0001") == self.expected()

    @invariant()
    def earlier_states_are_readable_and_rows_never_change(self) -> None:
        for when, state in self.snapshots[-3:]:
            assert self.reg.patient_data("REG-0001", as_of_recorded=when) == state
        rows = {r[0]: r for r in self.reg._conn.execute("SELECT * FROM entries")}
        for seq, row in self.rows.items():
            assert rows[seq] == row
        self.rows = rows


TestRegistryMachine = RegistryMachine.TestCase
TestRegistryMachine.settings = settings(max_examples=15, stateful_step_count=12, deadline=None)


def test_a_registry_locked_too_long_is_bad_input_not_a_crash(tmp_path: Path) -> None:
    # Another writer holds the registry past the busy timeout: RegistryError (exit 2), not a crash.
    import protocol._registry as registry_module
    from protocol._errors import RegistryError

    db = tmp_path / "r.db"
    registry_module.open_registry(db, create=True).close()
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    reg = registry_module.open_registry(db)
    reg._conn.execute("PRAGMA busy_timeout = 50")
    try:
        with pytest.raises(RegistryError, match="cannot write the registry: database is locked"), reg._write():
            pass
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        reg.close()


# --------------------------------------------------------------------------- the first worklist of a day, on two cores


@pytest.mark.skipif(not hasattr(os, "fork") or (os.cpu_count() or 1) < 2, reason="plans in a forked process")
def test_a_refresh_planned_in_two_processes_equals_one_planned_here(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Many stale patients are planned half in a forked process (issue 14): the worklist and
    the stored projection are those of a refresh planned in this process alone, and a
    patient whose log grew after its plan was made (a write in between) is planned again."""
    from protocol import _registry

    serial, forked = open_reg(tmp_path / "serial.db"), open_reg(tmp_path / "forked.db")
    for r in (serial, forked):
        for k in range(8):
            r.add_patient(small(id=f"REG-{k:04d}", birth_date=f"2025-10-{k + 10:02d}"), by="test")
    day = TODAY + dt.timedelta(days=3)  # every projection was made for TODAY: all stale
    monkeypatch.setattr(_registry, "PARALLEL_REFRESH_MIN", 10**9)
    expected = serial.worklist(day, 7, day)
    planned = _registry._parallel_projections
    calls = []

    def then_a_write(path: Path, patients: Any, start: dt.date, days: int) -> Any:
        out = planned(path, patients, start, days)
        calls.append(len(out))
        for r in (serial, forked):  # recorded after REG-0003 was planned, before the refresh writes
            r.record("REG-0003", "measurement", {"date": "2026-11-20", "height_cm": 70, "weight_kg": 8.0}, by="test")
        return out

    monkeypatch.setattr(_registry, "PARALLEL_REFRESH_MIN", 2)
    monkeypatch.setattr(_registry, "_parallel_projections", then_a_write)
    got = forked.worklist(day, 7, day)
    assert calls == [8]
    assert got.refreshed == 8
    monkeypatch.setattr(_registry, "PARALLEL_REFRESH_MIN", 10**9)
    expected = serial.worklist(day, 7, day)  # REG-0003 re-planned with its new measurement
    assert got.rows == expected.rows
    query = "SELECT patient, computed_for, horizon, protocol, definition, last_seq FROM projection ORDER BY patient"
    assert forked._conn.execute(query).fetchall() == serial._conn.execute(query).fetchall()
    serial.close()
    forked.close()


def test_the_freshness_keys_are_the_loaded_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worklist's freshness check (``_current_keys``) takes a stored key without loading
    the definition only when the file still has the key's bytes: whatever the projection
    holds, the keys are those of loading each definition (``_definition_key``)."""
    import hashlib

    from protocol import _loading, _registry

    ref = "interfant06-blinatumomab"
    key = _registry._definition_key(ref)
    assert key is not None
    refs = [ref, f"{ref}@1.0.0", f"{ref}@9.9.9", "no-such-protocol"]
    stale = ["0.0.1|" + key.split("|", 1)[1], key[:-16] + "0" * 16, None]  # another release, other bytes, none
    stored = [(r, k) for r in refs for k in [key, *stale]] + [("interfant21", None)]
    want = {r: _registry._definition_key(r) for r in [*refs, "interfant21"]}
    assert _registry._current_keys(stored) == want
    assert _registry._current_keys([(ref, k) for k in stale]) == {ref: key}  # loaded: no stored key matches

    def no_load(*_: Any) -> Any:
        raise AssertionError("loaded")

    with monkeypatch.context() as m:  # the file has the stored key's bytes: nothing is loaded
        m.setattr(_loading, "load_protocol", no_load)
        assert _registry._current_keys([(ref, key), (f"{ref}@1.0.0", key)]) == {ref: key, f"{ref}@1.0.0": key}

    # A shipped file changed after release (its bytes are not the manifest's): loaded, and refused.
    shipped = Path(_loading.__file__).parent / "definitions"
    changed = tmp_path / "defs"
    changed.mkdir()
    for path in shipped.iterdir():
        if path.is_file():
            (changed / path.name).write_bytes(path.read_bytes())
    target = changed / f"{ref}.yaml"
    target.write_bytes(target.read_bytes() + b"\n# edited\n")
    monkeypatch.setattr(_loading, "_definitions_dir", lambda: changed)
    monkeypatch.setattr(_loading, "_SHIPPED", None)
    assert _registry._definition_key(ref) is None
    assert _registry._current_keys([(ref, key)]) == {ref: None}
    # The same bytes, released (in the manifest): the stored key of other bytes is not taken.
    sums = (changed / _loading.MANIFEST).read_text(encoding="utf-8").splitlines()
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    (changed / _loading.MANIFEST).write_text("\n".join(f"{digest}  {target.name}" if line.endswith(f"  {target.name}")
                                                       else line for line in sums) + "\n", encoding="utf-8")
    monkeypatch.setattr(_loading, "_SHIPPED", None)
    now = _registry._definition_key(ref)
    assert now is not None and now != key and now.endswith(digest[:16])
    assert _registry._current_keys([(ref, key)]) == {ref: now}
    # The manifest no longer releases those bytes (a new process: nothing loaded yet): the key
    # stored for them is not taken either.
    (changed / _loading.MANIFEST).write_text("\n".join(sums) + "\n", encoding="utf-8")
    for name, empty in (("_SHIPPED", None), ("_CACHE", {}), ("_BY_ID", {})):
        monkeypatch.setattr(_loading, name, empty)
    assert _registry._definition_key(ref) is None
    assert _registry._current_keys([(ref, now)]) == {ref: None}
