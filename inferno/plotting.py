"""Matplotlib figures for summaries, templates, training curves and likelihood scans.

Every function takes plain numbers (numpy arrays, dicts), returns the ``Figure`` and, when
``path`` is given, saves it there (and closes it). Nothing here trains or fits.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

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
                   path: PathLike = None, *, hep_style: bool = False):
    """Signal and background templates with the up/down background variations (paper fig. 3).

    Args:
        f_s, f_b: nominal normalised templates (one value per bin).
        variations: nuisance label -> (f_b_up, f_b_dw).
        s, b: scale the templates to expected counts.
        hep_style: draw with mplhep's ``histplot`` in its CMS-like style (needs
            ``inferno[hist]``); default plain matplotlib.
    """
    plt = _plt()
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
    ax.set_xlabel("bin")
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
