"""Cohort specification files: the virtual patients a simulation draws, as validated data.

A cohort file (YAML or JSON) gives, for one protocol, the distribution of each patient fact
the protocol's rules read (age at diagnosis, WBC, prednisone response, KMT2A status...), of
the MRD result at each time point, of the arm of each randomisation, the delay before each
element starts, optional event risks per element (relapse, death, off-protocol), the
enrolment rate for the census and a seed. Every distribution carries its provenance:
``published`` (stated in the cited source), ``derived`` (computed from a published figure,
e.g. 16 of 30) or ``assumption`` (not published: the ``note`` says why this value).

The file is validated field by field (pydantic), then against the protocol: time points,
elements, randomisations and arms must exist, and every fact, MRD result and arm the
protocol's rules read must be given. Problems name the file, the field and the line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from fractions import Fraction
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from ._errors import CohortError, InputError, Problem
from ._io import Document, format_loc, read_document, validate_document
from ._machine import OUTCOMES, Protocol
from ._models import Condition, Source
from ._rules import FACTS, depends_on

__all__ = ["Cohort", "CohortError", "Distribution", "check_cohort", "load_cohort"]

#: How far from 1 a list of probabilities may sum (rounding in hand-written decimals).
SUM_TOLERANCE = 1e-6

#: Facts the engine computes from others, never drawn: the risk group comes from the rules.
COMPUTED_FACTS = frozenset({"risk_group"})

#: Facts that are whole numbers (a drawn value is rounded down).
INTEGER_FACTS = frozenset({"age_at_diagnosis_days", "age_at_diagnosis_months", "age_at_diagnosis_years"})

#: Age facts that follow from the age in days and a diagnosis date (calendar arithmetic).
AGE_FROM_DAYS = ("age_at_diagnosis_months", "age_at_diagnosis_years")


_FRACTION = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def _probability(value: Any) -> Any:
    # "16/30" is the clearest way to cite a published count; it is kept exact until summed.
    if isinstance(value, str):
        m = _FRACTION.match(value)
        if not m or int(m.group(2)) == 0:
            raise ValueError(f"expected a probability (a number from 0 to 1, or a fraction such as '16/30'), "
                             f"got {value!r}")
        value = Fraction(int(m.group(1)), int(m.group(2)))
        if value > 1:
            raise ValueError(f"expected a probability from 0 to 1, got {m.group(0).strip()} = {float(value):.4g}")
        return float(value)
    return value


def _ratio(value: Any) -> Any:
    if isinstance(value, str):
        m = _FRACTION.match(value)
        if not m or int(m.group(2)) == 0:
            raise ValueError(f"expected a number, or a fraction such as '30/36', got {value!r}")
        return int(m.group(1)) / int(m.group(2))
    return value


#: A probability: a number from 0 to 1, or a fraction written ``"16/30"``.
Prob = Annotated[float, BeforeValidator(_probability), Field(ge=0, le=1, allow_inf_nan=False)]
Num = Annotated[float, Field(allow_inf_nan=False)]
Ident = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class _Provenance(_Strict):
    evidence: Literal["published", "derived", "assumption"] = Field(
        description="published: stated in the cited source; derived: computed from a published figure; "
        "assumption: not published (say why in `note`).")
    source: str | None = Field(None, description="Key of an entry in the cohort's `sources`.")
    note: str | None = None

    @model_validator(mode="after")
    def _needs_source(self) -> Any:
        if self.evidence != "assumption" and self.source is None:
            raise ValueError(f"a {self.evidence} value must name its source (the key of an entry in `sources`)")
        if self.evidence == "assumption" and not (self.note or "").strip():
            raise ValueError("an assumption needs a `note` saying why this value (it is not published)")
        return self


class Bin(_Strict):
    """One category of a numeric quantity: a point (``value``) or an interval ``[low, high)``
    drawn uniformly, with its probability ``p``."""

    p: Prob
    value: Num | None = None
    low: Num | None = None
    high: Num | None = None
    label: str | None = None

    @model_validator(mode="after")
    def _shape(self) -> Any:
        point = self.value is not None
        interval = self.low is not None or self.high is not None
        if point == interval:
            raise ValueError("expected either `value` (one number) or `low` and `high` (an interval [low, high))")
        if interval and (self.low is None or self.high is None):
            raise ValueError("an interval needs both `low` and `high`")
        if interval and self.low >= self.high:  # type: ignore[operator]
            raise ValueError(f"expected low < high, got low {self.low:g}, high {self.high:g}")
        return self

    @property
    def bounds(self) -> tuple[float, float]:
        """``(low, high)``; a point is ``(value, value)``."""
        if self.value is not None:
            return self.value, self.value
        return float(self.low), float(self.high)  # type: ignore[arg-type]


class Uniform(_Strict):
    """Uniform on ``[low, high]`` (whole numbers for days and ages: each equally likely)."""

    low: Num
    high: Num

    @model_validator(mode="after")
    def _order(self) -> Any:
        if self.low > self.high:
            raise ValueError(f"expected low <= high, got low {self.low:g}, high {self.high:g}")
        return self


class LogNormal(_Strict):
    """Log-normal: ``median`` and ``sigma`` (the standard deviation of the natural log);
    values above ``max`` are set to ``max``."""

    median: Num = Field(gt=0)
    sigma: Num = Field(ge=0)
    max: Num | None = Field(None, gt=0)


class Poisson(_Strict):
    """Poisson with the given ``mean`` (whole numbers: days)."""

    mean: Num = Field(ge=0, le=10_000)


_SHAPES = ("fixed", "uniform", "lognormal", "poisson", "categories", "bins")


class Distribution(_Provenance):
    """How one quantity is drawn. Exactly one of:

    - ``fixed: VALUE`` (a number, or a category);
    - ``uniform: {low, high}``; ``lognormal: {median, sigma, max}``; ``poisson: {mean}``;
    - ``categories: {VALUE: p, ...}`` for a categorical fact or an arm (the ``p`` sum to 1);
    - ``bins: [{p, value} | {p, low, high}, ...]`` for a number (the ``p`` sum to 1).

    With ``lognormal``, ``negative: p`` adds a share of exact zeros (MRD-negative).
    """

    fixed: Num | str | None = None
    uniform: Uniform | None = None
    lognormal: LogNormal | None = None
    poisson: Poisson | None = None
    categories: dict[str, Prob] | None = Field(None, min_length=1)
    bins: list[Bin] | None = Field(None, min_length=1)
    negative: Prob | None = Field(None, description="With lognormal: the share of exact zeros (MRD-negative).")

    @field_validator("categories")
    @classmethod
    def _categories_sum(cls, v: dict[str, float] | None) -> Any:
        if v is not None:
            _check_sum(v.values(), ", ".join(f"{k} {p:g}" for k, p in v.items()))
        return v

    @field_validator("bins")
    @classmethod
    def _bins_sum(cls, v: list[Bin] | None) -> Any:
        if v is not None:
            _check_sum((b.p for b in v), ", ".join(f"{b.p:g}" for b in v))
            spans = sorted(b.bounds for b in v)
            for (lo1, hi1), (lo2, hi2) in zip(spans, spans[1:], strict=False):
                if lo2 < hi1 or (lo1 == hi1 == lo2 == hi2):
                    raise ValueError(f"bins overlap: [{lo1:g}, {hi1:g}) and [{lo2:g}, {hi2:g})")
        return v

    @model_validator(mode="after")
    def _one_shape(self) -> Any:
        given = [s for s in _SHAPES if getattr(self, s) is not None]
        if len(given) != 1:
            raise ValueError(f"expected exactly one of {', '.join(_SHAPES)}; got "
                             + (", ".join(given) if given else "none of them"))
        if self.negative is not None and self.lognormal is None:
            raise ValueError("`negative` goes with `lognormal` (a share of zeros besides the log-normal values)")
        return self

    @property
    def shape(self) -> str:
        """Which of fixed, uniform, lognormal, poisson, categories, bins."""
        return next(s for s in _SHAPES if getattr(self, s) is not None)

    def numeric_range(self) -> tuple[float, float] | None:
        """The smallest and largest value the distribution can give (None: categorical)."""
        if self.fixed is not None:
            return None if isinstance(self.fixed, str) else (float(self.fixed), float(self.fixed))
        if self.uniform is not None:
            return self.uniform.low, self.uniform.high
        if self.lognormal is not None:
            return 0.0, self.lognormal.max if self.lognormal.max else float("inf")
        if self.poisson is not None:
            return 0.0, float("inf")
        if self.bins is not None:
            return min(b.bounds[0] for b in self.bins), max(b.bounds[1] for b in self.bins)
        return None


def _check_sum(ps: Any, shown: str) -> None:
    total = sum(ps)
    if abs(total - 1) > SUM_TOLERANCE:
        raise ValueError(f"expected probabilities that sum to 1, got {total:.6g} ({shown})")


class EventRisk(_Provenance):
    """The risk of an event during one element, for a patient who starts it: ``probability``
    (over the element; the day is uniform over its days) or ``per_day`` (a constant daily
    hazard)."""

    probability: Prob | None = None
    per_day: Prob | None = None

    @model_validator(mode="after")
    def _one(self) -> Any:
        if (self.probability is None) == (self.per_day is None):
            raise ValueError("expected exactly one of probability (over the element) or per_day (a daily hazard)")
        return self


class ElementEvents(_Strict):
    """Event risks during one element (each optional)."""

    relapse: EventRisk | None = None
    death: EventRisk | None = None
    off_protocol: EventRisk | None = None


class Census(_Provenance):
    """Enrolment for the weekly census: ``rate_per_month`` eligible patients a month
    (Poisson arrivals) for ``enrolment_months``; the census covers ``weeks`` weeks from the
    first enrolment (default: the enrolment period plus the longest possible therapy)."""

    rate_per_month: Annotated[float, BeforeValidator(_ratio)] = Field(gt=0, le=100_000, allow_inf_nan=False)
    enrolment_months: Num = Field(gt=0, le=1200)
    weeks: int | None = Field(None, ge=1, le=5200)


class Cohort(_Strict):
    """A cohort specification (see the module docstring and the README)."""

    format: Literal[1] = 1
    title: str = Field(min_length=1)
    description: str | None = None
    protocol: str | None = Field(None, description="The protocol id this cohort is calibrated for (id or id@version).")
    seed: int = Field(ge=0, le=2**63 - 1)
    sources: list[Source] = []
    facts: dict[str, Distribution] = Field(min_length=1)
    mrd: dict[Ident, Distribution] = {}
    arms: dict[Ident, Distribution] = {}
    delays: dict[Ident, Distribution] = {}
    events: dict[Ident, ElementEvents] = {}
    census: Census | None = None

    _source: str = PrivateAttr("cohort")
    _doc: Any = PrivateAttr(None)

    @property
    def file(self) -> str:
        """The file the cohort was read from (for messages and outputs)."""
        return self._source


# --------------------------------------------------------------------------- cross-checks


def _reads(protocol: Protocol) -> Iterator[tuple[str, str]]:
    """``(fact key, where)`` for every fact a rule of the protocol reads (a derived fact's
    inputs count only through :func:`_derivable`: giving the derived fact itself is enough)."""
    defn = protocol.definition
    conds: list[tuple[str, Condition]] = []
    conds += [(f"eligibility {r.id}", r.when) for r in defn.eligibility]
    conds += [(f"risk group {g.id}", g.when) for g in defn.risk_groups if g.when is not None]
    conds += [(f"transition {t.source} → {t.to}", t.when) for t in defn.transitions if t.when is not None]
    for where, c in conds:
        for key in depends_on(c):
            yield key, where


def _derivable(protocol: Protocol, given: set[str]) -> set[str]:
    """The facts available to the rules: drawn, ages from the age in days, derived facts whose
    inputs are available, and the risk group."""
    have = set(given) | {"risk_group"}
    if "age_at_diagnosis_days" in have:
        have.update(AGE_FROM_DAYS)
    if "age_at_diagnosis_months" in have:
        have.add("age_at_diagnosis_years")
    for d in protocol.definition.derived_facts:
        inputs = {k for c in d.cases for k in depends_on(c.when)}
        if inputs <= have:
            have.add(d.id)
    return have


def check_cohort(cohort: Cohort, protocol: Protocol) -> list[tuple[tuple[Any, ...], str]]:
    """Check a validated cohort against its protocol; ``(field path, message)`` per problem."""
    problems: list[tuple[tuple[Any, ...], str]] = []
    add = problems.append

    if cohort.protocol is not None:
        name, _, version = cohort.protocol.partition("@")
        if name != protocol.id or (version and version != protocol.version):
            add((("protocol",), f"this cohort is for {cohort.protocol}; the simulation runs "
                                f"{protocol.id}@{protocol.version}"))
    keys = [s.key for s in cohort.sources]
    for i, k in enumerate(keys):
        if k in keys[:i]:
            add((("sources", i, "key"), f"duplicate source key {k!r}"))

    def sourced(loc: tuple[Any, ...], d: _Provenance) -> None:
        if d.source is not None and d.source not in keys:
            add(((*loc, "source"), f"expected the key of an entry in `sources` ({', '.join(keys) or 'none'}), "
                                   f"got {d.source!r}"))

    def numeric(loc: tuple[Any, ...], d: Distribution, what: str, lo: float, hi: float, whole: bool,
                clipped: bool = False) -> None:
        if d.categories is not None or isinstance(d.fixed, str):
            add((loc, f"{what} is a number: expected fixed (a number), uniform, lognormal, poisson or bins, "
                      f"got {'categories' if d.categories is not None else repr(d.fixed)}"))
            return
        span = d.numeric_range()
        assert span is not None
        if clipped and d.lognormal is not None and d.lognormal.max is None:
            span = (span[0], hi)  # an MRD is a fraction: log-normal draws above 1 count as 1
        if span[0] < lo or span[1] > hi:
            limits = f"from {lo:g} to {hi:g}" if hi != float("inf") else f">= {lo:g}"
            add((loc, f"{what}: expected values {limits}, got a distribution from {span[0]:g} to {span[1]:g}"))
        if whole and d.fixed is not None and float(d.fixed) != int(float(d.fixed)):
            add(((*loc, "fixed"), f"{what}: expected a whole number of days, got {d.fixed}"))
        if whole and d.uniform is not None and (d.uniform.low != int(d.uniform.low)
                                                or d.uniform.high != int(d.uniform.high)):
            add(((*loc, "uniform"), f"{what}: expected whole numbers of days, got {d.uniform.low:g} to "
                                    f"{d.uniform.high:g}"))

    def categorical(loc: tuple[Any, ...], d: Distribution, what: str, allowed: tuple[str, ...]) -> None:
        if d.categories is None and not isinstance(d.fixed, str):
            add((loc, f"{what} is categorical: expected categories {{{', '.join(allowed)}}} or fixed, "
                      f"got {d.shape}"))
            return
        values = list(d.categories) if d.categories is not None else [str(d.fixed)]
        for v in values:
            if v not in allowed:
                where = (*loc, "categories", v) if d.categories is not None else (*loc, "fixed")
                add((where, f"{what}: expected one of {', '.join(allowed)}, got {v!r}"))

    # Facts.
    for name, d in cohort.facts.items():
        loc = ("facts", name)
        sourced(loc, d)
        spec = FACTS.get(name)
        if spec is None or name in COMPUTED_FACTS:
            known = ", ".join(sorted(set(FACTS) - COMPUTED_FACTS))
            extra = " (the risk group is computed from the protocol's rules)" if name in COMPUTED_FACTS else ""
            add((loc, f"expected a patient fact ({known}), got {name!r}{extra}"))
            continue
        if spec.kind == "categorical":
            categorical(loc, d, name, spec.values)
        else:
            numeric(loc, d, name, 0.0, float("inf"), False)
    derived_ids = {d.id: d for d in protocol.definition.derived_facts}
    for name in cohort.facts:
        d = derived_ids.get(name)
        if d is not None:
            inputs = sorted({k for c in d.cases for k in depends_on(c.when)} & set(cohort.facts))
            if inputs:
                add((("facts", name), f"give {name} or {', '.join(inputs)}, not both: the protocol derives "
                                      f"{name} from {', '.join(inputs)}"))
    available = _derivable(protocol, set(cohort.facts))
    missing: dict[str, list[str]] = {}
    for key, where in _reads(protocol):
        if key.startswith("mrd:"):
            if key[4:] not in cohort.mrd:
                missing.setdefault(key, []).append(where)
        elif key.startswith("arm:"):
            if key[4:] not in cohort.arms:
                missing.setdefault(key, []).append(where)
        elif key not in available:
            missing.setdefault(key, []).append(where)
    for key, wheres in missing.items():
        places = ", ".join(dict.fromkeys(wheres))
        if key.startswith("mrd:"):
            add((("mrd",), f"the protocol reads the MRD at {key[4:]} ({places}): give its distribution "
                           f"under mrd.{key[4:]}"))
        elif key.startswith("arm:"):
            add((("arms",), f"the protocol reads the arm of {key[4:]} ({places}): give the arm probabilities "
                            f"under arms.{key[4:]}"))
        else:
            hint = " (or age_at_diagnosis_days)" if key in AGE_FROM_DAYS else ""
            if key in derived_ids:
                inputs = sorted({k for c in derived_ids[key].cases for k in depends_on(c.when)})
                hint = f" (or {', '.join(inputs)}, from which the protocol derives it)"
            add((("facts",), f"the protocol reads {key} ({places}): give its distribution under "
                             f"facts.{key}{hint}"))

    # MRD per time point.
    for tp, d in cohort.mrd.items():
        loc = ("mrd", tp)
        sourced(loc, d)
        if tp not in protocol.timepoints:
            add((loc, f"expected a time point of {protocol.id} ({', '.join(protocol.timepoints) or 'none'}), "
                      f"got {tp!r}"))
            continue
        numeric(loc, d, f"MRD at {tp}", 0.0, 1.0, False, clipped=True)

    # Arms.
    for rnd, d in cohort.arms.items():
        loc = ("arms", rnd)
        sourced(loc, d)
        arms = protocol.randomisations.get(rnd)
        if arms is None:
            add((loc, f"expected a randomisation of {protocol.id} ({', '.join(protocol.randomisations) or 'none'}), "
                      f"got {rnd!r}"))
            continue
        categorical(loc, d, f"the arm of {rnd}", arms)

    # Delays before each element starts.
    for el, d in cohort.delays.items():
        loc = ("delays", el)
        sourced(loc, d)
        if el not in protocol.elements:
            add((loc, f"expected an element of {protocol.id} ({', '.join(protocol.elements)}), got {el!r}"))
            continue
        if d.lognormal is not None:
            add(((*loc, "lognormal"), "a delay is a whole number of days: expected fixed, uniform, poisson or bins"))
            continue
        numeric(loc, d, f"the delay before {el}", 0.0, float("inf"), True)

    # Event risks per element.
    for el, ev in cohort.events.items():
        loc = ("events", el)
        if el not in protocol.elements:
            add((loc, f"expected an element of {protocol.id} ({', '.join(protocol.elements)}), got {el!r}"))
            continue
        compiled = protocol.elements[el]
        if compiled.length is None and not compiled.open_ended:
            add((loc, f"{el} has no days in {protocol.id} (the protocol's path ends when it starts): "
                      "an event risk there would never apply"))
        for outcome in OUTCOMES:
            risk = getattr(ev, outcome)
            if risk is not None:
                sourced((*loc, outcome), risk)
    if cohort.census is not None:
        sourced(("census",), cohort.census)
    return problems


def load_cohort(path: str | os.PathLike[str], protocol: Protocol | str | None = None) -> Cohort:
    """Load and validate a cohort file, and check it against ``protocol`` (a compiled protocol,
    a shipped id or a definition file; default: the protocol the cohort names).

    Raises :class:`CohortError` listing every problem with file, field and line.

    >>> cohort = load_cohort("examples/cohorts/interfant06-blinatumomab.yaml")   # doctest: +SKIP
    """
    doc = read_document(path, error=CohortError)
    cohort = validate_document(Cohort, doc, error=CohortError)
    cohort._source = doc.name
    cohort._doc = doc
    if protocol is None:
        if cohort.protocol is None:
            raise CohortError(Problem(doc.name, "protocol", "name the protocol this cohort is for "
                                      "(or pass one to the simulation)", doc.line_of(("protocol",))))
        protocol = cohort.protocol
    if not isinstance(protocol, Protocol):
        from ._loading import load_protocol

        protocol = load_protocol(protocol)
    problems = check_cohort(cohort, protocol)
    if problems:
        raise CohortError(_problems(doc, problems))
    return cohort


def _problems(doc: Document, problems: list[tuple[tuple[Any, ...], str]]) -> list[Problem]:
    return [Problem(doc.name, format_loc(loc), msg, doc.line_of(loc)) for loc, msg in problems]
