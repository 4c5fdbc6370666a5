"""``mame-eval diversity``: MS-SSIM diversity of a model per guidance scale (paper Table 3), or
of a folder of images.

Writes ``diversity.csv`` (guidance, mean, std, ci_low, ci_high, n_images, n_pairs),
``trends.csv`` (with two or more scales: the paired change of MS-SSIM across guidance),
``diversity.png``/``.pdf``, ``provenance.json`` and ``run.json``; generated images are kept as
resumable generation runs under ``OUT/images/g<scale>/``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from mame_eval.errors import InputError
from mame_eval.images import list_images, load_rgb
from mame_eval.journeys.record import RunRecord
from mame_eval.metrics.diversity import PROTOCOLS, diversity, ms_ssim_trend
from mame_eval.provenance import describe_input
from mame_eval.stats.trend import TREND_COLUMNS

__all__ = ["DEFAULT_PROMPT", "DIVERSITY_COLUMNS", "diversity_run", "parse_guidance"]

DIVERSITY_COLUMNS = ["guidance", "mean", "std", "ci_low", "ci_high", "n_images", "n_pairs"]
DEFAULT_PROMPT = "a hologic mammogram in MLO view with medium area"


def parse_guidance(text: str) -> list[float]:
    """``"4:14"`` (step 1), ``"4:14:2"``, ``"4,7,10"`` or ``"4"`` → guidance scales."""
    try:
        if ":" in text:
            parts = [float(p) for p in text.split(":")]
            if len(parts) not in (2, 3):
                raise ValueError
            start, stop = parts[0], parts[1]
            step = parts[2] if len(parts) == 3 else 1.0
            if step <= 0 or stop < start:
                raise ValueError
            values = list(np.round(np.arange(start, stop + step / 2, step), 6))
        else:
            values = [float(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise InputError(f"--guidance {text!r}: expected START:STOP[:STEP] (e.g. 4:14) or a "
                         "comma list (e.g. 4,7,10) of non-negative numbers") from None
    if not values or any(v < 0 for v in values):
        raise InputError(f"--guidance {text!r}: expected non-negative guidance scales")
    return [float(v) for v in values]


def diversity_run(out: Path, *, model: str | None = None, images: Path | None = None,
                  prompt: str | None = None, guidance: list[float] | None = None, n: int = 20,
                  steps: int = 24, protocol: str = "all-pairs", seed: int = 0,
                  negative_prompt: str = "", batch_size: int = 4, device: str | None = None,
                  pipe=None, max_pairs: int | None = None, n_boot: int = 2000,
                  progress: Callable[[int, int], None] | None = None) -> RunRecord:
    """Diversity of a model per guidance scale, or of a folder of images.

    With a model: for each guidance scale ``n`` images of ``prompt`` (``all-pairs``), or ``n``
    independent 2-image calls (``paper``: 2n images, seeds paired), generated into
    ``out/images/g<scale>/`` (resumable), then the MS-SSIM statistics of
    :func:`mame_eval.metrics.diversity.diversity`. With ``images``: one row, empty guidance.
    ``max_pairs``: measure a seeded uniform random subset of at most this many pairs per
    scale (``all-pairs``; the CI still resamples images).

    Every scale starts image i from seed ``seed + i``, so the scales are paired: with two or
    more scales the change of mean MS-SSIM from the first to the last scale and its slope get
    a paired bootstrap CI over the seeds (``trends.csv``, the figure, the summary).

    Returns:
        the written :class:`RunRecord`; ``record.table`` is ``diversity.csv``.
    """
    from mame_eval.reports.diversity import diversity_figure

    if protocol not in PROTOCOLS:
        raise InputError(f"--protocol {protocol!r}: expected one of {', '.join(PROTOCOLS)}")
    if n < 2 and protocol == "all-pairs":
        raise InputError(f"--n {n}: all-pairs needs at least 2 images")
    if n < 1:
        raise InputError(f"--n {n}: expected at least 1")
    if max_pairs is not None and (protocol != "all-pairs" or max_pairs < 1):
        raise InputError(f"--max-pairs {max_pairs}: expected a whole number ≥ 1, with the "
                         "all-pairs protocol")
    record = RunRecord(kind="diversity", out=Path(out), device=str(device or "auto"))
    rows, results = [], []
    if images is not None:
        files = list_images(images, "--images")
        pictures = [load_rgb(f) for f in files]
        if protocol == "paper" and len(pictures) % 2:
            pictures = pictures[:-1]
        res = _measure(pictures, protocol, seed, record, max_pairs, n_boot)
        rows.append({"guidance": None, **res.row()})
        results.append(res)
        record.inputs["images"] = describe_input(images, files)
        title = str(images)
    else:
        from mame_eval.generation import generate
        from mame_eval.models import load_pipeline

        prompt = prompt or DEFAULT_PROMPT
        scales = guidance or [4.0]
        if pipe is None:
            pipe = load_pipeline(model, task="txt2img", device=device)
        count = n if protocol == "all-pairs" else 2 * n
        for k, scale in enumerate(scales):
            run = generate(None, prompt, record.out / "images" / f"g{scale:g}", n=count,
                           guidance_scale=scale, steps=steps, seed=seed,
                           negative_prompt=negative_prompt, batch_size=batch_size, pipe=pipe)
            pictures = [load_rgb(f) for f in run.files]
            res = _measure(pictures, protocol, seed, record, max_pairs, n_boot)
            rows.append({"guidance": scale, **res.row()})
            results.append(res)
            if progress:
                progress(k + 1, len(scales))
        record.inputs.update(model=str(model or "embedded MAM-E-tiny"), prompt=prompt,
                             negative_prompt=negative_prompt)
        record.extra_files.append(record.out / "images")
        title = f"{record.inputs['model']}: {prompt}"
    # guidance is NaN (an empty CSV cell), not None, for a folder of images
    table = pd.DataFrame(rows, columns=DIVERSITY_COLUMNS).astype({"guidance": float})
    trend = None
    if images is None and len(results) > 1:
        trend = ms_ssim_trend(list(scales), [[r] for r in results], n_boot=n_boot, seed=seed)
    record.notes.sort()
    record.settings = {"protocol": protocol, "n": n, "steps": steps, "seed": seed,
                       "guidance": guidance, "max_pairs": max_pairs, "n_boot": n_boot,
                       "ms_ssim": results[0].provenance()}
    record.tables["diversity"] = table
    if trend is not None:
        record.tables["trends"] = pd.DataFrame([trend.row()], columns=TREND_COLUMNS)
    record.figures["diversity"] = diversity_figure(table, title, trend=trend)
    record.summary = {"ms_ssim": [
        {"guidance": None if np.isnan(r["guidance"]) else r["guidance"], "mean": r["mean"],
         "ci": [r["ci_low"], r["ci_high"]], "n_images": int(r["n_images"]),
         "n_pairs": int(r["n_pairs"])} for r in table.to_dict("records")]}
    if trend is not None:
        record.summary["ms_ssim_trend"] = trend.row()
    return record.write()


def _measure(pictures, protocol: str, seed: int, record: RunRecord,
             max_pairs: int | None = None, n_boot: int = 2000):
    """:func:`diversity` with its warnings collected as the record's notes (each once, not per
    scale; the small-image fallback is also in the result's settings)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        res = diversity(pictures, protocol=protocol, seed=seed, max_pairs=max_pairs,
                        n_boot=n_boot)
    for w in caught:
        record.note(str(w.message))
    return res
