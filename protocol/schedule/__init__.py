"""A patient's dated plan: replay what happened, project the rest, compute the doses.

The pipeline for one patient:

1. facts from the patient file (results recorded up to ``as_of``), derived facts
   (prednisone response from the day-8 blast count), eligibility, risk group;
2. replay of the recorded events through the protocol's shared ``transitions`` machine,
   which rejects what the protocol does not allow (e.g. HSCT when its rule is false);
3. projection of the remaining elements on the compiled transition table; a decision whose
   guard is *unknown* is reported as pending and every possible branch is projected;
4. items: each element's day template walked on integer ordinals, with doses computed once
   per element and per change of the inputs (a new measurement, a birthday), not per item.

Dates are ``datetime.date`` only at the edges (``Item.date``, JSON, documents).

The stages are modules of this package, each small enough to read in one sitting:
:mod:`.replay` (recorded element events), :mod:`.given` (item events grouped by element, and
doses given as planned applied in bulk), :mod:`.items` (every other item event), :mod:`.infusions`
(holds, interruptions, bags), :mod:`.projection` (the rest of the plan), :mod:`.marks` (overdue
items, the infant-dose warning), composed by :mod:`.builder`; :mod:`.records` holds what a plan is made of, :mod:`.context` the per-patient
inputs on integer days.
"""

from .._dose import DoseResult, mosteller
from .builder import plan, plan_rows_before, risk
from .records import Decision, ElementSpan, Item, Plan

__all__ = ["Decision", "DoseResult", "ElementSpan", "Item", "Plan", "mosteller", "plan", "plan_rows_before", "risk"]
