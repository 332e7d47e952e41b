"""The two file formats of :mod:`inferno.data.readers`: ROOT trees (uproot) and parquet files
(pyarrow), read in chunks of the requested columns, each problem named by file, tree and branch."""
from __future__ import annotations

import contextlib
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np

from .sources import _require, _Source


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
