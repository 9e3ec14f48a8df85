"""Calendar ages, three-valued guards, descriptions, derived facts and risk stratification."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

import protocol
from protocol.schedule import risk as risk_of
from protocol._models import Condition, Patient
from protocol._rules import (
    add_months,
    compile_condition,
    completed_months,
    completed_years,
    depends_on,
    describe,
    explain,
    patient_facts,
)

D = dt.date
T, F, N = True, False, None


def ph(value: float) -> dict[str, Any]:
    return {"value": value, "evidence": "placeholder"}


def cond(data: dict[str, Any]) -> Condition:
    return Condition.model_validate(data)


# --------------------------------------------------------------------------- calendar ages


@pytest.mark.parametrize(
    ("day", "months", "expected"),
    [
        (D(2025, 1, 31), 1, D(2025, 2, 28)),  # clamped to the end of February
        (D(2024, 1, 31), 1, D(2024, 2, 29)),  # leap year
        (D(2025, 1, 31), 2, D(2025, 3, 31)),  # not "sticky": back to the 31st
        (D(2025, 1, 31), 3, D(2025, 4, 30)),
        (D(2024, 2, 29), 12, D(2025, 2, 28)),
        (D(2024, 2, 29), 48, D(2028, 2, 29)),
        (D(2025, 11, 30), 3, D(2026, 2, 28)),  # across the year end
        (D(2025, 12, 15), 1, D(2026, 1, 15)),
        (D(2025, 3, 31), -1, D(2025, 2, 28)),
        (D(2026, 1, 15), -13, D(2024, 12, 15)),
        (D(2025, 6, 10), 0, D(2025, 6, 10)),
    ],
)
def test_add_months(day: dt.date, months: int, expected: dt.date) -> None:
    assert add_months(day, months) == expected


@pytest.mark.parametrize(
    ("birth", "on", "months"),
    [
        (D(2025, 6, 10), D(2025, 6, 10), 0),  # same day
        (D(2025, 6, 10), D(2025, 7, 9), 0),
        (D(2025, 6, 10), D(2025, 7, 10), 1),
        (D(2025, 1, 31), D(2025, 2, 27), 0),
        (D(2025, 1, 31), D(2025, 2, 28), 1),  # 31 January: one month on 28 February
        (D(2025, 1, 31), D(2025, 3, 30), 1),
        (D(2025, 1, 31), D(2025, 3, 31), 2),
        (D(2024, 1, 31), D(2024, 2, 28), 0),  # leap year: the month ends on the 29th
        (D(2024, 1, 31), D(2024, 2, 29), 1),
        (D(2024, 2, 29), D(2024, 3, 28), 0),
        (D(2024, 2, 29), D(2024, 3, 29), 1),
        (D(2024, 2, 29), D(2025, 2, 27), 11),
        (D(2024, 2, 29), D(2025, 2, 28), 12),  # 29 February: birthday on 28 February
        (D(2024, 2, 29), D(2028, 2, 28), 47),  # ...but on the 29th in a leap year
        (D(2024, 2, 29), D(2028, 2, 29), 48),
        (D(2025, 10, 20), D(2026, 5, 4), 6),  # mr-on-time
        (D(2026, 3, 15), D(2026, 7, 20), 4),  # hr-to-hsct
        (D(2026, 1, 15), D(2026, 7, 14), 5),
        (D(2026, 1, 15), D(2026, 7, 15), 6),
    ],
)
def test_completed_months(birth: dt.date, on: dt.date, months: int) -> None:
    assert completed_months(birth, on) == months
    assert completed_years(birth, on) == months // 12


@pytest.mark.parametrize(
    ("birth", "on", "years"),
    [
        (D(2025, 6, 10), D(2025, 6, 10), 0),
        (D(2025, 6, 10), D(2026, 6, 9), 0),
        (D(2025, 6, 10), D(2026, 6, 10), 1),
        (D(2024, 2, 29), D(2025, 2, 28), 1),
        (D(2024, 2, 29), D(2026, 2, 27), 1),
        (D(2024, 2, 29), D(2028, 2, 28), 3),
        (D(2024, 2, 29), D(2028, 2, 29), 4),
        (D(2024, 12, 31), D(2025, 12, 30), 0),
        (D(2024, 12, 31), D(2025, 12, 31), 1),
    ],
)
def test_completed_years(birth: dt.date, on: dt.date, years: int) -> None:
    assert completed_years(birth, on) == years


@pytest.mark.parametrize("birth", [D(2024, 2, 29), D(2025, 1, 31), D(2024, 12, 31), D(2025, 6, 10),
                                   D(2025, 3, 1)])
@pytest.mark.parametrize("years", [0, 1, 2, 3, 4, 8])
def test_birthday_agrees_with_add_months(birth: dt.date, years: int) -> None:
    from protocol._rules import birthday

    day = birthday(birth, years)
    assert day == add_months(birth, 12 * years)
    assert completed_years(birth, day) == years
    if years:
        assert completed_years(birth, day - dt.timedelta(days=1)) == years - 1


# --------------------------------------------------------------------------- three-valued logic

# Leaf A: WBC >= 300; leaf B: day-8 blasts >= 1000. Facts that make each leaf T, F or unknown.
_A = {T: {"wbc_at_diagnosis": 400}, F: {"wbc_at_diagnosis": 100}, N: {}}
_B = {T: {"day8_blasts_per_ul": 2000}, F: {"day8_blasts_per_ul": 10}, N: {}}
LEAF_A = {"fact": "wbc_at_diagnosis", "gte": ph(300)}
LEAF_B = {"fact": "day8_blasts_per_ul", "gte": ph(1000)}

# Kleene's strong three-valued logic, written out.
AND = {(T, T): T, (T, F): F, (T, N): N, (F, T): F, (F, F): F, (F, N): F, (N, T): N, (N, F): F, (N, N): N}
OR = {(T, T): T, (T, F): T, (T, N): T, (F, T): T, (F, F): F, (F, N): N, (N, T): T, (N, F): N, (N, N): N}
NOT = {T: F, F: T, N: N}


@pytest.mark.parametrize(("a", "b"), list(AND))
def test_all_is_kleene_and(a: bool | None, b: bool | None) -> None:
    guard = compile_condition(cond({"all": [LEAF_A, LEAF_B]}))
    assert guard({**_A[a], **_B[b]}) is AND[(a, b)]


@pytest.mark.parametrize(("a", "b"), list(OR))
def test_any_is_kleene_or(a: bool | None, b: bool | None) -> None:
    guard = compile_condition(cond({"any": [LEAF_A, LEAF_B]}))
    assert guard({**_A[a], **_B[b]}) is OR[(a, b)]


@pytest.mark.parametrize("a", [T, F, N])
def test_not_is_kleene_not(a: bool | None) -> None:
    guard = compile_condition(cond({"not": LEAF_A}))
    assert guard(_A[a]) is NOT[a]
    double = compile_condition(cond({"not": {"not": LEAF_A}}))
    assert double(_A[a]) is a


def test_order_does_not_matter_for_unknowns() -> None:
    # An unknown part before a deciding part: all -> False, any -> True.
    facts = {"day8_blasts_per_ul": 10}
    assert compile_condition(cond({"all": [LEAF_A, LEAF_B]}))(facts) is False
    assert compile_condition(cond({"all": [LEAF_B, LEAF_A]}))(facts) is False
    facts = {"day8_blasts_per_ul": 5000}
    assert compile_condition(cond({"any": [LEAF_A, LEAF_B]}))(facts) is True
    assert compile_condition(cond({"any": [LEAF_B, LEAF_A]}))(facts) is True


def test_nested_groups_and_de_morgan() -> None:
    nested = compile_condition(cond({"all": [{"fact": "kmt2a", "eq": "rearranged"}, {"any": [LEAF_A, LEAF_B]}]}))
    assert nested({"kmt2a": "rearranged", "wbc_at_diagnosis": 100}) is None
    assert nested({"kmt2a": "germline", "wbc_at_diagnosis": 100}) is False
    assert nested({"kmt2a": "rearranged", "day8_blasts_per_ul": 1000}) is True
    lhs = compile_condition(cond({"not": {"all": [LEAF_A, LEAF_B]}}))
    rhs = compile_condition(cond({"any": [{"not": LEAF_A}, {"not": LEAF_B}]}))
    for a in (T, F, N):
        for b in (T, F, N):
            facts = {**_A[a], **_B[b]}
            assert lhs(facts) is rhs(facts)


@pytest.mark.parametrize(
    ("op", "value", "expected"),
    [
        ("lt", 299.9, T), ("lt", 300, F),
        ("lte", 300, T), ("lte", 300.1, F),
        ("gt", 300, F), ("gt", 300.1, T),
        ("gte", 300, T), ("gte", 299.9, F),
        ("gte", 0, F), ("lt", 0, T),  # zero is a known value, not "unknown"
        ("gte", None, N), ("lt", None, N),
    ],
)
def test_numeric_leaf(op: str, value: float | None, expected: bool | None) -> None:
    guard = compile_condition(cond({"fact": "wbc_at_diagnosis", op: ph(300)}))
    facts = {} if value is None else {"wbc_at_diagnosis": value}
    assert guard(facts) is expected


@pytest.mark.parametrize(
    ("data", "value", "expected"),
    [
        ({"fact": "kmt2a", "eq": "rearranged"}, "rearranged", T),
        ({"fact": "kmt2a", "eq": "rearranged"}, "germline", F),
        ({"fact": "kmt2a", "eq": "rearranged"}, None, N),
        ({"fact": "kmt2a", "ne": "germline"}, "rearranged", T),
        ({"fact": "kmt2a", "ne": "germline"}, "germline", F),
        ({"fact": "kmt2a", "ne": "germline"}, None, N),
        ({"fact": "kmt2a", "in": ["rearranged", "germline"]}, "germline", T),
        ({"fact": "kmt2a", "in": ["rearranged"]}, "germline", F),
        ({"fact": "kmt2a", "in": ["rearranged"]}, None, N),
    ],
)
def test_categorical_leaf(data: dict[str, Any], value: str | None, expected: bool | None) -> None:
    facts = {} if value is None else {"kmt2a": value}
    assert compile_condition(cond(data))(facts) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(5e-4, T), (1e-2, T), (1.0, T), (4.9e-4, F), (1e-4, F), (0.0, F), (None, N)],
)
def test_mrd_leaf(value: float | None, expected: bool | None) -> None:
    guard = compile_condition(cond({"mrd": "pre_octadad", "gte": ph(5e-4)}))
    facts: dict[str, Any] = {"wbc_at_diagnosis": 1} if value is None else {"mrd:pre_octadad": value}
    assert guard(facts) is expected
    # A result at another time point does not count.
    assert guard({"mrd:end_of_induction": 1.0}) is None


def test_shipped_hsct_guard_truth_table(shipped: protocol.Protocol) -> None:
    edge = next(e for e in shipped.table["marma"] if e.dest == "hsct")
    assert edge.guard is not None
    g = edge.guard
    assert g({"risk_group": "HR"}) is True  # HR: HSCT whatever the MRD
    assert g({"risk_group": "HR", "mrd:pre_octadad": 0.0}) is True
    assert g({"risk_group": "MR", "mrd:pre_octadad": 5e-4}) is True
    assert g({"risk_group": "MR", "mrd:pre_octadad": 4.9e-4}) is False
    assert g({"risk_group": "MR"}) is None  # MR waits for the MRD
    assert g({}) is None
    assert g({"mrd:pre_octadad": 1e-4}) is None  # risk group pending


# --------------------------------------------------------------------------- describe / depends_on


def test_describe_shipped_rules(shipped: protocol.Protocol) -> None:
    hr = shipped.definition.risk_groups[0].when
    assert hr is not None
    assert describe(hr) == ("KMT2A status = rearranged and age at diagnosis < 6 completed months and "
                            "(WBC at diagnosis ≥ 300 ×10⁹/L or prednisone response = poor)")
    hsct = next(t for t in shipped.definition.transitions if t.to == "hsct").when
    assert hsct is not None
    assert describe(hsct) == "risk group = HR or MRD at pre_octadad ≥ 5e-4"


@pytest.mark.parametrize(
    ("data", "text"),
    [
        ({"not": {"fact": "kmt2a", "eq": "germline"}}, "not (KMT2A status = germline)"),
        ({"fact": "sex", "in": ["male", "female"]}, "sex in {male, female}"),
        ({"fact": "cns_status", "ne": "CNS3"}, "CNS status ≠ CNS3"),
        ({"fact": "day8_blasts_per_ul", "lte": ph(999)}, "day-8 blood blasts ≤ 999 /µL"),
        ({"fact": "age_at_diagnosis_days", "gt": ph(30)}, "age at diagnosis > 30 days"),
        ({"mrd": "end_of_induction", "lt": ph(1e-4)}, "MRD at end_of_induction < 1e-4"),
        ({"mrd": "end_of_induction", "lt": ph(0.05)}, "MRD at end_of_induction < 0.05"),
        ({"mrd": "end_of_induction", "lt": ph(0)}, "MRD at end_of_induction < 0"),
        ({"any": [{"all": [LEAF_A, LEAF_B]}, {"not": LEAF_A}]},
         "(WBC at diagnosis ≥ 300 ×10⁹/L and day-8 blood blasts ≥ 1000 /µL) or not (WBC at diagnosis ≥ 300 ×10⁹/L)"),
    ],
)
def test_describe(data: dict[str, Any], text: str) -> None:
    assert describe(cond(data)) == text


@pytest.mark.parametrize(("value", "shown"), [(2.5e-4, "2.5e-4"), (4.9e-4, "4.9e-4"), (5e-4, "5e-4"),
                                               (1.25e-3, "1.25e-3"), (300.5, "300.5")])
def test_describe_keeps_every_digit_of_a_threshold(value: float, shown: str) -> None:
    # A threshold of 4.9e-4 must never be shown as 5e-4.
    text = describe(cond({"mrd": "pre_octadad", "gte": ph(value)}))
    assert text == f"MRD at pre_octadad ≥ {shown}"
    assert float(text.removeprefix("MRD at pre_octadad ≥ ")) == value


def test_depends_on(shipped: protocol.Protocol) -> None:
    hr = shipped.definition.risk_groups[0].when
    assert hr is not None
    assert depends_on(hr) == ("kmt2a", "age_at_diagnosis_months", "wbc_at_diagnosis", "prednisone_response")
    hsct = next(t for t in shipped.definition.transitions if t.to == "hsct").when
    assert hsct is not None
    assert depends_on(hsct) == ("risk_group", "mrd:pre_octadad")
    dup = cond({"all": [{"fact": "kmt2a", "eq": "rearranged"}, {"not": {"fact": "kmt2a", "ne": "germline"}},
                        {"mrd": "day8", "lt": ph(1)}, {"any": [{"mrd": "day8", "gte": ph(0)}]}]})
    assert depends_on(dup) == ("kmt2a", "mrd:day8")


def test_explain_marks_each_leaf() -> None:
    c = cond({"any": [{"fact": "risk_group", "eq": "HR"}, {"mrd": "pre_octadad", "gte": ph(5e-4)}]})
    assert explain(c, {"risk_group": "MR"}) == [
        "? any of:",
        "  ✗ risk group = HR (is MR)",
        "  ? MRD at pre_octadad ≥ 5e-4 (not recorded yet)",
    ]
    assert explain(c, {"risk_group": "MR", "mrd:pre_octadad": 1e-3})[0] == "✓ any of:"
    assert explain(cond({"not": LEAF_A}), {"wbc_at_diagnosis": 420}) == [
        "✗ not:", "  ✓ WBC at diagnosis ≥ 300 ×10⁹/L (is 420 ×10⁹/L)"]


# --------------------------------------------------------------------------- patient facts


def _patient(**overrides: Any) -> Patient:
    data: dict[str, Any] = {"id": "P1", "protocol": "interfant06-blinatumomab", "birth_date": "2025-10-20",
                            "sex": "female", "diagnosis_date": "2026-05-04", "kmt2a": "rearranged",
                            "wbc_at_diagnosis": 150}
    data.update(overrides)
    return Patient.model_validate(data)


def test_patient_facts() -> None:
    p = _patient(day8_blasts_per_ul=0, mrd=[
        {"timepoint": "pre_octadad", "date": "2026-09-30", "value": 1e-3},
        {"timepoint": "pre_octadad", "date": "2026-09-22", "value": 0},
        {"timepoint": "end_of_induction", "date": "2026-06-05", "value": 1.2e-3},
    ])
    facts = patient_facts(p)
    assert facts == {
        "kmt2a": "rearranged", "sex": "female", "wbc_at_diagnosis": 150,
        "age_at_diagnosis_days": 196, "age_at_diagnosis_months": 6, "age_at_diagnosis_years": 0,
        "day8_blasts_per_ul": 0, "mrd:pre_octadad": 1e-3, "mrd:end_of_induction": 1.2e-3,
    }
    assert patient_facts(p, as_of=D(2026, 9, 29))["mrd:pre_octadad"] == 0  # the later result is not in yet
    assert "mrd:pre_octadad" not in patient_facts(p, as_of=D(2026, 9, 21))
    assert patient_facts(p, as_of=D(2026, 9, 22))["mrd:pre_octadad"] == 0  # as_of is inclusive


# --------------------------------------------------------------------------- derived facts


@pytest.mark.parametrize(("blasts", "response"), [(1000, "poor"), (4999, "poor"), (999.9, "good"), (0, "good")])
def test_derive_prednisone_response(shipped: protocol.Protocol, blasts: float, response: str) -> None:
    facts: dict[str, Any] = {"day8_blasts_per_ul": blasts}
    assert shipped.rules.derive(facts) == []
    assert facts["prednisone_response"] == response


def test_derive_without_blasts_leaves_response_unknown(shipped: protocol.Protocol) -> None:
    facts: dict[str, Any] = {"kmt2a": "rearranged"}
    assert shipped.rules.derive(facts) == []
    assert "prednisone_response" not in facts


def test_derive_reports_conflict(shipped: protocol.Protocol) -> None:
    facts: dict[str, Any] = {"day8_blasts_per_ul": 1500, "prednisone_response": "good"}
    assert shipped.rules.derive(facts) == [("prednisone_response", "good", "poor")]
    assert facts["prednisone_response"] == "good"  # the given value is not overwritten
    facts = {"day8_blasts_per_ul": 20, "prednisone_response": "poor"}
    assert shipped.rules.derive(facts) == [("prednisone_response", "poor", "good")]
    facts = {"day8_blasts_per_ul": 1000, "prednisone_response": "poor"}
    assert shipped.rules.derive(facts) == []


# --------------------------------------------------------------------------- stratification


def _facts(months: int, wbc: float, response: str | None = None, kmt2a: str = "rearranged") -> dict[str, Any]:
    facts: dict[str, Any] = {"kmt2a": kmt2a, "age_at_diagnosis_months": months, "wbc_at_diagnosis": wbc}
    if response is not None:
        facts["prednisone_response"] = response
    return facts


def test_stratify_hr_by_age_and_wbc(shipped: protocol.Protocol) -> None:
    r = shipped.rules.stratify(_facts(5, 300, "good"))
    assert (r.group, r.label, r.status) == ("HR", "high risk", "assigned")
    assert r.candidates == () and r.waiting_for == ()
    assert r.reasons == (
        "HR (high risk):",
        "  ✓ all of:",
        "    ✓ KMT2A status = rearranged (is rearranged)",
        "    ✓ age at diagnosis < 6 completed months (is 5 completed months)",
        "    ✓ any of:",
        "      ✓ WBC at diagnosis ≥ 300 ×10⁹/L (is 300 ×10⁹/L)",
        "      ✗ prednisone response = poor (is good)",
    )
    # WBC >= 300 decides even while the prednisone response is unknown.
    assert shipped.rules.stratify(_facts(0, 420)).group == "HR"


def test_stratify_hr_by_poor_prednisone_response(shipped: protocol.Protocol) -> None:
    r = shipped.rules.stratify(_facts(4, 100, "poor"))
    assert (r.group, r.status) == ("HR", "assigned")
    assert "      ✓ prednisone response = poor (is poor)" in r.reasons
    assert "      ✗ WBC at diagnosis ≥ 300 ×10⁹/L (is 100 ×10⁹/L)" in r.reasons


@pytest.mark.parametrize(("months", "wbc", "response"), [(6, 999, "poor"), (11, 100, "good"), (6, 300, None),
                                                         (5, 299, "good")])
def test_stratify_mr(shipped: protocol.Protocol, months: int, wbc: float, response: str | None) -> None:
    r = shipped.rules.stratify(_facts(months, wbc, response))
    assert (r.group, r.label, r.status) == ("MR", "medium risk", "assigned")
    assert r.reasons[0] == "not HR (high risk):"
    assert r.reasons[-2:] == ("MR (medium risk):", "  ✓ KMT2A status = rearranged (is rearranged)")
    assert any(line.lstrip().startswith("✗") for line in r.reasons)


def test_stratify_mr_reasons_for_older_infant(shipped: protocol.Protocol) -> None:
    r = shipped.rules.stratify(_facts(6, 999, "poor"))
    assert "    ✗ age at diagnosis < 6 completed months (is 6 completed months)" in r.reasons


def test_stratify_pending_when_prednisone_response_unknown(shipped: protocol.Protocol) -> None:
    r = shipped.rules.stratify(_facts(5, 299))
    assert r.status == "pending"
    assert r.group is None and r.label is None
    assert r.candidates == ("HR", "MR")
    assert r.waiting_for == ("prednisone_response",)
    assert r.reasons[0] == "HR cannot be decided yet (high risk):"
    assert "      ? prednisone response = poor (not recorded yet)" in r.reasons
    assert "    ? any of:" in r.reasons
    assert "no risk-group rule applies" not in r.reasons
    d = r.to_dict()
    assert d["candidates"] == ["HR", "MR"] and d["waiting_for"] == ["prednisone_response"]
    assert d["group"] is None and d["status"] == "pending"


def test_stratify_unassigned_for_germline(shipped: protocol.Protocol) -> None:
    r = shipped.rules.stratify(_facts(3, 500, "poor", kmt2a="germline"))
    assert (r.group, r.status) == (None, "unassigned")
    assert r.reasons[-1] == "no risk-group rule applies"
    assert "not MR (medium risk):" in r.reasons


def test_stratify_from_a_patient_with_derived_response(shipped: protocol.Protocol) -> None:
    # 4 months old, WBC 100, 1200 blasts on day 8: poor response by the derived rule -> HR.
    p = _patient(birth_date="2026-01-01", diagnosis_date="2026-05-20", wbc_at_diagnosis=100,
                 day8_blasts_per_ul=1200)
    facts = patient_facts(p)
    assert shipped.rules.derive(facts) == []
    assert shipped.rules.stratify(facts).group == "HR"
    facts = patient_facts(p.model_copy(update={"day8_blasts_per_ul": 999}))
    shipped.rules.derive(facts)
    assert shipped.rules.stratify(facts).group == "MR"


def test_stratify_reasons_do_not_see_later_facts(shipped: protocol.Protocol) -> None:
    facts = _facts(5, 100)
    r = shipped.rules.stratify(facts)
    facts["prednisone_response"] = "poor"  # arrives after stratification
    assert "      ? prednisone response = poor (not recorded yet)" in r.reasons


def test_a_risk_group_is_unverified_only_when_a_placeholder_decides_it(make_patient: Any) -> None:
    """HR by WBC ≥ 300 (published) stays verified; HR by a poor prednisone response derived
    from the day-8 count with the placeholder 1000/µL cut-off is unverified, and says why."""
    by_wbc = risk_of(make_patient(birth_date="2026-01-01", wbc_at_diagnosis=420, day8_blasts_per_ul=2400))
    assert (by_wbc.group, by_wbc.unverified) == ("HR", False)
    by_prednisone = risk_of(make_patient(birth_date="2026-01-01", wbc_at_diagnosis=20, day8_blasts_per_ul=2400))
    assert (by_prednisone.group, by_prednisone.unverified) == ("HR", True)
    assert by_prednisone.unverified_reasons == (
        "the threshold day-8 blood blasts ≥ 1000 /µL is a placeholder (prednisone response is derived from it)",)
    assert by_prednisone.to_dict()["unverified"] is True
    mr = risk_of(make_patient(birth_date="2026-01-01", wbc_at_diagnosis=20, day8_blasts_per_ul=300))
    assert (mr.group, mr.unverified) == ("MR", True)  # a count of 300 is "good" only by the placeholder cut-off
