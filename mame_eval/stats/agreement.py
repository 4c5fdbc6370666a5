"""Agreement between readers: quadratic-weighted Cohen's kappa and Krippendorff's ordinal alpha."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from mame_eval.errors import InputError

__all__ = ["krippendorff_alpha_ordinal", "pairwise_kappa", "weighted_kappa"]


def _as_ratings(values, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.size == 0:
        raise InputError(f"{name} must be a non-empty 1-D sequence of ratings; got {arr.shape}")
    if pd.isna(arr).any():
        raise InputError(f"{name} has missing ratings; drop cases not rated by both readers")
    return arr


def weighted_kappa(a, b) -> float:
    """Quadratic-weighted Cohen's kappa between two readers' ordinal ratings.

    Parameters
    ----------
    a, b : array-like, shape (K,)
        Ordinal ratings (e.g. 1-5) of the same K cases, no missing values.

    Returns
    -------
    float in [-1, 1] (``sklearn.metrics.cohen_kappa_score(a, b, weights="quadratic")``).

    Raises
    ------
    InputError
        If the lengths differ, or both readers gave every case the same single rating
        (kappa is 0/0 then).
    """
    from sklearn.metrics import cohen_kappa_score

    x, y = _as_ratings(a, "a"), _as_ratings(b, "b")
    if x.shape != y.shape:
        raise InputError(f"a and b must rate the same cases; got {x.size} and {y.size} ratings")
    ux, uy = np.unique(x), np.unique(y)
    if ux.size == 1 and uy.size == 1 and ux[0] == uy[0]:
        raise InputError(
            f"weighted kappa is undefined: both readers rated every case {ux[0].item()!r}"
        )
    return float(cohen_kappa_score(x, y, weights="quadratic"))


def pairwise_kappa(df_wide: pd.DataFrame) -> pd.DataFrame:
    """Quadratic-weighted kappa for every pair of readers.

    Parameters
    ----------
    df_wide : DataFrame, shape (K cases, R readers)
        One column per reader (column name = reader label), one row per case; NaN = not rated.
        Each pair uses the cases both readers rated.

    Returns
    -------
    DataFrame with columns ``reader_a``, ``reader_b`` (str), ``kappa`` (float), ``n_cases``
    (int), one row per unordered pair in column order.
    """
    if not isinstance(df_wide, pd.DataFrame):
        raise InputError("pairwise_kappa expects a DataFrame with one column per reader")
    if df_wide.shape[1] < 2:
        raise InputError(
            f"pairwise_kappa needs at least 2 reader columns; got {list(map(str, df_wide))}"
        )
    rows = []
    for ca, cb in itertools.combinations(df_wide.columns, 2):
        both = df_wide[[ca, cb]].dropna()
        if both.empty:
            raise InputError(f"readers {ca!s} and {cb!s} have no case rated by both")
        try:
            k = weighted_kappa(both[ca].to_numpy(), both[cb].to_numpy())
        except InputError as exc:
            raise InputError(f"readers {ca!s} and {cb!s}: {exc}") from None
        rows.append({"reader_a": str(ca), "reader_b": str(cb), "kappa": k, "n_cases": len(both)})
    return pd.DataFrame(rows, columns=["reader_a", "reader_b", "kappa", "n_cases"])


def krippendorff_alpha_ordinal(matrix) -> float:
    """Krippendorff's alpha for ordinal ratings (``krippendorff`` package).

    Parameters
    ----------
    matrix : array-like, shape (R readers, K cases)
        Numeric ordinal ratings; NaN marks a missing rating.

    Returns
    -------
    float (1 = perfect agreement, 0 = chance agreement).

    Raises
    ------
    InputError
        If the matrix is not 2-D numeric, or fewer than two distinct ratings occur (alpha is
        undefined).
    """
    import krippendorff

    try:
        arr = np.asarray(matrix, dtype=float)
    except (TypeError, ValueError):
        raise InputError(
            "ratings matrix must be numeric (readers x cases, NaN = missing)"
        ) from None
    if arr.ndim != 2 or arr.shape[0] < 2:
        raise InputError(
            f"ratings matrix must be 2-D with at least 2 readers (rows); got shape {arr.shape}"
        )
    pairable = np.sum(~np.isnan(arr), axis=0) >= 2
    if not pairable.any():
        raise InputError("Krippendorff's alpha needs cases rated by at least 2 readers; none are")
    sub = arr[:, pairable]
    values = np.unique(sub[~np.isnan(sub)])
    if values.size < 2:
        raise InputError(
            "Krippendorff's alpha is undefined: every rating (of cases rated by 2 or more "
            f"readers) is {values[0]:g}"
        )
    alpha = float(krippendorff.alpha(reliability_data=sub, level_of_measurement="ordinal"))
    if not np.isfinite(alpha):  # pragma: no cover - guarded above
        raise InputError("Krippendorff's alpha is undefined for this ratings matrix")
    return alpha


