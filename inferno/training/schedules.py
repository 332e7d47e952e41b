"""Learning-rate schedules as callbacks: any ``torch.optim.lr_scheduler`` stepped per epoch or per
batch (:class:`LRScheduler`), and the one-cycle policy (:class:`OneCycle`), with their state in
checkpoints (exact resume)."""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Union

import torch

from .callbacks import AbsCallback

if TYPE_CHECKING:  # pragma: no cover
    from .wrapper import ModelWrapper

__all__ = ["LRScheduler", "OneCycle", "SCHEDULES", "schedule"]

_LRS = torch.optim.lr_scheduler
_SCHEDULER_TYPES = tuple(t for t in (getattr(_LRS, "LRScheduler", None), getattr(_LRS, "_LRScheduler", None),
                                     _LRS.ReduceLROnPlateau) if t is not None)


def _last_phase(wr: "ModelWrapper") -> bool:
    """True in the epoch's last phase: validation, or training when there is no validation set."""
    return wr.state == "valid" or wr.data is None or wr.data.val_dl is None


class LRScheduler(AbsCallback):
    """Step a learning-rate scheduler of ``torch.optim.lr_scheduler`` during ``fit``.

    The scheduler is built when training starts, on the optimiser ``fit`` builds, by
    ``factory(optimizer)``: a scheduler class or a ``functools.partial`` of one, e.g.
    ``functools.partial(torch.optim.lr_scheduler.StepLR, step_size=2)``. Its state is part
    of the checkpoints (:meth:`state_dict`), so a resumed training continues the schedule.

    Args:
        factory: builds the scheduler from the optimiser.
        interval: ``"epoch"``: step once per epoch, after its last phase (validation, or
            training without a validation set); ``"batch"``: step after every training batch
            (after the optimiser's step). ``ReduceLROnPlateau`` steps per epoch on the latest
            loss (:attr:`LossTracker.last`: the validation loss when there is a validation set).

    Attributes:
        scheduler: the torch scheduler (None before training starts).

    Raises:
        ValueError: an unknown ``interval``; ``ReduceLROnPlateau`` per batch; a scheduler
            built on another optimiser than the one given; a checkpoint of another scheduler.
        TypeError: ``factory`` is not callable or does not return a scheduler.
    """

    def __init__(self, factory: Callable[[torch.optim.Optimizer], Any], interval: str = "epoch"):
        if not callable(factory):
            raise TypeError(f"factory must be callable (a scheduler class or a functools.partial of one), got "
                            f"{type(factory).__name__}")
        if interval not in ("epoch", "batch"):
            raise ValueError(f"interval must be 'epoch' or 'batch', got {interval!r}")
        self.factory, self.interval = factory, interval
        self.scheduler: Any = None
        self._pending: Optional[Dict[str, Any]] = None

    def _build(self) -> Any:
        return self.factory(self.wrapper.opt)

    def on_train_begin(self) -> None:
        sched = self._build()
        if not isinstance(sched, _SCHEDULER_TYPES):
            raise TypeError(f"the factory must return a torch.optim.lr_scheduler scheduler, got {type(sched).__name__}")
        if getattr(sched, "optimizer", None) is not self.wrapper.opt:
            raise ValueError("the factory built the scheduler on another optimiser: it must use the optimiser "
                             "it is given (fit builds a new one), e.g. functools.partial(StepLR, step_size=2)")
        if isinstance(sched, _LRS.ReduceLROnPlateau) and self.interval != "epoch":
            raise ValueError("ReduceLROnPlateau steps on the epoch's loss: use interval='epoch'")
        self.scheduler = sched
        if self._pending is not None:
            state, self._pending = self._pending, None
            self.load_state_dict(state)

    def on_batch_end(self) -> None:
        if self.interval == "batch" and self.wrapper.state == "train":
            self.scheduler.step()

    def on_epoch_end(self) -> None:
        wr = self.wrapper
        if self.interval != "epoch" or not _last_phase(wr):
            return
        if isinstance(self.scheduler, _LRS.ReduceLROnPlateau):
            self.scheduler.step(wr.loss_tracker.last)
        else:
            self.scheduler.step()

    @property
    def lr(self) -> List[float]:
        """The current learning rate of every parameter group of the optimiser."""
        return [float(g["lr"]) for g in self.wrapper.opt.param_groups]

    def state_dict(self) -> Dict[str, Any]:
        if self.scheduler is None:
            return dict(self._pending or {})
        st = {k: v for k, v in self.scheduler.state_dict().items() if not callable(v)}  # e.g. bound methods
        return {"class": type(self.scheduler).__name__, "scheduler": st}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        if not state:
            return
        if self.scheduler is None:  # restored when training starts
            self._pending = dict(state)
            return
        name = type(self.scheduler).__name__
        if state.get("class") != name:
            raise ValueError(f"the checkpoint holds the state of a {state.get('class')} scheduler, this callback's "
                             f"is a {name}: resume with the same scheduler")
        self.scheduler.load_state_dict(state["scheduler"])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.factory!r}, interval={self.interval!r})"


class OneCycle(LRScheduler):
    """The one-cycle policy (``torch.optim.lr_scheduler.OneCycleLR``), stepped per batch over
    the whole training: ``n_epochs * len(train loader)`` steps.

    The learning rate rises from ``max_lr / div_factor`` to ``max_lr`` during the first
    ``pct_start`` of the steps, then anneals to ``max_lr / (div_factor * final_div_factor)``;
    with ``cycle_momentum`` the momentum (Adam's beta1) moves the other way between
    ``max_momentum`` and ``base_momentum``. The other arguments are ``OneCycleLR``'s.
    """

    def __init__(self, max_lr: Union[float, List[float]], pct_start: float = 0.3, div_factor: float = 25.0,
                 final_div_factor: float = 1e4, anneal_strategy: str = "cos", cycle_momentum: bool = True,
                 base_momentum: float = 0.85, max_momentum: float = 0.95, three_phase: bool = False):
        if not 0 < pct_start < 1:
            raise ValueError(f"pct_start must be in (0, 1), got {pct_start}")
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"anneal_strategy must be 'cos' or 'linear', got {anneal_strategy!r}")
        self.kwargs = dict(max_lr=max_lr, pct_start=pct_start, div_factor=div_factor,
                           final_div_factor=final_div_factor, anneal_strategy=anneal_strategy,
                           cycle_momentum=cycle_momentum, base_momentum=base_momentum,
                           max_momentum=max_momentum, three_phase=three_phase)
        super().__init__(_LRS.OneCycleLR, interval="batch")

    def _build(self) -> Any:
        wr = self.wrapper
        total = wr.n_epochs * len(wr.data.trn_dl)
        return _LRS.OneCycleLR(wr.opt, total_steps=total, **self.kwargs)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        return f"OneCycle({args})"


#: the named schedules of :func:`schedule` (the ``--schedule`` of ``inferno-paper`` and ``inferno-bench``)
SCHEDULES = ("none", "onecycle", "cosine")


def schedule(name: str, lr: float, epochs: int) -> List[AbsCallback]:
    """The callbacks of a named learning-rate schedule for a training of ``epochs`` epochs whose
    optimiser has learning rate ``lr``: ``"none"`` (constant: no callback), ``"onecycle"``
    (:class:`OneCycle` up to ``3 * lr``, then annealed), ``"cosine"`` (cosine annealing from ``lr``
    to 0 over the epochs)."""
    if name == "none":
        return []
    if name == "onecycle":
        return [OneCycle(max_lr=3.0 * lr)]
    if name == "cosine":
        return [LRScheduler(functools.partial(_LRS.CosineAnnealingLR, T_max=epochs))]
    raise ValueError(f"unknown learning-rate schedule {name!r}: one of {', '.join(SCHEDULES)}")
