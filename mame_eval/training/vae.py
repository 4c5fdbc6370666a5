"""Pre-train a small AutoencoderKL on prepared mammograms: ``mame-eval train vae CONFIG.toml``.

Stable Diffusion's VAE was trained once, before and apart from the text-to-image UNet, and
DreamBooth keeps it frozen. A tiny model built from scratch (``pretrained_model = "tiny"``) has
no such VAE — a random, frozen one cannot decode anything — so the embedded MAM-E-tiny is made
in the same two stages: this autoencoder first, then ``train healthy`` with ``vae = <folder>``.

The loop, top to bottom::

    config → Accelerator → AutoencoderKL (SD layout, small widths; or ``pretrained_vae``) →
    images of DATA/healthy and DATA/lesion/images → for each step: random crops (a share of
    them on a lesion) → encode → sample → decode → L1 (+ lesion_weight · L1 inside the lesion
    masks) + kl_weight · KL → step → log CSV → checkpoint every N (resume "latest")
    → scaling_factor = 1 / std(latents) over the data (SD's 0.18215 was found the same way)
    → save_pretrained + a reconstruction grid + vae_info.json

Training on random crops is cheap and enough: the autoencoder is convolutional, and only its
small mid-block attention ever sees the whole latent grid.

**Decoder fine-tuning** (``pretrained_vae = …``, ``train_decoder_only = true``): the encoder
stays frozen, so every latent a UNet was trained on keeps its meaning and the scaling factor
is kept; only the decoder learns to draw them better (as Stability fine-tuned SD's decoder
for its ft-MSE VAE). Random crops of whole mammograms hardly ever hold a mass (a few per
cent of the pixels of a few images), so a decoder trained on them renders masses as soft
smudges: MAM-E-tiny's first decoder dropped MammoNet-tiny's median lesion probability of
unseen phantom masses from 0.995 to 0.76 in a plain encode → decode. ``lesion_crop_fraction``
centres that share of the crops on a lesion box, ``lesion_weight`` counts the error inside the
lesion masks extra.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from mame_eval.config import load_config
from mame_eval.errors import ConfigError, DataError, MameError
from mame_eval.io import save_png, write_json

VAE_LOG_COLUMNS = ("step", "loss", "l1", "kl", "lr", "elapsed_s")


class VaeTrainConfig(BaseModel):
    """One autoencoder pre-training run; every key validated, an unknown key is an error."""

    model_config = ConfigDict(extra="forbid")

    task: Literal["vae"] | None = Field(default=None, description="Guard: must be 'vae'.")
    data_dir: Path = Field(description="Prepared dataset root (healthy/ and lesion/images/).")
    output_dir: Path
    resolution: int = Field(default=128, ge=16, description="Images are resized to this side.")
    crop: int | None = Field(default=64, ge=8, description="Random square crops of this side "
                             "(None: whole images).")
    block_out_channels: list[int] = Field(default=[32, 64, 64], min_length=1)
    layers_per_block: int = Field(default=1, ge=1)
    latent_channels: int = Field(default=4, ge=1)
    pretrained_vae: Path | None = Field(
        default=None, description="Start from this AutoencoderKL (a folder from `train vae`, "
        "or a pipeline folder with vae/) instead of a new one; its architecture is used, and "
        "the architecture keys above, if given, must agree with it.")
    train_decoder_only: bool = Field(
        default=False, description="Freeze the encoder (needs pretrained_vae): the latents a "
        "UNet was trained on keep their meaning, and the scaling factor is kept.")
    lesion_crop_fraction: float = Field(
        default=0.0, ge=0, le=1, description="Share of each batch's crops centred (±crop/4) on "
        "a lesion box of DATA/lesion/metadata.jsonl instead of placed at random.")
    lesion_weight: float = Field(
        default=0.0, ge=0, description="Extra weight of the L1 error inside the lesion masks "
        "(mean over the mask pixels of the batch), on top of the L1 over every pixel.")
    train_batch_size: int = Field(default=16, ge=1)
    max_train_steps: int = Field(ge=1)
    learning_rate: float = Field(default=1e-3, gt=0)
    lr_scheduler: Literal["constant", "cosine", "linear"] = "cosine"
    lr_warmup_steps: int = Field(default=0, ge=0)
    kl_weight: float = Field(default=1e-6, ge=0, description="Weight of the KL term; both "
                             "terms are per-element means here (SD's VAE used 1e-6 on sums, "
                             "which this scale reads as ~1e-5 to 1e-4): a small weight keeps "
                             "the latents close to deterministic.")
    max_grad_norm: float = Field(default=1.0, gt=0)
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    seed: int = 0
    checkpointing_steps: int = Field(default=500, ge=1)
    resume_from_checkpoint: Literal["latest", "none"] | None = Field(
        default="latest", description="'latest' resumes from the newest checkpoint-N; 'none' "
        "starts over.")

    @model_validator(mode="after")
    def _check(self) -> VaeTrainConfig:
        # (a pretrained autoencoder's own factor is checked when it is loaded)
        problem = None if self.pretrained_vae is not None else _size_problem(
            self, 2 ** (len(self.block_out_channels) - 1), "the VAE downsampling factor")
        if problem:
            raise ValueError(problem)
        if self.crop is not None and self.crop > self.resolution:
            raise ValueError(f"crop {self.crop} exceeds resolution {self.resolution}")
        if self.train_decoder_only and self.pretrained_vae is None:
            raise ValueError("train_decoder_only = true needs pretrained_vae (a trained "
                             "autoencoder whose encoder is kept)")
        return self


def _size_problem(config: VaeTrainConfig, factor: int, whose: str) -> str | None:
    """Why ``resolution`` or ``crop`` cannot pass an autoencoder downsampling by ``factor``."""
    for name in ("resolution", "crop"):
        value = getattr(config, name)
        if value is not None and value % factor:
            return f"{name} {value} must be a multiple of {factor} ({whose})"
    return None


def load_vae_config(path: Path | str, overrides: list[str] | tuple[str, ...] = ()
                    ) -> VaeTrainConfig:
    """Read and validate an autoencoder TOML; ``key=value`` overrides as for ``train healthy``."""
    return load_config(VaeTrainConfig, path, overrides, what="autoencoder config")


@dataclass
class VaeTrainResult:
    output_dir: str
    global_step: int
    resumed_from: str | None
    final_loss: float | None
    scaling_factor: float
    reconstruction_l1: float  # mean |x − decode(encode(x))| on whole images, 8-bit units
    # (both measured on up to 256 evenly spaced training images)
    losses: list[float] = field(default_factory=list)
    wall_time_s: float = 0.0


def _image_files(data_dir: Path) -> list[Path]:
    files = sorted((data_dir / "healthy").glob("*.png"))
    files += sorted((data_dir / "lesion" / "images").glob("*.png"))
    if not files:
        raise DataError(f"{data_dir}: no prepared images in healthy/ or lesion/images/; "
                        f"prepare the data first (`mame-eval prepare RAW {data_dir}`)")
    return files


def _load_all(files: list[Path], resolution: int):
    """All images as one float32 tensor (N, 3, R, R) in [-1, 1] (small data sets only)."""
    import torch
    from PIL import Image

    out = np.empty((len(files), resolution, resolution), dtype=np.uint8)
    for i, f in enumerate(files):
        try:
            with Image.open(f) as im:
                im = im.convert("L")
                if im.size != (resolution, resolution):
                    im = im.resize((resolution, resolution), Image.BILINEAR)
                out[i] = np.asarray(im)
        except OSError as exc:
            raise DataError(f"{f}: not a readable image ({exc}); prepare the data again") from None
    gray = torch.from_numpy(out).float() / 127.5 - 1.0
    return gray[:, None].expand(-1, 3, -1, -1).contiguous()


def build_vae(config: VaeTrainConfig, seed: int):
    import torch
    from diffusers import AutoencoderKL

    n = len(config.block_out_channels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoencoderKL(
            in_channels=3, out_channels=3, block_out_channels=tuple(config.block_out_channels),
            down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
            latent_channels=config.latent_channels, layers_per_block=config.layers_per_block,
            norm_num_groups=min(32, config.block_out_channels[0]),
            sample_size=config.resolution)


def _lesion_masks(data_dir: Path, files: list[Path], resolution: int):
    """Lesion masks of every image (N, R, R) bool, and [(image index, box at R px)].

    From DATA/lesion/metadata.jsonl (``file_name``, ``mask_file``, ``box``) as ``prepare``
    writes it; healthy images get an empty mask.
    """
    import json

    import torch
    from PIL import Image

    where = {f.resolve(): i for i, f in enumerate(files)}
    masks = torch.zeros((len(files), resolution, resolution), dtype=torch.bool)
    boxes: list[tuple[int, tuple[float, float, float, float]]] = []
    meta = data_dir / "lesion" / "metadata.jsonl"
    if not meta.is_file():
        return masks, boxes
    for n, line in enumerate(meta.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            i = where[(data_dir / "lesion" / row["file_name"]).resolve()]
            with Image.open(data_dir / "lesion" / row["mask_file"]) as im:
                scale = resolution / im.size[0]
                mask = im.convert("L").resize((resolution, resolution), Image.NEAREST)
            box = tuple(float(v) * scale for v in row["box"])
        except (ValueError, KeyError, TypeError, OSError) as exc:
            raise DataError(f"{meta}, line {n}: not a lesion record with an existing image, "
                            f"mask_file and box ({type(exc).__name__}: {exc}); prepare the data "
                            "again") from None
        masks[i] |= torch.from_numpy(np.asarray(mask) >= 128)
        boxes.append((i, box))  # type: ignore[arg-type]
    return masks, boxes


def _lesion_crop_corners(boxes, picks, size: int, crop: int, generator):
    """Top-left corners of crops centred on the picked lesion boxes, jittered by ±crop/4."""
    import torch

    jitter = (torch.rand((len(picks), 2), generator=generator) - 0.5) * (crop / 2)
    ys, xs = [], []
    for (_, (x0, y0, x1, y1)), (jy, jx) in zip((boxes[k] for k in picks), jitter.tolist(),
                                              strict=True):
        ys.append(int(np.clip(round((y0 + y1) / 2 + jy - crop / 2), 0, size - crop)))
        xs.append(int(np.clip(round((x0 + x1) / 2 + jx - crop / 2), 0, size - crop)))
    return ys, xs


def _batch(images, config: VaeTrainConfig, generator, masks=None, boxes=()):
    """One step's crops (B, 3, c, c) and, with ``masks``, their lesion masks (B, 1, c, c).

    Draws image indices, then crop corners (none for whole images), in that order; with
    ``lesion_crop_fraction`` the first crops are then moved onto lesion boxes.
    """
    import torch

    batch, size = config.train_batch_size, images.shape[-1]
    index = torch.randint(0, len(images), (batch,), generator=generator)
    if config.crop is None:
        crop, ys, xs = size, [0] * batch, [0] * batch
    else:
        crop = config.crop
        ys = torch.randint(0, size - crop + 1, (batch,), generator=generator).tolist()
        xs = torch.randint(0, size - crop + 1, (batch,), generator=generator).tolist()
    n_lesion = round(config.lesion_crop_fraction * batch) if boxes else 0
    if n_lesion:
        picks = torch.randint(0, len(boxes), (n_lesion,), generator=generator).tolist()
        index[:n_lesion] = torch.tensor([boxes[k][0] for k in picks])
        ys[:n_lesion], xs[:n_lesion] = _lesion_crop_corners(boxes, picks, size, crop, generator)

    def cut(stack):
        return torch.stack([stack[i, ..., y:y + crop, x:x + crop]
                            for i, y, x in zip(index.tolist(), ys, xs, strict=True)])

    return cut(images), (cut(masks)[:, None].float() if masks is not None else None)


def pretrained_vae(config: VaeTrainConfig):
    """``config.pretrained_vae`` in float32; architecture keys given in the config must agree."""
    from mame_eval.training.trainer import load_vae, to_float32

    vae = load_vae(config.pretrained_vae, key="pretrained_vae")
    to_float32(vae)
    have = {"block_out_channels": list(vae.config.block_out_channels),
            "layers_per_block": vae.config.layers_per_block,
            "latent_channels": vae.config.latent_channels}
    for key in sorted(config.model_fields_set & have.keys()):
        if getattr(config, key) != have[key]:
            raise ConfigError(f"{key} = {getattr(config, key)!r} disagrees with pretrained_vae "
                              f"{config.pretrained_vae} ({have[key]!r}); leave it out")
    problem = _size_problem(config, 2 ** (len(have["block_out_channels"]) - 1),
                            f"the downsampling of pretrained_vae {config.pretrained_vae}")
    if problem:
        raise ConfigError(problem)
    return vae


def _latent_std_and_l1(vae, images, device, batch: int = 32) -> tuple[float, float]:
    import torch

    latents, l1 = [], 0.0
    with torch.no_grad():
        for start in range(0, len(images), batch):
            x = images[start:start + batch].to(device)
            z = vae.encode(x).latent_dist.mean
            latents.append(z.float().cpu())
            recon = vae.decode(z).sample.clamp(-1, 1)
            l1 += float((recon - x).abs().sum()) * 127.5
    std = float(torch.cat(latents).std())
    return std, l1 / images.numel()


def train_vae(config: VaeTrainConfig, progress: Callable[[int, int], None] | None = None
              ) -> VaeTrainResult:
    """Pre-train the autoencoder; saves an :class:`~diffusers.AutoencoderKL` folder."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from diffusers.optimization import get_scheduler

    from mame_eval.training.trainer import list_checkpoints

    if config.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise ConfigError("mixed_precision = 'fp16' needs a CUDA GPU; use 'no' on the CPU")
    start = time.perf_counter()
    out = Path(config.output_dir)
    files = _image_files(Path(config.data_dir))
    images = _load_all(files, config.resolution)
    lesion_training = config.lesion_crop_fraction > 0 or config.lesion_weight > 0
    masks, boxes = (_lesion_masks(Path(config.data_dir), files, config.resolution)
                    if lesion_training else (None, []))
    if lesion_training and not boxes:
        raise DataError(f"{config.data_dir}: lesion_crop_fraction / lesion_weight need lesion "
                        "samples (lesion/metadata.jsonl with boxes); none found")
    accelerator = Accelerator(mixed_precision=config.mixed_precision)
    set_seed(config.seed)
    vae = (pretrained_vae(config) if config.pretrained_vae is not None
           else build_vae(config, config.seed))
    if config.train_decoder_only:
        vae.requires_grad_(False)
        vae.decoder.requires_grad_(True)
        if vae.post_quant_conv is not None:
            vae.post_quant_conv.requires_grad_(True)
    kept_scaling = float(vae.config.scaling_factor) if config.train_decoder_only else None
    optimizer = torch.optim.AdamW([p for p in vae.parameters() if p.requires_grad],
                                  lr=config.learning_rate, weight_decay=0.0)
    schedule = get_scheduler(config.lr_scheduler, optimizer,
                             num_warmup_steps=min(config.lr_warmup_steps,
                                                  config.max_train_steps),
                             num_training_steps=config.max_train_steps)
    vae, optimizer, schedule = accelerator.prepare(vae, optimizer, schedule)
    accelerator.register_for_checkpointing(schedule)

    step, resumed = 0, None
    found = list_checkpoints(out) if config.resume_from_checkpoint == "latest" else []
    if found:
        try:
            accelerator.load_state(str(found[-1]))
        except (RuntimeError, KeyError, ValueError, OSError) as exc:
            raise ConfigError(
                f"{found[-1]}: cannot resume from this checkpoint ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:160]}); were the architecture keys changed? Use a "
                "new output_dir, or resume_from_checkpoint = \"none\" to start over") from None
        step, resumed = int(found[-1].name.split("-")[-1]), str(found[-1])
    log_csv = out / "logs" / "vae_log.csv"
    if accelerator.is_main_process:
        log_csv.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if log_csv.is_file():
            with open(log_csv, newline="") as fh:
                kept = [r for r in csv.DictReader(fh) if int(r["step"]) <= step]
        with open(log_csv, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=VAE_LOG_COLUMNS)
            writer.writeheader()
            writer.writerows(kept)
    result = VaeTrainResult(str(out), step, resumed, None, 1.0, math.nan)
    if progress:
        progress(step, config.max_train_steps)
    vae.train()
    while step < config.max_train_steps:
        # Randomness from (seed, step) alone: a resumed run draws what the uninterrupted one would.
        generator = torch.Generator("cpu").manual_seed(config.seed * 1_000_003 + step)
        x, m = _batch(images, config, generator, masks, boxes)
        x = x.to(accelerator.device)
        m = m.to(accelerator.device) if m is not None else None
        model = accelerator.unwrap_model(vae)
        with accelerator.autocast():
            with torch.set_grad_enabled(not config.train_decoder_only):
                posterior = model.encode(x).latent_dist
            noise = torch.randn(posterior.mean.shape, generator=generator).to(x.device)
            z = posterior.mean + posterior.std * noise
            recon = model.decode(z).sample
            error = (recon.float() - x.float()).abs()
            l1 = error.mean()
            kl = posterior.kl().mean() / posterior.mean[0].numel()
            loss = l1 + config.kl_weight * kl
            if config.lesion_weight > 0 and float(m.sum()) > 0:
                inside = (error * m).sum() / (m.sum() * error.shape[1])
                loss = loss + config.lesion_weight * inside
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(vae.parameters(), config.max_grad_norm)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        value = float(loss.detach())
        if not math.isfinite(value):
            raise MameError(f"autoencoder training diverged: loss {value} at step {step}; "
                            "lower learning_rate")
        result.losses.append(value)
        result.final_loss = value
        if accelerator.is_main_process:
            with open(log_csv, "a", newline="") as fh:
                csv.DictWriter(fh, fieldnames=VAE_LOG_COLUMNS).writerow({
                    "step": step, "loss": value, "l1": float(l1.detach()),
                    "kl": float(kl.detach()),
                    "lr": schedule.get_last_lr()[0],
                    "elapsed_s": round(time.perf_counter() - start, 3)})
        if step % config.checkpointing_steps == 0 or step == config.max_train_steps:
            for old in list_checkpoints(out)[:-1]:  # keep the newest two
                import shutil

                shutil.rmtree(old, ignore_errors=True)
            accelerator.save_state(str(out / f"checkpoint-{step}"))
        if progress:
            progress(step, config.max_train_steps)

    model = accelerator.unwrap_model(vae).eval()
    # Statistics on an evenly spaced subset: decoding every image would cost minutes on a CPU.
    subset = images[np.linspace(0, len(images) - 1, min(len(images), 256)).astype(int)]
    std, rec_l1 = _latent_std_and_l1(model, subset, accelerator.device)
    # SD chose 0.18215 so that scaled latents have unit variance; do the same for ours. A
    # frozen encoder keeps the factor its UNets were trained with.
    scaling = kept_scaling if kept_scaling is not None else 1.0 / std
    model.register_to_config(scaling_factor=scaling)
    result.global_step, result.scaling_factor, result.reconstruction_l1 = step, scaling, rec_l1
    if accelerator.is_main_process:
        model.save_pretrained(out, safe_serialization=True)
        _reconstruction_grid(model, images[:8], accelerator.device, out / "reconstruction.png")
        result.wall_time_s = round(time.perf_counter() - start, 3)
        write_json(out / "vae_info.json", {"result": asdict(result) | {"losses": None},
                                           "config": config.model_dump(mode="json"),
                                           "n_images": len(files)})
    result.wall_time_s = round(time.perf_counter() - start, 3)
    return result


def _reconstruction_grid(vae, images, device, path: Path) -> None:
    """Top row: inputs; bottom row: their reconstructions."""
    import torch

    from mame_eval.training.validation import grid

    with torch.no_grad():
        recon = vae.decode(vae.encode(images.to(device)).latent_dist.mean).sample.cpu()

    def as_uint8(t):
        return [np.round((im.permute(1, 2, 0).numpy().clip(-1, 1) + 1) * 127.5).astype(np.uint8)
                for im in t]

    save_png(path, grid([as_uint8(images), as_uint8(recon)]))
