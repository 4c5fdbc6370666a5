"""Breast outline, pectoral muscle and compressed-thickness geometry of one phantom view.

Everything here lives in a *canonical frame*: the chest wall is the LEFT image edge (x = 0),
as for a left breast; :func:`mame_eval.data.phantoms.render.render_phantom` mirrors the finished
image for right breasts.

The outline is a per-row function ``x_edge(y)``: breast pixels are those with x < x_edge(y). So
the breast always touches the chest-wall edge, is one connected region without holes, and its
area is controlled exactly by scaling the depth (how far it reaches from the chest wall):

* CC — a super-ellipse half-disc bulging from the chest wall, nipple near the vertical centre,
  top and bottom halves of slightly different size; sometimes a sliver of pectoral muscle.
* MLO — the axillary tail along the top edge, a near-straight upper contour out to the nipple,
  a rounded lower contour back to the chest wall at the inframammary fold (so the breast rarely
  fills the image top to bottom), and the pectoral muscle as a bright triangle in the upper
  chest-wall corner.

Fields needed only smoothly (distance to the skin, thickness, texture priors) are computed on a
half-resolution grid; the mask and the skin line are exact at full resolution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

#: Target breast area ratio (breast pixels / image pixels) is drawn uniformly from this range.
AREA_RANGE = (0.20, 0.76)


@dataclass
class Anatomy:
    """Geometry of one view in the canonical (chest wall left) frame."""

    view: str
    height: int
    width: int
    mask: np.ndarray  # bool (H, W): breast incl. pectoral muscle
    pectoral: np.ndarray  # bool (H, W): pectoral muscle (subset of mask)
    skin: np.ndarray  # bool (H, W): the skin line, a thin band along the outline
    x_edge: np.ndarray  # float (H,): outline, breast = x < x_edge[y]
    nipple: tuple[float, float]  # (x, y) full-resolution pixels
    # Half-resolution grid (hh, wh); pixel centres at ((i + .5) * H / hh, (j + .5) * W / wh).
    mask_h: np.ndarray
    pectoral_h: np.ndarray
    dist_h: np.ndarray  # float32 distance to the skin outline, in FULL-res pixels; 0 outside
    pect_level_h: np.ndarray  # float32 1 at the chest wall … 0 at the muscle edge; 0 outside
    pect_stripe_h: np.ndarray  # float32 coordinate across the muscle fibres (for striation)

    @property
    def half_shape(self) -> tuple[int, int]:
        return self.mask_h.shape  # type: ignore[return-value]

    @property
    def scale(self) -> tuple[float, float]:
        """Full-res pixels per half-res pixel along (y, x)."""
        hh, wh = self.mask_h.shape
        return self.height / hh, self.width / wh


def half_grid(height: int, width: int) -> tuple[int, int]:
    return (height + 1) // 2, (width + 1) // 2


def smooth_noise_1d(n: int, corr: float, rng: np.random.Generator) -> np.ndarray:
    """Unit-variance smooth random function on ``n`` samples (correlation length ``corr``)."""
    pad = int(3 * corr) + 1
    raw = ndimage.gaussian_filter1d(rng.standard_normal(n + 2 * pad), max(corr, 0.5))[pad:-pad]
    std = float(raw.std())
    return raw / std if std > 0 else raw


def _superellipse(u: np.ndarray, c: float, e: float | None = None) -> np.ndarray:
    """Profile 1 at u = 0, 0 at |u| >= 1: ``(1 - |u|**c) ** e``.

    ``e = 1/c`` is a super-ellipse (meets the chest wall at a right angle); larger ``e`` makes
    the contour reach the chest wall obliquely, as a real breast does.
    """
    a = np.clip(np.abs(u), 0.0, 1.0)
    return np.power(1.0 - np.power(a, c), 1.0 / c if e is None else e)


def _cc_outline(h: int, w: int, area: float, rng: np.random.Generator):
    """Return (x_edge px, nipple row, pectoral edge px) of a CC view."""
    y = (np.arange(h) + 0.5) / h
    c = rng.uniform(1.7, 2.3) + 0.5 * (area - AREA_RANGE[0])
    k = math.gamma(1 + 1 / c) ** 2 / math.gamma(1 + 2 / c)
    aspect = rng.uniform(0.55, 0.9)  # depth (px) / chest-wall extent (px)
    span = min(math.sqrt(area / (aspect * k * h / w)), 0.98)
    skew = rng.uniform(-0.12, 0.12)
    b_up, b_down = span / 2 * (1 + skew), span / 2 * (1 - skew)
    y0 = float(np.clip(rng.uniform(0.45, 0.55), 0.01 + b_up, 0.99 - b_down))
    if b_up + b_down > 0.98:
        y0 = 0.5 + (b_up - b_down) / 2
    u = np.where(y < y0, (y0 - y) / b_up, (y - y0) / b_down)
    shape = _superellipse(u, c, rng.uniform(0.5, 0.8))
    depth = float(np.clip(area / max(shape.mean(), 1e-6), 0.22, 0.95))
    x_edge = depth * shape * w
    pect = np.zeros(h)
    if rng.random() < 0.35:  # a sliver of pectoral muscle at the chest wall
        yc = y0 + rng.uniform(-0.06, 0.06)
        hc = rng.uniform(0.08, 0.18) * span / 0.7
        pect = rng.uniform(0.02, 0.055) * w * np.sqrt(np.clip(1 - ((y - yc) / hc) ** 2, 0, 1))
    return x_edge, y0 * h, pect


def _mlo_outline(h: int, w: int, area: float, rng: np.random.Generator):
    """Return (x_edge px, nipple row, pectoral edge px) of an MLO view."""
    y = (np.arange(h) + 0.5) / h
    fold = float(np.clip(0.6 + 0.42 * area + rng.uniform(-0.06, 0.06), 0.64, 0.99))
    yn = fold * rng.uniform(0.55, 0.68)
    pw = rng.uniform(0.2, 0.4)  # pectoral width at the top edge
    top = min(pw * rng.uniform(1.1, 1.5), 0.6)  # breast width at the top edge (axillary tail)
    p = rng.uniform(0.75, 1.3)
    c = rng.uniform(1.8, 2.6)
    s_up = np.power(np.sin(0.5 * np.pi * np.clip(y / yn, 0, 1)), p)
    q_low = _superellipse((y - yn) / (fold - yn), c, rng.uniform(0.6, 0.95))
    a_part = np.where(y < yn, top * (1 - s_up), 0.0)
    b_part = np.where(y < yn, s_up, q_low)
    depth = (area - a_part.mean()) / max(b_part.mean(), 1e-6)
    depth = float(np.clip(depth, max(top + 0.08, 0.3), 0.95))
    x_edge = (a_part + depth * b_part) * w
    # Pectoral muscle: from the top edge down the chest wall, edge slightly convex.
    ph = min(rng.uniform(0.4, 0.72), yn * 1.25)
    gam = rng.uniform(0.85, 1.25)
    t = np.clip(y / ph, 0, 1)
    pect = pw * w * (np.power(1 - t, gam) + rng.uniform(0.0, 0.25) * np.sin(np.pi * t))
    pect = np.minimum(pect, 0.9 * x_edge)
    return x_edge, yn * h, pect


def build_anatomy(view: str, height: int, width: int, rng: np.random.Generator) -> Anatomy:
    """Draw one random breast geometry for ``view`` ("CC" or "MLO")."""
    h, w = height, width
    area = rng.uniform(*AREA_RANGE)
    if view == "CC":
        x_edge, yn, pect_edge = _cc_outline(h, w, area, rng)
    else:
        x_edge, yn, pect_edge = _mlo_outline(h, w, area, rng)
    # Irregular skin contour and, sometimes, a nipple in profile.
    x_edge = x_edge * (1 + 0.022 * smooth_noise_1d(h, h / 14, rng))
    rows = np.arange(h) + 0.5
    if rng.random() < 0.6:
        bump = rng.uniform(0.004, 0.013) * w
        x_edge = x_edge + bump * np.exp(-(((rows - yn) / (rng.uniform(0.012, 0.025) * h)) ** 2))
    x_edge = np.clip(x_edge, 0.0, 0.985 * w)
    pect_edge = np.minimum(pect_edge, 0.9 * x_edge)

    cols = np.arange(w) + 0.5
    mask = cols[None, :] < x_edge[:, None]
    pectoral = cols[None, :] < pect_edge[:, None]
    # Skin line = mask minus its k-pixel (square) erosion, computed from the row outline: a
    # pixel survives the erosion iff it is > k pixels left of the outline in rows y-k … y+k.
    k = max(1, round(w / 420))
    reach = ndimage.minimum_filter1d(x_edge, 2 * k + 1, mode="nearest")
    skin = mask & ~(cols[None, :] + k < reach[:, None])

    ny = int(np.clip(round(yn), 0, h - 1))
    win = slice(max(0, ny - h // 20), min(h, ny + h // 20 + 1))
    ny = win.start + int(np.argmax(x_edge[win]))
    nipple = (float(x_edge[ny]), float(ny + 0.5))

    hh, wh = half_grid(h, w)
    rows_h = (np.arange(hh) + 0.5) * h / hh
    cols_h = (np.arange(wh) + 0.5) * w / wh
    xe_h = np.interp(rows_h, rows, x_edge)
    pe_h = np.interp(rows_h, rows, pect_edge)
    mask_h = cols_h[None, :] < xe_h[:, None]
    pect_h = cols_h[None, :] < pe_h[:, None]
    dist_h = (ndimage.distance_transform_edt(mask_h) * (w / wh)).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(pe_h[:, None] > 0, cols_h[None, :] / np.maximum(pe_h[:, None], 1e-6), 1)
    pect_level = np.where(pect_h, 1.0 - np.clip(rel, 0, 1), 0.0).astype(np.float32)
    pw = max(float(pect_edge.max()), 1.0)
    ph = max(float(np.count_nonzero(pect_edge > 0.5)), 1.0)
    stripe = (cols_h[None, :] / pw + rows_h[:, None] / ph).astype(np.float32)
    return Anatomy(
        view=view, height=h, width=w, mask=mask, pectoral=pectoral & mask, skin=skin, x_edge=x_edge,
        nipple=nipple, mask_h=mask_h, pectoral_h=pect_h & mask_h, dist_h=dist_h,
        pect_level_h=pect_level, pect_stripe_h=stripe,
    )


def thickness(dist: np.ndarray, periphery: float) -> np.ndarray:
    """Relative compressed thickness 0 (skin) … 1, a circular fall-off over ``periphery`` px."""
    u = np.clip(dist / max(periphery, 1e-6), 0.0, 1.0)
    return np.sqrt(1.0 - (1.0 - u) ** 2).astype(np.float32)
