r"""Parameters of a statistical model: names, initial values, bounds, fixed flags and
constraints (the auxiliary measurements).

Every parameter is a scalar; a per-bin modifier (``staterror``, ``shapesys``,
``shapefactor``) named ``s`` owns the parameters ``s[0]``, ``s[1]``, ... A constraint adds
:math:`-\ln p(a \mid \theta)` to the NLL, with :math:`a` the parameter's auxiliary datum:

* ``'normal'``: :math:`\tfrac12 ((\theta - a)/\sigma)^2 + \ln\sigma + \tfrac12\ln 2\pi`
  (nominal :math:`a` the parameter's centre);
* ``'poisson'``: :math:`\theta\tau - a \ln(\theta\tau) + \ln\Gamma(a + 1)` (``shapesys``;
  nominal :math:`a = \tau`);
* a scalar ``torch.distributions.Distribution`` ``d``: :math:`-\ln d(\theta - a)`
  (nominal :math:`a = 0`: :math:`a` shifts the distribution, as in pseudo-experiments);
* ``None``: free.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Tuple, Union

from torch.distributions import Distribution, Normal

__all__ = ["Parameter", "Constraint"]

Constraint = Union[None, str, Distribution]


@dataclass(frozen=True)
class Parameter:
    """One scalar parameter of a :class:`~inferno.likelihood.Model`.

    Attributes:
        name: unique name (``set[i]`` for the bins of a per-bin modifier).
        kind: the modifier type that created it (``normfactor``, ``histosys``, ...).
        init: starting value of fits.
        bounds: ``(low, high)``, honoured by the fits (may be infinite).
        fixed: held at ``init`` in fits.
        constraint: ``None``, ``'normal'``, ``'poisson'`` or a scalar torch distribution.
        aux: nominal auxiliary datum (see the module docstring).
        sigma: width of a ``'normal'`` constraint.
        tau: scale of a ``'poisson'`` constraint.
    """

    name: str
    kind: str
    init: float
    bounds: Tuple[float, float]
    fixed: bool = False
    constraint: Constraint = None
    aux: float = 0.0
    sigma: float = 1.0
    tau: float = 1.0

    def __post_init__(self) -> None:
        lo, hi = (float(b) for b in self.bounds)
        if math.isnan(lo) or math.isnan(hi) or lo >= hi:
            raise ValueError(f"parameter {self.name!r}: bounds must be (low, high) with low < high, got {self.bounds}")
        if not math.isfinite(self.init) or not (lo <= self.init <= hi):
            raise ValueError(f"parameter {self.name!r}: init {self.init} must be finite and inside the bounds {self.bounds}")
        c = self.constraint
        if isinstance(c, Distribution):
            if c.batch_shape != () or c.event_shape != ():
                raise ValueError(f"parameter {self.name!r}: the constraint must be a scalar distribution, got batch "
                                 f"shape {tuple(c.batch_shape)} and event shape {tuple(c.event_shape)}")
        elif c not in (None, "normal", "poisson"):
            raise ValueError(f"parameter {self.name!r}: constraint must be None, 'normal', 'poisson' or a torch "
                             f"distribution, got {c!r}")
        if c == "normal" and not (math.isfinite(self.sigma) and self.sigma > 0):
            raise ValueError(f"parameter {self.name!r}: a normal constraint needs a width sigma > 0, got {self.sigma}")
        if c == "poisson" and not (math.isfinite(self.tau) and self.tau > 0):
            raise ValueError(f"parameter {self.name!r}: a Poisson constraint needs tau > 0, got {self.tau}")
        object.__setattr__(self, "bounds", (lo, hi))
        object.__setattr__(self, "init", float(self.init))

    @property
    def constrained(self) -> bool:
        return self.constraint is not None

    def updated(self, **changes: Any) -> "Parameter":
        """A copy with ``changes`` (init, bounds, fixed, constraint, aux, sigma, tau).

        A ``Normal(loc, scale)`` constraint is stored as ``'normal'`` with ``aux = loc``,
        ``sigma = scale``, so it exports to HistFactory and uses the closed forms.
        """
        unknown = set(changes) - {"init", "bounds", "fixed", "constraint", "aux", "sigma", "tau"}
        if unknown:
            raise ValueError(f"parameter {self.name!r}: unknown settings {sorted(unknown)} (allowed: init, bounds, "
                             "fixed, constraint, aux, sigma, tau)")
        c = changes.get("constraint", self.constraint)
        if type(c) is Normal and c.batch_shape == ():
            changes = dict(changes, constraint="normal", aux=float(c.loc), sigma=float(c.scale))
        elif isinstance(c, Distribution) and "constraint" in changes and "aux" not in changes:
            changes = dict(changes, aux=0.0)
        for key in ("init", "aux", "sigma", "tau"):
            if key in changes:
                try:
                    changes[key] = float(changes[key])
                except (TypeError, ValueError):
                    raise ValueError(f"parameter {self.name!r}: {key} must be a number, got {changes[key]!r}") from None
        if "bounds" in changes:
            b = changes["bounds"]
            if not (hasattr(b, "__len__") and len(b) == 2):
                raise ValueError(f"parameter {self.name!r}: bounds must be a pair (low, high), got {b!r}")
            changes["bounds"] = (float(b[0]), float(b[1]))
        if "fixed" in changes:
            changes["fixed"] = bool(changes["fixed"])
        return replace(self, **changes)
