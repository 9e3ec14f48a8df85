"""The file formats: protocol definitions and patient files, as pydantic v2 models.

These models are used at the edges only: a definition is validated once when loaded and
then compiled (see ``_machine``); a patient file is validated once per plan. Nothing in
the per-dose hot path touches pydantic.

Every clinical number in a definition is a :class:`SourcedNumber` (or
:class:`SourcedDays`): the value, the key of a source in the definition's bibliography and
an evidence level:

- ``published``: stated in the cited public source;
- ``derived``: follows from a cited source (e.g. day 29 = the day after a 28-day infusion);
- ``placeholder``: not confirmed from a public source. Documents show it as *unverified*.
  A placeholder may have ``value: null``: the number is not known at all, and nothing is
  computed from it.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ._io import DATE_RANGE
from ._pseudonym import check_pseudonym

__all__ = [
    "AgeBand",
    "Administration",
    "Repeat",
    "Replacement",
    "Verification",
    "BagOption",
    "BloodCount",
    "CountGate",
    "Infusion",
    "Window",
    "Arm",
    "Assessment",
    "Condition",
    "DerivedFact",
    "AgeFraction",
    "Dose",
    "InfantFullDose",
    "WeightBand",
    "WeightSwitch",
    "EligibilityRule",
    "Element",
    "EndOfTherapy",
    "Event",
    "Measurement",
    "MrdResult",
    "Patient",
    "ProtocolDefinition",
    "Randomisation",
    "RiskGroup",
    "Source",
    "SourcedDays",
    "SourcedNumber",
    "StartRule",
    "TimePoint",
    "Transition",
    "parse_days",
]

Evidence = Literal["published", "derived", "site", "placeholder"]
#: Weakest first: an item's evidence is the weakest of the numbers it depends on. A ``site``
#: value was checked against the official protocol document by a named person at a site (a
#: site amendment): stronger than a placeholder, but not a public source.
EVIDENCE_RANK: dict[str, int] = {"placeholder": 0, "site": 1, "derived": 2, "published": 3}

Ident = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)]
SourceKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_.-]*$", max_length=64)]
Text = Annotated[str, StringConstraints(min_length=1, strip_whitespace=True)]


_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


#: Text → date already checked by :func:`_iso_date` (a registry replays the same days for
#: every patient; parsing them again is most of validating an event). Bounded.
_DATES: dict[str, dt.date] = {}


def _iso_date(value: Any) -> Any:
    # Only a calendar date YYYY-MM-DD: pydantic would also take a Unix timestamp
    # (diagnosis_date: 0 -> 1970-01-01) or a date-time, which a clinical file must never mean.
    if type(value) is str:  # the common case first: text from a file or the registry
        day = _DATES.get(value)
        if day is None:
            day = _checked_date(value)
            if len(_DATES) < 100_000:
                _DATES[value] = day
        return day
    if isinstance(value, dt.datetime):
        raise ValueError(f"expected a date YYYY-MM-DD, got a date and time {value.isoformat()!r}")
    if isinstance(value, str):
        return _checked_date(value)
    if isinstance(value, dt.date):
        return _in_range(value)
    raise ValueError(f"expected a date YYYY-MM-DD, got {value}")


def _checked_date(value: str) -> dt.date:
    text = value.strip()
    if not _ISO_DATE.match(text):
        raise ValueError(f"expected a date YYYY-MM-DD, got {value!r}")
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"expected a date YYYY-MM-DD, got {value!r} (no such day)") from None
    return _in_range(day)


def _in_range(value: dt.date) -> dt.date:
    # A plan runs years past its dates: 9999-01-01 would overflow the calendar mid-plan.
    if not DATE_RANGE[0] <= value <= DATE_RANGE[1]:
        raise ValueError(f"expected a date from {DATE_RANGE[0]} to {DATE_RANGE[1]}, got {value}")
    return value


#: A calendar date written YYYY-MM-DD, nothing else.
IsoDate = Annotated[dt.date, BeforeValidator(_iso_date)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# --------------------------------------------------------------------------- provenance


class Verification(_Strict):
    """Who checked a value against the official protocol document, when, and where it is."""

    site: Text
    by: Text
    on: IsoDate
    section: Text = Field(description="The protocol document and section, e.g. 'Interfant-06 v1.3 §6.2.1'.")
    file: str | None = Field(None, description="The site amendment file it came from (set when applied).")


class _Provenance(_Strict):
    evidence: Evidence
    source: SourceKey | None = Field(None, description="Key of an entry in the definition's `sources`.")
    note: Text | None = Field(None, description="Why this value, and how sure: shown beside unverified values.")
    verified: Verification | None = Field(None, description="Set by a site amendment (evidence: site).")

    @model_validator(mode="after")
    def _needs_source(self) -> Any:
        if self.evidence not in ("placeholder", "site") and self.source is None:
            raise ValueError(f"a {self.evidence} value must name its source (the key of an entry in `sources`)")
        if (self.evidence == "site") != (self.verified is not None):
            raise ValueError("a site value carries `verified` (site, by, on, section), and only a site value does")
        return self


class SourcedNumber(_Provenance):
    """A clinical number with its provenance, e.g. ``{value: 15, evidence: published, source: vandersluis2023}``."""

    value: float | None = Field(description="The number; null only for a placeholder whose value is unknown.")

    @model_validator(mode="after")
    def _value_rules(self) -> Any:
        if self.value is None and self.evidence != "placeholder":
            raise ValueError("only a placeholder may have value: null (an unknown number)")
        if self.value is not None and not math.isfinite(self.value):
            raise ValueError(f"expected a finite number, got {self.value}")
        return self

    @property
    def known(self) -> bool:
        """True when there is a number to compute with."""
        return self.value is not None


#: No element, gap or window of a therapy can be longer (issue 16: length_days 3000000 ran
#: a plan past year 9999).
MAX_DAYS = 3653


def _positive(number: SourcedNumber | None) -> SourcedNumber | None:
    # A dose amount or cap of 0 or less is impossible, whatever its evidence level.
    if number is not None and number.value is not None and number.value <= 0:
        raise ValueError(f"expected an amount > 0, got {number.value:.15g}")
    return number


def _days(number: SourcedNumber | None, low: int, high: int = MAX_DAYS, unit: str = "days") -> SourcedNumber | None:
    if number is not None and number.value is not None and not low <= number.value <= high:
        raise ValueError(f"expected a number of {unit} from {low} to {high} (10 years), got {number.value:.15g}")
    return number


DayTerm = tuple[int, int | None, int]  # (first, last or None for "end", step)
_TERM = re.compile(r"^\s*(-?\d+)\s*(?:-\s*(-?\d+|end)\s*(?:/\s*(\d+))?)?\s*$")


def parse_days(spec: str | int | list[int | str]) -> tuple[DayTerm, ...]:
    """Parse a day specification into terms.

    Accepted: ``"1-7"``, ``"8, 15, 22, 29"``, ``"38-41, 45-48"``, ``"1-end"`` (every day to
    the end of an open-ended element), ``"1-end/7"`` (every 7th day), ``"1-28/7"``, or a list
    of whole numbers and such strings.

    >>> parse_days("1-7, 15")
    ((1, 7, 1), (15, 15, 1))
    """
    parts: list[str] = []
    if isinstance(spec, bool):
        raise ValueError(f"expected day numbers such as '1-7, 15', got {spec!r}")
    if isinstance(spec, int):
        parts = [str(spec)]
    elif isinstance(spec, str):
        parts = [p for p in spec.split(",")]
    else:
        for item in spec:
            if isinstance(item, bool) or not isinstance(item, (int, str)):
                raise ValueError(f"expected day numbers such as '1-7, 15', got {item!r}")
            parts.extend(str(item).split(","))
    terms: list[DayTerm] = []
    for part in parts:
        m = _TERM.match(part)
        if not m:
            raise ValueError(f"expected day numbers such as '1-7, 15' or '1-end/7', got {part.strip()!r}")
        first = int(m.group(1))
        last_s, step_s = m.group(2), m.group(3)
        last = None if last_s == "end" else int(last_s) if last_s is not None else first
        step = int(step_s) if step_s else 1
        if step < 1:
            raise ValueError(f"expected a step of at least 1 day, got {part.strip()!r}")
        if last is not None and last < first:
            raise ValueError(f"expected a range whose end is not before its start, got {part.strip()!r}")
        terms.append((first, last, step))
    if not terms:
        raise ValueError("expected at least one day")
    return tuple(terms)


class SourcedDays(_Provenance):
    """Element days with provenance, e.g. ``{value: "8, 15, 22, 29", evidence: placeholder}``.

    ``value: null`` (placeholder only) means the days are not known: the drug is listed in
    the element's drug table but no dated item is produced for it.
    """

    value: str | int | list[int | str] | None

    @field_validator("value")
    @classmethod
    def _parse(cls, v: Any) -> Any:
        if v is not None:
            parse_days(v)
        return v

    @model_validator(mode="after")
    def _null_only_placeholder(self) -> Any:
        if self.value is None and self.evidence != "placeholder":
            raise ValueError("only a placeholder may have value: null (unknown days)")
        return self

    @property
    def terms(self) -> tuple[DayTerm, ...]:
        """The parsed terms (empty when the days are unknown)."""
        return () if self.value is None else parse_days(self.value)

    @property
    def text(self) -> str:
        """The days as written, for documents."""
        if self.value is None:
            return "not specified"
        if isinstance(self.value, list):
            return ", ".join(str(x) for x in self.value)
        return str(self.value)


# --------------------------------------------------------------------------- conditions


class Condition(_Strict):
    """A guard or rule, as data. Exactly one of these shapes:

    - ``{all: [...]}``, ``{any: [...]}``, ``{not: {...}}``;
    - ``{fact: NAME, OP: VALUE}`` with OP one of ``eq``, ``ne``, ``in`` (categorical facts) or
      ``lt``, ``lte``, ``gt``, ``gte`` (numeric facts; the value is a :class:`SourcedNumber`);
    - ``{mrd: TIMEPOINT, OP: VALUE}``: the MRD result (a fraction) at a named time point;
    - ``{arm: RANDOMISATION, OP: ARM}`` with OP ``eq``, ``ne`` or ``in``: the arm a patient was
      randomised to (unknown until the ``randomised`` event is recorded).

    Facts that are not yet known make a condition *unknown* rather than false, so a decision
    that waits for a result is reported as pending.
    """

    all_: list[Condition] | None = Field(None, alias="all", min_length=1)
    any_: list[Condition] | None = Field(None, alias="any", min_length=1)
    not_: Condition | None = Field(None, alias="not")
    fact: Ident | None = None
    mrd: Ident | None = None
    arm: Ident | None = None
    eq: str | None = None
    ne: str | None = None
    in_: list[str] | None = Field(None, alias="in", min_length=1)
    lt: SourcedNumber | None = None
    lte: SourcedNumber | None = None
    gt: SourcedNumber | None = None
    gte: SourcedNumber | None = None

    @model_validator(mode="after")
    def _one_shape(self) -> Any:
        heads = [k for k in ("all_", "any_", "not_", "fact", "mrd", "arm") if getattr(self, k) is not None]
        ops = [k for k in ("eq", "ne", "in_", "lt", "lte", "gt", "gte") if getattr(self, k) is not None]
        names = [h.rstrip("_") for h in heads]
        if len(heads) != 1:
            raise ValueError(
                "expected exactly one of all, any, not, fact, mrd, arm; got "
                + (", ".join(names) if names else "none of them")
            )
        if heads[0] in ("fact", "mrd", "arm"):
            if len(ops) != 1:
                got = ", ".join(o.rstrip("_") for o in ops) or "none"
                raise ValueError(f"expected exactly one comparison (eq, ne, in, lt, lte, gt, gte), got {got}")
            if heads[0] == "mrd" and ops[0] in ("eq", "ne", "in_"):
                raise ValueError("an MRD comparison must be numeric (lt, lte, gt, gte)")
            if heads[0] == "arm" and ops[0] not in ("eq", "ne", "in_"):
                raise ValueError("an arm comparison must be eq, ne or in")
            for op in ("lt", "lte", "gt", "gte"):
                v = getattr(self, op)
                if v is not None and v.value is None:
                    raise ValueError("a threshold must have a value: a guard cannot compare with an unknown number")
        elif ops:
            raise ValueError(f"{names[0]} takes no comparison; put comparisons in the conditions inside it")
        return self

    @property
    def op(self) -> tuple[str, Any]:
        """The comparison of a leaf condition as ``(operator, operand)``."""
        for name in ("eq", "ne", "in_", "lt", "lte", "gt", "gte"):
            v = getattr(self, name)
            if v is not None:
                return name.rstrip("_"), v
        raise AttributeError("not a leaf condition")


# --------------------------------------------------------------------------- protocol


class Source(_Strict):
    """One entry of a definition's bibliography."""

    key: SourceKey
    citation: Text
    doi: str | None = None
    url: str | None = None
    note: Text | None = None


class AgeBand(_Strict):
    """One row of an age-banded dose table: applies while age (completed years on the day of
    administration) is below ``below_age_years`` (the last band has none)."""

    below_age_years: int | None = Field(None, ge=1, le=30)
    amount: SourcedNumber

    _possible = field_validator("amount")(classmethod(lambda cls, v: _positive(v)))


Unit = Literal["mg", "g", "µg", "IU", "mL"]


class WeightBand(_Strict):
    """From ``min_weight_kg`` up, a fixed dose replaces the computed one (in the dose's unit and
    ``per``): blinatumomab is 28 µg/day fixed at 45 kg or more (BLINCYTO label)."""

    min_weight_kg: SourcedNumber
    amount: SourcedNumber

    _possible = field_validator("min_weight_kg", "amount")(classmethod(lambda cls, v: _positive(v)))


class WeightSwitch(_Strict):
    """Below ``below_weight_kg`` the dose is ``amount_per_kg`` × weight instead of per m² (the
    infant rule of protocols that dose small children by weight)."""

    below_weight_kg: SourcedNumber
    amount_per_kg: SourcedNumber

    _possible = field_validator("below_weight_kg", "amount_per_kg")(classmethod(lambda cls, v: _positive(v)))


class AgeFraction(_Provenance):
    """A fraction of the computed dose for children younger than ``below_age_months`` (completed
    months on the day of administration), e.g. ``{below_age_months: 6, fraction: "2/3"}``:
    Interfant-99 gave two thirds of the BSA dose of high-dose methotrexate under 6 months and
    three quarters from 6 to 12 months (Lönnerholm 2009, doi:10.1002/pbc.21925)."""

    below_age_months: int = Field(ge=1, le=36)
    fraction: str = Field(pattern=r"^[1-9][0-9]*/[1-9][0-9]*$", description="A fraction such as 2/3.")

    @field_validator("fraction")
    @classmethod
    def _proper(cls, v: str) -> str:
        num, den = (int(x) for x in v.split("/"))
        if not 0 < num < den:
            raise ValueError(f"expected a fraction below 1 such as 2/3, got {v}")
        return v

    @property
    def value(self) -> float:
        """The fraction as a number (2/3 → 0.666…), never rounded."""
        num, den = (int(x) for x in self.fraction.split("/"))
        return num / den

    @property
    def text(self) -> str:
        """The rule in words: ``2/3 of the dose under 6 months``."""
        return f"{self.fraction} of the dose under {self.below_age_months} months"


class InfantFullDose(_Provenance):
    """The definition's statement, with its source, that a per-m² dose is given unreduced to
    infants (blinatumomab: "infants are always BSA-dosed", label). Without it, or an age or
    weight rule, a per-m² dose planned for a child under 12 months carries a warning."""

    @property
    def value(self) -> bool:
        """Always True: the statement holds (what ``protocol validate`` lists)."""
        return True

    @property
    def text(self) -> str:
        """The statement in words."""
        return "full per-m² dose in infants (no age reduction)"


class Dose(_Strict):
    """How a dose is computed.

    ``basis``: ``per_m2`` (× body-surface area, Mosteller), ``per_kg`` (× weight), ``fixed``,
    or ``age_banded`` (a table of bands by age on the day of administration).
    ``per``: what the amount covers (one dose, a day, a week) — used only for display.
    ``cap``: the most one administration may be, in ``unit``.
    """

    basis: Literal["per_m2", "per_kg", "fixed", "age_banded"]
    amount: SourcedNumber | None = None
    unit: Unit
    per: Literal["dose", "day", "week"] = "dose"
    cap: SourcedNumber | None = None
    bands: list[AgeBand] | None = Field(None, min_length=1)
    round_to: SourcedNumber | None = Field(None, description="The measurable increment the final dose is rounded "
                                           "to (e.g. 0.1 mg); without it, 3 significant figures.")
    weight_bands: list[WeightBand] | None = Field(None, min_length=1)
    weight_switch: WeightSwitch | None = None
    age_fractions: list[AgeFraction] | None = Field(None, min_length=1)
    infant_full_dose: InfantFullDose | None = None

    _possible = field_validator("amount", "cap", "round_to")(classmethod(lambda cls, v: _positive(v)))

    @field_validator("unit", mode="before")
    @classmethod
    def _micro(cls, v: Any) -> Any:
        return "µg" if v in ("ug", "mcg", "μg") else v

    @model_validator(mode="after")
    def _shape(self) -> Any:
        if self.basis == "age_banded":
            if not self.bands:
                raise ValueError("an age_banded dose needs `bands`")
            if self.amount is not None:
                raise ValueError("an age_banded dose takes its amounts from `bands`, not `amount`")
            bounds = [b.below_age_years for b in self.bands]
            if bounds[-1] is not None or any(b is None for b in bounds[:-1]):
                raise ValueError("every band but the last needs below_age_years; the last band has none")
            if any(a >= b for a, b in zip(bounds[:-2], bounds[1:-1], strict=False)):  # type: ignore[operator]
                raise ValueError("bands must be in increasing order of below_age_years")
        else:
            if self.amount is None:
                raise ValueError(f"a {self.basis} dose needs `amount`")
            if self.bands is not None:
                raise ValueError("only an age_banded dose has `bands`")
        if self.weight_switch is not None and self.basis != "per_m2":
            raise ValueError("a weight_switch (per kg below a weight) applies only to a per_m2 dose")
        if self.age_fractions is not None:
            if self.basis not in ("per_m2", "per_kg"):
                raise ValueError("age_fractions reduce a computed dose: only per_m2 or per_kg")
            months = [a.below_age_months for a in self.age_fractions]
            if months != sorted(set(months)):
                raise ValueError(f"expected age_fractions in increasing order of below_age_months, got {months}")
        if self.weight_bands is not None:
            if self.basis not in ("per_m2", "per_kg"):
                raise ValueError("weight_bands replace a computed dose: only per_m2 or per_kg")
            kgs = [b.min_weight_kg.value for b in self.weight_bands]
            if any(k is None for k in kgs) or kgs != sorted(set(kgs)):  # type: ignore[type-var]
                raise ValueError(f"expected weight_bands in increasing order of min_weight_kg, got {kgs}")
        return self


Route = Literal["IV", "PO", "IT", "SC", "IM", "IV/IM", "IV/PO"]


class Window(_Strict):
    """The allowed window around an item's due date, in days: done up to ``before`` days
    early or ``after`` days late is on time; outside it, or not done ``after`` days past the
    due date, is a protocol deviation (the REDCap/Vulcan "offset window")."""

    before: SourcedNumber
    after: SourcedNumber

    _possible = field_validator("before", "after")(classmethod(lambda cls, v: _days(v, 0)))

    @model_validator(mode="after")
    def _whole_days(self) -> Any:
        for name in ("before", "after"):
            v = getattr(self, name).value
            if v is None or v < 0 or v != int(v):
                raise ValueError(f"expected {name} as a whole number of days >= 0, got {v}")
        return self


class BagOption(_Strict):
    """A bag duration allowed for a continuous infusion, e.g. ``{hours: {value: 96, ...}}``;
    ``min_weight_kg`` restricts it (the blinatumomab 7-day bag is not for patients under 22 kg)."""

    hours: SourcedNumber
    min_weight_kg: SourcedNumber | None = None

    @model_validator(mode="after")
    def _known_hours(self) -> Any:
        if self.hours.value is None or not 1 <= self.hours.value <= 24 * 14:
            raise ValueError(f"expected a bag duration of 1 to 336 hours, got {self.hours.value}")
        return self


class Infusion(_Strict):
    """Rules of a continuous infusion: how long an interruption may last before the cycle has
    to start again, and the bag durations a pharmacy may use (bag changes become plan items)."""

    max_interruption_days: SourcedNumber = Field(description="An interruption up to this many days continues the "
                                                 "cycle to its full number of infusion days; a longer one starts a "
                                                 "new cycle.")
    bags: list[BagOption] = Field(min_length=1)
    default_bag_hours: SourcedNumber = Field(description="The bag duration planned until one is recorded.")

    @model_validator(mode="after")
    def _default_is_a_bag(self) -> Any:
        hours = [b.hours.value for b in self.bags]
        if len(set(hours)) != len(hours):
            raise ValueError(f"expected each bag duration once, got {hours}")
        if self.default_bag_hours.value not in hours:
            raise ValueError(f"expected default_bag_hours to be one of the bags ({', '.join(f'{h:g}' for h in hours)}), "
                             f"got {self.default_bag_hours.value}")
        if self.max_interruption_days.value is None or self.max_interruption_days.value < 0:
            raise ValueError("expected max_interruption_days as a number of days >= 0")
        return self


class Administration(_Strict):
    """One drug given in an element: what, how much, on which element days."""

    id: Ident | None = Field(None, description="Stable id within the element; defaults to the drug name in snake_case.")
    drug: Text
    route: Route
    dose: Dose
    days: SourcedDays
    frequency: Literal["once_per_day", "q12h", "continuous"] = Field(
        "once_per_day", description="once_per_day: one dose on each listed day; q12h: two doses 12 h apart; "
        "continuous: a continuous infusion running through the listed days."
    )
    notes: list[Text] = []
    window: Window | None = None
    infusion: Infusion | None = Field(None, description="Only for a continuous infusion: interruption and bag rules.")
    anthracycline: SourcedNumber | None = Field(
        None, description="An anthracycline: its doxorubicin-equivalence factor (isotoxic, for the cumulative "
        "exposure on the roadmap cover and in the plan); value null while no source has been read for it.")
    on_infusion_restart: SourcedNumber | None = Field(
        None, description="Planned again on the day the element's continuous infusion restarts after an "
        "interruption of at least this many hours (blinatumomab label: dexamethasone premedication, 4 h).")

    @model_validator(mode="after")
    def _infusion_only_continuous(self) -> Any:
        if self.infusion is not None and self.frequency != "continuous":
            raise ValueError("`infusion` rules apply only to a continuous infusion (frequency: continuous)")
        return self

    @property
    def key(self) -> str:
        """The administration's id (explicit, or derived from the drug name)."""
        return self.id or re.sub(r"[^a-z0-9]+", "_", self.drug.lower()).strip("_")


class Assessment(_Strict):
    """A planned study: marrow, MRD sample, lumbar puncture, blood count..."""

    id: Ident
    name: Text
    kind: Literal["mrd", "bone_marrow", "lumbar_puncture", "blood_count", "peripheral_blasts", "other"]
    days: SourcedDays
    timepoint: Ident | None = Field(None, description="The time point whose result this sample gives (e.g. pre_octadad).")
    window: Window | None = None


class CountGate(_Strict):
    """Blood counts (×10⁹/L) that must have recovered before an element may start. A threshold
    that is a placeholder without value cannot be checked: the start is then projected on the
    earliest date and the plan says the gate is unverified."""

    anc_min: SourcedNumber | None = Field(None, description="Neutrophils at least this (×10⁹/L).")
    platelets_min: SourcedNumber | None = Field(None, description="Platelets at least this (×10⁹/L).")

    @model_validator(mode="after")
    def _some_threshold(self) -> Any:
        if self.anc_min is None and self.platelets_min is None:
            raise ValueError("expected anc_min and/or platelets_min")
        return self


class StartRule(_Strict):
    """When an element starts: ``gap_days`` after the previous element's last day, or, with
    ``counts``, on that day or when the counts have recovered, whichever is later."""

    gap_days: SourcedNumber | None = Field(None, description="Days between the previous element's last day and this "
                                           "one's day 1 (0 or omitted: the next day).")
    counts: CountGate | None = None

    _possible = field_validator("gap_days")(classmethod(lambda cls, v: _days(v, 0)))


class Repeat(_Strict):
    """Consecutive cycles of one element: cycle 1 keeps the element's id, cycle k is
    ``<id>_<k>``; an MRD time point sampled in cycle k > 1 is ``<timepoint>_<k>``.

    ``up_to: true``: ``count`` is a maximum. After each cycle but the last, a clinical choice
    (``<id>_after_<k>``: ``another_cycle`` or ``no_more_cycles``) decides whether another cycle
    follows or the element's way out is taken; recording the next start records the choice,
    and until then the plan shows both."""

    count: SourcedNumber
    up_to: bool = False
    gap_days: SourcedNumber | None = Field(None, description="Days between one cycle's last day and the next "
                                           "cycle's day 1 (e.g. a treatment-free interval).")

    _possible = field_validator("gap_days")(classmethod(lambda cls, v: _days(v, 0)))

    @model_validator(mode="after")
    def _count(self) -> Any:
        v = self.count.value
        if v is None or v != int(v) or not 2 <= v <= 20:
            raise ValueError(f"expected a whole number of cycles from 2 to 20, got {v:g}" if v is not None else "expected the number of cycles (a placeholder count needs a value)")
        return self


class Replacement(_Strict):
    """This element takes the place of ``element`` for patients for whom ``when`` holds: it is
    entered wherever that element would be, and leaves the way that element does."""

    element: Ident
    when: Condition
    rule_source: SourceKey
    rule_evidence: Evidence


class EligibilityRule(_Strict):
    """A condition every patient must meet; ``message`` is shown when it is not met."""

    id: Ident
    when: Condition
    message: Text
    source: SourceKey
    evidence: Evidence


class Element(_Strict):
    """A course (an *element* in CDISC terms): induction, a blinatumomab cycle, maintenance..."""

    id: Ident
    title: Text
    description: Text | None = None
    length_days: SourcedNumber | None = Field(None, description="Planned length; omit for an open-ended element.")
    until: Literal["end_of_therapy"] | None = Field(None, description="Open-ended: runs to the end of therapy.")
    final: bool = Field(False, description="A final state: no transitions out; the plan ends when this element "
                        "ends (maintenance) or, without a length, when it starts (hsct).")
    first_day: int = Field(1, ge=-30, le=400, description="Number of the element's first day (1, 0, or e.g. 36 "
                           "for BFM numbering that continues from the previous element).")
    start: StartRule | None = None
    requires: list[EligibilityRule] = Field([], description="Conditions a patient must meet to be planned into "
                                            "this element (the blinatumomab cycle: CD19-positive, < 25 % marrow "
                                            "blasts at the end of induction); a start recorded against them is refused.")
    administrations: list[Administration] = []
    assessments: list[Assessment] = []
    notes: list[Text] = []
    repeat: Repeat | None = None
    replaces: Replacement | None = None

    @model_validator(mode="after")
    def _length_shape(self) -> Any:
        given = [n for n, v in (("length_days", self.length_days), ("until", self.until)) if v is not None]
        if len(given) > 1:
            raise ValueError("expected one of length_days or until, not both")
        if not given and not self.final:
            raise ValueError("expected length_days or until (only a final element may have neither)")
        return self

    _length_possible = field_validator("length_days")(classmethod(lambda cls, v: _days(v, 1)))


class Transition(_Strict):
    """An edge of the protocol graph. Edges from one element are tried in order; the
    first whose ``when`` holds is taken; an edge without ``when`` is the default and
    must come last."""

    source: Ident = Field(alias="from")
    to: Ident
    when: Condition | None = None
    decision: Ident | None = Field(None, description="Id of the decision point (e.g. pre_octadad).")
    label: Text | None = None
    rule_source: SourceKey | None = Field(None, description="Source of the rule in `when`.")
    rule_evidence: Evidence | None = None


class RiskGroup(_Strict):
    """A risk group; groups are tried in order and the first whose rule holds is assigned."""

    id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_]*$", max_length=32)]
    label: Text
    when: Condition | None = Field(None, description="Omit for the group that takes everyone left.")
    source: SourceKey
    evidence: Evidence
    note: Text | None = None


class DerivedCase(_Strict):
    value: str
    when: Condition


class DerivedFact(_Strict):
    """A categorical fact computed from others when the patient file does not give it,
    e.g. prednisone response from the day-8 blast count."""

    id: Ident
    cases: list[DerivedCase] = Field(min_length=1)
    otherwise: str | None = Field(None, description="Value when every case is false (not when one is unknown).")


class Arm(_Strict):
    """One arm of a randomisation."""

    id: Ident
    label: Text


class Randomisation(_Strict):
    """A randomisation point: the arm is a recorded event (``randomised``); until it is
    recorded, guards that read it are unknown and the plan shows every arm.

    ``kind: choice`` is a clinical decision rather than a randomisation (e.g. another cycle
    while a transplant is arranged): recording the start of the element it leads to records
    the option too."""

    id: Ident
    label: Text
    arms: list[Arm] = Field(min_length=2)
    source: SourceKey
    evidence: Evidence
    kind: Literal["randomisation", "choice"] = "randomisation"


class TimePoint(_Strict):
    """A named sampling point whose result (MRD) guards may read."""

    id: Ident
    label: Text


class EndOfTherapy(_Strict):
    """Therapy ends ``weeks`` after the anchor date: the last day of the open-ended element
    is ``anchor + 7 × weeks - 1`` (the anchor date is day 1). The anchor is the diagnosis
    date, the treatment start, or (``element_start``) the start of ``anchor_element``, e.g.
    two years from the start of interim maintenance I in AALL1731."""

    anchor: Literal["diagnosis", "treatment_start", "element_start"]
    anchor_element: Ident | None = None
    weeks: SourcedNumber | None = None
    years: SourcedNumber | None = Field(None, description="Calendar years instead of weeks (AALL1731: two years "
                                        "from interim maintenance I): the anchor's date N years on, minus a day.")
    element: Ident

    _possible = field_validator("weeks")(classmethod(lambda cls, v: _days(v, 1, MAX_DAYS // 7, "weeks")))
    _possible_years = field_validator("years")(classmethod(lambda cls, v: _days(v, 1, 10, "years")))

    @model_validator(mode="after")
    def _anchor_element(self) -> Any:
        if (self.anchor == "element_start") != (self.anchor_element is not None):
            raise ValueError("anchor: element_start needs anchor_element (and only it takes one)")
        if (self.weeks is None) == (self.years is None):
            raise ValueError("expected the length as `weeks` or as `years` (one of them)")
        if self.years is not None and self.years.value is not None and self.years.value != int(self.years.value):
            raise ValueError(f"expected a whole number of years, got {self.years.value:g}")
        return self

    @property
    def length(self) -> SourcedNumber:
        """The sourced number that gives the length (``weeks`` or ``years``)."""
        return self.weeks if self.weeks is not None else self.years  # type: ignore[return-value]

    @property
    def text(self) -> str:
        """The length in words: ``104 weeks`` or ``2 years``."""
        v = self.length.value
        unit = "weeks" if self.weeks is not None else "years"
        return f"{'?' if v is None else format(v, 'g')} {unit}"


class ProtocolDefinition(_Strict):
    """A versioned protocol definition (one YAML file under ``protocol/definitions/``)."""

    format: Literal[1] = Field(1, description="Version of this file format.")
    id: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=64)]
    version: Annotated[str, StringConstraints(pattern=r"^\d+\.\d+(\.\d+)?([-+][A-Za-z0-9.]+)?$")]
    title: Text
    status: Literal["draft", "active", "under_review", "retired"]
    description: Text | None = None
    sources: list[Source] = Field(min_length=1)
    eligibility: list[EligibilityRule] = []
    derived_facts: list[DerivedFact] = []
    risk_groups: list[RiskGroup] = Field(min_length=1)
    randomisations: list[Randomisation] = []
    timepoints: list[TimePoint] = []
    elements: list[Element] = Field(min_length=1)
    initial: Ident | None = Field(None, description="The first element; defaults to the first listed.")
    transitions: list[Transition] = []
    end_of_therapy: EndOfTherapy | None = None
    dose_tolerance_percent: SourcedNumber | None = Field(
        None, description="How far (±%) a given dose may differ from the computed one without a deviation (the "
        "pharmacy's rounding); default 5 %, a placeholder to verify.")

    @field_validator("dose_tolerance_percent")
    @classmethod
    def _tolerance(cls, v: SourcedNumber | None) -> SourcedNumber | None:
        if v is not None and v.value is not None and not 0 <= v.value <= 25:
            raise ValueError(f"expected a tolerance of 0 to 25 %, got {v.value:g}")
        return v


# --------------------------------------------------------------------------- patient


class Measurement(_Strict):
    """Height and weight on a date."""

    date: IsoDate
    height_cm: float = Field(gt=0, allow_inf_nan=False)
    weight_kg: float = Field(gt=0, allow_inf_nan=False)

    @field_validator("height_cm", "weight_kg")
    @classmethod
    def _unit(cls, v: float, info: ValidationInfo) -> float:
        # (what, limit, the unit probably typed, its factor, the range where that guess is likely)
        what, limit, other, factor, likely = (("a height in centimetres", 250, "millimetres", 10, (300, 2000))
                                              if info.field_name == "height_cm" else
                                              ("a weight in kilograms", 300, "grams", 1000, (500, 150000)))
        if v >= limit:
            unit = "cm" if info.field_name == "height_cm" else "kg"
            hint = f": this looks like {other} ({v / factor:g} {unit})" if likely[0] <= v <= likely[1] else ""
            raise ValueError(f"expected {what} below {limit}, got {v:g}{hint}")
        return v


class BloodCount(_Strict):
    """A blood count on a date (×10⁹/L); start gates read it."""

    date: IsoDate
    anc: float | None = Field(None, ge=0, lt=1000, allow_inf_nan=False, description="Neutrophils ×10⁹/L.")
    platelets: float | None = Field(None, ge=0, lt=5000, allow_inf_nan=False, description="Platelets ×10⁹/L.")

    @model_validator(mode="after")
    def _something(self) -> Any:
        if self.anc is None and self.platelets is None:
            raise ValueError("expected anc and/or platelets")
        return self


class MrdResult(_Strict):
    """An MRD result at a protocol time point, as a fraction (3e-4 = 0.03 %; 0 = negative)."""

    timepoint: Ident
    date: IsoDate
    value: float = Field(ge=0, le=1, allow_inf_nan=False)


EventType = Literal["element_started", "element_completed", "randomised", "hsct", "relapse", "death",
                    "off_protocol", "item_given", "item_omitted", "item_delayed", "dose_modified", "element_held",
                    "element_resumed", "infusion_interrupted", "infusion_resumed"]

#: An item of the plan: ``ELEMENT:SLOT@DAY`` (element id, administration/assessment id, element day).
ItemRef = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*:[a-z][a-z0-9_]*@-?\d{1,4}$")]

#: Which fields each event type takes (besides type, date and note), and which it requires.
EVENT_FIELDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "element_started": (frozenset({"element", "bag_hours"}), frozenset({"element"})),
    "element_completed": (frozenset({"element"}), frozenset({"element"})),
    "randomised": (frozenset({"randomisation", "arm"}), frozenset({"randomisation", "arm"})),
    "hsct": (frozenset({"reason"}), frozenset()),
    "relapse": (frozenset({"reason"}), frozenset()),
    "death": (frozenset({"reason"}), frozenset()),
    "off_protocol": (frozenset({"reason"}), frozenset({"reason"})),
    "item_given": (frozenset({"item", "dose"}), frozenset({"item"})),
    "item_omitted": (frozenset({"item", "reason"}), frozenset({"item", "reason"})),
    "item_delayed": (frozenset({"item", "to", "scope", "reason"}), frozenset({"item", "to", "scope", "reason"})),
    "dose_modified": (frozenset({"item", "percent", "of", "scope", "reason"}),
                      frozenset({"item", "percent", "of", "scope", "reason"})),
    "element_held": (frozenset({"element", "reason"}), frozenset({"element", "reason"})),
    "element_resumed": (frozenset({"element"}), frozenset({"element"})),
    "infusion_interrupted": (frozenset({"element", "reason"}), frozenset({"element", "reason"})),
    "infusion_resumed": (frozenset({"element", "bag_hours", "interruption_hours"}), frozenset({"element"})),
}
_OPTIONAL_FIELDS = ("element", "randomisation", "arm", "reason", "item", "to", "scope", "dose", "percent", "of",
                    "bag_hours", "interruption_hours")
#: Per event type, in ``_OPTIONAL_FIELDS`` order: the fields it requires, and those it does not
#: take (reason aside): what ``Event._fields_of_type`` checks, computed once.
_CHECKED_FIELDS = {t: (tuple(f for f in _OPTIONAL_FIELDS if f in required),
                       tuple(f for f in _OPTIONAL_FIELDS if f not in allowed and f != "reason"))
                   for t, (allowed, required) in EVENT_FIELDS.items()}


class Event(_Strict):
    """Something that happened (or was decided), with its actual date.

    - ``element_started`` / ``element_completed``: an element began or ended (``bag_hours``: the
      bag duration chosen for its continuous infusion);
    - ``item_given`` (``dose``: the amount actually given, in the item's unit), ``item_omitted``
      (with ``reason``), ``item_delayed`` (``to`` the new date; ``scope``: ``item`` moves this
      item only, ``element`` also the later items of its element, ``all`` every later date of
      the treatment — the order-entry "change all later dates?");
    - ``dose_modified``: ``percent`` of the ``standard`` dose or of the ``previous`` dose, for
      this item or (``scope: element``) for it and the element's later doses of that drug; a
      modified dose never exceeds the standard, and 0 % is refused (record ``item_omitted``);
    - ``element_held`` / ``element_resumed``; ``infusion_interrupted`` / ``infusion_resumed``
      (``interruption_hours``: how long it was stopped; premedication is planned on the restart
      day unless it is recorded as shorter than the definition's limit);
    - ``randomised``, ``hsct``, ``relapse``, ``death``, ``off_protocol``.

    ``item`` is ``ELEMENT:SLOT@DAY``, e.g. ``induction:dexamethasone@8``.
    """

    type: EventType
    date: IsoDate
    element: Ident | None = None
    randomisation: Ident | None = None
    arm: Ident | None = None
    item: ItemRef | None = None
    to: IsoDate | None = None
    scope: Literal["item", "element", "all"] | None = None
    dose: float | None = Field(None, gt=0, lt=1e6, allow_inf_nan=False, description="Amount given, in the item's unit.")
    percent: float | None = Field(None, ge=0, le=100, allow_inf_nan=False)
    of: Literal["standard", "previous"] | None = None
    bag_hours: int | None = Field(None, ge=1, le=24 * 14)
    interruption_hours: float | None = Field(None, gt=0, le=24 * 60, allow_inf_nan=False,
                                             description="How long the infusion was stopped, in hours (on "
                                             "infusion_resumed): a restart after 4 h or more needs premedication.")
    reason: Text | None = None
    note: Text | None = None

    @model_validator(mode="after")
    def _fields_of_type(self) -> Any:
        required, refused = _CHECKED_FIELDS[self.type]
        values = self.__dict__
        missing = [f for f in required if values[f] is None]
        if missing:
            article = "an" if self.type[0] in "aeiou" else "a"
            if missing == ["reason"]:
                raise ValueError(f"{article} {self.type} event needs a reason (who decided it and why)")
            raise ValueError(f"{article} {self.type} event must name its {' and '.join(m for m in missing if m != 'reason')}"
                             + (" and give a reason" if "reason" in missing else ""))
        # A reason may be given with any event; some require one.
        extra = [f for f in refused if values[f] is not None]
        if extra:
            article = "an" if self.type[0] in "aeiou" else "a"
            raise ValueError(f"{article} {self.type} event takes no {', '.join(extra)}")
        if self.type == "dose_modified":
            if self.percent == 0:
                raise ValueError("a 0 % dose is an omission: record an item_omitted event with the reason instead")
            if self.scope == "all":
                raise ValueError("a dose modification applies to the item or to the rest of its element "
                                 "(scope item or element), got all")
        return self


class Patient(_Strict):
    """A patient file. ``id`` is a pseudonym: never put a name or a hospital number here."""

    id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"), AfterValidator(check_pseudonym)]
    protocol: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]*(@[0-9A-Za-z.+-]+)?$", max_length=130)]
    birth_date: IsoDate
    sex: Literal["female", "male", "unknown"]
    diagnosis_date: IsoDate
    treatment_start: IsoDate | None = Field(None, description="Defaults to the diagnosis date.")
    kmt2a: Literal["rearranged", "germline"]
    wbc_at_diagnosis: float = Field(ge=0, lt=5000, allow_inf_nan=False, description="×10⁹/L")
    prednisone_response: Literal["good", "poor"] | None = None
    day8_blasts_per_ul: float | None = Field(None, ge=0, allow_inf_nan=False)
    cns_status: Literal["CNS1", "CNS2", "CNS3"] | None = None
    cd19: Literal["positive", "negative"] | None = Field(None, description="CD19 expression of the leukaemic "
                                                         "blasts (immunophenotype).")
    eoi_marrow_blasts_percent: float | None = Field(None, ge=0, le=100, allow_inf_nan=False,
                                                    description="Leukaemic blasts in the bone marrow at the end of "
                                                    "induction, % (M1 < 5, M2 5-25, M3 > 25).")
    measurements: list[Measurement] = []
    mrd: list[MrdResult] = []
    counts: list[BloodCount] = []
    events: list[Event] = []
    notes: Text | None = None

    _source: str = PrivateAttr("patient")  # the file it came from, for error messages
    _lines: Any = PrivateAttr(None)  # the parsed document, to point at a line

    @property
    def start_date(self) -> dt.date:
        """Treatment start (study day 1): ``treatment_start`` or the diagnosis date."""
        return self.treatment_start or self.diagnosis_date
