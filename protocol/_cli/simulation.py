"""Paths and simulation commands: paths, simulate. Each parses its arguments, calls one library
function and prints the result; no clinical logic lives here."""

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ._common import _run, app


@app.command("paths")
def paths_command(
    protocol: Annotated[str, typer.Argument(help="A shipped protocol id or a definition file.")],
    json_output: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    mermaid: Annotated[bool, typer.Option("--mermaid", help="Print a Mermaid diagram of the paths instead, each "
                                          "edge labelled with the condition under which it is taken.")] = False,
) -> None:
    """List every path from the first element to a final one, with the conditions that select it.

    Also reports elements no patient can reach, rules that can never hold, transitions that
    earlier ones always pre-empt, paths whose conditions contradict each other and patients
    left with no way on, by reasoning on the definition's structured conditions.

    Example: protocol paths interfant06-blinatumomab --mermaid
    """
    from .._loading import dumps, load_protocol
    from .._paths import paths

    report = _run(paths, _run(load_protocol, protocol))
    if json_output:
        sys.stdout.write(dumps(report.to_dict()))
    elif mermaid:
        sys.stdout.write(report.mermaid())
    else:
        sys.stdout.write(report.to_text())


@app.command("simulate")
def simulate_command(
    protocol: Annotated[str, typer.Argument(help="A shipped protocol id or a definition file.")],
    cohort: Annotated[Path, typer.Option("--cohort", help="The cohort specification file (YAML/JSON).",
                                         metavar="FILE")],
    n: Annotated[int, typer.Option("--n", "-n", help="Number of virtual patients.", min=1, max=100_000_000)] = 10_000,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed (default: the cohort's). The results depend "
                                             "only on the seed and N.", min=0)] = None,
    workers: Annotated[int, typer.Option("--workers", "-w", help="Worker processes (results do not depend on it).",
                                         min=1, max=256)] = 1,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write summary.json, CSV tables and PNG/SVG "
                                             "figures into this folder.", metavar="DIR")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the full results as JSON.")] = False,
) -> None:
    """Simulate a virtual cohort through a protocol: paths, HSCT rate by risk group, durations, census.

    Proportions come with 95 % Wilson intervals. A progress bar shows on the terminal.

    Example: protocol simulate interfant06-blinatumomab --cohort examples/cohorts/interfant06-blinatumomab.yaml -o out
    """
    from .._cohort import load_cohort
    from .._loading import dumps, load_protocol
    from .._simulate import simulate

    compiled = _run(load_protocol, protocol)
    spec = _run(load_cohort, cohort, compiled)
    result = _run(_with_progress, simulate, compiled, spec, n, seed=seed, workers=workers)
    if json_output:
        sys.stdout.write(dumps(result.to_dict()))
    else:
        sys.stdout.write(result.summary())
    if out is not None:
        files = _run(result.write, out)
        typer.echo(f"wrote {len(files)} files to {out}", err=True)


def _with_progress(fn: Any, protocol: Any, cohort: Any, n: int, **kwargs: Any) -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    columns = (TextColumn("simulating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task("simulate", total=n)
        return fn(protocol, cohort, n, progress=lambda k: bar.advance(task, k), **kwargs)
