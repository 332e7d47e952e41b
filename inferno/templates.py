r"""From a trained network to the concrete statistical model of the analysis.

:func:`analysis_model` bins every event by the network's most probable output (its argmax:
the hard bins of the learned channel) and fills, for every process of an
:class:`~inferno.loss.Analysis`, its nominal template, one up/down pair per shape nuisance
acting on it, and (with ``mc_stat``) its MC statistical uncertainty; the result is a
:class:`~inferno.likelihood.Model` of numbers, with the analysis' rate modifiers and fixed
channels, ready for :func:`~inferno.likelihood.fit`, :func:`~inferno.likelihood.profile`,
toys and :meth:`~inferno.likelihood.Model.to_pyhf`.

The templates of process :math:`p` are normalised to its expected yield,
:math:`\nu^0_{p,i} = Y_p \sum_{e \in p, \mathrm{bin}\ i} w_e / \sum_{e \in p} w_e`. The shape
nuisances become ``histosys`` modifiers in HistFactory's units (:math:`\alpha = \pm 1` at the
variations, unit Gaussian constraint):

* a transform of the inputs: the events moved to :math:`\theta_0 \pm \delta`, with
  :math:`\delta` half the span of the nuisance's ``variations`` if given, else the standard
  deviation of its constraint (so :math:`\alpha` counts standard deviations); the constraint
  becomes a Gaussian on :math:`\alpha` of width :math:`\sigma_\theta/\delta` (for a
  non-Gaussian constraint, the Gaussian with its curvature at the nominal value); a free
  transform nuisance needs ``variations``;
* up/down inputs: the up/down inputs (their constraint, on :math:`\alpha`, is kept);
* per-event weights: the nominal events with the up/down weights (normalised by the
  nominal sum: the rate effect is kept);
* alternative samples: the up/down samples' events, each normalised to the process's yield.

With ``mc_stat`` each process gets a ``staterror`` with :math:`\sigma_{p,i} = Y_p
\sqrt{\sum_{e \in p, i} w_e^2} / \sum_{e \in p} w_e` (the statistical uncertainty of the
template, which the sample used here should be independent of the training sample for).
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional

import torch
from torch import Tensor, nn
from torch.distributions import Normal

from .likelihood import Channel, HistoSys, Model, Sample, StatError
from .loss.analysis import Analysis
from .loss.pure import _kind, _weight_column
from .nuisance import constraint_curvature

__all__ = ["analysis_model", "hard_bins"]


def hard_bins(net: nn.Module, x: Tensor, bs: int = 100_000) -> Tensor:
    """The argmax bin of every event, predicted in batches without gradients (the network in
    evaluation mode, restored afterwards)."""
    was = net.training
    net.eval()
    try:
        with torch.no_grad():
            out = [net(x[i:i + bs]).argmax(1) for i in range(0, len(x), bs)]
    finally:
        net.train(was)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def _hist(bins: Tensor, w: Optional[Tensor], n_bins: int) -> Tensor:
    ww = torch.ones(len(bins), dtype=torch.float64) if w is None else w.to(torch.float64).cpu()
    return torch.zeros(n_bins, dtype=torch.float64).index_add_(0, bins.cpu(), ww)


def analysis_model(analysis: Analysis, net: nn.Module, x: Tensor, process: Tensor, w: Optional[Tensor] = None,
                   weights: Optional[Mapping[str, Tensor]] = None, n_bins: Optional[int] = None,
                   bs: int = 100_000) -> Model:
    """The :class:`~inferno.likelihood.Model` of ``analysis`` with the learned channel filled by
    ``net``'s hard bins on the events ``x`` (see the module docstring).

    Args:
        analysis: the analysis the network was trained for.
        net: the trained network.
        x, process, w, weights: events, their labels, weights and weight variations (as for
            :func:`~inferno.loss.inferno_loss`; e.g. a test sample).
        n_bins: number of bins (default: the network's output size).
        bs: prediction batch size.

    Raises:
        ValueError: a process or alternative sample without events, a process whose summed
            weight is not positive, a transform nuisance without a scale (free, no variations).
    """
    labels = process.reshape(-1).cpu()
    if len(labels) != len(x):
        raise ValueError(f"process has {len(labels)} labels for {len(x)} events")
    wt = None if w is None else w.reshape(-1).cpu()
    weights = dict(weights or {})
    if n_bins is None:
        with torch.no_grad():
            n_bins = int(net(x[:1]).shape[1])
    bins = hard_bins(net, x, bs).cpu()

    def rows(label: int, what: str) -> Tensor:
        r = (labels == label).nonzero().squeeze(-1)
        if r.numel() == 0:
            raise ValueError(f"no events of {what} (label {label})")
        return r

    samples: List[Sample] = []
    settings: Dict[str, Dict[str, Any]] = {k: dict(v) for k, v in analysis.parameters.items()}
    for p in analysis.processes:
        r = rows(p.label, f"process {p.name!r}")
        wp = None if wt is None else wt[r]
        sw = float(len(r)) if wp is None else float(wp.sum())
        if not sw > 0:
            raise ValueError(f"the summed weight of process {p.name!r} is {sw:.6g}: it must be > 0")
        scale = p.expected / sw
        nominal = scale * _hist(bins[r], wp, n_bins)
        if bool((nominal < 0).any()):
            i = int((nominal < 0).nonzero()[0])
            raise ValueError(f"process {p.name!r}: bin {i} of the learned channel has a negative template "
                             f"({float(nominal[i]):.6g}) from negative weights; merge bins or use more events")
        mods = list(p.modifiers)
        for n in analysis.nuisances:
            if p.name not in analysis.targets[n.name]:
                continue
            kind = _kind(n)
            if kind == "transform":
                delta = _transform_scale(n)
                hi_lo = []
                for v in (n.nominal + delta, n.nominal - delta):
                    hi_lo.append(scale * _hist(hard_bins(net, n.apply(x[r], v), bs).cpu(), wp, n_bins))
                settings.setdefault(n.name, {}).update(_alpha_constraint(n, delta))
            elif kind == "inputs":
                up, dn = n.up_down(x[r])
                hi_lo = [scale * _hist(hard_bins(net, xx, bs).cpu(), wp, n_bins) for xx in (up, dn)]
                settings.setdefault(n.name, {}).setdefault("constraint", n.constraint)
            elif kind == "weights":
                hi_lo = [scale * _hist(bins[r], _weight_column(weights, k, len(x), n.name).cpu()[r], n_bins)
                         for k in (n.up, n.down)]
                settings.setdefault(n.name, {}).setdefault("constraint", n.constraint)
            else:  # alternative samples
                hi_lo = []
                for lab in n.labels:
                    ra = rows(lab, f"the alternative sample of nuisance {n.name!r}")
                    wa = None if wt is None else wt[ra]
                    swa = float(len(ra)) if wa is None else float(wa.sum())
                    hi_lo.append(p.expected / swa * _hist(bins[ra], wa, n_bins))
                settings.setdefault(n.name, {}).setdefault("constraint", n.constraint)
            mods.append(HistoSys(n.name, hi=hi_lo[0].numpy(), lo=hi_lo[1].numpy()))
        if analysis.mc_stat:
            w2 = torch.ones(len(r), dtype=torch.float64) if wp is None else wp.to(torch.float64) ** 2
            sigma = scale * torch.sqrt(_hist(bins[r], w2, n_bins))
            mods.append(StatError(f"mc_stat_{analysis.channel}", sigma=sigma.numpy()))
        samples.append(Sample(p.name, nominal.numpy(), mods))
    for conf in settings.values():
        if "constraint" in conf and conf["constraint"] is None:
            conf.setdefault("bounds", (-5.0, 5.0))
    channels = [Channel(analysis.channel, samples)]
    base_settings: Dict[str, Dict[str, Any]] = {}
    hs_code = "4p"
    ns_code = 4
    if analysis.fixed is not None:
        fixed = analysis.fixed
        keep = [ch for ch in fixed.channels if ch.name != analysis.replace]
        if analysis.replace is not None:
            pos = [ch.name for ch in fixed.channels].index(analysis.replace)
            channels = keep[:pos] + channels + keep[pos:]
        else:
            channels = keep + channels
        base_settings = {k: dict(v) for k, v in fixed._user_settings.items()}
        hs_code, ns_code = fixed.histosys_code, fixed.normsys_code
    for k, v in settings.items():
        base_settings.setdefault(k, {}).update(v)
    names = {m.name for s in samples for m in s.modifiers} | (
        set(analysis.fixed.names) | set(analysis.fixed.param_sets) if analysis.fixed is not None else set())
    base_settings = {k: v for k, v in base_settings.items() if k in names}
    return Model(channels, poi=analysis.pois, parameters=base_settings, histosys_code=hs_code, normsys_code=ns_code)


def _alpha_constraint(n: Any, delta: float) -> Dict[str, Any]:
    """The constraint of a transform nuisance on alpha = (theta - nominal) / delta: Gaussian
    with width sigma_theta / delta (for a non-Gaussian constraint, the Gaussian of the same
    curvature at the nominal value); free if the nuisance is."""
    if n.constraint is None:
        return {"constraint": None}
    if type(n.constraint) is Normal:  # exactly 1 when delta is the constraint's width
        return {"constraint": "normal", "aux": 0.0, "sigma": float(n.constraint.scale) / delta}
    curv = constraint_curvature(n.constraint, n.nominal, delta)
    if not curv > 0:
        raise ValueError(f"nuisance {n.name!r}: its constraint has no positive curvature at the nominal value")
    return {"constraint": "normal", "aux": 0.0, "sigma": 1.0 / math.sqrt(curv)}


def _transform_scale(n: Any) -> float:
    if n.variations is not None:
        return 0.5 * (n.variations[1] - n.variations[0])
    c = n.constraint
    if c is None:
        raise ValueError(f"nuisance {n.name!r} is free: give it variations=(down, up) to build its templates")
    try:
        sd = float(c.stddev)
    except (NotImplementedError, AttributeError):
        raise ValueError(f"nuisance {n.name!r}: its constraint {c} has no standard deviation; give it "
                         "variations=(down, up)") from None
    if not (math.isfinite(sd) and sd > 0):
        raise ValueError(f"nuisance {n.name!r}: the standard deviation of its constraint is {sd}")
    return sd
