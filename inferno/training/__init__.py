"""Training: the loop (:class:`ModelWrapper`, :mod:`inferno.training.wrapper`) and the callbacks
whose hooks it fires (:mod:`inferno.training.callbacks`). The INFERNO loss is a callback too
(:class:`~inferno.loss.InfernoLoss`), kept with the loss."""
from .callbacks import (AbsCallback, Checkpoint, EarlyStopping, GradClip, KeepBest, LossTracker, LRScheduler,
                        OneCycle, PredHandler, ProgressBar, SaveBest)
from .schedules import SCHEDULES, schedule
from .wrapper import ModelWrapper

__all__ = ["ModelWrapper", "AbsCallback", "LossTracker", "EarlyStopping", "SaveBest", "KeepBest", "Checkpoint",
           "PredHandler", "GradClip", "ProgressBar", "LRScheduler", "OneCycle", "SCHEDULES",
           "schedule"]
