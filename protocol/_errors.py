"""The exceptions the library raises on purpose.

    ProtocolError                 base of everything below
    ├── InputError                bad input; the CLI exits with code 2 and prints the problems
    │   ├── DefinitionError       a protocol definition file is invalid
    │   ├── PatientError          a patient file is invalid, or inconsistent with its protocol
    │   ├── IneligibleError       the patient does not meet the protocol's eligibility rules
    │   ├── CohortError           a cohort specification file is invalid, or does not fit its protocol
    │   └── RegistryError         a registry request cannot be done (unknown patient, database in use...)
    └── (any other exception is an internal error: the CLI exits with code 1)

Every ``InputError`` carries one or more :class:`Problem` records, each naming the
file, the field (as a path such as ``measurements[0].weight_kg``), what was expected
and what was received, so a message reads::

    patient.yaml:14: measurements[0].weight_kg: expected a number > 0, got -4
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CohortError",
    "DefinitionError",
    "IneligibleError",
    "InputError",
    "PatientError",
    "Problem",
    "ProtocolError",
    "RegistryError",
]


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with one field of one input.

    Example::

        Problem("patient.yaml", "measurements[0].weight_kg",
                "expected a number > 0, got -4", line=14)
    """

    file: str
    field: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return ": ".join(part for part in (where, self.field, self.message) if part)


class ProtocolError(Exception):
    """Base class of every error this library raises on purpose."""


class InputError(ProtocolError):
    """Bad input: a file, a field or an argument is not what was expected.

    ``problems`` lists every problem found (validation reports all of them at once,
    not only the first).
    """

    def __init__(self, problems: list[Problem] | Problem | str) -> None:
        if isinstance(problems, str):
            problems = [Problem("", "", problems)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems: list[Problem] = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class DefinitionError(InputError):
    """A protocol definition file is malformed or internally inconsistent."""


class PatientError(InputError):
    """A patient file is malformed, or its facts contradict its protocol."""


class IneligibleError(InputError):
    """The patient does not meet the protocol's eligibility rules (reasons in ``problems``)."""


class CohortError(InputError):
    """A cohort specification file is malformed or does not fit its protocol."""


class RegistryError(InputError):
    """A registry request that cannot be done: the database cannot be opened or written
    (permissions, another writer holding it too long), or a newer release made it."""
