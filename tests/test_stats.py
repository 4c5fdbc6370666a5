"""Tests of mame_eval.stats (roc, mrmc, agreement, proportions) against independent references.

References: sklearn (AUROC, ROC points), brute-force loops written here (DeLong structural
components, leave-one-out jackknife, quadratic-weighted kappa), exact binomial arithmetic and
Krippendorff's (2011) worked example.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from sklearn.metrics import roc_auc_score, roc_curve

from mame_eval.errors import InputError
from mame_eval.stats.agreement import krippendorff_alpha_ordinal, pairwise_kappa, weighted_kappa
from mame_eval.stats.mrmc import or_mrmc
from mame_eval.stats.proportions import binomial_test_accuracy
from mame_eval.stats.roc import (
    auroc,
    cutoff_metrics,
    delong_ci,
    delong_cov,
    equivalence_test_auc,
    jackknife_cov,
    jackknife_se,
    placement_values,
    roc_curve_empirical,
)

# --------------------------------------------------------------------------------------------
# independent brute-force references
# --------------------------------------------------------------------------------------------


def _psi(x: float, y: float) -> float:
    return 1.0 if x > y else 0.5 if x == y else 0.0


def brute_delong(truth, scores):
    """DeLong (1988) AUCs and covariance with explicit loops over the Mann-Whitney kernel."""
    pos = [k for k in range(len(truth)) if truth[k] == 1]
    neg = [k for k in range(len(truth)) if truth[k] == 0]
    m, n = len(pos), len(neg)
    n_score = len(scores)
    v10 = [[sum(_psi(s[i], s[j]) for j in neg) / n for i in pos] for s in scores]
    v01 = [[sum(_psi(s[i], s[j]) for i in pos) / m for j in neg] for s in scores]
    auc = [sum(_psi(s[i], s[j]) for i in pos for j in neg) / (m * n) for s in scores]
    cov = np.zeros((n_score, n_score))
    for p in range(n_score):
        for q in range(n_score):
            s10 = sum((v10[p][a] - auc[p]) * (v10[q][a] - auc[q]) for a in range(m)) / (m - 1)
            s01 = sum((v01[p][b] - auc[p]) * (v01[q][b] - auc[q]) for b in range(n)) / (n - 1)
            cov[p, q] = s10 / m + s01 / n
    return np.array(auc), cov


def brute_jackknife(truth, scores):
    """Leave-one-case-out jackknife covariance of sklearn AUCs, by explicit deletion."""
    truth = np.asarray(truth)
    k = len(truth)
    loo = np.array(
        [
            [roc_auc_score(np.delete(truth, c), np.delete(np.asarray(s), c)) for c in range(k)]
            for s in scores
        ]
    )
    dev = loo - loo.mean(axis=1, keepdims=True)
    return (k - 1) / k * dev @ dev.T


def brute_quadratic_kappa(a, b):
    cats = sorted(set(a) | set(b))
    idx = {c: i for i, c in enumerate(cats)}
    q = len(cats)
    obs = np.zeros((q, q))
    for x, y in zip(a, b, strict=True):
        obs[idx[x], idx[y]] += 1
    exp = np.outer(obs.sum(1), obs.sum(0)) / obs.sum()
    w = np.array([[(i - j) ** 2 for j in range(q)] for i in range(q)], dtype=float)
    return 1 - (w * obs).sum() / (w * exp).sum()


def _random_study(seed: int, k: int = 30, levels: int = 5):
    rng = np.random.default_rng(seed)
    truth = np.r_[np.ones(k // 2, int), np.zeros(k - k // 2, int)]
    rng.shuffle(truth)
    latent = truth[None, :] * 1.0 + rng.normal(size=(3, k))
    scores = np.clip(np.round(latent * 1.2 + 3), 1, levels)  # 1..5 ratings -> many ties
    return truth, scores


# --------------------------------------------------------------------------------------------
# AUROC and ROC curve
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_auroc_matches_sklearn_with_ties(seed):
    truth, scores = _random_study(seed)
    for s in scores:
        assert auroc(truth, s) == pytest.approx(roc_auc_score(truth, s), abs=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_roc_curve_points_match_sklearn(seed):
    truth, scores = _random_study(seed)
    fpr, tpr, thr = roc_curve_empirical(truth, scores[0])
    sk_fpr, sk_tpr, sk_thr = roc_curve(truth, scores[0], drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    np.testing.assert_allclose(thr[1:], sk_thr[1:])
    assert thr[0] == np.inf
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    assert area == pytest.approx(roc_auc_score(truth, scores[0]), abs=1e-12)


def test_roc_curve_endpoints_and_monotone():
    fpr, tpr, _ = roc_curve_empirical([0, 0, 1, 1, 1], [0.1, 0.5, 0.5, 0.7, 0.9])
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)


_labels = st.lists(st.integers(0, 1), min_size=4, max_size=40).filter(
    lambda t: 2 <= sum(t) <= len(t) - 2
)


@st.composite
def _truth_and_scores(draw):
    truth = draw(_labels)
    scores = draw(st.lists(st.integers(1, 6), min_size=len(truth), max_size=len(truth)))
    return np.array(truth), np.array(scores, dtype=float)


@settings(max_examples=60, deadline=None)
@given(_truth_and_scores())
def test_property_auc_of_negated_score_is_complement(data):
    truth, score = data
    assert auroc(truth, score) + auroc(truth, -score) == pytest.approx(1.0, abs=1e-12)
    assert auroc(truth, score) == pytest.approx(roc_auc_score(truth, score), abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(_truth_and_scores())
def test_property_auc_and_se_invariant_under_monotone_transform(data):
    truth, score = data
    a1, se1, _ = delong_ci(truth, score)
    a2, se2, _ = delong_ci(truth, np.exp(score / 3.0) * 7 - 2)
    assert a1 == pytest.approx(a2, abs=1e-12)
    assert se1 == pytest.approx(se2, abs=1e-12)
    assert jackknife_se(truth, score) >= 0


@settings(max_examples=40, deadline=None)
@given(_truth_and_scores())
def test_property_placement_values_average_to_auc(data):
    truth, score = data
    v10, v01 = placement_values(truth, score)
    assert v10.size == truth.sum() and v01.size == (truth == 0).sum()
    assert v10.mean() == pytest.approx(roc_auc_score(truth, score), abs=1e-12)
    assert v01.mean() == pytest.approx(roc_auc_score(truth, score), abs=1e-12)


# --------------------------------------------------------------------------------------------
# DeLong and jackknife variances
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_delong_cov_matches_brute_force(seed):
    truth, scores = _random_study(seed, k=25)
    auc, cov = delong_cov(truth, scores)
    ref_auc, ref_cov = brute_delong(truth.tolist(), scores.tolist())
    np.testing.assert_allclose(auc, ref_auc, atol=1e-12)
    np.testing.assert_allclose(cov, ref_cov, atol=1e-12)


def test_delong_ci_matches_brute_force_and_normal_quantile():
    truth, scores = _random_study(11, k=40)
    auc, se, (lo, hi) = delong_ci(truth, scores[1], level=0.9)
    ref_auc, ref_cov = brute_delong(truth.tolist(), [scores[1].tolist()])
    assert se == pytest.approx(math.sqrt(ref_cov[0, 0]), abs=1e-12)
    z = stats.norm.ppf(0.95)
    assert lo == pytest.approx(max(0, ref_auc[0] - z * se))
    assert hi == pytest.approx(min(1, ref_auc[0] + z * se))


def test_delong_ci_is_clipped_to_unit_interval():
    truth = np.array([0, 0, 0, 1, 1, 1, 0, 1])
    score = np.array([1, 2, 3, 4, 5, 6, 4.5, 2.5])  # AUC near 1 with small samples
    auc, se, (lo, hi) = delong_ci(truth, score)
    assert se > 0 and 0.0 <= lo <= auc <= hi <= 1.0
    assert hi == 1.0


@pytest.mark.parametrize("seed", range(3))
def test_jackknife_cov_matches_explicit_deletion(seed):
    truth, scores = _random_study(seed, k=24)
    _, cov = jackknife_cov(truth, scores)
    np.testing.assert_allclose(cov, brute_jackknife(truth, scores), atol=1e-12)
    assert jackknife_se(truth, scores[0]) == pytest.approx(
        math.sqrt(brute_jackknife(truth, scores[:1])[0, 0]), abs=1e-12
    )


# --------------------------------------------------------------------------------------------
# degenerate inputs and errors
# --------------------------------------------------------------------------------------------


def test_constant_scores_give_half_auc_and_zero_se():
    truth = np.array([0, 1] * 6)
    score = np.full(12, 3.0)
    assert auroc(truth, score) == 0.5
    auc, se, ci = delong_ci(truth, score)
    assert (auc, se, ci) == (0.5, 0.0, (0.5, 0.5))
    assert jackknife_se(truth, score) == 0.0


def test_perfect_separation_has_zero_delong_se():
    auc, se, ci = delong_ci([0, 0, 1, 1], [1, 2, 3, 4])
    assert (auc, se, ci) == (1.0, 0.0, (1.0, 1.0))


def test_two_cases_auc_defined_but_variance_needs_two_per_class():
    assert auroc([0, 1], [0.2, 0.9]) == 1.0
    assert auroc([0, 1], [0.5, 0.5]) == 0.5
    with pytest.raises(InputError, match="at least 2 positive .* got 1 positive and 1 negative"):
        delong_ci([0, 1], [0.2, 0.9])
    with pytest.raises(InputError, match="at least 2"):
        jackknife_se([0, 1, 1], [0.2, 0.9, 0.3])


@pytest.mark.parametrize(
    ("truth", "score", "pattern"),
    [
        ([1, 1, 1], [1, 2, 3], "got 3 positive and 0 negative"),
        ([0, 1, 2], [1, 2, 3], r"truth must be 0/1 .*2"),
        (["a", "b", "a"], [1, 2, 3], "truth must be 0/1"),
        ([0, 1, 1], [1, 2], "one value per case"),
        ([0, 1, 1], [1, np.nan, 2], "non-finite"),
        ([], [], "empty"),
    ],
)
def test_bad_inputs_raise_input_error(truth, score, pattern):
    with pytest.raises(InputError, match=pattern):
        auroc(truth, score)


def test_mrmc_single_reader_falls_back_to_fixed_readers():
    truth, scores = _random_study(3, k=30)
    res = or_mrmc(scores[:2, None, :], truth)
    assert "only one reader" in res.inference
    assert res.fixed_cases is None
    for e in res.random.modalities.values():
        assert math.isinf(e.df) and e.se > 0 and all(map(math.isfinite, e.ci))
    # with one reader the fixed-reader X^2 is the squared z of the difference of two AUCs
    jk = brute_jackknife(truth, scores[:2])
    z2 = (res.reader_auc[0, 0] - res.reader_auc[1, 0]) ** 2 / (jk[0, 0] + jk[1, 1] - 2 * jk[0, 1])
    assert res.fixed_readers.test.chi2 == pytest.approx(z2)
    f_stat = res.random.test.F
    assert f_stat == pytest.approx(z2)
    assert math.isinf(res.random.test.df2)
    assert res.random.test.p == pytest.approx(stats.chi2.sf(z2, 1))


def test_mrmc_one_modality_has_no_comparison():
    truth, scores = _random_study(4, k=30)
    res = or_mrmc(scores[None, :, :], truth)
    assert res.random.test is None and res.random.differences == ()
    assert res.fixed_readers.test is None and res.fixed_cases.test is None
    assert res.variance_components.cov1 is None and res.variance_components.ms_t is None
    e = res.random.modalities["1"]
    assert e.auc == pytest.approx(np.mean([roc_auc_score(truth, s) for s in scores]))
    assert e.se > 0 and math.isfinite(e.df)


def test_mrmc_constant_scores_defined_without_nan():
    truth = np.array([0, 1] * 5)
    res = or_mrmc(np.full((2, 3, 10), 2.0), truth)
    for e in res.random.modalities.values():
        assert (e.auc, e.se, e.ci) == (0.5, 0.0, (0.5, 0.5))
    assert res.random.test is None and res.fixed_readers.test is None
    assert res.fixed_cases.test is None
    # three undefined tests, and for each modality why its interval is a point
    assert len(res.notes) == 5
    assert sum("test undefined" in n for n in res.notes) == 3
    assert all(any(f"modality {m}:" in n and "zero standard error" in n for n in res.notes)
               for m in res.modalities)


def test_mrmc_identical_readers_give_infinite_ddf_not_nan():
    truth, scores = _random_study(5, k=30)
    ratings = np.stack([np.repeat(scores[:1], 3, axis=0), np.repeat(scores[1:2], 3, axis=0)])
    res = or_mrmc(ratings, truth, covariance="delong")
    assert res.random.test is not None and math.isinf(res.random.test.df2)
    assert math.isfinite(res.random.test.F) and 0 <= res.random.test.p <= 1
    assert res.fixed_cases.test is None  # MS(TR) = 0


def test_mrmc_bad_arguments():
    truth, scores = _random_study(6, k=20)
    with pytest.raises(InputError, match="covariance must be"):
        or_mrmc(scores[None], truth, covariance="bootstrap")
    with pytest.raises(InputError, match="shape"):
        or_mrmc(scores, truth)
    with pytest.raises(InputError, match="modality labels"):
        or_mrmc(scores[None], truth, modalities=["a", "b"])


# --------------------------------------------------------------------------------------------
# operating point, binomial and equivalence tests
# --------------------------------------------------------------------------------------------


def test_cutoff_metrics_counts_score_equal_to_cutoff_as_negative():
    truth = [1, 1, 1, 0, 0, 0, 0]
    score = [5, 3, 4, 3, 1, 4, 2]
    m = cutoff_metrics(truth, score, cutoff=3)
    # positives called: 5, 4 (truth 1) and 4 (truth 0); the 3s are negative calls
    assert (m.tp, m.fn, m.fp, m.tn) == (2, 1, 1, 3)
    assert m.sensitivity == pytest.approx(2 / 3)
    assert m.specificity == pytest.approx(3 / 4)
    assert m.accuracy == pytest.approx(5 / 7)
    with pytest.raises(InputError, match="cutoff"):
        cutoff_metrics(truth, score, cutoff=float("nan"))


def test_binomial_test_exact_values():
    # P(X >= 7 | n=10, p=.5) = 176/1024, two-sided = 352/1024
    res = binomial_test_accuracy(7, 10)
    assert res.p_value == pytest.approx(352 / 1024, abs=1e-12)
    assert res.accuracy == 0.7
    assert res.ci[0] < 0.7 < res.ci[1]
    assert binomial_test_accuracy(5, 10).p_value == pytest.approx(1.0)
    assert binomial_test_accuracy(0, 3).p_value == pytest.approx(2 / 8)
    with pytest.raises(InputError, match="n_correct"):
        binomial_test_accuracy(11, 10)
    with pytest.raises(InputError, match="n must be at least 1"):
        binomial_test_accuracy(0, 0)
    with pytest.raises(InputError, match="whole number"):
        binomial_test_accuracy(2.5, 10)


def test_equivalence_test_uses_delong_se():
    truth, scores = _random_study(7, k=40)
    noise = np.random.default_rng(0).normal(size=truth.size)
    res = equivalence_test_auc(truth, noise, margin=0.2, level=0.95)
    ref_auc, ref_cov = brute_delong(truth.tolist(), [noise.tolist()])
    se = math.sqrt(ref_cov[0, 0])
    p_lo = stats.norm.sf((ref_auc[0] - 0.3) / se)
    p_hi = stats.norm.cdf((ref_auc[0] - 0.7) / se)
    assert res.p_value == pytest.approx(max(p_lo, p_hi))
    assert res.equivalent == (max(p_lo, p_hi) < 0.05)
    # a strongly informative score is not equivalent to chance
    informative = equivalence_test_auc(truth, truth * 3 + noise, margin=0.1)
    assert not informative.equivalent and informative.p_value > 0.5


def test_equivalence_with_zero_se():
    truth = np.array([0, 1] * 10)
    res = equivalence_test_auc(truth, np.ones(20), margin=0.05)
    assert res.se == 0 and res.p_value == 0.0 and res.equivalent
    with pytest.raises(InputError, match="margin"):
        equivalence_test_auc(truth, np.ones(20), margin=0.7)


# --------------------------------------------------------------------------------------------
# agreement
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_weighted_kappa_matches_formula(seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 6, size=50)
    b = np.clip(a + rng.integers(-1, 2, size=50), 1, 5)
    assert weighted_kappa(a, b) == pytest.approx(brute_quadratic_kappa(a.tolist(), b.tolist()))


def test_weighted_kappa_errors():
    with pytest.raises(InputError, match="same cases"):
        weighted_kappa([1, 2, 3], [1, 2])
    with pytest.raises(InputError, match="both readers rated every case 3"):
        weighted_kappa([3, 3, 3], [3, 3, 3])
    assert weighted_kappa([1, 2, 3, 4], [1, 2, 3, 4]) == pytest.approx(1.0)


def test_pairwise_kappa_table():
    rng = np.random.default_rng(1)
    wide = pd.DataFrame(rng.integers(1, 6, size=(30, 3)), columns=["r1", "r2", "r3"])
    wide.loc[0, "r3"] = np.nan
    out = pairwise_kappa(wide)
    assert list(out.columns) == ["reader_a", "reader_b", "kappa", "n_cases"]
    assert list(zip(out.reader_a, out.reader_b, strict=True)) == [
        ("r1", "r2"),
        ("r1", "r3"),
        ("r2", "r3"),
    ]
    assert out.n_cases.tolist() == [30, 29, 29]
    both = wide[["r1", "r3"]].dropna()
    assert out.kappa[1] == pytest.approx(
        brute_quadratic_kappa(both.r1.tolist(), both.r3.tolist())
    )
    with pytest.raises(InputError, match="at least 2 reader columns"):
        pairwise_kappa(wide[["r1"]])


def test_krippendorff_alpha_ordinal_published_example():
    # Krippendorff (2011) "Computing Krippendorff's alpha-reliability", 4 observers x 12 units
    # with missing data: published ordinal alpha = 0.815.
    nan = np.nan
    data = [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, nan, nan, nan],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, nan, 3],
        [nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, nan],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, nan],
    ]
    assert krippendorff_alpha_ordinal(data) == pytest.approx(0.815, abs=5e-4)


def test_krippendorff_alpha_degenerate():
    with pytest.raises(InputError, match="every rating .* is 2"):
        krippendorff_alpha_ordinal([[2, 2, 2], [2, 2, 2]])
    with pytest.raises(InputError, match="at least 2 readers"):
        krippendorff_alpha_ordinal([[1, 2, 3]])
    with pytest.raises(InputError, match="rated by at least 2 readers"):
        krippendorff_alpha_ordinal([[1, np.nan], [np.nan, 2]])
    assert krippendorff_alpha_ordinal([[1, 2, 3, 4], [1, 2, 3, 4]]) == pytest.approx(1.0)
