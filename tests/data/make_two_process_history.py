"""Record the training histories of the two-process INFERNO callbacks (``Inferno``,
``ApproxInferno``, ``PaperInferno``, ``ApproxPaperInferno``) in ``two_process_history.json``.

The numbers were made with the two-process implementation of commit 602d135 (inferno/loss/base.py,
exact.py, approx.py, fused.py; before issue 16 turned these classes into builders of an
``inferno.loss.Analysis``), so that ``tests/test_two_process_history.py`` checks that any later
implementation trains the same networks. Run from the repository root::

    python tests/data/make_two_process_history.py          # writes tests/data/two_process_history.json

For every configuration (``CONFIGS``) and precision (``PRECISIONS``: float32, the network and
events as users have them, and float64, the same initial weights and events converted): data
from ``get_paper_data(4000, bs=500, seed=0, n_val=1000)`` (or the same events with positive
random event weights), ``torch.manual_seed(0)``, a 3-32-32-10 ReLU network ending in
``VariableSoftmax(0.1)``; the callback's ``loss_on`` of a fixed batch (the first 500 validation
events) before training; 3 epochs of Adam (lr 1e-3) with ``ModelWrapper.fit``; the per-epoch
training and validation losses (``LossTracker``, the return value of ``fit``) and checksums of
the final weights (their sum and the sum of their absolute values, in float64). Everything runs
on one CPU thread (the result of a float32 matrix product can depend on the number of threads).
The whole generation takes ~10 s on 2 cores.

The test imports this module (``CONFIGS``, ``run_config``): each configuration is defined here
only.
"""
from __future__ import annotations

import functools
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import torch
from torch import nn

from inferno import (ApproxInferno, ApproxPaperInferno, DataPair, DataSet, Inferno, ModelWrapper, PaperInferno,
                     RateNuisance, ShapeNuisance, VariableSoftmax, WeightedDataLoader, get_paper_data, shift_feature)

HERE = Path(__file__).resolve().parent
JSON_PATH = HERE / "two_process_history.json"

N_TRAIN, N_VAL, BS, EPOCHS, LR, SEED = 4000, 1000, 500, 3, 1e-3, 0
N_FIXED = 500  # the fixed batch of loss_on: the first N_FIXED validation events


# ------------------------------------------------------------------------ data and network
def paper_data() -> DataPair:
    """The paper's toy events, unweighted (a new DataPair every call: the training loader's
    shuffling generator starts afresh)."""
    return get_paper_data(N_TRAIN, bs=BS, seed=SEED, n_val=N_VAL)


def weighted_data() -> DataPair:
    """The same events with positive event weights in [0.5, 1.5), drawn from a seeded generator."""
    base = paper_data()
    g = torch.Generator().manual_seed(12345)
    trn, val = base.trn_dl.dataset, base.val_dl.dataset
    w_trn = 0.5 + torch.rand(len(trn), generator=g)
    w_val = 0.5 + torch.rand(len(val), generator=g)
    return DataPair(WeightedDataLoader(DataSet(trn.x, trn.y, w_trn), BS, shuffle=True, seed=1),
                    WeightedDataLoader(DataSet(val.x, val.y, w_val), BS))


def make_net() -> nn.Module:
    torch.manual_seed(SEED)
    return nn.Sequential(nn.Linear(3, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 10),
                         VariableSoftmax(0.1))


# ------------------------------------------------------------------------ the configurations
def _user_nuisances(approx: bool) -> list:
    """The README's user problem: background x0 shifted by r ~ N(0, 0.4), a 100-event
    background-rate uncertainty."""
    var = dict(variations=(-0.2, 0.2)) if approx else {}
    return [ShapeNuisance("r", shift_feature(0), on="b", constraint=0.4, **var),
            RateNuisance("b", on="b", constraint=100.0)]


#: name -> (callback factory, data factory)
CONFIGS: Dict[str, Tuple[Callable[[], Any], Callable[[], DataPair]]] = {
    "paper_inferno_1": (lambda: PaperInferno.from_benchmark(1), paper_data),
    "paper_inferno_2": (lambda: PaperInferno.from_benchmark(2), paper_data),
    "paper_inferno_3": (lambda: PaperInferno.from_benchmark(3), paper_data),
    "paper_inferno_4": (lambda: PaperInferno.from_benchmark(4), paper_data),
    "paper_inferno_4_autograd": (lambda: PaperInferno.from_benchmark(4, hessian="autograd"), paper_data),
    "paper_inferno_4_jvp": (lambda: PaperInferno.from_benchmark(4, tangents="jvp"), paper_data),
    "approx_paper_inferno_2": (lambda: ApproxPaperInferno.from_benchmark(2), paper_data),
    "approx_paper_inferno_4": (lambda: ApproxPaperInferno.from_benchmark(4), paper_data),
    "inferno_user": (lambda: Inferno(_user_nuisances(False), mu_true=50.0, b_true=1000.0), paper_data),
    "approx_inferno_user": (lambda: ApproxInferno(_user_nuisances(True), mu_true=50.0, b_true=1000.0), paper_data),
    "inferno_user_weighted": (lambda: Inferno(_user_nuisances(False), mu_true=50.0, b_true=1000.0), weighted_data),
    "approx_inferno_user_weighted": (lambda: ApproxInferno(_user_nuisances(True), mu_true=50.0, b_true=1000.0),
                                     weighted_data),
}


# ------------------------------------------------------------------------ one run
#: the precisions every configuration is trained in: float32 (the network and the data as users
#: have them) and float64 (the same initial weights and events converted), where rounding is
#: ~1e-16 and a tight comparison is meaningful
PRECISIONS = {"float32": torch.float32, "float64": torch.float64}


def _to_dtype(data: DataPair, dtype: torch.dtype) -> DataPair:
    """Convert the loaders' events (x, y, w, extras) to ``dtype`` in place."""
    for dl in (data.trn_dl, data.val_dl, data.tst_dl):
        if dl is None:
            continue
        ds = dl.dataset
        ds.x = ds.x.to(dtype)
        ds.y = None if ds.y is None else ds.y.to(dtype)
        ds.w = None if ds.w is None else ds.w.to(dtype)
        ds.extras = {k: v.to(dtype) for k, v in ds.extras.items()}
    return data


def run_config(name: str, precision: str = "float32") -> Dict[str, Any]:
    """Build configuration ``name`` in ``precision`` ('float32' or 'float64'), evaluate
    ``loss_on`` of the fixed batch with the untrained network, train, and return the record
    (float64 Python floats)."""
    make_cb, make_data = CONFIGS[name]
    dtype = PRECISIONS[precision]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = _to_dtype(make_data(), dtype)
        val = data.val_dl.dataset
        x, y = val.x[:N_FIXED], val.y[:N_FIXED]
        w: Optional[torch.Tensor] = None if val.w is None else val.w[:N_FIXED]
        net = make_net().to(dtype)
        cb = make_cb()
        loss_fixed = float(cb.loss_on(net, x, y, w).detach())
        wrapper = ModelWrapper(net)
        hist = wrapper.fit(EPOCHS, data, functools.partial(torch.optim.Adam, lr=LR), loss=None, cbs=[cb],
                           progress=False)
        params = [p.detach().to(torch.float64) for p in net.parameters()]
        return {"loss_on_fixed": loss_fixed,
                "train_loss": [float(v) for v in hist["train"]],
                "valid_loss": [float(v) for v in hist["valid"]],
                "weight_sum": float(sum(p.sum() for p in params)),
                "weight_abs_sum": float(sum(p.abs().sum() for p in params))}
    finally:
        torch.set_num_threads(threads)


def _commit() -> str:
    import inferno
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(inferno.__file__).parent, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    import inferno
    t0 = time.perf_counter()
    runs = {}
    for name in CONFIGS:
        runs[name] = {}
        for precision in PRECISIONS:
            t = time.perf_counter()
            r = runs[name][precision] = run_config(name, precision)
            print(f"{name} {precision}: loss_on {r['loss_on_fixed']!r}, valid {r['valid_loss']} "
                  f"({time.perf_counter() - t:.1f} s)", flush=True)
    out = {"meta": {"made_by": "tests/data/make_two_process_history.py", "inferno_commit": _commit(),
                    "inferno_file": inferno.__file__, "torch": torch.__version__,
                    "python": platform.python_version(), "machine": platform.machine(),
                    "settings": {"n_train": N_TRAIN, "n_val": N_VAL, "bs": BS, "epochs": EPOCHS, "lr": LR,
                                 "seed": SEED, "n_fixed": N_FIXED, "threads": 1,
                                 "precisions": list(PRECISIONS)}},
           "runs": runs}
    JSON_PATH.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {JSON_PATH} ({time.perf_counter() - t0:.1f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
