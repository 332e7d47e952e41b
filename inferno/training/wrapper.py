"""The training loop: :class:`ModelWrapper`, a minimal loop that fires callback hooks."""
from __future__ import annotations

import copy
import os
import random
import tempfile
import warnings
from pathlib import Path
from typing import Any, BinaryIO, Callable, Dict, Iterable, List, Optional, Union

import numpy as np
import torch
from torch import Tensor, nn

from .callbacks import AbsCallback, Checkpoint, LossTracker, PredHandler, ProgressBar
from ..data.dataset import DataPair, DataSet, WeightedDataLoader, _check_count

__all__ = ["ModelWrapper"]

#: marks a full training checkpoint (``save_checkpoint``), as opposed to weights (``save``)
CHECKPOINT_FORMAT = "inferno.checkpoint"
CHECKPOINT_VERSION = 1


def _atomic_write(path: Union[str, Path], write: Callable[[BinaryIO], None]) -> Path:
    """Write a file atomically: ``write(f)`` fills a temporary file in the same folder, which
    is flushed to disk and renamed over ``path``; on any error the temporary file is removed
    and an earlier file at ``path`` stays intact.

    Raises:
        FileNotFoundError: the folder of ``path`` does not exist.
    """
    path = Path(path)
    if not path.parent.exists():
        raise FileNotFoundError(f"folder {path.parent} does not exist")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _rng_state(cuda: bool) -> Dict[str, Any]:
    """The global random number generators' states, as values ``torch.load(weights_only=True)``
    reads (tensors, ints, floats, strings, lists)."""
    npst = np.random.get_state(legacy=False)
    ver, internal, gauss = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"bit_generator": npst["bit_generator"],
                       "key": torch.from_numpy(np.asarray(npst["state"]["key"], dtype=np.int64)),
                       "pos": int(npst["state"]["pos"]), "has_gauss": int(npst["has_gauss"]),
                       "gauss": float(npst["gauss"])},
             "python": [int(ver), [int(v) for v in internal], gauss],
             "cuda": None}
    if cuda and torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state({"bit_generator": n["bit_generator"],
                         "state": {"key": n["key"].cpu().numpy().astype(np.uint32), "pos": int(n["pos"])},
                         "has_gauss": int(n["has_gauss"]), "gauss": float(n["gauss"])})
    ver, internal, gauss = state["python"]
    random.setstate((int(ver), tuple(int(v) for v in internal), gauss))
    if state.get("cuda") is not None:
        if torch.cuda.is_available() and torch.cuda.device_count() >= len(state["cuda"]):
            torch.cuda.set_rng_state_all([t.cpu() for t in state["cuda"]])
        else:
            warnings.warn("the checkpoint holds CUDA random states for "
                          f"{len(state['cuda'])} device(s) that this machine does not have: they are not "
                          "restored, so random draws on the GPU differ from the interrupted run", stacklevel=3)


def _per_event_loss(loss: Any) -> Optional[Callable]:
    """A copy of a torch loss module that returns per-event values (``reduction='none'``)."""
    if loss is None or not hasattr(loss, "reduction"):
        return None
    l2 = copy.copy(loss)
    l2.reduction = "none"
    return l2


class ModelWrapper:
    r"""Wraps a ``torch.nn.Module`` with ``fit``, ``predict``, ``save`` and ``load``.

    Args:
        model: the network.
        device: where the model and batches live (default: the model's current device).

    State visible to callbacks (``self.wrapper.<name>``): ``x``, ``y``, ``w``, ``extras`` (the batch),
    ``y_pred``, ``loss_val``, ``loss_weight``, ``loss_func``, ``state``
    ('train' | 'valid' | 'test'), ``epoch``, ``n_epochs``, ``stop``, ``model``, ``opt``,
    ``data``, ``cbs``, ``loss_tracker``.

    The loss of a batch is, for a torch loss module ``loss`` with a ``reduction`` attribute,
    the weighted mean :math:`\sum_i w_i \ell_i / \sum_i w_i` (plain mean without weights);
    other callables are called as ``loss(y_pred, y)``. With ``loss=None`` a callback must set
    ``wrapper.loss_val`` in ``on_forwards_end``. A loss that is not finite (NaN or inf) stops
    training with an error naming the batch and the epoch, before any parameter update.
    """

    def __init__(self, model: nn.Module, device: Union[str, torch.device, None] = None):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if device is None:
            p = next(model.parameters(), None)
            device = p.device if p is not None else torch.device("cpu")
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.opt: Optional[torch.optim.Optimizer] = None
        self.loss_func: Any = None
        self.cbs: List[AbsCallback] = []
        self.x: Optional[Tensor] = None
        self.y: Optional[Tensor] = None
        self.w: Optional[Tensor] = None
        self.y_pred: Optional[Tensor] = None
        self.extras: Dict[str, Tensor] = {}
        self.loss_val: Optional[Tensor] = None
        self.loss_weight: Union[float, Tensor] = 1.0
        self.state = "test"
        self.epoch, self.n_epochs, self.stop = 0, 0, False
        self.data: Optional[DataPair] = None
        self.loss_tracker: Optional[LossTracker] = None
        self._fit_cbs: List[AbsCallback] = []

    # ------------------------------------------------------------------ hooks
    def _fire(self, hook: str) -> None:
        for cb in self.cbs:
            getattr(cb, hook)()

    def _set_cbs(self, cbs: Optional[Iterable[AbsCallback]]) -> None:
        cbs = list(cbs or [])
        for cb in cbs:
            if not isinstance(cb, AbsCallback):
                raise TypeError(f"callbacks must derive from AbsCallback, got {type(cb).__name__}")
        self.cbs = cbs
        for cb in cbs:
            cb.set_wrapper(self)

    # ------------------------------------------------------------------ training
    def fit(self, n_epochs: int, data: DataPair, opt: Callable[..., torch.optim.Optimizer],
            loss: Any, cbs: Optional[Iterable[AbsCallback]] = None,
            progress: bool = True, resume_from: Union[str, Path, None] = None) -> Dict[str, List[float]]:
        """Train for ``n_epochs`` (fewer if a callback sets ``wrapper.stop``).

        Args:
            n_epochs: number of epochs (>= 1).
            data: training (and optional validation) loaders.
            opt: builds the optimiser from the parameters, e.g.
                ``functools.partial(torch.optim.Adam, lr=1e-3)``.
            loss: a loss (module or callable), or None when a callback sets ``loss_val``.
            cbs: callbacks. A :class:`LossTracker` is added in front if none is given.
            progress: add a :class:`ProgressBar` (if ``cbs`` has none); it shows only in an
                interactive terminal, not in CI, a log file or with ``INFERNO_QUIET`` set.
            resume_from: a checkpoint written by :meth:`save_checkpoint` (e.g. by the
                :class:`~inferno.training.callbacks.Checkpoint` callback): training continues after its
                epoch, with its weights, optimiser state, random number generators, loaders'
                shuffling generators and callbacks' states (restored after
                ``on_train_begin``), exactly as if it had not been interrupted (same data,
                optimiser and callbacks, on the same kind of device). ``n_epochs`` then counts
                all the epochs, those already done included.

        Returns:
            The loss history ``{'train': [...], 'valid': [...]}`` (one value per epoch; after
            a resume, the checkpoint's epochs included).

        Raises:
            ValueError: bad arguments; a batch whose event weights sum to 0; a checkpoint
                to resume from that is not a full checkpoint, holds another architecture or
                another optimiser, or is past ``n_epochs``.
            FileNotFoundError: no checkpoint at ``resume_from``.
            FloatingPointError: a loss that is not finite (NaN or inf); the parameters keep
                the values of the previous batch.
        """
        n_epochs = _check_count(n_epochs, "n_epochs")
        if not isinstance(data, DataPair):
            raise TypeError(f"data must be a DataPair, got {type(data).__name__}")
        ckpt, start = None, 0
        if resume_from is not None:
            ckpt = self._read_checkpoint(resume_from)
            train_state = ckpt.get("training")
            if ckpt.get("format") != CHECKPOINT_FORMAT or not isinstance(train_state, dict):
                raise ValueError(f"{resume_from} holds the weights only (written by ModelWrapper.save or SaveBest), "
                                 "not a training state to resume: write checkpoints with the Checkpoint callback "
                                 "or ModelWrapper.save_checkpoint (ModelWrapper.load reads the weights)")
            if int(ckpt.get("version", 0)) > CHECKPOINT_VERSION:
                raise ValueError(f"the checkpoint {resume_from} has format version {ckpt['version']}, newer than this "
                                 f"inferno reads ({CHECKPOINT_VERSION}): update inferno")
            start = int(train_state["epoch"])
            if n_epochs < start:
                raise ValueError(f"the checkpoint {resume_from} is at epoch {start}; n_epochs counts all the epochs, "
                                 f"those done included, so it must be >= {start}, got {n_epochs}")
            self._check_architecture(resume_from, ckpt["model"])
        cbs = list(cbs or [])
        trackers = [c for c in cbs if isinstance(c, LossTracker)]
        if not trackers:
            trackers = [LossTracker()]
            cbs.insert(0, trackers[0])
        if progress and not any(isinstance(c, ProgressBar) for c in cbs):
            cbs.append(ProgressBar())
        self._set_cbs(cbs)
        self._fit_cbs = self.cbs  # predict replaces self.cbs; checkpoints hold the fit's callbacks
        self.loss_tracker = trackers[0]
        self.data, self.n_epochs, self.stop = data, n_epochs, False
        self.loss_func = loss
        self._loss_none = _per_event_loss(loss)
        self.opt = opt(self.model.parameters())
        grad_in_valid = any(cb.requires_grad_in_valid for cb in self.cbs)
        if ckpt is not None:
            saved_opt = ckpt["training"].get("opt_class")
            if saved_opt is not None and saved_opt != type(self.opt).__name__:
                raise ValueError(f"the checkpoint {resume_from} was trained with the optimiser {saved_opt}, this fit "
                                 f"builds a {type(self.opt).__name__}: resume with the same optimiser")
            self.model.load_state_dict(ckpt["model"])
        self.epoch = start

        # the lifecycle is guaranteed: whatever happens after on_train_begin, every callback's
        # on_exception sees an error and on_teardown runs (hooks released, state dropped)
        try:
            self._fire("on_train_begin")
            if ckpt is not None:  # after on_train_begin, which resets the callbacks and builds schedulers
                self._restore_training(ckpt, resume_from)
            after = sorted(self.cbs, key=lambda c: isinstance(c, Checkpoint))  # checkpoints last
            for self.epoch in range(start + 1, self.n_epochs + 1):
                self.state = "train"
                self.model.train()
                self._run_epoch(data.trn_dl, train=True)
                if data.val_dl is not None:
                    self.state = "valid"
                    self.model.eval()
                    with torch.set_grad_enabled(grad_in_valid):
                        self._run_epoch(data.val_dl, train=False)
                for cb in after:
                    cb.after_epoch()
                if self.stop:
                    break
            self.model.eval()
            self._fire("on_train_end")
        except BaseException as exc:
            for cb in self.cbs:
                cb.on_exception(exc)
            raise
        finally:
            for cb in self.cbs:
                cb.on_teardown()
        return self.loss_tracker.losses

    def _compute_loss(self) -> None:
        if self.loss_func is None:
            self.loss_val, self.loss_weight = None, 1.0
            return
        if self._loss_none is not None:
            per_event = self._loss_none(self.y_pred, self.y)
            if self.w is not None:
                w = self.w.expand_as(per_event) if per_event.ndim == self.w.ndim else self.w.view(-1)
                wsum = w.sum()
                self.loss_val, self.loss_weight = (per_event * w).sum() / wsum, wsum
            else:
                self.loss_val, self.loss_weight = per_event.mean(), float(per_event.numel())
        else:
            self.loss_val, self.loss_weight = self.loss_func(self.y_pred, self.y), float(len(self.x))

    def _check_loss(self, i: int, n: int) -> None:
        """Raise if the loss of batch ``i`` (of ``n``) is not finite (one device sync per batch)."""
        lv = self.loss_val
        weighted = self.w is not None and self._loss_none is not None and self.loss_func is not None
        if lv is None:
            return
        ok = torch.isfinite(lv.detach()).all()
        if weighted:  # negative weights are allowed, a non-positive batch total is not
            ok = ok & (self.w.sum() > 0)
        if bool(ok):
            return
        train = self.state == "train"
        where = f"{'training' if train else 'validation'} batch {i + 1} of {n} in epoch {self.epoch}"
        kept = "; no parameter update was made" if train else ""
        if weighted and not bool(self.w.sum() > 0):
            raise ValueError(
                f"the event weights of {where} sum to {float(self.w.sum()):.6g} (<= 0), so its weighted mean loss "
                f"is undefined{kept}. "
                "Every batch needs events of non-zero weight: shuffle the loader, use larger "
                "batches, or drop the zero-weight events")
        flat = lv.detach().reshape(-1)
        val = float(flat[~torch.isfinite(flat)][0])
        raise FloatingPointError(
            f"the loss of {where} is {val}{kept}. Check the inputs and targets of that batch "
            "(e.g. targets outside [0, 1] for a BCE loss), the model output, and the learning "
            "rate (a diverged training: lower it or add GradClip)")

    def _run_epoch(self, dl: WeightedDataLoader, train: bool) -> None:
        self._fire("on_epoch_begin")
        dev = self.device
        n_batches = len(dl)
        for i, batch in enumerate(dl):
            x, y, w = batch[:3]
            self.x = x.to(dev, non_blocking=True)
            self.y = None if y is None else y.to(dev, non_blocking=True)
            self.w = None if w is None else w.to(dev, non_blocking=True)
            self.extras = {k: v.to(dev, non_blocking=True) for k, v in batch[3].items()} if len(batch) > 3 else {}
            self._fire("on_batch_begin")
            self.y_pred = self.model(self.x)
            self._compute_loss()
            self._fire("on_forwards_end")
            if self.loss_func is None:  # a callback set a loss that is not an event average
                self.loss_weight = 1.0
            self._check_loss(i, n_batches)
            if train:
                if self.loss_val is None:
                    raise RuntimeError("no loss: pass `loss` to fit or use a callback that sets "
                                       "wrapper.loss_val in on_forwards_end")
                self.opt.zero_grad(set_to_none=True)
                self._fire("on_backwards_begin")
                self.loss_val.backward()
                self._fire("on_backwards_end")
                self.opt.step()
            self._fire("on_batch_end")
        self._fire("on_epoch_end")

    # ------------------------------------------------------------------ prediction
    def predict(self, x_or_loader: Any, pred_cb: Optional[PredHandler] = None,
                cbs: Optional[Iterable[AbsCallback]] = None, bs: int = 100_000) -> np.ndarray:
        """Model outputs for an array/tensor/DataFrame or a :class:`WeightedDataLoader`.

        Args:
            x_or_loader: inputs, or a loader whose ``x`` is used.
            pred_cb: collects (and possibly transforms) the outputs; default
                :class:`PredHandler` (raw outputs).
            cbs: extra callbacks, e.g. one that shifts inputs to a nuisance value.
            bs: batch size when arrays are given.

        Returns:
            numpy array of outputs, one row per event in input order.
        """
        if isinstance(x_or_loader, WeightedDataLoader):
            dl = WeightedDataLoader(x_or_loader.dataset, x_or_loader.batch_size)  # no shuffling
        else:
            x = x_or_loader.x if isinstance(x_or_loader, DataSet) else x_or_loader
            dl = WeightedDataLoader(x if isinstance(x, DataSet) else DataSet(x), bs)
        pred_cb = pred_cb if pred_cb is not None else PredHandler()
        self._set_cbs([*(cbs or []), pred_cb])
        self.state = "test"
        self.model.eval()
        grad = any(cb.requires_grad_in_valid for cb in self.cbs)
        self._fire("on_pred_begin")
        with torch.set_grad_enabled(grad):
            for batch in dl:
                x, y, w = batch[:3]
                self.x = x.to(self.device)
                self.y = None if y is None else y.to(self.device)
                self.w = None if w is None else w.to(self.device)
                self.extras = {k: v.to(self.device) for k, v in batch[3].items()} if len(batch) > 3 else {}
                self._fire("on_batch_begin")
                self.y_pred = self.model(self.x)
                self._fire("on_forwards_end")
                self._fire("on_batch_end")
        self._fire("on_pred_end")
        return pred_cb.get_preds()

    # ------------------------------------------------------------------ checkpoints
    def save(self, path: Union[str, Path]) -> None:
        """Write the model (and optimiser) state to ``path`` atomically.

        The state goes to a temporary file in the same folder, which is then renamed over
        ``path``; an interrupted save leaves any earlier checkpoint intact. To resume a
        training later, write the full state with :meth:`save_checkpoint` instead.
        """
        state = {"model": self.model.state_dict(),
                 "opt": None if self.opt is None else self.opt.state_dict()}
        _atomic_write(path, lambda f: torch.save(state, f))

    def save_checkpoint(self, path: Union[str, Path]) -> None:
        """Write the full training state to ``path`` atomically, for ``fit(..., resume_from=path)``.

        The checkpoint holds what :meth:`save` writes (so :meth:`load` reads it too), plus the
        number of epochs done, the optimiser's class, the random number generators' states
        (torch CPU, CUDA when the model is on a GPU, numpy's global generator, Python's
        ``random``), the shuffling generators of the loaders of ``wrapper.data`` and the
        state of every callback of the latest fit (:meth:`AbsCallback.state_dict`). Call it between
        epochs (the :class:`~inferno.training.callbacks.Checkpoint` callback does) or after ``fit``.

        Raises:
            RuntimeError: no training has started (no optimiser): use :meth:`save` for the weights.
            FileNotFoundError: the folder of ``path`` does not exist.
        """
        if self.opt is None:
            raise RuntimeError("save_checkpoint writes a training state to resume, and no training has started "
                               "(no optimiser): call it during or after fit, or use save for the weights")
        loaders = {}
        if self.data is not None:
            for name in ("trn_dl", "val_dl", "tst_dl"):
                dl = getattr(self.data, name)
                if dl is not None:
                    loaders[name] = {"generator": dl.generator.get_state(), "n": len(dl.dataset),
                                     "batch_size": int(dl.batch_size), "shuffle": bool(dl.shuffle)}
        training = {"epoch": int(self.epoch), "n_epochs": int(self.n_epochs),
                    "opt_class": type(self.opt).__name__,
                    "rng": _rng_state(cuda=self.device.type == "cuda"),
                    "loaders": loaders,
                    "callbacks": [{"class": type(cb).__name__, "state": cb.state_dict()} for cb in self._fit_cbs]}
        state = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
                 "model": self.model.state_dict(), "opt": self.opt.state_dict(), "training": training}
        _atomic_write(path, lambda f: torch.save(state, f))

    def _read_checkpoint(self, path: Union[str, Path]) -> Dict[str, Any]:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no checkpoint at {path}")
        if path.is_dir():
            raise ValueError(f"{path} is a folder, not a checkpoint file")
        try:
            state = torch.load(path, map_location=self.device, weights_only=True)
        except Exception as e:
            raise ValueError(f"{path} is not a readable checkpoint: {e}") from e
        if not isinstance(state, dict) or "model" not in state:
            raise ValueError(f"{path} is not an inferno checkpoint (no 'model' entry)")
        return state

    def _check_architecture(self, path: Union[str, Path], theirs: Dict[str, Tensor]) -> None:
        own = self.model.state_dict()
        missing, unexpected = set(own) - set(theirs), set(theirs) - set(own)
        shapes = [f"{k}: {tuple(theirs[k].shape)} vs model {tuple(own[k].shape)}"
                  for k in set(own) & set(theirs) if theirs[k].shape != own[k].shape]
        if missing or unexpected or shapes:
            raise ValueError(
                f"checkpoint {path} does not match the model's architecture: "
                f"missing {sorted(missing)}, unexpected {sorted(unexpected)}, "
                f"shape mismatches {shapes}")

    def _restore_training(self, ckpt: Dict[str, Any], path: Union[str, Path]) -> None:
        """Optimiser, callbacks, loaders' generators and global RNGs from a full checkpoint."""
        tr = ckpt["training"]
        try:
            self.opt.load_state_dict(ckpt["opt"])
        except (ValueError, KeyError) as e:
            raise ValueError(f"the optimiser state of the checkpoint {path} does not fit this fit's optimiser "
                             f"(other parameter groups?): {e}") from e
        # callbacks: paired by class, in order
        saved: Dict[str, List[Dict[str, Any]]] = {}
        for entry in tr["callbacks"]:
            saved.setdefault(entry["class"], []).append(entry["state"])
        fresh = []
        for cb in self.cbs:
            name = type(cb).__name__
            queue = saved.get(name, [])
            if queue:
                cb.load_state_dict(queue.pop(0))
            elif cb.state_dict():
                fresh.append(name)
        dropped = [name for name, q in saved.items() for st in q if st]
        if dropped or fresh:
            warnings.warn(f"resuming from {path} with other callbacks than the interrupted training: "
                          + (f"the saved states of {dropped} have no callback here (ignored); " if dropped else "")
                          + (f"{fresh} start afresh (no saved state)" if fresh else ""), stacklevel=3)
        # loaders' shuffling generators
        for name, st in tr["loaders"].items():
            dl = getattr(self.data, name, None)
            if dl is None:
                continue
            if len(dl.dataset) != st["n"] or dl.batch_size != st["batch_size"] or dl.shuffle != st["shuffle"]:
                warnings.warn(f"resuming from {path}: the {name} loader has {len(dl.dataset)} events in batches of "
                              f"{dl.batch_size} (shuffle={dl.shuffle}), the checkpoint's had {st['n']} in batches of "
                              f"{st['batch_size']} (shuffle={st['shuffle']}): not an exact continuation", stacklevel=3)
            dl.generator.set_state(st["generator"].cpu())
        _set_rng_state(tr["rng"])

    def load(self, path: Union[str, Path]) -> None:
        """Load the model (and optimiser) state of a checkpoint written by :meth:`save` or
        :meth:`save_checkpoint`.

        Raises:
            FileNotFoundError: no such file.
            ValueError: the file is not a checkpoint, or it holds another architecture.
        """
        state = self._read_checkpoint(path)
        theirs = state["model"]
        self._check_architecture(path, theirs)
        self.model.load_state_dict(theirs)
        if state.get("opt") is not None and self.opt is not None:
            try:
                self.opt.load_state_dict(state["opt"])
            except (ValueError, KeyError):
                pass  # optimiser of another kind: model weights are what matter
