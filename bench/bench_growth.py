"""How the plan's cost grows with what a patient has recorded (issue 14).

A medium-risk infant whose whole therapy lies in the past (the example patient ``mr-on-time``
moved back so that maintenance has ended) gets its element starts and completions recorded as
planned, then ``item_given`` for its first N administrations in date order (N = 0, 10, 100,
500, 700, and every administration the plan has; beyond that, blood counts fill the log up to
1,500 entries). Each row is the median ``plan()`` time beside the same plan with nothing but
the element events recorded (the floor), as a ratio, and the log–log slope of the growth.
A slope of 1 is linear in what was recorded; the budget is ≤ 1.1, and ≤ 1.5× the floor at 700.

Run from the repository root::

    .venv/bin/python bench/bench_growth.py            # about 20 s
    .venv/bin/python bench/bench_growth.py --quick    # fewer repeats
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import statistics
import sys
import timeit
from pathlib import Path
from typing import Any

import protocol

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "patients" / "mr-on-time.yaml"
AS_OF = dt.date(2026, 11, 30)
SHIFT_DAYS = 760  # diagnosis 2024-04: the 104-week therapy ends before AS_OF
SIZES = (0, 10, 100, 500, 700, 1500)
BUDGET_SLOPE = 1.1
BUDGET_RATIO_AT_700 = 1.5


def _shifted(data: dict[str, Any], days: int) -> dict[str, Any]:
    """The patient file with every date moved ``days`` earlier (recorded events dropped)."""
    delta = dt.timedelta(days=days)

    def move(value: Any) -> Any:
        return (dt.date.fromisoformat(value) - delta).isoformat()

    out = dict(data)
    for key in ("birth_date", "diagnosis_date"):
        out[key] = move(data[key])
    out["treatment_start"] = None
    out["measurements"] = [{**m, "date": move(m["date"])} for m in data["measurements"]]
    out["mrd"] = [{**m, "date": move(m["date"])} for m in data["mrd"]]
    out["counts"] = []
    out["events"] = []
    return out


def _element_events(plan: protocol.Plan) -> list[dict[str, Any]]:
    """Starts and completions of the certain path as planned, up to AS_OF."""
    events: list[dict[str, Any]] = []
    for span in plan.elements:
        if span.branch is not None or span.planned_start is None or span.planned_start > AS_OF:
            continue
        if span.id == "hsct":
            events.append({"type": "hsct", "date": span.planned_start.isoformat()})
            break
        events.append({"type": "element_started", "element": span.id, "date": span.planned_start.isoformat()})
        if span.planned_end is not None and span.planned_end <= AS_OF:
            events.append({"type": "element_completed", "element": span.id, "date": span.planned_end.isoformat()})
    return events


def build(n: int, base: dict[str, Any], pr: protocol.Protocol) -> protocol.Patient:
    """The shifted patient with the element events and ``n`` recorded entries."""
    bare = protocol.Patient.model_validate(base)
    element_events = _element_events(protocol.plan(bare, pr, AS_OF))
    with_elements = protocol.Patient.model_validate({**base, "events": element_events})
    items = [i for i in protocol.plan(with_elements, pr, AS_OF).items
             if i.kind == "administration" and i.branch is None and i.date <= AS_OF]
    given = [{"type": "item_given", "item": i.ref, "date": i.date.isoformat()} for i in items[:n]]
    counts = []
    first = dt.date.fromisoformat(base["diagnosis_date"])
    for k in range(max(0, n - len(given))):  # beyond every administration: daily blood counts
        counts.append({"date": (first + dt.timedelta(days=k)).isoformat(), "anc": 1.5, "platelets": 150})
    return protocol.Patient.model_validate({**base, "events": element_events + given, "counts": counts})


def interleaved_medians(fns: list[Any], repeats: int, min_s: float) -> list[float]:
    """Median seconds per call of each function, timed in turns (every repeat times each one
    once, at least ``min_s`` each): a noisy neighbour then slows every row alike, and the
    ratios to the floor stay comparable on a shared machine."""
    timers = [timeit.Timer(fn, setup="import gc; gc.enable()") for fn in fns]
    numbers = []
    for timer in timers:
        number = max(1, timer.autorange()[0])
        while timer.timeit(number) < min_s and number < 1 << 20:
            number *= 2
        numbers.append(number)
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for k, (timer, number) in enumerate(zip(timers, numbers, strict=True)):
            samples[k].append(timer.timeit(number) / number)
    return [statistics.median(s) for s in samples]


def main(argv: list[str] | None = None) -> int:
    """Print the growth table; exit 1 when a budget is missed (the figures are still printed)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="5 repeats of at least 20 ms each")
    args = ap.parse_args(argv)
    repeats, min_s = (5, 0.02) if args.quick else (9, 0.05)

    base = _shifted(protocol.load_patient(EXAMPLE).model_dump(mode="json"), SHIFT_DAYS)
    pr = protocol.load_protocol(base["protocol"])
    patients, counts = [], []
    for n in SIZES:
        patient = build(n, base, pr)
        plan = protocol.plan(patient, pr, AS_OF)
        patients.append(patient)
        counts.append((n, sum(1 for i in plan.items if i.status == "given"), len(plan.rows)))
    times = interleaved_medians([lambda patient=patient: protocol.plan(patient, pr, AS_OF) for patient in patients],
                                repeats, min_s)
    rows = [(*c, t) for c, t in zip(counts, times, strict=True)]
    floor = rows[0][3]
    print(f"plan() growth with recorded entries · {pr.id} {pr.version} · as of {AS_OF} · "
          f"median of {repeats} repeats, the rows timed in turns")
    print(f"{'entries':>8} {'given':>6} {'items':>6} {'plan ms':>9} {'× floor':>8}")
    for n, given, items, t in rows:
        print(f"{n:>8} {given:>6} {items:>6} {t * 1e3:>9.3f} {t / floor:>8.2f}")
    # The slope is fitted from 100 entries up, where the recorded part (not the plan's fixed
    # cost) is what is measured: below that, any growth at all looks flat.
    xs = [math.log(n) for n, *_ in rows if n >= 100]
    ys = [math.log(t) for n, *_, t in rows if n >= 100]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
    at_700 = next(t for n, *_, t in rows if n == 700) / floor
    ok_slope, ok_700 = slope <= BUDGET_SLOPE, at_700 <= BUDGET_RATIO_AT_700
    print(f"log–log slope (100…1500 entries): {slope:.2f}  budget ≤ {BUDGET_SLOPE}  {'ok' if ok_slope else 'OVER'}")
    print(f"at 700 entries: {at_700:.2f}× the plan with none  budget ≤ {BUDGET_RATIO_AT_700}  "
          f"{'ok' if ok_700 else 'OVER'}")
    return 0 if ok_slope and ok_700 else 1


if __name__ == "__main__":
    sys.exit(main())
