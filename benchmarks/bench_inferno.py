"""One exact-INFERNO epoch against one BCE epoch, both through ``ModelWrapper``.

200k toy training events (``get_paper_data``), batch size 2000, Adam. The BCE model is
3-100-100-1 + ``BCEWithLogitsLoss``; the INFERNO models are 3-100-100-10 +
``VariableSoftmax(0.1)`` with the nuisances of benchmark 4 (r, lambda and b). Strategies
measured for the Hessian of the INFERNO loss (all exact, all giving the same loss):

* ``fisher/sequential`` (the default): Fisher form J^T diag(1/nu) J + constraints, with the
  tangents dy/dtheta propagated layer by layer over the activations recorded during the
  wrapper's forward pass; for this Linear/ReLU/softmax network the whole loss (soft
  histograms, tangents, Fisher algebra, softmax backward) is one autograd node with a
  hand-written backward (``inferno.inferno._ChainFisher``): tangents in a (nuisance, event,
  feature) layout, one matrix product per nuisance and direction for the first two layers,
  the Fisher algebra (a few dozen numbers) in Python floats on the host, forward hooks only
  on the ReLUs and the softmax. Its floor here is the two extra 100x100 products per
  nuisance (r and lambda, on the ~1000 background rows of a batch), forward and backward;
  the rest is the per-operation cost of eager PyTorch;
* ``fisher/rules``: the same tangents from the generic layer-by-layer rules, differentiated
  by autograd (the path for other activations), for comparison;
* ``fisher/jvp``: the same Fisher form, tangents from ``torch.func.vmap(torch.func.jvp)``
  through the whole model (the path for arbitrary models);
* ``autograd``: the batch is made a function of the nuisance parameters before the forward
  pass, the NLL is differentiated twice by autograd (double-backward loops);
* ``func.hessian``: ``torch.func.hessian`` of the NLL as a function of the parameters,
  re-running the network on the background rows inside (defined in this script only);
* ``approx`` (for reference, not exact): the interpolated INFERNO (up/down templates).

Epochs of the different models are interleaved; the median over ``--repeats`` is printed
with its ratio to the BCE epoch (target: INFERNO <= 1.5 x BCE), by wall clock and by the
process's CPU time (less sensitive to other jobs on the machine).

    OMP_NUM_THREADS=1 python benchmarks/bench_inferno.py [--repeats 3] [--threads N] [--n 200000]
        [--only fisher/sequential fisher/rules]
"""
from __future__ import annotations

import argparse
import functools
import statistics
import time
from typing import Callable, Dict, List

import torch
from torch import Tensor, nn

from inferno import (ApproxPaperInferno, DataPair, ModelWrapper, PaperInferno, VariableSoftmax,
                     WeightedDataLoader)
from inferno.paper import get_paper_data


def body(n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(3, 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU(),
                         nn.Linear(100, n_out))


class FuncHessianInferno(PaperInferno):
    """Exact INFERNO with ``torch.func.hessian`` of the NLL (benchmark only).

    The network is re-run on the background rows inside the function of the parameters,
    so the Hessian is forward-over-reverse through the network.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs, hessian="fisher", tangents="jvp")

    def on_forwards_end(self) -> None:
        if not self._active():
            return
        wr = self.wrapper
        yp = wr.y_pred
        idx_b = self._idx["b"]
        xb = self._x_nom["b"]
        pos_b = self._pos["b"]
        v0 = self._nominal_values("b", torch.float64)
        theta0 = torch.tensor(self._theta0_phys(), dtype=torch.float64, device=self.device)
        f_s = self._floor(self._soft_hist(yp[self._idx["s"]], "s"))
        f_b0 = self._floor(self._soft_hist(yp[idx_b], "b"))
        n = self._S0 * f_s + self._B0 * f_b0
        model = wr.model

        def nll(alpha: Tensor) -> Tensor:
            x_alpha = self._group_transform("b", xb, (v0 + alpha[pos_b]).to(xb.dtype))
            f_b = self._floor(self._soft_hist(model(x_alpha), "b"))
            s, b = self._yields(theta0 + alpha)
            nu = s * f_s + b * f_b
            return (nu - n * torch.log(nu)).sum()

        hess = torch.func.hessian(nll)(torch.zeros(self.n_params, dtype=torch.float64,
                                                   device=self.device))
        wr.loss_val = self._poi_variance(hess + torch.diag(self._curv))


def _rules(cb: PaperInferno) -> PaperInferno:
    cb._use_chain = False  # generic layer-by-layer tangent rules + autograd
    return cb


def make_runs(args) -> Dict[str, Callable[[], None]]:
    data = get_paper_data(args.n, bs=args.bs, seed=0, n_val=0)
    ds = data.trn_dl.dataset
    adam = functools.partial(torch.optim.Adam, lr=1e-3)
    runs: Dict[str, Callable[[], None]] = {}

    def add(name: str, model: nn.Module, loss, cb_factory) -> None:
        wr = ModelWrapper(model)
        dp = DataPair(WeightedDataLoader(ds, args.bs, shuffle=True, seed=1))

        def run() -> None:
            cbs = [] if cb_factory is None else [cb_factory()]
            wr.fit(1, dp, adam, loss, cbs=cbs)
        runs[name] = run

    torch.manual_seed(0)
    add("bce", body(1), nn.BCEWithLogitsLoss(), None)
    strategies = {
        "fisher/sequential": lambda: PaperInferno.from_benchmark(4),
        "fisher/rules": lambda: _rules(PaperInferno.from_benchmark(4)),
        "fisher/jvp": lambda: PaperInferno.from_benchmark(4, tangents="jvp"),
        "autograd": lambda: PaperInferno.from_benchmark(4, hessian="autograd"),
        "func.hessian": lambda: FuncHessianInferno(float_b=True, shape_aux=[0.4, 1.0], b_norm_aux=100.0),
        "approx (interp.)": lambda: ApproxPaperInferno.from_benchmark(4),
    }
    for name, factory in strategies.items():
        if args.only and name not in args.only:
            continue
        torch.manual_seed(0)
        add(name, nn.Sequential(body(10), VariableSoftmax(0.1)), None, factory)
    return runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--n", type=int, default=200_000, help="training events")
    ap.add_argument("--bs", type=int, default=2000)
    ap.add_argument("--only", nargs="*", default=None, help="INFERNO strategies to run")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    runs = make_runs(args)
    times: Dict[str, List[float]] = {k: [] for k in runs}
    cpu: Dict[str, List[float]] = {k: [] for k in runs}
    for k, run in runs.items():  # warm-up (allocator, first-call overheads)
        run()
    for _ in range(args.repeats):
        for k, run in runs.items():
            t0, c0 = time.perf_counter(), time.process_time()
            run()
            times[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
    med = {k: statistics.median(v) for k, v in times.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {args.n} events, "
          f"batch {args.bs}, median of {args.repeats} epochs")
    print(f"{'strategy':<20} {'epoch [s]':>10} {'x BCE':>7} {'CPU [s]':>9} {'x BCE':>7}")
    for k, t in med.items():
        print(f"{k:<20} {t:>10.3f} {t / med['bce']:>7.2f} {med_cpu[k]:>9.3f} {med_cpu[k] / med_cpu['bce']:>7.2f}")


if __name__ == "__main__":
    main()
