"""inferno.loss: the INFERNO loss on an analysis' statistical model.

    >>> from inferno.loss import Analysis, Process, inferno_loss
"""
from .analysis import Analysis, Process
from .callback import InfernoLoss
from .fisher import FisherError, LOSS_KINDS, asimov_fisher, poi_loss
from .pure import inferno_loss, soft_outputs_check

__all__ = ["Analysis", "Process", "inferno_loss", "InfernoLoss", "soft_outputs_check", "poi_loss", "asimov_fisher", "FisherError",
           "LOSS_KINDS"]
