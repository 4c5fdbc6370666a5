"""The figure of ``mame-eval augment``: does adding synthetic lesions help a CAD classifier?

Three panels, one shared legend below them (never over the data):

* **a** — test AUROC against the synthetic ratio at the largest real fraction: each seed a point,
  the mean over seeds a line, the band the mean over seeds of the per-model DeLong CI; the
  synthetic-only and classic-augmentation controls as horizontal reference lines with their
  bands;
* **b** — the learning curve: AUROC against the real fraction (log axis), one series per arm
  (seeds as points, the mean a line), the baseline's mean DeLong CI as a band (the arms' own
  uncertainty is panel c's: five overlapping bands would hide the lines);
* **c** — the difference to the baseline at each real fraction (mean over seeds of the paired
  differences): thick bars the DeLong CI (test cases), thin capped bars the Student-t CI over
  seeds (training runs).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from mame_eval.reports.style import PALETTE, new_figure, style

__all__ = ["augment_figure", "series_name"]

_ORDER = ("baseline", "synthetic", "synthetic-only", "classic")


def series_name(arm: str, ratio: float) -> str:
    """``baseline``, ``synthetic ×0.5``, ``synthetic-only``, ``classic``."""
    return f"synthetic ×{ratio:g}" if arm == "synthetic" else arm


def _series(table: pd.DataFrame) -> list[tuple[str, float]]:
    combos = {(a, float(r)) for a, r in zip(table["arm"], table["synthetic_ratio"],
                                            strict=True)}
    return sorted(combos, key=lambda c: (_ORDER.index(c[0]) if c[0] in _ORDER else 9, c[1]))


def _colours(series: list[tuple[str, float]]) -> dict[tuple[str, float], dict]:
    """Baseline black; synthetic ratios blue → green along the palette; controls last."""
    synthetic = [PALETTE[0], PALETTE[5], PALETTE[2], PALETTE[4], PALETTE[6]]
    markers = {"baseline": "o", "synthetic-only": "D", "classic": "s"}
    out, k = {}, 0
    for arm, ratio in series:
        if arm == "baseline":
            colour = PALETTE[7]
        elif arm == "synthetic-only":
            colour = PALETTE[3]
        elif arm == "classic":
            colour = PALETTE[1]
        else:
            colour = synthetic[k % len(synthetic)]
            k += 1
        out[arm, ratio] = {"color": colour, "marker": markers.get(arm, "^")}
    return out


def _per_x(table: pd.DataFrame, x: str) -> pd.DataFrame:
    return table.groupby(x, sort=True).agg(auroc=("auroc", "mean"), lo=("ci_low", "mean"),
                                           hi=("ci_high", "mean")).reset_index()


def _jitter(n: int, width: float) -> np.ndarray:
    return np.zeros(n) if n < 2 else np.linspace(-width, width, n)


def augment_figure(table: pd.DataFrame, comparison: pd.DataFrame,
                   level: float = 0.95) -> Figure:
    """Build the figure from ``augment.csv`` and ``comparison.csv`` (as DataFrames).

    Args:
        table: one row per unit (arm, synthetic_ratio, real_fraction, seed, auroc, ci_low,
            ci_high).
        comparison: one row per arm × ratio × fraction (difference, delong_ci_low/high,
            seed_ci_low/high).
        level: the confidence level of the CIs (for the labels).
    Returns:
        A :class:`matplotlib.figure.Figure` (nothing is saved or shown).
    """
    fig, (ax_a, ax_b, ax_c) = new_figure("page", height=2.75, ncols=3)
    pct = f"{100 * level:g} %"
    series = _series(table)
    look = _colours(series)
    fractions = sorted(table["real_fraction"].unique())
    f_max = fractions[-1]
    n_seeds = table.groupby(["arm", "synthetic_ratio", "real_fraction"])["seed"].nunique()
    with style():
        # a: AUROC vs synthetic ratio at the largest real fraction
        at = table[table["real_fraction"] == f_max]
        ratio_rows = at[at["arm"].isin(["baseline", "synthetic"])]
        per = _per_x(ratio_rows, "synthetic_ratio")
        ax_a.fill_between(per["synthetic_ratio"], per["lo"], per["hi"], color=PALETTE[0],
                          alpha=0.15, lw=0)
        ax_a.plot(per["synthetic_ratio"], per["auroc"], color=PALETTE[0], lw=1.3)
        span = max(float(per["synthetic_ratio"].max()), 1.0)
        for (arm, ratio), rows in ratio_rows.groupby(["arm", "synthetic_ratio"]):
            st = look[arm, float(ratio)]
            xs = float(ratio) + _jitter(len(rows), 0.015 * span)
            ax_a.scatter(xs, rows["auroc"], s=12, color=st["color"], marker=st["marker"],
                         zorder=3, edgecolor="white", linewidth=0.4)
        for arm in ("synthetic-only", "classic"):
            rows = at[at["arm"] == arm]
            if len(rows):
                st = look[arm, float(rows["synthetic_ratio"].iloc[0])]
                ax_a.axhspan(rows["ci_low"].mean(), rows["ci_high"].mean(),
                             color=st["color"], alpha=0.10, lw=0)
                ax_a.axhline(rows["auroc"].mean(), color=st["color"], lw=1.0, ls="--")
        ax_a.set_xlabel(f"synthetic lesions per real lesion\n(real fraction {f_max:g})")
        ax_a.set_ylabel("test AUROC")
        ax_a.set_title("a  synthetic lesions added", loc="left")

        # b: learning curve
        for k, (arm, ratio) in enumerate(series):
            st = look[arm, ratio]
            rows = table[(table["arm"] == arm) & (table["synthetic_ratio"] == ratio)]
            per = _per_x(rows, "real_fraction")
            dodge = 2 ** ((k - (len(series) - 1) / 2) * 0.025)
            if arm == "baseline":  # the reference band; the arms' CIs are panel c's
                ax_b.fill_between(per["real_fraction"], per["lo"], per["hi"],
                                  color=st["color"], alpha=0.12, lw=0)
            ax_b.plot(per["real_fraction"] * dodge, per["auroc"], color=st["color"],
                      marker=st["marker"], markersize=3.5, lw=1.1,
                      label=series_name(arm, ratio))
            ax_b.scatter(rows["real_fraction"] * dodge, rows["auroc"], s=6,
                         color=st["color"], alpha=0.55, lw=0, zorder=3)
        ax_b.set_xscale("log", base=2)
        ax_b.set_xticks(fractions, [f"{f:g}" for f in fractions])
        ax_b.minorticks_off()
        ax_b.set_xlabel("real fraction of the lesion pool")
        ax_b.set_ylabel("test AUROC")
        ax_b.set_title("b  learning curve", loc="left")

        # c: difference to the baseline
        others = [s for s in series if s[0] != "baseline"]
        ax_c.axhline(0.0, color="0.35", lw=0.8)
        for k, (arm, ratio) in enumerate(others):
            st = look[arm, ratio]
            rows = comparison[(comparison["arm"] == arm)
                              & (comparison["synthetic_ratio"] == ratio)]
            if not len(rows):
                continue
            dodge = 2 ** ((k - (len(others) - 1) / 2) * 0.06)
            x = rows["real_fraction"].to_numpy(float) * dodge
            y = rows["difference"].to_numpy(float)
            d_err = [y - rows["delong_ci_low"].to_numpy(float),
                     rows["delong_ci_high"].to_numpy(float) - y]
            ax_c.errorbar(x, y, yerr=d_err, fmt="none", ecolor=st["color"], elinewidth=2.2,
                          alpha=0.55)
            seed_lo = pd.to_numeric(rows["seed_ci_low"], errors="coerce").to_numpy(float)
            seed_hi = pd.to_numeric(rows["seed_ci_high"], errors="coerce").to_numpy(float)
            ok = np.isfinite(seed_lo) & np.isfinite(seed_hi)
            if ok.any():
                ax_c.errorbar(x[ok], y[ok], yerr=[y[ok] - seed_lo[ok], seed_hi[ok] - y[ok]],
                              fmt="none", ecolor=st["color"], elinewidth=0.8, capsize=2.0)
            ax_c.plot(x, y, color=st["color"], marker=st["marker"], markersize=4, lw=0.8,
                      ls=":")
        ax_c.set_xscale("log", base=2)
        ax_c.set_xticks(fractions, [f"{f:g}" for f in fractions])
        ax_c.minorticks_off()
        ax_c.set_xlabel("real fraction of the lesion pool")
        ax_c.set_ylabel("Δ AUROC vs baseline")
        ax_c.set_title("c  difference to the baseline", loc="left")

        handles, labels = ax_b.get_legend_handles_labels()
        seeds = int(n_seeds.max()) if len(n_seeds) else 0
        fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.02),
                   ncol=min(len(labels), 6), handlelength=2.2)
        n_pos, n_neg = int(table["n_pos"].iloc[0]), int(table["n_neg"].iloc[0])
        fig.text(0.5, -0.10, f"points: {seeds} seeds per arm; bands (a: arms, b: baseline) "
                 f"and thick bars: {pct} DeLong CI (mean over seeds)\non the same {n_pos} "
                 f"lesion + {n_neg} healthy real test images; thin capped bars: {pct} t-CI "
                 "over seeds;\ndashed lines in a: the synthetic-only and "
                 "classic-augmentation controls",
                 ha="center", va="top", fontsize=6.5, color="0.3", linespacing=1.4)
        fig.subplots_adjust(wspace=0.42, bottom=0.2)
    return fig
