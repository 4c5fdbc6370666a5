"""Percentile bootstrap intervals (seeded): the one implementation every command uses.

The replicates come from the caller when the resampling unit is special (images of a pair
matrix, seeds shared across prompts); :func:`percentile_interval` turns them into an interval.
For the common case of a mean of independent values :func:`bootstrap_mean_ci` and
:func:`bootstrap_difference_ci` do the resampling too.
"""

from __future__ import annotations

import numpy as np

from mame_eval.errors import InputError

__all__ = ["bootstrap_difference_ci", "bootstrap_mean_ci", "percentile_interval"]


def percentile_interval(replicates, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` percentile interval of bootstrap ``replicates`` (NaNs dropped).

    Raises :class:`InputError` when no finite replicate is left.
    """
    if not 0 < level < 1:
        raise InputError(f"level {level}: expected a number in (0, 1)")
    values = np.asarray(replicates, dtype=float).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise InputError("no finite bootstrap replicate to form an interval from")
    alpha = (1.0 - level) / 2
    lo, hi = np.quantile(values, [alpha, 1 - alpha])
    return float(lo), float(hi)


def _resampled_means(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``n_boot`` means of ``values`` resampled with replacement, shape (n_boot,)."""
    return values[rng.integers(0, len(values), size=(n_boot, len(values)))].mean(axis=1)


def bootstrap_mean_ci(values, n_boot: int = 2000, level: float = 0.95,
                      rng: np.random.Generator | int | None = 0
                      ) -> tuple[float | None, float | None]:
    """Percentile bootstrap CI of the mean of independent ``values`` (shape (n,)).

    Returns ``(None, None)`` for fewer than 2 values: one value has no sampling spread to
    resample. For 0/1 values use :func:`mame_eval.stats.proportions.proportion_ci` instead —
    the bootstrap of 16 ones is the point [1, 1].
    """
    values = np.asarray(values, dtype=float).ravel()
    if len(values) < 2:
        return None, None
    return percentile_interval(_resampled_means(values, n_boot, np.random.default_rng(rng)),
                               level)


def bootstrap_difference_ci(a, b, n_boot: int = 2000, level: float = 0.95,
                            rng: np.random.Generator | int | None = 0
                            ) -> tuple[float | None, float | None]:
    """Percentile bootstrap CI of ``mean(b) − mean(a)`` for two independent groups, each
    resampled on its own; ``(None, None)`` when a group has fewer than 2 values."""
    a = np.asarray(a, dtype=float).ravel()
    b = np.asarray(b, dtype=float).ravel()
    if len(a) < 2 or len(b) < 2:
        return None, None
    rng = np.random.default_rng(rng)
    da = _resampled_means(a, n_boot, rng)
    db = _resampled_means(b, n_boot, rng)
    return percentile_interval(db - da, level)
