r"""The fused fast path of the exact INFERNO loss for two processes (the paper's signal and
background): the Fisher information and the POI variance computed on the host from the soft
histograms and their tangents, with a hand-written backward, as single autograd nodes.

It computes the same loss as the general :func:`inferno.loss.inferno_loss` on the same model
(the tests compare the two), only faster: a few dozen numbers, in Python floats or numpy,
cost less than the dispatch of the torch operations that would compute them.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from .tangents import _chain_backward, _chain_forward

_SINGULAR = 1e-12


def _cholesky_info(hess: Tensor) -> Tuple[Tensor, Tensor]:
    """``torch.linalg.cholesky_ex`` with numerically singular matrices flagged (info > 0)."""
    chol, info = torch.linalg.cholesky_ex(hess)
    d = chol.diagonal(dim1=-2, dim2=-1)
    singular = (d * d < _SINGULAR * hess.diagonal(dim1=-2, dim2=-1)).any(-1)
    return chol, torch.where(singular & (info == 0), torch.ones_like(info), info)


#: the Fisher algebra runs in plain Python floats when P (P + 1) / 2 * n_bins is at most this
#: (the paper's problems: P <= 4, 10 bins), where it costs less than the dispatch of the
#: numpy calls; numpy above
_PY_FISHER_MAX = 1500


def _fisher_forward(hs: Tensor, hb: Tensor, ds: Optional[Tensor], db: Optional[Tensor],
                    k: Dict[str, Any]) -> Tuple[float, Any, int, Tuple[Any, ...]]:
    r""":math:`[H^{-1}]_{\mu\mu}` with :math:`H = J\,\mathrm{diag}(1/\nu)\,J^\top + C`, in float64.

    ``hs``, ``hb`` (bins,): weighted means of the network outputs over the signal and
    background rows; ``ds`` (K_s, bins), ``db`` (K_b, bins) (or None): the same means of the
    output tangents of the shape nuisances acting on each group; ``k``: constants (see
    :meth:`Inferno._fisher_consts`). With :math:`c = 1/(1 + n_\text{bins}\epsilon)`,
    :math:`\tilde f = c(h + \epsilon)`, :math:`\nu = S_0 \tilde f_s + B_0 \tilde f_b` and
    :math:`J = \partial_\theta S\, \tilde f_s^\top + \partial_\theta B\, \tilde f_b^\top`
    plus :math:`S_0 c\, d_s` / :math:`B_0 c\, d_b` on the rows of the shape nuisances.

    These are a few dozen numbers: the algebra runs on the host (one transfer in, one out),
    in plain Python floats for small problems and in numpy otherwise, where an operation
    costs a fraction of a torch dispatch. Returns the variance (nan when H is not positive
    definite), the Hessian (P, P) (nested lists or an array), the Cholesky ``info`` (0:
    positive definite, not numerically singular, finite positive variance) and what
    :func:`_fisher_backward` needs.
    """
    ks = ds.shape[0] if ds is not None else 0
    kb = db.shape[0] if db is not None else 0
    if k["py"] and hs.device.type == "cpu":  # floats straight from the tensors
        rows = [hs.tolist(), hb.tolist()]
        for t, n in ((ds, ks), (db, kb)):
            if n:
                rows += t.tolist()
        return _fisher_forward_py(rows, ks, kb, k)
    parts = [hs.detach().reshape(1, -1), hb.detach().reshape(1, -1)]
    parts += [t.detach() for t in (ds, db) if t is not None and t.shape[0]]
    a = torch.cat(parts).to("cpu", torch.float64)
    if k["py"]:
        return _fisher_forward_py(a.tolist(), ks, kb, k)
    a = a.numpy()
    c, eps, S0, B0 = k["c"], k["eps"], k["S0"], k["B0"]
    fs = (a[0] + eps) * c
    fb = (a[1] + eps) * c
    nu = S0 * fs + B0 * fb
    jac = np.outer(k["dS"], fs) + np.outer(k["dB"], fb)  # (P, bins)
    if ks:
        jac[k["pos_s"]] += (S0 * c) * a[2:2 + ks]  # distinct positions
    if kb:
        jac[k["pos_b"]] += (B0 * c) * a[2 + ks:]
    hess = (jac / nu) @ jac.T
    hess[k["diag"]] += k["curv"]
    info, var, v = 1, math.nan, None
    if np.isfinite(hess).all():
        try:
            chol = np.linalg.cholesky(hess)
        except np.linalg.LinAlgError:
            chol = None
        if chol is not None:
            dg = np.diagonal(chol)
            if not (dg * dg < _SINGULAR * np.diagonal(hess)).any():
                v = np.linalg.solve(chol.T, np.linalg.solve(chol, k["e0"]))  # (P,)
                var = float(v[0])
                info = 0 if math.isfinite(var) and var > 0 else 1
    return var, hess, info, (jac, nu, v, ks, kb)


def _variance_outputs(ctx: Any, var: float, hess: Any, device: torch.device) -> Tuple[Tensor, Tensor]:
    """The outputs of a fused INFERNO node: the POI variance (differentiable) and the Hessian
    (marked non-differentiable), as float64 tensors on ``device``."""
    hess_t = _host_tensor(hess, device)
    ctx.mark_non_differentiable(hess_t)
    return torch.tensor(var, dtype=torch.float64, device=device), hess_t


def _first_order_only(backward: Callable) -> Callable:
    """Wraps the hand-written backward of a fused INFERNO node: it gives first derivatives
    only, so a backward pass that builds a graph (``create_graph=True``, e.g. a gradient
    penalty or a Hessian in the weights) is an error rather than silently wrong numbers."""
    @functools.wraps(backward)
    def wrapper(ctx: Any, *grads: Any) -> Any:
        if torch.is_grad_enabled():
            raise RuntimeError("the fused exact-INFERNO loss has first derivatives only; for "
                               "higher-order derivatives (create_graph=True) use hessian='autograd'")
        with torch.no_grad():
            return backward(ctx, *grads)
    return wrapper


def _fisher_forward_py(rows: List[List[float]], ks: int, kb: int, k: Dict[str, Any]
                       ) -> Tuple[float, List[List[float]], int, Tuple[Any, ...]]:
    """:func:`_fisher_forward` in Python floats (the same operations)."""
    c, eps, S0, B0 = k["c"], k["eps"], k["S0"], k["B0"]
    fs = [(h + eps) * c for h in rows[0]]
    fb = [(h + eps) * c for h in rows[1]]
    nu = [S0 * x + B0 * y for x, y in zip(fs, fb)]
    if not all(x > 0 for x in nu):  # an empty bin (eps = 0): the Hessian is not finite
        P = len(k["dS_l"])
        return math.nan, [[math.nan] * P for _ in range(P)], 1, (None, nu, None, ks, kb)
    jac = [[p * x + q * y for x, y in zip(fs, fb)] for p, q in zip(k["dS_l"], k["dB_l"])]
    for pos, scale, r0 in ((k["pos_s_l"][:ks], S0 * c, 2), (k["pos_b_l"][:kb], B0 * c, 2 + ks)):
        for j, p in enumerate(pos):
            jac[p] = [x + scale * y for x, y in zip(jac[p], rows[r0 + j])]
    P = len(jac)
    jn = [[x / n for x, n in zip(row, nu)] for row in jac]
    hess = [[0.0] * P for _ in range(P)]
    for i in range(P):
        for j in range(i + 1):
            hess[i][j] = hess[j][i] = sum([x * y for x, y in zip(jn[i], jac[j])])
        hess[i][i] += k["curv_l"][i]
    var, v, info = math.nan, None, 1
    if all(math.isfinite(x) for row in hess for x in row):
        L = [[0.0] * P for _ in range(P)]
        ok = True
        for i in range(P):  # Cholesky, lower
            Li = L[i]
            for j in range(i + 1):
                Lj = L[j]
                s = hess[i][j] - sum([Li[q] * Lj[q] for q in range(j)])
                if i == j:
                    if not (s > 0 and s >= _SINGULAR * hess[i][i]):
                        ok = False
                        break
                    Li[i] = math.sqrt(s)
                else:
                    Li[j] = s / Lj[j]
            if not ok:
                break
        if ok:  # L y = e0, L^T v = y
            y = [0.0] * P
            for i in range(P):
                y[i] = ((1.0 if i == 0 else 0.0) - sum([L[i][q] * y[q] for q in range(i)])) / L[i][i]
            v = [0.0] * P
            for i in range(P - 1, -1, -1):
                v[i] = (y[i] - sum([L[q][i] * v[q] for q in range(i + 1, P)])) / L[i][i]
            var = v[0]
            info = 0 if math.isfinite(var) and var > 0 else 1
    return var, hess, info, (jac, nu, v, ks, kb)


def _fisher_backward(state: Tuple[Any, ...], g_var: float, k: Dict[str, Any]) -> Any:
    r"""Gradients of :func:`_fisher_forward` with respect to ``hs``, ``hb``, ``ds``, ``db``,
    stacked as rows (2 + K_s + K_b, bins) (nested lists or an array).

    With :math:`v = H^{-1} e_\mu` and :math:`u = (v^\top J)/\nu`, the variance changes by
    :math:`-2\sum_i u_i\, v^\top \delta J_{:i} + \sum_i u_i^2\, \delta\nu_i`.
    """
    jac, nu, v, ks, kb = state
    c, S0, B0 = k["c"], k["S0"], k["B0"]
    g = g_var * c
    if k["py"]:
        P = len(v)
        u = [sum([v[p] * jac[p][i] for p in range(P)]) / n for i, n in enumerate(nu)]
        vs = sum([x * y for x, y in zip(k["dS_l"], v)])
        vb = sum([x * y for x, y in zip(k["dB_l"], v)])
        out = [[g * (S0 * x * x - 2 * vs * x) for x in u], [g * (B0 * x * x - 2 * vb * x) for x in u]]
        for pos, scale in ((k["pos_s_l"][:ks], S0), (k["pos_b_l"][:kb], B0)):
            for p in pos:
                f = -2 * g * v[p] * scale
                out.append([f * x for x in u])
        return out
    u = (v @ jac) / nu  # (bins,)
    u2 = u * u
    vs, vb = float(k["dS"] @ v), float(k["dB"] @ v)
    out = np.empty((2 + ks + kb, len(nu)))
    out[0] = g * (S0 * u2 - 2 * vs * u)
    out[1] = g * (B0 * u2 - 2 * vb * u)
    vu = np.outer(v * (-2 * g), u)  # (P, bins)
    if ks:
        out[2:2 + ks] = vu[k["pos_s"]] * S0
    if kb:
        out[2 + ks:] = vu[k["pos_b"]] * B0
    return out


def _host_tensor(x: Any, device: torch.device, dtype: torch.dtype = torch.float64) -> Tensor:
    """A tensor from the nested lists or the array of the host-side Fisher algebra."""
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x).to(device, dtype)
    if device.type == "cpu":
        return torch.tensor(x, dtype=dtype)
    return torch.tensor(x, dtype=torch.float64).to(device, dtype)


class _FisherPoiVariance(torch.autograd.Function):
    """:func:`_fisher_forward` as a differentiable function of the histograms and their
    tangents (``ds``/``db``: (0, bins) when no shape nuisance acts on the group). Returns the
    variance and the Hessian (not differentiable); ``res["info"]`` receives Cholesky's info."""

    @staticmethod
    def forward(ctx, hs: Tensor, hb: Tensor, ds: Tensor, db: Tensor, k: Dict[str, Any],  # type: ignore[override]
                res: Dict[str, Any]):
        var, hess, res["info"], state = _fisher_forward(hs, hb, ds, db, k)
        ctx.state, ctx.k = state, k  # intermediates only
        return _variance_outputs(ctx, var, hess, hs.device)

    @staticmethod
    @_first_order_only
    def backward(ctx, g_var: Tensor, g_hess: Any):  # type: ignore[override]
        ks, kb = ctx.state[3:]
        g = _host_tensor(_fisher_backward(ctx.state, float(g_var), ctx.k), g_var.device)
        return (g[0], g[1], g[2:2 + ks] if ctx.needs_input_grad[2] else None,
                g[2 + ks:] if ctx.needs_input_grad[3] else None, None, None)


class _ChainFisher(torch.autograd.Function):
    r"""The whole exact-INFERNO loss of a ``Linear, [pwl]*, ..., Linear, Softmax`` network
    as one autograd node: from the network output ``yp`` (n, bins) of a batch whose signal
    rows come first and the Linear weights to the POI variance, through the soft
    histograms, :func:`_chain_forward` for each group with shape nuisances, and
    :func:`_fisher_forward`; the backward chains the analytic gradients.

    ``b``: the batch description: ``n_s``, ``w`` (normalised weights per group or None),
    ``specs`` (group -> spec of :func:`_chain_forward`), ``k`` (Fisher constants), and
    ``o``: None when the first input is the network output, else the network output
    (detached) when the first input is the input of the final softmax (whose backward,
    :math:`g_z = o \odot (g_o - o \cdot g_o)/T`, is then done here too, with ``inv_t``).
    Returns the variance and the Hessian (not differentiable); ``b["info"]`` receives
    Cholesky's info.
    """

    @staticmethod
    def forward(ctx, yp: Tensor, b: Dict[str, Any], *weights: Tensor):  # type: ignore[override]
        n_s = b["n_s"]
        if b["o"] is not None:  # yp is the softmax input; its output is b["o"]
            yp = b["o"]
        rows = {"s": yp[:n_s], "b": yp[n_s:]}
        h = {}
        for g, r in rows.items():
            w = b["w"][g]
            h[g] = r.mean(0) if w is None else w.to(r.dtype) @ r
        # the derivatives use outputs below 1e-30 set to 0: a relative change far below
        # rounding, which keeps denormal numbers (slow on CPUs) out of the products
        of = torch.nn.functional.threshold(yp.detach(), 1e-30, 0.0) if b["specs"] or b["o"] is not None else yp
        d: Dict[str, Optional[Tensor]] = {"s": None, "b": None}
        states = {}
        for g, spec in b["specs"].items():
            o_g = of[:n_s] if g == "s" else of[n_s:]
            d[g], states[g] = _chain_forward(o_g, spec, weights)
        var, hess, b["info"], fstate = _fisher_forward(h["s"], h["b"], d["s"], d["b"], b["k"])
        ctx.b, ctx.states, ctx.fstate = b, states, fstate
        ctx.save_for_backward(of)
        return _variance_outputs(ctx, var, hess, yp.device)

    @staticmethod
    @_first_order_only
    def backward(ctx, g_var: Tensor, g_hess: Any):  # type: ignore[override]
        b = ctx.b
        (yp,) = ctx.saved_tensors  # the network output (derivative version)
        n_s = b["n_s"]
        k_s = ctx.fstate[3]
        gf = _host_tensor(_fisher_backward(ctx.fstate, float(g_var), b["k"]), yp.device, yp.dtype)
        g_yp = torch.empty_like(yp)
        parts = {"s": g_yp[:n_s], "b": g_yp[n_s:]}
        for g, gh in (("s", gf[0]), ("b", gf[1])):
            w, out = b["w"][g], parts[g]
            if w is None:
                torch.mul(gh, 1.0 / len(out), out=out[0])
                out[1:] = out[0]
            else:
                torch.mul(w.to(yp.dtype).unsqueeze(1), gh, out=out)
        grads: List[Optional[Tensor]] = [None] * (len(ctx.needs_input_grad) - 2)
        gds = {"s": gf[2:2 + k_s], "b": gf[2 + k_s:]}
        for g, state in ctx.states.items():
            g_o, gw = _chain_backward(state, gds[g], ctx.needs_input_grad[0])
            if g_o is not None:
                parts[g].add_(g_o)
            grads = [a if c is None else (c if a is None else a + c) for a, c in zip(grads, gw)]
        if b["o"] is not None and ctx.needs_input_grad[0]:  # through the softmax
            o = yp
            g_yp = (g_yp - (g_yp * o).sum(-1, keepdim=True)).mul_(o).mul_(b["inv_t"])
        return (g_yp if ctx.needs_input_grad[0] else None, None, *grads)
