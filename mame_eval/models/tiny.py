"""Tiny random-initialised Stable Diffusion pipelines of the exact SD v1.5 family.

Same classes, same wiring, same scheduler betas as SD v1.5 — only the widths, depths and the
tokenizer are small, so every code path that serves the real models (training, sampling,
inpainting, saving, loading) runs on a CPU in seconds. Used by the tests and as the starting
point of the embedded MAM-E-tiny models (``pretrained_model = "tiny"`` in a training config).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from mame_eval.errors import ModelError

TASKS = ("txt2img", "inpaint")

#: SD v1.5's noise schedule (its ``scheduler/scheduler_config.json``): the tiny models train and
#: sample on exactly the same betas as the real ones.
SD15_SCHEDULER = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
}


@dataclass(frozen=True)
class TinySpec:
    """Sizes of a tiny pipeline. The defaults build a ~1 M-parameter model for 64-px images."""

    resolution: int = 64
    unet_channels: tuple[int, ...] = (32, 64)
    vae_channels: tuple[int, ...] = (32, 64)
    layers_per_block: int = 1
    text_hidden: int = 32
    text_layers: int = 1
    attention_head_dim: int = 8
    #: The schedule fix of Lin et al. (2023, "Common diffusion noise schedules and sample steps
    #: are flawed"): SD's betas rescaled to zero terminal SNR, v-prediction, trailing
    #: timesteps. SD's own schedule leaves a trace of the image in its noisiest step, so a
    #: model trained from scratch on it takes the brightness of flat regions (a mammogram's
    #: black air) from the random mean of the starting noise; with zero terminal SNR the last
    #: step is pure noise in training as at sampling time.
    zero_terminal_snr: bool = False

    def __post_init__(self) -> None:
        factor = 2 ** (len(self.vae_channels) - 1)
        if self.resolution % (factor * 2 ** (len(self.unet_channels) - 1)):
            raise ModelError(
                f"tiny resolution {self.resolution}: must be divisible by "
                f"{factor * 2 ** (len(self.unet_channels) - 1)} (VAE and UNet downsampling)")


def _check_task(task: str) -> str:
    if task not in TASKS:
        raise ModelError(f"task {task!r}: expected one of {', '.join(TASKS)}")
    return task


def tiny_components(task: str = "txt2img", seed: int = 0, spec: TinySpec | None = None) -> dict:
    """The random-initialised components (vae, text_encoder, tokenizer, unet, scheduler).

    Weights depend only on ``seed`` (the global torch RNG is left untouched).
    """
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from mame_eval.models.tokenizer import build_tokenizer

    _check_task(task)
    spec = spec or TinySpec()
    tokenizer = build_tokenizer()
    n_blocks = len(spec.unet_channels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # The SD layout: plain blocks at the highest resolution, cross-attention below it
        # (SD v1.5 has cross-attention in its first three of four blocks; with two blocks we
        # keep one of each so both kinds of block are exercised).
        unet = UNet2DConditionModel(
            sample_size=spec.resolution // 2 ** (len(spec.vae_channels) - 1),
            in_channels=9 if task == "inpaint" else 4,
            out_channels=4,
            block_out_channels=spec.unet_channels,
            layers_per_block=spec.layers_per_block,
            down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n_blocks - 1),
            up_block_types=("CrossAttnUpBlock2D",) * (n_blocks - 1) + ("UpBlock2D",),
            cross_attention_dim=spec.text_hidden,
            attention_head_dim=spec.attention_head_dim,
            norm_num_groups=min(32, spec.unet_channels[0]),
        )
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            block_out_channels=spec.vae_channels,
            down_block_types=("DownEncoderBlock2D",) * len(spec.vae_channels),
            up_block_types=("UpDecoderBlock2D",) * len(spec.vae_channels),
            latent_channels=4,
            layers_per_block=1,
            norm_num_groups=min(32, spec.vae_channels[0]),
            sample_size=spec.resolution,
        )
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=spec.text_hidden,
            intermediate_size=spec.text_hidden * 4,
            num_hidden_layers=spec.text_layers,
            num_attention_heads=max(1, spec.text_hidden // 8),
            max_position_embeddings=tokenizer.model_max_length,
            projection_dim=spec.text_hidden,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ))
    # SD v1.5 ships PNDM; load_pipeline swaps in DPM-Solver++ and training uses DDPM, both
    # built from this same config.
    if spec.zero_terminal_snr:
        from diffusers import DDIMScheduler

        scheduler = DDIMScheduler(**{k: v for k, v in SD15_SCHEDULER.items()
                                     if k != "skip_prk_steps"},
                                  prediction_type="v_prediction", timestep_spacing="trailing",
                                  rescale_betas_zero_snr=True, clip_sample=False)  # latents
    else:
        scheduler = PNDMScheduler(**SD15_SCHEDULER)
    return {"vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer, "unet": unet,
            "scheduler": scheduler}


def create_tiny_pipeline(task: str = "txt2img", seed: int = 0, spec: TinySpec | None = None):
    """A tiny random :class:`StableDiffusionPipeline` (``txt2img``, 4-channel UNet) or
    :class:`StableDiffusionInpaintPipeline` (``inpaint``, 9-channel UNet); safety checker off."""
    from diffusers import StableDiffusionInpaintPipeline, StableDiffusionPipeline

    inpaint = _check_task(task) == "inpaint"
    cls = StableDiffusionInpaintPipeline if inpaint else StableDiffusionPipeline
    pipe = cls(**tiny_components(task, seed, spec), safety_checker=None, feature_extractor=None,
               requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_tiny_pipeline(out: Path, task: str = "txt2img", seed: int = 0,
                       spec: TinySpec | None = None) -> Path:
    """Build a tiny pipeline and ``save_pretrained`` it (safetensors) into ``out``."""
    import json

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ModelError(f"{out}: folder exists and is not empty; choose a new output folder")
    from mame_eval.models.loading import quiet

    pipe = create_tiny_pipeline(task, seed, spec)
    with quiet():
        pipe.save_pretrained(out, safe_serialization=True)
    spec_dict = {"task": task, "seed": seed, **asdict(spec or TinySpec())}
    (out / "tiny_spec.json").write_text(json.dumps(spec_dict, indent=2) + "\n")
    return out
