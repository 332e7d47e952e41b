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

This module is the template-level interface (normalised templates, several nuisances at
once) of the one implementation of the codes, :mod:`inferno.likelihood.interpolation`.
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

from ..likelihood.interpolation import additive, check_code

__all__ = ["interp_deltas", "interp_shape", "interp_derivatives", "INTERP_CODES"]

ArrayLike = Union[Tensor, np.ndarray, float, list]
InterpCode = Union[int, str]

#: Interpolation codes understood by :func:`interp_shape`.
INTERP_CODES: Tuple[InterpCode, ...] = (0, 2, "4p")


def _check_code(code: InterpCode) -> InterpCode:
    return check_code(code, "histosys")


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


def _deltas(alpha: Tensor, f_nom: Tensor, f_up: Tensor, f_dw: Tensor, code: InterpCode,
            derivs: bool = False) -> Tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
    """Per-nuisance shifts (and derivatives), shape (..., n_nuis, n_bins); inputs validated."""
    return additive(code, alpha.unsqueeze(-1), f_nom, f_up, f_dw, derivs=derivs)


def interp_derivatives(alpha: ArrayLike, f_nom: ArrayLike, f_up: ArrayLike, f_dw: ArrayLike,
                       code: InterpCode = 2) -> Tuple[Union[Tensor, np.ndarray], ...]:
    r"""Shifts :math:`\delta_k(\alpha_k)` with their analytic derivatives.

    The nuisances act additively, so the Hessian of :math:`f(\vec\alpha)` is diagonal in
    :math:`k`; this returns :math:`\delta_k`, :math:`\partial\delta_k/\partial\alpha_k` and
    :math:`\partial^2\delta_k/\partial\alpha_k^2`, each of shape ``(..., n_nuis, n_bins)``.
    Closed forms are much cheaper than nested autograd.  At code 0's kink (:math:`\alpha=0`) the derivative
    is that of the :math:`\alpha\le0` branch, as autograd through the value gives.

    Args: as :func:`interp_deltas`.
    """
    code = _check_code(code)
    a, f0, fu, fd, any_tensor = _as_tensors(alpha, f_nom, f_up, f_dw)
    _check_shapes(a, f0, fu, fd)
    out = _deltas(a, f0, fu, fd, code, derivs=True)
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
    out = _deltas(a, f0, fu, fd, code)[0]
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
    out = f0 + _deltas(a, f0, fu, fd, code)[0].sum(-2)
    return out if any_tensor else out.numpy()
