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

Generation (vectorised numpy, :mod:`inferno.htautau.kinematics`)
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
    from inferno import htautau as hb

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

The package
-----------

* :mod:`~inferno.htautau.constants` (the numbers), :mod:`~inferno.htautau.features` (torch:
  features, energy scales, :class:`FeatureLayer`), :mod:`~inferno.htautau.generator` (numpy:
  :func:`generate`), :mod:`~inferno.htautau.kinematics` (four-momentum helpers): the names
  above, re-exported here;
* :mod:`~inferno.htautau.analysis`: the INFERNO :class:`~inferno.loss.Analysis` of the search
  (signal region learned, a ttbar control region fixed) and its data sets;
* :mod:`~inferno.htautau.run`: the ``inferno-bench`` command (BCE vs multiclass vs INFERNO,
  widths on Asimov data, coverage under shifted nuisances; also ``python -m inferno.htautau``),
  its networks and training in :mod:`~inferno.htautau.summaries`, its table and figures in
  :mod:`~inferno.htautau.report`; imported on demand (``from inferno.htautau import run``).
"""
from .constants import (LUMI, PRIMARY, FEATURES, PROCESSES, ALT_SAMPLES, SAMPLES, LABELS, SIGNAL, CONSTANTS,
                        ProcessInfo, Constants, FEATURE_DEPENDENCE, WEIGHT_COLUMNS, N_JETS_MAX,
                        expected_yields, tes_factor, jes_factor, tau_id_uncertainty)
from .features import features, scale_objects, EnergyScale, FeatureLayer, control_region
from .generator import generate, to_dataframe

__all__ = [
    "LUMI", "PRIMARY", "FEATURES", "PROCESSES", "ALT_SAMPLES", "SAMPLES", "LABELS", "SIGNAL", "CONSTANTS",
    "ProcessInfo", "Constants", "FEATURE_DEPENDENCE", "WEIGHT_COLUMNS", "N_JETS_MAX", "expected_yields",
    "tes_factor", "jes_factor", "tau_id_uncertainty", "features", "scale_objects", "EnergyScale",
    "FeatureLayer", "control_region", "generate", "to_dataframe",
]
