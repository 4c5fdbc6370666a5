"""``mame-eval fid``: FID, FID∞, KID and precision/recall/density/coverage between two folders.

Prints the numbers; with ``out`` also writes ``fid.csv`` (one row), ``provenance.json`` and
``run.json`` so that ``mame-eval report`` can show them.

With ``features="inception"`` the features are torch-fidelity's: its InceptionV3 with its
TF1-compatible 299×299 bilinear resize, i.e. torch-fidelity's FID protocol (not pytorch-fid's
PIL resize nor clean-fid's).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd

from mame_eval.images import list_images
from mame_eval.journeys.record import RunRecord
from mame_eval.metrics.features import extract_features, load_extractor
from mame_eval.provenance import describe_input

__all__ = ["distribution_row", "fid_run"]


def distribution_row(f_real, f_syn, kid_subset_size: int | None = None, n_boot: int = 50,
                     seed: int = 0) -> tuple[dict, list[str]]:
    """FID, FID∞ with its interval, KID and PRDC with intervals of two feature matrices.

    Returns ``(row, notes)``: ``row`` holds ``fid, fid_inf, fid_bias, fid_ci_low,
    fid_ci_high, fid_se, fid_interval_valid, kid, kid_std, kid_subset_size,
    precision[_ci_low/_ci_high], recall…, density…, coverage…``; ``notes`` the warnings met
    (e.g. fewer images than dimensions, where FID∞ and its interval are flagged unreliable).
    The FID interval is for the true FID, around FID∞ (see
    :func:`mame_eval.metrics.distribution.fid_interval`); PRDC intervals are for the
    metrics at this N (see :func:`mame_eval.metrics.prdc.prdc_interval`).
    """
    from mame_eval.metrics.distribution import fid, fid_interval, kid, kid_subset_size_for
    from mame_eval.metrics.prdc import prdc_interval

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        value = fid(f_real, f_syn)
    notes = [str(w.message) for w in caught]
    subset = kid_subset_size_for(len(f_real), len(f_syn), kid_subset_size)
    kid_mean, kid_std = kid(f_real, f_syn, subset_size=subset, seed=seed)
    interval = fid_interval(f_real, f_syn, n_boot=n_boot, seed=seed)
    row = {"fid": value, "fid_inf": interval.fid_inf, "fid_bias": interval.bias,
           "fid_ci_low": interval.ci_low, "fid_ci_high": interval.ci_high,
           "fid_se": interval.se, "kid": kid_mean, "kid_std": kid_std,
           "kid_subset_size": subset, "fid_interval_valid": interval.valid}
    if not interval.valid:
        d, smallest = f_real.shape[1], int(interval.fractions[0] * min(len(f_real), len(f_syn)))
        notes.append(
            f"FID∞ and its interval may be far off: subsets of {smallest} images have fewer "
            f"images than the {d} feature dimensions, where FID's bias is not linear in 1/N "
            "and FID∞ can keep most of it (Chong & Forsyth fit N ≥ 5000 for 2048-d "
            "Inception). Use more images than dimensions — e.g. MammoNet features — for an "
            "interval for the true FID; compare plug-in FIDs only at equal N.")
    try:
        row.update(prdc_interval(f_real, f_syn, n_boot=max(n_boot, 20), seed=seed).row())
    except Exception as exc:  # too few images for k-NN balls: FID/KID still stand
        from mame_eval.errors import InputError

        if not isinstance(exc, InputError):
            raise
        notes.append(f"precision/recall/density/coverage not computed: {exc}")
    return row, notes


def fid_run(real: Path, synthetic: Path, features: str = "mammonet",
            inception_weights: Path | None = None, cache_dir: Path | None = None,
            kid_subset_size: int | None = None, n_boot: int = 50, seed: int = 0,
            device: str = "cpu", out: Path | None = None) -> RunRecord:
    """FID with FID∞ and an interval for the true FID, KID, and PRDC between two folders.

    Args:
        kid_subset_size: images per KID subset, smaller than both sets; None → min(1000, N/2).
        n_boot: subsampling replicates for the FID interval (each evaluates FID at 4 subset
            sizes) and for the PRDC intervals.

    Returns:
        a :class:`RunRecord` whose ``summary`` holds ``fid``, ``fid_inf``, ``fid_bias``,
        ``fid_ci`` (for the true FID, around FID∞), ``kid``, ``kid_std``, ``kid_subset_size``,
        ``precision``, ``recall``, ``density``, ``coverage`` (with ``*_ci``), ``n_real``,
        ``n_synthetic``, ``features`` and ``resize``; written to ``out`` when given.
    """
    real_files = list_images(real, "--real")
    syn_files = list_images(synthetic, "--synthetic")
    extractor = load_extractor(features, inception_weights=inception_weights, device=device)
    record = RunRecord(kind="fid", out=Path(out) if out is not None else Path("."),
                       device=device)
    f_real = extract_features(real_files, extractor, cache_dir=cache_dir)
    f_syn = extract_features(syn_files, extractor, cache_dir=cache_dir)
    row, notes = distribution_row(f_real, f_syn, kid_subset_size=kid_subset_size,
                                  n_boot=n_boot, seed=seed)
    for note in notes:
        record.note(note)
    record.note("FID interval: for the true FID, around FID∞ (Chong & Forsyth 2020), from "
                "subsets without replacement; fid_bias = FID − FID∞ is the plug-in's "
                "finite-N bias. PRDC intervals: subsampling, for the metrics at this N.")
    summary = {key: row[key] for key in ("fid", "fid_inf", "fid_bias", "fid_interval_valid",
                                         "kid", "kid_std", "kid_subset_size")}
    summary["fid_ci"] = [row["fid_ci_low"], row["fid_ci_high"]]
    for name in ("precision", "recall", "density", "coverage"):
        if name in row:
            summary[name] = row[name]
            summary[f"{name}_ci"] = [row[f"{name}_ci_low"], row[f"{name}_ci_high"]]
    summary.update({"n_real": len(real_files), "n_synthetic": len(syn_files),
                    "features": extractor.name, "resize": extractor.resize})
    record.summary = summary
    record.settings = {"features": features, "feature_identity": extractor.identity,
                       "kid_subset_size": row["kid_subset_size"], "n_boot": n_boot,
                       "seed": seed, "prdc_k": {"precision_recall": 3, "density_coverage": 5}}
    record.inputs = {"real": describe_input(real, real_files),
                     "synthetic": describe_input(synthetic, syn_files)}
    record.tables["fid"] = pd.DataFrame([{**row, "n_real": len(real_files),
                                          "n_synthetic": len(syn_files),
                                          "features": extractor.name}])
    return record.write() if out is not None else record
