"""The explanation sheet (paper Figs 18–20): one row per image, the image with its lesion
box(es), then one attribution overlay per method titled with its relevance mass."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from mame_eval.reports.style import new_figure

__all__ = ["METHOD_TITLES", "heatmap_figure"]

METHOD_TITLES = {"gradcam": "Grad-CAM", "saliency": "Saliency", "occlusion": "Occlusion"}
#: perceptually uniform and readable with colour-vision deficiencies (unlike jet)
HEAT_CMAP = "inferno"


def heatmap_figure(rows: list[dict], methods: list[str], tile: float = 1.6) -> Figure:
    """The sheet of explained images.

    Args:
        rows: one dict per image: ``group``, ``name``, ``image`` (H, W) uint8, ``score``
            (p(lesion)), ``maps`` {method: (H, W) float}, ``mass`` {method: relevance mass or
            None}, ``boxes`` [(x0, y0, x1, y1)] in image pixels; optionally ``failed``
            {method: reason} for methods that fail the randomisation sanity check.
        methods: the overlay columns, in order.
        tile: inches per image tile.
    """
    n_rows, n_cols = max(1, len(rows)), 1 + len(methods)
    aspect = rows[0]["image"].shape[0] / rows[0]["image"].shape[1] if rows else 1.0
    fig, axes = new_figure(n_cols * tile, n_rows * tile * aspect + 0.4, nrows=n_rows,
                           ncols=n_cols, dark=True, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for r, row in enumerate(rows):
        image, boxes = row["image"], row["boxes"]
        for c in range(n_cols):
            ax = axes[r, c]
            ax.imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="lanczos")
            if c == 0:
                short = row["name"] if len(row["name"]) <= 22 else row["name"][:19] + "…"
                ax.set_title(f"{row['group']}: {short}\np(lesion) = {row['score']:.2f}",
                             color="white", fontsize=6)
            else:
                method = methods[c - 1]
                # display only: positive part, scaled to its 99.5th percentile (a few hot
                # pixels must not hide the rest of a sparse saliency map); the faintest 5 %
                # left transparent so that the mammogram stays visible under the overlay
                heat = np.clip(row["maps"][method], 0.0, None)
                top = float(np.quantile(heat, 0.995))
                top = top if top > 0 else float(heat.max())
                heat = np.clip(heat / top, 0.0, 1.0) if top > 0 else heat
                ax.imshow(np.ma.masked_less(heat, 0.05), cmap=HEAT_CMAP, alpha=0.55, vmin=0.0,
                          vmax=1.0, interpolation="bilinear")
                label = METHOD_TITLES.get(method, method)
                mass = row["mass"].get(method)
                if mass is not None:
                    label += f"\nrelevance mass {mass:.2f}"
                failed = row.get("failed", {}).get(method)
                if failed:
                    label += "\n(fails sanity check)"
                ax.set_title(label, color="#ff9090" if failed else "white", fontsize=6)
            for x0, y0, x1, y1 in boxes:
                ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False,
                                       lw=1.0 if c == 0 else 0.7,
                                       edgecolor="#56B4E9" if c == 0 else "white"))
    return fig
