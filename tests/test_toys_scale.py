"""Toys at scale (inferno.likelihood.toys): ``max_memory`` chunks the toys' fits (coverage) and
their Poisson draws (toys) without changing a number, bounds the peak memory, and 10^4 toys of a
small model run in a few seconds.

The peak memory is read from torch's CPU allocator through the profiler (``profile_memory``:
every allocation and free of a tensor, with the running total of bytes allocated since the
profiler started). That counts exactly the tensors the fits allocate, independent of what the
process held before; the resident set size (``resource``) includes the allocator's cached
pages and other threads' work and is too noisy for a factor-of-a-few comparison, and
``tracemalloc`` does not see torch's allocations at all."""
import json
import os
import tempfile
import time

import numpy as np
import pytest
import torch

from inferno.likelihood import Channel, HistoSys, Model, NormFactor, NormSys, Sample, StatError, coverage, toys
from inferno.likelihood.toys import toy_memory


def _model(code="4p"):
    return Model([Channel("sr", [
        Sample("sig", [5.0, 10.0, 20.0, 10.0], [NormFactor("mu")]),
        Sample("bkg", [100.0, 60.0, 30.0, 10.0],
               [NormSys("xs", hi=1.1, lo=0.9), HistoSys("shape", hi=[105.0, 61.0, 29.0, 9.0], lo=[95.0, 59.0, 31.0, 11.0]),
                StatError("mc", sigma=[3.0, 2.0, 1.5, 1.0])])])], poi="mu", histosys_code=code)


def _peak_bytes(fn):
    """The peak of the bytes allocated by torch's CPU allocator while ``fn`` runs (above what
    was allocated before)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    fd, path = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    try:
        prof.export_chrome_trace(path)
        with open(path) as f:
            events = json.load(f)["traceEvents"]
    finally:
        os.remove(path)
    totals = [e["args"]["Total Allocated"] for e in events if e.get("name") == "[memory]"]
    assert totals, "the profiler recorded no allocation"
    return max(totals)


@pytest.mark.parametrize("code", ["4p", 0])
def test_chunked_coverage_equals_one_batch(code):
    """Chunks of ~40 toys give every per-toy number of the one-batch run bit for bit (code 0:
    with the kinked parameter's multistart)."""
    m = _model(code)
    n = 2000 if code == "4p" else 500
    one = coverage(m, m.params(mu=1.0), n_toys=n, seed=5, max_memory=None)
    stored = 8 * n * (m.n_bins + len(m.aux_names) + 4)
    cap = stored + 40 * toy_memory(m)
    chunked = coverage(m, m.params(mu=1.0), n_toys=n, seed=5, max_memory=cap)
    assert one.n_toys == chunked.n_toys and one.n_failed == chunked.n_failed
    for a, b in ((one.delta_nll, chunked.delta_nll), (one.mu_hat, chunked.mu_hat), (one.contains, chunked.contains)):
        assert np.array_equal(a, b)
    assert chunked.coverage == one.coverage


def test_chunked_toys_are_the_same_toys():
    """The Poisson counts drawn in chunks (a cap of ~3 toys' rates) are those of one draw, and
    the generator is left where one draw leaves it (the aux data are equal too)."""
    m = _model()
    p = m.params(mu=1.3)
    a = toys(m, p, 1001, seed=7, max_memory=None)
    b = toys(m, p, 1001, seed=7, max_memory=3 * 8 * m.n_bins)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    toys(m, p, 50, seed=g1, max_memory=None)
    toys(m, p, 50, seed=g2, max_memory=100)
    assert torch.equal(torch.rand(3, generator=g1), torch.rand(3, generator=g2))


def test_a_small_cap_lowers_the_peak_memory():
    """600 toys: the fits' peak with a cap of ~40 toys' estimate is several times lower than
    in one batch, and below the cap; the estimate per toy bounds the measured one."""
    m = _model()
    p = m.params(mu=1.0)
    n = 600
    main, aux = toys(m, p, n, seed=2)
    per_toy = toy_memory(m)
    stored = 8 * (main.numel() + aux.numel() + 4 * n)
    cap = stored + 40 * per_toy
    full = _peak_bytes(lambda: coverage(m, p, toy_data=(main, aux), max_memory=None))
    small = _peak_bytes(lambda: coverage(m, p, toy_data=(main, aux), max_memory=cap))
    # seen: full 3.08 MB (5.1 kB per toy), capped 0.24 MB, cap 0.70 MB (estimate 15.8 kB per toy)
    assert small < full / 4
    assert small < cap
    assert full / n < per_toy


def test_ten_thousand_toys_in_seconds():
    """10^4 toys of the small model, under the default cap, in well under 20 s (seen: ~1.5 s
    with one thread; 10^5 toys: see the report in the docs)."""
    m = _model()
    t0 = time.perf_counter()
    res = coverage(m, m.params(mu=1.0), n_toys=10_000, seed=9)
    dt = time.perf_counter() - t0
    assert res.n_toys + res.n_failed == 10_000 and res.n_failed < 10
    assert abs(res.coverage - res.expected) < 4 * res.error
    assert dt < 20


def test_bad_max_memory():
    m = _model()
    for bad in (0, -5, 1.5, True, "1GB"):
        with pytest.raises(ValueError, match="max_memory"):
            coverage(m, n_toys=10, max_memory=bad)
        with pytest.raises(ValueError, match="max_memory"):
            toys(m, n_toys=10, max_memory=bad)
    with pytest.raises(ValueError, match="max_memory=1000 bytes is below"):
        coverage(m, n_toys=100, max_memory=1000)


def test_profile_scans_of_many_toys_in_chunks_equal_one_batch():
    """profile(..., max_memory): 300 toys x 11 scan points cut into chunks of a few toys give
    the numbers of one batch, bit for bit; a cap below one data set's scan is a named error."""
    from inferno.likelihood import profile

    model = _model()
    main, aux = toys(model, n_toys=300, seed=3)
    mu = torch.linspace(0.0, 2.0, 11, dtype=torch.float64)
    one = profile(model, main, mu, aux=aux)
    small = 11 * toy_memory(model, "kinked") * 7  # 7 toys per chunk
    chunked = profile(model, main, mu, aux=aux, max_memory=small)
    for f in ("nll", "params", "converged", "n_iter"):
        assert torch.equal(getattr(one, f), getattr(chunked, f)), f
    assert chunked.nll.shape == (300, 11)
    with pytest.raises(ValueError, match="max_memory = 10 bytes is below one data set's scan"):
        profile(model, main, mu, aux=aux, max_memory=10)


def test_toys_as_tasks_of_an_executor_equal_one_batch():
    """profile and coverage with an executor (threads, and a LocalCluster of two worker
    processes) give every number of the one-batch run; a task's error reaches the caller."""
    from concurrent.futures import ThreadPoolExecutor

    from inferno.likelihood import profile
    from inferno.likelihood.toys import map_tasks, n_tasks

    m = _model()
    p = m.params(mu=1.0)
    main, aux = toys(m, p, n_toys=301, seed=2)
    mu = torch.linspace(0.0, 2.5, 6, dtype=torch.float64)
    ref = profile(m, main, mu, aux=aux)
    cov = coverage(m, p, n_toys=301, seed=4, max_memory=None)

    def same(r):
        for f in ("nll", "params", "converged", "n_iter"):
            assert torch.equal(getattr(r, f), getattr(ref, f)), f

    class Counting(ThreadPoolExecutor):
        tasks = 0

        def submit(self, *a, **k):
            Counting.tasks += 1
            return super().submit(*a, **k)

    with Counting(3) as ex:
        assert n_tasks(ex) == 3
        same(profile(m, main, mu, aux=aux, executor=ex))
        assert Counting.tasks == 3
        same(profile(m, main, mu, aux=aux, executor=ex, max_memory=20 * 6 * toy_memory(m)))
        assert Counting.tasks == 3 + 16  # chunks of 20 toys under the cap
        c = coverage(m, p, n_toys=301, seed=4, max_memory=None, executor=ex)
        assert np.array_equal(c.delta_nll, cov.delta_nll) and np.array_equal(c.mu_hat, cov.mu_hat)
        with pytest.raises(ZeroDivisionError):
            map_tasks(ex, lambda a: 1 / a, [(1,), (0,)])
        # data sets with two leading dimensions, aux broadcast over the outer one or given per data set
        obs = main[:16].reshape(4, 4, -1)
        for a in (aux[:4], aux[:16].reshape(4, 4, -1)):
            one4 = profile(m, obs, mu, aux=a)
            for ex4 in (ex, ThreadPoolExecutor(4)):
                got = profile(m, obs, mu, aux=a, executor=ex4)
                assert torch.equal(got.nll, one4.nll) and torch.equal(got.params, one4.params)
    distributed = pytest.importorskip("dask.distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cl, \
            distributed.Client(cl) as client:
        assert n_tasks(client) == 2 and os.getpid() not in set(client.run(os.getpid).values())
        same(profile(m, main, mu, aux=aux, executor=client))
    Counting.tasks = 0
    with Counting(1) as ex:  # one worker: one task, on the executor all the same
        same(profile(m, main, mu, aux=aux, executor=ex))
        assert Counting.tasks == 1
