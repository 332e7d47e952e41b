"""Benchmark problems with the structure of real analyses.

* :mod:`inferno.benchmarks.htautau`: a Higgs to tau tau-like search, a seeded generator of
  weighted events with energy scales, a weight systematic, alternative samples, rate
  uncertainties, limited MC statistics and negative weights (toy numbers);
* :mod:`inferno.benchmarks.kinematics`: the vectorised four-momentum helpers it uses;
* :mod:`inferno.benchmarks.analysis`: the INFERNO :class:`~inferno.loss.Analysis` of that search
  (signal region learned, a ttbar control region fixed) and its data sets;
* :mod:`inferno.benchmarks.run`: the ``inferno-bench`` command (BCE vs multiclass vs INFERNO,
  widths on Asimov data, coverage under shifted nuisances), with its networks and summaries in
  :mod:`inferno.benchmarks.summaries` and its table and figures in
  :mod:`inferno.benchmarks.report`.

The submodules are imported on demand: ``from inferno.benchmarks import htautau``.
"""
__all__ = ["htautau", "kinematics", "analysis", "summaries", "report", "run"]
