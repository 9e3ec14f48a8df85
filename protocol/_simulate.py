"""Virtual cohorts at scale: a protocol compiled to a transition table over integer days.

A validated :class:`~protocol._machine.Protocol` is compiled once into :class:`Compiled`:
element lengths, gaps and the end of therapy as integers, the transitions as a table of
edges in the order they are tried, and every guard as a vectorised three-valued function
over columns of facts (numpy arrays; ``0`` false, ``1`` unknown, ``2`` true, so Kleene
``and`` is ``min`` and ``or`` is ``max``). The interactive ``transitions`` machine and this
table come from the same definition; ``tests/test_simulate.py`` walks every state, trigger
and guard outcome through both.

A cohort of N virtual patients is cut into chunks of :data:`CHUNK` patients. Chunk *i* draws
from its own generator, seeded from ``SeedSequence(seed, spawn_key=(i,))``, and returns
fixed-size integer tallies (counts, day histograms): the merged result depends on the seed
and N only, never on the number of workers, and memory stays flat as N grows. Workers are
``spawn``-started processes that rebuild the protocol from its definition.

Time model (days after diagnosis, day 0 = the diagnosis date), as the scheduler plans it: the
initial element starts after its drawn delay; each next element starts the day after the
previous one ends, plus its ``start.gap_days`` and its drawn delay; an element with a length
lasts that many days; an open-ended element runs to the end of therapy (anchored to
diagnosis or treatment start); a final element without a length ends the path when it starts.
An event (relapse, death, off-protocol) drawn inside an element ends the path on its day.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._cohort import INTEGER_FACTS, Cohort, Distribution
from ._errors import InputError, Problem
from ._machine import OUTCOMES, Protocol
from ._models import Condition
from ._rules import FACTS, _key

__all__ = ["CHUNK", "Compiled", "SimulationResult", "Simulator", "Tally", "simulate", "wilson"]

#: Patients per chunk. Fixed: the chunk, not the worker, is the unit of randomness.
CHUNK = 10_000

#: Worker processes start only for runs of at least this many chunks: starting one (a fresh
#: interpreter that imports the package and rebuilds the protocol) costs about as much as
#: simulating a few hundred thousand patients in the running process.
POOL_MIN_CHUNKS = 40

#: With workers, this process simulates chunks too (the tests turn it off so that the spawned
#: workers compute every chunk).
MAIN_WORKS = True

F, U, T = 0, 1, 2  # three-valued results as int8: false, unknown, true

#: Diagnosis dates of virtual patients are spread over four years from this day, so that
#: completed calendar months are counted over months of every length (and a 29 February).
_DIAGNOSIS_FROM = dt.date(2024, 1, 1).toordinal()
_EPOCH = dt.date(1970, 1, 1).toordinal()

#: How a patient's path ends, after the final elements: the three outcomes, then
#: "no_transition" (every rule out of an element is false) and "undecided" (a rule is unknown,
#: e.g. no risk group applies).
STOPS = (*OUTCOMES, "no_transition", "undecided")

_Z95 = 1.959963984540054


# --------------------------------------------------------------------------- compiled table


@dataclass(frozen=True, slots=True)
class CEdge:
    """One compiled transition: indices, its place among the edges out of its source, guards."""

    index: int
    source: int
    dest: int
    rank: int  # position among the edges out of ``source`` (they are tried in order)
    decision: str
    vector: Callable[[Mapping[str, np.ndarray]], np.ndarray] | None  # None: the default edge
    scalar: Callable[[Mapping[str, Any]], bool | None] | None  # the machine's own guard (Edge.guard)


class InvalidTrigger(Exception):
    """A trigger that is not defined from a state (the machine raises ``MachineError``)."""


class Compiled:
    """A protocol as integer arrays and an edge table, for simulation (built once per process).

    ``names``: element ids in definition order (element *i* is state *i*); ``states`` adds the
    outcomes (state ``E + j`` is ``OUTCOMES[j]``). ``out[i]``: the edges out of element *i*,
    in the order they are tried. ``length[i]``: days (-1: none), ``gap[i]``, ``open_ended``,
    ``final``; ``eot_days`` and ``eot_anchor``; ``topo``: elements in topological order.
    """

    def __init__(self, protocol: Protocol) -> None:
        self.protocol = protocol
        self.names = tuple(protocol.elements)
        self.E = len(self.names)
        if self.E > 47:
            raise InputError(Problem(protocol.path or protocol.id, "elements",
                                     f"the simulation handles up to 47 elements, got {self.E}"))
        self.states = (*self.names, *OUTCOMES)
        self.index = {name: i for i, name in enumerate(self.states)}
        els = [protocol.elements[n] for n in self.names]
        self.length = np.array([-1 if e.length is None else e.length for e in els], dtype=np.int64)
        self.gap = np.array([e.gap for e in els], dtype=np.int64)
        self.open_ended = np.array([e.open_ended for e in els], dtype=bool)
        self.final = np.array([e.final for e in els], dtype=bool)
        self.eot_days = protocol.eot_days
        self.eot_anchor = protocol.eot_anchor
        self.initial = self.index[protocol.initial]
        self.groups = tuple(g.id for g in protocol.definition.risk_groups)
        self.encodings: dict[str, tuple[str, ...] | None] = {}  # categorical values by key; None = numeric
        edges: list[CEdge] = []
        out: list[list[CEdge]] = [[] for _ in self.names]
        for source, row in protocol.table.items():
            for rank, e in enumerate(row):
                ce = CEdge(len(edges), self.index[source], self.index[e.dest], rank, e.decision,
                           None if e.condition is None else self.vector(e.condition), e.guard)
                edges.append(ce)
                out[ce.source].append(ce)
        self.edges = tuple(edges)
        self.out = tuple(tuple(x) for x in out)
        self.topo = self._topological()

    def _topological(self) -> tuple[int, ...]:
        indegree = [0] * self.E
        for e in self.edges:
            indegree[e.dest] += 1
        ready = [i for i in range(self.E) if indegree[i] == 0]
        order: list[int] = []
        while ready:
            i = ready.pop(0)
            order.append(i)
            for e in self.out[i]:
                indegree[e.dest] -= 1
                if indegree[e.dest] == 0:
                    ready.append(e.dest)
        return tuple(order)

    # -- encodings ------------------------------------------------------------------

    def encoding(self, key: str) -> tuple[str, ...] | None:
        """The categories of a fact key in code order (None: a number)."""
        if key in self.encodings:
            return self.encodings[key]
        if key == "risk_group":
            enc: tuple[str, ...] | None = self.groups
        elif key.startswith("arm:"):
            enc = self.protocol.randomisations.get(key[4:], ())
        elif key.startswith("mrd:"):
            enc = None
        else:
            spec = FACTS.get(key)
            enc = spec.values if spec is not None and spec.kind == "categorical" else None
        self.encodings[key] = enc
        return enc

    def columns(self, facts: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
        """Fact dicts (as ``patient_facts`` gives them) as columns (absent = unknown)."""
        keys = sorted({k for f in facts for k in f} | {"risk_group"})
        cols: dict[str, np.ndarray] = {}
        for key in keys:
            enc = self.encoding(key)
            if enc is None:
                cols[key] = np.array([np.nan if f.get(key) is None else float(f[key]) for f in facts])
            else:
                codes = {v: i for i, v in enumerate(enc)}
                cols[key] = np.array([codes.get(f.get(key), -1) if f.get(key) is not None else -1 for f in facts],
                                     dtype=np.int16)
        return cols

    def decode(self, cols: Mapping[str, np.ndarray], i: int) -> dict[str, Any]:
        """Patient ``i`` of ``cols`` as a facts dict (unknown facts left out)."""
        facts: dict[str, Any] = {}
        for key, col in cols.items():
            enc = self.encoding(key)
            x = col[i]
            if enc is None:
                if not np.isnan(x):
                    facts[key] = int(x) if key in INTEGER_FACTS else float(x)
            elif x >= 0:
                facts[key] = enc[int(x)]
        return facts

    # -- vectorised guards ----------------------------------------------------------

    def vector(self, c: Condition) -> Callable[[Mapping[str, np.ndarray]], np.ndarray]:
        """Compile a condition to a function of fact columns giving int8 F/U/T per patient."""
        if c.all_ is not None or c.any_ is not None:
            parts = tuple(self.vector(x) for x in (c.all_ or c.any_ or ()))
            reduce = np.minimum if c.all_ is not None else np.maximum

            def group(cols: Mapping[str, np.ndarray]) -> np.ndarray:
                out = parts[0](cols)
                for p in parts[1:]:
                    out = reduce(out, p(cols))
                return out

            return group
        if c.not_ is not None:
            inner = self.vector(c.not_)
            return lambda cols: (T - inner(cols)).astype(np.int8)
        key = _key(c)
        op, operand = c.op
        enc = self.encoding(key)
        if enc is not None:
            wanted = [operand] if op in ("eq", "ne") else list(operand)
            codes = np.array([enc.index(v) for v in wanted if v in enc], dtype=np.int16)

            def categorical(cols: Mapping[str, np.ndarray]) -> np.ndarray:
                x = cols.get(key)
                if x is None:
                    return np.full(_length(cols), U, dtype=np.int8)
                hit = np.isin(x, codes)
                if op == "ne":
                    hit = ~hit
                out = hit.astype(np.int8) * 2
                out[x < 0] = U
                return out

            return categorical
        t = float(operand.value)
        compare = {"lt": np.less, "lte": np.less_equal, "gt": np.greater, "gte": np.greater_equal}[op]

        def numeric(cols: Mapping[str, np.ndarray]) -> np.ndarray:
            x = cols.get(key)
            if x is None:
                return np.full(_length(cols), U, dtype=np.int8)
            with np.errstate(invalid="ignore"):
                out = compare(x, t).astype(np.int8) * 2
            out[np.isnan(x)] = U
            return out

        return numeric

    # -- the table, one state at a time (what the differential test compares) ---------

    def fire(self, state: int, trigger: str, tri: Sequence[int]) -> int | None:
        """The table's answer to ``trigger`` in ``state`` given the guard results ``tri`` of the
        edges out of ``state`` (F/U/T, in order; a default edge's entry is ignored): the new
        state, or None when the rule refuses the move. Raises :class:`InvalidTrigger` when the
        trigger is not defined from ``state``.

        The rule is the replay machine's: a recorded move is accepted unless its own rule is
        definitely false or an earlier edge's rule definitely holds.
        """
        if trigger in OUTCOMES:
            if state >= self.E:
                raise InvalidTrigger(trigger)
            return self.index[trigger]
        if state >= self.E:
            raise InvalidTrigger(trigger)
        dest = self.index.get(trigger.removeprefix("start_"), -1) if trigger.startswith("start_") else -1
        edge = next((e for e in self.out[state] if e.dest == dest), None)
        if edge is None:
            raise InvalidTrigger(trigger)
        if edge.vector is not None and tri[edge.rank] == F:
            return None
        if any(e.vector is not None and tri[e.rank] == T for e in self.out[state][: edge.rank]):
            return None
        return dest

    def choose(self, state: int, tri: Sequence[int]) -> tuple[str, int | None]:
        """Where the protocol goes from ``state``: ``("move", dest)``, ``("final", None)``,
        ``("no_transition", None)`` (every rule false) or ``("undecided", None)`` (an earlier
        rule unknown)."""
        if self.final[state] or not self.out[state]:
            return "final", None
        for e in self.out[state]:
            r = T if e.vector is None else tri[e.rank]
            if r == T:
                return "move", e.dest
            if r == U:
                return "undecided", None
        return "no_transition", None

    def tri_of(self, state: int, cols: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Guard results of the edges out of ``state`` over the columns (T for a default edge)."""
        n = _length(cols)
        return [np.full(n, T, dtype=np.int8) if e.vector is None else e.vector(cols) for e in self.out[state]]

    def horizon(self, delays: Sequence[int]) -> int:
        """Days covered by the histograms, in whole weeks: every element's length, gap and
        delay allowance (``delays``) once, plus the end of therapy and four weeks. An element
        appears at most once on a path, so no patient's last day lies beyond it (a delay
        drawn above its allowance is counted in the histograms' last, "beyond" bin)."""
        total = sum(int(max(self.length[i], 0)) + int(self.gap[i]) + int(delays[i]) + 1 for i in range(self.E))
        return 7 * math.ceil((total + (self.eot_days or 0) + 28) / 7)


def _length(cols: Mapping[str, np.ndarray]) -> int:
    return len(next(iter(cols.values())))


# --------------------------------------------------------------------------- drawing


def _sampler(d: Distribution, codes: tuple[str, ...] | None, integer: bool, cap: float | None = None
             ) -> Callable[[np.random.Generator, int], np.ndarray]:
    """A function ``(rng, n) -> values`` for one distribution (categories as int16 codes)."""
    if codes is not None:  # categorical
        if d.categories is None:
            code = codes.index(str(d.fixed))
            return lambda rng, n: np.full(n, code, dtype=np.int16)
        values = np.array([codes.index(v) for v in d.categories], dtype=np.int16)
        p = np.array(list(d.categories.values()), dtype=float)
        p = p / p.sum()
        return lambda rng, n: values[rng.choice(len(values), size=n, p=p)]

    def finish(x: np.ndarray) -> np.ndarray:
        if cap is not None:
            x = np.minimum(x, cap)
        return np.floor(x) if integer else x

    if d.fixed is not None:
        value = float(d.fixed)
        return lambda rng, n: np.full(n, value)
    if d.uniform is not None:
        lo, hi = d.uniform.low, d.uniform.high
        if integer:
            return lambda rng, n: rng.integers(int(lo), int(hi) + 1, size=n).astype(float)
        return lambda rng, n: finish(rng.uniform(lo, hi, size=n))
    if d.lognormal is not None:
        ln = d.lognormal
        mu, sigma, top, zeros = math.log(ln.median), ln.sigma, ln.max, d.negative or 0.0

        def lognormal(rng: np.random.Generator, n: int) -> np.ndarray:
            x = np.exp(rng.normal(mu, sigma, size=n))
            if top is not None:
                x = np.minimum(x, top)
            if zeros:
                x[rng.random(n) < zeros] = 0.0
            return finish(x)

        return lognormal
    if d.poisson is not None:
        mean = d.poisson.mean
        return lambda rng, n: rng.poisson(mean, size=n).astype(float)
    assert d.bins is not None
    bins = d.bins
    p = np.array([b.p for b in bins], dtype=float)
    p = p / p.sum()
    lows = np.array([b.bounds[0] for b in bins])
    highs = np.array([b.bounds[1] for b in bins])

    def binned(rng: np.random.Generator, n: int) -> np.ndarray:
        which = rng.choice(len(bins), size=n, p=p)
        u = rng.random(n)
        lo, hi = lows[which], highs[which]
        return finish(lo + u * (hi - lo))

    return binned


def _calendar(ordinals: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(months since 1970-01, day of month, days in that month) of proleptic ordinals."""
    days = (ordinals - _EPOCH).astype("datetime64[D]")
    month = days.astype("datetime64[M]")
    first = month.astype("datetime64[D]")
    dom = (days - first).astype(np.int64) + 1
    last = ((month + 1).astype("datetime64[D]") - first).astype(np.int64)
    return month.astype(np.int64), dom, last


def completed_months(age_days: np.ndarray, diagnosis: np.ndarray) -> np.ndarray:
    """Completed calendar months of age on the diagnosis day, as ``_rules.completed_months``
    counts them (a birthday on the 31st falls on the month's last day in shorter months)."""
    birth = diagnosis - age_days
    bm, bd, _ = _calendar(birth)
    dm, dd, dl = _calendar(diagnosis)
    n = dm - bm
    return n - (np.minimum(bd, dl) > dd)


# --------------------------------------------------------------------------- tallies


@dataclass(slots=True)
class Tally:
    """Fixed-size integer aggregates of simulated patients (merged by adding)."""

    n: int
    ineligible: int
    risk: np.ndarray  # per risk group, then "none"
    trajectories: dict[int, int]  # (visited bitmask, end code, risk code + 1) packed -> patients
    edges: np.ndarray  # patients taking each edge
    mrd: dict[str, np.ndarray]  # per time point: patients per category
    arms: dict[str, np.ndarray]  # per randomisation: patients per arm
    starts: np.ndarray  # (E, H + 1): patients starting each element on each day (last: beyond)
    occupancy: np.ndarray  # (E, H + 2): difference array of patients in each element by day
    durations: np.ndarray  # (ends, H + 1): protocol therapy duration in days, by how the path ended

    def merge(self, other: Tally) -> None:
        """Add ``other`` into this tally."""
        self.n += other.n
        self.ineligible += other.ineligible
        self.risk += other.risk
        for k, v in other.trajectories.items():
            self.trajectories[k] = self.trajectories.get(k, 0) + v
        self.edges += other.edges
        for k, v in other.mrd.items():
            self.mrd[k] += v
        for k, v in other.arms.items():
            self.arms[k] += v
        self.starts += other.starts
        self.occupancy += other.occupancy
        self.durations += other.durations


def pack(visited: np.ndarray, end: np.ndarray, risk: np.ndarray) -> np.ndarray:
    """One int64 key per patient: visited elements (bit per element), end code, risk code + 1."""
    return (visited << 16) | (end.astype(np.int64) << 6) | (risk.astype(np.int64) + 1)


def unpack(key: int) -> tuple[int, int, int]:
    """``(visited bitmask, end code, risk code)`` of a packed key (risk -1: none)."""
    return key >> 16, (key >> 6) & 0x3FF, (key & 0x3F) - 1


# --------------------------------------------------------------------------- the simulator


class Simulator:
    """Draws and walks chunks of virtual patients for one protocol and one cohort."""

    def __init__(self, protocol: Protocol, cohort: Cohort) -> None:
        self.protocol = protocol
        self.cohort = cohort
        c = self.compiled = Compiled(protocol)
        defn = protocol.definition
        self.fact_samplers = []
        for name, d in cohort.facts.items():
            enc = c.encoding(name)
            self.fact_samplers.append((name, _sampler(d, enc, name in INTEGER_FACTS)))
        self.age_from_days = "age_at_diagnosis_days" in cohort.facts
        self.mrd_samplers = [(f"mrd:{tp}", _sampler(d, None, False, cap=1.0)) for tp, d in cohort.mrd.items()]
        self.arm_samplers = [(f"arm:{r}", _sampler(d, c.encoding(f"arm:{r}"), False)) for r, d in cohort.arms.items()]
        self.delay_samplers: list[Callable[[np.random.Generator, int], np.ndarray] | None] = [
            None if name not in cohort.delays else _sampler(cohort.delays[name], None, True) for name in c.names]
        self.events: list[list[tuple[int, str, float]]] = [[] for _ in c.names]
        for name, ev in cohort.events.items():
            for j, outcome in enumerate(OUTCOMES):
                risk = getattr(ev, outcome)
                if risk is not None:
                    kind, value = ("p", risk.probability) if risk.probability is not None else ("h", risk.per_day)
                    self.events[c.index[name]].append((j, kind, float(value)))  # type: ignore[arg-type]
        self.derived = [(d.id, d.otherwise, tuple((case.value, c.vector(case.when)) for case in d.cases))
                        for d in defn.derived_facts if d.id not in cohort.facts]
        self.eligibility = tuple(c.vector(r.when) for r in defn.eligibility)
        self.risk_rules = tuple(None if g.when is None else c.vector(g.when) for g in defn.risk_groups)
        allowance = [self._delay_allowance(cohort.delays.get(name)) for name in c.names]
        self.H = c.horizon(allowance)
        self.mrd_cuts = {tp: mrd_cuts(protocol, cohort, tp) for tp in cohort.mrd}
        self.ends = c.E + len(STOPS)

    @staticmethod
    def _delay_allowance(d: Distribution | None) -> int:
        if d is None:
            return 0
        span = d.numeric_range()
        if span is None or math.isinf(span[1]):
            mean = d.poisson.mean if d.poisson is not None else 0.0
            return int(mean + 10 * math.sqrt(mean) + 10)
        return int(span[1])

    def empty(self) -> Tally:
        """A tally of no patients."""
        c = self.compiled
        return Tally(0, 0, np.zeros(len(c.groups) + 1, dtype=np.int64), {}, np.zeros(len(c.edges), dtype=np.int64),
                     {tp: np.zeros(len(cuts) + 2, dtype=np.int64) for tp, cuts in self.mrd_cuts.items()},
                     {r[4:]: np.zeros(len(c.encoding(r) or ()), dtype=np.int64) for r, _ in self.arm_samplers},
                     np.zeros((c.E, self.H + 1), dtype=np.int64), np.zeros((c.E, self.H + 2), dtype=np.int64),
                     np.zeros((self.ends, self.H + 1), dtype=np.int64))

    # -- one chunk ------------------------------------------------------------------

    def draw(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        """Draw the facts, MRD results and arms of ``n`` patients, then derive what the
        protocol derives (ages in months and years, derived facts, eligibility, risk group)."""
        c = self.compiled
        cols: dict[str, np.ndarray] = {}
        for name, sample in self.fact_samplers:
            cols[name] = sample(rng, n)
        if self.age_from_days:
            diagnosis = _DIAGNOSIS_FROM + rng.integers(0, 1461, size=n)
            days = cols["age_at_diagnosis_days"].astype(np.int64)
            if "age_at_diagnosis_months" not in cols:
                cols["age_at_diagnosis_months"] = completed_months(days, diagnosis).astype(float)
        if "age_at_diagnosis_months" in cols and "age_at_diagnosis_years" not in cols:
            cols["age_at_diagnosis_years"] = np.floor_divide(cols["age_at_diagnosis_months"], 12)
        for key, sample in self.mrd_samplers:
            cols[key] = sample(rng, n)
        for key, sample in self.arm_samplers:
            cols[key] = sample(rng, n)
        for fact, otherwise, cases in self.derived:
            enc = c.encoding(fact) or ()
            value = np.full(n, -1, dtype=np.int16)
            done = np.zeros(n, dtype=bool)
            for case_value, guard in cases:
                r = guard(cols)
                value[~done & (r == T)] = enc.index(case_value)
                done |= r != F
            if otherwise is not None:
                value[~done] = enc.index(otherwise)
            cols[fact] = value
        eligible = np.ones(n, dtype=bool)
        for rule in self.eligibility:
            eligible &= rule(cols) != F
        group = np.full(n, -1, dtype=np.int16)
        done = np.zeros(n, dtype=bool)
        pending = np.zeros(n, dtype=bool)
        for gi, rule in enumerate(self.risk_rules):
            r = np.full(n, T, dtype=np.int8) if rule is None else rule(cols)
            hit = ~done & (r == T)
            group[hit & ~pending] = gi
            done |= hit
            pending |= ~done & (r == U)
        cols["risk_group"] = group
        cols["_eligible"] = eligible
        return cols

    def chunk(self, index: int, n: int, seed: int, keep: bool = False) -> Any:
        """Simulate chunk ``index`` of ``n`` patients; returns its :class:`Tally` (with
        ``keep``: also the per-patient arrays, for tests)."""
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))
        c = self.compiled
        E, H = c.E, self.H
        cols = self.draw(rng, n)
        eligible = cols["_eligible"]
        tally = self.empty()
        tally.n = n
        tally.ineligible = int(n - eligible.sum())
        group = cols["risk_group"]
        tally.risk += np.bincount(np.where(group[eligible] < 0, len(c.groups), group[eligible]),
                                  minlength=len(c.groups) + 1)
        for tp, cuts in self.mrd_cuts.items():
            x = cols[f"mrd:{tp}"][eligible]
            cat = np.where(x <= 0, 0, 1 + np.searchsorted(cuts, x, side="right"))
            tally.mrd[tp] += np.bincount(cat, minlength=len(cuts) + 2)
        for key, _ in self.arm_samplers:
            arm = cols[key][eligible]
            tally.arms[key[4:]] += np.bincount(arm[arm >= 0], minlength=len(tally.arms[key[4:]]))

        start = np.full((E, n), -1, dtype=np.int64)
        visited = np.zeros(n, dtype=np.int64)
        end_code = np.full(n, -1, dtype=np.int64)
        last_day = np.zeros(n, dtype=np.int64)
        sample0 = self.delay_samplers[c.initial]
        start[c.initial, eligible] = 0 if sample0 is None else sample0(rng, int(eligible.sum())).astype(np.int64)
        t0 = start[c.initial].copy()
        big = np.iinfo(np.int64).max // 4
        anchor = c.index.get(self.protocol.eot_anchor_element or "", -1)

        def end_of_therapy(idx: np.ndarray) -> np.ndarray:
            # The last day of therapy: anchored to diagnosis (day 0), treatment start, or the
            # start of an element; a patient who never started the anchor element has none.
            if c.eot_days is None:
                return np.full(len(idx), big, dtype=np.int64)
            if c.eot_anchor == "treatment_start":
                return t0[idx] + c.eot_days - 1
            if c.eot_anchor == "element_start" and anchor >= 0:
                base = start[anchor, idx]
                return np.where(base >= 0, base + c.eot_days - 1, -1)
            return np.full(len(idx), c.eot_days - 1, dtype=np.int64)

        for e in c.topo:
            idx = np.flatnonzero(start[e] >= 0)
            k = len(idx)
            if k == 0:
                continue
            s = start[e, idx]
            visited[idx] |= 1 << e
            tally.starts[e] += np.bincount(np.minimum(s, H), minlength=H + 1)
            if c.length[e] >= 0:
                en = s + c.length[e] - 1
            elif c.open_ended[e]:
                en = np.maximum(end_of_therapy(idx), s - 1)
            else:
                en = s - 1  # a final element without days: the path ends when it starts
            days = en - s + 1
            # Events inside the element: the earliest drawn one ends the path.
            ev_day = np.full(k, big, dtype=np.int64)
            ev_kind = np.full(k, -1, dtype=np.int64)
            for j, kind, value in self.events[e]:
                if kind == "p":
                    happen = rng.random(k) < value
                    offset = np.floor(rng.random(k) * days).astype(np.int64)
                else:
                    offset = rng.geometric(value, size=k).astype(np.int64) - 1 if value > 0 else np.full(k, big)
                    happen = np.ones(k, dtype=bool)
                happen &= (offset < days) & (days > 0)
                day = np.where(happen, s + offset, big)
                earlier = day < ev_day
                ev_day = np.where(earlier, day, ev_day)
                ev_kind = np.where(earlier, j, ev_kind)
            stopped = ev_kind >= 0
            here_last = np.where(stopped, ev_day - 1, en)
            has_days = here_last >= s
            lo = np.minimum(s[has_days], H)
            hi = np.minimum(here_last[has_days] + 1, H + 1)
            tally.occupancy[e] += np.bincount(lo, minlength=H + 2) - np.bincount(hi, minlength=H + 2)
            who = idx[stopped]
            end_code[who] = E + ev_kind[stopped]
            last_day[who] = ev_day[stopped] - 1
            go = ~stopped
            if c.final[e] or not c.out[e]:
                who = idx[go]
                end_code[who] = e
                last_day[who] = en[go]
                continue
            sub = {key: col[idx] for key, col in cols.items()}
            chosen = np.full(k, -1, dtype=np.int64)
            blocked = np.zeros(k, dtype=bool)
            for edge in c.out[e]:
                r = np.full(k, T, dtype=np.int8) if edge.vector is None else edge.vector(sub)
                open_ = (chosen < 0) & ~blocked
                chosen[open_ & (r == T)] = edge.index
                blocked |= open_ & (r == U)
            for edge in c.out[e]:
                take = go & (chosen == edge.index)
                who = idx[take]
                tally.edges[edge.index] += len(who)
                if len(who) == 0:
                    continue
                sampler = self.delay_samplers[edge.dest]
                delay = 0 if sampler is None else sampler(rng, len(who)).astype(np.int64)
                start[edge.dest, who] = en[take] + 1 + c.gap[edge.dest] + delay
            no_rule, undecided = E + len(OUTCOMES), E + len(OUTCOMES) + 1
            for code, mask in ((no_rule, go & (chosen < 0) & ~blocked), (undecided, go & blocked)):
                who = idx[mask]
                end_code[who] = code
                last_day[who] = en[mask]
        done = eligible
        duration = np.clip(last_day[done] - t0[done] + 1, 0, H)
        codes = end_code[done]
        tally.durations += np.bincount(codes * (H + 1) + duration, minlength=self.ends * (H + 1)).reshape(
            self.ends, H + 1)
        keys, counts = np.unique(pack(visited[done], codes, group[done]), return_counts=True)
        tally.trajectories = dict(zip(keys.tolist(), counts.tolist(), strict=True))
        if keep:
            return tally, {"cols": cols, "start": start, "visited": visited, "end": end_code, "last_day": last_day}
        return tally


def mrd_cuts(protocol: Protocol, cohort: Cohort, tp: str) -> np.ndarray:
    """Category boundaries for reporting the MRD at ``tp``: the thresholds the protocol's
    rules compare it with, and the boundaries between the cohort's own bins (0 is its own
    category: negative)."""
    cuts: set[float] = set()

    def walk(c: Condition) -> None:
        for x in [*(c.all_ or ()), *(c.any_ or ())]:
            walk(x)
        if c.not_ is not None:
            walk(c.not_)
        if c.mrd == tp:
            _, operand = c.op
            cuts.add(float(operand.value))

    for t in protocol.definition.transitions:
        if t.when is not None:
            walk(t.when)
    lows = sorted(b.bounds[0] for b in cohort.mrd[tp].bins or () if b.value is None)
    cuts.update(lows[1:])  # the lowest interval starts where "positive" does
    return np.array(sorted(x for x in cuts if 0 < x < 1))


def mrd_labels(cuts: Sequence[float]) -> list[str]:
    """Readable names of the MRD categories for ``cuts``."""
    from ._rules import _fmt_number as fmt

    labels = ["negative"]
    bounds = [0.0, *cuts]
    for i, lo in enumerate(bounds):
        hi = bounds[i + 1] if i + 1 < len(bounds) else None
        if lo == 0:
            labels.append(f"positive, < {fmt(hi)}" if hi is not None else "positive")
        elif hi is None:
            labels.append(f"≥ {fmt(lo)}")
        else:
            labels.append(f"≥ {fmt(lo)} and < {fmt(hi)}")
    return labels


# --------------------------------------------------------------------------- running


_WORKER: Simulator | None = None


def _init_worker(definition: dict[str, Any], path: str | None, cohort: dict[str, Any]) -> None:
    global _WORKER
    from ._machine import Protocol as _Protocol
    from ._models import ProtocolDefinition

    protocol = _Protocol(ProtocolDefinition.model_validate(definition))
    protocol.path = path
    _WORKER = Simulator(protocol, Cohort.model_validate(cohort))


def _work(index: int, n: int, seed: int) -> Tally:
    assert _WORKER is not None
    return _WORKER.chunk(index, n, seed)


def simulate(protocol: Protocol | str, cohort: Cohort | str, n: int, *, seed: int | None = None, workers: int = 1,
             progress: Callable[[int], None] | None = None) -> SimulationResult:
    """Simulate ``n`` virtual patients of ``cohort`` through ``protocol``.

    ``seed`` defaults to the cohort's. The result depends only on the seed and ``n``: the
    patients are drawn in chunks of :data:`CHUNK` with one generator per chunk, whatever
    ``workers`` (processes, started with ``spawn``) share them. ``progress`` is called with
    the number of patients of each finished chunk.

    >>> result = simulate("interfant06-blinatumomab", "examples/cohorts/interfant06-blinatumomab.yaml",
    ...                   10_000)                                      # doctest: +SKIP
    >>> result.paths()[0]["proportion"]                               # doctest: +SKIP
    """
    from ._cohort import load_cohort

    if not isinstance(protocol, Protocol):
        from ._loading import load_protocol

        protocol = load_protocol(protocol)
    if not isinstance(cohort, Cohort):
        cohort = load_cohort(cohort, protocol)
    if n < 1:
        raise InputError(Problem("", "--n", f"expected at least 1 patient, got {n}"))
    if workers < 1:
        raise InputError(Problem("", "--workers", f"expected at least 1 worker, got {workers}"))
    seed = cohort.seed if seed is None else seed
    if not 0 <= seed < 2**63:
        raise InputError(Problem("", "--seed", f"expected a whole number from 0 to 2^63 - 1, got {seed}"))
    sim = Simulator(protocol, cohort)
    chunks = [(i, min(CHUNK, n - i * CHUNK)) for i in range(math.ceil(n / CHUNK))]
    tally = sim.empty()
    started = time.perf_counter()
    workers = min(workers, len(chunks)) if len(chunks) >= POOL_MIN_CHUNKS else 1
    if workers == 1:
        for i, size in chunks:
            tally.merge(sim.chunk(i, size, seed))
            if progress is not None:
                progress(size)
    else:
        _run_pool(sim, chunks, seed, workers, tally, progress)
    elapsed = time.perf_counter() - started
    return SimulationResult(sim, tally, seed, n, workers, elapsed)


def _run_pool(sim: Simulator, chunks: list[tuple[int, int]], seed: int, workers: int, tally: Tally,
              progress: Callable[[int], None] | None) -> None:
    """This process and ``workers - 1`` spawned ones share the chunks. This one starts at
    once; a spawned worker gets chunks only once it has started (a first no-op task came
    back), so that no chunk waits on a slow start. Tallies are merged as they come: integer
    sums, so neither the order nor who computed a chunk matters."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    # Plain data, validated again in each worker: spawn-safe, no closures or machines pickled.
    args = (sim.protocol.definition.model_dump(mode="json", by_alias=True), sim.protocol.path,
            sim.cohort.model_dump(mode="json", by_alias=True))
    todo = list(chunks)
    others = workers - 1

    def merge(part: Tally, size: int) -> None:
        tally.merge(part)
        if progress is not None:
            progress(size)

    pool = ctx.Pool(others, initializer=_init_worker, initargs=args)
    try:
        started = [pool.apply_async(_ready) for _ in range(others)]
        running: list[tuple[Any, int]] = []
        while todo or running:
            ready = sum(r.ready() for r in started)
            # At most two chunks per started worker in flight, so that memory stays flat.
            while todo and len(running) < 2 * ready:
                i, size = todo.pop(0)
                running.append((pool.apply_async(_work, (i, size, seed)), size))
            if todo and MAIN_WORKS:
                i, size = todo.pop()
                merge(sim.chunk(i, size, seed), size)
            elif running:
                running[0][0].wait()
            else:  # only when this process does not work: wait for a worker to start
                next(r for r in started if not r.ready()).wait(600)
                if not any(r.ready() for r in started):
                    raise RuntimeError("no simulation worker started within 10 minutes")
            waiting = []
            for result, size in running:
                if result.ready():
                    merge(result.get(), size)
                else:
                    waiting.append((result, size))
            running = waiting
    finally:
        pool.terminate()  # workers still starting are not waited for
        pool.join()


def _ready() -> bool:
    return _WORKER is not None


# --------------------------------------------------------------------------- results


def wilson(k: int, n: int, z: float = _Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``k / n`` (95 % by default); (0, 1) when n = 0."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (0.0 if k == 0 else max(0.0, centre - half)), (1.0 if k == n else min(1.0, centre + half))


def _poisson_upper(mean: float, q: float = 0.95) -> int:
    """The ``q`` quantile of a Poisson count with this mean."""
    if mean <= 0:
        return 0
    if mean > 200:
        return int(math.ceil(mean + 1.6448536269514722 * math.sqrt(mean)))
    k, pmf = 0, math.exp(-mean)
    cdf = pmf
    while cdf < q:
        k += 1
        pmf *= mean / k
        cdf += pmf
    return k


def _stats(hist: np.ndarray) -> dict[str, Any]:
    """n, mean, sd and percentiles of integer days from a histogram (exact: whole days)."""
    total = int(hist.sum())
    if total == 0:
        return {"n": 0}
    days = np.arange(len(hist))
    mean = float((hist * days).sum() / total)
    sd = float(math.sqrt(max(0.0, (hist * (days - mean) ** 2).sum() / total)))
    cum = np.cumsum(hist)

    def pct(q: float) -> int:
        return int(np.searchsorted(cum, q * total, side="left"))

    nz = np.flatnonzero(hist)
    return {"n": total, "mean": round(mean, 2), "sd": round(sd, 2), "min": int(nz[0]), "p5": pct(0.05),
            "p25": pct(0.25), "median": pct(0.5), "p75": pct(0.75), "p95": pct(0.95), "max": int(nz[-1])}


@dataclass
class SimulationResult:
    """What a simulation gives: proportions with 95 % Wilson intervals, durations, the census.

    Tables (lists of dicts, one per row) come from :meth:`paths`, :meth:`branches`,
    :meth:`risk_groups`, :meth:`reached`, :meth:`mrd`, :meth:`arms`, :meth:`durations`,
    :meth:`element_starts` and :meth:`census`; :meth:`to_dict` gathers them, :meth:`write`
    writes JSON, CSV and the figures (PNG and SVG).
    """

    simulator: Simulator = field(repr=False)
    tally: Tally = field(repr=False)
    seed: int
    n: int
    workers: int
    elapsed: float
    _report: Any = field(default=None, init=False, repr=False)  # the enumerated paths, built when first needed

    @property
    def protocol(self) -> Protocol:
        """The protocol simulated."""
        return self.simulator.protocol

    @property
    def eligible(self) -> int:
        """Virtual patients who met the eligibility rules (the denominator of every share)."""
        return self.tally.n - self.tally.ineligible

    @property
    def patients_per_second(self) -> float:
        """Simulation throughput (wall time of the run, all workers)."""
        return self.n / self.elapsed if self.elapsed > 0 else float("inf")

    def _row(self, k: int, n: int) -> dict[str, Any]:
        lo, hi = wilson(k, n)
        return {"n": k, "of": n, "proportion": k / n if n else 0.0, "ci_low": lo, "ci_high": hi}

    def _path_report(self) -> Any:
        if self._report is None:
            from ._paths import paths as enumerate_paths

            self._report = enumerate_paths(self.protocol)
        return self._report

    def _sequence(self, visited: int) -> tuple[str, ...]:
        c = self.simulator.compiled
        return tuple(c.names[i] for i in c.topo if visited >> i & 1)

    def _end_name(self, code: int) -> str:
        c = self.simulator.compiled
        return c.names[code] if code < c.E else STOPS[code - c.E]

    # -- tables -----------------------------------------------------------------------

    def paths(self) -> list[dict[str, Any]]:
        """Patients on each path to a final element (every enumerated path, even with none),
        then patients whose path stopped early (an event, or no rule to go on), with 95 % CIs."""
        c = self.simulator.compiled
        report = self._path_report()
        by_seq: dict[tuple[str, ...], int] = {}
        stops: dict[tuple[tuple[str, ...], str], int] = {}
        for key, count in self.tally.trajectories.items():
            visited, end, _ = unpack(key)
            seq = self._sequence(visited)
            if end < c.E:
                by_seq[seq] = by_seq.get(seq, 0) + count
            else:
                stops[(seq, STOPS[end - c.E])] = stops.get((seq, STOPS[end - c.E]), 0) + count
        rows = []
        for p in report.paths:
            rows.append({"kind": "path", "path": p.index, "elements": " → ".join(p.elements), "end": p.elements[-1],
                         "condition": p.condition, **self._row(by_seq.pop(p.elements, 0), self.eligible)})
        for seq, count in sorted(by_seq.items(), key=lambda kv: -kv[1]):  # not enumerated: would be a defect
            rows.append({"kind": "path", "path": None, "elements": " → ".join(seq), "end": seq[-1],
                         "condition": "not among the enumerated paths", **self._row(count, self.eligible)})
        for (seq, how), count in sorted(stops.items(), key=lambda kv: (kv[0][1], -kv[1])):
            rows.append({"kind": "stopped", "path": None, "elements": " → ".join(seq),
                         "end": f"{how} in {seq[-1]}", "condition": None, **self._row(count, self.eligible)})
        return rows

    def branches(self) -> list[dict[str, Any]]:
        """For each transition: of the patients who reached its decision (finished the
        element before it), how many took it, with a 95 % CI."""
        c = self.simulator.compiled
        report = self._path_report()
        words = {(b.source, b.dest): b for b in report.branches}
        stuck: dict[int, int] = {}
        for key, count in self.tally.trajectories.items():
            visited, end, _ = unpack(key)
            if end >= c.E + len(OUTCOMES):
                last = max((i for i in range(c.E) if visited >> i & 1), key=c.topo.index)
                stuck[last] = stuck.get(last, 0) + count
        rows = []
        for e in c.edges:
            reached = int(sum(self.tally.edges[x.index] for x in c.out[e.source])) + stuck.get(e.source, 0)
            b = words.get((c.names[e.source], c.names[e.dest]))
            rows.append({"decision": e.decision, "from": c.names[e.source], "to": c.names[e.dest],
                         "condition": b.condition if b else None,
                         **self._row(int(self.tally.edges[e.index]), reached)})
        return rows

    def risk_groups(self) -> list[dict[str, Any]]:
        """Eligible patients in each risk group (and with none), with 95 % CIs."""
        c = self.simulator.compiled
        names = [*c.groups, "none"]
        return [{"risk_group": g, **self._row(int(k), self.eligible)} for g, k in zip(names, self.tally.risk,
                                                                                      strict=True)
                if g != "none" or k]

    def reached(self) -> list[dict[str, Any]]:
        """For each risk group and element: the share of the group's patients who started the
        element (e.g. the HSCT rate by risk group), with a 95 % CI."""
        c = self.simulator.compiled
        groups = [*c.groups, "none"]
        counts = np.zeros((len(groups), c.E), dtype=np.int64)
        totals = np.zeros(len(groups), dtype=np.int64)
        for key, count in self.tally.trajectories.items():
            visited, _, risk = unpack(key)
            g = risk if risk >= 0 else len(c.groups)
            totals[g] += count
            for i in range(c.E):
                if visited >> i & 1:
                    counts[g, i] += count
        rows = []
        for gi, g in enumerate(groups):
            if totals[gi] == 0 and g == "none":
                continue
            for i in range(c.E):
                rows.append({"risk_group": g, "element": c.names[i], "final": bool(c.final[i]),
                             **self._row(int(counts[gi, i]), int(totals[gi]))})
        for i in range(c.E):
            rows.append({"risk_group": "all", "element": c.names[i], "final": bool(c.final[i]),
                         **self._row(int(counts[:, i].sum()), int(totals.sum()))})
        return rows

    def mrd(self) -> list[dict[str, Any]]:
        """MRD as drawn at each time point, by category (the protocol's thresholds), with CIs."""
        rows = []
        for tp, counts in self.tally.mrd.items():
            labels = mrd_labels(self.simulator.mrd_cuts[tp])
            total = int(counts.sum())
            for label, k in zip(labels, counts, strict=True):
                rows.append({"timepoint": tp, "category": label, **self._row(int(k), total)})
        return rows

    def arms(self) -> list[dict[str, Any]]:
        """Patients per arm of each randomisation, with 95 % CIs."""
        rows = []
        for r, counts in self.tally.arms.items():
            arms = self.protocol.randomisations[r]
            total = int(counts.sum())
            rows.extend({"randomisation": r, "arm": a, **self._row(int(k), total)}
                        for a, k in zip(arms, counts, strict=True))
        return rows

    def durations(self) -> list[dict[str, Any]]:
        """Protocol therapy duration in days (first day of the first element to the last day on
        the protocol path), overall and by how the path ended."""
        rows = [{"end": "all", **_stats(self.tally.durations.sum(axis=0))}]
        for code in range(self.simulator.ends):
            hist = self.tally.durations[code]
            if hist.sum():
                rows.append({"end": self._end_name(code), **_stats(hist)})
        return rows

    def element_starts(self) -> list[dict[str, Any]]:
        """Day each element starts (days after diagnosis), per element."""
        c = self.simulator.compiled
        return [{"element": c.names[i], **_stats(self.tally.starts[i])} for i in range(c.E)]

    def census(self) -> dict[str, Any] | None:
        """Weekly census for the cohort's enrolment (Poisson arrivals at ``rate_per_month``
        for ``enrolment_months``): per element and week, the expected number of patients in the
        element (mean over the week's days), the 95th percentile of that number on the
        busiest day, and the expected starts in the week. None without a census section.

        With Poisson arrivals the number of patients in an element on a day is Poisson with
        mean ``rate × Σ P(in the element u days after diagnosis)`` over the enrolment window,
        so the census is computed from the simulated occupancy, not from one random draw.
        """
        spec = self.simulator.cohort.census
        if spec is None or self.eligible == 0:
            return None
        H = self.simulator.H
        c = self.simulator.compiled
        rate = spec.rate_per_month / (365.25 / 12)  # patients a day
        window = int(round(spec.enrolment_months * 365.25 / 12))
        if spec.weeks is None:  # through the last day any virtual patient is on the protocol path
            used = np.flatnonzero(self.tally.starts.sum(axis=0)[:H] + np.cumsum(self.tally.occupancy[:, :H],
                                                                                axis=1).sum(axis=0))
            weeks = math.ceil((window + (int(used[-1]) + 1 if len(used) else 0)) / 7) + 1
        else:
            weeks = spec.weeks
        days = weeks * 7
        occupancy = np.cumsum(self.tally.occupancy[:, :H], axis=1) / self.eligible  # P(in element u days after)
        starts = self.tally.starts[:, :H] / self.eligible

        def windowed(p: np.ndarray) -> np.ndarray:
            padded = np.zeros((p.shape[0], days + 1))
            m = min(H, days)
            padded[:, 1:m + 1] = p[:, :m]
            cum = np.cumsum(padded, axis=1)  # cum[:, t + 1] = Σ_{u <= t} p(u)
            t = np.arange(days)
            lo = np.maximum(t - window + 1, 0)
            return rate * (cum[:, t + 1] - cum[:, lo])

        in_element = windowed(occupancy)
        new = windowed(starts)
        out: dict[str, Any] = {"rate_per_month": spec.rate_per_month, "enrolment_months": spec.enrolment_months,
                               "weeks": weeks, "elements": {}}
        for i, name in enumerate(c.names):
            by_week = in_element[i].reshape(weeks, 7)
            out["elements"][name] = {
                "expected": [round(float(x), 4) for x in by_week.mean(axis=1)],
                "upper95": [_poisson_upper(float(x)) for x in by_week.max(axis=1)],
                "starts": [round(float(x), 4) for x in new[i].reshape(weeks, 7).sum(axis=1)],
            }
        return out

    # -- outputs ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Everything as JSON-ready data (what ``summary.json`` holds)."""
        cohort = self.simulator.cohort
        return {
            "protocol": {"id": self.protocol.id, "version": self.protocol.version},
            "cohort": {"file": cohort.file, "title": cohort.title},
            "seed": self.seed, "n": self.n, "chunk": CHUNK,
            "eligible": self.eligible, "ineligible": self.tally.ineligible,
            "risk_groups": self.risk_groups(),
            "paths": self.paths(),
            "branches": self.branches(),
            "reached": self.reached(),
            "mrd": self.mrd(),
            "arms": self.arms(),
            "durations_days": self.durations(),
            "element_start_days": self.element_starts(),
            "census": self.census(),
            "notes": ["proportions are of eligible virtual patients; intervals are 95 % Wilson score intervals",
                      "days are counted from the diagnosis date (day 0)",
                      "the census is the expectation for Poisson enrolment, computed from the simulated "
                      "occupancy; upper95 is the 95th percentile of the count on the busiest day of the week"],
        }

    def summary(self) -> str:
        """A short text summary for the terminal."""
        lines = [f"{self.protocol.id} {self.protocol.version}: {self.n:,} virtual patients (seed {self.seed}), "
                 f"{self.eligible:,} eligible; {self.patients_per_second:,.0f} patients/s"]
        lines.append("risk groups:")
        for r in self.risk_groups():
            lines.append(f"  {r['risk_group']:<12} {_pct(r)}")
        lines.append("paths:")
        for r in self.paths():
            head = f"  {r['path']}." if r["path"] is not None else "   ✗"
            what = r["elements"] if r["kind"] == "path" else f"{r['end']} ({r['elements']})"
            lines.append(f"{head} {_pct(r)}  {what}")
        by_tp: dict[str, list[str]] = {}
        for r in self.mrd():
            by_tp.setdefault(r["timepoint"], []).append(f"{r['category']} {100 * r['proportion']:.1f} %")
        for tp, parts in by_tp.items():
            lines.append(f"MRD at {tp} (as drawn): " + ", ".join(parts))
        lines.append("final elements by risk group:")
        for r in self.reached():
            if r["final"]:
                lines.append(f"  {r['element']:<12} {r['risk_group']:<6} {_pct(r)}")
        dur = self.durations()[0]
        if dur.get("n"):
            lines.append(f"protocol therapy duration: median {dur['median']} days (p5 {dur['p5']}, p95 {dur['p95']})")
        census = self.census()
        if census is not None:
            peaks = []
            for name, series in census["elements"].items():
                top = max(series["expected"])
                if top > 0:
                    peaks.append(f"{name} {top:.1f} (week {series['expected'].index(top)})")
            lines.append(f"census peak, expected patients ({census['rate_per_month']:.3g}/month for "
                         f"{census['enrolment_months']:g} months): " + ", ".join(peaks))
        return "\n".join(lines) + "\n"

    def write(self, out: str | Any) -> list[str]:
        """Write ``summary.json``, the CSV tables and the figures (PNG and SVG) into the
        folder ``out`` (created, with its parents, if missing). Returns the paths written."""
        import csv
        import io
        import json
        import os
        from pathlib import Path

        from ._io import write_atomic

        folder = Path(out)
        if folder.exists() and not folder.is_dir():
            raise InputError(Problem(str(out), "--out", "expected a folder, got a file"))
        if not folder.exists():
            try:
                folder.mkdir(parents=True)
            except OSError as exc:
                raise InputError(Problem(str(out), "--out", f"cannot create the folder: {exc.strerror}")) from None
        written: list[str] = []

        def put(name: str, text: str) -> None:
            path = folder / name
            write_atomic(path, lambda fh: fh.write(text))
            written.append(os.fspath(path))

        def table(name: str, rows: list[dict[str, Any]]) -> None:
            buf = io.StringIO()
            if rows:
                keys = list(dict.fromkeys(k for r in rows for k in r))
                w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
                w.writeheader()
                w.writerows(rows)
            put(name, buf.getvalue())

        data = self.to_dict()
        put("summary.json", json.dumps(data, ensure_ascii=False, indent=1) + "\n")
        table("paths.csv", data["paths"])
        table("branches.csv", data["branches"])
        table("risk_groups.csv", data["risk_groups"])
        table("reached.csv", data["reached"])
        table("mrd.csv", data["mrd"])
        if data["arms"]:
            table("arms.csv", data["arms"])
        table("durations.csv", data["durations_days"])
        table("element_starts.csv", data["element_start_days"])
        table("duration_histogram.csv", self._histogram_rows(self.tally.durations, self._end_name, "end"))
        c = self.simulator.compiled
        table("element_start_histogram.csv", self._histogram_rows(self.tally.starts, lambda i: c.names[i], "element"))
        if data["census"] is not None:
            rows = []
            for name, series in data["census"]["elements"].items():
                for w, (mean, top, new) in enumerate(zip(series["expected"], series["upper95"], series["starts"],
                                                         strict=True)):
                    rows.append({"week": w, "element": name, "expected": mean, "upper95": top, "starts": new})
            table("census.csv", rows)
        for name, fig in figures(self, data):
            for fmt in ("png", "svg"):
                path = folder / f"{name}.{fmt}"
                write_atomic(path, lambda fh, fig=fig, fmt=fmt: _save(fig, fh, fmt), binary=True)
                written.append(os.fspath(path))
        return written

    def _histogram_rows(self, hist: np.ndarray, name: Callable[[int], str], what: str) -> list[dict[str, Any]]:
        rows = []
        H = self.simulator.H
        for i in range(hist.shape[0]):
            for day in np.flatnonzero(hist[i]):
                rows.append({what: name(i), "day": int(day) if day < H else f">={H}", "patients": int(hist[i, day])})
        return rows


def _save(fig: Any, fh: Any, fmt: str) -> None:
    import matplotlib

    with matplotlib.rc_context({"svg.hashsalt": "protocol-simulate"}):
        fig.savefig(fh, format=fmt, metadata={"Date": None} if fmt == "svg" else {"Software": None})


def _pct(r: dict[str, Any]) -> str:
    return (f"{100 * r['proportion']:6.2f} % [{100 * r['ci_low']:.2f}–{100 * r['ci_high']:.2f}] "
            f"({r['n']:,}/{r['of']:,})")


# --------------------------------------------------------------------------- figures


def figures(result: SimulationResult, data: dict[str, Any]) -> list[tuple[str, Any]]:
    """The figures of a result as matplotlib ``Figure`` objects (no pyplot, no global backend):
    ``paths`` (share on each path, 95 % CI), ``census`` (expected patients in each element by
    week) and ``durations`` (histogram of protocol therapy duration, by how the path ended)."""
    import textwrap

    from matplotlib.figure import Figure

    out: list[tuple[str, Any]] = []
    title = f"{result.protocol.id} {result.protocol.version} · {result.n:,} virtual patients · seed {result.seed}"

    rows = data["paths"]
    fig = Figure(figsize=(10, 1.6 + 0.62 * len(rows)), layout="constrained")
    ax = fig.add_subplot()
    labels = []
    for r in rows:
        if r["kind"] == "path":
            head = f"{r['path']}. " if r["path"] is not None else ""
            text = f"{head}{r['condition']}\n{r['elements']}"
        else:
            text = f"stopped: {r['end']}\n{r['elements']}"
        labels.append("\n".join(textwrap.fill(line, 60) for line in text.split("\n")))
    y = np.arange(len(rows))
    share = np.array([100 * r["proportion"] for r in rows])
    lo = np.array([100 * r["ci_low"] for r in rows])
    hi = np.array([100 * r["ci_high"] for r in rows])
    colours = ["#3b6ea8" if r["kind"] == "path" else "#b0503c" for r in rows]
    ax.barh(y, share, xerr=np.vstack([share - lo, hi - share]), color=colours, capsize=3)
    for yi, s in zip(y, share, strict=True):
        ax.text(s, yi, f"  {s:.1f} %", va="center", fontsize=8)
    ax.set_yticks(y, labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, max(100.0, float(hi.max()) if len(hi) else 100.0) * 1.08)
    ax.set_xlabel("share of eligible virtual patients, % (bars: 95 % Wilson interval)")
    ax.set_title(f"Paths\n{title}", fontsize=10)
    out.append(("paths", fig))

    census = data["census"]
    if census is not None:
        fig = Figure(figsize=(10, 5), layout="constrained")
        ax = fig.add_subplot()
        weeks = np.arange(census["weeks"])
        for name, series in census["elements"].items():
            if max(series["expected"]) > 0:
                ax.step(weeks, series["expected"], where="post", label=name)
        ax.set_xlabel("week from the first enrolment")
        ax.set_ylabel("expected patients in the element (mean over the week)")
        ax.set_title(f"Census: {census['rate_per_month']:.3g} patients a month for {census['enrolment_months']:g} "
                     f"months\n{title}", fontsize=10)
        ax.legend(fontsize=8, ncols=2)
        ax.grid(alpha=0.3)
        out.append(("census", fig))

    fig = Figure(figsize=(10, 5), layout="constrained")
    ax = fig.add_subplot()
    hist = result.tally.durations
    weeks_max = int(math.ceil(hist.shape[1] / 7))
    bottom = np.zeros(weeks_max)
    for code in range(hist.shape[0]):
        if hist[code].sum() == 0:
            continue
        padded = np.zeros(weeks_max * 7)
        padded[: hist.shape[1]] = hist[code]
        by_week = padded.reshape(weeks_max, 7).sum(axis=1) / max(result.eligible, 1) * 100
        # One stacked step outline per end (not a bar per week: thousands of patches are slow).
        ax.stairs(bottom + by_week, np.arange(weeks_max + 1), baseline=bottom.copy(), fill=True,
                  label=result._end_name(code))
        bottom += by_week
    used = np.flatnonzero(bottom)
    if len(used):
        ax.set_xlim(max(0, used[0] - 2), used[-1] + 3)
    ax.set_xlabel("protocol therapy duration, weeks (first day of the first element to the last day on the path)")
    ax.set_ylabel("% of eligible virtual patients")
    ax.set_title(f"Therapy duration, by how the path ended\n{title}", fontsize=10)
    ax.legend(fontsize=8)
    out.append(("durations", fig))
    return out
