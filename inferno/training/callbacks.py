"""Callbacks: objects whose hooks :class:`~inferno.ModelWrapper` fires during fit and predict.

Every callback sees the whole training state through ``self.wrapper`` (``x``, ``y``, ``w``,
``y_pred``, ``loss_val``, ``loss_func``, ``state``, ``epoch``, ``n_epochs``, ``stop``,
``model``, ``opt``, ``data``, ``cbs``) and may change it.

Hook order in ``fit``::

    on_train_begin
    for each epoch:  for state in ('train', 'valid'):
        on_epoch_begin
        for each batch:
            on_batch_begin -> forward -> on_forwards_end
            (train only) on_backwards_begin -> backward -> on_backwards_end -> step
            on_batch_end
        on_epoch_end
        after_epoch    (once per epoch, after the last phase: state complete, e.g. checkpoints)
    on_train_end   (or, when anything after on_train_begin raises: on_exception(exc), then the error)
    on_teardown    (always, last: release hooks and resources)

and in ``predict``: ``on_pred_begin``, then per batch ``on_batch_begin`` -> forward ->
``on_forwards_end`` -> ``on_batch_end``, then ``on_pred_end``.

Callbacks that keep state across epochs return it from ``state_dict()`` and take it back in
``load_state_dict()``; :meth:`ModelWrapper.save_checkpoint` stores it, and
``ModelWrapper.fit(..., resume_from=path)`` restores it after ``on_train_begin``.
"""
from __future__ import annotations

import copy
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Union

import numpy as np
import torch

if TYPE_CHECKING:  # pragma: no cover
    from .wrapper import ModelWrapper

__all__ = ["AbsCallback", "LossTracker", "EarlyStopping", "SaveBest", "KeepBest", "Checkpoint", "PredHandler",
           "GradClip", "ProgressBar", "LRScheduler", "OneCycle"]


class AbsCallback:
    """Base class: every hook is a no-op.

    Attributes:
        wrapper: the :class:`~inferno.ModelWrapper` driving the loop (set by it).
        requires_grad_in_valid: set True in a callback that needs autograd during the
            validation phase (the INFERNO loss differentiates with respect to nuisance
            parameters there); otherwise validation runs under ``torch.no_grad()``.
    """

    requires_grad_in_valid: bool = False
    wrapper: "ModelWrapper"

    def set_wrapper(self, wrapper: "ModelWrapper") -> None:
        self.wrapper = wrapper

    def on_train_begin(self) -> None: ...
    def on_epoch_begin(self) -> None: ...
    def on_batch_begin(self) -> None: ...
    def on_forwards_end(self) -> None: ...
    def on_backwards_begin(self) -> None: ...
    def on_backwards_end(self) -> None: ...
    def on_batch_end(self) -> None: ...
    def on_epoch_end(self) -> None: ...
    def on_train_end(self) -> None: ...
    def on_pred_begin(self) -> None: ...
    def on_pred_end(self) -> None: ...

    def on_exception(self, exc: BaseException) -> None:
        """``fit`` failed (or was interrupted) with ``exc`` after ``on_train_begin``; the error
        is raised again after every callback has seen it."""

    def on_teardown(self) -> None:
        """The end of every ``fit`` that passed ``on_train_begin``, successful or not (after
        ``on_train_end`` or ``on_exception``): release hooks and other resources here."""

    def after_epoch(self) -> None:
        """Once per epoch, after every callback's ``on_epoch_end`` of the epoch's last phase
        (validation, or training without a validation set) and before training stops: the
        training state is then complete (losses tracked, schedulers stepped, counters
        updated), which is when :class:`Checkpoint` writes."""

    def state_dict(self) -> Dict[str, Any]:
        """The callback's state to put in a checkpoint (plain Python values and tensors);
        empty by default (a stateless callback)."""
        return {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (called on resume, after
        ``on_train_begin``)."""


class LossTracker(AbsCallback):
    r"""Per-epoch training and validation loss history, kept in ``losses``.

    The epoch value is :math:`\sum_b \ell_b W_b / \sum_b W_b` over batches ``b``, where
    :math:`W_b` is ``wrapper.loss_weight`` for that batch: the summed event weights (or the
    number of events) when the loss is a (weighted) average computed by ``loss_func``, and 1
    when a callback sets the loss itself (e.g. INFERNO's, which is not an average over events).
    The result is then exactly the average over the epoch's events, whatever the batch sizes.
    Sums are kept as tensors so no device synchronisation happens per batch.
    """

    def __init__(self) -> None:
        self.losses: Dict[str, List[float]] = {"train": [], "valid": []}

    def on_train_begin(self) -> None:
        self.losses = {"train": [], "valid": []}

    def on_epoch_begin(self) -> None:
        self._sum: Union[float, torch.Tensor] = 0.0
        self._norm: Union[float, torch.Tensor] = 0.0

    def on_batch_end(self) -> None:
        wr = self.wrapper
        if wr.loss_val is None:
            return
        wt = wr.loss_weight
        self._sum = self._sum + wr.loss_val.detach().to(torch.float64) * wt
        self._norm = self._norm + wt

    def on_epoch_end(self) -> None:
        if isinstance(self._norm, float) and self._norm == 0.0:
            val = math.nan
        else:
            val = float(self._sum / self._norm)
        self.losses[self.wrapper.state].append(val)

    def state_dict(self) -> Dict[str, Any]:
        return {"losses": {k: list(v) for k, v in self.losses.items()}}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.losses = {k: [float(x) for x in v] for k, v in state["losses"].items()}

    @property
    def last(self) -> Optional[float]:
        """The latest validation loss (training loss when there is no validation set)."""
        for k in ("valid", "train"):
            if self.losses[k]:
                return self.losses[k][-1]
        return None


class EarlyStopping(AbsCallback):
    """Stop training when the validation loss has not improved for ``patience`` epochs.

    Reads the loss history from ``wrapper.loss_tracker``. ``min_delta``: improvement needed
    to count as one.
    """

    def __init__(self, patience: int, min_delta: float = 0.0):
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        self.patience, self.min_delta = int(patience), float(min_delta)

    def on_train_begin(self) -> None:
        self.best, self.epochs_since_best = math.inf, 0

    def on_epoch_end(self) -> None:
        if not self._is_last_phase():
            return
        loss = self.wrapper.loss_tracker.last
        if loss is not None and loss < self.best - self.min_delta:
            self.best, self.epochs_since_best = loss, 0
        else:
            self.epochs_since_best += 1
            if self.epochs_since_best >= self.patience:
                self.wrapper.stop = True

    def state_dict(self) -> Dict[str, Any]:
        return {"best": float(self.best), "epochs_since_best": int(self.epochs_since_best)}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.best, self.epochs_since_best = float(state["best"]), int(state["epochs_since_best"])

    def _is_last_phase(self) -> bool:
        wr = self.wrapper
        return wr.state == "valid" or wr.data.val_dl is None


def _check_writable(p: Path, who: str) -> None:
    """Raise if a file could not be written at ``p`` (a folder; a missing or read-only folder)."""
    parent = p.parent
    if p.is_dir():
        raise IsADirectoryError(f"{who}: {p} is a folder; give the checkpoint's file name, "
                                f"e.g. {p / 'best.pt'}")
    if not parent.is_dir():
        raise FileNotFoundError(f"{who}: the folder {parent} of the checkpoint {p} does not "
                                "exist; create it before training")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"{who}: the folder {parent} of the checkpoint {p} is not writable")


class SaveBest(AbsCallback):
    """Save the model whenever the validation loss reaches a new minimum.

    Args:
        path: checkpoint file (written atomically through :meth:`ModelWrapper.save`).
        auto_reload: at the end of training, load the best checkpoint back into the model.

    The path is checked when training starts, before the first batch (:meth:`check_path`).

    Raises:
        FileNotFoundError: the folder of ``path`` does not exist.
        IsADirectoryError: ``path`` is a folder.
        PermissionError: the folder of ``path`` is not writable.
    """

    def __init__(self, path: Union[str, Path], auto_reload: bool = True):
        self.path, self.auto_reload = Path(path), auto_reload

    def check_path(self) -> None:
        """Raise now if the checkpoint could not be written (see the class docstring)."""
        _check_writable(self.path, "SaveBest")

    def on_train_begin(self) -> None:
        self.check_path()
        self.best = math.inf
        self.best_epoch: Optional[int] = None

    def on_epoch_end(self) -> None:
        wr = self.wrapper
        if not (wr.state == "valid" or wr.data.val_dl is None):
            return
        loss = wr.loss_tracker.last
        if loss is not None and loss < self.best:
            self.best, self.best_epoch = loss, wr.epoch
            wr.save(self.path)

    def on_train_end(self) -> None:
        if self.auto_reload and self.best_epoch is not None:
            self.wrapper.load(self.path)

    def state_dict(self) -> Dict[str, Any]:
        return {"best": float(self.best), "best_epoch": self.best_epoch}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.best = float(state["best"])
        self.best_epoch = None if state["best_epoch"] is None else int(state["best_epoch"])


class Checkpoint(AbsCallback):
    """Write the full training state every ``every`` epochs (and after the last epoch), for
    ``ModelWrapper.fit(..., resume_from=path)``.

    The checkpoint (:meth:`ModelWrapper.save_checkpoint`) holds the model, the optimiser,
    the epoch, the random number generators (torch, CUDA when used, numpy, Python's
    ``random``, the loaders' shuffling generators) and the state of every callback (loss
    history, early-stopping counters, the best value of :class:`SaveBest`, learning-rate
    schedulers). It is written atomically once every callback has finished the epoch
    (:meth:`AbsCallback.after_epoch`), so a resumed training continues exactly.

    Args:
        path: the checkpoint file, overwritten each time; a ``{epoch}`` in it keeps one file
            per epoch (e.g. ``"ckpt_{epoch:03d}.pt"``).
        every: write every ``every`` epochs (>= 1); the epoch at which training ends (its last
            one, or an early stop) is always written.

    Attributes:
        last_path: the latest file written (None before the first).

    Raises:
        ValueError: ``every`` is not an integer >= 1.
        FileNotFoundError, IsADirectoryError, PermissionError: when training starts, if the
            checkpoint could not be written.
    """

    def __init__(self, path: Union[str, Path], every: int = 1):
        from ..data.dataset import _check_count
        self.path = str(path)
        self.every = _check_count(every, "every")
        self.last_path: Optional[Path] = None

    def _path(self, epoch: int) -> Path:
        return Path(self.path.format(epoch=epoch)) if "{epoch" in self.path else Path(self.path)

    def on_train_begin(self) -> None:
        _check_writable(self._path(0), "Checkpoint")

    def after_epoch(self) -> None:
        wr = self.wrapper
        if wr.epoch % self.every == 0 or wr.epoch >= wr.n_epochs or wr.stop:
            self.last_path = self._path(wr.epoch)
            wr.save_checkpoint(self.last_path)

    def __repr__(self) -> str:
        return f"Checkpoint({self.path!r}, every={self.every})"


class PredHandler(AbsCallback):
    """Collects the model outputs during ``predict``; ``get_preds()`` returns them as numpy.

    Subclasses transform the output in :meth:`process` (e.g. argmax for INFERNO).
    """

    def on_pred_begin(self) -> None:
        self.preds: List[torch.Tensor] = []

    def process(self, y_pred: torch.Tensor) -> torch.Tensor:
        return y_pred

    def on_forwards_end(self) -> None:
        if self.wrapper.state == "test":
            self.preds.append(self.process(self.wrapper.y_pred.detach()))

    def get_preds(self) -> np.ndarray:
        return torch.cat(self.preds).cpu().numpy()


class GradClip(AbsCallback):
    """Clip gradients after the backward pass: by total norm (``clip_norm``) or by value."""

    def __init__(self, clip: float, clip_norm: bool = True):
        if not clip > 0:
            raise ValueError(f"clip must be > 0, got {clip}")
        self.clip, self.clip_norm = float(clip), clip_norm

    def on_backwards_end(self) -> None:
        params = self.wrapper.model.parameters()
        if self.clip_norm:
            torch.nn.utils.clip_grad_norm_(params, self.clip)
        else:
            torch.nn.utils.clip_grad_value_(params, self.clip)




def _ci() -> bool:
    """True in continuous integration (the environment variable ``CI`` set, not to false)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


class ProgressBar(AbsCallback):
    """Progress of training: a tqdm bar over the epochs showing the latest losses and, inside
    an epoch that lasts longer than ``batch_delay`` seconds, a bar over its batches.

    :meth:`ModelWrapper.fit` adds one by default (``progress=True``). It shows only in an
    interactive terminal: it is quiet when ``quiet=True``, when stderr is not a terminal (a
    log file, a pipe, a notebook), in continuous integration (environment variable ``CI``
    set) or when the environment variable ``INFERNO_QUIET`` is set.

    Args:
        quiet: never show.
        batch_delay: seconds an epoch must last before its per-batch bar appears.
    """

    def __init__(self, quiet: bool = False, batch_delay: float = 2.0):
        self.quiet, self.batch_delay = quiet, float(batch_delay)
        self.bar = self.batch_bar = None

    def _enabled(self) -> bool:
        return not (self.quiet or os.environ.get("INFERNO_QUIET") or _ci() or not sys.stderr.isatty())

    def on_train_begin(self) -> None:
        self.bar = self.batch_bar = None
        if self._enabled():
            from tqdm.auto import tqdm
            self._tqdm = tqdm
            self.bar = tqdm(total=self.wrapper.n_epochs, initial=self.wrapper.epoch, desc="epochs", leave=False)

    def on_epoch_begin(self) -> None:
        wr = self.wrapper
        if self.bar is None:
            return
        dl = wr.data.trn_dl if wr.state == "train" else wr.data.val_dl
        self.batch_bar = self._tqdm(total=len(dl), desc=f"epoch {wr.epoch} {wr.state} batches",
                                    leave=False, delay=self.batch_delay)

    def on_batch_end(self) -> None:
        if self.batch_bar is not None:
            self.batch_bar.update(1)

    def on_epoch_end(self) -> None:
        wr = self.wrapper
        if self.batch_bar is not None:
            self.batch_bar.close()
            self.batch_bar = None
        if self.bar is None or not (wr.state == "valid" or wr.data.val_dl is None):
            return
        ls = wr.loss_tracker.losses
        post = {k: f"{v[-1]:.4g}" for k, v in ls.items() if v}
        self.bar.set_postfix(post, refresh=False)
        self.bar.update(1)

    def on_train_end(self) -> None:
        for b in (self.batch_bar, self.bar):
            if b is not None:
                b.close()
        self.bar = self.batch_bar = None


class KeepBest(AbsCallback):
    """Keeps, in memory, the weights of the epoch with the lowest validation loss (the training
    loss without a validation set) and restores them at the end of training.

    Attributes:
        best: that loss; best_epoch: its epoch (1-based; 0 if none was finite).
    """

    def on_train_begin(self) -> None:
        self.best, self.state, self.best_epoch = math.inf, None, 0

    def on_epoch_end(self) -> None:
        wr = self.wrapper
        if wr.state != ("valid" if wr.data.val_dl is not None else "train"):
            return
        val = wr.loss_tracker.losses[wr.state][-1]
        if math.isfinite(val) and val < self.best:
            self.best, self.best_epoch = val, wr.epoch
            self.state = copy.deepcopy(wr.model.state_dict())

    def on_train_end(self) -> None:
        if self.state is not None:
            self.wrapper.model.load_state_dict(self.state)


from .schedules import LRScheduler, OneCycle  # noqa: E402  (re-exported: their home until 0.2)
