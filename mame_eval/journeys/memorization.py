"""The memorisation audit: did the model copy its training mammograms? (``mame-eval memorization``)

:func:`memorization_run` reads three folders of images prepared the same way — the training
set, the synthetic set and (optionally) real images the model never saw — and writes one run:

* ``memorization.csv`` — per synthetic image: ``image, nearest_train, similarity, flagged``,
  the p-value and null percentile of its similarity, the match's mirroring and shift, the
  rank-2 training image and its similarity, the distance to the nearest training image in the
  extractor's feature space;
* ``null.csv`` — the same scores of the held-out (or leave-one-out) images: the null;
* ``summary.json`` — copy rate with its exact CI, threshold, null quantiles, DCR (distance to
  closest record) distributions of synthetic vs held-out images;
* ``closest_pairs.png/.pdf`` (the closest synthetic–training pairs side by side) and
  ``similarity.png/.pdf`` (null vs synthetic similarity, the threshold);
* ``provenance.json`` and ``run.json``.

The method is in :mod:`mame_eval.metrics.memorization`. :class:`TrainingReference` is the
training side made searchable and calibrated, built once: a sweep builds one and calls
:meth:`TrainingReference.copy_rate` per guidance scale.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mame_eval.errors import InputError
from mame_eval.images import list_images, load_gray
from mame_eval.io import atomic_path, file_sha256
from mame_eval.journeys.record import RunRecord
from mame_eval.metrics.features import FeatureExtractor, extract_features, load_extractor
from mame_eval.metrics.memorization import (
    CopyRate,
    MatchSettings,
    NeighbourIndex,
    QueryScores,
    candidate_pairs,
    copy_rate,
    dcr_summary,
    mirrored_extractor,
    ms_ssim_settings,
    null_percentile,
    null_threshold,
    p_values,
    score_queries,
    thumbnail_extractor,
    to_working_size,
)

__all__ = ["COLUMNS", "ImageSet", "Scored", "TrainingReference", "build_reference",
           "image_set", "memorization_run"]

COLUMNS = ["image", "nearest_train", "similarity", "flagged", "p_value", "null_percentile",
           "mirrored", "shift_y", "shift_x", "second_train", "second_similarity",
           "feature_distance", "feature_dcr"]
NULL_COLUMNS = ["image", "nearest_train", "similarity", "mirrored", "shift_y", "shift_x",
                "second_train", "second_similarity", "feature_dcr"]
CHUNK = 64  # query images re-ranked per step (and per resumable checkpoint)
TRAIN_IMAGES_KEPT = 2048  # decoded training candidates kept in memory between steps

Progress = Callable[[int, int], None]


# --------------------------------------------------------------------------- inputs


@dataclass
class ImageSet:
    """A listed folder of images with the SHA-256 of every file and the one image size."""

    what: str
    folder: Path
    files: list[Path]
    hashes: list[str]
    size: tuple[int, int]  # (height, width)

    def __len__(self) -> int:
        return len(self.files)

    def digest(self) -> str:
        return hashlib.sha256("\n".join(self.hashes).encode()).hexdigest()

    def describe(self) -> dict:
        """``{"path", "sha256", "n_files"}`` over the images that were read: the record of
        :func:`mame_eval.provenance.describe_input`, without hashing the files again."""
        entries = sorted(f"{f.name}\t{h}" for f, h in zip(self.files, self.hashes, strict=True))
        digest = hashlib.sha256("\n".join(entries).encode()).hexdigest()
        return {"path": str(self.folder), "sha256": digest, "n_files": len(self.files)}


def _image_size(path: Path, what: str) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(path) as im:  # reads the header only
            width, height = im.size
    except Exception as exc:
        raise InputError(f"{what} {path}: not a readable image ({exc})") from None
    return height, width


def image_set(folder: Path | str, what: str) -> ImageSet:
    """List ``folder`` (:func:`mame_eval.images.list_images`) and check that every image
    opens and all share one size.

    Raises:
        InputError: missing/empty folder, an unreadable image, or images of several sizes.
    """
    folder = Path(folder)
    files = list_images(folder, what)
    size = _image_size(files[0], what)
    for f in files[1:]:
        other = _image_size(f, what)
        if other != size:
            raise InputError(
                f"{what} {f}: {other[0]}×{other[1]} px, but {files[0].name} in the same folder "
                f"is {size[0]}×{size[1]}; prepare all images to one size")
    return ImageSet(what, folder, files, [file_sha256(f) for f in files], size)


def _file_set(files: Sequence[Path | str], size: tuple[int, int],
              what: str = "synthetic image") -> ImageSet:
    """A list of image files (e.g. one guidance scale of a sweep) checked like a folder: at
    least one, every one readable and of the training images' size."""
    files = [Path(f) for f in files]
    if not files:
        raise InputError(f"no {what}s to audit")
    for f in files:
        other = _image_size(f, what)
        if other != size:
            raise InputError(f"{what} {f}: {other[0]}×{other[1]} px but the training images "
                             f"are {size[0]}×{size[1]}; prepare both the same way")
    return ImageSet(what, files[0].parent, files, [file_sha256(f) for f in files], size)


def _check_sets(train: ImageSet, synthetic: ImageSet | None, holdout: ImageSet | None) -> None:
    """Distinct folders, one image size, and no training image inside the held-out set."""
    sets = [s for s in (train, synthetic, holdout) if s is not None]
    for i, a in enumerate(sets):
        for b in sets[i + 1:]:
            if a.folder.resolve() == b.folder.resolve():
                raise InputError(f"{b.what} {b.folder} is the {a.what} folder; the audit "
                                 f"compares two different sets of images")
    for s in sets[1:]:
        if s.size != train.size:
            raise InputError(
                f"{s.what} {s.folder}: images are {s.size[0]}×{s.size[1]} px but the training "
                f"images (--train {train.folder}) are {train.size[0]}×{train.size[1]}; prepare "
                f"both the same way (mame-eval prepare --size) before comparing them")
    if holdout is not None:
        seen = dict(zip(train.hashes, train.files, strict=True))
        shared = [(f, seen[h]) for f, h in zip(holdout.files, holdout.hashes, strict=True)
                  if h in seen]
        if shared:
            f, t = shared[0]
            raise InputError(
                f"--holdout {holdout.folder}: {len(shared)} image(s) are byte-identical to "
                f"training images (first: {f.name} = {t.name}); held-out images must be "
                f"unseen by the model")


# --------------------------------------------------------------------------- scoring


@dataclass
class Scored:
    """The scores of one set of query images against the training set."""

    files: list[Path]
    scores: QueryScores
    feature_distance: np.ndarray  # extractor space, query (matched orientation) ↔ nearest
    feature_dcr: np.ndarray  # extractor space: distance to the closest training image


@dataclass
class TrainingReference:
    """The training set made searchable and the null calibrated; build with
    :func:`build_reference`, then audit any number of synthetic sets against it."""

    train: ImageSet
    extractor: FeatureExtractor
    settings: MatchSettings
    alpha: float
    train_features: np.ndarray
    train_thumbnails: np.ndarray
    indexes: list[NeighbourIndex]
    working_size: tuple[int, int]
    null_source: str = ""
    null: Scored | None = None
    threshold: float = float("nan")
    cache_dir: Path | None = None
    device: str = "cpu"
    _cache: OrderedDict = field(default_factory=OrderedDict, repr=False)

    @property
    def key(self) -> str:
        """Changes whenever a score could: training bytes, extractor, match settings."""
        text = json.dumps([self.train.digest(), self.extractor.identity,
                           self.settings.to_dict(), "memorization:v1"])
        return hashlib.sha256(text.encode()).hexdigest()

    def _train_image(self, j: int) -> np.ndarray:
        """Training row ``j`` at the comparison size (an LRU of decoded images)."""
        if j in self._cache:
            self._cache.move_to_end(j)
            return self._cache[j]
        image = to_working_size(load_gray(self.train.files[j])[None],
                                self.settings.compare_size)[0]
        self._cache[j] = image
        if len(self._cache) > TRAIN_IMAGES_KEPT:
            self._cache.popitem(last=False)
        return image

    def _features(self, files: Sequence[Path], extractor: FeatureExtractor,
                  progress: Progress | None = None) -> np.ndarray:
        return extract_features(files, extractor, cache_dir=self.cache_dir, progress=progress)

    def score(self, images: ImageSet | Sequence[Path], exclude: np.ndarray | None = None,
              progress: Progress | None = None) -> Scored:
        """Score query images against the training set (``exclude``: per query a training
        row to leave out, for the leave-one-out null)."""
        if not isinstance(images, ImageSet):
            images = _file_set(images, self.train.size)
        files, hashes = images.files, images.hashes
        s = self.settings
        thumb = thumbnail_extractor(s.thumbnail)
        if exclude is not None:  # training images: their features are rows already
            plain = self.train_features[exclude]
            thumbs = self.train_thumbnails[exclude]
        else:
            plain = self._features(files, self.extractor)
            thumbs = self._features(files, thumb)
        flipped = self._features(files, mirrored_extractor(self.extractor)) if s.mirror else None
        thumbs_flipped = self._features(files, mirrored_extractor(thumb)) if s.mirror else None
        triples = candidate_pairs(self.indexes, [(plain, flipped), (thumbs, thumbs_flipped)],
                                  s.k, exclude)
        parts = []
        for start in range(0, len(files), CHUNK):
            stop = min(start + CHUNK, len(files))
            parts.append(self._score_chunk(files[start:stop], hashes[start:stop], triples,
                                           start, stop, exclude))
            if progress:
                progress(stop, len(files))
        scores = QueryScores.concatenate(parts)
        # distances in the extractor's own space, for the table and the DCR
        dist = np.full(len(files), np.nan)
        has = scores.nearest >= 0
        query = np.where(scores.mirrored[:, None], flipped, plain) if flipped is not None \
            else plain
        dist[has] = np.linalg.norm(query[has] - self.train_features[scores.nearest[has]], axis=1)
        dcr, _ = self.indexes[0].query(plain, 1, exclude)
        if flipped is not None:
            dcr = np.minimum(dcr, self.indexes[0].query(flipped, 1, exclude)[0])
        return Scored(files, scores, dist, dcr[:, 0])

    def _score_chunk(self, files, hashes, triples, start, stop, exclude) -> QueryScores:
        rows = triples[(triples[:, 0] >= start) & (triples[:, 0] < stop)].copy()
        rows[:, 0] -= start
        checkpoint = None
        if self.cache_dir is not None:
            text = json.dumps([self.key, hashes, rows.tolist(),
                               None if exclude is None else exclude[start:stop].tolist()])
            checkpoint = (Path(self.cache_dir) / "memorization"
                          / f"{hashlib.sha256(text.encode()).hexdigest()}.npz")
            if checkpoint.is_file():
                with np.load(checkpoint) as saved:
                    return QueryScores(**{k: saved[k] for k in QueryScores.__dataclass_fields__})
        queries = to_working_size(np.stack([load_gray(f) for f in files]),
                                  self.settings.compare_size)
        train = {int(j): self._train_image(int(j)) for j in np.unique(rows[:, 1])}
        scores = score_queries(queries, rows, train, max_shift=self.settings.max_shift,
                               batch_size=self.settings.batch_size, device=self.device)
        if checkpoint is not None:
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(checkpoint) as tmp, open(tmp, "wb") as fh:
                np.savez(fh, **{k: getattr(scores, k) for k in QueryScores.__dataclass_fields__})
        return scores

    def flags(self, similarity: np.ndarray) -> np.ndarray:
        return np.asarray(similarity) > self.threshold

    def copy_rate(self, images: ImageSet | Sequence[Path], level: float = 0.95,
                  progress: Progress | None = None) -> CopyRate:
        """The copy rate of a synthetic set (e.g. one guidance scale of a sweep), with its
        exact CI, at this reference's calibrated threshold."""
        scored = self.score(images, progress=progress)
        return copy_rate(_filled(scored.scores.similarity), self.threshold, self.alpha, level)


def _filled(similarity: np.ndarray) -> np.ndarray:
    """A query without any candidate (cannot happen with ≥ 1 training image) scores 0."""
    return np.nan_to_num(np.asarray(similarity, dtype=float), nan=0.0)


def build_reference(train: Path | str | ImageSet, *, holdout: Path | str | ImageSet | None = None,
                    features: str = "mammonet", inception_weights: Path | None = None,
                    settings: MatchSettings | None = None, alpha: float = 0.01,
                    max_null: int = 1000, seed: int = 0, cache_dir: Path | None = None,
                    device: str = "cpu", progress: Progress | None = None
                    ) -> TrainingReference:
    """Index the training set and calibrate the threshold on the null.

    The null is every held-out image (``holdout``; a random ``max_null`` of them when there
    are more), or without one, a random ``max_null`` training images each scored against the
    other training images (leave-one-out).

    Raises:
        InputError: bad folders (see :func:`image_set`), held-out images that are training
            images, or too few null images for ``alpha``.
    """
    settings = settings or MatchSettings()
    if max_null < 1:
        raise InputError(f"--max-null {max_null}: expected at least 1")
    train = train if isinstance(train, ImageSet) else image_set(train, "--train")
    if holdout is not None and not isinstance(holdout, ImageSet):
        holdout = image_set(holdout, "--holdout")
    _check_sets(train, None, holdout)
    if not 0 < alpha < 1:
        raise InputError(f"--alpha {alpha!r}: expected a false-flag rate in (0, 1)")
    working = to_working_size(np.zeros((1, *train.size), np.uint8), settings.compare_size)
    working_size = tuple(int(v) for v in working.shape[1:])
    ms_ssim_settings(*working_size, settings.max_shift)  # fails early on too small images
    rng = np.random.default_rng(seed)
    if holdout is not None:
        pick = np.sort(rng.choice(len(holdout), min(max_null, len(holdout)), replace=False))
        null_files = [holdout.files[i] for i in pick]
    else:
        if len(train) < 2:
            raise InputError(f"--train {train.folder}: one image; a leave-one-out null needs "
                             "at least 2 (or give --holdout)")
        pick = np.sort(rng.choice(len(train), min(max_null, len(train)), replace=False))
        null_files = [train.files[i] for i in pick]
    _null_size_check(len(null_files), alpha, holdout is not None)
    extractor = load_extractor(features, inception_weights=inception_weights, device=device)
    ref = TrainingReference(train=train, extractor=extractor, settings=settings, alpha=alpha,
                            train_features=np.empty((0, 0)), train_thumbnails=np.empty((0, 0)),
                            indexes=[], working_size=working_size, cache_dir=cache_dir,
                            device=device)
    total = len(train) + len(null_files)

    def offset(start: int) -> Progress | None:
        return None if progress is None else (lambda done, _n: progress(start + done, total))

    ref.train_features = ref._features(train.files, extractor, offset(0))
    ref.train_thumbnails = ref._features(train.files, thumbnail_extractor(settings.thumbnail))
    ref.indexes = [NeighbourIndex(ref.train_features, extractor.name),
                   NeighbourIndex(ref.train_thumbnails, "thumbnail")]
    if holdout is not None:
        ref.null = ref.score(null_files, progress=offset(len(train)))
        ref.null_source = f"held-out images ({holdout.folder})"
    else:
        ref.null = ref.score(null_files, exclude=pick, progress=offset(len(train)))
        ref.null_source = "leave-one-out of the training images"
    ref.threshold = null_threshold(_filled(ref.null.scores.similarity), alpha)
    return ref


def _null_size_check(n: int, alpha: float, held_out: bool) -> None:
    """The null must be able to flag anything at ``alpha``: ``n + 1 ≥ 1 / alpha``."""
    if n + 1 < 1 / alpha - 1e-9:
        need = int(np.ceil(1 / alpha - 1 - 1e-9))
        source, hint = (("--holdout", "give more held-out images") if held_out else
                        ("leave-one-out null", "give a --holdout folder or more training images"))
        raise InputError(f"{source}: {n} images cannot calibrate a false-flag rate (--alpha) "
                         f"of {alpha:g}; need at least {need} ({hint}, or raise --alpha)")


# --------------------------------------------------------------------------- the journey


def _scale_shift(shift: np.ndarray, original: int, working: int) -> np.ndarray:
    return np.round(np.asarray(shift) * original / working).astype(int)


def _table(ref: TrainingReference, scored: Scored, null: np.ndarray | None) -> pd.DataFrame:
    s = scored.scores
    names = [f.name for f in ref.train.files]

    def name(j):
        return names[j] if j >= 0 else ""

    sim = _filled(s.similarity)
    frame = pd.DataFrame({
        "image": [f.name for f in scored.files],
        "nearest_train": [name(j) for j in s.nearest],
        "similarity": sim,
    })
    if null is not None:
        frame["flagged"] = ref.flags(sim)
        frame["p_value"] = p_values(sim, null)
        frame["null_percentile"] = null_percentile(sim, null)
    frame["mirrored"] = s.mirrored.astype(bool)
    frame["shift_y"] = _scale_shift(s.dy, ref.train.size[0], ref.working_size[0])
    frame["shift_x"] = _scale_shift(s.dx, ref.train.size[1], ref.working_size[1])
    frame["second_train"] = [name(j) for j in s.second]
    frame["second_similarity"] = s.second_similarity
    if null is not None:
        frame["feature_distance"] = scored.feature_distance
    frame["feature_dcr"] = scored.feature_dcr
    return frame[COLUMNS if null is not None else NULL_COLUMNS]


def _quantiles(values: np.ndarray) -> dict:
    qs = {"q50": 0.5, "q90": 0.9, "q95": 0.95, "q99": 0.99}
    out = {k: float(np.quantile(values, q)) for k, q in qs.items()}
    out["max"] = float(np.max(values))
    out["n"] = int(len(values))
    return out


def memorization_run(train: Path, synthetic: Path, out: Path, *, holdout: Path | None = None,
                     features: str = "mammonet", inception_weights: Path | None = None,
                     alpha: float = 0.01, settings: MatchSettings | None = None,
                     max_null: int = 1000, top: int = 8, level: float = 0.95, seed: int = 0,
                     cache_dir: Path | None = None, device: str = "cpu",
                     progress: Progress | None = None) -> RunRecord:
    """Audit ``synthetic`` against ``train``; write and return the run (see module docstring).

    Args:
        train, synthetic, holdout: folders of images prepared the same way (one size).
        features: the candidate feature space (as for FID): ``mammonet``, ``inception``, a
            MammoNet folder or a TorchScript ``.pt``.
        alpha: false-flag rate: the chance that an image like the held-out ones is flagged.
        settings: candidate search and pixel matching (:class:`MatchSettings`).
        max_null: at most this many null images (a seeded random subset).
        top: closest pairs in the figure.
        cache_dir: features and re-ranking checkpoints (default ``out/cache``): a rerun, or a
            second audit against the same training set, reuses them.
    """
    from mame_eval.provenance import describe_device
    from mame_eval.reports.memorization import closest_pairs_figure, similarity_figure

    out = Path(out)
    settings = settings or MatchSettings()
    if top < 0:
        raise InputError(f"--top {top}: expected 0 or more")
    train_set = image_set(train, "--train")
    synthetic_set = image_set(synthetic, "--synthetic")
    holdout_set = image_set(holdout, "--holdout") if holdout is not None else None
    _check_sets(train_set, synthetic_set, holdout_set)
    cache_dir = Path(cache_dir) if cache_dir is not None else out / "cache"

    # progress: training features, then the null, then the synthetic images
    n_null = min(max_null, len(holdout_set if holdout_set is not None else train_set))
    total = len(train_set) + n_null + len(synthetic_set)

    def step(start: int) -> Progress | None:
        return None if progress is None else (lambda done, _n: progress(start + done, total))

    ref = build_reference(train_set, holdout=holdout_set, features=features,
                          inception_weights=inception_weights, settings=settings, alpha=alpha,
                          max_null=max_null, seed=seed, cache_dir=cache_dir, device=device,
                          progress=step(0))
    scored = ref.score(synthetic_set, progress=step(len(train_set) + n_null))
    null = _filled(ref.null.scores.similarity)
    table = _table(ref, scored, null)
    null_table = _table(ref, ref.null, None)
    rate = copy_rate(table["similarity"].to_numpy(), ref.threshold, alpha, level)

    dcr = dcr_summary(1 - table["similarity"], 1 - null,
                      "1 − MS-SSIM to the closest training image after alignment", level)
    dcr_feat = dcr_summary(scored.feature_dcr, ref.null.feature_dcr,
                           f"Euclidean distance to the closest training image in the "
                           f"{ref.extractor.name} feature space (either orientation)", level)
    exact = len(set(synthetic_set.hashes) & set(train_set.hashes))
    ms = ms_ssim_settings(*ref.working_size, settings.max_shift)
    record = RunRecord(kind="memorization", out=out, device=describe_device(device))
    if ms.fallback:
        record.note(f"MS-SSIM on the {ref.working_size[0] - 2 * settings.max_shift}-px overlap: "
                    f"{ms.fallback}")
    if holdout_set is None:
        record.note(
            f"no --holdout: the null is leave-one-out ({len(ref.null.files)} training images, "
            "each scored against the others). Near-duplicates inside the training set (two "
            "views of one breast, both breasts of one woman) raise it and make the audit "
            "conservative; a patient-disjoint --holdout is the better null")
    if exact:
        record.note(f"{exact} synthetic file(s) are byte-identical to training images")
    summary = {
        "copy_rate": rate.to_dict(),
        "n_synthetic": len(synthetic_set), "n_train": len(train_set),
        "n_null": len(ref.null.files), "null_source": ref.null_source,
        "alpha": alpha, "threshold": ref.threshold,
        "flag_rule": ("similarity > threshold, i.e. conformal p-value (1 + #{null ≥ s}) / "
                      "(n_null + 1) ≤ alpha: an image like the null images is flagged with "
                      "probability ≤ alpha"),
        "similarity": "MS-SSIM after mirroring, shift and brightness/contrast alignment",
        "null_quantiles": _quantiles(null),
        "synthetic_quantiles": _quantiles(table["similarity"].to_numpy()),
        "byte_identical_to_training": exact,
        "dcr": _dcr_dict(dcr), "dcr_features": _dcr_dict(dcr_feat),
    }
    order = table.sort_values("similarity", ascending=False).head(top).index
    pairs = []
    for i in order:
        row = table.loc[i]
        j = int(scored.scores.nearest[i])
        if j < 0:
            continue
        pairs.append({"synthetic": load_gray(scored.files[i]), "train": load_gray(
            ref.train.files[j]), "synthetic_name": row["image"], "train_name": row[
            "nearest_train"], "similarity": float(row["similarity"]),
            "p_value": float(row["p_value"]), "flagged": bool(row["flagged"]),
            "mirrored": bool(row["mirrored"])})
    record.settings = {
        "features": features, "feature_space": ref.extractor.name,
        "feature_resize": ref.extractor.resize, "match": settings.to_dict(),
        "comparison_size": list(ref.working_size), "image_size": list(train_set.size),
        "ms_ssim": {"data_range": ms.data_range, "win_size": ms.win_size,
                    "win_sigma": ms.win_sigma, "scales": ms.scales, "fallback": ms.fallback},
        "alpha": alpha, "level": level, "max_null": max_null, "seed": seed, "top": top,
        "null_source": ref.null_source, "index": "scikit-learn NearestNeighbors (brute, exact)",
        "cache_dir": str(cache_dir),
    }
    record.inputs = {"train": train_set.describe(), "synthetic": synthetic_set.describe()}
    if holdout_set is not None:
        record.inputs["holdout"] = holdout_set.describe()
    record.tables = {"memorization": table, "null": null_table}
    record.figures = {
        "closest_pairs": closest_pairs_figure(pairs, threshold=ref.threshold, alpha=alpha),
        "similarity": similarity_figure(table["similarity"].to_numpy(), null, ref.threshold,
                                        alpha=alpha, null_label=_short_null(ref)),
    }
    record.documents = {"summary": summary}
    record.summary = {"copy_rate": rate.rate, "copy_rate_ci": [rate.ci_low, rate.ci_high],
                      "flagged": rate.k, "n_synthetic": rate.n, "threshold": ref.threshold,
                      "alpha": alpha, "n_null": len(ref.null.files),
                      "null_source": ref.null_source,
                      "dcr_auroc": dcr.auroc_synthetic_closer, "dcr_auroc_ci": dcr.auroc_ci}
    record.csv_float_format = "%.6g"
    return record.write()


def _short_null(ref: TrainingReference) -> str:
    return ("held-out real" if ref.null_source.startswith("held-out")
            else "training, leave-one-out")


def _dcr_dict(d) -> dict:
    return {"definition": d.definition, "synthetic": d.synthetic, "null": d.null,
            "auroc_synthetic_closer": d.auroc_synthetic_closer, "auroc_ci": d.auroc_ci,
            "level": d.level, "notes": d.notes}
