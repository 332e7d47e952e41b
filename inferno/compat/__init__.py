"""The pytorch_inferno-style names, as thin builders over the package's one design.

* :class:`Inferno`, :class:`ApproxInferno`, :class:`InfernoPred`: the two-process INFERNO
  callbacks over :class:`~inferno.loss.Analysis` and :func:`~inferno.loss.inferno_loss`
  (:mod:`inferno.compat.two_process`); the paper's versions, :class:`~inferno.PaperInferno`
  and :class:`~inferno.ApproxPaperInferno`, live with the paper (:mod:`inferno.paper`).

They stay importable where users import them (``from inferno import Inferno``).
"""
from .two_process import ApproxInferno, Inferno, InfernoPred

__all__ = ["Inferno", "ApproxInferno", "InfernoPred"]
