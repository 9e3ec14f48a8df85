"""``protocol._dbopen.connect``: the URL decides which database is opened."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from protocol._dbopen import connect
from protocol._errors import InputError


def test_a_path_or_sqlite_url_opens_the_sqlite_file(tmp_path: Path) -> None:
    for url in (tmp_path / "a.db", f"sqlite:///{tmp_path / 'b.db'}"):
        db = connect(url, create=True)
        try:
            assert db.dialect == "sqlite"
        finally:
            db.close()


def test_a_missing_file_is_not_created_unless_asked(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no registry here"):
        connect(tmp_path / "missing.db")
    assert not (tmp_path / "missing.db").exists()


def test_a_postgresql_url_opens_the_server(pg_server: Any) -> None:
    db = connect(pg_server.new_database(), create=True)
    try:
        assert db.dialect == "postgresql"
    finally:
        db.close()
