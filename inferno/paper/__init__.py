r"""The toy problem of de Castro & Dorigo (arXiv:1806.04743, section 4).

Three features :math:`x = (x_0, x_1, x_2)`, a signal and a background:

.. math::

    f_s(x) &= \mathcal{N}\big((x_0, x_1) \mid (0, 0), I_2\big)\; 2 e^{-2 x_2}, \\
    f_b(x; r, \lambda) &= \mathcal{N}\big((x_0, x_1) \mid (2 + r, 0),
        \mathrm{diag}(5, 9)\big)\; \lambda e^{-\lambda x_2},

with :math:`x_2 \ge 0`, nominal :math:`r = 0`, :math:`\lambda = 3` and expected yields
:math:`s = 50`, :math:`b = 1000`. The expected event density of the extended likelihood is
:math:`\nu(x) = s f_s(x) + b f_b(x; r, \lambda)`; the parameter of interest is :math:`s`.

The package provides seeded samplers, the true densities (numpy, and torch log-densities for
autograd), the Bayes-optimal classifier, the data sets used to train networks, the five
inference benchmarks of the paper (:data:`BENCHMARKS`), the shift of nominal inputs to other
nuisance values (:func:`paper_syst_transform`, :class:`PaperSystMod`) and the lower bound on
the width of :math:`\hat s` that no summary statistic can beat (:func:`analytical_widths`).
"""
from .problem import (PAPER_S, PAPER_B, PAPER_R, PAPER_L, PAPER_PARAMS, sample_signal, sample_background,
                      signal_pdf, background_pdf, signal_log_prob, background_log_prob, optimal_classifier,
                      get_paper_data)
from .limits import PaperBenchmark, BENCHMARKS, paper_fisher_information, analytical_widths
from .systematics import paper_syst_transform, PaperSystMod
from .callbacks import ApproxPaperInferno, PaperInferno, paper_inferno

__all__ = [
    "PaperInferno", "ApproxPaperInferno", "paper_inferno",
    "PAPER_S", "PAPER_B", "PAPER_R", "PAPER_L", "PAPER_PARAMS", "sample_signal", "sample_background",
    "signal_pdf", "background_pdf", "signal_log_prob", "background_log_prob", "optimal_classifier",
    "get_paper_data", "PaperBenchmark", "BENCHMARKS", "paper_fisher_information", "analytical_widths",
    "paper_syst_transform", "PaperSystMod",
]
