r"""The pytorch_inferno-style measurement API over :mod:`inferno.likelihood`: templates of a
trained summary, and ``calc_profile``, ``fit_mle``, ``calc_nll``, ``check_coverage`` on the
one-channel model of a signal and one background.

The model is :func:`~inferno.compat.paper_model.paper_model`'s.

The fits, scans, intervals and toys are those of :mod:`inferno.likelihood` (a batched
Newton solver with analytic derivatives; multistart over the shape nuisances, because the
NLL can have one minimum per orthant of :math:`\vec\alpha` with code 0's kink, or with free
nuisances).
"""
from __future__ import annotations

from typing import Any, Callable, List, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor
from torch.distributions import Distribution

from ..likelihood.fit import ConvergenceWarning, FitResult, ProfileResult, fit, profile
from ..likelihood.intervals import get_interval, get_likelihood_width
from ..likelihood.toys import CoverageResult, coverage, generate_toys, sample_global_obs
from ..templates import bin_preds, get_paper_syst_shapes, get_shape, get_syst_shapes  # noqa: F401  (re-exported)
from .paper_model import DTYPE, ArrayLike, _as_f64, _resolve_data, _Templates, paper_model
from .pyhf_export import PYHF_INTERP_CODES, nll_offset, pyhf_model, to_pyhf_workspace  # noqa: F401  (re-exported)

__all__ = [
    "bin_preds", "get_shape", "get_syst_shapes", "get_paper_syst_shapes", "paper_model",
    "calc_nll", "calc_profile", "fit_mle", "ProfileResult", "FitResult", "ConvergenceWarning",
    "get_likelihood_width", "get_interval", "generate_toys", "sample_global_obs",
    "check_coverage", "CoverageResult", "to_pyhf_workspace", "pyhf_model", "nll_offset", "PYHF_INTERP_CODES",
]


def _resolve_gobs(t: _Templates, global_obs: Any) -> Optional[Tensor]:
    if global_obs is None:
        return None
    g = _as_f64(global_obs, "global_obs", t.device)
    if g.dim() == 0 or g.shape[-1] != t.P - 1:
        raise ValueError(f"global_obs must have shape (..., n_nuisances={t.P - 1}) "
                         f"(one per nuisance, ordered as ProfileResult.names[1:]), got {tuple(g.shape)}")
    if not torch.isfinite(g).all():
        raise ValueError("global_obs contains NaN or inf")
    return g


def _multistart_arg(multistart: bool) -> str:
    return "all" if multistart else "none"


_MODEL_DOC = """
        f_s_nom, f_b_nom: nominal signal and background templates, shape ``(n_bins,)``
            (normalised: the yields are carried by ``mu`` and ``b_true``).
        f_s_up, f_s_dw, f_b_up, f_b_dw: up/down templates, shape ``(n_shape, n_bins)``;
            give both of a pair or neither.  If both processes have them, their numbers of
            nuisances must agree (use the nominal for a process a nuisance does not move).
        shape_aux: one constraint per shape nuisance (a scalar ``torch.distributions``
            distribution on :math:`\\alpha_k` in interpolation units, e.g. ``Normal(0, 2)``),
            ``None`` for a free one; ``None`` for the whole list: all free.
        s_norm_aux: constraints of additive signal-rate nuisances (one parameter each).
        b_norm_aux: constraints of additive background-rate nuisances (offsets from
            ``b_true``, e.g. ``Normal(0, 100)``).
        nonaux_b_norm: add a free (unconstrained) background-rate offset.
        b_true: nominal background yield :math:`b_\\mathrm{true}`; default ``n_obs -
            mu_true`` for a scalar ``n_obs``, required with per-bin counts.
        interp_code: template interpolation code, ``0``, ``2`` or ``'4p'``.
        global_obs: global observables :math:`g_k` (shifts of the constraint centres),
            shape ``(..., P - 1)`` ordered like ``names[1:]`` (entries of free nuisances
            are ignored); default 0.
        tol: convergence tolerance on the Newton decrement :math:`\\tfrac12 g^\\top H^{-1}
            g` (NLL units).
        n_steps: maximum number of Newton iterations.
        on_fail: ``'warn'`` (default: :class:`ConvergenceWarning`), ``'raise'``
            (``RuntimeError``) or ``'ignore'`` when some points do not converge.
        multistart: besides the nominal start (all nuisances 0), start the shape nuisances
            at every corner of :math:`\\{-1, +1\\}^K` (for :math:`K \\le 4`; else at
            :math:`\\pm1` on each axis), all in the same batch, and keep the lowest minimum
            (the nominal start's unless another is lower by more than ``tol``).  The NLL
            can have several minima in the shape nuisances: code 0 is linear on each side
            of its kink at 0, so every orthant can hold one, and free or weakly
            constrained nuisances make codes 2 and 4p multimodal too; one descent from 0
            can stop in a minimum that is not the lowest.  ``False``: the nominal start only.
"""


def _with_model_doc(f: Callable) -> Callable:
    """Insert the shared description of the likelihood model's arguments into ``f``'s docstring."""
    f.__doc__ = f.__doc__.replace("    @MODEL_DOC@\n", _MODEL_DOC.lstrip("\n"))
    return f


@_with_model_doc
def calc_profile(f_s_nom: ArrayLike, f_b_nom: ArrayLike, n_obs: Union[float, ArrayLike], mu_scan: ArrayLike,
                 mu_true: Optional[float] = None,
                 f_s_up: Optional[ArrayLike] = None, f_s_dw: Optional[ArrayLike] = None,
                 f_b_up: Optional[ArrayLike] = None, f_b_dw: Optional[ArrayLike] = None,
                 shape_aux: Optional[Sequence[Optional[Distribution]]] = None,
                 s_norm_aux: Optional[Sequence[Distribution]] = None,
                 b_norm_aux: Optional[Sequence[Distribution]] = None,
                 nonaux_b_norm: bool = False, b_true: Optional[float] = None,
                 interp_code: Union[int, str] = 2, global_obs: Optional[ArrayLike] = None,
                 tol: float = 1e-9, n_steps: int = 100, on_fail: str = "warn",
                 return_result: bool = False, verbose: bool = False, multistart: bool = True) -> Union[Tensor, ProfileResult]:
    r"""Profile likelihood scan: :math:`\min_{\vec\theta} -\ln L(\mu, \vec\theta)` at every
    :math:`\mu` in ``mu_scan``.

    All scan points (and all pseudo-data sets when ``n_obs`` has leading dimensions) are
    optimised together as one batch by a damped Newton method with line search, each
    until its Newton decrement is below ``tol``.  Points that do not converge are reported
    according to ``on_fail`` and flagged in :attr:`ProfileResult.converged`.

    Args:
        n_obs: observed data: a scalar is the total count of Asimov data
            :math:`n_i = \mu_\mathrm{true} f_{s,i} + (n_\mathrm{obs} - \mu_\mathrm{true})
            f_{b,i}` (as in pytorch_inferno), or per-bin counts of shape ``(..., n_bins)``
            (e.g. pseudo-experiments, batched).
        mu_scan: strictly increasing signal yields, shape ``(n_scan,)``.
        mu_true: true signal yield (needed for Asimov data).
        return_result: return a :class:`ProfileResult` instead of the NLL tensor.
        verbose: print the number of iterations.
    @MODEL_DOC@
    Returns:
        float64 tensor of profiled NLLs, shape ``(..., n_scan)`` (or a :class:`ProfileResult`).

    Raises:
        ValueError: bad templates (NaN, negative, mismatched lengths, up without down),
            constraints that do not match the nuisances, a non-increasing scan, bad data.
    """
    kw = dict(f_s_nom=f_s_nom, f_b_nom=f_b_nom, f_s_up=f_s_up, f_s_dw=f_s_dw, f_b_up=f_b_up, f_b_dw=f_b_dw,
              shape_aux=shape_aux, s_norm_aux=s_norm_aux, b_norm_aux=b_norm_aux, nonaux_b_norm=nonaux_b_norm,
              interp_code=interp_code)
    t, n = _resolve_data(kw, n_obs, mu_true, b_true)
    mus = _as_f64(mu_scan, "mu_scan", t.device)
    if mus.dim() > 1:
        raise ValueError(f"mu_scan must be 1-D, got shape {tuple(mus.shape)}")
    mus = mus.reshape(-1)
    if mus.numel() == 0 or not torch.isfinite(mus).all():
        raise ValueError("mu_scan must be non-empty and finite")
    if (mus[1:] <= mus[:-1]).any():
        raise ValueError("mu_scan must be strictly increasing")
    g = _resolve_gobs(t, global_obs)
    model = t.model()
    res = profile(model, n, mus.reshape(-1), aux=t.aux(model, g), init=torch.zeros(t.P, dtype=DTYPE), tol=tol,
                  max_iter=n_steps, multistart=_multistart_arg(multistart), on_fail=on_fail)
    if verbose:
        print(f"calc_profile: {int(res.converged.sum())}/{res.converged.numel()} points converged, "
              f"max {int(res.n_iter.max())} iterations")
    return res if return_result else res.nll


@_with_model_doc
def fit_mle(f_s_nom: ArrayLike, f_b_nom: ArrayLike, n_obs: Union[float, ArrayLike], mu_true: Optional[float] = None,
            f_s_up: Optional[ArrayLike] = None, f_s_dw: Optional[ArrayLike] = None,
            f_b_up: Optional[ArrayLike] = None, f_b_dw: Optional[ArrayLike] = None,
            shape_aux: Optional[Sequence[Optional[Distribution]]] = None,
            s_norm_aux: Optional[Sequence[Distribution]] = None,
            b_norm_aux: Optional[Sequence[Distribution]] = None,
            nonaux_b_norm: bool = False, b_true: Optional[float] = None,
            interp_code: Union[int, str] = 2, global_obs: Optional[ArrayLike] = None,
            mu_init: Optional[float] = None, tol: float = 1e-10, n_steps: int = 100,
            on_fail: str = "warn", multistart: bool = True) -> FitResult:
    r"""Maximum-likelihood fit of the signal yield and all nuisances, with Hessian
    uncertainties.

    Minimises :math:`-\ln L(\mu, \vec\theta)` (batched over leading dimensions of
    ``n_obs``), then :math:`\mathrm{cov} = H^{-1}` at the minimum from a Cholesky
    factorisation of the analytic Hessian :math:`H`; the uncertainty of :math:`\mu` is
    :math:`\sqrt{(H^{-1})_{\mu\mu}}`, which includes the effect of profiling the nuisances.
    A Hessian that is not positive definite gives NaN covariances and is reported like a
    non-converged fit.

    With ``interp_code=0`` the NLL has a kink at every :math:`\alpha_k = 0`; a fit that ends
    exactly there (e.g. on Asimov data) takes the one-sided (left) second derivatives, so
    the Hessian uncertainty is that of one side only. Use the width of a profile scan
    (:func:`get_likelihood_width`) for an interval there, or code 2 / ``'4p'``, which are
    smooth.

    Args:
        n_obs, mu_true: as in :func:`calc_profile`.
        mu_init: starting signal yield (default ``mu_true``, else the excess over
            ``b_true``, at least 1).
    @MODEL_DOC@
    Returns:
        :class:`FitResult`.
    """
    kw = dict(f_s_nom=f_s_nom, f_b_nom=f_b_nom, f_s_up=f_s_up, f_s_dw=f_s_dw, f_b_up=f_b_up, f_b_dw=f_b_dw,
              shape_aux=shape_aux, s_norm_aux=s_norm_aux, b_norm_aux=b_norm_aux, nonaux_b_norm=nonaux_b_norm,
              interp_code=interp_code)
    t, n = _resolve_data(kw, n_obs, mu_true, b_true)
    g = _resolve_gobs(t, global_obs)
    if mu_init is None:
        mu_init = mu_true if mu_true is not None else max(float(n.sum(-1).mean()) - t.b_true, 1.0)
    model = t.model()
    init = torch.zeros(t.P, dtype=DTYPE)
    init[0] = float(mu_init)
    return fit(model, n, aux=t.aux(model, g), init=init, tol=tol, max_iter=n_steps,
               multistart=_multistart_arg(multistart), on_fail=on_fail)


def calc_nll(s_true: Optional[float], b_true: float, mu: Union[float, Tensor], f_s_nom: ArrayLike, f_b_nom: ArrayLike,
             shape_alpha: Optional[Tensor] = None, s_norm_alpha: Optional[Tensor] = None,
             b_norm_alpha: Optional[Tensor] = None,
             f_s_up: Optional[ArrayLike] = None, f_s_dw: Optional[ArrayLike] = None,
             f_b_up: Optional[ArrayLike] = None, f_b_dw: Optional[ArrayLike] = None,
             s_norm_aux: Optional[Sequence[Distribution]] = None,
             b_norm_aux: Optional[Sequence[Distribution]] = None,
             shape_aux: Optional[Sequence[Optional[Distribution]]] = None,
             n_obs: Optional[ArrayLike] = None, interp_code: Union[int, str] = 2) -> Tensor:
    r"""Negative log-likelihood :math:`-\ln L` at given parameter values, differentiable
    with autograd in ``mu`` and the nuisances (pytorch_inferno's argument order).

    .. math::

        -\ln L = \sum_i \big[\nu_i - n_i \ln\nu_i + \ln\Gamma(n_i + 1)\big]
                 - \sum_k \ln p_k(\theta_k),\qquad
        \nu = \Big(\mu + \sum_j \sigma^s_j\Big) f_s(\vec\alpha)
            + \Big(b_\mathrm{true} + \sum_j \beta_j\Big) f_b(\vec\alpha)

    Args:
        s_true, b_true: true yields; the observed data are the Asimov counts
            :math:`s_\mathrm{true} f_{s,0} + b_\mathrm{true} f_{b,0}` unless ``n_obs`` is given.
        mu: signal yield (scalar or tensor of shape ``(...)``, broadcast with the nuisances).
        shape_alpha: shape nuisances ``(..., n_shape)``.
        s_norm_alpha: signal-rate offsets ``(..., len(s_norm_aux))``.
        b_norm_alpha: background-rate offsets ``(..., n_b)``; the first
            ``len(b_norm_aux)`` are constrained, any further one is free.
        n_obs: per-bin observed counts ``(..., n_bins)`` (overrides the Asimov data).
        others: see :func:`calc_profile`.

    Returns:
        float64 tensor of shape ``(...)``.
    """
    dev = f_b_nom.device if isinstance(f_b_nom, Tensor) else None

    def flat(a: Any, name: str) -> Tensor:
        # in the precision given (the normalisation check's tolerance depends on it)
        if isinstance(a, Tensor):
            t = a.detach()
        elif isinstance(a, np.ndarray) and a.dtype.kind == "f":
            t = torch.from_numpy(np.array(a))
        else:
            t = _as_f64(a, name)
        return t.reshape(-1) if dev is None else t.reshape(-1).to(dev)

    f_s0, f_b0 = flat(f_s_nom, "f_s_nom"), flat(f_b_nom, "f_b_nom")
    if f_s0.shape != f_b0.shape:
        raise ValueError(f"templates of different lengths: {f_s0.numel()} vs {f_b0.numel()} bins")

    def vec(a: Any, name: str) -> Optional[Tensor]:
        if a is None:
            return None
        return a.to(DTYPE) if isinstance(a, Tensor) else _as_f64(a, name, f_s0.device)

    shape_alpha, s_norm_alpha, b_norm_alpha = (vec(shape_alpha, "shape_alpha"), vec(s_norm_alpha, "s_norm_alpha"),
                                               vec(b_norm_alpha, "b_norm_alpha"))
    if (f_s_up is not None or f_s_dw is not None or f_b_up is not None or f_b_dw is not None) and shape_alpha is None:
        raise ValueError("up/down templates are given but shape_alpha is None")

    def n_aux(aux: Any) -> int:
        return 0 if aux is None else 1 if isinstance(aux, Distribution) else len(list(aux))

    def check(alphas: Optional[Tensor], aux: Any, name: str, allow_extra: bool = False) -> int:
        k = n_aux(aux)
        if alphas is None:
            if k:
                raise ValueError(f"{name} constraints are given but the corresponding nuisances are None")
            return 0
        n_a = alphas.shape[-1] if alphas.dim() else 1
        if aux is not None and not (n_a == k or (allow_extra and n_a == k + 1)):
            raise ValueError(f"{k} {name} constraints for {n_a} nuisances")
        return n_a

    for up, dw, proc in ((f_s_up, f_s_dw, "s"), (f_b_up, f_b_dw, "b")):
        if up is not None and dw is not None and shape_alpha is not None:
            k = up.shape[0] if getattr(up, "ndim", 1) == 2 else 1
            if shape_alpha.dim() == 0 or shape_alpha.shape[-1] != k:
                raise ValueError(f"shape_alpha must have shape (..., {k}) for the {k} shape nuisances "
                                 f"of f_{proc}_up/f_{proc}_dw, got {tuple(shape_alpha.shape)}")
    K = check(shape_alpha, shape_aux, "shape")
    S = check(s_norm_alpha, s_norm_aux, "s_norm")
    Bn = check(b_norm_alpha, b_norm_aux, "b_norm", allow_extra=True)

    def listed(aux: Any, n: int) -> Optional[List[Optional[Distribution]]]:
        # constraints as given, then None (free) for the nuisances without one
        given = [] if aux is None else [aux] if isinstance(aux, Distribution) else list(aux)
        return (given + [None] * (n - len(given))) if n else None

    t = _Templates(f_s0, f_b0, f_s_up, f_s_dw, f_b_up, f_b_dw, shape_aux=listed(shape_aux, K),
                   s_norm_aux=listed(s_norm_aux, S), b_norm_aux=listed(b_norm_aux, Bn), b_true=b_true,
                   interp_code=interp_code, free_rates=True)
    model = t.model()
    if n_obs is not None:
        n = _as_f64(n_obs, "n_obs", f_s0.device)
        if n.dim() == 0 or n.shape[-1] != t.n_bins:
            raise ValueError(f"n_obs must have shape (..., n_bins={t.n_bins}), got {tuple(n.shape)}")
        if not torch.isfinite(n).all() or (n < 0).any():
            raise ValueError("n_obs contains NaN, inf or negative counts")
    else:
        if s_true is None:
            raise ValueError("s_true is required for Asimov data (or pass n_obs)")
        n = float(s_true) * t.f_s_nom + float(b_true) * t.f_b_nom
    mu = mu.to(DTYPE) if isinstance(mu, Tensor) else torch.tensor(float(mu), dtype=DTYPE, device=f_s0.device)
    parts = [mu[..., None]] + [v if v.dim() else v[None] for v in (shape_alpha, s_norm_alpha, b_norm_alpha) if v is not None]
    batch = torch.broadcast_shapes(*[q.shape[:-1] for q in parts])
    return model.nll(torch.cat([q.expand(batch + q.shape[-1:]) for q in parts], -1), n)


def check_coverage(f_s_nom: ArrayLike, f_b_nom: ArrayLike, mu_true: float, b_true: float, n_toys: int = 300,
                   seed: Union[None, int, torch.Generator] = 0,
                   f_s_up: Optional[ArrayLike] = None, f_s_dw: Optional[ArrayLike] = None,
                   f_b_up: Optional[ArrayLike] = None, f_b_dw: Optional[ArrayLike] = None,
                   shape_aux: Optional[Sequence[Optional[Distribution]]] = None,
                   s_norm_aux: Optional[Sequence[Distribution]] = None,
                   b_norm_aux: Optional[Sequence[Distribution]] = None,
                   nonaux_b_norm: bool = False, interp_code: Union[int, str] = 2,
                   val: float = 0.5, fluctuate_global_obs: bool = True, tol: float = 1e-9) -> CoverageResult:
    r"""Coverage of the profile-likelihood interval
    :math:`\{\mu: -\ln L_p(\mu) - \min -\ln L \le \mathrm{val}\}` with Poisson pseudo-experiments.

    Toys are drawn from the model at the truth (:math:`\mu_\mathrm{true}`, nominal
    nuisances), with global observables fluctuated from the constraints
    (:func:`sample_global_obs`) unless ``fluctuate_global_obs=False``.  For each toy a global
    fit gives :math:`\min -\ln L` and a profile fit at :math:`\mu_\mathrm{true}` gives
    :math:`-\ln L_p(\mu_\mathrm{true})`; the interval contains the truth iff their difference
    is :math:`\le` ``val`` (equivalent to reading the interval off a scan, for a unimodal
    profile, without the scan's interpolation error).  All toys run as one batch.

    Returns:
        :class:`CoverageResult` with the binomial error of the coverage.
    """
    t = _Templates(f_s_nom=f_s_nom, f_b_nom=f_b_nom, f_s_up=f_s_up, f_s_dw=f_s_dw, f_b_up=f_b_up, f_b_dw=f_b_dw,
                   shape_aux=shape_aux, s_norm_aux=s_norm_aux, b_norm_aux=b_norm_aux, nonaux_b_norm=nonaux_b_norm,
                   b_true=b_true, interp_code=interp_code)
    model = t.model()
    g = seed if isinstance(seed, torch.Generator) else torch.Generator(device=t.device).manual_seed(
        int(seed) if seed is not None else int(torch.randint(0, 2**62, ()).item()))
    main = generate_toys(float(mu_true) * t.f_s_nom + float(b_true) * t.f_b_nom, n_toys, g)
    cons = list(t.shape_aux) + list(t.s_norm_aux) + list(t.b_norm_aux) + ([None] if t.nonaux_b_norm else [])
    if fluctuate_global_obs and any(d is not None for d in cons):
        aux = t.aux(model, sample_global_obs(cons, n_toys, g).to(t.device))
    else:
        aux = model.aux_nominal.expand(main.shape[0], -1)
    truth = torch.zeros(t.P, dtype=DTYPE)
    truth[0] = float(mu_true)
    return coverage(model, truth, val=val, tol=tol, toy_data=(main, aux), multistart="all")
