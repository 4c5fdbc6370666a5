"""Load a MAM-E pipeline — a hub id or a local ``save_pretrained`` folder — ready to sample.

One function serves the published weights on a GPU and the tiny models on a CPU::

    pipe = load_pipeline("Likalto4/fusion_healthy")              # hub (or its cache offline)
    pipe = load_pipeline("runs/tiny-inpaint", task="inpaint")     # a local folder

The model is resolved to a folder first (a hub id through the Hugging Face cache), so a missing
model fails early with one line that says where it was looked for and how to provide it. The
returned pipeline carries ``pipe.mame_source`` (a :class:`ModelSource`: what was asked for, the
folder, and a revision — the hub commit, or a content hash of a local folder) for manifests.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from mame_eval.errors import ModelError

TASKS = ("txt2img", "inpaint")

#: The published MAM-E models (DESIGN §1): id → (task, what it is).
PUBLISHED_MODELS = {
    "Likalto4/mammo40k_healthy-only": ("txt2img", "Hologic (OMI-H) healthy; view + area"),
    "Likalto4/vindr_siemens_healthy": ("txt2img", "Siemens (VinDr-Mammo) healthy; view + density"),
    "Likalto4/fusion_healthy": ("txt2img", "fusion of both; vendor + view + density/area"),
    "Likalto4/mammo_lesion-inpainting": ("inpaint", "Hologic lesion inpainting"),
    "Likalto4/vindr_lesion-inpainting": ("inpaint", "Siemens lesion inpainting"),
}

#: Scheduler names → (diffusers class, extra config). ``dpm++`` is the paper's sampler.
SCHEDULERS: dict[str, tuple[str, dict]] = {
    "dpm++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "dpm++-karras": ("DPMSolverMultistepScheduler",
                     {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True}),
    "dpm++-sde": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
    "ddim": ("DDIMScheduler", {}),
    "ddpm": ("DDPMScheduler", {}),
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler-a": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "lms": ("LMSDiscreteScheduler", {}),
    "unipc": ("UniPCMultistepScheduler", {}),
}

#: The embedded MAM-E-tiny models (DESIGN §5), the default ``--model`` of every command once
#: they are shipped in ``mame_eval/assets/``.
ASSETS = Path(__file__).resolve().parent.parent / "assets"
EMBEDDED_MODELS = {"txt2img": ASSETS / "mame-tiny", "inpaint": ASSETS / "mame-tiny-inpaint"}
#: MammoNet-tiny: the default --cad of `explain` and the `mammonet` FID features.
EMBEDDED_MAMMONET = ASSETS / "mammonet-tiny"

#: What each embedded model is (DESIGN §5); MammoNet-tiny lives beside them in the assets.
EMBEDDED_DESCRIPTIONS = {
    "mame-tiny": ("txt2img", "MAM-E-tiny: fusion-style text-to-image on phantoms (hologic: "
                  "view + area, siemens: view + density), 128 px; default --model"),
    "mame-tiny-inpaint": ("inpaint", "MAM-E-tiny-inpaint: lesion inpainting on phantoms, "
                          "128 px; default --inpaint-model"),
    "mammonet-tiny": ("cad", "MammoNet-tiny: lesion + view/density/area/vendor classifier on "
                      "phantoms, 128 px; default --cad and --features mammonet"),
}


@dataclass(frozen=True)
class CatalogEntry:
    """One row of ``mame-eval models``."""

    name: str
    task: str
    kind: str  # "embedded" or "published"
    location: str
    available: bool
    description: str


def catalog() -> list[CatalogEntry]:
    """The embedded models (shipped in ``mame_eval/assets``) and the published MAM-E ids.

    A published id counts as available when its snapshot is in the local Hugging Face cache
    (nothing is downloaded to find out).
    """
    rows = []
    for name, (task, what) in EMBEDDED_DESCRIPTIONS.items():
        folder = ASSETS / name
        marker = "config.json" if task == "cad" else "model_index.json"
        rows.append(CatalogEntry(name, task, "embedded", str(folder),
                                 (folder / marker).is_file(), what))
    for hub_id, (task, what) in PUBLISHED_MODELS.items():
        try:
            cached = resolve_model(hub_id, local_files_only=True)
        except ModelError:
            cached = None
        rows.append(CatalogEntry(hub_id, task, "published",
                                 str(cached) if cached else "hub (not in the local cache)",
                                 cached is not None, what))
    return rows


DTYPES = ("fp32", "fp16", "bf16")
ATTENTION = ("sdpa", "xformers")

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# Weight and config files that make up a pipeline; other files (checkpoints, logs) are not
# part of the model's identity.
_HASHED_SUFFIXES = (".json", ".txt", ".safetensors", ".bin", ".model")


@dataclass(frozen=True)
class ModelSource:
    """Where a pipeline came from: recorded in every generation manifest."""

    model: str
    path: str
    revision: str

    def as_dict(self) -> dict:
        return asdict(self)


def default_model(task: str = "txt2img") -> str:
    """The embedded model's folder for ``task``; a clear error while it is not shipped."""
    if task not in TASKS:
        raise ModelError(f"task {task!r}: expected one of {', '.join(TASKS)}")
    folder = EMBEDDED_MODELS[task]
    if not (folder / "model_index.json").is_file():
        raise ModelError(
            f"no --model given and the embedded {task} model is not shipped in this checkout "
            f"({folder}); pass --model with a hub id or a local folder (e.g. one made by "
            "`mame-eval models create-tiny` or `mame-eval train`)")
    return str(folder)


@contextmanager
def quiet():
    """Silence the loading/saving progress bars of diffusers and transformers for a while:
    library code does not write to the terminal (the CLI draws its own progress)."""
    import diffusers.utils.logging as dlog
    import transformers.utils.logging as tlog

    before = (dlog.is_progress_bar_enabled(), tlog.is_progress_bar_enabled())
    dlog.disable_progress_bar()
    tlog.disable_progress_bar()
    try:
        yield
    finally:
        if before[0]:
            dlog.enable_progress_bar()
        if before[1]:
            tlog.enable_progress_bar()


def make_scheduler(name: str, config):
    """A scheduler by name (see :data:`SCHEDULERS`, or a diffusers class name) from ``config``."""
    import diffusers

    if name in SCHEDULERS:
        cls_name, extra = SCHEDULERS[name]
    elif name.endswith("Scheduler") and hasattr(diffusers, name):
        cls_name, extra = name, {}
    else:
        raise ModelError(f"scheduler {name!r}: expected one of {', '.join(SCHEDULERS)} "
                         "or a diffusers scheduler class name", param="scheduler")
    return getattr(diffusers, cls_name).from_config(config, **extra)


def use_cpu_processes() -> bool:
    """Whether processes launched together should talk over gloo on the CPU.

    ``accelerate launch --cpu`` says so (``ACCELERATE_USE_CPU``); and a multi-process launch
    (``accelerate launch --multi_gpu`` / ``torchrun``, i.e. ``WORLD_SIZE`` > 1) on a machine
    without CUDA has no other choice — accelerate would otherwise run every process alone.
    """
    import torch

    flag = os.environ.get("ACCELERATE_USE_CPU", "").lower() in {"1", "true", "yes"}
    launched = int(os.environ.get("WORLD_SIZE", "1") or 1) > 1
    return flag or (launched and not torch.cuda.is_available())


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype, device: str):
    """``None`` → fp16 on CUDA, fp32 elsewhere; or ``"fp32"|"fp16"|"bf16"`` / a torch dtype."""
    import torch

    if dtype is None:
        return torch.float16 if str(device).startswith("cuda") else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16,
             "float16": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
    try:
        return table[str(dtype).lower()]
    except KeyError:
        raise ModelError(f"dtype {dtype!r}: expected one of {', '.join(DTYPES)}",
                         param="dtype") from None


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "") in {"1", "ON",
                                                                                      "YES", "TRUE"}


def resolve_model(model: str | os.PathLike, revision: str | None = None,
                  local_files_only: bool | None = None) -> Path:
    """The local folder of ``model``: a ``save_pretrained`` folder, or a hub id's cached snapshot
    (downloaded when online). Raises :class:`ModelError` with one line when it cannot."""
    text = str(model)
    path = Path(text).expanduser()
    if path.exists():
        if not (path / "model_index.json").is_file():
            raise ModelError(f"{path}: not a diffusers pipeline folder (no model_index.json); "
                             "expected a folder written by save_pretrained, e.g. by `mame-eval "
                             "train` or `mame-eval models create-tiny`")
        return path
    if not _HUB_ID.match(text):
        raise ModelError(f"model {text!r}: no such folder, and not a hub id (owner/name)")
    offline = _offline() if local_files_only is None else local_files_only
    from diffusers import DiffusionPipeline
    from huggingface_hub import constants

    try:
        folder = DiffusionPipeline.download(text, revision=revision, local_files_only=offline)
    except Exception as exc:
        how = (f"the hub is offline (HF_HUB_OFFLINE=1) and it is not in the Hugging Face cache "
               f"{constants.HF_HUB_CACHE}" if offline else
               f"it could not be downloaded ({type(exc).__name__})")
        raise ModelError(
            f"model {text!r}: looked for model_index.json and its unet/vae/text_encoder/"
            f"tokenizer/scheduler folders, but {how}; download it on a connected machine "
            f"(`hf download {text}`) and set HF_HOME to that cache, or pass a local "
            "save_pretrained folder") from None
    return Path(folder)


def model_revision(folder: Path) -> str:
    """The hub commit of a cached snapshot, else ``sha256:`` of the pipeline's files (the
    components named in ``model_index.json``; checkpoints and logs beside them are ignored)."""
    folder = Path(folder)
    if folder.parent.name == "snapshots" and re.fullmatch(r"[0-9a-f]{40}", folder.name):
        return folder.name
    index = json.loads((folder / "model_index.json").read_text())
    parts = [name for name, value in index.items()
             if not name.startswith("_") and isinstance(value, list) and value[0] is not None]
    digest = hashlib.sha256()
    files = [folder / "model_index.json"]
    for part in sorted(parts):
        files += sorted(p for p in (folder / part).rglob("*")
                        if p.is_file() and p.suffix in _HASHED_SUFFIXES)
    for file in files:
        digest.update(file.relative_to(folder).as_posix().encode() + b"\0")
        with open(file, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return "sha256:" + digest.hexdigest()[:16]


def load_pipeline(model: str | os.PathLike | None, task: str = "txt2img", device: str | None = None,
                  dtype=None, scheduler: str = "dpm++", attention: str = "sdpa",
                  revision: str | None = None, local_files_only: bool | None = None):
    """Load a text-to-image or inpainting pipeline, ready to sample.

    Args:
        model: a hub id (``Likalto4/fusion_healthy``) or a local ``save_pretrained`` folder;
            ``None``: the embedded MAM-E-tiny model of the task (:func:`default_model`).
        task: ``txt2img`` (:class:`~diffusers.StableDiffusionPipeline`, 4-channel UNet) or
            ``inpaint`` (:class:`~diffusers.StableDiffusionInpaintPipeline`, 9-channel UNet).
        device: ``cuda``/``cpu``/…; default CUDA when available.
        dtype: ``fp16``/``bf16``/``fp32``; default fp16 on CUDA, fp32 on the CPU.
        scheduler: a name of :data:`SCHEDULERS` (default ``dpm++``, DPM-Solver++ as in the paper).
        attention: ``sdpa`` (PyTorch scaled-dot-product attention, the default) or
            ``xformers`` (memory-efficient attention; needs xformers and CUDA).
        revision: hub revision (branch, tag or commit); ignored for local folders.
        local_files_only: never download; default: whatever ``HF_HUB_OFFLINE`` says.

    The safety checker is off (it flags mammograms as NSFW and is not part of MAM-E).
    """
    from diffusers import StableDiffusionInpaintPipeline, StableDiffusionPipeline

    if task not in TASKS:
        raise ModelError(f"task {task!r}: expected one of {', '.join(TASKS)}")
    if attention not in ATTENTION:
        raise ModelError(f"attention {attention!r}: expected one of {', '.join(ATTENTION)}",
                         param="attention")
    if model is None:
        model = default_model(task)
    device = device or default_device()
    torch_dtype = resolve_dtype(dtype, device)
    folder = resolve_model(model, revision, local_files_only)
    cls = StableDiffusionInpaintPipeline if task == "inpaint" else StableDiffusionPipeline
    try:
        with quiet():
            pipe = cls.from_pretrained(folder, dtype=torch_dtype, safety_checker=None,
                                       feature_extractor=None, requires_safety_checker=False,
                                       local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelError(f"model {model}: cannot load the pipeline in {folder} ({exc})") from None
    channels = pipe.unet.config.in_channels
    if task == "txt2img" and channels != 4:
        raise ModelError(f"model {model}: its UNet has {channels} input channels, a text-to-image "
                         "model needs 4 (is it an inpainting model? use task='inpaint')")
    if task == "inpaint" and channels != 9:
        raise ModelError(f"model {model}: its UNet has {channels} input channels; inpainting needs "
                         "a 9-channel inpainting UNet (train one with `mame-eval train inpaint`)")
    pipe.scheduler = make_scheduler(scheduler, pipe.scheduler.config)
    if attention == "xformers":
        enable_xformers(pipe.unet, device)
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    pipe.mame_source = ModelSource(model=str(model), path=str(folder),
                                   revision=model_revision(folder))
    pipe.mame_scheduler = scheduler
    return pipe


def enable_xformers(unet, device: str) -> None:
    """Switch a UNet to xformers attention; a clear error when that is impossible here."""
    import importlib.util

    if importlib.util.find_spec("xformers") is None:
        raise ModelError("attention 'xformers' asked for, but xformers is not installed "
                         "(pip install 'mame-eval[gpu]'), or use attention 'sdpa'")
    if not str(device).startswith("cuda"):
        raise ModelError(f"attention 'xformers' needs a CUDA device, not {device!r}; use 'sdpa'")
    unet.enable_xformers_memory_efficient_attention()
