"""Simulation of virtual cohorts (``protocol._simulate``).

- Calibration: the shipped cohort, N = 100,000, reproduces the published figures of the
  blinatumomab infant study within their binomial uncertainty (each check names its figure).
- The compiled table against the ``transitions`` machine: every state, trigger and guard
  outcome; then 1,000 virtual patients walked through both.
- The day arithmetic against ``protocol.plan``; the census against Little's law.
- Results depend only on the seed and N, never on the number of workers.
- The command line: files written and read back (JSON, CSV, PNG, SVG), bad arguments exit 2.
"""

from __future__ import annotations

import copy
import csv
import datetime as dt
import itertools
import json
import math
import struct
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import example, given
from hypothesis import strategies as st
from transitions import MachineError
from typer.testing import CliRunner

import protocol
from protocol._cli import app
from protocol._cohort import Cohort, load_cohort
from protocol._machine import OUTCOMES
from protocol._rules import completed_months as scalar_months
from protocol._rules import depends_on
from protocol import _simulate
from protocol._simulate import (
    CHUNK,
    STOPS,
    Compiled,
    InvalidTrigger,
    Simulator,
    completed_months,
    simulate,
    unpack,
    wilson,
)

ROOT = Path(__file__).resolve().parent.parent
PATHS = ROOT / "tests" / "data" / "paths"
COHORTS = ROOT / "tests" / "data" / "cohorts"
SHIPPED = "interfant06-blinatumomab"
SHIPPED_COHORT = ROOT / "examples" / "cohorts" / f"{SHIPPED}.yaml"
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _cohort_data() -> dict[str, Any]:
    return yaml.load(SHIPPED_COHORT.read_text(encoding="utf-8"), Loader=_Loader)  # noqa: S506


def _write(tmp: Path, data: dict[str, Any], name: str) -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- calibration

N_CALIBRATION = 100_000


@pytest.fixture(scope="module")
def calibrated() -> Any:
    return simulate(SHIPPED, str(SHIPPED_COHORT), N_CALIBRATION)


def _row(rows: list[dict[str, Any]], **match: Any) -> dict[str, Any]:
    hits = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    assert len(hits) == 1, (match, rows)
    return hits[0]


# (published figure, how many of how many, how to read the simulated proportion)
PUBLISHED = [
    ("9 of 30 infants were high risk (bassett2023; clinical-facts §5.2)", 9, 30,
     lambda r: _row(r.risk_groups(), risk_group="HR")["proportion"]),
    ("after the blinatumomab cycle 16 of 30 were MRD-negative (bassett2023)", 16, 30,
     lambda r: _row(r.mrd(), timepoint="blinatumomab_day29", category="negative")["proportion"]),
    ("after the blinatumomab cycle 12 of 30 were MRD-positive below 5e-4 (bassett2023)", 12, 30,
     lambda r: _row(r.mrd(), timepoint="blinatumomab_day29", category="positive, < 5e-4")["proportion"]),
    ("after the blinatumomab cycle 2 of 30 were at or above 5e-4 (bassett2023)", 2, 30,
     lambda r: _row(r.mrd(), timepoint="blinatumomab_day29", category="≥ 5e-4")["proportion"]),
    ("HSCT in first remission for 8 of the 30 infants (8 of 9 high risk; bassett2023)", 8, 30,
     lambda r: _row(r.reached(), risk_group="all", element="hsct")["proportion"]),
    ("HSCT in first remission for 8 of 9 high-risk infants (bassett2023)", 8, 9,
     lambda r: _row(r.reached(), risk_group="HR", element="hsct")["proportion"]),
    ("none of the 21 medium-risk infants needed HSCT for persistent MRD (bassett2023)", 0, 21,
     lambda r: _row(r.reached(), risk_group="MR", element="hsct")["proportion"]),
    ("3 of the 4 relapses happened on the protocol path (IB, maintenance ×2; the 4th after HSCT; bassett2023)",
     3, 30, lambda r: sum(x["proportion"] for x in r.paths() if x["kind"] == "stopped"
                          and x["end"].startswith("relapse"))),
    ("1 death in first remission, before HSCT (bassett2023)", 1, 30,
     lambda r: sum(x["proportion"] for x in r.paths() if x["kind"] == "stopped" and x["end"].startswith("death"))),
]


@pytest.mark.parametrize(("figure", "k", "n", "read"), PUBLISHED, ids=[p[0][:60] for p in PUBLISHED])
def test_shipped_cohort_matches_the_published_figure(calibrated: Any, figure: str, k: int, n: int, read: Any) -> None:
    lo, hi = wilson(k, n)
    simulated = read(calibrated)
    assert lo <= simulated <= hi, (f"{figure}: simulated {simulated:.4f} outside the published figure's 95 % "
                                   f"Wilson interval [{lo:.4f}, {hi:.4f}]")


def test_calibration_is_tight_where_the_cohort_file_fixes_a_share(calibrated: Any) -> None:
    """The MRD shares after blinatumomab are drawn as 16/30, 12/30 and 2/30 exactly: with
    100,000 patients the simulated shares must sit within 4 standard errors of them."""
    for category, k in (("negative", 16), ("positive, < 5e-4", 12), ("≥ 5e-4", 2)):
        p = k / 30
        se = math.sqrt(p * (1 - p) / N_CALIBRATION)
        got = _row(calibrated.mrd(), timepoint="blinatumomab_day29", category=category)["proportion"]
        assert abs(got - p) < 4 * se, (category, got, p)
    # The high-risk share the age, WBC and prednisone assumptions were tuned to: 9/30.
    hr = _row(calibrated.risk_groups(), risk_group="HR")["proportion"]
    assert abs(hr - 0.3) < 0.01


def test_paths_of_the_shipped_cohort(calibrated: Any) -> None:
    rows = calibrated.paths()
    paths = [r for r in rows if r["kind"] == "path"]
    assert [r["path"] for r in paths] == [1, 2]  # every enumerated path, nothing else
    assert paths[0]["end"] == "hsct" and paths[1]["end"] == "maintenance"
    total = sum(r["n"] for r in rows)
    assert total == calibrated.eligible == N_CALIBRATION
    # Branches at the pre-OCTADAD decision add up to the patients who reached it.
    br = [r for r in calibrated.branches() if r["decision"] == "pre_octadad"]
    assert len(br) == 2 and br[0]["of"] == br[1]["of"] and br[0]["n"] + br[1]["n"] == br[0]["of"]
    assert br[0]["condition"] == "risk group = HR or MRD at pre_octadad ≥ 5e-4"


def test_durations_and_start_days_follow_the_protocol(calibrated: Any) -> None:
    p = protocol.load_protocol(SHIPPED)
    by_end = {r["end"]: r for r in calibrated.durations()}
    # Maintenance ends at the fixed end of therapy, 104 weeks after diagnosis, whatever the delays.
    assert by_end["maintenance"]["min"] == by_end["maintenance"]["max"] == p.eot_days
    starts = {r["element"]: r for r in calibrated.element_starts()}
    assert starts["induction"]["min"] == starts["induction"]["max"] == 0
    # Induction 35 days, blinatumomab 29, IB 29, MARMA 49 (the definition's lengths), plus 0-7
    # days before each later course and 0-28 before HSCT (the cohort's delays).
    assert starts["blinatumomab"]["min"] == 35 and starts["blinatumomab"]["max"] == 35 + 7
    assert starts["marma"]["min"] == 35 + 29 + 29 and starts["marma"]["max"] == 35 + 29 + 29 + 21
    assert starts["hsct"]["min"] == 35 + 29 + 29 + 49 and starts["hsct"]["max"] == 35 + 29 + 29 + 49 + 21 + 28


# --------------------------------------------------------------------------- table = machine

DEFINITIONS = [SHIPPED, "arms", "gap", "undecided", "shadowed", "contradictory-path", "risk-contradiction",
               "same-arm-twice"]


def _load(name: str) -> protocol.Protocol:
    return protocol.load_protocol(SHIPPED if name == SHIPPED else PATHS / f"{name}.yaml")


def _witnesses(c: Compiled, p: protocol.Protocol, keys: list[str]) -> list[dict[str, Any]]:
    """Fact assignments that put every guard on every side: each category, each threshold,
    just below and just above it, and unknown."""
    thresholds: dict[str, set[float]] = {k: set() for k in keys}

    def walk(cond: Any) -> None:
        for x in [*(cond.all_ or ()), *(cond.any_ or ())]:
            walk(x)
        if cond.not_ is not None:
            walk(cond.not_)
        if cond.fact is not None or cond.mrd is not None or cond.arm is not None:
            key = cond.fact if cond.fact is not None else ("mrd:" + cond.mrd if cond.mrd else "arm:" + cond.arm)
            if key in thresholds and cond.op[0] in ("lt", "lte", "gt", "gte"):
                thresholds[key].add(float(cond.op[1].value))

    for t in p.definition.transitions:
        if t.when is not None:
            walk(t.when)
    choices = []
    for key in keys:
        enc = c.encoding(key)
        if enc is not None:
            choices.append([*enc, None])
        else:
            vals: set[float] = set()
            for t in thresholds[key]:
                vals.update({t, t * 0.999, t * 1.001, t - 1, t + 1})
            choices.append([v for v in sorted(vals) if v >= 0] + [None])
    out = []
    for combo in itertools.product(*choices):
        out.append({k: v for k, v in zip(keys, combo, strict=True) if v is not None})
    return out


def _machine(p: protocol.Protocol, state: str, trigger: str, facts: dict[str, Any]) -> Any:
    cursor = p.cursor(facts)
    cursor.state = state
    event = p.machine.events.get(trigger)
    if event is None:
        return "invalid"
    try:
        moved = event.trigger(cursor)
    except MachineError:
        return "invalid"
    return cursor.state if moved else None


@pytest.mark.parametrize("name", DEFINITIONS)
def test_table_and_machine_agree_on_every_state_trigger_and_guard_outcome(name: str) -> None:
    p = _load(name)
    c = Compiled(p)
    triggers = sorted({*p.machine.events, *(f"start_{e}" for e in p.elements), *OUTCOMES})
    outcomes_seen: dict[int, set[int]] = {e.index: set() for e in c.edges if e.vector is not None}
    checked = 0
    for si, state in enumerate(c.states):
        out = c.out[si] if si < c.E else ()
        keys = sorted({k for e in out if e.vector is not None for k in depends_on(
            next(x for x in p.table[state] if x.dest == c.names[e.dest]).condition)})
        for facts in _witnesses(c, p, keys):
            cols = c.columns([facts])
            tri = []
            for e in out:
                if e.vector is None:
                    tri.append(2)
                    continue
                scalar = e.scalar(facts)  # the closure the machine's condition calls
                vector = int(e.vector(cols)[0])
                assert vector == {False: 0, None: 1, True: 2}[scalar], (state, facts)
                outcomes_seen[e.index].add(vector)
                tri.append(vector)
            for trigger in triggers:
                expected = _machine(p, state, trigger, facts)
                try:
                    got: Any = c.fire(si, trigger, tri)
                    got = None if got is None else c.states[got]
                except InvalidTrigger:
                    got = "invalid"
                assert got == expected, (name, state, trigger, facts, tri)
                checked += 1
    # Every guard was seen true, false and unknown (in "undecided", MR is the only risk group:
    # "risk group = MR" cannot be false, only unknown).
    for index, seen in outcomes_seen.items():
        assert seen == ({1, 2} if name == "undecided" and index == 0 else {0, 1, 2}), (name, c.edges[index])
    assert checked > len(c.states) * len(triggers)


def _variant_cohort(tmp: Path) -> Path:
    """The shipped cohort widened so that the 1,000 patients cover every rule: some
    ineligible (germline, a year old), prednisone response derived from day-8 blasts, MRD
    before OCTADAD on both sides of 5e-4, events in several elements."""
    data = _cohort_data()
    data["facts"]["kmt2a"] = {"categories": {"rearranged": 0.9, "germline": 0.1}, "evidence": "assumption",
                              "note": "test: some ineligible"}
    data["facts"]["age_at_diagnosis_days"]["uniform"] = {"low": 0, "high": 420}
    del data["facts"]["prednisone_response"]
    data["facts"]["day8_blasts_per_ul"] = {"lognormal": {"median": 800, "sigma": 1.0}, "evidence": "assumption",
                                           "note": "test: derive the response"}
    data["mrd"]["pre_octadad"] = {"lognormal": {"median": 2e-4, "sigma": 2.0}, "negative": 0.3,
                                  "evidence": "assumption", "note": "test: both branches"}
    data["events"]["induction"] = {"off_protocol": {"per_day": 0.002, "evidence": "assumption", "note": "test x"}}
    return _write(tmp, data, "variant")


@pytest.mark.parametrize("case", ["shipped-variant", "arms", "undecided"])
def test_1000_virtual_patients_walk_the_machine_as_the_table(tmp_path: Path, case: str) -> None:
    if case == "shipped-variant":
        p = protocol.load_protocol(SHIPPED)
        cohort = load_cohort(_variant_cohort(tmp_path), p)
    else:
        p = _load(case)
        cohort = load_cohort(COHORTS / f"{case}.yaml", p)
    sim = Simulator(p, cohort)
    c = sim.compiled
    tally, raw = sim.chunk(3, 1000, 12345, keep=True)
    cols = {k: v for k, v in raw["cols"].items() if not k.startswith("_")}
    eligible = raw["cols"]["_eligible"]
    ends: set[str] = set()
    for i in range(1000):
        facts = c.decode(cols, i)
        risk_code = facts.pop("risk_group", None)
        # Derived facts, eligibility and risk group as the scheduler's RuleSet computes them.
        given = {k: v for k, v in facts.items() if k not in {d.id for d in p.definition.derived_facts}
                 or k in cohort.facts}
        assert p.rules.derive(given) == []
        assert given == facts
        assert (not p.rules.ineligible(facts)) == bool(eligible[i])
        if not eligible[i]:
            assert raw["end"][i] == -1
            continue
        risk = p.rules.stratify(facts)
        assert risk.group == risk_code
        if risk.group is not None:
            facts["risk_group"] = risk.group
        seq = [c.names[j] for j in c.topo if raw["visited"][i] >> j & 1]
        end = int(raw["end"][i])
        end_name = c.names[end] if end < c.E else STOPS[end - c.E]
        ends.add(end_name)
        state = p.initial
        for step, here in enumerate(seq):
            assert state == here
            if step == len(seq) - 1 and end_name in OUTCOMES:
                assert _machine(p, here, end_name, facts) == end_name
                break
            if p.elements[here].final:
                assert end_name == here
                break
            allowed = [d for d in p.elements if _machine(p, here, f"start_{d}", facts) == d]
            if end_name == "no_transition" and step == len(seq) - 1:
                assert allowed == []
                break
            if end_name == "undecided" and step == len(seq) - 1:
                unknown = [e for e in p.table[here] if e.guard is not None and e.guard(facts) is None]
                assert allowed and unknown
                break
            assert allowed == [seq[step + 1]], (i, facts, here, allowed, seq)
            state = seq[step + 1]
    expected = {"shipped-variant": {"hsct", "maintenance", "relapse", "death", "off_protocol"},
                "arms": {"tx", "maint", "relapse", "death", "off_protocol"},
                "undecided": {"c", "no_transition", "undecided"}}[case]
    assert expected <= ends, ends  # the 1,000 patients covered every way a path can end
    assert tally.n == 1000


# --------------------------------------------------------------------------- days

_ZERO_DELAYS_MR = {
    "kmt2a": {"fixed": "rearranged", "evidence": "assumption", "note": "test: one patient profile"},
    "age_at_diagnosis_days": {"fixed": 196, "evidence": "assumption", "note": "test: the conftest patient"},
    "wbc_at_diagnosis": {"fixed": 150, "evidence": "assumption", "note": "test: the conftest patient"},
    "prednisone_response": {"fixed": "good", "evidence": "assumption", "note": "test: the conftest patient"},
}


@pytest.mark.parametrize("risk", ["MR", "HR"])
def test_start_days_without_delays_are_the_plans(tmp_path: Path, make_patient: Any, risk: str) -> None:
    data = _cohort_data()
    data["facts"] = copy.deepcopy(_ZERO_DELAYS_MR)
    if risk == "HR":
        data["facts"]["age_at_diagnosis_days"]["fixed"] = 100
        data["facts"]["wbc_at_diagnosis"]["fixed"] = 400
    data["delays"] = {}
    data["events"] = {}
    result = simulate(SHIPPED, str(_write(tmp_path, data, "fixed")), 50)
    if risk == "MR":
        patient = make_patient()  # conftest's medium-risk infant, diagnosed 2026-05-04
    else:
        patient = make_patient(birth_date="2026-01-24", wbc_at_diagnosis=400)
    plan = protocol.plan(protocol.load_patient(patient), as_of=dt.date(2026, 5, 4))
    assert plan.risk.group == risk
    diagnosis = dt.date(2026, 5, 4)
    planned = {span.id: (span.planned_start - diagnosis).days for span in plan.elements}
    starts = {r["element"]: r for r in result.element_starts() if r["n"]}
    # The plan projects both branches of the pending decision; the cohort's MRD picks one.
    for element, row in starts.items():
        assert row["min"] == row["max"] == planned[element], element
    if risk == "MR":
        assert set(starts) == {"induction", "blinatumomab", "ib", "marma", "octadad", "maintenance"}
        end = next(s for s in plan.elements if s.id == "maintenance").planned_end
        assert end is not None
        maintenance = _row(result.durations(), end="maintenance")
        assert maintenance["min"] == maintenance["max"] == (end - diagnosis).days + 1
    else:
        assert "hsct" in starts and "octadad" not in starts


@given(st.integers(0, 800), st.dates(dt.date(2020, 1, 1), dt.date(2030, 12, 31)))
@example(28, dt.date(2025, 2, 28))  # born 31 January: one month on the last day of February
@example(29, dt.date(2024, 2, 29))  # the same in a leap year
@example(30, dt.date(2025, 4, 30))  # born 31 March
@example(365, dt.date(2025, 2, 28))  # born 29 February 2024
def test_vectorised_completed_months_match_the_rules(age: int, diagnosis: dt.date) -> None:
    birth = diagnosis - dt.timedelta(days=age)
    got = completed_months(np.array([age]), np.array([diagnosis.toordinal()]))
    assert int(got[0]) == scalar_months(birth, diagnosis)


# --------------------------------------------------------------------------- census


def test_census_obeys_littles_law() -> None:
    """On the plateau of a long enrolment, the expected number in an element is the arrival
    rate times the mean days a patient spends in it (Little's law): a check of the enrolment
    window arithmetic against the plain total of the simulated days in each element."""
    p = _load("arms")
    cohort = load_cohort(COHORTS / "arms.yaml", p)
    data = cohort.model_dump(by_alias=True)
    data["census"]["enrolment_months"] = 60
    long = Cohort.model_validate(data)
    result = simulate(p, long, 40_000)
    census = result.census()
    assert census is not None
    rate = 4 / (365.25 / 12)
    occupancy = np.cumsum(result.tally.occupancy, axis=1)[:, :-1].sum(axis=1) / result.eligible  # mean days in
    week = 150  # well inside the plateau (therapy < 40 weeks, enrolment 260 weeks)
    for i, name in enumerate(result.simulator.compiled.names):
        expected = census["elements"][name]["expected"][week]
        assert expected == pytest.approx(rate * occupancy[i], abs=5.1e-5), name  # printed to 4 decimals
    # Starts per week on the plateau: the rate times the share who start the element.
    reached = {r["element"]: r["proportion"] for r in result.reached() if r["risk_group"] == "all"}
    for name, series in census["elements"].items():
        assert series["starts"][week] == pytest.approx(7 * rate * reached[name], abs=5.1e-5)
        assert series["upper95"][week] >= math.floor(series["expected"][week])


# --------------------------------------------------------------------------- determinism and scale


def _stable(result: Any) -> str:
    return json.dumps(result.to_dict(), sort_keys=True)


def test_results_depend_on_seed_and_n_not_on_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    p = _load("arms")
    cohort = load_cohort(COHORTS / "arms.yaml", p)
    n = 3 * CHUNK + 1234  # four chunks, the last one short
    one = simulate(p, cohort, n, workers=1)
    assert simulate(p, cohort, n, workers=2).workers == 1  # too short a run to start a worker
    monkeypatch.setattr(_simulate, "POOL_MIN_CHUNKS", 1)
    monkeypatch.setattr(_simulate, "MAIN_WORKS", False)  # the spawned worker computes every chunk
    ticks: list[int] = []
    two = simulate(p, cohort, n, workers=2, progress=ticks.append)
    assert two.workers == 2
    assert sorted(ticks) == sorted([CHUNK] * 3 + [1234])  # the progress bar hears of every chunk
    assert _stable(one) == _stable(two)
    assert one.tally.trajectories == two.tally.trajectories
    assert np.array_equal(one.tally.occupancy, two.tally.occupancy)
    other_seed = simulate(p, cohort, n, seed=cohort.seed + 1)
    assert _stable(other_seed) != _stable(one)
    # The first chunks of a larger N are the same patients: only the added chunk differs.
    fewer = simulate(p, cohort, 3 * CHUNK)
    assert fewer.tally.n == 3 * CHUNK and _stable(fewer) != _stable(one)


def test_memory_is_flat_in_n() -> None:
    p = _load("arms")
    cohort = load_cohort(COHORTS / "arms.yaml", p)
    small = simulate(p, cohort, 100)
    large = simulate(p, cohort, 5 * CHUNK)

    def size(t: Any) -> int:
        arrays = [t.risk, t.edges, t.starts, t.occupancy, t.durations, *t.mrd.values(), *t.arms.values()]
        return sum(a.nbytes for a in arrays)

    assert size(small.tally) == size(large.tally)
    # One entry per distinct (path, end, risk group): bounded by the protocol, not by N.
    assert len(large.tally.trajectories) <= 4 * 2 * (len(OUTCOMES) + 2 + 6)
    assert all(unpack(k)[0] > 0 for k in large.tally.trajectories)


def test_wilson_interval_textbook_values() -> None:
    """Newcombe, Stat Med 1998;17:857, table I (score method without continuity correction)."""
    for (k, n), (lo, hi) in {(81, 263): (0.2553, 0.3662), (15, 148): (0.0624, 0.1605),
                             (0, 20): (0.0, 0.1611), (1, 29): (0.0061, 0.1718)}.items():
        got = wilson(k, n)
        assert got == pytest.approx((lo, hi), abs=5e-5), (k, n)
    assert wilson(0, 0) == (0.0, 1.0)
    assert wilson(5, 5)[1] == 1.0


# --------------------------------------------------------------------------- command line


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_simulate_command_writes_json_csv_and_figures(tmp_path: Path) -> None:
    out = tmp_path / "sim"
    r = CliRunner().invoke(app, ["simulate", SHIPPED, "--cohort", str(SHIPPED_COHORT), "--n", "20000",
                                 "--seed", "5", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "paths:" in r.stdout and "hsct" in r.stdout and "wrote 17 files" in r.stderr
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["seed"] == 5 and summary["n"] == 20000 and summary["protocol"]["id"] == SHIPPED
    with (out / "paths.csv").open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sum(int(x["n"]) for x in rows) == 20000
    assert all(float(x["ci_low"]) <= float(x["proportion"]) <= float(x["ci_high"]) for x in rows)
    with (out / "census.csv").open(encoding="utf-8", newline="") as fh:
        census = list(csv.DictReader(fh))
    weeks = summary["census"]["weeks"]
    assert len(census) == weeks * 7 and {x["element"] for x in census} == set(protocol.load_protocol(SHIPPED).elements)
    for name in ("paths", "census", "durations"):
        width, height = _png_size((out / f"{name}.png").read_bytes())
        assert width > 300 and height > 200
        svg = ET.parse(out / f"{name}.svg").getroot()
        assert svg.tag.endswith("svg")
        texts = "".join(t.text or "" for t in svg.iter() if t.tag.endswith("text"))
        assert "Date" not in texts
    # Same seed and N: byte-identical outputs (figures included).
    again = tmp_path / "again"
    CliRunner().invoke(app, ["simulate", SHIPPED, "--cohort", str(SHIPPED_COHORT), "--n", "20000",
                             "--seed", "5", "--out", str(again)])
    for f in sorted(out.iterdir()):
        assert f.read_bytes() == (again / f.name).read_bytes(), f.name


def test_simulate_command_json_and_bad_arguments(tmp_path: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(app, ["simulate", SHIPPED, "--cohort", str(SHIPPED_COHORT), "--n", "500", "--json"])
    assert r.exit_code == 0
    assert json.loads(r.stdout)["n"] == 500
    for args in (["--n", "0"], ["--workers", "0"], ["--seed", "-1"]):
        bad = runner.invoke(app, ["simulate", SHIPPED, "--cohort", str(SHIPPED_COHORT), *args])
        assert bad.exit_code == 2, args
    afile = tmp_path / "file.txt"
    afile.write_text("x", encoding="utf-8")
    r = runner.invoke(app, ["simulate", SHIPPED, "--cohort", str(SHIPPED_COHORT), "--n", "10", "--out", str(afile)])
    assert r.exit_code == 2 and "expected a folder" in r.stderr
    under = runner.invoke(app, ["simulate", SHIPPED, "--cohort", str(SHIPPED_COHORT), "--n", "10",
                                "--out", str(afile / "sim")])
    assert under.exit_code == 2 and "cannot create the folder" in under.stderr
    nested = tmp_path / "new" / "nested"
    made = runner.invoke(app, ["simulate", SHIPPED, "--cohort", str(SHIPPED_COHORT), "--n", "10", "--out", str(nested)])
    assert made.exit_code == 0 and (nested / "summary.json").is_file()
    other = runner.invoke(app, ["simulate", str(PATHS / "arms.yaml"), "--cohort", str(SHIPPED_COHORT)])
    assert other.exit_code == 2 and "this cohort is for interfant06-blinatumomab" in other.stderr


# --------------------------------------------------------------------------- every shipped protocol


def _generic_cohort(p: protocol.Protocol) -> Cohort:
    """A cohort that gives every fact, MRD result and arm the protocol's rules read a broad
    distribution (not clinical: it only has to reach every branch)."""
    from protocol._cohort import _reads
    from protocol._rules import FACTS

    note = {"evidence": "assumption", "note": "test: broad, not clinical"}
    facts: dict[str, Any] = {}
    mrd: dict[str, Any] = {}
    arms: dict[str, Any] = {}
    for key, _ in _reads(p):
        if key == "risk_group":
            continue
        if key.startswith("mrd:"):
            mrd[key[4:]] = {"lognormal": {"median": 1e-4, "sigma": 2.0}, "negative": 0.3, **note}
        elif key.startswith("arm:"):
            names = p.randomisations[key[4:]]
            arms[key[4:]] = {"categories": {a: f"1/{len(names)}" for a in names}, **note}
        elif key.startswith("age_at_diagnosis"):
            facts["age_at_diagnosis_days"] = {"uniform": {"low": 0, "high": 3650}, **note}
        elif FACTS[key].kind == "categorical":
            values = FACTS[key].values
            facts[key] = {"categories": {v: f"1/{len(values)}" for v in values}, **note}
        else:
            facts[key] = {"lognormal": {"median": 100, "sigma": 1.5}, **note}
    data = {"title": f"generic cohort for {p.id}", "seed": 99, "facts": facts, "mrd": mrd, "arms": arms,
            "census": {"rate_per_month": 2, "enrolment_months": 24, **note}}
    return Cohort.model_validate(data)


@pytest.mark.parametrize("path", sorted((ROOT / "protocol" / "definitions").glob("*.yaml")), ids=lambda x: x.stem)
def test_every_shipped_protocol_simulates_onto_its_enumerated_paths(path: Path) -> None:
    from protocol._cohort import check_cohort

    p = protocol.load_protocol(path)
    cohort = _generic_cohort(p)
    assert check_cohort(cohort, p) == []
    result = simulate(p, cohort, 20_000)
    rows = result.paths()
    assert sum(r["n"] for r in rows) == result.eligible > 0
    completed = [r for r in rows if r["kind"] == "path"]
    # Every simulated path to a final element is one the symbolic enumeration found.
    assert all(r["path"] is not None for r in completed), [r for r in completed if r["path"] is None]
    assert sum(r["n"] for r in completed) > 0
    for b in result.branches():
        assert b["n"] <= b["of"]
    census = result.census()
    assert census is not None and census["weeks"] > 0
