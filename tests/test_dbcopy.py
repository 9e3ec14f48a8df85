"""Copying a registry between SQLite and PostgreSQL (``protocol._dbcopy``, ``protocol db copy``)
and restoring backups (SQLite's online backup API, ``pg_dump``/``pg_restore``), each verified by
replaying every patient on both sides and comparing the exports byte for byte."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from protocol._access import Actor, Scoped
from protocol._auth import add_site, add_user
from protocol._cli import app
from protocol._dbcopy import compare, copy_registry
from protocol._errors import InputError
from protocol._registry import Registry

from .pgserver import BIN
from .test_registry import EXAMPLES, TODAY, Clock, small


def build(url: str) -> None:
    """A registry with what a copy must carry: sites, users, examples, corrections,
    retractions, a feed and a dose modification waiting for sign-off."""
    with Registry(url, create=True, today=lambda: TODAY, now=Clock()) as reg:
        add_site(reg, "site-a")
        add_user(reg, "alice", "coordinator", ["site-a"], "a long pass phrase 1")
        for example in EXAMPLES[:4]:
            reg.add_patient(example, by="alice", site="site-a")
        reg.add_patient(small(), by="bob")
        wrong = reg.record("REG-0001", "measurement", {"date": "2026-06-01", "height_cm": 67, "weight_kg": 7.7}, by="b")
        reg.record("REG-0001", "measurement", {"date": "2026-06-01", "height_cm": 67, "weight_kg": 7.0}, by="c",
                   supersedes=wrong.seq, reason="typo")
        gone = reg.record("REG-0001", "count", {"date": "2026-06-02", "anc": 1.2}, by="b")
        reg.retract("REG-0001", gone.seq, by="b", reason="another patient's")
        reg.record("REG-0001", "base", {"wbc_at_diagnosis": 165}, by="c", reason="lab report")
        scoped = Scoped(reg, Actor("alice", "coordinator", frozenset({"site-a"})))
        first = sorted(scoped.visible())[0]
        scoped.new_feed(first)


def counts(url: str) -> dict[str, int]:
    from protocol._dbcopy import TABLES

    with Registry(url) as reg, reg._read() as conn:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}


def test_sqlite_to_postgresql_and_back_is_the_same_registry(tmp_path: Path, pg_server: Any) -> None:
    original = str(tmp_path / "original.db")
    build(original)
    central = pg_server.new_database()
    report = copy_registry(original, central)
    assert report["patients"] == report["verified"] == 5 and report["entries"] > 20
    back = str(tmp_path / "back.db")
    copy_registry(central, back)
    assert counts(original) == counts(central) == counts(back)
    with Registry(original) as a, Registry(back) as b:
        assert compare(a, b) == {"patients": 5, "differences": [], "problems": []}
        # The numbers of the log are the same: a reference "#17" means the same entry everywhere.
        assert [e.seq for e in a.history("REG-0001")] == [e.seq for e in b.history("REG-0001")]
    # The copy goes on numbering after the copied log.
    with Registry(central, today=lambda: TODAY) as reg:
        last = max(e.seq for e in reg.history("REG-0001"))
        entry = reg.record("REG-0001", "measurement", {"date": "2026-07-01", "height_cm": 68, "weight_kg": 7.3},
                           by="d")
        assert entry.seq > last
        with Registry(original) as a:
            diff = compare(a, reg)
        assert diff["differences"] == [("REG-0001", "export, history or version log differs")]


def test_a_target_that_is_not_empty_is_refused(tmp_path: Path, db_url: str) -> None:
    source = str(tmp_path / "source.db")
    build(source)
    with Registry(db_url, create=True, today=lambda: TODAY) as reg:
        reg.add_patient(small(id="OTHER-1"), by="x")
    with pytest.raises(InputError, match="not empty"):
        copy_registry(source, db_url)
    assert counts(db_url)["patients"] == 1


def test_the_cli_copies_and_says_what_it_verified(tmp_path: Path, pg_server: Any) -> None:
    source = str(tmp_path / "source.db")
    build(source)
    target = pg_server.new_database()
    result = CliRunner().invoke(app, ["db", "copy", source, target])
    assert result.exit_code == 0, result.output
    assert "copied 5 patients" in result.output and "verified: 5 patients" in result.output
    again = CliRunner().invoke(app, ["db", "copy", source, target])
    assert again.exit_code == 2 and "not empty" in again.output and "Traceback" not in again.output
    up = CliRunner().invoke(app, ["db", "upgrade", "--db", target])
    assert up.exit_code == 0 and "up to date" in up.output


def test_an_sqlite_backup_restores_to_the_same_registry(tmp_path: Path) -> None:
    db = tmp_path / "live.db"
    build(str(db))
    backup = tmp_path / "backup.db"
    result = CliRunner().invoke(app, ["db", "backup", str(backup), "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert oct(backup.stat().st_mode & 0o777) == "0o600"
    restored = tmp_path / "restored.db"
    backup.rename(restored)  # restoring is putting the file back in place
    with Registry(db) as a, Registry(restored) as b:
        assert compare(a, b) == {"patients": 5, "differences": [], "problems": []}
    refused = CliRunner().invoke(app, ["db", "backup", str(restored), "--db", str(db)])
    assert refused.exit_code == 2 and "exists already" in refused.output


def test_a_pg_dump_restores_to_the_same_registry(pg_server: Any) -> None:
    """As README, Backups: pg_dump as the owner with the every-site setting (the tables force
    row-level security on their owner too), pg_restore into a new database."""
    live = pg_server.new_database()
    build(live)
    dump = pg_server.base / "registry.dump"
    env = {**os.environ, "PGOPTIONS": "-c protocol.sites=* -c protocol.admin=on"}
    subprocess.run([str(BIN / "pg_dump"), "--format=custom", "--enable-row-security", f"--file={dump}", live],
                   check=True, env=env, capture_output=True, timeout=120)
    restored = pg_server.new_database("restored")
    out = subprocess.run([str(BIN / "pg_restore"), "--no-owner", "--exit-on-error", "--single-transaction",
                          f"--dbname={restored}", str(dump)], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert counts(live) == counts(restored)
    with Registry(live) as a, Registry(restored) as b:
        assert compare(a, b) == {"patients": 5, "differences": [], "problems": []}
