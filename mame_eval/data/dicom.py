"""Reading mammograms (DICOM, 8/16-bit PNG) and converting them to 8-bit for display/training.

Everything returned here is in *display* orientation: bright = dense tissue, dark = air.
MONOCHROME1 files (where the stored maximum is black) are inverted on reading.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from mame_eval.errors import DataError

#: Conversion modes of :func:`to_uint8`.
TO8BIT_MODES = ("paper", "window")


@dataclass
class RawImage:
    """A mammogram as read from disk.

    Attributes:
        pixels: float64 array (H, W), display orientation (MONOCHROME1 already inverted), in
            stored-value units (0 … 2**bits_stored − 1).
        bits_stored: significant bits of the stored values (8 for 8-bit PNG).
        manufacturer: the DICOM Manufacturer tag, ``""`` when absent (PNG).
        view: DICOM ViewPosition (``"CC"``, ``"MLO"``) or ``""``.
        laterality: DICOM ImageLaterality / Laterality (``"L"``, ``"R"``) or ``""``.
        window: ``(center, width)`` in stored-value units after inversion, or None.
        photometric: PhotometricInterpretation (``"MONOCHROME1"``/``"MONOCHROME2"``/``"PNG"``).
    """

    pixels: np.ndarray
    bits_stored: int
    manufacturer: str = ""
    view: str = ""
    laterality: str = ""
    window: tuple[float, float] | None = None
    photometric: str = "MONOCHROME2"


def _first(value) -> float:
    """Window tags may be multi-valued; the first value is the default window."""
    try:
        return float(value[0])
    except TypeError:
        return float(value)


def read_dicom(path: Path) -> RawImage:
    """Read a mammogram DICOM, apply the Modality LUT, invert MONOCHROME1.

    Raises:
        DataError: the file is missing, not DICOM, or has no readable pixel data.
    """
    import pydicom
    from pydicom.pixels import apply_modality_lut

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        ds = pydicom.dcmread(path)
        stored = ds.pixel_array
    except Exception as exc:  # pydicom raises many types for corrupt input
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{path}: not a readable DICOM image ({reason})") from None
    if stored.ndim != 2:
        raise DataError(f"{path}: expected one 2-D grayscale frame, got shape {stored.shape}")
    bits = int(getattr(ds, "BitsStored", stored.dtype.itemsize * 8))
    pixels = np.asarray(apply_modality_lut(stored, ds), dtype=np.float64)
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2"))
    window = None
    if "WindowCenter" in ds and "WindowWidth" in ds:
        window = (_first(ds.WindowCenter), _first(ds.WindowWidth))
    if photometric == "MONOCHROME1":
        top = float(2**bits - 1)
        pixels = top - pixels
        if window is not None:
            window = (top - window[0], window[1])
    return RawImage(
        pixels=pixels,
        bits_stored=bits,
        manufacturer=str(getattr(ds, "Manufacturer", "")),
        view=str(getattr(ds, "ViewPosition", "")),
        laterality=str(getattr(ds, "ImageLaterality", "") or getattr(ds, "Laterality", "")),
        window=window,
        photometric=photometric,
    )


def read_png(path: Path) -> RawImage:
    """Read an 8- or 16-bit grayscale (or RGB, reduced to its first channel) PNG."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with Image.open(path) as im:
            im.load()
            arr = np.asarray(im)
    except Exception as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from None
    if arr.ndim == 3:
        arr = arr[..., 0]
    bits = 16 if arr.dtype.itemsize > 1 else 8
    return RawImage(pixels=arr.astype(np.float64), bits_stored=bits, photometric="PNG")


def read_image(path: Path) -> RawImage:
    """Read a DICOM (``.dcm``/``.dicom``/no suffix) or a PNG, by suffix."""
    path = Path(path)
    if path.suffix.lower() == ".png":
        return read_png(path)
    return read_dicom(path)


def to_uint8(image: RawImage, mode: str = "paper") -> np.ndarray:
    """Convert to an 8-bit display image (H, W) uint8.

    ``paper`` — the paper's conversion: linear min–max scaling of the whole image to 0…255.
    ``window`` — the DICOM VOI window (WindowCenter/WindowWidth, linear as in PS3.3 C.11.2.1.2)
    when the file has one, else min–max; clinically what a reader sees.
    """
    if mode not in TO8BIT_MODES:
        raise DataError(f"unknown 8-bit conversion {mode!r}; expected one of {TO8BIT_MODES}")
    x = image.pixels
    if mode == "window" and image.window is not None:
        center, width = image.window
        width = max(width, 1.0)
        lo, hi = center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2
    else:
        lo, hi = float(x.min()), float(x.max())
    if hi <= lo:
        return np.zeros(x.shape, dtype=np.uint8)
    scaled = (x - lo) / (hi - lo)
    return np.clip(np.rint(scaled * 255.0), 0, 255).astype(np.uint8)
