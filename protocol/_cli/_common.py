"""Shared pieces of the command line: the typer app, option types, error handling and output.

Exit codes: 0 success, 2 bad input (message on stderr, no traceback), 1 internal error,
141 when the output's reader went away (see ``main``).
Library modules are imported inside the commands so that ``protocol --help`` stays fast.
"""

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
    version: Annotated[bool, typer.Option(
        "--version", help="Print the version of protocol and exit.", is_eager=True,
        callback=lambda value: _version(value))] = False,
) -> None:
    """Options of every command (before the command: ``protocol --mode 640 plan ...``)."""
    from .._io import parse_mode, set_output_mode

    set_output_mode(None if mode is None else _run(parse_mode, mode, "--mode"))


def _version(value: bool) -> None:
    """``protocol --version``: the release, and the Python it runs on."""
    if value:
        from .. import __version__

        typer.echo(f"protocol {__version__} (Python {sys.version.split()[0]})")
        raise typer.Exit(0)


class PlanFormat(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


PatientRef = Annotated[str, typer.Argument(
    help="A patient file (YAML/JSON), or the id of a patient in the registry (see --db).", metavar="PATIENT")]
Db = Annotated[str | None, typer.Option(
    "--db", help="The patient registry: an SQLite file (a path or sqlite:///PATH) or a PostgreSQL server "
    "(postgresql://USER@HOST/DBNAME). Default: $PROTOCOL_DB, else ./protocol.db.",
    metavar="DB", show_default=False)]

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
    amendment applies, in which case the amended protocol. A registry patient is planned with
    the protocol version it is on (``protocol amend``)."""
    from .._versions import attached

    version = attached(patient)
    site = _site(site)
    if site is None:
        return version
    from .._loading import load_patient, load_protocol

    if version is not None:
        from .._site import amend

        recorded = getattr(version, "site_sha256", None)
        if recorded:
            return _recorded_site(patient, version, site)
        return amend(version, site)
    if not hasattr(patient, "protocol"):
        patient = load_patient(patient)
    return load_protocol(patient.protocol.partition("@")[0], site)


def _recorded_site(patient: Any, version: Any, site: Path) -> Any:
    """A registry patient planned with a recorded site amendment: ``--site`` may name the same
    file (content) only; another is refused, since plans, worklist and documents follow what
    the registry recorded."""
    import hashlib

    from .._errors import InputError, Problem
    from .._io import read_input

    if hashlib.sha256(read_input(site)).hexdigest() == version.site_sha256:
        return version
    name = os.path.basename(version.site[1].split(" (kept in", 1)[0])
    raise InputError(Problem("--site", "", f"{getattr(patient, 'id', 'the patient')} is planned with the site "
                             f"amendment {name} recorded in the registry (sha256 {version.site_sha256[:12]}), got "
                             f"{site} with other content; preview and record a change with `protocol amend "
                             f"preview|apply {version.id} --site {site}`"))


# --------------------------------------------------------------------------- text that a user typed

#: Characters never written to a terminal as they are: C0/C1 controls (ESC starts an ANSI
#: sequence, BEL rings) and the bidirectional overrides that reorder what is shown.
_BIDI = "\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"


def _is_control(ch: str) -> bool:
    o = ord(ch)
    return o < 0x20 or 0x7F <= o < 0xA0 or ch in _BIDI


def _shown(text: str, keep: str = "") -> str:
    """``text`` with every control character written as an escape (``\\x1b``), so it is shown
    as typed and cannot steer the terminal; characters in ``keep`` (e.g. a newline) stay."""
    if not any(_is_control(c) and c not in keep for c in text):
        return text
    return "".join((f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")
                   if _is_control(c) and c not in keep else c for c in text)


def _typed(value: str | None, option: str) -> str | None:
    """A free-text option (a reason, a note) as typed; control characters are refused (exit 2)
    with a message naming the option and where the character is."""
    if value is None:
        return None
    bad = next((i for i, c in enumerate(value) if _is_control(c)), None)
    if bad is not None:
        from .._errors import InputError, Problem

        _fail(InputError(Problem("record", option, f"expected plain text, got a control character "
                                 f"({_shown(value[bad])}) at position {bad + 1} in '{_shown(value)}': "
                                 "type the text without it")))
    return value


# --------------------------------------------------------------------------- plain text tables


def _width() -> int | None:
    """The width to fit a table to: ``$COLUMNS``, else the terminal's; None when the output
    is not a terminal (a pipe, a file): then nothing is hidden or wrapped."""
    env = os.environ.get("COLUMNS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        if not sys.stdout.isatty():
            return None
    except (AttributeError, ValueError):
        return None
    import shutil

    return shutil.get_terminal_size((100, 24)).columns


def _words(text: str, joins: str = "_/") -> list[tuple[str, str]]:
    """Where a cell may break: ``(glue, piece)`` pairs, at spaces (glue " ") and after a
    character of ``joins`` ('_' or '/' inside a long id or unit; glue "")."""
    out: list[tuple[str, str]] = []
    for n, word in enumerate(text.split()):
        glue, piece = ("", "") if n == 0 else (" ", "")
        for ch in word:
            piece += ch
            if ch in joins and len(piece) > 1:
                out.append((glue, piece))
                glue, piece = "", ""
        if piece:
            out.append((glue, piece))
    return out


def _wrap(text: str, width: int, rest: int | None = None, joins: str = "_/") -> list[str]:
    """``text`` in lines of at most ``width`` characters (``rest`` for the lines after the
    first), broken only between words: a word longer than the width stays whole on its line."""
    if len(text) <= width:
        return [text]
    lines: list[str] = []
    line = ""
    limit = width
    for glue, word in _words(text, joins):
        if line and len(line) + len(glue) + len(word) > limit:
            lines.append(line)
            line = word
            limit = width if rest is None else rest
        else:
            line += (glue if line else "") + word
    if line or not lines:
        lines.append(line)
    return lines


#: The width a wrapped column keeps before columns are hidden to make room.
COMFORT = 22


def _fit(header: list[str], rows: list[list[str]], width: int | None, *, keep: frozenset[str] | set[str] = frozenset(),
         drop: tuple[str, ...] = (), wrap: tuple[set[str], ...] = ()) -> tuple[str, list[str]]:
    """Rows as fixed-width text fitted to ``width`` columns of terminal, and the names of the
    columns shown.

    Empty columns are left out. When the table is too wide, the columns named in ``wrap`` are
    narrowed (their cells wrap between words, never inside one), then the columns in ``drop``
    are hidden, first named first, until it fits; ``keep`` columns are never hidden. ``wrap``
    is a tuple of tiers (sets of column names): the first tier is narrowed before the next.
    With ``width`` None everything is shown at full width. Example:
    ``_fit(["date", "item"], [["2026-05-04", "Prednisone (prephase)"]], 20, wrap=({"item"},))``.
    """
    gap = 2
    tiers = wrap
    wrappable = set().union(*tiers) if tiers else set()
    cols = [i for i, h in enumerate(header) if h in keep or any(r[i] for r in rows)]
    natural = {i: max(len(header[i]), *(len(r[i]) for r in rows)) if rows else len(header[i]) for i in cols}
    if width is not None:
        least = {i: max((len(w) for t in {header[i], *(r[i] for r in rows)} for _, w in _words(t)), default=1)
                 if header[i] in wrappable else natural[i] for i in cols}
        least = {i: max(least[i], min(natural[i], 1)) for i in cols}

        def need(cs: list[int], widths: dict[int, int]) -> int:
            return sum(widths[i] for i in cs) + gap * (len(cs) - 1)

        # Hide columns before wrapping text into narrow slivers: a column is hidden while the
        # others cannot fit with their text at a readable width (COMFORT, or its longest word);
        # then wrappable columns are narrowed, and if even that cannot fit, the next is hidden.
        easy = {i: max(least[i], min(natural[i], COMFORT)) for i in cols}
        hidable = [name for name in drop if any(header[i] == name for i in cols)]
        while hidable and need(cols, easy) > width:
            name = hidable.pop(0)
            cols = [i for i in cols if header[i] != name]
        while True:
            widths = {i: natural[i] for i in cols}
            # Narrow the widest wrappable column of the first tier a step at a time until
            # the table fits; the next tier (ids, say) only once the first is as narrow as
            # it goes.
            for tier in tiers:
                while need(cols, widths) > width:
                    narrowable = [i for i in cols if header[i] in tier and widths[i] > least[i]]
                    if not narrowable:
                        break
                    i = max(narrowable, key=lambda c: widths[c])
                    widths[i] -= 1
            if need(cols, widths) <= width or not hidable:
                break
            name = hidable.pop(0)
            cols = [i for i in cols if header[i] != name]
        if need(cols, widths) > width and gap > 1:
            # Still too wide with every column at its narrowest: one space between columns.
            gap = 1
            while need(cols, widths) > width:
                narrowable = [i for i in cols if header[i] in wrappable and widths[i] > least[i]]
                if not narrowable:
                    break
                widths[max(narrowable, key=lambda c: widths[c])] -= 1
            # Wrappable columns narrowed for the two-space layout may widen back into the room.
            for i in sorted((i for i in cols if header[i] in wrappable), key=lambda c: widths[c]):
                while widths[i] < natural[i] and need(cols, widths) < width:
                    widths[i] += 1
    else:
        widths = natural
    out: list[str] = []
    for row in [header, *rows]:
        cells = [_wrap(row[i], widths[i]) if len(row[i]) > widths[i] else [row[i]] for i in cols]
        for k in range(max(len(c) for c in cells)):
            out.append((" " * gap).join(f"{(c[k] if k < len(c) else ''):<{widths[i]}}"
                                 for c, i in zip(cells, cols, strict=True)).rstrip())
    return "\n".join(out) + "\n", [header[i] for i in cols]


def _paragraph(text: str, width: int | None, indent: str = "  ") -> str:
    """A line of prose wrapped between words to ``width`` (continuation lines indented)."""
    if width is None or len(text) <= width:
        return text + "\n"
    lines = _wrap(text, width, max(10, width - len(indent)), joins="")
    return "\n".join([lines[0], *(indent + line for line in lines[1:])]) + "\n"
