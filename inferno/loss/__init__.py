"""inferno.loss: the one INFERNO loss.

* :class:`Analysis` / :class:`Process`: what the loss optimises, the statistical model of the
  measurement with one learned channel (any number of processes, every kind of systematic,
  control regions, MC statistics, several POIs);
* :func:`inferno_loss` (a pure function, for any training loop) and :class:`InfernoLoss`
  (the :class:`~inferno.ModelWrapper` callback);
* :mod:`inferno.loss.tangents`: the nuisances' derivatives through the network;
  :mod:`inferno.loss.fisher`: the POI block of the inverse Fisher information.

The pytorch_inferno-style two-process callbacks (``Inferno``, ``ApproxInferno``,
``InfernoPred``) are builders over this loss in :mod:`inferno.compat`, and stay importable
from here.

    >>> from inferno.loss import Analysis, Process, inferno_loss
"""
from .analysis import Analysis, Process
from .callback import InfernoLoss
from .fisher import FisherError, LOSS_KINDS, asimov_fisher, poi_loss
from .checks import soft_outputs_check
from .pure import batch_templates, inferno_loss
from .tangents import stage_tangents

__all__ = ["Analysis", "Process", "inferno_loss", "InfernoLoss", "Inferno", "ApproxInferno", "InfernoPred",
           "batch_templates", "soft_outputs_check", "stage_tangents", "poi_loss", "asimov_fisher", "FisherError", "LOSS_KINDS"]


def __getattr__(name: str):  # the compatibility names, imported on first use (no import cycle)
    if name in ("Inferno", "ApproxInferno", "InfernoPred"):
        from .. import compat

        return getattr(compat, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
