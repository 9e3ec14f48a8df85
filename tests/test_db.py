"""The database layer (``protocol._db``): ``--db`` URLs, the SQL translated for PostgreSQL, the
migrations in both dialects, and a registry opened by URL from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from protocol._cli import app
from protocol._db import Scope, parse_url, pg_sql, pg_statement, pg_statements
from protocol._errors import RegistryError
from protocol._registry import MIGRATIONS, _statements


@pytest.mark.parametrize(("text", "dialect", "where"), [
    ("protocol.db", "sqlite", "protocol.db"),
    ("/srv/trial/r.db", "sqlite", "/srv/trial/r.db"),
    ("sqlite:///srv/trial/r.db", "sqlite", "/srv/trial/r.db"),
    ("postgresql://app@db.example/trial", "postgresql", "postgresql://app@db.example/trial"),
    ("postgres://app:s3cret@db.example:5433/trial", "postgresql", "postgres://app@db.example:5433/trial"),
])
def test_the_url_forms(text: str, dialect: str, where: str) -> None:
    url = parse_url(text)
    assert url.dialect == dialect and url.label == where
    assert "s3cret" not in str(url)


@pytest.mark.parametrize("text", ["mysql://x/y", "sqlite://relative.db", "sqlite:///"])
def test_other_urls_are_refused_naming_the_option(text: str) -> None:
    with pytest.raises(RegistryError, match="--db: expected"):
        parse_url(text)


def test_statements_are_translated_once_for_postgresql() -> None:
    assert pg_sql("SELECT id FROM patients WHERE id = ? AND x LIKE 'a?%'") == (
        "SELECT id FROM patients WHERE id = %s AND x LIKE 'a?%'", False)
    sql, returning = pg_sql("INSERT INTO entries (patient, kind) VALUES (?, ?)")
    assert sql.endswith("RETURNING seq") and returning
    assert pg_sql("INSERT OR REPLACE INTO projection (patient, horizon) VALUES (?, ?)")[0] == (
        "INSERT INTO projection (patient, horizon) VALUES (%s, %s) ON CONFLICT (patient) DO UPDATE SET "
        "horizon = EXCLUDED.horizon")
    # SQLite sorts NULL first when ascending: PostgreSQL is told to do the same.
    assert pg_sql("SELECT a FROM t ORDER BY date, element DESC LIMIT 1", False)[0] == (
        "SELECT a FROM t ORDER BY date, element DESC NULLS LAST LIMIT 1")
    # Never-NULL columns are left alone (an index still serves the order); indexes follow suit.
    assert pg_sql("SELECT seq FROM entries ORDER BY seq DESC LIMIT 1", False)[0].endswith("ORDER BY seq DESC LIMIT 1")
    assert pg_statement("CREATE INDEX w ON worklist_rows(date, patient, rank, element, item)") == [
        "CREATE INDEX w ON worklist_rows(date, patient, rank, element NULLS FIRST, item NULLS FIRST)"]
    # A table clustered by its key in SQLite is a table with that primary key in PostgreSQL.
    assert pg_statement("CREATE TABLE w (d TEXT NOT NULL, p INTEGER NOT NULL, PRIMARY KEY (d, p)) WITHOUT ROWID") == [
        'CREATE TABLE w (d TEXT COLLATE "C" NOT NULL, p BIGINT NOT NULL, PRIMARY KEY (d, p))']
    assert pg_sql("SELECT s.user FROM sessions AS s WHERE user = ?")[0] == (
        'SELECT s."user" FROM sessions AS s WHERE "user" = %s')


def test_every_migration_has_a_postgresql_form() -> None:
    for number, _, script in MIGRATIONS:
        out = pg_statements(list(_statements(script)))
        assert out, number
        joined = "\n".join(out)
        assert "AUTOINCREMENT" not in joined and "RAISE(ABORT" not in joined and "json_valid" not in joined
    trigger = pg_statement("CREATE TRIGGER t_no_delete BEFORE DELETE ON t\nBEGIN SELECT RAISE(ABORT, 'never'); END;")
    assert len(trigger) == 3 and "BEFORE TRUNCATE" in trigger[2] and "FOR EACH STATEMENT" in trigger[1]
    with pytest.raises(ValueError, match="_PG_OVERRIDES"):
        pg_statement("CREATE TRIGGER odd AFTER INSERT ON t BEGIN SELECT 1; END;")


def test_the_scope_of_a_signed_in_user() -> None:
    from protocol._access import Actor

    assert Scope.of(Actor("a", "coordinator", frozenset({"b", "a"}))).setting == "a,b"
    monitor = Scope.of(Actor("m", "monitor", frozenset()))
    assert monitor.setting == "*" and monitor.read_only
    admin = Scope.of(Actor("x", "admin", frozenset()))
    assert admin.setting == "" and admin.admin and not admin.read_only


def test_the_command_line_takes_a_url(tmp_path: Path, pg_server: Any) -> None:
    from .test_registry import ON_TIME

    url = pg_server.new_database()
    added = CliRunner().invoke(app, ["patients", "add", str(ON_TIME), "--db", url, "--by", "alice"])
    assert added.exit_code == 0, added.output
    assert "protocol_owner@" in added.output
    listed = CliRunner().invoke(app, ["patients", "list", "--db", url])
    assert listed.exit_code == 0 and "INF-0001" in listed.output
    check = CliRunner().invoke(app, ["db", "check", "--db", url])
    assert check.exit_code == 0 and "integrity: ok" in check.output
    file_url = f"sqlite://{tmp_path / 'r.db'}"
    assert CliRunner().invoke(app, ["patients", "add", str(ON_TIME), "--db", file_url, "--by", "a"]).exit_code == 0
    assert (tmp_path / "r.db").is_file()
    bad = CliRunner().invoke(app, ["patients", "list", "--db", "mysql://x/y"])
    assert bad.exit_code == 2 and "--db: expected" in bad.output and "Traceback" not in bad.output
    down = CliRunner().invoke(app, ["patients", "list", "--db", "postgresql://nobody@127.0.0.1:1/none"])
    assert down.exit_code == 2 and "cannot connect" in down.output


def test_an_sqlite_reader_does_not_run_the_quick_check_a_writer_does(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole-file ``quick_check`` runs before a connection's first write, not when a
    reader opens the file (a fresh worklist of 10,000 patients spent ~0.5 s in it): opening,
    listing and reading a history run none; the first write runs one, later writes of the same
    connection none; another process's change makes the next writer check again."""
    import protocol._dbsqlite as dbsqlite
    from protocol._registry import Registry

    db = tmp_path / "reg.db"
    example = Path(__file__).resolve().parent.parent / "examples" / "patients" / "mr-on-time.yaml"
    with Registry(db, create=True) as reg:
        reg.add_patient(example, by="alice")
        pid = reg.patients()[0].id
    calls: list[Path] = []
    real = dbsqlite._quick_check
    monkeypatch.setattr(dbsqlite, "_quick_check", lambda conn, path: (calls.append(path), real(conn, path))[1])
    dbsqlite._CHECKED.clear()
    with Registry(db) as reg:
        assert reg.patients() and reg.history(pid)
        assert calls == []
        for day in ("2026-01-10", "2026-01-11"):
            reg.record(pid, "measurement", {"date": day, "height_cm": 60, "weight_kg": 6}, by="alice")
        assert len(calls) == 1
    import sqlite3

    other = sqlite3.connect(db)  # another program changes the file
    other.execute("INSERT INTO meta (key, value) VALUES ('touched', 'yes')")
    other.commit()
    other.close()
    with Registry(db) as reg:
        reg.record(pid, "measurement", {"date": "2026-01-12", "height_cm": 60, "weight_kg": 6}, by="alice")
    assert len(calls) == 2
