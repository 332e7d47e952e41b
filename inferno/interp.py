r"""Template interpolation for shape nuisance parameters (HistFactory-style).

A shape nuisance :math:`\alpha_k` moves a binned template between its nominal
:math:`f^0`, its *up* template :math:`f^+_k` (at :math:`\alpha_k=+1`) and its *down*
template :math:`f^-_k` (at :math:`\alpha_k=-1`).  The effects of the nuisances are
additive:

.. math::

    f(\vec\alpha) = f^0 + \sum_k \delta_k(\alpha_k;\, f^0, f^+_k, f^-_k),
    \qquad \delta_k(0) = 0,\ \delta_k(\pm 1) = f^\pm_k - f^0 .

The interpolation codes follow HistFactory's numbering:

* ``code=0`` -- piecewise linear, kinked at :math:`\alpha=0`:
  :math:`\delta = \alpha\,(f^+ - f^0)` for :math:`\alpha>0`,
  :math:`\delta = \alpha\,(f^0 - f^-)` otherwise.
* ``code=2`` -- quadratic inside :math:`|\alpha|\le 1`, linear outside, with value
  *and* first derivative continuous at :math:`|\alpha|=1` (as in ROOT's HistFactory).
  With :math:`a = \tfrac12(f^+ + f^-) - f^0` and :math:`b = \tfrac12(f^+ - f^-)`:

  .. math::

      \delta(\alpha) = \begin{cases}
        (a + b) + (b + 2a)(\alpha - 1) & \alpha > 1 \\
        a\alpha^2 + b\alpha            & |\alpha| \le 1 \\
        (a - b) + (b - 2a)(\alpha + 1) & \alpha < -1
      \end{cases}

  (pyhf 0.7.6's ``code2`` omits the offsets :math:`a \pm b` outside
  :math:`|\alpha|\le1`, so it agrees with this one only inside.)
* ``code='4p'`` -- a sixth-order polynomial inside :math:`|\alpha|<1`, linear outside,
  continuous up to the second derivative at :math:`|\alpha|=1` (pyhf's ``code4p``).
  With :math:`\Delta^+ = f^+ - f^0`, :math:`\Delta^- = f^0 - f^-`,
  :math:`S = \tfrac12(\Delta^+ + \Delta^-)`, :math:`A = \tfrac1{16}(\Delta^+ - \Delta^-)`:

  .. math::

      \delta(\alpha) = \begin{cases}
        \alpha\,\Delta^+ & \alpha > 1 \\
        \alpha S + \alpha^2 A\,(15 - 10\alpha^2 + 3\alpha^4) & |\alpha| \le 1 \\
        \alpha\,\Delta^- & \alpha < -1
      \end{cases}

The functions are pure PyTorch and free of data-dependent Python branches (branches
are selected with :func:`torch.where`), so they can be differentiated with autograd or
transformed with :mod:`torch.func` (``vmap``, ``jacfwd``, ``hessian``).  They do not
modify their inputs.  The result is *not* normalised nor floored: that is the caller's
job (e.g. clamp at a small positive value, then divide by the sum).
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor

__all__ = ["interp_deltas", "interp_shape", "interp_derivatives", "INTERP_CODES"]

ArrayLike = Union[Tensor, np.ndarray, float, list]
InterpCode = Union[int, str]

#: Interpolation codes understood by :func:`interp_shape`.
INTERP_CODES: Tuple[InterpCode, ...] = (0, 2, "4p")


def _check_code(code: InterpCode) -> InterpCode:
    if isinstance(code, str):
        key = code.strip().lower()
        if key in ("0", "2"):
            return int(key)
        if key == "4p":
            return "4p"
    elif isinstance(code, (int, np.integer)) and not isinstance(code, bool) and int(code) in (0, 2):
        return int(code)
    raise ValueError(f"Unknown interpolation code {code!r}: expected one of {INTERP_CODES}")


def _as_tensors(alpha: ArrayLike, f_nom: ArrayLike, f_up: ArrayLike, f_dw: ArrayLike) -> Tuple[Tensor, Tensor, Tensor, Tensor, bool]:
    """Convert the inputs to tensors of a common floating dtype and device.

    Returns the four tensors and whether any input was a tensor (else the caller
    returns numpy).
    """
    inputs = (alpha, f_nom, f_up, f_dw)
    any_tensor = any(isinstance(v, Tensor) for v in inputs)
    ts = [v if isinstance(v, Tensor) else torch.as_tensor(np.asarray(v, dtype=np.float64)) for v in inputs]
    dtype = ts[0].dtype
    for t in ts[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    if not dtype.is_floating_point:
        dtype = torch.float64
    device = next((t.device for t in ts if isinstance(t, Tensor) and t.device.type != "cpu"), ts[0].device)
    ts = [t.to(dtype=dtype, device=device) for t in ts]
    return ts[0], ts[1], ts[2], ts[3], any_tensor


def _check_shapes(alpha: Tensor, f_nom: Tensor, f_up: Tensor, f_dw: Tensor) -> None:
    if f_nom.dim() != 1:
        raise ValueError(f"f_nom must be 1-D (n_bins,), got shape {tuple(f_nom.shape)}")
    n_bins = f_nom.shape[0]
    for name, t in (("f_up", f_up), ("f_dw", f_dw)):
        if t.dim() != 2 or t.shape[1] != n_bins:
            raise ValueError(f"{name} must have shape (n_nuis, n_bins={n_bins}), got {tuple(t.shape)}")
    if f_up.shape != f_dw.shape:
        raise ValueError(f"f_up and f_dw must have the same shape, got {tuple(f_up.shape)} and {tuple(f_dw.shape)}")
    n_nuis = f_up.shape[0]
    if alpha.dim() == 0 or alpha.shape[-1] != n_nuis:
        raise ValueError(f"alpha must have shape (..., n_nuis={n_nuis}), got {tuple(alpha.shape)}")


def _deltas(alpha: Tensor, f_nom: Tensor, f_up: Tensor, f_dw: Tensor, code: InterpCode) -> Tensor:
    """Per-nuisance shifts, shape (..., n_nuis, n_bins); inputs already validated tensors."""
    a = alpha.unsqueeze(-1)  # (..., n_nuis, 1)
    d_up = f_up - f_nom  # (n_nuis, n_bins): f+ - f0
    d_dw = f_nom - f_dw  # (n_nuis, n_bins): f0 - f-
    if code == 0:
        return torch.where(a > 0, a * d_up, a * d_dw)
    if code == 2:
        qa = 0.5 * (d_up - d_dw)  # a = (f+ + f-)/2 - f0
        qb = 0.5 * (d_up + d_dw)  # b = (f+ - f-)/2
        inside = qa * a * a + qb * a
        above = (qa + qb) + (qb + 2.0 * qa) * (a - 1.0)
        below = (qa - qb) + (qb - 2.0 * qa) * (a + 1.0)
        return torch.where(a > 1.0, above, torch.where(a < -1.0, below, inside))
    # code 4p
    s = 0.5 * (d_up + d_dw)
    aa = 0.0625 * (d_up - d_dw)
    a2 = a * a
    inside = a * s + a2 * aa * (15.0 + a2 * (-10.0 + 3.0 * a2))
    return torch.where(a > 1.0, a * d_up, torch.where(a < -1.0, a * d_dw, inside))


def _deltas_derivs(alpha: Tensor, f_nom: Tensor, f_up: Tensor, f_dw: Tensor, code: InterpCode,
                   right: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
    """Shifts and their first and second derivatives in alpha, each (..., n_nuis, n_bins).

    Inputs must be validated tensors.  The derivative at a kink (code 0 at alpha=0) is
    the left one (as autograd gives through :func:`torch.where`), or the right one where the
    optional bool mask ``right`` (shape of alpha) is True.
    """
    a = alpha.unsqueeze(-1)
    d_up = f_up - f_nom
    d_dw = f_nom - f_dw
    zero = torch.zeros((), dtype=a.dtype, device=a.device)
    if code == 0:
        up = a > 0
        if right is not None:
            up = up | ((a == 0) & right.unsqueeze(-1))
        return torch.where(up, a * d_up, a * d_dw), torch.where(up, d_up, d_dw).expand_as(a * d_up), zero.expand_as(a * d_up)
    if code == 2:
        qa = 0.5 * (d_up - d_dw)
        qb = 0.5 * (d_up + d_dw)
        hi, lo = a > 1.0, a < -1.0
        val = torch.where(hi, (qa + qb) + (qb + 2.0 * qa) * (a - 1.0),
                          torch.where(lo, (qa - qb) + (qb - 2.0 * qa) * (a + 1.0), qa * a * a + qb * a))
        d1 = torch.where(hi, qb + 2.0 * qa, torch.where(lo, qb - 2.0 * qa, 2.0 * qa * a + qb))
        d2 = torch.where(hi | lo, zero, 2.0 * qa * torch.ones_like(a))
        return val, d1, d2
    s = 0.5 * (d_up + d_dw)
    aa = 0.0625 * (d_up - d_dw)
    a2 = a * a
    hi, lo = a > 1.0, a < -1.0
    val = torch.where(hi, a * d_up, torch.where(lo, a * d_dw, a * s + a2 * aa * (15.0 + a2 * (-10.0 + 3.0 * a2))))
    d1 = torch.where(hi, d_up.expand_as(val), torch.where(lo, d_dw.expand_as(val), s + aa * a * (30.0 + a2 * (-40.0 + 18.0 * a2))))
    d2 = torch.where(hi | lo, zero, aa * (30.0 + a2 * (-120.0 + 90.0 * a2)))
    return val, d1, d2


def _coeffs(f_nom: Tensor, f_up: Tensor, f_dw: Tensor) -> Tuple[Tensor, Tensor]:
    r"""Templates ``(S, A)``, each (n_nuis, n_bins), of the separable form of the shifts.

    Every code's shift is :math:`\delta_k(\alpha) = \alpha\, S_k + g(\alpha)\, A_k` with
    :math:`S = \tfrac12(\Delta^+ + \Delta^-)`, :math:`A = \tfrac1{16}(\Delta^+ - \Delta^-)`
    (:math:`\Delta^+ = f^+ - f^0`, :math:`\Delta^- = f^0 - f^-`) and a scalar function
    :math:`g` of the code (:func:`_g_derivs`), so sums over nuisances are matrix products.
    """
    d_up = f_up - f_nom
    d_dw = f_nom - f_dw
    return 0.5 * (d_up + d_dw), 0.0625 * (d_up - d_dw)


def _g_derivs(alpha: Tensor, code: InterpCode, right: Optional[Tensor] = None,
              derivs: bool = True) -> Tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
    r""":math:`g(\alpha)`, :math:`g'` and :math:`g''` (shape of ``alpha``) of the separable
    form of :func:`_coeffs`:

    * code 0: :math:`g = 8|\alpha|` (:math:`\Delta^\pm = S \pm 8A`); at the kink
      :math:`g' = -8` (the :math:`\alpha \le 0` branch, as :func:`_deltas_derivs`), or
      :math:`+8` where ``right`` is True;
    * code 2: with :math:`c = \mathrm{clamp}(\alpha, -1, 1)`, :math:`g = 8c(2\alpha - c)`,
      :math:`g' = 16c`, :math:`g'' = 16\,[|\alpha| \le 1]` (:math:`a = 8A`, :math:`b = S`);
    * code 4p: :math:`g = \alpha^2(15 - 10\alpha^2 + 3\alpha^4)` inside :math:`|\alpha| \le 1`,
      :math:`8|\alpha|` outside.

    Derivatives are None unless ``derivs``.
    """
    if code == 0:
        g = 8.0 * alpha.abs()
        if not derivs:
            return g, None, None
        pos = alpha > 0
        if right is not None:
            pos = pos | ((alpha == 0) & right)
        return g, torch.where(pos, 8.0, -8.0).to(alpha.dtype), torch.zeros_like(alpha)
    if code == 2:
        c = alpha.clamp(-1.0, 1.0)
        g = 8.0 * c * (2.0 * alpha - c)
        if not derivs:
            return g, None, None
        return g, 16.0 * c, torch.where(alpha.abs() <= 1.0, 16.0, 0.0).to(alpha.dtype)
    a2 = alpha * alpha
    out = alpha.abs() > 1.0
    g = torch.where(out, 8.0 * alpha.abs(), a2 * (15.0 + a2 * (-10.0 + 3.0 * a2)))
    if not derivs:
        return g, None, None
    g1 = torch.where(out, 8.0 * alpha.sign(), alpha * (30.0 + a2 * (-40.0 + 18.0 * a2)))
    g2 = torch.where(out, torch.zeros_like(alpha), 30.0 + a2 * (-120.0 + 90.0 * a2))
    return g, g1, g2


def interp_derivatives(alpha: ArrayLike, f_nom: ArrayLike, f_up: ArrayLike, f_dw: ArrayLike,
                       code: InterpCode = 2) -> Tuple[Union[Tensor, np.ndarray], ...]:
    r"""Shifts :math:`\delta_k(\alpha_k)` with their analytic derivatives.

    The nuisances act additively, so the Hessian of :math:`f(\vec\alpha)` is diagonal in
    :math:`k`; this returns :math:`\delta_k`, :math:`\partial\delta_k/\partial\alpha_k` and
    :math:`\partial^2\delta_k/\partial\alpha_k^2`, each of shape ``(..., n_nuis, n_bins)``.
    Used by the batched Newton fits of :mod:`inferno.inference`, where closed forms are
    much cheaper than nested autograd.  At code 0's kink (:math:`\alpha=0`) the derivative
    is that of the :math:`\alpha\le0` branch, as autograd through the value gives.

    Args: as :func:`interp_deltas`.
    """
    code = _check_code(code)
    a, f0, fu, fd, any_tensor = _as_tensors(alpha, f_nom, f_up, f_dw)
    _check_shapes(a, f0, fu, fd)
    out = _deltas_derivs(a, f0, fu, fd, code)
    return out if any_tensor else tuple(o.numpy() for o in out)


def interp_deltas(alpha: ArrayLike, f_nom: ArrayLike, f_up: ArrayLike, f_dw: ArrayLike, code: InterpCode = 2) -> Union[Tensor, np.ndarray]:
    r"""Per-nuisance template shifts :math:`\delta_k(\alpha_k)`.

    Args:
        alpha: nuisance values in interpolation units, shape ``(..., n_nuis)``.
        f_nom: nominal template, shape ``(n_bins,)``.
        f_up: up templates (at :math:`\alpha_k=+1`), shape ``(n_nuis, n_bins)``.
        f_dw: down templates (at :math:`\alpha_k=-1`), shape ``(n_nuis, n_bins)``.
        code: interpolation code, ``0``, ``2`` or ``'4p'`` (see the module docstring).

    Returns:
        :math:`\delta_k`, shape ``(..., n_nuis, n_bins)``: a tensor if any input is a
        tensor, else a numpy array.

    Raises:
        ValueError: unknown code or inconsistent shapes.
    """
    code = _check_code(code)
    a, f0, fu, fd, any_tensor = _as_tensors(alpha, f_nom, f_up, f_dw)
    _check_shapes(a, f0, fu, fd)
    out = _deltas(a, f0, fu, fd, code)
    return out if any_tensor else out.numpy()


def interp_shape(alpha: ArrayLike, f_nom: ArrayLike, f_up: ArrayLike, f_dw: ArrayLike, code: InterpCode = 2) -> Union[Tensor, np.ndarray]:
    r"""Interpolated template :math:`f^0 + \sum_k \delta_k(\alpha_k)`.

    Args:
        alpha: nuisance values in interpolation units, shape ``(..., n_nuis)``
            (e.g. ``(n_nuis,)``, or ``(n_scan, n_nuis)`` for a batch).
        f_nom: nominal template, shape ``(n_bins,)``.
        f_up: up templates (at :math:`\alpha_k=+1`), shape ``(n_nuis, n_bins)``.
        f_dw: down templates (at :math:`\alpha_k=-1`), shape ``(n_nuis, n_bins)``.
        code: interpolation code, ``0`` (piecewise linear), ``2`` (quadratic inside
            :math:`|\alpha|\le1`, C1-continuous linear extrapolation) or ``'4p'``
            (pyhf's polynomial + linear).

    Returns:
        The template, shape ``(..., n_bins)``; not normalised nor floored (the caller
        decides).  A tensor if any input is a tensor, else a numpy array.  Inputs are
        promoted to a common floating dtype (numpy inputs count as float64).

    Raises:
        ValueError: unknown code or inconsistent shapes.

    Example:
        >>> import torch
        >>> f0 = torch.tensor([0.5, 0.5]); fu = torch.tensor([[0.6, 0.4]]); fd = torch.tensor([[0.45, 0.55]])
        >>> interp_shape(torch.tensor([1.0]), f0, fu, fd)
        tensor([0.6000, 0.4000])
    """
    code = _check_code(code)
    a, f0, fu, fd, any_tensor = _as_tensors(alpha, f_nom, f_up, f_dw)
    _check_shapes(a, f0, fu, fd)
    out = f0 + _deltas(a, f0, fu, fd, code).sum(-2)
    return out if any_tensor else out.numpy()
