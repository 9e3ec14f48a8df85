"""The embedded registry: one SQLite file (WAL, ``synchronous=FULL``, owner-only ``0600``).

Schema versions are ``PRAGMA user_version``; ``PRAGMA application_id`` marks the file as a
protocol registry. A writer takes the whole file (``BEGIN IMMEDIATE``), so the writes of one
patient are serialised without a lock of their own.

Integrity: ``PRAGMA quick_check`` reads the whole file, so it runs before a connection's first
write (once per file state per process; a copy or backup checks its source the same way), not
when a reader opens the file: a read-only command (a fresh worklist, a history) reads only
the pages it needs, and SQLite checks each page it reads, so damage there is still an exit 2
naming the file (:data:`_DAMAGED`). ``protocol db check`` checks everything.

>>> db = SqliteDatabase(parse_url("protocol.db"), create=True)   # doctest: +SKIP
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ._db import Database, DbUrl, IntegrityError, is_sqlite_file_error
from ._errors import InputError, Problem, RegistryError

__all__ = ["APPLICATION_ID", "BUSY_TIMEOUT_S", "SqliteDatabase", "online_backup"]

#: "PROT": marks a SQLite file as a protocol registry.
APPLICATION_ID = 0x50524F54
#: How long a writer waits for another one to commit before giving up (seconds).
BUSY_TIMEOUT_S = 30.0

class SqliteIntegrityError(IntegrityError, sqlite3.IntegrityError):
    """:class:`~protocol._db.IntegrityError` from SQLite (still a ``sqlite3.IntegrityError``
    for code written against the sqlite3 module)."""


#: Registry files already checked by this process, by (path, size, modification time): a web
#: server or a test opens the same file many times and a quick check reads all of it.
_CHECKED: set[tuple[str, int, int]] = set()


class SqliteDatabase(Database):
    """A registry file (see the module's docstring)."""

    dialect = "sqlite"

    def __init__(self, url: DbUrl, create: bool) -> None:
        super().__init__(url)
        assert url.path is not None
        self.path = url.path
        self.raw = _open(url.path, create)
        self.verified = False

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Any:
        """Run one statement (see :class:`~protocol._db.Database`)."""
        try:
            return _Cursor(self.raw.execute(sql, args), self.path)
        except sqlite3.IntegrityError as exc:
            raise SqliteIntegrityError(Problem(self.label, "", str(exc))) from None
        except sqlite3.OperationalError as exc:
            if is_sqlite_file_error(exc):
                raise RegistryError(Problem(self.label, "", f"cannot write the registry: {exc}")) from None
            raise
        except sqlite3.DatabaseError as exc:
            if not _is_damage(exc):
                raise
            raise _damaged(exc, self.path) from None

    def executemany(self, sql: str, rows: Any) -> Any:
        """Run one statement for every row of parameters."""
        try:
            return self.raw.executemany(sql, rows)
        except sqlite3.IntegrityError as exc:
            raise SqliteIntegrityError(Problem(self.label, "", str(exc))) from None
        except sqlite3.DatabaseError as exc:
            if not _is_damage(exc):
                raise
            raise _damaged(exc, self.path) from None

    def verify(self) -> None:
        """``PRAGMA quick_check`` unless this process checked the file as it is now: a damaged
        file is refused with what to do (issue 16 §5) before anything is written to it."""
        if self.verified:
            return
        try:
            _quick_check(self.raw, self.path)
        except sqlite3.DatabaseError as exc:
            if not _is_damage(exc):
                raise
            raise _damaged(exc, self.path) from None
        self.verified = True

    def begin(self, write: bool, wait_ms: int | None = None) -> None:
        """``BEGIN IMMEDIATE`` (a writer: waits up to ``wait_ms`` or the busy timeout; the file
        is checked first, see :meth:`verify`) or ``BEGIN`` (one read snapshot)."""
        if not write:
            self.raw.execute("BEGIN")
            return
        self.verify()
        try:
            if wait_ms is not None:
                self.raw.execute(f"PRAGMA busy_timeout = {int(wait_ms)}")
            try:
                self.raw.execute("BEGIN IMMEDIATE")
            finally:
                if wait_ms is not None:
                    self.raw.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        except sqlite3.OperationalError as exc:
            # Locked by another writer for longer than the busy timeout, or a read-only file:
            # bad circumstances, not a bug (exit 2, nothing written).
            raise RegistryError(Problem(self.label, "", f"cannot write the registry: {exc}")) from None
        self.in_write = True

    def commit(self) -> None:
        """COMMIT; a failure (disk full, I/O error) rolls back and is a :class:`RegistryError`."""
        wrote, self.in_write = self.in_write, False
        try:
            self.raw.execute("COMMIT")
        except sqlite3.OperationalError as exc:  # pragma: no cover - disk full, I/O error
            self.raw.execute("ROLLBACK")
            raise RegistryError(Problem(self.label, "", f"cannot write the registry: {exc}")) from None
        if wrote:
            _checked_now(self.path)

    def rollback(self) -> None:
        """ROLLBACK."""
        self.in_write = False
        self.raw.execute("ROLLBACK")

    def integrity(self, limit: int = 20) -> list[str]:
        """SQLite's ``PRAGMA integrity_check`` (``["ok"]`` when the file is sound; a file the
        quick check already finds damaged is refused, see :meth:`verify`)."""
        self.verify()
        return [str(r[0]) for r in self.raw.execute(f"PRAGMA integrity_check({int(limit)})")]

    def shadow(self, tables: Sequence[str]) -> None:
        """TEMP tables of the same names (they hide the file's for this connection)."""
        for table in tables:
            sql = self.raw.execute("SELECT sql FROM main.sqlite_master WHERE type = 'table' AND name = ?",
                                   (table,)).fetchone()[0]
            sql = re.sub(r"\s+REFERENCES\s+\w+(\s*\([^)]*\))?(\s+ON\s+\w+\s+\w+)*", "", sql)
            self.raw.execute(sql.replace(f"CREATE TABLE {table}", f"CREATE TEMP TABLE {table}", 1))
            self.raw.execute(f"INSERT INTO temp.{table} SELECT * FROM main.{table}")

    def unshadow(self, tables: Sequence[str]) -> None:
        """Drop the copies :meth:`shadow` made."""
        for table in tables:
            self.raw.execute(f"DROP TABLE IF EXISTS temp.{table}")

    def tables(self) -> list[str]:
        """The registry's tables, by name."""
        return [r[0] for r in self.raw.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                               "AND name NOT LIKE 'sqlite_%' ORDER BY name")]

    def close(self) -> None:
        """Close the file (the last connection to close checkpoints the write-ahead log into it)."""
        self.raw.close()
        _checked_now(self.path)

    # -- schema versions --------------------------------------------------------------

    def migrate(self, migrations: Sequence[tuple[int, str, str]], statements: Callable[[str], Any],
                stamp: Callable[[], str], release: str) -> None:
        """Bring the schema up to the last of ``migrations``, one at a time, in one transaction."""
        latest = migrations[-1][0]
        version, app_id = self.version()
        if version == latest and app_id == APPLICATION_ID:
            return
        self.check_version(version, app_id, latest)
        self.begin(True)
        try:
            version, app_id = self.version()  # another process may have migrated meanwhile
            self.check_version(version, app_id, latest)
            for number, what, script in migrations:
                if number <= version:
                    continue
                for statement in statements(script):
                    self.raw.execute(statement)
                self.raw.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                                 (f"migration.{number}", f"{stamp()} {what} (protocol {release})"))
                self.raw.execute(f"PRAGMA user_version = {number}")
            if version == 0:
                self.raw.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                self.raw.execute("INSERT INTO meta (key, value) VALUES ('application', 'protocol patient registry')")
                self.raw.execute("INSERT INTO meta (key, value) VALUES ('created', ?)", (stamp(),))
        except BaseException:
            self.rollback()
            raise
        self.commit()

    def version(self) -> tuple[int, int]:
        """``(schema version, application id)``."""
        return (int(self.raw.execute("PRAGMA user_version").fetchone()[0]),
                int(self.raw.execute("PRAGMA application_id").fetchone()[0]))

    def check_version(self, version: int, app_id: int, latest: int) -> None:
        """Refuse another application's database, or one made by a newer release."""
        path = str(self.path)
        if version == 0:
            if self.raw.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                raise InputError(Problem(path, "", "not a protocol registry (an SQLite database with other tables)"))
            return
        if app_id != APPLICATION_ID:
            raise InputError(Problem(path, "", "not a protocol registry (another application's SQLite database)"))
        if version > latest:
            raise InputError(Problem(path, "", f"made by a newer release of protocol (schema {version}; this "
                                     f"release reads schemas up to {latest}): upgrade protocol"))


def _open(path: Path, create: bool) -> sqlite3.Connection:
    if not path.exists():
        if not create:
            raise InputError(Problem(str(path), "", "no registry here: add a patient first with "
                                     "`protocol patients add FILE` (or give --db / $PROTOCOL_DB)"))
        if not path.parent.is_dir():
            raise InputError(Problem(str(path), "", f"cannot create the registry: the folder {str(path.parent)!r} "
                                     "does not exist"))
        try:
            # Owner-only from the first byte, whatever the umask: the file holds dates of birth.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # created by a concurrent process a moment ago
        except OSError as exc:
            raise InputError(Problem(str(path), "", f"cannot create the registry: {exc.strerror}")) from None
        else:
            os.fchmod(fd, 0o600)
            os.close(fd)
    if path.is_dir():
        raise InputError(Problem(str(path), "", "expected a registry file, got a folder"))
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError as exc:
        raise InputError(Problem(str(path), "", f"cannot read the registry: {exc.strerror}")) from None
    if head and head != b"SQLite format 3\x00":
        raise InputError(Problem(str(path), "", "not a protocol registry (not an SQLite database)"))
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":  # pragma: no cover - e.g. a file system without shared memory
            raise InputError(Problem(str(path), "", f"cannot use write-ahead logging here (journal mode {mode})"))
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise InputError(Problem(str(path), "", f"not a usable protocol registry: {exc}: if this is the registry "
                                 f"file, it is damaged: stop writing to it and restore the last backup "
                                 f"(README, Registry)")) from None
    except BaseException:
        conn.close()
        raise
    return conn


class _Cursor:
    """A cursor whose reads turn SQLite's "damaged file" errors into :func:`_damaged` (a reader
    does not run the quick check: SQLite checks the pages it reads)."""

    __slots__ = ("_cur", "_path")

    def __init__(self, cur: sqlite3.Cursor, path: Path) -> None:
        self._cur, self._path = cur, path

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cur, name)

    def __iter__(self) -> Any:
        try:
            yield from self._cur
        except sqlite3.DatabaseError as exc:
            if not _is_damage(exc):
                raise
            raise _damaged(exc, self._path) from None

    def _guard(self, fetch: Callable[..., Any], *args: Any) -> Any:
        try:
            return fetch(*args)
        except sqlite3.DatabaseError as exc:
            if not _is_damage(exc):
                raise
            raise _damaged(exc, self._path) from None

    def fetchone(self) -> Any:
        return self._guard(self._cur.fetchone)

    def fetchall(self) -> Any:
        return self._guard(self._cur.fetchall)

    def fetchmany(self, size: int = 1) -> Any:
        return self._guard(self._cur.fetchmany, size)


def _is_damage(exc: sqlite3.DatabaseError) -> bool:
    """Whether SQLite says the file is damaged (not a bad statement, a lock or a full disk)."""
    name = str(getattr(exc, "sqlite_errorname", "") or "")
    return name.startswith("SQLITE_CORRUPT") or name == "SQLITE_NOTADB" or (
        type(exc) is sqlite3.DatabaseError and not name)


def _damaged(exc: BaseException, path: Path) -> InputError:
    """The exit-2 error for a damaged registry file (what SQLite said, what to do)."""
    return InputError(Problem(str(path), "", f"the registry file is damaged (SQLite: {exc}): stop writing to it "
                              f"and restore the last backup (README, Registry)"))


def _quick_check(conn: sqlite3.Connection, path: Path) -> None:
    """``PRAGMA quick_check`` (issue 16 §5): a damaged file is refused with what to do before
    anything is written to it (see the module's docstring)."""
    try:
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    except OSError:  # pragma: no cover - removed meanwhile: sqlite reports it
        key = None
    if key is not None and key in _CHECKED:
        return
    rows = [r[0] for r in conn.execute("PRAGMA quick_check(5)")]
    if rows != ["ok"]:
        raise InputError(Problem(str(path), "", f"the registry file is damaged (SQLite quick_check: "
                                 f"{'; '.join(str(r).replace(chr(10), '; ') for r in rows)}): stop writing to it "
                                 f"and restore the last backup (README, Registry)"))
    if key is not None:
        _CHECKED.add(key)


def _checked_now(path: Path) -> None:
    """The file as this process just left it (its own commit, its own checkpoint at close) counts
    as checked, if it was checked when this process opened it: a web server opens the registry
    for every request, and re-reading the whole file after each of its own writes cost more than
    the request itself (60 ms of 90 with 1,000 patients). A change by another process is
    checked at the next opening, as before."""
    try:
        resolved = str(path.resolve())
        if not any(k[0] == resolved for k in _CHECKED):
            return
        st = path.stat()
    except OSError:  # pragma: no cover - removed meanwhile
        return
    if len(_CHECKED) > 10_000:  # pragma: no cover - a long-running process
        _CHECKED.clear()
    _CHECKED.add((resolved, st.st_size, st.st_mtime_ns))


def online_backup(source: Path, target: Path) -> None:
    """Copy a live registry file to ``target`` with SQLite's online backup API (consistent
    while writers go on; the copy is owner-only).

    >>> online_backup(Path("protocol.db"), Path("backup.db"))   # doctest: +SKIP
    """
    if target.exists():
        raise InputError(Problem(str(target), "", "the backup file exists already: choose a new name"))
    src = _open(source, False)
    try:
        _quick_check(src, source)
    except sqlite3.DatabaseError as exc:
        src.close()
        if not _is_damage(exc):
            raise
        raise _damaged(exc, source) from None
    except BaseException:
        src.close()
        raise
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()
