r"""The INFERNO callbacks set up for the paper's toy problem (:mod:`inferno.paper`), in its
physical units: :class:`PaperInferno` (exact), :class:`ApproxPaperInferno` (interpolated) and
:func:`paper_inferno` for benchmark ``k``.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from torch import Tensor
from torch.distributions import Distribution

from ..compat.two_process import ApproxInferno, Inferno
from ..nuisance import ColumnTransform, Constraint, Nuisance, RateNuisance, ShapeNuisance, shift_feature
from .limits import BENCHMARKS
from .problem import PAPER_B, PAPER_L, PAPER_R, PAPER_S
from .systematics import paper_syst_transform

__all__ = ["PaperInferno", "ApproxPaperInferno", "paper_inferno"]


# ------------------------------------------------------------------------ the paper's toy problem
class _PaperL(ColumnTransform):
    """Transform ``(x, l)``: background x2 -> x2 * l0 / l (picklable)."""

    col = 2

    def __init__(self, l0: float):
        self.l0 = float(l0)

    def __call__(self, x: Tensor, l: Tensor) -> Tensor:  # noqa: E741
        return paper_syst_transform(x, 0.0, l, l0=self.l0)

    def column_tangent(self, x: Tensor, v: float) -> Tensor:
        return x[:, 2] * (-self.l0 / float(v) ** 2)

    def is_identity(self, v: float) -> bool:
        return float(v) == self.l0

    def __repr__(self) -> str:
        return f"_PaperL(l0={self.l0})"


def _as_list(a: Any) -> List[Any]:
    if a is None:
        return []
    if isinstance(a, (Distribution, float, int)):
        return [a]
    return list(a)


def _paper_nuisances(float_r: bool, float_l: bool, float_b: bool, nonaux_b_norm: bool,
                     shape_aux: Optional[Sequence[Constraint]], b_norm_aux: Constraint,
                     s_norm_aux: Any, l_init: float,
                     r_mods: Optional[Tuple[float, float]] = None,
                     l_mods: Optional[Tuple[float, float]] = None) -> List[Nuisance]:
    n_shape = int(float_r) + int(float_l)
    aux = list(shape_aux) if shape_aux is not None else [None] * n_shape
    if len(aux) != n_shape:
        raise ValueError(f"shape_aux must have one constraint (or None) per floating shape nuisance "
                         f"(r: {float_r}, l: {float_l}), got {len(aux)}")
    nuis: List[Nuisance] = []
    if float_r:
        nuis.append(ShapeNuisance("r", shift_feature(0), on="b", nominal=PAPER_R,
                                  constraint=aux.pop(0), variations=r_mods))
    if float_l:
        nuis.append(ShapeNuisance("l", _PaperL(l_init), on="b", nominal=l_init,
                                  constraint=aux.pop(0), variations=l_mods))
    # b_norm_aux: one constraint or a list of them (one additive background-rate nuisance
    # each, as calc_profile takes it); nonaux_b_norm adds a free one
    b_aux = _as_list(b_norm_aux)
    if float_b and not b_aux and not nonaux_b_norm:
        b_aux = [None]
    for i, c in enumerate(b_aux):
        nuis.append(RateNuisance("b" if i == 0 else f"b_norm{i}", on="b", mode="add", constraint=c))
    if nonaux_b_norm:
        nuis.append(RateNuisance("b" if not b_aux else "b_free", on="b", mode="add", constraint=None))
    for i, c in enumerate(_as_list(s_norm_aux)):
        nuis.append(RateNuisance(f"s_norm{i}", on="s", mode="add", constraint=c))
    return nuis


class PaperInferno(Inferno):
    r"""Exact INFERNO for the paper's toy problem, in its physical units.

    Background events (generated at :math:`r = 0`, :math:`\lambda = l_\text{init} = 3`)
    are moved by :func:`inferno.paper.paper_syst_transform`: :math:`x_0 \to x_0 + r`,
    :math:`x_2 \to x_2\, l_\text{init}/\lambda`. Parameters: ``(mu, [r], [l], [b], [s_norm...])``.

    Args:
        float_r, float_l: the shape nuisances :math:`r` (nominal 0) and :math:`\lambda`
            (nominal ``l_init``) float.
        float_b: the background yield floats: :math:`B = b_\text{true} + \theta_b`,
            constrained by ``b_norm_aux`` if given, else free.
        mu_true, b_true: nominal yields (50 and 1000 in the paper).
        l_init: :math:`\lambda` at which the background was generated.
        shape_aux: constraints of the floating shape nuisances, in the order (r, l), in
            physical units: distributions of :math:`r` and :math:`\lambda`, float widths, or
            None (free). The paper's benchmarks 3-4: ``[0.4, 1.0]``, i.e.
            :math:`\mathcal{N}(r|0, 0.4)`, :math:`\mathcal{N}(\lambda|3, 1)`.
        b_norm_aux: constraint on the shift :math:`\theta_b` of the background yield, in
            events (``100.`` or ``Normal(0, 100)`` for benchmark 4), or a list of them (one
            additive nuisance each, as :func:`~inferno.calc_profile` takes them); implies
            ``float_b``.
        nonaux_b_norm: a free background-yield shift (besides any constrained ones).
        s_norm_aux: constraint(s) on additive signal-yield nuisances (events), one nuisance
            per entry.
        **kwargs: passed to :class:`Inferno` (``hessian``, ``tangents``, ``eps``).
    """

    def __init__(self, float_r: bool = True, float_l: bool = True, float_b: bool = False,
                 mu_true: float = PAPER_S, b_true: float = PAPER_B, l_init: float = PAPER_L,
                 shape_aux: Optional[Sequence[Constraint]] = None, b_norm_aux: Constraint = None,
                 nonaux_b_norm: bool = False, s_norm_aux: Any = None, **kwargs: Any):
        self.float_r, self.float_l, self.l_init = bool(float_r), bool(float_l), float(l_init)
        nuis = _paper_nuisances(float_r, float_l, float_b, nonaux_b_norm, shape_aux, b_norm_aux,
                                s_norm_aux, self.l_init)
        super().__init__(nuis, mu_true=mu_true, b_true=b_true, **kwargs)

    @classmethod
    def from_benchmark(cls, k: int, **kwargs: Any) -> "PaperInferno":
        """The callback for the paper's benchmark ``k`` (:data:`inferno.paper.BENCHMARKS`)."""
        return cls(**_benchmark_kwargs(k), **kwargs)


class ApproxPaperInferno(ApproxInferno):
    r"""Interpolated INFERNO for the paper's toy problem, as in the paper.

    Up/down templates of :math:`r` at ``r_mods`` (default :math:`\pm 0.2`) and of
    :math:`\lambda` at ``l_mods`` (default 2.5 / 3.5); the interpolation coordinates are
    :math:`\alpha_r = r / 0.2` and :math:`\alpha_\lambda = (\lambda - 3)/0.5`. Constraints
    are given in physical units, as for :class:`PaperInferno`, and converted: e.g.
    :math:`\mathcal{N}(r|0, 0.4)` becomes :math:`\mathcal{N}(\alpha_r|0, 2)` and
    :math:`\mathcal{N}(\lambda|3, 1)` becomes :math:`\mathcal{N}(\alpha_\lambda|0, 2)`
    (:meth:`ShapeNuisance.alpha_curvature`).

    Args:
        r_mods, l_mods: (down, up) values of :math:`r` and :math:`\lambda`; None: the
            nuisance does not float.
        float_b, mu_true, b_true, l_init, shape_aux, b_norm_aux, nonaux_b_norm, s_norm_aux:
            as :class:`PaperInferno`.
        **kwargs: passed to :class:`ApproxInferno` (``aug_alpha``, ``n_steps``, ``lr``,
            ``interp_code``, ``seed``, ``eps``).
    """

    def __init__(self, r_mods: Optional[Tuple[float, float]] = (-0.2, 0.2),
                 l_mods: Optional[Tuple[float, float]] = (2.5, 3.5), float_b: bool = False,
                 mu_true: float = PAPER_S, b_true: float = PAPER_B, l_init: float = PAPER_L,
                 shape_aux: Optional[Sequence[Constraint]] = None, b_norm_aux: Constraint = None,
                 nonaux_b_norm: bool = False, s_norm_aux: Any = None, **kwargs: Any):
        self.r_mods, self.l_mods, self.l_init = r_mods, l_mods, float(l_init)
        nuis = _paper_nuisances(r_mods is not None, l_mods is not None, float_b, nonaux_b_norm,
                                shape_aux, b_norm_aux, s_norm_aux, self.l_init, r_mods, l_mods)
        super().__init__(nuis, mu_true=mu_true, b_true=b_true, **kwargs)

    @classmethod
    def from_benchmark(cls, k: int, r_mods: Tuple[float, float] = (-0.2, 0.2),
                       l_mods: Tuple[float, float] = (2.5, 3.5), **kwargs: Any) -> "ApproxPaperInferno":
        """The interpolated callback for the paper's benchmark ``k``."""
        kw = _benchmark_kwargs(k)
        return cls(r_mods=r_mods if kw.pop("float_r") else None,
                   l_mods=l_mods if kw.pop("float_l") else None, **kw, **kwargs)


def _benchmark_kwargs(k: int) -> Dict[str, Any]:
    if k not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {k!r}: expected one of {sorted(BENCHMARKS)}")
    bm = BENCHMARKS[k]
    shape_aux = []
    if bm.float_r:
        shape_aux.append(bm.r_std)
    if bm.float_l:
        shape_aux.append(bm.l_std)
    return dict(float_r=bm.float_r, float_l=bm.float_l, float_b=bm.float_b,
                shape_aux=shape_aux, b_norm_aux=bm.b_std)


def paper_inferno(k: int, approx: bool = False, **kwargs: Any) -> Union[PaperInferno, ApproxPaperInferno]:
    """The INFERNO callback of the paper's benchmark ``k``: exact (:class:`PaperInferno`) or
    interpolated (``approx=True``, :class:`ApproxPaperInferno`); ``kwargs`` go to it."""
    cls = ApproxPaperInferno if approx else PaperInferno
    return cls.from_benchmark(k, **kwargs)
