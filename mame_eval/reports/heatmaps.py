"""The explanation sheet (paper Figs 18–20): one row per image, the image with its lesion
box(es), then one attribution overlay per method titled with its relevance mass; methods that
fail the model-randomisation check are marked in red. And the sanity-check figure: map
similarity against cascading randomisation depth, one line per method."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from mame_eval.reports.style import new_figure

__all__ = ["METHOD_TITLES", "heatmap_figure", "sanity_figure"]

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
                    label += "\n(fails model-randomisation check)"
                ax.set_title(label, color="#ff9090" if failed else "white", fontsize=6)
            for x0, y0, x1, y1 in boxes:
                ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False,
                                       lw=1.0 if c == 0 else 0.7,
                                       edgecolor="#56B4E9" if c == 0 else "white"))
    return fig


def sanity_figure(table, methods: list[str], threshold: float) -> Figure:
    """Map similarity vs cascading randomisation depth (Adebayo et al. 2018), pooled over
    groups (``group == "all"`` rows of the explain ``sanity`` table): mean Spearman ρ of the
    absolute maps (left) and mean SSIM (right, when measured), with 95 % bootstrap bands; one
    line per method, the failure threshold dashed. Depth 0 is the trained model; the tick
    labels name the lowest layer group randomised so far."""
    import pandas as pd

    from mame_eval.reports.style import series_styles

    pooled = table[table["group"] == "all"]
    has_ssim = "ssim_mean" in pooled and pooled["ssim_mean"].notna().any()
    fig, axes = new_figure("page" if has_ssim else "column", 2.6, ncols=2 if has_ssim else 1,
                           squeeze=False)
    panels = [("spearman", "Spearman ρ of |map|")] + ([("ssim", "SSIM of |map|")]
                                                      if has_ssim else [])
    styles = series_styles(len(methods))
    labels: dict[int, str] = {}
    for ax, (key, ylabel) in zip(axes[0], panels, strict=True):
        for style, method in zip(styles, methods, strict=True):
            sub = pooled[pooled["method"] == method].sort_values("depth")
            if sub.empty:
                continue
            labels.update(zip(sub["depth"].astype(int), sub["layer"].astype(str),
                              strict=True))
            fails = sub["fails_check"].dropna()
            failed = bool(len(fails)) and bool(fails.iloc[-1])
            name = METHOD_TITLES.get(method, method) + (" (fails)" if failed else "")
            y = pd.to_numeric(sub[f"{key}_mean"], errors="coerce")
            ax.plot(sub["depth"], y, label=name, **style)
            lo = pd.to_numeric(sub[f"{key}_ci_low"], errors="coerce")
            hi = pd.to_numeric(sub[f"{key}_ci_high"], errors="coerce")
            ax.fill_between(sub["depth"], lo, hi, color=style["color"], alpha=0.15, lw=0)
        if key == "spearman":
            ax.axhline(threshold, color="0.4", ls="--", lw=0.8,
                       label=f"fails above ρ = {threshold}")
        ax.axhline(0.0, color="0.7", lw=0.5)
        ax.set_ylabel(ylabel)
        ax.set_xlabel("randomised down to")
        ticks = sorted(labels)
        ax.set_xticks(ticks)
        ax.set_xticklabels(["trained" if d == 0 else labels[d] for d in ticks], rotation=30,
                           ha="right", fontsize=6)
        low = pd.to_numeric(pooled[f"{key}_ci_low"], errors="coerce").min()
        ax.set_ylim(min(-0.2, float(low) - 0.05) if pd.notna(low) else -0.2, 1.05)
    axes[0][0].legend(fontsize=6, frameon=False)
    axes[0][0].set_title("Model-randomisation check (cascading, top down)", fontsize=7)
    return fig
