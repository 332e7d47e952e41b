"""Scaling out (optional; ``import inferno`` loads none of this, and this package loads neither
``torch.distributed`` nor Dask until a function needs them: its names are imported from their
modules on first use):

* :mod:`inferno.distributed.reduce`: data-parallel INFERNO on ``torch.distributed`` (the loss
  of a global batch split over ranks: :func:`global_sum`, :class:`GradientSync`,
  :class:`ShardedLoader`);
* :mod:`inferno.distributed.dask`: templates and the analysis' Model from file sets on Dask
  workers (:func:`fill_histograms_dask`, :func:`analysis_model_dask`; ``pip install
  'inferno[distributed]'``).
"""
import importlib
from typing import Any

_HOMES = {
    "global_sum": "reduce", "GradientSync": "reduce", "ShardedLoader": "reduce", "rank_and_size": "reduce",
    "fill_histograms_dask": "dask", "analysis_transforms": "dask", "analysis_model_dask": "dask", "add_counts": "dask",
}

__all__ = list(_HOMES)


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
