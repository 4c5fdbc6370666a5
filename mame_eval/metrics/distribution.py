"""Distribution distance between real and synthetic images: FID and KID on chosen features.

The statistics are computed here in float64 from feature matrices, so any extractor can feed
them (see :mod:`mame_eval.metrics.features`):

* FID (Heusel et al. 2017): ‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2 (Σ₁^½ Σ₂ Σ₁^½)^½). The matrix square
  root is taken of *symmetric* positive semi-definite matrices with ``eigh`` — tiny negative
  eigenvalues from round-off are clamped to 0 — so no complex numbers appear (scipy's
  ``sqrtm`` of the non-symmetric Σ₁Σ₂ does produce them).
* KID (Bińkowski et al. 2018): the unbiased MMD² with the cubic polynomial kernel
  k(x, y) = (xᵀy / d + 1)³, averaged over random subsets *smaller* than both sets, drawn
  exactly as torch-fidelity draws them (same seed → same mean and spread).
* FID∞ and an interval for the *true* FID (:func:`fid_interval`). The plug-in FID is biased
  upwards at finite N (E FID_N ≈ FID + k/N). Following Chong & Forsyth 2020 ("Effectively
  unbiased FID and Inception Score and where to find them", their ``calculate_FID_infinity``:
  FID at several N, a straight line in 1/N, its value at 1/N = 0) the FID is computed on
  random subsets *without replacement* of both sets at fractions f of their sizes and
  extrapolated linearly in 1/f to 1/f = 0: that is FID∞, and ``bias`` = FID − FID∞ is the
  plug-in's estimated finite-N bias. Its standard error is the delete-d jackknife /
  subsampling variance (Shao & Wu 1989; Politis & Romano 1994): a subset of m of n points
  varies around the full-set value with variance ≈ σ²(1/m − 1/n), so
  Var(FID_n) ≈ m/(n − m) · Var(FID_m); the Monte-Carlo error of the extrapolation is added.
  The interval is FID∞ ± z·SE (clipped at 0). Bootstrap resampling *with* replacement is not
  used: duplicated points shrink the covariances' spread and inflate FID, so such intervals
  exclude their own estimate (measured: 0.29 coverage of the true FID; see
  ``benchmarks/fid_interval.py``).

With fewer images than feature dimensions the covariance is rank-deficient; FID is still a
finite number but biased upwards, so a :class:`UserWarning` says so.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from mame_eval.errors import InputError

#: subset fractions of both sets at which FID is evaluated for the 1/N extrapolation; the
#: full sets (f = 1) are the last point of the fit.
FID_FRACTIONS = (0.5, 0.625, 0.75, 0.875)
#: the largest KID subset: torch-fidelity's default
KID_MAX_SUBSET = 1000


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


def fid_of_features(x: np.ndarray, y: np.ndarray) -> float:
    """FID of two float64 feature matrices (n₁, d), (n₂, d) without warnings or checks.

    With fewer points than dimensions it uses the identity
    tr (Σ₁^½ Σ₂ Σ₁^½)^½ = ‖A B̃ᵀ‖_* (nuclear norm) where Σ₁ = AᵀA, Σ₂ = B̃ᵀB̃ are the centred
    features scaled by 1/√(n−1): an (n₁ × n₂) SVD instead of two (d × d) eigen-decompositions,
    so that many subset FIDs of 2048-d features stay cheap. Otherwise the ``eigh`` formula.
    """
    n1, n2, d = len(x), len(y), x.shape[1]
    mx, my = x.mean(axis=0), y.mean(axis=0)
    a = (x - mx) / np.sqrt(n1 - 1)
    b = (y - my) / np.sqrt(n2 - 1)
    if min(n1, n2) > d:
        return frechet_distance(GaussianStats(mx, a.T @ a, n1), GaussianStats(my, b.T @ b, n2))
    trace_sqrt = float(np.linalg.svd(a @ b.T, compute_uv=False).sum())
    diff = mx - my
    return max(float(diff @ diff + (a * a).sum() + (b * b).sum() - 2 * trace_sqrt), 0.0)


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


def kid_subset_size_for(n_real: int, n_synthetic: int, subset_size: int | None = None) -> int:
    """The KID subset size: ``subset_size`` when given, else min(1000, ⌊min(N)/2⌋).

    Subsets must be smaller than both sets: at subset size = N every subset is the whole set
    and the spread across subsets is 0, whatever the real uncertainty. At half the smaller set
    the spread across subsets of m = n/2 of n points, σ²(1/m − 1/n) = σ²/n, is about the
    standard error of KID itself (the delete-half jackknife).

    Raises:
        InputError (param ``kid_subset_size``): a given size not in [2, min(N)), or fewer than
        4 images in a set.
    """
    smaller = min(n_real, n_synthetic)
    if subset_size is None:
        if smaller < 4:
            raise InputError(f"KID needs at least 4 images per set (subsets of 2 smaller than "
                             f"the set), got {n_real} real and {n_synthetic} synthetic")
        return min(KID_MAX_SUBSET, smaller // 2)
    if not 2 <= subset_size < smaller:
        raise InputError(
            f"kid_subset_size {subset_size}: expected 2 ≤ size < min(N real, N synthetic) = "
            f"{smaller} — subsets as large as a set are that set, and the KID spread would be "
            f"0; choose a smaller --kid-subset-size (e.g. {max(2, smaller // 2)}) or leave it "
            "unset for min(1000, N/2)", param="kid_subset_size")
    return int(subset_size)


def kid(real_features, synthetic_features, subset_size: int | None = None,
        n_subsets: int = 100, seed: int = 2020) -> tuple[float, float]:
    """KID: mean and standard deviation of the unbiased MMD² over random subsets.

    Subsets are drawn as torch-fidelity draws them (``np.random.RandomState(seed)``, real then
    synthetic, without replacement) and the spread is its population std (ddof 0), so the same
    features, ``subset_size``, ``n_subsets`` and ``seed`` give torch-fidelity's
    ``kernel_inception_distance_mean`` / ``_std`` (its default seed is 2020).

    Args:
        real_features, synthetic_features: (N₁, d) and (N₂, d).
        subset_size: images per subset, < min(N₁, N₂); None → min(1000, ⌊min(N₁, N₂)/2⌋)
            (see :func:`kid_subset_size_for`).
    """
    real = _as_features(real_features, "real features")
    syn = _as_features(synthetic_features, "synthetic features")
    m = kid_subset_size_for(len(real), len(syn), subset_size)
    rng = np.random.RandomState(seed)
    values = np.empty(n_subsets)
    for s in range(n_subsets):
        x = real[rng.choice(len(real), m, replace=False)]
        y = syn[rng.choice(len(syn), m, replace=False)]
        kxx, kyy, kxy = _poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y)
        values[s] = ((kxx.sum() - np.trace(kxx)) / (m * (m - 1))
                     + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                     - 2 * kxy.mean())
    return float(values.mean()), float(values.std())


@dataclass(frozen=True)
class FidInterval:
    """FID, its bias-corrected FID∞ and an interval for the true FID (all in FID units).

    ``fid``: the plug-in FID of all images; ``fid_inf``: FID extrapolated to 1/N = 0;
    ``bias`` = fid − fid_inf (the plug-in's finite-N bias, > 0 typically); ``ci_low``,
    ``ci_high``: the ``level`` interval fid_inf ± z·se, clipped at 0; ``se``: its standard
    error (subsampling variance + Monte-Carlo error of the fit); ``fractions`` and
    ``fid_at``: the mean subset FID at each fraction (1.0 = all images) the line was fitted to.
    ``valid``: whether the smallest subset has more images than feature dimensions. Below that
    the covariances are rank-deficient, FID's bias is far from linear in 1/N and FID∞ keeps
    most of it: the interval is then *not* an interval for the true FID (measured in
    ``benchmarks/fid_interval.py``).
    """

    fid: float
    fid_inf: float
    bias: float
    ci_low: float
    ci_high: float
    se: float
    level: float
    n_boot: int
    fractions: tuple[float, ...]
    fid_at: tuple[float, ...]
    valid: bool = True
    method: str = ("FID∞ (Chong & Forsyth 2020: linear fit in 1/N over subsets without "
                   "replacement) ± z·SE (delete-d jackknife / subsampling variance)")


def fid_interval(real_features, synthetic_features, n_boot: int = 50, level: float = 0.95,
                 seed: int = 0, fractions: tuple[float, ...] = FID_FRACTIONS) -> FidInterval:
    """FID∞ and an interval for the true FID, by subsampling both sets without replacement.

    Each of ``n_boot`` replicates draws a random order of each set and takes nested prefixes
    of ⌊f·N⌋ images at every fraction f (as Chong & Forsyth's code takes prefixes of a shuffled
    set): ``n_boot × len(fractions)`` FID evaluations. The mean FID at each fraction and the
    full-set FID are fitted by least squares as FID_f = FID∞ + k/f (both sets shrink by f, so
    1/f is 1/N up to a constant); FID∞ is the intercept.

    Standard error, for fraction f: Var(FID_N) ≈ f/(1 − f) · Var_replicates(FID_fN) (a subset
    of m of n points differs from the whole by σ²(1/m − 1/n)); averaged over the fractions, plus
    the Monte-Carlo variance of the intercept, Var_replicates(intercept)/n_boot. FID∞ removes
    the 1/N bias without changing the first-order variance (the subset averages share the
    full set's linear term), so the same SE applies to it.

    Valid when the smallest subset holds more images than feature dimensions (Chong & Forsyth
    fit N ≥ 5000 for 2048-d Inception features): with fewer, FID's bias is not linear in 1/N,
    FID∞ keeps most of it and ``valid`` is False — use low-dimensional features (MammoNet) or
    more images. At true FID ≈ 0 FID∞ may be slightly negative and the interval (clipped at
    0) is conservative. Measured coverage of the true FID on Gaussians:
    ``benchmarks/fid_interval.py``.

    Raises:
        InputError: bad features, ``level`` not in (0, 1), fractions not in (0, 1), n_boot < 2,
        or a set so small that a subset would hold fewer than 2 images.
    """
    real = _as_features(real_features, "real features")
    syn = _as_features(synthetic_features, "synthetic features")
    if real.shape[1] != syn.shape[1]:
        raise InputError(f"feature dimensions differ: {real.shape[1]} vs {syn.shape[1]}")
    if not 0 < level < 1:
        raise InputError(f"level {level}: expected a number in (0, 1)", param="level")
    if n_boot < 2:
        raise InputError(f"n_boot {n_boot}: expected at least 2 subsampling replicates",
                         param="n_boot")
    fracs = np.asarray(sorted(fractions), dtype=float)
    if len(fracs) < 1 or fracs[0] <= 0 or fracs[-1] >= 1:
        raise InputError(f"fractions {fractions}: expected values in (0, 1)", param="fractions")
    n1, n2 = len(real), len(syn)
    sizes = [(int(f * n1), int(f * n2)) for f in fracs]
    if min(min(s) for s in sizes) < 2:
        raise InputError(f"FID interval: {n1} real and {n2} synthetic images are too few for "
                         f"subsets of {fracs[0]:g} of each set (need ≥ 2 images per subset)")
    full = fid_of_features(real, syn)
    rng = np.random.default_rng(seed)
    table = np.empty((n_boot, len(fracs)))
    for b in range(n_boot):
        order1, order2 = rng.permutation(n1), rng.permutation(n2)
        for j, (m1, m2) in enumerate(sizes):
            table[b, j] = fid_of_features(real[order1[:m1]], syn[order2[:m2]])
    # OLS of FID on x = 1/f over the fractions and the full set (x = 1): intercept weights.
    xs = np.append(1 / fracs, 1.0)
    design = np.column_stack([np.ones_like(xs), xs])
    weights = np.linalg.pinv(design)[0]          # intercept = weights @ values
    intercepts = table @ weights[:-1] + weights[-1] * full
    fid_inf = float(intercepts.mean())
    sampling_var = float(np.mean(fracs / (1 - fracs) * table.var(axis=0, ddof=1)))
    mc_var = float(intercepts.var(ddof=1) / n_boot)
    se = float(np.sqrt(sampling_var + mc_var))
    z = float(norm.ppf(0.5 + level / 2))
    return FidInterval(
        fid=full, fid_inf=fid_inf, bias=full - fid_inf,
        ci_low=max(fid_inf - z * se, 0.0), ci_high=max(fid_inf + z * se, 0.0), se=se,
        level=level, n_boot=n_boot, fractions=(*map(float, fracs), 1.0),
        fid_at=(*map(float, table.mean(axis=0)), full),
        valid=min(sizes[0]) > real.shape[1])


def fid_bootstrap_ci(real_features, synthetic_features, n_boot: int = 50, level: float = 0.95,
                     seed: int = 0) -> tuple[float, float]:
    """The (low, high) of :func:`fid_interval` — kept for callers of the old name.

    It no longer bootstraps: resampling with replacement inflated FID and its intervals
    excluded their own estimate (see the module docstring).
    """
    res = fid_interval(real_features, synthetic_features, n_boot=n_boot, level=level,
                       seed=seed)
    return res.ci_low, res.ci_high


def paired_subset_fids(real_features, synthetic_by_scale, units, n_boot: int = 50,
                       fraction: float = 0.5, seed: int = 0) -> np.ndarray:
    """FID of every scale on paired random subsets: the material of an FID trend's interval.

    Every scale of a sweep starts image i of each prompt from the same seed, so its images are
    paired by seed. Each replicate draws ⌊fraction·U⌋ of the U seeds without replacement (and
    the same fraction of the real images), the same draw for every scale, and computes each
    scale's FID on those images. Drawing without replacement keeps FID's duplicate-point
    inflation out (a with-replacement bootstrap would add it); the spread of a change between
    scales over such subsets, times fraction/(1 − fraction), estimates the change's variance at
    the full size (the delete-d jackknife of :func:`fid_interval`).

    Args:
        real_features: (n, d) features of the real set.
        synthetic_by_scale: G arrays (m, d), one per guidance scale, rows in the same order.
        units: (m,) the seed index of each synthetic row (shared by all scales).

    Returns:
        (n_boot, G) subset FIDs.
    """
    real = _as_features(real_features, "real features")
    syns = [_as_features(f, "synthetic features") for f in synthetic_by_scale]
    units = np.asarray(units)
    if any(f.shape != syns[0].shape for f in syns) or len(units) != len(syns[0]):
        raise InputError("paired subset FIDs: every scale needs the same number of images, "
                         "one seed index per image")
    if not 0 < fraction < 1:
        raise InputError(f"fraction {fraction}: expected a number in (0, 1)", param="fraction")
    labels = np.unique(units)
    k_units, k_real = int(fraction * len(labels)), int(fraction * len(real))
    if k_units < 1 or k_real < 2:
        raise InputError(f"paired subset FIDs: {len(labels)} seeds and {len(real)} real images "
                         f"are too few for subsets of {fraction:g}")
    rng = np.random.default_rng([seed, 29])
    out = np.empty((n_boot, len(syns)))
    for b in range(n_boot):
        keep = np.isin(units, rng.choice(labels, k_units, replace=False))
        r = real[rng.choice(len(real), k_real, replace=False)]
        out[b] = [fid_of_features(r, f[keep]) for f in syns]
    return out

