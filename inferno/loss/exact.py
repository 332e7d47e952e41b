r"""The exact INFERNO callback for two processes (signal ``y == 1``, background ``y == 0``):
shape nuisances are transforms of the inputs whose effect is propagated through the network
(forward-mode tangents, :mod:`inferno.loss.tangents`), the loss computed by the fused fast
path (:mod:`inferno.loss.fused`) or, with ``hessian='autograd'``, by differentiating the NLL
twice. For any number of processes and every kind of systematic, use
:class:`inferno.loss.InfernoLoss` / :func:`inferno.loss.inferno_loss`.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from ..nuisance import ColumnTransform, Nuisance
from . import fused as _fused
from .base import PAPER_B, PAPER_S, _GROUPS, _InfernoBase
from .fused import _ChainFisher, _FisherPoiVariance
from .tangents import (_ActivationRecorder, _Call, _ChainPlan, _InputTangents, _leaf_supported, _leaf_tangent,
                       _leaves, _plain_sequential)

__all__ = ["Inferno"]


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
                     py=P * (P + 1) // 2 * n_bins <= _fused._PY_FISHER_MAX)
            for name in ("dS", "dB", "pos_s", "pos_b", "curv"):  # for the Python floats version
                k[name + "_l"] = k[name].tolist()
            self._consts[n_bins] = k
        return k

    def _remove_recorder(self) -> None:
        if self._recorder is not None:
            self._recorder.remove()
            self._recorder = None

    def on_teardown(self) -> None:  # after a successful fit or an error: the hooks go
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

    def _variance(self, yp: Tensor) -> Tensor:
        if self.hessian == "fisher":
            return self._fisher_variance(yp)
        return self._poi_variance(self._autograd_hessian(yp))

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
