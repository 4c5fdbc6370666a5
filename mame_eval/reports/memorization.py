"""Figures of the memorisation audit: the closest synthetic–training pairs, and the similarity
of synthetic images next to the null of held-out images."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from mame_eval.reports.style import PALETTE, new_figure, style

__all__ = ["closest_pairs_figure", "similarity_figure"]

FLAG = PALETTE[3]  # vermillion: a flagged pair
SYNTHETIC = PALETTE[0]  # blue
NULL = PALETTE[1]  # orange


def _shorten(name: str, width: int = 22) -> str:
    return name if len(name) <= width else f"{name[:width - 9]}…{name[-8:]}"


def closest_pairs_figure(pairs: Sequence[dict], threshold: float, alpha: float,
                         pairs_per_row: int = 2) -> Figure:
    """The closest synthetic–training pairs, most similar first, side by side.

    Args:
        pairs: dicts with ``synthetic``, ``train`` (uint8 (H, W) gray, full images),
            ``synthetic_name``, ``train_name``, ``similarity``, ``p_value``, ``flagged``,
            ``mirrored`` (the training image is shown mirrored when it matched so, so that a
            copy looks like one).
        threshold, alpha: the flag rule, for the title.
    Returns:
        a Figure on black (mammograms are judged on black); flagged pairs framed in vermillion.
    """
    n = len(pairs)
    rows = max(1, -(-n // pairs_per_row))
    cols = 2 * pairs_per_row
    aspect = 1.0
    if n:
        h, w = np.asarray(pairs[0]["synthetic"]).shape[:2]
        aspect = h / w
    # every size in inches, laid out by hand so that each image fills its axes exactly and the
    # captions sit right above and below it
    width, margin, gap, pair_gap = 7.2, 0.08, 0.04, 0.16
    head, title_h, caption_h = 0.34, 0.26, 0.2
    tile = (width - 2 * margin - (pairs_per_row - 1) * pair_gap
            - pairs_per_row * gap) / cols
    row_h = title_h + tile * aspect + caption_h
    height = head + rows * row_h + margin
    with style():
        fig = Figure(figsize=(width, height), facecolor="black")
        axes = np.empty((rows, cols), dtype=object)
        for r in range(rows):
            bottom = height - head - r * row_h - title_h - tile * aspect
            for c in range(cols):
                pair_index, side = divmod(c, 2)
                left = margin + pair_index * (2 * tile + gap + pair_gap) + side * (tile + gap)
                ax = fig.add_axes((left / width, bottom / height, tile / width,
                                   tile * aspect / height))
                ax.set_axis_off()
                axes[r, c] = ax
        for k, pair in enumerate(pairs):
            r, c = divmod(k, pairs_per_row)
            left, right = axes[r, 2 * c], axes[r, 2 * c + 1]
            train = np.asarray(pair["train"])
            if pair["mirrored"]:
                train = train[:, ::-1]
            left.imshow(pair["synthetic"], cmap="gray", vmin=0, vmax=255,
                        interpolation="lanczos")
            right.imshow(train, cmap="gray", vmin=0, vmax=255, interpolation="lanczos")
            color = FLAG if pair["flagged"] else "white"
            verdict = "FLAGGED" if pair["flagged"] else "not flagged"
            left.set_title(f"#{k + 1} synthetic\n{_shorten(pair['synthetic_name'])}",
                           color="white", fontsize=6, loc="left", pad=2)
            side = "training, mirrored" if pair["mirrored"] else "training"
            right.set_title(f"{side}\n{_shorten(pair['train_name'])}", color="white",
                            fontsize=6, loc="left", pad=2)
            left.text(0.0, -0.03, f"MS-SSIM {pair['similarity']:.3f} · p "
                      f"{pair['p_value']:.3g} · {verdict}", transform=left.transAxes, ha="left",
                      va="top", fontsize=6,
                      color=color, fontweight="bold" if pair["flagged"] else "normal")
            if pair["flagged"]:
                for ax in (left, right):
                    ax.set_axis_on()
                    ax.set_xticks([])
                    ax.set_yticks([])
                    ax.grid(False)
                    for spine in ax.spines.values():
                        spine.set_edgecolor(FLAG)
                        spine.set_linewidth(2.0)
        if not n:
            axes[0, 0].text(0, 0.5, "no synthetic image had a training candidate",
                            color="white")
        fig.text(margin / width, 1 - 0.08 / height,
                 f"Closest synthetic–training pairs, most similar first (flag: MS-SSIM > "
                 f"{threshold:.4f}, false-flag rate ≤ {alpha:g})", color="white", fontsize=8.5,
                 ha="left", va="top")
    return fig


def similarity_figure(synthetic: np.ndarray, null: np.ndarray, threshold: float, alpha: float,
                      null_label: str = "held-out real") -> Figure:
    """Histograms of the best MS-SSIM to the training set: synthetic images vs the null, and
    the flag threshold (images right of it are flagged)."""
    synthetic = np.asarray(synthetic, dtype=float)
    null = np.asarray(null, dtype=float)
    fig, ax = new_figure("column", 2.7)
    with style():
        values = np.r_[synthetic, null, threshold]
        lo, hi = float(values.min()), float(values.max())
        pad = 0.02 * max(hi - lo, 1e-3)
        bins = np.linspace(lo - pad, min(1.0, hi + pad) if hi < 1 else 1.0 + pad, 41)
        ax.hist(null, bins=bins, density=True, color=NULL, alpha=0.55,
                label=f"{null_label}, n={len(null)}")
        ax.hist(synthetic, bins=bins, density=True, histtype="step", lw=1.4, color=SYNTHETIC,
                label=f"synthetic, n={len(synthetic)}")
        flagged = int(np.sum(synthetic > threshold))
        ax.axvline(threshold, color="black", ls="--", lw=1.0,
                   label=f"threshold {threshold:.3f} (α={alpha:g})")
        ax.set_xlabel("MS-SSIM to the closest training image")
        ax.set_ylabel("density")
        fig.suptitle(f"{flagged} of {len(synthetic)} synthetic images flagged", x=0.14, ha="left",
                     y=0.99, fontsize=8.5)
        # the legend goes between title and axes, never over the bars
        ax.legend(loc="lower left", bbox_to_anchor=(0, 1.02), ncol=1, borderaxespad=0)
        fig.subplots_adjust(top=0.7, bottom=0.16, left=0.14, right=0.97)
    return fig
