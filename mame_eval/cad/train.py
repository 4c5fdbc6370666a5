"""``mame-eval train cad CONFIG.toml``: train MammoNet on a prepared dataset.

A config (TOML, validated before any work; an unknown key is an error)::

    data_dir = "runs/phantoms-prepared"     # a prepared dataset: healthy/ + lesion/
    output_dir = "runs/cad-tiny"            # becomes a MammoNet folder (--cad OUTPUT_DIR)
    labels_csv = "runs/phantoms/phantom_truth.csv"   # optional label overrides
    image_size = 128                        # input side S in pixels
    epochs = 8
    batch_size = 32
    lr = 2e-3
    seed = 0
    val_fraction = 0.25                     # held-out share of source images

    [model]                                 # MammoNetConfig, except image_size
    arch = "resnet-small"
    width = 16

Relative paths are relative to the current directory. ``--set key=value`` overrides any key
(dotted for tables: ``--set model.width=32``; the value is read as TOML, else as a string).

Training: AdamW, linear warm-up then cosine decay, loss = BCE(lesion) + ``attribute_weight`` ×
Σ cross-entropy(attribute) with unlabelled attributes masked out + ``mask_weight`` × BCE of the
coarse ``lesion_map`` against the lesion boxes (deep supervision: it teaches the shared features
where masses are, which makes a small classifier learn from a few hundred images; 0 trains from
image-level labels only). Random translations (``augment_shift``) move image and mask together.
The last epoch's model is kept (the held-out set is only measured, never used to choose).
Deterministic for a seed on a given machine and thread count.

``OUTPUT_DIR`` receives ``config.json`` + ``model.safetensors`` (the model), ``metrics.json``
(held-out lesion AUROC with DeLong CI, accuracy per attribute with exact CI and n),
``history.jsonl`` (per epoch), ``split.csv`` (file, source, split), ``training_config.json``
and ``provenance.json``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from torch import nn

from mame_eval.cad.data import Sample, load_images, load_masks, load_samples, split_by_source
from mame_eval.cad.model import ATTRIBUTES, MammoNet, MammoNetConfig
from mame_eval.config import load_config
from mame_eval.errors import ConfigError, DataError
from mame_eval.io import write_jsonl
from mame_eval.journeys.record import RunRecord
from mame_eval.provenance import describe_device, digest_files

__all__ = ["CadTrainConfig", "CadTrainResult", "evaluate", "fit_mammonet", "load_cad_config",
           "train_cad"]


class CadTrainConfig(BaseModel):
    """Settings of :func:`train_cad` (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    data_dir: Path
    output_dir: Path
    labels_csv: Path | None = None
    image_size: int = Field(128, ge=32, le=4096)
    model: dict[str, Any] = Field(default_factory=dict,
                                  description="MammoNetConfig settings except image_size")
    epochs: int = Field(10, ge=1, le=10_000)
    max_steps: int | None = Field(None, ge=1, description="stop after this many steps")
    batch_size: int = Field(32, ge=2, le=4096)
    lr: float = Field(2e-3, gt=0.0, le=1.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    warmup_fraction: float = Field(0.05, ge=0.0, lt=1.0)
    attribute_weight: float = Field(0.5, ge=0.0)
    mask_weight: float = Field(
        1.0, ge=0.0, description="weight of the lesion-map loss from the boxes (0: image-level "
        "labels only)")
    augment_shift: float = Field(
        0.06, ge=0.0, le=0.5, description="random translation, fraction of image_size (0: off)")
    augment_vflip: bool = Field(False, description="random top–bottom flips")
    augment_intensity: float = Field(
        0.0, ge=0.0, le=1.0, description="random gamma and gain: log-gamma ~ U(-a, a), "
        "log-gain ~ U(-a/2, a/2) per image (0: off)")
    val_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    seed: int = Field(0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = Field(None, ge=1, description="CPU threads (torch.set_num_threads)")
    level: float = Field(0.95, gt=0.0, lt=1.0, description="confidence level of the CIs")

    @field_validator("model")
    @classmethod
    def _valid_model(cls, value: dict[str, Any]) -> dict[str, Any]:
        if "image_size" in value:
            raise ValueError("set image_size at the top level, not in [model]")
        try:
            MammoNetConfig(**value)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(x) for x in err["loc"])
            if err["type"] == "extra_forbidden":
                allowed = ", ".join(k for k in MammoNetConfig.model_fields if k != "image_size")
                raise ValueError(f"unknown key {loc!r}; allowed: {allowed}") from None
            raise ValueError(f"{loc}: {err['msg']}") from None
        return value

    def mammonet_config(self) -> MammoNetConfig:
        return MammoNetConfig(image_size=self.image_size, **self.model)


def load_cad_config(path: Path | str | None = None, overrides=(), data: dict | None = None
                    ) -> CadTrainConfig:
    """Read and validate a config (TOML file or dict) with ``--set`` overrides.

    Raises:
        ConfigError: missing/unreadable file, invalid TOML, unknown key or bad value — one line
            naming the file and field.
    """
    return load_config(CadTrainConfig, path, list(overrides), data=data, what="cad config")


@dataclass
class CadTrainResult:
    """What :func:`train_cad` produced."""

    output_dir: Path
    model: MammoNet
    metrics: dict
    history: list[dict]

    def summary(self) -> str:
        les = self.metrics["lesion"]
        if les.get("auroc") is None:
            head = f"held-out lesion AUROC: n/a ({les.get('note', 'no held-out set')})"
        else:
            lo, hi = les["ci"]
            head = (f"held-out lesion AUROC {les['auroc']:.3f} "
                    f"({int(100 * self.metrics['level'])}% CI {lo:.3f}–{hi:.3f}; "
                    f"{les['n_pos']} lesion / {les['n_neg']} healthy)")
        parts = [head]
        for name, m in self.metrics["attributes"].items():
            if m.get("accuracy") is not None:
                parts.append(f"{name} accuracy {m['accuracy']:.3f} (n={m['n']})")
        return "; ".join(parts) + f" — model in {self.output_dir}"


def _resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda': no CUDA device is available")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def _coerce(config) -> CadTrainConfig:
    if isinstance(config, CadTrainConfig):
        return config
    if isinstance(config, Mapping):
        return load_cad_config(data=dict(config))
    return load_cad_config(config)


def _labels(samples: list[Sample]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    lesion = torch.tensor([s.lesion for s in samples], dtype=torch.float32)
    attrs = {a: torch.tensor([s.labels[a] for s in samples], dtype=torch.long)
             for a in ATTRIBUTES}
    return lesion, attrs


def _map_loss(logits: torch.Tensor, masks: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Class-balanced BCE of the coarse lesion map against the box masks max-pooled to its grid
    (a cell is positive when at least half a pixel of box reaches it): the mean over positive
    cells and the mean over negative cells count equally (lesion cells are a few per cent).
    Only samples with a known mask take part."""
    target = nn.functional.adaptive_max_pool2d(masks, logits.shape[-2:])[:, 0] >= 0.5
    per_cell = nn.functional.binary_cross_entropy_with_logits(logits, target.float(),
                                                              reduction="none")
    use = known[:, None, None].expand_as(per_cell)
    pos, neg = target & use, ~target & use
    loss = per_cell.new_zeros(())
    for sel in (pos, neg):
        if bool(sel.any()):
            loss = loss + 0.5 * per_cell[sel].mean()
    return loss


def _loss(out: dict, lesion: torch.Tensor, attrs: dict, weight: float,
          maps: tuple | None = None, mask_weight: float = 0.0) -> torch.Tensor:
    loss = nn.functional.binary_cross_entropy_with_logits(out["lesion"], lesion)
    if maps is not None and mask_weight > 0 and "lesion_map" in out:
        loss = loss + mask_weight * _map_loss(out["lesion_map"], *maps)
    if weight > 0:
        for name, target in attrs.items():
            if name in ATTRIBUTES and name in out and bool((target >= 0).any()):
                loss = loss + weight * nn.functional.cross_entropy(out[name], target,
                                                                   ignore_index=-1)
    return loss


@torch.no_grad()
def _predict(model: MammoNet, x: torch.Tensor, device, batch_size: int) -> dict[str, np.ndarray]:
    model.eval()
    chunks: dict[str, list] = {}
    for i in range(0, len(x), batch_size):
        out = model(x[i:i + batch_size].to(device))
        for k, v in out.items():
            chunks.setdefault(k, []).append(v.float().cpu())
    return {k: torch.cat(v).numpy() for k, v in chunks.items()}


def evaluate(model: MammoNet, x: torch.Tensor, samples: list[Sample], level: float = 0.95,
             device="cpu", batch_size: int = 64) -> dict:
    """Held-out metrics of ``model`` on images ``x`` ``(N, 1, S, S)`` with ``samples``' labels.

    Returns ``{"lesion": {auroc, se, ci, n_pos, n_neg, accuracy, accuracy_ci, threshold},
    "attributes": {name: {accuracy, ci, n, n_unlabelled, classes, confusion}}}``; a metric
    that cannot be computed (e.g. a class absent) is ``null`` with a ``note``.
    """
    from mame_eval.stats.proportions import proportion_ci
    from mame_eval.stats.roc import delong_ci

    pred = _predict(model, x, device, batch_size)
    truth, attrs = _labels(samples)
    truth = truth.numpy().astype(int)
    prob = 1.0 / (1.0 + np.exp(-pred["lesion"].astype(np.float64)))
    n_pos, n_neg = int(truth.sum()), int(len(truth) - truth.sum())
    lesion: dict[str, Any] = {"n_pos": n_pos, "n_neg": n_neg, "threshold": 0.5}
    if n_pos >= 2 and n_neg >= 2:
        auc, se, (lo, hi) = delong_ci(truth, prob, level=level)
        lesion.update(auroc=auc, se=se, ci=[lo, hi], ci_method="DeLong")
    else:
        lesion.update(auroc=None, se=None, ci=None,
                      note=f"needs >= 2 lesion and >= 2 healthy held-out images "
                           f"(have {n_pos} and {n_neg})")
    if len(truth):
        correct = int(((prob >= 0.5).astype(int) == truth).sum())
        lesion.update(accuracy=correct / len(truth),
                      accuracy_ci=list(proportion_ci(correct, len(truth), level)))
    attributes = {}
    for name, classes in ATTRIBUTES.items():
        target = attrs[name].numpy()
        labelled = target >= 0
        n = int(labelled.sum())
        entry: dict[str, Any] = {"classes": list(classes), "n": n,
                                 "n_unlabelled": int(len(target) - n)}
        if n == 0 or name not in pred:
            entry.update(accuracy=None, ci=None, note="no labelled held-out image")
        else:
            guess = pred[name].argmax(1)[labelled]
            true = target[labelled]
            correct = int((guess == true).sum())
            confusion = np.zeros((len(classes), len(classes)), int)
            np.add.at(confusion, (true, guess), 1)
            entry.update(accuracy=correct / n, ci=list(proportion_ci(correct, n, level)),
                         ci_method="Clopper-Pearson", confusion=confusion.tolist())
        attributes[name] = entry
    return {"lesion": lesion, "attributes": attributes}


def _augment(x: torch.Tensor, shift: float, vflip: bool, gen: torch.Generator,
             intensity: float = 0.0) -> torch.Tensor:
    """Random translations (zero fill) of up to ``shift · S`` pixels and optional top–bottom
    flips of a batch ``(N, C, S, S)`` (image and mask channels move together), from ``gen``;
    with ``intensity = a > 0`` also a random gamma and gain of the image channel only
    (``x ← clamp(g · x^γ, 0, 1)``, ``log γ ~ U(−a, a)``, ``log g ~ U(−a/2, a/2)``; the black
    background stays black). ``intensity = 0`` draws nothing more from ``gen``."""
    if shift <= 0 and not vflip and intensity <= 0:
        return x
    n, _, h, w = x.shape
    p = int(round(shift * max(h, w)))
    out = torch.empty_like(x)
    padded = nn.functional.pad(x, (p, p, p, p)) if p else x
    offsets = torch.randint(0, 2 * p + 1, (n, 2), generator=gen) if p else torch.zeros(n, 2,
                                                                                       dtype=int)
    flips = torch.rand(n, generator=gen) < 0.5 if vflip else torch.zeros(n, dtype=torch.bool)
    for i in range(n):
        dy, dx = int(offsets[i, 0]), int(offsets[i, 1])
        crop = padded[i, :, dy:dy + h, dx:dx + w]
        out[i] = crop.flip(-2) if flips[i] else crop
    if intensity > 0:
        u = torch.rand(n, 2, generator=gen) * 2 - 1  # U(-1, 1)
        gamma = torch.exp(intensity * u[:, 0]).view(n, 1, 1)
        gain = torch.exp(0.5 * intensity * u[:, 1]).view(n, 1, 1)
        out[:, 0] = (gain * out[:, 0].clamp(min=0.0) ** gamma).clamp(0.0, 1.0)
    return out


def _lr_lambda(total: int, warmup: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))
    return f


def train_cad(config, progress: Callable[[int, int], None] | None = None) -> CadTrainResult:
    """Train MammoNet as ``config`` says (a :class:`CadTrainConfig`, a dict, or a TOML path).

    Args:
        config: the settings (see the module docstring).
        progress: called as ``progress(step, total_steps)`` after each optimiser step.

    Returns:
        A :class:`CadTrainResult`; everything is also written to ``config.output_dir``.

    Raises:
        ConfigError: invalid settings. DataError: an unusable dataset.
    """
    start = time.perf_counter()
    cfg = _coerce(config)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = _resolve_device(cfg.device)
    samples, data_report = load_samples(cfg.data_dir, cfg.labels_csv)
    train_idx, val_idx = split_by_source(samples, cfg.val_fraction, cfg.seed)
    if len(train_idx) < 2:
        raise DataError(f"{cfg.data_dir}: only {len(train_idx)} training images after the split")
    x_all = load_images([s.path for s in samples], cfg.image_size)
    masks_all, known_all = load_masks(samples, cfg.image_size) if cfg.mask_weight > 0 \
        else (None, None)
    lesion_all, attrs_all = _labels(samples)

    torch.manual_seed(cfg.seed)
    model = MammoNet(cfg.mammonet_config()).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    n_train = len(train_idx)
    batch = min(cfg.batch_size, n_train)
    steps_per_epoch = n_train // batch  # full batches only (BatchNorm needs > 1 image)
    total = cfg.max_steps or cfg.epochs * steps_per_epoch
    epochs = math.ceil(total / steps_per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, _lr_lambda(total, int(cfg.warmup_fraction * total)))
    gen = torch.Generator().manual_seed(cfg.seed)
    train_tensor = torch.tensor(train_idx)
    val_samples = [samples[i] for i in val_idx]
    history: list[dict] = []
    step = 0
    for epoch in range(1, epochs + 1):
        model.train()
        order = train_tensor[torch.randperm(n_train, generator=gen)]
        losses = []
        for b in range(steps_per_epoch):
            if step >= total:
                break
            idx = order[b * batch:(b + 1) * batch]
            xb = x_all[idx] if masks_all is None else torch.cat([x_all[idx], masks_all[idx]], 1)
            xb = _augment(xb, cfg.augment_shift, cfg.augment_vflip, gen,
                          cfg.augment_intensity).to(device)
            maps = None if masks_all is None else (xb[:, 1:], known_all[idx].to(device))
            out = model(xb[:, :1])
            loss = _loss(out, lesion_all[idx].to(device),
                         {k: v[idx].to(device) for k, v in attrs_all.items()},
                         cfg.attribute_weight, maps, cfg.mask_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            losses.append(float(loss.detach()))
            if progress:
                progress(step, total)
        record = {"epoch": epoch, "step": step, "train_loss": float(np.mean(losses)),
                  "lr": float(sched.get_last_lr()[0])}
        if val_idx:
            with torch.no_grad():
                model.eval()
                xv = x_all[val_idx]
                out = model(xv.to(device))
                maps = None if masks_all is None else (masks_all[val_idx].to(device),
                                                       known_all[val_idx].to(device))
                record["val_loss"] = float(_loss(
                    out, lesion_all[val_idx].to(device),
                    {k: v[val_idx].to(device) for k, v in attrs_all.items()},
                    cfg.attribute_weight, maps, cfg.mask_weight))
                auc = evaluate(model, xv, val_samples, cfg.level, device)["lesion"]["auroc"]
                record["val_lesion_auroc"] = auc
        history.append(record)

    model.eval()
    if val_idx:
        metrics = evaluate(model, x_all[val_idx], val_samples, cfg.level, device)
    else:
        metrics = {"lesion": {"auroc": None, "ci": None, "n_pos": 0, "n_neg": 0,
                              "note": "val_fraction = 0: no held-out set"},
                   "attributes": {a: {"accuracy": None, "n": 0,
                                      "note": "val_fraction = 0: no held-out set"}
                                  for a in ATTRIBUTES}}
    metrics = {
        "split": "held-out source images (val_fraction of each lesion stratum)",
        "level": cfg.level,
        "n_train": n_train, "n_val": len(val_idx),
        "n_val_sources": len({samples[i].source_id for i in val_idx}),
        **metrics,
        "data": data_report, "epochs": epochs, "steps": step, "seed": cfg.seed,
        "image_size": cfg.image_size,
        "wall_time_s": round(time.perf_counter() - start, 3),
    }
    out_dir = Path(cfg.output_dir)
    model.cpu().save_pretrained(out_dir)
    write_jsonl(out_dir / "history.jsonl", history)
    val_set = set(val_idx)
    split = pd.DataFrame([{"file": str(s.path.relative_to(cfg.data_dir)),
                           "source_id": s.source_id, "lesion": s.lesion,
                           "split": "val" if i in val_set else "train"}
                          for i, s in enumerate(samples)],
                         columns=["file", "source_id", "lesion", "split"])
    settings = cfg.model_dump(mode="json")
    inputs = {"data_dir": str(cfg.data_dir),
              "images": digest_files([s.path for s in samples], root=Path(cfg.data_dir))}
    if cfg.labels_csv:
        inputs["labels_csv"] = {"path": str(cfg.labels_csv),
                                **digest_files([cfg.labels_csv])}
    lesion = metrics["lesion"]
    record = RunRecord(
        kind="train cad", out=out_dir, settings=settings, inputs=inputs,
        tables={"split": split},
        documents={"metrics": metrics, "training_config": settings},
        summary={"lesion_auroc": lesion.get("auroc"), "lesion_auroc_ci": lesion.get("ci"),
                 "n_pos": lesion.get("n_pos"), "n_neg": lesion.get("n_neg"),
                 "n_train": n_train, "n_val": len(val_idx)},
        device=describe_device(device), started=start,
        extra_files=[out_dir / "history.jsonl", out_dir / "config.json",
                     out_dir / "model.safetensors"],
        provenance_extra={"seed": cfg.seed})
    record.write()
    return CadTrainResult(out_dir, model, metrics, history)


def _unit_float(t: torch.Tensor) -> torch.Tensor:
    """uint8 0–255 → float32 in [0, 1]; float tensors unchanged."""
    return t.float() / 255.0 if t.dtype == torch.uint8 else t


def fit_mammonet(cfg: CadTrainConfig, x: torch.Tensor, lesion: torch.Tensor,
                 attrs: Mapping[str, torch.Tensor], rows: list[int] | None = None,
                 masks: torch.Tensor | None = None, known: torch.Tensor | None = None,
                 progress: Callable[[int, int], None] | None = None
                 ) -> tuple[MammoNet, list[dict]]:
    """Train a new MammoNet on images already in memory, as :func:`train_cad` trains (same
    initialisation for a seed, optimiser, schedule, losses and augmentation), without a
    held-out set and without writing anything.

    For experiments that compose their own training sets (``mame-eval augment``: real plus
    synthetic lesions, the same number of steps in every arm).

    Args:
        cfg: the settings; ``data_dir``, ``output_dir``, ``labels_csv`` and ``val_fraction``
            are not used. The run takes ``cfg.max_steps`` optimiser steps when set, else
            ``cfg.epochs`` epochs of full batches.
        x: images ``(N, 1, S, S)`` at ``cfg.image_size``: float32 in [0, 1], or uint8
            (0–255, a quarter of the memory; each batch is divided by 255).
        lesion: ``(N,)`` float 0/1 labels. attrs: attribute name → ``(N,)`` long class index
            (−1 unlabelled).
        rows: the rows of ``x`` to train on (repeats allowed: oversampling); default all.
        masks, known: lesion masks ``(N, 1, S, S)`` (float in [0, 1] or uint8 0–255) and
            which rows have one (:func:`mame_eval.cad.data.load_masks`); needed when
            ``cfg.mask_weight > 0``.
        progress: ``progress(step, total_steps)`` after each optimiser step.

    Returns:
        ``(model, history)``: the model in eval mode on ``cfg.device``, one dict per epoch.

    Raises:
        DataError: fewer than 2 training rows, or masks missing while ``mask_weight > 0``.
    """
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = _resolve_device(cfg.device)
    rows = list(range(len(x))) if rows is None else [int(r) for r in rows]
    if len(rows) < 2:
        raise DataError(f"only {len(rows)} training images; need at least 2")
    use_masks = cfg.mask_weight > 0
    if use_masks and (masks is None or known is None):
        raise DataError("mask_weight > 0 needs the lesion masks (masks=, known=)")
    torch.manual_seed(cfg.seed)
    model = MammoNet(cfg.mammonet_config()).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    n_train = len(rows)
    batch = min(cfg.batch_size, n_train)
    steps_per_epoch = n_train // batch  # full batches only (BatchNorm needs > 1 image)
    total = cfg.max_steps or cfg.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, _lr_lambda(total, int(cfg.warmup_fraction * total)))
    gen = torch.Generator().manual_seed(cfg.seed)
    row_tensor = torch.tensor(rows)
    history: list[dict] = []
    step, epoch = 0, 0
    while step < total:
        epoch += 1
        model.train()
        order = row_tensor[torch.randperm(n_train, generator=gen)]
        losses = []
        for b in range(steps_per_epoch):
            if step >= total:
                break
            idx = order[b * batch:(b + 1) * batch]
            xb = _unit_float(x[idx])
            if use_masks:
                xb = torch.cat([xb, _unit_float(masks[idx])], 1)
            xb = _augment(xb, cfg.augment_shift, cfg.augment_vflip, gen,
                          cfg.augment_intensity).to(device)
            maps = (xb[:, 1:], known[idx].to(device)) if use_masks else None
            out = model(xb[:, :1])
            loss = _loss(out, lesion[idx].to(device),
                         {k: v[idx].to(device) for k, v in attrs.items()},
                         cfg.attribute_weight, maps, cfg.mask_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            losses.append(float(loss.detach()))
            if progress:
                progress(step, total)
        history.append({"epoch": epoch, "step": step, "train_loss": float(np.mean(losses)),
                        "lr": float(sched.get_last_lr()[0])})
    return model.eval(), history
