"""Regression tests of issue 13: silent wrong results and misleading or late errors found by
using the package as a new user would (bad inputs, faults). Each test failed before its fix."""
from __future__ import annotations

import functools
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.distributions import LogNormal, Normal, Uniform

import inferno
from inferno import (AbsCallback, DataPair, DataSet, ModelWrapper, ProgressBar, RateNuisance,
                     SaveBest, ShapeNuisance, WeightedDataLoader, calc_nll, calc_profile,
                     check_coverage, fit_mle, to_pyhf_workspace)
from inferno.paper import cli

ROOT = Path(__file__).resolve().parents[1]
ADAM = functools.partial(torch.optim.Adam, lr=1e-2)

F_S = np.array([0.05, 0.1, 0.15, 0.3, 0.4])
F_B = np.array([0.4, 0.3, 0.15, 0.1, 0.05])
UP = np.stack([np.array([0.38, 0.3, 0.16, 0.1, 0.06]), np.array([0.42, 0.29, 0.14, 0.1, 0.05])])
DW = np.stack([np.array([0.42, 0.3, 0.14, 0.1, 0.04]), np.array([0.38, 0.31, 0.16, 0.1, 0.05])])
MU = np.linspace(20.0, 80.0, 13)


def _net(seed=0, n_in=3, n_out=1):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(n_in, 8), nn.ReLU(), nn.Linear(8, n_out))


def _params(model):
    return [p.detach().clone() for p in model.parameters()]


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


# ============================================================== 1: templates must be normalised
@pytest.mark.parametrize("call", ["calc_profile", "fit_mle", "check_coverage", "to_pyhf_workspace"])
def test_unnormalised_nominal_template_raises(call):
    bad = 2 * F_S
    calls = {
        "calc_profile": lambda: calc_profile(bad, F_B, 1050, MU, mu_true=50),
        "fit_mle": lambda: fit_mle(bad, F_B, 1050, mu_true=50),
        "check_coverage": lambda: check_coverage(bad, F_B, 50, 1000, n_toys=5),
        "to_pyhf_workspace": lambda: to_pyhf_workspace(bad, F_B, 1050, mu_true=50),
    }
    with pytest.raises(ValueError, match=r"f_s_nom .*sums to 2\b"):
        calls[call]()


def test_counts_as_templates_raise():
    """Counts (yields) passed as templates: named, with the sum, and the remedy."""
    with pytest.raises(ValueError, match=r"f_b_nom .*sums to 1000.*normalise"):
        calc_profile(F_S, 1000 * F_B, 1050, MU, mu_true=50)


def test_unnormalised_up_down_row_raises():
    up = UP.copy()
    up[1] *= 1.1
    with pytest.raises(ValueError, match=r"f_b_up\[1\] .*sums to 1.1"):
        calc_profile(F_S, F_B, 1050, MU, mu_true=50, f_b_up=up, f_b_dw=DW, shape_aux=[None, None])
    with pytest.raises(ValueError, match=r"f_s_dw\[0\]"):
        fit_mle(F_S, F_B, 1050, mu_true=50, f_s_up=F_S, f_s_dw=0.5 * F_S)


def test_normalised_templates_in_float32_accepted():
    """Rounding in a lower precision is not a normalisation error."""
    rng = np.random.default_rng(0)
    f = rng.uniform(0.1, 1.0, 200).astype(np.float32)
    f_s = f / f.sum()
    f_b = np.float32(1.0 / 200) * np.ones(200, dtype=np.float32)
    nll = calc_profile(torch.from_numpy(f_s), torch.from_numpy(f_b), 1050, MU, mu_true=50)
    assert torch.isfinite(nll).all()


def test_calc_nll_checks_normalisation_too():
    with pytest.raises(ValueError, match=r"f_s_nom .*sums to 3"):
        calc_nll(50.0, 1000.0, 50.0, 3 * F_S, F_B)


# ============================================================== 2: zero weights, non-finite loss
def test_dataset_rejects_weights_summing_to_zero():
    with pytest.raises(ValueError, match="sum to 0"):
        DataSet(np.ones((10, 3)), np.ones(10), np.zeros(10))


def _weighted_pair(w, bs=50):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(len(w), 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.float32)
    return DataPair(WeightedDataLoader(DataSet(x, y, w), bs))


def test_batch_with_zero_weight_sum_raises_before_update():
    w = np.ones(200)
    w[100:150] = 0.0  # the third batch of 50 (training batch 3 of 4)
    wr = ModelWrapper(_net())
    seen = []

    class Params(AbsCallback):
        def on_batch_end(self):
            seen.append(_params(self.wrapper.model))

    with pytest.raises(ValueError, match=r"weights of training batch 3 of 4 in epoch 1 sum to 0"):
        wr.fit(2, _weighted_pair(w), ADAM, nn.BCEWithLogitsLoss(), cbs=[Params()])
    assert len(seen) == 2 and _same(_params(wr.model), seen[-1])  # no update from batch 3
    assert all(torch.isfinite(p).all() for p in wr.model.parameters())


def test_non_finite_loss_raises_before_update():
    class BlowUp(AbsCallback):
        def on_forwards_end(self):
            wr = self.wrapper
            if wr.epoch == 2 and self.n == 1:
                wr.loss_val = wr.loss_val * float("inf")
            self.n += 1

        def on_epoch_begin(self):
            self.n = 0

    wr = ModelWrapper(_net())
    before = {}

    class Snap(AbsCallback):
        def on_batch_end(self):
            before["p"] = _params(self.wrapper.model)

    data = _weighted_pair(np.ones(200))
    with pytest.raises(FloatingPointError, match=r"loss of training batch 2 of 4 in epoch 2 is (inf|nan)"):
        wr.fit(3, data, ADAM, nn.BCEWithLogitsLoss(), cbs=[BlowUp(), Snap()])
    assert _same(_params(wr.model), before["p"])


def test_nan_loss_from_loss_function_raises():
    wr = ModelWrapper(_net())
    p0 = _params(wr.model)
    with pytest.raises(FloatingPointError, match="batch 1 of 4 in epoch 1 is nan"):
        wr.fit(1, _weighted_pair(np.ones(200)), ADAM, lambda yp, y: (yp * float("nan")).mean())
    assert _same(_params(wr.model), p0)


# ============================================================== 3: --jobs does not change results
def test_jobs_do_not_change_results(tmp_path):
    """The same seeds give the same training histories and widths with --jobs 1 and --jobs 2,
    whatever the thread count of the calling process (here 4 threads, as on a machine with
    more cores)."""
    old = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        res = {}
        for jobs in (1, 2):
            cfg = cli.ReproConfig(seeds=[0, 1], models=("inferno2",), epochs=3, n_train=4000, n_val=2000,
                                  bs=2000, n_test=20_000, jobs=jobs, fig5_points=0, figures=False,
                                  scan_points=41, out=str(tmp_path / f"j{jobs}"))
            res[jobs] = cli.run(cfg, log=lambda *a, **k: None)
        assert torch.get_num_threads() == 4  # restored
    finally:
        torch.set_num_threads(old)
    assert res[1]["meta"]["histories"] == res[2]["meta"]["histories"]
    w1, w2 = (res[j]["runs"].sort_values(["model", "seed", "benchmark"])["width"].to_numpy() for j in (1, 2))
    np.testing.assert_array_equal(w1, w2)


# ============================================================== 5: negative strides
def test_negative_stride_arrays_accepted():
    ref = calc_profile(F_S, F_B, 50 * F_S + 1000 * F_B, MU, b_true=1000)
    f_s_rev, n_rev = F_S[::-1].copy()[::-1], np.flip(np.flip(50 * F_S + 1000 * F_B).copy())
    mu_rev = MU[::-1].copy()[::-1]
    assert f_s_rev.strides[0] < 0 and n_rev.strides[0] < 0 and mu_rev.strides[0] < 0
    got = calc_profile(f_s_rev, F_B, n_rev, mu_rev, b_true=1000)
    torch.testing.assert_close(got, ref, rtol=0, atol=0)
    fit = fit_mle(f_s_rev, F_B, n_rev, b_true=1000)
    assert float(fit.mu) == pytest.approx(50.0, rel=1e-6)
    up_rev = UP[:, ::-1].copy()[:, ::-1]
    to_pyhf_workspace(F_S, F_B, n_rev, mu_true=50, b_true=1000, f_b_up=up_rev, f_b_dw=DW,
                      shape_aux=[Normal(0.0, 1.0)] * 2)


def test_non_numeric_message_keeps_the_cause():
    with pytest.raises(ValueError, match=r"f_s_nom must be numeric.*'a'"):
        calc_profile(["a", "b"], F_B[:2], 1050, MU, mu_true=50)


# ============================================================== 6: CLI validation before writing
def test_negative_first_seed_rejected(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "run", lambda *a, **k: pytest.fail("training started"))
    with pytest.raises(SystemExit) as e:
        cli.main(["--first-seed", "-5", "--out", str(tmp_path / "o")])
    assert e.value.code == 2
    assert "--first-seed must be >= 0" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--epochs", "0"], ["--first-seed", "-1"], ["--models", "bce,bce"],
                                  ["--jobs", "0"]])
def test_invalid_options_create_nothing(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "run", lambda *a, **k: pytest.fail("training started"))
    out = tmp_path / "not" / "yet"
    with pytest.raises(SystemExit) as e:
        cli.main(argv + ["--out", str(out)])
    assert e.value.code == 2 and not (tmp_path / "not").exists()


def test_valid_options_parse_without_creating_the_folder(tmp_path):
    out = tmp_path / "later"
    cfg = cli.parse_args(["--quick", "--out", str(out)])
    assert cfg.out == str(out) and not out.exists()


# ============================================================== 7: SaveBest checks its folder early
class _Batches(AbsCallback):
    def __init__(self):
        self.n = 0

    def on_batch_begin(self):
        self.n += 1


def test_savebest_missing_folder_fails_before_training(tmp_path):
    count = _Batches()
    with pytest.raises(FileNotFoundError, match=r"SaveBest: .*does not exist"):
        ModelWrapper(_net()).fit(1, _weighted_pair(np.ones(200)), ADAM, nn.BCEWithLogitsLoss(),
                                 cbs=[count, SaveBest(tmp_path / "missing" / "best.pt")])
    assert count.n == 0


def test_savebest_path_is_a_folder(tmp_path):
    with pytest.raises(IsADirectoryError, match="SaveBest"):
        ModelWrapper(_net()).fit(1, _weighted_pair(np.ones(200)), ADAM, nn.BCEWithLogitsLoss(),
                                 cbs=[SaveBest(tmp_path)])


# ============================================================== 8: constraint support at construction
def test_constraint_support_checked_at_construction():
    with pytest.raises(ValueError, match=r"nuisance 'b'.*nominal value 0.0.*support"):
        RateNuisance("b", on="b", constraint=LogNormal(0.0, 0.1))
    with pytest.raises(ValueError, match=r"nuisance 'r'.*nominal value 0.0"):
        ShapeNuisance("r", lambda x, v: x, nominal=0.0, constraint=Uniform(0.5, 2.0), variations=(-1, 1))
    with pytest.raises(ValueError, match=r"nuisance 'u'"):
        ShapeNuisance("u", up=lambda x: x, down=lambda x: x, constraint=LogNormal(0.0, 1.0))
    # nominal inside the support: fine
    RateNuisance("lumi", on="s", mode="scale", constraint=LogNormal(0.0, 0.1))
    ShapeNuisance("l", lambda x, v: x, nominal=3.0, constraint=LogNormal(1.0, 0.3), variations=(2.5, 3.5))


# ============================================================== 9: say what was wrong
def test_transform_returning_numpy_is_named():
    n = ShapeNuisance("r", lambda x, v: (x + v).numpy(), nominal=0.0, variations=(-1, 1))
    with pytest.raises(ValueError, match=r"must return a torch.Tensor, got a numpy.ndarray"):
        n.apply(torch.ones(50, 2), 0.1)
    m = ShapeNuisance("m", up=lambda x: x.numpy(), down=lambda x: x)
    with pytest.raises(ValueError, match=r"up modification .*must return a torch.Tensor, got a numpy.ndarray"):
        m.up_down(torch.ones(5, 2))
    k = ShapeNuisance("k", lambda x, v: x[:, :1] + v, nominal=0.0, variations=(-1, 1))
    with pytest.raises(ValueError, match=r"shape \(50, 2\), got shape \(50, 1\)"):
        k.apply(torch.ones(50, 2), 0.1)


@pytest.mark.parametrize("n_obs", [-5, 0.0, float("nan"), np.float64(-1.0)])
def test_bad_scalar_n_obs_is_named(n_obs):
    with pytest.raises(ValueError, match=r"n_obs"):
        calc_profile(F_S, F_B, n_obs, MU, mu_true=50)


def test_scalar_n_obs_below_mu_true_is_explained():
    with pytest.raises(ValueError, match=r"n_obs = 40.* mu_true = 50"):
        fit_mle(F_S, F_B, 40, mu_true=50)


@pytest.mark.parametrize("bs", ["10", 2.5, True, None])
def test_bad_batch_size_says_what(bs):
    with pytest.raises(ValueError, match=r"batch_size must be an integer >= 1, got " + repr(repr(bs))[1:-1]):
        WeightedDataLoader(DataSet(np.ones((10, 2))), bs)


def test_string_n_epochs_says_what():
    with pytest.raises(ValueError, match=r"n_epochs must be an integer >= 1, got '3' \(str\)"):
        ModelWrapper(_net()).fit("3", _weighted_pair(np.ones(200)), ADAM, nn.BCEWithLogitsLoss())


# ============================================================== 10: one weight per event
@pytest.mark.parametrize("shape", [(10, 3), (10, 1, 1), (10, 2)])
def test_dataset_weights_one_per_event(shape):
    with pytest.raises(ValueError, match=r"one weight per event"):
        DataSet(np.ones((10, 2)), np.ones(10), np.ones(shape))
    DataSet(np.ones((10, 2)), np.ones(10), np.ones((10, 1)))  # a column is fine


# ============================================================== usability
def test_plotting_available_after_import_inferno():
    code = "import inferno; f = inferno.plotting.plot_templates; print(f.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "plot_templates"
    assert inferno.plotting.plot_training_history is not None


class _TTY(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture
def terminal(monkeypatch):
    """stderr is an interactive terminal, outside CI, with INFERNO_QUIET unset. (pytest's
    capture sets sys.stderr again when the test body starts, so a test calls the fixture's
    value there.)"""
    monkeypatch.delenv("INFERNO_QUIET", raising=False)
    monkeypatch.delenv("CI", raising=False)
    tty = _TTY()

    def attach():
        monkeypatch.setattr(sys, "stderr", tty)
        return tty

    return attach


def test_progress_shown_by_default_in_a_terminal(terminal):
    tty = terminal()
    ModelWrapper(_net()).fit(2, _weighted_pair(np.ones(200)), ADAM, nn.BCEWithLogitsLoss())
    assert "epochs" in tty.getvalue()


def test_progress_quiet_in_ci_and_when_asked(terminal, monkeypatch):
    tty = terminal()
    data = _weighted_pair(np.ones(200))
    ModelWrapper(_net()).fit(1, data, ADAM, nn.BCEWithLogitsLoss(), progress=False)
    monkeypatch.setenv("CI", "true")
    ModelWrapper(_net()).fit(1, data, ADAM, nn.BCEWithLogitsLoss())
    assert tty.getvalue() == ""
    monkeypatch.setenv("CI", "false")
    ModelWrapper(_net()).fit(1, data, ADAM, nn.BCEWithLogitsLoss())
    assert "epochs" in tty.getvalue()


def test_progress_per_batch_inside_long_epochs(terminal):
    tty = terminal()
    pb = ProgressBar(batch_delay=0.0)
    ModelWrapper(_net()).fit(1, _weighted_pair(np.ones(200)), ADAM, nn.BCEWithLogitsLoss(), cbs=[pb])
    text = tty.getvalue()
    assert "epoch 1 train batches" in text and "/4" in text
    tty.seek(0)
    tty.truncate()
    ModelWrapper(_net()).fit(1, _weighted_pair(np.ones(200)), ADAM, nn.BCEWithLogitsLoss(), cbs=[ProgressBar()])
    text = tty.getvalue()
    assert "epochs" in text and "batches" not in text  # short epochs: no per-batch bar (2 s delay)


def test_setup_has_no_deprecated_license_classifier(tmp_path):
    out = subprocess.run([sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(tmp_path)],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "deprecat" not in (out.stdout + out.stderr).lower(), out.stderr
    (info,) = tmp_path.glob("*.egg-info/PKG-INFO")
    meta = info.read_text()
    assert "License-Expression: Apache-2.0" in meta and "Classifier: License ::" not in meta


def test_decreasing_mu_scan_is_named():
    with pytest.raises(ValueError, match="mu_scan must be strictly increasing"):
        calc_profile(F_S, F_B, 1050, MU[::-1], mu_true=50)


# ============================================================== docs/errors.md quotes real messages
def _doc_triggers():
    x = np.ones((10, 2))
    up = np.stack([F_B, F_B])
    up_bad = up.copy()
    up_bad[1] *= 1.1
    mu = dict(mu_scan=MU, mu_true=50)
    return [
        lambda: DataSet(np.ones((2, 2, 2))),
        lambda: DataSet(np.ones((0, 2))),
        lambda: DataSet(np.array([[1.0, np.nan]])),
        lambda: DataSet(x, np.ones(9)),
        lambda: DataSet(x, None, -np.ones(10)),
        lambda: DataSet(x, None, np.zeros(10)),
        lambda: DataSet(x, None, np.ones((10, 3))),
        lambda: WeightedDataLoader(DataSet(x), "10"),
        lambda: WeightedDataLoader(DataSet(x), 20, drop_last=True),
        lambda: ModelWrapper(_net()).fit(0, _weighted_pair(np.ones(200)), ADAM, nn.MSELoss()),
        lambda: RateNuisance("b", on="b", constraint=LogNormal(0.0, 0.1)),
        lambda: ShapeNuisance("r", lambda x, v: x, constraint=0.4, variations=(-0.1, 0.2)),
        lambda: ShapeNuisance("r", lambda x, v: x.numpy(), variations=(-1, 1)).apply(torch.ones(50, 2), 0.1),
        lambda: ShapeNuisance("r", lambda x, v: x[:, :1], variations=(-1, 1)).apply(torch.ones(50, 2), 0.1),
        lambda: calc_profile(2 * F_S, F_B, 1050, **mu),
        lambda: calc_profile(F_S, F_B, 1050, f_b_up=up_bad, f_b_dw=up, **mu),
        lambda: calc_profile(F_S[:-1], F_B, 1050, **mu),
        lambda: calc_profile(["a"] * 5, F_B, 1050, **mu),
        lambda: calc_profile(F_S, F_B, -5, **mu),
        lambda: calc_profile(F_S, F_B, 40, **mu),
        lambda: calc_profile(F_S, F_B, 1050, MU[::-1], mu_true=50),
        lambda: calc_profile(F_S, F_B, np.ones(4), MU, b_true=1000),
    ]


def test_errors_doc_quotes_the_real_messages():
    doc = (ROOT / "docs" / "errors.md").read_text()
    for trigger in _doc_triggers():
        with pytest.raises(Exception) as e:
            trigger()
        first = str(e.value).splitlines()[0]
        assert first in doc, f"docs/errors.md does not quote: {first}"


def test_errors_doc_quotes_the_cli_messages(tmp_path, capsys):
    doc = (ROOT / "docs" / "errors.md").read_text()
    for argv in (["--epochs", "0"], ["--first-seed", "-5"], ["--models", "bce,bce"], ["--bs", "2000", "--n-train", "1000"]):
        with pytest.raises(SystemExit):
            cli.parse_args(argv + ["--out", str(tmp_path)])
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert line in doc, f"docs/errors.md does not quote: {line}"


def test_inferno_needs_soft_bin_assignments():
    """Issue 13 item 4: ReLU outputs (rows not summing to one) and raw logits are refused by
    every INFERNO callback and by the general loss, with the advice to end in a softmax."""
    import torch
    from torch import nn

    from inferno import ApproxInferno, Inferno, ShapeNuisance, shift_feature
    from inferno.likelihood import NormFactor
    from inferno.loss import Analysis, Process, inferno_loss

    torch.manual_seed(0)
    x = torch.randn(200, 3)
    y = (torch.arange(200) % 2).float()
    nuis = [ShapeNuisance("r", shift_feature(0), on="b", constraint=0.4, variations=(-0.2, 0.2))]
    for head in (nn.ReLU(), nn.Identity()):
        net = nn.Sequential(nn.Linear(3, 5), head)
        for cb in (Inferno(nuis), ApproxInferno(nuis)):
            with pytest.raises(ValueError, match="End the network in a softmax"):
                cb.loss_on(net, x, y)
        analysis = Analysis([Process("s", 1, 50.0, [NormFactor("mu")]), Process("b", 0, 1000.0)], poi="mu")
        with pytest.raises(ValueError, match="End the network in a softmax"):
            inferno_loss(analysis, net, x, y.long())
