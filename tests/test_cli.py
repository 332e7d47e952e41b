"""The paper-reproduction command: end to end at tiny sizes, baselines against independent
computations, argument errors."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.optimize import brentq, minimize

from inferno import ModelWrapper
from inferno.paper import cli, study
from inferno.paper.cli import ReproConfig, parse_args, run
from inferno.paper import analytical_widths, optimal_classifier, paper_syst_transform, sample_background


# ----------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("paper")
    cfg = ReproConfig(seeds=[0, 1], models=("bce", "inferno2"), epochs=6, n_train=6000, n_val=2000,
                      n_test=60_000, jobs=1, fig5_points=2, scan_points=81, out=str(out))
    return run(cfg, log=lambda *a, **k: None), cfg


def test_end_to_end_outputs(tiny_run):
    res, cfg = tiny_run
    out = res["out"]
    for name in ("results.md", "results.csv", "runs.csv", "meta.json", "fig3_templates_bce.png",
                 "fig3_templates_inferno2.png", "fig4a_training.png", "fig4b_profiles.png",
                 "fig5_width_vs_nuisance.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    tab = pd.read_csv(out / "results.csv")
    assert set(tab["model"]) == {"bce", "inferno2", "optimal", "analytical"}
    assert len(tab) == 4 * 5 and set(tab["benchmark"]) == set(range(5))
    assert np.all(np.isfinite(tab["median"])) and np.all(tab["median"] > 0)
    assert np.all(tab["p16"] <= tab["median"] + 1e-9) and np.all(tab["median"] <= tab["p84"] + 1e-9)
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 2 * 2 * 5 and set(runs["seed"]) == {0, 1}
    meta = json.loads((out / "meta.json").read_text())
    assert meta["seeds"] == [0, 1] and meta["wall_s"] > 0
    assert len(meta["histories"]["inferno2/0"]["valid"]) == cfg.epochs
    md = (out / "results.md").read_text()
    assert "| INFERNO 2 |" in md and "(16.95)" in md  # the paper's INFERNO 2 median beside ours
    # the paper's numbers sit beside ours in the csv
    paper = tab.set_index(["model", "benchmark"])["paper"]
    assert paper[("bce", 2)] == pytest.approx(23.94) and paper[("inferno2", 4)] == pytest.approx(18.67)


def test_end_to_end_sanity(tiny_run):
    res, _ = tiny_run
    tab = res["table"].set_index(["model", "benchmark"])["median"]
    # INFERNO trained with benchmark-2 nuisances beats the classifier on benchmark 2
    assert tab[("inferno2", 2)] < tab[("bce", 2)]
    runs = res["runs"].pivot_table(index=["model", "seed"], columns="benchmark", values="width")
    exact = analytical_widths()
    for (_, _), w in runs.iterrows():
        # profiling more free nuisances can only widen the interval; constraints narrow it
        assert w[0] <= w[1] + 1e-6 <= w[2] + 2e-6
        assert w[3] <= w[2] + 1e-6 and w[3] <= w[4] + 1e-6
        # no binned summary beats the unbinned likelihood (up to the test set's MC error)
        for k in range(5):
            assert w[k] > 0.97 * exact[k]


# ----------------------------------------------------------------------------- baselines
def test_optimal_net_matches_numpy_classifier():
    x = sample_background(2000, seed=1).astype(np.float32)
    ours = study._optimal_net()(torch.as_tensor(x)).detach().numpy()[:, 0]
    np.testing.assert_allclose(ours, optimal_classifier(x.astype(np.float64)), rtol=1e-5, atol=1e-6)


def test_templates_of_optimal_classifier_match_direct_histograms():
    x_sig, x_bkg = study._test_set(20_000)
    t = study.model_templates(ModelWrapper(study._optimal_net()), "prob", 10, x_sig, x_bkg)
    edges = np.linspace(0, 1, 11)

    def hist(x):
        h = np.histogram(optimal_classifier(x.astype(np.float64)), edges)[0].astype(float)
        return h / h.sum()

    np.testing.assert_allclose(t["f_s_nom"], hist(x_sig), atol=2e-6)
    np.testing.assert_allclose(t["f_b_nom"], hist(x_bkg), atol=2e-6)
    np.testing.assert_allclose(t["f_b_up"][0], hist(paper_syst_transform(x_bkg, 0.2, 3.0)), atol=2e-6)
    np.testing.assert_allclose(t["f_b_dw"][0], hist(paper_syst_transform(x_bkg, -0.2, 3.0)), atol=2e-6)
    np.testing.assert_allclose(t["f_b_up"][1], hist(paper_syst_transform(x_bkg, 0.0, 3.5)), atol=2e-6)
    np.testing.assert_allclose(t["f_b_dw"][1], hist(paper_syst_transform(x_bkg, 0.0, 2.5)), atol=2e-6)


def _templates(seed=0, n=10):
    g = np.random.default_rng(seed)
    f_s = np.sort(g.uniform(0.2, 1.0, n))
    f_b = np.sort(g.uniform(0.2, 1.0, n))[::-1]
    up = np.stack([f_b * (1 + 0.15 * np.linspace(-1, 1, n)), f_b * (1 + 0.1 * np.sin(np.arange(n)))])
    dw = np.stack([f_b * (1 - 0.12 * np.linspace(-1, 1, n)), f_b * (1 - 0.08 * np.sin(np.arange(n)))])
    norm = lambda a: a / a.sum(-1, keepdims=True)  # noqa: E731
    return {"f_s_nom": norm(f_s), "f_b_nom": norm(f_b), "f_b_up": norm(up), "f_b_dw": norm(dw)}


def test_benchmark0_width_closed_form():
    """Only s floats: the interval is where the Poisson NLL in s rises by 0.5 (root finding)."""
    t = _templates()
    n = 50 * t["f_s_nom"] + 1000 * t["f_b_nom"]

    def nll(s):
        nu = s * t["f_s_nom"] + 1000 * t["f_b_nom"]
        return float(np.sum(nu - n * np.log(nu)))

    f = lambda s: nll(s) - nll(50.0) - 0.5  # noqa: E731
    lo, hi = brentq(f, 0.0, 50.0, xtol=1e-12), brentq(f, 50.0, 150.0, xtol=1e-12)
    assert study.profile_width(t, 0) == pytest.approx((hi - lo) / 2, rel=1e-5)


def _code2(a, nom, up, dw):
    """Quadratic interpolation for |a| <= 1, continued linearly with matching slope outside."""
    d_plus, d_minus = (up - dw) / 2, (up + dw) / 2 - nom
    if abs(a) <= 1:
        return nom + a * d_plus + a * a * d_minus
    s = np.sign(a)
    edge = nom + s * d_plus + d_minus
    slope = d_plus + 2 * s * d_minus
    return edge + (a - s) * slope


def test_benchmark4_constraints_in_physical_units():
    """Benchmark 4 with an independent NLL written in physical units (r, lambda, b) and
    minimised by scipy: at s = s_hat +/- width the profiled NLL has risen by 0.5."""
    t = _templates(3)
    n = 50 * t["f_s_nom"] + 1000 * t["f_b_nom"]
    width = study.profile_width(t, 4)

    def nll(theta, s):
        r, lam, b = theta
        a_r, a_l = r / 0.2, (lam - 3.0) / 0.5  # templates at r = +/-0.2, lambda = 3 +/- 0.5
        f_b = t["f_b_nom"] + (_code2(a_r, t["f_b_nom"], t["f_b_up"][0], t["f_b_dw"][0]) - t["f_b_nom"]) \
            + (_code2(a_l, t["f_b_nom"], t["f_b_up"][1], t["f_b_dw"][1]) - t["f_b_nom"])
        nu = s * t["f_s_nom"] + b * f_b
        if np.any(nu <= 0):
            return 1e30
        cons = 0.5 * (r / 0.4) ** 2 + 0.5 * (lam - 3.0) ** 2 + 0.5 * ((b - 1000.0) / 100.0) ** 2
        return float(np.sum(nu - n * np.log(nu)) + cons)

    def profiled(s):
        # minimise in well-scaled coordinates: r = 0.4 z0, lambda = 3 + z1, b = 1000 + 100 z2
        f = lambda z: nll((0.4 * z[0], 3.0 + z[1], 1000.0 + 100.0 * z[2]), s)  # noqa: E731
        return minimize(f, x0=np.zeros(3), method="BFGS", options=dict(gtol=1e-9)).fun

    base = profiled(50.0)
    g = lambda s: profiled(s) - base - 0.5  # noqa: E731
    lo, hi = brentq(g, 50.0 - 2 * width, 50.0, xtol=1e-8), brentq(g, 50.0, 50.0 + 2 * width, xtol=1e-8)
    assert width == pytest.approx((hi - lo) / 2, rel=1e-4)


# ----------------------------------------------------------------------------- arguments
@pytest.mark.parametrize("argv, message", [
    (["--epochs", "0"], "--epochs must be >= 1"),
    (["--models", "bce,foo"], "unknown model"),
    (["--n-train", "1001"], "--n-train must be even"),
    (["--n-train", "1000", "--bs", "2000"], "larger than --n-train"),
    (["--bins", "1"], "--bins must be >= 2"),
    (["--lr-inferno", "-1"], "--lr-inferno must be > 0"),
    (["--seeds", "0"], "--seeds must be >= 1"),
    (["--fig5-points", "1"], "--fig5-points"),
    (["--optimizer", "rmsprop"], "invalid choice"),
])
def test_bad_arguments_exit_before_training(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "run", lambda *a, **k: pytest.fail("training started"))
    with pytest.raises(SystemExit) as e:
        cli.main(argv + ["--out", str(tmp_path / "o")])
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_unwritable_output_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "run", lambda *a, **k: pytest.fail("training started"))
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(SystemExit):
        cli.main(["--quick", "--out", str(blocker / "results")])
    assert "not writable" in capsys.readouterr().err


def test_quick_defaults_and_overrides(tmp_path):
    q = parse_args(["--quick", "--out", str(tmp_path)])
    full = parse_args(["--out", str(tmp_path)])
    assert (q.n_train, len(q.seeds), q.epochs) == (20_000, 3, 20)
    assert (full.n_train, len(full.seeds), full.n_test) == (200_000, 10, 1_000_000)
    o = parse_args(["--quick", "--epochs", "7", "--seeds", "2", "--first-seed", "5", "--out", str(tmp_path)])
    assert o.epochs == 7 and o.seeds == [5, 6] and o.n_train == 20_000
    assert parse_args(["--models", "inferno4, bce", "--out", str(tmp_path)]).models == ("inferno4", "bce")


def test_benchmark_model_mapping():
    t = _templates()
    kw0, kw2, kw4 = (study.benchmark_model(t, k) for k in (0, 2, 4))
    assert "f_b_up" not in kw0 and "b_norm_aux" not in kw0
    assert kw2["f_b_up"].shape == (2, 10) and kw2["shape_aux"] == [None, None]
    assert [d.stddev.item() for d in kw4["shape_aux"]] == [2.0, 2.0]  # 0.4 / 0.2 and 1 / 0.5
    assert kw4["b_norm_aux"][0].stddev.item() == 100.0
    kw1 = study.benchmark_model(t, 1)
    np.testing.assert_array_equal(kw1["f_b_up"], t["f_b_up"][[0]])  # r only


def test_remainder_batches_and_default_validation_size(tmp_path):
    """Sizes that are not multiples of the batch size: the default --n-val stays even and the
    last, incomplete batches are dropped (a small remainder could lack signal or background)."""
    assert parse_args(["--n-train", "2002", "--out", str(tmp_path)]).n_val == 1000
    cfg = ReproConfig(seeds=[0], models=("inferno2",), epochs=2, n_train=2004, n_val=1000, bs=1001,
                      n_test=20_000, jobs=1, fig5_points=0, figures=False, scan_points=61,
                      out=str(tmp_path / "o"))
    res = run(cfg, log=lambda *a, **k: None)
    assert len(res["runs"]) == 5 and (res["runs"]["width"] > 0).all()
    assert not (tmp_path / "o" / "runs.csv.partial").exists()


def test_paper_data_drop_last_gives_full_batches():
    from inferno.paper import get_paper_data
    data = get_paper_data(2004, bs=1001, n_val=600, seed=1, drop_last=True)
    trn = list(data.trn_dl)
    assert [len(b[0]) for b in trn] == [1001, 1001]
    assert [len(b[0]) for b in data.val_dl] == [600]  # smaller than bs: one batch
