"""Events as tensors: :class:`DataSet` and its loaders (:mod:`inferno.data.dataset`), and the
readers of ROOT and parquet files into them (:mod:`inferno.data.readers`, imported on demand:
``from inferno.data.readers import read_root``)."""
from .dataset import DataPair, DataSet, WeightedDataLoader, to_tensor

__all__ = ["DataSet", "WeightedDataLoader", "DataPair", "to_tensor"]
