"""MS-SSIM diversity against an independent per-pair pytorch-msssim loop and torchmetrics."""

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from pytorch_msssim import ms_ssim

from mame_eval.data.phantoms import PhantomSpec, render_phantom
from mame_eval.errors import InputError
from mame_eval.metrics.diversity import (
    MS_SSIM_WEIGHTS,
    MsSsimSettings,
    all_pairs,
    diversity,
    ms_ssim_pairs,
)

pytest_plugins = ["conftest_models"]
# one intra-op thread: the per-pair reference loops are 3-10x slower with two on a busy machine
pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")]


def random_images(n, size=192, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 255, (size, size))
    return [np.clip(base + rng.normal(0, 30 + 10 * i, base.shape), 0, 255).astype(np.uint8)
            for i in range(n)]


def phantom_images(n, size=192):
    out = []
    for i in range(n):
        spec = PhantomSpec(vendor="siemens" if i % 2 else "hologic",
                           view="MLO" if i % 3 else "CC", density="ABCD"[i % 4],
                           size=(256, 208))
        # display() is float 0…1: to the 8-bit scale the metric assumes
        display = np.round(255 * render_phantom(spec, i).display()).astype(np.uint8)
        gray = np.asarray(Image.fromarray(display).resize((size, size), Image.BILINEAR))
        out.append(np.stack([gray] * 3, axis=-1))  # RGB, as the models write them
    return out


def reference_pair(a, b):
    """One pair at a time, straight pytorch-msssim at the fixed settings (the notebook way)."""
    x = torch.tensor(np.asarray(a, np.float32)[..., 0] if np.asarray(a).ndim == 3
                     else np.asarray(a, np.float32))[None, None]
    y = torch.tensor(np.asarray(b, np.float32)[..., 0] if np.asarray(b).ndim == 3
                     else np.asarray(b, np.float32))[None, None]
    return float(ms_ssim(x, y, data_range=255, win_size=11, weights=list(MS_SSIM_WEIGHTS)))


@pytest.mark.parametrize("make", [random_images, phantom_images])
def test_batched_all_pairs_equal_the_per_pair_loop(make):
    images = make(5)
    pairs = all_pairs(5)
    ours = ms_ssim_pairs(images, pairs, batch_size=3)
    ref = [reference_pair(images[i], images[j]) for i, j in pairs]
    np.testing.assert_allclose(ours, ref, atol=1e-4)


@pytest.mark.parametrize("make, tolerance", [(random_images, 0.01), (phantom_images, 0.05)])
def test_agrees_with_torchmetrics(make, tolerance):
    """torchmetrics has its own implementation: its SSIM maps cover the reflect-padded full
    image, pytorch-msssim's (and ours) the valid region only, which matters at the coarse
    scales (32 px at 512 px / 16). Measured: 6e-3 on textures, 3e-2 on 8-bit phantoms whose
    borders hold structure (up to 0.46 on 512-px phantom pairs in benchmarks/diversity.py).
    So an independent check of the order of magnitude and of the ranking only; the reference
    to 1e-5 is pytorch-msssim. (With the phantoms left on their 0…1 float scale, as this test
    once did, every value is ≈ 1 and the check says nothing.)"""
    from scipy.stats import spearmanr
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

    images = make(4)
    pairs = all_pairs(4)
    ours = ms_ssim_pairs(images, pairs)
    gray = [np.asarray(im)[..., 0] if np.asarray(im).ndim == 3 else np.asarray(im)
            for im in images]
    ref = []
    for i, j in pairs:
        x = torch.tensor(gray[i], dtype=torch.float32)[None, None]
        y = torch.tensor(gray[j], dtype=torch.float32)[None, None]
        ref.append(float(multiscale_structural_similarity_index_measure(
            x, y, data_range=255.0, kernel_size=11, sigma=1.5, betas=MS_SSIM_WEIGHTS)))
    assert np.abs(ours - np.array(ref)).max() < tolerance
    assert np.ptp(ours) > 0.05  # the pairs differ: the comparison has something to rank
    assert spearmanr(ours, ref).statistic > 0.8


def test_identical_images_give_one():
    img = random_images(1)[0]
    result = diversity([img, img.copy(), img.copy()])
    assert result.mean == pytest.approx(1.0, abs=1e-6)
    assert result.std == pytest.approx(0.0, abs=1e-6)


def test_data_range_is_fixed_not_inferred():
    """A dim pair (values 0..50) must not be scored as if its range were 0..50."""
    rng = np.random.default_rng(1)
    a = rng.uniform(0, 50, (192, 192)).astype(np.uint8)
    b = rng.uniform(0, 50, (192, 192)).astype(np.uint8)
    ours = ms_ssim_pairs([a, b], [(0, 1)])[0]
    x, y = (torch.tensor(v, dtype=torch.float32)[None, None] for v in (a, b))
    inferred = float(ms_ssim(x, y, data_range=float(max(a.max(), b.max()))))
    assert ours == pytest.approx(reference_pair(a, b), abs=1e-6)
    assert abs(ours - inferred) > 1e-3


def test_all_pairs_counts_and_bootstrap_ci():
    images = random_images(8)
    result = diversity(images, n_boot=500, seed=3)
    assert result.n_images == 8 and result.n_pairs == 28
    assert result.ci_low <= result.mean <= result.ci_high
    assert result.std == pytest.approx(np.std(result.values, ddof=1))
    again = diversity(images, n_boot=500, seed=3)
    assert (again.ci_low, again.ci_high) == (result.ci_low, result.ci_high)


def test_bootstrap_resamples_images_not_pairs():
    """Brute-force bootstrap over images gives the same distribution as the closed form."""
    images = random_images(6)
    result = diversity(images, n_boot=4000, seed=0)
    values = dict(zip(map(tuple, result.pairs), result.values, strict=True))
    rng = np.random.default_rng(11)
    means = []
    for _ in range(1500):
        draw = rng.integers(0, 6, 6)
        vals = [values[tuple(sorted((draw[a], draw[b])))]
                for a in range(6) for b in range(a + 1, 6) if draw[a] != draw[b]]
        if vals:
            means.append(np.mean(vals))
    lo, hi = np.quantile(means, [0.025, 0.975])
    assert result.ci_low == pytest.approx(lo, abs=0.01)
    assert result.ci_high == pytest.approx(hi, abs=0.01)


def test_paper_protocol_uses_independent_pairs():
    images = random_images(6)
    result = diversity(images, protocol="paper")
    assert result.n_pairs == 3 and result.pairs == [(0, 1), (2, 3), (4, 5)]
    with pytest.raises(InputError, match="odd"):
        diversity(images[:5], protocol="paper")


@pytest.mark.parametrize("side, win, scales", [(200, 11, 5), (160, 9, 5), (128, 7, 5),
                                               (64, 3, 5), (32, 7, 1)])
def test_small_images_use_a_stated_fallback(side, win, scales):
    settings = MsSsimSettings.for_size(side)
    assert (settings.win_size, settings.scales) == (win, scales)
    assert (settings.fallback is None) == (side > 160)
    images = random_images(3, size=side)
    if settings.fallback:
        with pytest.warns(UserWarning, match="too small"):
            result = diversity(images)
        assert result.provenance()["settings"]["fallback"] == settings.fallback
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            diversity(images)


def test_bad_inputs():
    with pytest.raises(InputError, match="at least 2"):
        diversity(random_images(1))
    with pytest.raises(InputError, match="differ in size"):
        diversity([np.zeros((192, 192), np.uint8), np.zeros((200, 192), np.uint8)])
    with pytest.raises(InputError, match="protocol"):
        diversity(random_images(2), protocol="some")


# ------------------------------------------------------------------ the per-image statistics path


def reference_with(a, b, settings):
    """pytorch-msssim itself, one pair, at any settings."""
    from pytorch_msssim import ssim

    x, y = (torch.tensor(np.asarray(v, np.float32)[..., 0] if np.asarray(v).ndim == 3
                         else np.asarray(v, np.float32))[None, None] for v in (a, b))
    if settings.scales == 1:
        return float(ssim(x, y, data_range=settings.data_range, win_size=settings.win_size,
                          win_sigma=settings.win_sigma))
    return float(ms_ssim(x, y, data_range=settings.data_range, win_size=settings.win_size,
                         win_sigma=settings.win_sigma, weights=list(settings.weights)))


@pytest.mark.parametrize("make", [random_images, phantom_images])
@pytest.mark.parametrize("size", [200, 257])  # 257: odd sides, the zero-padded pooling
@pytest.mark.parametrize("settings", [
    MsSsimSettings(),
    MsSsimSettings(data_range=300.0, win_size=7, win_sigma=1.0,
                   weights=(0.2, 0.2, 0.2, 0.2, 0.2)),
    MsSsimSettings(win_size=5, scales=1, weights=(1.0,)),
], ids=["standard", "range-window-weights", "single-scale"])
def test_per_image_statistics_equal_pytorch_msssim(make, size, settings):
    """Per-image μ, σ² and pyramid, one filtering of x·y per pair: pytorch-msssim's values to
    1e-5 (float32 round-off: a different summation order)."""
    images = make(4, size=size)
    pairs = all_pairs(4)
    ours = ms_ssim_pairs(images, pairs, batch_size=2, settings=settings)
    ref = np.array([reference_with(images[i], images[j], settings) for i, j in pairs])
    assert np.abs(ours - ref).max() <= 1e-5


def test_blocks_and_batches_do_not_change_values():
    """A tiny statistics budget forces image blocks (statistics recomputed per block pair),
    any pair order and batch size: the same numbers."""
    images = random_images(7, size=176)
    pairs = [(5, 1), (0, 6), (2, 3), (6, 4), (1, 2), (0, 1), (3, 5)]
    whole = ms_ssim_pairs(images, pairs, batch_size=3)
    blocked = ms_ssim_pairs(images, pairs, batch_size=1, budget=1)
    np.testing.assert_allclose(blocked, whole, atol=1e-6)
    ref = [reference_pair(images[i], images[j]) for i, j in pairs]
    np.testing.assert_allclose(whole, ref, atol=1e-5)


def test_cpu_threads_are_restored():
    before = torch.get_num_threads()
    ms_ssim_pairs(random_images(2, size=176), [(0, 1)])
    assert torch.get_num_threads() == before


def test_random_pairs_is_a_uniform_subset_of_distinct_pairs():
    from mame_eval.metrics.diversity import random_pairs

    n = 30
    pairs = random_pairs(n, 100, seed=4)
    assert len(pairs) == len(set(pairs)) == 100
    assert all(0 <= i < j < n for i, j in pairs) and pairs == sorted(pairs)
    assert random_pairs(n, 100, seed=4) == pairs != random_pairs(n, 100, seed=5)
    assert random_pairs(5, 10) == all_pairs(5)  # no more pairs than asked: all of them
    # uniform: each of the 435 pairs is drawn about equally often over many seeds
    hits = np.zeros((n, n))
    for seed in range(400):
        for i, j in random_pairs(n, 100, seed=seed):
            hits[i, j] += 1
    upper = hits[np.triu_indices(n, 1)]
    expected = 400 * 100 / upper.size
    chi2 = ((upper - expected) ** 2 / expected).sum()
    assert chi2 < upper.size + 4 * np.sqrt(2 * upper.size)  # df = 434: mean 434, sd 29
    with pytest.raises(InputError, match="max_pairs"):
        random_pairs(n, 0)


def test_max_pairs_measures_a_subset_and_bootstraps_images():
    images = random_images(8, size=176)
    full = diversity(images, n_boot=300, seed=2)
    part = diversity(images, n_boot=3000, seed=2, max_pairs=12)
    assert part.n_pairs == 12 and part.n_images == 8 and part.subset
    assert "pair_subset" in part.provenance() and not full.subset
    values = dict(zip(map(tuple, full.pairs), full.values, strict=True))
    for pair, value in zip(part.pairs, part.values, strict=True):
        assert value == pytest.approx(values[tuple(pair)], abs=1e-9)
    assert part.mean == pytest.approx(np.mean(part.values))
    # brute force: resample images; average the measured pairs of two different draws
    measured = dict(zip(map(tuple, part.pairs), part.values, strict=True))
    rng = np.random.default_rng(5)
    means = []
    for _ in range(2000):
        draw = rng.integers(0, 8, 8)
        vals = [measured[(min(draw[a], draw[b]), max(draw[a], draw[b]))]
                for a in range(8) for b in range(a + 1, 8)
                if draw[a] != draw[b] and (min(draw[a], draw[b]), max(draw[a], draw[b]))
                in measured]
        if vals:
            means.append(np.mean(vals))
    lo, hi = np.quantile(means, [0.025, 0.975])
    assert part.ci_low == pytest.approx(lo, abs=0.01)
    assert part.ci_high == pytest.approx(hi, abs=0.01)
    with pytest.raises(InputError, match="all-pairs"):
        diversity(images, protocol="paper", max_pairs=3)


# ------------------------------------------------------------------ paired trends across guidance


def test_trend_slope_and_text():
    from mame_eval.stats.trend import paired_trend, slopes

    g = np.array([4.0, 7.0, 14.0])
    values = np.array([[0.2, 0.3, 0.5], [0.1, 0.1, 0.1]])
    np.testing.assert_allclose(slopes(g, values), [np.polyfit(g, v, 1)[0] for v in values],
                               atol=1e-12)
    rng = np.random.default_rng(0)
    reps = np.array([0.2, 0.3, 0.5]) + rng.normal(0, 0.01, (500, 3))
    up = paired_trend("ms_ssim", g, [0.2, 0.3, 0.5], reps, "seeds", 20, label="MS-SSIM")
    assert up.change == pytest.approx(0.3) and up.change_ci_low < 0.3 < up.change_ci_high
    assert up.text.startswith("MS-SSIM rises with guidance: +0.300 [")
    assert "from 4 to 14" in up.text and "20 seeds" in up.text
    flat = paired_trend("x", g, [0.2, 0.2, 0.2], 0.2 + rng.normal(0, 0.05, (500, 3)), "seeds",
                        20)
    assert "no clear change" in flat.text
    assert paired_trend("x", [4.0], [0.2], np.zeros((5, 1)), "seeds", 2) is None


def test_ms_ssim_trend_is_a_paired_bootstrap_over_seeds():
    """Scale 2 = scale 1's images, each a little noisier: one draw of the seeds for both scales
    (brute force here) gives the trend's interval, much narrower than unpaired draws."""
    from mame_eval.metrics.diversity import ms_ssim_trend

    rng = np.random.default_rng(3)
    low = random_images(6, size=176, seed=1)
    high = [np.clip(im + rng.normal(0, 25, im.shape), 0, 255).astype(np.uint8) for im in low]
    a, b = diversity(low, n_boot=200), diversity(high, n_boot=200)
    trend = ms_ssim_trend([1.0, 4.0], [[a], [b]], n_boot=4000, seed=0)
    assert trend.change == pytest.approx(b.mean - a.mean)
    assert trend.slope == pytest.approx((b.mean - a.mean) / 3)
    va = dict(zip(map(tuple, a.pairs), a.values, strict=True))
    vb = dict(zip(map(tuple, b.pairs), b.values, strict=True))
    changes, unpaired = [], []
    for _ in range(2000):
        draw, other = rng.integers(0, 6, 6), rng.integers(0, 6, 6)

        def mean(values, d):
            vals = [values[(min(d[x], d[y]), max(d[x], d[y]))] for x in range(6)
                    for y in range(x + 1, 6) if d[x] != d[y]]
            return np.mean(vals) if vals else np.nan

        changes.append(mean(vb, draw) - mean(va, draw))
        unpaired.append(mean(vb, other) - mean(va, draw))
    lo, hi = np.nanquantile(changes, [0.025, 0.975])
    assert trend.change_ci_low == pytest.approx(lo, abs=0.01)
    assert trend.change_ci_high == pytest.approx(hi, abs=0.01)
    u_lo, u_hi = np.nanquantile(unpaired, [0.025, 0.975])
    assert hi - lo < 0.8 * (u_hi - u_lo)


def test_diversity_run_writes_the_trend_and_takes_max_pairs(tiny_txt2img, tmp_path):
    from typer.testing import CliRunner

    from mame_eval.cli import app
    from mame_eval.journeys.diversity import diversity_run

    out = tmp_path / "div"
    report = diversity_run(out, model=str(tiny_txt2img), guidance=[1.0, 4.0], n=4, steps=2,
                           max_pairs=4, n_boot=300)
    table = pd.read_csv(out / "diversity.csv")
    assert (table["n_pairs"] == 4).all() and (table["n_images"] == 4).all()
    trends = pd.read_csv(out / "trends.csv")
    assert list(trends["metric"]) == ["ms_ssim"]
    assert trends["change"].item() == pytest.approx(table["mean"].iloc[1] - table["mean"].iloc[0])
    assert report.summary["ms_ssim_trend"]["text"].startswith("MS-SSIM ")
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["settings"]["max_pairs"] == 4
    assert "pair_subset" in prov["settings"]["ms_ssim"]
    # the command line: the same run again (images reused), the trend printed under the table
    result = CliRunner().invoke(app, ["diversity", "--model", str(tiny_txt2img), "--guidance",
                                      "1,4", "--n", "4", "--steps", "2", "--max-pairs", "4",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "MS-SSIM " in result.output.splitlines()[-2]
    with pytest.raises(InputError, match="--max-pairs"):
        diversity_run(tmp_path / "x", model=str(tiny_txt2img), protocol="paper", max_pairs=3)
