"""Trends across guidance scales with a paired bootstrap interval.

Every guidance scale of a sweep starts image i from the same seed S+i, so the scales are
*paired* by seed: one bootstrap draw of the seeds (or images, or independent pairs), applied to
every scale at once, gives a replicate of the whole curve m(g). The change between the first
and the last scale and the least-squares slope of m on g are computed on each replicate; their
percentile intervals are the trend's CI. The pairing cancels what the scales share (which
seeds happened to be drawn), so the interval of a change is much narrower than the two
scales' own intervals would suggest.

The resampling is the caller's (it knows its units); this module turns point values and
replicates into the :class:`Trend` and its sentence.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from mame_eval.errors import InputError
from mame_eval.stats.bootstrap import percentile_interval

__all__ = ["TREND_COLUMNS", "Trend", "paired_trend", "slopes", "subsample_trend"]

TREND_COLUMNS = ["metric", "from_guidance", "to_guidance", "change", "change_ci_low",
                 "change_ci_high", "slope", "slope_ci_low", "slope_ci_high", "unit", "n_units",
                 "level", "n_boot", "method", "text"]


@dataclass
class Trend:
    """The change of ``metric`` from the first to the last guidance scale and its slope per
    unit of guidance, each with a paired percentile bootstrap CI (``level``) over ``n_units``
    resampled ``unit`` (seeds, images, pairs)."""

    metric: str
    from_guidance: float
    to_guidance: float
    change: float
    change_ci_low: float
    change_ci_high: float
    slope: float
    slope_ci_low: float
    slope_ci_high: float
    unit: str
    n_units: int
    level: float
    n_boot: int
    label: str = ""
    method: str = "paired bootstrap"

    @property
    def text(self) -> str:
        """E.g. ``MS-SSIM rises with guidance: +0.130 [0.080, 0.170] from 4 to 14``; a CI that
        holds 0 says so instead of naming a direction."""
        name = self.label or self.metric
        span = f"from {self.from_guidance:g} to {self.to_guidance:g}"
        interval = f"{self.change:+.3f} [{self.change_ci_low:+.3f}, {self.change_ci_high:+.3f}]"
        if self.change_ci_low > 0:
            verdict = "rises with guidance"
        elif self.change_ci_high < 0:
            verdict = "falls with guidance"
        else:
            verdict = "shows no clear change with guidance"
        pct = f"{100 * self.level:g} %"
        return (f"{name} {verdict}: {interval} {span} ({pct} {self.method} over "
                f"{self.n_units} {self.unit})")

    def row(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k != "label"}
        out["text"] = self.text
        return out


def slopes(guidance: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Least-squares slopes of ``values`` (..., G) on ``guidance`` (G,), along the last axis."""
    g = np.asarray(guidance, dtype=float)
    centred = g - g.mean()
    values = np.asarray(values, dtype=float)
    return (values - values.mean(-1, keepdims=True)) @ centred / (centred @ centred)


def _by_scale(metric: str, guidance, estimate, replicates):
    """Scales, estimates (G,) and replicates (B, G) checked, sorted by scale, with the
    replicates where the metric is undefined (NaN) dropped; None when no trend can be drawn
    (fewer than 2 distinct scales or 2 finite replicates, or a non-finite estimate)."""
    g = np.asarray(guidance, dtype=float)
    est = np.asarray(estimate, dtype=float)
    reps = np.asarray(replicates, dtype=float)
    if reps.ndim != 2 or reps.shape[1] != len(g) or est.shape != g.shape:
        raise InputError(f"trend of {metric}: expected (G,) scales and estimates and (B, G) "
                         f"replicates; got {g.shape}, {est.shape}, {reps.shape}")
    if len(g) < 2 or len(np.unique(g)) < 2:
        return None
    order = np.argsort(g, kind="stable")
    g, est, reps = g[order], est[order], reps[:, order]
    reps = reps[np.isfinite(reps).all(1)]
    if len(reps) < 2 or not np.isfinite(est).all():
        return None
    return g, est, reps


def paired_trend(metric: str, guidance, estimate, replicates, unit: str, n_units: int,
                 level: float = 0.95, label: str = "") -> Trend | None:
    """The :class:`Trend` of a metric from its values per scale and paired replicates.

    Args:
        guidance: (G,) scales, G ≥ 2, in the order of the other arguments.
        estimate: (G,) the metric per scale on the data as measured.
        replicates: (B, G) the metric per scale on each paired bootstrap draw (NaN: a draw
            where the metric is undefined; such replicates are dropped).
        unit, n_units: what was resampled (e.g. "seeds", 20).

    Returns:
        ``None`` for fewer than 2 scales or fewer than 2 finite replicates.
    """
    checked = _by_scale(metric, guidance, estimate, replicates)
    if checked is None:
        return None
    g, est, reps = checked
    change = reps[:, -1] - reps[:, 0]
    slope = slopes(g, reps)
    return Trend(metric, float(g[0]), float(g[-1]), float(est[-1] - est[0]),
                 *percentile_interval(change, level), float(slopes(g, est)),
                 *percentile_interval(slope, level), unit, int(n_units), level, len(reps),
                 label)


def subsample_trend(metric: str, guidance, estimate, subset_values, fraction: float, unit: str,
                    n_units: int, level: float = 0.95, label: str = "") -> Trend | None:
    """A :class:`Trend` whose interval comes from paired subsets drawn without replacement.

    For statistics that a with-replacement bootstrap biases (FID: duplicated points inflate
    it) the change and slope are computed on each paired subset of a ``fraction`` of the units;
    their variance at the full size is the subsets' variance times fraction/(1 − fraction)
    (delete-d jackknife), and the interval is estimate ± z·SE around the full-data change.

    Args:
        guidance: (G,) scales; estimate: (G,) the metric per scale on all data (e.g. FID∞);
        subset_values: (B, G) the metric per scale on each paired subset.
    """
    if not 0 < fraction < 1:
        raise InputError(f"fraction {fraction}: expected a number in (0, 1)", param="fraction")
    checked = _by_scale(metric, guidance, estimate, subset_values)
    if checked is None:
        return None
    g, est, reps = checked
    from scipy.stats import norm

    z = float(norm.ppf(0.5 + level / 2))
    scale = fraction / (1 - fraction)
    change, slope = float(est[-1] - est[0]), float(slopes(g, est))
    se_change = float(np.sqrt(scale * np.var(reps[:, -1] - reps[:, 0], ddof=1)))
    se_slope = float(np.sqrt(scale * np.var(slopes(g, reps), ddof=1)))
    return Trend(metric, float(g[0]), float(g[-1]), change, change - z * se_change,
                 change + z * se_change, slope, slope - z * se_slope, slope + z * se_slope,
                 unit, int(n_units), level, len(reps), label,
                 method="paired subsampling (delete-d jackknife)")

