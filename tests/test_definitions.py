"""The related protocols (issue 6): interfant06, blinatumomab-bridge-hsct, aall1731, interfant21.

Per protocol, the structural facts the issue names, asserted on the loaded protocol and on the
plans of synthetic patients (patient files written to ``tmp_path``); the evidence levels
against ``clinical-facts.md`` (every value it does not mark verified is a placeholder); the
example patients; and the README's table of evidence counts.
"""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

import protocol
from protocol._documents import render_roadmap
from protocol._loading import evidence_counts
from .conftest import plausible_measurement
from protocol._machine import walk_values

ROOT = Path(__file__).resolve().parent.parent
AS_OF = dt.date(2026, 11, 21)
D = dt.date.fromisoformat
NEW = ("interfant06", "blinatumomab-bridge-hsct", "aall1731", "interfant21")
EXAMPLES = sorted((ROOT / "examples" / "patients").glob("*.yaml"))
INELIGIBLE = ROOT / "tests" / "data" / "protocols" / "aall1731-ineligible-age.yaml"

Write = Callable[..., Path]


@pytest.fixture
def write(tmp_path: Path) -> Write:
    """``write(protocol_id, **fields)``: a patient file in tmp_path (dates as ISO strings)."""
    counter = {"n": 0}

    def make(pid: str, **fields: Any) -> Path:
        counter["n"] += 1
        data = {"id": f"T-{counter['n']:04d}", "protocol": pid, "sex": "female", **fields}
        path = tmp_path / f"{pid}-{counter['n']}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
        return path

    return make


def _plan(path: Path, as_of: dt.date = AS_OF) -> protocol.Plan:
    return protocol.plan(path, as_of=as_of)


def _spans(plan: protocol.Plan, branch: str | None = "any") -> list[str]:
    return [e.id for e in plan.elements if branch == "any" or e.branch == branch]


def _span(plan: protocol.Plan, eid: str) -> Any:
    found = [e for e in plan.elements if e.id == eid]
    assert len(found) == 1, (eid, [(e.id, e.branch) for e in plan.elements])
    return found[0]


def _started(*pairs: tuple[str, str, str | None]) -> list[dict[str, str]]:
    """Events: (element, start, completion or None) in order."""
    events = []
    for element, start, end in pairs:
        events.append({"type": "element_started", "element": element, "date": start})
        if end is not None:
            events.append({"type": "element_completed", "element": element, "date": end})
    return events


def _values(pid: str) -> dict[str, list[Any]]:
    """Every sourced value of a definition as written, by readable label (``a › b › field``)."""
    out: dict[str, list[Any]] = {}
    for _, label, value in walk_values(protocol.load_protocol(pid).source):
        out.setdefault(" › ".join(label), []).append(value)
    return out


def _value(pid: str, label: str) -> Any:
    found = _values(pid)[label]
    assert len(found) == 1, (label, found)
    return found[0]


# =========================================================================== all four


@pytest.mark.parametrize("pid", NEW)
def test_definition_is_a_sourced_draft(pid: str) -> None:
    p = protocol.load_protocol(pid)
    assert p.definition.status == "draft"
    keys = {s.key for s in p.source.sources}
    assert len(keys) >= 2
    # Every published or derived value names a source of the bibliography; the notes say what
    # is not known (the file header and element notes).
    for label, values in _values(pid).items():
        for v in values:
            if v.evidence != "placeholder":
                assert v.source in keys, label
    text = (ROOT / "protocol" / "definitions" / f"{pid}.yaml").read_text(encoding="utf-8")
    assert re.search(r"NOT known|not known|NOT in the public sources|not in the sources read", text)


@pytest.mark.parametrize("pid", NEW)
def test_every_new_protocol_has_examples_part_way_through_on_the_test_date(pid: str) -> None:
    examples = [p for p in EXAMPLES if yaml.safe_load(p.read_text(encoding="utf-8"))["protocol"] == pid]
    assert examples, f"no example patient for {pid}"
    for path in examples:
        assert path.name.startswith(pid + "-")
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert all(D(str(e["date"])) <= AS_OF for e in data.get("events", [])), path.name
        plan = _plan(path)
        warnings = [w for w in plan.warnings if not w.startswith("per-m² doses planned before the first birthday")]
        assert plan.outcome is None and not warnings, (path.name, plan.warnings)
        statuses = {e.status for e in plan.elements}
        assert "completed" in statuses or any(e.actual_start for e in plan.elements), path.name
        assert "in_progress" in statuses, path.name  # part-way through on 2026-11-21
        html = render_roadmap(plan, "html")
        assert f"Unverified values in {pid}" in html and "⚠" in html


def test_examples_include_a_pending_randomisation_and_a_recorded_arm() -> None:
    pending = _plan(ROOT / "examples/patients/interfant06-hr-pending-randomisation.yaml")
    assert [d.id for d in pending.decisions if d.status == "pending"] == ["consolidation"]
    recorded = _plan(ROOT / "examples/patients/interfant06-mr-randomised.yaml")
    assert recorded.facts["arm:consolidation"] == "ade_mae"
    assert not [d for d in recorded.decisions if d.status == "pending"]


def _readme_rows() -> dict[str, tuple[int, int, int]]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("### Shipped protocols", 1)[1]
    rows = {}
    for m in re.finditer(r"^\| `([a-z0-9-]+)` \| [^|]+ \| [^|]+ \| (\d+) \| (\d+) \| (\d+) \|", section, re.M):
        rows[m.group(1)] = (int(m.group(2)), int(m.group(3)), int(m.group(4)))
    return rows


@pytest.mark.parametrize("pid", NEW)
def test_readme_counts_are_those_validate_prints(pid: str) -> None:
    counts = evidence_counts(protocol.load_protocol(pid))
    out = subprocess.run([sys.executable, "-m", "protocol", "validate",
                          str(ROOT / "protocol" / "definitions" / f"{pid}.yaml")],
                         capture_output=True, text=True, encoding="utf-8", timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    printed = re.search(r"values: (\d+) published, (\d+) derived, (\d+) placeholder", out.stdout)
    assert printed is not None
    expected = (counts["published"], counts["derived"], counts["placeholder"])
    assert tuple(map(int, printed.groups())) == expected
    assert _readme_rows().get(pid) == expected


# =========================================================================== interfant06

I06_MR = {"birth_date": "2025-11-01", "diagnosis_date": "2026-05-04", "kmt2a": "rearranged",
          "wbc_at_diagnosis": 150, "day8_blasts_per_ul": 300,
          "measurements": [{"date": "2026-05-04", "height_cm": 66, "weight_kg": 7.4}]}
I06_THROUGH_MARMA = _started(("induction", "2026-05-04", "2026-06-07"), ("ib", "2026-06-08", "2026-07-06"),
                             ("marma", "2026-07-07", "2026-08-24"))
I06_ARM_IB = {"type": "randomised", "randomisation": "consolidation", "arm": "ib", "date": "2026-06-05"}


def test_interfant06_structure() -> None:
    p = protocol.load_protocol("interfant06")
    assert list(p.elements) == ["induction", "ib", "ade", "mae", "marma", "octadad", "maintenance", "hsct"]
    assert p.randomisations == {"consolidation": ("ib", "ade_mae")}
    assert [e.dest for e in p.table["induction"]] == ["ade", "ib"]
    assert [e.dest for e in p.table["ade"]] == ["mae"]
    assert [e.dest for e in p.table["mae"]] == [e.dest for e in p.table["ib"]] == ["marma"]
    assert [e.dest for e in p.table["marma"]] == ["hsct", "octadad"]
    assert [g.id for g in p.definition.risk_groups] == ["LR", "HR", "MR"]
    assert p.eot_anchor == "diagnosis"


@pytest.mark.parametrize(("fields", "group"), [
    ({"kmt2a": "germline"}, "LR"),
    ({"birth_date": "2026-01-10", "wbc_at_diagnosis": 420}, "HR"),           # < 6 months, WBC >= 300
    ({"birth_date": "2026-01-10", "day8_blasts_per_ul": 2400}, "HR"),        # < 6 months, poor response
    ({"wbc_at_diagnosis": 420}, "MR"),                                        # 6 months old: not HR
    ({}, "MR"),
])
def test_interfant06_risk_groups(write: Write, fields: dict[str, Any], group: str) -> None:
    assert _plan(write("interfant06", **{**I06_MR, **fields})).risk.group == group


def test_interfant06_refuses_a_one_year_old(write: Write) -> None:
    with pytest.raises(protocol.IneligibleError, match="younger than 1 year"):
        _plan(write("interfant06", **{**I06_MR, "birth_date": "2025-04-01"}))


@pytest.mark.parametrize("group_fields", [{}, {"birth_date": "2026-01-10", "wbc_at_diagnosis": 420}],
                         ids=["MR", "HR"])
def test_interfant06_randomisation_pending_shows_both_arms(write: Write, group_fields: dict[str, Any]) -> None:
    plan = _plan(write("interfant06", **{**I06_MR, **group_fields}), as_of=D("2026-05-20"))
    pending = [d for d in plan.decisions if d.status == "pending"]
    assert pending[0].id == "consolidation" and pending[0].waiting_for == ("arm:consolidation",)
    # Later, on each arm's branch, MR also waits for the MRD at the start of OCTADAD; HR does not.
    later = {d.id for d in pending[1:]}
    assert later == (set() if group_fields else {"pre_octadad"})
    assert _spans(plan, "consolidation→ib")[:2] == ["ib", "marma"]
    assert _spans(plan, "consolidation→ade")[:3] == ["ade", "mae", "marma"]
    assert {i.status for i in plan.items if i.element in ("ib", "ade", "mae")} == {"pending_decision"}


@pytest.mark.parametrize(("arm", "first", "absent"), [("ade_mae", ["ade", "mae", "marma"], "ib"),
                                                      ("ib", ["ib", "marma"], "ade")])
def test_interfant06_recorded_arm_shows_one_branch(write: Write, arm: str, first: list[str], absent: str) -> None:
    events = [{"type": "randomised", "randomisation": "consolidation", "arm": arm, "date": "2026-05-30"}]
    plan = _plan(write("interfant06", **I06_MR, events=events), as_of=D("2026-06-01"))
    ids = _spans(plan)
    assert ids[1:1 + len(first)] == first
    assert absent not in ids and "mae" not in ids[len(first) + 1:]
    assert all(e.branch is None or not e.branch.startswith("consolidation") for e in plan.elements)
    assert next(d for d in plan.decisions if d.id == "consolidation").status == "decided"


def test_interfant06_lr_gets_ib_without_randomisation_and_no_hsct_rule(write: Write) -> None:
    plan = _plan(write("interfant06", **{**I06_MR, "kmt2a": "germline"}), as_of=D("2026-05-20"))
    assert not [d for d in plan.decisions if d.status == "pending"]
    assert _spans(plan) == ["induction", "ib", "marma", "octadad", "maintenance"]
    # LR never waits for the pre-OCTADAD MRD: the HSCT rule is false without it.
    assert next(d for d in plan.decisions if d.id == "pre_octadad").status == "decided"


@pytest.mark.parametrize(("mrd", "expected"), [(1.0e-4, "hsct"), (3.0e-3, "hsct"), (9.9e-5, "octadad"),
                                               (0.0, "octadad")])
def test_interfant06_mr_goes_to_hsct_only_with_mrd_at_least_1e4(write: Write, mrd: float, expected: str) -> None:
    path = write("interfant06", **I06_MR, events=[I06_ARM_IB, *I06_THROUGH_MARMA],
                 mrd=[{"timepoint": "pre_octadad", "date": "2026-08-24", "value": mrd}])
    plan = _plan(path)
    decision = next(d for d in plan.decisions if d.id == "pre_octadad")
    assert decision.status == "decided" and decision.outcome == expected
    assert ("hsct" in _spans(plan)) == (expected == "hsct")


def test_interfant06_mr_hsct_waits_for_the_start_of_octadad_mrd(write: Write) -> None:
    plan = _plan(write("interfant06", **I06_MR, events=[I06_ARM_IB, *I06_THROUGH_MARMA]))
    decision = next(d for d in plan.decisions if d.id == "pre_octadad")
    assert decision.status == "pending" and decision.waiting_for == ("mrd:pre_octadad",)
    assert {"hsct", "octadad"} <= set(_spans(plan))


def test_interfant06_hr_goes_to_hsct_whatever_the_mrd(write: Write) -> None:
    hr = {**I06_MR, "birth_date": "2026-01-10", "wbc_at_diagnosis": 420}
    plan = _plan(write("interfant06", **hr, events=[I06_ARM_IB, *I06_THROUGH_MARMA],
                       mrd=[{"timepoint": "pre_octadad", "date": "2026-08-24", "value": 0}]))
    assert _spans(plan)[-1] == "hsct" and "octadad" not in _spans(plan)


def test_interfant06_recording_hsct_against_the_rule_is_refused(write: Write) -> None:
    events = [I06_ARM_IB, *I06_THROUGH_MARMA, {"type": "hsct", "date": "2026-08-25"}]
    with pytest.raises(protocol.PatientError, match="hsct"):
        _plan(write("interfant06", **I06_MR, events=events,
                    mrd=[{"timepoint": "pre_octadad", "date": "2026-08-24", "value": 5.0e-5}]))


def test_interfant06_evidence_against_clinical_facts() -> None:
    pid = "interfant06"
    # §4: MRD >= 1e-4 at the start of OCTADAD is verified (ASH 2018).
    hsct = next(e for e in protocol.load_protocol(pid).table["marma"] if e.dest == "hsct")
    assert "1e-4" in hsct.text and hsct.guard is not None
    threshold = _value(pid, "gte")
    assert (threshold.value, threshold.evidence, threshold.source) == (1.0e-4, "published", "pieters2018")
    # §2: HR WBC >= 300 and < 6 months are verified.
    assert _value(pid, "HR › gte").evidence == _value(pid, "HR › lt").evidence == "published"
    # §3.4 / §3.5: ADE and MAE doses, days and lengths are '?': placeholders without a value
    # (a length cannot be null, so it is a planning value marked placeholder).
    for block, drugs in (("ade", ("cytarabine", "daunorubicin", "etoposide")),
                         ("mae", ("mitoxantrone", "cytarabine", "etoposide"))):
        assert _value(pid, f"{block} › length_days").evidence == "placeholder"
        for drug in drugs:
            amount, days = _value(pid, f"{block} › {drug} › amount"), _value(pid, f"{block} › {drug} › days")
            assert amount.evidence == days.evidence == "placeholder"
            assert amount.value is None and days.value is None
    # §3.6: MARMA high-dose cytarabine 3000 mg/m² is recalled (R?).
    assert _value(pid, "marma › cytarabine_hd › amount").evidence == "placeholder"
    # §3.3: IB cyclophosphamide 1000 mg/m² is verified for BFM only.
    assert _value(pid, "ib › cyclophosphamide › amount").evidence == "placeholder"
    # §3.8: 104 weeks of therapy is R?.
    assert _value(pid, "weeks").evidence == "placeholder"
    # §2: day-8 prednisone response is V for BFM, P for Interfant-06.
    assert _value(pid, "induction › day8_blasts › days").evidence == "placeholder"


# =========================================================================== bridge

BRIDGE = {"birth_date": "2025-07-10", "diagnosis_date": "2026-03-02", "treatment_start": "2026-10-05",
          "kmt2a": "rearranged", "wbc_at_diagnosis": 95,
          "measurements": [{"date": "2026-10-01", "height_cm": 74, "weight_kg": 9.1}],
          "mrd": [{"timepoint": "pre_bridge", "date": "2026-09-28", "value": 3.0e-3}]}


def test_bridge_structure() -> None:
    p = protocol.load_protocol("blinatumomab-bridge-hsct")
    assert list(p.elements) == ["blinatumomab", "hsct", "blinatumomab_2"]
    # Up to two cycles: after cycle 1 a clinical choice, another cycle or HSCT.
    assert [(e.dest, e.decision) for e in p.table["blinatumomab"]] == [
        ("blinatumomab_2", "blinatumomab_after_1"), ("hsct", "blinatumomab_after_1")]
    assert p.choices == {"blinatumomab_after_1"}
    assert p.randomisations["blinatumomab_after_1"] == ("another_cycle", "no_more_cycles")
    assert [e.dest for e in p.table["blinatumomab_2"]] == ["hsct"]
    assert p.elements["hsct"].final and p.elements["blinatumomab_2"].title.endswith("(cycle 2 of 2)")
    assert _value("blinatumomab-bridge-hsct", "blinatumomab › count").value == 2


def test_bridge_two_cycles_with_it_mtx_on_days_15_and_29_then_hsct(write: Write) -> None:
    plan = _plan(write("blinatumomab-bridge-hsct", **BRIDGE, events=[]), as_of=D("2026-10-05"))
    # Until the choice is recorded both are shown: a second cycle then HSCT, or HSCT now.
    assert _spans(plan) == ["blinatumomab", "blinatumomab_2", "hsct", "hsct"]
    [choice] = plan.pending
    assert choice.id == "blinatumomab_after_1" and choice.waiting_for == ("arm:blinatumomab_after_1",)
    one, two = (_span(plan, e) for e in ("blinatumomab", "blinatumomab_2"))
    hsct = next(e for e in plan.elements if e.id == "hsct" and "blinatumomab_2" in (e.branch or ""))
    early = next(e for e in plan.elements if e.id == "hsct" and e is not hsct)
    assert early.planned_start == one.planned_end + dt.timedelta(days=1)
    assert one.planned_start == D("2026-10-05") and one.planned_end == D("2026-11-02")  # 29 days
    assert two.planned_start == one.planned_end + dt.timedelta(days=14)  # 13-day gap (placeholder)
    assert hsct.planned_start == two.planned_end + dt.timedelta(days=1)
    for cycle, start in (("blinatumomab", one.planned_start), ("blinatumomab_2", two.planned_start)):
        it = [i for i in plan.items if i.element == cycle and i.slot.key == "methotrexate_it"]
        assert [i.element_day for i in it] == [15, 29]
        assert [i.date for i in it] == [start + dt.timedelta(days=14), start + dt.timedelta(days=28)]
        assert all(i.route == "IT" and i.evidence == "placeholder" for i in it)  # the IT dose is not known
        blina = [i for i in plan.items if i.element == cycle and i.slot.key == "blinatumomab"]
        assert blina and {i.element_day for i in blina} <= set(range(1, 29))
    # Nothing is planned after transplant starts.
    assert max(i.date for i in plan.items) < hsct.planned_start
    assert max(i.date for i in plan.items if i.branch is None) < early.planned_start


def test_bridge_planning_figure_of_51_days_is_shown(write: Write) -> None:
    p = protocol.load_protocol("blinatumomab-bridge-hsct")
    hsct = p.elements["hsct"].model
    assert hsct.description is not None and "median 51 days (range 34-119)" in hsct.description
    assert "51 days" in (p.definition.description or "")
    plan = _plan(write("blinatumomab-bridge-hsct", **BRIDGE, events=[]), as_of=D("2026-10-05"))
    assert "51 days" in render_roadmap(plan, "html")
    # It is a planning figure, not a gap: HSCT is dated the day after the last cycle.
    assert p.elements["hsct"].gap == 0


@pytest.mark.parametrize(("change", "phrase"), [
    ({"mrd": [{"timepoint": "pre_bridge", "date": "2026-09-28", "value": 0}]}, "persistent"),
    ({"birth_date": "2025-02-01"}, "before the first birthday"),
])
def test_bridge_eligibility(write: Write, change: dict[str, Any], phrase: str) -> None:
    with pytest.raises(protocol.IneligibleError, match=phrase):
        _plan(write("blinatumomab-bridge-hsct", **{**BRIDGE, **change}))


BRIDGE_ONE_CYCLE = _started(("blinatumomab", "2026-10-05", "2026-11-02"))


def test_bridge_hsct_after_one_cycle_can_be_recorded(write: Write) -> None:
    path = write("blinatumomab-bridge-hsct", **BRIDGE, events=[*BRIDGE_ONE_CYCLE, {"type": "hsct", "date": "2026-11-10"}])
    assert _span(_plan(path), "hsct").actual_start == D("2026-11-10")


def test_bridge_hsct_after_one_cycle_records_the_choice(write: Write) -> None:
    # 9 of 11 UK infants went to transplant after one cycle: recording the hsct records the
    # choice (no second cycle), and recording the second cycle's start records the other.
    plan = _plan(write("blinatumomab-bridge-hsct", **BRIDGE, events=[*BRIDGE_ONE_CYCLE,
                                                                       {"type": "hsct", "date": "2026-11-10"}]))
    assert _spans(plan) == ["blinatumomab", "hsct"]
    assert plan.facts["arm:blinatumomab_after_1"] == "no_more_cycles"
    assert [(d.id, d.status, d.outcome) for d in plan.decisions] == [("blinatumomab_after_1", "recorded", "hsct")]
    assert not plan.warnings
    second = _started(("blinatumomab", "2026-10-05", "2026-11-02"), ("blinatumomab_2", "2026-11-16", None))
    plan = _plan(write("blinatumomab-bridge-hsct", **BRIDGE, events=second))
    assert plan.facts["arm:blinatumomab_after_1"] == "another_cycle"
    assert _spans(plan) == ["blinatumomab", "blinatumomab_2", "hsct"]


def test_bridge_evidence_against_clinical_facts() -> None:
    pid = "blinatumomab-bridge-hsct"
    # §8 / §5: IT methotrexate on days 15 and 29 of the cycle is verified for the UK series.
    it = _value(pid, "blinatumomab › methotrexate_it › days")
    assert (it.value, it.evidence, it.source) == ("15, 29", "published", "clesham2020")
    # §8: a single 28-day cycle, a second in 2 of 11: verified.
    assert _value(pid, "blinatumomab › count").evidence == "published"
    assert _value(pid, "blinatumomab › blinatumomab › days").evidence == "published"
    # §8 gives no dose and no interval between cycles: placeholders.
    assert _value(pid, "blinatumomab › blinatumomab › amount").evidence == "placeholder"
    assert _value(pid, "blinatumomab › gap_days").evidence == "placeholder"
    assert _value(pid, "blinatumomab › methotrexate_it › amount").value is None


# =========================================================================== aall1731

A17 = {"birth_date": "2021-03-14", "diagnosis_date": "2026-05-04", "kmt2a": "germline", "wbc_at_diagnosis": 12,
       "cns_status": "CNS1", "measurements": [{"date": "2026-05-04", "height_cm": 112, "weight_kg": 19.5}]}


def _arm(arm: str, date: str = "2026-06-26") -> dict[str, str]:
    return {"type": "randomised", "randomisation": "randomisation", "arm": arm, "date": date}


def test_aall1731_refuses_an_eleven_year_old_with_the_message() -> None:
    with pytest.raises(protocol.IneligibleError) as info:
        _plan(INELIGIBLE)
    messages = " ".join(p.message for p in info.value.problems)
    assert "Not eligible for AALL1731" in messages and "1 to 9 years" in messages
    assert "is 11 completed years" in messages


@pytest.mark.parametrize("command", ["plan", "risk", "roadmap"])
def test_aall1731_ineligible_exits_2_through_the_cli(command: str, tmp_path: Path) -> None:
    args = [sys.executable, "-m", "protocol", command, str(INELIGIBLE), "--as-of", "2026-11-21"]
    if command == "roadmap":
        args += ["-o", str(tmp_path / "r.html")]
    out = subprocess.run(args, capture_output=True, text=True, encoding="utf-8", timeout=60, cwd=ROOT)
    assert out.returncode == 2
    assert "Not eligible for AALL1731" in out.stderr and "1 to 9 years" in out.stderr
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize(("change", "phrase"), [
    ({"birth_date": "2025-11-01"}, "younger than 1 year"),
    ({"birth_date": "2016-05-04"}, "10 years or older"),       # tenth birthday on the diagnosis date
    ({"wbc_at_diagnosis": 50}, "50 000/µL"),
    ({"cns_status": "CNS3"}, "CNS3"),
])
def test_aall1731_eligibility_limits(write: Write, change: dict[str, Any], phrase: str) -> None:
    with pytest.raises(protocol.IneligibleError, match=phrase):
        _plan(write("aall1731", **{**A17, **change}))


def test_aall1731_accepts_ages_1_to_9(write: Write) -> None:
    for birth in ("2025-05-04", "2016-05-05"):  # first birthday on the diagnosis date; 9 years 364 days
        # A height and weight of a real child of that age (the plan refuses WHO-implausible ones).
        m = plausible_measurement("female", D(birth), D("2026-05-04"))
        _plan(write("aall1731", **{**A17, "birth_date": birth, "measurements": [m]}))


def test_aall1731_four_arms_and_strata() -> None:
    p = protocol.load_protocol("aall1731")
    assert p.randomisations == {"randomisation": ("a", "b", "c", "d")}
    assert [e.dest for e in p.table["consolidation"]] == ["blinatumomab_1", "interim_maintenance_1"]
    assert [e.dest for e in p.table["interim_maintenance_1"]] == ["blinatumomab_2", "delayed_intensification"]
    assert (p.eot_anchor, p.eot_anchor_element, p.eot_years) == ("element_start", "interim_maintenance_1", 2)


@pytest.mark.parametrize(("arm", "group", "blina"), [("a", "SR_AVG", False), ("b", "SR_AVG", True),
                                                     ("c", "SR_HIGH", False), ("d", "SR_HIGH", True)])
def test_aall1731_arms(write: Write, arm: str, group: str, blina: bool) -> None:
    plan = _plan(write("aall1731", **A17, events=[_arm(arm)]), as_of=D("2026-06-27"))
    assert plan.risk.group == group
    ids = _spans(plan)
    if blina:
        # Two non-sequential 28-day cycles: interim maintenance I between them.
        assert ids == ["induction", "consolidation", "blinatumomab_1", "interim_maintenance_1", "blinatumomab_2",
                       "delayed_intensification", "maintenance"]
        for cycle in ("blinatumomab_1", "blinatumomab_2"):
            span = _span(plan, cycle)
            assert (span.planned_end - span.planned_start).days + 1 == 28
            days = sorted({i.element_day for i in plan.items if i.element == cycle and i.slot.key == "blinatumomab"})
            assert days[0] == 1 and days[-1] <= 28
    else:
        assert ids == ["induction", "consolidation", "interim_maintenance_1", "delayed_intensification",
                       "maintenance"]
    assert not [d for d in plan.decisions if d.status == "pending"]


def test_aall1731_before_randomisation_both_pathways_are_pending(write: Write) -> None:
    plan = _plan(write("aall1731", **A17, events=[]), as_of=D("2026-05-10"))
    assert plan.risk.status == "pending" and set(plan.risk.candidates) == {"SR_AVG", "SR_HIGH"}
    first = next(d for d in plan.decisions if d.id == "randomisation")
    assert first.status == "pending" and first.waiting_for == ("arm:randomisation",)
    assert _spans(plan, "randomisation→blinatumomab_1")[0] == "blinatumomab_1"
    assert _spans(plan, "randomisation→interim_maintenance_1")[0] == "interim_maintenance_1"


A17_DELAYED = [*_started(("induction", "2026-05-04", "2026-06-06"),         # 6 days longer than planned
                         ("consolidation", "2026-06-15", "2026-07-12")),     # 8 days late
               _arm("b", "2026-07-12"),
               *_started(("blinatumomab_1", "2026-07-20", "2026-08-16"))]   # 7 days late


def _two_years(day: dt.date) -> dt.date:
    # "2 years from the start of interim maintenance I": two calendar years (not 104 weeks).
    return day.replace(year=day.year + 2) - dt.timedelta(days=1)


def test_aall1731_end_of_therapy_is_two_calendar_years_from_the_start_of_interim_maintenance_1(write: Write) -> None:
    on_time = _plan(write("aall1731", **A17, events=[_arm("b")]), as_of=D("2026-06-27"))
    im1 = _span(on_time, "interim_maintenance_1")
    assert on_time.end_of_therapy == _two_years(im1.planned_start)
    # Earlier elements delayed: interim maintenance I is planned later, and the end moves with it.
    delayed = _plan(write("aall1731", **A17, events=A17_DELAYED), as_of=D("2026-08-10"))
    im1_late = _span(delayed, "interim_maintenance_1")
    assert im1_late.planned_start == D("2026-08-17")
    assert delayed.end_of_therapy == _two_years(D("2026-08-17")) == D("2028-08-16")
    assert delayed.end_of_therapy - on_time.end_of_therapy == im1_late.planned_start - im1.planned_start
    # Once started (late again), the actual start anchors it, and maintenance ends on it.
    events = [*A17_DELAYED, *_started(("interim_maintenance_1", "2026-08-20", None))]
    started = _plan(write("aall1731", **A17, events=events))
    assert started.end_of_therapy == D("2028-08-19")
    assert _span(started, "maintenance").planned_end == started.end_of_therapy
    assert max(i.date for i in started.items) <= started.end_of_therapy


def test_aall1731_example_end_of_therapy() -> None:
    plan = _plan(ROOT / "examples/patients/aall1731-sr-average.yaml")
    im1 = _span(plan, "interim_maintenance_1")
    assert im1.actual_start == D("2026-07-29")
    assert plan.end_of_therapy == D("2028-07-28") == _two_years(im1.actual_start)


def test_aall1731_pending_branches_each_end_two_years_after_their_own_interim_maintenance_1(write: Write) -> None:
    plan = _plan(write("aall1731", **A17, events=[]), as_of=D("2026-05-10"))
    for branch in ("randomisation→blinatumomab_1", "randomisation→interim_maintenance_1"):
        spans = [e for e in plan.elements if e.branch is not None and e.branch.startswith(branch)]
        im1 = next(e for e in spans if e.id == "interim_maintenance_1")
        for m in (e for e in spans if e.id == "maintenance"):
            assert m.planned_end == _two_years(im1.planned_start), branch


def test_aall1731_pending_plan_shows_only_the_two_real_pathways(write: Write) -> None:
    plan = _plan(write("aall1731", **A17, events=[]), as_of=D("2026-05-10"))
    assert sum(1 for e in plan.elements if e.id == "maintenance") == 2


def test_aall1731_evidence_against_clinical_facts() -> None:
    pid = "aall1731"
    p = protocol.load_protocol(pid)
    # §7: the blinatumomab dose is R?; the 28-day cycles are verified.
    assert _values(pid)["blinatumomab_1 › blinatumomab › amount"][0].evidence == "placeholder"
    assert _values(pid)["blinatumomab_2 › blinatumomab › amount"][0].evidence == "placeholder"
    assert _value(pid, "blinatumomab_1 › length_days").evidence == "published"
    # §7: the slots of the cycles are R?: both guards are placeholder rules.
    for source in ("consolidation", "interim_maintenance_1"):
        t = next(t for t in p.source.transitions if t.source == source and t.when is not None)
        assert t.rule_evidence == "placeholder"
    # §7: "2 years from the start of interim maintenance I" (V): two calendar years, published.
    years = _value(pid, "years")
    assert (years.value, years.evidence) == (2, "published") and "2-year" in (years.note or "")
    # §5.1 [44]: blinatumomab 28 µg/day fixed at 45 kg or more, and no more than 28 µg/day below.
    dose = p.source.elements[2].administrations[0].dose
    assert [(b.min_weight_kg.value, b.amount.value, b.amount.evidence) for b in dose.weight_bands or ()] == [
        (45, 28, "published")]
    assert (dose.cap.value, dose.cap.evidence) == (28, "published")
    # §7: age 1 to < 10 years (V).
    assert _value(pid, "age_under_10 › lt").evidence == "published"
    # §7 gives no chemotherapy courses' lengths: every one is a placeholder.
    for course in ("induction", "consolidation", "interim_maintenance_1", "delayed_intensification"):
        assert _value(pid, f"{course} › length_days").evidence == "placeholder"


# =========================================================================== interfant21

I21_MR = {"birth_date": "2025-11-20", "diagnosis_date": "2026-05-04", "kmt2a": "rearranged",
          "wbc_at_diagnosis": 140, "day8_blasts_per_ul": 300,
          "measurements": [{"date": "2026-05-04", "height_cm": 64, "weight_kg": 6.9}]}
I21_HR = {**I21_MR, "birth_date": "2026-01-10", "wbc_at_diagnosis": 350}
I21_THROUGH_BLINA = _started(("induction", "2026-05-04", "2026-06-07"), ("blinatumomab", "2026-06-08", "2026-07-06"))


def _i21(write: Write, base: dict[str, Any], eoi: float, cycle1: float | None, as_of: str = "2026-07-07") -> Any:
    mrd = [{"timepoint": "end_of_induction", "date": "2026-06-05", "value": eoi}]
    if cycle1 is not None:
        mrd.append({"timepoint": "blinatumomab_day29", "date": "2026-07-06", "value": cycle1})
    return _plan(write("interfant21", **base, events=I21_THROUGH_BLINA, mrd=mrd), as_of=D(as_of))


def test_interfant21_structure() -> None:
    p = protocol.load_protocol("interfant21")
    assert [e.dest for e in p.table["induction"]] == ["blinatumomab"]
    assert [e.dest for e in p.table["blinatumomab"]] == ["hsct", "ib"]
    # The second cycle takes MARMA's place (tried first) and leaves the way MARMA does.
    assert [e.dest for e in p.table["ib"]] == ["blinatumomab_2", "marma"]
    assert [e.dest for e in p.table["blinatumomab_2"]] == [e.dest for e in p.table["marma"]] == ["hsct", "octadad"]
    replaced = p.source.elements[[e.id for e in p.source.elements].index("blinatumomab_2")].replaces
    assert replaced is not None and replaced.element == "marma" and replaced.rule_evidence == "placeholder"


def test_interfant21_second_cycle_replaces_marma_for_mr_good_responders_only(write: Write) -> None:
    good = _i21(write, I21_MR, eoi=3.0e-4, cycle1=0)
    assert good.risk.group == "MR"
    assert _spans(good) == ["induction", "blinatumomab", "ib", "blinatumomab_2", "octadad", "maintenance"]
    # MR with a response that is not good enough (1e-4 <= MRD < 5e-4): MARMA, the standard course.
    partial = _i21(write, I21_MR, eoi=3.0e-4, cycle1=2.0e-4)
    assert partial.risk.group == "MR"
    assert _spans(partial) == ["induction", "blinatumomab", "ib", "marma", "octadad", "maintenance"]
    # HR, even MRD-negative, never gets the second cycle (it goes to HSCT).
    hr = _i21(write, I21_HR, eoi=3.0e-4, cycle1=0)
    assert "blinatumomab_2" not in _spans(hr)


def test_interfant21_mr_before_the_cycle1_result_shows_both(write: Write) -> None:
    plan = _i21(write, I21_MR, eoi=3.0e-4, cycle1=None)
    assert plan.risk.status == "pending" and set(plan.risk.candidates) == {"HR", "MR"}
    assert {"blinatumomab_2", "marma", "hsct"} <= set(_spans(plan))


@pytest.mark.parametrize(("cycle1", "expected"), [(0.0, ["induction", "blinatumomab", "hsct"]),
                                                  (9.0e-5, ["induction", "blinatumomab", "hsct"]),
                                                  (1.0e-4, ["induction", "blinatumomab", "ib", "marma", "hsct"])])
def test_interfant21_hr_to_hsct_when_mrd_negative_after_cycle_1(write: Write, cycle1: float,
                                                                 expected: list[str]) -> None:
    plan = _i21(write, I21_HR, eoi=3.0e-4, cycle1=cycle1)
    assert plan.risk.group == "HR"
    assert _spans(plan) == expected


def test_interfant21_hr_waits_for_the_cycle1_mrd(write: Write) -> None:
    plan = _i21(write, I21_HR, eoi=3.0e-4, cycle1=None, as_of="2026-07-01")
    decision = next(d for d in plan.decisions if d.id == "after_blinatumomab")
    assert decision.status == "pending" and decision.waiting_for == ("mrd:blinatumomab_day29",)


@pytest.mark.parametrize(("eoi", "cycle1"), [(1.0e-3, 0.0), (3.0e-4, 6.0e-4)], ids=["after-induction", "after-cycle-1"])
def test_interfant21_insufficient_responders_are_reallocated_to_hr(write: Write, eoi: float, cycle1: float) -> None:
    plan = _i21(write, I21_MR, eoi=eoi, cycle1=cycle1)
    assert plan.risk.group == "HR"
    assert any("MRD at" in line and line.lstrip().startswith("✓") for line in plan.risk.reasons)
    assert "blinatumomab_2" not in _spans(plan) and _spans(plan)[-1] == "hsct"


def test_interfant21_refuses_germline_and_older_infants(write: Write) -> None:
    with pytest.raises(protocol.IneligibleError, match="KMT2A-germline"):
        _plan(write("interfant21", **{**I21_MR, "kmt2a": "germline"}))
    with pytest.raises(protocol.IneligibleError, match="365 days"):
        _plan(write("interfant21", **{**I21_MR, "birth_date": "2025-05-03"}))  # 366 days old
    _plan(write("interfant21", **{**I21_MR, "birth_date": "2025-05-04"}))       # 365 days: eligible


def test_interfant21_evidence_against_clinical_facts() -> None:
    pid = "interfant21"
    p = protocol.load_protocol(pid)
    # §6 / §4: HR to HSCT if MRD < 0.01 % after cycle 1 is verified.
    edge = p.table["blinatumomab"][0]
    assert edge.dest == "hsct" and "1e-4" in edge.text
    assert next(t for t in p.source.transitions if t.source == "blinatumomab" and t.to == "hsct").rule_evidence \
        == "published"
    # §6: which course the second cycle replaces is '?': placeholder rule and threshold.
    replaces = next(e for e in p.source.elements if e.id == "blinatumomab_2").replaces
    assert replaces is not None and replaces.rule_evidence == "placeholder"
    # §6: the dose per cycle is '?'.
    assert _values(pid)["blinatumomab › blinatumomab › amount"][0].evidence == "placeholder"
    assert _values(pid)["blinatumomab › blinatumomab › days"][0].evidence == "placeholder"
    # §6: the insufficient-response levels are not given: placeholders (the risk group too).
    hr = next(g for g in p.source.risk_groups if g.id == "HR")
    assert hr.evidence == "placeholder"
    assert [v.evidence for v in _values(pid)["HR › gte"]] == ["placeholder"] * 3
    # §6: <= 365 days and the lumbar puncture at ~day 33 of induction are verified.
    assert _value(pid, "infant › lte").evidence == "published"
    assert _value(pid, "induction › eoi_lumbar_puncture › days").evidence == "published"
    # The Interfant-21 backbone is not described: the prephase days are placeholders here.
    assert _value(pid, "induction › prednisone › days").evidence == "placeholder"


# =========================================================================== the whitelist

#: Every non-placeholder value of the new definitions, with the clinical-facts row that
#: confirms it. A value not listed here must be a placeholder.
CONFIRMED: dict[str, set[str]] = {
    "interfant06": {
        "infant › lt",                              # title of [1]: infants younger than 1 year
        "HR › lt", "HR › gte",                      # §2 (V)
        "induction › prednisone › days",            # §1 row 0 / §3.1: 7-day prephase (V)
        "gte",                                      # §4: MRD >= 1e-4 at the start of OCTADAD (V)
    },
    "blinatumomab-bridge-hsct": {
        "infant › lt", "persistent_mrd › gt",       # §8 cohort (V)
        "blinatumomab › length_days",               # derived: 28 days + IT on day 29 (§8, §5)
        "blinatumomab › blinatumomab › days",       # §8: 28-day cycle (V)
        "blinatumomab › methotrexate_it › days",    # §5 / §8: IT MTX days 15 and 29 (V)
        "blinatumomab › count",                     # §8: second cycle in 2 of 11 (V)
        "blinatumomab › blinatumomab › max_interruption_days",   # §5.1 label (V)
        "blinatumomab › blinatumomab › hours", "blinatumomab › blinatumomab › min_weight_kg",
        "blinatumomab › blinatumomab › infant_full_dose",   # §3.10: infants always BSA-dosed (label)
    },
    "aall1731": {
        "age_at_least_1 › gte", "age_under_10 › lt", "wbc_under_50 › lt",   # §7 population (V)
        "induction › day8_blood_mrd › days",        # §7: day-8 blood MRD (V)
        "blinatumomab_1 › length_days", "blinatumomab_2 › length_days",      # §7: 28-day cycles (V)
        "blinatumomab_1 › blinatumomab › days", "blinatumomab_2 › blinatumomab › days",
        "years",                                    # §7: 2 calendar years from IM I (V)
        *(f"blinatumomab_{k} › blinatumomab › {f}" for k in (1, 2)
          for f in ("max_interruption_days", "hours", "min_weight_kg")),      # §5.1 label (V)
        # §5.1 label [44]: 28 µg/day fixed at 45 kg or more (band amount and limit), cap 28 µg/day.
        *(f"blinatumomab_{k} › blinatumomab › {f}" for k in (1, 2) for f in ("amount", "cap")),
    },
    "interfant21": {
        "infant › lte",                             # §6: <= 365 days (V)
        "induction › eoi_lumbar_puncture › days",   # §6 / [11]: LP at ~day 33 (V)
        "lt",                                       # §6: HSCT if MRD < 0.01 % after cycle 1 (V)
        *(f"{c} › blinatumomab › {f}" for c in ("blinatumomab", "blinatumomab_2")
          for f in ("max_interruption_days", "hours", "min_weight_kg", "infant_full_dose")),  # §5.1 label (V)
    },
}


@pytest.mark.parametrize("pid", NEW)
def test_only_confirmed_values_are_not_placeholders(pid: str) -> None:
    confirmed = {label for label, values in _values(pid).items() for v in values if v.evidence != "placeholder"}
    assert confirmed == CONFIRMED[pid]
    assert evidence_counts(protocol.load_protocol(pid))["placeholder"] > 0
