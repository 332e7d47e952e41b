r"""The statistical analysis of the :math:`H \to \tau\tau`-like benchmark
(:mod:`inferno.htautau`): an :class:`~inferno.loss.Analysis` with every kind of
systematic the package supports, its control region, and the events as
:class:`~inferno.data.DataSet` objects split into training, validation and test samples.

Regions
-------

The events are split by the b-tag of their jets (:func:`~inferno.htautau.control_region`):

* the **signal region** (no b-tagged jet): the *learned* channel, whose bins are the
  outputs of the network (INFERNO) or of a binned classifier; about 99% of the signal,
  Z -> tau tau and diboson events, 13% of the ttbar events;
* the **control region** (at least one b-tagged jet, 87% ttbar): a *fixed* channel of
  :data:`CR_EDGES` bins of the visible mass :data:`CR_FEATURE`, filled from the generated
  events (:func:`control_region_model`); it measures the free ttbar normalisation.

The energy scales do not move the b-tag score, so no event migrates between the regions.

Statistical model
-----------------

================  ================================================================  ==========
parameter         what                                                              constraint
================  ================================================================  ==========
``mu``            signal strength (``NormFactor`` on htautau), the POI              free
``mu_ttbar``      ttbar normalisation (``NormFactor``), fixed by the control        free
                  region (``free_ttbar=False``: a 10% ``NormSys`` instead)
``norm_ztautau``  ``NormSys`` 5%                                                    N(0, 1)
``norm_diboson``  ``NormSys`` 25%                                                   N(0, 1)
``lumi``          ``Lumi``, 2%, on htautau, ztautau, diboson (and ttbar when        N(1, 0.02)
                  its normalisation is not free)
``tes``           tau energy scale, 3% per unit: ``ShapeNuisance`` with the         N(0, 1)
                  exact transform :class:`~inferno.htautau.EnergyScale`
                  ``('tau')`` of the primary objects, on every process
``jes``           jet energy scale, 4% per unit, likewise (``EnergyScale('jet')``)  N(0, 1)
``tau_id``        tau identification efficiency (3-10%, rising with pT):            N(0, 1)
                  ``WeightNuisance`` on the columns ``weight_tau_id_up/down``
``ttbar_model``   ttbar modelling: ``AltSampleNuisance`` from the alternative       N(0, 1)
                  samples ``ttbar_up`` / ``ttbar_down`` (shape only)
``mc_stat_*``     with ``mc_stat``: the MC statistical uncertainty of the           N(1, s_i)
                  templates (Barlow-Beeston lite), in both regions
================  ================================================================  ==========

In the control region the same parameters act with the same meaning (correlated by name):
the energy scales and the tau identification through the events moved (re-weighted) and
re-binned, the alternative ttbar samples as a shape, the rates as above.

Example::

    from inferno import htautau as hb
    from inferno.htautau.analysis import prepare

    prob = prepare(hb.generate(20_000, seed=1), hb.generate(50_000, seed=2), seed=1, mc_stat=True)
    prob.analysis            # the Analysis (learned signal region + fixed control region)
    prob.train, prob.valid, prob.test   # DataSets of the signal region's events
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from ..data import DataSet
from ..likelihood import Channel, HistoSys, Model, Sample, StatError
from ..likelihood.modifiers import Lumi, Modifier, NormFactor, NormSys
from ..loss import Analysis, Process
from ..nuisance import AltSampleNuisance, ShapeNuisance, WeightNuisance
from .. import htautau as hb

__all__ = ["SYSTEMATICS", "CR_FEATURE", "CR_EDGES", "WEIGHT_EXTRAS", "POI_BOUNDS", "HTauTauProblem",
           "select", "split_events", "to_dataset", "region_yields", "control_region_model",
           "htautau_analysis", "prepare"]

#: the shape systematics of the analysis (the rate ones are always there)
SYSTEMATICS: Tuple[str, ...] = ("tes", "jes", "tau_id", "ttbar_model")
#: the feature binned in the control region, and its bin edges (GeV; the last bin open)
CR_FEATURE: str = "m_vis"
CR_EDGES: Tuple[float, ...] = (0.0, 60.0, 100.0, 150.0, math.inf)
#: the per-event weight columns carried as DataSet extras (for the tau-ID WeightNuisance)
WEIGHT_EXTRAS: Tuple[str, ...] = ("weight_tau_id_up", "weight_tau_id_down")
#: bounds of the signal strength (finite: pyhf needs them; wide enough for any toy)
POI_BOUNDS: Tuple[float, float] = (-10.0, 20.0)

_EVENT_KEYS = ("primary", "features", "label") + hb.WEIGHT_COLUMNS


# ----------------------------------------------------------------------------- events
def select(events: Mapping[str, np.ndarray], mask: np.ndarray) -> Dict[str, np.ndarray]:
    """The events of ``mask`` (every column of :func:`~inferno.htautau.generate`)."""
    return {k: np.asarray(events[k])[mask] for k in _EVENT_KEYS}


def _check_events(events: Mapping[str, np.ndarray]) -> None:
    missing = [k for k in _EVENT_KEYS if k not in events]
    if missing:
        raise ValueError(f"events need the columns of htautau.generate(): missing {missing}")


def split_events(events: Mapping[str, np.ndarray], fractions: Sequence[float] = (0.5, 0.2, 0.3),
                 seed: int = 0) -> List[Dict[str, np.ndarray]]:
    """Split events at random into parts of the given ``fractions`` (e.g. training, validation,
    test), sample by sample (each part gets the same fraction of every sample, rounded down,
    the last part the rest), reproducibly for a ``seed``.

    Raises:
        ValueError: fractions that are not positive or do not sum to 1.
    """
    _check_events(events)
    fr = np.asarray(list(fractions), dtype=np.float64)
    if fr.ndim != 1 or len(fr) < 1 or not np.all(np.isfinite(fr)) or np.any(fr <= 0) or abs(fr.sum() - 1) > 1e-9:
        raise ValueError(f"fractions must be positive and sum to 1, got {list(fractions)}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5EED]))
    labels = np.asarray(events["label"])
    parts: List[List[np.ndarray]] = [[] for _ in fr]
    for lab in np.unique(labels):
        idx = np.flatnonzero(labels == lab)
        idx = idx[rng.permutation(len(idx))]
        cuts = np.floor(np.cumsum(fr)[:-1] * len(idx)).astype(int)
        for j, piece in enumerate(np.split(idx, cuts)):
            parts[j].append(piece)
    return [select(events, np.sort(np.concatenate(p))) for p in parts]


def to_dataset(events: Mapping[str, np.ndarray]) -> DataSet:
    """A :class:`~inferno.data.DataSet` of the events: ``x`` the primary objects (the network's
    first layer is :class:`~inferno.htautau.FeatureLayer`), ``y`` the sample labels,
    ``w`` the weights, ``extras`` the tau-ID up/down weight columns (:data:`WEIGHT_EXTRAS`)."""
    _check_events(events)
    return DataSet(events["primary"], events["label"], events["weight"],
                   extras={k: events[k] for k in WEIGHT_EXTRAS})


def region_yields(events: Mapping[str, np.ndarray], region: np.ndarray,
                  lumi: Optional[float] = None) -> Dict[str, float]:
    """Expected yield of every process in the events of ``region`` (a bool mask): the process's
    expected yield times the fraction of its generated weight in the region."""
    lab, w = np.asarray(events["label"]), np.asarray(events["weight"], dtype=np.float64)
    out = {}
    for name, p in hb.CONSTANTS.processes.items():
        m = lab == p.label
        total = float(w[m].sum())
        if not total > 0:
            raise ValueError(f"no events (or a non-positive summed weight) of process {name!r}")
        out[name] = p.expected(hb.CONSTANTS.lumi if lumi is None else lumi) * float(w[m & region].sum()) / total
    return out


# ----------------------------------------------------------------------------- the model
def _rate_modifiers(name: str, free_ttbar: bool) -> List[Modifier]:
    c = hb.CONSTANTS
    if name == c.signal:
        return [NormFactor("mu"), Lumi()]
    if name == "ttbar" and free_ttbar:
        return [NormFactor("mu_ttbar")]
    u = c.processes[name].rate_uncertainty
    mods: List[Modifier] = [NormSys(f"norm_{name}", hi=1.0 + u, lo=1.0 - u)] if u > 0 else []
    return mods + [Lumi()]


def _check_systematics(systematics: Sequence[str]) -> Tuple[str, ...]:
    syst = tuple(systematics)
    bad = [s for s in syst if s not in SYSTEMATICS]
    if bad:
        raise ValueError(f"unknown systematics {bad}: choose from {list(SYSTEMATICS)}")
    if len(set(syst)) != len(syst):
        raise ValueError(f"systematics named twice: {list(syst)}")
    return syst


def _hist(values: np.ndarray, w: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    idx = np.clip(np.searchsorted(np.asarray(edges[1:-1]), values, side="right"), 0, len(edges) - 2)
    return np.bincount(idx, weights=w, minlength=len(edges) - 1).astype(np.float64)


def control_region_model(events: Mapping[str, np.ndarray], systematics: Sequence[str] = SYSTEMATICS,
                         mc_stat: bool = False, free_ttbar: bool = True, channel: str = "control",
                         edges: Sequence[float] = CR_EDGES, feature: str = CR_FEATURE, min_mc: int = 50) -> Model:
    """The control region as a fixed :class:`~inferno.likelihood.Model`: the events with a
    b-tagged jet, binned in ``feature`` (``edges``), every process normalised to its expected
    yield times its fraction of generated weight in the region (see the module docstring for
    the modifiers). The energy-scale variations move the events (exact transform at +-1
    sigma, features recomputed), the tau-ID ones re-weight them (the rate change kept), the
    alternative ttbar samples give a shape (normalised to the nominal ttbar yield of the
    region). A process with fewer than ``min_mc`` simulated events in the region is left out
    of it (pruned, as negligible samples are in HistFactory analyses: the diboson, 0.4% of
    whose ~3000 events have a b-tagged jet, i.e. about 5 of the region's ~7000 events, would
    otherwise give a few-event template with negative bins).

    Args:
        events: all the generated events (both regions; every process and, with
            ``ttbar_model``, both alternative samples).
        systematics: the shape systematics to include (of :data:`SYSTEMATICS`).
        mc_stat: add a ``staterror`` (``mc_stat_<channel>``) from the sums of squared weights.
        free_ttbar: the ttbar normalisation is a free ``NormFactor`` ``mu_ttbar``.

    Raises:
        ValueError: unknown systematics, a process without events in the region, a bin with
            a negative template (negative weights).
    """
    _check_events(events)
    syst = _check_systematics(systematics)
    if feature not in hb.FEATURES:
        raise ValueError(f"unknown feature {feature!r}: the features are {list(hb.FEATURES)}")
    e = np.asarray(edges, dtype=np.float64)
    if e.ndim != 1 or len(e) < 2 or np.any(np.diff(e) <= 0):
        raise ValueError(f"edges must be increasing, got {list(edges)}")
    c = hb.CONSTANTS
    lab = np.asarray(events["label"])
    w = np.asarray(events["weight"], dtype=np.float64)
    cr = hb.control_region(events["features"])
    j = hb.FEATURES.index(feature)
    prim = torch.from_numpy(np.ascontiguousarray(events["primary"]))
    samples = []
    for name, p in c.processes.items():
        m = lab == p.label
        total = float(w[m].sum())
        sel = m & cr
        if int(sel.sum()) < min_mc:
            continue
        scale = p.expected(c.lumi) / total
        x = events["features"][sel, j]
        nominal = scale * _hist(x, w[sel], e)
        if np.any(nominal < 0):
            raise ValueError(f"control region: process {name!r} has a negative template {nominal.tolist()} "
                             "(negative weights): generate more events")
        mods = _rate_modifiers(name, free_ttbar)
        for s in syst:
            if s in ("tes", "jes"):
                es = hb.EnergyScale("tau" if s == "tes" else "jet")
                hi_lo = []
                with torch.no_grad():
                    for a in (1.0, -1.0):
                        f = hb.features(es(prim[sel], a)).numpy()[:, j]
                        hi_lo.append(scale * _hist(f, w[sel], e))
            elif s == "tau_id":
                hi_lo = [scale * _hist(x, np.asarray(events[k], dtype=np.float64)[sel], e) for k in WEIGHT_EXTRAS]
            else:  # ttbar_model: a shape of ttbar only
                if name != "ttbar":
                    continue
                hi_lo = []
                for alt in ("ttbar_up", "ttbar_down"):
                    ma = (lab == c.labels[alt]) & cr
                    if not ma.any():
                        raise ValueError(f"control region: no events of the alternative sample {alt!r}")
                    ha = _hist(events["features"][ma, j], w[ma], e)
                    hi_lo.append(ha * nominal.sum() / ha.sum())
            mods.append(HistoSys(s, hi=hi_lo[0], lo=hi_lo[1]))
        if mc_stat:
            mods.append(StatError(f"mc_stat_{channel}", sigma=scale * np.sqrt(_hist(x, w[sel] ** 2, e))))
        samples.append(Sample(name, nominal, mods))
    if not any(sm.name == "ttbar" for sm in samples):
        raise ValueError(f"control region: fewer than {min_mc} ttbar events: generate more events")
    names = {m.name for sm in samples for m in sm.modifiers}
    params = {k: v for k, v in {"lumi": {"sigma": c.lumi_uncertainty}, "mu": {"bounds": POI_BOUNDS}}.items()
              if k in names}
    return Model([Channel(channel, samples)], poi="mu" if "mu" in names else None, parameters=params)


def htautau_analysis(events: Mapping[str, np.ndarray], systematics: Sequence[str] = SYSTEMATICS,
                     mc_stat: bool = False, n_mc: Optional[Mapping[str, int]] = None, free_ttbar: bool = True,
                     control: bool = True, loss: str = "variance") -> Analysis:
    r"""The :class:`~inferno.loss.Analysis` of the benchmark (see the module docstring).

    Args:
        events: all the generated events (both regions): they give the processes' expected
            yields in the signal region and, with ``control``, the control region's model.
        systematics: the shape systematics (of :data:`SYSTEMATICS`); the rate ones (``mu``,
            ``mu_ttbar`` or the ttbar ``NormSys``, ``norm_*``, ``lumi``) are always there.
        mc_stat: the MC statistical uncertainty of the templates in both regions; needs
            ``n_mc``.
        n_mc: process name -> its number of events in the sample the signal-region templates
            are built from (:class:`~inferno.loss.Process`'s ``n_mc``).
        free_ttbar: a free ttbar normalisation ``mu_ttbar`` (else a 10% ``NormSys``).
        control: include the control region (a fixed channel); without it a free ttbar
            normalisation is constrained by the signal region alone.
        loss: the INFERNO loss kind (``'variance'`` of ``mu``, all else profiled).

    Returns:
        the Analysis: learned channel ``'signal'``, POI ``mu``.
    """
    _check_events(events)
    syst = _check_systematics(systematics)
    c = hb.CONSTANTS
    sr = ~hb.control_region(events["features"])
    yields = region_yields(events, sr)
    if mc_stat:
        if n_mc is None:
            raise ValueError("mc_stat needs n_mc: the number of events of every process in the template sample")
        missing = [k for k in c.processes if k not in n_mc]
        if missing:
            raise ValueError(f"n_mc is missing the processes {missing}")
    procs = [Process(name, p.label, yields[name], _rate_modifiers(name, free_ttbar),
                     n_mc=int(n_mc[name]) if mc_stat else None)
             for name, p in c.processes.items()]
    on = list(c.processes)
    nuis = []
    for s in syst:
        if s == "tes":
            nuis.append(ShapeNuisance("tes", hb.EnergyScale("tau"), on=on, nominal=0.0, constraint=1.0,
                                      variations=(-1.0, 1.0)))
        elif s == "jes":
            nuis.append(ShapeNuisance("jes", hb.EnergyScale("jet"), on=on, nominal=0.0, constraint=1.0,
                                      variations=(-1.0, 1.0)))
        elif s == "tau_id":
            nuis.append(WeightNuisance("tau_id", WEIGHT_EXTRAS[0], WEIGHT_EXTRAS[1], on=on))
        else:
            nuis.append(AltSampleNuisance("ttbar_model", c.labels["ttbar_up"], c.labels["ttbar_down"], on="ttbar"))
    fixed = control_region_model(events, syst, mc_stat=mc_stat, free_ttbar=free_ttbar) if control else None
    params = {"lumi": {"sigma": c.lumi_uncertainty}, "mu": {"bounds": POI_BOUNDS}}
    # the diboson's ~13% negative weights, ~20 events per batch: its batch histograms can dip below 0
    return Analysis(procs, nuis, poi="mu", fixed=fixed, channel="signal", mc_stat=mc_stat, loss=loss, negative="clip",
                    parameters=params)


# ----------------------------------------------------------------------------- the problem
@dataclass
class HTauTauProblem:
    """The benchmark ready to train and measure on (:func:`prepare`).

    Attributes:
        analysis: the :class:`~inferno.loss.Analysis` (learned signal region, fixed control
            region).
        train, valid, test: the signal region's events split at random, as dicts of arrays
            (every sample, the alternative ttbar ones included).
        control: the control region's events (of the template events).
        events: all the template events (both regions).
        sr_yields: process -> expected yield in the signal region.
        n_test: process -> events in the test sample (the templates' sample).
        systematics, mc_stat, free_ttbar: the settings.
    """

    analysis: Analysis
    train: Dict[str, np.ndarray]
    valid: Dict[str, np.ndarray]
    test: Dict[str, np.ndarray]
    control: Dict[str, np.ndarray]
    events: Dict[str, np.ndarray]
    sr_yields: Dict[str, float]
    n_test: Dict[str, int]
    systematics: Tuple[str, ...] = SYSTEMATICS
    mc_stat: bool = False
    free_ttbar: bool = True
    datasets: Dict[str, DataSet] = field(default_factory=dict, repr=False)

    def dataset(self, part: str) -> DataSet:
        """The :class:`~inferno.data.DataSet` of ``'train'``, ``'valid'`` or ``'test'`` (cached)."""
        if part not in ("train", "valid", "test"):
            raise ValueError(f"part must be 'train', 'valid' or 'test', got {part!r}")
        if part not in self.datasets:
            self.datasets[part] = to_dataset(getattr(self, part))
        return self.datasets[part]


def prepare(events: Mapping[str, np.ndarray], test_events: Optional[Mapping[str, np.ndarray]] = None, seed: int = 0,
            fractions: Optional[Sequence[float]] = None, systematics: Sequence[str] = SYSTEMATICS,
            mc_stat: bool = False, free_ttbar: bool = True, control: bool = True) -> HTauTauProblem:
    """The benchmark's samples and analysis from generated events.

    The signal region of ``events`` is split at random (sample by sample, seeded) into
    training and validation samples (``fractions``, default ``(0.7, 0.3)``) and the test
    sample, the one the templates are built from, is the signal region of ``test_events``
    (an independent generation, typically larger: the MC statistics of the templates then do
    not depend on the training sample's size). Without ``test_events`` the signal region of
    ``events`` is split three ways (``fractions`` default ``(0.5, 0.2, 0.3)``). The control
    region's model and the processes' expected yields in the signal region come from the
    template events (``test_events``, else ``events``); ``n_mc`` of the processes is their
    count in the test sample.

    Raises:
        ValueError: a process or alternative sample without events in a part of the signal
            region (generate more events), bad fractions.
    """
    _check_events(events)
    syst = _check_systematics(systematics)
    sr_events = select(events, ~hb.control_region(events["features"]))
    if test_events is None:
        train, valid, test = split_events(sr_events, (0.5, 0.2, 0.3) if fractions is None else fractions, seed)
        tmpl = events
    else:
        _check_events(test_events)
        fr = (0.7, 0.3) if fractions is None else fractions
        if len(fr) != 2:
            raise ValueError(f"with test_events, fractions are (training, validation), got {list(fr)}")
        train, valid = split_events(sr_events, fr, seed)
        tmpl = test_events
        test = select(test_events, ~hb.control_region(test_events["features"]))
    need = [s for s in hb.SAMPLES if s in hb.PROCESSES or "ttbar_model" in syst]
    for part, ev in (("training", train), ("validation", valid), ("test", test)):
        have = set(np.unique(ev["label"]).tolist())
        lack = [s for s in need if hb.LABELS[s] not in have]
        if lack:
            raise ValueError(f"the {part} sample of the signal region has no events of {lack}: generate more events")
    n_test = {k: int((test["label"] == p.label).sum()) for k, p in hb.PROCESSES.items()}
    analysis = htautau_analysis(tmpl, syst, mc_stat=mc_stat, n_mc=n_test, free_ttbar=free_ttbar, control=control)
    labels = [hb.LABELS[s] for s in need]
    train, valid, test = (ev if np.isin(ev["label"], labels).all() else select(ev, np.isin(ev["label"], labels))
                          for ev in (train, valid, test))  # alternative samples unused without ttbar_model
    cr = hb.control_region(tmpl["features"])
    return HTauTauProblem(analysis=analysis, train=train, valid=valid, test=test, control=select(tmpl, cr),
                          events=select(tmpl, np.ones(len(cr), dtype=bool)),
                          sr_yields=region_yields(tmpl, ~cr), n_test=n_test, systematics=syst,
                          mc_stat=bool(mc_stat), free_ttbar=bool(free_ttbar))
