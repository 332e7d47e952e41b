"""Compatibility: the INFERNO callbacks now live in :mod:`inferno.loss` (the general loss on an
analysis' model, and the two-process callbacks ``Inferno`` / ``ApproxInferno`` with their fused
fast path), :mod:`inferno.nn` (``VariableSoftmax``) and :mod:`inferno.paper.callbacks` (the
paper's set-ups); this module re-exports the names pytorch_inferno users import."""
from .loss.approx import ApproxInferno
from .loss.base import InfernoPred
from .loss.exact import Inferno
from .nn import VariableSoftmax
from .paper.callbacks import ApproxPaperInferno, PaperInferno, paper_inferno

__all__ = ["VariableSoftmax", "Inferno", "ApproxInferno", "PaperInferno", "ApproxPaperInferno",
           "paper_inferno", "InfernoPred"]
