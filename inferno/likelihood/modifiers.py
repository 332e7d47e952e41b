r"""The modifiers of a HistFactory sample: what each parameter does to the expected counts.

A sample's expected counts in bin :math:`i` are

.. math::

    \nu_i(\vec\theta) = \Big(\nu^0_i + \sum_{h \in \text{histosys}} \delta_{h,i}(\alpha_h)\Big)
        \prod_{n \in \text{normsys}} f_n(\alpha_n)\;
        \prod_{m \in \text{normfactor, lumi}} \theta_m\;
        \prod_{g \in \text{staterror, shapesys, shapefactor}} \gamma_{g,i}

with :math:`\delta` and :math:`f` the interpolation codes of
:mod:`inferno.likelihood.interpolation`. Each modifier names its parameter (or, for the
per-bin kinds, its set of one parameter per bin); the same name in several samples or
channels is one shared (correlated) parameter, as in HistFactory.

Constraints (the auxiliary measurements), as pyhf writes them:

===========  ============================================  =====================================
modifier     parameter                                     constraint
===========  ============================================  =====================================
normfactor   :math:`\theta`, init 1, bounds [0, 10]        none (free)
lumi         :math:`\theta`, init = auxdata                Gaussian, width from the
                                                           measurement (``sigma``)
normsys      :math:`\alpha`, init 0, bounds [-5, 5]        unit Gaussian
histosys     :math:`\alpha`, init 0, bounds [-5, 5]        unit Gaussian
staterror    :math:`\gamma_i`, init 1, bounds [1e-10, 10]  Gaussian, width
                                                           :math:`\sqrt{\sum_s \sigma_{s,i}^2} /
                                                           \sum_s \nu^0_{s,i}` over the
                                                           samples that share it
shapesys     :math:`\gamma_i`, init 1, bounds [1e-10, 10]  Poisson, :math:`\tau_i =
                                                           (\nu^0_i / \sigma_i)^2`
shapefactor  :math:`\gamma_i`, init 1, bounds [0, 10]      none (free)
===========  ============================================  =====================================
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np

__all__ = ["Modifier", "NormFactor", "NormSys", "HistoSys", "Lumi", "StatError", "ShapeSys", "ShapeFactor",
           "MODIFIER_TYPES"]

Code = Union[int, str]


def finite_vector(values: Any, what: str) -> np.ndarray:
    """``values`` (numbers, a numpy array or a tensor) as a non-empty 1-D float64 array of finite
    numbers; a ValueError naming ``what`` otherwise. The one check of the counts, variations
    and uncertainties of a model (also used by the hist converters)."""
    if hasattr(values, "detach"):  # a torch tensor
        values = values.detach().cpu().numpy()
    try:
        arr = np.array(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be numbers, got {type(values).__name__}") from None
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{what} must be a non-empty 1-D array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} contains NaN or inf")
    return arr


@dataclass(frozen=True)
class Modifier:
    """Base class: a named modifier of a sample."""

    name: str

    #: the pyhf type name
    type = ""
    #: one parameter per bin (staterror, shapesys, shapefactor) or one in all
    per_bin = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a {self.type} modifier needs a non-empty name, got {self.name!r}")


@dataclass(frozen=True)
class NormFactor(Modifier):
    """A free normalisation: multiplies the sample by the parameter (a POI or e.g. the
    normalisation of a background fixed by a control region)."""

    type = "normfactor"


@dataclass(frozen=True)
class Lumi(Modifier):
    """The luminosity: multiplies the sample by the parameter, Gaussian-constrained with the
    width given to the model's parameter settings (``sigma``)."""

    name: str = "lumi"
    type = "lumi"


@dataclass(frozen=True)
class NormSys(Modifier):
    """A rate uncertainty: the factor ``hi`` at alpha = +1 and ``lo`` at alpha = -1,
    interpolated by ``code`` (1 or 4; None: the model's default)."""

    hi: float = 1.0
    lo: float = 1.0
    code: Optional[Code] = None
    type = "normsys"

    def __post_init__(self) -> None:
        super().__post_init__()
        for what, v in (("hi", self.hi), ("lo", self.lo)):
            if not (isinstance(v, (int, float, np.number)) and np.isfinite(v) and v > 0):
                raise ValueError(f"normsys {self.name!r}: {what} must be a finite factor > 0, got {v!r}")


@dataclass(frozen=True)
class HistoSys(Modifier):
    """A shape uncertainty: the sample's counts ``hi`` at alpha = +1 and ``lo`` at alpha = -1,
    interpolated by ``code`` (0, 2 or '4p'; None: the model's default)."""

    hi: Any = None
    lo: Any = None
    code: Optional[Code] = None
    type = "histosys"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.hi is None or self.lo is None:
            raise ValueError(f"histosys {self.name!r} needs both hi and lo counts")
        object.__setattr__(self, "hi", finite_vector(self.hi, f"histosys {self.name!r} hi"))
        object.__setattr__(self, "lo", finite_vector(self.lo, f"histosys {self.name!r} lo"))


@dataclass(frozen=True)
class _PerBinUncertainty(Modifier):
    """A per-bin modifier with absolute uncertainties ``sigma`` (one per bin, >= 0)."""

    sigma: Any = None
    per_bin = True

    def __post_init__(self) -> None:
        super().__post_init__()
        arr = finite_vector(self.sigma, f"{self.type} {self.name!r} sigma")
        if np.any(arr < 0):
            raise ValueError(f"{self.type} {self.name!r}: uncertainties must be >= 0")
        object.__setattr__(self, "sigma", arr)


@dataclass(frozen=True)
class StatError(_PerBinUncertainty):
    """MC statistical uncertainty (Barlow-Beeston lite): one Gaussian-constrained factor per
    bin shared by every sample of the channel with this modifier; ``sigma`` are the
    sample's absolute uncertainties per bin (``sqrt(sum w^2)``)."""

    type = "staterror"


@dataclass(frozen=True)
class ShapeSys(_PerBinUncertainty):
    """An uncorrelated per-bin uncertainty with a Poisson constraint: ``sigma`` are the
    absolute uncertainties per bin of the sample."""

    type = "shapesys"


@dataclass(frozen=True)
class ShapeFactor(Modifier):
    """A free factor per bin (data-driven shapes)."""

    type = "shapefactor"
    per_bin = True


MODIFIER_TYPES = {c.type: c for c in (NormFactor, Lumi, NormSys, HistoSys, StatError, ShapeSys, ShapeFactor)}
