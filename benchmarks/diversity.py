"""Benchmark all-pairs MS-SSIM: our ms_ssim_pairs (pytorch-msssim) vs the original per-pair loop.

    .venv/bin/python benchmarks/diversity.py [--n 20] [--size 512]

The original notebook computed one pair at a time with torchmetrics' MS-SSIM; we run all
N(N-1)/2 pairs through pytorch-msssim, 16 pairs per call on a GPU and one at a time on a CPU
(where large batches fall out of cache: see ``default_pair_batch``). Prints the timings of
both per-pair loops (torchmetrics, and pytorch-msssim at our exact settings) and of ours, the
ratios, and the largest value differences: round-off against the pytorch-msssim loop; ~1e-3
against torchmetrics, which pads differently at the coarse scales.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from PIL import Image

from mame_eval.data.phantoms import PhantomSpec, render_phantom
from mame_eval.metrics.diversity import (
    MS_SSIM_WEIGHTS,
    all_pairs,
    default_pair_batch,
    ms_ssim_pairs,
)


def phantoms(n: int, size: int) -> list[np.ndarray]:
    images = []
    for i in range(n):
        spec = PhantomSpec(vendor="hologic", view="MLO" if i % 2 else "CC",
                           density="ABCD"[i % 4], size=(640, 520))
        display = render_phantom(spec, i).display()
        images.append(np.asarray(Image.fromarray(display).resize((size, size))))
    return images


def per_pair_torchmetrics(images: list[np.ndarray]) -> list[float]:
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

    values = []
    for i, j in all_pairs(len(images)):
        x = torch.tensor(images[i], dtype=torch.float32)[None, None]
        y = torch.tensor(images[j], dtype=torch.float32)[None, None]
        values.append(float(multiscale_structural_similarity_index_measure(
            x, y, data_range=255.0, kernel_size=11, sigma=1.5, betas=MS_SSIM_WEIGHTS)))
    return values


def per_pair_msssim(images: list[np.ndarray]) -> list[float]:
    from pytorch_msssim import ms_ssim

    values = []
    for i, j in all_pairs(len(images)):
        x = torch.tensor(images[i], dtype=torch.float32)[None, None]
        y = torch.tensor(images[j], dtype=torch.float32)[None, None]
        values.append(float(ms_ssim(x, y, data_range=255, win_size=11)))
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    images = phantoms(args.n, args.size)
    n_pairs = args.n * (args.n - 1) // 2
    start = time.perf_counter()
    baseline = per_pair_torchmetrics(images)
    t_base = time.perf_counter() - start
    start = time.perf_counter()
    same_library = per_pair_msssim(images)
    t_same = time.perf_counter() - start
    start = time.perf_counter()
    ours = ms_ssim_pairs(images, all_pairs(args.n))  # pairs per call: default_pair_batch
    t_ours = time.perf_counter() - start
    print(f"{n_pairs} pairs of {args.size}px images")
    print(f"per-pair torchmetrics loop: {t_base:.2f} s")
    print(f"per-pair pytorch-msssim:    {t_same:.2f} s")
    print(f"ours (ms_ssim_pairs, {default_pair_batch('cpu')} pair(s) per call on the CPU): "
          f"{t_ours:.2f} s")
    print(f"speed ratio (torchmetrics loop / ours): {t_base / t_ours:.2f}x; "
          f"(pytorch-msssim loop / ours): {t_same / t_ours:.2f}x")
    print(f"max |ours - pytorch-msssim loop|: "
          f"{np.max(np.abs(np.asarray(same_library) - ours)):.2e}")
    print(f"max |ours - torchmetrics loop|:   {np.max(np.abs(np.asarray(baseline) - ours)):.2e}")


if __name__ == "__main__":
    main()
