"""protocol: paediatric leukaemia treatment protocols as data, and a patient's dated plan.

>>> import protocol
>>> p = protocol.plan("examples/patients/mr-on-time.yaml")   # doctest: +SKIP
>>> print(p.to_json())                                       # doctest: +SKIP
"""

from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

# The public API, by name and module. Modules are imported on first use (PEP 562), so
# `import protocol` and `protocol --help` stay fast while the API stays flat.
_EXPORTS = {
    "Cohort": "_cohort",
    "CohortError": "_cohort",
    "Decision": "schedule",
    "DefinitionDiff": "_diff",
    "DefinitionError": "_errors",
    "DoseResult": "schedule",
    "ElementSpan": "schedule",
    "IneligibleError": "_errors",
    "InputError": "_errors",
    "Item": "schedule",
    "PathReport": "_paths",
    "Patient": "_models",
    "PatientError": "_errors",
    "Plan": "schedule",
    "Problem": "_errors",
    "Protocol": "_machine",
    "ProtocolDefinition": "_models",
    "ProtocolError": "_errors",
    "Registry": "_registry",
    "RiskResult": "_rules",
    "SimulationResult": "_simulate",
    "Worklist": "_worklist",
    "definition_schema": "_loading",
    "diff_definitions": "_diff",
    "diff_protocols": "_diff",
    "fhir_json": "_fhir",
    "list_protocols": "_loading",
    "load_cohort": "_cohort",
    "load_patient": "_loading",
    "load_protocol": "_loading",
    "mosteller": "schedule",
    "open_registry": "_registry",
    "paths": "_paths",
    "patient_schema": "_loading",
    "plan": "schedule",
    "render_pdf": "_documents",
    "render_roadmap": "_documents",
    "simulate": "_simulate",
    "to_fhir_care_plan": "_fhir",
    "to_fhir_plan_definition": "_fhir",
    "to_ics": "_calendar",
    "worklist": "_registry",
}

__all__ = [
    "Cohort",
    "CohortError",
    "Decision",
    "DefinitionDiff",
    "DefinitionError",
    "DoseResult",
    "ElementSpan",
    "IneligibleError",
    "InputError",
    "Item",
    "PathReport",
    "Patient",
    "PatientError",
    "Plan",
    "Problem",
    "Protocol",
    "ProtocolDefinition",
    "ProtocolError",
    "Registry",
    "RiskResult",
    "SimulationResult",
    "Worklist",
    "definition_schema",
    "diff_definitions",
    "diff_protocols",
    "fhir_json",
    "list_protocols",
    "load_cohort",
    "load_patient",
    "load_protocol",
    "mosteller",
    "open_registry",
    "paths",
    "patient_schema",
    "plan",
    "render_pdf",
    "render_roadmap",
    "simulate",
    "to_fhir_care_plan",
    "to_fhir_plan_definition",
    "to_ics",
    "worklist",
]

__version__ = "0.1.0"


def __getattr__(name: str) -> _Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'protocol' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


if _TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from ._calendar import to_ics
    from ._cohort import Cohort, CohortError, load_cohort
    from ._documents import render_pdf, render_roadmap
    from ._diff import DefinitionDiff, diff_definitions, diff_protocols
    from ._errors import DefinitionError, IneligibleError, InputError, PatientError, Problem, ProtocolError
    from ._fhir import fhir_json, to_fhir_care_plan, to_fhir_plan_definition
    from ._loading import definition_schema, list_protocols, load_patient, load_protocol, patient_schema
    from ._machine import Protocol
    from ._models import Patient, ProtocolDefinition
    from ._paths import PathReport, paths
    from ._registry import Registry, open_registry, worklist
    from ._rules import RiskResult
    from .schedule import Decision, DoseResult, ElementSpan, Item, Plan, mosteller, plan
    from ._simulate import SimulationResult, simulate
    from ._worklist import Worklist
