"""Does MAM-E-tiny-inpaint put a lesion where it is asked to, and without a seam? (issue 17)

MammoNet-tiny's lesion score of each synthesized image after inpainting vs the same healthy
image before: the share of cases whose score rose must be >= 90 % (issue 17; it was 80 % with
the first embedded model), also per box size; and the edge step of the blend
(:func:`mame_eval.generation.seam.edge_step`) for the plain feathered composite and the Poisson
blend, on the same generated pixels.

    .venv/bin/python benchmarks/inpaint_lesion_score.py [--n 50] [--out runs/bench-inpaint]
        [--model M] [--inpaint-model M] [--cad DIR] [--guidance 4] [--inpaint-guidance G]
        [--steps 24] [--mask-shape box] [--blend poisson] [--seam-factor 1.5]

Healthy images of four prompts (both vendors, both views) are generated, a lesion is inpainted
in a random box inside each breast (``mame-eval synthesize``, box side 6–15 % of the image:
8–19 px at 128 px) and kept *raw* (no composite); then both blends are computed from the same
raw output, the lesion probability of the healthy and of the blended (``--blend``) image is
compared pair by pair, and the edge step of each blend is measured. Prints the share of cases
whose score rose with its exact 95 % CI, overall and per third of the box sizes, the median
scores, and per blend the median band ÷ interior gradient ratio (with a bootstrap 95 % CI) and
the share of cases within ``--seam-factor``. The run folder is resumable.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from scipy.stats import binomtest

from mame_eval.cad.classifier import load_classifier
from mame_eval.generation import synthesize
from mame_eval.generation.inpaint import (
    BLENDS,
    blend,
    changed_region,
    default_feather,
    load_image,
)
from mame_eval.generation.masks import MASK_SHAPES
from mame_eval.generation.seam import edge_step
from mame_eval.models.loading import EMBEDDED_MAMMONET

PROMPTS = ("a hologic mammogram in CC view with medium area",
           "a hologic mammogram in MLO view with big area",
           "a siemens mammogram in CC view with low density",
           "a siemens mammogram in MLO view with high density")


def share_line(label: str, higher: np.ndarray) -> str:
    k, n = int(higher.sum()), len(higher)
    ci = binomtest(k, n).proportion_ci(0.95, method="exact")
    return f"{label}: {k}/{n} = {k / n:.0%} (exact 95 % CI {ci.low:.0%}–{ci.high:.0%})"


def median_ci(values: np.ndarray, rng: np.random.Generator, reps: int = 2000
              ) -> tuple[float, float, float]:
    """Median and its percentile-bootstrap 95 % CI."""
    values = values[np.isfinite(values)]
    boots = np.median(rng.choice(values, (reps, len(values))), axis=1)
    return float(np.median(values)), float(np.quantile(boots, 0.025)), \
        float(np.quantile(boots, 0.975))


def real_mass_outline(prepared: Path) -> np.ndarray:
    """:func:`edge_step` of real (phantom) masses on their own tight boxes, as a reference for
    the lesion-outline ratio: what a mass's margin alone gives there."""
    from mame_eval.generation.masks import box_to_mask
    from mame_eval.io import read_jsonl

    ratios = []
    for row in read_jsonl(prepared / "lesion" / "metadata.jsonl"):
        x0, y0, x1, y1 = row["box"]
        if max(x1 - x0, y1 - y0) < 6:
            continue
        image = load_image(prepared / "lesion" / row["file_name"])
        box = (np.floor(x0), np.floor(y0), np.ceil(x1), np.ceil(y1))
        ratios.append(edge_step(image, box_to_mask(box, *image.shape[:2])).ratio)
    ratios = np.array(ratios, dtype=float)
    return ratios[np.isfinite(ratios)]


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
    parser.add_argument("--mask-shape", choices=MASK_SHAPES, default="box")
    parser.add_argument("--blend", choices=BLENDS, default="poisson",
                        help="blend of the images whose lesion score is compared")
    parser.add_argument("--real", type=Path, default=None,
                        help="a prepared set whose real masses give the lesion-outline "
                        "reference (e.g. runs/embedded/prepared)")
    parser.add_argument("--seam-factor", type=float, default=1.5,
                        help="largest acceptable band ÷ interior gradient ratio")
    args = parser.parse_args()
    start = time.perf_counter()
    per_prompt = [args.n // len(PROMPTS) + (k < args.n % len(PROMPTS))
                  for k in range(len(PROMPTS))]
    cases = []
    for k, (prompt, n) in enumerate(zip(PROMPTS, per_prompt, strict=True)):
        run = synthesize(args.model, args.inpaint_model, prompt, args.out / f"p{k}", n=n,
                         guidance_scale=args.guidance,
                         inpaint_guidance_scale=args.inpaint_guidance, steps=args.steps,
                         seed=args.seed + 1000 * k, batch_size=8, composite_output=False,
                         mask_shape=args.mask_shape)
        cases += [(run.out / row["healthy_file"], run.out / row["file"],
                   run.out / row["mask_file"], row["box"])
                  for row in run.rows[:n]]  # a rerun with a smaller --n counts only n

    healthy, blended, steps = [], {b: [] for b in BLENDS}, {b: [] for b in BLENDS}
    reference, outline = [], {b: [] for b in BLENDS}
    for healthy_file, raw_file, mask_file, _ in cases:
        clean, raw = load_image(healthy_file), load_image(raw_file)
        mask = load_image(mask_file)[..., 0] >= 128
        ramp = default_feather(*clean.shape[:2])
        healthy.append(clean)
        for method in BLENDS:
            out = blend(clean, raw, mask, ramp, method)
            blended[method].append(out)
            # The seam: where the changed pixels meet the original ones.
            step = edge_step(out, changed_region(mask, ramp, method), reference=clean)
            steps[method].append(step.ratio)
            # The lesion's own outline (a mass filling its box has its margin there).
            outline[method].append(edge_step(out, mask).ratio)
        reference.append(step.reference_ratio)

    classifier = load_classifier(args.cad)
    import torch

    def scores(images: list[np.ndarray]) -> np.ndarray:
        with torch.no_grad():
            return classifier.score(classifier.prepare([im[..., 0] for im in images])).numpy()

    before, after = scores(healthy), scores(blended[args.blend])
    higher = after > before
    side = np.array([max(b[2] - b[0], b[3] - b[1]) for *_, b in cases])
    counts = ", ".join(f"{n} of {p!r}" for p, n in zip(PROMPTS, per_prompt, strict=True))
    print(f"{len(cases)} cases ({counts}); mask shape {args.mask_shape}, lesion scores of the "
          f"{args.blend} blend")
    share = higher.mean()
    print(share_line("lesion score higher after inpainting", higher)
          + f"; target >= 90 %: {'met' if share >= 0.9 else 'NOT met'}")
    edges = np.quantile(side, [0, 1 / 3, 2 / 3, 1])
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = (side >= lo) & (side <= hi) if hi == edges[-1] else (side >= lo) & (side < hi)
        if sel.any():
            print("  " + share_line(f"box side {lo:.0f}–{hi:.0f} px", higher[sel]))
    print(f"median lesion probability: before {np.median(before):.3f}, after "
          f"{np.median(after):.3f}")
    rng = np.random.default_rng(0)
    ref = np.array(reference, dtype=float)
    med, lo, hi = median_ci(ref, rng)
    print(f"edge step (gradient on the outline of the changed pixels ÷ the breast interior's;"
          f" n = {len(ref)}):"
          f"\n  healthy image before inpainting: median {med:.2f} (95 % CI {lo:.2f}–{hi:.2f})")
    for method in BLENDS:
        ratios = np.array(steps[method], dtype=float)
        med, lo, hi = median_ci(ratios, rng)
        within = np.isfinite(ratios) & (ratios <= args.seam_factor)
        print(f"  {method:8s}: median {med:.2f} (95 % CI {lo:.2f}–{hi:.2f}); "
              + share_line(f"<= {args.seam_factor:g}", within[np.isfinite(ratios)]))
    print("the same ratio on the lesion mask's own outline (a mass's margin, not a seam):")
    for method in BLENDS:
        med, lo, hi = median_ci(np.array(outline[method], dtype=float), rng)
        print(f"  {method:8s}: median {med:.2f} (95 % CI {lo:.2f}–{hi:.2f})")
    if args.real is not None:
        real = real_mass_outline(args.real)
        med, lo, hi = median_ci(real, rng)
        print(f"  real phantom masses of {args.real} on their tight boxes (side >= 6 px, "
              f"n = {len(real)}): median {med:.2f} (95 % CI {lo:.2f}–{hi:.2f})")
    print(f"wall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
