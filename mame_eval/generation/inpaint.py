"""Lesion inpainting into a generation run (``mame-eval inpaint``), paper §2.4.

The inpainting UNet sees ``[noisy latents, mask, masked-image latents]`` and repaints the box.
Its output is a full image decoded by the VAE, so even pixels outside the box went through an
encode/decode round trip. By default we therefore *composite*: outside the mask the original
pixels are kept bit for bit, inside it the generated ones, with a narrow linear ramp
(over ``feather`` pixels outside the mask) so the seam does not show. ``composite=False``
returns the raw pipeline output.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from mame_eval import __version__
from mame_eval.errors import InputError
from mame_eval.generation.generate import (
    _load,
    _now,
    check_size,
    generators,
    source_fields,
    to_uint8,
)
from mame_eval.generation.manifest import GenerationRun, run_indexed
from mame_eval.io import save_png
from mame_eval.prompts import INPAINT_PROMPT

Box = tuple[float, float, float, float]


def parse_box(text: str) -> Box:
    """``"x0,y0,x1,y1"`` (pixels) → a box tuple."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4:
        raise InputError(f"--box {text!r}: expected x0,y0,x1,y1 in pixels, e.g. 200,180,260,240")
    return values  # type: ignore[return-value]


def box_to_mask(box: Box, height: int, width: int) -> np.ndarray:
    """Boolean (H, W) mask of the pixels whose centre lies inside ``box`` (as ``prepare``)."""
    x0, y0, x1, y1 = box
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise InputError(f"box {list(box)}: expected 0 ≤ x0 < x1 ≤ {width} and "
                         f"0 ≤ y0 < y1 ≤ {height} (pixels of the {width}×{height} image)")
    cols = (np.arange(width) + 0.5 >= x0) & (np.arange(width) + 0.5 <= x1)
    rows = (np.arange(height) + 0.5 >= y0) & (np.arange(height) + 0.5 <= y1)
    mask = np.outer(rows, cols)
    if not mask.any():
        raise InputError(f"box {list(box)} covers no pixel centre; make it at least 1 px wide")
    return mask


def default_feather(height: int, width: int) -> int:
    """A ramp of ~1 % of the shorter side (5 px at 512), at least 1 px."""
    return max(1, round(min(height, width) / 100))


def feather_alpha(mask: np.ndarray, feather: float) -> np.ndarray:
    """Blend weight of the generated image: 1 on the mask, falling linearly with the distance
    ``d`` from it as ``1 - d / feather``; exactly 0 at ``d ≥ feather`` (original pixels)."""
    from scipy import ndimage

    mask = np.asarray(mask, dtype=bool)
    if feather <= 0:
        return mask.astype(np.float32)
    distance = ndimage.distance_transform_edt(~mask)
    return np.clip(1.0 - distance / feather, 0.0, 1.0).astype(np.float32)


def composite(original: np.ndarray, generated: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``alpha·generated + (1-alpha)·original``; pixels with alpha 0 are copied unchanged."""
    out = original.copy()
    sel = alpha > 0
    a = alpha[sel][:, None] if original.ndim == 3 else alpha[sel]
    blend = a * generated[sel].astype(np.float32) + (1 - a) * original[sel].astype(np.float32)
    out[sel] = np.clip(np.round(blend), 0, 255).astype(np.uint8)
    return out


def load_image(path: Path) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: image not found")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except OSError as exc:
        raise InputError(f"{path}: not a readable image ({exc})") from None


def load_mask(path: Path, height: int, width: int) -> np.ndarray:
    """A mask image (white = repaint) as a boolean (H, W) array matching the image."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: mask not found")
    try:
        with Image.open(path) as im:
            mask = np.asarray(im.convert("L")) >= 128
    except OSError as exc:
        raise InputError(f"{path}: not a readable mask image ({exc})") from None
    if mask.shape != (height, width):
        raise InputError(f"{path}: mask is {mask.shape[1]}×{mask.shape[0]}, the image "
                         f"{width}×{height}; they must match")
    if not mask.any():
        raise InputError(f"{path}: mask is empty (no pixel ≥ 128); white marks the lesion area")
    return mask


def inpaint_arrays(pipe, images: list[np.ndarray], masks: list[np.ndarray], seeds: list[int],
                   prompt: str = INPAINT_PROMPT, negative_prompt: str = "",
                   guidance_scale: float = 4.0, steps: int = 24, strength: float = 1.0,
                   composite_output: bool = True, feather: float | None = None
                   ) -> list[np.ndarray]:
    """Inpaint a batch of uint8 RGB images inside boolean masks; one seed per image."""
    h, w = images[0].shape[:2]
    check_size(h, w)
    count = len(images)
    result = pipe(prompt=[prompt] * count,
                  image=[Image.fromarray(im) for im in images],
                  mask_image=[Image.fromarray(m.astype(np.uint8) * 255) for m in masks],
                  negative_prompt=[negative_prompt] * count if negative_prompt else None,
                  generator=generators(seeds), num_inference_steps=steps,
                  guidance_scale=guidance_scale, strength=strength, height=h, width=w,
                  output_type="np")
    outs = to_uint8(result.images)
    if composite_output:
        ramp = default_feather(h, w) if feather is None else feather
        outs = [composite(im, out, feather_alpha(m, ramp))
                for im, out, m in zip(images, outs, masks, strict=True)]
    return outs


def inpaint(model: str | os.PathLike | None, image: Path, out: Path, *, mask: Path | None = None,
            box: Box | None = None, prompt: str = INPAINT_PROMPT, n: int = 1,
            guidance_scale: float = 4.0, steps: int = 24, seed: int = 0,
            negative_prompt: str = "", strength: float = 1.0, composite_output: bool = True,
            feather: float | None = None, batch_size: int = 4, scheduler: str = "dpm++",
            device: str | None = None, dtype=None, pipe=None,
            progress: Callable[[int, int], None] | None = None) -> GenerationRun:
    """Inpaint ``n`` lesions (seeds ``seed + i``) into ``image`` inside ``mask`` or ``box``.

    Writes ``out/00000.png …``, ``out/mask.png`` (the mask used) and ``out/manifest.jsonl``.
    """
    if (mask is None) == (box is None):
        raise InputError("give exactly one of --mask PATH or --box x0,y0,x1,y1")
    if not 0 < strength <= 1:
        raise InputError(f"--strength {strength}: expected 0 < strength ≤ 1")
    if steps < 1:
        raise InputError(f"--steps {steps}: expected at least 1")
    source = load_image(image)
    h, w = source.shape[:2]
    check_size(h, w)
    region = load_mask(mask, h, w) if mask is not None else box_to_mask(box, h, w)
    ramp = default_feather(h, w) if feather is None else float(feather)
    pipe = _load(pipe, model, "inpaint", device, dtype, scheduler)
    out = Path(out)
    fixed = {"task": "inpaint", **source_fields(pipe), "prompt": prompt,
             "negative_prompt": negative_prompt, "guidance_scale": float(guidance_scale),
             "steps": int(steps), "strength": float(strength), "seed_base": int(seed),
             "height": h, "width": w, "image": str(image),
             "image_sha256": hashlib.sha256(Path(image).read_bytes()).hexdigest(),
             "box": list(box) if box is not None else None,
             "mask_sha256": hashlib.sha256(np.packbits(region).tobytes()).hexdigest(),
             "composite": composite_output, "feather": ramp if composite_output else None,
             "mame_eval": __version__}

    def render(indices: list[int]) -> list[dict]:
        if not (out / "mask.png").is_file():
            save_png(out / "mask.png", region.astype(np.uint8) * 255)
        t0 = time.perf_counter()
        seeds = [seed + i for i in indices]
        images = inpaint_arrays(pipe, [source] * len(indices), [region] * len(indices), seeds,
                                prompt, negative_prompt, guidance_scale, steps, strength,
                                composite_output, ramp)
        per_image = (time.perf_counter() - t0) / len(indices)
        rows = []
        for i, s, result in zip(indices, seeds, images, strict=True):
            name = f"{i:05d}.png"
            save_png(out / name, result)
            rows.append({"index": i, "file": name, "mask_file": "mask.png", "seed": s,
                         "time_s": round(per_image, 4), "created": _now(),
                         "device": str(pipe.device)})
        return rows

    return run_indexed(out, n, batch_size, fixed, render, progress)
