"""``mame-eval prepare``: a raw VinDr-style dataset → the prepared imagefolder (DESIGN §1, §4).

The paper's pipeline, per image::

    read (DICOM via pydicom, MONOCHROME1 inverted; or 8/16-bit PNG)
    → 8-bit (``paper``: min–max; ``window``: the DICOM VOI window)
    → mirror right-laterality images, so every breast lies against the left edge
    → resize the shorter side to ``size`` (bilinear) and centre-crop ``size × size``
      (or ``crop="pad"``: the longer side to ``size`` and a centred letterbox — the whole breast)
    → breast mask by intensity threshold → ``area_ratio`` → small / medium / big
    → gray replicated into RGB → PNG, with a prompt from :mod:`mame_eval.prompts`

Healthy images (only ``No Finding`` rows) go to ``healthy/``; each selected finding (``Mass``
by default) with a box becomes one inpainting sample in ``lesion/`` with a 0/255 box mask. A box
goes through exactly the same mirror/resize/crop as the pixels; one that leaves the crop is
reported and skipped, never clipped.

Resumable: each finished image is appended to ``.prepare-journal.jsonl`` as soon as it is done;
a rerun with the same settings skips those images and rewrites the metadata and report.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mame_eval import __version__
from mame_eval.data.dicom import TO8BIT_MODES, read_image, to_uint8
from mame_eval.data.preprocess import (
    BREAST_THRESHOLD,
    CROP_MODES,
    Geometry,
    area_ratio,
    box_mask,
    breast_mask,
    breast_side,
    to_rgb,
)
from mame_eval.data.vindr import ImageRecord, read_vindr
from mame_eval.errors import DataError, MameError
from mame_eval.io import read_jsonl, save_png, write_json, write_jsonl
from mame_eval.prompts import (
    INPAINT_PROMPT,
    Family,
    Prompt,
    Vendor,
    View,
    area_from_ratio,
    density_from_birads,
)

FAMILIES = ("auto", "hologic", "siemens", "fusion")
JOURNAL = ".prepare-journal.jsonl"


@dataclass(frozen=True)
class PrepareSettings:
    """Settings of one preparation; a rerun into the same folder must use the same ones."""

    size: int = 512
    crop: str = "center"
    family: str = "auto"
    to8bit: str = "paper"
    findings: tuple[str, ...] = ("Mass",)
    threshold: int = BREAST_THRESHOLD

    def __post_init__(self) -> None:
        if self.crop not in CROP_MODES:
            raise DataError(f"crop {self.crop!r}: expected one of {', '.join(CROP_MODES)}",
                            param="crop")
        if self.family not in FAMILIES:
            raise DataError(f"family {self.family!r}: expected one of {', '.join(FAMILIES)}",
                            param="family")
        if self.to8bit not in TO8BIT_MODES:
            raise DataError(f"to8bit {self.to8bit!r}: expected one of {', '.join(TO8BIT_MODES)}",
                            param="to8bit")
        if not 64 <= self.size <= 4096:
            raise DataError(f"size {self.size}: expected 64 … 4096 pixels", param="size")
        if not 0 <= self.threshold < 255:
            raise DataError(f"threshold {self.threshold}: expected 0 … 254", param="threshold")
        if not self.findings:
            raise DataError("findings: name at least one finding category (e.g. Mass)",
                            param="findings")


@dataclass
class PrepareReport:
    """What :func:`prepare_dataset` did; also written as ``prepare_report.json``."""

    settings: dict
    family: str
    counts: dict
    skipped: list[dict] = field(default_factory=list)
    excluded: list[dict] = field(default_factory=list)
    boxes_skipped: list[dict] = field(default_factory=list)
    vendors: dict = field(default_factory=dict)
    wall_time_s: float = 0.0
    version: str = __version__

    @property
    def n_prepared(self) -> int:
        return self.counts["healthy"] + self.counts["lesion_samples"]


def normalise_vendor(manufacturer: str) -> str:
    """DICOM Manufacturer text → ``"hologic"`` / ``"siemens"`` / ``""`` (unknown)."""
    text = manufacturer.lower()
    for vendor in Vendor:
        if vendor.value in text:
            return vendor.value
    return ""


def _scan_vendor(record: ImageRecord) -> str:
    if record.vendor:
        return normalise_vendor(record.vendor)
    if record.path is None or record.path.suffix.lower() == ".png":
        return ""
    import pydicom

    try:
        ds = pydicom.dcmread(record.path, stop_before_pixels=True, specific_tags=["Manufacturer"])
    except Exception:
        return ""
    return normalise_vendor(str(getattr(ds, "Manufacturer", "")))


def resolve_family(records: list[ImageRecord], family: str) -> Family:
    """``auto``: one vendor → its own grammar; both (or unknown) → fusion.

    With no vendor information at all, density labels decide (siemens) else area (hologic).
    """
    if family != "auto":
        return Family.parse(family)
    vendors = {_scan_vendor(r) for r in records if not r.problem}
    if vendors == {"hologic"}:
        return Family.HOLOGIC
    if vendors == {"siemens"}:
        return Family.SIEMENS
    if vendors == {""}:
        labelled = any(r.density for r in records)
        return Family.SIEMENS if labelled else Family.HOLOGIC
    return Family.FUSION


def _healthy_prompt(family: Family, view: View, vendor: str, density, area) -> Prompt:
    """The prompt of a healthy image; raises DataError when a needed label is missing.

    Fusion prompts name one attribute per vendor, exactly as the paper's fusion model was
    trained: Hologic images their area (OMI-H has no density labels), Siemens images their
    density (VinDr's labels).
    """
    if family is Family.HOLOGIC:
        return Prompt(family, view=view, area=area)
    if family is Family.SIEMENS:
        if density is None:
            raise DataError("no breast_density label (needed for siemens prompts)")
        return Prompt(family, view=view, density=density)
    if vendor == "hologic":
        return Prompt(family, view=view, vendor=vendor, area=area)
    if vendor == "siemens":
        if density is None:
            raise DataError("no breast_density label (needed for siemens fusion prompts)")
        return Prompt(family, view=view, vendor=vendor, density=density)
    raise DataError("unknown vendor (Manufacturer tag is neither Hologic nor Siemens)")


def _classify(record: ImageRecord, findings: tuple[str, ...]) -> tuple[str, list]:
    """``("healthy", [])``, ``("lesion", [boxes])`` or ``("excluded", reason)``."""
    wanted = {f.lower() for f in findings}
    selected, other = [], set()
    for finding in record.findings:
        cats = {c for c in finding.categories if c.lower() != "no finding"}
        if not cats:
            continue
        if {c.lower() for c in cats} & wanted and finding.box is not None:
            selected.append(finding.box)
        else:
            other |= cats
    if selected:
        return "lesion", selected
    if other:
        return "excluded", f"findings not selected: {', '.join(sorted(other))}"
    return "healthy", []


def prepare_one(record: ImageRecord, settings: PrepareSettings, family: Family,
                out: Path) -> dict:
    """Prepare one raw image; returns its journal entry (never raises for bad data)."""
    entry: dict = {"image_id": record.image_id,
                   "file": str(record.path) if record.path else "", "healthy": None,
                   "lesion": [], "boxes_skipped": []}
    try:
        if record.problem:
            raise DataError(record.problem)
        kind, boxes = _classify(record, settings.findings)
        if kind == "excluded":
            entry.update(status="excluded", reason=boxes)
            return entry
        view = View.parse(record.view) if record.view else None
        density = density_from_birads(record.density) if record.density else None
        raw = read_image(record.path)
        view = view or (View.parse(raw.view) if raw.view else None)
        if view is None:
            raise DataError("no view position (CC/MLO) in the CSV or the DICOM")
        vendor = normalise_vendor(record.vendor or raw.manufacturer)
        gray = to_uint8(raw, settings.to8bit)
        laterality = (record.laterality or raw.laterality).upper()
        laterality_source = "label"
        if laterality not in ("L", "R"):
            laterality, laterality_source = breast_side(gray), "intensity"
        geometry = Geometry(gray.shape[0], gray.shape[1], flip=laterality == "R",
                            size=settings.size, crop=settings.crop)
        image = geometry.apply_image(gray)
        mask = breast_mask(image, settings.threshold)
        ratio = area_ratio(mask)
        area = area_from_ratio(ratio)
        fields = {
            "vendor": vendor or None, "view": view.value, "laterality": laterality,
            "laterality_source": laterality_source, "flipped": geometry.flip,
            "density": density.value if density else None,
            "birads_density": density.birads if density else None,
            "area": area.value, "area_ratio": round(ratio, 6), "source_id": record.image_id,
        }
        rgb = to_rgb(image)
        if kind == "healthy":
            prompt = _healthy_prompt(family, view, vendor, density, area)
            name = f"{record.image_id}.png"
            save_png(out / "healthy" / name, rgb)
            entry["healthy"] = {"file_name": name, "prompt": prompt.render(), **fields}
            entry["status"] = "healthy"
            return entry
        for k, raw_box in enumerate(boxes):
            mapped = geometry.apply_box(raw_box)
            if not geometry.box_inside(mapped):
                entry["boxes_skipped"].append({
                    "image_id": record.image_id, "box": list(raw_box),
                    "reason": f"box {[round(v, 1) for v in mapped]} leaves the "
                              f"{settings.size}×{settings.size} {settings.crop} crop"})
                continue
            sample = f"{record.image_id}_m{k}"
            save_png(out / "lesion" / "images" / f"{sample}.png", rgb)
            save_png(out / "lesion" / "masks" / f"{sample}.png", box_mask(mapped, settings.size))
            entry["lesion"].append({
                "file_name": f"images/{sample}.png", "mask_file": f"masks/{sample}.png",
                "prompt": INPAINT_PROMPT, "box": [round(v, 2) for v in mapped], **fields})
        entry["status"] = "lesion" if entry["lesion"] else "excluded"
        if not entry["lesion"]:
            entry["reason"] = "every lesion box leaves the crop"
        return entry
    except MameError as exc:
        entry.update(status="skipped", reason=str(exc))
        return entry
    except Exception as exc:  # unexpected failure of one image must not stop the run
        entry.update(status="skipped", reason=f"{type(exc).__name__}: {exc}")
        return entry


def _outputs_exist(entry: dict, out: Path) -> bool:
    if entry.get("healthy"):
        return (out / "healthy" / entry["healthy"]["file_name"]).is_file()
    return all((out / "lesion" / s["file_name"]).is_file() and
               (out / "lesion" / s["mask_file"]).is_file() for s in entry.get("lesion", []))


def _load_journal(out: Path, settings: dict) -> dict[str, dict]:
    path = out / JOURNAL
    if not path.is_file():
        return {}
    rows = read_jsonl(path)
    if not rows or rows[0].get("settings") != settings:
        previous = rows[0].get("settings") if rows else None
        raise DataError(
            f"{out} was prepared with other settings ({previous}); use a new output folder "
            "or delete it to start over"
        )
    done = {}
    for row in rows[1:]:
        if row.get("status") != "skipped" and _outputs_exist(row, out):
            done[row["image_id"]] = row
    return done


def prepare_dataset(raw: Path, out: Path, settings: PrepareSettings | None = None,
                    workers: int = 1,
                    progress: Callable[[int, int], None] | None = None) -> PrepareReport:
    """Prepare a raw VinDr-style dataset into ``out`` (see the module docstring).

    Args:
        raw: dataset root (``images/``, ``breast-level_annotations.csv``, …).
        out: output folder (created; resumed when it holds a journal of the same settings).
        settings: :class:`PrepareSettings`; defaults reproduce the paper.
        workers: processes; 1 runs in this process.
        progress: called as ``progress(done, total)`` after each image.

    Returns:
        The :class:`PrepareReport` (also written to ``out/prepare_report.json``). Check
        :attr:`PrepareReport.n_prepared`: zero means nothing could be prepared.

    Raises:
        DataError: the input is unusable as a whole (no annotations, missing columns, …).
    """
    start = time.perf_counter()
    settings = settings or PrepareSettings()
    if workers < 1:
        raise DataError(f"workers {workers}: expected at least 1", param="workers")
    raw, out = Path(raw), Path(out)
    try:
        records = read_vindr(raw)
    except DataError as exc:
        # Unusable as a whole: nothing is prepared, but the report says why (a complete file).
        if raw.is_dir() and (out.is_dir() or not out.exists()):
            write_json(out / "prepare_report.json", {
                "error": str(exc), "settings": {**asdict(settings),
                                                "findings": list(settings.findings)},
                "counts": {"records": 0, "healthy": 0, "lesion_samples": 0}})
        raise
    family = resolve_family(records, settings.family)
    settings_dict = {**asdict(settings), "findings": list(settings.findings),
                     "family": family.value}
    out.mkdir(parents=True, exist_ok=True)
    done = _load_journal(out, settings_dict)
    todo = [r for r in records if r.image_id not in done]
    total = len(records)
    if progress:
        progress(len(done), total)

    journal_path = out / JOURNAL
    fresh = not journal_path.is_file()
    with open(journal_path, "a", encoding="utf-8") as journal:
        if fresh:
            journal.write(json.dumps({"settings": settings_dict}) + "\n")
            journal.flush()
        for entry in _run(todo, settings, family, out, workers):
            done[entry["image_id"]] = entry
            journal.write(json.dumps(entry) + "\n")
            journal.flush()
            if progress:
                progress(len(done), total)

    return _finish(out, records, done, settings_dict, family, time.perf_counter() - start)


def _run(todo: list[ImageRecord], settings: PrepareSettings, family: Family, out: Path,
         workers: int):
    if workers == 1 or len(todo) <= 1:
        for record in todo:
            yield prepare_one(record, settings, family, out)
        return
    # spawn: safe whatever threads the parent runs (progress bars, torch), same on every OS.
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        chunk = max(1, min(16, len(todo) // (workers * 8)))
        n = len(todo)
        yield from pool.map(prepare_one, todo, [settings] * n, [family] * n, [out] * n,
                            chunksize=chunk)


def _finish(out: Path, records: list[ImageRecord], done: dict[str, dict], settings: dict,
            family: Family, wall: float) -> PrepareReport:
    order = {r.image_id: i for i, r in enumerate(records)}
    entries = sorted(done.values(), key=lambda e: order.get(e["image_id"], len(order)))
    healthy = sorted((e["healthy"] for e in entries if e.get("healthy")),
                     key=lambda m: m["file_name"])
    lesion = sorted((s for e in entries for s in e.get("lesion", [])),
                    key=lambda m: m["file_name"])
    write_jsonl(out / "healthy" / "metadata.jsonl", healthy)
    write_jsonl(out / "lesion" / "metadata.jsonl", lesion)
    status = Counter(e["status"] for e in entries)
    report = PrepareReport(
        settings=settings,
        family=family.value,
        counts={
            "records": len(records),
            "healthy": len(healthy),
            "lesion_images": status["lesion"],
            "lesion_samples": len(lesion),
            "excluded": status["excluded"],
            "skipped": status["skipped"],
            "boxes_skipped": sum(len(e.get("boxes_skipped", [])) for e in entries),
        },
        skipped=[{"image_id": e["image_id"], "file": e["file"], "reason": e["reason"]}
                 for e in entries if e["status"] == "skipped"],
        excluded=[{"image_id": e["image_id"], "reason": e["reason"]}
                  for e in entries if e["status"] == "excluded"],
        boxes_skipped=[b for e in entries for b in e.get("boxes_skipped", [])],
        vendors=dict(Counter((m.get("vendor") or "unknown") for m in healthy + lesion)),
        wall_time_s=round(wall, 3),
    )
    write_json(out / "prepare_report.json", asdict(report))
    return report
