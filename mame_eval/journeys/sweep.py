"""``mame-eval sweep generation/NAME.toml``: generation assessed across guidance scales.

For each guidance scale of the sweep definition, images of every prompt are generated into a
resumable run (``OUT/images/g<scale>/p<k>/``) and measured:

* **diversity** — mean MS-SSIM among the images of one prompt
  (:mod:`mame_eval.metrics.diversity`), per prompt
  (``diversity.csv``) and averaged over prompts (``sweep.csv``) with a bootstrap CI that
  resamples the noise seeds, which the prompts share, jointly;
  optionally the same statistic among real images of the same attributes (``real_baseline``);
* **FID / KID** — all images of a scale against a real reference folder
  (:mod:`mame_eval.metrics.distribution`),
  features cached by content hash in ``OUT/cache`` so the reference is extracted once;
* **prompt fidelity** — requested vs measured attributes (:mod:`mame_eval.metrics.fidelity`):
  area by the breast
  mask of ``prepare``, view/density/vendor by a MammoNet's heads; attributes a vendor was never
  trained with are reported apart as concept extrapolation;
* **memorisation** (optional, ``[memorization]``) — the copy rate of each scale's images
  against the model's training set with its exact CI (:mod:`mame_eval.journeys.memorization`:
  the reference — training index and calibrated threshold — is built once);
* **trends across guidance** — every scale starts image i from seed S+i, so the scales are
  paired by seed: the change of MS-SSIM, mean adherence and copy rate from the first to the
  last scale, and their slopes, get a paired bootstrap CI over the seeds
  (:mod:`mame_eval.stats.trend`; ``trends.csv``, the figure's title, the summary). FID has no
  trend interval yet: resampling images with replacement inflates FID (duplicates), so its
  paired bootstrap would not be valid; a subsampling interval is the FID module's to give.

Outputs: ``sweep.csv`` (one row per scale), ``diversity.csv``, ``fidelity.csv``,
``records.csv`` (one row per image), ``trends.csv``, ``tradeoff.png``/``.pdf``,
``provenance.json`` and ``run.json``. A rerun
generates only missing images and recomputes the tables.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from mame_eval.errors import ConfigError, InputError
from mame_eval.io import read_jsonl
from mame_eval.journeys.record import RunRecord
from mame_eval.metrics.diversity import PROTOCOLS, DiversityResult, diversity, mean_over_sets
from mame_eval.prompts import parse
from mame_eval.provenance import describe_input
from mame_eval.stats.trend import TREND_COLUMNS

#: What the paper's fusion model was taught (DESIGN §1): area only on Hologic images, density
#: only on Siemens, view on both. The default reference for concept extrapolation.
PAPER_FUSION_TRAINING = frozenset({("hologic", "view"), ("hologic", "area"),
                                   ("siemens", "view"), ("siemens", "density")})


class FidSettings(BaseModel):
    """``[fid]``: FID/KID of each scale's images against ``real``."""

    model_config = ConfigDict(extra="forbid")

    real: Path = Field(description="Folder of real reference images (e.g. prepared/healthy).")
    features: str = Field("mammonet", description="inception, mammonet, a MammoNet folder or a "
                          "TorchScript .pt (see `mame-eval fid --help`).")
    inception_weights: Path | None = None
    kid_subset_size: int | None = Field(None, ge=2, description="Images per KID subset, "
                                       "smaller than both sets; default min(1000, N/2).")
    n_boot: int = Field(50, ge=2, description="Subsampling replicates of the FID and PRDC "
                        "intervals (see `mame-eval fid --help`).")


class FidelitySettings(BaseModel):
    """``[fidelity]``: requested vs measured attributes."""

    model_config = ConfigDict(extra="forbid")

    classifier: str = Field("embedded", description="MammoNet folder for view/density/vendor; "
                            "'embedded' = MammoNet-tiny; 'none' = measure area only.")
    training_prompts: Path | None = Field(
        None, description="metadata.jsonl of the model's training set: which (vendor, "
        "attribute) pairs it saw. Default: the paper's fusion pairing.")


class MemorizationSettings(BaseModel):
    """``[memorization]``: the copy rate of each scale's images against the model's training
    set (``mame-eval memorization``'s audit; images must be prepared at the generated size)."""

    model_config = ConfigDict(extra="forbid")

    train: Path = Field(description="Folder of the model's training images.")
    holdout: Path | None = Field(None, description="Real images the model never saw: the "
                                 "null that calibrates the threshold (default: leave-one-out "
                                 "of the training images).")
    features: str = Field("mammonet", description="Candidate feature space, as for FID.")
    inception_weights: Path | None = None
    alpha: float = Field(0.01, gt=0, lt=1, description="False-flag rate of the threshold.")
    max_null: int = Field(1000, ge=1)
    k: int = Field(5, ge=1)
    max_shift: int = Field(4, ge=0)
    mirror: bool = True
    compare_size: int = Field(256, ge=16)
    thumbnail: int = Field(32, ge=4)
    batch_size: int = Field(8, ge=1)

    def match(self):
        from mame_eval.metrics.memorization import MatchSettings

        return MatchSettings(k=self.k, max_shift=self.max_shift, mirror=self.mirror,
                             compare_size=self.compare_size, thumbnail=self.thumbnail,
                             batch_size=self.batch_size)


class SweepConfig(BaseModel):
    """A sweep definition (``generation/NAME.toml``); unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    model: str | None = Field(None, description="Hub id or local folder; default: the "
                              "embedded MAM-E-tiny.")
    out: Path
    prompts: list[str] = Field(min_length=1)
    guidance: list[float] | str = "4:14"
    n: int = Field(20, ge=2, description="Images per prompt and scale (paper protocol: pairs).")
    steps: int = Field(24, ge=1)
    scheduler: str = "dpm++"
    negative_prompt: str = ""
    seed: int = 0
    batch_size: int = Field(4, ge=1)
    height: int | None = None
    width: int | None = None
    device: str | None = None
    dtype: str | None = None
    diversity: bool = True
    protocol: str = "all-pairs"
    real_baseline: Path | None = Field(
        None, description="Prepared healthy folder: also measure MS-SSIM among n real images "
        "with each prompt's attributes.")
    fid: FidSettings | None = None
    fidelity: FidelitySettings | None = Field(default_factory=FidelitySettings)
    memorization: MemorizationSettings | None = None
    max_pairs: int | None = Field(None, ge=1, description="all-pairs: at most this many "
                                  "random pairs per prompt and scale (seeded).")
    n_boot: int = Field(2000, ge=10, description="Bootstrap replicates of the MS-SSIM CIs and "
                        "the trends.")

    @field_validator("prompts")
    @classmethod
    def _prompts_parse(cls, value: list[str]) -> list[str]:
        for prompt in value:
            parse(prompt)  # PromptError (a ValueError) names the bad word
        return value

    @field_validator("protocol")
    @classmethod
    def _protocol(cls, value: str) -> str:
        if value not in PROTOCOLS:
            raise ValueError(f"expected one of {', '.join(PROTOCOLS)}")
        return value

    def scales(self) -> list[float]:
        from mame_eval.journeys.diversity import parse_guidance

        if isinstance(self.guidance, str):
            return parse_guidance(self.guidance)
        if not self.guidance or any(g < 0 for g in self.guidance):
            raise InputError(f"guidance {self.guidance}: expected non-negative scales")
        return [float(g) for g in self.guidance]


def load_sweep_config(path: Path | str, overrides: list[str] | tuple[str, ...] = ()
                      ) -> SweepConfig:
    """Read and validate a sweep TOML; ``key=value`` overrides (``fid.real=DIR`` for tables)."""
    from mame_eval.config import load_config

    config = load_config(SweepConfig, path, overrides, what="sweep definition")
    try:
        config.scales()
    except InputError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return config


# --------------------------------------------------------------------------- real baseline


def real_images_like(prepared: Path, prompt: str, n: int, seed: int = 0) -> list[Path]:
    """Up to ``n`` prepared real images (seeded sample) whose labels match every attribute the
    prompt names (vendor, view, density, area), read from ``prepared/metadata.jsonl``."""
    from mame_eval.metrics.fidelity import requested_attributes

    meta = Path(prepared) / "metadata.jsonl"
    if not meta.is_file():
        raise InputError(f"real_baseline {prepared}: no metadata.jsonl (expected a prepared "
                         "healthy folder)")
    wanted = requested_attributes(prompt)
    rows = [r for r in read_jsonl(meta)
            if all(str(r.get(k)) == v for k, v in wanted.items())]
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(rows), size=min(n, len(rows)), replace=False).tolist()) \
        if rows else []
    return [Path(prepared) / rows[i]["file_name"] for i in chosen]


# --------------------------------------------------------------------------- the sweep


def _training_pairs(settings: FidelitySettings, prompts: list[str]):
    from mame_eval.metrics.fidelity import training_combinations

    if settings.training_prompts is not None:
        path = Path(settings.training_prompts)
        if not path.is_file():
            raise InputError(f"fidelity.training_prompts {path}: file not found")
        return training_combinations(r["prompt"] for r in read_jsonl(path) if "prompt" in r)
    if any(parse(p).vendor is not None for p in prompts):
        return set(PAPER_FUSION_TRAINING)
    return None  # single-vendor prompts: nothing to extrapolate to


def _classifier(settings: FidelitySettings, device: str):
    if settings.classifier == "none":
        return None
    from mame_eval.cad.model import MammoNet
    from mame_eval.models.loading import EMBEDDED_MAMMONET

    folder = EMBEDDED_MAMMONET if settings.classifier == "embedded" else Path(settings.classifier)
    return MammoNet.from_pretrained(folder, device=device)


def run_sweep(config: SweepConfig, progress: Callable[[int, int], None] | None = None,
              pipe=None) -> RunRecord:
    """Generate (resumably) and measure every scale of ``config``; write the tables.

    ``pipe``: an already loaded pipeline of ``config.model`` (else loaded when needed).

    Returns:
        the written :class:`RunRecord`: tables ``sweep`` (one row per scale, also
        ``record.table``), ``diversity``, ``fidelity`` and ``records``; figure ``tradeoff``.
    """
    import warnings

    from mame_eval.generation import generate
    from mame_eval.images import load_rgb
    from mame_eval.metrics.features import extract_features, load_extractor
    from mame_eval.metrics.fidelity import adherence_table, fidelity_records
    from mame_eval.reports.diversity import tradeoff_figure

    record = RunRecord(kind="sweep", out=Path(config.out))
    out = record.out
    scales = config.scales()
    count = config.n if config.protocol == "all-pairs" else 2 * config.n
    from mame_eval.models.loading import default_device

    device = config.device or default_device()
    # Check every input before the first image is generated.
    extractor = real_files = None
    if config.fid is not None:
        from mame_eval.images import list_images

        try:
            real_files = list_images(config.fid.real)
        except InputError as exc:
            raise InputError(f"fid.real = {exc}") from None
        extractor = load_extractor(config.fid.features, config.fid.inception_weights,
                                   device=device)
    classifier = training = None
    if config.fidelity is not None:
        classifier = _classifier(config.fidelity, device)
        training = _training_pairs(config.fidelity, config.prompts)
    if config.real_baseline is not None and not Path(config.real_baseline).is_dir():
        raise InputError(f"real_baseline {config.real_baseline}: not a folder")
    if config.max_pairs is not None and config.protocol != "all-pairs":
        raise InputError("max_pairs applies to the all-pairs protocol only")
    reference = _memorization_reference(config, out, device)

    expected = _expected_fields(config, pipe)
    units = len(scales) * len(config.prompts)
    done = 0
    runs: dict[tuple[float, int], list[Path]] = {}
    for scale in scales:
        for k, prompt in enumerate(config.prompts):
            folder = out / "images" / f"g{scale:g}" / f"p{k}"
            finished = _finished(folder, count, prompt, scale, config, expected)
            if finished is None:
                if pipe is None:  # loaded once, and only when some image is missing
                    from mame_eval.models import load_pipeline

                    pipe = load_pipeline(config.model, task="txt2img", device=config.device,
                                         dtype=config.dtype, scheduler=config.scheduler)
                try:
                    finished = generate(
                        None, prompt, folder, n=count, guidance_scale=scale,
                        steps=config.steps, seed=config.seed,
                        negative_prompt=config.negative_prompt, batch_size=config.batch_size,
                        height=config.height, width=config.width, pipe=pipe).files[:count]
                except InputError as exc:  # a run of other settings: say it in sweep terms
                    raise InputError(str(exc).replace(
                        "use a new --out folder", f"give sweep {config.name!r} a new out "
                        "folder")) from None
            runs[(scale, k)] = finished
            done += 1
            if progress:
                progress(done, units + len(scales))

    notes: list[str] = []
    div_rows, fid_rows, sweep_rows, records = [], [], [], []
    div_sets: list[list[DiversityResult]] = []
    flags: list[np.ndarray] = []
    f_real = None
    syn_features: list[np.ndarray] = []  # per scale, for the paired FID trend
    syn_units: list[int] = []
    for scale in scales:
        row: dict = {"guidance": scale}
        pictures = {k: [load_rgb(f) for f in runs[(scale, k)]] for k in range(len(config.prompts))}
        row["n_images"] = sum(len(p) for p in pictures.values())
        if config.diversity:
            results: list[DiversityResult] = []
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", UserWarning)
                for k, prompt in enumerate(config.prompts):
                    res = diversity(pictures[k], protocol=config.protocol, seed=config.seed,
                                    max_pairs=config.max_pairs, n_boot=config.n_boot)
                    results.append(res)
                    div_rows.append({"guidance": scale, "prompt": prompt, "source": "synthetic",
                                     **res.row()})
            notes += [str(w.message) for w in caught]
            mean, lo, hi = mean_over_sets(results, seed=config.seed, n_boot=config.n_boot)
            row.update(ms_ssim=mean, ms_ssim_ci_low=lo, ms_ssim_ci_high=hi)
            div_sets.append(results)
        if config.fid is not None:
            from mame_eval.journeys.fid import distribution_row

            cache = out / "cache"
            if f_real is None:
                f_real = extract_features(real_files, extractor, cache_dir=cache)
            files = [f for k in range(len(config.prompts)) for f in runs[(scale, k)]]
            f_syn = extract_features(files, extractor, cache_dir=cache)
            # FID (plug-in), FID∞ with the interval for the true FID, KID, PRDC with CIs
            fid_row, fid_notes = distribution_row(f_real, f_syn, config.fid.kid_subset_size,
                                                  config.fid.n_boot, config.seed)
            notes += fid_notes
            row.update(fid_row)
            syn_features.append(f_syn)
            syn_units = [i for k in range(len(config.prompts))
                         for i in range(len(runs[(scale, k)]))]
        if config.fidelity is not None:
            images = [im for k in range(len(config.prompts)) for im in pictures[k]]
            prompts = [p for k, p in enumerate(config.prompts) for _ in pictures[k]]
            files = [str(f.relative_to(out)) for k in range(len(config.prompts))
                     for f in runs[(scale, k)]]
            rec = fidelity_records(images, prompts, model=classifier, files=files)
            rec.insert(0, "guidance", scale)
            # image i of every prompt and scale starts from seed S+i: the pairing of trends
            rec.insert(1, "seed_index", [i for k in range(len(config.prompts))
                                         for i in range(len(pictures[k]))])
            records.append(rec)
            table = adherence_table(rec, training)
            for item in table.to_dict("records"):
                fid_rows.append({"guidance": scale, **item})
                key = item["attribute"].replace("|", "_")
                row.update({f"{key}_adherence": item["accuracy"],
                            f"{key}_ci_low": item["ci_low"], f"{key}_ci_high": item["ci_high"]})
            plain = table[~table["attribute"].str.contains("|", regex=False)]
            if not plain.empty:
                row["mean_adherence"] = float(plain["accuracy"].mean())
        if reference is not None:
            scale_files = [f for k in range(len(config.prompts)) for f in runs[(scale, k)]]
            rate, flagged = _copy_rate(reference, scale_files)
            row.update(rate.row())
            flags.append(flagged.reshape(len(config.prompts), count))
        sweep_rows.append(row)
        done += 1
        if progress:
            progress(done, units + len(scales))

    if config.real_baseline is not None and config.diversity:
        for prompt in config.prompts:
            files = real_images_like(config.real_baseline, prompt, count, seed=config.seed)
            if len(files) < 2:
                notes.append(f"real baseline of {prompt!r}: {len(files)} matching real image(s) "
                             f"in {config.real_baseline}; need 2")
                continue
            pics = [load_rgb(f) for f in files]
            if config.protocol == "paper" and len(pics) % 2:
                pics = pics[:-1]
            res = diversity(pics, protocol=config.protocol, seed=config.seed)
            div_rows.append({"guidance": None, "prompt": prompt, "source": "real", **res.row()})

    table = pd.DataFrame(sweep_rows)
    div_table = pd.DataFrame(div_rows, columns=["guidance", "prompt", "source", "mean", "std",
                                                "ci_low", "ci_high", "n_images", "n_pairs"])
    fid_table = pd.DataFrame(fid_rows, columns=["guidance", "attribute", "n", "correct",
                                                "accuracy", "ci_low", "ci_high"])
    record.tables["sweep"] = table
    if config.diversity:
        record.tables["diversity"] = div_table
    if config.fidelity is not None:
        record.tables["fidelity"] = fid_table
        record.tables["records"] = pd.concat(records, ignore_index=True)
    trends = _trends(config, scales, div_sets, records, training, flags)
    fid_trend = _fid_trend(config, scales, table, f_real, syn_features, syn_units, notes)
    if fid_trend is not None:
        trends.append(fid_trend)
    if trends:
        record.tables["trends"] = pd.DataFrame([t.row() for t in trends],
                                               columns=TREND_COLUMNS)
    record.figures["tradeoff"] = tradeoff_figure(
        table, f"{config.name}: {config.model or 'embedded MAM-E-tiny'}", trends=trends)
    for note in sorted(set(notes)):
        record.note(note)
    record.device = str(pipe.device) if pipe is not None else str(device)
    record.settings = config.model_dump(mode="json")
    record.inputs = {
        "model": config.model or "embedded MAM-E-tiny",
        "fid_real": describe_input(config.fid.real, real_files) if config.fid else None,
        "fid_features": extractor.identity if extractor else None,
        "fidelity_classifier": (config.fidelity.classifier if config.fidelity else None),
        "extrapolation_reference": (sorted(map(list, training)) if training else None)}
    if reference is not None:
        record.inputs["memorization_train"] = reference.train.describe()
        record.inputs["memorization_null"] = reference.null_source
        record.inputs["memorization_features"] = reference.extractor.identity
        record.settings["memorization_threshold"] = reference.threshold
    record.extra_files.append(out / "images")
    record.summary = {"name": config.name, "guidance": [float(g) for g in scales],
                      "n_images_per_scale": int(count * len(config.prompts))}
    for trend in trends:
        record.summary[f"{trend.metric}_trend"] = trend.row()
    return record.write()


# --------------------------------------------------------------------------- memorisation


def _memorization_reference(config: SweepConfig, out: Path, device: str):
    """The training reference of ``[memorization]`` (index + calibrated threshold), built
    once for every scale; ``None`` without the table."""
    settings = config.memorization
    if settings is None:
        return None
    from mame_eval.journeys.memorization import build_reference

    try:
        return build_reference(settings.train, holdout=settings.holdout,
                               features=settings.features,
                               inception_weights=settings.inception_weights,
                               settings=settings.match(), alpha=settings.alpha,
                               max_null=settings.max_null, seed=config.seed,
                               cache_dir=out / "cache", device=device)
    except InputError as exc:
        raise InputError(f"memorization: {exc}") from None


def _copy_rate(reference, files: list[Path]):
    """(copy rate with its exact CI, per-image flags) of one scale's images."""
    from mame_eval.journeys.memorization import _filled
    from mame_eval.metrics.memorization import copy_rate

    try:
        scored = reference.score(files)
    except InputError as exc:
        raise InputError(f"memorization: {exc}") from None
    similarity = _filled(scored.scores.similarity)
    rate = copy_rate(similarity, reference.threshold, reference.alpha)
    return rate, reference.flags(similarity)


# --------------------------------------------------------------------------- trends


def _trends(config: SweepConfig, scales: list[float], div_sets, records, training,
            flags) -> list:
    """Paired trends across guidance (MS-SSIM, mean adherence, copy rate): one bootstrap
    draw of the seeds resamples every scale at once."""
    from mame_eval.metrics.diversity import ms_ssim_trend
    from mame_eval.stats.trend import paired_trend

    if len(scales) < 2:
        return []
    count = config.n if config.protocol == "all-pairs" else 2 * config.n
    rng = np.random.default_rng([config.seed, 13])
    seeds = rng.multinomial(count, np.full(count, 1.0 / count), size=config.n_boot)
    trends = []
    if div_sets:
        trends.append(ms_ssim_trend(scales, div_sets, n_boot=config.n_boot, seed=config.seed))
    if records:
        estimate, replicates = [], []
        for rec in records:
            est, reps = _adherence_replicates(rec, training, seeds)
            estimate.append(est)
            replicates.append(reps)
        trends.append(paired_trend("mean_adherence", scales, estimate,
                                   np.stack(replicates, 1), "seeds", count,
                                   label="mean prompt adherence"))
    if flags:
        estimate = [float(f.mean()) for f in flags]
        per_seed = np.stack([f.sum(0) for f in flags], 1)  # (seeds, scales) flagged counts
        replicates = seeds @ per_seed / (seeds.sum(1, keepdims=True) * flags[0].shape[0])
        trends.append(paired_trend("copy_rate", scales, estimate, replicates, "seeds", count,
                                   label="copy rate"))
    return [t for t in trends if t is not None]


def _fid_trend(config: SweepConfig, scales: list[float], table: pd.DataFrame, f_real,
               syn_features: list, units: list[int], notes: list[str]):
    """The change of FID∞ across guidance with a paired-subsampling interval (the scales share
    their seeds; half of the seeds and of the real images per replicate, without replacement,
    because duplicated points inflate FID). Skipped with a note where half a set holds fewer
    images than feature dimensions: there FID's bias is not linear in 1/N (see
    :func:`mame_eval.metrics.distribution.fid_interval`)."""
    from mame_eval.metrics.distribution import paired_subset_fids
    from mame_eval.stats.trend import subsample_trend

    if len(scales) < 2 or not syn_features or "fid_inf" not in table:
        return None
    d = syn_features[0].shape[1]
    half = min(len(f_real), len(syn_features[0])) // 2
    if half <= d:
        notes.append(f"FID trend across guidance not computed: half of a set holds {half} "
                     f"images, not more than the {d} feature dimensions")
        return None
    subsets = paired_subset_fids(f_real, syn_features, units, n_boot=config.fid.n_boot,
                                 fraction=0.5, seed=config.seed)
    return subsample_trend("fid_inf", scales, table["fid_inf"].to_numpy(float), subsets, 0.5,
                           "seeds", len(set(units)), label="FID∞")


def _adherence_replicates(records: pd.DataFrame, training, seeds: np.ndarray):
    """Mean adherence over the attributes asked (not extrapolated) of one scale, as measured
    and for each row of seed multiplicities ``seeds`` (n_boot, count): per attribute the share
    of correct images among the resampled seeds' images, then the mean over attributes."""
    from mame_eval.metrics.fidelity import ATTRIBUTES, novel_combination

    novel = novel_combination(records, training).to_numpy()
    index = records["seed_index"].to_numpy()
    estimate, reps = [], []
    for name in ATTRIBUTES:
        req, meas = f"requested_{name}", f"measured_{name}"
        if req not in records or meas not in records:
            continue
        asked = (records[req].notna() & records[meas].notna()).to_numpy() & ~novel
        if not asked.any():
            continue
        correct = asked & (records[req] == records[meas]).to_numpy()
        n_asked = np.bincount(index[asked], minlength=seeds.shape[1])
        n_correct = np.bincount(index[correct], minlength=seeds.shape[1])
        estimate.append(n_correct.sum() / n_asked.sum())
        with np.errstate(invalid="ignore", divide="ignore"):
            reps.append((seeds @ n_correct) / (seeds @ n_asked))
    if not estimate:
        return np.nan, np.full(len(seeds), np.nan)
    return float(np.mean(estimate)), np.mean(reps, axis=0)


def _expected_fields(config: SweepConfig, pipe=None) -> dict:
    """What the manifest rows of this sweep's images must record — model revision,
    scheduler, size, dtype, laterality — known without loading the model (read from its
    config files) so that a finished sweep can be re-measured without it."""
    from mame_eval.generation.generate import default_size, source_fields
    from mame_eval.models import default_model, model_revision, resolve_dtype, resolve_model
    from mame_eval.models.loading import default_device

    if pipe is not None:
        fields = source_fields(pipe)
        side_h, side_w = default_size(pipe)
        revision, scheduler, dtype = fields["revision"], fields["scheduler"], fields["dtype"]
    else:
        folder = resolve_model(config.model if config.model is not None else default_model())
        unet = json.loads((folder / "unet" / "config.json").read_text())
        vae = json.loads((folder / "vae" / "config.json").read_text())
        side_h = side_w = int(unet["sample_size"]) * 2 ** (len(vae["block_out_channels"]) - 1)
        revision, scheduler = model_revision(folder), config.scheduler
        device = config.device or default_device()
        dtype = str(resolve_dtype(config.dtype, device)).removeprefix("torch.")
    return {"revision": revision, "scheduler": scheduler, "dtype": dtype, "laterality": "L",
            "height": config.height or side_h, "width": config.width or side_w}


def _finished(folder: Path, count: int, prompt: str, scale: float, config: SweepConfig,
              expected: dict) -> list[Path] | None:
    """The files of a run that already holds ``count`` images made with these settings (a
    finished sweep reruns without loading the model); ``None`` when anything is to be done."""
    from mame_eval.generation import read_manifest

    rows = read_manifest(folder)
    if any(i not in rows for i in range(count)):
        return None
    wanted = {**expected, "prompt": prompt, "guidance_scale": scale, "steps": config.steps,
              "seed_base": config.seed, "negative_prompt": config.negative_prompt}
    same = all(rows[i].get(key) == value for i in range(count) for key, value in wanted.items())
    # Different settings: let generate() report the clash with its own clear error.
    return [folder / rows[i]["file"] for i in range(count)] if same else None
