r"""The 3D synthetic problem of de Castro & Dorigo (arXiv:1806.04743, section 4).

A mixture of a signal and a background in three features :math:`x = (x_0, x_1, x_2)`:

.. math::

    f_s(x) &= \mathcal{N}\big((x_0, x_1) \,|\, (0, 0), I\big)\; 2 e^{-2 x_2}, \\
    f_b(x; r, \lambda) &= \mathcal{N}\big((x_0, x_1) \,|\, (2 + r, 0),
        \mathrm{diag}(5, 9)\big)\; \lambda e^{-\lambda x_2},

for :math:`x_2 \ge 0`, with nominal :math:`r = 0`, :math:`\lambda = 3` and expected yields
:math:`s = 50`, :math:`b = 1000`. The observed events follow the intensity

.. math::  \nu(x; s, r, \lambda, b) = s f_s(x) + b f_b(x; r, \lambda).

The module provides seeded samplers, the true densities (numpy, and torch log-densities that
are differentiable in :math:`r, \lambda`), the Bayes-optimal classifier, training data for a
network (:func:`get_paper_data`), the five inference benchmarks of the paper
(:data:`BENCHMARKS`), the best width any summary statistic can reach
(:func:`analytical_widths`), and the input transformation that moves background events to
other nuisance values (:func:`paper_syst_transform`, :class:`PaperSystMod`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from .callback import AbsCallback
from .data import DataPair, DataSet, WeightedDataLoader

__all__ = [
    "PAPER_S", "PAPER_B", "PAPER_R", "PAPER_L", "PAPER_PARAMS",
    "sample_signal", "sample_background", "signal_pdf", "background_pdf",
    "signal_log_prob", "background_log_prob", "optimal_classifier", "get_paper_data",
    "PaperBenchmark", "BENCHMARKS", "paper_fisher_information", "analytical_widths",
    "paper_syst_transform", "PaperSystMod",
]

PAPER_S: float = 50.0
"""Nominal expected signal yield :math:`s`."""
PAPER_B: float = 1000.0
"""Nominal expected background yield :math:`b`."""
PAPER_R: float = 0.0
"""Nominal shift :math:`r` of the background mean in :math:`x_0` (mean :math:`2 + r`)."""
PAPER_L: float = 3.0
"""Nominal rate :math:`\\lambda` of the background exponential in :math:`x_2`."""
PAPER_PARAMS: Tuple[str, str, str, str] = ("s", "r", "l", "b")
"""Order of the parameters in :func:`paper_fisher_information`."""

# shapes of the densities (not meant to change: the benchmarks are defined for them)
_SIG_RATE = 2.0  # signal rate in x2; signal (x0, x1) ~ N(0, I)
_BKG_MU0 = 2.0  # background mean in x0 is _BKG_MU0 + r
_BKG_VAR0, _BKG_VAR1 = 5.0, 9.0  # background variances in x0 and x1
_LOG_2PI = math.log(2.0 * math.pi)

SeedLike = Union[None, int, np.random.Generator, np.random.SeedSequence]


# --------------------------------------------------------------------------- validation
def _check_count(n: int, name: str, minimum: int = 0) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {n!r}")
    return int(n)


def _check_real(v: float, name: str, positive: bool = False) -> float:
    try:
        v = float(v)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number, got {v!r}") from None
    if not math.isfinite(v) or (positive and v <= 0):
        raise ValueError(f"{name} must be {'> 0 and ' if positive else ''}finite, got {v}")
    return v


def _check_x(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 3:
        raise ValueError(f"x must have shape (n_events, 3), got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("x contains NaN or inf")
    return x


# --------------------------------------------------------------------------- sampling
def sample_signal(n: int, seed: SeedLike = None) -> np.ndarray:
    r"""Draw ``n`` signal events: :math:`(x_0, x_1) \sim \mathcal{N}(0, I)`,
    :math:`x_2 \sim \mathrm{Exp}(\text{rate } 2)`.

    Args:
        n: number of events (>= 0).
        seed: an int, a ``numpy.random.Generator`` (used and advanced) or None (fresh entropy).

    Returns:
        float64 array of shape (n, 3).
    """
    n = _check_count(n, "n")
    rng = np.random.default_rng(seed)
    x = np.empty((n, 3))
    x[:, :2] = rng.standard_normal((n, 2))
    x[:, 2] = rng.exponential(1.0 / _SIG_RATE, n)
    return x


def sample_background(n: int, r: float = PAPER_R, lam: float = PAPER_L,
                      seed: SeedLike = None) -> np.ndarray:
    r"""Draw ``n`` background events: :math:`x_0 \sim \mathcal{N}(2 + r, 5)`,
    :math:`x_1 \sim \mathcal{N}(0, 9)` (variances), :math:`x_2 \sim \mathrm{Exp}(\text{rate }
    \lambda)`.

    Args:
        n: number of events (>= 0).
        r: shift of the mean of :math:`x_0`.
        lam: rate :math:`\lambda > 0` of the exponential (mean :math:`1/\lambda`).
        seed: an int, a ``numpy.random.Generator`` (used and advanced) or None.

    Returns:
        float64 array of shape (n, 3).
    """
    n = _check_count(n, "n")
    r, lam = _check_real(r, "r"), _check_real(lam, "lam", positive=True)
    rng = np.random.default_rng(seed)
    x = np.empty((n, 3))
    x[:, 0] = rng.normal(_BKG_MU0 + r, math.sqrt(_BKG_VAR0), n)
    x[:, 1] = rng.normal(0.0, math.sqrt(_BKG_VAR1), n)
    x[:, 2] = rng.exponential(1.0 / lam, n)
    return x


# --------------------------------------------------------------------------- densities
def _log_fs(x0, x1, x2):
    """Signal log-density without the support condition (works on numpy and torch)."""
    return -0.5 * (x0 * x0 + x1 * x1) - _LOG_2PI + math.log(_SIG_RATE) - _SIG_RATE * x2


def _bkg_gauss_log(x0, x1, r):
    d0 = x0 - _BKG_MU0 - r
    return (-0.5 * (d0 * d0 / _BKG_VAR0 + x1 * x1 / _BKG_VAR1) - _LOG_2PI
            - 0.5 * math.log(_BKG_VAR0 * _BKG_VAR1))


def signal_pdf(x: np.ndarray) -> np.ndarray:
    r"""Signal density :math:`f_s(x) = \mathcal{N}(x_0|0,1)\,\mathcal{N}(x_1|0,1)\,2e^{-2x_2}`
    (0 for :math:`x_2 < 0`).

    Args:
        x: events, shape (n, 3).

    Returns:
        float64 array of shape (n,).
    """
    x = _check_x(x)
    x2 = x[:, 2]
    return np.where(x2 >= 0, np.exp(_log_fs(x[:, 0], x[:, 1], np.maximum(x2, 0.0))), 0.0)


def background_pdf(x: np.ndarray, r: float = PAPER_R, lam: float = PAPER_L) -> np.ndarray:
    r"""Background density :math:`f_b(x; r, \lambda) = \mathcal{N}(x_0|2+r, 5)\,
    \mathcal{N}(x_1|0, 9)\,\lambda e^{-\lambda x_2}` (0 for :math:`x_2 < 0`).

    Args:
        x: events, shape (n, 3).
        r: shift of the mean of :math:`x_0`.
        lam: exponential rate :math:`\lambda > 0`.

    Returns:
        float64 array of shape (n,).
    """
    x = _check_x(x)
    r, lam = _check_real(r, "r"), _check_real(lam, "lam", positive=True)
    x2 = x[:, 2]
    log_f = _bkg_gauss_log(x[:, 0], x[:, 1], r) + math.log(lam) - lam * np.maximum(x2, 0.0)
    return np.where(x2 >= 0, np.exp(log_f), 0.0)


def _check_tensor_x(x: Tensor) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 2 or x.shape[1] != 3:
        raise ValueError(f"x must have shape (n_events, 3), got {tuple(x.shape)}")
    return x


def signal_log_prob(x: Tensor) -> Tensor:
    r"""Torch version of :math:`\log f_s(x)` (:math:`-\infty` for :math:`x_2 < 0`).

    Args:
        x: events, tensor of shape (n, 3); the result has its dtype and device.

    Returns:
        tensor of shape (n,).
    """
    x = _check_tensor_x(x)
    val = _log_fs(x[:, 0], x[:, 1], x[:, 2])
    return torch.where(x[:, 2] >= 0, val, torch.full_like(val, -math.inf))


def background_log_prob(x: Tensor, r: Union[float, Tensor] = PAPER_R,
                        lam: Union[float, Tensor] = PAPER_L) -> Tensor:
    r"""Torch version of :math:`\log f_b(x; r, \lambda)`, differentiable in ``x``, ``r`` and
    ``lam`` (pass 0-d tensors with ``requires_grad=True``).

    .. math::
        \frac{\partial \log f_b}{\partial r} = \frac{x_0 - 2 - r}{5}, \qquad
        \frac{\partial \log f_b}{\partial \lambda} = \frac{1}{\lambda} - x_2 .

    Args:
        x: events, tensor of shape (n, 3).
        r: shift of the mean of :math:`x_0` (float or 0-d tensor).
        lam: exponential rate (float > 0 or 0-d tensor).

    Returns:
        tensor of shape (n,) (:math:`-\infty` where :math:`x_2 < 0`).
    """
    x = _check_tensor_x(x)
    if not isinstance(r, Tensor):
        r = _check_real(r, "r")
    if not isinstance(lam, Tensor):
        lam = _check_real(lam, "lam", positive=True)
    log_lam = torch.log(lam) if isinstance(lam, Tensor) else math.log(lam)
    val = _bkg_gauss_log(x[:, 0], x[:, 1], r) + log_lam - lam * x[:, 2]
    return torch.where(x[:, 2] >= 0, val, torch.full_like(val, -math.inf))


def optimal_classifier(x: np.ndarray, r: float = PAPER_R, lam: float = PAPER_L) -> np.ndarray:
    r"""Bayes-optimal classifier for equal class priors,
    :math:`c(x) = f_s(x) / (f_s(x) + f_b(x; r, \lambda))`.

    Computed as :math:`\sigma(\log f_s - \log f_b)` so that it is accurate far in the tails.
    The yields :math:`s, b` do not enter: the output is the class probability for a balanced
    training set, as learnt by a network trained on :func:`get_paper_data`.

    Args:
        x: events, shape (n, 3), with :math:`x_2 \ge 0`.
        r, lam: background parameters.

    Returns:
        float64 array of shape (n,) with values in [0, 1].

    Raises:
        ValueError: bad shape, NaN/inf, or :math:`x_2 < 0` (outside the support of both).
    """
    x = _check_x(x)
    r, lam = _check_real(r, "r"), _check_real(lam, "lam", positive=True)
    if (x[:, 2] < 0).any():
        raise ValueError("x2 must be >= 0: both densities vanish there")
    log_ratio = (_log_fs(x[:, 0], x[:, 1], x[:, 2])
                 - _bkg_gauss_log(x[:, 0], x[:, 1], r) - math.log(lam) + lam * x[:, 2])
    # sigmoid without overflow
    out = np.empty_like(log_ratio)
    pos = log_ratio >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-log_ratio[pos]))
    e = np.exp(log_ratio[~pos])
    out[~pos] = e / (1.0 + e)
    return out


# --------------------------------------------------------------------------- training data
def _balanced_sample(n: int, ss: np.random.SeedSequence, shuffle: bool) -> DataSet:
    rng = np.random.default_rng(ss)
    n_s = n // 2
    x = np.concatenate([sample_signal(n_s, rng), sample_background(n - n_s, seed=rng)])
    y = np.concatenate([np.ones(n_s), np.zeros(n - n_s)])
    if shuffle:
        perm = rng.permutation(n)
        x, y = x[perm], y[perm]
    return DataSet(x, y)


def get_paper_data(n: int, bs: int = 2000, n_test: int = 0, seed: SeedLike = None,
                   n_val: Optional[int] = None) -> DataPair:
    r"""Training, validation (and optionally test) loaders for the paper's problem.

    Each set holds ``n // 2`` signal events (``y = 1``) and the rest background (``y = 0``),
    drawn at the nominal :math:`r = 0, \lambda = 3`, without weights, in float32. Training
    and validation sets are shuffled once; the training loader also reshuffles every epoch.
    The test set is not shuffled: signal first, then background.

    Each set (and the training loader's shuffling) draws from its own child of
    ``numpy.random.SeedSequence(seed)``, so the same seed gives identical data and the
    training set does not depend on ``n_val`` or ``n_test``.

    Args:
        n: training events (>= 2).
        bs: batch size of all loaders (>= 1).
        n_test: test events (0: no test loader; otherwise >= 2).
        seed: an int, a ``numpy.random.Generator`` (one integer is drawn from it), a
            ``SeedSequence``, or None (fresh entropy).
        n_val: validation events (default ``n // 2``; 0: no validation loader;
            otherwise >= 2).

    Returns:
        :class:`~inferno.data.DataPair` with ``trn_dl``, ``val_dl`` and ``tst_dl``.
    """
    n = _check_count(n, "n", 2)
    bs = _check_count(bs, "bs", 1)
    n_test = _check_count(n_test, "n_test")
    n_val = n // 2 if n_val is None else _check_count(n_val, "n_val")
    for name, k in (("n_val", n_val), ("n_test", n_test)):
        if k == 1:
            raise ValueError(f"{name} must be 0 (no set) or >= 2 (one event of each class)")
    if isinstance(seed, np.random.Generator):
        seed = int(seed.integers(2**63))
    ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    trn_ss, val_ss, tst_ss, dl_ss = ss.spawn(4)
    trn_dl = WeightedDataLoader(_balanced_sample(n, trn_ss, True), bs, shuffle=True,
                                seed=int(dl_ss.generate_state(1)[0]))
    val_dl = (WeightedDataLoader(_balanced_sample(n_val, val_ss, True), bs)
              if n_val > 0 else None)
    tst_dl = (WeightedDataLoader(_balanced_sample(n_test, tst_ss, False), bs)
              if n_test > 0 else None)
    return DataPair(trn_dl, val_dl, tst_dl)


# --------------------------------------------------------------------------- benchmarks
@dataclass(frozen=True)
class PaperBenchmark:
    r"""Which nuisance parameters float in an inference benchmark, and their constraints.

    Parameters are :math:`s` (always floating, the parameter of interest), :math:`r`,
    :math:`\lambda` (named ``'l'``) and :math:`b`. A floating nuisance with a standard
    deviation has the Gaussian constraint :math:`\mathcal{N}(\theta | \theta_0, \sigma)` in
    physical units, centred on its nominal value (:data:`PAPER_R`, :data:`PAPER_L`,
    :data:`PAPER_B`); with ``None`` it floats freely. A nuisance that does not float is fixed
    at its nominal value.

    Attributes:
        float_r, float_l, float_b: whether :math:`r`, :math:`\lambda`, :math:`b` float.
        r_std, l_std, b_std: constraint widths (None: unconstrained).
    """

    float_r: bool = False
    float_l: bool = False
    float_b: bool = False
    r_std: Optional[float] = None
    l_std: Optional[float] = None
    b_std: Optional[float] = None

    def __post_init__(self) -> None:
        for name in ("r", "l", "b"):
            std = getattr(self, f"{name}_std")
            if std is None:
                continue
            if not getattr(self, f"float_{name}"):
                raise ValueError(f"{name}_std is given but {name} does not float")
            if not (isinstance(std, (int, float)) and math.isfinite(std) and std > 0):
                raise ValueError(f"{name}_std must be finite and > 0, got {std!r}")

    @property
    def nuisances(self) -> Tuple[str, ...]:
        """Names of the floating nuisances, in the order ``('r', 'l', 'b')``."""
        return tuple(k for k in ("r", "l", "b") if getattr(self, f"float_{k}"))

    @property
    def params(self) -> Tuple[str, ...]:
        """``('s',) + nuisances``: the parameters of this benchmark's fit."""
        return ("s",) + self.nuisances

    @property
    def nominal(self) -> Dict[str, float]:
        """Nominal values of all four parameters."""
        return {"s": PAPER_S, "r": PAPER_R, "l": PAPER_L, "b": PAPER_B}

    @property
    def constraints(self) -> Dict[str, Tuple[float, float]]:
        """``{name: (nominal, std)}`` for the constrained nuisances."""
        nom = self.nominal
        return {k: (nom[k], getattr(self, f"{k}_std")) for k in self.nuisances
                if getattr(self, f"{k}_std") is not None}

    def fisher(self, full: np.ndarray) -> np.ndarray:
        r"""Restrict a 4x4 Fisher matrix (order :data:`PAPER_PARAMS`) to :attr:`params` and add
        the constraint terms :math:`1/\sigma^2` on the diagonal."""
        full = np.asarray(full, dtype=np.float64)
        if full.shape != (4, 4):
            raise ValueError(f"the Fisher matrix must be 4x4 (s, r, l, b), got {full.shape}")
        idx = [PAPER_PARAMS.index(p) for p in self.params]
        out = full[np.ix_(idx, idx)].copy()
        for k, (_, std) in self.constraints.items():
            i = self.params.index(k)
            out[i, i] += 1.0 / std**2
        return out

    def width(self, full: np.ndarray) -> float:
        r"""Expected standard deviation of :math:`\hat s`,
        :math:`\sqrt{[I^{-1}]_{ss}}` with :math:`I` = :meth:`fisher` ``(full)``.

        Raises:
            ValueError: the restricted Fisher matrix is not positive definite.
        """
        info = self.fisher(full)
        try:
            chol = np.linalg.cholesky(info)
        except np.linalg.LinAlgError:
            raise ValueError("the Fisher information is not positive definite") from None
        e0 = np.zeros(len(info))
        e0[0] = 1.0
        z = np.linalg.solve(chol, e0)  # [I^-1]_ss = |L^-1 e0|^2
        return float(math.sqrt(z @ z))


BENCHMARKS: Dict[int, PaperBenchmark] = {
    0: PaperBenchmark(),
    1: PaperBenchmark(float_r=True),
    2: PaperBenchmark(float_r=True, float_l=True),
    3: PaperBenchmark(float_r=True, float_l=True, r_std=0.4, l_std=1.0),
    4: PaperBenchmark(float_r=True, float_l=True, float_b=True, r_std=0.4, l_std=1.0,
                      b_std=100.0),
}
"""The paper's benchmarks 0-4: 0 only :math:`s` floats; 1 :math:`r` free; 2 :math:`r` and
:math:`\\lambda` free; 3 as 2 with constraints :math:`\\mathcal{N}(r|0, 0.4)`,
:math:`\\mathcal{N}(\\lambda|3, 1)`; 4 as 3 plus :math:`b` floating with
:math:`\\mathcal{N}(b|1000, 100)`."""


# --------------------------------------------------------------------------- Fisher information
def paper_fisher_information(s: float = PAPER_S, b: float = PAPER_B, r: float = PAPER_R,
                             lam: float = PAPER_L, n_nodes: int = 128) -> np.ndarray:
    r"""Expected Fisher information of the extended unbinned likelihood on the true densities.

    .. math::
        I_{ij} = \int \frac{\partial_i \nu(x)\, \partial_j \nu(x)}{\nu(x)}\, dx, \qquad
        \nu = s f_s + b f_b(r, \lambda),

    with :math:`\partial_s \nu = f_s`, :math:`\partial_b \nu = f_b`,
    :math:`\partial_r \nu = b f_b (x_0 - 2 - r)/5` and
    :math:`\partial_\lambda \nu = b f_b (1/\lambda - x_2)`, parameters in the order
    :data:`PAPER_PARAMS` = (s, r, l, b). No constraint terms (see
    :meth:`PaperBenchmark.fisher`).

    The integral is a deterministic tensor-product quadrature: trapezoid rules on
    :math:`x_0 \in [\min(0, 2+r) - 28, \max(0, 2+r) + 28]` and on :math:`x_1 \in [0, 40]`
    (the integrand is even in :math:`x_1`; the rule converges geometrically for these
    smooth, Gaussian-decaying integrands) and Gauss-Legendre on
    :math:`x_2 \in [0, 36/\min(2, \lambda)]`, ``n_nodes`` nodes in each direction. The
    neglected tails are below :math:`e^{-36}` relative. At the nominal point the widths
    agree to :math:`10^{-9}` relative between ``n_nodes`` = 96 and 128 (see
    :func:`analytical_widths` for the error estimate).

    Returns:
        (4, 4) float64 symmetric matrix.
    """
    s, b = _check_real(s, "s"), _check_real(b, "b")
    r, lam = _check_real(r, "r"), _check_real(lam, "lam", positive=True)
    if s < 0 or b <= 0:
        raise ValueError(f"the yields must be s >= 0 and b > 0, got s={s}, b={b}")
    n = _check_count(n_nodes, "n_nodes", 8)
    mu0 = _BKG_MU0 + r
    x0 = np.linspace(min(0.0, mu0) - 28.0, max(0.0, mu0) + 28.0, n)
    w0 = np.full(n, x0[1] - x0[0])
    w0[[0, -1]] *= 0.5
    x1 = np.linspace(0.0, 40.0, n)
    w1 = np.full(n, 2.0 * (x1[1] - x1[0]))  # 2x: the half line stands for the whole line
    w1[[0, -1]] *= 0.5
    t, wt = np.polynomial.legendre.leggauss(n)
    top = 36.0 / min(_SIG_RATE, lam)
    x2, w2 = 0.5 * top * (t + 1.0), 0.5 * top * wt

    X0, X1, X2 = x0[:, None, None], x1[None, :, None], x2[None, None, :]
    fs = np.exp(_log_fs(X0, X1, X2))
    fb = np.exp(_bkg_gauss_log(X0, X1, r) + math.log(lam) - lam * X2)
    nu = s * fs + b * fb
    shape = (n, n, n)
    grads = np.stack([np.broadcast_to(fs, shape),
                      b * fb * (X0 - mu0) / _BKG_VAR0,
                      b * fb * (1.0 / lam - X2),
                      np.broadcast_to(fb, shape)]).reshape(4, -1)
    wgrid = np.broadcast_to(w0[:, None, None] * w1[None, :, None] * w2[None, None, :], shape)
    # nu > 0 everywhere on this grid in float64; the guard only matters for extreme inputs
    weight = np.divide(wgrid, nu, out=np.zeros(shape), where=nu > 0).reshape(-1)
    m = grads * np.sqrt(weight)
    info = m @ m.T
    return 0.5 * (info + info.T)


def analytical_widths(n_nodes: int = 128, benchmarks: Optional[Mapping[int, PaperBenchmark]]
                      = None, return_errors: bool = False
                      ) -> Union[Dict[int, float], Tuple[Dict[int, float], Dict[int, float]]]:
    r"""Smallest expected width of :math:`\hat s` for each benchmark: the Cramér-Rao bound of
    the unbinned extended likelihood on the true densities, which no summary statistic can
    beat (asymptotically).

    .. math::  \sigma_s = \sqrt{[I_B^{-1}]_{ss}},

    :math:`I_B` the Fisher information of :func:`paper_fisher_information` (nominal
    parameters) restricted to :math:`s` and the benchmark's floating nuisances, plus
    :math:`1/\sigma^2` on the diagonal for each constrained one.

    Args:
        n_nodes: quadrature nodes per dimension (>= 16).
        benchmarks: the benchmarks (default :data:`BENCHMARKS`).
        return_errors: also return the numerical error estimate of each width: the
            difference with a quadrature of ``3 n_nodes / 4`` nodes. The quadrature converges
            geometrically, so this bounds the error of the coarser rule and overstates that
            of the returned one (about :math:`10^{-9}` relative for the default).

    Returns:
        ``{benchmark: width}`` (and ``{benchmark: error}`` with ``return_errors``).
    """
    n = _check_count(n_nodes, "n_nodes", 16)
    benchmarks = BENCHMARKS if benchmarks is None else benchmarks
    full = paper_fisher_information(n_nodes=n)
    widths = {k: bm.width(full) for k, bm in benchmarks.items()}
    if not return_errors:
        return widths
    coarse = paper_fisher_information(n_nodes=(3 * n) // 4)
    errors = {k: abs(widths[k] - bm.width(coarse)) for k, bm in benchmarks.items()}
    return widths, errors


# --------------------------------------------------------------------------- nuisance shifts
def paper_syst_transform(x: Tensor, r: Union[float, Tensor], l: Union[float, Tensor],
                         l0: float = PAPER_L) -> Tensor:
    r"""Move background events generated at :math:`(r = 0, \lambda = \lambda_0)` to
    :math:`(r, \lambda = l)`: :math:`x_0 \to x_0 + r`, :math:`x_2 \to x_2\, \lambda_0 / l`.

    If :math:`x_2 \sim \mathrm{Exp}(\lambda_0)` then :math:`x_2 \lambda_0 / l \sim
    \mathrm{Exp}(l)`; :math:`x_1` and any further columns are untouched. Returns a new tensor
    (the input is not modified) that is differentiable in ``r`` and ``l`` when they are
    tensors requiring grad (as the INFERNO loss needs).

    Args:
        x: events, tensor of shape (n, >= 3).
        r: shift of :math:`x_0` (float or 0-d tensor).
        l: target exponential rate (float > 0 or 0-d tensor).
        l0: rate the events were generated with (> 0).
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 2 or x.shape[1] < 3:
        raise ValueError(f"x must have shape (n_events, >= 3), got {tuple(x.shape)}")
    if not isinstance(r, Tensor):
        r = _check_real(r, "r")
    if not isinstance(l, Tensor):
        l = _check_real(l, "l", positive=True)
    l0 = _check_real(l0, "l0", positive=True)
    return torch.cat([x[:, :1] + r, x[:, 1:2], x[:, 2:3] * (l0 / l), x[:, 3:]], dim=1)


class PaperSystMod(AbsCallback):
    r"""Callback that shifts the inputs of every batch to the nuisance values ``(r, l)``
    with :func:`paper_syst_transform`, e.g. to predict background at shifted parameters::

        wrapper.predict(x_bkg, cbs=[PaperSystMod(r=0.2, l=2.5)])

    It acts in ``on_batch_begin`` on all events of the batch (pass background only) and
    replaces ``wrapper.x`` by a new tensor; the caller's data are not modified.

    Args:
        r: shift of :math:`x_0`.
        l: target exponential rate (> 0).
        l0: rate the events were generated with.
    """

    def __init__(self, r: float = PAPER_R, l: float = PAPER_L, l0: float = PAPER_L):
        self.r = _check_real(r, "r")
        self.l = _check_real(l, "l", positive=True)
        self.l0 = _check_real(l0, "l0", positive=True)

    def on_batch_begin(self) -> None:
        self.wrapper.x = paper_syst_transform(self.wrapper.x, self.r, self.l, self.l0)

    def __repr__(self) -> str:
        return f"PaperSystMod(r={self.r}, l={self.l}, l0={self.l0})"
