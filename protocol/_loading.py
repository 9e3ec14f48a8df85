"""Loading: shipped definitions by id, definition and patient files by path.

A protocol is validated and compiled once per process and file version (cached on the
resolved path, modification time and size); planning a cohort re-uses it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from ._errors import DefinitionError, PatientError, Problem
from ._io import Document, format_loc, read_document, validate_document
from ._machine import Protocol, compile_definition, walk_values
from ._models import Patient, ProtocolDefinition

__all__ = [
    "definition_schema",
    "list_protocols",
    "load_patient",
    "load_protocol",
    "patient_schema",
]

_CACHE: dict[tuple[str, int, int], Protocol] = {}


def _definitions_dir() -> Path:
    return Path(str(resources.files("protocol") / "definitions"))


_SHIPPED: tuple[int, dict[str, Path]] | None = None


def _shipped() -> dict[str, Path]:
    # The folder is listed again only when it changes (plan() looks protocols up by id).
    global _SHIPPED
    folder = _definitions_dir()
    stamp = folder.stat().st_mtime_ns
    if _SHIPPED is None or _SHIPPED[0] != stamp:
        _SHIPPED = (stamp, {p.stem: p for p in sorted(folder.glob("*.yaml"))})
    return _SHIPPED[1]


def list_protocols() -> list[Protocol]:
    """Every shipped protocol definition, validated.

    >>> [p.id for p in list_protocols()]  # doctest: +SKIP
    ['interfant06-blinatumomab']
    """
    return [load_protocol(path) for path in _shipped().values()]


def load_protocol(id_or_path: str | os.PathLike[str], site: str | os.PathLike[str] | None = None) -> Protocol:
    """Load, validate and compile a protocol: a shipped id or a path to a YAML/JSON file;
    ``site``: a site amendment file whose verified values replace placeholders (see ``_site``).

    Raises :class:`~protocol.DefinitionError` listing every problem (file, field, line).

    >>> p = load_protocol("interfant06-blinatumomab")
    >>> p.version
    '1.0.0'
    """
    base = _load(id_or_path)
    if site is None:
        return base
    from ._site import amend

    try:
        st = os.stat(site)
    except OSError as exc:
        raise DefinitionError(Problem(os.fspath(site), "", f"cannot read the site amendment: {exc.strerror}")) from None
    key = (f"{id(base)}|{os.path.realpath(site)}", st.st_mtime_ns, st.st_size)
    amended = _CACHE.get(key)
    if amended is None:
        amended = _CACHE[key] = amend(base, site)
    return amended


def _load(id_or_path: str | os.PathLike[str]) -> Protocol:
    text = os.fspath(id_or_path)
    shipped = _shipped()
    name, _, version = text.partition("@")
    if name in shipped and not Path(text).exists():
        path = shipped[name]
    else:
        path = Path(text)
        if not path.exists():
            raise DefinitionError(Problem(
                text, "", "no such file, and not a shipped protocol id (shipped: " + ", ".join(shipped) + ")"
            ))
    try:
        stat = path.stat()
    except OSError as exc:
        raise DefinitionError(Problem(text, "", f"cannot read: {exc.strerror}")) from None
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    cached = _CACHE.get(key)
    if cached is None:
        doc = read_document(path, error=DefinitionError)
        cached = _compile(doc)
        _CACHE[key] = cached
    if version and cached.version != version:
        raise DefinitionError(Problem(text, "version", f"expected version {version}, got {cached.version}"))
    return cached


def _compile(doc: Document) -> Protocol:
    defn = validate_document(ProtocolDefinition, doc, error=DefinitionError)
    compiled, problems = compile_definition(defn)
    if compiled is None:
        raise DefinitionError([Problem(doc.name, format_loc(loc), msg, doc.line_of(loc)) for loc, msg in problems])
    compiled.path = doc.name
    return compiled


# --------------------------------------------------------------------------- patients


def load_patient(path: str | os.PathLike[str]) -> Patient:
    """Load and validate a patient file (YAML or JSON).

    Checks each field, then the dates against each other (diagnosis not before birth,
    results not before diagnosis, ...). Raises :class:`~protocol.PatientError`.

    >>> patient = load_patient("examples/patients/mr-on-time.yaml")  # doctest: +SKIP
    """
    doc = read_document(path, error=PatientError)
    patient = validate_document(Patient, doc, error=PatientError)
    problems = [Problem(doc.name, format_loc(loc), msg, doc.line_of(loc)) for loc, msg in _check_patient(patient)]
    if problems:
        raise PatientError(problems)
    patient._source = doc.name
    patient._lines = doc
    return patient


def _check_patient(p: Patient) -> Iterator[tuple[tuple[Any, ...], str]]:
    if p.diagnosis_date < p.birth_date:
        yield ("diagnosis_date",), f"expected a date on or after birth_date {p.birth_date}, got {p.diagnosis_date}"
    if p.treatment_start is not None and p.treatment_start < p.diagnosis_date:
        yield ("treatment_start",), (f"expected a date on or after diagnosis_date {p.diagnosis_date}, "
                                     f"got {p.treatment_start}")
    seen: dict[dt.date, int] = {}
    for i, m in enumerate(p.measurements):
        if m.date < p.birth_date:
            yield ("measurements", i, "date"), f"expected a date on or after birth_date {p.birth_date}, got {m.date}"
        if m.date in seen:
            yield ("measurements", i, "date"), (f"a second measurement on {m.date} (measurements[{seen[m.date]}]); "
                                                "keep one per date")
        seen[m.date] = i
    for i, r in enumerate(p.mrd):
        if r.date < p.diagnosis_date:
            yield ("mrd", i, "date"), f"expected a date on or after diagnosis_date {p.diagnosis_date}, got {r.date}"
    for i, e in enumerate(p.events):
        if e.date < p.diagnosis_date:
            yield ("events", i, "date"), (f"expected a date on or after diagnosis_date {p.diagnosis_date}, "
                                          f"got {e.date}")


def definition_schema() -> dict[str, Any]:
    """JSON Schema of the protocol definition format (what ``protocol schema`` prints)."""
    schema = ProtocolDefinition.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Protocol definition"
    return schema


def patient_schema() -> dict[str, Any]:
    """JSON Schema of the patient file format."""
    schema = Patient.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Patient"
    return schema


def placeholder_rows(protocol: Protocol) -> list[dict[str, Any]]:
    """Every placeholder value of a protocol: where it is, its value, and the note."""
    rows = []
    for loc, label, value in walk_values(protocol.source):
        if value.evidence == "placeholder":
            shown: Any = value.value
            if hasattr(value, "text"):
                shown = None if value.value is None else value.text  # type: ignore[union-attr]
            elif shown is not None:
                shown = f"{shown:g}"
            rows.append({"field": format_loc(loc), "label": " › ".join(label), "value": shown,
                         "source": value.source, "note": value.note})
    return rows


def evidence_counts(protocol: Protocol) -> dict[str, int]:
    """How many values of each evidence level the definition holds."""
    counts = {"published": 0, "derived": 0, "site": 0, "placeholder": 0}
    for _, _, value in walk_values(protocol.source):
        counts[value.evidence] += 1
    return counts


_compact = json.JSONEncoder(ensure_ascii=False, default=lambda v: _default(v), separators=(", ", ": ")).encode


def dumps(data: Any) -> str:
    """JSON text with ISO dates, as every JSON output of this package is written.

    Readable and fast: the top-level fields one per line, and each element of a top-level
    list on a line of its own (``indent=`` would force Python's slow pure-Python encoder).
    """
    if not isinstance(data, dict):
        return _compact(data) + "\n"
    lines = []
    for key, value in data.items():
        head = f"  {_compact(key)}: "
        if isinstance(value, list) and value:
            body = ",\n".join("    " + _compact(v) for v in value)
            lines.append(f"{head}[\n{body}\n  ]")
        else:
            lines.append(head + _compact(value))
    return "{\n" + ",\n".join(lines) + "\n}\n"


def _default(value: Any) -> Any:
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def validation_report(file: str | os.PathLike[str], site: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Validate a definition (with a site amendment, if given) and summarise it: counts,
    evidence levels, the site's verified values and every remaining placeholder.

    Raises :class:`DefinitionError` listing every problem.
    """
    protocol = load_protocol(file, site)
    return {
        "site": None if protocol.site is None else {
            "site": protocol.site[0], "file": protocol.site[1],
            "values": [{"field": format_loc(loc), "label": " › ".join(label),
                        "value": f"{v.value:g}" if isinstance(v.value, float) else v.value,
                        "verified_by": v.verified.by, "verified_on": v.verified.on.isoformat(),
                        "section": v.verified.section}
                       for loc, label, v in walk_values(protocol.source) if v.verified is not None]},
        "id": protocol.id,
        "version": protocol.version,
        "status": protocol.definition.status,
        "elements": len(protocol.elements),
        "transitions": sum(len(v) for v in protocol.table.values()),
        "evidence": evidence_counts(protocol),
        "placeholders": placeholder_rows(protocol),
    }
