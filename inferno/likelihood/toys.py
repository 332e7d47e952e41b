r"""Pseudo-experiments (main and auxiliary data) and the coverage of profile-likelihood
intervals.

A toy of a :class:`~inferno.likelihood.Model` at true parameters :math:`\vec\theta^*` draws
the main counts :math:`n_i \sim \mathrm{Pois}(\nu_i(\vec\theta^*))` and, for every constrained
parameter, its auxiliary datum from the constraint: :math:`a \sim \mathcal N(\theta^*, \sigma)`
(normal), :math:`a \sim \mathrm{Pois}(\tau\gamma^*)` (Poisson), or for a distribution
constraint :math:`d` the shift :math:`a = x - \mathrm E[x]`, :math:`x \sim d` (whose term
:math:`-\ln d(\theta - a)` then plays an auxiliary measurement fluctuated around
:math:`\theta^* = 0`).

Memory: :func:`coverage` fits its toys in chunks whose batched fits stay below ``max_memory``
bytes (default 1 GiB; :func:`toy_memory` is the estimate per toy), and :func:`toys` draws
its Poisson counts in chunks under the same cap. On the CPU the chunks change none of the
numbers: the toys are drawn once, from the same generator stream, and the fits of different
toys are independent.

Several processes or machines: :func:`coverage` and :func:`~inferno.likelihood.profile` take
an ``executor`` (a ``dask.distributed.Client``, or a ``concurrent.futures`` executor) and fit
their chunks of toys as its tasks (:func:`map_tasks`), with the same numbers.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor
from torch.distributions import Distribution

from .fit import _multistart, fit, profile
from .model import DTYPE, Model, _as_tensor
from .solver import _starts

__all__ = ["toys", "generate_toys", "sample_global_obs", "coverage", "CoverageResult", "toy_memory", "map_tasks",
           "n_tasks"]

Seed = Union[None, int, torch.Generator]

#: the default cap of :func:`toys` and :func:`coverage` on their working memory (bytes)
MAX_MEMORY = 2 ** 30
#: candidate step lengths the solver's line search evaluates at once per problem
#: (``Newton(n_halvings=30)``)
_LINE_SEARCH = 30


def _max_memory(max_memory: Any) -> Optional[int]:
    if max_memory is None:
        return None
    if isinstance(max_memory, bool) or not isinstance(max_memory, (int, np.integer)) or max_memory < 1:
        raise ValueError(f"max_memory must be a number of bytes (an integer >= 1) or None, got {max_memory!r}")
    return int(max_memory)


def n_tasks(executor: Any) -> int:
    """How many tasks keep ``executor`` busy: 1 without one; a ``dask.distributed.Client``:
    its workers' threads; a ``concurrent.futures`` executor: its workers; else the cores."""
    if executor is None:
        return 1
    if callable(getattr(executor, "nthreads", None)):  # dask.distributed.Client
        return max(1, sum(executor.nthreads().values()))
    return max(1, int(getattr(executor, "_max_workers", 0) or os.cpu_count() or 1))


def map_tasks(executor: Any, fn: Callable[..., Any], args: Sequence[Tuple[Any, ...]]) -> List[Any]:
    """``[fn(*a) for a in args]``, as tasks of ``executor`` (anything with ``submit(fn, *a)``
    returning a future with ``.result()``: a ``dask.distributed.Client``, a ``concurrent.futures``
    executor), in order; a task's error is raised here. None: in this process. A tensor argument
    that views a larger storage (a chunk sliced from all the toys) is sent as a copy of itself:
    pickling a view ships its whole storage."""
    if executor is None:
        return [fn(*a) for a in args]

    def own(v: Any) -> Any:
        return v.clone() if isinstance(v, Tensor) and v.untyped_storage().nbytes() > v.nbytes else v

    futures = [executor.submit(fn, *map(own, a)) for a in args]
    try:
        return [f.result() for f in futures]
    except BaseException:
        for f in futures:  # the rest is not waited for
            f.cancel()
        raise


def toy_memory(model: Model, multistart: Any = "kinked") -> int:
    r"""Estimated peak working memory, in bytes, of :func:`coverage`'s fits per toy.

    Per toy, :func:`coverage` runs a global fit and then a profile fit (the POI fixed), each
    a batched damped Newton minimisation from :math:`S` starts (1, or with ``multistart``
    1 + the corners of the kinked / shape parameters). With :math:`P` parameters,
    :math:`N` bins, :math:`J` samples, :math:`L` linear factors per sample and bin
    (normfactor, lumi, staterror, ...), :math:`T` histosys terms and :math:`h = 30`
    candidate step lengths in the line search, one start holds at most (float64 numbers)

    .. math::

        W = \underbrace{4P^2 + 3(P+1)N + (P+1)^2}_{\text{Hessians, Jacobian}}
          + \underbrace{JN(4 + 5L) + TN(4 + 3L) + 8JL^2N\,[L \ge 2]}_{\nu\text{'s factors and
            their derivatives}}
          + \underbrace{h\,\big(JN(L + 3) + TN + P\big)}_{\text{line search}}

    (the tensors of ``CompiledModel.nll_grad_hess`` and of the solver's loop), and the
    estimate is :math:`8\,(S W + 4P^2 + 4P + 2N)` bytes, the last terms for the fit's result
    (its covariance) and the toy's own data. It is meant as an upper bound; the tests check
    it against the allocator's peak (``tests/test_toys_scale.py``).

    Args:
        model: the model.
        multistart: as in :func:`~inferno.likelihood.fit`.
    """
    cm = model._cm
    c = cm.c
    P, N, J = model.n_params, model.n_bins, cm.n_samples
    L, T = int(c["L"]), int(c["h_j"].numel())
    free = (~model.fixed).nonzero().squeeze(-1).tolist()
    which = _multistart(multistart)
    st = _starts(model, free, which) if free and which != "none" else None
    S = 1 if st is None else 1 + int(st[1].shape[0])
    h = _LINE_SEARCH
    W = (4 * P * P + 3 * (P + 1) * N + (P + 1) ** 2 + J * N * (4 + 5 * L) + T * N * (4 + 3 * L)
         + (8 * J * L * L * N if L >= 2 else 0) + h * (J * N * (L + 3) + T * N + P))
    return 8 * (S * W + 4 * P * P + 4 * P + 2 * N)


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
         fluctuate_aux: bool = True, max_memory: Optional[int] = MAX_MEMORY) -> Tuple[Tensor, Tensor]:
    """Pseudo-experiments ``(main (n_toys, N), aux (n_toys, A))`` at ``params`` (default the
    inits); with ``fluctuate_aux=False`` the auxiliary data are the Asimov ones.

    ``max_memory`` (bytes; None: no cap) caps the working memory beyond the result: on the
    CPU the Poisson counts are drawn in chunks of toys whose copy of the expected counts
    fits in it, from the same generator stream (the same toys as one draw); on other
    devices, whose generators advance per call, they are drawn at once.
    """
    n = _n_toys(n_toys)
    cap = _max_memory(max_memory)
    p = model.params(params)
    if p.dim() != 1:
        raise ValueError(f"params must be one parameter vector ({model.n_params},), got shape {tuple(p.shape)}")
    g = _generator(seed, model.device)
    nu = model.expected(p)
    if not torch.isfinite(nu).all() or (nu < 0).any():
        raise ValueError("the expected counts at params are not finite and >= 0")
    step = n if cap is None or nu.device.type != "cpu" else max(1, cap // (8 * max(nu.numel(), 1)))
    if step >= n:
        main = torch.poisson(nu.expand(n, -1).contiguous(), generator=g)
    else:  # the CPU kernel draws element after element: chunks of rows give the same counts
        main = torch.empty(n, nu.numel(), dtype=nu.dtype, device=nu.device)
        for i in range(0, n, step):
            k = min(step, n - i)
            main[i:i + k] = torch.poisson(nu.expand(k, -1).contiguous(), generator=g)
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


def _coverage_fits(model: Model, n: Tensor, a: Tensor, p: Tensor, name: str, tol: float,
                   multistart: Any) -> Tuple[Tensor, Tensor, Tensor]:
    """One batch of :func:`coverage`'s toys: (both fits converged, profile - global NLL, fitted
    POI), on the CPU."""
    k = model.index(name)
    f = fit(model, n, a, init=p, on_fail="ignore", multistart=multistart)
    prof = profile(model, n, [float(p[k])], aux=a, poi=name, init=p, tol=tol, on_fail="ignore", multistart=multistart)
    return (f.converged & prof.converged[..., 0]).cpu(), (prof.nll[..., 0] - f.nll).cpu(), f.params[..., k].cpu()


def coverage(model: Model, params: Any = None, n_toys: int = 300, seed: Seed = 0, val: float = 0.5,
             poi: Optional[str] = None, fluctuate_aux: bool = True, tol: float = 1e-9,
             toy_data: Optional[Tuple[Tensor, Tensor]] = None, multistart: Any = "kinked",
             max_memory: Optional[int] = MAX_MEMORY, executor: Any = None) -> CoverageResult:
    r"""Coverage of the profile-likelihood interval :math:`\{\mu: -\ln L_p(\mu) - \min -\ln L
    \le \mathrm{val}\}` of the POI, with toys at ``params`` (default the inits).

    Per toy a global fit gives :math:`\min -\ln L` and a profile fit at the true POI gives
    :math:`-\ln L_p(\mu^*)`; the interval contains the truth iff their difference is
    :math:`\le` ``val`` (for a unimodal profile, the same as reading it off a scan, without
    the scan's interpolation error). ``toy_data``: use these ``(main, aux)`` instead of
    drawing toys; ``multistart``: as in :func:`~inferno.likelihood.fit`.

    The toys are drawn once (:func:`toys`), then fitted as batches of as many toys as fit in
    ``max_memory`` bytes (None: all toys in one batch) besides the toys themselves, by the
    estimate :func:`toy_memory`. The toys are independent problems, so the result is the
    same for every cap. ``executor``: the batches are tasks of it (:func:`map_tasks`; at least
    :func:`n_tasks` of them, each under ``max_memory``: a cap per task, and threads of one
    process run several at once), with the same result.

    Raises:
        ValueError: a bad ``max_memory``, or one below the toys' own storage plus one toy's
            fits.
    """
    cap = _max_memory(max_memory)
    p = model.params(params)
    name = poi if poi is not None else (model.poi_names[0] if model.poi_names else None)
    if name is None:
        raise ValueError("the model has no POI: name the parameter whose coverage to check")
    model.index(name)  # an unknown parameter fails here, before any toy is drawn
    main, aux = toy_data if toy_data is not None else toys(model, p, n_toys, seed, fluctuate_aux, max_memory=cap)
    n_all = model.main_data(main)
    a_all = model.aux_data(aux)
    batch = torch.broadcast_shapes(n_all.shape[:-1], a_all.shape[:-1])
    n_all = n_all.expand(batch + n_all.shape[-1:]).reshape(-1, n_all.shape[-1])
    a_all = a_all.expand(batch + a_all.shape[-1:]).reshape(-1, a_all.shape[-1])
    B = n_all.shape[0]
    step = -(-B // n_tasks(executor))
    if cap is not None:
        stored = 8 * (n_all.numel() + a_all.numel() + 4 * B)  # the toys, and per toy the results kept
        per_toy = toy_memory(model, multistart)
        if cap < stored + per_toy:
            raise ValueError(f"max_memory={cap} bytes is below the {B} toys' storage ({stored} bytes) plus one "
                             f"toy's fits ({per_toy} bytes, toy_memory): raise it or use fewer toys")
        step = min(step, max(1, (cap - stored) // per_toy))
    parts = map_tasks(executor, _coverage_fits, [(model, n_all[i:i + step], a_all[i:i + step], p, name, tol, multistart)
                                                 for i in range(0, B, step)])
    ok_l, dnll_l, mu_l = zip(*parts)
    ok = torch.cat(ok_l).numpy()
    n_ok = int(ok.sum())
    if n_ok == 0:
        raise RuntimeError("no pseudo-experiment converged")
    dnll = torch.cat(dnll_l).numpy()[ok]
    contains = dnll <= val
    cov = float(contains.mean())
    return CoverageResult(coverage=cov, error=math.sqrt(max(cov * (1 - cov), 1e-300) / n_ok),
                          expected=math.erf(math.sqrt(val)), n_toys=n_ok, n_failed=B - n_ok,
                          contains=contains, delta_nll=dnll, mu_hat=torch.cat(mu_l).numpy()[ok])
