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

Derivatives are analytic and batched: with :math:`w_i = 1 - n_i/\nu_i`,

.. math::

    \nabla(-\ln L) = J w + \nabla C, \qquad
    \nabla^2(-\ln L) = J\,\mathrm{diag}(n/\nu^2)\,J^\top + \sum_i w_i \nabla^2\nu_i + \nabla^2 C,

with :math:`J_{pi} = \partial\nu_i/\partial\theta_p`. The second-derivative term uses the
structure above (:math:`A` is additive in the :math:`\alpha`, :math:`E = \exp\sum\ln f`,
:math:`\Lambda` multilinear, so the cross derivatives of :math:`\Lambda` are products over
all but two factors); at the Asimov point :math:`w = 0` and the Hessian is the Fisher
information. Everything is float64 torch, on the model's device, batched over any leading
dimensions of the parameters and the data.
"""
from __future__ import annotations

import itertools
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor
from torch.distributions import Distribution

from . import interpolation as interp
from .modifiers import HistoSys, Lumi, Modifier, NormFactor, NormSys, ShapeFactor, ShapeSys, StatError
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


def _counts(values: Any, what: str) -> np.ndarray:
    if isinstance(values, Tensor):
        values = values.detach().cpu().numpy()
    try:
        arr = np.array(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be numbers, got {type(values).__name__}") from None
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{what} must be a non-empty 1-D array of counts, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} contains NaN or inf")
    return arr


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
                counts = _counts(s.counts, f"{where}: counts")
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
                            b.update(constraint="normal", aux=1.0, sigma=math.sqrt(var) / nom)
                        else:  # nothing to constrain: held at 1
                            b.update(fixed=True)
                    elif kind == "shapesys":
                        tau = shapesys_tau[name][i]
                        if tau > 0:
                            b.update(constraint="poisson", aux=tau, tau=tau)
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
        for p in params:
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
        P, N = self.n_params, self.n_bins
        J = len(self._samples)
        nom = np.zeros((J, N))
        h_rows: Dict[Any, List[Tuple[int, int, np.ndarray, np.ndarray, np.ndarray]]] = {}
        n_rows: Dict[Any, List[Tuple[int, int, float, float]]] = {}
        lin: List[List[np.ndarray]] = []
        for j, (ch, sname, counts, mods) in enumerate(self._samples):
            sl = self.channel_bins[ch]
            nom[j, sl] = counts
            slots = []
            for m in mods:
                if isinstance(m, HistoSys):
                    code = interp.check_code(self.histosys_code if m.code is None else m.code, "histosys")
                    h, lo, n0 = np.zeros(N), np.zeros(N), np.zeros(N)
                    h[sl], lo[sl], n0[sl] = m.hi, m.lo, counts
                    h_rows.setdefault(code, []).append((j, self._index[m.name], n0, h, lo))
                elif isinstance(m, NormSys):
                    code = interp.check_code(self.normsys_code if m.code is None else m.code, "normsys")
                    n_rows.setdefault(code, []).append((j, self._index[m.name], float(m.hi), float(m.lo)))
                else:  # linear factors
                    idx = np.full(N, P, dtype=np.int64)  # P: the constant 1 outside the channel
                    ps = self.param_sets[m.name]
                    idx[sl] = np.arange(ps.start, ps.stop) if m.per_bin else ps.start
                    slots.append(idx)
            lin.append(slots)
        L = max((len(s) for s in lin), default=0)
        lin_idx = np.full((J, max(L, 1), N), P, dtype=np.int64)
        for j, slots in enumerate(lin):
            for l, idx in enumerate(slots):
                lin_idx[j, l] = idx
        t = lambda a, dt=DTYPE: torch.as_tensor(np.asarray(a), dtype=dt)  # noqa: E731
        c: Dict[str, Any] = {"nom": t(nom), "lin_idx": t(lin_idx, torch.long), "L": L}
        # histosys terms (grouped by code, then concatenated in that order)
        h_groups = []
        h_j, h_a = [], []
        for code, rows in h_rows.items():
            h_groups.append((code, len(h_j), len(h_j) + len(rows), t([r[2] for r in rows]), t([r[3] for r in rows]),
                             t([r[4] for r in rows])))
            h_j += [r[0] for r in rows]
            h_a += [r[1] for r in rows]
        c["h_groups"], c["h_j"], c["h_a"] = h_groups, t(h_j, torch.long), t(h_a, torch.long)
        n_groups = []
        n_j, n_a = [], []
        for code, rows in n_rows.items():
            hi, lo = t([r[2] for r in rows]), t([r[3] for r in rows])
            coef = interp.code4_coefficients(hi, lo) if code == 4 else None
            n_groups.append((code, len(n_j), len(n_j) + len(rows), hi, lo, coef))
            n_j += [r[0] for r in rows]
            n_a += [r[1] for r in rows]
        c["n_groups"], c["n_j"], c["n_a"] = n_groups, t(n_j, torch.long), t(n_a, torch.long)
        # pairs of (histosys term, normsys term) and (normsys, normsys) in the same sample
        hn = [(ti, ui) for ti, jt in enumerate(h_j) for ui, ju in enumerate(n_j) if jt == ju]
        nn_ = [(u1, u2) for u1, j1 in enumerate(n_j) for u2, j2 in enumerate(n_j) if j1 == j2]
        c["hn_t"], c["hn_u"] = t([a for a, _ in hn], torch.long), t([b for _, b in hn], torch.long)
        c["nn_1"], c["nn_2"] = t([a for a, _ in nn_], torch.long), t([b for _, b in nn_], torch.long)
        P1 = P + 1
        # flat Hessian indices (rows * (P + 1) + cols) of the linear-factor blocks
        if h_j:
            hl = c["h_a"][:, None, None] * P1 + c["lin_idx"][c["h_j"]]  # (T, L, N)
            c["hl_idx"] = torch.cat([hl.reshape(-1), (c["lin_idx"][c["h_j"]] * P1 + c["h_a"][:, None, None]).reshape(-1)])
        if n_j:
            nl = c["n_a"][:, None, None] * P1 + c["lin_idx"][c["n_j"]]
            c["nl_idx"] = torch.cat([nl.reshape(-1), (c["lin_idx"][c["n_j"]] * P1 + c["n_a"][:, None, None]).reshape(-1)])
        if L >= 2:
            li = c["lin_idx"]
            c["ll_idx"] = (li[:, :, None, :] * P1 + li[:, None, :, :]).reshape(-1)  # (J, L, L, N)
            c["ll_offdiag"] = (~torch.eye(L, dtype=torch.bool))[None, :, :, None]
        # constraints
        aux_params = [k for k, p in enumerate(self.parameters) if p.constrained]
        self._aux_params = aux_params
        normal = [(a, k) for a, k in enumerate(aux_params) if self.parameters[k].constraint == "normal"]
        poisson = [(a, k) for a, k in enumerate(aux_params) if self.parameters[k].constraint == "poisson"]
        other = [(a, k) for a, k in enumerate(aux_params) if isinstance(self.parameters[k].constraint, Distribution)]
        c["norm_a"], c["norm_k"] = t([a for a, _ in normal], torch.long), t([k for _, k in normal], torch.long)
        c["norm_sigma"] = t([self.parameters[k].sigma for _, k in normal])
        c["norm_const"] = float(sum(math.log(self.parameters[k].sigma) + 0.5 * math.log(2 * math.pi) for _, k in normal))
        c["pois_a"], c["pois_k"] = t([a for a, _ in poisson], torch.long), t([k for _, k in poisson], torch.long)
        c["pois_tau"] = t([self.parameters[k].tau for _, k in poisson])
        c["other"] = [(a, k, self.parameters[k].constraint) for a, k in other]
        self._c = c
        kinked = set()
        for code, a, b, *_ in h_groups:
            if code in interp.KINKED_CODES:
                kinked.update(h_a[a:b])
        for code, a, b, *_ in n_groups:
            if code in interp.KINKED_CODES:
                kinked.update(n_a[a:b])
        self._kinked = sorted(kinked)


    def to_pyhf(self, observed: Any, **kwargs: Any) -> Dict[str, Any]:
        """This model and ``observed`` as a pyhf workspace dict
        (:func:`inferno.likelihood.workspace.to_pyhf`)."""
        from .workspace import to_pyhf

        return to_pyhf(self, observed, **kwargs)

    def to(self, device: Union[str, torch.device]) -> "Model":
        """The model on ``device`` (in place; returns self)."""
        device = torch.device(device)

        def move(v: Any) -> Any:
            if isinstance(v, Tensor):
                return v.to(device)
            if isinstance(v, list):
                return [move(x) for x in v]
            if isinstance(v, tuple):
                return tuple(move(x) for x in v)
            return v

        self._c = {k: move(v) for k, v in self._c.items()}
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
    def _factors(self, p: Tensor, derivs: bool, right: Optional[Tensor] = None):
        """The pieces of nu for flat parameters ``p`` (B, P)."""
        c = self._c
        B = p.shape[0]
        ext = torch.cat([p, torch.ones(B, 1, dtype=DTYPE, device=p.device)], -1)
        LF = ext[:, c["lin_idx"]]  # (B, J, L, N)
        LIN = LF.prod(2)
        A = c["nom"].expand(B, -1, -1)
        hd1 = hd2 = None
        if c["h_groups"]:
            vals, d1s, d2s = [], [], []
            for code, a, b, n0, hi, lo in c["h_groups"]:
                alpha = p[:, c["h_a"][a:b]].unsqueeze(-1)  # (B, T, 1)
                rgt = None if right is None else right[:, c["h_a"][a:b]].unsqueeze(-1)
                v, d1, d2 = interp.additive(code, alpha, n0, hi, lo, derivs, rgt)
                vals.append(v), d1s.append(d1), d2s.append(d2)
            hv = torch.cat(vals, 1)
            A = A.index_add(1, c["h_j"], hv)
            if derivs:
                hd1, hd2 = torch.cat(d1s, 1), torch.cat(d2s, 1)
        logE = None
        lp = lpp = None
        if c["n_groups"]:
            lvals, l1s, l2s = [], [], []
            for code, a, b, hi, lo, coef in c["n_groups"]:
                alpha = p[:, c["n_a"][a:b]]
                rgt = None if right is None else right[:, c["n_a"][a:b]]
                f, f1, f2 = interp.multiplicative(code, alpha, hi, lo, derivs, rgt, coef)
                lvals.append(torch.log(f))
                if derivs:
                    r1 = f1 / f
                    l1s.append(r1), l2s.append(f2 / f - r1 * r1)
            lv = torch.cat(lvals, 1)
            logE = torch.zeros(B, len(self._samples), dtype=DTYPE, device=p.device).index_add(1, c["n_j"], lv)
            if derivs:
                lp, lpp = torch.cat(l1s, 1), torch.cat(l2s, 1)
        E = None if logE is None else torch.exp(logE)
        return LF, LIN, A, E, hd1, hd2, lp, lpp

    def _expected_flat(self, p: Tensor) -> Tensor:
        _, LIN, A, E, *_ = self._factors(p, derivs=False)
        contrib = A * LIN
        if E is not None:
            contrib = contrib * E.unsqueeze(-1)
        return contrib.sum(1)

    def expected(self, params: Any) -> Tensor:
        """Expected counts ``(..., N)`` at parameters ``(..., P)``."""
        p = _as_tensor(params, "parameters", self.device)
        self._check_p(p)
        return self._expected_flat(p.reshape(-1, self.n_params)).reshape(p.shape[:-1] + (self.n_bins,))

    def expected_by_sample(self, params: Any) -> Tensor:
        """Expected counts of every sample ``(..., n_samples, N)`` (order of :attr:`samples`)."""
        p = _as_tensor(params, "parameters", self.device)
        self._check_p(p)
        flat = p.reshape(-1, self.n_params)
        _, LIN, A, E, *_ = self._factors(flat, derivs=False)
        contrib = A * LIN * (1.0 if E is None else E.unsqueeze(-1))
        return contrib.reshape(p.shape[:-1] + contrib.shape[1:])

    def _check_p(self, p: Tensor) -> None:
        if p.dim() == 0 or p.shape[-1] != self.n_params:
            raise ValueError(f"parameters must have shape (..., {self.n_params}) ({self.names}), got {tuple(p.shape)}")

    @staticmethod
    def _poisson(nu: Tensor, n: Tensor) -> Tensor:
        val = (nu - torch.xlogy(n, nu) + torch.lgamma(n + 1.0)).sum(-1)
        bad = (nu < 0).any(-1) | torch.isnan(val)
        return torch.where(bad, math.inf, val)

    def _constraints(self, p: Tensor, aux: Tensor, derivs: bool):
        """Constraint NLL (B,), and if derivs its gradient (B, P) and Hessian diagonal (B, P)."""
        c = self._c
        B = p.shape[0]
        val = torch.zeros(B, dtype=DTYPE, device=p.device)
        g = h = None
        if derivs:
            g = torch.zeros_like(p)
            h = torch.zeros_like(p)
        if c["norm_k"].numel():
            x = p[:, c["norm_k"]]
            z = (x - aux[:, c["norm_a"]]) / c["norm_sigma"]
            val = val + 0.5 * (z * z).sum(-1) + c["norm_const"]
            if derivs:
                g[:, c["norm_k"]] = z / c["norm_sigma"]
                h[:, c["norm_k"]] = (1.0 / c["norm_sigma"] ** 2).expand(B, -1)
        if c["pois_k"].numel():
            gam = p[:, c["pois_k"]]
            a = aux[:, c["pois_a"]]
            lam = gam * c["pois_tau"]
            term = lam - torch.xlogy(a, lam) + torch.lgamma(a + 1.0)
            term = torch.where(gam < 0, math.inf, term)
            val = val + term.sum(-1)
            if derivs:
                safe = torch.where(gam > 0, gam, 1.0)
                g[:, c["pois_k"]] = c["pois_tau"] - a / safe
                h[:, c["pois_k"]] = a / (safe * safe)
        for ai, k, dist in c["other"]:  # any other distribution: derivatives by autograd
            x = p[:, k] - aux[:, ai]
            if not derivs:
                val = val - dist.log_prob(x).to(DTYPE)
                continue
            with torch.enable_grad():
                xr = x.detach().clone().requires_grad_(True)
                nlp = -dist.log_prob(xr).to(DTYPE)
                (d1,) = torch.autograd.grad(nlp.sum(), xr, create_graph=True)
                (d2,) = torch.autograd.grad(d1.sum(), xr, allow_unused=True)
            g[:, k] = d1.detach()
            h[:, k] = 0.0 if d2 is None else d2.detach()
            val = val + nlp.detach()
        return val, g, h

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
        val = self._poisson(self._expected_flat(p), n)
        if self._aux_params:
            val = val + self._constraints(p, a, derivs=False)[0]
        return val

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
        c = self._c
        B, P = p.shape
        P1 = P + 1
        N = self.n_bins
        LF, LIN, A, E, hd1, hd2, lp, lpp = self._factors(p, derivs=True, right=right)
        EL = LIN if E is None else LIN * E.unsqueeze(-1)  # (B, J, N): E * Lambda
        AE = A if E is None else A * E.unsqueeze(-1)  # (B, J, N): A * E
        contrib = A * EL
        nu = contrib.sum(1)
        val = self._poisson(nu, n)
        safe = torch.where(nu > 0, nu, 1.0)
        ratio = n / safe
        w = 1.0 - ratio  # d(-ln L)/d nu
        r2 = ratio / safe  # d2(-ln L)/d nu2
        Jac = torch.zeros(B, P1, N, dtype=DTYPE, device=p.device)
        Hs = torch.zeros(B, P1 * P1, dtype=DTYPE, device=p.device)  # sum_i w_i d2 nu_i, flattened
        L = c["L"]
        if L:
            # products of all linear factors of a sample but one (prefix x suffix, no division)
            ones = torch.ones_like(LF[:, :, :1])
            pre = torch.cumprod(torch.cat([ones, LF[:, :, :-1]], 2), 2)
            suf = torch.flip(torch.cumprod(torch.flip(torch.cat([LF[:, :, 1:], ones], 2), [2]), 2), [2])
            LOO = pre * suf  # (B, J, L, N)
            vals = AE.unsqueeze(2) * LOO  # d nu_i / d theta_(j, l, i)
            flat = (c["lin_idx"] * N + torch.arange(N, device=p.device)).reshape(-1)
            Jac.view(B, -1).index_add_(1, flat, vals.reshape(B, -1))
        T = c["h_j"].numel()
        U = c["n_j"].numel()
        if T:
            ELh = EL[:, c["h_j"]]  # (B, T, N)
            Jac.index_add_(1, c["h_a"], ELh * hd1)
            Hs.index_add_(1, c["h_a"] * P1 + c["h_a"], (w.unsqueeze(1) * ELh * hd2).sum(-1))
        if U:
            Jac.index_add_(1, c["n_a"], contrib[:, c["n_j"]] * lp.unsqueeze(-1))
            q = (w.unsqueeze(1) * contrib).sum(-1)  # (B, J)
            qn = q[:, c["n_j"]]
            Hs.index_add_(1, c["n_a"] * P1 + c["n_a"], qn * lpp)
            if c["nn_1"].numel():
                Hs.index_add_(1, c["n_a"][c["nn_1"]] * P1 + c["n_a"][c["nn_2"]],
                              q[:, c["n_j"][c["nn_1"]]] * lp[:, c["nn_1"]] * lp[:, c["nn_2"]])
        if T and U and c["hn_t"].numel():
            z = (w.unsqueeze(1) * ELh * hd1).sum(-1)  # (B, T)
            v = z[:, c["hn_t"]] * lp[:, c["hn_u"]]
            ia, ib = c["h_a"][c["hn_t"]], c["n_a"][c["hn_u"]]
            Hs.index_add_(1, ia * P1 + ib, v)
            Hs.index_add_(1, ib * P1 + ia, v)
        if L:
            wE = w.unsqueeze(1).expand(-1, A.shape[1], -1) if E is None else w.unsqueeze(1) * E.unsqueeze(-1)  # (B, J, N)
            if T:  # histosys x linear: w E LOO d1
                v = wE[:, c["h_j"]].unsqueeze(2) * LOO[:, c["h_j"]] * hd1.unsqueeze(2)  # (B, T, L, N)
                v = v.reshape(B, -1)
                Hs.index_add_(1, c["hl_idx"], torch.cat([v, v], 1))
            if U:  # normsys x linear: w A E LOO l'
                v = (w.unsqueeze(1) * AE)[:, c["n_j"]].unsqueeze(2) * LOO[:, c["n_j"]] * lp[:, :, None, None]
                v = v.reshape(B, -1)
                Hs.index_add_(1, c["nl_idx"], torch.cat([v, v], 1))
            if L >= 2:  # linear x linear: w A E prod(all but two)
                G = LF.unsqueeze(2).expand(B, LF.shape[1], L, L, N).clone()  # G[:, j, l, m] = F_m, F_l -> 1
                ar = torch.arange(L, device=p.device)
                G[:, :, ar, ar] = 1.0
                ones2 = torch.ones_like(G[:, :, :, :1])
                pre2 = torch.cumprod(torch.cat([ones2, G[:, :, :, :-1]], 3), 3)
                suf2 = torch.flip(torch.cumprod(torch.flip(torch.cat([G[:, :, :, 1:], ones2], 3), [3]), 3), [3])
                LOO2 = pre2 * suf2 * c["ll_offdiag"]
                v = (w.unsqueeze(1) * AE)[:, :, None, None, :] * LOO2
                Hs.index_add_(1, c["ll_idx"], v.reshape(B, -1))
        Jac = Jac[:, :P]
        grad = (Jac @ w.unsqueeze(-1)).squeeze(-1)
        H = (Jac * r2.unsqueeze(1)) @ Jac.transpose(1, 2) + Hs.view(B, P1, P1)[:, :P, :P]
        if self._aux_params:
            cv, cg, ch = self._constraints(p, aux, derivs=True)
            val = val + cv
            grad = grad + cg
            H = H + torch.diag_embed(ch)
        return val, grad, H


def _as_tensor(a: Any, what: str, device: torch.device) -> Tensor:
    if isinstance(a, Tensor):
        return a.to(dtype=DTYPE, device=device)  # keeps the autograd graph
    try:
        arr = np.array(a, dtype=np.float64)  # np.array copies, so negative strides are fine
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be numbers, got {type(a).__name__}") from None
    return torch.as_tensor(arr, device=device)
