"""Vendor "looks" of the phantom mammograms: DICOM identity, bit depth, transfer curve, noise.

The two vendors mirror the paper's datasets (Hologic Selenia Dimensions — OMI-DB-like, area
labels; Siemens MAMMOMAT Inspiration — VinDr-like, density labels). They differ *subtly but
learnably*: Hologic has a slightly contrast-stretching power curve, white quantum noise and
mostly 12-bit files; Siemens has a log-like curve (brighter fat, compressed highlights), mild
edge enhancement, a little more and slightly correlated (blurred) noise and mostly 15/16-bit
files.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

VENDOR_KEYS = ("hologic", "siemens")


@dataclass(frozen=True)
class VendorProfile:
    """Everything vendor-specific about a phantom, from display curve to DICOM tags."""

    key: str
    manufacturer: str
    model: str
    #: BitsStored choices and their probabilities (one draw per file).
    bits_choices: tuple[int, ...]
    bits_weights: tuple[float, ...]
    #: physical height of the detector field (mm); PixelSpacing = this / rows (square pixels).
    detector_height_mm: float
    #: fraction of 2**BitsStored − 1 the brightest tissue reaches (min, max; one draw per file).
    use_range: tuple[float, float]
    #: background (air) level and its noise, as fractions of the used range.
    background: float
    background_sigma: float
    #: quantum-ish noise sigma = a + b * sqrt(signal), in fractions of the used range.
    noise_a: float
    noise_b: float
    #: Gaussian sigma (pixels) that correlates the noise (0 = white).
    noise_corr: float
    #: unsharp-mask gain applied to the smooth anatomy (0 = none).
    edge_enhance: float
    kvp: float

    def transfer(self, level: np.ndarray) -> np.ndarray:
        """Map the vendor-neutral display level (0 = air … ~1 = densest) to 0…1."""
        level = np.clip(level, 0.0, None)
        if self.key == "hologic":
            return np.power(level, 1.12, dtype=np.float32)
        k = np.float32(1.3)
        return (np.log1p(k * level) / np.log1p(k)).astype(np.float32)


VENDORS: dict[str, VendorProfile] = {
    "hologic": VendorProfile(
        key="hologic",
        manufacturer="HOLOGIC, Inc.",
        model="Selenia Dimensions",
        bits_choices=(12, 14),
        bits_weights=(0.75, 0.25),
        detector_height_mm=266.24,
        use_range=(0.88, 0.97),
        background=0.003,
        background_sigma=0.0012,
        noise_a=0.004,
        noise_b=0.010,
        noise_corr=0.0,
        edge_enhance=0.0,
        kvp=29.0,
    ),
    "siemens": VendorProfile(
        key="siemens",
        manufacturer="SIEMENS",
        model="MAMMOMAT Inspiration",
        bits_choices=(12, 15, 16),
        bits_weights=(0.3, 0.3, 0.4),
        detector_height_mm=282.88,
        use_range=(0.72, 0.9),
        background=0.005,
        background_sigma=0.0015,
        noise_a=0.005,
        noise_b=0.013,
        noise_corr=0.8,
        edge_enhance=0.45,
        kvp=28.0,
    ),
}


def vendor_profile(key: str) -> VendorProfile:
    """The profile of ``"hologic"`` or ``"siemens"`` (callers validate the key)."""
    return VENDORS[key]
