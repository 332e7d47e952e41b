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
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

from .data import DataSet

__all__ = ["read_root", "iter_root", "read_parquet", "iter_parquet", "predict_in_chunks", "fill_histograms"]

PathLike = Union[str, os.PathLike]
Files = Union[PathLike, Sequence[Any], Mapping[Any, Any]]
Counts = Dict[Tuple[Any, str], Tuple[np.ndarray, np.ndarray]]


# --------------------------------------------------------------------------- optional imports
def _require(module: str, extra: str):
    """Import an optional dependency, or say which extra installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"{module} is needed for this: pip install 'inferno[{extra}]' "
                          f"(or pip install {module})") from e


# --------------------------------------------------------------------------- sources
class _Source:
    """One file (and tree) of events, with the label given to all of them (or None)."""

    def __init__(self, path: str, tree: Optional[str], label: Any, friend: Optional[Tuple[str, Optional[str]]]):
        self.path, self.tree, self.label, self.friend = path, tree, label, friend

    def where(self, branch: Optional[str] = None, friend: bool = False) -> str:
        path, tree = self.friend if friend and self.friend is not None else (self.path, self.tree)
        s = f"file {path!r}" + ("" if tree is None else f", tree {tree!r}")
        return s + ("" if branch is None else f", {'branch' if tree is not None else 'column'} {branch!r}")


def _as_path(p: Any, what: str) -> str:
    if not isinstance(p, (str, os.PathLike)):
        raise ValueError(f"{what} must be a path (str or pathlib.Path), got {type(p).__name__}")
    s = os.fspath(p)
    if "://" not in s and not Path(s).is_file():
        raise FileNotFoundError(f"{what}: no such file {s!r}")
    return s


def _check_label(k: Any) -> Union[int, float]:
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, float, np.integer, np.floating)):
        raise ValueError(f"the keys of a mapping of files are the labels of their events and must be numbers "
                         f"(e.g. {{0: 'signal.root', 1: 'background.root'}}), got {k!r}")
    return k.item() if isinstance(k, np.generic) else k


def _sources(files: Files, tree: Optional[str], label: Optional[str], friend: Any, root: bool) -> List[_Source]:
    """The list of sources of ``files`` (a path, a list of them, or ``{label: source}``)."""
    kind = "tree" if root else "file"

    def entries(spec: Any, lab: Any, what: str) -> List[Tuple[str, Optional[str], Any]]:
        if root and isinstance(spec, tuple):
            if len(spec) != 2 or not isinstance(spec[1], str):
                raise ValueError(f"{what}: a (path, tree) pair is expected, got {spec!r}")
            return [(_as_path(spec[0], what), spec[1], lab)]
        if isinstance(spec, (str, os.PathLike)):
            return [(_as_path(spec, what), tree, lab)]
        if isinstance(spec, Sequence) and not isinstance(spec, (str, bytes)):
            if not spec:
                raise ValueError(f"{what}: an empty list of files")
            return [e for s in spec for e in entries(s, lab, what)]
        raise ValueError(f"{what} must be a path{', a (path, tree) pair' if root else ''} or a list of them, "
                         f"got {type(spec).__name__}")

    if isinstance(files, Mapping):
        if label is not None:
            raise ValueError(f"give either a label {'branch' if root else 'column'} ({label!r}) or a mapping "
                             "{label: file}, not both")
        if not files:
            raise ValueError("the mapping of files is empty")
        out = [e for k, v in files.items() for e in entries(v, _check_label(k), f"the source of label {k!r}")]
    else:
        out = entries(files, None, "files")
    if root and tree is None and any(t is None for _, t, _ in out):
        raise ValueError("name the tree to read: tree='Events' (or (path, tree) pairs in the mapping)")
    sources = []
    for path, t, lab in out:
        fr = None
        if friend is not None:
            spec = friend(path) if callable(friend) else friend.get(lab) if isinstance(friend, Mapping) else friend
            if spec is None:
                raise ValueError(f"no friend {kind} given for {path!r} (label {lab!r})")
            if root:
                if isinstance(spec, tuple):  # (path, tree) in another file
                    fr = (_as_path(spec[0], "the friend's file"), str(spec[1]))
                elif isinstance(spec, str):  # a tree of the same file
                    fr = (path, spec)
                else:
                    raise ValueError(f"friend must be a tree name, a (path, tree) pair, a mapping "
                                     f"{{label: ...}} or a callable(path), got {type(spec).__name__}")
            else:
                fr = (_as_path(spec, "the friend file"), None)
        sources.append(_Source(path, t, lab, fr))
    return sources


def _check_names(features: Any, weight: Any, label: Any, extras: Any, shifted: Any,
                 what: str) -> Tuple[List[str], Dict[str, str], Dict[str, str]]:
    if isinstance(features, str):
        features = [features]
    features = list(features)
    if not features:
        raise ValueError(f"features: at least one {what} is needed")
    for f in features + [v for v in (weight, label) if v is not None]:
        if not isinstance(f, str) or not f:
            raise ValueError(f"{what} names must be non-empty strings, got {f!r}")
    if len(set(features)) != len(features):
        raise ValueError(f"features: a {what} is given twice: {features}")
    extras = dict(extras or {})
    for k, v in extras.items():
        if not isinstance(k, str) or not k or not isinstance(v, str) or not v:
            raise ValueError(f"extras must map names to {what} names (non-empty strings), got {k!r}: {v!r}")
    shifted = dict(shifted or {})
    unknown = [k for k in shifted if k not in features]
    if unknown:
        raise ValueError(f"shifted replaces features, but {unknown} are not among the features {features}")
    for k, v in shifted.items():
        if not isinstance(v, str) or not v:
            raise ValueError(f"shifted[{k!r}] must be a {what} name, got {v!r}")
    return features, extras, shifted


# --------------------------------------------------------------------------- backends
class _RootReader:
    """A TTree (or RNTuple) of one source, with its friend tree: checked when made, (re)opened
    while its chunks are read, so that many files do not hold many open handles."""

    def __init__(self, src: _Source, main: List[str], friend_cols: List[str]):
        self.uproot = _require("uproot", "root")
        self.src, self.main, self.friend_cols = src, main, friend_cols
        with self._open(src.path) as f:
            tree = self._tree(f, src.tree, src.where())
            self.n = int(tree.num_entries)
            self._check_branches(tree, main, src, False)
        if src.friend is not None:
            with self._open(src.friend[0]) as f:
                friend = self._tree(f, src.friend[1], src.where(friend=True))
                self._check_branches(friend, friend_cols, src, True)
                m = int(friend.num_entries)
            if m != self.n:
                raise ValueError(f"{src.where(friend_cols[0] if friend_cols else None, friend=True)}: the friend tree "
                                 f"has {m} entries, but {src.where()} has {self.n}: a friend tree needs one entry "
                                 "per event of its main tree")

    def _open(self, path: str) -> Any:
        try:
            return self.uproot.open(path)
        except Exception as e:  # not a ROOT file
            raise ValueError(f"file {path!r} could not be opened as a ROOT file: {e}") from e

    @staticmethod
    def _tree(f: Any, tree: str, where: str) -> Any:
        try:
            t = f[tree]
        except KeyError:
            names = sorted({k.split(";")[0] for k, c in f.classnames().items()
                            if c in ("TTree", "TNtuple", "ROOT::RNTuple") or c.startswith("TTree")})
            raise ValueError(f"{where}: the file has no tree {tree!r} (its trees: {names})") from None
        if not (hasattr(t, "num_entries") and hasattr(t, "arrays") and hasattr(t, "keys")):
            raise ValueError(f"{where}: {tree!r} is a {type(t).__name__}, not a tree")
        return t

    @staticmethod
    def _check_branches(tree: Any, cols: List[str], src: _Source, friend: bool) -> None:
        keys = set(tree.keys())
        for c in cols:
            if c not in keys:
                raise ValueError(f"{src.where(c, friend)}: no such branch (the tree has {sorted(keys)})")

    def chunks(self, chunk_size: Optional[int]) -> Iterator[Tuple[int, Dict[str, np.ndarray], Dict[str, np.ndarray]]]:
        if self.n == 0:
            return
        step = self.n if chunk_size is None else chunk_size
        src = self.src
        with self._open(src.path) as f, (self._open(src.friend[0]) if src.friend is not None
                                         else contextlib.nullcontext()) as ff:
            tree = self._tree(f, src.tree, src.where())
            friend = None if ff is None else self._tree(ff, src.friend[1], src.where(friend=True))
            for start in range(0, self.n, step):
                stop = min(start + step, self.n)
                main = self._read(tree, self.main, start, stop)
                fr = {} if friend is None else self._read(friend, self.friend_cols, start, stop)
                yield start, main, fr

    @staticmethod
    def _read(tree: Any, cols: List[str], start: int, stop: int) -> Dict[str, np.ndarray]:
        if not cols:
            return {}
        return dict(tree.arrays(list(dict.fromkeys(cols)), library="np", entry_start=start, entry_stop=stop))


class _ParquetReader:
    """A parquet file of one source, with its friend file: checked when made, (re)opened while
    its chunks are read."""

    def __init__(self, src: _Source, main: List[str], friend_cols: List[str]):
        self.pq = _require("pyarrow.parquet", "parquet")
        self.src, self.main, self.friend_cols = src, main, friend_cols
        with self._open(src.path) as f:
            self.n = int(f.metadata.num_rows)
            self._check_columns(f, main, src, False)
        if src.friend is not None:
            with self._open(src.friend[0]) as f:
                self._check_columns(f, friend_cols, src, True)
                m = int(f.metadata.num_rows)
            if m != self.n:
                raise ValueError(f"{src.where(friend_cols[0] if friend_cols else None, friend=True)}: the friend file "
                                 f"has {m} rows, but {src.where()} has {self.n}: a friend file needs one row per "
                                 "event of its main file")

    def _open(self, path: str) -> Any:
        try:
            return self.pq.ParquetFile(path)
        except Exception as e:
            raise ValueError(f"file {path!r} could not be opened as a parquet file: {e}") from e

    @staticmethod
    def _check_columns(f: Any, cols: List[str], src: _Source, friend: bool) -> None:
        names = list(f.schema_arrow.names)
        for c in cols:
            if c not in names:
                raise ValueError(f"{src.where(c, friend)}: no such column (the file has {names})")

    def _batches(self, f: Any, cols: List[str], chunk_size: Optional[int]) -> Iterator[Dict[str, np.ndarray]]:
        cols = list(dict.fromkeys(cols))
        if chunk_size is None:
            yield _columns(f.read(columns=cols), cols)
            return
        # pyarrow's batches stop at row-group boundaries: re-cut them into exactly chunk_size
        # rows, so that the main and the friend file (other row groups) stay aligned
        buf: List[Dict[str, np.ndarray]] = []
        have = 0
        for b in f.iter_batches(batch_size=chunk_size, columns=cols):
            buf.append(_columns(b, cols))
            have += b.num_rows
            while have >= chunk_size:
                merged = {c: np.concatenate([d[c] for d in buf]) for c in cols}
                yield {c: v[:chunk_size] for c, v in merged.items()}
                rest = {c: v[chunk_size:] for c, v in merged.items()}
                have -= chunk_size
                buf = [rest] if have else []
        if have:
            yield {c: np.concatenate([d[c] for d in buf]) for c in cols}

    def chunks(self, chunk_size: Optional[int]) -> Iterator[Tuple[int, Dict[str, np.ndarray], Dict[str, np.ndarray]]]:
        if self.n == 0:
            return
        src = self.src
        with self._open(src.path) as f, (self._open(src.friend[0]) if src.friend is not None
                                         else contextlib.nullcontext()) as ff:
            main = self._batches(f, self.main, chunk_size)
            fr = None if ff is None else self._batches(ff, self.friend_cols, chunk_size)
            start = 0
            for m in main:
                n = len(next(iter(m.values())))
                yield start, m, ({} if fr is None else next(fr))
                start += n


def _columns(table: Any, cols: List[str]) -> Dict[str, np.ndarray]:
    out = {}
    for c in cols:
        col = table.column(c)
        try:
            out[c] = col.to_numpy(zero_copy_only=False)
        except TypeError:  # a ChunkedArray takes no argument
            out[c] = col.to_numpy()
        except Exception:  # nested types pyarrow cannot turn into numpy: flagged as non-numeric below
            out[c] = np.asarray(col.to_pylist(), dtype=object)
    return out


# --------------------------------------------------------------------------- events
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


# --------------------------------------------------------------------------- streaming
def _module(net: Any) -> nn.Module:
    m = getattr(net, "model", net)  # a ModelWrapper or the network itself
    if not isinstance(m, nn.Module):
        raise ValueError(f"expected a torch network or a ModelWrapper, got {type(net).__name__}")
    return m


def _x(chunk: Any) -> Tensor:
    if isinstance(chunk, DataSet):
        return chunk.x
    return DataSet(chunk).x


def predict_in_chunks(net: Any, chunks: Iterable[Any], bs: int = 100_000, argmax: bool = False) -> Tensor:
    """The network's outputs for every event of ``chunks`` (e.g. :func:`iter_root`), chunk by
    chunk, without gradients and in evaluation mode (restored afterwards).

    Args:
        net: a network or a :class:`~inferno.model_wrapper.ModelWrapper`.
        chunks: :class:`~inferno.data.DataSet` s or arrays of inputs.
        bs: prediction batch size within a chunk.
        argmax: return the hard bin of every event (int64, ``(n,)``) instead of the outputs
            (``(n, n_outputs)``), which keeps memory at one integer per event.

    Returns:
        the outputs (or bins) of all events in order, on the CPU.
    """
    from .templates import hard_bins

    m = _module(net)
    device = next(m.parameters(), torch.empty(0)).device
    out: List[Tensor] = []
    was = m.training
    m.eval()
    try:
        with torch.no_grad():
            for c in chunks:
                x = _x(c).to(device)
                if argmax:
                    out.append(hard_bins(m, x, bs).cpu())
                else:
                    out.extend(m(x[i:i + bs]).cpu() for i in range(0, len(x), bs))
    finally:
        m.train(was)
    if not out:
        raise ValueError("no events: the chunks were empty")
    return torch.cat(out)


def fill_histograms(net: Any, chunks: Union[Iterable[DataSet], Mapping[str, Iterable[DataSet]]],
                    n_bins: Optional[int] = None, weight_variations: Optional[Sequence[str]] = None,
                    names: Optional[Mapping[Any, str]] = None, bs: int = 100_000) -> Counts:
    r"""Templates of the network's hard bins (its argmax), filled chunk by chunk: the sum of
    weights and the sum of squared weights per bin, per process and variation.

    Args:
        net: a network or a :class:`~inferno.model_wrapper.ModelWrapper`.
        chunks: :class:`~inferno.data.DataSet` s (e.g. :func:`iter_root`), the ``"nominal"``
            variation; or ``{variation: chunks}``, e.g. ``{"nominal": iter_root(...),
            "jes_up": iter_root(..., shifted={"pt": "pt_jes_up"}), ...}``.
        n_bins: number of bins (default: the network's output size).
        weight_variations: names of extras that are per-event weights replacing ``w``
            (weight variations); each gives the variation of its name, filled from the
            ``"nominal"`` chunks. Default: every extra column of the nominal chunks.
        names: ``{label: process name}`` to key the result by names instead of labels.
        bs: prediction batch size.

    Returns:
        ``{(process, variation): (sumw, sumw2)}``, two float64 arrays of ``n_bins`` each; the
        process is the event's label ``y`` (an int, or its name), None for chunks without
        labels. Unweighted events count 1. (:func:`inferno.histograms.to_hists` turns this
        into ``hist`` histograms.)
    """
    from .templates import hard_bins

    m = _module(net)
    device = next(m.parameters(), torch.empty(0)).device
    streams = dict(chunks) if isinstance(chunks, Mapping) else {"nominal": chunks}
    out: Dict[Tuple[Any, str], List[Tensor]] = {}
    was = m.training
    m.eval()

    def add(key: Tuple[Any, str], bins: Tensor, w: Optional[Tensor], nb: int) -> None:
        w64 = torch.ones(len(bins), dtype=torch.float64) if w is None else w.reshape(-1).to(torch.float64).cpu()
        acc = out.setdefault(key, [torch.zeros(nb, dtype=torch.float64), torch.zeros(nb, dtype=torch.float64)])
        acc[0].index_add_(0, bins, w64)
        acc[1].index_add_(0, bins, w64 * w64)

    try:
        with torch.no_grad():
            for var, stream in streams.items():
                if not isinstance(var, str) or not var:
                    raise ValueError(f"variations are named by non-empty strings, got {var!r}")
                for c in stream:
                    if not isinstance(c, DataSet):
                        raise ValueError("fill_histograms needs DataSets (e.g. from iter_root), "
                                         f"got {type(c).__name__}")
                    x = c.x.to(device)
                    if n_bins is None:
                        n_bins = int(m(x[:1]).shape[1])
                    bins = hard_bins(m, x, bs).cpu()
                    if int(bins.max()) >= n_bins:
                        raise ValueError(f"the network gives bin {int(bins.max())}, but n_bins is {n_bins}")
                    if c.y is None:
                        groups: List[Tuple[Any, Tensor]] = [(None, torch.arange(len(bins)))]
                    else:
                        y = c.y.reshape(-1).cpu()
                        if not bool((y == y.round()).all()):
                            raise ValueError("fill_histograms needs integer process labels y")
                        groups = [(int(v), (y == v).nonzero().squeeze(-1)) for v in torch.unique(y)]
                    wvars = list(c.extras) if weight_variations is None else list(weight_variations)
                    for lab, rows in groups:
                        proc = lab if names is None or lab is None else names.get(lab, lab)
                        b = bins[rows]
                        add((proc, var), b, None if c.w is None else c.w.reshape(-1).cpu()[rows], n_bins)
                        if var != "nominal":
                            continue
                        for k in wvars:
                            if k not in c.extras:
                                raise ValueError(f"weight variation {k!r} is not among the extras {list(c.extras)}")
                            add((proc, k), b, c.extras[k].cpu()[rows], n_bins)
    finally:
        m.train(was)
    if not out:
        raise ValueError("no events: the chunks were empty")
    return {k: (v[0].numpy(), v[1].numpy()) for k, v in out.items()}
