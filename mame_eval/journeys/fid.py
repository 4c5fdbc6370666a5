"""``mame-eval fid``: FID and KID between two folders of images, with an interval for FID.

Prints the numbers; with ``out`` also writes ``fid.csv`` (one row), ``provenance.json`` and
``run.json`` so that ``mame-eval report`` can show them.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd

from mame_eval.images import list_images
from mame_eval.journeys.record import RunRecord
from mame_eval.metrics.features import extract_features, load_extractor
from mame_eval.provenance import describe_input

__all__ = ["fid_run"]


def fid_run(real: Path, synthetic: Path, features: str = "mammonet",
            inception_weights: Path | None = None, cache_dir: Path | None = None,
            kid_subset_size: int = 1000, n_boot: int = 200, seed: int = 0,
            device: str = "cpu", out: Path | None = None) -> RunRecord:
    """FID, KID and a bootstrap CI of FID between two folders of images.

    Returns:
        a :class:`RunRecord` whose ``summary`` holds ``fid``, ``fid_ci``, ``kid``, ``kid_std``,
        ``n_real``, ``n_synthetic``, ``features`` and ``resize``; written to ``out`` when given.
    """
    from mame_eval.metrics.distribution import fid, fid_bootstrap_ci, kid

    real_files = list_images(real, "--real")
    syn_files = list_images(synthetic, "--synthetic")
    extractor = load_extractor(features, inception_weights=inception_weights, device=device)
    record = RunRecord(kind="fid", out=Path(out) if out is not None else Path("."),
                       device=device)
    f_real = extract_features(real_files, extractor, cache_dir=cache_dir)
    f_syn = extract_features(syn_files, extractor, cache_dir=cache_dir)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        value = fid(f_real, f_syn)
    for w in caught:
        record.note(str(w.message))
    kid_mean, kid_std = kid(f_real, f_syn, subset_size=kid_subset_size, seed=seed)
    lo, hi = fid_bootstrap_ci(f_real, f_syn, n_boot=n_boot, seed=seed)
    record.summary = {"fid": value, "kid": kid_mean, "kid_std": kid_std,
                      "n_real": len(real_files), "n_synthetic": len(syn_files),
                      "features": extractor.name, "fid_ci": [lo, hi],
                      "resize": extractor.resize}
    record.settings = {"features": features, "feature_identity": extractor.identity,
                       "kid_subset_size": kid_subset_size, "n_boot": n_boot, "seed": seed}
    record.inputs = {"real": describe_input(real, real_files),
                     "synthetic": describe_input(synthetic, syn_files)}
    record.tables["fid"] = pd.DataFrame([{
        "fid": value, "fid_ci_low": lo, "fid_ci_high": hi, "kid": kid_mean,
        "kid_std": kid_std, "n_real": len(real_files), "n_synthetic": len(syn_files),
        "features": extractor.name}])
    return record.write() if out is not None else record
