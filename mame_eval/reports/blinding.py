"""Blinding-audit figure: the AUROC of every pixel statistic with its 95 % interval.

A forest plot, one row per statistic (and the cross-validated classifier on all of them): the
AUROC separating real from synthetic cases, its interval, the chance line at 0.5 and the band
0.3-0.7 inside which a statistic is not called a leak. Leaking rows are drawn in vermillion
with a square marker (shape as well as colour), the others in blue circles (Okabe-Ito colours).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from mame_eval.reports.roc import STYLE, save_figure

__all__ = ["plot_blinding_audit"]

_OK, _LEAK = "#0072B2", "#D55E00"


def plot_blinding_audit(table: pd.DataFrame, out_stem: Path | str, *, n_real: int,
                        n_synthetic: int) -> list[Path]:
    """Draw the audit table of :func:`mame_eval.studies.audit.audit_blinding`; write
    ``<out_stem>.png`` and ``.pdf``. Returns [png, pdf]."""
    import matplotlib

    rows = table.reset_index(drop=True)
    n = len(rows)
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(6.0, 0.28 * n + 1.3))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        ax.axvspan(0.3, 0.7, color="0.92", lw=0, zorder=0)
        ax.axvline(0.5, color="0.4", lw=0.8, ls="--", zorder=1)
        for i, r in rows.iterrows():
            y = n - 1 - i
            leak = bool(r["leaks"])
            color = _LEAK if leak else _OK
            ax.plot([r["ci_lo"], r["ci_hi"]], [y, y], color=color, lw=1.4, zorder=2,
                    solid_capstyle="butt")
            ax.plot([r["auroc"]], [y], marker="s" if leak else "o", ms=5, color=color,
                    zorder=3, clip_on=False)
        labels = [str(s) + (" *" if leak else "") for s, leak in
                  zip(rows["statistic"], rows["leaks"], strict=True)]
        ax.set_yticks(range(n - 1, -1, -1), labels)
        ax.set_xlim(-0.03, 1.03)
        ax.set_ylim(-0.7, n - 0.3)
        ax.set_xlabel("AUROC, real vs synthetic (95 % DeLong CI; zero width at complete "
                      "separation); 0.5 = no separation")
        ax.set_title(f"Blinding audit: {n_real} real, {n_synthetic} synthetic cases")
        ax.grid(True, axis="x", lw=0.3, color="0.85")
        ax.tick_params(direction="out", length=3)
        handles = [Line2D([], [], color=_OK, marker="o", lw=1.4, label="no leak"),
                   Line2D([], [], color=_LEAK, marker="s", lw=1.4, label="leaks (*):\n"
                          "AUROC outside 0.3-0.7\nand Bonferroni p < 0.05"),
                   Patch(color="0.92", label="0.3-0.7")]
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                  borderaxespad=0)
        return save_figure(fig, out_stem)
