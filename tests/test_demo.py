"""`mame-eval demo` end to end on the shipped models (slow: a few minutes on 2 cores)."""

import json

import pandas as pd
import pytest

from mame_eval.models.loading import EMBEDDED_MAMMONET, EMBEDDED_MODELS

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
    pytest.mark.skipif(not all((p / "model_index.json").is_file()
                               for p in EMBEDDED_MODELS.values())
                       or not (EMBEDDED_MAMMONET / "config.json").is_file(),
                       reason="the embedded models are not shipped in this checkout"),
]


def test_demo_runs_every_journey_and_resumes(tmp_path):
    from typer.testing import CliRunner

    from mame_eval.cli import app

    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--out", str(out), "--n", "60"])
    assert result.exit_code == 0, result.output
    for stage in ("phantoms", "prepared", "diversity", "sweep", "synthesize", "explain",
                  "study"):
        assert f"  {stage}" in result.output, stage
    assert "http://localhost:8501/?token=" in result.output  # the reader links, shown once
    div = pd.read_csv(out / "diversity" / "diversity.csv")
    assert list(div["guidance"]) == [4, 6, 8, 10, 12, 14]
    sweep = pd.read_csv(out / "sweep" / "sweep.csv")
    assert {"fid", "kid", "area_adherence", "area_extrapolated_adherence"} <= set(sweep)
    for name in ("explain/heatmaps.png", "explain/comparison.csv", "sweep/tradeoff.png",
                 "study/key.csv", "prepared_preview.png", "synthesized/manifest.jsonl"):
        assert (out / name).is_file(), name
    key = pd.read_csv(out / "study" / "key.csv")
    assert sorted(key["truth"].value_counts().tolist()) == [8, 8]
    prov = json.loads((out / "sweep" / "provenance.json").read_text())
    assert prov["inputs"]["model"] == "embedded MAM-E-tiny"

    # A rerun re-uses everything: no image is generated again.
    images = sorted(out.rglob("images/**/*.png"))
    stamps = [p.stat().st_mtime_ns for p in images]
    again = CliRunner().invoke(app, ["demo", "--out", str(out), "--n", "60"])
    assert again.exit_code == 0, again.output
    assert "exists" in again.output  # the study is not created twice
    assert [p.stat().st_mtime_ns for p in images] == stamps

    # `make demo` ends with the demo report: every run the demo made is found, the rest is a
    # note with its command.
    from pathlib import Path

    from mame_eval.journeys.report import report_run

    definition = Path(__file__).resolve().parents[1] / "reports" / "demo.toml"
    record = report_run(definition, out / "report", [f"root={out}"])
    kinds = {r["kind"] for r in json.loads((out / "report" / "run.json").read_text())
             ["inputs"].values() if isinstance(r, dict) and "kind" in r}
    assert {"diversity", "sweep", "images", "explain"} <= kinds
    assert (out / "report" / "report.pdf").read_bytes().startswith(b"%PDF")
    assert record.summary["runs"] == 4
