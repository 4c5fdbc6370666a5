"""Training datasets over the prepared imagefolder (DESIGN §4), read with PIL and json.

* :class:`HealthyDataset` — ``DATA/healthy/*.png`` + ``metadata.jsonl`` (``file_name``,
  ``prompt``): pixel values in [-1, 1] and the tokenized prompt.
* :class:`LesionDataset` — ``DATA/lesion/images``, ``masks`` and ``metadata.jsonl``: adds the
  0/1 box mask and the masked image (the image with the box blacked out, as the inpainting
  pipeline builds it at inference).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

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


class LesionDataset(HealthyDataset):
    """Inpainting samples: adds ``mask`` (1×R×R, 1 inside the box) and ``masked_pixel_values``."""

    required = ("file_name", "mask_file", "prompt")

    def __init__(self, data_dir: Path, tokenizer, resolution: int,
                 max_samples: int | None = None, random_flip: bool = False):
        super().__init__(data_dir, tokenizer, resolution, subfolder="lesion",
                         max_samples=max_samples, random_flip=random_flip)

    def __getitem__(self, index: int) -> dict:
        import torch

        row = self.rows[index]
        rgb = _load_rgb(self.folder / row["file_name"], self.resolution)
        with Image.open(self.folder / row["mask_file"]) as im:
            im = im.convert("L")
            if im.size != (self.resolution, self.resolution):
                # Nearest keeps the mask binary; a box never shrinks to nothing at R ≥ 8.
                im = im.resize((self.resolution, self.resolution), Image.NEAREST)
            mask = (np.asarray(im) >= 128).astype(np.float32)
        if self._flip(index):
            rgb, mask = rgb[:, ::-1].copy(), mask[:, ::-1].copy()
        pixels = _to_tensor(rgb)
        mask_t = torch.from_numpy(mask)[None]
        return {"pixel_values": pixels, "input_ids": self.tokenize(row["prompt"]),
                "mask": mask_t, "masked_pixel_values": pixels * (mask_t < 0.5)}


def collate(examples: list[dict]) -> dict:
    import torch

    return {key: torch.stack([ex[key] for ex in examples]) for key in examples[0]}
