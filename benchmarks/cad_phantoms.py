"""Benchmark MammoNet: held-out lesion AUROC (DeLong 95 % CI) on phantoms, trained on a CPU.

    .venv/bin/python benchmarks/cad_phantoms.py [--n 800] [--config training/cad-tiny.toml]
        [--keep runs/cad-bench] [--set key=value ...]

Writes ``n`` phantoms (320×256 pixels, half with a mass) into a temporary folder, prepares them
at the config's ``image_size``, trains MammoNet with the config (``data_dir``, ``output_dir``
and ``labels_csv`` are replaced by the benchmark's own) and prints the held-out lesion AUROC
with its CI, the attribute accuracies and the wall time — then the same on an independent
test set of ``--test-n`` phantoms from another seed. The issue's target: AUROC >= 0.9.
``--keep DIR`` keeps the trained model (a MammoNet folder usable as ``--cad``).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from mame_eval.cad.train import load_cad_config, train_cad
from mame_eval.data.phantoms import write_phantom_dataset
from mame_eval.data.prepare import PrepareSettings, prepare_dataset

ROOT = Path(__file__).resolve().parent.parent


def _independent_test(tmp: Path, n: int, seed: int, size: int, model) -> dict:
    """Lesion metrics of ``model`` on freshly generated phantoms (another seed)."""
    from mame_eval.cad.data import load_images, load_samples
    from mame_eval.cad.train import evaluate

    write_phantom_dataset(tmp / "raw-test", n=n, seed=seed, size=(320, 256), lesion_fraction=0.5)
    prepare_dataset(tmp / "raw-test", tmp / "prepared-test", PrepareSettings(size=size))
    samples, _ = load_samples(tmp / "prepared-test", tmp / "raw-test" / "phantom_truth.csv")
    x = load_images([s.path for s in samples], size)
    return evaluate(model, x, samples)["lesion"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=800, help="phantom images")
    parser.add_argument("--seed", type=int, default=2, help="phantom seed")
    parser.add_argument("--config", type=Path, default=ROOT / "training" / "cad-tiny.toml")
    parser.add_argument("--test-n", type=int, default=300,
                        help="phantoms of an independent test set (another seed; 0: none)")
    parser.add_argument("--keep", type=Path, default=None, help="copy the model here")
    parser.add_argument("--set", action="append", default=[], help="config override key=value")
    args = parser.parse_args()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        size = load_cad_config(args.config, args.set).image_size
        write_phantom_dataset(tmp / "raw", n=args.n, seed=args.seed, size=(320, 256),
                              lesion_fraction=0.5)
        report = prepare_dataset(tmp / "raw", tmp / "prepared", PrepareSettings(size=size))
        t_data = time.perf_counter() - start
        cfg = load_cad_config(args.config, [
            *args.set, f"data_dir='{tmp / 'prepared'}'", f"output_dir='{tmp / 'cad'}'",
            f"labels_csv='{tmp / 'raw' / 'phantom_truth.csv'}'"])
        result = train_cad(cfg)
        test = None
        if args.test_n:
            test = _independent_test(tmp, args.test_n, args.seed + 1000, size, result.model)
        if args.keep:
            if args.keep.exists():
                shutil.rmtree(args.keep)
            shutil.copytree(tmp / "cad", args.keep)
    m = result.metrics
    lesion = m["lesion"]
    print(f"phantoms: {args.n} (seed {args.seed}), prepared {report.counts['healthy']} healthy "
          f"+ {report.counts['lesion_samples']} lesion at {cfg.image_size} px "
          f"in {t_data:.0f} s")
    print(f"training: {m['n_train']} images, {m['steps']} steps, {m['epochs']} epochs, "
          f"{m['wall_time_s']:.0f} s")
    print(f"held-out lesion AUROC {lesion['auroc']:.3f} (95% CI {lesion['ci'][0]:.3f}–"
          f"{lesion['ci'][1]:.3f}, DeLong; {lesion['n_pos']} lesion / {lesion['n_neg']} healthy "
          f"held-out images) — target >= 0.9: {'met' if lesion['auroc'] >= 0.9 else 'NOT met'}")
    for name, a in m["attributes"].items():
        if a.get("accuracy") is not None:
            print(f"  {name:8s} accuracy {a['accuracy']:.3f} (95% CI {a['ci'][0]:.3f}–"
                  f"{a['ci'][1]:.3f}, n={a['n']})")
    if test is not None:
        lo, hi = test["ci"]
        print(f"independent test set ({args.test_n} phantoms, seed {args.seed + 1000}): lesion "
              f"AUROC {test['auroc']:.3f} (95% CI {lo:.3f}–{hi:.3f}; {test['n_pos']} lesion / "
              f"{test['n_neg']} healthy)")
    print(f"total wall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
