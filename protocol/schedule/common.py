"""Small shared pieces of the scheduling stages: the open element, the events that adjust
items, decision narrowing and text helpers."""

from __future__ import annotations

from typing import Any


from .._machine import Edge
from .._rules import depends_on


#: Patient fields that hold the facts an eligibility rule reads (to name the field in errors).
_FIELD_OF_FACT = {
    "age_at_diagnosis_days": "birth_date", "age_at_diagnosis_months": "birth_date",
    "age_at_diagnosis_years": "birth_date", "day8_blasts_per_ul": "day8_blasts_per_ul",
}


class _Open:
    """The element a replay or projection is in."""

    __slots__ = ("actual_end", "actual_start", "dated", "id", "note", "planned_start")

    def __init__(self, element: str, planned_start: int, note: str | None = None,
                 dated: str | None = None) -> None:
        self.id = element
        self.planned_start = planned_start
        self.actual_start: int | None = None
        self.actual_end: int | None = None
        self.note = note
        #: Why the planned start depends on a placeholder (an earlier placeholder length), if it does.
        self.dated = dated


#: Events that change items of an element rather than move through the protocol.
_ADJUSTING = frozenset({"item_given", "item_omitted", "item_delayed", "dose_modified", "element_held",
                        "element_resumed", "infusion_interrupted", "infusion_resumed"})


def _narrow(edges: tuple[Edge, ...], chosen: list[tuple[Edge, bool | None]], facts: dict[str, Any],
            domains: dict[str, frozenset[str]]) -> tuple[list[tuple[Edge, bool | None]],
                                                         dict[int, dict[str, frozenset[str]]]]:
    """Which of a decision's edges are still possible given the arms a branch assumes.

    Enumerates the possible arms of the randomisations the guards read (small finite sets);
    returns the possible edges (``True`` when only one remains) and, for each, the arms under
    which it is taken. Other unknown facts (an MRD result) stay unknown.
    """
    keys = sorted({k for e in edges for k in e.depends_on if k in domains and k not in facts})
    if not keys:
        return chosen, {}
    combos: list[dict[str, str]] = [{}]
    for k in keys:
        combos = [{**c, k: v} for c in combos for v in sorted(domains[k])]
        if len(combos) > 512:  # pragma: no cover - more arms than any protocol has
            return chosen, {}
    possible: dict[int, tuple[Edge, list[dict[str, str]], bool]] = {}
    for combo in combos:
        f = {**facts, **combo}
        for e in edges:
            r = True if e.guard is None else e.guard(f)
            if r is False:
                continue
            entry = possible.setdefault(id(e), (e, [], True))
            entry[1].append(combo)
            if r is None:
                possible[id(e)] = (e, entry[1], False)
            if r is True:
                break
    order = [e for e in edges if id(e) in possible]
    narrowed = {id(e): {**domains, **{k: frozenset(c[k] for c in possible[id(e)][1]) for k in keys}}
                for e in order}
    if len(order) == 1 and possible[id(order[0])][2]:
        return [(order[0], True)], narrowed
    return [(e, None) for e in order], narrowed


def _ref(row: list[Any]) -> str:
    return f"{row[3].element}:{row[3].key}@{row[1]}"


def _join(a: str | None, b: str) -> str:
    return b if not a else f"{a}; {b}"


def _recovered(gate: Any, count: Any) -> bool:
    if gate.anc_min is not None and (count.anc is None or count.anc < gate.anc_min):
        return False
    return not (gate.platelets_min is not None and (count.platelets is None or count.platelets < gate.platelets_min))


def _count_text(count: Any) -> str:
    parts = []
    if count.anc is not None:
        parts.append(f"ANC {count.anc:g}")
    if count.platelets is not None:
        parts.append(f"platelets {count.platelets:g}")
    return ", ".join(parts) + " ×10⁹/L"


def _eligibility_field(cond: Any) -> str:
    keys = depends_on(cond)
    return _FIELD_OF_FACT.get(keys[0], keys[0]) if keys else ""
