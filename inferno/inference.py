r"""From a summary statistic to a measurement: templates, binned likelihood, profile scans,
fits, interval widths and pseudo-experiments.

The statistical model is a one-channel binned Poisson likelihood of two processes,

.. math::

    \nu_i(\mu, \vec\theta) = s\, f_{s,i}(\vec\alpha) + b\, f_{b,i}(\vec\alpha),
    \qquad s = \mu + \sum_j \sigma^{s}_j, \qquad b = b_\mathrm{true} + \sum_j \beta_j,

where :math:`\mu` (the parameter of interest, POI) is the signal yield, :math:`f_s, f_b`
are normalised templates interpolated in the shape nuisances :math:`\vec\alpha`
(:func:`inferno.interp.interp_shape`, in *interpolation units*: :math:`\alpha_k=\pm1` gives
the up/down templates), :math:`\sigma^s_j` are additive signal-rate nuisances and
:math:`\beta_j` additive background-rate nuisances.  The negative log-likelihood of observed
counts :math:`n_i` is

.. math::

    -\ln L = \sum_i \big[\nu_i - n_i \ln \nu_i + \ln\Gamma(n_i + 1)\big]
             - \sum_{k} \ln p_k(\theta_k - g_k),

with constraint densities :math:`p_k` (``torch.distributions``, e.g.
``Normal(0., 2.)`` on :math:`\alpha_k`; ``None`` for a free nuisance) and global
observables :math:`g_k` (0 by default, fluctuated in pseudo-experiments).  All likelihood
arithmetic is done in float64.  A point with some :math:`\nu_i < 0` (or :math:`\nu_i = 0 <
n_i`) has :math:`-\ln L = +\infty`.

The parameter vector is ordered ``[mu, alpha_0.., s_norm_0.., b_norm_0.., (b_free)]``
(names in :attr:`ProfileResult.names`).  Profile scans and fits run a damped Newton
method with a backtracking line search on all scan points (and pseudo-experiments) at once,
as one batch; the gradient and Hessian are analytic:

.. math::

    \partial_a (-\ln L) = \sum_i \Big(1 - \frac{n_i}{\nu_i}\Big) \partial_a \nu_i, \qquad
    \partial_a\partial_b (-\ln L) = \sum_i \Big[\frac{n_i}{\nu_i^2}\, \partial_a\nu_i\,
    \partial_b\nu_i + \Big(1 - \frac{n_i}{\nu_i}\Big) \partial_a\partial_b \nu_i\Big]
    + \text{constraints},

and the iteration stops, per batch element, when the Newton decrement
:math:`\tfrac12 g^\top H^{-1} g` is below ``tol`` (an estimate of the distance to the
minimum in units of NLL).  Because the NLL can have several minima in the shape nuisances
(one per orthant of :math:`\vec\alpha` with code 0's kink, or with free nuisances), each
point is by default also started with the shape nuisances at every corner of
:math:`\{-1,+1\}^K`, in the same batch, and the lowest minimum is kept (``multistart``).
"""
from __future__ import annotations

import itertools
import math
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor
from torch.distributions import Distribution, Normal

from .interp import _check_code, _coeffs, _g_derivs

__all__ = [
    "bin_preds", "get_shape", "get_syst_shapes", "get_paper_syst_shapes",
    "calc_nll", "calc_profile", "fit_mle", "ProfileResult", "FitResult", "ConvergenceWarning",
    "get_likelihood_width", "get_interval", "generate_toys", "sample_global_obs",
    "check_coverage", "CoverageResult",
]

ArrayLike = Union[Tensor, np.ndarray, Sequence[float], float]
DTYPE = torch.float64


class ConvergenceWarning(RuntimeWarning):
    """A fit or profile point did not converge to the requested tolerance."""


# =========================================================================== templates
def _to_numpy_1d(a: Any, name: str) -> np.ndarray:
    if hasattr(a, "to_numpy"):
        a = a.to_numpy()
    if isinstance(a, Tensor):
        a = a.detach().cpu().numpy()
    arr = np.asarray(a)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (n_events,), got shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    return arr


def _check_edges(bins: Any) -> np.ndarray:
    edges = np.asarray(bins, dtype=np.float64)
    if edges.ndim != 1 or len(edges) < 2:
        raise ValueError(f"bin edges must be a 1-D array of at least 2 values, got shape {edges.shape}")
    if not np.all(np.isfinite(edges)) or np.any(np.diff(edges) <= 0):
        raise ValueError("bin edges must be finite and strictly increasing")
    return edges


def _n_bins(bins: Union[int, ArrayLike]) -> int:
    if isinstance(bins, (int, np.integer)) and not isinstance(bins, bool):
        if bins < 1:
            raise ValueError(f"the number of bins must be >= 1, got {bins}")
        return int(bins)
    return len(_check_edges(bins)) - 1


def bin_preds(preds: ArrayLike, bins: Union[int, ArrayLike]) -> np.ndarray:
    r"""Bin index of every prediction.

    Two kinds of predictions are supported:

    * ``bins`` an **int** :math:`n`: ``preds`` already are bin indices (e.g. the argmax of
      an INFERNO network, :class:`~inferno.InfernoPred`); they must be integers in
      :math:`[0, n)` and are returned as they are.
    * ``bins`` an **array of edges** :math:`e_0 < \dots < e_n`: ``preds`` are values (e.g. a
      class probability with ``np.linspace(0, 1, n + 1)``); the index is :math:`j` such
      that :math:`e_j \le x < e_{j+1}`, the last bin including its upper edge.

    Args:
        preds: predictions, shape ``(n_events,)`` or ``(n_events, 1)``.
        bins: number of bins (index predictions) or bin edges (value predictions).

    Returns:
        int64 array of bin indices, shape ``(n_events,)``.

    Raises:
        ValueError: NaN, values outside the edges, non-integer or out-of-range indices,
            bad edges.
    """
    x = _to_numpy_1d(preds, "preds")
    if isinstance(bins, (int, np.integer)) and not isinstance(bins, bool):
        n = _n_bins(bins)
        xf = x.astype(np.float64)
        if not np.all(np.isfinite(xf)):
            raise ValueError("preds contain NaN or inf")
        if np.any(xf != np.round(xf)):
            raise ValueError("with an integer `bins`, preds must be bin indices (integers); "
                             "for values such as probabilities pass bin edges, e.g. np.linspace(0, 1, n + 1)")
        if np.any((xf < 0) | (xf >= n)):
            raise ValueError(f"bin indices must be in [0, {n}), got range [{xf.min()}, {xf.max()}]")
        return xf.astype(np.int64)
    edges = _check_edges(bins)
    xf = x.astype(np.float64)
    if not np.all(np.isfinite(xf)):
        raise ValueError("preds contain NaN or inf")
    out = (xf < edges[0]) | (xf > edges[-1])
    if np.any(out):
        raise ValueError(f"{int(out.sum())} predictions lie outside the bin edges [{edges[0]}, {edges[-1]}]")
    idx = np.searchsorted(edges, xf, side="right") - 1
    return np.minimum(idx, len(edges) - 2).astype(np.int64)


def get_shape(data: Any, bins: Union[int, ArrayLike], weights: Any = None, floor: float = 1e-7,
              pred_name: str = "pred", targ: Optional[int] = None, targ_name: str = "gen_target") -> Tensor:
    r"""Normalised, weighted template (histogram) of predictions.

    .. math::

        h_j = \sum_{e \in \mathrm{bin}\ j} w_e, \qquad
        f_j = \frac{\max(h_j / \textstyle\sum_l h_l,\ \epsilon)}
                   {\sum_l \max(h_l / \textstyle\sum_m h_m,\ \epsilon)}

    The floor :math:`\epsilon` (``floor``) replaces empty (or negative-weight) bins so that
    the Poisson likelihood stays finite; the template is renormalised afterwards, so every
    bin is :math:`\ge \epsilon / (1 + n\epsilon)` and the bins sum to 1.

    Args:
        data: predictions (array/tensor, see :func:`bin_preds`) or a pandas DataFrame with a
            column ``pred_name``.
        bins: number of bins (index predictions) or bin edges (value predictions).
        weights: per-event weights (array), or with a DataFrame the name of a column;
            None: unit weights.
        floor: :math:`\epsilon`, in ``[0, 1/n_bins)``.
        pred_name: prediction column of a DataFrame.
        targ: with a DataFrame, keep only rows whose ``targ_name`` equals ``targ``.
        targ_name: target column of a DataFrame.

    Returns:
        float64 tensor of shape ``(n_bins,)`` summing to 1.

    Raises:
        ValueError: bad predictions (see :func:`bin_preds`), weights of another length,
            NaN weights, a non-positive total weight, or a bad floor.
    """
    n = _n_bins(bins)
    if not (0.0 <= floor < 1.0 / n) or not math.isfinite(floor):
        raise ValueError(f"floor must be in [0, 1/n_bins = {1.0 / n}), got {floor}")
    if hasattr(data, "columns"):  # pandas DataFrame
        df = data if targ is None else data.loc[data[targ_name] == targ]
        preds = df[pred_name].to_numpy()
        if isinstance(weights, str):
            weights = df[weights].to_numpy()
        elif weights is not None and targ is not None:
            weights = _to_numpy_1d(weights, "weights")[(data[targ_name] == targ).to_numpy()]
    else:
        preds = data
    idx = bin_preds(preds, bins)
    if weights is None:
        w = np.ones(len(idx))
    else:
        w = _to_numpy_1d(weights, "weights").astype(np.float64)
        if len(w) != len(idx):
            raise ValueError(f"preds and weights have different lengths: {len(idx)} != {len(w)}")
        if not np.all(np.isfinite(w)):
            raise ValueError("weights contain NaN or inf")
    h = np.bincount(idx, weights=w, minlength=n).astype(np.float64)
    tot = h.sum()
    if not tot > 0:
        raise ValueError(f"the total weight must be > 0, got {tot} ({len(idx)} events)")
    f = np.maximum(h / tot, floor)
    return torch.as_tensor(f / f.sum(), dtype=DTYPE)


def _predict_bins(wrapper: Any, x: Tensor, bins: Union[int, ArrayLike], mod: Any, pred_cb: Any, bs: int) -> np.ndarray:
    from .callback import AbsCallback  # local import keeps this module light to import

    if mod is None:
        preds = wrapper.predict(x, pred_cb=pred_cb, bs=bs)
    elif isinstance(mod, AbsCallback):
        preds = wrapper.predict(x, pred_cb=pred_cb, cbs=[mod], bs=bs)
    elif isinstance(mod, (list, tuple)) and all(isinstance(m, AbsCallback) for m in mod):
        preds = wrapper.predict(x, pred_cb=pred_cb, cbs=list(mod), bs=bs)
    elif callable(mod):
        preds = wrapper.predict(mod(x), pred_cb=pred_cb, bs=bs)
    else:
        raise ValueError(f"a systematic modification must be a callback or a callable x -> x', got {type(mod).__name__}")
    preds = np.asarray(preds)
    if preds.ndim == 2 and preds.shape[1] == 1:
        preds = preds[:, 0]
    return preds


def get_syst_shapes(wrapper: Any, x: Any, w: Any = None, syst_mods: Optional[Mapping[str, Tuple[Any, Any]]] = None,
                    bins: Union[int, ArrayLike] = 10, pred_cb: Any = None, floor: float = 1e-7,
                    prefix: str = "f_b", nominal_mod: Any = None, bs: int = 100_000) -> "OrderedDict[str, Tensor]":
    r"""Nominal, up and down templates of a process from a trained model.

    Predicts on ``x`` as it is (or moved by ``nominal_mod``) and, for every nuisance, on
    ``x`` moved to its up and down values, then bins with :func:`get_shape`.

    Args:
        wrapper: a trained :class:`~inferno.ModelWrapper`.
        x: events of the process (tensor / array), shape ``(n_events, n_features)``.
        w: per-event weights or None.
        syst_mods: ordered mapping ``name -> (up, down)``; each of ``up``/``down`` is a
            callback (or list of callbacks) passed to ``wrapper.predict(..., cbs=...)``,
            e.g. :class:`~inferno.PaperSystMod`, or a callable ``x -> x_shifted``.
        bins: number of bins (index predictions) or edges (value predictions), see
            :func:`bin_preds`.
        pred_cb: prediction handler, e.g. :class:`~inferno.InfernoPred` (bin indices) or
            a :class:`~inferno.PredHandler` (raw outputs); default raw outputs.
        floor: empty-bin floor of :func:`get_shape`.
        prefix: key prefix of the result.
        nominal_mod: optional modification for the nominal template.
        bs: prediction batch size.

    Returns:
        ``OrderedDict`` with ``{prefix}_nom`` ``(n_bins,)``, ``{prefix}_up`` and
        ``{prefix}_dw`` ``(n_nuis, n_bins)`` (rows in the order of ``syst_mods``), float64;
        usable as keyword arguments of :func:`calc_profile`.
    """
    if not syst_mods:
        raise ValueError("syst_mods must name at least one nuisance: {name: (up, down)}")
    for name, mods in syst_mods.items():
        if not isinstance(mods, (tuple, list)) or len(mods) != 2:
            raise ValueError(f"syst_mods[{name!r}] must be a pair (up, down)")
    from .data import to_tensor

    xt = to_tensor(x, "x")

    def shape(mod: Any) -> Tensor:
        return get_shape(_predict_bins(wrapper, xt, bins, mod, pred_cb, bs), bins, weights=w, floor=floor)

    f_nom = shape(nominal_mod)
    ups, dws = [], []
    for up, dw in syst_mods.values():
        ups.append(shape(up))
        dws.append(shape(dw))
    return OrderedDict(((f"{prefix}_nom", f_nom), (f"{prefix}_up", torch.stack(ups)), (f"{prefix}_dw", torch.stack(dws))))


def get_paper_syst_shapes(wrapper: Any, x_bkg: Any, w: Any = None, bins: Union[int, ArrayLike] = 10,
                          pred_cb: Any = None, r_vals: Tuple[float, float, float] = (-0.2, 0.0, 0.2),
                          l_vals: Tuple[float, float, float] = (2.5, 3.0, 3.5), floor: float = 1e-7,
                          prefix: str = "f_b", bs: int = 100_000) -> "OrderedDict[str, Tensor]":
    r"""Background templates of the paper's toy problem for the nuisances :math:`r` and
    :math:`\lambda`.

    The nominal is at ``(r_vals[1], l_vals[1])``; nuisance 0 (:math:`r`) has up/down at
    ``r_vals[2]`` / ``r_vals[0]``, nuisance 1 (:math:`\lambda`) at ``l_vals[2]`` /
    ``l_vals[0]``, the other held at nominal; the inputs are moved with
    :class:`~inferno.paper.PaperSystMod`. With the defaults one unit of :math:`\alpha_r` is
    :math:`\Delta r = 0.2` and one of :math:`\alpha_\lambda` is :math:`\Delta\lambda = 0.5`,
    so the paper's constraints :math:`\mathcal N(r|0, 0.4)`, :math:`\mathcal N(\lambda|3, 1)`
    are ``Normal(0, 2)`` on each :math:`\alpha`.

    Returns:
        as :func:`get_syst_shapes`: ``f_b_nom``, ``f_b_up``, ``f_b_dw`` (rows r, lambda).
    """
    from .paper import PaperSystMod

    if len(r_vals) != 3 or len(l_vals) != 3:
        raise ValueError("r_vals and l_vals must be (down, nominal, up) triples")
    r0, l0 = r_vals[1], l_vals[1]
    mods = OrderedDict((("r", (PaperSystMod(r=r_vals[2], l=l0), PaperSystMod(r=r_vals[0], l=l0))),
                        ("l", (PaperSystMod(r=r0, l=l_vals[2]), PaperSystMod(r=r0, l=l_vals[0])))))
    return get_syst_shapes(wrapper, x_bkg, w=w, syst_mods=mods, bins=bins, pred_cb=pred_cb, floor=floor,
                           prefix=prefix, nominal_mod=PaperSystMod(r=r0, l=l0), bs=bs)


# =========================================================================== the model
def _as_f64(a: Any, name: str, device: Optional[torch.device] = None) -> Tensor:
    if isinstance(a, Tensor):
        t = a.detach().to(dtype=DTYPE)
    else:
        try:
            t = torch.as_tensor(np.asarray(a, dtype=np.float64))
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be numeric, got {type(a).__name__}") from None
    return t if device is None else t.to(device)


def _check_template(t: Tensor, name: str) -> None:
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or inf")
    if (t < 0).any():
        raise ValueError(f"{name} contains negative values (templates must be >= 0)")


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


def _neg_log_prob(d: Distribution, x: Tensor) -> Tensor:
    """-log p(x) in float64 (closed form for Normal, whose parameters may be float32)."""
    if type(d) is Normal:
        loc, scale = d.loc.to(dtype=DTYPE, device=x.device), d.scale.to(dtype=DTYPE, device=x.device)
        z = (x - loc) / scale
        return 0.5 * z * z + torch.log(scale) + 0.5 * math.log(2 * math.pi)
    return -d.log_prob(x).to(DTYPE)


class _Model:
    r"""Batched evaluation of :math:`-\ln L`, its gradient and Hessian (see module docstring)."""

    def __init__(self, f_s_nom: ArrayLike, f_b_nom: ArrayLike,
                 f_s_up: Optional[ArrayLike] = None, f_s_dw: Optional[ArrayLike] = None,
                 f_b_up: Optional[ArrayLike] = None, f_b_dw: Optional[ArrayLike] = None,
                 shape_aux: Optional[Sequence[Optional[Distribution]]] = None,
                 s_norm_aux: Optional[Sequence[Distribution]] = None,
                 b_norm_aux: Optional[Sequence[Distribution]] = None,
                 nonaux_b_norm: bool = False, b_true: float = 1000.0, interp_code: Union[int, str] = 2):
        self.code = _check_code(interp_code)
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
                _check_template(t, name)
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
        self.s_coef = None if s_sh is None else _coeffs(self.f_s_nom, *s_sh)
        self.b_coef = None if b_sh is None else _coeffs(self.f_b_nom, *b_sh)
        if shape_aux is not None and self.K == 0 and len(list(shape_aux)) > 0:
            raise ValueError(f"shape_aux has {len(list(shape_aux))} entries but no up/down templates were given")
        self.shape_aux = _check_aux_list(shape_aux, self.K, "shape_aux", allow_none=True)
        self.s_norm_aux = _check_aux_list(s_norm_aux, 0, "s_norm_aux", allow_none=False)
        self.b_norm_aux = _check_aux_list(b_norm_aux, 0, "b_norm_aux", allow_none=False)
        self.nonaux_b_norm = bool(nonaux_b_norm)
        b_true = float(b_true)
        if not (math.isfinite(b_true) and b_true > 0):
            raise ValueError(f"b_true must be finite and > 0, got {b_true}")
        self.b_true = b_true

        K, S, Bn = self.K, len(self.s_norm_aux), len(self.b_norm_aux) + int(self.nonaux_b_norm)
        self.S, self.Bn = S, Bn
        self.P = 1 + K + S + Bn
        self.i_s = list(range(1 + K, 1 + K + S))
        self.i_b = list(range(1 + K + S, self.P))
        self.names = (["mu"] + [f"alpha_{k}" for k in range(K)] + [f"s_norm_{j}" for j in range(S)]
                      + [f"b_norm_{j}" for j in range(len(self.b_norm_aux))] + (["b_free"] if self.nonaux_b_norm else []))
        # (index, distribution) of every constrained parameter
        self.constraints: List[Tuple[int, Distribution]] = (
            [(1 + k, d) for k, d in enumerate(self.shape_aux) if d is not None]
            + [(i, d) for i, d in zip(self.i_s, self.s_norm_aux)]
            + [(i, d) for i, d in zip(self.i_b, self.b_norm_aux)])
        normal = [(i, d) for i, d in self.constraints if type(d) is Normal]
        self._normal = None
        if normal:
            loc = torch.stack([d.loc.to(dtype=DTYPE, device=self.device) for _, d in normal])
            scale = torch.stack([d.scale.to(dtype=DTYPE, device=self.device) for _, d in normal])
            const = float(torch.log(scale).sum()) + 0.5 * math.log(2 * math.pi) * len(normal)
            idx = torch.tensor([i for i, _ in normal], device=self.device)
            # dense over the P parameters (0 for the others), so no gather/scatter per evaluation
            loc_p = torch.zeros(self.P, dtype=DTYPE, device=self.device).index_put((idx,), loc)
            inv_p = torch.zeros(self.P, dtype=DTYPE, device=self.device).index_put((idx,), 1.0 / scale)
            self._normal = (loc_p, inv_p, const)
        self._others = [(i, d) for i, d in self.constraints if type(d) is not Normal]
        # constant part of the Hessian (the Normal constraints) and the matrix that places the
        # second derivatives of nu in alpha (see nll_grad_hess) into the flattened Hessian
        P = self.P
        self._hess_const = (torch.zeros(P, P, dtype=DTYPE, device=self.device) if self._normal is None
                            else torch.diag(self._normal[1] * self._normal[1]))
        if K:
            cols = [[1 + k for k in range(K)]]  # m_aa: (alpha_k, alpha_k)
            tmpl = []  # one (n_bins, K) block of [A_s, S_s, A_b, S_b] per process with shapes
            if self.s_coef is not None:
                cols.append([0] + self.i_s)  # m_as: (alpha_k, c) and (c, alpha_k) for these c
                tmpl += [self.s_coef[1].T, self.s_coef[0].T]
            if self.b_coef is not None:
                cols.append(self.i_b)
                tmpl += [self.b_coef[1].T, self.b_coef[0].T]
            place = torch.zeros(len(cols) * K, P * P, dtype=DTYPE, device=self.device)
            for k in range(K):
                place[k, (1 + k) * P + 1 + k] = 1.0
                for blk, cs in enumerate(cols[1:], start=1):
                    for c in cs:
                        place[blk * K + k, (1 + k) * P + c] += 1.0
                        place[blk * K + k, c * P + 1 + k] += 1.0
            self._d2_place = place
            self._d2_tmpl = torch.cat(tmpl, dim=1)  # (n_bins, 2K or 4K)

    # ------------------------------------------------------------------ pieces
    def _rates(self, p: Tensor) -> Tuple[Tensor, Tensor]:
        s = p[..., 0]
        if self.S:
            s = s + p[..., self.i_s].sum(-1)
        b = torch.full_like(s, self.b_true)
        if self.Bn:
            b = b + p[..., self.i_b].sum(-1)
        return s, b

    def _constraint_terms(self, p: Tensor, gobs: Optional[Tensor], derivs: bool):
        """Sum of -log p_k(theta_k - g_k) and, if derivs, its gradient; the Hessian diagonal of
        the Normal constraints is constant (``_hess_const``), that of the others is returned
        (None if there are none)."""
        c = torch.zeros(p.shape[:-1], dtype=DTYPE, device=p.device)
        g = h = None
        if self._normal is not None:  # all Normal constraints at once, in closed form
            loc, inv_scale, const = self._normal
            x = p if gobs is None else p - gobs
            z = (x - loc) * inv_scale  # 0 for the parameters without a Normal constraint
            c = c + 0.5 * (z * z).sum(-1) + const
            if derivs:
                g = z * inv_scale
        if self._others and derivs:
            g = torch.zeros_like(p) if g is None else g.clone()
            h = torch.zeros_like(p)
        for i, d in self._others:
            x = p[..., i] if gobs is None else p[..., i] - gobs[..., i]
            with torch.enable_grad():  # other distributions: derivatives by autograd
                xr = x.detach().clone().requires_grad_(True)
                nlp = -d.log_prob(xr).to(DTYPE)
                if derivs:
                    (d1,) = torch.autograd.grad(nlp.sum(), xr, create_graph=True)
                    (d2,) = torch.autograd.grad(d1.sum(), xr, allow_unused=True)
                    g[..., i] = d1.detach()
                    h[..., i] = torch.zeros_like(xr) if d2 is None else d2.detach()
            c = c + nlp.detach()
        return c, g, h

    def _templates(self, alpha: Tensor, derivs: bool, right: Optional[Tensor] = None):
        """``((f_s, d1_s), (f_b, d1_b), (g1, g2))``: the interpolated templates (..., n_bins),
        if ``derivs`` their derivatives in alpha (..., K, n_bins) (None for a process without
        shape nuisances), and g', g'' (..., K) of the separable form
        ``delta_k = alpha_k S_k + g(alpha_k) A_k`` (:func:`inferno.interp._coeffs`), so the sum
        over nuisances is a matrix product."""
        g = g1 = g2 = None
        if self.K:
            g, g1, g2 = _g_derivs(alpha, self.code, right, derivs)
        out = []
        for nomv, coef in ((self.f_s_nom, self.s_coef), (self.f_b_nom, self.b_coef)):
            if coef is None:
                out.append((nomv.expand(alpha.shape[:-1] + nomv.shape), None))
                continue
            S, A = coef
            f = nomv + alpha @ S + g @ A
            out.append((f, S + g1[..., None] * A if derivs else None))
        return out[0], out[1], (g1, g2)

    def expected(self, p: Tensor) -> Tensor:
        """Expected counts nu, shape (..., n_bins)."""
        (f_s, _), (f_b, _), _ = self._templates(p[..., 1:1 + self.K], derivs=False)
        s, b = self._rates(p)
        return s[..., None] * f_s + b[..., None] * f_b

    @staticmethod
    def _poisson(nu: Tensor, n: Tensor, lgam: Tensor) -> Tensor:
        # nu = 0 < n gives xlogy = -inf, so +inf; any nu < 0 is +inf too (log of a negative
        # is NaN, and with n = 0 xlogy is 0, hence the explicit test)
        val = (nu - torch.xlogy(n, nu)).sum(-1) + lgam
        bad = (nu < 0).any(-1) | torch.isnan(val)
        return torch.where(bad, math.inf, val)

    def nll(self, p: Tensor, n: Tensor, lgam: Tensor, gobs: Optional[Tensor] = None) -> Tensor:
        """-ln L, shape p.shape[:-1] (broadcast with n[..., :-1])."""
        val = self._poisson(self.expected(p), n, lgam)
        if self.constraints:
            val = val + self._constraint_terms(p, gobs, derivs=False)[0]
        return val

    def nll_grad_hess(self, p: Tensor, n: Tensor, lgam: Tensor, gobs: Optional[Tensor] = None,
                      right: Optional[Tensor] = None):
        """-ln L, gradient (..., P) and Hessian (..., P, P).

        For code 0, derivatives in an alpha_k sitting exactly on the kink (0) are the left
        ones, or the right ones where the bool mask ``right`` (..., K) is True.
        """
        K = self.K
        (f_s, s1), (f_b, b1), (g1, g2) = self._templates(p[..., 1:1 + K], derivs=True, right=right)
        s, b = self._rates(p)
        nu = s[..., None] * f_s + b[..., None] * f_b
        val = self._poisson(nu, n, lgam)
        safe = torch.where(nu > 0, nu, 1.0)
        ratio = n / safe  # 0 where n = 0
        w = 1.0 - ratio  # d(-lnL)/d nu
        r2 = ratio / safe  # d2(-lnL)/d nu2
        rows = [f_s[..., None, :]]
        if K:
            dnu_da = None  # d nu / d alpha_k = s d f_s / d alpha_k + b d f_b / d alpha_k
            if s1 is not None:
                dnu_da = s[..., None, None] * s1
            if b1 is not None:
                dnu_da = b[..., None, None] * b1 if dnu_da is None else dnu_da + b[..., None, None] * b1
            rows.append(dnu_da)
        if self.S:
            rows.append(f_s[..., None, :].expand(nu.shape[:-1] + (self.S, nu.shape[-1])))
        if self.Bn:
            rows.append(f_b[..., None, :].expand(nu.shape[:-1] + (self.Bn, nu.shape[-1])))
        J = torch.cat(rows, dim=-2)  # (..., P, n_bins)
        grad = (J @ w.unsqueeze(-1)).squeeze(-1)
        hess = (J * r2.unsqueeze(-2)) @ J.transpose(-1, -2)
        if K:
            # second derivatives of nu, through the separable form: d2 f / d alpha_k^2 =
            # g''(alpha_k) A_k, and sum_i w_i d f_i / d alpha_k = w.S_k + g'(alpha_k) w.A_k;
            # all placed into the Hessian by one product with a constant matrix
            wt = w @ self._d2_tmpl  # (..., 2K or 4K): w.A_s, w.S_s, w.A_b, w.S_b
            m_aa, blocks, j = 0.0, [], 0
            for coef, rate in ((self.s_coef, s), (self.b_coef, b)):
                if coef is None:
                    continue
                wa, ws = wt[..., j:j + K], wt[..., j + K:j + 2 * K]
                j += 2 * K
                m_aa = m_aa + rate[..., None] * g2 * wa
                blocks.append(ws + g1 * wa)  # d2 nu / d alpha_k d(rate) = d f / d alpha_k
            d2 = torch.cat([m_aa] + blocks, dim=-1) @ self._d2_place
            hess = hess + d2.reshape(hess.shape)
        if self.constraints:
            c, cg, ch = self._constraint_terms(p, gobs, derivs=True)
            val = val + c
            grad = grad + cg
            hess = hess + self._hess_const
            if ch is not None:
                hess = hess + torch.diag_embed(ch)
        return val, grad, hess


# =========================================================================== minimiser
#: start pruning of :func:`_newton_multistart` (see :func:`_newton`): a start counts as being
#: in Newton's quadratic regime when its Hessian is positive definite without damping and its
#: decrement 0.5 g^T H^-1 g is at most this
_PRUNE_REGIME = 0.1
#: two starts in the quadratic regime head for the same minimum when their Newton-predicted
#: minima m_i, m_j agree to 0.5 (m_j - m_i)^T H_j (m_j - m_i) <= min(this, (h_i + h_j)^2), with
#: h the half decrements 0.5 g^T H^-1 g (NLL units; a Newton step's prediction error is of the
#: order of the squared decrement).  The quadratic form is bounded from above by
#: 0.5 (sum_f sqrt(H_ff) |m_j - m_i|_f)^2, which is what is tested.
_PRUNE_SAME = 1e-3
#: False: no pruning (every start runs to convergence; for tests and comparisons)
_PRUNE_STARTS = True


def _newton(model: _Model, p0: Tensor, n: Tensor, gobs: Optional[Tensor], free: Sequence[int],
            tol: float, max_iter: int, c_armijo: float = 1e-4, n_halvings: int = 30,
            n_starts: int = 1):
    """Damped Newton with backtracking line search over the free parameters, batched.

    p0: (B, P); n: (B, n_bins); gobs: (B, P) or None.  Returns p, nll, grad, hess,
    converged, n_iter, all per batch element.

    Each element iterates until its Newton decrement 0.5 g^T H^-1 g is <= tol with an
    undamped, positive-definite Hessian.  A Hessian that is not positive definite is
    regularised (Levenberg damping H + lam I); a step failing the Armijo condition is
    halved; a step that cannot decrease the NLL raises the damping.  Elements that have
    converged or failed leave the batch (the working tensors are compacted), so later
    iterations only evaluate the ones still running.

    With large counts the NLL is a sum of large terms and is only known to about
    eps * sum_i n_i (1 + |ln n_i|); once the predicted decrease 0.5 g^T H^-1 g is below that
    rounding level, the line search cannot tell a good step from a bad one, so the
    (undamped) Newton step is taken as it is: that close to the minimum the quadratic
    model is accurate, and the next decrement is far below ``tol``.

    Code 0 interpolation has a kink at alpha_k = 0.  A step that would cross it stops on it
    (alpha_k = 0 exactly); an alpha_k on the kink stays there ("pinned") while 0 is in its
    subdifferential, i.e. left derivative <= 0 <= right derivative, and otherwise moves
    to the side whose one-sided derivative is negative, using that side's derivatives.

    ``n_starts`` > 1: the batch is ``n_starts`` starts of the same ``B // n_starts`` problems
    (element ``e`` is start ``e // (B // n_starts)`` of problem ``e % (B // n_starts)``), of
    which the caller keeps the lowest converged minimum (start 0 unless another is lower).
    A start other than 0 is then dropped (returned with converged False) as soon as it
    cannot change that choice: once it is in Newton's quadratic regime (undamped
    positive-definite Hessian, 0.5 g^T H^-1 g <= ``_PRUNE_REGIME``, for code 0 no alpha on
    or stepping across the kink), if its Newton-predicted minimum coincides (to
    ``_PRUNE_SAME`` in its Hessian's metric) with that of a lower-numbered start also in the
    quadratic regime or converged, i.e. both head for the same minimum; or if even twice the
    quadratic model's predicted decrease, nll - g^T H^-1 g, leaves it above a minimum that
    another start of its problem has already converged to.
    """
    B, P = p0.shape
    dev = p0.device
    free_t = torch.as_tensor(list(free), dtype=torch.long, device=dev)
    F = len(free)
    f0 = P - F  # free = range(f0, P) (the usual case) is sliced, not gathered
    contiguous = list(free) == list(range(f0, P))
    eye = torch.eye(F, dtype=DTYPE, device=dev)
    lgam = torch.lgamma(n + 1.0).sum(-1)
    # rounding level of the NLL (see the docstring): below it Armijo tests are noise
    fp_floor = 8.0 * torch.finfo(DTYPE).eps * (n * (1.0 + torch.log(n.clamp_min(1.0)))).sum(-1)
    K = model.K
    kink = model.code == 0 and K > 0
    # positions of the alphas inside the free vector (alphas are always free)
    a_pos = torch.as_tensor([list(free).index(1 + k) for k in range(K)], dtype=torch.long, device=dev) if kink else None
    prune = n_starts > 1 and _PRUNE_STARTS
    if prune:
        n_pb = B // n_starts
        rec = torch.zeros(B, F + 2, dtype=DTYPE, device=dev)  # see _prune_starts
        best_conv = torch.full((n_pb,), math.inf, dtype=DTYPE, device=dev)  # lowest converged NLL per problem
    # outputs, filled as elements leave the batch
    out_p, out_nll = torch.empty_like(p0), torch.empty(B, dtype=DTYPE, device=dev)
    out_g, out_H = torch.empty_like(p0), torch.empty(B, P, P, dtype=DTYPE, device=dev)
    out_conv = torch.zeros(B, dtype=torch.bool, device=dev)
    out_iter = torch.zeros(B, dtype=torch.long, device=dev)
    idx = torch.arange(B, device=dev)  # original index of every working element
    p = p0.clone()
    nll, g, H = model.nll_grad_hess(p, n, lgam, gobs)
    lam = torch.zeros(B, dtype=DTYPE, device=dev)
    failed = ~torch.isfinite(nll)
    n_iter = torch.zeros(B, dtype=torch.long, device=dev)
    ts = 0.5 ** torch.arange(0, n_halvings + 1, dtype=DTYPE, device=dev)  # 1, 1/2, 1/4, ...
    for it in range(max_iter + 1):
        Bw = p.shape[0]
        pinned = torch.zeros(Bw, F, dtype=torch.bool, device=dev)
        go_right = None
        if kink:
            alpha = p[:, 1:1 + K]
            at0 = alpha == 0
            go_right = torch.zeros_like(at0)
            if bool(at0.any()):
                g_left = g[:, 1:1 + K]  # g was evaluated with left derivatives on the kink
                g_right = model.nll_grad_hess(p, n, lgam, gobs, right=torch.ones_like(at0))[1][:, 1:1 + K]
                pin_a = at0 & (g_left <= 0) & (g_right >= 0)
                go_right = at0 & ~pin_a & (g_right < 0)
                if bool(go_right.any()):
                    nll, g, H = model.nll_grad_hess(p, n, lgam, gobs, right=go_right)
                pinned[:, a_pos] = pin_a
        gf = g[:, f0:] if contiguous else g[:, free_t]
        Hf = H[:, f0:, f0:] if contiguous else H[:, free_t][:, :, free_t]

        def solve(pinned: Tensor, lam: Tensor):
            if kink:
                gm = torch.where(pinned, 0.0, gf)
                keep = ~pinned
                Hm = torch.where(keep[:, :, None] & keep[:, None, :], Hf, 0.0) + torch.diag_embed(pinned.to(DTYPE))
            else:  # nothing is ever pinned
                gm, Hm = gf, Hf
            scale = Hm.diagonal(dim1=-2, dim2=-1).abs().amax(-1).clamp_min(1e-12)
            L, info = torch.linalg.cholesky_ex(Hm + lam[:, None, None] * eye)
            bad = info > 0
            tries = 0
            while bool(bad.any()) and tries < 40:
                lam = torch.where(bad, torch.maximum(10.0 * lam, 1e-8 * scale), lam)
                L, info = torch.linalg.cholesky_ex(Hm + lam[:, None, None] * eye)
                bad = info > 0
                tries += 1
            d = -torch.cholesky_solve(gm.unsqueeze(-1), L).squeeze(-1)
            return d, -(gm * d).sum(-1), lam, bad, scale

        d, dec, lam, bad, scale = solve(pinned, lam)
        if kink:
            # an alpha leaving the kink must move to the side chosen above; else hold it there
            alpha = p[:, 1:1 + K]
            da = d[:, a_pos]
            wrong = (alpha == 0) & ~pinned[:, a_pos] & (((da < 0) & go_right) | ((da > 0) & ~go_right))
            if bool(wrong.any()):
                pinned[:, a_pos] |= wrong
                d, dec, lam, bad, scale = solve(pinned, lam)
        failed = failed | bad
        converged = (0.5 * dec <= tol) & (lam == 0) & ~failed
        done = converged | failed
        if prune and it > 0:
            done = done | _prune_starts(p, nll, Hf, d, dec, lam, pinned, failed, converged, idx, n_pb, rec, best_conv,
                                        (f0, contiguous, free_t), K, a_pos)
        if it == max_iter:
            done = torch.ones_like(done)
        if bool(done.any()):
            # elements that leave: store them, and keep working on the others only
            rows = idx[done]
            out_p[rows], out_nll[rows], out_g[rows], out_H[rows] = p[done], nll[done], g[done], H[done]
            out_conv[rows], out_iter[rows] = converged[done], n_iter[done]
            keep = (~done).nonzero().squeeze(-1)
            if keep.numel() == 0:
                break
            idx, p, n, lgam, fp_floor = idx[keep], p[keep], n[keep], lgam[keep], fp_floor[keep]
            gobs = None if gobs is None else gobs[keep]
            nll, lam, n_iter, d, dec, scale = nll[keep], lam[keep], n_iter[keep], d[keep], dec[keep], scale[keep]
            Bw = keep.numel()
        failed = torch.zeros(Bw, dtype=torch.bool, device=dev)
        step = torch.zeros_like(p)
        if contiguous:
            step[:, f0:] = d
        else:
            step[:, free_t] = d
        t_max = torch.ones(Bw, dtype=DTYPE, device=dev)
        snap = None
        if kink:  # stop on the kink if the step crosses it
            alpha, da = p[:, 1:1 + K], step[:, 1:1 + K]
            cross = (alpha != 0) & (alpha * (alpha + da) < 0)
            t_cross = torch.where(cross, alpha / torch.where(cross, -da, torch.ones_like(da)), torch.full_like(da, math.inf))
            t_first, k_first = t_cross.min(-1)
            snap = t_first < 1.0
            t_max = torch.where(snap, t_first, t_max)
        nll_1 = model.nll(p + t_max[:, None] * step, n, lgam, gobs)
        ok_1 = (nll_1 <= nll - c_armijo * t_max * dec) | ((0.5 * dec <= fp_floor) & torch.isfinite(nll_1))
        t = torch.where(ok_1, t_max, torch.zeros_like(nll))
        need = ~ok_1
        if bool(need.any()):
            sel = need.nonzero().squeeze(-1)
            ci = t_max[sel, None] * ts[None, 1:]  # (n_need, n_halvings) step lengths, largest first
            p_l = p[sel, None, :] + ci[:, :, None] * step[sel, None, :]
            gi = None if gobs is None else gobs[sel, None, :]
            nll_l = model.nll(p_l, n[sel, None, :], lgam[sel, None], gi)
            ok = nll_l <= nll[sel, None] - c_armijo * ci * dec[sel, None]
            any_ok = ok.any(-1)
            first = torch.argmax(ok.to(torch.int8), dim=-1)  # largest step satisfying Armijo
            best = torch.argmin(torch.nan_to_num(nll_l, nan=math.inf), dim=-1)
            improves = nll_l.gather(-1, best[:, None]).squeeze(-1) < nll[sel]
            choice = torch.where(any_ok, first, best)
            t_sel = ci.gather(-1, choice[:, None]).squeeze(-1)
            t = t.index_put((sel,), torch.where(any_ok | improves, t_sel, torch.zeros_like(t_sel)))
        moved = t > 0
        p = p + t[:, None] * step
        if snap is not None:  # land exactly on the kink
            hit = moved & snap & (t == t_max)
            if bool(hit.any()):
                rows = hit.nonzero().squeeze(-1)
                p[rows, 1 + k_first[rows]] = 0.0
        lam = torch.where(moved, torch.where(lam / 10.0 < 1e-8 * scale, torch.zeros_like(lam), lam / 10.0), lam)
        lam = torch.where(~moved, torch.maximum(10.0 * lam, 1e-4 * scale), lam)
        n_iter = n_iter + 1
        # a step that cannot decrease the NLL is retried with more damping; give up once the
        # damping dwarfs the curvature (the step is then below float64 resolution)
        failed = ~moved & (lam > 1e12 * scale)
        nll, g, H = model.nll_grad_hess(p, n, lgam, gobs)
    return out_p, out_nll, out_g, out_H, out_conv, out_iter


def _prune_starts(p: Tensor, nll: Tensor, Hf: Tensor, d: Tensor, dec: Tensor, lam: Tensor, pinned: Tensor,
                  failed: Tensor, converged: Tensor, idx: Tensor, n_pb: int, rec: Tensor, best_conv: Tensor,
                  free: Tuple[int, bool, Tensor], K: int, a_pos: Optional[Tensor]) -> Tensor:
    """The starts of :func:`_newton`'s batch that can be dropped (see its docstring), as a
    bool mask over the working elements.  ``rec`` (n_starts * n_pb, F + 2) holds, per start,
    its latest Newton-predicted minimum, half decrement and whether it is a valid reference
    (quadratic regime or converged); ``best_conv`` (n_pb,) the lowest converged NLL of each
    problem.  Both are updated in place."""
    f0, contiguous, free_t = free
    F = d.shape[-1]
    h = 0.5 * dec
    regime = (lam == 0) & ~failed & (h <= _PRUNE_REGIME)
    if a_pos is not None:  # code 0: the quadratic model does not reach across the kink
        alpha = p[:, 1:1 + K]
        regime = regime & ~pinned.any(-1) & ((alpha * (alpha + d[:, a_pos])) > 0).all(-1)
    regime = regime | converged
    m = (p[:, f0:] if contiguous else p[:, free_t]) + d
    rec[idx] = torch.cat([m, h[:, None], regime[:, None].to(DTYPE)], dim=-1)
    prob, start = idx % n_pb, idx // n_pb
    best_conv.scatter_reduce_(0, prob, torch.where(converged, nll, math.inf), "amin")
    cand = regime & ~converged & (start > 0)
    if not bool(cand.any()):
        return cand
    S = rec.shape[0] // n_pb
    r = rec.view(S, n_pb, F + 2)[:, prob]  # every start of every working element's problem, (S, Bw, F + 2)
    # 0.5 D^T H D <= 0.5 (sum_f sqrt(H_ff) |D_f|)^2 for a positive-definite H (Cauchy-Schwarz)
    q = 0.5 * ((r[..., :F] - m).abs() * Hf.diagonal(dim1=-2, dim2=-1).sqrt()).sum(-1) ** 2
    lim = ((r[..., F] + h) ** 2).clamp(max=_PRUNE_SAME)
    lower = torch.arange(S, device=p.device)[:, None] < start
    same = ((r[..., F + 1] > 0) & lower & (q <= lim)).any(0)
    above = nll - dec > best_conv[prob]
    return cand & (same | above)


#: at most this many shape nuisances get a start in every corner of {-1, +1}^K (else one
#: start at +1 and one at -1 on each axis)
_MAX_CORNER_K = 4


def _shape_starts(K: int) -> Tensor:
    """Extra starting values of the shape nuisances for :func:`_newton_multistart`."""
    if K <= _MAX_CORNER_K:
        return torch.tensor(list(itertools.product((-1.0, 1.0), repeat=K)), dtype=DTYPE)
    eye = torch.eye(K, dtype=DTYPE)
    return torch.cat([eye, -eye])


def _newton_multistart(model: _Model, p0: Tensor, n: Tensor, gobs: Optional[Tensor], free: Sequence[int],
                       tol: float, max_iter: int, multistart: bool):
    """:func:`_newton` from ``p0`` and, with ``multistart`` and shape nuisances, also from
    ``p0`` with the shape nuisances moved to each start of :func:`_shape_starts` (all as one
    batch); per batch element, the lowest converged minimum is kept.

    The NLL need not be convex in the shape nuisances: code 0 is linear on each side of
    its kink, so each orthant of alpha space can hold its own minimum (the NLL is convex
    within an orthant when the rates are fixed), and free or weakly constrained nuisances
    can make code 2 / 4p multimodal too.  A single descent from alpha = 0 then stops in
    whichever minimum it reaches first.  A start in every orthant finds each orthant's
    minimum.  The first start (``p0``) is kept unless another is lower by more than ``tol``,
    so a unimodal problem gives exactly the single-start result.
    """
    K = model.K
    if not multistart or K == 0:
        return _newton(model, p0, n, gobs, free, tol, max_iter)
    alts = _shape_starts(K).to(p0.device)
    S, B = 1 + alts.shape[0], p0.shape[0]
    starts = p0.unsqueeze(0).repeat(S, 1, 1)
    starts[1:, :, 1:1 + K] = alts[:, None, :]
    p, nll, g, H, conv, n_iter = _newton(model, starts.reshape(S * B, -1), n.repeat(S, 1), None if gobs is None else gobs.repeat(S, 1),
                                         free, tol, max_iter, n_starts=S)
    P = p.shape[-1]
    p, nll, g, H = p.reshape(S, B, P), nll.reshape(S, B), g.reshape(S, B, P), H.reshape(S, B, P, P)
    conv, n_iter = conv.reshape(S, B), n_iter.reshape(S, B)
    val = torch.where(conv, nll, torch.full_like(nll, math.inf))
    best = val.argmin(0)
    best = torch.where(val[0] - val.gather(0, best[None])[0] > tol, best, torch.zeros_like(best))
    best = torch.where(conv.any(0), best, torch.zeros_like(best))  # none converged: report the first start
    ar = torch.arange(B, device=p.device)
    return p[best, ar], nll[best, ar], g[best, ar], H[best, ar], conv[best, ar], n_iter.sum(0)


# =========================================================================== observed data
def _is_scalar(a: Any) -> bool:
    return isinstance(a, (int, float, np.integer, np.floating)) or (isinstance(a, (Tensor, np.ndarray)) and a.ndim == 0)


def _resolve_data(model_kw: Dict[str, Any], n_obs: Any, mu_true: Optional[float], b_true: Optional[float]):
    """Build the model and the observed counts (..., n_bins)."""
    if _is_scalar(n_obs):
        n_tot = float(n_obs)
        if mu_true is None:
            raise ValueError("mu_true is required with a scalar n_obs (the Asimov data are "
                             "mu_true * f_s_nom + (n_obs - mu_true) * f_b_nom)")
        if b_true is None:
            b_true = n_tot - float(mu_true)
        elif abs(n_tot - float(mu_true) - float(b_true)) > 1e-9 * max(1.0, abs(n_tot)):
            raise ValueError(f"a scalar n_obs is the Asimov total count and must equal mu_true + b_true "
                             f"({mu_true} + {b_true}), got {n_tot}")
        model = _Model(b_true=b_true, **model_kw)
        n = float(mu_true) * model.f_s_nom + float(b_true) * model.f_b_nom
    else:
        if b_true is None:
            raise ValueError("b_true (the nominal background yield) is required when n_obs are per-bin counts")
        model = _Model(b_true=b_true, **model_kw)
        n = _as_f64(n_obs, "n_obs", model.device)
        if n.dim() == 0 or n.shape[-1] != model.n_bins:
            raise ValueError(f"n_obs must be a total count or counts of shape (..., n_bins={model.n_bins}), "
                             f"got shape {tuple(n.shape)}")
        if not torch.isfinite(n).all() or (n < 0).any():
            raise ValueError("n_obs contains NaN, inf or negative counts")
    return model, n


def _resolve_gobs(model: _Model, global_obs: Any) -> Optional[Tensor]:
    if global_obs is None:
        return None
    g = _as_f64(global_obs, "global_obs", model.device)
    if g.dim() == 0 or g.shape[-1] != model.P - 1:
        raise ValueError(f"global_obs must have shape (..., n_nuisances={model.P - 1}) "
                         f"(one per nuisance, ordered as ProfileResult.names[1:]), got {tuple(g.shape)}")
    if not torch.isfinite(g).all():
        raise ValueError("global_obs contains NaN or inf")
    return torch.cat([torch.zeros(g.shape[:-1] + (1,), dtype=DTYPE, device=g.device), g], -1)


def _report(converged: Tensor, what: str, on_fail: str, where: Callable[[Tensor], str]) -> None:
    if on_fail not in ("warn", "raise", "ignore"):
        raise ValueError(f"on_fail must be 'warn', 'raise' or 'ignore', got {on_fail!r}")
    if bool(converged.all()) or on_fail == "ignore":
        return
    msg = f"{int((~converged).sum())} of {converged.numel()} {what} did not converge: {where(~converged)}"
    if on_fail == "raise":
        raise RuntimeError(msg)
    warnings.warn(msg, ConvergenceWarning, stacklevel=3)


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


@dataclass
class ProfileResult:
    """Result of :func:`calc_profile` with ``return_result=True``.

    Attributes:
        nll: profiled :math:`-\\ln L` at every scan point, shape ``(..., n_scan)``.
        params: parameters at every point, ``(..., n_scan, P)``, ordered as ``names``.
        converged: bool mask ``(..., n_scan)``.
        n_iter: Newton iterations used per point (summed over the starts of ``multistart``).
        names: parameter names.
        mu_scan: the scan points.
    """

    nll: Tensor
    params: Tensor
    converged: Tensor
    n_iter: Tensor
    names: List[str]
    mu_scan: Tensor


@dataclass
class FitResult:
    """Result of :func:`fit_mle`.

    Attributes:
        params: best-fit parameters ``(..., P)`` ordered as ``names`` (``params[..., 0]`` is
            the signal yield).
        uncertainties: :math:`\\sqrt{\\mathrm{diag}\\, H^{-1}}`, ``(..., P)``.
        cov: :math:`H^{-1}` from a Cholesky factorisation of the Hessian, ``(..., P, P)``
            (NaN where the Hessian is not positive definite).
        nll: minimum :math:`-\\ln L`, ``(...)``.
        converged: bool mask ``(...)``.
        n_iter: Newton iterations used (summed over the starts of ``multistart``).
        names: parameter names.
    """

    params: Tensor
    uncertainties: Tensor
    cov: Tensor
    nll: Tensor
    converged: Tensor
    n_iter: Tensor
    names: List[str]

    @property
    def mu(self) -> Tensor:
        """Best-fit signal yield."""
        return self.params[..., 0]

    @property
    def mu_unc(self) -> Tensor:
        """Hessian uncertainty of the signal yield."""
        return self.uncertainties[..., 0]


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
    model, n = _resolve_data(kw, n_obs, mu_true, b_true)
    mus = _as_f64(mu_scan, "mu_scan", model.device)
    if mus.dim() > 1:
        raise ValueError(f"mu_scan must be 1-D, got shape {tuple(mus.shape)}")
    mus = mus.reshape(-1)
    if mus.numel() == 0 or not torch.isfinite(mus).all():
        raise ValueError("mu_scan must be non-empty and finite")
    if mus.numel() > 1 and (mus[1:] <= mus[:-1]).any():
        raise ValueError("mu_scan must be strictly increasing")
    gobs = _resolve_gobs(model, global_obs)
    batch = torch.broadcast_shapes(n.shape[:-1], () if gobs is None else gobs.shape[:-1])
    full = batch + (mus.numel(),)
    p0 = torch.zeros(full + (model.P,), dtype=DTYPE, device=model.device)
    p0[..., 0] = mus
    nb = n.unsqueeze(-2).expand(full + (model.n_bins,))
    gb = None if gobs is None else gobs.unsqueeze(-2).expand(full + (model.P,)).reshape(-1, model.P)
    with torch.no_grad():
        if model.P == 1:
            lgam = torch.lgamma(nb + 1.0).sum(-1)
            nll = model.nll(p0, nb, lgam)
            params, conv = p0, torch.isfinite(nll)
            n_iter = torch.zeros(full, dtype=torch.long)
        else:
            p, nll, _, _, conv, n_iter = _newton_multistart(model, p0.reshape(-1, model.P), nb.reshape(-1, model.n_bins),
                                                            gb, free=range(1, model.P), tol=tol, max_iter=n_steps,
                                                            multistart=multistart)
            params, nll, conv, n_iter = p.reshape(full + (model.P,)), nll.reshape(full), conv.reshape(full), n_iter.reshape(full)
    if verbose:
        print(f"calc_profile: {int(conv.sum())}/{conv.numel()} points converged, max {int(n_iter.max())} iterations")
    _report(conv, "profile points", on_fail, lambda bad: f"mu = {mus.expand(full)[bad][:10].tolist()}")
    if return_result:
        return ProfileResult(nll=nll, params=params, converged=conv, n_iter=n_iter, names=model.names, mu_scan=mus)
    return nll


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
    model, n = _resolve_data(kw, n_obs, mu_true, b_true)
    gobs = _resolve_gobs(model, global_obs)
    batch = torch.broadcast_shapes(n.shape[:-1], () if gobs is None else gobs.shape[:-1])
    if mu_init is None:
        mu_init = mu_true if mu_true is not None else max(float(n.sum(-1).mean()) - model.b_true, 1.0)
    p0 = torch.zeros(batch + (model.P,), dtype=DTYPE, device=model.device)
    p0[..., 0] = float(mu_init)
    nb = n.expand(batch + (model.n_bins,)).reshape(-1, model.n_bins)
    gb = None if gobs is None else gobs.expand(batch + (model.P,)).reshape(-1, model.P)
    with torch.no_grad():
        p, nll, _, H, conv, n_iter = _newton_multistart(model, p0.reshape(-1, model.P), nb, gb, free=range(model.P),
                                                        tol=tol, max_iter=n_steps, multistart=multistart)
        L, info = torch.linalg.cholesky_ex(H)
        pd = info == 0
        cov = torch.cholesky_inverse(torch.where(pd[:, None, None], L, torch.eye(model.P, dtype=DTYPE, device=L.device)))
        cov = torch.where(pd[:, None, None], cov, torch.full_like(cov, math.nan))
    conv = conv & pd
    unc = cov.diagonal(dim1=-2, dim2=-1).sqrt()
    _report(conv, "fits", on_fail, lambda bad: f"batch indices {bad.nonzero().squeeze(-1)[:10].tolist()} "
            "(not converged or Hessian not positive definite)")
    return FitResult(params=p.reshape(batch + (model.P,)), uncertainties=unc.reshape(batch + (model.P,)),
                     cov=cov.reshape(batch + (model.P, model.P)), nll=nll.reshape(batch),
                     converged=conv.reshape(batch), n_iter=n_iter.reshape(batch), names=model.names)


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
    code = _check_code(interp_code)
    dev = f_b_nom.device if isinstance(f_b_nom, Tensor) else None
    f_s0, f_b0 = _as_f64(f_s_nom, "f_s_nom", dev).reshape(-1), _as_f64(f_b_nom, "f_b_nom", dev).reshape(-1)
    if f_s0.shape != f_b0.shape:
        raise ValueError(f"templates of different lengths: {f_s0.numel()} vs {f_b0.numel()} bins")
    for t, name in ((f_s0, "f_s_nom"), (f_b0, "f_b_nom")):
        _check_template(t, name)
    mu = mu.to(DTYPE) if isinstance(mu, Tensor) else torch.tensor(float(mu), dtype=DTYPE, device=f_s0.device)

    def interp(nomv: Tensor, up: Any, dw: Any, proc: str) -> Tensor:
        if up is None and dw is None:
            return nomv
        if up is None or dw is None:
            raise ValueError(f"f_{proc}_up and f_{proc}_dw must be given together")
        if shape_alpha is None:
            raise ValueError(f"f_{proc}_up/f_{proc}_dw are given but shape_alpha is None")
        u = up.to(DTYPE) if isinstance(up, Tensor) else _as_f64(up, f"f_{proc}_up", nomv.device)
        d = dw.to(DTYPE) if isinstance(dw, Tensor) else _as_f64(dw, f"f_{proc}_dw", nomv.device)
        u, d = (u[None] if u.dim() == 1 else u), (d[None] if d.dim() == 1 else d)
        for t, name in ((u, f"f_{proc}_up"), (d, f"f_{proc}_dw")):
            if t.dim() != 2 or t.shape[1] != nomv.shape[0]:
                raise ValueError(f"{name} must have shape (n_nuisances, n_bins={nomv.shape[0]}), got {tuple(t.shape)}")
            _check_template(t.detach(), name)
        if u.shape != d.shape:
            raise ValueError(f"f_{proc}_up and f_{proc}_dw have different shapes: {tuple(u.shape)} vs {tuple(d.shape)}")
        a = shape_alpha.to(DTYPE) if isinstance(shape_alpha, Tensor) else _as_f64(shape_alpha, "shape_alpha")
        if a.dim() == 0 or a.shape[-1] != u.shape[0]:
            raise ValueError(f"shape_alpha must have shape (..., {u.shape[0]}) for the {u.shape[0]} shape nuisances "
                             f"of f_{proc}_up/f_{proc}_dw, got {tuple(a.shape)}")
        from .interp import interp_shape

        return interp_shape(a, nomv, u, d, code)

    f_s = interp(f_s0, f_s_up, f_s_dw, "s")
    f_b = interp(f_b0, f_b_up, f_b_dw, "b")
    s = mu
    if s_norm_alpha is not None:
        s = s + s_norm_alpha.to(DTYPE).sum(-1)
    b = torch.as_tensor(float(b_true), dtype=DTYPE, device=f_s0.device)
    if b_norm_alpha is not None:
        b = b + b_norm_alpha.to(DTYPE).sum(-1)
    nu = s[..., None] * f_s + b[..., None] * f_b
    if n_obs is not None:
        n = _as_f64(n_obs, "n_obs", f_s0.device)
        if n.dim() == 0 or n.shape[-1] != f_s0.shape[0]:
            raise ValueError(f"n_obs must have shape (..., n_bins={f_s0.shape[0]}), got {tuple(n.shape)}")
        if not torch.isfinite(n).all() or (n < 0).any():
            raise ValueError("n_obs contains NaN, inf or negative counts")
    else:
        if s_true is None:
            raise ValueError("s_true is required for Asimov data (or pass n_obs)")
        n = float(s_true) * f_s0 + float(b_true) * f_b0
    nll = (nu - torch.xlogy(n, nu) + torch.lgamma(n + 1.0)).sum(-1)

    def constrain(nll: Tensor, alphas: Optional[Tensor], aux: Optional[Sequence[Optional[Distribution]]], name: str,
                  allow_extra: bool = False) -> Tensor:
        if aux is None:
            return nll
        aux = [aux] if isinstance(aux, Distribution) else list(aux)
        if alphas is None:
            if len(aux):
                raise ValueError(f"{name} constraints are given but the corresponding nuisances are None")
            return nll
        n_a = alphas.shape[-1]
        if not (n_a == len(aux) or (allow_extra and n_a == len(aux) + 1)):
            raise ValueError(f"{len(aux)} {name} constraints for {n_a} nuisances")
        for k, dist in enumerate(aux):
            if dist is not None:
                nll = nll + _neg_log_prob(dist, alphas[..., k].to(DTYPE))
        return nll

    nll = constrain(nll, shape_alpha if isinstance(shape_alpha, Tensor) or shape_alpha is None else _as_f64(shape_alpha, "shape_alpha"),
                    shape_aux, "shape")
    nll = constrain(nll, s_norm_alpha, s_norm_aux, "s_norm")
    nll = constrain(nll, b_norm_alpha, b_norm_aux, "b_norm", allow_extra=True)
    return nll


# =========================================================================== intervals
def _prepare_scan(nll: ArrayLike, mu_scan: ArrayLike) -> Tuple[np.ndarray, np.ndarray]:
    y = np.asarray(nll.detach().cpu() if isinstance(nll, Tensor) else nll, dtype=np.float64).reshape(-1)
    x = np.asarray(mu_scan.detach().cpu() if isinstance(mu_scan, Tensor) else mu_scan, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"nll and mu_scan have different lengths: {len(y)} vs {len(x)}")
    if np.any(np.diff(x) <= 0):
        raise ValueError("mu_scan must be strictly increasing")
    m = np.isfinite(y)
    if m.sum() < 4:
        raise ValueError(f"need at least 4 finite NLL values, got {int(m.sum())}")
    return x[m], y[m]


def get_interval(nll: ArrayLike, mu_scan: ArrayLike, val: float = 0.5) -> Tuple[float, float, float]:
    r"""Interval :math:`\{\mu: -\ln L(\mu) - \min -\ln L \le \mathrm{val}\}` from a scan.

    A cubic spline through the finite scan points locates the minimum and the two
    crossings of :math:`\Delta(-\ln L) = \mathrm{val}` (``val=0.5``: the 68.3% interval in the
    asymptotic regime; 1.92: 95%).  NaN/inf points are dropped.

    Returns:
        ``(lower, upper, mu_hat)``.

    Raises:
        ValueError: the minimum is at an end of the scan, or the interval is not inside
            the scan (no crossing on one side).
    """
    from scipy.interpolate import CubicSpline

    if not (val > 0 and math.isfinite(val)):
        raise ValueError(f"val must be > 0, got {val}")
    x, y = _prepare_scan(nll, mu_scan)
    i = int(np.argmin(y))
    if i == 0 or i == len(x) - 1:
        raise ValueError(f"the NLL minimum is at the end of the scan (mu = {x[i]}): widen mu_scan")
    spl = CubicSpline(x, y)
    cands = [r for r in spl.derivative().roots(extrapolate=False) if x[i - 1] <= r <= x[i + 1]]
    mu_hat = min(cands + [x[i]], key=lambda r: float(spl(r)))
    level = float(spl(mu_hat)) + val
    if y[0] < level:
        raise ValueError(f"the interval at delta NLL = {val} extends below the scan (mu < {x[0]})")
    if y[-1] < level:
        raise ValueError(f"the interval at delta NLL = {val} extends above the scan (mu > {x[-1]})")
    roots = spl.solve(level, extrapolate=False)
    lo = [r for r in roots if r < mu_hat]
    hi = [r for r in roots if r > mu_hat]
    if not lo or not hi:
        raise ValueError(f"no crossing of delta NLL = {val} on both sides of the minimum")
    return float(max(lo)), float(min(hi)), float(mu_hat)


def get_likelihood_width(nll: ArrayLike, mu_scan: ArrayLike, val: float = 0.5) -> float:
    r"""Half width :math:`(\mu_+ - \mu_-)/2` of the interval at :math:`\Delta(-\ln L) =
    \mathrm{val}` (see :func:`get_interval`); for ``val=0.5`` in the quadratic regime this
    is the one-standard-deviation uncertainty of :math:`\mu`.

    Raises:
        ValueError: the interval is not inside the scan.
    """
    lo, hi, _ = get_interval(nll, mu_scan, val)
    return (hi - lo) / 2.0


# =========================================================================== pseudo-experiments
def _generator(seed: Union[None, int, torch.Generator], device: torch.device) -> torch.Generator:
    if isinstance(seed, torch.Generator):
        return seed
    g = torch.Generator(device=device)
    g.manual_seed(int(seed) if seed is not None else int(torch.randint(0, 2**62, ()).item()))
    return g


def generate_toys(expected: ArrayLike, n_toys: int, seed: Union[None, int, torch.Generator] = None) -> Tensor:
    r"""Poisson pseudo-data :math:`n_{t,i} \sim \mathrm{Pois}(\nu_i)`.

    Args:
        expected: expected counts :math:`\nu`, shape ``(n_bins,)``, all :math:`\ge 0`.
        n_toys: number of pseudo-experiments.
        seed: an int or a ``torch.Generator`` (same seed, same toys).

    Returns:
        float64 tensor ``(n_toys, n_bins)``.
    """
    nu = _as_f64(expected, "expected")
    if nu.dim() != 1 or not torch.isfinite(nu).all() or (nu < 0).any():
        raise ValueError("expected must be a 1-D array of finite, non-negative counts")
    if isinstance(n_toys, bool) or not isinstance(n_toys, (int, np.integer)) or n_toys < 1:
        raise ValueError(f"n_toys must be an integer >= 1, got {n_toys!r}")
    g = _generator(seed, nu.device)
    return torch.poisson(nu.expand(int(n_toys), -1).contiguous(), generator=g)


def sample_global_obs(constraints: Sequence[Optional[Distribution]], n_toys: int,
                      seed: Union[None, int, torch.Generator] = None) -> Tensor:
    r"""Global observables for pseudo-experiments: :math:`g_k = x_k - \mathrm{E}[x_k]` with
    :math:`x_k` drawn from constraint :math:`p_k` (0 for ``None``).

    The constraint term :math:`p_k(\theta_k - g_k)` of a toy then plays the role of an
    auxiliary measurement fluctuated around the true value :math:`\theta_k = 0` (exact for
    location families such as ``Normal(0, sigma)``).  Sampling uses the distribution's
    inverse CDF with uniforms from the seeded generator.

    Returns:
        float64 tensor ``(n_toys, len(constraints))``.
    """
    g = _generator(seed, torch.device("cpu"))
    cols = []
    for k, d in enumerate(constraints):
        if d is None:
            cols.append(torch.zeros(n_toys, dtype=DTYPE))
            continue
        u = torch.rand(n_toys, dtype=DTYPE, generator=g).clamp(1e-12, 1 - 1e-12)
        try:
            x = d.icdf(u.to(d.mean.dtype)).to(DTYPE)
        except NotImplementedError:
            raise ValueError(f"constraint {k} ({type(d).__name__}) has no inverse CDF; "
                             "pass global observables explicitly") from None
        cols.append(x - d.mean.to(DTYPE))
    return torch.stack(cols, -1) if cols else torch.zeros(n_toys, 0, dtype=DTYPE)


@dataclass
class CoverageResult:
    """Result of :func:`check_coverage`.

    Attributes:
        coverage: fraction of valid toys whose interval contains ``mu_true``.
        error: binomial standard error :math:`\\sqrt{p(1-p)/n}`.
        expected: nominal coverage :math:`2\\Phi(\\sqrt{2\\,\\mathrm{val}}) - 1`.
        n_toys: toys used (fits converged).
        n_failed: toys dropped because a fit did not converge.
        contains: per-toy bool (valid toys only).
        delta_nll: per-toy :math:`-\\ln L(\\mu_\\mathrm{true}) - \\min -\\ln L` (valid toys).
        mu_hat: per-toy best-fit signal yield (valid toys).
    """

    coverage: float
    error: float
    expected: float
    n_toys: int
    n_failed: int
    contains: np.ndarray
    delta_nll: np.ndarray
    mu_hat: np.ndarray

    @property
    def pull(self) -> float:
        """(coverage - expected) / error."""
        return (self.coverage - self.expected) / self.error if self.error > 0 else math.inf


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
    model = _Model(f_s_nom=f_s_nom, f_b_nom=f_b_nom, f_s_up=f_s_up, f_s_dw=f_s_dw, f_b_up=f_b_up, f_b_dw=f_b_dw,
                   shape_aux=shape_aux, s_norm_aux=s_norm_aux, b_norm_aux=b_norm_aux, nonaux_b_norm=nonaux_b_norm,
                   b_true=b_true, interp_code=interp_code)
    g = _generator(seed, model.device)
    nu = float(mu_true) * model.f_s_nom + float(b_true) * model.f_b_nom
    toys = generate_toys(nu, n_toys, g)
    gobs = None
    if fluctuate_global_obs and model.constraints:
        cons: List[Optional[Distribution]] = [None] * (model.P - 1)
        for i, d in model.constraints:
            cons[i - 1] = d
        gobs = sample_global_obs(cons, n_toys, g).to(model.device)
    common = dict(f_s_nom=f_s_nom, f_b_nom=f_b_nom, f_s_up=f_s_up, f_s_dw=f_s_dw, f_b_up=f_b_up, f_b_dw=f_b_dw,
                  shape_aux=shape_aux, s_norm_aux=s_norm_aux, b_norm_aux=b_norm_aux, nonaux_b_norm=nonaux_b_norm,
                  b_true=b_true, interp_code=interp_code, global_obs=gobs)
    fit = fit_mle(n_obs=toys, mu_true=mu_true, on_fail="ignore", **common)
    prof = calc_profile(n_obs=toys, mu_scan=[float(mu_true)], mu_true=mu_true, tol=tol, on_fail="ignore",
                        return_result=True, **common)
    ok = (fit.converged & prof.converged[..., 0]).cpu().numpy()
    dnll = (prof.nll[..., 0] - fit.nll).cpu().numpy()[ok]
    contains = dnll <= val
    n_ok = int(ok.sum())
    if n_ok == 0:
        raise RuntimeError("no pseudo-experiment converged")
    cov = float(contains.mean())
    expected = math.erf(math.sqrt(val))  # 2 Phi(sqrt(2 val)) - 1
    return CoverageResult(coverage=cov, error=math.sqrt(max(cov * (1 - cov), 1e-300) / n_ok), expected=expected,
                          n_toys=n_ok, n_failed=int(n_toys) - n_ok, contains=contains, delta_nll=dnll,
                          mu_hat=fit.mu.cpu().numpy()[ok])
