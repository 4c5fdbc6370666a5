"""ROC figure helper: writes non-empty PNG and PDF atomically, validates its input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mame_eval.errors import InputError
from mame_eval.reports.roc import plot_roc
from mame_eval.studies.ratings import load_ratings, reader_roc_curves

DATA = Path(__file__).parent / "data" / "vandyke.csv"


def test_plot_roc_writes_png_and_pdf(tmp_path):
    data = load_ratings(pd.read_csv(DATA), modality="treatment", score="rating")
    curves = reader_roc_curves(data, "1")
    paths = plot_roc(curves, tmp_path / "figs" / "roc_t1", title="Cine MRI", average_auc=0.897)
    png, pdf = paths
    assert (png.name, pdf.name) == ("roc_t1.png", "roc_t1.pdf")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 1000
    # atomic writes leave no temporary files behind
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == ["roc_t1.pdf", "roc_t1.png"]


def test_plot_roc_overwrites_and_defaults_average(tmp_path):
    curve = (np.array([0, 0.5, 1.0]), np.array([0, 0.8, 1.0]), 0.65)
    first = plot_roc({"A": curve}, tmp_path / "roc")
    second = plot_roc({"A": curve, "B": curve}, tmp_path / "roc")
    assert first == second and all(p.stat().st_size > 0 for p in second)


@pytest.mark.parametrize(
    ("curves", "pattern"),
    [
        ({}, "at least one"),
        ({"A": ([0, 1], [0, 1])}, "tuple"),
        ({"A": ([0, 0.5, 1], [0, 1], 0.5)}, "same length"),
        ({"A": ([0, 2], [0, 1], 0.5)}, r"fpr values must lie in \[0, 1\]"),
        ({"A": ([0, 1], [0, 1], 1.5)}, "AUC must lie"),
    ],
)
def test_plot_roc_rejects_bad_curves(tmp_path, curves, pattern):
    with pytest.raises(InputError, match=pattern):
        plot_roc(curves, tmp_path / "roc")
    assert not list(tmp_path.iterdir())


def _curves(n_readers: int, seed: int = 0):
    from mame_eval.stats.roc import auroc, delong_ci, roc_curve_empirical

    rng = np.random.default_rng(seed)
    truth = np.r_[np.ones(26, int), np.zeros(27, int)]
    curves, cis = {}, {}
    for j in range(n_readers):
        score = np.clip(np.rint(1.5 + 0.15 * j * truth + rng.normal(0, 1.1, truth.size)), 0, 4)
        if j == 0:  # a reader whose curve runs up the left edge and along the top
            score = np.where(truth == 1, 4, rng.integers(0, 4, truth.size))
        fpr, tpr, _ = roc_curve_empirical(truth, score)
        curves[f"R{j + 1}"] = (fpr, tpr, auroc(truth, score))
        cis[f"R{j + 1}"] = delong_ci(truth, score)[2]
    return curves, cis


@pytest.mark.parametrize("n_readers", [3, 15])
def test_the_legend_never_covers_the_curves_and_readers_stay_distinguishable(tmp_path,
                                                                             n_readers):
    from matplotlib.figure import Figure

    from mame_eval.reports import roc as roc_module

    curves, cis = _curves(n_readers)
    saved: list[Figure] = []
    real_save = roc_module.save_figure

    def keep(fig, stem):
        saved.append(fig)
        return real_save(fig, stem)

    roc_module.save_figure, orig = keep, roc_module.save_figure
    try:
        png, pdf = plot_roc(curves, tmp_path / "roc", title="Real vs synthetic",
                            average_auc=0.6, average_ci=(0.48, 0.72), cis=cis,
                            note="interval clipped to [0, 1]")
    finally:
        roc_module.save_figure = orig
    shots = __import__("os").environ.get("MAME_EVAL_SCREENSHOTS")
    if shots:
        import shutil

        shutil.copy(png, Path(shots) / f"roc_{n_readers}_readers.png")
    fig = saved[0]
    ax = fig.axes[0]
    renderer = fig.canvas.get_renderer()
    legend = ax.get_legend()
    lb, ab = legend.get_window_extent(renderer), ax.get_window_extent(renderer)
    assert lb.x0 >= ab.x1  # outside the axes, to the right: never over a curve
    texts = [t.get_text() for t in legend.get_texts()]
    assert len(texts) == n_readers + 2
    lo, hi = cis["R2"]
    assert texts[1] == f"Reader R2  {curves['R2'][2]:.2f} [{lo:.2f}, {hi:.2f}]"
    assert texts[-2] == "Reader average  0.60 [0.48, 0.72]"
    lines = ax.get_lines()[1:n_readers + 1]
    looks = {(ln.get_color(), str(ln.get_linestyle()), ln.get_marker()) for ln in lines}
    assert len(looks) == n_readers  # no two readers drawn alike
    assert all(not ln.get_clip_on() for ln in lines)  # edge segments drawn over the frame
    assert ax.get_xlim()[0] < 0 and ax.get_ylim()[1] > 1
    for p in (png, pdf):
        assert oct(p.stat().st_mode & 0o777) == "0o644"
