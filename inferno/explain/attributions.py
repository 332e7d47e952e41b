r"""Gradient attributions of a trained summary: which inputs move the events into their bins,
and which move the INFERNO loss.

For a network :math:`y(x)` with outputs :math:`y_k` (the soft bin assignments of an INFERNO
network, the logits or score of a classifier):

* :func:`gradient_x_input`: :math:`a_{kf}(x) = x_f\,\partial y_k/\partial x_f` (first order:
  the change of :math:`y_k` if :math:`x_f` went to 0 linearly);
* :func:`integrated_gradients`: :math:`a_{kf} = (x_f - b_f)\int_0^1 \partial_f
  y_k(b + \alpha(x - b))\,d\alpha` from a baseline :math:`b`; *complete*,
  :math:`\sum_f a_{kf} = y_k(x) - y_k(b)`, up to the quadrature error, which is returned
  (:attr:`IGResult.completeness_error`): Gauss-Legendre nodes by default, exact to rounding
  for smooth networks with enough of them (piecewise-linear ones, ReLU, converge slowly:
  use more steps and check the error);
* :func:`occlusion`: the change of the outputs when a group of columns is replaced by a
  baseline value (the weighted mean by default);
* :func:`loss_gradient_x_input` / :func:`loss_occlusion`: the same for the INFERNO loss of
  the analysis on the events (:func:`~inferno.loss.inferno_loss`, all events together);
* :func:`attribution_matrix` / :func:`attribution_table`: per-event attributions averaged
  over the events of each (hard) bin, for each process: the output attributed is the one
  that put the event in its bin (the argmax for several outputs, the only one for a score).

Every network is put in evaluation mode while it is differentiated (and restored).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..loss import Analysis, inferno_loss

__all__ = ["gradient_x_input", "integrated_gradients", "IGResult", "occlusion", "loss_gradient_x_input",
           "loss_occlusion", "attribution_matrix", "attribution_table", "attribution_target", "IG_RULES"]

#: quadrature rules of :func:`integrated_gradients`
IG_RULES = ("gauss-legendre", "midpoint")


@contextlib.contextmanager
def _eval(net: Any) -> Iterator[None]:
    """The module in evaluation mode for the block (a plain callable as it is)."""
    if not isinstance(net, nn.Module):
        if not callable(net):
            raise ValueError(f"net must be a torch.nn.Module or a callable, got {type(net).__name__}")
        yield
        return
    was = net.training
    net.eval()
    try:
        yield
    finally:
        net.train(was)


def _check_x(x: Any) -> Tensor:
    if not isinstance(x, Tensor) or x.ndim != 2 or not x.is_floating_point():
        raise ValueError(f"x must be a floating-point tensor of shape (n_events, n_features), got "
                         f"{type(x).__name__} {tuple(getattr(x, 'shape', ()))}")
    return x.detach()


def _outputs(net: nn.Module, x: Tensor) -> Tensor:
    y = net(x)
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2 or len(y) != len(x):
        raise ValueError(f"net(x) must have shape (n_events, n_outputs), got {tuple(y.shape)}")
    return y


def _jacobian_rows(net: nn.Module, x: Tensor) -> Tensor:
    """:math:`\\partial y_k/\\partial x_f` of every event ``(n, K, F)``: one backward pass per
    output (the events are independent in evaluation mode)."""
    xr = x.detach().clone().requires_grad_(True)
    y = _outputs(net, xr)
    K = y.shape[1]
    rows = [torch.autograd.grad(y[:, k].sum(), xr, retain_graph=k < K - 1, allow_unused=True)[0] for k in range(K)]
    return torch.stack([torch.zeros_like(xr) if r is None else r for r in rows], 1).detach()


def gradient_x_input(net: nn.Module, x: Tensor, bs: int = 10_000) -> Tensor:
    """Gradient times input of every output, ``(n_events, n_outputs, n_features)``."""
    x = _check_x(x)
    with _eval(net):
        return torch.cat([_jacobian_rows(net, x[i:i + bs]) * x[i:i + bs, None, :] for i in range(0, len(x), bs)])


@dataclass
class IGResult:
    """Result of :func:`integrated_gradients`.

    Attributes:
        attributions: ``(n_events, n_outputs, n_features)``.
        delta: :math:`y(x) - y(b)` ``(n_events, n_outputs)``, what they sum to.
        completeness_error: :math:`\\max |\\sum_f a_{kf} - (y_k(x) - y_k(b))|` over events and
            outputs.
    """

    attributions: Tensor
    delta: Tensor
    completeness_error: float


def _baseline(x: Tensor, baseline: Any, w: Optional[Tensor] = None) -> Tensor:
    """The baseline row(s): ``'zero'``, ``'mean'`` (weighted), a value, a row ``(F,)`` or
    one row per event ``(n, F)``."""
    if isinstance(baseline, str):
        if baseline == "zero":
            return torch.zeros_like(x[:1])
        if baseline == "mean":
            ww = torch.ones(len(x), dtype=x.dtype) if w is None else w.reshape(-1).to(x.dtype)
            return ((ww[:, None] * x).sum(0) / ww.sum())[None, :]
        raise ValueError(f"baseline must be 'zero', 'mean', a number or a tensor, got {baseline!r}")
    b = torch.as_tensor(baseline, dtype=x.dtype)
    if b.ndim == 0:
        return b.expand(1, x.shape[1])
    if b.ndim == 1 and b.shape[0] == x.shape[1]:
        return b[None, :]
    if b.shape == x.shape:
        return b
    raise ValueError(f"baseline must be a number, a row of {x.shape[1]} values or one row per event, got shape "
                     f"{tuple(b.shape)}")


def integrated_gradients(net: nn.Module, x: Tensor, baseline: Any = "zero", steps: int = 64,
                         rule: str = "gauss-legendre", bs: int = 2_000) -> IGResult:
    """Integrated gradients of every output from ``baseline`` to ``x`` (see the module
    docstring), with the completeness error.

    Args:
        net: the network.
        x: events ``(n, F)`` (float64 for a completeness check to 1e-6 and below).
        baseline: ``'zero'``, ``'mean'``, a number, a row ``(F,)`` or rows ``(n, F)``.
        steps: quadrature nodes.
        rule: ``'gauss-legendre'`` or ``'midpoint'`` (the Riemann sum at the interval centres).
        bs: events per chunk (memory: ``bs * steps`` rows at once).
    """
    x = _check_x(x)
    if rule not in IG_RULES:
        raise ValueError(f"rule must be one of {IG_RULES}, got {rule!r}")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    b = _baseline(x, baseline).to(x.dtype).expand_as(x)
    if rule == "gauss-legendre":
        t, wt = np.polynomial.legendre.leggauss(int(steps))
        alpha, wq = (t + 1) / 2, wt / 2
    else:
        alpha, wq = (np.arange(steps) + 0.5) / steps, np.full(steps, 1.0 / steps)
    alpha_t = torch.as_tensor(alpha, dtype=x.dtype)
    wq_t = torch.as_tensor(wq, dtype=x.dtype)
    attrs, deltas = [], []
    with _eval(net):
        for i in range(0, len(x), bs):
            xi, bi = x[i:i + bs], b[i:i + bs]
            n, F = xi.shape
            path = bi[None] + alpha_t[:, None, None] * (xi - bi)[None]  # (S, n, F)
            jac = _jacobian_rows(net, path.reshape(-1, F)).reshape(len(alpha), n, -1, F)  # (S, n, K, F)
            avg = (wq_t[:, None, None, None] * jac).sum(0)
            attrs.append(avg * (xi - bi)[:, None, :])
            with torch.no_grad():
                deltas.append((_outputs(net, xi) - _outputs(net, bi)).detach())
    a, d = torch.cat(attrs), torch.cat(deltas)
    err = float((a.sum(-1) - d).abs().max()) if a.numel() else 0.0
    return IGResult(attributions=a, delta=d, completeness_error=err)


def occlusion(net: nn.Module, x: Tensor, groups: Mapping[str, Sequence[int]], baseline: Any = "mean",
              w: Optional[Tensor] = None) -> Dict[str, Tensor]:
    """The change of every output when the columns of each group are replaced by the
    baseline (``'mean'``: their weighted mean; ``'zero'``; a number or a row ``(F,)``):
    group -> :math:`y(x_\\text{occluded}) - y(x)` ``(n_events, n_outputs)``."""
    x = _check_x(x)
    b = _baseline(x, baseline, w)
    if b.shape[0] != 1:
        b_rows = b
    else:
        b_rows = b.expand_as(x)
    out: Dict[str, Tensor] = {}
    with _eval(net), torch.no_grad():
        y0 = _outputs(net, x)
        for g, cols in groups.items():
            xo = x.clone()
            c = list(cols)
            xo[:, c] = b_rows[:, c]
            out[g] = _outputs(net, xo) - y0
    return out


def loss_gradient_x_input(analysis: Analysis, net: nn.Module, x: Tensor, process: Tensor,
                          w: Optional[Tensor] = None, weights: Optional[Mapping[str, Tensor]] = None) -> Tensor:
    """Gradient times input of the INFERNO loss of ``analysis`` on all the events ``(n, F)``:
    how each event's inputs move the expected variance of the POI (float64)."""
    x = _check_x(x)
    with _eval(net):
        xr = x.clone().requires_grad_(True)
        loss = inferno_loss(analysis, net, xr, process, w, weights)
        g, = torch.autograd.grad(loss, xr)
    return (g * x).detach().to(torch.float64)


def loss_occlusion(analysis: Analysis, net: nn.Module, x: Tensor, process: Tensor,
                   groups: Mapping[str, Sequence[int]], w: Optional[Tensor] = None,
                   weights: Optional[Mapping[str, Tensor]] = None, baseline: Any = "mean") -> Dict[str, float]:
    """The change of the INFERNO loss when the columns of each group are replaced by the
    baseline (as :func:`occlusion`): group -> loss(occluded) - loss; ``'loss'`` the loss."""
    x = _check_x(x)
    b = _baseline(x, baseline, w).expand_as(x)
    with _eval(net), torch.no_grad():
        l0 = float(inferno_loss(analysis, net, x, process, w, weights))
    out = {"loss": l0}
    for g, cols in groups.items():
        xo = x.clone()
        xo[:, list(cols)] = b[:, list(cols)]
        with _eval(net), torch.no_grad():
            out[g] = float(inferno_loss(analysis, net, xo, process, w, weights)) - l0
    return out


# ----------------------------------------------------------------------------- aggregation
def attribution_target(summary: nn.Module) -> nn.Module:
    """The differentiable network behind a summary: the ``scores`` of a binned score (a
    :class:`~inferno.explain.BinnedSummary`, ``inferno-bench``'s ``BinnedScore``), the inner
    network of merged bins (``inferno-bench``'s ``MergedBins``), else the summary itself."""
    scores = getattr(summary, "scores", None)
    if callable(scores):
        return _Scores(summary)
    inner = getattr(summary, "net", None)
    if isinstance(inner, nn.Module) and hasattr(summary, "mapping"):
        return attribution_target(inner)
    return summary


class _Scores(nn.Module):
    def __init__(self, summary: nn.Module):
        super().__init__()
        self.summary = summary

    def forward(self, x: Tensor) -> Tensor:
        s = self.summary.scores(x)
        return s[:, None] if s.ndim == 1 else s


def _selected(attr: Tensor, outputs: Optional[Tensor]) -> Tensor:
    """``(n, F)``: per event the attribution of the output that put it in its bin."""
    if attr.ndim != 3:
        raise ValueError(f"attributions must have shape (n_events, n_outputs, n_features), got {tuple(attr.shape)}")
    if attr.shape[1] == 1:
        return attr[:, 0]
    if outputs is None:
        raise ValueError("outputs (the network's outputs, whose argmax selects the attributed output) are needed "
                         "for attributions of several outputs")
    k = outputs.argmax(1)
    return attr[torch.arange(len(attr)), k]


def attribution_matrix(attr: Tensor, bins: Tensor, n_bins: int, outputs: Optional[Tensor] = None,
                       w: Optional[Tensor] = None, mask: Optional[Tensor] = None) -> np.ndarray:
    """Attributions averaged over the events of each bin ``(n_features, n_bins)`` (weighted
    with ``w``; the events of ``mask`` only; NaN for a bin without events).

    Args:
        attr: per-event attributions ``(n, K, F)``.
        bins: the hard bin of every event ``(n,)``.
        outputs: the network's outputs ``(n, K)`` (with K > 1: the argmax output is attributed).
    """
    a = _selected(attr, outputs).to(torch.float64)
    bins = torch.as_tensor(bins).reshape(-1).long()
    if len(bins) != len(a):
        raise ValueError(f"bins has {len(bins)} entries for {len(a)} events")
    ww = torch.ones(len(a), dtype=torch.float64) if w is None else torch.as_tensor(w).reshape(-1).to(torch.float64)
    if mask is not None:
        ww = ww * torch.as_tensor(mask).reshape(-1).to(torch.float64)
    num = torch.zeros(n_bins, a.shape[1], dtype=torch.float64).index_add_(0, bins, ww[:, None] * a)
    den = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, bins, ww)
    with np.errstate(invalid="ignore", divide="ignore"):
        m = num.numpy() / den.numpy()[:, None]
    m[den.numpy() == 0] = math.nan
    return m.T


def attribution_table(attr: Tensor, bins: Tensor, n_bins: int, process: Tensor,
                      process_names: Mapping[int, str], outputs: Optional[Tensor] = None, w: Optional[Tensor] = None,
                      feature_names: Optional[Sequence[str]] = None):
    """:func:`attribution_matrix` for all events (``process = 'all'``) and for every process
    (label -> name in ``process_names``), as a long pandas table: ``process``, ``bin``,
    ``feature``, ``attribution``."""
    import pandas as pd

    labels = torch.as_tensor(process).reshape(-1)
    F = attr.shape[-1]
    names = [f"x{i}" for i in range(F)] if feature_names is None else list(feature_names)
    rows: List[Dict[str, Any]] = []
    for pname, mask in [("all", None)] + [(nm, labels == lab) for lab, nm in process_names.items()]:
        m = attribution_matrix(attr, bins, n_bins, outputs, w, mask)
        for f in range(F):
            for i in range(n_bins):
                rows.append(dict(process=pname, bin=i, feature=names[f], attribution=float(m[f, i])))
    return pd.DataFrame(rows)
