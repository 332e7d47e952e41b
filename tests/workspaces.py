"""HistFactory workspaces written for the tests (two channels with every modifier type, and
pyhf's one-channel example), and the mapping of parameters and data between
:mod:`inferno.likelihood` and pyhf by name (pyhf orders parameter sets and channels
differently). Shared by the likelihood tests; pyhf is imported only where it is used."""
import numpy as np

from inferno.likelihood.workspace import pyhf_modifier_settings

ALPHA = ("normsys", "histosys")


# ---------------------------------------------------------------------- workspaces
def _mod(name, mtype, data=None):
    return {"name": name, "type": mtype, "data": data}


def _scaled(counts, hi, lo):
    """histosys templates: per-bin relative shifts."""
    return {"hi_data": [c * (1 + h) for c, h in zip(counts, hi)], "lo_data": [c * (1 - l) for c, l in zip(counts, lo)]}


def full_workspace():
    """Two channels (SR: 5 bins, CR: 3 bins, given in non-alphabetical order), signal and
    three backgrounds, every modifier type: a normsys and a histosys sharing the name
    ``jes``, a normfactor ``k_tt`` shared by both channels, a staterror per channel, a
    shapesys, a shapefactor, lumi on several samples; two measurements."""
    sr = {"signal": [2.0, 5.0, 9.0, 6.0, 3.0], "ttbar": [40.0, 35.0, 30.0, 22.0, 12.0],
          "wjets": [25.0, 20.0, 14.0, 9.0, 5.0], "qcd": [10.0, 8.0, 6.0, 4.0, 2.0]}
    cr = {"signal": [0.5, 0.3, 0.1], "ttbar": [120.0, 90.0, 60.0], "wjets": [50.0, 40.0, 20.0],
          "qcd": [30.0, 25.0, 15.0]}
    jes_n = {"hi": 1.05, "lo": 0.96}
    sr_samples = [
        {"name": "signal", "data": sr["signal"], "modifiers": [
            _mod("mu", "normfactor"), _mod("lumi", "lumi"), _mod("sig_xsec", "normsys", {"hi": 1.1, "lo": 0.92}),
            _mod("stat_SR", "staterror", [0.3, 0.5, 0.6, 0.5, 0.4]),
            _mod("jes", "histosys", _scaled(sr["signal"], [0.04, 0.06, 0.02, -0.03, -0.05],
                                            [0.03, 0.05, 0.01, -0.04, -0.06]))]},
        {"name": "ttbar", "data": sr["ttbar"], "modifiers": [
            _mod("k_tt", "normfactor"), _mod("lumi", "lumi"),
            _mod("jes", "histosys", _scaled(sr["ttbar"], [0.08, 0.05, 0.0, -0.04, -0.09],
                                            [0.06, 0.04, 0.01, -0.05, -0.1])),
            _mod("jes", "normsys", jes_n), _mod("tt_xsec", "normsys", {"hi": 1.06, "lo": 0.93}),
            _mod("stat_SR", "staterror", [2.0, 1.8, 1.5, 1.2, 1.0])]},
        {"name": "wjets", "data": sr["wjets"], "modifiers": [
            _mod("lumi", "lumi"), _mod("wj_shape_SR", "shapesys", [3.0, 2.5, 2.0, 1.5, 1.2]),
            _mod("wj_xsec", "normsys", {"hi": 1.15, "lo": 0.8}),
            _mod("jer", "histosys", _scaled(sr["wjets"], [0.05, -0.02, 0.03, 0.07, 0.1],
                                            [0.04, -0.01, 0.02, 0.05, 0.12]))]},
        {"name": "qcd", "data": sr["qcd"], "modifiers": [_mod("qcd_norm", "normsys", {"hi": 1.3, "lo": 0.75})]},
    ]
    cr_samples = [
        {"name": "signal", "data": cr["signal"], "modifiers": [
            _mod("mu", "normfactor"), _mod("lumi", "lumi"), _mod("stat_CR", "staterror", [0.1, 0.1, 0.05])]},
        {"name": "ttbar", "data": cr["ttbar"], "modifiers": [
            _mod("k_tt", "normfactor"), _mod("lumi", "lumi"),
            _mod("jes", "histosys", _scaled(cr["ttbar"], [0.03, 0.01, -0.02], [0.02, 0.02, -0.03])),
            _mod("jes", "normsys", jes_n), _mod("tt_xsec", "normsys", {"hi": 1.06, "lo": 0.93}),
            _mod("stat_CR", "staterror", [4.0, 3.5, 2.8])]},
        {"name": "wjets", "data": cr["wjets"], "modifiers": [
            _mod("lumi", "lumi"), _mod("wj_xsec", "normsys", {"hi": 1.15, "lo": 0.8}),
            _mod("jer", "histosys", _scaled(cr["wjets"], [0.02, 0.04, 0.06], [0.03, 0.03, 0.05])),
            _mod("stat_CR", "staterror", [2.5, 2.2, 1.6])]},
        {"name": "qcd", "data": cr["qcd"], "modifiers": [_mod("qcd_shape_CR", "shapefactor")]},
    ]
    lumi = {"name": "lumi", "auxdata": [1.0], "sigmas": [0.02], "bounds": [[0.9, 1.1]], "inits": [1.0]}
    return {
        "channels": [{"name": "SR", "samples": sr_samples}, {"name": "CR", "samples": cr_samples}],
        "observations": [{"name": "SR", "data": [75.0, 72.0, 60.0, 44.0, 22.0]},
                         {"name": "CR", "data": [205.0, 160.0, 98.0]}],
        "measurements": [
            {"name": "main", "config": {"poi": "mu", "parameters": [
                lumi, {"name": "k_tt", "inits": [1.05], "bounds": [[0.0, 5.0]]},
                {"name": "jer", "auxdata": [0.2]},  # a histosys constraint centred off 0
                {"name": "qcd_norm", "fixed": True},
                {"name": "stat_CR", "sigmas": [0.04, 0.05, 0.06], "auxdata": [1.01, 0.99, 1.0]},
                {"name": "wj_shape_SR", "inits": [1.0, 1.1, 1.0, 0.9, 1.0]},
                {"name": "not_a_parameter", "inits": [3.0]}]}},  # ignored, as pyhf does
            {"name": "alt", "config": {"poi": "k_tt", "parameters": [
                dict(lumi, sigmas=[0.05], bounds=[[0.5, 1.5]]), {"name": "mu", "inits": [0.0], "fixed": True},
                {"name": "qcd_shape_CR", "bounds": [[0.1, 4.0]] * 3}]}},
        ],
        "version": "1.0.0",
    }


def small_workspace():
    """One channel, two bins: a signal normfactor and an uncorrelated background
    uncertainty (pyhf's "uncorrelated background" example)."""
    return {
        "channels": [{"name": "singlechannel", "samples": [
            {"name": "signal", "data": [12.0, 11.0], "modifiers": [_mod("mu", "normfactor")]},
            {"name": "background", "data": [50.0, 52.0],
             "modifiers": [_mod("uncorr_bkguncrt", "shapesys", [3.0, 7.0])]}]}],
        "observations": [{"name": "singlechannel", "data": [51.0, 48.0]}],
        "measurements": [{"name": "Measurement", "config": {"poi": "mu", "parameters": []}}],
        "version": "1.0.0",
    }


WORKSPACES = {"full": full_workspace, "small": small_workspace}
CODES = {"4p/4": ("4p", 4), "0/1": (0, 1)}


# ---------------------------------------------------------------------- mapping by name
def pyhf_model(spec, model, measurement=None):
    """pyhf's model of the workspace with ``model``'s interpolation codes."""
    import pyhf

    ws = pyhf.Workspace(spec)
    measurement = measurement or spec["measurements"][0]["name"]
    return ws, ws.model(measurement_name=measurement, modifier_settings=pyhf_modifier_settings(model))


def check_same_parameters(model, pm):
    assert set(model.param_sets) == set(pm.config.par_order)
    for name, sl in model.param_sets.items():
        assert sl.stop - sl.start == pm.config.param_set(name).n_parameters, name


def to_pyhf_pars(model, pm, p):
    """inferno parameter vector -> pyhf's, by name."""
    out = np.array(pm.config.suggested_init(), dtype=float)
    for name, sl in model.param_sets.items():
        out[pm.config.par_slice(name)] = p[sl].numpy()
    return out


def to_pyhf_main(model, pm, main):
    """inferno main data (channels in the Model's order) -> pyhf's (channels sorted)."""
    return np.concatenate([main[model.channel_bins[ch]].numpy() for ch in pm.config.channels])


def to_pyhf_aux(model, pm, aux):
    """inferno auxiliary data -> pyhf's; bins the Model leaves unconstrained keep pyhf's nominal."""
    by_name = dict(zip(model.aux_names, aux.tolist()))
    nominal = pm.config.auxdata
    out, pos = [], 0
    for name in pm.config.auxdata_order:
        names = model.names[model.param_sets[name]]
        out += [by_name.get(n, nominal[pos + i]) for i, n in enumerate(names)]
        pos += len(names)
    assert pos == len(nominal)
    return np.array(out)


def pyhf_nll(model, pm, p, main, aux=None):
    """pyhf's NLL at inferno's parameters ``p``, main data and auxiliary data ``aux`` (None:
    pyhf's own nominal auxiliary data, so that these are checked too)."""
    aux = np.asarray(pm.config.auxdata) if aux is None else to_pyhf_aux(model, pm, aux)
    data = np.concatenate([to_pyhf_main(model, pm, main), aux])
    return -float(pm.logpdf(to_pyhf_pars(model, pm, p), data)[0])
