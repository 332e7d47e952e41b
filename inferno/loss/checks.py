"""The checks of a batch of the INFERNO loss, and the errors that name what is wrong with one.

The loss folds every check into one flag read once per batch (:func:`_soft_ok` and the
checks in :func:`inferno.loss.pure._loss`); only a failing batch is examined again here to
name the problem (:func:`_diagnose`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Tuple

import torch
from torch import Tensor

from .fisher import FisherError

if TYPE_CHECKING:  # pragma: no cover
    from .analysis import Analysis

__all__ = ["soft_outputs_check"]


def soft_outputs_check(y: Tensor, tol: float = 1e-3) -> None:
    """The network output must be soft bin assignments: shape (n_events, n_bins >= 2), rows
    summing to 1 (the network ends in a softmax, e.g. ``VariableSoftmax``)."""
    _check_shape(y)
    if not bool(_soft_ok(y, tol)):
        _diagnose_outputs(y, tol)


def _check_shape(y: Tensor) -> None:
    if y.ndim != 2 or y.shape[1] < 2:
        raise ValueError(f"the network output must have shape (n_events, n_bins >= 2) (soft bin "
                         f"assignments, e.g. from VariableSoftmax), got {tuple(y.shape)}")


def _soft_ok(y: Tensor, tol: float = 1e-3) -> Tensor:
    """Rows sum to 1 and no output is below -tol (NaN and inf fail both comparisons)."""
    yd = y.detach()
    return ((yd.sum(1) - 1).abs().max() <= tol) & (yd.min() >= -tol)


def _diagnose_outputs(y: Tensor, tol: float = 1e-3) -> None:
    if not bool(torch.isfinite(y).all()):
        raise ValueError("the network output contains NaN or inf: cannot compute the INFERNO loss "
                         "(diverged training? try a lower learning rate or GradClip)")
    s = y.detach().sum(1)
    bad = ((s - 1).abs() > tol) | (y.detach() < -tol).any(1)
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        raise ValueError(f"the network output must be soft bin assignments (non-negative, each row summing "
                         f"to 1): row {i} sums to {float(s[i]):.6g}. End the network in a softmax, e.g. "
                         "inferno.VariableSoftmax(0.1), not a ReLU or raw logits")


def _check_batch(x: Tensor, process: Tensor, w: Optional[Tensor]) -> Tuple[Tensor, Optional[Tensor]]:
    labels = process.reshape(-1)
    if len(labels) != len(x):
        raise ValueError(f"process has {len(labels)} labels for {len(x)} events")
    if labels.is_floating_point():
        labels = labels.long()
    if w is not None:
        w = w.reshape(-1)
        if len(w) != len(x):
            raise ValueError(f"w has {len(w)} weights for {len(x)} events")
    return labels, w


def _diagnose(analysis: "Analysis", b: Dict[str, Any], labels: Tensor, y: Tensor, count: Tensor, sumw: Tensor,
              nom: Tensor, nu: Tensor, fisher: Tensor) -> None:
    """Raise the error that names what is wrong with a batch whose checks failed."""
    procs = analysis.processes
    known = torch.isin(labels, torch.tensor(list(analysis._slot_of), device=labels.device))
    if not bool(known.all()):
        bad = sorted(set(labels[~known].tolist()))
        raise ValueError(f"events with labels {bad[:10]} belong to no process (process labels "
                         f"{[p.label for p in procs]}, alternative samples {sorted(analysis._alt_labels)})")
    _diagnose_outputs(y)
    for j, p in enumerate(procs):
        if float(count[j]) == 0:
            raise ValueError(f"the batch has no events of process {p.name!r} (label {p.label}): every batch "
                             "must contain every process (shuffle the data or use larger batches)")
        if not float(sumw[j]) > 0:
            raise ValueError(f"the summed weight of process {p.name!r} in the batch is {float(sumw[j]):.6g}: it "
                             "must be > 0 (negative weights are allowed, but not a non-positive total)")
    for lab in sorted(analysis._alt_labels):
        s = analysis._slot_of[lab]
        if float(count[s]) == 0 or not float(sumw[s]) > 0:
            name = next(n.name for n in analysis.nuisances if lab in getattr(n, "labels", ()))
            raise ValueError(f"the batch has no events of the alternative sample {lab} of nuisance {name!r}"
                             + ("" if float(count[s]) == 0 else f" with a positive summed weight ({float(sumw[s]):.6g})"))
    if not bool((nu > 0).all()):
        i = int((nu <= 0).nonzero()[0])
        if float(nu[i]) == 0 and not bool((nom < 0).any()):
            raise ValueError(f"bin {i} of the learned channel is empty (expected count 0): without a floor "
                             f"(eps={analysis.eps}) every bin needs events; use eps > 0")
        worst = int(nom[:, i].argmin())
        raise ValueError(f"bin {i} of the learned channel has expected count {float(nu[i]):.6g} <= 0 (process "
                         f"{procs[worst].name!r} contributes {float(nom[worst, i]):.6g}): negative weights "
                         "must not make a bin's total negative")
    names = b["names"]
    if not bool(torch.isfinite(fisher).all()):
        raise FisherError(f"the Fisher information is not finite:\n{fisher.detach().cpu().numpy()}")
    ev = torch.linalg.eigvalsh(fisher.detach()).cpu().numpy()
    raise FisherError(
        f"the Fisher information of ({', '.join(names)}) is not positive definite, or numerically singular "
        f"(eigenvalues {ev}): a free parameter that does not change the expected counts, or "
        "parameters whose effects are degenerate, leave the POI variance undefined; constrain "
        f"them or remove them.\nFisher information:\n{fisher.detach().cpu().numpy()}")


def _weight_column(weights: Mapping[str, Tensor], key: str, n: int, name: str) -> Tensor:
    if key not in weights:
        raise ValueError(f"weight nuisance {name!r} needs the per-event weights {key!r}; the batch has "
                         f"{sorted(weights)}")
    t = weights[key].reshape(-1)
    if len(t) != n:
        raise ValueError(f"weights {key!r} of nuisance {name!r} have {len(t)} entries for {n} events")
    return t
