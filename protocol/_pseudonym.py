"""Patient ids are pseudonyms: an id that looks like a name or a hospital number is refused.

A registry, a plan or a calendar leaves the ward (printed, e-mailed, imported into a phone);
the id is on every page. It must not identify the child to someone who finds the paper.
By default an id is refused when it

- holds a run of 8 or more digits (a hospital, NHS or national number; a date 19850314);
- holds a date (``1985-03-14``, ``14.03.1985``, ``1985_03_14``);
- starts with a hospital-number prefix followed by digits (``MRN-00123456``, ``NHS 123``,
  ``HN12``, ``URN``, ``CHI``, ``PID``, ``NHI``);
- is one capitalised word (``Smith``), or holds two or more words of letters with a
  lower-case letter (``John.Smith``, ``smith_john_2``, ``baby-girl``).

``INF-0001``, ``TEST-0042``, ``P17``, ``7f3a2c9e`` are accepted.

A site sets its own rule with ``$PROTOCOL_ID_PATTERN``: a regular expression every id must
match in full (e.g. ``^UKALL-[0-9]{4}$``); it replaces the rules above.
"""

from __future__ import annotations

import os
import re

__all__ = ["ENV", "check_pseudonym", "pseudonym_problem"]

#: The environment variable a site sets to its own id pattern.
ENV = "PROTOCOL_ID_PATTERN"

_DIGIT_RUN = re.compile(r"\d{8,}")
_DATE = re.compile(r"(?:19|20)\d{2}[-_. ]?[01]\d[-_. ]?[0-3]\d|[0-3]\d[-_. ][01]\d[-_. ](?:19|20)\d{2}")
_HOSPITAL = re.compile(r"^(?:MRN|NHS|HN|URN?|CHI|PID|NHI|HOSP|MR)[-_. #:]*\d", re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z]*[a-z][A-Za-z]*")
_NAME = re.compile(r"[A-Z][a-z]+(?:[-'][A-Z][a-z]+)?")
_SITE_CACHE: dict[str, re.Pattern[str]] = {}

_HINT = "patient ids are pseudonyms (e.g. INF-0001), never a name, a date of birth or a hospital number"


def pseudonym_problem(value: str) -> str | None:
    """Why ``value`` cannot be a patient id, or None when it can.

    >>> pseudonym_problem("INF-0001") is None
    True
    >>> pseudonym_problem("MRN-00123456").split(":")[0]
    "expected a pseudonym, got a hospital number ('MRN-00123456')"
    """
    site = os.environ.get(ENV)
    if site:
        pattern = _SITE_CACHE.get(site)
        if pattern is None:
            try:
                pattern = _SITE_CACHE[site] = re.compile(site)
            except re.error as exc:
                return f"the site's id pattern ${ENV} is not a valid regular expression ({exc})"
        if pattern.fullmatch(value):
            return None
        return f"expected an id matching this site's pattern {site} (${ENV}), got {value!r}"
    if _HOSPITAL.search(value):
        kind = "a hospital number"
    elif _DIGIT_RUN.search(value):
        kind = "a run of 8 or more digits (a hospital or national number, or a date)"
    elif _DATE.search(value):
        kind = "a date"
    elif _NAME.fullmatch(value):
        kind = "a word that looks like a name"
    elif sum(1 for part in re.split(r"[._\- ]+", value) if len(part) >= 2 and _WORD.fullmatch(part)) >= 2:
        kind = "words that look like a name"
    else:
        return None
    return f"expected a pseudonym, got {kind} ({value!r}): {_HINT}"


def check_pseudonym(value: str) -> str:
    """Return ``value`` if it can be a patient id, else raise ``ValueError`` saying why
    (the pydantic validator of ``Patient.id``)."""
    problem = pseudonym_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value
