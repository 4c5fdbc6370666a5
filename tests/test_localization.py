"""Localisation scores on hand-made maps, checked against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from mame_eval.errors import InputError
from mame_eval.xai.localization import (
    energy_pointing_game,
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
    # every pixel ties for the maximum: the share of tied maxima inside the mask
    assert pointing_game(attr, mask) == pytest.approx(0.12)


def test_relevance_mass_by_hand():
    mask = np.array([[1, 0], [0, 0]], bool)
    attr = np.array([[2.0, 1.0], [-5.0, 1.0]])  # negative relevance is ignored
    assert relevance_mass_accuracy(attr, mask) == pytest.approx(2.0 / 4.0)


def test_energy_pointing_game_normalises_min_max_first():
    mask = np.array([[1, 0], [0, 0]], bool)
    attr = np.array([[3.0, 2.0], [1.0, 1.0]])  # → [[1, .5], [0, 0]]
    assert energy_pointing_game(attr, mask) == pytest.approx(1.0 / 1.5)
    # the same map shifted by a constant gives the same score (not so for relevance mass)
    assert energy_pointing_game(attr + 10, mask) == pytest.approx(1.0 / 1.5)
    assert relevance_mass_accuracy(attr + 10, mask) == pytest.approx(13 / 47)


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
    attr[3, 4] = attr[9, 9] = 1.0  # two maxima, one inside
    assert pointing_game(attr, mask) == 0.5
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


def test_constant_negative_map_has_no_relevance_mass():
    mask = _box_mask()
    attr = np.full((10, 10), -1.0)
    assert relevance_mass_accuracy(attr, mask) == 0.0
    assert energy_pointing_game(attr, mask) == pytest.approx(0.12)


def test_mask_may_be_uint8_0_255():
    mask = _box_mask().astype(np.uint8) * 255
    attr = np.zeros((10, 10))
    attr[3, 4] = 1.0
    assert localization_scores(attr, mask) == {
        "pointing_game": 1.0, "relevance_mass": 1.0,
        # one sure hit, then 11 picks among the 99 pixels tied at 0 (11 of them inside)
        "relevance_rank": pytest.approx((1 + 11 * 11 / 99) / 12),
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
        for value in localization_scores(attr, mask, tolerance=1.5).values():
            assert 0.0 <= value <= 1.0 and np.isfinite(value)


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
