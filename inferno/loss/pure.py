r"""The INFERNO loss as a pure function of an :class:`~inferno.loss.Analysis`, a network and a
batch: usable in any training loop (a hand-written one, Lightning), and wrapped by the
:class:`~inferno.loss.InfernoLoss` callback for :class:`~inferno.ModelWrapper`.

For a batch with per-event process labels :math:`\ell_e` and weights :math:`w_e`, the soft
histogram of process :math:`p` is

.. math::

    h_{p,i} = \frac{\sum_{e: \ell_e = p} w_e\, y_i(x_e)}{\sum_{e: \ell_e = p} w_e},
    \qquad \nu^0_{p,i} = Y_p\, \frac{h_{p,i} + \epsilon}{1 + n_\text{bins}\epsilon},

with :math:`y(x)` the network's soft bin assignments and :math:`Y_p` the process's expected
yield. Each shape nuisance :math:`\theta_k` contributes the derivative of the soft histogram
of each process it acts on, at its nominal value:

* a transform of the inputs: :math:`\sum_e w_e\, \partial y/\partial x \cdot \partial
  x/\partial\theta`, exact, all such nuisances of a group of processes at once, from the
  forward pass's own activations (:mod:`inferno.loss.tangents`);
* up/down inputs: :math:`(h(x^+) - h(x^-))/2` (one extra forward pass for all of them);
* per-event up/down weights: :math:`\sum_e (w^+_e - w^-_e)\, y(x_e) / (2\sum_e w_e)`, one
  weighted sum (the change of normalisation is kept);
* alternative samples: :math:`(h^+ - h^-)/2` from the events labelled as the up and down
  samples (each normalised to its own sum of weights: a shape effect).

At the Asimov point the expected counts and their Jacobian are linear in these
(:meth:`Analysis._build`): :math:`\nu = \sum_p F_p \nu^0_p`, :math:`J = \sum_p A_p \nu^0_p +
F_{p(t)} s_t` on the histosys rows, and the Fisher information is :math:`J\,\mathrm{diag}(1/\nu)
J^\top` plus the constraints' curvature and the fixed channels' constant block
(:mod:`inferno.loss.fisher`). With ``mc_stat`` the per-bin factors :math:`\gamma_i` get the
constraint width :math:`\sigma_i / \nu_i`,

.. math::

    \sigma_i^2 = \sum_p \Big(\frac{Y_p}{\sum_{e \in p} w_e}\Big)^2 \frac{n_p}{N_p}
        \sum_{e \in p} w_e^2\, y_i(x_e)^2,

the variance of the soft counts estimated on the whole training sample (:math:`n_p` events
of the process in the batch, :math:`N_p` in the training sample).

Every check of a batch is folded into one flag read once (one host synchronisation); only a
failing batch is examined again to name what is wrong (:mod:`inferno.loss.checks`).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import torch
from torch import Tensor, nn

from . import tangents as tg
from .analysis import Analysis
from .chain import row_softmax
from .checks import _check_batch, _check_shape, _diagnose, _soft_ok, _weight_column
from .fisher import AsimovPoiLoss

__all__ = ["inferno_loss", "batch_templates"]

DTYPE = torch.float64


def inferno_loss(analysis: Analysis, net: nn.Module, x: Tensor, process: Tensor, w: Optional[Tensor] = None,
                 weights: Optional[Mapping[str, Tensor]] = None, outputs: Optional[Tensor] = None,
                 return_fisher: bool = False, recorder: Optional[tg.Recorder] = None,
                 reduce: Optional[Callable[[Tensor], Tensor]] = None) -> Any:
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
            With ``outputs`` and no ``recorder`` the tangents are computed in forward mode
            through the whole network (the primal recomputed); without ``outputs`` the loss
            does the forward pass itself and records its activations (the fast path).
        return_fisher: also return the Fisher information ``(P, P)`` and the parameter names.
        recorder: a :class:`~inferno.loss.tangents.Recorder` on ``net``, armed before the
            forward pass that gave ``outputs`` (how :class:`~inferno.loss.InfernoLoss` keeps
            the training loop's forward pass as the primal of the tangents).
        reduce: for a global batch split over processes (data-parallel training): a
            differentiable sum over the shards of a float64 vector, e.g.
            :func:`inferno.distributed.global_sum`. The batch's sums over events (per-process
            counts, summed weights, soft histograms, the derivative templates' sums, the MC
            statistics' sums of squared weights) are summed over the shards before anything
            else, so that every shard computes the loss of the global batch; a shard may lack
            a process. See ``docs/scaling.md`` for the gradients.

    Returns:
        the loss (a 0-dim float64 tensor, differentiable in the network's parameters), or
        ``(loss, fisher, names)``.

    Raises:
        ValueError: a label that is no process's, a process with no events or a summed weight
            <= 0 in the batch, outputs that are not soft bin assignments, a bin with a
            non-positive expected count (named), a Fisher information that is not positive
            definite (:class:`~inferno.loss.fisher.FisherError`).
    """
    labels, w = _check_batch(x, process, w)
    x_in = analysis._nominal_inputs(x, labels)
    calls = None if recorder is None or outputs is None else recorder.collect(outputs, x)  # disarms it
    if outputs is not None and x_in is x:
        y = outputs
    else:
        y, calls = _recorded_forward(net, x_in)
    return _loss(analysis, net, x_in, labels, w, dict(weights or {}), y, calls, return_fisher, reduce=reduce)


def _recorded_forward(net: nn.Module, x: Tensor) -> Tuple[Tensor, Optional[list]]:
    """``net(x)`` and, for a plain ``nn.Sequential``, its recorded activations (the primal of
    the tangents)."""
    if tg.leaves_of(net) is None:
        return net(x), None
    with tg.Recorder(net) as rec:
        rec.arm()
        y = net(x)
        return y, rec.collect(y, x)


def _loss(analysis: Analysis, net: nn.Module, x: Tensor, labels: Tensor, w: Optional[Tensor],
          weights: Dict[str, Tensor], y: Tensor, calls: Optional[list], return_fisher: bool,
          fused: bool = True, reduce: Optional[Callable[[Tensor], Tensor]] = None,
          out: Optional[Dict[str, Any]] = None) -> Any:
    _check_shape(y)
    n_bins = y.shape[1]
    b = analysis._build(n_bins)
    n_p = len(analysis.processes)
    dev = y.device
    slot, label_ok = analysis._slots(labels)  # process index, then the alternative samples
    n_slots = analysis._n_slots
    yd = y.to(DTYPE)
    wd = None if w is None else w.to(DTYPE)
    wy = yd if wd is None else yd * wd.unsqueeze(-1)
    # the batch's sums over events: everything below is a function of these alone
    count = torch.bincount(slot, minlength=n_slots).to(DTYPE)
    sumw = count if wd is None else torch.bincount(slot, wd, minlength=n_slots)
    hist = torch.zeros(n_slots, n_bins, dtype=DTYPE, device=dev).index_add(0, slot, wy)
    sums = _term_sums(analysis, b, net, x, labels, slot, wd, weights, y, yd, calls, fused)
    w2 = None
    if analysis.mc_stat:
        w2 = torch.zeros(n_p, n_bins, dtype=DTYPE, device=dev).index_add(
            0, slot.clamp_max(n_p - 1), torch.where((slot < n_p).unsqueeze(-1), wy * wy, 0.0))
    # outputs recorded as a row softmax's are soft bin assignments (NaN and inf fail the Fisher checks)
    local_ok = mine = label_ok if calls and row_softmax(calls[-1][0]) else label_ok & _soft_ok(y)
    if reduce is not None:  # a global batch: the sums of every shard (differentiable), one collective
        count, sumw, hist, sums, w2, local_ok = _reduced(reduce, count, sumw, hist, sums, w2, local_ok)
    c = 1.0 / (1.0 + n_bins * analysis.eps)
    expected = b["expected"].to(dev)
    scale = expected * c / sumw[:n_p]  # counts per unit of weighted output
    nom = scale.unsqueeze(-1) * hist[:n_p] + (expected * c * analysis.eps).unsqueeze(-1)
    if analysis.negative == "clip":  # a process's negative-weight fluctuation floored per bin
        nom = torch.maximum(nom, (expected * c * analysis.eps).unsqueeze(-1))
    k = analysis._constants(n_bins, dev)
    shifts = _shifts(analysis, b, sums, hist, sumw, scale, k["h_j"])
    var = torch.zeros(0, dtype=DTYPE, device=dev)
    if w2 is not None:
        var = ((scale ** 2 * count[:n_p] / b["n_mc"].to(dev)).unsqueeze(-1) * w2).sum(0)
    loss, fisher, fisher_ok = AsimovPoiLoss.apply(nom, shifts if shifts is not None else var[:0], var, k)
    # every process and alternative sample present with a positive summed weight (count >= 1 for a
    # positive sum), labels known, soft outputs, positive counts, a positive definite Fisher information
    ok = local_ok & (sumw.min() > 0) & fisher_ok
    if not bool(ok):  # the one host synchronisation of the checks
        if reduce is not None and bool(mine) and not bool(local_ok):
            raise ValueError("the shard of this batch on another rank failed its checks (that rank's error "
                             "names the problem); the global batch has no INFERNO loss")
        nu = (k["F"] * nom.detach()).sum(0)
        _diagnose(analysis, b, labels, y, count, sumw, nom, nu, fisher)
    if out is not None:  # batch_templates
        out.update(nominal=nom.detach(), shifts=None if shifts is None else shifts.detach(),
                   terms=[(analysis.processes[p].name, n) for p, n in b["term_index"]],
                   mc_var=var.detach() if var.numel() else None, fisher=fisher.detach(), names=list(b["names"]),
                   loss=loss.detach())
    if return_fisher:
        return loss, fisher, list(b["names"])
    return loss


def batch_templates(analysis: Analysis, net: nn.Module, x: Tensor, process: Tensor, w: Optional[Tensor] = None,
                    weights: Optional[Mapping[str, Tensor]] = None) -> Dict[str, Any]:
    r"""What the INFERNO loss of ``net`` sees on one batch (as :func:`inferno_loss` computes it,
    detached): ``nominal`` the soft counts :math:`\nu^0_{p,i}` (n_processes, bins), ``shifts``
    the derivative templates (T, bins) of the histosys ``terms`` [(process, nuisance)] in
    counts per unit of the nuisance (None without shape nuisances), ``mc_var`` the MC-statistics
    variance per bin (or None), ``fisher`` and its parameter ``names``, and the ``loss``. For
    explaining a trained summary (:mod:`inferno.explain`)."""
    out: Dict[str, Any] = {}
    labels, w = _check_batch(x, process, w)
    x_in = analysis._nominal_inputs(x, labels)
    with torch.no_grad():
        y, calls = _recorded_forward(net, x_in)
        _loss(analysis, net, x_in, labels, w, dict(weights or {}), y, calls, False, out=out)
    return out


def _reduced(reduce: Callable[[Tensor], Tensor], count: Tensor, sumw: Tensor, hist: Tensor, sums: Optional[Tensor],
             w2: Optional[Tensor], local_ok: Tensor) -> Tuple[Any, ...]:
    """The batch's sums over every shard of a global batch: packed into one float64 vector
    (with the number of shards whose local checks failed), ``reduce`` d (a differentiable sum
    over the shards, e.g. :func:`inferno.distributed.global_sum`), unpacked."""
    parts = [count, sumw, hist, *(t for t in (sums, w2) if t is not None), (~local_ok).to(DTYPE).reshape(1)]
    flat = reduce(torch.cat([t.reshape(-1) for t in parts]))
    out, pos = [], 0
    for t in parts:
        out.append(flat[pos:pos + t.numel()].reshape(t.shape))
        pos += t.numel()
    count, sumw, hist = out[0].detach(), out[1], out[2]
    it = iter(out[3:-1])
    sums = next(it) if sums is not None else None
    w2 = next(it) if w2 is not None else None
    return count, sumw, hist, sums, w2, out[-1].detach()[0] == 0


def _term_sums(analysis: Analysis, b: Dict[str, Any], net: nn.Module, x: Tensor, labels: Tensor, slot: Tensor,
               wd: Optional[Tensor], weights: Dict[str, Tensor], y: Tensor, yd: Tensor, calls: Optional[list],
               fused: bool) -> Optional[Tensor]:
    """The batch's sums over events of the derivative of the weighted outputs with respect to
    the parameter of every histosys term (T, bins), in the order of ``b['terms']``; the rows
    of alternative samples are zero (they come from the histograms, :func:`_shifts`)."""
    if not b["terms"]:
        return None
    dev = y.device
    d: Dict[Tuple[int, str], Tensor] = {}  # (process index, nuisance) -> sum_e w_e dy_e/dtheta
    # exact: every group of processes with the same transform nuisances at once
    for g, (procs_g, names) in enumerate(analysis._transform_groups):
        local = analysis._group_local[g].to(dev)  # slot -> index in the group, -1 outside
        rows = (local.index_select(0, slot) >= 0).nonzero().squeeze(-1)
        pidx = rows.new_zeros(len(rows)) if len(procs_g) == 1 else local.index_select(0, slot.index_select(0, rows))
        a = None if wd is None else wd.index_select(0, rows).to(x.dtype).unsqueeze(0)  # None: unit weights
        trans = [(analysis.nuisance[n].transform, analysis.nuisance[n].nominal) for n in names]
        sums = _transform_sums(net, x, rows, trans, names, weights, a, pidx, len(procs_g), calls, fused).to(DTYPE)
        for k, n in enumerate(names):
            for j, p in enumerate(procs_g):
                d[(p, n)] = sums[k, j]
    # up/down inputs: one forward pass for all of them
    ud = [(p, n) for p, n in b["term_index"] if analysis._kinds[n] == "inputs"]
    if ud:
        parts, sizes = [], []
        for p, n in ud:
            r = (slot == p).nonzero().squeeze(-1)
            up, dn = analysis.nuisance[n].up_down(x[r])
            parts += [up, dn]
            sizes.append(len(r))
        out = net(torch.cat(parts)).to(DTYPE)
        pos = 0
        for (p, n), m in zip(ud, sizes):
            r = (slot == p).nonzero().squeeze(-1)
            wr = None if wd is None else wd[r].unsqueeze(-1)
            hu, hd = out[pos:pos + m], out[pos + m:pos + 2 * m]
            pos += 2 * m
            d[(p, n)] = 0.5 * ((hu - hd).sum(0) if wr is None else (wr * (hu - hd)).sum(0))
    # weight nuisances: (w+ - w-) / 2 on the rows of the term's process, all terms in one product
    wt = [(p, n) for p, n in b["term_index"] if analysis._kinds[n] == "weights"]
    if wt:
        cols = [[_weight_column(weights, k, len(x), n) for k in (analysis.nuisance[n].up, analysis.nuisance[n].down)]
                for _, n in wt]
        dw = torch.stack([u for u, _ in cols]) - torch.stack([v for _, v in cols])  # (T_w, n_events)
        on = slot.unsqueeze(0) == torch.tensor([p for p, _ in wt], device=dev).unsqueeze(-1)
        for (p, n), row in zip(wt, (0.5 * torch.where(on, dw.to(DTYPE), 0.0)) @ yd):
            d[(p, n)] = row
    zero = yd.new_zeros(yd.shape[1])  # alternative samples: from the histograms (_shifts)
    return torch.stack([zero if analysis._kinds[n] == "alt" else d[(p, n)] for p, n in b["term_index"]])


def _shifts(analysis: Analysis, b: Dict[str, Any], sums: Optional[Tensor], hist: Tensor, sumw: Tensor,
            scale: Tensor, p_t: Tensor) -> Optional[Tensor]:
    """The derivative templates of the histosys terms (T, bins), in counts per unit of the
    parameter: the term sums scaled to the process's yield; an alternative sample's from the
    histograms of its up and down samples, each normalised to its own summed weight (a shape
    effect); ``p_t`` the process of every term."""
    if sums is None:
        return None
    alt = [(t, p, n) for t, (p, n) in enumerate(b["term_index"]) if analysis._kinds[n] == "alt"]
    if alt:
        rows = list(sums.unbind(0))
        for t, p, n in alt:
            su, sd = (analysis._slot_of[lab] for lab in analysis.nuisance[n].labels)
            rows[t] = 0.5 * (hist[su] / sumw[su] - hist[sd] / sumw[sd]) * sumw[p]
        sums = torch.stack(rows)
    return scale[p_t].unsqueeze(-1) * sums


def _transform_sums(net: nn.Module, x: Tensor, rows: Tensor, trans: List[Tuple[Any, float]], names: List[str],
                    weights: Dict[str, Tensor], a: Optional[Tensor], pidx: Tensor, n_proc: int,
                    calls: Optional[list], fused: bool) -> Tensor:
    """(K, n_proc, bins) sums of the output tangents of the transform nuisances ``trans``
    (``names``); the input stage's tangents from the batch's columns if it carries them
    (:func:`~inferno.loss.tangents.stage_tangents`)."""
    xr = x.index_select(0, rows)
    if calls is not None:
        leaves = tg.leaves_of(net)
        i0 = tg.split_stage(leaves)
        cached = [weights.get(tg.TANGENT_KEY + n) for n in names] if i0 else []
        if i0 and all(c is not None for c in cached):
            width = getattr(leaves[i0], "in_features", None) if i0 < len(leaves) else None
            tan = tg.cached_tangents(cached, names, leaves[:i0], rows, len(x), width)
        else:
            tan = tg.input_tangents(trans, xr, nn.Sequential(*leaves[:i0]) if i0 else None)
        return tg.propagate(leaves[i0:], calls[i0:], rows, tan, a, pidx, n_proc, fused)
    tg.check_deterministic(net)
    tan = tg.input_tangents(trans, xr, net)  # any module: forward mode through all of it
    return tg.weighted_sums(tan.dense(xr), a, pidx, n_proc)
