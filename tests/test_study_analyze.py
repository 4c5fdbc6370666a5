"""import-ratings, export, status and analyze, checked against sklearn / the MRMC module.

Ratings are imported from CSV (as if collected on paper); every per-reader AUROC must equal
``sklearn.metrics.roc_auc_score`` with real = positive, the confusion numbers are recounted by
hand, the reader-averaged result must equal ``mrmc_report`` run on the long export, and the
agreement numbers must equal sklearn's quadratic-weighted kappa.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import stats
from sklearn.metrics import cohen_kappa_score, roc_auc_score
from typer.testing import CliRunner

from mame_eval.errors import MameError, StudyError
from mame_eval.studies.commands import study_app
from mame_eval.studies.ratings import mrmc_report
from mame_eval.studies.study import (
    analyze_study,
    create_study,
    export_ratings,
    import_ratings,
    long_ratings,
    open_study,
    read_key,
    reissue_token,
    study_status,
)

READERS = ["alice", "bob", "carol"]


def _pngs(folder: Path, n: int, seed: int) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray((rng.random((24, 24)) * 255).astype(np.uint8)).save(folder / f"{i}.png")
    return folder


@pytest.fixture()
def study(tmp_path):
    real = _pngs(tmp_path / "real", 14, 1)
    syn = _pngs(tmp_path / "syn", 14, 2)
    res = create_study(tmp_path / "st", real, syn, n=24, readers=READERS, seed=4)
    return res.path


def _ratings(study: Path, seed: int = 0, readers=READERS) -> pd.DataFrame:
    """Simulated 0-4 ratings, better than chance for alice, near chance for carol."""
    key = read_key(study)
    rng = np.random.default_rng(seed)
    rows = []
    for j, r in enumerate(readers):
        signal = [1.5, 0.8, 0.0][j % 3]
        for case, t in zip(key["case"], key["truth"], strict=True):
            latent = signal * t + rng.normal(0, 1)
            rows.append({"reader": r, "case": case,
                         "score": int(np.clip(np.round(latent + 1.5), 0, 4))})
    return pd.DataFrame(rows)


def _write(df: pd.DataFrame, path: Path) -> Path:
    df.to_csv(path, index=False)
    return path


def test_analyze_on_imported_ratings_matches_sklearn(study, tmp_path):
    ratings = _ratings(study)
    res = import_ratings(study, _write(ratings, tmp_path / "paper.csv"))
    assert (res.n_new, res.n_unchanged) == (72, 0)
    out = analyze_study(study, cutoff=2.5)
    results = json.loads((study / "analysis" / "results.json").read_text())
    assert results == json.loads(json.dumps(out.results))
    key = read_key(study).set_index("case")
    for r in READERS:
        d = ratings[ratings["reader"] == r].set_index("case")
        truth = key.loc[d.index, "truth"].to_numpy()
        score = d["score"].to_numpy()
        got = results["readers"][r]
        assert got["auroc"] == pytest.approx(roc_auc_score(truth, score), abs=1e-12)
        lo, hi = got["ci"]
        assert lo <= got["auroc"] <= hi and lo >= 0 and hi <= 1
        call = score > 2.5
        tp, tn = int((call & (truth == 1)).sum()), int((~call & (truth == 0)).sum())
        assert got["accuracy"] == pytest.approx((tp + tn) / truth.size)
        assert got["sensitivity"] == pytest.approx(tp / (truth == 1).sum())
        assert got["specificity"] == pytest.approx(tn / (truth == 0).sum())
        p = stats.binomtest(tp + tn, truth.size, 0.5).pvalue
        assert got["binomial_test"]["p_value"] == pytest.approx(p)
        assert got["equivalence_test"]["margin"] == 0.1
        assert got["n_real"] == 12 and got["n_synthetic"] == 12
        assert got["roc"]["fpr"][0] == 0 and got["roc"]["tpr"][-1] == 1
    avg = results["average"]
    assert avg["auroc"] == pytest.approx(np.mean([results["readers"][r]["auroc"]
                                                 for r in READERS]))
    assert avg["ci"][0] < avg["auroc"] < avg["ci"][1] and avg["n_readers"] == 3
    # the reader-averaged result is mrmc_report on the long export
    long_csv = export_ratings(study, "long")
    ref = mrmc_report(pd.read_csv(long_csv))
    assert results["mrmc"]["modalities"]["all"]["ci"] == pytest.approx(
        ref["modalities"]["all"]["ci"])
    assert avg["ci_unclipped"] == pytest.approx(ref["modalities"]["all"]["ci"])
    # three very different readers: the OR-Hillis interval leaves [0, 1] and is clipped
    lo, hi = ref["modalities"]["all"]["ci"]
    assert hi > 1 and avg["ci"] == pytest.approx([lo, 1.0])
    assert "clipped" in avg["ci_note"] and "clipped" in out.table
    assert results["score_used"] == "final" and "final score" in out.table
    # agreement
    wide = ratings.pivot(index="case", columns="reader", values="score")
    kap = {(k["reader_a"], k["reader_b"]): k["kappa"] for k in results["agreement"]["kappa"]}
    assert kap[("alice", "bob")] == pytest.approx(
        cohen_kappa_score(wide["alice"], wide["bob"], weights="quadratic"))
    assert -1 <= results["agreement"]["krippendorff_alpha"] <= 1
    assert results["positive"] == "real" and results["excluded_readers"] == {}
    for name in ("results.json", "readers.csv", "roc.png", "roc.pdf", "table.txt",
                 "provenance.json"):
        assert (study / "analysis" / name).stat().st_size > 0
    assert "reader-averaged AUROC" in out.table and "alice" in out.table


def test_incomplete_readers_are_excluded_and_none_complete_is_an_error(study, tmp_path):
    with pytest.raises(StudyError, match="no reader has rated all 24 cases"):
        analyze_study(study)
    ratings = _ratings(study)
    partial = pd.concat([ratings[ratings["reader"] == "alice"],
                         ratings[ratings["reader"] == "bob"].head(5)])
    import_ratings(study, _write(partial, tmp_path / "p.csv"))
    res = analyze_study(study).results
    assert list(res["readers"]) == ["alice"]
    assert res["excluded_readers"] == {"bob": "rated 5 of 24 cases", "carol": "rated 0 of 24 "
                                       "cases"}
    assert res["agreement"] is None and "fixed reader" in res["average"]["method"]


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.assign(reader=d["reader"].replace("bob", "bobby")), "unknown reader 'bobby'"),
    (lambda d: d.assign(case=d["case"].where(d.index != 5, "feedbeef")), "unknown case"),
    (lambda d: d.assign(score=d["score"].where(d.index != 7, 5)), "score '5' is not on"),
    (lambda d: d.assign(score=d["score"].astype(object).where(d.index != 7, "2.5")),
     "score '2.5' is not on"),
    (lambda d: d.assign(score=d["score"].astype(object).where(d.index != 7, "high")),
     "score 'high'"),
    (lambda d: pd.concat([d, d.iloc[[3]]]), "a second time"),
    (lambda d: d.drop(columns="score"), "missing column 'score'"),
    (lambda d: d.iloc[:0], "no rows"),
])
def test_import_validation_is_one_line_and_all_or_nothing(study, tmp_path, edit, message):
    bad = edit(_ratings(study).reset_index(drop=True))
    with pytest.raises(StudyError) as err:
        import_ratings(study, _write(bad, tmp_path / "bad.csv"))
    assert message in str(err.value) and "\n" not in str(err.value)
    assert long_ratings(study).empty


def test_import_conflict_with_app_rating_is_refused(study, tmp_path):
    ratings = _ratings(study)
    st = open_study(study)
    first = ratings.iloc[0]
    with st.store() as store:
        assert store.record_rating(first["reader"], first["case"], (first["score"] + 1) % 5)
    with pytest.raises(StudyError, match="already rated case"):
        import_ratings(study, _write(ratings, tmp_path / "r.csv"))
    assert len(long_ratings(study)) == 1
    with pytest.raises(StudyError, match="file not found"):
        import_ratings(study, tmp_path / "absent.csv")


def test_export_formats(study, tmp_path):
    with pytest.raises(StudyError, match="no ratings yet"):
        export_ratings(study)
    ratings = _ratings(study)
    import_ratings(study, _write(ratings, tmp_path / "r.csv"))
    long = pd.read_csv(export_ratings(study, "long"), dtype={"case": str})
    assert list(long.columns[:4]) == ["reader", "case", "truth", "score"]
    assert len(long) == 72 and set(long["source"]) == {"import"}
    merged = long.merge(ratings, on=["reader", "case"], suffixes=("", "_in"))
    assert (merged["score"] == merged["score_in"]).all()
    key = read_key(study).set_index("case")
    assert (long["truth"].to_numpy() == key.loc[long["case"], "truth"].to_numpy()).all()
    text = export_ratings(study, "imrmc").read_text().splitlines()
    head = text[:text.index("BEGIN DATA:")]
    assert {"NR: 3", "N0: 12", "N1: 12", "NM: 1"} <= set(head)
    data = [line.split(",") for line in text[text.index("BEGIN DATA:") + 1:]]
    truth_rows = [d for d in data if d[0] == "-1"]
    assert len(truth_rows) == 24 and sum(int(d[3]) for d in truth_rows) == 12
    assert len(data) - len(truth_rows) == 72
    with pytest.raises(StudyError, match="--format"):
        export_ratings(study, "xlsx")


def test_status_never_shows_scores_and_tokens_can_be_reissued(study, tmp_path):
    import_ratings(study, _write(_ratings(study).head(10), tmp_path / "r.csv"))
    s = study_status(study)
    assert [(r.reader, r.done, r.total) for r in s.readers] == [
        ("alice", 10, 24), ("bob", 0, 24), ("carol", 0, 24)]
    assert set(s.to_dict()["readers"][0]) == {"reader", "done", "total", "started",
                                             "last_activity", "median_s_per_case",
                                             "over_time"}
    link = reissue_token(study, "bob")
    st = open_study(study)
    with st.store() as store:
        assert store.reader_for_token(link.split("token=")[1]) == "bob"
    with pytest.raises(StudyError, match="not part of this study"):
        reissue_token(study, "mallory")


def test_concurrent_writers_lose_nothing(study):
    """Threads (like Streamlit sessions) and processes rating at once: every rating stored."""
    st = open_study(study)
    with st.store() as store:
        orders = {r: store.assignments(r) for r in READERS}
    barrier = threading.Barrier(len(READERS))

    def rate(reader):
        s = st.store(shared=True)
        barrier.wait()
        for case in orders[reader][:12]:
            assert s.record_rating(reader, case, 2)

    threads = [threading.Thread(target=rate, args=(r,)) for r in READERS]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    code = ("import sys; from mame_eval.studies.store import StudyStore\n"
            "r = sys.argv[2]\n"
            "with StudyStore(sys.argv[1]) as s:\n"
            "    for c in s.assignments(r)[12:]: assert s.record_rating(r, c, 3)\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, st.db_url, r]) for r in READERS]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    with st.store() as store:
        ratings = store.ratings()
        assert len(ratings) == 72
        assert len({(r.reader, r.case) for r in ratings}) == 72
        assert sum(e["event"] == "rated" for e in store.audit()) == 72


# --------------------------------------------------------------------------------------------
# the CLI sub-app (thin: parse, call, print)
# --------------------------------------------------------------------------------------------


def test_cli_create_import_status_analyze_export(tmp_path):
    real = _pngs(tmp_path / "real", 6, 1)
    syn = _pngs(tmp_path / "syn", 6, 2)
    runner = CliRunner()
    out = tmp_path / "studies" / "cli"
    res = runner.invoke(study_app, ["create", "--real", str(real), "--synthetic", str(syn),
                                    "--n", "10", "--readers", "ann,ben", "--seed", "1",
                                    "--out", str(out), "--port", "8600"])
    assert res.exit_code == 0, res.output
    assert res.output.count("http://localhost:8600/?token=") == 3
    assert "reader ann:" in res.output and "coordinator:" in res.output
    ratings = _ratings(out, readers=["ann", "ben"])
    _write(ratings, tmp_path / "r.csv")
    res = runner.invoke(study_app, ["import-ratings", str(out), str(tmp_path / "r.csv")])
    assert res.exit_code == 0 and "imported 20 ratings" in res.output
    res = runner.invoke(study_app, ["status", str(out), "--json"])
    assert json.loads(res.output)["complete"] is True
    res = runner.invoke(study_app, ["analyze", str(out), "--cutoff", "2.5"])
    assert res.exit_code == 0 and "reader-averaged AUROC" in res.output
    res = runner.invoke(study_app, ["export", str(out), "--format", "imrmc"])
    assert res.exit_code == 0 and "study.imrmc" in res.output
    res = runner.invoke(study_app, ["create", "--real", str(real), "--synthetic", str(syn),
                                    "--n", "10", "--readers", "ann", "--out", str(out)])
    assert res.exit_code != 0 and isinstance(res.exception, MameError)


def test_module_entry_point_reports_errors_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mame_eval.studies.commands", "status",
                           str(tmp_path / "nope")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "study folder not found" in proc.stderr


@pytest.mark.parametrize(("args", "option"), [
    (["analyze", "{study}", "--out", "{file}"], "--out"),
    (["analyze", "{study}", "--cutoff", "7"], "--cutoff"),
    (["analyze", "{study}", "--cutoff", "-1"], "--cutoff"),
    (["analyze", "{study}", "--margin", "0.7"], "--margin"),
    (["analyze", "{study}", "--margin", "0"], "--margin"),
    (["analyze", "{study}", "--level", "95"], "--level"),
    (["analyze", "{study}", "--score", "best"], "--score"),
    (["export", "{study}", "--out", "{dir}"], "--out"),
    (["import-ratings", "{study}", "{dir}"], "is a folder"),
])
def test_bad_options_are_one_line_naming_the_option_and_write_nothing(study, tmp_path, args,
                                                                      option):
    import_ratings(study, _write(_ratings(study), tmp_path / "r.csv"))
    existing = tmp_path / "existing.txt"
    existing.write_text("keep me")
    folder = tmp_path / "a_folder"
    folder.mkdir()
    argv = [a.format(study=study, file=existing, dir=folder) for a in args]
    res = CliRunner().invoke(study_app, argv)
    assert res.exit_code != 0 and isinstance(res.exception, StudyError)
    msg = str(res.exception)
    assert option in msg and "\n" not in msg
    assert existing.read_text() == "keep me" and list(folder.iterdir()) == []
    assert not (study / "analysis").exists() and not (study / "exports").exists()


def test_the_command_line_prints_one_error_line_and_no_traceback(study, tmp_path):
    out = tmp_path / "results.txt"
    out.write_text("x")
    proc = subprocess.run([sys.executable, "-m", "mame_eval.studies.commands", "analyze",
                           str(study), "--out", str(out)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "--out" in proc.stderr


def test_serving_on_another_port_than_the_links_warns(study):
    from mame_eval.studies.study import link_port_warning

    assert link_port_warning(study, None) is None
    assert link_port_warning(study, 8501) is None
    warning = link_port_warning(study, 8600)
    assert "--port 8600" in warning and "port 8501" in warning and "\n" not in warning
