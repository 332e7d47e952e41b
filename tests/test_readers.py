"""inferno.data.readers: ROOT (uproot) and parquet (pyarrow) into DataSets, whole or in chunks, the
streamed templates, and the errors for bad input. Every file is written here, in tmp_path."""
from __future__ import annotations

import subprocess
import sys

import matplotlib
import numpy as np
import pytest
import torch
from torch import nn

matplotlib.use("Agg")

uproot = pytest.importorskip("uproot")
ak = pytest.importorskip("awkward")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from inferno.data import DataSet  # noqa: E402
from inferno.data.readers import (fill_histograms, iter_parquet, iter_root, predict_in_chunks,  # noqa: E402
                             read_parquet, read_root)

N = 203  # not a multiple of the chunk sizes used


def events(n=N, seed=0):
    rng = np.random.default_rng(seed)
    lab = rng.integers(0, 2, n).astype(np.int32)
    x0 = rng.normal(lab.astype(float), 1.0)
    x1 = rng.normal(0.0, 1.0 + lab)
    w = rng.uniform(0.5, 1.5, n)
    return {"x0": x0, "x1": x1, "label": lab, "weight": w, "w_up": w * 1.1, "w_dn": w * 0.9,
            "x0_up": x0 + 0.2, "x0_dn": x0 - 0.2}


def write_tree(f, name, cols, types=None):
    types = types or {k: ("i4" if v.dtype.kind == "i" else "f8") for k, v in cols.items()}
    f.mktree(name, types)
    f[name].extend(cols)


@pytest.fixture
def root_file(tmp_path):
    ev = events()
    path = tmp_path / "events.root"
    with uproot.recreate(path) as f:
        write_tree(f, "Events", ev)
        write_tree(f, "Weights", {"weight": ev["weight"], "w_up": ev["w_up"]})
        write_tree(f, "ShortWeights", {"weight": ev["weight"][:-3]})
        alt = events(57, seed=1)
        write_tree(f, "Events_alt", alt)
        write_tree(f, "Bad", {"x0": ev["x0"][:5], "name": ak.Array(["a", "b", "c", "d", "e"]),
                              "pair": np.ones((5, 2)), "nan": np.array([1.0, np.nan, 2, 3, 4])},
                   {"x0": "f8", "name": "string", "pair": ("f8", (2,)), "nan": "f8"})
    return path, ev


@pytest.fixture
def per_process(tmp_path):
    """The events of one combined file, and the same events split into one file per process."""
    ev = events()
    order = np.argsort(ev["label"], kind="stable")
    ev = {k: v[order] for k, v in ev.items()}
    combined = tmp_path / "all.root"
    with uproot.recreate(combined) as f:
        write_tree(f, "Events", ev)
    paths = {}
    for lab in (0, 1):
        sel = ev["label"] == lab
        paths[lab] = tmp_path / f"proc{lab}.root"
        with uproot.recreate(paths[lab]) as f:
            write_tree(f, "Events", {k: v[sel] for k, v in ev.items() if k != "label"})
    return combined, paths, ev


def tiny_net(n_in=2, n_bins=4, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(n_in, 8), nn.Tanh(), nn.Linear(8, n_bins), nn.Softmax(1))


# --------------------------------------------------------------------------- ROOT
def test_read_root_label_branch_weight_extras(root_file):
    path, ev = root_file
    ds = read_root(path, "Events", ["x0", "x1"], label="label", weight="weight",
                   extras={"w_up": "w_up", "w_dn": "w_dn"})
    assert isinstance(ds, DataSet) and len(ds) == N
    np.testing.assert_allclose(ds.x.numpy(), np.stack([ev["x0"], ev["x1"]], 1).astype(np.float32))
    np.testing.assert_array_equal(ds.y[:, 0].numpy(), ev["label"])
    np.testing.assert_allclose(ds.w[:, 0].numpy(), ev["weight"].astype(np.float32))
    assert set(ds.extras) == {"w_up", "w_dn"}
    np.testing.assert_allclose(ds.extras["w_up"].numpy(), ev["w_up"].astype(np.float32))
    np.testing.assert_allclose(ds.extras["w_dn"].numpy(), ev["w_dn"].astype(np.float32))


def test_label_from_branch_equals_one_file_per_process(per_process):
    combined, paths, ev = per_process
    a = read_root(combined, "Events", ["x0", "x1"], label="label", weight="weight", extras={"up": "w_up"})
    b = read_root(paths, "Events", ["x0", "x1"], weight="weight", extras={"up": "w_up"})
    for k in ("x", "y", "w"):
        assert torch.equal(getattr(a, k), getattr(b, k)), k
    assert torch.equal(a.extras["up"], b.extras["up"])
    # a path given as a list of files of one process, and str paths
    c = read_root({0: [str(paths[0])], 1: str(paths[1])}, "Events", ["x0", "x1"])
    assert torch.equal(c.y, a.y)


def test_varied_tree_as_another_label_and_shifted_branches(root_file):
    path, ev = root_file
    ds = read_root({0: path, 1: (path, "Events_alt")}, "Events", ["x0", "x1"], weight="weight")
    assert len(ds) == N + 57
    assert int((ds.y == 1).sum()) == 57
    up = read_root(path, "Events", ["x0", "x1"], shifted={"x0": "x0_up"})
    np.testing.assert_allclose(up.x[:, 0].numpy(), ev["x0_up"].astype(np.float32))
    np.testing.assert_allclose(up.x[:, 1].numpy(), ev["x1"].astype(np.float32))
    with pytest.raises(ValueError, match="not among the features"):
        read_root(path, "Events", ["x1"], shifted={"x0": "x0_up"})


def test_friend_tree_gives_weights(root_file):
    path, ev = root_file
    a = read_root(path, "Events", ["x0", "x1"], weight="weight", extras={"up": "w_up"})
    b = read_root(path, "Events", ["x0", "x1"], weight="weight", extras={"up": "w_up"}, friend="Weights")
    c = read_root(path, "Events", ["x0", "x1"], weight="weight", friend=(str(path), "Weights"))
    assert torch.equal(a.w, b.w) and torch.equal(a.extras["up"], b.extras["up"]) and torch.equal(a.w, c.w)


def test_rntuple_is_read_too(tmp_path):
    path = tmp_path / "nt.root"
    with uproot.recreate(path) as f:
        f["nt"] = {"a": np.arange(10.0), "b": np.arange(10.0) ** 2}  # uproot 5.7 writes an RNTuple
    ds = read_root(path, "nt", ["a", "b"])
    assert ds.x[:, 1].tolist() == (np.arange(10.0) ** 2).tolist()
    assert [len(c) for c in iter_root(path, "nt", ["a"], chunk_size=4)] == [4, 4, 2]


def test_iter_root_chunks_equal_read_root(root_file):
    path, _ = root_file
    kw = dict(label="label", weight="weight", extras={"up": "w_up"})
    whole = read_root(path, "Events", ["x0", "x1"], **kw)
    chunks = list(iter_root(path, "Events", ["x0", "x1"], chunk_size=50, **kw))
    assert [len(c) for c in chunks] == [50, 50, 50, 50, 3]
    assert torch.equal(torch.cat([c.x for c in chunks]), whole.x)
    assert torch.equal(torch.cat([c.y for c in chunks]), whole.y)
    assert torch.equal(torch.cat([c.w for c in chunks]), whole.w)
    assert torch.equal(torch.cat([c.extras["up"] for c in chunks]), whole.extras["up"])
    # a friend tree stays aligned chunk by chunk
    fr = list(iter_root(path, "Events", ["x0", "x1"], weight="weight", friend="Weights", chunk_size=64))
    assert torch.equal(torch.cat([c.w for c in fr]), whole.w)


def test_root_to_templates_to_hist_to_plot_round_trip(per_process, tmp_path):
    hist = pytest.importorskip("hist")
    pytest.importorskip("mplhep")
    from inferno.histograms import channel_from_hists, from_hist, model_to_hists, plot_channel, to_hists
    from inferno.likelihood import Model, NormFactor
    from inferno.plotting import plot_templates

    combined, paths, ev = per_process
    net = tiny_net()
    feats = ["x0", "x1"]
    nominal = iter_root(paths, "Events", feats, weight="weight", extras={"w_up": "w_up", "w_dn": "w_dn"},
                        chunk_size=40)
    shifted = {v: iter_root(paths, "Events", feats, weight="weight", shifted={"x0": f"x0_{v}"}, chunk_size=40)
               for v in ("up", "dn")}
    counts = fill_histograms(net, {"nominal": nominal, "jes_up": shifted["up"], "jes_down": shifted["dn"]},
                             names={0: "signal", 1: "background"})
    assert set(counts) == {(p, v) for p in ("signal", "background")
                           for v in ("nominal", "w_up", "w_dn", "jes_up", "jes_down")}
    # the same sums from all events at once
    ds = read_root(combined, "Events", feats, label="label", weight="weight")
    bins = predict_in_chunks(net, [ds], argmax=True).numpy()
    assert torch.equal(predict_in_chunks(net, iter_root(combined, "Events", feats, chunk_size=33), argmax=True),
                       torch.from_numpy(bins))
    w = ds.w[:, 0].double().numpy()
    for lab, name in ((0, "signal"), (1, "background")):
        sel = ev["label"] == lab
        sw, sw2 = counts[(name, "nominal")]
        np.testing.assert_allclose(sw, np.bincount(bins[sel], w[sel], minlength=4), rtol=1e-12)
        np.testing.assert_allclose(sw2, np.bincount(bins[sel], w[sel] ** 2, minlength=4), rtol=1e-12)
        np.testing.assert_allclose(counts[(name, "w_up")][0], 1.1 * sw, rtol=1e-6)
    # -> hist, -> a Model channel, -> hist again, -> figures
    hists = to_hists(counts)
    h = hists[("signal", "nominal")]
    assert isinstance(h, hist.Hist) and h.storage_type is hist.storage.Weight
    v, var = from_hist(h)
    np.testing.assert_array_equal(v, counts[("signal", "nominal")][0])
    np.testing.assert_array_equal(var, counts[("signal", "nominal")][1])
    renamed = {(p, {"w_dn": "w_down"}.get(k, k)): hh for (p, k), hh in hists.items()}
    ch = channel_from_hists(renamed, "learned", stat_error="mc_stat", yields={"signal": 10.0, "background": 100.0},
                            modifiers={"signal": [NormFactor("mu")]})
    model = Model([ch], poi="mu")
    assert sorted(n for n in model.names if "[" not in n) == ["jes", "mu", "w"]
    back = model_to_hists(model)
    np.testing.assert_allclose(back[("signal", "nominal")].values().sum(), 10.0)
    np.testing.assert_allclose(back[("background", "jes_up")].values(),
                               counts[("background", "jes_up")][0] * 100.0 / counts[("background", "nominal")][0].sum())
    fig = plot_channel(model, params={"mu": 1.5}, data=model.expected(model.init).numpy().round(),
                       path=tmp_path / "channel.png")
    fig2 = plot_channel(model, hep_style=True, path=tmp_path / "channel_hep.png")
    f_s = back[("signal", "nominal")].values() / 10
    f_b = back[("background", "nominal")].values() / 100
    var = {"jes": (back[("background", "jes_up")].values() / 100, back[("background", "jes_down")].values() / 100)}
    plot_templates(f_s, f_b, var, hep_style=True, path=tmp_path / "templates_hep.png")
    plot_templates(f_s, f_b, var, path=tmp_path / "templates.png")
    for name in ("channel.png", "channel_hep.png", "templates_hep.png", "templates.png"):
        assert (tmp_path / name).stat().st_size > 1000
    assert fig is not None and fig2 is not None


def test_predict_in_chunks_takes_a_wrapper_and_restores_train_mode(root_file):
    from inferno.training.wrapper import ModelWrapper

    path, _ = root_file
    net = tiny_net()
    net.train()
    ds = read_root(path, "Events", ["x0", "x1"])
    out = predict_in_chunks(ModelWrapper(net), iter_root(path, "Events", ["x0", "x1"], chunk_size=70))
    with torch.no_grad():
        assert torch.allclose(out, net(ds.x))
    assert net.training


# --------------------------------------------------------------------------- parquet
@pytest.fixture
def parquet_files(tmp_path):
    ev = events()
    path = tmp_path / "events.parquet"
    pq.write_table(pa.table({k: v for k, v in ev.items()}), path, row_group_size=37)
    friend = tmp_path / "weights.parquet"
    pq.write_table(pa.table({"weight": ev["weight"], "w_up": ev["w_up"]}), friend, row_group_size=23)
    return path, friend, ev


def test_parquet_in_chunks_equals_all_at_once(parquet_files):
    path, friend, ev = parquet_files
    kw = dict(label="label", weight="weight", extras={"up": "w_up", "dn": "w_dn"})
    whole = read_parquet(path, ["x0", "x1"], **kw)
    assert len(whole) == N
    np.testing.assert_allclose(whole.x[:, 0].numpy(), ev["x0"].astype(np.float32))
    chunks = list(iter_parquet(path, ["x0", "x1"], chunk_size=50, **kw))
    assert [len(c) for c in chunks] == [50, 50, 50, 50, 3]  # re-cut across the row groups of 37
    for k in ("x", "y", "w"):
        assert torch.equal(torch.cat([getattr(c, k) for c in chunks]), getattr(whole, k)), k
    for k in ("up", "dn"):
        assert torch.equal(torch.cat([c.extras[k] for c in chunks]), whole.extras[k])
    # the same histogram sums
    net = tiny_net()
    a = fill_histograms(net, iter_parquet(path, ["x0", "x1"], chunk_size=50, **kw))
    b = fill_histograms(net, [whole])
    assert set(a) == set(b) == {(lab, v) for lab in (0, 1) for v in ("nominal", "up", "dn")}
    for k in a:
        np.testing.assert_allclose(a[k][0], b[k][0], rtol=1e-12)
        np.testing.assert_allclose(a[k][1], b[k][1], rtol=1e-12)
    # a friend file with other row groups stays aligned
    fr = list(iter_parquet(path, ["x0", "x1"], weight="weight", extras={"up": "w_up"}, friend=friend, chunk_size=50))
    assert torch.equal(torch.cat([c.w for c in fr]), whole.w)
    assert torch.equal(torch.cat([c.extras["up"] for c in fr]), whole.extras["up"])


def test_parquet_one_file_per_process(tmp_path):
    ev = events()
    paths = {}
    for lab in (0, 1):
        sel = ev["label"] == lab
        paths[lab] = tmp_path / f"p{lab}.parquet"
        pq.write_table(pa.table({k: v[sel] for k, v in ev.items()}), paths[lab])
    ds = read_parquet(paths, ["x0", "x1"], weight="weight")
    assert len(ds) == N and int(ds.y.sum()) == int(ev["label"].sum())
    assert [len(c) for c in iter_parquet(paths, "x0", chunk_size=1000)] == [int((ev["label"] == k).sum())
                                                                            for k in (0, 1)]


# --------------------------------------------------------------------------- bad input
def test_missing_branch_names_file_tree_branch(root_file):
    path, _ = root_file
    with pytest.raises(ValueError, match=r"file '.*events\.root', tree 'Events', branch 'nope': no such branch"):
        read_root(path, "Events", ["x0", "nope"])
    with pytest.raises(ValueError, match=r"events\.root', tree 'Events', branch 'w_missing'"):
        iter_root(path, "Events", ["x0"], weight="w_missing")  # checked when called, before any chunk
    with pytest.raises(ValueError, match=r"events\.root', tree 'Nope': the file has no tree 'Nope'"):
        read_root(path, "Nope", ["x0"])
    with pytest.raises(ValueError, match=r"tree 'Weights', branch 'w_dn': no such branch"):
        read_root(path, "Events", ["x0"], weight="weight", extras={"dn": "w_dn"}, friend="Weights")


def test_wrong_dtype_names_file_tree_branch(root_file):
    path, _ = root_file
    with pytest.raises(ValueError, match=r"events\.root', tree 'Bad', branch 'name': not numeric .*strings"):
        read_root(path, "Bad", ["x0", "name"])
    with pytest.raises(ValueError, match=r"events\.root', tree 'Bad', branch 'nan': NaN or inf .*entries \[1\]"):
        read_root(path, "Bad", ["x0"], weight="nan")


def test_weights_of_another_length_name_file_tree_branch(root_file):
    path, _ = root_file
    with pytest.raises(ValueError, match=r"events\.root', tree 'Bad', branch 'pair': 10 values .* for 5 events"):
        read_root(path, "Bad", ["x0"], weight="pair")


def test_friend_tree_of_another_length_names_file_tree_branch(root_file):
    path, _ = root_file
    with pytest.raises(ValueError, match=r"events\.root', tree 'ShortWeights', branch 'weight': the friend tree "
                                         r"has 200 entries, but file '.*events\.root', tree 'Events' has 203"):
        read_root(path, "Events", ["x0"], weight="weight", friend="ShortWeights")
    with pytest.raises(ValueError, match="ShortWeights"):
        iter_root(path, "Events", ["x0"], weight="weight", friend="ShortWeights", chunk_size=10)


def test_parquet_bad_input(tmp_path, parquet_files):
    path, _, ev = parquet_files
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"x0": [1.0, 2.0], "s": ["a", "b"], "l": [[1.0], [2.0, 3.0]]}), bad)
    with pytest.raises(ValueError, match=r"file '.*bad\.parquet', column 'nope': no such column"):
        read_parquet(bad, ["x0", "nope"])
    with pytest.raises(ValueError, match=r"bad\.parquet', column 's': not numeric"):
        read_parquet(bad, ["x0", "s"])
    with pytest.raises(ValueError, match=r"bad\.parquet', column 'l': not numeric"):
        read_parquet(bad, ["x0"], weight="l")
    short = tmp_path / "short.parquet"
    pq.write_table(pa.table({"weight": ev["weight"][:10]}), short)
    with pytest.raises(ValueError, match=r"short\.parquet', column 'weight': the friend file has 10 rows, but "
                                         r"file '.*events\.parquet' has 203"):
        read_parquet(path, ["x0"], weight="weight", friend=short)


def test_argument_errors(root_file, tmp_path):
    path, _ = root_file
    with pytest.raises(FileNotFoundError, match="missing.root"):
        read_root(tmp_path / "missing.root", "Events", ["x0"])
    with pytest.raises(ValueError, match="not both"):
        read_root({0: path}, "Events", ["x0"], label="label")
    with pytest.raises(ValueError, match="must be numbers"):
        read_root({"signal": path}, "Events", ["x0"])
    with pytest.raises(ValueError, match="chunk_size"):
        iter_root(path, "Events", ["x0"], chunk_size=0)
    with pytest.raises(ValueError, match="name the tree"):
        read_root(path, None, ["x0"])


# --------------------------------------------------------------------------- optional imports
def test_missing_uproot_says_which_extra(root_file, monkeypatch):
    path, _ = root_file
    monkeypatch.setitem(sys.modules, "uproot", None)  # import uproot -> ImportError
    with pytest.raises(ImportError, match=r"pip install 'inferno\[root\]'"):
        read_root(path, "Events", ["x0"])


def test_missing_pyarrow_says_which_extra(parquet_files, monkeypatch):
    path, _, _ = parquet_files
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ImportError, match=r"pip install 'inferno\[parquet\]'"):
        read_parquet(path, ["x0"])


def test_import_inferno_loads_no_optional_dependency():
    code = ("import sys, inferno, inferno.data.readers, inferno.histograms; "
            "print(sorted(m for m in ('uproot', 'awkward', 'pyarrow', 'hist', 'mplhep') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
