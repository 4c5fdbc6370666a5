"""Localisation scores: how much of an attribution map falls on the lesion.

Each score is a function of a 2-D attribution map ``attr`` (shape ``(H, W)``, any real values;
signed maps such as occlusion allowed) and a 2-D lesion mask ``mask`` of the same shape
(boolean, or numeric where ``> 0`` means lesion — a 0/255 PNG mask works as it is), and returns
a float in ``[0, 1]``. One definition per score, each from its paper; all four read only the
**positive part** ``max(attr, 0)`` of the map — positive attribution is evidence *for* the
lesion logit, negative attribution is evidence against it and is never counted as "pointing
at" the lesion:

======================================  ====================================================
:func:`pointing_game`                   Zhang et al. (2018, "Top-down neural attention by
                                        excitation backprop", IJCV): 1 (hit) if the maximum
                                        of the map lies in the mask or within ``tolerance``
                                        pixels of it (the paper uses 15 px on ImageNet-size
                                        images; default here 0), else 0. **0/1 per image.**
:func:`relevance_mass_accuracy`         Arras, Osman & Samek (2022, CLEVR-XAI, Information
                                        Fusion 81:14–40): positive relevance inside the mask
                                        ÷ total positive relevance (their "sum,pos" pooling
                                        of a single-channel map).
:func:`relevance_rank_accuracy`         Arras et al. (2022): of the ``K = |mask|`` pixels
                                        with the highest *positive* relevance, the share that
                                        lie in the mask.
:func:`energy_pointing_game`            Wang et al. (2020, Score-CAM, CVPR-W): energy of the
                                        positive part inside the lesion's **bounding box(es)**
                                        ÷ total positive energy (Score-CAM scores a box;
                                        the box of each 8-connected lesion component here).
======================================  ====================================================

For a non-negative map (Grad-CAM, saliency) the positive part is the map itself, so the
scores agree with their papers' (and Quantus's) on such maps. The energy pointing game differs
from relevance mass only by box versus mask: it is ≥ relevance mass, equal for box-shaped lesions.

Defined edge cases (NaN is never returned):

* **Empty mask** (no lesion pixel) — :class:`~mame_eval.errors.InputError`: a localisation
  score needs a lesion. (:func:`mame_eval.journeys.explain.explain` leaves such images unscored.)
* **Non-finite values** in ``attr`` — :class:`~mame_eval.errors.InputError`.
* **No positive value** (all-zero or all-negative map) — every score is ``0.0``: a map that
  attributes nothing to the lesion logit points nowhere, so not at the lesion (a method whose
  map vanishes is not rewarded with chance-level credit).
* **Ties, pointing game** — when several pixels share the maximum, the image is a hit only if
  **all** of them hit (lie within ``tolerance`` of the mask). Reasons: the score stays 0/1 per
  image, so that a proportion with an exact (Clopper–Pearson) interval summarises it; it does
  not depend on pixel order (unlike ``argmax``, which takes the first maximum in raster order);
  and a map that does not single out the lesion (e.g. a constant map, or a plateau spanning
  lesion and background) is not credited with pointing at it — the "any" rule would score a
  constant map as a hit on every image.
* **Ties, rank accuracy** — positive pixels tied at the ``K``-th highest value are counted
  fractionally (the expected score of breaking the tie at random; deterministic); if fewer
  than ``K`` pixels are positive, the remaining places count as misses.
* **Constant positive map** — pointing game 0 (all maxima tied, not all inside, unless the
  mask covers the image), relevance mass and rank accuracy the mask's area fraction
  ``|mask| / (H·W)`` (chance level), energy pointing the boxes' area fraction.
"""

from __future__ import annotations

import numpy as np

from mame_eval.errors import InputError

__all__ = [
    "SCORES",
    "energy_pointing_game",
    "lesion_boxes",
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

    Zhang et al. (2018). Ties: a hit only if **every** maximal pixel hits (module docstring).

    Args:
        attr: attribution map, shape ``(H, W)``.
        mask: lesion mask, shape ``(H, W)``; ``True`` / ``> 0`` inside the lesion.
        tolerance: Euclidean distance in pixels from the nearest mask pixel that still counts
            as a hit (0: the maximum must be inside the mask).

    Returns:
        1.0 or 0.0; 0.0 for a map without a positive value.
    """
    a, m = _check(attr, mask)
    if tolerance < 0 or not np.isfinite(tolerance):
        raise InputError(f"tolerance must be a finite number of pixels >= 0; got {tolerance!r}")
    top = a.max()
    if not top > 0:
        return 0.0
    peak = a == top
    if tolerance > 0:
        from scipy.ndimage import distance_transform_edt

        hit = distance_transform_edt(~m) <= tolerance
    else:
        hit = m
    return 1.0 if bool(hit[peak].all()) else 0.0


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
    """Share of the ``K = |mask|`` highest positive-attribution pixels in the mask (Arras et al.).

    Only positive attribution is ranked; positive pixels tied with the ``K``-th highest value
    are counted fractionally (expected value of a random tie break); if fewer than ``K``
    pixels are positive, the missing places are misses.

    Args:
        attr: attribution map, shape ``(H, W)``.
        mask: lesion mask, shape ``(H, W)``.

    Returns:
        A float in [0, 1]; 0.0 for a map without a positive value.
    """
    a, m = _check(attr, mask)
    k = int(m.sum())
    positive = a > 0
    if not positive.any():
        return 0.0
    values = a[positive]
    inside = m[positive]
    if values.size <= k:
        return _clip01(inside.sum() / k)
    threshold = np.partition(values, values.size - k)[values.size - k]  # the K-th highest
    above = values > threshold
    tied = values == threshold
    hits = float(inside[above].sum())
    hits += (k - int(above.sum())) * float(inside[tied].sum()) / int(tied.sum())
    return _clip01(hits / k)


def lesion_boxes(mask) -> np.ndarray:
    """Boolean ``(H, W)``: the union of the bounding boxes of the mask's 8-connected components
    (the box a detection annotation would give each lesion)."""
    from scipy import ndimage

    m = np.asarray(mask)
    m = m.astype(bool) if m.dtype == bool else m > 0
    labels, _ = ndimage.label(m, structure=np.ones((3, 3), int))
    boxes = np.zeros(m.shape, bool)
    for sl in ndimage.find_objects(labels):
        if sl is not None:
            boxes[sl] = True
    return boxes


def energy_pointing_game(attr, mask) -> float:
    """Positive energy inside the lesion's bounding box(es) ÷ total positive energy (Score-CAM).

    Wang et al. (2020): "energy" is the sum of the (ReLU'd, i.e. positive-part) saliency map;
    the box of each 8-connected component of ``mask`` is the annotated region.

    Args:
        attr: attribution map, shape ``(H, W)``; negative values are ignored.
        mask: lesion mask, shape ``(H, W)`` (its bounding boxes are scored).

    Returns:
        A float in [0, 1]; 0.0 for a map without a positive value.
    """
    a, m = _check(attr, mask)
    positive = np.clip(a, 0.0, None)
    total = positive.sum()
    if total <= 0:
        return 0.0
    return _clip01(positive[lesion_boxes(m)].sum() / total)


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
