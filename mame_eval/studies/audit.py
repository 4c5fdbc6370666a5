"""Blinding audit: can simple pixel statistics tell real cases from synthetic ones?

File metadata is blinded by :mod:`mame_eval.studies.design`; pixels are not, and a reader (or a
curious script) may separate the classes by something as dull as the brightest pixel. Measured
in one study: the maximum was 239-244 in every real case and 255 in every synthetic one, an
AUROC of 1.0 without looking at anatomy. ``study create`` therefore measures, on the blinded
case files and before any reader sees them:

* per case (:func:`case_statistics`): max, min, mean, std, fraction of pure black (0) and pure
  white (255) pixels, the Shannon entropy of the 256-bin histogram (bits), the fraction of
  spectral power above a quarter of the sampling frequency (``hf_power``), Immerkaer's noise
  sigma (``noise_sigma``), and from the source image its native width, height and the
  resampling factor to the common size;
* per statistic (:func:`audit_blinding`): the AUROC separating real (positive) from synthetic
  with a 95 % DeLong interval, and a cross-validated logistic regression on all of them;
* a statistic *leaks* when its AUROC is at least 0.7 either way (>= 0.7 or <= 0.3) and the
  two-sided Mann-Whitney test of AUROC = 0.5 (exact for small samples without ties) rejects at
  a family-wise 5 % level (Bonferroni over the statistics and the classifier: with a dozen
  tests at 5 % each, a study with no trace would still warn in one of five cases). The test
  and not the interval decides because at complete separation the DeLong standard error is 0
  and the interval [1, 1] would call 4 + 4 cases separated by chance (p = 2/70) a leak. The
  reported ``ci_lo``/``ci_hi`` are DeLong 95 % intervals (zero width at complete separation),
  ``p_value`` the test's and ``p_adjusted`` the Bonferroni-adjusted one.

Nothing here reads the answer key: ``truth`` comes from the caller (``create_study``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mame_eval.errors import StudyError

__all__ = [
    "AUDIT_CSV",
    "AuditResult",
    "LEAK_AUROC",
    "STATISTICS",
    "audit_blinding",
    "audit_warning",
    "case_statistics",
    "read_audit",
]

AUDIT_CSV = "blinding_audit.csv"
AUDIT_FIGURE = "blinding_audit"
#: an AUROC this far from 0.5 (>= 0.7 or <= 0.3) with an interval excluding 0.5 is a leak
LEAK_AUROC = 0.7
CLASSIFIER = "all statistics (cross-validated logistic regression)"

#: name -> what it measures (the order of the table and the figure)
STATISTICS: dict[str, str] = {
    "max": "brightest pixel value (0-255)",
    "min": "darkest pixel value (0-255)",
    "mean": "mean pixel value",
    "std": "standard deviation of the pixel values",
    "frac_black": "fraction of pixels equal to 0",
    "frac_white": "fraction of pixels equal to 255",
    "entropy_bits": "Shannon entropy of the 256-bin histogram (bits)",
    "hf_power": "fraction of spectral power above 1/4 cycle per pixel",
    "noise_sigma": "noise standard deviation (Immerkaer 1996)",
    "native_width": "width of the source image (pixels)",
    "native_height": "height of the source image (pixels)",
    "resample_factor": "common size / native size (1 = not resampled)",
}


def case_statistics(pixels: np.ndarray) -> dict[str, float]:
    """Pixel statistics of one blinded case.

    Parameters
    ----------
    pixels : ndarray, shape (H, W), uint8
        The case as written to ``cases/``.

    Returns
    -------
    dict with the pixel keys of :data:`STATISTICS` (not the native-size ones).
    """
    a = np.asarray(pixels)
    if a.ndim != 2 or a.dtype != np.uint8 or min(a.shape) < 3:
        raise StudyError(f"case statistics need a 2-D uint8 image of at least 3x3; got "
                         f"{a.dtype} {a.shape}")
    x = a.astype(np.float64)
    hist = np.bincount(a.ravel(), minlength=256).astype(np.float64)
    p = hist[hist > 0] / a.size
    # spectral power above a quarter of the sampling frequency (radial), DC removed
    spec = np.abs(np.fft.fft2(x - x.mean())) ** 2
    fy = np.fft.fftfreq(a.shape[0])[:, None]
    fx = np.fft.fftfreq(a.shape[1])[None, :]
    total = spec.sum()
    hf = float(spec[np.hypot(fy, fx) > 0.25].sum() / total) if total > 0 else 0.0
    # Immerkaer (1996): sigma = sqrt(pi/2) / (6 (W-2)(H-2)) * sum |I * N|
    lap = (x[:-2, :-2] - 2 * x[:-2, 1:-1] + x[:-2, 2:]
           - 2 * x[1:-1, :-2] + 4 * x[1:-1, 1:-1] - 2 * x[1:-1, 2:]
           + x[2:, :-2] - 2 * x[2:, 1:-1] + x[2:, 2:])
    h, w = a.shape
    noise = math.sqrt(math.pi / 2) * np.abs(lap).sum() / (6 * (w - 2) * (h - 2))
    return {
        "max": float(a.max()), "min": float(a.min()), "mean": float(x.mean()),
        "std": float(x.std()), "frac_black": float((a == 0).mean()),
        "frac_white": float((a == 255).mean()), "entropy_bits": float(-(p * np.log2(p)).sum()),
        "hf_power": hf, "noise_sigma": float(noise),
    }


@dataclass
class AuditResult:
    """The audit table (one row per statistic and one for the classifier) and its verdict."""

    table: pd.DataFrame
    n_real: int
    n_synthetic: int
    leaking: list[str] = field(default_factory=list)

    @property
    def leaks(self) -> bool:
        return bool(self.leaking)


def _auc_ci(truth: np.ndarray, score: np.ndarray, level: float) -> tuple[float, float, float,
                                                                          float]:
    from mame_eval.stats.roc import delong_ci

    auc, se, (lo, hi) = delong_ci(truth, score, level)
    return auc, se, lo, hi


def _cross_validated_scores(features: np.ndarray, truth: np.ndarray, seed: int) -> np.ndarray:
    """Out-of-fold P(real) of a standardised logistic regression (stratified k-fold)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    keep = np.nanstd(features, axis=0) > 0
    if not keep.any():
        return np.full(truth.shape, 0.5)
    k = int(min(5, np.bincount(truth).min()))
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    folds = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return cross_val_predict(model, features[:, keep], truth, cv=folds,
                             method="predict_proba")[:, 1]


def audit_blinding(stats: pd.DataFrame, truth, *, level: float = 0.95,
                   seed: int = 0) -> AuditResult:
    """AUROC of every statistic (and of a classifier on all) for real vs synthetic.

    Parameters
    ----------
    stats : DataFrame, one row per case, columns a subset of :data:`STATISTICS`.
    truth : array-like, shape (n_cases,), 1 = real, 0 = synthetic.
    level : confidence level of the reported intervals.
    seed : seed of the cross-validation folds.

    Returns
    -------
    AuditResult; ``table`` columns: statistic, description, auroc, ci_lo, ci_hi, se,
    p_value, p_adjusted, separation (``max(auroc, 1 - auroc)``), higher_in
    (``real``/``synthetic``/``neither``), mean_real, mean_synthetic, n_real, n_synthetic,
    leaks.
    """
    from scipy import stats as sps

    y = np.asarray(truth).astype(int)
    n1, n0 = int(y.sum()), int(y.size - y.sum())
    if n1 < 2 or n0 < 2:
        raise StudyError("the blinding audit needs at least 2 real and 2 synthetic cases")
    names = [s for s in STATISTICS if s in stats.columns]
    m = len(names) + 1
    alpha = 1 - level
    rows = []

    def row(name: str, desc: str, score: np.ndarray, mean1, mean0) -> dict:
        auc, se, lo, hi = _auc_ci(y, score, level)
        if np.ptp(score) == 0:
            p = 1.0
        else:
            p = float(sps.mannwhitneyu(score[y == 1], score[y == 0],
                                       alternative="two-sided").pvalue)
        p_adj = min(1.0, p * m)
        separation = max(auc, 1 - auc)
        leaks = separation >= LEAK_AUROC and p_adj < alpha
        higher = "neither" if abs(auc - 0.5) < 1e-12 else ("real" if auc > 0.5 else "synthetic")
        return {"statistic": name, "description": desc, "auroc": auc, "ci_lo": lo, "ci_hi": hi,
                "se": se, "p_value": p, "p_adjusted": p_adj, "separation": separation,
                "higher_in": higher, "mean_real": mean1, "mean_synthetic": mean0,
                "n_real": n1, "n_synthetic": n0, "leaks": bool(leaks)}

    for name in names:
        v = stats[name].to_numpy(dtype=float)
        rows.append(row(name, STATISTICS[name], v, float(v[y == 1].mean()),
                        float(v[y == 0].mean())))
    features = stats[names].to_numpy(dtype=float)
    oof = _cross_validated_scores(features, y, seed)
    rows.append(row("classifier", CLASSIFIER, oof, float(oof[y == 1].mean()),
                    float(oof[y == 0].mean())))
    table = pd.DataFrame(rows)
    return AuditResult(table=table, n_real=n1, n_synthetic=n0,
                       leaking=[r["statistic"] for r in rows if r["leaks"]])


def audit_warning(result: AuditResult) -> str | None:
    """One line naming the leaking statistics, or None when nothing separates the classes."""
    if not result.leaks:
        return None
    t = result.table.set_index("statistic")
    parts = [f"{s} (AUROC {t.loc[s, 'auroc']:.2f} [{t.loc[s, 'ci_lo']:.2f}, "
             f"{t.loc[s, 'ci_hi']:.2f}], higher in {t.loc[s, 'higher_in']})"
             for s in result.leaking]
    return ("BLINDING AUDIT: simple pixel statistics tell real from synthetic cases without "
            f"looking at anatomy: {'; '.join(parts)}. Readers may rate these traces, not "
            f"realism; see {AUDIT_CSV} and make both sources alike (size, intensity range, "
            "background) before the study starts")


def write_audit(result: AuditResult, folder: Path) -> list[Path]:
    """``blinding_audit.csv`` and ``blinding_audit.png/.pdf`` in ``folder`` (atomic writes)."""
    from mame_eval.io import write_text
    from mame_eval.reports.blinding import plot_blinding_audit

    folder = Path(folder)
    csv = folder / AUDIT_CSV
    write_text(csv, result.table.to_csv(index=False, float_format="%.6g"))
    figs = plot_blinding_audit(result.table, folder / AUDIT_FIGURE,
                               n_real=result.n_real, n_synthetic=result.n_synthetic)
    return [csv, *figs]


def read_audit(folder: Path) -> AuditResult | None:
    """The audit written by ``study create`` (None for a study made before audits existed)."""
    path = Path(folder) / AUDIT_CSV
    if not path.is_file():
        return None
    try:
        table = pd.read_csv(path)
        leaking = table.loc[table["leaks"].astype(bool), "statistic"].tolist()
        n1, n0 = int(table["n_real"].iloc[0]), int(table["n_synthetic"].iloc[0])
    except (KeyError, IndexError, ValueError, pd.errors.ParserError) as exc:
        raise StudyError(f"{path}: not a blinding audit table ({exc})") from None
    return AuditResult(table=table, n_real=n1, n_synthetic=n0, leaking=leaking)
