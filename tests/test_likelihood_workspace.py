"""HistFactory JSON workspaces in and out of :class:`inferno.likelihood.Model`
(:mod:`inferno.likelihood.workspace`), checked against pyhf 0.7.6 (numpy backend) as the
independent reference: expected counts and NLL at random parameter points (inside and
outside |alpha| <= 1, several interpolation codes), round trips through the JSON format,
and the error messages of bad input. Parameters are mapped between the two by name: pyhf
orders parameter sets (and channels) differently.
"""
import copy
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.distributions import Gamma, Normal

from inferno.likelihood import (Channel, HistoSys, Lumi, Model, NormFactor, NormSys, Sample, ShapeFactor,
                                ShapeSys, StatError)
from inferno.likelihood.workspace import from_pyhf, pyhf_modifier_settings, to_pyhf
from workspaces import (ALPHA, CODES, WORKSPACES, _mod, check_same_parameters, full_workspace, pyhf_model, pyhf_nll,
                        small_workspace, to_pyhf_aux, to_pyhf_pars)

pyhf = pytest.importorskip("pyhf")

F64 = torch.float64
TOL = 1e-10  # absolute tolerance on NLLs of O(50) and on expected counts of O(100) (seen: < 1e-12)


@pytest.fixture(scope="module", autouse=True)
def numpy_backend():
    pyhf.set_backend("numpy")
    yield


def random_point(model, rng, outside=False):
    """Parameters drawn by kind; ``outside``: every alpha with 1.2 <= |alpha| <= 3."""
    p = model.init.clone()
    for k, par in enumerate(model.parameters):
        if par.kind in ALPHA:
            v = rng.choice([-1.0, 1.0]) * rng.uniform(1.2, 3.0) if outside else rng.uniform(-1.0, 1.0)
        elif par.kind in ("normfactor", "shapefactor"):
            v = rng.uniform(0.5, 1.8)
        elif par.kind == "lumi":
            v = rng.uniform(0.95, 1.05)
        else:  # staterror, shapesys
            v = rng.uniform(0.85, 1.15) if not par.fixed else par.init
        p[k] = v
    return p


def random_aux(model, rng):
    """Auxiliary data moved off their nominal values (Poisson ones stay positive)."""
    out = model.aux_nominal.clone()
    for a, name in enumerate(model.aux_names):
        par = model.parameters[model.index(name)]
        if par.constraint == "poisson":
            out[a] = out[a] * rng.uniform(0.8, 1.2)
        else:
            out[a] = out[a] + 0.5 * par.sigma * rng.standard_normal()
    return out


def compare(model, pm, obs, rng, n, outside=False, vary_aux=False):
    """Max |difference| of expected counts (per channel, by name) and of the NLL."""
    d_exp = d_nll = 0.0
    for _ in range(n):
        p = random_point(model, rng, outside)
        pars = to_pyhf_pars(model, pm, p)
        mine = model.expected(p)
        ref = np.asarray(pm.expected_actualdata(pars))
        for ch, sl in model.channel_bins.items():
            d_exp = max(d_exp, float(np.abs(mine[sl].numpy() - ref[pm.config.channel_slices[ch]]).max()))
        aux = random_aux(model, rng) if vary_aux else None
        nll = model.nll(p, obs, aux).item()
        assert math.isfinite(nll)
        d_nll = max(d_nll, abs(nll - pyhf_nll(model, pm, p, obs, aux)))
    return d_exp, d_nll


# ---------------------------------------------------------------------- from_pyhf vs pyhf
@pytest.mark.parametrize("codes", list(CODES), ids=list(CODES))
@pytest.mark.parametrize("which", list(WORKSPACES))
def test_from_pyhf_matches_pyhf(which, codes):
    spec = WORKSPACES[which]()
    model, obs = from_pyhf(spec, histosys_code=CODES[codes][0], normsys_code=CODES[codes][1])
    _, pm = pyhf_model(spec, model)
    check_same_parameters(model, pm)
    rng = np.random.default_rng(1)
    for outside in (False, True):
        for vary_aux in (False, True):
            d_exp, d_nll = compare(model, pm, obs, rng, 8, outside, vary_aux)
            assert d_exp < TOL and d_nll < TOL, (outside, vary_aux, d_exp, d_nll)


def test_from_pyhf_code2_inside():
    """inferno's histosys code 2 is pyhf's code2 inside |alpha| <= 1."""
    spec = full_workspace()
    model, obs = from_pyhf(spec, histosys_code="code2", normsys_code="code4")
    _, pm = pyhf_model(spec, model)
    assert pm.config.modifier_settings["histosys"] == {"interpcode": "code2"}
    d_exp, d_nll = compare(model, pm, obs, np.random.default_rng(2), 8, vary_aux=True)
    assert d_exp < TOL and d_nll < TOL


def test_from_pyhf_structure_and_settings():
    spec = full_workspace()
    model, obs = from_pyhf(spec)
    assert model.channel_names == ["SR", "CR"]  # the workspace's order (pyhf sorts: CR, SR)
    assert obs.dtype == F64 and obs.tolist() == [75.0, 72.0, 60.0, 44.0, 22.0, 205.0, 160.0, 98.0]
    assert model.poi_names == ["mu"]
    assert (model.histosys_code, model.normsys_code) == ("4p", 4)
    _, pm = pyhf_model(spec, model)
    # inits, bounds, fixed and nominal auxiliary data by name
    init, bounds, fixed = to_pyhf_pars(model, pm, model.init), np.array(pm.config.suggested_bounds()), \
        pm.config.suggested_fixed()
    assert np.array_equal(init, pm.config.suggested_init())
    for name, sl in model.param_sets.items():
        assert np.array_equal(model.bounds[sl].numpy(), bounds[pm.config.par_slice(name)]), name
        assert model.fixed[sl].tolist() == fixed[pm.config.par_slice(name)], name
    assert np.allclose(to_pyhf_aux(model, pm, model.aux_nominal), pm.config.auxdata, rtol=1e-14, atol=0)
    jer = model.parameters[model.index("jer")]
    assert (jer.constraint, jer.aux, jer.sigma) == ("normal", 0.2, 1.0)
    lumi = model.parameters[model.index("lumi")]
    assert (lumi.aux, lumi.sigma, lumi.bounds) == (1.0, 0.02, (0.9, 1.1))
    assert [model.parameters[model.index(f"stat_CR[{i}]")].sigma for i in range(3)] == [0.04, 0.05, 0.06]


def test_from_pyhf_second_measurement():
    spec = full_workspace()
    model, obs = from_pyhf(spec, measurement="alt")
    _, pm = pyhf_model(spec, model, measurement="alt")
    assert model.poi_names == ["k_tt"] == [pm.config.poi_name]
    mu = model.parameters[model.index("mu")]
    assert (mu.init, mu.fixed) == (0.0, True)
    assert model.parameters[model.index("lumi")].sigma == 0.05
    d_exp, d_nll = compare(model, pm, obs, np.random.default_rng(3), 8, vary_aux=True)
    assert d_exp < TOL and d_nll < TOL


def test_from_pyhf_inputs(tmp_path):
    """A dict, a path to the JSON file, a pyhf.Workspace and an object with .spec all work."""
    spec = small_workspace()
    path = tmp_path / "ws.json"
    path.write_text(json.dumps(spec))

    class Holder:
        def __init__(self, s):
            self.spec = s

    ref, obs = from_pyhf(spec)
    p = random_point(ref, np.random.default_rng(4))
    for src in (str(path), path, pyhf.Workspace(spec), Holder(spec)):
        m, o = from_pyhf(src)
        assert m.names == ref.names and torch.equal(o, obs)
        assert m.nll(p, o).item() == ref.nll(p, obs).item()
    with pytest.raises(ValueError, match="cannot read the workspace file"):
        from_pyhf(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="must be a dict"):
        from_pyhf(42)


def test_held_bins_differ_from_pyhf_by_a_constant():
    """A staterror bin without uncertainty and a shapesys bin without nominal counts: both
    held at 1; pyhf adds placeholder constraints (0.5 ln 2 pi and 1 at nominal auxdata),
    the Model none (documented in the module). Freeing the staterror bin gives pyhf's
    Gaussian, so the NLLs agree again; freeing the shapesys bin is refused."""
    spec = {"channels": [{"name": "A", "samples": [
        {"name": "s", "data": [4.0, 5.0, 6.0], "modifiers": [_mod("mu", "normfactor"),
                                                             _mod("st", "staterror", [0.5, 0.0, 0.6])]},
        {"name": "b", "data": [20.0, 0.0, 30.0], "modifiers": [_mod("ss", "shapesys", [2.0, 1.0, 3.0]),
                                                              _mod("st", "staterror", [1.0, 0.0, 1.5])]}]}],
        "observations": [{"name": "A", "data": [25.0, 4.0, 33.0]}],
        "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": []}}], "version": "1.0.0"}
    model, obs = from_pyhf(spec)
    _, pm = pyhf_model(spec, model)
    assert to_pyhf(model, obs, measurement_name="m") == spec  # held bins: pyhf's defaults, nothing to write
    assert model.fixed[[model.index("st[1]"), model.index("ss[1]")]].tolist() == [True, True]
    assert "st[1]" not in model.aux_names and "ss[1]" not in model.aux_names
    rng = np.random.default_rng(5)
    for _ in range(4):
        p = random_point(model, rng)
        offset = pyhf_nll(model, pm, p, obs) - model.nll(p, obs).item()
        assert offset == pytest.approx(0.5 * math.log(2 * math.pi) + 1.0, abs=TOL)
    freed = copy.deepcopy(spec)
    freed["measurements"][0]["config"]["parameters"] = [{"name": "st", "fixed": False}]
    model, obs = from_pyhf(freed)
    _, pm = pyhf_model(freed, model)
    assert model.parameters[model.index("st[1]")].constraint == "normal" and not model.fixed[model.index("st[1]")]
    d_exp, d_nll = compare(model, pm, obs, rng, 4)
    assert d_exp < TOL and abs(d_nll - 1.0) < TOL  # only the shapesys placeholder remains
    back, _ = from_pyhf(to_pyhf(model, obs))  # the freed bin's Gaussian survives the round trip
    p = random_point(model, rng)
    assert back.nll(p, obs).item() == pytest.approx(model.nll(p, obs).item(), abs=TOL)
    freed["measurements"][0]["config"]["parameters"] = [{"name": "ss", "fixed": False}]
    with pytest.raises(ValueError, match=r"parameter 'ss' \(shapesys\).*frees bins \[1\]"):
        from_pyhf(freed)


# ---------------------------------------------------------------------- round trips
@pytest.mark.parametrize("which", list(WORKSPACES))
def test_round_trip_through_json(which):
    spec = WORKSPACES[which]()
    measurement = spec["measurements"][0]["name"]
    for hcode, ncode in CODES.values():
        model, obs = from_pyhf(spec, histosys_code=hcode, normsys_code=ncode)
        out = to_pyhf(model, obs, measurement_name=measurement)
        out = json.loads(json.dumps(out))  # JSON-serialisable
        ws = pyhf.Workspace(out)  # validates against the schema
        assert out["channels"] == spec["channels"] and out["observations"] == spec["observations"]
        back, obs2 = from_pyhf(out, histosys_code=hcode, normsys_code=ncode)
        assert back.names == model.names and back.poi_names == model.poi_names and torch.equal(obs2, obs)
        assert torch.equal(back.init, model.init) and torch.equal(back.bounds, model.bounds)
        assert torch.equal(back.fixed, model.fixed) and back.aux_names == model.aux_names
        assert torch.allclose(back.aux_nominal, model.aux_nominal, rtol=1e-14, atol=0)
        rng = np.random.default_rng(6)
        pm_in = pyhf_model(spec, model)[1]
        pm_out = ws.model(modifier_settings=pyhf_modifier_settings(model))
        for outside in (False, True):
            for _ in range(4):
                p = random_point(model, rng, outside)
                a = model.nll(p, obs).item()
                assert back.nll(p, obs2).item() == pytest.approx(a, abs=TOL)
                # the exported workspace is the same likelihood for pyhf too
                assert pyhf_nll(model, pm_out, p, obs) == pytest.approx(pyhf_nll(model, pm_in, p, obs), abs=TOL)
                assert pyhf_nll(model, pm_out, p, obs) == pytest.approx(a, abs=TOL)


def programmatic_model(hcode="4p", ncode=4):
    """A Model built in Python with non-default settings of every exportable kind."""
    sr = [
        Sample("signal", [3.0, 6.0, 9.0, 4.0], [NormFactor("mu"), Lumi(), NormSys("sig_th", hi=1.12, lo=0.9),
                                               StatError("stat_SR", sigma=[0.3, 0.4, 0.6, 0.3])]),
        Sample("bkg", [60.0, 45.0, 30.0, 15.0], [
            Lumi(), HistoSys("shape", hi=[63.0, 46.0, 29.0, 13.5], lo=[58.0, 44.5, 31.0, 16.0]),
            NormSys("shape", hi=1.03, lo=0.98), StatError("stat_SR", sigma=[2.0, 1.8, 1.4, 1.0]),
            ShapeSys("bkg_mc", sigma=[4.0, 3.0, 3.0, 2.5])]),
    ]
    cr = [Sample("bkg", [200.0, 150.0], [Lumi(), NormFactor("k_b"), ShapeFactor("cr_shape"),
                                        NormSys("shape", hi=1.02, lo=0.97)])]
    params = {
        "lumi": {"sigma": 0.03, "aux": 1.01, "init": 1.01, "bounds": (0.8, 1.2)},
        "mu": {"init": 0.5, "bounds": (-2.0, 8.0)},
        "shape": {"constraint": "normal", "aux": 0.3, "bounds": (-4.0, 4.0)},  # centre off 0: auxdata
        "sig_th": {"fixed": True, "init": 0.2},
        "stat_SR": {"sigma": [0.05, 0.06, 0.07, 0.08], "aux": [1.0, 1.02, 1.0, 0.97]},
        "bkg_mc": {"tau": [200.0, 250.0, 100.0, 40.0], "init": [1.0, 1.05, 1.0, 1.0]},
        "cr_shape": {"fixed": True},
    }
    return Model([Channel("SR", sr), Channel("CR", cr)], poi="mu", parameters=params, histosys_code=hcode,
                 normsys_code=ncode)


@pytest.mark.parametrize("codes", list(CODES), ids=list(CODES))
def test_programmatic_model_to_pyhf(codes):
    model = programmatic_model(*CODES[codes])
    obs = torch.tensor([70.0, 52.0, 41.0, 20.0, 210.0, 148.0], dtype=F64)
    spec = to_pyhf(model, obs)
    _, pm = pyhf_model(spec, model)
    check_same_parameters(model, pm)
    assert pm.config.poi_name == "mu"
    assert np.array_equal(to_pyhf_pars(model, pm, model.init), pm.config.suggested_init())
    for name, sl in model.param_sets.items():
        ref_bounds = np.array(pm.config.suggested_bounds())[pm.config.par_slice(name)]
        assert np.array_equal(model.bounds[sl].numpy(), ref_bounds), name
        assert model.fixed[sl].tolist() == pm.config.suggested_fixed()[pm.config.par_slice(name)], name
    rng = np.random.default_rng(7)
    for outside in (False, True):
        d_exp, d_nll = compare(model, pm, obs, rng, 8, outside, vary_aux=True)
        assert d_exp < TOL and d_nll < TOL, (outside, d_exp, d_nll)
    back, obs2 = from_pyhf(spec, histosys_code=CODES[codes][0], normsys_code=CODES[codes][1])
    p = random_point(model, rng)
    assert back.nll(p, obs2).item() == pytest.approx(model.nll(p, obs).item(), abs=TOL)


def test_to_pyhf_writes_only_non_defaults():
    model, obs = from_pyhf(small_workspace())
    spec = to_pyhf(model, {"singlechannel": [51.0, 48.0]}, measurement_name="Measurement")
    assert spec == small_workspace()
    conf = {c["name"]: c for c in to_pyhf(programmatic_model(), torch.ones(6, dtype=F64))["measurements"][0]
            ["config"]["parameters"]}
    assert conf["lumi"] == {"name": "lumi", "inits": [1.01], "bounds": [[0.8, 1.2]], "auxdata": [1.01],
                            "sigmas": [0.03]}
    assert conf["shape"] == {"name": "shape", "bounds": [[-4.0, 4.0]], "auxdata": [0.3]}
    assert conf["cr_shape"] == {"name": "cr_shape", "fixed": True}
    assert "k_b" not in conf
    no_poi = _one_channel([NormFactor("mu")])
    spec = to_pyhf(no_poi, [10.0, 20.0, 30.0])
    assert spec["measurements"][0]["config"]["poi"] == ""
    assert pyhf.Workspace(spec).model().config.poi_name is None
    assert from_pyhf(spec)[0].poi_names == []


# ---------------------------------------------------------------------- interpolation codes
def test_pyhf_modifier_settings():
    assert pyhf_modifier_settings(programmatic_model()) == {"normsys": {"interpcode": "code4"},
                                                           "histosys": {"interpcode": "code4p"}}
    assert pyhf_modifier_settings(programmatic_model(0, 1)) == {"normsys": {"interpcode": "code1"},
                                                               "histosys": {"interpcode": "code0"}}
    ch = Channel("A", [Sample("s", [10.0, 10.0], [HistoSys("h1", hi=[11.0, 12.0], lo=[9.0, 8.0], code=0),
                                                  HistoSys("h2", hi=[11.0, 11.0], lo=[9.0, 9.0])])])
    with pytest.raises(ValueError, match=r"histosys.*code 0: A/s/h1.*code '4p': A/s/h2"):
        pyhf_modifier_settings(Model([ch]))
    ch = Channel("A", [Sample("s", [10.0], [NormSys("n1", hi=1.1, lo=0.9, code=1)])])
    assert pyhf_modifier_settings(Model([ch], normsys_code=1))["normsys"] == {"interpcode": "code1"}
    mixed = Channel("A", [Sample("s", [10.0], [NormSys("n1", hi=1.1, lo=0.9, code=1), NormSys("n2", hi=1.1, lo=0.9)])])
    with pytest.raises(ValueError, match="one interpolation code for all normsys"):
        pyhf_modifier_settings(Model([mixed]))


# ---------------------------------------------------------------------- to_pyhf refusals
def _one_channel(mods, parameters=None, poi=None):
    return Model([Channel("A", [Sample("s", [10.0, 20.0, 30.0], mods)])], poi=poi, parameters=parameters)


HIST = HistoSys("h", hi=[11.0, 21.0, 32.0], lo=[9.0, 19.0, 29.0])


@pytest.mark.parametrize("mods, parameters, poi, match", [
    ([NormFactor("mu")], {"mu": {"constraint": Gamma(2.0, 1.0)}}, None, r"parameter 'mu' \(normfactor\).*Gamma"),
    ([NormFactor("mu")], {"mu": {"constraint": "normal", "aux": 1.0, "sigma": 0.1}}, None,
     r"parameter 'mu' \(normfactor\).*unconstrained"),
    ([HIST], {"h": {"constraint": Normal(0.0, 2.0)}}, None, r"parameter 'h' \(histosys\).*width 2"),
    ([NormSys("n", hi=1.1, lo=0.9)], {"n": {"constraint": None}}, None, r"parameter 'n' \(normsys\).*no constraint"),
    ([HIST], {"h": {"constraint": Gamma(3.0, 2.0)}}, None,
     r"parameter 'h' \(histosys\).*distribution"),
    ([Lumi("lumi2")], {"lumi2": {"sigma": 0.02}}, None,
     r"sample 's': lumi modifier 'lumi2'.*names the lumi modifier 'lumi'"),
    ([Lumi()], {"lumi": {"sigma": 0.02, "constraint": Gamma(50.0, 50.0)}}, None, r"parameter 'lumi' \(lumi\)"),
    ([StatError("st", sigma=[1.0, 1.0, 1.0])], {"st": {"fixed": [True, False, False]}}, None,
     r"parameter set 'st' \(staterror\): bins \[0\] are fixed"),
    ([StatError("st", sigma=[1.0, 1.0, 1.0])], {"st": {"constraint": [None, "normal", "normal"]}}, None,
     r"parameter 'st\[0\]' \(staterror\).*free"),
    ([ShapeSys("ss", sigma=[1.0, 2.0, 3.0])], {"ss[1]": {"constraint": "normal"}}, None,
     r"parameter 'ss\[1\]' \(shapesys\).*poisson"),
    ([NormFactor("mu"), NormFactor("k")], None, ["mu", "k"], "one POI"),
    ([NormFactor("mu")], {"mu": {"bounds": (0.0, math.inf)}}, None,
     r"parameter 'mu' \(normfactor\): bounds .* not finite"),
])
def test_to_pyhf_refuses_what_pyhf_cannot_express(mods, parameters, poi, match):
    model = _one_channel(mods, parameters, poi)
    with pytest.raises(ValueError, match=match):
        to_pyhf(model, [10.0, 20.0, 30.0])


def test_to_pyhf_bad_observations():
    model = _one_channel([NormFactor("mu")])
    with pytest.raises(ValueError, match="observed data"):
        to_pyhf(model, [1.0, 2.0])
    with pytest.raises(ValueError, match="no batch"):
        to_pyhf(model, torch.ones(2, 3, dtype=F64))


# ---------------------------------------------------------------------- from_pyhf bad input
def _edit(fn):
    spec = full_workspace()
    fn(spec)
    return spec


def _sample(spec, ch, name):
    c = next(c for c in spec["channels"] if c["name"] == ch)
    return next(s for s in c["samples"] if s["name"] == name)


def _modifier(spec, ch, sample, name, mtype):
    return next(m for m in _sample(spec, ch, sample)["modifiers"] if m["name"] == name and m["type"] == mtype)


BAD = {
    "unsupported modifier": (
        lambda s: _sample(s, "SR", "ttbar")["modifiers"].append(_mod("weird", "magicsys", [1.0])),
        r"channel 'SR', sample 'ttbar', modifier 'weird' \(magicsys\): unsupported modifier type 'magicsys'"),
    "unknown POI": (lambda s: s["measurements"][0]["config"].update(poi="nu"),
                    r"measurement 'main': the POI 'nu' is not a parameter"),
    "per-bin POI": (lambda s: s["measurements"][0]["config"].update(poi="qcd_shape_CR"),
                    r"POI 'qcd_shape_CR' is a shapefactor with 3 parameters"),
    "observations too short": (lambda s: s["observations"][1].update(data=[205.0, 160.0]),
                               r"observations of channel 'CR': 2 bins, but the channel has 3"),
    "observations missing": (lambda s: s["observations"].pop(1), r"channel 'CR' has no observations"),
    "observations of an unknown channel": (lambda s: s["observations"].append({"name": "VR", "data": [1.0]}),
                                           r"observations for unknown channels \['VR'\]"),
    "NaN observation": (lambda s: s["observations"][0].update(data=[75.0, float("nan"), 60.0, 44.0, 22.0]),
                        r"observations of channel 'SR': data contains NaN"),
    "negative observation": (lambda s: s["observations"][1].update(data=[205.0, -1.0, 98.0]),
                             r"observations of channel 'CR': negative counts in bins \[1\]"),
    "mismatched bins": (lambda s: _sample(s, "SR", "qcd").update(data=[10.0, 8.0, 6.0, 4.0]),
                        r"channel 'SR', sample 'qcd': 4 bins, but sample 'signal' has 5"),
    "negative counts": (lambda s: _sample(s, "CR", "wjets").update(data=[50.0, -4.0, 20.0]),
                        r"channel 'CR', sample 'wjets': negative nominal counts in bins \[1\]"),
    "NaN counts": (lambda s: _sample(s, "SR", "signal").update(data=[2.0, float("nan"), 9.0, 6.0, 3.0]),
                   r"channel 'SR', sample 'signal': data contains NaN"),
    "NaN histosys": (lambda s: _modifier(s, "CR", "wjets", "jer", "histosys")["data"]["hi_data"].__setitem__(
        0, float("nan")), r"channel 'CR', sample 'wjets', modifier 'jer' \(histosys\): hi_data contains NaN"),
    "short staterror": (lambda s: _modifier(s, "SR", "ttbar", "stat_SR", "staterror").update(data=[2.0, 1.8]),
                        r"channel 'SR', sample 'ttbar', modifier 'stat_SR' \(staterror\).*2 values.*5 bins"),
    "long histosys": (lambda s: _modifier(s, "CR", "ttbar", "jes", "histosys")["data"]["lo_data"].append(1.0),
                      r"channel 'CR', sample 'ttbar', modifier 'jes' \(histosys\): lo_data has 4 values"),
    "normsys without lo": (lambda s: _modifier(s, "SR", "qcd", "qcd_norm", "normsys").update(data={"hi": 1.3}),
                           r"channel 'SR', sample 'qcd', modifier 'qcd_norm' \(normsys\): data must be"),
    "normsys factor <= 0": (lambda s: _modifier(s, "SR", "qcd", "qcd_norm", "normsys").update(
        data={"hi": 1.3, "lo": 0.0}), r"channel 'SR', sample 'qcd', modifier 'qcd_norm' \(normsys\).*lo must be"),
    "staterror in two channels": (lambda s: _modifier(s, "CR", "wjets", "stat_CR", "staterror").update(
        name="stat_SR"), r"channel 'CR', sample 'wjets', modifier 'stat_SR' \(staterror\): 3 bins here, 5 elsewhere"),
    "staterror in two channels of equal bins": (lambda s: s["channels"].append({"name": "VR", "samples": [
        {"name": "b", "data": [1.0] * 5, "modifiers": [_mod("stat_SR", "staterror", [0.1] * 5)]}]}),
        r"staterror 'stat_SR' appears in channels \['SR', 'VR'\]"),
    "kind clash": (lambda s: _sample(s, "CR", "qcd")["modifiers"].append(_mod("mu", "normsys", {"hi": 1.1, "lo": 0.9})),
                   r"channel 'CR', sample 'qcd', modifier 'mu' \(normsys\): 'mu' is a normsys here but a normfactor"),
    "config given twice": (
        lambda s: s["measurements"][0]["config"]["parameters"].append({"name": "wj_shape_SR", "inits": [1.0]}),
        r"parameter 'wj_shape_SR' is configured twice"),
    "config inits too short": (
        lambda s: s["measurements"][0]["config"]["parameters"].__setitem__(5, {"name": "wj_shape_SR", "inits": [1.0]}),
        r"measurement 'main', parameter 'wj_shape_SR' \(shapesys\): 'inits' has 1 values, but the parameter set has 5"),
    "sigmas on a normsys": (
        lambda s: s["measurements"][0]["config"]["parameters"].append({"name": "tt_xsec", "sigmas": [2.0]}),
        r"parameter 'tt_xsec' \(normsys\): normsys parameters take no \['sigmas'\]"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_from_pyhf_bad_input(case):
    edit, match = BAD[case]
    with pytest.raises(ValueError, match=match):
        from_pyhf(_edit(edit))


def test_from_pyhf_unknown_measurement():
    with pytest.raises(ValueError, match=r"unknown measurement 'nope': the workspace defines \['main', 'alt'\]"):
        from_pyhf(full_workspace(), measurement="nope")


def test_imports_without_pyhf():
    code = ("import sys; sys.modules['pyhf'] = None\n"
            "from inferno.likelihood.workspace import from_pyhf, to_pyhf\n"
            "import json; spec = json.loads(sys.argv[1])\n"
            "m, o = from_pyhf(spec); assert to_pyhf(m, o, measurement_name='Measurement') == spec\n")
    subprocess.run([sys.executable, "-c", code, json.dumps(small_workspace())], check=True, timeout=60)
