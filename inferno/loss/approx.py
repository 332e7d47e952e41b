r"""The interpolated INFERNO callback for two processes: shape nuisances given by up/down
inputs (or a transform evaluated at its variations), their templates interpolated
(HistFactory code 2), the Hessian by autograd, optionally away from the Asimov point
(``aug_alpha``).
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ..interp import interp_shape
from ..nuisance import Nuisance, ShapeNuisance
from .base import PAPER_B, PAPER_S, _GROUPS, _InfernoBase

__all__ = ["ApproxInferno"]


# ------------------------------------------------------------------------ interpolated
class ApproxInferno(_InfernoBase):
    r"""INFERNO with interpolated shape nuisances (the paper's own implementation).

    For every shape nuisance the rows it acts on are passed through the network at its
    down and up variations (one extra forward pass for all of them), giving down/up soft
    histograms :math:`f^\mp_k`; the shapes at a nuisance value are interpolated with
    HistFactory's code 2 (quadratic inside :math:`|\alpha| \le 1`, linear outside) by
    :func:`inferno.interp.interp_shape`, in the interpolation coordinate :math:`\alpha`
    (:math:`\pm 1` at the variations). Constraints given on the nuisance's value are mapped
    onto :math:`\alpha` (:meth:`ShapeNuisance.alpha_curvature`). Rate nuisances keep their
    physical units. The NLL's Hessian is computed with autograd on this small graph.

    Args:
        nuisances: shape nuisances (with ``transform`` + ``variations``, or ``up``/``down``)
            and rate nuisances.
        mu_true, b_true, eps: as :class:`Inferno`.
        interp_code: interpolation code passed to :func:`~inferno.interp.interp_shape`.
        aug_alpha: start each batch from random parameter values
            :math:`\theta_0 + \mathcal{N}(0, \texttt{aug\_std}^2)` and take ``n_steps``
            damped Newton steps (:math:`\theta \leftarrow \theta - \texttt{lr}\, H^{-1} g`,
            no gradient flow) towards the minimum before computing the Hessian there.
        n_steps, lr, aug_std: see ``aug_alpha``.
        seed: seed of the generator used by ``aug_alpha``.
    """

    def __init__(self, nuisances: Optional[Sequence[Nuisance]] = None, mu_true: float = PAPER_S,
                 b_true: float = PAPER_B, interp_code: Union[int, str] = 2, aug_alpha: bool = False,
                 n_steps: int = 10, lr: float = 0.1, aug_std: float = 0.1, seed: Optional[int] = None,
                 eps: float = 1e-7):
        super().__init__(nuisances, mu_true, b_true, eps)
        for _, n in self.shape_nuis:
            n.interp_scale  # raises if a transform-based nuisance has no variations
        self.interp_code = interp_code
        interp_shape(torch.zeros(1), torch.ones(2), torch.ones(1, 2), torch.ones(1, 2), interp_code)
        self.aug_alpha, self.n_steps, self.lr, self.aug_std = bool(aug_alpha), int(n_steps), float(lr), float(aug_std)
        if self.n_steps < 0 or not self.lr > 0 or not self.aug_std >= 0:
            raise ValueError("n_steps must be >= 0, lr > 0 and aug_std >= 0")
        self.seed = seed
        self.generator = torch.Generator()
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(int(seed))
        self.requires_grad_in_valid = False  # autograd is enabled locally on the small NLL graph

    def _setup(self, device: torch.device) -> None:
        super()._setup(device)
        f64 = dict(dtype=torch.float64, device=self.device)
        # theta: mu (events), shape nuisances in alpha units (nominal 0), rates in their units
        self._theta0 = torch.tensor([self.mu_true] + [0.0 if isinstance(n, ShapeNuisance) else n.nominal
                                                      for n in self.nuisances], **f64)
        self._curv = torch.tensor(
            [0.0] + [n.alpha_curvature() if isinstance(n, ShapeNuisance) else n.curvature()
                     for n in self.nuisances], **f64)

    def on_batch_begin(self) -> None:
        if self._active():
            self._split()

    def _variance(self, yp: Tensor) -> Tensor:
        f_nom = {g: self._floor(self._soft_hist(yp[self._idx[g]], g)) for g in _GROUPS}
        f_ud = self._up_down_shapes(self.wrapper.x)
        with torch.enable_grad():
            hess = self._hessian(f_nom, f_ud)
        return self._poi_variance(hess)

    def _up_down_shapes(self, x: Tensor) -> Dict[str, Tuple[Tensor, Tensor]]:
        """(f_up, f_dw), each (K_g, bins), for the groups with shape nuisances."""
        inputs, sizes = [], []
        for g in _GROUPS:
            xg = x[self._idx[g]]
            for _, n in self.group_nuis[g]:
                up, dw = n.up_down(xg)
                inputs += [up, dw]
                sizes += [len(xg), len(xg)]
        if not inputs:
            return {}
        out = self.wrapper.model(torch.cat(inputs)).split(sizes)
        res, i = {}, 0
        for g in _GROUPS:
            k = len(self.group_nuis[g])
            if k:
                ups = [self._floor(self._soft_hist(out[i + 2 * j], g)) for j in range(k)]
                dws = [self._floor(self._soft_hist(out[i + 2 * j + 1], g)) for j in range(k)]
                res[g] = (torch.stack(ups), torch.stack(dws))
                i += 2 * k
        return res

    def _nu(self, theta: Tensor, f_nom: Dict[str, Tensor], f_ud: Dict[str, Tuple[Tensor, Tensor]]) -> Tensor:
        s, b = self._yields(theta)
        f = {}
        for g in _GROUPS:
            if g in f_ud:
                pos = [p for p, _ in self.group_nuis[g]]
                fi = interp_shape(theta[pos], f_nom[g], f_ud[g][0], f_ud[g][1], self.interp_code)
                fi = fi.clamp_min(1e-3 * self.eps if self.eps > 0 else 1e-30)
                f[g] = fi / fi.sum()
            else:
                f[g] = f_nom[g]
        return s * f["s"] + b * f["b"]

    def _constraint_nll(self, theta: Tensor) -> Tensor:
        """-sum_k log p_k at theta (alpha units for shape nuisances)."""
        out = theta.new_zeros(())
        for i, n in enumerate(self.nuisances, start=1):
            if n.constraint is None:
                continue
            value = n.alpha_to_value(theta[i]) if isinstance(n, ShapeNuisance) else theta[i]
            lp = n.constraint.log_prob(value.cpu()).to(device=theta.device, dtype=torch.float64)
            out = out - lp
        return out

    def _hessian(self, f_nom: Dict[str, Tensor], f_ud: Dict[str, Tuple[Tensor, Tensor]]) -> Tensor:
        n = self._S0_nu(f_nom)

        def nll(theta: Tensor, with_constraints: bool) -> Tensor:
            nu = self._nu(theta, f_nom, f_ud)
            out = (nu - n * torch.log(nu)).sum()
            return out + self._constraint_nll(theta) if with_constraints else out

        theta = self._theta0.clone()
        if self.aug_alpha:
            noise = torch.randn(self.n_params, generator=self.generator, dtype=torch.float64)
            theta = theta + self.aug_std * noise.to(self.device)
            for _ in range(self.n_steps):
                th = theta.detach().requires_grad_(True)
                val = nll(th, True)
                (g,) = torch.autograd.grad(val, th, create_graph=True)
                h = torch.stack([torch.autograd.grad(g[i], th, retain_graph=True, allow_unused=True,
                                                     materialize_grads=True)[0]
                                 for i in range(self.n_params)])
                step = torch.linalg.solve(h.detach(), g.detach())
                theta = (theta - self.lr * step).detach()
        th = theta.detach().requires_grad_(True)
        val = nll(th, self.aug_alpha)
        (g,) = torch.autograd.grad(val, th, create_graph=True)
        h = torch.stack([torch.autograd.grad(g[i], th, create_graph=True, retain_graph=True,
                                             allow_unused=True, materialize_grads=True)[0]
                         for i in range(self.n_params)])
        if not self.aug_alpha:  # at theta_0 the constraint curvature is precomputed
            h = h + torch.diag(self._curv)
        return h

    def _S0_nu(self, f_nom: Dict[str, Tensor]) -> Tensor:
        """Asimov counts: nominal yields times nominal shapes (differentiable in the weights)."""
        s0, b0 = self._yields(self._theta0)
        return s0 * f_nom["s"] + b0 * f_nom["b"]

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(nuisances={list(self.nuisances)}, mu_true={self.mu_true}, "
                f"b_true={self.b_true}, interp_code={self.interp_code!r}, aug_alpha={self.aug_alpha})")
