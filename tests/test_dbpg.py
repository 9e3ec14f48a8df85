"""The registry on PostgreSQL (``protocol._dbpg``): what the database enforces by itself.

Row-level security is tested *without* the application's own filter (:mod:`protocol._access`):
the queries below go straight to the tables, as the web application's role
(``protocol_web``, a member of ``protocol_app`` and ``protocol_monitor``, no ``BYPASSRLS``).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from protocol._access import Actor, NotFound, Scoped
from protocol._auth import add_site
from protocol._db import IntegrityError, Scope
from protocol._dbpg import policy_tables
from protocol._errors import InputError, RegistryError
from protocol._registry import Registry

from .pgserver import WEB
from .test_registry import TODAY, Clock, small

COORD_A = Actor("alice", "coordinator", frozenset({"site-a"}))
MONITOR = Actor("mona", "monitor", frozenset())


@pytest.fixture()
def trial(pg_server: Any) -> Iterator[tuple[Any, str, str]]:
    """A registry with patients A-1, A-2 in site-a and B-1 in site-b: (server, owner URL, web URL)."""
    url = pg_server.new_database()
    with Registry(url, create=True, today=lambda: TODAY, now=Clock()) as reg:
        add_site(reg, "site-a")
        add_site(reg, "site-b")
        reg.add_patient(small(id="A-1"), by="alice", site="site-a")
        reg.add_patient(small(id="A-2"), by="alice", site="site-a")
        reg.add_patient(small(id="B-1"), by="bob", site="site-b")
        reg.worklist(TODAY, 7)
    yield pg_server, url, url.replace("protocol_owner@", f"{WEB}@")


def raw(url: str) -> Any:
    import psycopg

    return psycopg.connect(url, autocommit=True)


def web_registry(url: str, actor: Actor | None = None) -> Registry:
    reg = Registry(url, today=lambda: TODAY, now=Clock())
    if actor is not None:
        reg._db.scope = Scope.of(actor)
    return reg


def test_a_cross_site_read_returns_nothing_even_without_the_applications_filter(trial: Any) -> None:
    _, _, web = trial
    with web_registry(web, COORD_A) as reg:
        with reg._read() as conn:  # straight to the tables: no WHERE on the site
            assert sorted(r[0] for r in conn.execute("SELECT id FROM patients")) == ["A-1", "A-2"]
            assert {r[0] for r in conn.execute("SELECT patient FROM entries")} == {"A-1", "A-2"}
            assert {r[0] for r in conn.execute("SELECT patient FROM worklist_rows")} <= {"A-1", "A-2"}
            assert {r[0] for r in conn.execute("SELECT patient FROM version_entries")} == {"A-1", "A-2"}
            assert [r[0] for r in conn.execute("SELECT patient FROM patient_sites WHERE site = 'site-b'")] == []
        # The registry's own reads, called directly (the access layer bypassed on purpose).
        with pytest.raises(InputError, match="no patient 'B-1'"):
            reg.patient("B-1")
        assert [p.id for p in reg.patients()] == ["A-1", "A-2"]
        assert {r[1] for r in reg.worklist(TODAY, 7).rows} <= {"A-1", "A-2"}
        # Writing into another site's patient is refused by the database too.
        with pytest.raises(InputError):
            reg.record("B-1", "measurement", {"date": "2026-06-01", "height_cm": 67, "weight_kg": 7.5}, by="alice")
        with pytest.raises(RegistryError), reg._write() as conn:
            conn.execute("INSERT INTO entries (patient, kind, data, recorded_by, recorded_at) "
                         "VALUES ('B-1', 'measurement', '{}', 'alice', 'x')")
    # Through the access layer: 404 exactly as a patient that does not exist.
    with web_registry(web) as reg:
        with pytest.raises(NotFound):
            Scoped(reg, COORD_A).patient("B-1")


def test_an_unset_site_sees_nothing(trial: Any) -> None:
    server, url, web = trial
    with web_registry(url) as reg:
        tables = sorted(policy_tables(reg._db))
    assert {"patients", "entries", "patient_sites", "user_sites", "worklist_rows", "projection"} <= set(tables)
    with raw(web) as conn:
        for table in tables:
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0, table
        conn.execute("SET protocol.sites = ''")
        assert conn.execute("SELECT count(*) FROM entries").fetchone()[0] == 0
        conn.execute("SET protocol.sites = 'site-b'")
        assert conn.execute("SELECT count(DISTINCT patient) FROM entries").fetchone()[0] == 1
    # And the owner too (FORCE ROW LEVEL SECURITY): no setting, no rows.
    with raw(url) as conn:
        assert conn.execute("SELECT count(*) FROM entries").fetchone()[0] == 0


def test_every_table_with_a_site_or_patient_column_has_a_policy(trial: Any) -> None:
    """The meta-test: read from the catalog, not from the code that creates the policies."""
    _, url, _ = trial
    with raw(url) as conn:
        tables = {r[0] for r in conn.execute(
            "SELECT DISTINCT table_name FROM information_schema.columns WHERE table_schema = 'public' "
            "AND column_name IN ('site', 'patient', 'entry')")}
        assert {"patient_sites", "user_sites", "site_amendments", "entries", "signatures"} <= tables
        for table in sorted(tables | {"patients", "sites"}):
            enabled, forced = conn.execute("SELECT relrowsecurity, relforcerowsecurity FROM pg_class "
                                           "WHERE oid = %s::regclass", (table,)).fetchone()
            policies = conn.execute("SELECT count(*) FROM pg_policies WHERE tablename = %s", (table,)).fetchone()[0]
            assert enabled and forced and policies >= 1, table
        bypass = dict(conn.execute("SELECT rolname, rolbypassrls OR rolsuper FROM pg_roles WHERE rolname IN "
                                   "('protocol_app', 'protocol_monitor', %s)", (WEB,)).fetchall())
        assert bypass == {"protocol_app": False, "protocol_monitor": False, WEB: False}


def test_the_log_is_append_only_by_grants_and_triggers(trial: Any) -> None:
    _, url, web = trial
    for who in (web, url):  # the application's role (grants, then triggers) and the owner (triggers)
        with web_registry(who) as reg:
            for sql in ("UPDATE entries SET recorded_by = 'mallory'", "DELETE FROM entries",
                        "UPDATE patients SET base = '{}'", "DELETE FROM patient_sites", "TRUNCATE signins", "TRUNCATE entries CASCADE",
                        "UPDATE signins SET outcome = 'x'", "DELETE FROM version_entries"):
                with pytest.raises(RegistryError, match="permission denied|append-only|never|truncate"), \
                        reg._write() as conn:
                    conn.execute(sql)
            assert reg._db.scope.sites is None
            assert len(reg.history("A-1")) == 2


def test_a_monitor_sees_every_site_and_writes_nothing(trial: Any) -> None:
    _, _, web = trial
    with web_registry(web) as reg:
        scoped = Scoped(reg, MONITOR)
        assert sorted(scoped.visible()) == ["A-1", "A-2", "B-1"]
        with reg._read() as conn:
            before = conn.execute("SELECT count(*), max(computed_at) FROM projection").fetchone()
        wl = scoped.worklist(TODAY + dt.timedelta(days=1), 7)  # stale: recomputed in temporary tables
        assert wl.refreshed == 3 and {r[1] for r in wl.rows} <= {"A-1", "A-2", "B-1"}
        with reg._read() as conn:
            assert conn.execute("SELECT count(*), max(computed_at) FROM projection").fetchone() == before
        reg._db.scope = Scope.of(MONITOR)  # the monitor's own transactions, straight to the tables
        for sql in ("INSERT INTO sites (id, created) VALUES ('x', 'now')",
                    "INSERT INTO feeds (token_hash, patient, created, created_by) VALUES ('t', 'A-1', 'n', 'm')",
                    "DELETE FROM worklist_rows"):
            with pytest.raises(RegistryError, match="permission denied"), reg._write() as conn:
                conn.execute(sql)


def test_two_writers_of_one_patient_are_serialised(db_url: str) -> None:
    """Both correct the same entry at the same moment, 20 times: each time exactly one
    succeeds and the other is told the entry was already corrected (it read the log after the
    first one's write), never a constraint error; the log replays."""
    with Registry(db_url, create=True, today=lambda: TODAY) as reg:
        reg.add_patient(small(), by="alice")
    regs = [Registry(db_url, today=lambda: TODAY) for _ in range(2)]
    outcomes: list[list[str]] = [[], []]
    try:
        for round_ in range(20):
            target = regs[0].record("REG-0001", "measurement",
                                    {"date": f"2026-06-{round_ + 1:02d}", "height_cm": 67, "weight_kg": 7.5}, by="a")
            barrier = threading.Barrier(2)

            def fix(i: int) -> None:
                barrier.wait()
                try:
                    regs[i].record("REG-0001", "measurement", {"date": f"2026-06-{round_ + 1:02d}", "height_cm": 67,
                                                               "weight_kg": 7.6 + i / 10},
                                   by=f"w{i}", supersedes=target.seq, reason="typo")
                    outcomes[i].append("ok")
                except IntegrityError as exc:  # a constraint caught what the lock should have
                    outcomes[i].append(f"constraint: {exc}")
                except InputError as exc:
                    outcomes[i].append(str(exc))

            threads = [threading.Thread(target=fix, args=(i,)) for i in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            pair = [outcomes[0][-1], outcomes[1][-1]]
            assert sorted(o == "ok" for o in pair) == [False, True], pair
            assert "already superseded" in next(o for o in pair if o != "ok"), pair
        data = regs[0].patient_data("REG-0001")
        assert len(data["measurements"]) == 21
        assert regs[0].check()["problems"] == []
    finally:
        for r in regs:
            r.close()


def test_a_schema_6_database_upgrades_to_the_clustered_worklist_under_its_policies(
        pg_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Migration 7 on PostgreSQL: a registry at schema 6 with patients and worklist rows in the
    old layout upgrades in place; the cache is rebuilt with the primary key (date, patient,
    pos), the table keeps its row-level policy, and another site's rows stay invisible."""
    from protocol import _registry

    url = pg_server.new_database()
    monkeypatch.setattr(_registry, "MIGRATIONS", _registry.MIGRATIONS[:6])
    monkeypatch.setattr(_registry, "_store_projection", lambda *a: None)  # this release writes the new layout
    with Registry(url, create=True, today=lambda: TODAY, now=Clock()) as reg:
        add_site(reg, "site-a")
        add_site(reg, "site-b")
        reg.add_patient(small(id="A-1"), by="alice", site="site-a")
        reg.add_patient(small(id="B-1"), by="bob", site="site-b")
        reg._db.scope = Scope.of(Actor("bob", "coordinator", frozenset({"site-b"})))
        reg._db.begin(True)  # what release 6 stored: rows in the version 3 layout
        reg._db.execute("INSERT INTO worklist_rows VALUES ('B-1', '2026-11-21', 0, 'due', 'administration', NULL, "
                        "'ib', 'ib:x@1', 'X', NULL, 'planned', NULL)")
        reg._db.execute("INSERT INTO projection VALUES ('B-1', '2026-11-21', 7, 'p', 'k', 1, 'x')")
        reg._db.commit()
    monkeypatch.undo()
    with Registry(url, today=lambda: TODAY, now=Clock()) as reg:
        wl = reg.worklist(TODAY, 7)
        rows = wl.rows
        assert wl.refreshed == 2 and "ib:x@1" not in {r[6] for r in rows}
        assert {r[1] for r in rows} == {"A-1", "B-1"} and rows == sorted(rows, key=lambda r: (r[0], r[1]))
    with raw(url) as conn:
        version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
        key = [r[0] for r in conn.execute(
            "SELECT a.attname FROM pg_index AS i JOIN pg_attribute AS a ON a.attrelid = i.indrelid "
            "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = 'worklist_rows'::regclass AND i.indisprimary "
            "ORDER BY array_position(i.indkey, a.attnum)")]
        policies = conn.execute("SELECT count(*) FROM pg_policies WHERE tablename = 'worklist_rows'").fetchone()[0]
        assert version == "7" and key == ["date", "patient", "pos"] and policies >= 1
    with Registry(url.replace("protocol_owner@", f"{WEB}@"), today=lambda: TODAY, now=Clock()) as web:
        web._db.scope = Scope.of(COORD_A)
        web._db.begin(False)
        try:
            seen = {r[0] for r in web._db.execute("SELECT patient FROM worklist_rows")}
        finally:
            web._db.rollback()
        assert seen == {"A-1"}
