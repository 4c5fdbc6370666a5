"""Diversity of a set of images as their mutual MS-SSIM (paper Table 3), done right.

MS-SSIM (Wang et al. 2003, via ``pytorch-msssim``) between two images is 1 for identical
images and falls as they differ; the *mean MS-SSIM among images of one prompt* is the paper's
diversity measure (lower = more diverse). Fixed choices, unlike the original notebook:

* gray channel only (the models' RGB channels are copies), ``data_range=255`` always — never
  inferred per pair;
* Gaussian window 11 (σ 1.5), the standard 5 scales with their standard weights. Images whose
  shorter side is ≤ 160 px cannot take 4 down-samplings of an 11-px window: a smaller odd window
  is used (``(win−1)·16 < side``), and below 49 px single-scale SSIM with a 7-px (or smaller)
  window; the result says which (``settings``) and a :class:`UserWarning` is issued;
* protocols — ``all-pairs``: all N(N−1)/2 pairs of N images (default); ``paper``: the given
  independent pairs (the notebook drew 20 fresh 2-image batches);
* uncertainty — a percentile bootstrap 95 % CI that resamples *images* (pairs share images, so
  resampling pairs would understate the uncertainty); for ``paper`` the pairs are independent
  and are resampled directly.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field

import numpy as np

from mame_eval.errors import InputError
from mame_eval.stats.bootstrap import percentile_interval

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
PROTOCOLS = ("all-pairs", "paper")
DATA_RANGE = 255.0


@dataclass(frozen=True)
class MsSsimSettings:
    """How MS-SSIM was computed; stored in provenance next to every number."""

    data_range: float = DATA_RANGE
    win_size: int = 11
    win_sigma: float = 1.5
    scales: int = 5
    fallback: str | None = None

    @classmethod
    def for_size(cls, side: int) -> MsSsimSettings:
        """Standard settings, or the stated fallback for a shorter side of ``side`` pixels."""
        if side > 160:
            return cls()
        if side >= 49:
            win = (side - 1) // 16 + 1
            win -= 1 - win % 2  # largest odd window with (win - 1) * 16 < side
            return cls(win_size=win, fallback=(
                f"images of {side} px are too small for an 11-px window over 5 scales; "
                f"used a {win}-px window (5 scales)"))
        if side < 7:
            raise InputError(f"images of {side} px are too small for SSIM (need at least 7 px)")
        win = min(7, side - (1 - side % 2))
        return cls(win_size=win, scales=1, fallback=(
            f"images of {side} px are too small for MS-SSIM; used single-scale SSIM with a "
            f"{win}-px window"))


@dataclass
class DiversityResult:
    """MS-SSIM among images: lower mean = more diverse.

    Attributes:
        mean, std: over pairs; ``std`` uses ``ddof`` (1, the sample standard deviation).
        ci_low, ci_high: percentile bootstrap CI of the mean at ``level``.
        n_images, n_pairs: what the numbers rest on.
        values: the MS-SSIM of every pair, in the order of ``pairs``.
    """

    mean: float
    std: float
    ci_low: float
    ci_high: float
    n_images: int
    n_pairs: int
    protocol: str
    ddof: int = 1
    level: float = 0.95
    n_boot: int = 2000
    settings: MsSsimSettings = field(default_factory=MsSsimSettings)
    pairs: list[tuple[int, int]] = field(default_factory=list, repr=False)
    values: list[float] = field(default_factory=list, repr=False)

    def row(self) -> dict:
        """The table row: mean, std, ci_low, ci_high, n_images, n_pairs."""
        return {k: getattr(self, k) for k in
                ("mean", "std", "ci_low", "ci_high", "n_images", "n_pairs")}

    def provenance(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k not in ("pairs", "values")}
        out["std_ddof"] = self.ddof
        out["bootstrap"] = ("percentile; resamples images" if self.protocol == "all-pairs"
                            else "percentile; resamples pairs")
        return out


def to_gray_batch(images) -> np.ndarray:
    """Stack images into float32 (N, H, W) on the 0…255 scale (gray = first channel).

    Accepts uint8 arrays (H, W) or (H, W, C), or PIL images. All must share one size.
    """
    arrays = []
    for i, im in enumerate(images):
        arr = np.asarray(im)
        if arr.ndim == 3:
            arr = arr[..., 0]
        if arr.ndim != 2:
            raise InputError(f"image {i}: expected a 2-D gray or H×W×C image, got {arr.shape}")
        arrays.append(arr)
    if not arrays:
        raise InputError("no images given")
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise InputError(f"images differ in size ({sorted(shapes)}); MS-SSIM needs one size")
    return np.stack(arrays).astype(np.float32)


def default_pair_batch(device: str) -> int:
    """Pairs per MS-SSIM call: 16 on a GPU; one on a CPU, where the filtered maps of a large
    batch fall out of cache (measured on 2 cores: 45 pairs of 512 px in 1.5 s one at a time,
    3.7 s in batches of 4, 5.0 s in batches of 16)."""
    return 16 if str(device).startswith("cuda") else 1


def ms_ssim_pairs(images, pairs: list[tuple[int, int]], batch_size: int | None = None,
                  settings: MsSsimSettings | None = None, device: str = "cpu") -> np.ndarray:
    """MS-SSIM of each ``(i, j)`` pair of ``images``, batched (memory ≈ batch_size pairs).

    Args:
        images: N images (see :func:`to_gray_batch`), 8-bit scale.
        pairs: index pairs into ``images``.
        batch_size: pairs per call (default :func:`default_pair_batch` of ``device``).
        settings: default :meth:`MsSsimSettings.for_size` of the images.

    Returns:
        float64 array (len(pairs),) of MS-SSIM values in [0, 1].
    """
    import torch
    from pytorch_msssim import ms_ssim, ssim

    gray = to_gray_batch(images)
    settings = settings or MsSsimSettings.for_size(min(gray.shape[1:]))
    if settings.fallback:
        warnings.warn(settings.fallback, UserWarning, stacklevel=2)
    tensor = torch.from_numpy(gray).unsqueeze(1).to(device)
    pair_idx = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    out = np.empty(len(pair_idx), dtype=np.float64)
    weights = list(MS_SSIM_WEIGHTS)
    batch_size = batch_size or default_pair_batch(device)
    with torch.no_grad():
        for start in range(0, len(pair_idx), batch_size):
            chunk = torch.from_numpy(pair_idx[start:start + batch_size]).to(device)
            x, y = tensor[chunk[:, 0]], tensor[chunk[:, 1]]
            if settings.scales == 1:
                values = ssim(x, y, data_range=settings.data_range, size_average=False,
                              win_size=settings.win_size, win_sigma=settings.win_sigma)
            else:
                values = ms_ssim(x, y, data_range=settings.data_range, size_average=False,
                                 win_size=settings.win_size, win_sigma=settings.win_sigma,
                                 weights=weights)
            out[start:start + len(chunk)] = values.double().cpu().numpy()
    return out


def all_pairs(n: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(n) for j in range(i + 1, n)]


def _image_counts(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap multiplicities of N images, (n_boot, N)."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)


def _means_from_counts(matrix: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Off-diagonal pair means of resampled images (NaN where no pair of distinct images).

    For resampled multiplicities ``c`` (multinomial), the mean over pairs of *distinct*
    resampled draws that are different images is ``cᵀ M c / ((Σc)² − Σc²)`` with ``M`` the
    symmetric pair matrix with a zero diagonal (a draw paired with a copy of itself is not a
    pair of two generated images and is left out).
    """
    numer = np.einsum("bi,ij,bj->b", counts, matrix, counts)
    denom = counts.sum(1) ** 2 - (counts ** 2).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, numer / np.where(denom > 0, denom, 1.0), np.nan)


def _bootstrap_images(matrix: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap means of the off-diagonal pair mean, resampling the N images."""
    means = _means_from_counts(matrix, _image_counts(matrix.shape[0], n_boot, rng))
    return means[np.isfinite(means)]


def _pair_matrix(n: int, pairs, values) -> np.ndarray:
    """The symmetric N×N matrix of pair values, zero diagonal."""
    matrix = np.zeros((n, n))
    idx = np.asarray(pairs).reshape(-1, 2)
    matrix[idx[:, 0], idx[:, 1]] = values
    matrix[idx[:, 1], idx[:, 0]] = values
    return matrix


def mean_over_sets(results: list[DiversityResult], level: float = 0.95, n_boot: int = 2000,
                   seed: int = 0) -> tuple[float, float, float]:
    """(mean, ci_low, ci_high) of the average of several sets' mean MS-SSIM (one set per
    prompt of a sweep scale).

    The sets of a sweep share their noise — image i of every prompt starts from seed S+i — so
    they are not independent: the bootstrap resamples the *seeds* jointly, one draw of image
    indices (pair indices for the ``paper`` protocol) applied to every set, a cluster
    bootstrap. Sets of different sizes or protocols cannot share a draw and are resampled
    each on its own.
    """
    if not results:
        raise InputError("no diversity results to average")
    mean = float(np.mean([r.mean for r in results]))
    if len(results) == 1:
        r = results[0]
        return r.mean, r.ci_low, r.ci_high
    rng = np.random.default_rng(seed)
    joint = len({(r.protocol, r.n_images, r.n_pairs) for r in results}) == 1
    shared = None
    replicates = []
    for r in results:
        if r.protocol == "all-pairs":
            counts = shared if shared is not None else _image_counts(r.n_images, n_boot, rng)
            replicates.append(_means_from_counts(_pair_matrix(r.n_images, r.pairs, r.values),
                                                 counts))
        else:
            counts = shared if shared is not None else rng.integers(
                0, r.n_pairs, size=(n_boot, r.n_pairs))
            replicates.append(np.asarray(r.values)[counts].mean(axis=1))
        if joint:
            shared = counts
    boots = np.mean(replicates, axis=0)
    boots = boots[np.isfinite(boots)]
    if boots.size == 0:
        return mean, mean, mean
    lo, hi = percentile_interval(boots, level)
    return mean, lo, hi


def diversity(images, protocol: str = "all-pairs", pairs: list[tuple[int, int]] | None = None,
              level: float = 0.95, n_boot: int = 2000, seed: int = 0,
              batch_size: int | None = None,
              device: str = "cpu") -> DiversityResult:
    """Mean MS-SSIM among ``images`` with a bootstrap CI.

    Args:
        images: N same-size images (uint8 arrays or PIL), N ≥ 2.
        protocol: ``"all-pairs"`` (all N(N−1)/2 pairs) or ``"paper"`` (``pairs`` given, or
            consecutive disjoint pairs (0, 1), (2, 3), … — each from a fresh 2-image call).
        level: CI level; n_boot: bootstrap replicates; seed: bootstrap seed.
    """
    if protocol not in PROTOCOLS:
        raise InputError(f"protocol {protocol!r}: expected one of {', '.join(PROTOCOLS)}")
    if not 0 < level < 1:
        raise InputError(f"level {level}: expected a number in (0, 1)")
    gray = to_gray_batch(images)
    n = len(gray)
    if n < 2:
        raise InputError(f"diversity needs at least 2 images, got {n}")
    settings = MsSsimSettings.for_size(min(gray.shape[1:]))
    if protocol == "all-pairs":
        pairs = all_pairs(n)
    elif pairs is None:
        if n % 2:
            raise InputError(f"protocol 'paper' pairs consecutive images; got an odd number {n}")
        pairs = [(i, i + 1) for i in range(0, n, 2)]
    values = ms_ssim_pairs(gray, pairs, batch_size=batch_size, settings=settings, device=device)
    rng = np.random.default_rng(seed)
    if protocol == "all-pairs":
        boots = _bootstrap_images(_pair_matrix(n, pairs, values), n_boot, rng)
    else:
        draws = rng.integers(0, len(values), size=(n_boot, len(values)))
        boots = values[draws].mean(axis=1)
    lo, hi = (percentile_interval(boots, level) if len(values) > 1
              else (values[0], values[0]))
    return DiversityResult(
        mean=float(values.mean()),
        std=float(values.std(ddof=1)) if len(values) > 1 else 0.0,
        ci_low=float(lo), ci_high=float(hi), n_images=n, n_pairs=len(values),
        protocol=protocol, level=level, n_boot=n_boot, settings=settings,
        pairs=[tuple(map(int, p)) for p in pairs], values=values.tolist(),
    )

