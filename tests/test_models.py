"""The pydantic models of the definition and patient formats, field by field."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import pytest
from pydantic import ValidationError

from protocol._models import (
    AgeBand,
    Condition,
    Dose,
    Element,
    Event,
    Measurement,
    MrdResult,
    Patient,
    SourcedDays,
    SourcedNumber,
    parse_days,
)

PH = {"evidence": "placeholder"}


def num(value: Any, **extra: Any) -> dict[str, Any]:
    return {"value": value, "evidence": "placeholder", **extra}


# --------------------------------------------------------------------------- parse_days


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("1-7", ((1, 7, 1),)),
        ("1-7, 15", ((1, 7, 1), (15, 15, 1))),
        ("8, 15, 22, 29", ((8, 8, 1), (15, 15, 1), (22, 22, 1), (29, 29, 1))),
        ("38-41, 45-48", ((38, 41, 1), (45, 48, 1))),
        ("1-end", ((1, None, 1),)),
        ("1-end/7", ((1, None, 7),)),
        ("1-28/7", ((1, 28, 7),)),
        (" 3 - 9 / 2 ", ((3, 9, 2),)),
        ("5-5", ((5, 5, 1),)),
        ("0", ((0, 0, 1),)),
        ("-3--1", ((-3, -1, 1),)),
        (8, ((8, 8, 1),)),
        ([1, 8], ((1, 1, 1), (8, 8, 1))),
        ([1, "8, 15-16"], ((1, 1, 1), (8, 8, 1), (15, 16, 1))),
        (["1-end/14"], ((1, None, 14),)),
    ],
)
def test_parse_days_accepts_the_grammar(spec: Any, expected: tuple[Any, ...]) -> None:
    assert parse_days(spec) == expected


@pytest.mark.parametrize(
    "spec",
    [
        "",  # nothing
        "1,,2",  # empty term
        "7-1",  # reversed range
        "1-7/0",  # step below 1
        "1-7/-2",  # negative step
        "5/7",  # a step without a range
        "end",  # 'end' alone
        "end-7",  # 'end' first
        "1-7-9",
        "a",
        "1.5",
        "1-",
        "1 7",
        [],  # no day at all
        [True],  # a bool is not a day
        [1.5],  # not a whole number
        [None],
        True,
        False,
    ],
)
def test_parse_days_rejects_bad_input_with_value_error(spec: Any) -> None:
    with pytest.raises(ValueError, match="expected"):
        parse_days(spec)


def test_parse_days_messages_name_the_bad_term() -> None:
    with pytest.raises(ValueError, match=r"got '7-1'"):
        parse_days("1, 7-1")
    with pytest.raises(ValueError, match="step of at least 1"):
        parse_days("1-7/0")


def test_sourced_days_validates_and_reports_its_text() -> None:
    days = SourcedDays.model_validate({"value": "1-7, 15", "evidence": "published", "source": "x"})
    assert days.terms == ((1, 7, 1), (15, 15, 1))
    assert days.text == "1-7, 15"
    assert SourcedDays.model_validate({"value": [8, 15], **PH}).text == "8, 15"
    unknown = SourcedDays.model_validate({"value": None, **PH})
    assert unknown.terms == ()
    assert unknown.text == "not specified"
    with pytest.raises(ValidationError, match="end is not before its start, got '7-1'"):
        SourcedDays.model_validate({"value": "7-1", **PH})
    with pytest.raises(ValidationError, match="expected day numbers"):
        SourcedDays.model_validate({"value": "8 and 15", **PH})
    with pytest.raises(ValidationError, match="only a placeholder may have value: null"):
        SourcedDays.model_validate({"value": None, "evidence": "derived", "source": "x"})


# --------------------------------------------------------------------------- SourcedNumber


def test_sourced_number_published_needs_a_source() -> None:
    with pytest.raises(ValidationError, match="a published value must name its source"):
        SourcedNumber.model_validate({"value": 15, "evidence": "published"})
    with pytest.raises(ValidationError, match="a derived value must name its source"):
        SourcedNumber.model_validate({"value": 15, "evidence": "derived"})
    ok = SourcedNumber.model_validate({"value": 15, "evidence": "published", "source": "vandersluis2023"})
    assert ok.value == 15.0 and ok.known
    assert SourcedNumber.model_validate({"value": 15, "evidence": "placeholder"}).source is None


def test_sourced_number_null_value_only_for_placeholder() -> None:
    unknown = SourcedNumber.model_validate({"value": None, "evidence": "placeholder"})
    assert unknown.value is None and not unknown.known
    for evidence in ("published", "derived"):
        with pytest.raises(ValidationError, match="only a placeholder may have value: null"):
            SourcedNumber.model_validate({"value": None, "evidence": evidence, "source": "s"})


def test_sourced_number_value_is_required() -> None:
    with pytest.raises(ValidationError, match="value"):
        SourcedNumber.model_validate({"evidence": "placeholder"})


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan, "inf", "nan"])
def test_sourced_number_rejects_non_finite(bad: Any) -> None:
    with pytest.raises(ValidationError, match="finite"):
        SourcedNumber.model_validate({"value": bad, "evidence": "placeholder"})


def test_sourced_number_rejects_unknown_evidence_and_extra_fields() -> None:
    with pytest.raises(ValidationError):
        SourcedNumber.model_validate({"value": 1, "evidence": "guessed"})
    with pytest.raises(ValidationError, match="Extra inputs"):
        SourcedNumber.model_validate({"value": 1, "evidence": "placeholder", "unit": "mg"})


# --------------------------------------------------------------------------- Condition


def test_condition_leaf_and_groups_parse() -> None:
    c = Condition.model_validate({"fact": "kmt2a", "eq": "rearranged"})
    assert c.op == ("eq", "rearranged")
    c = Condition.model_validate({"fact": "sex", "in": ["male", "female"]})
    assert c.op == ("in", ["male", "female"])
    c = Condition.model_validate({"mrd": "pre_octadad", "gte": num(5e-4)})
    assert c.op[0] == "gte" and c.op[1].value == 5e-4
    c = Condition.model_validate({"all": [{"fact": "kmt2a", "eq": "rearranged"}], })
    assert c.all_ is not None and len(c.all_) == 1
    c = Condition.model_validate({"not": {"fact": "kmt2a", "eq": "germline"}})
    assert c.not_ is not None
    with pytest.raises(AttributeError):
        _ = c.op


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "expected exactly one of all, any, not, fact, mrd, arm; got none of them"),
        ({"fact": "kmt2a", "mrd": "day8", "eq": "x"}, "got fact, mrd"),
        ({"all": [{"fact": "kmt2a", "eq": "rearranged"}], "any": [{"fact": "kmt2a", "eq": "rearranged"}]},
         "got all, any"),
        ({"not": {"fact": "kmt2a", "eq": "rearranged"}, "fact": "kmt2a", "eq": "rearranged"}, "got not, fact"),
    ],
)
def test_condition_needs_exactly_one_head(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Condition.model_validate(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"fact": "kmt2a"}, "expected exactly one comparison .* got none"),
        ({"fact": "kmt2a", "eq": "rearranged", "ne": "germline"}, "expected exactly one comparison .* got eq, ne"),
        ({"fact": "wbc_at_diagnosis", "gt": num(1), "lt": num(5)}, "got lt, gt"),
        ({"mrd": "pre_octadad"}, "expected exactly one comparison"),
    ],
)
def test_condition_leaf_needs_exactly_one_operator(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Condition.model_validate(data)


@pytest.mark.parametrize("op", ["eq", "ne"])
def test_condition_mrd_needs_a_numeric_operator(op: str) -> None:
    with pytest.raises(ValidationError, match="an MRD comparison must be numeric"):
        Condition.model_validate({"mrd": "pre_octadad", op: "positive"})
    with pytest.raises(ValidationError, match="an MRD comparison must be numeric"):
        Condition.model_validate({"mrd": "pre_octadad", "in": ["positive"]})


@pytest.mark.parametrize("op", ["lt", "lte", "gt", "gte"])
def test_condition_threshold_needs_a_value(op: str) -> None:
    with pytest.raises(ValidationError, match="a threshold must have a value"):
        Condition.model_validate({"fact": "wbc_at_diagnosis", op: {"value": None, "evidence": "placeholder"}})
    with pytest.raises(ValidationError, match="a threshold must have a value"):
        Condition.model_validate({"mrd": "pre_octadad", op: {"value": None, "evidence": "placeholder"}})


@pytest.mark.parametrize("head", ["all", "any"])
def test_condition_group_takes_no_comparison_and_is_not_empty(head: str) -> None:
    with pytest.raises(ValidationError, match=f"{head} takes no comparison"):
        Condition.model_validate({head: [{"fact": "kmt2a", "eq": "rearranged"}], "eq": "x"})
    with pytest.raises(ValidationError):
        Condition.model_validate({head: []})
    with pytest.raises(ValidationError, match="not takes no comparison"):
        Condition.model_validate({"not": {"fact": "kmt2a", "eq": "rearranged"}, "eq": "x"})


def test_condition_nested_errors_are_found() -> None:
    with pytest.raises(ValidationError, match="expected exactly one comparison"):
        Condition.model_validate({"all": [{"fact": "kmt2a", "eq": "rearranged"}, {"any": [{"fact": "sex"}]}]})


# --------------------------------------------------------------------------- Dose


def band(below: int | None, value: float | None) -> dict[str, Any]:
    out: dict[str, Any] = {"amount": num(value)}
    if below is not None:
        out["below_age_years"] = below
    return out


def test_dose_age_banded_valid() -> None:
    d = Dose.model_validate({"basis": "age_banded", "unit": "mg",
                             "bands": [band(1, 6), band(2, 8), band(3, 10), band(None, 12)]})
    assert [b.below_age_years for b in d.bands or ()] == [1, 2, 3, None]
    single = Dose.model_validate({"basis": "age_banded", "unit": "mg", "bands": [band(None, None)]})
    assert single.bands is not None and single.bands[0].amount.value is None


def test_dose_age_banded_needs_bands_and_no_amount() -> None:
    with pytest.raises(ValidationError, match="an age_banded dose needs `bands`"):
        Dose.model_validate({"basis": "age_banded", "unit": "mg"})
    with pytest.raises(ValidationError):
        Dose.model_validate({"basis": "age_banded", "unit": "mg", "bands": []})
    with pytest.raises(ValidationError, match="takes its amounts from `bands`, not `amount`"):
        Dose.model_validate({"basis": "age_banded", "unit": "mg", "amount": num(6), "bands": [band(None, 6)]})


@pytest.mark.parametrize(
    "bands",
    [
        [band(2, 8), band(1, 6), band(None, 12)],  # decreasing
        [band(1, 6), band(1, 8), band(None, 12)],  # equal bounds
        [band(1, 6), band(3, 8), band(2, 10), band(None, 12)],  # decreasing later on
    ],
)
def test_dose_bands_must_increase(bands: list[dict[str, Any]]) -> None:
    with pytest.raises(ValidationError, match="increasing order of below_age_years"):
        Dose.model_validate({"basis": "age_banded", "unit": "mg", "bands": bands})


@pytest.mark.parametrize(
    "bands",
    [
        [band(1, 6), band(2, 8)],  # last band closed
        [band(1, 6), band(None, 8), band(None, 10)],  # a middle band open
        [band(None, 6), band(2, 8)],  # the open band first
    ],
)
def test_dose_only_last_band_is_open(bands: list[dict[str, Any]]) -> None:
    with pytest.raises(ValidationError, match="the last band has none"):
        Dose.model_validate({"basis": "age_banded", "unit": "mg", "bands": bands})


@pytest.mark.parametrize("below", [0, 31])
def test_age_band_bounds(below: int) -> None:
    with pytest.raises(ValidationError):
        AgeBand.model_validate(band(below, 6))


@pytest.mark.parametrize("basis", ["per_m2", "per_kg", "fixed"])
def test_dose_other_bases_need_amount_and_no_bands(basis: str) -> None:
    with pytest.raises(ValidationError, match=f"a {basis} dose needs `amount`"):
        Dose.model_validate({"basis": basis, "unit": "mg"})
    with pytest.raises(ValidationError, match="only an age_banded dose has `bands`"):
        Dose.model_validate({"basis": basis, "unit": "mg", "amount": num(1), "bands": [band(None, 1)]})
    d = Dose.model_validate({"basis": basis, "unit": "mg", "amount": num(1)})
    assert d.per == "dose" and d.cap is None


@pytest.mark.parametrize("alias", ["ug", "mcg", "μg", "µg"])
def test_dose_micro_unit_aliases(alias: str) -> None:
    assert Dose.model_validate({"basis": "fixed", "unit": alias, "amount": num(1)}).unit == "µg"


def test_dose_rejects_unknown_unit_and_basis() -> None:
    with pytest.raises(ValidationError):
        Dose.model_validate({"basis": "fixed", "unit": "kg", "amount": num(1)})
    with pytest.raises(ValidationError):
        Dose.model_validate({"basis": "per_lb", "unit": "mg", "amount": num(1)})


# --------------------------------------------------------------------------- Element


def element(**extra: Any) -> dict[str, Any]:
    return {"id": "course", "title": "Course", **extra}


def test_element_length_rules() -> None:
    assert Element.model_validate(element(length_days=num(28))).length_days is not None
    assert Element.model_validate(element(until="end_of_therapy")).until == "end_of_therapy"
    assert Element.model_validate(element(final=True)).final
    with pytest.raises(ValidationError, match="expected one of length_days or until, not both"):
        Element.model_validate(element(length_days=num(28), until="end_of_therapy"))
    with pytest.raises(ValidationError, match="expected length_days or until"):
        Element.model_validate(element())
    with pytest.raises(ValidationError):
        Element.model_validate(element(until="forever"))


@pytest.mark.parametrize(("first_day", "ok"), [(-30, True), (-31, False), (0, True), (36, True), (400, True),
                                               (401, False)])
def test_element_first_day_bounds(first_day: int, ok: bool) -> None:
    data = element(length_days=num(7), first_day=first_day)
    if ok:
        assert Element.model_validate(data).first_day == first_day
    else:
        with pytest.raises(ValidationError):
            Element.model_validate(data)


@pytest.mark.parametrize("bad_id", ["Induction", "1st", "ind-uction", "", "a" * 65])
def test_element_id_pattern(bad_id: str) -> None:
    with pytest.raises(ValidationError):
        Element.model_validate({"id": bad_id, "title": "x", "final": True})


# --------------------------------------------------------------------------- Event


@pytest.mark.parametrize("kind", ["element_started", "element_completed"])
def test_element_events_need_an_element(kind: str) -> None:
    with pytest.raises(ValidationError, match=f"an {kind} event must name its element"):
        Event.model_validate({"type": kind, "date": "2026-05-04"})
    assert Event.model_validate({"type": kind, "date": "2026-05-04", "element": "ib"}).element == "ib"


@pytest.mark.parametrize("kind", ["hsct", "relapse", "death", "off_protocol"])
def test_other_events_take_no_element(kind: str) -> None:
    with pytest.raises(ValidationError, match=f"an? {kind} event takes no element"):
        Event.model_validate({"type": kind, "date": "2026-05-04", "element": "ib", "reason": "r"})


def test_off_protocol_needs_a_reason() -> None:
    with pytest.raises(ValidationError, match="an off_protocol event needs a reason"):
        Event.model_validate({"type": "off_protocol", "date": "2026-05-04"})
    ev = Event.model_validate({"type": "off_protocol", "date": "2026-05-04", "reason": "parents' choice"})
    assert ev.reason == "parents' choice"
    assert Event.model_validate({"type": "relapse", "date": "2026-05-04"}).reason is None


def test_event_type_and_date_are_checked() -> None:
    with pytest.raises(ValidationError):
        Event.model_validate({"type": "transfusion", "date": "2026-05-04"})
    with pytest.raises(ValidationError):
        Event.model_validate({"type": "relapse", "date": "2026-02-30"})


# --------------------------------------------------------------------------- Patient


def patient(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": "INF-0001", "protocol": "interfant06-blinatumomab", "birth_date": "2025-10-20", "sex": "female",
        "diagnosis_date": "2026-05-04", "kmt2a": "rearranged", "wbc_at_diagnosis": 150,
    }
    data.update(overrides)
    return data


def test_patient_minimal_and_start_date() -> None:
    p = Patient.model_validate(patient())
    assert p.start_date == dt.date(2026, 5, 4)
    assert p.prednisone_response is None and p.day8_blasts_per_ul is None
    assert p.measurements == [] and p.mrd == [] and p.events == []
    later = Patient.model_validate(patient(treatment_start="2026-05-06"))
    assert later.start_date == dt.date(2026, 5, 6)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("weight_kg", 0),
        ("weight_kg", -4),
        ("weight_kg", 300),
        ("weight_kg", math.nan),
        ("weight_kg", math.inf),
        ("height_cm", 0),
        ("height_cm", 250),
        ("height_cm", -1),
    ],
)
def test_measurement_bounds(field: str, value: float) -> None:
    data = {"date": "2026-05-04", "height_cm": 66, "weight_kg": 7.4, field: value}
    with pytest.raises(ValidationError):
        Measurement.model_validate(data)
    with pytest.raises(ValidationError):
        Patient.model_validate(patient(measurements=[data]))


def test_measurement_accepts_the_edges_inside_the_bounds() -> None:
    m = Measurement.model_validate({"date": "2026-05-04", "height_cm": 249.9, "weight_kg": 0.01})
    assert m.weight_kg == 0.01


@pytest.mark.parametrize(
    ("field", "value", "ok"),
    [
        ("wbc_at_diagnosis", 0, True),
        ("wbc_at_diagnosis", -1, False),
        ("wbc_at_diagnosis", 4999.9, True),
        ("wbc_at_diagnosis", 5000, False),
        ("wbc_at_diagnosis", math.nan, False),
        ("day8_blasts_per_ul", 0, True),
        ("day8_blasts_per_ul", -0.5, False),
        ("day8_blasts_per_ul", math.inf, False),
        ("prednisone_response", "poor", True),
        ("prednisone_response", "bad", False),
        ("sex", "unknown", True),
        ("sex", "f", False),
        ("kmt2a", "germline", True),
        ("kmt2a", "yes", False),
        ("cns_status", "CNS3", True),
        ("cns_status", "CNS4", False),
        ("id", "INF 0001", False),
        ("id", "-x", False),
        ("id", "a" * 64, True),
        ("id", "a" * 65, False),
        ("protocol", "interfant06-blinatumomab@1.0.0", True),
        ("protocol", "Interfant06", False),
        ("birth_date", "2025-02-29", False),
        ("notes", "", False),
    ],
)
def test_patient_field_bounds(field: str, value: Any, ok: bool) -> None:
    data = patient(**{field: value})
    if ok:
        assert getattr(Patient.model_validate(data), field) == value
    else:
        with pytest.raises(ValidationError) as info:
            Patient.model_validate(data)
        assert info.value.errors()[0]["loc"][0] == field


@pytest.mark.parametrize(("value", "ok"), [(0, True), (1, True), (3e-4, True), (-1e-9, False), (1.0001, False),
                                           (math.nan, False)])
def test_mrd_value_is_a_fraction(value: float, ok: bool) -> None:
    data = {"timepoint": "pre_octadad", "date": "2026-09-22", "value": value}
    if ok:
        assert MrdResult.model_validate(data).value == value
    else:
        with pytest.raises(ValidationError):
            MrdResult.model_validate(data)


def test_patient_rejects_unknown_fields_and_is_frozen() -> None:
    with pytest.raises(ValidationError, match="Extra inputs"):
        Patient.model_validate(patient(name="Jane Doe"))
    p = Patient.model_validate(patient())
    with pytest.raises(ValidationError):
        p.wbc_at_diagnosis = 10  # type: ignore[misc]


def test_patient_missing_required_field() -> None:
    data = patient()
    del data["kmt2a"]
    with pytest.raises(ValidationError) as info:
        Patient.model_validate(data)
    assert [e["loc"] for e in info.value.errors()] == [("kmt2a",)]
