"""The numbers of the generated H -> tau tau-like search (:mod:`inferno.htautau`): luminosity,
columns, processes and their cross sections, the systematics' sizes. Toy numbers."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional, Tuple, Union

import numpy as np

__all__ = ["LUMI", "PRIMARY", "FEATURES", "PROCESSES", "ALT_SAMPLES", "SAMPLES", "LABELS", "SIGNAL", "CONSTANTS", "ProcessInfo", "Constants", "FEATURE_DEPENDENCE", "WEIGHT_COLUMNS", "N_JETS_MAX", "expected_yields", "tes_factor", "jes_factor", "tau_id_uncertainty"]

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
