r"""Training on data larger than memory: batches from a stream of chunks (the chunked readers
:func:`~inferno.data.readers.iter_parquet` / :func:`~inferno.data.readers.iter_root`), through
a shuffle buffer of bounded size.

The stream fills a buffer of at most ``buffer_size`` events (a multiple of the batch size),
which is shuffled and dealt into batches exactly as the in-memory loaders do it
(:class:`~inferno.data.WeightedDataLoader`, or :class:`~inferno.data.StratifiedLoader`: every
label in every batch, in the same proportion), with one random generator for the whole
epoch; then the next buffer. The next buffers are read and prepared ahead by a background
thread (``prefetch`` of them; the readers decode outside Python's GIL, so reading overlaps the
training on another core). Memory: ``prefetch + 2`` buffers (the one dealt, those read ahead,
the one being filled) and one chunk; ``prefetch=0``: one buffer and one chunk. The thread ends
with the iteration (an epoch's end, or the iterator closed or collected). A buffer that holds every
event gives exactly the in-memory loader's batches (the same seed, the same epochs); an
unshuffled stream gives them for any buffer. Shuffling happens within a buffer: make the
buffer large against any ordering of the files (e.g. one process per file: interleave the
files' chunks, or use a buffer of several files).

Data-parallel training: wrap it in :class:`~inferno.distributed.ShardedLoader` (every rank
streams the same files with the same seed and keeps its rows of every batch).
"""
from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Iterable, Iterator, List, Optional

import torch

from .dataset import DataSet, StratifiedLoader, WeightedDataLoader, _check_count

__all__ = ["StreamingLoader"]


class StreamingLoader:
    """Batches of ``(x, y, w[, extras])`` from a stream of :class:`~inferno.data.DataSet` chunks.

    Args:
        chunks: a callable returning a new iterable of chunks for every epoch, e.g.
            ``lambda: iter_parquet(files, features, label="process", weight="w", chunk_size=100_000)``.
        batch_size: events per batch.
        shuffle: shuffle every buffer (a new permutation per buffer and epoch, from one
            generator seeded with ``seed``).
        stratify: deal every buffer into batches that hold every label in the same proportion
            (:class:`~inferno.data.StratifiedLoader`; INFERNO needs every process in every
            batch); the labels ``y`` are then required.
        buffer_size: events held at once (rounded down to a multiple of ``batch_size``, at
            least one batch).
        n_events: the number of events of the stream, for ``len()`` (the number of batches
            an epoch has); None: counted by reading the stream once, when first needed.
        seed: seed of the shuffling generator (None: fresh entropy).
        prefetch: buffers read ahead in a background thread (0: read in the caller's thread).

    Attributes:
        peak_buffer: the largest number of events a buffer has held so far (at most
            ``buffer_size``).
    """

    def __init__(self, chunks: Callable[[], Iterable[DataSet]], batch_size: int, shuffle: bool = False,
                 stratify: bool = False, buffer_size: int = 1_000_000, n_events: Optional[int] = None,
                 seed: Optional[int] = None, prefetch: int = 1):
        if not callable(chunks):
            raise TypeError("chunks must be a callable returning an iterable of DataSet chunks (one per epoch), "
                            f"got {type(chunks).__name__}")
        self.chunks = chunks
        self.batch_size = _check_count(batch_size, "batch_size")
        cap = _check_count(buffer_size, "buffer_size")
        self.buffer_size = max(self.batch_size, cap // self.batch_size * self.batch_size)
        self.shuffle, self.stratify = shuffle, stratify
        self.n_events = None if n_events is None else _check_count(n_events, "n_events")
        self.generator = torch.Generator()
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(int(seed))
        self.peak_buffer = 0
        self.dataset = None  # no in-memory data set
        if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 0:
            raise ValueError(f"prefetch must be an integer >= 0 (buffers read ahead), got {prefetch!r}")
        self.prefetch = prefetch

    def _buffers(self) -> Iterator[DataSet]:
        """The stream cut into buffers of ``buffer_size`` events (the last one shorter)."""
        cap = self.buffer_size
        parts: List[tuple] = []
        n = 0
        for i, ch in enumerate(self.chunks()):
            if not isinstance(ch, DataSet):
                raise TypeError(f"chunk {i} of the stream is a {type(ch).__name__}, not a DataSet")
            start = 0
            while start < len(ch):
                take = min(cap - n, len(ch) - start)
                parts.append(ch[start:start + take])
                n += take
                start += take
                if n == cap:
                    yield self._join(parts)
                    parts, n = [], 0
        if n:
            yield self._join(parts)

    def _join(self, parts: List[tuple]) -> DataSet:
        def cat(j: int) -> Any:
            if parts[0][j] is None:
                return None
            return torch.cat([p[j] for p in parts])

        ds = DataSet.__new__(DataSet)  # the chunks were checked by their reader
        ds.x, ds.y, ds.w = cat(0), cat(1), cat(2)
        ds.extras = {k: torch.cat([p[3][k] for p in parts]) for k in parts[0][3]} if len(parts[0]) > 3 else {}
        self.peak_buffer = max(self.peak_buffer, len(ds.x))
        return ds

    def _loader(self, buf: DataSet) -> WeightedDataLoader:
        dl = (StratifiedLoader(buf, self.batch_size, shuffle=self.shuffle, seed=0) if self.stratify
              else WeightedDataLoader(buf, self.batch_size, shuffle=self.shuffle, seed=0))
        dl.generator = self.generator  # one random stream for the whole epoch
        return dl

    def __iter__(self) -> Iterator[Any]:
        # the buffers and their loaders are made ahead; the loaders draw from the one generator
        # only when iterated, here, in order
        for dl in _read_ahead((self._loader(buf) for buf in self._buffers()), self.prefetch):
            yield from dl

    def _batches_in(self, n: int) -> int:
        if self.stratify:
            return max(1, int(round(n / self.batch_size)))
        return -(-n // self.batch_size)

    def __len__(self) -> int:
        if self.n_events is None:
            self.n_events = sum(len(ch) for ch in self.chunks())
        full, rest = divmod(self.n_events, self.buffer_size)
        return full * self._batches_in(self.buffer_size) + (self._batches_in(rest) if rest else 0)


_DONE = object()


def _read_ahead(chunks: Iterable[Any], depth: int) -> Iterator[Any]:
    """The items of ``chunks``, produced up to ``depth`` ahead by a background thread; its
    error is raised here, where the item would have come; stopping early stops the thread."""
    if depth == 0:
        yield from chunks
        return
    q: "queue.Queue[Any]" = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in chunks:
                if not put((item, None)):
                    return
        except BaseException as e:  # handed to the consumer
            put((_DONE, e))
            return
        put((_DONE, None))

    th = threading.Thread(target=work, name="inferno-read-ahead", daemon=True)
    th.start()
    try:
        while True:
            item, err = q.get()
            if item is _DONE:
                if err is not None:
                    raise err
                return
            yield item
    finally:
        stop.set()
        th.join()
