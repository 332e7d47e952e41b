r"""pytorch_inferno's two-process INFERNO callbacks as thin builders over the one loss.

:class:`Inferno` (exact: shape nuisances transform the inputs) and :class:`ApproxInferno`
(interpolated: up/down inputs) keep the signatures, defaults and numbers of pytorch_inferno
and of the earlier releases of this package, but build an :class:`~inferno.loss.Analysis`
of the signal (events with ``y == 1``) and the background (``y == 0``) and compute
:func:`~inferno.loss.inferno_loss` on it, as :class:`~inferno.loss.InfernoLoss` does.

The parameters are ``(mu, *nuisances)`` in the old units: ``mu`` the signal yield (events),
shape nuisances in their physical units (:class:`Inferno`) or in the interpolation coordinate
(:class:`ApproxInferno`), rate nuisances in theirs. In the Analysis the yields are products of
normalisation factors; an additive rate nuisance :math:`\theta` on a yield :math:`Y_0` becomes
the factor :math:`a = 1 + (\theta - \theta_0)/Y_0` with its constraint mapped accordingly (a
linear reparametrisation at the nominal point, which leaves the POI variance unchanged).
:attr:`last_hessian` is reported in the old units.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor
from torch.distributions import AffineTransform, Normal, TransformedDistribution

from ..training.callbacks import PredHandler
from ..likelihood.modifiers import NormFactor
from ..loss.analysis import Analysis, Process
from ..loss.callback import InfernoLoss
from ..loss.tangents import leaves_of
from ..nuisance import Nuisance, RateNuisance, ShapeNuisance, _check_nuisances

__all__ = ["Inferno", "ApproxInferno", "InfernoPred"]

#: the paper's nominal signal and background yields, the defaults of the two-process callbacks
_PAPER_S, _PAPER_B = 50.0, 1000.0
_GROUPS = {"s": 1, "b": 0}
_INF = (-math.inf, math.inf)


def _rate_factor(n: RateNuisance, k: float) -> Tuple[Dict[str, Any], float]:
    """Parameter settings of the normalisation factor of an additive rate nuisance on a yield
    ``k`` (the factor a = 1 + (theta - nominal)/k), and d theta / d a = k."""
    c = n.constraint
    if c is None:
        con: Dict[str, Any] = {}
    elif type(c) is Normal:
        con = {"constraint": Normal(torch.tensor(1.0 + (float(c.loc) - n.nominal) / k, dtype=torch.float64),
                                    torch.tensor(float(c.scale) / k, dtype=torch.float64))}
    else:
        con = {"constraint": TransformedDistribution(c, AffineTransform(1.0 - n.nominal / k, 1.0 / k)), "aux": 0.0}
    return dict(init=1.0, bounds=_INF, **con), k


class _TwoProcess(InfernoLoss):
    """The Analysis of a signal and a background group, with pytorch_inferno's nuisances."""

    _interpolated = False

    def __init__(self, nuisances: Optional[Sequence[Nuisance]], mu_true: float, b_true: float, eps: float):
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
        for n in self.nuisances:
            if not isinstance(n, (ShapeNuisance, RateNuisance)) or not set(n.targets) <= set(_GROUPS):
                raise ValueError(f"nuisance {n.name!r} ({type(n).__name__}, on {n.targets}): the two-group callbacks "
                                 "take ShapeNuisance/RateNuisance on 's', 'b' or 'both'; for processes, weight "
                                 "variations and alternative samples use inferno.loss.Analysis")
        super().__init__(self._build_analysis(), tangents=getattr(self, "_tangent_mode", "auto"))
        self.param_names = ("mu",) + tuple(n.name for n in self.nuisances)

    def _shape(self, n: ShapeNuisance) -> Tuple[ShapeNuisance, Dict[str, Any]]:
        """The shape nuisance as the Analysis takes it, and its parameter settings."""
        return n, {}

    def _build_analysis(self) -> Analysis:
        rates = [n for n in self.nuisances if isinstance(n, RateNuisance)]
        mods: Dict[str, List[Any]] = {"s": [NormFactor("mu")], "b": []}
        settings: Dict[str, Dict[str, Any]] = {"mu": dict(init=self.mu_true, bounds=_INF)}
        scale = {"mu": 1.0}  # d theta_old / d theta_new
        base = {"s": self.mu_true, "b": self.b_true + sum(n.nominal for n in rates if n.on == "b" and n.mode == "add")}
        if any(n.nominal != 0 for n in rates if n.on == "s" and n.mode == "add"):
            raise ValueError("an additive signal-rate nuisance with a non-zero nominal value is not supported: "
                             "describe the measurement with inferno.loss.Analysis")
        for n in rates:
            mods[n.on].append(NormFactor(n.name))
            if n.mode == "add":
                settings[n.name], scale[n.name] = _rate_factor(n, base[n.on])
            else:
                con = {} if n.constraint is None else {"constraint": n.constraint, "aux": 0.0}
                settings[n.name], scale[n.name] = dict(init=n.nominal, bounds=_INF, **con), 1.0
                if type(n.constraint) is Normal:
                    settings[n.name].pop("aux")
        shapes = []
        for n in self.nuisances:
            if isinstance(n, ShapeNuisance):
                m, s = self._shape(n)
                shapes.append(m)
                settings.update({n.name: s} if s else {})
                scale[n.name] = 1.0
        self._scale = scale
        processes = [Process("signal", 1, 1.0, mods["s"]), Process("background", 0, base["b"], mods["b"])]
        return Analysis(processes, shapes, poi="mu", parameters=settings, eps=self.eps)

    # -- the loss, as InfernoLoss computes it, with the old units for last_hessian
    def on_forwards_end(self) -> None:
        wr = self.wrapper
        if wr.state not in ("train", "valid"):
            return
        if wr.y is None:
            raise ValueError("INFERNO needs targets y: 1 for signal events, 0 for background")
        try:
            super().on_forwards_end()
        except ValueError as e:
            if str(e).startswith("events with labels"):
                raise ValueError("y must be 1 (signal) or 0 (background) for every event") from None
            raise

    @property
    def last_hessian(self) -> Optional[Tensor]:
        """The Fisher information of the latest batch in the parameters ``(mu, *nuisances)``, in
        their old units (float64, detached)."""
        if self.last_fisher is None:
            return None
        names = self.analysis.names
        idx = [names.index(p) for p in self.param_names]
        d = torch.tensor([1.0 / self._scale[p] for p in self.param_names], dtype=torch.float64)
        h = self.last_fisher[idx][:, idx]
        return h * torch.outer(d, d).to(h.device)

    def _install(self) -> None:
        plain = leaves_of(self.wrapper.model) is not None
        if getattr(self, "tangents", None) == "sequential" and not plain:
            raise ValueError("tangents='sequential' needs an nn.Sequential model; use 'jvp'")
        if getattr(self, "hessian", None) == "autograd":  # autograd only: exact higher derivatives
            self.tangent_mode = "layers" if plain else "forward"
        super()._install()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(nuisances={list(self.nuisances)}, mu_true={self.mu_true}, b_true={self.b_true})"


class Inferno(_TwoProcess):
    r"""Exact INFERNO for a signal (``y == 1``) and a background (``y == 0``): shape
    nuisances transform the inputs, their effect is propagated through the network.

    Use with ``ModelWrapper.fit(..., loss=None, cbs=[Inferno(...)])``; the network must end
    in a softmax (e.g. :class:`~inferno.VariableSoftmax`) and every batch must contain both
    groups. It sets ``wrapper.loss_val`` to :math:`[I^{-1}]_{\mu\mu}`, the expected variance
    of the signal yield, in the training and validation phases.

    Args:
        nuisances: :class:`~inferno.nuisance.ShapeNuisance` (with a ``transform``) and
            :class:`~inferno.nuisance.RateNuisance` objects; the parameters are
            ``(mu, *nuisances)`` in this order.
        mu_true: nominal expected signal yield :math:`\mu` (the parameter of interest).
        b_true: nominal expected background yield.
        hessian: ``'fisher'`` or ``'autograd'``: both give the Fisher information of the
            Asimov likelihood (equal to the NLL's Hessian there); ``'autograd'`` propagates
            the tangents with autograd only (``InfernoLoss(tangents='layers')``: exact higher
            derivatives, slower).
        tangents: ``'auto'`` (layer by layer from the recorded activations of a plain
            ``nn.Sequential``, else forward mode through the whole network), ``'sequential'``
            (layer by layer; an error for other models) or ``'jvp'`` (forward mode).
        eps: floor of the soft histograms.

    Attributes:
        last_hessian: the Fisher information of the latest batch in the parameters
            ``(mu, *nuisances)`` (detached, float64).
    """

    def __init__(self, nuisances: Optional[Sequence[Nuisance]] = None, mu_true: float = _PAPER_S,
                 b_true: float = _PAPER_B, hessian: str = "fisher", tangents: str = "auto", eps: float = 1e-7):
        for n in _check_nuisances(nuisances):
            if isinstance(n, ShapeNuisance) and not n.has_transform:
                raise ValueError(f"shape nuisance {n.name!r} has only up/down modifications: the exact Inferno "
                                 "needs a differentiable transform(x, value); use ApproxInferno for up/down "
                                 "templates")
        if hessian not in ("fisher", "autograd"):
            raise ValueError(f"hessian must be 'fisher' or 'autograd', got {hessian!r}")
        if tangents not in ("auto", "sequential", "jvp"):
            raise ValueError(f"tangents must be 'auto', 'sequential' or 'jvp', got {tangents!r}")
        self._tangent_mode = "forward" if tangents == "jvp" else ("layers" if hessian == "autograd" else "auto")
        super().__init__(nuisances, mu_true, b_true, eps)
        self.hessian, self.tangents = hessian, tangents

    def __repr__(self) -> str:
        return (f"Inferno(nuisances={list(self.nuisances)}, mu_true={self.mu_true}, b_true={self.b_true}, "
                f"hessian={self.hessian!r}, tangents={self.tangents!r})")


class ApproxInferno(_TwoProcess):
    r"""Interpolated INFERNO (the paper's own implementation): every shape nuisance is given by
    up/down inputs (its transform at its ``variations``, or ``up``/``down`` functions); the
    network sees them in one extra forward pass, and the expected counts are interpolated
    between them (HistFactory code 2 or ``'4p'``, whose slope at the nominal point, all the
    Fisher information needs, is :math:`(f^+ - f^-)/2`). The shape parameters are in the
    interpolation coordinate :math:`\alpha` (:math:`\pm 1` at the variations), their
    constraints mapped onto it (:meth:`ShapeNuisance.alpha_curvature`).

    Args:
        nuisances, mu_true, b_true, eps: as :class:`Inferno`.
        interp_code: ``2`` (default) or ``'4p'``; code 0 (piecewise linear) has no derivative
            at the nominal point and is refused.
        aug_alpha, n_steps, lr, aug_std, seed: the Hessian away from the Asimov point (random
            starts refined by Newton steps) of earlier releases; only ``aug_alpha=False`` is
            supported by the one loss (a ValueError otherwise).
    """

    _interpolated = True

    def __init__(self, nuisances: Optional[Sequence[Nuisance]] = None, mu_true: float = _PAPER_S,
                 b_true: float = _PAPER_B, interp_code: Union[int, str] = 2, aug_alpha: bool = False,
                 n_steps: int = 10, lr: float = 0.1, aug_std: float = 0.1, seed: Optional[int] = None,
                 eps: float = 1e-7):
        if aug_alpha:
            raise ValueError("aug_alpha=True (the Hessian away from the Asimov point) is not supported: the "
                             "INFERNO loss is the Fisher information at the Asimov point")
        if interp_code not in (2, "2", "4p"):
            raise ValueError(f"interp_code must be 2 or '4p' (a slope at the nominal point), got {interp_code!r}")
        for n in _check_nuisances(nuisances):
            if isinstance(n, ShapeNuisance):
                n.interp_scale  # raises if a transform-based nuisance has no variations
        self.interp_code, self.aug_alpha = interp_code, False
        self.n_steps, self.lr, self.aug_std, self.seed = int(n_steps), float(lr), float(aug_std), seed
        super().__init__(nuisances, mu_true, b_true, eps)

    def _shape(self, n: ShapeNuisance) -> Tuple[ShapeNuisance, Dict[str, Any]]:
        if n.has_transform:  # up/down inputs: the transform at its variations
            up, dn = (lambda x, v=n.variations[1]: n.apply(x, v)), (lambda x, v=n.variations[0]: n.apply(x, v))
            m = ShapeNuisance(n.name, up=up, down=dn, on=n.on)
        else:
            m = n
        c = n.alpha_curvature()
        con = None if c == 0 else Normal(torch.tensor(0.0, dtype=torch.float64),
                                         torch.tensor(1.0 / math.sqrt(c), dtype=torch.float64))
        return m, {"constraint": con}

    def __repr__(self) -> str:
        return (f"ApproxInferno(nuisances={list(self.nuisances)}, mu_true={self.mu_true}, b_true={self.b_true}, "
                f"interp_code={self.interp_code!r})")


class InfernoPred(PredHandler):
    """Prediction handler giving the hard assignment of each event: the index of its
    largest network output (int64), i.e. the bin of the INFERNO summary statistic."""

    def process(self, y_pred: Tensor) -> Tensor:
        return y_pred.argmax(dim=-1)

    def get_preds(self) -> np.ndarray:
        if not self.preds:
            return np.zeros(0, dtype=np.int64)
        return super().get_preds().astype(np.int64)
