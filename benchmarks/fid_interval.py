"""Coverage of the FID interval on Gaussians whose true FID is known in closed form.

    .venv/bin/python benchmarks/fid_interval.py [--reps 200] [--n-boot 50] [--old]

For each scenario (feature dimension d, set sizes n₁, n₂, a mean shift and a covariance
change) the true FID is the Fréchet distance of the true parameters; each replicate draws
both sets afresh and asks :func:`mame_eval.metrics.distribution.fid_interval` for FID∞ and its
95 % interval. Prints the true FID, the mean plug-in FID and FID∞ (their bias), the share of
intervals that cover the true FID, the mean width and the seconds taken. ``--old`` also
measures the former percentile bootstrap with replacement (200 resamples), for contrast.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from mame_eval.metrics.distribution import (
    GaussianStats,
    fid_interval,
    fid_of_features,
    frechet_distance,
)

#: (d, n_real, n_synthetic, mean shift, covariance scale)
SCENARIOS = [(8, 200, 200, 1.0, 1.0), (16, 500, 500, 1.0, 1.0), (16, 300, 500, 2.0, 1.5),
             (8, 200, 200, 0.3, 1.0), (64, 100, 100, 2.0, 1.0)]


def gaussians(d: int, shift: float, scale: float, seed: int):
    """Two Gaussians (μ, Σ) with a random covariance structure; Σ₂ mixes Σ₁ with another."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    s1 = a @ a.T / d + 0.5 * np.eye(d)
    s2 = scale * (0.7 * s1 + 0.3 * (b @ b.T / d + 0.5 * np.eye(d)))
    return (np.zeros(d), s1), (shift * rng.normal(size=d) / np.sqrt(d), s2)


def old_bootstrap(x, y, rng, n_boot=200):
    """The former interval: percentile bootstrap resampling each set with replacement."""
    values = [fid_of_features(x[rng.integers(0, len(x), len(x))],
                              y[rng.integers(0, len(y), len(y))]) for _ in range(n_boot)]
    return tuple(np.quantile(values, [0.025, 0.975]))


def run(scenario, reps: int, n_boot: int, old: bool, seed: int = 0) -> None:
    d, n1, n2, shift, scale = scenario
    (mu1, s1), (mu2, s2) = gaussians(d, shift, scale, seed)
    truth = frechet_distance(GaussianStats(mu1, s1, n1), GaussianStats(mu2, s2, n2))
    l1, l2 = np.linalg.cholesky(s1), np.linalg.cholesky(s2)
    rng = np.random.default_rng(seed + 1)
    start = time.perf_counter()
    hits, widths, plug, inf, old_hits, own = 0, [], [], [], 0, 0
    for r in range(reps):
        x = mu1 + rng.normal(size=(n1, d)) @ l1.T
        y = mu2 + rng.normal(size=(n2, d)) @ l2.T
        res = fid_interval(x, y, n_boot=n_boot, seed=r)
        hits += res.ci_low <= truth <= res.ci_high
        widths.append(res.ci_high - res.ci_low)
        plug.append(res.fid)
        inf.append(res.fid_inf)
        if old:
            lo, hi = old_bootstrap(x, y, rng)
            old_hits += lo <= truth <= hi
            own += lo <= res.fid <= hi
    line = (f"d={d:3d} n={n1},{n2}  true FID {truth:7.3f}  plug-in {np.mean(plug):7.3f} "
            f"(bias {np.mean(plug) - truth:+.3f})  FID∞ {np.mean(inf):7.3f} "
            f"(bias {np.mean(inf) - truth:+.3f}, sd {np.std(inf):.3f})  "
            f"coverage {hits / reps:.3f} ({hits}/{reps}), width {np.mean(widths):.3f}")
    if old:
        line += (f"  | old bootstrap: coverage {old_hits / reps:.3f}, contains its own "
                 f"estimate {own / reps:.3f}")
    print(line + f"  [{time.perf_counter() - start:.0f} s]", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--n-boot", type=int, default=50)
    parser.add_argument("--old", action="store_true")
    args = parser.parse_args()
    for scenario in SCENARIOS:
        run(scenario, args.reps, args.n_boot, args.old)


if __name__ == "__main__":
    main()
