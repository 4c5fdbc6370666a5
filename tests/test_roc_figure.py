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
