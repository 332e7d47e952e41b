"""``inferno-paper``: the paper's results table (de Castro & Dorigo 2019, table 2) in one command.

For every model (an NN classifier trained with binary cross-entropy, and INFERNO 0-4 trained
with the nuisances of benchmark 0-4) and several seeds, the command trains on the toy
problem, builds templates on a large test set with the r = +/-0.2 and lambda = 2.5 / 3.5
variations, and measures the expected width of the profile-likelihood interval of the signal
yield on each inference benchmark 0-4. Baselines: the optimal classifier (true density ratio,
same evaluation) and the analytical limit of the unbinned likelihood.

Outputs in ``--out``: ``results.md``, ``results.csv``, ``runs.csv`` (one row per model, seed
and benchmark), ``meta.json`` and the figures ``fig3_templates.png``, ``fig4a_training.png``,
``fig4b_profiles.png``, ``fig5_width_vs_nuisance.png``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..training.schedules import SCHEDULES
from .study import B_TRUE, MU_TRUE, fig5_grid, run_optimal, run_unit

__all__ = ["main", "ReproConfig", "PAPER_TABLE", "MODEL_LABELS"]

#: Table 2 of the paper (medians), rows = model, columns = benchmark 0-4.
PAPER_TABLE: Dict[str, List[float]] = {
    "bce": [14.99, 18.94, 23.94, 21.54, 26.71],
    "inferno0": [15.51, 18.34, 23.24, 21.38, 26.38],
    "inferno1": [15.80, 16.79, 21.41, 20.29, 24.26],
    "inferno2": [15.71, 16.87, 16.95, 16.88, 18.67],
    "inferno3": [15.70, 16.91, 16.97, 16.89, 18.69],
    "inferno4": [15.71, 16.89, 16.95, 16.88, 18.68],
}
MODEL_LABELS: Dict[str, str] = {
    "bce": "NN classifier", **{f"inferno{k}": f"INFERNO {k}" for k in range(5)},
    "optimal": "Optimal classifier", "analytical": "Analytical likelihood",
}
ALL_MODELS = ("bce", "inferno0", "inferno1", "inferno2", "inferno3", "inferno4")


@dataclass
class ReproConfig:
    """Settings of a reproduction run (see ``inferno-paper --help``)."""

    seeds: List[int] = field(default_factory=lambda: list(range(10)))
    models: Tuple[str, ...] = ALL_MODELS
    epochs: int = 40
    n_train: int = 200_000
    n_val: int = 100_000
    n_test: int = 1_000_000
    bs: int = 2000
    bins: int = 10
    optimizer: str = "adam"
    lr_bce: float = 1e-3
    lr_inferno: float = 1e-3
    temperature: float = 0.1
    schedule: str = "none"
    hidden: int = 100
    jobs: int = 1
    scan_points: int = 161
    fig5_points: int = 9
    figures: bool = True
    out: str = "paper_results"
    quick: bool = False


# ----------------------------------------------------------------------------- arguments
class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a default only where there is one to show (not for flags or mode-dependent ones)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False or action.default is argparse.SUPPRESS:
            return action.help or ""
        return super()._get_help_string(action)


def _parser() -> argparse.ArgumentParser:
    d = ReproConfig()
    p = argparse.ArgumentParser(
        prog="inferno-paper", description=__doc__.split("\n\n")[0].replace("``", ""),
        formatter_class=_HelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="small sizes (20k training events, 3 seeds, 20 epochs): a few minutes "
                        "on 2 cores; explicit options still override")
    p.add_argument("--seeds", type=int, default=None,
                   help=f"number of seeds per model [{len(d.seeds)}; quick: 3]")
    p.add_argument("--first-seed", type=int, default=0, help="seeds are first-seed, first-seed+1, ...")
    p.add_argument("--models", default=",".join(d.models),
                   help="comma-separated subset of " + ",".join(ALL_MODELS))
    p.add_argument("--epochs", type=int, default=None, help=f"training epochs [{d.epochs}; quick: 20]")
    p.add_argument("--n-train", type=int, default=None,
                   help=f"training events, half signal [{d.n_train}; quick: 20000]")
    p.add_argument("--n-val", type=int, default=None,
                   help="validation events [n-train / 2]")
    p.add_argument("--n-test", type=int, default=None,
                   help=f"test events for templates [{d.n_test}; quick: 200000]")
    p.add_argument("--bs", type=int, default=d.bs, help="batch size")
    p.add_argument("--bins", type=int, default=d.bins,
                   help="bins of the summary (INFERNO outputs and classifier histogram)")
    p.add_argument("--optimizer", choices=("adam", "sgd"), default=d.optimizer)
    p.add_argument("--lr-bce", type=float, default=d.lr_bce, help="learning rate, NN classifier")
    p.add_argument("--lr-inferno", type=float, default=d.lr_inferno, help="learning rate, INFERNO")
    p.add_argument("--temperature", type=float, default=d.temperature,
                   help="softmax temperature of INFERNO in training")
    p.add_argument("--schedule", choices=SCHEDULES, default=d.schedule,
                   help="learning-rate schedule of both trainings: none (constant), onecycle (warm-up "
                        "to 3x the learning rate over 30%% of the epochs, then cosine annealing: "
                        "inferno.OneCycle, stepped per batch) or cosine (from the learning rate to 0 "
                        "over the epochs, stepped per epoch)")
    p.add_argument("--jobs", type=int, default=None,
                   help="parallel training processes [number of cores]; every run is single-threaded, "
                        "so the results do not depend on --jobs or on the machine's core count")
    p.add_argument("--fig5-points", type=int, default=d.fig5_points,
                   help="true r and lambda values for the width-vs-nuisance figure (0: skip)")
    p.add_argument("--no-figures", action="store_true", help="skip the figures")
    p.add_argument("--out", default=None, help="output folder [paper_results; quick: paper_results_quick]")
    return p


def parse_args(argv: Optional[Sequence[str]] = None) -> ReproConfig:
    """Parse and validate the command line; errors exit (status 2) before anything is written
    or trained. Nothing is created here: :func:`run` creates the output folder."""
    p = _parser()
    a = p.parse_args(argv)
    d, q = ReproConfig(), a.quick
    n_train = a.n_train if a.n_train is not None else (20_000 if q else d.n_train)
    cfg = ReproConfig(
        seeds=list(range(a.first_seed, a.first_seed + (a.seeds if a.seeds is not None else (3 if q else len(d.seeds))))),
        models=tuple(m.strip() for m in a.models.split(",") if m.strip()),
        epochs=a.epochs if a.epochs is not None else (20 if q else d.epochs),
        n_train=n_train,
        n_val=a.n_val if a.n_val is not None else 2 * (n_train // 4),
        n_test=a.n_test if a.n_test is not None else (200_000 if q else d.n_test),
        bs=a.bs, bins=a.bins, optimizer=a.optimizer, lr_bce=a.lr_bce, lr_inferno=a.lr_inferno,
        temperature=a.temperature, schedule=a.schedule,
        jobs=a.jobs if a.jobs is not None else (os.cpu_count() or 1),
        fig5_points=a.fig5_points, figures=not a.no_figures,
        out=a.out if a.out is not None else ("paper_results_quick" if q else "paper_results"),
        quick=q,
    )
    problems = _validate(cfg)
    if problems:
        p.error("; ".join(problems))
    return cfg


#: Largest seed: numpy's and torch's generators both take it.
MAX_SEED = 2**63 - 1


def _validate(c: ReproConfig) -> List[str]:
    """Every problem of a configuration (empty: none); writes and creates nothing."""
    bad = []
    if a := [m for m in c.models if m not in ALL_MODELS]:
        bad.append(f"unknown model(s) {a}; choose from {list(ALL_MODELS)}")
    if not c.models:
        bad.append("--models is empty")
    if dup := sorted({m for m in c.models if c.models.count(m) > 1}):
        bad.append(f"--models names {dup} more than once")
    if len(c.seeds) < 1:
        bad.append("--seeds must be >= 1")
    elif c.seeds[0] < 0:
        bad.append(f"--first-seed must be >= 0, got {c.seeds[0]}")
    elif c.seeds[-1] > MAX_SEED:
        bad.append(f"the seeds must be <= {MAX_SEED}, got up to {c.seeds[-1]}")
    if c.epochs < 1:
        bad.append("--epochs must be >= 1")
    for name, v, lo in (("--n-train", c.n_train, 100), ("--n-val", c.n_val, 2),
                        ("--n-test", c.n_test, 1000)):
        if v < lo:
            bad.append(f"{name} must be >= {lo}, got {v}")
        elif v % 2:
            bad.append(f"{name} must be even (half signal, half background), got {v}")
    if c.bs < 1:
        bad.append(f"--bs must be >= 1, got {c.bs}")
    elif c.bs > c.n_train:
        bad.append(f"--bs {c.bs} is larger than --n-train {c.n_train}")
    if c.bins < 2:
        bad.append(f"--bins must be >= 2, got {c.bins}")
    for name, v in (("--lr-bce", c.lr_bce), ("--lr-inferno", c.lr_inferno),
                    ("--temperature", c.temperature)):
        if not (math.isfinite(v) and v > 0):
            bad.append(f"{name} must be > 0, got {v}")
    if c.jobs < 1:
        bad.append(f"--jobs must be >= 1, got {c.jobs}")
    if c.fig5_points < 0 or c.fig5_points == 1:
        bad.append(f"--fig5-points must be 0 or >= 2, got {c.fig5_points}")
    if c.scan_points < 3:
        bad.append(f"scan_points must be >= 3, got {c.scan_points}")
    if c.hidden < 1:
        bad.append(f"hidden must be >= 1, got {c.hidden}")
    if (why := _unwritable(Path(c.out))) is not None:
        bad.append(f"output folder {c.out} is not writable: {why}")
    return bad


def _unwritable(out: Path) -> Optional[str]:
    """Why the folder ``out`` could not be created or written (None: it can), without creating
    anything: the folder, or its nearest existing ancestor, must be a writable folder."""
    target = out
    while not target.exists():
        if target.parent == target:  # pragma: no cover - a root that does not exist
            return f"{target} does not exist"
        target = target.parent
    if not target.is_dir():
        return f"{target} is a file, not a folder"
    if not os.access(target, os.W_OK | os.X_OK):
        return f"no permission to write in {target}"
    return None


def summarise(runs: List[Dict[str, Any]], optimal: Dict[str, Any], analytical: Dict[int, float]):
    """Per-run rows and the table (median, 16th and 84th percentiles over seeds)."""
    import pandas as pd

    rows = [dict(model=r["model"], seed=r["seed"], benchmark=k, width=w)
            for r in runs for k, w in r["widths"].items()]
    runs_df = pd.DataFrame(rows)
    g = runs_df.groupby(["model", "benchmark"])["width"]
    tab = pd.DataFrame({"median": g.median(), "p16": g.quantile(0.16), "p84": g.quantile(0.84),
                        "n_seeds": g.size()}).reset_index()
    tab["paper"] = [PAPER_TABLE.get(m, [math.nan] * 5)[b] for m, b in zip(tab["model"], tab["benchmark"])]
    extra = [dict(model="optimal", benchmark=k, median=w, p16=w, p84=w, n_seeds=1, paper=math.nan)
             for k, w in optimal["widths"].items()]
    extra += [dict(model="analytical", benchmark=k, median=w, p16=w, p84=w, n_seeds=0, paper=math.nan)
              for k, w in analytical.items()]
    tab = pd.concat([tab, pd.DataFrame(extra)], ignore_index=True)
    order = {m: i for i, m in enumerate([*ALL_MODELS, "optimal", "analytical"])}
    tab = tab.sort_values(["model", "benchmark"], key=lambda c: c.map(order) if c.name == "model" else c)
    tab.insert(1, "label", tab["model"].map(MODEL_LABELS))
    return runs_df, tab.reset_index(drop=True)


def results_markdown(tab, meta: Dict[str, Any]) -> str:
    """The results table as markdown: ours (median [16%, 84%]) with the paper's median."""
    lines = ["# INFERNO paper reproduction (de Castro & Dorigo 2019, table 2)", "",
             "Expected half width of the 68% profile-likelihood interval of the signal yield s "
             "(true s = 50, b = 1000) for each model (rows) on inference benchmarks 0-4 (columns). "
             "Cells: median over seeds [16th, 84th percentile]; in parentheses the paper's median.", "",
             "| model | " + " | ".join(f"benchmark {k}" for k in range(5)) + " |",
             "|---|" + "---|" * 5]
    for model, sub in tab.groupby("model", sort=False):
        cells = []
        for _, r in sub.sort_values("benchmark").iterrows():
            c = f"{r['median']:.2f}"
            if r["n_seeds"] > 1:
                c += f" [{r['p16']:.2f}, {r['p84']:.2f}]"
            if math.isfinite(r["paper"]):
                c += f" ({r['paper']:.2f})"
            cells.append(c)
        lines.append(f"| {MODEL_LABELS[model]} | " + " | ".join(cells) + " |")
    lines += ["", f"Optimal classifier: the true f_s/(f_s+f_b) at nominal, {meta['config']['bins']} uniform bins, same evaluation. "
              "Analytical likelihood: the Cramer-Rao bound of the unbinned likelihood on the true densities "
              "(no binned summary can go below it).", "", "## Run", "",
              f"- command: `{meta['command']}`",
              f"- seeds: {meta['seeds']}",
              f"- inferno {meta['inferno_version']} (commit {meta['git_commit']}), torch {meta['torch_version']}, python {meta['python']}",
              f"- wall time: {meta['wall_s'] / 60:.1f} min on {meta['machine']}",
              f"- settings: {json.dumps(meta['config'])}", ""]
    return "\n".join(lines)


def make_figures(runs: List[Dict[str, Any]], optimal: Dict[str, Any], cfg: ReproConfig, out: Path) -> List[str]:
    """Figures 3, 4a, 4b and 5 of the paper from the first seed of each model."""
    from .. import plotting

    first = {r["model"]: r for r in runs if r["seed"] == cfg.seeds[0]}
    made = []
    ref = "inferno2" if "inferno2" in first else next((m for m in first if m != "bce"), None)
    shown = [m for m in ("bce", ref) if m in first]
    for m in shown:
        t = first[m]["templates"]
        path = out / f"fig3_templates_{m}.png"
        plotting.plot_templates(t["f_s_nom"], t["f_b_nom"],
                                {"r": (t["f_b_up"][0], t["f_b_dw"][0]), "lambda": (t["f_b_up"][1], t["f_b_dw"][1])},
                                title=f"{MODEL_LABELS[m]}: templates (r = +/-0.2, lambda = 2.5/3.5)",
                                s=MU_TRUE, b=B_TRUE, path=path)
        made.append(path.name)
    hist = {MODEL_LABELS[m]: first[m]["history"] for m in first if m != "bce"}
    if hist:
        path = out / "fig4a_training.png"
        plotting.plot_training_history(hist, title="INFERNO loss (expected variance of s)", logy=True, path=path)
        made.append(path.name)
    scans = {MODEL_LABELS[m]: first[m]["scan_b2"] for m in first}
    scans[MODEL_LABELS["optimal"]] = optimal.get("scan_b2")
    scans = {k: v for k, v in scans.items() if v is not None}
    if scans:
        path = out / "fig4b_profiles.png"
        plotting.plot_likelihood_scans(scans, title="Profile likelihood, benchmark 2", mu_true=MU_TRUE, path=path)
        made.append(path.name)
    if cfg.fig5_points and all("fig5" in first[m] for m in shown):
        grid = fig5_grid(cfg.fig5_points)
        path = out / "fig5_width_vs_nuisance.png"
        plotting.plot_width_vs_nuisance(
            {"r": grid["r"], "lambda": grid["l"]},
            {"r": {MODEL_LABELS[m]: np.asarray(first[m]["fig5"]["r"]) for m in shown},
             "lambda": {MODEL_LABELS[m]: np.asarray(first[m]["fig5"]["l"]) for m in shown}},
            title="Benchmark 2: expected width against the true nuisance value", path=path)
        made.append(path.name)
    return made


# ----------------------------------------------------------------------------- main
def _git_commit() -> Optional[str]:
    """Commit of the package's source tree (None outside a git checkout)."""
    import subprocess
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def run(cfg: ReproConfig, log=print, command: Optional[str] = None) -> Dict[str, Any]:
    """Run the reproduction described by ``cfg``; writes the outputs and returns the table.
    ``command``: the command line recorded in the outputs (default: the config)."""
    import torch

    from .. import __version__
    from . import analytical_widths

    t0 = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    units = [(m, s) for m in cfg.models for s in cfg.seeds]
    log(f"inferno-paper: {len(cfg.models)} model(s) x {len(cfg.seeds)} seed(s), {cfg.epochs} epochs, "
        f"{cfg.n_train} training / {cfg.n_test} test events, {cfg.jobs} job(s) -> {out}")
    runs: List[Dict[str, Any]] = []

    def done(r: Dict[str, Any]) -> None:
        runs.append(r)
        ws = " ".join(f"{r['widths'][k]:.2f}" for k in range(5))
        log(f"[{len(runs)}/{len(units)}] {r['model']:<8} seed {r['seed']}: widths(b0-4) {ws}  "
            f"(train {r['train_s']:.0f} s, best epoch {r['best_epoch']})", flush=True)
        # the widths so far, so that an interrupted run keeps what it finished
        rows = [dict(model=q["model"], seed=q["seed"], benchmark=k, width=w)
                for q in runs for k, w in q["widths"].items()]
        tmp = out / "runs.csv.partial"
        tmp.write_text("model,seed,benchmark,width\n" + "".join(
            f"{q['model']},{q['seed']},{q['benchmark']},{q['width']!r}\n" for q in rows))

    if cfg.jobs > 1 and len(units) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed
        with ProcessPoolExecutor(max_workers=min(cfg.jobs, len(units)), mp_context=mp.get_context("spawn")) as ex:
            futs = [ex.submit(run_unit, m, s, cfg) for m, s in units]
            for f in as_completed(futs):
                done(f.result())
    else:
        for m, s in units:
            done(run_unit(m, s, cfg))
    runs.sort(key=lambda r: (cfg.models.index(r["model"]), r["seed"]))
    optimal = run_optimal(cfg)
    analytical = analytical_widths()
    runs_df, tab = summarise(runs, optimal, analytical)
    figs = make_figures(runs, optimal, cfg, out) if cfg.figures else []
    meta = dict(command=command or f"run({cfg!r})",
        seeds=cfg.seeds, inferno_version=__version__, torch_version=torch.__version__,
        python=platform.python_version(), git_commit=_git_commit(), machine=f"{platform.machine()}, {os.cpu_count()} cores",
        wall_s=time.perf_counter() - t0, config=asdict(cfg), figures=figs,
        histories={f"{r['model']}/{r['seed']}": r["history"] for r in runs},
        best_epochs={f"{r['model']}/{r['seed']}": r["best_epoch"] for r in runs})
    runs_df.to_csv(out / "runs.csv", index=False)
    (out / "runs.csv.partial").unlink(missing_ok=True)
    tab.to_csv(out / "results.csv", index=False, float_format="%.4f")
    (out / "results.md").write_text(results_markdown(tab, meta))
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    log(results_markdown(tab, meta))
    return dict(table=tab, runs=runs_df, meta=meta, out=out)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Console entry point ``inferno-paper``."""
    args = list(sys.argv[1:] if argv is None else argv)
    cfg = parse_args(args)
    run(cfg, command=" ".join(["inferno-paper", *args]))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
