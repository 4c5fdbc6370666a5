"""Fine-tune MAM-E on Accelerate: healthy text-to-image and lesion inpainting (DESIGN §1, §6).

DreamBooth-style as in the paper: the UNet *and* the CLIP text encoder are trained, the VAE is
frozen, the loss is the MSE between the UNet's prediction and the added noise (ε-prediction; the
velocity if the base scheduler predicts ``v``). Inpainting feeds the 9-channel UNet
``[noisy latents, mask, masked-image latents]``; a 4-channel starting UNet gets ``conv_in``
widened with zero weights, so it starts out computing exactly what it did before.

The loop, top to bottom::

    config → Accelerator (mixed precision, accumulation, trackers) → components
    → dataset/dataloader → optimizer (AdamW, 8-bit on CUDA) + lr schedule → accelerator.prepare
    → resume "latest" → for each step: encode → noise → predict → MSE → backward → step
        → log (CSV + TensorBoard) → checkpoint every N → validation grid every N
    → save_pretrained pipeline (what load_pipeline loads) + train_info.json

Runs unchanged under ``accelerate launch`` (one process per device).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mame_eval import __version__
from mame_eval.errors import ConfigError, MameError
from mame_eval.io import save_png, write_json
from mame_eval.training.config import TrainConfig

logger = logging.getLogger(__name__)

LOG_COLUMNS = ("step", "loss", "lr", "peak_accelerator_memory_mb", "peak_rss_mb", "elapsed_s")


@dataclass
class TrainResult:
    """What :func:`train` did."""

    output_dir: str
    task: str
    global_step: int
    resumed_from: str | None
    final_loss: float | None
    losses: list[float] = field(default_factory=list)  # this session's steps, in order
    checkpoints: list[str] = field(default_factory=list)
    validation_grids: list[str] = field(default_factory=list)
    log_csv: str = ""
    optimizer: str = ""
    notes: list[str] = field(default_factory=list)
    wall_time_s: float = 0.0
    is_main_process: bool = True  # under `accelerate launch`, only the main one reports


# --------------------------------------------------------------------------- components


def load_components(config: TrainConfig, task: str) -> dict:
    """tokenizer, text_encoder, vae, unet (float32), noise_scheduler (DDPM), base scheduler."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from mame_eval.models.loading import quiet, resolve_model
    from mame_eval.models.tiny import TinySpec, tiny_components

    vae = load_vae(config.vae) if config.vae is not None else None
    if config.pretrained_model == "tiny":
        t = config.tiny
        # With a pre-trained VAE the UNet's latent grid follows that VAE's downsampling.
        vae_channels = tuple(vae.config.block_out_channels) if vae else tuple(t.vae_channels)
        spec = TinySpec(resolution=config.resolution, unet_channels=tuple(t.unet_channels),
                        vae_channels=vae_channels, layers_per_block=t.layers_per_block,
                        text_hidden=t.text_hidden, text_layers=t.text_layers,
                        attention_head_dim=t.attention_head_dim,
                        zero_terminal_snr=t.zero_terminal_snr)
        parts = tiny_components("inpaint" if task == "inpaint" else "txt2img", t.seed, spec)
        base_scheduler = parts.pop("scheduler")
    else:
        import diffusers

        folder = resolve_model(config.pretrained_model, config.revision)
        with quiet():
            parts = {
                "tokenizer": CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer"),
                "text_encoder": CLIPTextModel.from_pretrained(folder, subfolder="text_encoder"),
                "vae": AutoencoderKL.from_pretrained(folder, subfolder="vae"),
                "unet": UNet2DConditionModel.from_pretrained(folder, subfolder="unet"),
            }
        sched_config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
        base_scheduler = getattr(diffusers, sched_config["_class_name"]).from_config(sched_config)
    if vae is not None:
        if vae.config.latent_channels != parts["vae"].config.latent_channels:
            raise ConfigError(f"vae {config.vae}: {vae.config.latent_channels} latent channels, "
                              f"the UNet of {config.pretrained_model!r} expects "
                              f"{parts['vae'].config.latent_channels}")
        parts["vae"] = vae
    # A pipeline saved in half precision (the embedded models, a hub "fp16" variant) loads
    # with half-precision text-encoder weights; AdamW on those would round every update
    # away. Training starts from float32 weights; mixed precision casts only the frozen parts.
    for name in ("vae", "unet", "text_encoder"):
        to_float32(parts[name])
    parts["noise_scheduler"] = DDPMScheduler.from_config(base_scheduler.config)
    parts["base_scheduler"] = base_scheduler
    return parts


def to_float32(module) -> None:
    """Cast ``module`` to float32 in place, when any of its parameters is not."""
    import torch

    if any(p.dtype != torch.float32 for p in module.parameters()):
        module.to(torch.float32)


def load_vae(path: Path, key: str = "vae"):
    """An AutoencoderKL folder, or the ``vae/`` of a pipeline folder; one line (naming the
    config ``key``) if neither."""
    from diffusers import AutoencoderKL

    from mame_eval.models.loading import quiet

    path = Path(path)
    folder = path / "vae" if (path / "vae" / "config.json").is_file() else path
    if not (folder / "config.json").is_file():
        raise ConfigError(f"{key} = {str(path)!r}: no AutoencoderKL there (no config.json or "
                          "vae/config.json); train one with `mame-eval train vae CONFIG`")
    with quiet():
        return AutoencoderKL.from_pretrained(folder)


def widen_conv_in(unet, in_channels: int = 9) -> bool:
    """Give a 4-channel UNet a ``conv_in`` for ``[latents, mask, masked latents]``.

    The new input channels get zero weights, so the widened UNet initially ignores the mask and
    masked image and behaves exactly like the original. Returns whether it widened.
    """
    import torch

    old = unet.conv_in
    if old.in_channels == in_channels:
        return False
    new = torch.nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride,
                          old.padding, dtype=old.weight.dtype, device=old.weight.device)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, :old.in_channels] = old.weight
        new.bias.copy_(old.bias)
    unet.conv_in = new
    unet.register_to_config(in_channels=in_channels)
    return True


def make_optimizer(config: TrainConfig, params, device_type: str) -> tuple[object, str, list[str]]:
    """AdamW; bitsandbytes' 8-bit AdamW when asked for and on CUDA. Returns (opt, name, notes)."""
    import torch

    notes = []
    cls, name = torch.optim.AdamW, "AdamW"
    if config.use_8bit_adam:
        if device_type == "cuda":
            try:
                import bitsandbytes as bnb
            except ImportError:
                raise ConfigError("use_8bit_adam = true needs bitsandbytes: pip install "
                                  "'mame-eval[gpu]' (or set use_8bit_adam = false)") from None
            cls, name = bnb.optim.AdamW8bit, "AdamW8bit"
        else:
            notes.append(f"use_8bit_adam: bitsandbytes' 8-bit AdamW needs CUDA; used torch "
                         f"AdamW on {device_type}")
    optimizer = cls(params, lr=config.learning_rate, betas=(config.adam_beta1, config.adam_beta2),
                    weight_decay=config.adam_weight_decay, eps=config.adam_epsilon)
    return optimizer, name, notes


# --------------------------------------------------------------------------- checkpoints


def list_checkpoints(output_dir: Path) -> list[Path]:
    """``checkpoint-N`` folders, oldest first."""
    found = []
    for path in Path(output_dir).glob("checkpoint-*"):
        suffix = path.name.split("-", 1)[1]
        if path.is_dir() and suffix.isdigit():
            found.append((int(suffix), path))
    return [p for _, p in sorted(found)]


def resolve_resume(config: TrainConfig) -> Path | None:
    """The checkpoint to resume from (``latest`` with none yet → start fresh)."""
    value = config.resume_from_checkpoint
    if not value:
        return None
    if value == "latest":
        found = list_checkpoints(config.output_dir)
        return found[-1] if found else None
    path = Path(value)
    if not path.is_dir():
        path = config.output_dir / value
    if not path.is_dir() or not path.name.split("-")[-1].isdigit():
        names = [p.name for p in list_checkpoints(config.output_dir)]
        raise ConfigError(f"resume_from_checkpoint = {value!r}: no checkpoint-N folder there; "
                          f"use 'latest' or one of {names}")
    return path


def _prune_checkpoints(output_dir: Path, keep: int | None) -> None:
    if keep is None:
        return
    existing = list_checkpoints(output_dir)
    # Room for the one about to be written.
    for old in existing[:max(0, len(existing) - keep + 1)]:
        shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------- logging


def _peak_memory(device) -> tuple[float | None, float | None]:
    import torch

    accel = None
    if device.type == "cuda":
        accel = torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    except ImportError:  # pragma: no cover - Windows
        rss = None
    return accel, rss


def _reset_log(path: Path, upto_step: int) -> None:
    """Keep the rows of steps ≤ ``upto_step`` (a resumed run repeats the later ones)."""
    rows = []
    if path.is_file():
        with open(path, newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if r.get("step", "").isdigit()
                    and int(r["step"]) <= upto_step]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=LOG_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def _tracker_config(config: TrainConfig, task: str) -> dict:
    # TensorBoard's hparams take scalars and strings only.
    flat = {"task": task}
    for key, value in config.model_dump(mode="json").items():
        flat[key] = value if isinstance(value, (int, float, str, bool)) else json.dumps(value)
    return flat


# --------------------------------------------------------------------------- training


def train(config: TrainConfig, task: str,
          progress: Callable[[int, int], None] | None = None) -> TrainResult:
    """Fine-tune for ``config.max_train_steps`` optimizer steps (``task``: healthy|inpaint).

    ``progress(step, total)`` is called after every optimizer step (on the main process).
    Returns a :class:`TrainResult`; the pipeline is saved with ``save_pretrained`` in
    ``config.output_dir`` (loadable by :func:`mame_eval.models.load_pipeline`).
    """
    from accelerate.state import AcceleratorState, GradientState

    try:
        return _train(config, task, progress)
    finally:
        # Accelerate keeps its settings (mixed precision, accumulation) in process-wide
        # singletons; forget them so that the next run in this process — healthy then inpaint
        # in one script, or the tests — may choose its own. The process group (PartialState)
        # is kept: under `accelerate launch` it is the launcher's.
        AcceleratorState._reset_state(reset_partial_state=False)
        GradientState._reset_state()


def _train(config: TrainConfig, task: str,
           progress: Callable[[int, int], None] | None) -> TrainResult:
    import torch
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
    from diffusers.optimization import get_scheduler

    from mame_eval.training.data import HealthyDataset, LesionDataset, collate

    if task not in ("healthy", "inpaint"):
        raise ConfigError(f"task {task!r}: expected healthy or inpaint")
    if config.task is not None and config.task != task:
        raise ConfigError(f"config task = {config.task!r} but train {task!r} was asked for")
    start = time.perf_counter()
    output_dir = Path(config.output_dir)
    inpaint = task == "inpaint"

    if config.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise ConfigError("mixed_precision = 'fp16' needs a CUDA GPU; use 'no' (or 'bf16') on "
                          "the CPU, e.g. --set mixed_precision=no")
    if config.report_to == "tensorboard":
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            raise ConfigError("report_to = 'tensorboard' needs the tensorboard package "
                              "(or set report_to = 'none')") from None
    from mame_eval.models.loading import use_cpu_processes

    accelerator = Accelerator(
        cpu=use_cpu_processes(),
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        mixed_precision=config.mixed_precision,
        log_with=None if config.report_to == "none" else config.report_to,
        project_config=ProjectConfiguration(project_dir=str(output_dir),
                                            logging_dir=str(output_dir / "logs")),
        # Shuffling seeded by (seed, epoch): a resumed run sees the same order of batches.
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True,
                                                  data_seed=config.seed),
    )
    set_seed(config.seed)
    device = accelerator.device
    if config.allow_tf32 and device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    # ---- components: UNet and text encoder trained, VAE frozen
    parts = load_components(config, task)
    tokenizer, text_encoder, vae, unet = (parts["tokenizer"], parts["text_encoder"], parts["vae"],
                                         parts["unet"])
    noise_scheduler = parts["noise_scheduler"]
    notes: list[str] = []
    if config.pretrained_model == "tiny" and config.vae is None:
        notes.append("pretrained_model = 'tiny' without vae: the VAE is random and frozen, so "
                     "samples will not look like mammograms (fine for testing the code path; "
                     "pre-train one with `mame-eval train vae`)")
    if inpaint and widen_conv_in(unet):
        notes.append("conv_in widened from 4 to 9 input channels (zero weights)")
    if not inpaint and unet.config.in_channels != 4:
        raise ConfigError(f"pretrained_model {config.pretrained_model!r} has a "
                          f"{unet.config.in_channels}-channel UNet; `train healthy` needs a "
                          "text-to-image (4-channel) model")
    vae.requires_grad_(False)
    text_encoder.requires_grad_(config.train_text_encoder)
    unet.train()
    if config.train_text_encoder:
        text_encoder.train()
    if config.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        if config.train_text_encoder:
            # transformers 5 renamed it; keep working with both spellings.
            enable = getattr(text_encoder, "activation_checkpointing_enable", None) or \
                text_encoder.gradient_checkpointing_enable
            enable()
    if config.attention == "xformers":
        from mame_eval.models.loading import enable_xformers

        try:
            enable_xformers(unet, str(device))
        except MameError as exc:
            raise ConfigError(f"attention = 'xformers': {exc}") from None
    # Frozen parts run in the mixed-precision dtype to save memory; trained ones stay fp32
    # (autocast handles their forward pass) so the optimizer updates full-precision weights.
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(config.mixed_precision,
                                                                        torch.float32)
    vae.to(device)
    if weight_dtype != torch.float32:
        vae.to(dtype=weight_dtype)
        if not config.train_text_encoder:
            text_encoder.to(dtype=weight_dtype)

    # ---- data
    if config.mask_augmentation is not None and not inpaint:
        raise ConfigError("mask_augmentation is for `train inpaint`; remove it from a "
                          "healthy config")
    if config.mask_loss_weight != 1.0 and not inpaint:
        raise ConfigError(f"mask_loss_weight = {config.mask_loss_weight} is for `train "
                          "inpaint` (a healthy image has no mask); remove it or set 1")
    if inpaint:
        dataset = LesionDataset(config.data_dir, tokenizer, config.resolution,
                                max_samples=config.max_train_samples,
                                random_flip=config.random_flip,
                                augmentation=config.mask_augmentation)
    else:
        dataset = HealthyDataset(config.data_dir, tokenizer, config.resolution,
                                 max_samples=config.max_train_samples,
                                 random_flip=config.random_flip)
    if config.cache_latents:
        dataset = cache_latents(dataset, vae, device, weight_dtype)
    empty_ids = dataset.tokenize("") if config.prompt_dropout else None
    dataloader = torch.utils.data.DataLoader(
        dataset, batch_size=config.train_batch_size, shuffle=True, collate_fn=collate,
        num_workers=config.dataloader_num_workers, drop_last=False)

    # ---- optimizer and schedule
    lr = config.learning_rate
    if config.scale_lr:
        lr *= (config.gradient_accumulation_steps * config.train_batch_size
               * accelerator.num_processes)
    trained = list(unet.parameters())
    if config.train_text_encoder:
        trained += list(text_encoder.parameters())
    optimizer, optimizer_name, opt_notes = make_optimizer(
        config.model_copy(update={"learning_rate": lr}), trained, device.type)
    notes += opt_notes
    warmup = min(config.lr_warmup_steps, config.max_train_steps)
    if warmup < config.lr_warmup_steps:  # e.g. --set max_train_steps=3 on a real config
        notes.append(f"lr_warmup_steps {config.lr_warmup_steps} > max_train_steps "
                     f"{config.max_train_steps}: warm-up shortened to {warmup} steps")
    lr_scheduler = get_scheduler(
        config.lr_scheduler, optimizer,
        num_warmup_steps=warmup * accelerator.num_processes,
        num_training_steps=config.max_train_steps * accelerator.num_processes)
    if config.train_text_encoder:
        unet, text_encoder, optimizer, dataloader, lr_scheduler = accelerator.prepare(
            unet, text_encoder, optimizer, dataloader, lr_scheduler)
    else:
        unet, optimizer, dataloader, lr_scheduler = accelerator.prepare(
            unet, optimizer, dataloader, lr_scheduler)
        text_encoder.to(device)
    steps_per_epoch = max(1, math.ceil(len(dataloader) / config.gradient_accumulation_steps))

    # ---- resume
    global_step, resumed_from = 0, None
    checkpoint = resolve_resume(config)
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint))
        global_step = int(checkpoint.name.split("-")[-1])
        resumed_from = str(checkpoint)
    elif config.resume_from_checkpoint == "latest":
        notes.append("resume_from_checkpoint = 'latest': no checkpoint yet, started fresh")
    if global_step >= config.max_train_steps:
        notes.append(f"already at step {global_step} ≥ max_train_steps; nothing to train")
    first_epoch = global_step // steps_per_epoch
    skip_batches = (global_step % steps_per_epoch) * config.gradient_accumulation_steps

    log_csv = output_dir / "logs" / "train_log.csv"
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        _reset_log(log_csv, global_step)
        accelerator.init_trackers("train", config=_tracker_config(config, task))
    result = TrainResult(output_dir=str(output_dir), task=task, global_step=global_step,
                         resumed_from=resumed_from, final_loss=None, log_csv=str(log_csv),
                         optimizer=optimizer_name, notes=notes,
                         is_main_process=accelerator.is_main_process)
    images = getattr(dataset, "dataset", dataset)  # the pixels, also when latents are cached
    validation_samples = ([images[i] for i in range(min(len(images), 2))] if inpaint else [])

    def validate() -> None:
        path = _validate(accelerator, config, task, parts, unet, text_encoder, weight_dtype,
                         validation_samples, global_step)
        if path:
            result.validation_grids.append(str(path))

    # ---- the loop
    if progress and accelerator.is_main_process:
        progress(global_step, config.max_train_steps)
    running, micro = 0.0, 0
    epoch = first_epoch
    while global_step < config.max_train_steps:
        dataloader.set_epoch(epoch)
        batches = dataloader
        if epoch == first_epoch and skip_batches:
            batches = accelerator.skip_first_batches(dataloader, skip_batches)
        for batch in batches:
            with accelerator.accumulate(unet, text_encoder):
                generator = step_generator(config.seed, accelerator.process_index, global_step,
                                           micro)
                loss = _loss(batch, vae, text_encoder, unet, noise_scheduler, weight_dtype,
                             config.noise_offset, inpaint, generator,
                             config.prompt_dropout, empty_ids, config.mask_loss_weight)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(trained, config.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=config.set_grads_to_none)
            # The mean over processes and micro-batches of one optimizer step.
            running += accelerator.gather(loss.detach()[None]).mean().item()
            micro += 1
            if not accelerator.sync_gradients:
                continue
            global_step += 1
            micro = 0
            step_loss = running / config.gradient_accumulation_steps
            running = 0.0
            if not math.isfinite(step_loss):
                raise MameError(f"training diverged: loss {step_loss} at step {global_step}; "
                                "lower learning_rate or use mixed_precision = 'bf16'/'no'")
            result.losses.append(step_loss)
            result.final_loss = step_loss
            accel_mb, rss_mb = _peak_memory(device)
            row = {"step": global_step, "loss": step_loss, "lr": lr_scheduler.get_last_lr()[0],
                   "peak_accelerator_memory_mb": accel_mb, "peak_rss_mb": rss_mb,
                   "elapsed_s": round(time.perf_counter() - start, 3)}
            accelerator.log({k: v for k, v in row.items() if v is not None and k != "step"},
                            step=global_step)
            if accelerator.is_main_process:
                with open(log_csv, "a", newline="") as fh:
                    csv.DictWriter(fh, fieldnames=LOG_COLUMNS).writerow(row)
            if global_step % config.checkpointing_steps == 0:
                if accelerator.is_main_process:
                    _prune_checkpoints(output_dir, config.checkpoints_total_limit)
                accelerator.wait_for_everyone()
                path = output_dir / f"checkpoint-{global_step}"
                accelerator.save_state(str(path))
                result.checkpoints.append(str(path))
            if config.validation_steps and global_step % config.validation_steps == 0:
                validate()
            if progress and accelerator.is_main_process:
                progress(global_step, config.max_train_steps)
            if global_step >= config.max_train_steps:
                break
        epoch += 1

    # ---- the final pipeline
    accelerator.wait_for_everyone()
    result.global_step = global_step
    if not config.validation_steps or global_step % config.validation_steps:
        validate()
    if accelerator.is_main_process:
        unet_m, text_m = accelerator.unwrap_model(unet), accelerator.unwrap_model(text_encoder)
        # Frozen parts were cast to the mixed-precision dtype for speed; the saved pipeline is
        # float32 throughout (the trained parts are), as every loader expects.
        for module in (parts["vae"], unet_m, text_m):
            to_float32(module)
        pipe = _pipeline(task, parts, unet_m, text_m, parts["base_scheduler"])
        from mame_eval.models.loading import quiet

        with quiet():
            pipe.save_pretrained(output_dir, safe_serialization=True)
        result.wall_time_s = round(time.perf_counter() - start, 3)
        write_json(output_dir / "train_info.json", {
            "result": asdict(result), "config": config.model_dump(mode="json"),
            "versions": _versions(), "num_processes": accelerator.num_processes,
            "device": str(device)})
    accelerator.end_training()
    result.wall_time_s = round(time.perf_counter() - start, 3)
    return result


def step_generator(seed: int, process: int, step: int, micro: int):
    """A CPU generator for one micro-batch's randomness (latent sample, noise, timesteps).

    Derived from (seed, process, step, micro-batch) alone rather than drawn from the global RNG
    — which data-loader workers and iterator restarts also consume — so a run resumed from a
    checkpoint draws exactly the noise the uninterrupted run would have drawn.
    """
    import numpy as np
    import torch

    state = np.random.SeedSequence([seed, process, step, micro]).generate_state(2, np.uint64)
    return torch.Generator("cpu").manual_seed(int(state[0] >> np.uint64(1)))


class CachedLatents:
    """A training dataset whose images were encoded once by the frozen VAE.

    Items keep everything but the pixels: ``latent_parameters`` (the VAE posterior's mean and
    log-variance, 2·C×h×w) replaces ``pixel_values``, and ``masked_latent_parameters``
    replaces ``masked_pixel_values``. A fresh latent is still sampled at every step.
    """

    def __init__(self, dataset, items: list[dict]):
        self.dataset, self.items = dataset, items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        return self.items[index]

    def tokenize(self, prompt: str):
        return self.dataset.tokenize(prompt)


def cache_latents(dataset, vae, device, dtype, batch_size: int = 16) -> CachedLatents:
    """Encode every sample of ``dataset`` once (see :class:`CachedLatents`)."""
    import torch

    renamed = {"pixel_values": "latent_parameters",
               "masked_pixel_values": "masked_latent_parameters"}
    # An augmented inpainting set shows each image under several masks: its own latents are
    # encoded once (items with one ``source_key`` share them); each masked image is encoded.
    source_key = getattr(dataset, "source_key", lambda i: i)
    shared: dict = {}

    def encode(pixels: list):
        batch = torch.stack(pixels).to(device, dtype)
        return vae.encode(batch).latent_dist.parameters.float().cpu()

    items = []
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            indices = range(start, min(start + batch_size, len(dataset)))
            chunk = [dataset[i] for i in indices]
            new = [(i, c) for i, c in zip(indices, chunk, strict=True)
                   if source_key(i) not in shared]
            if new:
                latents = encode([c["pixel_values"] for _, c in new])
                for (i, _), latent in zip(new, latents, strict=True):
                    shared[source_key(i)] = latent
            encoded = {"pixel_values": [shared[source_key(i)] for i in indices]}
            if "masked_pixel_values" in chunk[0]:
                encoded["masked_pixel_values"] = encode([c["masked_pixel_values"]
                                                         for c in chunk])
            for k, sample in enumerate(chunk):
                items.append({renamed.get(key, key): (encoded[key][k] if key in encoded
                                                      else value)
                              for key, value in sample.items()})
    return CachedLatents(dataset, items)


def _sample_latents(batch: dict, key: str, vae, weight_dtype, generator):
    """Latents of ``batch[key]`` pixels, or sampled from their cached VAE posterior."""
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    cached = {"pixel_values": "latent_parameters",
              "masked_pixel_values": "masked_latent_parameters"}[key]
    if cached in batch:
        dist = DiagonalGaussianDistribution(batch[cached].to(weight_dtype))
    else:
        dist = vae.encode(batch[key].to(weight_dtype)).latent_dist
    return dist.sample(generator=generator)


def drop_prompts(input_ids, rate: float, empty_ids, generator):
    """Replace each prompt by the empty one with probability ``rate`` (drawn from
    ``generator``): classifier-free guidance needs the model to know the unconditional case."""
    import torch

    if not rate:
        return input_ids
    drop = torch.rand(len(input_ids), generator=generator) < rate
    return torch.where(drop[:, None].to(input_ids.device), empty_ids.to(input_ids.device),
                       input_ids)


def _loss(batch, vae, text_encoder, unet, noise_scheduler, weight_dtype, noise_offset, inpaint,
          generator, prompt_dropout: float = 0.0, empty_ids=None, mask_loss_weight: float = 1.0):
    """ε-prediction MSE of one batch (velocity when the scheduler predicts v); a float32 scalar.

    Under mixed precision the frozen VAE (and a frozen text encoder) hold fp16/bf16 weights
    while the trained UNet keeps float32 ones. The diffusion arithmetic — latents, noise,
    ``add_noise`` and the target — is done in float32 (a half-precision target would put its
    rounding error into every step's loss); every module gets its input in its own dtype (the
    autocast of ``accelerator.prepare`` then runs the UNet in half precision); the loss is
    taken in float32. For inpainting, ``mask_loss_weight`` weights the squared error inside
    the latent-resolution mask (see :func:`masked_mse`).
    """
    import torch
    import torch.nn.functional as F
    from diffusers.utils.torch_utils import randn_tensor

    sf = vae.config.scaling_factor
    latents = _sample_latents(batch, "pixel_values", vae, weight_dtype, generator).float() * sf
    noise = randn_tensor(latents.shape, generator=generator, device=latents.device,
                         dtype=torch.float32)
    if noise_offset:
        noise += noise_offset * randn_tensor((*latents.shape[:2], 1, 1), generator=generator,
                                             device=latents.device, dtype=torch.float32)
    timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps,
                              (latents.shape[0],), generator=generator).to(latents.device)
    model_input = noisy = noise_scheduler.add_noise(latents, noise, timesteps)
    mask = None
    if inpaint:
        masked = _sample_latents(batch, "masked_pixel_values", vae, weight_dtype,
                                 generator).float()
        # Nearest, as the pipeline does.
        mask = F.interpolate(batch["mask"].float(), size=latents.shape[-2:])
        model_input = torch.cat([noisy, mask, masked * sf], dim=1)
    input_ids = drop_prompts(batch["input_ids"], prompt_dropout, empty_ids, generator)
    hidden = text_encoder(input_ids, return_dict=False)[0]
    unet_dtype = next(unet.parameters()).dtype
    pred = unet(model_input.to(unet_dtype), timesteps, hidden.to(unet_dtype),
                return_dict=False)[0]
    if noise_scheduler.config.prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(latents, noise, timesteps)
    else:
        target = noise
    if mask is not None and mask_loss_weight != 1.0:
        return masked_mse(pred.float(), target.float(), mask, mask_loss_weight)
    return F.mse_loss(pred.float(), target.float(), reduction="mean")


def masked_mse(pred, target, mask, weight: float):
    """Mean squared error with the elements inside ``mask`` weighted ``weight``, outside 1.

    ``pred`` and ``target`` are (B, C, h, w), ``mask`` (B, 1, h, w) in {0, 1} (the mask the
    UNet was given, at the latent resolution). Returns ``Σ w·(pred − target)² / Σ w`` with
    ``w = 1 + (weight − 1)·mask`` broadcast over the channels: a weighted *mean*, so its scale
    does not depend on the mask's size and ``weight = 1`` is exactly the plain MSE.
    """
    w = (1.0 + (weight - 1.0) * mask).expand_as(pred)
    return (w * (pred - target) ** 2).sum() / w.sum()


def _pipeline(task: str, parts: dict, unet, text_encoder, scheduler):
    from diffusers import StableDiffusionInpaintPipeline, StableDiffusionPipeline

    cls = StableDiffusionInpaintPipeline if task == "inpaint" else StableDiffusionPipeline
    pipe = cls(vae=parts["vae"], text_encoder=text_encoder, tokenizer=parts["tokenizer"],
               unet=unet, scheduler=scheduler, safety_checker=None, feature_extractor=None,
               requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _validate(accelerator, config: TrainConfig, task: str, parts: dict, unet, text_encoder,
              weight_dtype, samples: list[dict], step: int) -> Path | None:
    """Render the validation grid of this step (main process); returns its path."""
    import numpy as np
    import torch

    from mame_eval.models.loading import make_scheduler
    from mame_eval.training import validation

    prompts = list(config.validation_prompts)
    if task == "healthy" and not prompts:
        return None
    if not accelerator.is_main_process:
        return None
    unet_m, text_m = accelerator.unwrap_model(unet), accelerator.unwrap_model(text_encoder)
    pipe = _pipeline(task, parts, unet_m, text_m,
                     make_scheduler(config.validation_scheduler, parts["base_scheduler"].config))
    was_training = (unet_m.training, text_m.training)
    unet_m.eval()
    text_m.eval()
    try:
        with torch.no_grad(), accelerator.autocast():
            common = dict(n=config.num_validation_images, seed=config.seed,
                          steps=config.validation_inference_steps,
                          guidance=config.validation_guidance_scale,
                          negative_prompt=config.validation_negative_prompt)
            if task == "inpaint":
                image = validation.render_inpaint(pipe, samples, prompts=prompts, **common)
            else:
                image = validation.render_txt2img(pipe, prompts, resolution=config.resolution,
                                                  **common)
    finally:
        unet_m.train(was_training[0])
        text_m.train(was_training[1])
    path = Path(config.output_dir) / "validation" / f"step-{step:06d}.png"
    save_png(path, image)
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.log_images({"validation": np.asarray(image)[None]}, step=step,
                               dataformats="NHWC")
    return path


def _versions() -> dict:
    import accelerate
    import diffusers
    import torch
    import transformers

    return {"mame_eval": __version__, "torch": torch.__version__,
            "diffusers": diffusers.__version__, "transformers": transformers.__version__,
            "accelerate": accelerate.__version__}
