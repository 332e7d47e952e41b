r"""Permutation importance of the inputs of a trained summary, in units of the measurement.

For every input feature (or named group of columns, e.g. all the jet columns), the column(s)
are shuffled across events (the same permutation for every column of a group, so the group
keeps its internal correlations; the events keep their labels, weights and weight
variations), the concrete :class:`~inferno.likelihood.Model` of the
summary is rebuilt from the shuffled events with :func:`~inferno.templates.analysis_model`
(the model ``inferno-bench`` measures: argmax bins, every variation, MC statistics, the fixed
channels), and the expected uncertainty of the parameter of interest is measured again on
Asimov data: with every nuisance profiled (:math:`\sigma`) and statistics only
(:math:`\sigma_\text{stat}`, all other parameters fixed). The importance of a group is the
increase of these widths, over ``n_repeats`` shuffles (mean and standard deviation).

A feature the summary ignores has exactly zero importance (its bins do not change); a
feature whose information the summary needs makes the measurement worse when shuffled.

Two ways to shuffle (``within``):

* ``'all'`` (default): across the events of all the processes together (the alternative
  samples of a nuisance among themselves): the feature no longer tells the processes apart;
  this is the importance of what it says about the process;
* ``'process'``: within each process (and each alternative sample) separately: every
  process's distribution of the feature is kept, only its correlations with the other
  features and with the per-event weight variations are broken. The templates of a summary
  of that feature alone do not change at all (its importance is zero): this measures what
  the summary gains from the feature *jointly* with the others.

The widths (:func:`expected_widths`) are those of ``inferno-bench`` (``measure`` in
:mod:`inferno.htautau.run`): ``method='fit'`` runs the same two
:func:`~inferno.likelihood.fit` calls (Hessian uncertainty, nuisances free / fixed);
``method='fisher'`` (the default, no minimisation) reads them off the Hessian of the NLL at
the Asimov point, which is where those fits converge; ``method='profile'`` is the half width
of the profile-likelihood interval (a scan, slower).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

from ..likelihood import Model, fit, profile
from ..loss import Analysis
from ..templates import analysis_model

__all__ = ["BinnedSummary", "as_summary", "expected_widths", "group_by_object", "resolve_groups",
           "permutation_importance", "ImportanceResult", "WIDTH_METHODS", "WITHIN"]

#: how :func:`expected_widths` measures
WIDTH_METHODS = ("fisher", "fit", "profile")

Binning = Union[None, Callable[[Tensor], Tensor], Sequence[float], np.ndarray, Tensor]


class BinnedSummary(nn.Module):
    """A network with a binning of its output, as a summary whose argmax is the bin (what
    :func:`~inferno.templates.analysis_model` reads): one-hot outputs of ``binning``.

    Args:
        net: the network (e.g. a classifier with one output).
        binning: a callable ``net(x) -> bin indices`` (int tensor ``(n,)``), or the interior
            bin edges of the first output column (``len(edges) + 1`` bins; a value equal to an
            edge goes to the upper bin, as ``inferno-bench``'s ``BinnedScore``).
        n_bins: the number of bins (needed with a callable).
    """

    def __init__(self, net: nn.Module, binning: Binning, n_bins: Optional[int] = None):
        super().__init__()
        self.net = net
        if callable(binning) and not isinstance(binning, (Tensor, np.ndarray)):
            if n_bins is None or int(n_bins) < 1:
                raise ValueError(f"n_bins must be a positive integer with a binning callable, got {n_bins!r}")
            self.binning: Optional[Callable[[Tensor], Tensor]] = binning
            self.register_buffer("edges", None)
            self.n_bins = int(n_bins)
        else:
            e = torch.as_tensor(np.asarray(binning, dtype=np.float64))
            if e.ndim != 1 or not bool(torch.isfinite(e).all()) or bool((e.diff() <= 0).any()):
                raise ValueError(f"binning must be a callable or strictly increasing finite interior edges, "
                                 f"got {binning!r}")
            if n_bins is not None and int(n_bins) != len(e) + 1:
                raise ValueError(f"n_bins={n_bins} does not match the {len(e)} edges ({len(e) + 1} bins)")
            self.binning = None
            self.register_buffer("edges", e)
            self.n_bins = len(e) + 1

    def scores(self, x: Tensor) -> Tensor:
        """The network's output that is binned (edges: its first column, ``(n, 1)``; a
        callable: the whole output)."""
        out = self.net(x)
        return out[:, :1] if self.binning is None else out

    def bins(self, x: Tensor) -> Tensor:
        """The bin of every event."""
        if self.binning is None:
            s = self.scores(x)[:, 0].to(self.edges.dtype)
            return torch.bucketize(s, self.edges, right=True)
        b = torch.as_tensor(self.binning(self.net(x))).reshape(-1).long()
        if len(b) != len(x) or (len(b) and (int(b.min()) < 0 or int(b.max()) >= self.n_bins)):
            raise ValueError(f"binning must return one bin index in [0, {self.n_bins}) per event")
        return b

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.one_hot(self.bins(x), self.n_bins).to(x.dtype)


def as_summary(net: nn.Module, binning: Binning = None, n_bins: Optional[int] = None) -> nn.Module:
    """``net`` itself (its argmax is the bin: an INFERNO network, a multiclass classifier,
    ``inferno-bench``'s ``BinnedScore``) or, with ``binning``, a :class:`BinnedSummary`."""
    if not isinstance(net, nn.Module):
        raise ValueError(f"net must be a torch.nn.Module, got {type(net).__name__}")
    return net if binning is None else BinnedSummary(net, binning, n_bins)


# ----------------------------------------------------------------------------- widths
def _free_poi(model: Model, poi: Optional[str]) -> Tuple[int, List[int]]:
    k = model.poi_index[0] if poi is None else model.index(poi)
    free = (~model.fixed).nonzero().squeeze(-1).tolist()
    if k not in free:
        raise ValueError(f"poi: the parameter {model.names[k]!r} is fixed in the model")
    return k, free


def expected_widths(model: Model, method: str = "fisher", poi: Optional[str] = None) -> Dict[str, float]:
    r"""Expected uncertainty of the POI on the model's Asimov data (at its inits):
    ``sigma`` (every other free parameter profiled) and ``sigma_stat`` (all fixed).

    Args:
        model: the concrete model.
        method: ``'fisher'``: :math:`\sqrt{[H^{-1}]_{\mu\mu}}` and :math:`1/\sqrt{H_{\mu\mu}}`
            with :math:`H` the Hessian of the NLL at the Asimov point (the Fisher information);
            ``'fit'``: the Hessian uncertainties of :func:`~inferno.likelihood.fit` with the
            nuisances free and fixed (as ``inferno-bench``); ``'profile'``: the half width of
            the 68% profile-likelihood interval, a scan over :math:`\pm 4` Hessian widths, the
            POI's bounds widened to hold it (``sigma``; ``sigma_stat`` as ``'fisher'``).
        poi: the parameter (default the model's first POI).

    Returns:
        ``{'sigma': ..., 'sigma_stat': ...}``; NaN where the Hessian is not positive definite.
    """
    if method not in WIDTH_METHODS:
        raise ValueError(f"method must be one of {WIDTH_METHODS}, got {method!r}")
    k, free = _free_poi(model, poi)
    main, aux = model.asimov()
    if method == "fit":
        f = fit(model, main, aux, on_fail="ignore")
        others = {n: float(v) for i, (n, v) in enumerate(zip(model.names, model.init.tolist())) if i != k}
        f0 = fit(model, main, aux, fixed=others, on_fail="ignore")
        return dict(sigma=float(f.uncertainties[k]), sigma_stat=float(f0.uncertainties[k]))
    _, _, H = model.nll_grad_hess(model.init, main, aux)
    Hf = H[free][:, free]
    j = free.index(k)
    chol, info = torch.linalg.cholesky_ex(Hf)
    var = math.nan
    if int(info) == 0:
        e = torch.zeros(len(free), 1, dtype=Hf.dtype)
        e[j] = 1.0
        var = float(torch.cholesky_solve(e, chol)[j, 0])
    hmm = float(Hf[j, j])
    out = dict(sigma=math.sqrt(var) if var > 0 else math.nan, sigma_stat=1.0 / math.sqrt(hmm) if hmm > 0 else math.nan)
    if method == "profile" and math.isfinite(out["sigma"]):
        centre, half = float(model.init[k]), 4.0 * out["sigma"]
        lo, hi = (float(b) for b in model.bounds[k])
        wide = model if lo <= centre - half and centre + half <= hi else model.with_parameters(
            **{model.names[k]: {"bounds": (min(lo, centre - 1.5 * half), max(hi, centre + 1.5 * half))}})
        grid = centre + half * np.linspace(-1.0, 1.0, 41)
        try:
            out["sigma"] = profile(wide, main, grid, aux=aux, poi=model.names[k], on_fail="ignore").width()
        except ValueError:  # the interval is not inside the scan
            out["sigma"] = math.nan
    return out


# ----------------------------------------------------------------------------- groups
def group_by_object(names: Sequence[str]) -> Dict[str, List[str]]:
    """Columns grouped by the object they describe: the name up to its first ``_``, trailing
    digits dropped (``jet1_pt``, ``jet2_eta`` -> ``jet``; ``tau_pt`` -> ``tau``; ``met``,
    ``met_phi`` -> ``met``), in order of first appearance."""
    out: Dict[str, List[str]] = {}
    for n in names:
        key = re.sub(r"\d+$", "", str(n).split("_")[0]) or str(n)
        out.setdefault(key, []).append(str(n))
    return out


def resolve_groups(n_features: int, feature_names: Optional[Sequence[str]] = None,
                   groups: Optional[Mapping[str, Sequence[Union[int, str]]]] = None) -> Dict[str, List[int]]:
    """Group name -> column indices: every column alone (named by ``feature_names``, else
    ``x0``, ``x1``, ...) or the ``groups`` given (columns by index or by name).

    Raises:
        ValueError: names of another length than the columns, an unknown column, an empty group.
    """
    names = [f"x{i}" for i in range(n_features)] if feature_names is None else [str(n) for n in feature_names]
    if len(names) != n_features:
        raise ValueError(f"feature_names has {len(names)} names for {n_features} columns")
    if groups is None:
        return {n: [i] for i, n in enumerate(names)}
    out: Dict[str, List[int]] = {}
    for g, cols in groups.items():
        idx = []
        for c in ([cols] if isinstance(cols, (str, int)) else list(cols)):
            if isinstance(c, str):
                if c not in names:
                    raise ValueError(f"groups[{g!r}]: unknown column {c!r}; the columns are {names}")
                idx.append(names.index(c))
            elif isinstance(c, (int, np.integer)) and 0 <= int(c) < n_features:
                idx.append(int(c))
            else:
                raise ValueError(f"groups[{g!r}]: column {c!r} is not a name or an index in [0, {n_features})")
        if not idx:
            raise ValueError(f"groups[{g!r}] is empty")
        out[str(g)] = sorted(set(idx))
    return out


# ----------------------------------------------------------------------------- importance
@dataclass
class ImportanceResult:
    """Result of :func:`permutation_importance`.

    Attributes:
        table: one row per group (pandas): ``group``, ``columns``, ``d_sigma`` /
            ``d_sigma_std`` (mean and standard deviation over the repetitions of the increase
            of :math:`\\sigma`), ``d_sigma_stat`` / ``d_sigma_stat_std`` (the same for the
            statistics-only width), ``rel_sigma`` (``d_sigma / sigma``).
        sigma, sigma_stat: the widths of the summary on the events as they are.
        samples: the widths after every shuffle, ``(groups, repeats, 2)`` (sigma, sigma_stat).
        method, within, n_repeats, seed: the settings.
    """

    table: Any
    sigma: float
    sigma_stat: float
    samples: np.ndarray
    method: str
    within: str
    n_repeats: int
    seed: int
    groups: Dict[str, List[int]] = field(default_factory=dict)

    def to_markdown(self, digits: int = 4) -> str:
        """The table as markdown, most important first."""
        rows = ["| feature | increase of sigma | increase of stat.-only sigma |", "|---|---|---|"]
        for _, r in self.table.sort_values("d_sigma", ascending=False, kind="stable").iterrows():
            rows.append(f"| {r['group']} | {r['d_sigma']:.{digits}f} ± {r['d_sigma_std']:.{digits}f} | "
                        f"{r['d_sigma_stat']:.{digits}f} ± {r['d_sigma_stat_std']:.{digits}f} |")
        return "\n".join(rows)


#: how :func:`permutation_importance` shuffles
WITHIN = ("all", "process")


def _pools(analysis: Analysis, labels: Tensor, within: str) -> List[Tensor]:
    """The sets of events shuffled among themselves: every label's (``'process'``), or the
    processes' events together and the alternative samples' together (``'all'``)."""
    if within == "process":
        return [(labels == lab).nonzero().squeeze(-1) for lab in torch.unique(labels).tolist()]
    procs = torch.tensor([p.label for p in analysis.processes], dtype=labels.dtype)
    is_proc = torch.isin(labels, procs)
    return [m.nonzero().squeeze(-1) for m in (is_proc, ~is_proc) if bool(m.any())]


def _permute_within(x: Tensor, pools: List[Tensor], cols: List[int], gen: torch.Generator) -> Tensor:
    out = x.clone()
    c = torch.tensor(cols, dtype=torch.long)
    for idx in pools:
        perm = idx[torch.randperm(len(idx), generator=gen)]
        out[idx[:, None], c[None, :]] = x[perm[:, None], c[None, :]]
    return out


def permutation_importance(analysis: Analysis, summary: nn.Module, x: Tensor, process: Tensor,
                           w: Optional[Tensor] = None, weights: Optional[Mapping[str, Tensor]] = None, *,
                           binning: Binning = None, n_bins: Optional[int] = None,
                           feature_names: Optional[Sequence[str]] = None,
                           groups: Optional[Mapping[str, Sequence[Union[int, str]]]] = None, n_repeats: int = 5,
                           seed: int = 0, method: str = "fisher", within: str = "all", poi: Optional[str] = None,
                           bs: int = 100_000) -> ImportanceResult:
    """Permutation importance of the inputs of ``summary`` in units of the measurement (see
    the module docstring).

    Args:
        analysis: the analysis the summary is measured with.
        summary: the network; its argmax is the bin, unless ``binning`` is given
            (:func:`as_summary`).
        x, process, w, weights: held-out events (inputs, labels, weights, weight variations),
            as for :func:`~inferno.templates.analysis_model`.
        binning, n_bins: a binning of the network's output (a 1-output classifier), see
            :class:`BinnedSummary`.
        feature_names, groups: the columns' names, and optionally named groups of columns to
            shuffle together (:func:`resolve_groups`, :func:`group_by_object`).
        n_repeats: shuffles per group.
        seed: seed of the shuffles.
        method: how the widths are measured (:func:`expected_widths`).
        within: ``'all'`` or ``'process'``: which events are shuffled among themselves (see
            the module docstring).
        poi: the parameter of interest (default the analysis' first).

    Returns:
        :class:`ImportanceResult`.
    """
    import pandas as pd

    if isinstance(n_repeats, bool) or not isinstance(n_repeats, (int, np.integer)) or n_repeats < 1:
        raise ValueError(f"n_repeats must be an integer >= 1, got {n_repeats!r}")
    if method not in WIDTH_METHODS:
        raise ValueError(f"method must be one of {WIDTH_METHODS}, got {method!r}")
    if within not in WITHIN:
        raise ValueError(f"within must be one of {WITHIN}, got {within!r}")
    if not isinstance(x, Tensor) or x.ndim != 2:
        raise ValueError(f"x must be a tensor of shape (n_events, n_features), got {type(x).__name__} "
                         f"{tuple(getattr(x, 'shape', ()))}")
    net = as_summary(summary, binning, n_bins)
    labels = torch.as_tensor(process).reshape(-1).long()
    if len(labels) != len(x):
        raise ValueError(f"process has {len(labels)} labels for {len(x)} events")
    grp = resolve_groups(x.shape[1], feature_names, groups)
    poi = poi or analysis.pois[0]

    def widths(xx: Tensor) -> Tuple[float, float]:
        m = analysis_model(analysis, net, xx, labels, w, weights=weights, bs=bs)
        r = expected_widths(m, method, poi)
        return r["sigma"], r["sigma_stat"]

    ref = widths(x)
    gen = torch.Generator().manual_seed(int(np.random.SeedSequence([int(seed), 0x1337]).generate_state(1)[0]))
    pools = _pools(analysis, labels, within)
    samples = np.empty((len(grp), int(n_repeats), 2))
    for i, cols in enumerate(grp.values()):
        for r in range(int(n_repeats)):
            samples[i, r] = widths(_permute_within(x, pools, cols, gen))
    d = samples - np.asarray(ref)[None, None, :]
    ddof = 1 if n_repeats > 1 else 0
    table = pd.DataFrame(dict(
        group=list(grp), columns=[list(c) for c in grp.values()],
        d_sigma=d[..., 0].mean(1), d_sigma_std=d[..., 0].std(1, ddof=ddof),
        d_sigma_stat=d[..., 1].mean(1), d_sigma_stat_std=d[..., 1].std(1, ddof=ddof)))
    table["rel_sigma"] = table["d_sigma"] / ref[0]
    return ImportanceResult(table=table, sigma=ref[0], sigma_stat=ref[1], samples=samples, method=method,
                            within=within, n_repeats=int(n_repeats), seed=int(seed), groups=grp)
