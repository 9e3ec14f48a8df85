"""Benchmark of the calendar (ICS) and FHIR exports: each figure beside its budget and its
floor or peer, from the same run.

Run from the repository root with the package installed (no network needed)::

    .venv/bin/python bench/bench_calendar_fhir.py           # 7 repeats, about 30 s
    .venv/bin/python bench/bench_calendar_fhir.py --quick   # 3 repeats

Rows (median wall ms of the repeats after one warm-up call; the plan is built beforehand, so
only the export is timed; the garbage collector stays on):

* ``ics``: ``to_ics(plan)``; peer: the same calendar built and serialised by icalendar alone
  (``_FAST = False``, byte-identical output). Budget 30 ms.
* ``ics reminders``: ``to_ics(plan, remind_days=1)``; same peer. Budget 30 ms.
* ``fhir bundle``: ``care_plan_json(plan)``, the CarePlan bundle as JSON text, every resource
  validated once; peer: validating the same data again as one Bundle and dumping it from
  the model (what each export cost before: validated and dumped twice). Budget 200 ms.
* ``calendar_for, N revisions``: a registry patient with N recorded changes (item given,
  one per write), SEQUENCE from its history; floor: ``to_ics`` of the final plan alone. The
  cost per revision is printed (one plan and its events per revision).

Each row is printed for the example ``mr-on-time`` (823 items, the largest reference plan);
``--all`` adds every example for the FHIR and ICS rows. The script reports and exits 0.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import protocol
from protocol import _calendar
from protocol._calendar import calendar_for, to_ics
from protocol._fhir import _dumps, care_plan_json
from protocol._registry import Registry

ROOT = Path(__file__).resolve().parent.parent
AS_OF = dt.date(2026, 11, 21)
STAMP = dt.datetime(2026, 9, 21, 14, 13, 20, tzinfo=dt.UTC)


def _median_ms(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """(median wall ms, spread %)."""
    fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    median = statistics.median(samples)
    return median, (max(samples) - min(samples)) / 2 / median * 100 if median else 0.0


def _row(label: str, ms: float, spread: float, peer: float | None, peer_label: str, budget: float | None) -> None:
    ratio = f"{ms / peer:5.2f}× {peer_label} ({peer:7.1f} ms)" if peer else ""
    verdict = "" if budget is None else ("  ok" if ms <= budget else "  OVER")
    limit = "" if budget is None else f"budget ≤ {budget:g} ms{verdict}"
    print(f"{label:<44} {ms:8.1f} ms ±{spread:3.0f}%  {ratio:<36} {limit}")


def _icalendar_only(plan: Any, remind: int | None) -> bytes:
    _calendar._FAST = False
    try:
        return to_ics(plan, remind_days=remind, generated=STAMP)
    finally:
        _calendar._FAST = True


def _twice(plan: Any) -> str:
    """The peer: the bundle validated once more as a whole and dumped from the model."""
    from fhir.resources.bundle import Bundle

    from protocol._fhir import _care_plan_bundle

    data, _ = _care_plan_bundle(plan, STAMP)
    return Bundle.model_validate(data).model_dump_json(indent=2)


def _registry_with(revisions: int, folder: Path) -> Registry:
    today = dt.date(2026, 10, 1)
    clock = [dt.datetime(2026, 10, 1, 9, tzinfo=dt.UTC)]

    def now() -> dt.datetime:
        clock[0] += dt.timedelta(seconds=1)
        return clock[0]

    reg = Registry(folder / f"r{revisions}.db", create=True, today=lambda: today, now=now)
    reg.add_patient(ROOT / "examples/patients/mr-on-time.yaml", by="bench")
    done = 0
    for item in protocol.plan(reg.patient("INF-0001"), as_of=today).items:
        if done >= revisions - 1:
            break
        if item.element == "octadad" and item.kind == "administration" and item.date <= today:
            reg.record("INF-0001", "event", {"type": "item_given", "item": item.ref, "date": item.date.isoformat()},
                       by="bench")
            done += 1
    return reg


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 repeats instead of 7")
    parser.add_argument("--all", action="store_true", help="also every example patient")
    args = parser.parse_args(argv)
    repeats = 3 if args.quick else 7
    print(f"python {sys.version.split()[0]} · {platform.platform()} · {repeats} repeats, median")
    paths = sorted((ROOT / "examples/patients").glob("*.yaml")) if args.all else [
        ROOT / "examples/patients/mr-on-time.yaml"]
    for path in paths:
        plan = protocol.plan(path, as_of=AS_OF)
        name = f"{path.stem} ({len(plan.rows)} items)"
        print(f"\n{name}")
        peer, _ = _median_ms(lambda: _icalendar_only(plan, None), repeats)
        ms, sp = _median_ms(lambda: to_ics(plan, generated=STAMP), repeats)
        _row("ics", ms, sp, peer, "icalendar alone", 30)
        peer, _ = _median_ms(lambda: _icalendar_only(plan, 1), repeats)
        ms, sp = _median_ms(lambda: to_ics(plan, remind_days=1, generated=STAMP), repeats)
        _row("ics reminders", ms, sp, peer, "icalendar alone", 30)
        peer, _ = _median_ms(lambda: _twice(plan), repeats)
        ms, sp = _median_ms(lambda: care_plan_json(plan, STAMP), repeats)
        _row("fhir bundle (care_plan_json)", ms, sp, peer, "validated+dumped twice", 200)
        from protocol._fhir import _validated_plan_definition

        ms, sp = _median_ms(lambda: _dumps(_validated_plan_definition(plan.protocol)[0]), repeats)
        _row("  of which the PlanDefinition (cached)", ms, sp, None, "", None)
    print("\ncalendar_for: SEQUENCE from the registry's history (mr-on-time as of 2026-10-01)")
    with tempfile.TemporaryDirectory() as tmp:
        for n in (1, 10, 30):
            reg = _registry_with(n, Path(tmp))
            try:
                revisions = len(dict.fromkeys(e.recorded_at for e in reg.history("INF-0001")))
                final = protocol.plan(reg.patient("INF-0001"), as_of=dt.date(2026, 10, 1))
                floor, _ = _median_ms(lambda: to_ics(final, generated=STAMP), repeats)
                ms, sp = _median_ms(lambda: calendar_for(reg, "INF-0001", as_of=dt.date(2026, 10, 1),
                                                         generated=STAMP), repeats)
                _row(f"calendar_for, {revisions} revisions", ms, sp, floor, "to_ics of the plan", None)
                if revisions > 1:
                    print(f"{'':<44} {(ms - floor) / (revisions - 1):8.1f} ms per earlier revision")
            finally:
                reg.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
