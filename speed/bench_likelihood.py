"""``inferno.likelihood`` on a two-channel HistFactory model: a profile scan against pyhf,
and a thousand toys' profile scans in one call.

The model (built with ``inferno.likelihood``'s classes, shapes from a fixed numpy seed):

* ``SR``, 10 bins: ``signal`` (a peak at x = 0.75, 25 events), ``ttbar`` (300, falling),
  ``wjets`` (150, falling faster), ``diboson`` (40, rising slowly);
* ``CR``, 5 bins: ``ttbar`` (1200), ``wjets`` (300), ``diboson`` (50);
* normfactors: the POI ``mu`` (signal) and ``k_tt`` (ttbar, shared by SR and CR);
* normsys: ``lumi_unc`` (signal, wjets, diboson), ``xsec_wjets``, ``xsec_vv``;
* histosys: ``jes`` (signal, ttbar, wjets; a tilt), ``tt_shape`` (ttbar, SR and CR; a
  tilt), ``jer`` (ttbar in SR; an oscillation, asymmetric);
* staterror: ``stat_SR`` (every SR sample) and ``stat_CR`` (every CR sample);
* pyhf's default interpolation codes (histosys ``4p``, normsys 4): no kinks, one start.

That is 23 parameters (mu, k_tt, 6 alphas, 15 gammas), 21 of them constrained. Data: the
Asimov data set at mu = 1 (``model.asimov(mu=1.0)``, auxiliary data passed explicitly).

(a) a 61-point profile scan of mu over [0, 3]: ``inferno.likelihood.profile`` (all points in
one batch; torch's default threads and one thread) against pyhf 0.7.6 (numpy backend,
scipy optimiser with its default settings), ``pyhf.infer.mle.fixed_poi_fit`` at the same
61 points, the pyhf model built from ``model.to_pyhf(main)`` with
``pyhf_modifier_settings(model)``. The runs are interleaved (each repeat times ``--inner``
inferno scans per thread setting and one pyhf scan) after a warm-up; medians (and minima)
of wall time, and of the process's CPU time, are printed with the speed-up. Agreement:
max |Delta NLL_inferno - Delta NLL_pyhf| over the scan (Delta NLL = NLL - min over the
scan); then once, untimed for the targets, the same pyhf scan with a tight scipy tolerance
(1e-12), to tell the optimiser's stopping error from a difference of the models.

(b) 1000 toys at mu = 1 (``toys(model, model.params(mu=1.0), 1000, seed=0)``), a 31-point
scan of each, ``profile(model, main_t, mus31, aux=aux_t)``: one call for all 31 000 fits;
then the same toys in chunks (``--chunk`` toys per call). Each runs in a fresh
subprocess doing only that, which reports the wall and CPU time of the call(s), the fits
converged, the user / system split of the CPU time and the minor page faults, and the
increase of its peak resident memory across the call(s)
(``resource.getrusage(RUSAGE_SELF).ru_maxrss`` after minus before; torch's allocations are
invisible to ``tracemalloc``).

Targets: the scan >= 50x faster than pyhf's, max |Delta NLL difference| <= 1e-4.
``--strict``: exit 1 when one is missed (the speed-up at torch's default threads; the
agreement with the tight-tolerance pyhf scan, since with its default settings pyhf's optimiser
stops up to ~2e-4 in NLL above the minimum, always above inferno's NLL). The load average is printed at the start and the
end: on a machine shared with other jobs, the multi-threaded runs (torch's OpenMP threads,
numpy's OpenBLAS threads under pyhf) lose most to the contention; for a single-threaded
comparison of both sides run with ``OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1``.
Results on one machine: ``docs/performance.md``.

    python speed/bench_likelihood.py [--quick] [--repeats 5] [--inner 5] [--n-toys 1000] [--chunk 100]
        [--toy-threads N] [--skip-tight] [--skip-toys] [--strict]
    python speed/bench_likelihood.py --toys-only --chunk 200 --toy-threads 1   # one setting of (b)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

import inferno
from inferno.likelihood import (Channel, HistoSys, Model, NormFactor, NormSys, Sample, StatError, profile,
                                pyhf_modifier_settings, toys)

SEED = 20240601
N_SCAN, N_SCAN_TOYS, MU_RANGE = 61, 31, (0.0, 3.0)
TARGET_SPEEDUP, TARGET_DNLL = 50.0, 1e-4
F64 = torch.float64


# ---------------------------------------------------------------------------- the model
def build_model() -> Model:
    """The two-channel model described in the module docstring."""
    rng = np.random.default_rng(SEED)
    xs, xc = (np.arange(10) + 0.5) / 10, (np.arange(5) + 0.5) / 5  # bin centres in [0, 1]

    def norm(v, total):
        return total * v / v.sum()

    sig = norm(np.exp(-0.5 * ((xs - 0.75) / 0.12) ** 2), 25.0)
    tt_s = norm(np.exp(-2.0 * xs) * (1 + 0.1 * rng.normal(size=10)), 300.0)
    w_s = norm(np.exp(-3.5 * xs) * (1 + 0.1 * rng.normal(size=10)), 150.0)
    vv_s = norm(1.0 + 0.5 * xs, 40.0)
    tt_c, w_c, vv_c = norm(np.exp(-1.0 * xc), 1200.0), norm(np.exp(-2.0 * xc), 300.0), norm(np.ones(5), 50.0)

    def tilt(name, nom, x, a):
        f = 1 + a * (x - 0.5)
        return HistoSys(name, hi=nom * f, lo=nom / f)

    def lumi():
        return NormSys("lumi_unc", hi=1.02, lo=0.98)

    def xsec_w():
        return NormSys("xsec_wjets", hi=1.10, lo=0.92)

    def xsec_vv():
        return NormSys("xsec_vv", hi=1.06, lo=0.95)

    jer = HistoSys("jer", hi=tt_s * (1 + 0.05 * np.cos(6 * xs)), lo=tt_s * (1 - 0.04 * np.cos(6 * xs)))
    sr = Channel("SR", [
        Sample("signal", sig, [NormFactor("mu"), lumi(), tilt("jes", sig, xs, 0.10), StatError("stat_SR", sigma=0.03 * sig)]),
        Sample("ttbar", tt_s, [NormFactor("k_tt"), tilt("jes", tt_s, xs, 0.15), tilt("tt_shape", tt_s, xs, 0.2), jer,
                               StatError("stat_SR", sigma=0.04 * tt_s)]),
        Sample("wjets", w_s, [lumi(), xsec_w(), tilt("jes", w_s, xs, 0.2), StatError("stat_SR", sigma=0.06 * w_s)]),
        Sample("diboson", vv_s, [lumi(), xsec_vv(), StatError("stat_SR", sigma=0.08 * vv_s)]),
    ])
    cr = Channel("CR", [
        Sample("ttbar", tt_c, [NormFactor("k_tt"), tilt("jes", tt_c, xc, 0.1), tilt("tt_shape", tt_c, xc, 0.15),
                               StatError("stat_CR", sigma=0.02 * tt_c)]),
        Sample("wjets", w_c, [lumi(), xsec_w(), StatError("stat_CR", sigma=0.04 * w_c)]),
        Sample("diboson", vv_c, [lumi(), xsec_vv(), StatError("stat_CR", sigma=0.05 * vv_c)]),
    ])
    return Model([sr, cr], poi="mu")


# ---------------------------------------------------------------------------- the machine
def machine() -> str:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    where = Path(inferno.__file__).resolve().parent
    commit = "not a git checkout"
    try:
        head = subprocess.run(["git", "-C", str(where), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "."], capture_output=True,
                               text=True, check=True).stdout.strip()
        commit = f"git {head}" + (" + uncommitted changes under inferno/" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        pass
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"CPU: {cpu}, {os.cpu_count()} logical CPUs; Python {platform.python_version()}, torch {torch.__version__} "
            f"(default threads {torch.get_num_threads()}), numpy {np.__version__}\n"
            f"inferno from {where} ({commit}); load average {load}")


# ---------------------------------------------------------------------------- (b) worker
def toys_worker(n_toys: int, chunk: int, threads: int) -> None:
    """Only part (b), in a fresh process: prints one JSON line."""
    if threads > 0:
        torch.set_num_threads(threads)
    model = build_model()
    mus = torch.linspace(*MU_RANGE, N_SCAN_TOYS, dtype=F64)
    main_t, aux_t = toys(model, model.params(mu=1.0), n_toys, seed=0)
    profile(model, main_t[:2], mus[:3], aux=aux_t[:2], on_fail="ignore")  # warm-up (tiny)
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    rss0 = ru0.ru_maxrss  # KiB on Linux
    w0, c0 = time.perf_counter(), time.process_time()
    step = chunk if chunk > 0 else n_toys
    conv, nll, iters = [], [], []
    for i in range(0, n_toys, step):
        r = profile(model, main_t[i:i + step], mus, aux=aux_t[i:i + step], on_fail="ignore")
        conv.append(r.converged)
        nll.append(r.nll)
        iters.append(r.n_iter)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    rss1 = ru1.ru_maxrss
    conv_t, nll_t, it_t = torch.cat(conv), torch.cat(nll), torch.cat(iters)
    dnll = nll_t - nll_t.amin(-1, keepdim=True)
    k1 = int(torch.argmin((mus - 1.0).abs()))
    print(json.dumps(dict(
        n_toys=n_toys, chunk=step, calls=len(conv), wall=wall, cpu=cpu, threads=torch.get_num_threads(),
        user=ru1.ru_utime - ru0.ru_utime, sys=ru1.ru_stime - ru0.ru_stime, minflt=ru1.ru_minflt - ru0.ru_minflt,
        converged=int(conv_t.sum()), fits=conv_t.numel(), toys_all_converged=int(conv_t.all(-1).sum()),
        max_iter=int(it_t.max()), mean_iter=float(it_t.double().mean()),
        rss_before_mib=rss0 / 1024, rss_peak_mib=rss1 / 1024, rss_increase_mib=(rss1 - rss0) / 1024,
        frac_dnll_mu1_le_half=float((dnll[:, k1] <= 0.5).double().mean()),
        checksum=float(nll_t.sum()))))


def run_toys(n_toys: int, chunk: int, threads: int) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--toys-only", "--n-toys", str(n_toys),
           "--chunk", str(chunk), "--toy-threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        return dict(error=f"worker exited {out.returncode}: {out.stderr.strip()[-500:]}", chunk=chunk or n_toys)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------- (a) the scan vs pyhf
def pyhf_setup(model: Model, main: torch.Tensor, aux: torch.Tensor):
    import pyhf

    pyhf.set_backend("numpy", "scipy")
    pm = pyhf.Workspace(model.to_pyhf(main)).model(modifier_settings=pyhf_modifier_settings(model))
    # pyhf orders the channels by name: map the main data by channel name
    main_p = np.concatenate([main[model.channel_bins[ch]].numpy() for ch in pm.config.channels])
    # our auxiliary data in pyhf's order, by parameter name: must be pyhf's auxdata (the Asimov
    # auxiliary data at the nominal nuisances are the nominal ones)
    by_name = dict(zip(model.aux_names, aux.tolist()))
    ours = [by_name[n] for s in pm.config.auxdata_order for n in model.names[model.param_sets[s]]]
    if not np.allclose(ours, pm.config.auxdata, rtol=0, atol=1e-12):
        raise RuntimeError("the auxiliary data differ from pyhf's auxdata")
    return pyhf, pm, np.concatenate([main_p, np.asarray(pm.config.auxdata)])


def pyhf_scan(pyhf, pm, data, mus: np.ndarray) -> np.ndarray:
    """NLL (pyhf returns -2 ln L) at every scan point."""
    return np.array([float(pyhf.infer.mle.fixed_poi_fit(float(m), data, pm, return_fitted_val=True)[1]) / 2
                     for m in mus])


def timed(f):
    w0, c0 = time.perf_counter(), time.process_time()
    out = f()
    return out, time.perf_counter() - w0, time.process_time() - c0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2 repeats, 3 inner (and the toys as usual)")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved rounds of (a)")
    ap.add_argument("--inner", type=int, default=5, help="inferno scans timed per round and thread setting")
    ap.add_argument("--n-toys", type=int, default=1000)
    ap.add_argument("--chunk", type=int, default=100, help="toys per call in the chunked run of (b); 0: skip it")
    ap.add_argument("--toy-threads", type=int, default=0, help="torch threads in (b); 0: torch's default")
    ap.add_argument("--skip-tight", action="store_true", help="no tight-tolerance pyhf scan")
    ap.add_argument("--skip-toys", action="store_true", help="no part (b)")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    ap.add_argument("--toys-only", action="store_true",
                    help="only one setting of (b), in this process (--n-toys, --chunk (0: one call), --toy-threads); "
                         "prints one JSON line (what (b) runs in its subprocesses)")
    args = ap.parse_args()
    if args.toys_only:
        toys_worker(args.n_toys, args.chunk, args.toy_threads)
        return 0
    if args.quick:
        args.repeats, args.inner = 2, 3

    print(machine())
    model = build_model()
    main_d, aux_d = model.asimov(mu=1.0)
    n_alpha = sum(p.kind in ("normsys", "histosys") for p in model.parameters)
    print(f"model: channels {[(c, s.stop - s.start) for c, s in model.channel_bins.items()]} (bins), "
          f"{len(model.samples)} samples, {model.n_params} parameters ({n_alpha} alphas), "
          f"{len(model.aux_names)} constrained; Asimov data at mu = 1: {float(main_d.sum()):.1f} events")

    # ------------------------------------------------------------------ (a)
    mus = torch.linspace(*MU_RANGE, N_SCAN, dtype=F64)
    pyhf, pm, data = pyhf_setup(model, main_d, aux_d)
    default_threads = torch.get_num_threads()

    def ours(threads):
        torch.set_num_threads(threads)
        try:
            return profile(model, main_d, mus, aux=aux_d)
        finally:
            torch.set_num_threads(default_threads)

    res = ours(default_threads)  # warm-up, and the values to compare
    ours(1)
    ref = pyhf_scan(pyhf, pm, data, mus.numpy())
    t = {"ours": [], "ours1": [], "pyhf": []}
    c = {"ours": [], "ours1": [], "pyhf": []}
    for _ in range(args.repeats):
        for key, th in (("ours", default_threads), ("ours1", 1)):
            for _ in range(args.inner):
                _, w, cp = timed(lambda: ours(th))
                t[key].append(w)
                c[key].append(cp)
        _, w, cp = timed(lambda: pyhf_scan(pyhf, pm, data, mus.numpy()))
        t["pyhf"].append(w)
        c["pyhf"].append(cp)
    med = {k: statistics.median(v) for k, v in t.items()}
    cmed = {k: statistics.median(v) for k, v in c.items()}
    nll_i = res.nll.numpy()
    d_i = nll_i - nll_i.min()
    d_p = ref - ref.min()
    dd = float(np.abs(d_i - d_p).max())
    speed = med["pyhf"] / med["ours"]
    speed1 = med["pyhf"] / med["ours1"]
    print(f"\n(a) {N_SCAN}-point profile scan of mu over {list(MU_RANGE)}, Asimov data at mu = 1; "
          f"{args.repeats} interleaved rounds ({args.inner} inferno scans per round and thread setting)")
    for key, label in (("ours", f"inferno profile, threads={default_threads} (default)"),
                       ("ours1", "inferno profile, threads=1"),
                       ("pyhf", "pyhf fixed_poi_fit x 61")):
        print(f"  {label:34s}: median {med[key] * 1e3:9.2f} ms wall (min {min(t[key]) * 1e3:.2f}, "
              f"max {max(t[key]) * 1e3:.2f}; {len(t[key])} samples), CPU {cmed[key] * 1e3:9.2f} ms")
    print(f"  inferno: converged {int(res.converged.sum())}/{N_SCAN}, Newton iterations per point max "
          f"{int(res.n_iter.max())}")
    print(f"  speed-up pyhf/inferno: {speed:.0f}x (threads={default_threads}), {speed1:.0f}x (threads=1) on median "
          f"wall; {cmed['pyhf'] / cmed['ours']:.0f}x / {cmed['pyhf'] / cmed['ours1']:.0f}x on median CPU time "
          f"(target >= {TARGET_SPEEDUP:.0f}x: {'met' if speed >= TARGET_SPEEDUP else 'MISSED'})")
    diff = nll_i - ref
    print(f"  max |dNLL_inferno - dNLL_pyhf| = {dd:.2e} (target <= {TARGET_DNLL:.0e}: "
          f"{'met' if dd <= TARGET_DNLL else 'MISSED'}); NLL_inferno - NLL_pyhf in [{diff.min():.2e}, "
          f"{diff.max():.2e}] (largest gap at mu = {float(mus[int(np.argmax(np.abs(diff)))]):.2f})")
    dd_tight = None
    if not args.skip_tight:
        pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer(tolerance=1e-12, maxiter=100_000))
        ref_t, w_t, _ = timed(lambda: pyhf_scan(pyhf, pm, data, mus.numpy()))
        pyhf.set_backend("numpy", "scipy")
        dd_tight = float(np.abs(d_i - (ref_t - ref_t.min())).max())
        diff_t = nll_i - ref_t
        print(f"  pyhf with scipy tolerance 1e-12 (once, {w_t:.1f} s, {w_t / med['ours']:.0f}x the inferno median): "
              f"max |dNLL difference| = {dd_tight:.2e}; NLL_inferno - NLL_pyhf in [{diff_t.min():.2e}, "
              f"{diff_t.max():.2e}]")

    # ------------------------------------------------------------------ (b)
    rows = []
    if not args.skip_toys:
        print(f"\n(b) {args.n_toys} toys at mu = 1 (seed 0) x {N_SCAN_TOYS}-point scans, each setting in a fresh "
              f"subprocess")
        for chunk in ([0] + ([args.chunk] if 0 < args.chunk < args.n_toys else [])):
            r = run_toys(args.n_toys, chunk, args.toy_threads)
            rows.append(r)
            if "error" in r:
                print(f"  chunk {r['chunk']}: FAILED: {r['error']}")
                continue
            how = "one call" if r["calls"] == 1 else f"{r['calls']} calls of {r['chunk']} toys"
            print(f"  {how:22s}: {r['wall']:7.2f} s wall, {r['cpu']:7.2f} s CPU ({r['user']:.2f} s user, {r['sys']:.2f} s "
                  f"system; {r['minflt']} minor page faults), threads={r['threads']}; converged "
                  f"{r['converged']}/{r['fits']} fits ({r['toys_all_converged']}/{r['n_toys']} toys with all points), "
                  f"Newton iterations max {r['max_iter']}, mean {r['mean_iter']:.2f}; peak RSS {r['rss_before_mib']:.0f} "
                  f"-> {r['rss_peak_mib']:.0f} MiB (+{r['rss_increase_mib']:.0f} MiB); "
                  f"dNLL(mu=1) <= 0.5 in {r['frac_dnll_mu1_le_half']:.3f} of toys")
        ok = [r for r in rows if "error" not in r]
        if len(ok) == 2 and abs(ok[0]["checksum"] - ok[1]["checksum"]) > 1e-6 * abs(ok[0]["checksum"]):
            print("  note: the chunked and the single call give different NLL sums")

    # ------------------------------------------------------------------ summary
    print("\nsummary")
    print("  | measurement | value | target |")
    print("  | --- | --- | --- |")
    print(f"  | inferno 61-point scan, threads={default_threads} (default), median wall | {med['ours'] * 1e3:.2f} ms | |")
    print(f"  | inferno 61-point scan, threads=1, median wall | {med['ours1'] * 1e3:.2f} ms | |")
    print(f"  | pyhf 0.7.6 61 x fixed_poi_fit (numpy, scipy), median wall | {med['pyhf'] * 1e3:.0f} ms | |")
    print(f"  | speed-up (threads={default_threads} / threads=1) | {speed:.0f}x / {speed1:.0f}x | >= {TARGET_SPEEDUP:.0f}x "
          f"({'met' if speed >= TARGET_SPEEDUP else 'missed'}) |")
    print(f"  | max abs dNLL difference, pyhf default settings (its optimiser's stopping error) | {dd:.1e} | |")
    if dd_tight is not None:
        print(f"  | max abs dNLL difference, pyhf scipy tolerance 1e-12 | {dd_tight:.1e} | <= {TARGET_DNLL:.0e} "
              f"({'met' if dd_tight <= TARGET_DNLL else 'missed'}) |")
    for r in rows:
        if "error" in r:
            continue
        how = "one call" if r["calls"] == 1 else f"chunks of {r['chunk']}"
        print(f"  | {r['n_toys']} toys x {N_SCAN_TOYS} points, {how}, threads={r['threads']}: wall / converged / "
              f"peak RSS increase | "
              f"{r['wall']:.1f} s / {r['converged']} of {r['fits']} / {r['rss_increase_mib']:.0f} MiB | |")
    print(f"  load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    # the agreement target compares the models: judged against the tight-tolerance pyhf scan when
    # it ran (with its default settings pyhf's optimiser stops up to ~2e-4 above the minimum,
    # always above inferno's NLL), else against the default-settings scan
    agree = dd if dd_tight is None else dd_tight
    missed = speed < TARGET_SPEEDUP or agree > TARGET_DNLL or not bool(res.converged.all())
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
