"""The paper's preparation on phantoms, checked against the phantoms' ground truth.

The truth (full-resolution breast masks, boxes in raw pixels) is mapped through the
flip/resize/crop *here*, with plain numpy/PIL, independently of ``mame_eval.data.preprocess``.
"""

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mame_eval.data.phantoms import write_phantom_dataset
from mame_eval.data.prepare import PrepareSettings, prepare_dataset
from mame_eval.errors import DataError
from mame_eval.prompts import parse

SIZE = 512


def independent_crop(mask, flip, size=SIZE):
    """Mirror, shorter side -> size (bilinear, >= 1/2), centre crop — written out by hand."""
    if flip:
        mask = mask[:, ::-1]
    h, w = mask.shape
    s = size / min(h, w)
    nh, nw = round(h * s), round(w * s)
    im = Image.fromarray(np.ascontiguousarray(mask.astype(np.uint8) * 255))
    resized = np.asarray(im.resize((nw, nh), Image.BILINEAR)) >= 128
    top, left = (nh - size) // 2, (nw - size) // 2
    return resized[top:top + size, left:left + size], (h, w, nh, nw, top, left)


def independent_box(box, flip, dims):
    h, w, nh, nw, top, left = dims
    x0, y0, x1, y1 = box
    if flip:
        x0, x1 = w - x1, w - x0
    return (x0 * nw / w - left, y0 * nh / h - top, x1 * nw / w - left, y1 * nh / h - top)


def iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def read_meta(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def small_raw(tmp_path_factory):
    raw = tmp_path_factory.mktemp("raw")
    write_phantom_dataset(raw, n=12, seed=3, population="mixed", lesion_fraction=0.5,
                          size=(320, 256))
    return raw


def test_small_prepare_contract(small_raw, tmp_path):
    out = tmp_path / "prep"
    report = prepare_dataset(small_raw, out, PrepareSettings(size=128))
    assert report.family == "fusion"  # mixed vendors
    healthy = read_meta(out / "healthy" / "metadata.jsonl")
    lesion = read_meta(out / "lesion" / "metadata.jsonl")
    assert len(healthy) + report.counts["lesion_images"] + report.counts["excluded"] + \
        report.counts["skipped"] == 12
    for row in healthy:
        keys = {"file_name", "prompt", "vendor", "view", "laterality", "density", "area",
                "area_ratio", "source_id"}
        assert keys <= row.keys()
        im = Image.open(out / "healthy" / row["file_name"])
        assert im.mode == "RGB" and im.size == (128, 128)
        prompt = parse(row["prompt"])
        assert prompt.vendor.value == row["vendor"] and prompt.view.value == row["view"]
        # paper's fusion model: hologic prompted with area only, siemens with density only
        if row["vendor"] == "hologic":
            assert prompt.area.value == row["area"] and prompt.density is None
        else:
            assert prompt.density.value == row["density"] and prompt.area is None
    for row in lesion:
        assert row["prompt"] == "a mammogram with a lesion"
        mask = np.asarray(Image.open(out / "lesion" / row["mask_file"]))
        assert mask.ndim == 2 and set(np.unique(mask)) <= {0, 255} and mask.max() == 255
        assert (out / "lesion" / row["file_name"]).is_file()
    saved = json.loads((out / "prepare_report.json").read_text())
    assert saved["counts"] == report.counts and saved["settings"]["size"] == 128


def test_rerun_resumes_and_changed_settings_are_refused(small_raw, tmp_path):
    out = tmp_path / "prep"
    prepare_dataset(small_raw, out, PrepareSettings(size=128))
    first = next((out / "healthy").glob("*.png"))
    stamp = first.stat().st_mtime_ns
    again = prepare_dataset(small_raw, out, PrepareSettings(size=128))
    assert first.stat().st_mtime_ns == stamp  # not rewritten
    assert again.counts["healthy"] == len(read_meta(out / "healthy" / "metadata.jsonl"))
    first.unlink()  # a lost output is redone
    prepare_dataset(small_raw, out, PrepareSettings(size=128))
    assert first.is_file()
    with pytest.raises(DataError, match="other settings"):
        prepare_dataset(small_raw, out, PrepareSettings(size=256))


def test_interrupted_journal_is_resumed(small_raw, tmp_path):
    out = tmp_path / "prep"
    prepare_dataset(small_raw, out, PrepareSettings(size=128))
    journal = out / ".prepare-journal.jsonl"
    lines = journal.read_text().splitlines()
    # simulate a kill after 4 images, mid-way through writing the 5th line
    journal.write_text("\n".join(lines[:5]) + "\n" + lines[5][:20])
    (out / "healthy" / "metadata.jsonl").unlink()
    report = prepare_dataset(small_raw, out, PrepareSettings(size=128))
    full = prepare_dataset(small_raw, tmp_path / "fresh", PrepareSettings(size=128))
    assert report.counts == full.counts
    assert (out / "healthy" / "metadata.jsonl").read_text() == \
        (tmp_path / "fresh" / "healthy" / "metadata.jsonl").read_text()


def test_parallel_equals_serial(small_raw, tmp_path):
    a = prepare_dataset(small_raw, tmp_path / "a", PrepareSettings(size=96), workers=1)
    b = prepare_dataset(small_raw, tmp_path / "b", PrepareSettings(size=96), workers=2)
    assert a.counts == b.counts
    for sub in ("healthy/metadata.jsonl", "lesion/metadata.jsonl"):
        assert (tmp_path / "a" / sub).read_text() == (tmp_path / "b" / sub).read_text()
    for png in (tmp_path / "a" / "healthy").glob("*.png"):
        assert png.read_bytes() == (tmp_path / "b" / "healthy" / png.name).read_bytes()


def test_pad_keeps_whole_breast(small_raw, tmp_path):
    truth = pd.read_csv(small_raw / "phantom_truth.csv", dtype={"image_id": str})
    prepare_dataset(small_raw, tmp_path / "pad", PrepareSettings(size=128, crop="pad"))
    rows = read_meta(tmp_path / "pad" / "healthy" / "metadata.jsonl")
    by_id = truth.set_index("image_id")
    for row in rows:
        # letterbox: the breast keeps its share of the original image, scaled by the padding
        h, w = 320, 256
        expected = by_id.loc[row["source_id"], "area_ratio"] * (w / h)
        assert row["area_ratio"] == pytest.approx(expected, abs=0.03)


def test_bad_inputs_are_reported_and_the_rest_continues(small_raw, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(small_raw, raw)
    breast = pd.read_csv(raw / "breast-level_annotations.csv", dtype=str, keep_default_na=False)
    ids = breast["image_id"].tolist()
    studies = dict(zip(breast["image_id"], breast["study_id"], strict=True))
    # a corrupt DICOM, a missing DICOM, an unknown density value
    (raw / "images" / studies[ids[0]] / f"{ids[0]}.dicom").write_bytes(b"garbage")
    (raw / "images" / studies[ids[1]] / f"{ids[1]}.dicom").unlink()
    breast.loc[2, "breast_density"] = "DENSITY X"
    breast.to_csv(raw / "breast-level_annotations.csv", index=False)
    report = prepare_dataset(raw, tmp_path / "out", PrepareSettings(size=96))
    reasons = {s["image_id"]: s["reason"] for s in report.skipped}
    assert "not a readable DICOM" in reasons[ids[0]] and ids[0] in reasons[ids[0]]
    assert "image file missing" in reasons[ids[1]]
    assert "DENSITY X" in reasons[ids[2]]
    assert report.counts["skipped"] == 3 and report.n_prepared > 0
    saved = json.loads((tmp_path / "out" / "prepare_report.json").read_text())
    assert len(saved["skipped"]) == 3


def test_unusable_inputs_raise_one_clear_error(small_raw, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no breast-level_annotations.csv"):
        prepare_dataset(empty, tmp_path / "o1")
    raw = tmp_path / "raw"
    shutil.copytree(small_raw, raw)
    breast = pd.read_csv(raw / "breast-level_annotations.csv", dtype=str)
    breast.drop(columns=["view_position"]).to_csv(raw / "breast-level_annotations.csv",
                                                  index=False)
    with pytest.raises(DataError, match="missing column.*view_position"):
        prepare_dataset(raw, tmp_path / "o2")
    # the report says why nothing was prepared; no image was written
    saved = json.loads((tmp_path / "o2" / "prepare_report.json").read_text())
    assert "view_position" in saved["error"] and saved["counts"]["healthy"] == 0
    assert sorted(p.name for p in (tmp_path / "o2").iterdir()) == ["prepare_report.json"]
    with pytest.raises(DataError, match="not a folder"):
        prepare_dataset(tmp_path / "nope", tmp_path / "o3")
    assert not (tmp_path / "o3").exists()  # a mistyped input folder leaves nothing behind
    with pytest.raises(DataError, match="^crop 'zoom'") as err:
        PrepareSettings(crop="zoom")
    assert err.value.param == "crop"  # the CLI names it --crop (test_cli_errors.py)


def test_an_area_only_dataset_needs_no_density_column(small_raw, tmp_path):
    """Like OMI-H: breast area labels only (hologic prompts never name density)."""
    raw = tmp_path / "raw"
    shutil.copytree(small_raw, raw)
    breast = pd.read_csv(raw / "breast-level_annotations.csv", dtype=str)
    breast.drop(columns=["breast_density"]).to_csv(raw / "breast-level_annotations.csv",
                                                   index=False)
    report = prepare_dataset(raw, tmp_path / "hologic", PrepareSettings(size=96,
                                                                        family="hologic"))
    assert report.counts["skipped"] == 0 and report.counts["healthy"] > 0
    rows = [json.loads(line) for line in
            (tmp_path / "hologic" / "healthy" / "metadata.jsonl").read_text().splitlines()]
    assert all(r["prompt"].endswith(" area") and r["density"] is None for r in rows)
    # siemens prompts need the label: every healthy image is reported, none prepared (the
    # lesion samples' prompt, "a mammogram with a lesion", needs no label)
    siemens = prepare_dataset(raw, tmp_path / "siemens", PrepareSettings(size=96,
                                                                         family="siemens"))
    assert siemens.counts["healthy"] == 0 and siemens.skipped
    assert all("breast_density" in s["reason"] for s in siemens.skipped)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "mame_eval", *args], capture_output=True,
                          text=True, timeout=300)


def test_cli_bad_input_is_one_line_and_nonzero(tmp_path):
    res = run_cli("prepare", str(tmp_path / "missing"), str(tmp_path / "out"))
    assert res.returncode == 1
    assert res.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "out").exists()


def test_cli_prepare_all_bad_exits_nonzero(small_raw, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(small_raw, raw)
    for dcm in (raw / "images").rglob("*.dicom"):
        dcm.write_bytes(b"x")
    res = run_cli("prepare", str(raw), str(tmp_path / "out"), "--size", "96")
    assert res.returncode == 1
    assert "nothing could be prepared" in res.stderr
    assert (tmp_path / "out" / "prepare_report.json").is_file()


# ---- acceptance on 200 phantoms of seed 0 (DESIGN §1 preparation, exactly as the paper) ----


@pytest.fixture(scope="module")
def acceptance(tmp_path_factory):
    root = tmp_path_factory.mktemp("accept")
    write_phantom_dataset(root / "raw", n=200, seed=0, population="mixed")
    report = prepare_dataset(root / "raw", root / "prep", workers=2)
    return root / "raw", root / "prep", report


@pytest.mark.slow
def test_area_ratio_matches_truth(acceptance):
    raw, prep, report = acceptance
    truth = pd.read_csv(raw / "phantom_truth.csv", dtype={"image_id": str}).set_index("image_id")
    rows = read_meta(prep / "healthy" / "metadata.jsonl")
    assert len(rows) >= 100
    errors = []
    for row in rows:
        full = np.asarray(Image.open(raw / "truth" / f"{row['source_id']}_breast.png")) > 127
        flip = truth.loc[row["source_id"], "laterality"] == "R"
        mapped, _ = independent_crop(full, flip)
        errors.append(abs(row["area_ratio"] - mapped.mean()))
    within = np.mean(np.array(errors) <= 0.03)
    assert within >= 0.97, f"only {within:.1%} within 0.03 (max error {max(errors):.3f})"


@pytest.mark.slow
def test_every_breast_on_the_same_side(acceptance):
    _, prep, _ = acceptance
    for sub in ("healthy", "lesion"):
        for row in read_meta(prep / sub / "metadata.jsonl"):
            image = np.asarray(Image.open(prep / sub / row["file_name"]))[..., 0]
            cols = np.nonzero(image > 10)[1]
            assert cols.mean() < SIZE / 2, row["file_name"]
            assert (image[:, 0] > 10).sum() > (image[:, -1] > 10).sum()  # chest wall at left


@pytest.mark.slow
def test_lesion_boxes_match_truth(acceptance):
    raw, prep, report = acceptance
    findings = pd.read_csv(raw / "finding_annotations.csv", dtype={"image_id": str})
    masses = findings[findings["finding_categories"].str.contains("Mass")]
    truth = pd.read_csv(raw / "phantom_truth.csv", dtype={"image_id": str}).set_index("image_id")
    rows = read_meta(prep / "lesion" / "metadata.jsonl")
    assert len(rows) + report.counts["boxes_skipped"] == len(masses) > 20
    for row in rows:
        k = int(row["file_name"].rsplit("_m", 1)[1].removesuffix(".png"))
        finding = masses[masses["image_id"] == row["source_id"]].iloc[k]
        box = tuple(finding[["xmin", "ymin", "xmax", "ymax"]].astype(float))
        flip = truth.loc[row["source_id"], "laterality"] == "R"
        h, w = int(finding["height"]), int(finding["width"])
        s = SIZE / min(h, w)
        nh, nw = round(h * s), round(w * s)
        expected = independent_box(box, flip, (h, w, nh, nw, (nh - SIZE) // 2,
                                               (nw - SIZE) // 2))
        mask = np.asarray(Image.open(prep / "lesion" / row["mask_file"])) > 0
        ys, xs = np.nonzero(mask)
        got = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        assert iou(got, expected) >= 0.9, (row["file_name"], got, expected)
