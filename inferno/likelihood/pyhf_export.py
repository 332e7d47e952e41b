"""pyhf JSON out: :func:`to_pyhf` writes a :class:`~inferno.likelihood.Model` as a HistFactory
workspace, refusing what HistFactory cannot represent exactly; :func:`pyhf_modifier_settings`
gives pyhf the interpolation codes the model uses. The format and the mapping are described in
:mod:`inferno.likelihood.workspace`, which reads it back (:func:`~inferno.likelihood.from_pyhf`)."""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from . import interpolation as interp
from .model import Channel, Model
from .modifiers import HistoSys, Lumi, Modifier, NormFactor, NormSys, ShapeFactor, ShapeSys, StatError
from .parameters import Parameter
from .workspace import _PYHF_DEFAULTS, _RTOL, PYHF_CODES, SCHEMA_VERSION, Spec, _floats, _zero_uncertainty_bins

__all__ = ["to_pyhf", "pyhf_modifier_settings"]


def _modifier_spec(m: Modifier, where: str) -> Spec:
    if isinstance(m, NormSys):
        data: Any = {"hi": float(m.hi), "lo": float(m.lo)}
    elif isinstance(m, HistoSys):
        data = {"hi_data": _floats(m.hi).tolist(), "lo_data": _floats(m.lo).tolist()}
    elif isinstance(m, (StatError, ShapeSys)):
        data = _floats(m.sigma).tolist()
    elif isinstance(m, Lumi):
        if m.name != "lumi":
            raise ValueError(f"{where}: lumi modifier {m.name!r}: pyhf's schema names the lumi modifier 'lumi'; "
                             "rename it")
        data = None
    elif isinstance(m, (NormFactor, ShapeFactor)):
        data = None
    else:
        raise ValueError(f"{where}: modifier {m.name!r} of type {type(m).__name__} has no pyhf equivalent")
    return {"name": m.name, "type": m.type, "data": data}


def _channel_spec(ch: Channel) -> Spec:
    samples = []
    for s in ch.samples:
        where = f"channel {ch.name!r}, sample {s.name!r}"
        samples.append({"name": s.name, "data": _floats(s.counts).tolist(),
                        "modifiers": [_modifier_spec(m, where) for m in s.modifiers]})
    return {"name": ch.name, "samples": samples}


def _observation_specs(model: Model, observed: Any) -> List[Spec]:
    n = model.main_data(observed)
    if n.dim() != 1:
        raise ValueError(f"observed data must be one data set of {model.n_bins} bins (no batch dimensions), "
                         f"got shape {tuple(n.shape)}")
    values = n.detach().cpu().numpy()
    return [{"name": ch, "data": values[sl].tolist()} for ch, sl in model.channel_bins.items()]


def _describe(c: Any) -> str:
    return "no constraint" if c is None else f"a {c!r} constraint" if isinstance(c, str) \
        else f"a {type(c).__name__} distribution constraint"


def _differs(values: Sequence[float], default: Sequence[float]) -> bool:
    return not np.allclose(np.asarray(values, float), np.asarray(default, float), rtol=_RTOL, atol=0.0)


def _constraint_config(kind: str, params: Sequence[Parameter], default_width: Optional[np.ndarray]) -> Spec:
    """``auxdata`` / ``sigmas`` / ``factors`` of one parameter set, where they differ from
    pyhf's defaults; ValueError where pyhf cannot express the Model's constraint."""
    out: Spec = {}
    if kind in ("normfactor", "shapefactor"):
        for p in params:
            if p.constraint is not None:
                raise ValueError(f"parameter {p.name!r} ({kind}): pyhf's {kind} is unconstrained, so "
                                 f"{_describe(p.constraint)} cannot be exported")
        return out
    if kind in ("normsys", "histosys", "lumi"):
        p = params[0]
        if p.constraint != "normal":
            raise ValueError(f"parameter {p.name!r} ({kind}): pyhf constrains it by a Gaussian, so "
                             f"{_describe(p.constraint)} cannot be exported")
        if kind == "lumi":
            return {"auxdata": [float(p.aux)], "sigmas": [float(p.sigma)]}
        if p.sigma != 1.0:
            raise ValueError(f"parameter {p.name!r} ({kind}): pyhf's {kind} constraint has width 1, this one has "
                             f"width {p.sigma} (rescale the parameter so that its constraint has unit width)")
        return {"auxdata": [float(p.aux)]} if p.aux != 0.0 else out
    # per-bin constrained sets: staterror (normal), shapesys (poisson)
    want = "normal" if kind == "staterror" else "poisson"
    held = default_width == 0
    aux, width = [], []
    for i, p in enumerate(params):
        if p.constraint == want:
            aux.append(float(p.aux))
            width.append(float(p.sigma if want == "normal" else p.tau))
        elif p.constraint is None and held[i] and p.fixed:
            aux.append(1.0)  # pyhf's placeholder constraint of a bin without uncertainty
            width.append(1.0)
        else:
            reason = "it is free" if p.constraint is None else "it has " + _describe(p.constraint)
            raise ValueError(f"parameter {p.name!r} ({kind}): pyhf gives every {kind} bin a {want} constraint, "
                             f"but {reason}")
    default_aux = [1.0 if h else (1.0 if want == "normal" else w) for h, w in zip(held, default_width)]
    default = np.where(held, 1.0, default_width)
    if _differs(aux, default_aux):
        out["auxdata"] = aux
    if _differs(width, default):
        out["sigmas" if want == "normal" else "factors"] = width
    return out


def _fixed_config(kind: str, params: Sequence[Parameter], default_width: Optional[np.ndarray]) -> Spec:
    fixed = [p.fixed for p in params]
    default = [False] * len(params) if default_width is None else (default_width == 0).tolist()
    if fixed == default:
        return {}
    if all(fixed) or not any(fixed):
        return {"fixed": all(fixed)}
    raise ValueError(f"parameter set {params[0].name.split('[')[0]!r} ({kind}): bins "
                     f"{[i for i, f in enumerate(fixed) if f]} are fixed and the others not; pyhf's 'fixed' is one "
                     "flag for the whole set")


def _parameter_config(model: Model, name: str, widths: Mapping[str, np.ndarray]) -> Optional[Spec]:
    """The measurement's parameter config of the set ``name`` (None: all pyhf's defaults)."""
    sl = model.param_sets[name]
    params = model.parameters[sl]
    kind = params[0].kind
    default_width = widths.get(name)
    conf: Spec = {"name": name}
    inits = [float(p.init) for p in params]
    bounds = [[float(b) for b in p.bounds] for p in params]
    for p in params:
        if not all(math.isfinite(b) for b in p.bounds):
            raise ValueError(f"parameter {p.name!r} ({kind}): bounds {p.bounds} are not finite; pyhf's JSON holds "
                             "finite bounds only")
    if kind == "lumi":
        conf.update(inits=inits, bounds=bounds)
    else:
        init0, bounds0 = _PYHF_DEFAULTS[kind]
        if _differs(inits, [init0] * len(params)):
            conf["inits"] = inits
        if _differs(np.ravel(bounds), np.ravel([bounds0] * len(params))):
            conf["bounds"] = bounds
    conf.update(_fixed_config(kind, params, default_width))
    conf.update(_constraint_config(kind, params, default_width))
    return conf if len(conf) > 1 else None


def to_pyhf(model: Model, observed: Any, measurement_name: str = "measurement") -> Spec:
    """A pyhf workspace specification (a JSON-serialisable dict) of ``model`` and its
    observations.

    The spec holds the channels (in the Model's order), the observations and one
    measurement with the Model's POI and its parameter settings (``inits``, ``bounds``,
    ``fixed``, ``auxdata``, ``sigmas``, ``factors`` wherever they differ from pyhf's defaults;
    ``lumi`` always). Interpolation codes are not part of the format: build the pyhf model
    with ``pyhf.Workspace(spec).model(modifier_settings=pyhf_modifier_settings(model))``.

    Args:
        model: the Model.
        observed: its observed counts, a flat array over all channels (in channel order) or a
            dict ``{channel: counts}``.
        measurement_name: name of the measurement.

    Raises:
        ValueError: naming the parameter (or modifier) whose constraint or setting pyhf
            cannot express, and why (see the module docstring).
    """
    if not isinstance(measurement_name, str) or not measurement_name:
        raise ValueError(f"measurement_name must be a non-empty string, got {measurement_name!r}")
    if len(model.poi_names) > 1:
        raise ValueError(f"pyhf measurements have one POI, the model has {model.poi_names}")
    channels = [_channel_spec(ch) for ch in model.channels]
    observations = _observation_specs(model, observed)
    stat, tau = _zero_uncertainty_bins(model.channels)
    widths = {**stat, **tau}
    configs = [c for c in (_parameter_config(model, name, widths) for name in model.param_sets) if c is not None]
    poi = model.poi_names[0] if model.poi_names else ""
    return {"channels": channels, "observations": observations,
            "measurements": [{"name": measurement_name, "config": {"poi": poi, "parameters": configs}}],
            "version": SCHEMA_VERSION}


def _effective_codes(model: Model, cls: type, default: Union[int, str], kind: str) -> Dict[Union[int, str], List[str]]:
    """Interpolation code -> the places (channel/sample/modifier) that use it."""
    codes: Dict[Union[int, str], List[str]] = {}
    for ch in model.channels:
        for s in ch.samples:
            for m in s.modifiers:
                if isinstance(m, cls):
                    code = interp.check_code(default if m.code is None else m.code, kind)
                    codes.setdefault(code, []).append(f"{ch.name}/{s.name}/{m.name}")
    return codes


def pyhf_modifier_settings(model: Model) -> Dict[str, Dict[str, str]]:
    """The ``modifier_settings`` with which pyhf builds the model with ``model``'s
    interpolation codes: ``pyhf.Workspace(spec).model(modifier_settings=...)``.

    pyhf sets one code per modifier type, so all normsys modifiers must use one code and
    all histosys modifiers one. (The Model's histosys code 2 agrees with pyhf's ``code2``
    only inside :math:`|\\alpha| \\le 1`.)

    Raises:
        ValueError: if the model's modifiers of one type use different codes; the message
            lists where each is used.
    """
    out: Dict[str, Dict[str, str]] = {}
    for kind, cls, default in (("normsys", NormSys, model.normsys_code), ("histosys", HistoSys, model.histosys_code)):
        codes = _effective_codes(model, cls, default, kind)
        if len(codes) > 1:
            where = "; ".join(f"code {c!r}: {', '.join(places)}" for c, places in codes.items())
            raise ValueError(f"pyhf uses one interpolation code for all {kind} modifiers, this model mixes them "
                             f"({where})")
        code = next(iter(codes)) if codes else interp.check_code(default, kind)
        out[kind] = {"interpcode": PYHF_CODES[code]}
    return out
