r"""Data-parallel INFERNO on ``torch.distributed``: the loss of a global batch split over
processes (ranks).

The INFERNO loss is a function of a whole batch (the soft histograms of all its events), so
averaging per-rank losses, as plain data-parallel training does, would optimise another
objective. Here every rank holds a shard of the global batch; the batch's sums over events
(per-process counts and summed weights, soft histograms, the derivative templates' sums,
the MC statistics' sums of squared weights) are summed over the ranks differentiably before
anything else (:func:`global_sum`, one collective per batch), and every rank computes the
same loss, that of the global batch, and back-propagates through its own events.

Gradients: the sum's backward gives every rank the sum of the ranks' upstream gradients,
which are identical (the same loss of the same sums: ``world_size`` times this rank's, no
communication needed), so each rank's parameter gradient is ``world_size`` times its events' share of the global
gradient; *averaging* the ranks' gradients, as ``DistributedDataParallel`` does, or as
:class:`GradientSync` does for :class:`~inferno.ModelWrapper`, then gives exactly the
single-process gradient of the global batch.

Usage (``torchrun --nproc_per_node=2 train.py``; gloo on CPU, NCCL on GPU)::

    import torch.distributed as dist
    from inferno.distributed import GradientSync, ShardedLoader, global_sum
    dist.init_process_group("gloo")
    loss = InfernoLoss(analysis, reduce=global_sum())
    trn = ShardedLoader(StratifiedLoader(train_set, 4000, seed=1))   # the same seed on every rank
    wrapper.fit(epochs, DataPair(trn, ShardedLoader(...)), opt, None, cbs=[GradientSync(), loss])
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, Optional

import torch
from torch import Tensor

from ..training.callbacks import AbsCallback, GradClip

__all__ = ["global_sum", "GradientSync", "ShardedLoader", "rank_and_size"]


def _dist():
    import torch.distributed as dist
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("torch.distributed is not initialised: call torch.distributed.init_process_group "
                           "(e.g. under torchrun) before using inferno.distributed")
    return dist


def rank_and_size(group: Any = None) -> tuple:
    """``(rank, world_size)`` of this process in ``group`` (default: the world)."""
    dist = _dist()
    return dist.get_rank(group), dist.get_world_size(group)


#: on gloo, sums over the ranks of at most this many numbers (times the ranks) are all-gathers
_GATHER_MAX = 1 << 22


def _rank_sum(t: Tensor, group: Any) -> Tensor:
    """The sum of ``t`` over the ranks of ``group``, the same numbers on every rank. On gloo, for
    up to a few million numbers gathered, an all-gather and a sum in rank order: gloo's
    all-reduce of a few hundred to a few ten thousand numbers takes 0.8-2 ms between two
    processes on two cores, its all-gather 0.3-0.8 ms (one collective per batch in each
    direction, so it counts); ``all_reduce`` otherwise (NCCL, large gradients, many ranks)."""
    dist = _dist()
    t = t.detach().contiguous()
    world = dist.get_world_size(group)
    if dist.get_backend(group) == "gloo" and world * t.numel() <= _GATHER_MAX:
        parts = [torch.empty_like(t) for _ in range(world)]
        dist.all_gather(parts, t, group=group)
        return torch.stack(parts).sum(0)
    out = t.clone()
    dist.all_reduce(out, group=group)
    return out


class _GlobalSum(torch.autograd.Function):
    """Sum over the ranks. The backward: with ``same_loss`` every rank differentiates the same
    function of the sums (the loss of the global batch), so the sum of the ranks' gradients is
    ``world_size`` times this rank's, without communication; else they are summed over the
    ranks (the semantics of ``torch.distributed.nn``'s all-reduce, deprecated in torch 2.13)."""

    @staticmethod
    def forward(ctx, t: Tensor, group: Any, same_loss: bool) -> Tensor:  # type: ignore[override]
        ctx.group, ctx.same_loss = group, same_loss
        return _rank_sum(t, group)

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        if ctx.same_loss:
            return g * _dist().get_world_size(ctx.group), None, None
        return _rank_sum(g, ctx.group), None, None


def global_sum(group: Any = None, same_loss: bool = True) -> Callable[[Tensor], Tensor]:
    """A differentiable sum over the ranks of ``group`` (default: the world), whose backward
    gives every rank the sum of the ranks' gradients (see the module docstring), for
    ``InfernoLoss(analysis, reduce=global_sum())`` and :func:`~inferno.loss.inferno_loss`.

    ``same_loss`` (default): every rank computes the same function of the sums, as the INFERNO
    loss of the global batch is; the backward then needs no communication (the ranks' gradients
    are equal). ``False``: for a function of the sums that differs between ranks; the backward
    sums the gradients over the ranks (one more collective per batch).
    """
    _dist()
    return lambda t: _GlobalSum.apply(t, group, same_loss)


class GradientSync(AbsCallback):
    """Data-parallel training with :class:`~inferno.ModelWrapper`, as
    ``DistributedDataParallel`` does it: at the start of ``fit`` every rank gets rank 0's
    parameters and buffers; after every backward pass the gradients are averaged over the
    ranks, so every rank takes the same optimiser step. Put it before any callback that reads
    the gradients (e.g. :class:`~inferno.GradClip`: an error otherwise).

    Args:
        group: the process group (default: the world).
    """

    def __init__(self, group: Any = None):
        self.group = group

    def on_train_begin(self) -> None:
        dist = _dist()
        cbs = list(self.wrapper.cbs)
        me = next(i for i, c in enumerate(cbs) if c is self)
        early = [type(c).__name__ for c in cbs[:me] if isinstance(c, GradClip)]
        if early:
            raise ValueError(f"GradientSync must come before {early} in cbs: they read the gradients, which are "
                             "those of one rank until GradientSync averages them")
        src = dist.get_global_rank(self.group, 0) if self.group is not None else 0
        with torch.no_grad():
            for t in [*self.wrapper.model.parameters(), *self.wrapper.model.buffers()]:
                dist.broadcast(t.data, src=src, group=self.group)

    def on_backwards_end(self) -> None:
        dist = _dist()
        size = dist.get_world_size(self.group)
        grads = [p.grad for p in self.wrapper.model.parameters() if p.grad is not None]
        if not grads:
            return
        flat = _rank_sum(torch.cat([g.reshape(-1) for g in grads]), self.group)  # one collective for all
        flat /= size
        pos = 0
        for g in grads:
            g.copy_(flat[pos:pos + g.numel()].view_as(g))
            pos += g.numel()


class ShardedLoader:
    """This rank's shard of every batch of ``loader``: rows ``rank, rank + world_size, ...``
    of each batch (the loader must give the same batches on every rank: the same data and
    shuffling seed). Every rank has the same number of batches; a stratified loader's batches
    (every process present) are split across the ranks, and a shard may lack a small process
    (the loss sums over the ranks first, :func:`global_sum`).

    Args:
        loader: a loader of ``(x, y, w[, extras])`` batches, e.g. a
            :class:`~inferno.WeightedDataLoader`.
        rank, world_size: default: this process's in the world group.
    """

    def __init__(self, loader: Any, rank: Optional[int] = None, world_size: Optional[int] = None):
        if rank is None or world_size is None:
            r, s = rank_and_size()
            rank = r if rank is None else rank
            world_size = s if world_size is None else world_size
        if not 0 <= int(rank) < int(world_size):
            raise ValueError(f"rank must be in [0, world_size = {world_size}), got {rank}")
        self.loader, self.rank, self.world_size = loader, int(rank), int(world_size)
        self.dataset = getattr(loader, "dataset", None)
        self.batch_size = getattr(loader, "batch_size", None)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        r, n = self.rank, self.world_size
        batches = getattr(self.loader, "index_batches", None)
        if batches is not None and self.dataset is not None:  # this rank's rows only are gathered
            for idx in batches():
                if isinstance(idx, slice):  # composed as Python ranges compose them: still a view
                    rg = range(len(self.dataset))[idx][r::n]
                    idx = slice(rg.start, rg.stop, rg.step)
                else:
                    idx = idx[r::n]
                yield self.dataset[idx]
            return
        sl = slice(r, None, n)
        for batch in self.loader:
            x, y, w = batch[:3]
            out = (x[sl], None if y is None else y[sl], None if w is None else w[sl])
            yield out + ({k: v[sl] for k, v in batch[3].items()},) if len(batch) > 3 else out
