"""Events as tensors: :class:`DataSet` and its loaders (:mod:`inferno.data.dataset`), batches
streamed from files larger than memory (:mod:`inferno.data.streaming`), and the
readers of ROOT and parquet files into them (:mod:`inferno.data.readers`, imported on demand:
``from inferno.data.readers import read_root``)."""
from .dataset import DataPair, DataSet, StratifiedLoader, WeightedDataLoader, to_tensor
from .streaming import StreamingLoader

__all__ = ["DataSet", "WeightedDataLoader", "StratifiedLoader", "StreamingLoader", "DataPair", "to_tensor"]
