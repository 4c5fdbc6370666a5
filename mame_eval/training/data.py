"""Training datasets over the prepared imagefolder (DESIGN §4), read with PIL and json.

* :class:`HealthyDataset` — ``DATA/healthy/*.png`` + ``metadata.jsonl`` (``file_name``,
  ``prompt``): pixel values in [-1, 1] and the tokenized prompt.
* :class:`LesionDataset` — ``DATA/lesion/images``, ``masks`` and ``metadata.jsonl``: adds the
  0/1 box mask and the masked image (the image with the box blacked out, as the inpainting
  pipeline builds it at inference). With a :class:`MaskAugmentation` the tight lesion box is
  replaced by random larger masks of several shapes, lesions may be zoomed to a range of
  sizes (``lesion_side``), and healthy images with random masks and the empty prompt may be
  mixed in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, model_validator

from mame_eval.errors import DataError
from mame_eval.io import read_jsonl


def read_metadata(folder: Path, required: tuple[str, ...]) -> list[dict]:
    """Rows of ``folder/metadata.jsonl`` with their files checked; one clear error if unusable."""
    meta = folder / "metadata.jsonl"
    if not meta.is_file():
        raise DataError(f"{meta}: not found; prepare the data first (`mame-eval prepare RAW "
                        f"{folder.parent}`)")
    rows = read_jsonl(meta)
    if not rows:
        raise DataError(f"{meta}: no samples")
    for i, row in enumerate(rows, start=1):
        missing = [k for k in required if k not in row]
        if missing:
            raise DataError(f"{meta} line {i}: missing {', '.join(missing)}")
        for key in required:
            is_file = key.endswith("file") or key == "file_name"
            if is_file and not (folder / row[key]).is_file():
                raise DataError(f"{meta} line {i}: {key} {row[key]!r} not found in {folder}")
    return rows


def _load_rgb(path: Path, resolution: int) -> np.ndarray:
    with Image.open(path) as im:
        im = im.convert("RGB")
        if im.size != (resolution, resolution):
            im = im.resize((resolution, resolution), Image.BILINEAR)
        return np.asarray(im, dtype=np.float32)


def _to_tensor(rgb: np.ndarray):
    import torch

    return torch.from_numpy(rgb / 127.5 - 1.0).permute(2, 0, 1).contiguous()


class HealthyDataset:
    """Text-to-image samples: ``{"pixel_values": 3×R×R in [-1, 1], "input_ids": L}``."""

    required = ("file_name", "prompt")

    def __init__(self, data_dir: Path, tokenizer, resolution: int, subfolder: str = "healthy",
                 max_samples: int | None = None, random_flip: bool = False):
        self.folder = Path(data_dir) / subfolder
        self.rows = read_metadata(self.folder, self.required)[:max_samples]
        self.tokenizer = tokenizer
        self.resolution = resolution
        self.random_flip = random_flip

    def __len__(self) -> int:
        return len(self.rows)

    def tokenize(self, prompt: str):
        return self.tokenizer(prompt, padding="max_length", truncation=True,
                              max_length=self.tokenizer.model_max_length,
                              return_tensors="pt").input_ids[0]

    def _flip(self, index: int) -> bool:
        # A per-sample coin that depends only on the index: reproducible without a global RNG.
        return self.random_flip and bool(np.random.default_rng(index).integers(2))

    def __getitem__(self, index: int) -> dict:
        row = self.rows[index]
        rgb = _load_rgb(self.folder / row["file_name"], self.resolution)
        if self._flip(index):
            rgb = rgb[:, ::-1].copy()
        return {"pixel_values": _to_tensor(rgb), "input_ids": self.tokenize(row["prompt"])}


class MaskAugmentation(BaseModel):
    """Inpainting-mask augmentation (the ``[mask_augmentation]`` table of a training TOML).

    The prepared masks are the lesions' tight boxes, while at inference a user draws a box,
    ellipse or brush stroke of any size around where the lesion should go. Each lesion image
    therefore appears ``variants`` times per epoch, each time with a mask drawn by
    :func:`mame_eval.generation.masks.random_lesion_mask` (shape from ``shapes``, sides the
    lesion's times a factor from ``scale``, random offset, always covering the lesion).
    ``healthy_fraction`` of the items are healthy images with a random mask of lesion size
    inside the breast and the empty prompt: the unconditional branch of classifier-free
    guidance then means "continue the tissue", so guidance pushes towards a lesion.
    Masks are drawn from ``(seed, item)`` alone: every epoch and every resumed run sees the
    same ones.
    """

    model_config = ConfigDict(extra="forbid")

    variants: int = Field(default=4, ge=1, description="Masks per lesion image (per epoch).")
    shapes: list[Literal["box", "ellipse", "blob"]] = Field(
        default_factory=lambda: ["box", "ellipse", "blob"], min_length=1)
    scale: tuple[float, float] = Field(
        default=(1.0, 2.5), description="Mask side ÷ lesion side, low and high.")
    healthy_fraction: float = Field(default=0.0, ge=0.0, lt=1.0)
    lesion_side: tuple[float, float] | None = Field(
        default=None, description="Size augmentation: the lesion's longer side, in pixels at "
        "the training resolution, is drawn from [low, high]; a lesion smaller than the draw is "
        "zoomed in (a crop around it resized back to the resolution), a larger one is left as "
        "it is. The healthy items' masks take their side from the same range. None: every "
        "lesion keeps its size.")
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> MaskAugmentation:
        if not 1.0 <= self.scale[0] <= self.scale[1]:
            raise ValueError(f"scale {list(self.scale)} must satisfy 1 ≤ low ≤ high")
        if self.lesion_side is not None and not 1.0 <= self.lesion_side[0] <= \
                self.lesion_side[1]:
            raise ValueError(f"lesion_side {list(self.lesion_side)} must satisfy "
                             "1 ≤ low ≤ high (pixels)")
        return self


def zoom_to_side(rgb: np.ndarray, box: tuple[float, float, float, float],
                 rng: np.random.Generator, side: tuple[float, float]
                 ) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """Zoom a square (R, R, 3) image so the lesion ``box``'s longer side becomes a random size.

    The target side is drawn uniformly from ``side`` (pixels); when it is larger than the
    lesion, a square crop of side ``R / factor`` that contains the whole box (at a random
    place) is resized back to R×R (bilinear), so the lesion grows by ``factor`` and the tissue
    around it with it. A lesion already at least that large is returned unchanged (no zoom
    out: that would need pixels from outside the image). Returns (image, box in the result).
    """
    height, width = rgb.shape[:2]
    x0, y0, x1, y1 = box
    target = rng.uniform(*side)
    factor = target / max(x1 - x0, y1 - y0)
    if factor <= 1.0:
        return rgb, box
    crop = min(width, height) / factor
    # The crop's corner where the whole box stays inside both the crop and the image.
    cx = rng.uniform(max(0.0, x1 - crop), max(0.0, min(x0, width - crop)))
    cy = rng.uniform(max(0.0, y1 - crop), max(0.0, min(y0, height - crop)))
    with Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)) as im:
        zoomed = im.resize((width, height), Image.BILINEAR,
                           box=(cx, cy, cx + crop, cy + crop))
        out = np.asarray(zoomed, dtype=np.float32)
    new = ((x0 - cx) * factor, (y0 - cy) * factor, (x1 - cx) * factor, (y1 - cy) * factor)
    clipped = (max(0.0, new[0]), max(0.0, new[1]), min(float(width), new[2]),
               min(float(height), new[3]))
    return out, clipped


def _load_mask(path: Path, resolution: int) -> np.ndarray:
    with Image.open(path) as im:
        im = im.convert("L")
        if im.size != (resolution, resolution):
            # Nearest keeps the mask binary; a box never shrinks to nothing at R ≥ 8.
            im = im.resize((resolution, resolution), Image.NEAREST)
        return np.asarray(im) >= 128


class LesionDataset(HealthyDataset):
    """Inpainting samples: adds ``mask`` (1×R×R, 1 inside the box) and ``masked_pixel_values``.

    With ``augmentation`` (a :class:`MaskAugmentation`) item ``i`` is lesion image
    ``i // variants`` under its own random mask, followed by the healthy items.
    """

    required = ("file_name", "mask_file", "prompt")

    def __init__(self, data_dir: Path, tokenizer, resolution: int,
                 max_samples: int | None = None, random_flip: bool = False,
                 augmentation: MaskAugmentation | None = None):
        super().__init__(data_dir, tokenizer, resolution, subfolder="lesion",
                         max_samples=max_samples, random_flip=random_flip)
        self.augmentation = augmentation
        self.healthy_rows: list[dict] = []
        self.n_lesion = len(self.rows) * (augmentation.variants if augmentation else 1)
        self.n_healthy = 0
        if augmentation is not None and augmentation.healthy_fraction > 0:
            self.healthy_folder = Path(data_dir) / "healthy"
            self.healthy_rows = read_metadata(self.healthy_folder, ("file_name",))
            share = augmentation.healthy_fraction
            self.n_healthy = max(1, round(self.n_lesion * share / (1 - share)))

    def __len__(self) -> int:
        return self.n_lesion + self.n_healthy

    def source_key(self, index: int) -> tuple[str, int]:
        """Which image item ``index`` shows: items with one key share their pixels."""
        if index < self.n_lesion:
            if self.augmentation is not None and self.augmentation.lesion_side is not None:
                return "zoomed", index  # every variant has its own zoom: its own pixels
            variants = self.augmentation.variants if self.augmentation else 1
            return "lesion", index // variants
        return "healthy", (index - self.n_lesion) % len(self.healthy_rows)

    def _sample(self, rgb: np.ndarray, mask: np.ndarray, flip: bool, prompt: str) -> dict:
        import torch

        if flip:
            rgb, mask = rgb[:, ::-1].copy(), mask[:, ::-1].copy()
        pixels = _to_tensor(rgb)
        mask_t = torch.from_numpy(mask.astype(np.float32))[None]
        return {"pixel_values": pixels, "input_ids": self.tokenize(prompt),
                "mask": mask_t, "masked_pixel_values": pixels * (mask_t < 0.5)}

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(index)
        kind, k = self.source_key(index)
        if kind == "healthy":
            return self._healthy_item(index, k)
        if kind == "zoomed":
            k = index // self.augmentation.variants
        row = self.rows[k]
        rgb = _load_rgb(self.folder / row["file_name"], self.resolution)
        mask = _load_mask(self.folder / row["mask_file"], self.resolution)
        aug = self.augmentation
        if aug is not None and mask.any():
            from mame_eval.generation.masks import mask_box, random_lesion_mask

            rng = np.random.default_rng([aug.seed, index])
            lesion = mask_box(mask)
            if aug.lesion_side is not None:
                rgb, lesion = zoom_to_side(rgb, lesion, rng, tuple(aug.lesion_side))
            mask, _ = random_lesion_mask(lesion, *mask.shape, rng,
                                         tuple(aug.shapes), tuple(aug.scale))
        return self._sample(rgb, mask, self._flip(k), row["prompt"])

    def _healthy_item(self, index: int, k: int) -> dict:
        """A healthy image, a random lesion-sized mask inside its breast, the empty prompt."""
        from mame_eval.generation.masks import random_lesion_mask
        from mame_eval.generation.synthesize import random_box_in_breast

        aug = self.augmentation
        rng = np.random.default_rng([aug.seed, index])
        row = self.healthy_rows[k]
        rgb = _load_rgb(self.healthy_folder / row["file_name"], self.resolution)
        if aug.lesion_side is not None:  # the sizes the lesions are zoomed to
            side = float(rng.uniform(*aug.lesion_side))
        else:  # the size of a random real lesion, placed where a lesion could be
            lesion = self.rows[int(rng.integers(len(self.rows)))]
            side = max(1, int(_load_mask(self.folder / lesion["mask_file"],
                                         self.resolution).any(0).sum()))
        fraction = side / self.resolution
        box, _ = random_box_in_breast(rgb.astype(np.uint8), rng, (fraction, fraction))
        mask, _ = random_lesion_mask(box, self.resolution, self.resolution, rng,
                                     tuple(aug.shapes), tuple(aug.scale))
        return self._sample(rgb, mask, self._flip(k), "")


def collate(examples: list[dict]) -> dict:
    import torch

    return {key: torch.stack([ex[key] for ex in examples]) for key in examples[0]}
