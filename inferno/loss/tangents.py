r"""Tangents of the exact INFERNO loss: how the derivative of the inputs with respect to a
shape nuisance, :math:`\partial x/\partial\theta_k`, is pushed through the network.

Two ways, both exact: layer by layer from the activations of the training loop's own forward
pass (recorded by hooks on a plain ``nn.Sequential``: ``Linear``, elementwise activations,
``Softmax``/``VariableSoftmax``, ``Identity``, ``Dropout``), or ``torch.func.jvp`` through any
model. For a Linear/piecewise-linear/softmax ``nn.Sequential`` the tangents and the loss form
one autograd node with a hand-written backward (:mod:`inferno.loss.fused`), whose forward
and backward halves (:func:`_chain_forward`, :func:`_chain_backward`) live here.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F


# ------------------------------------------------------------------------ tangents
def _plain_sequential(model: nn.Module) -> bool:
    """True when ``model`` and every ``nn.Sequential`` in it use ``nn.Sequential.forward``
    (each leaf called once, in order)."""
    return all(type(m).forward is nn.Sequential.forward for m in model.modules()
               if isinstance(m, nn.Sequential))


def _leaves(model: nn.Module) -> Optional[List[nn.Module]]:
    """The leaf modules of a (nested) ``nn.Sequential`` in call order, else None."""
    if not isinstance(model, nn.Sequential):
        return None
    out: List[nn.Module] = []
    for m in model:
        sub = _leaves(m) if isinstance(m, nn.Sequential) else [m]
        if sub is None:
            return None
        out.extend(sub)
    return out


_ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
                nn.Tanh, nn.Sigmoid, nn.Softplus, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid,
                nn.ReLU6, nn.LogSigmoid, nn.Softsign, nn.Tanhshrink)


def _leaf_supported(m: nn.Module) -> bool:
    """True when the layer-by-layer tangent propagation has an exact rule for leaf ``m`` in
    its current (train/eval) mode."""
    if isinstance(m, (nn.Linear, nn.Identity, nn.ReLU)):
        return True  # ReLU's rule reads its output only, so inplace=True is fine
    if isinstance(m, _ELEMENTWISE):
        return not getattr(m, "inplace", False)  # the rule reads the leaf's input
    if isinstance(m, nn.Softmax):
        return m.dim in (-1, 1)
    if isinstance(m, nn.Dropout):  # in training, the recorder keeps the mask
        return True
    if isinstance(m, nn.AlphaDropout):
        return (not m.training) or m.p == 0
    return False


_Call = Tuple[nn.Module, Tensor, Tensor, Optional[Tensor]]


def _leaf_tangent(m: nn.Module, call: _Call, idx: slice, t: Tensor) -> Tensor:
    r"""Forward-mode derivative through one leaf: ``t`` (K, m, d_in) -> (K, m, d_out).

    ``call`` holds the leaf's input and output on the whole batch (primal values) and, for
    Dropout in training, its mask; ``idx`` selects the m rows the tangents belong to.
    """
    _, inp, out, extra = call
    if isinstance(m, nn.Linear):
        return torch.matmul(t, m.weight.t())
    if isinstance(m, nn.ReLU):
        # t where the output is > 0, else 0; the mask is piecewise constant in the weights,
        # so it is detached (no zero gradients flow back into the primal graph)
        o = out[idx].detach()
        return torch.ops.aten.threshold_backward(t, o.expand_as(t), 0)
    if isinstance(m, nn.Tanh):
        o = out[idx]
        return t * (1 - o * o)
    if isinstance(m, nn.Sigmoid):
        o = out[idx]
        return t * (o - o * o)
    if isinstance(m, nn.Softmax):  # includes VariableSoftmax; activations are 2-D here
        o = out[idx]
        inv_t = 1.0 / getattr(m, "temp", 1.0)
        return (t - (o * t).sum(-1, keepdim=True)) * (o * inv_t)
    if extra is not None:  # Dropout in training: the recorded (scaled) mask
        return t * extra[idx]
    if isinstance(m, (nn.Identity, nn.Dropout, nn.AlphaDropout)):
        return t
    # other elementwise activations: their derivative, from their own forward-mode rule
    i = inp[idx]
    _, d = torch.func.jvp(m, (i,), (torch.ones_like(i),))
    return t * d


class _ActivationRecorder:
    """Forward hooks on the leaves of a Sequential model that record, while armed, every
    leaf call in order with its input and output.

    A module used at several places of the model (e.g. one activation object) is recorded
    at each call. For ``nn.Dropout`` in training the hook keeps the mask of the forward
    pass (scaled by 1/(1 - p)), so that the tangents see the same mask.

    ``record`` (a flag per leaf, default all) limits the hooks to some leaves: a module
    with a forward hook takes PyTorch's slow call path, so the Linear layers, whose
    weights are all the tangents need, are left alone when the model is a plain
    ``nn.Sequential`` (which calls its leaves once each, in order). :meth:`collect` then
    gives None at the positions not recorded.
    """

    def __init__(self, leaves: List[nn.Module], record: Optional[List[bool]] = None):
        self.leaves = leaves
        self.armed = False
        self.calls: List[_Call] = []
        rec = [True] * len(leaves) if record is None else record
        hooked = {id(m): m for m, r in zip(leaves, rec) if r}
        # the recorded positions: every call of a hooked module is recorded
        self.positions = [i for i, m in enumerate(leaves) if id(m) in hooked]
        self.expected = [leaves[i] for i in self.positions]
        self.handles = [m.register_forward_hook(self._hook) for m in hooked.values()]
        # Dropout: the random state before the call, to replay its mask exactly
        self.handles += [m.register_forward_pre_hook(self._pre_hook) for m in hooked.values()
                         if isinstance(m, nn.Dropout)]
        self._rng_state: Optional[Tensor] = None
        self._supported: Dict[Tuple[bool, ...], bool] = {}

    def _pre_hook(self, mod: nn.Module, args: Tuple[Any, ...]) -> None:
        if self.armed and mod.training and mod.p > 0 and args:
            dev = args[0].device
            self._rng_state = torch.cuda.get_rng_state(dev) if dev.type == "cuda" else torch.get_rng_state()

    def _hook(self, mod: nn.Module, args: Tuple[Any, ...], out: Tensor) -> None:
        if not self.armed:
            return
        if len(self.calls) >= len(self.expected):
            # more calls than one pass: a pass was interrupted (e.g. an exception in fit) and
            # the recorder was never collected; stop holding activations
            self.armed, self.calls = False, []
            return
        inp = args[0] if args else None
        scale = None
        if isinstance(mod, nn.Dropout) and mod.training and mod.p > 0:
            # the derivative of out = inp * mask / (1 - p): the mask, replayed from the random
            # state before the call (same shape, dtype and device: the same draws)
            dev = inp.device
            with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else [], device_type=dev.type):
                if dev.type == "cuda":
                    torch.cuda.set_rng_state(self._rng_state, dev)
                else:
                    torch.set_rng_state(self._rng_state)
                scale = F.dropout(torch.ones_like(inp), mod.p, True)
        self.calls.append((mod, inp, out, scale))

    def arm(self) -> None:
        self.calls = []
        self.armed = True

    def supported(self) -> bool:
        """Whether every leaf has a tangent rule in its current mode (cached per modes)."""
        modes = tuple(m.training for m in self.leaves)
        ok = self._supported.get(modes)
        if ok is None:
            ok = self._supported[modes] = all(_leaf_supported(m) for m in self.leaves)
        return ok

    def collect(self, y_pred: Tensor) -> Optional[List[Optional[_Call]]]:
        """Stop recording; the calls (one per leaf, None where not recorded) if they are
        exactly one pass through the recorded leaves, the last of which produced
        ``y_pred``, else None."""
        self.armed = False
        calls, self.calls = self.calls, []
        if (len(calls) != len(self.expected) or calls[-1][2] is not y_pred
                or any(c[0] is not m for c, m in zip(calls, self.expected))):
            return None
        if len(calls) == len(self.leaves):
            return calls
        out: List[Optional[_Call]] = [None] * len(self.leaves)
        for i, c in zip(self.positions, calls):
            out[i] = c
        return out

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles, self.calls, self.armed = [], [], False


class _InputTangents:
    r"""Tangents :math:`\partial x / \partial \theta_k` of the K shape nuisances of a group
    on its m rows: ``dense`` (K, m, d), or, for :class:`~inferno.nuisance.ColumnTransform`
    nuisances on distinct columns, ``cols`` (K column indices) and ``coef`` (K, m), None
    when every coefficient is 1: tangent k is ``coef[k]`` in column ``cols[k]`` and zero
    elsewhere."""

    __slots__ = ("n_rows", "n_feat", "dense_", "cols", "cols_t", "coef")

    def __init__(self, n_rows: int, n_feat: int, dense: Optional[Tensor] = None,
                 cols: Optional[List[int]] = None, cols_t: Optional[Tensor] = None,
                 coef: Optional[Tensor] = None):
        self.n_rows, self.n_feat, self.dense_ = n_rows, n_feat, dense
        self.cols, self.cols_t, self.coef = cols, cols_t, coef

    def dense(self, like: Tensor) -> Tensor:
        """The dense form (K, m, d), built on ``like``'s device and dtype when needed."""
        if self.dense_ is None:
            d = like.new_zeros(len(self.cols), self.n_rows, self.n_feat)
            for j, c in enumerate(self.cols):
                d[j, :, c] = 1.0 if self.coef is None else self.coef[j]
            self.dense_ = d
        return self.dense_

    def through_linear(self, lin: nn.Linear) -> Tensor:
        """The tangents after a Linear layer, (K, m, d_out)."""
        if self.dense_ is None:  # column form: coef_k * W[:, c_k], one broadcast product
            wc = lin.weight.index_select(1, self.cols_t).t().unsqueeze(1)  # (K, 1, d_out)
            if self.coef is None:
                return wc.expand(len(self.cols), self.n_rows, wc.shape[-1])
            return self.coef.unsqueeze(-1) * wc
        return torch.matmul(self.dense_, lin.weight.t())


class _ChainPlan:
    """The leaves of a Sequential model read as ``Linear, [piecewise-linear]*, Linear, ...,
    Linear, Softmax``: ``linears`` (leaf positions of the Linear layers), ``acts[j]`` (the
    leaf positions of the elementwise layers after Linear j), ``softmax`` (position of the
    last leaf). Piecewise-linear layers (ReLU, LeakyReLU, Identity, Dropout) have a
    derivative that is constant in the weights, which :func:`_chain_forward` exploits."""

    _PWL = (nn.ReLU, nn.LeakyReLU, nn.Identity, nn.Dropout)

    def __init__(self, leaves: List[nn.Module]):
        self.ok = False
        if len(leaves) < 2 or not isinstance(leaves[-1], nn.Softmax) or leaves[-1].dim not in (-1, 1):
            return
        if not isinstance(leaves[0], nn.Linear):
            return
        self.linears: List[int] = []
        self.acts: List[List[int]] = []
        for i, m in enumerate(leaves[:-1]):
            if isinstance(m, nn.Linear):
                self.linears.append(i)
                self.acts.append([])
            elif isinstance(m, self._PWL):
                self.acts[-1].append(i)
            else:
                return
        if self.acts[-1]:  # the last Linear must feed the softmax directly
            return
        self.softmax = len(leaves) - 1
        self.inv_t = 1.0 / getattr(leaves[-1], "temp", 1.0)
        self.ok = True

    @staticmethod
    def derivative(call: _Call, idx: slice) -> Optional[Tensor]:
        """The (detached) derivative of a piecewise-linear leaf on rows ``idx``; None for 1."""
        m, inp, out, extra = call
        if isinstance(m, nn.ReLU):
            return torch.sign(out[idx].detach())  # out >= 0: 1 where > 0, else 0
        if isinstance(m, nn.LeakyReLU):
            pos = (inp[idx].detach() > 0).to(out.dtype)
            return pos * (1.0 - m.negative_slope) + m.negative_slope
        if extra is not None:  # Dropout in training
            return extra[idx]
        return None

    def segment_derivatives(self, calls: List[_Call], idx: slice) -> List[Optional[Tensor]]:
        """For each Linear but the last, the product of the derivatives of the layers after it."""
        out: List[Optional[Tensor]] = []
        for acts in self.acts[:-1]:
            d: Optional[Tensor] = None
            for i in acts:
                di = self.derivative(calls[i], idx)
                if di is not None:
                    d = di if d is None else d * di
            out.append(d)
        return out


def _chain_forward(o: Tensor, spec: Dict[str, Any], weights: Sequence[Tensor]) -> Tuple[Tensor, Tuple[Any, ...]]:
    r"""Weighted mean over events of the output tangents of a ``Linear, [pwl]*, ..., Linear,
    Softmax`` network, :math:`\sum_e w_e\, \partial y_e / \partial \theta_k` (K, bins), and
    what :func:`_chain_backward` needs.

    Layout (K, m, h) throughout, so that the per-event factors (m, h) broadcast over the
    leading dimension. ``spec``: ``D`` the derivatives of the piecewise-linear segments
    after each Linear but the last ((m, h) tensors or None for 1, constant in the weights);
    ``cols``/``coef`` (column form of the input tangents: tangent k is ``coef[k]`` in input
    column ``cols[k]``; ``coef`` (K, m), None for all ones) or ``dense`` (K, m, d); ``w``
    (m,) normalised event weights or None (mean); ``inv_t`` the softmax's inverse
    temperature. ``o`` (m, bins): the softmax outputs of the rows.

    Every map from the input tangent of an event to its output tangent is linear and acts
    on that event alone, so a per-event factor (``coef``) is carried to the end as a weight
    of the mean. With the column form and a derivative :math:`D_0` after the first layer,
    the tangents after the second Linear are :math:`D_0 B_k` with :math:`B_k =
    \mathrm{diag}(W_0[:, c_k])\, W_1^\top`, and in the backward :math:`N_k = G_k^\top D_0`
    gives both :math:`\partial/\partial W_1 = \sum_k N_k\, \mathrm{diag}(W_0[:, c_k])` and
    :math:`\partial/\partial W_0[:, c_k] = \sum_j N_k[j, :] \odot W_1[j, :]`: one matrix
    product per nuisance in each direction for the first two layers. The softmax tangent
    :math:`Y = o \odot (Z - (o \cdot Z))` is never formed: its weighted mean is
    :math:`\sum_e w_e\, o_e \odot Z_e - (w \odot S)^\top o` with :math:`S_e = o_e \cdot Z_e`.
    """
    D: List[Optional[Tensor]] = spec["D"]
    cols = spec["cols"]
    m = o.shape[0]
    n_lin = len(weights)
    fused = cols is not None
    ins: List[Optional[Tensor]] = [None] * n_lin  # the tangents entering each Linear
    if fused:  # needs n_lin >= 2
        W0, W1 = weights[0], weights[1]
        K = cols.shape[0]
        bt = W1.unsqueeze(0) * W0.index_select(1, cols).t().unsqueeze(1)  # (K, h1, h0): B_k^T
        D0 = D[0] if D[0] is not None else o.new_ones(m, W0.shape[0])
        P = o.new_empty(K, m, W1.shape[0])
        for j in range(K):
            torch.mm(D0, bt[j].t(), out=P[j])
        start = 2
    else:
        t = spec["dense"]  # (K, m, d)
        K = t.shape[0]
        ins[0] = t
        P = torch.matmul(t, weights[0].t())
        start = 1
    for j in range(start, n_lin):
        Dj = D[j - 1]
        if Dj is not None:
            P.mul_(Dj)  # P is a fresh product: in place saves a buffer
        ins[j] = P
        P = torch.matmul(P, weights[j].t())
    Z = P  # (K, m, bins): tangents of the softmax input (without coef)
    OZ = Z * o
    S = OZ.sum(-1)  # (K, m)
    wk = _event_weights(spec, m, K, o)
    if wk is None:
        d = OZ.sum(1).sub_(S @ o).mul_(spec["inv_t"] / m)
    else:
        d = torch.bmm(wk.unsqueeze(1), OZ).squeeze(1).sub_((wk * S) @ o).mul_(spec["inv_t"])
    return d, (spec, fused, start, o, Z, S, ins, weights, wk)


def _event_weights(spec: Dict[str, Any], m: int, K: int, like: Tensor) -> Optional[Tensor]:
    """(K, m) weights of the mean over events (normalised weight times coef); None for 1/m."""
    w, coef = spec["w"], spec["coef"]
    if coef is None:
        return None if w is None else w.to(like.dtype).unsqueeze(0).expand(K, m)
    return coef * (1.0 / m) if w is None else coef * w.to(like.dtype)


def _chain_backward(state: Tuple[Any, ...], gd: Tensor, need_o: bool) -> Tuple[Optional[Tensor], List[Tensor]]:
    """Gradients of :func:`_chain_forward` for the gradient ``gd`` (K, bins) of its output:
    with respect to ``o`` (m, bins) and to the Linear weights."""
    spec, fused, start, o, Z, S, ins, weights, wk = state
    D = spec["D"]
    K, m = Z.shape[:2]
    gd = gd * spec["inv_t"]  # (K, bins)
    # d/dY[k, e] = wk[k, e] gd[k]; R[k, e] = o[e] . gd[k]; Q = wk (gd - R)
    R = gd @ o.t()  # (K, m)
    Q = gd.unsqueeze(1) - R.unsqueeze(-1)  # (K, m, bins)
    if wk is None:
        Q.mul_(1.0 / m)
        wS = S * (1.0 / m)
    else:
        Q.mul_(wk.unsqueeze(-1))
        wS = wk * S
    gZ = Q * o
    g_o = None
    if need_o:  # sum_k Q_k o Z_k - (wS)^T gd
        g_o = Q.mul_(Z).sum(0).sub_(wS.t() @ gd)
    grads: List[Optional[Tensor]] = [None] * len(weights)
    G = gZ
    for j in range(len(weights) - 1, start - 1, -1):
        T = ins[j]
        grads[j] = G.reshape(-1, G.shape[-1]).t() @ T.reshape(-1, T.shape[-1])
        G = torch.matmul(G, weights[j])  # (K, m, h_in)
        Dp = D[j - 1]
        if Dp is not None:
            G.mul_(Dp)
    # G: gradient with respect to the tangents after Linear (start - 1)
    if fused:
        W0, W1 = weights[0], weights[1]
        cols = spec["cols"]
        D0 = D[0] if D[0] is not None else o.new_ones(m, W0.shape[0])
        N = o.new_empty(K, W1.shape[0], W0.shape[0])  # (K, h1, h0)
        for j in range(K):
            torch.mm(G[j].t(), D0, out=N[j])
        w0c = W0.index_select(1, cols).t()  # (K, h0)
        g1 = (N * w0c.unsqueeze(1)).sum(0)
        grads[1] = g1 if grads[1] is None else grads[1] + g1
        gc = (N * W1).sum(1)  # (K, h0)
        grads[0] = torch.zeros_like(W0).index_add_(1, cols, gc.t())
    else:
        t = ins[0]
        grads[0] = G.reshape(-1, G.shape[-1]).t() @ t.reshape(-1, t.shape[-1])
    return g_o, grads  # type: ignore[return-value]


#: a Hessian whose Cholesky pivots satisfy L_ii^2 < _SINGULAR * H_ii (a parameter explained
#: by the previous ones up to a fraction 1e-12 of its own curvature, i.e. degenerate
#: parameters that float64 rounding leaves "positive definite") counts as singular
