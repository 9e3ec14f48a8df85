"""Plausibility of heights and weights (protocol/_growth.py) and of dates: what cannot be a
child's measurement, or cannot have happened yet, is refused with the expected range (issue 11)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import protocol
from protocol import PatientError
from protocol import _growth
from protocol._growth import check_measurement
from protocol._models import Measurement

from .conftest import AS_OF, plausible_measurement

D = dt.date.fromisoformat
BIRTH = D("2026-01-01")


def test_a_62_kg_infant_is_refused_with_the_who_range() -> None:
    [wfa, wfl] = check_measurement(BIRTH, "female", D("2026-05-01"), 62, 62)
    assert wfa.refused and wfa.field == "weight_kg"
    assert wfa.message.startswith("62 kg at 4 months is weight-for-age z = +")
    assert wfa.message.endswith("expected z from -6 to +5 (WHO biologically implausible limits); check the "
                                "value and its unit")
    assert wfl.refused and "weight-for-length" in wfl.message


def test_grams_and_millimetres_say_so() -> None:
    [f] = check_measurement(BIRTH, "male", D("2026-05-01"), 62, 5200)
    assert f.refused and f.message == "expected a weight in kilograms, got 5200: this looks like grams (5.2 kg)"
    with pytest.raises(ValueError, match=r"looks like millimetres \(62 cm\)"):
        Measurement.model_validate({"date": "2026-05-01", "height_cm": 620, "weight_kg": 6})
    with pytest.raises(ValueError, match=r"looks like grams \(6\.2 kg\)"):
        Measurement.model_validate({"date": "2026-05-01", "height_cm": 62, "weight_kg": 6200})


def test_a_small_sick_infant_is_accepted_with_a_warning_never_refused() -> None:
    # 4 months, 62 cm, 4.6 kg: weight-for-age about -3.4 (a sick infant), weight-for-length > -5.
    findings = check_measurement(BIRTH, "female", D("2026-05-01"), 62, 4.6)
    assert findings and not any(f.refused for f in findings)
    assert any("beyond ±3: check it (accepted)" in f.message for f in findings)


def test_bsa_outside_the_range_is_refused() -> None:
    [f] = check_measurement(D("2000-01-01"), "male", D("2026-05-01"), 240, 290)
    assert f.refused and f.message.startswith("expected a body-surface area of 0.1 to 2.5 m², got 4.397 m² from 240 cm and 290 kg")


def test_unknown_sex_is_refused_only_when_both_standards_refuse() -> None:
    # A tall girl who is an average boy: accepted for unknown sex.
    boy = plausible_measurement("male", BIRTH, D("2026-07-01"), 2, 2)
    assert not any(f.refused for f in check_measurement(BIRTH, "unknown", D("2026-07-01"), boy["height_cm"],
                                                        boy["weight_kg"]))


@given(z=st.floats(-2, 2), dz=st.floats(-1, 1), days=st.integers(0, 3600),
       sex=st.sampled_from(["female", "male", "unknown"]))
def test_a_real_child_is_never_refused(z: float, dz: float, days: int, sex: str) -> None:
    """Any child within ±2 z of the WHO standard (height and weight within 1 z of each other)."""
    on = BIRTH + dt.timedelta(days=days)
    m = plausible_measurement(sex, BIRTH, on, z, max(-2.0, min(2.0, z + dz)))
    assert not [f for f in check_measurement(BIRTH, sex, on, m["height_cm"], m["weight_kg"]) if f.refused]


def test_the_plan_refuses_an_implausible_measurement_and_warns_beyond_3(make_patient: Callable[..., Path]) -> None:
    with pytest.raises(PatientError) as exc:
        protocol.plan(make_patient(measurements=[{"date": "2026-05-04", "height_cm": 66, "weight_kg": 62}]),
                      as_of=AS_OF)
    [first, *_] = exc.value.problems
    assert first.field == "measurements[0].weight_kg" and "weight-for-age z = +" in first.message
    p = protocol.plan(make_patient(measurements=[{"date": "2026-05-04", "height_cm": 62, "weight_kg": 5.0}]),
                      as_of=AS_OF)
    assert any(w.startswith("measurements[0]: 5 kg on 2026-05-04 at 6 months is weight-for-age z = -")
               for w in p.warnings)


def test_an_entry_dated_after_today_is_refused(make_patient: Callable[..., Path]) -> None:
    path = make_patient(events=[{"type": "element_started", "element": "induction", "date": "2026-05-04"},
                                {"type": "item_given", "item": "induction:prednisone@1", "date": "2062-05-04"}])
    with pytest.raises(PatientError) as exc:
        protocol.plan(path, as_of=AS_OF, today=D("2026-11-21"))
    assert [(p.field, p.message) for p in exc.value.problems] == [
        ("events[1].date", "expected a date on or before today (2026-11-21) (an entry cannot be dated after the "
                           "day it is recorded), got 2062-05-04")]
    # The real today by default.
    with pytest.raises(PatientError, match=f"on or before today \\({dt.date.today()}\\)"):
        protocol.plan(path, as_of=AS_OF)


# -- the float screen against pygrowup's exact computation -----------------------------------

#: Heights and weights as entered (one or two decimals) and anywhere in between, across and
#: beyond the WHO tables' ranges: the screen's range checks must match pygrowup's at the edges.
_HEIGHTS = st.one_of(st.floats(5, 230), st.integers(90, 2300).map(lambda n: n / 10),
                     st.sampled_from([10.0, 45.0, 44.95, 45.05, 65.0, 64.95, 110.0, 110.05, 120.0, 120.05, 200.0]))
_WEIGHTS = st.one_of(st.floats(0.5, 140), st.integers(50, 14000).map(lambda n: n / 100),
                     st.sampled_from([1.0, 0.99, 125.0, 125.01]))
_AGES = st.one_of(st.integers(0, 8000), st.sampled_from([0, 1, 729, 730, 1856, 1857, 3652, 3653, 6939, 6940]))


@given(sex=st.sampled_from(["female", "male"]), age=_AGES, height=_HEIGHTS, weight=_WEIGHTS)
def test_the_screen_computes_what_pygrowup_does(sex: str, age: int, height: float, weight: float) -> None:
    """The same indicators (tables, keys and range checks) as pygrowup's Observation, and
    each z-score within rounding of its exact value wherever that is within ±3 (beyond, the
    exact computation always runs: see check_measurement)."""
    screen = {name: v[0] for name, v in _growth._screen(sex, age, height, weight).items()}
    exact = _growth._scores(sex, age, height, weight)
    assert screen.keys() == exact.keys()
    for name, z in exact.items():
        if abs(z) <= 3:
            assert abs(screen[name] - z) <= 0.0051, (name, screen[name], z)


@given(sex=st.sampled_from(["female", "male", "unknown"]), age=_AGES, height=_HEIGHTS, weight=_WEIGHTS)
def test_the_screen_never_changes_a_finding(sex: str, age: int, height: float, weight: float) -> None:
    """check_measurement with the screen and the float figures gives exactly the findings of
    pygrowup's exact computation run on every measurement (a screen at 0 sends every
    measurement to it, and no float figure sends it to pygrowup)."""
    on = BIRTH + dt.timedelta(days=age)
    fast = check_measurement.__wrapped__(BIRTH, sex, on, height, weight)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(_growth, "_SCREEN", 0.0)
        m.setattr(_growth, "_float_exact", lambda *_: None)
        assert check_measurement.__wrapped__(BIRTH, sex, on, height, weight) == fast


#: Children anywhere from far below to far above the WHO median, so that every z-score near
#: and beyond ±3 (where the figure shown is the exact one) is reached, with weights and
#: heights entered to two and one decimals.
_Z = st.one_of(st.floats(-8, 8), st.sampled_from([-3.0, -2.995, -2.9, 2.9, 2.995, 3.0, 3.005, -3.005]))


def _figures_agree(sex: str, age: int, height: float, weight: float) -> None:
    screened = _growth._screen(sex, age, height, weight)
    exact = _growth._scores(sex, age, height, weight)
    assert screened.keys() == exact.keys()
    for name, (z, y, lms) in screened.items():
        figure = _growth._float_exact(name, z, y, lms)
        if figure is not None:  # None: the caller asks pygrowup
            assert figure == exact[name], (name, figure, exact[name])


@given(sex=st.sampled_from(["female", "male"]), age=st.integers(0, 3650), zh=_Z, zw=_Z)
def test_the_float_figure_is_pygrowups_to_the_hundredth(sex: str, age: int, zh: float, zw: float) -> None:
    """Where _float_exact gives a figure, it is exactly pygrowup's (rounded to 0.01, refined
    beyond ±3 for the weight-based indicators), on children generated at any z-score."""
    on = BIRTH + dt.timedelta(days=age)
    try:
        m = plausible_measurement(sex, BIRTH, on, zh, zw)
    except (ArithmeticError, ValueError, TypeError):  # no such child (a negative Box-Cox base)
        return
    if isinstance(m["height_cm"], float) and isinstance(m["weight_kg"], float):
        _figures_agree(sex, age, m["height_cm"], m["weight_kg"])


@given(sex=st.sampled_from(["female", "male"]), age=_AGES, height=_HEIGHTS, weight=_WEIGHTS)
def test_the_float_figure_is_pygrowups_at_any_value(sex: str, age: int, height: float, weight: float) -> None:
    """The same on any height and weight, inside and beyond the WHO tables' ranges."""
    _figures_agree(sex, age, height, weight)


def test_a_rounding_tie_goes_to_pygrowup() -> None:
    """A float within a hair of a tie in the second decimal gives no figure (pygrowup decides);
    away from one it rounds as Decimal.quantize rounds."""
    assert _growth._round2(2.995) is None
    assert _growth._round2(-3.005) is None
    assert _growth._round2(3.0049) == 3.0
    assert _growth._round2(-3.0051) == -3.01


def test_the_float_figures_stay_far_inside_the_tie_margin_on_every_who_row() -> None:
    """The float figures (the first pass, and the refinement beyond ±3 of the weight-based
    indicators) against 60-digit Decimals, on every row of the WHO weight-for-age,
    weight-for-length and weight-for-height tables, at the lightest and heaviest weight pygrowup
    takes (1 and 125 kg: the largest |z|): each error is under a tenth of the margin within
    which _round2 leaves the figure to pygrowup. This is what makes a float figure pygrowup's."""
    from decimal import Decimal, localcontext
    from importlib import import_module

    worst = 0.0
    with localcontext() as ctx:
        ctx.prec = 60
        for module in ("by_day.wfa", "by_day.wfl", "by_day.wfh", "by_month.wfa"):
            for rows in import_module(f"pygrowup.tables.{module}").DATA.values():
                for r in rows.values():
                    l_, m_, s_ = Decimal(r["l"]), Decimal(r["m"]), Decimal(r["s"])
                    lms = (float(l_), float(m_), float(s_))
                    for y in (1.0, 125.0):
                        yd = Decimal(repr(y))
                        z = _growth._float_z(y, lms)
                        first = float(((yd / m_) ** l_ - 1) / (s_ * l_))
                        assert abs(z - first) < _growth._tie_margin(first) / 10, (module, r, y, z, first)
                        if abs(z) <= 3:
                            continue
                        k = 1 if z > 0 else -1
                        sd3 = m_ * (1 + l_ * s_ * 3 * k) ** (1 / l_)
                        sd2 = m_ * (1 + l_ * s_ * 2 * k) ** (1 / l_)
                        exact = float(3 * k + (yd - sd3) / ((sd3 - sd2) * k))
                        refined = _growth._float_refined(y, lms, z > 0)
                        assert refined is not None
                        assert abs(refined - exact) < _growth._tie_margin(exact) / 10, (module, r, y, refined, exact)
                        worst = max(worst, abs(refined - exact) / max(1.0, abs(exact)))
    assert 0 < worst < 1e-10  # the comparison ran on real figures (1.5e-11 at worst, 2026-12)
