"""Adapter for the VinDr-Mammo layout (DESIGN §4): CSV annotations → one record per image.

Layout::

    RAW/images/<study_id>/<image_id>.dicom      (.dcm and .png are accepted too)
    RAW/breast-level_annotations.csv            study_id, image_id, laterality, view_position,
                                                [breast_density], … (one row per image)
    RAW/finding_annotations.csv                 image_id, finding_categories, xmin … ymax
                                                (optional; without it every image is healthy)

Other datasets get an adapter that yields the same :class:`ImageRecord` objects.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from mame_eval.errors import DataError

# breast_density may be absent: a dataset labelled with breast area only (like OMI-H, whose
# prompts never name density) needs no density column; siemens prompts then report each image.
BREAST_COLUMNS = ("study_id", "image_id", "laterality", "view_position")
FINDING_COLUMNS = ("image_id", "finding_categories", "xmin", "ymin", "xmax", "ymax")
IMAGE_SUFFIXES = (".dicom", ".dcm", ".png")


@dataclass
class Finding:
    """One annotated finding: its categories and box ``(x0, y0, x1, y1)`` in raw pixels."""

    categories: tuple[str, ...]
    box: tuple[float, float, float, float] | None


@dataclass
class ImageRecord:
    """Everything the preparation needs to know about one raw image (before reading pixels).

    ``density`` is the raw label text (e.g. ``"DENSITY C"``) or ``""`` when not labelled;
    ``problem`` is set when the record is unusable (the image is then skipped and reported).
    """

    image_id: str
    study_id: str
    path: Path | None
    laterality: str = ""
    view: str = ""
    density: str = ""
    vendor: str = ""
    findings: list[Finding] = field(default_factory=list)
    problem: str = ""


def _read_csv(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as exc:
        raise DataError(f"{path}: not a readable CSV ({exc})") from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(frame.columns)}"
        )
    return frame


def parse_categories(text: str) -> tuple[str, ...]:
    """``"['Mass', 'Suspicious Calcification']"`` (VinDr's repr) or ``"Mass;Asymmetry"``."""
    text = text.strip()
    if text.startswith("["):
        try:
            values = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise DataError(f"cannot read finding_categories {text!r}") from None
        return tuple(str(v).strip() for v in values)
    return tuple(v.strip() for v in text.replace(";", ",").split(",") if v.strip())


def _box(row: pd.Series) -> tuple[float, float, float, float] | None:
    values = [row[c].strip() for c in ("xmin", "ymin", "xmax", "ymax")]
    if not any(values):
        return None
    try:
        x0, y0, x1, y1 = (float(v) for v in values)
    except ValueError:
        raise DataError(f"box {values} is not numeric") from None
    if not (x1 > x0 and y1 > y0):
        raise DataError(f"box {values} is empty (need xmax > xmin and ymax > ymin)")
    return (x0, y0, x1, y1)


def find_image(root: Path, study_id: str, image_id: str) -> Path | None:
    for suffix in IMAGE_SUFFIXES:
        candidate = root / "images" / study_id / f"{image_id}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def read_vindr(root: Path) -> list[ImageRecord]:
    """Read the annotations of a VinDr-style dataset into records (one per image).

    Raises:
        DataError: the folder or its breast-level CSV is missing, or a needed column is absent
            — the input is unusable as a whole. Problems of single images are recorded in
            :attr:`ImageRecord.problem` instead, so the rest can continue.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    breast_csv = root / "breast-level_annotations.csv"
    if not breast_csv.is_file():
        raise DataError(
            f"{root}: no breast-level_annotations.csv; expected the VinDr-Mammo layout "
            "(images/<study_id>/<image_id>.dicom + breast-level_annotations.csv)"
        )
    breast = _read_csv(breast_csv, BREAST_COLUMNS)
    if breast.empty:
        raise DataError(f"{breast_csv}: no rows")
    vendor_col = next((c for c in ("vendor", "manufacturer") if c in breast.columns), None)

    records: dict[str, ImageRecord] = {}
    for _, row in breast.iterrows():
        image_id = row["image_id"].strip()
        study_id = row["study_id"].strip()
        record = ImageRecord(
            image_id=image_id,
            study_id=study_id,
            path=find_image(root, study_id, image_id),
            laterality=row["laterality"].strip().upper(),
            view=row["view_position"].strip().upper(),
            density=str(row.get("breast_density", "")).strip(),
            vendor=row[vendor_col].strip() if vendor_col else "",
        )
        if image_id in records:
            record.problem = f"image_id {image_id} appears twice in {breast_csv.name}"
        elif record.path is None:
            record.problem = (
                f"image file missing: looked for images/{study_id}/{image_id}"
                f"{{{','.join(IMAGE_SUFFIXES)}}}"
            )
        records[image_id] = record

    finding_csv = root / "finding_annotations.csv"
    if finding_csv.is_file():
        findings = _read_csv(finding_csv, FINDING_COLUMNS)
        for _, row in findings.iterrows():
            record = records.get(row["image_id"].strip())
            if record is None:
                continue  # a finding for an image without breast-level row: nothing to prepare
            try:
                categories = parse_categories(row["finding_categories"])
                box = _box(row)
            except DataError as exc:
                record.problem = record.problem or f"{finding_csv.name}: {exc}"
                continue
            record.findings.append(Finding(categories=categories, box=box))
    return list(records.values())
