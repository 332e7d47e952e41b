"""From a trained network to the analysis' Model (inferno.templates.analysis_model): the
templates equal numpy histograms of the network's argmax bins, every nuisance kind gives the
variations it should, the fixed channels are kept, and the Model measures (fit, profile,
pyhf round trip). Also: the pure loss trains a network in a hand-written loop."""
import numpy as np
import pytest
import torch
from torch import nn
from torch.distributions import Normal

from inferno import ShapeNuisance, VariableSoftmax, shift_feature
from inferno.likelihood import Channel, Lumi, Model, NormFactor, NormSys, Sample, fit, from_pyhf, profile
from inferno.loss import Analysis, Process, inferno_loss
from inferno.nuisance import AltSampleNuisance, WeightNuisance
from inferno.templates import analysis_model, hard_bins

F64 = torch.float64


def _setup(seed=0, n=3000):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 5), VariableSoftmax(0.3)).double()
    g = torch.Generator().manual_seed(seed + 1)
    lab = torch.tensor([0, 1, 2, 10, 11])[torch.randint(5, (n,), generator=g)]
    x = torch.randn(n, 3, generator=g, dtype=F64) + lab.clamp(max=2)[:, None].to(F64) * torch.tensor([0.9, -0.5, 0.2], dtype=F64)
    w = 0.5 + torch.rand(n, generator=g, dtype=F64)
    weights = {"up": w * 1.1, "dn": w * (1 - 0.05 * torch.tanh(x[:, 0]))}
    cr = Model([Channel("CR", [Sample("ttbar", [300.0, 200.0], [NormFactor("k_tt"), Lumi()])])],
               parameters={"lumi": {"sigma": 0.02}})
    return three_process_analysis(fixed=cr), net, x, lab, w, weights


def three_process_analysis(fixed=None):
    """signal, ttbar (free, jes, an alternative sample), wjets (a rate, jes, weight variations
    'up'/'dn'), MC statistics; ``fixed``: the fixed channels (also used by test_dask)."""
    return Analysis(
        [Process("signal", 1, 25.0, [NormFactor("mu"), Lumi()], n_mc=1000),
         Process("ttbar", 0, 300.0, [NormFactor("k_tt"), Lumi()], n_mc=1000),
         Process("wjets", 2, 100.0, [NormSys("w_xsec", hi=1.2, lo=0.8), Lumi()], n_mc=1000)],
        [ShapeNuisance("jes", shift_feature(0), on=["ttbar", "wjets"], constraint=Normal(0.0, 0.3)),
         WeightNuisance("w_id", up="up", down="dn", on="wjets"),
         AltSampleNuisance("tt_gen", up=10, down=11, on="ttbar")],
        poi="mu", fixed=fixed, mc_stat=True, parameters={"lumi": {"sigma": 0.02}})


def test_templates_are_histograms_of_the_argmax_bins():
    analysis, net, x, lab, w, weights = _setup()
    model = analysis_model(analysis, net, x, lab, w, weights=weights)
    assert model.channel_names == ["CR", "learned"] and model.poi_names == ["mu"]
    with torch.no_grad():
        bins = net(x).argmax(1).numpy()
    assert np.array_equal(bins, hard_bins(net, x, bs=128).numpy())
    edges = np.arange(6) - 0.5
    p0 = model.init
    by_sample = model.expected_by_sample(p0)
    names = model.samples
    for label, Y, name in ((1, 25.0, "signal"), (0, 300.0, "ttbar"), (2, 100.0, "wjets")):
        m = (lab == label).numpy()
        ref = Y * np.histogram(bins[m], edges, weights=w.numpy()[m])[0] / w.numpy()[m].sum()
        got = by_sample[names.index(("learned", name)), model.channel_bins["learned"]].numpy()
        np.testing.assert_allclose(got, ref, rtol=1e-12)
        # MC statistics: sqrt(sum w^2) scaled like the template, combined over the samples
    # variations: jes at +-0.3 (its constraint's width), alpha in standard deviations
    m = (lab == 0).numpy()
    ttbar = next(s for s in model.channels[1].samples if s.name == "ttbar")
    jes = next(mm for mm in ttbar.modifiers if mm.name == "jes")
    with torch.no_grad():
        up = net(x[m] + torch.tensor([0.3, 0, 0], dtype=F64)).argmax(1).numpy()
    np.testing.assert_allclose(jes.hi, 300.0 * np.histogram(up, edges, weights=w.numpy()[m])[0] / w.numpy()[m].sum(),
                               rtol=1e-12)
    assert model.parameters[model.index("jes")].sigma == pytest.approx(1.0)
    gen = next(mm for mm in ttbar.modifiers if mm.name == "tt_gen")
    mu_ = (lab == 10).numpy()
    np.testing.assert_allclose(gen.hi, 300.0 * np.histogram(bins[mu_], edges, weights=w.numpy()[mu_])[0]
                               / w.numpy()[mu_].sum(), rtol=1e-12)
    wj = next(s for s in model.channels[1].samples if s.name == "wjets")
    wid = next(mm for mm in wj.modifiers if mm.name == "w_id")
    m2 = (lab == 2).numpy()
    np.testing.assert_allclose(wid.hi, 100.0 * np.histogram(bins[m2], edges, weights=1.1 * w.numpy()[m2])[0]
                               / w.numpy()[m2].sum(), rtol=1e-12)
    # the model measures: Asimov fit at the truth, a profile, the pyhf round trip
    main, aux = model.asimov()
    res = fit(model, main, aux)
    assert res.converged and abs(float(res.poi) - 1.0) < 1e-6
    scan = profile(model, main, np.linspace(-1.0, 3.0, 21), aux=aux)
    assert scan.width() > 0
    again, obs = from_pyhf(model.to_pyhf(main))
    assert float(again.nll(again.init, obs)) == pytest.approx(float(model.nll(model.init, main)), rel=1e-12)


def test_pure_loss_in_a_hand_written_loop_lowers_the_variance():
    """The loss as a pure function: a plain torch loop (no ModelWrapper) trains the network,
    and the expected variance of mu on held-out events goes down."""
    analysis, net, x, lab, w, weights = _setup(n=4000)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    with torch.no_grad():
        before = float(inferno_loss(analysis, net, x, lab, w, weights=weights))
    g = torch.Generator().manual_seed(3)
    for epoch in range(10):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 1000):
            idx = perm[i:i + 1000]
            loss = inferno_loss(analysis, net, x[idx], lab[idx], w[idx], weights={k: v[idx] for k, v in weights.items()})
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        after = float(inferno_loss(analysis, net, x, lab, w, weights=weights))
    assert after < 0.85 * before  # seen: 1.74 -> 1.29


def test_negative_template_bin_raises_or_is_clipped_as_the_analysis_says():
    """A wjets bin whose summed weight is negative (negative weights): a named error with
    Analysis(negative='raise'), a 0 template bin with 'clip' (the loss's floor); the other bins
    and processes unchanged."""
    analysis, net, x, lab, w, weights = _setup()
    with torch.no_grad():
        bins = net(x).argmax(1)
    w = w.clone()
    counts = torch.bincount(bins[lab == 2], minlength=5)
    b = int(torch.where(counts > 0, counts, 10 ** 9).argmin())  # wjets' least populated bin
    m = (lab == 2) & (bins == b)
    w[m] = -w[m]  # that bin of wjets all negative; the process's total stays positive
    assert float(w[lab == 2].sum()) > 0
    with pytest.raises(ValueError, match=f"process 'wjets': bin {b} of the learned channel has a negative template"):
        analysis_model(analysis, net, x, lab, w, weights=weights)
    clip = Analysis(analysis.processes, analysis.nuisances, poi="mu", fixed=analysis.fixed, mc_stat=True,
                    parameters=analysis.parameters, negative="clip")
    model = analysis_model(clip, net, x, lab, w, weights=weights)
    got = model.expected_by_sample(model.init)[model.samples.index(("learned", "wjets")),
                                                model.channel_bins["learned"]].numpy()
    mm = (lab == 2).numpy()
    ref = 100.0 * np.histogram(bins.numpy()[mm], np.arange(6) - 0.5, weights=w.numpy()[mm])[0] / w.numpy()[mm].sum()
    assert ref[b] < 0 and got[b] == 0
    np.testing.assert_allclose(np.delete(got, b), np.delete(ref, b), rtol=1e-12)
