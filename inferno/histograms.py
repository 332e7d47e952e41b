r"""Templates as ``hist.Hist`` histograms, and back; the stacked samples of a channel as a figure.

A template is a ``hist.Hist`` with one axis (the learned bins: ``Regular(n, 0, n)``, or the
given edges) and ``Weight`` storage: per bin the sum of weights (``values()``) and the sum of
squared weights (``variances()``), the MC statistical uncertainty of the template.

* :func:`to_hist` / :func:`from_hist`: one template from/to ``(values, variances)``;
* :func:`to_hists`: the ``{(process, variation): (sumw, sumw2)}`` of
  :func:`inferno.data.readers.fill_histograms` (templates streamed through large files) as
  histograms;
* :func:`model_to_hists`: every template of a channel of an
  :class:`~inferno.likelihood.Model` (e.g. :func:`~inferno.templates.analysis_model`'s):
  ``{(sample, "nominal")}`` with the staterror's :math:`\sigma^2` as variances, and
  ``{(sample, "<histosys>_up" / "<histosys>_down")}``;
* :func:`channel_from_hists`: the reverse, a :class:`~inferno.likelihood.Channel` of samples
  with ``HistoSys`` modifiers from the up/down histograms and, if asked, a ``StatError``
  from the nominal variances (optionally normalised to expected yields);
* :func:`plot_channel`: the samples of a channel stacked at given parameters, with data.

``hist`` is optional (``pip install 'inferno[hist]'``, which also installs mplhep) and
imported when a function needs it.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from .likelihood import Channel, HistoSys, Model, Sample, StatError
from .likelihood.modifiers import finite_vector
from .likelihood.modifiers import Modifier
from .plotting import PathLike, _finish, _hep_option, _mplhep, _plt

__all__ = ["to_hist", "from_hist", "to_hists", "model_to_hists", "channel_from_hists", "plot_channel"]

Key = Tuple[Any, str]


def _hist():
    try:
        import hist
    except ImportError as e:
        raise ImportError("hist is needed for this: pip install 'inferno[hist]' (or pip install hist)") from e
    return hist


def to_hist(counts: Any, sumw2: Any = None, edges: Any = None, name: Optional[str] = None,
            label: Optional[str] = None, axis_name: str = "bin", axis_label: str = "bin"):
    """One template as a ``hist.Hist`` with ``Weight`` storage.

    Args:
        counts: the sum of weights per bin.
        sumw2: the sum of squared weights per bin (the variances, >= 0); None: ``counts``
            (unweighted events, Poisson variances).
        edges: the bin edges (``len(counts) + 1`` increasing numbers); None: the bin
            indices, ``Regular(n, 0, n)``.
        name, label: the histogram's name and label (e.g. the process and the variation).
        axis_name, axis_label: its axis's.

    Raises:
        ImportError: hist is not installed (``pip install 'inferno[hist]'``).
        ValueError: non-finite or non-1-D counts, negative variances, edges of another
            length than the bins or not increasing.
    """
    hist = _hist()
    v = finite_vector(counts, "counts")
    var = v.copy() if sumw2 is None else finite_vector(sumw2, "sumw2")
    if sumw2 is None and (v < 0).any():
        raise ValueError("counts with negative bins need their sumw2 (the variances)")
    if var.shape != v.shape:
        raise ValueError(f"sumw2 has {var.size} bins, counts {v.size}")
    if (var < 0).any():
        raise ValueError(f"sumw2 (variances) must be >= 0, negative in bins {np.nonzero(var < 0)[0].tolist()}")
    if edges is None:
        ax = hist.axis.Regular(v.size, 0, v.size, name=axis_name, label=axis_label)
    else:
        e = finite_vector(edges, "edges")
        if e.size != v.size + 1 or not (np.diff(e) > 0).all():
            raise ValueError(f"edges must be {v.size + 1} increasing numbers for {v.size} bins, got {e.tolist()}")
        ax = hist.axis.Variable(e, name=axis_name, label=axis_label)
    h = hist.Hist(ax, storage=hist.storage.Weight(), name=name, label=label)
    h[...] = np.stack([v, var], axis=-1)
    return h


def from_hist(h: Any) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """``(values, variances)`` of a one-dimensional histogram (flow bins excluded; the
    variances None when the storage has none)."""
    if not (hasattr(h, "values") and hasattr(h, "axes")):
        raise ValueError(f"expected a hist.Hist (or boost_histogram) histogram, got {type(h).__name__}")
    if len(h.axes) != 1:
        raise ValueError(f"a template has one axis, this histogram has {len(h.axes)}")
    var = h.variances()
    return np.array(h.values(), dtype=np.float64), None if var is None else np.array(var, dtype=np.float64)


def to_hists(counts: Mapping[Key, Tuple[Any, Any]], edges: Any = None, axis_name: str = "bin",
             axis_label: str = "bin") -> Dict[Key, Any]:
    """``{(process, variation): (sumw, sumw2)}`` (e.g. from
    :func:`inferno.data.readers.fill_histograms`) as ``{(process, variation): hist.Hist}``, named by
    the process and labelled by the variation."""
    out = {}
    for key, pair in counts.items():
        if not (isinstance(key, tuple) and len(key) == 2):
            raise ValueError(f"keys must be (process, variation) pairs, got {key!r}")
        sw, sw2 = pair
        out[key] = to_hist(sw, sw2, edges, name=str(key[0]), label=str(key[1]), axis_name=axis_name,
                           axis_label=axis_label)
    return out


def _channel(model: Model, channel: Optional[str]) -> Channel:
    if not isinstance(model, Model):
        raise ValueError(f"expected an inferno.likelihood.Model, got {type(model).__name__}")
    names = [c.name for c in model.channels]
    if channel is None:
        if len(names) != 1:
            raise ValueError(f"the model has channels {names}: name the one to use")
        return model.channels[0]
    if channel not in names:
        raise ValueError(f"unknown channel {channel!r}: the model's channels are {names}")
    return model.channels[names.index(channel)]


def model_to_hists(model: Model, channel: Optional[str] = None, edges: Any = None) -> Dict[Key, Any]:
    r"""The templates of a channel of ``model`` as ``{(sample, variation): hist.Hist}``.

    Every sample gives ``(sample, "nominal")``, its nominal counts, with the squares of its
    staterror's :math:`\sigma` as variances (0 without a staterror), and for every histosys
    modifier ``(sample, "<name>_up")`` and ``(sample, "<name>_down")`` (its ``hi`` and ``lo``
    counts; their statistical uncertainty is not in the model: variances 0). Other
    modifiers (rates, per-bin factors) are not templates and are left out.

    Args:
        model: the model.
        channel: the channel's name (may be omitted for a one-channel model).
        edges: bin edges (default the bin indices).
    """
    ch = _channel(model, channel)
    out: Dict[Key, Any] = {}
    for s in ch.samples:
        nom = finite_vector(s.counts, f"sample {s.name!r} counts")
        var = np.zeros_like(nom)
        for m in s.modifiers:
            if isinstance(m, StatError):
                var = var + np.asarray(m.sigma, dtype=np.float64) ** 2
        out[(s.name, "nominal")] = to_hist(nom, var, edges, name=s.name, label="nominal")
        for m in s.modifiers:
            if isinstance(m, HistoSys):
                for suffix, v in (("up", m.hi), ("down", m.lo)):
                    out[(s.name, f"{m.name}_{suffix}")] = to_hist(v, np.zeros_like(nom), edges, name=s.name,
                                                                  label=f"{m.name}_{suffix}")
    return out


def channel_from_hists(hists: Mapping[Key, Any], channel: str, stat_error: Optional[str] = None,
                       yields: Optional[Mapping[str, float]] = None,
                       variations: Optional[Mapping[str, Tuple[str, str]]] = None,
                       modifiers: Optional[Mapping[str, Sequence[Modifier]]] = None) -> Channel:
    r"""A :class:`~inferno.likelihood.Channel` from ``{(sample, variation): hist.Hist}`` (the
    reverse of :func:`model_to_hists`; or :func:`to_hists` of streamed templates).

    Every sample needs a ``"nominal"`` histogram. The up/down pairs become ``HistoSys``
    modifiers: by default the variations ``"<name>_up"`` / ``"<name>_down"``, or as given by
    ``variations``.

    Args:
        hists: the histograms; the samples are named by strings (give
            :func:`~inferno.data.readers.fill_histograms` its ``names``), in order of appearance.
        channel: the channel's name.
        stat_error: the name of a ``StatError`` modifier to add to every sample, with
            :math:`\sigma` the square roots of its nominal variances (MC statistics); None:
            none.
        yields: ``{sample: expected yield}``: scale every histogram of the sample by
            ``yield / sum(nominal)`` (and the variances by its square), as
            :func:`~inferno.templates.analysis_model` normalises its templates (weight
            variations keep their change of rate relative to the nominal).
        variations: ``{modifier name: (up variation, down variation)}`` instead of the
            ``_up``/``_down`` naming.
        modifiers: ``{sample: [modifiers]}`` added to the samples (e.g. a ``NormFactor``).

    Raises:
        ValueError: a sample without a nominal histogram or not named by a string, an up
            without its down, a variation not used, histograms of different bins, a yield
            for a sample with a non-positive nominal sum.
    """
    if not isinstance(channel, str) or not channel:
        raise ValueError(f"channel must be a non-empty name, got {channel!r}")
    by_sample: Dict[str, Dict[str, Tuple[np.ndarray, Optional[np.ndarray]]]] = {}
    for key, h in hists.items():
        if not (isinstance(key, tuple) and len(key) == 2):
            raise ValueError(f"keys must be (sample, variation) pairs, got {key!r}")
        sample, var = key
        if not isinstance(sample, str) or not sample:
            raise ValueError(f"samples are named by strings, got {sample!r} (fill_histograms(..., names={{label: "
                             "name}}) names its processes)")
        by_sample.setdefault(sample, {})[str(var)] = from_hist(h)
    yields = dict(yields or {})
    modifiers = {k: list(v) for k, v in (modifiers or {}).items()}
    unknown = [k for k in list(yields) + list(modifiers) if k not in by_sample]
    if unknown:
        raise ValueError(f"yields/modifiers for unknown samples {unknown}: the samples are {list(by_sample)}")
    samples: List[Sample] = []
    n_bins = None
    for sample, hs in by_sample.items():
        if "nominal" not in hs:
            raise ValueError(f"sample {sample!r} has no 'nominal' histogram (it has {sorted(hs)})")
        for var, (v, _) in hs.items():
            if n_bins is None:
                n_bins = v.size
            elif v.size != n_bins:
                raise ValueError(f"sample {sample!r}, variation {var!r}: {v.size} bins, expected {n_bins}")
        nom, nom_var = hs["nominal"]
        scale = 1.0
        if sample in yields:
            total = float(nom.sum())
            if not total > 0:
                raise ValueError(f"sample {sample!r}: the nominal sums to {total:.6g}, it cannot be scaled to a yield")
            scale = float(yields[sample]) / total
        if variations is not None:
            pairs = dict(variations)
        else:
            pairs = {}
            for var in hs:
                for suffix, other in (("_up", "_down"), ("_down", "_up")):
                    if var.endswith(suffix):
                        base = var[:-len(suffix)]
                        if base + other not in hs:
                            raise ValueError(f"sample {sample!r}: variation {var!r} has no {base + other!r}")
                        pairs[base] = (base + "_up", base + "_down")
        mods: List[Modifier] = []
        used = {"nominal"}
        for name, (up, dn) in pairs.items():
            if up not in hs and dn not in hs:
                continue  # a variation of other samples only
            for v in (up, dn):
                if v not in hs:
                    raise ValueError(f"sample {sample!r}: modifier {name!r} needs variation {v!r}, which is missing")
            used |= {up, dn}
            mods.append(HistoSys(name, hi=scale * hs[up][0], lo=scale * hs[dn][0]))
        unused = [v for v in hs if v not in used]
        if unused:
            raise ValueError(f"sample {sample!r}: variations {unused} are not up/down pairs (name them "
                             "'<name>_up'/'<name>_down' or pass variations={name: (up, down)})")
        if stat_error is not None:
            if nom_var is None:
                raise ValueError(f"sample {sample!r}: the nominal histogram has no variances for the staterror")
            mods.append(StatError(stat_error, sigma=scale * np.sqrt(np.clip(nom_var, 0, None))))
        samples.append(Sample(sample, scale * nom, mods + modifiers.get(sample, [])))
    if not samples:
        raise ValueError("no histograms")
    return Channel(channel, samples)


def _params(model: Model, params: Any) -> torch.Tensor:
    if params is None:
        return model.init
    if isinstance(params, Mapping):
        return model.params(**{k: float(v) for k, v in params.items()})
    return model.params(params)


@_hep_option
def plot_channel(model: Model, channel: Optional[str] = None, params: Any = None, data: Any = None,
                 edges: Any = None, title: str = "", logy: bool = False, path: PathLike = None, *,
                 hep_style: bool = False):
    """The samples of a channel of ``model`` stacked, at ``params``, with the data.

    Args:
        model: the model.
        channel: the channel's name (may be omitted for a one-channel model).
        params: the parameters: a vector, a dict ``{name: value}`` (the others at their
            initial values), or None (all at their initial values).
        data: observed counts of the channel (or of all channels, flat, or ``{channel:
            counts}``), drawn as points with :math:`\\sqrt{n}` errors; None: none.
        edges: bin edges (default the bin indices).
        logy: logarithmic y axis.
        hep_style: draw with mplhep's ``histplot`` in its CMS-like style (needs
            ``inferno[hist]``); default plain matplotlib.

    Returns:
        the matplotlib ``Figure`` (saved to ``path`` and closed if given).
    """
    ch = _channel(model, channel)
    sl = model.channel_bins[ch.name]
    nb = sl.stop - sl.start
    with torch.no_grad():
        by_sample = model.expected_by_sample(_params(model, params)).cpu().numpy()
    rows = [i for i, (c, _) in enumerate(model.samples) if c == ch.name]
    names = [model.samples[i][1] for i in rows]
    values = [by_sample[i, sl] for i in rows]
    e = np.arange(nb + 1, dtype=float) if edges is None else finite_vector(edges, "edges")
    if e.size != nb + 1:
        raise ValueError(f"edges must be {nb + 1} numbers for the {nb} bins of channel {ch.name!r}")
    obs = None
    if data is not None:
        if isinstance(data, Mapping):
            obs = finite_vector(data[ch.name], f"data of channel {ch.name!r}")
        else:
            obs = finite_vector(data, "data")
            obs = obs[sl] if obs.size == model.n_bins and obs.size != nb else obs
        if obs.size != nb:
            raise ValueError(f"data has {obs.size} bins, channel {ch.name!r} has {nb}")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 8) if hep_style else (6.5, 4.5))
    if hep_style:
        mh = _mplhep()
        mh.histplot(values, e, stack=True, histtype="fill", label=names, ax=ax)
        if obs is not None:
            mh.histplot(obs, e, histtype="errorbar", yerr=np.sqrt(obs), color="black", label="data", ax=ax)
    else:
        base = np.zeros(nb)
        for i, (n, v) in enumerate(zip(names, values)):
            ax.stairs(base + v, e, baseline=base.copy(), fill=True, color=f"C{i % 10}", alpha=0.8, label=n)
            base = base + v
        ax.stairs(base, e, color="black", lw=1)
        if obs is not None:
            ax.errorbar(0.5 * (e[1:] + e[:-1]), obs, yerr=np.sqrt(obs), fmt="o", color="black", ms=4, label="data")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("bin" if edges is None else ch.name)
    ax.set_ylabel("events")
    ax.set_title(title or ch.name)
    ax.legend(fontsize=8)
    return _finish(fig, path)
