"""How visible is the edge of an inpainted region? (issue 17: "measure the edge").

A repainted region whose tissue is a little brighter or darker than its surroundings leaves a
step along the mask's outline: a line of strong gradient that healthy tissue does not have.
:func:`edge_step` compares the mean gradient magnitude on a thin band around the outline with
that of the same image's breast tissue away from the region:

    ratio = mean |∇I| over the band  ÷  mean |∇I| over the interior

* ``|∇I|`` — the Sobel gradient magnitude of the gray image, divided by 8 so that it is in
  gray levels per pixel (a unit ramp gives 1);
* band — pixels within ``band`` px of the outline, on both sides (the outline's inner and
  outer rings; the 3×3 Sobel stencil straddles a step there), restricted to the breast;
* interior — the breast (the mask of ``prepare``), eroded by ``margin`` px so that the skin
  line's strong edge is left out, minus the region dilated by ``margin`` px.

A seamless blend gives a ratio near 1 (the band is ordinary tissue); a seam raises it. The
same ratio of the image *before* inpainting (``reference``) tells what the tissue along that
outline had to begin with.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mame_eval.errors import InputError


@dataclass(frozen=True)
class EdgeStep:
    """The gradient along a mask's outline vs the same image's interior (gray levels/px)."""

    band_gradient: float
    interior_gradient: float
    ratio: float  # band ÷ interior; NaN when either set of pixels is empty
    n_band: int  # pixels in the band
    n_interior: int  # pixels in the interior
    reference_ratio: float | None = None  # the same measure on the image before inpainting


def gradient_magnitude(image: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude of a uint8 gray or RGB image, in gray levels per pixel."""
    from scipy import ndimage

    gray = np.asarray(image, dtype=np.float64)
    if gray.ndim == 3:
        gray = gray.mean(axis=-1)
    gx = ndimage.sobel(gray, axis=1, mode="nearest") / 8.0
    gy = ndimage.sobel(gray, axis=0, mode="nearest") / 8.0
    return np.hypot(gx, gy)


def edge_regions(image: np.ndarray, mask: np.ndarray, band: float = 1.0,
                 margin: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """The (band, interior) pixel sets of :func:`edge_step` as boolean (H, W) arrays."""
    from scipy import ndimage

    from mame_eval.data.preprocess import breast_mask

    mask = np.asarray(mask, dtype=bool)
    if mask.shape != image.shape[:2]:
        raise InputError(f"mask is {mask.shape[1]}×{mask.shape[0]}, the image "
                         f"{image.shape[1]}×{image.shape[0]}; they must match")
    if not mask.any():
        raise InputError("the mask is empty; there is no edge to measure")
    inside = ndimage.distance_transform_edt(mask)  # distance to the nearest outside pixel
    outside = ndimage.distance_transform_edt(~mask)
    breast = breast_mask(np.asarray(image, dtype=np.uint8))
    tissue = ndimage.binary_erosion(breast, iterations=margin) if margin else breast
    ring = (mask & (inside <= band)) | (~mask & (outside <= band))
    near = outside <= band + margin
    return ring & tissue, tissue & ~near


def edge_step(image: np.ndarray, mask: np.ndarray, *, reference: np.ndarray | None = None,
              band: float = 1.0, margin: int = 3) -> EdgeStep:
    """Measure the step along ``mask``'s outline in ``image`` (see the module docstring).

    ``image``: uint8 (H, W) or (H, W, 3); ``mask``: boolean (H, W), the region that was
    repainted; ``reference``: the image before inpainting, measured on the same pixel sets.
    """
    band_px, interior = edge_regions(image, mask, band, margin)

    def ratio(img: np.ndarray) -> tuple[float, float, float]:
        grad = gradient_magnitude(img)
        b = float(grad[band_px].mean()) if band_px.any() else float("nan")
        i = float(grad[interior].mean()) if interior.any() else float("nan")
        return b, i, (b / i if i > 0 else float("nan"))

    b, i, r = ratio(image)
    ref = None
    if reference is not None:
        if reference.shape != image.shape:
            raise InputError(f"reference image has shape {reference.shape}, the image "
                             f"{image.shape}; they must match")
        ref = ratio(reference)[2]
    return EdgeStep(band_gradient=b, interior_gradient=i, ratio=r,
                    n_band=int(band_px.sum()), n_interior=int(interior.sum()),
                    reference_ratio=ref)
