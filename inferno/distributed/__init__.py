"""Scaling out (optional; ``import inferno`` loads none of this, and this package loads neither
``torch.distributed`` nor Dask until a function needs them):

* :mod:`inferno.distributed.reduce`: data-parallel INFERNO on ``torch.distributed`` (the loss
  of a global batch split over ranks: :func:`global_sum`, :class:`GradientSync`,
  :class:`ShardedLoader`);
* :mod:`inferno.distributed.dask`: templates and the analysis' Model from file sets on Dask
  workers (``pip install 'inferno[distributed]'``).
"""
from .reduce import GradientSync, ShardedLoader, global_sum, rank_and_size

__all__ = ["global_sum", "GradientSync", "ShardedLoader", "rank_and_size"]
