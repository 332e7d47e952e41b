"""Measurements on :class:`inferno.likelihood.Model`: best fits and profile curves against
pyhf 0.7.6 (numpy backend, scipy optimiser at tight tolerance) and scipy, fixed parameters
and bounds honoured, 2-D scans, toys and the coverage of the 68% interval."""
import math

import numpy as np
import pytest
import torch
from scipy import optimize

from inferno.likelihood import (Channel, HistoSys, Model, NormFactor, NormSys, Sample, StatError, coverage, fit,
                                from_pyhf, profile, profile2d, toys)
from workspaces import full_workspace, pyhf_model, small_workspace, to_pyhf_main, to_pyhf_pars

F64 = torch.float64


@pytest.fixture(scope="module")
def pyhf():
    pyhf = pytest.importorskip("pyhf")
    pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer(tolerance=1e-12, maxiter=100_000))
    yield pyhf
    pyhf.set_backend("numpy", "scipy")


def _pyhf_data(model, pm, obs):
    return np.concatenate([to_pyhf_main(model, pm, obs), np.asarray(pm.config.auxdata)])


def _by_name(model, pm, pars):
    """pyhf's parameter vector -> inferno's order."""
    out = np.empty(model.n_params)
    for name, sl in model.param_sets.items():
        out[sl] = np.asarray(pars)[pm.config.par_slice(name)]
    return out


@pytest.mark.parametrize("which", ["full", "small"])
def test_fit_matches_pyhf(pyhf, which):
    spec = full_workspace() if which == "full" else small_workspace()
    model, obs = from_pyhf(spec)
    _, pm = pyhf_model(spec, model)
    res = fit(model, obs)
    assert res.converged
    best, twice_nll = pyhf.infer.mle.fit(_pyhf_data(model, pm, obs), pm, return_fitted_val=True)
    ref = _by_name(model, pm, best)
    # the same minimum: inferno's NLL is never above pyhf's, and the parameters agree to the
    # precision of pyhf's optimiser (its uncertainties set the scale)
    assert float(res.nll) <= float(twice_nll) / 2 + 1e-7
    assert abs(float(res.nll) - float(twice_nll) / 2) < 1e-5
    unc = res.uncertainties.numpy()
    free = ~model.fixed.numpy()
    assert np.all(np.abs(res.params.numpy() - ref)[free] <= 1e-3 * unc[free])
    assert float(res.poi) == pytest.approx(ref[model.poi_index[0]], abs=1e-3 * float(res.poi_unc))
    # Hessian uncertainties: the inverse of pyhf's autodiff-free numerical Hessian is not
    # available on numpy, so compare with a central finite-difference Hessian of pyhf's NLL
    data = _pyhf_data(model, pm, obs)
    f = lambda p: -float(pm.logpdf(to_pyhf_pars(model, pm, torch.as_tensor(p)), data)[0])  # noqa: E731
    idx = np.nonzero(free)[0]
    h = 1e-4 * unc[idx]
    H = np.empty((len(idx), len(idx)))
    p0 = res.params.numpy()
    for a, i in enumerate(idx):
        for b, j in enumerate(idx):
            def at(di, dj):
                q = p0.copy()
                q[i] += di
                q[j] += dj
                return f(q)
            H[a, b] = (at(h[a], h[b]) - at(h[a], -h[b]) - at(-h[a], h[b]) + at(-h[a], -h[b])) / (4 * h[a] * h[b])
    cov = np.linalg.inv(H)
    np.testing.assert_allclose(unc[idx], np.sqrt(np.diag(cov)), rtol=1e-4)


def test_profile_matches_pyhf_and_round_trip(pyhf):
    """from_pyhf -> profile gives pyhf's profile curve; model -> to_pyhf -> pyhf too."""
    spec = full_workspace()
    model, obs = from_pyhf(spec)
    mus = torch.linspace(0.0, 3.0, 7, dtype=F64)
    prof = profile(model, obs, mus)
    assert prof.converged.all()
    for spec_used in (spec, model.to_pyhf(obs)):
        _, pm = pyhf_model(spec_used, model)
        data = _pyhf_data(model, pm, obs)
        ref = np.array([float(pyhf.infer.mle.fixed_poi_fit(float(m), data, pm, return_fitted_val=True)[1]) / 2
                        for m in mus])
        assert np.all(prof.nll.numpy() <= ref + 1e-7)
        np.testing.assert_allclose(prof.nll.numpy(), ref, atol=1e-5, rtol=0)
        np.testing.assert_allclose(prof.delta_nll.numpy(), ref - ref.min(), atol=1e-5, rtol=0)


def _two_channel(obs_scale=1.0):
    """A signal region and a control region with staterror in both, a free background
    normalisation fixed by the control region, a shape and a rate uncertainty."""
    sr_s, sr_b, cr_b = np.array([3.0, 8.0, 12.0]), np.array([60.0, 40.0, 20.0]), np.array([200.0, 150.0])
    model = Model([
        Channel("SR", [Sample("signal", sr_s, [NormFactor("mu")]),
                       Sample("bkg", sr_b, [NormFactor("k_b"), NormSys("b_xsec", hi=1.05, lo=0.95),
                                            HistoSys("shape", hi=sr_b * [1.05, 1.0, 0.93], lo=sr_b * [0.96, 1.0, 1.06]),
                                            StatError("stat_SR", sigma=0.05 * sr_b)])]),
        Channel("CR", [Sample("bkg", cr_b, [NormFactor("k_b"), StatError("stat_CR", sigma=0.03 * cr_b)])]),
    ], poi="mu", parameters={"mu": {"bounds": (-5.0, 10.0)}})
    return model


def test_fixed_parameters_and_bounds():
    model = _two_channel()
    main, aux = model.asimov(mu=1.0)
    # a fixed parameter stays where it is put; the others are refitted
    res = fit(model, main, aux, fixed={"k_b": 1.1})
    k = model.index("k_b")
    assert res.converged and float(res.params[k]) == 1.1 and float(res.uncertainties[k]) == 0.0
    assert float(res.cov[k].abs().sum()) == 0.0
    ref = optimize.minimize(lambda q: float(model.nll(torch.as_tensor(np.insert(q, k, 1.1)), main, aux)),
                            np.delete(model.init.numpy(), k), method="Nelder-Mead",
                            options=dict(xatol=1e-10, fatol=1e-12, maxiter=40000, maxfev=40000))
    assert float(res.nll) <= ref.fun + 1e-9
    # a bound: data with fewer events than the background pull mu below 0; with mu >= 0 the
    # fit stops exactly on the bound, which is the constrained minimum (scipy L-BFGS-B)
    low = main.clone()
    low[:3] = main[:3] - torch.tensor([3.0, 8.0, 12.0], dtype=F64) * 1.5
    bounded = model.with_parameters(mu={"bounds": (0.0, 10.0)})
    res = fit(bounded, low, aux)
    assert res.converged and float(res.poi) == 0.0
    free = fit(model, low, aux)
    assert float(free.poi) < 0
    # the constrained minimum: the minimum over the others at mu = 0 (scipy), where the NLL
    # rises with mu (KKT: the bound is active)
    m = bounded.index("mu")
    ref = optimize.minimize(lambda q: float(bounded.nll(torch.as_tensor(np.insert(q, m, 0.0)), low, aux)),
                            np.delete(bounded.init.numpy(), m), method="Nelder-Mead",
                            options=dict(xatol=1e-10, fatol=1e-12, maxiter=40000, maxfev=40000))
    assert float(res.nll) <= ref.fun + 1e-9
    np.testing.assert_allclose(np.delete(res.params.numpy(), m), ref.x, atol=1e-3)
    p = res.params.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(bounded.nll(p, low, aux), p)
    assert float(g[m]) > 0
    # a profile scan outside the other parameters' reach still honours their bounds
    prof = profile(bounded, low, [0.0, 0.5], aux=aux)
    lo = bounded.bounds[:, 0]
    assert (prof.params >= lo).all()


def test_profile2d_equals_profile_with_both_fixed():
    model = _two_channel()
    main, aux = model.asimov(mu=1.0)
    xs, ys = torch.tensor([0.5, 1.0, 1.5], dtype=F64), torch.tensor([0.9, 1.0, 1.1, 1.2], dtype=F64)
    grid = profile2d(model, main, xs, ys, pois=("mu", "k_b"), aux=aux)
    assert grid.nll.shape == (3, 4) and grid.converged.all()
    for i, x in enumerate(xs):
        row = profile(model, main, ys, aux=aux, poi="k_b", fixed={"mu": float(x)})
        torch.testing.assert_close(grid.nll[i], row.nll, rtol=0, atol=1e-9)
    # Asimov: the minimum of the grid is at the truth (mu, k_b) = (1, 1), where -ln L = the fit's
    assert float(grid.delta_nll[1, 1]) == 0.0
    assert float(grid.nll[1, 1]) == pytest.approx(float(fit(model, main, aux).nll), abs=1e-8)


def test_profile_batched_over_data_sets_equals_one_by_one():
    model = _two_channel()
    main, aux = toys(model, model.params(mu=1.0), n_toys=4, seed=3)
    mus = torch.linspace(-1.0, 4.0, 6, dtype=F64)
    batched = profile(model, main, mus, aux=aux)
    assert batched.nll.shape == (4, 6)
    for t in range(4):
        one = profile(model, main[t], mus, aux=aux[t])
        torch.testing.assert_close(batched.nll[t], one.nll, rtol=0, atol=1e-9)


def test_toys_are_seeded_and_distributed_as_the_model():
    model = _two_channel()
    p = model.params(mu=1.0)
    a1, b1 = toys(model, p, 20_000, seed=7)
    a2, b2 = toys(model, p, 20_000, seed=7)
    assert torch.equal(a1, a2) and torch.equal(b1, b2)
    nu = model.expected(p)
    # Poisson: mean = variance = nu (5 sigma of the estimator)
    se = torch.sqrt(nu / 20_000)
    assert ((a1.mean(0) - nu).abs() < 5 * se).all()
    assert ((a1.var(0) / nu - 1).abs() < 5 * math.sqrt(2 / 20_000) + 0.01).all()
    # auxiliary data: normal around the parameter with its sigma
    for col, name in enumerate(model.aux_names):
        par = model.parameters[model.index(name)]
        assert abs(float(b1[:, col].mean()) - float(p[model.index(name)])) < 5 * par.sigma / math.sqrt(20_000)
        assert float(b1[:, col].std()) == pytest.approx(par.sigma, rel=0.03)


def test_coverage_of_the_68_interval_two_channels_with_staterror():
    """Toys at the truth, main and auxiliary data fluctuated: the profile-likelihood interval
    at Delta NLL = 0.5 covers the true POI in 68.3% of them (within 3 binomial errors)."""
    model = _two_channel()
    res = coverage(model, model.params(mu=1.0), n_toys=1000, seed=11)
    assert res.n_failed == 0
    assert abs(res.coverage - res.expected) < 3 * res.error
    assert res.expected == pytest.approx(0.6827, abs=1e-4)
    # the fits are unbiased on average (mu_hat ~ 1 within 4 standard errors)
    assert abs(res.mu_hat.mean() - 1.0) < 4 * res.mu_hat.std() / math.sqrt(len(res.mu_hat))


def test_several_pois_fit_and_names():
    model = _two_channel().with_parameters()
    two = Model(model.channels, poi=["mu", "k_b"], parameters={"mu": {"bounds": (-5.0, 10.0)}})
    main, aux = two.asimov(mu=1.3, k_b=0.9)
    res = fit(two, main, aux)
    assert res.poi.shape == (2,)
    torch.testing.assert_close(res.poi, torch.tensor([1.3, 0.9], dtype=F64), atol=1e-6, rtol=0)
    assert res["k_b"] == res.poi[1]
    with pytest.raises(KeyError, match="unknown parameter"):
        res["nope"]
    with pytest.raises(ValueError, match="unknown parameter"):
        profile(two, main, [1.0, 2.0], aux=aux, poi="nope")


def test_interval_on_a_scan_matches_closed_form():
    """One bin, n observed, nu = mu + b: the interval at Delta NLL = 0.5 solves
    nu - n ln nu = nu_hat - n ln nu_hat + 0.5 (brentq)."""
    b, n = 20.0, 35.0
    model = Model([Channel("c", [Sample("s", [1.0], [NormFactor("mu")]), Sample("b", [b])])], poi="mu",
                  parameters={"mu": {"bounds": (-10.0, 100.0)}})
    mus = torch.linspace(5.0, 25.0, 201, dtype=F64)
    prof = profile(model, torch.tensor([n], dtype=F64), mus)
    lo, hi, best = prof.interval(0.5)
    f = lambda m: (m + b) - n * math.log(m + b) - (n - n * math.log(n)) - 0.5  # noqa: E731
    assert best == pytest.approx(n - b, abs=1e-6)
    assert lo == pytest.approx(optimize.brentq(f, 0.0, n - b), abs=1e-5)
    assert hi == pytest.approx(optimize.brentq(f, n - b, 40.0), abs=1e-5)
    assert prof.width(0.5) == pytest.approx((hi - lo) / 2)


def test_review_fixes_lumi_init_batched_interval_and_repr():
    """lumi starts at its auxiliary datum; interval() on a batch of scans says what to do;
    a CoverageResult prints short."""
    from inferno.likelihood import Lumi

    m = Model([Channel("SR", [Sample("s", [5.0, 10.0], [NormFactor("mu"), Lumi()]), Sample("b", [50.0, 40.0])])],
              poi="mu", parameters={"lumi": {"sigma": 0.02, "aux": 1.05}})
    assert m.parameters[m.index("lumi")].init == 1.05
    assert Model(m.channels, poi="mu", parameters={"lumi": {"sigma": 0.02, "aux": 1.05, "init": 1.0}}
                 ).parameters[m.index("lumi")].init == 1.0
    main, aux = toys(m, n_toys=3, seed=1)
    scans = profile(m, main, np.linspace(-2, 5, 15), aux=aux)
    with pytest.raises(ValueError, match=r"reads one 1-D scan.*\(3, 15\).*get_interval"):
        scans.interval()
    with pytest.raises(ValueError, match="reads one 1-D scan"):
        profile2d(m, main[0], [0.5, 1.0, 1.5, 2.0], [0.98, 1.0, 1.02, 1.04], pois=("mu", "lumi"), aux=aux[0]).width()
    r = coverage(m, n_toys=20, seed=2)
    assert repr(r).startswith("CoverageResult(coverage=") and len(repr(r)) < 150


def test_large_batches_are_minimised_in_chunks_with_the_same_result(monkeypatch):
    """Problems are independent: splitting a batch changes nothing (fits and scans)."""
    import inferno.likelihood.solver as solver

    model = _two_channel()
    main, aux = toys(model, model.params(mu=1.0), n_toys=7, seed=5)
    mus = torch.linspace(0.0, 2.0, 5, dtype=F64)
    whole_prof = profile(model, main, mus, aux=aux)
    whole_fit = fit(model, main, aux)
    monkeypatch.setattr(solver, "CHUNK", 3)
    monkeypatch.setattr(solver.minimize, "__defaults__", solver.minimize.__defaults__[:-1] + (3,))
    parts_prof = profile(model, main, mus, aux=aux)
    parts_fit = fit(model, main, aux)
    # the same minima, to rounding (batched linear algebra may round differently by batch size)
    torch.testing.assert_close(parts_prof.nll, whole_prof.nll, rtol=0, atol=1e-12)
    torch.testing.assert_close(parts_fit.params, whole_fit.params, rtol=0, atol=1e-9)
    assert parts_fit.converged.all() and parts_prof.converged.all()
