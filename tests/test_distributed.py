"""Data-parallel INFERNO on torch.distributed (gloo, two CPU processes): every rank computes the
loss of the global batch, and the averaged gradients equal the single-process gradient of the
global batch; a rank whose shard lacks a process; ModelWrapper.fit with ShardedLoader and
GradientSync ends with the single-process weights (3 epochs, uneven shards); a rank whose
checks fail, and a rank that is gone, end every rank with an error; the errors of misuse."""
import datetime
from pathlib import Path
import functools
import os
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from inferno import DataPair, DataSet, ModelWrapper, StratifiedLoader, WeightedDataLoader
from inferno.distributed.reduce import GradientSync, ShardedLoader, global_sum
from inferno.loss import InfernoLoss, inferno_loss

from test_loss import _analysis, _batch, _net

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")
WORLD = 2
ADAM = functools.partial(torch.optim.Adam, lr=1e-2)


def _grads(net):
    return torch.cat([p.grad.reshape(-1) for p in net.parameters()])


def _shard(rank, lacking):
    """This rank's events of the test batch: every other row, or (``lacking``) all the signal
    (label 1) on rank 0 and none on rank 1."""
    x, lab, w, weights = _batch()
    if lacking:
        keep = (lab == 1) | (torch.arange(len(lab)) % WORLD == 0) if rank == 0 else \
               (lab != 1) & (torch.arange(len(lab)) % WORLD == 1)
    else:
        keep = torch.arange(len(lab)) % WORLD == rank
    return x[keep], lab[keep], w[keep], {k: v[keep] for k, v in weights.items()}


def _data():
    x, lab, w, weights = _batch()
    ds = DataSet(x, lab, w, extras=weights)
    ds.x, ds.y, ds.w = x, lab[:, None].to(torch.float64), w[:, None]  # float64 (DataSet stores float32)
    ds.extras = weights
    return ds


def _fit(cbs_first, loss_cb, shard):
    net = _net()
    if shard:  # rank 1 starts elsewhere: GradientSync must hand it rank 0's weights
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.1 * dist.get_rank())
    make = lambda: WeightedDataLoader(_data(), 301, shuffle=True, seed=3)  # noqa: E731  (shards of 151 and 150)
    trn, val = (ShardedLoader(make()), ShardedLoader(make())) if shard else (make(), make())
    hist = ModelWrapper(net).fit(3, DataPair(trn, val), ADAM, None, cbs=[*cbs_first, loss_cb], progress=False)
    return torch.cat([p.detach().reshape(-1) for p in net.parameters()]), hist


def _worker(rank, rdv, out):
    sys.path.insert(0, os.path.dirname(__file__))
    dist.init_process_group("gloo", init_method=f"file://{rdv}", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=5))
    try:
        res = {}
        for lacking, same in ((False, True), (True, True), (False, False)):
            analysis = _analysis(mc_stat=True, pois=("mu", "k_tt"), loss="trace")
            net = _net()
            x, lab, w, weights = _shard(rank, lacking)
            loss = inferno_loss(analysis, net, x, lab, w, weights=weights, reduce=global_sum(same_loss=same))
            loss.backward()
            g = _grads(net)
            dist.all_reduce(g)
            res[lacking, same] = (loss.item(), g / WORLD)
        for same in (True, False):  # a function of the sums that differs between the ranks
            t = torch.ones(3, dtype=torch.float64, requires_grad=True)
            ((rank + 1) * global_sum(same_loss=same)(t)).sum().backward()
            res["grad", same] = t.grad.clone()
        x, lab, w, weights = _shard(rank, False)
        if rank == 1:
            lab = lab.clone()
            lab[0] = 7  # a label of no process, on rank 1 only
        try:
            inferno_loss(analysis, _net(), x, lab, w, weights=weights, reduce=global_sum())
        except ValueError as e:
            res["error"] = str(e)
        analysis = _analysis(mc_stat=True)
        res["fit"] = _fit([GradientSync()], InfernoLoss(analysis, reduce=global_sum()), shard=True)
        if rank == 0:  # rank 1 never joins this batch's collective (it died): no hang, an error
            x, lab, w, weights = _shard(rank, False)
            try:
                inferno_loss(analysis, _net(), x, lab, w, weights=weights, reduce=global_sum())
            except RuntimeError as e:
                res["timeout"] = str(e)
        torch.save(res, os.path.join(out, f"rank{rank}.pt"))
    finally:
        if rank == 1:
            dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist")
    mp.spawn(_worker, args=(str(tmp / "rdv"), str(tmp)), nprocs=WORLD, join=True)
    return [torch.load(tmp / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


@pytest.mark.parametrize("lacking, same", [(False, True), (True, True), (False, False)])
def test_every_rank_has_the_global_loss_and_gradient(ranks, lacking, same):
    """A shard lacking a process; the backward without (same_loss) and with communication."""
    analysis = _analysis(mc_stat=True, pois=("mu", "k_tt"), loss="trace")
    net = _net()
    x, lab, w, weights = _batch()
    loss = inferno_loss(analysis, net, x, lab, w, weights=weights)
    loss.backward()
    g_ref = _grads(net)
    for r in range(WORLD):
        l_r, g_r = ranks[r][lacking, same]
        assert l_r == pytest.approx(float(loss), rel=1e-10), (r, lacking)
        assert float((g_r - g_ref).norm() / g_ref.norm()) < 1e-10, (r, lacking)


def test_the_sum_backward_with_and_without_communication(ranks):
    """d/dt of (rank + 1) * sum_ranks(t): with same_loss=False every rank gets the sum of the ranks'
    upstream gradients (1 + 2); same_loss=True assumes they are equal (world_size times its own)."""
    for r in range(WORLD):
        assert torch.equal(ranks[r]["grad", False], torch.full((3,), 3.0, dtype=torch.float64))
        assert torch.equal(ranks[r]["grad", True], torch.full((3,), 2.0 * (r + 1), dtype=torch.float64))


def test_sharded_loader_gathers_the_rows_of_slicing_each_batch():
    """The index path (a rank gathers its rows only) gives the rows of slicing every whole batch."""
    ds = _data()
    ds = ds.with_extras({"e": torch.arange(len(ds), dtype=torch.float32)})
    for make in (lambda: WeightedDataLoader(ds, 70, shuffle=False), lambda: WeightedDataLoader(ds, 70, shuffle=True, seed=3),
                 lambda: StratifiedLoader(ds, 70, shuffle=True, seed=3)):
        for world in (2, 3):
            for r in range(world):
                got = list(ShardedLoader(make(), r, world))
                ref = [(b[0][r::world], b[1][r::world], b[2][r::world], b[3]["e"][r::world]) for b in make()]
                assert len(got) == len(ref)
                for g, b in zip(got, ref):
                    assert all(torch.equal(u, v) for u, v in zip((*g[:3], g[3]["e"]), b))


def test_fit_on_two_ranks_equals_one_process(ranks):
    ref, hist = _fit([], InfernoLoss(_analysis(mc_stat=True)), shard=False)
    for r in range(WORLD):
        p_r, h_r = ranks[r]["fit"]
        assert float((p_r - ref).abs().max()) < 1e-6, r
        assert h_r["valid"] == pytest.approx(hist["valid"], rel=1e-9)


def test_a_failing_shard_fails_every_rank(ranks):
    assert "labels [7] belong to no process" in ranks[1]["error"]
    assert "another rank failed its checks" in ranks[0]["error"]
    assert ranks[0]["timeout"]  # rank 1 gone before the collective: rank 0 ends with gloo's timeout error


def test_sharded_loader_and_gradient_sync_errors():
    with pytest.raises(ValueError, match="rank must be in"):
        ShardedLoader(WeightedDataLoader(_data(), 300), rank=2, world_size=2)
    loader = ShardedLoader(WeightedDataLoader(_data(), 300), rank=1, world_size=2)
    rows = [len(b[0]) for b in loader]
    assert len(loader) == 3 and rows == [150, 150, 150]
    with pytest.raises(RuntimeError, match="not initialised"):
        global_sum()


def test_torchrun_example_of_the_docs(tmp_path):
    """docs/scaling.md's train_ddp.py under torchrun: two ranks, three epochs."""
    import re
    import subprocess
    text = (Path(__file__).resolve().parents[1] / "docs" / "scaling.md").read_text()
    code = next(b for b in re.findall(r"```py\n(.*?)```", text, re.S) if b.startswith("# train_ddp.py"))
    (tmp_path / "train_ddp.py").write_text(code)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        str(tmp_path / "train_ddp.py")], capture_output=True, text=True, env=env, timeout=300,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("validation loss per epoch:")]
    assert len(lines) == 1  # rank 0 alone prints
    losses = eval(lines[0].split(":", 1)[1])
    assert len(losses) == 3 and all(v > 0 for v in losses)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_loss_equals_cpu():
    """The one loss on a GPU: the same loss and gradient as on the CPU (float64)."""
    analysis = _analysis(mc_stat=True, pois=("mu", "k_tt"), loss="trace")
    x, lab, w, weights = _batch()
    out = {}
    for dev in ("cpu", "cuda"):
        net = _net().to(dev)
        loss = inferno_loss(analysis, net, x.to(dev), lab.to(dev), w.to(dev),
                            weights={k: v.to(dev) for k, v in weights.items()})
        loss.backward()
        out[dev] = (loss.item(), _grads(net).cpu())
    assert out["cuda"][0] == pytest.approx(out["cpu"][0], rel=1e-10)
    assert float((out["cuda"][1] - out["cpu"][1]).norm() / out["cpu"][1].norm()) < 1e-9
