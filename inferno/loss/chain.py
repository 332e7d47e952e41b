r"""The fused node of the layer-by-layer tangents: for a ``Linear, [ReLU | LeakyReLU | Identity |
Dropout]*, ..., Linear, Softmax`` body, the tangents of K nuisances on m rows, their softmax
and their per-process sums are one autograd node (:class:`ChainTangents`) with a hand-written
backward. Layout ``(K, m, h)``; for tangents that are one input column each the first two
layers cost one matrix product per nuisance in each direction
(:math:`D_0\,\mathrm{diag}(W_0[:, c_k])\,W_1^\top`, :math:`D_0` the derivative of the
piecewise-linear layers after the first Linear). Used by :func:`inferno.loss.tangents.propagate`.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["ChainTangents", "chain_layout", "pwl_derivative"]

_PWL = (nn.ReLU, nn.LeakyReLU, nn.Identity, nn.Dropout)  # derivative constant in the weights
_Call = Tuple[nn.Module, Tensor, Tensor, Optional[Tensor]]


def chain_layout(leaves: Sequence[nn.Module]) -> Optional[Tuple[List[int], List[List[int]], float]]:
    """``(linears, acts, inv_t)`` when ``leaves`` read ``Linear, [pwl]*, ..., Linear, Softmax``."""
    if len(leaves) < 2 or not isinstance(leaves[0], nn.Linear) or not isinstance(leaves[-1], nn.Softmax) \
            or leaves[-1].dim not in (-1, 1) or not isinstance(leaves[-2], nn.Linear):
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
    body: ``out[k, p] = sum_{e in p} a_{ke} Y_{ke}`` (K, P_g, bins), with the softmax tangent
    :math:`Y = T^{-1} o \odot (Z - o\cdot Z)` of the softmax-input tangent :math:`Z` and
    :math:`a_{ke} = w_e\, c_{ke}` (event weight times the column coefficient).

    ``spec``: ``D`` (the detached derivatives of the piecewise-linear segments after each Linear
    but the last, (m, h) or None), ``cols``/``coef`` or ``dense`` (the input tangents),
    ``a`` (K, m) or (1, m), ``pidx`` (m,) the process of every row, ``n_proc``, ``inv_t``.
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
        if cols is not None and n_lin >= 2:  # column tangents: D0 diag(W0[:, c_k]) W1^T per nuisance
            W0, W1 = weights[0], weights[1]
            bt = W1.unsqueeze(0) * W0.index_select(1, cols).t().unsqueeze(1)  # (K, h1, h0)
            D0 = D[0] if D[0] is not None else o.new_ones(m, W0.shape[0])
            P = o.new_empty(bt.shape[0], m, W1.shape[0])  # (K, m, h1)
            for j in range(bt.shape[0]):
                torch.mm(D0, bt[j].t(), out=P[j])
            start = 2
        else:
            t = spec["dense"]
            ins[0] = t
            P = torch.matmul(t, weights[0].t())
            start = 1
        for j in range(start, n_lin):
            if D[j - 1] is not None:
                P.mul_(D[j - 1])  # P is a fresh product
            ins[j] = P
            P = torch.matmul(P, weights[j].t())
        Z = P  # (K, m, bins)
        OZ = Z * o
        S = OZ.sum(-1, keepdim=True)
        # per process and nuisance: sum_e W_kpe o_e (Z_ke - S_ke) / T, W the rows' weights by process
        W = _process_weights(spec, Z.shape[0], m, o)  # (K, P, m)
        out = torch.bmm(W, OZ).sub_(torch.bmm(W * S.transpose(1, 2), o.expand(Z.shape[0], -1, -1)))
        out.mul_(spec["inv_t"])
        ctx.spec, ctx.start, ctx.ins, ctx.weights = spec, start, ins, weights
        ctx.save_for_backward(o, Z, S, W)
        return out

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        if torch.is_grad_enabled():  # a hand-written backward: never silently wrong higher derivatives
            raise RuntimeError("the fused INFERNO tangents have first derivatives only; for higher-order "
                               "derivatives (create_graph=True) use InfernoLoss(analysis, tangents='layers')")
        o, Z, S, W = ctx.saved_tensors
        spec, start, ins, weights = ctx.spec, ctx.start, ctx.ins, ctx.weights
        D = spec["D"]
        gY = torch.bmm(W.transpose(1, 2), g).mul_(spec["inv_t"])  # (K, m, bins)
        R = (gY * o).sum(-1, keepdim=True)
        gZ = (gY - R) * o
        g_o = None
        if ctx.needs_input_grad[0]:
            g_o = (gY * (Z - S) - Z * R).sum(0)
        grads: List[Optional[Tensor]] = [None] * len(weights)
        G = gZ
        for j in range(len(weights) - 1, start - 1, -1):
            T = ins[j]
            grads[j] = G.reshape(-1, G.shape[-1]).t() @ T.reshape(-1, T.shape[-1])
            G = torch.matmul(G, weights[j])
            if D[j - 1] is not None:
                G = G * D[j - 1]
        if start == 2:  # the fused first two layers
            W0, W1 = weights[0], weights[1]
            cols = spec["cols"]
            D0 = D[0] if D[0] is not None else o.new_ones(o.shape[0], W0.shape[0])
            N = o.new_empty(G.shape[0], W1.shape[0], W0.shape[0])  # (K, h1, h0)
            for j in range(G.shape[0]):
                torch.mm(G[j].t(), D0, out=N[j])
            w0c = W0.index_select(1, cols).t()  # (K, h0)
            g1 = (N * w0c.unsqueeze(1)).sum(0)
            grads[1] = g1 if grads[1] is None else grads[1] + g1
            grads[0] = torch.zeros_like(W0).index_add_(1, cols, (N * W1).sum(1).t())
        else:
            t = ins[0]
            grads[0] = G.reshape(-1, G.shape[-1]).t() @ t.reshape(-1, t.shape[-1])
        return (g_o, None, *grads)


def _process_weights(spec: Dict[str, Any], K: int, m: int, like: Tensor) -> Tensor:
    """(K, n_proc, m): the weight of every row in its process's sum, per nuisance."""
    a, pidx, n_proc = spec["a"], spec["pidx"], spec["n_proc"]
    if n_proc == 1:
        return a.to(like.dtype).unsqueeze(1).expand(K, 1, m)
    onehot = torch.zeros(n_proc, m, dtype=like.dtype, device=like.device)
    onehot[pidx, torch.arange(m, device=like.device)] = 1.0
    return onehot.unsqueeze(0) * a.to(like.dtype).unsqueeze(1).expand(K, 1, m)
