"""The torch side of the search (:mod:`inferno.htautau`): the derived features of the primary
objects (differentiable), the energy scales as transforms of the primary objects, and the
network's first layer (:class:`FeatureLayer`)."""
from __future__ import annotations

import math
from typing import Optional, Union

import numpy as np
import torch
from torch import Tensor, nn

from .constants import (_JET0, _LEP_ETA, _LEP_PHI, _LEP_PT, _MET, _MET_PHI, _TAU_ETA, _TAU_M, _TAU_PHI, _TAU_PT,
                        CONSTANTS, FEATURES, N_JETS_MAX, PRIMARY)

__all__ = ["features", "scale_objects", "EnergyScale", "FeatureLayer", "control_region"]


# ---------------------------------------------------------------------------- features (torch)
def _safe_sqrt(x: Tensor) -> Tensor:
    return torch.sqrt(torch.clamp(x, min=1e-12))


def _dphi(a: Tensor, b: Tensor) -> Tensor:
    d = a - b
    return torch.atan2(torch.sin(d), torch.cos(d))


def features(primary: Tensor) -> Tensor:
    r"""The derived features :data:`FEATURES` of rows of primary objects.

    Args:
        primary: ``(n, 21)`` tensor, columns :data:`PRIMARY` (a numpy array is converted).

    Returns:
        ``(n, 16)`` tensor of the input's dtype (computed in float64). Differentiable in
        the inputs (reverse and forward mode, vmap-able): an energy scale applied to the
        primary objects propagates to the features exactly.
    """
    if not isinstance(primary, Tensor):
        primary = torch.as_tensor(np.asarray(primary))
    if primary.ndim != 2 or primary.shape[1] != len(PRIMARY):
        raise ValueError(f"primary must have shape (n, {len(PRIMARY)}) (columns PRIMARY), "
                         f"got {tuple(primary.shape)}")
    dtype = primary.dtype if primary.is_floating_point() else torch.float32
    x = primary.to(torch.float64)
    tpt, teta, tphi, tm = x[:, _TAU_PT], x[:, _TAU_ETA], x[:, _TAU_PHI], x[:, _TAU_M]
    lpt, leta, lphi = x[:, _LEP_PT], x[:, _LEP_ETA], x[:, _LEP_PHI]
    met, mphi = x[:, _MET], x[:, _MET_PHI]
    jets = x[:, _JET0:_JET0 + 4 * N_JETS_MAX].reshape(-1, N_JETS_MAX, 4)
    jpt, jeta, jphi, jb = jets[..., 0], jets[..., 1], jets[..., 2], jets[..., 3]
    present = (jpt > 0).to(x.dtype)
    n_jets = present.sum(1)
    has2 = n_jets >= 2

    tpx, tpy = tpt * torch.cos(tphi), tpt * torch.sin(tphi)
    lpx, lpy = lpt * torch.cos(lphi), lpt * torch.sin(lphi)
    mx, my = met * torch.cos(mphi), met * torch.sin(mphi)
    jpx, jpy = (jpt * torch.cos(jphi)).sum(1), (jpt * torch.sin(jphi)).sum(1)

    # visible mass, tau massive, lepton massless; written without cancellations:
    # E1 E2 - p1.p2 = E2 m1^2 / (E1 + |p1|) + pT1 pT2 (cosh deta - cos dphi)
    dphi_tl = _dphi(tphi, lphi)
    deta_tl = teta - leta
    tp = tpt * torch.cosh(teta)
    te = torch.sqrt(tp * tp + tm * tm)
    le = lpt * torch.cosh(leta)
    m_vis = _safe_sqrt(tm * tm + 2.0 * (le * tm * tm / (te + tp)
                                        + tpt * lpt * (torch.cosh(deta_tl) - torch.cos(dphi_tl))))
    # collinear approximation: MET = a pT(tau) + b pT(lep), x_tau = 1 / (1 + a), ...
    det = tpx * lpy - tpy * lpx
    eps = 1e-4 * tpt * lpt
    det = torch.where(det.abs() < eps, torch.where(det >= 0, eps, -eps), det)
    a = torch.clamp((mx * lpy - my * lpx) / det, 0.0, 4.0)
    b = torch.clamp((tpx * my - tpy * mx) / det, 0.0, 4.0)
    m_coll = m_vis * torch.sqrt((1.0 + a) * (1.0 + b))
    mt = _safe_sqrt(2.0 * lpt * met * (1.0 - torch.cos(_dphi(lphi, mphi))))
    hx, hy = tpx + lpx + mx, tpy + lpy + my
    pt_h = _safe_sqrt(hx * hx + hy * hy)
    dr = torch.sqrt(deta_tl * deta_tl + dphi_tl * dphi_tl)
    ratio = lpt / tpt
    # MET phi centrality (HiggsML): sqrt(2) when MET bisects tau and lepton, ~ -sqrt(2) opposite
    s = torch.where(torch.sin(tphi - lphi) >= 0, 1.0, -1.0).to(x.dtype)
    ca = torch.sin(mphi - lphi) * s
    cb = torch.sin(tphi - mphi) * s
    cent = (ca + cb) / _safe_sqrt(ca * ca + cb * cb)
    sum_pt = tpt + lpt + jpt.sum(1)
    ox, oy = hx + jpx, hy + jpy
    pt_tot = _safe_sqrt(ox * ox + oy * oy)
    j1pt = jpt[:, 0]
    deta_jj = torch.where(has2, (jeta[:, 0] - jeta[:, 1]).abs(), torch.zeros_like(j1pt))
    mjj2 = 2.0 * jpt[:, 0] * jpt[:, 1] * (torch.cosh(jeta[:, 0] - jeta[:, 1])
                                          - torch.cos(jphi[:, 0] - jphi[:, 1]))
    m_jj = torch.where(has2, _safe_sqrt(mjj2), torch.zeros_like(j1pt))
    d2 = torch.where(has2, torch.clamp(deta_jj * deta_jj, min=1e-12), torch.ones_like(j1pt))
    lc = torch.exp(-4.0 / d2 * (leta - 0.5 * (jeta[:, 0] + jeta[:, 1])) ** 2)
    lep_c = torch.where(has2, lc, torch.zeros_like(j1pt))
    btag = (jb * present).amax(1)
    out = torch.stack([m_vis, m_coll, mt, pt_h, dr, ratio, met, cent, sum_pt, pt_tot, n_jets, j1pt,
                       deta_jj, m_jj, lep_c, btag], dim=1)
    return out.to(dtype)


# ---------------------------------------------------------------------------- systematics (torch)
def _as_factor(k: Union[Tensor, float, None]) -> Optional[Tensor]:
    if k is None:
        return None
    return k.to(torch.float64) if isinstance(k, Tensor) else torch.tensor(float(k), dtype=torch.float64)


def scale_objects(primary: Tensor, tau_scale: Union[Tensor, float, None] = None,
                  jet_scale: Union[Tensor, float, None] = None) -> Tensor:
    r"""Rows of primary objects with the tau (jet) four-momenta scaled by ``tau_scale``
    (``jet_scale``), and MET moved by minus the change of their transverse momentum.

    The scale factors are floats or 0-dim tensors (differentiable, forward and reverse mode).
    The result has the input's dtype (computed in float64); at factor 1 it *is* the input
    (bit for bit). The MET is rescaled and rotated from its stored value (not recomputed),
    so nothing else moves.
    """
    if primary.ndim != 2 or primary.shape[1] != len(PRIMARY):
        raise ValueError(f"primary must have shape (n, {len(PRIMARY)}) (columns PRIMARY), "
                         f"got {tuple(primary.shape)}")
    dtype = primary.dtype
    x = primary.to(torch.float64)
    cols = list(x.unbind(1))
    met, mphi = cols[_MET], cols[_MET_PHI]
    mx, my = met * torch.cos(mphi), met * torch.sin(mphi)
    dx = torch.zeros_like(met)
    dy = torch.zeros_like(met)
    kt, kj = _as_factor(tau_scale), _as_factor(jet_scale)
    if kt is not None:
        pt, phi = cols[_TAU_PT], cols[_TAU_PHI]
        cols[_TAU_PT] = pt * kt
        cols[_TAU_M] = cols[_TAU_M] * kt
        dx = dx + (kt - 1.0) * pt * torch.cos(phi)
        dy = dy + (kt - 1.0) * pt * torch.sin(phi)
    if kj is not None:
        for j in range(N_JETS_MAX):
            c = _JET0 + 4 * j
            pt, phi = cols[c], cols[c + 2]
            cols[c] = pt * kj  # absent jets have pt 0 and stay absent
            dx = dx + (kj - 1.0) * pt * torch.cos(phi)
            dy = dy + (kj - 1.0) * pt * torch.sin(phi)
    nx, ny = mx - dx, my - dy
    # |new| / |old| and the rotation angle: exactly 1 and 0 when nothing moved
    cols[_MET] = met * (_safe_sqrt(nx * nx + ny * ny) / _safe_sqrt(mx * mx + my * my))
    phi = mphi + torch.atan2(mx * ny - my * nx, mx * nx + my * ny)
    lim = math.pi + 0.01  # wrap back only clearly outside (-pi, pi]: identity stays exact
    phi = torch.where(phi > lim, phi - 2 * math.pi, torch.where(phi < -lim, phi + 2 * math.pi, phi))
    cols[_MET_PHI] = phi
    return torch.stack(cols, dim=1).to(dtype)


class EnergyScale:
    r"""The transform of a tau (``obj='tau'``) or jet (``obj='jet'``) energy scale, for a
    :class:`~inferno.nuisance.ShapeNuisance`: ``transform(x, alpha)`` scales the object's
    four-momentum by :math:`1 + \alpha\sigma` in the rows ``x`` of primary objects, and moves
    MET by minus the change of its transverse momentum (:func:`scale_objects`). ``alpha`` is
    in standard deviations (nominal 0, constraint ``Normal(0, 1)``, variations ``(-1, 1)``).

    Args:
        obj: ``'tau'`` or ``'jet'``.
        sigma: the relative uncertainty (default: 3% for the tau, 4% for jets).

    Picklable; ``is_identity(0)`` is True (the transform at 0 returns ``x`` bit for bit).
    """

    def __init__(self, obj: str = "tau", sigma: Optional[float] = None):
        if obj not in ("tau", "jet"):
            raise ValueError(f"obj must be 'tau' or 'jet', got {obj!r}")
        self.obj = obj
        default = CONSTANTS.tes_sigma if obj == "tau" else CONSTANTS.jes_sigma
        self.sigma = float(default if sigma is None else sigma)
        if not (math.isfinite(self.sigma) and self.sigma > 0):
            raise ValueError(f"sigma must be finite and > 0, got {sigma}")

    def factor(self, alpha: Union[Tensor, float]) -> Union[Tensor, float]:
        """``1 + alpha * sigma``."""
        return 1.0 + alpha * self.sigma

    def __call__(self, x: Tensor, alpha: Union[Tensor, float]) -> Tensor:
        a = alpha.to(torch.float64) if isinstance(alpha, Tensor) else torch.tensor(float(alpha), dtype=torch.float64)
        k = 1.0 + a * self.sigma
        return scale_objects(x, tau_scale=k) if self.obj == "tau" else scale_objects(x, jet_scale=k)

    def is_identity(self, v: float) -> bool:
        return float(v) == 0.0

    def __repr__(self) -> str:
        return f"EnergyScale({self.obj!r}, sigma={self.sigma})"


class FeatureLayer(nn.Module):
    r"""The first layer of a network on primary objects: :func:`features`, then
    :math:`(f - \text{mean}) / \text{std}` with fixed buffers (:meth:`fit` sets them from
    training events).

    Args:
        mean, std: ``(16,)`` standardisation (default 0 and 1: the raw features).
    """

    def __init__(self, mean=None, std=None):
        super().__init__()
        nf = len(FEATURES)
        m = torch.zeros(nf) if mean is None else torch.as_tensor(np.asarray(mean), dtype=torch.float32)
        s = torch.ones(nf) if std is None else torch.as_tensor(np.asarray(std), dtype=torch.float32)
        if m.shape != (nf,) or s.shape != (nf,):
            raise ValueError(f"mean and std must have shape ({nf},)")
        if not bool((s > 0).all()):
            raise ValueError("std must be > 0")
        self.register_buffer("mean", m)
        self.register_buffer("std", s)

    @classmethod
    def fit(cls, primary) -> "FeatureLayer":
        """A layer standardising the features of ``primary`` (rows of primary objects) to
        mean 0 and standard deviation 1 (unweighted)."""
        f = features(torch.as_tensor(np.asarray(primary) if not isinstance(primary, Tensor) else primary))
        f = f.to(torch.float64)
        return cls(f.mean(0).float(), torch.clamp(f.std(0), min=1e-6).float())

    def forward(self, x: Tensor) -> Tensor:
        f = features(x)
        return (f - self.mean.to(f.dtype)) / self.std.to(f.dtype)


def control_region(feats) -> np.ndarray:
    """The events of the ttbar control region: at least one b-tagged jet (b-tag score above
    ``CONSTANTS.btag_wp``), from rows of :data:`FEATURES` (numpy or torch); a bool array."""
    f = feats.detach().cpu().numpy() if isinstance(feats, Tensor) else np.asarray(feats)
    return f[:, FEATURES.index("btag_max")] > CONSTANTS.btag_wp
