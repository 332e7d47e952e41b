r"""Vectorised relativistic kinematics in numpy, for the event generators of
:mod:`inferno.htautau`.

A four-momentum is a :class:`P4`: four float64 arrays of shape ``(n,)``,
:math:`(E, p_x, p_y, p_z)` in GeV (one contiguous array per component, which keeps every
operation a fast elementwise one); every function acts on all the events at once.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Tuple

import numpy as np

__all__ = ["P4", "from_pt_eta_phi_m", "from_pt_y_phi_m", "boost", "two_body_decay",
           "collinear_split", "truncated_breit_wigner", "inverse_cdf_sampler", "M_TAU"]

#: the tau mass (GeV)
M_TAU: float = 1.77686


class P4(NamedTuple):
    """Four-momenta of ``n`` particles, one array per component."""

    e: np.ndarray
    px: np.ndarray
    py: np.ndarray
    pz: np.ndarray

    @property
    def pt(self) -> np.ndarray:
        return np.hypot(self.px, self.py)

    @property
    def eta(self) -> np.ndarray:
        """Pseudorapidity."""
        return np.arcsinh(self.pz / np.maximum(self.pt, 1e-12))

    @property
    def phi(self) -> np.ndarray:
        return np.arctan2(self.py, self.px)

    @property
    def m(self) -> np.ndarray:
        """Mass (a negative square from rounding reads as 0)."""
        return np.sqrt(np.maximum(self.e ** 2 - self.px ** 2 - self.py ** 2 - self.pz ** 2, 0.0))

    def __sub__(self, o: "P4") -> "P4":  # type: ignore[override]
        return P4(self.e - o.e, self.px - o.px, self.py - o.py, self.pz - o.pz)

    def select(self, mask: np.ndarray) -> "P4":
        return P4(self.e[mask], self.px[mask], self.py[mask], self.pz[mask])


def from_pt_eta_phi_m(pt, eta, phi, m) -> P4:
    r"""Four-momenta from :math:`(p_T, \eta, \phi, m)` (pseudorapidity)."""
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    return P4(np.sqrt(px * px + py * py + pz * pz + m * m), px, py, pz)


def from_pt_y_phi_m(pt, y, phi, m) -> P4:
    r"""Four-momenta from :math:`(p_T, y, \phi, m)` (rapidity): :math:`E = m_T\cosh y`,
    :math:`p_z = m_T \sinh y`."""
    mt = np.sqrt(pt * pt + m * m)
    return P4(mt * np.cosh(y), pt * np.cos(phi), pt * np.sin(phi), mt * np.sinh(y))


def boost(p: P4, bx: np.ndarray, by: np.ndarray, bz: np.ndarray) -> P4:
    r"""Boost the four-momenta ``p`` by the velocities :math:`\vec\beta` (from a parent's
    rest frame to the lab when :math:`\vec\beta = \vec p_\text{parent}/E_\text{parent}`)."""
    b2 = bx * bx + by * by + bz * bz
    gamma = 1.0 / np.sqrt(1.0 - b2)
    bp = bx * p.px + by * p.py + bz * p.pz
    c = gamma * gamma / (gamma + 1.0) * bp + gamma * p.e  # (gamma-1)/beta^2 bp + gamma E, stable
    return P4(gamma * (p.e + bp), p.px + c * bx, p.py + c * by, p.pz + c * bz)


def two_body_decay(parent: P4, m1, m2, rng: np.random.Generator) -> Tuple[P4, P4]:
    r"""Isotropic two-body decays (in the parent's rest frame) of ``parent`` into daughters of
    masses ``m1``, ``m2`` (scalars or arrays); both daughters in the lab frame. Spin
    correlations are ignored."""
    n = len(parent.e)
    mp2 = np.maximum(parent.e ** 2 - parent.px ** 2 - parent.py ** 2 - parent.pz ** 2, 0.0)
    lam = np.maximum((mp2 - (m1 + m2) ** 2) * (mp2 - (m1 - m2) ** 2), 0.0)
    pstar = np.sqrt(lam) / (2.0 * np.sqrt(mp2))
    cos_t = rng.uniform(-1.0, 1.0, n)
    sin_t = np.sqrt(1.0 - cos_t ** 2)
    phi = rng.uniform(-np.pi, np.pi, n)
    ux, uy, uz = pstar * sin_t * np.cos(phi), pstar * sin_t * np.sin(phi), pstar * cos_t
    p2 = pstar * pstar
    inv_e = 1.0 / parent.e
    bx, by, bz = parent.px * inv_e, parent.py * inv_e, parent.pz * inv_e
    d1 = boost(P4(np.sqrt(p2 + m1 * m1), ux, uy, uz), bx, by, bz)
    d2 = boost(P4(np.sqrt(p2 + m2 * m2), -ux, -uy, -uz), bx, by, bz)
    return d1, d2


def collinear_split(p: P4, x: np.ndarray, m_vis) -> Tuple[P4, P4]:
    r"""Split ``p`` (a boosted tau) into a visible part carrying the momentum fraction ``x``
    along the same direction, with mass ``m_vis``, and the invisible rest
    :math:`p - p_\text{vis}` (the neutrinos): the collinear approximation of a tau decay."""
    px, py, pz = x * p.px, x * p.py, x * p.pz
    vis = P4(np.sqrt(px * px + py * py + pz * pz + m_vis * m_vis), px, py, pz)
    return vis, p - vis


def truncated_breit_wigner(m0: float, gamma: float, lo: float, hi: float, n: int,
                           rng: np.random.Generator) -> np.ndarray:
    """``n`` masses from a (non-relativistic) Breit-Wigner of mass ``m0`` and width ``gamma``,
    truncated to ``[lo, hi]`` (inverse-CDF sampling: one uniform per mass)."""
    a, b = (np.arctan(2.0 * (v - m0) / gamma) for v in (lo, hi))
    return m0 + 0.5 * gamma * np.tan(rng.uniform(a, b, n))


def inverse_cdf_sampler(cdf: Callable[[np.ndarray], np.ndarray], lo: float, hi: float,
                        n_grid: int = 4001) -> Callable[[np.ndarray], np.ndarray]:
    """A sampler ``f(u) -> x`` for a monotone ``cdf`` on ``[lo, hi]`` (tabulated, linear
    interpolation): ``x = f(rng.random(n))``."""
    grid = np.linspace(lo, hi, n_grid)
    c = cdf(grid)
    c = (c - c[0]) / (c[-1] - c[0])

    def sample(u: np.ndarray) -> np.ndarray:
        return np.interp(u, c, grid)

    return sample
