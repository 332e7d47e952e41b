"""inferno.loss: the INFERNO loss.

* :class:`Analysis` / :func:`inferno_loss` / :class:`InfernoLoss`: the loss on an analysis'
  statistical model (any number of processes, every kind of systematic, control regions, MC
  statistics, several POIs), as a pure function and as a callback;
* :class:`Inferno` (exact) / :class:`ApproxInferno` (interpolated): the two-process
  (signal/background) callbacks of pytorch_inferno, with the fused fast path of the paper's
  problem (:mod:`inferno.loss.fused`, :mod:`inferno.loss.tangents`);
* :class:`InfernoPred`: the argmax bin of every event.

    >>> from inferno.loss import Analysis, Process, inferno_loss
"""
from .analysis import Analysis, Process
from .approx import ApproxInferno
from .base import InfernoPred
from .exact import Inferno
from .callback import InfernoLoss
from .fisher import FisherError, LOSS_KINDS, asimov_fisher, poi_loss
from .pure import inferno_loss, soft_outputs_check

__all__ = ["Analysis", "Process", "inferno_loss", "InfernoLoss", "Inferno", "ApproxInferno", "InfernoPred", "soft_outputs_check", "poi_loss", "asimov_fisher", "FisherError",
           "LOSS_KINDS"]
