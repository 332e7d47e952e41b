r"""Export of the binned likelihood of :mod:`inferno.inference` to a HistFactory workspace
(the JSON format of `pyhf <https://pyhf.readthedocs.io>`_), so an analysis can continue in
pyhf or cabinetry.

The export builds a plain ``dict`` and does not need pyhf; :func:`pyhf_model` (which does,
``pip install inferno[pyhf]``) turns it into a ``pyhf.Model`` with the matching
interpolation code.

How the model maps onto HistFactory (one channel):

* sample ``signal``: data :math:`\mu_\mathrm{true} f_s`, a ``normfactor`` POI ``mu`` -- the
  signal *strength* :math:`s / \mu_\mathrm{true}` (inferno's POI is the yield :math:`s`);
* sample ``background``: data :math:`b_\mathrm{true} f_b`;
* shape nuisance :math:`\alpha_k` with constraint ``Normal(c, sigma)``: a ``histosys``
  ``shape_names[k]`` on every process it moves, whose parameter is
  :math:`\alpha'_k = \alpha_k / \sigma` (pyhf's histosys constraint has unit width) with
  auxdata :math:`c/\sigma`.  Its templates are those at :math:`\alpha_k = \pm\sigma`:
  :math:`f^0 + \sigma(f^\pm - f^0)` for code 0 (exact), the quadratic
  :math:`f^0 + a\sigma^2 \pm b\sigma` for code 2 (pyhf then agrees with inferno wherever
  every :math:`|\alpha_k| \le \min(1, \sigma)`: pyhf's code 2 extrapolation beyond
  :math:`|\alpha'|=1` differs, pyhf issue 2729), and :math:`f^\pm` for code ``'4p'`` (only
  :math:`\sigma = 1` is exact, other widths raise).  A free shape nuisance (``None``) is
  exported, for code 0 only, with a wide constraint of width ``free_shape_sigma``;
* a background-rate nuisance ``Normal(c, sigma)`` on the offset :math:`b - b_\mathrm{true}`:
  HistFactory's ``lumi`` modifier (the schema's only Gaussian-constrained multiplicative
  normalisation; its name is fixed to ``lumi``) on the background only, with
  :math:`\mathrm{lumi} = b / b_\mathrm{true}`, auxdata :math:`1 + c/b_\mathrm{true}`, width
  :math:`\sigma / b_\mathrm{true}`.  (Not a ``normsys``: pyhf 0.7.6 allows it only the
  exponential codes 1 and 4.  Nor a ``histosys`` with templates
  :math:`b_\mathrm{true} f_b (1 \pm \sigma / b_\mathrm{true})`: histosys shifts add, so
  with background shape nuisances it would miss the cross term
  :math:`\beta\,\sum_k \delta_k(\alpha_k)` of :math:`(b_\mathrm{true} + \beta) f_b(\vec\alpha)`.)
* a free background rate (``nonaux_b_norm``): a ``normfactor`` ``b_norm`` = :math:`b / b_\mathrm{true}`;
* a signal-rate nuisance ``Normal(c, sigma)`` (additive, :math:`s = \mu + \sigma^s`): a
  sample ``signal_norm_j`` with zero nominal and a ``histosys`` ``s_norm_j`` of templates
  :math:`\pm\sigma f_s` (exact only without signal shape nuisances, else ValueError).

With Gaussian constraints the two NLLs differ by a constant:
:math:`-\ln L_\mathrm{inferno} = -\ln L_\mathrm{pyhf} + \sum_k \ln\sigma_k + \ln b_\mathrm{true}\,
[\text{if a b-rate constraint}]`, where :math:`k` runs over the constrained shape and
signal-rate nuisances; :func:`nll_offset` returns it.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch.distributions import Distribution, Normal

from .inference import _resolve_data

__all__ = ["to_pyhf_workspace", "pyhf_model", "nll_offset", "PYHF_INTERP_CODES"]

#: pyhf's name of inferno's interpolation codes (for ``histosys``).
PYHF_INTERP_CODES: Dict[Union[int, str], str] = {0: "code0", 2: "code2", "4p": "code4p"}


def _normal_params(d: Distribution, what: str) -> Tuple[float, float]:
    if type(d) is not Normal:
        raise ValueError(f"{what}: only Normal constraints can be exported to HistFactory, got {type(d).__name__}")
    return float(d.loc), float(d.scale)


def _floats(t: torch.Tensor) -> List[float]:
    return [float(v) for v in t.detach().cpu().reshape(-1)]


def to_pyhf_workspace(f_s_nom: Any, f_b_nom: Any, n_obs: Any, mu_true: float,
                      f_s_up: Any = None, f_s_dw: Any = None, f_b_up: Any = None, f_b_dw: Any = None,
                      shape_aux: Optional[Sequence[Optional[Distribution]]] = None,
                      s_norm_aux: Optional[Sequence[Distribution]] = None,
                      b_norm_aux: Optional[Sequence[Distribution]] = None,
                      nonaux_b_norm: bool = False, b_true: Optional[float] = None,
                      interp_code: Union[int, str] = 2, shape_names: Optional[Sequence[str]] = None,
                      channel_name: str = "inferno", measurement_name: str = "inferno",
                      poi_bounds: Tuple[float, float] = (0.0, 10.0), free_shape_sigma: float = 1e3) -> Dict[str, Any]:
    r"""HistFactory workspace (a JSON-serialisable ``dict``) of the model of
    :func:`~inferno.inference.calc_profile`; see the module docstring for the mapping.

    Args:
        f_s_nom, f_b_nom, f_s_up, f_s_dw, f_b_up, f_b_dw, shape_aux, s_norm_aux, b_norm_aux,
        nonaux_b_norm, b_true, interp_code: as in :func:`~inferno.inference.calc_profile`.
        n_obs: observed counts ``(n_bins,)``, or a scalar total for Asimov data.
        mu_true: nominal signal yield (> 0), the yield at signal strength ``mu = 1``.
        shape_names: names of the shape nuisances (default ``alpha_0``, ...).
        channel_name, measurement_name: names in the workspace.
        poi_bounds: bounds of the signal strength.
        free_shape_sigma: constraint width standing in for a free shape nuisance (code 0).

    Returns:
        the workspace ``dict`` (``pyhf.Workspace(spec)`` validates it).

    Raises:
        ValueError: bad inputs (as in ``calc_profile``), non-Normal constraints, or a model
            HistFactory cannot represent exactly (see the module docstring).
    """
    kw = dict(f_s_nom=f_s_nom, f_b_nom=f_b_nom, f_s_up=f_s_up, f_s_dw=f_s_dw, f_b_up=f_b_up, f_b_dw=f_b_dw,
              shape_aux=shape_aux, s_norm_aux=s_norm_aux, b_norm_aux=b_norm_aux, nonaux_b_norm=nonaux_b_norm,
              interp_code=interp_code)
    model, n = _resolve_data(kw, n_obs, mu_true, b_true)
    if n.dim() != 1:
        raise ValueError(f"n_obs must be one data set (n_bins,), got shape {tuple(n.shape)}")
    mu_true = float(mu_true)
    if not (math.isfinite(mu_true) and mu_true > 0):
        raise ValueError(f"mu_true must be finite and > 0 (the yield at signal strength 1), got {mu_true}")
    K, code, b0 = model.K, model.code, model.b_true
    names = list(shape_names) if shape_names is not None else [f"alpha_{k}" for k in range(K)]
    if len(names) != K or len(set(names)) != K:
        raise ValueError(f"shape_names must be {K} distinct names, got {names}")
    reserved = {"mu", "lumi", "b_norm"} | {f"s_norm_{j}" for j in range(model.S)}
    if reserved & set(names):
        raise ValueError(f"shape_names must not use the reserved names {sorted(reserved & set(names))}")
    if len(model.b_norm_aux) > 1 or (model.b_norm_aux and model.nonaux_b_norm):
        raise ValueError("at most one background-rate nuisance can be exported exactly "
                         "(HistFactory normalisations multiply, inferno's offsets add)")
    if model.S and model.s_shapes is not None:
        raise ValueError("signal-rate nuisances together with signal shape nuisances cannot be "
                         "represented exactly in HistFactory")

    params: List[Dict[str, Any]] = [{"name": "mu", "bounds": [[float(poi_bounds[0]), float(poi_bounds[1])]], "inits": [1.0]}]
    histo: List[Tuple[str, float]] = []  # (name, sigma) per shape nuisance
    for k, d in enumerate(model.shape_aux):
        if d is None:
            if code != 0:
                raise ValueError(f"free shape nuisance {names[k]!r}: only interpolation code 0 can be exported "
                                 "(as a wide Gaussian); constrain it or use code 0")
            sigma, loc = float(free_shape_sigma), 0.0
        else:
            loc, sigma = _normal_params(d, f"shape_aux[{k}]")
        if code == "4p" and abs(sigma - 1.0) > 1e-12:
            raise ValueError(f"shape nuisance {names[k]!r}: code '4p' can be exported exactly only with "
                             f"unit constraint width, got sigma = {sigma}")
        histo.append((names[k], sigma))
        params.append({"name": names[k], "auxdata": [loc / sigma], "inits": [loc / sigma]})

    def histosys(nomv: torch.Tensor, sh: Tuple[torch.Tensor, torch.Tensor], yld: float) -> List[Dict[str, Any]]:
        mods = []
        for k, (name, sigma) in enumerate(histo):
            d_up, d_dw = sh[0][k] - nomv, nomv - sh[1][k]
            if code == 2:
                qa, qb = 0.5 * (d_up - d_dw), 0.5 * (d_up + d_dw)
                hi, lo = nomv + qa * sigma**2 + qb * sigma, nomv + qa * sigma**2 - qb * sigma
            else:  # code 0 (any sigma) or 4p (sigma == 1)
                hi, lo = nomv + sigma * d_up, nomv - sigma * d_dw
            mods.append({"name": name, "type": "histosys",
                         "data": {"hi_data": _floats(yld * hi), "lo_data": _floats(yld * lo)}})
        return mods

    sig_mods: List[Dict[str, Any]] = [{"name": "mu", "type": "normfactor", "data": None}]
    if model.s_shapes is not None:
        sig_mods += histosys(model.f_s_nom, model.s_shapes, mu_true)
    samples = [{"name": "signal", "data": _floats(mu_true * model.f_s_nom), "modifiers": sig_mods}]
    for j, d in enumerate(model.s_norm_aux):
        loc, sigma = _normal_params(d, f"s_norm_aux[{j}]")
        samples.append({"name": f"signal_norm_{j}", "data": [0.0] * model.n_bins,
                        "modifiers": [{"name": f"s_norm_{j}", "type": "histosys",
                                       "data": {"hi_data": _floats(sigma * model.f_s_nom),
                                                "lo_data": _floats(-sigma * model.f_s_nom)}}]})
        params.append({"name": f"s_norm_{j}", "auxdata": [loc / sigma], "inits": [loc / sigma]})
    bkg_mods: List[Dict[str, Any]] = []
    if model.b_shapes is not None:
        bkg_mods += histosys(model.f_b_nom, model.b_shapes, b0)
    if model.b_norm_aux:
        loc, sigma = _normal_params(model.b_norm_aux[0], "b_norm_aux[0]")
        centre, width = 1.0 + loc / b0, sigma / b0
        bkg_mods.append({"name": "lumi", "type": "lumi", "data": None})
        params.append({"name": "lumi", "auxdata": [centre], "sigmas": [width], "inits": [centre],
                       "bounds": [[max(0.0, centre - 10 * width), centre + 10 * width]]})
    if model.nonaux_b_norm:
        bkg_mods.append({"name": "b_norm", "type": "normfactor", "data": None})
        params.append({"name": "b_norm", "inits": [1.0], "bounds": [[0.0, 10.0]]})
    samples.append({"name": "background", "data": _floats(b0 * model.f_b_nom), "modifiers": bkg_mods})
    return {
        "channels": [{"name": channel_name, "samples": samples}],
        "observations": [{"name": channel_name, "data": _floats(n)}],
        "measurements": [{"name": measurement_name, "config": {"poi": "mu", "parameters": params}}],
        "version": "1.0.0",
    }


def nll_offset(shape_aux: Optional[Sequence[Optional[Distribution]]] = None,
               s_norm_aux: Optional[Sequence[Distribution]] = None,
               b_norm_aux: Optional[Sequence[Distribution]] = None,
               b_true: Optional[float] = None) -> float:
    r"""Constant :math:`C` with :math:`-\ln L_\mathrm{inferno} = -\ln L_\mathrm{pyhf} + C` for a
    workspace from :func:`to_pyhf_workspace` (at corresponding parameter values).

    It comes from the normalisations of the Gaussian constraints (pyhf writes them in units
    of the rescaled parameters):

    .. math::

        C = \sum_{k\ \mathrm{constrained}} \ln\sigma_k + \ln b_\mathrm{true}\,[\text{b-rate
        constraint}] - \tfrac12 \ln(2\pi)\, n_\mathrm{free\ shape},

    where a free shape nuisance's wide stand-in constraint adds, besides the constant, the
    negligible :math:`\alpha^2 / (2\sigma_\mathrm{free}^2)` to pyhf's NLL.

    Args: the constraints and ``b_true`` passed to :func:`to_pyhf_workspace`.
    """
    c = 0.0
    for d in list(shape_aux or []):
        c += -0.5 * math.log(2 * math.pi) if d is None else math.log(_normal_params(d, "shape_aux")[1])
    for d in list(s_norm_aux or []):
        c += math.log(_normal_params(d, "s_norm_aux")[1])
    b_aux = list(b_norm_aux or [])
    if b_aux:
        if b_true is None:
            raise ValueError("b_true is needed with a background-rate constraint")
        c += math.log(float(b_true))
    return c


def pyhf_model(spec: Dict[str, Any], interp_code: Union[int, str] = 2, **model_kwargs: Any) -> Tuple[Any, Any]:
    r"""``(pyhf.Model, data)`` of a workspace, with the ``histosys`` interpolation code that
    matches inferno's ``interp_code`` (``normsys`` is not used by the export).

    Requires pyhf (``pip install inferno[pyhf]``).
    """
    try:
        import pyhf
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("pyhf_model needs pyhf: pip install 'inferno[pyhf]'") from e
    from .interp import _check_code

    code = _check_code(interp_code)
    ws = pyhf.Workspace(spec)
    model = ws.model(modifier_settings={"histosys": {"interpcode": PYHF_INTERP_CODES[code]},
                                        "normsys": {"interpcode": "code4"}}, **model_kwargs)
    return model, ws.data(model)
