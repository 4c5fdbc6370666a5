"""Localisation scores on hand-made maps, checked against values worked out by hand: one
definition per score (module docstring of mame_eval.xai.localization), incl. ties and signed
maps."""

from __future__ import annotations

import numpy as np
import pytest

from mame_eval.errors import InputError
from mame_eval.xai.localization import (
    energy_pointing_game,
    lesion_boxes,
    localization_scores,
    pointing_game,
    relevance_mass_accuracy,
    relevance_rank_accuracy,
)

ALL = (pointing_game, relevance_mass_accuracy, relevance_rank_accuracy, energy_pointing_game)


def _box_mask(shape=(10, 10), rows=slice(2, 5), cols=slice(3, 7)):
    mask = np.zeros(shape, bool)
    mask[rows, cols] = True  # 3 × 4 = 12 pixels of 100
    return mask


def test_peak_inside_scores_one():
    mask = _box_mask()
    attr = np.zeros((10, 10))
    attr[3, 4] = 5.0
    assert pointing_game(attr, mask) == 1.0
    assert relevance_mass_accuracy(attr, mask) == 1.0
    assert energy_pointing_game(attr, mask) == 1.0


def test_map_entirely_outside_scores_zero():
    mask = _box_mask()
    attr = np.where(mask, 0.0, 1.0)  # relevance everywhere except the lesion
    attr[0, 0] = 3.0
    for fn in ALL:
        assert fn(attr, mask) == 0.0, fn.__name__


def test_uniform_map_gives_the_area_fraction():
    mask = _box_mask()
    attr = np.full((10, 10), 0.7)
    assert relevance_mass_accuracy(attr, mask) == pytest.approx(0.12)
    assert energy_pointing_game(attr, mask) == pytest.approx(0.12)
    assert relevance_rank_accuracy(attr, mask) == pytest.approx(0.12)
    # every pixel ties for the maximum, not all inside: a constant map does not point
    assert pointing_game(attr, mask) == 0.0
    assert pointing_game(attr, np.ones((10, 10), bool)) == 1.0  # unless the lesion is all


def test_relevance_mass_by_hand():
    mask = np.array([[1, 0], [0, 0]], bool)
    attr = np.array([[2.0, 1.0], [-5.0, 1.0]])  # negative relevance is ignored
    assert relevance_mass_accuracy(attr, mask) == pytest.approx(2.0 / 4.0)


def test_energy_pointing_game_uses_the_positive_part_not_min_max():
    mask = np.array([[1, 0], [0, 0]], bool)
    attr = np.array([[3.0, 2.0], [1.0, 1.0]])
    assert energy_pointing_game(attr, mask) == pytest.approx(3 / 7)
    # a shift changes the positive part (Score-CAM's energy is of the ReLU'd map) …
    assert energy_pointing_game(attr - 1.5, mask) == pytest.approx(1.5 / 2.0)
    # … and a min–max shift is not applied: the old definition gave 1 / 1.5 here
    assert energy_pointing_game(attr, mask) != pytest.approx(1 / 1.5)


def test_energy_pointing_game_scores_the_bounding_box():
    mask = np.zeros((8, 8), bool)
    mask[2, 2:6] = mask[2:6, 2] = True  # an "L": its box is rows 2..5, cols 2..5
    attr = np.zeros((8, 8))
    attr[4, 4] = 3.0  # inside the box, outside the mask
    attr[7, 7] = 1.0  # outside both
    assert relevance_mass_accuracy(attr, mask) == 0.0
    assert energy_pointing_game(attr, mask) == pytest.approx(3 / 4)
    # reference box by hand (one component)
    rows, cols = np.nonzero(mask)
    box = np.zeros_like(mask)
    box[rows.min():rows.max() + 1, cols.min():cols.max() + 1] = True
    np.testing.assert_array_equal(lesion_boxes(mask), box)
    # two lesions: two boxes, not the box around both
    two = np.zeros((8, 8), bool)
    two[0, 0] = two[7, 7] = True
    assert lesion_boxes(two).sum() == 2


def test_signed_maps_count_only_positive_evidence():
    """Occlusion-like signed map: strong *negative* attribution on the lesion is evidence
    against "lesion" and must not count as pointing at it."""
    mask = _box_mask()
    attr = np.full((10, 10), 0.0)
    attr[mask] = -5.0  # hiding the lesion *raises* the logit
    attr[8, 8] = 1.0
    for fn in ALL:
        assert fn(attr, mask) == 0.0, fn.__name__
    attr[3, 4] = 0.5  # a little positive evidence inside
    assert pointing_game(attr, mask) == 0.0  # the maximum (1.0) is outside
    assert relevance_mass_accuracy(attr, mask) == pytest.approx(0.5 / 1.5)
    assert energy_pointing_game(attr, mask) == pytest.approx(0.5 / 1.5)
    # K = 12, only 2 positive pixels: one inside, the other 10 places are misses
    assert relevance_rank_accuracy(attr, mask) == pytest.approx(1 / 12)
    # magnitudes are not scores: |attr| would put the peak on the lesion
    assert pointing_game(np.abs(attr), mask) == 1.0


def test_relevance_rank_accuracy_by_hand():
    mask = np.zeros((4, 4), bool)
    mask[0, :3] = True  # K = 3
    attr = np.zeros((4, 4))
    attr[0, 0], attr[0, 1], attr[3, 3] = 9.0, 8.0, 7.0  # top-3: two inside, one outside
    attr[0, 2] = 1.0
    assert relevance_rank_accuracy(attr, mask) == pytest.approx(2 / 3)
    attr[0, 2] = 10.0  # now all three inside
    assert relevance_rank_accuracy(attr, mask) == 1.0


def test_relevance_rank_ties_count_fractionally():
    mask = np.zeros((2, 4), bool)
    mask[0, :2] = True  # K = 2
    attr = np.array([[5.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    # one sure hit (5.0); one more pixel from the three tied at 1.0, one of which is inside
    assert relevance_rank_accuracy(attr, mask) == pytest.approx((1 + 1 / 3) / 2)


def test_pointing_game_ties_and_tolerance():
    mask = _box_mask()
    attr = np.zeros((10, 10))
    attr[3, 4] = attr[9, 9] = 1.0  # two maxima, one inside: not a hit (all must hit)
    assert pointing_game(attr, mask) == 0.0
    attr[9, 9] = 0.0
    attr[2, 3] = 1.0  # two maxima, both inside: a hit
    assert pointing_game(attr, mask) == 1.0
    attr[5, 3] = 1.0  # a third, one row below the box: a hit only within the tolerance
    assert pointing_game(attr, mask) == 0.0
    assert pointing_game(attr, mask, tolerance=1) == 1.0
    attr = np.zeros((10, 10))
    attr[6, 4] = 1.0  # two rows below the box (box rows 2..4): distance 2
    assert pointing_game(attr, mask) == 0.0
    assert pointing_game(attr, mask, tolerance=1) == 0.0
    assert pointing_game(attr, mask, tolerance=2) == 1.0
    attr = np.zeros((10, 10))
    attr[6, 7] = 1.0  # nearest box pixel (4, 6): distance sqrt(2² + 1²)
    assert pointing_game(attr, mask, tolerance=2) == 0.0
    assert pointing_game(attr, mask, tolerance=np.sqrt(5)) == 1.0


def test_all_zero_map_scores_zero_everywhere():
    mask = _box_mask()
    for fn in ALL:
        assert fn(np.zeros((10, 10)), mask) == 0.0, fn.__name__


def test_constant_negative_map_scores_zero():
    mask = _box_mask()
    attr = np.full((10, 10), -1.0)
    for fn in ALL:
        assert fn(attr, mask) == 0.0, fn.__name__


def test_mask_may_be_uint8_0_255():
    mask = _box_mask().astype(np.uint8) * 255
    attr = np.zeros((10, 10))
    attr[3, 4] = 1.0
    assert localization_scores(attr, mask) == {
        "pointing_game": 1.0, "relevance_mass": 1.0,
        # one positive pixel, inside; the other 11 of K = 12 places are misses
        "relevance_rank": pytest.approx(1 / 12),
        "energy_pointing": 1.0}


@pytest.mark.parametrize("fn", ALL)
def test_edge_cases_raise_clear_errors(fn):
    mask = _box_mask()
    with pytest.raises(InputError, match="mask is empty"):
        fn(np.ones((10, 10)), np.zeros((10, 10), bool))
    with pytest.raises(InputError, match="NaN"):
        bad = np.ones((10, 10))
        bad[0, 0] = np.nan
        fn(bad, mask)
    with pytest.raises(InputError, match="shape"):
        fn(np.ones((10, 9)), mask)
    with pytest.raises(InputError, match="2-D"):
        fn(np.ones((1, 10, 10)), mask[None])


def test_scores_are_in_unit_interval_on_random_maps():
    rng = np.random.default_rng(0)
    for _ in range(50):
        attr = rng.normal(size=(12, 9))
        mask = rng.random((12, 9)) < 0.2
        mask[0, 0] = True
        scores = localization_scores(attr, mask, tolerance=1.5)
        for value in scores.values():
            assert 0.0 <= value <= 1.0 and np.isfinite(value)
        assert scores["pointing_game"] in (0.0, 1.0)  # 0/1 per image
        assert scores["energy_pointing"] >= scores["relevance_mass"] - 1e-12  # box ⊇ mask


def test_rank_accuracy_matches_a_sorting_reference():
    rng = np.random.default_rng(1)
    for _ in range(20):
        attr = rng.random((8, 8))  # continuous: no ties
        mask = rng.random((8, 8)) < 0.3
        mask[0, 0] = True
        k = int(mask.sum())
        top = np.argsort(attr.ravel())[::-1][:k]
        expected = mask.ravel()[top].mean()
        assert relevance_rank_accuracy(attr, mask) == pytest.approx(expected)


def test_rank_accuracy_on_signed_maps_matches_a_sorting_reference():
    rng = np.random.default_rng(2)
    for _ in range(20):
        attr = rng.normal(size=(8, 8))  # continuous, about half negative
        mask = rng.random((8, 8)) < 0.4
        mask[0, 0] = True
        k = int(mask.sum())
        top = np.argsort(attr.ravel())[::-1][:k]
        expected = (mask.ravel()[top] & (attr.ravel()[top] > 0)).sum() / k
        assert relevance_rank_accuracy(attr, mask) == pytest.approx(expected)


def test_pointing_game_matches_argmax_when_the_maximum_is_unique():
    rng = np.random.default_rng(3)
    for _ in range(30):
        attr = rng.random((9, 7))
        mask = rng.random((9, 7)) < 0.3
        mask[0, 0] = True
        assert pointing_game(attr, mask) == float(mask.ravel()[np.argmax(attr)])
