"""ROC analysis: the empirical ROC curve, AUROC with DeLong / jackknife variances, cut-off metrics
and the equivalence of an AUROC to chance.

Conventions used throughout
---------------------------
* ``truth`` is a 1-D array of 0/1 labels (1 = positive / diseased / "real"), ``score`` a 1-D
  array of the same length where a *higher* score means "more likely positive".
* The AUROC is the empirical (trapezoidal, Mann-Whitney) area: the probability that a random
  positive case scores higher than a random negative case, ties counting 1/2. It equals
  :func:`sklearn.metrics.roc_auc_score`.
* Placement values (DeLong et al. 1988 "structural components"): for positive case ``i``
  ``V10[i] = mean_j psi(x_i, y_j)`` over negatives, for negative case ``j``
  ``V01[j] = mean_i psi(x_i, y_j)`` over positives, with ``psi(x, y) = 1[x > y] + 1/2 1[x == y]``.
  ``AUC = mean(V10) = mean(V01)``.
* Variances need at least two cases of each class; fewer raises :class:`InputError`.
* Degenerate but valid inputs (e.g. all scores equal) give defined numbers (AUC 0.5, SE 0, a
  zero-width CI), never NaN.

The multi-reader multi-case (Obuchowski-Rockette) analysis lives in :mod:`mame_eval.stats.mrmc`,
agreement between readers in :mod:`mame_eval.stats.agreement`, intervals of proportions in
:mod:`mame_eval.stats.proportions`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from mame_eval.errors import InputError

__all__ = [
    "CutoffMetrics",
    "EquivalenceResult",
    "auc_covariance",
    "auroc",
    "cutoff_metrics",
    "delong_ci",
    "delong_cov",
    "equivalence_test_auc",
    "jackknife_cov",
    "jackknife_se",
    "normal_or_t_quantile",
    "placement_values",
    "roc_curve_empirical",
]


# --------------------------------------------------------------------------------------------
# input validation
# --------------------------------------------------------------------------------------------


def _as_truth(truth, *, name: str = "truth") -> np.ndarray:
    """Return ``truth`` as a 1-D int array of 0/1, or raise InputError."""
    arr = np.asarray(truth)
    if arr.ndim != 1:
        raise InputError(f"{name} must be 1-D (one label per case); got shape {arr.shape}")
    if arr.size == 0:
        raise InputError(f"{name} is empty; expected one 0/1 label per case")
    if arr.dtype == bool:
        return arr.astype(int)
    try:
        num = arr.astype(float)
    except (TypeError, ValueError):
        bad = sorted({str(v) for v in arr.tolist()} - {"0", "1"})[:5]
        raise InputError(f"{name} must be 0/1 (1 = positive); found values {bad}") from None
    ok = (num == 0) | (num == 1)
    if not ok.all():
        bad = sorted({repr(v) for v in arr[~ok].tolist()})[:5]
        raise InputError(f"{name} must be 0/1 (1 = positive); found values {', '.join(bad)}")
    return num.astype(int)


def _as_scores(score, n_cases: int, *, name: str = "score") -> np.ndarray:
    """Return ``score`` as a float array whose last axis has ``n_cases`` entries."""
    try:
        arr = np.asarray(score, dtype=float)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be numeric") from None
    if arr.ndim == 0 or arr.shape[-1] != n_cases:
        raise InputError(
            f"{name} must have one value per case ({n_cases}); got shape {arr.shape}"
        )
    if not np.isfinite(arr).all():
        n_bad = int((~np.isfinite(arr)).sum())
        raise InputError(f"{name} has {n_bad} missing or non-finite value(s); all must be finite")
    return arr


def _check_classes(truth: np.ndarray, *, min_per_class: int, purpose: str) -> None:
    n_pos = int(truth.sum())
    n_neg = int(truth.size - n_pos)
    if n_pos < min_per_class or n_neg < min_per_class:
        raise InputError(
            f"{purpose} needs at least {min_per_class} positive (truth 1) and {min_per_class} "
            f"negative (truth 0) case(s); got {n_pos} positive and {n_neg} negative"
        )


def _validate(truth, score, *, min_per_class: int = 1, purpose: str = "the AUROC"):
    t = _as_truth(truth)
    s = _as_scores(score, t.size)
    _check_classes(t, min_per_class=min_per_class, purpose=purpose)
    return t, s


# --------------------------------------------------------------------------------------------
# ROC curve and AUROC
# --------------------------------------------------------------------------------------------


def roc_curve_empirical(truth, score) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Empirical ROC curve with one operating point per distinct score.

    Parameters
    ----------
    truth : array-like, shape (K,)
        0/1 labels (1 = positive). Both classes must be present.
    score : array-like, shape (K,)
        Scores, higher = more likely positive.

    Returns
    -------
    fpr, tpr, thresholds : ndarray, shape (D + 1,)
        ``D`` = number of distinct scores. A case is called positive when
        ``score >= threshold``; ``thresholds`` decrease from ``+inf`` (the (0, 0) point)
        to the smallest score (the (1, 1) point). Unlike sklearn, collinear points are kept.
        The trapezoidal area under (fpr, tpr) equals :func:`auroc`.
    """
    t, s = _validate(truth, score, purpose="an ROC curve")
    order = np.argsort(-s, kind="mergesort")
    s_sorted, t_sorted = s[order], t[order]
    # last index of each run of equal scores (scores sorted descending)
    last = np.r_[np.flatnonzero(np.diff(s_sorted) != 0), s_sorted.size - 1]
    tps = np.cumsum(t_sorted)[last]
    fps = (last + 1) - tps
    n_pos, n_neg = t.sum(), t.size - t.sum()
    tpr = np.r_[0.0, tps / n_pos]
    fpr = np.r_[0.0, fps / n_neg]
    thresholds = np.r_[np.inf, s_sorted[last]]
    return fpr, tpr, thresholds


def placement_values(truth, score) -> tuple[np.ndarray, np.ndarray]:
    """DeLong placement values (structural components) of one score vector.

    Parameters
    ----------
    truth : array-like, shape (K,)
        0/1 labels; both classes present.
    score : array-like, shape (K,)

    Returns
    -------
    v10 : ndarray, shape (m,)
        For each positive case (in input order): fraction of negatives it out-scores, ties 1/2.
    v01 : ndarray, shape (n,)
        For each negative case (in input order): fraction of positives that out-score it,
        ties 1/2.

    Computed by sorting, O(K log K); ``mean(v10) == mean(v01) == AUROC``.
    """
    t, s = _validate(truth, score, purpose="placement values")
    return _placements(s[t == 1], s[t == 0])


def _placements(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Placement values for positive scores ``x`` (m,) and negative scores ``y`` (n,)."""
    ys = np.sort(y)
    lo = np.searchsorted(ys, x, side="left")
    hi = np.searchsorted(ys, x, side="right")
    v10 = (lo + 0.5 * (hi - lo)) / y.size
    xs = np.sort(x)
    lo = np.searchsorted(xs, y, side="left")
    hi = np.searchsorted(xs, y, side="right")
    v01 = (x.size - hi + 0.5 * (hi - lo)) / x.size
    return v10, v01


def auroc(truth, score) -> float:
    """Empirical area under the ROC curve (Mann-Whitney; ties count 1/2).

    Parameters
    ----------
    truth : array-like, shape (K,)
        0/1 labels; both classes must be present (one case of each is enough).
    score : array-like, shape (K,)

    Returns
    -------
    float in [0, 1]; equals ``sklearn.metrics.roc_auc_score(truth, score)``.
    """
    t, s = _validate(truth, score)
    v10, _ = _placements(s[t == 1], s[t == 0])
    return float(v10.mean())


def _placements_matrix(truth: np.ndarray, scores: np.ndarray):
    """Placement values of P score vectors. scores (P, K) -> auc (P,), v10 (P, m), v01 (P, n)."""
    pos, neg = truth == 1, truth == 0
    v10 = np.empty((scores.shape[0], int(pos.sum())))
    v01 = np.empty((scores.shape[0], int(neg.sum())))
    for p, row in enumerate(scores):
        v10[p], v01[p] = _placements(row[pos], row[neg])
    return v10.mean(axis=1), v10, v01


def _as_score_matrix(truth, scores, *, purpose: str):
    t = _as_truth(truth)
    s = _as_scores(scores, t.size, name="scores")
    if s.ndim == 1:
        s = s[None, :]
    if s.ndim != 2:
        raise InputError(f"scores must have shape (P, K) or (K,); got shape {s.shape}")
    _check_classes(t, min_per_class=2, purpose=purpose)
    return t, s


def delong_cov(truth, scores) -> tuple[np.ndarray, np.ndarray]:
    """AUROCs of several score vectors on the same cases and their DeLong (1988) covariance.

    Parameters
    ----------
    truth : array-like, shape (K,)
        0/1 labels with at least 2 cases of each class.
    scores : array-like, shape (P, K) or (K,)
        P score vectors (e.g. readers x modalities, flattened) rated on the same K cases.

    Returns
    -------
    auc : ndarray, shape (P,)
    cov : ndarray, shape (P, P)
        ``cov = S10 / m + S01 / n`` where S10 (S01) is the sample covariance (denominator
        ``m - 1`` / ``n - 1``) of the placement values of the m positives (n negatives).
    """
    t, s = _as_score_matrix(truth, scores, purpose="the DeLong covariance")
    auc, v10, v01 = _placements_matrix(t, s)
    m, n = v10.shape[1], v01.shape[1]
    cov = np.atleast_2d(np.cov(v10, ddof=1)) / m + np.atleast_2d(np.cov(v01, ddof=1)) / n
    return auc, cov


def jackknife_cov(truth, scores) -> tuple[np.ndarray, np.ndarray]:
    """AUROCs of several score vectors and their leave-one-case-out jackknife covariance.

    Parameters
    ----------
    truth : array-like, shape (K,)
        0/1 labels with at least 2 cases of each class.
    scores : array-like, shape (P, K) or (K,)

    Returns
    -------
    auc : ndarray, shape (P,)
        AUROCs on all cases.
    cov : ndarray, shape (P, P)
        ``(K - 1) / K * sum_k (theta_(k) - theta_bar)(theta_(k) - theta_bar)^T`` where
        ``theta_(k)`` are the AUROCs with case ``k`` removed (every case, both classes) and
        ``theta_bar`` their mean. This is the covariance used by the Obuchowski-Rockette
        analysis in RJafroc / MRMCaov ("jackknife" method). Computed in O(P K log K) through
        placement values: removing positive ``i`` gives ``(m AUC - V10[i]) / (m - 1)``.
    """
    t, s = _as_score_matrix(truth, scores, purpose="the jackknife covariance")
    auc, v10, v01 = _placements_matrix(t, s)
    m, n = v10.shape[1], v01.shape[1]
    loo = np.concatenate(
        [(m * auc[:, None] - v10) / (m - 1), (n * auc[:, None] - v01) / (n - 1)], axis=1
    )  # (P, K)
    k = loo.shape[1]
    dev = loo - loo.mean(axis=1, keepdims=True)
    return auc, (k - 1) / k * (dev @ dev.T)


def auc_covariance(truth, scores, method: str = "jackknife") -> tuple[np.ndarray, np.ndarray]:
    """Dispatch to :func:`jackknife_cov` (``method="jackknife"``) or :func:`delong_cov`."""
    if method == "jackknife":
        return jackknife_cov(truth, scores)
    if method == "delong":
        return delong_cov(truth, scores)
    raise InputError(f"covariance method must be 'jackknife' or 'delong'; got {method!r}")


def normal_or_t_quantile(q: float, df: float) -> float:
    """``q`` quantile of Student's t with ``df`` degrees of freedom (normal when df = inf)."""
    if np.isinf(df):
        return float(stats.norm.ppf(q))
    return float(stats.t.ppf(q, df))


def _check_level(level: float) -> float:
    if not 0.0 < float(level) < 1.0:
        raise InputError(f"level must be strictly between 0 and 1; got {level!r}")
    return float(level)


def delong_ci(truth, score, level: float = 0.95) -> tuple[float, float, tuple[float, float]]:
    """AUROC with its DeLong standard error and a Wald confidence interval.

    Parameters
    ----------
    truth : array-like, shape (K,)
        0/1 labels with at least 2 cases of each class.
    score : array-like, shape (K,)
    level : float
        Two-sided confidence level (default 0.95).

    Returns
    -------
    auc, se, (lo, hi)
        ``auc +/- z_{(1+level)/2} * se`` clipped to [0, 1]. When every score is equal (or the
        classes are perfectly separated) the SE is 0 and the interval has zero width.
    """
    level = _check_level(level)
    auc, cov = delong_cov(truth, score)
    se = float(np.sqrt(max(cov[0, 0], 0.0)))
    z = float(stats.norm.ppf(0.5 + level / 2))
    a = float(auc[0])
    return a, se, (max(0.0, a - z * se), min(1.0, a + z * se))


def jackknife_se(truth, score) -> float:
    """Leave-one-case-out jackknife standard error of the AUROC (see :func:`jackknife_cov`).

    Parameters
    ----------
    truth : array-like, shape (K,)
        0/1 labels with at least 2 cases of each class.
    score : array-like, shape (K,)

    Returns
    -------
    float >= 0 (AUC units).
    """
    _, cov = jackknife_cov(truth, score)
    return float(np.sqrt(max(cov[0, 0], 0.0)))


# --------------------------------------------------------------------------------------------
# operating point, binomial test, equivalence test
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CutoffMetrics:
    """Confusion counts and rates at one cutoff (positive call = ``score > cutoff``)."""

    cutoff: float
    tp: int
    fp: int
    tn: int
    fn: int
    accuracy: float
    sensitivity: float
    specificity: float


def cutoff_metrics(truth, score, cutoff: float) -> CutoffMetrics:
    """Accuracy, sensitivity and specificity when cases with ``score > cutoff`` are called positive.

    A score *equal* to the cutoff is called negative (e.g. on a 1-5 confidence scale,
    ``cutoff=3`` calls 4 and 5 positive).

    Parameters
    ----------
    truth : array-like, shape (K,)
        0/1 labels; both classes must be present (so both rates are defined).
    score : array-like, shape (K,)
    cutoff : float

    Returns
    -------
    CutoffMetrics
        Counts and rates in [0, 1].
    """
    t, s = _validate(truth, score, purpose="sensitivity and specificity")
    if not np.isfinite(cutoff):
        raise InputError(f"cutoff must be a finite number; got {cutoff!r}")
    call = s > cutoff
    tp = int(np.sum(call & (t == 1)))
    fn = int(np.sum(~call & (t == 1)))
    fp = int(np.sum(call & (t == 0)))
    tn = int(np.sum(~call & (t == 0)))
    return CutoffMetrics(
        cutoff=float(cutoff),
        tp=tp,
        fp=fp,
        tn=tn,
        fn=fn,
        accuracy=(tp + tn) / t.size,
        sensitivity=tp / (tp + fn),
        specificity=tn / (tn + fp),
    )


@dataclass(frozen=True)
class EquivalenceResult:
    """TOST equivalence of an AUROC to chance (0.5 +/- margin)."""

    auc: float
    se: float
    margin: float
    p_lower: float  # H0: AUC <= 0.5 - margin
    p_upper: float  # H0: AUC >= 0.5 + margin
    p_value: float  # max(p_lower, p_upper)
    equivalent: bool  # p_value < 1 - level
    ci: tuple[float, float]  # (2 level - 1) Wald interval, e.g. 90 % for level 0.95


def equivalence_test_auc(
    truth, score, margin: float = 0.1, level: float = 0.95
) -> EquivalenceResult:
    """Two one-sided tests (TOST) that the AUROC lies within ``0.5 +/- margin``.

    Used to claim readers cannot tell two image sources apart. Each one-sided z-test uses the
    DeLong SE at significance ``alpha = 1 - level``; equivalence is declared when both reject,
    i.e. when the ``1 - 2 alpha`` Wald interval lies inside ``(0.5 - margin, 0.5 + margin)``.

    Parameters
    ----------
    truth : array-like, shape (K,)
        0/1 labels with at least 2 cases of each class.
    score : array-like, shape (K,)
    margin : float
        Equivalence margin in AUC units, ``0 < margin <= 0.5``.
    level : float
        ``1 - alpha`` of each one-sided test.

    Returns
    -------
    EquivalenceResult
        With SE 0 the p-values are 0 (AUC strictly inside the margin) or 1.
    """
    level = _check_level(level)
    if not 0.0 < float(margin) <= 0.5:
        raise InputError(f"margin must be in (0, 0.5] AUC units; got {margin!r}")
    auc, se, _ = delong_ci(truth, score)
    lo_b, hi_b = 0.5 - margin, 0.5 + margin
    if se > 0:
        p_lower = float(stats.norm.sf((auc - lo_b) / se))
        p_upper = float(stats.norm.cdf((auc - hi_b) / se))
    else:
        p_lower = 0.0 if auc > lo_b else 1.0
        p_upper = 0.0 if auc < hi_b else 1.0
    p = max(p_lower, p_upper)
    z = float(stats.norm.ppf(level))
    return EquivalenceResult(
        auc=auc,
        se=se,
        margin=float(margin),
        p_lower=p_lower,
        p_upper=p_upper,
        p_value=p,
        equivalent=bool(p < 1 - level),
        ci=(auc - z * se, auc + z * se),
    )


def _ensure_labels(labels: Sequence | None, n: int, what: str) -> tuple[str, ...]:
    """Labels as strings ('1'..'n' by default), checked for length and uniqueness."""
    if labels is None:
        return tuple(str(i + 1) for i in range(n))
    out = tuple(str(v) for v in labels)
    if len(out) != n:
        raise InputError(f"{what} labels: expected {n}, got {len(out)}")
    if len(set(out)) != n:
        raise InputError(f"{what} labels must be unique; got {list(out)}")
    return out
