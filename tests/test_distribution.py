"""FID/KID statistics against torchmetrics and closed forms."""

import warnings

import numpy as np
import pytest
import torch

from mame_eval.errors import InputError
from mame_eval.metrics.distribution import (
    GaussianStats,
    fid,
    fid_bootstrap_ci,
    frechet_distance,
    kid,
    sqrtm_psd,
)


def test_closed_form_for_diagonal_gaussians():
    # FID of N(0, I) and N(m, 4I) in d dims: |m|^2 + d(1 + 4 - 2*2) = |m|^2 + d
    d = 3
    a = GaussianStats(np.zeros(d), np.eye(d), 10)
    b = GaussianStats(np.full(d, 2.0), 4 * np.eye(d), 10)
    assert frechet_distance(a, b) == pytest.approx(12 + 3)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-12)


def test_sqrtm_psd_squares_back_and_clamps():
    rng = np.random.default_rng(0)
    m = rng.normal(size=(5, 3))
    psd = m @ m.T  # rank 3: two ~0 eigenvalues that round-off may make negative
    root = sqrtm_psd(psd)
    assert np.isrealobj(root)
    np.testing.assert_allclose(root @ root, psd, atol=1e-10)


class Identity(torch.nn.Module):
    """A 'feature extractor' returning the flattened input: torchmetrics' custom-feature path."""

    num_features = 8

    def forward(self, x):
        return x.reshape(len(x), -1).double()


def test_fid_matches_torchmetrics_with_a_custom_extractor():
    from torchmetrics.image.fid import FrechetInceptionDistance

    rng = np.random.default_rng(0)
    real = rng.normal(0, 1, (200, 8))
    fake = rng.normal(0.3, 1.2, (150, 8))
    metric = FrechetInceptionDistance(feature=Identity(), normalize=True)
    metric.update(torch.tensor(real).reshape(200, 8, 1, 1), real=True)
    metric.update(torch.tensor(fake).reshape(150, 8, 1, 1), real=False)
    assert fid(real, fake) == pytest.approx(float(metric.compute()), abs=1e-3)


def test_n_smaller_than_d_is_finite_with_a_warning():
    rng = np.random.default_rng(1)
    with pytest.warns(UserWarning, match="rank-deficient"):
        value = fid(rng.normal(size=(10, 64)), rng.normal(size=(12, 64)))
    assert np.isfinite(value) and value > 0


def test_kid_zero_in_expectation_and_positive_for_shift():
    rng = np.random.default_rng(2)
    same_a, same_b = rng.normal(size=(300, 16)), rng.normal(size=(300, 16))
    mean_same, std_same = kid(same_a, same_b, subset_size=100, n_subsets=50)
    mean_diff, _ = kid(same_a, same_b + 1.0, subset_size=100, n_subsets=50)
    assert abs(mean_same) < 3 * std_same + 1e-3
    assert mean_diff > 10 * max(abs(mean_same), 1e-4)


def test_kid_matches_torchmetrics():
    from torchmetrics.image.kid import KernelInceptionDistance

    rng = np.random.default_rng(3)
    real, fake = rng.normal(size=(60, 8)), rng.normal(0.5, 1, (60, 8))
    # With subset size = N and one subset, both are the full-sample unbiased MMD^2.
    ours, _ = kid(real, fake, subset_size=60, n_subsets=1)
    metric = KernelInceptionDistance(feature=Identity(), subset_size=60, subsets=1,
                                     normalize=True)
    metric.update(torch.tensor(real).reshape(60, 8, 1, 1), real=True)
    metric.update(torch.tensor(fake).reshape(60, 8, 1, 1), real=False)
    ref_mean, _ = metric.compute()
    assert ours == pytest.approx(float(ref_mean), rel=1e-6)


def test_kid_subset_capped_at_n():
    rng = np.random.default_rng(4)
    mean, _ = kid(rng.normal(size=(5, 4)), rng.normal(size=(7, 4)), subset_size=1000,
                  n_subsets=3)
    assert np.isfinite(mean)
    with pytest.raises(InputError, match="at least 2"):
        kid(rng.normal(size=(1, 4)), rng.normal(size=(7, 4)))


def test_bootstrap_ci_brackets_the_estimate():
    rng = np.random.default_rng(5)
    real, fake = rng.normal(size=(100, 4)), rng.normal(0.5, 1, (100, 4))
    lo, hi = fid_bootstrap_ci(real, fake, n_boot=100)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        point = fid(real, fake)
    assert lo < hi and lo <= point * 1.5 and hi >= point * 0.5


def test_bad_features():
    with pytest.raises(InputError, match="feature dimensions differ"):
        fid(np.zeros((5, 3)), np.ones((5, 4)))
    with pytest.raises(InputError, match="NaN"):
        fid(np.full((5, 3), np.nan), np.ones((5, 3)))
    with pytest.raises(InputError, match=r"\(N, d\)"):
        fid(np.zeros(5), np.ones(5))
