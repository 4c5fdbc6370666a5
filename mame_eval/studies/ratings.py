"""Long-format reader-study ratings: validation, MRMC report and its plain-text table.

A ratings table has one row per (reader, modality, case) with the case's truth (0/1,
1 = positive/diseased) and the reader's score (numeric, higher = more likely positive), e.g.::

    reader,modality,case,truth,score
    1,real,17,1,4
    1,synthetic,17,1,3

Every reader must rate every case in every modality (fully crossed design). A table without
the modality column (when the default name ``"modality"`` is used, or ``modality=None``) is a
single-modality study whose modality is called ``"all"``. Reader, modality and case labels are
kept as strings ("1", not 1); they are ordered numerically when every label is a number,
otherwise alphabetically.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mame_eval.errors import InputError
from mame_eval.stats.mrmc import ORResult, or_mrmc
from mame_eval.stats.roc import auroc, roc_curve_empirical

__all__ = [
    "SINGLE_MODALITY",
    "RatingsData",
    "format_mrmc_table",
    "load_ratings",
    "mrmc_report",
    "reader_roc_curves",
    "result_to_dict",
]

#: modality label used when the table has no modality column
SINGLE_MODALITY = "all"
_DEFAULT_MODALITY = "modality"


@dataclass(frozen=True, eq=False)
class RatingsData:
    """Validated ratings as arrays.

    Attributes
    ----------
    ratings : ndarray, shape (t, r, K), float
        ``ratings[i, j, k]`` = score of reader ``readers[j]`` for case ``cases[k]`` in
        modality ``modalities[i]``.
    truth : ndarray, shape (K,), int 0/1
    modalities, readers, cases : tuple of str
    """

    ratings: np.ndarray
    truth: np.ndarray
    modalities: tuple[str, ...]
    readers: tuple[str, ...]
    cases: tuple[str, ...]


def _label(v) -> str:
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    return str(v)


def _sorted_labels(labels) -> list[str]:
    uniq = list(dict.fromkeys(labels))
    try:
        return sorted(uniq, key=float)
    except ValueError:
        return sorted(uniq)


def _py(v):
    """numpy scalar -> Python scalar, so messages show 2.0 rather than np.float64(2.0)."""
    return v.item() if isinstance(v, np.generic) else v


def _record(row: pd.Series, cols: dict[str, str]) -> str:
    parts = [f"{role} {_py(row[c])!r}" for role, c in cols.items() if c is not None and c in row]
    return ", ".join(parts)


def _vals(values, limit: int = 5) -> str:
    vals = sorted({repr(_py(v)) for v in values})
    more = f" (and {len(vals) - limit} more)" if len(vals) > limit else ""
    return ", ".join(vals[:limit]) + more


def load_ratings(
    df: pd.DataFrame,
    reader: str = "reader",
    modality: str | None = "modality",
    case: str = "case",
    truth: str = "truth",
    score: str = "score",
) -> RatingsData:
    """Validate a long-format ratings table and reshape it for :func:`or_mrmc`.

    Parameters
    ----------
    df : DataFrame
        One row per (reader, modality, case).
    reader, modality, case, truth, score : str
        Column names. ``modality=None``, or the default ``"modality"`` when that column is
        absent, means a single modality labelled ``"all"``.

    Returns
    -------
    RatingsData

    Raises
    ------
    InputError
        With one line naming the column / value / reader / case at fault: missing column,
        empty table, missing labels, non-numeric or non-finite score, truth not 0/1, a case
        with two truths, only one truth class, duplicate (reader, modality, case) rows, or a
        reader missing cases in a modality.
    """
    if not isinstance(df, pd.DataFrame):
        raise InputError("ratings must be a pandas DataFrame (one row per reader/modality/case)")
    present = ", ".join(map(str, df.columns)) or "(none)"
    if modality is not None and modality not in df.columns and modality == _DEFAULT_MODALITY:
        modality = None
    roles = {"reader": reader, "modality": modality, "case": case, "truth": truth, "score": score}
    for role, col in roles.items():
        if col is not None and col not in df.columns:
            raise InputError(f"{role} column {col!r} not found; columns present: {present}")
    used = [c for c in roles.values() if c is not None]
    if len(set(used)) != len(used):
        raise InputError(f"each role needs its own column; got {roles}")
    if df.empty:
        raise InputError("the ratings table has no rows")

    d = df[used].copy()
    key_roles = {"reader": reader, "modality": modality, "case": case}
    for role, col in key_roles.items():
        if col is None:
            continue
        na = d[col].isna()
        if na.any():
            raise InputError(f"{role} column {col!r} has {int(na.sum())} empty value(s)")
        d[col] = d[col].map(_label)
    mcol = modality if modality is not None else "__modality__"
    if modality is None:
        d[mcol] = SINGLE_MODALITY
    keys = {"reader": reader, "modality": mcol, "case": case}

    # score: numeric and finite
    raw = d[score]
    num = pd.to_numeric(raw, errors="coerce") if raw.dtype != bool else raw.astype(float)
    bad = num.isna() & raw.notna()
    if bad.any():
        row = d[bad].iloc[0]
        raise InputError(
            f"score column {score!r} must be numeric; got {_py(row[score])!r} for "
            f"{_record(row, keys)} ({int(bad.sum())} non-numeric value(s))"
        )
    if raw.isna().any():
        row = d[raw.isna()].iloc[0]
        raise InputError(
            f"score column {score!r} has {int(raw.isna().sum())} missing value(s), first for "
            f"{_record(row, keys)}"
        )
    num = num.astype(float)
    if not np.isfinite(num).all():
        row = d[~np.isfinite(num)].iloc[0]
        raise InputError(
            f"score column {score!r} must be finite; got {_py(row[score])!r} for "
            f"{_record(row, keys)}"
        )
    d[score] = num

    # truth: 0/1, one per case, both classes
    raw = d[truth]
    tnum = pd.to_numeric(raw, errors="coerce") if raw.dtype != bool else raw.astype(float)
    ok = tnum.isin([0, 1])
    if not ok.all():
        raise InputError(
            f"truth column {truth!r} must be 0/1 (1 = positive/diseased); found values "
            f"{_vals(raw[~ok].tolist())}"
        )
    d[truth] = tnum.astype(int)
    per_case = d.groupby(case, sort=False)[truth].nunique()
    conflict = per_case[per_case > 1]
    if not conflict.empty:
        more = f" (and {len(conflict) - 1} more case(s))" if len(conflict) > 1 else ""
        raise InputError(
            f"case {conflict.index[0]!r} has both truth 0 and 1 in column {truth!r}; "
            f"each case needs a single truth{more}"
        )
    case_truth = d.groupby(case, sort=False)[truth].first()
    if case_truth.nunique() < 2:
        only = int(case_truth.iloc[0])
        raise InputError(
            f"truth column {truth!r} has only the value {only} ({len(case_truth)} case(s)); "
            "need both positive (1) and negative (0) cases"
        )

    # design: no duplicates, fully crossed
    dup = d.duplicated([reader, mcol, case], keep=False)
    if dup.any():
        row = d[dup].iloc[0]
        hint = (
            " (no modality column is used: pass modality=<column> if the table holds several)"
            if modality is None
            else ""
        )
        raise InputError(
            f"duplicate ratings: {int(dup.sum())} rows share a (reader, modality, case), "
            f"e.g. {_record(row, keys)}; expected one row per reader, modality and case{hint}"
        )
    modalities = _sorted_labels(d[mcol])
    readers = _sorted_labels(d[reader])
    cases = _sorted_labels(d[case])
    n_cases = len(cases)
    for m in modalities:
        dm = d[d[mcol] == m]
        for rd in readers:
            rated = set(dm.loc[dm[reader] == rd, case])
            if len(rated) < n_cases:
                missing = [c for c in cases if c not in rated]
                where = f" in modality {m!r}" if modality is not None else ""
                if not rated:
                    raise InputError(
                        f"reader {rd!r} has no ratings{where}; every reader must rate every "
                        "case in every modality"
                    )
                raise InputError(
                    f"reader {rd!r} is missing {len(missing)} of {n_cases} cases{where} "
                    f"(e.g. case {missing[0]!r}); every reader must rate every case"
                    + (" in every modality" if modality is not None else "")
                )

    mi = pd.Categorical(d[mcol], categories=modalities).codes
    ri = pd.Categorical(d[reader], categories=readers).codes
    ci = pd.Categorical(d[case], categories=cases).codes
    x = np.empty((len(modalities), len(readers), n_cases))
    x[mi, ri, ci] = d[score].to_numpy()
    y = case_truth.reindex(cases).to_numpy().astype(int)
    return RatingsData(
        ratings=x,
        truth=y,
        modalities=tuple(modalities),
        readers=tuple(readers),
        cases=tuple(cases),
    )


def _num(x: float | None) -> float | None:
    """JSON number: None stays None, infinite df becomes None (= normal quantiles)."""
    if x is None or math.isinf(x):
        return None
    return float(x)


def result_to_dict(result: ORResult) -> dict:
    """Convert an :class:`ORResult` into the JSON-ready report of :func:`mrmc_report`."""
    rr = result.random
    mods = {}
    for i, m in enumerate(result.modalities):
        e = rr.modalities[m]
        mods[m] = {
            "auc": float(e.auc),
            "se": float(e.se),
            "df": _num(e.df),
            "ci": [float(e.ci[0]), float(e.ci[1])],
            "readers": {
                rd: float(result.reader_auc[i, j]) for j, rd in enumerate(result.readers)
            },
        }
    comparison = None
    if rr.test is not None:
        comparison = {
            "F": float(rr.test.F),
            "ddf": _num(rr.test.df2),
            "p": float(rr.test.p),
            "differences": [
                {
                    "a": d.a,
                    "b": d.b,
                    "estimate": float(d.estimate),
                    "se": float(d.se),
                    "ci": [float(d.ci[0]), float(d.ci[1])],
                }
                for d in rr.differences
            ],
        }
    fixed_readers = None
    if result.fixed_readers.test is not None:
        ft = result.fixed_readers.test
        fixed_readers = {"chi2": float(ft.chi2), "df": int(ft.df), "p": float(ft.p)}
    fixed_cases = None
    if result.fixed_cases is not None and result.fixed_cases.test is not None:
        fc = result.fixed_cases.test
        fixed_cases = {"F": float(fc.F), "p": float(fc.p)}
    vc = result.variance_components
    return {
        "covariance": result.covariance,
        "modalities": mods,
        "comparison": comparison,
        "fixed_readers": fixed_readers,
        "fixed_cases": fixed_cases,
        "variance_components": {
            "var": _num(vc.var),
            "cov1": _num(vc.cov1),
            "cov2": _num(vc.cov2),
            "cov3": _num(vc.cov3),
            "ms_t": _num(vc.ms_t),
            "ms_r": _num(vc.ms_r),
            "ms_tr": _num(vc.ms_tr),
        },
    }


def mrmc_report(
    df: pd.DataFrame,
    reader: str = "reader",
    modality: str | None = "modality",
    case: str = "case",
    truth: str = "truth",
    score: str = "score",
    covariance: str = "jackknife",
) -> dict:
    """Obuchowski-Rockette MRMC analysis of a long-format ratings table, as a JSON-ready dict.

    Parameters
    ----------
    df : DataFrame
        Long-format ratings (see :func:`load_ratings` for the columns and validation).
    reader, modality, case, truth, score : str
        Column names.
    covariance : {"jackknife", "delong"}
        AUC covariance estimator.

    Returns
    -------
    dict, ``json.dumps``-able::

        {"covariance": str,
         "modalities": {m: {"auc", "se", "df", "ci": [lo, hi], "readers": {reader: auc}}},
         "comparison": {"F", "ddf", "p",
                        "differences": [{"a", "b", "estimate" (= a - b), "se", "ci"}]} | None,
         "fixed_readers": {"chi2", "df" (int), "p"} | None,
         "fixed_cases": {"F", "p"} | None,
         "variance_components": {"var", "cov1", "cov2", "cov3", "ms_t", "ms_r", "ms_tr"}}

    ``modalities``/``comparison`` are the random-readers, random-cases analysis (Hillis df),
    95 % intervals, unclipped. ``comparison``, ``fixed_readers`` and ``fixed_cases`` are None
    for a single modality (or when the test's error term is exactly 0). A ``df``/``ddf`` of
    None means infinite degrees of freedom, i.e. normal quantiles: this is the case for every
    interval of a one-reader study, where readers are necessarily treated as fixed (and
    ``fixed_cases`` is None). Variance components undefined for the design (e.g. ``cov1``
    with one modality) are None.
    """
    return mrmc_analysis(df, reader=reader, modality=modality, case=case, truth=truth,
                         score=score, covariance=covariance)[0]


def mrmc_analysis(
    df: pd.DataFrame,
    reader: str = "reader",
    modality: str | None = "modality",
    case: str = "case",
    truth: str = "truth",
    score: str = "score",
    covariance: str = "jackknife",
) -> tuple[dict, list[str]]:
    """:func:`mrmc_report` and the analysis' notes: why a test is undefined (no error
    variance), when readers had to be treated as fixed, … — what a null or a zero-width
    interval in the report means."""
    data = load_ratings(df, reader=reader, modality=modality, case=case, truth=truth, score=score)
    result = or_mrmc(
        data.ratings,
        data.truth,
        covariance=covariance,
        modalities=data.modalities,
        readers=data.readers,
    )
    return result_to_dict(result), list(result.notes)


def reader_roc_curves(data: RatingsData, modality: str) -> dict[str, tuple]:
    """Empirical ROC curve of every reader in one modality, for :func:`plot_roc`.

    Returns
    -------
    dict reader -> (fpr, tpr, auc), in reader order.
    """
    if modality not in data.modalities:
        raise InputError(f"modality {modality!r} not found; modalities: {list(data.modalities)}")
    i = data.modalities.index(modality)
    out = {}
    for j, rd in enumerate(data.readers):
        fpr, tpr, _ = roc_curve_empirical(data.truth, data.ratings[i, j])
        out[rd] = (fpr, tpr, auroc(data.truth, data.ratings[i, j]))
    return out


# --------------------------------------------------------------------------------------------
# plain-text table
# --------------------------------------------------------------------------------------------


def _f(x, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def _df(x) -> str:
    return "inf" if x is None else f"{x:.2f}"


def _p(p: float) -> str:
    return "<0.0001" if p < 1e-4 else f"{p:.4g}"


def format_mrmc_table(result: dict) -> str:
    """Readable plain-text (ASCII) table of a :func:`mrmc_report` dict."""
    mods = result["modalities"]
    readers = list(next(iter(mods.values()))["readers"]) if mods else []
    one_reader = len(readers) == 1
    lines = [
        f"Obuchowski-Rockette MRMC analysis ({result['covariance']} covariance)",
        (
            "Readers fixed (only one reader), random cases; df 'inf' = normal quantiles"
            if one_reader
            else "Random readers and random cases, Hillis (2007) df"
        ),
        "",
        f"{'Modality':<14}{'AUC':>9}{'SE':>10}{'df':>9}   95% CI",
    ]
    for m, e in mods.items():
        lines.append(
            f"{m:<14}{e['auc']:>9.4f}{e['se']:>10.5f}{_df(e['df']):>9}   "
            f"[{e['ci'][0]:.4f}, {e['ci'][1]:.4f}]"
        )
    lines += ["", "Reader AUCs", f"{'Reader':<14}" + "".join(f"{m:>12}" for m in mods)]
    for rd in readers:
        lines.append(f"{rd:<14}" + "".join(f"{mods[m]['readers'][rd]:>12.4f}" for m in mods))

    cmp_ = result.get("comparison")
    if cmp_ is not None:
        df1 = len(mods) - 1
        lines += [
            "",
            f"Test of equal AUCs: F = {cmp_['F']:.3f}, df = ({df1}, {_df(cmp_['ddf'])}), "
            f"p = {_p(cmp_['p'])}",
            f"{'Difference':<24}{'Estimate':>10}{'SE':>10}   95% CI",
        ]
        for d in cmp_["differences"]:
            name = f"{d['a']} - {d['b']}"
            lines.append(
                f"{name:<24}{d['estimate']:>10.5f}{d['se']:>10.5f}   "
                f"[{d['ci'][0]:.5f}, {d['ci'][1]:.5f}]"
            )
    elif len(mods) > 1:
        lines += ["", "Test of equal AUCs: undefined (zero error variance)"]
    fr, fc = result.get("fixed_readers"), result.get("fixed_cases")
    if fr is not None or fc is not None:
        lines.append("")
    if fr is not None:
        lines.append(
            f"Fixed readers, random cases: X2 = {fr['chi2']:.4f}, df = {fr['df']}, "
            f"p = {_p(fr['p'])}"
        )
    if fc is not None:
        lines.append(f"Random readers, fixed cases: F = {fc['F']:.4f}, p = {_p(fc['p'])}")
    vc = result["variance_components"]
    lines += [
        "",
        "Variance components: "
        + ", ".join(
            f"{label} = {_f(vc[key], '.8f')}"
            for key, label in [
                ("var", "Var"),
                ("cov1", "Cov1"),
                ("cov2", "Cov2"),
                ("cov3", "Cov3"),
            ]
        ),
        "Mean squares: "
        + ", ".join(
            f"{label} = {_f(vc[key], '.8f')}"
            for key, label in [("ms_t", "MS(T)"), ("ms_r", "MS(R)"), ("ms_tr", "MS(TR)")]
        ),
    ]
    return "\n".join(lines)
