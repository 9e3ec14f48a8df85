"""Rules as data: patient facts, three-valued guard evaluation, risk stratification.

A guard evaluates to ``True``, ``False`` or ``None`` (*unknown*: a fact it needs is not
recorded yet), with Kleene logic: ``any`` is true as soon as one part is true, ``all`` is
false as soon as one part is false. So a high-risk patient goes to HSCT whatever the
pre-OCTADAD MRD, while a medium-risk patient's decision is *pending* until that MRD is
recorded. Conditions are compiled once per protocol into closures over a plain ``dict``
of facts; there is no ``eval`` and no code in data files.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from ._models import Condition, DerivedFact, EligibilityRule, Patient, RiskGroup

__all__ = [
    "FACTS",
    "Facts",
    "Guard",
    "RiskResult",
    "add_months",
    "birthday",
    "compile_condition",
    "completed_months",
    "completed_years",
    "depends_on",
    "describe",
    "explain",
    "patient_facts",
]

Facts = dict[str, Any]
Tri = bool | None
Guard = Callable[[Mapping[str, Any]], Tri]


@dataclass(frozen=True, slots=True)
class FactSpec:
    """What a fact is: its label in explanations, its kind and (categorical) its values."""

    label: str
    kind: str  # "categorical" | "numeric"
    values: tuple[str, ...] = ()
    unit: str = ""


#: The facts a guard may read. ``risk_group`` values come from each definition.
FACTS: dict[str, FactSpec] = {
    "kmt2a": FactSpec("KMT2A status", "categorical", ("rearranged", "germline")),
    "sex": FactSpec("sex", "categorical", ("female", "male", "unknown")),
    "cns_status": FactSpec("CNS status", "categorical", ("CNS1", "CNS2", "CNS3")),
    "prednisone_response": FactSpec("prednisone response", "categorical", ("good", "poor")),
    "risk_group": FactSpec("risk group", "categorical"),
    "wbc_at_diagnosis": FactSpec("WBC at diagnosis", "numeric", unit="×10⁹/L"),
    "day8_blasts_per_ul": FactSpec("day-8 blood blasts", "numeric", unit="/µL"),
    "cd19": FactSpec("CD19", "categorical", ("positive", "negative")),
    "eoi_marrow_blasts_percent": FactSpec("marrow blasts at the end of induction", "numeric", unit="%"),
    "age_at_diagnosis_days": FactSpec("age at diagnosis", "numeric", unit="days"),
    "age_at_diagnosis_months": FactSpec("age at diagnosis", "numeric", unit="completed months"),
    "age_at_diagnosis_years": FactSpec("age at diagnosis", "numeric", unit="completed years"),
}

_TYPE = attrgetter("type")
_OPS = {"lt": "<", "lte": "≤", "gt": ">", "gte": "≥", "eq": "=", "ne": "≠", "in": "in"}


# --------------------------------------------------------------------------- calendar ages


def add_months(day: dt.date, months: int) -> dt.date:
    """Calendar month arithmetic, clamped to the month's last day (31 Jan + 1 = 28/29 Feb).

    Used only for ages (\"< 6 months\"); schedules are computed in whole days.
    """
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    last = _MONTH_DAYS[month]
    if month == 1 and year % 4 == 0 and (year % 100 != 0 or year % 400 == 0):
        last = 29
    return dt.date(year, month + 1, min(day.day, last))


#: Days in each month of a common year (``calendar.monthrange`` is a Python call per use).
_MONTH_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def completed_months(birth: dt.date, on: dt.date) -> int:
    """Completed calendar months of age on ``on``: the largest n with ``add_months(birth, n) <= on``."""
    n = (on.year - birth.year) * 12 + (on.month - birth.month)
    if n > 0 and add_months(birth, n) > on:
        n -= 1
    return n


def completed_years(birth: dt.date, on: dt.date) -> int:
    """Completed years of age on ``on`` (a 29 February birthday falls on 28 February)."""
    return completed_months(birth, on) // 12


def birthday(birth: dt.date, years: int) -> dt.date:
    """The ``years``-th birthday (29 February → 28 February in common years), as add_months(birth, 12 × years)."""
    try:
        return birth.replace(year=birth.year + years)
    except ValueError:  # 29 February in a common year
        return dt.date(birth.year + years, 2, 28)


# --------------------------------------------------------------------------- facts


def patient_facts(patient: Patient, as_of: dt.date | None = None, kinds: Collection[str] | None = None) -> Facts:
    """The facts a guard can read, from a patient file and results recorded up to ``as_of``.

    Unknown facts are simply absent. MRD results are keyed ``mrd:<timepoint>``; with several
    results for one time point, the latest recorded (by date) counts. ``kinds``: the types of
    the patient's events when the caller has them (no pass over the events without a
    randomisation).

    >>> from protocol import load_patient  # doctest: +SKIP
    >>> patient_facts(load_patient("examples/patients/mr-on-time.yaml"))["kmt2a"]  # doctest: +SKIP
    'rearranged'
    """
    birth, diag = patient.birth_date, patient.diagnosis_date
    facts: Facts = {
        "kmt2a": patient.kmt2a,
        "sex": patient.sex,
        "wbc_at_diagnosis": patient.wbc_at_diagnosis,
        "age_at_diagnosis_days": (diag - birth).days,
        "age_at_diagnosis_months": completed_months(birth, diag),
        "age_at_diagnosis_years": completed_years(birth, diag),
    }
    for name in ("cns_status", "prednisone_response", "day8_blasts_per_ul", "cd19", "eoi_marrow_blasts_percent"):
        value = getattr(patient, name)
        if value is not None:
            facts[name] = value
    for result in sorted(patient.mrd, key=lambda r: r.date):
        if as_of is None or result.date <= as_of:
            facts["mrd:" + result.timepoint] = result.value
    randomised = "randomised" in (map(_TYPE, patient.events) if kinds is None else kinds)
    for event in patient.events if randomised else ():
        if event.type == "randomised" and (as_of is None or event.date <= as_of):
            facts["arm:" + str(event.randomisation)] = event.arm
    return facts


def _key(c: Condition) -> str:
    if c.fact is not None:
        return c.fact
    return "mrd:" + str(c.mrd) if c.mrd is not None else "arm:" + str(c.arm)


def _label(key: str) -> str:
    if key.startswith("mrd:"):
        return f"MRD at {key[4:]}"
    if key.startswith("arm:"):
        return f"arm of {key[4:]}"
    spec = FACTS.get(key)
    return spec.label if spec else key


def _fmt_number(x: float) -> str:
    """Every significant digit kept (a threshold of 4.9e-4 must never print as 5e-4)."""
    if x == 0:
        return "0"
    if abs(x) < 1e-2:
        mantissa, exponent = f"{x:.12e}".split("e")
        mantissa = mantissa.rstrip("0").rstrip(".")
        return f"{mantissa}e{int(exponent)}"
    return f"{x:.12g}"


def _fmt_value(key: str, value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        unit = "" if key.startswith(("mrd:", "arm:")) else FACTS.get(key, FactSpec("", "")).unit
        return f"{_fmt_number(value)} {unit}".strip()
    return str(value)


# --------------------------------------------------------------------------- compile


def compile_condition(c: Condition) -> Guard:
    """Compile a condition into a function of the facts returning True, False or None."""
    if c.all_ is not None:
        parts = tuple(compile_condition(x) for x in c.all_)

        def all_of(facts: Mapping[str, Any]) -> Tri:
            result: Tri = True
            for part in parts:
                r = part(facts)
                if r is False:
                    return False
                if r is None:
                    result = None
            return result

        return all_of
    if c.any_ is not None:
        parts = tuple(compile_condition(x) for x in c.any_)

        def any_of(facts: Mapping[str, Any]) -> Tri:
            result: Tri = False
            for part in parts:
                r = part(facts)
                if r is True:
                    return True
                if r is None:
                    result = None
            return result

        return any_of
    if c.not_ is not None:
        inner = compile_condition(c.not_)

        def negated(facts: Mapping[str, Any]) -> Tri:
            r = inner(facts)
            return None if r is None else not r

        return negated
    key = _key(c)
    op, operand = c.op
    if op in ("lt", "lte", "gt", "gte"):
        t = float(operand.value)
        compare = {
            "lt": lambda x: x < t,
            "lte": lambda x: x <= t,
            "gt": lambda x: x > t,
            "gte": lambda x: x >= t,
        }[op]
    elif op == "eq":
        compare = operand.__eq__
    elif op == "ne":
        compare = operand.__ne__
    else:
        allowed = frozenset(operand)
        compare = allowed.__contains__

    def leaf(facts: Mapping[str, Any]) -> Tri:
        x = facts.get(key)
        return None if x is None else bool(compare(x))

    return leaf


def describe(c: Condition) -> str:
    """The condition in words, e.g. ``risk group = HR or MRD at pre_octadad ≥ 5e-4``."""
    if c.all_ is not None:
        return " and ".join(_wrap(x) for x in c.all_)
    if c.any_ is not None:
        return " or ".join(_wrap(x) for x in c.any_)
    if c.not_ is not None:
        return f"not ({describe(c.not_)})"
    key = _key(c)
    op, operand = c.op
    if op in ("lt", "lte", "gt", "gte"):
        return f"{_label(key)} {_OPS[op]} {_fmt_value(key, operand.value)}"
    if op == "in":
        return f"{_label(key)} in {{{', '.join(operand)}}}"
    return f"{_label(key)} {_OPS[op]} {operand}"


def _wrap(c: Condition) -> str:
    text = describe(c)
    return f"({text})" if (c.all_ is not None or c.any_ is not None) else text


def depends_on(c: Condition) -> tuple[str, ...]:
    """Fact keys a condition reads, in first-use order (``mrd:<timepoint>`` for MRD)."""
    seen: dict[str, None] = {}

    def walk(x: Condition) -> None:
        for group in (x.all_, x.any_):
            for y in group or ():
                walk(y)
        if x.not_ is not None:
            walk(x.not_)
        if x.fact is not None or x.mrd is not None or x.arm is not None:
            seen.setdefault(_key(x), None)

    walk(c)
    return tuple(seen)


_MARK = {True: "✓", False: "✗", None: "?"}
_COMPILED: dict[int, tuple[Condition, Guard]] = {}


def _placeholder_leaves(c: Condition) -> list[Condition]:
    """The leaves of a condition whose threshold is a placeholder, in order."""
    out: list[Condition] = []

    def walk(x: Condition) -> None:
        for sub in (*(x.all_ or ()), *(x.any_ or ())):
            walk(sub)
        if x.not_ is not None:
            walk(x.not_)
        if (x.fact is not None or x.mrd is not None or x.arm is not None) and \
                getattr(x.op[1], "evidence", None) == "placeholder":
            out.append(x)

    walk(c)
    return out


def placeholder_keys(c: Condition) -> tuple[str, ...]:
    """The facts read by the leaves of a condition whose threshold is a placeholder."""
    return tuple(dict.fromkeys(_key(x) for x in _placeholder_leaves(c)))


def placeholders(c: Condition) -> tuple[str, ...]:
    """The placeholder thresholds of a condition, in words: ``('the threshold MRD at
    pre_octadad ≥ 5e-4 is a placeholder',)``; empty when every number in it is sourced."""
    return tuple(f"the threshold {_label(_key(x))} {_OPS[x.op[0]]} {_fmt_value(_key(x), x.op[1].value)} is a "
                 f"placeholder" for x in _placeholder_leaves(c))


def _guard(c: Condition) -> Guard:
    """Compiled guard of ``c``, cached (definitions are long-lived and immutable)."""
    hit = _COMPILED.get(id(c))
    if hit is None or hit[0] is not c:
        hit = _COMPILED[id(c)] = (c, compile_condition(c))
    return hit[1]


def explain(c: Condition, facts: Mapping[str, Any]) -> list[str]:
    """Why a condition is true, false or unknown: one line per leaf, marked ✓ ✗ or ?.

    >>> explain(cond, {"kmt2a": "rearranged"})  # doctest: +SKIP
    ['✓ KMT2A status = rearranged (is rearranged)']
    """
    lines: list[str] = []

    def walk(x: Condition, depth: int) -> None:
        pad = "  " * depth
        if x.all_ is not None or x.any_ is not None:
            kind = "all of" if x.all_ is not None else "any of"
            r = _guard(x)(facts)
            lines.append(f"{pad}{_MARK[r]} {kind}:")
            for y in x.all_ or x.any_ or ():
                walk(y, depth + 1)
            return
        if x.not_ is not None:
            r = _guard(x)(facts)
            lines.append(f"{pad}{_MARK[r]} not:")
            walk(x.not_, depth + 1)
            return
        key = _key(x)
        r = _guard(x)(facts)
        value = facts.get(key)
        seen = "not recorded yet" if value is None else f"is {_fmt_value(key, value)}"
        lines.append(f"{pad}{_MARK[r]} {describe(x)} ({seen})")

    walk(c, 0)
    return lines


# --------------------------------------------------------------------------- compiled rule sets


class RiskResult:
    """The outcome of risk stratification.

    ``group`` is None while the assignment is pending (a fact it needs is unknown);
    ``candidates`` then lists the groups still possible and ``waiting_for`` the facts.
    ``reasons`` explains, line by line, which rule matched and why the earlier ones did not
    (computed when first read).
    """

    __slots__ = ("_facts", "_reasons", "_rules", "candidates", "group", "label", "status", "unverified_reasons",
                 "waiting_for")

    def __init__(self, group: str | None, label: str | None, status: str, rules: RuleSet, facts: Facts,
                 candidates: tuple[str, ...] = (), waiting_for: tuple[str, ...] = ()) -> None:
        self.group = group
        self.label = label
        self.status = status  # "assigned" | "pending" | "unassigned"
        self.candidates = candidates
        self.waiting_for = waiting_for
        self._rules = rules
        self._facts = facts
        self._reasons: tuple[str, ...] | None = None
        #: Why the assignment depends on a placeholder (a placeholder rule or threshold of the
        #: group assigned, or of an earlier group that did not apply); empty when it does not.
        self.unverified_reasons = rules.risk_placeholders(group, facts) if status == "assigned" else ()

    @property
    def unverified(self) -> bool:
        """True when the risk group follows from a placeholder rule or threshold."""
        return bool(self.unverified_reasons)

    @property
    def reasons(self) -> tuple[str, ...]:
        """Why: one line per rule part, marked ✓ (holds), ✗ (does not) or ? (not known yet)."""
        if self._reasons is None:
            self._reasons = self._rules.risk_reasons(self._facts)
        return self._reasons

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: ``{"group", "label", "status", "reasons", ...}``."""
        out: dict[str, Any] = {"group": self.group, "label": self.label, "status": self.status,
                               "reasons": list(self.reasons), "unverified": self.unverified,
                               "unverified_reasons": list(self.unverified_reasons)}
        if self.status == "pending":
            out["candidates"] = list(self.candidates)
            out["waiting_for"] = list(self.waiting_for)
        return out


class RuleSet:
    """Eligibility, derived facts and risk groups of one protocol, compiled once."""

    __slots__ = ("_derived", "_eligibility", "_profiles", "_risk")

    def __init__(self, eligibility: list[EligibilityRule], derived: list[DerivedFact], risk: list[RiskGroup]) -> None:
        self._eligibility = tuple((r, compile_condition(r.when)) for r in eligibility)
        self._derived = tuple(
            (d, tuple((case.value, compile_condition(case.when)) for case in d.cases)) for d in derived
        )
        self._risk = tuple((g, None if g.when is None else compile_condition(g.when)) for g in risk)
        self._profiles: dict[str | None, tuple[tuple[str, ...], bool, tuple[str, ...]]] = {}

    def derive(self, facts: Facts) -> list[tuple[str, str, str]]:
        """Fill in derived facts in place. Returns conflicts as ``(fact, given, derived)``."""
        conflicts = []
        for d, cases in self._derived:
            value: str | None = None
            unknown = False
            for case_value, guard in cases:
                r = guard(facts)
                if r is True:
                    value = case_value
                    break
                if r is None:
                    unknown = True
                    break
            if value is None and not unknown:
                value = d.otherwise
            if value is None:
                continue
            given = facts.get(d.id)
            if given is None:
                facts[d.id] = value
            elif given != value:
                conflicts.append((d.id, str(given), value))
        return conflicts

    def ineligible(self, facts: Facts) -> list[tuple[EligibilityRule, list[str]]]:
        """Eligibility rules that are definitely not met, each with its explanation."""
        return [(r, explain(r.when, facts)) for r, guard in self._eligibility if guard(facts) is False]

    def stratify(self, facts: Facts) -> RiskResult:
        """Assign the first risk group whose rule holds (a group after an unknown one is pending)."""
        pending: list[str] = []
        waiting: dict[str, None] = {}
        snapshot = dict(facts)
        for group, guard in self._risk:
            r = True if guard is None else guard(facts)
            if r is False:
                continue
            if r is None:
                assert group.when is not None
                pending.append(group.id)
                waiting.update((k, None) for k in depends_on(group.when) if k not in facts)
                continue
            if pending:
                return RiskResult(None, None, "pending", self, snapshot, (*pending, group.id), tuple(waiting))
            return RiskResult(group.id, group.label, "assigned", self, snapshot)
        if pending:
            return RiskResult(None, None, "pending", self, snapshot, tuple(pending), tuple(waiting))
        return RiskResult(None, None, "unassigned", self, snapshot)

    def _first_group(self, facts: Facts) -> str | None:
        for group, guard in self._risk:
            r = True if guard is None else guard(facts)
            if r is None:
                return None
            if r:
                return group.id
        return None

    def _placeholder_profile(self, group_id: str | None) -> tuple[tuple[str, ...], bool, tuple[str, ...]]:
        """``(fact keys to make unknown, a placeholder rule decides, reasons)`` for the groups up
        to ``group_id``: static per definition, so computed once per group."""
        cache = self._profiles
        if group_id in cache:
            return cache[group_id]
        masked: list[str] = []
        reasons: list[str] = []
        rule = False
        derived = {d.id: d for d, _ in self._derived}
        for group, _ in self._risk:
            if group.evidence == "placeholder":
                rule = True
                reasons.append(f"the rule of risk group {group.id} is a placeholder")
            if group.when is not None:
                masked.extend(placeholder_keys(group.when))
                reasons.extend(f"{r} (risk group {group.id})" for r in placeholders(group.when))
                # A fact derived by a placeholder rule (prednisone response from the 1000/µL
                # day-8 cut-off) makes the group that reads it unverified too.
                for key in depends_on(group.when):
                    d = derived.get(key)
                    if d is None or not any(placeholder_keys(case.when) for case in d.cases):
                        continue
                    masked.append(key)
                    for case in d.cases:
                        reasons.extend(f"{r} ({_label(key)} is derived from it)" for r in placeholders(case.when))
            if group.id == group_id:
                break
        cache[group_id] = (tuple(dict.fromkeys(masked)), rule, tuple(dict.fromkeys(reasons)))
        return cache[group_id]

    def risk_placeholders(self, group_id: str | None, facts: Facts | None = None) -> tuple[str, ...]:
        """What is a placeholder in the rules that decide ``group_id`` (its own rule and those
        of the groups tried before it), when it matters: with ``facts``, the placeholder
        thresholds are made unknown and the groups tried again (Kleene logic); if the same
        group still follows, the assignment does not depend on them (HR from a WBC of 420
        does not depend on the placeholder prednisone cut-off) and nothing is returned."""
        keys, rule, reasons = self._placeholder_profile(group_id)
        if facts is not None and not rule:
            masked = dict(facts)
            for key in keys:
                masked.pop(key, None)
            if self._first_group(masked) == group_id:
                return ()
        return reasons

    def risk_reasons(self, facts: Facts) -> tuple[str, ...]:
        """The explanation behind :meth:`stratify`, line by line."""
        reasons: list[str] = []
        pending = False
        for group, guard in self._risk:
            r = True if guard is None else guard(facts)
            if group.when is None:
                reasons.append(f"{group.id} ({group.label}): no earlier group applies")
            else:
                head = {False: f"not {group.id}", None: f"{group.id} cannot be decided yet", True: group.id}[r]
                reasons.append(f"{head} ({group.label}):")
                reasons.extend("  " + line for line in explain(group.when, facts))
            if r is None:
                pending = True
            if r is True and not pending:
                return tuple(reasons)
            if r is True:
                break
        if not pending:
            reasons.append("no risk-group rule applies")
        return tuple(reasons)
