"""Diversity figures: MS-SSIM against guidance (paper Table 3 as a curve) and the sweep's
fidelity–diversity trade-off."""

from __future__ import annotations

import textwrap

import pandas as pd
from matplotlib.figure import Figure

from mame_eval.reports.style import PALETTE, new_figure

__all__ = ["diversity_figure", "tradeoff_figure"]


def _trend_lines(trends) -> str:
    """The trends' sentences, one per line (``Trend`` objects or ``trends.csv`` rows)."""
    return "\n".join(t["text"] if isinstance(t, dict) else t.text for t in trends if t)


def diversity_figure(table: pd.DataFrame, title: str, trend=None) -> Figure:
    """Mean MS-SSIM per guidance scale with its bootstrap CI band; a folder of images (empty
    guidance) is one point with its CI.

    Args:
        table: ``diversity.csv`` rows (guidance, mean, ci_low, ci_high, n_images, …).
        title: the model and prompt, or the folder.
        trend: the paired trend across guidance (:class:`mame_eval.stats.trend.Trend`),
            written in the axes ("MS-SSIM rises with guidance: +0.13 [0.08, 0.17] …").
    """
    fig, ax = new_figure("column", height=2.6)
    rows = table.dropna(subset=["guidance"]).sort_values("guidance")
    if len(rows):
        ax.plot(rows["guidance"], rows["mean"], "o-", color=PALETTE[0], label="mean MS-SSIM")
        ax.fill_between(rows["guidance"], rows["ci_low"], rows["ci_high"], color=PALETTE[0],
                        alpha=0.25, linewidth=0, label="95 % bootstrap CI")
        ax.set_xlabel("guidance scale")
        n = sorted({int(v) for v in rows["n_images"]})
        ax.text(0.99, 0.02, f"n = {', '.join(map(str, n))} images per scale",
                transform=ax.transAxes, ha="right", va="bottom", fontsize=6.5)
    else:  # a folder of images: one estimate, drawn as a point with its CI
        row = table.iloc[0]
        ax.errorbar([0], [row["mean"]], yerr=[[row["mean"] - row["ci_low"]],
                                             [row["ci_high"] - row["mean"]]],
                    fmt="o", color=PALETTE[0], capsize=4,
                    label="mean MS-SSIM, 95 % bootstrap CI")
        ax.set_xticks([0], [f"{int(row['n_images'])} images"])
        ax.set_xlim(-1, 1)
    ax.set_ylabel("MS-SSIM (lower = more diverse)")
    if trend is not None and len(rows):  # under the title, never over the curve
        title += "\n" + textwrap.fill(_trend_lines([trend]), 75)
    ax.set_title(title, fontsize=7 if trend is None else 6)
    # below the axes: a legend never covers the curve
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
    return fig


def tradeoff_figure(table: pd.DataFrame, title: str, trends=()) -> Figure:
    """Per guidance scale: diversity (MS-SSIM), mean prompt adherence, the copy rate and FID
    where measured (left); adherence against MS-SSIM with each point labelled by its scale
    (right); the paired trends across guidance (``trends``: :class:`Trend` objects) under the
    title."""
    fig, (left, right) = new_figure("page", height=3.0, ncols=2)
    rows = table.sort_values("guidance")
    g = rows["guidance"]
    handles = []
    if "ms_ssim" in rows:
        handles += left.plot(g, rows["ms_ssim"], "o-", color=PALETTE[0],
                             label="MS-SSIM (lower = more diverse)")
        left.fill_between(g, rows["ms_ssim_ci_low"], rows["ms_ssim_ci_high"], color=PALETTE[0],
                          alpha=0.2, linewidth=0)
    if "mean_adherence" in rows:
        handles += left.plot(g, rows["mean_adherence"], "s-", color=PALETTE[2],
                             label="mean prompt adherence")
    if "copy_rate" in rows:
        handles += left.plot(g, rows["copy_rate"], "D:", color=PALETTE[5],
                             label="copy rate (memorisation)")
        left.fill_between(g, rows["copy_rate_ci_low"], rows["copy_rate_ci_high"],
                          color=PALETTE[5], alpha=0.15, linewidth=0)
    left.set_xlabel("guidance scale")
    left.set_ylim(0, 1.02)
    if "fid" in rows:
        twin = left.twinx()
        twin.grid(False)
        # the band is the interval for the true FID, centred on FID∞ (bias-corrected), so
        # FID∞ is the line; the plug-in FID (biased upwards at finite N) is dotted
        if "fid_inf" in rows:
            twin.plot(g, rows["fid"], ":", color=PALETTE[3], linewidth=0.8)
        handles += twin.plot(g, rows["fid_inf"] if "fid_inf" in rows else rows["fid"], "^--",
                             color=PALETTE[3],
                             label="FID∞ (dotted: plug-in FID)" if "fid_inf" in rows else "FID")
        twin.fill_between(g, rows["fid_ci_low"], rows["fid_ci_high"], color=PALETTE[3],
                          alpha=0.12, linewidth=0)
        twin.set_ylabel("FID", color=PALETTE[3])
    if handles:
        left.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2)
    if "ms_ssim" in rows and "mean_adherence" in rows:
        right.plot(rows["ms_ssim"], rows["mean_adherence"], "o-", color=PALETTE[4])
        for x, y, label in zip(rows["ms_ssim"], rows["mean_adherence"], g, strict=True):
            right.annotate(f"{label:g}", (x, y), textcoords="offset points", xytext=(4, 4),
                           fontsize=6.5)
        right.set_xlabel("MS-SSIM (lower = more diverse)")
        right.set_ylabel("mean prompt adherence")
    else:
        right.axis("off")
        right.text(0.5, 0.5, "trade-off needs diversity and fidelity", ha="center",
                   va="center", fontsize=7)
    lines = _trend_lines(trends)
    fig.suptitle(title + ("\n" + lines if lines else ""), fontsize=8 if not lines else 6.5)
    return fig
