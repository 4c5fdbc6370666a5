"""Precision/recall (Kynkäänniemi 2019) and density/coverage (Naeem 2020) against an
independent k-NN reference, limiting cases and intervals."""

import numpy as np
import pytest
from sklearn.neighbors import NearestNeighbors

from mame_eval.errors import InputError
from mame_eval.metrics.prdc import PRDC_NAMES, prdc, prdc_interval


def reference(real, fake, k_pr=3, k_dc=5):
    """Straight from the papers' definitions, with sklearn's k-NN search (loops, no reuse)."""

    def radii(points, k):
        # n_neighbors=k+1: the query point itself comes back first, at distance 0
        dist, _ = NearestNeighbors(n_neighbors=k + 1).fit(points).kneighbors(points)
        return dist[:, k]

    r_real, r_fake = radii(real, k_pr), radii(fake, k_pr)
    r_real_dc = radii(real, k_dc)
    precision = np.mean([any(np.linalg.norm(y - x) <= r for x, r in zip(real, r_real, strict=True))
                         for y in fake])
    recall = np.mean([any(np.linalg.norm(x - y) <= r for y, r in zip(fake, r_fake, strict=True))
                      for x in real])
    density = np.mean([sum(np.linalg.norm(y - x) < r for x, r in zip(real, r_real_dc, strict=True))
                       for y in fake]) / k_dc
    nearest_fake, _ = NearestNeighbors(n_neighbors=1).fit(fake).kneighbors(real)
    coverage = np.mean(nearest_fake[:, 0] < r_real_dc)
    return {"precision": precision, "recall": recall, "density": density,
            "coverage": coverage}


def test_matches_an_independent_knn_reference():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(60, 5))
    fake = rng.normal(0.4, 1.3, size=(45, 5))
    ours, ref = prdc(real, fake), reference(real, fake)
    for name in PRDC_NAMES:
        assert ours[name] == pytest.approx(ref[name], abs=1e-12), name
    assert 0 < ours["precision"] < 1 and 0 < ours["recall"] < 1  # a non-trivial case
    other = prdc(real, fake, k_pr=2, k_dc=7)
    ref = reference(real, fake, k_pr=2, k_dc=7)
    assert all(other[n] == pytest.approx(ref[n], abs=1e-12) for n in PRDC_NAMES)


def test_identical_sets_score_one():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(80, 6))
    values = prdc(x, x.copy())
    assert values["precision"] == values["recall"] == values["coverage"] == 1.0
    # each point lies in its own ball and in those of the neighbours that count it: ≈ 1
    assert values["density"] == pytest.approx(1.0, abs=0.25)


def test_disjoint_far_sets_score_zero():
    rng = np.random.default_rng(2)
    real = rng.normal(size=(50, 4))
    values = prdc(real, rng.normal(size=(50, 4)) + 100.0)
    assert all(values[name] == 0.0 for name in PRDC_NAMES)


def test_intervals_contain_the_estimate_and_shrink_with_n():
    rng = np.random.default_rng(3)
    small = prdc_interval(rng.normal(size=(60, 4)), rng.normal(0.5, 1, (60, 4)), n_boot=60)
    large = prdc_interval(rng.normal(size=(400, 4)), rng.normal(0.5, 1, (400, 4)), n_boot=60)
    for name in PRDC_NAMES:
        lo, hi = small.ci[name]
        assert lo <= small.values[name] <= hi and lo < hi, name
        width_small = hi - lo
        width_large = large.ci[name][1] - large.ci[name][0]
        assert width_large < width_small, name
    row = small.row()
    assert set(row) == {f"{n}{s}" for n in PRDC_NAMES for s in ("", "_ci_low", "_ci_high")}
    assert all(small.ci[n][0] >= 0 and small.ci[n][1] <= 1 for n in PRDC_NAMES
               if n != "density")


def test_interval_se_matches_the_spread_across_fresh_samples():
    # The subsampling SE should estimate the sd of the metric over fresh samples of size n.
    rng = np.random.default_rng(4)
    values, widths = [], []
    for _ in range(40):
        res = prdc_interval(rng.normal(size=(120, 3)), rng.normal(0.3, 1, (120, 3)), n_boot=40,
                            seed=int(rng.integers(1 << 30)))
        values.append(res.values["precision"])
        widths.append(res.ci["precision"][1] - res.ci["precision"][0])
    sd_true = np.std(values, ddof=1)
    sd_est = np.mean(widths) / (2 * 1.96)
    assert 0.5 * sd_true < sd_est < 2.0 * sd_true


def test_bad_inputs():
    x = np.zeros((10, 3))
    with pytest.raises(InputError, match="at least 6"):
        prdc(x[:5], x)
    with pytest.raises(InputError, match="dimensions differ"):
        prdc(x, np.zeros((10, 4)))
    with pytest.raises(InputError, match="k_pr 0"):
        prdc(x, x, k_pr=0)
    with pytest.raises(InputError, match="subsets of at least"):
        prdc_interval(x, x)  # half of 10 = 5 < k + 1 = 6
    with pytest.raises(InputError, match="NaN"):
        prdc(np.full((10, 3), np.nan), x)
