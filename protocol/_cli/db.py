"""``protocol db``: the registry file itself (its integrity)."""

from __future__ import annotations

import typer

from ._common import Db, _run, app

db_app = typer.Typer(help="The registry file itself.\n\nExample: protocol db check", no_args_is_help=True,
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
