"""StreamingLoader: batches from parquet files streamed in chunks through a bounded shuffle
buffer. Unshuffled, the in-memory loader's batches for any buffer; shuffled (plain or
stratified) with a buffer that holds everything, exactly the in-memory loader's batches for
the same seed, epoch after epoch; files many times the buffer never hold more than a buffer;
len() is the number of batches; INFERNO trains on it (the same losses as in memory)."""
import functools

import numpy as np
import pytest
import torch

from inferno import DataPair, DataSet, ModelWrapper, StratifiedLoader, WeightedDataLoader
from inferno.data.streaming import StreamingLoader
from inferno.loss import InfernoLoss

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
from inferno.data.readers import iter_parquet, read_parquet  # noqa: E402

from test_loss import _analysis, _net  # noqa: E402

N_FILES, PER_FILE = 4, 450


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stream")
    rng = np.random.default_rng(5)
    paths = []
    for f in range(N_FILES):
        lab = rng.choice([0, 1, 2, 10, 11], size=PER_FILE)
        x = rng.normal(size=(PER_FILE, 3)) + lab[:, None] * np.array([0.8, -0.4, 0.3]) / 3
        w = 0.5 + rng.random(PER_FILE)
        cols = {"x0": x[:, 0], "x1": x[:, 1], "x2": x[:, 2], "process": lab, "w": w,
                "w_id_up": w * (1 + 0.1 * np.tanh(x[:, 0])), "w_id_dn": w * (1 - 0.08 * np.tanh(x[:, 0]))}
        paths.append(str(tmp / f"part{f}.parquet"))
        pq.write_table(pa.table(cols), paths[-1], row_group_size=97)
    return paths


KW = dict(label="process", weight="w", extras={"w_id_up": "w_id_up", "w_id_dn": "w_id_dn"})


def _stream(files, **kw):
    return lambda: iter_parquet(files, ["x0", "x1", "x2"], chunk_size=130, **KW)


def _same(a, b):
    a, b = list(a), list(b)
    assert len(a) == len(b)
    for p, q in zip(a, b):
        for u, v in zip(p[:3], q[:3]):
            assert torch.equal(u, v)
        assert p[3].keys() == q[3].keys() and all(torch.equal(p[3][k], q[3][k]) for k in p[3])


def test_unshuffled_stream_equals_the_in_memory_loader_for_any_buffer(files):
    ds = read_parquet(files, ["x0", "x1", "x2"], **KW)
    for buffer in (200, 600, 10_000):
        sl = StreamingLoader(_stream(files), 200, buffer_size=buffer)
        assert len(sl) == len(WeightedDataLoader(ds, 200))
        _same(sl, WeightedDataLoader(ds, 200))
        assert sl.peak_buffer <= max(200, buffer // 200 * 200)


@pytest.mark.parametrize("stratify", [False, True])
def test_shuffled_stream_with_a_whole_buffer_equals_the_in_memory_loader(files, stratify):
    ds = read_parquet(files, ["x0", "x1", "x2"], **KW)
    cls = StratifiedLoader if stratify else WeightedDataLoader
    mem = cls(ds, 300, shuffle=True, seed=7)
    sl = StreamingLoader(_stream(files), 300, shuffle=True, stratify=stratify, buffer_size=N_FILES * PER_FILE, seed=7)
    assert len(sl) == len(mem)
    for _ in range(2):  # two epochs: the same random stream
        _same(sl, mem)


def test_files_many_times_the_buffer_hold_one_buffer(files):
    sl = StreamingLoader(_stream(files), 100, shuffle=True, stratify=True, buffer_size=450, seed=1)
    seen = torch.cat([b[0] for b in sl])
    assert sl.peak_buffer == 400  # a multiple of the batch size, a fraction of the 1800 events
    assert len(seen) == N_FILES * PER_FILE and len(sl) == sum(1 for _ in sl)
    ds = read_parquet(files, ["x0", "x1", "x2"], **KW)  # every event once per epoch
    key = lambda t: sorted(map(tuple, t.tolist()))  # noqa: E731
    assert key(seen) == key(ds.x)
    with pytest.raises(ValueError, match="fewer than the"):  # a label too small for a buffer's batches
        list(StreamingLoader(_stream(files), 2, stratify=True, buffer_size=450))


def test_inferno_trains_on_the_stream_as_in_memory(files):
    ds = read_parquet(files, ["x0", "x1", "x2"], **KW)
    hist = {}
    for name, make in (("memory", lambda: StratifiedLoader(ds, 300, shuffle=True, seed=2)),
                       ("stream", lambda: StreamingLoader(_stream(files), 300, shuffle=True, stratify=True,
                                                          buffer_size=5000, seed=2))):
        torch.manual_seed(0)
        net = _net().float()
        hist[name] = ModelWrapper(net).fit(2, DataPair(make(), make()), functools.partial(torch.optim.Adam, lr=1e-2),
                                           None, cbs=[InfernoLoss(_analysis(mc_stat=True))], progress=False)
    assert hist["stream"]["valid"] == pytest.approx(hist["memory"]["valid"], rel=1e-6)
    assert hist["stream"]["train"] == pytest.approx(hist["memory"]["train"], rel=1e-6)


def test_bad_streams_are_named():
    with pytest.raises(TypeError, match="callable"):
        StreamingLoader([DataSet(np.zeros((3, 1)))], 2)
    with pytest.raises(TypeError, match="chunk 0 of the stream is a ndarray"):
        list(StreamingLoader(lambda: [np.zeros(3)], 2))


def test_reading_ahead_gives_the_same_batches_and_stops_cleanly(files):
    import threading
    make = lambda p: StreamingLoader(_stream(files), 100, shuffle=True, stratify=True, buffer_size=450,  # noqa: E731
                                     seed=3, prefetch=p)
    for p in (1, 3):  # several buffers per epoch, read ahead by a thread or in place
        _same(make(p), make(0))
    it = iter(make(1))
    next(it)
    it.close()  # the consumer stops early: the reading thread ends, nothing hangs
    assert not [t for t in threading.enumerate() if t.name == "inferno-read-ahead"]
    for bad in (-1, 1.7, True, "2", None):
        with pytest.raises(ValueError, match="prefetch must be an integer >= 0"):
            make(bad)


def test_an_error_while_reading_ahead_reaches_the_consumer(files):
    good = next(iter(_stream(files)()))

    def chunks():
        yield good
        raise OSError("file part1.parquet: disk gone")

    for p in (0, 1):
        with pytest.raises(OSError, match="part1.parquet: disk gone"):
            list(StreamingLoader(chunks, 50, buffer_size=100, prefetch=p))


def test_stratified_groups_for_any_labels():
    """Labels counted when they span a small range (negative ones too), sorted otherwise: the
    groups are those of torch.unique in both cases."""
    for labels in ([-3, 5, -3, 7, 5, 5, -3, 7], [0, 10**9, 0, 3, 10**9, 3]):
        y = torch.tensor(labels, dtype=torch.float32).reshape(-1, 1)
        dl = StratifiedLoader(DataSet(torch.zeros(len(labels), 1), y), len(labels), shuffle=False)
        lab = y[:, 0].long()
        assert [g.tolist() for g in dl.groups] == [(lab == v).nonzero().squeeze(-1).tolist() for v in torch.unique(lab)]
