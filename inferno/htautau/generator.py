"""The numpy side of the search (:mod:`inferno.htautau`): the seeded, vectorised generator of
weighted events (:func:`generate`; the physics is described in the package docstring)."""
from __future__ import annotations

import math
from typing import Dict, Mapping, Sequence, Tuple, Union

import numpy as np
import torch

from . import kinematics as kin
from .constants import (_TTBAR_MODEL, ALT_SAMPLES, FEATURES, LABELS, LUMI, N_JETS_MAX, PRIMARY, PROCESSES, SAMPLES,
                        WEIGHT_COLUMNS, Seed, tau_id_uncertainty)
from .features import features

__all__ = ["generate", "to_dataframe"]


# ---------------------------------------------------------------------------- generation (numpy)
_M_H, _M_Z, _G_Z = 125.0, 91.1876, 2.4952
_M_TOP, _M_W, _M_B = 172.5, 80.38, 4.8
_KICK = 6.0          # soft recoil of the hard system, GeV per transverse component
_TAU_RES, _LEP_RES = 0.08, 0.02
_SOFT_RESPONSE, _SOFT_NOISE = 0.7, 8.0
_JET_PT_MIN, _JET_ETA_MAX = 25.0, 4.5
_SEL_PT, _SEL_ETA = 20.0, 2.5
_VBF_FRACTION = 0.15
_Y_SIGMA = 1.2  # rapidity spread of the H, Z and WW systems
_NEG_BASE, _NEG_PER_JET = 0.10, 0.05  # NLO-like negative weight fraction: 0.10 + 0.05 n_jets
_CHUNK = 100_000  # raw events per generation step (cache-friendly)

# the unpolarised leptonic tau decay in the collinear limit: f(x) = (5 - 9x^2 + 4x^3) / 3
_lep_x = kin.inverse_cdf_sampler(lambda x: (5 * x - 3 * x ** 3 + x ** 4) / 3.0, 0.0, 1.0)


def _wrap(phi: np.ndarray) -> np.ndarray:
    return (phi + np.pi) % (2 * np.pi) - np.pi


def _isr_jets(m: int, probs: Sequence[float], mean_pt: float, rng: np.random.Generator,
              n_slots: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Initial-state jets: multiplicity from ``probs``, pT = 20 + Exp(mean_pt), eta ~ N(0, 2)
    (cut at 4.7), phi uniform; (m, n_slots) arrays with pT 0 for absent jets."""
    n = rng.choice(len(probs), size=m, p=np.asarray(probs) / np.sum(probs))
    pt = 20.0 + rng.exponential(mean_pt, (m, n_slots))
    eta = np.clip(rng.normal(0.0, 2.0, (m, n_slots)), -4.7, 4.7)
    phi = rng.uniform(-np.pi, np.pi, (m, n_slots))
    pt = np.where(np.arange(n_slots)[None, :] < n[:, None], pt, 0.0)
    return pt, eta, phi


def _tau_hadronic(tau: kin.P4, rng: np.random.Generator) -> Tuple[kin.P4, np.ndarray]:
    """Visible four-momentum and mass of hadronic tau decays (pi 23%, rho 52%, a1 25%),
    collinear, visible momentum fraction uniform above m_vis^2 / m_tau^2."""
    m = len(tau.e)
    mode = rng.choice(3, size=m, p=[0.23, 0.52, 0.25])
    m_rho = kin.truncated_breit_wigner(0.775, 0.149, 0.30, 1.70, m, rng)
    m_a1 = kin.truncated_breit_wigner(1.230, 0.420, 0.60, 1.75, m, rng)
    m_vis = np.where(mode == 0, 0.13957, np.where(mode == 1, m_rho, m_a1))
    r = (m_vis / kin.M_TAU) ** 2
    x = r + (1.0 - r) * rng.random(m)
    vis, _ = kin.collinear_split(tau, x, m_vis)
    return vis, m_vis


def _tau_leptonic(tau: kin.P4, rng: np.random.Generator) -> kin.P4:
    vis, _ = kin.collinear_split(tau, _lep_x(rng.random(len(tau.e))), 0.0)
    return vis


def _event(tau: kin.P4, m_vis: np.ndarray, lep: kin.P4, jet_pt, jet_eta, jet_phi, jet_b,
           kick: np.ndarray) -> Dict[str, np.ndarray]:
    """The truth record: the visible tau and lepton, the jets, the soft recoil (-kick)."""
    return dict(tau_pt=tau.pt, tau_eta=tau.eta, tau_phi=tau.phi, tau_m=m_vis,
                lep_pt=lep.pt, lep_eta=lep.eta, lep_phi=lep.phi,
                jet_pt=jet_pt, jet_eta=jet_eta, jet_phi=jet_phi, jet_b=jet_b,
                soft_x=-kick[:, 0], soft_y=-kick[:, 1])


def _recoil(pt: np.ndarray, phi: np.ndarray, kick: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """pT and phi of a system balancing the jets (pt, phi) up to the soft ``kick``."""
    bx = kick[:, 0] - (pt * np.cos(phi)).sum(1)
    by = kick[:, 1] - (pt * np.sin(phi)).sum(1)
    return np.hypot(bx, by), np.arctan2(by, bx)


def _resonance(m: int, kind: str, rng: np.random.Generator) -> Dict[str, np.ndarray]:
    """H or Z -> tau tau -> tau_h lep, recoiling against initial-state (or VBF) jets."""
    if kind == "htautau":
        pt, eta, phi = _isr_jets(m, (0.45, 0.35, 0.15, 0.05), 45.0, rng, 3)
        vbf = rng.random(m) < _VBF_FRACTION
        side = np.where(rng.random(m) < 0.5, 1.0, -1.0)
        v_eta = np.clip(1.5 + np.abs(rng.normal(0.0, 1.0, (m, 2))), None, 4.7) * np.column_stack([side, -side])
        v_pt = 25.0 + rng.exponential(45.0, (m, 2))
        v_phi = rng.uniform(-np.pi, np.pi, (m, 2))
        extra = rng.random(m) < 0.3
        pt = np.where(vbf[:, None], np.column_stack([v_pt, np.where(extra, pt[:, 0], 0.0)]), pt)
        eta = np.where(vbf[:, None], np.column_stack([v_eta, eta[:, 0]]), eta)
        phi = np.where(vbf[:, None], np.column_stack([v_phi, phi[:, 0]]), phi)
        mass = np.full(m, _M_H)
    else:
        pt, eta, phi = _isr_jets(m, (0.70, 0.22, 0.06, 0.02), 25.0, rng, 3)
        mass = kin.truncated_breit_wigner(_M_Z, _G_Z, 70.0, 115.0, m, rng)
    kick = rng.normal(0.0, _KICK, (m, 2))
    bpt, bphi = _recoil(pt, phi, kick)
    boson = kin.from_pt_y_phi_m(bpt, rng.normal(0.0, _Y_SIGMA, m), bphi, mass)
    t1, t2 = kin.two_body_decay(boson, kin.M_TAU, kin.M_TAU, rng)
    tau, m_vis = _tau_hadronic(t1, rng)
    lep = _tau_leptonic(t2, rng)
    return _event(tau, m_vis, lep, pt, eta, phi, np.zeros(pt.shape, dtype=bool), kick)


def _w_decays(w1: kin.P4, w2: kin.P4, rng: np.random.Generator) -> Tuple[kin.P4, np.ndarray, kin.P4]:
    """W1 -> tau nu (tau -> tau_h), W2 -> lep nu."""
    tau, _ = kin.two_body_decay(w1, kin.M_TAU, 0.0, rng)
    tau_h, m_vis = _tau_hadronic(tau, rng)
    lep, _ = kin.two_body_decay(w2, 0.0, 0.0, rng)
    return tau_h, m_vis, lep


def _ttbar(m: int, model: str, rng: np.random.Generator) -> Dict[str, np.ndarray]:
    par = _TTBAR_MODEL[model]
    ipt, ieta, iphi = _isr_jets(m, par["isr_probs"], par["isr_pt"], rng, 2)
    kick = rng.normal(0.0, _KICK, (m, 2))
    pt1 = rng.gamma(2.0, par["top_pt_scale"], m)
    phi1 = rng.uniform(-np.pi, np.pi, m)
    # the second top balances the first, the initial-state jets and the kick
    pt2, phi2 = _recoil(np.column_stack([ipt, pt1]), np.column_stack([iphi, phi1]), kick)
    y = rng.normal(0.0, 1.0, (m, 2))
    top1 = kin.from_pt_y_phi_m(pt1, y[:, 0], phi1, _M_TOP)
    top2 = kin.from_pt_y_phi_m(pt2, y[:, 1], phi2, _M_TOP)
    b1, w1 = kin.two_body_decay(top1, _M_B, _M_W, rng)
    b2, w2 = kin.two_body_decay(top2, _M_B, _M_W, rng)
    tau, m_vis, lep = _w_decays(w1, w2, rng)
    jb = np.column_stack([np.ones((m, 2), bool), np.zeros((m, 2), bool)])
    return _event(tau, m_vis, lep, np.column_stack([b1.pt, b2.pt, ipt]), np.column_stack([b1.eta, b2.eta, ieta]),
                  np.column_stack([b1.phi, b2.phi, iphi]), jb, kick)


def _diboson(m: int, rng: np.random.Generator) -> Dict[str, np.ndarray]:
    pt, eta, phi = _isr_jets(m, (0.62, 0.27, 0.08, 0.03), 30.0, rng, 3)
    kick = rng.normal(0.0, _KICK, (m, 2))
    bpt, bphi = _recoil(pt, phi, kick)
    mass = 2 * _M_W + 5.0 + rng.exponential(70.0, m)
    ww = kin.from_pt_y_phi_m(bpt, rng.normal(0.0, _Y_SIGMA, m), bphi, mass)
    w1, w2 = kin.two_body_decay(ww, _M_W, _M_W, rng)
    tau, m_vis, lep = _w_decays(w1, w2, rng)
    return _event(tau, m_vis, lep, pt, eta, phi, np.zeros(pt.shape, dtype=bool), kick)


def _truth(sample: str, m: int, rng: np.random.Generator) -> Dict[str, np.ndarray]:
    if sample in ("htautau", "ztautau"):
        return _resonance(m, sample, rng)
    if sample == "diboson":
        return _diboson(m, rng)
    return _ttbar(m, {"ttbar": "nominal", "ttbar_up": "up", "ttbar_down": "down"}[sample], rng)


def _reconstruct(t: Dict[str, np.ndarray], rng: np.random.Generator) -> Dict[str, np.ndarray]:
    """Smearing, selection, jet reconstruction and soft term (all at nominal scales)."""
    m = len(t["tau_pt"])
    tpt = t["tau_pt"] * np.maximum(1.0 + _TAU_RES * rng.standard_normal(m), 0.2)
    teta = t["tau_eta"] + 0.005 * rng.standard_normal(m)
    lpt = t["lep_pt"] * (1.0 + _LEP_RES * rng.standard_normal(m))
    # the selection first: the rest is done for the selected events only
    sel = (tpt > _SEL_PT) & (np.abs(teta) < _SEL_ETA) & (lpt > _SEL_PT) & (np.abs(t["lep_eta"]) < _SEL_ETA)
    t = {k_: v[sel] for k_, v in t.items()}
    tpt, teta, lpt = tpt[sel], teta[sel], lpt[sel]
    m = len(tpt)
    tphi = _wrap(t["tau_phi"] + 0.005 * rng.standard_normal(m))
    tm = np.clip(t["tau_m"] + 0.05 * rng.standard_normal(m), 0.13, 1.77)
    # jets
    jpt0, jeta, jphi, isb = t["jet_pt"], t["jet_eta"], t["jet_phi"], t["jet_b"]
    k = jpt0.shape[1]
    res = np.sqrt(0.8 ** 2 / np.maximum(jpt0, 1.0) + 0.05 ** 2)
    jpt = jpt0 * np.maximum(1.0 + res * rng.standard_normal((m, k)), 0.0)
    jeta = jeta + 0.02 * rng.standard_normal((m, k))
    jphi = _wrap(jphi + 0.02 * rng.standard_normal((m, k)))
    score = np.where(isb, rng.beta(4.0, 1.2, (m, k)), rng.beta(1.0, 3.8, (m, k)))
    ok = (jpt0 > 0) & (jpt > _JET_PT_MIN) & (np.abs(jeta) < _JET_ETA_MAX)
    order = np.argsort(-np.where(ok, jpt, -1.0), axis=1, kind="stable")
    rows = np.arange(m)[:, None]
    jpt, jeta, jphi, score, ok = (a[rows, order] for a in (jpt, jeta, jphi, score, ok))
    keep = ok & (np.arange(k)[None, :] < N_JETS_MAX)
    # soft term: the soft recoil (70% response, noise) and every jet not kept
    lost = (jpt0[rows, order] > 0) & ~keep
    sx = _SOFT_RESPONSE * t["soft_x"] + _SOFT_NOISE * rng.standard_normal(m)
    sy = _SOFT_RESPONSE * t["soft_y"] + _SOFT_NOISE * rng.standard_normal(m)
    sx = sx + np.where(lost, jpt * np.cos(jphi), 0.0).sum(1)
    sy = sy + np.where(lost, jpt * np.sin(jphi), 0.0).sum(1)
    jets = np.zeros((m, N_JETS_MAX, 4))
    kk = min(k, N_JETS_MAX)
    for q, a in enumerate((jpt, jeta, jphi, score)):
        jets[:, :kk, q] = np.where(keep[:, :kk], a[:, :kk], 0.0)
    return dict(tau=np.column_stack([tpt, teta, tphi, tm]),
                lep=np.column_stack([lpt, t["lep_eta"], t["lep_phi"]]),
                jets=jets, soft=np.column_stack([sx, sy]))


def _generate_sample(sample: str, n: int, ss: np.random.SeedSequence) -> Dict[str, np.ndarray]:
    """``n`` selected events of ``sample`` at nominal scales (chunks until enough pass)."""
    rng = np.random.default_rng(ss)
    parts, have, eff = [], 0, 0.15
    while have < n:
        m = int(min(max(1.1 * (n - have) / eff, 1000), _CHUNK))
        r = _reconstruct(_truth(sample, m, rng), rng)
        got = len(r["tau"])
        eff = max(got / m, 0.01)
        parts.append(r)
        have += got
    out = {k: np.concatenate([p[k] for p in parts])[:n] for k in parts[0]}
    if PROCESSES.get(sample) is not None and PROCESSES[sample].neg_weight_fraction > 0:
        nj = (out["jets"][:, :, 0] > 0).sum(1)
        f = _NEG_BASE + _NEG_PER_JET * nj  # E[g] = 1 event by event
        neg = rng.random(n) < f
        out["gen_weight"] = np.where(neg, -1.0, 1.0) / (1.0 - 2.0 * f)
    else:
        out["gen_weight"] = np.ones(n)
    return out


def _primary(r: Dict[str, np.ndarray], tes: float, jes: float) -> np.ndarray:
    """Rows of primary objects at the energy scales ``tes``, ``jes`` (float64)."""
    n = len(r["tau"])
    tau, lep, jets, soft = r["tau"].copy(), r["lep"], r["jets"].copy(), r["soft"]
    tau[:, 0] *= tes
    tau[:, 3] *= tes
    jets[:, :, 0] *= jes
    mx = -(tau[:, 0] * np.cos(tau[:, 2]) + lep[:, 0] * np.cos(lep[:, 2])
           + (jets[:, :, 0] * np.cos(jets[:, :, 2])).sum(1) + soft[:, 0])
    my = -(tau[:, 0] * np.sin(tau[:, 2]) + lep[:, 0] * np.sin(lep[:, 2])
           + (jets[:, :, 0] * np.sin(jets[:, :, 2])).sum(1) + soft[:, 1])
    met = np.column_stack([np.hypot(mx, my), np.arctan2(my, mx)])
    return np.column_stack([tau, lep, met, jets.reshape(n, 4 * N_JETS_MAX)])


def _features_numpy(primary: np.ndarray) -> np.ndarray:
    """:func:`features` of many rows: in cache-sized chunks, on one torch thread (elementwise
    work on small chunks gains nothing from threads, and loses much on a busy machine)."""
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with torch.no_grad():
            return torch.cat([features(c) for c in torch.from_numpy(primary).split(16384)]).numpy()
    finally:
        torch.set_num_threads(threads)


def _seed_sequence(seed: Seed) -> np.random.SeedSequence:
    if isinstance(seed, np.random.Generator):
        seed = int(seed.integers(2 ** 63))
    return seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)


def _counts(n_events: Union[int, Mapping[str, int]]) -> Dict[str, int]:
    def check(k: str, v) -> int:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"the number of events of {k!r} must be an integer >= 0, got {v!r}")
        return int(v)

    if isinstance(n_events, Mapping):
        bad = sorted(set(n_events) - set(SAMPLES))
        if bad:
            raise ValueError(f"unknown samples {bad}: the samples are {list(SAMPLES)}")
        return {k: check(k, n_events[k]) for k in SAMPLES if k in n_events}
    n = check("every sample", n_events)
    out = {}
    for k in SAMPLES:
        cap = PROCESSES[k].n_mc_max if k in PROCESSES else None
        out[k] = n if cap is None else min(n, cap)
    return out


def generate(n_events: Union[int, Mapping[str, int]] = 10_000, seed: Seed = None, lumi: float = LUMI,
             tes: float = 1.0, jes: float = 1.0) -> Dict[str, np.ndarray]:
    r"""Weighted events of the toy :math:`H \to \tau\tau` search (see the module docstring).

    Args:
        n_events: raw (selected) events per sample: an int for every sample of
            :data:`SAMPLES` (diboson capped at ``n_mc_max`` = 3000: limited MC statistics),
            or a dict ``{sample: n}`` generating only the samples named (exact counts).
        seed: an int, a ``SeedSequence``, a ``Generator`` (one integer drawn) or None. Each
            sample has its own stream (spawned in :data:`SAMPLES` order), so a sample's
            events do not depend on which other samples are generated.
        lumi: the integrated luminosity (fb^-1) the weights are normalised to.
        tes, jes: tau and jet energy scale factors applied at generation time, after the
            smearing and the selection (same events, same random numbers): e.g.
            ``tes=tes_factor(1.0)`` gives what ``EnergyScale('tau')(primary, 1.0)`` gives.

    Returns:
        dict of numpy arrays over the events, samples in :data:`SAMPLES` order:

        * ``primary``: ``(n, 21)`` float32, columns :data:`PRIMARY`;
        * ``features``: ``(n, 16)`` float32, columns :data:`FEATURES` (``features(primary)``);
        * ``label``: ``(n,)`` int64, :data:`LABELS`;
        * ``weight``: ``(n,)`` float64: :math:`\sigma L / N` times the generator weight; each
          sample's weights sum to its process's expected yield (the diboson's within MC error;
          the alternative ttbar samples to ttbar's);
        * ``weight_tau_id_up``, ``weight_tau_id_down``: the weights with the tau
          identification efficiency at +-1 sigma (:func:`tau_id_uncertainty`).

    Raises:
        ValueError: unknown sample names, negative counts, non-positive ``lumi``, ``tes``
            or ``jes``.
    """
    counts = _counts(n_events)
    for k, v in (("lumi", lumi), ("tes", tes), ("jes", jes)):
        if not (math.isfinite(float(v)) and float(v) > 0):
            raise ValueError(f"{k} must be finite and > 0, got {v}")
    children = dict(zip(SAMPLES, _seed_sequence(seed).spawn(len(SAMPLES))))
    prim, lab, w, tau_pt = [], [], [], []
    for s in SAMPLES:
        n = counts.get(s, 0)
        if n == 0:
            continue
        r = _generate_sample(s, n, children[s])
        prim.append(_primary(r, float(tes), float(jes)))
        tau_pt.append(r["tau"][:, 0])
        lab.append(np.full(n, LABELS[s], dtype=np.int64))
        proc = PROCESSES[ALT_SAMPLES[s][1]] if s in ALT_SAMPLES else PROCESSES[s]
        w.append(proc.xsec_fb * float(lumi) / n * r["gen_weight"])
    if not prim:
        raise ValueError("no events requested")
    primary = np.concatenate(prim).astype(np.float32)
    feats = _features_numpy(primary)
    weight = np.concatenate(w)
    # the tau-ID uncertainty at the nominal tau pT (the efficiency does not follow the scale)
    delta = tau_id_uncertainty(np.concatenate(tau_pt))
    return dict(primary=primary, features=feats, label=np.concatenate(lab), weight=weight,
                weight_tau_id_up=weight * (1.0 + delta), weight_tau_id_down=weight * (1.0 - delta))


def to_dataframe(events: Mapping[str, np.ndarray]):
    """The events of :func:`generate` as a pandas DataFrame: the :data:`PRIMARY` columns, the
    :data:`FEATURES` columns (prefixed ``f_`` where a name repeats: ``f_met``,
    ``f_jet1_pt``), ``label``, ``sample`` (its name) and the weight columns."""
    import pandas as pd

    cols = {k: events["primary"][:, i] for i, k in enumerate(PRIMARY)}
    for i, k in enumerate(FEATURES):
        cols[f"f_{k}" if k in cols else k] = events["features"][:, i]
    cols["label"] = events["label"]
    code = np.full(max(LABELS.values()) + 1, -1)
    for i, k in enumerate(SAMPLES):
        code[LABELS[k]] = i
    cols["sample"] = pd.Categorical.from_codes(code[events["label"]], categories=list(SAMPLES))
    for k in WEIGHT_COLUMNS:
        cols[k] = events[k]
    return pd.DataFrame(cols)
