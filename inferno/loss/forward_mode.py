"""Forward-mode derivatives (:mod:`torch.autograd.forward_ad`) through modules without an exact
tangent rule: an input stage, a leaf inside a recorded body, or a whole arbitrary network
(:mod:`inferno.loss.tangents`). When the tangents are differentiated again (training),
``softmax`` and ``log_softmax`` are computed as their composite inside the pass: their native
forward-mode formula modifies a tensor that the backward pass needs (pytorch/pytorch#162350,
open in torch 2.13).
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
from torch import Tensor
from torch.autograd import forward_ad as fwAD
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

__all__ = ["dual_pass", "jvp"]


class _ComposedSoftmax(TorchFunctionMode):
    """softmax and log_softmax as their composite (max shift, exp, sum) inside a forward-mode
    pass whose tangents are differentiated again: their native forward-mode formula modifies a
    tensor that the backward pass needs (pytorch/pytorch#162350, open in torch 2.13)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        log = func in _LOG_SOFTMAX
        dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
        if not (log or func in _SOFTMAX) or dim is None:
            return func(*args, **kwargs)
        x = args[0] if kwargs.get("dtype") is None else args[0].to(kwargs["dtype"])
        z = x - x.detach().amax(dim, keepdim=True)
        if log:
            return z - z.exp().sum(dim, keepdim=True).log()
        e = z.exp()
        return e / e.sum(dim, keepdim=True)


_SOFTMAX = {F.softmax, torch.softmax, Tensor.softmax, torch.special.softmax}
_LOG_SOFTMAX = {F.log_softmax, torch.log_softmax, Tensor.log_softmax, torch.special.log_softmax}


@contextlib.contextmanager
def dual_pass(graph: bool) -> Iterator[None]:
    """The context of a forward-mode pass: a dual level, with :class:`_ComposedSoftmax` when
    the tangents are differentiated again (``graph``)."""
    with fwAD.dual_level(), (_ComposedSoftmax() if graph else contextlib.nullcontext()):
        yield


def jvp(f: Callable[[Tensor], Tensor], x: Tensor, t: Tensor, with_graph: bool) -> Tensor:
    """Forward-mode derivatives of ``f`` at ``x`` along the K tangents ``t`` ``(K, *x.shape)``,
    ``(K, *f(x).shape)``; ``with_graph``: differentiable in ``f``'s parameters."""
    outs = []
    graph = with_graph and torch.is_grad_enabled()
    with torch.set_grad_enabled(graph):
        for tk in t:
            with dual_pass(graph):
                o = f(fwAD.make_dual(x, tk))
                outs.append(fwAD.unpack_dual(o).tangent)
    return torch.stack(outs)
