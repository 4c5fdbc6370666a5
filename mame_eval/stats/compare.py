"""Comparing classifiers evaluated on the same cases: paired AUROC contrasts, seed-level
differences, sensitivity at a fixed specificity. Arrays in, numbers out.

Two sources of uncertainty meet when two training recipes are compared on one test set:

* **test cases** — another test set of the same size would give other AUROCs. The DeLong (1988)
  covariance of AUROCs measured on the *same* cases accounts for the pairing;
  :func:`auc_contrast` gives any linear contrast ``Σ w_p · AUC_p`` with its standard error
  (e.g. mean over seeds of recipe B minus mean over seeds of recipe A), conditional on the
  trained models;
* **training runs** — another seed gives another model. :func:`paired_mean_difference` gives
  the Student-t interval of the mean of per-seed differences (exact for normal differences, so
  it keeps its coverage with the three seeds a study can afford, where a bootstrap of three
  values would not).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from mame_eval.errors import InputError
from mame_eval.stats.roc import CutoffMetrics, cutoff_metrics, delong_cov

__all__ = ["AucContrast", "MeanDifference", "auc_contrast", "holm", "paired_mean_difference",
           "sensitivity_at_specificity"]


def _check_level(level: float) -> float:
    if not 0.0 < float(level) < 1.0:
        raise InputError(f"level must be strictly between 0 and 1; got {level!r}")
    return float(level)


@dataclass(frozen=True)
class AucContrast:
    """A linear contrast of AUROCs measured on the same cases, with its DeLong SE."""

    estimate: float
    se: float
    ci: tuple[float, float]
    p: float  # two-sided, H0: contrast = 0 (normal approximation); 1.0 when se = 0 and est = 0
    n_pos: int
    n_neg: int


def auc_contrast(truth, scores, weights, level: float = 0.95) -> AucContrast:
    """``Σ_p w_p · AUC_p`` of P score vectors rated on the same K cases, with a Wald CI.

    Parameters
    ----------
    truth : array-like, shape (K,)
        0/1 labels with at least 2 cases of each class.
    scores : array-like, shape (P, K)
    weights : array-like, shape (P,)
        e.g. ``[1, -1]`` for a paired difference, ``[1/S]*S + [-1/S]*S`` for the difference of
        two means over S seeds each.

    Returns
    -------
    AucContrast
        ``se = sqrt(wᵀ C w)`` with ``C`` the DeLong covariance (:func:`delong_cov`); the CI is
        ``estimate ± z · se`` (not clipped: a difference of AUROCs lies in [−1, 1]); ``p`` from
        the normal distribution.
    """
    level = _check_level(level)
    s = np.asarray(scores, dtype=float)
    if s.ndim != 2:
        raise InputError(f"scores must have shape (P, K); got shape {s.shape}")
    w = np.asarray(weights, dtype=float).ravel()
    if w.size != s.shape[0]:
        raise InputError(f"{w.size} weights for {s.shape[0]} score vectors")
    auc, cov = delong_cov(truth, s)
    estimate = float(w @ auc)
    se = float(math.sqrt(max(float(w @ cov @ w), 0.0)))
    z = float(stats.norm.ppf(0.5 + level / 2))
    p = float(2 * stats.norm.sf(abs(estimate) / se)) if se > 0 else float(estimate == 0)
    t = np.asarray(truth).ravel()
    return AucContrast(estimate, se, (estimate - z * se, estimate + z * se), p,
                       int(np.sum(t == 1)), int(np.sum(t == 0)))


@dataclass(frozen=True)
class MeanDifference:
    """Mean of paired differences ``b − a`` with a Student-t interval and paired t-test."""

    mean: float
    sd: float | None
    n: int
    ci: tuple[float, float] | tuple[None, None]
    p: float | None
    n_positive: int  # pairs with b > a


def paired_mean_difference(a, b, level: float = 0.95) -> MeanDifference:
    """Mean of ``b_i − a_i`` over n pairs (e.g. seeds) with the t-interval (df = n − 1).

    ``ci`` and ``p`` are ``None`` for fewer than 2 pairs (one difference has no spread). When
    every difference is equal the interval is that point and ``p`` is 0 (or 1 if it is 0).
    """
    level = _check_level(level)
    a = np.asarray(a, dtype=float).ravel()
    b = np.asarray(b, dtype=float).ravel()
    if a.shape != b.shape:
        raise InputError(f"paired values need equal lengths; got {a.size} and {b.size}")
    if a.size == 0:
        raise InputError("no pairs to compare")
    d = b - a
    n = int(d.size)
    mean = float(d.mean())
    positive = int(np.sum(d > 0))
    if n < 2:
        return MeanDifference(mean, None, n, (None, None), None, positive)
    sd = float(d.std(ddof=1))
    se = sd / math.sqrt(n)
    if se == 0:
        return MeanDifference(mean, sd, n, (mean, mean), 1.0 if mean == 0 else 0.0, positive)
    q = float(stats.t.ppf(0.5 + level / 2, n - 1))
    p = float(2 * stats.t.sf(abs(mean) / se, n - 1))
    return MeanDifference(mean, sd, n, (mean - q * se, mean + q * se), p, positive)


def sensitivity_at_specificity(truth, score, specificity: float) -> CutoffMetrics:
    """The operating point with specificity ≥ ``specificity`` and the highest sensitivity.

    The cutoff is the ``⌈specificity · n_neg⌉``-th smallest negative score (positive call =
    ``score > cutoff``, as :func:`mame_eval.stats.roc.cutoff_metrics`), so at least that share
    of negatives is called negative. Chosen on the same cases it is measured on — the usual
    empirical ROC point; its sensitivity CI (exact, over the positives) ignores the cutoff's
    own uncertainty.
    """
    if not 0.0 < float(specificity) < 1.0:
        raise InputError(f"specificity must be strictly between 0 and 1; got {specificity!r}")
    t = np.asarray(truth).ravel()
    s = np.asarray(score, dtype=float).ravel()
    neg = np.sort(s[t == 0])
    if neg.size == 0 or not np.any(t == 1):
        raise InputError("sensitivity at a fixed specificity needs positive and negative cases")
    k = max(1, math.ceil(float(specificity) * neg.size - 1e-9))
    return cutoff_metrics(t, s, float(neg[k - 1]))


def holm(p_values) -> np.ndarray:
    """Holm (1979) step-down adjusted p-values (family-wise error over the given tests).

    ``p_(i)`` sorted ascending becomes ``max_{j ≤ i} min(1, (m − j + 1) · p_(j))``; NaN stays
    NaN and does not count as a test.
    """
    p = np.asarray(p_values, dtype=float).ravel()
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = ok.size
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    adjusted = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(adjusted)
    return out
