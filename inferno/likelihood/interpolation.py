r"""HistFactory interpolation codes, with their first and second derivatives.

A systematic variation is known at its nominal value and at :math:`\alpha = \pm1` (the *up*
and *down* variations). The codes say how to interpolate in between and extrapolate beyond.
Two families exist:

**Additive codes** (``histosys``): the shift of a histogram,
:math:`\nu(\alpha) = \nu^0 + \delta(\alpha)`, with :math:`\Delta^+ = \nu^+ - \nu^0`,
:math:`\Delta^- = \nu^0 - \nu^-`:

* ``0``: piecewise linear, kinked at 0: :math:`\delta = \alpha\Delta^+` for :math:`\alpha > 0`,
  :math:`\alpha\Delta^-` otherwise.
* ``2``: quadratic inside :math:`|\alpha| \le 1`, linear outside, value *and* first
  derivative continuous at :math:`|\alpha| = 1` (ROOT's HistFactory). With
  :math:`a = \tfrac12(\Delta^+ - \Delta^-)`, :math:`b = \tfrac12(\Delta^+ + \Delta^-)`:
  :math:`\delta = a\alpha^2 + b\alpha` inside, :math:`(a + b) + (b + 2a)(\alpha - 1)` above,
  :math:`(a - b) + (b - 2a)(\alpha + 1)` below. (pyhf 0.7.6's ``code2`` drops the offsets
  :math:`a \pm b` outside, so the two agree only inside.)
* ``'4p'``: a sixth-order polynomial inside :math:`|\alpha| < 1`, linear outside, C2 at
  :math:`|\alpha| = 1`: with :math:`S = \tfrac12(\Delta^+ + \Delta^-)`,
  :math:`A = \tfrac1{16}(\Delta^+ - \Delta^-)`,
  :math:`\delta = \alpha S + \alpha^2 A (15 - 10\alpha^2 + 3\alpha^4)` inside,
  :math:`\alpha\Delta^\pm` outside (pyhf's ``code4p``; ROOT's PiecewiseInterpolation code 4).

**Multiplicative codes** (``normsys``): a factor :math:`f(\alpha)` with :math:`f(0) = 1`,
:math:`f(1) = h` (``hi``), :math:`f(-1) = l` (``lo``):

* ``1``: exponential, kinked at 0: :math:`f = h^\alpha` for :math:`\alpha \ge 0`,
  :math:`l^{-\alpha}` otherwise.
* ``4``: exponential outside :math:`|\alpha| \ge 1`, inside the polynomial
  :math:`1 + \sum_{k=1}^6 c_k \alpha^k` whose coefficients match the value and the first
  two derivatives of the exponentials at :math:`\pm1` (:func:`code4_coefficients`).

Every function returns the value and, on request, the first and second derivatives in
:math:`\alpha`, elementwise with broadcasting, free of data-dependent Python branches. At a
kink (:math:`\alpha = 0` for codes 0 and 1) the derivative is the left one, or the right one
where the bool mask ``right`` is True (the Newton solver needs both sides).
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor

__all__ = ["ADDITIVE_CODES", "MULTIPLICATIVE_CODES", "check_code", "additive", "multiplicative",
           "code4_coefficients"]

Code = Union[int, str]
Derivs = Tuple[Tensor, Optional[Tensor], Optional[Tensor]]

#: interpolation codes of ``histosys`` (additive)
ADDITIVE_CODES: Tuple[Code, ...] = (0, 2, "4p")
#: interpolation codes of ``normsys`` (multiplicative)
MULTIPLICATIVE_CODES: Tuple[Code, ...] = (1, 4)
#: codes whose derivative jumps at alpha = 0
KINKED_CODES: Tuple[Code, ...] = (0, 1)


def check_code(code: Code, kind: str = "histosys") -> Code:
    """Normalise an interpolation code (``2``, ``'2'``, ``'code2'``, ``'4p'``, ...) and check
    that it is one of ``kind``'s (``'histosys'``: 0, 2, '4p'; ``'normsys'``: 1, 4)."""
    allowed = ADDITIVE_CODES if kind == "histosys" else MULTIPLICATIVE_CODES
    if isinstance(code, bool):  # True == 1 and False == 0: never a code
        raise ValueError(f"unknown {kind} interpolation code {code!r}: expected one of {allowed}")
    key: object = code
    if isinstance(code, str):
        s = code.strip().lower()
        s = s[4:] if s.startswith("code") else s
        key = int(s) if s.isdigit() else s
    elif isinstance(code, (int, np.integer)) and not isinstance(code, bool):
        key = int(code)
    if key not in allowed:
        raise ValueError(f"unknown {kind} interpolation code {code!r}: expected one of {allowed}")
    return key  # type: ignore[return-value]


def _side(alpha: Tensor, right: Optional[Tensor]) -> Tensor:
    pos = alpha > 0
    if right is not None:
        pos = pos | ((alpha == 0) & right)
    return pos


def additive(code: Code, alpha: Tensor, nom: Tensor, hi: Tensor, lo: Tensor,
             derivs: bool = True, right: Optional[Tensor] = None) -> Derivs:
    r"""Shift :math:`\delta(\alpha)` of an additive code and its derivatives.

    ``alpha`` broadcasts against ``nom``, ``hi``, ``lo`` (e.g. ``(B, T, 1)`` against
    ``(T, N)``). Returns ``(delta, d delta / d alpha, d2 delta / d alpha2)``; the
    derivatives are None unless ``derivs``.
    """
    d_up = hi - nom
    d_dn = nom - lo
    if code == 0:
        pos = _side(alpha, right)
        val = torch.where(alpha > 0, alpha * d_up, alpha * d_dn)
        if not derivs:
            return val, None, None
        d1 = torch.where(pos, d_up, d_dn)
        return val, d1, torch.zeros_like(d1)
    if code == 2:
        a = 0.5 * (d_up - d_dn)
        b = 0.5 * (d_up + d_dn)
        above, below = alpha > 1.0, alpha < -1.0
        val = torch.where(above, (a + b) + (b + 2.0 * a) * (alpha - 1.0),
                          torch.where(below, (a - b) + (b - 2.0 * a) * (alpha + 1.0), (a * alpha + b) * alpha))
        if not derivs:
            return val, None, None
        d1 = torch.where(above, b + 2.0 * a, torch.where(below, b - 2.0 * a, 2.0 * a * alpha + b))
        d2 = torch.where(above | below, torch.zeros_like(d1), (2.0 * a).expand_as(d1))
        return val, d1, d2
    if code == "4p":
        s = 0.5 * (d_up + d_dn)
        c = 0.0625 * (d_up - d_dn)
        a2 = alpha * alpha
        above, below = alpha > 1.0, alpha < -1.0
        val = torch.where(above, alpha * d_up, torch.where(below, alpha * d_dn,
                                                             alpha * s + a2 * c * (15.0 + a2 * (-10.0 + 3.0 * a2))))
        if not derivs:
            return val, None, None
        d1 = torch.where(above, d_up.expand_as(val), torch.where(below, d_dn.expand_as(val),
                                                                   s + c * alpha * (30.0 + a2 * (-40.0 + 18.0 * a2))))
        d2 = torch.where(above | below, torch.zeros_like(val), c * (30.0 + a2 * (-120.0 + 90.0 * a2)))
        return val, d1, d2
    raise ValueError(f"unknown additive interpolation code {code!r}")


def code4_coefficients(hi: Tensor, lo: Tensor) -> Tensor:
    r"""Coefficients :math:`c_1..c_6` (last dimension) of code 4's inner polynomial.

    They solve the six conditions :math:`p^{(m)}(1) = \frac{d^m}{d\alpha^m} h^\alpha|_1` and
    :math:`p^{(m)}(-1) = \frac{d^m}{d\alpha^m} l^{-\alpha}|_{-1}` for :math:`m = 0, 1, 2`.
    """
    k = np.arange(1, 7)
    rows = []
    for x in (1.0, -1.0):
        rows.append(x ** k)                                  # value
        rows.append(k * x ** (k - 1))                        # first derivative
        rows.append(k * (k - 1) * x ** np.maximum(k - 2, 0))  # second derivative
    A = torch.as_tensor(np.array(rows), dtype=hi.dtype, device=hi.device)  # (6 conditions, 6 coefficients)
    lh, ll = torch.log(hi), torch.log(lo)
    # value, slope and curvature of h^a at a = 1 and of l^-a at a = -1, minus the polynomial's constant 1
    rhs = torch.stack([hi - 1.0, lh * hi, lh * lh * hi, lo - 1.0, -ll * lo, ll * ll * lo], -1)
    return torch.linalg.solve(A, rhs.unsqueeze(-1)).squeeze(-1)


def multiplicative(code: Code, alpha: Tensor, hi: Tensor, lo: Tensor, derivs: bool = True,
                   right: Optional[Tensor] = None, coef: Optional[Tensor] = None) -> Derivs:
    r"""Factor :math:`f(\alpha)` of a multiplicative code and its derivatives.

    ``hi``, ``lo`` are the factors at :math:`\alpha = \pm1` (> 0). For code 4, ``coef`` may
    hold :func:`code4_coefficients` precomputed.
    """
    lh, ll = torch.log(hi), torch.log(lo)
    if code == 1:
        pos = _side(alpha, right)
        val = torch.where(alpha >= 0, torch.exp(alpha * lh), torch.exp(-alpha * ll))
        if not derivs:
            return val, None, None
        slope = torch.where(pos, lh, -ll)
        return val, val * slope, val * slope * slope
    if code == 4:
        c = code4_coefficients(hi, lo) if coef is None else coef
        above, below = alpha >= 1.0, alpha <= -1.0
        a = torch.where(above | below, torch.zeros_like(alpha), alpha)  # keeps the unused branch finite
        powers = torch.stack([a ** k for k in range(1, 7)], -1)
        inner = 1.0 + (powers * c).sum(-1)
        e_up, e_dn = torch.exp(alpha * lh), torch.exp(-alpha * ll)
        val = torch.where(above, e_up, torch.where(below, e_dn, inner))
        if not derivs:
            return val, None, None
        k = torch.arange(1, 7, dtype=alpha.dtype, device=alpha.device)
        low1 = torch.stack([torch.ones_like(a)] + [a ** j for j in range(1, 6)], -1)
        low2 = torch.stack([torch.zeros_like(a), torch.ones_like(a)] + [a ** j for j in range(1, 5)], -1)
        d1_in = (k * low1 * c).sum(-1)
        d2_in = (k * (k - 1) * low2 * c).sum(-1)
        d1 = torch.where(above, e_up * lh, torch.where(below, -e_dn * ll, d1_in))
        d2 = torch.where(above, e_up * lh * lh, torch.where(below, e_dn * ll * ll, d2_in))
        return val, d1, d2
    raise ValueError(f"unknown multiplicative interpolation code {code!r}")
