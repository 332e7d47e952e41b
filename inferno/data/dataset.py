"""Tensor-backed data sets and batching.

Batches are sliced out of pre-built tensors (``x[idx]`` for a whole batch at once); there is
no per-event Python work, so batching costs a few microseconds whatever the batch size.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Dict, Iterator, Mapping, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

__all__ = ["DataSet", "WeightedDataLoader", "StratifiedLoader", "DataPair", "to_tensor"]

_INT_DTYPES = (torch.bool, torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)
Batch = Tuple[Any, ...]  # (x, y, w) or (x, y, w, extras)


def _check_count(v: Any, name: str) -> int:
    """``v`` as an int >= 1; a clear error for strings, bools, None and fractions."""
    ok = isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))
    if not ok and isinstance(v, (float, np.floating)) and math.isfinite(v) and v == int(v):
        ok = True  # an integral float such as 64.0
    if not ok or v < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {v!r} ({type(v).__name__})")
    return int(v)


def to_tensor(a: Any, name: str = "array", dtype: torch.dtype = torch.float32) -> Tensor:
    """Convert numpy arrays, torch tensors and pandas objects to a tensor of ``dtype``."""
    if hasattr(a, "to_numpy"):  # pandas DataFrame / Series
        a = a.to_numpy()
    if isinstance(a, Tensor):
        if a.is_complex() or not (a.is_floating_point() or a.dtype in _INT_DTYPES):
            raise ValueError(f"{name} must be real and numeric, got dtype {a.dtype}")
        return a.detach().to(dtype)
    arr = np.asarray(a)
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    # a writable copy in the target precision (pandas may hand out read-only views)
    return torch.from_numpy(np.array(arr, dtype=torch.empty((), dtype=dtype).numpy().dtype))


class DataSet:
    r"""Inputs ``x`` (n, n_features), optional targets ``y``, per-event weights ``w`` and named
    per-event columns ``extras``.

    ``x`` of shape (n,) is read as one feature. ``y`` and ``w`` of shape (n,) are stored as
    (n, 1) so that they broadcast against a network output of shape (n, 1). Weights are one
    per event: ``w`` has shape (n,) or (n, 1); they may be negative (NLO samples), but not
    sum to a non-positive total. ``extras`` (e.g. ``{"w_id_up": ..., "w_id_dn": ...}``, the
    per-event weight variations of :class:`~inferno.nuisance.WeightNuisance`, shape (n,); or
    rows of values, shape (n, k), e.g. :func:`inferno.loss.stage_tangents`) are batched
    alongside: the loaders then yield ``(x, y, w, extras)``, and the training loop exposes
    them to callbacks as ``wrapper.extras``.

    Raises:
        ValueError: empty data, NaN or inf in ``x``, ``y``, ``w`` or an extra column,
            weights whose sum is not positive, weights of another shape than one per event,
            or columns of different lengths (named).
    """

    def __init__(self, x: Any, y: Any = None, w: Any = None, extras: Optional[Mapping[str, Any]] = None):
        self.x = to_tensor(x, "x")
        if self.x.ndim == 1:
            self.x = self.x[:, None]
        if self.x.ndim != 2:
            raise ValueError(f"x must have shape (n_events, n_features), got {tuple(self.x.shape)}")
        n = len(self.x)
        if n == 0:
            raise ValueError("the data set is empty (x has 0 events)")
        if not torch.isfinite(self.x).all():
            bad = (~torch.isfinite(self.x)).any(1).nonzero()[:5, 0].tolist()
            raise ValueError(f"x contains NaN or inf (first bad events: {bad})")
        self.y = self._column(y, "y", n)
        self.w = self._column(w, "w", n)
        if self.w is not None:
            if self.w.ndim != 2 or self.w.shape[1] != 1:
                raise ValueError(f"w must hold one weight per event, shape ({n},) or ({n}, 1), "
                                 f"got {tuple(self.w.shape)}")
            total = float(self.w.sum())
            if not total > 0:
                raise ValueError(f"the weights w sum to {total:.6g} (<= 0): a weighted loss divides by their "
                                 "sum, which must be positive (negative weights are allowed, not a non-positive total)")
        self.extras: Dict[str, Tensor] = self._extras(extras, n)

    @classmethod
    def _extras(cls, extras: Optional[Mapping[str, Any]], n: int) -> Dict[str, Tensor]:
        out: Dict[str, Tensor] = {}
        for name, col in dict(extras or {}).items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"extras must be named by non-empty strings, got {name!r}")
            t = cls._column(col, f"extras[{name!r}]", n)
            if t.ndim != 2:
                raise ValueError(f"extras[{name!r}] must hold one value or one row of values per event, shape "
                                 f"({n},) or ({n}, k), got {tuple(t.shape)}")
            out[name] = t[:, 0] if np.ndim(col) == 1 else t
        return out

    def with_extras(self, extras: Mapping[str, Any]) -> "DataSet":
        """A data set of the same events (the same tensors) with the columns ``extras`` added
        (replacing any of the same name), e.g. ``ds.with_extras(stage_tangents(analysis, net,
        ds.x, ds.y))``; only the new columns are checked."""
        new = copy.copy(self)
        new.extras = {**self.extras, **self._extras(extras, len(self))}
        return new

    @staticmethod
    def _column(a: Any, name: str, n: int) -> Optional[Tensor]:
        if a is None:
            return None
        t = to_tensor(a, name)
        if t.ndim == 1:
            t = t[:, None]
        if len(t) != n:
            raise ValueError(f"x, {name} have different lengths: {n} != {len(t)}")
        if not torch.isfinite(t).all():
            raise ValueError(f"{name} contains NaN or inf")
        return t

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, idx: Any) -> Batch:
        out = (self.x[idx], None if self.y is None else self.y[idx], None if self.w is None else self.w[idx])
        return out + ({k: v[idx] for k, v in self.extras.items()},) if self.extras else out

    def to(self, device: Any) -> "DataSet":
        """Move the tensors to ``device`` in place (e.g. once to the GPU before training)."""
        for k in ("x", "y", "w"):
            t = getattr(self, k)
            if t is not None:
                setattr(self, k, t.to(device))
        self.extras = {k: v.to(device) for k, v in self.extras.items()}
        return self


class WeightedDataLoader:
    """Iterate over a :class:`DataSet` in batches of ``(x, y, w)`` (``y``/``w`` may be None),
    or ``(x, y, w, extras)`` when the data set has extra columns.

    Args:
        dataset: the events.
        batch_size: events per batch (>= 1); the last batch may be smaller unless
            ``drop_last``.
        shuffle: a new permutation every epoch, drawn from a generator seeded with ``seed``
            (same seed, same sequence of batches).
        drop_last: drop the last incomplete batch.
        seed: seed of the shuffling generator (``None``: fresh entropy).
    """

    def __init__(self, dataset: DataSet, batch_size: int, shuffle: bool = False,
                 drop_last: bool = False, seed: Optional[int] = None):
        if not isinstance(dataset, DataSet):
            raise TypeError(f"dataset must be a DataSet, got {type(dataset).__name__}")
        self.dataset, self.batch_size = dataset, _check_count(batch_size, "batch_size")
        self.shuffle, self.drop_last = shuffle, drop_last
        self.generator = torch.Generator()
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(int(seed))
        if drop_last and len(dataset) < self.batch_size:
            raise ValueError(f"drop_last with batch_size {batch_size} > {len(dataset)} events "
                             "would give no batch")

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        ds = self.dataset
        return (ds[idx] for idx in self.index_batches())

    def index_batches(self) -> Iterator[Any]:
        """The events of every batch of one epoch, as indices into the data set (a slice, or a
        tensor of positions when shuffled); iterating the loader gives ``dataset[idx]`` of each
        (a sharded loader takes its part of them before gathering any rows)."""
        n, bs = len(self.dataset), self.batch_size
        perm = torch.randperm(n, generator=self.generator).to(self.dataset.x.device) if self.shuffle else None
        for i in range(len(self)):
            sl = slice(i * bs, min((i + 1) * bs, n))
            yield sl if perm is None else perm[sl]


class StratifiedLoader(WeightedDataLoader):
    """A :class:`WeightedDataLoader` whose every batch holds every label of the
    data set in the same proportion: per epoch, the events of each label are permuted (seeded)
    and dealt into the same number of batches (about ``len(dataset) / batch_size``). INFERNO
    needs every process, and the alternative samples, in every batch; a small sample such as
    the diboson's is spread evenly.

    Raises:
        ValueError: no labels, or a label with fewer events than there are batches.
    """

    def __init__(self, dataset: DataSet, batch_size: int, shuffle: bool = True, seed: Optional[int] = None):
        super().__init__(dataset, batch_size, shuffle=shuffle, drop_last=False, seed=seed)
        if dataset.y is None:
            raise ValueError("a stratified loader needs the labels y")
        lab = dataset.y[:, 0].long()
        lo, hi = (int(v) for v in torch.aminmax(lab))
        # the labels present, in increasing order: by counting (a fraction of torch.unique's sort)
        # when they span a small range, as process labels do
        values = (torch.bincount(lab - lo).nonzero().squeeze(-1) + lo if hi - lo <= 4 * len(lab) + 1024
                  else torch.unique(lab))
        self.groups = [(lab == v).nonzero().squeeze(-1) for v in values]
        self.n_batches = max(1, int(round(len(dataset) / self.batch_size)))
        small = min(len(g) for g in self.groups)
        if small < self.n_batches:
            raise ValueError(f"a label has {small} events, fewer than the {self.n_batches} batches: "
                             "use larger batches or more events")

    def __len__(self) -> int:
        return self.n_batches

    def index_batches(self) -> Iterator[Tensor]:
        parts = []
        for g in self.groups:
            gg = g[torch.randperm(len(g), generator=self.generator)] if self.shuffle else g
            parts.append(torch.tensor_split(gg, self.n_batches))
        for i in range(self.n_batches):
            yield torch.cat([p[i] for p in parts])


@dataclass
class DataPair:
    """Training and validation loaders (and optionally a test loader)."""

    trn_dl: WeightedDataLoader
    val_dl: Optional[WeightedDataLoader] = None
    tst_dl: Optional[WeightedDataLoader] = None
