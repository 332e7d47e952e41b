"""Tests for inferno.interp: values, smoothness at |alpha|=1, agreement with pyhf."""
import numpy as np
import pytest
import torch
from torch.func import hessian, jacfwd, vmap

from inferno.interp import interp_deltas, interp_shape

pyhf = pytest.importorskip("pyhf")

CODES = [0, 2, "4p"]


@pytest.fixture()
def templates():
    rng = np.random.default_rng(1)
    n_nuis, n_bins = 3, 5
    f0 = rng.uniform(0.5, 1.5, n_bins)
    fu = f0 * rng.uniform(0.7, 1.3, (n_nuis, n_bins))
    fd = f0 * rng.uniform(0.7, 1.3, (n_nuis, n_bins))
    return f0, fu, fd


def _t(*arrs):
    return [torch.as_tensor(a, dtype=torch.float64) for a in arrs]


def _pyhf_deltas(interpolator, f0, fu, fd, alphas):
    """pyhf deltas for a grid of alphas: returns (n_alpha, n_nuis, n_bins)."""
    pyhf.set_backend("numpy")
    n_nuis = fu.shape[0]
    hsets = np.stack([np.stack([fd[k], f0, fu[k]])[None] for k in range(n_nuis)])  # (nsys, 1, 3, nbins)
    alphasets = np.tile(np.asarray(alphas)[None, :], (n_nuis, 1))  # (nsys, nalpha)
    out = np.asarray(interpolator(hsets.tolist())(alphasets))  # (nsys, 1, nalpha, nbins)
    return np.transpose(out[:, 0], (1, 0, 2))


@pytest.mark.parametrize("code", CODES)
def test_nodes(templates, code):
    """alpha=0 gives nominal, alpha=+-1 on one nuisance gives its up/down template."""
    f0, fu, fd = _t(*templates)
    n = fu.shape[0]
    assert torch.allclose(interp_shape(torch.zeros(n, dtype=torch.float64), f0, fu, fd, code), f0)
    for k in range(n):
        e = torch.zeros(n, dtype=torch.float64)
        e[k] = 1.0
        assert torch.allclose(interp_shape(e, f0, fu, fd, code), fu[k], atol=1e-12)
        assert torch.allclose(interp_shape(-e, f0, fu, fd, code), fd[k], atol=1e-12)


@pytest.mark.parametrize("code", CODES)
def test_additive_and_broadcast(templates, code):
    f0, fu, fd = _t(*templates)
    alpha = torch.tensor([[0.3, -1.7, 2.2], [-0.4, 0.9, -0.2]], dtype=torch.float64)
    out = interp_shape(alpha, f0, fu, fd, code)
    assert out.shape == (2, 5)
    deltas = interp_deltas(alpha, f0, fu, fd, code)
    assert deltas.shape == (2, 3, 5)
    for i in range(2):
        single = sum(interp_deltas(alpha[i, k : k + 1], f0, fu[k : k + 1], fd[k : k + 1], code)[0] for k in range(3))
        assert torch.allclose(out[i], f0 + single, atol=1e-14)


@pytest.mark.parametrize("code", [0, "4p"])
def test_matches_pyhf_everywhere(templates, code):
    f0, fu, fd = templates
    alphas = np.linspace(-3.0, 3.0, 61)
    interp = pyhf.interpolators.code0 if code == 0 else pyhf.interpolators.code4p
    ref = _pyhf_deltas(interp, f0, fu, fd, alphas)
    ours = interp_deltas(np.tile(alphas[:, None], (1, 3)), f0, fu, fd, code)
    assert isinstance(ours, np.ndarray)
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-14)


def test_code2_matches_pyhf_inside(templates):
    f0, fu, fd = templates
    alphas = np.linspace(-1.0, 1.0, 41)
    ref = _pyhf_deltas(pyhf.interpolators.code2, f0, fu, fd, alphas)
    ours = interp_deltas(np.tile(alphas[:, None], (1, 3)), f0, fu, fd, 2)
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-14)


def test_code2_closed_form_outside(templates):
    """Outside |alpha|<=1, code 2 is the tangent line of the quadratic at +-1."""
    f0, fu, fd = templates
    a = 0.5 * (fu + fd) - f0
    b = 0.5 * (fu - fd)
    for x in (1.5, 3.0, -1.5, -3.0):
        # tangent at x0 = sign(x): q(x0) + q'(x0) (x - x0), q(x) = a x^2 + b x
        x0 = np.sign(x)
        expected = a * x0**2 + b * x0 + (2 * a * x0 + b) * (x - x0)
        ours = interp_deltas(np.full(3, x), f0, fu, fd, 2)
        np.testing.assert_allclose(ours, expected, rtol=1e-12)


@pytest.mark.parametrize("code", [2, "4p"])
@pytest.mark.parametrize("edge", [1.0, -1.0])
def test_c1_continuity_at_edges(templates, code, edge):
    """Value and first derivative are continuous at |alpha|=1 (autograd both sides + finite differences)."""
    f0, fu, fd = _t(*templates)
    eps = 1e-7

    def f(x: torch.Tensor) -> torch.Tensor:
        return interp_shape(x.expand(3), f0, fu, fd, code)

    def grad_at(x: float) -> torch.Tensor:
        return jacfwd(f)(torch.tensor(x, dtype=torch.float64))

    v_in, v_out = f(torch.tensor(edge - np.sign(edge) * eps, dtype=torch.float64)), f(torch.tensor(edge + np.sign(edge) * eps, dtype=torch.float64))
    assert torch.allclose(v_in, v_out, atol=1e-6)
    g_in, g_out = grad_at(edge - np.sign(edge) * eps), grad_at(edge + np.sign(edge) * eps)
    assert torch.allclose(g_in, g_out, atol=1e-5)
    # derivative from each side agrees with a one-sided finite difference (step h on each side)
    h = 1e-5
    x0 = torch.tensor(edge, dtype=torch.float64)
    fd_left = (f(x0) - f(x0 - h)) / h
    fd_right = (f(x0 + h) - f(x0)) / h
    assert torch.allclose(fd_left, fd_right, atol=1e-4)
    assert torch.allclose(g_in, fd_left, atol=1e-4)
    assert torch.allclose(g_out, fd_right, atol=1e-4)
    # the derivative is not trivially zero: the check has teeth
    assert g_in.abs().max() > 1e-2


def test_pyhf_code2_is_discontinuous_ours_is_not(templates):
    """Documents why we do not match pyhf's code2 outside |alpha|<=1 (pyhf issue 2729)."""
    f0, fu, fd = templates
    alphas = np.array([1.0, 1.0 + 1e-9])
    ref = _pyhf_deltas(pyhf.interpolators.code2, f0, fu, fd, alphas)
    ours = interp_deltas(np.tile(alphas[:, None], (1, 3)), f0, fu, fd, 2)
    assert np.abs(ref[1] - ref[0]).max() > 1e-3
    assert np.abs(ours[1] - ours[0]).max() < 1e-6


def test_code0_kink_at_zero(templates):
    f0, fu, fd = _t(*templates)
    e = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    g_pos = jacfwd(lambda x: interp_shape(x * e, f0, fu, fd, 0))(torch.tensor(1e-3, dtype=torch.float64))
    g_neg = jacfwd(lambda x: interp_shape(x * e, f0, fu, fd, 0))(torch.tensor(-1e-3, dtype=torch.float64))
    assert torch.allclose(g_pos, fu[0] - f0)
    assert torch.allclose(g_neg, f0 - fd[0])


@pytest.mark.parametrize("code", CODES)
def test_torch_func_and_autograd(templates, code):
    f0, fu, fd = _t(*templates)
    alphas = torch.tensor([[0.2, -0.5, 1.4], [-1.3, 0.7, 0.1]], dtype=torch.float64)
    batched = vmap(lambda a: interp_shape(a, f0, fu, fd, code))(alphas)
    assert torch.allclose(batched, interp_shape(alphas, f0, fu, fd, code))
    # autograd gradient wrt alpha vs torch.func jacobian
    a = alphas[0].clone().requires_grad_(True)
    out = interp_shape(a, f0, fu, fd, code)
    (g,) = torch.autograd.grad(out.sum(), a)
    assert torch.allclose(g, jacfwd(lambda x: interp_shape(x, f0, fu, fd, code).sum())(alphas[0]))
    # hessian is available (and symmetric); the nuisances are additive so it is diagonal
    h = hessian(lambda x: interp_shape(x, f0, fu, fd, code).sum())(alphas[0])
    assert torch.allclose(h, h.T)
    assert torch.allclose(h - torch.diag(torch.diag(h)), torch.zeros_like(h))
    # gradients also flow to the templates
    fu_r = fu.clone().requires_grad_(True)
    (gfu,) = torch.autograd.grad(interp_shape(alphas[0], f0, fu_r, fd, code).sum(), fu_r)
    assert torch.isfinite(gfu).all() and gfu.abs().sum() > 0


def test_inputs_not_modified_and_dtype(templates):
    f0, fu, fd = _t(*templates)
    copies = [t.clone() for t in (f0, fu, fd)]
    a32 = torch.tensor([0.5, 1.5, -2.0], dtype=torch.float32)
    out = interp_shape(a32, f0, fu, fd)
    assert out.dtype == torch.float64
    for t, c in zip((f0, fu, fd), copies):
        assert torch.equal(t, c)
    out32 = interp_shape(a32, f0.float(), fu.float(), fd.float())
    assert out32.dtype == torch.float32


def test_bad_input(templates):
    f0, fu, fd = templates
    with pytest.raises(ValueError, match="interpolation code"):
        interp_shape(np.zeros(3), f0, fu, fd, code=1)
    with pytest.raises(ValueError, match="alpha"):
        interp_shape(np.zeros(2), f0, fu, fd)
    with pytest.raises(ValueError, match="f_up"):
        interp_shape(np.zeros(3), f0, fu[:, :4], fd)
    with pytest.raises(ValueError, match="f_dw"):
        interp_shape(np.zeros(3), f0, fu, fd[:2])
    with pytest.raises(ValueError, match="f_nom"):
        interp_shape(np.zeros(3), fu, fu, fd)


@pytest.mark.parametrize("code", CODES)
def test_analytic_derivatives_match_autodiff(templates, code):
    from inferno.interp import interp_derivatives

    f0, fu, fd = _t(*templates)
    grid = torch.tensor([-2.5, -1.0, -0.7, -1e-3, 0.4, 0.99, 1.0, 1.3, 3.0], dtype=torch.float64)
    alphas = torch.stack([grid, grid.flip(0), 0.5 * grid], dim=-1)  # (9, 3)
    val, d1, d2 = interp_derivatives(alphas, f0, fu, fd, code)
    assert torch.allclose(val, interp_deltas(alphas, f0, fu, fd, code))

    def per_nuis(a):  # (3,) -> (3, n_bins); delta_k depends on alpha_k only
        return interp_deltas(a, f0, fu, fd, code)

    for i in range(len(alphas)):
        jac = jacfwd(per_nuis)(alphas[i])  # (3, n_bins, 3)
        hes = jacfwd(jacfwd(per_nuis))(alphas[i])  # (3, n_bins, 3, 3)
        for k in range(3):
            assert torch.allclose(d1[i, k], jac[k, :, k], atol=1e-12)
            assert torch.allclose(d2[i, k], hes[k, :, k, k], atol=1e-12)
    # numpy in, numpy out
    out = interp_derivatives(alphas.numpy(), *templates, code=code)
    assert all(isinstance(o, np.ndarray) for o in out)


