"""inferno.likelihood: one statistical model with HistFactory semantics, used by every
measurement (fits, profile scans, intervals, toys, coverage) and by the pyhf and HS3 round trips.

    >>> from inferno.likelihood import Model, from_pyhf, fit, profile
"""
from .fit import ConvergenceWarning, FitResult, ProfileResult, fit, profile, profile2d
from .intervals import get_interval, get_likelihood_width
from .model import Channel, Model, Sample
from .modifiers import HistoSys, Lumi, NormFactor, NormSys, ShapeFactor, ShapeSys, StatError
from .parameters import Parameter
from .toys import CoverageResult, coverage, toys
from .workspace import from_pyhf, pyhf_modifier_settings, to_pyhf
from .hs3 import from_hs3, to_hs3

__all__ = [
    # the model
    "Model", "Channel", "Sample", "Parameter",
    "NormFactor", "NormSys", "HistoSys", "Lumi", "StatError", "ShapeSys", "ShapeFactor",
    # measurements
    "fit", "profile", "profile2d", "FitResult", "ProfileResult", "ConvergenceWarning",
    "get_interval", "get_likelihood_width", "toys", "coverage", "CoverageResult",
    # HistFactory JSON (pyhf)
    "from_pyhf", "to_pyhf", "pyhf_modifier_settings",
    # HS3 (HEP Statistics Serialization Standard)
    "to_hs3", "from_hs3",
]
