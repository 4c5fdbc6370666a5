"""``mame-eval augment CONFIG.toml --out DIR``: do MAM-E's synthetic lesions make a CAD
classifier better?

The experiment (one declarative TOML, validated before any work; an unknown key is an error):

* **Data** — a prepared dataset (``data_dir``: ``healthy/`` + ``lesion/``, DESIGN §4), or
  ``[phantoms]``: the study writes phantoms and prepares them into ``OUT/data/`` first.
* **Test set** — held-out **real** images, the same for every arm and seed: the rows of a split
  CSV marked ``test`` (VinDr-Mammo's official study-level split; the phantoms write one too), or
  a seeded share of the source images. Hashed (file names + contents) and recorded in
  ``provenance.json`` and in every row of ``augment.csv``; listed in ``test_set.csv``.
  Synthetic images never enter it: they are made from training-pool images only, and the study
  checks that no test file or source is among them.
* **Training pool** — the other real images (optionally capped: a lesion-scarce regime).
  ``real.fractions`` is the learning curve: each fraction keeps that share of the pool's
  *lesion* images (nested: the 25 % subset lies inside the 50 % one; drawn per seed) and all its
  healthy images.
* **Synthetic lesions** — made once per study and cached in ``OUT/synthetic/`` (a resumable
  generation run: ``images/``, ``masks/``, ``manifest.jsonl``): a training-pool healthy image, a
  random box inside the breast (:func:`mame_eval.generation.random_box_in_breast`), a lesion
  inpainted there (:func:`mame_eval.generation.inpaint_arrays`; the embedded
  MAM-E-tiny-inpaint by default, ``Likalto4/vindr_lesion-inpainting`` on VinDr). Labels: lesion,
  the source image's attributes, the box as the lesion mask.
* **Arms** (each at every real fraction and seed):

  - ``baseline`` — the real images;
  - ``synthetic`` — plus ``ratio × n_real_lesions`` synthetic lesion images, per ratio;
  - ``synthetic-only`` — the real healthy images and as many synthetic lesion images as the
    real lesions they replace (ratio 1), no real lesion;
  - ``classic`` — the real images with stronger classic augmentation (top–bottom flips,
    random gamma/gain), so that a gain from synthetic data is not just a gain from more
    augmentation.

  Every arm trains a new MammoNet for the same number of optimiser steps
  (:func:`mame_eval.cad.train.fit_mammonet`); the same seed gives the same initialisation in
  every arm (paired by seed).
* **Outputs** (``OUT/``): ``augment.csv`` (one row per arm × ratio × real fraction × seed:
  AUROC with DeLong CI, sensitivity at ``specificity`` with exact CI, training-set sizes, test
  and training-set hashes), ``comparison.csv`` (each arm against the baseline at the same real
  fraction: the mean over seeds of the paired AUROC differences, with a DeLong CI and p from the
  test cases — :func:`mame_eval.stats.compare.auc_contrast` — and a Student-t CI and p from the
  seeds; Holm-adjusted p), ``comparison_seeds.csv`` (the paired DeLong difference per seed),
  ``test_set.csv``, ``augment.png``/``.pdf``, ``provenance.json``, ``run.json``.

Resumable: each trained arm × ratio × fraction × seed leaves ``OUT/units/<key>.json`` (its test
scores); a rerun skips those and only trains what is missing (adding seeds, ratios or fractions
to the config adds units). ``OUT/study.json`` pins the settings that shape every unit (data,
test set, training, synthesis); a rerun with other ones is refused.

Scale: under ``accelerate launch`` (or any multi-process launch) the synthetic images and then
the units are split across processes with :class:`accelerate.PartialState` (each process trains
its share of arms, one after the other), and the main process merges the unit files into one
table. Relative paths in the config are relative to the current directory.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from mame_eval.cad.train import CadTrainConfig
from mame_eval.config import load_config
from mame_eval.errors import DataError, InputError
from mame_eval.generation.synthesize import BOX_FRACTION
from mame_eval.io import file_sha256, write_json
from mame_eval.journeys.record import RunRecord

__all__ = ["ARMS", "AugmentConfig", "Unit", "load_augment_config", "plan_units", "run_augment"]

#: The arms, in the order of every table and figure.
ARMS = ("baseline", "synthetic", "synthetic-only", "classic")
STUDY_FILE = "study.json"
UNITS = "units"
SYNTHETIC = "synthetic"

_CAD = CadTrainConfig.model_fields


def _default(name: str):
    return _CAD[name].default


# --------------------------------------------------------------------------- configuration


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PhantomData(_Strict):
    """``[phantoms]``: write a phantom dataset and prepare it into ``OUT/data/``."""

    n: int = Field(1000, ge=8, description="phantom images (studies of 4 views)")
    seed: int = Field(2, ge=0)
    size: str = Field("320x256", description="raw image size HEIGHTxWIDTH")
    lesion_fraction: float = Field(0.5, gt=0.0, lt=1.0)
    population: Literal["mixed", "hologic", "siemens"] = "mixed"
    prepare_size: int = Field(128, ge=32, le=4096, description="prepared image side (pixels)")
    family: Literal["auto", "hologic", "siemens", "fusion"] = "fusion"

    @field_validator("size")
    @classmethod
    def _size(cls, value: str) -> str:
        try:
            h, w = (int(v) for v in value.lower().split("x"))
        except ValueError:
            raise ValueError("expected HEIGHTxWIDTH, e.g. 320x256") from None
        if h < 128 or w < 128:
            raise ValueError("phantoms need at least 128 pixels per side")
        return f"{h}x{w}"

    def size_tuple(self) -> tuple[int, int]:
        h, w = self.size.split("x")
        return int(h), int(w)


class TestSet(_Strict):
    """``[test]``: the held-out real images, the same for every arm and seed."""

    split_csv: Path | None = Field(
        None, description="CSV with image_id and split_column; rows equal to split_value are "
        "the test set (VinDr's breast-level_annotations.csv; default with [phantoms]: theirs)")
    split_column: str = "split"
    split_value: str = "test"
    fraction: float = Field(0.25, gt=0.0, lt=1.0, description="without split_csv: held-out "
                            "share of source images per lesion stratum (seeded)")
    seed: int = Field(0, ge=0)
    max_lesion: int | None = Field(None, ge=2, description="cap on test lesion images")
    max_healthy: int | None = Field(None, ge=2, description="cap on test healthy images")


class RealPool(_Strict):
    """``[real]``: the real training pool and the learning curve over its lesions."""

    fractions: list[float] = Field(default_factory=lambda: [0.25, 0.5, 1.0], min_length=1,
                                   description="shares of the pool's lesion images")
    max_lesion: int | None = Field(None, ge=1, description="cap on pool lesion images")
    max_healthy: int | None = Field(None, ge=2, description="cap on pool healthy images")
    seed: int = Field(0, ge=0, description="seed of the caps and the per-seed subsets")

    @field_validator("fractions")
    @classmethod
    def _fractions(cls, value: list[float]) -> list[float]:
        if any(not 0.0 < f <= 1.0 for f in value):
            raise ValueError("every real fraction must be in (0, 1]")
        if len(set(value)) != len(value):
            raise ValueError("real fractions must be distinct")
        return sorted(float(f) for f in value)


class Synthesis(_Strict):
    """``[synthesis]``: how the synthetic lesions are inpainted (once per study)."""

    model: str | None = Field(None, description="inpainting model: hub id or folder; none: the "
                              "embedded MAM-E-tiny-inpaint")
    steps: int = Field(24, ge=1, le=1000)
    guidance_scale: float = Field(4.0, ge=0.0)
    negative_prompt: str = ""
    box_fraction: tuple[float, float] = Field(
        BOX_FRACTION, description="lesion box side range, fraction of the image side")
    scheduler: str = "dpm++"
    seed: int = Field(0, ge=0, description="image i uses seed + i; also orders the sources")
    batch_size: int = Field(8, ge=1)
    dtype: Literal["fp32", "fp16", "bf16"] | None = Field(
        None, description="default: fp16 on CUDA, fp32 on a CPU")

    @field_validator("box_fraction")
    @classmethod
    def _box(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0.0 < value[0] <= value[1] < 1.0:
            raise ValueError("expected 0 < low <= high < 1")
        return value


class Arms(_Strict):
    """``[arms]``: which arms besides the baseline."""

    synthetic_ratios: list[float] = Field(
        default_factory=lambda: [0.5, 1.0, 2.0],
        description="synthetic lesion images per real lesion image (one arm each)")
    synthetic_only: bool = True
    classic: bool = True
    classic_vflip: bool = Field(True, description="classic control: top–bottom flips")
    classic_intensity: float = Field(0.2, ge=0.0, le=1.0,
                                     description="classic control: random gamma/gain amplitude")
    classic_shift: float | None = Field(None, ge=0.0, le=0.5, description="classic control: "
                                        "translation (default: training.augment_shift)")

    @field_validator("synthetic_ratios")
    @classmethod
    def _ratios(cls, value: list[float]) -> list[float]:
        if any(not 0.0 < r <= 100.0 for r in value):
            raise ValueError("every synthetic ratio must be in (0, 100]")
        if len(set(value)) != len(value):
            raise ValueError("synthetic ratios must be distinct")
        return sorted(float(r) for r in value)


class Training(_Strict):
    """``[training]``: MammoNet training, identical in every arm (see ``train cad``)."""

    image_size: int = Field(128, ge=32, le=4096)
    steps: int = Field(300, ge=1, description="optimiser steps, the same in every arm")
    batch_size: int = Field(_default("batch_size"), ge=2, le=4096)
    lr: float = Field(_default("lr"), gt=0.0, le=1.0)
    weight_decay: float = Field(_default("weight_decay"), ge=0.0)
    warmup_fraction: float = Field(_default("warmup_fraction"), ge=0.0, lt=1.0)
    attribute_weight: float = Field(_default("attribute_weight"), ge=0.0)
    mask_weight: float = Field(_default("mask_weight"), ge=0.0)
    augment_shift: float = Field(_default("augment_shift"), ge=0.0, le=0.5)
    augment_vflip: bool = _default("augment_vflip")
    augment_intensity: float = Field(_default("augment_intensity"), ge=0.0, le=1.0)
    model: dict = Field(default_factory=dict, description="MammoNetConfig except image_size")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    save_models: bool = Field(False, description="keep every trained model in OUT/models/")

    @model_validator(mode="after")
    def _valid_for_trainer(self) -> Training:
        self.cad_config(seed=0, data_dir=Path("."), output_dir=Path("."))
        return self

    def cad_config(self, *, seed: int, data_dir: Path, output_dir: Path,
                   classic: Arms | None = None, threads: int | None = None) -> CadTrainConfig:
        """The :class:`CadTrainConfig` of one unit (``classic``: the control's augmentation)."""
        settings = self.model_dump(exclude={"steps", "save_models"})
        if classic is not None:
            settings["augment_vflip"] = classic.classic_vflip
            settings["augment_intensity"] = classic.classic_intensity
            if classic.classic_shift is not None:
                settings["augment_shift"] = classic.classic_shift
        try:
            return CadTrainConfig(data_dir=data_dir, output_dir=output_dir, max_steps=self.steps,
                                  val_fraction=0.0, seed=seed, threads=threads, **settings)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise ValueError(f"{where}: {err['msg'].removeprefix('Value error, ')}") from None


class AugmentConfig(_Strict):
    """The whole study (see the module docstring)."""

    name: str = "augment"
    threads: int | None = Field(
        None, ge=1, description="CPU threads of each process (inpainting and training); "
        "default: torch's. 1 is fastest on a shared machine (spinning threads stall)")
    data_dir: Path | None = Field(None, description="prepared dataset (healthy/ + lesion/)")
    labels_csv: Path | None = Field(None, description="attribute label overrides (train cad)")
    phantoms: PhantomData | None = None
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    level: float = Field(0.95, gt=0.0, lt=1.0, description="confidence level of every CI")
    specificity: float = Field(0.9, gt=0.0, lt=1.0,
                               description="sensitivity is reported at this specificity")
    test: TestSet = Field(default_factory=TestSet)
    real: RealPool = Field(default_factory=RealPool)
    synthesis: Synthesis = Field(default_factory=Synthesis)
    arms: Arms = Field(default_factory=Arms)
    training: Training = Field(default_factory=Training)

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, value: list[int]) -> list[int]:
        if any(s < 0 for s in value) or len(set(value)) != len(value):
            raise ValueError("seeds must be distinct non-negative integers")
        return sorted(value)

    @model_validator(mode="after")
    def _one_data_source(self) -> AugmentConfig:
        if (self.data_dir is None) == (self.phantoms is None):
            raise ValueError("give exactly one of data_dir (a prepared dataset) or [phantoms]")
        return self


def load_augment_config(path: Path | str | None = None, overrides=(),
                        data: dict | None = None) -> AugmentConfig:
    """Read and validate a study definition (TOML file or dict) with ``--set`` overrides.

    Raises:
        ConfigError: a missing file, invalid TOML, an unknown key or a bad value (one line).
    """
    return load_config(AugmentConfig, path, list(overrides), data=data,
                       what="augment config")


# --------------------------------------------------------------------------- the design


@dataclass(frozen=True)
class Unit:
    """One trained model: an arm at a synthetic ratio, a real fraction and a seed."""

    arm: str
    synthetic_ratio: float
    real_fraction: float
    seed: int

    @property
    def key(self) -> str:
        return (f"{self.arm}_r{self.synthetic_ratio:g}_f{self.real_fraction:g}"
                f"_s{self.seed}")

    @property
    def series(self) -> str:
        """The arm as the figure and the comparison name it (``synthetic ×0.5``)."""
        if self.arm == "synthetic":
            return f"synthetic ×{self.synthetic_ratio:g}"
        return self.arm


def plan_units(cfg: AugmentConfig) -> list[Unit]:
    """Every unit of the study, in table order (arm, ratio, fraction, seed)."""
    arms: list[tuple[str, float]] = [("baseline", 0.0)]
    arms += [("synthetic", r) for r in cfg.arms.synthetic_ratios]
    if cfg.arms.synthetic_only:
        arms.append(("synthetic-only", 1.0))
    if cfg.arms.classic:
        arms.append(("classic", 0.0))
    return [Unit(arm, ratio, f, s) for arm, ratio in arms for f in cfg.real.fractions
            for s in cfg.seeds]


def n_real_lesions(fraction: float, pool_lesions: int) -> int:
    """Real lesion images at a real fraction: ``round(f · n)``, at least 1."""
    return max(1, int(round(fraction * pool_lesions)))


def n_synthetic(unit: Unit, pool_lesions: int) -> int:
    """Synthetic lesion images of a unit: ``round(ratio · n_real_lesions)`` (0 for baseline
    and classic)."""
    if unit.arm in ("baseline", "classic"):
        return 0
    return max(1, int(round(unit.synthetic_ratio * n_real_lesions(unit.real_fraction,
                                                                  pool_lesions))))


@dataclass
class Design:
    """The fixed parts of a study: data, test set, training pool, and their hashes."""

    data_dir: Path
    samples: list  # cad.data.Sample, real
    test: list[int]  # indices into samples
    pool_lesion: list[int]
    pool_healthy: list[int]
    test_digest: dict  # {"n_files", "sha256"}
    pool_digest: dict
    sha: dict[Path, str]  # file → sha256 (every file read)
    data_report: dict


def _digest(entries: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(entries)).encode()).hexdigest()


def _rel(path: Path, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)


def _read_split(path: Path, column: str, value: str) -> set[str]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"test.split_csv {path}: file not found")
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        columns = reader.fieldnames or []
        for needed in ("image_id", column):
            if needed not in columns:
                raise DataError(f"test.split_csv {path}: no {needed!r} column (found "
                                f"{', '.join(columns) or 'no header'})")
        return {row["image_id"] for row in reader if row[column].strip() == value}


def _cap(indices: list[int], cap: int | None, rng: np.random.Generator) -> list[int]:
    if cap is None or len(indices) <= cap:
        return indices
    keep = rng.choice(len(indices), size=cap, replace=False)
    return sorted(indices[i] for i in keep)


def make_design(cfg: AugmentConfig, data_dir: Path, split_csv: Path | None,
                labels_csv: Path | None) -> Design:
    """Read the real data and fix the test set and the training pool (deterministic).

    Raises:
        DataError: an unusable dataset or split; a test set with fewer than 2 images of a
            class; an empty training pool.
    """
    from mame_eval.cad.data import load_samples, split_by_source

    samples, report = load_samples(data_dir, labels_csv)
    if split_csv is not None:
        test_ids = _read_split(split_csv, cfg.test.split_column, cfg.test.split_value)
        test = [i for i, s in enumerate(samples) if s.source_id in test_ids]
        rest = [i for i, s in enumerate(samples) if s.source_id not in test_ids]
        if not test:
            raise DataError(f"test.split_csv {split_csv}: no prepared image is marked "
                            f"{cfg.test.split_column} = {cfg.test.split_value!r}")
    else:
        rest, test = split_by_source(samples, cfg.test.fraction, cfg.test.seed)
    rng = np.random.default_rng([cfg.test.seed, 1])
    test = sorted(_cap([i for i in test if samples[i].lesion], cfg.test.max_lesion, rng)
                  + _cap([i for i in test if not samples[i].lesion], cfg.test.max_healthy, rng))
    n_pos = sum(samples[i].lesion for i in test)
    if n_pos < 2 or len(test) - n_pos < 2:
        raise DataError(f"{data_dir}: the test set needs at least 2 lesion and 2 healthy "
                        f"images (has {n_pos} and {len(test) - n_pos})")
    rng = np.random.default_rng([cfg.real.seed, 2])
    pool_lesion = _cap([i for i in rest if samples[i].lesion], cfg.real.max_lesion, rng)
    pool_healthy = _cap([i for i in rest if not samples[i].lesion], cfg.real.max_healthy, rng)
    if not pool_lesion or len(pool_healthy) < 1:
        raise DataError(f"{data_dir}: the training pool needs lesion and healthy images (has "
                        f"{len(pool_lesion)} and {len(pool_healthy)})")
    test_sources = {samples[i].source_id for i in test}
    if any(samples[i].source_id in test_sources for i in pool_lesion + pool_healthy):
        raise DataError(f"{data_dir}: a source image is in both the test set and the training "
                        "pool")
    sha: dict[Path, str] = {}
    for i in test + pool_lesion + pool_healthy:
        for p in [samples[i].path, *samples[i].mask_paths]:
            sha[p] = file_sha256(p)

    def digest(indices: list[int]) -> dict:
        entries = [f"{_rel(samples[i].path, data_dir)}\t{sha[samples[i].path]}"
                   for i in indices]
        return {"n_files": len(entries), "sha256": _digest(entries)}

    return Design(data_dir, samples, test, pool_lesion, pool_healthy, digest(test),
                  digest(pool_lesion + pool_healthy), sha, report)


# --------------------------------------------------------------------------- data and study


def _phantom_data(cfg: AugmentConfig, out: Path, state) -> tuple[Path, Path, Path]:
    """Write and prepare the phantoms of ``[phantoms]`` into ``OUT/data`` (main process; a
    rerun with the same settings reuses them). Returns (data_dir, split_csv, labels_csv)."""
    from mame_eval.data.phantoms.writer import write_phantom_dataset
    from mame_eval.data.prepare import PrepareSettings, prepare_dataset

    ph = cfg.phantoms
    raw, prepared, stamp = out / "data" / "phantoms", out / "data" / "prepared", \
        out / "data" / "phantoms.json"
    settings = ph.model_dump(mode="json")
    if state.is_main_process:
        done = json.loads(stamp.read_text()) if stamp.is_file() else None
        if done is not None and done != settings:
            raise InputError(f"{out} holds phantoms made with other [phantoms] settings "
                             f"({done}); use a new --out folder, or the same settings")
        if done is None:
            write_phantom_dataset(raw, n=ph.n, seed=ph.seed, population=ph.population,
                                  lesion_fraction=ph.lesion_fraction, size=ph.size_tuple(),
                                  overwrite=True)
            write_json(stamp, settings)
        report = prepare_dataset(raw, prepared, PrepareSettings(size=ph.prepare_size,
                                                                family=ph.family))
        if report.n_prepared == 0:
            raise DataError(f"{raw}: no phantom could be prepared")
    state.wait_for_everyone()
    return prepared, raw / "breast-level_annotations.csv", raw / "phantom_truth.csv"


def _study_settings(cfg: AugmentConfig, design: Design) -> dict:
    """What every unit depends on; a rerun must match it (grid lists may grow)."""
    return {
        "test": {**cfg.test.model_dump(mode="json"), **design.test_digest},
        "pool": {"max_lesion": cfg.real.max_lesion, "max_healthy": cfg.real.max_healthy,
                 "seed": cfg.real.seed, **design.pool_digest},
        "training": cfg.training.model_dump(mode="json", exclude={"device", "save_models"}),
        "synthesis": cfg.synthesis.model_dump(mode="json", exclude={"batch_size"}),
        "classic": cfg.arms.model_dump(mode="json", include={"classic_vflip",
                                                             "classic_intensity",
                                                             "classic_shift"}),
    }


def _check_study(out: Path, settings: dict, state) -> str:
    """Pin the study settings in ``OUT/study.json`` (first run) or check them (rerun)."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    path = out / STUDY_FILE
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        if old.get("sha256") != digest:
            changed = sorted(k for k in settings if old.get("settings", {}).get(k) !=
                             json.loads(json.dumps(settings[k])))
            raise InputError(f"{out} holds a study made with other settings ({', '.join(changed)}"
                             " differ); use a new --out folder, or the same settings to resume")
    elif state.is_main_process:
        write_json(path, {"sha256": digest, "settings": settings})
    state.wait_for_everyone()
    return digest


def _synthesize(cfg: AugmentConfig, design: Design, out: Path, n: int, device: str,
                progress: Callable[[int, int], None] | None):
    """The first ``n`` synthetic lesion images of the study (made where missing)."""
    from mame_eval import __version__
    from mame_eval.generation import box_to_mask, inpaint_arrays, random_box_in_breast
    from mame_eval.generation.generate import source_fields
    from mame_eval.generation.manifest import read_manifest, run_indexed
    from mame_eval.images import load_rgb
    from mame_eval.io import save_png
    from mame_eval.prompts import INPAINT_PROMPT

    syn = cfg.synthesis
    healthy = design.pool_healthy
    order = np.random.default_rng([syn.seed, 3]).permutation(len(healthy))
    sources = [design.samples[healthy[j]] for j in order]
    fixed = {"task": "augment-synthesis", "inpaint_model": syn.model or "embedded",
             "inpaint_prompt": INPAINT_PROMPT, "negative_prompt": syn.negative_prompt,
             "guidance_scale": float(syn.guidance_scale), "steps": syn.steps,
             "scheduler": syn.scheduler, "box_fraction": list(syn.box_fraction),
             "seed_base": syn.seed, "healthy_pool_sha256": design.pool_digest["sha256"],
             "mame_eval": __version__}
    pipes: list = []
    made_with = {row.get("revision") for row in read_manifest(out).values()}

    def render(indices: list[int]) -> list[dict]:
        if not pipes:
            from mame_eval.models import load_pipeline

            pipe = load_pipeline(syn.model, task="inpaint", device=device, dtype=syn.dtype,
                                 scheduler=syn.scheduler)
            revision = source_fields(pipe)["revision"]
            if made_with - {revision}:
                raise InputError(
                    f"{out} holds synthetic images of another version of the inpainting model "
                    f"({', '.join(sorted(map(str, made_with)))}; now {revision}); use a new "
                    "--out folder")
            pipes.append(pipe)
        pipe = pipes[0]
        t0 = time.perf_counter()
        images, masks, boxes, hows, srcs = [], [], [], [], []
        for i in indices:
            src = sources[i % len(sources)]
            image = load_rgb(src.path)
            box, how = random_box_in_breast(image, np.random.default_rng([syn.seed, i]),
                                            syn.box_fraction)
            images.append(image)
            masks.append(box_to_mask(box, *image.shape[:2]))
            boxes.append(box)
            hows.append(how)
            srcs.append(src)
        seeds = [syn.seed + i for i in indices]
        lesions = inpaint_arrays(pipe, images, masks, seeds, INPAINT_PROMPT,
                                 syn.negative_prompt, syn.guidance_scale, syn.steps)
        per_image = (time.perf_counter() - t0) / len(indices)
        model = source_fields(pipe)
        rows = []
        for i, s, lesion, mask, box, how, src in zip(indices, seeds, lesions, masks, boxes,
                                                     hows, srcs, strict=True):
            name = f"{i:05d}.png"
            save_png(out / "masks" / name, mask.astype(np.uint8) * 255)
            save_png(out / "images" / name, lesion)
            rows.append({"index": i, "file": f"images/{name}", "mask_file": f"masks/{name}",
                         "seed": s, "source_image": _rel(src.path, design.data_dir),
                         "source_id": src.source_id, "box": list(box), "box_source": how,
                         "model": model["model"], "revision": model["revision"],
                         "dtype": model["dtype"], "time_s": round(per_image, 4)})
        return rows

    return run_indexed(out, n, syn.batch_size, fixed, render, progress)


def _synthetic_samples(design: Design, rows: list[dict], folder: Path) -> list:
    """Synthetic lesion samples: lesion label, the source's attributes, the box as mask."""
    from mame_eval.cad.data import Sample

    by_source = {design.samples[i].source_id: design.samples[i] for i in design.pool_healthy}
    out = []
    for row in rows:
        src = by_source.get(row["source_id"])
        if src is None:
            raise DataError(f"{folder / 'manifest.jsonl'} index {row['index']}: source "
                            f"{row['source_id']} is not in the training pool")
        out.append(Sample(folder / row["file"], f"synthetic:{row['index']}", 1,
                          dict(src.labels), [folder / row["mask_file"]]))
    return out


@dataclass
class Tensors:
    """Every image of the study in memory once, as uint8 (N, 1, S, S) at the training size:
    the real images (by index into ``design.samples``) then the synthetic ones."""

    x: object
    lesion: object
    attrs: dict
    masks: object
    known: object
    row_of_real: dict[int, int]
    synthetic_rows: list[int]


def _load_tensors(design: Design, synthetic: list, size: int) -> Tensors:
    import torch

    from mame_eval.cad.data import load_images, load_masks
    from mame_eval.cad.model import ATTRIBUTES

    real = sorted(set(design.test + design.pool_lesion + design.pool_healthy))
    samples = [design.samples[i] for i in real] + synthetic
    x = (load_images([s.path for s in samples], size) * 255).round().to(torch.uint8)
    masks, known = load_masks(samples, size)
    masks = (masks * 255).round().to(torch.uint8)
    lesion = torch.tensor([s.lesion for s in samples], dtype=torch.float32)
    attrs = {a: torch.tensor([s.labels[a] for s in samples], dtype=torch.long)
             for a in ATTRIBUTES}
    return Tensors(x, lesion, attrs, masks, known, {i: r for r, i in enumerate(real)},
                   list(range(len(real), len(samples))))


@dataclass(frozen=True)
class Members:
    """The training images of a unit: real samples (indices into ``design.samples``: the
    healthy pool, then the real lesions) and synthetic images (indices into the study's
    synthetic list)."""

    real: list[int]
    synthetic: list[int]
    n_real_lesion: int
    n_healthy: int


def unit_members(unit: Unit, design: Design, n_synthetic_images: int) -> Members:
    """Who trains a unit.

    Real lesions: the first ``n_real_lesions`` of a per-seed permutation of the pool's lesion
    images (nested across fractions, the same in every arm). Synthetic: the first
    ``n_synthetic`` of a per-seed permutation of the study's synthetic images (nested across
    ratios). Healthy: the whole pool, in every arm.
    """
    n_pool = len(design.pool_lesion)
    perm = np.random.default_rng([unit.seed, 4]).permutation(n_pool)
    n_real = n_real_lesions(unit.real_fraction, n_pool)
    real_lesions = [design.pool_lesion[j] for j in perm[:n_real]]
    k = n_synthetic(unit, n_pool)
    if k > n_synthetic_images:
        raise DataError(f"unit {unit.key}: needs {k} synthetic images, the study has "
                        f"{n_synthetic_images}")
    syn_perm = np.random.default_rng([unit.seed, 5]).permutation(n_synthetic_images)
    real = list(design.pool_healthy)
    if unit.arm != "synthetic-only":
        real += real_lesions
    return Members(real, [int(j) for j in syn_perm[:k]],
                   0 if unit.arm == "synthetic-only" else n_real, len(design.pool_healthy))


def unit_rows(unit: Unit, design: Design, tensors: Tensors) -> tuple[list[int], dict]:
    """The training rows of a unit in :class:`Tensors` and its composition (counts)."""
    members = unit_members(unit, design, len(tensors.synthetic_rows))
    rows = [tensors.row_of_real[i] for i in members.real]
    rows += [tensors.synthetic_rows[j] for j in members.synthetic]
    composition = {"n_train_healthy": members.n_healthy,
                   "n_train_real_lesion": members.n_real_lesion,
                   "n_train_synthetic": len(members.synthetic)}
    return rows, composition


def train_digest(unit: Unit, design: Design, synthetic: list, synthetic_sha: list[str]) -> str:
    """SHA-256 over the (name, content hash) of every training image of a unit: a finished
    unit is reused only while it still matches (same real subset, same synthetic pixels)."""
    members = unit_members(unit, design, len(synthetic))
    entries = [f"{_rel(design.samples[i].path, design.data_dir)}\t"
               f"{design.sha[design.samples[i].path]}" for i in members.real]
    entries += [f"{SYNTHETIC}/{synthetic[j].path.parent.name}/{synthetic[j].path.name}\t"
                f"{synthetic_sha[j]}" for j in members.synthetic]
    return _digest(entries)


def _train_unit(cfg: AugmentConfig, unit: Unit, design: Design, tensors: Tensors,
                digest: str, out: Path, study_sha: str, device: str) -> dict:
    """Train one unit, score the test set, write ``OUT/units/<key>.json``; returns it."""
    import torch

    from mame_eval.cad.train import fit_mammonet
    from mame_eval.provenance import describe_device

    t0 = time.perf_counter()
    rows, composition = unit_rows(unit, design, tensors)
    cad = cfg.training.cad_config(seed=unit.seed, data_dir=design.data_dir,
                                  output_dir=out / "models" / unit.key,
                                  classic=cfg.arms if unit.arm == "classic" else None,
                                  threads=cfg.threads)
    if device.startswith("cuda") and cad.device == "auto":
        cad = cad.model_copy(update={"device": "cuda"})
    model, history = fit_mammonet(cad, tensors.x, tensors.lesion, tensors.attrs, rows,
                                  tensors.masks, tensors.known)
    test_rows = torch.tensor([tensors.row_of_real[i] for i in design.test])
    dev = next(model.parameters()).device
    scores = []
    with torch.no_grad():
        for b in range(0, len(test_rows), 128):
            xb = tensors.x[test_rows[b:b + 128]].float() / 255.0
            logits = model(xb.to(dev))["lesion"].float().cpu()
            scores.append(torch.sigmoid(logits.double()))
    if cfg.training.save_models:
        model.cpu().save_pretrained(out / "models" / unit.key)
    result = {
        "key": unit.key, "arm": unit.arm, "synthetic_ratio": unit.synthetic_ratio,
        "real_fraction": unit.real_fraction, "seed": unit.seed, "study_sha256": study_sha,
        "test_sha256": design.test_digest["sha256"], "train_sha256": digest,
        **composition, "n_train": len(rows), "steps": history[-1]["step"],
        "final_loss": history[-1]["train_loss"], "device": describe_device(dev),
        "wall_time_s": round(time.perf_counter() - t0, 3),
        "scores": [float(v) for v in torch.cat(scores).numpy()],
    }
    write_json(out / UNITS / f"{unit.key}.json", result)
    return result


def _finished(out: Path, unit: Unit, study_sha: str, digest: str) -> dict | None:
    """The result of a unit trained on exactly these settings and images, else None."""
    path = out / UNITS / f"{unit.key}.json"
    if not path.is_file():
        return None
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None  # a unit cut short by a kill is trained again
    if result.get("study_sha256") != study_sha or result.get("train_sha256") != digest:
        return None
    return result


# --------------------------------------------------------------------------- tables


def results_table(cfg: AugmentConfig, results: list[dict], truth: np.ndarray):
    """``augment.csv``: one row per unit with its AUROC (DeLong CI) and sensitivity at
    ``cfg.specificity`` (exact CI over the test lesions)."""
    import pandas as pd

    from mame_eval.stats.compare import sensitivity_at_specificity
    from mame_eval.stats.proportions import proportion_ci
    from mame_eval.stats.roc import delong_ci

    rows = []
    for r in results:
        score = np.asarray(r["scores"])
        auc, se, (lo, hi) = delong_ci(truth, score, cfg.level)
        op = sensitivity_at_specificity(truth, score, cfg.specificity)
        s_lo, s_hi = proportion_ci(op.tp, op.tp + op.fn, cfg.level)
        rows.append({
            "arm": r["arm"], "synthetic_ratio": r["synthetic_ratio"],
            "real_fraction": r["real_fraction"], "seed": r["seed"], "auroc": auc,
            "ci_low": lo, "ci_high": hi, "se": se, "n_pos": int(truth.sum()),
            "n_neg": int(len(truth) - truth.sum()), "sensitivity": op.sensitivity,
            "sensitivity_ci_low": s_lo, "sensitivity_ci_high": s_hi,
            "specificity": op.specificity, "specificity_target": cfg.specificity,
            "n_train_healthy": r["n_train_healthy"],
            "n_train_real_lesion": r["n_train_real_lesion"],
            "n_train_synthetic": r["n_train_synthetic"], "steps": r["steps"],
            "test_sha256": r["test_sha256"], "train_sha256": r["train_sha256"],
        })
    return pd.DataFrame(rows)


def comparison_tables(cfg: AugmentConfig, results: list[dict], truth: np.ndarray):
    """``(comparison, comparison_seeds)``: each arm against the baseline at the same real
    fraction, on the same test cases, paired by seed."""
    import pandas as pd

    from mame_eval.stats.compare import auc_contrast, holm, paired_mean_difference
    from mame_eval.stats.roc import auroc

    by = {(r["arm"], r["synthetic_ratio"], r["real_fraction"], r["seed"]): r for r in results}
    combos = sorted({(r["arm"], r["synthetic_ratio"]) for r in results if r["arm"] !=
                     "baseline"}, key=lambda c: (ARMS.index(c[0]), c[1]))
    rows, seed_rows = [], []
    for arm, ratio in combos:
        for f in cfg.real.fractions:
            seeds = [s for s in cfg.seeds if (arm, ratio, f, s) in by
                     and ("baseline", 0.0, f, s) in by]
            if not seeds:
                continue
            arm_scores = np.array([by[arm, ratio, f, s]["scores"] for s in seeds])
            base_scores = np.array([by["baseline", 0.0, f, s]["scores"] for s in seeds])
            for s, a, b in zip(seeds, arm_scores, base_scores, strict=True):
                c = auc_contrast(truth, np.stack([a, b]), [1.0, -1.0], cfg.level)
                seed_rows.append({"arm": arm, "synthetic_ratio": ratio, "real_fraction": f,
                                  "seed": s, "difference": c.estimate, "ci_low": c.ci[0],
                                  "ci_high": c.ci[1], "se": c.se, "p": c.p})
            k = len(seeds)
            weights = [1.0 / k] * k + [-1.0 / k] * k
            pooled = auc_contrast(truth, np.concatenate([arm_scores, base_scores]), weights,
                                  cfg.level)
            auc_arm = np.array([auroc(truth, a) for a in arm_scores])
            auc_base = np.array([auroc(truth, b) for b in base_scores])
            seed_diff = paired_mean_difference(auc_base, auc_arm, cfg.level)
            rows.append({
                "arm": arm, "synthetic_ratio": ratio, "real_fraction": f, "n_seeds": k,
                "n_pos": pooled.n_pos, "n_neg": pooled.n_neg,
                "auroc_baseline": float(auc_base.mean()), "auroc_arm": float(auc_arm.mean()),
                "difference": pooled.estimate, "delong_ci_low": pooled.ci[0],
                "delong_ci_high": pooled.ci[1], "delong_se": pooled.se, "delong_p": pooled.p,
                "seed_sd": seed_diff.sd, "seed_ci_low": seed_diff.ci[0],
                "seed_ci_high": seed_diff.ci[1], "seed_p": seed_diff.p,
                "seeds_better": seed_diff.n_positive,
            })
    table = pd.DataFrame(rows)
    if len(table):
        table["delong_p_holm"] = holm(table["delong_p"].to_numpy())
        seed_p = table["seed_p"].to_numpy(dtype=float)
        table["seed_p_holm"] = holm(seed_p) if np.all(np.isfinite(seed_p)) else np.nan
    return table, pd.DataFrame(seed_rows)


# --------------------------------------------------------------------------- the journey


def _coerce(config) -> AugmentConfig:
    if isinstance(config, AugmentConfig):
        return config
    if isinstance(config, dict):
        return load_augment_config(data=config)
    return load_augment_config(config)


def run_augment(config, out: Path | str,
                progress: Callable[[int, int], None] | None = None) -> RunRecord | None:
    """Run (or resume) the augmentation study of ``config`` into the study folder ``out``.

    Args:
        config: an :class:`AugmentConfig`, a dict, or a TOML path.
        out: the study folder (created; a rerun resumes it).
        progress: ``progress(done, total)`` over synthetic images + trained units (main
            process only).

    Returns:
        The written :class:`RunRecord` (tables ``augment``, ``comparison``,
        ``comparison_seeds``, ``test_set``; figure ``augment``) on the main process; ``None``
        on the other processes of a multi-process launch.

    Raises:
        ConfigError: invalid settings. DataError: unusable data. InputError: ``out`` holds a
        study with other settings.
    """
    from mame_eval.generation.manifest import process_state
    from mame_eval.reports.augment import augment_figure

    cfg = _coerce(config)
    record = RunRecord(kind="augment", out=Path(out))
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    out = Path(out)
    state = process_state()
    if state.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
    state.wait_for_everyone()
    if cfg.phantoms is not None:
        data_dir, split_csv, labels_csv = _phantom_data(cfg, out, state)
        split_csv = cfg.test.split_csv or split_csv
        labels_csv = cfg.labels_csv or labels_csv
    else:
        data_dir, split_csv, labels_csv = cfg.data_dir, cfg.test.split_csv, cfg.labels_csv
        if not Path(data_dir).is_dir():
            raise DataError(f"data_dir {data_dir}: folder not found (a prepared dataset: "
                            "mame-eval prepare)")
    design = make_design(cfg, Path(data_dir), split_csv, labels_csv)
    settings = _study_settings(cfg, design)
    study_sha = _check_study(out, settings, state)
    units = plan_units(cfg)
    n_pool = len(design.pool_lesion)
    n_syn = max((n_synthetic(u, n_pool) for u in units), default=0)
    device = str(state.device)
    total = n_syn + len(units)

    def syn_progress(done: int, n: int) -> None:
        if progress:
            progress(done, total)

    synthetic: list = []
    n_generated = 0
    run = None
    if n_syn:
        run = _synthesize(cfg, design, out / SYNTHETIC, n_syn, device, syn_progress)
        n_generated = run.generated
        synthetic = _synthetic_samples(design, run.rows[:n_syn], out / SYNTHETIC)
        bad = {s.path.resolve() for s in synthetic} & \
            {design.samples[i].path.resolve() for i in design.test}
        used = {row["source_id"] for row in run.rows[:n_syn]}
        if bad or used & {design.samples[i].source_id for i in design.test}:
            raise DataError("a synthetic image or its source is in the test set")  # guard
        fallback = sum(row["box_source"] != "breast" for row in run.rows[:n_syn])
        if fallback:
            record.note(f"{fallback} of {n_syn} synthetic lesion boxes could not be placed "
                        "inside the breast (placed anywhere in the image)")
    synthetic_sha = [file_sha256(s.path) for s in synthetic]
    digests = {u.key: train_digest(u, design, synthetic, synthetic_sha) for u in units}
    todo = [u for u in units if _finished(out, u, study_sha, digests[u.key]) is None]
    done_units = len(units) - len(todo)
    if progress and state.is_main_process:
        progress(n_syn + done_units, total)

    if todo:
        tensors = _load_tensors(design, synthetic, cfg.training.image_size)
        done_here = 0
        with state.split_between_processes(todo) as mine:
            for unit in mine:
                _train_unit(cfg, unit, design, tensors, digests[unit.key], out, study_sha,
                            device)
                done_here += 1
                if progress and state.is_main_process:
                    progress(min(total, n_syn + done_units + done_here * state.num_processes),
                             total)
    state.wait_for_everyone()
    if not state.is_main_process:
        return None

    results = []
    for unit in units:
        result = _finished(out, unit, study_sha, digests[unit.key])
        if result is None:
            raise DataError(f"unit {unit.key}: no result in {out / UNITS} after training")
        results.append(result)
    truth = np.array([design.samples[i].lesion for i in design.test], dtype=int)
    table = results_table(cfg, results, truth)
    comparison, comparison_seeds = comparison_tables(cfg, results, truth)
    import pandas as pd

    test_set = pd.DataFrame([{"file": _rel(design.samples[i].path, design.data_dir),
                              "source_id": design.samples[i].source_id,
                              "lesion": design.samples[i].lesion,
                              "sha256": design.sha[design.samples[i].path]}
                             for i in design.test])
    record.tables = {"augment": table, "comparison": comparison,
                     "comparison_seeds": comparison_seeds, "test_set": test_set}
    record.figures = {"augment": augment_figure(table, comparison, level=cfg.level)}
    record.settings = cfg.model_dump(mode="json")
    syn_digest = {"n_files": len(synthetic),
                  "sha256": _digest([f"{s.path.parent.name}/{s.path.name}\t{h}"
                                     for s, h in zip(synthetic, synthetic_sha, strict=True)])
                  } if synthetic else None
    record.inputs = {
        "data_dir": str(design.data_dir),
        "test_set": {**design.test_digest, "n_pos": int(truth.sum()),
                     "n_neg": int(len(truth) - truth.sum()),
                     "split": str(split_csv) if split_csv else
                     f"random {cfg.test.fraction:g} of source images (seed {cfg.test.seed})"},
        "training_pool": {**design.pool_digest, "n_lesion": n_pool,
                          "n_healthy": len(design.pool_healthy)},
        "synthetic": None if syn_digest is None else {
            "folder": str(out / SYNTHETIC), **syn_digest,
            "model": run.rows[0]["model"], "revision": run.rows[0]["revision"]},
        "labels_csv": str(labels_csv) if labels_csv else None,
    }
    record.provenance_extra = {"study_sha256": study_sha, "data_report": design.data_report,
                               "units": len(units), "units_trained": len(todo),
                               "units_wall_time_s": round(sum(r["wall_time_s"]
                                                              for r in results), 3),
                               "synthetic_generated": n_generated,
                               "processes": state.num_processes}
    record.device = str(results[0]["device"]) if results else device
    record.summary = _summary(cfg, table, comparison, len(todo), n_generated)
    _notes(record, cfg, design)
    return record.write()


def _number(value) -> float | None:
    """A table cell as a JSON number (None for a missing one)."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _summary(cfg: AugmentConfig, table, comparison, trained: int, generated: int) -> dict:
    base = table[table["arm"] == "baseline"]
    summary = {
        "n_test_pos": int(table["n_pos"].iloc[0]), "n_test_neg": int(table["n_neg"].iloc[0]),
        "seeds": cfg.seeds, "units": len(table), "units_trained": trained,
        "synthetic_generated": generated, "level": cfg.level,
        "baseline_auroc": {f"{f:g}": float(g["auroc"].mean())
                           for f, g in base.groupby("real_fraction")},
        "comparisons": [{
            "arm": row["arm"], "synthetic_ratio": float(row["synthetic_ratio"]),
            "real_fraction": float(row["real_fraction"]), "n_seeds": int(row["n_seeds"]),
            "difference": float(row["difference"]),
            "delong_ci": [float(row["delong_ci_low"]), float(row["delong_ci_high"])],
            "delong_p": float(row["delong_p"]),
            "seed_ci": [_number(row["seed_ci_low"]), _number(row["seed_ci_high"])],
        } for _, row in comparison.iterrows()],
    }
    return summary


def _notes(record: RunRecord, cfg: AugmentConfig, design: Design) -> None:
    if len(cfg.seeds) < 3:
        record.note(f"{len(cfg.seeds)} training seed(s): the seed-level CI needs at least 2 "
                    "and is only informative with 3 or more")
    record.note(f"real fractions are shares of the pool's {len(design.pool_lesion)} lesion "
                f"images; every unit also trains on all {len(design.pool_healthy)} healthy "
                "pool images")
    record.note("comparison p-values are per comparison; delong_p_holm and seed_p_holm "
                "adjust them for the number of comparisons (Holm)")
    record.note("DeLong CIs describe test-case sampling for the trained models; seed CIs "
                "(Student t over the paired per-seed differences) describe training "
                "randomness on this test set")
    record.note(f"sensitivity is read at the test set's own {cfg.specificity:g}-specificity "
                "cutoff; its exact CI ignores the cutoff's uncertainty")
