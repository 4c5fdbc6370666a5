"""Listing and reading image folders: the one place that decides what counts as an image.

Every command that takes a folder of images (``diversity --images``, ``fid``, ``explain``,
``memorization``, ``study create``) lists it with :func:`list_images` and reads each file with
:func:`load_rgb` or :func:`load_gray`, so they agree on which files they saw and in what order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from mame_eval.errors import InputError

__all__ = ["IMAGE_SUFFIXES", "image_files", "list_images", "load_gray", "load_rgb"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def image_files(folder: Path | str) -> list[Path]:
    """Image files directly in ``folder`` (hidden files skipped), sorted by name; may be empty."""
    return sorted(p for p in Path(folder).iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not p.name.startswith("."))


def list_images(folder: Path | str, what: str | None = None) -> list[Path]:
    """Image files directly in ``folder``, sorted by name; at least one.

    Args:
        folder: the folder.
        what: how the caller's user names it (``"--real"``), put in front of the error.

    Raises:
        InputError: the folder is missing, not a folder or holds no image.
    """
    folder = Path(folder)
    label = f"{what} {folder}" if what else str(folder)
    if not folder.exists():
        raise InputError(f"{label}: folder not found")
    if not folder.is_dir():
        raise InputError(f"{label}: not a folder")
    files = image_files(folder)
    if not files:
        hint = ""
        if (folder / "healthy").is_dir():
            hint = f" (a prepared dataset keeps its images in {folder / 'healthy'})"
        elif (folder / "images").is_dir():
            hint = f" (its images are in {folder / 'images'})"
        raise InputError(f"{label}: no images ({', '.join(IMAGE_SUFFIXES)}){hint}")
    return files


def _read(path: Path, mode: str) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert(mode))
    except Exception as exc:
        raise InputError(f"{path}: not a readable image ({exc})") from None


def load_rgb(path: Path | str) -> np.ndarray:
    """An image as uint8 ``(H, W, 3)``: gray replicated, alpha dropped."""
    return _read(Path(path), "RGB")


def load_gray(path: Path | str) -> np.ndarray:
    """An image as uint8 ``(H, W)`` (RGB converted with PIL's ``L``)."""
    return _read(Path(path), "L")
