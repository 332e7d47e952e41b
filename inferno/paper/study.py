"""The training and evaluation of one (model, seed) of the paper reproduction
(:mod:`inferno.paper.cli`): the paper's network, training with BCE or INFERNO k, templates on
a large test set with the r and lambda variations, and the profile-likelihood widths on
benchmarks 0-4."""
from __future__ import annotations

import contextlib
import functools
import math
import time
from typing import TYPE_CHECKING, Any, Dict, Tuple

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from .cli import ReproConfig

TEST_SEED = 987_654_321  # one test set for all models, independent of the training seeds


# ----------------------------------------------------------------------------- models
def build_net(n_out: int, hidden: int = 100):
    """The paper's 3-100-100-n_out ReLU network (without the output activation)."""
    from torch import nn
    return nn.Sequential(nn.Linear(3, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, n_out))


def _test_set(n_test: int) -> Tuple[np.ndarray, np.ndarray]:
    from . import sample_background, sample_signal
    ss = np.random.SeedSequence(TEST_SEED).spawn(2)
    return (sample_signal(n_test // 2, seed=np.random.default_rng(ss[0])).astype(np.float32),
            sample_background(n_test // 2, seed=np.random.default_rng(ss[1])).astype(np.float32))


# ----------------------------------------------------------------------------- nets, training
#: Variations of the templates (paper section 4): r = -/+0.2 and lambda = 2.5 / 3.5, i.e. one
#: unit of the interpolation parameter is 0.2 in r and 0.5 in lambda.
R_VARS: Tuple[float, float] = (-0.2, 0.2)
L_VARS: Tuple[float, float] = (2.5, 3.5)
MU_TRUE, B_TRUE = 50.0, 1000.0


def _optimal_net():
    """The optimal classifier as a module: the true f_s / (f_s + f_b) at the nominal r, lambda."""
    import torch
    from torch import nn

    from . import background_log_prob, signal_log_prob

    class OptimalClassifier(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x64 = x.double()
            return torch.sigmoid(signal_log_prob(x64) - background_log_prob(x64))[:, None].float()

    return OptimalClassifier()


def _sigmoid_pred():
    """Prediction handler turning the classifier's logit into the signal probability."""
    import torch

    from ..training.callbacks import PredHandler

    class SigmoidPred(PredHandler):
        def process(self, y_pred: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(y_pred)

    return SigmoidPred()


def _keep_best():
    """The callback keeping the best epoch's weights (:class:`inferno.training.callbacks.KeepBest`)."""
    from ..training.callbacks import KeepBest

    return KeepBest()


def train_model(name: str, seed: int, cfg: ReproConfig):
    """Train model ``name`` ('bce' or 'inferno<k>') on the toy problem with training seed
    ``seed``; returns the wrapper (weights of the best validation epoch), the loss history and
    the epoch of the best validation loss."""
    import torch
    from torch import nn

    from ..nn import VariableSoftmax
    from .callbacks import paper_inferno
    from ..training.schedules import schedule
    from ..training.wrapper import ModelWrapper
    from . import get_paper_data

    # full batches only: every INFERNO batch needs signal and background events
    data = get_paper_data(cfg.n_train, bs=cfg.bs, seed=seed, n_val=cfg.n_val, drop_last=True)
    torch.manual_seed(seed)
    if name == "bce":
        net, loss, cbs, lr = build_net(1, cfg.hidden), nn.BCEWithLogitsLoss(), [], cfg.lr_bce
    else:
        net = nn.Sequential(*build_net(cfg.bins, cfg.hidden), VariableSoftmax(cfg.temperature))
        loss, cbs, lr = None, [paper_inferno(int(name[len("inferno"):]), mu_true=MU_TRUE, b_true=B_TRUE)], cfg.lr_inferno
    keep = _keep_best()
    opt = functools.partial(torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.SGD, lr=lr)
    wrapper = ModelWrapper(net)
    # a progress bar only when runs go one after the other in this process (not in workers)
    cbs = [*cbs, *schedule(cfg.schedule, lr, cfg.epochs), keep]
    history = wrapper.fit(cfg.epochs, data, opt, loss, cbs=cbs, progress=cfg.jobs == 1)
    return wrapper, history, keep.best_epoch


# ----------------------------------------------------------------------------- evaluation
def _binning(kind: str, bins: int):
    """Prediction handler factory and bins of :func:`inferno.get_shape` for a kind of model:
    'argmax' (INFERNO: bin = index of the largest output), 'logit' (a classifier's logit,
    binned as its sigmoid in ``bins`` uniform bins of [0, 1]) or 'prob' (a probability)."""
    from ..training.callbacks import PredHandler
    from ..compat import InfernoPred

    if kind == "argmax":
        return InfernoPred, bins
    if kind in ("logit", "prob"):
        return (_sigmoid_pred if kind == "logit" else PredHandler), np.linspace(0.0, 1.0, bins + 1)
    raise ValueError(f"unknown kind {kind!r}")


def _template(wrapper, kind: str, bins: int, x: np.ndarray) -> np.ndarray:
    """Normalised template of the events ``x`` (no systematic variation)."""
    from ..templates import get_shape
    pred_cb, edges = _binning(kind, bins)
    return get_shape(wrapper.predict(x, pred_cb=pred_cb()), edges).numpy()


def model_templates(wrapper, kind: str, bins: int, x_sig: np.ndarray, x_bkg: np.ndarray) -> Dict[str, np.ndarray]:
    """Templates of a trained model on the test set: ``f_s_nom``, ``f_b_nom`` and the background
    ``f_b_up`` / ``f_b_dw`` (rows r, lambda) at r = +/-0.2, lambda = 3.5 / 2.5; ``kind`` as
    in :func:`_binning`."""
    from ..templates import get_paper_syst_shapes

    pred_cb, edges = _binning(kind, bins)
    out = {"f_s_nom": _template(wrapper, kind, bins, x_sig)}
    shapes = get_paper_syst_shapes(wrapper, x_bkg, bins=edges, pred_cb=pred_cb(),
                                   r_vals=(R_VARS[0], 0.0, R_VARS[1]), l_vals=(L_VARS[0], 3.0, L_VARS[1]))
    out.update({k: v.numpy() for k, v in shapes.items()})
    return out


def benchmark_model(tmpl: Dict[str, np.ndarray], k: int) -> Dict[str, Any]:
    """Keyword arguments of :func:`inferno.calc_profile` for benchmark ``k`` on templates
    ``tmpl``: the floating nuisances' up/down rows and their constraints in interpolation units
    (N(r | 0, 0.4) -> N(alpha_r | 0, 2); N(lambda | 3, 1) -> N(alpha_l | 0, 2)), the linear
    background-rate nuisance of benchmark 4 (N(b | 1000, 100)), interpolation code 2."""
    from torch.distributions import Normal

    from . import BENCHMARKS

    bm = BENCHMARKS[k]
    unit = {"r": (R_VARS[1] - R_VARS[0]) / 2.0, "l": (L_VARS[1] - L_VARS[0]) / 2.0}
    rows, aux = [], []
    for j, name in enumerate(("r", "l")):
        if getattr(bm, f"float_{name}"):
            std = getattr(bm, f"{name}_std")
            rows.append(j)
            aux.append(None if std is None else Normal(0.0, std / unit[name]))
    kw: Dict[str, Any] = dict(f_s_nom=tmpl["f_s_nom"], f_b_nom=tmpl["f_b_nom"], interp_code=2)
    if rows:
        kw.update(f_b_up=np.asarray(tmpl["f_b_up"])[rows], f_b_dw=np.asarray(tmpl["f_b_dw"])[rows], shape_aux=aux)
    if bm.float_b:
        kw["b_norm_aux"] = [Normal(0.0, bm.b_std)]
    return kw


def profile_width(tmpl: Dict[str, np.ndarray], k: int, n_obs: Any = None, scan_points: int = 161,
                  return_scan: bool = False):
    """Half width of the 68% profile-likelihood interval of s on benchmark ``k``.

    ``n_obs``: per-bin observed counts; default the Asimov data of the templates at s = 50,
    b = 1000. The scan spans +/-3 Hessian uncertainties around the best fit.
    """
    from ..compat.inference import calc_profile, fit_mle, get_likelihood_width

    kw = benchmark_model(tmpl, k)
    if n_obs is None:
        n_obs = MU_TRUE * np.asarray(tmpl["f_s_nom"]) + B_TRUE * np.asarray(tmpl["f_b_nom"])
    fit = fit_mle(n_obs=n_obs, b_true=B_TRUE, mu_init=MU_TRUE, on_fail="ignore", **kw)
    centre, unc = float(fit.mu), float(fit.mu_unc)
    if not (math.isfinite(centre) and math.isfinite(unc) and unc > 0):
        centre, unc = MU_TRUE, 50.0
    mu = centre + unc * np.linspace(-3.0, 3.0, scan_points)
    nll = calc_profile(n_obs=n_obs, mu_scan=mu, b_true=B_TRUE, on_fail="ignore", **kw).numpy()
    try:
        width = get_likelihood_width(nll, mu)
    except ValueError:  # not inside the scan: widen once
        mu = centre + unc * np.linspace(-8.0, 8.0, scan_points)
        nll = calc_profile(n_obs=n_obs, mu_scan=mu, b_true=B_TRUE, on_fail="ignore", **kw).numpy()
        width = get_likelihood_width(nll, mu)
    return (width, mu, nll) if return_scan else width


def shifted_asimov(wrapper, kind: str, bins: int, tmpl: Dict[str, np.ndarray], x_bkg: np.ndarray,
                   r: float, lam: float) -> np.ndarray:
    """Asimov counts 50 f_s + 1000 f_b(r, lambda) with the background at true values (r, lambda)."""
    from . import paper_syst_transform

    f_b = _template(wrapper, kind, bins, paper_syst_transform(x_bkg, r, lam))
    return MU_TRUE * np.asarray(tmpl["f_s_nom"]) + B_TRUE * f_b


def fig5_grid(n: int) -> Dict[str, np.ndarray]:
    """True values of r and lambda for the width-vs-nuisance figure."""
    return {"r": np.linspace(-0.5, 0.5, n), "l": np.linspace(2.0, 4.0, n)}


_TEST_CACHE: Dict[int, Tuple[np.ndarray, np.ndarray]] = {}


def _cached_test_set(n_test: int) -> Tuple[np.ndarray, np.ndarray]:
    if n_test not in _TEST_CACHE:
        _TEST_CACHE.clear()
        _TEST_CACHE[n_test] = _test_set(n_test)
    return _TEST_CACHE[n_test]


def evaluate(wrapper, kind: str, cfg: ReproConfig, detail: bool) -> Dict[str, Any]:
    """Widths on benchmarks 0-4 (and, if ``detail``, the profile curves on benchmark 2, the
    templates and the width against the true r and lambda)."""
    x_sig, x_bkg = _cached_test_set(cfg.n_test)
    tmpl = model_templates(wrapper, kind, cfg.bins, x_sig, x_bkg)
    res: Dict[str, Any] = {"widths": {}}
    for k in range(5):
        w, mu, nll = profile_width(tmpl, k, scan_points=cfg.scan_points, return_scan=True)
        res["widths"][k] = w
        if detail and k == 2:
            res["scan_b2"] = (mu.tolist(), nll.tolist())
    if detail:
        res["templates"] = {k: np.asarray(v).tolist() for k, v in tmpl.items()}
        if cfg.fig5_points:
            res["fig5"] = {}
            for name, vals in fig5_grid(cfg.fig5_points).items():
                ws = []
                for v in vals:
                    r, lam = (v, 3.0) if name == "r" else (0.0, v)
                    n_obs = shifted_asimov(wrapper, kind, cfg.bins, tmpl, x_bkg, r, lam)
                    ws.append(profile_width(tmpl, 2, n_obs=n_obs, scan_points=cfg.scan_points))
                res["fig5"][name] = ws
    return res


#: torch threads of every run, in the main process or in a worker. A sum split over more
#: threads adds in another order, so a thread count that followed --jobs or the machine's
#: cores would change the results in their last digits, and training amplifies that.
RUN_THREADS = 1


@contextlib.contextmanager
def _torch_threads(n: int):
    """Run the block with ``n`` torch threads, restoring the caller's setting afterwards."""
    import torch
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def run_unit(name: str, seed: int, cfg: ReproConfig, threads: int = RUN_THREADS) -> Dict[str, Any]:
    """Train and evaluate one (model, seed) with ``threads`` torch threads (the same in the
    main process and in workers: same seeds, same numbers); the result is plain data
    (picklable)."""
    with _torch_threads(threads):
        t0 = time.perf_counter()
        wrapper, history, best_epoch = train_model(name, seed, cfg)
        t_train = time.perf_counter() - t0
        detail = cfg.figures and seed == cfg.seeds[0]
        res = evaluate(wrapper, "logit" if name == "bce" else "argmax", cfg, detail)
    res.update(model=name, seed=seed, history=history, best_epoch=best_epoch, train_s=t_train,
               total_s=time.perf_counter() - t0)
    return res


def run_optimal(cfg: ReproConfig) -> Dict[str, Any]:
    """The optimal-classifier baseline, evaluated like the trained classifiers."""
    from ..training.wrapper import ModelWrapper
    with _torch_threads(RUN_THREADS):
        res = evaluate(ModelWrapper(_optimal_net()), "prob", cfg, detail=cfg.figures)
    res.update(model="optimal", seed=-1)
    return res


# ----------------------------------------------------------------------------- reporting
