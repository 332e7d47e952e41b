"""inferno.explain: what a trained summary learned, in units of the measurement.

* :mod:`~inferno.explain.importance`: permutation importance of the inputs (or groups of
  columns) as the increase of the expected uncertainty of the POI, every nuisance profiled
  and statistics only, on the concrete model rebuilt from shuffled held-out events;
* :mod:`~inferno.explain.attributions`: gradient x input, integrated gradients (with their
  completeness error) and occlusion, of the soft bin assignments and of the INFERNO loss,
  averaged per bin and process;
* :mod:`~inferno.explain.nuisances`: the relative shift of every process's template per bin
  for every nuisance, from the loss's derivative templates and from the concrete model's
  variations, and the ranking of the systematics by their impact on the POI variance
  (the Fisher information at the Asimov point);
* :func:`explain_report`: all of it for several summaries, figures and a markdown table in a
  folder. The figures are in :mod:`inferno.plotting` (bins in :func:`purity_order`).

See ``docs/explain.md``.

    >>> from inferno.explain import permutation_importance, nuisance_ranking, explain_report
"""
from ..plotting import PURITY_LABEL, purity_order
from .attributions import (IG_RULES, IGResult, attribution_matrix, attribution_table, attribution_target,
                           gradient_x_input, integrated_gradients, loss_gradient_x_input, loss_occlusion, occlusion)
from .importance import (WIDTH_METHODS, WITHIN, BinnedSummary, ImportanceResult, as_summary, expected_widths,
                         group_by_object, permutation_importance, resolve_groups)
from .nuisances import (SoftTemplates, asimov_hessian, default_groups, loss_nuisance_map, model_nuisance_map,
                        nuisance_ranking, soft_templates)
from .report import explain_report, learned_purity

__all__ = [
    # permutation importance
    "permutation_importance", "ImportanceResult", "expected_widths", "WIDTH_METHODS", "WITHIN", "BinnedSummary",
    "as_summary", "group_by_object", "resolve_groups",
    # attributions
    "gradient_x_input", "integrated_gradients", "IGResult", "IG_RULES", "occlusion", "loss_gradient_x_input",
    "loss_occlusion", "attribution_matrix", "attribution_table", "attribution_target",
    # nuisances
    "soft_templates", "SoftTemplates", "loss_nuisance_map", "model_nuisance_map", "nuisance_ranking",
    "asimov_hessian", "default_groups",
    # report
    "explain_report", "learned_purity", "purity_order", "PURITY_LABEL",
]
