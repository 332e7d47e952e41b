"""Speed and memory of the one INFERNO loss, as ratios measured in one run (issue 16, "Targets").

Epoch = one training pass and one validation pass, ``ModelWrapper.fit(1, ...)``, Adam lr 1e-3.
The runs of a problem are interleaved; each is warmed up with one epoch, then timed
``--repeats`` times; the best (smallest) time is kept and the ratio is best / best of BCE, on
the same machine, in the same process, with the same ``torch.set_num_threads`` (one table per
``--threads`` value). Nothing is asserted: the script prints the tables (and, with ``--json``,
writes the numbers); the targets are

* paper configuration (``inferno.paper``: 200k training + 200k validation events, batch 2000):
  ``bce`` (3-100-100-1 + BCEWithLogitsLoss), ``paper_inferno`` (3-100-100-10 +
  VariableSoftmax(0.1), ``PaperInferno.from_benchmark(4)``), ``general`` (same net,
  ``InfernoLoss`` on the equivalent ``Analysis``: signal and background, r and lambda on the
  background, constraints 0.4 and 1, background rate 1000 +- 100). Target general <= 2.2x bce.
  The two INFERNO losses are compared once on one batch (general x 50^2 = paper_inferno: the POI
  is a signal strength there, the signal yield here);
* H->tautau problem (``inferno.htautau``, 20k events per sample, StratifiedLoader batch 4000,
  the networks and the Analysis of ``inferno-bench``: tes, jes, tau_id, ttbar_model, MC
  statistics, control region): ``bce``, ``inferno`` (as inferno-bench trains it: the fixed
  feature layer's tangents precomputed once per data set, ``stage_tangents``, whose time is
  printed) and ``inferno_stage`` (those tangents in every batch). Target inferno <= 4x bce;
* ``--memory``: peak RSS increase over one INFERNO epoch and one BCE epoch on the H->tautau
  problem at 200k events per sample, each in a fresh subprocess: after data generation and a
  warm-up batch, freed heap is given back (``malloc_trim``) and the high-water mark reset
  (``/proc/self/clear_refs``); the increase is ``ru_maxrss`` after the epoch minus the RSS
  before it. Target ratio <= 2 (the ratio of the absolute peaks is printed too). Adds about 1 min on 2 cores (each
  subprocess spends ~20 s generating 2 x 200k events per sample, then ~2 s / ~9 s in its epochs);
* ``--pytorch-inferno PATH`` (a checkout of pytorch_inferno 0.2.2, e.g. ``git archive v0.2.2``):
  its exact ``PaperInferno`` epoch (benchmark 4, same net, its own ``get_paper_data(200000,
  bs=2000)``: 200k + 200k events, its per-event DataLoader included), run by ``--pi-python``
  (a separate venv: torch, "fastcore<1.8" (typedispatch), "fastprogress<1.1", numpy, pandas,
  scipy, matplotlib, seaborn) in a subprocess. Target:
  general >= 40x faster. Adds about 2.5 min per thread count (a ~30 s epoch, 1 + repeats times).

    OMP_NUM_THREADS=1 .venv/bin/python speed/bench_loss.py [--repeats 3] [--threads 1 2] [--memory]
        [--pytorch-inferno PATH] [--pi-python /tmp/pi_venv/bin/python] [--json out.json]
"""
from __future__ import annotations

import argparse
import ctypes
import functools
import gc
import itertools
import json
import os
import resource
import subprocess
import sys
import time
from typing import Callable, Dict, List

import numpy as np
import torch
from torch import nn
from torch.distributions import Normal

from inferno import DataPair, DataSet, ModelWrapper, PaperInferno, VariableSoftmax, WeightedDataLoader
from inferno import htautau as hb
from inferno.htautau.analysis import prepare, to_dataset
from inferno.htautau.run import BenchConfig
from inferno.data import StratifiedLoader
from inferno.htautau.summaries import _classifier_dataset, build_net
from inferno.likelihood import NormFactor
from inferno.loss import Analysis, InfernoLoss, Process, stage_tangents
from inferno.nuisance import ShapeNuisance, shift_feature
from inferno.paper import get_paper_data
from inferno.paper.callbacks import _PaperL

PAPER_N, PAPER_BS, HTT_N, HTT_MEM_N = 200_000, 2000, 20_000, 200_000
ADAM = functools.partial(torch.optim.Adam, lr=1e-3)
F64 = torch.float64


# ----------------------------------------------------------------------------- paper configuration
def paper_net(n_out: int) -> nn.Module:
    body = [nn.Linear(3, 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU(), nn.Linear(100, n_out)]
    return nn.Sequential(*body) if n_out == 1 else nn.Sequential(*body, VariableSoftmax(0.1))


def paper_analysis() -> Analysis:
    """Benchmark 4 as an Analysis: the POI is the signal strength (yield 50 x mu)."""
    shapes = [ShapeNuisance("r", shift_feature(0), on="b", nominal=0.0, constraint=0.4),
              ShapeNuisance("l", _PaperL(3.0), on="b", nominal=3.0, constraint=1.0)]
    return Analysis([Process("signal", 1, 50.0, [NormFactor("mu")]),
                     Process("background", 0, 1000.0, [NormFactor("b_norm")])], shapes, poi="mu",
                    parameters={"b_norm": {"constraint": Normal(torch.tensor(1.0, dtype=F64),
                                                                torch.tensor(0.1, dtype=F64))}})


def _runner(model: nn.Module, data: DataPair, loss, cb) -> Callable[[], None]:
    wr = ModelWrapper(model)
    return lambda: wr.fit(1, data, ADAM, loss, cbs=[] if cb is None else [cb], progress=False)


def paper_runs() -> Dict[str, Callable[[], None]]:
    dp = get_paper_data(PAPER_N, bs=PAPER_BS, seed=0, n_val=PAPER_N)
    trn, val = dp.trn_dl.dataset, dp.val_dl.dataset
    data = lambda: DataPair(WeightedDataLoader(trn, PAPER_BS, shuffle=True, seed=1),  # noqa: E731
                            WeightedDataLoader(val, PAPER_BS))
    torch.manual_seed(0)
    runs = {"bce": _runner(paper_net(1), data(), nn.BCEWithLogitsLoss(), None)}
    torch.manual_seed(0)
    runs["paper_inferno"] = _runner(paper_net(10), data(), None, PaperInferno.from_benchmark(4))
    torch.manual_seed(0)
    runs["general"] = _runner(paper_net(10), data(), None, InfernoLoss(paper_analysis()))
    x, y, _ = next(iter(WeightedDataLoader(trn, PAPER_BS)))
    one = DataSet(x, y)
    vals = {}
    for name, cb in (("paper_inferno", PaperInferno.from_benchmark(4)), ("general", InfernoLoss(paper_analysis()))):
        torch.manual_seed(0)
        loader = WeightedDataLoader(one, PAPER_BS)
        hist = ModelWrapper(paper_net(10)).fit(1, DataPair(loader, loader), functools.partial(torch.optim.Adam, lr=0.0),
                                               None, cbs=[cb], progress=False)
        vals[name] = hist["valid"][0]
    g = vals["general"] * 50.0 ** 2
    print(f"check, one batch of {PAPER_BS}: paper_inferno {vals['paper_inferno']:.10g}, general x 50^2 {g:.10g}, "
          f"relative difference {abs(g / vals['paper_inferno'] - 1):.2e}")
    return runs


# ----------------------------------------------------------------------------- H->tautau problem
def htt_problem(n: int, seed: int = 0):
    cfg = BenchConfig()
    ss = np.random.SeedSequence(seed).spawn(2)
    prob = prepare(hb.generate(n, seed=ss[0]), hb.generate(n, seed=ss[1]), seed=seed, fractions=cfg.fractions,
                   systematics=cfg.systematics, mc_stat=cfg.mc_stat)
    return prob, cfg


def htt_setup(kind: str, prob, cfg, loader=StratifiedLoader):
    """(model, DataPair, loss, callback) of ``kind`` ('bce', 'inferno': as inferno-bench trains it, the
    feature layer's tangents precomputed once, :func:`~inferno.loss.stage_tangents`; or
    'inferno_stage': those tangents computed in every batch)."""
    torch.manual_seed(0)
    net = build_net("inferno" if kind.startswith("inferno") else kind, hb.FeatureLayer.fit(prob.train["primary"]), cfg)
    if kind.startswith("inferno"):
        trn, val, loss, cb = to_dataset(prob.train), to_dataset(prob.valid), None, InfernoLoss(prob.analysis)
        if kind == "inferno":
            t0 = time.perf_counter()
            trn, val = (d.with_extras(stage_tangents(prob.analysis, net, d.x, d.y)) for d in (trn, val))
            print(f"stage_tangents of {len(trn) + len(val)} events (once, before training): "
                  f"{time.perf_counter() - t0:.2f} s")
    else:
        trn, val = _classifier_dataset(prob.train, kind), _classifier_dataset(prob.valid, kind)
        loss, cb = nn.BCEWithLogitsLoss(), None
    return net, DataPair(loader(trn, cfg.bs, shuffle=True, seed=1), loader(val, cfg.bs, shuffle=False)), loss, cb


def htt_runs() -> Dict[str, Callable[[], None]]:
    prob, cfg = htt_problem(HTT_N)
    print(f"H->tautau: {HTT_N} events per sample; signal region: training {len(prob.train['label'])}, "
          f"validation {len(prob.valid['label'])} events, batch {cfg.bs}")
    return {k: _runner(*htt_setup(k, prob, cfg)) for k in ("bce", "inferno", "inferno_stage")}


# ----------------------------------------------------------------------------- timing
def best_times(runs: Dict[str, Callable[[], None]], repeats: int) -> Dict[str, List[float]]:
    for run in runs.values():  # warm-up: allocator, first-call overheads
        run()
    times: Dict[str, List[float]] = {k: [] for k in runs}
    for _ in range(repeats):
        for k, run in runs.items():
            t0 = time.perf_counter()
            run()
            times[k].append(time.perf_counter() - t0)
    return times


def table(title: str, times: Dict[str, List[float]], ref: str = "bce") -> Dict[str, Dict[str, float]]:
    best = {k: min(v) for k, v in times.items()}
    print(f"\n{title}\n{'run':<16} {'best [s]':>9} {'x ' + ref:>9}   all [s]")
    for k, t in best.items():
        print(f"{k:<16} {t:>9.3f} {t / best[ref]:>9.2f}   {' '.join(f'{v:.3f}' for v in times[k])}")
    return {k: dict(best_s=t, ratio=t / best[ref], times_s=times[k]) for k, t in best.items()}


# ----------------------------------------------------------------------------- memory (subprocess)
class _FirstBatch(StratifiedLoader):
    """The first batch of a StratifiedLoader only (the warm-up)."""

    def __len__(self) -> int:
        return 1

    def __iter__(self):
        return itertools.islice(super().__iter__(), 1)


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))


def memory_child(kind: str) -> None:
    t0 = time.perf_counter()
    prob, cfg = htt_problem(HTT_MEM_N)
    t_gen = time.perf_counter() - t0
    net, data, loss, cb = htt_setup(kind, prob, cfg)
    wr = ModelWrapper(net)
    warm = _FirstBatch(data.trn_dl.dataset, cfg.bs, seed=1)
    wr.fit(1, DataPair(warm), ADAM, loss, cbs=[] if cb is None else [cb], progress=False)
    gc.collect()
    try:  # give freed heap memory back (glibc), else the epoch reuses what the warm-up left resident
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:  # reset the high-water mark (Linux >= 4.0): ru_maxrss is then the peak from here on
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base, reset = _rss_kib(), True
    except OSError:
        base, reset = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, False
    t1 = time.perf_counter()
    wr.fit(1, data, ADAM, loss, cbs=[] if cb is None else [cb], progress=False)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(dict(kind=kind, base_kib=base, peak_kib=peak, increase_kib=peak - base, reset=reset,
                          epoch_s=time.perf_counter() - t1, generate_s=t_gen,
                          train_events=len(data.trn_dl.dataset), valid_events=len(data.val_dl.dataset))))


def memory(threads: int) -> Dict[str, Dict]:
    out = {}
    for kind in ("bce", "inferno"):
        cmd = [sys.executable, __file__, "--_memory-child", kind, "--threads", str(threads)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        out[kind] = json.loads(res.stdout.strip().splitlines()[-1])
    b, i = out["bce"], out["inferno"]
    print(f"\npeak memory, H->tautau {HTT_MEM_N} events per sample ({b['train_events']} training + "
          f"{b['valid_events']} validation events for BCE, {i['train_events']} + {i['valid_events']} for INFERNO), "
          f"{threads} thread(s); ru_maxrss {'reset' if b['reset'] else 'NOT reset'} before the epoch")
    print(f"{'run':<10} {'RSS before [MiB]':>17} {'peak [MiB]':>11} {'increase [MiB]':>15} {'epoch [s]':>10}")
    for k, r in out.items():
        print(f"{k:<10} {r['base_kib'] / 1024:>17.1f} {r['peak_kib'] / 1024:>11.1f} "
              f"{r['increase_kib'] / 1024:>15.1f} {r['epoch_s']:>10.2f}")
    ratio = i["increase_kib"] / max(b["increase_kib"], 1)
    print(f"inferno / bce: increase {ratio:.2f}x (target <= 2), peak {i['peak_kib'] / b['peak_kib']:.2f}x")
    return dict(runs=out, increase_ratio=ratio, peak_ratio=i["peak_kib"] / b["peak_kib"])


# ----------------------------------------------------------------------------- pytorch_inferno (its venv)
PI_CODE = r"""
import json, sys, time
import torch
from torch import nn
from torch.distributions import Normal
from fastcore.all import partialler
from pytorch_inferno.data import get_paper_data
from pytorch_inferno.inferno import PaperInferno, VariableSoftmax
from pytorch_inferno.model_wrapper import ModelWrapper
threads, repeats = int(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(threads)
torch.manual_seed(0)
data = get_paper_data(200000, bs=2000)
net = nn.Sequential(nn.Linear(3, 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU(), nn.Linear(100, 10),
                    VariableSoftmax(0.1))
wr = ModelWrapper(net)
cb = PaperInferno(float_r=True, float_l=True, shape_aux=[Normal(0, 0.4), Normal(0, 1.0)], b_norm_aux=[Normal(0, 100)])
times = []
for i in range(repeats + 1):
    t0 = time.perf_counter()
    wr.fit(1, data=data, opt=partialler(torch.optim.Adam, lr=1e-3), loss=None, cbs=[cb])
    times.append(time.perf_counter() - t0)
t0 = time.perf_counter()
for dl in (data.trn_dl, data.val_dl):
    for b in dl:
        pass
print(json.dumps(dict(times_s=times[1:], warmup_s=times[0], loader_s=time.perf_counter() - t0,
                      train=len(data.trn_ds), valid=len(data.val_ds))))
"""


def pytorch_inferno(path: str, python: str, threads: int, repeats: int) -> Dict:
    env = dict(os.environ, PYTHONPATH=os.path.abspath(path), OMP_NUM_THREADS=str(threads))
    res = subprocess.run([python, "-c", PI_CODE, str(threads), str(repeats)], capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise RuntimeError(f"pytorch_inferno run failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--memory", action="store_true", help="peak-memory comparison (slow: see above)")
    ap.add_argument("--pytorch-inferno", metavar="PATH", help="checkout of pytorch_inferno 0.2.2")
    ap.add_argument("--pi-python", default="/tmp/pi_venv/bin/python", help="python of pytorch_inferno's venv")
    ap.add_argument("--json", metavar="PATH", help="write the numbers there")
    ap.add_argument("--_memory-child", dest="memory_child", choices=("bce", "inferno"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        torch.set_num_threads(args.threads[0])
        return memory_child(args.memory_child)
    sys.stdout.reconfigure(line_buffering=True)  # tables appear as they are measured
    t_start = time.perf_counter()
    print(f"torch {torch.__version__}, {os.cpu_count()} cores, best of {args.repeats} epochs after one warm-up")
    paper, htt = paper_runs(), htt_runs()
    results: Dict = dict(torch=torch.__version__, repeats=args.repeats, paper={}, htautau={}, pytorch_inferno={})
    for th in args.threads:
        torch.set_num_threads(th)
        results["paper"][th] = table(f"paper configuration, {PAPER_N} + {PAPER_N} events, batch {PAPER_BS}, "
                                     f"{th} thread(s) (target general <= 2.2x bce)", best_times(paper, args.repeats))
        results["htautau"][th] = table(f"H->tautau, {HTT_N} events per sample, batch 4000, {th} thread(s) "
                                       "(target inferno <= 4x bce)", best_times(htt, args.repeats))
        if args.pytorch_inferno:
            try:
                pi = pytorch_inferno(args.pytorch_inferno, args.pi_python, th, args.repeats)
            except (RuntimeError, OSError, ValueError) as e:
                print(f"\npytorch_inferno, {th} thread(s): FAILED: {e}")
                results["pytorch_inferno"][th] = dict(error=str(e))
                continue
            best, ours = min(pi["times_s"]), results["paper"][th]["general"]["best_s"]
            pi.update(best_s=best, speedup_general=best / ours)
            results["pytorch_inferno"][th] = pi
            print(f"pytorch_inferno 0.2.2 PaperInferno epoch ({pi['train']} + {pi['valid']} events): best {best:.3f} s "
                  f"(all {' '.join(f'{t:.3f}' for t in pi['times_s'])}; of which its data loader, per-event "
                  f"__getitem__: {pi['loader_s']:.1f} s); general is {best / ours:.1f}x faster (target >= 40x)")
    if args.memory:
        results["memory"] = memory(args.threads[0])
    results["wall_s"] = time.perf_counter() - t_start
    print(f"\nwall time {results['wall_s']:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
