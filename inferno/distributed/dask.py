r"""Templates of a trained network over file sets on Dask, and the analysis' Model from them.

:func:`fill_histograms_dask` is :func:`~inferno.data.readers.fill_histograms` over many files:
the files (ROOT via uproot, parquet via pyarrow) are split into tasks, one per file (and
variation read from other branches); every task opens its file with
:func:`~inferno.data.readers.iter_root` / :func:`~inferno.data.readers.iter_parquet`, predicts
its chunks with the network and fills them with ``fill_histograms`` itself; the partial sums are
added in a tree reduction (``split_every`` at a time). The network goes to the workers once: a
CPU copy in evaluation mode, scattered with ``client.scatter`` (a distributed client) or one
``dask.delayed`` object of the graph (the local schedulers).

The result is the ``{(process, variation): (sumw, sumw2)}`` of ``fill_histograms``, equal to one
stream's up to the order of the additions (float64, ~1e-16 relative), and
:func:`~inferno.templates.model_from_histograms` turns it into the analysis' Model;
:func:`analysis_transforms` gives the variations of an :class:`~inferno.loss.Analysis`'s
transform and up/down-input nuisances as transforms of the nominal inputs, and
:func:`analysis_model_dask` does both steps::

    from dask.distributed import Client
    from inferno.distributed.dask import analysis_model_dask
    client = Client(n_workers=8)
    model = analysis_model_dask(analysis, net, {0: bkg_files, 1: sig_files}, "Events", features,
                                weight="w", extras={"id_up": "w_id_up", "id_down": "w_id_down"},
                                client=client)

Dask is optional (``pip install 'inferno[distributed]'``) and imported when a function needs it.
"""
from __future__ import annotations

import copy
import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from ..data.dataset import DataSet
from ..data.readers import fill_histograms, iter_parquet, iter_root
from ..data.readers.sources import Counts, Files, _require, _sources
from ..data.readers.stream import _module

__all__ = ["fill_histograms_dask", "analysis_transforms", "analysis_model_dask", "add_counts"]

Transform = Callable[[Tensor], Tensor]


def add_counts(*parts: Counts) -> Counts:
    """The sum of several ``{(process, variation): (sumw, sumw2)}`` (the union of their keys)."""
    out: Dict[Any, Tuple[np.ndarray, np.ndarray]] = {}
    for part in parts:
        for key, (sw, sw2) in part.items():
            if key in out:
                a, b = out[key]
                if len(a) != len(sw):
                    raise ValueError(f"the histograms of {key!r} have {len(a)} and {len(sw)} bins")
                out[key] = (a + sw, b + sw2)
            else:
                out[key] = (np.array(sw, dtype=np.float64), np.array(sw2, dtype=np.float64))
    return out


def _format(files: Files, fmt: Optional[str]) -> str:
    if fmt is not None:
        if fmt not in ("root", "parquet"):
            raise ValueError(f"fmt must be 'root', 'parquet' or None (from the files' suffix), got {fmt!r}")
        return fmt
    paths: List[str] = []

    def walk(s: Any) -> None:
        if isinstance(s, Mapping):
            for v in s.values():
                walk(v)
        elif isinstance(s, tuple) and len(s) == 2 and isinstance(s[1], str):
            walk(s[0])
        elif isinstance(s, (str, os.PathLike)):
            paths.append(os.fspath(s))
        elif isinstance(s, Sequence):
            for v in s:
                walk(v)

    walk(files)
    kinds = {"root" if p.endswith(".root") else "parquet" if p.endswith((".parquet", ".pq")) else None for p in paths}
    if len(kinds) != 1 or None in kinds:
        raise ValueError(f"cannot tell the format from the files' suffixes ({paths[:3]}...): give fmt='root' or "
                         "fmt='parquet'")
    return kinds.pop()


def _task_files(files: Files, tree: Optional[str], label: Optional[str], root: bool) -> List[Any]:
    """The files as one spec per source file (``path``, ``(path, tree)`` or ``{label: ...}``),
    checked by the readers' own source parsing (existence, trees named)."""
    out = []
    for s in _sources(files, tree, label, None, root):
        spec: Any = (s.path, s.tree) if root else s.path
        out.append(spec if s.label is None else {s.label: spec})
    return out


def _fill_task(net: Any, spec: Any, reader: Dict[str, Any], fmt: str, transforms: Mapping[str, Transform],
               nominal: bool, variation: str, fill_kw: Dict[str, Any]) -> Counts:
    """One task: the chunks of one file, filled by ``fill_histograms`` (with the transformed
    inputs of every transform beside the nominal chunk)."""
    torch.set_num_threads(1)  # tasks run in parallel: one intra-op thread each
    chunks = iter_root(spec, **reader) if fmt == "root" else iter_parquet(spec, **reader)
    parts: List[Counts] = []
    for c in chunks:
        streams: Dict[str, List[DataSet]] = {variation: [c]}
        if nominal:
            for name, t in transforms.items():
                streams[name] = [DataSet(t(c.x), c.y, c.w)]
        parts.append(fill_histograms(net, streams, **fill_kw))
    return add_counts(*parts)


def fill_histograms_dask(net: Any, files: Files, tree: Optional[str], features: Union[str, Sequence[str]],
                         label: Optional[str] = None, weight: Optional[str] = None,
                         extras: Optional[Mapping[str, str]] = None, *, shifted: Optional[Mapping[str, str]] = None,
                         friend: Any = None, variations: Optional[Mapping[str, Mapping[str, Any]]] = None,
                         transforms: Optional[Mapping[str, Transform]] = None, n_bins: Optional[int] = None,
                         weight_variations: Optional[Sequence[str]] = None, names: Optional[Mapping[Any, str]] = None,
                         chunk_size: int = 100_000, bs: int = 100_000, fmt: Optional[str] = None,
                         client: Any = None, split_every: int = 8) -> Counts:
    r""":func:`~inferno.data.readers.fill_histograms` of ``net`` over the files, on Dask.

    Args:
        net: the trained network (or a :class:`~inferno.training.wrapper.ModelWrapper`); a CPU
            copy in evaluation mode is sent to the workers once.
        files, tree, features, label, weight, extras, shifted, friend: what to read, as for
            :func:`~inferno.data.readers.iter_root` (``tree`` None for parquet, as
            :func:`~inferno.data.readers.iter_parquet`): a path, a list of paths, or
            ``{label: paths}``. One task per file.
        variations: ``{name: reader arguments}``: variations read from other branches,
            trees or files, e.g. ``{"jes_up": {"shifted": {"pt": "pt_jes_up"}}}`` (the
            arguments replace those of the nominal read; ``files`` too); one task per file
            each.
        transforms: ``{name: x -> x'}``: variations made from the nominal inputs (e.g. a
            transform nuisance's events moved to its up value, :func:`analysis_transforms`),
            filled in the nominal file's task (one read). Must be picklable for a
            multi-process cluster (``cloudpickle`` takes lambdas).
        n_bins, weight_variations, names, bs: as for ``fill_histograms`` (weight variations
            from the nominal chunks).
        chunk_size: events per chunk within a task.
        fmt: ``'root'`` or ``'parquet'``; None: from the files' suffixes.
        client: a ``dask.distributed.Client``; None: dask's default scheduler (a client made
            current, else the threads of this process).
        split_every: partial results added at a time in the reduction tree.

    Returns:
        ``{(process, variation): (sumw, sumw2)}``, two float64 arrays of ``n_bins`` each, as
        ``fill_histograms`` (equal to one stream's up to rounding).

    Raises:
        ImportError: dask (``pip install 'inferno[distributed]'``) or the reader is missing.
        ValueError: bad arguments (named), and the readers' errors naming the file, tree and
            branch (raised here from the task where they occur).
    """
    dask = _require("dask", "distributed")
    fmt = _format(files, fmt)
    root = fmt == "root"
    if isinstance(split_every, bool) or not isinstance(split_every, int) or split_every < 2:
        raise ValueError(f"split_every must be an integer >= 2, got {split_every!r}")
    transforms = dict(transforms or {})
    variations = {k: dict(v) for k, v in (variations or {}).items()}
    for name in list(transforms) + list(variations):
        if not isinstance(name, str) or not name or name == "nominal":
            raise ValueError(f"variations and transforms are named by non-empty strings other than 'nominal', "
                             f"got {name!r}")
    both = set(transforms) & set(variations)
    if both:
        raise ValueError(f"{sorted(both)} are both in variations and transforms")
    for name, t in transforms.items():
        if not callable(t):
            raise ValueError(f"transforms[{name!r}] must be a callable x -> x', got {type(t).__name__}")
    base = dict(files=files, tree=tree, features=features, label=label, weight=weight, extras=extras,
                shifted=shifted, friend=friend, chunk_size=chunk_size)
    known = set(base)
    for name, kw in variations.items():
        bad = [k for k in kw if k not in known]
        if bad:
            raise ValueError(f"variations[{name!r}]: unknown reader arguments {bad} (known: {sorted(known)})")
    # one CPU copy of the network in evaluation mode: tasks in threads share it (no train/eval toggling)
    m = copy.deepcopy(_module(net)).cpu().eval()
    if n_bins is None:
        n_bins = _n_outputs(m, features)
    fill_kw = dict(n_bins=n_bins, weight_variations=weight_variations, names=names, bs=bs)

    jobs: List[Tuple[Any, Dict[str, Any], bool, str]] = []
    for name, kw in [("nominal", {})] + list(variations.items()):
        r = {**base, **kw}
        rf = r.pop("files")
        if not root:
            r.pop("tree")
        for spec in _task_files(rf, r.get("tree"), r.get("label"), root):
            jobs.append((spec, r, name == "nominal", name))
    if client is not None:
        net_ref = client.scatter(m, broadcast=True, hash=False)
    else:
        net_ref = dask.delayed(m, pure=False)
    delayed = dask.delayed
    parts = [delayed(_fill_task, pure=False)(net_ref, spec, r, fmt, transforms if nom else {}, nom, name, fill_kw)
             for spec, r, nom, name in jobs]
    while len(parts) > 1:
        parts = [delayed(add_counts, pure=False)(*parts[i:i + split_every])
                 for i in range(0, len(parts), split_every)]
    if client is not None:
        return client.compute(parts[0]).result()
    return parts[0].compute()


def _n_outputs(m: torch.nn.Module, features: Union[str, Sequence[str]]) -> int:
    n_in = 1 if isinstance(features, str) else len(list(features))
    p = next(m.parameters(), None)
    dtype = p.dtype if p is not None else torch.float32
    with torch.no_grad():
        return int(m(torch.zeros(1, n_in, dtype=dtype)).shape[1])


class _Shift:
    """The events of a nuisance at a variation, as a picklable transform of the inputs."""

    def __init__(self, nuisance: Any, value: Optional[float], up: bool):
        self.nuisance, self.value, self.up = nuisance, value, up

    def __call__(self, x: Tensor) -> Tensor:
        if self.value is not None:
            return self.nuisance.apply(x, self.value)
        return self.nuisance.up_down(x)[0 if self.up else 1]


def analysis_transforms(analysis: Any) -> Dict[str, Transform]:
    """The variations of ``analysis``'s transform nuisances (the events moved to the nominal
    value :math:`\\pm\\delta`, as :func:`~inferno.templates.analysis_model` moves them) and of
    its up/down-input nuisances, as ``{"<nuisance>_up" / "_down": x -> x'}`` for the
    ``transforms`` of :func:`fill_histograms_dask`. (Weight nuisances need their weights as
    ``extras``; alternative samples are processes of their own labels.)"""
    from ..loss.analysis import _kind
    from ..templates import _transform_scale

    out: Dict[str, Transform] = {}
    for n in analysis.nuisances:
        kind = _kind(n)
        if kind == "transform":
            d = _transform_scale(n)
            out[f"{n.name}_up"], out[f"{n.name}_down"] = _Shift(n, n.nominal + d, True), _Shift(n, n.nominal - d, False)
        elif kind == "inputs":
            out[f"{n.name}_up"], out[f"{n.name}_down"] = _Shift(n, None, True), _Shift(n, None, False)
    return out


def analysis_model_dask(analysis: Any, net: Any, files: Files, tree: Optional[str],
                        features: Union[str, Sequence[str]], label: Optional[str] = None,
                        weight: Optional[str] = None, extras: Optional[Mapping[str, str]] = None, **kwargs: Any):
    """:func:`~inferno.templates.analysis_model` over files on Dask: the templates of every
    process and variation filled by :func:`fill_histograms_dask` (the transforms of
    :func:`analysis_transforms`, the weight variations from ``extras`` named as the weight
    nuisances' ``up`` / ``down``), then :func:`~inferno.templates.model_from_histograms`.

    ``kwargs`` go to :func:`fill_histograms_dask` (``client``, ``chunk_size``, ``variations``
    for variations read from other branches...; ``names`` is not allowed: the processes are
    found by label)."""
    from ..templates import model_from_histograms

    if "names" in kwargs:
        raise ValueError("analysis_model_dask keys the processes by label: do not pass names")
    transforms = {**analysis_transforms(analysis), **dict(kwargs.pop("transforms", None) or {})}
    for name in kwargs.get("variations") or {}:
        transforms.pop(name, None)  # read from files instead
    counts = fill_histograms_dask(net, files, tree, features, label, weight, extras, transforms=transforms, **kwargs)
    return model_from_histograms(analysis, counts)
