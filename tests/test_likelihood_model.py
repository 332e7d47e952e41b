"""Tests of inferno.likelihood.Model against an independent, slow reference implementation.

The reference (``Ref`` below) is written from the HistFactory formulas of the docstrings of
``inferno/likelihood/modifiers.py``, ``parameters.py`` and ``interpolation.py`` with scalar
Python/numpy maths, loops over channels, samples, modifiers and bins, and its own solutions of
the boundary conditions of the polynomial interpolation codes (no inferno code is called).
Derivatives are checked against torch autograd and finite differences of ``model.nll``.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch

from inferno.likelihood import (Channel, HistoSys, Lumi, Model, NormFactor, NormSys, Sample, ShapeFactor,
                                ShapeSys, StatError)
from inferno.likelihood import interpolation as interp

DT = torch.float64

#: largest deviation seen per check (printed at the end of the module with ``pytest -s``)
DEVIATIONS: dict = {}


def _record(what: str, dev: float) -> None:
    DEVIATIONS[what] = max(DEVIATIONS.get(what, 0.0), float(dev))


@pytest.fixture(scope="module", autouse=True)
def _print_deviations():
    yield
    if DEVIATIONS:
        print("\nmax deviations (relative to max(1, |reference|)):")
        for k, v in sorted(DEVIATIONS.items()):
            print(f"  {k:55s} {v:.2e}")


def assert_close(actual, expected, tol: float, what: str) -> None:
    """max |actual - expected| <= tol * max(1, max |expected|), recorded in DEVIATIONS."""
    a = np.asarray(actual.detach().cpu() if isinstance(actual, torch.Tensor) else actual, dtype=np.float64)
    e = np.asarray(expected.detach().cpu() if isinstance(expected, torch.Tensor) else expected, dtype=np.float64)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != {e.shape}"
    assert np.all(np.isfinite(a)) and np.all(np.isfinite(e)), f"{what}: non-finite values"
    scale = max(1.0, float(np.max(np.abs(e)))) if e.size else 1.0
    dev = float(np.max(np.abs(a - e))) / scale if e.size else 0.0
    _record(what, dev)
    assert dev <= tol, f"{what}: max deviation {dev:.3e} > {tol:.1e}\nactual={a}\nexpected={e}"


# ============================================================================ reference
def _poly_rows(x: float, order: int, degrees) -> list:
    """Row of d^order/dx^order of x^k for k in degrees, at x (pure Python)."""
    row = []
    for k in degrees:
        if k < order:
            row.append(0.0)
        else:
            coef = 1.0
            for i in range(order):
                coef *= k - i
            row.append(coef * x ** (k - order))
    return row


@functools.lru_cache(maxsize=None)
def ref_code4p_coefficients(up: float, dn: float) -> tuple:
    """c_0..c_6 of the degree-6 polynomial with p(0)=0 joining the lines a*up (a > 1) and
    a*dn (a < -1) with continuous value, slope and curvature at +-1."""
    deg = range(7)
    rows = [_poly_rows(0.0, 0, deg),
            _poly_rows(1.0, 0, deg), _poly_rows(1.0, 1, deg), _poly_rows(1.0, 2, deg),
            _poly_rows(-1.0, 0, deg), _poly_rows(-1.0, 1, deg), _poly_rows(-1.0, 2, deg)]
    rhs = [0.0, up, up, 0.0, -dn, dn, 0.0]
    return tuple(np.linalg.solve(np.array(rows), np.array(rhs)))


@functools.lru_cache(maxsize=None)
def ref_code4_coefficients(hi: float, lo: float) -> tuple:
    """c_1..c_6 of 1 + sum c_k a^k matching hi^a at a = 1 and lo^-a at a = -1 up to the
    second derivative."""
    deg = range(1, 7)
    lh, ll = math.log(hi), math.log(lo)
    rows = [_poly_rows(1.0, 0, deg), _poly_rows(1.0, 1, deg), _poly_rows(1.0, 2, deg),
            _poly_rows(-1.0, 0, deg), _poly_rows(-1.0, 1, deg), _poly_rows(-1.0, 2, deg)]
    # d^m/da^m hi^a = lh^m hi^a ; d^m/da^m lo^-a = (-ll)^m lo^-a ; minus the constant 1 for m = 0
    rhs = [hi - 1.0, lh * hi, lh * lh * hi, lo - 1.0, -ll * lo, ll * ll * lo]
    return tuple(np.linalg.solve(np.array(rows), np.array(rhs)))


def ref_histosys(code, a: float, nom: float, hi: float, lo: float) -> float:
    """Additive shift delta(a) of one bin."""
    up, dn = hi - nom, nom - lo  # delta(+1) = up, delta(-1) = -dn
    if code == 0:
        return a * up if a > 0 else a * dn
    if code == 2:
        c1, c2 = 0.5 * (up + dn), 0.5 * (up - dn)  # q(a) = c1 a + c2 a^2: q(0)=0, q(1)=up, q(-1)=-dn

        def q(x):
            return c1 * x + c2 * x * x

        def dq(x):
            return c1 + 2.0 * c2 * x

        if a > 1.0:
            return q(1.0) + dq(1.0) * (a - 1.0)
        if a < -1.0:
            return q(-1.0) + dq(-1.0) * (a + 1.0)
        return q(a)
    if code == "4p":
        if a > 1.0:
            return a * up
        if a < -1.0:
            return a * dn
        c = ref_code4p_coefficients(float(up), float(dn))
        return sum(c[k] * a ** k for k in range(7))
    raise AssertionError(code)


def ref_normsys(code, a: float, hi: float, lo: float) -> float:
    """Multiplicative factor f(a)."""
    if code == 1:
        return hi ** a if a >= 0 else lo ** (-a)
    if code == 4:
        if a >= 1.0:
            return hi ** a
        if a <= -1.0:
            return lo ** (-a)
        c = ref_code4_coefficients(float(hi), float(lo))
        return 1.0 + sum(c[k - 1] * a ** k for k in range(1, 7))
    raise AssertionError(code)


class Ref:
    """The reference model. ``spec``: [(channel, [(sample, nominal, [modifier tuples])])]
    with modifier tuples ('normfactor', name), ('lumi', name), ('normsys', name, hi, lo, code),
    ('histosys', name, hi, lo, code), ('staterror', name, sigma), ('shapesys', name, sigma),
    ('shapefactor', name)."""

    PER_BIN = ("staterror", "shapesys", "shapefactor")

    def __init__(self, spec, histosys_code="4p", normsys_code=4, lumi_sigma=None):
        self.spec = spec
        self.hcode, self.ncode = histosys_code, normsys_code
        self.lumi_sigma = lumi_sigma
        self.n_bins = sum(len(s[0][1]) for _, s in spec)
        # names in order of first appearance
        self.names, self.kind = [], {}
        for _, samples in spec:
            for _, nom, mods in samples:
                for m in mods:
                    kind, name = m[0], m[1]
                    if kind in self.PER_BIN:
                        full = [f"{name}[{i}]" for i in range(len(nom))]
                    else:
                        full = [name]
                    for f in full:
                        if f not in self.kind:
                            self.names.append(f)
                        if self.kind.get(f) not in ("histosys",):  # histosys wins a shared alpha
                            self.kind[f] = kind
        # constraints: name -> ('normal', aux, sigma) | ('poisson', tau)
        self.constraints = {}
        var, tot = {}, {}
        for _, samples in spec:
            for _, nom, mods in samples:
                for m in mods:
                    kind, name = m[0], m[1]
                    if kind in ("normsys", "histosys"):
                        self.constraints[name] = ("normal", 0.0, 1.0)
                    elif kind == "lumi":
                        self.constraints[name] = ("normal", 1.0, float(lumi_sigma))
                    elif kind == "staterror":
                        for i in range(len(nom)):
                            var[f"{name}[{i}]"] = var.get(f"{name}[{i}]", 0.0) + float(m[2][i]) ** 2
                            tot[f"{name}[{i}]"] = tot.get(f"{name}[{i}]", 0.0) + float(nom[i])
                    elif kind == "shapesys":
                        for i in range(len(nom)):
                            if m[2][i] > 0 and nom[i] > 0:
                                self.constraints[f"{name}[{i}]"] = ("poisson", (float(nom[i]) / float(m[2][i])) ** 2)
        for k in var:
            if var[k] > 0 and tot[k] > 0:
                self.constraints[k] = ("normal", 1.0, math.sqrt(var[k]) / tot[k])

    def nominal_aux(self, name):
        c = self.constraints[name]
        return {"normal": c[1], "poisson": c[1], "studentt": 0.0}[c[0]]  # centre; tau; no shift

    def expected_by_sample(self, v: dict) -> np.ndarray:
        rows = []
        off = 0
        for _, samples in self.spec:
            nb = len(samples[0][1])
            for _, nom, mods in samples:
                row = np.zeros(self.n_bins)
                for i in range(nb):
                    base = float(nom[i])
                    factor = 1.0
                    for m in mods:
                        kind, name = m[0], m[1]
                        if kind == "histosys":
                            code = self.hcode if m[4] is None else m[4]
                            base += ref_histosys(code, v[name], float(nom[i]), float(m[2][i]), float(m[3][i]))
                        elif kind == "normsys":
                            code = self.ncode if m[4] is None else m[4]
                            factor *= ref_normsys(code, v[name], float(m[2]), float(m[3]))
                        elif kind in ("normfactor", "lumi"):
                            factor *= v[name]
                        else:
                            factor *= v[f"{name}[{i}]"]
                    row[off + i] = base * factor
                rows.append(row)
            off += nb
        return np.array(rows)

    def expected(self, v: dict) -> np.ndarray:
        return self.expected_by_sample(v).sum(0)

    def nll(self, v: dict, n, aux: dict = None) -> float:
        nu = self.expected(v)
        if np.any(nu < 0):
            return math.inf
        total = 0.0
        for nui, ni in zip(nu, n):
            ni = float(ni)
            if nui == 0.0:
                if ni > 0:
                    return math.inf
                total += math.lgamma(ni + 1.0)
                continue
            total += nui - (ni * math.log(nui) if ni > 0 else 0.0) + math.lgamma(ni + 1.0)
        for name, c in self.constraints.items():
            a = self.nominal_aux(name) if aux is None else aux[name]
            x = v[name]
            if c[0] == "normal":
                sig = c[2]
                total += 0.5 * ((x - a) / sig) ** 2 + math.log(sig) + 0.5 * math.log(2.0 * math.pi)
            elif c[0] == "studentt":  # -log of Student's t density (c[1] degrees of freedom) at x - a
                nu_, t = c[1], x - a
                total -= (math.lgamma(0.5 * (nu_ + 1)) - math.lgamma(0.5 * nu_) - 0.5 * math.log(nu_ * math.pi)
                          - 0.5 * (nu_ + 1) * math.log1p(t * t / nu_))
            else:
                lam = x * c[1]
                # minus the continuous Poisson log-probability a log(lam) - lam - lgamma(a + 1)
                total -= (a * math.log(lam) if a > 0 else 0.0) - lam - math.lgamma(a + 1.0)
        return total


def build(spec, **kwargs) -> Model:
    """The inferno model of a reference spec."""
    chans = []
    for cname, samples in spec:
        ss = []
        for sname, nom, mods in samples:
            ms = []
            for m in mods:
                kind, name = m[0], m[1]
                if kind == "normfactor":
                    ms.append(NormFactor(name))
                elif kind == "lumi":
                    ms.append(Lumi(name))
                elif kind == "normsys":
                    ms.append(NormSys(name, hi=m[2], lo=m[3], code=m[4]))
                elif kind == "histosys":
                    ms.append(HistoSys(name, hi=m[2], lo=m[3], code=m[4]))
                elif kind == "staterror":
                    ms.append(StatError(name, sigma=m[2]))
                elif kind == "shapesys":
                    ms.append(ShapeSys(name, sigma=m[2]))
                elif kind == "shapefactor":
                    ms.append(ShapeFactor(name))
            ss.append(Sample(sname, nom, ms))
        chans.append(Channel(cname, ss))
    return Model(chans, **kwargs)


# ============================================================================ models
#: two channels, signal + 3 backgrounds, every modifier type, mixed codes (None: model default)
MAIN_SPEC = [
    ("SR", [
        ("signal", [5.0, 10.0, 3.0], [("normfactor", "mu"), ("lumi", "lumi"), ("normsys", "sig_xs", 1.1, 0.92, 4),
                                      ("staterror", "stat_SR", [0.5, 0.9, 0.4]), ("shapefactor", "sf_SR")]),
        ("bkg1", [50.0, 40.0, 20.0], [("normfactor", "k1"), ("lumi", "lumi"), ("normsys", "jes", 1.05, 0.96, None),
                                      ("histosys", "jes", [53.0, 41.0, 22.0], [48.0, 39.5, 18.5], 2),
                                      ("staterror", "stat_SR", [3.0, 2.5, 2.0])]),
        ("bkg2", [20.0, 15.0, 30.0], [("histosys", "shape2", [22.0, 14.0, 31.0], [19.0, 16.5, 28.0], "4p"),
                                      ("shapesys", "unc2", [2.0, 0.0, 3.0]), ("normsys", "b2_xs", 1.2, 0.85, 4)]),
        ("bkg3", [8.0, 6.0, 4.0], [("histosys", "jes", [8.8, 6.3, 4.1], [7.5, 5.8, 3.7], 0),
                                   ("normsys", "b3", 1.15, 0.9, 1), ("shapefactor", "sf_SR"), ("normfactor", "k3")]),
    ]),
    ("CR", [
        ("signal", [0.5, 1.0], [("normfactor", "mu"), ("lumi", "lumi")]),
        ("bkg1", [100.0, 80.0], [("normfactor", "k1"), ("normsys", "jes", 1.04, 0.95, 4),
                                 ("histosys", "jes", [104.0, 83.0], [97.0, 78.0], "4p"),
                                 ("staterror", "stat_CR", [4.0, 0.0]), ("lumi", "lumi")]),
        ("bkg2", [30.0, 20.0], [("staterror", "stat_CR", [2.0, 0.0]), ("shapefactor", "sf_CR"),
                                ("histosys", "h3", [31.0, 21.0], [29.5, 18.0], None)]),
        ("bkg3", [10.0, 12.0], [("histosys", "h3", [10.5, 12.8], [9.6, 11.5], 0), ("normsys", "b3", 1.1, 0.93, 4),
                                ("lumi", "lumi")]),
    ]),
]
MAIN_KW = dict(histosys_code=2, normsys_code=1, lumi_sigma=0.03)

#: only linear factors (no histosys, no normsys): one sample with five of them
LINEAR_SPEC = [
    ("A", [
        ("sig", [4.0, 6.0, 2.0, 1.0], [("normfactor", "mu"), ("lumi", "lumi"),
                                       ("staterror", "st", [0.4, 0.5, 0.3, 0.2]), ("shapefactor", "sf"),
                                       ("shapesys", "ss", [0.5, 1.0, 0.4, 0.3])]),
        ("bkg", [30.0, 20.0, 10.0, 5.0], [("normfactor", "mu"), ("staterror", "st", [2.0, 1.5, 1.0, 0.8]),
                                          ("normfactor", "kb")]),
    ]),
]
LINEAR_KW = dict(lumi_sigma=0.05)

#: no linear factors at all, the model's default codes ('4p', 4)
SHAPE_SPEC = [
    ("A", [
        ("s1", [12.0, 8.0], [("histosys", "a", [13.0, 8.5], [11.2, 7.7], None), ("normsys", "a", 1.07, 0.95, None),
                             ("normsys", "b", 1.2, 0.9, None)]),
        ("s2", [25.0, 30.0], [("histosys", "c", [26.0, 28.0], [24.5, 31.0], None), ("normsys", "b", 0.9, 1.15, None)]),
    ]),
    ("B", [
        ("s1", [40.0], [("histosys", "a", [43.0], [38.5], None), ("normsys", "c", 1.1, 0.95, None)]),
    ]),
]
SHAPE_KW = dict()

SPECS = {"main": (MAIN_SPEC, MAIN_KW), "linear": (LINEAR_SPEC, LINEAR_KW), "shape": (SHAPE_SPEC, SHAPE_KW)}


def make(which: str, **extra):
    spec, kw = SPECS[which]
    kw = dict(kw)
    lumi_sigma = kw.pop("lumi_sigma", None)
    params = {"lumi": {"sigma": lumi_sigma}} if lumi_sigma is not None else None
    model = build(spec, parameters=params, **kw, **extra)
    ref = Ref(spec, kw.get("histosys_code", "4p"), kw.get("normsys_code", 4), lumi_sigma)
    return model, ref


@pytest.fixture(scope="module")
def main():
    return make("main")


def random_point(ref: Ref, rng, away: bool = False) -> dict:
    """Random parameter values by name. ``away``: alphas at least 0.1 from the kinks (0) and
    from |alpha| = 1 (where code 2's curvature jumps)."""
    v = {}
    for name in ref.names:
        kind = ref.kind[name]
        if kind in ("normsys", "histosys"):
            if away:
                mag = rng.uniform(0.1, 0.9) if rng.uniform() < 0.5 else rng.uniform(1.1, 2.5)
                v[name] = float(mag * rng.choice([-1.0, 1.0]))
            else:
                v[name] = float(rng.uniform(-2.5, 2.5))
        elif kind == "lumi":
            v[name] = float(rng.uniform(0.95, 1.05))
        elif kind in ("normfactor",):
            v[name] = float(rng.uniform(0.5, 2.0))
        else:
            v[name] = float(rng.uniform(0.8, 1.25))
    return v


def vec(model: Model, v: dict) -> torch.Tensor:
    return torch.tensor([v[n] for n in model.names], dtype=DT)


def unvec(model: Model, p) -> dict:
    return {n: float(x) for n, x in zip(model.names, p)}


def fake_data(ref: Ref, rng, n_sets: int = 1) -> np.ndarray:
    v = {n: (0.0 if ref.kind[n] in ("normsys", "histosys") else 1.0) for n in ref.names}
    nu = ref.expected(v)
    n = rng.poisson(nu, size=(n_sets, nu.size)).astype(float)
    n[:, 0] = 0.0  # a bin without events
    return n


# ============================================================================ 1. values vs the reference
def test_structure(main):
    model, ref = main
    assert model.names == ref.names
    assert model.n_params == len(ref.names) == 23
    assert model.n_bins == ref.n_bins == 5
    assert model.channel_names == ["SR", "CR"]
    assert model.samples == [("SR", "signal"), ("SR", "bkg1"), ("SR", "bkg2"), ("SR", "bkg3"),
                             ("CR", "signal"), ("CR", "bkg1"), ("CR", "bkg2"), ("CR", "bkg3")]
    # constraints: which parameters, their widths, taus and nominal auxiliary data
    assert sorted(model.aux_names) == sorted(ref.constraints)
    for name, aux in zip(model.aux_names, model.aux_nominal.tolist()):
        par = model.parameters[model.index(name)]
        c = ref.constraints[name]
        assert par.constraint == c[0], name
        assert aux == pytest.approx(ref.nominal_aux(name), rel=1e-14), name
        if c[0] == "normal":
            assert par.sigma == pytest.approx(c[2], rel=1e-14), name
        else:
            assert par.tau == pytest.approx(c[1], rel=1e-14), name
    # bins with no uncertainty: unconstrained and fixed
    for name in ("stat_CR[1]", "unc2[1]"):
        assert name not in model.aux_names
        assert bool(model.fixed[model.index(name)])
    assert not bool(model.fixed[model.index("stat_CR[0]")])
    assert sorted(model.names[k] for k in model.kinked) == ["b3", "h3", "jes"]
    assert model.parameters[model.index("jes")].kind == "histosys"
    assert model.parameters[model.index("mu")].bounds == (0.0, 10.0)


@pytest.mark.parametrize("which", ["main", "linear", "shape"])
@pytest.mark.parametrize("away", [False, True], ids=["anywhere", "inside_outside"])
def test_expected_and_nll_vs_reference(which, away):
    model, ref = make(which)
    rng = np.random.default_rng(11 if away else 12)
    data = fake_data(ref, rng)[0]
    pts = [random_point(ref, rng, away) for _ in range(8)]
    if which == "main":  # make sure both |alpha| < 1 and |alpha| > 1 occur for every code
        alphas = np.array([[p[n] for n in ("jes", "b3", "shape2", "h3", "sig_xs", "b2_xs")] for p in pts])
        assert (np.abs(alphas) < 1).any() and (np.abs(alphas) > 1).any()
    P = torch.stack([vec(model, p) for p in pts])
    by_sample = model.expected_by_sample(P)
    expected = model.expected(P)
    nll = model.nll(P, data)
    assert by_sample.shape == (8, len(model.samples), model.n_bins)
    for k, p in enumerate(pts):
        rbs = ref.expected_by_sample(p)
        assert_close(by_sample[k], rbs, 1e-12, "expected_by_sample vs reference")
        assert_close(expected[k], rbs.sum(0), 1e-12, "expected vs reference")
        assert_close(nll[k], ref.nll(p, data), 1e-12, "nll vs reference")


def test_nll_with_aux_data_vs_reference(main):
    model, ref = main
    rng = np.random.default_rng(3)
    data = fake_data(ref, rng)[0]
    for _ in range(4):
        p = random_point(ref, rng)
        aux = {}
        for name, c in ref.constraints.items():
            aux[name] = c[1] + rng.normal() * c[2] if c[0] == "normal" else c[1] * rng.uniform(0.7, 1.3)
        a = torch.tensor([aux[n] for n in model.aux_names], dtype=DT)
        assert_close(model.nll(vec(model, p), data, a), ref.nll(p, data, aux), 1e-12, "nll(aux) vs reference")
        # the dict form of the data gives the same
        d = {"SR": data[:3], "CR": data[3:]}
        assert_close(model.nll(vec(model, p), d, a), ref.nll(p, data, aux), 1e-12, "nll(dict data) vs reference")


def test_nll_infinite_when_expected_negative(main):
    model, ref = main
    data = fake_data(ref, np.random.default_rng(0))[0]
    p = model.params(k1=-3.0)  # bkg1 negative: nu < 0 in every bin
    assert math.isinf(ref.nll(unvec(model, p), data))
    out = model.nll(p, data)
    assert torch.isinf(out) and out > 0


def test_nominal_point_reproduces_nominal_counts(main):
    model, ref = main
    nu = model.expected(model.init)
    nom = np.concatenate([np.sum([s[1] for s in samples], 0) for _, samples in MAIN_SPEC])
    assert_close(nu, nom, 1e-14, "expected at init == sum of nominals")


# ============================================================================ 2. gradient and Hessian
def fd_grad_hess(f, x: torch.Tensor, h_g: float = 1e-5, h_h: float = 2e-4):
    """Central finite differences of a scalar function f((..., P)) -> (...) at x (P,)."""
    P = x.numel()
    I = torch.eye(P, dtype=DT)
    g = (f(x + h_g * I) - f(x - h_g * I)) / (2 * h_g)
    ei = h_h * I[:, None, :]
    ej = h_h * I[None, :, :]
    pts = torch.stack([x + ei + ej, x + ei - ej, x - ei + ej, x - ei - ej], 2)  # (P, P, 4, P)
    fv = f(pts)
    H = (fv[..., 0] - fv[..., 1] - fv[..., 2] + fv[..., 3]) / (4 * h_h * h_h)
    return g, H


@pytest.mark.parametrize("which", ["main", "linear", "shape"])
def test_grad_hess_vs_autograd_and_fd_batched(which):
    model, ref = make(which)
    rng = np.random.default_rng(5)
    data = torch.tensor(fake_data(ref, rng, n_sets=3), dtype=DT)  # (3, N), broadcast against params (2, 3, P)
    P = torch.stack([vec(model, random_point(ref, rng, away=True)) for _ in range(6)]).reshape(2, 3, -1)
    val, g, H = model.nll_grad_hess(P, data)
    assert val.shape == (2, 3) and g.shape == (2, 3, model.n_params) and H.shape == (2, 3, model.n_params,
                                                                                        model.n_params)
    assert_close(val, model.nll(P, data), 1e-13, "nll_grad_hess value vs nll")
    assert_close(H, H.transpose(-1, -2), 1e-13, "Hessian symmetry")
    for i in range(2):
        for j in range(3):
            x, n = P[i, j], data[j]

            def f(q, n=n):
                return model.nll(q, n)

            ga = torch.autograd.functional.jacobian(f, x)
            Ha = torch.autograd.functional.hessian(f, x)
            assert_close(g[i, j], ga, 1e-11, "grad vs autograd")
            assert_close(H[i, j], Ha, 1e-11, "Hessian vs autograd")
            gf, Hf = fd_grad_hess(f, x)
            assert_close(g[i, j], gf, 1e-7, "grad vs central FD")
            assert_close(H[i, j], Hf, 1e-5, "Hessian vs central FD")
            # the reference NLL gives the same finite differences (independent of inferno's value)
            if which == "main" and i == 0 and j == 0:
                p0 = unvec(model, x)
                for name in ("mu", "jes", "stat_SR[0]", "sf_SR[1]", "unc2[2]", "b3", "h3"):
                    hh = 1e-5
                    up, dn = dict(p0), dict(p0)
                    up[name] += hh
                    dn[name] -= hh
                    fd = (ref.nll(up, n.tolist()) - ref.nll(dn, n.tolist())) / (2 * hh)
                    assert_close(g[i, j, model.index(name)], fd, 1e-7, "grad vs FD of the reference nll")


def _one_sided(f, x: torch.Tensor, k: int, sign: float, h1: float = 1e-4, h2: float = 1e-3):
    """Second-order one-sided first and second derivatives of f along parameter k (steps h1, h2)."""
    def steps(h):
        e = torch.zeros_like(x)
        e[k] = sign * h
        return [float(f(x + m * e)) for m in range(4)]

    f0, f1, f2, _ = steps(h1)
    d1 = sign * (-3 * f0 + 4 * f1 - f2) / (2 * h1)
    f0, f1, f2, f3 = steps(h2)
    d2 = (2 * f0 - 5 * f1 + 4 * f2 - f3) / (h2 * h2)
    return d1, d2


def test_kink_right_mask(main):
    model, ref = main
    rng = np.random.default_rng(8)
    data = torch.tensor(fake_data(ref, rng)[0], dtype=DT)
    v = random_point(ref, rng, away=True)
    v["jes"] = 0.0  # histosys code 0 and normsys code 1 (and smooth codes elsewhere)
    v["b3"] = 0.0  # normsys code 1 in SR, code 4 in CR
    x = vec(model, v)
    kj, kb = model.index("jes"), model.index("b3")
    right = torch.zeros(model.n_params, dtype=torch.bool)
    right[kj] = right[kb] = True
    # batched: row 0 right-sided, row 1 left-sided (default)
    X = torch.stack([x, x])
    R = torch.stack([right, torch.zeros_like(right)])
    _, g, H = model.nll_grad_hess(X, data, right=R)
    _, g_left, H_left = model.nll_grad_hess(x, data)
    assert_close(g[1], g_left, 1e-15, "default = left derivative")
    assert_close(H[1], H_left, 1e-15, "default = left Hessian")

    def f(q):
        return model.nll(q, data)

    for k in (kj, kb):
        assert abs(float(g[0, k] - g[1, k])) > 1e-2  # the kink is real
        for row, sign in ((0, 1.0), (1, -1.0)):
            d1, d2 = _one_sided(f, x, k, sign)
            assert_close(g[row, k], d1, 1e-6, "kink: grad vs one-sided FD")
            assert_close(H[row, k, k], d2, 1e-5, "kink: Hessian diagonal vs one-sided FD")
    # the full one-sided Hessian: autograd just beside the kink
    for row, sign in ((0, 1.0), (1, -1.0)):
        xs = x.clone()
        xs[kj] = xs[kb] = sign * 1e-30
        assert_close(g[row], torch.autograd.functional.jacobian(f, xs), 1e-11, "kink: grad vs autograd beside")
        assert_close(H[row], torch.autograd.functional.hessian(f, xs), 1e-11, "kink: Hessian vs autograd beside")
    # a right mask on a parameter away from its kink changes nothing
    mu_right = torch.zeros(model.n_params, dtype=torch.bool)
    mu_right[model.index("mu")] = True
    _, g2, H2 = model.nll_grad_hess(x, data, right=mu_right)
    assert torch.equal(g2, g_left) and torch.equal(H2, H_left)


# ============================================================================ 3. Fisher information at Asimov
def _constraint_hessian(model: Model, ref: Ref, p: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
    C = torch.zeros(model.n_params, model.n_params, dtype=DT)
    auxd = dict(zip(model.aux_names, aux.tolist()))
    for name, c in ref.constraints.items():
        k = model.index(name)
        C[k, k] = 1.0 / c[2] ** 2 if c[0] == "normal" else auxd[name] / float(p[k]) ** 2
    return C


@pytest.mark.parametrize("which", ["main", "linear", "shape"])
def test_asimov_hessian_is_fisher(which):
    model, ref = make(which)
    rng = np.random.default_rng(21)
    points = [random_point(ref, rng, away=True) for _ in range(3)]
    for k, v in enumerate(points + [None]):
        if v is None:  # the nominal point (mu = 1): kinked parameters at 0, left derivatives
            main_, aux = model.asimov(mu=1.0) if "mu" in model.names else model.asimov()
            p = model.params(mu=1.0) if "mu" in model.names else model.init
            pj = p.clone()
            pj[model.kinked] = -1e-30
        else:
            p = vec(model, v)
            main_, aux = model.asimov(p)
            pj = p
        assert_close(main_, ref.expected(unvec(model, p)), 1e-12, "asimov main vs reference")
        J = torch.autograd.functional.jacobian(model.expected, pj)  # (N, P)
        fisher = J.T @ torch.diag(1.0 / main_) @ J + _constraint_hessian(model, ref, p, aux)
        _, g, H = model.nll_grad_hess(p, main_, aux)
        assert_close(H, fisher, 1e-11, "Asimov Hessian vs Fisher information")
        assert_close(g, torch.zeros_like(g), 1e-11, "gradient at the Asimov point")


def test_asimov_params_index(main):
    model, ref = main
    main_, aux = model.asimov(mu=1.0)
    assert main_.shape == (model.n_bins,) and aux.shape == (len(model.aux_names),)
    assert_close(aux, model.aux_nominal, 0.0, "asimov aux at init == nominal aux")
    for name, a in zip(model.aux_names, aux.tolist()):
        c = ref.constraints[name]
        if c[0] == "poisson":
            assert a == pytest.approx(c[1], rel=1e-14)  # tau
        elif model.parameters[model.index(name)].kind in ("normsys", "histosys"):
            assert a == 0.0
        else:
            assert a == 1.0  # lumi, staterror
    v0 = unvec(model, model.init)
    assert_close(main_, ref.expected(dict(v0, mu=1.0)), 1e-12, "asimov(mu=1) main")
    m2, a2 = model.asimov(mu=2.0, lumi=1.1)
    assert_close(m2, ref.expected(dict(v0, mu=2.0, lumi=1.1)), 1e-12, "asimov(mu=2, lumi=1.1) main")
    assert a2[model.aux_names.index("lumi")] == pytest.approx(1.1)
    # params
    p = model.params(mu=2.0)
    expected = model.init.clone()
    expected[model.index("mu")] = 2.0
    assert torch.equal(p, expected)
    assert model.init[model.index("mu")] == 1.0  # params() did not modify the inits
    batch = torch.zeros(4, model.n_params, dtype=DT)
    pb = model.params(batch, jes=0.5)
    assert torch.all(pb[:, model.index("jes")] == 0.5) and torch.all(batch == 0)
    # index
    assert model.index("mu") == 0 and model.index("stat_SR[1]") == model.names.index("stat_SR[1]")
    with pytest.raises(ValueError, match="unknown parameter 'nope'"):
        model.index("nope")
    with pytest.raises(ValueError, match="parameters must have shape"):
        model.params(torch.zeros(3, dtype=DT))


def test_index_of_one_bin_set():
    model, _ = make("shape")
    m = build([("A", [("s", [3.0], [("staterror", "st", [0.5]), ("normfactor", "mu")])])], poi="mu")
    assert m.names == ["st[0]", "mu"]
    assert m.index("st") == 0 == m.index("st[0]")
    assert model.poi_names == [] and m.poi_names == ["mu"] and m.poi_index == [1]


def test_with_parameters(main):
    model, ref = main
    rng = np.random.default_rng(4)
    data = fake_data(ref, rng)[0]
    v = random_point(ref, rng)
    m2 = model.with_parameters(mu={"fixed": True}, lumi={"sigma": 0.05}, sf_SR={"init": [1.0, 1.1, 1.2]},
                               k1={"bounds": (0.5, 3.0)})
    assert m2 is not model and m2.names == model.names
    assert bool(m2.fixed[m2.index("mu")]) and not bool(model.fixed[model.index("mu")])
    assert m2.init[m2.index("sf_SR[2]")] == pytest.approx(1.2) and model.init[model.index("sf_SR[2]")] == 1.0
    assert m2.bounds[m2.index("k1")].tolist() == [0.5, 3.0]
    ref2 = Ref(MAIN_SPEC, 2, 1, lumi_sigma=0.05)
    assert_close(m2.nll(vec(m2, v), data), ref2.nll(v, data), 1e-12, "with_parameters nll vs reference")
    assert_close(model.nll(vec(model, v), data), ref.nll(v, data), 1e-12, "original unchanged")
    # everything else carried over: a no-op copy evaluates identically
    m3 = model.with_parameters()
    assert torch.equal(m3.nll(vec(m3, v), data), model.nll(vec(model, v), data))
    assert m3.aux_names == model.aux_names and torch.equal(m3.fixed, model.fixed)


SMALL = [Channel("SR", [Sample("s", [5.0, 10.0], [NormFactor("mu")]),
                        Sample("b", [50.0, 20.0], [NormSys("a", hi=1.1, lo=0.9), ShapeSys("ss", sigma=[5.0, 2.0])])])]


def test_with_parameters_keeps_removed_constraint():
    m = Model(SMALL, poi="mu", parameters={"a": {"constraint": None}})
    assert m.parameters[m.index("a")].constraint is None
    m2 = m.with_parameters(mu={"fixed": True})
    assert m2.parameters[m2.index("a")].constraint is None


def test_with_parameters_keeps_poisson_aux():
    m = Model(SMALL, poi="mu", parameters={"ss": {"aux": [90.0, 100.0]}})
    assert m.aux_names == ["a", "ss[0]", "ss[1]"]
    assert m.aux_nominal.tolist() == [0.0, 90.0, 100.0]
    m2 = m.with_parameters(mu={"fixed": True})
    assert m2.aux_nominal.tolist() == [0.0, 90.0, 100.0]
    assert m2.parameters[m2.index("mu")].fixed


SMALL_SPEC = [("SR", [("s", [5.0, 10.0], [("normfactor", "mu")]),
                      ("b", [50.0, 20.0], [("normsys", "a", 1.1, 0.9, None), ("shapesys", "ss", [5.0, 2.0])])])]


def test_distribution_constraints():
    """A Normal(loc, scale) constraint becomes 'normal' (aux = loc, sigma = scale); any other
    scalar distribution d adds -log d(theta - aux), with derivatives from autograd."""
    data = [57.0, 28.0]
    m = build(SMALL_SPEC, poi="mu", parameters={"a": {"constraint": torch.distributions.Normal(
        torch.tensor(0.2, dtype=DT), torch.tensor(0.5, dtype=DT))}})
    par = m.parameters[m.index("a")]
    assert (par.constraint, par.aux, par.sigma) == ("normal", 0.2, 0.5)
    ref = Ref(SMALL_SPEC)
    ref.constraints["a"] = ("normal", 0.2, 0.5)
    v = {"mu": 1.3, "a": -0.7, "ss[0]": 1.05, "ss[1]": 0.9}
    assert_close(m.nll(vec(m, v), data), ref.nll(v, data), 1e-13, "Normal constraint nll vs reference")

    df = 3.0
    m = build(SMALL_SPEC, poi="mu", parameters={"a": {"constraint": torch.distributions.StudentT(
        torch.tensor(df, dtype=DT))}})
    ref.constraints["a"] = ("studentt", df)
    assert m.aux_names == ["a", "ss[0]", "ss[1]"] and m.aux_nominal[0] == 0.0
    rng = np.random.default_rng(2)
    for _ in range(3):
        v = {"mu": rng.uniform(0.5, 2), "a": rng.uniform(-2, 2), "ss[0]": rng.uniform(0.8, 1.2),
             "ss[1]": rng.uniform(0.8, 1.2)}
        shift = rng.normal()
        aux = torch.tensor([shift, 100.0, 100.0], dtype=DT)
        x = vec(m, v)
        assert_close(m.nll(x, data, aux), ref.nll(v, data, {"a": shift, "ss[0]": 100.0, "ss[1]": 100.0}), 1e-13,
                     "StudentT constraint nll vs reference")
        _, g, H = m.nll_grad_hess(x, data, aux)

        def f(q):
            return m.nll(q, data, aux)

        assert_close(g, torch.autograd.functional.jacobian(f, x), 1e-11, "StudentT constraint grad vs autograd")
        assert_close(H, torch.autograd.functional.hessian(f, x), 1e-11, "StudentT constraint Hessian vs autograd")
        gf, Hf = fd_grad_hess(f, x)
        assert_close(g, gf, 1e-7, "grad vs central FD")
        assert_close(H, Hf, 1e-5, "Hessian vs central FD")


def test_with_parameters_keeps_distribution_aux():
    lap = torch.distributions.Laplace(torch.tensor(0.0, dtype=DT), torch.tensor(1.0, dtype=DT))
    m = Model(SMALL, poi="mu", parameters={"a": {"constraint": lap, "aux": 0.3}})
    assert m.aux_nominal[m.aux_names.index("a")] == pytest.approx(0.3)
    m2 = m.with_parameters(mu={"fixed": True})
    assert m2.aux_nominal[m2.aux_names.index("a")] == pytest.approx(0.3)


# ============================================================================ 4. interpolation functions
HI, NOM, LO = 13.0, 10.0, 8.5  # asymmetric
NHI, NLO = 1.12, 0.93

ADD_CODES = [0, 2, "4p"]
MUL_CODES = [1, 4]


def _t(x):
    return torch.as_tensor(x, dtype=DT)


def _add(code, a, derivs=True, right=None):
    return interp.additive(code, _t(a), _t(NOM), _t(HI), _t(LO), derivs, right)


def _mul(code, a, derivs=True, right=None):
    return interp.multiplicative(code, _t(a), _t(NHI), _t(NLO), derivs, right)


@pytest.mark.parametrize("code", ADD_CODES)
def test_additive_nodes_and_reference(code):
    v, _, _ = _add(code, [0.0, 1.0, -1.0])
    assert_close(NOM + v, [NOM, HI, LO], 1e-14, "additive nodes")
    a = np.linspace(-3.0, 3.0, 121)
    v, _, _ = _add(code, a)
    assert_close(v, [ref_histosys(code, float(x), NOM, HI, LO) for x in a], 1e-13, "additive vs reference")


@pytest.mark.parametrize("code", MUL_CODES)
def test_multiplicative_nodes_and_reference(code):
    v, _, _ = _mul(code, [0.0, 1.0, -1.0])
    assert_close(v, [1.0, NHI, NLO], 1e-14, "multiplicative nodes")
    a = np.linspace(-3.0, 3.0, 121)
    v, _, _ = _mul(code, a)
    assert_close(v, [ref_normsys(code, float(x), NHI, NLO) for x in a], 1e-13, "multiplicative vs reference")


def test_code4p_matches_docstring_formula_and_code4_coefficients():
    up, dn = HI - NOM, NOM - LO
    S, A = 0.5 * (up + dn), (up - dn) / 16.0
    for a in np.linspace(-1, 1, 21):
        doc = a * S + a * a * A * (15 - 10 * a * a + 3 * a ** 4)
        assert ref_histosys("4p", float(a), NOM, HI, LO) == pytest.approx(doc, rel=1e-12, abs=1e-13)
    c = interp.code4_coefficients(_t([NHI, 1.3]), _t([NLO, 0.6]))
    assert c.shape == (2, 6)
    assert_close(c[0], ref_code4_coefficients(NHI, NLO), 1e-12, "code4_coefficients vs numpy solve")
    assert_close(c[1], ref_code4_coefficients(1.3, 0.6), 1e-12, "code4_coefficients vs numpy solve")


def _derivs(kind, code, a, right=None):
    return _add(code, a, right=right) if kind == "add" else _mul(code, a, right=right)


SMOOTH = [("add", 2, 1), ("add", "4p", 2), ("mul", 4, 2)]  # (kind, code, order of continuity at |a| = 1)


@pytest.mark.parametrize("kind,code,order", SMOOTH)
def test_continuity_at_one(kind, code, order):
    eps = 1e-9
    for edge in (1.0, -1.0):
        v, d1, d2 = _derivs(kind, code, [edge - eps, edge, edge + eps])
        assert float(abs(v[2] - v[0])) < 1e-7
        assert float(abs(d1[2] - d1[0])) < 1e-7, "first derivative jumps"
        if order >= 2:
            assert float(abs(d2[2] - d2[0])) < 1e-7, "second derivative jumps"
        else:  # code 2: quadratic inside, linear outside: the curvature does jump
            assert float(abs(d2[2] - d2[0])) > 1e-3
        # and the returned d1 is the slope of the value across the edge
        vv, _, _ = _derivs(kind, code, [edge - 1e-6, edge + 1e-6])
        assert float((vv[1] - vv[0]) / 2e-6) == pytest.approx(float(d1[1]), rel=1e-6)


@pytest.mark.parametrize("kind,code", [("add", 0), ("add", 2), ("add", "4p"), ("mul", 1), ("mul", 4)])
def test_derivatives_vs_fd(kind, code):
    a = np.array([-2.7, -1.6, -0.83, -0.4, -0.05, 0.07, 0.35, 0.77, 1.3, 2.2])
    _, d1, d2 = _derivs(kind, code, a)
    h = 1e-5
    vp, d1p, _ = _derivs(kind, code, a + h)
    vm, d1m, _ = _derivs(kind, code, a - h)
    assert_close(d1, (vp - vm) / (2 * h), 1e-8, "interp d1 vs FD")
    assert_close(d2, (d1p - d1m) / (2 * h), 1e-8, "interp d2 vs FD of d1")
    h2 = 1e-4
    vp2, _, _ = _derivs(kind, code, a + h2)
    vm2, _, _ = _derivs(kind, code, a - h2)
    v0, _, _ = _derivs(kind, code, a)
    assert_close(d2, (vp2 - 2 * v0 + vm2) / h2 ** 2, 1e-5, "interp d2 vs FD")


@pytest.mark.parametrize("kind,code", [("add", 0), ("mul", 1)])
def test_kinked_codes_right_mask(kind, code):
    zero = torch.zeros(2, dtype=DT)
    _, d_left, _ = _derivs(kind, code, zero)
    _, d_r, _ = _derivs(kind, code, zero, right=torch.tensor([True, False]))
    h = 1e-6
    vh, _, _ = _derivs(kind, code, [h, -h])
    v0, _, _ = _derivs(kind, code, [0.0])
    right_fd, left_fd = float((vh[0] - v0[0]) / h), float((v0[0] - vh[1]) / h)
    assert abs(right_fd - left_fd) > 1e-2
    assert float(d_left[0]) == pytest.approx(left_fd, rel=1e-4)
    assert float(d_r[0]) == pytest.approx(right_fd, rel=1e-4)
    assert float(d_r[1]) == pytest.approx(left_fd, rel=1e-4)
    # away from 0 the mask changes nothing
    _, d_away, _ = _derivs(kind, code, torch.tensor([0.3, -0.3], dtype=DT), right=torch.tensor([True, True]))
    _, d_away0, _ = _derivs(kind, code, torch.tensor([0.3, -0.3], dtype=DT))
    assert torch.equal(d_away, d_away0)


def test_interp_broadcasting_and_no_derivs():
    alpha = torch.linspace(-2, 2, 6, dtype=DT).reshape(2, 3, 1)
    nom = torch.tensor([[10.0, 20.0], [5.0, 6.0], [1.0, 2.0]], dtype=DT)
    v, d1, d2 = interp.additive("4p", alpha, nom, nom * 1.1, nom * 0.95)
    assert v.shape == d1.shape == d2.shape == (2, 3, 2)
    v2, n1, n2 = interp.additive("4p", alpha, nom, nom * 1.1, nom * 0.95, derivs=False)
    assert n1 is None and n2 is None and torch.equal(v, v2)
    for i in range(2):
        for t in range(3):
            for b in range(2):
                nb = float(nom[t, b])
                assert float(v[i, t, b]) == pytest.approx(
                    ref_histosys("4p", float(alpha[i, t, 0]), nb, 1.1 * nb, 0.95 * nb), rel=1e-12, abs=1e-13)


@pytest.mark.parametrize("code,kind,expected", [("code4p", "histosys", "4p"), ("4p", "histosys", "4p"),
                                                (2, "histosys", 2), ("2", "histosys", 2), (" Code2 ", "histosys", 2),
                                                (0, "histosys", 0), (np.int64(2), "histosys", 2),
                                                ("code4", "normsys", 4), (1, "normsys", 1), ("1", "normsys", 1)])
def test_check_code_normalises(code, kind, expected):
    out = interp.check_code(code, kind)
    assert out == expected and type(out) is type(expected)


@pytest.mark.parametrize("code,kind", [(5, "histosys"), ("x", "histosys"), (True, "histosys"), (1, "histosys"),
                                       (4, "histosys"), ("4p", "normsys"), (2, "normsys"), (None, "histosys"),
                                       (False, "normsys"), ("code", "normsys")])
def test_check_code_rejects(code, kind):
    with pytest.raises(ValueError, match="interpolation code"):
        interp.check_code(code, kind)


@pytest.mark.parametrize("code,kind", [(True, "normsys"), (False, "histosys")])
def test_check_code_rejects_bool_equal_to_a_code(code, kind):
    with pytest.raises(ValueError, match="interpolation code"):
        interp.check_code(code, kind)


def test_model_rejects_unknown_codes():
    with pytest.raises(ValueError, match="histosys interpolation code 5"):
        Model(SMALL, histosys_code=5)
    with pytest.raises(ValueError, match="normsys interpolation code '4p'"):
        Model(SMALL, normsys_code="4p")
    bad = [Channel("SR", [Sample("b", [5.0], [HistoSys("h", hi=[6.0], lo=[4.0], code=1)])])]
    with pytest.raises(ValueError, match="histosys interpolation code 1"):
        Model(bad)


# ============================================================================ 5. bad input
def _ch(name="SR", samples=None):
    return Channel(name, samples if samples is not None else [Sample("b", [5.0, 6.0], [NormFactor("mu")])])


@pytest.mark.parametrize("build_bad,match", [
    (lambda: Model([_ch("SR"), _ch("SR")]), r"channel names must be unique.*'SR', 'SR'"),
    (lambda: Model([_ch("SR"), _ch("CR", [])]), r"channel 'CR' has no samples"),
    (lambda: Model([_ch("SR", [Sample("a", [1.0, 2.0]), Sample("b", [1.0, 2.0, 3.0])])]),
     r"channel 'SR', sample 'b': 3 bins, but the channel's first sample has 2"),
    (lambda: Model([_ch("SR", [Sample("a", [1.0, -2.0])])]), r"channel 'SR', sample 'a': negative nominal counts"),
    (lambda: Model([_ch("SR", [Sample("a", [1.0, float("nan")])])]), r"channel 'SR', sample 'a': counts contains NaN"),
    (lambda: Model([_ch("SR", [Sample("a", [1.0, 2.0], [HistoSys("shape", hi=[1.0, 2.0, 3.0], lo=[1.0, 2.0])])])]),
     r"channel 'SR', sample 'a': histosys 'shape' hi has 3 bins, expected 2"),
    (lambda: Model([_ch("SR", [Sample("a", [1.0, 2.0], [NormFactor("x")]),
                               Sample("b", [1.0, 2.0], [StatError("x", sigma=[0.1, 0.1])])])]),
     r"sample 'b': modifier 'x' is a staterror here but a normfactor elsewhere"),
    (lambda: Model([_ch("SR", [Sample("a", [1.0, 2.0], [Lumi("lumi")])])]), r"lumi modifier 'lumi' needs the width"),
    (lambda: Model([_ch()], parameters={"nope": {"init": 1.0}}), r"settings for unknown parameters \['nope'\]"),
    (lambda: Model([_ch()], poi="nope"), r"unknown POI 'nope'"),
    (lambda: NormSys("n", hi=0.0, lo=0.9), r"normsys 'n': hi must be a finite factor > 0"),
    (lambda: NormSys("n", hi=1.1, lo=-0.9), r"normsys 'n': lo must be a finite factor > 0"),
    (lambda: Model([_ch()], parameters={"mu": {"bounds": (2.0, 1.0)}}),
     r"parameter 'mu': bounds must be \(low, high\) with low < high"),
    (lambda: Model([_ch()], parameters={"mu": {"bounds": (1.0, 1.0)}}), r"parameter 'mu': bounds"),
    (lambda: Model([_ch()], parameters={"mu": {"init": 20.0}}), r"parameter 'mu': init 20.0 must be finite and inside"),
    (lambda: Model([_ch("SR", [Sample("a", [1.0, 2.0], [StatError("st", sigma=[0.1])])])]),
     r"staterror 'st' has 1 uncertainties, expected 2"),
    (lambda: Model([_ch("SR", [Sample("a", [1.0, 2.0], [StatError("st", sigma=[0.1, 0.1])])]),
                    _ch("CR", [Sample("a", [1.0, 2.0], [StatError("st", sigma=[0.1, 0.1])])])]),
     r"staterror 'st' appears in channels \['CR', 'SR'\]"),
    (lambda: Model([]), r"at least one channel"),
], ids=["dup_channel", "no_samples", "bin_count", "negative", "nan", "histosys_len", "kind_clash", "lumi_sigma",
        "unknown_setting", "unknown_poi", "normsys_hi", "normsys_lo", "bounds", "bounds_equal", "init_outside",
        "staterror_len", "staterror_two_channels", "no_channels"])
def test_bad_model_input(build_bad, match):
    with pytest.raises(ValueError, match=match):
        build_bad()


def test_bad_data_input(main):
    model, _ = main
    p = model.init
    with pytest.raises(ValueError, match=r"observed data must have shape \(\.\.\., 5\)"):
        model.nll(p, np.ones(4))
    with pytest.raises(ValueError, match=r"missing channels \['CR'\]"):
        model.nll(p, {"SR": [1.0, 2.0, 3.0]})
    with pytest.raises(ValueError, match=r"observed data of channel 'CR': expected 2 bins"):
        model.nll(p, {"SR": [1.0, 2.0, 3.0], "CR": [1.0]})
    with pytest.raises(ValueError, match=r"NaN, inf or negative"):
        model.nll(p, [1.0, 2.0, 3.0, -1.0, 2.0])
    with pytest.raises(ValueError, match=r"auxiliary data must have shape"):
        model.nll(p, np.ones(5), np.ones(3))
    with pytest.raises(ValueError, match=r"parameters must have shape \(\.\.\., 23\)"):
        model.nll(p[:-1], np.ones(5))


# ============================================================================ 6. devices
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    model, ref = make("main")
    rng = np.random.default_rng(9)
    data = torch.tensor(fake_data(ref, rng, n_sets=2), dtype=DT)
    P = torch.stack([vec(model, random_point(ref, rng, away=True)) for _ in range(2)])
    cpu = model.nll_grad_hess(P, data)
    nll_cpu = model.nll(P, data)
    gpu_model = make("main")[0].to("cuda")
    assert gpu_model.init.device.type == "cuda"
    gpu = gpu_model.nll_grad_hess(P.cuda(), data.cuda())
    assert all(t.device.type == "cuda" for t in gpu)
    for a, b, what in zip(gpu, cpu, ("value", "grad", "Hessian")):
        assert_close(a.cpu(), b, 1e-12, f"cuda vs cpu {what}")
    assert_close(gpu_model.nll(P.cuda(), data.cuda()).cpu(), nll_cpu, 1e-12, "cuda vs cpu nll")
    main_, aux = gpu_model.asimov(mu=1.0)
    assert main_.device.type == "cuda"
    assert_close(main_.cpu(), model.asimov(mu=1.0)[0], 1e-12, "cuda vs cpu asimov")
