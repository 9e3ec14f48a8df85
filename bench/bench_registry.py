"""Benchmark of the patient registry: the worklist over 10,000 synthetic patients, replaying a
patient with 500 events, one durable write.

Run from the repository root with the package installed (no network needed)::

    .venv/bin/python bench/bench_registry.py               # 10,000 patients, about 1-2 minutes
    .venv/bin/python bench/bench_registry.py --quick       # fewer repeats
    .venv/bin/python bench/bench_registry.py --patients 2000 --json out/bench_registry.json

The registry is built in a temporary folder: synthetic patients (eligible infants diagnosed
over the 18 months before 2026-11-21, with measurements, MRD results and the element starts
and completions of their path, some late) are bulk-inserted in one transaction. Figures are
medians of wall times (``time.perf_counter``) with the garbage collector on, each beside a
floor measured in the same run (a pure-Python loop appending one tuple per row, entry or plan
item the figure handles; ``python -c pass`` for a command), as a ratio. Budgets (issue 14):
worklist command <= 0.5 s and <= 100 MiB, cold worklist <= 4 s on 2 cores, replay <= 5 ms.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import protocol
from protocol._registry import Registry

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import _events_along, compile_package, floor_loop  # noqa: E402 - shared with bench.py

ROOT = Path(__file__).resolve().parent.parent
AS_OF = dt.date(2026, 11, 21)
SEED = 20261121
PROTOCOL_ID = "interfant06-blinatumomab"
BUDGET_WORKLIST_S = 0.5
BUDGET_WORKLIST_MIB = 100.0
BUDGET_COLD_S = 4.0
BUDGET_REPLAY_MS = 5.0
REPLAY_EVENTS = 500


# --------------------------------------------------------------------------- synthetic registry


def synthetic_patient(rng: random.Random, index: int, pr: protocol.Protocol) -> dict[str, Any]:
    """An eligible KMT2A-rearranged infant with measurements, MRD results and the element
    starts/completions of its path up to AS_OF (30 % of elements start 1-7 days late)."""
    diagnosis = AS_OF - dt.timedelta(days=rng.randint(0, 540))
    age = rng.randint(10, 360)
    birth = diagnosis - dt.timedelta(days=age)
    months = age / 30.4
    height, weight = 50 + 1.9 * months + rng.uniform(-3, 3), 3.4 + 0.55 * months + rng.uniform(-0.6, 0.6)
    measurements, day = [], diagnosis
    while day <= AS_OF and len(measurements) < 6:
        measurements.append({"date": day.isoformat(), "height_cm": round(height, 1), "weight_kg": round(weight, 2)})
        step = rng.randint(21, 90)
        day += dt.timedelta(days=step)
        height, weight = height + step * 0.05, weight + step * 0.012
    mrd = []
    for timepoint, offset in (("end_of_induction", 33), ("blinatumomab_day15", 50), ("blinatumomab_day29", 64),
                              ("pre_octadad", 141)):
        when = diagnosis + dt.timedelta(days=offset + rng.randint(0, 5))
        if when <= AS_OF and rng.random() > 0.15:  # 15 % not back yet: decisions wait
            mrd.append({"timepoint": timepoint, "date": when.isoformat(),
                        "value": 0.0 if rng.random() < 0.4 else float(f"{10 ** rng.uniform(-5.5, -2):.2g}")})
    data: dict[str, Any] = {
        "id": f"SYN-{index:05d}", "protocol": PROTOCOL_ID, "birth_date": birth.isoformat(),
        "sex": rng.choice(["female", "male"]), "diagnosis_date": diagnosis.isoformat(), "kmt2a": "rearranged",
        "wbc_at_diagnosis": round(min(4900.0, rng.lognormvariate(math.log(120), 1.1)), 1),
        "day8_blasts_per_ul": round(rng.lognormvariate(math.log(400), 1.4)), "cns_status": "CNS1",
        "measurements": measurements, "mrd": mrd,
    }
    bare = protocol.plan(protocol.Patient.model_validate(data), pr, AS_OF)
    # The same recorded history as bench.py's cohort: its certain path, with random late starts.
    events = _events_along(bare, rng)
    data["events"] = events
    try:
        protocol.plan(protocol.Patient.model_validate(data), pr, AS_OF)
    except protocol.ProtocolError:
        data["events"] = []  # the generator's path disagreed with the protocol: keep the bare patient
    return data


def _shifted(value: Any, days: int) -> Any:
    """Every date in a patient file moved by ``days``."""
    if isinstance(value, dict):
        return {k: _shifted(v, days) if k in ("date", "to", "birth_date", "diagnosis_date", "measurements", "mrd",
                                              "events") else v for k, v in value.items()}
    if isinstance(value, list):
        return [_shifted(v, days) for v in value]
    return (dt.date.fromisoformat(value) + dt.timedelta(days=days)).isoformat()


def replay_patient(pr: protocol.Protocol) -> dict[str, Any]:
    """The on-time example moved 61 weeks earlier (so most of its plan is in the past), into
    maintenance, with an ``item_given`` event for each past item: REPLAY_EVENTS events in all."""
    data = protocol._io.read_document(ROOT / "examples" / "patients" / "mr-on-time.yaml").data
    data = {**_shifted(data, -61 * 7), "id": "REPLAY-500"}
    for span in protocol.plan(protocol.Patient.model_validate(data), pr, AS_OF).elements:
        if span.id == "octadad" and span.planned_end is not None:
            data["events"] += [{"type": "element_completed", "element": "octadad", "date": span.planned_end.isoformat()},
                               {"type": "element_started", "element": "maintenance",
                                "date": (span.planned_end + dt.timedelta(days=1)).isoformat()}]
    result = protocol.plan(protocol.Patient.model_validate(data), pr, AS_OF)
    given = [{"type": "item_given", "item": item.ref, "date": item.date.isoformat()} for item in result.items
             if item.date <= AS_OF and item.status in ("done", "unrecorded", "planned", "overdue")]
    data["events"] = data["events"] + given[:REPLAY_EVENTS - len(data["events"])]
    if len(data["events"]) != REPLAY_EVENTS:
        sys.exit(f"bench: the replay patient has {len(data['events'])} events, not {REPLAY_EVENTS}")
    return data


# --------------------------------------------------------------------------- measuring


def median_wall(fn: Callable[[], Any], runs: int) -> tuple[float, list[float], Any]:
    """Median wall time of ``runs`` calls after one warm-up call; returns the last result too."""
    result = fn()
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        result = fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples), samples, result


class Report:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(self, key: str, name: str, seconds: float, unit: str = "s", budget: float | None = None,
            samples: list[float] | None = None, note: str = "", floor: tuple[float, str] | None = None) -> None:
        """A row; ``floor``: ``(seconds, what)`` measured in this run, shown as the ratio."""
        value = seconds * 1000 if unit == "ms" else seconds
        verdict = "" if budget is None else ("PASS" if value <= budget else "OVER")
        budget_txt = "" if budget is None else f"<= {budget:g} {unit}"
        ratio = None if floor is None or not floor[0] else seconds / floor[0]
        ratio_txt = "" if ratio is None else f"{ratio:.1f}× floor"
        print(f"{name:<58}{value:>10.3f} {unit:<3}{ratio_txt:>13}{budget_txt:>11}  {verdict:<5} {note}")
        if floor is not None:
            print(f"{'':<4}floor: {floor[1]}: {floor[0] * (1000 if unit == 'ms' else 1):.3f} {unit}")
        self.rows.append({"key": key, "measurement": name, "value": value, "unit": unit, "budget": budget,
                          "verdict": verdict or None, "samples_s": samples, "note": note or None,
                          "floor_s": None if floor is None else floor[0], "ratio": ratio})

    def add_memory(self, key: str, name: str, mib: float, budget: float) -> None:
        verdict = "PASS" if mib <= budget else "OVER"
        print(f"{name:<58}{mib:>10.1f} MiB{'':>13}{f'<= {budget:g} MiB':>11}  {verdict:<5}")
        self.rows.append({"key": key, "measurement": name, "value": mib, "unit": "MiB", "budget": budget,
                          "verdict": verdict})


def tuple_floor(n: int, runs: int) -> tuple[float, str]:
    """Median seconds of the pure-Python floor at ``n`` tuples (bench.py's floor loop)."""
    med, _, _ = median_wall(lambda: floor_loop(n), runs)
    return med, f"{n:,} × append 8-field tuple"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--patients", type=int, default=10_000, help="synthetic patients (default 10,000)")
    ap.add_argument("--quick", action="store_true", help="3 runs per figure instead of 7")
    ap.add_argument("--json", metavar="PATH", type=Path, help="also write the figures as JSON to PATH")
    args = ap.parse_args(argv)
    runs = 3 if args.quick else 7
    started = time.perf_counter()
    print(f"python {platform.python_version()} · {platform.platform()} · sqlite {__import__('sqlite3').sqlite_version}"
          f" · {args.patients:,} patients · {runs} runs per figure")
    pr = protocol.load_protocol(PROTOCOL_ID)
    rng = random.Random(SEED)
    report = Report()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.db"
        t0 = time.perf_counter()
        patients = [synthetic_patient(rng, i, pr) for i in range(args.patients)]
        generated = time.perf_counter() - t0
        reg = Registry(db, create=True, today=lambda: AS_OF)
        t0 = time.perf_counter()
        entries = reg._bulk_insert(patients, by="bench")
        report.add("build", f"bulk insert {args.patients:,} patients ({entries:,} entries)",
                   time.perf_counter() - t0, note=f"(generating them took {generated:.1f} s)")

        sample = [protocol.Patient.model_validate(p) for p in patients[:200]]
        items = sum(len(protocol.plan(p, pr, AS_OF).rows) for p in sample) * len(patients) // max(1, len(sample))
        t0 = time.perf_counter()
        cold = reg.worklist(AS_OF, 7)
        report.add("worklist_cold", "worklist, first call of the day (re-plans everyone)", time.perf_counter() - t0,
                   budget=BUDGET_COLD_S, note=f"{cold.refreshed:,} patients re-planned, {os.cpu_count()} CPUs",
                   floor=(tuple_floor(items, 1)[0], f"{items:,} × append 8-field tuple (one per plan item, "
                          "estimated from 200 patients)"))

        def warm() -> Any:
            wl = reg.worklist(AS_OF, 7)
            return wl, wl.table()

        med, samples, (wl, text) = median_wall(warm, runs)
        counts = wl.counts()
        rows_floor = tuple_floor(len(wl.rows), runs)
        report.add("worklist", "worklist 7 days, table text (projection fresh)", med, samples=samples,
                   note=f"{len(wl.rows):,} rows: " + ", ".join(f"{v:,} {k}" for k, v in counts.items() if v),
                   floor=rows_floor)
        assert wl.refreshed == 0
        med, samples, _ = median_wall(lambda: reg.worklist(AS_OF, 7).to_json(), runs)
        report.add("worklist_json", "worklist 7 days, JSON text", med, samples=samples, floor=rows_floor)
        med, samples, _ = median_wall(lambda: reg.worklist(AS_OF, 28).table(), runs)
        report.add("worklist_28", "worklist 28 days, table text", med, samples=samples,
                   note="(first call refreshed every patient for the longer horizon)")
        cli = [sys.executable, "-m", "protocol", "worklist", "--db", str(db), "--from", AS_OF.isoformat(),
               "--as-of", AS_OF.isoformat(), "--days", "7"]

        compiled = compile_package()

        def run_cli() -> None:
            subprocess.run(cli, check=True, stdout=subprocess.DEVNULL, cwd=ROOT)

        bare, _, _ = median_wall(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True), 3)
        med, samples, _ = median_wall(run_cli, max(3, runs // 2))
        report.add("worklist_cli", "`protocol worklist --days 7` wall time (process start included)", med,
                   budget=BUDGET_WORKLIST_S, samples=samples, floor=(bare, "python -c pass"),
                   note="(byte-code compiled first, as pip install does)" if compiled else
                   "(the package's byte-code could not be compiled: each start compiles it)")
        # Through a small wrapper process: a child forked from this (large) process would count
        # this process's pages until it execs.
        wrapper = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
                   "stdout=subprocess.DEVNULL); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
        peak = float(subprocess.run([sys.executable, "-c", wrapper, *cli], check=True, capture_output=True,
                                    text=True, cwd=ROOT).stdout) / 1024
        report.add_memory("worklist_cli_rss", "`protocol worklist --days 7` peak RSS", peak, BUDGET_WORKLIST_MIB)

        reg._bulk_insert([replay_patient(pr)], by="bench")
        reg.patient("REPLAY-500")  # valid: every event is an item of its plan
        n = len(reg.history("REPLAY-500"))
        med, samples, _ = median_wall(lambda: reg.patient("REPLAY-500"), runs * 5)
        report.add("replay", f"replay one patient, {REPLAY_EVENTS} events ({n} log entries) → Patient", med, "ms",
                   budget=BUDGET_REPLAY_MS, samples=samples, floor=tuple_floor(n, runs * 5))
        med, samples, _ = median_wall(lambda: protocol.plan(reg.patient("REPLAY-500"), pr, AS_OF), runs * 2)
        report.add("replay_plan", "  … and its plan", med, "ms", samples=samples)

        writer = synthetic_patient(random.Random(SEED + 1), 0, pr)
        writer.update(id="WRITE-1", measurements=writer["measurements"][:1])
        reg._bulk_insert([writer], by="bench")
        first = dt.date.fromisoformat(writer["diagnosis_date"])
        counter = iter(range(1, 10**6))

        def write() -> None:
            day = first + dt.timedelta(days=next(counter))
            reg.record("WRITE-1", "measurement", {"date": day.isoformat(), "height_cm": 60, "weight_kg": 6},
                       by="bench")

        try:
            med, samples, _ = median_wall(write, runs * 2)
            report.add("write", "one durable write (validate, plan, project, fsync)", med, "ms", samples=samples)
        except protocol.InputError as exc:  # pragma: no cover - the synthetic patient refused it
            print(f"  (write not measured: {exc})")
        reg.close()
        print(f"done in {time.perf_counter() - started:.0f} s; registry file {db.stat().st_size / 1e6:.0f} MB")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"meta": {"python": platform.python_version(), "patients": args.patients,
                                                  "runs": runs}, "rows": report.rows}, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
