"""Prompt fidelity and concept extrapolation."""

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import beta

from mame_eval.metrics.fidelity import (
    adherence_table,
    fidelity_records,
    measure_area,
    requested_attributes,
    training_combinations,
)


def disc_image(ratio, size=128):
    """A breast stand-in against the left edge covering ``ratio`` of the image."""
    img = np.zeros((size, size), np.uint8)
    img[:, : round(ratio * size)] = 150
    return np.stack([img] * 3, -1)


def test_area_is_measured_like_prepare():
    for ratio, expected in ((0.25, "small"), (0.5, "medium"), (0.75, "big")):
        label, measured = measure_area(disc_image(ratio))
        assert label == expected and measured == pytest.approx(ratio, abs=0.02)


def test_requested_attributes():
    assert requested_attributes("a siemens mammogram in MLO view with big area") == {
        "vendor": "siemens", "view": "MLO", "area": "big"}


class StubNet:
    """Attribute heads that answer 'CC' and 'high' whatever the image."""

    class config:  # noqa: N801
        attributes = {"view": ["CC", "MLO"], "density": ["very low", "low", "high", "very high"]}

    image_size = 32

    def __call__(self, x):
        n = len(x)
        return {"view": torch.tensor([[5.0, 0.0]] * n),
                "density": torch.tensor([[0.0, 0.0, 5.0, 0.0]] * n)}


def test_records_and_adherence_with_exact_ci():
    prompts = ["a hologic mammogram in CC view with small area",
               "a hologic mammogram in MLO view with medium area",
               "a siemens mammogram in CC view with high density",
               "a siemens mammogram in CC view with low density",
               "a siemens mammogram in CC view with big area"]
    images = [disc_image(0.25), disc_image(0.5), disc_image(0.5), disc_image(0.5),
              disc_image(0.75)]
    records = fidelity_records(images, prompts, model=StubNet())
    assert list(records["measured_area"]) == ["small", "medium", "medium", "medium", "big"]
    training = training_combinations([
        "a hologic mammogram in CC view with small area",
        "a siemens mammogram in MLO view with very low density"])
    assert ("siemens", "area") not in training and ("hologic", "area") in training
    table = adherence_table(records, training).set_index("attribute")
    # The siemens + area prompt is a combination never trained: all its attributes (area and
    # view) are pooled apart; the stub calls every view CC, right for 3 of the other 4.
    assert table.loc["view", "n"] == 4 and table.loc["view", "correct"] == 3
    assert table.loc["view|extrapolated", "n"] == 1
    assert table.loc["density", "correct"] == 1 and table.loc["density", "n"] == 2
    assert table.loc["area", "n"] == 2 and table.loc["area|extrapolated", "n"] == 1
    lo = beta.ppf(0.025, 3, 4 - 3 + 1)
    hi = beta.ppf(0.975, 3 + 1, 4 - 3)
    assert table.loc["view", "ci_low"] == pytest.approx(lo, abs=1e-9)
    assert table.loc["view", "ci_high"] == pytest.approx(hi, abs=1e-9)
    assert not table.isna().any().any()


def test_a_prompt_without_vendor_is_not_extrapolated():
    """A single-vendor model's prompt ("a mammogram in CC view …") against a fusion-style
    training set: the attribute was trained for some vendor, so it is not extrapolation."""
    records = fidelity_records([disc_image(0.25), disc_image(0.25)],
                               ["a mammogram in CC view with small area",
                                "a siemens mammogram in CC view with small area"])
    training = {("hologic", "view"), ("hologic", "area"), ("siemens", "view"),
                ("siemens", "density")}
    table = adherence_table(records, training).set_index("attribute")
    assert table.loc["area", "n"] == 1 and table.loc["area|extrapolated", "n"] == 1


def test_without_model_only_area():
    records = fidelity_records([disc_image(0.25)], ["a mammogram in CC view with small area"])
    table = adherence_table(records)
    assert list(table["attribute"]) == ["area"] and table["accuracy"].iloc[0] == 1.0
    assert adherence_table(pd.DataFrame()).empty
