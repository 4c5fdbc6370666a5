"""Paper-style ROC figure: one empirical curve per reader, the chance diagonal, and a legend
table -- outside the axes, never over the curves -- with each reader's AUC and interval and the
reader-averaged AUC with its interval.

Readers stay distinguishable beyond ten: each gets a colour from the Okabe-Ito palette (safe
for colour-blind readers) *and* a line style and a marker at its operating points, 28 distinct
combinations before any repeats. The axes run slightly past 0 and 1 with unclipped lines, so a
curve that climbs the left edge or runs along the top stays visible instead of hiding under
the frame. Written as PNG and PDF atomically (mode 0644), on a Figure with the non-interactive
Agg canvas, without touching pyplot's global state.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from mame_eval.errors import InputError

__all__ = ["STYLE", "plot_roc", "reader_styles", "save_figure"]

STYLE = {
    "font.family": "serif",
    "font.size": 9,
    "axes.linewidth": 0.8,
    "axes.titlesize": 10,
    "legend.fontsize": 7.5,
    "legend.frameon": False,
    "pdf.fonttype": 42,  # embed TrueType: editable text in the PDF
    "savefig.dpi": 300,
}
_STYLE = STYLE  # the name used before

#: Okabe & Ito (2008) colours, yellow left out (too light on white)
_COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#56B4E9", "#E69F00", "#000000")
_LINES = ("-", "--", "-.", ":")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def reader_styles(n: int) -> list[dict]:
    """Line keyword arguments for ``n`` readers: colour, line style and marker vary together
    so that no two of the first 28 readers look alike."""
    out = []
    for i in range(n):
        out.append({"color": _COLOURS[i % len(_COLOURS)],
                    "linestyle": _LINES[(i // len(_COLOURS)) % len(_LINES)],
                    "marker": _MARKERS[(i + i // len(_COLOURS)) % len(_MARKERS)]})
    return out


def _check_curve(name: str, curve) -> tuple[np.ndarray, np.ndarray, float]:
    try:
        fpr, tpr, auc = curve
        fpr = np.asarray(fpr, dtype=float)
        tpr = np.asarray(tpr, dtype=float)
        auc = float(auc)
    except (TypeError, ValueError):
        raise InputError(
            f"ROC curve {name!r} must be a (fpr, tpr, auc) tuple of numbers"
        ) from None
    if fpr.ndim != 1 or fpr.shape != tpr.shape or fpr.size < 2:
        raise InputError(
            f"ROC curve {name!r}: fpr and tpr must be 1-D with the same length >= 2; "
            f"got shapes {fpr.shape} and {tpr.shape}"
        )
    for label, arr in (("fpr", fpr), ("tpr", tpr)):
        if not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.max() > 1:
            raise InputError(f"ROC curve {name!r}: {label} values must lie in [0, 1]")
    if not 0.0 <= auc <= 1.0:
        raise InputError(f"ROC curve {name!r}: AUC must lie in [0, 1]; got {auc!r}")
    return fpr, tpr, auc


def save_figure(fig: Figure, out_stem: Path | str) -> list[Path]:
    """Write ``<out_stem>.png`` and ``.pdf`` atomically (mode 0644 under the usual umask);
    the PDF without a creation date, so the same figure gives the same bytes."""
    from mame_eval.io import atomic_path

    stem = Path(out_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in ("png", "pdf"):
        path = stem.with_name(f"{stem.name}.{fmt}")
        with atomic_path(path) as tmp:
            metadata = {"CreationDate": None} if fmt == "pdf" else None
            fig.savefig(tmp, format=fmt, bbox_inches="tight", metadata=metadata)
        paths.append(path)
    return paths


def _ci_text(ci) -> str:
    if ci is None:
        return ""
    lo, hi = (float(v) for v in ci)
    return f" [{lo:.2f}, {hi:.2f}]"


def plot_roc(
    curves: Mapping[str, tuple],
    out_stem: Path | str,
    title: str = "ROC curves",
    average_auc: float | None = None,
    *,
    reader_prefix: str = "Reader ",
    cis: Mapping[str, tuple[float, float]] | None = None,
    average_ci: tuple[float, float] | None = None,
    average_label: str = "Reader average",
    level: float = 0.95,
    note: str | None = None,
) -> list[Path]:
    """Draw one ROC curve per reader and write ``<out_stem>.png`` and ``<out_stem>.pdf``.

    Parameters
    ----------
    curves : mapping reader label -> (fpr, tpr, auc)
        ``fpr``/``tpr`` 1-D arrays in [0, 1] of equal length (e.g. from
        :func:`mame_eval.stats.roc.roc_curve_empirical`), ``auc`` in [0, 1]. Legend rows keep
        the mapping's order.
    out_stem : path
        Output path without suffix; the parent folder is created if needed.
    title : str
        Axes title.
    average_auc : float, optional
        Reader-averaged AUC, the legend's last row (defaults to the mean of the per-reader
        AUCs; pass e.g. the MRMC estimate to show that instead).
    reader_prefix : str
        Text before each reader label ("Reader 1  0.92 [0.85, 0.99]").
    cis : mapping reader label -> (lo, hi), optional
        Each reader's AUC interval, shown after its AUC.
    average_ci : (lo, hi), optional
        The reader-averaged AUC's interval.
    level : float
        Confidence level of the intervals (for the legend heading).
    note : str, optional
        A line under the figure (e.g. that an interval was clipped to [0, 1]).

    Returns
    -------
    [png_path, pdf_path]
    """
    if not curves:
        raise InputError("plot_roc needs at least one (fpr, tpr, auc) curve; got none")
    checked = {str(k): _check_curve(str(k), v) for k, v in curves.items()}
    if average_auc is None:
        average_auc = float(np.mean([c[2] for c in checked.values()]))
    elif not 0.0 <= float(average_auc) <= 1.0:
        raise InputError(f"average_auc must lie in [0, 1]; got {average_auc!r}")
    cis = {str(k): v for k, v in (cis or {}).items()}

    import matplotlib

    n = len(checked)
    ncol = 1 if n <= 16 else 2
    with matplotlib.rc_context(STYLE):
        bottom = 0.55 + (0.3 if note else 0.0)  # inches: tick labels, x label, the note
        fig = Figure(figsize=(3.4 + 2.3 * ncol,
                              max(3.4 + bottom - 0.55, 0.95 + 0.155 * (n / ncol + 3))))
        FigureCanvasAgg(fig)
        ax = fig.add_axes((0.6 / fig.get_figwidth(), bottom / fig.get_figheight(),
                           2.75 / fig.get_figwidth(), 2.75 / fig.get_figheight()))
        ax.plot([0, 1], [0, 1], ls=(0, (4, 3)), lw=0.8, color="0.55", zorder=1)
        handles, labels = [], []
        for (name, (fpr, tpr, auc)), style in zip(checked.items(), reader_styles(n),
                                                  strict=True):
            (line,) = ax.plot(fpr, tpr, lw=1.1, ms=3.2, mew=0.6, mfc="white", clip_on=False,
                              zorder=3, **style)
            handles.append(line)
            labels.append(f"{reader_prefix}{name}  {auc:.2f}{_ci_text(cis.get(name))}")
        handles += [Line2D([], [], ls="none"),
                    Line2D([], [], ls=(0, (4, 3)), lw=0.8, color="0.55")]
        labels += [f"{average_label}  {float(average_auc):.2f}{_ci_text(average_ci)}",
                   "Chance (AUC 0.50)"]
        pad = 0.015
        ax.set_xlim(-pad, 1 + pad)
        ax.set_ylim(-pad, 1 + pad)
        ax.set_aspect("equal")
        ax.set_xticks(np.linspace(0, 1, 6))
        ax.set_yticks(np.linspace(0, 1, 6))
        ax.set_xlabel("False positive rate (1 - specificity)")
        ax.set_ylabel("True positive rate (sensitivity)")
        ax.set_title(title)
        ax.grid(True, lw=0.3, color="0.88", zorder=0)
        ax.tick_params(direction="out", length=3)
        heading = f"AUC [{int(round(level * 100))}% CI]" if (cis or average_ci) else "AUC"
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.04, 1.0),
                  borderaxespad=0, handlelength=2.6, ncol=ncol, title=heading,
                  title_fontsize=7.5, alignment="left", labelspacing=0.35)
        if note:
            fig.text(0.6 / fig.get_figwidth(), 0.02, note, fontsize=6.5, color="0.3",
                     ha="left", va="bottom", wrap=True)
        return save_figure(fig, out_stem)
