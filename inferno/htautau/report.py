"""``inferno-bench``: the results table and the figures."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any, Dict, Tuple

import numpy as np
import torch

from .. import htautau as hb
from ..plotting import PURITY_LABEL, purity_order

#: the models (``--models``): trained networks, and ``bce_opt`` (the ``bce`` network, its bin edges
#: optimised); new ones go last (a model's training seed is its index here)
MODELS: Tuple[str, ...] = ("bce", "multiclass", "inferno", "bce_opt", "bce_aug", "pivot")
#: the summaries measured (and the model each comes from)
SUMMARIES: Dict[str, str] = {"bce": "bce", "multiclass": "multiclass", "multiclass_argmax": "multiclass",
                             "inferno": "inferno", "bce_opt": "bce_opt", "bce_aug": "bce_aug", "pivot": "pivot"}
LABELS: Dict[str, str] = {"bce": "BCE classifier", "multiclass": "multiclass (signal prob.)",
                          "multiclass_argmax": "multiclass (argmax)", "inferno": "INFERNO",
                          "bce_opt": "BCE, optimised bin edges", "bce_aug": "BCE, syst. augmentation",
                          "pivot": "pivot (adversary on tes, jes)"}
#: the nominal coverage of a 68.27% interval
ONE_SIGMA = 0.6827


# ----------------------------------------------------------------------------- reporting
def results_table(results: Dict[str, Dict[str, Any]]):
    """Per-summary rows (pandas) and per-summary-and-shift rows."""
    import pandas as pd

    rows, cov = [], []
    for name, r in results.items():
        row = dict(summary=name, label=LABELS[name], n_bins=r["n_bins"], width=r["width"],
                   sigma_hessian=r["sigma_hessian"], sigma_stat=r["sigma_stat"])
        for t in r["toys"]:
            row[f"coverage_tes{t['shift']:+g}"] = t["coverage"]
        row.update(toy_coverage=r["toy_coverage"], toy_mean_width=r["toy_mean_width"], score=r["score"])
        rows.append(row)
        cov += [{k: v for k, v in t.items() if not k.startswith("_")} for t in r["toys"]]
    return pd.DataFrame(rows), pd.DataFrame(cov)


def results_markdown(tab, cov, meta: Dict[str, Any]) -> str:
    shifts = sorted(set(cov["shift"])) if len(cov) else []
    lines = ["# inferno-bench: BCE vs multiclass vs INFERNO on the H -> tau tau-like benchmark", "",
             "Expected uncertainty of the signal strength mu (true mu = 1): the half width of the 68% "
             "profile-likelihood interval on Asimov data with every nuisance profiled (sigma), the Hessian "
             "uncertainty and the statistics-only one (nuisances fixed); then pseudo-experiments with the tau "
             "energy scale truly shifted by the given standard deviations while its auxiliary measurement stays "
             "at the nominal value: coverage of the 68% interval per shift, over all shifts, the mean half "
             "width, and the HiggsML uncertainty challenge's score -ln((mean full width + 1e-3) f(coverage)) "
             "(higher is better).", "",
             "| summary | bins | sigma (Asimov) | Hessian | stat. only | "
             + " | ".join(f"coverage TES {s:+g}" for s in shifts) + " | coverage (all) | mean width | score |",
             "|---|---|---|---|---|" + "---|" * len(shifts) + "---|---|---|"]
    for _, r in tab.iterrows():
        cells = [r["label"], str(int(r["n_bins"])), f"{r['width']:.4f}", f"{r['sigma_hessian']:.4f}",
                 f"{r['sigma_stat']:.4f}"]
        cells += [f"{r[f'coverage_tes{s:+g}']:.3f}" for s in shifts]
        cells += [f"{r['toy_coverage']:.3f}", f"{r['toy_mean_width']:.4f}", f"{r['score']:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    n = int(cov["n_toys"].iloc[0]) if len(cov) else 0
    lines += ["", f"Coverage: {n} pseudo-experiments per summary and shift (binomial error "
              f"{math.sqrt(ONE_SIGMA * (1 - ONE_SIGMA) / max(n, 1)):.3f} at 68%).", "",
              "## Run", "",
              f"- command: `{meta['command']}`",
              f"- seed: {meta['seed']}",
              f"- inferno {meta['inferno_version']} (commit {meta['git_commit']}), torch {meta['torch_version']}, "
              f"numpy {meta['numpy_version']}, python {meta['python']}",
              f"- wall time: {meta['wall_s'] / 60:.1f} min on {meta['machine']} (torch threads: {meta['threads']})",
              "- training: " + ", ".join(_training_note(k, v) for k, v in meta["training"].items()),
              f"- settings: {json.dumps(meta['config'])}", ""]
    return "\n".join(lines)


def _training_note(name: str, t: Dict[str, Any]) -> str:
    if name == "bce_opt":
        return (f"bce_opt edges {t['train_s']:.0f} s ({t['best_epoch']} sweeps, validation sigma "
                f"{t['sigma_valid_start']:.4f} -> {t['sigma_valid']:.4f})")
    if name == "pivot":
        return (f"pivot {t['train_s']:.0f} s for lambda in {t['lambdas']} (kept {t['lam']:g}, best epoch "
                f"{t['best_epoch']})")
    return f"{name} {t['train_s']:.0f} s (best epoch {t['best_epoch']})"


def _plt():
    import matplotlib
    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def fig_features(events: Dict[str, np.ndarray], which: str, path: Path) -> None:
    """Distributions of the features the tau (jet) energy scale moves, for the signal and
    Z -> tau tau at nominal and +-1 sigma, with the ratio to nominal."""
    plt = _plt()
    obj = "tau" if which == "tes" else "jet"
    feats = list(hb.FEATURE_DEPENDENCE[which])[:6]
    es = hb.EnergyScale(obj)
    prim = torch.from_numpy(events["primary"])
    with torch.no_grad():
        var = {a: (events["features"] if a == 0 else hb.features(es(prim, float(a))).numpy()) for a in (-1, 0, 1)}
    fig = plt.figure(figsize=(13, 8.5))
    gs = fig.add_gridspec(5, 3, height_ratios=[3, 1, 0.9, 3, 1], hspace=0.08, wspace=0.25)
    procs = [("htautau", "tab:red"), ("ztautau", "tab:blue")]
    for i, feat in enumerate(feats):
        r, c = 3 * (i // 3), i % 3
        ax, axr = fig.add_subplot(gs[r, c]), fig.add_subplot(gs[r + 1, c])
        j = hb.FEATURES.index(feat)
        x0 = var[0][:, j]
        lo, hi = np.quantile(x0, [0.005, 0.99])
        edges = np.linspace(lo, hi, 31)
        for proc, col in procs:
            m = events["label"] == hb.LABELS[proc]
            w = events["weight"][m]
            h = {a: np.histogram(np.clip(var[a][m, j], lo, hi), edges, weights=w)[0] for a in (-1, 0, 1)}
            norm = h[0].sum()
            ax.stairs(h[0] / norm, edges, color=col, lw=1.8, label=f"{proc}")
            ax.stairs(h[1] / norm, edges, color=col, lw=1, ls="--", label=f"{proc} +1$\\sigma$")
            ax.stairs(h[-1] / norm, edges, color=col, lw=1, ls=":", label=f"{proc} -1$\\sigma$")
            with np.errstate(divide="ignore", invalid="ignore"):
                axr.stairs(np.where(h[0] > 0, h[1] / h[0], np.nan), edges, color=col, ls="--")
                axr.stairs(np.where(h[0] > 0, h[-1] / h[0], np.nan), edges, color=col, ls=":")
        axr.axhline(1, color="grey", lw=0.8)
        axr.set_ylim(0.8, 1.2)
        ax.set_xticklabels([])
        axr.set_xlabel(feat)
        if i == 0:
            ax.legend(fontsize=7)
            ax.set_ylabel("fraction")
            axr.set_ylabel("var./nom.")
    title = ("tau energy scale (3% per sigma)" if which == "tes" else "jet energy scale (4% per sigma)")
    fig.suptitle(f"Signal-region features moved by the {title}: exact transform of the primary objects")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def fig_templates(name: str, model, path: Path) -> None:
    """The learned channel of a summary: stacked expected counts, and each process's template
    with its tau energy scale (and, for ttbar, modelling) variations."""
    plt = _plt()
    sl = model.channel_bins["signal"]
    samples = [s for ch, s in model.samples if ch == "signal"]
    idx = [i for i, (ch, _) in enumerate(model.samples) if ch == "signal"]

    def counts(**p):
        return model.expected_by_sample(model.params(**p)).numpy()[idx][:, sl]

    def ordered(**p):
        return counts(**p)[:, order]

    sig = [i for i, s in enumerate(samples) if s == hb.SIGNAL]
    # the learned bins are categories: shown in the order of their signal purity (signal-rich last)
    order = purity_order(counts()[sig].sum(0), counts().sum(0))
    nom = counts()[:, order]
    n = nom.shape[1]
    edges = np.arange(n + 1)
    fig, axes = plt.subplots(1, len(samples) + 1, figsize=(4 * (len(samples) + 1), 3.8))
    bottom = np.zeros(n)
    for i, s in enumerate(samples):
        axes[0].bar(edges[:-1], nom[i], bottom=bottom, width=1, align="edge", label=s, alpha=0.8)
        bottom += nom[i]
    axes[0].set_yscale("log")
    axes[0].set_title(f"{LABELS[name]}: expected counts")
    axes[0].set_xlabel(PURITY_LABEL)
    axes[0].legend(fontsize=7)
    has = set(model.names)
    for i, s in enumerate(samples):
        ax = axes[i + 1]
        ax.stairs(nom[i], edges, color="black", lw=1.8, label="nominal")
        for par, col in (("tes", "tab:red"), ("ttbar_model", "tab:green")):
            if par not in has or (par == "ttbar_model" and s != "ttbar"):
                continue
            ax.stairs(ordered(**{par: 1.0})[i], edges, color=col, ls="--", label=f"{par} +1")
            ax.stairs(ordered(**{par: -1.0})[i], edges, color=col, ls=":", label=f"{par} -1")
        ax.set_title(s)
        ax.set_xlabel(PURITY_LABEL)
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fig_profiles(results: Dict[str, Dict[str, Any]], path: Path) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    widths = sorted(r["width"] for r in results.values() if math.isfinite(r["width"]))
    for ax in axes:
        for name, r in results.items():
            mu, nll = (np.asarray(v, dtype=float) for v in r["scan"])
            ax.plot(mu, nll - np.nanmin(nll), label=f"{LABELS[name]} ($\\sigma$ = {r['width']:.3f})")
        ax.axhline(0.5, color="grey", ls="--", lw=1)
        ax.axvline(1.0, color="grey", ls=":", lw=1)
        ax.set_ylim(0, 3)
        ax.set_xlabel(r"signal strength $\mu$")
        ax.set_ylabel(r"$\Delta$NLL (profiled, Asimov)")
    if widths:
        axes[1].set_xlim(1 - 3 * widths[0], 1 + 3 * widths[0])
    axes[0].set_title("Profile likelihood of $\\mu$, all nuisances profiled")
    axes[1].set_title("zoom: +-3 sigma of the narrowest")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fig_coverage(cov, path: Path) -> None:
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, (name, sub) in enumerate(cov.groupby("summary", sort=False)):
        sub = sub.sort_values("shift")
        a1.errorbar(sub["shift"] + 0.04 * (i - 1.5), sub["coverage"], yerr=sub["coverage_error"], marker="o",
                    ms=4, capsize=2, label=LABELS[name])
        a2.plot(sub["shift"], sub["mean_width"], marker="o", ms=4, label=LABELS[name])
    n = int(cov["n_toys"].max()) if len(cov) else 1
    s = math.sqrt(ONE_SIGMA * (1 - ONE_SIGMA) / max(n, 1))
    a1.axhspan(ONE_SIGMA - 2 * s, ONE_SIGMA + 2 * s, color="grey", alpha=0.2, label="68.3% $\\pm 2\\sigma_{68}$")
    a1.axhline(ONE_SIGMA, color="grey", lw=1)
    a1.set_xlabel("true tau energy scale (standard deviations; auxiliary measurement at 0)")
    a1.set_ylabel("coverage of the 68% interval")
    a1.legend(fontsize=8)
    a2.set_xlabel("true tau energy scale (standard deviations)")
    a2.set_ylabel(r"mean half width of the interval of $\mu$")
    a2.set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fig_training(trained: Dict[str, Dict[str, Any]], path: Path) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, len(trained), figsize=(4.5 * len(trained), 3.6), squeeze=False)
    for ax, (name, t) in zip(axes[0], trained.items()):
        h = t["history"]
        if name == "bce_opt":  # no training: the bin edges' coordinate descent
            tr = h["sigma_valid"]
            ax.plot(np.arange(len(tr)), tr, marker="o", label="validation")
            ax.set_title(f"{name}: bin edges")
            ax.set_xlabel("sweep (0: bce's edges)")
            ax.set_ylabel(r"expected $\sigma(\mu)$, all profiled")
            ax.legend(fontsize=8)
            continue
        ax.plot(np.arange(1, len(h["train"]) + 1), h["train"], ls="--", label="training")
        ax.plot(np.arange(1, len(h["valid"]) + 1), h["valid"], label="validation")
        ax.axvline(t["best_epoch"], color="grey", ls=":", lw=1)
        ax.set_title(name if name != "pivot" else f"pivot (lambda {t['meta']['lam']:g}): BCE - lambda L_adv")
        ax.set_xlabel("epoch")
        ax.set_ylabel("INFERNO loss (var. of mu)" if name == "inferno" else "weighted cross-entropy")
        if name == "inferno":
            ax.set_yscale("log")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
