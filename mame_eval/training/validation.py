"""Validation grids during training (the paper's Figs 12-15): the same prompts rendered from the
same fixed noise at every validation step, so a grid per step shows how training progresses.

Text-to-image: one row per validation prompt, ``num_validation_images`` columns (image j uses
seed ``seed + j`` in every row and at every step). Inpainting: one row per validation sample of
the lesion set: the masked input, then the inpainted images.
"""

from __future__ import annotations

import numpy as np

from mame_eval.prompts import INPAINT_PROMPT


def grid(rows: list[list[np.ndarray]], gap: int = 2) -> np.ndarray:
    """Tile equally sized uint8 RGB images (rows of columns) on a black background."""
    h, w = rows[0][0].shape[:2]
    ncols = max(len(r) for r in rows)
    out = np.zeros((len(rows) * (h + gap) - gap, ncols * (w + gap) - gap, 3), dtype=np.uint8)
    for i, row in enumerate(rows):
        for j, image in enumerate(row):
            out[i * (h + gap):i * (h + gap) + h, j * (w + gap):j * (w + gap) + w] = image
    return out


def _to_uint8(images: np.ndarray) -> list[np.ndarray]:
    return [np.round(np.clip(im, 0, 1) * 255).astype(np.uint8) for im in images]


def render_txt2img(pipe, prompts: list[str], n: int, seed: int, steps: int, guidance: float,
                   negative_prompt: str, resolution: int) -> np.ndarray:
    import torch

    rows = []
    for prompt in prompts:
        generators = [torch.Generator("cpu").manual_seed(seed + j) for j in range(n)]
        out = pipe(prompt, negative_prompt=negative_prompt or None, num_images_per_prompt=n,
                   generator=generators, num_inference_steps=steps, guidance_scale=guidance,
                   height=resolution, width=resolution, output_type="np")
        rows.append(_to_uint8(out.images))
    return grid(rows)


def render_inpaint(pipe, samples: list[dict], n: int, seed: int, steps: int, guidance: float,
                   negative_prompt: str, prompts: list[str] | None = None) -> np.ndarray:
    """``samples``: items of :class:`~mame_eval.training.data.LesionDataset`."""
    import torch

    rows = []
    for k, sample in enumerate(samples):
        image = (sample["pixel_values"][None] + 1) / 2
        mask = sample["mask"][None]
        masked = ((sample["masked_pixel_values"] + 1) / 2).permute(1, 2, 0).numpy()
        prompt = prompts[k % len(prompts)] if prompts else INPAINT_PROMPT
        generators = [torch.Generator("cpu").manual_seed(seed + j) for j in range(n)]
        out = pipe(prompt, image=image, mask_image=mask, negative_prompt=negative_prompt or None,
                   num_images_per_prompt=n, generator=generators, num_inference_steps=steps,
                   guidance_scale=guidance, height=image.shape[-2], width=image.shape[-1],
                   output_type="np")
        rows.append(_to_uint8(np.concatenate([masked[None], out.images])))
    return grid(rows)
