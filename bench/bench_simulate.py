"""Benchmark of cohort simulation: virtual patients per second and peak memory.

Run from the repository root with the package installed (no network needed)::

    .venv/bin/python bench/bench_simulate.py              # full run: 3 repeats, about 30 s
    .venv/bin/python bench/bench_simulate.py --quick      # 1 repeat, about 10 s
    .venv/bin/python bench/bench_simulate.py --json out/bench_simulate.json

Each configuration (N = 100,000 and 1,000,000 patients; 1 and 2 workers) runs in a fresh
subprocess (``--one N WORKERS``) that loads the shipped protocol and cohort, then times
``protocol.simulate`` (wall time, including starting the worker processes). Peak memory is
the largest resident set of any process of the run: ``resource.getrusage`` of the process
itself (``RUSAGE_SELF``) and of its worker processes (``RUSAGE_CHILDREN``, the largest
one); "growth" is the main process's peak minus its resident set just before the timed run
(after a 1,000-patient warm-up), i.e. what the simulation itself added. The figure reported
for each configuration is the median of the repeats.

Budgets: >= 50,000 patients/s on 2 workers; peak memory at N = 1,000,000 within 1.5× of
that at N = 100,000 (same number of workers). The script reports and does not gate: it
always exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PROTOCOL = "interfant06-blinatumomab"
COHORT = ROOT / "examples" / "cohorts" / f"{PROTOCOL}.yaml"
SIZES = (100_000, 1_000_000)
WORKERS = (1, 2)
BUDGET_RATE = 50_000  # patients/s on 2 workers
BUDGET_MEMORY_RATIO = 1.5  # peak RSS at 1,000,000 / at 100,000


def _rss_mb(who: int) -> float:
    # ru_maxrss is in kilobytes on Linux (bytes on macOS).
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(who).ru_maxrss * scale / 2**20


def one(n: int, workers: int) -> dict[str, Any]:
    """Run one simulation in this process and measure it (what ``--one`` prints)."""
    import protocol

    p = protocol.load_protocol(PROTOCOL)
    cohort = protocol.load_cohort(COHORT, p)
    protocol.simulate(p, cohort, 1_000)  # warm-up: numpy imported, code paths compiled
    before = _rss_mb(resource.RUSAGE_SELF)
    started = time.perf_counter()
    result = protocol.simulate(p, cohort, n, workers=workers)
    elapsed = time.perf_counter() - started
    assert result.tally.n == n
    return {"n": n, "workers": workers, "seconds": elapsed, "patients_per_s": n / elapsed,
            "rss_main_mb": _rss_mb(resource.RUSAGE_SELF), "rss_main_before_mb": before,
            "rss_worker_mb": _rss_mb(resource.RUSAGE_CHILDREN) if workers > 1 else 0.0}


def run(n: int, workers: int) -> dict[str, Any]:
    """One configuration in a fresh interpreter, so that its peak memory is its own."""
    proc = subprocess.run([sys.executable, __file__, "--one", str(n), str(workers)], capture_output=True,
                          text=True, check=True, cwd=ROOT, timeout=600)
    return json.loads(proc.stdout)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one repeat per configuration")
    ap.add_argument("--repeats", type=int, default=None, help="repeats per configuration (default 3, 1 with --quick)")
    ap.add_argument("--json", metavar="PATH", type=Path, help="also write the figures as JSON to PATH")
    ap.add_argument("--one", nargs=2, type=int, metavar=("N", "WORKERS"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(one(*args.one)))
        return 0
    repeats = args.repeats or (1 if args.quick else 3)
    versions = ", ".join(f"{m} {metadata.version(m)}" for m in ("numpy", "pydantic", "transitions"))
    print(f"Python {platform.python_version()} on {platform.platform()}, {os.cpu_count()} CPUs; {versions}")
    print(f"protocol {PROTOCOL}, cohort {COHORT.relative_to(ROOT)}; median of {repeats} run(s) per row")
    print()
    print(f"{'N':>10} {'workers':>7} {'seconds':>8} {'patients/s':>12} {'peak RSS MB':>12} "
          f"{'main MB':>8} {'growth MB':>9} {'worker MB':>9}")
    rows = []
    started = time.perf_counter()
    for n in SIZES:
        for w in WORKERS:
            runs = [run(n, w) for _ in range(repeats)]
            row = {"n": n, "workers": w, "repeats": repeats,
                   "seconds": statistics.median(r["seconds"] for r in runs),
                   "patients_per_s": statistics.median(r["patients_per_s"] for r in runs),
                   "rss_main_mb": statistics.median(r["rss_main_mb"] for r in runs),
                   "rss_worker_mb": statistics.median(r["rss_worker_mb"] for r in runs),
                   "growth_mb": statistics.median(r["rss_main_mb"] - r["rss_main_before_mb"] for r in runs),
                   "runs": runs}
            row["peak_rss_mb"] = max(row["rss_main_mb"], row["rss_worker_mb"])
            rows.append(row)
            print(f"{n:>10,} {w:>7} {row['seconds']:>8.2f} {row['patients_per_s']:>12,.0f} "
                  f"{row['peak_rss_mb']:>12.1f} {row['rss_main_mb']:>8.1f} {row['growth_mb']:>9.1f} "
                  f"{row['rss_worker_mb']:>9.1f}")
    print()
    by = {(r["n"], r["workers"]): r for r in rows}
    verdicts = []
    rate = by[(SIZES[-1], 2)]["patients_per_s"]
    ok = rate >= BUDGET_RATE
    verdicts.append({"budget": f">= {BUDGET_RATE:,} patients/s on 2 workers (N = {SIZES[-1]:,})", "value": rate,
                     "verdict": "PASS" if ok else "OVER"})
    print(f"throughput, 2 workers, N = {SIZES[-1]:,}: {rate:,.0f} patients/s (budget >= {BUDGET_RATE:,}): "
          f"{'PASS' if ok else 'OVER'}")
    for w in WORKERS:
        ratio = by[(SIZES[-1], w)]["peak_rss_mb"] / by[(SIZES[0], w)]["peak_rss_mb"]
        ok = ratio <= BUDGET_MEMORY_RATIO
        verdicts.append({"budget": f"peak RSS at {SIZES[-1]:,} <= {BUDGET_MEMORY_RATIO}x that at {SIZES[0]:,} "
                                   f"({w} worker{'s' if w > 1 else ''})", "value": ratio,
                         "verdict": "PASS" if ok else "OVER"})
        print(f"memory, {w} worker{'s' if w > 1 else ''}: peak RSS at N = {SIZES[-1]:,} is {ratio:.2f}x that at "
              f"N = {SIZES[0]:,} (budget <= {BUDGET_MEMORY_RATIO}x): {'PASS' if ok else 'OVER'}")
    speedup = by[(SIZES[-1], 2)]["patients_per_s"] / by[(SIZES[-1], 1)]["patients_per_s"]
    print(f"2 workers / 1 worker at N = {SIZES[-1]:,}: {speedup:.2f}x (worker start-up included)")
    print(f"elapsed {time.perf_counter() - started:.1f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"meta": {"python": platform.python_version(), "platform": platform.platform(),
                                                  "cpus": os.cpu_count(), "versions": versions, "repeats": repeats},
                                         "rows": rows, "budgets": verdicts}, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
