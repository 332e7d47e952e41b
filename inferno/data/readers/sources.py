"""Where the events of :mod:`inferno.data.readers` come from: the files (trees) of every process,
checked and named, and the optional imports of uproot and pyarrow."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np



PathLike = Union[str, os.PathLike]
Files = Union[PathLike, Sequence[Any], Mapping[Any, Any]]
Counts = Dict[Tuple[Any, str], Tuple[np.ndarray, np.ndarray]]


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
