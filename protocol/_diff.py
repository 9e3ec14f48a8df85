"""What changed between two protocol definitions (``protocol diff A B``).

A site pharmacist reviewing an amendment needs every clinical difference, named by the ids
the protocol uses, with the evidence of each value. The walk is generic over the pydantic
models, so fields added to the format are compared without changes here:

- models are compared field by field (aliases as written in the file: ``from``, ``all``, ``in``);
- lists of things with an identity are matched by identity, not position: ``id``, an
  administration's ``key`` (its id or drug name), a source's ``key``, a transition's
  ``from->to``; items are reported added or removed, and a change in the relative order of
  the items both sides share is one ``moved`` change holding both orders;
- lists of models without an identity (dose bands, the clauses of an ``any``) are compared
  by position; lists of plain values (notes, the values of an ``in``) as a whole;
- a change inside a guard carries the whole guard in words before and after (``describe``).

Each :class:`Change` has a readable path (``elements.induction.administrations.dexamethasone
.dose.amount.value``), a kind (``added``, ``removed``, ``changed``, ``moved``), the old and new
value as JSON data, the same as text (values with their unit and evidence) and a category
(``dose``, ``days``, ``guard``, ``structure``, ``evidence``, ``source``, ``metadata``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import BaseModel

from ._errors import DefinitionError, Problem
from ._models import Condition, ProtocolDefinition

__all__ = ["CATEGORIES", "KINDS", "Change", "DefinitionDiff", "GuardText", "diff_definitions", "diff_protocols"]

#: Change categories, the clinically relevant ones first (the order of the text output).
CATEGORIES = ("dose", "days", "guard", "structure", "evidence", "source", "metadata")
KINDS = ("added", "removed", "changed", "moved")
#: Version of the JSON shape written by :meth:`DefinitionDiff.to_dict`.
JSON_FORMAT = 1

# How a change is categorised: by its last field name first (provenance and wording, wherever
# they are), then by the innermost enclosing field found in these sets.
_EVIDENCE_FIELDS = frozenset({"evidence", "rule_evidence"})
_SOURCE_FIELDS = frozenset({"source", "rule_source", "note", "notes", "citation", "doi", "url", "sources"})
_METADATA_FIELDS = frozenset({"format", "id", "version", "title", "status", "description", "label", "name",
                              "message"})
_DAYS_FIELDS = frozenset({"days", "length_days", "first_day", "until", "start", "window", "end_of_therapy",
                          "weeks", "anchor"})
_DOSE_FIELDS = frozenset({"dose", "route", "frequency", "infusion"})
_GUARD_FIELDS = frozenset({"when", "counts", "derived_facts", "risk_groups", "eligibility"})
#: The fields of a sourced value shown together as one value with its evidence.
_SOURCED_LEAVES = frozenset({"value", "evidence", "source"})
#: Names tried, in order, to name an item in words.
_NAME_FIELDS = ("title", "label", "name", "drug", "citation")


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class GuardText:
    """A guard in words before and after a change inside it (``None``: no guard on that side).

    Example: ``GuardText("transitions.marma->hsct.when", "risk group = HR or MRD at
    pre_octadad ≥ 5e-4", "risk group = HR or MRD at pre_octadad ≥ 1e-4")``
    """

    path: str
    old: str | None
    new: str | None


@dataclass(frozen=True)
class Change:
    """One difference between two definitions.

    ``path`` names the place by ids; ``section`` is the part of the definition it belongs to
    (``protocol`` for the top-level fields, ``elements``, ``elements.induction``,
    ``transitions.marma->hsct``...); ``old``/``new`` are JSON data (``None`` on the side where
    the thing does not exist); ``old_text``/``new_text`` the same for reading: a number with
    its unit and evidence (``6 mg/m²/day [placeholder]``), an item summarised, an order as a
    list of ids. ``sourced_path`` is set when the change is to the value, evidence or source of
    one sourced value (the path of that value); ``guard`` when it is inside a guard.

    Example::

        Change(path="elements.induction.administrations.dexamethasone.dose.amount.value",
               section="elements.induction", kind="changed", category="dose", old=6.0, new=8.0,
               old_text="6 mg/m²/day [placeholder]", new_text="8 mg/m²/day [placeholder]",
               sourced_path="elements.induction.administrations.dexamethasone.dose.amount")
    """

    path: str
    section: str
    kind: str
    category: str
    old: Any = None
    new: Any = None
    old_text: str = ""
    new_text: str = ""
    sourced_path: str | None = None
    guard: GuardText | None = None

    @property
    def marker(self) -> str:
        """``+`` added, ``-`` removed, ``~`` changed or moved."""
        return {"added": "+", "removed": "-"}.get(self.kind, "~")

    def to_dict(self) -> dict[str, Any]:
        """The change as JSON data (see :meth:`DefinitionDiff.to_dict`)."""
        return {"path": self.path, "section": self.section, "kind": self.kind, "category": self.category,
                "old": self.old, "new": self.new, "old_text": self.old_text, "new_text": self.new_text,
                "sourced_path": self.sourced_path,
                "guard": None if self.guard is None else {"path": self.guard.path, "old": self.guard.old,
                                                          "new": self.guard.new}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Change:
        """The inverse of :meth:`to_dict`."""
        guard = data.get("guard")
        return cls(path=data["path"], section=data["section"], kind=data["kind"], category=data["category"],
                   old=data.get("old"), new=data.get("new"), old_text=data.get("old_text", ""),
                   new_text=data.get("new_text", ""), sourced_path=data.get("sourced_path"),
                   guard=None if guard is None else GuardText(guard["path"], guard.get("old"), guard.get("new")))


@dataclass(frozen=True)
class DefinitionDiff:
    """What changed from definition ``a`` to definition ``b``.

    ``a``/``b`` describe each side (``id``, ``version``, ``title``, ``status``, ``file``, and
    ``evidence``: how many values are published, derived, placeholder); ``changes`` in the
    order of the definition's fields; ``sections`` names each section in words.

    >>> d = diff_protocols("interfant06-blinatumomab", "interfant06-blinatumomab")  # doctest: +SKIP
    >>> d.identical, d.changes                                                       # doctest: +SKIP
    (True, ())
    """

    a: dict[str, Any]
    b: dict[str, Any]
    changes: tuple[Change, ...] = ()
    sections: dict[str, str] = field(default_factory=dict)

    @property
    def identical(self) -> bool:
        """True when the two definitions have no difference."""
        return not self.changes

    def counts(self) -> dict[str, int]:
        """How many changes per category (every category, zero included) and in total."""
        counts = dict.fromkeys(CATEGORIES, 0)
        for c in self.changes:
            counts[c.category] = counts.get(c.category, 0) + 1
        counts["total"] = len(self.changes)
        return counts

    def by_category(self, *categories: str) -> tuple[Change, ...]:
        """The changes in these categories, e.g. ``diff.by_category("dose", "days")``."""
        return tuple(c for c in self.changes if c.category in categories)

    def to_dict(self) -> dict[str, Any]:
        """JSON data of this shape (``format`` is the version of the shape)::

            {"format": 1, "a": {"id", "version", "title", "status", "file", "evidence"}, "b": {...},
             "identical": bool, "counts": {"dose": n, ..., "total": n}, "sections": {key: words},
             "changes": [{"path", "section", "kind", "category", "old", "new", "old_text",
                          "new_text", "sourced_path", "guard": {"path", "old", "new"} | null}, ...]}
        """
        return {"format": JSON_FORMAT, "a": self.a, "b": self.b, "identical": self.identical,
                "counts": self.counts(), "sections": dict(self.sections),
                "changes": [c.to_dict() for c in self.changes]}

    def to_json(self) -> str:
        """:meth:`to_dict` as JSON text, one change per line."""
        from ._loading import dumps

        return dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DefinitionDiff:
        """The inverse of :meth:`to_dict` (e.g. to read back ``protocol diff --json``)."""
        if data.get("format") != JSON_FORMAT:
            raise ValueError(f"expected a diff of format {JSON_FORMAT}, got {data.get('format')!r}")
        return cls(a=data["a"], b=data["b"], changes=tuple(Change.from_dict(c) for c in data["changes"]),
                   sections=dict(data.get("sections", {})))

    def to_text(self) -> str:
        """The diff for reading: grouped by section, clinically relevant changes first.

        ``+`` added, ``-`` removed, ``~`` changed or moved; then the category and the path
        within the section. A change inside a guard is followed by the guard in words.
        """
        return "\n".join(_text_lines(self)) + "\n"


# --------------------------------------------------------------------------- entry points


def diff_definitions(a: ProtocolDefinition, b: ProtocolDefinition, *, a_file: str | None = None,
                     b_file: str | None = None) -> DefinitionDiff:
    """Compare two validated definitions: what changed from ``a`` to ``b``.

    >>> from protocol import load_protocol
    >>> p = load_protocol("interfant06-blinatumomab").definition
    >>> diff_definitions(p, p).identical
    True
    >>> newer = p.model_copy(update={"version": "1.1.0"})
    >>> [(c.path, c.old, c.new) for c in diff_definitions(p, newer).changes]
    [('version', '1.0.0', '1.1.0')]
    """
    walker = _Walker()
    walker.walk(a, b, _At())
    used = {c.section for c in walker.changes}
    return DefinitionDiff(a=_side(a, a_file), b=_side(b, b_file), changes=tuple(walker.changes),
                          sections={k: v for k, v in walker.sections.items() if k in used})


def diff_protocols(a: Any, b: Any) -> DefinitionDiff:
    """Compare two protocols given as shipped ids (``id`` or ``id@version``), definition files,
    loaded :class:`~protocol.Protocol` objects or definitions.

    Both are loaded and validated first; a :class:`~protocol.DefinitionError` lists the
    problems of both.

    >>> diff_protocols("interfant06-blinatumomab", "amendment.yaml").to_text()  # doctest: +SKIP
    """
    problems: list[Problem] = []
    loaded: list[tuple[ProtocolDefinition, str | None]] = []
    for ref in (a, b):
        try:
            loaded.append(_load(ref))
        except DefinitionError as exc:
            problems.extend(exc.problems)
    if problems:
        raise DefinitionError(problems)
    (da, fa), (db, fb) = loaded
    return diff_definitions(da, db, a_file=fa, b_file=fb)


def _load(ref: Any) -> tuple[ProtocolDefinition, str | None]:
    if isinstance(ref, ProtocolDefinition):
        return ref, None
    if not hasattr(ref, "definition"):
        from ._loading import load_protocol

        ref_text = os.fspath(ref)
        return _as_written(load_protocol(ref_text)), ref_text
    return _as_written(ref), getattr(ref, "path", None)


def _as_written(protocol: Any) -> ProtocolDefinition:
    # A compiled protocol may run on an expanded core (repeated cycles written out); the
    # reviewer reads the definition as written, so compare that when the protocol keeps it.
    written = getattr(protocol, "source", None)
    return written if isinstance(written, ProtocolDefinition) else protocol.definition


def _side(defn: ProtocolDefinition, file: str | None) -> dict[str, Any]:
    from ._machine import walk_values

    counts = dict.fromkeys(_evidence_levels(), 0)
    for _, _, value in walk_values(defn):
        counts[value.evidence] = counts.get(value.evidence, 0) + 1
    return {"id": defn.id, "version": defn.version, "title": defn.title, "status": defn.status, "file": file,
            "evidence": counts}


def _evidence_levels() -> tuple[str, ...]:
    """Every evidence level of the format, strongest first (``published`` ... ``placeholder``)."""
    from ._models import EVIDENCE_RANK

    return tuple(sorted(EVIDENCE_RANK, key=EVIDENCE_RANK.__getitem__, reverse=True))


# --------------------------------------------------------------------------- the walk


@dataclass(frozen=True, slots=True)
class _Sourced:
    path: str
    old: Any
    new: Any
    old_unit: str
    new_unit: str


@dataclass(frozen=True, slots=True)
class _At:
    """Where the walk is: the path, the field names on it, and what encloses it."""

    segs: tuple[str, ...] = ()
    fields: tuple[str, ...] = ()
    section: str = "protocol"
    guard: tuple[str, Any, Any] | None = None
    dose: tuple[Any, Any] | None = None
    sourced: _Sourced | None = None

    @property
    def path(self) -> str:
        return _join(self.segs)

    def field(self, name: str) -> _At:
        return replace(self, segs=(*self.segs, name), fields=(*self.fields, name))

    def item(self, key: str) -> _At:
        seg = f"[{key}]" if "." in key else key
        return replace(self, segs=(*self.segs, seg))

    def index(self, i: int) -> _At:
        return replace(self, segs=(*self.segs, f"[{i}]"))


def _join(segs: Iterable[str]) -> str:
    out = ""
    for s in segs:
        out += s if (s.startswith("[") or not out) else "." + s
    return out


class _Walker:
    def __init__(self) -> None:
        self.changes: list[Change] = []
        self.sections: dict[str, str] = {}

    def walk(self, old: Any, new: Any, at: _At) -> None:
        if type(old) is type(new) and old == new:
            return
        if isinstance(old, BaseModel) and isinstance(new, BaseModel) and type(old) is type(new):
            self._model(old, new, at)
        elif isinstance(old, BaseModel) and new is None:
            self._whole("removed", old, at)
        elif isinstance(new, BaseModel) and old is None:
            self._whole("added", new, at)
        elif _model_list(old) and _model_list(new):
            self._list(old or [], new or [], at)
        else:
            self._leaf(old, new, at)

    def _model(self, old: BaseModel, new: BaseModel, at: _At) -> None:
        if isinstance(old, Condition) and at.guard is None:
            at = replace(at, guard=(at.path, old, new))
        if isinstance(old, Condition) and _shape(old) != _shape(new):
            # A clause of another kind ({mrd, gte} became {all: [...]}): field by field would
            # read as noise; the clause is replaced, shown in words.
            self.changes.append(Change(
                path=at.path, section=at.section, kind="changed", category="guard", old=_plain(old),
                new=_plain(new), old_text=_describe(old) or "", new_text=_describe(new) or "",
                guard=self._guard(at)))
            return
        if _is_sourced(old):
            leaf = at.fields[-1] if at.fields else ""
            old_dose, new_dose = at.dose if at.dose is not None else (None, None)
            at = replace(at, sourced=_Sourced(at.path, old, new, _unit(old_dose, leaf), _unit(new_dose, leaf)))
        elif "unit" in type(old).model_fields:
            at = replace(at, dose=(old, new))
        top = not at.segs
        for name, info in type(old).model_fields.items():
            alias = info.alias or name
            o, n = getattr(old, name), getattr(new, name)
            child = at.field(alias)
            if top:
                nested = isinstance(o, (BaseModel, list)) or isinstance(n, (BaseModel, list))
                child = replace(child, section=alias if nested else "protocol")
            self.walk(o, n, child)

    def _list(self, old: list[Any], new: list[Any], at: _At) -> None:
        ko, kn = _identities(old), _identities(new)
        if ko is None or kn is None:
            for i in range(max(len(old), len(new))):
                if i < len(old) and i < len(new):
                    self.walk(old[i], new[i], at.index(i))
                elif i < len(old):
                    self._whole("removed", old[i], at.index(i))
                else:
                    self._whole("added", new[i], at.index(i))
            return
        by_old, by_new = dict(zip(ko, old, strict=True)), dict(zip(kn, new, strict=True))
        top_list = len(at.segs) == 1
        for key, item in by_old.items():
            child = at.item(key)
            if key not in by_new:
                self._whole("removed", item, child)
                continue
            if top_list:
                section = f"{at.segs[0]}.{child.segs[-1]}"
                child = replace(child, section=section)
                self.sections.setdefault(section, _name(by_new[key]) or key)
            self.walk(item, by_new[key], child)
        for key, item in by_new.items():
            if key not in by_old:
                self._whole("added", item, at.item(key))
        common_old = [k for k in ko if k in by_new]
        common_new = [k for k in kn if k in by_old]
        if common_old != common_new:
            # Order matters where items are tried in order (transitions, risk groups): a guard change.
            ordered_rules = any("when" in type(x).model_fields for x in (*old, *new))
            category = "guard" if ordered_rules else _category(at.fields, at.guard is not None)
            self.changes.append(Change(
                path=at.path, section=at.section, kind="moved", category=category, old=list(ko), new=list(kn),
                old_text=", ".join(ko), new_text=", ".join(kn), guard=self._guard(at)))

    def _whole(self, kind: str, item: Any, at: _At) -> None:
        """An item, sub-model or optional value that exists on one side only."""
        if at.guard is not None:
            category = "guard"
        elif isinstance(item, Condition) or getattr(item, "when", None) is not None:
            category = "guard"
        else:
            category = _category(at.fields, False)
        dose = None if at.dose is None else at.dose[1 if kind == "added" else 0]
        text = _item_text(item, at.fields[-1] if at.fields else "", dose)
        guard = self._guard(at)
        if guard is None and isinstance(item, Condition):
            words = _describe(item)
            guard = GuardText(at.path, None, words) if kind == "added" else GuardText(at.path, words, None)
        plain = _plain(item)
        self.changes.append(Change(
            path=at.path, section=at.section, kind=kind, category=category,
            old=plain if kind == "removed" else None, new=plain if kind == "added" else None,
            old_text=text if kind == "removed" else "", new_text=text if kind == "added" else "", guard=guard))

    def _leaf(self, old: Any, new: Any, at: _At) -> None:
        leaf = at.fields[-1] if at.fields else ""
        src = at.sourced
        sourced_path = None
        if src is not None and leaf in _SOURCED_LEAVES and _join(at.segs[:-1]) == src.path:
            old_text, new_text = _sourced_text(src.old, src.old_unit), _sourced_text(src.new, src.new_unit)
            sourced_path = src.path
        else:
            old_text, new_text = _fmt(old), _fmt(new)
        if old_text == new_text:  # never show a change as "x → x" (e.g. "8" and 8, or 16-digit floats)
            old_text, new_text = f"{old_text} ({leaf or 'value'} {old!r})", f"{new_text} ({leaf or 'value'} {new!r})"
        self.changes.append(Change(
            path=at.path, section=at.section, kind="changed", category=_category(at.fields, at.guard is not None),
            old=_plain(old), new=_plain(new), old_text=old_text, new_text=new_text, sourced_path=sourced_path,
            guard=self._guard(at)))

    def _guard(self, at: _At) -> GuardText | None:
        if at.guard is None:
            return None
        path, old, new = at.guard
        return GuardText(path, _describe(old), _describe(new))


def _model_list(value: Any) -> bool:
    """A list of models, or ``None`` standing for an empty one (``all: null`` beside ``all: [...]``)."""
    return value is None or (isinstance(value, list) and all(isinstance(x, BaseModel) for x in value))


def _shape(condition: Condition) -> tuple[str, ...]:
    """Which fields of a condition are set: its kind (``all``, ``fact`` + ``gte``...)."""
    return tuple(name for name in type(condition).model_fields if getattr(condition, name) is not None)


def _identities(items: list[Any]) -> list[str] | None:
    """Each item's identity (``id``, ``key``, or ``from->to``), made unique by ``#2``, ``#3``...
    ``None`` when some item has none: the list is then compared by position."""
    keys: list[str] = []
    seen: dict[str, int] = {}
    for item in items:
        key = _identity(item)
        if key is None:
            return None
        seen[key] = seen.get(key, 0) + 1
        keys.append(key if seen[key] == 1 else f"{key}#{seen[key]}")
    return keys


def _identity(item: Any) -> str | None:
    if not isinstance(item, BaseModel):
        return None
    for attr in ("key", "id"):
        value = getattr(item, attr, None)
        if isinstance(value, str):
            return value
    ends = {info.alias or name: getattr(item, name) for name, info in type(item).model_fields.items()}
    if isinstance(ends.get("from"), str) and isinstance(ends.get("to"), str):
        return f"{ends['from']}->{ends['to']}"
    return None


def _category(fields: tuple[str, ...], in_guard: bool) -> str:
    leaf = fields[-1] if fields else ""
    if leaf in _EVIDENCE_FIELDS:
        return "evidence"
    if leaf in _SOURCE_FIELDS:
        return "source"
    if in_guard:
        return "guard"
    if leaf in _METADATA_FIELDS:
        return "metadata"
    for name in reversed(fields):
        if name in _GUARD_FIELDS:
            return "guard"
        if name in _DAYS_FIELDS or name.endswith("_days"):
            return "days"
        if name in _DOSE_FIELDS:
            return "dose"
        if name in _SOURCE_FIELDS:
            return "source"
    return "structure"


# --------------------------------------------------------------------------- values as text


def _is_sourced(m: Any) -> bool:
    fields = type(m).model_fields
    return "value" in fields and "evidence" in fields


def _unit(dose: Any, field_name: str) -> str:
    """The unit of a number inside a dose: the amount per m²/kg and per day/week; a cap in the
    dose's unit alone (it caps one administration)."""
    unit = getattr(dose, "unit", None)
    if not isinstance(unit, str):
        return ""
    if field_name != "amount":
        return unit
    basis = {"per_m2": "/m²", "per_kg": "/kg"}.get(getattr(dose, "basis", None) or "", "")
    per = {"day": "/day", "week": "/week"}.get(getattr(dose, "per", None) or "", "")
    return unit + basis + per


def _num(x: float) -> str:
    # Every significant digit kept: a threshold of 4.9e-4 must never print as 5e-4.
    if x == 0:
        return "0"
    if abs(x) < 1e-2:
        mantissa, exponent = f"{x:.12e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return f"{x:.12g}"


def _fmt(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _num(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    if isinstance(value, BaseModel):
        return json.dumps(_plain(value), ensure_ascii=False)
    return str(value)


def _sourced_text(m: Any, unit: str = "") -> str:
    """A sourced value with its evidence: ``15 µg/m²/day [published: vandersluis2023]``."""
    value = m.value
    if value is None:
        shown = "not specified"
    elif isinstance(getattr(m, "text", None), str):
        shown = m.text
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        shown = f"{_fmt(value)} {unit}".strip()
    else:
        shown = _fmt(value)
    source = getattr(m, "source", None)
    return f"{shown} [{m.evidence}{': ' + source if source else ''}]"


def _describe(condition: Any) -> str | None:
    """A condition in words (``describe``), or as JSON if it cannot be put in words."""
    if condition is None:
        return None
    from ._rules import describe

    try:
        return describe(condition)
    except (KeyError, AttributeError, TypeError, ValueError):  # a condition shape describe() does not know yet
        return json.dumps(_plain(condition), ensure_ascii=False)


def _name(m: Any) -> str | None:
    ends = {info.alias or name: getattr(m, name) for name, info in type(m).model_fields.items()} \
        if isinstance(m, BaseModel) else {}
    if isinstance(ends.get("from"), str) and isinstance(ends.get("to"), str):
        label = ends.get("label")
        return f"{ends['from']} → {ends['to']}" + (f" ({label})" if isinstance(label, str) else "")
    for attr in _NAME_FIELDS:
        value = getattr(m, attr, None)
        if isinstance(value, str):
            return value
    return None


def _dose_text(dose: Any) -> str:
    amount, bands, cap = getattr(dose, "amount", None), getattr(dose, "bands", None), getattr(dose, "cap", None)
    if amount is not None:
        text = _sourced_text(amount, _unit(dose, "amount"))
    elif bands:
        parts = []
        for band in bands:
            below = getattr(band, "below_age_years", None)
            parts.append(("under " + str(below) + " y: " if below is not None else "")
                         + _sourced_text(band.amount, _unit(dose, "amount")))
        text = "age-banded " + "; ".join(parts)
    else:
        text = _fmt(dose)
    if cap is not None:
        text += f", at most {_sourced_text(cap, _unit(dose, 'cap'))}"
    return text


def _summary(m: Any, dose: Any = None, field_name: str = "") -> str:
    """One line naming an item with its clinical values (route, dose, days, length, guard)."""
    if isinstance(m, Condition):
        return _describe(m) or ""
    if isinstance(m, BaseModel) and _is_sourced(m):
        return _sourced_text(m, _unit(dose, field_name))
    if not isinstance(m, BaseModel):
        return _fmt(m)
    if "unit" in type(m).model_fields:
        return _dose_text(m)
    route = getattr(m, "route", None)
    head = " ".join(p for p in (_name(m), route if isinstance(route, str) else None) if p)
    parts = [head] if head else []
    if getattr(m, "dose", None) is not None:
        parts.append(_dose_text(m.dose))
    for attr, label in (("days", "days"), ("length_days", "length (days)")):
        value = getattr(m, attr, None)
        if isinstance(value, BaseModel) and _is_sourced(value):
            parts.append(f"{label} {_sourced_text(value)}")
    if isinstance(getattr(m, "until", None), str):
        parts.append(f"until {m.until}")
    when = getattr(m, "when", None)
    if isinstance(when, Condition):
        parts.append("when " + (_describe(when) or ""))
    return ", ".join(parts) if parts else json.dumps(_plain(m), ensure_ascii=False)


def _item_text(item: Any, field_name: str, dose: Any) -> str:
    """The summary of an added or removed item, and one line per identified item inside it
    (an added element lists its administrations and assessments)."""
    lines = [_summary(item, dose, field_name)]
    if isinstance(item, BaseModel):
        for name, info in type(item).model_fields.items():
            value = getattr(item, name)
            if isinstance(value, list) and value and all(isinstance(v, BaseModel) for v in value):
                keys = _identities(value)
                if keys is None:
                    continue
                for key, sub in zip(keys, value, strict=True):
                    lines.append(f"{info.alias or name}.{key}: {_summary(sub)}")
    return "\n".join(lines)


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True, exclude_none=True)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# --------------------------------------------------------------------------- text output


_RANK = {"dose": 0, "days": 0, "guard": 0, "structure": 1, "evidence": 2, "source": 3, "metadata": 4}


def _rank(c: Change) -> int:
    # A whole item added or removed (a drug, an element, a rule) is shown with the clinical changes.
    if c.kind in ("added", "removed") and isinstance(c.old if c.kind == "removed" else c.new, dict):
        return 0
    return _RANK.get(c.category, 1)


def _section_order(diff: DefinitionDiff) -> list[str]:
    fields = [info.alias or name for name, info in ProtocolDefinition.model_fields.items()]
    first_seen: dict[str, int] = {}
    for i, c in enumerate(diff.changes):
        first_seen.setdefault(c.section, i)

    def key(section: str) -> tuple[int, int, int, int]:
        top = section.split(".", 1)[0]
        group = 0 if section == "protocol" else 2 if top == "sources" else 1
        index = fields.index(top) if top in fields else len(fields)
        return group, index, 0 if section == top else 1, first_seen[section]

    return sorted(first_seen, key=key)


def _side_text(side: dict[str, Any]) -> str:
    file = side.get("file")
    shipped = file in (side["id"], f"{side['id']}@{side['version']}")  # a shipped id: the file adds nothing
    where = f" ({file})" if file and not shipped else ""
    return f"{side['id']} {side['version']} [{side['status']}]{where}"


def _text_lines(diff: DefinitionDiff) -> Iterator[str]:
    yield f"--- {_side_text(diff.a)}"
    yield f"+++ {_side_text(diff.b)}"
    if diff.identical:
        yield "no differences"
        return
    counts = diff.counts()
    yield f"{counts['total']} change{'s' if counts['total'] != 1 else ''}: " + ", ".join(
        f"{counts[c]} {c}" for c in CATEGORIES if counts[c])
    ea, eb = diff.a.get("evidence") or {}, diff.b.get("evidence") or {}
    if ea and eb:
        yield "values: " + ", ".join(
            f"{k} {ea.get(k, 0)}" + (f" → {eb.get(k, 0)}" if eb.get(k, 0) != ea.get(k, 0) else "")
            for k in dict.fromkeys([*ea, *eb]))
    for section in _section_order(diff):
        changes = sorted((c for c in diff.changes if c.section == section), key=_rank)
        yield ""
        title = diff.sections.get(section)
        yield f"{section}" + (f": {title}" if title else "")
        yield from _section_lines(section, changes)


def _section_lines(section: str, changes: list[Change]) -> Iterator[str]:
    prefix = "" if section == "protocol" else section
    guards_shown: set[str] = set()
    done: set[int] = set()
    for i, c in enumerate(changes):
        if i in done:
            continue
        group = [c]
        if c.sourced_path is not None:
            # The value, evidence and source of one sourced value read as one line.
            for j in range(i + 1, len(changes)):
                d = changes[j]
                if (d.sourced_path == c.sourced_path and d.old_text == c.old_text and d.new_text == c.new_text):
                    group.append(d)
                    done.add(j)
        path = c.sourced_path if c.sourced_path is not None else c.path
        rel = _relative(path, prefix)
        categories = ", ".join(dict.fromkeys(g.category for g in group))
        head = f"  {c.marker} {categories:<9} {rel}"
        if c.kind == "added":
            body = c.new_text
        elif c.kind == "removed":
            body = c.old_text
        elif c.kind == "moved":
            body = f"order {c.old_text} → {c.new_text}"
        else:
            body = f"{c.old_text} → {c.new_text}"
        first, *rest = body.split("\n")
        yield f"{head}: {first}" if first else head
        for line in rest:
            yield f"      {line}"
        # The whole guard in words, once per guard, unless the line already is the whole guard.
        if c.guard is not None and c.guard.path not in guards_shown and c.guard.path != c.path:
            guards_shown.add(c.guard.path)
            yield f"      guard before: {c.guard.old if c.guard.old is not None else '(none)'}"
            yield f"      guard after:  {c.guard.new if c.guard.new is not None else '(none)'}"


def _relative(path: str, prefix: str) -> str:
    if not prefix:
        return path
    if path == prefix:
        return path.rsplit(".", 1)[-1]
    if path.startswith((prefix + ".", prefix + "[")):
        return path[len(prefix):].lstrip(".")
    return path
