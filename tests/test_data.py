import numpy as np
import pandas as pd
import pytest
import torch

from inferno import DataPair, DataSet, WeightedDataLoader


def _ds(n=103, seed=0, weights=True):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    x[:, 0] = np.arange(n)  # event id in column 0
    y = rng.integers(0, 2, size=n)
    w = np.arange(n) * 0.5 + 1.0 if weights else None
    return DataSet(x, y, w)


def test_inputs_from_numpy_torch_pandas_agree():
    rng = np.random.default_rng(1)
    x, y, w = rng.normal(size=(10, 2)), rng.integers(0, 2, 10), rng.uniform(size=10)
    a = DataSet(x, y, w)
    b = DataSet(torch.tensor(x), torch.tensor(y), torch.tensor(w))
    c = DataSet(pd.DataFrame(x), pd.Series(y), pd.Series(w))
    for d in (b, c):
        assert torch.equal(a.x, d.x) and torch.equal(a.y, d.y) and torch.equal(a.w, d.w)
    assert a.x.dtype == torch.float32 and a.y.shape == (10, 1) and a.w.shape == (10, 1)


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("drop_last", [False, True])
def test_every_event_once_per_epoch(shuffle, drop_last):
    ds = _ds()
    dl = WeightedDataLoader(ds, 10, shuffle=shuffle, drop_last=drop_last, seed=3)
    for _ in range(2):
        ids = torch.cat([x[:, 0] for x, _, _ in dl]).long()
        n_expected = 100 if drop_last else 103
        assert len(ids) == n_expected == len(dl) * 10 - (0 if drop_last else 7)
        assert len(torch.unique(ids)) == n_expected  # no repeats
        if not shuffle:
            assert torch.equal(ids, torch.arange(n_expected))


def test_shuffle_keeps_y_and_w_aligned_and_changes_order():
    ds = _ds()
    dl = WeightedDataLoader(ds, 16, shuffle=True, seed=7)
    orders = []
    for _ in range(2):
        ids = []
        for x, y, w in dl:
            i = x[:, 0].long()
            assert torch.equal(w[:, 0], ds.w[i, 0])
            assert torch.equal(y[:, 0], ds.y[i, 0])
            assert torch.equal(x, ds.x[i])
            ids.append(i)
        orders.append(torch.cat(ids))
    assert not torch.equal(orders[0], orders[1])  # a new permutation each epoch
    assert not torch.equal(orders[0], torch.arange(103))


def test_same_seed_same_batches():
    ds = _ds()
    a = [x for x, _, _ in WeightedDataLoader(ds, 16, shuffle=True, seed=5)]
    b = [x for x, _, _ in WeightedDataLoader(ds, 16, shuffle=True, seed=5)]
    c = [x for x, _, _ in WeightedDataLoader(ds, 16, shuffle=True, seed=6)]
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not all(torch.equal(u, v) for u, v in zip(a, c))


def test_no_y_no_w():
    dl = WeightedDataLoader(DataSet(np.ones((5, 2))), 2)
    batches = list(dl)
    assert [len(x) for x, _, _ in batches] == [2, 2, 1]
    assert all(y is None and w is None for _, y, w in batches)


@pytest.mark.parametrize("bad, match", [
    (dict(x=np.array([[1.0, np.nan]])), "NaN or inf"),
    (dict(x=np.array([[1.0, np.inf]])), "NaN or inf"),
    (dict(x=np.ones((3, 2)), w=np.array([1.0, np.nan, 1.0])), "w contains NaN"),
    (dict(x=np.ones((3, 2)), w=np.array([1.0, -2.0, 0.5])), r"sum to -0.5 \(<= 0\)"),  # negative weights: only the total
    (dict(x=np.ones((3, 2)), y=np.ones(4)), "different lengths"),
    (dict(x=np.ones((3, 2)), w=np.ones(2)), "different lengths"),
    (dict(x=np.ones((0, 2))), "empty"),
    (dict(x=np.ones((2, 2, 2))), "shape"),
])
def test_bad_dataset_inputs(bad, match):
    with pytest.raises(ValueError, match=match):
        DataSet(**bad)


@pytest.mark.parametrize("bs", [0, -3, 2.5])
def test_bad_batch_size(bs):
    with pytest.raises(ValueError, match="batch_size"):
        WeightedDataLoader(_ds(), bs)


def test_datapair_holds_loaders():
    dl = WeightedDataLoader(_ds(), 10)
    dp = DataPair(dl, dl)
    assert dp.trn_dl is dl and dp.val_dl is dl and dp.tst_dl is None


def test_negative_weights_and_extra_columns_are_batched():
    """NLO-like negative weights are accepted (a positive total); named extra columns (e.g.
    weight variations) are shuffled and sliced with their events, and reach the training loop
    as wrapper.extras."""
    import functools

    import torch
    from torch import nn

    from inferno import AbsCallback, DataPair, ModelWrapper

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 2))
    w = np.where(np.arange(40) % 4 == 0, -0.5, 1.0)
    ds = DataSet(x, (x[:, 0] > 0).astype(float), w, extras={"w_up": 1.1 * w, "tag": np.arange(40.0)})
    dl = WeightedDataLoader(ds, 16, shuffle=True, seed=1)
    batches = list(dl)
    assert [len(b) for b in batches] == [4, 4, 4]
    for bx, _, bw, ex in batches:
        idx = ex["tag"].long()
        torch.testing.assert_close(bx, ds.x[idx])
        torch.testing.assert_close(bw[:, 0], ds.w[idx, 0])
        torch.testing.assert_close(ex["w_up"], 1.1 * ds.w[idx, 0])
    seen = []

    class Look(AbsCallback):
        def on_forwards_end(self):
            seen.append(sorted(self.wrapper.extras))

    net = nn.Sequential(nn.Linear(2, 1), nn.Sigmoid())
    ModelWrapper(net).fit(1, DataPair(dl, dl), functools.partial(torch.optim.SGD, lr=0.1), nn.BCELoss(),
                          cbs=[Look()], progress=False)
    assert seen and all(s == ["tag", "w_up"] for s in seen)
    with pytest.raises(ValueError, match="extras\\['w_up'\\]"):
        DataSet(x, extras={"w_up": np.ones(3)})
    # rows of values per event, added to the same events by with_extras
    rows = np.arange(80.0).reshape(40, 2)
    more = ds.with_extras({"rows": rows})
    assert more.x is ds.x and more.w is ds.w and sorted(ds.extras) == ["tag", "w_up"]
    assert more.extras["rows"].shape == (40, 2) and more.extras["tag"] is ds.extras["tag"]
    for _, _, _, ex in WeightedDataLoader(more, 16, shuffle=True, seed=1):
        torch.testing.assert_close(ex["rows"][:, 0], 2 * ex["tag"])
    with pytest.raises(ValueError, match="extras\\['rows'\\] must hold one value or one row"):
        ds.with_extras({"rows": np.ones((40, 2, 2))})
