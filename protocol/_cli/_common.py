"""Shared pieces of the command line: the typer app, option types, error handling and output.

Exit codes: 0 success, 2 bad input (message on stderr, no traceback), 1 internal error,
141 when the output's reader went away (see ``main``).
Library modules are imported inside the commands so that ``protocol --help`` stays fast.
"""

from __future__ import annotations

import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

app = typer.Typer(
    name="protocol",
    help="Treatment protocols as data: validate a definition, stratify a patient, plan the dated "
    "schedule and print the roadmap.\n\nExample: protocol roadmap examples/patients/mr-on-time.yaml -o roadmap.html",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _options(
    mode: Annotated[str | None, typer.Option(
        "--mode", help="File mode (octal) of the outputs written with -o / --out, e.g. 640. Default: "
        "$PROTOCOL_OUTPUT_MODE, else 600 (owner only, like the registry).", metavar="MODE",
        show_default=False)] = None,
) -> None:
    """Options of every command (before the command: ``protocol --mode 640 plan ...``)."""
    from .._io import parse_mode, set_output_mode

    set_output_mode(None if mode is None else _run(parse_mode, mode, "--mode"))


class PlanFormat(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


PatientRef = Annotated[str, typer.Argument(
    help="A patient file (YAML/JSON), or the id of a patient in the registry (see --db).", metavar="PATIENT")]
Db = Annotated[Path | None, typer.Option(
    "--db", help="The patient registry (SQLite file). Default: $PROTOCOL_DB, else ./protocol.db.",
    metavar="FILE", show_default=False)]

Site = Annotated[Path | None, typer.Option(
    "--site", help="A site amendment file: verified values replacing placeholders. Default: $PROTOCOL_SITE.",
    metavar="FILE", show_default=False)]

AsOf = Annotated[str | None, typer.Option("--as-of", help="Only count events and results up to this date "
                                          "(YYYY-MM-DD or 'today'; default today).", metavar="DATE")]


def _fail(exc: BaseException) -> NoReturn:
    from .._errors import InputError

    if isinstance(exc, InputError):
        for problem in exc.problems:
            typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(2)
    if isinstance(exc, BrokenPipeError):  # the reader went away: main() exits quietly
        raise exc
    if os.environ.get("PROTOCOL_DEBUG"):
        raise exc
    typer.echo(f"internal error: {type(exc).__name__}: {exc}\n(set PROTOCOL_DEBUG=1 for a traceback; "
               "please report it)", err=True)
    raise typer.Exit(1)


def _run(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except typer.Exit:
        raise
    except Exception as exc:  # noqa: BLE001 - the CLI boundary turns every error into an exit code
        _fail(exc)


def _as_of(text: str | None) -> Any:
    from .._io import parse_date

    return None if text is None else parse_date(text, "--as-of")


def _emit(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text)
        return
    from .._io import write_atomic

    write_atomic(output, lambda fh: fh.write(text))
    typer.echo(f"wrote {output}", err=True)


def _patient(ref: str, db: Path | None) -> Any:
    """A patient argument: a file name (an existing file, or anything with a slash or a
    .yaml/.yml/.json suffix) is loaded as a patient file; anything else is a registry id."""
    path = Path(ref)
    if path.exists() or "/" in ref or path.suffix.lower() in {".yaml", ".yml", ".json"}:
        return ref
    from .._registry import resolve_patient

    return resolve_patient(ref, db)


def _site(site: Path | None) -> Path | None:
    """The site amendment: ``--site``, else ``$PROTOCOL_SITE``, else none."""
    if site is not None:
        return site
    env = os.environ.get("PROTOCOL_SITE")
    return Path(env) if env else None


def _protocol_for(patient: Any, site: Path | None) -> Any:
    """The protocol to plan ``patient`` with: None (the one its file names) unless a site
    amendment applies, in which case the amended protocol."""
    site = _site(site)
    if site is None:
        return None
    from .._loading import load_patient, load_protocol

    if not hasattr(patient, "protocol"):
        patient = load_patient(patient)
    return load_protocol(patient.protocol.partition("@")[0], site)
