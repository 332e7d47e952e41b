"""``explain_report``: the figures and tables of :mod:`inferno.explain` for one or several
trained summaries, written to a folder."""
from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from ..likelihood import Model
from ..loss import Analysis
from ..templates import analysis_model, hard_bins
from .attributions import attribution_matrix, attribution_target, integrated_gradients
from .importance import as_summary, permutation_importance, resolve_groups
from .nuisances import loss_nuisance_map, model_nuisance_map, nuisance_ranking, soft_templates

__all__ = ["explain_report", "learned_purity"]


def _events(events: Any) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor], Dict[str, torch.Tensor]]:
    """(x, process, w, weights) of a :class:`~inferno.data.DataSet` (``x``, ``y``, ``w``,
    ``extras``) or a mapping with ``x``, ``process`` (or ``y``), ``w``, ``weights`` (or ``extras``)."""
    get = (lambda k: events.get(k)) if isinstance(events, Mapping) else (lambda k: getattr(events, k, None))
    x, y = get("x"), get("process") if get("process") is not None else get("y")
    if x is None or y is None:
        raise ValueError("events must have x and process labels (a DataSet, or a mapping with 'x' and 'process')")
    w = get("w")
    extras = get("weights") if get("weights") is not None else get("extras")
    return (torch.as_tensor(x), torch.as_tensor(y).reshape(-1).long(),
            None if w is None else torch.as_tensor(w).reshape(-1), dict(extras or {}))


def learned_purity(model: Model, analysis: Analysis, signal: Optional[Sequence[str]] = None
                   ) -> Tuple[np.ndarray, np.ndarray]:
    """Expected signal and total counts per bin of the learned channel at the model's inits
    (``signal``: process names; default the processes with a POI as a NormFactor), the
    input of :func:`inferno.plotting.purity_order`."""
    if signal is None:
        signal = [p.name for p in analysis.processes if any(m.name in analysis.pois for m in p.modifiers)]
    if not signal:
        raise ValueError("signal: no process carries a POI; name the signal processes")
    sl = model.channel_bins[analysis.channel]
    by = model.expected_by_sample(model.init).numpy()
    rows = [i for i, (ch, _) in enumerate(model.samples) if ch == analysis.channel]
    sig = [i for i in rows if model.samples[i][1] in signal]
    return by[sig][:, sl].sum(0), by[rows][:, sl].sum(0)


def _summary(spec: Any) -> nn.Module:
    if isinstance(spec, nn.Module):
        return spec
    if isinstance(spec, tuple) and 2 <= len(spec) <= 3:
        return as_summary(*spec)
    raise ValueError(f"summaries: each value must be a module (argmax = bin) or (net, binning[, n_bins]), "
                     f"got {type(spec).__name__}")


def explain_report(summaries: Mapping[str, Any], analysis: Analysis, events: Any, out: Union[str, Path], *,
                   feature_names: Optional[Sequence[str]] = None,
                   groups: Optional[Mapping[str, Sequence[Union[int, str]]]] = None,
                   signal: Optional[Sequence[str]] = None, models: Optional[Mapping[str, Model]] = None,
                   n_repeats: int = 3, seed: int = 0, method: str = "fisher", attribution_events: int = 2000,
                   ig_steps: int = 32, figures: bool = True, log: Callable[..., Any] = print) -> Dict[str, Any]:
    """Explain trained summaries: permutation importance, attributions, nuisance maps and
    the ranking of the systematics; figures and ``explain.md`` in ``out``.

    Args:
        summaries: name -> a module whose argmax is the bin (``inferno-bench``'s summaries,
            after ``merge_bins``), or ``(net, binning[, n_bins])`` (:func:`as_summary`).
        analysis: the analysis.
        events: held-out events: a :class:`~inferno.data.DataSet` (e.g.
            ``HTauTauProblem.dataset('test')``) or ``{'x', 'process', 'w', 'weights'}``.
        out: output folder (created).
        feature_names, groups: the input columns' names and groups shuffled together
            (e.g. :func:`~inferno.explain.group_by_object` of the names).
        signal: the signal processes, for the purity order (default those with a POI).
        models: name -> the concrete model already built from these events (else built here).
        n_repeats, seed, method: of :func:`~inferno.explain.permutation_importance`.
        attribution_events: events (drawn at random, seeded) for the integrated gradients
            (float64 copy of the network, mean baseline, ``ig_steps`` Gauss-Legendre nodes).
        figures: write the figures.

    Returns:
        ``importance``, ``ranking``, ``loss_ranking``, ``maps``, ``attributions`` (per
        summary), ``markdown`` and ``files``.
    """
    import pandas as pd

    import inferno.plotting as ip

    if not summaries:
        raise ValueError("summaries is empty")
    x, proc, w, weights = _events(events)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    grp = resolve_groups(x.shape[1], feature_names, groups)
    fnames = [f"x{i}" for i in range(x.shape[1])] if feature_names is None else [str(f) for f in feature_names]
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xA77]))
    sub = torch.as_tensor(np.sort(rng.choice(len(x), min(int(attribution_events), len(x)), replace=False)))
    res: Dict[str, Dict[str, Any]] = {k: {} for k in ("importance", "ranking", "loss_ranking", "maps", "attributions")}
    files: List[str] = []
    purity: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}
    for name, spec in summaries.items():
        net = _summary(spec)
        model = (models or {}).get(name)
        if model is None:
            model = analysis_model(analysis, net, x, proc, w, weights=weights)
        purity[name] = sig, tot = learned_purity(model, analysis, signal)
        imp = permutation_importance(analysis, net, x, proc, w, weights, groups={g: c for g, c in grp.items()},
                                     feature_names=fnames, n_repeats=n_repeats, seed=seed, method=method)
        res["importance"][name] = imp
        res["ranking"][name] = nuisance_ranking(model)
        maps = [model_nuisance_map(model, analysis.channel)]
        with torch.no_grad():
            y_sub = net(x[sub])
        if bool(((y_sub == 0) | (y_sub == 1)).all()):
            log(f"  explain {name}: hard (one-hot) bins, no loss view (the INFERNO loss needs soft assignments)")
        else:
            try:  # the loss's view, for a network with soft bin assignments
                st = soft_templates(analysis, net, x, proc, w, weights)
                maps.append(loss_nuisance_map(st))
                res["loss_ranking"][name] = nuisance_ranking(st.fisher, st.names, poi=analysis.pois[0])
            except ValueError as e:
                log(f"  explain {name}: no loss view ({str(e).splitlines()[0][:120]})")
        res["maps"][name] = pd.concat(maps, ignore_index=True)
        target = copy.deepcopy(attribution_target(net)).double()
        xs = x[sub].double()
        ig = integrated_gradients(target, xs, baseline="mean", steps=ig_steps)
        with torch.no_grad():
            outs = target(xs)
        bins = hard_bins(net, x[sub])
        per_group = torch.stack([ig.attributions[..., c].sum(-1) for c in grp.values()], -1)
        mat = attribution_matrix(per_group, bins, len(sig), outs if outs.shape[1] > 1 else None)
        res["attributions"][name] = dict(matrix=mat, groups=list(grp), completeness_error=ig.completeness_error)
        log(f"  explain {name}: sigma {imp.sigma:.4g} (stat {imp.sigma_stat:.4g}); IG completeness error "
            f"{ig.completeness_error:.2g}", flush=True)
        if figures:
            ip.plot_attribution_map(mat, list(grp), sig, tot, title=f"{name}: integrated gradients (mean baseline)",
                                    path=out / f"attributions_{name}.png")
            for src, df in res["maps"][name].groupby("source", sort=False):
                piv = df.pivot_table(index=["nuisance", "process"], columns="bin", values="rel_slope", sort=False)
                piv = piv.reindex(columns=range(len(sig)))
                ip.plot_nuisance_map(piv.to_numpy(), [f"{a}: {b}" for a, b in piv.index], sig, tot,
                                     title=f"{name}: nuisance map ({src})", path=out / f"nuisances_{src}_{name}.png")
                files.append(f"nuisances_{src}_{name}.png")
            files.append(f"attributions_{name}.png")
    if figures:
        ip.plot_importance({n: {r["group"]: (r["d_sigma"], r["d_sigma_std"]) for _, r in i.table.iterrows()}
                            for n, i in res["importance"].items()}, path=out / "importance.png")
        ip.plot_ranking({n: dict(zip(r["nuisance"], r["impact_sigma"])) for n, r in res["ranking"].items()},
                        path=out / "ranking.png")
        files += ["importance.png", "ranking.png"]
    md = _markdown(res, method, n_repeats)
    (out / "explain.md").write_text(md)
    files.append("explain.md")
    return dict(res, markdown=md, files=files, purity=purity)


def _markdown(res: Dict[str, Dict[str, Any]], method: str, n_repeats: int) -> str:
    imp, rank = res["importance"], res["ranking"]
    names = list(imp)
    lines = ["# What the trained summaries learned", "",
             f"Expected sigma(mu) on Asimov data ({method}), every nuisance profiled / statistics only:", "",
             "| summary | sigma | stat. only |", "|---|---|---|"]
    lines += [f"| {n} | {imp[n].sigma:.4g} | {imp[n].sigma_stat:.4g} |" for n in names]
    lines += ["", f"## Features: increase of sigma(mu) when shuffled across the events "
              f"(mean ± std over {n_repeats} shuffles)", "",
              "| feature | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for g in imp[names[0]].table["group"]:
        cells = []
        for n in names:
            r = imp[n].table.set_index("group").loc[g]
            cells.append(f"{r['d_sigma']:.4f} ± {r['d_sigma_std']:.4f}")
        lines.append(f"| {g} | " + " | ".join(cells) + " |")
    allnuis = list(dict.fromkeys(k for n in names for k in rank[n]["nuisance"]))
    lines += ["", "## Systematics: impact on sigma(mu), sigma - sigma(nuisance fixed), Fisher information "
              "of the concrete model at the Asimov point (rank in parentheses)", "",
              "| nuisance | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for k in allnuis:
        cells = []
        for n in names:
            r = rank[n].reset_index(drop=True)
            hit = r.index[r["nuisance"] == k]
            cells.append(f"{r.loc[hit[0], 'impact_sigma']:.4f} ({hit[0] + 1})" if len(hit) else "-")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    errs = {n: a["completeness_error"] for n, a in res["attributions"].items()}
    lines += ["", "Integrated gradients' completeness error: "
              + ", ".join(f"{n} {e:.2g}" for n, e in errs.items() if math.isfinite(e)), ""]
    return "\n".join(lines)
