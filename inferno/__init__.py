"""inferno: inference-aware training of summary statistics (INFERNO) in PyTorch.

The front door: the names a user needs, imported explicitly. The packages behind it:

* :mod:`inferno.likelihood` -- the statistical model (HistFactory) and every measurement on it;
* :mod:`inferno.loss` -- the INFERNO loss of an analysis;
* :mod:`inferno.nuisance` -- what a systematic does to events;
* :mod:`inferno.data`, :mod:`inferno.training.wrapper`, :mod:`inferno.training.callbacks` -- training;
* :mod:`inferno.templates`, :mod:`inferno.data.readers`, :mod:`inferno.histograms`,
  :mod:`inferno.export`, :mod:`inferno.plotting` -- templates, file formats, ONNX, figures;
* :mod:`inferno.compat` -- the pytorch_inferno-style names (two-process callbacks, the
  measurement API of ``inferno.inference``, ``inferno.interp``), importable from their old paths;
* :mod:`inferno.paper` -- the paper's toy problem and the ``inferno-paper`` command;
  :mod:`inferno.htautau` -- a generated H -> tau tau-like search and ``inferno-bench``.

See ``docs/`` for the user guide.
"""
import sys as _sys

from ._version import __version__
from . import compat, likelihood, loss, plotting  # noqa: F401  (subpackages: inferno.likelihood.fit, ...)
from .training.callbacks import (AbsCallback, Checkpoint, EarlyStopping, GradClip, KeepBest, LossTracker, LRScheduler,
                       OneCycle, PredHandler, ProgressBar, SaveBest)
from .data import DataPair, DataSet, StratifiedLoader, StreamingLoader, WeightedDataLoader, to_tensor
from .compat.inference import (CoverageResult, FitResult, ProfileResult, bin_preds, calc_nll, calc_profile,
                        check_coverage, fit_mle, generate_toys, get_interval, get_likelihood_width,
                        get_paper_syst_shapes, get_shape, get_syst_shapes, nll_offset, paper_model, pyhf_model,
                        PYHF_INTERP_CODES,
                        sample_global_obs, to_pyhf_workspace)
from .compat.interp import INTERP_CODES, interp_deltas, interp_derivatives, interp_shape
from .likelihood import ConvergenceWarning
from .compat import ApproxInferno, Inferno, InfernoPred
from .loss import Analysis, InfernoLoss, Process, inferno_loss
from .training.wrapper import ModelWrapper
from .nn import VariableSoftmax
from .nuisance import (AltSampleNuisance, ColumnTransform, Nuisance, RateNuisance, ShapeNuisance, WeightNuisance,
                       constraint_curvature, scale_feature, shift_feature)
from .paper import (BENCHMARKS, PAPER_B, PAPER_L, PAPER_PARAMS, PAPER_R, PAPER_S, ApproxPaperInferno, PaperBenchmark,
                    PaperInferno, PaperSystMod, analytical_widths, background_log_prob, background_pdf, get_paper_data,
                    optimal_classifier, paper_fisher_information, paper_inferno, paper_syst_transform,
                    sample_background, sample_signal, signal_log_prob, signal_pdf)
from .templates import analysis_model

__all__ = [
    "__version__",
    # training
    "DataSet", "WeightedDataLoader", "StratifiedLoader", "StreamingLoader", "DataPair", "to_tensor", "ModelWrapper", "VariableSoftmax",
    "AbsCallback", "LossTracker", "EarlyStopping", "SaveBest", "KeepBest", "Checkpoint", "PredHandler", "GradClip",
    "ProgressBar", "LRScheduler", "OneCycle",
    # systematics and the INFERNO loss
    "Nuisance", "ShapeNuisance", "WeightNuisance", "AltSampleNuisance", "RateNuisance", "ColumnTransform",
    "shift_feature", "scale_feature", "constraint_curvature", "Analysis", "Process", "inferno_loss", "InfernoLoss", "Inferno", "ApproxInferno",
    "InfernoPred", "analysis_model",
    # the pytorch_inferno-style measurement API
    "bin_preds", "get_shape", "get_syst_shapes", "get_paper_syst_shapes", "paper_model", "calc_nll",
    "calc_profile", "fit_mle", "ProfileResult", "FitResult", "ConvergenceWarning", "get_likelihood_width",
    "get_interval", "generate_toys", "sample_global_obs", "check_coverage", "CoverageResult",
    "to_pyhf_workspace", "pyhf_model", "nll_offset", "PYHF_INTERP_CODES", "interp_shape", "interp_deltas",
    "interp_derivatives", "INTERP_CODES",
    # the paper's problem (also in inferno.paper; kept here for pytorch_inferno-style code)
    "get_paper_data", "PaperInferno", "ApproxPaperInferno", "paper_inferno", "PaperSystMod",
    "paper_syst_transform", "BENCHMARKS", "PaperBenchmark", "analytical_widths", "paper_fisher_information",
    "optimal_classifier", "sample_signal", "sample_background", "signal_pdf", "background_pdf", "signal_log_prob",
    "background_log_prob", "PAPER_S", "PAPER_B", "PAPER_R", "PAPER_L", "PAPER_PARAMS",
    # subpackages
    "likelihood", "loss", "plotting",
]

compat._install_aliases(_sys.modules[__name__])  # inferno.inferno, inferno.inference, ... (pytorch_inferno's paths)
