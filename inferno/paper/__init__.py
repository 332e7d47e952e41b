r"""The toy problem of de Castro & Dorigo (arXiv:1806.04743, section 4).

Three features :math:`x = (x_0, x_1, x_2)`, a signal and a background:

.. math::

    f_s(x) &= \mathcal{N}\big((x_0, x_1) \mid (0, 0), I_2\big)\; 2 e^{-2 x_2}, \\
    f_b(x; r, \lambda) &= \mathcal{N}\big((x_0, x_1) \mid (2 + r, 0),
        \mathrm{diag}(5, 9)\big)\; \lambda e^{-\lambda x_2},

with :math:`x_2 \ge 0`, nominal :math:`r = 0`, :math:`\lambda = 3` and expected yields
:math:`s = 50`, :math:`b = 1000`. The expected event density of the extended likelihood is
:math:`\nu(x) = s f_s(x) + b f_b(x; r, \lambda)`; the parameter of interest is :math:`s`.

The module provides seeded samplers, the true densities (numpy, and torch log-densities for
autograd), the Bayes-optimal classifier, the data sets used to train networks, the five
inference benchmarks of the paper (:data:`BENCHMARKS`), the shift of nominal inputs to other
nuisance values (:func:`paper_syst_transform`, :class:`PaperSystMod`) and the lower bound on
the width of :math:`\hat s` that no summary statistic can beat (:func:`analytical_widths`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional, Tuple, Union

import numpy as np
import torch
from scipy.special import expit
from torch import Tensor

from ..callback import AbsCallback
from ..data import DataPair, DataSet, WeightedDataLoader

__all__ = [
    "PaperInferno", "ApproxPaperInferno", "paper_inferno",
    "PAPER_S", "PAPER_B", "PAPER_R", "PAPER_L", "PAPER_PARAMS",
    "sample_signal", "sample_background", "signal_pdf", "background_pdf",
    "signal_log_prob", "background_log_prob", "optimal_classifier", "get_paper_data",
    "PaperBenchmark", "BENCHMARKS", "paper_fisher_information", "analytical_widths",
    "paper_syst_transform", "PaperSystMod",
]

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


# ---------------------------------------------------------------------------- benchmarks
@dataclass(frozen=True)
class PaperBenchmark:
    r"""Which nuisance parameters float in an inference benchmark, and their constraints.

    The signal yield :math:`s` always floats (unconstrained). A floating nuisance with a
    standard deviation :math:`\sigma` gets the Gaussian constraint
    :math:`\mathcal{N}(\theta \mid \theta_0, \sigma)` around its nominal value
    (:data:`PAPER_R`, :data:`PAPER_L`, :data:`PAPER_B`), which adds
    :math:`(\theta - \theta_0)^2 / (2\sigma^2)` to the NLL and :math:`1/\sigma^2` to the
    Fisher information; ``None`` means unconstrained. A nuisance that does not float is
    fixed at its nominal value.

    Attributes:
        float_r: :math:`r` (background mean shift in :math:`x_0`) floats.
        float_l: :math:`\lambda` (background rate in :math:`x_2`) floats.
        float_b: the background yield :math:`b` floats.
        r_std, l_std, b_std: constraint widths in physical units, or None.
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
                raise ValueError(f"{name}_std is set but {name} does not float")
            if not (math.isfinite(std) and std > 0):
                raise ValueError(f"{name}_std must be finite and > 0, got {std}")

    @property
    def nuisances(self) -> Tuple[str, ...]:
        """Names of the floating nuisances, in the order ``('r', 'l', 'b')``."""
        return tuple(k for k in ("r", "l", "b") if getattr(self, f"float_{k}"))

    @property
    def params(self) -> Tuple[str, ...]:
        """``('s', *nuisances)``: the parameters of the fit."""
        return ("s",) + self.nuisances

    @property
    def nominal(self) -> Dict[str, float]:
        """Nominal values of all parameters, ``{'s': 50, 'r': 0, 'l': 3, 'b': 1000}``."""
        return {"s": PAPER_S, "r": PAPER_R, "l": PAPER_L, "b": PAPER_B}

    @property
    def constraints(self) -> Dict[str, Tuple[float, float]]:
        """``{name: (mean, std)}`` of the constrained floating nuisances."""
        nom = self.nominal
        return {k: (nom[k], getattr(self, f"{k}_std")) for k in self.nuisances
                if getattr(self, f"{k}_std") is not None}


#: The five benchmarks of the paper (section 4): 0, only :math:`s` floats; 1, :math:`r`
#: free; 2, :math:`r` and :math:`\lambda` free; 3, :math:`r \sim \mathcal{N}(0, 0.4)` and
#: :math:`\lambda \sim \mathcal{N}(3, 1)`; 4, as 3 plus :math:`b \sim \mathcal{N}(1000, 100)`.
BENCHMARKS: Dict[int, PaperBenchmark] = {
    0: PaperBenchmark(),
    1: PaperBenchmark(float_r=True),
    2: PaperBenchmark(float_r=True, float_l=True),
    3: PaperBenchmark(float_r=True, float_l=True, r_std=0.4, l_std=1.0),
    4: PaperBenchmark(float_r=True, float_l=True, float_b=True, r_std=0.4, l_std=1.0,
                      b_std=100.0),
}


# ---------------------------------------------------------------------------- Fisher limit
def _fisher_grid(n_nodes: int, s: float, b: float, r: float, lam: float) -> np.ndarray:
    r"""Tensor-product Gauss-Legendre estimate of the 4x4 expected Fisher information."""
    t, wt = np.polynomial.legendre.leggauss(n_nodes)
    c = 10.0  # half-width in standard deviations of the wider of the two densities
    sd0, sd1 = math.sqrt(_BKG_VAR0), math.sqrt(_BKG_VAR1)
    lo0, hi0 = min(-c, _BKG_MU0 + r - c * sd0), max(c, _BKG_MU0 + r + c * sd0)
    x0 = 0.5 * (hi0 - lo0) * t + 0.5 * (hi0 + lo0)
    w0 = 0.5 * (hi0 - lo0) * wt
    hi1 = c * sd1  # integrands are even in x1: integrate over [0, hi1] and double
    x1 = 0.5 * hi1 * (t + 1.0)
    w1 = hi1 * wt
    # x2 = -2 log(1 - u), dx2 = 2 du / (1 - u): the integrands become (1 - u)^p times powers
    # of log(1 - u) with p >= 2 lam - 1 > 1, smooth enough at u = 1 for fast convergence
    u = 0.5 * (t + 1.0)
    x2 = -2.0 * np.log1p(-u)
    w2 = wt / (1.0 - u)

    # separable factors of the densities
    gs0 = np.exp(-0.5 * x0 ** 2) / math.sqrt(2 * math.pi)
    gs1 = np.exp(-0.5 * x1 ** 2) / math.sqrt(2 * math.pi)
    gs2 = _SIG_RATE * np.exp(-_SIG_RATE * x2)
    gb0 = np.exp(-0.5 * (x0 - _BKG_MU0 - r) ** 2 / _BKG_VAR0) / math.sqrt(2 * math.pi * _BKG_VAR0)
    gb1 = np.exp(-0.5 * x1 ** 2 / _BKG_VAR1) / math.sqrt(2 * math.pi * _BKG_VAR1)
    gb2 = lam * np.exp(-lam * x2)
    fs = gs0[:, None, None] * gs1[None, :, None] * gs2[None, None, :]
    fb = gb0[:, None, None] * gb1[None, :, None] * gb2[None, None, :]
    nu = s * fs + b * fb
    q = (w0[:, None, None] * w1[None, :, None] * w2[None, None, :]) / nu
    dr = (x0 - _BKG_MU0 - r) / _BKG_VAR0
    dl = 1.0 / lam - x2
    grads = np.stack([fs, b * fb * dr[:, None, None], b * fb * dl[None, None, :], fb])
    grads = grads.reshape(4, -1)
    return np.einsum("in,jn,n->ij", grads, grads, q.reshape(-1))


def paper_fisher_information(s: float = PAPER_S, b: float = PAPER_B, r: float = PAPER_R,
                             lam: float = PAPER_L, n_nodes: int = 128) -> np.ndarray:
    r"""Expected Fisher information of the extended unbinned likelihood on the true densities.

    With :math:`\nu(x; \theta) = s f_s(x) + b f_b(x; r, \lambda)` and
    :math:`\theta = (s, r, \lambda, b)` (order :data:`PAPER_PARAMS`), the expected Fisher
    information of :math:`-\log L = \int\nu - \sum_i \log \nu(x_i)` is

    .. math::

        I_{jk} = \int \frac{\partial_j \nu(x)\, \partial_k \nu(x)}{\nu(x)}\, dx ,

    with :math:`\partial_s \nu = f_s`, :math:`\partial_b \nu = f_b`,
    :math:`\partial_r \nu = b f_b\,(x_0 - 2 - r)/5` and
    :math:`\partial_\lambda \nu = b f_b\,(1/\lambda - x_2)`. (The derivatives of
    :math:`\int \nu = s + b` with respect to :math:`r, \lambda` vanish, so only shapes
    inform on them.) No constraint terms are included.

    The integral is a deterministic tensor-product Gauss-Legendre quadrature with ``n_nodes``
    nodes per dimension: :math:`x_0` on :math:`[\min(-10, 2 + r - 10\sqrt5),
    \max(10, 2 + r + 10\sqrt5)]`, :math:`x_1` on :math:`[0, 30]` (the integrand is even in
    :math:`x_1`), and :math:`x_2 = -2\log(1 - u)` with :math:`u \in [0, 1]`, which maps the
    half line onto a finite interval without truncation. The truncation in
    :math:`x_0, x_1` (10 standard deviations) costs a relative :math:`O(e^{-50})`; the
    quadrature converges exponentially in ``n_nodes`` (see :func:`analytical_widths`).

    Returns:
        float64 array of shape (4, 4), symmetric positive definite.
    """
    s, b = float(s), float(b)
    if not (math.isfinite(s) and s > 0) or not (math.isfinite(b) and b > 0):
        raise ValueError(f"yields s and b must be finite and > 0, got s={s}, b={b}")
    n_nodes = _check_n(n_nodes, "n_nodes", 8)
    return _fisher_grid(n_nodes, s, b, _check_r(r), _check_lam(lam))


def _benchmark_width(fisher: np.ndarray, bm: PaperBenchmark) -> float:
    r""":math:`\sqrt{[I_\mathrm{bm}^{-1}]_{ss}}` for the floating parameters plus constraints."""
    idx = [PAPER_PARAMS.index(p) for p in bm.params]
    sub = fisher[np.ix_(idx, idx)].copy()
    for name, (_, std) in bm.constraints.items():
        k = bm.params.index(name)
        sub[k, k] += 1.0 / std ** 2
    try:
        chol = np.linalg.cholesky(sub)
    except np.linalg.LinAlgError as e:
        raise ValueError(f"Fisher information for parameters {bm.params} is not positive "
                         "definite") from e
    e_s = np.zeros(len(idx))
    e_s[0] = 1.0
    v = np.linalg.solve(chol, e_s)  # [I^-1]_ss = |L^-1 e_s|^2 with I = L L^T
    return float(math.sqrt(v @ v))


def analytical_widths(n_nodes: int = 128, return_errors: bool = False
                      ) -> Union[Dict[int, float], Tuple[Dict[int, float], Dict[int, float]]]:
    r"""Expected width of :math:`\hat s` for each benchmark with the true likelihood.

    The Cramér-Rao bound of the unbinned extended likelihood built on the true densities,
    i.e. the best any summary statistic can do: for benchmark ``k`` with parameters
    :math:`\theta = (s, \text{floating nuisances})`,

    .. math::

        \sigma_s = \sqrt{\big[(I_\theta + C)^{-1}\big]_{ss}}, \qquad
        C = \mathrm{diag}(1/\sigma_j^2 \text{ for constrained } j),

    with :math:`I_\theta` the restriction of :func:`paper_fisher_information` at the nominal
    point to :math:`\theta`.

    Args:
        n_nodes: quadrature nodes per dimension (>= 16). The default (128) gives a
            relative error below 1e-8 in about 0.3 s; 64 nodes give about 1e-4.
        return_errors: also return an error estimate per benchmark: the absolute
            difference from the same computation with ``3 * n_nodes // 4`` nodes. The
            quadrature converges exponentially, so this bounds the error of the coarser
            computation and is conservative for the returned one.

    Returns:
        ``{benchmark: width}``, or ``(widths, errors)`` when ``return_errors``.
    """
    n_nodes = _check_n(n_nodes, "n_nodes", 16)
    fisher = paper_fisher_information(n_nodes=n_nodes)
    widths = {k: _benchmark_width(fisher, bm) for k, bm in BENCHMARKS.items()}
    if not return_errors:
        return widths
    coarse = paper_fisher_information(n_nodes=3 * n_nodes // 4)
    errors = {k: abs(widths[k] - _benchmark_width(coarse, bm)) for k, bm in BENCHMARKS.items()}
    return widths, errors


# ---------------------------------------------------------------------------- systematics
def paper_syst_transform(x: Union[Tensor, np.ndarray], r: Union[float, Tensor],
                         l: Union[float, Tensor], l0: float = PAPER_L  # noqa: E741
                         ) -> Union[Tensor, np.ndarray]:
    r"""Move nominal background inputs to the nuisance values :math:`(r, \lambda = l)`.

    :math:`x_0 \to x_0 + r` and :math:`x_2 \to x_2\, l_0 / l`: a background event drawn at
    :math:`r = 0`, :math:`\lambda = l_0` becomes one distributed as background at
    :math:`(r, l)` (if :math:`X \sim \mathrm{Exp}(l_0)` then
    :math:`X l_0 / l \sim \mathrm{Exp}(l)`). Other columns are unchanged. Returns a new
    tensor (the input is not modified), differentiable in ``r`` and ``l`` when they are
    tensors requiring grad. Numpy input gives numpy output.

    Args:
        x: inputs of shape (n, >= 3).
        r: shift of :math:`x_0`.
        l: target exponential rate (> 0).
        l0: rate at which ``x`` was generated (> 0).
    """
    l0 = _check_lam(l0, "l0")
    if not isinstance(l, Tensor):
        l = _check_lam(l, "l")
    if isinstance(x, np.ndarray):
        out = np.array(x, dtype=np.result_type(x.dtype, np.float32), copy=True)
        if out.ndim != 2 or out.shape[1] < 3:
            raise ValueError(f"x must have shape (n, >=3), got {out.shape}")
        if isinstance(r, Tensor) or isinstance(l, Tensor):
            raise TypeError("r and l must be floats when x is a numpy array")
        out[:, 0] += float(r)
        out[:, 2] *= l0 / float(l)
        return out
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor or numpy array, got {type(x).__name__}")
    if x.ndim != 2 or x.shape[1] < 3:
        raise ValueError(f"x must have shape (n, >=3), got {tuple(x.shape)}")
    cols = [x[:, :1] + r, x[:, 1:2], x[:, 2:3] * (l0 / l), x[:, 3:]]
    return torch.cat(cols, dim=1)


class PaperSystMod(AbsCallback):
    r"""Callback shifting every batch's inputs to nuisance values :math:`(r, l)` before the
    forward pass, through :func:`paper_syst_transform`.

    Meant for predictions on nominal background events, e.g. to build shifted templates::

        wrapper.predict(bkg_x, cbs=[PaperSystMod(r=0.2, l=3.0)])

    Args:
        r: shift of :math:`x_0`.
        l: exponential rate of :math:`x_2` (> 0); inputs are assumed generated at
            :data:`PAPER_L`.
    """

    def __init__(self, r: float = PAPER_R, l: float = PAPER_L):  # noqa: E741
        self.r, self.l = _check_r(r), _check_lam(l, "l")

    def on_batch_begin(self) -> None:
        self.wrapper.x = paper_syst_transform(self.wrapper.x, self.r, self.l)

    def __repr__(self) -> str:
        return f"PaperSystMod(r={self.r}, l={self.l})"


# the INFERNO callbacks set up for this problem (they need the constants above)
from .callbacks import ApproxPaperInferno, PaperInferno, paper_inferno  # noqa: E402
