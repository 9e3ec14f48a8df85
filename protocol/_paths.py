"""Every path through a protocol, the conditions that select it, and what can never happen.

From a compiled :class:`~protocol._machine.Protocol` this module enumerates every path from
the initial element to a final element. Each path carries the conjunction of the branch
conditions that select it, simplified into readable text (``risk group = MR and MRD at
pre_octadad < 5e-4``). The reasoning is *symbolic*, on the structured conditions of the
definition, never by sampling patients:

- a condition is put in disjunctive normal form; each term maps a fact to the set of values
  it may take (a set of categories, or a union of intervals of a number);
- a term is satisfiable when no fact is left with an empty set, under the protocol's own
  rules: every patient is eligible, and ``risk group = G`` means G's rule holds and no
  earlier group's rule does;
- transitions out of an element are tried in order, so the branch to edge *k* is
  ``guard_k and not guard_j`` for every earlier edge *j* (the default edge: none of them).

What it reports besides the paths: elements no patient can reach, guards that can never
hold, transitions that earlier ones always pre-empt, paths whose conditions contradict each
other, patients left with no transition out of an element, and eligible patients who fit
no risk group.

Facts are treated as independent of each other, except through the rules above: age in
days, completed months and completed years are three facts, so a contradiction *between*
them is not found. The reasoning may therefore miss a contradiction; it never reports one
that is not there.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ._machine import Edge, Protocol
from ._models import Condition
from ._rules import FACTS, _fmt_value, _key, _label

__all__ = ["Finding", "Path", "PathReport", "paths"]

#: Enumeration stops after this many paths (a protocol with more is reported as truncated).
MAX_PATHS = 10_000

#: Facts whose values are whole numbers (completed days, months, years), so ``< 6`` is ``<= 5``.
_INTEGER_FACTS = frozenset({"age_at_diagnosis_days", "age_at_diagnosis_months", "age_at_diagnosis_years"})

_INF = math.inf


# --------------------------------------------------------------------------- value sets


@dataclass(frozen=True, slots=True)
class Interval:
    """One interval of a number: ``lo``..``hi``, each end open or closed."""

    lo: float
    lo_closed: bool
    hi: float
    hi_closed: bool

    def empty(self) -> bool:
        """True when no number lies in the interval."""
        return self.lo > self.hi or (self.lo == self.hi and not (self.lo_closed and self.hi_closed))


@dataclass(frozen=True, slots=True)
class Numbers:
    """A union of disjoint intervals, sorted; ``integer``: only whole numbers count."""

    parts: tuple[Interval, ...]
    integer: bool = False

    @classmethod
    def of(cls, parts: Iterable[Interval], integer: bool) -> Numbers:
        cleaned = []
        for p in parts:
            if integer:
                lo = p.lo if math.isinf(p.lo) else (math.ceil(p.lo) if p.lo_closed else math.floor(p.lo) + 1)
                hi = p.hi if math.isinf(p.hi) else (math.floor(p.hi) if p.hi_closed else math.ceil(p.hi) - 1)
                p = Interval(lo, not math.isinf(lo), hi, not math.isinf(hi))
            if not p.empty():
                cleaned.append(p)
        cleaned.sort(key=lambda p: (p.lo, not p.lo_closed))
        merged: list[Interval] = []
        for p in cleaned:
            if merged:
                last = merged[-1]
                touching = p.lo < last.hi or (p.lo == last.hi and (p.lo_closed or last.hi_closed)) or (
                    integer and p.lo == last.hi + 1)
                if touching:
                    if (p.hi, p.hi_closed) > (last.hi, last.hi_closed):
                        merged[-1] = Interval(last.lo, last.lo_closed, p.hi, p.hi_closed)
                    continue
            merged.append(p)
        return cls(tuple(merged), integer)

    def empty(self) -> bool:
        """True when no value is left."""
        return not self.parts

    def __and__(self, other: Numbers) -> Numbers:
        out = []
        for a in self.parts:
            for b in other.parts:
                lo, lo_c = max((a.lo, not a.lo_closed), (b.lo, not b.lo_closed))
                hi, hi_c = min((a.hi, a.hi_closed), (b.hi, b.hi_closed))
                out.append(Interval(lo, not lo_c, hi, hi_c))
        return Numbers.of(out, self.integer)

    def __or__(self, other: Numbers) -> Numbers:
        return Numbers.of((*self.parts, *other.parts), self.integer)

    def complement(self, base: Numbers) -> Numbers:
        """The values of ``base`` not in this set."""
        out: list[Interval] = []
        lo, lo_closed = -_INF, False
        for p in self.parts:
            out.append(Interval(lo, lo_closed, p.lo, not p.lo_closed))
            lo, lo_closed = p.hi, not p.hi_closed
        out.append(Interval(lo, lo_closed, _INF, False))
        return Numbers.of(out, self.integer) & base

    def __le__(self, other: Numbers) -> bool:  # subset
        return (self & other) == self


@dataclass(frozen=True, slots=True)
class Categories:
    """A set of categorical values."""

    values: frozenset[str]

    def empty(self) -> bool:
        """True when no value is left."""
        return not self.values

    def __and__(self, other: Categories) -> Categories:
        return Categories(self.values & other.values)

    def __or__(self, other: Categories) -> Categories:
        return Categories(self.values | other.values)

    def complement(self, base: Categories) -> Categories:
        """The values of ``base`` not in this set."""
        return Categories(base.values - self.values)

    def __le__(self, other: Categories) -> bool:
        return self.values <= other.values


ValueSet = Numbers | Categories
Term = dict[str, ValueSet]  # one conjunction: fact key -> the values it may take
Dnf = list[Term]  # a disjunction of terms; [] is false, [{}] is true


@dataclass(frozen=True, slots=True)
class _KeyInfo:
    label: str
    universe: ValueSet
    order: tuple[str, ...] = ()  # categorical values in their declared order


# --------------------------------------------------------------------------- report types


@dataclass(frozen=True, slots=True)
class Path:
    """One path from the initial element to a final element.

    ``elements``: the element ids in order; ``decisions``: ``(decision, chosen element)`` for
    each step taken on a condition; ``condition``: the branch conditions that select the
    path, in words (``always`` when it has none); ``terms``: the same condition as a list of
    alternatives, each a list of readable constraints.
    """

    index: int
    elements: tuple[str, ...]
    decisions: tuple[tuple[str, str], ...]
    condition: str
    terms: tuple[tuple[str, ...], ...]
    _dnf: tuple[Term, ...] = field(repr=False, compare=False, default=())

    @property
    def text(self) -> str:
        """``condition: a → b → c``, as the ``paths`` command prints it."""
        return f"{self.condition}: {' → '.join(self.elements)}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"index": self.index, "elements": list(self.elements),
                "decisions": [{"decision": d, "to": to} for d, to in self.decisions],
                "condition": self.condition, "terms": [list(t) for t in self.terms]}


@dataclass(frozen=True, slots=True)
class Finding:
    """Something the protocol's rules make impossible or leave open.

    ``kind``: ``unreachable`` (an element no patient reaches), ``contradictory_guard`` (a rule
    that can never hold), ``never_taken`` (a transition that earlier ones always pre-empt),
    ``contradictory_path`` (the conditions along a path exclude each other),
    ``no_transition`` (patients left with no way out of an element), ``no_risk_group``
    (eligible patients that fit no risk group), ``truncated`` (too many paths to list).
    """

    kind: str
    message: str
    element: str | None = None
    edge: tuple[str, str] | None = None

    @property
    def severity(self) -> str:
        """``note`` for a contradictory path (earlier decisions exclude a branch on that path
        only, often by design: the same arm read twice, a replacement's copied transitions);
        ``problem`` for everything else."""
        return "note" if self.kind == "contradictory_path" else "problem"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"kind": self.kind, "severity": self.severity, "message": self.message, "element": self.element,
                "edge": None if self.edge is None else {"from": self.edge[0], "to": self.edge[1]}}


@dataclass(frozen=True, slots=True)
class Branch:
    """A transition with the condition under which it is actually taken (its own rule and
    none of the earlier ones), and whether any patient takes it."""

    source: str
    dest: str
    decision: str
    rule: str  # the transition's own rule ("otherwise" for the default)
    condition: str  # when it is taken, simplified ("always" for the only way out)
    taken: bool  # some patient can take it (it lies on a satisfiable path)
    conditional: bool  # the source element has more than one way out, or a guard


@dataclass(slots=True)
class PathReport:
    """All paths of a protocol, its branches and the findings (see :func:`paths`)."""

    protocol: str
    version: str
    initial: str
    finals: tuple[str, ...]
    paths: list[Path]
    branches: list[Branch]
    reachable: list[str]
    unreachable: list[str]
    findings: list[Finding]

    @property
    def problems(self) -> list[Finding]:
        """The findings that point at a defect (everything but notes)."""
        return [f for f in self.findings if f.severity == "problem"]

    @property
    def notes(self) -> list[Finding]:
        """Branches that earlier decisions exclude on some path (see :attr:`Finding.severity`)."""
        return [f for f in self.findings if f.severity == "note"]

    @property
    def ok(self) -> bool:
        """True when every element is reachable and no rule is contradictory, pre-empted or
        leaves patients without a way on (notes do not count)."""
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what ``protocol paths --json`` prints)."""
        return {
            "protocol": {"id": self.protocol, "version": self.version},
            "initial": self.initial,
            "finals": list(self.finals),
            "paths": [p.to_dict() for p in self.paths],
            "branches": [{"from": b.source, "to": b.dest, "decision": b.decision, "rule": b.rule,
                          "condition": b.condition, "taken": b.taken} for b in self.branches],
            "unreachable": list(self.unreachable),
            "findings": [f.to_dict() for f in self.findings],
        }

    def to_text(self) -> str:
        """The report in words: one line per path, then the findings."""
        lines = [f"{self.protocol} {self.version}: {len(self.paths)} path(s) from {self.initial} to a final element "
                 f"({', '.join(self.finals)})"]
        width = len(str(len(self.paths)))
        for p in self.paths:
            lines.append(f"  {p.index:>{width}}. {p.condition}")
            lines.append(f"  {'':>{width}}  {' → '.join(p.elements)}")
        if self.unreachable:
            lines.append("unreachable elements: " + ", ".join(self.unreachable))
        if self.problems:
            lines.append(f"findings ({len(self.problems)}):")
            lines.extend(f"  {f.kind}: {f.message}" for f in self.problems)
        else:
            lines.append("every element is reachable; no contradictory or pre-empted rule; every patient has a way on")
        if self.notes:
            lines.append(f"notes ({len(self.notes)}): branches that earlier decisions exclude on one path "
                         "(check that this is intended):")
            lines.extend(f"  {f.kind}: {f.message}" for f in self.notes)
        return "\n".join(lines) + "\n"

    def mermaid(self) -> str:
        """A Mermaid ``stateDiagram-v2``: each edge labelled with the condition under which it
        is taken; unreachable elements and never-taken transitions marked."""
        out = ["---", f"{self.protocol} {self.version}: paths", "---", "stateDiagram-v2", "  direction LR"]
        ids = list(dict.fromkeys([*self.reachable, *self.unreachable]))
        for ident in ids:
            note = " (unreachable)" if ident in self.unreachable else ""
            out.append(f'  state "{ident}{note}" as {ident}')
        out.append(f"  [*] --> {self.initial}")
        for b in self.branches:
            if not b.taken:
                label = "never taken"
            elif b.conditional:
                label = b.condition
            else:
                label = ""
            out.append(f"  {b.source} --> {b.dest}" + (f": {_mermaid_text(label)}" if label else ""))
        for ident in self.finals:
            out.append(f"  {ident} --> [*]")
        if self.unreachable:
            out.append("  classDef unreachable fill:#fdd,stroke:#c00,stroke-dasharray:4 4")
            out.extend(f"  class {ident} unreachable" for ident in self.unreachable)
        return "\n".join(out) + "\n"


def _mermaid_text(text: str) -> str:
    # Mermaid reads ';' as a statement end and '#' as an entity start in a label.
    return text.replace("#", "#35;").replace(";", "#59;")


# --------------------------------------------------------------------------- the reasoner


class _Reasoner:
    """Conditions of one protocol as DNF over value sets, with its eligibility and risk rules."""

    def __init__(self, protocol: Protocol) -> None:
        self.protocol = protocol
        defn = protocol.definition
        self.groups = tuple(g.id for g in defn.risk_groups)
        self.keys: dict[str, _KeyInfo] = {}
        self.conflicts: list[str] = []
        # Background: every patient on a path is eligible, and has the risk group its rules give.
        elig: Dnf = [{}]
        for rule in defn.eligibility:
            elig = self.conj(elig, self.dnf(rule.when))
        self.eligible = elig
        self.group_dnf: dict[str, Dnf] = {}
        earlier: Dnf = [{}]  # none of the earlier groups' rules holds
        for g in defn.risk_groups:
            own = [{}] if g.when is None else self.dnf(g.when)
            self.group_dnf[g.id] = self.conj(own, earlier)
            # A group without a rule takes everyone left.
            earlier = [] if g.when is None else self.conj(earlier, self.dnf(g.when, negate=True))
        self.no_group = self.conj(self.eligible, earlier)

    # -- facts --------------------------------------------------------------------

    def info(self, key: str) -> _KeyInfo:
        hit = self.keys.get(key)
        if hit is not None:
            return hit
        if key == "risk_group":
            hit = _KeyInfo(_label(key), Categories(frozenset(self.groups)), self.groups)
        elif key.startswith("arm:"):
            arms = self.protocol.randomisations.get(key[4:], ())
            hit = _KeyInfo(_label(key), Categories(frozenset(arms)), arms)
        elif key.startswith("mrd:"):
            hit = _KeyInfo(_label(key), Numbers.of([Interval(0.0, True, 1.0, True)], False))
        else:
            spec = FACTS.get(key)
            if spec is not None and spec.kind == "categorical":
                hit = _KeyInfo(spec.label, Categories(frozenset(spec.values)), spec.values)
            else:
                hit = _KeyInfo(_label(key), Numbers.of([Interval(0.0, True, _INF, False)], key in _INTEGER_FACTS))
        self.keys[key] = hit
        return hit

    def leaf(self, c: Condition) -> tuple[str, ValueSet]:
        key = _key(c)
        info = self.info(key)
        op, operand = c.op
        if isinstance(info.universe, Categories):
            if op == "in":
                found = Categories(frozenset(operand))
            elif op == "eq":
                found = Categories(frozenset({operand}))
            else:
                found = Categories(frozenset({operand})).complement(info.universe)
            return key, found & info.universe
        t = float(operand.value)
        part = {"lt": Interval(-_INF, False, t, False), "lte": Interval(-_INF, False, t, True),
                "gt": Interval(t, False, _INF, False), "gte": Interval(t, True, _INF, False)}[op]
        universe = info.universe
        assert isinstance(universe, Numbers)
        return key, Numbers.of([part], universe.integer) & universe

    # -- DNF ------------------------------------------------------------------------

    def dnf(self, c: Condition, negate: bool = False) -> Dnf:
        """``c`` (or ``not c``) in disjunctive normal form, with negations pushed to the leaves."""
        if c.not_ is not None:
            return self.dnf(c.not_, not negate)
        if c.all_ is not None or c.any_ is not None:
            parts = [self.dnf(x, negate) for x in (c.all_ or c.any_ or ())]
            conjunctive = (c.all_ is not None) != negate
            if conjunctive:
                out: Dnf = [{}]
                for p in parts:
                    out = self.conj(out, p)
                return out
            return self.simplify([t for p in parts for t in p])
        key, values = self.leaf(c)
        if negate:
            values = values.complement(self.info(key).universe)  # type: ignore[arg-type]
        return [] if values.empty() else [{key: values}]

    def conj(self, a: Dnf, b: Dnf) -> Dnf:
        """``a and b``; terms that end with a fact left without values are dropped (and the
        clash remembered in ``conflicts`` for the explanation)."""
        out: Dnf = []
        for x in a:
            for y in b:
                merged = dict(x)
                ok = True
                for key, values in y.items():
                    have = merged.get(key)
                    if have is None:
                        merged[key] = values
                        continue
                    both = have & values  # type: ignore[operator]
                    if both.empty():
                        self.conflicts.append(f"{self.text_of(key, have)} excludes {self.text_of(key, values)}")
                        ok = False
                        break
                    merged[key] = both
                if ok:
                    out.append(merged)
        return self.simplify(out)

    def negate(self, d: Dnf) -> Dnf:
        """``not d``."""
        out: Dnf = [{}]
        for term in d:
            alternatives: Dnf = []
            for key, values in term.items():
                rest = values.complement(self.info(key).universe)  # type: ignore[arg-type]
                if not rest.empty():
                    alternatives.append({key: rest})
            out = self.conj(out, alternatives)
        return out

    def simplify(self, d: Dnf) -> Dnf:
        """Drop unconstrained facts, duplicate and subsumed terms; merge terms that differ in one fact."""
        terms = []
        for t in d:
            t = {k: v for k, v in t.items() if not (self.info(k).universe <= v)}  # type: ignore[operator]
            if t not in terms:
                terms.append(t)
        changed = True
        while changed:
            changed = False
            for i, a in enumerate(terms):
                for j, b in enumerate(terms):
                    if i == j:
                        continue
                    if _subsumes(b, a):  # a is implied by b ⊇ a: drop a
                        del terms[i]
                        changed = True
                        break
                    if a.keys() == b.keys():
                        differ = [k for k in a if a[k] != b[k]]
                        if len(differ) == 1:
                            k = differ[0]
                            union = a[k] | b[k]  # type: ignore[operator]
                            merged = dict(a)
                            merged[k] = union
                            if self.info(k).universe <= union:  # type: ignore[operator]
                                del merged[k]
                            terms[i] = merged
                            del terms[j]
                            changed = True
                            break
                if changed:
                    break
        return terms

    # -- satisfiability -------------------------------------------------------------

    def satisfiable(self, d: Dnf) -> Dnf:
        """The terms of ``d`` that some eligible patient with a risk group can meet."""
        return [t for t in d if self.term_ok(t)]

    def term_ok(self, term: Term) -> bool:
        plain = {k: v for k, v in term.items() if k != "risk_group"}
        base = self.conj([plain], self.eligible)
        if not base:
            return False
        groups = term.get("risk_group")
        if groups is None:
            return True  # the groups and "no group" split the eligible patients: one of them takes these
        assert isinstance(groups, Categories)
        return any(self.conj(base, self.group_dnf[g]) for g in groups.values if g in self.group_dnf)

    # -- words ----------------------------------------------------------------------

    def text_of(self, key: str, values: ValueSet) -> str:
        info = self.info(key)
        label = info.label
        if isinstance(values, Categories):
            assert isinstance(info.universe, Categories)
            chosen = [v for v in info.order if v in values.values] or sorted(values.values)
            if len(chosen) == 1:
                return f"{label} = {chosen[0]}"
            others = [v for v in info.order if v not in values.values]
            if len(others) == 1:
                return f"{label} ≠ {others[0]}"
            return f"{label} in {{{', '.join(chosen)}}}"
        assert isinstance(info.universe, Numbers)
        base = info.universe.parts[0] if info.universe.parts else Interval(-_INF, False, _INF, False)
        pieces = [_interval_text(key, label, p, base, values.integer) for p in values.parts]
        return pieces[0] if len(pieces) == 1 else "(" + " or ".join(pieces) + ")"

    def term_texts(self, term: Term) -> tuple[str, ...]:
        return tuple(self.text_of(k, v) for k, v in term.items())

    def words(self, d: Dnf) -> str:
        if not d:
            return "never"
        if d == [{}]:
            return "always"
        if len(d) == 1:
            return " and ".join(self.term_texts(d[0]))
        # Constraints every alternative shares are written once, in front.
        common = {k: v for k, v in d[0].items() if all(t.get(k) == v for t in d[1:])}
        rests = [{k: v for k, v in t.items() if k not in common} for t in d]
        if common and all(rests):
            inner = self.words(rests)
            return " and ".join([*self.term_texts(common), f"({inner})" if len(rests) > 1 else inner])
        texts = [" and ".join(self.term_texts(t)) for t in d]
        return " or ".join(f"({t})" if len(d[i]) > 1 else t for i, t in enumerate(texts))


def _subsumes(general: Term, specific: Term) -> bool:
    """Every patient meeting ``specific`` also meets ``general``."""
    if general is specific:
        return False
    for key, values in general.items():
        have = specific.get(key)
        if have is None or not (have <= values):  # type: ignore[operator]
            return False
    return True


def _interval_text(key: str, label: str, p: Interval, base: Interval, integer: bool) -> str:
    def num(x: float) -> str:
        return _fmt_value(key, int(x) if integer else x)

    has_lo = p.lo > base.lo or (p.lo == base.lo and not p.lo_closed and base.lo_closed)
    has_hi = p.hi < base.hi or (p.hi == base.hi and not p.hi_closed and base.hi_closed)
    if integer:  # write whole-number bounds as the protocol does: "< 6", not "≤ 5"
        hi_text = f"< {num(p.hi + 1)}" if has_hi else ""
        lo_text = f"≥ {num(p.lo)}" if has_lo else ""
        if has_lo and has_hi and p.lo == p.hi:
            return f"{label} = {num(p.lo)}"
    else:
        hi_text = f"{'≤' if p.hi_closed else '<'} {num(p.hi)}" if has_hi else ""
        lo_text = f"{'≥' if p.lo_closed else '>'} {num(p.lo)}" if has_lo else ""
        if has_lo and has_hi and p.lo == p.hi:
            return f"{label} = {num(p.lo)}"
    if has_lo and has_hi:
        return f"{label} {lo_text} and {hi_text}"
    if has_lo:
        return f"{label} {lo_text}"
    if has_hi:
        return f"{label} {hi_text}"
    return f"{label} any"


# --------------------------------------------------------------------------- enumeration


def _branch_dnfs(r: _Reasoner, edges: tuple[Edge, ...]) -> list[tuple[Dnf, Dnf]]:
    """For each edge out of one element: (its own rule, when it is actually taken)."""
    out = []
    earlier_none: Dnf = [{}]  # no earlier rule holds
    for e in edges:
        own: Dnf = [{}] if e.condition is None else r.dnf(e.condition)
        out.append((own, r.conj(own, earlier_none)))
        if e.condition is not None:
            # Negate only what some patient can meet: the same patients, in fewer words.
            earlier_none = r.conj(earlier_none, r.negate(r.satisfiable(own)))
    return out


def paths(protocol: Protocol) -> PathReport:
    """Enumerate every path of ``protocol`` from its initial element to a final element.

    Each :class:`Path` carries the simplified conjunction of the branch conditions that
    select it. The :class:`PathReport` also lists the branches with the condition under
    which each is taken, the elements no patient can reach, and findings: rules that can
    never hold, transitions that earlier ones pre-empt, contradictory paths, patients with
    no transition out of an element, eligible patients with no risk group.

    >>> report = paths(load_protocol("interfant06-blinatumomab"))   # doctest: +SKIP
    >>> [p.condition for p in report.paths]                         # doctest: +SKIP
    ['risk group = HR or MRD at pre_octadad ≥ 5e-4', 'risk group = MR and MRD at pre_octadad < 5e-4']
    """
    r = _Reasoner(protocol)
    findings: list[Finding] = []
    table = protocol.table
    branch_of: dict[tuple[str, str], tuple[Edge, Dnf, Dnf]] = {}
    for source, edges in table.items():
        for e, (own, taken) in zip(edges, _branch_dnfs(r, edges), strict=True):
            branch_of[(source, e.dest)] = (e, own, taken)
            if e.condition is not None:
                r.conflicts.clear()
                own = r.dnf(e.condition)  # again, so that its own clashes are the ones remembered
                if not r.satisfiable(own):
                    findings.append(Finding("contradictory_guard", f"{source} → {e.dest}: the rule “{e.text}” can "
                                            f"never hold{_because(r, own)}", source, (source, e.dest)))
                    continue
            if not r.satisfiable(taken):
                earlier = [x.text for x in edges[: edges.index(e)] if x.condition is not None]
                findings.append(Finding("never_taken", f"{source} → {e.dest} ({e.text}) is never taken: every patient "
                                        f"it would take is taken earlier by “{' or '.join(earlier)}”",
                                        source, (source, e.dest)))

    # Depth-first over the DAG, carrying the condition so far.
    found: list[Path] = []
    entered: set[str] = {protocol.initial}
    used: set[tuple[str, str]] = set()
    gaps: dict[str, Dnf] = {}
    truncated = False

    def walk(here: str, trail: list[str], decisions: list[tuple[str, str]], cond: Dnf) -> None:
        nonlocal truncated
        if truncated:
            return
        element = protocol.elements[here]
        edges = table.get(here, ())
        if element.final or not edges:
            if len(found) >= MAX_PATHS:
                truncated = True
                return
            found.append(Path(len(found) + 1, tuple(trail), tuple(decisions), r.words(cond),
                              tuple(r.term_texts(t) for t in cond), tuple(cond)))
            return
        if edges[-1].condition is not None:  # no default edge: can every rule be false?
            none_hold = r.satisfiable(_all_false(r, edges, cond))
            if none_hold:
                gaps.setdefault(here, [])
                gaps[here] = r.simplify([*gaps[here], *none_hold])
        branching = len(edges) > 1 or edges[0].condition is not None
        for e in edges:
            _, _, taken = branch_of[(here, e.dest)]
            r.conflicts.clear()
            nxt = r.satisfiable(r.conj(cond, taken))
            if not nxt:
                if r.satisfiable(taken) and cond != [{}]:
                    findings.append(Finding(
                        "contradictory_path",
                        f"{' → '.join([*trail, e.dest])}: the branch to {e.dest} needs "
                        f"{r.words(r.satisfiable(taken))}, "
                        f"which the conditions so far ({r.words(cond)}) exclude", e.dest, (here, e.dest)))
                continue
            used.add((here, e.dest))
            entered.add(e.dest)
            walk(e.dest, [*trail, e.dest], [*decisions, (e.decision, e.dest)] if branching else decisions, nxt)

    walk(protocol.initial, [protocol.initial], [], [{}])
    for here, d in gaps.items():
        findings.append(Finding("no_transition", f"no transition out of {here} applies when {r.words(d)}", here))
    if r.satisfiable(r.no_group):
        findings.append(Finding("no_risk_group", "an eligible patient fits no risk group when "
                                f"{r.words(r.satisfiable(r.no_group))}"))
    if truncated:
        findings.append(Finding("truncated", f"more than {MAX_PATHS} paths: only the first {MAX_PATHS} are listed"))
    unreachable = [e for e in protocol.elements if e not in entered]
    findings[:0] = [Finding("unreachable", f"{e} cannot be reached: no path from {protocol.initial} to it has "
                            "conditions a patient can meet", e) for e in unreachable]
    branches = []
    for source, edges in table.items():
        for e in edges:
            _, own, taken = branch_of[(source, e.dest)]
            sat = r.satisfiable(taken)
            branches.append(Branch(source, e.dest, e.decision, e.text, r.words(sat) if sat else "never",
                                   (source, e.dest) in used, len(edges) > 1 or e.condition is not None))
    finals = tuple(k for k, el in protocol.elements.items() if el.final)
    reachable = [e for e in protocol.elements if e in entered]
    return PathReport(protocol.id, protocol.version, protocol.initial, finals, found, branches, reachable,
                      unreachable, findings)


def _all_false(r: _Reasoner, edges: tuple[Edge, ...], cond: Dnf) -> Dnf:
    out = cond
    for e in edges:
        assert e.condition is not None
        out = r.conj(out, r.negate(r.satisfiable(r.dnf(e.condition))))
    return out


def _because(r: _Reasoner, d: Dnf) -> str:
    """The clashes the reasoner met while proving ``d`` empty, in words (at most three)."""
    reasons = list(dict.fromkeys(r.conflicts))[:3]
    return f" ({'; '.join(reasons)})" if reasons else ""


def iter_path_conditions(report: PathReport) -> Iterator[tuple[Path, tuple[Term, ...]]]:
    """Each path with its condition as value sets (for the simulation's cross-checks)."""
    for p in report.paths:
        yield p, p._dnf
