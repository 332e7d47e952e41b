r"""The fused node of the layer-by-layer tangents: for a ``Linear, [ReLU | LeakyReLU | Identity |
Dropout]*, ..., Linear, Softmax`` body, the tangents of K nuisances on m rows, their softmax
and their per-process sums are one autograd node (:class:`ChainTangents`) with a hand-written
backward. Layout ``(m, K, h)``; for tangents that are one input column each the first two
layers cost one matrix product for all nuisances in each direction
(:math:`D_0\,[\mathrm{diag}(W_0[:, c_k])\,W_1^\top]_k`, :math:`D_0` the derivative of the
piecewise-linear layers after the first Linear). Used by :func:`inferno.loss.tangents.propagate`.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["ChainTangents", "chain_layout", "pwl_derivative", "row_softmax"]

_PWL = (nn.ReLU, nn.LeakyReLU, nn.Identity, nn.Dropout)  # derivative constant in the weights
_Call = Tuple[nn.Module, Tensor, Tensor, Optional[Tensor]]


def row_softmax(m: nn.Module) -> bool:
    """``m`` is a softmax over the last dimension of (events, bins) (``VariableSoftmax`` too)."""
    return isinstance(m, nn.Softmax) and m.dim in (-1, 1)


def chain_layout(leaves: Sequence[nn.Module]) -> Optional[Tuple[List[int], List[List[int]], float]]:
    """``(linears, acts, inv_t)`` when ``leaves`` read ``Linear, [pwl]*, ..., Linear, Softmax``."""
    if len(leaves) < 2 or not isinstance(leaves[0], nn.Linear) or not row_softmax(leaves[-1]) \
            or not isinstance(leaves[-2], nn.Linear):
        return None
    linears: List[int] = []
    acts: List[List[int]] = []
    for i, m in enumerate(leaves[:-1]):
        if isinstance(m, nn.Linear):
            linears.append(i)
            acts.append([])
        elif isinstance(m, _PWL):
            acts[-1].append(i)
        else:
            return None
    return linears, acts, 1.0 / getattr(leaves[-1], "temp", 1.0)


def pwl_derivative(call: _Call, rows: Tensor) -> Optional[Tensor]:
    m, inp, out, mask = call
    if isinstance(m, nn.ReLU):  # index_select: a fraction of the cost of advanced indexing on CPU
        return out.detach().index_select(0, rows).sign_()
    if isinstance(m, nn.LeakyReLU):
        pos = (inp.detach().index_select(0, rows) > 0).to(out.dtype)
        return pos * (1.0 - m.negative_slope) + m.negative_slope
    return None if mask is None else mask.index_select(0, rows)


class ChainTangents(torch.autograd.Function):
    r"""Per-process sums of the output tangents of a ``Linear, [pwl]*, ..., Linear, Softmax``
    body: ``out[k, p] = sum_{e in p} a_{ke} Y_{ek}`` (K, P_g, bins), with the softmax tangent
    :math:`Y = T^{-1} o \odot (Z - o\cdot Z)` of the softmax-input tangent :math:`Z` and
    :math:`a_{ke} = w_e\, c_{ke}` (event weight times the column coefficient).

    ``spec``: ``D`` (the detached derivatives of the piecewise-linear segments after each Linear
    but the last, (m, h) or None), ``cols`` or ``dense`` (the input tangents, (m, K, d)),
    ``a`` (K, m), (1, m) or None (all 1), ``pidx`` (m,) the process of every row, ``n_proc``, ``inv_t``.
    The first input ``o`` (m, bins) is the rows' softmax output; then the Linear weights.
    """

    @staticmethod
    def forward(ctx, o: Tensor, spec: Dict[str, Any], *weights: Tensor) -> Tensor:  # type: ignore[override]
        D, cols = spec["D"], spec["cols"]
        # outputs below 1e-30 count as 0 in the derivative: a relative change far below rounding,
        # which keeps denormal numbers (slow on CPUs) out of the products
        o = F.threshold(o.detach(), 1e-30, 0.0)
        m, n_lin = o.shape[0], len(weights)
        ins: List[Optional[Tensor]] = [None] * n_lin
        if cols is not None:  # column tangents, every nuisance in one product: D0 [diag(W0[:, c_k]) W1^T]_k
            W0, W1 = weights[0], weights[1]
            B = (W0.index_select(1, cols).unsqueeze(-1) * W1.t().unsqueeze(1)).reshape(W0.shape[0], -1)
            P = (D[0] @ B if D[0] is not None else B.sum(0).expand(m, -1).contiguous()).view(m, len(cols), -1)
            start = 2
        else:
            ins[0] = spec["dense"]
            P = torch.matmul(spec["dense"], weights[0].t())
            start = 1
        for j in range(start, n_lin):
            if D[j - 1] is not None:
                P.mul_(D[j - 1].unsqueeze(1))  # P is a fresh product
            ins[j] = P
            P = torch.matmul(P, weights[j].t())
        Z = P  # (m, K, bins)
        S = (Z * o.unsqueeze(1)).sum(-1, keepdim=True)
        aT = None if spec["a"] is None else spec["a"].t().unsqueeze(-1)  # (m, K or 1, 1)
        Y = (Z - S).mul_(o.unsqueeze(1))
        if aT is not None:
            Y.mul_(aT)  # a Y, (m, K, bins)
        out = o.new_zeros(spec["n_proc"], Y.shape[1] * Y.shape[2]).index_add_(0, spec["pidx"], Y.view(m, -1))
        out = out.view(spec["n_proc"], Y.shape[1], -1).transpose(0, 1).mul(spec["inv_t"])
        ctx.spec, ctx.start, ctx.ins, ctx.weights = spec, start, ins, weights
        ctx.save_for_backward(o, Z, S, aT)
        return out

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        if torch.is_grad_enabled():  # a hand-written backward: never silently wrong higher derivatives
            raise RuntimeError("the fused INFERNO tangents have first derivatives only; for higher-order "
                               "derivatives (create_graph=True) use InfernoLoss(analysis, tangents='layers')")
        o, Z, S, aT = ctx.saved_tensors
        spec, start, ins, weights = ctx.spec, ctx.start, ctx.ins, ctx.weights
        D = spec["D"]
        oe = o.unsqueeze(1)
        gY = g.transpose(0, 1).index_select(0, spec["pidx"]).mul_(spec["inv_t"] if aT is None else aT * spec["inv_t"])
        R = (gY * oe).sum(-1, keepdim=True)
        gZ = (gY - R).mul_(oe)
        g_o = None
        if ctx.needs_input_grad[0]:
            g_o = (gY * (Z - S) - Z * R).sum(1)
        grads: List[Optional[Tensor]] = [None] * len(weights)
        G = gZ
        for j in range(len(weights) - 1, start - 1, -1):
            T = ins[j]
            grads[j] = G.reshape(-1, G.shape[-1]).t() @ T.reshape(-1, T.shape[-1])
            G = torch.matmul(G, weights[j])
            if D[j - 1] is not None:
                G.mul_(D[j - 1].unsqueeze(1))
        if start == 2:  # the fused first two layers: N_k = G_k^T D0, all nuisances in one product
            W0, W1 = weights[0], weights[1]
            cols = spec["cols"]
            m, K = o.shape[0], len(cols)
            Gf = G.reshape(m, -1)
            N = (Gf.t() @ D[0] if D[0] is not None else Gf.sum(0).unsqueeze(-1).expand(-1, W0.shape[0]))
            N = N.view(K, W1.shape[0], W0.shape[0])  # (K, h1, h0)
            w0c = W0.index_select(1, cols).t()  # (K, h0)
            g1 = (N * w0c.unsqueeze(1)).sum(0)
            grads[1] = g1 if grads[1] is None else grads[1] + g1
            grads[0] = torch.zeros_like(W0).index_add_(1, cols, (N * W1).sum(1).t())
        else:
            t = ins[0]
            grads[0] = G.reshape(-1, G.shape[-1]).t() @ t.reshape(-1, t.shape[-1])
        return (g_o, None, *grads)
