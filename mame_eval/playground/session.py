"""What the playground does, without Streamlit: models behind locks, step progress and Stop,
prompt choices per model family, masks from a drawing, and saving a selection as a run folder.

The Streamlit script (:mod:`mame_eval.playground.app`) only lays out widgets and calls these.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mame_eval.errors import InputError, MameError, PromptError
from mame_eval.generation.manifest import MANIFEST, read_manifest
from mame_eval.io import save_png, write_jsonl
from mame_eval.prompts import Area, Density, Family, Prompt, Vendor, View, parse

#: Published MAM-E ids and the prompt family each was trained on (DESIGN §1).
PUBLISHED_FAMILIES = {
    "Likalto4/mammo40k_healthy-only": Family.HOLOGIC,
    "Likalto4/vindr_siemens_healthy": Family.SIEMENS,
    "Likalto4/fusion_healthy": Family.FUSION,
}


class GenerationStopped(MameError):
    """A generation was stopped by the user (raised from inside the sampling loop)."""


# --------------------------------------------------------------------------- prompts


def model_family(model: str | None, family: str | None = None) -> Family:
    """The prompt family of a text-to-image model: given, a published id's, else fusion.

    The embedded MAM-E-tiny is fusion-style (vendor + view + density/area); a local folder
    whose family is unknown is treated as fusion unless ``family`` says otherwise.
    """
    if family:
        fam = Family.parse(family)
        if fam is Family.INPAINTING:
            raise PromptError("family 'inpainting' is for the inpainting model; a text-to-image "
                              "model is hologic, siemens or fusion")
        return fam
    return PUBLISHED_FAMILIES.get(str(model), Family.FUSION)


def attribute_choices(family: Family) -> dict[str, list[str]]:
    """The picker options a model of ``family`` was trained on (values of :mod:`prompts`)."""
    choices: dict[str, list[str]] = {"view": [v.value for v in View]}
    if family is Family.FUSION:
        choices["vendor"] = [v.value for v in Vendor]
    if family in (Family.FUSION, Family.SIEMENS):
        choices["density"] = [d.value for d in Density]
    if family in (Family.FUSION, Family.HOLOGIC):
        choices["area"] = [a.value for a in Area]
    return choices


def build_prompt(family: Family, view: str, vendor: str | None = None,
                 density: str | None = None, area: str | None = None,
                 density_first: bool = True) -> str:
    """The canonical prompt of the picked values (:class:`~mame_eval.prompts.Prompt`)."""
    return Prompt(family, view=view, vendor=vendor if family is Family.FUSION else None,
                  density=density, area=area, density_first=density_first).render()


def check_free_prompt(text: str, family: Family) -> str:
    """A typed prompt in the canonical form, if ``family``'s grammar allows it.

    Raises :class:`PromptError` with one line saying what was expected.
    """
    if not text or not text.strip():
        raise PromptError("the prompt is empty; type one or use the pickers")
    parsed = parse(text)
    if parsed.family is Family.INPAINTING:
        raise PromptError(f"{text!r} is the inpainting prompt; use the Inpaint tab for lesions")
    if parsed.family is not family:
        example = build_prompt(family, "CC", "hologic",
                               density="low" if family is not Family.HOLOGIC else None,
                               area="medium" if family is not Family.SIEMENS else None)
        raise PromptError(f"prompt {text!r} is a {parsed.family.value} prompt, but this model "
                          f"was trained on {family.value} prompts such as {example!r}")
    return parsed.render()


# --------------------------------------------------------------------------- models


@dataclass
class ModelSlot:
    """One loaded pipeline and the lock that lets one generation at a time use it."""

    pipe: object
    task: str
    lock: threading.Lock = field(default_factory=threading.Lock)
    owner: str | None = None  # who holds the lock (a session id), for the waiting message

    @contextmanager
    def hold(self, who: str, waiting: Callable[[float], None] | None = None,
             poll_s: float = 0.25) -> Iterator[object]:
        """Hold the model for one generation; ``waiting(seconds)`` is called while another
        session holds it (the caller may raise from it to give up)."""
        start = time.monotonic()
        while not self.lock.acquire(timeout=poll_s):
            if waiting is not None:
                waiting(time.monotonic() - start)
        self.owner = who
        try:
            yield self.pipe
        finally:
            self.owner = None
            self.lock.release()


def load_slot(model: str | None, task: str, scheduler: str = "dpm++") -> ModelSlot:
    """Load ``model`` (``None``: the embedded one) for ``task`` on the default device."""
    from mame_eval.models import load_pipeline

    return ModelSlot(load_pipeline(model, task=task, scheduler=scheduler), task)


def use_scheduler(pipe, name: str) -> None:
    """Switch a loaded pipeline's sampler (recorded in manifests as ``scheduler``)."""
    from mame_eval.models.loading import make_scheduler

    if getattr(pipe, "mame_scheduler", None) != name:
        pipe.scheduler = make_scheduler(name, pipe.scheduler.config)
        pipe.mame_scheduler = name


class StepReporter:
    """A pipeline that reports every denoising step: ``on_step()`` after each one.

    Wraps a diffusers pipeline so that the library's ``generate``/``inpaint``/``synthesize``
    run unchanged; every other attribute is the wrapped pipeline's. ``on_step`` may raise
    (e.g. :class:`GenerationStopped`) to abort the run: images finished before are kept.
    """

    def __init__(self, pipe, on_step: Callable[[], None]):
        self._pipe = pipe
        self._on_step = on_step

    def __getattr__(self, name: str):
        return getattr(self._pipe, name)

    def __call__(self, *args, **kwargs):
        def callback(pipe, step, timestep, tensors):
            self._on_step()
            return tensors

        return self._pipe(*args, callback_on_step_end=callback, **kwargs)


@dataclass
class StepCounter:
    """Counts denoising steps over a whole request and turns them into a fraction."""

    total: int
    done: int = 0
    started: float = field(default_factory=time.monotonic)

    def step(self) -> float:
        self.done = min(self.total, self.done + 1)
        return self.done / self.total

    def text(self) -> str:
        return (f"step {self.done} / {self.total} · {time.monotonic() - self.started:.1f} s")


# --------------------------------------------------------------------------- masks


def mask_from_drawing(rgba: np.ndarray | None, height: int, width: int,
                      coverage: float = 0.5) -> np.ndarray:
    """The boolean (H, W) lesion mask of a canvas drawing (RGBA, any size; drawn = alpha > 0).

    The drawing is resampled to the image by area averaging; a pixel belongs to the mask when
    at least ``coverage`` of it was painted (any painted pixel, when that leaves none).
    Raises :class:`InputError` when nothing was drawn.
    """
    from PIL import Image

    if rgba is None or np.asarray(rgba).ndim != 3 or np.asarray(rgba).shape[-1] != 4:
        raise InputError("nothing is drawn yet; draw the lesion region on the image")
    painted = (np.asarray(rgba)[..., 3] > 0).astype(np.float32)
    if not painted.any():
        raise InputError("nothing is drawn yet; draw the lesion region on the image")
    share = np.asarray(Image.fromarray(painted, mode="F").resize((width, height), Image.BOX))
    mask = share >= coverage
    return mask if mask.any() else share > 0


def check_mask_inside(mask: np.ndarray, image: np.ndarray) -> str | None:
    """A warning when the mask lies wholly outside the breast (the model paints tissue)."""
    from mame_eval.data.preprocess import breast_mask

    if not (mask & breast_mask(image)).any():
        return "the mask lies outside the breast; a lesion is expected inside the breast"
    return None


# --------------------------------------------------------------------------- gallery


@dataclass(frozen=True)
class GalleryItem:
    """One image on screen: its run folder and manifest row (``file`` and any ``*_file``)."""

    run: Path
    row: dict

    @property
    def path(self) -> Path:
        return self.run / self.row["file"]

    def caption(self) -> str:
        r = self.row
        parts = [f"seed {r.get('seed')}", f"guidance {r.get('guidance_scale'):g}",
                 f"{r.get('steps')} steps", str(r.get("scheduler", ""))]
        if r.get("laterality"):
            parts.append(f"laterality {r['laterality']}")
        return " · ".join(parts)


def gallery_items(run: Path) -> list[GalleryItem]:
    """The finished images of a run folder, by index."""
    rows = read_manifest(run)
    return [GalleryItem(Path(run), rows[i]) for i in sorted(rows)]


def save_selection(items: list[GalleryItem], out: Path) -> Path:
    """Copy ``items`` into the new run folder ``out`` with one ``manifest.jsonl``.

    The layout every consumer reads: the images directly in ``out`` (``00000.png …``: what
    ``diversity --images``, ``study create`` and ``explain --images`` take), lesion masks in
    ``out/masks/`` and healthy originals in ``out/healthy/`` under the same names
    (``explain --masks OUT/masks``), and one manifest line per image: its original line
    (model, revision, prompt, seed, guidance, steps, scheduler, …) with ``index``, ``file``,
    ``mask_file``/``healthy_file`` renamed to the new files and ``source`` naming the old.
    Written into a temporary folder renamed into place, so ``out`` is whole or absent.
    """
    if not items:
        raise InputError("nothing is selected; tick the images to save first")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out} already exists and is not empty; choose a new folder name")
    staging = out.with_name(f".{out.name}.saving")
    shutil.rmtree(staging, ignore_errors=True)
    rows = []
    try:
        for index, item in enumerate(items):
            name = f"{index:05d}.png"
            row = {k: v for k, v in item.row.items() if k not in ("process",)}
            row.update(index=index, file=name, source=str(item.path))
            for key in ("mask_file", "healthy_file"):
                if item.row.get(key):
                    folder = "masks" if key == "mask_file" else "healthy"
                    (staging / folder).mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(item.run / item.row[key], staging / folder / name)
                    row[key] = f"{folder}/{name}"
            staging.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(item.path, staging / name)
            rows.append(row)
        write_jsonl(staging / MANIFEST, rows)
        if out.exists():
            out.rmdir()
        out.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def save_source(image: np.ndarray, folder: Path, name: str = "source.png") -> Path:
    """Write an uploaded or picked image into a scratch folder (inpaint reads a file)."""
    path = Path(folder) / name
    save_png(path, image)
    return path


def fit_image(image: np.ndarray, side: int) -> tuple[np.ndarray, str | None]:
    """An RGB image at the model's ``side``×``side``: centre-cropped and resized if needed.

    Returns the image and a note saying what was done (``None`` when nothing was).
    """
    from PIL import Image, ImageOps

    h, w = image.shape[:2]
    if (h, w) == (side, side):
        return image, None
    fitted = ImageOps.fit(Image.fromarray(image).convert("RGB"), (side, side),
                          Image.BILINEAR)
    return np.asarray(fitted), (f"the image was {w}×{h}; it was centre-cropped and resized to "
                                f"{side}×{side}, the model's size")
