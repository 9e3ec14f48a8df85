"""The registry's database: one connection type for SQLite and PostgreSQL.

``--db`` / ``$PROTOCOL_DB`` names the database (:func:`parse_url`):

- a path, or ``sqlite:///abs/path.db`` (file-URL form: ``sqlite://`` then the absolute path):
  the embedded registry in one SQLite file (the default, ``./protocol.db``);
- ``postgresql://user@host[:port]/dbname`` (or ``postgres://``; any libpq form after that):
  a PostgreSQL server.

Registry code is written once, in SQLite's dialect (``?`` parameters, ``INSERT OR REPLACE``,
``lastrowid``), against :class:`Database`; on PostgreSQL each statement is translated once
(:func:`pg_sql`) and cached. Transactions are :meth:`Database.begin` / ``commit`` /
``rollback``; errors the database reports about the request (a constraint or trigger refused
a write, the server is down, a lock was held too long) become :class:`IntegrityError` or
:class:`~protocol.RegistryError`; anything else (a bug) is raised as the driver raised it.

>>> parse_url("sqlite:///srv/trial/protocol.db").path
PosixPath('/srv/trial/protocol.db')
>>> parse_url("postgresql://app@db.example/trial").dialect
'postgresql'
"""

from __future__ import annotations

import functools
import os
import re
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._errors import Problem, RegistryError

__all__ = ["Database", "DbUrl", "IntegrityError", "Scope", "parse_url", "pg_sql", "pg_statements"]


class IntegrityError(RegistryError):
    """The database refused a write: the append-only log, a constraint, a row-level policy."""


@dataclass(frozen=True, slots=True)
class DbUrl:
    """Where a registry is: ``dialect`` ``sqlite`` (``path``) or ``postgresql`` (``dsn``)."""

    dialect: str
    path: Path | None = None
    dsn: str | None = None

    @property
    def label(self) -> str:
        """How messages name the registry (a path, or the URL without its password)."""
        if self.path is not None:
            return str(self.path)
        return re.sub(r"(://[^:/@]*):[^@]*@", r"\1@", self.dsn or "")

    def __str__(self) -> str:
        return self.label


def parse_url(value: str | os.PathLike[str]) -> DbUrl:
    """A ``--db`` value as a :class:`DbUrl` (see the module's docstring for the forms).

    >>> parse_url("registry.db").path
    PosixPath('registry.db')
    >>> parse_url("mysql://x/y")
    Traceback (most recent call last):
    protocol._errors.RegistryError: --db: expected a path, sqlite:///PATH or postgresql://USER@HOST/DBNAME, got 'mysql://x/y'
    """
    if isinstance(value, DbUrl):
        return value
    text = os.fspath(value)
    if text.startswith(("postgresql://", "postgres://")):
        return DbUrl("postgresql", dsn=text)
    if text.startswith("sqlite://"):
        rest = text[len("sqlite://"):]
        if not rest.startswith("/") or len(rest) < 2:
            raise RegistryError(Problem("", "--db", f"expected sqlite:///ABSOLUTE/PATH (or a plain path), got {text!r}"))
        return DbUrl("sqlite", path=Path(rest))
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text):
        raise RegistryError(Problem("", "--db", "expected a path, sqlite:///PATH or postgresql://USER@HOST/DBNAME, "
                                    f"got {text!r}"))
    return DbUrl("sqlite", path=Path(text))


@dataclass(frozen=True, slots=True)
class Scope:
    """Whose transaction this is, for PostgreSQL's row-level security.

    ``sites``: the sites whose patients are visible (None: every site); ``admin``: users and
    sites are visible (not patient data); ``read_only``: the monitor's role, which writes nothing.
    SQLite ignores it (the application's own checks, :mod:`protocol._access`, are the wall there).
    """

    sites: frozenset[str] | None = None
    admin: bool = True
    read_only: bool = False

    @classmethod
    def of(cls, actor: Any) -> Scope:
        """The scope of a signed-in :class:`~protocol._access.Actor`."""
        if actor.role == "monitor":
            return cls(None, False, True)
        return cls(frozenset(actor.sites), actor.role == "admin", False)

    @property
    def setting(self) -> str:
        """The value of ``protocol.sites``: ``*`` or the sites separated by commas."""
        return "*" if self.sites is None else ",".join(sorted(self.sites))


#: The operator's scope (the CLI): every site, users and sites.
EVERYTHING = Scope()


class Database:
    """One connection to a registry, SQLite or PostgreSQL (made by :func:`protocol._dbopen.connect`).

    ``execute`` / ``executemany`` take SQLite-dialect SQL with ``?`` parameters and return a
    cursor (``fetchone``, ``fetchall``, iteration, ``rowcount``, ``lastrowid``).
    """

    dialect = ""

    def __init__(self, url: DbUrl) -> None:
        self.url = url
        self.label = url.label
        self.scope = EVERYTHING
        self.in_write = False

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def executemany(self, sql: str, rows: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def begin(self, write: bool, wait_ms: int | None = None) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def commit(self) -> None:
        """End the transaction, keeping what it wrote."""
        self.in_write = False
        self.execute("COMMIT")

    def rollback(self) -> None:
        """End the transaction, undoing what it wrote."""
        self.in_write = False
        self.execute("ROLLBACK")

    def lock_patient(self, patient_id: str) -> None:
        """Serialise the writes of one patient until the transaction ends (no-op where the
        write transaction already excludes every other writer)."""

    def verify(self) -> None:
        """Refuse a damaged database before this connection's first write (a no-op where the
        server keeps its own files sound)."""

    def integrity(self, limit: int = 20) -> list[str]:  # pragma: no cover - abstract
        raise NotImplementedError

    def shadow(self, tables: Sequence[str]) -> None:  # pragma: no cover - abstract
        """Temporary copies of ``tables`` that hide them for this connection until :meth:`unshadow`."""
        raise NotImplementedError

    def unshadow(self, tables: Sequence[str]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def tables(self) -> list[str]:  # pragma: no cover - abstract
        """The registry's tables."""
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


# --------------------------------------------------------------------------- SQL for PostgreSQL

#: Primary keys of the tables written with ``INSERT OR REPLACE``.
_CONFLICT_KEYS = {"projection": "patient", "meta": "key"}
#: Tables whose key is ``seq`` (an identity): an INSERT returns it (``lastrowid``).
_SEQ_TABLES = ("entries", "signins", "signatures", "version_entries")


def _outside_quotes(sql: str) -> Iterator[tuple[bool, str]]:
    """``(is_code, text)`` pieces of ``sql``: single-quoted literals and double-quoted names are not code."""
    for piece in re.split(r"('(?:[^']|'')*'|\"[^\"]*\")", sql):
        if piece:
            yield (not piece.startswith(("'", '"')), piece)


#: Columns that are never NULL where the registry sorts by them (a performance hint only: any
#: other column is given SQLite's NULL order explicitly, which is always right).
_NOT_NULL = frozenset({"seq", "id", "patient", "date", "pos", "rank", "created", "recorded_at", "name", "site", "key",
                       "sha256", "computed_for", "entry", "tablename", "at", '"user"', "user"})


def _nulls_first(sql: str) -> str:
    """``ORDER BY`` with SQLite's NULL order (first when ascending, last when descending)."""
    out, pos = [], 0
    for m in re.finditer(r"\bORDER BY\b", sql, re.I):
        if m.start() < pos:
            continue
        out.append(sql[pos:m.end()])
        depth, i = 0, m.end()
        terms, start = [], i
        while i < len(sql):
            ch = sql[i]
            if ch == "(":
                depth += 1
            elif ch == ")":
                if depth == 0:
                    break
                depth -= 1
            elif ch == "," and depth == 0:
                terms.append(sql[start:i])
                start = i + 1
            elif depth == 0 and re.match(r"\s(LIMIT|OFFSET|FOR)\b", sql[i:], re.I):
                break
            i += 1
        terms.append(sql[start:i])
        fixed = []
        for term in terms:
            column = re.sub(r"\s+(ASC|DESC)\s*$", "", term.strip(), flags=re.I).split(".")[-1]
            if re.search(r"\bNULLS\b", term, re.I) or column in _NOT_NULL:
                # Never NULL: the order is the same either way, and an index still serves it.
                fixed.append(term)
            elif re.search(r"\bDESC\s*$", term, re.I):
                fixed.append(term.rstrip() + " NULLS LAST")
            else:
                fixed.append(term.rstrip() + " NULLS FIRST")
        out.append(",".join(fixed))
        pos = i
    out.append(sql[pos:])
    return "".join(out)


@functools.lru_cache(maxsize=2048)
def pg_sql(sql: str, has_args: bool = True) -> tuple[str, bool]:
    """A registry statement (SQLite dialect) as PostgreSQL runs it, and whether it returns
    ``seq`` for ``lastrowid``.

    >>> pg_sql("INSERT OR IGNORE INTO protocol_versions (sha256) VALUES (?)")[0]
    'INSERT INTO protocol_versions (sha256) VALUES (%s) ON CONFLICT DO NOTHING'
    >>> pg_sql("SELECT user, site FROM user_sites WHERE user = ? ORDER BY site")[0]
    'SELECT "user", site FROM user_sites WHERE "user" = %s ORDER BY site'
    """
    parts = []
    for code, piece in _outside_quotes(sql):
        if code:
            if has_args:
                piece = piece.replace("%", "%%").replace("?", "%s")
            piece = re.sub(r"\buser\b", '"user"', piece)
        parts.append(piece)
    out = "".join(parts).strip()
    m = re.match(r"INSERT OR (REPLACE|IGNORE) INTO (\w+)\s*\(([^)]*)\)", out, re.I)
    if m:
        out = f"INSERT INTO {m.group(2)} ({m.group(3)})" + out[m.end():]
        if m.group(1).upper() == "IGNORE":
            out += " ON CONFLICT DO NOTHING"
        else:
            key = _CONFLICT_KEYS[m.group(2)]
            cols = [c.strip() for c in m.group(3).split(",") if c.strip() != key]
            out += f" ON CONFLICT ({key}) DO UPDATE SET " + ", ".join(f"{c} = EXCLUDED.{c}" for c in cols)
    returning = False
    m = re.match(r"INSERT INTO (\w+)\b", out, re.I)
    if m and m.group(1) in _SEQ_TABLES and not re.search(r"\bRETURNING\b", out, re.I):
        out += " RETURNING seq"
        returning = True
    if re.search(r"\bORDER BY\b", out, re.I):
        out = _nulls_first(out)
    return out, returning


_TRIGGER = re.compile(r"CREATE TRIGGER (\w+) BEFORE (UPDATE|DELETE) ON (\w+)\s+BEGIN SELECT RAISE\(ABORT, "
                      r"'((?:[^']|'')*)'\); END;?$", re.S)

#: Statements PostgreSQL says differently (by the name they create).
_PG_OVERRIDES: dict[str, list[str]] = {
    "entries_corrected_once": [
        "CREATE UNIQUE INDEX entries_corrected_once ON entries ((coalesce(supersedes, retracts))) "
        "WHERE supersedes IS NOT NULL OR retracts IS NOT NULL"],
    "entries_correct_own_kind": [
        "CREATE FUNCTION entries_correct_own_kind() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF (NEW.supersedes IS NOT NULL OR NEW.retracts IS NOT NULL) AND NOT EXISTS (SELECT 1 FROM entries AS e "
        "WHERE e.seq = coalesce(NEW.supersedes, NEW.retracts) AND e.patient = NEW.patient AND e.kind = NEW.kind "
        "AND e.retracts IS NULL) THEN RAISE EXCEPTION USING ERRCODE = 'restrict_violation', MESSAGE = "
        "'a correction must target an earlier entry of the same patient and kind'; END IF; RETURN NEW; END $$",
        "CREATE TRIGGER entries_correct_own_kind BEFORE INSERT ON entries FOR EACH ROW "
        "EXECUTE FUNCTION entries_correct_own_kind()"],
}


def _created_name(statement: str) -> str | None:
    m = re.match(r"CREATE (?:UNIQUE )?(?:INDEX|TRIGGER) (\w+)", statement)
    return m.group(1) if m else None


def _refuse(name: str, when: str, table: str, message: str) -> list[str]:
    out = [f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION USING "
           f"ERRCODE = 'restrict_violation', MESSAGE = '{message}'; END $$",
           # Per statement: refused even when it would touch no row (or only rows it cannot see).
           f"CREATE TRIGGER {name} BEFORE {when} ON {table} FOR EACH STATEMENT EXECUTE FUNCTION {name}()"]
    if when == "DELETE":  # TRUNCATE deletes too
        out.append(f"CREATE TRIGGER {name}_truncate BEFORE TRUNCATE ON {table} FOR EACH STATEMENT "
                   f"EXECUTE FUNCTION {name}()")
    return out


def pg_statement(statement: str) -> list[str]:
    """One schema statement of a migration (SQLite dialect) as PostgreSQL statements.

    >>> pg_statement("CREATE TABLE t (seq INTEGER PRIMARY KEY AUTOINCREMENT, data TEXT NOT NULL CHECK (json_valid(data)))")
    ['CREATE TABLE t (seq BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, data TEXT COLLATE "C" NOT NULL CHECK ((data::json IS NOT NULL)))']
    """
    name = _created_name(statement)
    if name in _PG_OVERRIDES:
        return list(_PG_OVERRIDES[name])
    m = _TRIGGER.match(statement.strip())
    if m:
        return _refuse(m.group(1), m.group(2), m.group(3), m.group(4))
    if statement.lstrip().upper().startswith("CREATE TRIGGER"):
        raise ValueError(f"no PostgreSQL form of this trigger: add it to _PG_OVERRIDES: {statement[:80]}")
    m = re.match(r"(CREATE (?:UNIQUE )?INDEX \w+ ON \w+\s*)\(([^()]*)\)(.*)$", statement.strip().rstrip(";"), re.S)
    if m:  # an index in the order the translated ORDER BY asks for (SQLite's NULLs first)
        cols = [c.strip() for c in m.group(2).split(",")]
        cols = [c if c in _NOT_NULL or " " in c else f"{c} NULLS FIRST" for c in cols]
        statement = f"{m.group(1)}({', '.join(cols)}){m.group(3)}"
    parts = []
    for code, piece in _outside_quotes(statement.rstrip().rstrip(";")):
        if code:
            piece = piece.replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGINT GENERATED BY DEFAULT AS IDENTITY "
                                  "PRIMARY KEY")
            piece = re.sub(r"\bINTEGER\b", "BIGINT", piece)
            piece = re.sub(r"\bTEXT\b", 'TEXT COLLATE "C"', piece)
            piece = re.sub(r"\bBLOB\b", "BYTEA", piece)
            # A PostgreSQL table has no rowid: its primary key is an index of its own.
            piece = re.sub(r"\s*\bWITHOUT ROWID\b", "", piece)
            piece = re.sub(r"\bjson_valid\((\w+)\)", r"(\1::json IS NOT NULL)", piece)
            piece = re.sub(r"\buser\b", '"user"', piece)
            piece = piece.replace("strftime(", "protocol_strftime(")
        parts.append(piece)
    return ["".join(parts)]


def pg_statements(statements: Sequence[str]) -> list[str]:
    """Every statement of a migration as PostgreSQL statements (see :func:`pg_statement`)."""
    return [out for statement in statements for out in pg_statement(statement)]


def is_sqlite_file_error(exc: BaseException) -> bool:
    """Whether an SQLite error is about the circumstances (locked, read-only, full), not a bug."""
    text = str(exc).lower()
    return isinstance(exc, sqlite3.OperationalError) and any(
        word in text for word in ("locked", "busy", "readonly", "read-only", "disk", "full", "unable to open"))
