"""Benchmark all-pairs MS-SSIM: the original notebook's per-pair torchmetrics loop against ours.

    PYTHONPATH=. .venv/bin/python benchmarks/diversity.py [--n 40] [--size 512] \
        [--scaling 5,10,20,40] [--threads 1]

Measured in one run, so that the load of a shared machine falls on both sides alike:

* **in-process** — the original notebook's loop (one pair at a time through torchmetrics'
  ``multiscale_structural_similarity_index_measure``, data range 255, window 11, σ 1.5, the
  standard weights) against :func:`mame_eval.metrics.diversity.ms_ssim_pairs` on the same
  N(N−1)/2 pairs of N phantoms; also our full :func:`diversity` (values + bootstrap CI);
* **whole command** — a fresh Python process running the notebook loop over the PNG folder
  against ``python -m mame_eval diversity --images DIR --out …`` (imports, reading the images,
  the bootstrap, the table, the figure and provenance included);
* **values** — the largest difference from pytorch-msssim's ``ms_ssim`` pair by pair (our
  reference, ≤ 1e-5 required) and from torchmetrics (≈ 1e-3: it pads the pooled scales
  differently);
* **scaling** — our time for several N, fitted as t ≈ a·N + b·N(N−1)/2 (per image: the
  pyramid and local statistics; per pair: one filtering of x·y per scale), and what
  ``--max-pairs`` bounds it to.

Measured 2026-12-07 on the shared 2-core machine (load average 8–10 throughout, 5 sessions;
torch 2.14.1, 1 intra-op thread on both sides), 512-px phantoms:

    N = 40 (780 pairs): in-process 592.1 s (759 ms/pair) vs 6.02 s (7.7 ms/pair): 98x
        (other test runs overlapped the baseline's part: the ratio is flattered);
        whole command 514.7 s vs 20.9 s: 24.6x
    N = 20 (190 pairs, nothing else of ours running): in-process 77.8 s vs 2.47 s: 31.5x;
        whole command 108.1 s vs 18.7 s: 5.8x — ours is then mostly start-up (importing
        torch ≈ 8 s, matplotlib, pandas, the PNG+PDF figure ≈ 2.6 s at that load)
    max |ours − pytorch-msssim| 6.9e-7 (60 pairs, N = 40), 1.3e-6 (64 pairs, N = 20);
        max |ours − torchmetrics| 0.46 (its reflect-padded borders, see test_diversity)
    cost: N = 5, 10, 20, 40 → 0.19, 0.72, 2.48, 7.58 s; t ≈ 49 ms × N + 7.2 ms × N(N−1)/2,
        so 1000 images take ≈ 1 h for all pairs and ≈ 85 s with --max-pairs 5000.

Both sides run with the same number of intra-op torch threads (``--threads``, default 1: on a
shared 2-core machine two threads made every per-pair loop several times slower, ours and the
baseline's alike). ``ms_ssim_pairs`` itself runs with one intra-op thread on a CPU.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mame_eval.data.phantoms import PhantomSpec, render_phantom
from mame_eval.metrics.diversity import MS_SSIM_WEIGHTS, all_pairs, diversity, ms_ssim_pairs

ROOT = Path(__file__).resolve().parents[1]


def phantoms(n: int, size: int) -> list[np.ndarray]:
    images = []
    for i in range(n):
        spec = PhantomSpec(vendor="hologic", view="MLO" if i % 2 else "CC",
                           density="ABCD"[i % 4], size=(640, 520))
        # display() is float 0…1: to the 8-bit scale the metric assumes
        display = np.round(255 * render_phantom(spec, i).display()).astype(np.uint8)
        images.append(np.asarray(Image.fromarray(display).resize((size, size))))
    return images


def per_pair_torchmetrics(images: list[np.ndarray]) -> list[float]:
    """The original notebook: one pair per call of torchmetrics' MS-SSIM."""
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

    values = []
    for i, j in all_pairs(len(images)):
        x = torch.tensor(images[i], dtype=torch.float32)[None, None]
        y = torch.tensor(images[j], dtype=torch.float32)[None, None]
        values.append(float(multiscale_structural_similarity_index_measure(
            x, y, data_range=255.0, kernel_size=11, sigma=1.5, betas=MS_SSIM_WEIGHTS)))
    return values


def per_pair_msssim(images: list[np.ndarray], pairs) -> list[float]:
    from pytorch_msssim import ms_ssim

    values = []
    for i, j in pairs:
        x = torch.tensor(images[i], dtype=torch.float32)[None, None]
        y = torch.tensor(images[j], dtype=torch.float32)[None, None]
        values.append(float(ms_ssim(x, y, data_range=255, win_size=11,
                                    weights=list(MS_SSIM_WEIGHTS))))
    return values


def baseline_command(folder: Path) -> None:
    """What the notebook did for a folder, as a whole process: read, loop, mean."""
    files = sorted(folder.glob("*.png"))
    images = [np.asarray(Image.open(f).convert("L")) for f in files]
    values = per_pair_torchmetrics(images)
    print(f"mean MS-SSIM {np.mean(values):.4f} over {len(values)} pairs")


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def run(command: list[str], threads: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg",
           "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def scaling(sizes: list[int], size: int) -> None:
    """Our time for several N and the fit t ≈ a·N + b·pairs."""
    rows = []
    for n in sizes:
        images = phantoms(n, size)
        _, t = timed(ms_ssim_pairs, images, all_pairs(n))
        rows.append((n, n * (n - 1) // 2, t))
        print(f"  N = {n:3d}: {rows[-1][1]:5d} pairs  {t:7.2f} s")
    design = np.array([[n, p] for n, p, _ in rows], dtype=float)
    (a, b), *_ = np.linalg.lstsq(design, np.array([t for *_, t in rows]), rcond=None)
    print(f"  fit: t ≈ {a * 1e3:.1f} ms × N + {b * 1e3:.2f} ms × N(N−1)/2  (quadratic in N; "
          f"with --max-pairs M: ≈ {a * 1e3:.1f} ms × N + {b * 1e3:.2f} ms × M)")
    for n in (100, 1000, 10000):
        full = a * n + b * n * (n - 1) / 2
        capped = a * n + b * min(n * (n - 1) / 2, 5000)
        print(f"  predicted N = {n:5d}: all pairs {full:9.0f} s; --max-pairs 5000 "
              f"{capped:7.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--scaling", default="5,10,20,40",
                        help="comma list of N for the cost table ('' to skip)")
    parser.add_argument("--reference-pairs", type=int, default=60,
                        help="pairs compared pair by pair with pytorch-msssim")
    parser.add_argument("--baseline-folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.baseline_folder is not None:  # the baseline's whole command, in a subprocess
        baseline_command(args.baseline_folder)
        return
    load = os.getloadavg()
    print(f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} "
          f"CPUs; torch {torch.__version__}, {args.threads} intra-op thread(s)")
    images = phantoms(args.n, args.size)
    pairs = all_pairs(args.n)
    print(f"{len(pairs)} pairs of {args.n} phantoms of {args.size} px")

    per_pair_torchmetrics(images[:2])  # warm-up: first calls (imports, allocator) untimed
    ms_ssim_pairs(images[:2], [(0, 1)])
    baseline, t_base = timed(per_pair_torchmetrics, images)
    ours, t_ours = timed(ms_ssim_pairs, images, pairs)
    result, t_div = timed(diversity, images)
    print(f"in-process: notebook loop (torchmetrics, per pair) {t_base:8.2f} s  "
          f"({1e3 * t_base / len(pairs):.0f} ms/pair)")
    print(f"            ours, ms_ssim_pairs                  {t_ours:8.2f} s  "
          f"({1e3 * t_ours / len(pairs):.1f} ms/pair)   ratio {t_base / t_ours:.1f}x")
    print(f"            ours, diversity() with its CI        {t_div:8.2f} s"
          f"                   ratio {t_base / t_div:.1f}x")

    some = pairs[:: max(1, len(pairs) // args.reference_pairs)]
    reference = np.asarray(per_pair_msssim(images, some))
    index = {p: k for k, p in enumerate(pairs)}
    diff_ref = np.max(np.abs(reference - ours[[index[p] for p in some]]))
    diff_tm = np.max(np.abs(np.asarray(baseline) - ours))
    print(f"values: max |ours − pytorch-msssim| over {len(some)} pairs {diff_ref:.1e}; "
          f"max |ours − torchmetrics| over all pairs {diff_tm:.1e}; "
          f"mean MS-SSIM {result.mean:.4f} [{result.ci_low:.4f}, {result.ci_high:.4f}]")

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        for k, image in enumerate(images):
            Image.fromarray(image).save(folder / f"{k:04d}.png")
        t_cmd_base = run([sys.executable, __file__, "--threads", str(args.threads),
                          "--baseline-folder", str(folder)], args.threads)
        t_cmd_ours = run([sys.executable, "-m", "mame_eval", "diversity", "--images",
                          str(folder), "--out", str(Path(tmp) / "run")], args.threads)
    print(f"whole command: notebook loop {t_cmd_base:8.2f} s; `mame-eval diversity --images` "
          f"{t_cmd_ours:8.2f} s; ratio {t_cmd_base / t_cmd_ours:.1f}x")
    load = os.getloadavg()
    print(f"load average after {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    if args.scaling:
        print("cost of ours against N (all pairs):")
        scaling([int(v) for v in args.scaling.split(",")], args.size)


if __name__ == "__main__":
    main()
