"""Study creation and blinding.

Real cases are prepared phantoms (RGB, 8-bit, 128 px, hex names); synthetic cases are other
phantoms, blurred and noised and saved the many ways a generator might save them (8-bit gray
with text chunks and a DPI, 16-bit, RGB with compressed text, RGBA, JPEG; 160 px; telling
names). After ``create_study`` nothing but the pixels may separate them: names, byte sizes,
dimensions, modes, bit depths, PNG chunks, modification times, reader orders and what the app
serves are checked here with a PNG chunk parser and a rank-based classifier written in this
file, not with the code under test.
"""

from __future__ import annotations

import io
import os
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageFilter
from PIL.PngImagePlugin import PngInfo

from mame_eval.data.phantoms import write_phantom_dataset
from mame_eval.data.prepare import PrepareSettings, prepare_dataset
from mame_eval.errors import StudyError
from mame_eval.studies import design
from mame_eval.studies.study import create_study, open_study, read_key

N = 40
pytest_plugins = ["conftest_models"]


def _synthesise(src: Path, out: Path, i: int, rng: np.random.Generator) -> Path:
    im = Image.open(src).convert("L").filter(ImageFilter.GaussianBlur(1.2))
    a = np.asarray(im, dtype=np.float64) + rng.normal(0, 6, im.size[::-1])
    a = np.clip(a, 0, 255)
    kind = i % 5
    name = out / f"synthetic_guidance{4 + i % 3}_seed{i:04d}"
    if kind == 0:
        info = PngInfo()
        info.add_text("parameters", f"a mammogram in CC view, guidance 4, seed {i}")
        info.add_text("Software", "diffusers")
        path = name.with_suffix(".png")
        Image.fromarray(a.astype(np.uint8)).save(path, pnginfo=info, dpi=(300, 300))
    elif kind == 1:
        path = name.with_suffix(".png")
        Image.fromarray((a * 257).astype(np.uint16)).save(path)
    elif kind == 2:
        info = PngInfo()
        info.add_text("Comment", "synthetic", zip=True)
        path = name.with_suffix(".png")
        g = a.astype(np.uint8)
        Image.fromarray(np.stack([g, g, np.clip(g.astype(int) + 2, 0, 255).astype(np.uint8)],
                                 -1)).save(path, pnginfo=info, optimize=True)
    elif kind == 3:
        path = name.with_suffix(".png")
        g = a.astype(np.uint8)
        Image.fromarray(np.stack([g, g, g, np.full_like(g, 255)], -1), "RGBA").save(path)
    else:
        path = name.with_suffix(".jpg")
        Image.fromarray(a.astype(np.uint8)).save(path, quality=95)
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    write_phantom_dataset(root / "raw_real", n=24, seed=11, size=(160, 128), lesion_fraction=0.0)
    prepare_dataset(root / "raw_real", root / "prep_real", PrepareSettings(size=128))
    write_phantom_dataset(root / "raw_syn", n=24, seed=12, size=(200, 160), lesion_fraction=0.0)
    prepare_dataset(root / "raw_syn", root / "prep_syn", PrepareSettings(size=160))
    syn = root / "synthetic"
    syn.mkdir()
    rng = np.random.default_rng(5)
    for i, src in enumerate(sorted((root / "prep_syn" / "healthy").glob("*.png"))):
        _synthesise(src, syn, i, rng)
    return root / "prep_real" / "healthy", syn


@pytest.fixture(scope="module")
def study(inputs, tmp_path_factory):
    real, syn = inputs
    out = tmp_path_factory.mktemp("studies") / "blind"
    res = create_study(out, real, syn, n=N, readers="alice,bob,carol", seed=7, size="128x128")
    return res


# --------------------------------------------------------------------------------------------
# independent helpers
# --------------------------------------------------------------------------------------------


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, out = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        ctype = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(ctype + body) & 0xFFFFFFFF
        out.append((ctype, body))
        pos += 12 + length
    return out


def rank_auc(feature, truth) -> float:
    """Mann-Whitney AUC of ``feature`` for truth 1 vs 0 (ties 1/2), written out by hand."""
    f, t = np.asarray(feature, dtype=float), np.asarray(truth)
    pos, neg = f[t == 1], f[t == 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(wins / (pos.size * neg.size))


def chance_band(n1: int, n0: int, z: float = 3.0) -> float:
    """z times the null SD of the Mann-Whitney AUC (no ties)."""
    return z * float(np.sqrt((n1 + n0 + 1) / (12 * n1 * n0)))


# --------------------------------------------------------------------------------------------
# blinding
# --------------------------------------------------------------------------------------------


def test_cases_are_identical_in_format_size_chunks_and_mtime(study):
    cases = sorted((study.path / "cases").iterdir())
    assert len(cases) == N and all(p.suffix == ".png" for p in cases)
    blobs = [p.read_bytes() for p in cases]
    # one byte size for all: a file-size classifier cannot beat chance (AUC exactly 0.5)
    assert len({len(b) for b in blobs}) == 1
    structures = set()
    for b in blobs:
        chunks = png_chunks(b)
        types = [c for c, _ in chunks]
        assert types[0] == b"IHDR" and types[-1] == b"IEND"
        assert set(types) == {b"IHDR", b"IDAT", b"IEND"}, types  # no text, pHYs, iCCP, gAMA…
        width, height, depth, color = struct.unpack(">IIBB", chunks[0][1][:10])
        structures.add((width, height, depth, color, tuple(len(c[1]) for c in chunks[1:-1])))
    assert len(structures) == 1  # same IHDR and the same IDAT layout for every case
    assert next(iter(structures))[:4] == (128, 128, 8, 0)  # 8-bit gray, 128 x 128
    for p in cases:
        with Image.open(p) as im:
            assert (im.mode, im.size, im.info) == ("L", (128, 128), {})
    assert len({p.stat().st_mtime_ns for p in cases}) == 1


def test_names_orders_and_sizes_do_not_separate_real_from_synthetic(study):
    key = read_key(study.path)
    truth = key.set_index("case")["truth"]
    n1, n0 = int(truth.sum()), int((1 - truth).sum())
    assert (n1, n0) == (N // 2, N // 2)
    names = list(truth.index)
    assert all(re.fullmatch(r"[0-9a-f]{16}", c) for c in names)
    band = chance_band(n1, n0)
    t = truth.to_numpy()
    features = {
        "name as a number": [int(c, 16) for c in names],
        "first name digit": [int(c[0], 16) for c in names],
        "file size": [(study.path / "cases" / f"{c}.png").stat().st_size for c in names],
        "mtime": [(study.path / "cases" / f"{c}.png").stat().st_mtime_ns for c in names],
        "inode (write order)": [(study.path / "cases" / f"{c}.png").stat().st_ino
                                for c in names],
    }
    st = open_study(study.path)
    with st.store() as store:
        orders = {r: store.assignments(r) for r in store.readers()}
    for r, order in orders.items():
        assert sorted(order) == sorted(names)
        pos = {c: i for i, c in enumerate(order)}
        features[f"position in {r}'s order"] = [pos[c] for c in names]
    for what, f in features.items():
        auc = rank_auc(f, t)
        assert abs(auc - 0.5) <= band, f"{what} separates the classes: AUC {auc:.3f}"
    # the orders differ between readers
    assert len({tuple(o) for o in orders.values()}) == 3
    # the listing order of cases/ is not the class order either
    listing = [truth[Path(e).stem] for e in os.listdir(study.path / "cases")]
    assert abs(rank_auc(np.arange(N), listing) - 0.5) <= band


def test_nothing_of_the_source_survives_in_cases_or_database(study, inputs):
    real, syn = inputs
    source_names = {p.stem for p in list(real.iterdir()) + list(syn.iterdir())}
    blob = b"".join(p.read_bytes() for p in (study.path / "cases").iterdir())
    for needle in (b"synthetic", b"diffusers", b"guidance", b"parameters", b"real"):
        assert needle not in blob
    db = (study.path / "study.db").read_bytes()
    for s in list(source_names)[:10] + ["synthetic", "real"]:
        assert s.encode() not in db
    settings = (study.path / "study.toml").read_text()
    assert not any(s in settings for s in source_names)  # folders only, never file names


def test_key_csv_maps_every_case_to_its_source_and_truth(study, inputs):
    real, syn = inputs
    key = pd.read_csv(study.path / "key.csv", dtype={"case": str})
    assert list(key.columns) == ["case", "truth", "source"]
    assert set(key["case"]) == {p.stem for p in (study.path / "cases").iterdir()}
    for row in key.itertuples():
        src = Path(row.source)
        assert src.parent == (real if row.truth == 1 else syn).resolve()
        # the case holds the source's pixels (resampled for the 160 px synthetic ones)
        case = np.asarray(Image.open(study.path / "cases" / f"{row.case}.png"), dtype=float)
        im = Image.open(src)
        if im.mode.startswith("I"):  # 16-bit: documented min-max scaling to 8 bits
            x = np.asarray(im, dtype=float)
            im = Image.fromarray(np.rint(255 * (x - x.min()) / (x.max() - x.min()))
                                 .astype(np.uint8))
        ref = im.convert("L")
        if ref.size != (128, 128):
            ref = ref.resize((128, 128), Image.Resampling.LANCZOS)
        assert np.abs(case - np.asarray(ref, dtype=float)).mean() < 3


def test_tokens_are_shown_once_and_only_their_hashes_stored(study):
    db = (study.path / "study.db").read_bytes()
    tokens = [link.split("token=")[1] for link in study.reader_links.values()]
    tokens.append(study.coordinator_link.split("token=")[1])
    assert len(set(tokens)) == 4 and all(len(t) >= 32 for t in tokens)
    st = open_study(study.path)
    with st.store() as store:
        for reader, link in study.reader_links.items():
            tok = link.split("token=")[1]
            assert tok.encode() not in db
            assert design.hash_token(tok).encode() in db
            assert store.reader_for_token(tok) == reader
            assert not store.is_coordinator(tok)
        assert store.is_coordinator(tokens[-1])
        assert store.reader_for_token("wrong") is None and not store.is_coordinator("wrong")
    assert all(link.startswith("http://localhost:8501/?token=")
               for link in study.reader_links.values())


# --------------------------------------------------------------------------------------------
# create: determinism and refusals
# --------------------------------------------------------------------------------------------


def test_same_seed_same_cases_key_and_orders(inputs, tmp_path, study):
    real, syn = inputs
    again = create_study(tmp_path / "again", real, syn, n=N, readers="alice,bob,carol", seed=7,
                         size="128x128")
    a = {p.name: p.read_bytes() for p in (study.path / "cases").iterdir()}
    b = {p.name: p.read_bytes() for p in (again.path / "cases").iterdir()}
    assert a == b
    assert (study.path / "key.csv").read_bytes() == (again.path / "key.csv").read_bytes()
    s1, s2 = open_study(study.path), open_study(again.path)
    with s1.store() as x, s2.store() as y:
        assert all(x.assignments(r) == y.assignments(r) for r in ("alice", "bob", "carol"))
    other = create_study(tmp_path / "other", real, syn, n=N, readers="alice", seed=8,
                         size="128x128")
    assert {p.name for p in (other.path / "cases").iterdir()} != set(a)


def _no_leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if ".creating" in p.name]


@pytest.mark.parametrize("kwargs, message", [
    ({"n": 400}, "holds 24 images but the study needs 200"),
    ({"n": 3}, "--n 3"),
    ({"ratio": 1.0}, "--ratio"),
    ({"n": 5, "ratio": 0.2}, "need at least 2 of each"),
    ({"readers": "alice,alice"}, "given twice"),
    ({"readers": "bad name!"}, "reader name"),
    ({"readers": ""}, "at least one reader"),
    ({"size": "12x"}, "--size"),
    ({"port": 0}, "--port"),
])
def test_create_refuses_bad_input_with_one_line_and_leaves_nothing(inputs, tmp_path, kwargs,
                                                                   message):
    real, syn = inputs
    args = {"n": 10, "readers": "alice", "seed": 1, "size": "128x128", **kwargs}
    with pytest.raises(StudyError) as err:
        create_study(tmp_path / "s", real, syn, **args)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "s").exists() and not _no_leftovers(tmp_path)


def test_create_never_overwrites_and_cleans_up_after_a_failure(inputs, tmp_path, study):
    real, syn = inputs
    with pytest.raises(StudyError, match="already exists"):
        create_study(study.path, real, syn, n=10, readers="x", seed=1)
    assert (study.path / "key.csv").exists()
    # a corrupt image found while blinding: nothing is left behind
    bad = tmp_path / "bad_syn"
    bad.mkdir()
    for i, p in enumerate(sorted(syn.iterdir())[:4]):
        (bad / f"s{i}{p.suffix}").write_bytes(p.read_bytes())
    (bad / "s9.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(StudyError, match=r"s9\.png: not a readable image"):
        create_study(tmp_path / "s", real, bad, n=10, readers="alice", seed=1, size=128)
    assert not (tmp_path / "s").exists() and not _no_leftovers(tmp_path)
    # the same image under both truths
    dup = tmp_path / "dup"
    dup.mkdir()
    for p in sorted(real.iterdir())[:6]:
        (dup / p.name).write_bytes(p.read_bytes())
    with pytest.raises(StudyError, match="same image"):
        _create_with_overlap(real, dup, tmp_path)
    with pytest.raises(StudyError, match="same folder"):
        create_study(tmp_path / "s", real, real, n=10, readers="a", seed=1)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(StudyError, match="no image files"):
        create_study(tmp_path / "s", real, empty, n=10, readers="a", seed=1)
    with pytest.raises(StudyError, match="folder not found"):
        create_study(tmp_path / "s", real, tmp_path / "absent", n=10, readers="a", seed=1)
    assert not _no_leftovers(tmp_path)


def _create_with_overlap(real: Path, dup: Path, tmp: Path):
    # every real image and every "synthetic" one is drawn (n = 2 * 6): overlap is certain
    small_real = tmp / "small_real"
    small_real.mkdir()
    for p in sorted(real.iterdir())[:6]:
        (small_real / p.name).write_bytes(p.read_bytes())
    return create_study(tmp / "s", small_real, dup, n=12, readers="a", seed=1)


def test_different_native_sizes_need_an_explicit_common_size(inputs, tmp_path):
    real, syn = inputs
    with pytest.raises(StudyError) as err:
        create_study(tmp_path / "s", real, syn, n=10, readers="a", seed=2)
    msg = str(err.value)
    assert "\n" not in msg and "--size" in msg
    assert "real: 128x128 (5)" in msg and "synthetic: 160x160 (5)" in msg
    assert "--size 160x160" in msg and "--size 128x128" in msg
    assert not (tmp_path / "s").exists() and not _no_leftovers(tmp_path)


def test_size_option_and_geometry_notes(inputs, tmp_path):
    real, syn = inputs
    res = create_study(tmp_path / "s", real, syn, n=8, readers="a", seed=2, size="96x64")
    for p in (res.path / "cases").iterdir():
        assert Image.open(p).size == (64, 96)
    assert any("resampled" in w for w in res.warnings)
    g = design.choose_geometry([(100, 200), (50, 100), (80, 80)])
    assert (g.width, g.height) == (50, 50) and any("aspect" in n for n in g.notes)
    g = design.choose_geometry([(100, 200), (50, 100)])
    assert (g.width, g.height) == (50, 100)


def test_to_gray8_handles_every_mode():
    rgb = Image.fromarray(np.dstack([np.full((4, 4), v, np.uint8) for v in (10, 20, 30)]))
    assert design.to_gray8(rgb).dtype == np.uint8
    sixteen = Image.fromarray(np.array([[0, 1000], [2000, 4000]], dtype=np.uint16))
    assert design.to_gray8(sixteen).tolist() == [[0, 64], [128, 255]]
    rgba = Image.fromarray(np.dstack([np.full((2, 2), 200, np.uint8)] * 3
                                     + [np.array([[0, 255], [255, 255]], np.uint8)]), "RGBA")
    assert design.to_gray8(rgba).tolist() == [[0, 200], [200, 200]]
    flat = Image.fromarray(np.full((3, 3), 7.5, np.float32))
    assert design.to_gray8(flat).max() == 0
    buf = io.BytesIO()
    Image.fromarray(np.zeros((2, 2), np.uint8)).convert("P").save(buf, "PNG")
    assert design.to_gray8(Image.open(buf)).shape == (2, 2)


def test_the_database_refuses_a_second_rating_and_audit_edits(study):
    st = open_study(study.path)
    with st.store() as store:
        case = store.assignments("carol")[0]
        assert store.record_rating("carol", case, 3)
        assert not store.record_rating("carol", case, 1)
        assert [r.score for r in store.ratings("carol")] == [3]
        with pytest.raises(StudyError, match="not assigned"):
            store.record_rating("carol", "0000000000000000", 3)
        from sqlalchemy import text

        with pytest.raises(Exception, match="append-only"), store.engine.begin() as conn:
            conn.execute(text("UPDATE audit SET event = 'x'"))
        with pytest.raises(Exception, match="append-only"), store.engine.begin() as conn:
            conn.execute(text("DELETE FROM audit"))
        with pytest.raises(Exception, match="UNIQUE"), store.engine.begin() as conn:
            conn.execute(text("INSERT INTO ratings (reader, case_id, score, rated_at, source, "
                              "changes) VALUES ('carol', :c, 2, 'now', 'x', 0)"), {"c": case})
        events = [e["event"] for e in store.audit("carol")]
        assert events == ["rated", "duplicate"]


# --------------------------------------------------------------------------------------------
# blinding against real generator output
# --------------------------------------------------------------------------------------------


def test_tiny_model_run_folder_is_blinded_like_any_other(inputs, txt2img_pipe, tmp_path):
    """Phantoms vs the images of a generation run (32-px RGB PNGs from a tiny SD pipeline, a
    manifest.jsonl beside them): the cases differ in nothing but their pixels."""
    from mame_eval.generation import generate

    real, _ = inputs
    run = generate(None, "a hologic mammogram in CC view with small area", tmp_path / "run",
                   n=12, steps=2, seed=3, pipe=txt2img_pipe)
    assert (run.out / "manifest.jsonl").is_file() and Image.open(run.files[0]).mode == "RGB"
    res = create_study(tmp_path / "s", real, run.out, n=20, readers="alice,bob", seed=4,
                       size="32x32")
    cases = sorted((res.path / "cases").iterdir())
    assert len(cases) == 20
    blobs = [p.read_bytes() for p in cases]
    assert len({len(b) for b in blobs}) == 1
    assert {tuple(c for c, _ in png_chunks(b)) for b in blobs} == {(b"IHDR", b"IDAT", b"IEND")}
    assert {png_chunks(b)[0][1] for b in blobs} == {png_chunks(blobs[0])[0][1]}
    truth = read_key(res.path).set_index("case")["truth"]
    names = list(truth.index)
    assert all(re.fullmatch(r"[0-9a-f]{16}", c) for c in names)
    band = chance_band(int(truth.sum()), int((1 - truth).sum()))
    for what, f in {"name": [int(c, 16) for c in names],
                    "inode": [(res.path / "cases" / f"{c}.png").stat().st_ino
                              for c in names]}.items():
        assert abs(rank_auc(f, truth.to_numpy()) - 0.5) <= band, what
    blob = b"".join(blobs) + (res.path / "study.db").read_bytes()
    for needle in (b"manifest", b"guidance", b"hologic", b"00000"):
        assert needle not in blob


# --------------------------------------------------------------------------------------------
# blinding audit: pixel statistics measured before any reader sees a case
# --------------------------------------------------------------------------------------------


def test_case_statistics_against_hand_computed_values():
    from mame_eval.studies.audit import case_statistics

    two = np.zeros((16, 16), np.uint8)
    two[:, 8:] = 255
    s = case_statistics(two)
    assert s["entropy_bits"] == pytest.approx(1.0) and s["frac_black"] == 0.5
    assert s["frac_white"] == 0.5 and (s["min"], s["max"], s["mean"]) == (0, 255, 127.5)
    assert case_statistics(np.full((8, 8), 7, np.uint8))["hf_power"] == 0.0
    rng = np.random.default_rng(0)
    noisy = np.clip(np.rint(128 + rng.normal(0, 10, (256, 256))), 0, 255).astype(np.uint8)
    assert case_statistics(noisy)["noise_sigma"] == pytest.approx(10, rel=0.05)
    # white noise: 1 - pi/16 of its power lies above a quarter cycle per pixel
    assert case_statistics(noisy)["hf_power"] == pytest.approx(1 - np.pi / 16, abs=0.02)
    smooth = np.asarray(Image.fromarray(noisy).filter(ImageFilter.GaussianBlur(2)))
    assert case_statistics(smooth)["hf_power"] < 0.05


def test_a_study_whose_sources_differ_warns_naming_the_leaking_statistics(study):
    audit = study.audit
    assert (study.path / "blinding_audit.csv").is_file()
    for suffix in (".png", ".pdf"):
        fig = study.path / f"blinding_audit{suffix}"
        assert fig.stat().st_size > 1000 and oct(fig.stat().st_mode & 0o777) == "0o644"
    table = pd.read_csv(study.path / "blinding_audit.csv")
    assert set(table["statistic"]) >= {"max", "min", "mean", "std", "frac_black", "frac_white",
                                       "entropy_bits", "hf_power", "noise_sigma",
                                       "resample_factor", "classifier"}
    t = table.set_index("statistic")
    # the synthetic cases were 160 px, blurred and re-noised: resampling and noise tell
    assert t.loc["resample_factor", "auroc"] == 1.0 and t.loc["resample_factor", "leaks"]
    assert t.loc["resample_factor", "higher_in"] == "real"  # real ones were not resampled
    assert audit.leaks and "resample_factor" in audit.leaking
    warning = study.audit_warning
    assert warning.startswith("BLINDING AUDIT") and "resample_factor" in warning
    assert all(name in warning for name in audit.leaking) and "\n" not in warning
    # the AUROC column is the Mann-Whitney AUC of each statistic, recomputed by hand
    truth = read_key(study.path).set_index("case")["truth"]
    from mame_eval.studies.audit import case_statistics

    vals = [case_statistics(np.asarray(Image.open(study.path / "cases" / f"{c}.png")))["mean"]
            for c in truth.index]
    assert t.loc["mean", "auroc"] == pytest.approx(rank_auc(vals, truth.to_numpy()))
    from mame_eval.studies.study import format_status, study_status

    assert "BLINDING AUDIT" in format_status(study_status(study.path))


def test_a_study_from_one_source_does_not_warn(inputs, tmp_path):
    real, _ = inputs
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    for i, p in enumerate(sorted(real.glob("*.png"))):
        ((a if i % 2 else b) / p.name).write_bytes(p.read_bytes())
    res = create_study(tmp_path / "same", a, b, n=20, readers="x", seed=3)
    assert not res.audit.leaks and res.audit_warning is None
    table = pd.read_csv(res.path / "blinding_audit.csv")
    assert not table["leaks"].any() and (table["p_adjusted"] >= table["p_value"]).all()


def test_the_measured_brightest_pixel_leak_is_caught(inputs, tmp_path):
    """As measured in a real study: real cases peak at 239-244, synthetic ones at 255 with
    some pure white; either statistic alone separates the classes perfectly."""
    real, _ = inputs
    files = sorted(real.glob("*.png"))
    r, s = tmp_path / "r", tmp_path / "s"
    r.mkdir()
    s.mkdir()
    rng = np.random.default_rng(1)
    for i, p in enumerate(files):
        g = np.asarray(Image.open(p).convert("L"), dtype=float)
        if i % 2:
            g = g / max(g.max(), 1) * rng.integers(239, 245)
            Image.fromarray(np.rint(g).astype(np.uint8)).save(r / f"{i}.png")
        else:
            g = g / max(g.max(), 1) * 255
            g[g < np.quantile(g, 0.10)] = 0
            Image.fromarray(np.rint(g).astype(np.uint8)).save(s / f"{i}.png")
    runner_out = tmp_path / "leaky"
    from typer.testing import CliRunner

    from mame_eval.studies.commands import study_app

    cli = CliRunner().invoke(study_app, ["create", "--real", str(r), "--synthetic", str(s),
                                         "--n", "20", "--readers", "x", "--seed", "2",
                                         "--out", str(runner_out)])
    assert cli.exit_code == 0, cli.output
    assert "warning: BLINDING AUDIT" in cli.output and "max (AUROC 0.00" in cli.output
    table = pd.read_csv(runner_out / "blinding_audit.csv").set_index("statistic")
    assert table.loc["max", "leaks"] and table.loc["max", "higher_in"] == "synthetic"
    assert table.loc["classifier", "leaks"] and not table.loc["mean", "leaks"]
    status = CliRunner().invoke(study_app, ["status", str(runner_out)])
    assert "BLINDING AUDIT" in status.output and "max (AUROC" in status.output
