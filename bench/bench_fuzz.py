"""Figures of the fuzz suite (tests/test_fuzz.py): cases, exit 0, exit 2, internal errors and
seconds for each generator, under the quick or the long profile.

Run from the repository root with the package installed (no network needed)::

    .venv/bin/python bench/bench_fuzz.py            # quick profile (the CI one), about 1-2 min
    .venv/bin/python bench/bench_fuzz.py --long     # long profile (>= 10,000 cases), about 5-10 min
    .venv/bin/python bench/bench_fuzz.py --scale 0.1  # a smoke run

Each test of tests/test_fuzz.py is run once, as pytest would run it (hypothesis chooses the
cases; a failure is shrunk and reported). A row per test: cases run, how many ended in exit 0
(accepted) and exit 2 (refused with a message), internal errors (exit 1 or a traceback: must
be 0), cases showing only a known defect (each has a strict-xfail test), wall and CPU seconds.
Exits 1 if any test failed or any internal error was seen.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = [
    ("patients", "test_generated_patient_files_are_planned_or_refused_with_a_message"),
    ("damaged files", "test_damaged_patient_files_are_refused_with_a_message_naming_the_file"),
    ("definitions", "test_mutated_definitions_are_validated_or_refused_with_a_message"),
    ("command lines", "test_any_command_line_ends_in_exit_0_or_2"),
    ("script sample", "test_a_sample_through_the_installed_script"),
]


def _load(profile: str) -> object:
    os.environ["PROTOCOL_FUZZ"] = profile  # read when the module is imported
    spec = importlib.util.spec_from_file_location("test_fuzz", ROOT / "tests" / "test_fuzz.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["test_fuzz"] = module
    spec.loader.exec_module(module)
    return module


def main() -> int:
    """Run every fuzz test once and print its figures; exit 1 on a failure or internal error."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--long", action="store_true", help="the long profile (PROTOCOL_FUZZ=long)")
    parser.add_argument("--scale", type=float, help="scale the quick profile (e.g. 0.1)")
    args = parser.parse_args()
    profile = "long" if args.long else (str(args.scale) if args.scale else "quick")
    fuzz = _load(profile)
    tally = fuzz.TALLY  # type: ignore[attr-defined]
    print(f"fuzz profile: {profile}   python {sys.version.split()[0]}   {os.cpu_count()} CPUs   "
          f"load average {os.getloadavg()[0]:.1f}")
    head = f"{'generator':<15}{'cases':>8}{'exit 0':>8}{'exit 2':>8}{'internal':>10}{'known':>7}{'wall s':>8}{'cpu s':>8}  result"
    print(head)
    print("-" * len(head))
    failed = 0
    totals = {"cases": 0, "exit 0": 0, "exit 2": 0, "internal": 0, "known": 0, "wall": 0.0, "cpu": 0.0}
    for label, name in TESTS:
        before = dict(tally)
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            getattr(fuzz, name)()
            result = "ok"
        except Exception as exc:  # noqa: BLE001 - reported, then the next generator runs
            failed += 1
            result = f"FAILED: {type(exc).__name__}"
            traceback.print_exc(limit=1)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        row = {k: tally.get(k, 0) - before.get(k, 0) for k in ("cases", "exit 0", "exit 2", "internal")}
        row["known"] = sum(v - before.get(k, 0) for k, v in tally.items() if k.startswith("known defect"))
        for k, v in row.items():
            totals[k] += v
        totals["wall"] += wall
        totals["cpu"] += cpu
        print(f"{label:<15}{row['cases']:>8,}{row['exit 0']:>8,}{row['exit 2']:>8,}{row['internal']:>10,}"
              f"{row['known']:>7,}{wall:>8.1f}{cpu:>8.1f}  {result}")
    print("-" * len(head))
    print(f"{'total':<15}{totals['cases']:>8,}{totals['exit 0']:>8,}{totals['exit 2']:>8,}{totals['internal']:>10,}"
          f"{totals['known']:>7,}{totals['wall']:>8.1f}{totals['cpu']:>8.1f}  "
          + ("ok" if not failed and not totals["internal"] else f"{failed} failed"))
    print("cpu s: of this process (the script sample's subprocesses are not counted); "
          "known: cases showing only a known defect (see tests/test_fuzz.py KNOWN)")
    return 1 if failed or totals["internal"] else 0


if __name__ == "__main__":
    sys.exit(main())
