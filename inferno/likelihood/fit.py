r"""Measurements on a :class:`~inferno.likelihood.Model`: maximum-likelihood fits and
profile-likelihood scans (1-D and 2-D), batched over data sets and scan points.

Every function takes observed counts ``(..., N)`` (or a dict per channel) and optional
auxiliary data ``(..., A)``; leading dimensions are independent data sets (e.g. toys) and are
all minimised in one batch by :mod:`~inferno.likelihood.solver`.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from .intervals import get_interval, get_likelihood_width
from .model import DTYPE, Model, _as_tensor
from .solver import minimize

__all__ = ["fit", "profile", "profile2d", "FitResult", "ProfileResult", "ConvergenceWarning"]

Multistart = Union[bool, str]


class ConvergenceWarning(RuntimeWarning):
    """A fit or profile point did not converge to the requested tolerance."""


def _report(converged: Tensor, what: str, on_fail: str, where: Callable[[Tensor], str]) -> None:
    if on_fail not in ("warn", "raise", "ignore"):
        raise ValueError(f"on_fail must be 'warn', 'raise' or 'ignore', got {on_fail!r}")
    if bool(converged.all()) or on_fail == "ignore":
        return
    msg = f"{int((~converged).sum())} of {converged.numel()} {what} did not converge: {where(~converged)}"
    if on_fail == "raise":
        raise RuntimeError(msg)
    warnings.warn(msg, ConvergenceWarning, stacklevel=3)


def _multistart(m: Multistart) -> str:
    if m is True or m == "all":
        return "all"
    if m is False or m == "none":
        return "none"
    if m == "kinked":
        return "kinked"
    raise ValueError(f"multistart must be True, False, 'all', 'kinked' or 'none', got {m!r}")


def _setup(model: Model, observed: Any, aux: Any, init: Any, fixed: Optional[Mapping[str, float]]):
    n = model.main_data(observed)
    a = model.aux_data(aux)
    p0 = model.params(init)
    is_fixed = model.fixed.clone()
    for name, v in (fixed or {}).items():
        k = model.index(name)
        p0 = p0.clone()
        p0[..., k] = float(v)
        is_fixed[k] = True
    return n, a, p0, is_fixed


@dataclass
class FitResult:
    """Result of :func:`fit`.

    Attributes:
        params: best-fit parameters ``(..., P)``, ordered as ``names``.
        uncertainties: :math:`\\sqrt{\\mathrm{diag}\\,H^{-1}}` over the free parameters (0 for
            fixed ones), ``(..., P)``.
        cov: :math:`H^{-1}` over the free parameters (zero rows/columns for fixed ones;
            NaN where the Hessian is not positive definite), ``(..., P, P)``.
        nll: minimum :math:`-\\ln L`, ``(...)``.
        converged: bool ``(...)`` (False also where the Hessian is not positive definite).
        n_iter: Newton iterations (summed over multistart's starts).
        names: parameter names.
        poi_index: positions of the POIs in ``names``.
    """

    params: Tensor
    uncertainties: Tensor
    cov: Tensor
    nll: Tensor
    converged: Tensor
    n_iter: Tensor
    names: List[str]
    poi_index: List[int]

    @property
    def poi(self) -> Tensor:
        """Best-fit POI: ``(...)`` for one POI, ``(..., n_poi)`` for several."""
        return self.params[..., self.poi_index[0]] if len(self.poi_index) == 1 else self.params[..., self.poi_index]

    @property
    def poi_unc(self) -> Tensor:
        """Hessian uncertainty of the POI(s), other parameters profiled."""
        return (self.uncertainties[..., self.poi_index[0]] if len(self.poi_index) == 1
                else self.uncertainties[..., self.poi_index])

    # pytorch_inferno's names (its POI is the signal yield ``mu``)
    mu = poi
    mu_unc = poi_unc

    def __getitem__(self, name: str) -> Tensor:
        """Best-fit value of parameter ``name``."""
        try:
            return self.params[..., self.names.index(name)]
        except ValueError:
            raise KeyError(f"unknown parameter {name!r}; parameters: {self.names}") from None


@dataclass
class ProfileResult:
    """Result of :func:`profile` / :func:`profile2d`.

    Attributes:
        nll: profiled :math:`-\\ln L` at every scan point, ``(..., n_scan)`` (2-D:
            ``(..., n_x, n_y)``).
        params: parameters at every point, ``(..., n_scan, P)``.
        converged: bool, shape of ``nll``.
        n_iter: Newton iterations per point.
        names: parameter names.
        poi_values: the scan values (2-D: a pair).
        poi: the scanned parameter name(s).
    """

    nll: Tensor
    params: Tensor
    converged: Tensor
    n_iter: Tensor
    names: List[str]
    poi_values: Any
    poi: Any

    @property
    def mu_scan(self) -> Tensor:
        """The scan values (pytorch_inferno's name)."""
        return self.poi_values

    def interval(self, val: float = 0.5) -> Tuple[float, float, float]:
        r"""``(low, high, best)`` of a 1-D scan of one data set at :math:`\Delta(-\ln L)` = ``val``
        (:func:`~inferno.likelihood.intervals.get_interval`)."""
        self._one_scan("interval")
        return get_interval(self.nll, self.poi_values, val)

    def width(self, val: float = 0.5) -> float:
        """Half width of :meth:`interval` (the 1-sigma uncertainty for ``val=0.5``)."""
        self._one_scan("width")
        return get_likelihood_width(self.nll, self.poi_values, val)

    def _one_scan(self, what: str) -> None:
        if isinstance(self.poi, tuple) or self.nll.dim() != 1:
            raise ValueError(f"{what}() reads one 1-D scan, this result holds scans of shape {tuple(self.nll.shape)}: "
                             f"use get_interval(result.nll[i], result.poi_values) for data set i")

    @property
    def delta_nll(self) -> Tensor:
        """:math:`-\\ln L - \\min_\\text{scan} -\\ln L` per data set."""
        flat = self.nll.reshape(self.nll.shape[:-2] + (-1,)) if isinstance(self.poi, tuple) else self.nll
        m = torch.nan_to_num(flat, nan=math.inf).amin(-1)
        return self.nll - (m[..., None, None] if isinstance(self.poi, tuple) else m[..., None])


def fit(model: Model, observed: Any, aux: Any = None, init: Any = None, fixed: Optional[Mapping[str, float]] = None,
        tol: float = 1e-10, max_iter: int = 100, multistart: Multistart = "kinked",
        on_fail: str = "warn") -> FitResult:
    r"""Maximum-likelihood fit: :math:`\min_{\vec\theta} -\ln L(\vec\theta)` over the free
    parameters, batched over the leading dimensions of ``observed`` / ``aux``, with the
    covariance :math:`H^{-1}` of the free parameters from a Cholesky factorisation of the
    analytic Hessian at the minimum (so the POI's uncertainty includes profiling).

    Args:
        model: the model.
        observed: observed counts ``(..., N)`` or ``{channel: counts}``.
        aux: auxiliary data ``(..., A)`` (default: nominal).
        init: starting parameters ``(P,)`` or ``(..., P)`` (default: the inits).
        fixed: ``{name: value}`` held fixed in this fit, besides the model's fixed ones.
        tol: convergence tolerance on the Newton decrement (NLL units).
        max_iter: maximum Newton iterations.
        multistart: ``'kinked'`` (default: extra starts at the corners of the code-0 /
            code-1 parameters, whose kinks can make the NLL multimodal), ``True``/``'all'``
            (every histosys / normsys parameter), ``False``/``'none'``.
        on_fail: ``'warn'`` (:class:`ConvergenceWarning`), ``'raise'`` or ``'ignore'``.

    With a kinked code the Hessian at a minimum exactly on the kink is one-sided; use a
    profile scan for the interval there.
    """
    n, a, p0, is_fixed = _setup(model, observed, aux, init, fixed)
    P = model.n_params
    batch = torch.broadcast_shapes(n.shape[:-1], a.shape[:-1], p0.shape[:-1])
    free = (~is_fixed).nonzero().squeeze(-1).tolist()
    B = math.prod(batch)
    flat_p = p0.expand(batch + (P,)).reshape(B, P)
    nb, ab = n.expand(batch + n.shape[-1:]).reshape(B, n.shape[-1]), a.expand(batch + a.shape[-1:]).reshape(B, a.shape[-1])
    with torch.no_grad():
        if free:
            r = minimize(model, flat_p, nb, ab, free, tol, max_iter, _multistart(multistart))
            p, nll, H, conv, n_iter = r.p, r.nll, r.hess, r.converged, r.n_iter
        else:
            p, nll = flat_p, model._nll_flat(flat_p, nb, ab)
            H = torch.zeros(flat_p.shape + (P,), dtype=DTYPE, device=flat_p.device)
            conv, n_iter = torch.isfinite(nll), torch.zeros(nll.shape, dtype=torch.long, device=nll.device)
        ft = torch.as_tensor(free, dtype=torch.long, device=p.device)
        Hf = H[:, ft][:, :, ft]
        L, info = torch.linalg.cholesky_ex(Hf)
        pd = info == 0
        eye = torch.eye(len(free), dtype=DTYPE, device=p.device)
        covf = torch.cholesky_inverse(torch.where(pd[:, None, None], L, eye))
        covf = torch.where(pd[:, None, None], covf, torch.full_like(covf, math.nan))
        cov = torch.zeros(p.shape + (P,), dtype=DTYPE, device=p.device)
        cov[:, ft[:, None], ft[None, :]] = covf
    conv = conv & pd
    unc = cov.diagonal(dim1=-2, dim2=-1).clamp_min(0).sqrt()  # NaN stays NaN
    _report(conv, "fits", on_fail, lambda bad: f"data sets {bad.nonzero().squeeze(-1)[:10].tolist()} "
            "(not converged or Hessian not positive definite)")
    return FitResult(params=p.reshape(batch + (P,)), uncertainties=unc.reshape(batch + (P,)),
                     cov=cov.reshape(batch + (P, P)), nll=nll.reshape(batch), converged=conv.reshape(batch),
                     n_iter=n_iter.reshape(batch), names=model.names, poi_index=list(model.poi_index))


def _scan(model: Model, observed: Any, aux: Any, pois: Sequence[str], grid: Tensor, init: Any,
          fixed: Optional[Mapping[str, float]], tol: float, max_iter: int, multistart: Multistart):
    """Minimise at every point of ``grid`` ``(n_points, len(pois))`` with the POIs fixed."""
    n, a, p0, is_fixed = _setup(model, observed, aux, init, fixed)
    P = model.n_params
    ks = [model.index(name) for name in pois]
    batch = torch.broadcast_shapes(n.shape[:-1], a.shape[:-1], p0.shape[:-1])
    full = batch + (grid.shape[0],)
    start = p0.unsqueeze(-2).expand(batch + (grid.shape[0], P)).clone()
    start[..., ks] = grid.to(start.device)
    for k in ks:
        is_fixed[k] = True
    free = (~is_fixed).nonzero().squeeze(-1).tolist()
    B = math.prod(full)
    nb = n.unsqueeze(-2).expand(full + n.shape[-1:]).reshape(B, n.shape[-1])
    ab = a.unsqueeze(-2).expand(full + a.shape[-1:]).reshape(B, a.shape[-1])
    flat = start.reshape(B, P)
    with torch.no_grad():
        if free:
            r = minimize(model, flat, nb, ab, free, tol, max_iter, _multistart(multistart))
            p, nll, conv, n_iter = r.p, r.nll, r.converged, r.n_iter
        else:
            p, nll = flat, model._nll_flat(flat, nb, ab)
            conv, n_iter = torch.isfinite(nll), torch.zeros(nll.shape, dtype=torch.long, device=nll.device)
    return full, p.reshape(full + (P,)), nll.reshape(full), conv.reshape(full), n_iter.reshape(full)


def _values(v: Any, what: str, device: torch.device) -> Tensor:
    t = _as_tensor(v, what, device).reshape(-1)
    if t.numel() == 0 or not torch.isfinite(t).all():
        raise ValueError(f"{what} must be non-empty and finite")
    if t.numel() > 1 and (t[1:] <= t[:-1]).any():
        raise ValueError(f"{what} must be strictly increasing")
    return t


def _poi_name(model: Model, poi: Optional[str], k: int = 0) -> str:
    if poi is not None:
        model.index(poi)
        return poi
    if len(model.poi_names) <= k:
        raise ValueError(f"the model has {len(model.poi_names)} POI(s): name the parameter(s) to scan")
    return model.poi_names[k]


def profile(model: Model, observed: Any, poi_values: Any, aux: Any = None, poi: Optional[str] = None,
            init: Any = None, fixed: Optional[Mapping[str, float]] = None, tol: float = 1e-9, max_iter: int = 100,
            multistart: Multistart = "kinked", on_fail: str = "warn", max_memory: Optional[int] = None,
            executor: Any = None) -> ProfileResult:
    r"""Profile-likelihood scan :math:`\min_{\vec\theta} -\ln L(\mu, \vec\theta)` at every
    value of ``poi_values`` (strictly increasing), all points (and all data sets of
    ``observed``'s leading dimensions) in one batch.

    Args:
        poi: the scanned parameter (default: the model's first POI; other POIs are profiled).
        max_memory: bytes (None: no cap): the data sets along ``observed``'s first dimension
            (e.g. 10^5 toys) are scanned in chunks whose fits stay below it, by
            :func:`~inferno.likelihood.toys.toy_memory` per fit (one data set and scan
            point); the same numbers as one batch.
        executor: scan the data sets as tasks of an executor (a ``dask.distributed.Client``:
            one task per worker thread at least, or a ``concurrent.futures`` executor: one per
            worker), each under ``max_memory`` (a cap per task: threads of one process run
            several at once); the same numbers as one batch.
        others: as :func:`fit`.

    Returns:
        :class:`ProfileResult`; ``.nll`` has shape ``(..., n_scan)``.
    """
    name = _poi_name(model, poi)
    vals = _values(poi_values, "poi_values", model.device)
    if max_memory is not None or executor is not None:
        from .toys import map_tasks, n_tasks
        chunks = _data_chunks(model, observed, aux, init, vals.numel(), multistart, max_memory, n_tasks(executor))
        if len(chunks) > 1 or executor is not None:
            parts = map_tasks(executor, profile, [(model, o, vals, a, poi, i, fixed, tol, max_iter, multistart, "ignore")
                                                  for o, a, i in chunks])
            res = ProfileResult(*(torch.cat([getattr(r, f) for r in parts]) for f in ("nll", "params", "converged", "n_iter")),
                                names=model.names, poi_values=vals, poi=name)
            _report(res.converged, "profile points", on_fail,
                    lambda bad: f"{name} = {vals.expand(bad.shape)[bad][:10].tolist()}")
            return res
    full, p, nll, conv, n_iter = _scan(model, observed, aux, [name], vals[:, None], init, fixed, tol, max_iter, multistart)
    _report(conv, "profile points", on_fail, lambda bad: f"{name} = {vals.expand(full)[bad][:10].tolist()}")
    return ProfileResult(nll=nll, params=p, converged=conv, n_iter=n_iter, names=model.names, poi_values=vals, poi=name)


def _data_chunks(model: Model, observed: Any, aux: Any, init: Any, n_points: int, multistart: Multistart,
                 max_memory: Any, tasks: int = 1):
    """``(observed, aux, init)`` cut along the data sets' first dimension into at least
    ``tasks`` chunks whose ``n_points`` fits per data set fit in ``max_memory`` bytes (None:
    no cap); ``[(observed, aux, init)]`` when one chunk does."""
    from .toys import _max_memory, toy_memory

    cap = _max_memory(max_memory)
    n = _as_tensor(observed, "observed", model.device)
    if n.ndim < 2:
        return [(observed, aux, init)]
    size = -(-n.shape[0] // max(1, tasks))
    if cap is not None:
        per_set = n_points * toy_memory(model, multistart) * math.prod(n.shape[1:-1])
        if cap < per_set:
            raise ValueError(f"max_memory = {cap} bytes is below one data set's scan ({per_set} bytes estimated)")
        size = min(size, max(1, cap // per_set))
    if size >= n.shape[0]:
        return [(observed, aux, init)]

    def cut(t: Any, k: int) -> Any:
        """The chunk's part of ``t`` when it has the data sets' leading dimensions (else it
        broadcasts over them and goes whole)."""
        if t is None:
            return None
        t = _as_tensor(t, "aux/init", model.device)
        return t[k:k + size] if t.ndim == n.ndim and t.shape[0] == n.shape[0] else t

    return [(n[k:k + size], cut(aux, k), cut(init, k)) for k in range(0, n.shape[0], size)]


def profile2d(model: Model, observed: Any, x_values: Any, y_values: Any, pois: Optional[Tuple[str, str]] = None,
              aux: Any = None, init: Any = None, fixed: Optional[Mapping[str, float]] = None, tol: float = 1e-9,
              max_iter: int = 100, multistart: Multistart = "kinked", on_fail: str = "warn") -> ProfileResult:
    r"""Two-dimensional profile scan over two POIs (default the model's first two): ``.nll``
    has shape ``(..., n_x, n_y)``; all grid points in one batch. The 68.3% (95%) region is
    :math:`\Delta(-\ln L) \le 1.15` (3.0) for two parameters."""
    names = (_poi_name(model, None, 0), _poi_name(model, None, 1)) if pois is None else tuple(pois)
    if len(names) != 2 or names[0] == names[1]:
        raise ValueError(f"pois must be two different parameters, got {names}")
    xs = _values(x_values, "x_values", model.device)
    ys = _values(y_values, "y_values", model.device)
    grid = torch.cartesian_prod(xs, ys)
    full, p, nll, conv, n_iter = _scan(model, observed, aux, list(names), grid, init, fixed, tol, max_iter, multistart)
    _report(conv, "profile points", on_fail, lambda bad: f"{names} = {grid[bad.reshape(-1, grid.shape[0]).any(0)][:5].tolist()}")
    shape = full[:-1] + (xs.numel(), ys.numel())
    P = model.n_params
    return ProfileResult(nll=nll.reshape(shape), params=p.reshape(shape + (P,)), converged=conv.reshape(shape),
                         n_iter=n_iter.reshape(shape), names=model.names, poi_values=(xs, ys), poi=names)
