r"""What every nuisance does to a trained summary's bins, and how much it costs the measurement.

* :func:`soft_templates` / :func:`loss_nuisance_map`: the templates the INFERNO loss uses
  for a batch of events, the soft histograms of every process and their derivatives with
  respect to every shape nuisance at the nominal point, exactly as
  :func:`~inferno.loss.inferno_loss` computes them (they are read from the loss itself, not
  recomputed), as relative shifts per bin in HistFactory's units (:math:`\alpha = \pm 1` at
  the variations that :func:`~inferno.templates.analysis_model` uses: a transform nuisance's
  derivative is multiplied by that step);
* :func:`model_nuisance_map`: the same from the concrete model's variations (the up/down
  templates of its ``histosys``, the factors of its ``normsys``, ``lumi`` and ``staterror``):
  :math:`\nu^\pm/\nu^0 - 1` and the slope :math:`(\nu^+ - \nu^-)/(2\nu^0)` per bin;
* :func:`nuisance_ranking`: the decomposition of the POI variance by the Fisher information
  :math:`I` at the Asimov point. With :math:`C = I^{-1}` over the free parameters, fixing the
  group :math:`G` of parameters (at their Asimov values) lowers the variance of :math:`\mu` by

  .. math::

      \Delta_G = C_{\mu\mu} - \big[(I_{\bar G\bar G})^{-1}\big]_{\mu\mu}
               = C_{\mu G}\,(C_{GG})^{-1}\,C_{G\mu}

  (a Schur complement), the *impact* of :math:`G`: the variance it adds by being profiled.
  The impacts do not add up to the total systematic variance :math:`C_{\mu\mu} - 1/I_{\mu\mu}`
  when the nuisances are correlated; ``share`` reports each against that total.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

from ..likelihood import Model
from ..likelihood.modifiers import HistoSys, Lumi, NormSys, StatError
from ..loss import Analysis, batch_templates
from ..loss.analysis import _kind
from ..templates import _transform_scale

__all__ = ["SoftTemplates", "soft_templates", "loss_nuisance_map", "model_nuisance_map", "asimov_hessian",
           "nuisance_ranking", "default_groups"]


@dataclass
class SoftTemplates:
    """The templates of the INFERNO loss on a set of events (:func:`soft_templates`).

    Attributes:
        processes: the process names (rows of ``nominal``).
        nominal: the soft counts :math:`\\nu^0_{p,i}` ``(P, N)`` (with the loss's floor).
        derivatives: ``(process, nuisance)`` -> :math:`\\partial\\nu_{p,i}/\\partial\\alpha`
            ``(N,)``, counts per unit of :math:`\\alpha` (see the module docstring).
        units: nuisance -> the step in its own units that one unit of :math:`\\alpha` is (1 for
            nuisances already in interpolation units; NaN for a free transform without
            variations, whose derivative stays per unit of the nuisance).
        loss: the loss on the events; fisher, names: its Fisher information and parameters.
    """

    processes: List[str]
    nominal: np.ndarray
    derivatives: Dict[Tuple[str, str], np.ndarray]
    units: Dict[str, float]
    loss: float
    fisher: Tensor
    names: List[str]


def soft_templates(analysis: Analysis, net: nn.Module, x: Tensor, process: Tensor, w: Optional[Tensor] = None,
                   weights: Optional[Mapping[str, Tensor]] = None) -> SoftTemplates:
    """The loss's soft templates and derivative templates on the events ``x`` (all of them
    as one batch; the network in evaluation mode), read from
    :func:`~inferno.loss.inferno_loss`.

    Raises:
        ValueError: what :func:`~inferno.loss.inferno_loss` raises for these events (e.g. a
            network whose outputs are not soft bin assignments).
    """
    was = net.training
    net.eval()
    try:
        t = batch_templates(analysis, net, x, process, w, weights)
    finally:
        net.train(was)
    nom, shifts, loss, fisher, names = t["nominal"], t["shifts"], t["loss"], t["fisher"], t["names"]
    n_bins = nom.shape[1]
    b = analysis._build(n_bins)
    procs = [p.name for p in analysis.processes]
    units: Dict[str, float] = {}
    for n in analysis.nuisances:
        if _kind(n) == "transform":
            try:
                units[n.name] = float(_transform_scale(n))
            except ValueError:
                units[n.name] = math.nan
        else:
            units[n.name] = 1.0
    der: Dict[Tuple[str, str], np.ndarray] = {}
    for t, (p, nm) in enumerate(b["term_index"]):
        u = units.get(nm, 1.0)
        der[(procs[p], nm)] = shifts[t].numpy() * (u if math.isfinite(u) else 1.0)
    return SoftTemplates(processes=procs, nominal=nom.numpy(), derivatives=der, units=units,
                         loss=float(loss.detach()), fisher=fisher.detach(), names=list(names))


def _rows(source: str, nuisance: str, process: str, nominal: np.ndarray, up: np.ndarray, down: np.ndarray,
          slope: np.ndarray) -> List[Dict[str, Any]]:
    with np.errstate(divide="ignore", invalid="ignore"):
        ok = nominal > 0
        rel = lambda v: np.where(ok, v / np.where(ok, nominal, 1.0), np.nan)  # noqa: E731
        ru, rd, rs = rel(up - nominal), rel(down - nominal), rel(slope)
    return [dict(source=source, nuisance=nuisance, process=process, bin=i, nominal=float(nominal[i]),
                 rel_up=float(ru[i]), rel_down=float(rd[i]), rel_slope=float(rs[i])) for i in range(len(nominal))]


def loss_nuisance_map(templates: SoftTemplates):
    """The relative shifts of the loss's templates (``source = 'loss'``): per nuisance,
    process and bin, ``rel_slope`` :math:`= (\\partial\\nu/\\partial\\alpha)/\\nu^0` and its
    linear extrapolations ``rel_up`` / ``rel_down`` to :math:`\\alpha = \\pm 1` (pandas)."""
    import pandas as pd

    rows: List[Dict[str, Any]] = []
    for (p, nm), d in templates.derivatives.items():
        nom = templates.nominal[templates.processes.index(p)]
        rows += _rows("loss", nm, p, nom, nom + d, nom - d, d)
    return pd.DataFrame(rows, columns=["source", "nuisance", "process", "bin", "nominal", "rel_up", "rel_down",
                                       "rel_slope"])


def model_nuisance_map(model: Model, channel: Optional[str] = None):
    """The relative shifts of every sample of ``channel`` (default the first) from the
    concrete model's modifiers (``source = 'model'``; pandas): ``histosys`` (its up/down
    templates), ``normsys`` (its factors, flat), ``lumi`` (:math:`\\pm\\sigma`, flat) and
    ``staterror`` (:math:`\\pm\\sigma_i/\\nu_i`, named by the modifier)."""
    import pandas as pd

    ch = _channel(model, channel)
    rows: List[Dict[str, Any]] = []
    for s in ch.samples:
        nom = np.asarray(s.counts, dtype=np.float64)
        for m in s.modifiers:
            if isinstance(m, HistoSys):
                up, dn = np.asarray(m.hi, dtype=np.float64), np.asarray(m.lo, dtype=np.float64)
            elif isinstance(m, NormSys):
                up, dn = nom * m.hi, nom * m.lo
            elif isinstance(m, Lumi):
                sig = float(model.parameters[model.index(m.name)].sigma)
                up, dn = nom * (1 + sig), nom * (1 - sig)
            elif isinstance(m, StatError):
                sig = np.asarray(m.sigma, dtype=np.float64)
                up, dn = nom + sig, nom - sig
            else:
                continue
            rows += _rows("model", m.name, s.name, nom, up, dn, 0.5 * (up - dn))
    return pd.DataFrame(rows, columns=["source", "nuisance", "process", "bin", "nominal", "rel_up", "rel_down",
                                       "rel_slope"])


def _channel(model: Model, channel: Optional[str]):
    names = [c.name for c in model.channels]
    name = names[0] if channel is None else channel
    if name not in names:
        raise ValueError(f"channel {channel!r} is not a channel of the model ({names})")
    return model.channels[names.index(name)]


# ----------------------------------------------------------------------------- ranking
def asimov_hessian(model: Model) -> Tensor:
    """The Hessian of the NLL at the model's Asimov point (its inits): the Fisher
    information ``(P, P)``, float64."""
    main, aux = model.asimov()
    return model.nll_grad_hess(model.init, main, aux)[2]


def default_groups(names: Sequence[str], sets: Optional[Mapping[str, slice]] = None) -> Dict[str, List[str]]:
    """Each parameter alone, except the per-bin ones (``staterror`` / ``shapesys``:
    ``name[i]``), grouped under their set's name."""
    out: Dict[str, List[str]] = {}
    if sets is not None:
        for s, sl in sets.items():
            out[s] = list(names[sl])
        return out
    for n in names:
        out.setdefault(n.split("[")[0] if n.endswith("]") and "[" in n else n, []).append(n)
    return out


def nuisance_ranking(source: Union[Model, Tensor], names: Optional[Sequence[str]] = None,
                     poi: Optional[str] = None, groups: Optional[Mapping[str, Sequence[str]]] = None):
    """The impact of every nuisance (group) on the variance of the POI (see the module
    docstring), largest first (pandas).

    Args:
        source: a concrete :class:`~inferno.likelihood.Model` (its Fisher information at the
            Asimov point, over its free parameters), or a Fisher information ``(P, P)`` with
            its parameter ``names`` (e.g. the loss's, :class:`SoftTemplates`).
        poi: the parameter of interest (default: the model's first POI; with a matrix, needed).
        groups: group name -> parameter names fixed together (default :func:`default_groups`).

    Returns:
        a DataFrame with ``nuisance``, ``parameters``, ``var_fixed`` (the POI variance with the
        group fixed), ``impact_var`` (``var - var_fixed``), ``impact_sigma``
        (``sqrt(var) - sqrt(var_fixed)``), ``share`` (``impact_var / (var - var_stat)``);
        ``.attrs`` holds ``var``, ``var_stat``, ``sigma``, ``sigma_stat`` and ``poi``.
    """
    import pandas as pd

    if isinstance(source, Model):
        H = asimov_hessian(source)
        all_names = source.names
        free = (~source.fixed).nonzero().squeeze(-1).tolist()
        poi = poi or source.poi_names[0]
        sets = {s: [all_names[i] for i in range(sl.start, sl.stop) if i in free]
                for s, sl in source.param_sets.items()}
        fallback = {s: v for s, v in sets.items() if v}
    else:
        H = torch.as_tensor(source, dtype=torch.float64)
        if names is None or len(names) != H.shape[-1] or H.shape[-1] != H.shape[-2]:
            raise ValueError("names: a Fisher information needs one parameter name per row")
        all_names = list(names)
        free = list(range(len(all_names)))
        if poi is None:
            raise ValueError("poi: name the parameter of interest of the Fisher information")
        fallback = default_groups(all_names)
    fnames = [all_names[i] for i in free]
    if poi not in fnames:
        raise ValueError(f"poi: {poi!r} is not a free parameter ({fnames})")
    I = H[free][:, free].to(torch.float64)
    chol, info = torch.linalg.cholesky_ex(I)
    if int(info) != 0:
        raise ValueError(f"source: the Fisher information of {fnames} is not positive definite")
    C = torch.cholesky_inverse(chol)
    k = fnames.index(poi)
    var, var_stat = float(C[k, k]), 1.0 / float(I[k, k])
    grp = dict(groups) if groups is not None else {g: v for g, v in fallback.items() if poi not in v}
    rows = []
    for g, members in grp.items():
        bad = [m for m in members if m not in fnames]
        if bad or not members or poi in members:
            raise ValueError(f"groups[{g!r}]: {bad or members} must be free parameters other than the POI "
                             f"({fnames})")
        idx = [fnames.index(m) for m in members]
        cg = C[k, idx]
        impact = float(cg @ torch.linalg.solve(C[idx][:, idx], cg))
        vf = var - impact
        rows.append(dict(nuisance=g, parameters=list(members), var_fixed=vf, impact_var=impact,
                         impact_sigma=math.sqrt(var) - math.sqrt(max(vf, 0.0)),
                         share=impact / (var - var_stat) if var > var_stat else math.nan))
    df = pd.DataFrame(rows, columns=["nuisance", "parameters", "var_fixed", "impact_var", "impact_sigma", "share"])
    df = df.sort_values("impact_var", ascending=False, kind="stable").reset_index(drop=True)
    df.attrs.update(var=var, var_stat=var_stat, sigma=math.sqrt(var), sigma_stat=math.sqrt(var_stat), poi=poi)
    return df
