"""One BCE epoch on 200k toy events through ``ModelWrapper`` vs a bare PyTorch loop.

Both loops see the same pre-loaded tensors, batch size 2000, a 3-100-100-1 ReLU network and
Adam; the wrapper runs with its default LossTracker and a (quiet) progress bar. Epochs are
interleaved and the median over repeats is compared. Target: ratio <= 1.3.

    python speed/bench_loop.py [--repeats 7] [--threads N]
"""
from __future__ import annotations

import argparse
import functools
import statistics
import time

import torch
from torch import nn

from inferno import DataPair, ModelWrapper, ProgressBar, WeightedDataLoader
from inferno.paper import get_paper_data


def net() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU(),
                         nn.Linear(100, 1))


def bare_epoch(model, opt, loss, x, y, bs, gen):
    model.train()
    perm = torch.randperm(len(x), generator=gen)
    xs, ys = x[perm], y[perm]
    tot = 0.0
    for i in range(0, len(x), bs):
        xb, yb = xs[i:i + bs], ys[i:i + bs]
        out = model(xb)
        lv = loss(out, yb)
        opt.zero_grad(set_to_none=True)
        lv.backward()
        opt.step()
        tot = tot + lv.detach() * len(xb)
    return float(tot) / len(x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = get_paper_data(200_000, bs=2000, seed=0)
    trn = data.trn_dl
    x, y = trn.dataset.x, trn.dataset.y
    dp = DataPair(WeightedDataLoader(trn.dataset, 2000, shuffle=True, seed=1))

    torch.manual_seed(0)
    m_wr, m_bare = net(), net()
    wr = ModelWrapper(m_wr)
    adam = functools.partial(torch.optim.Adam, lr=1e-3)
    opt_bare = adam(m_bare.parameters())
    loss = nn.BCEWithLogitsLoss()
    gen = torch.Generator().manual_seed(1)

    t_wr, t_bare = [], []
    bare_epoch(m_bare, opt_bare, loss, x, y, 2000, gen)  # warm-up
    wr.fit(1, dp, adam, loss, cbs=[ProgressBar(quiet=True)])
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        bare_epoch(m_bare, opt_bare, loss, x, y, 2000, gen)
        t_bare.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        wr.fit(1, dp, adam, loss, cbs=[ProgressBar(quiet=True)])
        t_wr.append(time.perf_counter() - t0)
    mb, mw = statistics.median(t_bare), statistics.median(t_wr)
    print(f"threads={torch.get_num_threads()} events={len(x)} batches={len(trn)}")
    print(f"bare loop     : median {mb * 1e3:8.1f} ms/epoch  (all: {[round(t*1e3) for t in t_bare]})")
    print(f"ModelWrapper  : median {mw * 1e3:8.1f} ms/epoch  (all: {[round(t*1e3) for t in t_wr]})")
    print(f"ratio wrapper/bare = {mw / mb:.3f}  (target <= 1.3)")


if __name__ == "__main__":
    main()
