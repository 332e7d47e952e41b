r"""The one-channel model of a signal and one background behind the pytorch_inferno-style
measurement API (:mod:`inferno.compat.inference`). The model is a :class:`~inferno.likelihood.Model` built by
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
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor
from torch.distributions import Distribution, Normal

from ..likelihood import Channel, HistoSys, Lumi, Model, NormFactor, Sample
from ..likelihood.interpolation import check_code

__all__ = ["paper_model"]

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


def _normal_params(d: Distribution, what: str) -> Tuple[float, float]:
    if type(d) is not Normal:
        raise ValueError(f"{what}: only Normal constraints can be exported to HistFactory, got {type(d).__name__}")
    return float(d.loc), float(d.scale)


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
