"""`diversity` and `fid` as library runs: tables, figures, provenance, resumable images."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from mame_eval.errors import InputError
from mame_eval.journeys.diversity import DIVERSITY_COLUMNS, diversity_run, parse_guidance
from mame_eval.journeys.fid import fid_run

pytest_plugins = ["conftest_models"]


@pytest.mark.parametrize("text, values", [("4:6", [4, 5, 6]), ("4:14:5", [4, 9, 14]),
                                          ("4,7.5", [4, 7.5]), ("9", [9])])
def test_parse_guidance(text, values):
    assert parse_guidance(text) == values


@pytest.mark.parametrize("text", ["a:b", "14:4", "4:14:0", "-1", ""])
def test_parse_guidance_rejects(text):
    with pytest.raises(InputError, match="--guidance"):
        parse_guidance(text)


def test_diversity_over_guidance_with_a_tiny_model(tiny_txt2img, tmp_path):
    out = tmp_path / "div"
    report = diversity_run(out, model=str(tiny_txt2img), guidance=[1.0, 4.0], n=3, steps=2)
    # the small-image fallback is a note said once (the CLI prints notes), not a warning per scale
    assert [n for n in report.notes if "too small" in n] == [report.notes[0]]
    table = pd.read_csv(out / "diversity.csv")
    assert list(table.columns) == DIVERSITY_COLUMNS
    assert list(table["guidance"]) == [1.0, 4.0]
    assert (table["n_images"] == 3).all() and (table["n_pairs"] == 3).all()
    assert ((table["ci_low"] <= table["mean"]) & (table["mean"] <= table["ci_high"])).all()
    for name in ("diversity.png", "diversity.pdf", "provenance.json"):
        assert (out / name).stat().st_size > 0
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["settings"]["ms_ssim"]["settings"]["fallback"] and report.notes
    # images are a resumable generation run: a rerun generates nothing new
    stamp = (out / "images" / "g4" / "00000.png").stat().st_mtime_ns
    diversity_run(out, model=str(tiny_txt2img), guidance=[4.0], n=3, steps=2)
    assert (out / "images" / "g4" / "00000.png").stat().st_mtime_ns == stamp


def test_diversity_of_a_folder(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (200, 200), dtype=np.uint8)).save(
            tmp_path / f"{i}.png")
    report = diversity_run(tmp_path / "out", images=tmp_path)
    row = report.table.iloc[0]
    assert pd.isna(row["guidance"]) and row["n_pairs"] == 6
    for name in ("diversity.csv", "diversity.png", "diversity.pdf", "provenance.json"):
        assert (tmp_path / "out" / name).stat().st_size > 0


def test_cli_diversity_prints_the_table(tmp_path):
    from typer.testing import CliRunner

    from mame_eval.cli import app

    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (200, 200), dtype=np.uint8)).save(
            tmp_path / f"{i}.png")
    result = CliRunner().invoke(app, ["diversity", "--images", str(tmp_path), "--out",
                                      str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    header, row = result.output.splitlines()[:2]
    assert header.split() == DIVERSITY_COLUMNS
    mean = pd.read_csv(tmp_path / "out" / "diversity.csv")["mean"].iloc[0]
    # the guidance cell is blank (a folder has none): the row starts with the mean
    assert len(row.split()) == len(DIVERSITY_COLUMNS) - 1
    assert row.split()[0] == f"{mean:.4f}" and row.split()[-2:] == ["3", "3"]


class MeanStd(torch.nn.Module):
    def forward(self, x):
        return torch.stack([x.mean((1, 2, 3)), x.std((1, 2, 3)), x.amax((1, 2, 3))], dim=1)


def test_fid_between_folders_with_a_torchscript_extractor(tmp_path):
    rng = np.random.default_rng(1)
    for name, shift in (("real", 0), ("syn", 60)):
        (tmp_path / name).mkdir()
        for i in range(12):
            arr = np.clip(rng.normal(100 + shift, 30, (32, 32)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(tmp_path / name / f"{i}.png")
    ext = tmp_path / "ext.pt"
    torch.jit.script(MeanStd()).save(str(ext))
    record = fid_run(tmp_path / "real", tmp_path / "syn", features=str(ext), n_boot=50,
                     cache_dir=tmp_path / "cache", out=tmp_path / "fid")
    result = record.summary
    assert (tmp_path / "fid" / "run.json").is_file() and (tmp_path / "fid" / "fid.csv").is_file()
    assert {"fid", "kid", "kid_std", "n_real", "n_synthetic", "features", "fid_ci"} <= set(result)
    assert result["n_real"] == result["n_synthetic"] == 12
    assert result["fid"] > 0.01 and result["fid_ci"][0] <= result["fid_ci"][1]
    same = fid_run(tmp_path / "real", tmp_path / "real", features=str(ext), n_boot=20).summary
    assert same["fid"] == pytest.approx(0.0, abs=1e-9)
