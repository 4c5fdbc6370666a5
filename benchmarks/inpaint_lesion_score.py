"""Does MAM-E-tiny-inpaint put a lesion where it is asked to? MammoNet-tiny's lesion score of
each synthesized image after inpainting vs the same healthy image before (issue "The embedded
default": higher for >= 80 % of 50 cases).

    .venv/bin/python benchmarks/inpaint_lesion_score.py [--n 50] [--out runs/bench-inpaint]
        [--model M] [--inpaint-model M] [--cad DIR] [--guidance 4] [--inpaint-guidance G]
        [--steps 24]

Healthy images of four prompts (both vendors, both views) are generated, a lesion is inpainted
in a random box inside each breast (``mame-eval synthesize``), and the lesion probability of
both versions is compared pair by pair. Prints the share of cases whose score rose with its
exact 95 % CI, and the median scores. The run folder is resumable.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from scipy.stats import binomtest

from mame_eval.cad.classifier import load_classifier
from mame_eval.cad.data import read_gray
from mame_eval.generation import synthesize
from mame_eval.models.loading import EMBEDDED_MAMMONET

PROMPTS = ("a hologic mammogram in CC view with medium area",
           "a hologic mammogram in MLO view with big area",
           "a siemens mammogram in CC view with low density",
           "a siemens mammogram in MLO view with high density")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50, help="cases in all")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-inpaint"))
    parser.add_argument("--model", default=None, help="text-to-image model (default embedded)")
    parser.add_argument("--inpaint-model", default=None, help="inpainting model (embedded)")
    parser.add_argument("--cad", type=Path, default=EMBEDDED_MAMMONET)
    parser.add_argument("--guidance", type=float, default=4.0, help="of the healthy images")
    parser.add_argument("--inpaint-guidance", type=float, default=None,
                        help="of the lesions (default: --guidance)")
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.perf_counter()
    per_prompt = [args.n // len(PROMPTS) + (k < args.n % len(PROMPTS))
                  for k in range(len(PROMPTS))]
    pairs = []
    for k, (prompt, n) in enumerate(zip(PROMPTS, per_prompt, strict=True)):
        run = synthesize(args.model, args.inpaint_model, prompt, args.out / f"p{k}", n=n,
                         guidance_scale=args.guidance,
                         inpaint_guidance_scale=args.inpaint_guidance, steps=args.steps,
                         seed=args.seed + 1000 * k, batch_size=8)
        pairs += [(run.out / row["healthy_file"], run.out / row["file"])
                  for row in run.rows[:n]]  # a rerun with a smaller --n counts only n
    classifier = load_classifier(args.cad)
    import torch

    with torch.no_grad():
        before = classifier.score(classifier.prepare([read_gray(a) for a, _ in pairs])).numpy()
        after = classifier.score(classifier.prepare([read_gray(b) for _, b in pairs])).numpy()
    higher = int((after > before).sum())
    ci = binomtest(higher, len(pairs)).proportion_ci(0.95, method="exact")
    counts = ", ".join(f"{n} of {p!r}" for p, n in zip(PROMPTS, per_prompt, strict=True))
    share = higher / len(pairs)
    print(f"{len(pairs)} cases ({counts})")
    print(f"lesion score higher after inpainting: {higher}/{len(pairs)} = {share:.0%}"
          f" (exact 95 % CI {ci.low:.0%}–{ci.high:.0%}); target >= 80 %: "
          f"{'met' if share >= 0.8 else 'NOT met'}")
    print(f"median lesion probability: before {np.median(before):.3f}, after "
          f"{np.median(after):.3f}; wall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
