r"""A batched, damped Newton minimiser of a :class:`~inferno.likelihood.Model`'s NLL, with
box bounds, kinks and multistart.

The protocol, per batch element (a data set and a starting point):

1. **set-up** (:meth:`Newton.minimize`): starts clamped into the bounds, NLL, gradient
   and Hessian over the free parameters evaluated once;
2. **active set** (:meth:`Newton._active_set`): a free parameter is *pinned* (held, its
   gradient ignored) when it sits on a bound with the gradient pushing outwards, or on the
   kink at 0 of a code-0 / code-1 parameter with 0 inside its subdifferential (left
   derivative :math:`\le 0 \le` right derivative); a parameter leaving a kink uses that
   side's derivatives;
3. **direction** (:meth:`Newton._direction`): :math:`d = -(H + \lambda I)^{-1} g` over the
   unpinned parameters by Cholesky, with Levenberg damping :math:`\lambda` raised until
   :math:`H + \lambda I` is positive definite;
4. **convergence**: the element stops when its Newton decrement
   :math:`\tfrac12 g^\top H^{-1} g` (an estimate of its distance to the minimum, in NLL units)
   is :math:`\le` ``tol`` with :math:`\lambda = 0`; elements that converge or fail leave the
   batch (the working tensors are compacted);
5. **line search** (:meth:`Newton._line_search`): the step is cut at the first bound or
   kink it would cross (landing exactly on it), then backtracked (Armijo) by halving, all
   trial lengths evaluated in one batch; a step that cannot decrease the NLL raises the
   damping, and an element whose damping dwarfs its curvature has failed.

With large counts the NLL is a sum of large terms, known only to about
:math:`\epsilon \sum_i n_i (1 + |\ln n_i|)`; once the predicted decrease is below that
rounding level the Armijo test is noise, and the undamped step is taken as it is.

**Multistart** (:func:`minimize`): the NLL need not be convex in the shape parameters
(code 0 is linear on each side of its kink, so each orthant can hold a minimum; free or
weak constraints make the smooth codes multimodal too). Each problem is then also started
at the corners of :math:`\{-1, +1\}^K` of its shape parameters (or :math:`\pm1` on each
axis for :math:`K > 4`), in the same batch, and the lowest converged minimum is kept (the
first start's unless another is lower by more than ``tol``). Starts that cannot change
that choice are dropped early (:func:`_prune_starts`).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import Tensor

from .model import DTYPE, Model

__all__ = ["Newton", "NewtonResult", "minimize"]

#: a start counts as being in Newton's quadratic regime when its Hessian is positive definite
#: without damping and its decrement 0.5 g^T H^-1 g is at most this
_PRUNE_REGIME = 0.1
#: two starts in the quadratic regime head for the same minimum when their Newton-predicted
#: minima m_i, m_j agree to 0.5 (m_j - m_i)^T H_j (m_j - m_i) <= min(this, (h_i + h_j)^2), with
#: h the half decrements (bounded from above by 0.5 (sum_f sqrt(H_ff) |m_j - m_i|_f)^2)
_PRUNE_SAME = 1e-3
#: False: no pruning (every start runs to convergence; for tests and comparisons)
_PRUNE_STARTS = True
#: at most this many shape parameters get a start in every corner of {-1, +1}^K
_MAX_CORNER_K = 4


@dataclass
class NewtonResult:
    """Per batch element: parameters, NLL, gradient, Hessian (all parameters), whether it
    converged, and the Newton iterations used."""

    p: Tensor
    nll: Tensor
    grad: Tensor
    hess: Tensor
    converged: Tensor
    n_iter: Tensor


class Newton:
    """Damped Newton with an active set and a backtracking line search (see the module
    docstring), over the parameters ``free`` (indices) of ``model``; the others stay at
    their starting values."""

    def __init__(self, model: Model, free: Sequence[int], tol: float = 1e-9, max_iter: int = 100,
                 c_armijo: float = 1e-4, n_halvings: int = 30):
        self.model = model
        self.free = torch.as_tensor(list(free), dtype=torch.long, device=model.device)
        self.tol, self.max_iter, self.c_armijo, self.n_halvings = float(tol), int(max_iter), c_armijo, n_halvings
        F = self.free.numel()
        bounds = model.bounds[self.free]
        self.lo, self.hi = bounds[:, 0], bounds[:, 1]
        free_list = self.free.tolist()
        # positions (inside the free vector) of free parameters with a kink at 0
        self.kinks = torch.as_tensor([free_list.index(k) for k in model.kinked if k in free_list],
                                     dtype=torch.long, device=model.device)
        self.eye = torch.eye(F, dtype=DTYPE, device=model.device)

    # ------------------------------------------------------------------ pieces
    def _evaluate(self, p: Tensor, n: Tensor, a: Tensor, right: Optional[Tensor] = None):
        full_right = None
        if right is not None:
            full_right = torch.zeros(p.shape, dtype=torch.bool, device=p.device)
            full_right[:, self.free[self.kinks]] = right
        val, g, H = self.model._nll_grad_hess_flat(p, n, a, full_right)
        return val, g, H

    def _active_set(self, p: Tensor, n: Tensor, a: Tensor, nll: Tensor, g: Tensor, H: Tensor):
        """Pinned mask over the free parameters, the kink side, and the (possibly
        re-evaluated) nll, g, H."""
        pf, gf = p[:, self.free], g[:, self.free]
        pinned = ((pf <= self.lo) & (gf > 0)) | ((pf >= self.hi) & (gf < 0))
        go_right = None
        if self.kinks.numel():
            alpha = pf[:, self.kinks]
            at0 = alpha == 0
            go_right = torch.zeros_like(at0)
            if bool(at0.any()):
                g_left = gf[:, self.kinks]  # g was evaluated with left derivatives on the kink
                g_right = self._evaluate(p, n, a, torch.ones_like(at0))[1][:, self.free[self.kinks]]
                pin = at0 & (g_left <= 0) & (g_right >= 0)
                go_right = at0 & ~pin & (g_right < 0)
                if bool(go_right.any()):
                    nll, g, H = self._evaluate(p, n, a, go_right)
                pinned[:, self.kinks] |= pin
        return pinned, go_right, nll, g, H

    def _direction(self, gf: Tensor, Hf: Tensor, pinned: Tensor, lam: Tensor):
        """Damped Newton direction over the unpinned parameters; returns d, the decrement
        g^T (H + lam)^-1 g, the damping used, a failure mask and the curvature scale."""
        keep = ~pinned
        gm = torch.where(pinned, 0.0, gf)
        Hm = torch.where(keep[:, :, None] & keep[:, None, :], Hf, 0.0) + torch.diag_embed(pinned.to(DTYPE))
        scale = Hm.diagonal(dim1=-2, dim2=-1).abs().amax(-1).clamp_min(1e-12)
        L, info = torch.linalg.cholesky_ex(Hm + lam[:, None, None] * self.eye)
        bad = info > 0
        tries = 0
        while bool(bad.any()) and tries < 40:
            lam = torch.where(bad, torch.maximum(10.0 * lam, 1e-8 * scale), lam)
            L, info = torch.linalg.cholesky_ex(Hm + lam[:, None, None] * self.eye)
            bad = info > 0
            tries += 1
        d = -torch.cholesky_solve(gm.unsqueeze(-1), L).squeeze(-1)
        return d, -(gm * d).sum(-1), lam, bad, scale

    def _wrong_way(self, pf: Tensor, d: Tensor, pinned: Tensor, go_right: Optional[Tensor]) -> Tensor:
        """Unpinned parameters whose direction leaves the box or a kink on the wrong side."""
        wrong = ((pf <= self.lo) & (d < 0)) | ((pf >= self.hi) & (d > 0))
        if go_right is not None:
            alpha, da = pf[:, self.kinks], d[:, self.kinks]
            wrong[:, self.kinks] |= (alpha == 0) & (((da < 0) & go_right) | ((da > 0) & ~go_right))
        return wrong & ~pinned

    def _step_limit(self, pf: Tensor, d: Tensor):
        """Largest step length <= 1 before the first bound or kink, the parameter reaching it
        first and the value it lands on."""
        inf = torch.full_like(d, math.inf)
        t_hi = torch.where(d > 0, (self.hi - pf) / torch.where(d > 0, d, 1.0), inf)
        t_lo = torch.where(d < 0, (self.lo - pf) / torch.where(d < 0, d, 1.0), inf)
        t = torch.minimum(t_hi, t_lo)
        target = torch.where(t_hi <= t_lo, self.hi.expand_as(d), self.lo.expand_as(d))
        if self.kinks.numel():
            alpha, da = pf[:, self.kinks], d[:, self.kinks]
            cross = (alpha != 0) & (alpha * (alpha + da) < 0)
            t_k = torch.where(cross, alpha / torch.where(cross, -da, 1.0), inf[:, self.kinks])
            closer = t_k < t[:, self.kinks]
            t[:, self.kinks] = torch.where(closer, t_k, t[:, self.kinks])
            target[:, self.kinks] = torch.where(closer, 0.0, target[:, self.kinks])
        t_first, which = t.min(-1)
        return t_first.clamp(max=1.0), t_first < 1.0, which, target.gather(1, which[:, None]).squeeze(1)

    def _line_search(self, p: Tensor, n: Tensor, a: Tensor, nll: Tensor, step: Tensor, dec: Tensor,
                     t_max: Tensor, fp_floor: Tensor) -> Tensor:
        """Step length per element: the largest of t_max, t_max/2, ... meeting Armijo (all in
        one batch); else the best one that decreases the NLL; else 0."""
        model = self.model
        nll_1 = model._nll_flat(p + t_max[:, None] * step, n, a)
        ok_1 = (nll_1 <= nll - self.c_armijo * t_max * dec) | ((0.5 * dec <= fp_floor) & torch.isfinite(nll_1))
        t = torch.where(ok_1, t_max, torch.zeros_like(nll))
        need = ~ok_1
        if bool(need.any()):
            sel = need.nonzero().squeeze(-1)
            ts = 0.5 ** torch.arange(1, self.n_halvings + 1, dtype=DTYPE, device=p.device)
            ci = t_max[sel, None] * ts[None, :]  # (n_need, n_halvings), largest first
            S = ci.shape[1]
            p_l = (p[sel, None, :] + ci[:, :, None] * step[sel, None, :]).reshape(-1, p.shape[1])
            nll_l = model._nll_flat(p_l, n[sel].repeat_interleave(S, 0), a[sel].repeat_interleave(S, 0)).reshape(-1, S)
            ok = nll_l <= nll[sel, None] - self.c_armijo * ci * dec[sel, None]
            any_ok = ok.any(-1)
            first = torch.argmax(ok.to(torch.int8), dim=-1)
            best = torch.argmin(torch.nan_to_num(nll_l, nan=math.inf), dim=-1)
            improves = nll_l.gather(-1, best[:, None]).squeeze(-1) < nll[sel]
            t_sel = ci.gather(-1, torch.where(any_ok, first, best)[:, None]).squeeze(-1)
            t = t.index_put((sel,), torch.where(any_ok | improves, t_sel, torch.zeros_like(t_sel)))
        return t

    # ------------------------------------------------------------------ the loop
    def minimize(self, p0: Tensor, n: Tensor, a: Tensor, n_starts: int = 1) -> NewtonResult:
        """Minimise from ``p0`` (B, P) for data ``n`` (B, N), ``a`` (B, A).

        ``n_starts`` > 1: the batch is ``n_starts`` starts of the same ``B // n_starts``
        problems (element ``e`` is start ``e // (B // n_starts)`` of problem
        ``e % (B // n_starts)``), and starts that cannot change the lowest minimum of their
        problem are dropped (returned not converged), see :func:`_prune_starts`.
        """
        B, P = p0.shape
        dev = p0.device
        free = self.free
        p = p0.clone()
        p[:, free] = torch.maximum(torch.minimum(p[:, free], self.hi), self.lo)
        fp_floor = 8.0 * torch.finfo(DTYPE).eps * (n * (1.0 + torch.log(n.clamp_min(1.0)))).sum(-1)
        prune = n_starts > 1 and _PRUNE_STARTS
        if prune:
            n_pb = B // n_starts
            rec = torch.zeros(B, free.numel() + 2, dtype=DTYPE, device=dev)
            best_conv = torch.full((n_pb,), math.inf, dtype=DTYPE, device=dev)
        out = NewtonResult(torch.empty_like(p), torch.empty(B, dtype=DTYPE, device=dev), torch.empty_like(p),
                           torch.empty(B, P, P, dtype=DTYPE, device=dev), torch.zeros(B, dtype=torch.bool, device=dev),
                           torch.zeros(B, dtype=torch.long, device=dev))
        idx = torch.arange(B, device=dev)
        nll, g, H = self._evaluate(p, n, a)
        lam = torch.zeros(B, dtype=DTYPE, device=dev)
        failed = ~torch.isfinite(nll)
        n_iter = torch.zeros(B, dtype=torch.long, device=dev)
        for it in range(self.max_iter + 1):
            pinned, go_right, nll, g, H = self._active_set(p, n, a, nll, g, H)
            pf, gf, Hf = p[:, free], g[:, free], H[:, free][:, :, free]
            d, dec, lam, bad, scale = self._direction(gf, Hf, pinned, lam)
            wrong = self._wrong_way(pf, d, pinned, go_right)
            if bool(wrong.any()):
                pinned = pinned | wrong
                d, dec, lam, bad, scale = self._direction(gf, Hf, pinned, lam)
            failed = failed | bad
            converged = (0.5 * dec <= self.tol) & (lam == 0) & ~failed
            done = converged | failed
            if prune and it > 0:
                done = done | _prune_starts(p[:, free], nll, Hf, d, dec, lam, pinned, failed, converged, idx, n_pb,
                                            rec, best_conv, self.kinks)
            if it == self.max_iter:
                done = torch.ones_like(done)
            if bool(done.any()):
                rows = idx[done]
                out.p[rows], out.nll[rows], out.grad[rows], out.hess[rows] = p[done], nll[done], g[done], H[done]
                out.converged[rows], out.n_iter[rows] = converged[done], n_iter[done]
                keep = (~done).nonzero().squeeze(-1)
                if keep.numel() == 0:
                    break
                idx, p, n, a, fp_floor = idx[keep], p[keep], n[keep], a[keep], fp_floor[keep]
                nll, lam, n_iter, d, dec, scale, pf = nll[keep], lam[keep], n_iter[keep], d[keep], dec[keep], scale[keep], pf[keep]
            step = torch.zeros_like(p)
            step[:, free] = d
            t_max, snap, which, target = self._step_limit(pf, d)
            t = self._line_search(p, n, a, nll, step, dec, t_max, fp_floor)
            moved = t > 0
            p = p + t[:, None] * step
            hit = moved & snap & (t == t_max)
            if bool(hit.any()):  # land exactly on the bound or kink
                rows = hit.nonzero().squeeze(-1)
                p[rows, free[which[rows]]] = target[rows]
            lam = torch.where(moved, torch.where(lam / 10.0 < 1e-8 * scale, torch.zeros_like(lam), lam / 10.0), lam)
            lam = torch.where(~moved, torch.maximum(10.0 * lam, 1e-4 * scale), lam)
            n_iter = n_iter + 1
            failed = ~moved & (lam > 1e12 * scale)
            nll, g, H = self._evaluate(p, n, a)
        return out


def _prune_starts(pf: Tensor, nll: Tensor, Hf: Tensor, d: Tensor, dec: Tensor, lam: Tensor, pinned: Tensor,
                  failed: Tensor, converged: Tensor, idx: Tensor, n_pb: int, rec: Tensor, best_conv: Tensor,
                  kinks: Tensor) -> Tensor:
    """The starts of :meth:`Newton.minimize`'s batch that can be dropped, as a bool mask
    over the working elements: a start other than 0, in Newton's quadratic regime
    (undamped, decrement <= ``_PRUNE_REGIME``, nothing pinned, no kink crossed by the
    step), whose predicted minimum coincides with that of a lower-numbered start in the
    regime or converged; or whose NLL cannot get below a minimum its problem already
    converged to (nll - g^T H^-1 g, twice the quadratic model's decrease).  ``rec`` holds
    per start its predicted minimum, half decrement and validity; ``best_conv`` the lowest
    converged NLL per problem; both are updated in place."""
    F = d.shape[-1]
    h = 0.5 * dec
    regime = (lam == 0) & ~failed & (h <= _PRUNE_REGIME) & ~pinned.any(-1)
    if kinks.numel():
        alpha = pf[:, kinks]
        regime = regime & ((alpha * (alpha + d[:, kinks])) > 0).all(-1)
    regime = regime | converged
    m = pf + d
    rec[idx] = torch.cat([m, h[:, None], regime[:, None].to(DTYPE)], dim=-1)
    prob, start = idx % n_pb, idx // n_pb
    best_conv.scatter_reduce_(0, prob, torch.where(converged, nll, math.inf), "amin")
    cand = regime & ~converged & (start > 0)
    if not bool(cand.any()):
        return cand
    S = rec.shape[0] // n_pb
    r = rec.view(S, n_pb, F + 2)[:, prob]
    q = 0.5 * ((r[..., :F] - m).abs() * Hf.diagonal(dim1=-2, dim2=-1).sqrt()).sum(-1) ** 2
    lim = ((r[..., F] + h) ** 2).clamp(max=_PRUNE_SAME)
    lower = torch.arange(S, device=pf.device)[:, None] < start
    same = ((r[..., F + 1] > 0) & lower & (q <= lim)).any(0)
    above = nll - dec > best_conv[prob]
    return cand & (same | above)


def _starts(model: Model, free: Sequence[int], which: str) -> Optional[Tensor]:
    """Extra starting values (S, K) of the free shape parameters (indices returned too)."""
    free_set = set(free)
    if which == "all":
        ks = [k for k in model.shape_params if k in free_set]
    else:  # "kinked": only the parameters with a kink
        ks = [k for k in model.kinked if k in free_set]
    if not ks:
        return None
    K = len(ks)
    if K <= _MAX_CORNER_K:
        alts = torch.tensor(list(itertools.product((-1.0, 1.0), repeat=K)), dtype=DTYPE)
    else:
        eye = torch.eye(K, dtype=DTYPE)
        alts = torch.cat([eye, -eye])
    return ks, alts.to(model.device)


#: problems minimised together at most (larger batches are split): bounds the memory of the
#: per-problem Hessians and Jacobians, and keeps the working set in cache (measured: 1000 toys x
#: 31 scan points, 3.5 s in chunks of ~3000 problems vs 15.9 s and ~2 GB in one batch)
CHUNK = 4096


def minimize(model: Model, p0: Tensor, n: Tensor, a: Tensor, free: Sequence[int], tol: float = 1e-9,
             max_iter: int = 100, multistart: str = "kinked", chunk: int = CHUNK) -> NewtonResult:
    """:class:`Newton` from ``p0`` (B, P) and, with ``multistart`` ``'all'`` (every shape
    parameter) or ``'kinked'`` (code 0 / 1 parameters only), also from the corners of the
    shape parameters (see the module docstring), all in one batch; ``'none'``: one start.
    Per problem the lowest converged minimum is kept; ``n_iter`` sums over the starts.
    Batches of more than ``chunk`` problems are minimised ``chunk`` at a time (the problems
    are independent: the result is the same)."""
    B = p0.shape[0]
    if B > chunk:
        parts = [minimize(model, p0[i:i + chunk], n[i:i + chunk], a[i:i + chunk], free, tol, max_iter, multistart,
                          chunk) for i in range(0, B, chunk)]
        return NewtonResult(*(torch.cat([getattr(r, f) for r in parts]) for f in
                              ("p", "nll", "grad", "hess", "converged", "n_iter")))
    solver = Newton(model, free, tol, max_iter)
    st = None if multistart == "none" else _starts(model, free, multistart)
    if st is None:
        return solver.minimize(p0, n, a)
    ks, alts = st
    S, B = 1 + alts.shape[0], p0.shape[0]
    starts = p0.unsqueeze(0).repeat(S, 1, 1)
    starts[1:, :, ks] = alts[:, None, :]
    r = solver.minimize(starts.reshape(S * B, -1), n.repeat(S, 1), a.repeat(S, 1), n_starts=S)
    P = p0.shape[-1]
    p, nll, g, H = r.p.reshape(S, B, P), r.nll.reshape(S, B), r.grad.reshape(S, B, P), r.hess.reshape(S, B, P, P)
    conv, n_iter = r.converged.reshape(S, B), r.n_iter.reshape(S, B)
    val = torch.where(conv, nll, torch.full_like(nll, math.inf))
    best = val.argmin(0)
    best = torch.where(val[0] - val.gather(0, best[None])[0] > tol, best, torch.zeros_like(best))
    best = torch.where(conv.any(0), best, torch.zeros_like(best))
    ar = torch.arange(B, device=p.device)
    return NewtonResult(p[best, ar], nll[best, ar], g[best, ar], H[best, ar], conv[best, ar], n_iter.sum(0))
