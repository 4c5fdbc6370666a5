"""`mame-eval report`: run folders found by run.json, missing runs as notes, numbers carried over
unchanged; and every measuring command writes a run.json the report can find."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from mame_eval.cli import app
from mame_eval.errors import ConfigError, InputError
from mame_eval.journeys.record import find_runs, read_run
from mame_eval.journeys.report import report_run

pytest_plugins = ["conftest_models"]
pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning"),
              pytest.mark.filterwarnings("ignore::UserWarning")]

REPO = Path(__file__).resolve().parents[1]
VANDYKE = REPO.parent / "shared" / "data" / "vandyke.csv"


class MeanStd(torch.nn.Module):
    def forward(self, x):
        return torch.stack([x.mean((1, 2, 3)), x.std((1, 2, 3)), x.amax((1, 2, 3))], dim=1)


def _noise_images(folder: Path, n: int, seed: int, shift: int = 0, size: int = 200) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        arr = np.clip(rng.normal(100 + shift, 40, (size, size)), 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(folder / f"{i:03d}.png")
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """A diversity, a fid and an mrmc run, each made through the CLI as a user would."""
    root = tmp_path_factory.mktemp("runs")
    images = _noise_images(root / "imgs", 4, seed=0)
    syn = _noise_images(root / "syn", 10, seed=1, shift=40, size=32)
    real = _noise_images(root / "real", 10, seed=2, size=32)
    ext = root / "ext.pt"
    torch.jit.script(MeanStd()).save(str(ext))
    runner = CliRunner()
    for args in (["diversity", "--images", str(images), "--out", str(root / "div")],
                 ["fid", "--real", str(real), "--synthetic", str(syn), "--features", str(ext),
                  "--out", str(root / "fid")]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    if VANDYKE.is_file():
        result = runner.invoke(app, ["mrmc", str(VANDYKE), "--modality", "treatment",
                                     "--score", "rating", "--out", str(root / "mrmc")])
        assert result.exit_code == 0, result.output
    return root


def _definition(tmp_path: Path, root: Path, sections: str) -> Path:
    path = tmp_path / "report.toml"
    path.write_text(f'title = "Test report"\nroot = "{root}"\n{sections}')
    return path


def test_measuring_commands_write_run_json(runs):
    kinds = {r["kind"] for r in find_runs(runs)}
    assert {"diversity", "fid"} <= kinds
    for name in ("div", "fid"):
        run = read_run(runs / name)
        assert run["command_line"].startswith(f"mame-eval {run['kind']}")
        for table in run["outputs"]["tables"].values():
            assert (runs / name / table).is_file()
        assert all(v.get("sha256") for v in run["inputs"].values())


def test_report_shows_the_numbers_the_runs_wrote(runs, tmp_path):
    definition = _definition(tmp_path, runs, """
[[sections]]
type = "diversity"
title = "Diversity"
[[sections.runs]]
path = "div"
label = "folder"

[[sections]]
type = "fid"
title = "FID"
[[sections.runs]]
path = "fid"
""")
    record = report_run(definition, tmp_path / "out")
    html = (tmp_path / "out" / "report.html").read_text()
    div = pd.read_csv(runs / "div" / "diversity.csv").iloc[0]
    assert f"{div['mean']:.3f} [{div['ci_low']:.3f}, {div['ci_high']:.3f}]" in html
    fid = pd.read_csv(runs / "fid" / "fid.csv").iloc[0]
    # the interval is for the true FID and sits beside FID∞, the bias-corrected estimate
    assert f"{fid['fid_inf']:.2f} [{fid['fid_ci_low']:.2f}, {fid['fid_ci_high']:.2f}]" in html
    assert "data:image/png;base64," in html  # self-contained: the figure is embedded
    assert (tmp_path / "out" / "report.pdf").read_bytes().startswith(b"%PDF")
    run = read_run(tmp_path / "out")
    assert run["kind"] == "report" and run["summary"]["missing"] == 0
    assert record.summary["runs"] == 2


def test_a_missing_run_is_a_note_with_its_command(runs, tmp_path):
    definition = _definition(tmp_path, runs, """
[[sections]]
type = "sweep"
title = "Table 3"
[[sections.runs]]
path = "sweeps/never-ran"
label = "fusion"
command = "mame-eval sweep generation/table3-fusion.toml"

[[sections]]
type = "explain"
title = "Explain"
[[sections.runs]]
path = "div"
label = "wrong kind"
""")
    record = report_run(definition, tmp_path / "out")
    html = (tmp_path / "out" / "report.html").read_text()
    assert "fusion: not run" in html
    assert "mame-eval sweep generation/table3-fusion.toml" in html
    assert "a &#39;diversity&#39; run, expected &#39;explain&#39;" in html
    assert record.summary["missing"] == 2 and len(record.notes) == 2
    assert (tmp_path / "out" / "report.pdf").stat().st_size > 1000


@pytest.mark.skipif(not VANDYKE.is_file(), reason="../shared/data/vandyke.csv not beside")
def test_mrmc_run_in_a_report(runs, tmp_path):
    definition = _definition(tmp_path, runs, """
[[sections]]
type = "mrmc"
title = "MRMC"
[[sections.runs]]
path = "mrmc"
label = "Van Dyke"
""")
    report_run(definition, tmp_path / "out")
    html = (tmp_path / "out" / "report.html").read_text()
    result = json.loads((runs / "mrmc" / "mrmc.json").read_text())
    first = next(iter(result["modalities"].values()))
    assert f"{first['auc']:.3f} [{first['ci'][0]:.3f}, {first['ci'][1]:.3f}]" in html


def test_bad_definitions_are_one_line(tmp_path):
    bad = _definition(tmp_path, tmp_path, '[[sections]]\ntype = "nope"\ntitle = "x"\n'
                      '[[sections.runs]]\npath = "x"\n')
    with pytest.raises(ConfigError, match="sections.0.type"):
        report_run(bad, tmp_path / "out")
    typo = _definition(tmp_path, tmp_path, '[[sections]]\ntype = "fid"\ntitel = "x"\n'
                       '[[sections.runs]]\npath = "x"\n')
    with pytest.raises(ConfigError, match="did you mean 'title'"):
        report_run(typo, tmp_path / "out")
    (tmp_path / "file").write_text("x")
    ok = _definition(tmp_path, tmp_path, '[[sections]]\ntype = "fid"\ntitle = "x"\n'
                     '[[sections.runs]]\npath = "x"\n')
    with pytest.raises(InputError, match="not a folder"):
        report_run(ok, tmp_path / "file")
    proc = subprocess.run([sys.executable, "-m", "mame_eval", "report", str(tmp_path / "no.toml"),
                           "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'no.toml'}: report definition file not found"]


def test_shipped_definitions_validate(tmp_path):
    """reports/paper.toml and reports/demo.toml render (every run missing here) without error."""
    for name in ("paper", "demo"):
        record = report_run(REPO / "reports" / f"{name}.toml", tmp_path / name,
                            [f"root={tmp_path / 'empty'}"])
        assert record.summary["missing"] == record.summary["sections"] or \
            record.summary["missing"] >= 1


@pytest.mark.slow
def test_explain_sweep_and_cad_runs_render(tmp_path, tiny_txt2img, prepared):
    """The remaining measuring commands write run.json and their sections render."""
    from mame_eval.cad.model import MammoNet
    from mame_eval.cad.train import train_cad
    from mame_eval.journeys.explain import explain
    from mame_eval.journeys.sweep import load_sweep_config, run_sweep

    torch.manual_seed(0)
    MammoNet(image_size=64, width=4, blocks=[1, 1]).save_pretrained(tmp_path / "cad")
    explain(prepared / "lesion", cad=tmp_path / "cad", out=tmp_path / "runs" / "xai",
            methods=["gradcam"], n_boot=200, heatmap_rows=2)
    text = (f'name = "t"\nmodel = "{tiny_txt2img}"\nout = "{tmp_path / "runs" / "sweep"}"\n'
            'prompts = ["a hologic mammogram in CC view with small area"]\n'
            'guidance = [1.0, 4.0]\nn = 3\nsteps = 2\n[fidelity]\nclassifier = "none"\n')
    (tmp_path / "sweep.toml").write_text(text)
    run_sweep(load_sweep_config(tmp_path / "sweep.toml"))
    train_cad({"data_dir": str(prepared), "output_dir": str(tmp_path / "runs" / "cad"),
               "epochs": 1, "image_size": 32, "batch_size": 4, "model": {"width": 4,
                                                                         "blocks": [1]}})
    assert {r["kind"] for r in find_runs(tmp_path / "runs")} == {"explain", "sweep",
                                                                 "train cad"}
    shutil.copy(REPO / "reports" / "paper.toml", tmp_path / "paper.toml")
    definition = _definition(tmp_path, tmp_path / "runs", """
[[sections]]
type = "explain"
title = "XAI"
[[sections.runs]]
path = "xai"
[[sections]]
type = "diversity"
title = "Table 3"
[[sections.runs]]
path = "sweep"
[[sections]]
type = "sweep"
title = "Sweep"
[[sections.runs]]
path = "sweep"
[[sections]]
type = "cad"
title = "CAD"
[[sections.runs]]
path = "cad"
""")
    record = report_run(definition, tmp_path / "out")
    assert record.summary["missing"] == 0
    html = (tmp_path / "out" / "report.html").read_text()
    sweep = pd.read_csv(tmp_path / "runs" / "sweep" / "sweep.csv")
    first = sweep.iloc[0]
    assert (f"{first['ms_ssim']:.3f} [{first['ms_ssim_ci_low']:.3f}, "
            f"{first['ms_ssim_ci_high']:.3f}]") in html
    assert "where the attribution falls" in html and "attribute heads (held out)" in html


def test_an_analysed_study_renders_with_its_readers_and_audit(tmp_path):
    """study analyze writes run.json; the study section shows each reader's AUROC with its CI
    and the reader average, exactly as results.json has them."""
    from mame_eval.studies.study import analyze_study, create_study, import_ratings, read_key

    folders = {name: _noise_images(tmp_path / name, 10, seed) for name, seed in
               (("real", 1), ("syn", 2))}
    study = create_study(tmp_path / "st", folders["real"], folders["syn"], n=16,
                         readers=["alice", "bob"], seed=3).path
    key = read_key(study)
    rng = np.random.default_rng(0)
    rows = [{"reader": r, "case": c, "score": int(np.clip(round(t + rng.normal(1.5, 1)), 0, 4))}
            for r in ("alice", "bob") for c, t in zip(key["case"], key["truth"], strict=True)]
    pd.DataFrame(rows).to_csv(tmp_path / "ratings.csv", index=False)
    import_ratings(study, tmp_path / "ratings.csv")
    analyze_study(study)
    assert read_run(study / "analysis")["kind"] == "study analyze"
    definition = _definition(tmp_path, tmp_path, """
[[sections]]
type = "study"
title = "Reader study"
[[sections.runs]]
path = "st"
label = "Turing"
""")
    record = report_run(definition, tmp_path / "out")
    assert record.summary["missing"] == 0
    html = (tmp_path / "out" / "report.html").read_text()
    results = json.loads((study / "analysis" / "results.json").read_text())
    for reader in ("alice", "bob"):
        r = results["readers"][reader]
        assert f"{r['auroc']:.3f} [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}]" in html
    a = results["average"]
    assert f"reader-averaged AUROC {a['auroc']:.3f} [{a['ci'][0]:.3f}, {a['ci'][1]:.3f}]" in html
    assert "ROC curves per reader" in html
    assert (study / "blinding_audit.csv").is_file() and "blinding audit (pixel statistics" in html
