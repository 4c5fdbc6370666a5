"""`mame-eval augment`: the study definition, the statistics of its comparisons, the training
hook, the composition of every arm, and a reduced tiny study end to end (slow) — schema,
CIs that contain their estimates, one real test set for every arm, no synthetic image in it,
resume, and 2 processes under `accelerate launch`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from mame_eval.errors import ConfigError, InputError
from mame_eval.io import file_sha256, write_jsonl
from mame_eval.journeys.augment import (
    Design,
    Tensors,
    Unit,
    load_augment_config,
    n_real_lesions,
    n_synthetic,
    plan_units,
    unit_rows,
)
from mame_eval.stats.compare import (
    auc_contrast,
    holm,
    paired_mean_difference,
    sensitivity_at_specificity,
)

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- configuration


def test_shipped_definitions_validate_and_plan_at_least_three_seeds():
    tiny = load_augment_config(ROOT / "training" / "augment-tiny.toml")
    vindr = load_augment_config(ROOT / "training" / "augment-vindr.toml")
    for cfg in (tiny, vindr):
        assert len(cfg.seeds) >= 3
        units = plan_units(cfg)
        arms = {u.arm for u in units}
        assert arms == {"baseline", "synthetic", "synthetic-only", "classic"}
        per_config = len(cfg.real.fractions) * len(cfg.seeds)
        assert len(units) == per_config * (1 + len(cfg.arms.synthetic_ratios) + 2)
        assert len({u.key for u in units}) == len(units)
    assert tiny.phantoms is not None and tiny.synthesis.model is None
    assert vindr.synthesis.model == "Likalto4/vindr_lesion-inpainting"
    assert vindr.data_dir is not None and vindr.test.split_csv is not None


@pytest.mark.parametrize(("override", "message"), [
    ("training.stepz=3", "unknown key 'training.stepz' (did you mean 'steps'?)"),
    ("real.fractions=[0.5, 1.5]", "every real fraction must be in (0, 1]"),
    ("arms.synthetic_ratios=[0, 1]", "every synthetic ratio must be in (0, 100]"),
    ("seeds=[1, 1, 2]", "seeds must be distinct"),
    ("training.lr=-1", "training.lr = -1"),
    ("training.model.depth=3", "depth"),
    ("synthesis.box_fraction=[0.3, 0.1]", "expected 0 < low <= high < 1"),
    ("phantoms.size=64x64", "at least 128 pixels"),
    ("data_dir=somewhere", "give exactly one of data_dir"),
    ("colour=blue", "unknown key 'colour'"),
])
def test_bad_config_lines_are_one_clear_error(override, message):
    with pytest.raises(ConfigError) as info:
        load_augment_config(ROOT / "training" / "augment-tiny.toml", [override])
    text = str(info.value)
    assert message in text, text
    assert "augment-tiny.toml" in text and "\n" not in text


def test_missing_config_file_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="augment config file not found"):
        load_augment_config(tmp_path / "nope.toml")


# --------------------------------------------------------------------------- statistics


def _delong_by_hand(truth, a, b):
    """Paired DeLong difference from the definition, O(m·n) loops (an independent reference)."""
    pos, neg = np.flatnonzero(truth == 1), np.flatnonzero(truth == 0)

    def psi(x, y):
        return 1.0 if x > y else 0.5 if x == y else 0.0

    v10 = np.array([[np.mean([psi(s[i], s[j]) for j in neg]) for i in pos] for s in (a, b)])
    v01 = np.array([[np.mean([psi(s[i], s[j]) for i in pos]) for j in neg] for s in (a, b)])
    s10, s01 = np.cov(v10), np.cov(v01)
    var = (s10[0, 0] + s10[1, 1] - 2 * s10[0, 1]) / len(pos) + \
        (s01[0, 0] + s01[1, 1] - 2 * s01[0, 1]) / len(neg)
    return v10[0].mean() - v10[1].mean(), np.sqrt(var)


def test_auc_contrast_matches_the_definition_and_sklearn():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    truth = np.r_[np.ones(14), np.zeros(19)].astype(int)
    a = truth * 0.8 + rng.normal(size=truth.size)
    b = 0.5 * a + truth * 0.3 + rng.normal(size=truth.size)
    b[:4] = np.round(b[:4], 1)  # some ties
    c = auc_contrast(truth, np.stack([a, b]), [1, -1])
    diff, se = _delong_by_hand(truth, a, b)
    assert c.estimate == pytest.approx(roc_auc_score(truth, a) - roc_auc_score(truth, b))
    assert c.estimate == pytest.approx(diff) and c.se == pytest.approx(se)
    assert c.p == pytest.approx(2 * stats.norm.sf(abs(diff) / se))
    z = stats.norm.ppf(0.975)
    assert c.ci == pytest.approx((diff - z * se, diff + z * se))
    assert (c.n_pos, c.n_neg) == (14, 19)
    # the mean over two "seeds" per arm is the mean of the paired differences
    a2, b2 = a + rng.normal(0, 0.3, a.size), b + rng.normal(0, 0.3, b.size)
    m = auc_contrast(truth, np.stack([a, a2, b, b2]), [0.5, 0.5, -0.5, -0.5])
    d1 = auc_contrast(truth, np.stack([a, b]), [1, -1]).estimate
    d2 = auc_contrast(truth, np.stack([a2, b2]), [1, -1]).estimate
    assert m.estimate == pytest.approx((d1 + d2) / 2)
    with pytest.raises(InputError, match="3 weights for 2 score vectors"):
        auc_contrast(truth, np.stack([a, b]), [1, -1, 0])


def test_auc_contrast_ci_covers_the_true_difference():
    """Coverage of the 95 % paired DeLong CI: two correlated binormal models, new test cases
    per replicate; the true AUROCs are Φ(d / √2) for each model."""
    rng = np.random.default_rng(0)
    d_a, d_b, rho, m, n, reps = 1.2, 0.8, 0.6, 60, 80, 600
    true = stats.norm.cdf(d_a / np.sqrt(2)) - stats.norm.cdf(d_b / np.sqrt(2))
    truth = np.r_[np.ones(m), np.zeros(n)].astype(int)
    cov = [[1, rho], [rho, 1]]
    hits = 0
    for _ in range(reps):
        noise = rng.multivariate_normal([0, 0], cov, size=m + n)
        a = noise[:, 0] + d_a * truth
        b = noise[:, 1] + d_b * truth
        lo, hi = auc_contrast(truth, np.stack([a, b]), [1, -1]).ci
        hits += lo <= true <= hi
    coverage = hits / reps
    # binomial SE of a 95 % coverage over 600 replicates ≈ 0.009
    assert 0.92 <= coverage <= 0.975, coverage


def test_paired_mean_difference_is_the_paired_t_test():
    a = np.array([0.71, 0.75, 0.69, 0.73])
    b = np.array([0.74, 0.79, 0.70, 0.78])
    d = paired_mean_difference(a, b)
    ref = stats.ttest_rel(b, a)
    lo, hi = stats.t.interval(0.95, 3, loc=np.mean(b - a), scale=stats.sem(b - a))
    assert d.mean == pytest.approx(np.mean(b - a)) and d.n == 4 and d.n_positive == 4
    assert d.p == pytest.approx(ref.pvalue) and d.ci == pytest.approx((lo, hi))
    one = paired_mean_difference([0.7], [0.8])
    assert one.ci == (None, None) and one.p is None and one.mean == pytest.approx(0.1)
    same = paired_mean_difference([0.7, 0.6], [0.75, 0.65])
    assert same.ci == pytest.approx((0.05, 0.05)) and same.p == 0.0
    with pytest.raises(InputError, match="equal lengths"):
        paired_mean_difference([1, 2], [1])


def test_seed_interval_keeps_its_coverage_with_three_seeds():
    """The t-interval over 3 seeds: 95 % coverage (a percentile bootstrap of 3 values would
    cover far less)."""
    rng = np.random.default_rng(1)
    reps, hits = 4000, 0
    for _ in range(reps):
        base = rng.normal(0.80, 0.02, 3)
        arm = base + rng.normal(0.01, 0.015, 3)
        lo, hi = paired_mean_difference(base, arm).ci
        hits += lo <= 0.01 <= hi
    assert abs(hits / reps - 0.95) < 0.012


def test_holm_matches_the_textbook_example():
    p = [0.01, 0.04, 0.03, 0.005]
    np.testing.assert_allclose(holm(p), [0.03, 0.06, 0.06, 0.02])
    out = holm([0.2, np.nan, 0.01])
    assert np.isnan(out[1]) and out[0] == pytest.approx(0.2) and out[2] == pytest.approx(0.02)
    assert np.all(holm([0.9, 0.8]) <= 1.0)


def test_sensitivity_at_specificity_is_the_best_allowed_roc_point():
    rng = np.random.default_rng(5)
    truth = np.r_[np.ones(30), np.zeros(41)].astype(int)
    score = np.round(truth * 0.9 + rng.normal(size=truth.size), 1)  # ties
    for target in (0.5, 0.8, 0.9, 0.95):
        op = sensitivity_at_specificity(truth, score, target)
        best = max(np.mean(score[truth == 1] > c) for c in np.r_[score, -np.inf]
                    if np.mean(score[truth == 0] <= c) >= target)
        assert op.specificity >= target and op.sensitivity == pytest.approx(best)
        assert op.tp + op.fn == 30 and op.tn + op.fp == 41


# --------------------------------------------------------------------------- the training hook


def _tiny_prepared(root: Path, n_per_class: int = 12, size: int = 32) -> None:
    """A prepared dataset written by hand: healthy = noise; lesion = noise + a bright box."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for kind in ("healthy", "lesion/images", "lesion/masks"):
        (root / kind).mkdir(parents=True, exist_ok=True)
    healthy, lesion = [], []
    for i in range(2 * n_per_class):
        img = (rng.random((size, size)) * 120).astype(np.uint8)
        fields = {"vendor": "hologic", "view": ("CC", "MLO")[i % 2], "laterality": "L",
                  "density": None, "area": "medium", "area_ratio": 0.5, "source_id": f"s{i}"}
        if i % 2:
            mask = np.zeros((size, size), np.uint8)
            y, x = rng.integers(4, size - 12, 2)
            mask[y:y + 8, x:x + 8] = 255
            img = np.maximum(img, mask // 255 * 230).astype(np.uint8)
            Image.fromarray(img).convert("RGB").save(root / "lesion/images" / f"{i}.png")
            Image.fromarray(mask).save(root / "lesion/masks" / f"{i}.png")
            lesion.append({"file_name": f"images/{i}.png", "mask_file": f"masks/{i}.png",
                           "prompt": "a mammogram with a lesion", **fields})
        else:
            Image.fromarray(img).convert("RGB").save(root / "healthy" / f"{i}.png")
            healthy.append({"file_name": f"{i}.png", "prompt": "x", **fields})
    write_jsonl(root / "healthy" / "metadata.jsonl", healthy)
    write_jsonl(root / "lesion" / "metadata.jsonl", lesion)


def test_fit_mammonet_trains_exactly_as_train_cad(tmp_path):
    """Same rows, same seed, same steps: the weights of fit_mammonet equal train_cad's."""
    from mame_eval.cad.data import load_images, load_masks, load_samples, split_by_source
    from mame_eval.cad.model import ATTRIBUTES
    from mame_eval.cad.train import fit_mammonet, load_cad_config, train_cad

    _tiny_prepared(tmp_path / "data")
    cfg = load_cad_config(data={
        "data_dir": str(tmp_path / "data"), "output_dir": str(tmp_path / "cad"),
        "image_size": 32, "epochs": 3, "batch_size": 4, "val_fraction": 0.25, "seed": 7,
        "augment_vflip": True, "model": {"width": 4, "blocks": [1, 1]}, "threads": 1})
    reference = train_cad(cfg).model
    samples, _ = load_samples(cfg.data_dir)
    train_idx, _ = split_by_source(samples, cfg.val_fraction, cfg.seed)
    x = load_images([s.path for s in samples], 32)
    masks, known = load_masks(samples, 32)
    lesion = torch.tensor([s.lesion for s in samples], dtype=torch.float32)
    attrs = {a: torch.tensor([s.labels[a] for s in samples]) for a in ATTRIBUTES}
    model, history = fit_mammonet(cfg, x, lesion, attrs, train_idx, masks, known)
    assert history[-1]["step"] == 3 * (len(train_idx) // 4)
    for (name, p), q in zip(model.state_dict().items(), reference.state_dict().values(),
                            strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)
    # uint8 images give the same model as their float copies (÷ 255 per batch)
    x8 = (x * 255).round().to(torch.uint8)
    m8, _ = fit_mammonet(cfg.model_copy(update={"max_steps": 4}), x8, lesion, attrs,
                         train_idx, masks, known)
    mf, _ = fit_mammonet(cfg.model_copy(update={"max_steps": 4}), x8.float() / 255, lesion,
                         attrs, train_idx, masks, known)
    torch.testing.assert_close(m8.state_dict(), mf.state_dict(), rtol=0, atol=0)


def test_intensity_augmentation_changes_only_the_image_channel():
    from mame_eval.cad.train import _augment

    x = torch.rand(6, 2, 16, 16)
    x[:, :, :, :4] = 0.0  # a black background
    out = _augment(x, 0.0, False, torch.Generator().manual_seed(0), intensity=0.5)
    torch.testing.assert_close(out[:, 1], x[:, 1], rtol=0, atol=0)
    assert torch.all(out[:, 0, :, :4] == 0) and not torch.equal(out[:, 0], x[:, 0])
    assert out.min() >= 0 and out.max() <= 1
    # intensity 0 draws nothing more: shift/flip results are unchanged
    a = _augment(x, 0.1, True, torch.Generator().manual_seed(3))
    b = _augment(x, 0.1, True, torch.Generator().manual_seed(3), intensity=0.0)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


# --------------------------------------------------------------------------- arm composition


def _design(n_test=6, n_lesion=8, n_healthy=10, n_syn=16):
    from mame_eval.cad.data import Sample

    samples = []
    for i in range(n_test + n_lesion + n_healthy):
        lesion = int(i < n_test // 2 or n_test <= i < n_test + n_lesion)
        samples.append(Sample(Path(f"{i}.png"), f"s{i}", lesion, {}))
    test = list(range(n_test))
    pool_lesion = list(range(n_test, n_test + n_lesion))
    pool_healthy = list(range(n_test + n_lesion, len(samples)))
    design = Design(Path("."), samples, test, pool_lesion, pool_healthy, {}, {}, {}, {})
    n_real = len(samples)
    tensors = Tensors(None, None, {}, None, None, {i: i for i in range(n_real)},
                      list(range(n_real, n_real + n_syn)))
    return design, tensors


def test_every_arm_is_composed_as_specified():
    design, tensors = _design()
    healthy = set(design.pool_healthy)
    real_lesions = set(design.pool_lesion)
    synthetic = set(tensors.synthetic_rows)
    test = set(design.test)
    for seed in (0, 1):
        by_fraction = {}
        for f in (0.25, 0.5, 1.0):
            base, comp = unit_rows(Unit("baseline", 0.0, f, seed), design, tensors)
            classic, _ = unit_rows(Unit("classic", 0.0, f, seed), design, tensors)
            assert base == classic and not set(base) & test
            assert healthy <= set(base) and not set(base) & synthetic
            lesions = set(base) & real_lesions
            assert len(lesions) == n_real_lesions(f, 8) == comp["n_train_real_lesion"]
            by_fraction[f] = lesions
            syn_sets = []
            for r in (0.5, 1.0, 2.0):
                rows, comp = unit_rows(Unit("synthetic", r, f, seed), design, tensors)
                assert set(rows) & real_lesions == lesions  # the same real data
                assert healthy <= set(rows) and not set(rows) & test
                syn = set(rows) & synthetic
                assert len(syn) == n_synthetic(Unit("synthetic", r, f, seed), 8)
                assert len(syn) == comp["n_train_synthetic"]
                syn_sets.append(syn)
            assert syn_sets[0] <= syn_sets[1] <= syn_sets[2]  # nested across ratios
            only, comp = unit_rows(Unit("synthetic-only", 1.0, f, seed), design, tensors)
            assert not set(only) & real_lesions and comp["n_train_real_lesion"] == 0
            assert len(set(only) & synthetic) == len(lesions)
        assert by_fraction[0.25] <= by_fraction[0.5] <= by_fraction[1.0]  # nested fractions


# --------------------------------------------------------------------------- end to end (slow)

STUDY = """
name = "augment-ci"
seeds = [0, 1, 2]
threads = 1
[phantoms]
n = 96
seed = 5
size = "160x128"
prepare_size = 128
[test]
max_lesion = 10
max_healthy = 10
[real]
fractions = [0.5, 1.0]
max_lesion = 6
max_healthy = 16
[synthesis]
steps = 2
batch_size = 6
[arms]
synthetic_ratios = [1.0]
[training]
image_size = 32
steps = 6
batch_size = 8
[training.model]
width = 4
blocks = [1, 1]
"""


def _cli(args: list[str]):
    from typer.testing import CliRunner

    from mame_eval.cli import app

    return CliRunner().invoke(app, args)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("augment")
    (root / "study.toml").write_text(STUDY)
    result = _cli(["augment", str(root / "study.toml"), "--out", str(root / "out")])
    assert result.exit_code == 0, result.output
    return root, result.output


@pytest.mark.slow
def test_tiny_study_tables_pass_schema_and_sanity_checks(study):
    root, output = study
    out = root / "out"
    table = pd.read_csv(out / "augment.csv")
    for column in ("arm", "synthetic_ratio", "real_fraction", "seed", "auroc", "ci_low",
                   "ci_high", "sensitivity", "sensitivity_ci_low", "sensitivity_ci_high",
                   "n_train_synthetic", "test_sha256", "train_sha256"):
        assert column in table.columns
    assert len(table) == 4 * 2 * 3  # arms × fractions × seeds
    assert (table["ci_low"] <= table["auroc"]).all() and (table["auroc"] <= table["ci_high"]).all()
    assert (table["sensitivity_ci_low"] <= table["sensitivity"]).all()
    assert (table["sensitivity"] <= table["sensitivity_ci_high"]).all()
    assert (table["specificity"] >= table["specificity_target"]).all()
    assert table["steps"].nunique() == 1  # the same optimisation steps in every arm
    none = table["arm"].isin(["baseline", "classic"])
    assert (table.loc[none, "n_train_synthetic"] == 0).all()
    assert (table.loc[~none, "n_train_synthetic"] > 0).all()
    assert (table.loc[table["arm"] == "synthetic-only", "n_train_real_lesion"] == 0).all()

    comparison = pd.read_csv(out / "comparison.csv")
    assert len(comparison) == 3 * 2  # (synthetic ×1, synthetic-only, classic) × fractions
    assert (comparison["delong_ci_low"] <= comparison["difference"]).all()
    assert (comparison["difference"] <= comparison["delong_ci_high"]).all()
    assert (comparison["seed_ci_low"] <= comparison["difference"]).all()
    assert (comparison["difference"] <= comparison["seed_ci_high"]).all()
    assert comparison["delong_p"].between(0, 1).all()
    assert (comparison["delong_p_holm"] >= comparison["delong_p"]).all()
    # the comparison's estimate is the mean of the per-seed paired differences of augment.csv
    for _, row in comparison.iterrows():
        arm = table[(table["arm"] == row["arm"]) & (table["synthetic_ratio"] ==
                                                    row["synthetic_ratio"])
                    & (table["real_fraction"] == row["real_fraction"])].sort_values("seed")
        base = table[(table["arm"] == "baseline") & (table["real_fraction"] ==
                                                     row["real_fraction"])].sort_values("seed")
        assert row["difference"] == pytest.approx(
            arm["auroc"].to_numpy().mean() - base["auroc"].to_numpy().mean())
    seeds = pd.read_csv(out / "comparison_seeds.csv")
    assert len(seeds) == 3 * 2 * 3
    assert ((seeds["ci_low"] <= seeds["difference"]) & (seeds["difference"] <=
                                                         seeds["ci_high"])).all()
    for name in ("augment.png", "augment.pdf", "provenance.json", "run.json"):
        assert (out / name).is_file()
    assert "difference to the baseline" in output and "n=3 seeds" in output


@pytest.mark.slow
def test_one_real_test_set_for_every_arm_and_no_synthetic_image_in_it(study):
    from mame_eval.io import read_jsonl
    from mame_eval.journeys.record import read_run
    from mame_eval.provenance import digest_files

    out = study[0] / "out"
    table = pd.read_csv(out / "augment.csv")
    assert table["test_sha256"].nunique() == 1
    run = read_run(out)
    assert run["kind"] == "augment"
    recorded = run["inputs"]["test_set"]
    assert recorded["sha256"] == table["test_sha256"].iloc[0]
    test_set = pd.read_csv(out / "test_set.csv")
    prepared = out / "data" / "prepared"
    files = [prepared / f for f in test_set["file"]]
    # the recorded hash is recomputable from the real files alone
    assert digest_files(files, root=prepared)["sha256"] == recorded["sha256"]
    assert recorded["n_pos"] == int(test_set["lesion"].sum()) == table["n_pos"].iloc[0]
    assert all(f.is_file() and file_sha256(f) == h for f, h in zip(files, test_set["sha256"],
                                                                     strict=True))
    synthetic = read_jsonl(out / "synthetic" / "manifest.jsonl")
    assert synthetic and not {r["source_id"] for r in synthetic} & set(test_set["source_id"])
    syn_hashes = {file_sha256(out / "synthetic" / r["file"]) for r in synthetic}
    assert not syn_hashes & set(test_set["sha256"])
    assert all("synthetic" not in f for f in test_set["file"])
    # every unit scored the same cases
    units = [json.loads(p.read_text()) for p in (out / "units").glob("*.json")]
    assert len(units) == len(table)
    assert {len(u["scores"]) for u in units} == {len(test_set)}
    assert {u["test_sha256"] for u in units} == {recorded["sha256"]}


@pytest.mark.slow
def test_rerun_resumes_finished_units_and_refuses_other_settings(study, monkeypatch,
                                                                       capsys):
    root = study[0]
    out = root / "out"
    before = {p.name: p.stat().st_mtime_ns for p in (out / "units").glob("*.json")}
    again = _cli(["augment", str(root / "study.toml"), "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert "(0 trained now)" in again.output
    run = json.loads((out / "run.json").read_text())
    assert run["units_trained"] == 0 and run["synthetic_generated"] == 0
    assert {p.name: p.stat().st_mtime_ns for p in (out / "units").glob("*.json")} == before
    (out / "units" / "classic_r0_f0.5_s1.json").unlink()
    once = _cli(["augment", str(root / "study.toml"), "--out", str(out)])
    assert once.exit_code == 0 and "(1 trained now)" in once.output
    # a changed synthetic image invalidates exactly the units that trained on it
    from PIL import Image

    path = out / "synthetic" / "images" / "00000.png"
    pixels = np.asarray(Image.open(path)).copy()
    pixels[0, 0] = 255 - pixels[0, 0]
    Image.fromarray(pixels).save(path)
    before = {p.name: p.stat().st_mtime_ns for p in (out / "units").glob("*.json")}
    changed = _cli(["augment", str(root / "study.toml"), "--out", str(out)])
    assert changed.exit_code == 0, changed.output
    after = {p.name: p.stat().st_mtime_ns for p in (out / "units").glob("*.json")}
    retrained = {name for name in before if after[name] != before[name]}
    assert retrained and all(n.startswith("synthetic") for n in retrained)
    assert f"({len(retrained)} trained now)" in changed.output
    from mame_eval.cli import main

    monkeypatch.setattr(sys, "argv", ["mame-eval", "augment", str(root / "study.toml"),
                                      "--out", str(out), "--set", "training.steps=7"])
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_.value.code == 1
    assert err.startswith("error: ") and "other settings (training differ)" in err


@pytest.mark.slow
def test_two_processes_split_the_units_and_give_the_same_table(study):
    """`accelerate launch` with 2 CPU processes (gloo): one table, each unit once, the same
    numbers as the single-process study (CPU, 1 thread: deterministic). The data and the
    synthetic images are copied from that study, so that the two tables share their inputs
    (splitting the inpainting across processes is run_indexed's, tested in test_generation)."""
    import shutil

    root = study[0]
    out = root / "dist"
    for part in ("data", "synthetic"):
        shutil.copytree(root / "out" / part, out / part)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
           "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "-m", "mame_eval", "augment", str(root / "study.toml"),
           "--out", str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = json.loads((out / "run.json").read_text())
    assert run["processes"] == 2 and run["units_trained"] == 24
    assert proc.stdout.count("difference to the baseline") == 1  # only the main one reports
    one = pd.read_csv(root / "out" / "augment.csv")
    two = pd.read_csv(out / "augment.csv")
    pd.testing.assert_frame_equal(one, two)
