"""Benchmark `prepare`: images/s with --workers 2 against --workers 1, measured in one run.

    .venv/bin/python benchmarks/prepare.py [--n 300] [--workers 2]

Generates phantoms (full 1024×832 size) in a temporary folder, prepares them serially and in
parallel into fresh folders, and prints throughput and the speed-up ratio.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from mame_eval.data.phantoms import write_phantom_dataset
from mame_eval.data.prepare import prepare_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="phantom images")
    parser.add_argument("--workers", type=int, default=2, help="parallel workers to compare")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw"
        write_phantom_dataset(raw, n=args.n, seed=0)
        rates = {}
        for workers in (1, args.workers):
            start = time.perf_counter()
            report = prepare_dataset(raw, Path(tmp) / f"out{workers}", workers=workers)
            wall = time.perf_counter() - start
            rates[workers] = report.counts["records"] / wall
            print(f"workers={workers}: {report.counts['records']} images in {wall:.2f} s "
                  f"= {rates[workers]:.1f} images/s")
        print(f"speed-up workers={args.workers} / workers=1: "
              f"{rates[args.workers] / rates[1]:.2f}x")


if __name__ == "__main__":
    main()
