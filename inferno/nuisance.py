r"""How a nuisance parameter is described, without subclassing anything.

The INFERNO callbacks (:mod:`inferno.inferno`) compute the expected event counts per bin of
the summary statistic,

.. math::

    \nu_i(\theta) = S(\theta)\, f_{s,i}(\theta) + B(\theta)\, f_{b,i}(\theta),

with :math:`\theta = (\mu, \theta_1, \dots, \theta_K)`: the parameter of interest
:math:`\mu` (the expected signal yield, in events) followed by the nuisance parameters, in
the order they are given. Two kinds of nuisance exist:

* :class:`ShapeNuisance` changes the *shapes* :math:`f_s` and/or :math:`f_b` by acting on
  the inputs of the network. It is given either as a differentiable transform
  ``transform(x, value) -> x'`` (for the exact callback, which differentiates through it,
  and for the interpolated one, which evaluates it at the two ``variations``), or only as
  fixed ``up``/``down`` input modifications ``x -> x'`` (interpolated callback only).
* :class:`RateNuisance` changes a *yield*: :math:`S` or :math:`B`. With ``mode='add'`` the
  value is a number of events added to the yield (nominal 0); with ``mode='scale'`` it
  multiplies the yield (nominal 1). The yields are

  .. math::

      S(\theta) = \Big(\mu + \sum_{k \in \text{add}, s} \theta_k\Big)
                  \prod_{k \in \text{scale}, s} \theta_k, \qquad
      B(\theta) = \Big(b_\text{true} + \sum_{k \in \text{add}, b} \theta_k\Big)
                  \prod_{k \in \text{scale}, b} \theta_k .

Every nuisance is either *free* (``constraint=None``) or constrained by an auxiliary
measurement: a :class:`torch.distributions.Distribution` over the nuisance's value
:math:`\theta_k` (in the nuisance's own units), which adds :math:`-\log p_k(\theta_k)` to
the negative log-likelihood. A float ``sigma`` is shorthand for
``Normal(nominal, sigma)``.

Example (the paper's toy problem, in its physical units)::

    from torch.distributions import Normal
    from inferno import ShapeNuisance, RateNuisance, shift_feature, paper_syst_transform

    r = ShapeNuisance("r", shift_feature(0), on="b", nominal=0.0, constraint=Normal(0.0, 0.4),
                      variations=(-0.2, 0.2))
    lam = ShapeNuisance("l", lambda x, l: paper_syst_transform(x, 0.0, l), on="b",
                        nominal=3.0, constraint=Normal(3.0, 1.0), variations=(2.5, 3.5))
    b = RateNuisance("b", on="b", mode="add", constraint=100.0)   # b = 1000 + theta_b

Transforms receive a copy of the rows they act on (shape ``(m, n_features)``) and the value
as a 0-dim tensor of the inputs' dtype; they must act on each event independently and
return a tensor of the same shape, differentiable in the value (torch operations only).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor
from torch.distributions import Distribution, Normal

__all__ = ["Nuisance", "ShapeNuisance", "RateNuisance", "WeightNuisance", "AltSampleNuisance", "ColumnTransform",
           "shift_feature", "scale_feature", "constraint_curvature"]

Transform = Callable[[Tensor, Tensor], Tensor]
InputMod = Callable[[Tensor], Tensor]
Constraint = Union[Distribution, float, None]

_TARGETS = {"s": ("s",), "b": ("b",), "both": ("s", "b")}


def _check_finite(v: float, name: str) -> float:
    try:
        v = float(v)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be a number, got {v!r}") from e
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    return v


def _check_constraint(constraint: Constraint, nominal: float, name: str) -> Optional[Distribution]:
    """Turn a float shorthand into ``Normal(nominal, sigma)``; validate a distribution."""
    if constraint is None:
        return None
    if isinstance(constraint, Distribution):
        if constraint.batch_shape != torch.Size() or constraint.event_shape != torch.Size():
            raise ValueError(f"the constraint of nuisance {name!r} must be a scalar distribution "
                             f"(batch_shape and event_shape ()), got batch_shape "
                             f"{tuple(constraint.batch_shape)}, event_shape {tuple(constraint.event_shape)}")
        _check_support(constraint, nominal, name)
        return constraint
    if isinstance(constraint, (int, float)) and not isinstance(constraint, bool):
        sigma = _check_finite(constraint, f"constraint width of nuisance {name!r}")
        if sigma <= 0:
            raise ValueError(f"constraint width of nuisance {name!r} must be > 0, got {sigma}")
        return Normal(torch.tensor(nominal, dtype=torch.float64), torch.tensor(sigma, dtype=torch.float64))
    raise ValueError(f"constraint of nuisance {name!r} must be a torch Distribution, a float "
                     f"width, or None (free), got {type(constraint).__name__}")


def _check_support(constraint: Distribution, nominal: float, name: str) -> None:
    """The nominal value must lie in the constraint's support, with a finite log-density:
    the Asimov data and the INFERNO loss are evaluated there."""
    v = torch.tensor(float(nominal), dtype=torch.float64)
    try:
        inside = bool(constraint.support.check(v))
    except Exception:  # noqa: BLE001 - a support that cannot be checked: rely on log_prob
        inside = True
    if not inside:
        raise ValueError(f"the constraint {constraint} of nuisance {name!r} excludes its nominal value "
                         f"{nominal} (support: {constraint.support}); choose a constraint whose support "
                         "contains the nominal value (e.g. a positive factor: mode='scale', nominal 1)")
    try:
        lp = float(constraint.log_prob(v))
    except ValueError:  # the distribution's own argument validation
        lp = -math.inf
    except Exception:  # noqa: BLE001 - e.g. a dtype it cannot take: checked again in training
        return
    if not math.isfinite(lp):
        raise ValueError(f"the constraint {constraint} of nuisance {name!r} has no finite log-density "
                         f"at its nominal value {nominal} (log p = {lp})")


def _check_on(on: Any, name: str) -> Union[str, Tuple[str, ...]]:
    """``on``: 's', 'b', 'both', a process name, or a non-empty sequence of process names."""
    if isinstance(on, str) and on:
        return on
    if isinstance(on, (list, tuple)) and on and all(isinstance(o, str) and o for o in on):
        if len(set(on)) != len(on):
            raise ValueError(f"nuisance {name!r}: on names a process twice: {list(on)}")
        return tuple(on)
    raise ValueError(f"nuisance {name!r}: on must be 's', 'b', 'both', a process name or a list of process "
                     f"names, got {on!r}")


def _type_name(o: object) -> str:
    t = type(o)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def _check_output(out: object, x: Tensor, what: str) -> None:
    """A transform's or modification's result must be a tensor of the input's shape."""
    if not isinstance(out, Tensor):
        raise ValueError(f"{what} must return a torch.Tensor, got a {_type_name(out)} (use torch "
                         "operations on the tensor it receives; they also keep it differentiable)")
    if out.shape != x.shape:
        raise ValueError(f"{what} must return a tensor of the input's shape {tuple(x.shape)}, "
                         f"got shape {tuple(out.shape)}")


def constraint_curvature(constraint: Optional[Distribution], value: float, scale: float = 1.0) -> float:
    r"""Curvature of the constraint term, :math:`-\,\mathrm{d}^2 \log p(\theta)/\mathrm{d}\alpha^2`
    at :math:`\theta = \texttt{value}`, where :math:`\theta = \texttt{value} + \texttt{scale}\,\alpha`.

    For ``Normal(m, sigma)`` this is :math:`\texttt{scale}^2 / \sigma^2` whatever the value.
    It is computed by autograd in float64 for any distribution; 0 for a free nuisance.

    Raises:
        ValueError: the log-density or its curvature is not finite at ``value`` (e.g. the
            nominal value lies outside the distribution's support).
    """
    if constraint is None:
        return 0.0
    t = torch.tensor(float(value), dtype=torch.float64, requires_grad=True)
    with torch.enable_grad():
        lp = constraint.log_prob(t).to(torch.float64)
        (g,) = torch.autograd.grad(lp, t, create_graph=True)
        (h,) = torch.autograd.grad(g, t) if g.requires_grad else (torch.zeros((), dtype=torch.float64),)
    c = -float(h) * scale ** 2
    if not (math.isfinite(float(lp.detach())) and math.isfinite(c)):
        raise ValueError(f"the constraint {constraint} has no finite log-density/curvature at {value}")
    return c


class Nuisance:
    """Base class of the nuisance descriptions: ``name``, ``nominal`` value, ``constraint``.

    ``constraint`` is a distribution over the nuisance's value (None: free).
    """

    name: str
    nominal: float
    constraint: Optional[Distribution]

    @property
    def is_free(self) -> bool:
        """True when the nuisance has no auxiliary measurement."""
        return self.constraint is None

    def curvature(self) -> float:
        r""":math:`-\mathrm{d}^2\log p/\mathrm{d}\theta^2` at the nominal value (0 if free)."""
        return constraint_curvature(self.constraint, self.nominal)


class ShapeNuisance(Nuisance):
    r"""A nuisance that changes the shape of the signal and/or background distributions.

    Args:
        name: label (unique among the nuisances of a callback).
        transform: ``transform(x, value) -> x'`` moving nominal inputs to the nuisance value
            ``value`` (a 0-dim tensor), e.g. ``lambda x, r: x + r * e0``. Differentiable in
            ``value``; event by event; ``transform(x, nominal)`` should give (nearly) ``x``.
            Needed by the exact callback; the interpolated one evaluates it at
            ``variations``.
        on: which events it acts on: ``'b'`` (background), ``'s'`` (signal) or ``'both'``
            (the two groups of the paper's callbacks), or the name(s) of the processes of an
            :class:`~inferno.loss.Analysis`.
        nominal: nominal value of the nuisance (where the Asimov data set is built).
        constraint: auxiliary measurement: a scalar ``torch.distributions.Distribution`` of
            the value (physical units, as passed to ``transform``), a float width for
            ``Normal(nominal, width)``, or None for a free nuisance.
        variations: ``(down, up)`` values of ``transform`` giving the down/up templates of
            the interpolated callback; the interpolation coordinate is
            :math:`\alpha = (\theta - \theta_0)/\delta` with
            :math:`\delta = (\text{up} - \text{down})/2`, so that :math:`\alpha = \pm 1` at
            the variations. A constraint on :math:`\theta` becomes one on :math:`\alpha`
            through this change of variable (e.g. :math:`\mathcal{N}(0, 0.4)` on a shift
            with variations :math:`\pm 0.2` is :math:`\mathcal{N}(0, 2)` on :math:`\alpha`).
            Variations must be symmetric about ``nominal`` when the nuisance is constrained.
        up, down: alternatively to ``transform`` + ``variations``, the up and down input
            modifications ``x -> x'`` themselves (interpolated callback only). The value of
            such a nuisance *is* the interpolation coordinate :math:`\alpha` (nominal 0,
            up at +1, down at -1), and ``constraint`` is then a distribution of
            :math:`\alpha` (typically ``Normal(0, 1)`` for :math:`\pm 1\sigma` templates).

    Raises:
        ValueError: neither a transform nor up/down given, a bad ``on``, non-finite or
            coincident variations, asymmetric variations on a constrained nuisance, a
            constraint whose support excludes the nominal value.
    """

    def __init__(self, name: str, transform: Optional[Transform] = None, on: str = "b",
                 nominal: float = 0.0, constraint: Constraint = None,
                 variations: Optional[Tuple[float, float]] = None,
                 up: Optional[InputMod] = None, down: Optional[InputMod] = None):
        self.name = str(name)
        self.on = _check_on(on, self.name)
        if transform is None and (up is None or down is None):
            raise ValueError(f"nuisance {name!r} needs a transform(x, value), or both up and down "
                             "input modifications")
        if transform is not None and (up is not None or down is not None):
            raise ValueError(f"nuisance {name!r}: give either transform (+ variations) or up/down, "
                             "not both")
        for k, f in (("transform", transform), ("up", up), ("down", down)):
            if f is not None and not callable(f):
                raise ValueError(f"nuisance {name!r}: {k} must be callable")
        self.transform, self.up, self.down = transform, up, down
        self.nominal = 0.0 if transform is None else _check_finite(nominal, f"nominal of {name!r}")
        if transform is None and nominal != 0.0:
            raise ValueError(f"nuisance {name!r} is given by up/down modifications: its value is the "
                             f"interpolation coordinate, whose nominal is 0 (got {nominal})")
        self.constraint = _check_constraint(constraint, self.nominal, self.name)
        self.variations: Optional[Tuple[float, float]] = None
        if variations is not None:
            if transform is None:
                raise ValueError(f"nuisance {name!r}: variations need a transform")
            if len(variations) != 2:
                raise ValueError(f"nuisance {name!r}: variations must be (down, up), got {variations}")
            dw, upv = (_check_finite(v, f"variation of {name!r}") for v in variations)
            if dw == upv:
                raise ValueError(f"nuisance {name!r}: the down and up variations coincide ({dw})")
            self.variations = (dw, upv)
            if self.constraint is not None:
                d_up, d_dw = upv - self.nominal, self.nominal - dw
                if not math.isclose(d_up, d_dw, rel_tol=1e-9, abs_tol=1e-12):
                    raise ValueError(
                        f"nuisance {name!r} is constrained but its variations {variations} are not "
                        f"symmetric about the nominal value {self.nominal}: the constraint cannot be "
                        "mapped onto the interpolation coordinate")

    @property
    def targets(self) -> Tuple[str, ...]:
        """The processes it acts on: ``('b',)``, ``('s',)`` or ``('s', 'b')`` for the paper's
        two groups, else the process names given to ``on``."""
        return _TARGETS[self.on] if isinstance(self.on, str) and self.on in _TARGETS else tuple(
            [self.on] if isinstance(self.on, str) else self.on)

    @property
    def has_transform(self) -> bool:
        """True when the nuisance can be differentiated through (exact INFERNO)."""
        return self.transform is not None

    @property
    def interp_scale(self) -> float:
        r""":math:`\delta`: the change of value per unit of the interpolation coordinate."""
        if self.transform is None:
            return 1.0
        if self.variations is None:
            raise ValueError(f"nuisance {self.name!r} has no variations (down, up) for interpolation")
        return 0.5 * (self.variations[1] - self.variations[0])

    def alpha_curvature(self) -> float:
        r"""Constraint curvature in interpolation units, :math:`\delta^2\,
        (-\mathrm{d}^2 \log p/\mathrm{d}\theta^2)` at the nominal value.

        E.g. :math:`\mathcal{N}(\theta \mid 0, 0.4)` with variations :math:`\pm 0.2`:
        :math:`0.2^2/0.4^2 = 1/4`, i.e. a :math:`\mathcal{N}(\alpha \mid 0, 2)` constraint.
        """
        return constraint_curvature(self.constraint, self.nominal, self.interp_scale)

    def alpha_to_value(self, alpha: Tensor) -> Tensor:
        r""":math:`\theta = \theta_0 + \delta\,\alpha` (identity for up/down nuisances)."""
        return self.nominal + self.interp_scale * alpha

    def apply(self, x: Tensor, value: Union[Tensor, float]) -> Tensor:
        """``transform(x.clone(), value)`` with checks on the result's shape."""
        if self.transform is None:
            raise ValueError(f"nuisance {self.name!r} has no transform (only up/down modifications)")
        if not isinstance(value, Tensor):
            value = torch.tensor(float(value), dtype=x.dtype, device=x.device)
        out = self.transform(x.clone(), value)
        _check_output(out, x, f"the transform of nuisance {self.name!r}")
        return out

    def up_down(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """The up and down modified inputs of rows ``x``."""
        if self.transform is not None:
            if self.variations is None:
                raise ValueError(f"nuisance {self.name!r} has no variations (down, up) for interpolation")
            return self.apply(x, self.variations[1]), self.apply(x, self.variations[0])
        outs = []
        for k, f in (("up", self.up), ("down", self.down)):
            o = f(x.clone())
            _check_output(o, x, f"the {k} modification of nuisance {self.name!r}")
            outs.append(o)
        return outs[0], outs[1]

    def __repr__(self) -> str:
        how = "transform" if self.transform is not None else "up/down"
        return (f"ShapeNuisance({self.name!r}, {how}, on={self.on!r}, nominal={self.nominal}, "
                f"constraint={self.constraint}, variations={self.variations})")


class RateNuisance(Nuisance):
    r"""A nuisance on the expected yield of the signal (``on='s'``) or background (``'b'``).

    Args:
        name: label.
        on: ``'s'`` or ``'b'``.
        mode: ``'add'``: the yield gets :math:`+\theta` events (nominal 0);
            ``'scale'``: the yield is multiplied by :math:`\theta` (nominal 1).
        nominal: nominal value (default 0 for ``'add'``, 1 for ``'scale'``).
        constraint: distribution of :math:`\theta` (events for ``'add'``, a factor for
            ``'scale'``), a float width for ``Normal(nominal, width)``, or None (free).

    Example: the paper's background yield with a 100-event uncertainty:
    ``RateNuisance('b', on='b', constraint=100.)``; a free background normalisation:
    ``RateNuisance('b', on='b')``; a 2.5% luminosity uncertainty on the signal:
    ``RateNuisance('lumi', on='s', mode='scale', constraint=0.025)``.
    """

    def __init__(self, name: str, on: str = "b", mode: str = "add", nominal: Optional[float] = None,
                 constraint: Constraint = None):
        self.name = str(name)
        if on not in ("s", "b"):
            raise ValueError(f"rate nuisance {name!r}: on must be 's' or 'b', got {on!r}")
        if mode not in ("add", "scale"):
            raise ValueError(f"rate nuisance {name!r}: mode must be 'add' or 'scale', got {mode!r}")
        self.on, self.mode = on, mode
        default = 0.0 if mode == "add" else 1.0
        self.nominal = default if nominal is None else _check_finite(nominal, f"nominal of {name!r}")
        if mode == "scale" and self.nominal <= 0:
            raise ValueError(f"rate nuisance {name!r}: a scale factor's nominal must be > 0, got {self.nominal}")
        self.constraint = _check_constraint(constraint, self.nominal, self.name)

    @property
    def targets(self) -> Tuple[str, ...]:
        return (self.on,)

    def __repr__(self) -> str:
        return (f"RateNuisance({self.name!r}, on={self.on!r}, mode={self.mode!r}, "
                f"nominal={self.nominal}, constraint={self.constraint})")


class ColumnTransform:
    r"""Base of the built-in transforms that change one input column, event by event:
    :math:`x'_c = g(x_c, v)`, the other columns unchanged.

    Besides ``__call__(x, v)`` they give the exact INFERNO callback their derivative
    analytically (:meth:`column_tangent`), which spares it differentiating through the
    transform. Subclasses set ``col`` and implement :meth:`__call__`,
    :meth:`column_tangent` and :meth:`is_identity`.
    """

    col: int

    def column_tangent(self, x: Tensor, v: float) -> Union[float, Tensor]:
        r""":math:`\partial x'_c / \partial v` at ``v`` for the rows ``x``: a float (the same
        for every event) or a tensor of shape ``(n,)``."""
        raise NotImplementedError

    def is_identity(self, v: float) -> bool:
        """True when ``transform(x, v)`` returns ``x`` exactly."""
        raise NotImplementedError

    def _check_col(self, x: Tensor) -> None:
        if x.ndim != 2 or not -x.shape[1] <= self.col < x.shape[1]:
            raise ValueError(f"{self!r}: x must have shape (n, > {self.col}), got {tuple(x.shape)}")


class shift_feature(ColumnTransform):
    """Transform ``(x, v) -> x`` with column ``col`` shifted by ``v`` (picklable)."""

    def __init__(self, col: int):
        self.col = int(col)

    def __call__(self, x: Tensor, v: Tensor) -> Tensor:
        self._check_col(x)
        c = self.col % x.shape[1]
        return torch.cat([x[:, :c], x[:, c:c + 1] + v, x[:, c + 1:]], dim=1)

    def column_tangent(self, x: Tensor, v: float) -> Union[float, Tensor]:
        return 1.0

    def is_identity(self, v: float) -> bool:
        return float(v) == 0.0

    def __repr__(self) -> str:
        return f"shift_feature({self.col})"


class scale_feature(ColumnTransform):
    """Transform ``(x, v) -> x`` with column ``col`` multiplied by ``v`` (picklable)."""

    def __init__(self, col: int):
        self.col = int(col)

    def __call__(self, x: Tensor, v: Tensor) -> Tensor:
        self._check_col(x)
        c = self.col % x.shape[1]
        return torch.cat([x[:, :c], x[:, c:c + 1] * v, x[:, c + 1:]], dim=1)

    def column_tangent(self, x: Tensor, v: float) -> Union[float, Tensor]:
        return x[:, self.col]

    def is_identity(self, v: float) -> bool:
        return float(v) == 1.0

    def __repr__(self) -> str:
        return f"scale_feature({self.col})"


def _check_nuisances(nuisances: Optional[Sequence[Nuisance]]) -> Tuple[Nuisance, ...]:
    nuis = tuple(nuisances or ())
    for n in nuis:
        if not isinstance(n, Nuisance):
            raise ValueError(f"nuisances must be ShapeNuisance or RateNuisance objects, got "
                             f"{type(n).__name__}")
    names = [n.name for n in nuis]
    dup = sorted({k for k in names if names.count(k) > 1})
    if dup:
        raise ValueError(f"nuisance names must be unique, repeated: {dup}")
    return nuis


class WeightNuisance(Nuisance):
    r"""A systematic given as per-event up/down weights (e.g. an identification efficiency
    with its uncertainty, a scale variation stored as weights): the events are the nominal
    ones, each with weight :math:`w^+_e` (``up``) or :math:`w^-_e` (``down``) instead of
    :math:`w_e`. Its parameter is HistFactory's :math:`lpha` (:math:`\pm 1` at up/down, unit
    Gaussian constraint); the templates of up/down keep their change of normalisation.
    Exact and cheap in INFERNO: no extra forward pass.

    Args:
        name: the parameter's name.
        up, down: the names of the per-event weight columns (keys of the batch's ``weights``).
        on: the process name(s) it acts on.
        constraint: distribution of :math:`lpha` (default ``Normal(0, 1)``), or None (free).
    """

    kind = "weights"

    def __init__(self, name: str, up: str, down: str, on: Union[str, Sequence[str]],
                 constraint: Constraint = 1.0):
        self.name = str(name)
        for k, v in (("up", up), ("down", down)):
            if not isinstance(v, str) or not v:
                raise ValueError(f"weight nuisance {name!r}: {k} must be the name of a weight column, got {v!r}")
        self.up, self.down = up, down
        self.on = _check_on(on, self.name)
        self.nominal = 0.0
        self.constraint = _check_constraint(constraint, 0.0, self.name)

    @property
    def targets(self) -> Tuple[str, ...]:
        return (self.on,) if isinstance(self.on, str) else tuple(self.on)

    def __repr__(self) -> str:
        return f"WeightNuisance({self.name!r}, up={self.up!r}, down={self.down!r}, on={self.on!r})"


class AltSampleNuisance(Nuisance):
    r"""A systematic given as separately simulated up/down samples of a process (e.g. another
    generator or parton shower): their events are in the data with their own labels ``up``
    and ``down``, batched alongside the nominal ones. Each is normalised to its own sum of
    weights (a shape effect; put a rate effect on the process as a ``NormSys``). The
    parameter is HistFactory's :math:`lpha` (unit Gaussian constraint), interpolated.

    Args:
        name: the parameter's name.
        up, down: the integer labels of the up and down samples' events.
        on: the process it is a variation of.
        constraint: distribution of :math:`lpha` (default ``Normal(0, 1)``), or None (free).
    """

    kind = "alt"

    def __init__(self, name: str, up: int, down: int, on: str, constraint: Constraint = 1.0):
        self.name = str(name)
        for k, v in (("up", up), ("down", down)):
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"alternative-sample nuisance {name!r}: {k} must be an integer label, got {v!r}")
        if up == down:
            raise ValueError(f"alternative-sample nuisance {name!r}: the up and down labels coincide ({up})")
        self.up, self.down = int(up), int(down)
        if not isinstance(on, str) or not on:
            raise ValueError(f"alternative-sample nuisance {name!r}: on must be one process name, got {on!r}")
        self.on = on
        self.nominal = 0.0
        self.constraint = _check_constraint(constraint, 0.0, self.name)

    @property
    def labels(self) -> Tuple[int, int]:
        """``(up, down)`` labels."""
        return self.up, self.down

    @property
    def targets(self) -> Tuple[str, ...]:
        return (self.on,)

    def __repr__(self) -> str:
        return f"AltSampleNuisance({self.name!r}, up={self.up}, down={self.down}, on={self.on!r})"
