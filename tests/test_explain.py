"""inferno.explain: permutation importance, attributions, nuisance maps and the ranking of the
systematics, each against an independent computation (finite differences, refits of the
concrete model, pyhf, hand-made numbers)."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from inferno import ShapeNuisance, VariableSoftmax, WeightNuisance, shift_feature
from inferno.explain import (BinnedSummary, PURITY_LABEL, attribution_matrix, attribution_target, explain_report,
                             expected_widths, gradient_x_input, group_by_object, integrated_gradients, learned_purity,
                             loss_gradient_x_input, loss_nuisance_map, model_nuisance_map, nuisance_ranking,
                             occlusion, permutation_importance, purity_order, soft_templates)
from inferno.likelihood import NormFactor, NormSys, fit
from inferno.loss import Analysis, Process, inferno_loss
from inferno.templates import analysis_model, hard_bins

F64 = torch.float64
N = 2400


def _events(n=N, seed=0):
    g = torch.Generator().manual_seed(seed)
    label = torch.randint(0, 3, (n,), generator=g)
    x = (torch.randn(n, 3, generator=g, dtype=F64) + label[:, None] * torch.tensor([0.8, -0.4, 0.3], dtype=F64))
    w = torch.ones(n, dtype=F64)
    extras = {"id_up": w * (1 + 0.05 * x[:, 0].tanh()), "id_dn": w * (1 - 0.05 * x[:, 0].tanh())}
    return x, label, w, extras


def _analysis(mc_stat=False, n=N):
    n_mc = n // 3 if mc_stat else None
    return Analysis(
        [Process("signal", 1, 40.0, [NormFactor("mu")], n_mc=n_mc),
         Process("top", 0, 500.0, [NormSys("top_xsec", hi=1.1, lo=0.9)], n_mc=n_mc),
         Process("wjets", 2, 200.0, [NormSys("w_xsec", hi=1.3, lo=0.7)], n_mc=n_mc)],
        [ShapeNuisance("scale", shift_feature(1), on=["top", "wjets"], constraint=0.2),
         WeightNuisance("lepton_id", up="id_up", down="id_dn", on=["signal", "top"])],
        poi="mu", mc_stat=mc_stat)


def _net(seed=0, zero_cols=(), bins=6, act=nn.Tanh):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(3, 16), act(), nn.Linear(16, bins), VariableSoftmax(0.3)).double()
    with torch.no_grad():
        for c in zero_cols:
            net[0].weight[:, c] = 0.0
    return net.eval()


# ----------------------------------------------------------------------------- importance and attributions
def test_an_ignored_feature_has_exactly_zero_importance_and_attribution():
    x, y, w, ex = _events()
    an, net = _analysis(), _net(zero_cols=(2,))
    imp = permutation_importance(an, net, x, y, w, ex, feature_names=["a", "b", "c"], n_repeats=2, seed=1)
    t = imp.table.set_index("group")
    assert t.loc["c", "d_sigma"] == 0.0 and t.loc["c", "d_sigma_stat"] == 0.0 and t.loc["c", "d_sigma_std"] == 0.0
    assert np.all(imp.samples[2] == [imp.sigma, imp.sigma_stat])  # the same model after every shuffle
    assert (t.loc[["a", "b"], "d_sigma_std"] > 0).all()  # the used ones do change the measurement
    # the reference widths are inferno-bench's: the Hessian uncertainties of fits, nuisances free and fixed
    ref = expected_widths(analysis_model(an, net, x, y, w, weights=ex), "fit")
    assert imp.sigma == pytest.approx(ref["sigma"], rel=1e-9)
    assert imp.sigma_stat == pytest.approx(ref["sigma_stat"], rel=1e-9)
    xs = x[:300]
    assert torch.all(gradient_x_input(net, xs)[..., 2] == 0)
    assert torch.all(gradient_x_input(net, xs)[..., :2].abs().sum((0, 1)) > 0)
    assert torch.all(integrated_gradients(net, xs, baseline="mean", steps=16).attributions[..., 2] == 0)
    occ = occlusion(net, xs, {"a": [0], "c": [2]})
    assert torch.all(occ["c"] == 0) and bool((occ["a"] != 0).any())
    lg = loss_gradient_x_input(an, net, x, y, w, ex)
    assert torch.all(lg[:, 2] == 0) and bool((lg[:, 0] != 0).any())


def test_a_summary_of_one_feature_puts_all_importance_and_attribution_there():
    x, y, w, ex = _events()
    an = _analysis()
    score = nn.Linear(3, 1).double()
    with torch.no_grad():
        score.weight[:] = torch.tensor([[1.0, 0.0, 0.0]])
        score.bias.zero_()
    summary = BinnedSummary(score, [0.0, 0.5, 1.0, 1.5])  # a binned 1-output network
    imp = permutation_importance(an, summary, x, y, w, ex, n_repeats=3, seed=0)
    t = imp.table.set_index("group")
    assert t.loc["x1", "d_sigma"] == 0.0 and t.loc["x2", "d_sigma"] == 0.0
    assert t.loc["x1", "d_sigma_stat"] == 0.0 and t.loc["x2", "d_sigma_stat"] == 0.0
    # shuffling x0 across the processes removes all the separation: a much wider measurement
    assert t.loc["x0", "d_sigma"] > 10 * t.loc["x0", "d_sigma_std"] > 0
    # ... and every process then has the same shape, so that the statistics-only width is a
    # counting experiment's, sqrt(S + B) / S, up to the shuffles' sampling noise
    np.testing.assert_allclose(imp.samples[0, :, 1], math.sqrt(740.0) / 40.0, rtol=0.03)
    assert t.loc["x0", "d_sigma_stat"] > 0
    # shuffled within each process, every process keeps its distribution of x0: the nominal
    # templates, hence the statistics-only width, do not change (only the per-event weight
    # variation, which depends on x0, is decorrelated from it)
    per = permutation_importance(an, summary, x, y, w, ex, n_repeats=2, within="process").table.set_index("group")
    assert abs(per.loc["x0", "d_sigma_stat"]) < 1e-12 * imp.sigma_stat
    assert per.loc["x1", "d_sigma"] == 0.0
    ig = integrated_gradients(attribution_target(summary), x[:200], baseline="zero", steps=8)
    assert torch.all(ig.attributions[..., 1:] == 0)
    torch.testing.assert_close(ig.attributions[..., 0], ig.delta, rtol=0, atol=1e-12)
    # the binning of the 1-output network is the edges'
    assert torch.equal(hard_bins(summary, x), torch.bucketize(x[:, 0], torch.tensor([0.0, 0.5, 1.0, 1.5], dtype=F64),
                                                              right=True))


def test_integrated_gradients_completeness_and_gradient_x_input_against_finite_differences():
    x, _, _, _ = _events(400, seed=3)
    net = _net(seed=2)
    for baseline in ("zero", "mean"):
        ig = integrated_gradients(net, x, baseline=baseline, steps=64)
        assert ig.completeness_error < 1e-6  # Gauss-Legendre on a smooth network, float64
        np.testing.assert_allclose(ig.attributions.sum(-1), ig.delta, atol=1e-6)
    # the error is measured, not assumed: a coarse Riemann sum misses it
    assert integrated_gradients(net, x, steps=2, rule="midpoint").completeness_error > 1e-6
    gx = gradient_x_input(net, x[:50])
    h = 1e-6
    with torch.no_grad():
        for f in range(3):
            e = torch.zeros(3, dtype=F64)
            e[f] = h
            fd = (net(x[:50] + e) - net(x[:50] - e)) / (2 * h) * x[:50, f:f + 1]
            np.testing.assert_allclose(gx[..., f], fd, atol=1e-7)


def test_loss_gradient_x_input_against_finite_differences():
    x, y, w, ex = _events(900, seed=4)
    an, net = _analysis(), _net(seed=4)
    lg = loss_gradient_x_input(an, net, x, y, w, ex)
    h = 1e-6
    with torch.no_grad():
        for i, f in ((0, 0), (7, 1), (11, 2)):
            xp, xm = x.clone(), x.clone()
            xp[i, f] += h
            xm[i, f] -= h
            fd = (float(inferno_loss(an, net, xp, y, w, ex)) - float(inferno_loss(an, net, xm, y, w, ex))) / (2 * h)
            assert float(lg[i, f]) == pytest.approx(fd * float(x[i, f]), rel=1e-5, abs=1e-10)


def test_attribution_matrix_is_the_per_bin_weighted_mean_of_the_argmax_output():
    attr = torch.arange(24, dtype=F64).reshape(4, 2, 3)  # 4 events, 2 outputs, 3 features
    outputs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]], dtype=F64)
    bins = outputs.argmax(1)
    w = torch.tensor([1.0, 1.0, 3.0, 1.0], dtype=F64)
    m = attribution_matrix(attr, bins, 3, outputs, w)
    np.testing.assert_allclose(m[:, 0], (attr[0, 0] + 3 * attr[2, 0]) / 4)
    np.testing.assert_allclose(m[:, 1], (attr[1, 1] + attr[3, 1]) / 2)
    assert np.all(np.isnan(m[:, 2]))  # no events in bin 2


# ----------------------------------------------------------------------------- nuisances
def test_loss_templates_and_model_variations_against_hand_computed_histograms():
    x, y, w, ex = _events(1500, seed=5)
    an, net = _analysis(), _net(seed=5)
    st = soft_templates(an, net, x, y, w, ex)
    c = 1.0 / (1.0 + 6 * an.eps)
    with torch.no_grad():
        def soft(p, xx, ww):
            m = y == p.label
            return p.expected * c * (ww[m, None] * net(xx[m])).sum(0) / w[m].sum()
        for j, p in enumerate(an.processes):
            np.testing.assert_allclose(st.nominal[j], soft(p, x, w) + p.expected * c * an.eps, rtol=1e-12)
        # the transform: a central finite difference of the soft histogram in the shift, times its
        # step (the constraint's width, 0.2) to HistFactory's units
        top = an.processes[1]
        h = 1e-5
        fd = (soft(top, shift_feature(1)(x, h), w) - soft(top, shift_feature(1)(x, -h), w)) / (2 * h) * 0.2
        np.testing.assert_allclose(st.derivatives[("top", "scale")], fd, rtol=1e-6, atol=1e-9)
        # the weight variation: half the difference of the up and down weighted histograms
        sig = an.processes[0]
        hw = 0.5 * (soft(sig, x, ex["id_up"]) - soft(sig, x, ex["id_dn"]))
        np.testing.assert_allclose(st.derivatives[("signal", "lepton_id")], hw, rtol=1e-10)
    lm = loss_nuisance_map(st)
    row = lm[(lm.nuisance == "scale") & (lm.process == "top")].sort_values("bin")
    np.testing.assert_allclose(row.rel_slope, st.derivatives[("top", "scale")] / st.nominal[1], rtol=1e-12)
    # the concrete model's histosys: the hard bins of the events moved by +-0.2 (one unit of alpha)
    model = analysis_model(an, net, x, y, w, weights=ex)
    mm = model_nuisance_map(model)
    m = (y == 2)
    hist = lambda xx: 200.0 * torch.bincount(hard_bins(net, xx[m]), minlength=6).to(F64) / m.sum()  # noqa: E731
    nom, up = hist(x), hist(shift_feature(1)(x, 0.2))
    row = mm[(mm.nuisance == "scale") & (mm.process == "wjets")].sort_values("bin")
    ok = nom.numpy() > 0
    np.testing.assert_allclose(row.rel_up.to_numpy()[ok], (up / nom - 1).numpy()[ok], rtol=1e-12)
    flat = mm[(mm.nuisance == "w_xsec")]
    assert np.allclose(flat.rel_up.dropna(), 0.3) and np.allclose(flat.rel_down.dropna(), -0.3)


@pytest.fixture(scope="module")
def ranked():
    x, y, w, ex = _events(3000, seed=6)
    an, net = _analysis(mc_stat=True, n=3000), _net(seed=6, bins=5)
    model = analysis_model(an, net, x, y, w, weights=ex)
    return model, nuisance_ranking(model)


def test_fisher_ranking_equals_refits_with_each_nuisance_fixed(ranked):
    model, rank = ranked
    main, aux = model.asimov()
    var = float(fit(model, main, aux).poi_unc) ** 2
    assert rank.attrs["var"] == pytest.approx(var, rel=1e-8)
    assert set(rank.nuisance) == {"lepton_id", "top_xsec", "scale", "w_xsec", "mc_stat_learned"}
    refit = {}
    for _, r in rank.iterrows():
        fixed = {p: float(model.init[model.index(p)]) for p in r.parameters}
        refit[r.nuisance] = var - float(fit(model, main, aux, fixed=fixed).poi_unc) ** 2
    # on Asimov data every fit starts at its minimum (the inits, zero gradient) and stops there,
    # so its Hessian is the Fisher information the ranking reads; what differs is the algebra
    # (the inverse of each reduced Hessian vs the Schur complement of the full inverse), which
    # agrees to rounding: measured 1e-15 relative; 1e-9 leaves room for other BLAS builds
    np.testing.assert_allclose(rank.impact_var, [refit[k] for k in rank.nuisance], rtol=1e-9)
    assert list(rank.nuisance) == sorted(refit, key=refit.get, reverse=True)
    assert rank.impact_var.iloc[0] > 0 and np.all(np.diff(rank.impact_var) <= 0)


def test_fisher_ranking_equals_pyhf_fits_of_the_exported_workspace(ranked):
    pyhf = pytest.importorskip("pyhf")
    from inferno.likelihood.workspace import pyhf_modifier_settings

    model, rank = ranked
    main, _ = model.asimov()
    ws = pyhf.Workspace(model.to_pyhf(main))
    dtype = torch.get_default_dtype()  # pyhf's 64-bit pytorch backend changes torch's default dtype
    pyhf.set_backend("pytorch", pyhf.optimize.scipy_optimizer(tolerance=1e-12, maxiter=100_000), precision="64b")
    try:
        pm = ws.model(modifier_settings=pyhf_modifier_settings(model))
        data = torch.as_tensor(ws.data(pm), dtype=F64)
        order = pm.config.par_order
        names = [f"{n}[{i}]" if pm.config.param_set(n).n_parameters > 1 else n
                 for n in order for i in range(pm.config.param_set(n).n_parameters)]
        mu = pm.config.poi_index

        def var_mu(fixed_sets):
            mask = [pm.config.param_set(n).suggested_fixed[0] if n not in fixed_sets else True
                    for n in order for _ in range(pm.config.param_set(n).n_parameters)]
            best = pyhf.infer.mle.fit(data, pm, fixed_params=mask).detach()
            free = [i for i, m in enumerate(mask) if not m]

            def nll(q):
                p = best.clone()
                p[free] = q
                return -pm.logpdf(p, data)[0]

            H = torch.autograd.functional.hessian(nll, best[free])
            return float(torch.linalg.inv(H)[free.index(mu), free.index(mu)])

        var = var_mu(set())
        assert var == pytest.approx(rank.attrs["var"], rel=1e-10)
        impacts = {r.nuisance: var - var_mu({r.nuisance}) for _, r in rank.iterrows()}
    finally:
        pyhf.set_backend("numpy", "scipy")
        torch.set_default_dtype(dtype)
    assert sorted(names) == sorted(model.names)
    # pyhf's likelihood, its own fits (scipy, tolerance 1e-12) and an autograd Hessian of its
    # NLL: measured agreement 7e-12 relative (the smallest impact, most sensitive to where
    # pyhf's minimiser stops); 1e-8 is well above that and far below the impacts' spread
    np.testing.assert_allclose(rank.impact_var, [impacts[k] for k in rank.nuisance], rtol=1e-8)
    assert list(rank.nuisance) == sorted(impacts, key=impacts.get, reverse=True)


def test_ranking_from_a_fisher_matrix_and_its_errors():
    # mu and two nuisances: fixing nu_k lowers var(mu) by C_mk^2 / C_kk
    I = torch.tensor([[4.0, 1.0, 0.5], [1.0, 2.0, 0.0], [0.5, 0.0, 1.0]], dtype=F64)
    C = torch.linalg.inv(I)
    r = nuisance_ranking(I, ["mu", "a", "b[0]"], poi="mu").set_index("nuisance")
    assert r.loc["a", "impact_var"] == pytest.approx(float(C[0, 1] ** 2 / C[1, 1]), rel=1e-12)
    assert r.loc["b", "var_fixed"] == pytest.approx(float(torch.linalg.inv(I[:2, :2])[0, 0]), rel=1e-12)
    with pytest.raises(ValueError, match="poi"):
        nuisance_ranking(I, ["mu", "a", "b"])
    with pytest.raises(ValueError, match="names"):
        nuisance_ranking(I, ["mu", "a"], poi="mu")
    with pytest.raises(ValueError, match="groups"):
        nuisance_ranking(I, ["mu", "a", "b"], poi="mu", groups={"g": ["mu"]})


# ----------------------------------------------------------------------------- purity and figures
def test_purity_order_on_a_hand_made_example_and_in_the_figures():
    signal, total = [1.0, 5.0, 0.0, 2.0, 3.0], [10.0, 10.0, 0.0, 4.0, 4.0]
    # purities 0.1, 0.5, 0 (empty), 0.5, 0.75: ascending, ties in bin order
    assert purity_order(signal, total).tolist() == [2, 0, 1, 3, 4]
    with pytest.raises(ValueError, match="signal and total"):
        purity_order([1.0], [1.0, 2.0])
    import inferno.plotting as ip

    matrix = np.tile(np.arange(5.0), (2, 1))  # column j holds j: the image shows the bin order
    fig = ip.plot_attribution_map(matrix, ["f0", "f1"], signal, total)
    ax = fig.axes[0]
    assert np.asarray(ax.images[0].get_array())[0].tolist() == [2, 0, 1, 3, 4]
    assert "ordered by signal purity" in ax.get_xlabel() and PURITY_LABEL in ax.get_xlabel()
    fig = ip.plot_nuisance_map(matrix, ["n: p", "m: p"], signal, total)
    assert np.asarray(fig.axes[0].images[0].get_array())[1].tolist() == [2, 0, 1, 3, 4]
    ip._plt().close("all")


def test_explain_report_writes_figures_and_tables(tmp_path):
    x, y, w, ex = _events(1800, seed=7)
    an = _analysis()
    score = nn.Linear(3, 1).double()
    rep = explain_report({"inferno": _net(seed=7), "score": (score, [-0.5, 0.0, 0.5])}, an,
                         dict(x=x, process=y, w=w, weights=ex), tmp_path, feature_names=["a", "b", "c"],
                         groups={"ab": ["a", "b"], "c": ["c"]}, n_repeats=1, attribution_events=150, ig_steps=16,
                         log=lambda *a, **k: None)
    for f in rep["files"]:
        assert (tmp_path / f).stat().st_size > 0
    assert {"importance.png", "ranking.png", "attributions_inferno.png", "nuisances_loss_inferno.png",
            "nuisances_model_score.png", "explain.md"} <= set(rep["files"])
    assert "nuisances_loss_score.png" not in rep["files"]  # hard bins: no loss view
    md = (tmp_path / "explain.md").read_text()
    assert "| ab |" in md and "| w_xsec |" in md and "| inferno | score |" in md.replace("feature | ", "")
    assert rep["attributions"]["inferno"]["completeness_error"] < 1e-6
    sig, tot = learned_purity(analysis_model(an, _net(seed=7), x, y, w, weights=ex), an)
    np.testing.assert_allclose(sig, rep["purity"]["inferno"][0])
    assert group_by_object(["jet1_pt", "tau_pt", "jet2_eta", "met", "met_phi"]) == {
        "jet": ["jet1_pt", "jet2_eta"], "tau": ["tau_pt"], "met": ["met", "met_phi"]}


def test_bad_arguments_are_named():
    x, y, w, ex = _events(300)
    an, net = _analysis(), _net()
    with pytest.raises(ValueError, match="n_repeats"):
        permutation_importance(an, net, x, y, w, ex, n_repeats=0)
    with pytest.raises(ValueError, match="within"):
        permutation_importance(an, net, x, y, w, ex, within="bins")
    with pytest.raises(ValueError, match="method"):
        permutation_importance(an, net, x, y, w, ex, method="toys")
    with pytest.raises(ValueError, match="groups"):
        permutation_importance(an, net, x, y, w, ex, groups={"g": ["nope"]})
    with pytest.raises(ValueError, match="binning"):
        BinnedSummary(net, [1.0, 0.0])
    with pytest.raises(ValueError, match="rule"):
        integrated_gradients(net, x, rule="simpson")
    with pytest.raises(ValueError, match="baseline"):
        integrated_gradients(net, x, baseline="median")
    with pytest.raises(ValueError, match="x must"):
        gradient_x_input(net, x.numpy())
    assert math.isfinite(expected_widths(analysis_model(an, net, x, y, w, weights=ex))["sigma"])


def test_template_figures_order_the_bins_by_signal_purity():
    """The learned bins are categories: plot_templates (the paper's fig. 3) shows them in the
    order of their signal purity, and says so on the axis."""
    import matplotlib
    matplotlib.use("Agg")
    from inferno.plotting import PURITY_LABEL, plot_templates, purity_order

    f_s = np.array([0.5, 0.1, 0.3, 0.1])
    f_b = np.array([0.1, 0.4, 0.1, 0.4])
    fig = plot_templates(f_s, f_b, {"r": (f_b * 1.1, f_b * 0.9)}, s=50.0, b=1000.0)
    ax = fig.axes[0]
    assert ax.get_xlabel() == PURITY_LABEL
    order = purity_order(50 * f_s, 50 * f_s + 1000 * f_b)
    drawn = ax.patches[0].get_data().values  # the signal, first drawn
    np.testing.assert_allclose(drawn, 50 * f_s[order])
    pur = (50 * f_s / (50 * f_s + 1000 * f_b))[order]
    assert np.all(np.diff(pur) >= 0)
    fig2 = plot_templates(f_s, f_b, {}, by_purity=False)
    np.testing.assert_allclose(fig2.axes[0].patches[0].get_data().values, f_s)
