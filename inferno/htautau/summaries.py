"""``inferno-bench``: the networks, their training and the binned summaries made from them."""
from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from ..training.callbacks import KeepBest
from ..data import DataPair, DataSet, StratifiedLoader
from ..loss import InfernoLoss
from ..training.wrapper import ModelWrapper
from ..nn import VariableSoftmax
from .. import htautau as hb
from .analysis import to_dataset
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
    if kind == "bce":
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


def train(kind: str, prob, cfg: BenchConfig, log: Callable = print) -> Dict[str, Any]:
    """Train model ``kind`` on the problem's training sample (best validation epoch kept)."""
    seed = _train_seed(cfg.seed, kind)
    torch.manual_seed(seed)
    fl = hb.FeatureLayer.fit(prob.train["primary"])
    net = build_net(kind, fl, cfg)
    if kind == "inferno":
        trn, val = to_dataset(prob.train), to_dataset(prob.valid)
        loss, cbs, lr, epochs = None, [InfernoLoss(prob.analysis)], cfg.lr_inferno, cfg.inferno_epochs
    else:
        trn, val = _classifier_dataset(prob.train, kind), _classifier_dataset(prob.valid, kind)
        loss = nn.BCEWithLogitsLoss() if kind == "bce" else WeightedCE()
        cbs, lr, epochs = [], cfg.lr, cfg.epochs
    data = DataPair(StratifiedLoader(trn, cfg.bs, shuffle=True, seed=seed),
                    StratifiedLoader(val, cfg.bs, shuffle=False, seed=seed))
    keep = KeepBest()
    t0 = time.perf_counter()
    wrapper = ModelWrapper(net)
    history = wrapper.fit(epochs, data, functools.partial(torch.optim.Adam, lr=lr), loss, cbs=[*cbs, keep],
                          progress=False)
    net.eval()
    dt = time.perf_counter() - t0
    log(f"  trained {kind:<10} {epochs} epochs in {dt:.0f} s (best validation epoch {keep.best_epoch}, "
        f"loss {keep.best:.5g})", flush=True)
    return dict(net=net, history=history, best_epoch=keep.best_epoch, best_loss=keep.best, train_s=dt)


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


def make_summaries(trained: Dict[str, Dict[str, Any]], prob, cfg: BenchConfig) -> Dict[str, Any]:
    """The summary modules (argmax = bin) of the trained networks."""
    out: Dict[str, Any] = {}
    sig_label = hb.PROCESSES[hb.SIGNAL].label
    yb = np.array([prob.sr_yields[k] for k in hb.PROCESSES if k != hb.SIGNAL])
    prior = yb / yb.sum()
    v = prob.valid
    vs = v["label"] == sig_label
    xv = torch.from_numpy(v["primary"][vs])
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
        score = "sigmoid" if name == "bce" else "softmax"
        if cfg.binning == "uniform":
            edges = np.linspace(0.0, 1.0, cfg.bins + 1)[1:-1]
        else:
            probe = BinnedScore(net, score, np.zeros(0), prior if score == "softmax" else None)
            with torch.no_grad():
                s = probe.scores(xv).numpy()
            edges = _weighted_quantiles(s, v["weight"][vs], np.linspace(0, 1, cfg.bins + 1)[1:-1])
            edges = np.maximum.accumulate(edges + 1e-12 * np.arange(len(edges)))  # strictly increasing
        out[name] = BinnedScore(net, score, edges, prior if score == "softmax" else None).eval()
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
