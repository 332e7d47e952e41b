"""The shape nuisances of the paper's background as a transform of nominal inputs
(:func:`paper_syst_transform`) and as a callback moving a data set (:class:`PaperSystMod`)."""
from __future__ import annotations

from typing import Union

import numpy as np
import torch
from torch import Tensor

from ..training.callbacks import AbsCallback
from .problem import PAPER_L, PAPER_R, _check_lam, _check_r

__all__ = ["paper_syst_transform", "PaperSystMod"]


# ---------------------------------------------------------------------------- systematics
def paper_syst_transform(x: Union[Tensor, np.ndarray], r: Union[float, Tensor],
                         l: Union[float, Tensor], l0: float = PAPER_L  # noqa: E741
                         ) -> Union[Tensor, np.ndarray]:
    r"""Move nominal background inputs to the nuisance values :math:`(r, \lambda = l)`.

    :math:`x_0 \to x_0 + r` and :math:`x_2 \to x_2\, l_0 / l`: a background event drawn at
    :math:`r = 0`, :math:`\lambda = l_0` becomes one distributed as background at
    :math:`(r, l)` (if :math:`X \sim \mathrm{Exp}(l_0)` then
    :math:`X l_0 / l \sim \mathrm{Exp}(l)`). Other columns are unchanged. Returns a new
    tensor (the input is not modified), differentiable in ``r`` and ``l`` when they are
    tensors requiring grad. Numpy input gives numpy output.

    Args:
        x: inputs of shape (n, >= 3).
        r: shift of :math:`x_0`.
        l: target exponential rate (> 0).
        l0: rate at which ``x`` was generated (> 0).
    """
    l0 = _check_lam(l0, "l0")
    if not isinstance(l, Tensor):
        l = _check_lam(l, "l")
    if isinstance(x, np.ndarray):
        out = np.array(x, dtype=np.result_type(x.dtype, np.float32), copy=True)
        if out.ndim != 2 or out.shape[1] < 3:
            raise ValueError(f"x must have shape (n, >=3), got {out.shape}")
        if isinstance(r, Tensor) or isinstance(l, Tensor):
            raise TypeError("r and l must be floats when x is a numpy array")
        out[:, 0] += float(r)
        out[:, 2] *= l0 / float(l)
        return out
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor or numpy array, got {type(x).__name__}")
    if x.ndim != 2 or x.shape[1] < 3:
        raise ValueError(f"x must have shape (n, >=3), got {tuple(x.shape)}")
    cols = [x[:, :1] + r, x[:, 1:2], x[:, 2:3] * (l0 / l), x[:, 3:]]
    return torch.cat(cols, dim=1)


class PaperSystMod(AbsCallback):
    r"""Callback shifting every batch's inputs to nuisance values :math:`(r, l)` before the
    forward pass, through :func:`paper_syst_transform`.

    Meant for predictions on nominal background events, e.g. to build shifted templates::

        wrapper.predict(bkg_x, cbs=[PaperSystMod(r=0.2, l=3.0)])

    Args:
        r: shift of :math:`x_0`.
        l: exponential rate of :math:`x_2` (> 0); inputs are assumed generated at
            :data:`PAPER_L`.
    """

    def __init__(self, r: float = PAPER_R, l: float = PAPER_L):  # noqa: E741
        self.r, self.l = _check_r(r), _check_lam(l, "l")

    def on_batch_begin(self) -> None:
        self.wrapper.x = paper_syst_transform(self.wrapper.x, self.r, self.l)

    def __repr__(self) -> str:
        return f"PaperSystMod(r={self.r}, l={self.l})"
