"""The public readers of :mod:`inferno.data.readers`: whole selections into one
:class:`~inferno.data.DataSet` (:func:`read_root`, :func:`read_parquet`), or chunk by chunk
(:func:`iter_root`, :func:`iter_parquet`)."""
from __future__ import annotations

from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ..dataset import DataSet
from .backends import _ParquetReader, _RootReader
from .sources import Files, _check_names, _Source, _sources


def _column(arr: Any, n: int, where: str, start: int) -> np.ndarray:
    """A numeric column with one finite value per event, or a ValueError naming ``where``."""
    a = np.asarray(arr)
    if a.dtype.kind not in "biuf":
        strings = a.dtype.kind in "USa" or (a.dtype.kind == "O" and a.size and isinstance(a.flat[0], (str, bytes)))
        hint = " (strings)" if strings else " (a jagged or nested branch: select one value per event first)" \
            if a.dtype.kind == "O" else ""
        raise ValueError(f"{where}: not numeric (dtype {a.dtype}){hint}; features, labels, weights and extras "
                         "must be numbers, one per event")
    if a.ndim != 1 or len(a) != n:
        raise ValueError(f"{where}: {a.size} values (shape {a.shape}) for {n} events; one value per event is needed")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        bad = (np.nonzero(~np.isfinite(a))[0][:5] + start).tolist()
        raise ValueError(f"{where}: NaN or inf (or a missing value) in entries {bad}")
    return a


def _events(reader_cls: type, files: Files, tree: Optional[str], features: Any, label: Optional[str],
            weight: Optional[str], extras: Optional[Mapping[str, str]], shifted: Optional[Mapping[str, str]],
            friend: Any, chunk_size: Optional[int], root: bool) -> Iterator[Tuple[_Source, int, Dict[str, Any]]]:
    """``(source, first entry, {"x", "y", "w", "extras"})`` chunk by chunk; every file, tree
    and branch is checked now, before the first chunk is read."""
    what = "branch" if root else "column"
    features, extras, shifted = _check_names(features, weight, label, extras, shifted, what)
    if chunk_size is not None:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
            raise ValueError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")
        chunk_size = int(chunk_size)
    feats = [shifted.get(f, f) for f in features]
    side = ([weight] if weight is not None else []) + list(extras.values())
    main = feats + ([label] if label is not None else []) + ([] if friend is not None else side)
    friend_cols = side if friend is not None else []
    if friend is not None and not friend_cols:
        raise ValueError("a friend tree gives the weight and the extras: name at least one of them")
    readers = [reader_cls(s, main, friend_cols) for s in _sources(files, tree, label, friend, root)]  # checks first
    return _chunks(readers, feats, label, weight, extras, friend is not None, chunk_size)


def _chunks(readers: List[Any], feats: List[str], label: Optional[str], weight: Optional[str],
            extras: Dict[str, str], has_friend: bool, chunk_size: Optional[int]
            ) -> Iterator[Tuple[_Source, int, Dict[str, Any]]]:
    for r in readers:
        src = r.src
        for start, m, fr in r.chunks(chunk_size):
            n = len(m[feats[0]])
            x = np.empty((n, len(feats)), dtype=np.float32)
            for j, b in enumerate(feats):
                x[:, j] = _column(m[b], n, src.where(b), start)
            out: Dict[str, Any] = {"x": x}
            if label is not None:
                out["y"] = _column(m[label], n, src.where(label), start)
            elif src.label is not None:
                out["y"] = np.full(n, src.label, dtype=np.float32)
            cols, fw = (fr, True) if has_friend else (m, False)
            if weight is not None:
                out["w"] = _column(cols[weight], n, src.where(weight, fw), start)
            out["extras"] = {k: _column(cols[b], n, src.where(b, fw), start) for k, b in extras.items()}
            yield src, start, out


def _dataset(ev: Dict[str, Any], where: str) -> DataSet:
    try:
        return DataSet(ev["x"], ev.get("y"), ev.get("w"), ev["extras"] or None)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def _read_all(events: Iterator[Tuple[_Source, int, Dict[str, Any]]], files: Files) -> DataSet:
    parts = [ev for _, _, ev in events]
    if not parts:
        raise ValueError(f"no events in {files!r}")
    cat: Dict[str, Any] = {"x": np.concatenate([p["x"] for p in parts])}
    for k in ("y", "w"):
        if k in parts[0]:
            cat[k] = np.concatenate([p[k] for p in parts])
    cat["extras"] = {k: np.concatenate([p["extras"][k] for p in parts]) for k in parts[0]["extras"]}
    return _dataset(cat, f"the events of {files!r}")


def _iter(events: Iterator[Tuple[_Source, int, Dict[str, Any]]]) -> Iterator[DataSet]:
    for src, start, ev in events:
        yield _dataset(ev, f"{src.where()}, entries {start}-{start + len(ev['x'])}")


# --------------------------------------------------------------------------- public readers
def read_root(files: Files, tree: Optional[str], features: Union[str, Sequence[str]], label: Optional[str] = None,
              weight: Optional[str] = None, extras: Optional[Mapping[str, str]] = None, *,
              shifted: Optional[Mapping[str, str]] = None, friend: Any = None) -> DataSet:
    """Read ROOT TTrees (or RNTuples) into one :class:`~inferno.data.DataSet`.

    Args:
        files: a path, a list of paths (concatenated), or ``{label: source}`` with one source
            per process (a path, a list of paths, or a ``(path, tree)`` pair for another tree:
            an alternative sample or a varied tree); the events of a source get its label
            as ``y``.
        tree: the name of the tree in every file (a ``(path, tree)`` pair overrides it).
        features: the branches stacked into ``x``, in order.
        label: the branch with the process label of every event (``y``); not with a mapping.
        weight: the branch with the event weight (``w``); None: unweighted.
        extras: ``{name: branch}`` further per-event columns (``DataSet.extras``), e.g. the
            up/down weights of a :class:`~inferno.nuisance.WeightNuisance`.
        shifted: ``{feature: branch}``: read ``branch`` in place of ``feature`` (the inputs
            of an up/down variation stored as shifted branches).
        friend: a tree of the same file (its name), a ``(path, tree)`` pair, a mapping
            ``{label: either}`` or a callable ``path -> either``, with one entry per event,
            from which the weight and the extras are read.

    Raises:
        ImportError: uproot is not installed (``pip install 'inferno[root]'``).
        FileNotFoundError: a file does not exist.
        ValueError: naming the file, tree and branch: a missing tree or branch, a branch
            that is not numeric or not one value per event, NaN or inf, a friend tree with
            another number of entries; no events at all.

    Example:
        >>> ds = read_root({0: "signal.root", 1: "background.root"}, "Events", ["pt", "eta"],
        ...                weight="weight")  # doctest: +SKIP
    """
    return _read_all(_events(_RootReader, files, tree, features, label, weight, extras, shifted, friend, None, True),
                     files)


def iter_root(files: Files, tree: Optional[str], features: Union[str, Sequence[str]], label: Optional[str] = None,
              weight: Optional[str] = None, extras: Optional[Mapping[str, str]] = None, *,
              chunk_size: int = 100_000, shifted: Optional[Mapping[str, str]] = None,
              friend: Any = None) -> Iterator[DataSet]:
    """:func:`read_root` in chunks: a :class:`~inferno.data.DataSet` of at most ``chunk_size``
    events at a time (a chunk never spans two files), for files larger than memory. All
    trees and branches are checked before the first chunk is read; the concatenated chunks
    equal :func:`read_root`'s data set."""
    return _iter(_events(_RootReader, files, tree, features, label, weight, extras, shifted, friend,
                         chunk_size, True))


def read_parquet(files: Files, features: Union[str, Sequence[str]], label: Optional[str] = None,
                 weight: Optional[str] = None, extras: Optional[Mapping[str, str]] = None, *,
                 shifted: Optional[Mapping[str, str]] = None, friend: Any = None) -> DataSet:
    """Read parquet files into one :class:`~inferno.data.DataSet` (as :func:`read_root`, with
    columns for branches and without trees).

    Args:
        files: a path, a list of paths (concatenated), or ``{label: path or list of paths}``.
        features, label, weight, extras, shifted: columns, as for :func:`read_root`.
        friend: a parquet file with one row per event (a path, a mapping ``{label: path}``
            or a callable ``path -> path``) from which the weight and the extras are read.

    Raises:
        ImportError: pyarrow is not installed (``pip install 'inferno[parquet]'``).
        FileNotFoundError: a file does not exist.
        ValueError: naming the file and column (as for :func:`read_root`).
    """
    return _read_all(_events(_ParquetReader, files, None, features, label, weight, extras, shifted, friend, None,
                             False), files)


def iter_parquet(files: Files, features: Union[str, Sequence[str]], label: Optional[str] = None,
                 weight: Optional[str] = None, extras: Optional[Mapping[str, str]] = None, *,
                 chunk_size: int = 100_000, shifted: Optional[Mapping[str, str]] = None,
                 friend: Any = None) -> Iterator[DataSet]:
    """:func:`read_parquet` in chunks of at most ``chunk_size`` rows (exactly ``chunk_size``
    but for the last of each file, whatever the files' row groups)."""
    return _iter(_events(_ParquetReader, files, None, features, label, weight, extras, shifted, friend,
                         chunk_size, False))
