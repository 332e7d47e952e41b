"""The one-channel HistFactory (pyhf JSON) export of the pytorch_inferno-style model
(:func:`to_pyhf_workspace`), the constant that relates its NLL to pyhf's (:func:`nll_offset`) and
the pyhf model of a workspace (:func:`pyhf_model`). The general export is
:func:`inferno.likelihood.to_pyhf`."""
from __future__ import annotations

import math
from typing import Any, Dict, Optional, Sequence, Tuple, Union

from torch.distributions import Distribution

from ..likelihood import to_pyhf
from ..likelihood.interpolation import check_code
from .paper_model import _normal_params, _resolve_data

__all__ = ["to_pyhf_workspace", "pyhf_model", "nll_offset", "PYHF_INTERP_CODES"]

#: pyhf's name of inferno's interpolation codes (for ``histosys``).
PYHF_INTERP_CODES: Dict[Union[int, str], str] = {0: "code0", 2: "code2", "4p": "code4p"}


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
    :func:`calc_profile` (a :class:`~inferno.likelihood.Model` built by :meth:`_Templates.export_model`, written by
    :func:`inferno.likelihood.to_pyhf`); the mapping:

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

    ``f_s_nom``, ``f_b_nom``, ``f_s_up``, ``f_s_dw``, ``f_b_up``, ``f_b_dw``, ``shape_aux``,
    ``s_norm_aux``, ``b_norm_aux``, ``nonaux_b_norm``, ``b_true`` and ``interp_code`` are as in
    :func:`calc_profile`.

    Args:
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
    t, n = _resolve_data(kw, n_obs, mu_true, b_true)
    if n.dim() != 1:
        raise ValueError(f"n_obs must be one data set (n_bins,), got shape {tuple(n.shape)}")
    model = t.export_model(mu_true, shape_names, channel_name, poi_bounds, free_shape_sigma)
    return to_pyhf(model, n, measurement_name=measurement_name)


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
    code = check_code(interp_code, "histosys")
    ws = pyhf.Workspace(spec)
    model = ws.model(modifier_settings={"histosys": {"interpcode": PYHF_INTERP_CODES[code]},
                                        "normsys": {"interpcode": "code4"}}, **model_kwargs)
    return model, ws.data(model)
