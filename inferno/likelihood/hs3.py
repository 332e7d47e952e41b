r"""HS3 (HEP Statistics Serialization Standard) workspaces in and out of
:class:`~inferno.likelihood.Model`, in the HistFactory dialect of ROOT's
``RooJSONFactoryWSTool`` as read by `pyhs3 <https://pypi.org/project/pyhs3>`_.

:func:`to_hs3` writes a model and its observations as one HS3 workspace (a plain ``dict``);
:func:`from_hs3` reads one back into a Model and its observations. Neither needs pyhs3.

**What maps to what** (Model on the left, HS3 on the right):

=================================  =========================================================
channel ``c``                      ``histfactory_dist`` ``model_c`` (one regular axis
                                   ``obs_x_c`` over [0, bins]), paired in the likelihood
                                   with the ``binned`` data ``obsData_c``
sample                             sample ``{name, data: {contents[, errors]}, modifiers}``
:class:`NormFactor`                ``normfactor`` (``parameter``)
:class:`NormSys`                   ``normsys``, data ``{hi, lo, interpolation: code1|code4}``
:class:`HistoSys`                  ``histosys``, data ``{hi: {contents}, lo: {contents},
                                   interpolation: code0|code2|code4p}``
:class:`Lumi` (and a normfactor    ``normfactor`` with ``constraint_name``: a
with a Gaussian constraint)        ``gaussian_dist`` (x = parameter, mean = the const
                                   parameter ``nom_<parameter>``, sigma) listed in the
                                   likelihood's ``aux_distributions``
:class:`StatError`                 ``staterror`` (``constraint: Gauss``, ``parameters``);
                                   the uncertainties are the sample's ``errors``
:class:`ShapeSys`                  ``shapesys`` (``constraint: Poisson``, ``parameters``,
                                   data ``{vals}``: absolute uncertainties, as pyhf's)
:class:`ShapeFactor`               ``shapefactor`` (``parameters``)
init / fixed / bounds              parameter point ``default_values`` (``value``,
                                   ``const``) / product domain ``default_domain``
POIs                               the analysis' ``parameters_of_interest``
=================================  =========================================================

Per-bin parameters keep the Model's names ``set[i]``; read back, a per-bin set takes the
modifier's name and its bins the order of ``parameters``. The Gaussian constraints of
``normsys`` / ``histosys`` (unit width at 0) and ``staterror`` (at 1, width
:math:`\sqrt{\sum_s e_{s,i}^2}/\sum_s\nu_{s,i}` over the samples with the modifier) and the
Poisson constraint of ``shapesys`` (:math:`\tau_i = (\nu_i/\mathrm{vals}_i)^2`) are implied
by the modifiers, as in pyhf. A staterror width other than the default is written by
scaling the samples' ``errors``, a shapesys :math:`\tau` by ``vals`` = :math:`\nu/\sqrt\tau`.
A bin without uncertainty (``errors`` or ``vals`` 0) is held at 1 without constraint (ROOT's
rule; pyhs3 0.4 cannot evaluate such a bin). The ``misc`` entry ``{"inferno": {"lumi":
[...]}}`` marks the normfactors that are :class:`Lumi` modifiers.

**Refused** (ValueError naming the parameter, distribution, sample or modifier): on export, a
constraint HS3's histfactory_dist cannot hold (a centre other than 0 for normsys/histosys,
other than 1 for staterror, other than :math:`\tau` for shapesys; a normsys/histosys width
other than 1; a torch-distribution constraint; a constrained shapefactor; a free
staterror/shapesys bin), two staterror sets in one channel, infinite bounds. On import, any
distribution other than ``histfactory_dist`` in the likelihood, an unknown modifier type,
a Poisson staterror or Gaussian shapesys, ``barlow_beeston_method: full``, a function used
as a parameter, an auxiliary distribution that is not a Gaussian on a normfactor, several
analyses or likelihoods without ``analysis=``.
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from .. import _version
from . import interpolation as interp
from .model import _DEFAULTS, DTYPE, Channel, Model, Sample
from .modifiers import HistoSys, Lumi, NormFactor, NormSys, ShapeFactor, ShapeSys, StatError, finite_vector
from .workspace import read_json

__all__ = ["to_hs3", "from_hs3", "HS3_VERSION"]

#: the HS3 version :func:`to_hs3` declares in the metadata
HS3_VERSION = "0.2"
_CODE_NAMES = {"histosys": {0: "code0", 2: "code2", "4p": "code4p"}, "normsys": {1: "code1", 4: "code4"}}
_POINT, _DOMAIN = "default_values", "default_domain"
Spec = Dict[str, Any]


def _floats(v: Any) -> List[float]:
    return [float(x) for x in finite_vector(v, "values")]


# ====================================================================== to_hs3
def _check_constraint(model: Model, name: str) -> None:
    """ValueError if the constraints of parameter set ``name`` cannot be written as HS3."""
    params = model.parameters[model.param_sets[name]]
    for p in params:
        c, why = p.constraint, None
        if c is not None and not isinstance(c, str):
            why = f"a {type(c).__name__} distribution constraint has no HS3 histfactory equivalent"
        elif p.kind in ("normsys", "histosys") and (c != "normal" or p.aux != 0.0 or p.sigma != 1.0):
            why = (f"HS3's {p.kind} has a unit Gaussian constraint centred at 0, this one is "
                   f"{c!r} (aux {p.aux}, sigma {p.sigma})")
        elif p.kind == "shapefactor" and c is not None:
            why = "HS3's shapefactor is unconstrained"
        elif p.kind == "staterror" and not (c == "normal" and p.aux == 1.0) and not (c is None and p.fixed):
            why = f"HS3's staterror bins have a Gaussian constraint centred at 1, this one has {c!r} (aux {p.aux})"
        elif p.kind == "shapesys" and not (c == "poisson" and p.aux == p.tau) and not (c is None and p.fixed):
            why = f"HS3's shapesys bins have a Poisson constraint with aux = tau, this one has {c!r} (aux {p.aux})"
        if why:
            raise ValueError(f"parameter {p.name!r} ({p.kind}): {why}; cannot export to HS3")
        if not all(math.isfinite(b) for b in p.bounds):
            raise ValueError(f"parameter {p.name!r} ({p.kind}): bounds {p.bounds} are not finite; HS3 domains "
                             "hold finite bounds only")


def _stat_errors(model: Model, ch: Channel) -> Dict[str, List[float]]:
    """The ``errors`` of the staterror samples of a channel that give the Model's widths."""
    stat = [(s, m) for s in ch.samples for m in s.modifiers if isinstance(m, StatError)]
    names = sorted({m.name for _, m in stat})
    if len(names) > 1:
        raise ValueError(f"channel {ch.name!r}: staterror sets {names}; an HS3 histfactory_dist has one "
                         "staterror per channel")
    if not stat:
        return {}
    nom = sum(finite_vector(s.counts, "counts") for s, _ in stat)
    var = sum(m.sigma ** 2 for _, m in stat)
    params = model.parameters[model.param_sets[names[0]]]
    scale = np.ones_like(nom)
    extra = np.zeros_like(nom)  # a freed bin without uncertainty: its width on every sample
    for i, p in enumerate(params):
        if p.constraint != "normal":
            continue
        if nom[i] <= 0:
            raise ValueError(f"parameter {p.name!r} (staterror): a bin without nominal counts cannot carry "
                             "a Gaussian constraint in HS3")
        if var[i] > 0:
            scale[i] = p.sigma * nom[i] / math.sqrt(var[i])
        else:
            extra[i] = p.sigma * nom[i] / math.sqrt(len(stat))
    return {s.name: (m.sigma * scale + extra).tolist() for s, m in stat}


def _modifier_hs3(model: Model, m: Any, counts: np.ndarray, where: str) -> Spec:
    out: Spec = {"name": m.name, "type": m.type}
    if isinstance(m, (NormFactor, Lumi)):
        out.update(type="normfactor", parameter=m.name)
        if model.parameters[model.index(m.name)].constraint == "normal":
            out["constraint_name"] = f"{m.name}_constraint"
    elif isinstance(m, NormSys):
        code = interp.check_code(model.normsys_code if m.code is None else m.code, "normsys")
        out.update(parameter=m.name, constraint="Gauss",
                   data={"hi": float(m.hi), "lo": float(m.lo), "interpolation": _CODE_NAMES["normsys"][code]})
    elif isinstance(m, HistoSys):
        code = interp.check_code(model.histosys_code if m.code is None else m.code, "histosys")
        out.update(parameter=m.name, constraint="Gauss",
                   data={"hi": {"contents": _floats(m.hi)}, "lo": {"contents": _floats(m.lo)},
                         "interpolation": _CODE_NAMES["histosys"][code]})
    else:
        sl = model.param_sets[m.name]
        out["parameters"] = model.names[sl]
        if isinstance(m, StatError):
            out["constraint"] = "Gauss"
        elif isinstance(m, ShapeSys):
            tau = np.array([p.tau if p.constraint == "poisson" else 0.0 for p in model.parameters[sl]])
            vals = np.where(tau > 0, counts / np.sqrt(np.where(tau > 0, tau, 1.0)), 0.0)
            out.update(constraint="Poisson", data={"vals": vals.tolist()})
        elif not isinstance(m, ShapeFactor):
            raise ValueError(f"{where}: modifier {m.name!r} of type {type(m).__name__} has no HS3 equivalent")
    return out


def to_hs3(model: Model, observed: Any = None, name: str = "inferno") -> Spec:
    """An HS3 workspace (a JSON-serialisable dict) of ``model`` and its observations.

    Args:
        model: the Model.
        observed: observed counts, a flat array over all channels (in channel order) or a
            dict ``{channel: counts}``; None: the Asimov data at the inits.
        name: prefix of the likelihood's and the analysis' names.

    Returns:
        The workspace: ``metadata``, ``distributions`` (one ``histfactory_dist`` per
        channel, and the Gaussian constraints of constrained normfactors / lumi),
        ``data``, ``parameter_points``, ``domains``, ``likelihoods`` and ``analyses`` (one
        each, ``{name}_likelihood`` / ``{name}_analysis``), ``misc``.

    Raises:
        ValueError: naming the parameter, channel or modifier that HS3 cannot express (see
            the module docstring).
    """
    n = model.main_data(model.asimov()[0] if observed is None else observed)
    if n.dim() != 1:
        raise ValueError(f"observed data must be one data set of {model.n_bins} bins, got shape {tuple(n.shape)}")
    for pname in model.param_sets:
        _check_constraint(model, pname)
    dists, data, aux, lumi = [], [], [], []
    values = n.detach().cpu().numpy()
    for ch in model.channels:
        nb = model.channel_bins[ch.name].stop - model.channel_bins[ch.name].start
        axis = {"name": f"obs_x_{ch.name}", "min": 0.0, "max": float(nb), "nbins": nb}
        errors = _stat_errors(model, ch)
        samples = []
        for s in ch.samples:
            counts = finite_vector(s.counts, "counts")
            where = f"channel {ch.name!r}, sample {s.name!r}"
            sd: Spec = {"contents": counts.tolist()}
            if s.name in errors:
                sd["errors"] = errors[s.name]
            samples.append({"name": s.name, "data": sd,
                            "modifiers": [_modifier_hs3(model, m, counts, where) for m in s.modifiers]})
        dists.append({"name": f"model_{ch.name}", "type": "histfactory_dist", "axes": [axis], "samples": samples})
        data.append({"name": f"obsData_{ch.name}", "type": "binned",
                     "contents": values[model.channel_bins[ch.name]].tolist(), "axes": [axis]})
    points, domain = [], []
    for p in model.parameters:
        points.append({"name": p.name, "value": p.init, "const": p.fixed})
        domain.append({"name": p.name, "min": p.bounds[0], "max": p.bounds[1]})
        if p.kind in ("normfactor", "lumi") and p.constraint == "normal":
            glob = f"nom_{p.name}"
            if glob in model.names:
                raise ValueError(f"parameter {p.name!r}: the name {glob!r} of its global observable is taken")
            aux.append({"name": f"{p.name}_constraint", "type": "gaussian_dist", "x": p.name, "mean": glob,
                        "sigma": p.sigma})
            points.append({"name": glob, "value": p.aux, "const": True})
            if p.kind == "lumi":
                lumi.append(p.name)
    lh = {"name": f"{name}_likelihood", "distributions": [d["name"] for d in dists],
          "data": [d["name"] for d in data]}
    if aux:
        lh["aux_distributions"] = [d["name"] for d in aux]
    return {
        "metadata": {"hs3_version": HS3_VERSION, "packages": [{"name": "inferno", "version": _version.__version__}]},
        "distributions": dists + aux, "data": data,
        "parameter_points": [{"name": _POINT, "parameters": points}],
        "domains": [{"name": _DOMAIN, "type": "product_domain", "axes": domain}],
        "likelihoods": [lh],
        "analyses": [{"name": f"{name}_analysis", "likelihood": lh["name"], "parameters_of_interest": model.poi_names,
                      "domains": [_DOMAIN], "init": _POINT}],
        "misc": {"inferno": {"lumi": lumi}},
    }


# ====================================================================== from_hs3
def _load(workspace: Any) -> Mapping:
    if isinstance(workspace, (str, bytes, os.PathLike)):
        workspace = read_json(workspace, "HS3 file")
    if not isinstance(workspace, Mapping):
        raise ValueError(f"an HS3 workspace must be a dict or a path to its JSON file, got {type(workspace).__name__}")
    return workspace


def _named(ws: Mapping, key: str) -> Dict[str, Mapping]:
    """The entries of the list ``ws[key]`` by name."""
    items = ws.get(key) or []
    if not isinstance(items, list) or not all(isinstance(i, Mapping) and isinstance(i.get("name"), str)
                                              for i in items):
        raise ValueError(f"HS3 {key!r} must be a list of named objects")
    return {i["name"]: i for i in items}


def _select(ws: Mapping, analysis: Optional[str]) -> Tuple[Mapping, List[str], List[str], Optional[str]]:
    """(likelihood, POIs, domain names, parameter-point name) of the chosen analysis."""
    analyses, likelihoods = _named(ws, "analyses"), _named(ws, "likelihoods")
    if analysis is not None and analysis not in analyses and analysis not in likelihoods:
        raise ValueError(f"unknown analysis or likelihood {analysis!r}: the workspace has the analyses "
                         f"{sorted(analyses)} and the likelihoods {sorted(likelihoods)}")
    if analysis is None and len(analyses) > 1:
        raise ValueError(f"the workspace has several analyses {sorted(analyses)}: choose one with analysis=")
    if analysis in analyses or (analysis is None and analyses):
        a = analyses[analysis] if analysis is not None else next(iter(analyses.values()))
        lname = a.get("likelihood")
        if lname not in likelihoods:
            raise ValueError(f"analysis {a['name']!r}: unknown likelihood {lname!r}")
        return likelihoods[lname], list(a.get("parameters_of_interest") or []), list(a.get("domains") or []), \
            a.get("init")
    if analysis is None and len(likelihoods) != 1:
        raise ValueError(f"the workspace has {len(likelihoods)} likelihoods {sorted(likelihoods)} and no analysis: "
                         "choose one with analysis=")
    return likelihoods[analysis] if analysis else next(iter(likelihoods.values())), [], [], None


def _vector(v: Any, n: Optional[int], what: str) -> np.ndarray:
    arr = finite_vector(v, what)
    if n is not None and arr.size != n:
        raise ValueError(f"{what} has {arr.size} values, expected {n}")
    return arr


def _channel(dist: Mapping, state: Dict[str, Any]) -> Channel:
    """A Channel from a histfactory_dist; records per-bin names, codes and constraint links in ``state``."""
    dname = dist["name"]
    cname = dname[6:] if dname.startswith("model_") else dname
    axes = dist.get("axes") or []
    nb = int(np.prod([int(a.get("nbins", len(a.get("edges", [0])) - 1)) for a in axes])) if axes else None
    if dist.get("barlow_beeston_method", "lite") != "lite":
        raise ValueError(f"distribution {dname!r}: barlow_beeston_method {dist['barlow_beeston_method']!r} is not "
                         "supported (only 'lite')")
    samples, stat_sets = [], set()
    for s in dist.get("samples") or []:
        where = f"distribution {dname!r} (channel {cname!r}), sample {s.get('name')!r}"
        sd = s.get("data") or {}
        try:
            counts = _vector(sd.get("contents"), nb, "data contents")
            errors = _vector(sd["errors"], counts.size, "data errors") if sd.get("errors") is not None \
                else np.zeros_like(counts)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        nb = counts.size
        mods = []
        for m in s.get("modifiers") or []:
            mname, mtype = m.get("name"), m.get("type")
            here = f"{where}, modifier {mname!r} ({mtype})"
            data, constraint = m.get("data") or {}, m.get("constraint")
            try:
                if mtype == "normfactor":
                    par = m.get("parameter", mname)
                    if m.get("constraint_name"):
                        state["links"][par] = (m["constraint_name"], here)
                    mods.append(Lumi(par) if par in state["lumi"] else NormFactor(par))
                elif mtype in ("normsys", "histosys"):
                    if constraint not in (None, "Gauss"):
                        raise ValueError(f"constraint {constraint!r} is not supported (only 'Gauss')")
                    par = m.get("parameter", f"alpha_{mname}")
                    code = interp.check_code(data.get("interpolation", "code4" if mtype == "normsys" else "code4p"),
                                             mtype)
                    state["codes"][mtype].append(code)
                    if mtype == "normsys":
                        mods.append(NormSys(par, hi=float(data["hi"]), lo=float(data["lo"]), code=code))
                    else:
                        mods.append(HistoSys(par, hi=_vector(data["hi"]["contents"], nb, "hi contents"),
                                             lo=_vector(data["lo"]["contents"], nb, "lo contents"), code=code))
                elif mtype in ("staterror", "shapesys", "shapefactor"):
                    default = {"staterror": "Gauss", "shapesys": "Poisson", "shapefactor": None}[mtype]
                    if constraint not in (None, default):
                        raise ValueError(f"constraint {constraint!r} is not supported (only {default!r})")
                    if mtype == "staterror" and data:
                        raise ValueError("explicit uncertainties ('data') are Barlow-Beeston 'full'; only 'lite' "
                                         "(uncertainties from the sample errors) is supported")
                    names = m.get("parameters") or (
                        [f"staterror_{cname}_bin{i}" for i in range(nb)] if mtype == "staterror" else None)
                    if not isinstance(names, list) or len(names) != nb:
                        raise ValueError(f"'parameters' must list {nb} parameter names, got {names!r:.80}")
                    if state["bins"].setdefault(mname, names) != names:
                        raise ValueError(f"parameters {names} differ from those of {mname!r} elsewhere")
                    if mtype == "staterror":
                        stat_sets.add(mname)
                        mods.append(StatError(mname, sigma=errors))
                    elif mtype == "shapesys":
                        mods.append(ShapeSys(mname, sigma=_vector(data.get("vals"), nb, "vals")))
                    else:
                        mods.append(ShapeFactor(mname))
                else:
                    raise ValueError("unsupported modifier type; supported: normfactor, normsys, histosys, "
                                     "staterror, shapesys, shapefactor")
            except (ValueError, KeyError, TypeError) as e:
                msg = f"missing {e}" if isinstance(e, KeyError) else str(e)
                raise ValueError(f"{here}: {msg}") from None
        samples.append(Sample(s.get("name"), counts, mods))
    if len(stat_sets) > 1:
        raise ValueError(f"distribution {dname!r}: staterror modifiers {sorted(stat_sets)} with different names; "
                         "HS3 shares one set of staterror parameters per channel")
    if not samples:
        raise ValueError(f"distribution {dname!r} has no samples")
    return Channel(cname, samples)


def _value(v: Any, points: Mapping[str, Mapping], what: str) -> float:
    """A number, or the value of a (constant) parameter named ``v``."""
    if isinstance(v, str):
        if v not in points:
            raise ValueError(f"{what}: {v!r} has no value in the parameter point")
        v = points[v].get("value")
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f"{what} must be a finite number, got {v!r}")
    return float(v)


def from_hs3(workspace: Any, analysis: Optional[str] = None) -> Tuple[Model, Tensor]:
    """A :class:`~inferno.likelihood.Model` and its observations from an HS3 workspace.

    Args:
        workspace: the workspace (a dict) or a path to its JSON file.
        analysis: name of the analysis (or likelihood) to read; None: the only one.

    Returns:
        ``(model, observed)``: the Model, with the channels in the likelihood's order, and the
        observations as one flat float64 tensor in that order.

    Raises:
        ValueError: naming the analysis, distribution, channel, sample, modifier or
            parameter at fault (see the module docstring).
    """
    ws = _load(workspace)
    lh, pois, dom_names, init = _select(ws, analysis)
    dists, datasets, funcs = _named(ws, "distributions"), _named(ws, "data"), _named(ws, "functions")
    pp = _named(ws, "parameter_points")
    points = {p["name"]: p for p in (pp.get(init) or pp.get(_POINT) or next(iter(pp.values()), {})).get(
        "parameters", [])}
    domains = _named(ws, "domains")
    bounds = {a["name"]: (a.get("min"), a.get("max")) for d in (dom_names or list(domains)[:1])
              for a in (domains.get(d) or {}).get("axes", [])}
    state: Dict[str, Any] = {"links": {}, "bins": {}, "codes": {"normsys": [], "histosys": []},
                             "lumi": set(((ws.get("misc") or {}).get("inferno") or {}).get("lumi") or [])}
    lname, names, dnames = lh["name"], list(lh.get("distributions") or []), list(lh.get("data") or [])
    if len(names) != len(dnames) or not names:
        raise ValueError(f"likelihood {lname!r}: needs as many data as distributions (at least one), got "
                         f"{len(names)} and {len(dnames)}")
    channels, obs = [], []
    for dname, oname in zip(names, dnames):
        d = dists.get(dname)
        if d is None:
            raise ValueError(f"likelihood {lname!r}: unknown distribution {dname!r}")
        if d.get("type") != "histfactory_dist":
            raise ValueError(f"likelihood {lname!r}: distribution {dname!r} of type {d.get('type')!r} is not "
                             "supported (only histfactory_dist)")
        ch = _channel(d, state)
        o = datasets.get(oname)
        if o is None or o.get("type") != "binned":
            raise ValueError(f"likelihood {lname!r}: data {oname!r} of distribution {dname!r} must be a binned "
                             f"data entry, got {None if o is None else o.get('type')!r}")
        try:
            counts = _vector(o.get("contents"), finite_vector(ch.samples[0].counts, "counts").size, "contents")
        except ValueError as e:
            raise ValueError(f"data {oname!r} (channel {ch.name!r}): {e}") from None
        if np.any(counts < 0):
            raise ValueError(f"data {oname!r} (channel {ch.name!r}): negative counts")
        channels.append(ch)
        obs.append(counts)
    used = {m.name for ch in channels for s in ch.samples for m in s.modifiers}
    normfactors = {m.name for ch in channels for s in ch.samples for m in s.modifiers
                   if isinstance(m, (NormFactor, Lumi))}
    links = {cn: par for par, (cn, _) in state["links"].items()}
    constraints: Dict[str, Dict[str, Any]] = {}
    for cname in dict.fromkeys(list(lh.get("aux_distributions") or []) + list(links)):
        c = dists.get(cname)
        if c is None:
            raise ValueError(f"likelihood {lname!r}: unknown constraint distribution {cname!r}")
        ends = (c.get("x"), c.get("mean"))
        cands = [v for v in ends if isinstance(v, str) and v in normfactors]
        par = links.get(cname) or (cands[0] if len(cands) == 1 else None)
        if c.get("type") != "gaussian_dist" or par is None or par not in ends or par in constraints:
            raise ValueError(f"likelihood {lname!r}: constraint {cname!r} of type {c.get('type')!r} is not supported "
                             "(only one gaussian_dist per normfactor parameter)")
        other = ends[1] if ends[0] == par else ends[0]
        constraints[par] = {"constraint": "normal", "aux": _value(other, points, f"constraint {cname!r}: centre"),
                            "sigma": _value(c.get("sigma"), points, f"constraint {cname!r}: sigma")}
    for par in set(constraints) | set(used):
        if par in funcs:
            raise ValueError(f"parameter {par!r} is a function ({funcs[par].get('type')!r}) in the workspace; "
                             "functions are not supported")
    for s_name, hs3_names in state["bins"].items():
        for f in set(hs3_names) & set(funcs):
            raise ValueError(f"parameter {f!r} of {s_name!r} is a function in the workspace; not supported")
    codes = {k: (v[0] if v and all(c == v[0] for c in v) else None) for k, v in state["codes"].items()}
    channels = [Channel(ch.name, [Sample(s.name, s.counts, [
        type(m)(m.name, hi=m.hi, lo=m.lo, code=None if codes[m.type] is not None else m.code)
        if isinstance(m, (NormSys, HistoSys)) else m for m in s.modifiers]) for s in ch.samples]) for ch in channels]
    probe = Model(channels, parameters={p: {"sigma": 1.0} for p in state["lumi"] & used},
                  histosys_code="4p" if codes["histosys"] is None else codes["histosys"],
                  normsys_code=4 if codes["normsys"] is None else codes["normsys"])
    settings: Dict[str, Dict[str, Any]] = {}
    for pname, sl in probe.param_sets.items():
        kind = probe.parameters[sl.start].kind
        hs3_names = state["bins"].get(pname, [pname])
        one: Dict[str, List[Any]] = {"init": [], "bounds": [], "fixed": []}
        for k, hname in enumerate(hs3_names):
            par = probe.parameters[sl.start + k]
            pt, (lo, hi) = points.get(hname, {}), bounds.get(hname, (None, None))
            one["init"].append(_value(pt.get("value", par.init), {}, f"parameter {hname!r}: value"))
            one["fixed"].append(bool(pt.get("const", par.fixed)))
            lo = _DEFAULTS[kind][1][0] if lo is None else _value(lo, {}, f"domain of {hname!r}: min")
            hi = _DEFAULTS[kind][1][1] if hi is None else _value(hi, {}, f"domain of {hname!r}: max")
            one["bounds"].append((lo, hi))
        settings[pname] = {k: (v if pname in state["bins"] else v[0]) for k, v in one.items()}
        settings[pname].update(constraints.get(pname, {}))
        if kind == "lumi" and pname not in constraints:
            raise ValueError(f"parameter {pname!r} is marked lumi but has no Gaussian constraint")
    for p in pois:
        if p not in probe.param_sets:
            raise ValueError(f"unknown parameter of interest {p!r}: the likelihood's parameters are "
                             f"{list(probe.param_sets)}")
    model = Model(channels, poi=pois or None, parameters=settings, histosys_code=probe.histosys_code,
                  normsys_code=probe.normsys_code)
    return model, torch.as_tensor(np.concatenate(obs), dtype=DTYPE)
