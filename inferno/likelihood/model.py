r"""The statistical model: HistFactory channels, samples and modifiers, and the one
implementation of expected counts, NLL, gradient and Hessian that every measurement uses.

The bins of all channels are concatenated, in channel order, into one vector of
:math:`N` bins. With :math:`j` running over the samples of all channels,

.. math::

    \nu_i(\vec\theta) = \sum_j \underbrace{\Big(\nu^0_{ji} + \sum_h \delta_{jhi}(\alpha_h)\Big)}_{A_{ji}}
        \underbrace{\prod_n f_{jn}(\alpha_n)}_{E_j}
        \underbrace{\prod_l \theta_{p(j,l,i)}}_{\Lambda_{ji}}

(histosys shifts, normsys factors, and the *linear* factors: normfactor, lumi, staterror,
shapesys, shapefactor; see :mod:`~inferno.likelihood.modifiers`), and

.. math::

    -\ln L = \sum_i \big[\nu_i - n_i\ln\nu_i + \ln\Gamma(n_i + 1)\big]
             + \sum_{k\ \mathrm{constrained}} -\ln p_k(a_k \mid \theta_k).

A point with some :math:`\nu_i < 0`, or :math:`\nu_i = 0 < n_i`, has :math:`-\ln L = +\infty`.

Expected counts, NLL, gradient and Hessian are computed by the model's compiled form
(:mod:`inferno.likelihood.compiled`, analytic derivatives), in float64 torch on the model's
device, batched over any leading dimensions of the parameters and the data; ``expected``
and ``nll`` are also differentiable with autograd in the parameters.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from . import interpolation as interp
from .compiled import CompiledModel
from .modifiers import HistoSys, Modifier, ShapeSys, StatError, finite_vector
from .parameters import Parameter

__all__ = ["Sample", "Channel", "Model", "DTYPE"]

DTYPE = torch.float64
ArrayLike = Union[Tensor, np.ndarray, Sequence[float]]

#: default (init, bounds) of the parameters each modifier type creates (pyhf's defaults)
_DEFAULTS = {
    "normfactor": (1.0, (0.0, 10.0)),
    "lumi": (1.0, (0.0, 10.0)),
    "normsys": (0.0, (-5.0, 5.0)),
    "histosys": (0.0, (-5.0, 5.0)),
    "staterror": (1.0, (1e-10, 10.0)),
    "shapesys": (1.0, (1e-10, 10.0)),
    "shapefactor": (1.0, (0.0, 10.0)),
}
_ALPHA = ("normsys", "histosys")  # the two kinds that may share a parameter


@dataclass
class Sample:
    """A process in a channel: its nominal expected counts and its modifiers."""

    name: str
    counts: Any
    modifiers: Sequence[Modifier] = field(default_factory=list)


@dataclass
class Channel:
    """A histogram of the measurement (a signal or a control region) and its samples."""

    name: str
    samples: Sequence[Sample]


class Model:
    r"""A binned likelihood with HistFactory semantics.

    Args:
        channels: the channels, each with its samples and their modifiers.
        poi: name(s) of the parameter(s) of interest (scalar parameters, usually
            normfactors); None: no POI (fits only).
        parameters: settings per parameter name (or per-bin set name): ``init``,
            ``bounds``, ``fixed``, ``constraint`` (``None``, ``'normal'``, or a scalar torch
            distribution; a ``Normal(loc, scale)`` becomes ``'normal'`` with ``aux=loc``,
            ``sigma=scale``), ``aux`` (nominal auxiliary datum) and ``sigma``. A ``lumi``
            parameter needs its ``sigma``. For a per-bin set a value may be a list, one per bin.
        histosys_code: default interpolation code of histosys modifiers (0, 2 or '4p';
            pyhf's default '4p').
        normsys_code: default code of normsys modifiers (1 or 4; pyhf's default 4).

    Raises:
        ValueError: naming the channel, sample, modifier or parameter at fault.

    Example:
        >>> from inferno.likelihood import Model, Channel, Sample, NormFactor, NormSys
        >>> m = Model([Channel("SR", [Sample("signal", [5.0, 10.0], [NormFactor("mu")]),
        ...                            Sample("bkg", [50.0, 20.0], [NormSys("b_xsec", hi=1.1, lo=0.9)])])],
        ...           poi="mu")
        >>> m.names
        ['mu', 'b_xsec']
    """

    def __init__(self, channels: Sequence[Channel], poi: Union[None, str, Sequence[str]] = None,
                 parameters: Optional[Mapping[str, Mapping[str, Any]]] = None,
                 histosys_code: Union[int, str] = "4p", normsys_code: Union[int, str] = 4):
        self.histosys_code = interp.check_code(histosys_code, "histosys")
        self.normsys_code = interp.check_code(normsys_code, "normsys")
        self.channels: List[Channel] = list(channels)
        if not self.channels:
            raise ValueError("a model needs at least one channel")
        self._build_structure()
        self._user_settings = {k: dict(v) for k, v in (parameters or {}).items() if isinstance(v, Mapping)}
        self._build_parameters(parameters or {})
        pois = [] if poi is None else [poi] if isinstance(poi, str) else list(poi)
        for name in pois:
            if name not in self._index:
                raise ValueError(f"unknown POI {name!r}: the model's parameters are {self.names}")
        if len(set(pois)) != len(pois):
            raise ValueError(f"POIs given twice: {pois}")
        self.poi_names: List[str] = pois
        self.poi_index: List[int] = [self._index[n] for n in pois]
        self._compile()
        self.device = torch.device("cpu")

    # ------------------------------------------------------------------ structure
    def _build_structure(self) -> None:
        names = [c.name for c in self.channels]
        if len(set(names)) != len(names):
            raise ValueError(f"channel names must be unique, got {names}")
        self.channel_bins: "OrderedDict[str, slice]" = OrderedDict()
        self._samples: List[Tuple[str, str, np.ndarray, List[Modifier]]] = []  # (channel, sample, counts, modifiers)
        self._kinds: Dict[str, str] = {}  # parameter (set) name -> modifier kind
        self._set_bins: Dict[str, int] = {}  # per-bin set -> number of bins
        off = 0
        for ch in self.channels:
            if not isinstance(ch, Channel):
                raise ValueError(f"channels must be Channel objects, got {type(ch).__name__}")
            if not ch.name or not isinstance(ch.name, str):
                raise ValueError(f"a channel needs a non-empty name, got {ch.name!r}")
            if not ch.samples:
                raise ValueError(f"channel {ch.name!r} has no samples")
            snames = [s.name for s in ch.samples]
            if len(set(snames)) != len(snames):
                raise ValueError(f"channel {ch.name!r}: sample names must be unique, got {snames}")
            nb = None
            for s in ch.samples:
                where = f"channel {ch.name!r}, sample {s.name!r}"
                counts = finite_vector(s.counts, f"{where}: counts")
                if nb is None:
                    nb = counts.size
                elif counts.size != nb:
                    raise ValueError(f"{where}: {counts.size} bins, but the channel's first sample has {nb}")
                if np.any(counts < 0):
                    raise ValueError(f"{where}: negative nominal counts in bins {np.nonzero(counts < 0)[0].tolist()}")
                seen = set()
                for m in s.modifiers:
                    if not isinstance(m, Modifier):
                        raise ValueError(f"{where}: modifiers must be Modifier objects (NormFactor, NormSys, ...), "
                                         f"got {type(m).__name__}")
                    if (m.name, m.type) in seen:
                        raise ValueError(f"{where}: modifier {m.type} {m.name!r} is given twice")
                    seen.add((m.name, m.type))
                    kind = self._kinds.get(m.name)
                    if kind is not None and kind != m.type and not (kind in _ALPHA and m.type in _ALPHA):
                        raise ValueError(f"{where}: modifier {m.name!r} is a {m.type} here but a {kind} elsewhere; "
                                         "a parameter has one kind (only normsys and histosys may share one)")
                    if m.per_bin:
                        prev = self._set_bins.get(m.name)
                        if prev is not None and prev != nb:
                            raise ValueError(f"{where}: {m.type} {m.name!r} has {nb} bins here and {prev} elsewhere")
                        self._set_bins[m.name] = nb
                    if isinstance(m, HistoSys):  # (a variation may be negative: only nu < 0 is illegal)
                        for what, v in (("hi", m.hi), ("lo", m.lo)):
                            if v.size != nb:
                                raise ValueError(f"{where}: histosys {m.name!r} {what} has {v.size} bins, expected {nb}")
                    if isinstance(m, (StatError, ShapeSys)) and m.sigma.size != nb:
                        raise ValueError(f"{where}: {m.type} {m.name!r} has {m.sigma.size} uncertainties, expected {nb}")
                    if kind is None or kind == "normsys":  # histosys wins the label of a shared alpha
                        self._kinds[m.name] = m.type
                self._samples.append((ch.name, s.name, counts, list(s.modifiers)))
            self.channel_bins[ch.name] = slice(off, off + nb)
            off += nb
        self.n_bins = off
        for name, kind in self._kinds.items():
            if kind in ("staterror",):
                chans = {c for c, _, _, mods in self._samples for m in mods if m.name == name}
                if len(chans) > 1:
                    raise ValueError(f"staterror {name!r} appears in channels {sorted(chans)}; use one per channel")

    def _build_parameters(self, settings: Mapping[str, Mapping[str, Any]]) -> None:
        params: List[Parameter] = []
        self.param_sets: "OrderedDict[str, slice]" = OrderedDict()
        # per-bin constraint widths (staterror: combined over the channel's samples; shapesys: tau)
        stat_var: Dict[str, np.ndarray] = {}
        stat_nom: Dict[str, np.ndarray] = {}
        shapesys_tau: Dict[str, np.ndarray] = {}
        for ch, sname, counts, mods in self._samples:
            for m in mods:
                if isinstance(m, StatError):
                    stat_var[m.name] = stat_var.get(m.name, 0.0) + m.sigma ** 2
                    stat_nom[m.name] = stat_nom.get(m.name, 0.0) + counts
                elif isinstance(m, ShapeSys):
                    if m.name in shapesys_tau:
                        raise ValueError(f"shapesys {m.name!r} is used by two samples; give each sample its own")
                    with np.errstate(divide="ignore", invalid="ignore"):
                        shapesys_tau[m.name] = np.where((m.sigma > 0) & (counts > 0), (counts / m.sigma) ** 2, 0.0)
        order = list(self._kinds)
        for name in order:
            kind = self._kinds[name]
            init, bounds = _DEFAULTS[kind]
            base = dict(kind=kind, init=init, bounds=bounds)
            if kind in ("normsys", "histosys"):
                base.update(constraint="normal", aux=0.0, sigma=1.0)
            elif kind == "lumi":
                base.update(constraint="normal", aux=1.0, sigma=math.nan)
            start = len(params)
            if name in self._set_bins:
                nb = self._set_bins[name]
                for i in range(nb):
                    b = dict(base)
                    if kind == "staterror":
                        var, nom = stat_var[name][i], stat_nom[name][i]
                        if var > 0 and nom > 0:
                            b.update(constraint="normal", aux=1.0, sigma=float(math.sqrt(var) / nom))
                        else:  # nothing to constrain: held at 1
                            b.update(fixed=True)
                    elif kind == "shapesys":
                        tau = shapesys_tau[name][i]
                        if tau > 0:
                            b.update(constraint="poisson", aux=float(tau), tau=float(tau))
                        else:
                            b.update(fixed=True)
                    params.append(Parameter(f"{name}[{i}]", **b))
            else:
                if kind == "lumi":
                    params.append(Parameter(name, kind=kind, init=1.0, bounds=bounds, constraint="normal", aux=1.0,
                                            sigma=1.0))  # sigma set below (required)
                else:
                    params.append(Parameter(name, **base))
            self.param_sets[name] = slice(start, len(params))
        # user settings
        unknown = [n for n in settings if n not in self.param_sets and n not in {p.name for p in params}]
        if unknown:
            raise ValueError(f"settings for unknown parameters {unknown}: the model's parameters are "
                             f"{[p.name for p in params]}")
        for name, kind in self._kinds.items():
            if kind == "lumi" and "sigma" not in dict(settings.get(name, {})):
                raise ValueError(f"lumi modifier {name!r} needs the width of its constraint: "
                                 f"parameters={{{name!r}: {{'sigma': 0.02}}}}")
        for name, conf in settings.items():
            if not isinstance(conf, Mapping):
                raise ValueError(f"settings of parameter {name!r} must be a dict, got {type(conf).__name__}")
            if name in self.param_sets:
                sl = self.param_sets[name]
                n = sl.stop - sl.start
                for i, k in enumerate(range(sl.start, sl.stop)):
                    one = {}
                    for key, v in conf.items():
                        per_bin = isinstance(v, (list, tuple, np.ndarray)) and not (key == "bounds" and len(v) == 2
                                                                                    and not hasattr(v[0], "__len__"))
                        if per_bin:
                            if len(v) != n:
                                raise ValueError(f"parameter set {name!r}: {key} has {len(v)} values for {n} bins")
                            one[key] = v[i]
                        else:
                            one[key] = v
                    params[k] = params[k].updated(**one)
            else:
                k = next(i for i, p in enumerate(params) if p.name == name)
                params[k] = params[k].updated(**dict(conf))
        for k, p in enumerate(params):
            if p.kind == "lumi" and "init" not in dict(settings.get(p.name, {})):
                params[k] = p = p.updated(init=p.aux)  # the luminosity starts at its measured value
            if p.constraint == "poisson" and p.kind != "shapesys":
                raise ValueError(f"parameter {p.name!r}: only shapesys parameters take a Poisson constraint, "
                                 f"this one is a {p.kind}")
        self.parameters: List[Parameter] = params
        self._index = {p.name: i for i, p in enumerate(params)}
        for set_name, sl in self.param_sets.items():  # a one-bin set also answers to its set name
            if sl.stop - sl.start == 1:
                self._index.setdefault(set_name, sl.start)

    # ------------------------------------------------------------------ public description
    @property
    def names(self) -> List[str]:
        """Parameter names, in the order of parameter vectors."""
        return [p.name for p in self.parameters]

    @property
    def n_params(self) -> int:
        return len(self.parameters)

    @property
    def channel_names(self) -> List[str]:
        return list(self.channel_bins)

    @property
    def samples(self) -> List[Tuple[str, str]]:
        """``(channel, sample)`` of every sample, in evaluation order."""
        return [(c, s) for c, s, _, _ in self._samples]

    def index(self, name: str) -> int:
        """Position of parameter ``name`` in parameter vectors."""
        try:
            return self._index[name]
        except KeyError:
            raise ValueError(f"unknown parameter {name!r}: the model's parameters are {self.names}") from None

    @property
    def init(self) -> Tensor:
        return torch.tensor([p.init for p in self.parameters], dtype=DTYPE, device=self.device)

    @property
    def bounds(self) -> Tensor:
        """``(P, 2)`` lower and upper bounds."""
        return torch.tensor([p.bounds for p in self.parameters], dtype=DTYPE, device=self.device)

    @property
    def fixed(self) -> Tensor:
        return torch.tensor([p.fixed for p in self.parameters], dtype=torch.bool, device=self.device)

    @property
    def aux_names(self) -> List[str]:
        """Names of the constrained parameters, in the order of auxiliary data vectors."""
        return [self.parameters[k].name for k in self._aux_params]

    @property
    def aux_nominal(self) -> Tensor:
        """Nominal auxiliary data ``(A,)``."""
        return torch.tensor([self.parameters[k].aux for k in self._aux_params], dtype=DTYPE, device=self.device)

    @property
    def kinked(self) -> List[int]:
        """Indices of the parameters whose NLL derivative can jump at 0 (histosys code 0,
        normsys code 1)."""
        return list(self._kinked)

    @property
    def shape_params(self) -> List[int]:
        """Indices of the histosys and normsys parameters (the starting points of multistart fits)."""
        return [i for i, p in enumerate(self.parameters) if p.kind in _ALPHA]

    def with_parameters(self, **settings: Mapping[str, Any]) -> "Model":
        """A copy with changed parameter settings, e.g. ``model.with_parameters(mu={'fixed': True})``."""
        merged: Dict[str, Dict[str, Any]] = {k: dict(v) for k, v in self._user_settings.items()}
        for k, v in settings.items():
            merged.setdefault(k, {}).update(v)
        m = Model(self.channels, poi=self.poi_names, parameters=merged, histosys_code=self.histosys_code,
                  normsys_code=self.normsys_code)
        return m.to(self.device)

    # ------------------------------------------------------------------ compilation
    def _compile(self) -> None:
        self._cm = CompiledModel(self)
        self._aux_params: List[int] = self._cm.aux_params
        self._kinked: List[int] = self._cm.kinked

    def to_pyhf(self, observed: Any, **kwargs: Any) -> Dict[str, Any]:
        """This model and ``observed`` as a pyhf workspace dict
        (:func:`inferno.likelihood.workspace.to_pyhf`)."""
        from .workspace import to_pyhf

        return to_pyhf(self, observed, **kwargs)

    def to_hs3(self, observed: Any = None, **kwargs: Any) -> Dict[str, Any]:
        """This model and ``observed`` as an HS3 workspace dict
        (:func:`inferno.likelihood.hs3.to_hs3`)."""
        from .hs3 import to_hs3

        return to_hs3(self, observed, **kwargs)

    def to(self, device: Union[str, torch.device]) -> "Model":
        """The model on ``device`` (in place; returns self)."""
        device = torch.device(device)
        self._cm.to(device)
        self.device = device
        return self

    # ------------------------------------------------------------------ data
    def main_data(self, observed: Any) -> Tensor:
        """Observed counts as a float64 tensor ``(..., N)``: a flat array over all channels (in
        channel order) or a dict ``{channel: counts}``."""
        if isinstance(observed, Mapping):
            missing = [c for c in self.channel_bins if c not in observed]
            extra = [c for c in observed if c not in self.channel_bins]
            if missing or extra:
                raise ValueError(f"observed data: missing channels {missing}, unknown channels {extra}")
            parts = []
            for ch, sl in self.channel_bins.items():
                v = _as_tensor(observed[ch], f"observed data of channel {ch!r}", self.device)
                if v.dim() == 0 or v.shape[-1] != sl.stop - sl.start:
                    raise ValueError(f"observed data of channel {ch!r}: expected {sl.stop - sl.start} bins, "
                                     f"got shape {tuple(v.shape)}")
                parts.append(v)
            batch = torch.broadcast_shapes(*[q.shape[:-1] for q in parts])
            n = torch.cat([q.expand(batch + q.shape[-1:]) for q in parts], -1)
        else:
            n = _as_tensor(observed, "observed data", self.device)
            if n.dim() == 0 or n.shape[-1] != self.n_bins:
                raise ValueError(f"observed data must have shape (..., {self.n_bins}) (the bins of channels "
                                 f"{self.channel_names}), got {tuple(n.shape)}")
        if not torch.isfinite(n).all() or (n < 0).any():
            raise ValueError("observed data contain NaN, inf or negative counts")
        return n

    def aux_data(self, aux: Any = None) -> Tensor:
        """Auxiliary data ``(..., A)``; None: the nominal ones."""
        if aux is None:
            return self.aux_nominal
        a = _as_tensor(aux, "auxiliary data", self.device)
        A = len(self._aux_params)
        if a.dim() == 0 or a.shape[-1] != A:
            raise ValueError(f"auxiliary data must have shape (..., {A}) (one per constrained parameter: "
                             f"{self.aux_names}), got {tuple(a.shape)}")
        if not torch.isfinite(a).all():
            raise ValueError("auxiliary data contain NaN or inf")
        return a

    def params(self, values: Any = None, **by_name: float) -> Tensor:
        """A parameter vector: ``values`` (``(..., P)``) or the inits, with entries set by name."""
        p = self.init if values is None else _as_tensor(values, "parameters", self.device).clone()
        if p.shape[-1] != self.n_params:
            raise ValueError(f"parameters must have shape (..., {self.n_params}), got {tuple(p.shape)}")
        for name, v in by_name.items():
            p[..., self.index(name)] = v
        return p

    def expected_aux(self, params: Tensor) -> Tensor:
        """Auxiliary data expected at ``params`` (Asimov): the parameter for a normal
        constraint, :math:`\\tau\\gamma` for a Poisson one, the shift 0 for a distribution."""
        cols = []
        for k in self._aux_params:
            p = self.parameters[k]
            v = params[..., k]
            cols.append(v * p.tau if p.constraint == "poisson" else v if p.constraint == "normal"
                        else torch.zeros_like(v))
        return torch.stack(cols, -1) if cols else params[..., :0]

    def asimov(self, params: Any = None, **by_name: float) -> Tuple[Tensor, Tensor]:
        """Asimov data ``(main, aux)`` at ``params`` (default the inits), e.g.
        ``model.asimov(mu=1.0)``."""
        p = self.params(params, **by_name)
        return self.expected(p), self.expected_aux(p)

    # ------------------------------------------------------------------ evaluation
    def _expected_flat(self, p: Tensor) -> Tensor:
        return self._cm.expected(p)

    def expected(self, params: Any) -> Tensor:
        """Expected counts ``(..., N)`` at parameters ``(..., P)``."""
        p = _as_tensor(params, "parameters", self.device)
        self._check_p(p)
        return self._expected_flat(p.reshape(-1, self.n_params)).reshape(p.shape[:-1] + (self.n_bins,))

    def expected_by_sample(self, params: Any) -> Tensor:
        """Expected counts of every sample ``(..., n_samples, N)`` (order of :attr:`samples`)."""
        p = _as_tensor(params, "parameters", self.device)
        self._check_p(p)
        contrib = self._cm.expected(p.reshape(-1, self.n_params), by_sample=True)
        return contrib.reshape(p.shape[:-1] + contrib.shape[1:])

    def _check_p(self, p: Tensor) -> None:
        if p.dim() == 0 or p.shape[-1] != self.n_params:
            raise ValueError(f"parameters must have shape (..., {self.n_params}) ({self.names}), got {tuple(p.shape)}")

    def _broadcast(self, params: Any, main: Any, aux: Any):
        p = _as_tensor(params, "parameters", self.device)
        self._check_p(p)
        n = main if isinstance(main, Tensor) and main.dtype == DTYPE and main.device == self.device else self.main_data(main)
        a = self.aux_data(aux)
        batch = torch.broadcast_shapes(p.shape[:-1], n.shape[:-1], a.shape[:-1])
        P, N, A = self.n_params, self.n_bins, a.shape[-1]
        B = math.prod(batch)
        return (batch, p.expand(batch + (P,)).reshape(B, P), n.expand(batch + (N,)).reshape(B, N),
                a.expand(batch + (A,)).reshape(B, A))

    def nll(self, params: Any, main: Any, aux: Any = None) -> Tensor:
        r""":math:`-\ln L` ``(...)`` at parameters ``(..., P)`` for observed counts ``(..., N)``
        (or a dict per channel) and auxiliary data ``(..., A)`` (default nominal), broadcast."""
        batch, p, n, a = self._broadcast(params, main, aux)
        return self._nll_flat(p, n, a).reshape(batch)

    def _nll_flat(self, p: Tensor, n: Tensor, a: Tensor) -> Tensor:
        return self._cm.nll(p, n, a)

    def nll_grad_hess(self, params: Any, main: Any, aux: Any = None, right: Optional[Tensor] = None
                      ) -> Tuple[Tensor, Tensor, Tensor]:
        """:math:`-\\ln L` ``(...)``, its gradient ``(..., P)`` and Hessian ``(..., P, P)``.

        At a kink (code 0 / code 1 parameters exactly at 0) the derivatives are the left
        ones, or the right ones where the bool mask ``right`` ``(..., P)`` is True.
        """
        batch, p, n, a = self._broadcast(params, main, aux)
        r = None if right is None else right.expand(batch + (self.n_params,)).reshape(-1, self.n_params)
        val, g, H = self._nll_grad_hess_flat(p, n, a, r)
        P = self.n_params
        return val.reshape(batch), g.reshape(batch + (P,)), H.reshape(batch + (P, P))

    def _nll_grad_hess_flat(self, p: Tensor, n: Tensor, aux: Tensor, right: Optional[Tensor] = None):
        return self._cm.nll_grad_hess(p, n, aux, right)


def _as_tensor(a: Any, what: str, device: torch.device) -> Tensor:
    if isinstance(a, Tensor):
        return a.to(dtype=DTYPE, device=device)  # keeps the autograd graph
    try:
        arr = np.array(a, dtype=np.float64)  # np.array copies, so negative strides are fine
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be numbers, got {type(a).__name__}") from None
    return torch.as_tensor(arr, device=device)
