"""ONNX export of a trained summary statistic (inferno.export), checked with onnxruntime
against PyTorch's predictions on the same events: hard bins identical, probabilities to 1e-5,
any batch size; atomic writes; clear errors."""
import functools
import os
import sys

import numpy as np
import pytest
import torch
from torch import nn

from inferno import DataPair, DataSet, ModelWrapper, WeightedDataLoader
from inferno.export import export_onnx, predict_onnx
from inferno.inferno import VariableSoftmax

N_FEAT, N_BINS = 4, 6


def _onnx():
    pytest.importorskip("onnx")
    return pytest.importorskip("onnxruntime")


def _events(n, seed=1):
    return np.random.default_rng(seed).normal(size=(n, N_FEAT)).astype(np.float32) * 2


def _trained_summary(seed=0):
    """A small INFERNO-style network (ending in VariableSoftmax), trained a little."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(N_FEAT, 32), nn.ReLU(), nn.Linear(32, N_BINS), VariableSoftmax(0.1))
    x = _events(600, seed=seed)
    y = (x[:, 0] > 0).astype(np.float32) + (x[:, 1] > 0)  # 3 classes
    data = DataPair(WeightedDataLoader(DataSet(x, y), 100, shuffle=True, seed=seed))

    def nll(p, t):  # the softmax output as class probabilities over the first bins
        return nn.functional.nll_loss(torch.log(p + 1e-9), t.view(-1).long())

    wr = ModelWrapper(net)
    wr.fit(3, data, functools.partial(torch.optim.Adam, lr=1e-2), nll, progress=False)
    return wr


def _torch_predict(net, x):
    with torch.no_grad():
        p = net(torch.from_numpy(x))
    return p.numpy(), p.argmax(1).numpy()


def test_onnx_matches_pytorch(tmp_path):
    ort = _onnx()
    wr = _trained_summary()
    path = export_onnx(wr, tmp_path / "summary.onnx", n_features=N_FEAT)
    assert path == tmp_path / "summary.onnx" and path.is_file()
    x = _events(5000, seed=7)
    probs, bins = predict_onnx(path, x)
    ref_p, ref_b = _torch_predict(wr.model, x)
    assert len(np.unique(ref_b)) >= 3  # the comparison of hard bins is not trivial
    np.testing.assert_array_equal(bins, ref_b)
    assert bins.dtype == np.int64 and bins.shape == (5000,)
    np.testing.assert_allclose(probs, ref_p, rtol=0, atol=1e-5)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    # the same through a plain onnxruntime session, and the wrapper's predict
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["x"]
    assert [o.name for o in sess.get_outputs()] == ["probs", "bin"]
    p2, b2 = sess.run(None, {"x": x})
    np.testing.assert_array_equal(b2, ref_b)
    np.testing.assert_allclose(p2, wr.predict(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("batch", [1, 2, 33, 4096])
def test_dynamic_batch_size(tmp_path, batch):
    _onnx()
    import onnx
    wr = _trained_summary(seed=2)
    path = export_onnx(wr.model, tmp_path / "m.onnx", N_FEAT)
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and dims[1].dim_value == N_FEAT
    x = _events(batch, seed=batch)
    probs, bins = predict_onnx(path, x)
    ref_p, ref_b = _torch_predict(wr.model, x)
    assert probs.shape == (batch, N_BINS) and bins.shape == (batch,)
    np.testing.assert_array_equal(bins, ref_b)
    np.testing.assert_allclose(probs, ref_p, rtol=0, atol=1e-5)


def test_ties_go_to_the_first_bin_as_in_torch(tmp_path):
    """Two identical output rows: equal probabilities; both pick the lower bin index."""
    _onnx()
    torch.manual_seed(0)
    lin = nn.Linear(N_FEAT, 4)
    with torch.no_grad():
        lin.weight[2] = lin.weight[1]
        lin.bias[2] = lin.bias[1]
        lin.bias[1:3] += 5.0  # bins 1 and 2 tie for the largest output on most events
    net = nn.Sequential(lin, VariableSoftmax(1.0))
    x = _events(500)
    path = export_onnx(net, tmp_path / "tie.onnx", N_FEAT)
    probs, bins = predict_onnx(path, x)
    ref_p, ref_b = _torch_predict(net, x)
    assert (ref_p[:, 1] == ref_p[:, 2]).all() and (ref_b == 1).sum() > 100 and not (ref_b == 2).any()
    np.testing.assert_array_equal(bins, ref_b)


def test_without_argmax_and_metadata(tmp_path):
    _onnx()
    import onnx
    torch.manual_seed(0)
    reg = nn.Sequential(nn.Linear(N_FEAT, 8), nn.Tanh(), nn.Linear(8, 1))  # a regression output
    with pytest.raises(ValueError, match="with_argmax"):
        export_onnx(reg, tmp_path / "reg.onnx", N_FEAT)
    assert not (tmp_path / "reg.onnx").exists()
    path = export_onnx(reg, tmp_path / "reg.onnx", N_FEAT, with_argmax=False, opset=13)
    out = predict_onnx(path, _events(10))
    assert len(out) == 1 and out[0].shape == (10, 1)
    np.testing.assert_allclose(out[0], _torch_predict(reg, _events(10))[0], atol=1e-5)
    m = onnx.load(str(path))
    assert m.opset_import[0].version == 13
    assert {p.key: p.value for p in m.metadata_props} == {
        "producer": "inferno", "n_features": str(N_FEAT), "outputs": "probs", "n_bins": "1"}
    m2 = onnx.load(str(export_onnx(_trained_summary().model, tmp_path / "s.onnx", N_FEAT)))
    assert {p.key: p.value for p in m2.metadata_props}["n_bins"] == str(N_BINS)


def test_the_callers_model_is_unchanged(tmp_path):
    _onnx()
    wr = _trained_summary()
    wr.model.train()
    before = {k: v.clone() for k, v in wr.model.state_dict().items()}
    export_onnx(wr.model.double(), tmp_path / "m.onnx", N_FEAT)  # a float64 model is exported in float32
    assert wr.model.training
    assert all(v.dtype == torch.float64 for v in wr.model.state_dict().values())
    assert all(torch.equal(v.float(), before[k]) for k, v in wr.model.state_dict().items())
    x = _events(200)
    probs, bins = predict_onnx(tmp_path / "m.onnx", x)
    with torch.no_grad():
        ref = wr.model.eval()(torch.from_numpy(x).double()).numpy()
    np.testing.assert_allclose(probs, ref, atol=1e-5)


def test_export_is_atomic(tmp_path, monkeypatch):
    _onnx()
    path = tmp_path / "m.onnx"
    path.write_bytes(b"an earlier export")
    wr = _trained_summary()
    with pytest.raises(ValueError, match="3 features"):  # a failure before writing
        export_onnx(wr, path, n_features=3)

    def no_disk(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", no_disk)  # a failure while writing
    with pytest.raises(OSError, match="disk full"):
        export_onnx(wr, path, N_FEAT)
    monkeypatch.undo()
    assert path.read_bytes() == b"an earlier export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no temporary file left
    export_onnx(wr, path, N_FEAT)
    np.testing.assert_array_equal(predict_onnx(path, _events(50))[1], _torch_predict(wr.model, _events(50))[1])


def test_bad_input(tmp_path):
    _onnx()
    net = _trained_summary().model
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export_onnx(net, tmp_path / "missing" / "m.onnx", N_FEAT)
    with pytest.raises(TypeError, match="nn.Module"):
        export_onnx("not a model", tmp_path / "m.onnx", N_FEAT)
    with pytest.raises(ValueError, match="n_features"):
        export_onnx(net, tmp_path / "m.onnx", 0)
    export_onnx(net, tmp_path / "m.onnx", N_FEAT)
    with pytest.raises(ValueError, match=rf"shape \(n_events, {N_FEAT}\)"):
        predict_onnx(tmp_path / "m.onnx", np.zeros((5, N_FEAT + 1)))
    with pytest.raises(FileNotFoundError, match="no ONNX model"):
        predict_onnx(tmp_path / "other.onnx", np.zeros((5, N_FEAT)))


def test_missing_onnx_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx -> ImportError
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    net = nn.Sequential(nn.Linear(2, 3), VariableSoftmax())
    with pytest.raises(ImportError, match=r"pip install 'inferno\[onnx\]'"):
        export_onnx(net, tmp_path / "m.onnx", 2)
    with pytest.raises(ImportError, match=r"onnxruntime .*inferno\[onnx\]"):
        predict_onnx(tmp_path / "m.onnx", np.zeros((1, 2)))
    assert not (tmp_path / "m.onnx").exists()


def test_exporter_fallback_error_names_onnxscript(tmp_path, monkeypatch):
    """Where torch's TorchScript-based exporter fails (or is gone), the torch.export-based one
    is tried; without onnxscript the error says so, and nothing is written."""
    _onnx()
    real = torch.onnx.export

    def legacy_gone(*args, dynamo=True, **kwargs):
        if not dynamo:
            raise RuntimeError("the TorchScript-based exporter was removed")
        return real(*args, dynamo=dynamo, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", legacy_gone)
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    with pytest.raises(RuntimeError, match=r"removed.*pip install onnxscript"):
        export_onnx(_trained_summary().model, tmp_path / "m.onnx", N_FEAT)
    assert list(tmp_path.iterdir()) == []
