"""Compatibility: the module pytorch_inferno users import the INFERNO callbacks from. The
two-process callbacks are builders over the one loss (:mod:`inferno.compat`), the paper's
set-ups live in :mod:`inferno.paper.callbacks`, ``VariableSoftmax`` in :mod:`inferno.nn`."""
from .two_process import ApproxInferno, Inferno, InfernoPred
from ..nn import VariableSoftmax
from ..paper.callbacks import ApproxPaperInferno, PaperInferno, paper_inferno

__all__ = ["VariableSoftmax", "Inferno", "ApproxInferno", "PaperInferno", "ApproxPaperInferno",
           "paper_inferno", "InfernoPred"]
