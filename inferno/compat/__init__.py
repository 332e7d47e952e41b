"""The compatibility layer: pytorch_inferno's names and module paths, as thin layers over the
package's one design.

* :mod:`inferno.compat.two_process`: :class:`Inferno`, :class:`ApproxInferno`,
  :class:`InfernoPred`, the two-process INFERNO callbacks, as builders of an
  :class:`~inferno.loss.Analysis` over :func:`~inferno.loss.inferno_loss` (the paper's versions,
  :class:`~inferno.PaperInferno` and :class:`~inferno.ApproxPaperInferno`, live with the paper,
  :mod:`inferno.paper.callbacks`);
* :mod:`inferno.compat.inference`: ``calc_profile``, ``fit_mle``, ``calc_nll``,
  ``check_coverage`` over :mod:`inferno.likelihood`, on the one-channel model of
  :mod:`inferno.compat.paper_model`; its HistFactory export in
  :mod:`inferno.compat.pyhf_export`;
* :mod:`inferno.compat.interp`: interpolation of normalised templates (``interp_shape``) over
  :mod:`inferno.likelihood.interpolation`;
* :mod:`inferno.compat.callbacks`: the callbacks where pytorch_inferno users import them.

The old module paths stay importable: :data:`MODULE_ALIASES` maps ``inferno.inferno``,
``inferno.inference``, ``inferno.interp`` and ``inferno.pyhf`` to these modules, and
pytorch_inferno's ``inferno.model_wrapper`` and ``inferno.callback`` (and the package's earlier
``inferno.readers``) to their homes in :mod:`inferno.training` and :mod:`inferno.data` (installed
by ``import inferno``, so ``from inferno.inference import calc_profile`` works as before).
"""
import sys
from importlib import import_module
from types import ModuleType

from .two_process import ApproxInferno, Inferno, InfernoPred

__all__ = ["Inferno", "ApproxInferno", "InfernoPred", "MODULE_ALIASES"]

#: old module path -> the module that now holds its names
MODULE_ALIASES = {
    "inferno.inferno": "inferno.compat.callbacks",
    "inferno.inference": "inferno.compat.inference",
    "inferno.interp": "inferno.compat.interp",
    "inferno.pyhf": "inferno.compat.pyhf_export",
    "inferno.model_wrapper": "inferno.training.wrapper",
    "inferno.callback": "inferno.training.callbacks",
    "inferno.readers": "inferno.data.readers",
}


def _install_aliases(package: ModuleType) -> None:
    """Make every old path of :data:`MODULE_ALIASES` import its module (``sys.modules`` and an
    attribute of the package, as a submodule import would)."""
    for old, new in MODULE_ALIASES.items():
        mod = import_module(new)
        sys.modules[old] = mod
        setattr(package, old.rsplit(".", 1)[1], mod)
