"""The one figure style of every plot the toolkit draws, and the one way figures are saved.

Figures are :class:`matplotlib.figure.Figure` objects built without pyplot, so that nothing here
switches a notebook user's backend or leaks open figures. Sizes follow a journal page: a single
column is 3.5 in wide, a full page 7.2 in; fonts stay readable at that size. Colours are the
Okabe-Ito palette (distinguishable with the common colour-vision deficiencies), and series past
the eighth also change line style and marker, so that 15 readers stay tellable apart in print.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator, Sequence
from pathlib import Path

import matplotlib
from matplotlib.figure import Figure

from mame_eval.io import atomic_path

__all__ = ["COLUMN_WIDTH", "PAGE_WIDTH", "PALETTE", "new_figure", "save_figure", "series_styles",
           "style"]

COLUMN_WIDTH = 3.5  # inches: one journal column
PAGE_WIDTH = 7.2  # inches: a full page width

#: Okabe & Ito (2008), colour-blind safe; black last (used for references and averages).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442",
           "#000000")
LINESTYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")

RC = {
    "font.family": "sans-serif",
    "font.size": 8,
    "axes.titlesize": 8.5,
    "axes.labelsize": 8,
    "axes.linewidth": 0.7,
    "axes.prop_cycle": matplotlib.cycler(color=PALETTE[:7]),
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.5,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "legend.frameon": False,
    "lines.linewidth": 1.3,
    "lines.markersize": 4,
    "pdf.fonttype": 42,  # TrueType in the PDF: text stays text
    "ps.fonttype": 42,
}


@contextlib.contextmanager
def style() -> Iterator[None]:
    """Build artists inside this context to get the shared look (rcParams are read when an
    artist is created; the global rcParams are restored on exit)."""
    with matplotlib.rc_context(RC):
        yield


def new_figure(width: float | str = "column", height: float | None = None, nrows: int = 1,
               ncols: int = 1, dark: bool = False, **subplot_kw):
    """``(fig, axes)``: a Figure with the shared style and a grid of axes.

    Args:
        width: inches, or ``"column"`` / ``"page"``.
        height: inches; default 0.72 × width per row (× nrows/ncols aspect).
        dark: a black background (image panels: mammograms are judged on black).
        subplot_kw: passed to :meth:`Figure.subplots` (``sharex``, ``squeeze``, …).
    Returns:
        the Figure and the axes as :meth:`Figure.subplots` returns them.
    """
    w = {"column": COLUMN_WIDTH, "page": PAGE_WIDTH}.get(width, width)
    if isinstance(w, str):
        raise ValueError(f"width {width!r}: expected inches, 'column' or 'page'")
    h = height if height is not None else 0.72 * float(w) * nrows / ncols
    with style():
        fig = Figure(figsize=(float(w), h), facecolor="black" if dark else "white",
                     layout="constrained")
        axes = fig.subplots(nrows, ncols, **subplot_kw)
    return fig, axes


def series_styles(n: int) -> list[dict]:
    """``n`` distinct line styles: colour first, then line style and marker, so that series
    beyond the palette's seven colours differ in more than colour."""
    combos = itertools.product(LINESTYLES, PALETTE[:7])
    out = []
    for i, (ls, color) in enumerate(itertools.islice(itertools.cycle(combos), n)):
        out.append({"color": color, "linestyle": ls, "marker": MARKERS[i % len(MARKERS)]})
    return out


def save_figure(fig: Figure, stem: Path | str, formats: Sequence[str] = ("png", "pdf"),
                dpi: int = 300) -> list[Path]:
    """Save ``fig`` as ``stem.png`` and ``stem.pdf`` (vector), each atomically, mode 0644 (as a
    plain ``open`` would make it under the umask)."""
    stem = Path(stem)
    paths = []
    for ext in formats:
        path = stem.with_name(f"{stem.name}.{ext}")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, dpi=dpi, bbox_inches="tight",
                        facecolor=fig.get_facecolor(),
                        metadata={"CreationDate": None} if ext == "pdf" else None)
        paths.append(path)
    return paths
