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

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Normal

from .callback import AbsCallback, PredHandler
from .interp import interp_shape
from .nuisance import (Constraint, Nuisance, RateNuisance, ShapeNuisance, _check_nuisances,
                       constraint_curvature)
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
    if isinstance(m, (nn.Linear, nn.Identity)) or isinstance(m, _ELEMENTWISE):
        return True
    if isinstance(m, nn.Softmax):
        return m.dim in (-1, 1)
    if isinstance(m, (nn.Dropout, nn.AlphaDropout)):
        return (not m.training) or m.p == 0
    return False


def _leaf_tangent(m: nn.Module, inp: Tensor, out: Tensor, idx: Tensor, t: Tensor) -> Tensor:
    r"""Forward-mode derivative through one leaf: ``t`` (K, m, d_in) -> (K, m, d_out).

    ``inp``/``out`` are the leaf's input/output on the whole batch (primal values) and
    ``idx`` the m rows the tangents belong to.
    """
    if isinstance(m, nn.Linear):
        return t @ m.weight.t()
    if isinstance(m, (nn.Identity, nn.Dropout, nn.AlphaDropout)):
        return t
    if isinstance(m, nn.ReLU):
        return t * (out[idx] > 0).to(t.dtype)
    if isinstance(m, nn.Tanh):
        o = out[idx]
        return t * (1 - o * o)
    if isinstance(m, nn.Sigmoid):
        o = out[idx]
        return t * (o * (1 - o))
    if isinstance(m, nn.Softmax):  # includes VariableSoftmax; the model output is 2-D here
        o = out[idx]
        inv_t = 1.0 / getattr(m, "temp", 1.0)
        return o * (t - (o * t).sum(-1, keepdim=True)) * inv_t
    # other elementwise activations: their own forward-mode derivative, exact
    i = inp[idx]
    _, tan = torch.func.jvp(m, (i.expand(t.shape[0], *i.shape),), (t,))
    return tan


class _ActivationRecorder:
    """Forward hooks on the leaves of a Sequential model, recording their input and output
    during the wrapper's forward pass (only while armed)."""

    def __init__(self, leaves: List[nn.Module]):
        self.leaves = leaves
        self.armed = False
        self.store: List[Optional[Tuple[Tensor, Tensor]]] = [None] * len(leaves)
        self.handles = [m.register_forward_hook(self._hook(i)) for i, m in enumerate(leaves)]

    def _hook(self, i: int):
        def hook(mod: nn.Module, args: Tuple[Any, ...], out: Tensor) -> None:
            if self.armed:
                self.store[i] = (args[0], out)
        return hook

    def arm(self) -> None:
        self.store = [None] * len(self.leaves)
        self.armed = True

    def disarm(self) -> None:
        self.armed = False

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles, self.store, self.armed = [], [None] * len(self.leaves), False


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
        stats = torch.stack([sig.sum(), bkg.sum()]).to(torch.float64)
        if w is not None:
            stats = torch.cat([stats, torch.stack([w[sig].sum(), w[bkg].sum()]).to(torch.float64)])
        st = stats.tolist()
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
        # reorder the batch, signal rows first, so that the groups are contiguous slices
        if not bool(sig[:n_s].all()):
            perm = torch.argsort(bkg.to(torch.int8), stable=True)
            wr.x = wr.x[perm]
            wr.y = wr.y[perm]
            if wr.w is not None:
                wr.w = wr.w[perm]
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
        if y.ndim != 2 or y.shape[1] < 2:
            raise ValueError(f"the network output must have shape (n_events, n_bins >= 2) (soft bin "
                             f"assignments, e.g. from VariableSoftmax), got {tuple(y.shape)}")

    def _poi_variance(self, hess: Tensor) -> Tensor:
        r""":math:`[H^{-1}]_{00}` from a Cholesky factorisation; ValueError if H is not PD."""
        self.last_hessian = hess.detach()
        chol, info = torch.linalg.cholesky_ex(hess)
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
        old = getattr(self, "wrapper", None)
        self.set_wrapper(wr)
        try:
            self._setup(wr.device)
            self.on_batch_begin()
            wr.y_pred = model(wr.x)
            self.on_forwards_end()
            return wr.loss_val
        finally:
            self._teardown()
            if old is not None:
                self.set_wrapper(old)

    def _teardown(self) -> None:
        """Release what _setup installed (nothing here)."""

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
            f"positive definite (eigenvalues {ev}): a free nuisance that does not change the expected "
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
    transform at the nominal value (so the network sees :math:`x(\theta_0)`), and the input
    tangents :math:`\partial x / \partial \theta_k` are computed (forward mode, through the
    user's transform).

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
            nominal forward pass). Both are exact; ``'fisher'`` is several times faster.
        tangents: how ``'fisher'`` propagates the input tangents through the network:
            ``'auto'`` (``'sequential'`` when possible, else ``'jvp'``); ``'sequential'``:
            layer by layer, reusing the activations of the wrapper's forward pass recorded
            by forward hooks (``nn.Sequential`` of Linear, elementwise activations,
            Softmax/VariableSoftmax, Identity, and Dropout in eval mode); ``'jvp'``:
            ``torch.func.jvp`` through the whole model on the affected rows (any model whose
            output for an event depends on that event only).
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
        # only the autograd strategy needs the wrapper's forward pass to record a graph in the
        # validation phase; the Fisher form is computed in forward mode
        self.requires_grad_in_valid = hessian == "autograd"
        self._recorder: Optional[_ActivationRecorder] = None

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
        self._remove_recorder()
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
                    self._recorder = _ActivationRecorder(leaves)

    def _remove_recorder(self) -> None:
        if self._recorder is not None:
            self._recorder.remove()
            self._recorder = None

    def on_train_end(self) -> None:
        self._remove_recorder()

    def _teardown(self) -> None:
        self._remove_recorder()

    # -- per batch
    def _group_transform(self, g: str, x: Tensor, values: Tensor) -> Tensor:
        """Apply, in order, the shape nuisances acting on group g at ``values`` (K_g,)."""
        for j, (_, n) in enumerate(self.group_nuis[g]):
            x = n.apply(x, values[j])
        return x

    def _nominal_values(self, g: str, dtype: torch.dtype) -> Tensor:
        return torch.tensor([n.nominal for _, n in self.group_nuis[g]], dtype=dtype, device=self.device)

    def _input_tangents(self, g: str, xg: Tensor) -> Tuple[Tensor, Tensor]:
        r"""Nominal inputs :math:`x(\theta_0)` of the rows ``xg`` of group ``g`` and the tangents
        :math:`\partial x / \partial \theta_k` of its K shape nuisances, shape (K, m, d).

        The transforms map one scalar to many numbers; the tangents are obtained with two
        reverse passes (the gradient :math:`J^\top u` is linear in a dummy cotangent
        :math:`u`, and :math:`\partial (J^\top u)_k / \partial u = J_{:,k}`), which on small
        elementwise transforms costs less than PyTorch's forward mode.
        """
        v0 = self._nominal_values(g, xg.dtype)
        k = len(v0)
        with torch.enable_grad():
            v = v0.clone().requires_grad_(True)
            xp = self._group_transform(g, xg, v)
            if not xp.requires_grad:  # no dependence on the values at all
                return xp.detach(), xg.new_zeros(k, *xg.shape)
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
        return xp.detach(), torch.stack(tans).detach()

    def on_batch_begin(self) -> None:
        if not self._active():
            return
        wr = self.wrapper
        self._split()
        self._in_tan: Dict[str, Tensor] = {}
        self._x_nom: Dict[str, Tensor] = {}
        x = wr.x  # reordered by _split
        if self.hessian == "fisher":
            for g in _GROUPS:
                if self.group_nuis[g]:
                    xn, tan = self._input_tangents(g, x[self._idx[g]])
                    self._in_tan[g] = tan  # (K_g, m_g, d)
                    self._x_nom[g] = xn
            wr.x = self._replace_rows(x, self._x_nom)
            use_seq = self._recorder is not None and all(
                _leaf_supported(m) for m in self._recorder.leaves)
            if self.tangents == "sequential" and not use_seq:
                raise ValueError("tangents='sequential': the model has layers without a tangent rule "
                                 "in the current mode (e.g. Dropout in training); use 'jvp'")
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

    def on_forwards_end(self) -> None:
        if not self._active():
            return
        wr = self.wrapper
        yp = wr.y_pred
        self._check_output(yp)
        if self.hessian == "fisher":
            hess = self._fisher_hessian(yp)
        else:
            hess = self._autograd_hessian(yp)
        wr.loss_val = self._poi_variance(hess)

    def _output_tangents(self, yp: Tensor) -> Dict[str, Tensor]:
        """d y / d theta_k on the rows of each group: (K_g, m_g, n_bins)."""
        out: Dict[str, Tensor] = {}
        if not self._in_tan:
            return out
        if self._use_seq:
            rec = self._recorder
            rec.disarm()
            ok = all(s is not None for s in rec.store) and rec.store[-1][1] is yp
            if ok:
                for g, t in self._in_tan.items():
                    idx = self._idx[g]
                    for m, (inp, o) in zip(rec.leaves, rec.store):
                        t = _leaf_tangent(m, inp, o, idx, t)
                    out[g] = t
                rec.store = [None] * len(rec.leaves)
                return out
            if self.tangents == "sequential":
                raise ValueError("tangents='sequential': the recorded activations do not match the "
                                 "network output (was the model called on wrapper.x?)")
        model = self.wrapper.model
        for g, t in self._in_tan.items():
            xg = self._x_nom[g]
            _, tan = torch.func.vmap(lambda tt: torch.func.jvp(model, (xg,), (tt,)))(t)
            out[g] = tan
        return out

    def _fisher_hessian(self, yp: Tensor) -> Tensor:
        n_bins = yp.shape[1]
        f = {g: self._floor(self._soft_hist(yp[self._idx[g]], g)) for g in _GROUPS}
        jac = torch.outer(self._dS, f["s"]) + torch.outer(self._dB, f["b"])  # (P, bins)
        norm = 1.0 / (1.0 + n_bins * self.eps)
        scale = {"s": self._S0 * norm, "b": self._B0 * norm}
        for g, t in self._output_tangents(yp).items():
            df = self._soft_hist(t, g).to(torch.float64) * scale[g]  # (K_g, bins)
            jac = jac.index_add(0, self._pos[g], df)
        nu = self._S0 * f["s"] + self._B0 * f["b"]
        return (jac / nu) @ jac.t() + torch.diag(self._curv)

    def _autograd_hessian(self, yp: Tensor) -> Tensor:
        alpha = self._alpha
        theta0 = torch.tensor(self._theta0_phys(), dtype=torch.float64, device=self.device)
        f = {g: self._floor(self._soft_hist(yp[self._idx[g]], g)) for g in _GROUPS}
        asimov_f = {}
        for g in _GROUPS:
            if g in self._x_nom:  # shapes at the nominal inputs, without the alpha dependence
                asimov_f[g] = self._floor(self._soft_hist(self.wrapper.model(self._x_nom[g]), g))
            else:
                asimov_f[g] = f[g]
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
class _PaperR:
    """Transform ``(x, r)``: background x0 -> x0 + r (picklable)."""

    def __init__(self, l0: float):
        self.l0 = float(l0)

    def __call__(self, x: Tensor, r: Tensor) -> Tensor:
        return paper_syst_transform(x, r, self.l0, l0=self.l0)


class _PaperL:
    """Transform ``(x, l)``: background x2 -> x2 * l0 / l (picklable)."""

    def __init__(self, l0: float):
        self.l0 = float(l0)

    def __call__(self, x: Tensor, l: Tensor) -> Tensor:  # noqa: E741
        return paper_syst_transform(x, 0.0, l, l0=self.l0)


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
    if nonaux_b_norm and b_norm_aux is not None:
        raise ValueError("nonaux_b_norm (b free) and b_norm_aux (b constrained) are exclusive")
    nuis: List[Nuisance] = []
    if float_r:
        nuis.append(ShapeNuisance("r", _PaperR(l_init), on="b", nominal=PAPER_R,
                                  constraint=aux.pop(0), variations=r_mods))
    if float_l:
        nuis.append(ShapeNuisance("l", _PaperL(l_init), on="b", nominal=l_init,
                                  constraint=aux.pop(0), variations=l_mods))
    if float_b or nonaux_b_norm or b_norm_aux is not None:
        nuis.append(RateNuisance("b", on="b", mode="add", constraint=b_norm_aux))
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
            events (``100.`` or ``Normal(0, 100)`` for benchmark 4); implies ``float_b``.
        nonaux_b_norm: the background yield floats without constraint.
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
