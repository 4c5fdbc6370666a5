"""Text-to-image sampling into a generation run (``mame-eval generate``).

Image ``i`` of a run uses its own CPU generator seeded ``seed + i``: its initial noise is the
same whichever batch, process or device renders it, so any image can be regenerated alone, and
the same seed gives byte-identical PNGs on the same machine and software. The model generates
breasts on one side (``prepare`` mirrors right breasts onto the left); ``laterality="R"``
mirrors the outputs, as the paper did.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mame_eval import __version__
from mame_eval.errors import InputError
from mame_eval.generation.manifest import GenerationRun, run_indexed
from mame_eval.io import save_png
from mame_eval.prompts import Family, Laterality, Prompt, parse_value


def prompt_from_attributes(text: str) -> tuple[str, str | None]:
    """``"vendor=siemens,view=MLO,density=high,area=small"`` → (prompt, laterality or None).

    The grammar follows from the attributes: a vendor → fusion, otherwise area → hologic and
    density → siemens (DESIGN §1). ``laterality=L|R`` may be given too (it is not part of the
    prompt: right breasts are made by mirroring).
    """
    values: dict[str, str] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep:
            raise InputError(f"attributes {text!r}: {item!r} is not key=value", param="attributes")
        key = key.strip().lower()
        if key in values:
            raise InputError(f"attributes {text!r}: {key} given twice", param="attributes")
        values[key] = value.strip()
    laterality = values.pop("laterality", None)
    if laterality is not None:
        laterality = Laterality.parse(laterality).value
    parsed = {k: parse_value(k, v) for k, v in values.items()}
    family = parsed.pop("family", None)
    if family is None:
        if "vendor" in parsed:
            family = Family.FUSION
        elif "area" in parsed and "density" not in parsed:
            family = Family.HOLOGIC
        elif "density" in parsed and "area" not in parsed:
            family = Family.SIEMENS
        else:
            family = Family.FUSION  # Prompt() reports what is missing
    return Prompt(family, **parsed).render(), laterality


def check_laterality(laterality: str) -> str:
    return Laterality.parse(laterality).value


def to_uint8(images: np.ndarray) -> list[np.ndarray]:
    """Pipeline float images in [0, 1] → uint8, rounded as diffusers' ``numpy_to_pil``."""
    return [(np.clip(im, 0, 1) * 255).round().astype(np.uint8) for im in images]


def generators(seeds: list[int]):
    """One CPU generator per image: noise independent of batch, device and process."""
    import torch

    return [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]


def source_fields(pipe) -> dict:
    """Model id, revision, scheduler, dtype and device of a loaded pipeline, for manifests."""
    src = getattr(pipe, "mame_source", None)
    return {
        "model": src.model if src else "unknown",
        "revision": src.revision if src else "unknown",
        "scheduler": getattr(pipe, "mame_scheduler", type(pipe.scheduler).__name__),
        "dtype": str(pipe.unet.dtype).removeprefix("torch."),
    }


def check_size(height: int, width: int) -> None:
    """Stable Diffusion pipelines need sides that are multiples of 8."""
    if height < 8 or width < 8 or height % 8 or width % 8:
        raise InputError(f"size {height}x{width}: height and width must be positive multiples "
                         "of 8")


def default_size(pipe) -> tuple[int, int]:
    """The model's native (height, width): its UNet sample size × the VAE's downsampling."""
    side = int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)
    return side, side


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _load(pipe, model, task: str, device, dtype, scheduler: str):
    from mame_eval.generation.manifest import process_state
    from mame_eval.models import load_pipeline

    if pipe is not None:
        return pipe
    # Under `accelerate launch` each process samples on its own device.
    device = device or str(process_state().device)
    return load_pipeline(model, task=task, device=device, dtype=dtype, scheduler=scheduler)


def generate(model: str | os.PathLike | None, prompt: str, out: Path, *, n: int = 1,
             guidance_scale: float = 4.0, steps: int = 24, seed: int = 0,
             negative_prompt: str = "", laterality: str = "L", batch_size: int = 4,
             height: int | None = None, width: int | None = None, scheduler: str = "dpm++",
             device: str | None = None, dtype=None, pipe=None,
             progress: Callable[[int, int], None] | None = None) -> GenerationRun:
    """Generate ``n`` images of ``prompt`` into the run folder ``out`` (resumable, batched).

    ``model``: hub id or local folder (``None``: the embedded MAM-E-tiny), or pass a loaded
    ``pipe``. Writes ``out/00000.png …`` and ``out/manifest.jsonl``; under ``accelerate
    launch`` the images are split across processes. Returns the :class:`GenerationRun`.
    """
    if steps < 1:
        raise InputError(f"steps {steps}: expected at least 1", param="steps")
    if guidance_scale < 0:
        raise InputError(f"guidance_scale {guidance_scale}: expected ≥ 0", param="guidance_scale")
    if not prompt or not prompt.strip():
        raise InputError("prompt is empty; give a prompt or --attributes", param="prompt")
    laterality = check_laterality(laterality)
    pipe = _load(pipe, model, "txt2img", device, dtype, scheduler)
    h, w = (height or default_size(pipe)[0]), (width or default_size(pipe)[1])
    check_size(h, w)
    fixed = {"task": "txt2img", **source_fields(pipe), "prompt": prompt,
             "negative_prompt": negative_prompt, "guidance_scale": float(guidance_scale),
             "steps": int(steps), "seed_base": int(seed), "height": h, "width": w,
             "laterality": laterality, "mame_eval": __version__}

    def render(indices: list[int]) -> list[dict]:
        t0 = time.perf_counter()
        seeds = [seed + i for i in indices]
        result = pipe(prompt=[prompt] * len(indices),
                      negative_prompt=[negative_prompt] * len(indices) if negative_prompt else None,
                      generator=generators(seeds), num_inference_steps=steps,
                      guidance_scale=guidance_scale, height=h, width=w, output_type="np")
        per_image = (time.perf_counter() - t0) / len(indices)
        rows = []
        for i, s, image in zip(indices, seeds, to_uint8(result.images), strict=True):
            if laterality == "R":
                image = np.ascontiguousarray(image[:, ::-1])
            name = f"{i:05d}.png"
            save_png(Path(out) / name, image)
            rows.append({"index": i, "file": name, "seed": s, "time_s": round(per_image, 4),
                         "created": _now(), "device": str(pipe.device)})
        return rows

    return run_indexed(out, n, batch_size, fixed, render, progress)
