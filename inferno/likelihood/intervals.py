r"""Intervals from a profile-likelihood scan: the set
:math:`\{\mu: -\ln L_p(\mu) - \min -\ln L_p \le \mathrm{val}\}` located on a cubic spline
through the scan (``val = 0.5``: 68.3% in the asymptotic regime; 1.92: 95%).
"""
from __future__ import annotations

import math
from typing import Tuple, Union

import numpy as np
from torch import Tensor

__all__ = ["get_interval", "get_likelihood_width"]

ArrayLike = Union[Tensor, np.ndarray, list]


def _prepare_scan(nll: ArrayLike, mu_scan: ArrayLike) -> Tuple[np.ndarray, np.ndarray]:
    y = np.asarray(nll.detach().cpu() if isinstance(nll, Tensor) else nll, dtype=np.float64).reshape(-1)
    x = np.asarray(mu_scan.detach().cpu() if isinstance(mu_scan, Tensor) else mu_scan, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"nll and mu_scan have different lengths: {len(y)} vs {len(x)}")
    if np.any(np.diff(x) <= 0):
        raise ValueError("mu_scan must be strictly increasing")
    m = np.isfinite(y)
    if m.sum() < 4:
        raise ValueError(f"need at least 4 finite NLL values, got {int(m.sum())}")
    return x[m], y[m]


def get_interval(nll: ArrayLike, mu_scan: ArrayLike, val: float = 0.5) -> Tuple[float, float, float]:
    r"""Interval :math:`\{\mu: -\ln L(\mu) - \min -\ln L \le \mathrm{val}\}` from a scan.

    A cubic spline through the finite scan points locates the minimum and the two
    crossings of :math:`\Delta(-\ln L) = \mathrm{val}` (``val=0.5``: the 68.3% interval in the
    asymptotic regime; 1.92: 95%).  NaN/inf points are dropped.

    Returns:
        ``(lower, upper, mu_hat)``.

    Raises:
        ValueError: the minimum is at an end of the scan, or the interval is not inside
            the scan (no crossing on one side).
    """
    from scipy.interpolate import CubicSpline

    if not (val > 0 and math.isfinite(val)):
        raise ValueError(f"val must be > 0, got {val}")
    x, y = _prepare_scan(nll, mu_scan)
    i = int(np.argmin(y))
    if i == 0 or i == len(x) - 1:
        raise ValueError(f"the NLL minimum is at the end of the scan (mu = {x[i]}): widen mu_scan")
    spl = CubicSpline(x, y)
    cands = [r for r in spl.derivative().roots(extrapolate=False) if x[i - 1] <= r <= x[i + 1]]
    mu_hat = min(cands + [x[i]], key=lambda r: float(spl(r)))
    level = float(spl(mu_hat)) + val
    if y[0] < level:
        raise ValueError(f"the interval at delta NLL = {val} extends below the scan (mu < {x[0]})")
    if y[-1] < level:
        raise ValueError(f"the interval at delta NLL = {val} extends above the scan (mu > {x[-1]})")
    roots = spl.solve(level, extrapolate=False)
    lo = [r for r in roots if r < mu_hat]
    hi = [r for r in roots if r > mu_hat]
    if not lo or not hi:
        raise ValueError(f"no crossing of delta NLL = {val} on both sides of the minimum")
    return float(max(lo)), float(min(hi)), float(mu_hat)


def get_likelihood_width(nll: ArrayLike, mu_scan: ArrayLike, val: float = 0.5) -> float:
    r"""Half width :math:`(\mu_+ - \mu_-)/2` of the interval at :math:`\Delta(-\ln L) =
    \mathrm{val}` (see :func:`get_interval`); for ``val=0.5`` in the quadratic regime this
    is the one-standard-deviation uncertainty of :math:`\mu`.

    Raises:
        ValueError: the interval is not inside the scan.
    """
    lo, hi, _ = get_interval(nll, mu_scan, val)
    return (hi - lo) / 2.0
