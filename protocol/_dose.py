"""Doses: from a definition's dose rule and the patient's measurements to one amount, its working
and its evidence.

The rules, applied in this order (README, "How dates and doses are computed"):

1. **weight band**: at or above a band's ``min_weight_kg``, the band's fixed amount replaces the
   computed dose (blinatumomab 28 µg/day at 45 kg or more, BLINCYTO label);
2. **weight switch**: below its weight, ``amount_per_kg`` × weight instead of per m²;
3. **the basis**: per m² × body-surface area (Mosteller, *unrounded*), per kg × weight, fixed,
   or the age band's amount;
4. **age fraction**: × the fraction of the youngest age band the child is in (completed months on
   the day of administration), e.g. × 2/3 under 6 months;
5. **cap**: no more than the cap;
6. **rounding, once, at the end**: to the definition's ``round_to`` increment (a drug's
   measurable volume or tablet step), else to 3 significant figures.

No intermediate value is rounded: the working shows the BSA to 3 decimals but the arithmetic uses
the exact value, so every dose is within rounding of the exact product (tests/test_dose.py).
The evidence of a dose is the weakest evidence of the parts that were actually used for this
patient on this day (a placeholder age fraction makes an otherwise published dose unverified).
"""

from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from ._machine import Slot
from ._models import EVIDENCE_RANK, Measurement

__all__ = ["DoseResult", "ModifiedDose", "fmt_amount", "mosteller", "round_dose"]

_UNIT_LABEL = {"per_m2": "/m²", "per_kg": "/kg", "fixed": "", "age_banded": ""}
_PER_LABEL = {"dose": "", "day": "/day", "week": "/week"}
#: Administrations a day by frequency (a continuous infusion has none to count).
PER_DAY = {"once_per_day": 1, "q12h": 2}
_FREQUENCY_TEXT = {"once_per_day": "one dose on the day", "q12h": "every 12 h (2 doses a day)",
                   "continuous": "continuous infusion"}


def mosteller(height_cm: float, weight_kg: float) -> float:
    """Body-surface area in m² by Mosteller: ``sqrt(height_cm × weight_kg / 3600)``, unrounded.

    >>> round(mosteller(60, 6), 3)
    0.316
    """
    return math.sqrt(height_cm * weight_kg / 3600.0)


def fmt_amount(x: float) -> str:
    """Three significant figures, never in exponent form, never a trailing zero: 18.6, 4.65,
    0.465, 3100, 4, 10.

    A trailing zero ("1.0 mg") is on the ISMP list of error-prone dose designations: it is read
    as 10 mg when the point is missed. A leading zero is always written (0.552, never .552).

    >>> fmt_amount(4.4159), fmt_amount(1170.0), fmt_amount(4.0), fmt_amount(9.996), fmt_amount(0.5524)
    ('4.42', '1170', '4', '10', '0.552')
    """
    if x == 0:
        return "0"
    rounded = float(f"{x:.3g}")  # round first: 9.996 becomes 10.0, not 10.00
    digits = max(0, 2 - math.floor(math.log10(abs(rounded))))
    text = f"{rounded:.{digits}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def round_dose(x: float, increment: float | None = None) -> float:
    """The final dose: to the nearest ``increment`` (half up) when the definition gives one,
    else to 3 significant figures. Applied once, to the final amount only.

    >>> round_dose(4.4159), round_dose(1173.4), round_dose(2.37, 0.5), round_dose(0.8333, 0.1)
    (4.42, 1170.0, 2.5, 0.8)
    """
    if x == 0:
        return 0.0
    if increment:
        step = Decimal(repr(increment))
        return float((Decimal(repr(x)) / step).quantize(Decimal(1), rounding=ROUND_HALF_UP) * step)
    return float(f"{x:.3g}")


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def _weakest(levels: list[str]) -> str:
    return min(levels, key=EVIDENCE_RANK.__getitem__)


class DoseResult:
    """A computed dose with its working shown.

    ``amount`` is the final dose (rounded once, see the module docstring) or None when it cannot
    be computed: the definition's value is an unknown placeholder, or no height/weight is
    recorded on or before the date (``reason`` says which). ``exact`` is the same dose before
    rounding. ``text`` states the amount per administration and how often
    (``1170 mg per dose, every 12 h (2 doses a day)``); ``working`` every factor.

    >>> d = plan("examples/patients/mr-on-time.yaml").items[0].dose  # doctest: +SKIP
    >>> d.text, d.working  # doctest: +SKIP
    ('18.4 mg/day, once a day', '60 mg/m²/day × 0.307 m² = 18.4 mg/day (BSA Mosteller, ...)')
    """

    __slots__ = ("_applied", "_dict", "_evidence", "_result", "_text", "age_months", "age_years", "bsa",
                 "measurement", "slot")

    def __init__(self, slot: Slot, measurement: Measurement | None, bsa: float | None, age_years: int,
                 age_months: int | None = None) -> None:
        # Only the inputs are stored; the arithmetic runs on first use (most plans are
        # rendered, but a cohort simulation never reads a dose).
        self.slot = slot
        self.measurement = measurement
        self.bsa = bsa
        self.age_years = age_years
        self.age_months = age_months
        # (amount, exact, capped, reason, steps, evidence levels used, unverified reasons)
        self._result: tuple[Any, ...] | None = None
        self._dict: dict[str, Any] | None = None
        self._evidence: str | None = None  # read for every item of the segment that shares this dose
        self._text: str | None = None  # the same: a worklist writes it for each due item of the segment

    def _computed(self) -> tuple[Any, ...]:
        if self._result is None:
            self._result = self._compute()
        return self._result

    def _compute(self) -> tuple[Any, ...]:
        d = self.slot.dose
        assert d is not None
        # The rules used (weight_band, weight_switch, age_fraction, cap...): set here, not in
        # __init__, since most doses of a plan are never computed.
        self._applied: list[str] = []
        levels = [self.slot.evidence]
        why: list[str] = []
        steps: list[str] = []

        def used(part: Any, what: str) -> None:
            if part is None:
                return
            levels.append(part.evidence)
            if part.evidence == "placeholder":
                why.append(f"{what} is a placeholder" + (f" ({part.note})" if getattr(part, "note", None) else ""))

        per = _PER_LABEL[self.per]
        unit = self.unit
        m = self.measurement
        weight = None if m is None else m.weight_kg
        value: float | None = None
        band = None
        if d.weight_bands and weight is not None:
            band = next((b for b in reversed(d.weight_bands) if b.min_weight_kg.value is not None
                         and weight >= b.min_weight_kg.value), None)
        switch = d.weight_switch
        if band is not None:
            self._applied.append("weight_band")
            used(band.min_weight_kg, "the weight band's limit")
            used(band.amount, "the weight band's dose")
            if band.amount.value is None:
                return None, None, False, "weight band dose not specified in the definition (placeholder)", steps, \
                    levels, why
            value = band.amount.value
            steps.append(f"weight {weight:g} kg ≥ {band.min_weight_kg.value:g} kg (on {m.date.isoformat()}) "  # type: ignore[union-attr]
                         f"→ fixed {_fmt(value)} {unit}{per}")
        elif (switch is not None and weight is not None and switch.below_weight_kg.value is not None
              and weight < switch.below_weight_kg.value):
            self._applied.append("weight_switch")
            used(switch.below_weight_kg, "the weight switch's limit")
            used(switch.amount_per_kg, "the per-kg dose below the weight limit")
            if switch.amount_per_kg.value is None:
                return None, None, False, "per-kg dose not specified in the definition (placeholder)", steps, \
                    levels, why
            value = switch.amount_per_kg.value * weight
            steps.append(f"weight {weight:g} kg < {switch.below_weight_kg.value:g} kg → per kg: "
                         f"{_fmt(switch.amount_per_kg.value)} {unit}/kg{per} × {weight:g} kg "
                         f"(on {m.date.isoformat()}) = {fmt_amount(value)} {unit}{per}")  # type: ignore[union-attr]
        else:
            if switch is not None:
                used(switch.below_weight_kg, "the weight switch's limit")
            if d.weight_bands:
                for b in d.weight_bands:
                    used(b.min_weight_kg, "a weight band's limit")
            if d.basis == "age_banded":
                b = self._band()
                used(b.amount, "the age band's dose")
            else:
                used(d.amount, "the dose")
            standard = self.standard
            if standard is None:
                return None, None, False, "not specified in the definition (placeholder)", steps, levels, why
            label = f"{_fmt(standard)} {unit}{_UNIT_LABEL[d.basis]}{per}"
            if d.basis == "per_m2":
                if self.bsa is None:
                    return None, None, False, "no height/weight recorded on or before this date", steps, levels, why
                value = standard * self.bsa
                assert m is not None
                steps.append(f"{label} × {self.bsa:.3f} m² = {fmt_amount(value)} {unit}{per} (BSA Mosteller, "
                             f"{m.height_cm:g} cm, {m.weight_kg:g} kg on {m.date.isoformat()})")
            elif d.basis == "per_kg":
                if m is None:
                    return None, None, False, "no weight recorded on or before this date", steps, levels, why
                value = standard * m.weight_kg
                steps.append(f"{label} × {m.weight_kg:g} kg (on {m.date.isoformat()}) = {fmt_amount(value)} "
                             f"{unit}{per}")
            elif d.basis == "fixed":
                value = standard
                steps.append(f"{label} (fixed dose)")
            else:
                value = standard
                steps.append(f"age {self.age_years} y on the day → band dose {_fmt(standard)} {unit}{per}")
            if d.age_fractions and self.age_months is not None:
                fraction = next((a for a in d.age_fractions if self.age_months < a.below_age_months), None)
                if fraction is not None:
                    self._applied.append("age_fraction")
                    used(fraction, f"the age fraction {fraction.fraction} under {fraction.below_age_months} months")
                    value *= fraction.value
                    steps.append(f"× {fraction.fraction}, age {self.age_months} months < "
                                 f"{fraction.below_age_months} months = {fmt_amount(value)} {unit}{per}")
                else:
                    # The full dose is given because the child is past every band: the bands'
                    # limits decided it.
                    for a in d.age_fractions:
                        used(a, f"the age limit {a.below_age_months} months of the age fractions")
                    steps.append(f"full dose, age {self.age_months} months ≥ {d.age_fractions[-1].below_age_months} "
                                 f"months")
        capped = False
        cap = d.cap
        if cap is not None and cap.value is not None and value > cap.value:
            self._applied.append("cap")
            used(cap, "the cap")
            value = cap.value
            capped = True
            steps.append(f"capped at {_fmt(cap.value)} {unit}{per}")
        increment = None if d.round_to is None else d.round_to.value
        if d.round_to is not None:
            used(d.round_to, "the rounding increment")
        amount = round_dose(value, increment)
        return amount, value, capped, None, steps, levels, why

    def _band(self) -> Any:
        d = self.slot.dose
        age = self.age_years
        return next(b for b in d.bands or () if b.below_age_years is None or age < b.below_age_years)  # type: ignore[union-attr]

    @property
    def standard(self) -> float | None:
        """The definition's amount (per m², per kg, fixed, or the age band's), or None if unknown."""
        d = self.slot.dose
        assert d is not None
        if d.basis == "age_banded":
            return self._band().amount.value
        return d.amount.value  # type: ignore[union-attr]

    @property
    def amount(self) -> float | None:
        """The final dose in ``unit`` (per ``per``), rounded once; None when it cannot be computed."""
        return self._computed()[0]

    @property
    def exact(self) -> float | None:
        """The dose before the final rounding (None when it cannot be computed)."""
        return self._computed()[1]

    @property
    def capped(self) -> bool:
        """True when the computed dose was reduced to the definition's cap."""
        return self._computed()[2]

    @property
    def reason(self) -> str | None:
        """Why there is no amount (a placeholder without value, or no measurement)."""
        return self._computed()[3]

    @property
    def evidence(self) -> str:
        """Weakest evidence of the numbers used for this dose on this day (and of its days)."""
        if self._evidence is None:
            self._evidence = _weakest(self._computed()[5])
        return self._evidence

    @property
    def unverified(self) -> bool:
        """True when the dose, or its days, depend on a placeholder."""
        return self.evidence == "placeholder"

    @property
    def unverified_reasons(self) -> tuple[str, ...]:
        """What makes the dose unverified, in words (empty when it is not)."""
        why = list(self._computed()[6])
        if self.slot.evidence == "placeholder" and not why:
            why.append("its dose or days are a placeholder")
        return tuple(why)

    @property
    def unit(self) -> str:
        """Unit of the amount (mg, µg, IU...)."""
        return self.slot.dose.unit  # type: ignore[union-attr]

    @property
    def per(self) -> str:
        """What the amount covers: dose, day or week."""
        return self.slot.dose.per  # type: ignore[union-attr]

    @property
    def basis(self) -> str:
        """per_m2, per_kg, fixed or age_banded."""
        return self.slot.dose.basis  # type: ignore[union-attr]

    @property
    def cap(self) -> float | None:
        """The maximum, if the definition sets one (in ``unit`` per ``per``)."""
        cap = self.slot.dose.cap  # type: ignore[union-attr]
        return None if cap is None else cap.value

    @property
    def frequency(self) -> str | None:
        """``once_per_day``, ``q12h`` or ``continuous`` (how the amount is given)."""
        return self.slot.frequency

    @property
    def administrations_per_day(self) -> int | None:
        """How many administrations a day (None for a continuous infusion)."""
        return PER_DAY.get(self.slot.frequency or "")

    @property
    def amount_text(self) -> str:
        """The amount with its unit and what it covers: ``1170 mg``, ``4.42 µg/day``."""
        if self.amount is None:
            return "not specified" if self.standard is None else "not computable"
        return f"{fmt_amount(self.amount)} {self.unit}{_PER_LABEL[self.per]}"

    @property
    def short_text(self) -> str:
        """The compact form for a day grid whose row is one day: the amount, and how often when
        it is not once: ``1170 mg ×2 (every 12 h)``, ``4.42 µg/day continuous``, ``0.552 mg``."""
        amount = self.amount_text
        if self.amount is None:
            return amount
        frequency = self.slot.frequency
        if frequency == "continuous":
            return f"{amount} continuous"
        if frequency == "q12h":
            return f"{amount} ×2 (every 12 h)" if self.per == "dose" else f"{amount} as 2 doses 12 h apart"
        return amount

    @property
    def text(self) -> str:
        """The dose as a reader must read it: the amount, per dose or per day, and how often.

        ``1170 mg per dose, every 12 h (2 doses a day)``; ``18.4 mg/day, once a day``;
        ``4.42 µg/day, continuous infusion``; ``not computable`` without a measurement.
        """
        # Made once: the inputs of a dose never change after it is made (see _computed).
        if self._text is None:
            self._text = self._make_text()
        return self._text

    def _make_text(self) -> str:
        if self.amount is None:
            return self.amount_text
        amount = self.amount_text
        frequency = self.slot.frequency or "once_per_day"
        if frequency == "continuous":
            return f"{amount}, continuous infusion"
        if self.per == "dose":
            return f"{amount} per dose, {_FREQUENCY_TEXT[frequency]}"
        if self.per == "day" and frequency == "q12h":
            return f"{amount} in total, as 2 doses 12 h apart"
        if self.per == "week":
            return f"{amount}, one administration on the day"
        return f"{amount}, once a day"

    @property
    def working(self) -> str:
        """How the dose was computed, every factor shown, ending with the rounded dose:
        ``15 µg/m²/day × 0.295 m² = 4.42 µg/day (BSA Mosteller, ...) → 4.42 µg/day``."""
        steps = self._computed()[4]
        if self.amount is None:
            per = _PER_LABEL[self.per]
            std = "?" if self.standard is None else _fmt(self.standard)
            d = self.slot.dose
            head = f"{std} {self.unit}{_UNIT_LABEL[self.basis]}{per}"
            if d is not None and d.basis == "age_banded":
                head = f"age {self.age_years} y on the day → band dose {std} {self.unit}{per}"
            return "; ".join([*steps, f"{head}: {self.reason}"]) if steps else f"{head}: {self.reason}"
        out = "; ".join(steps)
        exact = self.exact
        if exact is not None and fmt_amount(exact) != fmt_amount(self.amount):
            out += f"; rounded to {fmt_amount(self.amount)} {self.unit}{_PER_LABEL[self.per]}"
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (computed once: one dose object serves every item of its segment)."""
        if self._dict is None:
            self._dict = self._as_dict()
        return self._dict

    def _as_dict(self) -> dict[str, Any]:
        return {"amount": self.amount, "exact": None if self.exact is None else round(self.exact, 9),
                "unit": self.unit, "per": self.per, "basis": self.basis,
                "frequency": self.frequency, "administrations_per_day": self.administrations_per_day,
                "standard": self.standard, "bsa_m2": None if self.bsa is None or self.basis != "per_m2"
                else round(self.bsa, 4),
                "capped": self.capped, "rules_applied": list(self._applied) if self._computed() else [],
                "amount_text": self.amount_text,
                "text": self.text, "working": self.working, "evidence": self.evidence,
                "unverified": self.unverified, "unverified_reasons": list(self.unverified_reasons)}


class ModifiedDose(DoseResult):
    """A dose reduced by a recorded ``dose_modified`` event: ``percent`` of the standard dose
    (a percentage of the previous dose is turned into one of the standard when recorded).
    The percentage applies to the exact standard dose; the result is rounded once."""

    __slots__ = ("percent", "why")

    def __init__(self, base: DoseResult, percent: float, why: str) -> None:
        super().__init__(base.slot, base.measurement, base.bsa, base.age_years, base.age_months)
        self.percent = percent
        self.why = why

    def _compute(self) -> tuple[Any, ...]:
        amount, exact, capped, reason, steps, levels, why = super()._compute()
        if exact is None:
            return amount, exact, capped, reason, steps, levels, why
        d = self.slot.dose
        self._applied.append("modified")
        value = exact * self.percent / 100.0
        increment = None if d is None or d.round_to is None else d.round_to.value
        steps = [*steps, f"× {self.percent:g} % ({self.why}) = {fmt_amount(value)} {self.unit}{_PER_LABEL[self.per]}"]
        return round_dose(value, increment), value, capped, reason, steps, levels, why

    @property
    def working(self) -> str:
        """The standard working, then the modification: ``… × 75 % (reason) = …``."""
        base = super().working
        if self.amount is None:
            return f"{base}; modified to {self.percent:g} % ({self.why})"
        return base

    def _as_dict(self) -> dict[str, Any]:
        d = super()._as_dict()
        d["percent"] = self.percent
        return d
