"""The measuring commands as library functions: ``mame-eval diversity`` and ``mame-eval fid``.

Each writes a table (CSV), a figure (PNG + PDF) where there is one, and ``provenance.json``
(DESIGN §4 "Results"); generated images are kept as resumable generation runs under ``out``.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mame_eval.errors import InputError
from mame_eval.images import list_images, load_rgb
from mame_eval.io import atomic_path, write_json
from mame_eval.metrics.diversity import PROTOCOLS, diversity
from mame_eval.metrics.features import extract_features, load_extractor

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


def _save_figure(fig, stem: Path) -> list[Path]:
    paths = []
    for ext in ("png", "pdf"):
        path = stem.with_suffix(f".{ext}")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, dpi=150, bbox_inches="tight")
        paths.append(path)
    return paths


def plot_diversity(table: pd.DataFrame, stem: Path, title: str) -> list[Path]:
    """Mean MS-SSIM vs guidance with its bootstrap CI band (paper Table 3 as a curve)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.4))
    rows = table.dropna(subset=["guidance"]).sort_values("guidance")
    if len(rows):
        ax.plot(rows["guidance"], rows["mean"], "o-", color="C0", label="mean MS-SSIM")
        ax.fill_between(rows["guidance"], rows["ci_low"], rows["ci_high"], color="C0",
                        alpha=0.25, label="95 % bootstrap CI")
        ax.set_xlabel("guidance scale")
    else:  # a folder of images: one estimate, drawn as a point with its CI
        row = table.iloc[0]
        ax.errorbar([0], [row["mean"]], yerr=[[row["mean"] - row["ci_low"]],
                                             [row["ci_high"] - row["mean"]]],
                    fmt="o", color="C0", capsize=4, label="mean MS-SSIM, 95 % bootstrap CI")
        ax.set_xticks([0], [f"{int(row['n_images'])} images"])
        ax.set_xlim(-1, 1)
    ax.set_ylabel("MS-SSIM (lower = more diverse)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    paths = _save_figure(fig, stem)
    plt.close(fig)
    return paths


def plot_tradeoff(table: pd.DataFrame, stem: Path, title: str) -> list[Path]:
    """The fidelity–diversity trade-off of a sweep: per guidance scale, diversity (MS-SSIM),
    mean prompt adherence and FID where measured (left), and adherence against MS-SSIM with
    each point labelled by its scale (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = table.sort_values("guidance")
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    g = rows["guidance"]
    if "ms_ssim" in rows:
        left.plot(g, rows["ms_ssim"], "o-", color="C0", label="MS-SSIM (lower = more diverse)")
        left.fill_between(g, rows["ms_ssim_ci_low"], rows["ms_ssim_ci_high"], color="C0",
                          alpha=0.2)
    if "mean_adherence" in rows:
        left.plot(g, rows["mean_adherence"], "s-", color="C2", label="mean prompt adherence")
    left.set_xlabel("guidance scale")
    left.set_ylim(0, 1.02)
    left.grid(alpha=0.3)
    if "fid" in rows:
        twin = left.twinx()
        twin.plot(g, rows["fid"], "^--", color="C3", label="FID")
        twin.fill_between(g, rows["fid_ci_low"], rows["fid_ci_high"], color="C3", alpha=0.12)
        twin.set_ylabel("FID", color="C3")
        twin.legend(loc="lower right", fontsize=7)
    left.legend(loc="upper left", fontsize=7)
    if "ms_ssim" in rows and "mean_adherence" in rows:
        right.plot(rows["ms_ssim"], rows["mean_adherence"], "o-", color="C4")
        for x, y, label in zip(rows["ms_ssim"], rows["mean_adherence"], g, strict=True):
            right.annotate(f"{label:g}", (x, y), textcoords="offset points", xytext=(4, 4),
                           fontsize=7)
        right.set_xlabel("MS-SSIM (lower = more diverse)")
        right.set_ylabel("mean prompt adherence")
        right.grid(alpha=0.3)
    else:
        right.axis("off")
        right.text(0.5, 0.5, "trade-off needs diversity and fidelity", ha="center",
                   va="center", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    paths = _save_figure(fig, stem)
    plt.close(fig)
    return paths


@dataclass
class DiversityReport:
    table: pd.DataFrame
    files: list[Path]
    notes: list[str]


def diversity_run(out: Path, *, model: str | None = None, images: Path | None = None,
                  prompt: str | None = None, guidance: list[float] | None = None, n: int = 20,
                  steps: int = 24, protocol: str = "all-pairs", seed: int = 0,
                  negative_prompt: str = "", batch_size: int = 4, device: str | None = None,
                  pipe=None,
                  progress: Callable[[int, int], None] | None = None) -> DiversityReport:
    """Diversity of a model per guidance scale, or of a folder of images.

    With a model: for each guidance scale ``n`` images of ``prompt`` (``all-pairs``), or ``n``
    independent 2-image calls (``paper``: 2n images, seeds paired), generated into
    ``out/images/g<scale>/`` (resumable), then the MS-SSIM statistics of
    :func:`mame_eval.metrics.diversity.diversity`. With ``images``: one row, empty guidance.
    """
    from mame_eval.provenance import provenance

    start = time.perf_counter()
    if protocol not in PROTOCOLS:
        raise InputError(f"--protocol {protocol!r}: expected one of {', '.join(PROTOCOLS)}")
    if n < 2 and protocol == "all-pairs":
        raise InputError(f"--n {n}: all-pairs needs at least 2 images")
    if n < 1:
        raise InputError(f"--n {n}: expected at least 1")
    out = Path(out)
    rows, notes, inputs = [], [], {}
    results = []
    if images is not None:
        files = list_images(images)
        pictures = [load_rgb(f) for f in files]
        if protocol == "paper" and len(pictures) % 2:
            pictures = pictures[:-1]
        res = _measure(pictures, protocol, seed, notes)
        rows.append({"guidance": None, **res.row()})
        results.append(res)
        inputs["images"] = str(images)
    else:
        from mame_eval.generation import generate
        from mame_eval.models import load_pipeline

        prompt = prompt or DEFAULT_PROMPT
        scales = guidance or [4.0]
        if pipe is None:
            pipe = load_pipeline(model, task="txt2img", device=device)
        count = n if protocol == "all-pairs" else 2 * n
        for k, scale in enumerate(scales):
            run = generate(None, prompt, out / "images" / f"g{scale:g}", n=count,
                           guidance_scale=scale, steps=steps, seed=seed,
                           negative_prompt=negative_prompt, batch_size=batch_size, pipe=pipe)
            pictures = [load_rgb(f) for f in run.files]
            res = _measure(pictures, protocol, seed, notes)
            rows.append({"guidance": scale, **res.row()})
            results.append(res)
            if progress:
                progress(k + 1, len(scales))
        inputs.update(model=str(model or "embedded MAM-E-tiny"), prompt=prompt,
                      negative_prompt=negative_prompt)
    # guidance is NaN (an empty CSV cell), not None, for a folder of images
    table = pd.DataFrame(rows, columns=DIVERSITY_COLUMNS).astype({"guidance": float})
    out.mkdir(parents=True, exist_ok=True)
    csv = out / "diversity.csv"
    with atomic_path(csv) as tmp:
        table.to_csv(tmp, index=False)
    title = f"{inputs['model']}: {inputs['prompt']}" if images is None else str(images)
    files = [csv, *plot_diversity(table, out / "diversity", title)]
    notes = sorted(set(notes))  # each warning once, however many scales raised it
    write_json(out / "provenance.json", provenance(
        command="diversity", device=str(device or "auto"),
        settings={"protocol": protocol, "n": n, "steps": steps, "seed": seed,
                  "guidance": guidance, "ms_ssim": results[0].provenance()},
        inputs=inputs, wall_time_s=round(time.perf_counter() - start, 3), notes=notes))
    files.append(out / "provenance.json")
    return DiversityReport(table=table, files=files, notes=notes)


def _measure(pictures, protocol: str, seed: int, notes: list[str]):
    """:func:`diversity` with its warnings collected into ``notes`` (reported once, not per
    scale; the small-image fallback is also in the result's settings)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        res = diversity(pictures, protocol=protocol, seed=seed)
    notes += [str(w.message) for w in caught]
    return res


def fid_run(real: Path, synthetic: Path, features: str = "mammonet",
            inception_weights: Path | None = None, cache_dir: Path | None = None,
            kid_subset_size: int = 1000, n_boot: int = 200, seed: int = 0,
            device: str = "cpu") -> dict:
    """FID, KID and a bootstrap CI of FID between two folders of images."""
    from mame_eval.metrics.distribution import fid, fid_bootstrap_ci, kid

    extractor = load_extractor(features, inception_weights=inception_weights, device=device)
    real_files, syn_files = list_images(real), list_images(synthetic)
    f_real = extract_features(real_files, extractor, cache_dir=cache_dir)
    f_syn = extract_features(syn_files, extractor, cache_dir=cache_dir)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        value = fid(f_real, f_syn)
    kid_mean, kid_std = kid(f_real, f_syn, subset_size=kid_subset_size, seed=seed)
    lo, hi = fid_bootstrap_ci(f_real, f_syn, n_boot=n_boot, seed=seed)
    return {"fid": value, "kid": kid_mean, "kid_std": kid_std, "n_real": len(real_files),
            "n_synthetic": len(syn_files), "features": extractor.name, "fid_ci": [lo, hi],
            "resize": extractor.resize, "warnings": [str(w.message) for w in caught]}
