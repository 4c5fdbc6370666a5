"""FID/KID statistics against torchmetrics, torch-fidelity, closed forms and simulation."""

import numpy as np
import pytest
import torch

from mame_eval.errors import InputError
from mame_eval.metrics.distribution import (
    GaussianStats,
    fid,
    fid_bootstrap_ci,
    fid_interval,
    fid_of_features,
    frechet_distance,
    kid,
    kid_subset_size_for,
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


def test_kid_formula_matches_torchmetrics_on_the_whole_sample():
    from torchmetrics.image.kid import KernelInceptionDistance

    from mame_eval.metrics.distribution import _poly_kernel

    rng = np.random.default_rng(3)
    real, fake = rng.normal(size=(60, 8)), rng.normal(0.5, 1, (60, 8))
    # torchmetrics with one subset of size N is the whole-sample unbiased MMD²; kid() refuses
    # subsets of size N (no spread), so the formula is checked on its own here.
    m = 60
    kxx, kyy, kxy = _poly_kernel(real, real), _poly_kernel(fake, fake), _poly_kernel(real, fake)
    ours = ((kxx.sum() - np.trace(kxx)) / (m * (m - 1))
            + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean())
    metric = KernelInceptionDistance(feature=Identity(), subset_size=60, subsets=1,
                                     normalize=True)
    metric.update(torch.tensor(real).reshape(60, 8, 1, 1), real=True)
    metric.update(torch.tensor(fake).reshape(60, 8, 1, 1), real=False)
    ref_mean, _ = metric.compute()
    assert ours == pytest.approx(float(ref_mean), rel=1e-6)


def test_kid_equals_torch_fidelity_on_the_same_subsets():
    from torch_fidelity.metric_kid import (
        KEY_METRIC_KID_MEAN,
        KEY_METRIC_KID_STD,
        kid_features_to_metric,
    )

    rng = np.random.default_rng(6)
    real, fake = rng.normal(size=(100, 16)), rng.normal(0.3, 1.1, (100, 16))
    mean, std = kid(real, fake, seed=2020)  # N = 100: the default subset size is 50
    ref = kid_features_to_metric(torch.tensor(real), torch.tensor(fake), kid_subsets=100,
                                 kid_subset_size=50, rng_seed=2020, verbose=False)
    assert mean == pytest.approx(ref[KEY_METRIC_KID_MEAN], rel=1e-9, abs=1e-12)
    assert std == pytest.approx(ref[KEY_METRIC_KID_STD], rel=1e-9)
    assert std > 0.05 * abs(mean)


def test_kid_std_is_an_honest_spread_at_small_n():
    # Regression: with N ≤ 1000 every subset used to be the whole set (kid_std ≈ 1e-12).
    # Now the subsets are N/2, whose spread approximates KID's standard error at N: compare
    # it with the sd of KID across independent samples of the same size.
    rng = np.random.default_rng(7)
    means, stds = [], []
    for rep in range(30):
        mean, std = kid(rng.normal(size=(100, 8)), rng.normal(0.4, 1, (100, 8)), seed=rep)
        means.append(mean)
        stds.append(std)
    assert min(stds) > 1e-3
    assert 0.5 < np.mean(stds) / np.std(means, ddof=1) < 2.0


def test_kid_subset_must_be_smaller_than_n():
    assert kid_subset_size_for(5000, 3000) == 1000
    assert kid_subset_size_for(100, 300) == 50
    assert kid_subset_size_for(100, 300, 99) == 99
    with pytest.raises(InputError, match="--kid-subset-size") as err:
        kid_subset_size_for(100, 300, 1000)
    assert err.value.param == "kid_subset_size" and "= 100" in str(err.value)
    with pytest.raises(InputError, match="2 ≤ size"):
        kid_subset_size_for(100, 300, 100)
    rng = np.random.default_rng(4)
    with pytest.raises(InputError, match="at least 4"):
        kid(rng.normal(size=(3, 4)), rng.normal(size=(7, 4)))


def test_fid_of_features_equals_the_eigh_formula_on_both_paths():
    rng = np.random.default_rng(8)
    for n1, n2, d in ((30, 40, 64), (200, 150, 8)):  # n < d: nuclear norm; n > d: eigh
        x, y = rng.normal(size=(n1, d)), rng.normal(0.2, 1.3, size=(n2, d))
        ref = frechet_distance(GaussianStats.from_features(x), GaussianStats.from_features(y))
        # rank-deficient eigh: √(round-off) of the ~0 eigenvalues costs the formula ~1e-8
        assert fid_of_features(x, y) == pytest.approx(ref, rel=1e-7)


def _gaussians(d, seed):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    s1 = a @ a.T / d + 0.5 * np.eye(d)
    s2 = 0.7 * s1 + 0.3 * (b @ b.T / d + 0.5 * np.eye(d))
    return (np.zeros(d), s1), (rng.normal(size=d) / np.sqrt(d), s2)


def test_fid_interval_contains_its_own_estimate_and_states_the_bias():
    # Regression: the old bootstrap interval could lie wholly above its own estimate
    # (duplicates inflate FID). The new one is centred on FID∞ and says how far the plug-in
    # FID is from it.
    (mu1, s1), (mu2, s2) = _gaussians(8, 0)
    rng = np.random.default_rng(1)
    x = rng.multivariate_normal(mu1, s1, 200)
    y = rng.multivariate_normal(mu2, s2, 200)
    res = fid_interval(x, y, n_boot=30)
    assert res.ci_low <= res.fid_inf <= res.ci_high
    assert res.fid - res.bias == pytest.approx(res.fid_inf)
    assert res.fid == pytest.approx(fid(x, y))
    assert res.bias > 0  # FID at finite N is biased upwards
    assert fid_bootstrap_ci(x, y, n_boot=30) == (res.ci_low, res.ci_high)


def test_fid_inf_is_chong_forsyths_linear_fit_in_one_over_n():
    from sklearn.linear_model import LinearRegression

    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(120, 6)), rng.normal(0.3, 1.2, (150, 6))
    res = fid_interval(x, y, n_boot=12, seed=3)
    fractions = np.asarray(res.fractions)
    fit = LinearRegression().fit(1 / fractions.reshape(-1, 1), np.asarray(res.fid_at))
    assert res.fid_inf == pytest.approx(fit.intercept_, rel=1e-9)
    assert res.fid_at[-1] == res.fid and fractions[-1] == 1.0
    # subsets of fewer images give larger FIDs: the bias grows with 1/N
    assert res.fid_at[0] > res.fid_at[-1]


def test_fid_interval_covers_the_true_fid_in_simulation():
    # Gaussians with known parameters: the true FID is the Fréchet distance of the true
    # (μ, Σ). 100 replicates of n = 200 per set in d = 8; the 95 % interval must cover the
    # truth in ≥ 90 % (benchmarks/fid_interval.py measures more scenarios; the old
    # with-replacement bootstrap covered 30 % in this one).
    (mu1, s1), (mu2, s2) = _gaussians(8, 0)
    truth = frechet_distance(GaussianStats(mu1, s1, 1), GaussianStats(mu2, s2, 1))
    l1, l2 = np.linalg.cholesky(s1), np.linalg.cholesky(s2)
    rng = np.random.default_rng(11)
    hits, plug_in, fid_inf = 0, [], []
    for rep in range(100):
        x = mu1 + rng.normal(size=(200, 8)) @ l1.T
        y = mu2 + rng.normal(size=(200, 8)) @ l2.T
        res = fid_interval(x, y, n_boot=10, seed=rep)
        hits += res.ci_low <= truth <= res.ci_high
        plug_in.append(res.fid)
        fid_inf.append(res.fid_inf)
    assert hits >= 90
    # the plug-in FID is biased upwards (+0.29 here); FID∞ removes most of it
    assert np.mean(plug_in) - truth > 0.2
    assert abs(np.mean(fid_inf) - truth) < 0.25 * (np.mean(plug_in) - truth)


def test_fid_interval_is_flagged_when_subsets_have_fewer_images_than_dimensions():
    rng = np.random.default_rng(12)
    # same distribution (true FID 0), 60 images in 64 dimensions: FID∞ keeps most of the bias
    res = fid_interval(rng.normal(size=(60, 64)), rng.normal(size=(60, 64)), n_boot=10)
    assert not res.valid and res.fid_inf > 5 * res.se
    ok = fid_interval(rng.normal(size=(60, 8)), rng.normal(size=(60, 8)), n_boot=10)
    assert ok.valid


def test_fid_interval_bad_inputs():
    rng = np.random.default_rng(9)
    x = rng.normal(size=(20, 3))
    with pytest.raises(InputError, match="level"):
        fid_interval(x, x, level=1.5)
    with pytest.raises(InputError, match="n_boot 1"):
        fid_interval(x, x, n_boot=1)
    with pytest.raises(InputError, match="too few"):
        fid_interval(x[:3], x)
    with pytest.raises(InputError, match="fractions"):
        fid_interval(x, x, fractions=(0.5, 1.0))
    with pytest.raises(InputError, match="dimensions differ"):
        fid_interval(x, rng.normal(size=(20, 4)))


def test_bad_features():
    with pytest.raises(InputError, match="feature dimensions differ"):
        fid(np.zeros((5, 3)), np.ones((5, 4)))
    with pytest.raises(InputError, match="NaN"):
        fid(np.full((5, 3), np.nan), np.ones((5, 3)))
    with pytest.raises(InputError, match=r"\(N, d\)"):
        fid(np.zeros(5), np.ones(5))


def test_paired_fid_trend_interval_covers_the_true_change():
    """Two guidance scales sharing their seeds (the same noise z moves both): the interval of
    the change of FID∞ from paired subsets without replacement covers the true change."""
    from mame_eval.metrics.distribution import (
        GaussianStats,
        fid_interval,
        frechet_distance,
        paired_subset_fids,
    )
    from mame_eval.stats.trend import subsample_trend

    d, n, reps, shifts = 8, 300, 60, (0.3, 0.6)
    rng = np.random.default_rng(0)
    big = 10**9
    true = [frechet_distance(GaussianStats(np.zeros(d), np.eye(d), big),
                             GaussianStats(np.full(d, s / np.sqrt(d)), np.eye(d) * (1 + s), big))
            for s in shifts]
    hits = 0
    for r in range(reps):
        real = rng.normal(size=(n, d))
        z = rng.normal(size=(n, d))
        syns = [np.full(d, s / np.sqrt(d)) + z * np.sqrt(1 + s) for s in shifts]
        est = [fid_interval(real, f, n_boot=20, seed=r).fid_inf for f in syns]
        sub = paired_subset_fids(real, syns, np.arange(n), n_boot=40, seed=r)
        trend = subsample_trend("fid_inf", [1, 2], est, sub, 0.5, "seeds", n, label="FID∞")
        hits += trend.change_ci_low <= true[1] - true[0] <= trend.change_ci_high
    assert hits / reps >= 0.85
    assert "paired subsampling" in trend.text and trend.text.startswith("FID∞ rises")


def test_paired_subset_fids_refuses_unpaired_scales():
    from mame_eval.metrics.distribution import paired_subset_fids

    with pytest.raises(InputError, match="same number of images"):
        paired_subset_fids(np.zeros((10, 2)), [np.zeros((10, 2)), np.zeros((9, 2))],
                           np.arange(10))
