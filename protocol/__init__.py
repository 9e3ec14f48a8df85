"""protocol: paediatric leukaemia treatment protocols as data, and a patient's dated plan.

>>> import protocol
>>> p = protocol.plan("examples/patients/mr-on-time.yaml")   # doctest: +SKIP
>>> print(p.to_json())                                       # doctest: +SKIP
"""

from ._calendar import to_ics
from ._documents import render_pdf, render_roadmap
from ._errors import DefinitionError, IneligibleError, InputError, PatientError, Problem, ProtocolError
from ._fhir import fhir_json, to_fhir_care_plan, to_fhir_plan_definition
from ._loading import definition_schema, list_protocols, load_patient, load_protocol, patient_schema
from ._machine import Protocol
from ._models import Patient, ProtocolDefinition
from ._rules import RiskResult
from ._schedule import Decision, DoseResult, ElementSpan, Item, Plan, mosteller, plan

__all__ = [
    "Decision",
    "DefinitionError",
    "DoseResult",
    "ElementSpan",
    "IneligibleError",
    "InputError",
    "Item",
    "Patient",
    "PatientError",
    "Plan",
    "Problem",
    "Protocol",
    "ProtocolDefinition",
    "ProtocolError",
    "RiskResult",
    "definition_schema",
    "fhir_json",
    "list_protocols",
    "load_patient",
    "load_protocol",
    "mosteller",
    "patient_schema",
    "plan",
    "render_pdf",
    "render_roadmap",
    "to_fhir_care_plan",
    "to_fhir_plan_definition",
    "to_ics",
]

__version__ = "0.1.0"
