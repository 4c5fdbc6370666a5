"""Render one phantom mammogram in memory: :class:`PhantomSpec` → :class:`Phantom`.

Pipeline (canonical frame, chest wall left; mirrored at the end for right breasts)::

    anatomy (outline, pectoral, distance to skin)          anatomy.py
    → parenchyma display level (fat, dense, muscle)         texture.py, half resolution
    → vendor edge enhancement, upsample to full resolution
    → skin line, masses                                     lesions.py
    → soft knee, vendor transfer curve, quantum noise       vendors.py
    → stored values (uint16, BitsStored), MONOCHROME1 inverted, window centre/width

Display levels are vendor-neutral (0 = air, ~0.2 = thinnest tissue at the skin, ~0.4 fat,
~0.8 dense, masses above, compressed by a soft knee). After the vendor curve and noise every
breast pixel is ≥ ~15 % of the brightest pixel while air stays ≤ ~2 %, so a fixed low
threshold (10/255) on the min–max-scaled image recovers the breast mask exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from scipy import ndimage

from mame_eval.data.phantoms.anatomy import build_anatomy
from mame_eval.data.phantoms.lesions import MASS_SHAPES, Mass, MassSpec, place_masses
from mame_eval.data.phantoms.texture import build_parenchyma, draw_vessels
from mame_eval.data.phantoms.vendors import VENDOR_KEYS, vendor_profile
from mame_eval.errors import InputError

VIEWS = ("CC", "MLO")
LATERALITIES = ("L", "R")
DENSITIES = ("A", "B", "C", "D")
PHOTOMETRICS = ("MONOCHROME2", "MONOCHROME1")
#: Smallest accepted image side (pixels).
MIN_SIDE = 128
MAX_SIDE = 8192
_LUT_SIZE = 16384
_LUT_TOP = 1.8


def check_size(size) -> tuple[int, int]:
    """Validate ``(height, width)``: integers, ≥ MIN_SIDE, portrait or square, ≤ 2:1."""
    try:
        height, width = size
    except (TypeError, ValueError):
        raise InputError(f"size {size!r}: expected (height, width)") from None
    for name, v in (("height", height), ("width", width)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise InputError(f"size {name} {v!r}: expected an integer number of pixels")
        if not MIN_SIDE <= v <= MAX_SIDE:
            raise InputError(f"size {name} {v}: expected {MIN_SIDE}…{MAX_SIDE} pixels")
    if not width <= height <= 2 * width:
        raise InputError(f"size {height}x{width}: expected portrait HxW with W ≤ H ≤ 2·W "
                         "(like 1024x832)")
    return int(height), int(width)


@dataclass(frozen=True)
class PhantomSpec:
    """What to render. ``bits_stored=None`` draws the vendor's usual bit depth."""

    vendor: str = "hologic"
    view: str = "CC"
    laterality: str = "L"
    density: str = "B"
    size: tuple[int, int] = (1024, 832)
    bits_stored: int | None = None
    photometric: str = "MONOCHROME2"
    masses: tuple[MassSpec, ...] = ()

    def __post_init__(self) -> None:
        for name, value, allowed in (("vendor", self.vendor, VENDOR_KEYS),
                                     ("view", self.view, VIEWS),
                                     ("laterality", self.laterality, LATERALITIES),
                                     ("density", self.density, DENSITIES),
                                     ("photometric", self.photometric, PHOTOMETRICS)):
            if value not in allowed:
                raise InputError(f"{name} {value!r}: expected one of {', '.join(allowed)}")
        object.__setattr__(self, "size", check_size(self.size))
        if self.bits_stored is not None and not 12 <= self.bits_stored <= 16:
            raise InputError(f"bits_stored {self.bits_stored!r}: expected 12…16")
        for m in self.masses:
            if m.shape not in MASS_SHAPES:
                raise InputError(f"mass shape {m.shape!r}: expected one of "
                                 f"{', '.join(MASS_SHAPES)}")
            if not 0.005 <= m.diameter <= 0.2:
                raise InputError(f"mass diameter {m.diameter!r}: expected 0.005…0.2 of the "
                                 "image width")


@dataclass
class Phantom:
    """One rendered phantom, in image (DICOM) orientation.

    ``pixels`` are the stored values exactly as written to the DICOM (uint16, ≤ 2**bits − 1,
    inverted when MONOCHROME1); ``breast_mask`` is every breast pixel (pectoral muscle
    included); ``masses`` carry tight boxes (see :mod:`.lesions`); ``window_center`` /
    ``window_width`` are in stored-value units and span air level … brightest breast pixel.
    """

    spec: PhantomSpec
    pixels: np.ndarray = field(repr=False)
    breast_mask: np.ndarray = field(repr=False)
    masses: list[Mass]
    bits_stored: int
    window_center: float
    window_width: float
    dense_fraction: float  # fraction of the (non-muscle) breast that is dense tissue
    pectoral_mask: np.ndarray = field(repr=False)

    @property
    def photometric(self) -> str:
        return self.spec.photometric

    @property
    def area_ratio(self) -> float:
        return float(np.count_nonzero(self.breast_mask)) / self.breast_mask.size

    def display(self) -> np.ndarray:
        """float32 0…1 as a reader sees it: VOI window applied, MONOCHROME1 inverted."""
        return to_display(self.pixels, self.photometric, self.window_center, self.window_width)


def to_display(pixels: np.ndarray, photometric: str, center: float, width: float) -> np.ndarray:
    """Apply a linear VOI window to stored values; invert MONOCHROME1; float32 in 0…1."""
    lo = center - width / 2.0
    out = (pixels.astype(np.float32) - np.float32(lo)) / np.float32(max(width, 1.0))
    out = np.clip(out, 0.0, 1.0)
    return 1.0 - out if photometric == "MONOCHROME1" else out


def _upsample(a: np.ndarray, height: int, width: int) -> np.ndarray:
    img = Image.fromarray(a.astype(np.float32), mode="F").resize((width, height), Image.BILINEAR)
    return np.array(img, dtype=np.float32)


def _knee(level: np.ndarray, start: float = 0.82) -> np.ndarray:
    """Identity below ``start``, then a soft shoulder approaching 1.0 (no hard clipping)."""
    room = 1.0 - start
    over = np.maximum(level - start, 0.0)
    return np.where(level > start, start + room * (1.0 - np.exp(-over / room)), level)


def render_phantom(spec: PhantomSpec, rng: np.random.Generator | int | None = None) -> Phantom:
    """Render one phantom mammogram; pure (all randomness comes from ``rng``)."""
    if not isinstance(spec, PhantomSpec):
        raise InputError(f"spec {spec!r}: expected a PhantomSpec")
    rng = np.random.default_rng(rng)
    vendor = vendor_profile(spec.vendor)
    height, width = spec.size
    bits = spec.bits_stored
    if bits is None:
        bits = int(rng.choice(vendor.bits_choices, p=vendor.bits_weights))

    anat = build_anatomy(spec.view, height, width, rng)
    periphery = rng.uniform(0.045, 0.09) * width
    tissue = build_parenchyma(anat, spec.density, rng, periphery)
    level_h = tissue.level
    draw_vessels(anat, level_h, rng)
    if vendor.edge_enhance > 0:
        blur = ndimage.gaussian_filter(level_h, sigma=max(1.0, anat.half_shape[1] / 140))
        level_h = level_h + vendor.edge_enhance * (level_h - blur)
    region = anat.mask_h & ~anat.pectoral_h
    dense_fraction = float(np.count_nonzero((tissue.dense >= 0.5) & region)) / max(
        int(np.count_nonzero(region)), 1)

    level = _upsample(level_h, height, width)
    level += np.float32(0.075) * anat.skin
    masses = place_masses(anat, spec.masses, tissue.prior, tissue.depth, level, rng)

    # Display level → vendor signal (0…1) and its noise sigma, through a fine lookup table.
    grid = np.linspace(0.0, _LUT_TOP, _LUT_SIZE, dtype=np.float32)
    signal_lut = vendor.transfer(_knee(grid)).astype(np.float32)
    sigma_lut = (vendor.noise_a + vendor.noise_b * np.sqrt(signal_lut)).astype(np.float32)
    idx = np.clip(level * np.float32((_LUT_SIZE - 1) / _LUT_TOP), 0, _LUT_SIZE - 1)
    idx = idx.astype(np.int32)
    # Quantum-ish noise, sigma growing with sqrt(signal); Siemens' is slightly correlated.
    noise = rng.standard_normal((height, width), dtype=np.float32)
    if vendor.noise_corr > 0:
        noise = ndimage.gaussian_filter(noise, vendor.noise_corr)
        noise /= np.float32(max(float(noise[:64].std()), 1e-6))
    signal = signal_lut[idx] + sigma_lut[idx] * noise
    np.maximum(signal, np.float32(0.02), out=signal)
    air = np.float32(vendor.background) + np.float32(vendor.background_sigma) * noise
    signal = np.where(anat.mask, signal, air)

    top = 2**bits - 1
    used = rng.uniform(*vendor.use_range) * top
    stored = np.clip(np.rint(signal * np.float32(used)), 0, top).astype(np.uint16)
    lo = float(np.rint(vendor.background * used))
    hi = float(stored[anat.mask].max()) if anat.mask.any() else float(top)
    center, width_w = (lo + hi) / 2.0, max(hi - lo, 1.0)

    mask, pect = anat.mask, anat.pectoral
    if spec.laterality == "R":
        stored = stored[:, ::-1]
        mask, pect = mask[:, ::-1], pect[:, ::-1]
        masses = [m.mirrored(width) for m in masses]
    if spec.photometric == "MONOCHROME1":
        stored = (top - stored).astype(np.uint16)
        center = top - center
    return Phantom(spec=spec, pixels=np.ascontiguousarray(stored),
                   breast_mask=np.ascontiguousarray(mask), masses=masses, bits_stored=bits,
                   window_center=float(center), window_width=float(width_w),
                   dense_fraction=dense_fraction, pectoral_mask=np.ascontiguousarray(pect))
