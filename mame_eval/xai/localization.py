"""Localisation scores: how much of an attribution map falls on the lesion.

Each score is a function of a 2-D attribution map ``attr`` (shape ``(H, W)``, any real values)
and a 2-D lesion mask ``mask`` of the same shape (boolean, or numeric where ``> 0`` means
lesion — a 0/255 PNG mask works as it is), and returns a float in ``[0, 1]``.

======================================  ====================================================
:func:`pointing_game`                   1.0 if the maximum of ``attr`` lies in the mask (or
                                        within ``tolerance`` pixels of it), else 0.0
                                        (Zhang et al. 2018)
:func:`relevance_mass_accuracy`         positive attribution inside ÷ total positive
                                        attribution (Arras et al. 2022)
:func:`relevance_rank_accuracy`         share of the ``K = |mask|`` highest-attribution
                                        pixels that lie in the mask (Arras et al. 2022)
:func:`energy_pointing_game`            min–max normalise ``attr`` to [0, 1], then energy
                                        inside ÷ total energy (Wang et al. 2020, Score-CAM)
======================================  ====================================================

Defined edge cases (NaN is never returned):

* **Empty mask** (no lesion pixel) — :class:`~mame_eval.errors.InputError`: a localisation
  score needs a lesion. (:func:`mame_eval.journeys.explain.explain` leaves such images unscored.)
* **Non-finite values** in ``attr`` — :class:`~mame_eval.errors.InputError`.
* **All-zero map** — every score is ``0.0``: a map that attributes nothing points nowhere, so
  in particular not at the lesion (the conservative choice; a method whose map vanishes is not
  rewarded with chance-level credit).
* **Constant non-zero map** (e.g. uniform) — no location is preferred, and every score equals
  the chance level, the mask's area fraction ``|mask| / (H·W)``: the pointing game by the tie
  rule below, relevance mass (if positive) and rank accuracy directly, and the energy pointing
  game because a constant map normalises to all ones. A constant *negative* map has no positive
  relevance: its relevance mass is ``0.0``.
* **Ties** — pointing game: when several pixels share the maximum, the score is the fraction of
  them that hit (the expected score of picking one of them at random; 0/1 for a unique
  maximum). Rank accuracy: pixels tied at the ``K``-th value are counted fractionally (the
  expected score of breaking the tie at random). Both are deterministic.
"""

from __future__ import annotations

import numpy as np

from mame_eval.errors import InputError

__all__ = [
    "SCORES",
    "energy_pointing_game",
    "localization_scores",
    "pointing_game",
    "relevance_mass_accuracy",
    "relevance_rank_accuracy",
]

#: Score names as used in ``scores.csv``, in column order, with their functions (filled below).
SCORES: dict[str, object] = {}


def _check(attr, mask) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert to ``(float64 (H, W), bool (H, W))``."""
    a = np.asarray(attr)
    m = np.asarray(mask)
    if a.ndim != 2:
        raise InputError(f"attribution map must be 2-D (H, W); got shape {a.shape}")
    if m.shape != a.shape:
        raise InputError(f"mask shape {m.shape} differs from attribution shape {a.shape}")
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise InputError(f"attribution map must be numeric; got dtype {a.dtype}")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise InputError("attribution map contains NaN or infinite values")
    m = m.astype(bool) if m.dtype == bool else m > 0
    if not m.any():
        raise InputError("mask is empty (no lesion pixel): a localisation score needs a lesion")
    return a, m


def _clip01(value: float) -> float:
    return float(min(1.0, max(0.0, value)))


def pointing_game(attr, mask, tolerance: float = 0) -> float:
    """1.0 if the maximum of ``attr`` lies in ``mask`` or within ``tolerance`` pixels of it.

    Args:
        attr: attribution map, shape ``(H, W)``.
        mask: lesion mask, shape ``(H, W)``; ``True`` / ``> 0`` inside the lesion.
        tolerance: Euclidean distance in pixels from the nearest mask pixel that still counts
            as a hit (0: the maximum must be inside the mask).

    Returns:
        The fraction of maximal pixels that hit — 1.0 or 0.0 for a unique maximum; 0.0 for an
        all-zero map (see the module docstring for ties and edge cases).
    """
    a, m = _check(attr, mask)
    if tolerance < 0 or not np.isfinite(tolerance):
        raise InputError(f"tolerance must be a finite number of pixels >= 0; got {tolerance!r}")
    if not a.any():
        return 0.0
    peak = a == a.max()
    if tolerance > 0:
        from scipy.ndimage import distance_transform_edt

        hit = distance_transform_edt(~m) <= tolerance
    else:
        hit = m
    return _clip01(hit[peak].mean())


def relevance_mass_accuracy(attr, mask) -> float:
    """Positive attribution inside the mask ÷ total positive attribution (Arras et al.).

    Args:
        attr: attribution map, shape ``(H, W)``; negative values are ignored.
        mask: lesion mask, shape ``(H, W)``.

    Returns:
        A float in [0, 1]; 0.0 when the map has no positive value (incl. all-zero maps).
    """
    a, m = _check(attr, mask)
    positive = np.clip(a, 0.0, None)
    total = positive.sum()
    if total <= 0:
        return 0.0
    return _clip01(positive[m].sum() / total)


def relevance_rank_accuracy(attr, mask) -> float:
    """Share of the ``K = |mask|`` highest-attribution pixels that lie in the mask (Arras et al.).

    Pixels tied with the ``K``-th highest value are counted fractionally (expected value of a
    random tie break).

    Args:
        attr: attribution map, shape ``(H, W)``.
        mask: lesion mask, shape ``(H, W)``.

    Returns:
        A float in [0, 1]; 0.0 for an all-zero map.
    """
    a, m = _check(attr, mask)
    if not a.any():
        return 0.0
    k = int(m.sum())
    values = a.ravel()
    inside = m.ravel()
    threshold = np.partition(values, values.size - k)[values.size - k]  # the K-th highest value
    above = values > threshold
    tied = values == threshold
    n_above = int(above.sum())
    hits = float(inside[above].sum())
    n_tied = int(tied.sum())
    hits += (k - n_above) * float(inside[tied].sum()) / n_tied
    return _clip01(hits / k)


def energy_pointing_game(attr, mask) -> float:
    """Energy of the min–max-normalised map inside the mask ÷ its total energy (Score-CAM).

    The map is first normalised to ``(attr - min) / (max - min)`` (non-negative, in [0, 1]).

    Args:
        attr: attribution map, shape ``(H, W)``.
        mask: lesion mask, shape ``(H, W)`` — a box mask gives the original box-based score.

    Returns:
        A float in [0, 1]; 0.0 for an all-zero map; the mask's area fraction for a constant
        non-zero map (it normalises to all ones).
    """
    a, m = _check(attr, mask)
    if not a.any():
        return 0.0
    low, high = a.min(), a.max()
    if high == low:
        return _clip01(m.mean())
    norm = (a - low) / (high - low)
    return _clip01(norm[m].sum() / norm.sum())


def localization_scores(attr, mask, tolerance: float = 0) -> dict[str, float]:
    """All four scores of one map as ``{name: value}`` (names as in ``scores.csv``)."""
    return {
        "pointing_game": pointing_game(attr, mask, tolerance=tolerance),
        "relevance_mass": relevance_mass_accuracy(attr, mask),
        "relevance_rank": relevance_rank_accuracy(attr, mask),
        "energy_pointing": energy_pointing_game(attr, mask),
    }


SCORES.update({
    "pointing_game": pointing_game,
    "relevance_mass": relevance_mass_accuracy,
    "relevance_rank": relevance_rank_accuracy,
    "energy_pointing": energy_pointing_game,
})
