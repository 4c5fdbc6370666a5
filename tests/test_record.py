"""The run record: one layout, a run.json that reports can find, figures without pyplot."""

import json
import stat

import matplotlib
import pandas as pd
import pytest

from mame_eval.errors import InputError
from mame_eval.journeys.record import RUN_SCHEMA, RunRecord, find_runs, read_run
from mame_eval.provenance import describe_input
from mame_eval.reports.style import new_figure, series_styles


def test_record_writes_one_layout(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("x")
    backend = matplotlib.get_backend()
    fig, ax = new_figure()
    ax.plot([0, 1], [0, 1])
    rec = RunRecord(kind="demo", out=tmp_path / "run", settings={"n": 2},
                    inputs={"data": describe_input(data)},
                    tables={"t": pd.DataFrame({"a": [1.5, None]})}, figures={"f": fig},
                    documents={"summary": {"x": 1}}, summary={"mean": 1.5})
    rec.note("once")
    rec.note("once")
    rec.write()
    out = tmp_path / "run"
    names = sorted(p.name for p in out.iterdir())
    assert names == ["f.pdf", "f.png", "provenance.json", "run.json", "summary.json", "t.csv"]
    back = pd.read_csv(out / "t.csv")
    assert back["a"].iloc[0] == 1.5 and pd.isna(back["a"].iloc[1])
    assert (out / "f.pdf").read_bytes().startswith(b"%PDF")
    assert stat.S_IMODE((out / "f.png").stat().st_mode) & 0o044 == 0o044  # readable by all
    run = json.loads((out / "run.json").read_text())
    assert run["schema"] == RUN_SCHEMA and run["kind"] == "demo"
    assert run["outputs"]["figures"]["f"] == ["f.png", "f.pdf"]
    assert run["inputs"]["data"]["n_files"] == 1 and len(run["inputs"]["data"]["sha256"]) == 64
    assert run["notes"] == ["once"] and run["summary"] == {"mean": 1.5}
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["settings"] == {"n": 2} and prov["command"] == "demo"
    assert matplotlib.get_backend() == backend  # no global backend switch
    assert read_run(out)["kind"] == "demo"
    assert [r["kind"] for r in find_runs(tmp_path)] == ["demo"]
    assert find_runs(tmp_path, kind="other") == []


def test_read_run_rejects_other_folders(tmp_path):
    with pytest.raises(InputError, match="no run.json"):
        read_run(tmp_path)
    (tmp_path / "run.json").write_text('{"kind": "x"}')
    with pytest.raises(InputError, match="not a mame-eval run record"):
        read_run(tmp_path)


def test_series_styles_distinct_beyond_palette():
    styles = series_styles(15)
    assert len({(s["color"], s["linestyle"], s["marker"]) for s in styles}) == 15
    assert len({(s["color"], s["linestyle"]) for s in styles}) == 15
