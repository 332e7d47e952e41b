"""Tests of the event generator of the H -> tau tau-like benchmark (inferno.htautau):
reproducibility, the energy-scale transforms (which features they move, agreement with
regenerating the events at the shifted scale, exact derivatives), the weights (cross
section x luminosity, negative weights, the tau-ID variations) and basic physics sanity."""
import math

import numpy as np
import pytest
import torch

from inferno import htautau as hb

N = {"htautau": 3000, "ztautau": 3000, "ttbar": 3000, "diboson": 2000}
TAU_PROCS = ["htautau", "ztautau", "ttbar", "diboson"]


@pytest.fixture(scope="module")
def events():
    return hb.generate(N, seed=11)


def _feature_scale(f):
    """Per-feature scale for tolerances: the spread of each feature."""
    return np.maximum(np.std(f, axis=0), 1e-3)


# ---------------------------------------------------------------- reproducibility
def test_same_seed_same_events_different_seed_different_events(events):
    again = hb.generate(N, seed=11)
    assert set(again) == set(events)
    for k in events:
        np.testing.assert_array_equal(again[k], events[k], err_msg=k)
    other = hb.generate(N, seed=12)
    assert not np.array_equal(other["primary"], events["primary"])
    assert not np.array_equal(other["weight"], events["weight"])  # the diboson's signs differ
    # one stream per sample: a sample's events do not depend on the others generated
    alone = hb.generate({"ttbar": 3000}, seed=11)
    m = events["label"] == hb.LABELS["ttbar"]
    np.testing.assert_array_equal(alone["primary"], events["primary"][m])


def test_layout_and_counts(events):
    n = sum(N.values())
    assert events["primary"].shape == (n, len(hb.PRIMARY)) and events["primary"].dtype == np.float32
    assert events["features"].shape == (n, len(hb.FEATURES)) and events["features"].dtype == np.float32
    for k in ("label",) + hb.WEIGHT_COLUMNS:
        assert events[k].shape == (n,)
    for s, c in N.items():
        assert int((events["label"] == hb.LABELS[s]).sum()) == c
    # the stored features are features(primary)
    np.testing.assert_array_equal(hb.features(torch.from_numpy(events["primary"])).numpy(), events["features"])
    # an int asks for every sample, the diboson capped (limited MC statistics)
    ev = hb.generate(4000, seed=1)
    counts = {s: int((ev["label"] == hb.LABELS[s]).sum()) for s in hb.SAMPLES}
    assert counts == {"htautau": 4000, "ztautau": 4000, "ttbar": 4000, "diboson": 3000,
                      "ttbar_up": 4000, "ttbar_down": 4000}
    df = hb.to_dataframe(ev)
    assert len(df) == len(ev["label"]) and list(df["sample"].cat.categories) == list(hb.SAMPLES)
    assert (df.loc[df["label"] == 3, "sample"] == "diboson").all()


# ---------------------------------------------------------------- energy scales
@pytest.mark.parametrize("obj", ["tau", "jet"])
def test_energy_scale_moves_exactly_its_features(events, obj):
    f0 = events["features"]
    p = torch.from_numpy(events["primary"])
    f1 = hb.features(hb.EnergyScale(obj)(p, torch.tensor(1.0))).numpy()
    moved = set(hb.FEATURE_DEPENDENCE["tes" if obj == "tau" else "jes"])
    tol = 1e-5 * (np.abs(f0) + _feature_scale(f0))
    changed = np.abs(f1 - f0) > tol
    for i, name in enumerate(hb.FEATURES):
        if name in moved:
            assert changed[:, i].mean() > 0.05, f"{obj} scale should move {name}"
        else:
            assert not changed[:, i].any(), f"{obj} scale should not move {name}"
    # the objects themselves: only the scaled object's momenta and MET change
    p1 = hb.EnergyScale(obj)(p, torch.tensor(1.0)).numpy()
    same = np.all(p1 == events["primary"], axis=0)
    cols = {"tau": {"tau_pt", "tau_m"}, "jet": {"jet1_pt", "jet2_pt", "jet3_pt"}}[obj] | {"met", "met_phi"}
    assert {c for c, s in zip(hb.PRIMARY, same) if not s} == cols
    k = hb.tes_factor(1.0) if obj == "tau" else hb.jes_factor(1.0)
    c = hb.PRIMARY.index("tau_pt" if obj == "tau" else "jet1_pt")
    np.testing.assert_allclose(p1[:, c], k * events["primary"][:, c], rtol=1e-6)


def test_transform_is_identity_at_nominal(events):
    p = torch.from_numpy(events["primary"])
    for obj in ("tau", "jet"):
        t = hb.EnergyScale(obj)
        assert t.is_identity(0.0) and not t.is_identity(0.5)
        assert torch.equal(t(p, torch.tensor(0.0)), p)


@pytest.mark.parametrize("alpha", [-2.0, 1.0])
def test_tes_transform_matches_regeneration(events, alpha):
    """Scaling the stored events and generating them at the shifted scale (same seed, the
    scale applied after the smearing) give the same events, to float precision."""
    regen = hb.generate(N, seed=11, tes=hb.tes_factor(alpha))
    p = torch.from_numpy(events["primary"])
    f_tr = hb.features(hb.EnergyScale("tau")(p, torch.tensor(alpha))).numpy()
    f_re = regen["features"]
    np.testing.assert_array_equal(regen["label"], events["label"])
    err = np.abs(f_tr - f_re) / (np.abs(f_re) + _feature_scale(f_re))
    assert err.max() < 1e-4, (hb.FEATURES[int(err.max(0).argmax())], err.max())
    # and the primary objects (MET phi compared as an angle)
    p_tr = hb.EnergyScale("tau")(p, torch.tensor(alpha)).numpy().astype(np.float64)
    p_re = regen["primary"].astype(np.float64)
    i = hb.PRIMARY.index("met_phi")
    dphi = np.angle(np.exp(1j * (p_tr[:, i] - p_re[:, i])))
    assert np.abs(dphi).max() < 1e-3
    p_tr[:, i] = p_re[:, i]
    np.testing.assert_allclose(p_tr, p_re, rtol=1e-5, atol=1e-4)
    # the shift is not a no-op: the visible mass moves by ~ sqrt(k)
    j = hb.FEATURES.index("m_vis")
    ratio = np.median(f_re[:, j] / events["features"][:, j])
    assert ratio == pytest.approx(math.sqrt(hb.tes_factor(alpha)), rel=2e-3)
    # the weights do not change (the tau-ID variations follow the nominal pT)
    for k in hb.WEIGHT_COLUMNS:
        np.testing.assert_array_equal(regen[k], events[k])


def test_jes_transform_matches_regeneration(events):
    regen = hb.generate(N, seed=11, jes=hb.jes_factor(1.5))
    f_tr = hb.features(hb.EnergyScale("jet")(torch.from_numpy(events["primary"]), torch.tensor(1.5))).numpy()
    err = np.abs(f_tr - regen["features"]) / (np.abs(regen["features"]) + _feature_scale(regen["features"]))
    assert err.max() < 1e-4


@pytest.mark.parametrize("obj", ["tau", "jet"])
def test_transform_gradient_equals_finite_difference(events, obj):
    """d features / d alpha by autograd (reverse and forward mode) = central differences."""
    p = torch.from_numpy(events["primary"][::5]).double()
    t = hb.EnergyScale(obj)
    a0 = 0.3

    def f(a):
        return hb.features(t(p, a))

    a = torch.tensor(a0, dtype=torch.float64, requires_grad=True)
    u = torch.randn(p.shape[0], len(hb.FEATURES), dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    (g,) = torch.autograd.grad((f(a) * u).sum(), a)
    _, jv = torch.func.jvp(f, (torch.tensor(a0, dtype=torch.float64),), (torch.tensor(1.0, dtype=torch.float64),))
    h = 1e-6
    fd = (f(torch.tensor(a0 + h, dtype=torch.float64)) - f(torch.tensor(a0 - h, dtype=torch.float64))) / (2 * h)
    # per event and feature, forward mode = finite differences
    np.testing.assert_allclose(jv.numpy(), fd.numpy(), rtol=1e-4, atol=1e-4)
    # reverse mode = forward mode
    assert float(g) == pytest.approx(float((jv * u).sum()), rel=1e-9)
    assert float(jv.abs().sum()) > 0


# ---------------------------------------------------------------- weights
def test_weights_sum_to_cross_section_times_lumi():
    lumi = 20.0
    ev = hb.generate(3000, seed=5, lumi=lumi)
    for s in hb.SAMPLES:
        proc = hb.ALT_SAMPLES[s][1] if s in hb.ALT_SAMPLES else s
        w = ev["weight"][ev["label"] == hb.LABELS[s]]
        expected = hb.PROCESSES[proc].xsec_fb * lumi
        assert expected == pytest.approx(hb.expected_yields(lumi)[proc])
        mc_err = math.sqrt(float((w ** 2).sum()))
        assert abs(w.sum() - expected) < 4 * mc_err, (s, w.sum(), expected, mc_err)
        if hb.PROCESSES[proc].neg_weight_fraction == 0:  # one weight per event: exact
            assert w.sum() == pytest.approx(expected, rel=1e-12)
            assert np.all(w > 0)
    # the constants the analysis is built from
    y = hb.CONSTANTS.expected_yields()
    assert y["htautau"] < y["diboson"] < y["ttbar"] < y["ztautau"]
    assert hb.CONSTANTS.rate_uncertainties()["diboson"] >= 0.2
    assert hb.CONSTANTS.labels == hb.LABELS and sorted(hb.LABELS.values()) == list(range(6))


def test_negative_weights_and_limited_statistics_of_the_diboson():
    ev = hb.generate({"diboson": 3000}, seed=8)
    w = ev["weight"]
    assert len(w) == 3000 == hb.PROCESSES["diboson"].n_mc_max
    frac = float((w < 0).mean())
    assert 0.10 <= frac <= 0.20, frac
    assert w.sum() > 0.9 * hb.PROCESSES["diboson"].expected()
    # limited MC statistics: the yield's relative MC error is percent-level (1/sqrt(3000), more
    # with the negative weights; an int count for every sample gives it 3000 events at most:
    # test_layout_and_counts)
    assert math.sqrt(float((w ** 2).sum())) / w.sum() > 1.0 / math.sqrt(3000)
    # the stored DataSet accepts them (negative weights, positive total)
    from inferno import DataSet
    DataSet(ev["primary"], ev["label"], w, extras={"up": ev["weight_tau_id_up"]})


def test_tau_id_weight_variations(events):
    w, up, dn = events["weight"], events["weight_tau_id_up"], events["weight_tau_id_down"]
    pt = events["primary"][:, hb.PRIMARY.index("tau_pt")]
    delta = (up - w) / w
    np.testing.assert_allclose(delta, (w - dn) / w, rtol=1e-9)
    np.testing.assert_allclose(delta, hb.tau_id_uncertainty(pt), rtol=1e-5)
    assert delta.min() >= 0.03 - 1e-9 and delta.max() <= 0.10 + 1e-9
    assert np.corrcoef(pt, delta)[0, 1] > 0.5  # it depends on pT


# ---------------------------------------------------------------- physics sanity
def test_physics_sanity(events):
    f, lab, w = events["features"], events["label"], events["weight"]
    assert np.isfinite(f).all() and np.isfinite(events["primary"]).all()
    F = hb.FEATURES.index

    def peak(s, feat, lo=0, hi=200, step=5):
        x = f[lab == hb.LABELS[s], F(feat)]
        h, e = np.histogram(x, bins=np.arange(lo, hi + step, step))
        return e[h.argmax()] + step / 2

    mz, mh = peak("ztautau", "m_vis"), peak("htautau", "m_vis")
    assert mz < mh < 125, (mz, mh)
    assert 40 < mz < 91
    # the collinear mass recovers the resonance of the signal
    assert 100 < peak("htautau", "m_coll") < 150

    def mean(s, feat):
        return float(np.average(f[lab == hb.LABELS[s], F(feat)], weights=w[lab == hb.LABELS[s]]))

    assert mean("ttbar", "btag_max") > 0.6 > 0.2 > mean("ztautau", "btag_max")
    assert mean("ttbar", "n_jets") > mean("htautau", "n_jets") > mean("ztautau", "n_jets")
    assert mean("ttbar", "met") > mean("ztautau", "met")
    # the control region is ttbar-rich
    cr = hb.control_region(f)
    yields = {s: w[cr & (lab == hb.LABELS[s])].sum() / w[lab == hb.LABELS[s]].sum() * hb.PROCESSES[s].expected()
              for s in hb.PROCESSES}
    assert yields["ttbar"] > 0.5 * sum(yields.values())
    assert set(np.unique(f[:, F("n_jets")])) <= {0.0, 1.0, 2.0, 3.0}


def test_alternative_ttbar_samples_are_harder_and_softer():
    ev = hb.generate({"ttbar": 3000, "ttbar_up": 3000, "ttbar_down": 3000}, seed=2)
    j = hb.FEATURES.index("sum_pt")
    m = {s: ev["features"][ev["label"] == hb.LABELS[s], j].mean() for s in ("ttbar", "ttbar_up", "ttbar_down")}
    assert m["ttbar_down"] < m["ttbar"] < m["ttbar_up"]


# ---------------------------------------------------------------- how the analysis consumes it
def test_events_feed_the_inferno_loss_with_every_kind_of_nuisance():
    """A network on primary objects (FeatureLayer first), exact TES/JES, the tau-ID weights, the
    alternative ttbar samples and rate uncertainties: the loss is finite and differentiable."""
    from inferno import AltSampleNuisance, ShapeNuisance, WeightNuisance
    from inferno.likelihood.modifiers import Lumi, NormFactor, NormSys
    from inferno.loss import Analysis, Process, inferno_loss

    ev = hb.generate(600, seed=3)
    c = hb.CONSTANTS
    procs = []
    for name, p in c.processes.items():
        mods = [NormFactor("mu")] if name == c.signal else [NormSys(f"norm_{name}", hi=1 + p.rate_uncertainty,
                                                                    lo=1 - p.rate_uncertainty)]
        procs.append(Process(name, p.label, p.expected(c.lumi), mods + [Lumi()]))
    on = list(c.processes)
    nuis = [ShapeNuisance("tes", hb.EnergyScale("tau"), on=on, constraint=1.0, variations=(-1.0, 1.0)),
            ShapeNuisance("jes", hb.EnergyScale("jet"), on=on, constraint=1.0, variations=(-1.0, 1.0)),
            WeightNuisance("tau_id", "weight_tau_id_up", "weight_tau_id_down", on=on),
            AltSampleNuisance("ttbar_model", c.alt_samples["ttbar_up"][0], c.alt_samples["ttbar_down"][0], on="ttbar")]
    analysis = Analysis(procs, nuis, poi="mu", parameters={"lumi": {"sigma": c.lumi_uncertainty}})
    torch.manual_seed(0)
    net = torch.nn.Sequential(hb.FeatureLayer.fit(ev["primary"]), torch.nn.Linear(len(hb.FEATURES), 16),
                              torch.nn.ReLU(), torch.nn.Linear(16, 4), torch.nn.Softmax(dim=1))
    x = torch.from_numpy(ev["primary"])
    weights = {k: torch.from_numpy(ev[k]).float() for k in ("weight_tau_id_up", "weight_tau_id_down")}
    loss = inferno_loss(analysis, net, x, torch.from_numpy(ev["label"]), torch.from_numpy(ev["weight"]).float(),
                        weights=weights)
    assert torch.isfinite(loss) and float(loss.detach()) > 0
    loss.backward()
    assert all(torch.isfinite(q.grad).all() for q in net.parameters() if q.grad is not None)
