"""Prompt fidelity: does a generated image show what its prompt asked for?

For each image, the *requested* attributes are parsed from its prompt
(:func:`mame_eval.prompts.parse`) and the *measured* ones come from

* ``area`` — exactly the measure ``prepare`` uses: the breast mask of the 8-bit gray image by
  the fixed intensity threshold, its area ratio, binned small/medium/big;
* ``view``, ``density``, ``vendor`` — the argmax of a MammoNet attribute head.

Adherence per attribute is the share of images whose measured value equals the requested one,
with an exact (Clopper–Pearson) 95 % interval. **Concept extrapolation**: a prompt that asks a
vendor for an attribute its training prompts never named (the paper's fusion model was taught
area only on Hologic images and density only on Siemens) is a combination never seen; all its
attributes are reported separately, as ``<attribute>|extrapolated``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mame_eval.data.preprocess import area_ratio, breast_mask
from mame_eval.prompts import area_from_ratio, parse
from mame_eval.stats.proportions import proportion_ci

ATTRIBUTES = ("view", "density", "area", "vendor")


def requested_attributes(prompt: str) -> dict[str, str]:
    """The attributes a prompt names, as strings (vendor, view, density, area)."""
    p = parse(prompt)
    return {name: getattr(p, name).value for name in ATTRIBUTES if getattr(p, name) is not None}


def measure_area(image: np.ndarray) -> tuple[str, float]:
    """(area bin, area ratio) of an 8-bit image by the same breast mask as ``prepare``."""
    gray = np.asarray(image)
    if gray.ndim == 3:
        gray = gray[..., 0]
    ratio = area_ratio(breast_mask(gray))
    return area_from_ratio(ratio).value, ratio


def measure_with_mammonet(images: Sequence[np.ndarray], model, batch_size: int = 16
                          ) -> list[dict[str, str]]:
    """Argmax class of every attribute head of a MammoNet for each image."""
    import torch

    from mame_eval.cad.data import to_input

    out: list[dict[str, str]] = []
    classes = model.config.attributes
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        x = torch.cat([to_input(np.asarray(im)[..., 0] if np.asarray(im).ndim == 3
                                else np.asarray(im), model.image_size) for im in chunk])
        with torch.no_grad():
            logits = model(x)
        for i in range(len(chunk)):
            out.append({name: classes[name][int(logits[name][i].argmax())]
                        for name in classes if name in logits})
    return out


def training_combinations(prompts: Iterable[str]) -> set[tuple[str, str]]:
    """(vendor, attribute) pairs named together in training prompts (vendor "" if none)."""
    combos = set()
    for prompt in prompts:
        p = parse(prompt)
        vendor = p.vendor.value if p.vendor else ""
        for name in ("density", "area", "view"):
            if getattr(p, name) is not None:
                combos.add((vendor, name))
    return combos


def was_trained(vendor: str, attribute: str, training: set[tuple[str, str]]) -> bool:
    """Whether training prompts taught ``attribute`` for ``vendor``. A prompt that names no
    vendor (``""``) asks for the attribute as such: trained if any vendor had it."""
    if (vendor, attribute) in training:
        return True
    return vendor == "" and any(a == attribute for _, a in training)


@dataclass
class FidelityRow:
    attribute: str
    n: int
    correct: int
    accuracy: float
    ci_low: float
    ci_high: float


def novel_combination(records: pd.DataFrame, training: set[tuple[str, str]] | None
                      ) -> pd.Series:
    """Per record: does its prompt combine a vendor with an attribute the training prompts
    never paired with it (the paper's fusion model: siemens + area)?"""
    if training is None or records.empty:
        return pd.Series(False, index=records.index, dtype=bool)
    vendor = (records["requested_vendor"].fillna("") if "requested_vendor" in records
              else pd.Series("", index=records.index))
    novel = pd.Series(False, index=records.index, dtype=bool)
    for name in ("view", "density", "area"):
        column = f"requested_{name}"
        if column in records:
            untrained = vendor.map(lambda v, n=name: not was_trained(v, n, training))
            novel |= records[column].notna() & untrained
    return novel


def adherence_table(records: pd.DataFrame, training: set[tuple[str, str]] | None = None,
                    level: float = 0.95) -> pd.DataFrame:
    """Adherence per attribute from a table with ``requested_<a>`` and ``measured_<a>`` columns.

    **Concept extrapolation**: every attribute of a record whose prompt is a combination never
    seen in ``training`` (:func:`novel_combination`) is pooled under
    ``<attribute>|extrapolated`` — the area asked of a siemens image, and also that image's
    view and vendor, since the model was never shown that combination. Returns columns
    attribute, n, correct, accuracy, ci_low, ci_high (accuracy and CI are NaN-free: attributes
    never requested are left out).
    """
    rows = []
    novel = novel_combination(records, training)
    for name in ATTRIBUTES:
        req, meas = f"requested_{name}", f"measured_{name}"
        if req not in records or meas not in records:
            continue
        asked = records[records[req].notna() & records[meas].notna()]
        if asked.empty:
            continue
        extrap = novel.loc[asked.index]
        for label, part in ((name, asked[~extrap]), (f"{name}|extrapolated", asked[extrap])):
            if part.empty:
                continue
            correct = int((part[req] == part[meas]).sum())
            rows.append(FidelityRow(label, len(part), correct, correct / len(part),
                                    *proportion_ci(correct, len(part), level)).__dict__)
    return pd.DataFrame(rows, columns=["attribute", "n", "correct", "accuracy", "ci_low",
                                       "ci_high"])


def fidelity_records(images: Sequence[np.ndarray], prompts: Sequence[str], model=None,
                     files: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per image: requested_* and measured_* attributes (+ area_ratio, file)."""
    measured = measure_with_mammonet(images, model) if model is not None else [{}] * len(images)
    rows = []
    for i, (image, prompt) in enumerate(zip(images, prompts, strict=True)):
        row = {"file": files[i] if files else str(i), "prompt": prompt}
        row.update({f"requested_{k}": v for k, v in requested_attributes(prompt).items()})
        area, ratio = measure_area(image)
        row.update(measured_area=area, area_ratio=ratio)
        for name in ("view", "density", "vendor"):
            if name in measured[i]:
                row[f"measured_{name}"] = measured[i][name]
        rows.append(row)
    frame = pd.DataFrame(rows)
    for name in ATTRIBUTES:
        for prefix in ("requested_", "measured_"):
            if f"{prefix}{name}" not in frame:
                frame[f"{prefix}{name}"] = None
    return frame
