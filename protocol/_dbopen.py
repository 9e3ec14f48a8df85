"""Opening the database a ``--db`` URL names: the SQLite file or the PostgreSQL server.

Kept apart from :mod:`protocol._db` (the interface both databases implement), so that the
two implementations import the interface and only this module knows them both.

>>> db = connect("protocol.db", create=True)  # doctest: +SKIP
>>> db.dialect  # doctest: +SKIP
'sqlite'
"""

from __future__ import annotations

import os

from ._db import Database, DbUrl, parse_url

__all__ = ["connect"]


def connect(url: str | os.PathLike[str] | DbUrl, create: bool = False) -> Database:
    """Open the database ``url`` names (not yet migrated: the registry migrates on opening)."""
    parsed = parse_url(url)
    if parsed.dialect == "postgresql":
        from ._dbpg import PgDatabase

        return PgDatabase(parsed, create)
    from ._dbsqlite import SqliteDatabase

    return SqliteDatabase(parsed, create)
