"""Pre-train a small AutoencoderKL on prepared mammograms: ``mame-eval train vae CONFIG.toml``.

Stable Diffusion's VAE was trained once, before and apart from the text-to-image UNet, and
DreamBooth keeps it frozen. A tiny model built from scratch (``pretrained_model = "tiny"``) has
no such VAE — a random, frozen one cannot decode anything — so the embedded MAM-E-tiny is made
in the same two stages: this autoencoder first, then ``train healthy`` with ``vae = <folder>``.

The loop, top to bottom::

    config → Accelerator → AutoencoderKL (SD layout, small widths) → images of DATA/healthy and
    DATA/lesion/images → for each step: random crops → encode → sample → decode →
    L1 + kl_weight · KL → step → log CSV → checkpoint every N (resume "latest")
    → scaling_factor = 1 / std(latents) over the data (SD's 0.18215 was found the same way)
    → save_pretrained + a reconstruction grid + vae_info.json

Training on random crops is cheap and enough: the autoencoder is convolutional, and only its
small mid-block attention ever sees the whole latent grid.
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
        factor = 2 ** (len(self.block_out_channels) - 1)
        for name in ("resolution", "crop"):
            value = getattr(self, name)
            if value is not None and value % factor:
                raise ValueError(f"{name} {value} must be a multiple of {factor} (the VAE "
                                 "downsampling factor)")
        if self.crop is not None and self.crop > self.resolution:
            raise ValueError(f"crop {self.crop} exceeds resolution {self.resolution}")
        return self


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


def _crops(images, crop: int | None, generator):
    import torch

    if crop is None:
        return images
    size = images.shape[-1]
    ys = torch.randint(0, size - crop + 1, (len(images),), generator=generator)
    xs = torch.randint(0, size - crop + 1, (len(images),), generator=generator)
    return torch.stack([im[:, y:y + crop, x:x + crop] for im, y, x in
                        zip(images, ys.tolist(), xs.tolist(), strict=True)])


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
    accelerator = Accelerator(mixed_precision=config.mixed_precision)
    set_seed(config.seed)
    vae = build_vae(config, config.seed)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=config.learning_rate, weight_decay=0.0)
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
        index = torch.randint(0, len(images), (config.train_batch_size,), generator=generator)
        x = _crops(images[index], config.crop, generator).to(accelerator.device)
        with accelerator.autocast():
            posterior = accelerator.unwrap_model(vae).encode(x).latent_dist
            noise = torch.randn(posterior.mean.shape, generator=generator).to(x.device)
            z = posterior.mean + posterior.std * noise
            recon = accelerator.unwrap_model(vae).decode(z).sample
            l1 = (recon.float() - x.float()).abs().mean()
            kl = posterior.kl().mean() / posterior.mean[0].numel()
            loss = l1 + config.kl_weight * kl
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
    # SD chose 0.18215 so that scaled latents have unit variance; do the same for ours.
    model.register_to_config(scaling_factor=1.0 / std)
    result.global_step, result.scaling_factor, result.reconstruction_l1 = step, 1.0 / std, rec_l1
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
