"""The training-loss figure of a fine-tuning run (from ``logs/train_log.csv``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from mame_eval.reports.style import PALETTE, new_figure

__all__ = ["loss_figure"]


def loss_figure(log: pd.DataFrame, title: str) -> Figure:
    """Loss per logged step with a running mean over ~2 % of the run (diffusion losses are
    noisy step to step: the trend is what shows whether training converged)."""
    fig, ax = new_figure("column", height=2.3)
    steps, loss = log["step"].to_numpy(), log["loss"].to_numpy(dtype=float)
    ax.plot(steps, loss, color=PALETTE[5], linewidth=0.6, alpha=0.6, label="loss per step")
    window = max(1, len(loss) // 50)
    if window > 1:
        smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1:], smooth, color=PALETTE[0], label=f"mean of {window} steps")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (MSE)")
    ax.set_title(title, fontsize=7.5)
    ax.legend(loc="upper right")
    return fig
