"""Benchmark of the protocol engine: plan, items, JSON, validation, HTML roadmap, CLI start, cohort.

Run from the repository root with the package installed (no network needed)::

    .venv/bin/python bench/bench.py              # full run, about 15-30 s
    .venv/bin/python bench/bench.py --quick      # fewer repeats, under 15 s
    .venv/bin/python bench/bench.py --json out/bench.json

Every in-process figure is the median of ``--repeats`` repeats of ``timeit`` (at least 7 in a
full run), with ``number`` chosen so that one repeat takes at least 50 ms (20 ms with ``--quick``); the garbage
collector stays enabled, as it is in real use. Compare ratios within one run: on a noisy
machine absolute numbers move by about ±30 % between runs. See bench/README.md.
"""

from __future__ import annotations

import argparse
import compileall
import datetime as dt
import gc
import json
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import time
import timeit
from collections import Counter
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import protocol
from protocol import _documents, _io, _loading
from protocol._documents import render_roadmap
from protocol._errors import DefinitionError

ROOT = Path(__file__).resolve().parent.parent
PATIENTS_DIR = ROOT / "examples" / "patients"
EXAMPLE = "mr-on-time"  # the example patient: its item count sets the floor's N
AS_OF = dt.date(2026, 11, 21)
MIN_REPEAT_S = 0.050  # each timeit repeat runs at least this long
MIN_REPEAT_QUICK_S = 0.020  # with --quick (never below the 20 ms floor)
COHORT_SIZE = 1000
SEED = 20261121

BUDGET_PLAN_RATIO = 3.0  # plan() <= 3x the floor at the same number of items, plus a fixed cost:
BUDGET_PLAN_FIXED_US = 50.0  # (issue 14) plan() <= 3 x floor + 50 µs
BUDGET_RENDER_MS = 30.0  # one HTML roadmap
BUDGET_HELP_S = 0.4  # `protocol --help` wall time


# --------------------------------------------------------------------------- measuring


class Stat:
    """Per-call times (seconds) from ``repeats`` timeit repeats of ``number`` calls each."""

    def __init__(self, per_call: list[float], number: int) -> None:
        self.per_call = per_call
        self.number = number

    @property
    def median(self) -> float:
        return statistics.median(self.per_call)

    @property
    def spread(self) -> float:
        """(max - min) / median of the repeats: how noisy this figure was."""
        return (max(self.per_call) - min(self.per_call)) / self.median if self.median else 0.0


def measure(fn: Callable[[], Any], repeats: int, min_s: float = MIN_REPEAT_S) -> Stat:
    """Per-call times of ``fn`` over ``repeats`` repeats, ``number`` calls each so that a repeat
    takes at least ``min_s``.

    The calibration loop doubles as a warm-up. ``gc.enable()`` in the setup keeps the garbage
    collector on during timing (timeit switches it off by default).
    """
    timer = timeit.Timer(fn, setup="import gc; gc.enable()")
    number = 1
    while True:
        took = timer.timeit(number)
        if took >= min_s * 1.25:  # margin: a repeat must not fall under min_s by noise
            break
        number = max(number + 1, math.ceil(number * min_s * 1.5 / max(took, 1e-7)))
    samples = timer.repeat(repeat=repeats, number=number)
    return Stat([s / number for s in samples], number)


def wall_times(cmd: list[str], runs: int) -> Stat:
    """Wall time of a subprocess, ``runs`` times after one warm-up run (bytecode, page cache)."""
    def once() -> float:
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, check=False)
        took = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.exit(f"bench: {' '.join(cmd)} exited with {proc.returncode}:\n{proc.stderr.decode(errors='replace')}")
        return took

    once()
    return Stat([once() for _ in range(runs)], 1)


def floor_loop(n: int) -> list[tuple[Any, ...]]:
    """The floor: a pure-Python loop appending ``n`` tuples of 8 fields to a list."""
    out = []
    append = out.append
    for i in range(n):
        append((i, i, i, None, None, "planned", None, i))
    return out


# --------------------------------------------------------------------------- synthetic cohort


def _patient_dict(rng: random.Random, index: int) -> dict[str, Any]:
    """A synthetic KMT2A-rearranged infant (eligible), without events."""
    diagnosis = AS_OF - dt.timedelta(days=rng.randint(0, 560))
    age_days = rng.randint(10, 360)  # infants under 1 year at diagnosis
    birth = diagnosis - dt.timedelta(days=age_days)
    months = age_days / 30.4
    height, weight = 50 + 1.9 * months + rng.uniform(-3, 3), 3.4 + 0.55 * months + rng.uniform(-0.6, 0.6)
    measurements, day = [], diagnosis
    for _ in range(rng.randint(1, 5)):
        if day > AS_OF:
            break
        measurements.append({"date": day.isoformat(), "height_cm": round(height, 1), "weight_kg": round(weight, 2)})
        step = rng.randint(21, 90)
        day += dt.timedelta(days=step)
        height += step * rng.uniform(0.03, 0.07)
        weight += step * rng.uniform(0.008, 0.02)
    mrd = []
    for timepoint, offset, negative in (("end_of_induction", 33, 0.1), ("blinatumomab_day15", 50, 0.3),
                                        ("blinatumomab_day29", 64, 0.5), ("pre_octadad", 141, 0.5)):
        when = diagnosis + dt.timedelta(days=offset + rng.randint(0, 5))
        if when > AS_OF or rng.random() < 0.15:  # not back yet: a decision on it stays pending
            continue
        value = 0.0 if rng.random() < negative else float(f"{10 ** rng.uniform(-5.5, -2):.2g}")
        mrd.append({"timepoint": timepoint, "date": when.isoformat(), "value": value})
    return {
        "id": f"SYN-{index:05d}",
        "protocol": "interfant06-blinatumomab",
        "birth_date": birth.isoformat(),
        "sex": rng.choice(["female", "male"]),
        "diagnosis_date": diagnosis.isoformat(),
        "kmt2a": "rearranged",
        "wbc_at_diagnosis": round(min(4900.0, rng.lognormvariate(math.log(120), 1.1)), 1),
        "day8_blasts_per_ul": round(rng.lognormvariate(math.log(400), 1.4)),
        "cns_status": rng.choice(["CNS1", "CNS1", "CNS2", "CNS3"]),
        "measurements": measurements,
        "mrd": mrd,
        "events": [],
    }


def compile_package() -> bool:
    """Byte-compile the protocol package into its ``__pycache__``, as ``pip install`` does for a
    regular install, so that a timed command start reads cached byte-code instead of compiling
    the package's sources (which it would do at every start when PYTHONDONTWRITEBYTECODE is set,
    as on the development machine: about 40 ms for the worklist command). True when every module
    compiled (or was already current)."""
    return bool(compileall.compile_dir(Path(protocol.__file__).parent, quiet=1))


def _events_along(plan: protocol.Plan, rng: random.Random) -> list[dict[str, Any]]:
    """Recorded events that follow ``plan``'s certain path up to ``AS_OF``, with random delays."""
    events: list[dict[str, Any]] = []
    shift = 0
    spans = [s for s in plan.elements if s.branch is None and s.planned_start is not None]
    for i, span in enumerate(spans):
        if i and rng.random() < 0.3:
            shift += rng.randint(1, 7)  # started late (counts recovering), which shifts the rest
        start = span.planned_start + dt.timedelta(days=shift)
        if start > AS_OF:
            break
        if span.id == "hsct":
            events.append({"type": "hsct", "date": start.isoformat()})
            break
        events.append({"type": "element_started", "element": span.id, "date": start.isoformat()})
        last = i == len(spans) - 1 or span.planned_end is None
        if last:
            break
        end = span.planned_end + dt.timedelta(days=shift)
        if end > AS_OF:
            break
        events.append({"type": "element_completed", "element": span.id, "date": end.isoformat()})
    return events


def synthetic_cohort(pr: protocol.Protocol, size: int) -> tuple[list[protocol.Patient], dict[str, Any]]:
    """``size`` validated Patient objects (built up front, so that only plan() is timed)."""
    rng = random.Random(SEED)
    patients: list[protocol.Patient] = []
    fallbacks = 0
    for index in range(size):
        data = _patient_dict(rng, index)
        bare = protocol.Patient.model_validate(data)
        data["events"] = _events_along(protocol.plan(bare, pr, AS_OF), rng)
        patient = protocol.Patient.model_validate(data)
        try:
            protocol.plan(patient, pr, AS_OF)
        except protocol.ProtocolError:  # pragma: no cover - the generator follows the protocol
            fallbacks += 1
            patient = bare
        patients.append(patient)
    plans = [protocol.plan(p, pr, AS_OF) for p in patients]
    summary = {
        "risk": dict(Counter(p.risk.group for p in plans)),
        "pending": sum(1 for p in plans if p.pending),
        "events_mean": statistics.fmean(len(p.events) for p in patients),
        "items_mean": statistics.fmean(len(p.rows) for p in plans),
        "items_total": sum(len(p.rows) for p in plans),
        "fallbacks": fallbacks,
    }
    return patients, summary


# --------------------------------------------------------------------------- report


class Report:
    """Collects rows, prints them as a table and keeps them for ``--json``."""

    HEAD = f"{'#':<3}{'measurement':<50}{'median':>12}{'ratio':>9}{'budget':>12}  {'result':<7}{'spread':>7}  n×repeats"

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def section(self, num: str) -> None:
        self._num = num
        self._first = True

    def add(self, name: str, value: float, unit: str, stat: Stat | None = None, *, ratio: float | None = None,
            budget: float | None = None, budget_of: str = "value", key: str) -> dict[str, Any]:
        """Add a row; ``budget`` applies to ``value`` or, with ``budget_of="ratio"``, to the ratio."""
        checked = ratio if budget_of == "ratio" else value
        verdict = None if budget is None or checked is None else ("PASS" if checked <= budget else "OVER")
        row = {"key": key, "row": self._num, "measurement": name, "value": value, "unit": unit, "ratio": ratio,
               "budget": budget, "budget_of": budget_of if budget is not None else None, "verdict": verdict}
        if stat is not None:
            row.update(spread=round(stat.spread, 4), number=stat.number, repeats=len(stat.per_call),
                       samples_s=[round(s, 9) for s in stat.per_call])
        self.rows.append(row)
        num = self._num if self._first else ""
        self._first = False
        budget_txt = "" if budget is None else (f"<= {budget:g}×" if budget_of == "ratio" else f"<= {budget:g} {unit}")
        spread = "" if stat is None else f"±{stat.spread * 50:.0f}%"
        runs = "" if stat is None else f"{stat.number}×{len(stat.per_call)}"
        print(f"{num:<3}{name:<50}{_fmt(value, unit):>12}{'' if ratio is None else f'{ratio:.2f}×':>9}"
              f"{budget_txt:>12}  {verdict or '':<7}{spread:>7}  {runs}")
        return row

    def note(self, text: str) -> None:
        print(f"{'':<3}  {text}")


def _fmt(value: float, unit: str) -> str:
    if unit == "patients/s":
        return f"{value:,.0f}/s"
    if value >= 1000:
        return f"{value:,.0f} {unit}"
    digits = 1 if value >= 10 else 2 if value >= 1 else 3
    return f"{value:.{digits}f} {unit}"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", metavar="PATH", type=Path, help="also write the figures as JSON to PATH")
    ap.add_argument("--quick", action="store_true", help="fewer repeats (3), for a fast smoke run (< 15 s)")
    ap.add_argument("--repeats", type=int, default=None, help="timeit repeats per figure (default 9; --quick 3)")
    args = ap.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 9)
    if repeats < 1:
        ap.error("--repeats must be at least 1")
    min_s = MIN_REPEAT_QUICK_S if args.quick else MIN_REPEAT_S

    def timed(fn: Callable[[], Any], repeats: int = repeats) -> Stat:
        return measure(fn, repeats, min_s)
    cli_runs = 3 if args.quick else 7
    started = time.perf_counter()

    files = sorted(PATIENTS_DIR.glob("*.yaml"))
    if not files:
        sys.exit(f"bench: no example patients in {PATIENTS_DIR}")
    patients = {f.stem: protocol.load_patient(f) for f in files}
    example = EXAMPLE if EXAMPLE in patients else next(iter(patients))
    pr = protocol.load_protocol(patients[example].protocol)
    # The reference protocol's examples only (the other protocols' examples have their own plans).
    patients = {name: p for name, p in patients.items() if p.protocol.split("@")[0] == pr.id}
    plans = {name: protocol.plan(p, pr, AS_OF) for name, p in patients.items()}
    n_items = {name: len(p.rows) for name, p in plans.items()}

    meta = {
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "executable": sys.executable,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "versions": {d: _version(d) for d in ("protocol", "pydantic", "pydantic-core", "transitions", "jinja2",
                                              "markupsafe", "pyyaml", "typer")},
        "protocol": f"{pr.id} {pr.version}",
        "as_of": AS_OF.isoformat(),
        "repeats": repeats,
        "min_repeat_s": min_s,
        "quick": args.quick,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    print(f"protocol benchmark · {meta['python']} · {meta['platform']}")
    print(f"machine: {meta['machine']}, {meta['cpu']}, {meta['cpus']} CPUs")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()))
    print(f"{meta['protocol']} · as_of {AS_OF} · example patient {example} ({n_items[example]} items)")
    print(f"each figure: median of {repeats} repeats, n calls per repeat so a repeat takes >= "
          f"{min_s * 1000:.0f} ms, GC on; spread = ±(max-min)/2 of the repeats"
          + ("  [--quick]" if args.quick else ""))
    print()
    print(Report.HEAD)
    print("-" * len(Report.HEAD))
    rep = Report()

    # 1. floor, at the example's N (and at every other example's N, for the per-patient ratios)
    rep.section("1")
    floor_us: dict[int, float] = {}
    for name in sorted(n_items, key=lambda k: (k != example, k)):
        n = n_items[name]
        if n in floor_us:
            continue
        st = timed(lambda n=n: floor_loop(n))
        floor_us[n] = st.median * 1e6
        label = f"floor: {n} × append 8-field tuple" + (" (example)" if name == example else f" ({name})")
        rep.add(label, floor_us[n], "µs", st, key=f"floor_{n}")

    # 2. plan per patient, protocol and patient pre-loaded
    rep.section("2")
    plan = protocol.plan
    plan_us, plan_ratio, plan_budget = [], [], []
    for name, patient in patients.items():
        st = timed(lambda patient=patient: plan(patient, pr, AS_OF))
        us = st.median * 1e6
        ratio = us / floor_us[n_items[name]]
        plan_us.append(us)
        plan_ratio.append(ratio)
        budget = BUDGET_PLAN_RATIO * floor_us[n_items[name]] + BUDGET_PLAN_FIXED_US
        plan_budget.append(budget)
        rep.add(f"plan {name} ({n_items[name]} items)", us, "µs", st, ratio=ratio, budget=round(budget, 1),
                key=f"plan_{name}")
    rep.add(f"plan, median of {len(plan_us)} patients", statistics.median(plan_us), "µs",
            ratio=statistics.median(plan_ratio), budget=round(statistics.median(plan_budget), 1), key="plan_median")
    rep.note("ratio: against the floor at the same number of items; budget: 3 × that floor + 50 µs (issue 14), "
             "from this run's floor; the median row's time, ratio and budget are each a median")

    # 3. the edges: Item NamedTuples, JSON text
    rep.section("3")
    ex_patient, ex_floor = patients[example], floor_us[n_items[example]]
    st = timed(lambda: plan(ex_patient, pr, AS_OF).items)
    rep.add(f"plan + .items ({example})", st.median * 1e6, "µs", st, ratio=st.median * 1e6 / ex_floor,
            key="plan_items")
    st = timed(lambda: plan(ex_patient, pr, AS_OF).to_json())
    rep.add(f"plan + .to_json() ({example})", st.median * 1e6, "µs", st, ratio=st.median * 1e6 / ex_floor,
            key="plan_to_json")

    # 4. validation, bypassing load_protocol's cache
    rep.section("4")
    path = pr.path
    doc = _io.read_document(path, error=DefinitionError)
    st = timed(lambda: _loading._compile(_io.read_document(path, error=DefinitionError)))
    st_parse = timed(lambda: _io.read_document(path, error=DefinitionError))
    st_compile = timed(lambda: _loading._compile(doc))  # _compile does not modify doc
    rep.add(f"validate {Path(path).name}", st.median * 1e3, "ms", st, key="validate")
    rep.add("  read + YAML parse only", st_parse.median * 1e3, "ms", st_parse, key="validate_parse")
    rep.add("  pydantic + cross-checks + compile only", st_compile.median * 1e3, "ms", st_compile,
            key="validate_compile")
    rep.note("validate = read + parse + pydantic + cross-checks + compile (load_protocol cache bypassed)")

    # 5. HTML roadmap of a pre-built plan
    rep.section("5")
    env_cache = _documents._environment
    def cold_render() -> str:
        env_cache.cache_clear()
        return render_roadmap(plans[example], "html")
    st_cold = timed(cold_render)
    render_ms = []
    for name, built in plans.items():
        render_roadmap(built, "html")  # warm: template compiled, doses computed
        st = timed(lambda built=built: render_roadmap(built, "html"))
        render_ms.append(st.median * 1e3)
        rep.add(f"render HTML roadmap {name}", st.median * 1e3, "ms", st, budget=BUDGET_RENDER_MS,
                key=f"render_{name}")
    rep.add(f"render HTML, median of {len(render_ms)} patients", statistics.median(render_ms), "ms",
            budget=BUDGET_RENDER_MS, key="render_median")
    rep.add(f"  first render ({example}: env + template compile)", st_cold.median * 1e3, "ms", st_cold,
            key="render_cold")

    # 6. CLI start-up
    rep.section("6")
    exe = sys.executable
    compiled = compile_package()
    st = wall_times([exe, "-m", "protocol", "--help"], cli_runs)
    rep.add("python -m protocol --help (wall)", st.median, "s", st, budget=BUDGET_HELP_S, key="help_module")
    script = Path(exe).parent / ("protocol.exe" if os.name == "nt" else "protocol")
    if script.exists():
        st = wall_times([str(script), "--help"], cli_runs)
        rep.add("protocol --help, console script (wall)", st.median, "s", st, budget=BUDGET_HELP_S,
                key="help_script")
    else:
        rep.note(f"console script not found next to {exe}: skipped")
    st = wall_times([exe, "-c", "pass"], cli_runs)
    rep.add("  python -c pass (reference)", st.median, "s", st, key="python_start")
    rep.note("the package's byte-code was compiled first (as pip install does)" if compiled else
             "the package's byte-code could not be compiled: each start compiles its modules")

    # 7. cohort of synthetic patients, one core
    rep.section("7")
    t0 = time.perf_counter()
    cohort, summary = synthetic_cohort(pr, COHORT_SIZE)
    build_s = time.perf_counter() - t0

    def run_cohort() -> None:
        for p in cohort:
            plan(p, pr, AS_OF)

    gc.collect()
    st = timed(run_cohort, 3 if args.quick else max(7, repeats - 2))
    per_patient_us = st.median / COHORT_SIZE * 1e6
    est_floor = ex_floor / n_items[example] * summary["items_mean"]
    rep.add(f"cohort: plan {COHORT_SIZE:,} synthetic patients (total)", st.median, "s", st, key="cohort_total")
    rep.add("  patients per second, one core", COHORT_SIZE / st.median, "patients/s", key="cohort_rate")
    rep.add("  per patient", per_patient_us, "µs", ratio=per_patient_us / est_floor, key="cohort_per_patient")
    risk = ", ".join(f"{k} {v}" for k, v in sorted(summary["risk"].items(), key=lambda kv: str(kv[0])))
    rep.note(f"cohort: {risk}; {summary['pending']} with a pending decision; "
             f"{summary['events_mean']:.1f} events and {summary['items_mean']:.0f} items per patient on average")
    rep.note(f"per-patient ratio: against the floor per item × mean items; "
             f"building + validating the cohort took {build_s:.1f} s (not timed)"
             + (f"; {summary['fallbacks']} fell back to no events" if summary["fallbacks"] else ""))

    elapsed = time.perf_counter() - started
    verdicts = Counter(r["verdict"] for r in rep.rows if r["verdict"])
    print()
    print(f"budgets: {verdicts.get('PASS', 0)} PASS, {verdicts.get('OVER', 0)} OVER · "
          f"total bench time {elapsed:.1f} s · compare ratios within one run; absolute figures vary ±30 %")

    if args.json:
        meta["elapsed_s"] = round(elapsed, 2)
        meta["cohort"] = {**summary, "size": COHORT_SIZE, "seed": SEED}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"meta": meta, "rows": rep.rows}, indent=2, ensure_ascii=False) + "\n",
                             encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
