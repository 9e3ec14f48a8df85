"""Site amendments: verified values layered over a shipped definition.

A site that holds the official protocol document can replace placeholders with the values
it has checked, without editing the shipped file. Each value names who verified it, when,
and the document section; once applied its evidence level is ``site`` and documents say
the value came from the site. Only placeholders can be replaced: a published or derived
value is changed by a new version of the definition, reviewed with ``protocol diff``.

An amendment file::

    format: 1
    protocol: interfant06-blinatumomab@1.0.0   # the definition (and version) it was checked against
    site: "Example Children's Hospital"
    values:
      - field: elements[0].administrations[0].dose.amount    # as `protocol validate` lists it
        value: 60
        verified_by: "A. Pharmacist"
        verified_on: 2026-11-01
        section: "Interfant-06 protocol v1.3, section 6.2.1"
"""

from __future__ import annotations

import copy
import hashlib
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError

from ._errors import DefinitionError, Problem
from ._io import decode_text, format_loc, parse_text, read_document, read_input, validate_document
from ._machine import Protocol, compile_definition, walk_values
from ._models import IsoDate, ProtocolDefinition, Text, _Strict

__all__ = ["SiteAmendment", "SiteValue", "amend"]


class SiteValue(_Strict):
    """One verified value: where it goes, the value, and who verified it against which section."""

    field: Text = Field(description="The value's place as `protocol validate` lists it: a path such as "
                        "elements[0].administrations[0].dose.amount, or its label such as "
                        "'induction › prednisone › amount'.")
    value: float | int | str | list[int | str] = Field(description="A number, or days such as '8, 15, 22'.")
    verified_by: Text
    verified_on: IsoDate
    section: Text = Field(description="The protocol document (version) and section the value was read from.")
    note: Text | None = None


class SiteAmendment(_Strict):
    """A site amendment file (see the module documentation)."""

    format: Literal[1] = 1
    protocol: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*(@[0-9A-Za-z.+-]+)?$",
                          description="The protocol id, optionally @version, the values were checked against.")
    site: Text
    values: list[SiteValue] = Field(min_length=1)


def amend(base: Protocol, site_path: str | os.PathLike[str], *, site_bytes: bytes | None = None,
          base_bytes: bytes | None = None) -> Protocol:
    """Apply a site amendment file to a loaded protocol and return the amended protocol.

    ``site_bytes``: the amendment's content when it does not come from the file (a version
    kept in the registry); ``site_path`` then only names it in messages. ``base_bytes``: the
    definition's own bytes when it has no file of its own (a version kept in the registry). The amended
    protocol keeps the bytes (``site_bytes``) and their SHA-256 (``site_sha256``) so the
    registry can store the amendment a patient is planned with.

    Raises :class:`DefinitionError` naming the amendment file, the entry and what is wrong
    (an unknown field, a value that is not a placeholder, a value the format refuses, a
    protocol or version mismatch).

    >>> p = amend(load_protocol("interfant06-blinatumomab"), "site.yaml")  # doctest: +SKIP
    """
    name = os.fspath(site_path)
    raw = read_input(site_path, error=DefinitionError) if site_bytes is None else site_bytes
    sdoc = parse_text(decode_text(raw, name, error=DefinitionError), name,
                      json_only=Path(name).suffix.lower() == ".json", error=DefinitionError)
    sdoc.sha256 = hashlib.sha256(raw).hexdigest()
    amendment = validate_document(SiteAmendment, sdoc, error=DefinitionError)
    problems: list[Problem] = []

    def problem(loc: tuple[Any, ...], message: str) -> None:
        problems.append(Problem(sdoc.name, format_loc(loc), message, sdoc.line_of(loc)))

    pid, _, version = amendment.protocol.partition("@")
    if pid != base.id or (version and version != base.version):
        problem(("protocol",), f"expected {base.id}@{base.version} (the definition being amended), got "
                f"{amendment.protocol!r}")
        raise DefinitionError(problems)
    by_path: dict[str, tuple[tuple[Any, ...], Any]] = {}
    by_label: dict[str, list[tuple[tuple[Any, ...], Any]]] = {}
    for loc, label, value in walk_values(base.source):
        by_path[format_loc(loc)] = (loc, value)
        by_label.setdefault(" › ".join(label), []).append((loc, value))
    if base.path is None:
        raise DefinitionError(Problem(sdoc.name, "protocol", "the definition being amended has no file to read"))
    if base_bytes is None:
        ddoc = read_document(base.path, error=DefinitionError)
        if getattr(base, "sha256", None) and ddoc.sha256 != base.sha256:
            raise DefinitionError(Problem(os.fspath(base.path), "", "the definition changed since it was loaded: "
                                          "load it again before applying the site amendment"))
    else:
        ddoc = parse_text(decode_text(base_bytes, os.fspath(base.path), error=DefinitionError),
                          os.fspath(base.path), json_only=str(base.path).lower().endswith(".json"),
                          error=DefinitionError)
    data = copy.deepcopy(ddoc.data)
    placed: dict[tuple[Any, ...], int] = {}
    for i, entry in enumerate(amendment.values):
        found = by_path.get(entry.field)
        if found is None:
            matches = by_label.get(entry.field, [])
            if len(matches) > 1:
                problem(("values", i, "field"), f"{entry.field!r} names {len(matches)} values; use the path "
                        f"({', '.join(format_loc(m[0]) for m in matches)})")
                continue
            found = matches[0] if matches else None
        if found is None:
            problem(("values", i, "field"), f"expected a value of {base.id} as `protocol validate` lists it "
                    f"(e.g. {next(iter(by_path))}), got {entry.field!r}")
            continue
        loc, current = found
        if current.evidence != "placeholder":
            problem(("values", i, "field"), f"{entry.field} is {current.evidence} (source {current.source}): a site "
                    f"amendment replaces placeholders only; a new version of the definition changes the rest")
            continue
        if loc in placed:
            problem(("values", i, "field"), f"{entry.field} is already set by values[{placed[loc]}]")
            continue
        placed[loc] = i
        node = data
        for key in loc:
            node = node[key]
        node["value"] = entry.value
        node["evidence"] = "site"
        node["verified"] = {"site": amendment.site, "by": entry.verified_by, "on": entry.verified_on.isoformat(),
                            "section": entry.section, "file": sdoc.name}
        if entry.note is not None:
            node["note"] = entry.note
    if problems:
        raise DefinitionError(problems)
    where = {loc: i for loc, i in placed.items()}
    try:
        defn = ProtocolDefinition.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            raise_loc = tuple(err["loc"])
            i = next((n for loc, n in where.items() if raise_loc[:len(loc)] == loc), None)
            at = ("values", i, "value") if i is not None else ("values",)
            problem(at, f"{format_loc(raise_loc)}: {err['msg'].removeprefix('Value error, ')}")
        raise DefinitionError(problems) from None
    compiled, issues = compile_definition(defn)
    if compiled is None:
        for loc, msg in issues:
            # Blame the amended value closest to the problem (the same element, at least).
            def shared(p: tuple[Any, ...], loc: tuple[Any, ...] = tuple(loc)) -> int:
                n = 0
                while n < min(len(p), len(loc)) and p[n] == loc[n]:
                    n += 1
                return n
            best = max(where.items(), key=lambda item: shared(item[0]), default=None)
            i = best[1] if best is not None and shared(best[0]) >= 2 else None
            at = ("values", i, "value") if i is not None else ("values",)
            problem(at, f"with the site's values, {format_loc(loc)}: {msg}")
        raise DefinitionError(problems)
    compiled.path = base.path
    compiled.site = (amendment.site, sdoc.name)
    # Where the amended definition came from is where its base came from (the site file is
    # in ``site``); the amendment's own hash goes with it.
    compiled.sha256 = getattr(base, "sha256", None)
    compiled.origin = getattr(base, "origin", None)
    compiled.provenance = getattr(base, "provenance", None)
    compiled.site_sha256 = sdoc.sha256
    compiled.site_bytes = raw
    return compiled
