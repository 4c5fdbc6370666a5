"""Training samples for MammoNet from a prepared dataset (DESIGN §4), and the held-out split.

:func:`load_samples` reads ``healthy/metadata.jsonl`` (lesion label 0) and
``lesion/metadata.jsonl`` (lesion label 1). A source image with several lesion samples
(``<id>_m0``, ``<id>_m1``: the same pixels, one box each) is used once, with the union of its
box masks (``mask_file``). Attribute labels come
from the metadata fields ``view``, ``density``, ``area``, ``vendor``; a missing value (e.g. the
density of a Hologic image) is ``-1`` and is masked out of that head's loss and accuracy.

``labels_csv`` (optional) overrides them per source image: a CSV with an ``image_id`` (or
``source_id``) column and any of ``view``, ``density`` (BI-RADS letter A–D or a density word),
``area``, ``vendor`` — e.g. the phantoms' ``phantom_truth.csv``, which gives every phantom its
true density. An empty cell keeps the metadata value.

:func:`split_by_source` holds out whole source images (every healthy or lesion copy of one
source lands on the same side: no leakage), stratified by lesion status, seeded.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mame_eval.cad.model import ATTRIBUTES
from mame_eval.errors import DataError, PromptError
from mame_eval.io import read_jsonl
from mame_eval.prompts import parse_value

__all__ = ["Sample", "load_images", "load_masks", "load_samples", "read_gray",
           "split_by_source", "to_input"]


@dataclass
class Sample:
    """One training image: its file, source image id, lesion label and attribute labels."""

    path: Path
    source_id: str
    lesion: int
    labels: dict[str, int] = field(default_factory=dict)  # attribute → class index, -1 missing
    mask_paths: list[Path] = field(default_factory=list)  # lesion box masks (lesion samples)


def _label_index(field_name: str, value, where: str) -> int:
    if value is None or (isinstance(value, str) and not value.strip()):
        return -1
    try:
        canonical = parse_value(field_name, str(value)).value
    except PromptError as exc:
        raise DataError(f"{where}: {exc}") from None
    return ATTRIBUTES[field_name].index(canonical)


def _read_overrides(path: Path) -> dict[str, dict[str, int]]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"labels_csv {path}: file not found")
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        columns = reader.fieldnames or []
        key = "image_id" if "image_id" in columns else "source_id" if "source_id" in columns \
            else None
        if key is None:
            raise DataError(f"labels_csv {path}: needs an image_id or source_id column; "
                            f"found {', '.join(columns) or 'no header'}")
        used = [c for c in ATTRIBUTES if c in columns]
        if not used:
            raise DataError(f"labels_csv {path}: none of the label columns "
                            f"{', '.join(ATTRIBUTES)} found")
        table = {}
        for i, row in enumerate(reader, start=2):
            labels = {c: _label_index(c, row[c], f"{path} line {i} column {c}") for c in used}
            table[row[key]] = {c: v for c, v in labels.items() if v >= 0}
    return table


def load_samples(data_dir: Path | str, labels_csv: Path | str | None = None
                 ) -> tuple[list[Sample], dict]:
    """Samples of a prepared dataset, sorted by file; plus a small report dict.

    Raises:
        DataError: a metadata file is missing or malformed, an image is missing, or the
            dataset lacks healthy or lesion images.
    """
    data_dir = Path(data_dir)
    overrides = _read_overrides(labels_csv) if labels_csv else {}
    samples: list[Sample] = []
    seen_lesion: dict[str, Sample] = {}
    n_overridden = 0
    for kind, lesion in (("healthy", 0), ("lesion", 1)):
        meta = data_dir / kind / "metadata.jsonl"
        if not meta.is_file():
            raise DataError(f"{meta}: not found — data_dir must be a prepared dataset with "
                            "healthy/ and lesion/ folders (mame-eval prepare)")
        for i, row in enumerate(read_jsonl(meta), start=1):
            where = f"{meta} line {i}"
            if "file_name" not in row:
                raise DataError(f"{where}: no file_name")
            path = data_dir / kind / row["file_name"]
            if not path.is_file():
                raise DataError(f"{where}: image {path} not found")
            source = str(row.get("source_id") or Path(row["file_name"]).stem)
            mask_paths = []
            if lesion and row.get("mask_file"):
                mask_path = data_dir / kind / row["mask_file"]
                if not mask_path.is_file():
                    raise DataError(f"{where}: mask {mask_path} not found")
                mask_paths.append(mask_path)
            if lesion and source in seen_lesion:
                seen_lesion[source].mask_paths.extend(mask_paths)
                continue
            labels = {a: _label_index(a, row.get(a), f"{where} field {a}") for a in ATTRIBUTES}
            if source in overrides:
                labels.update(overrides[source])
                n_overridden += 1
            samples.append(Sample(path, source, lesion, labels, mask_paths))
            if lesion:
                seen_lesion[source] = samples[-1]
    n_pos = sum(s.lesion for s in samples)
    if n_pos == 0 or n_pos == len(samples):
        raise DataError(f"{data_dir}: needs both healthy and lesion images to train a lesion "
                        f"classifier (found {len(samples) - n_pos} healthy, {n_pos} lesion)")
    report = {
        "n_samples": len(samples), "n_healthy": len(samples) - n_pos, "n_lesion": n_pos,
        "labels_overridden": n_overridden,
        "labelled": {a: sum(s.labels[a] >= 0 for s in samples) for a in ATTRIBUTES},
    }
    return samples, report


def split_by_source(samples: list[Sample], val_fraction: float, seed: int
                    ) -> tuple[list[int], list[int]]:
    """Indices ``(train, val)``: whole source images held out, stratified by lesion status.

    A source with any lesion sample is in the "lesion" stratum. Each stratum contributes
    ``round(val_fraction · n_sources)`` sources (at least one when ``val_fraction > 0`` and the
    stratum has two or more sources).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction {val_fraction}: expected 0 <= val_fraction < 1")
    by_source: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        by_source.setdefault(s.source_id, []).append(i)
    strata: dict[int, list[str]] = {0: [], 1: []}
    for source in sorted(by_source):
        strata[int(any(samples[i].lesion for i in by_source[source]))].append(source)
    rng = np.random.default_rng(seed)
    val_sources: set[str] = set()
    for stratum in (0, 1):
        sources = strata[stratum]
        k = round(val_fraction * len(sources))
        if val_fraction > 0 and len(sources) >= 2:
            k = min(max(k, 1), len(sources) - 1)
        order = rng.permutation(len(sources))
        val_sources.update(sources[j] for j in order[:k])
    train = [i for i, s in enumerate(samples) if s.source_id not in val_sources]
    val = [i for i, s in enumerate(samples) if s.source_id in val_sources]
    return train, val


def to_input(gray: np.ndarray, size: int | None) -> torch.Tensor:
    """One 8-bit gray image ``(H, W)`` → float32 ``(1, 1, S, S)`` in [0, 1].

    Resized to ``size × size`` (bilinear, antialiased — the same at training and explanation
    time) unless ``size`` is ``None`` or already the image's size.
    """
    import torch.nn.functional as F

    t = torch.from_numpy(np.array(gray, dtype=np.float32))
    if t.ndim != 2:
        raise DataError(f"expected a 2-D gray image; got shape {tuple(t.shape)}")
    t = (t / 255.0)[None, None]
    if size is not None and tuple(t.shape[-2:]) != (size, size):
        t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False,
                          antialias=True).clamp_(0.0, 1.0)
    return t


def read_gray(path: Path) -> np.ndarray:
    """An image file as 8-bit gray ``(H, W)`` uint8 (RGB is converted with PIL's ``L``)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("L"))
    except OSError as exc:
        raise DataError(f"{path}: cannot read image ({exc})") from None


def load_images(paths: list[Path], size: int) -> torch.Tensor:
    """Images as model input, float32 ``(N, 1, size, size)`` in [0, 1] (see :func:`to_input`)."""
    out = torch.empty((len(paths), 1, size, size), dtype=torch.float32)
    for i, p in enumerate(paths):
        out[i] = to_input(read_gray(p), size)[0]
    return out


def load_masks(samples: list[Sample], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Lesion masks as float ``(N, 1, size, size)`` in [0, 1] (resized like the images; the
    union of a sample's masks; zeros for healthy samples) and a ``(N,)`` bool tensor telling
    which samples have a known mask (healthy: yes; lesion: only with a ``mask_file``)."""
    out = torch.zeros((len(samples), 1, size, size), dtype=torch.float32)
    known = torch.zeros(len(samples), dtype=torch.bool)
    for i, s in enumerate(samples):
        if not s.lesion:
            known[i] = True
            continue
        for p in s.mask_paths:
            out[i] = torch.maximum(out[i], to_input(read_gray(p), size)[0])
            known[i] = True
    return out, known
