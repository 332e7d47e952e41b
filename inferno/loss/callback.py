"""The INFERNO loss as a :class:`~inferno.ModelWrapper` callback: a thin adapter over
:func:`~inferno.loss.inferno_loss`.

    wrapper.fit(n_epochs, data, opt, loss=None, cbs=[InfernoLoss(analysis)])

The batch's targets ``y`` are the process labels; its weights ``w`` the event weights; per-event
weight variations (for :class:`~inferno.nuisance.WeightNuisance`) come from the batch's
``extras`` (the named columns of a :class:`~inferno.data.DataSet`). The callback sets
``wrapper.loss_val`` in the training and validation phases and keeps no state between batches.
"""
from __future__ import annotations

from typing import Optional

from torch import Tensor

from ..callback import AbsCallback
from .analysis import Analysis
from .pure import inferno_loss

__all__ = ["InfernoLoss"]


class InfernoLoss(AbsCallback):
    """Sets ``wrapper.loss_val`` to the INFERNO loss of ``analysis`` on every batch.

    Attributes:
        last_fisher: the Fisher information of the latest batch (detached), and
            ``param_names`` its parameters.
    """

    def __init__(self, analysis: Analysis):
        if not isinstance(analysis, Analysis):
            raise ValueError(f"InfernoLoss needs an inferno.loss.Analysis, got {type(analysis).__name__}")
        self.analysis = analysis
        self.last_fisher: Optional[Tensor] = None
        self.param_names = analysis.names

    def on_train_begin(self) -> None:
        if self.wrapper.loss_func is not None:
            raise ValueError("InfernoLoss computes the loss itself: call fit with loss=None")

    def on_forwards_end(self) -> None:
        wr = self.wrapper
        if wr.state not in ("train", "valid"):
            return
        if wr.y is None:
            raise ValueError("InfernoLoss needs the process label of every event as the targets y")
        extras = getattr(wr, "extras", None) or {}
        loss, fisher, _ = inferno_loss(self.analysis, wr.model, wr.x, wr.y.reshape(-1).long(), wr.w,
                                       weights=extras, outputs=wr.y_pred, return_fisher=True)
        self.last_fisher = fisher.detach()
        wr.loss_val = loss

    def __repr__(self) -> str:
        return f"InfernoLoss({self.analysis!r})"
