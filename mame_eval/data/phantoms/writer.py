"""Write a phantom dataset in the VinDr-Mammo layout, with ground truth and a preview sheet.

Layout (``OUT``)::

    images/<study_id>/<image_id>.dicom   DICOM MG, Explicit VR Little Endian, uncompressed
    breast-level_annotations.csv         one row per image (VinDr columns)
    finding_annotations.csv              one row per mass, or one 'No Finding' row per image
    phantom_truth.csv                    vendor, view, laterality, density, area_ratio, n_masses
    truth/<image_id>_breast.png          exact breast mask, 8-bit 0/255
    preview.png                          (preview=True) 4×4 contact sheet of the first 16 images

Design choices (all deterministic from ``seed``; the same seed gives the same bytes):

* Studies of 4 images in the order L-CC, L-MLO, R-CC, R-MLO, sharing vendor, density and
  patient; ``n`` not divisible by 4 makes the last study partial. One series per image.
* ``mixed``: studies alternate Hologic / Siemens (Hologic first). Hologic rows leave
  ``breast_density`` empty (area-only labels, like the paper's OMI-DB subset); Siemens rows
  carry ``DENSITY A``…``D``.
* Density per study by screening quotas A 10 %, B 40 %, C 40 %, D 10 % (largest remainder
  within each vendor, every letter at least once per vendor once it has ≥ 4 studies),
  shuffled — except that the first four studies take A, B, C, D once each, so a short run
  and the preview show the whole range.
* Exactly ``round(lesion_fraction · n)`` images get one mass; masses are given to both views
  of a breast where possible (same shape, size and nipple distance in CC and MLO).
  ``breast_birads`` of an image is the highest finding BI-RADS in it (masses: 3–5;
  round/oval → 3 or 4, spiculated → 4 or 5), else ``BI-RADS 1``.
* Exactly ``round(0.25 · n)`` images, drawn at random, are MONOCHROME1 (stored values
  inverted: the maximum is black); the rest MONOCHROME2.
* Split per study: exactly ``round(0.2 · n_studies)`` studies are ``test``, the rest training.
"""

from __future__ import annotations

import hashlib
import io
import math
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from mame_eval.data.phantoms.dicomfile import dicom_bytes
from mame_eval.data.phantoms.lesions import DIAMETER_RANGE, MassSpec
from mame_eval.data.phantoms.preview import preview_sheet, preview_tile
from mame_eval.data.phantoms.render import (
    DENSITIES,
    PhantomSpec,
    check_size,
    render_phantom,
)
from mame_eval.data.phantoms.vendors import VENDOR_KEYS
from mame_eval.errors import InputError
from mame_eval.io import write_bytes

POPULATIONS = ("hologic", "siemens", "mixed")
VIEW_ORDER = (("L", "CC"), ("L", "MLO"), ("R", "CC"), ("R", "MLO"))
DENSITY_SHARES = {"A": 0.1, "B": 0.4, "C": 0.4, "D": 0.1}
MONOCHROME1_SHARE = 0.25
TEST_SHARE = 0.2

BREAST_CSV = "breast-level_annotations.csv"
FINDING_CSV = "finding_annotations.csv"
TRUTH_CSV = "phantom_truth.csv"
PREVIEW_PNG = "preview.png"
BREAST_COLUMNS = ("study_id", "series_id", "image_id", "laterality", "view_position", "height",
                  "width", "breast_birads", "breast_density", "split")
FINDING_COLUMNS = ("image_id", "study_id", "series_id", "laterality", "view_position", "height",
                   "width", "breast_birads", "breast_density", "finding_categories",
                   "finding_birads", "xmin", "ymin", "xmax", "ymax", "split")
TRUTH_COLUMNS = ("image_id", "study_id", "vendor", "view", "laterality", "density",
                 "area_ratio", "n_masses")
_OUTPUTS = ("images", "truth", BREAST_CSV, FINDING_CSV, TRUTH_CSV, PREVIEW_PNG)


@dataclass
class PhantomDatasetSummary:
    """What :func:`write_phantom_dataset` wrote."""

    out: Path
    n_images: int = 0
    n_studies: int = 0
    n_masses: int = 0
    n_lesion_images: int = 0
    per_vendor: dict[str, int] = field(default_factory=dict)
    per_view: dict[str, int] = field(default_factory=dict)
    per_density: dict[str, int] = field(default_factory=dict)
    per_split: dict[str, int] = field(default_factory=dict)
    images: list[Path] = field(default_factory=list, repr=False)
    masks: list[Path] = field(default_factory=list, repr=False)
    breast_csv: Path | None = None
    finding_csv: Path | None = None
    truth_csv: Path | None = None
    preview: Path | None = None

    def __str__(self) -> str:
        def fmt(d: dict[str, int]) -> str:
            return ", ".join(f"{k} {v}" for k, v in sorted(d.items()))

        return (f"{self.n_images} images in {self.n_studies} studies "
                f"(vendor: {fmt(self.per_vendor)}; view: {fmt(self.per_view)}; "
                f"density: {fmt(self.per_density)}; split: {fmt(self.per_split)}); "
                f"{self.n_masses} masses in {self.n_lesion_images} images")


@dataclass
class ImagePlan:
    """Everything decided about one image before it is rendered."""

    index: int
    study: int
    vendor: str
    view: str
    laterality: str
    density: str
    photometric: str
    split: str
    study_id: str
    series_id: str
    image_id: str
    masses: tuple[MassSpec, ...] = ()


# ----------------------------------------------------------------------------- validation


def _check_args(out, n, seed, population, lesion_fraction, size):
    """Validate the public arguments; return (out Path, population key, (height, width))."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InputError(f"n {n!r}: expected a whole number of images ≥ 1")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed {seed!r}: expected a whole number ≥ 0")
    pop = str(population).strip().lower()
    if pop not in POPULATIONS:
        raise InputError(f"population {population!r}: expected one of {', '.join(POPULATIONS)}")
    try:
        frac = float(lesion_fraction)
    except (TypeError, ValueError):
        frac = math.nan
    if not 0.0 <= frac <= 1.0:
        raise InputError(f"lesion_fraction {lesion_fraction!r}: expected a fraction in [0, 1]")
    size = check_size(size)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder")
    return out, pop, size


# ----------------------------------------------------------------------------- planning


def _hex_id(seed: int, *parts) -> str:
    text = "|".join(["mame-eval-phantom", str(seed), *map(str, parts)])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _quotas(n_items: int, shares: dict[str, float]) -> list[str]:
    """Largest-remainder allocation of ``n_items`` to the keys of ``shares``."""
    raw = {k: n_items * s for k, s in shares.items()}
    counts = {k: int(math.floor(v)) for k, v in raw.items()}
    if n_items >= len(shares):
        for k in counts:
            counts[k] = max(counts[k], 1)
    while sum(counts.values()) > n_items:  # the minimum of 1 overshot: take from the biggest
        k = max((key for key in counts if counts[key] > 1),
                key=lambda key: (counts[key] - raw[key], counts[key]))
        counts[k] -= 1
    order = sorted(shares, key=lambda k: raw[k] - math.floor(raw[k]), reverse=True)
    i = 0
    while sum(counts.values()) < n_items:
        counts[order[i % len(order)]] += 1
        i += 1
    return [k for k in shares for _ in range(counts[k])]


def _check_diameter(mass_diameter) -> tuple[float, float]:
    """Validate a (low, high) core-diameter range, fractions of the image width."""
    try:
        lo, hi = (float(v) for v in mass_diameter)
    except (TypeError, ValueError):
        lo = hi = math.nan
    if not 0.005 <= lo <= hi <= 0.2:
        raise InputError(f"mass_diameter {mass_diameter!r}: expected (low, high) with "
                         "0.005 <= low <= high <= 0.2 (fractions of the image width)")
    return lo, hi


def _plan(n: int, seed: int, population: str, lesion_fraction: float,
          mass_diameter: tuple[float, float] = DIAMETER_RANGE) -> list[ImagePlan]:
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED]))
    n_studies = math.ceil(n / 4)
    if population == "mixed":
        vendors = [VENDOR_KEYS[s % 2] for s in range(n_studies)]
    else:
        vendors = [population] * n_studies
    # The first four studies show A, B, C, D once each (in random order), so a short run and
    # the preview cover the whole range; every other study follows its vendor's quota.
    densities: list[str] = [""] * n_studies
    for s, letter in enumerate(rng.permutation(list(DENSITY_SHARES))[:n_studies]):
        densities[s] = str(letter)
    for v in VENDOR_KEYS:
        idx = [s for s in range(n_studies) if vendors[s] == v]
        letters = _quotas(len(idx), DENSITY_SHARES)
        for s in idx:
            if densities[s]:
                taken = densities[s] if densities[s] in letters else max(
                    letters, key=letters.count)
                letters.remove(taken)
        rng.shuffle(letters)
        for s, letter in zip([s for s in idx if not densities[s]], letters, strict=True):
            densities[s] = letter
    n_test = round(TEST_SHARE * n_studies)
    test = set(rng.permutation(n_studies)[:n_test].tolist())

    plans = []
    for i in range(n):
        s = i // 4
        lat, view = VIEW_ORDER[i % 4]
        plans.append(ImagePlan(
            index=i, study=s, vendor=vendors[s], view=view, laterality=lat,
            density=densities[s], photometric="MONOCHROME2",
            split="test" if s in test else "training",
            study_id=_hex_id(seed, "study", s), series_id=_hex_id(seed, "series", i),
            image_id=_hex_id(seed, "image", i)))
    for i in rng.permutation(n)[:round(MONOCHROME1_SHARE * n)]:
        plans[int(i)].photometric = "MONOCHROME1"

    # Masses: both views of a breast where possible, exactly round(f * n) images.
    wanted = round(lesion_fraction * n)
    breasts: dict[tuple[int, str], list[int]] = {}
    for p in plans:
        breasts.setdefault((p.study, p.laterality), []).append(p.index)
    keys = list(breasts)
    chosen: list[int] = []
    for k in rng.permutation(len(keys)):
        members = breasts[keys[int(k)]]
        room = wanted - len(chosen)
        if room <= 0:
            break
        if len(members) > room:
            members = [members[int(rng.integers(len(members)))]]
        spec = MassSpec.random(rng, mass_diameter)
        for m in members:
            plans[m].masses = (spec,)
        chosen.extend(members)
    return plans


# ----------------------------------------------------------------------------- files


def _csv_bytes(columns: tuple[str, ...], rows: list[dict]) -> bytes:
    import csv

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8")


def _png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


# ----------------------------------------------------------------------------- entry point


def write_phantom_dataset(out: Path, n: int, seed: int = 0, population: str = "mixed",
                          lesion_fraction: float = 0.3, size: tuple[int, int] = (1024, 832),
                          preview: bool = False, progress: Callable[[int], None] | None = None,
                          overwrite: bool = False,
                          mass_diameter: tuple[float, float] = DIAMETER_RANGE,
                          ) -> PhantomDatasetSummary:
    """Render ``n`` phantom mammograms into ``out`` as a VinDr-Mammo dataset (see module doc).

    ``progress`` is called with the number of images written so far after each image.
    ``out`` must be absent or empty unless ``overwrite`` is set, which first deletes only the
    outputs of a previous run (``images/``, ``truth/``, the CSVs and ``preview.png``).

    Raises:
        InputError: a bad argument (n < 1, seed < 0, unknown population, lesion_fraction
            outside [0, 1], size not portrait or smaller than 128 pixels, mass_diameter not
            0.005 <= low <= high <= 0.2), or ``out`` is a
            file / a non-empty folder without ``overwrite``.
    """
    out, population, size = _check_args(out, n, seed, population, lesion_fraction, size)
    n, seed = int(n), int(seed)
    mass_diameter = _check_diameter(mass_diameter)
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise InputError(f"{out}: folder is not empty; choose a new folder or pass "
                             "overwrite=True (--overwrite) to replace a previous phantom dataset")
        for name in _OUTPUTS:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    out.mkdir(parents=True, exist_ok=True)

    plans = _plan(n, seed, population, float(lesion_fraction), mass_diameter)
    summary = PhantomDatasetSummary(out=out, n_studies=math.ceil(n / 4))
    breast_rows: list[dict] = []
    finding_rows: list[dict] = []
    truth_rows: list[dict] = []
    tiles: list[tuple[Image.Image, str]] = []
    tile_h = min(size[0], 320)
    counts: dict[str, Counter] = {k: Counter() for k in ("vendor", "view", "density", "split")}
    for plan in plans:
        spec = PhantomSpec(vendor=plan.vendor, view=plan.view, laterality=plan.laterality,
                           density=plan.density, size=size, photometric=plan.photometric,
                           masses=plan.masses)
        rng = np.random.default_rng(np.random.SeedSequence([seed, 1, plan.index]))
        ph = render_phantom(spec, rng)
        dicom_path = out / "images" / plan.study_id / f"{plan.image_id}.dicom"
        mask_path = out / "truth" / f"{plan.image_id}_breast.png"
        write_bytes(dicom_path, dicom_bytes(plan, ph, seed))
        write_bytes(mask_path, _png_bytes(ph.breast_mask.astype(np.uint8) * 255))
        summary.images.append(dicom_path)
        summary.masks.append(mask_path)

        birads = max((m.birads for m in ph.masses), default=1)
        common = {
            "study_id": plan.study_id, "series_id": plan.series_id, "image_id": plan.image_id,
            "laterality": plan.laterality, "view_position": plan.view,
            "height": size[0], "width": size[1], "breast_birads": f"BI-RADS {birads}",
            "breast_density": "" if plan.vendor == "hologic" else f"DENSITY {plan.density}",
            "split": plan.split,
        }
        breast_rows.append(dict(common))
        if ph.masses:
            for m in ph.masses:
                finding_rows.append({**common, "finding_categories": "['Mass']",
                                     "finding_birads": f"BI-RADS {m.birads}",
                                     **{k: f"{v:.2f}" for k, v in
                                        zip(("xmin", "ymin", "xmax", "ymax"), m.box,
                                            strict=True)}})
        else:
            finding_rows.append({**common, "finding_categories": "['No Finding']",
                                 "finding_birads": "", "xmin": "", "ymin": "", "xmax": "",
                                 "ymax": ""})
        truth_rows.append({"image_id": plan.image_id, "study_id": plan.study_id,
                           "vendor": plan.vendor, "view": plan.view,
                           "laterality": plan.laterality, "density": plan.density,
                           "area_ratio": f"{ph.area_ratio:.6f}", "n_masses": len(ph.masses)})
        for key, value in (("vendor", plan.vendor), ("view", plan.view),
                           ("density", plan.density), ("split", plan.split)):
            counts[key][value] += 1
        summary.n_masses += len(ph.masses)
        summary.n_lesion_images += bool(ph.masses)
        if preview and len(tiles) < 16:
            tiles.append(preview_tile(ph, tile_h))
        summary.n_images += 1
        if progress is not None:
            progress(summary.n_images)

    summary.breast_csv = out / BREAST_CSV
    summary.finding_csv = out / FINDING_CSV
    summary.truth_csv = out / TRUTH_CSV
    write_bytes(summary.breast_csv, _csv_bytes(BREAST_COLUMNS, breast_rows))
    write_bytes(summary.finding_csv, _csv_bytes(FINDING_COLUMNS, finding_rows))
    write_bytes(summary.truth_csv, _csv_bytes(TRUTH_COLUMNS, truth_rows))
    if preview:
        summary.preview = out / PREVIEW_PNG
        write_bytes(summary.preview, preview_sheet(tiles))
    summary.per_vendor = dict(counts["vendor"])
    summary.per_view = dict(counts["view"])
    summary.per_density = {d: counts["density"][d] for d in DENSITIES if counts["density"][d]}
    summary.per_split = dict(counts["split"])
    return summary
