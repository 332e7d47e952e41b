r"""``inferno-bench``: systematic-aware baselines to compare INFERNO with, trained on the same
events and measured by the same model.

* ``bce_opt`` (:func:`optimise_edges`): the trained BCE network's signal probability, its
  ``--bins`` bin edges chosen to minimise the *full* expected :math:`\sigma(\mu)` (every
  nuisance profiled, Asimov data, the Hessian of the concrete model of the analysis) computed
  on the **validation** events (never on the template / test sample). The validation events,
  at the nominal values and at every variation the model needs (the exact energy-scale
  transforms at :math:`\pm 1\sigma`, the tau-ID weights, the alternative ttbar samples), are
  scored once and histogrammed in the cells of a fine grid of candidate edges
  (:class:`EdgeOptimiser`); the histograms of any choice of edges are then sums of cells,
  from which :func:`~inferno.templates.model_from_histograms` builds the same model
  :func:`~inferno.templates.analysis_model` would (the MC statistical uncertainty scaled to
  the template sample's size, the one the measurement will see). Coordinate descent from the
  quantile edges: each edge in turn moves to the grid candidate between its neighbours that
  gives the smallest :math:`\sigma(\mu)`, sweeps until no edge moves; a bin must keep at
  least ``min_events`` validation events (:func:`~inferno.htautau.summaries.merge_bins`
  merges bins of fewer than 20 template events); a process's negative sum of weights in a bin
  (the diboson's negative weights) counts as 0, as in INFERNO's loss. Every accepted move
  lowers the validation :math:`\sigma(\mu)`, so the result is never worse than the start on
  the validation sample.
* ``bce_aug`` (:class:`SystAugmentation`, :func:`augmented_dataset`): a BCE classifier trained
  on events whose nuisance values are redrawn, per event, every time the event is seen (every
  epoch) from the constraints of the analysis' nuisances: ``tes``, ``jes``:
  :math:`\alpha \sim \mathcal{N}(0, 1)` applied by the analysis' own exact transforms
  (:class:`~inferno.htautau.EnergyScale` on the primary objects); ``tau_id``: the event weight
  interpolated linearly between nominal and up (:math:`\alpha > 0`) or down
  (:math:`\alpha < 0`), :math:`\alpha \sim \mathcal{N}(0, 1)`; ``ttbar_model``:
  :math:`\alpha \sim \mathcal{N}(0, 1)` clipped to :math:`[-1, 1]`, a nominal ttbar event
  weighted by :math:`1 - |\alpha|`, a ``ttbar_up`` event by :math:`\max(\alpha, 0)`, a
  ``ttbar_down`` event by :math:`\max(-\alpha, 0)` (each alternative sample normalised to the
  nominal ttbar weight): the mixture :math:`(1 - |\alpha|) T_0 + |\alpha| T_\pm` is the
  model's own interpolation of the template for :math:`|\alpha| \le 1`, which mixing weights
  cannot extrapolate beyond. The classifier then estimates the signal probability under the
  nuisance-*marginalised* distribution (the weight-like systematics, linear in
  :math:`\alpha`, average to a fixed re-weighting: nominal tau-ID; ttbar 37% nominal, 32% of
  each alternative sample). Same network, loss weighting (signal and background to equal
  totals, the background its physical mixture), epochs, batches and best-validation-epoch
  selection as ``bce``; the validation batches are augmented too, with the same draws every
  epoch (a generator reseeded at each validation phase), so that the kept epoch is the best on
  the marginalised distribution and validation losses are comparable across epochs. Binned
  like ``bce`` (quantiles of the validation signal's score).

* ``pivot`` (:class:`PivotAdversary`; not run by default): the classifier of ``bce_aug`` (the
  same augmented events, loss weighting, epochs) with an adversary (Louppe, Kagan, Cranmer
  2017): a small MLP regressing the drawn ``tes`` and ``jes`` values (standard deviations) from
  the classifier's signal probability, mean squared error weighted by the (non-negative part
  of the) event weights. Every training batch: one Adam step of the adversary on its loss
  :math:`L_r` (classifier output detached), then the classifier's step on
  :math:`L_\text{BCE} - \lambda L_r` (the adversary held); no pre-training. The validation
  loss (the kept epoch) is the same combination. One training per :math:`\lambda` of
  ``--pivot-lambdas``; the one kept has the smallest expected :math:`\sigma(\mu)` on the
  validation events (the analysis' model with the quantile edges, as for ``bce_opt``). A
  regression adversary penalises the dependence of the *mean* nuisance value on the output
  only (Louppe et al. also use a mixture density).
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from ..data import DataSet
from ..loss.analysis import _kind
from ..templates import _transform_scale, model_from_histograms, variation_events
from ..training.callbacks import AbsCallback
from .. import htautau as hb
from .analysis import WEIGHT_EXTRAS

__all__ = ["EdgeOptimiser", "optimise_edges", "asimov_sigma", "candidate_grid", "SystAugmentation",
           "augmented_dataset", "PivotAdversary", "AUG_LABEL", "AUG_TAU_ID_UP", "AUG_TAU_ID_DOWN"]

#: extras of the augmented data set: the process label, the tau-ID up/down weight ratios
AUG_LABEL, AUG_TAU_ID_UP, AUG_TAU_ID_DOWN = "aug_label", "aug_tau_id_up", "aug_tau_id_down"


# ----------------------------------------------------------------------------- bce_opt
def asimov_sigma(model) -> float:
    r"""The expected uncertainty of the POI on the model's Asimov data with every free
    nuisance profiled: :math:`\sqrt{(H^{-1})_{\mu\mu}}`, :math:`H` the Hessian of
    :math:`-\ln L` over the free parameters at the nominal values (the Asimov best fit, as
    :func:`~inferno.likelihood.fit` finds it); ``inf`` when :math:`H` is not positive definite."""
    main, aux = model.asimov()
    with torch.no_grad():
        _, _, H = model.nll_grad_hess(model.init, main, aux)
    free = (~model.fixed).nonzero().squeeze(-1)
    Hf = H[free][:, free]
    L, info = torch.linalg.cholesky_ex(Hf)
    if int(info) != 0:
        return math.inf
    cov = torch.cholesky_inverse(L)
    k = int((free == model.poi_index[0]).nonzero()[0, 0])
    v = float(cov[k, k])
    return math.sqrt(v) if v > 0 and math.isfinite(v) else math.inf


class EdgeOptimiser:
    r"""The validation events of every variation of the analysis scored once and histogrammed in
    the cells of a grid of candidate edges; :meth:`sigma` of any subset of the grid as bin edges.

    Args:
        analysis: the :class:`~inferno.loss.Analysis` (learned channel: the binned score).
        scorer: events ``(n, 21)`` -> their scores (float64 numpy or tensor), e.g.
            :meth:`~inferno.htautau.summaries.BinnedScore.scores`.
        events: the validation events (dict of arrays: ``primary``, ``label``, ``weight`` and
            the tau-ID weight columns).
        grid: increasing candidate edges.
        n_template: process name -> events in the template sample: the MC statistical
            uncertainty of each process is scaled to it (sums of squared weights times
            ``n_validation / n_template``). ``None``: the validation sample's own.
        min_events: the least number of validation events (of the processes) a bin may hold.
    """

    def __init__(self, analysis, scorer: Callable, events: Mapping[str, np.ndarray], grid: Sequence[float],
                 n_template: Optional[Mapping[str, int]] = None, min_events: int = 20):
        self.analysis = analysis
        self.grid = np.asarray(grid, dtype=np.float64)
        if self.grid.ndim != 1 or len(self.grid) < 1 or np.any(np.diff(self.grid) <= 0):
            raise ValueError("grid must be strictly increasing")
        self.min_events = int(min_events)
        nc = len(self.grid) + 1
        x = torch.from_numpy(np.ascontiguousarray(events["primary"]))
        lab = np.asarray(events["label"])
        w = np.asarray(events["weight"], dtype=np.float64)

        def score(xx: torch.Tensor) -> np.ndarray:
            with torch.no_grad():
                s = scorer(xx)
            return (s.detach().cpu().numpy() if isinstance(s, torch.Tensor) else np.asarray(s)).astype(np.float64)

        def cells(s: np.ndarray, wv: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
            c = np.searchsorted(self.grid, s, side="right")  # = torch.bucketize(right=True): BinnedScore's bins
            return np.bincount(c, weights=wv, minlength=nc), np.bincount(c, weights=wv * wv, minlength=nc)

        self.cells: Dict[Tuple[Any, str], Tuple[np.ndarray, np.ndarray]] = {}
        proc_labels = [p.label for p in analysis.processes]
        self.n_cells = np.bincount(np.searchsorted(self.grid, score(x[torch.from_numpy(np.isin(lab, proc_labels))]),
                                                   side="right"), minlength=nc)
        weights = {k: torch.from_numpy(np.asarray(events[k], dtype=np.float64)) for k in events if k.startswith("weight_")}
        s_all = score(x)
        names = {p.label: p.name for p in analysis.processes}
        for key, r, xv, wv in variation_events(analysis, x, torch.from_numpy(lab), torch.from_numpy(w), weights):
            ri = r.numpy()
            sw, sw2 = cells(s_all[ri] if xv is None else score(xv), wv.numpy())
            if n_template is not None and key[1] == "nominal" and key[0] in names:
                sw2 = sw2 * len(ri) / int(n_template[names[key[0]]])
            self.cells[key] = (sw, sw2)
        self.n_evals = 0

    def _starts(self, sel: Sequence[int]) -> np.ndarray:
        return np.concatenate([[0], np.asarray(sel, dtype=np.int64) + 1])

    def counts(self, sel: Sequence[int]) -> Dict[Tuple[Any, str], Tuple[np.ndarray, np.ndarray]]:
        """The histograms (sums of weights, of squared weights) with the edges ``grid[sel]``
        (``sel`` strictly increasing grid indices); a negative sum of weights in a bin (the
        diboson's negative weights in a bin of few of its events) is set to 0, as the INFERNO
        loss of the analysis does (``negative='clip'``)."""
        st = self._starts(sel)
        return {k: (np.maximum(np.add.reduceat(a, st), 0.0), np.add.reduceat(b, st))
                for k, (a, b) in self.cells.items()}

    def valid(self, sel: Sequence[int]) -> bool:
        """Every bin holds at least ``min_events`` validation events (of the processes)."""
        return bool(np.all(np.add.reduceat(self.n_cells, self._starts(sel)) >= self.min_events))

    def model(self, sel: Sequence[int]):
        """The concrete model of the analysis with the edges ``grid[sel]``."""
        return model_from_histograms(self.analysis, self.counts(sel))

    def sigma(self, sel: Sequence[int]) -> float:
        r"""The expected :math:`\sigma(\mu)` (:func:`asimov_sigma`) with the edges ``grid[sel]``;
        ``inf`` where the model cannot be built."""
        self.n_evals += 1
        try:
            return asimov_sigma(self.model(sel))
        except ValueError:
            return math.inf


def optimise_edges(opt: EdgeOptimiser, start: Sequence[int], max_sweeps: int = 10, rtol: float = 1e-6,
                   log: Optional[Callable] = None) -> Dict[str, Any]:
    r"""Coordinate descent over the bin edges: for each edge in turn, the grid candidate
    strictly between its neighbours (a valid binning: :meth:`EdgeOptimiser.valid`) that gives
    the smallest :math:`\sigma(\mu)`; a move is taken when it lowers :math:`\sigma` by more
    than ``rtol`` (relative); sweeps over all edges until none moves, or ``max_sweeps``.

    Returns:
        ``sel`` (the chosen grid indices), ``edges``, ``sigma`` (validation), ``sigma_start``,
        ``trace`` (the validation :math:`\sigma` at the start and after each sweep),
        ``n_evals``, ``seconds``.
    """
    t0 = time.perf_counter()
    sel = [int(s) for s in start]
    if any(b <= a for a, b in zip(sel, sel[1:])) or sel[0] < 0 or sel[-1] >= len(opt.grid):
        raise ValueError("start must be strictly increasing grid indices")
    best = opt.sigma(sel)
    trace = [best]
    n = len(sel)
    for sweep in range(max_sweeps):
        moved = False
        for k in range(n):
            lo = sel[k - 1] + 1 if k > 0 else 0
            hi = sel[k + 1] - 1 if k < n - 1 else len(opt.grid) - 1
            cand_best, cand_j = best, sel[k]
            for j in range(lo, hi + 1):
                if j == sel[k]:
                    continue
                trial = sel[:k] + [j] + sel[k + 1:]
                if not opt.valid(trial):
                    continue
                s = opt.sigma(trial)
                if s < cand_best:
                    cand_best, cand_j = s, j
            if cand_j != sel[k] and cand_best < best * (1 - rtol):
                sel[k], best, moved = cand_j, cand_best, True
        trace.append(best)
        if log is not None:
            log(f"    bce_opt sweep {sweep + 1}: validation sigma(mu) {best:.5f}", flush=True)
        if not moved:
            break
    return dict(sel=sel, edges=opt.grid[sel].copy(), sigma=best, sigma_start=trace[0], trace=trace,
                n_evals=opt.n_evals, seconds=time.perf_counter() - t0)


def candidate_grid(scores: np.ndarray, is_signal: np.ndarray, weight: np.ndarray, n: int,
                   include: Sequence[float] = ()) -> np.ndarray:
    """Candidate edges: ``n // 2`` weighted quantiles of the signal's scores and ``n // 2``
    (unweighted) quantiles of all events' scores, with the values ``include``; sorted, unique."""
    from .summaries import _weighted_quantiles

    q = np.linspace(0, 1, n // 2 + 2)[1:-1]
    g = np.concatenate([_weighted_quantiles(scores[is_signal], weight[is_signal], q), np.quantile(scores, q),
                        np.asarray(include, dtype=np.float64)])
    g = np.unique(g[np.isfinite(g)])
    return g


# ----------------------------------------------------------------------------- bce_aug
def augmented_dataset(ev: Mapping[str, np.ndarray], systematics: Sequence[str]) -> DataSet:
    r"""The :class:`~inferno.data.DataSet` of ``bce_aug``: the processes and (with
    ``ttbar_model``) the alternative ttbar samples, targets signal/not, weights as ``bce``'s
    (signal and background to equal totals, the background its physical mixture, the
    alternative samples each normalised to the nominal ttbar weight), extras: the process
    label and the tau-ID up/down weight ratios (for :class:`SystAugmentation`)."""
    proc_labels = [p.label for p in hb.PROCESSES.values()]
    alt = [hb.LABELS[s] for s in hb.ALT_SAMPLES] if "ttbar_model" in systematics else []
    lab_all = np.asarray(ev["label"])
    m = np.isin(lab_all, proc_labels + alt)
    lab, w = lab_all[m], np.asarray(ev["weight"], dtype=np.float64)[m]
    sig = lab == hb.PROCESSES[hb.SIGNAL].label
    bkg = np.isin(lab, [v for v in proc_labels if v != hb.PROCESSES[hb.SIGNAL].label])
    wb = np.zeros_like(w)
    wb[sig] = w[sig] / w[sig].sum()
    btot = w[bkg].sum()
    wb[bkg] = w[bkg] / btot
    tt = lab == hb.LABELS["ttbar"]
    for a in alt:
        ma = lab == a
        wb[ma] = w[ma] / w[ma].sum() * w[tt].sum() / btot
    n_nom = int((sig | bkg).sum())
    wb *= n_nom / wb[sig | bkg].sum()
    ratios = {}
    for key, col in ((AUG_TAU_ID_UP, WEIGHT_EXTRAS[0]), (AUG_TAU_ID_DOWN, WEIGHT_EXTRAS[1])):
        wv = np.asarray(ev[col], dtype=np.float64)[m]
        ratios[key] = np.where(w != 0, wv / np.where(w != 0, w, 1.0), 1.0).astype(np.float32)
    return DataSet(ev["primary"][m], sig.astype(np.float32), wb.astype(np.float32),
                   extras={AUG_LABEL: lab.astype(np.float32), **ratios})


class SystAugmentation(AbsCallback):
    r"""Redraws the nuisances of every event of every training (and validation) batch before the
    forward pass (see the module docstring): moves ``wrapper.x`` by the analysis' exact
    transforms at per-event values drawn from their constraints, and re-weights ``wrapper.w``
    for the weight (``tau_id``) and alternative-sample (``ttbar_model``) systematics. Needs the
    batch extras of :func:`augmented_dataset`.

    Args:
        analysis: the :class:`~inferno.loss.Analysis` whose nuisances are drawn (those of
            kind transform, weights, alt).
        seed: seed of the training draws (the validation draws use ``seed + 1``, reseeded at
            every validation phase: the same draws every epoch).
        clip_alt: the clip of the alternative-sample nuisance's draws (the mixture weights).

    Attributes:
        last: ``{nuisance: alpha}`` of the latest batch (per event, in standard deviations).
    """

    def __init__(self, analysis, seed: int = 0, clip_alt: float = 1.0):
        self.analysis = analysis
        self.seed = int(seed)
        self.clip_alt = float(clip_alt)
        self.transforms = [n for n in analysis.nuisances if _kind(n) == "transform"]
        self.weights = [n for n in analysis.nuisances if _kind(n) == "weights"]
        self.alts = [n for n in analysis.nuisances if _kind(n) == "alt"]
        if len(self.weights) > 1:
            raise ValueError("SystAugmentation handles one weight nuisance (tau_id)")
        self.gen = torch.Generator().manual_seed(self.seed)
        self.gen_valid = torch.Generator()
        self.last: Dict[str, torch.Tensor] = {}

    def on_train_begin(self) -> None:
        self.gen.manual_seed(self.seed)

    def on_epoch_begin(self) -> None:
        if self.wrapper.state == "valid":
            self.gen_valid.manual_seed(self.seed + 1)

    def on_batch_begin(self) -> None:
        wr = self.wrapper
        if wr.state not in ("train", "valid"):
            return
        g = self.gen if wr.state == "train" else self.gen_valid
        wr.x, wr.w = self.augment(wr.x, wr.w, wr.extras, g)

    def augment(self, x: torch.Tensor, w: torch.Tensor, extras: Mapping[str, torch.Tensor],
                gen: Optional[torch.Generator] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """The batch ``x``, ``w`` at freshly drawn nuisance values (recorded in :attr:`last`)."""
        n = len(x)
        last: Dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for nu in self.transforms:
                z = torch.randn(n, dtype=torch.float64, generator=gen)
                sd = float(nu.constraint.stddev) if nu.constraint is not None else _transform_scale(nu)
                v = nu.nominal + sd * z
                x = nu.transform(x, v).to(x.dtype)
                last[nu.name] = v
            factor = torch.ones(n, dtype=torch.float64)
            lab = extras[AUG_LABEL].reshape(-1).to(torch.float64) if (self.weights or self.alts) else None
            for nu in self.weights:
                a = torch.randn(n, dtype=torch.float64, generator=gen)
                on = torch.as_tensor(np.isin(lab.numpy(), [p.label for p in self.analysis.processes
                                                           if p.name in self.analysis.targets[nu.name]]))
                up = extras[AUG_TAU_ID_UP].reshape(-1).to(torch.float64)
                dn = extras[AUG_TAU_ID_DOWN].reshape(-1).to(torch.float64)
                f = 1.0 + a.clamp_min(0) * (up - 1.0) + (-a).clamp_min(0) * (dn - 1.0)
                factor = torch.where(on, factor * f, factor)
                last[nu.name] = a
            for nu in self.alts:
                a = torch.randn(n, dtype=torch.float64, generator=gen).clamp(-self.clip_alt, self.clip_alt)
                nom = torch.as_tensor(np.isin(lab.numpy(), [p.label for p in self.analysis.processes
                                                            if p.name in self.analysis.targets[nu.name]]))
                up_l, dn_l = nu.labels
                f = torch.where(nom, 1.0 - a.abs(), torch.ones_like(a))
                f = torch.where(lab == up_l, a.clamp_min(0), f)
                f = torch.where(lab == dn_l, (-a).clamp_min(0), f)
                factor = factor * f
                last[nu.name] = a
            if w is not None:
                w = (w.to(torch.float64) * factor.reshape(w.shape)).to(w.dtype)
        self.last = last
        return x, w

    def __repr__(self) -> str:
        return f"SystAugmentation({[n.name for n in self.analysis.nuisances]}, seed={self.seed})"


# ----------------------------------------------------------------------------- pivot
class PivotAdversary(AbsCallback):
    r"""The adversary of a pivot classifier (see the module docstring): after the forward pass,
    in training, one optimiser step of the adversary on its regression loss :math:`L_r` of the
    nuisance values ``aug.last[name]`` drawn by the :class:`SystAugmentation` ``aug`` (which
    must come before this callback), then ``wrapper.loss_val`` becomes
    :math:`L_\text{BCE} - \lambda L_r` (in validation too, without the step).

    Args:
        aug: the augmentation callback that draws the nuisances.
        names: the nuisances the adversary regresses (transform nuisances of ``aug``).
        lam: :math:`\lambda`.
        hidden: width of the adversary's two hidden layers.
        lr: its Adam learning rate.
        seed: seed of its initialisation.

    Attributes:
        history: the adversary's mean loss per epoch and phase (``{'train': [...], 'valid': [...]}``).
    """

    def __init__(self, aug: SystAugmentation, names: Sequence[str] = ("tes", "jes"), lam: float = 10.0,
                 hidden: int = 32, lr: float = 1e-3, seed: int = 0):
        have = [n.name for n in aug.transforms]
        self.names = [n for n in names if n in have]
        if not self.names:
            raise ValueError(f"the pivot needs one of the nuisances {list(names)} among {have}")
        self.aug, self.lam, self.lr = aug, float(lam), float(lr)
        g = torch.random.fork_rng()
        with g:
            torch.manual_seed(int(seed))
            self.adv = torch.nn.Sequential(torch.nn.Linear(1, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, hidden),
                                           torch.nn.ReLU(), torch.nn.Linear(hidden, len(self.names)))
        self.opt = torch.optim.Adam(self.adv.parameters(), lr=self.lr)
        self.history: Dict[str, List[float]] = {"train": [], "valid": []}

    def _loss(self, f: torch.Tensor, w: Optional[torch.Tensor]) -> torch.Tensor:
        z = torch.stack([self.aug.last[n] for n in self.names], 1).to(f.dtype)
        per = ((self.adv(f) - z) ** 2).sum(1)
        if w is None:
            return per.mean()
        ww = w.reshape(-1).to(f.dtype).clamp_min(0)
        return (per * ww).sum() / ww.sum().clamp_min(1e-30)

    def on_train_begin(self) -> None:
        self.history = {"train": [], "valid": []}

    def on_epoch_begin(self) -> None:
        self._sum, self._n = 0.0, 0

    def on_forwards_end(self) -> None:
        wr = self.wrapper
        if wr.state not in ("train", "valid"):
            return
        f = torch.sigmoid(wr.y_pred.reshape(-1, 1))
        if wr.state == "train":
            self.opt.zero_grad(set_to_none=True)
            lr_ = self._loss(f.detach(), wr.w)
            lr_.backward()
            self.opt.step()
        for p in self.adv.parameters():
            p.requires_grad_(False)
        try:
            l_adv = self._loss(f, wr.w)
        finally:
            for p in self.adv.parameters():
                p.requires_grad_(True)
        self._sum += float(l_adv.detach())
        self._n += 1
        wr.loss_val = wr.loss_val - self.lam * l_adv

    def on_epoch_end(self) -> None:
        if self._n:
            self.history[self.wrapper.state].append(self._sum / self._n)

    def __repr__(self) -> str:
        return f"PivotAdversary({self.names}, lam={self.lam})"
