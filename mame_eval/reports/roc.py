"""Paper-style ROC figure: one empirical curve per reader, the chance diagonal and the
reader-averaged AUC in the legend. Written as PNG and PDF, each atomically (temporary file in
the destination folder, then ``os.replace``), with the non-interactive Agg canvas and without
touching pyplot's global state.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from mame_eval.errors import InputError

__all__ = ["plot_roc"]

_STYLE = {
    "font.family": "serif",
    "font.size": 9,
    "axes.linewidth": 0.8,
    "axes.titlesize": 10,
    "legend.fontsize": 7.5,
    "legend.frameon": False,
    "pdf.fonttype": 42,  # embed TrueType: editable text in the PDF
    "savefig.dpi": 300,
}


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


def _save_atomic(fig: Figure, path: Path, fmt: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            metadata = {"CreationDate": None} if fmt == "pdf" else None
            fig.savefig(fh, format=fmt, bbox_inches="tight", metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def plot_roc(
    curves: Mapping[str, tuple],
    out_stem: Path | str,
    title: str = "ROC curves",
    average_auc: float | None = None,
    *,
    reader_prefix: str = "Reader ",
) -> list[Path]:
    """Draw one ROC curve per reader and write ``<out_stem>.png`` and ``<out_stem>.pdf``.

    Parameters
    ----------
    curves : mapping reader label -> (fpr, tpr, auc)
        ``fpr``/``tpr`` 1-D arrays in [0, 1] of equal length (e.g. from
        :func:`mame_eval.stats.roc.roc_curve_empirical`), ``auc`` in [0, 1]. Legend
        entries keep the mapping's order.
    out_stem : path
        Output path without suffix; the parent folder is created if needed.
    title : str
        Axes title.
    average_auc : float, optional
        Reader-averaged AUC shown as the legend's last line (defaults to the mean of the
        per-reader AUCs; pass e.g. the MRMC estimate to show that instead).
    reader_prefix : str
        Text before each reader label in the legend ("Reader 1 (AUC = 0.920)").

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

    stem = Path(out_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    png, pdf = stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".pdf")

    import matplotlib

    with matplotlib.rc_context(_STYLE):
        fig = Figure(figsize=(3.5, 3.5))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        for name, (fpr, tpr, auc) in checked.items():
            ax.plot(fpr, tpr, lw=1.2, label=f"{reader_prefix}{name} (AUC = {auc:.3f})")
        ax.plot([0, 1], [0, 1], ls="--", lw=0.8, color="0.5", label="Chance")
        handles, labels = ax.get_legend_handles_labels()
        handles.append(Line2D([], [], ls="none"))
        labels.append(f"Reader average AUC = {float(average_auc):.3f}")
        ax.legend(handles, labels, loc="lower right", handlelength=1.8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        ax.set_xlabel("False positive rate (1 - specificity)")
        ax.set_ylabel("True positive rate (sensitivity)")
        ax.set_title(title)
        ax.grid(True, lw=0.3, color="0.85")
        ax.tick_params(direction="out", length=3)
        _save_atomic(fig, png, "png")
        _save_atomic(fig, pdf, "pdf")
    return [png, pdf]
