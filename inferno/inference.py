r"""The pytorch_inferno-style measurement API over :mod:`inferno.likelihood`: templates of a
trained summary, and ``calc_profile``, ``fit_mle``, ``calc_nll``, ``check_coverage`` on the
one-channel model of a signal and one background.

The model of these functions is a :class:`~inferno.likelihood.Model` built by
:func:`paper_model` (one channel ``inferno``):

.. math::

    \nu_i(\mu, \vec\theta) = s\, f_{s,i}(\vec\alpha) + b\, f_{b,i}(\vec\alpha),
    \qquad s = \mu + \sum_j \sigma^{s}_j, \qquad b = b_\mathrm{true} + \sum_j \beta_j,

where :math:`\mu` (the POI) is the signal *yield*, :math:`f_s, f_b` are normalised templates
interpolated in the shape nuisances :math:`\vec\alpha` (histosys modifiers, in interpolation
units: :math:`\alpha_k = \pm1` gives the up/down templates), :math:`\sigma^s_j` additive
signal-rate nuisances and :math:`\beta_j` additive background-rate nuisances (each a sample
with the process's template and a normfactor that starts at 0). Constraints are any scalar
``torch.distributions`` distribution on the parameter (``None``: free), with global
observables :math:`g_k` shifting them (:math:`-\ln p_k(\theta_k - g_k)`). The parameter
vector is ``[mu, alpha_0.., s_norm_0.., b_norm_0.., (b_free)]``, unbounded.

The fits, scans, intervals and toys are those of :mod:`inferno.likelihood` (a batched
Newton solver with analytic derivatives; multistart over the shape nuisances, because the
NLL can have one minimum per orthant of :math:`\vec\alpha` with code 0's kink, or with free
nuisances).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor
from torch.distributions import Distribution, Normal

from .likelihood import Channel, HistoSys, Lumi, Model, NormFactor, Sample, to_pyhf
from .likelihood.fit import ConvergenceWarning, FitResult, ProfileResult, fit, profile
from .likelihood.intervals import get_interval, get_likelihood_width
from .likelihood.interpolation import check_code
from .likelihood.toys import CoverageResult, coverage, generate_toys, sample_global_obs
from .templates import bin_preds, get_paper_syst_shapes, get_shape, get_syst_shapes  # noqa: F401  (re-exported)

__all__ = [
    "bin_preds", "get_shape", "get_syst_shapes", "get_paper_syst_shapes", "paper_model",
    "calc_nll", "calc_profile", "fit_mle", "ProfileResult", "FitResult", "ConvergenceWarning",
    "get_likelihood_width", "get_interval", "generate_toys", "sample_global_obs",
    "check_coverage", "CoverageResult", "to_pyhf_workspace", "pyhf_model", "nll_offset", "PYHF_INTERP_CODES",
]

ArrayLike = Union[Tensor, np.ndarray, Sequence[float], float]
DTYPE = torch.float64


# =========================================================================== the model
def _as_f64(a: Any, name: str, device: Optional[torch.device] = None) -> Tensor:
    if isinstance(a, Tensor):
        t = a.detach().to(dtype=DTYPE)
    else:
        try:
            # a float64 copy: also for views torch cannot share (negative strides, read-only)
            arr = np.array(a, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{name} must be numeric, got {type(a).__name__} ({e})") from None
        t = torch.from_numpy(arr)
    return t if device is None else t.to(device)


def _input_eps(a: Any) -> float:
    """Machine epsilon of the precision ``a`` was given in (float64 unless a lower one)."""
    dt = a.dtype if isinstance(a, (Tensor, np.ndarray)) else None
    if isinstance(dt, torch.dtype) and dt.is_floating_point:
        return torch.finfo(dt).eps
    if isinstance(dt, np.dtype) and dt.kind == "f":
        return float(np.finfo(dt).eps)
    return float(np.finfo(np.float64).eps)


#: Relative tolerance on the sum of a template (1), widened to ``n_bins * eps`` for templates
#: given in a lower precision than float64.
NORM_TOL = 1e-6


def _check_normalised(t: Tensor, name: str, eps: float) -> None:
    """Templates are normalised by definition here (the yields are carried by ``mu`` and
    ``b_true``): every row of ``t`` must sum to 1 within ``max(NORM_TOL, n_bins * eps)``."""
    tol = max(NORM_TOL, t.shape[-1] * eps)
    sums = t.sum(-1)
    bad = ((sums - 1).abs() > tol).reshape(-1).nonzero()
    if bad.numel() == 0:
        return
    why = "must be a normalised template (bins summing to 1; the yields are carried by mu and b_true)"
    if t.dim() == 1:
        raise ValueError(f"{name} {why}, but it sums to {float(sums):.6g}; normalise it first "
                         f"({name} / {name}.sum())")
    k = int(bad[0])
    raise ValueError(f"{name}[{k}] (the template of shape nuisance {k}) {why}, but it sums to "
                     f"{float(sums[k]):.6g}; normalise every row first ({name} / {name}.sum(-1, keepdims=True)); "
                     "a variation that also changes the yield needs a rate nuisance besides")


def _check_template(t: Tensor, name: str, eps: Optional[float] = None) -> None:
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or inf")
    if (t < 0).any():
        raise ValueError(f"{name} contains negative values (templates must be >= 0)")
    if eps is not None:
        _check_normalised(t, name, eps)


def _check_aux_list(aux: Any, n: int, name: str, allow_none: bool) -> List[Optional[Distribution]]:
    if aux is None:
        return [None] * n if allow_none else []
    if isinstance(aux, Distribution):
        aux = [aux]
    aux = list(aux)
    if allow_none and len(aux) != n:
        raise ValueError(f"{name} has {len(aux)} entries but there are {n} shape nuisances "
                         "(pass None for an unconstrained nuisance)")
    for i, d in enumerate(aux):
        if d is None:
            if not allow_none:
                raise ValueError(f"{name}[{i}] is None: rate nuisances need a constraint "
                                 "(use nonaux_b_norm=True for a free background rate)")
            continue
        if not isinstance(d, Distribution):
            raise ValueError(f"{name}[{i}] must be a torch.distributions.Distribution or None, got {type(d).__name__}")
        if d.batch_shape != torch.Size([]) or d.event_shape != torch.Size([]):
            raise ValueError(f"{name}[{i}] must be a scalar (univariate) distribution, got batch_shape "
                             f"{tuple(d.batch_shape)} and event_shape {tuple(d.event_shape)}")
    return aux


class _Templates:
    """The validated arguments of the one-channel model (templates, constraints, yields)."""

    def __init__(self, f_s_nom: ArrayLike, f_b_nom: ArrayLike,
                 f_s_up: Optional[ArrayLike] = None, f_s_dw: Optional[ArrayLike] = None,
                 f_b_up: Optional[ArrayLike] = None, f_b_dw: Optional[ArrayLike] = None,
                 shape_aux: Optional[Sequence[Optional[Distribution]]] = None,
                 s_norm_aux: Optional[Sequence[Distribution]] = None,
                 b_norm_aux: Optional[Sequence[Distribution]] = None,
                 nonaux_b_norm: bool = False, b_true: float = 1000.0, interp_code: Union[int, str] = 2,
                 free_rates: bool = False):
        self.code = check_code(interp_code, "histosys")
        dev = f_b_nom.device if isinstance(f_b_nom, Tensor) else None
        self.device = dev if dev is not None else torch.device("cpu")

        def nom(a: Any, name: str) -> Tensor:
            t = _as_f64(a, name, self.device)
            if t.dim() == 2 and t.shape[0] == 1:
                t = t[0]
            if t.dim() != 1 or t.numel() == 0:
                raise ValueError(f"{name} must be 1-D (n_bins,), got shape {tuple(t.shape)}")
            _check_template(t, name)
            if not t.sum() > 0:
                raise ValueError(f"{name} sums to 0")
            return t

        self.f_s_nom, self.f_b_nom = nom(f_s_nom, "f_s_nom"), nom(f_b_nom, "f_b_nom")
        nb = self.f_s_nom.shape[0]
        if self.f_b_nom.shape[0] != nb:
            raise ValueError(f"templates of different lengths: f_s_nom has {nb} bins, f_b_nom {self.f_b_nom.shape[0]}")
        _check_normalised(self.f_s_nom, "f_s_nom", _input_eps(f_s_nom))
        _check_normalised(self.f_b_nom, "f_b_nom", _input_eps(f_b_nom))
        self.n_bins = nb

        def pair(up: Any, dw: Any, proc: str) -> Optional[Tuple[Tensor, Tensor]]:
            if up is None and dw is None:
                return None
            if up is None or dw is None:
                raise ValueError(f"f_{proc}_up and f_{proc}_dw must be given together (got only "
                                 f"f_{proc}_{'up' if dw is None else 'dw'}); pass the nominal for a one-sided variation")
            out = []
            for a, name in ((up, f"f_{proc}_up"), (dw, f"f_{proc}_dw")):
                t = _as_f64(a, name, self.device)
                if t.dim() == 1:
                    t = t[None]
                if t.dim() != 2 or t.shape[1] != nb:
                    raise ValueError(f"{name} must have shape (n_nuisances, n_bins={nb}), got {tuple(t.shape)}")
                _check_template(t, name, _input_eps(a))
                out.append(t)
            if out[0].shape != out[1].shape:
                raise ValueError(f"f_{proc}_up and f_{proc}_dw have different shapes: "
                                 f"{tuple(out[0].shape)} vs {tuple(out[1].shape)}")
            return out[0], out[1]

        s_sh, b_sh = pair(f_s_up, f_s_dw, "s"), pair(f_b_up, f_b_dw, "b")
        ks = 0 if s_sh is None else s_sh[0].shape[0]
        kb = 0 if b_sh is None else b_sh[0].shape[0]
        if s_sh is not None and b_sh is not None and ks != kb:
            raise ValueError(f"signal and background have different numbers of shape nuisances ({ks} vs {kb}); "
                             "use the nominal template for a nuisance that does not affect a process")
        self.K = max(ks, kb)
        self.s_shapes, self.b_shapes = s_sh, b_sh
        if shape_aux is not None and self.K == 0 and len(list(shape_aux)) > 0:
            raise ValueError(f"shape_aux has {len(list(shape_aux))} entries but no up/down templates were given")
        self.shape_aux = _check_aux_list(shape_aux, self.K, "shape_aux", allow_none=True)
        # free_rates (calc_nll): rate nuisances may be free (None)
        n_rate = lambda aux: len(list(aux)) if aux is not None and free_rates else 0  # noqa: E731
        self.s_norm_aux = _check_aux_list(s_norm_aux, n_rate(s_norm_aux), "s_norm_aux", allow_none=free_rates)
        self.b_norm_aux = _check_aux_list(b_norm_aux, n_rate(b_norm_aux), "b_norm_aux", allow_none=free_rates)
        self.nonaux_b_norm = bool(nonaux_b_norm)
        b_true = float(b_true)
        if not (math.isfinite(b_true) and b_true > 0):
            raise ValueError(f"b_true must be finite and > 0, got {b_true}")
        self.b_true = b_true
        self.S = len(self.s_norm_aux)
        self.names = (["mu"] + [f"alpha_{k}" for k in range(self.K)] + [f"s_norm_{j}" for j in range(self.S)]
                      + [f"b_norm_{j}" for j in range(len(self.b_norm_aux))] + (["b_free"] if self.nonaux_b_norm else []))
        self.P = len(self.names)

    def model(self) -> Model:
        """The :class:`~inferno.likelihood.Model` of these templates (see the module docstring)."""
        alphas = [f"alpha_{k}" for k in range(self.K)]

        def shapes(sh: Optional[Tuple[Tensor, Tensor]], scale: float) -> List[HistoSys]:
            if sh is None:
                return []
            return [HistoSys(a, hi=(scale * sh[0][k]).cpu().numpy(), lo=(scale * sh[1][k]).cpu().numpy())
                    for k, a in enumerate(alphas)]

        f_s, f_b = self.f_s_nom.cpu().numpy(), self.f_b_nom.cpu().numpy()
        samples = [Sample("signal", f_s, [NormFactor("mu")] + shapes(self.s_shapes, 1.0)),
                   Sample("background", self.b_true * f_b, shapes(self.b_shapes, self.b_true))]
        samples += [Sample(f"signal_norm_{j}", f_s, [NormFactor(f"s_norm_{j}")] + shapes(self.s_shapes, 1.0))
                    for j in range(self.S)]
        b_norms = [f"b_norm_{j}" for j in range(len(self.b_norm_aux))] + (["b_free"] if self.nonaux_b_norm else [])
        samples += [Sample(f"background_{name}", f_b, [NormFactor(name)] + shapes(self.b_shapes, 1.0)) for name in b_norms]
        free = {"init": 0.0, "bounds": (-math.inf, math.inf)}
        settings: Dict[str, Dict[str, Any]] = {"mu": dict(free)}
        for a, d in zip(alphas, self.shape_aux):
            settings[a] = dict(free, constraint=d)
        for j, d in enumerate(self.s_norm_aux):
            settings[f"s_norm_{j}"] = dict(free, constraint=d)
        for name, d in zip(b_norms, self.b_norm_aux + [None]):
            settings[name] = dict(free, constraint=d)
        m = Model([Channel("inferno", samples)], poi="mu", parameters=settings, histosys_code=self.code)
        assert m.names == self.names, (m.names, self.names)
        return m.to(self.device)

    def export_model(self, mu_true: float, shape_names: Optional[Sequence[str]] = None, channel_name: str = "inferno",
                     poi_bounds: Tuple[float, float] = (0.0, 10.0), free_shape_sigma: float = 1e3) -> Model:
        """The HistFactory form of this model (see :func:`to_pyhf_workspace`): the signal
        *strength* as POI, unit Gaussian constraints on rescaled shape and signal-rate
        nuisances, ``lumi`` for a background-rate constraint."""
        mu_true = float(mu_true)
        if not (math.isfinite(mu_true) and mu_true > 0):
            raise ValueError(f"mu_true must be finite and > 0 (the yield at signal strength 1), got {mu_true}")
        K, code, b0 = self.K, self.code, self.b_true
        names = list(shape_names) if shape_names is not None else [f"alpha_{k}" for k in range(K)]
        if len(names) != K or len(set(names)) != K:
            raise ValueError(f"shape_names must be {K} distinct names, got {names}")
        reserved = {"mu", "lumi", "b_norm"} | {f"s_norm_{j}" for j in range(self.S)}
        if reserved & set(names):
            raise ValueError(f"shape_names must not use the reserved names {sorted(reserved & set(names))}")
        if len(self.b_norm_aux) > 1 or (self.b_norm_aux and self.nonaux_b_norm):
            raise ValueError("at most one background-rate nuisance can be exported exactly "
                             "(HistFactory normalisations multiply, inferno's offsets add)")
        if self.S and self.s_shapes is not None:
            raise ValueError("signal-rate nuisances together with signal shape nuisances cannot be "
                             "represented exactly in HistFactory")
        settings: Dict[str, Dict[str, Any]] = {"mu": {"bounds": tuple(float(b) for b in poi_bounds), "init": 1.0}}
        widths: List[float] = []
        for k, d in enumerate(self.shape_aux):
            if d is None:
                if code != 0:
                    raise ValueError(f"free shape nuisance {names[k]!r}: only interpolation code 0 can be exported "
                                     "(as a wide Gaussian); constrain it or use code 0")
                sigma, loc = float(free_shape_sigma), 0.0
            else:
                loc, sigma = _normal_params(d, f"shape_aux[{k}]")
            if code == "4p" and abs(sigma - 1.0) > 1e-12:
                raise ValueError(f"shape nuisance {names[k]!r}: code '4p' can be exported exactly only with "
                                 f"unit constraint width, got sigma = {sigma}")
            widths.append(sigma)
            settings[names[k]] = {"aux": loc / sigma, "init": loc / sigma}

        def histosys(nomv: Tensor, sh: Optional[Tuple[Tensor, Tensor]], yld: float) -> List[HistoSys]:
            if sh is None:
                return []
            mods = []
            for k, sigma in enumerate(widths):  # the templates at alpha = +-sigma
                d_up, d_dw = sh[0][k] - nomv, nomv - sh[1][k]
                if code == 2:
                    qa, qb = 0.5 * (d_up - d_dw), 0.5 * (d_up + d_dw)
                    hi, lo = nomv + qa * sigma**2 + qb * sigma, nomv + qa * sigma**2 - qb * sigma
                else:  # code 0 (any sigma) or 4p (sigma == 1)
                    hi, lo = nomv + sigma * d_up, nomv - sigma * d_dw
                mods.append(HistoSys(names[k], hi=(yld * hi).cpu().numpy(), lo=(yld * lo).cpu().numpy()))
            return mods

        f_s, f_b = self.f_s_nom, self.f_b_nom
        samples = [Sample("signal", (mu_true * f_s).cpu().numpy(), [NormFactor("mu")] + histosys(f_s, self.s_shapes, mu_true))]
        for j, d in enumerate(self.s_norm_aux):
            loc, sigma = _normal_params(d, f"s_norm_aux[{j}]")
            samples.append(Sample(f"signal_norm_{j}", np.zeros(self.n_bins),
                                  [HistoSys(f"s_norm_{j}", hi=(sigma * f_s).cpu().numpy(), lo=(-sigma * f_s).cpu().numpy())]))
            settings[f"s_norm_{j}"] = {"aux": loc / sigma, "init": loc / sigma}
        bkg_mods: List[Any] = histosys(f_b, self.b_shapes, b0)
        if self.b_norm_aux:
            loc, sigma = _normal_params(self.b_norm_aux[0], "b_norm_aux[0]")
            centre, width = 1.0 + loc / b0, sigma / b0
            bkg_mods.append(Lumi("lumi"))
            settings["lumi"] = {"aux": centre, "sigma": width, "init": centre,
                                "bounds": (max(0.0, centre - 10 * width), centre + 10 * width)}
        if self.nonaux_b_norm:
            bkg_mods.append(NormFactor("b_norm"))
        samples.append(Sample("background", (b0 * f_b).cpu().numpy(), bkg_mods))
        return Model([Channel(channel_name, samples)], poi="mu", parameters=settings, histosys_code=code)

    def aux(self, model: Model, global_obs: Optional[Tensor]) -> Optional[Tensor]:
        """Auxiliary data of ``model`` from global observables ``(..., P - 1)`` (shifts of the
        constraint centres, ordered as ``names[1:]``)."""
        if global_obs is None:
            return None
        g = torch.cat([torch.zeros(global_obs.shape[:-1] + (1,), dtype=DTYPE, device=global_obs.device), global_obs], -1)
        cols = [model.aux_nominal[i] + g[..., k] for i, k in enumerate(model._aux_params)]
        return torch.stack(cols, -1) if cols else None


def paper_model(f_s_nom: ArrayLike, f_b_nom: ArrayLike, b_true: float, **kwargs: Any) -> Model:
    """The :class:`~inferno.likelihood.Model` of the pytorch_inferno-style arguments
    (``f_s_up``, ``f_s_dw``, ``f_b_up``, ``f_b_dw``, ``shape_aux``, ``s_norm_aux``,
    ``b_norm_aux``, ``nonaux_b_norm``, ``interp_code``; see :func:`calc_profile`), for use
    with :func:`inferno.likelihood.fit`, :func:`~inferno.likelihood.profile`, ..."""
    return _Templates(f_s_nom, f_b_nom, b_true=b_true, **kwargs).model()


def _is_scalar(a: Any) -> bool:
    return isinstance(a, (int, float, np.integer, np.floating)) or (isinstance(a, (Tensor, np.ndarray)) and a.ndim == 0)


def _resolve_data(model_kw: Dict[str, Any], n_obs: Any, mu_true: Optional[float], b_true: Optional[float]):
    """The validated templates and the observed counts (..., n_bins)."""
    if mu_true is not None:
        try:
            mu_true = float(mu_true)
        except (TypeError, ValueError):
            raise ValueError(f"mu_true must be a number, got {mu_true!r}") from None
        if not math.isfinite(mu_true):
            raise ValueError(f"mu_true must be finite, got {mu_true}")
    if _is_scalar(n_obs):
        n_tot = float(n_obs)
        if not (math.isfinite(n_tot) and n_tot > 0):
            raise ValueError(f"a scalar n_obs is the total count of the Asimov data (mu_true + b_true) "
                             f"and must be finite and > 0, got {n_tot:g}")
        if mu_true is None:
            raise ValueError("mu_true is required with a scalar n_obs (the Asimov data are "
                             "mu_true * f_s_nom + (n_obs - mu_true) * f_b_nom)")
        if b_true is None:
            b_true = n_tot - float(mu_true)
            if not b_true > 0:
                raise ValueError(f"a scalar n_obs is the Asimov total count mu_true + b_true: n_obs = {n_tot:g} "
                                 f"with mu_true = {float(mu_true):g} leaves a background yield b_true = "
                                 f"{b_true:g}, which must be > 0")
        elif abs(n_tot - float(mu_true) - float(b_true)) > 1e-9 * max(1.0, abs(n_tot)):
            raise ValueError(f"a scalar n_obs is the Asimov total count and must equal mu_true + b_true "
                             f"({mu_true} + {b_true}), got {n_tot}")
        t = _Templates(b_true=b_true, **model_kw)
        n = float(mu_true) * t.f_s_nom + float(b_true) * t.f_b_nom
    else:
        if b_true is None:
            raise ValueError("b_true (the nominal background yield) is required when n_obs are per-bin counts")
        t = _Templates(b_true=b_true, **model_kw)
        n = _as_f64(n_obs, "n_obs", t.device)
        if n.dim() == 0 or n.shape[-1] != t.n_bins:
            raise ValueError(f"n_obs must be a total count or counts of shape (..., n_bins={t.n_bins}), "
                             f"got shape {tuple(n.shape)}")
        if not torch.isfinite(n).all() or (n < 0).any():
            raise ValueError("n_obs contains NaN, inf or negative counts")
    return t, n


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


# =========================================================================== HistFactory export
#: pyhf's name of inferno's interpolation codes (for ``histosys``).
PYHF_INTERP_CODES: Dict[Union[int, str], str] = {0: "code0", 2: "code2", "4p": "code4p"}


def _normal_params(d: Distribution, what: str) -> Tuple[float, float]:
    if type(d) is not Normal:
        raise ValueError(f"{what}: only Normal constraints can be exported to HistFactory, got {type(d).__name__}")
    return float(d.loc), float(d.scale)


def to_pyhf_workspace(f_s_nom: Any, f_b_nom: Any, n_obs: Any, mu_true: float,
                      f_s_up: Any = None, f_s_dw: Any = None, f_b_up: Any = None, f_b_dw: Any = None,
                      shape_aux: Optional[Sequence[Optional[Distribution]]] = None,
                      s_norm_aux: Optional[Sequence[Distribution]] = None,
                      b_norm_aux: Optional[Sequence[Distribution]] = None,
                      nonaux_b_norm: bool = False, b_true: Optional[float] = None,
                      interp_code: Union[int, str] = 2, shape_names: Optional[Sequence[str]] = None,
                      channel_name: str = "inferno", measurement_name: str = "inferno",
                      poi_bounds: Tuple[float, float] = (0.0, 10.0), free_shape_sigma: float = 1e3) -> Dict[str, Any]:
    r"""HistFactory workspace (a JSON-serialisable ``dict``) of the model of
    :func:`calc_profile` (a :class:`~inferno.likelihood.Model` built by :meth:`_Templates.export_model`, written by
    :func:`inferno.likelihood.to_pyhf`); the mapping:

    The export builds a plain ``dict`` and does not need pyhf; :func:`pyhf_model` (which does,
    ``pip install inferno[pyhf]``) turns it into a ``pyhf.Model`` with the matching
    interpolation code.

    How the model maps onto HistFactory (one channel):

    * sample ``signal``: data :math:`\mu_\mathrm{true} f_s`, a ``normfactor`` POI ``mu`` -- the
      signal *strength* :math:`s / \mu_\mathrm{true}` (inferno's POI is the yield :math:`s`);
    * sample ``background``: data :math:`b_\mathrm{true} f_b`;
    * shape nuisance :math:`\alpha_k` with constraint ``Normal(c, sigma)``: a ``histosys``
      ``shape_names[k]`` on every process it moves, whose parameter is
      :math:`\alpha'_k = \alpha_k / \sigma` (pyhf's histosys constraint has unit width) with
      auxdata :math:`c/\sigma`.  Its templates are those at :math:`\alpha_k = \pm\sigma`:
      :math:`f^0 + \sigma(f^\pm - f^0)` for code 0 (exact), the quadratic
      :math:`f^0 + a\sigma^2 \pm b\sigma` for code 2 (pyhf then agrees with inferno wherever
      every :math:`|\alpha_k| \le \min(1, \sigma)`: pyhf's code 2 extrapolation beyond
      :math:`|\alpha'|=1` differs, pyhf issue 2729), and :math:`f^\pm` for code ``'4p'`` (only
      :math:`\sigma = 1` is exact, other widths raise).  A free shape nuisance (``None``) is
      exported, for code 0 only, with a wide constraint of width ``free_shape_sigma``;
    * a background-rate nuisance ``Normal(c, sigma)`` on the offset :math:`b - b_\mathrm{true}`:
      HistFactory's ``lumi`` modifier (the schema's only Gaussian-constrained multiplicative
      normalisation; its name is fixed to ``lumi``) on the background only, with
      :math:`\mathrm{lumi} = b / b_\mathrm{true}`, auxdata :math:`1 + c/b_\mathrm{true}`, width
      :math:`\sigma / b_\mathrm{true}`.  (Not a ``normsys``: pyhf 0.7.6 allows it only the
      exponential codes 1 and 4.  Nor a ``histosys`` with templates
      :math:`b_\mathrm{true} f_b (1 \pm \sigma / b_\mathrm{true})`: histosys shifts add, so
      with background shape nuisances it would miss the cross term
      :math:`\beta\,\sum_k \delta_k(\alpha_k)` of :math:`(b_\mathrm{true} + \beta) f_b(\vec\alpha)`.)
    * a free background rate (``nonaux_b_norm``): a ``normfactor`` ``b_norm`` = :math:`b / b_\mathrm{true}`;
    * a signal-rate nuisance ``Normal(c, sigma)`` (additive, :math:`s = \mu + \sigma^s`): a
      sample ``signal_norm_j`` with zero nominal and a ``histosys`` ``s_norm_j`` of templates
      :math:`\pm\sigma f_s` (exact only without signal shape nuisances, else ValueError).

    With Gaussian constraints the two NLLs differ by a constant:
    :math:`-\ln L_\mathrm{inferno} = -\ln L_\mathrm{pyhf} + \sum_k \ln\sigma_k + \ln b_\mathrm{true}\,
    [\text{if a b-rate constraint}]`, where :math:`k` runs over the constrained shape and
    signal-rate nuisances; :func:`nll_offset` returns it.


    Args:
        f_s_nom, f_b_nom, f_s_up, f_s_dw, f_b_up, f_b_dw, shape_aux, s_norm_aux, b_norm_aux,
        nonaux_b_norm, b_true, interp_code: as in :func:`calc_profile`.
        n_obs: observed counts ``(n_bins,)``, or a scalar total for Asimov data.
        mu_true: nominal signal yield (> 0), the yield at signal strength ``mu = 1``.
        shape_names: names of the shape nuisances (default ``alpha_0``, ...).
        channel_name, measurement_name: names in the workspace.
        poi_bounds: bounds of the signal strength.
        free_shape_sigma: constraint width standing in for a free shape nuisance (code 0).

    Returns:
        the workspace ``dict`` (``pyhf.Workspace(spec)`` validates it).

    Raises:
        ValueError: bad inputs (as in ``calc_profile``), non-Normal constraints, or a model
            HistFactory cannot represent exactly (see the module docstring).
    """
    kw = dict(f_s_nom=f_s_nom, f_b_nom=f_b_nom, f_s_up=f_s_up, f_s_dw=f_s_dw, f_b_up=f_b_up, f_b_dw=f_b_dw,
              shape_aux=shape_aux, s_norm_aux=s_norm_aux, b_norm_aux=b_norm_aux, nonaux_b_norm=nonaux_b_norm,
              interp_code=interp_code)
    t, n = _resolve_data(kw, n_obs, mu_true, b_true)
    if n.dim() != 1:
        raise ValueError(f"n_obs must be one data set (n_bins,), got shape {tuple(n.shape)}")
    model = t.export_model(mu_true, shape_names, channel_name, poi_bounds, free_shape_sigma)
    return to_pyhf(model, n, measurement_name=measurement_name)


def nll_offset(shape_aux: Optional[Sequence[Optional[Distribution]]] = None,
               s_norm_aux: Optional[Sequence[Distribution]] = None,
               b_norm_aux: Optional[Sequence[Distribution]] = None,
               b_true: Optional[float] = None) -> float:
    r"""Constant :math:`C` with :math:`-\ln L_\mathrm{inferno} = -\ln L_\mathrm{pyhf} + C` for a
    workspace from :func:`to_pyhf_workspace` (at corresponding parameter values).

    It comes from the normalisations of the Gaussian constraints (pyhf writes them in units
    of the rescaled parameters):

    .. math::

        C = \sum_{k\ \mathrm{constrained}} \ln\sigma_k + \ln b_\mathrm{true}\,[\text{b-rate
        constraint}] - \tfrac12 \ln(2\pi)\, n_\mathrm{free\ shape},

    where a free shape nuisance's wide stand-in constraint adds, besides the constant, the
    negligible :math:`\alpha^2 / (2\sigma_\mathrm{free}^2)` to pyhf's NLL.

    Args: the constraints and ``b_true`` passed to :func:`to_pyhf_workspace`.
    """
    c = 0.0
    for d in list(shape_aux or []):
        c += -0.5 * math.log(2 * math.pi) if d is None else math.log(_normal_params(d, "shape_aux")[1])
    for d in list(s_norm_aux or []):
        c += math.log(_normal_params(d, "s_norm_aux")[1])
    b_aux = list(b_norm_aux or [])
    if b_aux:
        if b_true is None:
            raise ValueError("b_true is needed with a background-rate constraint")
        c += math.log(float(b_true))
    return c


def pyhf_model(spec: Dict[str, Any], interp_code: Union[int, str] = 2, **model_kwargs: Any) -> Tuple[Any, Any]:
    r"""``(pyhf.Model, data)`` of a workspace, with the ``histosys`` interpolation code that
    matches inferno's ``interp_code`` (``normsys`` is not used by the export).

    Requires pyhf (``pip install inferno[pyhf]``).
    """
    try:
        import pyhf
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("pyhf_model needs pyhf: pip install 'inferno[pyhf]'") from e
    code = check_code(interp_code, "histosys")
    ws = pyhf.Workspace(spec)
    model = ws.model(modifier_settings={"histosys": {"interpcode": PYHF_INTERP_CODES[code]},
                                        "normsys": {"interpcode": "code4"}}, **model_kwargs)
    return model, ws.data(model)
