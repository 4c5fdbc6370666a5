"""Statistics shared by studies, cad, xai and metrics: arrays in, numbers out.

* :mod:`~mame_eval.stats.roc` — empirical ROC, AUROC, DeLong / jackknife (co)variances, cut-offs,
  equivalence to chance;
* :mod:`~mame_eval.stats.mrmc` — Obuchowski-Rockette multi-reader multi-case analysis (Hillis df);
* :mod:`~mame_eval.stats.agreement` — weighted kappa, Krippendorff's alpha;
* :mod:`~mame_eval.stats.proportions` — exact / Wilson intervals of 0/1 scores, binomial test;
* :mod:`~mame_eval.stats.bootstrap` — percentile bootstrap intervals (seeded).

Nothing here generates, plots, writes or prints.
"""
