r"""Pseudo-experiments (main and auxiliary data) and the coverage of profile-likelihood
intervals.

A toy of a :class:`~inferno.likelihood.Model` at true parameters :math:`\vec\theta^*` draws
the main counts :math:`n_i \sim \mathrm{Pois}(\nu_i(\vec\theta^*))` and, for every constrained
parameter, its auxiliary datum from the constraint: :math:`a \sim \mathcal N(\theta^*, \sigma)`
(normal), :math:`a \sim \mathrm{Pois}(\tau\gamma^*)` (Poisson), or for a distribution
constraint :math:`d` the shift :math:`a = x - \mathrm E[x]`, :math:`x \sim d` (whose term
:math:`-\ln d(\theta - a)` then plays an auxiliary measurement fluctuated around
:math:`\theta^* = 0`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor
from torch.distributions import Distribution

from .fit import fit, profile
from .model import DTYPE, Model, _as_tensor

__all__ = ["toys", "generate_toys", "sample_global_obs", "coverage", "CoverageResult"]

Seed = Union[None, int, torch.Generator]


def _generator(seed: Seed, device: torch.device) -> torch.Generator:
    if isinstance(seed, torch.Generator):
        return seed
    g = torch.Generator(device=device)
    g.manual_seed(int(seed) if seed is not None else int(torch.randint(0, 2**62, ()).item()))
    return g


def _n_toys(n_toys: Any) -> int:
    if isinstance(n_toys, bool) or not isinstance(n_toys, (int, np.integer)) or n_toys < 1:
        raise ValueError(f"n_toys must be an integer >= 1, got {n_toys!r}")
    return int(n_toys)


def generate_toys(expected: Any, n_toys: int, seed: Seed = None) -> Tensor:
    r"""Poisson pseudo-data :math:`n_{t,i} \sim \mathrm{Pois}(\nu_i)`.

    Args:
        expected: expected counts :math:`\nu`, shape ``(n_bins,)``, all :math:`\ge 0`.
        n_toys: number of pseudo-experiments.
        seed: an int or a ``torch.Generator`` (same seed, same toys).

    Returns:
        float64 tensor ``(n_toys, n_bins)``.
    """
    nu = _as_tensor(expected, "expected", torch.device("cpu") if not isinstance(expected, Tensor) else expected.device).detach()
    if nu.dim() != 1 or not torch.isfinite(nu).all() or (nu < 0).any():
        raise ValueError("expected must be a 1-D array of finite, non-negative counts")
    n = _n_toys(n_toys)
    return torch.poisson(nu.expand(n, -1).contiguous(), generator=_generator(seed, nu.device))


def sample_global_obs(constraints: Sequence[Optional[Distribution]], n_toys: int, seed: Seed = None) -> Tensor:
    r"""Shifts :math:`g_k = x_k - \mathrm E[x_k]`, :math:`x_k \sim p_k`, of the constraint
    distributions (0 for ``None``), drawn by the inverse CDF from the seeded generator.

    Returns:
        float64 tensor ``(n_toys, len(constraints))``.
    """
    g = _generator(seed, torch.device("cpu"))
    n = _n_toys(n_toys)
    cols = []
    for k, d in enumerate(constraints):
        if d is None:
            cols.append(torch.zeros(n, dtype=DTYPE))
            continue
        u = torch.rand(n, dtype=DTYPE, generator=g).clamp(1e-12, 1 - 1e-12)
        try:
            x = d.icdf(u.to(d.mean.dtype)).to(DTYPE)
        except NotImplementedError:
            raise ValueError(f"constraint {k} ({type(d).__name__}) has no inverse CDF; "
                             "pass global observables explicitly") from None
        cols.append(x - d.mean.to(DTYPE))
    return torch.stack(cols, -1) if cols else torch.zeros(n, 0, dtype=DTYPE)


def toys(model: Model, params: Any = None, n_toys: int = 1000, seed: Seed = None,
         fluctuate_aux: bool = True) -> Tuple[Tensor, Tensor]:
    """Pseudo-experiments ``(main (n_toys, N), aux (n_toys, A))`` at ``params`` (default the
    inits); with ``fluctuate_aux=False`` the auxiliary data are the Asimov ones."""
    n = _n_toys(n_toys)
    p = model.params(params)
    if p.dim() != 1:
        raise ValueError(f"params must be one parameter vector ({model.n_params},), got shape {tuple(p.shape)}")
    g = _generator(seed, model.device)
    nu = model.expected(p)
    if not torch.isfinite(nu).all() or (nu < 0).any():
        raise ValueError("the expected counts at params are not finite and >= 0")
    main = torch.poisson(nu.expand(n, -1).contiguous(), generator=g)
    aux = model.expected_aux(p).expand(n, -1).clone()
    if fluctuate_aux:
        for col, k in enumerate(model._aux_params):
            par = model.parameters[k]
            if par.constraint == "normal":
                aux[:, col] = p[k] + par.sigma * torch.randn(n, dtype=DTYPE, generator=g, device=model.device)
            elif par.constraint == "poisson":
                aux[:, col] = torch.poisson((p[k] * par.tau).expand(n).contiguous(), generator=g)
            else:
                aux[:, col] = sample_global_obs([par.constraint], n, g)[:, 0].to(model.device)
    return main, aux


@dataclass
class CoverageResult:
    """Result of :func:`coverage` (and of the pytorch_inferno-style ``check_coverage``).

    Attributes:
        coverage: fraction of valid toys whose interval contains the true POI.
        error: binomial standard error :math:`\\sqrt{p(1-p)/n}`.
        expected: nominal coverage :math:`2\\Phi(\\sqrt{2\\,\\mathrm{val}}) - 1`.
        n_toys: toys used (fits converged).
        n_failed: toys dropped because a fit did not converge.
        contains: per-toy bool (valid toys only).
        delta_nll: per-toy :math:`-\\ln L_p(\\mu^*) - \\min -\\ln L` (valid toys).
        mu_hat: per-toy best-fit POI (valid toys).
    """

    coverage: float
    error: float
    expected: float
    n_toys: int
    n_failed: int
    contains: np.ndarray
    delta_nll: np.ndarray
    mu_hat: np.ndarray

    def __repr__(self) -> str:
        return (f"CoverageResult(coverage={self.coverage:.4f}, error={self.error:.4f}, expected={self.expected:.4f}, "
                f"n_toys={self.n_toys}, n_failed={self.n_failed})")

    @property
    def pull(self) -> float:
        """(coverage - expected) / error."""
        return (self.coverage - self.expected) / self.error if self.error > 0 else math.inf


def coverage(model: Model, params: Any = None, n_toys: int = 300, seed: Seed = 0, val: float = 0.5,
             poi: Optional[str] = None, fluctuate_aux: bool = True, tol: float = 1e-9,
             toy_data: Optional[Tuple[Tensor, Tensor]] = None, multistart: Any = "kinked") -> CoverageResult:
    r"""Coverage of the profile-likelihood interval :math:`\{\mu: -\ln L_p(\mu) - \min -\ln L
    \le \mathrm{val}\}` of the POI, with toys at ``params`` (default the inits).

    Per toy a global fit gives :math:`\min -\ln L` and a profile fit at the true POI gives
    :math:`-\ln L_p(\mu^*)`; the interval contains the truth iff their difference is
    :math:`\le` ``val`` (for a unimodal profile, the same as reading it off a scan, without
    the scan's interpolation error). All toys run as one batch. ``toy_data``: use these
    ``(main, aux)`` instead of drawing toys; ``multistart``: as in :func:`~inferno.likelihood.fit`.
    """
    p = model.params(params)
    name = poi if poi is not None else (model.poi_names[0] if model.poi_names else None)
    if name is None:
        raise ValueError("the model has no POI: name the parameter whose coverage to check")
    k = model.index(name)
    main, aux = toy_data if toy_data is not None else toys(model, p, n_toys, seed, fluctuate_aux)
    f = fit(model, main, aux, init=p, on_fail="ignore", multistart=multistart)
    prof = profile(model, main, [float(p[k])], aux=aux, poi=name, init=p, tol=tol, on_fail="ignore",
                   multistart=multistart)
    ok = (f.converged & prof.converged[..., 0]).cpu().numpy()
    n_ok = int(ok.sum())
    if n_ok == 0:
        raise RuntimeError("no pseudo-experiment converged")
    dnll = (prof.nll[..., 0] - f.nll).cpu().numpy()[ok]
    contains = dnll <= val
    cov = float(contains.mean())
    return CoverageResult(coverage=cov, error=math.sqrt(max(cov * (1 - cov), 1e-300) / n_ok),
                          expected=math.erf(math.sqrt(val)), n_toys=n_ok, n_failed=int(main.shape[0]) - n_ok,
                          contains=contains, delta_nll=dnll, mu_hat=f.params[..., k].cpu().numpy()[ok])
