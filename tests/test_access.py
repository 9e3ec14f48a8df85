"""protocol._access: every patient query is filtered by the user's sites (another site's
patient is not found, exactly like one that does not exist), roles decide what may be done,
and protocol._signoff: dose-critical entries wait for a second person."""

from __future__ import annotations

from pathlib import Path

import pytest

from protocol._access import Actor, Forbidden, NotFound, Scoped, feed_patient
from protocol._auth import add_site, add_user
from protocol._errors import InputError
from protocol._registry import open_registry

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "patients"
PASSWORD = "a long pass phrase"

A = Actor("alice", "coordinator", frozenset({"site-a"}))
B = Actor("bea", "coordinator", frozenset({"site-b"}))
MONITOR = Actor("mo", "monitor", frozenset())
ADMIN = Actor("root", "admin", frozenset())
PHARMACIST = Actor("phil", "pharmacist", frozenset({"site-a"}))


@pytest.fixture
def reg(db_url: str):
    """A registry on SQLite, then on PostgreSQL."""
    with open_registry(db_url, create=True) as r:
        for site in ("site-a", "site-b"):
            add_site(r, site)
        add_user(r, "alice", "coordinator", ["site-a"], PASSWORD)
        add_user(r, "phil", "pharmacist", ["site-a"], "pharmacist pass phrase")
        r.add_patient(EXAMPLES / "mr-on-time.yaml", by="alice", site="site-a")
        r.add_patient(EXAMPLES / "hr-to-hsct.yaml", by="bea", site="site-b")
        yield r


def test_each_user_sees_only_the_patients_of_its_sites(reg) -> None:
    assert [p.id for p in Scoped(reg, A).patients()] == ["INF-0001"]
    assert [p.id for p in Scoped(reg, B).patients()] == ["INF-0002"]
    assert [p.id for p in Scoped(reg, MONITOR).patients()] == ["INF-0001", "INF-0002"]
    with pytest.raises(Forbidden):
        Scoped(reg, ADMIN).patients()


@pytest.mark.parametrize("call", [
    lambda s: s.patient("INF-0002"), lambda s: s.patient_data("INF-0002"), lambda s: s.history("INF-0002"),
    lambda s: s.export("INF-0002"), lambda s: s.plan("INF-0002"), lambda s: s.calendar("INF-0002"),
    lambda s: s.signoffs("INF-0002"), lambda s: s.feeds("INF-0002"), lambda s: s.new_feed("INF-0002"),
    lambda s: s.record("INF-0002", "measurement", {"date": "2026-11-20", "height_cm": 70, "weight_kg": 8}),
    lambda s: s.retract("INF-0002", 30, reason="x"),
])
def test_another_sites_patient_is_not_found_like_a_missing_one(reg, call) -> None:
    with pytest.raises(NotFound) as other:
        call(Scoped(reg, A))
    assert "INF-0002" in str(other.value) and "INF-0001" not in str(other.value)  # lists no other patient


def test_the_worklist_holds_only_the_users_patients(reg) -> None:
    import datetime as dt

    rows = Scoped(reg, A).worklist(dt.date(2026, 11, 21), 28).rows
    assert rows and {r[1] for r in rows} == {"INF-0001"}


def test_roles(reg) -> None:
    data = {"date": "2026-11-20", "height_cm": 70, "weight_kg": 8.4}
    with pytest.raises(Forbidden):
        Scoped(reg, MONITOR).record("INF-0001", "measurement", data)
    with pytest.raises(Forbidden):
        Scoped(reg, PHARMACIST).record("INF-0001", "measurement", data)
    entry = Scoped(reg, A).record("INF-0001", "measurement", data)
    assert entry.recorded_by == "alice"  # the user, never a name typed in
    with pytest.raises(InputError, match="not 'site-b'"):
        Scoped(reg, A).add_patient(str(EXAMPLES / "mr-pending-mrd.yaml"), "site-b")


def test_feeds_are_random_hashed_and_revocable(reg) -> None:
    scoped = Scoped(reg, A)
    token = scoped.new_feed("INF-0001")
    assert feed_patient(reg, token) == "INF-0001"
    assert token not in str(reg._conn.execute("SELECT * FROM feeds").fetchall())
    [(key, _, by)] = scoped.feeds("INF-0001")
    assert by == "alice"
    scoped.revoke_feed("INF-0001", key)
    assert feed_patient(reg, token) is None
    assert feed_patient(reg, "guess") is None


def test_a_dose_modification_waits_for_a_second_person_and_a_correction_voids_the_signature(reg) -> None:
    scoped = Scoped(reg, A)
    ref = next(i.ref for i in scoped.plan("INF-0001").items if i.status == "planned" and i.dose is not None)
    entry = scoped.record("INF-0001", "event", {"type": "dose_modified", "item": ref, "date": "2026-11-21",
                                                "percent": 50, "of": "standard", "scope": "item",
                                                "reason": "liver toxicity"})
    assert scoped.signoffs("INF-0001")[entry.seq].state == "unsigned"
    assert [r[1] for r in scoped.unsigned()] == [entry.seq]
    with pytest.raises(Forbidden):
        scoped.sign(entry.seq, PASSWORD)  # a coordinator does not sign
    recorder = Actor("phil", "pharmacist", frozenset({"site-a"}))
    with pytest.raises(InputError, match="password is wrong"):
        Scoped(reg, recorder).sign(entry.seq, "not my password")
    [mark] = scoped.signoff_marks("INF-0001")  # what the roadmap prints
    assert (mark.entry, mark.item, mark.signed) == (entry.seq, ref, False)
    assert mark.text.startswith("awaiting verification (recorded by alice on ")
    signed = Scoped(reg, recorder).sign(entry.seq, "pharmacist pass phrase")
    assert (signed.meaning, signed.signer, signed.state) == ("dose verified", "phil", "signed")
    [mark] = scoped.signoff_marks("INF-0001")
    assert mark.signed and mark.text == f"dose verified by phil on {signed.signed_at[:10]} {signed.signed_at[11:16]} UTC"
    with pytest.raises(NotFound):
        Scoped(reg, B).signoff_marks("INF-0001")
    with pytest.raises(InputError, match="already signed"):
        Scoped(reg, recorder).sign(entry.seq, "pharmacist pass phrase")
    scoped.retract("INF-0001", entry.seq, reason="wrong item")
    assert scoped.signoffs("INF-0001")[entry.seq].state == "void"
    assert scoped.unsigned() == []
    assert scoped.signoff_marks("INF-0001") == ()  # a corrected entry is no longer on the roadmap


def test_the_recorder_cannot_sign_their_own_entry(reg) -> None:
    add_user(reg, "carl", "coordinator", ["site-a"], "coordinator pass phrase")
    ref = next(i.ref for i in Scoped(reg, A).plan("INF-0001").items if i.status == "planned" and i.dose is not None)
    # phil records (as if a coordinator too) and then tries to sign it himself.
    from protocol._signoff import record

    entry = record(reg, "INF-0001", "event", {"type": "dose_modified", "item": ref, "date": "2026-11-21",
                                              "percent": 50, "of": "standard", "scope": "item", "reason": "x"},
                   by="phil")
    with pytest.raises(InputError, match="recorded by you"):
        Scoped(reg, PHARMACIST).sign(entry.seq, "pharmacist pass phrase")


def _rows(reg, table: str) -> int:
    with reg._read() as conn:
        return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


def test_an_entry_and_its_sign_off_note_are_one_transaction(reg, monkeypatch: pytest.MonkeyPatch) -> None:
    """The note that a dose modification waits for sign-off is written in the entry's own
    transaction: when writing the note fails, the entry is not stored either (nothing
    half-written: no dose change left without its sign-off)."""
    import protocol._signoff as signoff

    scoped = Scoped(reg, A)
    ref = next(i.ref for i in scoped.plan("INF-0001").items if i.status == "planned" and i.dose is not None)
    event = {"type": "dose_modified", "item": ref, "date": "2026-11-21", "percent": 50, "of": "standard",
             "scope": "item", "reason": "liver toxicity"}
    entries, notes = _rows(reg, "entries"), _rows(reg, "signoff_required")
    history = scoped.history("INF-0001")
    plan = scoped.plan("INF-0001")
    real = signoff.note_required

    def fails(conn, entry, after, planned=None):
        real(conn, entry, after, planned)  # the note is written, then the transaction fails before commit
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(signoff, "note_required", fails)
    with pytest.raises(OSError, match="No space left"):
        scoped.record("INF-0001", "event", event)
    assert (_rows(reg, "entries"), _rows(reg, "signoff_required")) == (entries, notes)
    assert scoped.history("INF-0001") == history
    assert [(i.ref, i.dose and i.dose.amount) for i in scoped.plan("INF-0001").items] == \
        [(i.ref, i.dose and i.dose.amount) for i in plan.items]
    assert scoped.unsigned() == []
    # The registry still takes the entry afterwards, with its note.
    monkeypatch.setattr(signoff, "note_required", real)
    entry = scoped.record("INF-0001", "event", event)
    assert scoped.signoffs("INF-0001")[entry.seq].state == "unsigned"
    assert (_rows(reg, "entries"), _rows(reg, "signoff_required")) == (entries + 1, notes + 1)


def test_a_given_dose_that_differs_from_the_plan_needs_sign_off(reg) -> None:
    scoped = Scoped(reg, A)
    plan = scoped.plan("INF-0001")
    running = {e.id for e in plan.elements if e.actual_start is not None}
    item = next(i for i in plan.items if i.element in running and i.dose is not None and i.dose.amount
                and i.status not in ("given", "omitted"))
    from protocol._schedule import fmt_amount

    same = scoped.record("INF-0001", "event", {"type": "item_given", "item": item.ref, "date": item.date.isoformat(),
                                               "dose": float(fmt_amount(item.dose.amount))})
    assert same.seq not in scoped.signoffs("INF-0001")
    scoped.retract("INF-0001", same.seq, reason="test")
    other = scoped.record("INF-0001", "event", {"type": "item_given", "item": item.ref,
                                                "date": item.date.isoformat(), "dose": round(item.dose.amount * 0.8, 3)})
    assert "differs from the planned" in scoped.signoffs("INF-0001")[other.seq].why


def test_existing_patients_move_to_the_default_site(tmp_path: Path) -> None:
    import sqlite3

    from protocol._registry import MIGRATIONS, _statements

    db = tmp_path / "v3.db"
    conn = sqlite3.connect(db)
    for _, _, script in MIGRATIONS[:3]:
        for statement in _statements(script):
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 3")
    conn.execute(f"PRAGMA application_id = {0x50524F54}")
    conn.execute("INSERT INTO meta VALUES ('application', 'protocol patient registry')")
    conn.commit()
    conn.close()
    with open_registry(db) as r:
        r.add_patient(EXAMPLES / "mr-on-time.yaml", by="x")
        assert Scoped(r, Actor("d", "coordinator", frozenset({"default"}))).visible() == {"INF-0001": "default"}
