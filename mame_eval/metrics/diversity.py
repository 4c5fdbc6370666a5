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
from contextlib import contextmanager
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
    weights: tuple[float, ...] = MS_SSIM_WEIGHTS

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
        return cls(win_size=win, scales=1, weights=(1.0,), fallback=(
            f"images of {side} px are too small for MS-SSIM; used single-scale SSIM with a "
            f"{win}-px window"))


@dataclass
class DiversityResult:
    """MS-SSIM among images: lower mean = more diverse.

    Attributes:
        mean, std: over pairs; ``std`` uses ``ddof`` (1, the sample standard deviation).
        ci_low, ci_high: percentile bootstrap CI of the mean at ``level``.
        n_images, n_pairs: what the numbers rest on (``n_pairs`` measured).
        max_pairs: the cap on pairs asked for (``None``: all); when it bit, ``pairs`` is a
            uniform random subset (seeded) of the N(N−1)/2 pairs.
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
    max_pairs: int | None = None
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
        if self.subset:
            out["pair_subset"] = (
                f"uniform random {self.n_pairs} of the {_n_all(self.n_images)} pairs (seeded); "
                "a bootstrap replicate averages the measured pairs among the resampled images")
        return out

    @property
    def subset(self) -> bool:
        """Whether the pairs are a random subset of all pairs (``max_pairs`` bit)."""
        return self.protocol == "all-pairs" and self.n_pairs < _n_all(self.n_images)


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
    """Pairs per cross-term call: 64 on a GPU (not measured); 4 on a CPU (measured at 512 px
    on 2 shared cores: 4–8 ms per pair with 1 to 8 pairs per call, 8 the slowest — larger
    batches fall out of cache)."""
    return 64 if str(device).startswith("cuda") else 4


#: Bytes of per-image statistics kept at once (images, μ and σ² at every scale): beyond it the
#: images are taken in blocks and each block's statistics are recomputed per block pair.
STATS_BUDGET = 1 << 30


@dataclass
class _Pyramid:
    """Per-image MS-SSIM statistics at every scale ``s``: the pooled image ``x`` (n, 1, h, w),
    its local mean ``mu`` = G∗x and ``half`` = (σ² + C2/2)/2 with σ² = G∗x² − μ² the local
    variance ((n, 1, h − win + 1, w − win + 1)); float32 on the 0…255 scale."""

    x: list
    mu: list
    half: list


def _window(settings: MsSsimSettings, device):
    """pytorch-msssim's own 1-D Gaussian window (1, 1, 1, win), so the filtering is theirs."""
    from pytorch_msssim.ssim import _fspecial_gauss_1d

    return _fspecial_gauss_1d(settings.win_size, settings.win_sigma).unsqueeze(0).to(device)


def _constants(settings: MsSsimSettings) -> tuple[float, float]:
    """SSIM's C1 = (0.01·L)², C2 = (0.03·L)² for the data range L (pytorch-msssim's K)."""
    return (0.01 * settings.data_range) ** 2, (0.03 * settings.data_range) ** 2


def _pyramid(gray, settings: MsSsimSettings, taps: list[float], chunk: int = 16) -> _Pyramid:
    """The statistics of :class:`_Pyramid` for images ``gray`` (n, 1, H, W), computed once per
    image; the down-sampling is pytorch-msssim's (2×2 average, zero-padded on odd sides)."""
    import torch
    import torch.nn.functional as F

    _, c2 = _constants(settings)
    pyr = _Pyramid([], [], [])
    x = gray
    for s in range(settings.scales):
        mus, halves = [], []
        for start in range(0, len(x), chunk):
            part = x[start:start + chunk]
            mu = _filter(part, taps)
            # σ² + C2/2 = G∗(x·x) − μ² + C2/2, halved so that a pair's denominator
            # (σx² + σy² + C2)/2 is one addition
            halves.append(_covariance_term(part, part, mu, mu, taps, c2 / 2).mul_(0.5))
            mus.append(mu)
        pyr.x.append(x)
        pyr.mu.append(torch.cat(mus))
        pyr.half.append(torch.cat(halves))
        if s < settings.scales - 1:
            x = F.avg_pool2d(x, kernel_size=2, padding=[v % 2 for v in x.shape[2:]])
    return pyr


def _filter(x, taps: list[float]):
    """The separable Gaussian G∗x of pytorch-msssim (valid part, (P, 1, h − win + 1,
    w − win + 1)) as shifted multiply-adds: on a CPU 2–3× faster than its grouped
    convolution on these single-channel maps."""
    win = len(taps)
    h, w = x.shape[-2] - win + 1, x.shape[-1] - win + 1
    rows = x[..., 0:h, :] * taps[0]
    for k in range(1, win):
        rows.add_(x[..., k:k + h, :], alpha=taps[k])
    out = rows[..., 0:w] * taps[0]
    for k in range(1, win):
        out.add_(rows[..., k:k + w], alpha=taps[k])
    return out


def _take(tensor, idx: np.ndarray):
    """``tensor[idx]`` as a view where the indices are one repeated image (broadcast) or a
    run of consecutive images (slice), else a gathered copy."""
    import torch

    first = int(idx[0])
    if (idx == first).all():
        return tensor[first:first + 1]
    if (np.diff(idx) == 1).all():
        return tensor[first:first + len(idx)]
    return tensor.index_select(0, torch.from_numpy(idx).to(tensor.device))


def _covariance_term(x, y, mu1, mu2, taps: list[float], c: float):
    """G∗(x·y) − μx·μy + c for pairs (P, 1, h, w) → (P, 1, h − win + 1, w − win + 1).

    The separable Gaussian as shifted multiply-adds: the product x·y is fused into the
    vertical pass and μx·μy into the horizontal one, so a pair costs 2·win + 1 passes over
    its maps and two maps of memory (one call of a 1-D convolution per axis is 2–3× slower
    on a CPU)."""
    import torch

    win = len(taps)
    h, w = x.shape[-2] - win + 1, x.shape[-1] - win + 1
    rows = torch.mul(x[..., 0:h, :], y[..., 0:h, :]).mul_(taps[0])
    for k in range(1, win):
        rows.addcmul_(x[..., k:k + h, :], y[..., k:k + h, :], value=taps[k])
    out = torch.addcmul(torch.full((), c, dtype=x.dtype, device=x.device), mu1, mu2, value=-1)
    out = out.expand(rows.shape[0], *out.shape[1:]).contiguous() if out.shape[0] != \
        rows.shape[0] else out
    for k in range(win):
        out.add_(rows[..., k:k + w], alpha=taps[k])
    return out


def _pair_chunk(pa: _Pyramid, ia: np.ndarray, pb: _Pyramid, ib: np.ndarray,
                settings: MsSsimSettings, taps: list[float], weights):
    """MS-SSIM (or SSIM for one scale) of pairs ``(pa[ia[k]], pb[ib[k]])`` as pytorch-msssim
    defines it; per scale only the cross term G∗(x·y) is filtered, μ and σ² come from the
    pyramids. float32 (P,)."""
    import torch

    c1, c2 = _constants(settings)
    mcs = []
    for s in range(settings.scales):
        mu1, mu2 = _take(pa.mu[s], ia), _take(pb.mu[s], ib)
        # cs = (2σxy + C2) / (σx² + σy² + C2) = (σxy + C2/2) / ((σx² + C2/2 + σy² + C2/2)/2)
        cs_map = _covariance_term(_take(pa.x[s], ia), _take(pb.x[s], ib), mu1, mu2, taps,
                                  c2 / 2)
        cs_map.div_(_take(pa.half[s], ia) + _take(pb.half[s], ib))
        if s < settings.scales - 1:
            mcs.append(torch.relu(cs_map.flatten(1).mean(-1)))
            continue
        luminance = (2 * mu1 * mu2 + c1) / (mu1.pow(2) + mu2.pow(2) + c1)
        ssim = (luminance * cs_map).flatten(1).mean(-1)
    if settings.scales == 1:
        return ssim  # pytorch-msssim's ssim(): no clamp at zero
    stacked = torch.stack([*mcs, torch.relu(ssim)])  # (scales, P)
    return torch.prod(stacked ** weights.view(-1, 1), dim=0)


def _check_settings(settings: MsSsimSettings, shape: tuple[int, int]) -> None:
    side = min(shape)
    if settings.win_size % 2 == 0 or settings.win_size < 1:
        raise InputError(f"MS-SSIM window {settings.win_size}: expected an odd number of pixels")
    if len(settings.weights) != settings.scales:
        raise InputError(f"MS-SSIM weights {settings.weights}: expected one per scale "
                         f"({settings.scales})")
    need = (settings.win_size - 1) * 2 ** (settings.scales - 1)
    if settings.scales > 1 and side <= need:
        raise InputError(f"images of {side} px are too small for {settings.scales} scales of a "
                         f"{settings.win_size}-px window (need more than {need} px)")
    if side < settings.win_size:
        raise InputError(f"images of {side} px are smaller than the {settings.win_size}-px "
                         "window")


def _blocks(n: int, shape: tuple[int, int], budget: int) -> list[np.ndarray]:
    """Image blocks whose statistics fit the budget two at a time (≈ 4·(4/3) maps of 4 bytes
    per image: the pooled image, μ, σ² and the pyramid's coarser scales)."""
    per_image = 4 * shape[0] * shape[1] * 3 * 4 / 3
    size = max(2, int(budget // (2 * per_image)))
    return [np.arange(s, min(s + size, n)) for s in range(0, n, size)]


def ms_ssim_pairs(images, pairs: list[tuple[int, int]], batch_size: int | None = None,
                  settings: MsSsimSettings | None = None, device: str = "cpu",
                  budget: int = STATS_BUDGET) -> np.ndarray:
    """MS-SSIM of each ``(i, j)`` pair of ``images``, equal to pytorch-msssim's ``ms_ssim``
    (``ssim`` for a single scale) of the pair, to float32 round-off.

    Cost: the Gaussian-filtered local means and variances (four of the five filterings of
    MS-SSIM) and the pyramid are computed once per image and scale; a pair costs one
    filtering of the product x·y per scale. Time ≈ a·N + b·(pairs), memory ≈ ``budget`` for
    the per-image statistics (beyond it the images are taken in blocks) plus
    ``batch_size`` product maps.

    Args:
        images: N images (see :func:`to_gray_batch`), 8-bit scale.
        pairs: index pairs into ``images``.
        batch_size: pairs per cross-term call (default :func:`default_pair_batch`).
        settings: default :meth:`MsSsimSettings.for_size` of the images.
        budget: bytes of per-image statistics held at once.

    Returns:
        float64 array (len(pairs),) of MS-SSIM values in [0, 1].
    """
    import torch

    gray = to_gray_batch(images)
    settings = settings or MsSsimSettings.for_size(min(gray.shape[1:]))
    _check_settings(settings, gray.shape[1:])
    if settings.fallback:
        warnings.warn(settings.fallback, UserWarning, stacklevel=2)
    pair_idx = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    out = np.empty(len(pair_idx), dtype=np.float64)
    if not len(pair_idx):
        return out
    if pair_idx.min() < 0 or pair_idx.max() >= len(gray):
        raise InputError(f"pair indices must lie in 0…{len(gray) - 1}")
    batch_size = batch_size or default_pair_batch(device)
    win = _window(settings, device)
    taps = win.flatten().tolist()
    weights = torch.tensor(settings.weights, dtype=torch.float32, device=device)
    blocks = _blocks(len(gray), gray.shape[1:], budget)
    block_of = np.concatenate([np.full(len(b), k) for k, b in enumerate(blocks)])
    # the smaller block first, pairs in (i, j) order so that runs share an image (a view)
    lo_hi = np.sort(np.stack([block_of[pair_idx[:, 0]], block_of[pair_idx[:, 1]]], 1), 1)
    with torch.no_grad(), _intra_op_threads(1 if not str(device).startswith("cuda") else None):
        for a, block_a in enumerate(blocks):
            todo = np.flatnonzero(lo_hi[:, 0] == a)
            if not len(todo):
                continue
            pyr_a = _pyramid(_to_tensor(gray[block_a], device), settings, taps)
            for b in np.unique(lo_hi[todo, 1]):
                here = todo[lo_hi[todo, 1] == b]
                pyr_b = pyr_a if b == a else _pyramid(
                    _to_tensor(gray[blocks[b]], device), settings, taps)
                _fill(out, here, pair_idx, block_of, blocks, a, b, pyr_a, pyr_b, settings,
                      taps, weights, batch_size)
    return out


@contextmanager
def _intra_op_threads(n: int | None):
    """torch's intra-op threads set to ``n`` for the block (``None``: unchanged), restored after.

    On a CPU every operation of a pair touches maps of ≤ 1 MB, too small for threads to pay
    their synchronisation: one thread measured 10–30× faster than two on a shared, busy
    2-core machine (not measured on an idle many-core one, where spreading *pairs* over
    cores would be the way to use them)."""
    import torch

    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _to_tensor(gray: np.ndarray, device):
    import torch

    return torch.from_numpy(np.ascontiguousarray(gray)).unsqueeze(1).to(device)


def _fill(out, here, pair_idx, block_of, blocks, a, b, pyr_a, pyr_b, settings, taps, weights,
          batch_size) -> None:
    """Values of the pairs ``here`` (between blocks a ≤ b) into ``out``, ``batch_size`` pairs
    per call, a run of pairs sharing their first image never split without need."""
    first, second = pair_idx[here, 0], pair_idx[here, 1]
    swap = block_of[first] != a  # put the image of block a first
    first, second = np.where(swap, second, first), np.where(swap, first, second)
    ia, ib = first - blocks[a][0], second - blocks[b][0]
    order = np.lexsort((ib, ia))
    ia, ib, here = ia[order], ib[order], here[order]
    starts = np.flatnonzero(np.r_[True, ia[1:] != ia[:-1]])
    bounds = []
    for run_start, run_stop in zip(starts, np.r_[starts[1:], len(ia)], strict=True):
        bounds += [(k, min(k + batch_size, run_stop))
                   for k in range(run_start, run_stop, batch_size)]
    for s, e in bounds:
        values = _pair_chunk(pyr_a, ia[s:e], pyr_b, ib[s:e], settings, taps, weights)
        out[here[s:e]] = values.double().cpu().numpy()


def all_pairs(n: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(n) for j in range(i + 1, n)]


def _n_all(n: int) -> int:
    return n * (n - 1) // 2


def random_pairs(n: int, max_pairs: int, seed: int = 0) -> list[tuple[int, int]]:
    """A uniform random subset of ``max_pairs`` of the N(N−1)/2 pairs ``(i, j)``, i < j, in
    (i, j) order (all pairs when there are no more than ``max_pairs``).

    Pairs are drawn as ranks without replacement (O(max_pairs) memory, not O(N²)) and mapped
    to (i, j) through the offsets of each row i of the upper triangle.
    """
    if isinstance(max_pairs, bool) or int(max_pairs) != max_pairs or max_pairs < 1:
        raise InputError(f"max_pairs {max_pairs!r}: expected a whole number ≥ 1")
    total = _n_all(n)
    if max_pairs >= total:
        return all_pairs(n)
    rank = np.sort(np.random.default_rng([seed, 7]).choice(total, size=int(max_pairs),
                                                             replace=False))
    rows = np.arange(n)
    offsets = rows * (2 * n - rows - 1) // 2  # rank of (i, i+1)
    i = np.searchsorted(offsets, rank, side="right") - 1
    j = rank - offsets[i] + i + 1
    return [(int(a), int(b)) for a, b in zip(i, j, strict=True)]


def _image_counts(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap multiplicities of N images, (n_boot, N)."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)


def _means_from_counts(pairs, values, counts: np.ndarray) -> np.ndarray:
    """Pair means of resampled images (NaN where no measured pair of distinct images).

    For resampled multiplicities ``c`` (multinomial), the mean over pairs of resampled draws
    that are two different images is ``Σₚ cᵢcⱼvₚ / Σₚ cᵢcⱼ`` over the measured pairs
    p = (i, j) — with all pairs measured that is ``cᵀMc / ((Σc)² − Σc²)`` (M the symmetric
    pair matrix, zero diagonal); with a random subset of pairs it averages the measured pairs
    among the resampled images, so the CI stays a bootstrap over images. A draw paired with
    a copy of itself is not a pair of two generated images and is left out.
    """
    idx = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    values = np.asarray(values, dtype=np.float64)
    numer = np.zeros(len(counts))
    denom = np.zeros(len(counts))
    step = max(1, int(2e7 // max(len(idx), 1)))  # bounded (replicates × pairs) blocks
    for start in range(0, len(counts), step):
        c = counts[start:start + step]
        weight = c[:, idx[:, 0]] * c[:, idx[:, 1]]
        numer[start:start + step] = weight @ values
        denom[start:start + step] = weight.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, numer / np.where(denom > 0, denom, 1.0), np.nan)


def _bootstrap_images(n: int, pairs, values, n_boot: int,
                      rng: np.random.Generator) -> np.ndarray:
    """Bootstrap means of the pair mean, resampling the N images."""
    means = _means_from_counts(pairs, values, _image_counts(n, n_boot, rng))
    return means[np.isfinite(means)]


def mean_over_sets(results: list[DiversityResult], level: float = 0.95, n_boot: int = 2000,
                   seed: int = 0) -> tuple[float, float, float]:
    """(mean, ci_low, ci_high) of the average of several sets' mean MS-SSIM (one set per
    prompt of a sweep scale).

    The sets of a sweep share their noise — image i of every prompt starts from seed S+i — so
    they are not independent: the bootstrap resamples the *seeds* jointly, one draw of image
    indices (pair indices for the ``paper`` protocol) applied to every set, a cluster
    bootstrap. Sets of different sizes or protocols cannot share a draw and are resampled
    each on its own. Sets measured on a random subset of pairs average, per replicate, their
    measured pairs among the resampled images (see :func:`_means_from_counts`).
    """
    boots = _set_replicates(results, n_boot, seed)
    if boots is None:
        r = results[0]
        return r.mean, r.ci_low, r.ci_high
    mean = float(np.mean([r.mean for r in results]))
    boots = boots[np.isfinite(boots)]
    if boots.size == 0:
        return mean, mean, mean
    lo, hi = percentile_interval(boots, level)
    return mean, lo, hi


def _set_replicates(results: list[DiversityResult], n_boot: int, seed: int = 0,
                    counts: np.ndarray | None = None) -> np.ndarray | None:
    """Bootstrap replicates (n_boot,) of the average of the sets' means, seeds resampled
    jointly (see :func:`mean_over_sets`); ``counts`` (n_boot, N): a given draw of image
    multiplicities for all-pairs sets of N images (a paired comparison across guidance
    scales passes the same draw to each). ``None`` for a single set and no ``counts``."""
    if not results:
        raise InputError("no diversity results to average")
    if len(results) == 1 and counts is None:
        return None
    rng = np.random.default_rng(seed)
    joint = len({(r.protocol, r.n_images, r.n_pairs) for r in results}) == 1
    if counts is not None and not joint:
        raise InputError("a shared bootstrap draw needs sets of one protocol and size")
    shared = counts
    replicates = []
    for r in results:
        draw = shared if shared is not None else bootstrap_draw(r, n_boot, rng)
        if draw.shape[1] != (r.n_images if r.protocol == "all-pairs" else r.n_pairs):
            raise InputError(f"a bootstrap draw over {draw.shape[1]} units cannot resample a "
                             f"set of {r.n_images} images, {r.n_pairs} pairs")
        if r.protocol == "all-pairs":
            replicates.append(_means_from_counts(r.pairs, r.values, draw))
        else:
            replicates.append(np.asarray(r.values)[draw].mean(axis=1))
        if joint:
            shared = draw
    return np.mean(replicates, axis=0)


def bootstrap_draw(result: DiversityResult, n_boot: int,
                   rng: np.random.Generator) -> np.ndarray:
    """One bootstrap draw for sets like ``result``: image multiplicities (n_boot, N) for
    ``all-pairs``, pair indices (n_boot, pairs) for ``paper`` (independent pairs)."""
    if result.protocol == "all-pairs":
        return _image_counts(result.n_images, n_boot, rng)
    return rng.integers(0, result.n_pairs, size=(n_boot, result.n_pairs))


def diversity(images, protocol: str = "all-pairs", pairs: list[tuple[int, int]] | None = None,
              level: float = 0.95, n_boot: int = 2000, seed: int = 0,
              batch_size: int | None = None, device: str = "cpu",
              max_pairs: int | None = None) -> DiversityResult:
    """Mean MS-SSIM among ``images`` with a bootstrap CI.

    Args:
        images: N same-size images (uint8 arrays or PIL), N ≥ 2.
        protocol: ``"all-pairs"`` (all N(N−1)/2 pairs) or ``"paper"`` (``pairs`` given, or
            consecutive disjoint pairs (0, 1), (2, 3), … — each from a fresh 2-image call).
        level: CI level; n_boot: bootstrap replicates; seed: bootstrap seed (and of the pair
            subset).
        max_pairs: ``all-pairs`` only: measure a uniform random subset of at most this many
            pairs (:func:`random_pairs`, seeded) — time grows with the pairs, so a folder of
            thousands of images takes bounded time. The CI still resamples images.
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
    if max_pairs is not None and protocol != "all-pairs":
        raise InputError("max_pairs (--max-pairs) applies to the all-pairs protocol only")
    if protocol == "all-pairs":
        pairs = all_pairs(n) if max_pairs is None else random_pairs(n, max_pairs, seed)
    elif pairs is None:
        if n % 2:
            raise InputError(f"protocol 'paper' pairs consecutive images; got an odd number {n}")
        pairs = [(i, i + 1) for i in range(0, n, 2)]
    values = ms_ssim_pairs(gray, pairs, batch_size=batch_size, settings=settings, device=device)
    rng = np.random.default_rng(seed)
    if protocol == "all-pairs":
        boots = _bootstrap_images(n, pairs, values, n_boot, rng)
    else:
        draws = rng.integers(0, len(values), size=(n_boot, len(values)))
        boots = values[draws].mean(axis=1)
    lo, hi = (percentile_interval(boots, level) if len(values) > 1
              else (values[0], values[0]))
    return DiversityResult(
        mean=float(values.mean()),
        std=float(values.std(ddof=1)) if len(values) > 1 else 0.0,
        ci_low=float(lo), ci_high=float(hi), n_images=n, n_pairs=len(values),
        protocol=protocol, level=level, n_boot=n_boot, settings=settings, max_pairs=max_pairs,
        pairs=[tuple(map(int, p)) for p in pairs], values=values.tolist(),
    )



def ms_ssim_trend(guidance: list[float], per_scale: list[list[DiversityResult]],
                  n_boot: int = 2000, seed: int = 0, level: float = 0.95):
    """The change of mean MS-SSIM across guidance scales with a paired bootstrap CI.

    Image i of every scale (and prompt) starts from the same seed, so one draw of the seeds
    (image multiplicities; pair indices for ``paper``) resamples every scale at once
    (:func:`mame_eval.stats.trend.paired_trend`).

    Args:
        guidance: (G,) scales; per_scale: for each scale its sets (one per prompt), all of one
            protocol and size.

    Returns:
        a :class:`mame_eval.stats.trend.Trend`, or ``None`` for fewer than 2 scales.
    """
    from mame_eval.stats.trend import paired_trend

    if len(per_scale) != len(guidance) or any(not sets for sets in per_scale):
        raise InputError("ms_ssim_trend: one non-empty list of sets per guidance scale")
    first = per_scale[0][0]
    draw = bootstrap_draw(first, n_boot, np.random.default_rng([seed, 11]))
    replicates = np.stack([_set_replicates(sets, n_boot, counts=draw) for sets in per_scale],
                          axis=1)
    estimate = [float(np.mean([r.mean for r in sets])) for sets in per_scale]
    unit = "seeds" if first.protocol == "all-pairs" else "seed pairs"
    return paired_trend("ms_ssim", guidance, estimate, replicates, unit, draw.shape[1],
                        level, label="MS-SSIM")
