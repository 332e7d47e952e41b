"""``inferno-bench``: the networks, their training and the binned summaries made from them
(the systematic-aware baselines ``bce_opt`` and ``bce_aug``: :mod:`inferno.htautau.baselines`)."""
from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from ..training.callbacks import KeepBest
from ..training.schedules import schedule
from ..data import DataPair, DataSet, StratifiedLoader
from ..loss import InfernoLoss, stage_tangents
from ..training.wrapper import ModelWrapper
from ..nn import VariableSoftmax
from .. import htautau as hb
from .analysis import to_dataset
from .baselines import (EdgeOptimiser, PivotAdversary, SystAugmentation, augmented_dataset, candidate_grid,
                        optimise_edges)
from .report import MODELS, SUMMARIES

if TYPE_CHECKING:  # pragma: no cover
    from .run import BenchConfig


# ----------------------------------------------------------------------------- data loading
def _classifier_dataset(ev: Dict[str, np.ndarray], kind: str):
    """The DataSet of a classifier: the processes only (no alternative samples), targets
    signal/not (``bce``) or the process (``multiclass``), weights balanced: equal totals for
    signal and background (``bce``, the background a physical mixture) or for every process."""
    proc_labels = [p.label for p in hb.PROCESSES.values()]
    m = np.isin(ev["label"], proc_labels)
    lab, w = ev["label"][m], ev["weight"][m].astype(np.float64)
    sig = lab == hb.PROCESSES[hb.SIGNAL].label
    wb = np.empty_like(w)
    if kind == "bce":
        y = sig.astype(np.float32)
        for mask in (sig, ~sig):
            wb[mask] = w[mask] / w[mask].sum()
    else:
        y = lab.astype(np.float32)
        for v in proc_labels:
            mask = lab == v
            wb[mask] = w[mask] / w[mask].sum()
    wb *= len(w) / wb.sum()
    return DataSet(ev["primary"][m], y, wb.astype(np.float32))


# ----------------------------------------------------------------------------- networks
def _mlp(n_in: int, n_out: int, hidden: int):
    return [nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, n_out)]


def build_net(kind: str, feature_layer, cfg: BenchConfig):
    """The network of model ``kind`` on primary objects: ``feature_layer``, then the MLP
    (BCE: one logit; multiclass: one logit per process; INFERNO: ``bins`` outputs and a
    VariableSoftmax)."""
    nf = len(hb.FEATURES)
    if kind in ("bce", "bce_aug", "pivot"):
        return nn.Sequential(feature_layer, *_mlp(nf, 1, cfg.hidden))
    if kind == "multiclass":
        return nn.Sequential(feature_layer, *_mlp(nf, len(hb.PROCESSES), cfg.hidden))
    return nn.Sequential(feature_layer, *_mlp(nf, cfg.bins, cfg.hidden), VariableSoftmax(cfg.temperature))


class WeightedCE(nn.Module):
    """Cross-entropy over the processes for targets stored as floats ``(n, 1)``; it has a
    ``reduction`` attribute, so the training loop weights it per event."""

    def __init__(self, reduction: str = "mean"):
        super().__init__()
        self.reduction = reduction

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(logits, y.reshape(-1).long(), reduction=self.reduction)


def train(kind: str, prob, cfg: BenchConfig, log: Callable = print, lam: float = 0.0) -> Dict[str, Any]:
    """Train model ``kind`` (``bce``, ``multiclass``, ``inferno``, ``bce_aug``, ``pivot`` at the
    adversary's weight ``lam``: one training, see :func:`train_pivot`) on the problem's training
    sample (best validation epoch kept)."""
    if kind not in ("bce", "multiclass", "inferno", "bce_aug", "pivot"):
        raise ValueError(f"no network to train for {kind!r} (bce_opt: train_all or optimise_bins)")
    seed = _train_seed(cfg.seed, kind)
    torch.manual_seed(seed)
    fl = hb.FeatureLayer.fit(prob.train["primary"])
    net = build_net(kind, fl, cfg)
    if kind == "inferno":
        trn, val = to_dataset(prob.train), to_dataset(prob.valid)
        loss, cbs, lr, epochs = None, [InfernoLoss(prob.analysis)], cfg.lr_inferno, cfg.inferno_epochs
    elif kind == "bce_aug":
        trn, val = augmented_dataset(prob.train, prob.systematics), augmented_dataset(prob.valid, prob.systematics)
        loss, cbs, lr, epochs = nn.BCEWithLogitsLoss(), [SystAugmentation(prob.analysis, seed=seed)], cfg.lr, cfg.epochs
    elif kind == "pivot":
        trn, val = augmented_dataset(prob.train, prob.systematics), augmented_dataset(prob.valid, prob.systematics)
        aug = SystAugmentation(prob.analysis, seed=seed)
        cbs = [aug, PivotAdversary(aug, ("tes", "jes"), lam=lam, hidden=32, lr=cfg.lr, seed=seed + 1)]
        loss, lr, epochs = nn.BCEWithLogitsLoss(), cfg.lr, cfg.epochs
    else:
        trn, val = _classifier_dataset(prob.train, kind), _classifier_dataset(prob.valid, kind)
        loss = nn.BCEWithLogitsLoss() if kind == "bce" else WeightedCE()
        cbs, lr, epochs = [], cfg.lr, cfg.epochs
    t0 = time.perf_counter()
    if kind == "inferno":  # the feature layer is fixed: its tangents are constants of the events
        trn, val = (d.with_extras(stage_tangents(prob.analysis, net, d.x, d.y)) for d in (trn, val))
    data = DataPair(StratifiedLoader(trn, cfg.bs, shuffle=True, seed=seed),
                    StratifiedLoader(val, cfg.bs, shuffle=False, seed=seed))
    keep = KeepBest()
    wrapper = ModelWrapper(net)
    cbs = [*cbs, *schedule(cfg.schedule, lr, epochs), keep]
    history = wrapper.fit(epochs, data, functools.partial(torch.optim.Adam, lr=lr), loss, cbs=cbs, progress=False)
    net.eval()
    dt = time.perf_counter() - t0
    what = f"{kind} (lambda {lam:g})" if kind == "pivot" else kind
    log(f"  trained {what:<10} {epochs} epochs in {dt:.0f} s (best validation epoch {keep.best_epoch}, "
        f"loss {keep.best:.5g})", flush=True)
    out = dict(net=net, history=history, best_epoch=keep.best_epoch, best_loss=keep.best, train_s=dt)
    if kind == "pivot":
        out["adversary"] = cbs[1].history
    return out


def train_pivot(prob, cfg: BenchConfig, log: Callable = print) -> Dict[str, Any]:
    """``pivot``: one training per lambda of ``cfg.pivot_lambdas`` (:func:`train`), the one kept
    with the smallest expected sigma(mu) on the *validation* events (the model of the analysis
    with the edges of :func:`score_edges`: :class:`~inferno.htautau.baselines.EdgeOptimiser`)."""
    runs, sig = [], []
    for lam in cfg.pivot_lambdas:
        r = train("pivot", prob, cfg, log, lam=float(lam))
        edges = score_edges(r["net"], "sigmoid", prob, cfg)
        probe = BinnedScore(r["net"], "sigmoid", np.zeros(0)).eval()
        opt = EdgeOptimiser(prob.analysis, probe.scores, prob.valid, edges, n_template=prob.n_test, min_events=0)
        sig.append(opt.sigma(list(range(len(edges)))))
        runs.append(r)
    k = int(np.argmin(sig))
    best = dict(runs[k])
    tried = ", ".join(f"{s:.5f} (lambda {lam:g})" for s, lam in zip(sig, cfg.pivot_lambdas))
    log(f"  pivot: validation sigma(mu) {tried}: lambda {cfg.pivot_lambdas[k]:g} kept", flush=True)
    best["train_s"] = sum(r["train_s"] for r in runs)
    best["meta"] = dict(lambdas=list(cfg.pivot_lambdas), sigma_valid=sig, lam=float(cfg.pivot_lambdas[k]),
                        adversary=runs[k]["adversary"])
    return best


# ----------------------------------------------------------------------------- summaries
class BinnedScore(nn.Module):
    """One-hot bins of a classifier's signal probability, so that the argmax of the output is
    the bin (what :func:`~inferno.templates.analysis_model` reads).

    Args:
        net: the classifier.
        score: ``'sigmoid'`` (one logit: BCE) or ``'softmax'`` (one logit per process, signal
            first: :func:`signal_probability` with the background fractions ``prior``).
        edges: the interior bin edges of the score (``len(edges) + 1`` bins).
        prior: the background fractions (``'softmax'`` only).
    """

    def __init__(self, net: nn.Module, score: str, edges: Any, prior: Any = None):
        super().__init__()
        if score not in ("sigmoid", "softmax"):
            raise ValueError(f"score must be 'sigmoid' or 'softmax', got {score!r}")
        if score == "softmax" and prior is None:
            raise ValueError("a softmax score needs the background fractions (prior)")
        self.net, self.score = net, score
        self.register_buffer("edges", torch.as_tensor(np.asarray(edges, dtype=np.float64)))
        self.register_buffer("prior", None if prior is None else torch.as_tensor(np.asarray(prior, dtype=np.float64)))

    @property
    def n_bins(self) -> int:
        return len(self.edges) + 1

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """The signal probability of every event (float64)."""
        out = self.net(x).double()
        if self.score == "sigmoid":
            return torch.sigmoid(out[:, 0])
        return signal_probability(torch.softmax(out, dim=1), self.prior)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idx = torch.bucketize(self.scores(x), self.edges, right=True)
        return nn.functional.one_hot(idx, self.n_bins).to(x.dtype)


def signal_probability(p, background_fractions):
    r"""The signal probability against the physical background mixture from the outputs
    ``p`` ``(n, n_processes)`` of a multiclass classifier trained with equal process totals
    (signal first): :math:`p_s / (p_s + \sum_b \pi_b p_b)` with :math:`\pi_b` the background
    fractions (summing to 1): what a BCE classifier with equal signal and background totals
    estimates."""
    return p[:, 0] / (p[:, 0] + (p[:, 1:] * background_fractions[None, :]).sum(1))


def _weighted_quantiles(x: np.ndarray, w: np.ndarray, qs: np.ndarray) -> np.ndarray:
    o = np.argsort(x, kind="stable")
    cw = np.cumsum(np.clip(w[o], 0, None))
    cw /= cw[-1]
    return np.interp(qs, cw, x[o])


def _background_prior(prob) -> np.ndarray:
    yb = np.array([prob.sr_yields[k] for k in hb.PROCESSES if k != hb.SIGNAL])
    return yb / yb.sum()


def score_edges(net: nn.Module, score: str, prob, cfg: BenchConfig, prior: Any = None) -> np.ndarray:
    """The interior bin edges of a classifier's signal probability: ``--bins`` quantiles of the
    validation signal's (weighted) score, or equal width (``--binning uniform``)."""
    if cfg.binning == "uniform":
        return np.linspace(0.0, 1.0, cfg.bins + 1)[1:-1]
    v = prob.valid
    vs = v["label"] == hb.PROCESSES[hb.SIGNAL].label
    probe = BinnedScore(net, score, np.zeros(0), prior)
    with torch.no_grad():
        s = probe.scores(torch.from_numpy(v["primary"][vs])).numpy()
    edges = _weighted_quantiles(s, v["weight"][vs], np.linspace(0, 1, cfg.bins + 1)[1:-1])
    return np.maximum.accumulate(edges + 1e-12 * np.arange(len(edges)))  # strictly increasing


def optimise_bins(base: Dict[str, Any], prob, cfg: BenchConfig, log: Callable = print) -> Dict[str, Any]:
    """``bce_opt``: the edges of the trained BCE network ``base``'s signal probability chosen to
    minimise the expected sigma(mu) of the analysis on the *validation* events
    (:func:`~inferno.htautau.baselines.optimise_edges`, from the edges of the ``bce`` summary,
    over ``cfg.edge_grid`` candidates); a training-like record (``net``, ``edges``, ``history``
    with the validation sigma(mu) at the start and after each sweep, ...)."""
    net = base["net"]
    start = score_edges(net, "sigmoid", prob, cfg)
    probe = BinnedScore(net, "sigmoid", np.zeros(0)).eval()
    v = prob.valid
    pm = np.isin(v["label"], [p.label for p in hb.PROCESSES.values()])
    with torch.no_grad():
        s = probe.scores(torch.from_numpy(v["primary"][pm])).numpy()
    grid = candidate_grid(s, v["label"][pm] == hb.PROCESSES[hb.SIGNAL].label, v["weight"][pm], cfg.edge_grid,
                          include=start)
    t0 = time.perf_counter()
    opt = EdgeOptimiser(prob.analysis, probe.scores, v, grid, n_template=prob.n_test)
    r = optimise_edges(opt, np.searchsorted(grid, start), log=log)
    dt = time.perf_counter() - t0
    log(f"  optimised bce_opt's {cfg.bins} bins in {dt:.0f} s ({len(r['trace']) - 1} sweeps over {len(grid)} "
        f"candidate edges, {r['n_evals']} models): validation sigma(mu) {r['sigma_start']:.5f} (bce's edges) -> "
        f"{r['sigma']:.5f}", flush=True)
    return dict(net=net, edges=r["edges"], start_edges=start, history=dict(sigma_valid=r["trace"]),
                best_epoch=len(r["trace"]) - 1, best_loss=r["sigma"], train_s=dt,
                meta=dict(edges=r["edges"].tolist(), start_edges=start.tolist(), sigma_valid_start=r["sigma_start"],
                          sigma_valid=r["sigma"], n_evals=r["n_evals"], n_candidates=len(grid),
                          base_train_s=base["train_s"], base_best_epoch=base["best_epoch"]))


def train_all(models: Sequence[str], prob, cfg: BenchConfig, log: Callable = print) -> Dict[str, Dict[str, Any]]:
    """Every model of ``models``: the networks trained (:func:`train`), ``bce_opt`` from the
    ``bce`` network (trained once, also when ``bce`` itself is not among ``models``)."""
    cache: Dict[str, Dict[str, Any]] = {}

    def get(kind: str) -> Dict[str, Any]:
        if kind not in cache:
            cache[kind] = train(kind, prob, cfg, log)
        return cache[kind]

    return {m: optimise_bins(get("bce"), prob, cfg, log) if m == "bce_opt" else
            train_pivot(prob, cfg, log) if m == "pivot" else get(m) for m in models}


def make_summaries(trained: Dict[str, Dict[str, Any]], prob, cfg: BenchConfig) -> Dict[str, Any]:
    """The summary modules (argmax = bin) of the trained networks."""
    out: Dict[str, Any] = {}
    prior = _background_prior(prob)
    for name, model in SUMMARIES.items():
        if model not in trained:
            continue
        net = trained[model]["net"]
        if name == "inferno":
            out[name] = net
            continue
        if name == "multiclass_argmax":
            out[name] = torch.nn.Sequential(net, torch.nn.Softmax(dim=1))
            continue
        if name == "bce_opt":
            out[name] = BinnedScore(net, "sigmoid", trained[model]["edges"]).eval()
            continue
        score = "softmax" if name == "multiclass" else "sigmoid"  # bce, bce_aug, pivot
        pr = prior if score == "softmax" else None
        out[name] = BinnedScore(net, score, score_edges(net, score, prob, cfg, pr), pr).eval()
    return out


class MergedBins(nn.Module):
    """A summary with some of its bins merged: ``mapping[argmax(net(x))]`` as one-hot outputs
    over ``n_bins`` bins (what :func:`~inferno.templates.analysis_model` reads)."""

    def __init__(self, net: nn.Module, mapping: Sequence[int]):
        super().__init__()
        self.net = net
        self.register_buffer("mapping", torch.as_tensor(np.asarray(mapping, dtype=np.int64)))
        self.n_bins = int(self.mapping.max()) + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.one_hot(self.mapping[self.net(x).argmax(1)], self.n_bins).to(x.dtype)


def merge_bins(summary: nn.Module, events: Dict[str, np.ndarray], ordered: bool,
               min_events: int = 20) -> Tuple[nn.Module, List[List[int]]]:
    """Merge the bins of ``summary`` that would make the model ill-defined or its templates
    mere MC noise on ``events`` (the template sample): bins with fewer than ``min_events``
    events, and bins where a process's summed weight is negative (negative weights in few
    events, e.g. the diboson's). A bin with a negative process joins the neighbour (``ordered``:
    a binned score, adjacent bins only; else any bin) holding the most weight of that process;
    a bin with too few events joins the neighbour of the most similar composition (expected
    process fractions); until no such bin is left.

    Returns:
        the summary (itself when nothing was merged, else a :class:`MergedBins`) and the groups
        of original bins.

    Raises:
        ValueError: fewer than two bins would be left.
    """
    from ..templates import hard_bins

    with torch.no_grad():
        raw = hard_bins(summary, torch.from_numpy(events["primary"])).numpy()
        n_raw = int(summary(torch.from_numpy(events["primary"][:1])).shape[1])
    procs = list(hb.PROCESSES.values())
    sums = np.zeros((len(procs), n_raw))
    for i, p in enumerate(procs):
        m = events["label"] == p.label
        sums[i] = np.bincount(raw[m], weights=events["weight"][m], minlength=n_raw) / events["weight"][m].sum()
    counts = np.bincount(raw[np.isin(events["label"], [p.label for p in procs])], minlength=n_raw)
    groups: List[List[int]] = [[b] for b in range(n_raw)]
    while True:
        gs = np.array([sums[:, g].sum(1) for g in groups]).T  # (process, group): fraction of each process
        gn = np.array([counts[g].sum() for g in groups])
        neg = [j for j in range(len(groups)) if (gs[:, j] < 0).any() and gn[j] > 0]
        few = [j for j in range(len(groups)) if gn[j] < max(min_events, 1)]
        if not neg and not few:
            break
        if len(groups) <= 2:
            raise ValueError(f"the summary has fewer than two usable bins on the template sample (groups {groups}, "
                             f"events {gn.tolist()})")
        j = neg[0] if neg else few[0]
        cands = [k for k in ((j - 1, j + 1) if ordered else range(len(groups))) if 0 <= k < len(groups) and k != j]
        if neg:
            p = int(np.flatnonzero(gs[:, j] < 0)[0])
            k = max(cands, key=lambda c: gs[p, c])
        else:
            comp = gs / np.maximum(np.abs(gs).sum(0, keepdims=True), 1e-300)
            k = min(cands, key=lambda c: float(np.abs(comp[:, c] - comp[:, j]).sum()))
        groups[min(j, k)] = sorted(groups[j] + groups[k])
        del groups[max(j, k)]
    if len(groups) == n_raw:
        return summary, groups
    mapping = np.empty(n_raw, dtype=np.int64)
    for g, members in enumerate(groups):
        mapping[members] = g
    return MergedBins(summary, mapping).eval(), groups


def _train_seed(seed: int, model: str) -> int:
    """The seed of the network initialisation and the batch shuffling of ``model``."""
    return 10 * int(seed) + MODELS.index(model)
