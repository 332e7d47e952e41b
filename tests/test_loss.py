"""The INFERNO loss on an Analysis (inferno.loss), against independent computations:

* on the paper's two-process problem it equals the two-process callback Inferno (a builder of
  the same loss with the signal yield as its POI: loss x 50^2) with both of its strategies;
* with several processes, a control region, weight variations, alternative samples, up/down
  inputs and MC statistics, it equals the POI variance of a concrete likelihood Model built
  from the same soft histograms as numbers (the inverse Hessian of an Asimov fit);
* the derivative templates equal finite differences of the soft histograms;
* several POIs: trace and log-determinant of the POI block against numpy.
"""
import numpy as np
import pytest
import torch
from torch import nn
from torch.distributions import Normal

from inferno import Inferno, RateNuisance, ShapeNuisance, VariableSoftmax, shift_feature
from inferno.likelihood import Channel, HistoSys, Lumi, Model, NormFactor, NormSys, Sample
from inferno.loss import Analysis, FisherError, Process, batch_templates, inferno_loss

F64 = torch.float64


def _normal(loc, scale):
    return Normal(torch.tensor(loc, dtype=F64), torch.tensor(scale, dtype=F64))


def _net(n_in=3, n_bins=6, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(n_in, 16), nn.ReLU(), nn.Linear(16, n_bins), VariableSoftmax(0.3)).double()


def _events(n=600, seed=1, labels=(0, 1, 2)):
    g = torch.Generator().manual_seed(seed)
    lab = torch.tensor(labels, dtype=torch.long)[torch.randint(len(labels), (n,), generator=g)]
    x = torch.randn(n, 3, generator=g, dtype=F64) + lab[:, None].to(F64) * torch.tensor([0.8, -0.4, 0.3], dtype=F64)
    return x, lab


# --------------------------------------------------------------------------- the paper's case
def test_equals_fused_exact_inferno_on_two_processes():
    net = _net()
    x, y = _events(labels=(0, 1))
    nuis = [ShapeNuisance("r", shift_feature(0), on="b", constraint=0.4), RateNuisance("b", on="b", constraint=100.0)]
    losses = {}
    for hess in ("fisher", "autograd"):
        net.zero_grad()
        old = Inferno(nuis, mu_true=50.0, b_true=1000.0, hessian=hess).loss_on(net, x, y.to(F64))
        old.backward()
        losses[hess] = (old.item(), [p.grad.clone() for p in net.parameters()])
    analysis = Analysis([Process("signal", 1, 50.0, [NormFactor("mu")]),
                         Process("background", 0, 1000.0, [NormFactor("b_norm")])],
                        [ShapeNuisance("r", shift_feature(0), on="b", constraint=0.4)], poi="mu",
                        parameters={"b_norm": {"constraint": _normal(1.0, 0.1)}})  # 100 events of 1000
    net.zero_grad()
    new = inferno_loss(analysis, net, x, y)
    new.backward()
    # the POI is the signal strength here, the yield there: variance x 50^2
    for hess, (val, grads) in losses.items():
        assert float(new) * 2500 == pytest.approx(val, rel=1e-10), hess
        for p, g in zip(net.parameters(), grads):
            torch.testing.assert_close(p.grad * 2500, g, rtol=1e-7, atol=1e-10)


# --------------------------------------------------------------------------- several processes
def _analysis(mc_stat=False, loss="variance", pois=("mu",), with_cr=True):
    """signal (label 1), ttbar (0, free normalisation fixed by the control region), wjets
    (2, a rate uncertainty); a shift of the inputs on ttbar and wjets (exact), up/down inputs
    on the signal, a weight variation on wjets, an alternative ttbar sample (labels 10, 11)."""
    from inferno.nuisance import AltSampleNuisance, WeightNuisance

    processes = [Process("signal", 1, 30.0, [NormFactor("mu"), Lumi("lumi")], n_mc=2000),
                 Process("ttbar", 0, 400.0, [NormFactor("k_tt"), Lumi("lumi")], n_mc=4000),
                 Process("wjets", 2, 150.0, [NormSys("w_xsec", hi=1.2, lo=0.85), Lumi("lumi")], n_mc=500)]
    nuisances = [ShapeNuisance("jes", shift_feature(1), on=["ttbar", "wjets"], constraint=0.3),
                 ShapeNuisance("sig_model", up=lambda x: x * 1.1, down=lambda x: x * 0.92, on="signal",
                               constraint=1.0),
                 WeightNuisance("w_id", up="w_id_up", down="w_id_dn", on="wjets"),
                 AltSampleNuisance("tt_gen", up=10, down=11, on="ttbar")]
    fixed = None
    if with_cr:
        cr_tt, cr_w = np.array([300.0, 200.0]), np.array([80.0, 60.0])
        fixed = Model([Channel("CR", [Sample("ttbar", cr_tt, [NormFactor("k_tt"), Lumi("lumi")]),
                                      Sample("wjets", cr_w, [NormSys("w_xsec", hi=1.2, lo=0.85), Lumi("lumi")])])],
                      parameters={"lumi": {"sigma": 0.02}})
    return Analysis(processes, nuisances, poi=list(pois), fixed=fixed, mc_stat=mc_stat, loss=loss,
                    parameters={"lumi": {"sigma": 0.02}})


def _batch(seed=1, n=900):
    x, lab = _events(n, seed, labels=(0, 1, 2, 10, 11))
    g = torch.Generator().manual_seed(seed + 7)
    w = 0.5 + torch.rand(n, generator=g, dtype=F64)
    w[::17] *= -0.3  # a few negative weights (NLO)
    weights = {"w_id_up": w * (1 + 0.1 * torch.tanh(x[:, 0])), "w_id_dn": w * (1 - 0.08 * torch.tanh(x[:, 0]))}
    return x, lab, w, weights


def _soft(net, x, w):
    return (w[:, None] * net(x)).sum(0) / w.sum()


def _reference_variance(analysis, net, x, lab, w, weights, pois, kind):
    """The same measurement as a concrete Model built from numbers: soft histograms (written
    here from scratch), derivative templates by central finite differences, histosys
    variations nominal +- derivative (code '4p': slope (hi - lo)/2 at 0), the control region;
    the Hessian of the NLL at the Asimov point, inverted with numpy."""
    n_bins = net(x[:1]).shape[1]
    eps = analysis.eps
    c = 1.0 / (1.0 + n_bins * eps)
    proc = {"signal": (1, 30.0), "ttbar": (0, 400.0), "wjets": (2, 150.0)}
    with torch.no_grad():
        h, d = {}, {}
        for name, (label, Y) in proc.items():
            m = lab == label
            h[name] = Y * c * (_soft(net, x[m], w[m]) + eps)
        for name in ("ttbar", "wjets"):  # jes: shift of feature 1, finite differences in the shift
            m = lab == proc[name][0]
            e = torch.zeros(3, dtype=F64)
            e[1] = 1e-4
            d[(name, "jes")] = proc[name][1] * c * (_soft(net, x[m] + e, w[m]) - _soft(net, x[m] - e, w[m])) / 2e-4
        m = lab == 1
        d[("signal", "sig_model")] = 30.0 * c * (_soft(net, x[m] * 1.1, w[m]) - _soft(net, x[m] * 0.92, w[m])) / 2
        m = lab == 2
        y2 = net(x[m])
        d[("wjets", "w_id")] = 150.0 * c * ((weights["w_id_up"][m] - weights["w_id_dn"][m])[:, None] * y2).sum(0) / (
            2 * w[m].sum())
        mu_, md = lab == 10, lab == 11
        d[("ttbar", "tt_gen")] = 400.0 * c * (_soft(net, x[mu_], w[mu_]) - _soft(net, x[md], w[md])) / 2
    hist = {name: [] for name in proc}
    for (name, nuis), dd in d.items():
        hist[name].append(HistoSys(nuis, hi=(h[name] + dd).numpy(), lo=(h[name] - dd).numpy(), code="4p"))
    mods = {"signal": [NormFactor("mu"), Lumi("lumi")], "ttbar": [NormFactor("k_tt"), Lumi("lumi")],
            "wjets": [NormSys("w_xsec", hi=1.2, lo=0.85), Lumi("lumi")]}
    samples = []
    for name in proc:
        s_mods = mods[name] + hist[name]
        samples.append(Sample(name, h[name].numpy(), s_mods))
    cr_tt, cr_w = np.array([300.0, 200.0]), np.array([80.0, 60.0])
    channels = [Channel("learned", samples),
                Channel("CR", [Sample("ttbar", cr_tt, [NormFactor("k_tt"), Lumi("lumi")]),
                               Sample("wjets", cr_w, [NormSys("w_xsec", hi=1.2, lo=0.85), Lumi("lumi")])])]
    settings = {"lumi": {"sigma": 0.02}, "mu": {"bounds": (-10, 10)}, "k_tt": {"bounds": (-10, 10)},
                "jes": {"constraint": _normal(0.0, 0.3), "bounds": (-10, 10)},
                "sig_model": {"constraint": _normal(0.0, 1.0)}}
    model = Model(channels, poi=list(pois), parameters=settings)
    main, aux = model.asimov()
    _, _, H = model.nll_grad_hess(model.init, main, aux)
    cov = np.linalg.inv(H.numpy())
    idx = [model.index(p) for p in pois]
    V = cov[np.ix_(idx, idx)]
    return {"variance": V[0, 0], "trace": np.trace(V), "logdet": np.linalg.slogdet(V)[1]}[kind]


@pytest.mark.parametrize("kind,pois", [("variance", ("mu",)), ("trace", ("mu", "k_tt")), ("logdet", ("mu", "k_tt"))])
def test_several_processes_and_every_nuisance_kind_equal_a_concrete_model(kind, pois):
    analysis = _analysis(loss=kind, pois=pois)
    net = _net()
    x, lab, w, weights = _batch()
    loss, fisher, names = inferno_loss(analysis, net, x, lab, w, weights=weights, return_fisher=True)
    ref = _reference_variance(analysis, net, x, lab, w, weights, pois, kind)
    assert float(loss) == pytest.approx(ref, rel=1e-5)  # finite-difference jes derivative: ~1e-8 relative
    assert names[:2] == ["mu", "lumi"] and "k_tt" in names and "jes" in names
    # the loss is differentiable in the network's weights: a finite difference along a direction
    net.zero_grad()
    loss.backward()
    direction = [torch.randn_like(p) for p in net.parameters()]
    slope = sum(float((p.grad * dp).sum()) for p, dp in zip(net.parameters(), direction))
    h = 1e-6
    with torch.no_grad():
        vals = []
        for sgn in (1, -1):
            for p, dp in zip(net.parameters(), direction):
                p.add_(sgn * h * dp)
            vals.append(float(inferno_loss(analysis, net, x, lab, w, weights=weights)))
            for p, dp in zip(net.parameters(), direction):
                p.sub_(sgn * h * dp)
    assert slope == pytest.approx((vals[0] - vals[1]) / (2 * h), rel=1e-5)


def test_mc_stat_equals_a_staterror_with_the_soft_widths():
    """With mc_stat the loss equals that of the same model with a staterror whose relative
    width is sigma_i / nu_i (sigma from the soft sums of squared weights, scaled to the training
    sample), and it is larger than without (MC statistics only add uncertainty)."""
    analysis = _analysis(mc_stat=True)
    no_stat = _analysis(mc_stat=False)
    net = _net()
    x, lab, w, weights = _batch()
    n_mc = {"signal": 2000, "ttbar": 4000, "wjets": 500}
    loss = inferno_loss(analysis, net, x, lab, w, weights=weights)
    assert float(loss) > float(inferno_loss(no_stat, net, x, lab, w, weights=weights))
    # reference: the per-bin relative width, by hand
    eps = analysis.eps
    c = 1.0 / (1.0 + 6 * eps)
    with torch.no_grad():
        nu, var = 0, 0
        for label, Y, name in ((1, 30.0, "signal"), (0, 400.0, "ttbar"), (2, 150.0, "wjets")):
            m = lab == label
            y = net(x[m])
            nu = nu + Y * c * ((w[m][:, None] * y).sum(0) / w[m].sum() + eps)
            var = var + (Y * c / w[m].sum()) ** 2 * (int(m.sum()) / n_mc[name]) * ((w[m] ** 2)[:, None] * y ** 2).sum(0)
    _, fisher, names = inferno_loss(analysis, net, x, lab, w, weights=weights, return_fisher=True)
    _, fisher0, names0 = inferno_loss(no_stat, net, x, lab, w, weights=weights, return_fisher=True)
    k = [names.index(f"mc_stat_learned[{i}]") for i in range(6)]
    # the gamma block: (d nu / d gamma)^2 / nu + 1 / sigma_rel^2 = nu + nu^2 / var
    torch.testing.assert_close(fisher[k, k], (nu + nu * nu / var).detach(), rtol=1e-10, atol=0)
    # the other parameters' block is unchanged
    keep = [names.index(n) for n in names0]
    torch.testing.assert_close(fisher[keep][:, keep], fisher0, rtol=1e-12, atol=1e-12)


def test_bad_batches_and_outputs_are_named():
    analysis = _analysis(with_cr=False)
    net = _net()
    x, lab, w, weights = _batch()
    with pytest.raises(ValueError, match=r"labels \[7\] belong to no process"):
        inferno_loss(analysis, net, x, torch.where(lab == 2, 7, lab), w, weights=weights)
    with pytest.raises(ValueError, match="no events of process 'wjets'"):
        keep = lab != 2
        inferno_loss(analysis, net, x[keep], lab[keep], w[keep], weights={k: v[keep] for k, v in weights.items()})
    w_neg = w.clone()
    w_neg[lab == 1] = -1.0
    with pytest.raises(ValueError, match="summed weight of process 'signal'"):
        inferno_loss(analysis, net, x, lab, w_neg, weights=weights)
    with pytest.raises(ValueError, match="needs the per-event weights 'w_id_up'"):
        inferno_loss(analysis, net, x, lab, w)
    relu = nn.Sequential(nn.Linear(3, 6), nn.ReLU()).double()
    with pytest.raises(ValueError, match="End the network in a softmax"):
        inferno_loss(analysis, relu, x, lab, w, weights=weights)
    with pytest.raises(ValueError, match="unknown POI 'nope'"):
        Analysis(analysis.processes, poi="nope", parameters={"lumi": {"sigma": 0.02}})
    with pytest.raises(ValueError, match="acts on unknown processes"):
        from inferno.nuisance import WeightNuisance
        Analysis(analysis.processes, [WeightNuisance("x", up="a", down="b", on="zz")],
                 parameters={"lumi": {"sigma": 0.02}})
    # a free nuisance with no effect leaves the POI variance undefined
    from inferno.nuisance import WeightNuisance
    dead = Analysis(analysis.processes, [WeightNuisance("dead", up="a", down="a", on="wjets")],
                    parameters={"lumi": {"sigma": 0.02}, "dead": {"constraint": None}})
    keep = lab <= 2
    with pytest.raises(FisherError, match="not positive definite"):
        inferno_loss(dead, net, x[keep], lab[keep], w[keep], weights={"a": w[keep]})


def test_checks_of_a_recorded_softmax_network_and_of_the_fisher_node():
    """Outputs recorded as a softmax's are not checked row by row: NaN from the network must
    still be named (it fails the Fisher checks); the Fisher node's one flag is False for a
    non-finite Fisher information, a non-positive count or a singular matrix, and True
    otherwise."""
    from inferno.loss import InfernoLoss
    from inferno.loss.fisher import AsimovPoiLoss
    from inferno.loss.pure import _recorded_forward

    analysis = _analysis(with_cr=False)
    x, lab, w, weights = _batch()
    net = _net()
    y, calls = _recorded_forward(net, x)
    assert calls is not None and isinstance(calls[-1][0], nn.Softmax)  # the recorded path is the one tested
    with torch.no_grad():
        net[0].weight[0, 0] = float("nan")
    for run in (lambda: inferno_loss(analysis, net, x, lab, w, weights=weights),
                lambda: InfernoLoss(analysis).loss_on(net, x, lab, w, extras=weights)):
        with pytest.raises(ValueError, match="NaN or inf"):
            run()
    out = batch_templates(analysis, _net(), x, lab, w, weights=weights)
    k = analysis._constants(6, x.device)
    var = torch.zeros(0, dtype=F64)

    def ok(nom, shifts):
        return bool(AsimovPoiLoss.apply(nom, shifts, var, k)[2])

    nom, shifts = out["nominal"], out["shifts"]
    assert ok(nom, shifts)
    for bad in (float("nan"), float("inf"), -float("inf")):
        s = shifts.clone()
        s[0, 2] = bad
        assert not ok(nom, s), bad
        n = nom.clone()
        n[1, 3] = bad
        assert not ok(n, shifts), bad
    n = nom.clone()
    n[:, 2] = -n[:, 2]  # a negative expected count
    assert not ok(n, shifts)
    # two terms of one process (ttbar: jes, tt_gen) with the same huge shape: positive definite in
    # exact arithmetic (the constraints), numerically singular
    assert out["terms"][1][0] == out["terms"][2][0] == "ttbar"
    s = shifts.clone()
    s[2] = s[1]
    s[1:3] *= 1e8
    assert not ok(nom, s)
    s[1:3] *= 1e-4
    assert ok(nom, s)


def test_callback_trains_like_the_fused_paper_callback():
    """InfernoLoss (the general path, a thin callback over inferno_loss) and the fused Inferno
    callback train the same network along the same path: the POI is the signal strength in one
    and the yield in the other, a constant factor 50^2 in the loss, which Adam does not see."""
    import copy
    import functools

    from inferno import ModelWrapper, get_paper_data
    from inferno.loss import InfernoLoss

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 50), nn.ReLU(), nn.Linear(50, 10), VariableSoftmax(0.1))
    nets = [net, copy.deepcopy(net)]
    nuis = [ShapeNuisance("r", shift_feature(0), on="b", constraint=0.4), RateNuisance("b", on="b", constraint=100.0)]
    analysis = Analysis([Process("signal", 1, 50.0, [NormFactor("mu")]),
                         Process("background", 0, 1000.0, [NormFactor("b_norm")])],
                        [ShapeNuisance("r", shift_feature(0), on="b", constraint=0.4)], poi="mu",
                        parameters={"b_norm": {"constraint": _normal(1.0, 0.1)}})
    losses = []
    for m, cb in zip(nets, (Inferno(nuis, mu_true=50.0, b_true=1000.0), InfernoLoss(analysis))):
        wr = ModelWrapper(m)
        wr.fit(2, get_paper_data(2000, bs=500, seed=0, drop_last=True), functools.partial(torch.optim.Adam, lr=1e-3),
               loss=None, cbs=[cb])
        losses.append(wr.loss_tracker.losses["valid"])
    assert losses[0][-1] < losses[0][0]
    np.testing.assert_allclose(np.array(losses[1]) * 2500, losses[0], rtol=1e-5)
    with pytest.raises(ValueError, match="loss=None"):
        ModelWrapper(nets[1]).fit(1, get_paper_data(1000, bs=500, seed=0), functools.partial(torch.optim.Adam),
                                  loss=nn.BCELoss(), cbs=[InfernoLoss(analysis)])


def test_negative_weights_accepted_but_a_negative_bin_is_named():
    """NLO-like samples: negative weights are fine as long as every bin's expected count stays
    positive; a bin driven negative is an error naming the bin and the process."""
    analysis = Analysis([Process("signal", 1, 20.0, [NormFactor("mu")]), Process("bkg", 0, 200.0)], poi="mu")
    net = _net(n_bins=4)
    x, lab = _events(800, seed=5, labels=(0, 1))
    w = torch.ones(len(x), dtype=F64)
    w[::5] = -0.2  # 20% negative weights
    assert torch.isfinite(inferno_loss(analysis, net, x, lab, w))
    # weights -k on the background events of one bin: the bin's soft count goes negative
    # (k > C / A) while the background's total weight stays positive (k < n_out / n_in)
    with torch.no_grad():
        y = net(x)
    b = y.argmax(1)
    target = int(b[lab == 0].mode().values)
    inside = (lab == 0) & (b == target)
    others = (lab == 0) & ~inside
    A = float(y[inside, target].sum())
    C = float((w[others] * y[others, target]).sum())
    upper = float(w[others].sum()) / int(inside.sum())
    assert C / A < upper
    w2 = w.clone()
    w2[inside] = -0.5 * (C / A + upper)
    with pytest.raises(ValueError, match=rf"bin {target} of the learned channel has expected count .*process 'bkg'"):
        inferno_loss(analysis, net, x, lab, w2)


def test_callback_reads_weight_variations_from_the_data_set():
    """A DataSet with extra columns (the weight variations) and negative weights trains under
    InfernoLoss; the loss of a batch equals the pure function's on the same events."""
    import functools

    from inferno import DataPair, DataSet, ModelWrapper, WeightedDataLoader
    from inferno.loss import InfernoLoss

    analysis = _analysis(with_cr=True)
    x, lab, w, weights = _batch(n=1200)
    ds = DataSet(x, lab, w, extras=weights)
    dl = WeightedDataLoader(ds, 600, shuffle=True, seed=0)
    net = _net().float()
    cb = InfernoLoss(analysis)
    wr = ModelWrapper(net)
    wr.fit(2, DataPair(dl, WeightedDataLoader(ds, 1200)), functools.partial(torch.optim.Adam, lr=1e-3), loss=None,
           cbs=[cb], progress=False)
    assert cb.last_fisher is not None and cb.last_fisher.shape == (len(cb.param_names),) * 2
    with torch.no_grad():
        ref = inferno_loss(analysis, net, ds.x, ds.y.reshape(-1).long(), ds.w, weights=ds.extras)
    assert wr.loss_tracker.losses["valid"][-1] == pytest.approx(float(ref), rel=1e-9)


def test_learned_channel_replaces_a_channel_of_an_existing_workspace():
    """An analysis' existing likelihood (read from pyhf JSON) with its signal region replaced by
    the learned channel: the loss equals that of the same model written out by hand, and the
    replaced channel's templates play no role."""
    from inferno.likelihood import from_pyhf

    sr_old = Channel("SR", [Sample("signal", [1.0, 2.0, 3.0], [NormFactor("mu")]),
                            Sample("ttbar", [50.0, 40.0, 30.0], [NormFactor("k_tt")])])
    cr = Channel("CR", [Sample("ttbar", [300.0, 200.0], [NormFactor("k_tt")])])
    existing = Model([sr_old, cr], poi="mu")
    fixed, _ = from_pyhf(existing.to_pyhf(existing.expected(existing.init)))
    processes = [Process("signal", 1, 30.0, [NormFactor("mu")]), Process("ttbar", 0, 400.0, [NormFactor("k_tt")])]
    analysis = Analysis(processes, poi="mu", fixed=fixed, replace="SR", channel="SR")
    net = _net(n_bins=4)
    x, lab = _events(600, seed=3, labels=(0, 1))
    loss = inferno_loss(analysis, net, x, lab)
    with torch.no_grad():
        eps = analysis.eps
        c = 1.0 / (1.0 + 4 * eps)
        h = {name: Y * c * ((net(x[lab == label])).mean(0) + eps) for name, label, Y in (("signal", 1, 30.0),
                                                                                         ("ttbar", 0, 400.0))}
    by_hand = Model([Channel("SR", [Sample("signal", h["signal"].numpy(), [NormFactor("mu")]),
                                    Sample("ttbar", h["ttbar"].numpy(), [NormFactor("k_tt")])]), cr], poi="mu")
    main, aux = by_hand.asimov()
    _, _, H = by_hand.nll_grad_hess(by_hand.init, main, aux)
    ref = np.linalg.inv(H.numpy())[by_hand.index("mu"), by_hand.index("mu")]
    assert float(loss) == pytest.approx(ref, rel=1e-9)
    with pytest.raises(ValueError, match="replace='XR' is not a channel"):
        Analysis(processes, poi="mu", fixed=fixed, replace="XR")


def test_negative_clip_floors_a_process_histogram_per_bin():
    """negative='clip': the batch of the negative-bin test trains instead of raising, the
    process's negative bin is floored, the others are untouched."""
    analysis = Analysis([Process("signal", 1, 20.0, [NormFactor("mu")]), Process("bkg", 0, 200.0)], poi="mu",
                        negative="clip")
    strict = Analysis(analysis.processes, poi="mu")
    net = _net(n_bins=4)
    x, lab = _events(800, seed=5, labels=(0, 1))
    w = torch.ones(len(x), dtype=F64)
    with torch.no_grad():
        y = net(x)
    b = y.argmax(1)
    target = int(b[lab == 0].mode().values)
    inside = (lab == 0) & (b == target)
    others = (lab == 0) & ~inside
    A, C = float(y[inside, target].sum()), float((w[others] * y[others, target]).sum())
    upper = float(w[others].sum()) / int(inside.sum())
    w[inside] = -0.5 * (C / A + upper)
    with pytest.raises(ValueError, match="expected count"):
        inferno_loss(strict, net, x, lab, w)
    loss, fisher, _ = inferno_loss(analysis, net, x, lab, w, return_fisher=True)
    assert torch.isfinite(loss) and float(loss) > 0
    with pytest.raises(ValueError, match="negative must be"):
        Analysis(analysis.processes, poi="mu", negative="ignore")
