"""Distribution distance between real and synthetic images: FID and KID on chosen features.

The statistics are computed here in float64 from feature matrices, so any extractor can feed
them (see :mod:`mame_eval.metrics.features`):

* FID (Heusel et al. 2017): ‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2 (Σ₁^½ Σ₂ Σ₁^½)^½). The matrix square
  root is taken of *symmetric* positive semi-definite matrices with ``eigh`` — tiny negative
  eigenvalues from round-off are clamped to 0 — so no complex numbers appear (scipy's
  ``sqrtm`` of the non-symmetric Σ₁Σ₂ does produce them).
* KID (Bińkowski et al. 2018): the unbiased MMD² with the cubic polynomial kernel
  k(x, y) = (xᵀy / d + 1)³, averaged over random subsets of size ≤ min(N_real, N_synthetic).
* a bootstrap CI of FID resampling both sets.

With fewer images than feature dimensions the covariance is rank-deficient; FID is still a
finite number but biased upwards, so a :class:`UserWarning` says so.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from mame_eval.errors import InputError


@dataclass(frozen=True)
class GaussianStats:
    """Mean (d,) and covariance (d, d) of a feature set, float64, with its size n."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int

    @classmethod
    def from_features(cls, features: np.ndarray) -> GaussianStats:
        feats = _as_features(features, "features")
        if len(feats) < 2:
            raise InputError(f"need at least 2 feature vectors for a covariance, got {len(feats)}")
        return cls(mu=feats.mean(axis=0), sigma=np.cov(feats, rowvar=False, ddof=1).reshape(
            feats.shape[1], feats.shape[1]), n=len(feats))


def _as_features(features, name: str) -> np.ndarray:
    feats = np.asarray(features, dtype=np.float64)
    if feats.ndim != 2:
        raise InputError(f"{name}: expected an (N, d) feature matrix, got shape {feats.shape}")
    if not np.isfinite(feats).all():
        raise InputError(f"{name}: features contain NaN or infinity")
    return feats


def sqrtm_psd(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric PSD matrix via ``eigh`` (negative round-off clamped to 0)."""
    sym = (matrix + matrix.T) / 2
    vals, vecs = np.linalg.eigh(sym)
    return (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T


def frechet_distance(a: GaussianStats, b: GaussianStats) -> float:
    """Fréchet distance between two Gaussians (the FID formula), ≥ 0."""
    if a.mu.shape != b.mu.shape:
        raise InputError(f"feature dimensions differ: {a.mu.shape[0]} vs {b.mu.shape[0]}")
    root_a = sqrtm_psd(a.sigma)
    inner = root_a @ b.sigma @ root_a
    trace_sqrt = float(np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0, None)).sum())
    diff = a.mu - b.mu
    value = float(diff @ diff + np.trace(a.sigma) + np.trace(b.sigma) - 2 * trace_sqrt)
    return max(value, 0.0)


def _warn_small(n: int, d: int, which: str) -> None:
    if n < d:
        warnings.warn(
            f"{which}: {n} images < {d} feature dimensions; the covariance is rank-deficient "
            "and FID is biased upwards — compare FIDs only at equal N", UserWarning, stacklevel=3)


def fid(real_features, synthetic_features) -> float:
    """FID between two feature matrices (N₁, d) and (N₂, d)."""
    real = _as_features(real_features, "real features")
    syn = _as_features(synthetic_features, "synthetic features")
    _warn_small(len(real), real.shape[1], "real")
    _warn_small(len(syn), syn.shape[1], "synthetic")
    return frechet_distance(GaussianStats.from_features(real), GaussianStats.from_features(syn))


def _poly_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def kid(real_features, synthetic_features, subset_size: int = 1000, n_subsets: int = 100,
        seed: int = 0) -> tuple[float, float]:
    """KID: mean and standard deviation of the unbiased MMD² over random subsets.

    ``subset_size`` is capped at the smaller set size (and must leave at least 2 per set).
    """
    real = _as_features(real_features, "real features")
    syn = _as_features(synthetic_features, "synthetic features")
    m = min(subset_size, len(real), len(syn))
    if m < 2:
        raise InputError(f"KID needs at least 2 images per set, got {len(real)} and {len(syn)}")
    rng = np.random.default_rng(seed)
    values = np.empty(n_subsets)
    for s in range(n_subsets):
        x = real[rng.choice(len(real), m, replace=False)]
        y = syn[rng.choice(len(syn), m, replace=False)]
        kxx, kyy, kxy = _poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y)
        values[s] = ((kxx.sum() - np.trace(kxx)) / (m * (m - 1))
                     + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                     - 2 * kxy.mean())
    return float(values.mean()), float(values.std(ddof=1) if n_subsets > 1 else 0.0)


def fid_bootstrap_ci(real_features, synthetic_features, n_boot: int = 200, level: float = 0.95,
                     seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of FID, resampling each set with replacement."""
    real = _as_features(real_features, "real features")
    syn = _as_features(synthetic_features, "synthetic features")
    rng = np.random.default_rng(seed)
    values = np.empty(n_boot)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for b in range(n_boot):
            values[b] = frechet_distance(
                GaussianStats.from_features(real[rng.integers(0, len(real), len(real))]),
                GaussianStats.from_features(syn[rng.integers(0, len(syn), len(syn))]))
    alpha = (1 - level) / 2
    lo, hi = np.quantile(values, [alpha, 1 - alpha])
    return float(lo), float(hi)
