"""Lesion inpainting into a generation run (``mame-eval inpaint``), paper §2.4.

The inpainting UNet sees ``[noisy latents, mask, masked-image latents]`` and repaints the mask.
Its output is a full image decoded by the VAE, so even pixels outside the mask went through an
encode/decode round trip. By default we therefore *composite*: outside the mask the original
pixels are kept bit for bit, inside it the generated ones, with a narrow linear ramp over
``feather`` pixels outside the mask. ``composite=False`` returns the raw pipeline output.

A plain composite leaves a *step* at the mask's edge wherever the generated tissue is a little
brighter or darker than the original around it — a square seam that a reader sees at once
(issue 17). The default ``blend="poisson"`` removes it: before compositing, the generated
pixels get a smooth correction field ``c`` that is harmonic inside the repainted region
(``Δc = 0``) and equals ``original − generated`` on its outer boundary, i.e. Poisson image
editing with the generated image's own gradients as the guidance field (Pérez, Gangnet & Blake,
*SIGGRAPH* 2003). The lesion's contrast and texture (its gradients) are kept; only a
low-frequency offset changes, so the result is continuous with the surrounding tissue.
The repainted region is matched not on the mask's own outline but on a ring ``margin`` px
outside it (:func:`poisson_margin`, ~2.5 % of the image side: 3 px at 128, 13 px at 512): an
inpainting model trained on tight lesion boxes draws a mass that fills its mask, and the VAE
decoder (latent cells of 4-8 px) spreads it a little past the outline, so matching just outside
the outline subtracts the mass's own brightness and flattens it to the level of the tissue
around it (MAM-E-tiny-inpaint: MammoNet-tiny's lesion score rose in 80 % of benchmark boxes
with the outline matched, 91 % with the ring; ``benchmarks/inpaint_lesion_score.py``).
Outside the mask the pipeline reproduces the original tissue, so the ring is where the two
agree and the seam, if any, is left in tissue. ``blend="feather"`` is the plain composite.
:func:`mame_eval.generation.seam.edge_step` measures the result on the outline of the changed
pixels (:func:`changed_region`).
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
from mame_eval.generation.masks import Box
from mame_eval.io import save_png
from mame_eval.prompts import INPAINT_PROMPT

#: How the generated pixels are put into the original (see the module docstring).
BLENDS = ("poisson", "feather")


def parse_box(text: str) -> Box:
    """``"x0,y0,x1,y1"`` (pixels) → a box tuple."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4:
        raise InputError(f"--box {text!r}: expected x0,y0,x1,y1 in pixels, e.g. 200,180,260,240")
    return values  # type: ignore[return-value]


def default_feather(height: int, width: int) -> int:
    """A ramp of ~1 % of the shorter side (5 px at 512), at least 1 px."""
    return max(1, round(min(height, width) / 100))


def poisson_margin(height: int, width: int) -> int:
    """Width of the tissue ring of the Poisson blend: ~2.5 % of the shorter side, ≥ 2 px."""
    return max(2, round(min(height, width) * 0.025))


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


def harmonic_fill(boundary: np.ndarray, region: np.ndarray) -> np.ndarray:
    """The harmonic interpolant of ``boundary`` into ``region`` (float (H, W) or (H, W, C)).

    Returns ``c`` with ``c = boundary`` outside ``region`` and, inside it, the solution of the
    discrete Laplace equation (4-neighbour stencil, ``Δc = 0``) whose values on the pixels
    just outside ``region`` are ``boundary``'s. At the image border the missing neighbours
    are left out (zero normal derivative). A connected part of ``region`` with no neighbour
    outside it (the whole image) has no boundary to match: it gets the mean of ``boundary``
    over the image (0 for a zero field). One sparse LU factorisation serves every channel.
    """
    from scipy import ndimage, sparse
    from scipy.sparse.linalg import splu

    region = np.asarray(region, dtype=bool)
    field = np.asarray(boundary, dtype=np.float64)
    squeeze = field.ndim == 2
    if squeeze:
        field = field[..., None]
    out = field.copy()
    if not region.any():
        return out[..., 0] if squeeze else out
    h, w = region.shape
    labels, count = ndimage.label(region)
    touches = np.zeros(count + 1, dtype=bool)
    outside = ~region
    for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        shifted = np.zeros_like(outside)
        shifted[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
            outside[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
        touches[np.unique(labels[region & shifted])] = True
    closed = region & ~touches[labels]
    if closed.any():  # no boundary at all: nothing to match
        out[closed] = field.reshape(-1, field.shape[-1]).mean(0)
        region = region & ~closed
        if not region.any():
            return out[..., 0] if squeeze else out
    index = -np.ones((h, w), dtype=np.int64)
    ys, xs = np.nonzero(region)
    n = len(ys)
    index[ys, xs] = np.arange(n)
    diag = np.zeros(n)
    rhs = np.zeros((n, field.shape[-1]))
    rows, cols = [], []
    for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        ny, nx = ys + dy, xs + dx
        inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        diag += inside
        p, qy, qx = np.nonzero(inside)[0], ny[inside], nx[inside]
        q = index[qy, qx]
        known = q < 0
        np.add.at(rhs, p[known], field[qy[known], qx[known]])
        rows.append(p[~known])
        cols.append(q[~known])
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    matrix = sparse.csc_matrix(
        (np.concatenate([diag, -np.ones(len(rows))]),
         (np.concatenate([np.arange(n), rows]), np.concatenate([np.arange(n), cols]))),
        shape=(n, n))
    out[ys, xs] = splu(matrix).solve(rhs)
    return out[..., 0] if squeeze else out


def poisson_match(original: np.ndarray, generated: np.ndarray,
                  region: np.ndarray) -> np.ndarray:
    """``generated`` plus the harmonic correction that makes it meet ``original`` at the edge
    of ``region`` (float array of ``generated``'s shape; outside ``region``: ``original``)."""
    diff = original.astype(np.float64) - generated.astype(np.float64)
    return generated.astype(np.float64) + harmonic_fill(diff, region)


def blend(original: np.ndarray, generated: np.ndarray, mask: np.ndarray, feather: float,
          method: str = "poisson", margin: float | None = None) -> np.ndarray:
    """Put the generated pixels of ``mask`` into ``original`` (uint8, same shape).

    ``feather``: the generated pixels of the mask, then a linear ramp to the original over
    ``feather`` px. ``poisson``: the generated pixels of the mask *and* of a ring ``margin`` px
    wide around it (default :func:`poisson_margin`), Poisson-matched to the original just
    outside that ring, then a ramp over ring + ``feather``. Pixels farther than that from the
    mask are ``original``'s, bit for bit; :func:`changed_region` is the set of the others.
    """
    if method not in BLENDS:
        raise InputError(f"blend {method!r}: expected one of {', '.join(BLENDS)}")
    alpha = feather_alpha(mask, _ramp(mask, feather, method, margin))
    if method == "poisson":
        matched = poisson_match(original, generated, alpha > 0)
        generated = np.clip(np.round(matched), 0, 255).astype(np.uint8)
    return composite(original, generated, alpha)


def _ramp(mask: np.ndarray, feather: float, method: str, margin: float | None) -> float:
    if method != "poisson":
        return feather
    if margin is None:
        margin = poisson_margin(*np.shape(mask)[:2])
    if margin < 0:
        raise InputError(f"blend margin {margin}: expected ≥ 0 pixels")
    return float(margin) + feather


def blend_fields(height: int, width: int, composite_output: bool, feather: float,
                 method: str) -> dict:
    """The manifest fields of how a run blended its lesions (None where it did not)."""
    return {"composite": composite_output, "feather": feather if composite_output else None,
            "blend": method if composite_output else None,
            "blend_margin": (poisson_margin(height, width)
                             if composite_output and method == "poisson" else None)}


def changed_region(mask: np.ndarray, feather: float, method: str = "poisson",
                   margin: float | None = None) -> np.ndarray:
    """The pixels :func:`blend` may change (boolean (H, W)): its seam is this set's outline."""
    return feather_alpha(mask, _ramp(mask, feather, method, margin)) > 0


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
                   composite_output: bool = True, feather: float | None = None,
                   blend_method: str = "poisson") -> list[np.ndarray]:
    """Inpaint a batch of uint8 RGB images inside boolean masks; one seed per image.

    With ``composite_output`` the result is :func:`blend` ed into the original
    (``blend_method``: ``poisson`` or ``feather``); else the raw pipeline output.
    """
    h, w = images[0].shape[:2]
    check_size(h, w)
    if blend_method not in BLENDS:
        raise InputError(f"blend {blend_method!r}: expected one of {', '.join(BLENDS)}")
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
        outs = [blend(im, out, m, ramp, blend_method)
                for im, out, m in zip(images, outs, masks, strict=True)]
    return outs


def inpaint(model: str | os.PathLike | None, image: Path, out: Path, *, mask: Path | None = None,
            box: Box | None = None, mask_shape: str = "box", prompt: str = INPAINT_PROMPT,
            n: int = 1, guidance_scale: float = 4.0, steps: int = 24, seed: int = 0,
            negative_prompt: str = "", strength: float = 1.0, composite_output: bool = True,
            feather: float | None = None, blend_method: str = "poisson", batch_size: int = 4,
            scheduler: str = "dpm++", device: str | None = None, dtype=None, pipe=None,
            progress: Callable[[int, int], None] | None = None,
            mask_array: np.ndarray | None = None) -> GenerationRun:
    """Inpaint ``n`` lesions (seeds ``seed + i``) into ``image`` inside a mask.

    The mask: a mask image (``mask``), a boolean (H, W) array (``mask_array``, e.g. drawn in
    the playground), or a ``box`` drawn as ``mask_shape`` (``box``, ``ellipse`` or ``blob``,
    see :mod:`mame_eval.generation.masks`). Writes ``out/00000.png …``, ``out/mask.png``
    (the mask used) and ``out/manifest.jsonl``.
    """
    from mame_eval.generation.masks import check_shape, shape_mask

    if sum(x is not None for x in (mask, box, mask_array)) != 1:
        raise InputError("give exactly one of --mask PATH or --box x0,y0,x1,y1")
    if not 0 < strength <= 1:
        raise InputError(f"--strength {strength}: expected 0 < strength ≤ 1")
    if steps < 1:
        raise InputError(f"--steps {steps}: expected at least 1")
    if blend_method not in BLENDS:
        raise InputError(f"--blend {blend_method!r}: expected one of {', '.join(BLENDS)}")
    check_shape(mask_shape)
    source = load_image(image)
    h, w = source.shape[:2]
    check_size(h, w)
    if mask is not None:
        region = load_mask(mask, h, w)
    elif mask_array is not None:
        region = check_mask_array(mask_array, h, w)
    else:
        region = shape_mask(mask_shape, box, h, w, rng=seed)
    ramp = default_feather(h, w) if feather is None else float(feather)
    pipe = _load(pipe, model, "inpaint", device, dtype, scheduler)
    out = Path(out)
    fixed = {"task": "inpaint", **source_fields(pipe), "prompt": prompt,
             "negative_prompt": negative_prompt, "guidance_scale": float(guidance_scale),
             "steps": int(steps), "strength": float(strength), "seed_base": int(seed),
             "height": h, "width": w, "image": str(image),
             "image_sha256": hashlib.sha256(Path(image).read_bytes()).hexdigest(),
             "box": list(box) if box is not None else None,
             "mask_shape": mask_shape if box is not None else None,
             "mask_sha256": hashlib.sha256(np.packbits(region).tobytes()).hexdigest(),
             **blend_fields(h, w, composite_output, ramp, blend_method),
             "mame_eval": __version__}

    def render(indices: list[int]) -> list[dict]:
        if not (out / "mask.png").is_file():
            save_png(out / "mask.png", region.astype(np.uint8) * 255)
        t0 = time.perf_counter()
        seeds = [seed + i for i in indices]
        images = inpaint_arrays(pipe, [source] * len(indices), [region] * len(indices), seeds,
                                prompt, negative_prompt, guidance_scale, steps, strength,
                                composite_output, ramp, blend_method)
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


def check_mask_array(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """A boolean (H, W) mask that matches the image and marks at least one pixel."""
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.shape != (height, width):
        raise InputError(f"the mask is {'×'.join(map(str, mask.shape[::-1]))}, the image "
                         f"{width}×{height}; they must match")
    mask = mask.astype(bool)
    if not mask.any():
        raise InputError("the mask is empty; mark where the lesion goes")
    return mask
