"""``mame-eval explain``: attribution maps of a lesion classifier, scored against lesion masks.

For every image of every group, every method (Grad-CAM, saliency, occlusion) gives a map
(:mod:`mame_eval.xai.attribution`), upsampled (bilinear) from the classifier's input size to
the image's own size and scored against the image's lesion mask
(:mod:`mame_eval.xai.localization`). Typical use — do the classifier's explanations fall on
synthetic (inpainted) lesions the way they fall on real ones::

    explain(groups={"real": "prep/lesion", "inpainted": "runs/inpaint"}, cad="runs/cad",
            out="runs/explain")

**Groups and masks.** A group folder ``DIR`` is either a prepared lesion folder (it holds
``images/`` and ``masks/``: ``DIR/images`` are the images, ``DIR/masks`` the masks) or a folder
of images whose masks, if any, lie beside it in ``DIR/../masks``. A mask is the file with the
same name (any image suffix; 0/255 or boolean, > 0 = lesion) and the same size as its image.
``images_dir`` (``--images``) with ``masks_dir`` (``--masks``) is one more group, named
``name`` (default ``"images"``); without ``masks_dir`` its masks are found by the same rule.

**Images without a mask** (no mask file, or an all-zero mask) are still explained and get a
``lesion_score``, but their four localisation cells are left empty (``scored`` = false); they
are not counted in the summary's ``n_scored``. No score is ever NaN-valued in the files.

Outputs in ``out``:

* ``scores.csv`` — one row per image × method: ``image, group, method, lesion_score,
  pointing_game, relevance_mass, relevance_rank, energy_pointing, scored, mask``.
* ``summary.csv`` — one row per group × method: ``n_images``, ``n_scored`` and, for
  ``lesion_score`` and each localisation score, ``<score>_mean``, ``<score>_ci_low``,
  ``<score>_ci_high`` (the 0/1 pointing game: a proportion with an exact Clopper–Pearson
  interval, so 16/16 gives [0.794, 1]; the others: percentile bootstrap, ``n_boot``
  resamples, seeded; empty for n < 2). With the sanity check, beside them: the same scores of
  the fully randomised model ``<score>_randomized_mean``, ``sanity_rho`` (the group's mean
  Spearman ρ after full randomisation) and ``sanity_fails`` (the pooled verdict).
* ``comparison.csv`` (two or more groups) — per pair of groups × method × score:
  ``difference = mean_b − mean_a`` with a CI (pointing game: Newcombe's hybrid score interval
  for two proportions; others: bootstrap, groups resampled independently; ``ci_method``), the
  Mann–Whitney U of group b vs a and its two-sided p (``scipy.stats.mannwhitneyu``; 1.0 when
  all values are tied), and ``p_holm`` (Holm-adjusted over the whole table). The
  ``lesion_score`` does not depend on the method: it has one row per pair, method ``any``.
* ``sanity.csv`` / ``sanity_images.csv`` / ``sanity.png`` (unless ``sanity=False``) — the
  model-randomisation check of Adebayo et al. (2018), :mod:`mame_eval.xai.sanity`: on up to
  ``sanity_images`` images per group the classifier (a deep copy) is re-initialised from the
  lesion head downward, cumulatively; per group (and ``all``, pooled) × method × depth (0 =
  trained model): mean Spearman ρ and SSIM of the absolute maps against the trained model's,
  with CIs, and the localisation scores of that model; ``fails_check`` at full depth (mean
  ρ > 0.5). Per image in ``sanity_images.csv``; the similarity curve in ``sanity.png``.
* ``heatmaps.png`` / ``heatmaps.pdf`` — the paper's Fig. 18 layout: one row per image (up to
  ``heatmap_rows``, spread over the groups), columns: the image with its lesion box(es), then
  one overlay per method (its positive part, scaled to the 99.5th percentile for display),
  each titled with its relevance mass; a method that fails the sanity check is titled in red.
* ``provenance.json`` — versions, device, settings, input hashes, wall time; ``run.json``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from mame_eval.errors import DataError, InputError, ModelError
from mame_eval.images import IMAGE_SUFFIXES, image_files
from mame_eval.journeys.record import RunRecord
from mame_eval.models.loading import EMBEDDED_MAMMONET
from mame_eval.stats.bootstrap import bootstrap_difference_ci, bootstrap_mean_ci
from mame_eval.stats.proportions import proportion_ci, proportion_difference_ci
from mame_eval.xai.attribution import METHODS, attribute, default_occlusion_window
from mame_eval.xai.localization import localization_scores
from mame_eval.xai.sanity import RHO_THRESHOLD

__all__ = ["DEFAULT_CAD", "SCORE_COLUMNS", "default_cad", "explain", "render_summary",
           "resolve_group"]

#: The shipped MammoNet-tiny (DESIGN §5), the default ``--cad`` once it exists.
DEFAULT_CAD = EMBEDDED_MAMMONET  # the shipped MammoNet-tiny
LOCALIZATION = ("pointing_game", "relevance_mass", "relevance_rank", "energy_pointing")
SCORE_COLUMNS = ("image", "group", "method", "lesion_score", *LOCALIZATION, "scored", "mask")
_SUMMARISED = ("lesion_score", *LOCALIZATION)
#: 0/1 per image: summarised as a proportion with an exact (Clopper–Pearson) interval
BINARY_SCORES = ("pointing_game",)


def render_summary(record: RunRecord) -> str:
    """A short text table of an explain run's summary (mean relevance mass and pointing game
    per group and method, with n)."""
    lines = []
    for row in record.tables["summary"].itertuples(index=False):
        mass = "n/a" if pd.isna(row.relevance_mass_mean) else f"{row.relevance_mass_mean:.3f}"
        pg = "n/a" if pd.isna(row.pointing_game_mean) else f"{row.pointing_game_mean:.3f}"
        lines.append(f"{row.group:>12} {row.method:>9}: relevance mass {mass}, pointing "
                     f"game {pg} (n={row.n_scored} of {row.n_images})")
    for method, v in (record.summary.get("sanity") or {}).items():
        rho = "n/a" if v["rho_full"] is None else f"{v['rho_full']:.2f}"
        verdict = "FAILS" if v["fails"] else "passes"
        head = "n/a" if v.get("rho_head") is None else f"{v['rho_head']:.2f}"
        lines.append(f"sanity {method:>9}: Spearman rho after full randomisation {rho} "
                     f"(head only: {head}; n={v['n_images']}): {verdict} the "
                     f"model-randomisation check (threshold {v['threshold']})")
    lines.append(f"outputs in {record.out}: " + ", ".join(p.name for p in record.files))
    return "\n".join(lines)


def resolve_group(path: Path | str, masks: Path | str | None = None
                  ) -> tuple[Path, Path | None]:
    """``(images_dir, masks_dir or None)`` of a group folder (see the module docstring)."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path}: no such folder of images")
    if masks is not None:
        masks = Path(masks)
        if not masks.is_dir():
            raise DataError(f"{masks}: no such folder of masks")
        images = path / "images" if (path / "images").is_dir() and not image_files(path) \
            else path
        return images, masks
    if (path / "images").is_dir():
        beside = path / "masks"
        return path / "images", beside if beside.is_dir() else None
    beside = path.resolve().parent / "masks"
    return path, beside if beside.is_dir() and beside != path.resolve() else None


def _mask_for(image: Path, masks_dir: Path | None) -> Path | None:
    if masks_dir is None:
        return None
    exact = masks_dir / image.name
    if exact.is_file():
        return exact
    for suffix in IMAGE_SUFFIXES:
        candidate = masks_dir / f"{image.stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _read_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    from mame_eval.cad.data import read_gray

    mask = read_gray(path) > 0
    if mask.shape != shape:
        raise DataError(f"{path}: mask is {mask.shape[1]}×{mask.shape[0]} but its image is "
                        f"{shape[1]}×{shape[0]} pixels")
    return mask


def _upsample(maps: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``(h, w)`` map → ``shape`` (bilinear), float64."""
    if maps.shape == shape:
        return maps.astype(np.float64)
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32))[None, None]
    return F.interpolate(t, size=shape, mode="bilinear", align_corners=False)[0, 0].double() \
        .numpy()


def _summarise(scores: pd.DataFrame, groups: list[str], methods: list[str], n_boot: int,
               level: float, seed: int) -> pd.DataFrame:
    rows = []
    for gi, group in enumerate(groups):
        for mi, method in enumerate(methods):
            sub = scores[(scores.group == group) & (scores.method == method)]
            row: dict = {"group": group, "method": method, "n_images": len(sub),
                         "n_scored": int(sub.scored.sum())}
            for si, name in enumerate(_SUMMARISED):
                values = sub[name].dropna().to_numpy(dtype=float)
                # lesion_score does not depend on the method: same resamples for every method
                rng = np.random.default_rng([seed, gi, 0 if si == 0 else mi, si])
                row[f"{name}_mean"] = float(values.mean()) if len(values) else None
                row[f"{name}_ci_low"], row[f"{name}_ci_high"] = _mean_ci(
                    name, values, n_boot, level, rng)
            rows.append(row)
    return pd.DataFrame(rows)


def _mean_ci(name: str, values: np.ndarray, n_boot: int, level: float,
             rng: np.random.Generator) -> tuple[float | None, float | None]:
    """CI of the mean of one score: exact Clopper–Pearson for the 0/1 pointing game (a
    bootstrap of 16 hits in 16 collapses to [1, 1]; the exact interval is [0.794, 1]), the
    percentile bootstrap for the continuous scores (None for n < 2)."""
    if name in BINARY_SCORES:
        if len(values) == 0:
            return None, None
        return proportion_ci(int(round(values.sum())), len(values), level)
    return bootstrap_mean_ci(values, n_boot, level, rng)


def _holm(p: np.ndarray) -> np.ndarray:
    order = np.argsort(p)
    m = len(p)
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def _compare(scores: pd.DataFrame, groups: list[str], methods: list[str], n_boot: int,
             level: float, seed: int) -> pd.DataFrame:
    from scipy.stats import mannwhitneyu

    rows = []
    for ai in range(len(groups)):
        for bi in range(ai + 1, len(groups)):
            a_name, b_name = groups[ai], groups[bi]
            for mi, method in enumerate(methods):
                for si, name in enumerate(_SUMMARISED):
                    if si == 0 and mi > 0:
                        continue  # lesion_score: one row per pair (method "any")
                    sel = scores.method == method
                    a = scores[sel & (scores.group == a_name)][name].dropna().to_numpy(float)
                    b = scores[sel & (scores.group == b_name)][name].dropna().to_numpy(float)
                    if len(a) == 0 or len(b) == 0:
                        continue
                    row = {"group_a": a_name, "group_b": b_name,
                           "method": "any" if si == 0 else method,
                           "score": name, "n_a": len(a), "n_b": len(b),
                           "mean_a": float(a.mean()), "mean_b": float(b.mean()),
                           "difference": float(b.mean() - a.mean()),
                           "ci_low": None, "ci_high": None, "ci_method": "bootstrap percentile",
                           "mannwhitney_u": None, "p_value": None}
                    if name in BINARY_SCORES:
                        row["ci_method"] = "Newcombe hybrid score (Wilson)"
                        row["ci_low"], row["ci_high"] = proportion_difference_ci(
                            int(round(a.sum())), len(a), int(round(b.sum())), len(b), level)
                    else:
                        row["ci_low"], row["ci_high"] = bootstrap_difference_ci(
                            a, b, n_boot, level, np.random.default_rng([seed, ai, bi, mi, si]))
                    if np.all(np.concatenate([a, b]) == a[0]):
                        row["mannwhitney_u"], row["p_value"] = len(a) * len(b) / 2, 1.0
                    else:
                        res = mannwhitneyu(b, a, alternative="two-sided")
                        row["mannwhitney_u"], row["p_value"] = float(res.statistic), \
                            float(res.pvalue)
                    rows.append(row)
    frame = pd.DataFrame(rows)
    if len(frame):
        frame["p_holm"] = _holm(frame["p_value"].to_numpy(float))
    return frame


def _boxes(mask: np.ndarray) -> list[tuple[float, float, float, float]]:
    from scipy import ndimage

    labels, _ = ndimage.label(mask)
    return [(s[1].start - 0.5, s[0].start - 0.5, s[1].stop - 0.5, s[0].stop - 0.5)
            for s in ndimage.find_objects(labels) if s is not None]


def _parse_groups(images_dir, masks_dir, groups, name: str) -> dict[str, tuple[Path, Path | None]]:
    resolved: dict[str, tuple[Path, Path | None]] = {}
    if images_dir is not None:
        resolved[name] = resolve_group(images_dir, masks_dir)
    elif masks_dir is not None:
        raise InputError("--masks needs --images")
    for group, spec in (groups or {}).items():
        if not group or "," in group:
            raise InputError(f"group name {group!r}: expected a non-empty name without commas")
        if group in resolved:
            raise InputError(f"group {group!r} given twice")
        if isinstance(spec, (tuple, list)):
            path, masks = (spec[0], spec[1]) if len(spec) == 2 else (spec[0], None)
        else:
            path, masks = spec, None
        resolved[group] = resolve_group(path, masks)
    if not resolved:
        raise InputError("nothing to explain: give --images DIR or at least one --group NAME=DIR")
    return resolved


SANITY_IMAGE_COLUMNS = ("image", "group", "method", "depth", "layer", "spearman", "ssim",
                        *LOCALIZATION)


def _lesion_diameters(mask: np.ndarray, scale: float) -> list[float]:
    """Equivalent diameters ``2 sqrt(area / pi)`` of the mask's lesions, times ``scale``."""
    from scipy import ndimage

    labels, n = ndimage.label(mask, structure=np.ones((3, 3), int))
    areas = np.bincount(labels.ravel())[1:]
    return [float(2 * math.sqrt(a / math.pi) * scale) for a in areas if a > 0][:n]


def _attribute_method(classifier, x, *, method: str, options: dict) -> np.ndarray:
    return attribute(classifier, x, method, **options)


def _sanity(classifier, items: list[dict], groups: list[str], methods: list[str],
            options: dict, batch_size: int, level: float, n_boot: int, seed: int,
            tolerance: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The cascading model-randomisation check on ``items`` (dicts with ``group``, ``image``,
    ``x`` (1, C, S, S), ``mask`` (H, W) or None, ``shape``): per-image rows and the summary
    table (see :func:`_sanity_table`)."""
    import torch

    from mame_eval.xai.sanity import map_similarity, randomization_maps

    if not items:
        return (pd.DataFrame(columns=list(SANITY_IMAGE_COLUMNS)),
                _sanity_table(pd.DataFrame(columns=list(SANITY_IMAGE_COLUMNS)), groups,
                              methods, level, n_boot, seed))
    x = torch.cat([it["x"] for it in items])
    functions = {m: functools.partial(_attribute_method, method=m, options=options[m])
                 for m in methods}
    rows: list[dict] = []
    original: dict[str, np.ndarray] = {}
    n = len(items)
    for depth, label, maps in randomization_maps(classifier, x, functions, seed, batch_size):
        if depth == 0:
            original = maps
            sim = {m: {"spearman": np.ones(n),
                       "ssim": np.ones(n) if min(x.shape[-2:]) >= 11 else None}
                   for m in methods}
        else:
            sim = {m: map_similarity(original[m], maps[m]) for m in methods}
        for m in methods:
            for i, it in enumerate(items):
                ssim = sim[m]["ssim"]
                rec = {"image": it["image"], "group": it["group"], "method": m,
                       "depth": depth, "layer": label,
                       "spearman": float(sim[m]["spearman"][i]),
                       "ssim": None if ssim is None else float(ssim[i])}
                if it["mask"] is not None:
                    rec.update(localization_scores(_upsample(maps[m][i], it["shape"]),
                                                   it["mask"], tolerance=tolerance))
                else:
                    rec.update(dict.fromkeys(LOCALIZATION))
                rows.append(rec)
    per_image = pd.DataFrame(rows, columns=list(SANITY_IMAGE_COLUMNS))
    return per_image, _sanity_table(per_image, groups, methods, level, n_boot, seed)


def _sanity_table(per_image: pd.DataFrame, groups: list[str], methods: list[str],
                  level: float, n_boot: int, seed: int) -> pd.DataFrame:
    """One row per group (and ``"all"``, pooled) × method × randomisation depth: mean
    Spearman ρ and SSIM with bootstrap CIs, the localisation scores of that model with their
    CIs (pointing game: exact), and at full depth ``fails_check``."""
    rows = []
    full = int(per_image["depth"].max()) if len(per_image) else 0
    for gi, group in enumerate([*groups, "all"]):
        sel_g = per_image if group == "all" else per_image[per_image.group == group]
        for mi, method in enumerate(methods):
            sub_m = sel_g[sel_g.method == method]
            for depth in sorted(sub_m["depth"].unique()):
                sub = sub_m[sub_m.depth == depth]
                row: dict = {"group": group, "method": method, "depth": int(depth),
                             "layer": str(sub["layer"].iloc[0]), "n_images": len(sub),
                             "n_scored": int(sub["pointing_game"].notna().sum())}
                for si, name in enumerate(("spearman", "ssim", *LOCALIZATION)):
                    values = sub[name].dropna().to_numpy(dtype=float)
                    rng = np.random.default_rng([seed, 7, gi, mi, int(depth), si])
                    row[f"{name}_mean"] = float(values.mean()) if len(values) else None
                    row[f"{name}_ci_low"], row[f"{name}_ci_high"] = _mean_ci(
                        name, values, n_boot, level, rng)
                row["fails_check"] = (bool(row["spearman_mean"] > RHO_THRESHOLD)
                                      if depth == full and full > 0
                                      and row["spearman_mean"] is not None else None)
                rows.append(row)
    columns = ["group", "method", "depth", "layer", "n_images", "n_scored"]
    columns += [f"{n}_{s}" for n in ("spearman", "ssim", *LOCALIZATION)
                for s in ("mean", "ci_low", "ci_high")]
    return pd.DataFrame(rows, columns=[*columns, "fails_check"])


def _verdicts(table: pd.DataFrame, methods: list[str]) -> dict[str, dict]:
    """Per method, pooled over groups: mean ρ and SSIM after full randomisation, the
    randomised model's pointing game and relevance mass, and whether it fails the check;
    also ρ after randomising the lesion head alone (depth 1) and ``head_insensitive`` (that ρ
    above the same threshold: the map hardly depends on what the lesion head learned —
    reported, not a failure)."""
    out: dict[str, dict] = {}
    pooled = table[(table.group == "all") & table.fails_check.notna()]
    head = table[(table.group == "all") & (table.depth == 1)].set_index("method")
    for m in methods:
        row = pooled[pooled.method == m]
        if row.empty:
            continue
        r = row.iloc[0]
        rho_head = head["spearman_mean"].get(m)
        rho_head = None if rho_head is None or pd.isna(rho_head) else float(rho_head)
        num = {k: None if pd.isna(r[k]) else float(r[k])
               for k in ("spearman_mean", "ssim_mean", "pointing_game_mean",
                         "relevance_mass_mean")}
        out[m] = {"rho_full": num["spearman_mean"], "ssim_full": num["ssim_mean"],
                  "pointing_game_randomized": num["pointing_game_mean"],
                  "relevance_mass_randomized": num["relevance_mass_mean"],
                  "n_images": int(r["n_images"]), "fails": bool(r["fails_check"]),
                  "threshold": RHO_THRESHOLD, "rho_head": rho_head,
                  "head_insensitive": rho_head is not None and rho_head > RHO_THRESHOLD}
    return out


def _with_randomized(summary: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """``summary`` with, beside each score, the same score of the fully randomised model
    (``<score>_randomized_mean``), the group's mean ρ after full randomisation
    (``sanity_rho``) and the pooled verdict (``sanity_fails``)."""
    summary = summary.copy()
    full = table[table.fails_check.notna()]
    pooled = full[full.group == "all"].set_index("method")
    per_group = full.set_index(["group", "method"])
    for name in LOCALIZATION:
        summary[f"{name}_randomized_mean"] = [
            per_group[f"{name}_mean"].get((g, m)) for g, m in zip(summary.group, summary.method,
                                                                   strict=True)]
    summary["sanity_rho"] = [per_group["spearman_mean"].get((g, m))
                             for g, m in zip(summary.group, summary.method, strict=True)]
    summary["sanity_fails"] = [pooled["fails_check"].get(m) for m in summary.method]
    return summary


def default_cad() -> Path:
    """The shipped MammoNet-tiny folder; :class:`ModelError` when it is not installed."""
    if not (DEFAULT_CAD / "config.json").is_file():
        raise ModelError(
            f"no --cad given and the shipped MammoNet-tiny ({DEFAULT_CAD}) is not installed; "
            "pass --cad with a MammoNet folder (mame-eval train cad) or a TorchScript file")
    return DEFAULT_CAD


def _load_cad(cad, layer, lesion_index, channels, image_size, device):
    from mame_eval.cad.classifier import load_classifier

    if cad is None:
        cad = default_cad()
    return load_classifier(cad, layer=layer, lesion_index=lesion_index, channels=channels,
                           image_size=image_size, device=device)


def _cad_inputs(cad, classifier) -> dict:
    from mame_eval.provenance import digest_files

    info = {"source": classifier.source, "kind": classifier.kind,
            "layer": classifier.layer_name or getattr(classifier.model, "gradcam_layer_name", None),
            "image_size": classifier.image_size, "channels": classifier.channels}
    if isinstance(cad, (str, Path)) or cad is None:
        path = Path(cad) if cad is not None else DEFAULT_CAD
        files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
        files = [p for p in files if p.name in ("config.json", "model.safetensors")] \
            if path.is_dir() else files
        info.update(digest_files(files))
    return info


def explain(images_dir: Path | str | None = None, masks_dir: Path | str | None = None, *,
            groups: Mapping[str, object] | None = None, cad=None,
            methods: Sequence[str] = METHODS, out: Path | str, name: str = "images",
            layer: str | None = None, lesion_index: int | None = None,
            channels: int | None = None, image_size: int | None = None,
            batch_size: int = 8, occlusion_window: int | None = None,
            occlusion_stride: int | None = None, occlusion_baseline: float = 0.0,
            perturbations_per_eval: int = 32, noise_tunnel=None, tolerance: float = 0.0,
            max_images: int | None = None, heatmap_rows: int = 6, level: float = 0.95,
            n_boot: int = 2000, seed: int = 0, device: str = "cpu", sanity: bool = True,
            sanity_images: int = 8,
            progress: Callable[[int, int], None] | None = None) -> RunRecord:
    """Explain and score a lesion classifier on one or more groups of images.

    Args:
        images_dir: a folder of images (or a prepared lesion folder): the group ``name``.
        masks_dir: its masks (default: found as described in the module docstring).
        groups: ``{name: DIR}`` or ``{name: (images_dir, masks_dir)}``, more groups to compare.
        cad: a MammoNet folder, TorchScript file, ``nn.Module`` or ``Classifier``; default the
            shipped MammoNet-tiny (:data:`DEFAULT_CAD`).
        methods: any of ``"gradcam"``, ``"saliency"``, ``"occlusion"``.
        out: output folder (created).
        layer, lesion_index, channels, image_size: passed to
            :func:`~mame_eval.cad.classifier.load_classifier` (user models).
        batch_size: images per attribution batch.
        occlusion_window, occlusion_stride: in classifier-input pixels (default size/8 and
            half of it); occlusion_baseline: fill value in [0, 1];
            perturbations_per_eval: occluded copies per forward pass.
        noise_tunnel: SmoothGrad settings (see ``NoiseTunnelSettings``) for the gradient
            methods, Grad-CAM and saliency (occlusion is not gradient-based).
        tolerance: pointing-game tolerance in image pixels.
        max_images: at most this many images per group (the first in name order).
        heatmap_rows: rows of ``heatmaps.png`` (images spread over the groups).
        level, n_boot, seed: confidence level, bootstrap resamples and their seed.
        device: where the classifier runs.
        sanity: run the model-randomisation sanity check (Adebayo et al. 2018;
            :mod:`mame_eval.xai.sanity`) on up to ``sanity_images`` images per group (images
            with a lesion mask first): tables ``sanity`` and ``sanity_images``, figure
            ``sanity``, randomised-model columns in ``summary``.
        progress: called as ``progress(done, total)`` images.

    Returns:
        the written :class:`RunRecord`: tables ``scores``, ``summary`` and (two or more groups)
        ``comparison``; figure ``heatmaps``.

    Raises:
        InputError / DataError: bad arguments or folders; ModelError: the classifier.
    """
    from mame_eval.cad.data import read_gray
    from mame_eval.reports.heatmaps import heatmap_figure

    methods = list(dict.fromkeys(methods))
    unknown = [m for m in methods if m not in METHODS]
    if not methods or unknown:
        raise InputError(f"methods {', '.join(unknown) or '(none)'}: expected some of "
                         f"{', '.join(METHODS)}")
    if batch_size < 1:
        raise InputError(f"batch_size {batch_size}: expected >= 1")
    if heatmap_rows < 0 or n_boot < 100 or not 0 < level < 1:
        raise InputError("heatmap_rows >= 0, n_boot >= 100 and 0 < level < 1 are required")
    if max_images is not None and max_images < 1:
        raise InputError(f"max_images {max_images}: expected >= 1")
    if sanity and sanity_images < 2:
        raise InputError(f"sanity_images {sanity_images}: expected >= 2 (or sanity=False)")
    resolved = _parse_groups(images_dir, masks_dir, groups, name)
    listing: dict[str, list[Path]] = {}
    for group, (img_dir, _) in resolved.items():
        files = image_files(img_dir)
        if not files:
            raise DataError(f"{img_dir}: no images ({', '.join(IMAGE_SUFFIXES)}) for group "
                            f"{group!r}")
        listing[group] = files[:max_images] if max_images else files
    classifier = _load_cad(cad, layer, lesion_index, channels, image_size, device)
    classifier.eval()
    options = {
        "gradcam": {"noise_tunnel": noise_tunnel},
        "saliency": {"noise_tunnel": noise_tunnel},
        "occlusion": {"window": occlusion_window, "stride": occlusion_stride,
                      "baseline": occlusion_baseline,
                      "perturbations_per_eval": perturbations_per_eval},
    }
    record = RunRecord(kind="explain", out=Path(out), csv_float_format="%.6g")

    # Rows of the figure: round-robin over groups, images with masks first.
    per_group = math.ceil(heatmap_rows / len(resolved)) if heatmap_rows else 0
    chosen: dict[tuple[str, str], int] = {}
    picks = []
    for group, files in listing.items():
        masks_dir_g = resolved[group][1]
        with_mask = [f for f in files if _mask_for(f, masks_dir_g) is not None]
        ordered = with_mask + [f for f in files if f not in set(with_mask)]
        picks.append([(group, f.name) for f in ordered[:per_group]])
    for k in range(per_group):
        for group_picks in picks:
            if k < len(group_picks) and len(chosen) < heatmap_rows:
                chosen[group_picks[k]] = len(chosen)
    figure_rows: list[dict | None] = [None] * len(chosen)

    records = []
    # the sanity check's images: per group, the first sanity_images with a mask (else without)
    check: dict[str, dict[str, list]] = {g: {"masked": [], "plain": []} for g in listing}
    lesion_sides: list[float] = []  # equivalent diameters in classifier-input pixels
    total = sum(len(f) for f in listing.values())
    done = 0
    if progress:
        progress(0, total)
    for group, files in listing.items():
        masks_dir_g = resolved[group][1]
        for b in range(0, len(files), batch_size):
            batch = files[b:b + batch_size]
            grays = [read_gray(p) for p in batch]
            masks = []
            for p, g in zip(batch, grays, strict=True):
                mpath = _mask_for(p, masks_dir_g)
                mask = _read_mask(mpath, g.shape) if mpath is not None else None
                masks.append((mpath, mask if mask is not None and mask.any() else None))
            x = classifier.prepare(grays)
            lesion_scores = classifier.score(x).cpu().numpy()
            maps = {m: attribute(classifier, x, m, **options[m]) for m in methods}
            for i, path in enumerate(batch):
                mpath, mask = masks[i]
                if sanity:
                    pool = check[group]["masked" if mask is not None else "plain"]
                    if len(pool) < sanity_images:
                        pool.append({"group": group, "image": path.name, "x": x[i:i + 1],
                                     "mask": mask, "shape": grays[i].shape})
                if mask is not None:
                    lesion_sides += _lesion_diameters(mask, x.shape[-1] / grays[i].shape[1])
                fig_index = chosen.get((group, path.name))
                fig_row = None
                if fig_index is not None:
                    fig_row = {"group": group, "name": path.name, "image": grays[i],
                               "score": float(lesion_scores[i]), "maps": {}, "mass": {},
                               "boxes": _boxes(mask) if mask is not None else []}
                    figure_rows[fig_index] = fig_row
                for m in methods:
                    full = _upsample(maps[m][i], grays[i].shape)
                    rec = {"image": path.name, "group": group, "method": m,
                           "lesion_score": float(lesion_scores[i])}
                    if mask is not None:
                        rec.update(localization_scores(full, mask, tolerance=tolerance))
                        rec["scored"] = True
                    else:
                        rec.update(dict.fromkeys(LOCALIZATION))
                        rec["scored"] = False
                    rec["mask"] = mpath.name if mpath is not None else ""
                    records.append(rec)
                    if fig_row is not None:
                        fig_row["maps"][m] = full.astype(np.float32)
                        fig_row["mass"][m] = rec["relevance_mass"]
            done += len(batch)
            if progress:
                progress(done, total)

    scores = pd.DataFrame(records, columns=list(SCORE_COLUMNS))
    group_names = list(listing)
    summary = _summarise(scores, group_names, methods, n_boot, level, seed)
    verdicts: dict[str, dict] = {}
    if sanity:
        items = [it for g in group_names
                 for it in (check[g]["masked"] or check[g]["plain"])]
        try:
            per_image, table = _sanity(classifier, items, group_names, methods, options,
                                       batch_size, level, n_boot, seed, tolerance)
        except ModelError as exc:  # e.g. a user model that cannot be deep-copied
            record.note(f"sanity check skipped: {exc}")
            sanity = False
    if sanity:
        verdicts = _verdicts(table, methods)
        summary = _with_randomized(summary, table)
        record.tables["sanity"] = table
        record.tables["sanity_images"] = per_image
        from mame_eval.reports.heatmaps import sanity_figure

        record.figures["sanity"] = sanity_figure(table, methods, RHO_THRESHOLD)
        for m, v in verdicts.items():
            if v["fails"]:
                record.note(
                    f"{m}: fails the model-randomisation check (mean Spearman rho "
                    f"{v['rho_full']:.2f} > {RHO_THRESHOLD} between its maps of the trained "
                    "and the fully randomised model): its localisation scores reflect the "
                    "image more than the model")
            elif v["head_insensitive"]:
                record.note(
                    f"{m}: its maps barely change when only the lesion head is randomised "
                    f"(mean Spearman rho {v['rho_head']:.2f} > {RHO_THRESHOLD}): they show "
                    "what the trained features respond to (e.g. the bright lesion) more than "
                    "the lesion decision; compare its scores with the randomised model's in "
                    "sanity.csv")
        for row in figure_rows:
            if row is not None:
                row["failed"] = {m: "fails model-randomisation check"
                                 for m, v in verdicts.items() if v["fails"]}
    if "occlusion" in methods and lesion_sides:
        win = occlusion_window or default_occlusion_window(classifier.image_size
                                                           or int(x.shape[-1]))[0]
        median = float(np.median(lesion_sides))
        if median < win:
            record.note(f"the occlusion window ({win} px) is larger than the median lesion "
                        f"({median:.1f} px across at the classifier's input size): pass "
                        "--occlusion-window no larger than the lesions")
    comparison = _compare(scores, group_names, methods, n_boot, level, seed) \
        if len(group_names) >= 2 else None
    record.tables["scores"] = scores
    record.tables["summary"] = summary
    if comparison is not None:
        record.tables["comparison"] = comparison
    if figure_rows:
        record.figures["heatmaps"] = heatmap_figure([r for r in figure_rows if r is not None],
                                                    methods)

    from mame_eval.provenance import describe_device, digest_files

    inputs = {}
    for group, (img_dir, m_dir) in resolved.items():
        entry = {"images_dir": str(img_dir), "images": digest_files(listing[group])}
        if m_dir is not None:
            mask_files = [p for p in (_mask_for(f, m_dir) for f in listing[group]) if p]
            entry.update(masks_dir=str(m_dir), masks=digest_files(mask_files))
        inputs[group] = entry
    size = classifier.image_size
    window = occlusion_window
    stride = occlusion_stride
    if size is not None and window is None:
        window, stride_default = default_occlusion_window(size)
        stride = stride if stride is not None else stride_default
    settings = {
        "methods": methods, "groups": {g: [str(p), str(m) if m else None]
                                       for g, (p, m) in resolved.items()},
        "batch_size": batch_size, "occlusion_window": window, "occlusion_stride": stride,
        "occlusion_baseline": occlusion_baseline, "perturbations_per_eval":
            perturbations_per_eval, "noise_tunnel": noise_tunnel if noise_tunnel is None
            else dict(noise_tunnel) if isinstance(noise_tunnel, Mapping) else vars(noise_tunnel),
        "tolerance": tolerance, "max_images": max_images, "level": level, "n_boot": n_boot,
        "seed": seed, "map_upsampling": "bilinear to the image size",
        "ci": "pointing game (0/1 per image): exact Clopper-Pearson, group differences "
              "Newcombe hybrid score; other scores: percentile bootstrap of the mean",
        "sanity": {"enabled": sanity, "images_per_group": sanity_images,
                   "test": "cascading model randomisation, top (lesion head) down "
                           "(Adebayo et al. 2018)",
                   "similarity": "Spearman rho of |map|; SSIM of min-max normalised |map|",
                   "fails_if": f"mean Spearman rho after full randomisation > {RHO_THRESHOLD}"},
    }
    record.settings = settings
    record.inputs = {"groups": inputs, "cad": _cad_inputs(cad, classifier)}
    record.device = describe_device(classifier.device)
    record.summary = {"groups": group_names, "methods": methods,
                      "n_images": {g: len(f) for g, f in listing.items()}}
    if verdicts:
        record.summary["sanity"] = verdicts
    return record.write(dpi=130)
