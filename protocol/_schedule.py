"""Compatibility module: the scheduler lives in the :mod:`protocol.schedule` package (one
module per stage). Kept so ``protocol._schedule`` imports keep working."""

from ._dose import DoseResult, ModifiedDose, fmt_amount, mosteller
from .schedule.builder import _Builder, plan, risk
from .schedule.common import _ADJUSTING, _Open
from .schedule.context import WEIGHT_CHANGE, _Context
from .schedule.records import LEGEND, Decision, ElementSpan, Item, Plan

__all__ = ["Decision", "DoseResult", "ElementSpan", "Item", "Plan", "mosteller", "plan", "risk"]
_REEXPORTED = (ModifiedDose, fmt_amount, _Builder, _ADJUSTING, _Open, WEIGHT_CHANGE, _Context, LEGEND)
