"""Masses: round, oval and spiculated, placed fully inside the breast.

A mass is a dome-shaped bright blob with a soft (ill-defined) or sharp (circumscribed) margin;
spiculated masses add 10–22 tapering spicules radiating from an irregular core. Its *footprint*
is every pixel where the mass raises the display level by at least :data:`FOOTPRINT` of its
peak — core **and spicules** — and the annotated box is the tight bounding box of that
footprint in pixel-edge coordinates: ``xmin`` = first column, ``xmax`` = last column + 1 (same
for rows), so ``xmax - xmin`` is the width in pixels.

Placement: the footprint keeps a margin from the skin, the chest wall, the image edges, the
pectoral muscle and other masses; the centre is drawn preferring the glandular region at the
requested depth (distance from the nipple), so the same :class:`MassSpec` lands at a similar
depth in the CC and MLO views of one breast, as a radiologist expects.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from mame_eval.data.phantoms.anatomy import Anatomy

MASS_SHAPES = ("round", "oval", "spiculated")
#: Fraction of the peak above which a pixel belongs to the mass footprint (and box).
FOOTPRINT = 0.08
#: Core diameter of a mass as a fraction of the image width.
DIAMETER_RANGE = (0.03, 0.08)


@dataclass(frozen=True)
class MassSpec:
    """What to draw: shape, core diameter (fraction of image width), depth and BI-RADS."""

    shape: str = "oval"
    diameter: float = 0.05
    depth: float = 0.5  # preferred position: 0 = nipple … 1 = chest wall
    birads: int = 4

    @classmethod
    def random(cls, rng: np.random.Generator,
               diameter_range: tuple[float, float] = DIAMETER_RANGE) -> MassSpec:
        """A random mass; ``diameter_range`` = (low, high) core diameter, fraction of width."""
        shape = MASS_SHAPES[int(rng.choice(3, p=[0.3, 0.35, 0.35]))]
        birads = int(rng.choice([4, 5])) if shape == "spiculated" else int(rng.choice([3, 4]))
        return cls(shape=shape, diameter=float(rng.uniform(*diameter_range)),
                   depth=float(rng.uniform(0.3, 0.75)), birads=birads)


@dataclass(frozen=True)
class Mass:
    """A drawn mass. ``box`` = (xmin, ymin, xmax, ymax), pixel-edge coordinates (see module)."""

    box: tuple[float, float, float, float]
    shape: str
    birads: int
    center: tuple[float, float]  # (x, y) pixels
    diameter_px: float

    def mirrored(self, width: int) -> Mass:
        x0, y0, x1, y1 = self.box
        return Mass(box=(width - x1, y0, width - x0, y1), shape=self.shape, birads=self.birads,
                    center=(width - self.center[0], self.center[1]),
                    diameter_px=self.diameter_px)


def mass_profile(spec: MassSpec, radius: float, rng: np.random.Generator) -> np.ndarray:
    """A square float32 patch (odd side) with the mass profile 0..1 centred on its middle."""
    spiculated = spec.shape == "spiculated"
    reach = radius * (2.5 if spiculated else 1.15) + 3
    half = int(np.ceil(reach))
    ax = np.arange(-half, half + 1, dtype=np.float32)
    py, px = np.meshgrid(ax, ax, indexing="ij")
    rho = np.sqrt(px * px + py * py)
    phi = np.arctan2(py, px)
    if spec.shape == "oval":
        ratio = rng.uniform(0.55, 0.85)
        rot = rng.uniform(0, np.pi)
        a, b = radius, radius * ratio
        c, s = np.cos(phi - rot), np.sin(phi - rot)
        r_core = a * b / np.sqrt((b * c) ** 2 + (a * s) ** 2)
        soft = 0.12
    else:
        amp = 0.2 if spiculated else 0.05
        r_core = np.ones_like(phi)
        for k in range(2, 7):
            r_core = r_core + amp / k * np.cos(k * phi + rng.uniform(0, 2 * np.pi))
        r_core = r_core * radius * (0.85 if spiculated else 1.0)
        soft = 0.4 if spiculated else 0.1
    s_rel = rho / np.maximum(r_core, 1e-6)
    edge = np.clip((1.0 - s_rel) / soft, 0.0, 1.0)
    edge = edge * edge * (3 - 2 * edge)
    dome = np.sqrt(np.clip(1.0 - 0.8 * s_rel ** 2, 0.0, 1.0))
    prof = edge * (0.7 + 0.3 * dome)
    if spiculated:
        n = int(rng.integers(10, 23))
        angles = rng.uniform(0, 2 * np.pi, n)
        lengths = radius * rng.uniform(0.6, 1.6, n)
        w0 = max(0.7, 0.07 * radius)
        for alpha, length in zip(angles, lengths, strict=True):
            ca, sa = np.cos(alpha), np.sin(alpha)
            along = px * ca + py * sa
            perp = np.abs(-px * sa + py * ca)
            start = 0.6 * radius
            t = (along - start) / length
            inside = (t > -0.3) & (t < 1.0)
            width = w0 * (1.0 - np.clip(t, 0, 1)) + 0.35
            val = np.exp(-((perp / width) ** 2)) * (1.0 - np.clip(t, 0, 1)) ** 0.8 * 0.5
            prof = np.maximum(prof, np.where(inside, val, 0.0))
    return prof.astype(np.float32)


def _footprint_extent(prof: np.ndarray) -> float:
    """Largest distance (px) from the patch centre to a footprint pixel."""
    half = prof.shape[0] // 2
    ys, xs = np.nonzero(prof >= FOOTPRINT)
    return float(np.sqrt((ys - half) ** 2 + (xs - half) ** 2).max()) + 0.5


def place_masses(anat: Anatomy, specs: tuple[MassSpec, ...], prior: np.ndarray,
                 depth: np.ndarray, level: np.ndarray, rng: np.random.Generator) -> list[Mass]:
    """Draw every mass of ``specs`` into ``level`` (full-res, in place); return their boxes."""
    if not specs:
        return []
    h, w = anat.height, anat.width
    sy, sx = anat.scale
    hh, wh = anat.half_shape
    yy = (np.arange(hh)[:, None] + 0.5) * sy
    xx = (np.arange(wh)[None, :] + 0.5) * sx
    if anat.pectoral_h.any():
        d_pect = ndimage.distance_transform_edt(~anat.pectoral_h) * sx
    else:
        d_pect = np.full((hh, wh), np.inf)
    blocked = np.zeros((hh, wh), dtype=bool)
    margin = max(2.0, 0.012 * w)
    masses: list[Mass] = []
    for spec in specs:
        radius = spec.diameter * w / 2
        for _attempt in range(8):
            prof = mass_profile(spec, radius, rng)
            reach = _footprint_extent(prof) + margin
            ok = (anat.mask_h & ~blocked & (anat.dist_h > reach) & (d_pect > reach)
                  & (xx > reach) & (yy > reach) & (yy < h - reach) & (xx < w - reach))
            if ok.any():
                break
            radius *= 0.85
        else:  # pragma: no cover - the geometry ranges make this unreachable
            continue
        weight = np.exp(-(((depth - spec.depth) / 0.08) ** 2)) * (0.15 + prior) + 1e-9
        weight = np.where(ok, weight, 0.0).ravel()
        idx = int(rng.choice(weight.size, p=weight / weight.sum()))
        cy = int((idx // wh + rng.random()) * sy)
        cx = int((idx % wh + rng.random()) * sx)
        half = prof.shape[0] // 2
        y0, x0 = cy - half, cx - half
        ys = slice(max(y0, 0), min(y0 + prof.shape[0], h))
        xs = slice(max(x0, 0), min(x0 + prof.shape[1], w))
        patch = prof[ys.start - y0: ys.stop - y0, xs.start - x0: xs.stop - x0]
        amp = rng.uniform(0.2, 0.3)
        level[ys, xs] += amp * patch
        fy, fx = np.nonzero(patch >= FOOTPRINT)
        box = (float(xs.start + fx.min()), float(ys.start + fy.min()),
               float(xs.start + fx.max() + 1), float(ys.start + fy.max() + 1))
        masses.append(Mass(box=box, shape=spec.shape, birads=spec.birads,
                           center=(float(cx) + 0.5, float(cy) + 0.5), diameter_px=2 * radius))
        blocked |= np.hypot(yy - cy, xx - cx) < 2 * reach
    return masses
