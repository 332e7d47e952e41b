"""``inferno-paper``: the paper's results table (de Castro & Dorigo 2019, table 2) in one command.

For every model (an NN classifier trained with binary cross-entropy, and INFERNO 0-4 trained
with the nuisances of benchmark 0-4) and several seeds, the command trains on the toy
problem, builds templates on a large test set with the r = +/-0.2 and lambda = 2.5 / 3.5
variations, and measures the expected width of the profile-likelihood interval of the signal
yield on each inference benchmark 0-4. Baselines: the optimal classifier (true density ratio,
same evaluation) and the analytical limit of the unbinned likelihood.

Outputs in ``--out``: ``results.md``, ``results.csv``, ``runs.csv`` (one row per model, seed
and benchmark), ``meta.json`` and the figures ``fig3_templates.png``, ``fig4a_training.png``,
``fig4b_profiles.png``, ``fig5_width_vs_nuisance.png``.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["main", "ReproConfig", "PAPER_TABLE", "MODEL_LABELS"]

#: Table 2 of the paper (medians), rows = model, columns = benchmark 0-4.
PAPER_TABLE: Dict[str, List[float]] = {
    "bce": [14.99, 18.94, 23.94, 21.54, 26.71],
    "inferno0": [15.51, 18.34, 23.24, 21.38, 26.38],
    "inferno1": [15.80, 16.79, 21.41, 20.29, 24.26],
    "inferno2": [15.71, 16.87, 16.95, 16.88, 18.67],
    "inferno3": [15.70, 16.91, 16.97, 16.89, 18.69],
    "inferno4": [15.71, 16.89, 16.95, 16.88, 18.68],
}
MODEL_LABELS: Dict[str, str] = {
    "bce": "NN classifier", **{f"inferno{k}": f"INFERNO {k}" for k in range(5)},
    "optimal": "Optimal classifier", "analytical": "Analytical likelihood",
}
ALL_MODELS = ("bce", "inferno0", "inferno1", "inferno2", "inferno3", "inferno4")
TEST_SEED = 987_654_321  # one test set for all models, independent of the training seeds


@dataclass
class ReproConfig:
    """Settings of a reproduction run (see ``inferno-paper --help``)."""

    seeds: List[int] = field(default_factory=lambda: list(range(10)))
    models: Tuple[str, ...] = ALL_MODELS
    epochs: int = 100
    n_train: int = 200_000
    n_val: int = 100_000
    n_test: int = 1_000_000
    bs: int = 2000
    bins: int = 10
    optimizer: str = "adam"
    lr_bce: float = 1e-3
    lr_inferno: float = 1e-3
    temperature: float = 0.1
    hidden: int = 100
    jobs: int = 1
    scan_points: int = 161
    fig5_points: int = 9
    figures: bool = True
    out: str = "paper_results"
    quick: bool = False


# ----------------------------------------------------------------------------- arguments
def _parser() -> argparse.ArgumentParser:
    d = ReproConfig()
    p = argparse.ArgumentParser(
        prog="inferno-paper", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="small sizes (20k training events, 3 seeds, 20 epochs): a few minutes "
                        "on 2 cores; explicit options still override")
    p.add_argument("--seeds", type=int, default=None,
                   help=f"number of seeds per model [{len(d.seeds)}; quick: 3]")
    p.add_argument("--first-seed", type=int, default=0, help="seeds are first-seed, first-seed+1, ...")
    p.add_argument("--models", default=",".join(d.models),
                   help="comma-separated subset of " + ",".join(ALL_MODELS))
    p.add_argument("--epochs", type=int, default=None, help=f"training epochs [{d.epochs}; quick: 20]")
    p.add_argument("--n-train", type=int, default=None,
                   help=f"training events, half signal [{d.n_train}; quick: 20000]")
    p.add_argument("--n-val", type=int, default=None,
                   help=f"validation events [{d.n_val}; quick: n-train/2]")
    p.add_argument("--n-test", type=int, default=None,
                   help=f"test events for templates [{d.n_test}; quick: 200000]")
    p.add_argument("--bs", type=int, default=d.bs, help="batch size")
    p.add_argument("--bins", type=int, default=d.bins,
                   help="bins of the summary (INFERNO outputs and classifier histogram)")
    p.add_argument("--optimizer", choices=("adam", "sgd"), default=d.optimizer)
    p.add_argument("--lr-bce", type=float, default=d.lr_bce, help="learning rate, NN classifier")
    p.add_argument("--lr-inferno", type=float, default=d.lr_inferno, help="learning rate, INFERNO")
    p.add_argument("--temperature", type=float, default=d.temperature,
                   help="softmax temperature of INFERNO in training")
    p.add_argument("--jobs", type=int, default=None,
                   help="parallel training processes (each single-threaded) [number of cores]")
    p.add_argument("--fig5-points", type=int, default=d.fig5_points,
                   help="true r and lambda values for the width-vs-nuisance figure (0: skip)")
    p.add_argument("--no-figures", action="store_true", help="skip the figures")
    p.add_argument("--out", default=None, help="output folder [paper_results; quick: paper_results_quick]")
    return p


def parse_args(argv: Optional[Sequence[str]] = None) -> ReproConfig:
    """Parse and validate the command line; errors exit before any training."""
    p = _parser()
    a = p.parse_args(argv)
    q = a.quick
    n_train = a.n_train if a.n_train is not None else (20_000 if q else 200_000)
    cfg = ReproConfig(
        seeds=list(range(a.first_seed, a.first_seed + (a.seeds if a.seeds is not None else (3 if q else 10)))),
        models=tuple(m.strip() for m in a.models.split(",") if m.strip()),
        epochs=a.epochs if a.epochs is not None else (20 if q else 100),
        n_train=n_train,
        n_val=a.n_val if a.n_val is not None else n_train // 2,
        n_test=a.n_test if a.n_test is not None else (200_000 if q else 1_000_000),
        bs=a.bs, bins=a.bins, optimizer=a.optimizer, lr_bce=a.lr_bce, lr_inferno=a.lr_inferno,
        temperature=a.temperature,
        jobs=a.jobs if a.jobs is not None else (os.cpu_count() or 1),
        fig5_points=a.fig5_points, figures=not a.no_figures,
        out=a.out if a.out is not None else ("paper_results_quick" if q else "paper_results"),
        quick=q,
    )
    problems = _validate(cfg)
    if problems:
        p.error("; ".join(problems))
    return cfg


def _validate(c: ReproConfig) -> List[str]:
    bad = []
    if a := [m for m in c.models if m not in ALL_MODELS]:
        bad.append(f"unknown model(s) {a}; choose from {list(ALL_MODELS)}")
    if not c.models:
        bad.append("--models is empty")
    if len(c.seeds) < 1:
        bad.append("--seeds must be >= 1")
    if c.epochs < 1:
        bad.append("--epochs must be >= 1")
    for name, v, lo in (("--n-train", c.n_train, 100), ("--n-val", c.n_val, 2),
                        ("--n-test", c.n_test, 1000)):
        if v < lo:
            bad.append(f"{name} must be >= {lo}, got {v}")
        elif v % 2:
            bad.append(f"{name} must be even (half signal, half background), got {v}")
    if c.bs < 1:
        bad.append(f"--bs must be >= 1, got {c.bs}")
    elif c.bs > c.n_train:
        bad.append(f"--bs {c.bs} is larger than --n-train {c.n_train}")
    if c.bins < 2:
        bad.append(f"--bins must be >= 2, got {c.bins}")
    for name, v in (("--lr-bce", c.lr_bce), ("--lr-inferno", c.lr_inferno),
                    ("--temperature", c.temperature)):
        if not (math.isfinite(v) and v > 0):
            bad.append(f"{name} must be > 0, got {v}")
    if c.jobs < 1:
        bad.append(f"--jobs must be >= 1, got {c.jobs}")
    if c.fig5_points < 0 or c.fig5_points == 1:
        bad.append(f"--fig5-points must be 0 or >= 2, got {c.fig5_points}")
    out = Path(c.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        bad.append(f"output folder {out} is not writable: {e.strerror or e}")
    return bad


# ----------------------------------------------------------------------------- models
def build_net(n_out: int, hidden: int = 100):
    """The paper's 3-100-100-n_out ReLU network (without the output activation)."""
    from torch import nn
    return nn.Sequential(nn.Linear(3, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, n_out))


def _test_set(n_test: int) -> Tuple[np.ndarray, np.ndarray]:
    from .paper import sample_background, sample_signal
    ss = np.random.SeedSequence(TEST_SEED).spawn(2)
    return (sample_signal(n_test // 2, seed=np.random.default_rng(ss[0])).astype(np.float32),
            sample_background(n_test // 2, seed=np.random.default_rng(ss[1])).astype(np.float32))


class OptimalClassifierNet:
    """Stand-in 'network' for the optimal classifier: the true f_s / (f_s + f_b) at nominal."""

    def __new__(cls):
        import torch
        from torch import nn

        from .paper import background_log_prob, signal_log_prob

        class _Opt(nn.Module):
            def forward(self, x: torch.Tensor) -> torch.Tensor:
                x64 = x.double()
                return torch.sigmoid(signal_log_prob(x64) - background_log_prob(x64))[:, None]

        return _Opt()


def _bin_index(pred: np.ndarray, kind: str, bins: int) -> np.ndarray:
    """Bin index per event: argmax for INFERNO, uniform bins of the signal probability else."""
    if kind == "argmax":
        return pred.reshape(len(pred), -1).argmax(1) if pred.ndim > 1 and pred.shape[1] > 1 \
            else pred.reshape(-1).astype(np.int64)
    prob = pred.reshape(-1)
    return np.clip((prob * bins).astype(np.int64), 0, bins - 1)


def model_templates(wrapper, kind: str, bins: int, x_sig: np.ndarray, x_bkg: np.ndarray,
                    r_vals: Tuple[float, float] = (-0.2, 0.2),
                    l_vals: Tuple[float, float] = (2.5, 3.5)) -> Dict[str, Any]:
    """Nominal signal/background templates and the r, lambda up/down background templates."""
    from .inference import get_paper_syst_shapes
    return get_paper_syst_shapes(wrapper, x_sig, x_bkg, kind=kind, bins=bins,
                                 r_vals=r_vals, l_vals=l_vals)
