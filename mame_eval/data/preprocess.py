"""The paper's image preparation as small pure functions (DESIGN §1).

One :class:`Geometry` describes the whole spatial mapping of an image — optional horizontal
mirror, isotropic resize so the shorter side becomes ``size``, then a centre crop (the paper) or
a centred letterbox pad (``crop="pad"``, keeps the whole breast) to ``size × size``. Pixels,
masks and lesion boxes all go through the *same* object, so a box can never drift from the
lesion it marks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from mame_eval.errors import DataError

CROP_MODES = ("center", "pad")

#: Default breast threshold on the 8-bit prepared image (see :func:`breast_mask`).
BREAST_THRESHOLD = 10

#: A box ``(x0, y0, x1, y1)`` in continuous pixel coordinates (pixel i spans [i, i+1)).
Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Geometry:
    """Mirror → resize → crop/pad, for an input of ``height × width`` pixels.

    Attributes:
        height, width: input size in pixels.
        flip: mirror left↔right first (right-laterality breasts are mirrored to the left).
        size: output side length in pixels.
        crop: ``"center"`` (paper: shorter side → size, centre crop) or ``"pad"`` (longer side
            → size, centred zero padding).
    """

    height: int
    width: int
    flip: bool
    size: int = 512
    crop: str = "center"

    def __post_init__(self) -> None:
        if self.crop not in CROP_MODES:
            raise DataError(f"unknown crop mode {self.crop!r}; expected one of {CROP_MODES}")
        if self.size < 8:
            raise DataError(f"size {self.size} is too small; expected at least 8 pixels")

    @property
    def scale(self) -> float:
        side = min(self.height, self.width) if self.crop == "center" else max(
            self.height, self.width)
        return self.size / side

    @property
    def resized(self) -> tuple[int, int]:
        """(height, width) after resizing, before crop/pad."""
        s = self.scale
        return max(1, round(self.height * s)), max(1, round(self.width * s))

    @property
    def offset(self) -> tuple[int, int]:
        """(dy, dx) added to resized coordinates to get output coordinates.

        Negative for a crop (pixels removed on the top/left), positive for padding.
        """
        rh, rw = self.resized
        return (self.size - rh) // 2, (self.size - rw) // 2

    # -- pixels -------------------------------------------------------------------------------

    def apply_image(self, image: np.ndarray, resample: int = Image.BILINEAR) -> np.ndarray:
        """Map a 2-D uint8 array (H, W) to (size, size) uint8."""
        if image.shape != (self.height, self.width):
            raise DataError(
                f"image is {image.shape}, the geometry was built for {(self.height, self.width)}"
            )
        if self.flip:
            image = image[:, ::-1]
        rh, rw = self.resized
        resized = np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize(
            (rw, rh), resample=resample))
        dy, dx = self.offset
        out = np.zeros((self.size, self.size), dtype=image.dtype)
        # Intersect the resized image, shifted by the offset, with the output square.
        y0, x0 = max(dy, 0), max(dx, 0)
        y1, x1 = min(dy + rh, self.size), min(dx + rw, self.size)
        out[y0:y1, x0:x1] = resized[y0 - dy:y1 - dy, x0 - dx:x1 - dx]
        return out

    def apply_mask(self, mask: np.ndarray) -> np.ndarray:
        """Map a boolean mask (H, W) to a boolean (size, size) mask (bilinear, ≥ ½ inside)."""
        mapped = self.apply_image(mask.astype(np.uint8) * 255, resample=Image.BILINEAR)
        return mapped >= 128

    # -- boxes --------------------------------------------------------------------------------

    def apply_box(self, box: Box) -> Box:
        """Map a box ``(x0, y0, x1, y1)`` in input pixel-edge coordinates to output coordinates.

        Coordinates are continuous: pixel ``i`` spans ``[i, i + 1)``, so a mirror maps ``x`` to
        ``width − x`` and a resize multiplies by :attr:`scale`. No clipping: the caller decides
        what to do with a box that leaves the output (see :meth:`box_inside`).
        """
        x0, y0, x1, y1 = box
        if self.flip:
            x0, x1 = self.width - x1, self.width - x0
        rh, rw = self.resized
        sy, sx = rh / self.height, rw / self.width
        dy, dx = self.offset
        return (x0 * sx + dx, y0 * sy + dy, x1 * sx + dx, y1 * sy + dy)

    def box_inside(self, mapped_box: Box, tol: float = 0.5) -> bool:
        """Whether a mapped box lies within the output square (``tol`` pixels of slack)."""
        x0, y0, x1, y1 = mapped_box
        return x0 >= -tol and y0 >= -tol and x1 <= self.size + tol and y1 <= self.size + tol


def box_mask(box: Box, size: int) -> np.ndarray:
    """A (size, size) uint8 mask, 255 on every pixel whose centre lies inside ``box``."""
    x0, y0, x1, y1 = box
    centres = np.arange(size) + 0.5
    cols = (centres >= x0) & (centres <= x1)
    rows = (centres >= y0) & (centres <= y1)
    return (np.outer(rows, cols) * 255).astype(np.uint8)


def breast_mask(image: np.ndarray, threshold: int = BREAST_THRESHOLD) -> np.ndarray:
    """Boolean breast mask of an 8-bit mammogram (H, W).

    How the threshold is chosen: a mammogram "for presentation" shows air as (near) black, and
    after the min–max 8-bit conversion the background sits at 0 with a little detector noise,
    while even the thinnest tissue at the skin line is well above ~4 % of the display range. A
    *fixed* low threshold (default 10 / 255) therefore separates breast from air; an adaptive
    one such as Otsu's is not used because on dense breasts it splits fatty from dense tissue
    instead of breast from air. The largest connected component is kept (this drops burnt-in
    labels and markers) and holes are filled (dark fatty lobules stay breast).
    """
    if image.ndim == 3:
        image = image[..., 0]
    above = image > threshold
    labels, n = ndimage.label(above)
    if n == 0:
        return np.zeros(image.shape, dtype=bool)
    sizes = ndimage.sum_labels(above, labels, index=np.arange(1, n + 1))
    largest = labels == (int(np.argmax(sizes)) + 1)
    return ndimage.binary_fill_holes(largest)


def area_ratio(mask: np.ndarray) -> float:
    """Breast pixels ÷ all pixels of the (prepared) image, in [0, 1]."""
    return float(np.count_nonzero(mask)) / float(mask.size)


def breast_side(image: np.ndarray) -> str:
    """``"L"`` if most of the intensity lies in the left half of the image, else ``"R"``.

    Used only when the laterality is not recorded: a left breast lies against the left edge.
    """
    half = image.shape[1] // 2
    left = float(np.asarray(image[:, :half], dtype=np.float64).sum())
    right = float(np.asarray(image[:, image.shape[1] - half:], dtype=np.float64).sum())
    return "L" if left >= right else "R"


def to_rgb(image: np.ndarray) -> np.ndarray:
    """Replicate a gray (H, W) image into (H, W, 3), as the SD models expect RGB input."""
    return np.repeat(image[..., None], 3, axis=2)
