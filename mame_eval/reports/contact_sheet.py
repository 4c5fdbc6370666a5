"""Contact sheets: a grid of mammograms with captions and optional boxes, as one PNG."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mame_eval.reports.style import new_figure, save_figure


def contact_sheet(
    images: Sequence[np.ndarray],
    out: Path,
    captions: Sequence[str] | None = None,
    boxes: Sequence[Sequence[tuple[float, float, float, float]]] | None = None,
    cols: int = 4,
    tile_inches: float = 2.6,
    title: str | None = None,
) -> Path:
    """Write ``images`` (each (H, W) or (H, W, 3) uint8) as a grid PNG at ``out``.

    ``boxes[i]`` are ``(x0, y0, x1, y1)`` rectangles (pixel coordinates of image ``i``) drawn
    in colour. Returns ``out``.
    """
    from matplotlib.patches import Rectangle

    n = max(1, len(images))
    rows = (n + cols - 1) // cols
    first = images[0] if len(images) else np.zeros((4, 4), np.uint8)
    aspect = first.shape[0] / first.shape[1]
    fig, axes = new_figure(cols * tile_inches, rows * tile_inches * aspect + 0.4, nrows=rows,
                           ncols=cols, dark=True, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i >= len(images):
            continue
        ax.imshow(images[i], cmap="gray", vmin=0, vmax=255, interpolation="lanczos")
        if captions:
            ax.set_title(captions[i], color="white", fontsize=7)
        for x0, y0, x1, y1 in (boxes[i] if boxes else []):
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=1.0,
                                   edgecolor="#ff4040"))
    if title:
        fig.suptitle(title, color="white", fontsize=10)
    out = Path(out)
    save_figure(fig, out.with_suffix(""), formats=("png",), dpi=110)
    return out
