"""Franken et al. (1992) MRMC example (RJafroc ``dataset03``): reproduce the published
OR-DBM MRMC 2.51 report and RJafroc ``St(dataset03, FOM = "Wilcoxon", method = "OR")`` to the
printed precision (tests/data/README.md). In this study Cov2 < Cov3, so the fixed-readers
error term and the random-readers df depend on the clamp ``max(Cov2 - Cov3, 0)``.

Also: designs with three modalities (global test on t - 1 df, every pair of modalities)."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from published import printed
from scipy import stats

from mame_eval.stats.mrmc import ChiSquareTest, FTest, or_mrmc
from mame_eval.studies.ratings import load_ratings, mrmc_report

DATA = Path(__file__).parent / "data" / "franken.csv"


def printed_estimate(est, se: str, lo: str, hi: str) -> None:
    """A per-modality estimate's SE and CI against the published numbers."""
    printed(est.se, se)
    printed(est.ci[0], lo)
    printed(est.ci[1], hi)


@pytest.fixture(scope="module")
def franken() -> pd.DataFrame:
    return pd.read_csv(DATA)


@pytest.fixture(scope="module")
def result(franken):
    data = load_ratings(franken)
    return or_mrmc(data.ratings, data.truth, modalities=data.modalities, readers=data.readers)


@pytest.fixture(scope="module", params=["library", "cli"])
def report(request, franken) -> dict:
    if request.param == "library":
        return mrmc_report(franken)
    res = subprocess.run([sys.executable, "-m", "mame_eval", "mrmc", str(DATA), "--json"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


# OR-DBM MRMC 2.51, "Franken1.txt" (RJafroc tests/testthat/goodValues361/Iowa/)
READER_AUCS = {
    "1": ["0.85345997", "0.86499322", "0.85730439", "0.81524197"],
    "2": ["0.84961556", "0.84350972", "0.84011759", "0.81433740"],
}


def test_design(franken):
    data = load_ratings(franken)
    assert data.ratings.shape == (2, 4, 100)
    assert int(data.truth.sum()) == 67 and int((data.truth == 0).sum()) == 33


def test_reader_and_modality_aucs(result, report):
    for i, m in enumerate(("1", "2")):
        for j, pub in enumerate(READER_AUCS[m]):
            printed(result.reader_auc[i, j], pub)
        for v, pub in zip(report["modalities"][m]["readers"].values(), READER_AUCS[m],
                          strict=True):
            printed(v, pub)
    printed(report["modalities"]["1"]["auc"], "0.84774989")
    printed(report["modalities"]["2"]["auc"], "0.83689507")


def test_mean_squares_and_covariances(result, report):
    vc = report["variance_components"]
    for key, pub in (("ms_t", "0.00023565"), ("ms_r", "0.00068406"), ("ms_tr", "0.00005020"),
                     ("var", "0.00152578"), ("cov1", "0.00079168"), ("cov2", "0.00048364"),
                     ("cov3", "0.00051251")):
        printed(vc[key], pub)  # OR-DBM MRMC 2.51
    for key, pub in (("ms_t", "2.3565410e-04"), ("ms_tr", "5.0202641e-05"),
                     ("var", "1.5257762e-03"), ("cov1", "7.9168215e-04"),
                     ("cov2", "4.8363767e-04"), ("cov3", "5.1250915e-04")):
        mant, exp = pub.split("e")
        assert abs(vc[key] - float(pub)) <= 0.5 * 10.0 ** (int(exp) - 7) + 1e-15, key  # RJafroc
    assert vc["cov2"] < vc["cov3"]  # the case the clamp is for
    pm = result.per_modality
    printed(pm["1"].ms_r, "0.00049266")
    printed(pm["2"].ms_r, "0.00024160")
    printed(pm["1"].cov2, "0.00047230")
    printed(pm["2"].cov2, "0.00049498")
    printed(pm["1"].var, "0.00152278")
    printed(pm["2"].var, "0.00152877")


def test_random_readers_random_cases(result, report):
    c = report["comparison"]
    # OR-DBM: F 4.69, ddf 3.00, p 0.1188; RJafroc: 4.6940577, 3, 0.11883786
    printed(c["F"], "4.69")
    printed(c["ddf"], "3.00")
    printed(c["p"], "0.1188")
    assert c["F"] == pytest.approx(4.6940577, abs=5e-8)
    assert c["ddf"] == pytest.approx(3.0, abs=1e-9)  # max(Cov2 - Cov3, 0) = 0: (t-1)(r-1)
    assert c["p"] == pytest.approx(0.11883786, abs=5e-9)
    (d,) = c["differences"]
    printed(d["estimate"], "0.01085482")
    printed(d["se"], "0.00501")
    printed(d["ci"][0], "-0.00509")
    printed(d["ci"][1], "0.02680")
    assert d["se"] == pytest.approx(0.0050101218, abs=5e-11)
    assert d["ci"][0] == pytest.approx(-0.0050896269, abs=5e-11)
    assert d["ci"][1] == pytest.approx(0.026799261, abs=5e-10)
    for m, (se, df, lo, hi) in {"1": ("0.024402152", "70.121788", "0.79908282", "0.89641696"),
                                "2": ("0.023566416", "253.644028", "0.79048429", "0.88330585")
                                }.items():
        got = report["modalities"][m]
        printed(got["se"], se)
        printed(got["df"], df)
        printed(got["ci"][0], lo)
        printed(got["ci"][1], hi)
    assert result.random.test.df1 == 1


def test_fixed_readers_random_cases_uses_the_clamp(result, report):
    fr = report["fixed_readers"]
    # OR-DBM: X2 0.32101, p 0.5710; RJafroc: 0.32101347, p 0.57099922
    printed(fr["chi2"], "0.32101")
    printed(fr["p"], "0.5710")
    printed(fr["chi2"], "0.32101347")
    printed(fr["p"], "0.57099922")
    assert fr["df"] == 1
    (d,) = result.fixed_readers.differences
    printed(d.estimate, "0.01085")
    printed(d.se, "0.01916")
    printed(d.ci[0], "-0.02670")
    printed(d.ci[1], "0.04840")
    printed(d.p, "0.5710")
    printed(d.se, "0.019158472")  # RJafroc
    printed(d.ci[0], "-0.026695098")
    printed(d.ci[1], "0.048404732")
    printed(result.variance_components.var - result.variance_components.cov1
            + 3 * max(result.variance_components.cov2 - result.variance_components.cov3, 0),
            "0.0007340941")  # RJafroc's FRRC error mean square
    for m, (se, lo, hi) in {"1": ("0.027109386", "0.79461647", "0.90088331"),
                            "2": ("0.027448603", "0.78309680", "0.89069334")}.items():
        printed_estimate(result.fixed_readers.modalities[m], se, lo, hi)
    # without the clamp (the old formula) the statistic would be 0.364, p 0.546
    vc = result.variance_components
    unclamped = vc.ms_t / (vc.var - vc.cov1 + 3 * (vc.cov2 - vc.cov3))
    assert unclamped == pytest.approx(0.364, abs=5e-4) and fr["chi2"] < unclamped


def test_random_readers_fixed_cases(result, report):
    printed(report["fixed_cases"]["F"], "4.69")
    printed(report["fixed_cases"]["p"], "0.1188")
    for m, (se, lo, hi) in {"1": ("0.011098012", "0.81243106", "0.88306871"),
                            "2": ("0.007771730", "0.81216196", "0.86162818")}.items():
        printed_estimate(result.fixed_cases.modalities[m], se, lo, hi)


def test_per_modality_fixed_reader_se_clamps_negative_cov2():
    """A modality whose readers' AUCs covary negatively: the fixed-reader SE uses
    ``max(Cov2_i, 0)`` (RJafroc / OR-DBM), i.e. SE^2 = Var_i / r, never below it."""
    rng = np.random.default_rng(5)
    k = 60
    truth = np.r_[np.zeros(k // 2, int), np.ones(k // 2, int)]
    base = truth + rng.normal(0, 1.0, k)
    # reader 2 rates the opposite way on a random half of the cases: anticorrelated errors
    flip = rng.random(k) < 0.5
    r1 = base + rng.normal(0, 0.3, k)
    r2 = np.where(flip, truth - (base - truth), base) + rng.normal(0, 0.3, k)
    ratings = np.stack([np.stack([r1, r2]), np.stack([r1 + rng.normal(0, .5, k), r2])])
    res = or_mrmc(ratings, truth)
    assert all(pm.cov2 < 0 for pm in res.per_modality.values())  # the case the clamp is for
    for m, pm in res.per_modality.items():
        expected = (pm.var + (2 - 1) * max(pm.cov2, 0.0)) / 2
        assert res.fixed_readers.modalities[m].se == pytest.approx(np.sqrt(expected), rel=1e-12)
        assert res.fixed_readers.modalities[m].se >= np.sqrt(pm.var / 2) - 1e-15


def _three_modality_design(seed=0, t=3, r=4, k=80):
    rng = np.random.default_rng(seed)
    truth = np.r_[np.zeros(k // 2, int), np.ones(k // 2, int)]
    case = rng.normal(0, 1, k)
    reader = rng.normal(0, 0.3, r)
    shift = np.array([0.0, 0.4, 0.9])[:t]
    ratings = (truth[None, None] * (1.0 + shift[:, None, None]) + case[None, None]
               + reader[None, :, None] + rng.normal(0, 0.7, (t, r, k)))
    return ratings, truth


def test_three_modalities_every_pair_and_df():
    ratings, truth = _three_modality_design()
    res = or_mrmc(ratings, truth, modalities=["a", "b", "c"])
    assert isinstance(res.random.test, FTest) and res.random.test.df1 == 2
    assert isinstance(res.fixed_readers.test, ChiSquareTest) and res.fixed_readers.test.df == 2
    assert isinstance(res.fixed_cases.test, FTest) and res.fixed_cases.test.df1 == 2
    assert res.fixed_cases.test.df2 == pytest.approx(2 * 3)
    for analysis in (res.random, res.fixed_readers, res.fixed_cases):
        pairs = [(d.a, d.b) for d in analysis.differences]
        assert pairs == list(itertools.combinations(["a", "b", "c"], 2))
        for d in analysis.differences:
            i, k = "abc".index(d.a), "abc".index(d.b)
            assert d.estimate == pytest.approx(res.modality_auc[i] - res.modality_auc[k])
            assert d.ci[0] < d.estimate < d.ci[1] and 0 <= d.p <= 1
        assert len(analysis.modalities) == 3
    # independent reference for the RRRC F test: the OR formulas written out with numpy
    theta = res.reader_auc
    t, r = theta.shape
    grand = theta.mean()
    ms_t = r * ((theta.mean(1) - grand) ** 2).sum() / (t - 1)
    resid = theta - theta.mean(1, keepdims=True) - theta.mean(0, keepdims=True) + grand
    ms_tr = (resid**2).sum() / ((t - 1) * (r - 1))
    c = res.auc_cov
    cov2 = np.mean([c[i, j, i, jj] for i in range(t) for j in range(r) for jj in range(r)
                    if j != jj])
    cov3 = np.mean([c[i, j, ii, jj] for i in range(t) for ii in range(t) for j in range(r)
                    for jj in range(r) if i != ii and j != jj])
    den = ms_tr + r * max(cov2 - cov3, 0)
    ddf = den**2 / (ms_tr**2 / ((t - 1) * (r - 1)))
    f_stat = res.random.test.F
    assert f_stat == pytest.approx(ms_t / den, rel=1e-10)
    assert res.random.test.df2 == pytest.approx(ddf, rel=1e-10)
    assert res.random.test.p == pytest.approx(stats.f.sf(ms_t / den, 2, ddf), rel=1e-8)


def test_three_modalities_report_and_cli(tmp_path):
    ratings, truth = _three_modality_design(seed=1)
    t, r, k = ratings.shape
    rows = [{"reader": j + 1, "modality": f"m{i}", "case": c, "truth": int(truth[c]),
             "score": float(ratings[i, j, c])}
            for i in range(t) for j in range(r) for c in range(k)]
    df = pd.DataFrame(rows)
    rep = mrmc_report(df)
    assert list(rep["modalities"]) == ["m0", "m1", "m2"]
    assert [(d["a"], d["b"]) for d in rep["comparison"]["differences"]] == [
        ("m0", "m1"), ("m0", "m2"), ("m1", "m2")]
    assert rep["fixed_readers"]["df"] == 2
    json.dumps(rep, allow_nan=False)
    path = tmp_path / "three.csv"
    df.to_csv(path, index=False)
    res = subprocess.run([sys.executable, "-m", "mame_eval", "mrmc", str(path), "--json"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["comparison"]["F"] == pytest.approx(rep["comparison"]["F"])
