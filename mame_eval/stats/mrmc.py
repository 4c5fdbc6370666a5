"""Obuchowski-Rockette (OR) multi-reader multi-case ROC analysis with Hillis (2007) df.

Model and conventions
---------------------
``ratings`` has shape ``(t, r, K)``: t modalities (treatments) x r readers x K cases, every
reader rating every case in every modality (fully crossed design). ``theta[i, j]`` is the
empirical AUROC of reader j in modality i (ties 1/2).

The AUC error covariance between (modality, reader) pairs is estimated across cases either by
the leave-one-case-out jackknife (``covariance="jackknife"``, as in RJafroc / MRMCaov) or by
the DeLong (1988) structural-component method (``covariance="delong"``), and averaged into

* ``Var``  = mean variance of one reader-modality AUC,
* ``Cov1`` = mean covariance, same reader, different modality,
* ``Cov2`` = mean covariance, different reader, same modality,
* ``Cov3`` = mean covariance, different reader, different modality,

and combined with the ANOVA mean squares of ``theta`` (MS(T), MS(R), MS(TR)). Three analyses
are reported (Hillis 2007; Hillis, Berbaum & Metz 2008):

* random readers and random cases (RRRC) --
  ``F = MS(T) / [MS(TR) + r max(Cov2 - Cov3, 0)]`` with Hillis denominator df
  ``ddf = [MS(TR) + r max(Cov2 - Cov3, 0)]^2 / [MS(TR)^2 / ((t-1)(r-1))]``; per modality
  ``SE^2 = [MS(R)_i + r max(Cov2_i, 0)] / r`` with
  ``df_i = [MS(R)_i + r max(Cov2_i, 0)]^2 / [MS(R)_i^2 / (r-1)]``;
* fixed readers, random cases (FRRC) --
  ``X^2 = (t-1) MS(T) / [Var - Cov1 + (r-1) max(Cov2 - Cov3, 0)]`` on t-1 df, difference
  ``SE^2 = (2/r) [Var - Cov1 + (r-1) max(Cov2 - Cov3, 0)]`` with normal quantiles; per
  modality ``SE^2 = [Var_i + (r-1) max(Cov2_i, 0)] / r`` (``Var_i``, ``Cov2_i`` from modality
  i's own covariances), normal quantiles;
* random readers, fixed cases (RRFC) -- ``F = MS(T) / MS(TR)`` on (t-1, (t-1)(r-1)) df.

Confidence intervals are Wald intervals with t (or normal) quantiles and are *not* clipped to
[0, 1] (matching the published software). A df of ``math.inf`` means normal quantiles (it arises
when a mean square is exactly 0). With a single reader the random-reader analysis is undefined;
``result.random`` then holds the fixed-reader analysis and ``result.inference`` says so.
A test whose error term is exactly 0 (e.g. all scores constant) is reported as ``None`` with an
explanation in ``result.notes``. Nothing is ever silently NaN.

References that agree
---------------------
The clamps ``max(Cov2 - Cov3, 0)`` (RRRC and FRRC error terms) and ``max(Cov2_i, 0)``
(single-modality SEs, RRRC and FRRC) follow Hillis (2007), Hillis, Berbaum & Metz (2008) and
their two reference programs, which agree with this module to their printed precision on both
standard data sets (``tests/test_mrmc_vandyke.py``, ``tests/test_mrmc_franken.py``):

* OR-DBM MRMC 2.51 (Hillis et al., University of Iowa, build 20181028), printed reports of the
  Van Dyke (1993) and Franken (1992) data; the Franken report is RJafroc's
  ``tests/testthat/goodValues361/Iowa/Franken1.txt``;
* RJafroc ``StSignificanceTesting(dataset, FOM = "Wilcoxon", method = "OR")`` (output for
  Franken printed to 8 digits in the RJafroc book's quick-start chapter; ``R/StORAnalysis.R``: FRRC
  ``msDen = Var - Cov1 + (J-1) max(Cov2 - Cov3, 0)``, per-modality
  ``sqrt((varEachTrt + (J-1) max(cov2EachTrt, 0)) / J)``).

On Franken (2 modalities x 4 readers x 100 cases) Cov2 = 0.00048364 < Cov3 = 0.00051251, so
the clamp matters: the unclamped FRRC X^2 would be 0.364 (p 0.546) instead of the published
0.32101 (p 0.5710). With three or more modalities every statistic above is the same formula
(MS(T) on t-1 df, all t(t-1)/2 pairwise differences sharing one SE), as in both programs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from mame_eval.errors import InputError
from mame_eval.stats.roc import (
    _as_scores,
    _as_truth,
    _check_classes,
    _check_level,
    _ensure_labels,
    auc_covariance,
    normal_or_t_quantile,
)

__all__ = [
    "ChiSquareTest",
    "Difference",
    "FTest",
    "ModalityEstimate",
    "ORAnalysis",
    "ORResult",
    "VarianceComponents",
    "or_mrmc",
]

#: variance-scale quantities (AUC^2 units) at or below this are treated as exactly zero
_ZERO = 1e-14


@dataclass(frozen=True)
class ModalityEstimate:
    """Reader-averaged AUC of one modality with its SE, df (inf = normal) and CI."""

    auc: float
    se: float
    df: float
    ci: tuple[float, float]


@dataclass(frozen=True)
class Difference:
    """Difference of reader-averaged AUCs ``a - b`` with SE, df (inf = normal), CI, p-value."""

    a: str
    b: str
    estimate: float
    se: float
    df: float
    ci: tuple[float, float]
    p: float


@dataclass(frozen=True)
class FTest:
    """Global F test of equal modality AUCs; ``df2 = inf`` means F(df1, inf) = X^2/df1."""

    F: float
    df1: float
    df2: float
    p: float


@dataclass(frozen=True)
class ChiSquareTest:
    """Global chi-square test of equal modality AUCs (fixed readers)."""

    chi2: float
    df: int
    p: float


@dataclass(frozen=True)
class ORAnalysis:
    """One of the three OR analyses (random/fixed readers x random/fixed cases)."""

    name: str
    modalities: dict[str, ModalityEstimate]
    test: FTest | ChiSquareTest | None  # None for one modality or an undefined test
    differences: tuple[Difference, ...]  # all pairs a < b in modality order; empty for t = 1


@dataclass(frozen=True)
class VarianceComponents:
    """Averaged OR covariances and ANOVA mean squares (None where undefined for t or r = 1)."""

    var: float
    cov1: float | None
    cov2: float | None
    cov3: float | None
    ms_t: float | None
    ms_r: float | None
    ms_tr: float | None


@dataclass(frozen=True, eq=False)
class ORResult:
    """Result of :func:`or_mrmc`.

    Attributes
    ----------
    reader_auc : ndarray, shape (t, r)
        Empirical AUC of each reader in each modality.
    reader_se : ndarray, shape (t, r)
        Their standard errors from the chosen covariance method.
    auc_cov : ndarray, shape (t, r, t, r)
        Full AUC covariance matrix across cases.
    per_modality : dict modality -> VarianceComponents
        Per-modality ``var``, ``cov2`` and ``ms_r`` (other fields None), used by the
        single-modality intervals.
    random : ORAnalysis
        Random readers and random cases (the primary analysis; fixed readers if r = 1).
    fixed_readers, fixed_cases : ORAnalysis or None
        Secondary analyses (fixed_cases is None when r = 1).
    inference : str
        Which analysis ``random`` actually is.
    notes : tuple of str
        Explanations for anything reported as None.
    """

    covariance: str
    level: float
    modalities: tuple[str, ...]
    readers: tuple[str, ...]
    n_positive: int
    n_negative: int
    reader_auc: np.ndarray
    reader_se: np.ndarray
    auc_cov: np.ndarray
    modality_auc: np.ndarray
    variance_components: VarianceComponents
    per_modality: dict[str, VarianceComponents]
    random: ORAnalysis
    fixed_readers: ORAnalysis
    fixed_cases: ORAnalysis | None
    inference: str
    notes: tuple[str, ...]


def _f_sf(f: float, df1: float, df2: float) -> float:
    if math.isinf(df2):
        return float(stats.chi2.sf(f * df1, df1))
    return float(stats.f.sf(f, df1, df2))


def _t_p(estimate: float, se: float, df: float) -> float:
    """Two-sided p-value of estimate/se under t(df) (normal when df = inf)."""
    if se <= 0:
        return 1.0 if estimate == 0 else 0.0
    z = abs(estimate) / se
    return float(2 * (stats.norm.sf(z) if math.isinf(df) else stats.t.sf(z, df)))


def _interval(est: float, se: float, df: float, level: float) -> tuple[float, float]:
    q = normal_or_t_quantile(0.5 + level / 2, df)
    return (est - q * se, est + q * se)


def _satterthwaite(num: float, ms: float, dof: float) -> float:
    """``num^2 / (ms^2 / dof)``; inf when ms is 0 (no mean-square uncertainty)."""
    if ms <= _ZERO:
        return math.inf
    return num**2 / (ms**2 / dof)


def _estimate(auc: float, var: float, df: float, level: float) -> ModalityEstimate:
    se = math.sqrt(var) if var > _ZERO else 0.0
    if se == 0.0:
        df = math.inf
    return ModalityEstimate(auc=auc, se=se, df=df, ci=_interval(auc, se, df, level))


def _differences(labels, means, var_diff, df, level) -> tuple[Difference, ...]:
    se = math.sqrt(var_diff) if var_diff > _ZERO else 0.0
    if se == 0.0:
        df = math.inf
    out = []
    for i in range(len(labels)):
        for k in range(i + 1, len(labels)):
            est = float(means[i] - means[k])
            out.append(
                Difference(
                    a=labels[i],
                    b=labels[k],
                    estimate=est,
                    se=se,
                    df=df,
                    ci=_interval(est, se, df, level),
                    p=_t_p(est, se, df),
                )
            )
    return tuple(out)


def _mean_where(c: np.ndarray, mask: np.ndarray) -> float | None:
    return float(c[mask].mean()) if mask.any() else None


def or_mrmc(
    ratings,
    truth,
    covariance: str = "jackknife",
    *,
    level: float = 0.95,
    modalities=None,
    readers=None,
) -> ORResult:
    """Obuchowski-Rockette MRMC analysis of empirical AUCs (see the module docstring).

    Parameters
    ----------
    ratings : array-like, shape (t, r, K)
        Score of each reader for each case in each modality; higher = more likely positive.
        Fully crossed: no missing values.
    truth : array-like, shape (K,)
        0/1 case labels (1 = positive); at least 2 cases of each class.
    covariance : {"jackknife", "delong"}
        How the AUC covariance across cases is estimated.
    level : float
        Two-sided confidence level of all intervals.
    modalities, readers : sequence of labels, optional
        Labels (converted to str) for the t modalities and r readers; default "1", "2", ...

    Returns
    -------
    ORResult
    """
    level = _check_level(level)
    if covariance not in ("jackknife", "delong"):
        raise InputError(f"covariance must be 'jackknife' or 'delong'; got {covariance!r}")
    y = _as_truth(truth)
    x = _as_scores(ratings, y.size, name="ratings")
    if x.ndim != 3:
        raise InputError(
            f"ratings must have shape (modalities, readers, cases); got shape {x.shape}"
        )
    t, r, k = x.shape
    if t < 1 or r < 1:
        raise InputError(f"ratings need at least one modality and one reader; got shape {x.shape}")
    _check_classes(y, min_per_class=2, purpose="the MRMC analysis (AUC variance)")
    mod_labels = _ensure_labels(modalities, t, "modality")
    rdr_labels = _ensure_labels(readers, r, "reader")

    auc, cov = auc_covariance(y, x.reshape(t * r, k), covariance)
    theta = auc.reshape(t, r)
    c = cov.reshape(t, r, t, r)
    same_i = np.eye(t, dtype=bool)[:, None, :, None]
    same_j = np.eye(r, dtype=bool)[None, :, None, :]
    var = _mean_where(c, same_i & same_j)
    cov1 = _mean_where(c, ~same_i & same_j)
    cov2 = _mean_where(c, same_i & ~same_j)
    cov3 = _mean_where(c, ~same_i & ~same_j)

    mean_i = theta.mean(axis=1)
    mean_j = theta.mean(axis=0)
    grand = float(theta.mean())
    ms_t = float(r * np.sum((mean_i - grand) ** 2) / (t - 1)) if t > 1 else None
    ms_r = float(t * np.sum((mean_j - grand) ** 2) / (r - 1)) if r > 1 else None
    resid = theta - mean_i[:, None] - mean_j[None, :] + grand
    ms_tr = float(np.sum(resid**2) / ((t - 1) * (r - 1))) if t > 1 and r > 1 else None
    components = VarianceComponents(var, cov1, cov2, cov3, ms_t, ms_r, ms_tr)

    off = ~np.eye(r, dtype=bool)
    per_mod: dict[str, VarianceComponents] = {}
    for i, m in enumerate(mod_labels):
        ci_ = c[i, :, i, :]
        per_mod[m] = VarianceComponents(
            var=float(np.diag(ci_).mean()),
            cov1=None,
            cov2=float(ci_[off].mean()) if r > 1 else None,
            cov3=None,
            ms_t=None,
            ms_r=float(np.sum((theta[i] - mean_i[i]) ** 2) / (r - 1)) if r > 1 else None,
            ms_tr=None,
        )

    notes: list[str] = []

    # ---- fixed readers, random cases (defined for any r) --------------------------------
    fr_mods = {
        m: _estimate(
            float(mean_i[i]),
            (per_mod[m].var + (r - 1) * max(per_mod[m].cov2 or 0.0, 0.0)) / r,
            math.inf,
            level,
        )
        for i, m in enumerate(mod_labels)
    }
    fr_test = None
    fr_diffs: tuple[Difference, ...] = ()
    if t > 1:
        # the clamp max(Cov2 - Cov3, 0) as in OR-DBM MRMC 2.51 and RJafroc (module docstring)
        fr_err = var - cov1 + ((r - 1) * max(cov2 - cov3, 0.0) if r > 1 else 0.0)
        fr_diffs = _differences(mod_labels, mean_i, 2 * fr_err / r, math.inf, level)
        if fr_err > _ZERO:
            chi2 = (t - 1) * ms_t / fr_err
            fr_test = ChiSquareTest(chi2=chi2, df=t - 1, p=float(stats.chi2.sf(chi2, t - 1)))
        else:
            notes.append(
                "fixed-reader test undefined: Var - Cov1 + (r-1) max(Cov2 - Cov3, 0) is 0 "
                "(no case-to-case variability in the AUC differences)"
            )
    fixed_readers = ORAnalysis("fixed readers, random cases", fr_mods, fr_test, fr_diffs)

    if r == 1:
        inference = (
            "only one reader: reader variability cannot be estimated, so readers are treated "
            f"as fixed (random cases only; {covariance} covariance, normal quantiles)"
        )
        rr_test = None
        if fr_test is not None:
            rr_test = FTest(F=fr_test.chi2 / (t - 1), df1=t - 1, df2=math.inf, p=fr_test.p)
        random = ORAnalysis(inference, fr_mods, rr_test, fr_diffs)
        fixed_cases = None
    else:
        inference = "random readers and random cases (Obuchowski-Rockette, Hillis 2007 df)"
        random = _random_readers_random_cases(
            inference, mod_labels, mean_i, per_mod, components, r, level, notes
        )
        fixed_cases = _random_readers_fixed_cases(
            mod_labels, mean_i, per_mod, components, r, level, notes
        )

    for m, estimate in random.modalities.items():
        if not estimate.se > _ZERO:
            notes.append(
                f"modality {m}: the reader-averaged AUC {estimate.auc:.4f} has zero standard "
                "error (no reader or case variability, e.g. all scores equal), so its "
                "interval is a single point"
            )

    return ORResult(
        covariance=covariance,
        level=level,
        modalities=mod_labels,
        readers=rdr_labels,
        n_positive=int(y.sum()),
        n_negative=int(y.size - y.sum()),
        reader_auc=theta,
        reader_se=np.sqrt(np.clip(np.diag(cov), 0.0, None)).reshape(t, r),
        auc_cov=c,
        modality_auc=mean_i,
        variance_components=components,
        per_modality=per_mod,
        random=random,
        fixed_readers=fixed_readers,
        fixed_cases=fixed_cases,
        inference=inference,
        notes=tuple(notes),
    )


def _random_readers_random_cases(name, mod_labels, mean_i, per_mod, vc, r, level, notes):
    """RRRC analysis (r >= 2): Hillis (2007) df for the test and per-modality intervals."""
    t = len(mod_labels)
    mods = {}
    for i, m in enumerate(mod_labels):
        pm = per_mod[m]
        num = pm.ms_r + r * max(pm.cov2, 0.0)
        mods[m] = _estimate(float(mean_i[i]), num / r, _satterthwaite(num, pm.ms_r, r - 1), level)
    test = None
    diffs: tuple[Difference, ...] = ()
    if t > 1:
        den = vc.ms_tr + r * max(vc.cov2 - vc.cov3, 0.0)
        ddf = _satterthwaite(den, vc.ms_tr, (t - 1) * (r - 1))
        diffs = _differences(mod_labels, mean_i, 2 * den / r, ddf, level)
        if den > _ZERO:
            f = vc.ms_t / den
            test = FTest(F=f, df1=t - 1, df2=ddf, p=_f_sf(f, t - 1, ddf))
        else:
            notes.append(
                "random-reader test undefined: MS(TR) + r max(Cov2 - Cov3, 0) is 0 "
                "(AUC differences identical for every reader and without case variability)"
            )
    return ORAnalysis(name, mods, test, diffs)


def _random_readers_fixed_cases(mod_labels, mean_i, per_mod, vc, r, level, notes):
    """RRFC analysis (r >= 2): conventional reader-by-modality ANOVA on the AUCs."""
    t = len(mod_labels)
    mods = {
        m: _estimate(float(mean_i[i]), per_mod[m].ms_r / r, float(r - 1), level)
        for i, m in enumerate(mod_labels)
    }
    test = None
    diffs: tuple[Difference, ...] = ()
    if t > 1:
        df2 = float((t - 1) * (r - 1))
        diffs = _differences(mod_labels, mean_i, 2 * vc.ms_tr / r, df2, level)
        if vc.ms_tr > _ZERO:
            f = vc.ms_t / vc.ms_tr
            test = FTest(F=f, df1=t - 1, df2=df2, p=_f_sf(f, t - 1, df2))
        else:
            notes.append(
                "fixed-case test undefined: MS(TR) is 0 (every reader shows the same "
                "modality difference)"
            )
    return ORAnalysis("random readers, fixed cases", mods, test, diffs)
