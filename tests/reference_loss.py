"""The slow, obviously correct INFERNO loss the fast one (inferno.loss.pure) is tested against.

It is the general loss as it was before the fast path: one ``torch.func.jvp`` through the
whole network per (nuisance, process) pair, up/down inputs by separate forward passes, the
expected counts and their Jacobian from the analysis' compiled likelihood Model with the
soft histograms as its counts (``CompiledModel.with_counts(...).jacobian``), the Fisher
information J diag(1/nu) J^T + constraints, and the POI variance by Cholesky.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

import torch
from torch import Tensor, nn

from inferno.loss.analysis import Analysis, _identity_at_nominal, _kind
from inferno.loss.checks import _weight_column, soft_outputs_check
from inferno.loss.fisher import asimov_fisher, poi_loss

__all__ = ["reference_loss"]

DTYPE = torch.float64


def _tangent_outputs(net: nn.Module, x: Tensor, n: Any) -> Tensor:
    """d y / d theta at the nominal value for rows ``x``: the input tangent of the transform,
    pushed through the network in forward mode."""
    v0 = torch.tensor(float(n.nominal), dtype=x.dtype, device=x.device)
    x0, dx = torch.func.jvp(lambda v: n.apply(x, v), (v0,), (torch.ones_like(v0),))
    _, dy = torch.func.jvp(net, (x0,), (dx,))
    return dy


def reference_loss(analysis: Analysis, net: nn.Module, x: Tensor, process: Tensor, w: Optional[Tensor] = None,
                 weights: Optional[Mapping[str, Tensor]] = None, outputs: Optional[Tensor] = None,
                 return_fisher: bool = False) -> Any:
    r"""The INFERNO loss of ``net`` on one batch (see the module docstring).

    Args:
        analysis: the :class:`~inferno.loss.Analysis`.
        net: the network, ``net(x) -> (n_events, n_bins)`` soft bin assignments.
        x: inputs ``(n_events, n_features)``.
        process: the label of every event ``(n_events,)``: a process's label, or the
            up/down label of an alternative sample.
        w: per-event weights (may be negative; the sum over each process must be > 0).
        weights: per-event weight variations by name (for weight nuisances).
        outputs: ``net(x)`` if already computed (a training loop's forward pass); ignored when
            a transform is not the identity at its nominal value (the inputs then change).
        return_fisher: also return the Fisher information ``(P, P)`` and the parameter names.

    Returns:
        the loss (a 0-dim float64 tensor, differentiable in the network's parameters), or
        ``(loss, fisher, names)``.

    Raises:
        ValueError: a label that is no process's, a process with no events or a summed weight
            <= 0 in the batch, outputs that are not soft bin assignments, a bin with a
            non-positive expected count (named), a Fisher information that is not positive
            definite (:class:`~inferno.loss.fisher.FisherError`).
    """
    labels = process.reshape(-1)
    if len(labels) != len(x):
        raise ValueError(f"process has {len(labels)} labels for {len(x)} events")
    if w is not None:
        w = w.reshape(-1)
        if len(w) != len(x):
            raise ValueError(f"w has {len(w)} weights for {len(x)} events")
    weights = dict(weights or {})
    procs = analysis.processes
    rows: Dict[str, Tensor] = {}
    known = torch.zeros(len(labels), dtype=torch.bool, device=labels.device)
    for p in procs:
        m = labels == p.label
        rows[p.name] = m.nonzero().squeeze(-1)
        known |= m
    alt_labels = {lab for n in analysis.nuisances if getattr(n, "kind", None) == "alt" for lab in n.labels}
    for lab in alt_labels:
        known |= labels == lab
    if not bool(known.all()):
        bad = sorted(set(labels[~known].tolist()))
        raise ValueError(f"events with labels {bad[:10]} belong to no process (process labels "
                         f"{[p.label for p in procs]}, alternative samples {sorted(alt_labels)})")
    # inputs at the nominal values of the transforms (identity for well-formed transforms)
    x_in = x
    for n in analysis.nuisances:
        if getattr(n, "has_transform", False) and not _identity_at_nominal(n):
            idx = torch.cat([rows[t] for t in analysis.targets[n.name]])
            x_in = x_in.index_copy(0, idx, n.apply(x_in[idx], n.nominal))
    y = outputs if outputs is not None and x_in is x else net(x_in)
    soft_outputs_check(y)
    n_bins = y.shape[1]
    b = analysis._build(n_bins)
    c = 1.0 / (1.0 + n_bins * analysis.eps)
    yd = y.to(DTYPE)
    wd = None if w is None else w.to(DTYPE)

    def weighted_sum(r: Tensor, vals: Tensor, ww: Optional[Tensor]) -> Tensor:
        return vals.sum(0) if ww is None else (ww[r].unsqueeze(-1) * vals).sum(0)

    nominal, sumw, scale = [], {}, {}
    for p in procs:
        r = rows[p.name]
        if r.numel() == 0:
            raise ValueError(f"the batch has no events of process {p.name!r} (label {p.label}): every batch "
                             "must contain every process (shuffle the data or use larger batches)")
        sw = torch.tensor(float(r.numel()), dtype=DTYPE) if wd is None else wd[r].sum()
        if not float(sw) > 0:
            raise ValueError(f"the summed weight of process {p.name!r} in the batch is {float(sw):.6g}: it must "
                             "be > 0 (negative weights are allowed, but not a non-positive total)")
        sumw[p.name] = sw
        scale[p.name] = p.expected * c / sw  # counts per unit of weighted output
        nom_p = p.expected * c * (weighted_sum(r, yd[r], wd) / sw + analysis.eps)
        if analysis.negative == "clip":  # a process's negative-weight fluctuation floored per bin
            nom_p = nom_p.clamp_min(p.expected * c * analysis.eps)
        nominal.append(nom_p)
    nom = torch.stack(nominal)  # (n_processes, n_bins)
    # the derivative templates of the histosys terms, in counts per unit of the parameter
    shifts: List[Tensor] = []
    for proc, name in b["terms"]:
        n = analysis.nuisance[name]
        r = rows[proc]
        kind = _kind(n)
        if kind == "transform":
            d = weighted_sum(r, _tangent_outputs(net, x[r], n).to(DTYPE), wd)
        elif kind == "inputs":
            up, dn = n.up_down(x[r])
            d = 0.5 * (weighted_sum(r, net(up).to(DTYPE), wd) - weighted_sum(r, net(dn).to(DTYPE), wd))
        elif kind == "weights":
            wu, wdn = (_weight_column(weights, k, len(x), name) for k in (n.up, n.down))
            d = 0.5 * ((wu[r] - wdn[r]).to(DTYPE).unsqueeze(-1) * yd[r]).sum(0)
        else:  # alternative samples: shape only, each normalised to its own weight
            hs = []
            for lab in n.labels:
                ra = (labels == lab).nonzero().squeeze(-1)
                if ra.numel() == 0:
                    raise ValueError(f"the batch has no events of the alternative sample {lab} of nuisance {name!r}")
                swa = torch.tensor(float(ra.numel()), dtype=DTYPE) if wd is None else wd[ra].sum()
                hs.append(weighted_sum(ra, yd[ra], wd) / swa)
            d = 0.5 * (hs[0] - hs[1]) * sumw[proc]
        shifts.append(scale[proc] * d)
    cm = b["cm"].with_counts(nom, torch.stack(shifts) if shifts else None)
    p0 = b["p0"].to(nom.device)
    nu, jac = cm.jacobian(p0[None])
    nu, jac = nu[0], jac[0]
    if not bool((nu > 0).all()):
        i = int((nu <= 0).nonzero()[0])
        worst = min(procs, key=lambda q: float(nom[procs.index(q), i]))
        raise ValueError(f"bin {i} of the learned channel has expected count {float(nu[i]):.6g} <= 0 (process "
                         f"{worst.name!r} contributes {float(nom[procs.index(worst), i]):.6g}): negative weights "
                         "must not make a bin's total negative")
    P = len(b["names"])
    PL = jac.shape[0]
    curv = b["curv"].to(nom.device).clone()
    if analysis.mc_stat:
        var = torch.zeros(n_bins, dtype=DTYPE, device=nom.device)
        for p in procs:
            r = rows[p.name]
            w2 = torch.ones(r.numel(), dtype=DTYPE) if wd is None else wd[r] ** 2
            frac = r.numel() / p.n_mc
            var = var + (scale[p.name] ** 2) * frac * (w2.unsqueeze(-1) * yd[r] ** 2).sum(0)
        stat = b["stat"]
        curv = curv.index_put((stat,), (nu * nu / var).to(curv.dtype))
    fisher_l = asimov_fisher(jac, nu) + torch.diag(curv)
    if b["fixed_H"] is None and P == PL:
        fisher = fisher_l
    else:
        fisher = torch.zeros(P, P, dtype=DTYPE, device=nom.device)
        fisher = fisher.index_put((torch.arange(PL)[:, None], torch.arange(PL)[None, :]), fisher_l, accumulate=True)
        if b["fixed_H"] is not None:
            fi = b["fixed_idx"]
            fisher = fisher.index_put((fi[:, None], fi[None, :]), b["fixed_H"].to(nom.device), accumulate=True)
    loss = poi_loss(fisher, b["pois"], analysis.loss, names=b["names"])
    if return_fisher:
        return loss, fisher, list(b["names"])
    return loss
