"""Compatibility: the pytorch_inferno-style HistFactory export now lives in
:mod:`inferno.inference` (``to_pyhf_workspace``, ``pyhf_model``, ``nll_offset``), the general
one in :mod:`inferno.likelihood` (``to_pyhf``, ``from_pyhf``)."""
from .inference import PYHF_INTERP_CODES, nll_offset, pyhf_model, to_pyhf_workspace

__all__ = ["to_pyhf_workspace", "pyhf_model", "nll_offset", "PYHF_INTERP_CODES"]
