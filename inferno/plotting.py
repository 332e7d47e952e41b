"""Matplotlib figures for summaries, templates, training curves and likelihood scans.

Every function takes plain numbers (numpy arrays, dicts), returns the ``Figure`` and, when
``path`` is given, saves it there (and closes it). Nothing here trains or fits.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = ["plot_likelihood_scans", "plot_templates", "plot_training_history",
           "plot_width_vs_nuisance"]

PathLike = Union[str, Path, None]


def _plt():
    """``matplotlib.pyplot``, imported on first use. The backend is left as the user (or
    matplotlib's own fallback to Agg on a machine without a display) chose it: an inline
    Jupyter backend or an interactive window keeps working."""
    import matplotlib.pyplot as plt
    return plt


def _finish(fig, path: PathLike):
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
        _plt().close(fig)
    return fig


def _mplhep():
    """``mplhep``, imported when a HEP-style figure is asked for."""
    try:
        import mplhep
    except ImportError as e:
        raise ImportError("hep_style=True needs mplhep: pip install 'inferno[hist]' (or pip install mplhep)") from e
    return mplhep


def _hep_option(fn):
    """Run a figure function in mplhep's CMS-like style when called with ``hep_style=True``
    (a local style context: matplotlib's global settings are left alone)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if not kwargs.get("hep_style", False):
            return fn(*args, **kwargs)
        with _plt().style.context(_mplhep().style.CMS):
            return fn(*args, **kwargs)
    return wrapper


def _stairs(ax, hep_style: bool, values, edges, **kw):
    """``ax.stairs``, or mplhep's ``histplot`` with ``hep_style``."""
    if hep_style:
        return _mplhep().histplot(np.asarray(values, dtype=float), edges, ax=ax, **kw)
    return ax.stairs(values, edges, **kw)


@_hep_option
def plot_likelihood_scans(scans: Mapping[str, Tuple[np.ndarray, np.ndarray]],
                          title: str = "", mu_true: Optional[float] = None,
                          path: PathLike = None, *, hep_style: bool = False):
    r"""Profile-likelihood curves :math:`\Delta\mathrm{NLL}(\mu)` (paper fig. 4b).

    Args:
        scans: label -> (mu_scan, nll) with the NLL at each scan point (any offset; the
            minimum is subtracted).
        mu_true: draws a vertical line there.
        hep_style: mplhep's CMS-like style (needs ``inferno[hist]``); default plain matplotlib.
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for label, (mu, nll) in scans.items():
        nll = np.asarray(nll, dtype=float)
        ax.plot(mu, nll - np.nanmin(nll), label=label)
    ax.axhline(0.5, color="grey", ls="--", lw=1, label=r"$\Delta$NLL = 0.5")
    if mu_true is not None:
        ax.axvline(mu_true, color="grey", ls=":", lw=1)
    ax.set_xlabel(r"signal yield $s$")
    ax.set_ylabel(r"$\Delta$ NLL")
    ax.set_ylim(0, 3)
    ax.set_title(title)
    ax.legend()
    return _finish(fig, path)


@_hep_option
def plot_templates(f_s: np.ndarray, f_b: np.ndarray,
                   variations: Mapping[str, Tuple[np.ndarray, np.ndarray]],
                   title: str = "", s: float = 1.0, b: float = 1.0,
                   path: PathLike = None, *, hep_style: bool = False, by_purity: bool = True):
    """Signal and background templates with the up/down background variations (paper fig. 3).

    Args:
        f_s, f_b: nominal normalised templates (one value per bin).
        variations: nuisance label -> (f_b_up, f_b_dw).
        s, b: scale the templates to expected counts.
        hep_style: draw with mplhep's ``histplot`` in its CMS-like style (needs
            ``inferno[hist]``); default plain matplotlib.
        by_purity: show the bins in the order of their signal purity (:func:`purity_order`;
            the learned bins of a summary such as INFERNO's are categories with no order),
            else in their index order.
    """
    plt = _plt()
    f_s, f_b = np.asarray(f_s, dtype=float), np.asarray(f_b, dtype=float)
    if by_purity:
        order = purity_order(s * f_s, s * f_s + b * f_b)
        f_s, f_b = f_s[order], f_b[order]
        variations = {k: (np.asarray(u)[order], np.asarray(d)[order]) for k, (u, d) in variations.items()}
    n = len(f_s)
    edges = np.arange(n + 1)
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    _stairs(ax, hep_style, s * np.asarray(f_s), edges, label="signal", color="tab:blue", lw=2)
    _stairs(ax, hep_style, b * np.asarray(f_b), edges, label="background", color="black", lw=2)
    colours = ["tab:red", "tab:green", "tab:purple", "tab:orange"]
    for (label, (up, dw)), c in zip(variations.items(), colours):
        _stairs(ax, hep_style, b * np.asarray(up), edges, color=c, ls="--", label=f"{label} up")
        _stairs(ax, hep_style, b * np.asarray(dw), edges, color=c, ls=":", label=f"{label} down")
    ax.set_yscale("log")
    ax.set_xlabel(PURITY_LABEL if by_purity else "bin")
    ax.set_ylabel("expected events" if (s != 1 or b != 1) else "fraction")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _finish(fig, path)


def plot_training_history(histories: Mapping[str, Mapping[str, Sequence[float]]],
                          title: str = "", logy: bool = False, path: PathLike = None):
    """Training (dashed) and validation (solid) loss per epoch (paper fig. 4a).

    Args:
        histories: label -> {'train': [...], 'valid': [...]}.
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for i, (label, h) in enumerate(histories.items()):
        c = f"C{i % 10}"
        if h.get("train"):
            ax.plot(np.arange(1, len(h["train"]) + 1), h["train"], ls="--", color=c)
        if h.get("valid"):
            ax.plot(np.arange(1, len(h["valid"]) + 1), h["valid"], color=c, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (solid: validation, dashed: training)")
    if logy:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.legend()
    return _finish(fig, path)


def plot_width_vs_nuisance(values: Dict[str, np.ndarray],
                           widths: Dict[str, Dict[str, np.ndarray]],
                           title: str = "", path: PathLike = None):
    """Expected width of the POI interval against the true value of each nuisance (fig. 5).

    Args:
        values: nuisance label -> true values scanned.
        widths: nuisance label -> {model label -> widths at those values}.
    """
    plt = _plt()
    fig, axes = plt.subplots(1, len(values), figsize=(5.5 * len(values), 4.2), squeeze=False)
    for ax, (name, vals) in zip(axes[0], values.items()):
        for label, w in widths[name].items():
            ax.plot(vals, w, marker="o", ms=3, label=label)
        ax.set_xlabel(f"true {name}")
        ax.set_ylabel(r"expected width $\sigma_s$")
        ax.legend()
    fig.suptitle(title)
    return _finish(fig, path)


# ----------------------------------------------------------------------------- inferno.explain's figures
#: the axis label of every figure whose bins are ordered by :func:`purity_order`
PURITY_LABEL = "learned bins ordered by signal purity (signal / total expected, ascending)"


def purity_order(signal: Sequence[float], total: Sequence[float]) -> np.ndarray:
    """The order of the bins by signal purity, ``signal / total`` expected counts, ascending
    (stable: ties keep their order; a bin with no expected events counts as purity 0), so
    that the signal-rich bins come last.

    Raises:
        ValueError: arrays of different lengths, NaN, negative totals.
    """
    s = np.asarray(signal, dtype=np.float64).reshape(-1)
    t = np.asarray(total, dtype=np.float64).reshape(-1)
    if s.shape != t.shape:
        raise ValueError(f"signal and total must have one value per bin, got {s.shape} and {t.shape}")
    if not (np.all(np.isfinite(s)) and np.all(np.isfinite(t))) or np.any(t < 0):
        raise ValueError("signal and total must be finite, total >= 0")
    with np.errstate(divide="ignore", invalid="ignore"):
        purity = np.where(t > 0, s / np.where(t > 0, t, 1.0), 0.0)
    return np.argsort(purity, kind="stable")


def _purity_axis(ax, order: np.ndarray, signal: np.ndarray, total: np.ndarray, axis: str = "x") -> None:
    """Tick labels ``bin (purity)`` in the purity order, and :data:`PURITY_LABEL`."""
    with np.errstate(divide="ignore", invalid="ignore"):
        pur = np.where(total > 0, signal / np.where(total > 0, total, 1.0), 0.0)
    labels = [f"{int(b)}\n{pur[b]:.2g}" if axis == "x" else f"{int(b)} ({pur[b]:.2g})" for b in order]
    pos = np.arange(len(order))
    if axis == "x":
        ax.set_xticks(pos, labels, fontsize=7)
        ax.set_xlabel(PURITY_LABEL + "\nbin index / purity")
    else:
        ax.set_yticks(pos, labels, fontsize=7)
        ax.set_ylabel(PURITY_LABEL)


def plot_importance(importance: Mapping[str, Mapping[str, Tuple[float, float]]], title: str = "",
                    xlabel: str = r"increase of the expected $\sigma(\mu)$ when shuffled", path: PathLike = None):
    """Permutation importance as horizontal bars with error bars: one panel per summary,
    features sorted by their largest importance.

    Args:
        importance: summary -> {feature: (mean, std)}.
    """
    return _bar_panels({k: {f: v[0] for f, v in vals.items()} for k, vals in importance.items()},
                       {k: {f: v[1] for f, v in vals.items()} for k, vals in importance.items()},
                       title, xlabel, path, dict(color="tab:blue", alpha=0.8, capsize=2), absolute=True)


def _heat(ax, m: np.ndarray, cmap: str = "RdBu_r"):
    finite = np.abs(m[np.isfinite(m)])
    v = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    return ax.imshow(m, aspect="auto", cmap=cmap, vmin=-v, vmax=v, interpolation="nearest")


def plot_attribution_map(matrix: np.ndarray, feature_names: Sequence[str], signal: Sequence[float],
                         total: Sequence[float], title: str = "", label: str = "mean attribution",
                         path: PathLike = None):
    """Heat map of attributions, feature x bin (``matrix`` ``(n_features, n_bins)``, e.g.
    :func:`inferno.explain.attribution_matrix`), the bins in :func:`purity_order` of the
    expected ``signal`` and ``total`` counts per bin."""
    return _bin_heat_map(matrix, feature_names, "n_features", signal, total, title, label, path, 3.0, 0.3, 8)


def plot_nuisance_map(matrix: np.ndarray, row_labels: Sequence[str], signal: Sequence[float],
                      total: Sequence[float], title: str = "",
                      label: str = r"relative shift per unit of $\alpha$", path: PathLike = None):
    """Heat map of the relative shifts of the templates, (nuisance, process) x bin
    (``matrix`` ``(n_rows, n_bins)``), the bins in :func:`purity_order`."""
    return _bin_heat_map(matrix, row_labels, "n_rows", signal, total, title, label, path, 3.5, 0.28, 7)


def _bin_heat_map(matrix: np.ndarray, rows: Sequence[str], what: str, signal: Sequence[float],
                  total: Sequence[float], title: str, label: str, path: PathLike, width: float,
                  row_height: float, fontsize: int):
    """A (row x bin) heat map with the bins in :func:`purity_order`, its colour bar and axes."""
    plt = _plt()
    m = np.asarray(matrix, dtype=float)
    s, t = np.asarray(signal, dtype=float), np.asarray(total, dtype=float)
    if m.ndim != 2 or m.shape[0] != len(rows) or m.shape[1] != len(s):
        raise ValueError(f"matrix must have shape ({what}={len(rows)}, n_bins={len(s)}), got {m.shape}")
    order = purity_order(s, t)
    fig, ax = plt.subplots(figsize=(0.55 * len(s) + width, row_height * len(rows) + 1.8))
    im = _heat(ax, m[:, order])
    ax.set_yticks(np.arange(len(rows)), list(rows), fontsize=fontsize)
    _purity_axis(ax, order, s, t)
    fig.colorbar(im, ax=ax, label=label)
    ax.set_title(title)
    return _finish(fig, path)


def plot_ranking(rankings: Mapping[str, Mapping[str, float]], title: str = "",
                 xlabel: str = r"impact on $\sigma(\mu)$: $\sigma$ - $\sigma$(nuisance fixed)", path: PathLike = None):
    """Ranking of the systematics: horizontal bars of each nuisance's impact, one panel per
    summary, sorted by the largest impact.

    Args:
        rankings: summary -> {nuisance: impact}.
    """
    return _bar_panels(rankings, None, title, xlabel, path, dict(color="tab:orange", alpha=0.85), absolute=False)


def _bar_panels(values: Mapping[str, Mapping[str, float]], errors: Optional[Mapping[str, Mapping[str, float]]],
                title: str, xlabel: str, path: PathLike, style: Mapping[str, Any], absolute: bool):
    """Horizontal bars, one panel per summary (``values``: summary -> {row: value}), the rows
    shared and sorted by their largest value (``absolute``: of its magnitude) across panels."""
    plt = _plt()
    n = max(len(values), 1)
    rows = list(dict.fromkeys(k for v in values.values() for k in v))
    top = {k: max(abs(v[k]) if absolute else v[k] for v in values.values() if k in v) for k in rows}
    rows.sort(key=lambda k: top[k])
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 0.3 * len(rows) + 1.6), squeeze=False, sharey=True)
    for ax, (name, vals) in zip(axes[0], values.items()):
        err = None if errors is None else np.array([errors[name].get(k, np.nan) for k in rows], dtype=float)
        ax.barh(np.arange(len(rows)), np.array([vals.get(k, np.nan) for k in rows], dtype=float), xerr=err, **style)
        if errors is not None:
            ax.axvline(0, color="grey", lw=0.8)
        ax.set_title(name)
        ax.set_xlabel(xlabel, fontsize=8)
    axes[0][0].set_yticks(np.arange(len(rows)), rows, fontsize=8)
    if title:
        fig.suptitle(title)
    return _finish(fig, path)


__all__ += ["purity_order", "PURITY_LABEL", "plot_importance", "plot_attribution_map", "plot_nuisance_map",
            "plot_ranking"]
