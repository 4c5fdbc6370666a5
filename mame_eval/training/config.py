"""Training configuration: a TOML file validated before any work starts.

Every key of :class:`TrainConfig` may appear in the file; an unknown key is an error (a typo must
not silently fall back to a default). ``--set key=value`` overrides a key
(:mod:`mame_eval.config`). Relative paths are relative to the current folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mame_eval.config import load_config as load_model_config
from mame_eval.errors import ConfigError
from mame_eval.training.data import MaskAugmentation

TASKS = ("healthy", "inpaint")
LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine",
                 "cosine_with_restarts", "polynomial")


class TinyOptions(BaseModel):
    """Sizes of the random tiny model used when ``pretrained_model = "tiny"``."""

    model_config = ConfigDict(extra="forbid")

    seed: int = 0
    unet_channels: list[int] = Field(default=[32, 64], min_length=1)
    vae_channels: list[int] = Field(default=[32, 64], min_length=1)
    layers_per_block: int = Field(default=1, ge=1)
    text_hidden: int = Field(default=32, ge=8)
    text_layers: int = Field(default=1, ge=1)
    attention_head_dim: int = Field(default=8, ge=1)
    zero_terminal_snr: bool = Field(
        default=False, description="Zero-terminal-SNR schedule with v-prediction (Lin et al. "
        "2023) instead of SD's: see mame_eval.models.tiny.TinySpec.")


class TrainConfig(BaseModel):
    """One fine-tuning run (DreamBooth-style as in the paper: UNet + text encoder, VAE frozen)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # what to train
    task: Literal["healthy", "inpaint"] | None = Field(
        default=None, description="Guard: when set, must match `train healthy|inpaint`.")
    pretrained_model: str = Field(
        description="Hub id, local save_pretrained folder, or 'tiny' (a random tiny SD model).")
    revision: str | None = None
    tiny: TinyOptions = Field(default_factory=TinyOptions)
    vae: Path | None = Field(
        default=None, description="An AutoencoderKL folder (from `mame-eval train vae`, or a "
        "pipeline folder with vae/) that replaces the base model's VAE. Needed with "
        "pretrained_model = 'tiny', whose random VAE cannot reconstruct images.")
    train_text_encoder: bool = True
    prompt_dropout: float = Field(
        default=0.0, ge=0.0, lt=1.0, description="Share of training prompts replaced by the "
        "empty prompt, so the model learns the unconditional branch that classifier-free "
        "guidance needs. 0 when fine-tuning SD (it has one); ~0.1 when training from scratch.")

    # data
    data_dir: Path = Field(description="Prepared dataset root (healthy/ and lesion/).")
    output_dir: Path
    resolution: int = Field(default=512, ge=8)
    random_flip: bool = Field(
        default=False, description="Off: prepare mirrors every breast to one side on purpose.")
    max_train_samples: int | None = Field(default=None, ge=1)
    mask_augmentation: MaskAugmentation | None = Field(
        default=None, description="Inpainting only: random mask shapes and sizes around each "
        "lesion (see mame_eval.training.data.MaskAugmentation); none: the prepared boxes.")
    mask_loss_weight: float = Field(
        default=1.0, ge=1.0, description="Inpainting only: the weight of the loss inside the "
        "mask (at the latent resolution, as the UNet sees it) relative to outside; the loss is "
        "the weighted mean of the squared errors. 1: the plain MSE of the paper. Outside the "
        "mask the model only has to reproduce the known image, so a weight > 1 spends more of "
        "the training on the lesion itself.")
    dataloader_num_workers: int = Field(default=0, ge=0)
    cache_latents: bool = Field(
        default=False, description="Encode every image once with the frozen VAE before "
        "training and sample from the cached latent distributions (faster when the VAE is a "
        "large share of a step). random_flip is a fixed coin per image: cached as well.")

    # optimisation
    train_batch_size: int = Field(default=1, ge=1)
    gradient_accumulation_steps: int = Field(default=1, ge=1)
    max_train_steps: int = Field(ge=1)
    learning_rate: float = Field(default=1e-6, gt=0)
    scale_lr: bool = False
    lr_scheduler: Literal[LR_SCHEDULERS] = "constant"  # type: ignore[valid-type]
    lr_warmup_steps: int = Field(default=0, ge=0)
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 1e-2
    adam_epsilon: float = 1e-8
    max_grad_norm: float = Field(default=1.0, gt=0)
    noise_offset: float = Field(default=0.0, ge=0)

    # memory and speed
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    use_8bit_adam: bool = False
    gradient_checkpointing: bool = False
    attention: Literal["sdpa", "xformers"] = "sdpa"
    allow_tf32: bool = True
    set_grads_to_none: bool = True

    # reproducibility
    seed: int = 0

    # validation images (paper Figs 12-15): fixed noise, so grids are comparable over steps
    validation_prompts: list[str] = Field(default_factory=list)
    validation_negative_prompt: str = ""
    validation_steps: int = Field(default=0, ge=0, description="0: only after the last step.")
    num_validation_images: int = Field(default=4, ge=1)
    validation_guidance_scale: float = Field(default=4.0, ge=0)
    validation_inference_steps: int = Field(default=24, ge=1)
    validation_scheduler: str = "dpm++"

    # checkpoints and logs
    checkpointing_steps: int = Field(default=500, ge=1)
    checkpoints_total_limit: int | None = Field(default=None, ge=1)
    resume_from_checkpoint: str | None = Field(
        default=None, description="'latest' or a checkpoint folder.")
    report_to: Literal["tensorboard", "none"] = "tensorboard"

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.resolution % 8:
            raise ValueError(f"resolution {self.resolution} must be a multiple of 8")
        return self


def load_config(path: Path | str, overrides: list[str] | tuple[str, ...] = (),
                task: str | None = None) -> TrainConfig:
    """Read and validate a training TOML; apply ``key=value`` overrides; check the task."""
    config = load_model_config(TrainConfig, path, overrides, what="training config")
    if task is not None:
        if task not in TASKS:
            raise ConfigError(f"task {task!r}: expected one of {', '.join(TASKS)}")
        if config.task is not None and config.task != task:
            raise ConfigError(f"{path}: task = {config.task!r}, but `train {task}` was asked "
                              f"for; use `mame-eval train {config.task}`")
    return config
