"""The plan builder: one object per plan, composed of the stages (replay, item events,
infusions, projection), and the entry points :func:`plan` and :func:`risk`."""

from __future__ import annotations

import datetime as dt
import os
from operator import attrgetter
from typing import Any


from .._errors import DefinitionError, PatientError, Problem
from .._loading import load_patient, load_protocol
from .._machine import Protocol
from .._models import Event, Patient
from .._rules import RiskResult

from .context import _Context
from .records import Decision, ElementSpan, Plan
from .given import _Given, _Index
from .infusions import _Infusions
from .items import _ItemEvents
from .marks import _Marks
from .projection import _Projection
from .replay import _Replay

__all__ = ["plan", "risk"]

_DATE, _TYPE = attrgetter("date"), attrgetter("type")


class _Builder(_Replay, _Index, _Given, _ItemEvents, _Infusions, _Projection, _Marks):
    """Replays a patient's events, then projects the rest of the plan."""

    #: Replay recorded moves by triggering the ``transitions`` machine instead of the compiled
    #: table (the reference the table is tested against: ``tests/test_machine.py``).
    via_machine = False
    #: The reference path the fast one is tested against (``tests/test_schedule.py``): moves
    #: through the ``transitions`` machine, every item event through the general
    #: :meth:`_ItemEvents.adjust` on lists, overdue items marked in a second pass.
    reference = False
    #: Rows dated from this ordinal on may be left out (see :func:`plan_rows_before`).
    rows_before: int | None = None

    def __init__(self, protocol: Protocol, patient: Patient, as_of: dt.date, today: dt.date | None = None) -> None:
        self.p = protocol
        self.patient = patient
        self.as_of = as_of
        #: Nothing can have happened after this day (an entry dated after it is refused).
        self.today = dt.date.today() if today is None else today
        # Read from pydantic's private store in one look-up (the attribute path costs microseconds).
        private = patient.__pydantic_private__ or {}
        self.name = private.get("_source", "patient")
        self.doc = private.get("_lines")
        self.problems: list[Problem] = []
        self.warnings: list[str] = []
        self.elements: list[ElementSpan] = []
        self.rows: list[tuple[Any, ...]] = []
        self.decisions: list[Decision] = []
        self.outcome: tuple[str, dt.date] | None = None
        # The end of therapy is fixed from its anchor: the diagnosis date, the treatment start,
        # or (element_start) the start of an element, set when the plan reaches it.
        self.eot: int | None = None
        if protocol.eot_days is not None and protocol.eot_anchor != "element_start":
            eot_anchor = patient.diagnosis_date if protocol.eot_anchor == "diagnosis" else patient.start_date
            self.eot = self.eot_from(eot_anchor.toordinal())
        horizon = max(self.eot or 0, as_of.toordinal()) + 366
        self.ctx = _Context(protocol, patient, as_of.toordinal(), horizon)
        self.as_of_ord = as_of.toordinal()
        self.deviations: list[tuple[int, str, str, str, str]] = []  # (ordinal, element, item, kind, message)
        self.by_element: dict[str, list[tuple[int, Event]]] = {}  # events that adjust an element's items
        self.bag_hours: dict[str, tuple[int, int]] = {}  # element -> (event index, hours chosen)
        self.consumed: set[int] = set()
        self.mixed: set[str] = set()  # elements with recorded item events other than item_given
        # The events as columns, read once (each pass over the pydantic events costs alike).
        self.ev_types: list[str] = list(map(_TYPE, patient.events))
        self.ev_kinds: set[str] = set(self.ev_types)
        self.ev_dates: list[dt.date] = list(map(_DATE, patient.events))
        # Element -> (event indices, references, dates, any amount recorded) of its item_given
        # events, in date order, when they were indexed in bulk (see _Replay._index_given).
        self.given_cols: dict[str, tuple[list[int], list[str], list[dt.date], bool]] = {}
        self.dating: str | None = None  # why the element being emitted has placeholder-dependent dates
        self.end_reason: str | None = None  # why the last closed element's end depends on a placeholder
        self.adjusted = False
        self.counts = sorted((c for c in patient.counts if c.date <= as_of), key=_DATE) if patient.counts else []
        self._row_index: tuple[list[list[Any]] | None, dict[tuple[str, int], list[list[Any]]]] = (None, {})

    # -- problems -------------------------------------------------------------------


# --------------------------------------------------------------------------- entry point


def plan(patient: Patient | str | os.PathLike[str], protocol: Protocol | str | os.PathLike[str] | None = None,
         as_of: dt.date | None = None, today: dt.date | None = None) -> Plan:
    """Build a patient's dated plan.

    ``patient``: a :class:`Patient` or a path to a patient file. ``protocol``: a loaded
    :class:`Protocol`, a shipped id or a path; by default the one the patient file names.
    ``as_of``: only events and results recorded on or before this date count (default: today).
    ``today``: nothing may be dated after it (default: the real today; a simulation of future
    patients passes its own).

    Raises :class:`PatientError` or :class:`IneligibleError` (bad or inconsistent input) and
    :class:`DefinitionError` (bad protocol file).

    >>> p = plan("examples/patients/mr-on-time.yaml", as_of=dt.date(2025, 6, 1))  # doctest: +SKIP
    >>> [e.id for e in p.elements]  # doctest: +SKIP
    ['induction', 'blinatumomab', 'ib', 'marma', 'octadad', 'maintenance']
    """
    patient, protocol = _resolve(patient, protocol)
    if as_of is None:
        as_of = dt.date.today()
    return _Builder(protocol, patient, as_of, today).build()


def plan_rows_before(patient: Patient, protocol: Protocol | None, as_of: dt.date, before: dt.date) -> Plan:
    """:func:`plan`, except that rows no worklist lists are left out: those dated from
    ``before`` on (of an element whose recorded item events are all doses given, or with none;
    the others are made whole), and every row of a completed element with nothing recorded in
    it (all ``done``). For a reader of the plan's rows up to ``before`` that skips those done:
    the registry's worklist projection (a registry of patients in treatment has 60 % of its
    rows after a 7-day horizon, most of them in maintenance). Everything else (elements,
    decisions, deviations, every other row dated before ``before``) is the plan's
    (``tests/test_worklist.py`` holds it, and the worklist rows, equal to the full plan's);
    warnings about rows left out (an infant's per-m² dose after ``before``) may be missing.

    >>> plan_rows_before(patient, pr, day, day + dt.timedelta(days=7)).rows[-1][0] < day.toordinal() + 7  # doctest: +SKIP
    True
    """
    patient, protocol = _resolve(patient, protocol)
    builder = _Builder(protocol, patient, as_of, None)
    builder.rows_before = before.toordinal()
    return builder.build()


def risk(patient: Patient | str | os.PathLike[str], protocol: Protocol | str | os.PathLike[str] | None = None,
         as_of: dt.date | None = None) -> RiskResult:
    """Stratify a patient: eligibility first (raises :class:`IneligibleError`), then the risk
    group with the explanation of which rule matched.

    >>> risk("examples/patients/hr-to-hsct.yaml").group  # doctest: +SKIP
    'HR'
    """
    patient, protocol = _resolve(patient, protocol)
    builder = _Builder(protocol, patient, as_of or dt.date.today())
    _, result = builder.facts()
    if builder.problems:
        raise PatientError(builder.problems)
    return result


def _resolve(patient: Patient | str | os.PathLike[str],
             protocol: Protocol | str | os.PathLike[str] | None) -> tuple[Patient, Protocol]:
    if not isinstance(patient, Patient):
        patient = load_patient(patient)
    if protocol is None:
        try:
            protocol = load_protocol(patient.protocol)
        except DefinitionError as exc:
            doc = patient._lines
            raise PatientError(Problem(patient._source, "protocol", "; ".join(p.message for p in exc.problems)
                                       + f" (got {patient.protocol!r})",
                                       doc.line_of(("protocol",)) if doc is not None else None)) from None
    elif not isinstance(protocol, Protocol):
        protocol = load_protocol(protocol)
    name, _, version = patient.protocol.partition("@")
    if name != protocol.id or (version and version != protocol.version):
        raise PatientError(Problem(patient._source, "protocol", f"expected {protocol.id}"
                                   f"{'@' + protocol.version if version else ''} (the protocol being planned), "
                                   f"got {patient.protocol!r}"))
    return patient, protocol
