"""Profile-likelihood scan: ``calc_profile`` on all scan points at once vs a Python loop
over the scan points.

The model: 10 bins, a signal and a background template, two shape nuisances on the
background (``Normal(0, 2)`` constraints, interpolation code 2 by default) and one
background-rate nuisance (``Normal(0, 100)`` on the offset of b = 1000); Asimov data of
s = 50, b = 1000; a 61-point scan of the signal yield over [0, 120].  The loop calls
``calc_profile`` with one scan point at a time: the same fit (solver, starts, tolerance)
per point.  Both run in the same process, interleaved, after a warm-up: each of
``--repeats`` rounds times one loop and ``--inner`` batched scans (each timed on its own, so
the batched median is over repeats x inner samples: a single 4 ms scan is easily hit by a
scheduler tick on a shared machine, a 200 ms loop averages over them); the medians are
compared (the minima too), and the two must give the same NLL values.

Targets (issue 3): the batched scan at least 50x faster than the loop, and under 0.1 s.

    python speed/bench_profile.py [--repeats 7] [--inner 5] [--code 2] [--threads 1] [--single-start] [--strict]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import torch
from torch.distributions import Normal

from inferno.inference import calc_profile

MU_TRUE, B_TRUE, N_BINS, N_SCAN = 50.0, 1000.0, 10, 61


def model(code) -> dict:
    """Signal rising, background falling; a tilt and a curvature of the background."""
    x = np.linspace(0.05, 0.95, N_BINS)
    f_s, f_b = np.exp(3 * x), np.exp(-2 * x)
    f_s, f_b = f_s / f_s.sum(), f_b / f_b.sum()
    var = np.stack([1 + 0.15 * (x - 0.5), 1 - 0.3 * (x - 0.5) ** 2 + 0.02])
    up, dw = f_b * var, f_b / var * np.array([[1.01], [0.99]])  # asymmetric up/down
    up, dw = up / up.sum(1, keepdims=True), dw / dw.sum(1, keepdims=True)
    t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    return dict(f_s_nom=t(f_s), f_b_nom=t(f_b), f_b_up=t(up), f_b_dw=t(dw),
                shape_aux=[Normal(0.0, 2.0), Normal(0.0, 2.0)], b_norm_aux=[Normal(0.0, 100.0)],
                interp_code=code)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--inner", type=int, default=5, help="batched scans timed per repeat")
    ap.add_argument("--code", default="2", choices=["0", "2", "4p"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--single-start", action="store_true", help="calc_profile(..., multistart=False) in both")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a timing target is missed")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    code = args.code if args.code == "4p" else int(args.code)
    kw = dict(model(code), n_obs=MU_TRUE + B_TRUE, mu_true=MU_TRUE, multistart=not args.single_start)
    mu = torch.linspace(0.0, 120.0, N_SCAN, dtype=torch.float64)

    def batched():
        return calc_profile(mu_scan=mu, return_result=True, **kw)

    def loop():
        res = [calc_profile(mu_scan=mu[i:i + 1], return_result=True, **kw) for i in range(N_SCAN)]
        return (torch.cat([r.nll for r in res]), torch.cat([r.converged for r in res]),
                torch.cat([r.n_iter for r in res]))

    res_b, (nll_l, conv_l, iter_l) = batched(), loop()  # warm-up, and the values to compare
    t_b, t_l = [], []
    for _ in range(args.repeats):
        for _ in range(args.inner):
            t0 = time.perf_counter()
            batched()
            t_b.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        loop()
        t_l.append(time.perf_counter() - t0)
    mb, ml = statistics.median(t_b), statistics.median(t_l)
    diff = float((res_b.nll - nll_l).abs().max())
    print(f"torch {torch.__version__}, threads={torch.get_num_threads()}, code {args.code}, "
          f"{'single start' if args.single_start else 'multistart'}, {N_SCAN} points, {N_BINS} bins, "
          f"{len(res_b.names) - 1} nuisances {res_b.names[1:]}")
    print(f"batched calc_profile : median {mb * 1e3:8.2f} ms  (range {min(t_b) * 1e3:.1f}-{max(t_b) * 1e3:.1f}, "
          f"{len(t_b)} samples), "
          f"Newton iterations per point {int(res_b.n_iter.max())} (summed over the starts)")
    print(f"loop over points     : median {ml * 1e3:8.2f} ms  (all: {[round(t * 1e3, 1) for t in t_l]}), "
          f"Newton iterations per point {int(iter_l.max())}")
    print(f"speed-up loop/batched = {ml / mb:.1f}x on medians, {min(t_l) / min(t_b):.1f}x on minima "
          f"(target >= 50x: {'met' if ml / mb >= 50 else 'MISSED'}); "
          f"batched {mb:.4f} s (target < 0.1 s: {'met' if mb < 0.1 else 'MISSED'})")
    print(f"max |NLL batched - NLL loop| = {diff:.2e}; converged: batched {int(res_b.converged.sum())}/{N_SCAN}, "
          f"loop {int(conv_l.sum())}/{N_SCAN}")
    if diff > 1e-9 or not (res_b.converged.all() and conv_l.all()):
        print("FAILED: the batched scan and the loop disagree or did not converge")
        return 1
    if args.strict and (ml / mb < 50 or mb >= 0.1):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
