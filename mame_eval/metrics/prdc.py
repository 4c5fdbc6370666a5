"""Precision, recall, density and coverage of synthetic features against real ones.

On the same (N, d) feature matrices as FID (:mod:`mame_eval.metrics.features`), each real or
synthetic image is a point; a point's k-NN ball has the distance to its k-th nearest
neighbour within its own set (itself excluded) as radius.

* precision / recall (Kynkäänniemi et al. 2019, "Improved precision and recall metric for
  assessing generative models", k = 3): the share of synthetic points inside at least one
  real ball (fidelity), and of real points inside at least one synthetic ball (diversity).
  Inside means distance ≤ radius, as in their code.
* density / coverage (Naeem et al. 2020, "Reliable fidelity and diversity metrics for
  generative models", k = 5): density = mean over synthetic points of the number of real
  balls holding it, divided by k (≈ 1 when the sets are alike, not bounded by 1); coverage =
  the share of real balls holding at least one synthetic point. Inside means distance <
  radius, as in their ``prdc`` package.

All four depend on N through the radii (balls shrink as N grows): compare them at equal N.
Intervals (:func:`prdc_interval`) come from subsampling *without* replacement — a bootstrap
with replacement would duplicate points, whose k-NN radii collapse — with the delete-d
jackknife variance f/(1 − f)·Var(subset values) at fraction f and a normal interval around
the full-set value; they describe the sampling spread of the metric at this N.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.distance import cdist
from scipy.stats import norm

from mame_eval.errors import InputError
from mame_eval.metrics.distribution import _as_features

__all__ = ["PRDC_NAMES", "PrdcResult", "prdc", "prdc_interval"]

PRDC_NAMES = ("precision", "recall", "density", "coverage")


def _kth_radius(self_distances: np.ndarray, k: int) -> np.ndarray:
    """Distance of each point to its k-th nearest neighbour in its own set, shape (m,).

    Row i of ``self_distances`` (m, m) holds 0 for the point itself, so the k-th neighbour
    is the (k+1)-th smallest value: index k after partitioning.
    """
    return np.partition(self_distances, k, axis=1)[:, k]


def _scores(d_rr: np.ndarray, d_ss: np.ndarray, d_rs: np.ndarray, k_pr: int,
            k_dc: int) -> dict[str, float]:
    """The four metrics from real–real (n₁, n₁), synthetic–synthetic (n₂, n₂) and
    real–synthetic (n₁, n₂) Euclidean distance matrices."""
    r_real, r_syn = _kth_radius(d_rr, k_pr), _kth_radius(d_ss, k_pr)
    r_real_dc = r_real if k_dc == k_pr else _kth_radius(d_rr, k_dc)
    inside_dc = d_rs < r_real_dc[:, None]
    return {
        "precision": float((d_rs <= r_real[:, None]).any(axis=0).mean()),
        "recall": float((d_rs <= r_syn[None, :]).any(axis=1).mean()),
        "density": float(inside_dc.sum(axis=0).mean() / k_dc),
        "coverage": float((d_rs.min(axis=1) < r_real_dc).mean()),
    }


def _checked(real_features, synthetic_features, k_pr: int, k_dc: int):
    real = _as_features(real_features, "real features")
    syn = _as_features(synthetic_features, "synthetic features")
    if real.shape[1] != syn.shape[1]:
        raise InputError(f"feature dimensions differ: {real.shape[1]} vs {syn.shape[1]}")
    for name, k in (("k_pr", k_pr), ("k_dc", k_dc)):
        if k < 1:
            raise InputError(f"{name} {k}: expected a number of neighbours ≥ 1", param=name)
    return real, syn


def prdc(real_features, synthetic_features, k_pr: int = 3, k_dc: int = 5) -> dict[str, float]:
    """Precision, recall (k-NN radius ``k_pr``), density, coverage (``k_dc``) of the sets.

    Args:
        real_features: (N₁, d); synthetic_features: (N₂, d); both need more than max(k)
        points.

    Returns:
        ``{"precision", "recall", "density", "coverage"}`` — shares in [0, 1], density ≥ 0.
    """
    real, syn = _checked(real_features, synthetic_features, k_pr, k_dc)
    need = max(k_pr, k_dc) + 1
    if min(len(real), len(syn)) < need:
        raise InputError(f"PRDC with k = {max(k_pr, k_dc)} needs at least {need} images per "
                         f"set, got {len(real)} real and {len(syn)} synthetic")
    return _scores(cdist(real, real), cdist(syn, syn), cdist(real, syn), k_pr, k_dc)


@dataclass(frozen=True)
class PrdcResult:
    """The four metrics on all images and their ``level`` intervals ``{name: (low, high)}``."""

    values: dict[str, float]
    ci: dict[str, tuple[float, float]]
    k_pr: int
    k_dc: int
    n_boot: int
    fraction: float
    level: float
    method: str = field(default="subsampling without replacement (delete-d jackknife SE), "
                        "normal interval around the full-set value")

    def row(self) -> dict[str, float]:
        """``precision, precision_ci_low, precision_ci_high, recall, …`` for a table row."""
        out = {}
        for name in PRDC_NAMES:
            out[name] = self.values[name]
            out[f"{name}_ci_low"], out[f"{name}_ci_high"] = self.ci[name]
        return out


def prdc_interval(real_features, synthetic_features, k_pr: int = 3, k_dc: int = 5,
                  n_boot: int = 100, fraction: float = 0.5, level: float = 0.95,
                  seed: int = 0) -> PrdcResult:
    """:func:`prdc` with intervals from ``n_boot`` subsets of ``fraction`` of each set.

    The SE of each metric is √(f/(1 − f) · Var(subset values)) (a subset of m of n points
    varies around the full set's value with variance ≈ σ²(1/m − 1/n)); the interval is
    value ± z·SE, clipped to [0, 1] (density: to [0, ∞)). Distances are computed once and
    the subsets index them.

    Raises:
        InputError: bad features, k < 1, a subset with ≤ max(k) points, fraction not in
        (0, 1), n_boot < 2 or level not in (0, 1).
    """
    real, syn = _checked(real_features, synthetic_features, k_pr, k_dc)
    if not 0 < fraction < 1:
        raise InputError(f"fraction {fraction}: expected a number in (0, 1)", param="fraction")
    if n_boot < 2:
        raise InputError(f"n_boot {n_boot}: expected at least 2 subsets", param="n_boot")
    if not 0 < level < 1:
        raise InputError(f"level {level}: expected a number in (0, 1)", param="level")
    n1, n2 = len(real), len(syn)
    m1, m2 = int(fraction * n1), int(fraction * n2)
    need = max(k_pr, k_dc) + 1
    if min(m1, m2) < need:
        raise InputError(f"PRDC intervals with k = {max(k_pr, k_dc)} need subsets of at least "
                         f"{need} images; {fraction:g} of {n1} real and {n2} synthetic images "
                         f"gives {min(m1, m2)}")
    d_rr, d_ss, d_rs = cdist(real, real), cdist(syn, syn), cdist(real, syn)
    values = _scores(d_rr, d_ss, d_rs, k_pr, k_dc)
    rng = np.random.default_rng(seed)
    reps = np.empty((n_boot, len(PRDC_NAMES)))
    for b in range(n_boot):
        i, j = rng.choice(n1, m1, replace=False), rng.choice(n2, m2, replace=False)
        sub = _scores(d_rr[np.ix_(i, i)], d_ss[np.ix_(j, j)], d_rs[np.ix_(i, j)], k_pr, k_dc)
        reps[b] = [sub[name] for name in PRDC_NAMES]
    se = np.sqrt(fraction / (1 - fraction) * reps.var(axis=0, ddof=1))
    z = float(norm.ppf(0.5 + level / 2))
    ci = {}
    for name, s in zip(PRDC_NAMES, se, strict=True):
        upper = np.inf if name == "density" else 1.0
        ci[name] = (float(np.clip(values[name] - z * s, 0.0, upper)),
                    float(np.clip(values[name] + z * s, 0.0, upper)))
    return PrdcResult(values=values, ci=ci, k_pr=k_pr, k_dc=k_dc, n_boot=n_boot,
                      fraction=fraction, level=level)
