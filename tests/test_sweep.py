"""`mame-eval sweep`: per guidance scale diversity, FID/KID and prompt fidelity, resumable."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from mame_eval.errors import ConfigError
from mame_eval.images import load_rgb
from mame_eval.journeys.sweep import load_sweep_config, real_images_like, run_sweep
from mame_eval.metrics.diversity import diversity, mean_over_sets

pytest_plugins = ["conftest_models"]
pytestmark = [
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.usefixtures("one_thread"),
]

PROMPTS = ["a hologic mammogram in CC view with small area",
           "a siemens mammogram in MLO view with high density"]


class MeanStd(torch.nn.Module):
    def forward(self, x):
        return torch.stack([x.mean((1, 2, 3)), x.std((1, 2, 3)), x.amax((1, 2, 3))], dim=1)


@pytest.fixture(scope="module")
def sweep_inputs(tmp_path_factory, tiny_txt2img, prepared):
    from mame_eval.cad.model import MammoNet

    root = tmp_path_factory.mktemp("sweep")
    ext = root / "ext.pt"
    torch.jit.script(MeanStd()).save(str(ext))
    torch.manual_seed(0)
    MammoNet(image_size=32, width=4, blocks=[1]).save_pretrained(root / "mammonet")
    text = (f'name = "t"\nmodel = "{tiny_txt2img}"\nout = "{root / "out"}"\n'
            f"prompts = {json.dumps(PROMPTS)}\nguidance = [1.0, 4.0]\nn = 3\nsteps = 2\n"
            f'real_baseline = "{prepared / "healthy"}"\n'
            f'[fid]\nreal = "{prepared / "healthy"}"\nfeatures = "{ext}"\nn_boot = 20\n'
            f'[fidelity]\nclassifier = "{root / "mammonet"}"\n'
            f'training_prompts = "{prepared / "healthy" / "metadata.jsonl"}"\n')
    (root / "sweep.toml").write_text(text)
    return root


@pytest.fixture(scope="module")
def swept(sweep_inputs):
    config = load_sweep_config(sweep_inputs / "sweep.toml")
    return config, run_sweep(config)


def test_sweep_writes_one_row_per_scale_and_every_table(swept):
    config, report = swept
    out = config.out
    table = pd.read_csv(out / "sweep.csv")
    assert list(table["guidance"]) == [1.0, 4.0] and (table["n_images"] == 6).all()
    for column in ("ms_ssim", "ms_ssim_ci_low", "ms_ssim_ci_high", "fid", "fid_ci_low", "kid",
                   "kid_std", "area_adherence", "view_adherence", "mean_adherence"):
        assert column in table and table[column].notna().all(), column
    assert ((table["ms_ssim_ci_low"] <= table["ms_ssim"])
            & (table["ms_ssim"] <= table["ms_ssim_ci_high"])).all()
    for name in ("diversity.csv", "fidelity.csv", "records.csv", "tradeoff.png",
                 "tradeoff.pdf", "provenance.json"):
        assert (out / name).stat().st_size > 0, name
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["command"] == "sweep" and prov["settings"]["n"] == 3
    assert len(list((out / "images").rglob("*.png"))) == 12  # 2 scales x 2 prompts x 3


def test_sweep_numbers_match_independent_computations(swept):
    config, report = swept
    out = config.out
    div = pd.read_csv(out / "diversity.csv")
    table = pd.read_csv(out / "sweep.csv")
    for scale in (1.0, 4.0):
        results = []
        for k, prompt in enumerate(PROMPTS):
            files = sorted((out / "images" / f"g{scale:g}" / f"p{k}").glob("*.png"))
            res = diversity([load_rgb(f) for f in files], seed=config.seed)
            row = div[(div["guidance"] == scale) & (div["prompt"] == prompt)].iloc[0]
            assert row["mean"] == pytest.approx(res.mean, abs=1e-9)
            results.append(res)
        mean, _, _ = mean_over_sets(results)
        assert table.loc[table["guidance"] == scale, "ms_ssim"].item() == pytest.approx(mean)
    # Adherence is the share of records whose measured value equals the requested one.
    records = pd.read_csv(out / "records.csv")
    fid = pd.read_csv(out / "fidelity.csv")
    for scale in (1.0, 4.0):
        part = records[records["guidance"] == scale]
        asked = part[part["requested_view"].notna()]
        expected = float((asked["requested_view"] == asked["measured_view"]).mean())
        got = fid[(fid["guidance"] == scale) & (fid["attribute"] == "view")]["accuracy"].item()
        assert got == pytest.approx(expected)
    # the real baseline: one row per prompt that has matching real images
    real = div[div["source"] == "real"]
    assert set(real["prompt"]) <= set(PROMPTS) and real["guidance"].isna().all()


def test_a_finished_sweep_reruns_without_the_model(swept, monkeypatch):
    config, report = swept
    stamp = {p: p.stat().st_mtime_ns for p in (config.out / "images").rglob("*.png")}

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded for a finished sweep")

    monkeypatch.setattr("mame_eval.models.load_pipeline", no_loading)
    again = run_sweep(config)
    assert {p: p.stat().st_mtime_ns for p in (config.out / "images").rglob("*.png")} == stamp
    pd.testing.assert_frame_equal(again.table, report.table)


def test_a_changed_setting_is_never_answered_with_old_images(swept):
    from mame_eval.errors import InputError

    config, _ = swept
    for change in ({"height": 16, "width": 16}, {"dtype": "bf16"}):
        with pytest.raises(InputError, match="already holds a run.*new out folder"):
            run_sweep(config.model_copy(update=change))


def test_sweep_config_errors(sweep_inputs, tmp_path):
    path = sweep_inputs / "sweep.toml"
    with pytest.raises(ConfigError, match="unknown key 'nn'"):
        load_sweep_config(path, ["nn=3"])
    with pytest.raises(ConfigError, match="prompts: unknown view"):
        load_sweep_config(path, ['prompts=["a mammogram in AP view with small area"]'])
    with pytest.raises(ConfigError, match="guidance"):
        load_sweep_config(path, ["guidance=14:4"])
    with pytest.raises(ConfigError, match="protocol"):
        load_sweep_config(path, ["protocol=some"])
    assert load_sweep_config(path, ["fid.features=mammonet"]).fid.features == "mammonet"
    with pytest.raises(ConfigError, match="not found"):
        load_sweep_config(tmp_path / "absent.toml")


def test_cli_sweep_bad_definition_is_one_line(tmp_path, capsys):
    from mame_eval.cli import main

    bad = tmp_path / "bad.toml"
    bad.write_text(f'name = "x"\nout = "{tmp_path / "o"}"\nprompts = []\n')
    with pytest.raises(SystemExit) as exit_:
        import sys

        sys.argv = ["mame-eval", "sweep", str(bad)]
        main()
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 1
    assert err.startswith("error: ") and "prompts" in err and "\n" not in err
    assert not (tmp_path / "o").exists()


def test_mean_over_sets_is_the_average_with_a_bootstrap_ci():
    rng = np.random.default_rng(0)
    sets = [[rng.integers(0, 256, (32, 32), dtype=np.uint8) for _ in range(4)]
            for _ in range(2)]
    a, b = (diversity(s, seed=1) for s in sets)
    mean, lo, hi = mean_over_sets([a, b])
    assert mean == pytest.approx((a.mean + b.mean) / 2)
    assert lo <= mean <= hi
    assert mean_over_sets([a]) == (a.mean, a.ci_low, a.ci_high)
    # The seeds are resampled jointly (image i of every prompt shares its noise): two copies of
    # one set have exactly that set's interval — independent draws would narrow it.
    twin = diversity(sets[0], seed=1)
    assert mean_over_sets([a, twin], seed=1) == pytest.approx((a.mean, a.ci_low, a.ci_high))


def test_real_images_like_matches_every_named_attribute(prepared):
    rows = [json.loads(line) for line in
            (prepared / "healthy" / "metadata.jsonl").read_text().splitlines()]
    row = rows[0]
    prompt = row["prompt"]
    files = real_images_like(prepared / "healthy", prompt, n=50)
    wanted = {r["file_name"] for r in rows if r["prompt"] == prompt}
    assert {f.name for f in files} == wanted  # fewer than n exist: all of them
    assert real_images_like(prepared / "healthy", prompt, n=1, seed=3)[0].name in wanted


def test_copy_rate_per_scale_and_paired_trends(swept, sweep_inputs, prepared, tmp_path):
    """``[memorization]``: one reference, a copy rate per scale equal to the audit's own; the
    images of scale 1 planted in the training set are flagged. Trends: paired over seeds."""
    import shutil

    from PIL import Image

    from mame_eval.journeys.memorization import build_reference
    from mame_eval.journeys.sweep import MemorizationSettings

    config, _ = swept
    out = tmp_path / "out"
    shutil.copytree(config.out / "images", out / "images")  # a finished sweep: no generation
    train = tmp_path / "train"
    train.mkdir()
    for k, f in enumerate(sorted((prepared / "healthy").glob("*.png"))[:12]):
        Image.open(f).convert("L").resize((32, 32)).save(train / f"phantom{k}.png")
    planted = sorted((out / "images" / "g1" / "p0").glob("*.png"))
    for f in planted:
        shutil.copy(f, train / f"copy_{f.name}")
    settings = MemorizationSettings(train=train, features=str(sweep_inputs / "ext.pt"),
                                    alpha=0.1, max_null=20)
    cfg = config.model_copy(update={"out": out, "fid": None, "memorization": settings,
                                    "real_baseline": None, "n_boot": 500})
    report = run_sweep(cfg)
    table = pd.read_csv(out / "sweep.csv")
    ref = build_reference(train, features=settings.features, alpha=0.1, max_null=20,
                          seed=cfg.seed, settings=settings.match())
    for scale in (1.0, 4.0):
        files = [f for k in range(len(PROMPTS))
                 for f in sorted((out / "images" / f"g{scale:g}" / f"p{k}").glob("*.png"))]
        rate = ref.copy_rate(files)
        row = table[table["guidance"] == scale].iloc[0]
        assert (row["copy_rate_k"], row["copy_rate_n"]) == (rate.k, rate.n)
        assert (row["copy_rate_ci_low"], row["copy_rate_ci_high"]) == pytest.approx(
            (rate.ci_low, rate.ci_high))
    assert table.loc[table["guidance"] == 1.0, "copy_rate_k"].item() >= len(planted)
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["inputs"]["memorization_train"]["n_files"] == len(list(train.glob("*.png")))
    # trends: one per metric, the change is last minus first scale, the slope change / 3
    trends = pd.read_csv(out / "trends.csv").set_index("metric")
    assert set(trends.index) == {"ms_ssim", "mean_adherence", "copy_rate"}
    for metric, column in (("ms_ssim", "ms_ssim"), ("mean_adherence", "mean_adherence"),
                           ("copy_rate", "copy_rate")):
        change = table[column].iloc[1] - table[column].iloc[0]
        assert trends.loc[metric, "change"] == pytest.approx(change)
        assert trends.loc[metric, "slope"] == pytest.approx(change / 3)
        assert trends.loc[metric, "change_ci_low"] <= trends.loc[metric, "change_ci_high"]
        assert trends.loc[metric, "n_units"] == 3
    assert report.summary["ms_ssim_trend"]["text"].startswith("MS-SSIM ")
    assert "seed_index" in pd.read_csv(out / "records.csv")


def test_adherence_trend_is_a_paired_bootstrap_of_seeds():
    """Brute force: resample seed indices, recompute each scale's adherence from records."""
    from mame_eval.journeys.sweep import _adherence_replicates

    rng = np.random.default_rng(0)
    n = 5
    records = pd.DataFrame({
        "seed_index": list(range(n)) * 2,
        "requested_view": ["CC"] * n + ["MLO"] * n,
        "measured_view": rng.choice(["CC", "MLO"], 2 * n),
        "requested_area": ["small"] * 2 * n,
        "measured_area": rng.choice(["small", "big"], 2 * n)})
    seeds = rng.multinomial(n, np.full(n, 1 / n), size=50).astype(float)
    estimate, reps = _adherence_replicates(records, None, seeds)
    view = (records["requested_view"] == records["measured_view"]).mean()
    area = (records["requested_area"] == records["measured_area"]).mean()
    assert estimate == pytest.approx((view + area) / 2)
    for b in range(50):
        w = seeds[b][records["seed_index"]]
        v = (w * (records["requested_view"] == records["measured_view"])).sum() / w.sum()
        a = (w * (records["requested_area"] == records["measured_area"])).sum() / w.sum()
        assert reps[b] == pytest.approx((v + a) / 2)


def test_an_fid_trend_too_small_to_estimate_says_so(swept):
    """3 seeds per prompt and 3-d features: half a set is not more than the dimensions, so the
    paired FID trend is skipped with a note instead of printing an interval it cannot hold."""
    config, _ = swept
    run = json.loads((config.out / "run.json").read_text())
    assert any("FID trend across guidance not computed" in n for n in run["notes"])
    trends = pd.read_csv(config.out / "trends.csv")
    assert "fid_inf" not in set(trends["metric"]) and "method" in trends
