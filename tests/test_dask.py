"""Templates over file sets on Dask (inferno.distributed.dask): the sums per bin, process and
variation equal those of one fill_histograms stream and of the in-memory analysis_model (1e-12
relative, float64), with one task and with several (threads, and a LocalCluster of two
worker processes), the Model built from them is the same (expected counts and NLL at several
points), and a file with a missing branch surfaces as the readers' error naming it."""
import os

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("dask")
uproot = pytest.importorskip("uproot")
pq = pytest.importorskip("pyarrow.parquet")
pa = pytest.importorskip("pyarrow")

from inferno import VariableSoftmax  # noqa: E402
from inferno.data.readers import fill_histograms, iter_root, read_parquet, read_root  # noqa: E402
from inferno.distributed.dask import analysis_model_dask, analysis_transforms, fill_histograms_dask  # noqa: E402
from inferno.templates import analysis_model, model_from_histograms  # noqa: E402

from test_templates import three_process_analysis as _analysis  # noqa: E402

FEATURES = ["x0", "x1", "x2"]
EXTRAS = {"up": "w_up", "dn": "w_dn"}


def _events(seed, n):
    g = np.random.default_rng(seed)
    lab = np.array([0, 1, 2, 10, 11])[g.integers(0, 5, n)]
    x = g.normal(size=(n, 3)) + np.minimum(lab, 2)[:, None] * np.array([0.9, -0.5, 0.2])
    w = 0.5 + g.random(n)
    cols = {f"x{j}": x[:, j].astype(np.float32) for j in range(3)}
    cols.update(label=lab.astype(np.int32), w=w, w_up=1.1 * w, w_dn=w * (1 - 0.05 * np.tanh(x[:, 0])))
    return cols


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("dask")
    out = {"root": [], "parquet": []}
    for i, n in enumerate((700, 500, 900, 400)):
        cols = _events(i, n)
        p = d / f"part{i}.root"
        with uproot.recreate(p) as f:
            f["Events"] = cols
        out["root"].append(str(p))
        q = d / f"part{i}.parquet"
        pq.write_table(pa.table(cols), q, row_group_size=300)
        out["parquet"].append(str(q))
    bad = d / "bad.root"
    cols = _events(9, 50)
    del cols["x1"]
    with uproot.recreate(bad) as f:
        f["Events"] = cols
    out["bad"] = str(bad)
    return out


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 5), VariableSoftmax(0.3))


def _assert_same_counts(a, b):
    assert set(a) == set(b)
    for k in a:
        for u, v in zip(a[k], b[k]):
            np.testing.assert_allclose(u, v, rtol=1e-12, atol=0, err_msg=str(k))


def _assert_same_model(m1, m2):
    assert m1.names == m2.names and m1.n_bins == m2.n_bins
    g = torch.Generator().manual_seed(4)
    main, aux = m1.asimov()
    points = [m1.init] + [m1.init + 0.2 * torch.randn(m1.n_params, generator=g, dtype=torch.float64) for _ in range(3)]
    for p in points:
        torch.testing.assert_close(m1.expected(p), m2.expected(p), rtol=1e-12, atol=0)
        torch.testing.assert_close(m1.nll(p, main, aux), m2.nll(p, main, aux), rtol=1e-12, atol=0)


def test_sums_equal_one_stream_with_one_and_several_tasks(files):
    """fill_histograms_dask over 1 file and over 4 files (threads, chunks of 256) against
    fill_histograms on one stream of the same files, transforms and weight variations
    included."""
    net = _net()
    tr = analysis_transforms(_analysis())
    assert sorted(tr) == ["jes_down", "jes_up"]

    def stream(paths):
        chunks = list(iter_root(paths, "Events", FEATURES, "label", "w", EXTRAS, chunk_size=256))
        from inferno.data import DataSet
        streams = {"nominal": chunks}
        for k, t in tr.items():
            streams[k] = [DataSet(t(c.x), c.y, c.w) for c in chunks]
        return fill_histograms(net, streams)

    for paths in (files["root"][:1], files["root"]):
        ref = stream(paths)
        got = fill_histograms_dask(net, paths, "Events", FEATURES, "label", "w", EXTRAS, transforms=tr,
                                   chunk_size=256, split_every=2)
        _assert_same_counts(ref, got)
        assert ("ttbar" not in {k[0] for k in got}) and (0, "jes_up") in got and (2, "up") in got


def test_model_equals_analysis_model_in_memory_root_and_parquet(files):
    """The Model from the Dask sums equals analysis_model on all events read at once, for ROOT
    (threads) and parquet (a LocalCluster of two worker processes)."""
    from dask.distributed import Client, LocalCluster

    net, analysis = _net(), _analysis()
    ds = read_root(files["root"], "Events", FEATURES, "label", "w", EXTRAS)
    ref = analysis_model(analysis, net, ds.x, ds.y, ds.w, weights=ds.extras)
    got = analysis_model_dask(analysis, net, files["root"], "Events", FEATURES, "label", "w", EXTRAS, chunk_size=300)
    _assert_same_model(ref, got)
    dp = read_parquet(files["parquet"], FEATURES, "label", "w", EXTRAS)
    ref_pq = analysis_model(analysis, net, dp.x, dp.y, dp.w, weights=dp.extras)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        pids = set(client.run(os.getpid).values())
        assert len(pids) == 2 and os.getpid() not in pids  # two worker processes
        got_pq = analysis_model_dask(analysis, net, files["parquet"], None, FEATURES, "label", "w", EXTRAS,
                                     chunk_size=250, client=client)
    _assert_same_model(ref_pq, got_pq)
    _assert_same_model(ref, ref_pq)  # the same events in both formats


def test_labels_from_the_mapping_and_variations_from_branches(files):
    """Files given as {label: paths} (one task each), a variation read with shifted branches
    equals the same shift applied as a transform."""
    net = _net()
    by_label = {0: files["root"][:2], 1: files["root"][2:]}
    tr = {"shift": lambda x: x}  # the inputs themselves, as the variation reading the same branches
    got = fill_histograms_dask(net, by_label, "Events", FEATURES, weight="w", transforms=tr,
                               variations={"same": {"shifted": {"x0": "x0"}}}, chunk_size=500)
    ref = fill_histograms(net, iter_root(by_label, "Events", FEATURES, weight="w", chunk_size=500))
    assert set(got) == {(0, "nominal"), (1, "nominal"), (0, "shift"), (1, "shift"), (0, "same"), (1, "same")}
    for lab in (0, 1):
        for var in ("nominal", "shift", "same"):
            for u, v in zip(got[(lab, var)], ref[(lab, "nominal")]):
                np.testing.assert_allclose(u, v, rtol=1e-12, atol=0)


def test_missing_branch_names_file_tree_and_branch(files):
    net = _net()
    paths = files["root"][:2] + [files["bad"]]
    with pytest.raises(ValueError, match=r"bad\.root'.*tree 'Events'.*branch 'x1'.*no such branch"):
        fill_histograms_dask(net, paths, "Events", FEATURES, "label", "w", chunk_size=200)


def test_model_from_histograms_errors(files):
    analysis, net = _analysis(), _net()
    counts = fill_histograms_dask(net, files["root"][:1], "Events", FEATURES, "label", "w", EXTRAS)
    with pytest.raises(ValueError, match="no histogram of process 'ttbar'.*'jes_up'"):
        model_from_histograms(analysis, counts)
    with pytest.raises(ValueError, match="no events of process 'signal'"):
        model_from_histograms(analysis, {k: v for k, v in counts.items() if k[0] != 1})


def test_bad_arguments(files):
    net = _net()
    args = (net, files["root"], "Events", FEATURES, "label", "w")
    with pytest.raises(ValueError, match="fmt"):
        fill_histograms_dask(*args, fmt="csv")
    with pytest.raises(ValueError, match="split_every"):
        fill_histograms_dask(*args, split_every=1)
    with pytest.raises(ValueError, match="transforms"):
        fill_histograms_dask(*args, transforms={"a": 3})
    with pytest.raises(ValueError, match="unknown reader arguments"):
        fill_histograms_dask(*args, variations={"a": {"bogus": 1}})
