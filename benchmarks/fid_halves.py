"""FID, FID∞, KID and PRDC between two random halves of one phantom set (true FID = 0).

    .venv/bin/python benchmarks/fid_halves.py [--n 240] [--features mammonet] [--seed 0]

Renders ``n`` phantoms, prepares them at 128 px, splits the healthy images into two random
halves and measures them with MammoNet-tiny features: the halves come from one distribution,
so the true FID is 0 and an interval for it should reach down to 0. Prints the new numbers
(:func:`mame_eval.journeys.fid.distribution_row`) beside the former ones (percentile bootstrap
with replacement; KID with subsets as large as the sets), which are re-implemented here.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np

from mame_eval.data.phantoms import write_phantom_dataset
from mame_eval.data.prepare import PrepareSettings, prepare_dataset
from mame_eval.images import list_images
from mame_eval.journeys.fid import distribution_row
from mame_eval.metrics.distribution import _poly_kernel, fid_of_features
from mame_eval.metrics.features import extract_features, load_extractor


def old_bootstrap(x, y, n_boot=200, seed=0):
    rng = np.random.default_rng(seed)
    values = [fid_of_features(x[rng.integers(0, len(x), len(x))],
                              y[rng.integers(0, len(y), len(y))]) for _ in range(n_boot)]
    return tuple(np.quantile(values, [0.025, 0.975]))


def old_kid(x, y, subset_size=1000, n_subsets=100, seed=0):
    """The former KID: subsets of min(1000, N) — the whole sets at N ≤ 1000."""
    m = min(subset_size, len(x), len(y))
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_subsets):
        a, b = x[rng.choice(len(x), m, replace=False)], y[rng.choice(len(y), m, replace=False)]
        kxx, kyy, kxy = _poly_kernel(a, a), _poly_kernel(b, b), _poly_kernel(a, b)
        values.append((kxx.sum() - np.trace(kxx)) / (m * (m - 1))
                      + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean())
    return float(np.mean(values)), float(np.std(values, ddof=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=240)
    parser.add_argument("--features", default="mammonet")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_phantom_dataset(tmp / "raw", n=args.n, seed=args.seed, population="mixed",
                              lesion_fraction=0.0, size=(320, 256))
        prepare_dataset(tmp / "raw", tmp / "data", PrepareSettings(size=128))
        files = list_images(tmp / "data" / "healthy")
        order = np.random.default_rng(args.seed).permutation(len(files))
        halves = [[files[i] for i in order[: len(files) // 2]],
                  [files[i] for i in order[len(files) // 2:]]]
        extractor = load_extractor(args.features)
        x, y = (extract_features(h, extractor) for h in halves)
        shutil.rmtree(tmp / "raw")
    row, notes = distribution_row(x, y, seed=args.seed)
    print(f"{len(x)} + {len(y)} healthy phantoms, {x.shape[1]}-d {extractor.name} features; "
          "true FID 0")
    print(f"new: FID {row['fid']:.3f} (bias {row['fid_bias']:+.3f}), FID∞ {row['fid_inf']:.3f} "
          f"[{row['fid_ci_low']:.3f}, {row['fid_ci_high']:.3f}]; KID {row['kid']:.5f} ± "
          f"{row['kid_std']:.5f} (subsets of {row['kid_subset_size']})")
    if "precision" in row:
        print("     " + "; ".join(f"{n} {row[n]:.3f} [{row[n + '_ci_low']:.3f}, "
                                  f"{row[n + '_ci_high']:.3f}]"
                                  for n in ("precision", "recall", "density", "coverage")))
    lo, hi = old_bootstrap(x, y)
    mean, std = old_kid(x, y)
    print(f"old: FID {row['fid']:.3f} [{lo:.3f}, {hi:.3f}] (bootstrap with replacement); "
          f"KID {mean:.5f} ± {std:.2e}")
    for note in notes:
        print("note:", note)


if __name__ == "__main__":
    main()
