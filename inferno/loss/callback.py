"""The INFERNO loss as a :class:`~inferno.ModelWrapper` callback: a thin adapter over
:func:`~inferno.loss.inferno_loss`.

    wrapper.fit(n_epochs, data, opt, loss=None, cbs=[InfernoLoss(analysis)])

The batch's targets ``y`` are the process labels; its weights ``w`` the event weights; per-event
weight variations (for :class:`~inferno.nuisance.WeightNuisance`) come from the batch's
``extras`` (the named columns of a :class:`~inferno.data.DataSet`). The callback sets
``wrapper.loss_val`` in the training and validation phases. For a plain ``nn.Sequential`` it
records the activations of the loop's own forward pass (forward hooks, installed at the start
of ``fit`` and removed at its end, whatever happens), which the tangents of the shape
nuisances reuse; a transform that is not the identity at its nominal value is applied to the
batch before the forward pass (and the loader's inputs are given back after the loss).
"""
from __future__ import annotations

from typing import Callable, Dict, Optional

from torch import Tensor, nn

from ..training.callbacks import AbsCallback
from .analysis import Analysis
from .checks import _check_batch
from .pure import _loss
from .tangents import Recorder, leaves_of

__all__ = ["InfernoLoss"]

_TANGENTS = ("auto", "layers", "forward")


class InfernoLoss(AbsCallback):
    """Sets ``wrapper.loss_val`` to the INFERNO loss of ``analysis`` on every batch.

    Args:
        analysis: the :class:`~inferno.loss.Analysis`.
        tangents: how the tangents of the transform nuisances reach the outputs: ``'auto'``
            (layer by layer over the recorded activations of a plain ``nn.Sequential``, with
            the fused node of :mod:`inferno.loss.tangents` where the layers allow; else forward
            mode through the whole network); ``'layers'``: layer by layer, every rule through
            autograd (exact higher derivatives, e.g. for a gradient penalty; an error for a
            model that is not a plain ``nn.Sequential``); ``'forward'``: forward mode through
            the whole network, recomputing its primal (for comparisons).
        reduce: a differentiable sum over the shards of a global batch, for data-parallel
            training (e.g. :func:`inferno.distributed.global_sum`; see
            :func:`~inferno.loss.inferno_loss`); None: the batch is the whole batch.

    Attributes:
        last_fisher: the Fisher information of the latest batch (detached), and
            ``param_names`` its parameters.
    """

    def __init__(self, analysis: Analysis, tangents: str = "auto", reduce: Optional[Callable[[Tensor], Tensor]] = None):
        if not isinstance(analysis, Analysis):
            raise ValueError(f"InfernoLoss needs an inferno.loss.Analysis, got {type(analysis).__name__}")
        if tangents not in _TANGENTS:
            raise ValueError(f"tangents must be one of {_TANGENTS}, got {tangents!r}")
        self.analysis = analysis
        self.tangent_mode = tangents
        self.reduce = reduce
        self.last_fisher: Optional[Tensor] = None
        self.param_names = analysis.names
        self._recorder: Optional[Recorder] = None
        self._saved = None

    def on_train_begin(self) -> None:
        if self.wrapper.loss_func is not None:
            raise ValueError(f"{type(self).__name__} computes the loss itself: call fit with loss=None")
        self._install()

    def _install(self) -> None:
        self._release()
        layers = leaves_of(self.wrapper.model) is not None
        if self.tangent_mode == "layers" and not layers:
            raise ValueError(f"tangents='layers' needs a plain nn.Sequential model, got {type(self.wrapper.model).__name__}; "
                             "use tangents='auto'")
        if layers and self.tangent_mode != "forward" and self.analysis._transforms:
            self._recorder = Recorder(self.wrapper.model)

    def _release(self) -> None:
        if self._recorder is not None:
            self._recorder.remove()
            self._recorder = None

    def on_teardown(self) -> None:  # after a successful fit or an error: the hooks go
        self._release()

    def on_batch_begin(self) -> None:
        wr = self.wrapper
        if wr.state not in ("train", "valid"):
            return
        self._saved = None
        if wr.y is None:
            return
        an = self.analysis
        if self._recorder is not None:
            self._recorder.arm()
        if not an._identity:
            self._saved = wr.x
            wr.x = an._nominal_inputs(wr.x, wr.y.reshape(-1).long())

    def on_forwards_end(self) -> None:
        wr = self.wrapper
        if wr.state not in ("train", "valid"):
            return
        if wr.y is None:
            raise ValueError(f"{type(self).__name__} needs the process label of every event as the targets y")
        try:
            labels, w = _check_batch(wr.x, wr.y, wr.w)
            calls = None if self._recorder is None else self._recorder.collect(wr.y_pred, wr.x)
            if self.tangent_mode == "layers" and calls is None and self.analysis._transforms:
                raise ValueError("tangents='layers': the recorded activations do not match the network output "
                                 "(was the model called on wrapper.x, once?)")
            extras = getattr(wr, "extras", None) or {}
            loss, fisher, _ = _loss(self.analysis, wr.model, wr.x, labels, w, dict(extras), wr.y_pred, calls, True,
                                    fused=self.tangent_mode == "auto", reduce=self.reduce)
        finally:
            self._give_back()
        self.last_fisher = fisher.detach()
        wr.loss_val = loss

    def _give_back(self) -> None:
        """The loader's inputs back (a transform not the identity at its nominal value changed them)."""
        if self._saved is not None:
            self.wrapper.x, self._saved = self._saved, None

    def loss_on(self, model: nn.Module, x: Tensor, y: Tensor, w: Optional[Tensor] = None,
                extras: Optional[Dict[str, Tensor]] = None) -> Tensor:
        """The loss of ``model`` on one batch, outside a training loop (e.g. to evaluate a
        trained network), as this callback computes it in ``fit``; the callback's state in a
        training loop is left as it was (``last_fisher`` is this batch's)."""
        from ..training.wrapper import ModelWrapper

        wr = ModelWrapper(model)
        saved = dict(self.__dict__)
        self._recorder = None
        self.set_wrapper(wr)
        wr.x, wr.y, wr.w, wr.state = x.to(wr.device), y.to(wr.device), None if w is None else w.to(wr.device), "valid"
        wr.extras = {k: v.to(wr.device) for k, v in (extras or {}).items()}
        try:
            self._install()
            self.on_batch_begin()
            wr.y_pred = model(wr.x)
            self.on_forwards_end()
            return wr.loss_val
        finally:
            self._release()
            fisher = self.last_fisher
            self.__dict__.clear()
            self.__dict__.update(saved)
            self.last_fisher = fisher

    def __repr__(self) -> str:
        return f"InfernoLoss({self.analysis!r})"
