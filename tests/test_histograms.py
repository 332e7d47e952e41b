"""inferno.histograms: templates as hist.Hist (Weight storage) and back, a Model's channel as
histograms and back, and the stacked channel figure (plain matplotlib and mplhep)."""
from __future__ import annotations

import sys

import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")

hist = pytest.importorskip("hist")

from inferno.histograms import (channel_from_hists, from_hist, model_to_hists, plot_channel,  # noqa: E402
                                to_hist, to_hists)
from inferno.likelihood import Channel, HistoSys, Model, NormFactor, NormSys, Sample, StatError  # noqa: E402


def model():
    sig = Sample("signal", [5.0, 10.0, 3.0], [NormFactor("mu"),
                                              HistoSys("jes", hi=[6.0, 10.5, 2.5], lo=[4.0, 9.5, 3.5]),
                                              StatError("mc_stat", sigma=[0.5, 0.8, 0.3])])
    bkg = Sample("bkg", [50.0, 20.0, 10.0], [HistoSys("jes", hi=[55.0, 21.0, 9.0], lo=[45.0, 19.0, 11.0]),
                                             NormSys("xsec", hi=1.1, lo=0.9),
                                             StatError("mc_stat", sigma=[2.0, 1.0, 1.0])])
    other = Sample("other", [1.0, 1.0, 1.0], [NormFactor("mu")])
    return Model([Channel("SR", [sig, bkg]), Channel("CR", [other])], poi="mu")


def test_to_hist_from_hist_round_trip():
    rng = np.random.default_rng(0)
    v, var = rng.uniform(0, 10, 6), rng.uniform(0, 2, 6)
    h = to_hist(v, var, name="signal", label="nominal")
    assert isinstance(h, hist.Hist) and h.storage_type is hist.storage.Weight
    assert h.name == "signal" and h.label == "nominal"
    assert h.axes[0].edges.tolist() == list(range(7))
    v2, var2 = from_hist(h)
    np.testing.assert_array_equal(v2, v)
    np.testing.assert_array_equal(var2, var)
    # edges, tensors, and the default (Poisson) variances
    e = [0.0, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0]
    h = to_hist(torch.tensor(v), edges=e)
    assert h.axes[0].edges.tolist() == e
    np.testing.assert_array_equal(from_hist(h)[1], v)
    # a histogram filled the usual way gives the same as its sums
    x = rng.uniform(0, 3, 100)
    w = rng.uniform(0.5, 2, 100)
    filled = hist.Hist(hist.axis.Regular(3, 0, 3), storage=hist.storage.Weight()).fill(x, weight=w)
    vals, variances = from_hist(filled)
    idx = np.floor(x).astype(int)
    np.testing.assert_allclose(vals, np.bincount(idx, w, 3))
    np.testing.assert_allclose(variances, np.bincount(idx, w ** 2, 3))


def test_to_hist_errors():
    with pytest.raises(ValueError, match="edges must be 4 increasing"):
        to_hist([1.0, 2.0, 3.0], edges=[0, 1, 2])
    with pytest.raises(ValueError, match="sumw2 has 2 bins"):
        to_hist([1.0, 2.0, 3.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="variances.*>= 0"):
        to_hist([1.0, 2.0], [1.0, -1.0])
    with pytest.raises(ValueError, match="NaN"):
        to_hist([1.0, np.nan])
    with pytest.raises(ValueError, match="need their sumw2"):
        to_hist([1.0, -2.0])
    with pytest.raises(ValueError, match="one axis"):
        from_hist(hist.Hist(hist.axis.Regular(2, 0, 2), hist.axis.Regular(2, 0, 2)))


def test_model_to_hists_and_back():
    m = model()
    hs = model_to_hists(m, "SR")
    assert set(hs) == {(s, v) for s in ("signal", "bkg") for v in ("nominal", "jes_up", "jes_down")}
    v, var = from_hist(hs[("bkg", "nominal")])
    np.testing.assert_array_equal(v, [50.0, 20.0, 10.0])
    np.testing.assert_array_equal(var, [4.0, 1.0, 1.0])
    np.testing.assert_array_equal(from_hist(hs[("signal", "jes_down")])[0], [4.0, 9.5, 3.5])
    with pytest.raises(ValueError, match="name the one to use"):
        model_to_hists(m)
    with pytest.raises(ValueError, match="unknown channel 'XX'"):
        model_to_hists(m, "XX")
    # back: the same channel (the rate modifiers given again)
    ch = channel_from_hists(hs, "SR", stat_error="mc_stat",
                            modifiers={"signal": [NormFactor("mu")], "bkg": [NormSys("xsec", hi=1.1, lo=0.9)]})
    m2 = Model([ch, m.channels[1]], poi="mu")
    assert sorted(m2.names) == sorted(m.names)
    p = m.init.clone()
    p[m.index("jes")] = 0.7
    p[m.index("mu")] = 1.3
    p2 = m2.params(**{n: float(p[m.index(n)]) for n in m.names})
    torch.testing.assert_close(m2.expected(p2), m.expected(p))
    for n in m.names:  # the staterror constraints too
        assert m2.parameters[m2.index(n)].sigma == pytest.approx(m.parameters[m.index(n)].sigma)


def test_channel_from_hists_yields_and_variation_names():
    hs = to_hists({("a", "nominal"): ([2.0, 2.0], [1.0, 1.0]), ("a", "sc_hi"): ([3.0, 2.0], [1.0, 1.0]),
                   ("a", "sc_lo"): ([1.0, 2.0], [1.0, 1.0]), ("b", "nominal"): ([1.0, 3.0], [0.5, 0.5])})
    ch = channel_from_hists(hs, "SR", yields={"a": 8.0}, variations={"scale": ("sc_hi", "sc_lo")},
                            stat_error="stat")
    a, b = ch.samples
    np.testing.assert_allclose(a.counts, [4.0, 4.0])  # scaled by 8 / 4
    hs_mod = [mm for mm in a.modifiers if isinstance(mm, HistoSys)][0]
    np.testing.assert_allclose(hs_mod.hi, [6.0, 4.0])
    np.testing.assert_allclose(hs_mod.lo, [2.0, 4.0])
    st = [mm for mm in a.modifiers if isinstance(mm, StatError)][0]
    np.testing.assert_allclose(st.sigma, [2.0, 2.0])
    np.testing.assert_allclose(b.counts, [1.0, 3.0])
    assert [type(mm) for mm in b.modifiers] == [StatError]


def test_channel_from_hists_errors():
    nom = to_hist([1.0, 2.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="no 'nominal'"):
        channel_from_hists({("a", "x_up"): nom, ("a", "x_down"): nom}, "SR")
    with pytest.raises(ValueError, match="'x_up' has no 'x_down'"):
        channel_from_hists({("a", "nominal"): nom, ("a", "x_up"): nom}, "SR")
    with pytest.raises(ValueError, match="not up/down pairs"):
        channel_from_hists({("a", "nominal"): nom, ("a", "weird"): nom}, "SR")
    with pytest.raises(ValueError, match="named by strings"):
        channel_from_hists({(0, "nominal"): nom}, "SR")
    with pytest.raises(ValueError, match="3 bins, expected 2"):
        channel_from_hists({("a", "nominal"): nom, ("b", "nominal"): to_hist([1.0, 1, 1])}, "SR")
    with pytest.raises(ValueError, match="unknown samples"):
        channel_from_hists({("a", "nominal"): nom}, "SR", yields={"zz": 1.0})


def test_plot_channel(tmp_path):
    pytest.importorskip("mplhep")
    m = model()
    data = {"SR": [57, 28, 14], "CR": [1, 2, 1]}
    fig = plot_channel(m, "SR", params={"mu": 2.0}, data=data, path=tmp_path / "sr.png")
    assert (tmp_path / "sr.png").stat().st_size > 1000 and fig is not None
    fig = plot_channel(m, "SR", data=[57, 28, 14, 1, 2, 1], hep_style=True, logy=True, edges=[0, 1, 2, 4],
                       path=tmp_path / "sr_hep.png")
    assert (tmp_path / "sr_hep.png").stat().st_size > 1000
    fig = plot_channel(m, "CR", params=m.init)  # not saved: the figure is returned
    ax = fig.axes[0]
    assert ax.get_title() == "CR"
    with pytest.raises(ValueError, match="data has 2 bins"):
        plot_channel(m, "SR", data=[1, 2])
    with pytest.raises(ValueError, match="edges must be 4"):
        plot_channel(m, "SR", edges=[0, 1])
    import matplotlib.pyplot as plt
    plt.close("all")


def test_plain_style_is_default_and_global_style_untouched(tmp_path):
    pytest.importorskip("mplhep")
    before = dict(matplotlib.rcParams)
    plot_channel(model(), "SR", hep_style=True, path=tmp_path / "a.png")
    after = dict(matplotlib.rcParams)
    assert {k for k in before if before[k] != after[k]} <= {"backend"}


def test_missing_hist_says_which_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "hist", None)
    with pytest.raises(ImportError, match=r"pip install 'inferno\[hist\]'"):
        to_hist([1.0, 2.0])


def test_missing_mplhep_says_which_extra(monkeypatch, tmp_path):
    from inferno.plotting import plot_templates

    monkeypatch.setitem(sys.modules, "mplhep", None)
    f = np.array([0.5, 0.5])
    with pytest.raises(ImportError, match=r"pip install 'inferno\[hist\]'"):
        plot_templates(f, f, {}, hep_style=True)
    with pytest.raises(ImportError, match=r"mplhep"):
        plot_channel(model(), "SR", hep_style=True)
    plot_templates(f, f, {}, path=tmp_path / "plain.png")  # the default needs no mplhep
    plot_channel(model(), "SR", path=tmp_path / "plain_channel.png")
