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


def cholesky_ok(fisher: Tensor, positive: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """The Cholesky factor of ``fisher`` and whether it is finite, positive definite and not
    numerically singular, and every entry of ``positive`` > 0: a 0-dim bool tensor (no host
    synchronisation), one reduction (``x * 0 + 1`` is NaN for NaN and inf, which fail ``> 0``)."""
    chol, info = torch.linalg.cholesky_ex(fisher)
    d = chol.diagonal()
    parts = [d * d - _SINGULAR * fisher.diagonal(), fisher.reshape(-1) * 0.0 + 1.0]
    if positive is not None:
        parts.append(positive.reshape(-1))
    return chol, (info == 0) & (torch.cat(parts).amin() > 0)


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


def _asimov(nom: Tensor, shifts: Tensor, var: Tensor, k: dict) -> Tuple[Tensor, ...]:
    """The forward computation of :class:`AsimovPoiLoss` (differentiable with autograd too)."""
    nj = (k["FA"] * nom).sum(1)  # nu, then the Jacobian's rows
    nu, jac = nj[0], nj[1:]
    if shifts.numel():
        jac = jac.index_add(0, k["h_a"], k["F_h"] * shifts)
    C = k["C"]
    if var.numel():
        C = torch.diag(k["curv"].index_put((k["stat"],), nu * nu / var))
    fisher = torch.addmm(C, jac / nu, jac.T)
    if k["embed"] is not None:
        fisher = k["fixed_full"].index_put(k["embed"], fisher, accumulate=True)
    chol, ok = cholesky_ok(fisher, positive=nu)  # and positive counts
    E = k["E"]  # the columns of the POIs
    U = torch.cholesky_solve(E, chol)  # I^-1 E
    V = E.T @ U
    kind = k["kind"]
    loss = V[0, 0] if kind == "variance" else (V.diagonal().sum() if kind == "trace" else torch.logdet(V))
    return loss, fisher, ok, nu, jac, U, V


class AsimovPoiLoss(torch.autograd.Function):
    r"""The loss of one batch from the learned channel's soft counts, as one autograd node with
    an analytic backward (a few dozen numbers: autograd's bookkeeping would cost more than the
    arithmetic).

    Inputs: ``nom`` (n_processes, N) the nominal counts, ``shifts`` (T, N) the histosys
    derivative templates (or an empty tensor), ``var`` (N,) the MC-statistics variance (or
    an empty tensor), ``k`` the constants of :meth:`Analysis._constants`. With
    :math:`\nu = \sum_p F_p \nu^0_p`, :math:`J = \sum_p A_p \nu^0_p` plus :math:`F_{p(t)} s_t`
    on the histosys rows and :math:`I = J\,\mathrm{diag}(1/\nu)J^\top + \mathrm{diag}(c)` (the
    MC-statistics factors' :math:`c_i = \nu_i^2/\sigma_i^2`), embedded with the fixed channels'
    block, the backward of :math:`L(I)` is :math:`G = \partial L/\partial I` (:math:`-uu^\top`
    for a variance, :math:`u = I^{-1}e`), :math:`\partial L/\partial J = 2 G J/\nu`,
    :math:`\partial L/\partial\nu_i = -(J^\top G J)_{ii}/\nu_i^2 + 2 G_{s_i s_i}\nu_i/\sigma_i^2`.
    A backward that builds a graph (``create_graph=True``) differentiates :func:`_asimov` with
    autograd instead. Returns the loss, the Fisher information and the check flag (the last two
    not differentiable).
    """

    @staticmethod
    def forward(ctx, nom: Tensor, shifts: Tensor, var: Tensor, k: dict):  # type: ignore[override]
        loss, fisher, ok, nu, jac, U, V = _asimov(nom, shifts, var, k)
        ctx.k = k
        ctx.save_for_backward(nom, shifts, var, nu, jac, U, V)
        ctx.mark_non_differentiable(fisher, ok)
        return loss, fisher, ok

    @staticmethod
    def backward(ctx, g: Tensor, _g_fisher: Tensor, _g_ok: Tensor):  # type: ignore[override]
        nom, shifts, var, nu, jac, U, V = ctx.saved_tensors
        k = ctx.k
        if torch.is_grad_enabled():  # higher derivatives: autograd through the same computation
            inputs = [t for t, need in zip((nom, shifts, var), ctx.needs_input_grad) if need]
            loss = _asimov(nom, shifts, var, k)[0]
            grads = iter(torch.autograd.grad(loss, inputs, g, create_graph=True, allow_unused=True))
            return (*[next(grads) if need else None for need in ctx.needs_input_grad[:3]], None)
        kind = k["kind"]
        if kind == "variance":
            G = -torch.outer(U[:, 0], U[:, 0])
        elif kind == "trace":
            G = -U @ U.T
        else:
            G = -U @ torch.linalg.solve(V, U.T)
        PL = jac.shape[0]
        G = (g * G)[:PL, :PL]
        GJ = G @ jac
        g_jac = 2.0 * GJ / nu
        g_nu = -(jac * GJ).sum(0) / (nu * nu)
        g_var = None
        if var.numel():
            gs = G.diagonal()[k["stat"]]
            g_nu = g_nu + gs * 2.0 * nu / var
            g_var = -gs * nu * nu / (var * var)
        g_nom = (k["FA"] * torch.cat([g_nu.unsqueeze(0), g_jac]).unsqueeze(1)).sum(0)
        g_shifts = g_jac[k["h_a"]] * k["F_h"] if ctx.needs_input_grad[1] else None
        return g_nom, g_shifts, g_var, None
