"""The toy problem of the paper (:mod:`inferno.paper`): its constants, seeded samplers, true
densities (numpy, and torch log-densities), the Bayes-optimal classifier and the data sets."""
from __future__ import annotations

import math
from typing import Optional, Tuple, Union

import numpy as np
import torch
from scipy.special import expit
from torch import Tensor

from ..data import DataPair, DataSet, WeightedDataLoader

__all__ = ["PAPER_S", "PAPER_B", "PAPER_R", "PAPER_L", "PAPER_PARAMS", "sample_signal", "sample_background", "signal_pdf", "background_pdf", "signal_log_prob", "background_log_prob", "optimal_classifier", "get_paper_data"]

#: Nominal expected signal yield.
PAPER_S: float = 50.0
#: Nominal expected background yield.
PAPER_B: float = 1000.0
#: Nominal shift of the background mean in :math:`x_0` (the mean is :math:`2 + r`).
PAPER_R: float = 0.0
#: Nominal rate of the background exponential in :math:`x_2`.
PAPER_L: float = 3.0
#: Order of the parameters in :func:`paper_fisher_information`.
PAPER_PARAMS: Tuple[str, ...] = ("s", "r", "l", "b")

_SIG_RATE = 2.0            # rate of the signal exponential in x2
_BKG_MU0 = 2.0             # background mean in x0 at r = 0
_BKG_VAR0, _BKG_VAR1 = 5.0, 9.0
_LOG_2PI = math.log(2.0 * math.pi)

Seed = Union[None, int, np.random.Generator, np.random.SeedSequence]


# ---------------------------------------------------------------------------- validation
def _check_n(n: int, name: str = "n", minimum: int = 0) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {n!r}")
    return int(n)


def _check_lam(lam: float, name: str = "lam") -> float:
    lam = float(lam)
    if not math.isfinite(lam) or lam <= 0:
        raise ValueError(f"{name} (the background exponential rate) must be finite and > 0, "
                         f"got {lam}")
    return lam


def _check_r(r: float) -> float:
    r = float(r)
    if not math.isfinite(r):
        raise ValueError(f"r must be finite, got {r}")
    return r


def _check_x(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 3:
        raise ValueError(f"x must have shape (n, 3), got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("x contains NaN or inf")
    return x


def _rng(seed: Seed) -> np.random.Generator:
    return np.random.default_rng(seed)


# ---------------------------------------------------------------------------- samplers
def sample_signal(n: int, seed: Seed = None) -> np.ndarray:
    r"""Draw ``n`` signal events: :math:`(x_0, x_1) \sim \mathcal{N}(0, I_2)`,
    :math:`x_2 \sim \mathrm{Exp}(\text{rate } 2)`.

    Args:
        n: number of events (>= 0).
        seed: an integer, a ``numpy.random.Generator`` (advanced in place) or None (fresh
            entropy).

    Returns:
        float64 array of shape (n, 3).
    """
    n = _check_n(n)
    rng = _rng(seed)
    x01 = rng.standard_normal((n, 2))
    x2 = rng.exponential(1.0 / _SIG_RATE, n)
    return np.column_stack([x01, x2])


def sample_background(n: int, r: float = PAPER_R, lam: float = PAPER_L,
                      seed: Seed = None) -> np.ndarray:
    r"""Draw ``n`` background events: :math:`x_0 \sim \mathcal{N}(2 + r, 5)`,
    :math:`x_1 \sim \mathcal{N}(0, 9)` (variances), :math:`x_2 \sim \mathrm{Exp}(\lambda)`.

    Args:
        n: number of events (>= 0).
        r: shift of the mean of :math:`x_0`.
        lam: rate :math:`\lambda > 0` of the exponential in :math:`x_2` (mean :math:`1/\lambda`).
        seed: an integer, a ``numpy.random.Generator`` (advanced in place) or None.

    Returns:
        float64 array of shape (n, 3).
    """
    n, r, lam = _check_n(n), _check_r(r), _check_lam(lam)
    rng = _rng(seed)
    x0 = _BKG_MU0 + r + math.sqrt(_BKG_VAR0) * rng.standard_normal(n)
    x1 = math.sqrt(_BKG_VAR1) * rng.standard_normal(n)
    x2 = rng.exponential(1.0 / lam, n)
    return np.column_stack([x0, x1, x2])


# ---------------------------------------------------------------------------- densities
def _signal_log_pdf(x: np.ndarray) -> np.ndarray:
    x0, x1, x2 = x[:, 0], x[:, 1], x[:, 2]
    out = -_LOG_2PI - 0.5 * (x0 ** 2 + x1 ** 2) + math.log(_SIG_RATE) - _SIG_RATE * x2
    return np.where(x2 >= 0, out, -np.inf)


def _background_log_pdf(x: np.ndarray, r: float, lam: float) -> np.ndarray:
    x0, x1, x2 = x[:, 0], x[:, 1], x[:, 2]
    out = (-_LOG_2PI - 0.5 * math.log(_BKG_VAR0 * _BKG_VAR1)
           - 0.5 * (x0 - _BKG_MU0 - r) ** 2 / _BKG_VAR0 - 0.5 * x1 ** 2 / _BKG_VAR1
           + math.log(lam) - lam * x2)
    return np.where(x2 >= 0, out, -np.inf)


def signal_pdf(x: np.ndarray) -> np.ndarray:
    r"""Signal density :math:`f_s(x) = \phi(x_0)\,\phi(x_1)\; 2 e^{-2 x_2}` (0 for
    :math:`x_2 < 0`), with :math:`\phi` the standard normal density.

    Args:
        x: array of shape (n, 3).

    Returns:
        float64 array of shape (n,).
    """
    return np.exp(_signal_log_pdf(_check_x(x)))


def background_pdf(x: np.ndarray, r: float = PAPER_R, lam: float = PAPER_L) -> np.ndarray:
    r"""Background density
    :math:`f_b(x; r, \lambda) = \mathcal{N}(x_0 \mid 2 + r, 5)\,\mathcal{N}(x_1 \mid 0, 9)\;
    \lambda e^{-\lambda x_2}` (0 for :math:`x_2 < 0`; the second arguments of
    :math:`\mathcal{N}` are variances).

    Args:
        x: array of shape (n, 3).
        r: shift of the mean of :math:`x_0`.
        lam: rate of the exponential in :math:`x_2`.

    Returns:
        float64 array of shape (n,).
    """
    return np.exp(_background_log_pdf(_check_x(x), _check_r(r), _check_lam(lam)))


def _check_tensor_x(x: Tensor) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 2 or x.shape[1] != 3:
        raise ValueError(f"x must have shape (n, 3), got {tuple(x.shape)}")


def signal_log_prob(x: Tensor) -> Tensor:
    r""":math:`\log f_s(x)` for a torch tensor ``x`` of shape (n, 3) (autograd-friendly).

    Events are assumed to have :math:`x_2 \ge 0` (not checked, to stay graph-friendly).
    """
    _check_tensor_x(x)
    x0, x1, x2 = x[:, 0], x[:, 1], x[:, 2]
    return -_LOG_2PI - 0.5 * (x0 ** 2 + x1 ** 2) + math.log(_SIG_RATE) - _SIG_RATE * x2


def background_log_prob(x: Tensor, r: Union[float, Tensor] = PAPER_R,
                        lam: Union[float, Tensor] = PAPER_L) -> Tensor:
    r""":math:`\log f_b(x; r, \lambda)` for a torch tensor ``x`` of shape (n, 3).

    ``r`` and ``lam`` may be tensors requiring grad, e.g. to get the scores
    :math:`\partial_r \log f_b = (x_0 - 2 - r)/5` and
    :math:`\partial_\lambda \log f_b = 1/\lambda - x_2` by autograd. Events are assumed to
    have :math:`x_2 \ge 0`.
    """
    _check_tensor_x(x)
    x0, x1, x2 = x[:, 0], x[:, 1], x[:, 2]
    lam_t = torch.as_tensor(lam, dtype=x.dtype, device=x.device)
    return (-_LOG_2PI - 0.5 * math.log(_BKG_VAR0 * _BKG_VAR1)
            - 0.5 * (x0 - _BKG_MU0 - r) ** 2 / _BKG_VAR0 - 0.5 * x1 ** 2 / _BKG_VAR1
            + torch.log(lam_t) - lam_t * x2)


def optimal_classifier(x: np.ndarray, r: float = PAPER_R, lam: float = PAPER_L) -> np.ndarray:
    r"""Bayes-optimal classifier for balanced classes,
    :math:`c(x) = f_s(x) / (f_s(x) + f_b(x; r, \lambda))` (densities only, yields not
    included), computed stably as a sigmoid of :math:`\log f_s - \log f_b`.

    Args:
        x: array of shape (n, 3) with :math:`x_2 \ge 0`.
        r, lam: background parameters.

    Returns:
        float64 array of shape (n,) in [0, 1].
    """
    x = _check_x(x)
    if (x[:, 2] < 0).any():
        raise ValueError("x2 must be >= 0 (both densities vanish for x2 < 0)")
    return expit(_signal_log_pdf(x) - _background_log_pdf(x, _check_r(r), _check_lam(lam)))


# ---------------------------------------------------------------------------- data sets
def _balanced(n: int, ss: np.random.SeedSequence, shuffle: bool) -> Tuple[np.ndarray, np.ndarray]:
    """``n // 2`` signal (y=1) then background (y=0) events, optionally shuffled."""
    s_ss, b_ss, p_ss = ss.spawn(3)
    h = n // 2
    x = np.concatenate([sample_signal(h, np.random.default_rng(s_ss)),
                        sample_background(n - h, seed=np.random.default_rng(b_ss))])
    y = np.concatenate([np.ones(h), np.zeros(n - h)])
    if shuffle:
        perm = np.random.default_rng(p_ss).permutation(n)
        x, y = x[perm], y[perm]
    return x.astype(np.float32), y.astype(np.float32)


def get_paper_data(n: int, bs: int = 2000, n_test: int = 0, seed: Seed = None,
                   n_val: Optional[int] = None, drop_last: bool = False) -> DataPair:
    r"""Training, validation (and optionally test) loaders for the toy problem.

    Each set holds exactly half signal (``y=1``) and half background (``y=0``) events,
    generated at the nominal :math:`r = 0`, :math:`\lambda = 3`, as float32 without
    weights. Training and validation events are shuffled; the training loader reshuffles
    every epoch with a seed derived from ``seed``. The test set (when ``n_test > 0``) is
    ordered, signal first, and its loader does not shuffle.

    The three sets and the loader's shuffling come from independent streams spawned from
    ``numpy.random.SeedSequence(seed)``: the same ``seed`` gives identical data and batches.

    Args:
        n: training events (even, >= 2).
        bs: batch size of all loaders (>= 1).
        n_test: test events (even, >= 0); 0 for no test loader.
        seed: an integer, a ``SeedSequence``, a ``numpy.random.Generator`` (one integer is
            drawn from it) or None (fresh entropy).
        n_val: validation events (even, >= 0; 0 for no validation loader). Default: ``n // 2``
            rounded up to an even number.
        drop_last: drop the last, incomplete batch of the training and validation loaders
            (a set smaller than ``bs`` is then one batch). The exact INFERNO loss needs
            signal and background events in every batch, which a small remainder may lack.

    Returns:
        :class:`~inferno.data.DataPair` with ``trn_dl``, ``val_dl`` (None when ``n_val == 0``)
        and ``tst_dl`` (None when ``n_test == 0``).

    Raises:
        ValueError: a size that is negative, odd, or (for ``n``) smaller than 2; ``bs < 1``.
    """
    n = _check_n(n, "n", 2)
    if n_val is None:
        n_val = 2 * (-(-n // 4))
    n_val = _check_n(n_val, "n_val")
    n_test = _check_n(n_test, "n_test")
    for name, v in (("n", n), ("n_val", n_val), ("n_test", n_test)):
        if v % 2:
            raise ValueError(f"{name} must be even (half signal, half background), got {v}")
    bs = _check_n(bs, "bs", 1)
    if isinstance(seed, np.random.Generator):
        seed = int(seed.integers(2 ** 63))
    ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    trn_ss, val_ss, tst_ss, dl_ss = ss.spawn(4)
    dl_seed = int(dl_ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))

    trn = DataSet(*_balanced(n, trn_ss, shuffle=True))
    trn_dl = WeightedDataLoader(trn, min(bs, n) if drop_last else bs, shuffle=True, seed=dl_seed,
                                drop_last=drop_last)
    val_dl = None
    if n_val > 0:
        val_dl = WeightedDataLoader(DataSet(*_balanced(n_val, val_ss, shuffle=True)),
                                    min(bs, n_val) if drop_last else bs, drop_last=drop_last)
    tst_dl = None
    if n_test > 0:
        tst_dl = WeightedDataLoader(DataSet(*_balanced(n_test, tst_ss, shuffle=False)), bs)
    return DataPair(trn_dl, val_dl, tst_dl)
