"""Streaming through files larger than memory: predictions chunk by chunk
(:func:`predict_in_chunks`) and template filling (:func:`fill_histograms`: sums of weights and of
squared weights per bin, process and variation)."""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from ..dataset import DataSet
from .sources import Counts


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
        net: a network or a :class:`~inferno.training.wrapper.ModelWrapper`.
        chunks: :class:`~inferno.data.DataSet` s or arrays of inputs.
        bs: prediction batch size within a chunk.
        argmax: return the hard bin of every event (int64, ``(n,)``) instead of the outputs
            (``(n, n_outputs)``), which keeps memory at one integer per event.

    Returns:
        the outputs (or bins) of all events in order, on the CPU.
    """
    from ...templates import hard_bins

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
        net: a network or a :class:`~inferno.training.wrapper.ModelWrapper`.
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
    from ...templates import hard_bins

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
