r"""``inferno-bench``: BCE vs multiclass vs INFERNO on the :math:`H \to \tau\tau`-like benchmark,
end to end (also ``python -m inferno.htautau``).

On the same generated events (:mod:`inferno.htautau`; the analysis of
:mod:`inferno.htautau.analysis`: a learned signal region and a ttbar control region,
every kind of systematic) the command trains three networks on the primary objects (first
layer :class:`~inferno.htautau.FeatureLayer`, then the same MLP with two hidden
layers), each keeping the weights of its best validation epoch:

* ``bce``: a classifier, signal vs all backgrounds (binary cross-entropy, the signal and the
  physical background mixture weighted to equal totals); summary: its signal probability in
  ``--bins`` bins (quantiles of the signal, or equal width);
* ``multiclass``: a classifier over the four processes (softmax, cross-entropy, the
  processes weighted to equal totals); summaries: ``multiclass`` (its signal probability
  against the physical background mixture, binned like BCE's) and ``multiclass_argmax``
  (the most probable process: 4 bins);
* ``inferno``: INFERNO on the analysis (:class:`~inferno.loss.InfernoLoss`; every
  systematic, the control region, optionally the MC statistics; ``--bins`` outputs,
  ``VariableSoftmax`` at ``--temperature``); summary: its argmax;
* ``bce_opt`` (no training of its own): the ``bce`` network's signal probability, its
  ``--bins`` bin edges chosen to minimise the expected sigma(mu) of the analysis (every nuisance
  profiled) on the *validation* events, by coordinate descent from ``bce``'s edges over
  ``--edge-grid`` candidate edges (:mod:`inferno.htautau.baselines`);
* ``bce_aug``: the BCE classifier trained on events whose nuisances (tes, jes, tau_id,
  ttbar_model) are redrawn per event every epoch from their constraints (the exact transforms,
  the weights, the alternative samples mixed: :class:`~inferno.htautau.baselines.SystAugmentation`);
  binned like ``bce``;
* ``pivot`` (only on request: one training per ``--pivot-lambdas``): ``bce_aug`` with an
  adversary regressing the drawn tes and jes from its output (loss BCE - lambda x adversary's),
  the lambda with the smallest expected sigma(mu) on the validation events kept; binned like
  ``bce``.

Each summary then gets the same measurement: the concrete model of the analysis
(:func:`~inferno.templates.analysis_model`) filled from an independent template (test)
sample (``--n-test`` events per sample; bins with fewer than 20 of its events, or with a
negative template from negative weights, merged: :func:`merge_bins`), the expected 68%
interval of the signal strength :math:`\mu` with all nuisances profiled on Asimov data
(profile scan; the Hessian uncertainty and the statistics-only one beside it), and
pseudo-experiments with the tau energy scale truly shifted by ``--shifts`` standard
deviations while its auxiliary measurement stays centred on the nominal value
(:func:`truth_counts`, :func:`pseudo_data`): coverage of the profile-likelihood interval,
its mean width, and the HiggsML uncertainty challenge's score over all of them
(:func:`challenge_score`).

Every run uses one torch thread (``torch.set_num_threads(1)``, restored afterwards) and
seeds everything from ``--seed``: the same command gives the same numbers on any machine
with the same library versions.

Outputs in ``--out``: ``results.md``, ``results.csv`` (one row per summary), ``coverage.csv``
(one row per summary and shift), ``meta.json``, ``workspaces/<summary>.json`` (pyhf), and the
figures ``features_tes.png``, ``features_jes.png``, ``templates_<summary>.png``,
``profiles.png``, ``coverage_vs_tes.png``, ``training.png``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from .. import __version__
from ..paper.cli import _git_commit, _HelpFormatter, _unwritable
from ..likelihood import fit, get_interval, profile
from ..templates import analysis_model
from ..training.schedules import SCHEDULES
from .. import htautau as hb
from .analysis import SYSTEMATICS, WEIGHT_EXTRAS, prepare
from .report import (MODELS, ONE_SIGMA, SUMMARIES, fig_coverage, fig_features, fig_profiles, fig_templates,
                     fig_training, results_markdown, results_table)
from .summaries import (BinnedScore, KeepBest, MergedBins, StratifiedLoader, WeightedCE, _train_seed,  # noqa: F401
                        build_net, make_summaries, merge_bins, optimise_bins, signal_probability, train, train_all)

__all__ = ["BenchConfig", "main", "parse_args", "validate", "run", "train", "train_all", "optimise_bins",
           "build_net", "make_summaries",
           "measure", "merge_bins", "truth_counts", "pseudo_data", "challenge_score", "coverage_penalty",
           "signal_probability", "StratifiedLoader", "BinnedScore", "MergedBins", "WeightedCE", "KeepBest",
           "MODELS", "SUMMARIES"]

#: the models run by default (the pivot, a training per lambda, on request)
DEFAULT_MODELS: Tuple[str, ...] = tuple(m for m in MODELS if m != "pivot")
#: largest --seed (the training seeds are 10 seed + model)
MAX_SEED = 2**32 - 1
#: the challenge's epsilon in -ln((width + eps) f(coverage))
SCORE_EPS = 1e-3


@dataclass
class BenchConfig:
    """Settings of a benchmark run (see ``inferno-bench --help``)."""

    seed: int = 0
    n_events: int = 200_000
    n_test: int = 500_000
    fractions: Tuple[float, float] = (0.7, 0.3)
    models: Tuple[str, ...] = DEFAULT_MODELS
    epochs: int = 40
    inferno_epochs: int = 120
    bs: int = 4000
    bins: int = 10
    hidden: int = 100
    lr: float = 1e-3
    lr_inferno: float = 1e-3
    temperature: float = 0.1
    schedule: str = "onecycle"
    binning: str = "quantile"
    edge_grid: int = 200
    pivot_lambdas: Tuple[float, ...] = (1.0, 10.0, 100.0)
    systematics: Tuple[str, ...] = ("tes", "jes", "tau_id", "ttbar_model")
    mc_stat: bool = True
    toys: int = 1000
    shifts: Tuple[float, ...] = (-2.0, -1.0, 0.0, 1.0, 2.0)
    truth: str = "model"
    scan_points: int = 41
    toy_scan_points: int = 25
    figures: bool = True
    explain: bool = True
    explain_repeats: int = 2
    out: str = "docs/benchmark"
    quick: bool = False
    threads: int = 1


# ----------------------------------------------------------------------------- arguments
def _floats(text: str, what: str) -> Tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what} must be comma-separated numbers, got {text!r}") from None


def _parser() -> argparse.ArgumentParser:
    d = BenchConfig()
    p = argparse.ArgumentParser(prog="inferno-bench", description=__doc__.split("\n\n")[0].replace("``", "")
                                .replace(r":math:`H \to \tau\tau`", "H -> tau tau"),
                                formatter_class=_HelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="small sizes (30k training and 100k template events per sample, few epochs, 100 toys): a few minutes on 2 cores; "
                        "explicit options still override")
    p.add_argument("--seed", type=int, default=d.seed,
                   help="seed of the events, the split, the trainings and the toys")
    p.add_argument("--n-events", type=int, default=None,
                   help=f"generated events per sample for training and validation (the diboson capped at 3000) "
                        f"[{d.n_events}; quick: 30000]")
    p.add_argument("--n-test", type=int, default=None,
                   help=f"generated events per sample of the independent template (test) sample, the diboson capped "
                        f"at 3000 [{d.n_test}; quick: 100000]")
    p.add_argument("--fractions", default=",".join(str(f) for f in d.fractions),
                   help="training, validation fractions of the signal region's events")
    p.add_argument("--models", default=",".join(d.models), help="comma-separated subset of " + ",".join(MODELS))
    p.add_argument("--epochs", type=int, default=None, help=f"epochs of the classifiers [{d.epochs}; quick: 15]")
    p.add_argument("--inferno-epochs", type=int, default=None,
                   help=f"epochs of INFERNO [{d.inferno_epochs}; quick: 15]")
    p.add_argument("--bs", type=int, default=None,
                   help=f"batch size (stratified: every batch holds every sample) [{d.bs}; quick: 2000]")
    p.add_argument("--bins", type=int, default=d.bins, help="bins of the summaries (INFERNO outputs, classifier bins)")
    p.add_argument("--hidden", type=int, default=d.hidden, help="width of the two hidden layers")
    p.add_argument("--lr", type=float, default=d.lr, help="learning rate of the classifiers (Adam)")
    p.add_argument("--lr-inferno", type=float, default=d.lr_inferno, help="learning rate of INFERNO (Adam)")
    p.add_argument("--temperature", type=float, default=d.temperature, help="softmax temperature of INFERNO")
    p.add_argument("--schedule", choices=SCHEDULES, default=d.schedule,
                   help="learning-rate schedule of every training: onecycle (warm-up to 3x the learning rate, then "
                        "annealed), cosine (annealed to 0), none (constant) [%(default)s]")
    p.add_argument("--binning", choices=("quantile", "uniform"), default=d.binning,
                   help="classifier bins: equal signal (validation sample) or equal width in the probability")
    p.add_argument("--edge-grid", type=int, default=d.edge_grid,
                   help="bce_opt: candidate bin edges (half quantiles of the validation signal's score, half of all "
                        "its events')")
    p.add_argument("--pivot-lambdas", default=",".join(f"{v:g}" for v in d.pivot_lambdas),
                   help="pivot: the adversary's weights tried (one training each; the best on the validation "
                        "sample kept)")
    p.add_argument("--systematics", default=",".join(d.systematics),
                   help="shape systematics of the analysis (rates always): subset of tes,jes,tau_id,ttbar_model; "
                        "'none' for none")
    p.add_argument("--no-mc-stat", action="store_true", help="leave out the MC statistical uncertainty")
    p.add_argument("--toys", type=int, default=None,
                   help=f"pseudo-experiments per summary and shift [{d.toys}; quick: 100]")
    p.add_argument("--shifts", default=",".join(f"{s:g}" for s in d.shifts),
                   help="true tau energy scale of the pseudo-experiments, in standard deviations")
    p.add_argument("--truth", choices=("model", "exact"), default=d.truth,
                   help="pseudo-data at a shifted tau energy scale: the model's interpolation ('model'), or the "
                        "events moved by the exact transform and binned again ('exact')")
    p.add_argument("--scan-points", type=int, default=d.scan_points, help="points of the Asimov profile scans (odd)")
    p.add_argument("--toy-scan-points", type=int, default=d.toy_scan_points,
                   help="points of the profile scan of each pseudo-experiment (odd)")
    p.add_argument("--no-figures", action="store_true", help="skip the figures")
    p.add_argument("--no-explain", action="store_true",
                   help="skip the report of what each summary learned (inferno.explain: permutation importance "
                        "of the input objects on sigma(mu), attributions, nuisance maps, the systematics' ranking; "
                        "in OUT/explain)")
    p.add_argument("--explain-repeats", type=int, default=BenchConfig.explain_repeats,
                   help="shuffles per input object in the permutation importance")
    p.add_argument("--out", default=None, help=f"output folder [{d.out}; quick: {d.out}/quick]")
    return p


def parse_args(argv: Optional[Sequence[str]] = None) -> BenchConfig:
    """Parse and validate the command line; errors exit (status 2) before anything is written
    or trained (nothing is created here)."""
    p = _parser()
    a = p.parse_args(argv)
    d, q = BenchConfig(), a.quick
    problems: List[str] = []
    try:
        fractions = _floats(a.fractions, "--fractions")
        lambdas = _floats(a.pivot_lambdas, "--pivot-lambdas")
        shifts = _floats(a.shifts, "--shifts")
    except argparse.ArgumentTypeError as e:
        p.error(str(e))
    syst = () if a.systematics.strip().lower() == "none" else tuple(
        s.strip() for s in a.systematics.split(",") if s.strip())
    cfg = BenchConfig(
        seed=a.seed,
        n_events=a.n_events if a.n_events is not None else (30_000 if q else d.n_events),
        n_test=a.n_test if a.n_test is not None else (100_000 if q else d.n_test),
        fractions=tuple(fractions),  # type: ignore[arg-type]
        models=tuple(m.strip() for m in a.models.split(",") if m.strip()),
        epochs=a.epochs if a.epochs is not None else (15 if q else d.epochs),
        inferno_epochs=a.inferno_epochs if a.inferno_epochs is not None else (15 if q else d.inferno_epochs),
        bs=a.bs if a.bs is not None else (2000 if q else d.bs),
        bins=a.bins, hidden=a.hidden, lr=a.lr, lr_inferno=a.lr_inferno, temperature=a.temperature, schedule=a.schedule,
        binning=a.binning, edge_grid=a.edge_grid, pivot_lambdas=lambdas, systematics=syst,
        mc_stat=not a.no_mc_stat,
        toys=a.toys if a.toys is not None else (100 if q else d.toys),
        shifts=shifts, truth=a.truth, scan_points=a.scan_points, toy_scan_points=a.toy_scan_points, figures=not a.no_figures,
        explain=not a.no_explain, explain_repeats=a.explain_repeats,
        out=a.out if a.out is not None else (f"{d.out}/quick" if q else d.out), quick=q)
    problems += validate(cfg)
    if problems:
        p.error("; ".join(problems))
    return cfg


def validate(c: BenchConfig) -> List[str]:
    """Every problem of a configuration (empty: none); writes and creates nothing."""
    bad = []
    if c.explain_repeats < 1:
        bad.append(f"--explain-repeats must be >= 1, got {c.explain_repeats}")
    if not 0 <= c.seed <= MAX_SEED:
        bad.append(f"--seed must be in [0, {MAX_SEED}], got {c.seed}")
    for name, v in (("--n-events", c.n_events), ("--n-test", c.n_test)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 500:
            bad.append(f"{name} must be an integer >= 500, got {v!r}")
    fr = list(c.fractions)
    if len(fr) != 2 or any(not (math.isfinite(f) and f > 0) for f in fr) or abs(sum(fr) - 1) > 1e-6:
        bad.append(f"--fractions must be two positive numbers (training, validation) summing to 1, got {fr}")
    if not c.models:
        bad.append("--models is empty")
    if unknown := [m for m in c.models if m not in MODELS]:
        bad.append(f"unknown model(s) {unknown}; choose from {list(MODELS)}")
    if dup := sorted({m for m in c.models if c.models.count(m) > 1}):
        bad.append(f"--models names {dup} more than once")
    for name, v in (("--epochs", c.epochs), ("--inferno-epochs", c.inferno_epochs), ("--bs", c.bs),
                    ("--hidden", c.hidden), ("--toys", c.toys), ("--threads", c.threads)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            bad.append(f"{name} must be an integer >= 1, got {v!r}")
    if c.bins < 2:
        bad.append(f"--bins must be >= 2, got {c.bins}")
    for name, v in (("--lr", c.lr), ("--lr-inferno", c.lr_inferno), ("--temperature", c.temperature)):
        if not (math.isfinite(v) and v > 0):
            bad.append(f"{name} must be finite and > 0, got {v}")
    if isinstance(c.edge_grid, bool) or not isinstance(c.edge_grid, int) or c.edge_grid < c.bins:
        bad.append(f"--edge-grid must be an integer >= --bins ({c.bins}), got {c.edge_grid!r}")
    if not c.pivot_lambdas or any(not (math.isfinite(v) and v >= 0) for v in c.pivot_lambdas):
        bad.append(f"--pivot-lambdas must be finite numbers >= 0, got {list(c.pivot_lambdas)}")
    if "pivot" in c.models and not {"tes", "jes"} & set(c.systematics):
        bad.append("the pivot needs the tes or jes systematic")
    if c.binning not in ("quantile", "uniform"):
        bad.append(f"--binning must be 'quantile' or 'uniform', got {c.binning!r}")
    if unknown := [s for s in c.systematics if s not in SYSTEMATICS]:
        bad.append(f"unknown systematics {unknown}; choose from {list(SYSTEMATICS)} (or 'none')")
    if dup := sorted({s for s in c.systematics if c.systematics.count(s) > 1}):
        bad.append(f"--systematics names {dup} more than once")
    if not c.shifts:
        bad.append("--shifts is empty")
    elif any(not (math.isfinite(s) and abs(s) <= 5) for s in c.shifts):
        bad.append(f"--shifts must be finite, within +-5 standard deviations, got {list(c.shifts)}")
    elif len(set(c.shifts)) != len(c.shifts):
        bad.append(f"--shifts names a value more than once: {list(c.shifts)}")
    if c.shifts and any(s != 0 for s in c.shifts) and "tes" not in c.systematics:
        bad.append("--shifts other than 0 need the tes systematic")
    if c.truth not in ("model", "exact"):
        bad.append(f"--truth must be 'model' or 'exact', got {c.truth!r}")
    for k, v in (("--scan-points", c.scan_points), ("--toy-scan-points", c.toy_scan_points)):
        if v < 7 or v % 2 == 0:
            bad.append(f"{k} must be odd and >= 7 (the true mu = 1 at the centre), got {v}")
    if (why := _unwritable(Path(c.out))) is not None:
        bad.append(f"output folder {c.out} is not writable: {why}")
    return bad


# ----------------------------------------------------------------------------- measurement
def challenge_score(width: float, coverage: float, n: int, eps: float = SCORE_EPS) -> float:
    r"""The HiggsML uncertainty challenge's score: :math:`-\ln\big((w + \epsilon)\, f(c)\big)`,
    with :math:`w` the mean full width :math:`\mu_{84} - \mu_{16}` of the intervals, :math:`c`
    their coverage over ``n`` pseudo-experiments and :math:`f` :func:`coverage_penalty`.
    Higher is better."""
    if not (math.isfinite(width) and math.isfinite(coverage)):
        return math.nan
    return -math.log((width + eps) * coverage_penalty(coverage, n))


def coverage_penalty(c: float, n: int, one_sigma: float = ONE_SIGMA) -> float:
    r""":math:`f(c)`: 1 within :math:`0.6827 \pm 2\sigma_{68}`,
    :math:`\sigma_{68} = \sqrt{0.6827\,(1 - 0.6827)/n}`; below,
    :math:`1 + |(c - c_-)/\sigma_{68}|^4`; above, :math:`1 + |(c - c_+)/\sigma_{68}|^3`
    (:math:`c_\pm = 0.6827 \pm 2\sigma_{68}`): under-coverage costs more than over-coverage."""
    s = math.sqrt(one_sigma * (1 - one_sigma) / n)
    lo, hi = one_sigma - 2 * s, one_sigma + 2 * s
    if c < lo:
        return 1 + abs((c - lo) / s) ** 4
    if c > hi:
        return 1 + abs((c - hi) / s) ** 3
    return 1.0


def _scan(model, main, aux, centre: float, half: float, points: int):
    from .analysis import POI_BOUNDS
    half = min(half, centre - POI_BOUNDS[0], POI_BOUNDS[1] - centre)  # inside the bounds of mu
    mu = centre + half * np.linspace(-1.0, 1.0, points)
    return mu, profile(model, main, mu, aux=aux, on_fail="ignore")


def _intervals(nll: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """(lo, hi) per row of a batch of scans (NaN where the interval is not inside the scan)."""
    out = np.full((nll.shape[0], 2), np.nan)
    for i, row in enumerate(nll):
        try:
            lo, hi, _ = get_interval(row, mu, 0.5)
            out[i] = lo, hi
        except ValueError:
            pass
    return out


def measure(name: str, summary, prob, cfg: BenchConfig, log: Callable = print) -> Dict[str, Any]:
    """The concrete model of ``summary`` on the test events, its Asimov widths and its
    pseudo-experiments at the shifted tau energy scales."""
    t0 = time.perf_counter()
    te = prob.test
    x = torch.from_numpy(te["primary"])
    summary, groups = merge_bins(summary, te, ordered=isinstance(summary, BinnedScore))
    merged = [g for g in groups if len(g) > 1]
    if merged:
        log(f"  {name}: bins merged (fewer than 20 test events, or a negative template): {merged}", flush=True)
    model = analysis_model(prob.analysis, summary, x, torch.from_numpy(te["label"]),
                           torch.from_numpy(te["weight"]), weights={k: torch.from_numpy(te[k]) for k in WEIGHT_EXTRAS})
    main, aux = model.asimov()
    f = fit(model, main, aux, on_fail="ignore")
    sigma_h = float(f.poi_unc)
    nuis = {n: float(v) for n, v in zip(model.names, model.init.tolist()) if n != "mu"}
    f0 = fit(model, main, aux, fixed=nuis, on_fail="ignore")
    sigma_stat = float(f0.poi_unc)
    half = 3.0 * sigma_h if math.isfinite(sigma_h) and sigma_h > 0 else 1.0
    mu, prof = _scan(model, main, aux, 1.0, half, cfg.scan_points)
    try:
        lo, hi, _ = prof.interval()
        width = (hi - lo) / 2
    except ValueError:
        lo = hi = width = math.nan
    res: Dict[str, Any] = dict(summary=name, n_bins=int(model.channel_bins["signal"].stop
                                                        - model.channel_bins["signal"].start),
                               sigma_stat=sigma_stat, sigma_hessian=sigma_h, width=width, lo=lo, hi=hi, merged=merged,
                               scan=(mu.tolist(), prof.nll.tolist()), model=model, asimov=main, merged_summary=summary)
    # pseudo-experiments: the true tau energy scale shifted, its auxiliary datum centred on 0
    rows = []
    scale = width if math.isfinite(width) else half / 3
    for j, s in enumerate(cfg.shifts):
        nu = truth_counts(model, summary, prob, float(s), cfg.truth)
        tm, ta = pseudo_data(model, nu, cfg.toys, seed=_toy_seed(cfg.seed, j))
        rows.append(_toy_row(name, float(s), model, tm, ta, scale, cfg.toy_scan_points))
    res["toys"] = rows
    allw = np.concatenate([r["_full_widths"] for r in rows])
    allc = np.concatenate([r["_contains"] for r in rows])
    res["toy_coverage"] = float(allc.mean())
    res["toy_mean_width"] = float(allw.mean() / 2) if len(allw) else math.nan
    res["score"] = challenge_score(float(allw.mean()) if len(allw) else math.nan, float(allc.mean()), len(allc))
    res["measure_s"] = time.perf_counter() - t0
    log(f"  measured {name:<18} sigma(mu) = {width:.4f} (Hessian {sigma_h:.4f}, stat only {sigma_stat:.4f}); "
        f"toys: coverage {res['toy_coverage']:.3f}, mean width {res['toy_mean_width']:.4f}, score {res['score']:.3f} "
        f"({res['measure_s']:.0f} s)", flush=True)
    return res


def _toy_row(name: str, shift: float, model, main: torch.Tensor, aux: torch.Tensor, scale: float,
             points: int) -> Dict[str, Any]:
    """Per pseudo-experiment: the global fit, a profile scan over 1 +- 5 ``scale`` (true mu = 1
    at its centre), the 68% interval (Delta NLL = 0.5 on a spline of the scan), whether it
    holds mu = 1 (Delta NLL at mu = 1 <= 0.5: exact, no interpolation) and its width."""
    f = fit(model, main, aux, on_fail="ignore")
    mu, pr = _scan(model, main, aux, 1.0, 5.0 * scale, points)
    mid = points // 2
    nll = pr.nll.numpy()
    ok = f.converged.numpy() & pr.converged.numpy()[:, mid] & np.isfinite(nll).all(1)
    dnll = nll[:, mid] - np.minimum(f.nll.numpy(), np.nanmin(nll, 1))
    contains = dnll[ok] <= 0.5
    iv = _intervals(nll[ok], mu)
    good = np.isfinite(iv).all(1)
    widths = iv[good, 1] - iv[good, 0]
    n_ok = int(ok.sum())
    cov = float(contains.mean()) if n_ok else math.nan
    mu_hat = f.poi.numpy()[ok]
    return dict(summary=name, shift=shift, coverage=cov,
                coverage_error=math.sqrt(max(cov * (1 - cov), 1e-12) / n_ok) if n_ok else math.nan,
                n_toys=n_ok, n_failed=int(len(ok) - n_ok), n_interval_outside_scan=int((~good).sum()),
                mean_width=float(widths.mean() / 2) if len(widths) else math.nan,
                mu_hat_mean=float(mu_hat.mean()) if n_ok else math.nan,
                mu_hat_std=float(mu_hat.std()) if n_ok else math.nan,
                _full_widths=widths, _contains=contains)


def truth_counts(model, summary: nn.Module, prob, shift: float, truth: str = "model") -> torch.Tensor:
    """Expected counts of every bin of ``model`` with the tau energy scale truly at ``shift``
    standard deviations (everything else nominal).

    ``truth='model'``: the model's own prediction, ``model.expected`` at ``tes = shift`` (the
    histosys interpolation, linear beyond +-1), negative counts (a template extrapolated
    below 0 in a nearly empty bin) set to 0. ``truth='exact'``: the events themselves moved
    by the exact transform (:class:`~inferno.htautau.EnergyScale`) and binned
    again, in the signal region (``summary`` on the test events) and the control region (all
    events): what the detector would give, so that the interpolation's accuracy is tested too.
    """
    if truth not in ("model", "exact"):
        raise ValueError(f"truth must be 'model' or 'exact', got {truth!r}")
    if shift == 0 or truth == "model":
        return model.expected(model.params(tes=shift) if shift != 0 else model.init).clamp_min(0.0)
    from .analysis import control_region_model

    nu = model.expected(model.init).clone()
    es = hb.EnergyScale("tau")
    ev = prob.events
    with torch.no_grad():
        prim = es(torch.from_numpy(ev["primary"]), shift)
        moved = dict(ev, primary=prim.numpy(), features=hb.features(prim).numpy())
        cr = control_region_model(moved, systematics=(), free_ttbar=prob.free_ttbar)
        nu[model.channel_bins["control"]] = cr.expected(cr.init)
        te = prob.test
        x = es(torch.from_numpy(te["primary"]), shift)
        from ..templates import hard_bins
        bins = hard_bins(summary, x).numpy()
        sl = model.channel_bins["signal"]
        n = sl.stop - sl.start
        sr = np.zeros(n)
        for name, p in hb.PROCESSES.items():
            m = te["label"] == p.label
            w = te["weight"][m]
            sr += prob.sr_yields[name] / w.sum() * np.bincount(bins[m], weights=w, minlength=n)
        nu[sl] = torch.as_tensor(sr)
    return nu.clamp_min(0.0)


def pseudo_data(model, nu: torch.Tensor, n_toys: int, seed: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """``n_toys`` pseudo-experiments: main counts Poisson about ``nu``; every auxiliary datum
    Gaussian about its *nominal* value (the auxiliary measurements are not told of the true
    shift: a shifted nuisance is then a measurement that is off by the shift)."""
    g = torch.Generator().manual_seed(int(seed))
    main = torch.poisson(nu.expand(n_toys, -1).contiguous(), generator=g)
    aux = model.aux_nominal.expand(n_toys, -1).clone()
    for col, k in enumerate(model._aux_params):
        par = model.parameters[k]
        if par.constraint != "normal":
            raise ValueError(f"parameter {par.name!r} has a {par.constraint!r} constraint: only Gaussian ones are "
                             "fluctuated here")
        aux[:, col] = aux[:, col] + par.sigma * torch.randn(n_toys, dtype=aux.dtype, generator=g)
    return main, aux


def _toy_seed(seed: int, j: int) -> int:
    return int(np.random.SeedSequence([int(seed), 0x70F5, j]).generate_state(1)[0])


# ----------------------------------------------------------------------------- main
def run(cfg: BenchConfig, log: Callable = print, command: Optional[str] = None) -> Dict[str, Any]:
    """Run the benchmark described by ``cfg`` (validated first); writes the outputs and returns
    ``table``, ``coverage`` (pandas), ``results`` (per summary, with its ``model``), ``meta``,
    ``out``.

    Raises:
        ValueError: an invalid configuration (before anything is written).
    """
    problems = validate(cfg)
    if problems:
        raise ValueError("; ".join(problems))
    old_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _run(cfg, log, command)
    finally:
        torch.set_num_threads(old_threads)


def _run(cfg: BenchConfig, log: Callable, command: Optional[str]) -> Dict[str, Any]:
    t0 = time.perf_counter()
    out = Path(cfg.out)
    log(f"inferno-bench: {cfg.n_events} events per sample, models {','.join(cfg.models)}, "
        f"{cfg.epochs}/{cfg.inferno_epochs} epochs, {cfg.toys} toys x {len(cfg.shifts)} shifts -> {out}", flush=True)
    ss = np.random.SeedSequence(cfg.seed).spawn(2)
    events = hb.generate(cfg.n_events, seed=ss[0])
    test_events = hb.generate(cfg.n_test, seed=ss[1])
    prob = prepare(events, test_events, seed=cfg.seed, fractions=cfg.fractions, systematics=cfg.systematics,
                   mc_stat=cfg.mc_stat)
    log(f"  {len(events['label'])} + {len(test_events['label'])} events generated; signal region: training "
        f"{len(prob.train['label'])}, validation {len(prob.valid['label'])}, test (templates) "
        f"{len(prob.test['label'])}; control region {len(prob.control['label'])} "
        f"({time.perf_counter() - t0:.0f} s)", flush=True)
    trained = train_all(cfg.models, prob, cfg, log)
    summaries = make_summaries(trained, prob, cfg)
    results = {name: measure(name, s, prob, cfg, log) for name, s in summaries.items()}
    tab, cov = results_table(results)
    out.mkdir(parents=True, exist_ok=True)
    (out / "workspaces").mkdir(exist_ok=True)
    for name, r in results.items():
        spec = r["model"].to_pyhf(r["asimov"], measurement_name=f"htautau_{name}")
        (out / "workspaces" / f"{name}.json").write_text(json.dumps(spec, indent=1))
    figs: List[str] = []
    if cfg.figures:
        for which in ("tes", "jes"):
            if which in cfg.systematics:
                fig_features(prob.test, which, out / f"features_{which}.png")
                figs.append(f"features_{which}.png")
        for name, r in results.items():
            fig_templates(name, r["model"], out / f"templates_{name}.png")
            figs.append(f"templates_{name}.png")
        fig_profiles(results, out / "profiles.png")
        fig_coverage(cov, out / "coverage_vs_tes.png")
        fig_training(trained, out / "training.png")
        figs += ["profiles.png", "coverage_vs_tes.png", "training.png"]
    seeds = dict(events=f"SeedSequence({cfg.seed}).spawn(2)[0]", template_events=f"SeedSequence({cfg.seed}).spawn(2)[1]",
                 split=cfg.seed,
                 training={m: _train_seed(cfg.seed, "bce" if m == "bce_opt" else m) for m in cfg.models},
                 toys={f"{s:g}": _toy_seed(cfg.seed, j) for j, s in enumerate(cfg.shifts)})
    meta = dict(command=command or f"run({cfg!r})", seed=cfg.seed, seeds=seeds, inferno_version=__version__,
                torch_version=torch.__version__, numpy_version=np.__version__, python=platform.python_version(),
                git_commit=_git_commit(), machine=f"{platform.machine()}, {os.cpu_count()} cores",
                threads=cfg.threads, wall_s=time.perf_counter() - t0, config=asdict(cfg), figures=figs,
                training={k: dict(train_s=v["train_s"], best_epoch=v["best_epoch"], best_loss=v["best_loss"],
                                  history=v["history"], **v.get("meta", {})) for k, v in trained.items()},
                measure_s={k: r["measure_s"] for k, r in results.items()}, explain_s=None,
                sr_yields=prob.sr_yields, n_test=prob.n_test,
                parameters=results[next(iter(results))]["model"].names if results else [])
    tab.to_csv(out / "results.csv", index=False, float_format="%.5g")
    cov.to_csv(out / "coverage.csv", index=False, float_format="%.5g")
    # the measurement is on disk before the explain report (which may fail without losing it)
    _write_summary(out, tab, cov, meta)
    if cfg.explain and results:
        from ..explain import explain_report, group_by_object
        t1 = time.perf_counter()
        explain_report({n: r["merged_summary"] for n, r in results.items()}, prob.analysis, prob.dataset("test"),
                       out / "explain", feature_names=hb.PRIMARY, groups=group_by_object(hb.PRIMARY),
                       models={n: r["model"] for n, r in results.items()}, n_repeats=cfg.explain_repeats,
                       seed=cfg.seed, figures=cfg.figures, log=lambda *a, **k: None)
        meta["explain_s"] = time.perf_counter() - t1
        meta["wall_s"] = time.perf_counter() - t0
        log(f"  explained the summaries in {out / 'explain'} ({meta['explain_s']:.0f} s)", flush=True)
        _write_summary(out, tab, cov, meta)
    log(results_markdown(tab, cov, meta))
    return dict(table=tab, coverage=cov, results=results, meta=meta, out=out, trained=trained, problem=prob)


def _write_summary(out: Path, tab: Any, cov: Any, meta: Dict[str, Any]) -> None:
    """``results.md`` and ``meta.json``, each written whole (a temporary file renamed over it)."""
    for name, text in (("results.md", results_markdown(tab, cov, meta)), ("meta.json", json.dumps(meta, indent=1))):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, out / name)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Console entry point ``inferno-bench``."""
    args = list(sys.argv[1:] if argv is None else argv)
    cfg = parse_args(args)
    run(cfg, command=" ".join(["inferno-bench", *args]))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
