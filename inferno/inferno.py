r"""The INFERNO loss (de Castro & Dorigo, arXiv:1806.04743) as ModelWrapper callbacks.

The network maps each event to soft bin assignments :math:`y(x) \in \Delta^{n_\text{bins}}`
(e.g. through :class:`VariableSoftmax`). From a batch with signal (``y == 1``) and
background (``y == 0``) events and optional weights :math:`w`, the callbacks build the
normalised soft histograms

.. math::

    f_{c,i}(\theta) = \frac{\sum_{e \in c} w_e\, y_i(x_e(\theta))}{\sum_{e \in c} w_e},
    \qquad c \in \{s, b\},

floored as :math:`\tilde f = (f + \epsilon)/(1 + n_\text{bins}\epsilon)` so that no bin is
empty, the expected counts :math:`\nu_i(\theta) = S(\theta) \tilde f_{s,i}(\theta) +
B(\theta) \tilde f_{b,i}(\theta)` (yields and nuisances: :mod:`inferno.nuisance`), the
Asimov counts :math:`n_i = \nu_i(\theta_0)` at the nominal parameters, and the negative
log-likelihood

.. math::

    \mathrm{NLL}(\theta) = \sum_i \big[\nu_i(\theta) - n_i \log \nu_i(\theta)\big]
        - \sum_k \log p_k(\theta_k).

Its Hessian at :math:`\theta_0` is the Fisher information of the Asimov data set,

.. math::

    H_{jk} = \sum_i \frac{\partial_j \nu_i\, \partial_k \nu_i}{\nu_i}
        + \delta_{jk} \big(-\partial_k^2 \log p_k\big),

because the term :math:`\sum_i (\nu_i - n_i)\,\partial_j\partial_k \nu_i` vanishes at the
Asimov point (and so does its derivative with respect to the network weights, since
:math:`n_i = \nu_i(\theta_0)` for every value of the weights). The loss is the expected
variance of the parameter of interest, :math:`[H^{-1}]_{\mu\mu}`, obtained from a
Cholesky factorisation in float64.

* :class:`Inferno` -- exact: shape nuisances act on the inputs through differentiable
  transforms and their effect is propagated through the network. By default the
  derivatives :math:`\partial \nu / \partial \theta` are forward-mode derivatives (one
  tangent per shape nuisance, on the events it acts on) and :math:`H` is the Fisher form
  above (``hessian='fisher'``); ``hessian='autograd'`` instead makes the batch a function
  of the nuisance parameters before the forward pass and differentiates the NLL twice
  (slower, same result).
* :class:`ApproxInferno` -- interpolated: the batch is passed through the network with
  each shape nuisance at its down/up variation and the shapes are interpolated between
  them (HistFactory code 2, :func:`inferno.interp.interp_shape`), optionally from random
  starting values refined by Newton steps.
* :class:`PaperInferno` / :class:`ApproxPaperInferno` -- both set up for the paper's toy
  problem (:mod:`inferno.paper`), in its physical units; :func:`paper_inferno` builds the
  callback of benchmark ``k``.
* :class:`InfernoPred` -- prediction handler giving the hard (argmax) bin of each event.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.distributions import Distribution

from .callback import AbsCallback, PredHandler
from .interp import interp_shape
from .nuisance import (ColumnTransform, Constraint, Nuisance, RateNuisance, ShapeNuisance,
                       _check_nuisances, shift_feature)
from .paper import BENCHMARKS, PAPER_B, PAPER_L, PAPER_R, PAPER_S, paper_syst_transform

__all__ = ["VariableSoftmax", "Inferno", "ApproxInferno", "PaperInferno", "ApproxPaperInferno",
           "paper_inferno", "InfernoPred"]

_GROUPS = ("s", "b")


class VariableSoftmax(nn.Softmax):
    r"""Softmax with a temperature: :math:`\mathrm{softmax}(x / T)` along ``dim``.

    A low temperature (the paper trains with :math:`T = 0.1`) makes the soft assignments
    close to the hard (argmax) ones used at inference time.
    """

    def __init__(self, temp: float = 1.0, dim: int = -1):
        super().__init__(dim=dim)
        temp = float(temp)
        if not (math.isfinite(temp) and temp > 0):
            raise ValueError(f"temp must be finite and > 0, got {temp}")
        self.temp = temp

    def forward(self, x: Tensor) -> Tensor:
        # explicit exp / sum: on CPU it is several times faster than torch.softmax for the
        # few-bin outputs used here, and softmax is invariant to the (detached) shift
        z = x / self.temp
        z = z - z.detach().amax(dim=self.dim, keepdim=True)
        e = z.exp()
        return e / e.sum(dim=self.dim, keepdim=True)

    def extra_repr(self) -> str:
        return f"temp={self.temp}, dim={self.dim}"


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


# ------------------------------------------------------------------------ common base
class _InfernoBase(AbsCallback):
    r"""Shared machinery: batch split, soft shapes, yields, and the POI variance."""

    def __init__(self, nuisances: Optional[Sequence[Nuisance]] = None, mu_true: float = PAPER_S,
                 b_true: float = PAPER_B, eps: float = 1e-7):
        self.nuisances = _check_nuisances(nuisances)
        self.mu_true, self.b_true = float(mu_true), float(b_true)
        for name, v in (("mu_true", self.mu_true), ("b_true", self.b_true)):
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} (expected yield) must be finite and > 0, got {v}")
        self.eps = float(eps)
        if not (math.isfinite(self.eps) and self.eps >= 0):
            raise ValueError(f"eps (the bin floor) must be finite and >= 0, got {eps}")
        self.param_names: Tuple[str, ...] = ("mu",) + tuple(n.name for n in self.nuisances)
        if "mu" in self.param_names[1:]:
            raise ValueError("'mu' is reserved for the parameter of interest")
        self.shape_nuis = [(i + 1, n) for i, n in enumerate(self.nuisances) if isinstance(n, ShapeNuisance)]
        for n in self.nuisances:
            if not isinstance(n, (ShapeNuisance, RateNuisance)) or not set(n.targets) <= set(_GROUPS):
                raise ValueError(f"nuisance {n.name!r} ({type(n).__name__}, on {n.targets}): the two-group callbacks "
                                 "take ShapeNuisance/RateNuisance on 's', 'b' or 'both'; for processes, weight "
                                 "variations and alternative samples use inferno.loss.Analysis")
        self.rate_nuis = [(i + 1, n) for i, n in enumerate(self.nuisances) if isinstance(n, RateNuisance)]
        # per group: (positions in theta, nuisances) of the shape nuisances acting on it
        self.group_nuis: Dict[str, List[Tuple[int, ShapeNuisance]]] = {
            g: [(p, n) for p, n in self.shape_nuis if g in n.targets] for g in _GROUPS}
        s0, b0 = self._yields_np(self._theta0_phys())
        if not (s0 > 0 and b0 > 0):
            raise ValueError(f"the nominal yields must be > 0, got S={s0}, B={b0}")
        self.last_hessian: Optional[Tensor] = None

    # -- parameters
    @property
    def n_params(self) -> int:
        """Number of parameters: the POI and the nuisances."""
        return 1 + len(self.nuisances)

    def _theta0_phys(self) -> List[float]:
        return [self.mu_true] + [n.nominal for n in self.nuisances]

    def _yields(self, theta: Tensor) -> Tuple[Tensor, Tensor]:
        r""":math:`(S(\theta), B(\theta))`, with rate nuisances at their physical values."""
        s, b = theta[0], theta.new_tensor(self.b_true)
        for p, n in self.rate_nuis:
            if n.mode == "add":
                if n.on == "s":
                    s = s + theta[p]
                else:
                    b = b + theta[p]
        for p, n in self.rate_nuis:
            if n.mode == "scale":
                if n.on == "s":
                    s = s * theta[p]
                else:
                    b = b * theta[p]
        return s, b

    def _yields_np(self, theta: Sequence[float]) -> Tuple[float, float]:
        s, b = self._yields(torch.tensor(theta, dtype=torch.float64))
        return float(s), float(b)

    # -- hooks shared by both callbacks
    def on_train_begin(self) -> None:
        wr = self.wrapper
        if wr.loss_func is not None:
            raise ValueError(f"{type(self).__name__} computes the loss itself: call fit with loss=None")
        self._setup(wr.device)

    def _setup(self, device: torch.device) -> None:
        self.device = torch.device(device)
        f64 = dict(dtype=torch.float64, device=self.device)
        self._e0 = torch.zeros(self.n_params, 1, **f64)
        self._e0[0] = 1.0

    def _active(self) -> bool:
        return self.wrapper.state in ("train", "valid")

    def _split(self) -> None:
        """Indices and normalised weights of the signal and background rows of the batch."""
        wr = self.wrapper
        if wr.y is None:
            raise ValueError("INFERNO needs targets y: 1 for signal events, 0 for background")
        y = wr.y.reshape(-1)
        if len(y) != len(wr.x):
            raise ValueError(f"y has {len(y)} entries for {len(wr.x)} events")
        sig, bkg = y == 1, y == 0
        w = None if wr.w is None else wr.w.reshape(-1)
        if w is None:
            st = torch.stack((sig.sum(), bkg.sum())).tolist()
        else:
            # counts and weight sums in float64 (exact counts up to 2**53 events)
            st = torch.stack((sig.sum().double(), bkg.sum().double(), (w * sig).sum().double(),
                              (w * bkg).sum().double())).tolist()
        n_s, n_b = int(st[0]), int(st[1])
        if n_s + n_b != len(y):
            raise ValueError("y must be 1 (signal) or 0 (background) for every event")
        if n_s == 0:
            raise ValueError("the batch has no signal events (y == 1): INFERNO needs both signal and "
                             "background in every batch (shuffle the data or use larger batches)")
        if n_b == 0:
            raise ValueError("the batch has no background events (y == 0): INFERNO needs both signal "
                             "and background in every batch (shuffle the data or use larger batches)")
        if w is not None and not (st[2] > 0 and st[3] > 0):
            raise ValueError(f"the summed weights of the batch's signal ({st[2]}) and background "
                             f"({st[3]}) events must be > 0")
        # reorder the batch, signal rows first, so that the groups are contiguous slices (a
        # stable sort of y, 1 before 0, keeps the order of the events within each group)
        ys, perm = torch.sort(y, descending=True, stable=True)
        wr.x = wr.x.index_select(0, perm)
        wr.y = ys.reshape(wr.y.shape)
        if wr.w is not None:
            wr.w = wr.w.index_select(0, perm)
            w = wr.w.reshape(-1)
        self._idx = {"s": slice(0, n_s), "b": slice(n_s, n_s + n_b)}
        self._w = {g: None if w is None else (w[i] / w[i].sum()) for g, i in self._idx.items()}

    def _replace_rows(self, x: Tensor, parts: Dict[str, Tensor]) -> Tensor:
        """``x`` with the rows of the groups in ``parts`` replaced (out of place)."""
        if not parts:
            return x
        return torch.cat([parts.get(g, x[self._idx[g]]) for g in _GROUPS])

    def _soft_hist(self, y: Tensor, g: str) -> Tensor:
        r"""Weighted mean over the rows of group ``g`` of ``y`` (..., m, bins) -> (..., bins)."""
        w = self._w[g]
        return y.mean(-2) if w is None else (w.to(y.dtype).unsqueeze(-1) * y).sum(-2)

    def _floor(self, f: Tensor) -> Tensor:
        r""":math:`(f + \epsilon)/(1 + n_\text{bins}\epsilon)` in float64."""
        f = f.to(torch.float64)
        return (f + self.eps) / (1.0 + f.shape[-1] * self.eps)

    def _check_output(self, y: Tensor) -> None:
        from .loss.pure import soft_outputs_check  # the same check as the general loss

        soft_outputs_check(y)

    def _poi_variance(self, hess: Tensor) -> Tensor:
        r""":math:`[H^{-1}]_{00}` from a Cholesky factorisation; ValueError if H is not PD."""
        self.last_hessian = hess.detach()
        chol, info = _cholesky_info(hess)
        var = torch.cholesky_solve(self._e0, chol)[0, 0]
        if not bool((info == 0) & torch.isfinite(var) & (var > 0)):
            self._raise_bad(hess)
        return var

    # -- convenience
    def loss_on(self, model: nn.Module, x: Tensor, y: Tensor, w: Optional[Tensor] = None) -> Tensor:
        """The INFERNO loss of ``model`` on one batch, outside a training loop (e.g. to
        evaluate a trained network, or in tests)."""
        from .model_wrapper import ModelWrapper

        wr = ModelWrapper(model)
        wr.x, wr.y, wr.w, wr.state = x.to(wr.device), y.to(wr.device), None if w is None else w.to(wr.device), "valid"
        saved = dict(self.__dict__)  # e.g. the state of a training loop this callback is in
        self._forget_resources()
        self.set_wrapper(wr)
        try:
            with torch.set_grad_enabled(torch.is_grad_enabled() or self.requires_grad_in_valid):
                self._setup(wr.device)
                self.on_batch_begin()
                wr.y_pred = model(wr.x)
                self.on_forwards_end()
            return wr.loss_val
        finally:
            self._teardown()
            last = self.last_hessian
            self.__dict__.clear()
            self.__dict__.update(saved)
            self.last_hessian = last

    def _teardown(self) -> None:
        """Release what _setup installed (nothing here)."""

    def _forget_resources(self) -> None:
        """Drop (without releasing) what _setup installed, so that a nested _setup/_teardown
        leaves the resources of an ongoing training loop alone."""

    def _raise_bad(self, hess: Tensor) -> None:
        yp = self.wrapper.y_pred
        if yp is not None and not bool(torch.isfinite(yp).all()):
            raise ValueError("the network output contains NaN or inf: cannot compute the INFERNO "
                             "loss (diverged training? try a lower learning rate or GradClip)")
        h = hess.detach()
        if not bool(torch.isfinite(h).all()):
            raise ValueError(f"the Hessian of the NLL is not finite:\n{h.cpu().numpy()}")
        ev = torch.linalg.eigvalsh(h).cpu().numpy()
        raise ValueError(
            "the Hessian of the NLL with respect to (" + ", ".join(self.param_names) + ") is not "
            f"positive definite, or numerically singular (eigenvalues {ev}): a free nuisance that does not change the expected "
            "counts, or nuisances whose effects are degenerate, leave the POI variance undefined; "
            f"constrain them or remove them.\nHessian:\n{h.cpu().numpy()}")


# ------------------------------------------------------------------------ exact INFERNO
class Inferno(_InfernoBase):
    r"""Exact INFERNO loss: nuisances enter through differentiable input transforms.

    Use with ``ModelWrapper.fit(..., loss=None, cbs=[Inferno(...)])``; the network must
    output soft bin assignments (rows summing to one, e.g. ending in
    :class:`VariableSoftmax`), and every batch must contain signal (``y == 1``) and
    background (``y == 0``) events. It sets ``wrapper.loss_val`` to
    :math:`[H^{-1}]_{\mu\mu}`, the expected variance of the signal yield (module docstring),
    in the training and the validation phases.

    At ``on_batch_begin`` the rows each shape nuisance acts on are passed through its
    transform at the nominal value (so the network sees :math:`x(\theta_0)`; a no-op for
    transforms that are the identity there, as they should be), and the input tangents
    :math:`\partial x / \partial \theta_k` are computed: analytically for the built-in
    :class:`~inferno.nuisance.ColumnTransform` transforms (``shift_feature``,
    ``scale_feature``, the paper's), otherwise by differentiating the user's transform.

    Args:
        nuisances: :class:`~inferno.nuisance.ShapeNuisance` (with a ``transform``) and
            :class:`~inferno.nuisance.RateNuisance` objects; the parameters are
            ``(mu, *nuisances)`` in this order.
        mu_true: nominal expected signal yield :math:`\mu` (the parameter of interest).
        b_true: nominal expected background yield.
        hessian: ``'fisher'`` (default): :math:`H = J^\top \mathrm{diag}(1/\nu) J +`
            constraints with :math:`J = \partial\nu/\partial\theta` from forward-mode
            derivatives; ``'autograd'``: the batch is made a function of nuisance
            parameters (zero-valued, requiring grad) before the forward pass and the NLL is
            differentiated twice with autograd (the Asimov counts come from a second,
            nominal forward pass with the same random state, so that Dropout draws the same
            masks). Both are exact; ``'fisher'`` is several times faster.
        tangents: how ``'fisher'`` propagates the input tangents through the network:
            ``'auto'`` (``'sequential'`` when possible, else ``'jvp'``); ``'sequential'``:
            layer by layer, reusing the activations of the wrapper's forward pass recorded
            by forward hooks (``nn.Sequential``, possibly nested, of Linear, elementwise
            activations, Softmax/VariableSoftmax, Identity and Dropout); ``'jvp'``:
            ``torch.func.jvp`` through the whole model on the affected rows (any model whose
            output for an event depends on that event only and that draws no random
            numbers in training).
        eps: floor added to every bin of the normalised shapes (see the module docstring).

    Attributes:
        last_hessian: the Hessian of the latest batch (detached, float64).

    Raises:
        ValueError: at construction, a shape nuisance without a transform, bad yields;
            during training, a batch with no signal or no background, a network output with
            NaN, a Hessian that is not positive definite, ``fit`` called with a loss.
    """

    def __init__(self, nuisances: Optional[Sequence[Nuisance]] = None, mu_true: float = PAPER_S,
                 b_true: float = PAPER_B, hessian: str = "fisher", tangents: str = "auto",
                 eps: float = 1e-7):
        super().__init__(nuisances, mu_true, b_true, eps)
        for _, n in self.shape_nuis:
            if not n.has_transform:
                raise ValueError(f"shape nuisance {n.name!r} has only up/down modifications: the "
                                 "exact Inferno needs a differentiable transform(x, value); use "
                                 "ApproxInferno for up/down templates")
        if hessian not in ("fisher", "autograd"):
            raise ValueError(f"hessian must be 'fisher' or 'autograd', got {hessian!r}")
        if tangents not in ("auto", "sequential", "jvp"):
            raise ValueError(f"tangents must be 'auto', 'sequential' or 'jvp', got {tangents!r}")
        self.hessian, self.tangents = hessian, tangents
        # Linear/piecewise-linear/Softmax networks: tangents with a hand-written backward
        # (_ChainFisher); False: the layer-by-layer rules with autograd (same values)
        self._use_chain = True
        self._fold_softmax = True
        # only the autograd strategy needs the wrapper's forward pass to record a graph in the
        # validation phase; the Fisher form is computed in forward mode
        self.requires_grad_in_valid = hessian == "autograd"
        self._recorder: Optional[_ActivationRecorder] = None
        # per group: the column form of the input tangents when every shape nuisance acting
        # on it is a ColumnTransform and they act on distinct columns
        self._col_form: Dict[str, Optional[List[int]]] = {}
        for g in _GROUPS:
            tr = [n.transform for _, n in self.group_nuis[g]]
            cols = [t.col for t in tr if isinstance(t, ColumnTransform)]
            ok = len(cols) == len(tr) and len(set(cols)) == len(cols) and (
                all(c >= 0 for c in cols) or all(c < 0 for c in cols))
            self._col_form[g] = cols if (ok and tr) else None
        self._identity_at_nominal = {
            g: all(isinstance(n.transform, ColumnTransform) and n.transform.is_identity(n.nominal)
                   for _, n in self.group_nuis[g]) for g in _GROUPS}

    # -- setup / teardown
    def _setup(self, device: torch.device) -> None:
        super()._setup(device)
        f64 = dict(dtype=torch.float64, device=self.device)
        theta0 = torch.tensor(self._theta0_phys(), dtype=torch.float64)
        s0, b0 = self._yields(theta0)
        jac = torch.func.jacrev(lambda t: torch.stack(self._yields(t)))(theta0)  # (2, P)
        self._S0, self._B0 = float(s0), float(b0)
        self._dS, self._dB = jac[0].to(**f64), jac[1].to(**f64)
        self._curv = torch.tensor([0.0] + [n.curvature() for n in self.nuisances], **f64)
        self._pos = {g: torch.tensor([p for p, _ in self.group_nuis[g]], dtype=torch.long,
                                     device=self.device) for g in _GROUPS}
        self._cols_t = {g: None if cols is None else torch.tensor(cols, dtype=torch.long, device=self.device)
                        for g, cols in self._col_form.items()}
        self._consts: Dict[int, Dict[str, Any]] = {}
        self._remove_recorder()
        self._plan: Optional[_ChainPlan] = None
        model = self.wrapper.model if hasattr(self, "wrapper") else None
        self._dropouts = [] if model is None else [
            m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
        if self.hessian == "fisher" and self.tangents != "jvp" and self.shape_nuis:
            leaves = _leaves(self.wrapper.model) if hasattr(self, "wrapper") else None
            if leaves is None:
                if self.tangents == "sequential":
                    raise ValueError("tangents='sequential' needs an nn.Sequential model; use 'jvp'")
            else:
                bad = [type(m).__name__ for m in leaves if not _leaf_supported(m)
                       and not isinstance(m, (nn.Dropout, nn.AlphaDropout))]
                if bad and self.tangents == "sequential":
                    raise ValueError(f"tangents='sequential' does not support the layers {bad}; use 'jvp'")
                if not bad:
                    self._plan = _ChainPlan(leaves) if self._use_chain else None
                    record = None
                    if self._plan is not None and self._plan.ok and _plain_sequential(self.wrapper.model):
                        record = [not isinstance(m, nn.Linear) for m in leaves]
                    self._recorder = _ActivationRecorder(leaves, record)
                    self._leaf_list = leaves

    def _fisher_consts(self, n_bins: int) -> Dict[str, Any]:
        """Constants of :class:`_FisherPoiVariance` for ``n_bins`` bins (cached)."""
        k = self._consts.get(n_bins)
        if k is None:
            P = self.n_params
            e0 = np.zeros(P)
            e0[0] = 1.0
            k = dict(c=1.0 / (1.0 + n_bins * self.eps), eps=self.eps, S0=self._S0, B0=self._B0,
                     dS=self._dS.cpu().numpy(), dB=self._dB.cpu().numpy(),
                     pos_s=self._pos["s"].cpu().numpy(), pos_b=self._pos["b"].cpu().numpy(),
                     curv=self._curv.cpu().numpy(), diag=np.diag_indices(P), e0=e0,
                     py=P * (P + 1) // 2 * n_bins <= _PY_FISHER_MAX)
            for name in ("dS", "dB", "pos_s", "pos_b", "curv"):  # for the Python floats version
                k[name + "_l"] = k[name].tolist()
            self._consts[n_bins] = k
        return k

    def _remove_recorder(self) -> None:
        if self._recorder is not None:
            self._recorder.remove()
            self._recorder = None

    def on_train_end(self) -> None:
        self._remove_recorder()

    def _teardown(self) -> None:
        self._remove_recorder()

    def _forget_resources(self) -> None:
        self._recorder = None

    # -- per batch
    def _group_transform(self, g: str, x: Tensor, values: Tensor) -> Tensor:
        """Apply, in order, the shape nuisances acting on group g at ``values`` (K_g,)."""
        for j, (_, n) in enumerate(self.group_nuis[g]):
            x = n.apply(x, values[j])
        return x

    def _nominal_values(self, g: str, dtype: torch.dtype) -> Tensor:
        return torch.tensor([n.nominal for _, n in self.group_nuis[g]], dtype=dtype, device=self.device)

    def _input_tangents(self, g: str, xg: Tensor) -> Tuple[Tensor, _InputTangents]:
        r"""Nominal inputs :math:`x(\theta_0)` of the rows ``xg`` of group ``g`` and the tangents
        :math:`\partial x / \partial \theta_k` of its K shape nuisances.

        Built-in column transforms give them analytically. Otherwise the transforms map one
        scalar to many numbers, and the tangents come from two reverse passes (the gradient
        :math:`J^\top u` is linear in a dummy cotangent :math:`u`, and
        :math:`\partial (J^\top u)_k / \partial u = J_{:,k}`), which on small elementwise
        transforms costs less than PyTorch's forward mode.
        """
        nuis = self.group_nuis[g]
        m, d = xg.shape
        cols = self._col_form[g]
        if cols is not None:
            if self._identity_at_nominal[g]:
                xn = xg
            else:
                xn = self._group_transform(g, xg, self._nominal_values(g, xg.dtype))
            # distinct columns: each transform sees its column as it was in xg
            cts = [n.transform.column_tangent(xg, n.nominal) for _, n in nuis]
            coef = None
            if not all(isinstance(c, float) and c == 1.0 for c in cts):
                coef = xg.new_empty(len(nuis), m)
                for j, c in enumerate(cts):
                    coef[j] = c
            bad = [c for c in cols if not -d <= c < d]
            if bad:
                raise ValueError(f"shape nuisance column(s) {bad} out of range for inputs with {d} "
                                 "features")
            cols = [c % d for c in cols]
            cols_t = self._cols_t[g] if self._col_form[g][0] >= 0 else torch.tensor(cols, device=xg.device)
            return xn, _InputTangents(m, d, cols=cols, cols_t=cols_t, coef=coef)
        v0 = self._nominal_values(g, xg.dtype)
        k = len(v0)
        with torch.enable_grad():
            v = v0.clone().requires_grad_(True)
            xp = self._group_transform(g, xg, v)
            if not xp.requires_grad:  # no dependence on the values at all
                return xp.detach(), _InputTangents(m, d, dense=xg.new_zeros(k, *xg.shape))
            u = torch.zeros_like(xp, requires_grad=True)
            (gv,) = torch.autograd.grad(xp, v, grad_outputs=u, create_graph=True)
            tans = []
            for j in range(k):
                if gv.requires_grad:
                    (t,) = torch.autograd.grad(gv[j], u, retain_graph=j < k - 1, allow_unused=True,
                                               materialize_grads=True)
                else:
                    t = torch.zeros_like(xg)
                tans.append(t)
        return xp.detach(), _InputTangents(m, d, dense=torch.stack(tans).detach())

    def on_batch_begin(self) -> None:
        if not self._active():
            return
        wr = self.wrapper
        self._split()
        self._in_tan: Dict[str, _InputTangents] = {}
        self._x_nom: Dict[str, Tensor] = {}
        x = wr.x  # reordered by _split
        if self.hessian == "fisher":
            parts = {}
            for g in _GROUPS:
                if self.group_nuis[g]:
                    xg = x[self._idx[g]]
                    xn, tan = self._input_tangents(g, xg)
                    self._in_tan[g] = tan
                    self._x_nom[g] = xn
                    if xn is not xg:
                        parts[g] = xn
            wr.x = self._replace_rows(x, parts)
            use_seq = self._recorder is not None and self._recorder.supported()
            if self.tangents == "sequential" and self._in_tan and not use_seq:
                raise ValueError("tangents='sequential': the model has layers without a tangent rule "
                                 "in the current mode (e.g. AlphaDropout in training); use 'jvp'")
            self._use_seq = use_seq and bool(self._in_tan)
            if self._use_seq:
                self._recorder.arm()
        else:  # autograd: the batch becomes a function of the (zero) parameter shifts
            self._alpha = torch.zeros(self.n_params, dtype=torch.float64, device=self.device,
                                      requires_grad=True)
            parts = {}
            for g in _GROUPS:
                if not self.group_nuis[g]:
                    continue
                xg = x[self._idx[g]]
                v0 = self._nominal_values(g, torch.float64)
                vals = (v0 + self._alpha[self._pos[g]]).to(x.dtype)
                with torch.no_grad():
                    self._x_nom[g] = self._group_transform(g, xg, v0.to(x.dtype))
                parts[g] = self._group_transform(g, xg, vals)
            wr.x = self._replace_rows(x, parts)
            # the random state of the forward pass, replayed for the nominal pass (Dropout)
            random = any(m.training and m.p > 0 for m in self._dropouts)
            self._rng = self._get_rng() if random else None

    def _get_rng(self) -> Tuple[Tensor, Optional[Tensor]]:
        cuda = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        return torch.get_rng_state(), cuda

    def on_forwards_end(self) -> None:
        if not self._active():
            return
        wr = self.wrapper
        yp = wr.y_pred
        self._check_output(yp)
        if self.hessian == "fisher":
            var = self._fisher_variance(yp)
        else:
            var = self._poi_variance(self._autograd_hessian(yp))
        wr.loss_val = var

    def _chain_spec(self, g: str, calls: List[_Call]) -> Dict[str, Any]:
        """The spec of :func:`_chain_forward` for group ``g``."""
        plan, tan, idx = self._plan, self._in_tan[g], self._idx[g]
        spec = dict(D=plan.segment_derivatives(calls, idx), cols=None, coef=None, dense=None,
                    w=self._w[g], inv_t=plan.inv_t)
        if tan.dense_ is None and len(plan.linears) >= 2:
            spec["cols"] = tan.cols_t
            spec["coef"] = tan.coef
        else:
            spec["dense"] = tan.dense(self.wrapper.x)
        return spec

    def _rule_tangent_hists(self, yp: Tensor, calls: List[_Call]) -> Dict[str, Tensor]:
        """Tangent histograms (K_g, bins) from the layer-by-layer rules (autograd)."""
        out: Dict[str, Tensor] = {}
        first = calls[0][0]
        for g, tan in self._in_tan.items():
            idx = self._idx[g]
            if isinstance(first, nn.Linear):
                t, rest = tan.through_linear(first), calls[1:]
            else:
                t, rest = tan.dense(yp), calls
            for call in rest:
                t = _leaf_tangent(call[0], call, idx, t)
            out[g] = self._soft_hist(t, g)
        return out

    def _jvp_tangent_hists(self, yp: Tensor) -> Dict[str, Tensor]:
        """Tangent histograms (K_g, bins) from torch.func.jvp through the whole model."""
        out: Dict[str, Tensor] = {}
        model = self.wrapper.model
        for g, tan in self._in_tan.items():
            xg = self._x_nom[g]
            t = tan.dense(xg)
            try:
                _, tan_out = torch.func.vmap(lambda tt: torch.func.jvp(model, (xg,), (tt,)))(t)
            except RuntimeError as e:
                if "random" not in str(e):
                    raise
                raise ValueError("tangents='jvp' reruns the model, which draws random numbers here "
                                 "(e.g. Dropout in training): the tangents would not match the forward "
                                 "pass. Use an nn.Sequential model (tangents='sequential') or "
                                 "hessian='autograd'") from e
            out[g] = self._soft_hist(tan_out, g)
        return out

    def _fisher_variance(self, yp: Tensor) -> Tensor:
        k = self._fisher_consts(yp.shape[1])
        calls = None
        if self._in_tan and self._use_seq:
            calls = self._recorder.collect(yp)
            if calls is None and self.tangents == "sequential":
                raise ValueError("tangents='sequential': the recorded activations do not match the "
                                 "network output (was the model called on wrapper.x, once?)")
        plan = self._plan
        if not self._in_tan or (calls is not None and plan is not None and plan.ok):
            # the whole loss as one autograd node with an analytic backward
            lin = [self._leaf_list[i].weight for i in plan.linears] if self._in_tan else []
            b = dict(n_s=self._idx["s"].stop, w=self._w, k=k, o=None,
                     specs={g: self._chain_spec(g, calls) for g in self._in_tan})
            first = yp
            if self._in_tan and self._fold_softmax:  # from the softmax input: one node less
                first, b["o"], b["inv_t"] = calls[-1][1], yp.detach(), plan.inv_t
            var, hess = _ChainFisher.apply(first, b, *lin)
            info = b["info"]
        else:
            tans = self._rule_tangent_hists(yp, calls) if calls is not None else self._jvp_tangent_hists(yp)
            hist = {g: self._soft_hist(yp[self._idx[g]], g).to(torch.float64) for g in _GROUPS}
            empty = hist["s"].new_zeros(0, yp.shape[1])
            d = {g: tans[g].to(torch.float64) if g in tans else empty for g in _GROUPS}
            res: Dict[str, Any] = {}
            var, hess = _FisherPoiVariance.apply(hist["s"], hist["b"], d["s"], d["b"], k, res)
            info = res["info"]
        self.last_hessian = hess
        if info != 0:  # else the variance is finite and > 0
            self._raise_bad(hess)
        return var

    def _autograd_hessian(self, yp: Tensor) -> Tensor:
        alpha = self._alpha
        theta0 = torch.tensor(self._theta0_phys(), dtype=torch.float64, device=self.device)
        f = {g: self._floor(self._soft_hist(yp[self._idx[g]], g)) for g in _GROUPS}
        asimov_f = dict(f)
        if self._x_nom:  # shapes at the nominal inputs, without the alpha dependence
            model = self.wrapper.model
            if self._rng is None:
                for g, xg in self._x_nom.items():
                    asimov_f[g] = self._floor(self._soft_hist(model(xg), g))
            else:  # the whole batch with the random state of the forward pass: same masks
                x_nom = self._replace_rows(self.wrapper.x.detach(), self._x_nom)
                devices = [self.device] if self.device.type == "cuda" else []
                with torch.random.fork_rng(devices=devices):
                    torch.set_rng_state(self._rng[0])
                    if self._rng[1] is not None:
                        torch.cuda.set_rng_state(self._rng[1], self.device)
                    y0 = model(x_nom)
                for g in self._x_nom:
                    asimov_f[g] = self._floor(self._soft_hist(y0[self._idx[g]], g))
        s, b = self._yields(theta0 + alpha)
        nu = s * f["s"] + b * f["b"]
        n = self._S0 * asimov_f["s"] + self._B0 * asimov_f["b"]
        nll = (nu - n * torch.log(nu)).sum()
        (grad,) = torch.autograd.grad(nll, alpha, create_graph=True)
        rows = [torch.autograd.grad(grad[i], alpha, create_graph=True, retain_graph=True,
                                    allow_unused=True, materialize_grads=True)[0]
                for i in range(self.n_params)]
        return torch.stack(rows) + torch.diag(self._curv)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(nuisances={list(self.nuisances)}, mu_true={self.mu_true}, "
                f"b_true={self.b_true}, hessian={self.hessian!r}, tangents={self.tangents!r})")


# ------------------------------------------------------------------------ interpolated
class ApproxInferno(_InfernoBase):
    r"""INFERNO with interpolated shape nuisances (the paper's own implementation).

    For every shape nuisance the rows it acts on are passed through the network at its
    down and up variations (one extra forward pass for all of them), giving down/up soft
    histograms :math:`f^\mp_k`; the shapes at a nuisance value are interpolated with
    HistFactory's code 2 (quadratic inside :math:`|\alpha| \le 1`, linear outside) by
    :func:`inferno.interp.interp_shape`, in the interpolation coordinate :math:`\alpha`
    (:math:`\pm 1` at the variations). Constraints given on the nuisance's value are mapped
    onto :math:`\alpha` (:meth:`ShapeNuisance.alpha_curvature`). Rate nuisances keep their
    physical units. The NLL's Hessian is computed with autograd on this small graph.

    Args:
        nuisances: shape nuisances (with ``transform`` + ``variations``, or ``up``/``down``)
            and rate nuisances.
        mu_true, b_true, eps: as :class:`Inferno`.
        interp_code: interpolation code passed to :func:`~inferno.interp.interp_shape`.
        aug_alpha: start each batch from random parameter values
            :math:`\theta_0 + \mathcal{N}(0, \texttt{aug\_std}^2)` and take ``n_steps``
            damped Newton steps (:math:`\theta \leftarrow \theta - \texttt{lr}\, H^{-1} g`,
            no gradient flow) towards the minimum before computing the Hessian there.
        n_steps, lr, aug_std: see ``aug_alpha``.
        seed: seed of the generator used by ``aug_alpha``.
    """

    def __init__(self, nuisances: Optional[Sequence[Nuisance]] = None, mu_true: float = PAPER_S,
                 b_true: float = PAPER_B, interp_code: Union[int, str] = 2, aug_alpha: bool = False,
                 n_steps: int = 10, lr: float = 0.1, aug_std: float = 0.1, seed: Optional[int] = None,
                 eps: float = 1e-7):
        super().__init__(nuisances, mu_true, b_true, eps)
        for _, n in self.shape_nuis:
            n.interp_scale  # raises if a transform-based nuisance has no variations
        self.interp_code = interp_code
        interp_shape(torch.zeros(1), torch.ones(2), torch.ones(1, 2), torch.ones(1, 2), interp_code)
        self.aug_alpha, self.n_steps, self.lr, self.aug_std = bool(aug_alpha), int(n_steps), float(lr), float(aug_std)
        if self.n_steps < 0 or not self.lr > 0 or not self.aug_std >= 0:
            raise ValueError("n_steps must be >= 0, lr > 0 and aug_std >= 0")
        self.seed = seed
        self.generator = torch.Generator()
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(int(seed))
        self.requires_grad_in_valid = False  # autograd is enabled locally on the small NLL graph

    def _setup(self, device: torch.device) -> None:
        super()._setup(device)
        f64 = dict(dtype=torch.float64, device=self.device)
        # theta: mu (events), shape nuisances in alpha units (nominal 0), rates in their units
        self._theta0 = torch.tensor([self.mu_true] + [0.0 if isinstance(n, ShapeNuisance) else n.nominal
                                                      for n in self.nuisances], **f64)
        self._curv = torch.tensor(
            [0.0] + [n.alpha_curvature() if isinstance(n, ShapeNuisance) else n.curvature()
                     for n in self.nuisances], **f64)

    def on_batch_begin(self) -> None:
        if self._active():
            self._split()

    def on_forwards_end(self) -> None:
        if not self._active():
            return
        wr = self.wrapper
        yp = wr.y_pred
        self._check_output(yp)
        f_nom = {g: self._floor(self._soft_hist(yp[self._idx[g]], g)) for g in _GROUPS}
        f_ud = self._up_down_shapes(wr.x)
        with torch.enable_grad():
            hess = self._hessian(f_nom, f_ud)
        wr.loss_val = self._poi_variance(hess)

    def _up_down_shapes(self, x: Tensor) -> Dict[str, Tuple[Tensor, Tensor]]:
        """(f_up, f_dw), each (K_g, bins), for the groups with shape nuisances."""
        inputs, sizes = [], []
        for g in _GROUPS:
            xg = x[self._idx[g]]
            for _, n in self.group_nuis[g]:
                up, dw = n.up_down(xg)
                inputs += [up, dw]
                sizes += [len(xg), len(xg)]
        if not inputs:
            return {}
        out = self.wrapper.model(torch.cat(inputs)).split(sizes)
        res, i = {}, 0
        for g in _GROUPS:
            k = len(self.group_nuis[g])
            if k:
                ups = [self._floor(self._soft_hist(out[i + 2 * j], g)) for j in range(k)]
                dws = [self._floor(self._soft_hist(out[i + 2 * j + 1], g)) for j in range(k)]
                res[g] = (torch.stack(ups), torch.stack(dws))
                i += 2 * k
        return res

    def _nu(self, theta: Tensor, f_nom: Dict[str, Tensor], f_ud: Dict[str, Tuple[Tensor, Tensor]]) -> Tensor:
        s, b = self._yields(theta)
        f = {}
        for g in _GROUPS:
            if g in f_ud:
                pos = [p for p, _ in self.group_nuis[g]]
                fi = interp_shape(theta[pos], f_nom[g], f_ud[g][0], f_ud[g][1], self.interp_code)
                fi = fi.clamp_min(1e-3 * self.eps if self.eps > 0 else 1e-30)
                f[g] = fi / fi.sum()
            else:
                f[g] = f_nom[g]
        return s * f["s"] + b * f["b"]

    def _constraint_nll(self, theta: Tensor) -> Tensor:
        """-sum_k log p_k at theta (alpha units for shape nuisances)."""
        out = theta.new_zeros(())
        for i, n in enumerate(self.nuisances, start=1):
            if n.constraint is None:
                continue
            value = n.alpha_to_value(theta[i]) if isinstance(n, ShapeNuisance) else theta[i]
            lp = n.constraint.log_prob(value.cpu()).to(device=theta.device, dtype=torch.float64)
            out = out - lp
        return out

    def _hessian(self, f_nom: Dict[str, Tensor], f_ud: Dict[str, Tuple[Tensor, Tensor]]) -> Tensor:
        n = self._S0_nu(f_nom)

        def nll(theta: Tensor, with_constraints: bool) -> Tensor:
            nu = self._nu(theta, f_nom, f_ud)
            out = (nu - n * torch.log(nu)).sum()
            return out + self._constraint_nll(theta) if with_constraints else out

        theta = self._theta0.clone()
        if self.aug_alpha:
            noise = torch.randn(self.n_params, generator=self.generator, dtype=torch.float64)
            theta = theta + self.aug_std * noise.to(self.device)
            for _ in range(self.n_steps):
                th = theta.detach().requires_grad_(True)
                val = nll(th, True)
                (g,) = torch.autograd.grad(val, th, create_graph=True)
                h = torch.stack([torch.autograd.grad(g[i], th, retain_graph=True, allow_unused=True,
                                                     materialize_grads=True)[0]
                                 for i in range(self.n_params)])
                step = torch.linalg.solve(h.detach(), g.detach())
                theta = (theta - self.lr * step).detach()
        th = theta.detach().requires_grad_(True)
        val = nll(th, self.aug_alpha)
        (g,) = torch.autograd.grad(val, th, create_graph=True)
        h = torch.stack([torch.autograd.grad(g[i], th, create_graph=True, retain_graph=True,
                                             allow_unused=True, materialize_grads=True)[0]
                         for i in range(self.n_params)])
        if not self.aug_alpha:  # at theta_0 the constraint curvature is precomputed
            h = h + torch.diag(self._curv)
        return h

    def _S0_nu(self, f_nom: Dict[str, Tensor]) -> Tensor:
        """Asimov counts: nominal yields times nominal shapes (differentiable in the weights)."""
        s0, b0 = self._yields(self._theta0)
        return s0 * f_nom["s"] + b0 * f_nom["b"]

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(nuisances={list(self.nuisances)}, mu_true={self.mu_true}, "
                f"b_true={self.b_true}, interp_code={self.interp_code!r}, aug_alpha={self.aug_alpha})")


# ------------------------------------------------------------------------ the paper's toy problem
class _PaperL(ColumnTransform):
    """Transform ``(x, l)``: background x2 -> x2 * l0 / l (picklable)."""

    col = 2

    def __init__(self, l0: float):
        self.l0 = float(l0)

    def __call__(self, x: Tensor, l: Tensor) -> Tensor:  # noqa: E741
        return paper_syst_transform(x, 0.0, l, l0=self.l0)

    def column_tangent(self, x: Tensor, v: float) -> Tensor:
        return x[:, 2] * (-self.l0 / float(v) ** 2)

    def is_identity(self, v: float) -> bool:
        return float(v) == self.l0

    def __repr__(self) -> str:
        return f"_PaperL(l0={self.l0})"


def _as_list(a: Any) -> List[Any]:
    if a is None:
        return []
    if isinstance(a, (Distribution, float, int)):
        return [a]
    return list(a)


def _paper_nuisances(float_r: bool, float_l: bool, float_b: bool, nonaux_b_norm: bool,
                     shape_aux: Optional[Sequence[Constraint]], b_norm_aux: Constraint,
                     s_norm_aux: Any, l_init: float,
                     r_mods: Optional[Tuple[float, float]] = None,
                     l_mods: Optional[Tuple[float, float]] = None) -> List[Nuisance]:
    n_shape = int(float_r) + int(float_l)
    aux = list(shape_aux) if shape_aux is not None else [None] * n_shape
    if len(aux) != n_shape:
        raise ValueError(f"shape_aux must have one constraint (or None) per floating shape nuisance "
                         f"(r: {float_r}, l: {float_l}), got {len(aux)}")
    nuis: List[Nuisance] = []
    if float_r:
        nuis.append(ShapeNuisance("r", shift_feature(0), on="b", nominal=PAPER_R,
                                  constraint=aux.pop(0), variations=r_mods))
    if float_l:
        nuis.append(ShapeNuisance("l", _PaperL(l_init), on="b", nominal=l_init,
                                  constraint=aux.pop(0), variations=l_mods))
    # b_norm_aux: one constraint or a list of them (one additive background-rate nuisance
    # each, as calc_profile takes it); nonaux_b_norm adds a free one
    b_aux = _as_list(b_norm_aux)
    if float_b and not b_aux and not nonaux_b_norm:
        b_aux = [None]
    for i, c in enumerate(b_aux):
        nuis.append(RateNuisance("b" if i == 0 else f"b_norm{i}", on="b", mode="add", constraint=c))
    if nonaux_b_norm:
        nuis.append(RateNuisance("b" if not b_aux else "b_free", on="b", mode="add", constraint=None))
    for i, c in enumerate(_as_list(s_norm_aux)):
        nuis.append(RateNuisance(f"s_norm{i}", on="s", mode="add", constraint=c))
    return nuis


class PaperInferno(Inferno):
    r"""Exact INFERNO for the paper's toy problem, in its physical units.

    Background events (generated at :math:`r = 0`, :math:`\lambda = l_\text{init} = 3`)
    are moved by :func:`inferno.paper.paper_syst_transform`: :math:`x_0 \to x_0 + r`,
    :math:`x_2 \to x_2\, l_\text{init}/\lambda`. Parameters: ``(mu, [r], [l], [b], [s_norm...])``.

    Args:
        float_r, float_l: the shape nuisances :math:`r` (nominal 0) and :math:`\lambda`
            (nominal ``l_init``) float.
        float_b: the background yield floats: :math:`B = b_\text{true} + \theta_b`,
            constrained by ``b_norm_aux`` if given, else free.
        mu_true, b_true: nominal yields (50 and 1000 in the paper).
        l_init: :math:`\lambda` at which the background was generated.
        shape_aux: constraints of the floating shape nuisances, in the order (r, l), in
            physical units: distributions of :math:`r` and :math:`\lambda`, float widths, or
            None (free). The paper's benchmarks 3-4: ``[0.4, 1.0]``, i.e.
            :math:`\mathcal{N}(r|0, 0.4)`, :math:`\mathcal{N}(\lambda|3, 1)`.
        b_norm_aux: constraint on the shift :math:`\theta_b` of the background yield, in
            events (``100.`` or ``Normal(0, 100)`` for benchmark 4), or a list of them (one
            additive nuisance each, as :func:`~inferno.calc_profile` takes them); implies
            ``float_b``.
        nonaux_b_norm: a free background-yield shift (besides any constrained ones).
        s_norm_aux: constraint(s) on additive signal-yield nuisances (events), one nuisance
            per entry.
        **kwargs: passed to :class:`Inferno` (``hessian``, ``tangents``, ``eps``).
    """

    def __init__(self, float_r: bool = True, float_l: bool = True, float_b: bool = False,
                 mu_true: float = PAPER_S, b_true: float = PAPER_B, l_init: float = PAPER_L,
                 shape_aux: Optional[Sequence[Constraint]] = None, b_norm_aux: Constraint = None,
                 nonaux_b_norm: bool = False, s_norm_aux: Any = None, **kwargs: Any):
        self.float_r, self.float_l, self.l_init = bool(float_r), bool(float_l), float(l_init)
        nuis = _paper_nuisances(float_r, float_l, float_b, nonaux_b_norm, shape_aux, b_norm_aux,
                                s_norm_aux, self.l_init)
        super().__init__(nuis, mu_true=mu_true, b_true=b_true, **kwargs)

    @classmethod
    def from_benchmark(cls, k: int, **kwargs: Any) -> "PaperInferno":
        """The callback for the paper's benchmark ``k`` (:data:`inferno.paper.BENCHMARKS`)."""
        return cls(**_benchmark_kwargs(k), **kwargs)


class ApproxPaperInferno(ApproxInferno):
    r"""Interpolated INFERNO for the paper's toy problem, as in the paper.

    Up/down templates of :math:`r` at ``r_mods`` (default :math:`\pm 0.2`) and of
    :math:`\lambda` at ``l_mods`` (default 2.5 / 3.5); the interpolation coordinates are
    :math:`\alpha_r = r / 0.2` and :math:`\alpha_\lambda = (\lambda - 3)/0.5`. Constraints
    are given in physical units, as for :class:`PaperInferno`, and converted: e.g.
    :math:`\mathcal{N}(r|0, 0.4)` becomes :math:`\mathcal{N}(\alpha_r|0, 2)` and
    :math:`\mathcal{N}(\lambda|3, 1)` becomes :math:`\mathcal{N}(\alpha_\lambda|0, 2)`
    (:meth:`ShapeNuisance.alpha_curvature`).

    Args:
        r_mods, l_mods: (down, up) values of :math:`r` and :math:`\lambda`; None: the
            nuisance does not float.
        float_b, mu_true, b_true, l_init, shape_aux, b_norm_aux, nonaux_b_norm, s_norm_aux:
            as :class:`PaperInferno`.
        **kwargs: passed to :class:`ApproxInferno` (``aug_alpha``, ``n_steps``, ``lr``,
            ``interp_code``, ``seed``, ``eps``).
    """

    def __init__(self, r_mods: Optional[Tuple[float, float]] = (-0.2, 0.2),
                 l_mods: Optional[Tuple[float, float]] = (2.5, 3.5), float_b: bool = False,
                 mu_true: float = PAPER_S, b_true: float = PAPER_B, l_init: float = PAPER_L,
                 shape_aux: Optional[Sequence[Constraint]] = None, b_norm_aux: Constraint = None,
                 nonaux_b_norm: bool = False, s_norm_aux: Any = None, **kwargs: Any):
        self.r_mods, self.l_mods, self.l_init = r_mods, l_mods, float(l_init)
        nuis = _paper_nuisances(r_mods is not None, l_mods is not None, float_b, nonaux_b_norm,
                                shape_aux, b_norm_aux, s_norm_aux, self.l_init, r_mods, l_mods)
        super().__init__(nuis, mu_true=mu_true, b_true=b_true, **kwargs)

    @classmethod
    def from_benchmark(cls, k: int, r_mods: Tuple[float, float] = (-0.2, 0.2),
                       l_mods: Tuple[float, float] = (2.5, 3.5), **kwargs: Any) -> "ApproxPaperInferno":
        """The interpolated callback for the paper's benchmark ``k``."""
        kw = _benchmark_kwargs(k)
        return cls(r_mods=r_mods if kw.pop("float_r") else None,
                   l_mods=l_mods if kw.pop("float_l") else None, **kw, **kwargs)


def _benchmark_kwargs(k: int) -> Dict[str, Any]:
    if k not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {k!r}: expected one of {sorted(BENCHMARKS)}")
    bm = BENCHMARKS[k]
    shape_aux = []
    if bm.float_r:
        shape_aux.append(bm.r_std)
    if bm.float_l:
        shape_aux.append(bm.l_std)
    return dict(float_r=bm.float_r, float_l=bm.float_l, float_b=bm.float_b,
                shape_aux=shape_aux, b_norm_aux=bm.b_std)


def paper_inferno(k: int, approx: bool = False, **kwargs: Any) -> Union[PaperInferno, ApproxPaperInferno]:
    """The INFERNO callback of the paper's benchmark ``k``: exact (:class:`PaperInferno`) or
    interpolated (``approx=True``, :class:`ApproxPaperInferno`); ``kwargs`` go to it."""
    cls = ApproxPaperInferno if approx else PaperInferno
    return cls.from_benchmark(k, **kwargs)


# ------------------------------------------------------------------------ prediction
class InfernoPred(PredHandler):
    """Prediction handler giving the hard assignment of each event: the index of its
    largest network output (int64), i.e. the bin of the INFERNO summary statistic."""

    def process(self, y_pred: Tensor) -> Tensor:
        return y_pred.argmax(dim=-1)

    def get_preds(self) -> np.ndarray:
        if not self.preds:
            return np.zeros(0, dtype=np.int64)
        return super().get_preds().astype(np.int64)
