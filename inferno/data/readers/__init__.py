r"""Events from ROOT files (uproot) and parquet files (pyarrow) into :class:`~inferno.data.DataSet`.

Two layouts of the processes are read:

* one file (or list of files) with a **label branch/column**: ``label="process"``;
* **one file (or tree) per process**: a mapping ``{label: source}``, the label of every
  event is the key of its source. A source is a path, a list of paths (one process split
  over several files), or for ROOT a ``(path, tree)`` pair (another tree of the same file:
  an alternative sample, a varied tree).

``features`` are the branches (columns) stacked into ``x``, in order; ``weight`` the
per-event weight; ``extras`` ``{name: branch}`` further per-event columns (e.g. the up/down
weights of a :class:`~inferno.nuisance.WeightNuisance`); ``shifted`` ``{feature: branch}``
reads another branch in place of a feature (the inputs of an up/down variation, e.g.
``{"jet_pt": "jet_pt_jes_up"}``); ``friend`` a tree (file) with one entry (row) per event
from which the weight and the extras are read instead (e.g. weights computed afterwards).

:func:`iter_root` and :func:`iter_parquet` read the same selections in chunks of at most
``chunk_size`` events, so that a file larger than memory streams through
:func:`predict_in_chunks` or :func:`fill_histograms` (sums of weights and of squared
weights per bin, per process and variation).

uproot and pyarrow are optional (``pip install 'inferno[root]'``, ``'inferno[parquet]'``)
and imported when a function needs them; ``import inferno`` does not load them.

Every problem with the input raises a ``ValueError`` that names the file, the tree and the
branch: a missing tree or branch, a branch that is not numeric (strings, jagged arrays), one
with another number of values than events, NaN or inf, a friend tree with another number of
entries than its main tree.
"""
from .read import iter_parquet, iter_root, read_parquet, read_root
from .stream import fill_histograms, predict_in_chunks

__all__ = ["read_root", "iter_root", "read_parquet", "iter_parquet", "predict_in_chunks", "fill_histograms"]
