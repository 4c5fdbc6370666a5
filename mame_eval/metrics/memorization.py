"""Memorisation: is a synthetic image a copy of a training image? Arrays in, numbers out.

The audit of one synthetic image, in three steps (Carlini et al. 2023; Dar et al. 2023/2024
did the same for chest X-rays with a learned feature space and a correlation threshold):

1. **Candidates.** Its ``k`` nearest training images in two feature spaces, each queried with
   the image and its left/right mirror (the paper mirrors right breasts, so a copy may come
   back mirrored): the user's extractor (MammoNet, Inception, any TorchScript — the FID
   extractors) and a *pixel thumbnail* (:func:`thumbnail_features`: the gray image averaged to
   32×32, zero mean, unit norm). They fail differently: measured on prepared phantoms, a
   learned feature space put brightness/contrast-altered copies among the 5 nearest only 48 %
   of the time and noisy ones 73 %, the thumbnail 100 %; a thumbnail lost 8 % of 4-px shifts
   the learned features kept. The index is scikit-learn's exact
   :class:`~sklearn.neighbors.NearestNeighbors`.
2. **Re-ranking in pixel space.** Each candidate pair is aligned — left/right mirroring as
   found by the candidate search, the translation within ±``max_shift`` px by phase correlation
   (:func:`estimate_shift`) — cropped to the overlap, the synthetic image's mean and standard
   deviation matched to the training image's (brightness/contrast), and compared by MS-SSIM
   (pytorch-msssim, ``data_range=255``, the diversity module's settings and weights). The
   image's *similarity* is the best over its candidates; MS-SSIM averages noise out over its
   coarser scales.
3. **Calibration.** The same score for real images the model never saw (a held-out set, or
   training images each scored against the rest: leave-one-out) is the *null*. A synthetic
   image is flagged when its conformal p-value ``(1 + #{null ≥ s}) / (n_null + 1)`` is at most
   ``alpha`` (:func:`null_threshold`): for an image exchangeable with the null images the
   chance of a flag is at most ``alpha`` whatever the null's shape (Vovk et al. 2005), so a
   flag reads "closer to a training image than real unseen mammograms are, at a false-flag
   rate of at most ``alpha``".

The copy rate is ``#flagged / n`` with an exact Clopper-Pearson interval
(:func:`copy_rate`); DCR (distance to closest record) is ``1 − similarity``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from mame_eval.errors import InputError
from mame_eval.metrics.diversity import MS_SSIM_WEIGHTS, MsSsimSettings
from mame_eval.metrics.features import FeatureExtractor
from mame_eval.stats.proportions import proportion_ci

__all__ = [
    "ALTERATIONS", "CopyRate", "DcrSummary", "MatchSettings", "NeighbourIndex", "PairMatch",
    "QueryScores",
    "alter", "candidate_pairs", "copy_rate", "dcr_summary", "estimate_shift", "match_pairs",
    "mirrored_extractor", "null_percentile", "null_threshold", "p_values", "score_queries",
    "thumbnail_extractor", "thumbnail_features", "to_working_size",
]


@dataclass(frozen=True)
class MatchSettings:
    """How synthetic images are matched to training images (stored in provenance).

    Attributes:
        k: nearest training images per feature space and orientation (≤ 4k candidates).
        max_shift: largest translation searched, in pixels at the comparison size.
        mirror: also match the left/right mirror of each query.
        compare_size: longest side, in pixels, of the images compared in pixel space (larger
            images are area-averaged down to it; smaller ones are never enlarged).
        thumbnail: side of the pixel thumbnail feature space.
        batch_size: pairs per MS-SSIM call (8 was fastest on a CPU; more on a GPU).
    """

    k: int = 5
    max_shift: int = 4
    mirror: bool = True
    compare_size: int = 256
    thumbnail: int = 32
    batch_size: int = 8

    def __post_init__(self) -> None:
        for name, low in (("k", 1), ("max_shift", 0), ("compare_size", 16), ("thumbnail", 4),
                          ("batch_size", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
                    or value < low:
                raise InputError(f"{name} (--{name.replace('_', '-')}) {value!r}: expected a "
                                 f"whole number ≥ {low}")

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- feature spaces


def _luma(images: np.ndarray) -> np.ndarray:
    """Gray float32 (N, H, W) from uint8 (N, H, W) or (N, H, W, 3) (PIL's ``L`` weights)."""
    images = np.asarray(images)
    if images.ndim == 4:
        images = images[..., :3].astype(np.float32) @ np.float32([0.299, 0.587, 0.114])
    if images.ndim != 3:
        raise InputError(f"expected images (N, H, W) or (N, H, W, 3); got {images.shape}")
    return images.astype(np.float32, copy=False)


def thumbnail_features(images: np.ndarray, side: int = 32) -> np.ndarray:
    """The pixel thumbnail of each image: float64 (N, side²).

    The gray image area-averaged to ``side × side``, minus its mean, divided by its norm, so
    the Euclidean distance between two thumbnails is ``sqrt(2 − 2r)`` with ``r`` their Pearson
    correlation: blind to brightness and contrast, and averaging noise away.

    Args:
        images: uint8 (N, H, W) gray or (N, H, W, 3) RGB.
    """
    import torch

    gray = torch.from_numpy(np.ascontiguousarray(_luma(images)))[:, None]
    small = torch.nn.functional.adaptive_avg_pool2d(gray, side)[:, 0]
    flat = small.reshape(len(small), -1).double().numpy()
    flat = flat - flat.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(flat, axis=1, keepdims=True)
    return flat / np.where(norm > 0, norm, 1.0)


def thumbnail_extractor(side: int = 32) -> FeatureExtractor:
    """:func:`thumbnail_features` as a :class:`~mame_eval.metrics.features.FeatureExtractor`,
    so that :func:`~mame_eval.metrics.features.extract_features` caches it by content hash
    like any other feature."""
    return FeatureExtractor(f"thumbnail{side}", f"thumbnail:v1:{side}",
                            lambda batch: thumbnail_features(batch, side),
                            resize=f"{side}×{side}, area average")


def mirrored_extractor(extractor: FeatureExtractor) -> FeatureExtractor:
    """The same features of each image's left/right mirror (its own cache identity)."""
    return FeatureExtractor(f"{extractor.name}, mirrored", f"{extractor.identity}:hflip",
                            lambda batch: extractor.fn(np.ascontiguousarray(batch[:, :, ::-1])),
                            resize=extractor.resize)


class NeighbourIndex:
    """Exact nearest neighbours (Euclidean) over training features, (N_train, d).

    A thin wrapper of :class:`sklearn.neighbors.NearestNeighbors` (brute force: exact, and at
    d ≥ 64 faster than trees) that can leave each query's own row out (leave-one-out null).
    """

    def __init__(self, features: np.ndarray, name: str = "features") -> None:
        from sklearn.neighbors import NearestNeighbors

        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or len(features) < 1:
            raise InputError(f"{name}: expected training features (N, d); got {features.shape}")
        if not np.isfinite(features).all():
            raise InputError(f"{name}: training features hold NaN or infinite values")
        self.name = name
        self.n = len(features)
        self._nn = NearestNeighbors(algorithm="brute").fit(features)

    def query(self, features: np.ndarray, k: int, exclude: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
        """``(distances, indices)``, each (Q, k'), nearest first; ``k' = min(k, N − excluded)``.

        Args:
            exclude: per query a training row to leave out (−1 for none), or None.
        """
        features = np.asarray(features, dtype=np.float64)
        extra = 0 if exclude is None else 1
        kk = min(k + extra, self.n)
        dist, idx = self._nn.kneighbors(features, n_neighbors=kk)
        if exclude is None:
            return dist[:, :k], idx[:, :k]
        keep = idx != np.asarray(exclude)[:, None]
        width = min(k, self.n - 1)
        # every row keeps kk or kk − 1 entries; the first `width` kept ones, in order
        order = np.argsort(~keep, axis=1, kind="stable")[:, :width]
        return (np.take_along_axis(dist, order, axis=1),
                np.take_along_axis(idx, order, axis=1))


def candidate_pairs(indexes: Sequence[NeighbourIndex],
                    queries: Sequence[tuple[np.ndarray, np.ndarray | None]], k: int,
                    exclude: np.ndarray | None = None) -> np.ndarray:
    """Unique ``(query, train, mirrored)`` candidate triples, int64 (P, 3), sorted.

    Args:
        indexes: one index per feature space.
        queries: per space, the query features as given and mirrored (None: no mirroring).
        k: neighbours per space and orientation.
        exclude: per query the training row that is the query itself (leave-one-out).
    """
    triples = []
    for index, (plain, flipped) in zip(indexes, queries, strict=True):
        for mirrored, feats in ((0, plain), (1, flipped)):
            if feats is None:
                continue
            _, idx = index.query(feats, k, exclude)
            rows = np.repeat(np.arange(len(idx)), idx.shape[1])
            triples.append(np.stack([rows, idx.ravel(), np.full(rows.size, mirrored)], 1))
    if not triples:
        raise InputError("no feature space to search")
    return np.unique(np.concatenate(triples).astype(np.int64), axis=0)


# --------------------------------------------------------------------------- pixel matching


def to_working_size(images: np.ndarray, compare_size: int) -> np.ndarray:
    """Gray float32 (N, h, w) on the 0…255 scale, area-averaged so that ``max(h, w) ≤
    compare_size`` (never enlarged)."""
    import torch

    gray = _luma(images)
    height, width = gray.shape[1:]
    scale = compare_size / max(height, width)
    if scale >= 1:
        return np.ascontiguousarray(gray)
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    out = torch.nn.functional.interpolate(torch.from_numpy(np.ascontiguousarray(gray))[:, None],
                                          size=size, mode="area")
    return out[:, 0].numpy()


def estimate_shift(queries: np.ndarray, references: np.ndarray, max_shift: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The translation ``(dy, dx)`` with ``queries[y, x] ≈ references[y − dy, x − dx]``, per pair.

    Phase correlation (Kuglin & Hines 1975): the peak of the inverse FFT of the normalised
    cross-power spectrum, searched within ±``max_shift`` px. Normalising the spectrum makes the
    peak sharp and blind to brightness and contrast (a plain cross-correlation of mammograms is
    dominated by the black background and pulls every estimate towards zero shift). The
    images are zero-padded by ``max_shift`` so that content entering at one border does not
    wrap around to the other.

    Args:
        queries, references: float (P, H, W), one pair per row.
    Returns:
        ``dy, dx``: int64 (P,) in [−max_shift, max_shift].
    """
    from scipy import fft

    q = np.asarray(queries, dtype=np.float32)
    r = np.asarray(references, dtype=np.float32)
    if max_shift == 0:
        zero = np.zeros(len(q), dtype=np.int64)
        return zero, zero.copy()
    shape = (q.shape[1] + max_shift, q.shape[2] + max_shift)
    fq = fft.rfft2(q - q.mean(axis=(1, 2), keepdims=True), shape, workers=1)
    fr = fft.rfft2(r - r.mean(axis=(1, 2), keepdims=True), shape, workers=1)
    cross = fq * np.conj(fr)
    magnitude = np.abs(cross)
    # a small floor keeps frequencies with no energy (flat images) from dividing by zero
    cross /= magnitude + 1e-3 * magnitude.mean(axis=(1, 2), keepdims=True) + 1e-12
    corr = fft.irfft2(cross, shape, workers=1)
    shifts = np.arange(-max_shift, max_shift + 1)
    window = corr[:, shifts[:, None] % shape[0], shifts[None, :] % shape[1]]
    best = window.reshape(len(q), -1).argmax(axis=1)
    return shifts[best // len(shifts)].astype(np.int64), shifts[best % len(shifts)].astype(np.int64)


def _aligned_crops(queries: np.ndarray, references: np.ndarray, dy: np.ndarray,
                   dx: np.ndarray, max_shift: int) -> tuple[np.ndarray, np.ndarray]:
    """The central (H − 2s, W − 2s) crop of each query and the matching window of its
    reference (shifted by (dy, dx)); both float32."""
    s = max_shift
    h, w = queries.shape[1] - 2 * s, queries.shape[2] - 2 * s
    q = queries[:, s:s + h, s:s + w]
    r = np.empty_like(q)
    for i, (a, b) in enumerate(zip(dy, dx, strict=True)):
        r[i] = references[i, s - a:s - a + h, s - b:s - b + w]
    return np.ascontiguousarray(q), r


def _match_moments(q: np.ndarray, r: np.ndarray) -> np.ndarray:
    """``q`` rescaled to the mean and standard deviation of ``r`` (per pair): an exact undo
    of a brightness/contrast change ``q = a·r + b`` (a > 0)."""
    mq, sq = q.mean(axis=(1, 2), keepdims=True), q.std(axis=(1, 2), keepdims=True)
    mr, sr = r.mean(axis=(1, 2), keepdims=True), r.std(axis=(1, 2), keepdims=True)
    return (q - mq) / np.where(sq > 0, sq, 1.0) * sr + mr


def ms_ssim_settings(height: int, width: int, max_shift: int) -> MsSsimSettings:
    """The MS-SSIM settings for crops of images of ``height × width`` after a shift search."""
    side = min(height, width) - 2 * max_shift
    if side < 7:
        raise InputError(f"images of {height}×{width} px leave a {side}-px overlap after a "
                         f"±{max_shift}-px shift search; need at least 7 px (lower max_shift)")
    return MsSsimSettings.for_size(side)


@dataclass
class PairMatch:
    """Pixel-space similarity of aligned pairs: MS-SSIM in [0, 1], 1 = identical up to the
    brightness/contrast change and shift that was undone."""

    similarity: np.ndarray  # (P,) float64
    dy: np.ndarray  # (P,) int64, query ≈ reference shifted down by dy
    dx: np.ndarray  # (P,) int64, … and right by dx


def match_pairs(queries: np.ndarray, references: np.ndarray, max_shift: int = 4,
                batch_size: int = 8, settings: MsSsimSettings | None = None,
                device: str = "cpu") -> PairMatch:
    """Align each pair (shift by phase correlation, brightness/contrast by moments) and
    compare it by MS-SSIM.

    Args:
        queries, references: float (P, H, W) on the 0…255 scale, already in the orientation
            to compare (mirror a query before calling to test a mirrored copy).
        max_shift: translations searched, pixels.
        settings: MS-SSIM settings (default :func:`ms_ssim_settings` of the size).
    Returns:
        :class:`PairMatch` of P pairs.
    """
    import torch
    from pytorch_msssim import ms_ssim, ssim

    queries = np.asarray(queries, dtype=np.float32)
    references = np.asarray(references, dtype=np.float32)
    if queries.shape != references.shape or queries.ndim != 3:
        raise InputError(f"pairs must be two (P, H, W) stacks of one shape; got {queries.shape} "
                         f"and {references.shape}")
    settings = settings or ms_ssim_settings(*queries.shape[1:], max_shift)
    out = np.empty(len(queries))
    dys, dxs = [], []
    for start in range(0, len(queries), batch_size):
        q, r = queries[start:start + batch_size], references[start:start + batch_size]
        dy, dx = estimate_shift(q, r, max_shift)
        qc, rc = _aligned_crops(q, r, dy, dx, max_shift)
        x = torch.from_numpy(_match_moments(qc, rc)[:, None]).to(device)
        y = torch.from_numpy(rc[:, None]).to(device)
        with torch.no_grad():
            if settings.scales == 1:
                v = ssim(x, y, data_range=settings.data_range, size_average=False,
                         win_size=settings.win_size, win_sigma=settings.win_sigma)
            else:
                v = ms_ssim(x, y, data_range=settings.data_range, size_average=False,
                            win_size=settings.win_size, win_sigma=settings.win_sigma,
                            weights=list(MS_SSIM_WEIGHTS))
        out[start:start + len(q)] = v.double().cpu().numpy()
        dys.append(dy)
        dxs.append(dx)
    empty = np.zeros(0, dtype=np.int64)
    return PairMatch(similarity=np.clip(out, 0.0, 1.0),
                     dy=np.concatenate(dys) if dys else empty,
                     dx=np.concatenate(dxs) if dxs else empty)


@dataclass
class QueryScores:
    """Per query image: its best-matching training image and the runner-up.

    ``nearest``/``second`` are training rows (−1 when there was no candidate); ``mirrored``
    says whether the query matched as its mirror; ``dy, dx`` the shift of the best match.
    """

    similarity: np.ndarray
    nearest: np.ndarray
    mirrored: np.ndarray
    dy: np.ndarray
    dx: np.ndarray
    second_similarity: np.ndarray
    second: np.ndarray
    n_candidates: np.ndarray

    def __len__(self) -> int:
        return len(self.similarity)

    @classmethod
    def concatenate(cls, parts: Sequence[QueryScores]) -> QueryScores:
        return cls(**{f: np.concatenate([getattr(p, f) for p in parts])
                      for f in cls.__dataclass_fields__})


def score_queries(queries: np.ndarray, triples: np.ndarray, train_images: dict[int, np.ndarray],
                  max_shift: int = 4, batch_size: int = 8, device: str = "cpu") -> QueryScores:
    """The pixel-space re-ranking: every candidate pair matched, the best kept per query.

    Args:
        queries: float (Q, h, w), at the comparison size (:func:`to_working_size`).
        triples: ``(query, train, mirrored)`` rows from :func:`candidate_pairs`.
        train_images: training row → float (h, w) at the comparison size, for every training
            row in ``triples`` (only candidates are ever read).
    """
    queries = np.asarray(queries, dtype=np.float32)
    n = len(queries)
    triples = np.asarray(triples, dtype=np.int64).reshape(-1, 3)
    result = QueryScores(
        similarity=np.full(n, np.nan), nearest=np.full(n, -1), mirrored=np.zeros(n, bool),
        dy=np.zeros(n, np.int64), dx=np.zeros(n, np.int64),
        second_similarity=np.full(n, np.nan), second=np.full(n, -1),
        n_candidates=(np.bincount(triples[:, 0], minlength=n) if len(triples)
                      else np.zeros(n, np.int64)))
    if not len(triples):
        return result
    q = queries[triples[:, 0]]
    flip = triples[:, 2].astype(bool)
    q[flip] = q[flip][:, :, ::-1]
    refs = np.stack([train_images[int(j)] for j in triples[:, 1]]).astype(np.float32)
    match = match_pairs(q, refs, max_shift=max_shift, batch_size=batch_size, device=device)
    # best pair per query, then the best pair of another training image (rank 2)
    order = np.lexsort((-match.similarity, triples[:, 0]))
    for i in np.unique(triples[:, 0]):
        rows = order[triples[order, 0] == i]
        best = rows[0]
        result.similarity[i] = match.similarity[best]
        result.nearest[i] = triples[best, 1]
        result.mirrored[i] = bool(triples[best, 2])
        result.dy[i], result.dx[i] = match.dy[best], match.dx[best]
        others = rows[triples[rows, 1] != triples[best, 1]]
        if len(others):
            result.second_similarity[i] = match.similarity[others[0]]
            result.second[i] = triples[others[0], 1]
    return result


# --------------------------------------------------------------------------- validation

#: the light alterations a planted copy gets in the validation (tests, benchmark)
ALTERATIONS = ("unchanged", "brightness-contrast", "noise", "shift", "mirror", "combined")


def alter(image: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """A lightly altered copy of a uint8 (H, W) image, as a plant for validating the audit.

    ``brightness-contrast``: ``a·x + b``, a ∈ [0.85, 1.2], b ∈ [−15, 15] gray levels, clipped;
    ``noise``: Gaussian, σ = 5 gray levels; ``shift``: 1–3 px in y and x, black entering;
    ``mirror``: left/right; ``combined``: all four, milder (a ∈ [0.9, 1.1], σ = 3, 1–2 px).
    """
    x = np.asarray(image, dtype=np.float64)
    if x.ndim != 2:
        raise InputError(f"alter: expected a gray (H, W) image, got {x.shape}")

    def shift(x, most):
        dy, dx = rng.integers(1, most + 1, 2) * rng.choice([-1, 1], 2)
        out = np.zeros_like(x)
        h, w = x.shape
        out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
            x[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
        return out

    if kind == "unchanged":
        pass
    elif kind == "brightness-contrast":
        x = x * rng.uniform(0.85, 1.2) + rng.uniform(-15, 15)
    elif kind == "noise":
        x = x + rng.normal(0, 5, x.shape)
    elif kind == "shift":
        x = shift(x, 3)
    elif kind == "mirror":
        x = x[:, ::-1]
    elif kind == "combined":
        x = shift(x[:, ::-1] * rng.uniform(0.9, 1.1) + rng.uniform(-10, 10)
                  + rng.normal(0, 3, x.shape), 2)
    else:
        raise InputError(f"alteration {kind!r}: expected one of {', '.join(ALTERATIONS)}")
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- calibration


def _null(null) -> np.ndarray:
    values = np.asarray(null, dtype=np.float64).ravel()
    if values.size == 0 or not np.isfinite(values).all():
        raise InputError("the null needs at least one finite similarity of a held-out image")
    return np.sort(values)


def p_values(similarity, null) -> np.ndarray:
    """Conformal p-values ``(1 + #{null ≥ s}) / (n_null + 1)`` of each similarity ``s``
    (small = closer to a training image than held-out images are)."""
    null = _null(null)
    s = np.asarray(similarity, dtype=np.float64)
    at_least = len(null) - np.searchsorted(null, s, side="left")
    return (1.0 + at_least) / (len(null) + 1.0)


def null_percentile(similarity, null) -> np.ndarray:
    """Percent of null similarities strictly below each ``s`` (0…100)."""
    null = _null(null)
    return 100.0 * np.searchsorted(null, np.asarray(similarity, float), side="left") / len(null)


def null_threshold(null, alpha: float) -> float:
    """The similarity above which an image is flagged at false-flag rate ``alpha``.

    ``s > threshold`` ⇔ ``p_value(s) ≤ alpha``: the threshold is the
    ``(n − m)``-th smallest null similarity, ``m = ⌊alpha (n + 1)⌋ − 1``.

    Raises:
        InputError: ``alpha`` outside (0, 1), or too few null images to flag anything at
            ``alpha`` (``n + 1 < 1 / alpha``).
    """
    if not 0 < alpha < 1:
        raise InputError(f"alpha {alpha!r}: expected a false-flag rate in (0, 1)")
    null = _null(null)
    n = len(null)
    m = int(np.floor(alpha * (n + 1) + 1e-9)) - 1
    if m < 0:
        need = int(np.ceil(1 / alpha - 1 - 1e-9))
        raise InputError(f"{n} held-out images cannot calibrate a false-flag rate of {alpha:g}: "
                         f"need at least {need} (give more held-out images or a larger alpha)")
    return float(null[n - m - 1])


@dataclass(frozen=True)
class CopyRate:
    """Fraction of images flagged as copies, with an exact (Clopper-Pearson) interval."""

    k: int
    n: int
    rate: float
    ci_low: float
    ci_high: float
    level: float
    threshold: float
    alpha: float

    def row(self, prefix: str = "copy_rate") -> dict:
        """Columns for a table row, e.g. one guidance scale of a sweep:
        ``copy_rate, copy_rate_ci_low, copy_rate_ci_high, copy_rate_k, copy_rate_n``."""
        return {prefix: self.rate, f"{prefix}_ci_low": self.ci_low,
                f"{prefix}_ci_high": self.ci_high, f"{prefix}_k": self.k,
                f"{prefix}_n": self.n}

    def to_dict(self) -> dict:
        return {**asdict(self), "method": "exact (Clopper-Pearson)"}


def copy_rate(similarity, threshold: float, alpha: float, level: float = 0.95) -> CopyRate:
    """The copy rate of images with these best similarities: ``#(s > threshold) / n``.

    Args:
        similarity: (N,) best similarity of each synthetic image to the training set.
        threshold: from :func:`null_threshold` at ``alpha`` (kept in the result).
    """
    s = np.asarray(similarity, dtype=np.float64).ravel()
    if s.size == 0:
        raise InputError("no synthetic images to compute a copy rate of")
    flagged = int(np.sum(s > threshold))
    lo, hi = proportion_ci(flagged, s.size, level=level, method="exact")
    return CopyRate(k=flagged, n=int(s.size), rate=flagged / s.size, ci_low=lo, ci_high=hi,
                    level=level, threshold=float(threshold), alpha=float(alpha))


QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


@dataclass
class DcrSummary:
    """Distance to closest record for synthetic vs held-out images, and how often a synthetic
    image is closer to the training set than a held-out one (AUROC, DeLong CI)."""

    synthetic: dict
    null: dict
    auroc_synthetic_closer: float | None
    auroc_ci: list[float] | None
    level: float = 0.95
    definition: str = ""
    notes: list[str] = field(default_factory=list)


def _describe(values: np.ndarray) -> dict:
    values = np.asarray(values, dtype=float)
    out = {"n": int(values.size), "mean": float(values.mean()), "min": float(values.min())}
    out.update({f"q{round(q * 100):02d}": float(np.quantile(values, q)) for q in QUANTILES})
    out["max"] = float(values.max())
    return out


def dcr_summary(synthetic_dcr, null_dcr, definition: str, level: float = 0.95) -> DcrSummary:
    """Quantiles of both DCR distributions and ``P(DCR_synthetic < DCR_null)`` as an AUROC
    (0.5: synthetic images are no closer to the training set than unseen real ones; 1: every
    one is closer) with its DeLong CI (:mod:`mame_eval.stats.roc`)."""
    from mame_eval.stats.roc import delong_ci

    syn = np.asarray(synthetic_dcr, dtype=float).ravel()
    nul = np.asarray(null_dcr, dtype=float).ravel()
    notes = []
    auc = ci = None
    if syn.size >= 2 and nul.size >= 2:
        truth = np.r_[np.ones(syn.size), np.zeros(nul.size)]
        auc, _, (lo, hi) = delong_ci(truth, -np.r_[syn, nul], level=level)
        ci = [float(lo), float(hi)]
    else:
        notes.append("AUROC of synthetic vs held-out DCR needs at least 2 images of each")
    return DcrSummary(synthetic=_describe(syn), null=_describe(nul),
                      auroc_synthetic_closer=None if auc is None else float(auc),
                      auroc_ci=ci, level=level, definition=definition, notes=notes)
