"""Van Dyke et al. (1993) MRMC example: reproduce the published values (tests/data/README.md)
to the printed precision, and check the validation of long-format ratings tables."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from published import printed

from mame_eval.errors import InputError
from mame_eval.stats.roc import jackknife_se
from mame_eval.studies.ratings import (
    format_mrmc_table,
    load_ratings,
    mrmc_report,
    reader_roc_curves,
)

DATA = Path(__file__).parent / "data" / "vandyke.csv"
COLS = {"modality": "treatment", "score": "rating"}


@pytest.fixture(scope="module")
def vandyke() -> pd.DataFrame:
    return pd.read_csv(DATA)


def cli_report(path: Path, *args: str) -> dict:
    """What `mame-eval mrmc --json` prints, as a user runs it."""
    res = subprocess.run([sys.executable, "-m", "mame_eval", "mrmc", str(path), "--score",
                          "rating", "--json", *args], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


# Every published number is checked twice: from the library and from `mame-eval mrmc --json`.
@pytest.fixture(scope="module", params=["library", "cli"])
def source(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def jk(vandyke, source) -> dict:
    if source == "cli":
        return cli_report(DATA, "--modality", "treatment")
    return mrmc_report(vandyke, **COLS)


@pytest.fixture(scope="module")
def dl(vandyke, source) -> dict:
    if source == "cli":
        return cli_report(DATA, "--modality", "treatment", "--covariance", "delong")
    return mrmc_report(vandyke, **COLS, covariance="delong")


# --------------------------------------------------------------------------------------------
# published values
# --------------------------------------------------------------------------------------------

READER_AUCS = {
    "1": ["0.91964573", "0.85877617", "0.90386473", "0.97310789", "0.82979066"],
    "2": ["0.94782609", "0.90531401", "0.92173913", "0.99935588", "0.92995169"],
}


def test_design_loaded(vandyke):
    data = load_ratings(vandyke, **COLS)
    assert data.ratings.shape == (2, 5, 114)
    assert data.modalities == ("1", "2") and data.readers == ("1", "2", "3", "4", "5")
    assert int(data.truth.sum()) == 45 and int((data.truth == 0).sum()) == 69


def test_reader_aucs(jk, dl):
    for rep in (jk, dl):
        for m, values in READER_AUCS.items():
            got = rep["modalities"][m]["readers"]
            assert list(got) == ["1", "2", "3", "4", "5"]
            for v, pub in zip(got.values(), values, strict=True):
                printed(v, pub)


def test_reader_averaged_aucs(jk):
    printed(jk["modalities"]["1"]["auc"], "0.89703704")
    printed(jk["modalities"]["2"]["auc"], "0.94083736")


def test_mean_squares_and_jackknife_covariances(jk):
    vc = jk["variance_components"]
    printed(vc["ms_t"], "0.00479617")
    printed(vc["ms_r"], "0.00383620")
    printed(vc["ms_tr"], "0.00055103")
    printed(vc["var"], "0.00080229")
    printed(vc["cov1"], "0.00034661")
    printed(vc["cov2"], "0.00034407")
    printed(vc["cov3"], "0.00023903")


def test_random_readers_random_cases_jackknife(jk):
    c = jk["comparison"]
    printed(c["F"], "4.456")
    printed(c["ddf"], "15.26")
    printed(c["p"], "0.0517")
    (d,) = c["differences"]
    assert (d["a"], d["b"]) == ("1", "2")
    printed(d["estimate"], "-0.04380")
    printed(d["se"], "0.02075")
    printed(d["ci"][0], "-0.08796")
    printed(d["ci"][1], "0.00036")


def test_single_treatment_intervals(jk):
    m1, m2 = jk["modalities"]["1"], jk["modalities"]["2"]
    printed(m1["auc"], "0.8970")
    printed(m1["se"], "0.03317")
    printed(m1["df"], "12.74")
    printed(m2["auc"], "0.9408")
    printed(m2["se"], "0.02157")
    printed(m2["df"], "12.71")
    for m in (m1, m2):
        assert m["ci"][0] < m["auc"] < m["ci"][1]


def test_delong_covariance(dl):
    c = dl["comparison"]
    printed(c["F"], "4.484854")
    printed(c["ddf"], "15.06611")
    printed(c["p"], "0.05123")
    assert dl["covariance"] == "delong"


def test_fixed_readers(jk):
    fr = jk["fixed_readers"]
    printed(fr["chi2"], "5.47595")
    printed(fr["p"], "0.01928")
    assert fr["df"] == 1 and isinstance(fr["df"], int)


def test_fixed_cases(jk):
    printed(jk["fixed_cases"]["F"], "8.704")
    printed(jk["fixed_cases"]["p"], "0.04196")


def test_reader1_treatment1_alone(vandyke, source, tmp_path):
    sub = vandyke[(vandyke.reader == 1) & (vandyke.treatment == 1)]
    printed(jackknife_se(sub.truth.to_numpy(), sub.rating.to_numpy()), "0.0301255")
    if source == "cli":
        sub.drop(columns="treatment").to_csv(tmp_path / "reader1.csv", index=False)
        rep = cli_report(tmp_path / "reader1.csv")
    else:
        rep = mrmc_report(sub.drop(columns="treatment"), score="rating")
    (m,) = rep["modalities"].values()
    assert list(rep["modalities"]) == ["all"]
    printed(m["auc"], "0.9196457")
    printed(m["se"], "0.0301255")
    printed(m["ci"][0], "0.8606")
    printed(m["ci"][1], "0.9787")
    assert m["df"] is None  # one reader: normal quantiles
    assert rep["comparison"] is None and rep["fixed_readers"] is None
    assert rep["fixed_cases"] is None


# --------------------------------------------------------------------------------------------
# report shape
# --------------------------------------------------------------------------------------------


def _assert_plain_json(obj):
    if isinstance(obj, dict):
        assert all(isinstance(k, str) for k in obj)
        for v in obj.values():
            _assert_plain_json(v)
    elif isinstance(obj, list):
        for v in obj:
            _assert_plain_json(v)
    else:
        assert obj is None or type(obj) in (float, int, str, bool), type(obj)


def test_report_shape_is_plain_json(jk):
    assert set(jk) == {
        "covariance",
        "modalities",
        "comparison",
        "fixed_readers",
        "fixed_cases",
        "variance_components",
    }
    assert set(jk["modalities"]["1"]) == {"auc", "se", "df", "ci", "readers"}
    assert set(jk["comparison"]) == {"F", "ddf", "p", "differences"}
    assert set(jk["comparison"]["differences"][0]) == {"a", "b", "estimate", "se", "ci"}
    assert set(jk["fixed_readers"]) == {"chi2", "df", "p"}
    assert set(jk["fixed_cases"]) == {"F", "p"}
    assert set(jk["variance_components"]) == {
        "var", "cov1", "cov2", "cov3", "ms_t", "ms_r", "ms_tr"
    }
    _assert_plain_json(jk)
    assert json.loads(json.dumps(jk, allow_nan=False)) == jk


def test_single_modality_report(vandyke):
    one = vandyke[vandyke.treatment == 2].drop(columns="treatment")
    rep = mrmc_report(one, score="rating")
    assert list(rep["modalities"]) == ["all"]
    printed(rep["modalities"]["all"]["auc"], "0.94083736")
    printed(rep["modalities"]["all"]["se"], "0.02157")
    printed(rep["modalities"]["all"]["df"], "12.71")
    assert rep["comparison"] is None and rep["fixed_cases"] is None
    assert rep["variance_components"]["cov1"] is None
    json.dumps(rep, allow_nan=False)


def test_string_labels_kept(vandyke):
    df = vandyke.assign(
        reader="dr_" + vandyke.reader.astype(str),
        treatment=vandyke.treatment.map({1: "cine", 2: "spin_echo"}),
    )
    rep = mrmc_report(df, **COLS)
    assert list(rep["modalities"]) == ["cine", "spin_echo"]
    assert list(rep["modalities"]["cine"]["readers"]) == [f"dr_{i}" for i in range(1, 6)]
    d = rep["comparison"]["differences"][0]
    assert (d["a"], d["b"]) == ("cine", "spin_echo")
    printed(d["estimate"], "-0.04380")


def test_format_table(jk, dl):
    text = format_mrmc_table(jk)
    for s in ("0.8970", "0.9408", "0.03317", "12.74", "4.456", "15.26", "-0.04380", "0.02075",
              "[-0.08796, 0.00036]", "0.01928", "8.7040", "0.04196", "0.00034661"):
        assert s in text, s
    assert "delong" in format_mrmc_table(dl)


def test_reader_roc_curves(vandyke):
    data = load_ratings(vandyke, **COLS)
    curves = reader_roc_curves(data, "1")
    assert list(curves) == ["1", "2", "3", "4", "5"]
    printed(curves["1"][2], "0.91964573")
    with pytest.raises(InputError, match="modality '3' not found"):
        reader_roc_curves(data, "3")


# --------------------------------------------------------------------------------------------
# validation of the ratings table
# --------------------------------------------------------------------------------------------


def test_missing_column_names_it_and_lists_columns(vandyke):
    with pytest.raises(InputError, match=r"score column 'score' not found; columns present: "
                       r"reader, treatment, case, truth, rating"):
        mrmc_report(vandyke, modality="treatment")
    with pytest.raises(InputError, match="modality column 'trt' not found"):
        mrmc_report(vandyke, modality="trt", score="rating")


def test_case_with_two_truths(vandyke):
    df = vandyke.copy()
    row = df.index[(df.case == 7)][0]
    df.loc[row, "truth"] = 1 - df.loc[row, "truth"]
    with pytest.raises(InputError, match="case '7' has both truth 0 and 1"):
        mrmc_report(df, **COLS)


def test_reader_missing_cases(vandyke):
    drop = vandyke.index[(vandyke.reader == 3) & (vandyke.treatment == 2)][:4]
    with pytest.raises(InputError, match="reader '3' is missing 4 of 114 cases in modality '2'"):
        mrmc_report(vandyke.drop(index=drop), **COLS)


def test_duplicate_rows(vandyke):
    df = pd.concat([vandyke, vandyke.iloc[[10]]], ignore_index=True)
    with pytest.raises(InputError, match="duplicate ratings: 2 rows .*reader '1'"):
        mrmc_report(df, **COLS)


@pytest.mark.parametrize("bad", [2, "yes", np.nan])
def test_truth_not_binary(vandyke, bad):
    df = vandyke.astype({"truth": object})
    df.loc[5, "truth"] = bad
    with pytest.raises(InputError, match=r"truth column 'truth' must be 0/1 .*found values"):
        mrmc_report(df, **COLS)


def test_only_one_truth_class(vandyke):
    with pytest.raises(InputError, match="only the value 1 .*need both"):
        mrmc_report(vandyke[vandyke.truth == 1], **COLS)


def test_non_numeric_and_missing_score(vandyke):
    df = vandyke.astype({"rating": object})
    df.loc[3, "rating"] = "high"
    with pytest.raises(InputError, match=r"score column 'rating' must be numeric; got 'high'"):
        mrmc_report(df, **COLS)
    df = vandyke.astype({"rating": float})
    df.loc[3, "rating"] = np.nan
    with pytest.raises(InputError, match="score column 'rating' has 1 missing value"):
        mrmc_report(df, **COLS)


def test_empty_table_and_bad_covariance(vandyke):
    with pytest.raises(InputError, match="no rows"):
        mrmc_report(vandyke.iloc[:0], **COLS)
    with pytest.raises(InputError, match="covariance must be"):
        mrmc_report(vandyke, **COLS, covariance="bootstrap")


def test_too_few_cases_per_class_for_variance(vandyke):
    first_diseased = vandyke.loc[vandyke.truth == 1, "case"].min()
    df = vandyke[vandyke.truth.eq(0) | vandyke.case.eq(first_diseased)]
    assert df.groupby("case").truth.first().sum() == 1  # one diseased case left
    with pytest.raises(InputError, match="at least 2 positive .*got 1 positive"):
        mrmc_report(df, **COLS)
