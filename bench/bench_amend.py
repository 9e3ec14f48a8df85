"""Benchmark of ``protocol amend preview``: 100 and 1,000 registered patients, against a floor.

Run from the repository root with the package installed (no network needed)::

    .venv/bin/python bench/bench_amend.py                # 100 and 1,000 patients, about a minute
    .venv/bin/python bench/bench_amend.py --quick        # one timed run each
    .venv/bin/python bench/bench_amend.py --sizes 100 --json out/bench_amend.json

Registries of synthetic patients (bench_registry.py's generator: eligible infants diagnosed
over the 18 months before 2026-11-21, with measurements, MRD results and element starts and
completions) are built in a temporary folder. The amendment is tests/data/amendments/
hsct-threshold.yaml (INVENTED test values: the HSCT threshold), which can change a decision.

- ``preview``: :func:`protocol._amend.preview` as of 2026-11-21 (every patient replayed from
  the log, planned with its version and with the new one, the two plans compared);
- ``floor``: a plain re-plan of the same patients, in the same run (replay from the log and
  one ``plan`` each): a preview cannot be cheaper than about twice this.

Figures are medians of wall times (``time.perf_counter``, garbage collector on) after one
warm-up. Budget (issue 15): preview of 1,000 patients <= 2 s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import protocol
from protocol._amend import preview
from protocol._registry import Registry
from protocol.schedule import plan

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_registry import AS_OF, PROTOCOL_ID, SEED, synthetic_patient  # noqa: E402 - the shared generator

ROOT = Path(__file__).resolve().parent.parent
AMENDMENT = ROOT / "tests" / "data" / "amendments" / "hsct-threshold.yaml"
BUDGET_1000_S = 2.0


def median_wall(fn: Callable[[], Any], runs: int) -> tuple[float, list[float], Any]:
    """Median wall time of ``runs`` calls after one warm-up call; the last result too."""
    result = fn()
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        result = fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples), samples, result


def build(folder: Path, n: int, pr: Any) -> Registry:
    """A registry of ``n`` synthetic patients (bulk-inserted, then projected once)."""
    rng = random.Random(SEED)
    reg = Registry(folder / f"amend-{n}.db", create=True, today=lambda: AS_OF)
    reg._bulk_insert((synthetic_patient(rng, i, pr) for i in range(n)), by="bench")
    return reg


def floor(reg: Registry, pr: Any) -> int:
    """Replay and plan every registered patient once (what any preview must at least do)."""
    n = 0
    for summary in reg.patients():
        plan(reg.patient(summary.id), pr, as_of=AS_OF, today=AS_OF)
        n += 1
    return n


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a table (and JSON with ``--json``)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100,1000", help="registry sizes (comma-separated)")
    ap.add_argument("--quick", action="store_true", help="one timed run per figure")
    ap.add_argument("--runs", type=int, default=3, help="timed runs per figure (default 3)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)
    runs = 1 if args.quick else args.runs
    pr = protocol.load_protocol(PROTOCOL_ID)
    rows = []
    print(f"protocol {protocol.__version__}, Python {platform.python_version()}, {platform.platform()}")
    print(f"amendment {AMENDMENT.relative_to(ROOT)} (INVENTED test values), as of {AS_OF}, median of {runs} run(s)")
    print(f"{'patients':>8}  {'floor (re-plan)':>15}  {'preview':>9}  {'ratio':>5}  summary")
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            with build(Path(tmp), n, pr) as reg:
                base, base_s, _ = median_wall(lambda: floor(reg, pr), runs)
                prev, prev_s, result = median_wall(lambda: preview(reg, AMENDMENT, as_of=AS_OF), runs)
                budget = f"  (budget {BUDGET_1000_S:g} s: {'ok' if prev <= BUDGET_1000_S else 'OVER'})" \
                    if n == 1000 else ""
                print(f"{n:>8}  {base:>13.3f} s  {prev:>7.3f} s  {prev / base:>5.2f}  {result.summary}{budget}")
                rows.append({"patients": n, "floor_s": base, "floor_samples": base_s, "preview_s": prev,
                             "preview_samples": prev_s, "ratio": prev / base, "summary": result.summary})
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"as_of": AS_OF.isoformat(), "runs": runs, "rows": rows,
                                         "when": dt.datetime.now(dt.timezone.utc).isoformat()}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
