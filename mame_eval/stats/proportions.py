"""Intervals and tests for 0/1 scores: exact (Clopper-Pearson) and Wilson intervals, the exact
binomial test against chance.

Every proportion the toolkit reports (adherence, pointing game, accuracy, copy rate) uses
:func:`proportion_ci`, so that 16/16 gets the interval [0.794, 1] and never the point [1, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

from scipy import stats

from mame_eval.errors import InputError
from mame_eval.stats.roc import _check_level

__all__ = ["BinomialTestResult", "binomial_test_accuracy", "proportion_ci",
           "proportion_difference_ci"]


def _counts(k, n, k_name: str) -> tuple[int, int]:
    for name, v in ((k_name, k), ("n", n)):
        if isinstance(v, bool) or not float(v).is_integer():
            raise InputError(f"{name} must be a whole number; got {v!r}")
    k, n = int(k), int(n)
    if n < 1:
        raise InputError(f"n must be at least 1; got {n}")
    if not 0 <= k <= n:
        raise InputError(f"{k_name} must be between 0 and n={n}; got {k}")
    return k, n


def proportion_ci(k: int, n: int, level: float = 0.95, method: str = "exact"
                  ) -> tuple[float, float]:
    """Confidence interval of a proportion ``k / n``.

    Parameters
    ----------
    k, n : int
        Successes and trials, ``0 <= k <= n``, ``n >= 1``.
    level : float
        Confidence level in (0, 1).
    method : str
        ``"exact"`` (Clopper-Pearson, guaranteed coverage >= level; the default) or ``"wilson"``
        (score interval, coverage close to level on average), both from
        :meth:`scipy.stats.binomtest(...).proportion_ci`.

    Returns
    -------
    (low, high) in [0, 1]; a proper interval even at k = 0 or k = n.
    """
    level = _check_level(level)
    if method not in ("exact", "wilson"):
        raise InputError(f"method {method!r}: expected 'exact' or 'wilson'")
    k, n = _counts(k, n, "k")
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=level, method=method)
    return float(ci.low), float(ci.high)


def proportion_difference_ci(k_a: int, n_a: int, k_b: int, n_b: int, level: float = 0.95
                             ) -> tuple[float, float]:
    """Confidence interval of ``k_b/n_b − k_a/n_a`` for two independent proportions: Newcombe's
    (1998, Stat Med 17:873, method 10) hybrid score interval from the two Wilson intervals.

    Unlike a bootstrap of 0/1 values it does not collapse to a point when both proportions
    are 0 or 1 (16/16 vs 16/16 gives about [−0.19, 0.19]). Returns ``(low, high)`` in [−1, 1].
    """
    pa, pb = k_a / _counts(k_a, n_a, "k_a")[1], k_b / _counts(k_b, n_b, "k_b")[1]
    la, ua = proportion_ci(k_a, n_a, level, method="wilson")
    lb, ub = proportion_ci(k_b, n_b, level, method="wilson")
    d = pb - pa
    low = d - ((pb - lb) ** 2 + (ua - pa) ** 2) ** 0.5
    high = d + ((ub - pb) ** 2 + (pa - la) ** 2) ** 0.5
    return max(-1.0, low), min(1.0, high)


@dataclass(frozen=True)
class BinomialTestResult:
    """Exact binomial test of accuracy against chance (0.5)."""

    n_correct: int
    n: int
    accuracy: float
    p_value: float
    ci: tuple[float, float]  # exact Clopper-Pearson interval of the accuracy


def binomial_test_accuracy(n_correct: int, n: int, level: float = 0.95) -> BinomialTestResult:
    """Exact two-sided binomial test of ``accuracy == 0.5`` (e.g. real-vs-synthetic guessing).

    Parameters
    ----------
    n_correct : int
        Number of correct calls, ``0 <= n_correct <= n``.
    n : int
        Number of calls, ``n >= 1``.
    level : float
        Confidence level of the Clopper-Pearson interval.

    Returns
    -------
    BinomialTestResult
        ``p_value`` from :func:`scipy.stats.binomtest` (two-sided, p = 0.5).
    """
    n_correct, n = _counts(n_correct, n, "n_correct")
    res = stats.binomtest(n_correct, n, p=0.5, alternative="two-sided")
    return BinomialTestResult(
        n_correct=n_correct,
        n=n,
        accuracy=n_correct / n,
        p_value=float(res.pvalue),
        ci=proportion_ci(n_correct, n, level),
    )
