"""Tests of the INFERNO callbacks (inferno.inferno) and nuisance descriptions (inferno.nuisance).

References are independent of the implementation: the negative log-likelihood is rebuilt
here from its definition (transform the inputs, run the network, weighted soft histograms
with the floor, yields, Poisson terms, constraint log-densities) and differentiated by
central finite differences in float64.
"""
import functools
import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn
from torch.distributions import Gamma, Normal

from inferno import (ApproxInferno, ApproxPaperInferno, Inferno, InfernoPred, ModelWrapper,
                     PaperInferno, RateNuisance, ShapeNuisance, VariableSoftmax, paper_inferno,
                     scale_feature, shift_feature)
from inferno.paper import get_paper_data, sample_background

pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")

F64 = torch.float64
EPS = 1e-7


# ------------------------------------------------------------------ helpers
def _tiny_net(seed=0, n_in=3, hidden=6, n_out=4, act=nn.Tanh, temp=0.5, dtype=F64):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(n_in, hidden), act(), nn.Linear(hidden, hidden), act(),
                        nn.Linear(hidden, n_out), VariableSoftmax(temp))
    return net.to(dtype)


def _batch(n=80, seed=0, weights=True, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g, dtype=dtype)
    x[:, 2] = x[:, 2].abs() + 0.2  # a positive "rate" column, as in the toy problem
    y = (torch.rand(n, generator=g) < 0.45).to(dtype)
    y[0], y[1] = 1.0, 0.0  # both classes present, in shuffled order
    w = torch.rand(n, generator=g, dtype=dtype) * 2 + 0.1 if weights else None
    return x, y, w


def _generic_nuisances():
    """A mix: constrained/free shape nuisances on b and on both, add/scale rates."""
    return [
        ShapeNuisance("shift", shift_feature(0), on="b", nominal=0.0, constraint=0.4,
                      variations=(-0.2, 0.2)),
        ShapeNuisance("scale", scale_feature(2), on="both", nominal=1.0, variations=(0.9, 1.1)),
        # transform(x, nominal) = x, as ShapeNuisance requires
        ShapeNuisance("tilt", lambda x, v: torch.cat([x[:, :1], x[:, 1:2] + (v - 0.3) * x[:, :1] ** 2,
                                                      x[:, 2:]], 1),
                      on="s", nominal=0.3, constraint=Normal(torch.tensor(0.3, dtype=F64),
                                                             torch.tensor(0.5, dtype=F64)),
                      variations=(0.1, 0.5)),
        RateNuisance("b", on="b", mode="add", constraint=100.0),
        RateNuisance("lumi", on="s", mode="scale", constraint=0.05),
    ]


def _curvatures(nuisances):
    """-d2 log p / d theta2 at the nominal values, from the definitions of the constraints."""
    out = [0.0]
    for n in nuisances:
        c = n.constraint
        if c is None:
            out.append(0.0)
        elif isinstance(c, Normal):
            out.append(1.0 / float(c.scale) ** 2)
        else:  # Gamma: -d2/dx2 [(k-1) log x - x/theta] = (k - 1)/x^2
            out.append((float(c.concentration) - 1) / n.nominal ** 2)
    return torch.tensor(out, dtype=F64)


class RefModel:
    """The INFERNO likelihood written out from its definition, for finite differences."""

    def __init__(self, net, x, y, w, nuisances, mu_true, b_true, eps=EPS):
        self.net, self.nuis = net, list(nuisances)
        self.mu_true, self.b_true, self.eps = mu_true, b_true, eps
        yv = y.reshape(-1)
        self.rows = {"s": yv == 1, "b": yv == 0}
        self.x = x
        self.w = None if w is None else w.reshape(-1)
        self.theta0 = torch.tensor([mu_true] + [n.nominal for n in nuisances], dtype=F64)
        with torch.no_grad():
            self.n = self.nu(self.theta0)

    def shapes(self, theta):
        f = {}
        for g, m in self.rows.items():
            xg = self.x[m].clone()
            for p, n in enumerate(self.nuis, start=1):
                if isinstance(n, ShapeNuisance) and g in n.targets:
                    xg = n.transform(xg, theta[p].to(xg.dtype))
            out = self.net(xg).to(F64)
            if self.w is None:
                h = out.mean(0)
            else:
                wg = self.w[m].to(F64)
                h = (wg[:, None] * out).sum(0) / wg.sum()
            f[g] = (h + self.eps) / (1 + len(h) * self.eps)
        return f

    def yields(self, theta):
        s, b = theta[0], torch.tensor(self.b_true, dtype=F64)
        for p, n in enumerate(self.nuis, start=1):
            if isinstance(n, RateNuisance) and n.mode == "add":
                if n.on == "s":
                    s = s + theta[p]
                else:
                    b = b + theta[p]
        for p, n in enumerate(self.nuis, start=1):
            if isinstance(n, RateNuisance) and n.mode == "scale":
                if n.on == "s":
                    s = s * theta[p]
                else:
                    b = b * theta[p]
        return s, b

    def nu(self, theta):
        f = self.shapes(theta)
        s, b = self.yields(theta)
        return s * f["s"] + b * f["b"]

    def nll(self, theta):
        nu = self.nu(theta)
        out = (nu - self.n * torch.log(nu)).sum()
        for p, n in enumerate(self.nuis, start=1):
            if n.constraint is not None:
                out = out - n.constraint.log_prob(theta[p]).to(F64)
        return out

    def steps(self):
        """1e-3 of each parameter's own scale (its standard deviation if it alone floated),
        from a coarse finite-difference curvature."""
        t0, out = self.theta0, []
        with torch.no_grad():
            for k in range(len(t0)):
                h = 1e-2 * max(abs(float(t0[k])), 1.0)
                tp, tm = t0.clone(), t0.clone()
                tp[k] += h
                tm[k] -= h
                c = (float(self.nll(tp)) + float(self.nll(tm)) - 2 * float(self.nll(t0))) / h ** 2
                out.append(1e-3 / math.sqrt(c))
        return torch.tensor(out, dtype=F64)

    @torch.no_grad()
    def fd_hessian(self):
        t0, h = self.theta0, self.steps()
        P = len(t0)
        H = torch.zeros(P, P, dtype=F64)
        for i in range(P):
            for j in range(i, P):
                def f(si, sj):
                    t = t0.clone()
                    t[i] += si * h[i]
                    t[j] += sj * h[j]
                    return float(self.nll(t))
                H[i, j] = H[j, i] = (f(1, 1) - f(1, -1) - f(-1, 1) + f(-1, -1)) / (4 * h[i] * h[j])
        return H

    @torch.no_grad()
    def fd_jacobian(self):
        t0, h = self.theta0, self.steps()
        cols = []
        for k in range(len(t0)):
            tp, tm = t0.clone(), t0.clone()
            tp[k] += h[k]
            tm[k] -= h[k]
            cols.append((self.nu(tp) - self.nu(tm)) / (2 * h[k]))
        return torch.stack(cols, 1)  # (bins, P)


def _poi_var(H):
    return float(torch.linalg.inv(H)[0, 0])


# ------------------------------------------------------------------ VariableSoftmax
def test_variable_softmax():
    x = torch.randn(7, 5, dtype=F64) * 30
    for t in (0.1, 1.0, 3.0):
        torch.testing.assert_close(VariableSoftmax(t)(x), torch.softmax(x / t, -1), rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(VariableSoftmax(0.1, dim=0)(x), torch.softmax(x / 0.1, 0), rtol=1e-12, atol=1e-15)
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="temp"):
            VariableSoftmax(bad)


# ------------------------------------------------------------------ Hessian references
@pytest.mark.parametrize("hessian,tangents", [("fisher", "sequential"), ("fisher", "jvp"), ("autograd", "auto")])
def test_hessian_matches_finite_differences(hessian, tangents):
    net = _tiny_net()
    x, y, w = _batch()
    nuis = _generic_nuisances()
    cb = Inferno(nuis, mu_true=40.0, b_true=900.0, hessian=hessian, tangents=tangents)
    loss = cb.loss_on(net, x, y, w)
    H = cb.last_hessian
    ref = RefModel(net, x, y, w, nuis, 40.0, 900.0)
    H_fd = ref.fd_hessian()
    scale = torch.sqrt(torch.outer(H_fd.diagonal(), H_fd.diagonal()))
    assert float(((H - H_fd).abs() / scale).max()) < 1e-5
    assert float(loss.detach()) == pytest.approx(_poi_var(H_fd), rel=1e-4)
    # the autograd Hessian of the reference NLL (no finite-difference error)
    H_ad = torch.autograd.functional.hessian(ref.nll, ref.theta0)
    torch.testing.assert_close(H, H_ad, rtol=1e-9, atol=1e-12)
    assert float(loss.detach()) == pytest.approx(_poi_var(H_ad), rel=1e-9)


def test_hessian_is_fisher_form_at_asimov():
    net = _tiny_net(seed=3)
    x, y, w = _batch(seed=3)
    nuis = _generic_nuisances()
    cb = Inferno(nuis, mu_true=50.0, b_true=1000.0)
    cb.loss_on(net, x, y, w)
    ref = RefModel(net, x, y, w, nuis, 50.0, 1000.0)
    J = ref.fd_jacobian()
    nu = ref.n
    H_fisher = J.t() @ (J / nu[:, None]) + torch.diag(_curvatures(nuis))
    scale = torch.sqrt(torch.outer(H_fisher.diagonal(), H_fisher.diagonal()))
    assert float(((cb.last_hessian - H_fisher).abs() / scale).max()) < 1e-6
    # and the full second derivative of the NLL equals it there
    H_ad = torch.autograd.functional.hessian(ref.nll, ref.theta0)
    assert float(((H_ad - H_fisher).abs() / scale).max()) < 1e-6


def test_gamma_constraint_curvature():
    nuis = [ShapeNuisance("scale", scale_feature(2), on="b", nominal=1.0,
                          constraint=Gamma(torch.tensor(50.0, dtype=F64), torch.tensor(49.0, dtype=F64)))]
    net = _tiny_net(seed=2)
    x, y, w = _batch(seed=2)
    cb = Inferno(nuis)
    cb.loss_on(net, x, y, w)
    ref = RefModel(net, x, y, w, nuis, cb.mu_true, cb.b_true)
    torch.testing.assert_close(cb.last_hessian, torch.autograd.functional.hessian(ref.nll, ref.theta0),
                               rtol=1e-9, atol=1e-12)
    assert float(cb.last_hessian[1, 1]) > 49.0  # (k - 1)/x^2 = 49 plus the Fisher term


# ------------------------------------------------------------------ gradient wrt the weights
def _fd_weight_grad(net, loss_fn, n_check=None, h=1e-6, seed=0):
    params = [p for p in net.parameters()]
    flat = [(i, j) for i, p in enumerate(params) for j in range(p.numel())]
    if n_check is not None:
        rng = np.random.default_rng(seed)
        flat = [flat[k] for k in rng.choice(len(flat), min(n_check, len(flat)), replace=False)]
    out = []
    with torch.no_grad():
        for i, j in flat:
            p = params[i].view(-1)
            old = float(p[j])
            p[j] = old + h
            lp = float(loss_fn())
            p[j] = old - h
            lm = float(loss_fn())
            p[j] = old
            out.append((lp - lm) / (2 * h))
    return flat, np.array(out)


@pytest.mark.parametrize("make_cb,n_check", [
    (lambda n: Inferno(n, hessian="fisher", tangents="sequential"), None),
    (lambda n: Inferno(n, hessian="fisher", tangents="jvp"), 25),
    (lambda n: Inferno(n, hessian="autograd"), 25),
    (lambda n: ApproxInferno(n), 25),
])
def test_weight_gradient_matches_finite_differences(make_cb, n_check):
    net = _tiny_net(seed=5, hidden=5)
    x, y, w = _batch(n=50, seed=5)
    cb = make_cb(_generic_nuisances())
    loss = cb.loss_on(net, x, y, w)
    net.zero_grad()
    loss.backward()
    grads = [p.grad.clone() for p in net.parameters()]
    flat, fd = _fd_weight_grad(net, lambda: cb.loss_on(net, x, y, w), n_check)
    an = np.array([float(grads[i].view(-1)[j]) for i, j in flat])
    np.testing.assert_allclose(an, fd, rtol=1e-5, atol=1e-6 * np.abs(fd).max())
    assert np.abs(fd).max() > 0


# ------------------------------------------------------------------ strategies agree
def _paper_batch(n=600, seed=0, dtype=torch.float32):
    data = get_paper_data(n, bs=n, seed=seed, n_val=0)
    x, y, w = next(iter(data.trn_dl))
    return x.to(dtype), y.to(dtype), None


def _relu_net(seed=0, dtype=torch.float32, n_out=10, act=nn.ReLU, hidden=32):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, hidden), act(), nn.Linear(hidden, hidden), act(),
                         nn.Linear(hidden, n_out), VariableSoftmax(0.1)).to(dtype)


def _loss_and_grad(cb, net, x, y, w=None):
    net.zero_grad()
    loss = cb.loss_on(net, x, y, w)
    loss.backward()
    return float(loss), torch.cat([p.grad.reshape(-1) for p in net.parameters()]).to(F64)


@pytest.mark.parametrize("dtype,rtol", [(F64, 1e-10), (torch.float32, 2e-4)])
@pytest.mark.parametrize("act", [nn.ReLU, nn.Softplus, nn.SiLU])
def test_hessian_strategies_agree(dtype, rtol, act):
    net = _relu_net(seed=1, dtype=dtype, act=act)
    x, y, _ = _paper_batch(dtype=dtype)
    w = torch.rand(len(x), dtype=dtype) + 0.5
    res = {}
    for name, kw in {"seq": dict(tangents="sequential"), "jvp": dict(tangents="jvp"),
                     "ag": dict(hessian="autograd")}.items():
        cb = PaperInferno.from_benchmark(4, **kw)
        res[name] = _loss_and_grad(cb, net, x, y, w)
    l0, g0 = res["seq"]
    for name, (l, g) in res.items():
        assert l == pytest.approx(l0, rel=rtol), name
        assert float((g - g0).norm() / g0.norm()) < 10 * rtol, name


def _chain_nets():
    """Linear/piecewise-linear/Softmax networks (the hand-written tangent backward)."""
    torch.manual_seed(11)
    relu = nn.ReLU()
    return {
        "relu-shared": nn.Sequential(nn.Linear(3, 7), relu, nn.Linear(7, 6), relu, nn.Linear(6, 5),
                                     VariableSoftmax(0.3)),
        "leaky-nested": nn.Sequential(nn.Sequential(nn.Linear(3, 6), nn.LeakyReLU(0.1)), nn.Identity(),
                                      nn.Linear(6, 6), nn.LeakyReLU(0.2), nn.ReLU(), nn.Linear(6, 4),
                                      nn.Softmax(dim=1)),
        "one-hidden": nn.Sequential(nn.Linear(3, 8), nn.LeakyReLU(0.05), nn.Linear(8, 5), VariableSoftmax(0.5)),
        "no-hidden": nn.Sequential(nn.Linear(3, 4), VariableSoftmax(0.5)),
        "linear-linear": nn.Sequential(nn.Linear(3, 5), nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 4),
                                       VariableSoftmax(0.5)),
    }


@pytest.mark.parametrize("name", list(_chain_nets()))
@pytest.mark.parametrize("weighted", [False, True])
def test_chain_tangents_match_layer_rules_and_references(name, weighted):
    """The hand-written backward of ChainTangents against the layer-by-layer rules with
    autograd (hessian='autograd'), forward mode through the whole network, and finite
    differences, with column-form (shift, scale) and dense (a user lambda) input tangents on
    both groups."""
    net = _chain_nets()[name].double()
    x, y, w = _batch(n=70, seed=12, weights=weighted)
    nuis = _generic_nuisances()
    res = {}
    for key, kw in (("chain", dict(tangents="sequential")), ("forward-mode", dict(tangents="jvp")),
                    ("rules", dict(hessian="autograd"))):
        res[key] = _loss_and_grad(Inferno(nuis, **kw), net, x, y, w)
    l0, g0 = res["chain"]
    for key, (l, g) in res.items():
        assert l == pytest.approx(l0, rel=1e-11), key
        assert float((g - g0).norm() / g0.norm()) < 1e-10, key
    cb = Inferno(nuis, tangents="sequential")
    flat, fd = _fd_weight_grad(net, lambda: cb.loss_on(net, x, y, w), n_check=20, seed=1, h=1e-4)
    an = np.array([float(g) for g in g0])
    sizes = np.cumsum([0] + [p.numel() for p in net.parameters()])
    an = np.array([an[sizes[i] + j] for i, j in flat])
    np.testing.assert_allclose(an, fd, rtol=1e-5, atol=1e-6 * np.abs(fd).max())


def test_fast_paths_agree_with_autograd():
    """The fused loss node gives the autograd strategy's loss and gradient; degenerate
    parameters are refused."""
    net = _relu_net(seed=9, dtype=F64)
    x, y, _ = _paper_batch(n=300, dtype=F64)
    w = torch.rand(len(x), dtype=F64) + 0.5
    for k in (0, 2, 4):
        l, g = _loss_and_grad(PaperInferno.from_benchmark(k), net, x, y, w)
        l_ag, g_ag = _loss_and_grad(PaperInferno.from_benchmark(k, hessian="autograd"), net, x, y, w)
        assert l == pytest.approx(l_ag, rel=1e-11)
        assert float((g - g_ag).norm() / g_ag.norm()) < 1e-10
    with pytest.raises(ValueError, match="not positive definite"):
        Inferno([RateNuisance("b1", on="b", mode="scale"), RateNuisance("b2", on="b", mode="scale")]).loss_on(net, x, y)


@pytest.mark.parametrize("tangents", ["sequential", "jvp"])
def test_singular_fisher_is_refused(tangents):
    net = _relu_net(seed=5, dtype=F64)
    x, y, _ = _paper_batch(n=300, dtype=F64)
    with pytest.raises(ValueError, match="not positive definite"):
        Inferno([RateNuisance("b1", on="b", mode="scale"),
                 RateNuisance("b2", on="b", mode="scale")], tangents=tangents).loss_on(net, x, y)


def test_recorder_hooks_only_what_the_layer_rules_need():
    """A plain Sequential of Linear/ReLU/softmax gets no hooks on its Linear layers (slow
    call path), and they go after the loss; a Sequential subclass with its own forward is not
    recorded (forward mode through it); both give the autograd strategy's loss and gradient."""

    class MySeq(nn.Sequential):
        def forward(self, x):
            return super().forward(x)

    torch.manual_seed(3)
    plain = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 5),
                          VariableSoftmax(0.3)).double()
    custom = MySeq(*[m for m in plain])
    x, y, w = _batch(seed=8)
    ref = _loss_and_grad(PaperInferno.from_benchmark(4, hessian="autograd"), plain, x, y, w)
    for net, hooked in ((plain, True), (custom, False)):
        cb = PaperInferno.from_benchmark(4)
        cb.set_wrapper(ModelWrapper(net))
        cb._install()
        assert not net[0]._forward_hooks
        assert bool(net[1]._forward_hooks) == hooked and bool(net[5]._forward_hooks) == hooked
        cb._release()
        assert not any(m._forward_hooks for m in net.modules())
        loss, grad = _loss_and_grad(PaperInferno.from_benchmark(4), net, x, y, w)
        assert not any(m._forward_hooks for m in net.modules())
        assert loss == pytest.approx(ref[0], rel=1e-11)
        assert float((grad - ref[1]).norm() / ref[1].norm()) < 1e-10


def test_sequential_handles_shared_and_nested_modules():
    """A module object used twice (a common way of writing nets) and nested Sequentials."""
    torch.manual_seed(4)
    act = nn.Tanh()
    inner = nn.Sequential(nn.Linear(3, 8), act)
    net = nn.Sequential(inner, nn.Linear(8, 8), act, nn.Identity(), nn.Linear(8, 8), nn.Sigmoid(),
                        nn.Dropout(0.3), nn.Linear(8, 5), VariableSoftmax(0.3)).double().eval()
    x, y, w = _batch(seed=4)
    nuis = _generic_nuisances()
    l_seq = Inferno(nuis, tangents="sequential").loss_on(net, x, y, w)
    l_ag = Inferno(nuis, hessian="autograd").loss_on(net, x, y, w)
    ref = RefModel(net, x, y, w, nuis, 50.0, 1000.0)
    l_ref = _poi_var(torch.autograd.functional.hessian(ref.nll, ref.theta0))
    assert float(l_ag) == pytest.approx(l_ref, rel=1e-9)
    assert float(l_seq) == pytest.approx(l_ref, rel=1e-9)


def test_loss_on_does_not_disturb_training_state():
    """loss_on called during training (e.g. by a monitoring callback) leaves the callback usable."""
    net = _relu_net(seed=2, dtype=F64)
    x, y, _ = _paper_batch(dtype=F64)
    cb = PaperInferno.from_benchmark(3, tangents="sequential")
    wr = ModelWrapper(net)
    wr.loss_func = None
    cb.set_wrapper(wr)
    cb.on_train_begin()
    cb.loss_on(net, x, y)  # a second wrapper in between
    assert cb.wrapper is wr
    wr.x, wr.y, wr.w, wr.state = x, y, None, "train"
    cb.on_batch_begin()
    wr.y_pred = net(wr.x)
    cb.on_forwards_end()
    assert float(wr.loss_val) == pytest.approx(float(cb.loss_on(net, x, y)), rel=1e-10)


# ------------------------------------------------------------------ exact vs interpolated
def test_exact_and_interpolated_agree_for_small_variations():
    d = 1e-4
    nuis_exact = _generic_nuisances()
    nuis_interp = [
        ShapeNuisance("shift", shift_feature(0), on="b", nominal=0.0, constraint=0.4, variations=(-d, d)),
        ShapeNuisance("scale", scale_feature(2), on="both", nominal=1.0, variations=(1 - d, 1 + d)),
        ShapeNuisance("tilt", nuis_exact[2].transform, on="s", nominal=0.3, constraint=nuis_exact[2].constraint,
                      variations=(0.3 - 2 * d, 0.3 + 2 * d)),
        RateNuisance("b", on="b", mode="add", constraint=100.0),
        RateNuisance("lumi", on="s", mode="scale", constraint=0.05),
    ]
    net = _tiny_net(seed=6)
    x, y, w = _batch(seed=6)
    exact = Inferno(nuis_exact, mu_true=40.0, b_true=900.0)
    approx = ApproxInferno(nuis_interp, mu_true=40.0, b_true=900.0)
    le, la = exact.loss_on(net, x, y, w), approx.loss_on(net, x, y, w)
    assert float(la) == pytest.approx(float(le), rel=1e-6)
    # the Hessians are related by the change of variable theta = theta0 + delta * alpha
    delta = torch.tensor([1.0, d, d, 2 * d, 1.0, 1.0], dtype=F64)
    torch.testing.assert_close(approx.last_hessian, exact.last_hessian * torch.outer(delta, delta),
                               rtol=1e-5, atol=1e-12)
    # and the gradients with respect to the weights
    ge = torch.autograd.grad(exact.loss_on(net, x, y, w), list(net.parameters()))
    ga = torch.autograd.grad(approx.loss_on(net, x, y, w), list(net.parameters()))
    for a, b in zip(ga, ge):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6 * float(b.abs().max()))
    # large variations do not give the same answer (the test can tell them apart)
    big = ApproxInferno([ShapeNuisance("shift", shift_feature(0), on="b", constraint=0.4, variations=(-1.5, 1.5)),
                         *nuis_interp[1:]], mu_true=40.0, b_true=900.0)
    big.loss_on(net, x, y, w)
    assert abs(float(big.last_hessian[1, 1]) / 1.5 ** 2 / float(exact.last_hessian[1, 1]) - 1) > 1e-2


def test_paper_exact_and_interpolated_agree():
    net = _relu_net(seed=3, dtype=F64, act=nn.Tanh)  # smooth: no kinks between up and down
    x, y, _ = _paper_batch(dtype=F64)
    for k in (1, 2, 3, 4):
        le = paper_inferno(k).loss_on(net, x, y)
        la = paper_inferno(k, approx=True, r_mods=(-1e-5, 1e-5), l_mods=(3 - 1e-5, 3 + 1e-5)).loss_on(net, x, y)
        assert float(la) == pytest.approx(float(le), rel=1e-5), k
    # the paper's own variations give a (slightly) different value
    l_paper = float(paper_inferno(2, approx=True).loss_on(net, x, y))
    assert l_paper != pytest.approx(float(paper_inferno(2).loss_on(net, x, y)), rel=1e-6)


# ------------------------------------------------------------------ units and constraints
def test_paper_constraints_in_physical_units():
    net = _relu_net(seed=4, dtype=F64)
    x, y, _ = _paper_batch(dtype=F64)
    H = {}
    for k in (2, 3, 4):
        cb = PaperInferno.from_benchmark(k)
        cb.loss_on(net, x, y)
        H[k] = cb.last_hessian
    # N(r | 0, 0.4) and N(lambda | 3, 1): curvatures 1/0.4^2 and 1/1^2
    torch.testing.assert_close(H[3] - H[2], torch.diag(torch.tensor([0.0, 6.25, 1.0], dtype=F64)),
                               rtol=0, atol=1e-9)
    torch.testing.assert_close(H[4][:3, :3], H[3], rtol=1e-12, atol=1e-12)
    # b: d nu / d b = f_b, plus 1/100^2
    with torch.no_grad():
        out = net(x)
    f = {c: ((out[y.reshape(-1) == c].mean(0) + EPS) / (1 + 10 * EPS)) for c in (0, 1)}
    nu = 50 * f[1] + 1000 * f[0]
    assert float(H[4][3, 3]) == pytest.approx(float((f[0] ** 2 / nu).sum()) + 1e-4, rel=1e-10)
    assert float(H[4][0, 3]) == pytest.approx(float((f[0] * f[1] / nu).sum()), rel=1e-10)
    # the same constraints given as distributions
    cb = PaperInferno(shape_aux=[Normal(0.0, 0.4), Normal(3.0, 1.0)])
    cb.loss_on(net, x, y)
    torch.testing.assert_close(cb.last_hessian, H[3], rtol=1e-6, atol=1e-9)
    # interpolated: alpha_r = r / 0.2, alpha_l = (l - 3) / 0.5 -> N(alpha | 0, 2) for both
    Ha = {}
    for k in (2, 3):
        cb = ApproxPaperInferno.from_benchmark(k)
        cb.loss_on(net, x, y)
        Ha[k] = cb.last_hessian
    torch.testing.assert_close(Ha[3] - Ha[2], torch.diag(torch.tensor([0.0, 0.25, 0.25], dtype=F64)),
                               rtol=0, atol=1e-9)


def test_paper_nuisance_transforms_match_sampler():
    """The transforms inside PaperInferno move nominal background to the shifted one
    (inferno.paper's transform itself is tested in test_paper.py)."""
    cb = PaperInferno(float_r=True, float_l=True)
    r_n, l_n = cb.nuisances
    nominal = torch.tensor(sample_background(20_000, seed=31))
    moved = l_n.apply(r_n.apply(nominal, 0.3), 2.5).numpy()
    direct = sample_background(20_000, r=0.3, lam=2.5, seed=32)
    for j in range(3):
        assert stats.ks_2samp(moved[:, j], direct[:, j]).pvalue > 1e-3
    assert moved[:, 2].mean() == pytest.approx(1 / 2.5, rel=0.03)
    # the nominal values leave the inputs unchanged
    torch.testing.assert_close(l_n.apply(r_n.apply(nominal, 0.0), 3.0), nominal)


def test_benchmark_arguments():
    with pytest.raises(ValueError, match="benchmark"):
        paper_inferno(7)
    assert PaperInferno.from_benchmark(0).param_names == ("mu",)
    assert PaperInferno.from_benchmark(4).param_names == ("mu", "r", "l", "b")
    assert ApproxPaperInferno.from_benchmark(2).param_names == ("mu", "r", "l")
    cb = PaperInferno(float_r=True, float_l=False, nonaux_b_norm=True, s_norm_aux=[5.0])
    assert cb.param_names == ("mu", "r", "b", "s_norm0")
    assert cb.nuisances[1].is_free and not cb.nuisances[2].is_free
    # pytorch_inferno's argument forms, taken as calc_profile takes them: a list of
    # constraints (one additive nuisance each), and a free rate beside a constrained one
    from torch.distributions import Normal as _N

    listed = PaperInferno(b_norm_aux=[_N(0.0, 100.0)])
    assert listed.param_names == PaperInferno(b_norm_aux=100.0).param_names == ("mu", "r", "l", "b")
    assert float(listed.nuisances[2].constraint.scale) == 100.0
    assert PaperInferno(b_norm_aux=[100.0, 50.0]).param_names == ("mu", "r", "l", "b", "b_norm1")
    both = PaperInferno(nonaux_b_norm=True, b_norm_aux=100.0)
    assert both.param_names == ("mu", "r", "l", "b", "b_free") and both.nuisances[3].is_free
    with pytest.raises(ValueError, match="shape_aux"):
        PaperInferno(shape_aux=[0.4])


# ------------------------------------------------------------------ errors
def test_batch_without_signal_or_background():
    net = _tiny_net()
    x, y, w = _batch()
    for cb in (Inferno(_generic_nuisances()), ApproxInferno(_generic_nuisances())):
        with pytest.raises(ValueError, match="no events of process 'signal'"):
            cb.loss_on(net, x, torch.zeros_like(y))
        with pytest.raises(ValueError, match="no events of process 'background'"):
            cb.loss_on(net, x, torch.ones_like(y))
        with pytest.raises(ValueError, match="1 \\(signal\\) or 0"):
            cb.loss_on(net, x, y * 2)
        with pytest.raises(ValueError, match="summed weight of process"):
            cb.loss_on(net, x, y, torch.where(y == 1, 0.0, 1.0).to(F64))


@pytest.mark.parametrize("make", [lambda n: Inferno(n), lambda n: Inferno(n, hessian="autograd"),
                                  lambda n: Inferno(n, tangents="jvp"), lambda n: ApproxInferno(n)])
def test_non_positive_definite_hessian(make):
    # a free nuisance with no effect: its row of the Hessian is zero
    dead = ShapeNuisance("dead", lambda x, v: x + 0 * v, on="b", variations=(-1.0, 1.0))
    cb = make([dead])
    net = _tiny_net()
    x, y, w = _batch()
    with pytest.raises(ValueError, match="not positive definite"):
        cb.loss_on(net, x, y, w)
    # two free background normalisations are degenerate with each other
    cb = make([RateNuisance("b1", on="b", mode="scale"), RateNuisance("b2", on="b", mode="scale")])
    with pytest.raises(ValueError, match="not positive definite"):
        cb.loss_on(net, x, y, w)


@pytest.mark.parametrize("make", [lambda: PaperInferno.from_benchmark(3),
                                  lambda: PaperInferno.from_benchmark(3, hessian="autograd"),
                                  lambda: ApproxPaperInferno.from_benchmark(3)])
def test_nan_network_output(make):
    net = _relu_net(dtype=F64)
    with torch.no_grad():
        net[2].weight[3, 4] = math.nan
    x, y, _ = _paper_batch(dtype=F64)
    with pytest.raises(ValueError, match="NaN"):
        make().loss_on(net, x, y)


def test_construction_errors():
    updown = ShapeNuisance("ud", up=lambda x: x + 1, down=lambda x: x - 1, on="b")
    with pytest.raises(ValueError, match="ApproxInferno"):
        Inferno([updown])
    with pytest.raises(ValueError, match="variations"):
        ApproxInferno([ShapeNuisance("r", shift_feature(0))])
    with pytest.raises(ValueError, match="hessian"):
        Inferno(hessian="newton")
    with pytest.raises(ValueError, match="tangents"):
        Inferno(tangents="reverse")
    with pytest.raises(ValueError, match="unique"):
        Inferno([RateNuisance("b"), RateNuisance("b")])
    with pytest.raises(ValueError, match="reserved"):
        Inferno([RateNuisance("mu")])
    with pytest.raises(ValueError, match="b_true"):
        Inferno(b_true=0.0)
    with pytest.raises(ValueError, match="symmetric"):
        ShapeNuisance("r", shift_feature(0), constraint=0.4, variations=(-0.1, 0.3))
    with pytest.raises(ValueError, match="'s', 'b' or 'both'"):  # 'x' names a process of an Analysis
        Inferno([ShapeNuisance("r", shift_feature(0), on="x")])
    with pytest.raises(ValueError, match="'s', 'b', 'both', a process name"):
        ShapeNuisance("r", shift_feature(0), on=3)
    with pytest.raises(ValueError, match="nominal must be > 0"):
        RateNuisance("k", mode="scale", nominal=0.0)
    with pytest.raises(ValueError, match="scalar distribution"):
        ShapeNuisance("r", shift_feature(0), constraint=Normal(torch.zeros(2), torch.ones(2)))
    with pytest.raises(ValueError, match="shape"):
        ShapeNuisance("r", lambda x, v: x[:, :2], on="b").apply(torch.zeros(3, 3), 0.0)
    # a layer without a tangent rule (LayerNorm) gets forward mode from its recorded input,
    # the others their rules: the same loss as forward mode through the whole model
    net = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 3), nn.Softmax(-1)).double()
    x, y, w = _batch()
    l_seq = Inferno(_generic_nuisances(), tangents="sequential").loss_on(net, x, y, w)
    l_auto = Inferno(_generic_nuisances()).loss_on(net, x, y, w)
    l_jvp = Inferno(_generic_nuisances(), tangents="jvp").loss_on(net, x, y, w)
    l_ag = Inferno(_generic_nuisances(), hessian="autograd").loss_on(net, x, y, w)
    for val in (l_seq, l_auto, l_ag):
        assert float(val) == pytest.approx(float(l_jvp), rel=1e-9)
    with pytest.raises(ValueError, match="sequential"):
        Inferno(_generic_nuisances(), tangents="sequential").loss_on(_Custom(net), x, y, w)


class _Custom(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x)


def test_fit_with_a_loss_is_refused():
    net = _relu_net()
    data = get_paper_data(400, bs=200, seed=0, n_val=0)
    with pytest.raises(ValueError, match="loss=None"):
        ModelWrapper(net).fit(1, data, functools.partial(torch.optim.Adam, lr=1e-3), nn.MSELoss(),
                              cbs=[PaperInferno.from_benchmark(2)])


def test_bad_output_shape():
    net = nn.Sequential(nn.Linear(3, 1)).double()
    x, y, w = _batch()
    with pytest.raises(ValueError, match="n_bins >= 2"):
        Inferno([RateNuisance("b", constraint=10.0)]).loss_on(net, x, y, w)


# ------------------------------------------------------------------ training loop
@pytest.mark.parametrize("kw", [dict(), dict(hessian="autograd"), dict(tangents="jvp"), "approx"])
def test_training_and_validation_phases(kw):
    data = get_paper_data(1200, bs=400, seed=1, n_val=400)
    net = _relu_net(seed=6, hidden=16)
    cb = ApproxPaperInferno.from_benchmark(4) if kw == "approx" else PaperInferno.from_benchmark(4, **kw)
    wr = ModelWrapper(net)
    before = [p.detach().clone() for p in net.parameters()]
    hist = wr.fit(2, data, functools.partial(torch.optim.Adam, lr=1e-3), None, cbs=[cb])
    assert len(hist["train"]) == 2 and len(hist["valid"]) == 2
    assert all(math.isfinite(v) and v > 0 for v in hist["train"] + hist["valid"])
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))
    # the validation loss is the INFERNO loss of the final network on the validation batch
    xv, yv, wv = next(iter(data.val_dl))
    net.eval()
    expect = cb.loss_on(net, xv, yv, wv)
    assert hist["valid"][-1] == pytest.approx(float(expect), rel=1e-5)
    # the training hooks were released
    assert not any(m._forward_hooks for m in net.modules())


def test_dropout_in_training():
    """With Dropout active the tangents (sequential) and the Asimov pass (autograd) use the
    masks of the forward pass: the loss is that of the network with those masks."""
    torch.manual_seed(0)
    act = nn.Tanh()
    net = nn.Sequential(nn.Linear(3, 16), act, nn.Dropout(0.3), nn.Linear(16, 16),
                        nn.Dropout(0.2, inplace=True), nn.ReLU(), nn.Linear(16, 6), VariableSoftmax(0.3)).double().train()
    x, y, _ = _paper_batch(n=400, dtype=F64)
    order = torch.argsort(1 - y.reshape(-1), stable=True)  # signal first: no reordering inside
    x, y = x[order], y[order]
    n_s = int(y.sum())
    cb = PaperInferno.from_benchmark(3)

    def nll(theta):  # the whole batch with the same masks (same seed, same shapes)
        def nu(th):
            xb = x[n_s:]
            for p, n in enumerate(cb.nuisances, start=1):
                xb = n.transform(xb, th[p])
            torch.manual_seed(123)
            out = net(torch.cat([x[:n_s], xb]))
            f = [(out[sl].mean(0) + EPS) / (1 + 6 * EPS) for sl in (slice(0, n_s), slice(n_s, None))]
            return th[0] * f[0] + 1000.0 * f[1]
        n_asimov = nu(torch.tensor([50.0, 0.0, 3.0], dtype=F64)).detach()
        v = nu(theta)
        return (v - n_asimov * torch.log(v)).sum() + (theta[1] / 0.4) ** 2 / 2 + (theta[2] - 3) ** 2 / 2

    H_ref = torch.autograd.functional.hessian(nll, torch.tensor([50.0, 0.0, 3.0], dtype=F64))
    for kw in (dict(tangents="sequential"), dict(hessian="autograd")):
        cb = PaperInferno.from_benchmark(3, **kw)
        torch.manual_seed(123)
        loss = cb.loss_on(net, x, y)
        torch.testing.assert_close(cb.last_hessian, H_ref, rtol=1e-9, atol=1e-9)
        assert float(loss) == pytest.approx(_poi_var(H_ref), rel=1e-9)
    # the masks matter: another seed gives another loss
    torch.manual_seed(7)
    assert float(PaperInferno.from_benchmark(3).loss_on(net, x, y)) != pytest.approx(_poi_var(H_ref), rel=1e-6)
    # jvp reruns the model: refused with a clear message
    with pytest.raises(ValueError, match="random"):
        PaperInferno.from_benchmark(3, tangents="jvp").loss_on(net, x, y)
    # and training runs
    data = get_paper_data(800, bs=400, seed=2, n_val=400)
    for kw in (dict(), dict(hessian="autograd")):
        net32 = _relu_net(seed=1, hidden=8)
        net32.insert(2, nn.Dropout(0.2))
        hist = ModelWrapper(net32).fit(2, data, functools.partial(torch.optim.Adam, lr=1e-3), None,
                                       cbs=[PaperInferno.from_benchmark(3, **kw)])
        assert all(math.isfinite(v) for v in hist["train"] + hist["valid"])


def test_inferno_pred():
    torch.manual_seed(0)
    net = _relu_net(seed=8)
    x = torch.randn(300, 3)
    preds = ModelWrapper(net).predict(x, pred_cb=InfernoPred(), bs=128)
    assert preds.dtype == np.int64 and preds.shape == (300,)
    np.testing.assert_array_equal(preds, net(x).argmax(1).numpy())


# ------------------------------------------------------------------ the toy problem
def test_short_training_beats_bce_on_benchmark_2():
    """INFERNO (benchmark-2 nuisances r and lambda) against a BCE classifier trained on the
    same data: the INFERNO loss goes down and the profile-likelihood width of benchmark 2
    (r and lambda free) is narrower."""
    from inferno.inference import calc_profile, get_likelihood_width, get_paper_syst_shapes, get_shape

    torch.manual_seed(0)
    data = get_paper_data(8000, bs=1000, seed=0, n_val=0)
    test = get_paper_data(2, n_val=0, n_test=40_000, seed=99).tst_dl.dataset
    x_s, x_b = test.x[test.y[:, 0] == 1], test.x[test.y[:, 0] == 0]
    adam = functools.partial(torch.optim.Adam, lr=1e-3)

    def body(n_out):
        torch.manual_seed(1)
        return nn.Sequential(nn.Linear(3, 50), nn.ReLU(), nn.Linear(50, 50), nn.ReLU(), nn.Linear(50, n_out))

    inf = ModelWrapper(nn.Sequential(body(10), VariableSoftmax(0.1)))
    hist = inf.fit(30, data, adam, None, cbs=[PaperInferno.from_benchmark(2)])
    bce = ModelWrapper(nn.Sequential(body(1), nn.Sigmoid()))
    bce.fit(30, data, adam, nn.BCELoss())
    assert hist["train"][-1] < 0.7 * hist["train"][0]

    def width(wr, bins, pred_cb):
        shapes = get_paper_syst_shapes(wr, x_b, bins=bins, pred_cb=pred_cb)
        f_s = get_shape(wr.predict(x_s, pred_cb=pred_cb).reshape(-1), bins)
        mu = np.linspace(0, 120, 61)
        nll = calc_profile(f_s, n_obs=1050, mu_true=50, mu_scan=mu, b_true=1000, **shapes)
        return get_likelihood_width(nll, mu)

    w_inf = width(inf, 10, InfernoPred())
    w_bce = width(bce, np.linspace(0, 1, 11), None)
    assert w_inf < 0.9 * w_bce, (w_inf, w_bce)
    assert w_inf > 15.0  # cannot beat the unbinned Fisher limit of benchmark 2 (15.6)


# ------------------------------------------------------------------ CUDA
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("kw", [dict(), dict(hessian="autograd"), dict(tangents="jvp"), "approx"])
def test_cuda_training_and_prediction(kw):
    data = get_paper_data(2000, bs=500, seed=3, n_val=500)
    torch.manual_seed(0)
    net = _relu_net(seed=0, hidden=32).cuda()
    cb = ApproxPaperInferno.from_benchmark(4) if kw == "approx" else PaperInferno.from_benchmark(4, **kw)
    wr = ModelWrapper(net)
    assert wr.device.type == "cuda"
    hist = wr.fit(2, data, functools.partial(torch.optim.Adam, lr=1e-3), None, cbs=[cb])
    assert all(math.isfinite(v) for v in hist["train"] + hist["valid"])
    assert cb.last_hessian.device.type == "cuda"
    preds = wr.predict(torch.randn(100, 3), pred_cb=InfernoPred())
    assert preds.shape == (100,) and preds.dtype == np.int64
    # same loss as on the CPU
    xv, yv, _ = next(iter(data.val_dl))
    l_gpu = float(cb.loss_on(net, xv, yv))
    l_cpu = float(cb.loss_on(net.cpu(), xv, yv))
    assert l_gpu == pytest.approx(l_cpu, rel=1e-4)


# ----------------------------------------------------------------------------- review regressions
def test_dropout_mask_exact_with_zero_inputs():
    """Input Dropout in training with features that are exactly 0: the sequential tangents use
    the forward pass's real mask (an element kept but equal to 0 is not 'dropped')."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Dropout(0.3), nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 4),
                        VariableSoftmax(0.5)).double().train()
    x = torch.randn(400, 3, dtype=F64)
    y = (torch.arange(400) % 2).to(F64)
    x[::3, 0] = 0.0
    nuis = [ShapeNuisance("shift", shift_feature(0), on="b", constraint=0.5)]
    out = []
    for kw in (dict(tangents="sequential"), dict(hessian="autograd")):
        torch.manual_seed(123)
        cb = Inferno(nuis, **kw)
        out.append((float(cb.loss_on(net, x, y)), cb.last_hessian))
    assert out[0][0] == pytest.approx(out[1][0], rel=1e-10)
    torch.testing.assert_close(out[0][1], out[1][1], rtol=1e-9, atol=1e-12)


def test_recorder_holds_nothing_after_an_interrupted_fit():
    torch.manual_seed(0)
    net = _relu_net()
    data = get_paper_data(4000, bs=1000, seed=0, n_val=0)
    calls = [0]

    def interrupt(mod, args, out):
        calls[0] += 1
        if calls[0] == 3:
            raise KeyboardInterrupt

    h = net[-2].register_forward_hook(interrupt)
    cb = PaperInferno.from_benchmark(2)
    wr = ModelWrapper(net)
    with pytest.raises(KeyboardInterrupt):
        wr.fit(2, data, functools.partial(torch.optim.Adam, lr=1e-3), None, cbs=[cb])
    h.remove()
    wr.predict(torch.randn(20_000, 3), bs=2000)
    assert cb._recorder is None or len(cb._recorder.calls) == 0


def test_out_of_range_column_is_an_error():
    x, y, _ = _batch(weights=False)
    for kw in (dict(), dict(tangents="jvp"), dict(hessian="autograd")):
        cb = Inferno([ShapeNuisance("s", shift_feature(3), on="b", constraint=0.5)], **kw)
        with pytest.raises((ValueError, IndexError), match="column|range|shape"):
            cb.loss_on(_tiny_net(), x, y)


def test_empty_bin_without_floor_is_a_value_error():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 5), VariableSoftmax(0.1))
    with torch.no_grad():
        net[2].bias[4] = -20.0  # bin 4 underflows to exactly 0 in float32
    x, y, _ = next(iter(get_paper_data(1000, bs=1000, seed=0, n_val=0).trn_dl))
    for k in (0, 2):
        with pytest.raises(ValueError, match="bin 4 of the learned channel is empty"):
            PaperInferno.from_benchmark(k, eps=0.0).loss_on(net, x, y)


def test_second_order_derivatives_are_refused_not_wrong():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 5), VariableSoftmax(0.1)).double()
    x, y, _ = next(iter(get_paper_data(1000, bs=1000, seed=0, n_val=0).trn_dl))
    loss = PaperInferno.from_benchmark(2).loss_on(net, x.double(), y.double())
    with pytest.raises(RuntimeError, match="first derivatives only"):
        torch.autograd.grad(loss, list(net.parameters()), create_graph=True)
    # the autograd strategy gives exact higher derivatives: the gradient of a gradient
    # penalty matches finite differences along a random direction
    cb = PaperInferno.from_benchmark(2, hessian="autograd")
    params = list(net.parameters())

    def penalty():
        g = torch.autograd.grad(cb.loss_on(net, x.double(), y.double()), params, create_graph=True)
        return sum((gi ** 2).sum() for gi in g)

    grads = torch.autograd.grad(penalty(), params)
    d = [torch.randn_like(p) for p in params]
    h = 1e-6
    with torch.no_grad():
        for p, di in zip(params, d):
            p.add_(h * di)
    up = float(penalty())
    with torch.no_grad():
        for p, di in zip(params, d):
            p.sub_(2 * h * di)
    dw = float(penalty())
    with torch.no_grad():
        for p, di in zip(params, d):
            p.add_(h * di)
    fd = (up - dw) / (2 * h)
    an = float(sum((g * di).sum() for g, di in zip(grads, d)))
    assert an == pytest.approx(fd, rel=1e-4)


@pytest.mark.parametrize("approx", [False, True])
def test_callbacks_after_inferno_see_the_batch_as_loaded(approx):
    """The two-process callbacks group signal and background rows internally, but the
    callbacks that follow see x, y, w and y_pred in the loader's order (issue 10)."""
    import functools

    from inferno import AbsCallback, DataPair, DataSet, ModelWrapper, WeightedDataLoader

    x, y, w = _batch()
    ds = DataSet(x, y, w)
    seen = []

    class Look(AbsCallback):
        def on_forwards_end(self):
            wr = self.wrapper
            if wr.state == "train":
                seen.append((wr.x.clone(), wr.y.clone(), wr.w.clone(), wr.y_pred.detach().clone(),
                             wr.model(wr.x).detach()))

    nuis = [ShapeNuisance("r", shift_feature(0), on="b", constraint=0.4, variations=(-0.2, 0.2))]
    cb = (ApproxInferno if approx else Inferno)(nuis)
    dl = WeightedDataLoader(ds, len(ds))
    ModelWrapper(_tiny_net(dtype=torch.float32)).fit(1, DataPair(dl, None), functools.partial(torch.optim.SGD, lr=0.0),
                                                     loss=None, cbs=[cb, Look()], progress=False)
    (bx, by, bw, yp, again), = seen
    torch.testing.assert_close(bx, ds.x)
    torch.testing.assert_close(by, ds.y)
    torch.testing.assert_close(bw, ds.w)
    torch.testing.assert_close(yp, again)


def test_exact_inferno_releases_its_hooks_when_training_fails():
    """The exact callback records activations with forward hooks; an error in the middle of a
    fit (here a NaN input batch) leaves no hook on the network (on_teardown)."""
    import functools

    from inferno import AbsCallback, DataPair, DataSet, ModelWrapper, WeightedDataLoader

    net = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 4), VariableSoftmax(0.5))
    x, y, w = _batch(n=80, dtype=torch.float32)
    dl = WeightedDataLoader(DataSet(x, y, w), 40)
    cb = Inferno([ShapeNuisance("r", shift_feature(0), on="b", constraint=0.4)])

    class Boom(AbsCallback):
        def on_backwards_end(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        ModelWrapper(net).fit(1, DataPair(dl, None), functools.partial(torch.optim.SGD, lr=0.0), loss=None,
                              cbs=[cb, Boom()], progress=False)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())
