r"""HistFactory JSON workspaces (the format of `pyhf <https://pyhf.readthedocs.io>`_) in and
out of :class:`~inferno.likelihood.Model`.

:func:`from_pyhf` reads a workspace specification (a ``dict``, a path to a JSON file, or a
``pyhf.Workspace``) into a :class:`~inferno.likelihood.Model` and its observations;
:func:`to_pyhf` writes a model and its observations back out as a specification that
validates against pyhf's schema (``pyhf.Workspace(spec)``). Both work on plain dicts: pyhf
is not needed, it stays an optional dependency.

**What maps to what** (JSON on the left, :mod:`inferno.likelihood` on the right):

======================================  ======================================================
workspace                               Model
======================================  ======================================================
channel (name, samples)                 :class:`Channel`, same order as the workspace
sample (name, data, modifiers)          :class:`Sample` (``counts`` = data)
``normfactor``                          :class:`NormFactor`
``normsys``, data ``{hi, lo}``          :class:`NormSys` ``(hi, lo)``
``histosys``, ``{hi_data, lo_data}``    :class:`HistoSys` ``(hi=hi_data, lo=lo_data)``
``lumi`` (named ``lumi``)               :class:`Lumi`; the measurement's ``auxdata`` and
                                        ``sigmas`` of ``lumi`` become ``aux`` and ``sigma``
``staterror``, data = absolute unc.     :class:`StatError` ``(sigma=data)``
``shapesys``, data = absolute unc.      :class:`ShapeSys` ``(sigma=data)``
``shapefactor``                         :class:`ShapeFactor`
observation (name, data)                ``observed``: one flat float64 tensor, the channels
                                        concatenated in the Model's (= workspace's) order
measurement ``config.poi``              ``poi`` (``""``: no POI)
parameter config ``inits``              ``init`` (one per bin for per-bin sets)
``bounds``                              ``bounds``
``fixed``                               ``fixed`` (one flag for the whole set)
``auxdata``                             ``aux`` (normsys, histosys, lumi, staterror, shapesys)
``sigmas``                              ``sigma`` (lumi, staterror)
``factors``                             ``tau`` (shapesys)
======================================  ======================================================

The constraints are HistFactory's in both directions: unit Gaussians on the ``normsys`` /
``histosys`` :math:`\alpha` (centre ``auxdata``, default 0), a Gaussian of width ``sigmas``
on ``lumi``, Gaussians of the relative width
:math:`\sqrt{\sum_s \sigma_{s,i}^2}/\sum_s \nu^0_{s,i}` on the ``staterror`` bins, and
Poisson terms with :math:`\tau_i = (\nu^0_i/\sigma_i)^2` on the ``shapesys`` bins; see
:mod:`~inferno.likelihood.modifiers`. At the same parameter values the Model's
``nll(params, observed)`` equals pyhf's ``-logpdf(pars, data)``, with one documented
exception: a ``staterror`` bin without uncertainty (or a ``shapesys`` bin without
uncertainty or without nominal counts) has no constraint in the Model and is held at 1,
whereas pyhf holds it at 1 *with* a placeholder constraint (a unit-width Gaussian at 1,
resp. a Poisson term of :math:`\tau = 1`). The two NLLs then differ by a constant, per such
bin :math:`\tfrac12\ln 2\pi` (staterror) resp. 1 (shapesys) at the nominal auxiliary data,
which changes no fit. If the measurement frees such a ``staterror`` bin (``fixed: false``),
:func:`from_pyhf` gives it pyhf's Gaussian; freeing such a ``shapesys`` bin is refused.

Parameter configs of names that are no parameter of the workspace are ignored, as pyhf
does (HistFactory exports always configure ``lumi``).

**Interpolation codes** are not part of the JSON format: pyhf takes them when the model is
built, ``ws.model(modifier_settings=...)``, one code per modifier type (pyhf's defaults:
``code4`` for normsys, ``code4p`` for histosys, the Model's defaults too). :func:`from_pyhf`
takes them as arguments; :func:`to_pyhf` records none, and :func:`pyhf_modifier_settings`
returns the ``modifier_settings`` that build the matching pyhf model. Note that the Model's
histosys code 2 equals pyhf's ``code2`` only inside :math:`|\alpha| \le 1` (see
:mod:`~inferno.likelihood.interpolation`).

**What** :func:`to_pyhf` **cannot export** (ValueError naming the parameter and the
reason): a torch-distribution constraint; any constraint on a ``normfactor`` or
``shapefactor``; a ``normsys`` / ``histosys`` parameter without its Gaussian or with a
width other than 1 (pyhf fixes the width; a centre ``aux`` other than 0 is fine, it becomes
``auxdata``); a ``lumi`` modifier not named ``lumi`` (the schema fixes the name); a
``staterror`` bin without a Gaussian constraint, or a ``shapesys`` bin without its Poisson
one, unless it is a held bin without uncertainty (see above); a per-bin set with some bins
fixed and others not, unless it is the default pattern (pyhf's ``fixed`` is one flag per
set); infinite bounds; more than one POI.

Example:
    >>> spec = {"channels": [{"name": "SR", "samples": [
    ...     {"name": "signal", "data": [5.0, 10.0],
    ...      "modifiers": [{"name": "mu", "type": "normfactor", "data": None}]},
    ...     {"name": "bkg", "data": [50.0, 60.0],
    ...      "modifiers": [{"name": "bkg_unc", "type": "shapesys", "data": [5.0, 12.0]}]}]}],
    ...     "observations": [{"name": "SR", "data": [53.0, 65.0]}],
    ...     "measurements": [{"name": "meas", "config": {"poi": "mu", "parameters": []}}],
    ...     "version": "1.0.0"}
    >>> model, observed = from_pyhf(spec)
    >>> model.names
    ['mu', 'bkg_unc[0]', 'bkg_unc[1]']
    >>> to_pyhf(model, observed, measurement_name="meas") == spec
    True
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from .model import _ALPHA, _DEFAULTS, DTYPE, Channel, Model, Sample
from .modifiers import HistoSys, Lumi, Modifier, NormFactor, NormSys, ShapeFactor, ShapeSys, StatError

__all__ = ["from_pyhf", "to_pyhf", "pyhf_modifier_settings", "PYHF_CODES", "SCHEMA_VERSION"]

#: version of the pyhf workspace schema that :func:`to_pyhf` writes
SCHEMA_VERSION = "1.0.0"

#: pyhf's names of the interpolation codes
PYHF_CODES: Dict[Union[int, str], str] = {0: "code0", 1: "code1", 2: "code2", 4: "code4", "4p": "code4p"}

#: pyhf's default (init, bounds) of the parameters of each modifier type: the Model's defaults
#: (which are pyhf's), except lumi, for which pyhf has none (the measurement must give it)
_PYHF_DEFAULTS: Dict[str, Tuple[float, Tuple[float, float]]] = {k: v for k, v in _DEFAULTS.items() if k != "lumi"}
_PER_BIN = ("staterror", "shapesys", "shapefactor")
#: the parameter-config keys each modifier type accepts (pyhf's rule)
_CONFIG_KEYS: Dict[str, Tuple[str, ...]] = {
    "normfactor": ("inits", "bounds", "fixed"),
    "shapefactor": ("inits", "bounds", "fixed"),
    "normsys": ("inits", "bounds", "fixed", "auxdata"),
    "histosys": ("inits", "bounds", "fixed", "auxdata"),
    "lumi": ("inits", "bounds", "fixed", "auxdata", "sigmas"),
    "staterror": ("inits", "bounds", "fixed", "auxdata", "sigmas"),
    "shapesys": ("inits", "bounds", "fixed", "auxdata", "factors"),
}
#: pyhf parameter-config key -> Model parameter setting
_SETTING = {"inits": "init", "bounds": "bounds", "auxdata": "aux", "sigmas": "sigma", "factors": "tau"}
_RTOL = 1e-12  # relative tolerance below which a value equals pyhf's default and is not written

Spec = Dict[str, Any]


# ====================================================================== shared helpers
def _floats(values: Any) -> np.ndarray:
    """A float64 1-D array of ``values`` (list, numpy array or tensor)."""
    if isinstance(values, Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=np.float64).reshape(-1)


def _zero_uncertainty_bins(channels: Sequence[Channel]) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]:
    r"""pyhf's default constraint widths of the per-bin constrained sets.

    Returns ``(staterror, shapesys)``: for every staterror set its relative widths
    :math:`\sqrt{\sum_s\sigma_{s,i}^2}/\sum_s\nu^0_{s,i}` (0 where there is nothing to
    constrain), for every shapesys set its :math:`\tau_i = (\nu^0_i/\sigma_i)^2` (0 where
    :math:`\sigma_i = 0` or :math:`\nu^0_i = 0`). A 0 marks a bin that both pyhf and the Model
    hold fixed at 1 (pyhf with a placeholder constraint, the Model without).
    """
    var: Dict[str, np.ndarray] = {}
    nom: Dict[str, np.ndarray] = {}
    tau: Dict[str, np.ndarray] = {}
    for ch in channels:
        for s in ch.samples:
            counts = _floats(s.counts)
            for m in s.modifiers:
                if isinstance(m, StatError):
                    var[m.name] = var.get(m.name, 0.0) + _floats(m.sigma) ** 2
                    nom[m.name] = nom.get(m.name, 0.0) + counts
                elif isinstance(m, ShapeSys):
                    sig = _floats(m.sigma)
                    valid = (sig > 0) & (counts > 0)
                    tau[m.name] = np.where(valid, (counts / np.where(valid, sig, 1.0)) ** 2, 0.0)
    stat = {}
    for name in var:
        ok = (var[name] > 0) & (nom[name] > 0)
        stat[name] = np.where(ok, np.sqrt(var[name]) / np.where(ok, nom[name], 1.0), 0.0)
    return stat, tau


# ====================================================================== from_pyhf
def read_json(path: Any, what: str) -> Any:
    """The JSON content of the file ``path``; an unreadable file or invalid JSON is a
    ``ValueError`` naming ``what`` and the file."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            return json.load(f)
    except OSError as e:
        raise ValueError(f"cannot read the {what} {os.fsdecode(path)!r}: {e}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"the {what} {os.fsdecode(path)!r} is not valid JSON: {e}") from None


def _load_spec(workspace: Any) -> Mapping:
    """The workspace specification as a mapping: a dict (or ``pyhf.Workspace``), a path to a
    JSON file, or an object with a dict ``.spec``."""
    if isinstance(workspace, (str, bytes, os.PathLike)):
        workspace = read_json(workspace, "workspace file")
    elif not isinstance(workspace, Mapping) and isinstance(getattr(workspace, "spec", None), Mapping):
        workspace = workspace.spec
    if not isinstance(workspace, Mapping):
        raise ValueError(f"a workspace must be a dict (a pyhf workspace specification), a path to its JSON file "
                         f"or an object with a dict .spec, got {type(workspace).__name__}")
    return workspace


def _get(obj: Any, key: str, kind: type, where: str) -> Any:
    """``obj[key]``, checked to be a ``kind`` (list or Mapping)."""
    if not isinstance(obj, Mapping) or key not in obj:
        raise ValueError(f"{where}: missing {key!r}")
    value = obj[key]
    if not isinstance(value, kind) or isinstance(value, (str, bytes)):
        raise ValueError(f"{where}: {key!r} must be a {'list' if kind is list else 'dict'}, "
                         f"got {type(value).__name__}")
    return value


def _name(obj: Any, where: str) -> str:
    if not isinstance(obj, Mapping) or not isinstance(obj.get("name"), str) or not obj["name"]:
        raise ValueError(f"{where}: every entry needs a non-empty string 'name', got {obj!r:.80}")
    return obj["name"]


def _array(values: Any, n: Optional[int], what: str) -> np.ndarray:
    """Finite float64 numbers, ``n`` of them unless None."""
    if isinstance(values, (str, bytes, Mapping)) or values is None:
        raise ValueError(f"{what} must be a list of numbers, got {values!r:.80}")
    try:
        arr = np.array(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a list of numbers, got {values!r:.80}") from None
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{what} must be a non-empty list of numbers, got shape {arr.shape}")
    if n is not None and arr.size != n:
        raise ValueError(f"{what} has {arr.size} values, but the sample has {n} bins")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} contains NaN or inf (bins {np.nonzero(~np.isfinite(arr))[0].tolist()})")
    return arr


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def _modifier(mod: Any, nbins: int, where: str) -> Modifier:
    """One modifier of the JSON spec as a :class:`Modifier`; ``where`` names its sample."""
    name = _name(mod, f"{where}: modifier")
    mtype = mod.get("type")
    here = f"{where}, modifier {name!r} ({mtype})"
    data = mod.get("data")
    try:
        if mtype == "normfactor":
            return NormFactor(name)
        if mtype == "shapefactor":
            return ShapeFactor(name)
        if mtype == "lumi":
            return Lumi(name)
        if mtype == "normsys":
            if not isinstance(data, Mapping) or "hi" not in data or "lo" not in data:
                raise ValueError(f"data must be {{'hi': factor, 'lo': factor}}, got {data!r:.80}")
            return NormSys(name, hi=_number(data["hi"], "hi"), lo=_number(data["lo"], "lo"))
        if mtype == "histosys":
            if not isinstance(data, Mapping) or "hi_data" not in data or "lo_data" not in data:
                raise ValueError(f"data must be {{'hi_data': [...], 'lo_data': [...]}}, got {data!r:.80}")
            return HistoSys(name, hi=_array(data["hi_data"], nbins, "hi_data"),
                            lo=_array(data["lo_data"], nbins, "lo_data"))
        if mtype == "staterror":
            return StatError(name, sigma=_array(data, nbins, "data (absolute uncertainties)"))
        if mtype == "shapesys":
            return ShapeSys(name, sigma=_array(data, nbins, "data (absolute uncertainties)"))
    except ValueError as e:
        raise ValueError(f"{here}: {e}") from None
    raise ValueError(f"{here}: unsupported modifier type {mtype!r}; supported: normfactor, normsys, histosys, "
                     "lumi, staterror, shapesys, shapefactor")


def _channels(spec: Mapping) -> List[Channel]:
    """The channels of the spec, in its order, as :class:`Channel` objects."""
    channels = []
    for ch in _get(spec, "channels", list, "workspace"):
        cname = _name(ch, "workspace channels")
        samples = []
        for s in _get(ch, "samples", list, f"channel {cname!r}"):
            sname = _name(s, f"channel {cname!r}: sample")
            where = f"channel {cname!r}, sample {sname!r}"
            counts = s.get("data")
            try:
                counts = _array(counts, None, "data")
            except ValueError as e:
                raise ValueError(f"{where}: {e}") from None
            if samples and counts.size != samples[0].counts.size:
                raise ValueError(f"{where}: {counts.size} bins, but sample {samples[0].name!r} has "
                                 f"{samples[0].counts.size}")
            if np.any(counts < 0):
                raise ValueError(f"{where}: negative nominal counts in bins {np.nonzero(counts < 0)[0].tolist()}")
            mods = s.get("modifiers", [])
            if not isinstance(mods, list):
                raise ValueError(f"{where}: 'modifiers' must be a list, got {type(mods).__name__}")
            samples.append(Sample(sname, counts, [_modifier(m, counts.size, where) for m in mods]))
        channels.append(Channel(cname, samples))
    return channels


def _measurement(spec: Mapping, name: Optional[str]) -> Mapping:
    measurements = _get(spec, "measurements", list, "workspace")
    names = [_name(m, "workspace measurements") for m in measurements]
    if not measurements:
        raise ValueError("the workspace defines no measurement")
    if name is None:
        meas = measurements[0]
    elif name in names:
        meas = measurements[names.index(name)]
    else:
        raise ValueError(f"unknown measurement {name!r}: the workspace defines {names}")
    _get(meas, "config", Mapping, f"measurement {meas['name']!r}")
    return meas


def _observed(spec: Mapping, channels: Sequence[Channel]) -> Tensor:
    """The observations, checked per channel, concatenated in channel order."""
    obs: Dict[str, Any] = {}
    for o in _get(spec, "observations", list, "workspace"):
        oname = _name(o, "workspace observations")
        if oname in obs:
            raise ValueError(f"observations of channel {oname!r} are given twice")
        obs[oname] = o.get("data")
    known = [c.name for c in channels]
    extra = [n for n in obs if n not in known]
    if extra:
        raise ValueError(f"observations for unknown channels {extra}: the workspace's channels are {known}")
    parts = []
    for ch in channels:
        nb = _floats(ch.samples[0].counts).size
        if ch.name not in obs:
            raise ValueError(f"channel {ch.name!r} has no observations")
        try:
            data = _array(obs[ch.name], None, "data")
        except ValueError as e:
            raise ValueError(f"observations of channel {ch.name!r}: {e}") from None
        if data.size != nb:
            raise ValueError(f"observations of channel {ch.name!r}: {data.size} bins, but the channel has {nb}")
        if np.any(data < 0):
            raise ValueError(f"observations of channel {ch.name!r}: negative counts in bins "
                             f"{np.nonzero(data < 0)[0].tolist()}")
        parts.append(data)
    return torch.as_tensor(np.concatenate(parts), dtype=DTYPE)


def _parameter_sets(channels: Sequence[Channel]) -> Dict[str, Tuple[str, int]]:
    """Every parameter set of the channels: name -> (modifier type, number of parameters)."""
    sets: Dict[str, Tuple[str, int]] = {}
    for ch in channels:
        for s in ch.samples:
            nb = _floats(s.counts).size
            for m in s.modifiers:
                n = nb if m.per_bin else 1
                where = f"channel {ch.name!r}, sample {s.name!r}, modifier {m.name!r} ({m.type})"
                if m.name in sets:
                    kind, prev = sets[m.name]
                    if kind != m.type and not (kind in _ALPHA and m.type in _ALPHA):
                        raise ValueError(f"{where}: {m.name!r} is a {m.type} here but a {kind} elsewhere; a "
                                         "parameter has one kind (only normsys and histosys may share one)")
                    if n != prev:
                        raise ValueError(f"{where}: {n} bins here, {prev} elsewhere; a per-bin parameter set has "
                                         "one number of bins")
                if m.name not in sets or m.type == "histosys":
                    sets[m.name] = (m.type, n)
    return sets


def _config_values(conf: Mapping, key: str, n: int, where: str) -> list:
    """A list-valued parameter-config entry, checked to hold ``n`` values."""
    v = conf[key]
    if not isinstance(v, (list, tuple)):
        raise ValueError(f"{where}: {key!r} must be a list, got {v!r:.80}")
    if len(v) != n:
        raise ValueError(f"{where}: {key!r} has {len(v)} values, but the parameter set has {n}")
    if key == "bounds":
        out = []
        for b in v:
            if not (isinstance(b, (list, tuple)) and len(b) == 2):
                raise ValueError(f"{where}: 'bounds' must be a list of [low, high] pairs, got {v!r:.80}")
            out.append((_number(b[0], f"{where}: bound"), _number(b[1], f"{where}: bound")))
        return out
    return [_number(x, f"{where}: {key!r} value") for x in v]


def _settings(measurement: Mapping, channels: Sequence[Channel]) -> Dict[str, Dict[str, Any]]:
    """The Model's ``parameters=`` settings from the measurement's parameter configs."""
    sets = _parameter_sets(channels)
    mname = measurement["name"]
    confs = _get(measurement["config"], "parameters", list, f"measurement {mname!r}: config")
    stat_width, shapesys_tau = _zero_uncertainty_bins(channels)
    settings: Dict[str, Dict[str, Any]] = {}
    for conf in confs:
        pname = _name(conf, f"measurement {mname!r}: parameter config")
        if pname not in sets:
            continue  # as pyhf: configs of absent parameters are ignored
        if pname in settings:
            raise ValueError(f"measurement {mname!r}: parameter {pname!r} is configured twice")
        kind, n = sets[pname]
        where = f"measurement {mname!r}, parameter {pname!r} ({kind})"
        bad = [k for k in conf if k != "name" and k not in _CONFIG_KEYS[kind]]
        if bad:
            raise ValueError(f"{where}: {kind} parameters take no {bad} (allowed: {list(_CONFIG_KEYS[kind])})")
        one: Dict[str, Any] = {}
        for key in conf:
            if key == "name":
                continue
            if key == "fixed":
                if not isinstance(conf[key], bool):
                    raise ValueError(f"{where}: 'fixed' must be true or false, got {conf[key]!r}")
                one["fixed"] = conf[key]
                continue
            vals = _config_values(conf, key, n, where)
            one[_SETTING[key]] = vals if kind in _PER_BIN else vals[0]
        if kind == "staterror" and one.get("fixed") is False and np.any(stat_width[pname] == 0):
            one.update(_freed_staterror(one, stat_width[pname]))
        if kind == "shapesys" and one.get("fixed") is False:
            held = np.nonzero(shapesys_tau[pname] == 0)[0].tolist()
            if held:
                raise ValueError(f"{where}: 'fixed': false frees bins {held}, which have no uncertainty or no "
                                 "nominal counts; pyhf gives them a placeholder Poisson constraint, which the Model "
                                 "cannot express")
        settings[pname] = one
    return settings


def _freed_staterror(one: Mapping[str, Any], width: np.ndarray) -> Dict[str, Any]:
    """Settings that give every bin of a freed staterror set pyhf's Gaussian (a bin without
    uncertainty gets pyhf's placeholder: width 1)."""
    sigma = one.get("sigma", np.where(width > 0, width, 1.0).tolist())
    aux = one.get("aux", [1.0] * width.size)
    return {"constraint": ["normal"] * width.size, "sigma": list(sigma), "aux": list(aux)}


def from_pyhf(workspace: Any, measurement: Optional[str] = None, histosys_code: Union[int, str] = "4p",
              normsys_code: Union[int, str] = 4) -> Tuple[Model, Tensor]:
    """A :class:`~inferno.likelihood.Model` and its observations from a pyhf workspace.

    Args:
        workspace: the workspace specification (a dict or ``pyhf.Workspace``), a path to its
            JSON file, or an object with a dict ``.spec``.
        measurement: name of the measurement (POI and parameter configs); None: the first.
        histosys_code: interpolation code of the histosys modifiers (0, 2, '4p'; pyhf's
            names ``'code0'`` ... work too). pyhf's default is '4p'.
        normsys_code: interpolation code of the normsys modifiers (1 or 4; pyhf's default 4).

    Returns:
        ``(model, observed)``: the Model, with the channels in the workspace's order (pyhf
        sorts them by name), and the observations as one flat float64 tensor in that order.

    Raises:
        ValueError: naming the channel, sample, modifier, measurement or parameter at fault
            (unsupported modifier type, unknown measurement or POI, data of the wrong length,
            negative or non-finite counts, missing observations, ...).
    """
    spec = _load_spec(workspace)
    channels = _channels(spec)
    if not channels:
        raise ValueError("the workspace has no channels")
    meas = _measurement(spec, measurement)
    settings = _settings(meas, channels)
    poi = meas["config"].get("poi")
    if not isinstance(poi, str):
        raise ValueError(f"measurement {meas['name']!r}: 'poi' must be a parameter name, got {poi!r}")
    sets = _parameter_sets(channels)
    if poi and poi not in sets:
        raise ValueError(f"measurement {meas['name']!r}: the POI {poi!r} is not a parameter of the workspace "
                         f"(parameters: {sorted(sets)})")
    if poi and sets[poi][1] != 1:
        raise ValueError(f"measurement {meas['name']!r}: the POI {poi!r} is a {sets[poi][0]} with "
                         f"{sets[poi][1]} parameters; a POI must be one parameter")
    model = Model(channels, poi=poi or None, parameters=settings, histosys_code=histosys_code,
                  normsys_code=normsys_code)
    observed = _observed(spec, channels)
    return model, observed


from .pyhf_export import pyhf_modifier_settings, to_pyhf  # noqa: E402  (the export half; it uses the helpers above)
