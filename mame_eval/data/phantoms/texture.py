"""Breast parenchyma: power-law (1/f^beta) fibroglandular texture and fatty-tissue structure.

All fields are computed on the half-resolution grid of :class:`Anatomy` and are defined
everywhere (inside and outside the breast), so that upsampling never darkens the skin edge.

Dense (fibroglandular) tissue is a thresholded sum of

* power-law noise with beta ≈ 3 sampled in polar coordinates around the nipple and stretched
  along the radius — strands and ducts that converge on the nipple,
* isotropic power-law noise (beta ≈ 3) — cloud-like lumps,
* an anatomical prior: a cone behind the nipple, strongest in the central / retro-areolar
  region, absent in the subcutaneous fat near the skin and the retro-mammary fat at the wall.

The threshold is the (1 − f) quantile over the breast (pectoral muscle excluded), so the dense
fraction is exactly the drawn ``f`` (before the soft edge), and ``f`` follows the BI-RADS letter
(:data:`DENSE_FRACTION`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import fft as sfft
from scipy import ndimage

from mame_eval.data.phantoms.anatomy import Anatomy, smooth_noise_1d, thickness

#: Dense (fibroglandular) fraction of the breast area drawn per image, by BI-RADS letter.
DENSE_FRACTION = {
    "A": (0.04, 0.20),
    "B": (0.28, 0.47),
    "C": (0.53, 0.72),
    "D": (0.78, 0.92),
}


@lru_cache(maxsize=8)
def _log_freq(shape: tuple[int, int]) -> np.ndarray:
    """log of the radial frequency (cycles/pixel) of an rfft2 grid, floored at 1/(2·side)."""
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    f = np.maximum(np.sqrt(fy * fy + fx * fx), 0.5 / max(shape))
    return np.log(f).astype(np.float32)


def _zscore(a: np.ndarray) -> np.ndarray:
    a = a - a.mean()
    s = float(a.std())
    return (a / s if s > 0 else a).astype(np.float32)


@lru_cache(maxsize=16)
def _filters(shape: tuple[int, int], kinds: tuple[tuple[str, float], ...]) -> np.ndarray:
    logf = _log_freq(shape)
    out = np.empty((len(kinds), *logf.shape), dtype=np.float32)
    for i, (kind, param) in enumerate(kinds):
        if kind == "power":
            out[i] = np.exp(np.float32(-param / 2.0) * logf)
        else:
            octaves = np.float32(0.6 * np.log(2.0))
            out[i] = np.exp(-0.5 * ((logf - np.float32(np.log(param))) / octaves) ** 2)
        out[i, 0, 0] = 0.0
    return out


def noise_fields(shape: tuple[int, int], rng: np.random.Generator,
                 kinds: list[tuple[str, float]]) -> list[np.ndarray]:
    """Periodic zero-mean unit-variance noise fields, one per ``(kind, parameter)``.

    ``("power", beta)`` has a power spectrum ∝ 1 / f**beta; ``("band", f_center)`` is
    concentrated within ~0.6 octave of ``f_center`` cycles/pixel. All fields share one batched
    FFT.
    """
    spec = sfft.rfft2(rng.standard_normal((len(kinds), *shape), dtype=np.float32))
    spec *= _filters(tuple(shape), tuple((k, float(p)) for k, p in kinds))
    out = sfft.irfft2(spec, s=shape)
    return [_zscore(o) for o in out]


def power_noise(shape: tuple[int, int], beta: float, rng: np.random.Generator) -> np.ndarray:
    """One periodic zero-mean unit-variance field with power spectrum ∝ 1 / f**beta."""
    return noise_fields(shape, rng, [("power", beta)])[0]


def _bilinear_wrap(fields: list[np.ndarray], u: np.ndarray, v: np.ndarray) -> list[np.ndarray]:
    """Sample periodic fields (same shape) at fractional (row u, column v), wrapping around."""
    h, w = fields[0].shape
    u0, v0 = np.floor(u), np.floor(v)
    fu, fv = (u - u0).astype(np.float32), (v - v0).astype(np.float32)
    i0 = u0.astype(np.int64) % h
    j0 = v0.astype(np.int64) % w
    i1, j1 = (i0 + 1) % h, (j0 + 1) % w
    r0, r1 = i0 * w, i1 * w
    idx = (r0 + j0, r0 + j1, r1 + j0, r1 + j1)
    wts = ((1 - fu) * (1 - fv), (1 - fu) * fv, fu * (1 - fv), fu * fv)
    out = []
    for f in fields:
        flat = f.ravel()
        out.append(sum(flat[i] * wt for i, wt in zip(idx, wts, strict=True)))
    return out


@dataclass
class Parenchyma:
    """Half-resolution tissue maps (all float32, defined everywhere)."""

    dense: np.ndarray  # soft dense-tissue map 0..1
    level: np.ndarray  # display level 0..~1 of the tissue (no skin line, masses or noise)
    prior: np.ndarray  # where glandular tissue (and masses) are anatomically likely, 0..1
    depth: np.ndarray  # 0 at the nipple … 1 at the chest wall (along the breast axis)
    dense_target: float


def _polar(anat: Anatomy):
    """Half-res coordinates relative to the nipple: radius (half px) and angle from the axis."""
    hh, wh = anat.half_shape
    sy, sx = anat.scale
    xn, yn = anat.nipple[0] / sx, anat.nipple[1] / sy
    yy = np.arange(hh, dtype=np.float32)[:, None] + 0.5
    xx = np.arange(wh, dtype=np.float32)[None, :] + 0.5
    dx = xn - xx  # > 0 toward the chest wall
    dy = yy - yn
    r = np.sqrt(dx * dx + dy * dy)
    theta = np.arctan2(dy, dx)
    return r, theta, dx, xn


def build_parenchyma(anat: Anatomy, density: str, rng: np.random.Generator,
                     periphery: float) -> Parenchyma:
    """Tissue maps for one view; ``periphery`` is the thickness fall-off width (full-res px)."""
    hh, wh = anat.half_shape
    r, theta, dx, xn = _polar(anat)
    xn = max(xn, 4.0)
    depth = np.clip(dx / xn, 0.0, 1.5).astype(np.float32)

    # Fibroglandular field: radial strands (faded at the nipple) + lumpy clouds; fatty tissue:
    # soft lobules and thin radial lines (ducts, Cooper's ligaments); mottle inside the dense.
    # One batched FFT on a fast size; isotropic fields are cropped, warped ones stay periodic.
    fast = (sfft.next_fast_len(hh, real=True), sfft.next_fast_len(wh, real=True))
    fields = noise_fields(fast, rng, [("power", 3.0), ("band", 34.0 / wh), ("power", 3.2),
                                      ("power", 2.6), ("power", 2.4), ("power", 1.8)])
    strands_src, band_src = fields[:2]
    clouds, lob, mottle, fine = (f[:hh, :wh] for f in fields[2:])
    strands, band = _bilinear_wrap([strands_src, band_src], r / 2.2, theta * (0.9 * xn))
    strands *= np.clip(r / (0.3 * xn), 0.0, 1.0)
    field = 0.5 * strands + 0.75 * clouds

    dist = anat.dist_h
    t = thickness(dist, periphery)
    skin_fat = np.clip(dist / (0.09 * anat.width), 0.0, 1.0) ** 1.5
    cone = np.exp(-((theta / 0.95) ** 2))
    along = np.exp(-(((depth - 0.5) / 0.38) ** 2))
    prior = (along * (0.35 + 0.65 * cone) * skin_fat).astype(np.float32)
    if anat.pectoral_h.any():
        prior = prior * (1.0 - anat.pect_level_h ** 0.25 * anat.pectoral_h)
    score = field + 2.2 * prior

    lo, hi = DENSE_FRACTION[density]
    target = float(rng.uniform(lo, hi))
    region = anat.mask_h & ~anat.pectoral_h
    if not region.any():
        region = anat.mask_h
    tau = float(np.quantile(score[region], 1.0 - target))
    dense = (1.0 / (1.0 + np.exp(-(score - tau) / 0.3))).astype(np.float32)

    trab = np.exp(-((band / 0.14) ** 2)) * np.clip(r / (0.2 * xn), 0.0, 1.0)

    fat = 1.0 - dense
    level = (0.17 + 0.19 * t ** 0.8
             + t * fat * (0.022 * lob + 0.035 * trab)
             + dense * (0.34 * (0.35 + 0.65 * t) * (0.86 + 0.14 * mottle) + 0.035 * fine))
    # Areola / retro-areolar skin thickening.
    d_nip = r * anat.scale[1]
    level = level + 0.035 * np.exp(-((d_nip / (0.035 * anat.width)) ** 2))
    # Pectoral muscle: bright, brighter toward the chest wall, with fibre striation.
    if anat.pectoral_h.any():
        stripe_noise = ndimage.gaussian_filter1d(rng.standard_normal(4096), 2.5)
        stripe_noise /= max(float(stripe_noise.std()), 1e-6)
        idx = np.clip(anat.pect_stripe_h * 180.0, 0, 4095).astype(np.int32)
        base = 0.66 if anat.view == "MLO" else 0.42
        muscle = (base + 0.12 * anat.pect_level_h ** 0.6 + 0.022 * stripe_noise[idx]
                  + 0.015 * fine) * (0.6 + 0.4 * t)
        pm = ndimage.gaussian_filter(anat.pectoral_h.astype(np.float32),
                                   0.8 if anat.view == "MLO" else 2.5)
        level = level * (1.0 - pm) + pm * np.maximum(muscle, level)
    return Parenchyma(dense=dense, level=level.astype(np.float32), prior=prior, depth=depth,
                      dense_target=target)


def draw_vessels(anat: Anatomy, level_h: np.ndarray, rng: np.random.Generator) -> None:
    """Add 2–5 thin meandering blood vessels (chest wall → nipple) to half-res ``level_h``."""
    w = anat.width
    deep = np.nonzero(anat.x_edge > 0.3 * w)[0]
    if deep.size == 0:
        return
    hh, wh = anat.half_shape
    sy, sx = anat.scale
    xn, yn = anat.nipple
    span = float(deep.size)
    idx_all, wt_all = [], []
    for _ in range(int(rng.integers(2, 6))):
        p0 = np.array([rng.uniform(0, 0.08) * w, float(rng.choice(deep))])
        p2 = np.array([xn * rng.uniform(0.5, 0.95), yn + rng.uniform(-0.3, 0.3) * span])
        length = float(np.hypot(*(p2 - p0)))
        if length < 8:
            continue
        normal = np.array([-(p2 - p0)[1], (p2 - p0)[0]]) / length
        p1 = (p0 + p2) / 2 + normal * rng.uniform(-0.15, 0.15) * length
        m = int(length)  # ~2 samples per half-res pixel
        s = np.linspace(0.0, 1.0, m)[:, None]
        pts = (1 - s) ** 2 * p0 + 2 * s * (1 - s) * p1 + s * s * p2
        pts += normal * (0.012 * w * smooth_noise_1d(m, m / 6, rng))[:, None]
        ix = np.floor(pts[:, 0] / sx).astype(int)
        iy = np.floor(pts[:, 1] / sy).astype(int)
        ok = (ix >= 0) & (ix < wh) & (iy >= 0) & (iy < hh)
        ix, iy, s = ix[ok], iy[ok], s[ok, 0]
        ok = anat.dist_h[iy, ix] > 3
        amp = rng.uniform(0.035, 0.07) * (1.0 - 0.6 * s[ok])
        idx_all.append(iy[ok] * wh + ix[ok])
        wt_all.append(0.5 * amp)
    if not idx_all:
        return
    sigma = max(0.5, 0.6 * w / 832)
    canvas = np.bincount(np.concatenate(idx_all), np.concatenate(wt_all), minlength=hh * wh)
    canvas = ndimage.gaussian_filter(canvas.reshape(hh, wh).astype(np.float32), sigma)
    level_h += canvas * np.float32(np.sqrt(2 * np.pi) * sigma)
