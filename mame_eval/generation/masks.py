"""Lesion masks: boxes, ellipses and lesion-shaped blobs, and their random augmentation.

A mass is round, oval or lobulated, not square; a square mask leaves a square of repainted
tissue that a reader spots at once. These functions draw the lesion region in three shapes,
each as a boolean ``(H, W)`` array of the pixels whose *centre* lies inside the shape (the
convention of :func:`box_to_mask` and ``prepare``):

* ``box`` — the axis-aligned box ``(x0, y0, x1, y1)`` in pixels;
* ``ellipse`` — the ellipse inscribed in that box;
* ``blob`` — an irregular, lobulated outline inscribed in the box: the polar radius
  ``r(θ) = 1 + Σ_k a_k cos(kθ + φ_k)`` (k = 2…5, random amplitudes and phases), rescaled so
  the outline touches the box; what a brush stroke around a mass looks like.

:func:`random_lesion_mask` is the training-time augmentation (issue 17): around a lesion's
box it draws a larger region of random size, aspect and offset, in a random shape, that still
covers the lesion (the ellipse inscribed in its box), so that the inpainting model learns to put
a lesion of its own size into a mask of any size and shape.
"""

from __future__ import annotations

import numpy as np

from mame_eval.errors import InputError

Box = tuple[float, float, float, float]

#: The mask shapes every command and the playground accept.
MASK_SHAPES = ("box", "ellipse", "blob")


def box_to_mask(box: Box, height: int, width: int) -> np.ndarray:
    """Boolean (H, W) mask of the pixels whose centre lies inside ``box`` (as ``prepare``)."""
    x0, y0, x1, y1 = check_box(box, height, width)
    cols = (np.arange(width) + 0.5 >= x0) & (np.arange(width) + 0.5 <= x1)
    rows = (np.arange(height) + 0.5 >= y0) & (np.arange(height) + 0.5 <= y1)
    mask = np.outer(rows, cols)
    if not mask.any():
        raise InputError(f"box {list(box)} covers no pixel centre; make it at least 1 px wide")
    return mask


def check_box(box: Box, height: int, width: int) -> Box:
    """``box`` as floats when ``0 ≤ x0 < x1 ≤ width`` and ``0 ≤ y0 < y1 ≤ height``."""
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise InputError(f"box {[x0, y0, x1, y1]}: expected 0 ≤ x0 < x1 ≤ {width} and "
                         f"0 ≤ y0 < y1 ≤ {height} (pixels of the {width}×{height} image)")
    return x0, y0, x1, y1


def check_shape(shape: str) -> str:
    if shape not in MASK_SHAPES:
        raise InputError(f"mask shape {shape!r}: expected one of {', '.join(MASK_SHAPES)}")
    return shape


def _normalised_coords(box: Box, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres in the box's frame: the box spans [-1, 1] on both axes."""
    x0, y0, x1, y1 = box
    u = ((np.arange(width) + 0.5) - (x0 + x1) / 2) / ((x1 - x0) / 2)
    v = ((np.arange(height) + 0.5) - (y0 + y1) / 2) / ((y1 - y0) / 2)
    return u[None, :], v[:, None]


def ellipse_mask(box: Box, height: int, width: int) -> np.ndarray:
    """Boolean (H, W) mask of the pixel centres inside the ellipse inscribed in ``box``."""
    box = check_box(box, height, width)
    u, v = _normalised_coords(box, height, width)
    mask = u ** 2 + v ** 2 <= 1.0
    if not mask.any():  # a box narrower than a pixel: keep its centre pixel
        mask = _centre_pixel(box, height, width)
    return mask


def blob_radius(theta: np.ndarray, rng: np.random.Generator, roughness: float = 0.18,
                harmonics: int = 4) -> np.ndarray:
    """A random lobulated polar outline ``r(θ) > 0`` with ``max r = 1`` (unit: the box half-side).

    ``roughness`` bounds the amplitude of each harmonic relative to the mean radius; their sum
    is capped at 0.5, so ``r`` stays positive and the outline star-shaped around its centre.
    """
    amplitudes = rng.uniform(0.0, roughness, harmonics)
    amplitudes *= min(1.0, 0.5 / max(amplitudes.sum(), 1e-9))
    phases = rng.uniform(0.0, 2 * np.pi, harmonics)
    ks = np.arange(2, 2 + harmonics)

    def radius(angles: np.ndarray) -> np.ndarray:
        waves = np.cos(np.multiply.outer(ks, angles) + phases.reshape(-1, *[1] * angles.ndim))
        return 1 + np.tensordot(amplitudes, waves, axes=1)

    # Normalised by the maximum over a fine circle, so the outline touches the box.
    r_max = radius(np.linspace(0.0, 2 * np.pi, 720, endpoint=False)).max()
    return radius(np.asarray(theta, dtype=float)) / r_max


def blob_mask(box: Box, height: int, width: int, rng: np.random.Generator | int = 0,
              roughness: float = 0.18) -> np.ndarray:
    """Boolean (H, W) mask of a random lesion-shaped outline inscribed in ``box``.

    Deterministic for a given ``rng`` seed. The outline contains the box centre and reaches
    the box on at least one side; ``roughness = 0`` gives the inscribed ellipse.
    """
    box = check_box(box, height, width)
    rng = np.random.default_rng(rng)
    u, v = _normalised_coords(box, height, width)
    u, v = np.broadcast_arrays(u, v)
    theta = np.arctan2(v, u)
    mask = np.hypot(u, v) <= blob_radius(theta, rng, roughness)
    if not mask.any():
        mask = _centre_pixel(box, height, width)
    return mask


def _centre_pixel(box: Box, height: int, width: int) -> np.ndarray:
    x0, y0, x1, y1 = box
    mask = np.zeros((height, width), dtype=bool)
    mask[min(height - 1, int((y0 + y1) / 2)), min(width - 1, int((x0 + x1) / 2))] = True
    return mask


def shape_mask(shape: str, box: Box, height: int, width: int,
               rng: np.random.Generator | int = 0) -> np.ndarray:
    """The mask of ``shape`` (``box``, ``ellipse`` or ``blob``) in ``box``."""
    shape = check_shape(shape)
    if shape == "box":
        return box_to_mask(box, height, width)
    if shape == "ellipse":
        return ellipse_mask(box, height, width)
    return blob_mask(box, height, width, rng)


def mask_box(mask: np.ndarray) -> Box:
    """The tight box ``(x0, y0, x1, y1)`` (pixel edges) of a non-empty boolean mask."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        raise InputError("the mask is empty; mark the lesion region first")
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


def random_lesion_mask(lesion_box: Box, height: int, width: int, rng: np.random.Generator,
                       shapes: tuple[str, ...] = MASK_SHAPES,
                       scale: tuple[float, float] = (1.0, 2.5),
                       min_side: float = 0.0, tries: int = 8) -> tuple[np.ndarray, str]:
    """A random mask around a lesion (training augmentation) → (mask, shape drawn).

    The region's sides are the lesion box's sides times independent factors from ``scale``
    (at least ``min_side`` pixels), placed at a random offset that keeps the lesion inside it
    and clipped to the image; its shape is drawn uniformly from ``shapes``. A draw whose mask
    does not cover the lesion (the ellipse inscribed in ``lesion_box``) is redrawn; after
    ``tries`` failures the lesion's ellipse is added to the last draw, so the lesion is always
    wholly repainted.
    """
    lx0, ly0, lx1, ly1 = check_box(lesion_box, height, width)
    lo, hi = scale
    if not 1.0 <= lo <= hi:
        raise InputError(f"mask scale {scale}: expected 1 ≤ low ≤ high")
    lesion = ellipse_mask((lx0, ly0, lx1, ly1), height, width)
    lw, lh = lx1 - lx0, ly1 - ly0
    mask, shape = lesion, "ellipse"
    for _ in range(max(1, tries)):
        shape = str(rng.choice(list(shapes)))
        # An ellipse or blob must be larger than the box it covers (a circle covers a
        # centred square of side ≤ its diameter / √2), so those draw from a wider range.
        boost = 1.0 if shape == "box" else np.sqrt(2)
        rw = max(min_side, lw * rng.uniform(lo, hi) * boost)
        rh = max(min_side, lh * rng.uniform(lo, hi) * boost)
        x0 = lx0 - rng.uniform(0.0, max(0.0, rw - lw))
        y0 = ly0 - rng.uniform(0.0, max(0.0, rh - lh))
        region = (max(0.0, x0), max(0.0, y0), min(float(width), x0 + rw),
                  min(float(height), y0 + rh))
        mask = shape_mask(shape, region, height, width, rng)
        if mask[lesion].all():
            return mask, shape
    return mask | lesion, shape
