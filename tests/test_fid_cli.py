"""`mame-eval fid`: FID∞ with its interval, KID subset size, PRDC, seeds — through the CLI."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from mame_eval.cli import app
from mame_eval.journeys.fid import distribution_row


class MeanStd(torch.nn.Module):
    def forward(self, x):
        return torch.stack([x.mean((1, 2, 3)), x.std((1, 2, 3)), x.amax((1, 2, 3))], dim=1)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("fidcli")
    rng = np.random.default_rng(0)
    for name, shift in (("real", 0), ("syn", 30)):
        (root / name).mkdir()
        for i in range(24):
            arr = np.clip(rng.normal(100 + shift, 30, (16, 16)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(root / name / f"{i}.png")
    torch.jit.script(MeanStd()).save(str(root / "ext.pt"))
    return root


def _fid(folders, *extra):
    args = ["fid", "--real", str(folders / "real"), "--synthetic", str(folders / "syn"),
            "--features", str(folders / "ext.pt"), *extra]
    return CliRunner().invoke(app, args)


def test_json_output_has_fid_inf_bias_kid_and_prdc(folders):
    result = _fid(folders, "--json", "--n-boot", "20", "--seed", "3")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout[result.stdout.index("{"):])
    assert out["fid"] - out["fid_bias"] == pytest.approx(out["fid_inf"])
    assert out["fid_ci"][0] <= out["fid_inf"] <= out["fid_ci"][1]
    assert out["kid_subset_size"] == 12 and out["kid_std"] > 0
    for name in ("precision", "recall", "density", "coverage"):
        lo, hi = out[f"{name}_ci"]
        assert lo <= out[name] <= hi
    again = json.loads(_fid(folders, "--json", "--n-boot", "20", "--seed", "3").stdout)
    assert again == out  # seeded


def test_text_output_names_the_protocol_pieces(folders):
    result = _fid(folders, "--n-boot", "10", "--kid-subset-size", "8")
    assert result.exit_code == 0, result.output
    assert "FID∞" in result.output and "bias" in result.output
    assert "subsets of 8" in result.output and "precision" in result.output
    helptext = CliRunner().invoke(app, ["fid", "--help"]).output
    assert "torch-fidelity" in helptext and "--kid-subset-size" in helptext


def test_kid_subset_as_large_as_a_set_is_refused_with_the_flag(folders):
    from mame_eval.cli import flag_message
    from mame_eval.errors import InputError

    result = _fid(folders, "--kid-subset-size", "1000")
    assert result.exit_code != 0 and isinstance(result.exception, InputError)
    shown = flag_message(result.exception)  # what `main()` prints after "error: "
    assert shown.startswith("--kid-subset-size 1000:") and "= 24" in shown


def test_distribution_row_notes_prdc_when_sets_are_too_small():
    rng = np.random.default_rng(1)
    row, notes = distribution_row(rng.normal(size=(8, 3)), rng.normal(size=(8, 3)), n_boot=5)
    assert {"fid", "fid_inf", "fid_bias", "fid_ci_low", "kid", "kid_std"} <= set(row)
    assert "precision" not in row and any("precision/recall" in n for n in notes)
    row, _ = distribution_row(rng.normal(size=(40, 3)), rng.normal(size=(40, 3)), n_boot=5)
    assert {"precision", "recall_ci_low", "density_ci_high", "coverage"} <= set(row)
