r"""What INFERNO trains for: the processes of an analysis, their systematic uncertainties,
the parameters of interest, and the channels that are not learned.

An :class:`Analysis` is the statistical model of the measurement with one *learned* channel:
its bins are the outputs of the network, and the nominal counts of every process in it are
the network's soft histogram of that process's events, scaled to the process's expected
yield. Around it, the analysis is a :class:`~inferno.likelihood.Model` with HistFactory
semantics (:mod:`inferno.likelihood`), built once with placeholder counts:

* every :class:`Process` is a sample of the learned channel, with its rate modifiers
  (:class:`~inferno.likelihood.NormFactor` for POIs and free normalisations,
  :class:`~inferno.likelihood.NormSys`, :class:`~inferno.likelihood.Lumi`);
* every shape nuisance (:mod:`inferno.nuisance`: a transform of the inputs, fixed up/down
  inputs, per-event up/down weights, alternative samples) is a
  :class:`~inferno.likelihood.HistoSys` of the processes it acts on, whose variations are
  filled per batch with the derivative of the soft histogram (``'4p'`` interpolation: its
  slope at 0 is :math:`(\nu^+ - \nu^-)/2`);
* with ``mc_stat=True``, a :class:`~inferno.likelihood.StatError` on every process, whose
  widths come from the soft histograms' sums of squared weights;
* ``fixed``: other channels (e.g. a control region read with
  :func:`~inferno.likelihood.from_pyhf`), whose Fisher information is a constant; parameters
  with the same name are the same parameter (correlated, as in HistFactory).

The loss (:func:`~inferno.loss.inferno_loss`) is a scalar of the POI block of the inverse
Fisher information of this model at the Asimov point (:mod:`inferno.loss.fisher`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor
from torch.distributions import Distribution

from ..likelihood import Channel, HistoSys, Model, Sample, StatError
from ..likelihood.modifiers import Lumi, Modifier, NormFactor, NormSys
from ..nuisance import Nuisance, RateNuisance, ShapeNuisance
from .fisher import LOSS_KINDS

__all__ = ["Process", "Analysis"]

#: interpolation code of the learned channel's histosys (its slope at 0 is (hi - lo) / 2)
_CODE = "4p"


@dataclass
class Process:
    """A physics process: the events with ``label`` in the training data.

    Attributes:
        name: the process (the sample's name in the model).
        label: the integer that marks its events in the data.
        expected: its expected yield (events) in the learned channel, at nominal parameters.
        modifiers: its rate modifiers: ``NormFactor`` (a POI, or a free normalisation, e.g.
            fixed by a control region), ``NormSys``, ``Lumi``.
        n_mc: the number of its simulated events in the whole training sample (with
            ``mc_stat``: the batch's sums of squared weights are scaled by
            ``n_in_batch / n_mc``).
    """

    name: str
    label: int
    expected: float
    modifiers: Sequence[Modifier] = field(default_factory=list)
    n_mc: Optional[int] = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a process needs a non-empty name, got {self.name!r}")
        if isinstance(self.label, bool) or not isinstance(self.label, (int, np.integer)):
            raise ValueError(f"process {self.name!r}: label must be an integer, got {self.label!r}")
        self.label = int(self.label)
        e = float(self.expected)
        if not (math.isfinite(e) and e > 0):
            raise ValueError(f"process {self.name!r}: the expected yield must be finite and > 0, got {self.expected}")
        self.expected = e
        for m in self.modifiers:
            if not isinstance(m, (NormFactor, NormSys, Lumi)):
                raise ValueError(f"process {self.name!r}: rate modifiers are NormFactor, NormSys or Lumi, got "
                                 f"{type(m).__name__} (shape effects are nuisances of the Analysis)")
        if self.n_mc is not None and not (isinstance(self.n_mc, (int, np.integer)) and self.n_mc > 0):
            raise ValueError(f"process {self.name!r}: n_mc must be a positive integer, got {self.n_mc!r}")


class Analysis:
    r"""The measurement INFERNO optimises (see the module docstring).

    Args:
        processes: the processes of the learned channel (at least two).
        nuisances: shape nuisances (:class:`~inferno.nuisance.ShapeNuisance` with a
            transform or up/down inputs, weight variations, alternative samples); each acts
            on the processes it names. Rate effects are modifiers of the processes.
        poi: the parameter(s) of interest (names of NormFactors of the processes or of the
            fixed channels).
        fixed: a :class:`~inferno.likelihood.Model` of the channels that are not learned
            (e.g. control regions), or None.
        replace: the name of a channel of ``fixed`` that the learned channel replaces (e.g.
            the signal region of an existing workspace), or None.
        channel: the name of the learned channel.
        mc_stat: add the MC statistical uncertainty of the soft histograms (Barlow-Beeston
            lite, one Gaussian-constrained factor per bin); needs every process's ``n_mc``.
        loss: ``'variance'`` (of ``poi[0]``, all else profiled), ``'trace'`` or ``'logdet'``
            of the POI covariance block.
        parameters: settings of the learned channel's parameters (as
            :class:`~inferno.likelihood.Model`'s), e.g. ``{"lumi": {"sigma": 0.02}}``.
        eps: floor of the soft histograms, :math:`\tilde f = (f + \epsilon)/(1 + n\epsilon)`.
        negative: what a batch whose negative weights drive a bin's expected count to 0 or
            below does: ``'raise'`` (a ValueError naming the bin and the process), or
            ``'clip'``: every process's soft histogram is floored per bin at its ``eps``
            share (for processes with few MC events and many negative weights, whose batch
            histograms fluctuate below zero; the floor biases them slightly upwards), and
            :func:`~inferno.templates.analysis_model` sets a negative template bin to 0.

    Raises:
        ValueError: naming the process, nuisance or parameter at fault.
    """

    def __init__(self, processes: Sequence[Process], nuisances: Sequence[Nuisance] = (),
                 poi: Union[str, Sequence[str]] = "mu", fixed: Optional[Model] = None,
                 replace: Optional[str] = None, channel: str = "learned", mc_stat: bool = False,
                 loss: str = "variance", parameters: Optional[Mapping[str, Mapping[str, Any]]] = None,
                 eps: float = 1e-7, negative: str = "raise"):
        self.processes: List[Process] = list(processes)
        if len(self.processes) < 1:
            raise ValueError("an Analysis needs at least one process")
        names = [p.name for p in self.processes]
        labels = [p.label for p in self.processes]
        for what, vals in (("names", names), ("labels", labels)):
            dup = sorted({v for v in vals if vals.count(v) > 1})
            if dup:
                raise ValueError(f"process {what} must be unique, got {dup} more than once")
        self.label_to_index = {p.label: j for j, p in enumerate(self.processes)}
        self.nuisances: List[Nuisance] = list(nuisances)
        #: the nuisances by name
        self.nuisance: Dict[str, Nuisance] = {n.name: n for n in self.nuisances}
        nn_names = [n.name for n in self.nuisances]
        dup = sorted({v for v in nn_names if nn_names.count(v) > 1})
        if dup:
            raise ValueError(f"nuisance names must be unique, got {dup} more than once")
        for n in self.nuisances:
            if isinstance(n, RateNuisance):
                raise ValueError(f"nuisance {n.name!r}: rate effects are modifiers of the processes in an Analysis "
                                 "(NormSys, NormFactor, Lumi), not RateNuisance")
            if not isinstance(n, Nuisance):
                raise ValueError(f"nuisances must be inferno.nuisance descriptions, got {type(n).__name__}")
        # the processes each shape nuisance acts on
        self.targets: Dict[str, List[str]] = {n.name: self._resolve_targets(n) for n in self.nuisances}
        if loss not in LOSS_KINDS:
            raise ValueError(f"loss must be one of {LOSS_KINDS}, got {loss!r}")
        self.loss = loss
        self.mc_stat = bool(mc_stat)
        if self.mc_stat:
            missing = [p.name for p in self.processes if p.n_mc is None]
            if missing:
                raise ValueError(f"mc_stat needs the number of simulated training events of every process: "
                                 f"n_mc is missing for {missing}")
        if negative not in ("raise", "clip"):
            raise ValueError(f"negative must be 'raise' or 'clip', got {negative!r}")
        self.negative = negative
        self.eps = float(eps)
        if not (math.isfinite(self.eps) and self.eps >= 0):
            raise ValueError(f"eps (the bin floor) must be finite and >= 0, got {eps}")
        self.channel = str(channel)
        self.parameters = {k: dict(v) for k, v in (parameters or {}).items()}
        self.fixed = fixed
        self.replace = replace
        if fixed is not None:
            if not isinstance(fixed, Model):
                raise ValueError(f"fixed must be an inferno.likelihood.Model, got {type(fixed).__name__}")
            if replace is not None and replace not in fixed.channel_bins:
                raise ValueError(f"replace={replace!r} is not a channel of the fixed model "
                                 f"(channels {fixed.channel_names})")
            if self.channel in fixed.channel_bins and self.channel != replace:
                raise ValueError(f"the learned channel's name {self.channel!r} is a channel of the fixed model; "
                                 "pass another channel= or replace=")
        self.pois: List[str] = [poi] if isinstance(poi, str) else list(poi)
        self._index_events()
        self._built: Dict[int, Dict[str, Any]] = {}
        self._build(2)  # validates the structure (parameters, POIs) once, with a placeholder bin count

    def _resolve_targets(self, n: Nuisance) -> List[str]:
        names = [p.name for p in self.processes]
        on = getattr(n, "on", None)
        legacy = {"s": [1], "b": [0], "both": [1, 0]}
        if isinstance(on, str) and on in legacy and on not in names:
            # the paper's convention: 's' are the events labelled 1, 'b' those labelled 0
            out = [self.processes[self.label_to_index[lab]].name for lab in legacy[on] if lab in self.label_to_index]
            if not out:
                raise ValueError(f"nuisance {n.name!r} acts on {on!r} (labels {legacy[on]}), but no process has "
                                 "those labels")
            return out
        targets = [on] if isinstance(on, str) else list(on or [])
        unknown = [t for t in targets if t not in names]
        if unknown or not targets:
            raise ValueError(f"nuisance {n.name!r} acts on unknown processes {unknown or targets}: the processes "
                             f"are {names}")
        return targets

    def _index_events(self) -> None:
        """How the loss finds a batch's events: every label's slot (the processes' indices, then
        the alternative samples'), each nuisance's kind, and the groups of processes that the
        same transform nuisances act on (their tangents are propagated together)."""
        self._kinds = {n.name: _kind(n) for n in self.nuisances}
        self._slot_of: Dict[int, int] = {p.label: j for j, p in enumerate(self.processes)}
        self._alt_labels = sorted({lab for n in self.nuisances if self._kinds[n.name] == "alt" for lab in n.labels})
        for lab in self._alt_labels:
            if lab in self._slot_of:
                raise ValueError(f"label {lab} is both a process's and an alternative sample's")
            self._slot_of[lab] = len(self._slot_of)
        self._n_slots = len(self._slot_of)
        self._alt_slots = [self._slot_of[lab] for lab in self._alt_labels]
        known = sorted(self._slot_of)
        self._known = torch.tensor(known, dtype=torch.long)
        self._known_slots = torch.tensor([self._slot_of[k] for k in known], dtype=torch.long)
        groups: Dict[Tuple[str, ...], List[int]] = {}
        for j, p in enumerate(self.processes):
            names = tuple(n.name for n in self.nuisances
                          if self._kinds[n.name] == "transform" and p.name in self.targets[n.name])
            if names:
                groups.setdefault(names, []).append(j)
        self._transform_groups = [(tuple(ps), list(names)) for names, ps in groups.items()]
        self._group_local = []
        for ps, _ in self._transform_groups:
            local = torch.full((self._n_slots,), -1, dtype=torch.long)
            local[list(ps)] = torch.arange(len(ps))
            self._group_local.append(local)
        self._transforms = [n for n in self.nuisances if self._kinds[n.name] == "transform"]
        self._identity = all(_identity_at_nominal(n) for n in self._transforms)

    def _slots(self, labels: Tensor) -> Tuple[Tensor, Tensor]:
        """Every event's slot, and whether every label is known (a 0-dim bool tensor)."""
        known = self._known.to(labels.device)
        i = torch.searchsorted(known, labels.long()).clamp_max(len(known) - 1)
        return self._known_slots.to(labels.device)[i], (known[i] == labels).all()

    def _nominal_inputs(self, x: Tensor, labels: Tensor) -> Tensor:
        """``x`` with the rows of the transforms' processes at their nominal values (``x``
        itself when every transform is the identity there, as a well-formed one is)."""
        if self._identity:
            return x
        names = [p.name for p in self.processes]
        for n in self._transforms:
            if not _identity_at_nominal(n):
                labs = torch.tensor([self.processes[names.index(t)].label for t in self.targets[n.name]],
                                    device=labels.device)
                idx = torch.isin(labels, labs).nonzero().squeeze(-1)
                x = x.index_copy(0, idx, n.apply(x[idx], n.nominal))
        return x

    # ------------------------------------------------------------------ the model
    def _build(self, n_bins: int) -> Dict[str, Any]:
        """The learned channel's Model (placeholder counts) for ``n_bins`` bins, the union of
        its parameters with the fixed channels', and the fixed Fisher information."""
        b = self._built.get(n_bins)
        if b is not None:
            return b
        ones = np.ones(n_bins)
        samples = []
        terms: List[Tuple[str, str]] = []  # (process, nuisance) of every histosys term, in model order
        for p in self.processes:
            mods: List[Modifier] = list(p.modifiers)
            for n in self.nuisances:
                if p.name in self.targets[n.name]:
                    mods.append(HistoSys(n.name, hi=2 * ones, lo=0 * ones, code=_CODE))
            if self.mc_stat:
                mods.append(StatError(f"mc_stat_{self.channel}", sigma=0.1 * ones))
            samples.append(Sample(p.name, ones, mods))
        settings: Dict[str, Dict[str, Any]] = {}
        for n in self.nuisances:
            if isinstance(n, ShapeNuisance) and n.has_transform:
                # physical units: alpha = theta - nominal, constrained by the nuisance's constraint
                c = n.constraint
                settings[n.name] = {"constraint": c, "aux": -float(n.nominal) if isinstance(c, Distribution) else 0.0,
                                    "bounds": (-math.inf, math.inf)}
        for k, v in self.parameters.items():
            settings.setdefault(k, {}).update(v)
        try:
            learned = Model([Channel(self.channel, samples)], parameters=settings)
        except ValueError as e:
            raise ValueError(f"the learned channel {self.channel!r}: {e}") from None
        cm = learned._cm
        c = cm.c
        for t in range(c["h_j"].numel()):
            terms.append((self.processes[int(c["h_j"][t])].name, learned.names[int(c["h_a"][t])]))
        names = list(learned.names)
        fixed_H = None
        fixed_idx: List[int] = []
        if self.fixed is not None:
            fixed = self.fixed
            if self.replace is not None:
                keep = [ch for ch in fixed.channels if ch.name != self.replace]
                if not keep:
                    fixed = None
                else:
                    fixed = Model(keep, poi=None, parameters=fixed._user_settings, histosys_code=fixed.histosys_code,
                                  normsys_code=fixed.normsys_code)
            if fixed is not None:
                for nm in fixed.names:
                    if nm not in names:
                        names.append(nm)
                fixed_idx = [names.index(nm) for nm in fixed.names]
                p0 = fixed.init
                main, aux = fixed.asimov(p0)
                _, _, H = fixed.nll_grad_hess(p0, main, aux)
                fixed_H = H
        pois = []
        for nm in self.pois:
            if nm not in names:
                raise ValueError(f"unknown POI {nm!r}: the analysis' parameters are {names}")
            pois.append(names.index(nm))
        # constraint curvature of the learned channel's parameters that the fixed channels do
        # not constrain already (a shared parameter's constraint counts once)
        p0 = learned.init
        aux0 = learned.aux_nominal
        _, _, curv = cm.constraints(p0[None], aux0[None], derivs=True)
        curv = curv[0]
        shared = set(self.fixed.names) if self.fixed is not None else set()
        for k, nm in enumerate(learned.names):
            if nm in shared:
                curv[k] = 0.0
        # at the Asimov point (histosys at 0) the expected counts and their Jacobian are linear
        # in the soft histograms and their derivatives: nu = sum_p F_p nom_p and
        # J = sum_p A_p nom_p + the histosys rows F_p shift_t; F and A from the compiled model
        h_a, h_j = c["h_a"], c["h_j"]
        if h_a.numel() and bool((p0[h_a] != 0).any()):
            bad = sorted({learned.names[int(k)] for k in h_a if float(p0[k]) != 0})
            raise ValueError(f"the shape nuisances {bad} of the learned channel must start at 0 (INFERNO's "
                             "Asimov point); do not set their init")
        n_p = len(self.processes)
        zero_shifts = torch.zeros(h_a.numel(), n_bins, dtype=p0.dtype) if h_a.numel() else None
        lin_F, lin_A = [], []
        for j in range(n_p):
            unit = torch.zeros(n_p, n_bins, dtype=p0.dtype)
            unit[j] = 1.0
            nu_j, jac_j = cm.with_counts(unit, zero_shifts).jacobian(p0[None])
            lin_F.append(nu_j[0])
            lin_A.append(jac_j[0])
        stat = [k for k, nm in enumerate(learned.names) if nm.startswith(f"mc_stat_{self.channel}[")]
        for k in stat:
            curv[k] = 0.0  # per batch, from the soft histograms
        P, PL = len(names), len(learned.names)
        embed = fixed_full = None
        if fixed_H is not None or P != PL:  # the learned block into the full Fisher information
            embed = (torch.arange(PL)[:, None], torch.arange(PL)[None, :])
            fixed_full = torch.zeros(P, P, dtype=p0.dtype)
            if fixed_H is not None:
                fi = torch.tensor(fixed_idx, dtype=torch.long)
                fixed_full = fixed_full.index_put((fi[:, None], fi[None, :]), fixed_H.to(p0.dtype), accumulate=True)
        b = dict(learned=learned, cm=cm, terms=terms, names=names, pois=pois, fixed_H=fixed_H,
                 fixed_idx=torch.tensor(fixed_idx, dtype=torch.long), p0=p0, curv=curv,
                 stat=torch.tensor(stat, dtype=torch.long), F=torch.stack(lin_F), A=torch.stack(lin_A, 1),
                 h_a=h_a, h_j=h_j, term_index=[(int(h_j[t]), learned.names[int(h_a[t])]) for t in range(h_a.numel())],
                 expected=torch.tensor([p.expected for p in self.processes], dtype=p0.dtype),
                 n_mc=torch.tensor([float(p.n_mc or 1) for p in self.processes], dtype=p0.dtype),
                 embed=embed, fixed_full=fixed_full)
        self._built[n_bins] = b
        return b

    def _constants(self, n_bins: int, device: torch.device) -> Dict[str, Any]:
        """The constants of :class:`~inferno.loss.fisher.AsimovPoiLoss` on ``device`` (cached)."""
        b = self._build(n_bins)
        key = ("constants", str(device))
        k = b.get(key)
        if k is None:
            mv = lambda t: None if t is None else t.to(device)  # noqa: E731
            k = dict(F=mv(b["F"]), A=mv(b["A"]), h_a=mv(b["h_a"]), h_j=mv(b["h_j"]), curv=mv(b["curv"]),
                     stat=mv(b["stat"]), fixed_full=mv(b["fixed_full"]), pois=b["pois"], kind=self.loss,
                     embed=None if b["embed"] is None else tuple(mv(t) for t in b["embed"]))
            E = torch.zeros(len(b["names"]), len(b["pois"]), dtype=b["F"].dtype)
            E[b["pois"], torch.arange(len(b["pois"]))] = 1.0
            k["E"] = E.to(device)
            # nu and the Jacobian in one product; the rows of F of the histosys terms; the constraints' diagonal
            k.update(FA=torch.cat([k["F"].unsqueeze(0), k["A"]]), F_h=k["F"][k["h_j"]], C=torch.diag(k["curv"]))
            b[key] = k
        return k

    @property
    def names(self) -> List[str]:
        """The parameters of the analysis: the learned channel's, then the fixed channels' others."""
        return list(self._build(2)["names"])

    def __repr__(self) -> str:
        return (f"Analysis(processes={[p.name for p in self.processes]}, nuisances={[n.name for n in self.nuisances]}, "
                f"poi={self.pois}, loss={self.loss!r}, mc_stat={self.mc_stat})")


def _kind(n: Any) -> str:
    """``'transform'``, ``'inputs'`` (up/down inputs), ``'weights'`` or ``'alt'``."""
    k = getattr(n, "kind", None)
    if k is not None:
        return k
    return "transform" if getattr(n, "has_transform", False) else "inputs"


def _identity_at_nominal(n: Any) -> bool:
    is_id = getattr(getattr(n, "transform", None), "is_identity", None)
    return bool(is_id(n.nominal)) if callable(is_id) else False
