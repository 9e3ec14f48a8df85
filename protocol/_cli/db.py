"""``protocol db``: the registry itself: its integrity, upgrades, copies between databases, backups."""

import typer

from ._common import Db, _run, app

db_app = typer.Typer(help="The registry itself: check, upgrade, copy, backup.\n\nExample: protocol db check", no_args_is_help=True,
                     rich_markup_mode=None)
app.add_typer(db_app, name="db")


@db_app.command("check")
def db_check(db: Db = None) -> None:
    """Check the registry in full: SQLite's integrity check, then every patient replayed and
    planned as a write would be. Exit 2 with what is wrong and what to do; 0 when sound.

    Example: protocol db check --db protocol.db
    """
    from .._registry import open_registry

    def run() -> dict:
        with open_registry(db) as reg:
            return reg.check()

    report = _run(run)
    ok = report["integrity"] == ["ok"] and not report["problems"]
    typer.echo(f"integrity: {'ok' if report['integrity'] == ['ok'] else '; '.join(report['integrity'])}")
    typer.echo(f"patients replayed: {report['patients']}, {len(report['problems'])} with problems")
    for pid, message in report["problems"]:
        typer.echo(f"  {pid}: {message}", err=True)
    if not ok:
        typer.echo("error: the registry has problems: restore the last backup, or correct the entries named "
                   "above", err=True)
        raise typer.Exit(2)


@db_app.command("upgrade")
def db_upgrade(db: Db = None) -> None:
    """Create the registry, or apply the migrations a registry made by an older release lacks
    (on PostgreSQL also the roles, grants and row-level policies). A registry made by a newer
    release is refused (exit 2).

    Example: protocol db upgrade --db postgresql://owner@db.example/trial
    """
    from .._registry import SCHEMA_VERSION, open_registry

    def run() -> str:
        with open_registry(db, create=True) as reg:
            return str(reg.path)

    where = _run(run)
    typer.echo(f"{where}: schema {SCHEMA_VERSION} (up to date)")


@db_app.command("copy")
def db_copy(source: str = typer.Argument(..., metavar="FROM", help="The registry to copy (path or URL)."),
            target: str = typer.Argument(..., metavar="TO", help="An empty registry: a new file or a new "
                                         "PostgreSQL database.")) -> None:
    """Copy a registry into an empty one (SQLite to PostgreSQL or back), then verify the copy:
    every patient replayed on both sides and its exports, audit trail and version log compared
    byte for byte. Sessions and the worklist cache are not copied. Exit 2 when the target is not
    empty or the copy differs.

    Example: protocol db copy protocol.db postgresql://owner@db.example/trial
    """
    from .._dbcopy import copy_registry

    report = _run(copy_registry, source, target)
    typer.echo(f"copied {report['patients']} patients ({report['entries']} log entries) from {report['source']} "
               f"to {report['target']}; verified: {report['verified']} patients replay to identical exports")


@db_app.command("backup")
def db_backup(target: str = typer.Argument(..., metavar="FILE", help="The new backup file."), db: Db = None) -> None:
    """Back up an SQLite registry while it is in use (SQLite's online backup API; the copy is
    owner-only). A PostgreSQL registry is backed up with pg_dump (README, Backups).

    Example: protocol db backup backups/protocol-2026-11-21.db --db protocol.db
    """
    from pathlib import Path

    from .._db import parse_url
    from .._dbsqlite import online_backup
    from .._errors import InputError, Problem
    from .._registry import default_db_path

    def run() -> None:
        url = parse_url(default_db_path() if db is None else db)
        if url.path is None:
            raise InputError(Problem(url.label, "", "a PostgreSQL registry is backed up with pg_dump "
                                     "(README, Backups), not with this command"))
        online_backup(url.path, Path(target))

    _run(run)
    typer.echo(f"backed up to {target}")
