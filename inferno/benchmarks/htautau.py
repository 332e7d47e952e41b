r"""A Higgs to tau tau-like search: a seeded generator of weighted events with systematics.

Modelled on the structure of the FAIR Universe HiggsML uncertainty challenge (2024) and of
the :math:`H \to \tau\tau \to \tau_h \ell` analyses: a hadronic tau, a lepton,
missing transverse momentum and up to three jets per event; a signal and three
backgrounds; an energy scale of the tau and one of the jets, a tau identification
efficiency, an alternative top sample, rate uncertainties, limited MC statistics and
negative weights. **Every number here is a toy number**, chosen to give the problem the
structure of a real analysis, not the values of one.

Processes (:data:`PROCESSES`; labels 0-3, the alternative top samples 4 and 5)
-------------------------------------------------------------------------------

============  =====  ==========  =======  ===============================================
process       label  sigma (fb)  yield    description
============  =====  ==========  =======  ===============================================
htautau       0      80          800      signal: :math:`H(125) \to \tau\tau`, 85%
                                          gluon fusion (harder jets), 15% VBF-like (two
                                          forward jets, large :math:`m_{jj}`)
ztautau       1      5000        50000    irreducible, dominant: :math:`Z(91) \to \tau\tau`,
                                          softer recoil, fewer jets
ttbar         2      800         8000     :math:`t\bar t \to bW\,bW`, :math:`W \to \tau\nu`,
                                          :math:`W \to \ell\nu`: two b jets (high b-tag
                                          score), more jets, harder MET; free
                                          normalisation in the analysis (control region:
                                          :func:`control_region`)
diboson       3      120         1200     :math:`WW \to \tau\nu\,\ell\nu`: small, 25%
                                          rate uncertainty, few raw events (3000 at most by
                                          default), NLO-like: ~13% negative weights
ttbar_up      4      (800)       (8000)   ttbar with a harder top :math:`p_T` spectrum and
                                          more initial-state jets (modelling +1 sigma)
ttbar_down    5      (800)       (8000)   softer top :math:`p_T`, fewer jets (-1 sigma)
============  =====  ==========  =======  ===============================================

The cross sections are *fiducial* (after the selection below) and the yields are for the
stated luminosity :data:`LUMI` = 10 /fb: an event of a sample of :math:`N` raw events has
the weight :math:`\sigma L / N` (times its generator weight, :math:`\pm` for the NLO-like
diboson, of mean 1), so the weights of each process sum to its expected yield
(:func:`expected_yields`) exactly (diboson: within its MC error).

Generation (vectorised numpy, :mod:`inferno.benchmarks.kinematics`)
--------------------------------------------------------------------

* the resonances: :math:`m_H = 125`, :math:`m_Z` from a Breit-Wigner (91.19, 2.50); their
  transverse momentum balances the initial-state jets plus a soft kick; isotropic decay to
  two taus, one decaying hadronically (:math:`\pi`, :math:`\rho`, :math:`a_1`: the visible
  mass; collinear, with the visible momentum fraction of each mode), the other to a lepton
  (collinear, unpolarised leptonic spectrum); the neutrinos make the true MET;
* top pairs: top :math:`p_T` from a Gamma spectrum, isotropic :math:`t \to bW`,
  :math:`W \to \tau\nu` (then :math:`\tau \to \tau_h\nu`) and :math:`W \to \ell\nu`;
  dibosons alike, from a :math:`WW` system of continuum mass;
* detector: tau :math:`p_T` resolution 8%, lepton 2%, jets
  :math:`\sqrt{0.8^2/p_T + 0.05^2}`, small angular smearing, a b-tag score per jet (Beta
  distributed: above the working point 0.7 for 70% of b jets, 1% of light jets); jets are
  reconstructed above 25 GeV and :math:`|\eta| < 4.5`, the three leading kept; everything
  else (softer jets, the underlying event: 70% response, 8 GeV noise per component) is the
  *soft term*;
  :math:`\vec E_T^\text{miss} = -(\vec p_T^{\,\tau} + \vec p_T^{\,\ell} + \sum \vec p_T^{\,j}
  + \vec p_T^\text{soft})`, so that it moves when the objects do;
* selection (at the nominal energy scales): tau and lepton :math:`p_T > 20` GeV,
  :math:`|\eta| < 2.5`.

Primary objects and features: how the systematics reach the network
--------------------------------------------------------------------

Each event is stored as its **primary objects**, :data:`PRIMARY` (21 columns: the tau
:math:`p_T, \eta, \phi, m`; the lepton :math:`p_T, \eta, \phi`; MET and its
:math:`\phi`; three jet slots :math:`p_T, \eta, \phi` and b-tag score, all zero for an
absent jet), and its **derived features**, :data:`FEATURES` (16 columns: visible and
collinear masses, transverse mass, :math:`p_T` of the Higgs candidate, :math:`\Delta R`,
centralities, jet multiplicity, :math:`m_{jj}`, ...), computed from the primary objects by
one differentiable torch function, :func:`features`.

The network's inputs are the primary objects and its first layer is :class:`FeatureLayer`
(:func:`features`, then a fixed standardisation). The energy scales are then transforms of
the primary objects, where they act physically (:class:`EnergyScale`: the tau, or the jets,
scaled by :math:`1 + \alpha\sigma`, MET moved by minus the change of their transverse
momentum), and INFERNO differentiates through transform and network alike: exact, with
several features moving coherently, and nothing to keep in sync (storing the features next
to the objects and recomputing them inside the transform would be equivalent, but would
feed the network the raw angles too)::

    from inferno import ShapeNuisance
    from inferno.benchmarks import htautau as hb

    ev = hb.generate(100_000, seed=1)                    # primary, features, label, weights
    tes = ShapeNuisance("tes", hb.EnergyScale("tau"), on=["htautau", "ztautau", "ttbar", "diboson"],
                        nominal=0.0, constraint=1.0, variations=(-1.0, 1.0))
    net = torch.nn.Sequential(hb.FeatureLayer.fit(ev["primary"]), torch.nn.Linear(16, 100), ...)

The stored ``features`` are exactly ``features(primary)`` (classifiers trained without
systematics, and plots, can read them directly).
:data:`FEATURE_DEPENDENCE` lists the features each energy scale moves; the others are
unchanged (:math:`p_T^H` and :math:`p_T^\text{tot}` are invariant under the tau scale: MET
absorbs the change). The thresholds are applied at the nominal scales, so the energy scales
move events but never across a threshold (the transform is one-to-one and exact; the
acceptance change it neglects is a rate effect). ``generate(..., tes=k)`` applies the scale
at generation time instead, after the smearing and with the same random numbers: it gives
the transformed events (to float precision).

Weight systematic: the tau identification efficiency, uncertain by 3% at 20 GeV rising to
10% at 200 GeV (:func:`tau_id_uncertainty`, at the nominal tau :math:`p_T`): columns
``weight_tau_id_up``/``_down``, for a :class:`~inferno.nuisance.WeightNuisance`.
Rate uncertainties (:data:`CONSTANTS`): luminosity 2%, ztautau 5%, ttbar 10%, diboson 25%.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

from . import kinematics as kin

__all__ = [
    "LUMI", "PRIMARY", "FEATURES", "PROCESSES", "ALT_SAMPLES", "SAMPLES", "LABELS", "SIGNAL",
    "CONSTANTS", "ProcessInfo", "Constants", "FEATURE_DEPENDENCE", "WEIGHT_COLUMNS",
    "generate", "features", "scale_objects", "EnergyScale", "FeatureLayer", "expected_yields",
    "tau_id_uncertainty", "control_region", "to_dataframe", "tes_factor", "jes_factor",
]

Seed = Union[None, int, np.random.Generator, np.random.SeedSequence]

# ---------------------------------------------------------------------------- constants
#: the stated integrated luminosity (fb^-1); the weights are normalised to it
LUMI: float = 10.0

#: the primary objects, the columns of ``events["primary"]`` (absent jets: all zero)
PRIMARY: Tuple[str, ...] = (
    "tau_pt", "tau_eta", "tau_phi", "tau_m",
    "lep_pt", "lep_eta", "lep_phi",
    "met", "met_phi",
    "jet1_pt", "jet1_eta", "jet1_phi", "jet1_btag",
    "jet2_pt", "jet2_eta", "jet2_phi", "jet2_btag",
    "jet3_pt", "jet3_eta", "jet3_phi", "jet3_btag",
)

#: the derived features, the columns of :func:`features` (and of ``events["features"]``)
FEATURES: Tuple[str, ...] = (
    "m_vis",               # invariant mass of tau and lepton
    "m_coll",              # collinear-approximation mass of the tau pair (MMC-like)
    "mt_lep_met",          # transverse mass of lepton and MET
    "pt_h",                # |pT(tau) + pT(lep) + MET|: the Higgs candidate's pT
    "dr_tau_lep",          # Delta R(tau, lepton)
    "pt_ratio_lep_tau",    # pT(lep) / pT(tau)
    "met",                 # missing transverse momentum
    "met_phi_centrality",  # is MET between tau and lepton in phi (HiggsML definition)
    "sum_pt",              # scalar sum of the pT of tau, lepton and jets
    "pt_tot",              # |pT(tau) + pT(lep) + MET + sum pT(jets)|
    "n_jets",              # number of jets (0-3)
    "jet1_pt",             # leading jet pT (0 without jets)
    "deta_jj",             # |Delta eta| of the two leading jets (0 with < 2 jets)
    "m_jj",                # their invariant mass (0 with < 2 jets)
    "lep_eta_centrality",  # the lepton between the two jets in eta (0 with < 2 jets)
    "btag_max",            # the highest b-tag score of the jets (0 without jets)
)

_P = {k: i for i, k in enumerate(PRIMARY)}
_TAU_PT, _TAU_ETA, _TAU_PHI, _TAU_M = (_P[k] for k in ("tau_pt", "tau_eta", "tau_phi", "tau_m"))
_LEP_PT, _LEP_ETA, _LEP_PHI = (_P[k] for k in ("lep_pt", "lep_eta", "lep_phi"))
_MET, _MET_PHI = _P["met"], _P["met_phi"]
_JET0 = _P["jet1_pt"]  # jet j (0-2), quantity q (pt, eta, phi, btag): column _JET0 + 4 j + q
N_JETS_MAX = 3

#: the features that each energy scale moves (all others are unchanged by it)
FEATURE_DEPENDENCE: Dict[str, Tuple[str, ...]] = {
    # m_coll moves under the tau scale only where the collinear solution is clipped (about
    # half of the events): MET absorbing the change, the summed tau momenta are invariant;
    # pt_h and pt_tot are invariant for the same reason
    "tes": ("m_vis", "m_coll", "mt_lep_met", "pt_ratio_lep_tau", "met", "met_phi_centrality",
            "sum_pt"),
    "jes": ("m_coll", "mt_lep_met", "pt_h", "met", "met_phi_centrality", "sum_pt", "jet1_pt",
            "m_jj"),
}

#: the names of the per-event weight columns of :func:`generate`
WEIGHT_COLUMNS: Tuple[str, ...] = ("weight", "weight_tau_id_up", "weight_tau_id_down")


@dataclass(frozen=True)
class ProcessInfo:
    """One process of the toy analysis (toy numbers, not real ones).

    Attributes:
        name: the process.
        label: the integer marking its events (``events["label"]``).
        xsec_fb: its fiducial cross section (after the selection), fb.
        rate_uncertainty: relative uncertainty of its normalisation (a ``NormSys``; 0: none,
            e.g. the signal, whose rate is the parameter of interest).
        n_mc_max: the most raw events :func:`generate` makes of it when given one count for
            every sample (limited MC statistics), or None.
        neg_weight_fraction: the approximate fraction of negative weights (NLO-like), 0 if none.
        description: what it is.
    """

    name: str
    label: int
    xsec_fb: float
    rate_uncertainty: float
    n_mc_max: Optional[int] = None
    neg_weight_fraction: float = 0.0
    description: str = ""

    def expected(self, lumi: float = LUMI) -> float:
        """The expected yield (events) for ``lumi`` fb^-1."""
        return self.xsec_fb * float(lumi)


#: the processes of the learned channel, by name (labels 0-3; the signal first)
PROCESSES: Dict[str, ProcessInfo] = {
    "htautau": ProcessInfo("htautau", 0, 80.0, 0.0, None, 0.0,
                           "signal: H(125) -> tau tau -> tau_h lep, 85% ggF-like, 15% VBF-like"),
    "ztautau": ProcessInfo("ztautau", 1, 5000.0, 0.05, None, 0.0,
                           "irreducible, dominant: Z(91) -> tau tau -> tau_h lep"),
    "ttbar": ProcessInfo("ttbar", 2, 800.0, 0.10, None, 0.0,
                         "top pairs: bW bW, W -> tau nu, W -> lep nu; b jets, harder MET"),
    "diboson": ProcessInfo("diboson", 3, 120.0, 0.25, 3000, 0.13,
                           "WW -> tau nu lep nu: small, large rate uncertainty, NLO-like negative weights"),
}
#: the signal process
SIGNAL: str = "htautau"
#: alternative samples: name -> (label, process it varies, direction)
ALT_SAMPLES: Dict[str, Tuple[int, str, str]] = {
    "ttbar_up": (4, "ttbar", "up"),
    "ttbar_down": (5, "ttbar", "down"),
}
#: every sample :func:`generate` makes, in output order
SAMPLES: Tuple[str, ...] = tuple(PROCESSES) + tuple(ALT_SAMPLES)
#: sample name -> label
LABELS: Dict[str, int] = {**{k: p.label for k, p in PROCESSES.items()},
                          **{k: v[0] for k, v in ALT_SAMPLES.items()}}

# the ttbar modelling parameter: the top pT spectrum (Gamma, shape 2, this scale in GeV) and
# the initial-state jets (multiplicity probabilities 0, 1, 2 and mean pT above 20 GeV)
_TTBAR_MODEL = {
    "nominal": dict(top_pt_scale=45.0, isr_probs=(0.55, 0.32, 0.13), isr_pt=35.0),
    "up": dict(top_pt_scale=52.0, isr_probs=(0.45, 0.37, 0.18), isr_pt=40.0),
    "down": dict(top_pt_scale=38.0, isr_probs=(0.65, 0.27, 0.08), isr_pt=30.0),
}


@dataclass(frozen=True)
class Constants:
    """Everything an :class:`~inferno.loss.Analysis` of this benchmark needs (toy numbers).

    Attributes:
        lumi: the stated luminosity (fb^-1).
        lumi_uncertainty: its relative uncertainty (a ``Lumi`` modifier on every process).
        processes: :data:`PROCESSES`.
        signal: the signal process's name.
        alt_samples: :data:`ALT_SAMPLES` (name -> (label, process, direction)).
        labels: sample name -> label.
        tes_sigma, jes_sigma: the relative energy-scale uncertainties (one sigma): the tau
            (jets) are scaled by ``1 + alpha * sigma``.
        tau_id: ``(lo, hi, pt_lo, pt_hi)``: the tau identification uncertainty rises
            linearly from ``lo`` at ``pt_lo`` to ``hi`` at ``pt_hi`` (GeV), constant outside.
        ttbar_model: the ttbar modelling parameter at nominal, up and down.
        btag_wp: the b-tag score above which a jet is b-tagged (:func:`control_region`).
        primary, features: the column names.
    """

    lumi: float = LUMI
    lumi_uncertainty: float = 0.02
    processes: Mapping[str, ProcessInfo] = field(default_factory=lambda: dict(PROCESSES))
    signal: str = SIGNAL
    alt_samples: Mapping[str, Tuple[int, str, str]] = field(default_factory=lambda: dict(ALT_SAMPLES))
    labels: Mapping[str, int] = field(default_factory=lambda: dict(LABELS))
    tes_sigma: float = 0.03
    jes_sigma: float = 0.04
    tau_id: Tuple[float, float, float, float] = (0.03, 0.10, 20.0, 200.0)
    ttbar_model: Mapping[str, Mapping[str, object]] = field(default_factory=lambda: dict(_TTBAR_MODEL))
    btag_wp: float = 0.7
    primary: Tuple[str, ...] = PRIMARY
    features: Tuple[str, ...] = FEATURES

    def expected_yields(self, lumi: Optional[float] = None) -> Dict[str, float]:
        """Process name -> expected yield (events) at ``lumi`` (default: the stated one)."""
        return {k: p.expected(self.lumi if lumi is None else lumi) for k, p in self.processes.items()}

    def rate_uncertainties(self) -> Dict[str, float]:
        """Process name -> relative rate uncertainty, for the processes that have one."""
        return {k: p.rate_uncertainty for k, p in self.processes.items() if p.rate_uncertainty > 0}


#: the constants of the benchmark
CONSTANTS = Constants()


def expected_yields(lumi: float = LUMI) -> Dict[str, float]:
    """Process name -> expected yield at ``lumi`` fb^-1 (:math:`\\sigma_\\text{fid} L`)."""
    return CONSTANTS.expected_yields(lumi)


def tes_factor(alpha: float) -> float:
    """The tau energy scale factor at ``alpha`` standard deviations: ``1 + alpha * 0.03``."""
    return 1.0 + float(alpha) * CONSTANTS.tes_sigma


def jes_factor(alpha: float) -> float:
    """The jet energy scale factor at ``alpha`` standard deviations: ``1 + alpha * 0.04``."""
    return 1.0 + float(alpha) * CONSTANTS.jes_sigma


def tau_id_uncertainty(tau_pt) -> np.ndarray:
    """The relative tau identification efficiency uncertainty at ``tau_pt`` (GeV): 3% at
    20 GeV rising linearly to 10% at 200 GeV, constant outside."""
    lo, hi, p0, p1 = CONSTANTS.tau_id
    t = np.clip((np.asarray(tau_pt, dtype=np.float64) - p0) / (p1 - p0), 0.0, 1.0)
    return lo + (hi - lo) * t


# ---------------------------------------------------------------------------- features (torch)
def _safe_sqrt(x: Tensor) -> Tensor:
    return torch.sqrt(torch.clamp(x, min=1e-12))


def _dphi(a: Tensor, b: Tensor) -> Tensor:
    d = a - b
    return torch.atan2(torch.sin(d), torch.cos(d))


def features(primary: Tensor) -> Tensor:
    r"""The derived features :data:`FEATURES` of rows of primary objects.

    Args:
        primary: ``(n, 21)`` tensor, columns :data:`PRIMARY` (a numpy array is converted).

    Returns:
        ``(n, 16)`` tensor of the input's dtype (computed in float64). Differentiable in
        the inputs (reverse and forward mode, vmap-able): an energy scale applied to the
        primary objects propagates to the features exactly.
    """
    if not isinstance(primary, Tensor):
        primary = torch.as_tensor(np.asarray(primary))
    if primary.ndim != 2 or primary.shape[1] != len(PRIMARY):
        raise ValueError(f"primary must have shape (n, {len(PRIMARY)}) (columns PRIMARY), "
                         f"got {tuple(primary.shape)}")
    dtype = primary.dtype if primary.is_floating_point() else torch.float32
    x = primary.to(torch.float64)
    tpt, teta, tphi, tm = x[:, _TAU_PT], x[:, _TAU_ETA], x[:, _TAU_PHI], x[:, _TAU_M]
    lpt, leta, lphi = x[:, _LEP_PT], x[:, _LEP_ETA], x[:, _LEP_PHI]
    met, mphi = x[:, _MET], x[:, _MET_PHI]
    jets = x[:, _JET0:_JET0 + 4 * N_JETS_MAX].reshape(-1, N_JETS_MAX, 4)
    jpt, jeta, jphi, jb = jets[..., 0], jets[..., 1], jets[..., 2], jets[..., 3]
    present = (jpt > 0).to(x.dtype)
    n_jets = present.sum(1)
    has2 = n_jets >= 2

    tpx, tpy = tpt * torch.cos(tphi), tpt * torch.sin(tphi)
    lpx, lpy = lpt * torch.cos(lphi), lpt * torch.sin(lphi)
    mx, my = met * torch.cos(mphi), met * torch.sin(mphi)
    jpx, jpy = (jpt * torch.cos(jphi)).sum(1), (jpt * torch.sin(jphi)).sum(1)

    # visible mass, tau massive, lepton massless; written without cancellations:
    # E1 E2 - p1.p2 = E2 m1^2 / (E1 + |p1|) + pT1 pT2 (cosh deta - cos dphi)
    dphi_tl = _dphi(tphi, lphi)
    deta_tl = teta - leta
    tp = tpt * torch.cosh(teta)
    te = torch.sqrt(tp * tp + tm * tm)
    le = lpt * torch.cosh(leta)
    m_vis = _safe_sqrt(tm * tm + 2.0 * (le * tm * tm / (te + tp)
                                        + tpt * lpt * (torch.cosh(deta_tl) - torch.cos(dphi_tl))))
    # collinear approximation: MET = a pT(tau) + b pT(lep), x_tau = 1 / (1 + a), ...
    det = tpx * lpy - tpy * lpx
    eps = 1e-4 * tpt * lpt
    det = torch.where(det.abs() < eps, torch.where(det >= 0, eps, -eps), det)
    a = torch.clamp((mx * lpy - my * lpx) / det, 0.0, 4.0)
    b = torch.clamp((tpx * my - tpy * mx) / det, 0.0, 4.0)
    m_coll = m_vis * torch.sqrt((1.0 + a) * (1.0 + b))
    mt = _safe_sqrt(2.0 * lpt * met * (1.0 - torch.cos(_dphi(lphi, mphi))))
    hx, hy = tpx + lpx + mx, tpy + lpy + my
    pt_h = _safe_sqrt(hx * hx + hy * hy)
    dr = torch.sqrt(deta_tl * deta_tl + dphi_tl * dphi_tl)
    ratio = lpt / tpt
    # MET phi centrality (HiggsML): sqrt(2) when MET bisects tau and lepton, ~ -sqrt(2) opposite
    s = torch.where(torch.sin(tphi - lphi) >= 0, 1.0, -1.0).to(x.dtype)
    ca = torch.sin(mphi - lphi) * s
    cb = torch.sin(tphi - mphi) * s
    cent = (ca + cb) / _safe_sqrt(ca * ca + cb * cb)
    sum_pt = tpt + lpt + jpt.sum(1)
    ox, oy = hx + jpx, hy + jpy
    pt_tot = _safe_sqrt(ox * ox + oy * oy)
    j1pt = jpt[:, 0]
    deta_jj = torch.where(has2, (jeta[:, 0] - jeta[:, 1]).abs(), torch.zeros_like(j1pt))
    mjj2 = 2.0 * jpt[:, 0] * jpt[:, 1] * (torch.cosh(jeta[:, 0] - jeta[:, 1])
                                          - torch.cos(jphi[:, 0] - jphi[:, 1]))
    m_jj = torch.where(has2, _safe_sqrt(mjj2), torch.zeros_like(j1pt))
    d2 = torch.where(has2, torch.clamp(deta_jj * deta_jj, min=1e-12), torch.ones_like(j1pt))
    lc = torch.exp(-4.0 / d2 * (leta - 0.5 * (jeta[:, 0] + jeta[:, 1])) ** 2)
    lep_c = torch.where(has2, lc, torch.zeros_like(j1pt))
    btag = (jb * present).amax(1)
    out = torch.stack([m_vis, m_coll, mt, pt_h, dr, ratio, met, cent, sum_pt, pt_tot, n_jets, j1pt,
                       deta_jj, m_jj, lep_c, btag], dim=1)
    return out.to(dtype)


# ---------------------------------------------------------------------------- systematics (torch)
def _as_factor(k: Union[Tensor, float, None]) -> Optional[Tensor]:
    if k is None:
        return None
    return k.to(torch.float64) if isinstance(k, Tensor) else torch.tensor(float(k), dtype=torch.float64)


def scale_objects(primary: Tensor, tau_scale: Union[Tensor, float, None] = None,
                  jet_scale: Union[Tensor, float, None] = None) -> Tensor:
    r"""Rows of primary objects with the tau (jet) four-momenta scaled by ``tau_scale``
    (``jet_scale``), and MET moved by minus the change of their transverse momentum.

    The scale factors are floats or 0-dim tensors (differentiable, forward and reverse mode).
    The result has the input's dtype (computed in float64); at factor 1 it *is* the input
    (bit for bit). The MET is rescaled and rotated from its stored value (not recomputed),
    so nothing else moves.
    """
    if primary.ndim != 2 or primary.shape[1] != len(PRIMARY):
        raise ValueError(f"primary must have shape (n, {len(PRIMARY)}) (columns PRIMARY), "
                         f"got {tuple(primary.shape)}")
    dtype = primary.dtype
    x = primary.to(torch.float64)
    cols = list(x.unbind(1))
    met, mphi = cols[_MET], cols[_MET_PHI]
    mx, my = met * torch.cos(mphi), met * torch.sin(mphi)
    dx = torch.zeros_like(met)
    dy = torch.zeros_like(met)
    kt, kj = _as_factor(tau_scale), _as_factor(jet_scale)
    if kt is not None:
        pt, phi = cols[_TAU_PT], cols[_TAU_PHI]
        cols[_TAU_PT] = pt * kt
        cols[_TAU_M] = cols[_TAU_M] * kt
        dx = dx + (kt - 1.0) * pt * torch.cos(phi)
        dy = dy + (kt - 1.0) * pt * torch.sin(phi)
    if kj is not None:
        for j in range(N_JETS_MAX):
            c = _JET0 + 4 * j
            pt, phi = cols[c], cols[c + 2]
            cols[c] = pt * kj  # absent jets have pt 0 and stay absent
            dx = dx + (kj - 1.0) * pt * torch.cos(phi)
            dy = dy + (kj - 1.0) * pt * torch.sin(phi)
    nx, ny = mx - dx, my - dy
    # |new| / |old| and the rotation angle: exactly 1 and 0 when nothing moved
    cols[_MET] = met * (_safe_sqrt(nx * nx + ny * ny) / _safe_sqrt(mx * mx + my * my))
    phi = mphi + torch.atan2(mx * ny - my * nx, mx * nx + my * ny)
    lim = math.pi + 0.01  # wrap back only clearly outside (-pi, pi]: identity stays exact
    phi = torch.where(phi > lim, phi - 2 * math.pi, torch.where(phi < -lim, phi + 2 * math.pi, phi))
    cols[_MET_PHI] = phi
    return torch.stack(cols, dim=1).to(dtype)


class EnergyScale:
    r"""The transform of a tau (``obj='tau'``) or jet (``obj='jet'``) energy scale, for a
    :class:`~inferno.nuisance.ShapeNuisance`: ``transform(x, alpha)`` scales the object's
    four-momentum by :math:`1 + \alpha\sigma` in the rows ``x`` of primary objects, and moves
    MET by minus the change of its transverse momentum (:func:`scale_objects`). ``alpha`` is
    in standard deviations (nominal 0, constraint ``Normal(0, 1)``, variations ``(-1, 1)``).

    Args:
        obj: ``'tau'`` or ``'jet'``.
        sigma: the relative uncertainty (default: 3% for the tau, 4% for jets).

    Picklable; ``is_identity(0)`` is True (the transform at 0 returns ``x`` bit for bit).
    """

    def __init__(self, obj: str = "tau", sigma: Optional[float] = None):
        if obj not in ("tau", "jet"):
            raise ValueError(f"obj must be 'tau' or 'jet', got {obj!r}")
        self.obj = obj
        default = CONSTANTS.tes_sigma if obj == "tau" else CONSTANTS.jes_sigma
        self.sigma = float(default if sigma is None else sigma)
        if not (math.isfinite(self.sigma) and self.sigma > 0):
            raise ValueError(f"sigma must be finite and > 0, got {sigma}")

    def factor(self, alpha: Union[Tensor, float]) -> Union[Tensor, float]:
        """``1 + alpha * sigma``."""
        return 1.0 + alpha * self.sigma

    def __call__(self, x: Tensor, alpha: Union[Tensor, float]) -> Tensor:
        a = alpha.to(torch.float64) if isinstance(alpha, Tensor) else torch.tensor(float(alpha), dtype=torch.float64)
        k = 1.0 + a * self.sigma
        return scale_objects(x, tau_scale=k) if self.obj == "tau" else scale_objects(x, jet_scale=k)

    def is_identity(self, v: float) -> bool:
        return float(v) == 0.0

    def __repr__(self) -> str:
        return f"EnergyScale({self.obj!r}, sigma={self.sigma})"


class FeatureLayer(nn.Module):
    r"""The first layer of a network on primary objects: :func:`features`, then
    :math:`(f - \text{mean}) / \text{std}` with fixed buffers (:meth:`fit` sets them from
    training events).

    Args:
        mean, std: ``(16,)`` standardisation (default 0 and 1: the raw features).
    """

    def __init__(self, mean=None, std=None):
        super().__init__()
        nf = len(FEATURES)
        m = torch.zeros(nf) if mean is None else torch.as_tensor(np.asarray(mean), dtype=torch.float32)
        s = torch.ones(nf) if std is None else torch.as_tensor(np.asarray(std), dtype=torch.float32)
        if m.shape != (nf,) or s.shape != (nf,):
            raise ValueError(f"mean and std must have shape ({nf},)")
        if not bool((s > 0).all()):
            raise ValueError("std must be > 0")
        self.register_buffer("mean", m)
        self.register_buffer("std", s)

    @classmethod
    def fit(cls, primary) -> "FeatureLayer":
        """A layer standardising the features of ``primary`` (rows of primary objects) to
        mean 0 and standard deviation 1 (unweighted)."""
        f = features(torch.as_tensor(np.asarray(primary) if not isinstance(primary, Tensor) else primary))
        f = f.to(torch.float64)
        return cls(f.mean(0).float(), torch.clamp(f.std(0), min=1e-6).float())

    def forward(self, x: Tensor) -> Tensor:
        f = features(x)
        return (f - self.mean.to(f.dtype)) / self.std.to(f.dtype)


def control_region(feats) -> np.ndarray:
    """The events of the ttbar control region: at least one b-tagged jet (b-tag score above
    ``CONSTANTS.btag_wp``), from rows of :data:`FEATURES` (numpy or torch); a bool array."""
    f = feats.detach().cpu().numpy() if isinstance(feats, Tensor) else np.asarray(feats)
    return f[:, FEATURES.index("btag_max")] > CONSTANTS.btag_wp


# ---------------------------------------------------------------------------- generation (numpy)
_M_H, _M_Z, _G_Z = 125.0, 91.1876, 2.4952
_M_TOP, _M_W, _M_B = 172.5, 80.38, 4.8
_KICK = 6.0          # soft recoil of the hard system, GeV per transverse component
_TAU_RES, _LEP_RES = 0.08, 0.02
_SOFT_RESPONSE, _SOFT_NOISE = 0.7, 8.0
_JET_PT_MIN, _JET_ETA_MAX = 25.0, 4.5
_SEL_PT, _SEL_ETA = 20.0, 2.5
_VBF_FRACTION = 0.15
_Y_SIGMA = 1.2  # rapidity spread of the H, Z and WW systems
_NEG_BASE, _NEG_PER_JET = 0.10, 0.05  # NLO-like negative weight fraction: 0.10 + 0.05 n_jets
_CHUNK = 100_000  # raw events per generation step (cache-friendly)

# the unpolarised leptonic tau decay in the collinear limit: f(x) = (5 - 9x^2 + 4x^3) / 3
_lep_x = kin.inverse_cdf_sampler(lambda x: (5 * x - 3 * x ** 3 + x ** 4) / 3.0, 0.0, 1.0)


def _wrap(phi: np.ndarray) -> np.ndarray:
    return (phi + np.pi) % (2 * np.pi) - np.pi


def _isr_jets(m: int, probs: Sequence[float], mean_pt: float, rng: np.random.Generator,
              n_slots: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Initial-state jets: multiplicity from ``probs``, pT = 20 + Exp(mean_pt), eta ~ N(0, 2)
    (cut at 4.7), phi uniform; (m, n_slots) arrays with pT 0 for absent jets."""
    n = rng.choice(len(probs), size=m, p=np.asarray(probs) / np.sum(probs))
    pt = 20.0 + rng.exponential(mean_pt, (m, n_slots))
    eta = np.clip(rng.normal(0.0, 2.0, (m, n_slots)), -4.7, 4.7)
    phi = rng.uniform(-np.pi, np.pi, (m, n_slots))
    pt = np.where(np.arange(n_slots)[None, :] < n[:, None], pt, 0.0)
    return pt, eta, phi


def _tau_hadronic(tau: kin.P4, rng: np.random.Generator) -> Tuple[kin.P4, np.ndarray]:
    """Visible four-momentum and mass of hadronic tau decays (pi 23%, rho 52%, a1 25%),
    collinear, visible momentum fraction uniform above m_vis^2 / m_tau^2."""
    m = len(tau.e)
    mode = rng.choice(3, size=m, p=[0.23, 0.52, 0.25])
    m_rho = kin.truncated_breit_wigner(0.775, 0.149, 0.30, 1.70, m, rng)
    m_a1 = kin.truncated_breit_wigner(1.230, 0.420, 0.60, 1.75, m, rng)
    m_vis = np.where(mode == 0, 0.13957, np.where(mode == 1, m_rho, m_a1))
    r = (m_vis / kin.M_TAU) ** 2
    x = r + (1.0 - r) * rng.random(m)
    vis, _ = kin.collinear_split(tau, x, m_vis)
    return vis, m_vis


def _tau_leptonic(tau: kin.P4, rng: np.random.Generator) -> kin.P4:
    vis, _ = kin.collinear_split(tau, _lep_x(rng.random(len(tau.e))), 0.0)
    return vis


def _event(tau: kin.P4, m_vis: np.ndarray, lep: kin.P4, jet_pt, jet_eta, jet_phi, jet_b,
           kick: np.ndarray) -> Dict[str, np.ndarray]:
    """The truth record: the visible tau and lepton, the jets, the soft recoil (-kick)."""
    return dict(tau_pt=tau.pt, tau_eta=tau.eta, tau_phi=tau.phi, tau_m=m_vis,
                lep_pt=lep.pt, lep_eta=lep.eta, lep_phi=lep.phi,
                jet_pt=jet_pt, jet_eta=jet_eta, jet_phi=jet_phi, jet_b=jet_b,
                soft_x=-kick[:, 0], soft_y=-kick[:, 1])


def _recoil(pt: np.ndarray, phi: np.ndarray, kick: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """pT and phi of a system balancing the jets (pt, phi) up to the soft ``kick``."""
    bx = kick[:, 0] - (pt * np.cos(phi)).sum(1)
    by = kick[:, 1] - (pt * np.sin(phi)).sum(1)
    return np.hypot(bx, by), np.arctan2(by, bx)


def _resonance(m: int, kind: str, rng: np.random.Generator) -> Dict[str, np.ndarray]:
    """H or Z -> tau tau -> tau_h lep, recoiling against initial-state (or VBF) jets."""
    if kind == "htautau":
        pt, eta, phi = _isr_jets(m, (0.45, 0.35, 0.15, 0.05), 45.0, rng, 3)
        vbf = rng.random(m) < _VBF_FRACTION
        side = np.where(rng.random(m) < 0.5, 1.0, -1.0)
        v_eta = np.clip(1.5 + np.abs(rng.normal(0.0, 1.0, (m, 2))), None, 4.7) * np.column_stack([side, -side])
        v_pt = 25.0 + rng.exponential(45.0, (m, 2))
        v_phi = rng.uniform(-np.pi, np.pi, (m, 2))
        extra = rng.random(m) < 0.3
        pt = np.where(vbf[:, None], np.column_stack([v_pt, np.where(extra, pt[:, 0], 0.0)]), pt)
        eta = np.where(vbf[:, None], np.column_stack([v_eta, eta[:, 0]]), eta)
        phi = np.where(vbf[:, None], np.column_stack([v_phi, phi[:, 0]]), phi)
        mass = np.full(m, _M_H)
    else:
        pt, eta, phi = _isr_jets(m, (0.70, 0.22, 0.06, 0.02), 25.0, rng, 3)
        mass = kin.truncated_breit_wigner(_M_Z, _G_Z, 70.0, 115.0, m, rng)
    kick = rng.normal(0.0, _KICK, (m, 2))
    bpt, bphi = _recoil(pt, phi, kick)
    boson = kin.from_pt_y_phi_m(bpt, rng.normal(0.0, _Y_SIGMA, m), bphi, mass)
    t1, t2 = kin.two_body_decay(boson, kin.M_TAU, kin.M_TAU, rng)
    tau, m_vis = _tau_hadronic(t1, rng)
    lep = _tau_leptonic(t2, rng)
    return _event(tau, m_vis, lep, pt, eta, phi, np.zeros(pt.shape, dtype=bool), kick)


def _w_decays(w1: kin.P4, w2: kin.P4, rng: np.random.Generator) -> Tuple[kin.P4, np.ndarray, kin.P4]:
    """W1 -> tau nu (tau -> tau_h), W2 -> lep nu."""
    tau, _ = kin.two_body_decay(w1, kin.M_TAU, 0.0, rng)
    tau_h, m_vis = _tau_hadronic(tau, rng)
    lep, _ = kin.two_body_decay(w2, 0.0, 0.0, rng)
    return tau_h, m_vis, lep


def _ttbar(m: int, model: str, rng: np.random.Generator) -> Dict[str, np.ndarray]:
    par = _TTBAR_MODEL[model]
    ipt, ieta, iphi = _isr_jets(m, par["isr_probs"], par["isr_pt"], rng, 2)
    kick = rng.normal(0.0, _KICK, (m, 2))
    pt1 = rng.gamma(2.0, par["top_pt_scale"], m)
    phi1 = rng.uniform(-np.pi, np.pi, m)
    # the second top balances the first, the initial-state jets and the kick
    pt2, phi2 = _recoil(np.column_stack([ipt, pt1]), np.column_stack([iphi, phi1]), kick)
    y = rng.normal(0.0, 1.0, (m, 2))
    top1 = kin.from_pt_y_phi_m(pt1, y[:, 0], phi1, _M_TOP)
    top2 = kin.from_pt_y_phi_m(pt2, y[:, 1], phi2, _M_TOP)
    b1, w1 = kin.two_body_decay(top1, _M_B, _M_W, rng)
    b2, w2 = kin.two_body_decay(top2, _M_B, _M_W, rng)
    tau, m_vis, lep = _w_decays(w1, w2, rng)
    jb = np.column_stack([np.ones((m, 2), bool), np.zeros((m, 2), bool)])
    return _event(tau, m_vis, lep, np.column_stack([b1.pt, b2.pt, ipt]), np.column_stack([b1.eta, b2.eta, ieta]),
                  np.column_stack([b1.phi, b2.phi, iphi]), jb, kick)


def _diboson(m: int, rng: np.random.Generator) -> Dict[str, np.ndarray]:
    pt, eta, phi = _isr_jets(m, (0.62, 0.27, 0.08, 0.03), 30.0, rng, 3)
    kick = rng.normal(0.0, _KICK, (m, 2))
    bpt, bphi = _recoil(pt, phi, kick)
    mass = 2 * _M_W + 5.0 + rng.exponential(70.0, m)
    ww = kin.from_pt_y_phi_m(bpt, rng.normal(0.0, _Y_SIGMA, m), bphi, mass)
    w1, w2 = kin.two_body_decay(ww, _M_W, _M_W, rng)
    tau, m_vis, lep = _w_decays(w1, w2, rng)
    return _event(tau, m_vis, lep, pt, eta, phi, np.zeros(pt.shape, dtype=bool), kick)


def _truth(sample: str, m: int, rng: np.random.Generator) -> Dict[str, np.ndarray]:
    if sample in ("htautau", "ztautau"):
        return _resonance(m, sample, rng)
    if sample == "diboson":
        return _diboson(m, rng)
    return _ttbar(m, {"ttbar": "nominal", "ttbar_up": "up", "ttbar_down": "down"}[sample], rng)


def _reconstruct(t: Dict[str, np.ndarray], rng: np.random.Generator) -> Dict[str, np.ndarray]:
    """Smearing, selection, jet reconstruction and soft term (all at nominal scales)."""
    m = len(t["tau_pt"])
    tpt = t["tau_pt"] * np.maximum(1.0 + _TAU_RES * rng.standard_normal(m), 0.2)
    teta = t["tau_eta"] + 0.005 * rng.standard_normal(m)
    lpt = t["lep_pt"] * (1.0 + _LEP_RES * rng.standard_normal(m))
    # the selection first: the rest is done for the selected events only
    sel = (tpt > _SEL_PT) & (np.abs(teta) < _SEL_ETA) & (lpt > _SEL_PT) & (np.abs(t["lep_eta"]) < _SEL_ETA)
    t = {k_: v[sel] for k_, v in t.items()}
    tpt, teta, lpt = tpt[sel], teta[sel], lpt[sel]
    m = len(tpt)
    tphi = _wrap(t["tau_phi"] + 0.005 * rng.standard_normal(m))
    tm = np.clip(t["tau_m"] + 0.05 * rng.standard_normal(m), 0.13, 1.77)
    # jets
    jpt0, jeta, jphi, isb = t["jet_pt"], t["jet_eta"], t["jet_phi"], t["jet_b"]
    k = jpt0.shape[1]
    res = np.sqrt(0.8 ** 2 / np.maximum(jpt0, 1.0) + 0.05 ** 2)
    jpt = jpt0 * np.maximum(1.0 + res * rng.standard_normal((m, k)), 0.0)
    jeta = jeta + 0.02 * rng.standard_normal((m, k))
    jphi = _wrap(jphi + 0.02 * rng.standard_normal((m, k)))
    score = np.where(isb, rng.beta(4.0, 1.2, (m, k)), rng.beta(1.0, 3.8, (m, k)))
    ok = (jpt0 > 0) & (jpt > _JET_PT_MIN) & (np.abs(jeta) < _JET_ETA_MAX)
    order = np.argsort(-np.where(ok, jpt, -1.0), axis=1, kind="stable")
    rows = np.arange(m)[:, None]
    jpt, jeta, jphi, score, ok = (a[rows, order] for a in (jpt, jeta, jphi, score, ok))
    keep = ok & (np.arange(k)[None, :] < N_JETS_MAX)
    # soft term: the soft recoil (70% response, noise) and every jet not kept
    lost = (jpt0[rows, order] > 0) & ~keep
    sx = _SOFT_RESPONSE * t["soft_x"] + _SOFT_NOISE * rng.standard_normal(m)
    sy = _SOFT_RESPONSE * t["soft_y"] + _SOFT_NOISE * rng.standard_normal(m)
    sx = sx + np.where(lost, jpt * np.cos(jphi), 0.0).sum(1)
    sy = sy + np.where(lost, jpt * np.sin(jphi), 0.0).sum(1)
    jets = np.zeros((m, N_JETS_MAX, 4))
    kk = min(k, N_JETS_MAX)
    for q, a in enumerate((jpt, jeta, jphi, score)):
        jets[:, :kk, q] = np.where(keep[:, :kk], a[:, :kk], 0.0)
    return dict(tau=np.column_stack([tpt, teta, tphi, tm]),
                lep=np.column_stack([lpt, t["lep_eta"], t["lep_phi"]]),
                jets=jets, soft=np.column_stack([sx, sy]))


def _generate_sample(sample: str, n: int, ss: np.random.SeedSequence) -> Dict[str, np.ndarray]:
    """``n`` selected events of ``sample`` at nominal scales (chunks until enough pass)."""
    rng = np.random.default_rng(ss)
    parts, have, eff = [], 0, 0.15
    while have < n:
        m = int(min(max(1.1 * (n - have) / eff, 1000), _CHUNK))
        r = _reconstruct(_truth(sample, m, rng), rng)
        got = len(r["tau"])
        eff = max(got / m, 0.01)
        parts.append(r)
        have += got
    out = {k: np.concatenate([p[k] for p in parts])[:n] for k in parts[0]}
    if PROCESSES.get(sample) is not None and PROCESSES[sample].neg_weight_fraction > 0:
        nj = (out["jets"][:, :, 0] > 0).sum(1)
        f = _NEG_BASE + _NEG_PER_JET * nj  # E[g] = 1 event by event
        neg = rng.random(n) < f
        out["gen_weight"] = np.where(neg, -1.0, 1.0) / (1.0 - 2.0 * f)
    else:
        out["gen_weight"] = np.ones(n)
    return out


def _primary(r: Dict[str, np.ndarray], tes: float, jes: float) -> np.ndarray:
    """Rows of primary objects at the energy scales ``tes``, ``jes`` (float64)."""
    n = len(r["tau"])
    tau, lep, jets, soft = r["tau"].copy(), r["lep"], r["jets"].copy(), r["soft"]
    tau[:, 0] *= tes
    tau[:, 3] *= tes
    jets[:, :, 0] *= jes
    mx = -(tau[:, 0] * np.cos(tau[:, 2]) + lep[:, 0] * np.cos(lep[:, 2])
           + (jets[:, :, 0] * np.cos(jets[:, :, 2])).sum(1) + soft[:, 0])
    my = -(tau[:, 0] * np.sin(tau[:, 2]) + lep[:, 0] * np.sin(lep[:, 2])
           + (jets[:, :, 0] * np.sin(jets[:, :, 2])).sum(1) + soft[:, 1])
    met = np.column_stack([np.hypot(mx, my), np.arctan2(my, mx)])
    return np.column_stack([tau, lep, met, jets.reshape(n, 4 * N_JETS_MAX)])


def _features_numpy(primary: np.ndarray) -> np.ndarray:
    """:func:`features` of many rows: in cache-sized chunks, on one torch thread (elementwise
    work on small chunks gains nothing from threads, and loses much on a busy machine)."""
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with torch.no_grad():
            return torch.cat([features(c) for c in torch.from_numpy(primary).split(16384)]).numpy()
    finally:
        torch.set_num_threads(threads)


def _seed_sequence(seed: Seed) -> np.random.SeedSequence:
    if isinstance(seed, np.random.Generator):
        seed = int(seed.integers(2 ** 63))
    return seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)


def _counts(n_events: Union[int, Mapping[str, int]]) -> Dict[str, int]:
    def check(k: str, v) -> int:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"the number of events of {k!r} must be an integer >= 0, got {v!r}")
        return int(v)

    if isinstance(n_events, Mapping):
        bad = sorted(set(n_events) - set(SAMPLES))
        if bad:
            raise ValueError(f"unknown samples {bad}: the samples are {list(SAMPLES)}")
        return {k: check(k, n_events[k]) for k in SAMPLES if k in n_events}
    n = check("every sample", n_events)
    out = {}
    for k in SAMPLES:
        cap = PROCESSES[k].n_mc_max if k in PROCESSES else None
        out[k] = n if cap is None else min(n, cap)
    return out


def generate(n_events: Union[int, Mapping[str, int]] = 10_000, seed: Seed = None, lumi: float = LUMI,
             tes: float = 1.0, jes: float = 1.0) -> Dict[str, np.ndarray]:
    r"""Weighted events of the toy :math:`H \to \tau\tau` search (see the module docstring).

    Args:
        n_events: raw (selected) events per sample: an int for every sample of
            :data:`SAMPLES` (diboson capped at ``n_mc_max`` = 3000: limited MC statistics),
            or a dict ``{sample: n}`` generating only the samples named (exact counts).
        seed: an int, a ``SeedSequence``, a ``Generator`` (one integer drawn) or None. Each
            sample has its own stream (spawned in :data:`SAMPLES` order), so a sample's
            events do not depend on which other samples are generated.
        lumi: the integrated luminosity (fb^-1) the weights are normalised to.
        tes, jes: tau and jet energy scale factors applied at generation time, after the
            smearing and the selection (same events, same random numbers): e.g.
            ``tes=tes_factor(1.0)`` gives what ``EnergyScale('tau')(primary, 1.0)`` gives.

    Returns:
        dict of numpy arrays over the events, samples in :data:`SAMPLES` order:

        * ``primary``: ``(n, 21)`` float32, columns :data:`PRIMARY`;
        * ``features``: ``(n, 16)`` float32, columns :data:`FEATURES` (``features(primary)``);
        * ``label``: ``(n,)`` int64, :data:`LABELS`;
        * ``weight``: ``(n,)`` float64: :math:`\sigma L / N` times the generator weight; each
          sample's weights sum to its process's expected yield (the diboson's within MC error;
          the alternative ttbar samples to ttbar's);
        * ``weight_tau_id_up``, ``weight_tau_id_down``: the weights with the tau
          identification efficiency at +-1 sigma (:func:`tau_id_uncertainty`).

    Raises:
        ValueError: unknown sample names, negative counts, non-positive ``lumi``, ``tes``
            or ``jes``.
    """
    counts = _counts(n_events)
    for k, v in (("lumi", lumi), ("tes", tes), ("jes", jes)):
        if not (math.isfinite(float(v)) and float(v) > 0):
            raise ValueError(f"{k} must be finite and > 0, got {v}")
    children = dict(zip(SAMPLES, _seed_sequence(seed).spawn(len(SAMPLES))))
    prim, lab, w, tau_pt = [], [], [], []
    for s in SAMPLES:
        n = counts.get(s, 0)
        if n == 0:
            continue
        r = _generate_sample(s, n, children[s])
        prim.append(_primary(r, float(tes), float(jes)))
        tau_pt.append(r["tau"][:, 0])
        lab.append(np.full(n, LABELS[s], dtype=np.int64))
        proc = PROCESSES[ALT_SAMPLES[s][1]] if s in ALT_SAMPLES else PROCESSES[s]
        w.append(proc.xsec_fb * float(lumi) / n * r["gen_weight"])
    if not prim:
        raise ValueError("no events requested")
    primary = np.concatenate(prim).astype(np.float32)
    feats = _features_numpy(primary)
    weight = np.concatenate(w)
    # the tau-ID uncertainty at the nominal tau pT (the efficiency does not follow the scale)
    delta = tau_id_uncertainty(np.concatenate(tau_pt))
    return dict(primary=primary, features=feats, label=np.concatenate(lab), weight=weight,
                weight_tau_id_up=weight * (1.0 + delta), weight_tau_id_down=weight * (1.0 - delta))


def to_dataframe(events: Mapping[str, np.ndarray]):
    """The events of :func:`generate` as a pandas DataFrame: the :data:`PRIMARY` columns, the
    :data:`FEATURES` columns (prefixed ``f_`` where a name repeats: ``f_met``,
    ``f_jet1_pt``), ``label``, ``sample`` (its name) and the weight columns."""
    import pandas as pd

    cols = {k: events["primary"][:, i] for i, k in enumerate(PRIMARY)}
    for i, k in enumerate(FEATURES):
        cols[f"f_{k}" if k in cols else k] = events["features"][:, i]
    cols["label"] = events["label"]
    code = np.full(max(LABELS.values()) + 1, -1)
    for i, k in enumerate(SAMPLES):
        code[LABELS[k]] = i
    cols["sample"] = pd.Categorical.from_codes(code[events["label"]], categories=list(SAMPLES))
    for k in WEIGHT_COLUMNS:
        cols[k] = events[k]
    return pd.DataFrame(cols)
