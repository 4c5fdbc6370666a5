"""Sampling MAM-E into generation runs (DESIGN §4): text-to-image, lesion inpainting, and both
combined (a synthetic mammogram with a lesion). Every run is a folder of PNGs plus
``manifest.jsonl``; resumable, batched, and split across processes under ``accelerate launch``.
"""

from mame_eval.generation.generate import generate, prompt_from_attributes
from mame_eval.generation.inpaint import (
    composite,
    feather_alpha,
    inpaint,
    inpaint_arrays,
    parse_box,
)
from mame_eval.generation.manifest import MANIFEST, GenerationRun, read_manifest, run_indexed
from mame_eval.generation.masks import box_to_mask
from mame_eval.generation.synthesize import random_box_in_breast, synthesize

__all__ = [
    "MANIFEST",
    "GenerationRun",
    "box_to_mask",
    "composite",
    "feather_alpha",
    "generate",
    "inpaint",
    "inpaint_arrays",
    "parse_box",
    "prompt_from_attributes",
    "random_box_in_breast",
    "read_manifest",
    "run_indexed",
    "synthesize",
]
