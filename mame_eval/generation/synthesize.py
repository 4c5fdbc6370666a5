"""A fully synthetic mammogram with a lesion (paper Fig. 8; ``mame-eval synthesize``).

Per image ``i`` (seed ``S + i`` throughout): generate a healthy mammogram → choose the lesion
box (the one given, or a random box that lies wholly inside the breast, found with the same
breast mask as ``prepare``) → draw the mask in that box as ``mask_shape`` (``box``, ``ellipse``
or a lesion-shaped ``blob``), or take a drawn ``mask`` as it is → inpaint a lesion there and
blend it in (:func:`~mame_eval.generation.inpaint.blend`) → mirror everything for a right
breast. Saved: ``healthy/i.png``, ``images/i.png`` (with the lesion), ``masks/i.png`` (0/255)
and one manifest line with the box (the mask's tight box for a drawn mask).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mame_eval import __version__
from mame_eval.data.preprocess import breast_mask
from mame_eval.errors import InputError
from mame_eval.generation.generate import (
    _load,
    _now,
    check_laterality,
    check_size,
    default_size,
    generators,
    source_fields,
    to_uint8,
)
from mame_eval.generation.inpaint import (
    BLENDS,
    blend_fields,
    check_mask_array,
    default_feather,
    inpaint_arrays,
)
from mame_eval.generation.manifest import GenerationRun, run_indexed
from mame_eval.generation.masks import Box, box_to_mask, check_shape, mask_box, shape_mask
from mame_eval.io import save_png
from mame_eval.prompts import INPAINT_PROMPT

#: Default lesion box side as a fraction of the image side (masses in the prepared 512-px
#: images are mostly 20–80 px across).
BOX_FRACTION = (0.06, 0.15)


def random_box_in_breast(image: np.ndarray, rng: np.random.Generator,
                         fraction: tuple[float, float] = BOX_FRACTION) -> tuple[Box, str]:
    """A random box wholly inside the breast of ``image`` → (box, how it was found).

    The side is drawn from ``fraction`` × image side; the centre uniformly among the pixels
    where such a box fits inside the breast mask. When the breast is too small for any box
    (e.g. an untrained model's output), the box is placed anywhere in the image and the
    returned source says so.
    """
    from scipy import ndimage

    h, w = image.shape[:2]
    lo, hi = fraction
    # Odd sides so that the filter below is centred on the box centre.
    bw = max(1, int(round(rng.uniform(lo, hi) * w)) | 1)
    bh = max(1, int(round(rng.uniform(lo, hi) * h)) | 1)
    breast = breast_mask(image)
    fits = ndimage.minimum_filter(breast.astype(np.uint8), size=(bh, bw), mode="constant") > 0
    source = "breast"
    ys, xs = np.nonzero(fits)
    if len(ys) == 0:
        source = "image (no breast region large enough)"
        ys, xs = np.mgrid[bh // 2:h - bh // 2, bw // 2:w - bw // 2]
        ys, xs = ys.ravel(), xs.ravel()
    k = int(rng.integers(len(ys)))
    cy, cx = int(ys[k]), int(xs[k])
    box = (cx - bw // 2, cy - bh // 2, cx + bw // 2 + 1, cy + bh // 2 + 1)
    return tuple(float(v) for v in box), source  # type: ignore[return-value]


def mirror_box(box: Box, width: int) -> Box:
    x0, y0, x1, y1 = box
    return (width - x1, y0, width - x0, y1)


def synthesize(model: str | os.PathLike | None, inpaint_model: str | os.PathLike | None,
               prompt: str, out: Path, *, n: int = 1, box: Box | None = None,
               box_fraction: tuple[float, float] = BOX_FRACTION, guidance_scale: float = 4.0,
               inpaint_guidance_scale: float | None = None, steps: int = 24, seed: int = 0,
               negative_prompt: str = "", laterality: str = "L", composite_output: bool = True,
               feather: float | None = None, mask_shape: str = "box",
               blend_method: str = "poisson", mask: np.ndarray | None = None,
               batch_size: int = 4, scheduler: str = "dpm++",
               device: str | None = None, dtype=None, pipe=None, inpaint_pipe=None,
               progress: Callable[[int, int], None] | None = None) -> GenerationRun:
    """Healthy image from ``model`` + a lesion from ``inpaint_model``, ``n`` times.

    ``box`` (or a boolean (H, W) ``mask``, e.g. drawn by hand) is in the pixels of the saved
    image (so for ``laterality="R"`` in the mirrored image); with neither, a random box inside
    the breast is drawn per image (seeded ``S + i``). ``mask_shape`` is the shape drawn in a
    box; ``blend_method`` how the lesion is blended in (``poisson`` or ``feather``).
    """
    laterality = check_laterality(laterality)
    if steps < 1:
        raise InputError(f"--steps {steps}: expected at least 1")
    if not 0 < box_fraction[0] <= box_fraction[1] < 1:
        raise InputError(f"box fraction {box_fraction}: expected 0 < low ≤ high < 1")
    if box is not None and mask is not None:
        raise InputError("give a lesion box or a mask, not both")
    check_shape(mask_shape)
    if blend_method not in BLENDS:
        raise InputError(f"--blend {blend_method!r}: expected one of {', '.join(BLENDS)}")
    pipe = _load(pipe, model, "txt2img", device, dtype, scheduler)
    inpaint_pipe = _load(inpaint_pipe, inpaint_model, "inpaint", device, dtype, scheduler)
    h, w = default_size(pipe)
    check_size(h, w)
    if box is not None:
        box_to_mask(box, h, w)  # validate against the image size now, not per image
    if mask is not None:
        mask = check_mask_array(mask, h, w)
        # The model draws left breasts; a mask given for a right one is mirrored back.
        drawn = np.ascontiguousarray(mask[:, ::-1]) if laterality == "R" else mask
    ramp = default_feather(h, w) if feather is None else float(feather)
    lesion_guidance = guidance_scale if inpaint_guidance_scale is None else inpaint_guidance_scale
    inp = source_fields(inpaint_pipe)
    out = Path(out)
    fixed = {"task": "synthesize", **source_fields(pipe), "inpaint_model": inp["model"],
             "inpaint_revision": inp["revision"], "prompt": prompt,
             "inpaint_prompt": INPAINT_PROMPT, "negative_prompt": negative_prompt,
             "guidance_scale": float(guidance_scale),
             "inpaint_guidance_scale": float(lesion_guidance), "steps": int(steps),
             "seed_base": int(seed), "height": h, "width": w, "laterality": laterality,
             "box_fraction": list(box_fraction),
             **blend_fields(h, w, composite_output, ramp, blend_method),
             "mask_shape": "drawn" if mask is not None else mask_shape,
             "mask_sha256": (hashlib.sha256(np.packbits(mask).tobytes()).hexdigest()
                             if mask is not None else None),
             "mame_eval": __version__}

    def render(indices: list[int]) -> list[dict]:
        t0 = time.perf_counter()
        seeds = [seed + i for i in indices]
        healthy = to_uint8(pipe(
            prompt=[prompt] * len(indices),
            negative_prompt=[negative_prompt] * len(indices) if negative_prompt else None,
            generator=generators(seeds), num_inference_steps=steps,
            guidance_scale=guidance_scale, height=h, width=w, output_type="np").images)
        boxes, sources, masks = [], [], []
        for i, image in zip(indices, healthy, strict=True):
            if mask is not None:
                boxes.append(mask_box(drawn))
                sources.append("drawn")
                masks.append(drawn)
                continue
            if box is not None:
                # The model draws left breasts; a box given for a right one is mirrored back.
                boxes.append(mirror_box(box, w) if laterality == "R" else tuple(box))
                sources.append("given")
            else:
                found, how = random_box_in_breast(
                    image, np.random.default_rng([seed, i]), box_fraction)
                boxes.append(found)
                sources.append(how)
            masks.append(shape_mask(mask_shape, boxes[-1], h, w, rng=[seed, i]))
        lesions = inpaint_arrays(inpaint_pipe, healthy, masks, seeds, INPAINT_PROMPT,
                                 negative_prompt, lesion_guidance, steps, 1.0, composite_output,
                                 ramp, blend_method)
        per_image = (time.perf_counter() - t0) / len(indices)
        rows = []
        for i, s, clean, lesion, region, b, how in zip(indices, seeds, healthy, lesions, masks,
                                                       boxes, sources, strict=True):
            if laterality == "R":
                clean, lesion, region = (np.ascontiguousarray(a[:, ::-1])
                                         for a in (clean, lesion, region))
                b = mirror_box(b, w)
            name = f"{i:05d}.png"
            save_png(out / "healthy" / name, clean)
            save_png(out / "masks" / name, region.astype(np.uint8) * 255)
            save_png(out / "images" / name, lesion)
            rows.append({"index": i, "file": f"images/{name}", "healthy_file": f"healthy/{name}",
                         "mask_file": f"masks/{name}", "seed": s, "box": list(b),
                         "box_source": how, "time_s": round(per_image, 4), "created": _now(),
                         "device": str(pipe.device)})
        return rows

    return run_indexed(out, n, batch_size, fixed, render, progress)
