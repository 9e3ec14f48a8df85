"""Loading: shipped definitions by id, definition and patient files by path.

A protocol is validated and compiled once per process and file version (cached on the
resolved path, modification time and size); planning a cohort re-uses it.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import os
import re
import sys
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._errors import DefinitionError, PatientError, Problem
from ._io import MAX_PROBLEMS, Document, _gc_paused, format_loc, read_document, validate_document

if TYPE_CHECKING:  # the models and the machine (pydantic, transitions) are imported on first load:
    from ._machine import Protocol  # finding a shipped definition's file and hash needs neither
    from ._models import Patient   # (the worklist's freshness check, see _registry._stale)

__all__ = [
    "definition_schema",
    "list_protocols",
    "load_patient",
    "load_protocol",
    "patient_schema",
]

_CACHE: dict[tuple[str, int, int], Protocol] = {}


@functools.lru_cache(maxsize=1)
def _definitions_dir() -> Path:
    # The package's folder does not move while the process runs (asked on every plan).
    return Path(str(resources.files("protocol") / "definitions"))


#: The release manifest of the shipped definitions, in ``sha256sum`` format (``cd
#: protocol/definitions && sha256sum -c SHA256SUMS`` checks it by hand).
MANIFEST = "SHA256SUMS"

_SHIPPED: tuple[tuple[int, int], dict[str, Path], dict[str, str]] | None = None

#: A protocol id as a patient file or the command line names it (optionally ``@version``).
#: Such a name only ever means a shipped definition: a file is loaded only when given as a
#: path, with a slash or a suffix (``./x.yaml``, ``defs/x``, ``x.yaml``), so that a file
#: lying in the working directory can never stand in for a shipped protocol.
_ID_REF = re.compile(r"(?P<id>[a-z0-9][a-z0-9-]{0,63})(?:@(?P<version>[0-9A-Za-z.+-]{1,64}))?")


def _shipped() -> dict[str, Path]:
    return _shipped_index()[1]


def _shipped_index() -> tuple[tuple[int, int], dict[str, Path], dict[str, str]]:
    # The folder is listed again only when it or its manifest changes (plan() looks protocols
    # up by id on every call).
    global _SHIPPED
    folder = _definitions_dir()
    manifest = folder / MANIFEST
    try:
        mstamp = manifest.stat().st_mtime_ns
    except OSError:
        mstamp = 0
    stamp = (folder.stat().st_mtime_ns, mstamp)
    if _SHIPPED is None or _SHIPPED[0] != stamp:
        sums: dict[str, str] = {}
        if mstamp:
            for line in manifest.read_text(encoding="utf-8").splitlines():
                digest, _, fname = line.strip().partition("  ")
                if digest and fname:
                    sums[fname.lstrip("*")] = digest.lower()
        _SHIPPED = (stamp, {p.stem: p for p in sorted(folder.glob("*.yaml"))}, sums)
    return _SHIPPED


def manifest_text() -> str:
    """The release manifest of the shipped definitions as it should read now (``sha256sum``
    format). A developer who changed a shipped definition on purpose, and reviewed the change
    with ``protocol diff``, writes it with ``python -m protocol._loading --write-manifest``."""
    lines = []
    for path in sorted(_definitions_dir().glob("*.yaml")):
        lines.append(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.name}\n")
    return "".join(lines)


def list_protocols() -> list[Protocol]:
    """Every shipped protocol definition, validated.

    >>> [p.id for p in list_protocols()]  # doctest: +SKIP
    ['interfant06-blinatumomab']
    """
    return [load_protocol(name) for name in _shipped()]


def load_protocol(id_or_path: str | os.PathLike[str], site: str | os.PathLike[str] | None = None) -> Protocol:
    """Load, validate and compile a protocol: a shipped id (``id`` or ``id@version``) or a path
    to a YAML/JSON file; ``site``: a site amendment file whose verified values replace
    placeholders (see ``_site``).

    A name without a slash or a suffix is a protocol id and only ever means the shipped
    definition, whose SHA-256 must match the release manifest; a file is read only when given
    as a path (``./x.yaml``, ``defs/x``). The result says where it came from:
    ``protocol.origin`` is ``"shipped"`` or the file's absolute path, ``protocol.sha256`` the
    SHA-256 of the definition's bytes, and ``protocol.provenance`` is None for a shipped
    definition, else a sentence such as ``"from file /tmp/x.yaml (sha256 1a2b3c4d5e6f), not the
    shipped definition"`` that every output naming the version shows.

    Raises :class:`~protocol.DefinitionError` listing every problem (file, field, line).

    >>> p = load_protocol("interfant06-blinatumomab")
    >>> p.version, p.origin, p.provenance
    ('1.0.0', 'shipped', None)
    """
    base = _load(id_or_path)
    if site is None:
        return base
    from ._site import amend

    try:
        st = os.stat(site)
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise DefinitionError(Problem(os.fspath(site), "", f"cannot read the site amendment: {reason}")) from None
    key = (f"{id(base)}|{os.path.realpath(site)}", st.st_mtime_ns, st.st_size)
    amended = _CACHE.get(key)
    if amended is None:
        amended = _CACHE[key] = amend(base, site)
    return amended


#: Shipped id → ((index stamp, file mtime, file size), Protocol): plan() looks its protocol up
#: by id on every call, and resolving the paths costs more than a small plan. The file's own
#: stat is kept in the key, so a shipped file changed in place is read (and checked against
#: the manifest) again, as on the general path.
_BY_ID: dict[str, tuple[tuple[Any, int, int], Protocol]] = {}


def _load(id_or_path: str | os.PathLike[str]) -> Protocol:
    text = os.fspath(id_or_path)
    stamp, shipped, sums = _shipped_index()
    ref = _ID_REF.fullmatch(text)
    version = ""
    if ref is not None:
        name, version = ref["id"], ref["version"] or ""
        if name not in shipped:
            raise DefinitionError(Problem(
                text, "", "not a shipped protocol id (shipped: " + ", ".join(shipped) + "); to load a definition "
                f"file, give its path, e.g. ./{name}.yaml"))
        path = shipped[name]
        try:
            st = os.stat(path)
        except OSError:
            st = None
        fast = _BY_ID.get(name)
        if st is not None and fast is not None and fast[0] == (stamp, st.st_mtime_ns, st.st_size):
            if version and fast[1].version != version:
                raise DefinitionError(Problem(text, "version", f"expected version {version}, got {fast[1].version}"))
            return fast[1]
        loaded = _load_path(text, path, version, shipped, sums)
        if st is not None:
            _BY_ID[name] = ((stamp, st.st_mtime_ns, st.st_size), loaded)
        return loaded
    return _load_path(text, Path(text), version, shipped, sums)


def _load_path(text: str, path: Path, version: str, shipped: dict[str, Path], sums: dict[str, str]) -> Protocol:
    try:
        resolved = path.resolve()
        stat = path.stat()
    except (OSError, ValueError, RuntimeError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise DefinitionError(Problem(text, "", "no such file (a protocol id has no slash or suffix; shipped: "
                                          + ", ".join(shipped) + ")")) from None
        raise DefinitionError(Problem(text, "", f"cannot read: {getattr(exc, 'strerror', None) or exc}")) from None
    is_shipped = any(resolved == p.resolve() for p in shipped.values())
    key = (str(resolved), stat.st_mtime_ns, stat.st_size)
    cached = _CACHE.get(key)
    if cached is None:
        doc = read_document(path, error=DefinitionError)
        if is_shipped:
            _verify_shipped(doc, resolved, sums)
        cached = _compile(doc)
        cached.sha256 = doc.sha256
        cached.origin = "shipped" if is_shipped else str(resolved)
        cached.provenance = None if is_shipped else (
            f"from file {resolved} (sha256 {str(doc.sha256)[:12]}), not the shipped definition")
        _CACHE[key] = cached
    if version and cached.version != version:
        raise DefinitionError(Problem(text, "version", f"expected version {version}, got {cached.version}"))
    return cached


def _verify_shipped(doc: Document, path: Path, sums: dict[str, str]) -> None:
    expected = sums.get(path.name)
    if expected == doc.sha256:
        return
    got = "no entry" if expected is None else f"sha256 {expected[:12]}"
    raise DefinitionError(Problem(
        doc.name, "", f"the shipped definition does not match the release manifest {MANIFEST} ({got}, the file has "
        f"sha256 {str(doc.sha256)[:12]}): it was changed after release, and a shipped id must mean the released "
        "file; reinstall the package (developers, after reviewing the change with `protocol diff`: "
        "python -m protocol._loading --write-manifest)"))


def _compile(doc: Document) -> Protocol:
    from ._machine import compile_definition
    from ._models import ProtocolDefinition

    defn = validate_document(ProtocolDefinition, doc, error=DefinitionError)
    with _gc_paused():
        compiled, problems = compile_definition(defn)
    if compiled is None:
        raise DefinitionError(_listed(doc, problems))
    compiled.path = doc.name
    return compiled


def _listed(doc: Document, problems: list[tuple[tuple[Any, ...], str]]) -> list[Problem]:
    """The first :data:`MAX_PROBLEMS` problems with their lines, then how many more there are
    (a file of 700 copied elements would otherwise print 700 lines)."""
    out = [Problem(doc.name, format_loc(loc), msg, doc.line_of(loc)) for loc, msg in problems[:MAX_PROBLEMS]]
    if len(problems) > MAX_PROBLEMS:
        out.append(Problem(doc.name, "", f"... and {len(problems) - MAX_PROBLEMS:,} more problems not listed"))
    return out


# --------------------------------------------------------------------------- patients


def load_patient(path: str | os.PathLike[str]) -> Patient:
    """Load and validate a patient file (YAML or JSON).

    Checks each field, then the dates against each other (diagnosis not before birth,
    results not before diagnosis, ...). Raises :class:`~protocol.PatientError`.

    >>> patient = load_patient("examples/patients/mr-on-time.yaml")  # doctest: +SKIP
    """
    doc = read_document(path, error=PatientError)
    from ._models import Patient

    patient = validate_document(Patient, doc, error=PatientError)
    problems = list(_check_patient(patient))
    if problems:
        raise PatientError(_listed(doc, problems))
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
    from ._models import ProtocolDefinition

    schema = ProtocolDefinition.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Protocol definition"
    return schema


def patient_schema() -> dict[str, Any]:
    """JSON Schema of the patient file format."""
    from ._models import Patient

    schema = Patient.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Patient"
    return schema


def placeholder_rows(protocol: Protocol) -> list[dict[str, Any]]:
    """Every placeholder value of a protocol: where it is, its value, and the note."""
    from ._machine import walk_values

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
    from ._machine import walk_values

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
    from ._machine import walk_values

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


if __name__ == "__main__":  # python -m protocol._loading --write-manifest
    if sys.argv[1:] != ["--write-manifest"]:
        sys.exit("usage: python -m protocol._loading --write-manifest")
    (_definitions_dir() / MANIFEST).write_text(manifest_text(), encoding="utf-8")
    print(f"wrote {_definitions_dir() / MANIFEST}")
