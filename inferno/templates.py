r"""From a trained network to templates and to the concrete statistical model of the analysis.

The pytorch_inferno-style template functions (:func:`bin_preds`, :func:`get_shape`,
:func:`get_syst_shapes`, :func:`get_paper_syst_shapes`, also importable from
:mod:`inferno.inference`) make normalised one-process templates from predictions; the rest
of this page builds the whole analysis' model.

:func:`analysis_model` bins every event by the network's most probable output (its argmax:
the hard bins of the learned channel) and fills, for every process of an
:class:`~inferno.loss.Analysis`, its nominal template, one up/down pair per shape nuisance
acting on it, and (with ``mc_stat``) its MC statistical uncertainty; the result is a
:class:`~inferno.likelihood.Model` of numbers, with the analysis' rate modifiers and fixed
channels, ready for :func:`~inferno.likelihood.fit`, :func:`~inferno.likelihood.profile`,
toys and :meth:`~inferno.likelihood.Model.to_pyhf`.

The templates of process :math:`p` are normalised to its expected yield,
:math:`\nu^0_{p,i} = Y_p \sum_{e \in p, \mathrm{bin}\ i} w_e / \sum_{e \in p} w_e`. The shape
nuisances become ``histosys`` modifiers in HistFactory's units (:math:`\alpha = \pm 1` at the
variations, unit Gaussian constraint):

* a transform of the inputs: the events moved to :math:`\theta_0 \pm \delta`, with
  :math:`\delta` half the span of the nuisance's ``variations`` if given, else the standard
  deviation of its constraint (so :math:`\alpha` counts standard deviations); the constraint
  becomes a Gaussian on :math:`\alpha` of width :math:`\sigma_\theta/\delta` (for a
  non-Gaussian constraint, the Gaussian with its curvature at the nominal value); a free
  transform nuisance needs ``variations``;
* up/down inputs: the up/down inputs (their constraint, on :math:`\alpha`, is kept);
* per-event weights: the nominal events with the up/down weights (normalised by the
  nominal sum: the rate effect is kept);
* alternative samples: the up/down samples' events, each normalised to the process's yield.

With ``mc_stat`` each process gets a ``staterror`` with :math:`\sigma_{p,i} = Y_p
\sqrt{\sum_{e \in p, i} w_e^2} / \sum_{e \in p} w_e` (the statistical uncertainty of the
template, which the sample used here should be independent of the training sample for).
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn
from torch.distributions import Normal

from .likelihood import Channel, HistoSys, Model, Sample, StatError
from .loss.analysis import Analysis
from .loss.analysis import _kind
from .loss.checks import _weight_column
from .nuisance import constraint_curvature

ArrayLike = Union[Tensor, np.ndarray, Sequence[float], float]
DTYPE = torch.float64

__all__ = ["analysis_model", "model_from_histograms", "variation_events", "hard_bins", "bin_preds", "get_shape", "get_syst_shapes", "get_paper_syst_shapes"]


def hard_bins(net: nn.Module, x: Tensor, bs: int = 100_000) -> Tensor:
    """The argmax bin of every event, predicted in batches without gradients (the network in
    evaluation mode, restored afterwards)."""
    was = net.training
    net.eval()
    try:
        with torch.no_grad():
            out = [net(x[i:i + bs]).argmax(1) for i in range(0, len(x), bs)]
    finally:
        net.train(was)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def _hist(bins: Tensor, w: Optional[Tensor], n_bins: int) -> Tensor:
    ww = torch.ones(len(bins), dtype=torch.float64) if w is None else w.to(torch.float64).cpu()
    return torch.zeros(n_bins, dtype=torch.float64).index_add_(0, bins.cpu(), ww)


def analysis_model(analysis: Analysis, net: nn.Module, x: Tensor, process: Tensor, w: Optional[Tensor] = None,
                   weights: Optional[Mapping[str, Tensor]] = None, n_bins: Optional[int] = None,
                   bs: int = 100_000) -> Model:
    """The :class:`~inferno.likelihood.Model` of ``analysis`` with the learned channel filled by
    ``net``'s hard bins on the events ``x`` (see the module docstring).

    Args:
        analysis: the analysis the network was trained for.
        net: the trained network.
        x, process, w, weights: events, their labels, weights and weight variations (as for
            :func:`~inferno.loss.inferno_loss`; e.g. a test sample).
        n_bins: number of bins (default: the network's output size).
        bs: prediction batch size.

    Raises:
        ValueError: a process or alternative sample without events, a process whose summed
            weight is not positive, a transform nuisance without a scale (free, no variations).
    """
    labels = process.reshape(-1).cpu()
    if len(labels) != len(x):
        raise ValueError(f"process has {len(labels)} labels for {len(x)} events")
    wt = None if w is None else w.reshape(-1).cpu()
    weights = dict(weights or {})
    if n_bins is None:
        with torch.no_grad():
            n_bins = int(net(x[:1]).shape[1])
    bins = hard_bins(net, x, bs).cpu()
    counts: Dict[Tuple[Any, str], Tuple[np.ndarray, np.ndarray]] = {}
    for key, r, xv, wv in variation_events(analysis, x, labels, wt, weights):
        b = bins[r] if xv is None else hard_bins(net, xv, bs).cpu()
        w2 = None if wv is None else wv.to(torch.float64) ** 2
        counts[key] = (_hist(b, wv, n_bins).numpy(), _hist(b, w2, n_bins).numpy())
    return model_from_histograms(analysis, counts)


def variation_events(analysis: Analysis, x: Tensor, process: Tensor, w: Optional[Tensor] = None,
                     weights: Optional[Mapping[str, Tensor]] = None
                     ) -> Iterator[Tuple[Tuple[Any, str], Tensor, Optional[Tensor], Optional[Tensor]]]:
    """The events that fill every template of the learned channel, as
    :func:`model_from_histograms` names them: ``(key, rows, inputs, weights)`` with ``key``
    ``(label, variation)``, ``rows`` the events' indices, ``inputs`` their inputs moved to the
    variation (None: the nominal inputs ``x[rows]``; a transform nuisance at its nominal value
    :math:`\pm\delta`, the up/down inputs) and ``weights`` theirs (a weight nuisance's up/down
    weights). The one place that says which events and which inputs fill which template
    (:func:`analysis_model`, the optimised binning of ``inferno-bench``).

    Raises:
        ValueError: a process or alternative sample without events, missing weight columns.
    """
    labels = process.reshape(-1).cpu()
    wt = None if w is None else w.reshape(-1).cpu()
    weights = dict(weights or {})

    def rows(label: int, what: str) -> Tensor:
        r = (labels == label).nonzero().squeeze(-1)
        if r.numel() == 0:
            raise ValueError(f"no events of {what} (label {label})")
        return r

    done = set()
    for p in analysis.processes:
        r = rows(p.label, f"process {p.name!r}")
        wp = None if wt is None else wt[r]
        yield (p.label, "nominal"), r, None, wp
        for n in analysis.nuisances:
            if p.name not in analysis.targets[n.name]:
                continue
            kind = _kind(n)
            if kind == "transform":
                delta = _transform_scale(n)
                for v, s in ((n.nominal + delta, "up"), (n.nominal - delta, "down")):
                    yield (p.label, f"{n.name}_{s}"), r, n.apply(x[r.to(x.device)], v), wp
            elif kind == "inputs":
                for xx, s in zip(n.up_down(x[r.to(x.device)]), ("up", "down")):
                    yield (p.label, f"{n.name}_{s}"), r, xx, wp
            elif kind == "weights":
                for k in (n.up, n.down):
                    yield (p.label, k), r, None, _weight_column(weights, k, len(x), n.name).cpu()[r]
            else:  # alternative samples
                for lab in n.labels:
                    if lab not in done:
                        done.add(lab)
                        ra = rows(lab, f"the alternative sample of nuisance {n.name!r}")
                        yield (lab, "nominal"), ra, None, None if wt is None else wt[ra]


def model_from_histograms(analysis: Analysis, counts: Mapping[Tuple[Any, str], Tuple[Any, Any]]) -> Model:
    r"""The :class:`~inferno.likelihood.Model` of ``analysis`` from its learned channel's filled
    templates: the sums of weights and of squared weights per bin of every process and
    variation, as :func:`~inferno.data.readers.fill_histograms` (or
    :func:`inferno.distributed.dask.fill_histograms_dask`) returns them; :func:`analysis_model`
    fills them from events in memory and calls this.

    The keys are ``(process, variation)``, the process given by its label (or, for the
    analysis' processes, its name):

    * ``"nominal"``: every process, and the labels of the alternative samples;
    * ``"<nuisance>_up"`` / ``"<nuisance>_down"``: the events of a transform nuisance moved
      to its nominal value :math:`\pm\delta` (see the module docstring), or its up/down
      inputs (:func:`inferno.distributed.dask.analysis_transforms` gives both as transforms
      of the nominal inputs);
    * the names of a weight nuisance's ``up`` / ``down`` weights (``fill_histograms``
      names a weight variation by its extra column).

    The templates are normalised to the processes' yields by the summed nominal weight
    (the sum over the bins), the MC statistics come from the nominal sums of squared
    weights; the rest is as in :func:`analysis_model`.

    Raises:
        ValueError: a missing process or variation, histograms of different numbers of
            bins, a process whose summed weight is not positive, a negative nominal bin (from
            negative weights; with ``Analysis(negative='clip')`` such a bin is set to 0 instead,
            as the loss floors it), a transform nuisance without a scale.
    """
    def get(keys: Sequence[Any], var: str, what: str) -> Tuple[np.ndarray, np.ndarray]:
        for k in keys:
            if (k, var) in counts:
                sw, sw2 = counts[(k, var)]
                return np.asarray(sw, dtype=np.float64), np.asarray(sw2, dtype=np.float64)
        if var == "nominal":
            raise ValueError(f"no events of {what} (label {keys[-1]})")
        raise ValueError(f"no histogram of {what} (label {keys[-1]}) for the variation {var!r}")

    n_bins = None
    for key, (sw, sw2) in counts.items():
        nb = len(sw)
        if n_bins is None:
            n_bins = nb
        if nb != n_bins or len(sw2) != nb:
            raise ValueError(f"the histograms of {key!r} have {nb} and {len(sw2)} bins, expected {n_bins}")
    samples: List[Sample] = []
    settings: Dict[str, Dict[str, Any]] = {k: dict(v) for k, v in analysis.parameters.items()}
    for p in analysis.processes:
        keys, what = (p.name, p.label), f"process {p.name!r}"
        sumw, sumw2 = get(keys, "nominal", what)
        sw = float(sumw.sum())
        if not sw > 0:
            raise ValueError(f"the summed weight of process {p.name!r} is {sw:.6g}: it must be > 0")
        scale = p.expected / sw
        nominal = scale * sumw
        if bool((nominal < 0).any()) and analysis.negative == "clip":
            nominal = np.maximum(nominal, 0.0)  # as the loss floors it (Analysis(negative='clip'))
        if bool((nominal < 0).any()):
            i = int(np.nonzero(nominal < 0)[0][0])
            raise ValueError(f"process {p.name!r}: bin {i} of the learned channel has a negative template "
                             f"({float(nominal[i]):.6g}) from negative weights; merge bins or use more events")
        mods = list(p.modifiers)
        for n in analysis.nuisances:
            if p.name not in analysis.targets[n.name]:
                continue
            kind = _kind(n)
            if kind in ("transform", "inputs"):
                hi_lo = [scale * get(keys, f"{n.name}_{s}", what)[0] for s in ("up", "down")]
                if kind == "transform":
                    settings.setdefault(n.name, {}).update(_alpha_constraint(n, _transform_scale(n)))
                else:
                    settings.setdefault(n.name, {}).setdefault("constraint", n.constraint)
            elif kind == "weights":
                hi_lo = [scale * get(keys, k, what)[0] for k in (n.up, n.down)]
                settings.setdefault(n.name, {}).setdefault("constraint", n.constraint)
            else:  # alternative samples
                hi_lo = []
                for lab in n.labels:
                    swa_bins = get((lab,), "nominal", f"the alternative sample of nuisance {n.name!r}")[0]
                    hi_lo.append(p.expected / float(swa_bins.sum()) * swa_bins)
                settings.setdefault(n.name, {}).setdefault("constraint", n.constraint)
            mods.append(HistoSys(n.name, hi=hi_lo[0], lo=hi_lo[1]))
        if analysis.mc_stat:
            mods.append(StatError(f"mc_stat_{analysis.channel}", sigma=scale * np.sqrt(sumw2)))
        samples.append(Sample(p.name, nominal, mods))
    for conf in settings.values():
        if "constraint" in conf and conf["constraint"] is None:
            conf.setdefault("bounds", (-5.0, 5.0))
    channels = [Channel(analysis.channel, samples)]
    base_settings: Dict[str, Dict[str, Any]] = {}
    hs_code = "4p"
    ns_code = 4
    if analysis.fixed is not None:
        fixed = analysis.fixed
        keep = [ch for ch in fixed.channels if ch.name != analysis.replace]
        if analysis.replace is not None:
            pos = [ch.name for ch in fixed.channels].index(analysis.replace)
            channels = keep[:pos] + channels + keep[pos:]
        else:
            channels = keep + channels
        base_settings = {k: dict(v) for k, v in fixed._user_settings.items()}
        hs_code, ns_code = fixed.histosys_code, fixed.normsys_code
    for k, v in settings.items():
        base_settings.setdefault(k, {}).update(v)
    names = {m.name for s in samples for m in s.modifiers} | (
        set(analysis.fixed.names) | set(analysis.fixed.param_sets) if analysis.fixed is not None else set())
    base_settings = {k: v for k, v in base_settings.items() if k in names}
    return Model(channels, poi=analysis.pois, parameters=base_settings, histosys_code=hs_code, normsys_code=ns_code)


def _alpha_constraint(n: Any, delta: float) -> Dict[str, Any]:
    """The constraint of a transform nuisance on alpha = (theta - nominal) / delta: Gaussian
    with width sigma_theta / delta (for a non-Gaussian constraint, the Gaussian of the same
    curvature at the nominal value); free if the nuisance is."""
    if n.constraint is None:
        return {"constraint": None}
    if type(n.constraint) is Normal:  # exactly 1 when delta is the constraint's width
        return {"constraint": "normal", "aux": 0.0, "sigma": float(n.constraint.scale) / delta}
    curv = constraint_curvature(n.constraint, n.nominal, delta)
    if not curv > 0:
        raise ValueError(f"nuisance {n.name!r}: its constraint has no positive curvature at the nominal value")
    return {"constraint": "normal", "aux": 0.0, "sigma": 1.0 / math.sqrt(curv)}


def _transform_scale(n: Any) -> float:
    if n.variations is not None:
        return 0.5 * (n.variations[1] - n.variations[0])
    c = n.constraint
    if c is None:
        raise ValueError(f"nuisance {n.name!r} is free: give it variations=(down, up) to build its templates")
    try:
        sd = float(c.stddev)
    except (NotImplementedError, AttributeError):
        raise ValueError(f"nuisance {n.name!r}: its constraint {c} has no standard deviation; give it "
                         "variations=(down, up)") from None
    if not (math.isfinite(sd) and sd > 0):
        raise ValueError(f"nuisance {n.name!r}: the standard deviation of its constraint is {sd}")
    return sd


# ------------------------------------------------------------------ templates from predictions
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
    from .training.callbacks import AbsCallback

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
