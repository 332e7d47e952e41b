r"""Output tangents of the network: how the derivative of the inputs with respect to the shape
nuisances, :math:`\partial x/\partial\theta_k`, is pushed through the network to the soft
histograms, :math:`\sum_e w_e\, \partial y(x_e)/\partial\theta_k` per process.

All K nuisances of a group of rows are propagated together, as a batch of tangents
``(K, m, d)``, and the primal values are those of the training loop's own forward pass:

* **layer by layer** (a plain ``nn.Sequential``, possibly nested): forward hooks record the
  activations of the forward pass (:class:`Recorder`) and every leaf with an exact rule
  (``Linear``, elementwise activations, ``Softmax``/``VariableSoftmax``, ``Identity``,
  ``Dropout`` with its mask) maps the tangents; a leaf without one (e.g. a feature layer)
  gets a forward-mode pass of that leaf alone (:mod:`inferno.loss.forward_mode`) from its
  recorded input, under ``no_grad`` if it has no trainable parameters.
* For a ``Linear, [ReLU | LeakyReLU | Identity | Dropout]*, ..., Linear, Softmax`` body the
  tangents, their softmax and the per-process sums form one autograd node with a
  hand-written backward (:mod:`inferno.loss.chain`).
* Any other module: forward mode through the transforms and the whole network on the rows
  (:func:`input_tangents` with the network as the stage; the primal is recomputed there).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.autograd import forward_ad as fwAD
from torch.nn import functional as F

from .chain import ChainTangents, chain_layout, pwl_derivative, row_softmax
from .checks import _check_batch
from .forward_mode import dual_pass, jvp

__all__ = ["Recorder", "InputTangents", "leaves_of", "split_stage", "input_tangents", "stage_tangents",
           "cached_tangents", "TANGENT_KEY", "jvp", "propagate", "weighted_sums"]

#: the batch column (``extras``) of a nuisance's precomputed input-stage tangents: ``TANGENT_KEY + name``
TANGENT_KEY = "tangent:"

_Call = Tuple[nn.Module, Tensor, Tensor, Optional[Tensor]]  # (leaf, input, output, dropout mask)

_ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Tanh, nn.Sigmoid,
                nn.Softplus, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.ReLU6, nn.LogSigmoid, nn.Softsign,
                nn.Tanhshrink)


def leaves_of(model: nn.Module) -> Optional[List[nn.Module]]:
    """The leaves of a (nested) plain ``nn.Sequential`` in call order, else None."""
    if not isinstance(model, nn.Sequential) or type(model).forward is not nn.Sequential.forward:
        return None
    out: List[nn.Module] = []
    for m in model:
        sub = leaves_of(m) if isinstance(m, nn.Sequential) else [m]
        if sub is None:
            return None
        out.extend(sub)
    return out


def _has_rule(m: nn.Module) -> bool:
    """An exact layer rule exists for leaf ``m`` in its current mode."""
    if isinstance(m, (nn.Linear, nn.Identity, nn.ReLU, nn.Dropout)):
        return True
    if isinstance(m, _ELEMENTWISE):
        return not getattr(m, "inplace", False)  # the rule reads the leaf's input
    if isinstance(m, nn.Softmax):
        return row_softmax(m)
    if isinstance(m, nn.AlphaDropout):
        return not m.training or m.p == 0
    return False


def _trainable(m: nn.Module) -> bool:
    return any(p.requires_grad for p in m.parameters())


def check_deterministic(model: nn.Module) -> None:
    """Forward mode re-runs ``model``: refuse one that draws random numbers (Dropout in training)."""
    if any(isinstance(m, (nn.modules.dropout._DropoutNd, nn.AlphaDropout)) and m.training and m.p > 0
           for m in model.modules()):
        raise ValueError("forward-mode tangents re-run the network, which draws random numbers here (Dropout in "
                         "training): the tangents would not match the forward pass. Use a plain nn.Sequential "
                         "(its activations and masks are recorded) or tangents='layers'")


class Recorder:
    """Forward hooks on the leaves of a plain ``nn.Sequential`` that record, while armed, each
    leaf's input and output (and the mask of a Dropout in training, replayed from the random
    state before its call). Linear layers are not hooked (a hook slows a module's call; the
    weights are all their rule needs). Use as a context manager or call :meth:`remove`."""

    def __init__(self, model: nn.Module):
        leaves = leaves_of(model)
        if leaves is None:
            raise ValueError("layer-by-layer tangents need a plain nn.Sequential")
        self.leaves = leaves
        self.hooked = [m for m in leaves if not isinstance(m, nn.Linear)]
        self.armed, self.calls = False, []
        self._rng: Optional[Tensor] = None
        uniq = {id(m): m for m in self.hooked}.values()
        self.handles = [m.register_forward_hook(self._hook) for m in uniq]
        self.handles += [m.register_forward_pre_hook(self._pre) for m in uniq if isinstance(m, nn.Dropout)]

    def _pre(self, mod: nn.Module, args: Tuple[Any, ...]) -> None:
        if self.armed and mod.training and mod.p > 0:
            dev = args[0].device
            self._rng = torch.cuda.get_rng_state(dev) if dev.type == "cuda" else torch.get_rng_state()

    def _hook(self, mod: nn.Module, args: Tuple[Any, ...], out: Tensor) -> None:
        if not self.armed:
            return
        if len(self.calls) >= len(self.hooked):  # an interrupted pass was never collected
            self.armed, self.calls = False, []
            return
        inp, mask = args[0], None
        if isinstance(mod, nn.Dropout) and mod.training and mod.p > 0:
            dev = inp.device
            with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else [], device_type=dev.type):
                if dev.type == "cuda":
                    torch.cuda.set_rng_state(self._rng, dev)
                else:
                    torch.set_rng_state(self._rng)
                mask = F.dropout(torch.ones_like(inp), mod.p, True)
        self.calls.append((mod, inp, out, mask))

    def arm(self) -> None:
        self.calls, self.armed = [], True

    def collect(self, y: Tensor, x: Tensor) -> Optional[List[Optional[_Call]]]:
        """The calls of one pass, one per leaf (Linear: ``(leaf, None, None, None)``), if
        they are exactly one pass whose output is ``y``; else None."""
        self.armed = False
        calls, self.calls = self.calls, []
        if len(calls) != len(self.hooked) or any(c[0] is not m for c, m in zip(calls, self.hooked)):
            return None
        if self.hooked and calls[-1][2] is not y:
            return None
        it = iter(calls)
        return [(m, None, None, None) if isinstance(m, nn.Linear) else next(it) for m in self.leaves]

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles, self.calls, self.armed = [], [], False

    def __enter__(self) -> "Recorder":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()


class InputTangents:
    r"""Tangents :math:`\partial x/\partial\theta_k` of K nuisances on m rows: ``dense``
    (K, m, d), or (one input column per nuisance) ``cols`` (K,) and ``coef`` (K, m) or None
    for all ones: tangent k is ``coef[k]`` in column ``cols[k]``, zero elsewhere."""

    def __init__(self, n_rows: int, n_feat: int, dense: Optional[Tensor] = None, cols: Optional[Tensor] = None,
                 coef: Optional[Tensor] = None):
        self.n_rows, self.n_feat, self.dense_, self.cols, self.coef = n_rows, n_feat, dense, cols, coef

    @property
    def k(self) -> int:
        return len(self.cols) if self.dense_ is None else self.dense_.shape[0]

    def dense(self, like: Tensor) -> Tensor:
        if self.dense_ is None:
            d = like.new_zeros(self.k, self.n_rows, self.n_feat)
            c = like.new_ones(self.k, self.n_rows) if self.coef is None else self.coef.to(like.dtype)
            d.scatter_(2, self.cols.view(-1, 1, 1).expand(-1, self.n_rows, 1), c.unsqueeze(-1))
            self.dense_ = d
        return self.dense_


def _leaf_tangent(call: _Call, rows: Tensor, t: Tensor) -> Tensor:
    """Forward-mode derivative through one leaf with a rule: ``t`` (K, m, d_in) -> (K, m, d_out)."""
    m, inp, out, mask = call
    if isinstance(m, nn.Linear):
        return torch.matmul(t, m.weight.t())
    if mask is not None:
        return t * mask[rows]
    if isinstance(m, (nn.Identity, nn.Dropout, nn.AlphaDropout)):
        return t
    if isinstance(m, nn.ReLU):  # reads the output only (inplace is fine); the mask is detached
        return torch.ops.aten.threshold_backward(t, out[rows].detach().expand_as(t), 0)
    if isinstance(m, nn.Softmax):
        o = out[rows]
        return (t - (o * t).sum(-1, keepdim=True)) * (o * (1.0 / getattr(m, "temp", 1.0)))
    if isinstance(m, nn.Tanh):
        o = out[rows]
        return t * (1 - o * o)
    if isinstance(m, nn.Sigmoid):
        o = out[rows]
        return t * (o - o * o)
    i = inp[rows]  # other elementwise activations: their derivative by forward mode
    return t * jvp(m, i, torch.ones_like(i)[None], with_graph=True)[0]


def weighted_sums(t: Tensor, a: Optional[Tensor], pidx: Tensor, n_proc: int) -> Tensor:
    """(K, m, bins) tangents -> (K, n_proc, bins) per-process sums with weights ``a`` (K or 1, m;
    None: unit weights)."""
    src = t if a is None else t * a.to(t.dtype).unsqueeze(-1)
    return t.new_zeros(t.shape[0], n_proc, t.shape[-1]).index_add(1, pidx, src)


def split_stage(leaves: List[nn.Module]) -> int:
    """The number of leading leaves without an exact rule (an input stage, e.g. a feature layer):
    their tangents come from forward mode (:func:`input_tangents`)."""
    i = 0
    while i < len(leaves) and not _has_rule(leaves[i]):
        i += 1
    return i


def input_tangents(transforms: Sequence[Any], x: Tensor, stage: Optional[nn.Module] = None) -> InputTangents:
    r"""Tangents :math:`\partial s(T_k(x, v))/\partial v` at the nominal values, K nuisances on
    the rows ``x``, after the input stage ``s`` (None: the identity).

    ``transforms``: (transform, nominal) pairs. Column transforms
    (:class:`~inferno.nuisance.ColumnTransform`) give their tangents analytically (without a
    stage, in the column form). Other transforms map one scalar to many numbers: their tangents
    come from two reverse passes (:math:`J^\top u` is linear in a dummy cotangent :math:`u` and
    :math:`\partial (J^\top u)/\partial u = J`), which for elementwise transforms costs a
    fraction of forward mode with a 0-dim dual. The stage then gets one forward-mode pass over
    the K tangents stacked along the rows (under ``no_grad`` when it has no trainable
    parameters: its tangents are then constants of the network's weights).
    """
    from ..nuisance import ColumnTransform

    m, d = x.shape
    cols = [t.col for t, _ in transforms if isinstance(t, ColumnTransform)]
    column = len(cols) == len(transforms)
    if column:
        bad = [c for c in cols if not -d <= c < d]
        if bad:
            raise ValueError(f"shape nuisance column(s) {bad} out of range for inputs with {d} features")
    if stage is None and column and len({c % d for c in cols}) == len(cols):
        cts = [t.column_tangent(x, v) for t, v in transforms]
        coef = None
        if not all(isinstance(c, float) and c == 1.0 for c in cts):
            coef = x.new_empty(len(cts), m)
            for j, c in enumerate(cts):
                coef[j] = c
        return InputTangents(m, d, cols=torch.tensor([c % d for c in cols], device=x.device), coef=coef)
    dx = torch.stack([_transform_tangent(t, v, x) for t, v in transforms])
    if stage is None:
        return InputTangents(m, d, dense=dx)
    graph = _trainable(stage) and torch.is_grad_enabled()
    k = dx.shape[0]
    with torch.set_grad_enabled(graph), dual_pass(graph):
        o = stage(fwAD.make_dual(x.detach().repeat(k, 1), dx.reshape(k * m, d)))
        tg = fwAD.unpack_dual(o).tangent
    out = (torch.zeros_like(o) if tg is None else tg).reshape(k, m, -1)
    return InputTangents(m, out.shape[-1], dense=out)


def stage_tangents(analysis: Any, net: nn.Module, x: Tensor, process: Tensor,
                   chunk: int = 16384) -> Dict[str, Tensor]:
    r"""The tangents of every transform nuisance after the network's input stage, per event, as
    batch columns: ``{TANGENT_KEY + name: (n_events, d)}`` (zero on the rows of the processes a
    nuisance does not act on), to pass to the loss with the batch (the ``extras`` of a
    :class:`~inferno.data.DataSet`).

    The input stage is the leading leaves of a plain ``nn.Sequential`` without an exact tangent
    rule (e.g. a feature layer, :func:`split_stage`). When it has no trainable parameters, its
    tangents :math:`\partial s(T_k(x, v))/\partial v` are constants of each event: computed
    here once (forward mode, ``chunk`` events at a time) instead of in every batch of every
    epoch; the loss then propagates them from the stage's output. They are the loss's own
    values (the same computation, row by row). Recompute them if the stage or the events change.

    Raises:
        ValueError: a network that is not a plain ``nn.Sequential`` with an input stage, a stage
            with trainable parameters, labels of no process, an analysis without transforms.
    """
    leaves = leaves_of(net)
    i0 = 0 if leaves is None else split_stage(leaves)
    if not i0:
        raise ValueError("stage_tangents needs a plain nn.Sequential whose first leaves (its input stage, e.g. a "
                         "feature layer) have no exact tangent rule; this network has none: the loss propagates "
                         "its tangents layer by layer already")
    stage = nn.Sequential(*leaves[:i0])
    if _trainable(stage):
        raise ValueError("the network's input stage has trainable parameters: its tangents change during training "
                         "and cannot be computed in advance")
    if not analysis._transforms:
        raise ValueError("the analysis has no transform nuisances: there are no tangents to compute")
    labels = _check_batch(x, process, None)[0]
    x_in = analysis._nominal_inputs(x, labels)
    slot, ok = analysis._slots(labels)
    if not bool(ok):
        raise ValueError(f"labels {sorted(set(labels.tolist()) - set(analysis._slot_of))[:10]} belong to no process")
    out: Dict[str, Tensor] = {}
    for g, (_, names) in enumerate(analysis._transform_groups):
        rows = (analysis._group_local[g].to(x.device)[slot] >= 0).nonzero().squeeze(-1)
        trans = [(analysis.nuisance[n].transform, analysis.nuisance[n].nominal) for n in names]
        for r in rows.split(chunk):
            t = input_tangents(trans, x_in[r], stage).dense(x)
            for k, n in enumerate(names):
                if n not in out:
                    out[n] = t.new_zeros(len(x), t.shape[-1])
                out[n][r] = t[k]
    return {TANGENT_KEY + n: t for n, t in out.items()}


def cached_tangents(columns: Sequence[Tensor], names: Sequence[str], stage: Sequence[nn.Module], rows: Tensor,
                    n_events: int, width: Optional[int]) -> InputTangents:
    """The input-stage tangents of the rows ``rows`` from the batch columns of :func:`stage_tangents`
    (one per nuisance of ``names``), checked against the batch and the network."""
    if any(_trainable(m) for m in stage):
        raise ValueError("the batch carries precomputed input-stage tangents (stage_tangents), but the network's "
                         "input stage has trainable parameters: its tangents change during training")
    for c, n in zip(columns, names):
        if c.ndim != 2 or len(c) != n_events or (width is not None and c.shape[1] != width):
            raise ValueError(f"the precomputed tangents {TANGENT_KEY + n!r} have shape {tuple(c.shape)}; the batch has "
                             f"{n_events} events and the network's input stage {width} outputs (stage_tangents of "
                             "another network?)")
    dense = torch.stack([c[rows] for c in columns])
    return InputTangents(len(rows), dense.shape[-1], dense=dense)


def _transform_tangent(t: Any, v0: float, x: Tensor) -> Tensor:
    """:math:`\partial T(x, v)/\partial v` at ``v0`` (m, d), detached (the inputs are data)."""
    from ..nuisance import ColumnTransform

    if isinstance(t, ColumnTransform):
        out = torch.zeros_like(x)
        out[:, t.col] = t.column_tangent(x, v0)
        return out
    with torch.enable_grad():
        v = torch.tensor(float(v0), dtype=x.dtype, device=x.device, requires_grad=True)
        xp = t(x.detach(), v)
        if not xp.requires_grad:  # no dependence on the value at all
            return torch.zeros_like(x)
        u = torch.zeros_like(xp, requires_grad=True)
        (g,) = torch.autograd.grad(xp, v, grad_outputs=u, create_graph=True)
        if not g.requires_grad:
            return torch.zeros_like(x)
        (d,) = torch.autograd.grad(g, u, allow_unused=True, materialize_grads=True)
    return d.detach().to(x.dtype)


def propagate(body: List[nn.Module], calls: List[_Call], rows: Tensor, tan: InputTangents, a: Optional[Tensor],
              pidx: Tensor, n_proc: int, fused: bool = True) -> Tensor:
    r"""Per-process weighted sums of the output tangents (K, n_proc, bins) of the rows ``rows``
    of a batch whose forward pass through ``body`` was recorded (``calls``), layer by layer;
    ``tan`` are the tangents at the body's input, ``a`` (1 or K, m) the rows' weights (None: 1),
    ``pidx`` (m,) their process; ``fused=False``: every rule through autograd (exact higher
    derivatives) instead of the fused node."""
    layout = chain_layout(body) if fused else None
    if layout is not None:
        linears, acts, inv_t = layout
        D = []
        for seg in acts[:-1]:
            d: Optional[Tensor] = None
            for i in seg:
                di = pwl_derivative(calls[i], rows)
                if di is not None:
                    d = di if d is None else d * di
            D.append(d)
        o = calls[-1][2].index_select(0, rows)
        cols = tan.cols if (tan.dense_ is None and len(linears) >= 2) else None
        coef = tan.coef if cols is not None else None  # dense tangents hold their coefficients
        aa = a if coef is None else (coef if a is None else a * coef)
        dense = None if cols is not None else tan.dense(o).to(o.dtype).transpose(0, 1).contiguous()  # (m, K, d)
        spec = dict(D=D, cols=cols, dense=dense, a=None if aa is None else aa.to(o.dtype), pidx=pidx, n_proc=n_proc,
                    inv_t=inv_t)
        return ChainTangents.apply(o, spec, *[body[i].weight for i in linears])
    t = tan.dense(next((q for m in body for q in m.parameters()), calls[-1][2]))
    for m, call in zip(body, calls):
        if _has_rule(m):
            t = _leaf_tangent(call, rows, t)
        else:  # a leaf without a rule inside the body: forward mode from its recorded input
            t = jvp(m, call[1][rows], t, with_graph=True)
    return weighted_sums(t, a, pidx, n_proc)
