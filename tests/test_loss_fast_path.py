"""The one fast INFERNO path against slow, obviously correct references.

* the loss and its gradient equal the slow reference (tests/reference_loss.py: one
  torch.func.jvp per nuisance and process through the whole network, the compiled Model's
  Jacobian) on the 3-process analysis with every nuisance kind, a control region, MC
  statistics, several POIs and every loss kind, for every way the loss can be called;
* the tangents of every supported layer, of a layer without a rule, of a parameter-free input
  stage and of an arbitrary module equal central finite differences;
* the fused node and the autograd rules give the same sums and gradients.
"""
import pytest
import torch
from torch import nn

from inferno import VariableSoftmax, shift_feature
from inferno.loss import InfernoLoss, inferno_loss
from inferno.loss import tangents as tg

from reference_loss import reference_loss
from test_loss import _analysis, _batch, _net

F64 = torch.float64


def _grads(loss, net):
    net.zero_grad()
    loss.backward()
    return torch.cat([p.grad.reshape(-1) for p in net.parameters()])


def _callback_loss(analysis, net, x, lab, w, weights, tangents):
    return InfernoLoss(analysis, tangents=tangents).loss_on(net, x, lab, w, weights)


@pytest.mark.parametrize("mc_stat", [False, True])
@pytest.mark.parametrize("kind,pois", [("variance", ("mu",)), ("trace", ("mu", "k_tt")), ("logdet", ("mu", "k_tt"))])
def test_every_call_equals_the_slow_reference(kind, pois, mc_stat):
    analysis = _analysis(loss=kind, pois=pois, mc_stat=mc_stat)
    net = _net()
    x, lab, w, weights = _batch()
    ref = reference_loss(analysis, net, x, lab, w, weights=weights)
    g_ref = _grads(ref, net)
    with tg.Recorder(net) as rec:
        rec.arm()
        y = net(x)
        recorded = inferno_loss(analysis, net, x, lab, w, weights=weights, outputs=y, recorder=rec)
    calls = {
        "own forward": lambda: inferno_loss(analysis, net, x, lab, w, weights=weights),
        "outputs + recorder": lambda: recorded,
        "outputs, forward mode": lambda: inferno_loss(analysis, net, x, lab, w, weights=weights, outputs=net(x)),
        **{f"callback {t}": (lambda t=t: _callback_loss(analysis, net, x, lab, w, weights, t))
           for t in ("auto", "layers", "forward")},
    }
    for name, call in calls.items():
        loss = call()
        assert float(loss) == pytest.approx(float(ref), rel=1e-10), name
        g = _grads(loss, net)
        assert float((g - g_ref).norm() / g_ref.norm()) < 1e-7, name


class _Wrapped(nn.Module):
    """An arbitrary module (not a plain Sequential): forward mode through all of it."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x)


def test_arbitrary_module_equals_the_slow_reference():
    analysis = _analysis(pois=("mu", "k_tt"), loss="trace")
    net = _net()
    x, lab, w, weights = _batch()
    ref = reference_loss(analysis, net, x, lab, w, weights=weights)
    g_ref = _grads(ref, net)
    wrapped = _Wrapped(net)
    for loss in (inferno_loss(analysis, wrapped, x, lab, w, weights=weights),
                 _callback_loss(analysis, wrapped, x, lab, w, weights, "auto")):
        assert float(loss) == pytest.approx(float(ref), rel=1e-10)
        assert float((_grads(loss, net) - g_ref).norm() / g_ref.norm()) < 1e-7
    with pytest.raises(ValueError, match="plain nn.Sequential"):
        _callback_loss(analysis, wrapped, x, lab, w, weights, "layers")


class _NativeSoftmax(nn.Module):
    """An arbitrary module ending in torch's own softmax (forward mode through it, whose native
    forward-mode formula cannot be differentiated again in torch 2.13: pytorch/pytorch#162350)."""

    def __init__(self, net, how):
        super().__init__()
        self.body, self.temp, self.how = net[:-1], net[-1].temp, how

    def forward(self, x):
        z = self.body(x) / self.temp
        if self.how == "module":
            return nn.Softmax(dim=1)(z)
        if self.how == "tensor":
            return z.softmax(-1)
        if self.how == "log":
            return torch.log_softmax(z, dim=-1).exp()
        return torch.softmax(z, -1, dtype=F64)


@pytest.mark.parametrize("how", ["module", "tensor", "log", "function"])
def test_arbitrary_module_with_native_softmax_trains(how):
    analysis = _analysis()
    net = _net()
    x, lab, w, weights = _batch()
    ref = reference_loss(analysis, net, x, lab, w, weights=weights)
    g_ref = _grads(ref, net)
    for loss in (inferno_loss(analysis, _NativeSoftmax(net, how), x, lab, w, weights=weights),
                 _callback_loss(analysis, _NativeSoftmax(net, how), x, lab, w, weights, "auto")):
        assert float(loss) == pytest.approx(float(ref), rel=1e-10)
        assert float((_grads(loss, net) - g_ref).norm() / g_ref.norm()) < 1e-7


# ------------------------------------------------------------------------ tangents of layers
class _Features(nn.Module):
    """A parameter-free input stage (like a feature layer): derived features."""

    def forward(self, x):
        r = torch.sqrt(x[:, 0] ** 2 + x[:, 1] ** 2 + 1.0)
        return torch.stack([r, torch.atan2(x[:, 1], x[:, 0]), torch.where(x[:, 2] > 0, x[:, 2], 0.5 * x[:, 2]),
                            x[:, 0] / r], 1)


def _scale(x, v):  # a generic (non-column) transform: a scale of two columns, nominal 1
    return torch.cat([x[:, :2] * v, x[:, 2:]], 1)


_LAYERS = {
    "relu": nn.ReLU(), "leaky": nn.LeakyReLU(0.1), "elu": nn.ELU(), "gelu": nn.GELU(), "silu": nn.SiLU(),
    "tanh": nn.Tanh(), "sigmoid": nn.Sigmoid(), "softplus": nn.Softplus(), "identity": nn.Identity(),
    "hardtanh": nn.Hardtanh(), "dropout-eval": nn.Dropout(0.3).eval(), "layernorm (no rule)": nn.LayerNorm(8),
}


def _nets():
    for name, act in _LAYERS.items():
        torch.manual_seed(0)
        yield name, nn.Sequential(nn.Linear(3, 8), act, nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 5),
                                  VariableSoftmax(0.5)).double()
    torch.manual_seed(1)
    yield "input stage + softmax", nn.Sequential(_Features(), nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 5),
                                                 nn.Softmax(dim=1)).double()
    torch.manual_seed(2)
    yield "nested, shared activation", nn.Sequential(nn.Sequential(nn.Linear(3, 8), nn.ReLU()), nn.Linear(8, 8),
                                                     nn.ReLU(), nn.Linear(8, 5), VariableSoftmax(0.2)).double()


def _tangent_sums(net, x, transforms, a, pidx, n_proc, fused=True):
    leaves = tg.leaves_of(net)
    with tg.Recorder(net) as rec:
        rec.arm()
        y = net(x)
        calls = rec.collect(y, x)
    assert calls is not None
    i0 = tg.split_stage(leaves)
    stage = nn.Sequential(*leaves[:i0]) if i0 else None
    tan = tg.input_tangents(transforms, x, stage)
    return tg.propagate(leaves[i0:], calls[i0:], torch.arange(len(x)), tan, a, pidx, n_proc, fused)


def _fd_sums(f, x, transforms, a, pidx, n_proc, h=1e-6):
    out = []
    with torch.no_grad():
        for t, v0 in transforms:
            s = [tg.weighted_sums(f(t(x, torch.tensor(v0 + e, dtype=F64)))[None], a, pidx, n_proc)[0]
                 for e in (h, -h)]
            out.append((s[0] - s[1]) / (2 * h))
    return torch.stack(out)


@pytest.mark.parametrize("name,net", list(_nets()), ids=[n for n, _ in _nets()])
def test_layer_tangents_equal_finite_differences(name, net):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(60, 3, generator=g, dtype=F64)
    a = (0.5 + torch.rand(60, generator=g, dtype=F64))[None]
    pidx = torch.randint(3, (60,), generator=g)
    for transforms in ([(shift_feature(0), 0.0), (shift_feature(2), 0.0)], [(shift_feature(1), 0.0), (_scale, 1.0)]):
        fd = _fd_sums(net, x, transforms, a, pidx, 3)
        for fused in (True, False):
            got = _tangent_sums(net, x, transforms, a, pidx, 3, fused)
            torch.testing.assert_close(got, fd, rtol=1e-6, atol=1e-8)


def test_arbitrary_module_tangents_equal_finite_differences():
    torch.manual_seed(3)
    net = _Wrapped(nn.Sequential(_Features(), nn.Linear(4, 6), nn.GELU(), nn.Linear(6, 4), nn.Softmax(1)).double())
    g = torch.Generator().manual_seed(6)
    x = torch.randn(50, 3, generator=g, dtype=F64)
    a = torch.ones(1, 50, dtype=F64)
    pidx = torch.zeros(50, dtype=torch.long)
    transforms = [(shift_feature(0), 0.0), (_scale, 1.0)]
    got = tg.weighted_sums(tg.input_tangents(transforms, x, net).dense(x), a, pidx, 1)
    torch.testing.assert_close(got, _fd_sums(net, x, transforms, a, pidx, 1), rtol=1e-6, atol=1e-8)


def test_fused_node_and_autograd_rules_have_the_same_gradient():
    torch.manual_seed(4)
    net = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 16), nn.LeakyReLU(0.05), nn.Linear(16, 6),
                        VariableSoftmax(0.3)).double()
    g = torch.Generator().manual_seed(7)
    x = torch.randn(80, 3, generator=g, dtype=F64)
    a = (0.5 + torch.rand(80, generator=g, dtype=F64))[None]
    pidx = torch.randint(2, (80,), generator=g)
    probe = torch.randn(2, 2, 6, generator=g, dtype=F64)
    for transforms in ([(shift_feature(0), 0.0), (shift_feature(2), 0.0)], [(_scale, 1.0)]):
        grads = []
        for fused in (True, False):
            net.zero_grad()
            s = _tangent_sums(net, x, transforms, a, pidx, 2, fused)
            (s * probe[:len(s)]).sum().backward()
            grads.append(torch.cat([p.grad.reshape(-1) for p in net.parameters()]))
        torch.testing.assert_close(grads[0], grads[1], rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------ precomputed input-stage tangents
def _stage_analysis():
    """_analysis with a second, generic transform on signal and ttbar: two groups of processes."""
    from inferno.loss import Analysis
    from inferno.nuisance import ShapeNuisance

    an = _analysis(mc_stat=True)
    return Analysis(an.processes, [*an.nuisances, ShapeNuisance("scale", _scale, on=["signal", "ttbar"], nominal=1.0,
                                                                  constraint=0.1)],
                    poi="mu", fixed=an.fixed, mc_stat=True, parameters={"lumi": {"sigma": 0.02}})


def _stage_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(_Features(), nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 6), VariableSoftmax(0.3)).double()


def test_precomputed_stage_tangents_equal_the_reference():
    """stage_tangents' columns in the batch: the same loss and gradient as computing the feature
    layer's tangents in the batch (bit for bit), and as the slow reference."""
    from inferno.loss import stage_tangents

    analysis, net = _stage_analysis(), _stage_net()
    x, lab, w, weights = _batch()
    cols = stage_tangents(analysis, net, x, lab, chunk=100)  # several chunks
    assert sorted(cols) == ["tangent:jes", "tangent:scale"] and cols["tangent:jes"].shape == (len(x), 4)
    assert float(cols["tangent:scale"][lab == 2].abs().max()) == 0 < float(cols["tangent:scale"][lab == 1].abs().max())
    ref = reference_loss(analysis, net, x, lab, w, weights=weights)
    g_ref = _grads(ref, net)
    plain = inferno_loss(analysis, net, x, lab, w, weights=weights)
    g_plain = _grads(plain, net)
    for name, call in {"pure": lambda: inferno_loss(analysis, net, x, lab, w, weights={**weights, **cols}),
                       "callback": lambda: _callback_loss(analysis, net, x, lab, w, {**weights, **cols}, "auto")}.items():
        loss = call()
        assert float(loss) == float(plain), name
        g = _grads(loss, net)
        assert torch.equal(g, g_plain), name
        assert float(loss) == pytest.approx(float(ref), rel=1e-10), name
        assert float((g - g_ref).norm() / g_ref.norm()) < 1e-7, name


def test_training_with_precomputed_stage_tangents_is_the_same():
    """Two epochs of InfernoLoss on a DataSet carrying the tangents as extras: the same history."""
    from inferno import DataPair, DataSet, ModelWrapper, WeightedDataLoader
    from inferno.loss import stage_tangents
    import functools

    analysis = _stage_analysis()
    x, lab, w, weights = _batch(n=1200)
    hist = []
    for cached in (False, True):
        net = _stage_net(1).float()  # a DataSet holds float32
        extras = {**weights, **(stage_tangents(analysis, net, x.float(), lab) if cached else {})}
        ds = DataSet(x.float(), lab, w, extras)
        assert ds.extras.get("tangent:jes", torch.zeros(1, 4)).shape[1:] == (4,)
        data = DataPair(WeightedDataLoader(ds, 1200), WeightedDataLoader(ds, 1200))
        hist.append(ModelWrapper(net).fit(2, data, functools.partial(torch.optim.Adam, lr=1e-2), None,
                                          cbs=[InfernoLoss(analysis)], progress=False))
    assert hist[0] == hist[1] and hist[0]["train"][1] != hist[0]["train"][0]


def test_stage_tangents_bad_input():
    from inferno.loss import stage_tangents

    analysis = _stage_analysis()
    x, lab, w, weights = _batch()
    with pytest.raises(ValueError, match="input stage.*has none"):
        stage_tangents(analysis, _net(), x, lab)
    trainable = nn.Sequential(nn.LayerNorm(3), nn.Linear(3, 6), VariableSoftmax(0.3)).double()
    with pytest.raises(ValueError, match="trainable parameters"):
        stage_tangents(analysis, trainable, x, lab)
    with pytest.raises(ValueError, match="labels \\[7\\] belong to no process"):
        stage_tangents(analysis, _stage_net(), x, torch.where(lab == 2, 7, lab))
    cols = stage_tangents(analysis, _stage_net(), x, lab)
    with pytest.raises(ValueError, match="'tangent:jes' have shape \\(900, 3\\).*input stage 4 outputs"):
        inferno_loss(analysis, _stage_net(), x, lab, w, weights={**weights, **cols, "tangent:jes": cols["tangent:jes"][:, :3]})
    with pytest.raises(ValueError, match="precomputed input-stage tangents.*trainable"):
        inferno_loss(analysis, trainable, x, lab, w, weights={**weights, **cols})
