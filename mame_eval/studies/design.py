"""Reader-study design: balanced sampling, blinding of the case images, reader orders, tokens.

Blinding
--------
A reader must not be able to tell a real case from a synthetic one by anything but the pixels.
:func:`blind_image` therefore turns every input (PNG/JPEG/TIFF/BMP, any mode: RGB, L, 16-bit,
palette, with alpha, EXIF-rotated, with text/ICC/EXIF chunks) into the same thing: an 8-bit
grayscale PNG of one common size, written *uncompressed* (deflate level 0, so every case file
has exactly the same byte size whatever its content) with no chunk but IHDR, IDAT and IEND.
Case names are random hex strings of one length, drawn independently of the truth; files are
written in name order (random with respect to the truth) and get one common modification time.

* Grayscale conversion: RGB(A) through ITU-R 601 luma (alpha composited onto black); images of
  more than 8 bits (16-bit PNG/TIFF, 32-bit int, float) are min-max scaled to 0-255 per image,
  as the paper did for its 16-bit mammograms.
* Geometry: every case is centre-cropped to the common aspect ratio and resized (Lanczos) to the
  common size. ``create_study`` serves cases at the size they are created at and refuses to pick
  that size itself when the sampled images differ in native size: resampling only one class
  can itself leave a trace (the blinding audit, :mod:`mame_eval.studies.audit`, measures it),
  so the coordinator chooses explicitly (``--size``). :func:`choose_geometry` alone still
  defaults to the smallest size (or the square of the smallest side), never enlarging.

Tokens are drawn with :mod:`secrets` (never from the seed); only their SHA-256 is stored.
Everything else is a deterministic function of the seed: same inputs and seed, same bytes.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mame_eval.errors import StudyError

__all__ = [
    "IMAGE_SUFFIXES",
    "BlindedCase",
    "Geometry",
    "SampledCase",
    "blind_image",
    "case_names",
    "check_duplicates",
    "choose_geometry",
    "check_reader_names",
    "hash_token",
    "image_size",
    "list_images",
    "new_token",
    "reader_orders",
    "sample_cases",
    "to_gray8",
    "write_case_png",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
#: length of a case name in hex digits (64 random bits)
CASE_NAME_HEX = 16
_READER_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-@")


@dataclass(frozen=True)
class SampledCase:
    """An input image drawn into the study; ``truth`` is 1 for real, 0 for synthetic."""

    source: Path
    truth: int


@dataclass(frozen=True)
class BlindedCase:
    """A case written to ``cases/``: opaque ``case`` name (file stem), truth and source."""

    case: str
    truth: int
    source: Path


@dataclass(frozen=True)
class Geometry:
    """Common output size (width, height) and the notes about how it was reached."""

    width: int
    height: int
    notes: tuple[str, ...] = field(default=())


# --------------------------------------------------------------------------------------------
# inputs and sampling
# --------------------------------------------------------------------------------------------


def list_images(folder: Path | str, option: str) -> list[Path]:
    """Image files directly inside ``folder`` (sorted by name).

    Raises
    ------
    StudyError
        ``folder`` missing, not a folder, or holding no image file.
    """
    folder = Path(folder)
    if not folder.exists():
        raise StudyError(f"{option} {folder}: folder not found")
    if not folder.is_dir():
        raise StudyError(f"{option} {folder}: not a folder")
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                   and not p.name.startswith("."))
    if not files:
        hint = ""
        if (folder / "healthy").is_dir():
            hint = f" (a prepared dataset keeps its images in {folder / 'healthy'})"
        raise StudyError(
            f"{option} {folder}: no image files ({', '.join(IMAGE_SUFFIXES)}) in the folder{hint}")
    return files


def sample_cases(real: Sequence[Path], synthetic: Sequence[Path], n: int, ratio: float,
                 rng: np.random.Generator) -> list[SampledCase]:
    """Draw ``round(n * ratio)`` real and ``n - that`` synthetic images without replacement.

    Raises
    ------
    StudyError
        ``n``/``ratio`` out of range, fewer than 2 cases of a class (the AUROC variance needs
        2 of each), or a folder holding fewer images than asked for.
    """
    if isinstance(n, bool) or int(n) != n or n < 4:
        raise StudyError(f"--n {n}: expected a whole number of cases >= 4")
    if not 0.0 < float(ratio) < 1.0:
        raise StudyError(f"--ratio {ratio}: expected the fraction of real cases, strictly "
                         "between 0 and 1")
    n = int(n)
    n_real = int(round(n * float(ratio)))
    n_syn = n - n_real
    if n_real < 2 or n_syn < 2:
        raise StudyError(
            f"--n {n} --ratio {ratio} gives {n_real} real and {n_syn} synthetic cases; "
            "need at least 2 of each for an AUROC with a confidence interval")
    for option, pool, k in (("--real", real, n_real), ("--synthetic", synthetic, n_syn)):
        if len(pool) < k:
            folder = Path(pool[0]).parent if pool else "folder"
            raise StudyError(
                f"{option} {folder}: holds {len(pool)} images but the study needs {k} "
                f"(--n {n} --ratio {ratio})")
    pick_real = rng.choice(len(real), size=n_real, replace=False)
    pick_syn = rng.choice(len(synthetic), size=n_syn, replace=False)
    cases = [SampledCase(Path(real[i]), 1) for i in sorted(pick_real)]
    cases += [SampledCase(Path(synthetic[i]), 0) for i in sorted(pick_syn)]
    return cases


def check_duplicates(cases: Sequence[SampledCase]) -> None:
    """Refuse a study in which one image (same bytes) would appear twice."""
    seen: dict[str, SampledCase] = {}
    for c in cases:
        digest = hashlib.sha256(c.source.read_bytes()).hexdigest()
        if digest in seen:
            other = seen[digest]
            raise StudyError(
                f"{c.source} and {other.source} are the same image (identical bytes); "
                "remove duplicates so that no case appears twice or under both truths")
        seen[digest] = c


def _numeric(name: str) -> bool:
    try:
        float(name)
    except ValueError:
        return False
    return True


def case_names(n: int, rng: np.random.Generator) -> list[str]:
    """``n`` distinct random names of :data:`CASE_NAME_HEX` hex digits.

    Names a CSV reader or spreadsheet would take for a number (all digits, or digits around
    one ``e``) are drawn again, so that exported tables keep every name intact.
    """
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < n:
        name = rng.bytes(CASE_NAME_HEX // 2).hex()
        if name not in seen and not _numeric(name):
            seen.add(name)
            names.append(name)
    return names


def check_reader_names(readers: Sequence[str]) -> list[str]:
    """Strip and validate reader names: 1-64 of ``A-Z a-z 0-9 _ . - @``, distinct, >= 1."""
    names = [str(r).strip() for r in readers]
    names = [r for r in names if r]
    if not names:
        raise StudyError("--readers: name at least one reader, e.g. --readers alice,bob,carol")
    for r in names:
        bad = sorted(set(r) - _READER_NAME_CHARS)
        if len(r) > 64 or bad:
            raise StudyError(
                f"--readers: reader name {r!r} must be 1-64 characters of letters, digits, "
                f"'_', '.', '-' or '@'" + (f" (found {''.join(bad)!r})" if bad else ""))
    dup = sorted({r for r in names if names.count(r) > 1})
    if dup:
        raise StudyError(f"--readers: reader name {dup[0]!r} is given twice")
    return names


def reader_orders(cases: Sequence[str], readers: Sequence[str], seed: int) -> dict[str, list[str]]:
    """A seeded random case order per reader, different between readers (when n > 2)."""
    base = sorted(cases)
    out: dict[str, list[str]] = {}
    used: set[tuple[str, ...]] = set()
    for i, reader in enumerate(readers):
        rng = np.random.default_rng([int(seed), 7919, i])
        while True:
            order = [base[j] for j in rng.permutation(len(base))]
            if tuple(order) not in used or len(base) <= 2:
                break
        used.add(tuple(order))
        out[reader] = order
    return out


# --------------------------------------------------------------------------------------------
# tokens
# --------------------------------------------------------------------------------------------


def new_token() -> str:
    """A fresh random URL-safe token (192 bits), never derived from the study seed."""
    return secrets.token_urlsafe(24)


def hash_token(token: str) -> str:
    """SHA-256 hex digest of a token: the only form in which a token is stored."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------------------------
# blinding
# --------------------------------------------------------------------------------------------


def _open(path: Path) -> Image.Image:
    try:
        im = Image.open(path)
        im.load()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise StudyError(f"{path}: not a readable image ({exc})") from None
    try:
        return ImageOps.exif_transpose(im)
    except Exception:  # a broken EXIF block must not stop the study: keep the pixels as stored
        return im


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image as displayed (EXIF orientation applied)."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            orientation = im.getexif().get(0x0112, 1)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise StudyError(f"{path}: not a readable image ({exc})") from None
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def to_gray8(im: Image.Image, source: Path | str = "image") -> np.ndarray:
    """Any PIL image -> uint8 (H, W) grayscale array (see the module docstring)."""
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        if arr.ndim != 2 or not np.isfinite(arr).all():
            raise StudyError(f"{source}: {mode} image with non-finite pixel values")
        lo, hi = float(arr.min()), float(arr.max())
        if hi <= lo:
            return np.zeros(arr.shape, dtype=np.uint8)
        return np.rint((arr - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        im = Image.alpha_composite(black, rgba)
    gray = im.convert("L")
    return np.asarray(gray, dtype=np.uint8).copy()


def choose_geometry(sizes: Sequence[tuple[int, int]],
                    size: tuple[int, int] | None = None) -> Geometry:
    """Common (width, height) for all cases.

    ``size`` (width, height) forces it; otherwise the smallest input size when all inputs share
    one aspect ratio (within 1 %), else the square of the smallest side.
    """
    if not sizes:
        raise StudyError("no images to size")
    notes: list[str] = []
    if size is not None:
        w, h = (int(v) for v in size)
        if not (16 <= w <= 8192 and 16 <= h <= 8192):
            raise StudyError(f"--size {h}x{w}: expected 16 … 8192 pixels per side")
    elif len(set(sizes)) == 1:
        w, h = sizes[0]
    else:
        aspects = [sw / sh for sw, sh in sizes]
        if max(aspects) / min(aspects) <= 1.01:
            w, h = min(sizes, key=lambda s: s[0] * s[1])
        else:
            side = min(min(s) for s in sizes)
            w = h = side
            notes.append(
                f"the images have different aspect ratios; every case was centre-cropped to "
                f"a {side}x{side} square (pass --size HxW to choose another size)")
    n_resized = sum(1 for s in sizes if s != (w, h))
    n_enlarged = sum(1 for sw, sh in sizes if sw < w or sh < h)
    if n_resized:
        notes.append(f"{n_resized} of {len(sizes)} images were resampled to {h}x{w} (HxW); "
                     "resampling only one source can leave a visible trace")
    if n_enlarged:
        notes.append(f"{n_enlarged} images were enlarged to {h}x{w}; enlarged images look "
                     "blurred, which may tell readers their source")
    return Geometry(width=w, height=h, notes=tuple(notes))


def blind_image(source: Path, geometry: Geometry) -> np.ndarray:
    """Read ``source`` and return the blinded uint8 (height, width) grayscale pixels."""
    im = _open(source)
    gray = Image.fromarray(to_gray8(im, source))
    target = (geometry.width, geometry.height)
    if gray.size != target:
        gray = ImageOps.fit(gray, target, method=Image.Resampling.LANCZOS, centering=(0.5, 0.5))
    return np.asarray(gray, dtype=np.uint8)


def write_case_png(path: Path, pixels: np.ndarray, mtime: float) -> None:
    """Write an 8-bit grayscale PNG with only IHDR/IDAT/IEND, uncompressed, fixed mtime."""
    if pixels.dtype != np.uint8 or pixels.ndim != 2:
        raise StudyError(f"{path}: case pixels must be a 2-D uint8 array")
    Image.fromarray(pixels).save(path, format="PNG", compress_level=0)
    os.utime(path, (mtime, mtime))
