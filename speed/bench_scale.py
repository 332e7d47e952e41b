"""Scaling out (issue 18, "Targets"), as ratios measured in one run; nothing is asserted.

* ``ranks``: data-parallel INFERNO training on the H->tautau problem (``inferno.htautau``,
  ``--htt-n`` events per sample, 200k by default; the Analysis, network and StratifiedLoader of
  inferno-bench, batch 4000, the feature layer's tangents precomputed as inferno-bench does): one process with one torch thread against ``--world`` gloo ranks
  with one thread each (``ShardedLoader`` + ``GradientSync`` + ``InfernoLoss(reduce=global_sum())``),
  the same global batches (strong scaling), and with inferno-bench's batch on every rank (weak
  scaling: twice the global batch). Throughput = training events per second of the best timed
  epoch (training pass only, after a warm-up epoch). Target: 2 ranks >= 1.7x one.
* ``toys``: ``--n-toys`` pseudo-experiments (10^5) of the 2-channel benchmark model (the
  INFERNO workspace of ``docs/benchmark/quick``) and a 31-point profile scan of each, under
  ``max_memory`` = ``--toy-cap`` (4 GiB): wall time and peak RSS of a fresh process; with
  ``--toy-workers 0 2`` also as tasks of a Dask ``LocalCluster`` of two worker processes
  (``profile(..., executor=client)``). Target: under the cap.
* ``stream``: one epoch of ``StreamingLoader`` over ``--stream-n`` events (5M by default) in
  parquet files against the in-memory ``StratifiedLoader`` of the same events (read whole with
  ``read_parquet``), each in a fresh process: the epoch time of iterating the batches, and
  the peak RSS of the process (``ru_maxrss``). Targets: streaming peak RSS < 2 GiB, epoch time
  within 1.5x of the in-memory loader's.

    OMP_NUM_THREADS=1 .venv/bin/python speed/bench_scale.py [ranks] [stream] [--htt-n 200000]
        [--stream-n 5000000] [--json out.json]
"""
from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

ADAM = functools.partial(torch.optim.Adam, lr=1e-3)


# ----------------------------------------------------------------------------- ranks
def _htt(n: int):
    from inferno.htautau.analysis import prepare, to_dataset
    from inferno import htautau as hb
    from inferno.htautau.run import BenchConfig
    cfg = BenchConfig()
    ss = np.random.SeedSequence(0).spawn(2)
    prob = prepare(hb.generate(n, seed=ss[0]), hb.generate(n, seed=ss[1]), seed=0, fractions=cfg.fractions,
                   systematics=cfg.systematics, mc_stat=cfg.mc_stat)
    return prob, cfg, to_dataset(prob.train)


def _rank_worker(rank: int, world: int, rdv: str, n: int, epochs: int, out: str, per_rank: bool) -> None:
    import torch.distributed as dist

    from inferno import DataPair, ModelWrapper, StratifiedLoader
    from inferno import htautau as hb
    from inferno.distributed import GradientSync, ShardedLoader, global_sum
    from inferno.htautau.summaries import build_net
    from inferno.loss import InfernoLoss, stage_tangents

    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{rdv}", rank=rank, world_size=world,
                                timeout=datetime.timedelta(minutes=10))
    prob, cfg, trn = _htt(n)
    torch.manual_seed(0)
    net = build_net("inferno", hb.FeatureLayer.fit(prob.train["primary"]), cfg)
    # as inferno-bench trains: the fixed feature layer's tangents once (every rank, all events)
    trn = trn.with_extras(stage_tangents(prob.analysis, net, trn.x, trn.y))
    # the global batch: inferno-bench's, or (per_rank) inferno-bench's on every rank
    loader = StratifiedLoader(trn, cfg.bs * (world if per_rank else 1), shuffle=True, seed=1)
    if world > 1:
        loader = ShardedLoader(loader, rank, world)
        cbs = [GradientSync(), InfernoLoss(prob.analysis, reduce=global_sum())]
    else:
        cbs = [InfernoLoss(prob.analysis)]
    wr = ModelWrapper(net)
    times = []
    for _ in range(epochs + 1):
        if world > 1:
            dist.barrier()
        t0 = time.perf_counter()
        wr.fit(1, DataPair(loader), ADAM, None, cbs=cbs, progress=False)
        times.append(time.perf_counter() - t0)
    if rank == 0:
        with open(out, "w") as f:
            json.dump(dict(times_s=times[1:], warmup_s=times[0], events=len(trn), batches=len(loader),
                           global_batch=loader.batch_size), f)
    if world > 1:
        dist.destroy_process_group()


def ranks(n: int, world: int, epochs: int) -> dict:
    """One rank, then ``world`` ranks with the same global batch (strong scaling: the same
    training, bit for bit up to the order of the sums) and with inferno-bench's batch on every
    rank (weak scaling: ``world`` times the global batch, as data-parallel training is usually
    run)."""
    import torch.multiprocessing as mp
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        for key, w, per_rank in (("1", 1, False), ("strong", world, False), ("weak", world, True)):
            out = os.path.join(tmp, f"{key}.json")
            t0 = time.perf_counter()
            mp.spawn(_rank_worker, args=(w, os.path.join(tmp, f"rdv{key}"), n, epochs, out, per_rank), nprocs=w,
                     join=True)
            with open(out) as f:
                r = json.load(f)
            r.update(ranks=w, best_s=min(r["times_s"]), wall_s=time.perf_counter() - t0)
            r["events_per_s"] = r["events"] / r["best_s"]
            res[key] = r
            print(f"{w} rank(s) x 1 thread, global batch {r['global_batch']}: {r['events']} training events, "
                  f"{r['batches']} batches, best epoch {r['best_s']:.2f} s (all {' '.join(f'{t:.2f}' for t in r['times_s'])}), "
                  f"{r['events_per_s']:.0f} events/s", flush=True)
    for key in ("strong", "weak"):
        res[f"speedup_{key}"] = res[key]["events_per_s"] / res["1"]["events_per_s"]
    print(f"throughput {world} ranks / 1 rank (target >= 1.7x): {res['speedup_strong']:.2f}x with the same global "
          f"batch, {res['speedup_weak']:.2f}x with the same batch per rank")
    return res


# ----------------------------------------------------------------------------- stream
STREAM_CODE = r"""
import json, resource, sys, time
from inferno import StratifiedLoader, StreamingLoader
from inferno.data.readers import iter_parquet, read_parquet
mode, files, bs, buffer, chunk = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
feats = ["x0", "x1", "x2"]
t0 = time.perf_counter()
if mode == "memory":
    loader = StratifiedLoader(read_parquet(files, feats, label="process", weight="w"), bs, shuffle=True, seed=1)
else:
    chunks = lambda: iter_parquet(files, feats, label="process", weight="w", chunk_size=chunk)
    loader = StreamingLoader(chunks, bs, shuffle=True, stratify=True, buffer_size=buffer, seed=1,
                             n_events=int(sys.argv[6]))
t_setup = time.perf_counter() - t0
t0 = time.perf_counter()
n = 0
for x, y, w in loader:
    n += len(x)
t_epoch = time.perf_counter() - t0
print(json.dumps(dict(mode=mode, events=n, setup_s=t_setup, epoch_s=t_epoch,
                      peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)))
"""


def stream(n: int, n_files: int = 10, bs: int = 4000, buffer: int = 1_000_000, chunk: int = 200_000) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        files, per = [], n // n_files
        t0 = time.perf_counter()
        for i in range(n_files):  # the processes mixed in every file
            lab = rng.integers(0, 4, per)
            cols = {f"x{j}": rng.normal(size=per) + 0.3 * lab for j in range(3)}
            cols.update(process=lab, w=rng.random(per))
            files.append(os.path.join(tmp, f"part{i}.parquet"))
            pq.write_table(pa.table(cols), files[-1], row_group_size=100_000)
        print(f"wrote {n_files} parquet files of {per} events ({time.perf_counter() - t0:.0f} s)", flush=True)
        for mode in ("memory", "stream"):
            r = subprocess.run([sys.executable, "-c", STREAM_CODE, mode, ",".join(files), str(bs), str(buffer),
                                str(chunk), str(per * n_files)], capture_output=True, text=True, check=True)
            res[mode] = json.loads(r.stdout.strip().splitlines()[-1])
            m = res[mode]
            print(f"{mode:<7} {m['events']} events: setup {m['setup_s']:.1f} s, epoch {m['epoch_s']:.1f} s, "
                  f"peak RSS {m['peak_rss_mib']:.0f} MiB", flush=True)
    res["epoch_ratio"] = res["stream"]["epoch_s"] / res["memory"]["epoch_s"]
    res["epoch_ratio_with_setup"] = ((res["stream"]["epoch_s"] + res["stream"]["setup_s"])
                                     / (res["memory"]["epoch_s"] + res["memory"]["setup_s"]))
    print(f"streaming / in-memory epoch: {res['epoch_ratio']:.2f}x (reading included in both: "
          f"{res['epoch_ratio_with_setup']:.2f}x; target <= 1.5x); streaming peak RSS "
          f"{res['stream']['peak_rss_mib']:.0f} MiB (target < 2048)")
    return res


# ----------------------------------------------------------------------------- toys
TOYS_CODE = r"""
import json, resource, sys, time
import torch
from inferno.likelihood import fit, from_pyhf, profile, toys
threads, workers = int(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(threads)
spec = json.load(open(sys.argv[1]))
model, observed = from_pyhf(spec)
n_toys, cap = int(sys.argv[2]), int(float(sys.argv[3]))
client = None
if workers:
    import dask
    from dask.distributed import Client, LocalCluster
    # as docs/scaling.md advises: without Dask's MALLOC_TRIM_THRESHOLD_ in the workers (it turns off glibc's
    # adaptive mmap threshold: the fits' large tensors are fresh mmaps, the fits 2x slower)
    env = {k: v for k, v in dask.config.get("distributed.nanny.pre-spawn-environ").items() if k != "MALLOC_TRIM_THRESHOLD_"}
    dask.config.set({"distributed.nanny.pre-spawn-environ": env})
    client = Client(LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None))
    client.run(torch.set_num_threads, threads)
t0 = time.perf_counter()
main, aux = toys(model, n_toys=n_toys, seed=1, max_memory=cap)
asimov = model.asimov()[0]
sigma = float(fit(model, asimov).poi_unc)
mu = torch.linspace(1.0 - 3 * sigma, 1.0 + 3 * sigma, 31, dtype=torch.float64)
res = profile(model, main, mu, aux=aux, max_memory=cap, on_fail="ignore", executor=client)
seconds = time.perf_counter() - t0
peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
workers_gib = max(client.run(peak).values()) if client is not None else None
print(json.dumps(dict(n_toys=n_toys, points=31, params=model.n_params, bins=model.n_bins, seconds=seconds,
                      converged=float(res.converged.double().mean()), cap_gib=cap / 2**30, workers=workers,
                      peak_rss_gib=peak(), worker_peak_rss_gib=workers_gib)))
"""


def toys_at_scale(n_toys: int, cap: float, threads: int, workers: int = 0) -> dict:
    ws = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "benchmark", "quick", "workspaces",
                      "inferno.json")
    r = subprocess.run([sys.executable, "-c", TOYS_CODE, ws, str(n_toys), str(cap), str(threads), str(workers)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-3000:])
    out = json.loads(r.stdout.strip().splitlines()[-1])
    where = f"{workers} Dask worker processes x {threads} thread(s)" if workers else f"{threads} thread(s)"
    mem = f"peak RSS {out['peak_rss_gib']:.2f} GiB"
    if workers:
        mem += f" (main process), {out['worker_peak_rss_gib']:.2f} GiB (largest worker)"
    print(f"{out['n_toys']} toys x 31-point profile scans of the 2-channel benchmark model ({out['params']} parameters, "
          f"{out['bins']} bins), cap {out['cap_gib']:.1f} GiB per task, {where}: {out['seconds']:.0f} s, "
          f"{mem} (target < 4), {100 * out['converged']:.2f}% of the fits converged")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("parts", nargs="*", default=["ranks", "stream", "toys"], choices=["ranks", "stream", "toys"])
    ap.add_argument("--htt-n", type=int, default=200_000)
    ap.add_argument("--world", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--stream-n", type=int, default=5_000_000)
    ap.add_argument("--n-toys", type=int, default=100_000)
    ap.add_argument("--toy-cap", type=float, default=4 * 2**30, help="max_memory of toys and profile, bytes")
    ap.add_argument("--toy-threads", type=int, default=2)
    ap.add_argument("--toy-workers", type=int, nargs="+", default=[0],
                    help="0: the scans in this process; N: as tasks of a Dask LocalCluster of N worker processes")
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    out = dict(torch=torch.__version__, cores=os.cpu_count())
    t0 = time.perf_counter()
    if "ranks" in args.parts:
        out["ranks"] = ranks(args.htt_n, args.world, args.epochs)
    if "stream" in args.parts:
        out["stream"] = stream(args.stream_n)
    if "toys" in args.parts:
        out["toys"] = {w: toys_at_scale(args.n_toys, args.toy_cap, args.toy_threads, w) for w in args.toy_workers}
    out["wall_s"] = time.perf_counter() - t0
    print(f"wall time {out['wall_s']:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
