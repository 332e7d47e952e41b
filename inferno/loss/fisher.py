r"""The INFERNO loss read off the Fisher information of the Asimov likelihood.

At the Asimov point :math:`n = \nu(\theta_0)` the Hessian of the NLL is the Fisher information

.. math::

    I = \sum_{\text{channels}} J\,\mathrm{diag}(1/\nu)\,J^\top + C,
    \qquad J_{pi} = \partial\nu_i / \partial\theta_p,

with :math:`C` the curvature of the constraint terms, and the covariance of the parameters is
:math:`I^{-1}`. The loss is a scalar of the POI block :math:`V = E^\top I^{-1} E` (:math:`E` the
columns of the POIs): the variance of one POI (all other parameters, other POIs included,
profiled), the trace of :math:`V`, or :math:`\ln\det V`. Everything is float64, factorised by
Cholesky (never an explicit inverse), and differentiable with autograd in :math:`J`,
:math:`\nu` and :math:`C`.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

__all__ = ["asimov_fisher", "poi_loss", "cholesky_ok", "poi_block", "LOSS_KINDS", "FisherError"]

#: the scalars of the POI covariance block a loss can be
LOSS_KINDS = ("variance", "trace", "logdet")
#: a Cholesky pivot below this fraction of its diagonal entry counts as singular
_SINGULAR = 1e-12


class FisherError(ValueError):
    """The Fisher information is not finite or not positive definite."""


def asimov_fisher(jac: Tensor, nu: Tensor) -> Tensor:
    r""":math:`J\,\mathrm{diag}(1/\nu)\,J^\top` ``(P, P)`` of one channel, ``jac`` ``(P, N)``,
    ``nu`` ``(N,)``."""
    return (jac / nu) @ jac.transpose(-1, -2)


def cholesky_ok(fisher: Tensor) -> Tuple[Tensor, Tensor]:
    """The Cholesky factor of ``fisher`` and whether it is positive definite and not
    numerically singular (a 0-dim bool tensor: no host synchronisation)."""
    chol, info = torch.linalg.cholesky_ex(fisher)
    d = chol.diagonal()
    return chol, (info == 0) & (d * d >= _SINGULAR * fisher.diagonal()).all()


def poi_block(chol: Tensor, poi: Sequence[int], kind: str = "variance", which: int = 0) -> Tensor:
    r"""The scalar ``kind`` of the POI block :math:`V = E^\top I^{-1} E` from the Cholesky
    factor of :math:`I`."""
    P = chol.shape[-1]
    E = torch.zeros(P, len(poi), dtype=chol.dtype, device=chol.device)
    E[list(poi), torch.arange(len(poi))] = 1.0
    V = E.T @ torch.cholesky_solve(E, chol)
    if kind == "variance":
        return V[which, which]
    if kind == "trace":
        return V.diagonal().sum()
    return torch.logdet(V)


def poi_loss(fisher: Tensor, poi: Sequence[int], kind: str = "variance", names: Optional[Sequence[str]] = None,
             which: int = 0) -> Tensor:
    r"""A scalar of the POI block of :math:`I^{-1}`.

    Args:
        fisher: the Fisher information :math:`I` ``(P, P)``, float64.
        poi: positions of the POIs in the parameter vector.
        kind: ``'variance'`` (of the POI ``poi[which]``, all others profiled), ``'trace'`` or
            ``'logdet'`` of the POI block :math:`V`.
        names: parameter names, for the error message.

    Raises:
        FisherError: :math:`I` not finite, or not positive definite (numerically singular),
            with its eigenvalues and the parameter names.
    """
    if kind not in LOSS_KINDS:
        raise ValueError(f"kind must be one of {LOSS_KINDS}, got {kind!r}")
    P = fisher.shape[-1]
    if not bool(torch.isfinite(fisher).all()):
        raise FisherError(f"the Fisher information is not finite:\n{fisher.detach().cpu().numpy()}")
    chol, ok = cholesky_ok(fisher)
    if not bool(ok):
        ev = torch.linalg.eigvalsh(fisher.detach()).cpu().numpy()
        who = ", ".join(names) if names is not None else f"{P} parameters"
        raise FisherError(
            f"the Fisher information of ({who}) is not positive definite, or numerically singular "
            f"(eigenvalues {ev}): a free parameter that does not change the expected counts, or "
            "parameters whose effects are degenerate, leave the POI variance undefined; constrain "
            f"them or remove them.\nFisher information:\n{fisher.detach().cpu().numpy()}")
    return poi_block(chol, poi, kind, which)
