r"""The compiled form of a :class:`~inferno.likelihood.Model`: index tensors built once, and
the one implementation of its expected counts, NLL, gradient and Hessian on flat batches
``(B, P)`` of parameters.

With :math:`j` running over the samples of all channels,

.. math::

    \nu_i(\vec\theta) = \sum_j \underbrace{\Big(\nu^0_{ji} + \sum_h \delta_{jhi}(\alpha_h)\Big)}_{A_{ji}}
        \underbrace{\prod_n f_{jn}(\alpha_n)}_{E_j}
        \underbrace{\prod_l \theta_{p(j,l,i)}}_{\Lambda_{ji}}

(histosys shifts, normsys factors, and the *linear* factors: normfactor, lumi, staterror,
shapesys, shapefactor). The compilation stores the histosys terms (sample, parameter,
templates) grouped by code, the normsys terms, and a table ``lin_idx[j, l, i]`` of the
parameter of every linear factor (index ``P`` where there is none: a constant 1), so that one
gather gives all linear factors.

Derivatives are analytic: with :math:`w_i = 1 - n_i/\nu_i`,

.. math::

    \nabla(-\ln L) = J w + \nabla C, \qquad
    \nabla^2(-\ln L) = J\,\mathrm{diag}(n/\nu^2)\,J^\top + \sum_i w_i \nabla^2\nu_i + \nabla^2 C,

with :math:`J_{pi} = \partial\nu_i/\partial\theta_p`. The second-derivative term follows the
structure above: :math:`A` is additive in the :math:`\alpha` (a diagonal block),
:math:`E = \exp\sum\ln f` (products of log-derivatives), and :math:`\Lambda` is multilinear,
so its cross derivatives are products of all factors but two (prefix and suffix cumulative
products, no division: a normfactor at exactly 0 is fine). Every block is added into the
flattened Hessian with precomputed indices. At the Asimov point :math:`w = 0` and the
Hessian is the Fisher information.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor
from torch.distributions import Distribution

from . import interpolation as interp
from .modifiers import HistoSys, NormSys

if TYPE_CHECKING:  # pragma: no cover
    from .model import Model

__all__ = ["CompiledModel"]

DTYPE = torch.float64


class CompiledModel:
    """Index tensors and batched evaluation of a :class:`~inferno.likelihood.Model`."""

    def __init__(self, model: "Model") -> None:
        self.n_bins, self.n_samples = model.n_bins, len(model._samples)
        P, N = model.n_params, model.n_bins
        J = len(model._samples)
        nom = np.zeros((J, N))
        h_rows: Dict[Any, List[Tuple[int, int, np.ndarray, np.ndarray, np.ndarray]]] = {}
        n_rows: Dict[Any, List[Tuple[int, int, float, float]]] = {}
        lin: List[List[np.ndarray]] = []
        for j, (ch, sname, counts, mods) in enumerate(model._samples):
            sl = model.channel_bins[ch]
            nom[j, sl] = counts
            slots = []
            for m in mods:
                if isinstance(m, HistoSys):
                    code = interp.check_code(model.histosys_code if m.code is None else m.code, "histosys")
                    h, lo, n0 = np.zeros(N), np.zeros(N), np.zeros(N)
                    h[sl], lo[sl], n0[sl] = m.hi, m.lo, counts
                    h_rows.setdefault(code, []).append((j, model._index[m.name], n0, h, lo))
                elif isinstance(m, NormSys):
                    code = interp.check_code(model.normsys_code if m.code is None else m.code, "normsys")
                    n_rows.setdefault(code, []).append((j, model._index[m.name], float(m.hi), float(m.lo)))
                else:  # linear factors
                    idx = np.full(N, P, dtype=np.int64)  # P: the constant 1 outside the channel
                    ps = model.param_sets[m.name]
                    idx[sl] = np.arange(ps.start, ps.stop) if m.per_bin else ps.start
                    slots.append(idx)
            lin.append(slots)
        L = max((len(s) for s in lin), default=0)
        lin_idx = np.full((J, max(L, 1), N), P, dtype=np.int64)
        for j, slots in enumerate(lin):
            for l, idx in enumerate(slots):
                lin_idx[j, l] = idx
        t = lambda a, dt=DTYPE: torch.as_tensor(np.asarray(a), dtype=dt)  # noqa: E731
        c: Dict[str, Any] = {"nom": t(nom), "lin_idx": t(lin_idx, torch.long), "L": L}
        # histosys terms (grouped by code, then concatenated in that order)
        h_groups = []
        h_j, h_a = [], []
        for code, rows in h_rows.items():
            h_groups.append((code, len(h_j), len(h_j) + len(rows), t([r[2] for r in rows]), t([r[3] for r in rows]),
                             t([r[4] for r in rows])))
            h_j += [r[0] for r in rows]
            h_a += [r[1] for r in rows]
        c["h_groups"], c["h_j"], c["h_a"] = h_groups, t(h_j, torch.long), t(h_a, torch.long)
        n_groups = []
        n_j, n_a = [], []
        for code, rows in n_rows.items():
            hi, lo = t([r[2] for r in rows]), t([r[3] for r in rows])
            coef = interp.code4_coefficients(hi, lo) if code == 4 else None
            n_groups.append((code, len(n_j), len(n_j) + len(rows), hi, lo, coef))
            n_j += [r[0] for r in rows]
            n_a += [r[1] for r in rows]
        c["n_groups"], c["n_j"], c["n_a"] = n_groups, t(n_j, torch.long), t(n_a, torch.long)
        # pairs of (histosys term, normsys term) and (normsys, normsys) in the same sample
        hn = [(ti, ui) for ti, jt in enumerate(h_j) for ui, ju in enumerate(n_j) if jt == ju]
        nn_ = [(u1, u2) for u1, j1 in enumerate(n_j) for u2, j2 in enumerate(n_j) if j1 == j2]
        c["hn_t"], c["hn_u"] = t([a for a, _ in hn], torch.long), t([b for _, b in hn], torch.long)
        c["nn_1"], c["nn_2"] = t([a for a, _ in nn_], torch.long), t([b for _, b in nn_], torch.long)
        P1 = P + 1
        # flat Hessian indices (rows * (P + 1) + cols) of the linear-factor blocks
        if h_j:
            hl = c["h_a"][:, None, None] * P1 + c["lin_idx"][c["h_j"]]  # (T, L, N)
            c["hl_idx"] = torch.cat([hl.reshape(-1), (c["lin_idx"][c["h_j"]] * P1 + c["h_a"][:, None, None]).reshape(-1)])
        if n_j:
            nl = c["n_a"][:, None, None] * P1 + c["lin_idx"][c["n_j"]]
            c["nl_idx"] = torch.cat([nl.reshape(-1), (c["lin_idx"][c["n_j"]] * P1 + c["n_a"][:, None, None]).reshape(-1)])
        if L >= 2:
            li = c["lin_idx"]
            c["ll_idx"] = (li[:, :, None, :] * P1 + li[:, None, :, :]).reshape(-1)  # (J, L, L, N)
            c["ll_offdiag"] = (~torch.eye(L, dtype=torch.bool))[None, :, :, None]
        # constraints
        aux_params = [k for k, p in enumerate(model.parameters) if p.constrained]
        self.aux_params = aux_params
        normal = [(a, k) for a, k in enumerate(aux_params) if model.parameters[k].constraint == "normal"]
        poisson = [(a, k) for a, k in enumerate(aux_params) if model.parameters[k].constraint == "poisson"]
        other = [(a, k) for a, k in enumerate(aux_params) if isinstance(model.parameters[k].constraint, Distribution)]
        c["norm_a"], c["norm_k"] = t([a for a, _ in normal], torch.long), t([k for _, k in normal], torch.long)
        c["norm_sigma"] = t([model.parameters[k].sigma for _, k in normal])
        c["norm_const"] = float(sum(math.log(model.parameters[k].sigma) + 0.5 * math.log(2 * math.pi) for _, k in normal))
        c["pois_a"], c["pois_k"] = t([a for a, _ in poisson], torch.long), t([k for _, k in poisson], torch.long)
        c["pois_tau"] = t([model.parameters[k].tau for _, k in poisson])
        c["other"] = [(a, k, model.parameters[k].constraint) for a, k in other]
        self.c = c
        kinked = set()
        for code, a, b, *_ in h_groups:
            if code in interp.KINKED_CODES:
                kinked.update(h_a[a:b])
        for code, a, b, *_ in n_groups:
            if code in interp.KINKED_CODES:
                kinked.update(n_a[a:b])
        self.kinked = sorted(kinked)


    def to(self, device: torch.device) -> None:
        """Move every tensor to ``device`` (in place)."""

        def move(v: Any) -> Any:
            if isinstance(v, Tensor):
                return v.to(device)
            if isinstance(v, (list, tuple)):
                return type(v)(move(x) for x in v)
            return v

        self.c = {k: move(v) for k, v in self.c.items()}

    def factors(self, p: Tensor, derivs: bool, right: Optional[Tensor] = None):
        """The pieces of nu for flat parameters ``p`` (B, P)."""
        c = self.c
        B = p.shape[0]
        ext = torch.cat([p, torch.ones(B, 1, dtype=DTYPE, device=p.device)], -1)
        LF = ext[:, c["lin_idx"]]  # (B, J, L, N)
        LIN = LF.prod(2)
        A = c["nom"].expand(B, -1, -1)
        hd1 = hd2 = None
        if c["h_groups"]:
            vals, d1s, d2s = [], [], []
            for code, a, b, n0, hi, lo in c["h_groups"]:
                alpha = p[:, c["h_a"][a:b]].unsqueeze(-1)  # (B, T, 1)
                rgt = None if right is None else right[:, c["h_a"][a:b]].unsqueeze(-1)
                v, d1, d2 = interp.additive(code, alpha, n0, hi, lo, derivs, rgt)
                vals.append(v), d1s.append(d1), d2s.append(d2)
            hv = torch.cat(vals, 1)
            A = A.index_add(1, c["h_j"], hv)
            if derivs:
                hd1, hd2 = torch.cat(d1s, 1), torch.cat(d2s, 1)
        logE = None
        lp = lpp = None
        if c["n_groups"]:
            lvals, l1s, l2s = [], [], []
            for code, a, b, hi, lo, coef in c["n_groups"]:
                alpha = p[:, c["n_a"][a:b]]
                rgt = None if right is None else right[:, c["n_a"][a:b]]
                f, f1, f2 = interp.multiplicative(code, alpha, hi, lo, derivs, rgt, coef)
                lvals.append(torch.log(f))
                if derivs:
                    r1 = f1 / f
                    l1s.append(r1), l2s.append(f2 / f - r1 * r1)
            lv = torch.cat(lvals, 1)
            logE = torch.zeros(B, self.n_samples, dtype=DTYPE, device=p.device).index_add(1, c["n_j"], lv)
            if derivs:
                lp, lpp = torch.cat(l1s, 1), torch.cat(l2s, 1)
        E = None if logE is None else torch.exp(logE)
        return LF, LIN, A, E, hd1, hd2, lp, lpp

    def expected(self, p: Tensor, by_sample: bool = False) -> Tensor:
        """Expected counts ``(B, N)``, or per sample ``(B, n_samples, N)``."""
        _, LIN, A, E, *_ = self.factors(p, derivs=False)
        contrib = A * LIN
        if E is not None:
            contrib = contrib * E.unsqueeze(-1)
        return contrib if by_sample else contrib.sum(1)

    @staticmethod
    def poisson(nu: Tensor, n: Tensor) -> Tensor:
        val = (nu - torch.xlogy(n, nu) + torch.lgamma(n + 1.0)).sum(-1)
        bad = (nu < 0).any(-1) | torch.isnan(val)
        return torch.where(bad, math.inf, val)

    def constraints(self, p: Tensor, aux: Tensor, derivs: bool):
        """Constraint NLL (B,), and if derivs its gradient (B, P) and Hessian diagonal (B, P)."""
        c = self.c
        B = p.shape[0]
        val = torch.zeros(B, dtype=DTYPE, device=p.device)
        g = h = None
        if derivs:
            g = torch.zeros_like(p)
            h = torch.zeros_like(p)
        if c["norm_k"].numel():
            x = p[:, c["norm_k"]]
            z = (x - aux[:, c["norm_a"]]) / c["norm_sigma"]
            val = val + 0.5 * (z * z).sum(-1) + c["norm_const"]
            if derivs:
                g[:, c["norm_k"]] = z / c["norm_sigma"]
                h[:, c["norm_k"]] = (1.0 / c["norm_sigma"] ** 2).expand(B, -1)
        if c["pois_k"].numel():
            gam = p[:, c["pois_k"]]
            a = aux[:, c["pois_a"]]
            lam = gam * c["pois_tau"]
            term = lam - torch.xlogy(a, lam) + torch.lgamma(a + 1.0)
            term = torch.where(gam < 0, math.inf, term)
            val = val + term.sum(-1)
            if derivs:
                safe = torch.where(gam > 0, gam, 1.0)
                g[:, c["pois_k"]] = c["pois_tau"] - a / safe
                h[:, c["pois_k"]] = a / (safe * safe)
        for ai, k, dist in c["other"]:  # any other distribution: derivatives by autograd
            x = p[:, k] - aux[:, ai]
            if not derivs:
                val = val - dist.log_prob(x).to(DTYPE)
                continue
            with torch.enable_grad():
                xr = x.detach().clone().requires_grad_(True)
                nlp = -dist.log_prob(xr).to(DTYPE)
                (d1,) = torch.autograd.grad(nlp.sum(), xr, create_graph=True)
                (d2,) = torch.autograd.grad(d1.sum(), xr, allow_unused=True)
            g[:, k] = d1.detach()
            h[:, k] = 0.0 if d2 is None else d2.detach()
            val = val + nlp.detach()
        return val, g, h

    def nll(self, p: Tensor, n: Tensor, a: Tensor) -> Tensor:
        val = self.poisson(self.expected(p), n)
        if self.aux_params:
            val = val + self.constraints(p, a, derivs=False)[0]
        return val

    def _first_order(self, p: Tensor, right: Optional[Tensor] = None) -> Dict[str, Any]:
        """The pieces of nu, nu itself and its Jacobian ``Jac`` (B, P + 1, N) (the last row
        collects the constant factors and is dropped by the callers)."""
        c = self.c
        B, P = p.shape
        N = self.n_bins
        LF, LIN, A, E, hd1, hd2, lp, lpp = self.factors(p, derivs=True, right=right)
        EL = LIN if E is None else LIN * E.unsqueeze(-1)  # (B, J, N): E * Lambda
        AE = A if E is None else A * E.unsqueeze(-1)  # (B, J, N): A * E
        contrib = A * EL
        Jac = torch.zeros(B, P + 1, N, dtype=DTYPE, device=p.device)
        LOO = None
        if c["L"]:
            # products of all linear factors of a sample but one (prefix x suffix, no division)
            ones = torch.ones_like(LF[:, :, :1])
            pre = torch.cumprod(torch.cat([ones, LF[:, :, :-1]], 2), 2)
            suf = torch.flip(torch.cumprod(torch.flip(torch.cat([LF[:, :, 1:], ones], 2), [2]), 2), [2])
            LOO = pre * suf  # (B, J, L, N)
            vals = AE.unsqueeze(2) * LOO  # d nu_i / d theta_(j, l, i)
            flat = (c["lin_idx"] * N + torch.arange(N, device=p.device)).reshape(-1)
            Jac = Jac.view(B, -1).index_add(1, flat, vals.reshape(B, -1)).view(B, P + 1, N)
        if c["h_j"].numel():
            Jac = Jac.index_add(1, c["h_a"], EL[:, c["h_j"]] * hd1)
        if c["n_j"].numel():
            Jac = Jac.index_add(1, c["n_a"], contrib[:, c["n_j"]] * lp.unsqueeze(-1))
        return dict(LF=LF, A=A, E=E, hd1=hd1, hd2=hd2, lp=lp, lpp=lpp, EL=EL, AE=AE, contrib=contrib,
                    nu=contrib.sum(1), Jac=Jac, LOO=LOO)

    def jacobian(self, p: Tensor, right: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """Expected counts ``(B, N)`` and their Jacobian ``d nu / d theta`` ``(B, P, N)``
        (differentiable with autograd in the parameters and in the model's tensors, see
        :meth:`with_counts`)."""
        f = self._first_order(p, right)
        return f["nu"], f["Jac"][:, :p.shape[1]]

    def with_counts(self, nominal: Tensor, shifts: Optional[Tensor] = None) -> "CompiledModel":
        """A copy evaluated with other nominal counts ``(n_samples, N)`` and, for every
        histosys term ``t`` (the order of ``c['h_j']``), the variations ``nominal[h_j[t]] +-
        shifts[t]`` (``(T, N)``); for the learned channel of INFERNO, whose counts are the
        network's soft histograms (tensors that require grad)."""
        new = CompiledModel.__new__(CompiledModel)
        new.__dict__.update(self.__dict__)
        c = dict(self.c)
        c["nom"] = nominal
        if c["h_groups"]:
            if shifts is None or shifts.shape[0] != c["h_j"].numel():
                raise ValueError(f"with_counts needs shifts for the {c['h_j'].numel()} histosys terms")
            n0 = nominal[c["h_j"]]
            c["h_groups"] = [(code, a, b, n0[a:b], n0[a:b] + shifts[a:b], n0[a:b] - shifts[a:b])
                             for code, a, b, *_ in c["h_groups"]]
        new.c = c
        return new

    def nll_grad_hess(self, p: Tensor, n: Tensor, aux: Tensor, right: Optional[Tensor] = None):
        c = self.c
        B, P = p.shape
        P1 = P + 1
        f = self._first_order(p, right)
        LF, E, hd1, hd2, lp, lpp = f["LF"], f["E"], f["hd1"], f["hd2"], f["lp"], f["lpp"]
        EL, AE, contrib, nu, Jac, LOO, A = f["EL"], f["AE"], f["contrib"], f["nu"], f["Jac"], f["LOO"], f["A"]
        N = self.n_bins
        val = self.poisson(nu, n)
        safe = torch.where(nu > 0, nu, 1.0)
        ratio = n / safe
        w = 1.0 - ratio  # d(-ln L)/d nu
        r2 = ratio / safe  # d2(-ln L)/d nu2
        Hs = torch.zeros(B, P1 * P1, dtype=DTYPE, device=p.device)  # sum_i w_i d2 nu_i, flattened
        L = c["L"]
        T = c["h_j"].numel()
        U = c["n_j"].numel()
        if T:
            ELh = EL[:, c["h_j"]]  # (B, T, N)
            Hs.index_add_(1, c["h_a"] * P1 + c["h_a"], (w.unsqueeze(1) * ELh * hd2).sum(-1))
        if U:
            q = (w.unsqueeze(1) * contrib).sum(-1)  # (B, J)
            qn = q[:, c["n_j"]]
            Hs.index_add_(1, c["n_a"] * P1 + c["n_a"], qn * lpp)
            if c["nn_1"].numel():
                Hs.index_add_(1, c["n_a"][c["nn_1"]] * P1 + c["n_a"][c["nn_2"]],
                              q[:, c["n_j"][c["nn_1"]]] * lp[:, c["nn_1"]] * lp[:, c["nn_2"]])
        if T and U and c["hn_t"].numel():
            z = (w.unsqueeze(1) * ELh * hd1).sum(-1)  # (B, T)
            v = z[:, c["hn_t"]] * lp[:, c["hn_u"]]
            ia, ib = c["h_a"][c["hn_t"]], c["n_a"][c["hn_u"]]
            Hs.index_add_(1, ia * P1 + ib, v)
            Hs.index_add_(1, ib * P1 + ia, v)
        if L:
            wE = w.unsqueeze(1).expand(-1, A.shape[1], -1) if E is None else w.unsqueeze(1) * E.unsqueeze(-1)  # (B, J, N)
            if T:  # histosys x linear: w E LOO d1
                v = wE[:, c["h_j"]].unsqueeze(2) * LOO[:, c["h_j"]] * hd1.unsqueeze(2)  # (B, T, L, N)
                v = v.reshape(B, -1)
                Hs.index_add_(1, c["hl_idx"], torch.cat([v, v], 1))
            if U:  # normsys x linear: w A E LOO l'
                v = (w.unsqueeze(1) * AE)[:, c["n_j"]].unsqueeze(2) * LOO[:, c["n_j"]] * lp[:, :, None, None]
                v = v.reshape(B, -1)
                Hs.index_add_(1, c["nl_idx"], torch.cat([v, v], 1))
            if L >= 2:  # linear x linear: w A E prod(all but two)
                G = LF.unsqueeze(2).expand(B, LF.shape[1], L, L, N).clone()  # G[:, j, l, m] = F_m, F_l -> 1
                ar = torch.arange(L, device=p.device)
                G[:, :, ar, ar] = 1.0
                ones2 = torch.ones_like(G[:, :, :, :1])
                pre2 = torch.cumprod(torch.cat([ones2, G[:, :, :, :-1]], 3), 3)
                suf2 = torch.flip(torch.cumprod(torch.flip(torch.cat([G[:, :, :, 1:], ones2], 3), [3]), 3), [3])
                LOO2 = pre2 * suf2 * c["ll_offdiag"]
                v = (w.unsqueeze(1) * AE)[:, :, None, None, :] * LOO2
                Hs.index_add_(1, c["ll_idx"], v.reshape(B, -1))
        Jac = Jac[:, :P]
        grad = (Jac @ w.unsqueeze(-1)).squeeze(-1)
        H = (Jac * r2.unsqueeze(1)) @ Jac.transpose(1, 2) + Hs.view(B, P1, P1)[:, :P, :P]
        if self.aux_params:
            cv, cg, ch = self.constraints(p, aux, derivs=True)
            val = val + cv
            grad = grad + cg
            H = H + torch.diag_embed(ch)
        return val, grad, H
