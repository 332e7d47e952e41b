r"""The INFERNO loss (de Castro & Dorigo, arXiv:1806.04743) as ModelWrapper callbacks.

The network maps each event to soft bin assignments :math:`y(x) \in \Delta^{n_\text{bins}}`
(e.g. through :class:`VariableSoftmax`). From a batch with signal (``y == 1``) and
background (``y == 0``) events and optional weights :math:`w`, the callbacks build the
normalised soft histograms

.. math::

    f_{c,i}(\theta) = \frac{\sum_{e \in c} w_e\, y_i(x_e(\theta))}{\sum_{e \in c} w_e},
    \qquad c \in \{s, b\},

floored as :math:`\tilde f = (f + \epsilon)/(1 + n_\text{bins}\epsilon)` so that no bin is
empty, the expected counts :math:`\nu_i(\theta) = S(\theta) \tilde f_{s,i}(\theta) +
B(\theta) \tilde f_{b,i}(\theta)` (yields and nuisances: :mod:`inferno.nuisance`), the
Asimov counts :math:`n_i = \nu_i(\theta_0)` at the nominal parameters, and the negative
log-likelihood

.. math::

    \mathrm{NLL}(\theta) = \sum_i \big[\nu_i(\theta) - n_i \log \nu_i(\theta)\big]
        - \sum_k \log p_k(\theta_k).

Its Hessian at :math:`\theta_0` is the Fisher information of the Asimov data set,

.. math::

    H_{jk} = \sum_i \frac{\partial_j \nu_i\, \partial_k \nu_i}{\nu_i}
        + \delta_{jk} \big(-\partial_k^2 \log p_k\big),

because the term :math:`\sum_i (\nu_i - n_i)\,\partial_j\partial_k \nu_i` vanishes at the
Asimov point (and so does its derivative with respect to the network weights, since
:math:`n_i = \nu_i(\theta_0)` for every value of the weights). The loss is the expected
variance of the parameter of interest, :math:`[H^{-1}]_{\mu\mu}`, obtained from a
Cholesky factorisation in float64.

* :class:`Inferno` -- exact: shape nuisances act on the inputs through differentiable
  transforms and their effect is propagated through the network. By default the
  derivatives :math:`\partial \nu / \partial \theta` are forward-mode derivatives (one
  tangent per shape nuisance, on the events it acts on) and :math:`H` is the Fisher form
  above (``hessian='fisher'``); ``hessian='autograd'`` instead makes the batch a function
  of the nuisance parameters before the forward pass and differentiates the NLL twice
  (slower, same result).
* :class:`ApproxInferno` -- interpolated: the batch is passed through the network with
  each shape nuisance at its down/up variation and the shapes are interpolated between
  them (HistFactory code 2, :func:`inferno.interp.interp_shape`), optionally from random
  starting values refined by Newton steps.
* :class:`PaperInferno` / :class:`ApproxPaperInferno` -- both set up for the paper's toy
  problem (:mod:`inferno.paper`), in its physical units; :func:`paper_inferno` builds the
  callback of benchmark ``k``.
* :class:`InfernoPred` -- prediction handler giving the hard (argmax) bin of each event.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from ..callback import AbsCallback, PredHandler
from ..nuisance import Nuisance, RateNuisance, ShapeNuisance, _check_nuisances
from .pure import soft_outputs_check

__all__ = ["InfernoPred"]

_GROUPS = ("s", "b")
#: the paper's nominal signal and background yields, the default of the two-group callbacks
PAPER_S, PAPER_B = 50.0, 1000.0


# ------------------------------------------------------------------------ common base
class _InfernoBase(AbsCallback):
    r"""Shared machinery: batch split, soft shapes, yields, and the POI variance."""

    def __init__(self, nuisances: Optional[Sequence[Nuisance]] = None, mu_true: float = PAPER_S,
                 b_true: float = PAPER_B, eps: float = 1e-7):
        self.nuisances = _check_nuisances(nuisances)
        self.mu_true, self.b_true = float(mu_true), float(b_true)
        for name, v in (("mu_true", self.mu_true), ("b_true", self.b_true)):
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} (expected yield) must be finite and > 0, got {v}")
        self.eps = float(eps)
        if not (math.isfinite(self.eps) and self.eps >= 0):
            raise ValueError(f"eps (the bin floor) must be finite and >= 0, got {eps}")
        self.param_names: Tuple[str, ...] = ("mu",) + tuple(n.name for n in self.nuisances)
        if "mu" in self.param_names[1:]:
            raise ValueError("'mu' is reserved for the parameter of interest")
        self.shape_nuis = [(i + 1, n) for i, n in enumerate(self.nuisances) if isinstance(n, ShapeNuisance)]
        for n in self.nuisances:
            if not isinstance(n, (ShapeNuisance, RateNuisance)) or not set(n.targets) <= set(_GROUPS):
                raise ValueError(f"nuisance {n.name!r} ({type(n).__name__}, on {n.targets}): the two-group callbacks "
                                 "take ShapeNuisance/RateNuisance on 's', 'b' or 'both'; for processes, weight "
                                 "variations and alternative samples use inferno.loss.Analysis")
        self.rate_nuis = [(i + 1, n) for i, n in enumerate(self.nuisances) if isinstance(n, RateNuisance)]
        # per group: (positions in theta, nuisances) of the shape nuisances acting on it
        self.group_nuis: Dict[str, List[Tuple[int, ShapeNuisance]]] = {
            g: [(p, n) for p, n in self.shape_nuis if g in n.targets] for g in _GROUPS}
        s0, b0 = self._yields_np(self._theta0_phys())
        if not (s0 > 0 and b0 > 0):
            raise ValueError(f"the nominal yields must be > 0, got S={s0}, B={b0}")
        self.last_hessian: Optional[Tensor] = None

    # -- parameters
    @property
    def n_params(self) -> int:
        """Number of parameters: the POI and the nuisances."""
        return 1 + len(self.nuisances)

    def _theta0_phys(self) -> List[float]:
        return [self.mu_true] + [n.nominal for n in self.nuisances]

    def _yields(self, theta: Tensor) -> Tuple[Tensor, Tensor]:
        r""":math:`(S(\theta), B(\theta))`, with rate nuisances at their physical values."""
        s, b = theta[0], theta.new_tensor(self.b_true)
        for p, n in self.rate_nuis:
            if n.mode == "add":
                if n.on == "s":
                    s = s + theta[p]
                else:
                    b = b + theta[p]
        for p, n in self.rate_nuis:
            if n.mode == "scale":
                if n.on == "s":
                    s = s * theta[p]
                else:
                    b = b * theta[p]
        return s, b

    def _yields_np(self, theta: Sequence[float]) -> Tuple[float, float]:
        s, b = self._yields(torch.tensor(theta, dtype=torch.float64))
        return float(s), float(b)

    # -- hooks shared by both callbacks
    def on_train_begin(self) -> None:
        wr = self.wrapper
        if wr.loss_func is not None:
            raise ValueError(f"{type(self).__name__} computes the loss itself: call fit with loss=None")
        self._setup(wr.device)

    def _setup(self, device: torch.device) -> None:
        self.device = torch.device(device)

    def _active(self) -> bool:
        return self.wrapper.state in ("train", "valid")

    def _split(self) -> None:
        """Indices and normalised weights of the signal and background rows of the batch."""
        wr = self.wrapper
        if wr.y is None:
            raise ValueError("INFERNO needs targets y: 1 for signal events, 0 for background")
        y = wr.y.reshape(-1)
        if len(y) != len(wr.x):
            raise ValueError(f"y has {len(y)} entries for {len(wr.x)} events")
        sig, bkg = y == 1, y == 0
        w = None if wr.w is None else wr.w.reshape(-1)
        if w is None:
            st = torch.stack((sig.sum(), bkg.sum())).tolist()
        else:
            # counts and weight sums in float64 (exact counts up to 2**53 events)
            st = torch.stack((sig.sum().double(), bkg.sum().double(), (w * sig).sum().double(),
                              (w * bkg).sum().double())).tolist()
        n_s, n_b = int(st[0]), int(st[1])
        if n_s + n_b != len(y):
            raise ValueError("y must be 1 (signal) or 0 (background) for every event")
        if n_s == 0:
            raise ValueError("the batch has no signal events (y == 1): INFERNO needs both signal and "
                             "background in every batch (shuffle the data or use larger batches)")
        if n_b == 0:
            raise ValueError("the batch has no background events (y == 0): INFERNO needs both signal "
                             "and background in every batch (shuffle the data or use larger batches)")
        if w is not None and not (st[2] > 0 and st[3] > 0):
            raise ValueError(f"the summed weights of the batch's signal ({st[2]}) and background "
                             f"({st[3]}) events must be > 0")
        # reorder the batch, signal rows first, so that the groups are contiguous slices (a
        # stable sort of y, 1 before 0, keeps the order of the events within each group)
        ys, perm = torch.sort(y, descending=True, stable=True)
        self._orig, self._perm = (wr.x, wr.y, wr.w), perm  # restored by _restore_order
        wr.x = wr.x.index_select(0, perm)
        wr.y = ys.reshape(wr.y.shape)
        if wr.w is not None:
            wr.w = wr.w.index_select(0, perm)
            w = wr.w.reshape(-1)
        self._idx = {"s": slice(0, n_s), "b": slice(n_s, n_s + n_b)}
        self._w = {g: None if w is None else (w[i] / w[i].sum()) for g, i in self._idx.items()}

    def on_forwards_end(self) -> None:
        if not self._active():
            return
        wr = self.wrapper
        self._check_output(wr.y_pred)
        wr.loss_val = self._variance(wr.y_pred)
        self._restore_order()

    def _variance(self, yp: Tensor) -> Tensor:
        """The POI variance of the batch from the network output ``yp`` (in grouped order)."""
        raise NotImplementedError

    def _restore_order(self) -> None:
        """Give the callbacks that follow the batch as the loader made it: ``x``, ``y``, ``w``
        as they were, ``y_pred`` in their row order (the loss is computed by then)."""
        wr = self.wrapper
        perm = self._perm
        inv = torch.empty_like(perm).scatter_(0, perm, torch.arange(len(perm), device=perm.device))
        wr.x, wr.y, wr.w = self._orig
        wr.y_pred = wr.y_pred.index_select(0, inv)
        self._orig = None

    def _replace_rows(self, x: Tensor, parts: Dict[str, Tensor]) -> Tensor:
        """``x`` with the rows of the groups in ``parts`` replaced (out of place)."""
        if not parts:
            return x
        return torch.cat([parts.get(g, x[self._idx[g]]) for g in _GROUPS])

    def _soft_hist(self, y: Tensor, g: str) -> Tensor:
        r"""Weighted mean over the rows of group ``g`` of ``y`` (..., m, bins) -> (..., bins)."""
        w = self._w[g]
        return y.mean(-2) if w is None else (w.to(y.dtype).unsqueeze(-1) * y).sum(-2)

    def _floor(self, f: Tensor) -> Tensor:
        r""":math:`(f + \epsilon)/(1 + n_\text{bins}\epsilon)` in float64."""
        f = f.to(torch.float64)
        return (f + self.eps) / (1.0 + f.shape[-1] * self.eps)

    def _check_output(self, y: Tensor) -> None:
        soft_outputs_check(y)  # the same check as the general loss

    def _poi_variance(self, hess: Tensor) -> Tensor:
        r""":math:`[H^{-1}]_{00}` by the one POI routine (:func:`inferno.loss.fisher.poi_loss`);
        ValueError (named cause, as the fused path's) if H is not positive definite."""
        from .fisher import FisherError, poi_loss

        self.last_hessian = hess.detach()
        try:
            var = poi_loss(hess, [0], "variance", names=self.param_names)
        except FisherError:
            var = None
        if var is None or not bool(torch.isfinite(var) & (var > 0)):
            self._raise_bad(hess)
        return var

    # -- convenience
    def loss_on(self, model: nn.Module, x: Tensor, y: Tensor, w: Optional[Tensor] = None) -> Tensor:
        """The INFERNO loss of ``model`` on one batch, outside a training loop (e.g. to
        evaluate a trained network, or in tests)."""
        from ..model_wrapper import ModelWrapper

        wr = ModelWrapper(model)
        wr.x, wr.y, wr.w, wr.state = x.to(wr.device), y.to(wr.device), None if w is None else w.to(wr.device), "valid"
        saved = dict(self.__dict__)  # e.g. the state of a training loop this callback is in
        self._forget_resources()
        self.set_wrapper(wr)
        try:
            with torch.set_grad_enabled(torch.is_grad_enabled() or self.requires_grad_in_valid):
                self._setup(wr.device)
                self.on_batch_begin()
                wr.y_pred = model(wr.x)
                self.on_forwards_end()
            return wr.loss_val
        finally:
            self._teardown()
            last = self.last_hessian
            self.__dict__.clear()
            self.__dict__.update(saved)
            self.last_hessian = last

    def _teardown(self) -> None:
        """Release what _setup installed (nothing here)."""

    def _forget_resources(self) -> None:
        """Drop (without releasing) what _setup installed, so that a nested _setup/_teardown
        leaves the resources of an ongoing training loop alone."""

    def _raise_bad(self, hess: Tensor) -> None:
        yp = self.wrapper.y_pred
        if yp is not None and not bool(torch.isfinite(yp).all()):
            raise ValueError("the network output contains NaN or inf: cannot compute the INFERNO "
                             "loss (diverged training? try a lower learning rate or GradClip)")
        h = hess.detach()
        if not bool(torch.isfinite(h).all()):
            raise ValueError(f"the Hessian of the NLL is not finite:\n{h.cpu().numpy()}")
        ev = torch.linalg.eigvalsh(h).cpu().numpy()
        raise ValueError(
            "the Hessian of the NLL with respect to (" + ", ".join(self.param_names) + ") is not "
            f"positive definite, or numerically singular (eigenvalues {ev}): a free nuisance that does not change the expected "
            "counts, or nuisances whose effects are degenerate, leave the POI variance undefined; "
            f"constrain them or remove them.\nHessian:\n{h.cpu().numpy()}")


# ------------------------------------------------------------------------ prediction
class InfernoPred(PredHandler):
    """Prediction handler giving the hard assignment of each event: the index of its
    largest network output (int64), i.e. the bin of the INFERNO summary statistic."""

    def process(self, y_pred: Tensor) -> Tensor:
        return y_pred.argmax(dim=-1)

    def get_preds(self) -> np.ndarray:
        if not self.preds:
            return np.zeros(0, dtype=np.int64)
        return super().get_preds().astype(np.int64)
