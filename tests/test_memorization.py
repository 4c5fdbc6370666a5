"""Memorisation audit: alignment, neighbours, conformal calibration (simulated), exact copy-rate
intervals; planted copies in a MAM-E-tiny set all flagged, generated images rarely; bad inputs
through the CLI give one line."""

import hashlib
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import ndimage, stats

from mame_eval.errors import InputError
from mame_eval.metrics import memorization as mem

pytest_plugins = ["conftest_models"]
pytestmark = pytest.mark.usefixtures("one_thread")


def breast_like(rng, shape=(96, 96)) -> np.ndarray:
    """A uint8 image that has what matters here: a black background, a bright half-disc at
    the left border, and smooth random texture inside it."""
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    inside = ((yy - h / 2) / (0.45 * h)) ** 2 + (xx / (0.6 * w)) ** 2 < 1
    texture = ndimage.gaussian_filter(rng.normal(size=shape), 2.0)
    texture = (texture - texture.mean()) / texture.std()
    return np.where(inside, np.clip(120 + 35 * texture, 30, 225), 0).astype(np.uint8)


def shifted(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``out[y, x] = image[y - dy, x - dx]``, black entering."""
    out = np.zeros_like(image)
    h, w = image.shape
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        image[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


# --------------------------------------------------------------------------- calculations


def test_phase_correlation_recovers_known_shifts_despite_contrast_and_noise():
    rng = np.random.default_rng(0)
    truth, queries, refs = [], [], []
    for i in range(16):
        ref = breast_like(rng).astype(np.float64)
        dy, dx = (int(v) for v in rng.integers(-4, 5, 2))
        q = shifted(ref, dy, dx)
        if i % 2:  # brightness/contrast change and noise
            q = np.clip(q * 1.15 - 8 + rng.normal(0, 4, q.shape), 0, 255)
        truth.append((dy, dx))
        queries.append(q)
        refs.append(ref)
    dy, dx = mem.estimate_shift(np.stack(queries), np.stack(refs), max_shift=4)
    assert list(zip(dy.tolist(), dx.tolist(), strict=True)) == truth


def test_match_pairs_undoes_shift_and_brightness_but_not_a_different_image():
    rng = np.random.default_rng(1)
    ref = breast_like(rng).astype(np.float32)
    other = breast_like(rng).astype(np.float32)
    affine = ref * 1.1 + 5  # inside 0…255: exactly undone by moment matching
    pairs = [(ref, ref), (affine, ref), (shifted(ref, 3, -2), ref), (other, ref)]
    match = mem.match_pairs(np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]),
                            max_shift=4)
    same, bright, moved, different = match.similarity
    assert same == pytest.approx(1.0, abs=1e-5)
    assert bright == pytest.approx(1.0, abs=1e-4)
    assert moved == pytest.approx(1.0, abs=1e-4)
    assert (match.dy[2], match.dx[2]) == (3, -2)
    # a different texture in the same silhouette stays well below a copy
    assert different < 0.8


def test_thumbnails_are_blind_to_brightness_and_contrast():
    rng = np.random.default_rng(2)
    image = breast_like(rng)
    brighter = (image.astype(np.float64) * 0.8 + 20).astype(np.float32)
    a, b = mem.thumbnail_features(np.stack([image.astype(np.float32), brighter]), side=16)
    assert np.linalg.norm(a) == pytest.approx(1.0)
    # the background moves by +20 too: a·x + b is affine everywhere, so thumbnails agree
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_neighbour_index_leaves_each_query_out_like_a_brute_force_search():
    rng = np.random.default_rng(3)
    train = rng.normal(size=(40, 6))
    rows = np.array([0, 7, 39, 12])
    dist, idx = mem.NeighbourIndex(train).query(train[rows], k=3, exclude=rows)
    for q, row in enumerate(rows):
        d = np.linalg.norm(train - train[row], axis=1)
        d[row] = np.inf
        expected = np.argsort(d)[:3]
        np.testing.assert_array_equal(idx[q], expected)
        np.testing.assert_allclose(dist[q], d[expected])


def test_a_mirrored_copy_is_found_as_mirrored():
    rng = np.random.default_rng(4)
    train = np.stack([breast_like(rng) for _ in range(12)])
    thumbs = mem.thumbnail_features(train)
    query = train[5][:, ::-1][None]
    triples = mem.candidate_pairs(
        [mem.NeighbourIndex(thumbs)],
        [(mem.thumbnail_features(query), mem.thumbnail_features(query[:, :, ::-1]))], k=1)
    assert [0, 5, 1] in triples.tolist()
    images = {int(j): train[j].astype(np.float32) for j in triples[:, 1]}
    scores = mem.score_queries(query.astype(np.float32), triples, images)
    assert scores.nearest[0] == 5 and scores.mirrored[0]
    assert scores.similarity[0] == pytest.approx(1.0, abs=1e-5)


def test_threshold_and_p_values_flag_the_same_images():
    rng = np.random.default_rng(5)
    null = rng.beta(5, 3, size=199)
    scores = np.r_[rng.beta(5, 3, size=500), null[:20]]  # ties with the null included
    for alpha in (0.01, 0.05, 0.2):
        threshold = mem.null_threshold(null, alpha)
        np.testing.assert_array_equal(scores > threshold, mem.p_values(scores, null) <= alpha)


def test_too_few_null_images_for_alpha_is_an_error():
    with pytest.raises(InputError, match="need at least 99"):
        mem.null_threshold(np.linspace(0, 1, 50), 0.01)
    with pytest.raises(InputError, match="alpha"):
        mem.null_threshold(np.linspace(0, 1, 50), 1.5)


@pytest.mark.parametrize("alpha, n_null", [(0.05, 199), (0.01, 150), (0.1, 30)])
def test_false_flag_rate_is_calibrated_by_simulation(alpha, n_null):
    """Images drawn like the null are flagged at exactly ⌊α(n+1)⌋/(n+1) ≤ α (conformal)."""
    rng = np.random.default_rng(6)
    reps, fresh = 3000, 40
    nulls = rng.gamma(2.0, size=(reps, n_null))  # skewed: no normality assumed anywhere
    rates = np.empty(reps)
    for r in range(reps):
        t = mem.null_threshold(nulls[r], alpha)
        rates[r] = np.mean(rng.gamma(2.0, size=fresh) > t)
    expected = np.floor(alpha * (n_null + 1)) / (n_null + 1)
    assert expected <= alpha
    # the per-replicate rate varies with the threshold (Beta spread); its mean is exact
    se = rates.std(ddof=1) / np.sqrt(reps)
    assert abs(rates.mean() - expected) < 4 * se + 1e-4


def test_copy_rate_has_the_exact_clopper_pearson_interval():
    result = mem.copy_rate(np.r_[np.full(3, 0.95), np.full(13, 0.5)], threshold=0.9, alpha=0.01)
    assert (result.k, result.n) == (3, 16)
    # Clopper-Pearson from its beta-quantile definition, independently of the toolkit
    assert result.ci_low == pytest.approx(stats.beta.ppf(0.025, 3, 14), abs=1e-9)
    assert result.ci_high == pytest.approx(stats.beta.ppf(0.975, 4, 13), abs=1e-9)
    none = mem.copy_rate(np.full(16, 0.5), threshold=0.9, alpha=0.01)
    assert none.rate == 0 and none.ci_low == 0
    assert none.ci_high == pytest.approx(1 - 0.025 ** (1 / 16), abs=1e-9)
    assert set(none.row()) == {"copy_rate", "copy_rate_ci_low", "copy_rate_ci_high",
                               "copy_rate_k", "copy_rate_n"}


def test_dcr_summary_auroc_reads_closer_as_higher():
    rng = np.random.default_rng(7)
    null = rng.uniform(0.2, 0.6, 200)
    closer = mem.dcr_summary(null[:50] - 0.45, null, "test")
    assert closer.auroc_synthetic_closer == 1.0
    same = mem.dcr_summary(rng.uniform(0.2, 0.6, 200), null, "test")
    lo, hi = same.auroc_ci
    assert lo < 0.5 < hi


def test_alterations():
    rng = np.random.default_rng(8)
    image = breast_like(rng)
    assert np.array_equal(mem.alter(image, "unchanged", rng), image)
    assert np.array_equal(mem.alter(image, "mirror", rng), image[:, ::-1])
    for kind in mem.ALTERATIONS:
        out = mem.alter(image, kind, rng)
        assert out.dtype == np.uint8 and out.shape == image.shape
    with pytest.raises(InputError, match="alteration"):
        mem.alter(image, "rotate", rng)


# --------------------------------------------------------------------------- the embedded world


def _prepared(root, n, seed, size=128):
    """``n`` phantoms of seed ``seed``, prepared as MAM-E-tiny's training images were."""
    from mame_eval.data.phantoms import write_phantom_dataset
    from mame_eval.data.prepare import PrepareSettings, prepare_dataset

    write_phantom_dataset(root / "raw", n=n, seed=seed, population="mixed",
                          lesion_fraction=0.0, size=(160, 128))
    prepare_dataset(root / "raw", root / "prepared", PrepareSettings(size=size, family="fusion"))
    return root / "prepared" / "healthy"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Training phantoms (seed 0), held-out phantoms (seed 1), unseen phantoms (seed 2)."""
    root = tmp_path_factory.mktemp("memorization")
    return {"train": _prepared(root / "train", 100, 0),
            "holdout": _prepared(root / "holdout", 100, 1),
            "unseen": _prepared(root / "unseen", 30, 2),
            "root": root}


def plant(train_dir, out_dir, n_per_kind, seed):
    """Copies of random training images, one batch per alteration, under random names;
    returns {planted file name: (training file name, alteration)}."""
    from mame_eval.images import list_images, load_gray

    rng = np.random.default_rng(seed)
    files = list_images(train_dir)
    sources = rng.choice(len(files), n_per_kind * len(mem.ALTERATIONS), replace=False)
    planted = {}
    for i, j in enumerate(sources):
        kind = mem.ALTERATIONS[i // n_per_kind]
        name = hashlib.sha256(f"{seed}-{i}".encode()).hexdigest()[:16] + ".png"
        Image.fromarray(mem.alter(load_gray(files[j]), kind, rng)).save(out_dir / name)
        planted[name] = (files[j].name, kind)
    return planted


@pytest.mark.slow
def test_planted_copies_are_all_flagged_and_generated_images_rarely(world, tmp_path):
    from mame_eval.generation import generate
    from mame_eval.journeys.memorization import COLUMNS, memorization_run
    from mame_eval.models import load_pipeline
    from mame_eval.stats.proportions import proportion_ci

    synthetic = tmp_path / "synthetic"
    synthetic.mkdir()
    pipe = load_pipeline(None, task="txt2img", device="cpu")  # the embedded MAM-E-tiny
    for k, prompt in enumerate(["a hologic mammogram in CC view with big area",
                                "a siemens mammogram in MLO view with high density"]):
        run = generate(None, prompt, tmp_path / f"gen{k}", n=5, steps=10, seed=100 * k,
                       batch_size=5, pipe=pipe)
        for f in run.files:
            (synthetic / f"g{k}_{f.name}").write_bytes(f.read_bytes())
    planted = plant(world["train"], synthetic, 2, seed=0)
    record = memorization_run(world["train"], synthetic, tmp_path / "out",
                              holdout=world["holdout"], alpha=0.05)
    table = pd.read_csv(tmp_path / "out" / "memorization.csv")
    assert list(table.columns) == COLUMNS
    copies = table[table["image"].isin(planted)]
    generated = table[~table["image"].isin(planted)]
    assert len(copies) == 12 and len(generated) == 10
    # every planted copy flagged, matched to its source, mirrored ones as mirrored
    assert copies["flagged"].all(), copies
    assert (copies["nearest_train"] == copies["image"].map(lambda n: planted[n][0])).all()
    mirrored = copies["image"].map(lambda n: planted[n][1] in ("mirror", "combined"))
    assert (copies["mirrored"] == mirrored).all()
    assert copies["similarity"].min() > record.summary["threshold"]
    assert generated["flagged"].mean() <= 0.1, generated
    # outputs: the summary's copy rate with its exact CI, figures, the run record
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    k = int(table["flagged"].sum())
    assert summary["copy_rate"]["k"] == k and summary["copy_rate"]["n"] == 22
    assert [summary["copy_rate"]["ci_low"], summary["copy_rate"]["ci_high"]] == \
        pytest.approx(list(proportion_ci(k, 22)))
    assert summary["n_null"] == 100 and summary["null_source"].startswith("held-out")
    for name in ("closest_pairs.png", "closest_pairs.pdf", "similarity.png", "null.csv",
                 "provenance.json"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["kind"] == "memorization" and run["inputs"]["synthetic"]["n_files"] == 22


@pytest.mark.slow
def test_unseen_real_images_are_flagged_at_the_calibrated_rate(world, tmp_path):
    """Held-out null and leave-one-out null: unseen real phantoms are not copies; at α = 0.05
    about 1.5 of 30 would be flagged by chance (P(≥ 5) = 0.016)."""
    from mame_eval.journeys.memorization import memorization_run

    for null in ("holdout", "leave-one-out"):
        out = tmp_path / null
        record = memorization_run(world["train"], world["unseen"], out, alpha=0.05,
                                  holdout=world["holdout"] if null == "holdout" else None,
                                  cache_dir=world["root"] / "cache")
        assert record.summary["n_synthetic"] == 30
        assert record.summary["flagged"] <= 4, (null, record.summary)
        # unseen real images are as close to the training set as the null images are
        lo, hi = record.summary["dcr_auroc_ci"]
        assert lo < 0.5 < hi, (null, record.summary)
    assert any("leave-one-out" in n for n in record.notes)


@pytest.mark.slow
def test_a_rerun_reuses_features_and_re_ranking(world, tmp_path):
    from mame_eval.journeys.memorization import memorization_run

    synthetic = tmp_path / "synthetic"
    synthetic.mkdir()
    plant(world["train"], synthetic, 1, seed=1)
    first = memorization_run(world["train"], synthetic, tmp_path / "a", alpha=0.1,
                             holdout=world["holdout"], max_null=20)
    checkpoints = sorted((tmp_path / "a" / "cache" / "memorization").glob("*.npz"))
    assert checkpoints
    stamps = [p.stat().st_mtime_ns for p in checkpoints]
    second = memorization_run(world["train"], synthetic, tmp_path / "a", alpha=0.1,
                              holdout=world["holdout"], max_null=20)
    assert [p.stat().st_mtime_ns for p in checkpoints] == stamps  # read, not recomputed
    assert first.summary == second.summary
    assert first.summary["flagged"] == 6
    # what a sweep calls: one reference, then a copy rate per set of files
    from mame_eval.journeys.memorization import build_reference

    ref = build_reference(world["train"], holdout=world["holdout"], alpha=0.1, max_null=20,
                          cache_dir=tmp_path / "a" / "cache")
    assert ref.threshold == first.summary["threshold"]
    rate = ref.copy_rate(sorted(synthetic.iterdir()))
    assert (rate.k, rate.n) == (6, 6) and rate.row()["copy_rate"] == 1.0
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(small)
    with pytest.raises(InputError, match="64×64 px but the training images are 128×128"):
        ref.copy_rate([small])


# --------------------------------------------------------------------------- the command line


def _cli(monkeypatch, capsys, *args):
    """``mame-eval memorization ARGS`` through the console entry point, in-process."""
    from mame_eval.cli import main

    monkeypatch.setattr(sys, "argv", ["mame-eval", "memorization", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def _images(folder, n, size=(64, 64), seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(breast_like(rng, size)).save(folder / f"{i:03d}.png")
    return folder


@pytest.mark.parametrize("case, fragment", [
    ("empty", "--train {train}: no images"),
    ("non-images", "--synthetic {synthetic}/notes.png: not a readable image"),
    ("text-only", "--synthetic {synthetic}: no images"),
    ("sizes", "images are 80×64 px but the training images"),
    ("mixed-sizes", "px, but 000.png in the same folder is 64×64"),
    ("same", "--synthetic {train} is the --train folder"),
    ("holdout-copy", "byte-identical to training images"),
    ("few-null", "need at least 99"),
])
def test_bad_inputs_are_one_line(case, fragment, tmp_path, monkeypatch, capsys):
    train = _images(tmp_path / "train", 4)
    synthetic = tmp_path / "synthetic"
    args = ["--train", train, "--synthetic", synthetic, "--out", tmp_path / "out"]
    if case == "empty":
        train = tmp_path / "empty"
        train.mkdir()
        args[1] = train
        _images(synthetic, 2)
    elif case == "non-images":
        synthetic.mkdir()
        (synthetic / "notes.png").write_text("not an image")
    elif case == "text-only":
        synthetic.mkdir()
        (synthetic / "notes.txt").write_text("not an image")
    elif case == "sizes":
        _images(synthetic, 2, size=(80, 64))
    elif case == "mixed-sizes":
        _images(synthetic, 2)
        Image.fromarray(np.zeros((70, 64), np.uint8)).save(synthetic / "zzz.png")
    elif case == "same":
        args[3] = train
    elif case == "holdout-copy":
        _images(synthetic, 2)
        holdout = _images(tmp_path / "holdout", 3, seed=9)
        (holdout / "copy.png").write_bytes((train / "001.png").read_bytes())
        args += ["--holdout", holdout]
    elif case == "few-null":
        _images(synthetic, 2)
    code, out, err = _cli(monkeypatch, capsys, *args)
    lines = err.strip().splitlines()
    assert code == 1 and out == ""
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert fragment.format(train=train, synthetic=synthetic) in lines[0]
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_the_console_script_reports_a_bad_folder_in_one_line(tmp_path):
    res = subprocess.run([sys.executable, "-m", "mame_eval", "memorization", "--train",
                          str(tmp_path / "missing"), "--synthetic", str(tmp_path), "--out",
                          str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == [f"error: --train {tmp_path / 'missing'}: "
                                               "folder not found"]


@pytest.mark.slow
def test_cli_audit_prints_the_copy_rate(world, tmp_path, monkeypatch, capsys):
    synthetic = tmp_path / "synthetic"
    synthetic.mkdir()
    plant(world["train"], synthetic, 1, seed=2)
    code, out, err = _cli(monkeypatch, capsys, "--train", world["train"], "--synthetic",
                          synthetic, "--out", tmp_path / "out", "--alpha", "0.05",
                          "--cache-dir", world["root"] / "cache")
    assert code in (0, None), err
    assert out.startswith("copy rate 6/6 = 1.0000 (95 % CI 0.5407–1.0000)")
    assert "note: no --holdout" in err
