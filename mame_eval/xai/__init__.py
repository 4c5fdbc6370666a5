"""Explainability of lesion classifiers: Captum attributions and localisation scores.

* :mod:`mame_eval.xai.attribution` — Grad-CAM, saliency, occlusion (optionally SmoothGrad);
  one 2-D map per image.
* :mod:`mame_eval.xai.localization` — pointing game, relevance mass / rank accuracy, energy
  pointing game: how much of a map falls in the lesion mask.

Calculations only (arrays in, numbers out); the ``mame-eval explain`` journey that reads
images, summarises and draws is :mod:`mame_eval.journeys.explain`.
"""

from mame_eval.xai.localization import (
    energy_pointing_game,
    localization_scores,
    pointing_game,
    relevance_mass_accuracy,
    relevance_rank_accuracy,
)

__all__ = [
    "energy_pointing_game",
    "localization_scores",
    "pointing_game",
    "relevance_mass_accuracy",
    "relevance_rank_accuracy",
]
