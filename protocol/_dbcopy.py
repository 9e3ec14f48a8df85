"""Copying a registry between databases (``protocol db copy FROM TO``), and checking that two
registries hold the same patients (:func:`compare`).

A copy moves every recorded row with its numbers (``seq``) unchanged: sites, patients and their
sites, the entry log, users and their sites, the sign-in audit, calendar feeds, signatures and
what waits for one, the stored protocol versions and site amendments, and the version log.
Not copied: sessions (a copy must not carry live sign-ins) and the worklist projection (a cache,
recomputed on first use). The target must be empty (a new file, or a new database). The copy is
one transaction on the target, read from one snapshot of the source, and is then verified:
every patient is replayed and planned on both sides and its export (JSON and YAML without the
header line that names the registry), its audit trail and its version log compared byte for byte.

>>> copy_registry("protocol.db", "postgresql://owner@db/trial")      # doctest: +SKIP
{'patients': 1000, 'entries': 48211, 'verified': 1000, ...}
"""

from __future__ import annotations

import json
import os
from typing import Any

from ._errors import InputError, Problem

__all__ = ["TABLES", "compare", "copy_registry"]

#: What is copied, in an order that satisfies every reference (and the correction trigger).
TABLES = ("sites", "patients", "patient_sites", "entries", "users", "user_sites", "signins", "feeds",
          "signatures", "signoff_required", "protocol_versions", "site_amendments", "version_entries")
#: Tables whose ``seq`` is an identity (PostgreSQL) / AUTOINCREMENT (SQLite).
_SEQ = ("entries", "signins", "signatures", "version_entries")


def _columns(conn: Any, table: str) -> list[str]:
    return [d[0] for d in conn.execute(f"SELECT * FROM {table} LIMIT 0").description]


def _patient_view(reg: Any, pid: str) -> str:
    """Everything a patient is, as one text: exports, audit trail, version log, plan check."""
    from ._versions import version_history

    yaml_body = reg.export(pid).split("\n", 1)[1]  # the first line names the registry
    history = [e.to_dict() for e in reg.history(pid)]
    versions = version_history(reg, pid)
    return "\n".join([reg.export(pid, format="json"), yaml_body, json.dumps(history, sort_keys=True),
                      json.dumps(versions, sort_keys=True, default=str)])


def compare(a: Any, b: Any) -> dict[str, Any]:
    """Replay every patient of registries ``a`` and ``b`` and compare them byte for byte.

    ``{"patients": N, "differences": [(patient, what), ...], "problems": [...]}``; no
    differences and no problems mean ``b`` holds what ``a`` holds.

    >>> compare(open_registry("a.db"), open_registry("b.db"))["differences"]   # doctest: +SKIP
    []
    """
    ids_a = [p.id for p in a.patients()]
    ids_b = [p.id for p in b.patients()]
    differences: list[tuple[str, str]] = []
    for pid in sorted(set(ids_a) ^ set(ids_b)):
        differences.append((pid, "only in " + (a.path if pid in ids_a else b.path).__str__()))
    for pid in sorted(set(ids_a) & set(ids_b)):
        if _patient_view(a, pid) != _patient_view(b, pid):
            differences.append((pid, "export, history or version log differs"))
    problems = b.check()["problems"]
    return {"patients": len(ids_b), "differences": differences, "problems": problems}


def copy_registry(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> dict[str, Any]:
    """Copy the registry ``source`` into the empty registry ``target`` (made if missing) and
    verify it (see the module's docstring). Raises :class:`InputError` when the target is not
    empty, or the copy differs from the source (then nothing stays in the target).
    """
    from ._registry import Registry

    src = Registry(source)
    try:
        dst = Registry(target, create=True)
    except BaseException:
        src.close()
        raise
    counts: dict[str, int] = {}
    try:
        with dst._read() as conn:
            used = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("patients", "users")}
            sites = [r[0] for r in conn.execute("SELECT id FROM sites")]
        if any(used.values()) or sites != ["default"]:
            raise InputError(Problem(str(dst.path), "", "the target registry is not empty: copy into a new file or "
                                     "a new database"))
        src._db.verify()  # the whole source file checked, as before a write
        with src._read() as rconn, dst._write() as wconn:
            for table in TABLES:
                cols = _columns(rconn, table)
                rows = rconn.execute(f"SELECT {', '.join(cols)} FROM {table} ORDER BY 1").fetchall()
                if table == "sites":
                    rows = [r for r in rows if r[0] != "default"]
                if table == "patient_sites":  # a patient written without a site is in 'default'
                    have = {r[0] for r in rows}
                    rows += [(p, "default") for (p,) in rconn.execute("SELECT id FROM patients") if p not in have]
                if rows:
                    wconn.executemany(f"INSERT INTO {table} ({', '.join(cols)}) VALUES "
                                      f"({', '.join('?' * len(cols))})", [tuple(r) for r in rows])
                counts[table] = len(rows)
            if wconn.dialect == "postgresql":
                for table in _SEQ:
                    wconn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'seq'), "
                                  f"coalesce((SELECT max(seq) FROM {table}), 0) + 1, false)")
            wconn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('copied_from', ?)",
                          (f"{src.path} at {dst._stamp()}",))
        report = compare(src, dst)
        if report["differences"] or report["problems"]:
            _empty(dst)
            raise InputError(Problem(str(dst.path), "", f"the copy differs from {src.path}: "
                                     + "; ".join(f"{p}: {w}" for p, w in (report["differences"] +
                                                                         report["problems"])[:5])
                                     + " (the target was emptied again)"))
        return {"patients": report["patients"], "entries": counts.get("entries", 0), "verified": report["patients"],
                "rows": counts, "source": str(src.path), "target": str(dst.path)}
    finally:
        src.close()
        dst.close()


def _empty(reg: Any) -> None:  # pragma: no cover - only after a failed verification
    """Undo a copy that did not verify: the target was empty before, so it is made empty again."""
    if reg.dialect == "sqlite":
        reg.close()
        path = reg.path
        for suffix in ("", "-wal", "-shm"):
            try:
                os.remove(f"{path}{suffix}")
            except FileNotFoundError:
                pass
        return
    raise InputError(Problem(str(reg.path), "", "the copy did not verify: drop and re-create this database before "
                             "copying again"))
