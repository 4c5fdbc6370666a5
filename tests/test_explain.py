"""``explain`` end to end on a few prepared phantoms: every output, the right columns, no NaN."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import typer
from PIL import Image
from typer.testing import CliRunner

from mame_eval.cad.model import MammoNet
from mame_eval.cli import explain_command, parse_groups, train_cad_command
from mame_eval.errors import InputError, ModelError
from mame_eval.journeys.explain import SCORE_COLUMNS, explain, render_summary, resolve_group

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")
SCORES = ("pointing_game", "relevance_mass", "relevance_rank", "energy_pointing")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from mame_eval.data.phantoms import write_phantom_dataset
    from mame_eval.data.prepare import PrepareSettings, prepare_dataset

    root = tmp_path_factory.mktemp("explain")
    write_phantom_dataset(root / "raw", 10, seed=3, size=(160, 128), lesion_fraction=0.6)
    prepare_dataset(root / "raw", root / "prep", PrepareSettings(size=64))
    # a second "synthetic" group: the same lesion images, slightly brightened, same masks
    syn = root / "inpainted"
    (syn / "images").mkdir(parents=True)
    shutil.copytree(root / "prep" / "lesion" / "masks", syn / "masks")
    for p in sorted((root / "prep" / "lesion" / "images").glob("*.png")):
        arr = np.asarray(Image.open(p)).astype(int)
        Image.fromarray(np.clip(arr + 10, 0, 255).astype(np.uint8)).save(syn / "images" / p.name)
    torch.manual_seed(0)
    MammoNet(image_size=64, width=4, blocks=[1, 1]).save_pretrained(root / "cad")
    return root


def test_explain_two_groups_writes_every_output(world):
    out = world / "out"
    n_lesion = len(list((world / "prep" / "lesion" / "images").glob("*.png")))
    assert n_lesion >= 3
    result = explain(groups={"real": world / "prep" / "lesion", "inpainted": world / "inpainted"},
                     cad=world / "cad", out=out, heatmap_rows=4, n_boot=200,
                     occlusion_window=16, occlusion_stride=8)
    for name in ("scores.csv", "summary.csv", "comparison.csv", "heatmaps.png", "heatmaps.pdf",
                 "provenance.json"):
        assert (out / name).is_file(), name
    scores = pd.read_csv(out / "scores.csv")
    assert tuple(scores.columns) == SCORE_COLUMNS
    assert len(scores) == 2 * n_lesion * 3
    assert set(scores.method) == {"gradcam", "saliency", "occlusion"}
    assert scores.scored.all()
    assert not scores[list(SCORES) + ["lesion_score"]].isna().any().any()
    assert scores[list(SCORES)].apply(lambda c: c.between(0, 1)).all().all()

    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == 2 * 3
    for score in ("lesion_score", *SCORES):
        for suffix in ("mean", "ci_low", "ci_high"):
            assert not summary[f"{score}_{suffix}"].isna().any()
        assert (summary[f"{score}_ci_low"] <= summary[f"{score}_mean"] + 1e-12).all()
        assert (summary[f"{score}_mean"] <= summary[f"{score}_ci_high"] + 1e-12).all()
    # the summary means are the means of scores.csv (pandas as the reference)
    ref = scores.groupby(["group", "method"])["relevance_mass"].mean()
    for row in summary.itertuples():
        assert row.relevance_mass_mean == pytest.approx(ref[(row.group, row.method)], abs=1e-5)
    assert (summary.n_scored == n_lesion).all()

    comparison = pd.read_csv(out / "comparison.csv")
    for column in ("group_a", "group_b", "method", "score", "n_a", "n_b", "difference",
                   "ci_low", "ci_high", "p_value", "p_holm"):
        assert column in comparison.columns
    assert len(comparison) == 1 + 3 * 4  # lesion_score once, then method × score
    assert not comparison[["difference", "ci_low", "ci_high", "p_value"]].isna().any().any()
    assert comparison.p_value.between(0, 1).all()
    from scipy.stats import mannwhitneyu

    row = comparison[(comparison.method == "saliency") & (comparison.score == "relevance_mass")]
    a = scores[(scores.group == "real") & (scores.method == "saliency")].relevance_mass
    b = scores[(scores.group == "inpainted") & (scores.method == "saliency")].relevance_mass
    assert row.p_value.iloc[0] == pytest.approx(mannwhitneyu(b, a).pvalue, rel=1e-4)

    prov = json.loads((out / "provenance.json").read_text())
    assert {"versions", "device", "settings", "inputs", "wall_time_s"} <= set(prov)
    assert prov["inputs"]["groups"]["real"]["images"]["n_files"] == n_lesion
    with Image.open(out / "heatmaps.png") as im:
        assert im.size[0] > 300 and im.size[1] > 300
    assert "comparison" in result.tables and "relevance mass" in render_summary(result)

    # pointing game: 0/1 per image, summarised with an exact (Clopper-Pearson) interval
    assert set(scores.pointing_game.unique()) <= {0.0, 1.0}
    from mame_eval.stats.proportions import proportion_ci

    for row in summary.itertuples():
        sub = scores[(scores.group == row.group) & (scores.method == row.method)]
        lo, hi = proportion_ci(int(sub.pointing_game.sum()), len(sub))
        assert (row.pointing_game_ci_low, row.pointing_game_ci_high) == pytest.approx((lo, hi))

    # the model-randomisation sanity check, beside the scores
    for name in ("sanity.csv", "sanity_images.csv", "sanity.png", "sanity.pdf"):
        assert (out / name).is_file(), name
    sanity = pd.read_csv(out / "sanity.csv")
    assert set(sanity.group) == {"real", "inpainted", "all"}
    depths = sorted(sanity.depth.unique())
    assert depths == [0, 1, 2, 3, 4]  # trained; lesion_head, stage2, stage1, stem
    trained = sanity[sanity.depth == 0]
    assert (trained.spearman_mean == 1.0).all()
    full = sanity[sanity.depth == depths[-1]]
    assert full.fails_check.notna().all() and sanity[sanity.depth < depths[-1]] \
        .fails_check.isna().all()
    assert sanity.spearman_mean.between(-1, 1).all()
    # the trained-model rows repeat scores.csv for the same images
    per_image = pd.read_csv(out / "sanity_images.csv")
    first = per_image[(per_image.depth == 0) & (per_image.method == "gradcam")].iloc[0]
    ref = scores[(scores.image == first.image) & (scores.group == first.group)
                 & (scores.method == "gradcam")].iloc[0]
    assert first.relevance_mass == pytest.approx(ref.relevance_mass, abs=1e-5)
    for column in ("pointing_game_randomized_mean", "relevance_mass_randomized_mean",
                   "sanity_rho", "sanity_fails"):
        assert column in summary.columns and summary[column].notna().all()
    run = json.loads((out / "run.json").read_text())
    assert set(run["summary"]["sanity"]) == {"gradcam", "saliency", "occlusion"}
    assert {"rho_full", "rho_head", "fails", "head_insensitive"} <= set(
        run["summary"]["sanity"]["gradcam"])
    assert "sanity" in render_summary(result)
    # the 16-px occlusion window asked for here is larger than the phantom lesions at 64 px
    assert any("occlusion window (16 px) is larger than the median lesion" in n
               for n in result.notes)


def test_lesion_diameters():
    from mame_eval.journeys.explain import _lesion_diameters

    yy, xx = np.mgrid[:64, :64]
    mask = ((yy - 20) ** 2 + (xx - 20) ** 2 <= 36) | ((yy - 50) ** 2 + (xx - 45) ** 2 <= 4)
    big, small = sorted(_lesion_diameters(mask, 1.0), reverse=True)
    assert big == pytest.approx(12, rel=0.05) and small == pytest.approx(4, rel=0.15)
    assert _lesion_diameters(mask, 0.5)[0] == pytest.approx(_lesion_diameters(mask, 1.0)[0] / 2)


def test_an_input_copy_explanation_fails_the_sanity_check(world, monkeypatch):
    """A degenerate "method" that returns the input image: its maps do not change when the
    model is randomised (ρ = 1), so it is flagged, in the summary, the notes and the figure."""
    import mame_eval.journeys.explain as explain_module

    real = explain_module.attribute

    def fake(classifier, x, method, **options):
        if method == "saliency":
            return x[:, 0].detach().cpu().numpy()
        return real(classifier, x, method, **options)

    monkeypatch.setattr(explain_module, "attribute", fake)
    captured = {}
    import mame_eval.reports.heatmaps as heatmaps

    original_figure = heatmaps.heatmap_figure

    def spy(rows, methods, **kw):
        captured["rows"] = rows
        return original_figure(rows, methods, **kw)

    monkeypatch.setattr(heatmaps, "heatmap_figure", spy)
    out = world / "input-copy"
    result = explain(world / "prep" / "lesion", cad=world / "cad", out=out,
                     methods=["gradcam", "saliency"], n_boot=200, sanity_images=3,
                     heatmap_rows=2)
    verdict = result.summary["sanity"]
    assert verdict["saliency"]["rho_full"] == pytest.approx(1.0)
    assert verdict["saliency"]["fails"] is True
    assert any("saliency: fails the model-randomisation check" in n for n in result.notes)
    assert all(r["failed"].get("saliency") for r in captured["rows"])
    assert "gradcam" not in captured["rows"][0]["failed"] or verdict["gradcam"]["fails"]
    summary = pd.read_csv(out / "summary.csv")
    assert summary.set_index("method").loc["saliency", "sanity_fails"]


def test_images_without_masks_are_kept_but_not_scored(world):
    out = world / "healthy-out"
    explain(world / "prep" / "healthy", cad=world / "cad", out=out, methods=["saliency"],
            max_images=3, n_boot=200, sanity_images=2)
    scores = pd.read_csv(out / "scores.csv")
    assert len(scores) == 3 and not scores.scored.any()
    assert scores.lesion_score.between(0, 1).all()
    summary = pd.read_csv(out / "summary.csv")
    assert summary.n_scored.tolist() == [0] and summary.n_images.tolist() == [3]
    assert not (out / "comparison.csv").exists()


def test_group_folders_resolve_masks(world):
    lesion = world / "prep" / "lesion"
    assert resolve_group(lesion) == (lesion / "images", lesion / "masks")
    assert resolve_group(lesion / "images") == (lesion / "images", lesion / "masks")
    assert resolve_group(world / "prep" / "healthy") == (world / "prep" / "healthy", None)
    assert parse_groups(["a=x", "b = y"]) == {"a": __import__("pathlib").Path("x"),
                                              "b": __import__("pathlib").Path("y")}
    with pytest.raises(InputError, match="NAME=DIR"):
        parse_groups(["nodir"])


def test_errors_are_one_line(world, monkeypatch, tmp_path):
    import mame_eval.journeys.explain as explain_module

    # Without --cad the shipped MammoNet-tiny is used; when it is missing, one clear line.
    assert explain_module.default_cad() == explain_module.EMBEDDED_MAMMONET
    monkeypatch.setattr(explain_module, "DEFAULT_CAD", tmp_path / "not-shipped")
    with pytest.raises(ModelError, match="--cad"):
        explain(world / "prep" / "lesion", out=world / "x")
    monkeypatch.undo()
    with pytest.raises(InputError, match="nothing to explain"):
        explain(cad=world / "cad", out=world / "x")
    with pytest.raises(InputError, match="methods"):
        explain(world / "prep" / "lesion", cad=world / "cad", out=world / "x",
                methods=["lime"])


def test_commands_mount_on_a_typer_app(world, tmp_path):
    app = typer.Typer()
    app.command("explain")(explain_command)
    app.command("train-cad")(train_cad_command)
    runner = CliRunner()
    res = runner.invoke(app, ["explain", "--cad", str(world / "cad"), "--images",
                              str(world / "prep" / "lesion"), "--methods", "gradcam,saliency",
                              "--out", str(tmp_path / "o"), "--max-images", "2"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "o" / "heatmaps.png").is_file()
    config = tmp_path / "cad.toml"
    config.write_text(f'data_dir = "{world / "prep"}"\noutput_dir = "{tmp_path / "m"}"\n'
                      "image_size = 32\nbatch_size = 2\nval_fraction = 0.0\n"
                      "[model]\nwidth = 4\nblocks = [1]\n")
    res = runner.invoke(app, ["train-cad", str(config), "--set", "max_steps=1"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "m" / "model.safetensors").is_file()


def test_pointing_game_of_16_of_16_has_a_proper_interval():
    """Regression (issue 14, defect 3): 16 hits in 16 was reported as [1.000, 1.000] by the
    bootstrap; the exact Clopper-Pearson interval is [0.794, 1]."""
    from mame_eval.journeys.explain import _compare, _summarise

    rows = [{"image": f"{g}{i}.png", "group": g, "method": "saliency", "lesion_score": 0.9,
             "pointing_game": 1.0, "relevance_mass": 0.5 + 0.01 * i,
             "relevance_rank": 0.3, "energy_pointing": 0.6, "scored": True, "mask": "m.png"}
            for g in ("real", "syn") for i in range(16)]
    scores = pd.DataFrame(rows, columns=list(SCORE_COLUMNS))
    summary = _summarise(scores, ["real", "syn"], ["saliency"], 200, 0.95, 0)
    row = summary.iloc[0]
    assert row.pointing_game_mean == 1.0 and row.pointing_game_ci_high == 1.0
    assert row.pointing_game_ci_low == pytest.approx(0.7941, abs=1e-4)
    # the difference of two 16/16 proportions: Newcombe's interval, not the point [0, 0]
    comparison = _compare(scores, ["real", "syn"], ["saliency"], 200, 0.95, 0)
    pg = comparison[comparison.score == "pointing_game"].iloc[0]
    assert pg.difference == 0.0 and pg.ci_low < -0.15 and pg.ci_high > 0.15
    assert pg.ci_method.startswith("Newcombe")


def test_newcombe_difference_interval_matches_the_published_examples():
    """Newcombe (1998, Stat Med 17:873), Table II, method 10: 56/70 − 48/80 and 9/10 − 3/10."""
    from mame_eval.stats.proportions import proportion_difference_ci

    lo, hi = proportion_difference_ci(48, 80, 56, 70)
    assert (round(lo, 4), round(hi, 4)) == (0.0524, 0.3339)
    lo, hi = proportion_difference_ci(3, 10, 9, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.1705, 0.8090)
