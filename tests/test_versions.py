"""Protocol versions in the registry (``protocol._versions``, registry migration 5): every
patient is on a recorded version whose bytes the registry keeps, and a plan as it was known on
a date is made again with the version in force then, even after the shipped file changed."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import pytest

from protocol._db import IntegrityError
from protocol._errors import InputError
from protocol._io import read_document
from protocol._registry import MIGRATIONS, SCHEMA_VERSION, Registry
from protocol._versions import patient_version, plan_as_known, version_history, version_key

from .test_registry import ON_TIME, Clock, open_reg

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "protocol" / "definitions" / "interfant06-blinatumomab.yaml"


def test_migrations_5_and_6_follow_4_and_a_newer_schema_is_refused(tmp_path: Path) -> None:
    assert [n for n, _, _ in MIGRATIONS][-4:] == [4, 5, 6, 7] and SCHEMA_VERSION == 7
    db = tmp_path / "r.db"
    open_reg(db).close()
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(InputError, match="newer release"):
        Registry(db)


def test_a_registered_patient_is_on_the_version_it_was_planned_with(db_url: str) -> None:
    with open_reg(db_url) as reg:
        reg.add_patient(ON_TIME, by="alice")
        v = patient_version(reg, "INF-0001")
        assert v.ref == "interfant06-blinatumomab@1.0.0" and v.seq is not None and v.recorded_by == "alice"
        stored = reg._conn.execute("SELECT definition FROM protocol_versions WHERE sha256 = ?", (v.sha256,)).fetchone()
        assert bytes(stored[0]) == SHIPPED.read_bytes()
        assert [r["to"] for r in version_history(reg, "INF-0001")] == ["interfant06-blinatumomab@1.0.0"]


def test_the_bytes_are_stored_once_and_never_changed(db_url: str) -> None:
    with open_reg(db_url) as reg:
        reg.add_patient(ON_TIME, by="alice")
        data = {**read_document(ON_TIME).data, "id": "INF-0100"}
        reg.add_patient(data, by="alice")
        assert reg._conn.execute("SELECT count(*) FROM protocol_versions").fetchone()[0] == 1
        assert reg._conn.execute("SELECT count(*) FROM version_entries").fetchone()[0] == 2
        with pytest.raises(IntegrityError, match="never changed"), reg._write() as conn:
            conn.execute("UPDATE protocol_versions SET version = '9'")
        with pytest.raises(IntegrityError, match="append-only"), reg._write() as conn:
            conn.execute("DELETE FROM version_entries")


def test_a_plan_as_known_uses_the_stored_version_after_the_shipped_file_changed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with open_reg(tmp_path / "r.db") as reg:
        reg.add_patient(ON_TIME, by="alice")
        day = dt.date(2026, 11, 21)
        before = plan_as_known(reg, "INF-0001", day).to_json()
        # The shipped definition changes (a new release): the registry still has the old bytes.
        from protocol import _loading

        changed = tmp_path / "defs"
        changed.mkdir()
        text = SHIPPED.read_text(encoding="utf-8").replace('version: "1.0.0"', 'version: "1.0.1"')
        (changed / SHIPPED.name).write_text(text, encoding="utf-8")
        (changed / _loading.MANIFEST).write_text(
            f"{__import__('hashlib').sha256(text.encode()).hexdigest()}  {SHIPPED.name}\n", encoding="utf-8")
        monkeypatch.setattr(_loading, "_definitions_dir", lambda: changed)
        monkeypatch.setattr(_loading, "_SHIPPED", None)
        from protocol import _versions

        monkeypatch.setattr(_versions, "_COMPILED", {})  # restored after: later tests see the shipped file again
        assert _loading.load_protocol("interfant06-blinatumomab").version == "1.0.1"
        after = plan_as_known(reg, "INF-0001", day)
        assert after.protocol.version == "1.0.0" and after.protocol.origin == "registry"
        # Byte for byte, apart from where the definition was read from.
        assert after.to_json().replace('"registry"', '"shipped"').replace(
            f'"{after.protocol.provenance}"', "null") == before


def test_version_key_orders_numerically() -> None:
    assert version_key("1.10.0") > version_key("1.9.0") > version_key("1.0.0")


def test_a_schema_5_registry_upgrades_to_6_and_keeps_its_version_log(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    conn = sqlite3.connect(db)
    from protocol._registry import APPLICATION_ID, _statements

    for number, _, script in MIGRATIONS[:5]:
        for statement in _statements(script):
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 5")
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.commit()
    conn.close()
    with open_reg(db, create=False) as reg:
        assert reg._conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        reg.add_patient(ON_TIME, by="alice")
        assert patient_version(reg, "INF-0001").site is None
        columns = [r[1] for r in reg._conn.execute("PRAGMA table_info(version_entries)")]
        assert columns[-3:] == ["site_sha256", "signature", "settled"]
        reg._conn.execute("INSERT INTO site_amendments VALUES (?, 'p', 's', 'n', x'00', 'now')", ("a" * 64,))
        with pytest.raises(sqlite3.DatabaseError, match="never deleted"):
            reg._conn.execute("DELETE FROM site_amendments")
        with pytest.raises(sqlite3.DatabaseError, match="never changed"):
            reg._conn.execute("UPDATE site_amendments SET site = 'x'")


def test_a_site_amendment_on_a_kept_version_survives_a_new_release(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from protocol import _loading, _versions
    from protocol._amend import apply

    site = ROOT / "tests" / "data" / "amendments" / "site-dexamethasone.yaml"
    with open_reg(tmp_path / "r.db") as reg:
        reg.add_patient(ON_TIME, by="alice")
        apply(reg, "interfant06-blinatumomab", site=site, reason="INVENTED verified values", by="bob")
        day = dt.date(2026, 12, 1)
        before = plan_as_known(reg, "INF-0001", day).to_json()
        changed = tmp_path / "defs"
        changed.mkdir()
        text = SHIPPED.read_text(encoding="utf-8").replace('version: "1.0.0"', 'version: "1.0.1"')
        (changed / SHIPPED.name).write_text(text, encoding="utf-8")
        (changed / _loading.MANIFEST).write_text(
            f"{__import__('hashlib').sha256(text.encode()).hexdigest()}  {SHIPPED.name}\n", encoding="utf-8")
        monkeypatch.setattr(_loading, "_definitions_dir", lambda: changed)
        monkeypatch.setattr(_loading, "_SHIPPED", None)
        monkeypatch.setattr(_versions, "_COMPILED", {})  # restored after: later tests see the shipped file again
        after = plan_as_known(reg, "INF-0001", day)
        # The kept 1.0.0 bytes with the kept site bytes: the same doses and dates as before the release.
        assert after.protocol.version == "1.0.0" and after.protocol.site[0] == "Invented Test Site"
        strip = lambda j: __import__("json").loads(j)["items"]  # noqa: E731
        assert strip(after.to_json()) == strip(before)
