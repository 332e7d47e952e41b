import functools

import numpy as np
import pytest
import torch
from torch import nn

from inferno import (AbsCallback, DataPair, DataSet, EarlyStopping, GradClip, LossTracker,
                     ModelWrapper, PredHandler, ProgressBar, SaveBest, WeightedDataLoader)

ADAM = functools.partial(torch.optim.Adam, lr=1e-2)


def _net(seed=0, n_in=3, n_out=1):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(n_in, 16), nn.ReLU(), nn.Linear(16, n_out))


def _data(n=250, bs=64, seed=0, weights=False, shuffle=True):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.float32)
    w = rng.uniform(0.1, 3.0, size=n) if weights else None
    trn = WeightedDataLoader(DataSet(x, y, w), bs, shuffle=shuffle, seed=seed)
    val = WeightedDataLoader(DataSet(x[:97], y[:97], None if w is None else w[:97]), 40)
    return DataPair(trn, val)


class Recorder(AbsCallback):
    """Records every hook with the state it sees."""

    def __init__(self):
        self.log = []

    def __getattribute__(self, name):
        if name.startswith("on_"):
            def hook():
                wr = object.__getattribute__(self, "wrapper")
                self.log.append((name, wr.state, wr.epoch,
                                 None if wr.y_pred is None else tuple(wr.y_pred.shape)))
            return hook
        return object.__getattribute__(self, name)


def test_hook_order_and_state():
    rec = Recorder()
    data = _data(n=100, bs=50)  # 2 train batches, 3 valid batches (40, 40, 17)
    wr = ModelWrapper(_net())
    wr.fit(2, data, ADAM, nn.BCEWithLogitsLoss(), cbs=[rec])
    names = [h for h, *_ in rec.log]
    batch_trn = ["on_batch_begin", "on_forwards_end", "on_backwards_begin", "on_backwards_end",
                 "on_batch_end"]
    batch_val = ["on_batch_begin", "on_forwards_end", "on_batch_end"]
    epoch = (["on_epoch_begin"] + batch_trn * 2 + ["on_epoch_end"]
             + ["on_epoch_begin"] + batch_val * 3 + ["on_epoch_end"])
    assert names == ["on_train_begin"] + epoch * 2 + ["on_train_end", "on_teardown"]  # teardown: always
    states = [s for h, s, *_ in rec.log if h == "on_epoch_begin"]
    assert states == ["train", "valid", "train", "valid"]
    epochs = [e for h, _, e, _ in rec.log if h == "on_epoch_end"]
    assert epochs == [1, 1, 2, 2]
    # y_pred is set by the time on_forwards_end fires, with the batch's shape
    fwd = [shape for h, s, _, shape in rec.log if h == "on_forwards_end" and s == "valid"]
    assert fwd[:3] == [(40, 1), (40, 1), (17, 1)]
    assert wr.n_epochs == 2 and wr.opt is not None and rec in wr.cbs

    rec2 = Recorder()
    wr.predict(np.zeros((5, 3), np.float32), cbs=[rec2])
    assert [h for h, *_ in rec2.log] == ["on_pred_begin", "on_batch_begin", "on_forwards_end",
                                         "on_batch_end", "on_pred_end"]
    assert all(s == "test" for _, s, *_ in rec2.log)


def test_callback_can_change_batch_and_loss():
    class DoubleX(AbsCallback):
        def on_batch_begin(self):
            self.wrapper.x = self.wrapper.x * 2

    class ConstLoss(AbsCallback):
        requires_grad_in_valid = True

        def on_forwards_end(self):
            assert self.wrapper.loss_func is None
            if self.wrapper.state == "valid":
                assert torch.is_grad_enabled()  # as requested by requires_grad_in_valid
            self.wrapper.loss_val = (self.wrapper.y_pred ** 2).sum()  # not an average

    wr = ModelWrapper(_net())
    x = np.ones((4, 3), np.float32)
    before = wr.predict(x)
    out = wr.predict(x, cbs=[DoubleX()])
    with torch.no_grad():
        ref = wr.model(torch.full((4, 3), 2.0)).numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-6)
    assert not np.allclose(before, out)
    h = wr.fit(3, _data(), ADAM, None, cbs=[ConstLoss()])
    assert len(h["train"]) == 3 and h["train"][-1] < h["train"][0]


def test_validation_without_grad_by_default():
    class Check(AbsCallback):
        def on_forwards_end(self):
            if self.wrapper.state == "valid":
                assert not torch.is_grad_enabled()
                assert not self.wrapper.model.training
            else:
                assert self.wrapper.model.training

    ModelWrapper(_net()).fit(1, _data(), ADAM, nn.BCEWithLogitsLoss(), cbs=[Check()])


@pytest.mark.parametrize("weights", [False, True])
def test_loss_tracker_averages_over_events(weights):
    """Epoch loss = event-weighted mean over all events, whatever the batch sizes."""
    data = _data(weights=weights, bs=64)  # 250 events: batches 64, 64, 64, 58
    wr = ModelWrapper(_net())
    sgd = functools.partial(torch.optim.SGD, lr=0.0)  # weights frozen: loss is reproducible
    h = wr.fit(1, data, sgd, nn.BCEWithLogitsLoss())
    for dl, key in ((data.trn_dl, "train"), (data.val_dl, "valid")):
        ds = dl.dataset
        with torch.no_grad():
            per = nn.functional.binary_cross_entropy_with_logits(wr.model(ds.x), ds.y,
                                                                 reduction="none")
        w = ds.w if weights else torch.ones_like(per)
        expected = float((per * w).sum() / w.sum())
        assert h[key][0] == pytest.approx(expected, rel=1e-5)


def test_loss_tracker_callback_loss_is_batch_mean():
    """A loss set by a callback (INFERNO's) is not an event average: batches count equally."""
    seen = []

    class BatchSizeLoss(AbsCallback):
        requires_grad_in_valid = True

        def on_forwards_end(self):
            v = torch.tensor(float(len(self.wrapper.x))) + 0 * self.wrapper.y_pred.sum()
            self.wrapper.loss_val = v
            if self.wrapper.state == "train":
                seen.append(len(self.wrapper.x))

    data = _data(bs=64)
    h = ModelWrapper(_net()).fit(1, data, ADAM, None, cbs=[BatchSizeLoss()])
    assert h["train"][0] == pytest.approx(np.mean(seen)) and seen == [64, 64, 64, 58]
    assert h["valid"][0] == pytest.approx(np.mean([40, 40, 17]))


def test_early_stopping():
    class FakeLoss(AbsCallback):
        """Validation loss decreases for 3 epochs, then rises."""
        requires_grad_in_valid = True
        vals = [5, 4, 3, 3.5, 3.6, 3.7, 3.8, 3.9, 4.0, 4.1]

        def on_forwards_end(self):
            wr = self.wrapper
            v = self.vals[wr.epoch - 1] if wr.state == "valid" else 1.0
            wr.loss_val = wr.y_pred.sum() * 0 + v

    wr = ModelWrapper(_net())
    h = wr.fit(10, _data(), ADAM, None, cbs=[FakeLoss(), EarlyStopping(patience=2)])
    assert len(h["valid"]) == 5 and wr.epoch == 5 and wr.stop
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping(0)


def test_save_best_reloads_best_weights(tmp_path):
    class FakeLoss(AbsCallback):
        requires_grad_in_valid = True
        vals = [5.0, 2.0, 3.0, 4.0]

        def on_forwards_end(self):
            wr = self.wrapper
            v = self.vals[wr.epoch - 1] if wr.state == "valid" else 0.0
            wr.loss_val = wr.y_pred.sum() * 0 + (wr.y_pred ** 2).mean() + v

    class Snapshot(AbsCallback):
        def on_train_begin(self):
            self.weights = {}

        def on_epoch_end(self):
            if self.wrapper.state == "valid":
                self.weights[self.wrapper.epoch] = [p.detach().clone()
                                                    for p in self.wrapper.model.parameters()]

    snap = Snapshot()
    path = tmp_path / "best.pt"
    wr = ModelWrapper(_net())
    sb = SaveBest(path, auto_reload=True)
    wr.fit(4, _data(), ADAM, None, cbs=[FakeLoss(), snap, sb])
    assert sb.best_epoch == 2 and path.exists()
    for p, q in zip(wr.model.parameters(), snap.weights[2]):
        assert torch.equal(p, q)
    assert not all(torch.equal(p, q) for p, q in zip(wr.model.parameters(), snap.weights[4]))


def test_save_load_round_trip(tmp_path):
    wr = ModelWrapper(_net(seed=1))
    wr.fit(2, _data(), ADAM, nn.BCEWithLogitsLoss())
    x = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    ref = wr.predict(x)
    wr.save(tmp_path / "m.pt")
    wr2 = ModelWrapper(_net(seed=2))
    assert not np.allclose(wr2.predict(x), ref)
    wr2.load(tmp_path / "m.pt")
    np.testing.assert_array_equal(wr2.predict(x), ref)


def test_atomic_save_survives_a_failure(tmp_path, monkeypatch):
    path = tmp_path / "m.pt"
    wr = ModelWrapper(_net(seed=1))
    wr.save(path)
    good = path.read_bytes()
    wr2 = ModelWrapper(_net(seed=2))

    def exploding_save(obj, f, *a, **k):
        f.write(b"partial garbage")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", exploding_save)
    with pytest.raises(OSError, match="disk full"):
        wr2.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == good  # the earlier checkpoint is intact
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temporary file left behind
    wr3 = ModelWrapper(_net(seed=3))
    wr3.load(path)
    for p, q in zip(wr3.model.parameters(), wr.model.parameters()):
        assert torch.equal(p, q)


def test_load_other_architecture_raises(tmp_path):
    ModelWrapper(_net()).save(tmp_path / "m.pt")
    other = ModelWrapper(nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1)))
    with pytest.raises(ValueError, match="architecture"):
        other.load(tmp_path / "m.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        other.load(tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError):
        other.load(tmp_path / "missing.pt")


def test_same_seed_identical_weights():
    def train():
        wr = ModelWrapper(_net(seed=4))
        wr.fit(3, _data(seed=9), ADAM, nn.BCEWithLogitsLoss())
        return [p.detach().clone() for p in wr.model.parameters()]

    a, b = train(), train()
    assert all(torch.equal(p, q) for p, q in zip(a, b))


def test_training_learns():
    data = _data(n=1000, bs=100)
    wr = ModelWrapper(_net())
    h = wr.fit(10, data, ADAM, nn.BCEWithLogitsLoss())
    assert h["valid"][-1] < 0.5 * h["valid"][0]
    ds = data.val_dl.dataset
    acc = ((wr.predict(ds.x) > 0) == (ds.y.numpy() > 0.5)).mean()
    assert acc > 0.9


def test_grad_clip():
    class Probe(AbsCallback):
        def on_train_begin(self):
            self.norms, self.maxabs = [], []

        def on_backwards_end(self):
            g = torch.cat([p.grad.view(-1) for p in self.wrapper.model.parameters()])
            self.norms.append(float(g.norm()))
            self.maxabs.append(float(g.abs().max()))

    probe = Probe()
    # GradClip first, probe after: the probe sees clipped gradients
    ModelWrapper(_net()).fit(1, _data(), ADAM, nn.BCEWithLogitsLoss(),
                             cbs=[GradClip(1e-3), probe])
    assert max(probe.norms) <= 1e-3 * (1 + 1e-4)

    probe2 = Probe()
    ModelWrapper(_net()).fit(1, _data(), ADAM, nn.BCEWithLogitsLoss(),
                             cbs=[GradClip(1e-4, clip_norm=False), probe2])
    # value clipping: every component within the bound
    assert max(probe2.maxabs) <= 1e-4 * (1 + 1e-6)
    assert max(probe2.maxabs) == pytest.approx(1e-4)  # some components were clipped


def test_progress_bar_quiet_without_tty(capsys):
    pb = ProgressBar()
    ModelWrapper(_net()).fit(1, _data(), ADAM, nn.BCEWithLogitsLoss(), cbs=[pb])
    assert pb.bar is None  # pytest's stderr is not a terminal
    assert capsys.readouterr().err == ""


def test_predict_handler_and_loader():
    data = _data(n=130, bs=50, shuffle=True)
    wr = ModelWrapper(_net())
    ds = data.trn_dl.dataset
    with torch.no_grad():
        ref = wr.model(ds.x).numpy()
    np.testing.assert_allclose(wr.predict(data.trn_dl), ref, rtol=1e-5, atol=1e-6)  # order kept
    np.testing.assert_allclose(wr.predict(ds.x.numpy(), bs=7), ref, rtol=1e-5, atol=1e-6)

    class Sign(PredHandler):
        def process(self, y_pred):
            return (y_pred > 0).long()

    np.testing.assert_array_equal(wr.predict(ds.x, pred_cb=Sign()), (ref > 0).astype(int))


@pytest.mark.parametrize("kwargs, err, match", [
    (dict(n_epochs=0), ValueError, "n_epochs"),
    (dict(data="nope"), TypeError, "DataPair"),
    (dict(cbs=[object()]), TypeError, "AbsCallback"),
])
def test_fit_bad_arguments(kwargs, err, match):
    args = dict(n_epochs=1, data=_data(), opt=ADAM, loss=nn.BCEWithLogitsLoss())
    args.update(kwargs)
    with pytest.raises(err, match=match):
        ModelWrapper(_net()).fit(**args)


def test_train_without_any_loss_raises():
    with pytest.raises(RuntimeError, match="no loss"):
        ModelWrapper(_net()).fit(1, _data(), ADAM, None)


def test_predict_rejects_nan():
    with pytest.raises(ValueError, match="NaN"):
        ModelWrapper(_net()).predict(np.array([[0.0, np.nan, 1.0]]))


def test_save_into_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ModelWrapper(_net()).save(tmp_path / "nope" / "m.pt")


def test_loss_tracker_kept_as_data():
    lt = LossTracker()
    wr = ModelWrapper(_net())
    h = wr.fit(2, _data(), ADAM, nn.BCEWithLogitsLoss(), cbs=[lt])
    assert wr.loss_tracker is lt and lt.losses is h
    assert all(np.isfinite(v) for v in h["train"] + h["valid"]) and len(h["valid"]) == 2


def test_lifecycle_is_guaranteed_on_errors():
    """An error during fit reaches every callback's on_exception, then on_teardown runs for
    every callback (also after a successful fit, after on_train_end), and the error is raised."""
    import functools

    import numpy as np
    import torch
    from torch import nn

    from inferno import AbsCallback, DataPair, DataSet, ModelWrapper, WeightedDataLoader

    calls = []

    class Spy(AbsCallback):
        def __init__(self, fail_at=None):
            self.fail_at = fail_at

        def on_batch_end(self):
            if self.fail_at is not None and self.wrapper.epoch == self.fail_at:
                raise KeyboardInterrupt("stop")

        def on_train_end(self):
            calls.append("train_end")

        def on_exception(self, exc):
            calls.append(("exception", type(exc).__name__))

        def on_teardown(self):
            calls.append("teardown")

    ds = DataSet(np.random.default_rng(0).normal(size=(20, 2)), np.ones(20))
    dl = WeightedDataLoader(ds, 10)
    net = nn.Sequential(nn.Linear(2, 1), nn.Sigmoid())
    with pytest.raises(KeyboardInterrupt):
        ModelWrapper(net).fit(3, DataPair(dl, None), functools.partial(torch.optim.SGD, lr=0.1), nn.BCELoss(),
                              cbs=[Spy(fail_at=2)], progress=False)
    assert calls == [("exception", "KeyboardInterrupt"), "teardown"]
    calls.clear()
    ModelWrapper(net).fit(1, DataPair(dl, None), functools.partial(torch.optim.SGD, lr=0.1), nn.BCELoss(),
                          cbs=[Spy()], progress=False)
    assert calls == ["train_end", "teardown"]
