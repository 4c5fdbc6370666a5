"""``mame-eval mrmc``: Obuchowski–Rockette multi-reader multi-case ROC analysis of a long-format
ratings CSV (one row per reader × modality × case), with Hillis degrees of freedom.

Prints the table (or JSON); with ``out`` also writes ``mrmc.json`` (the JSON result),
``modalities.csv`` (reader-averaged AUC per modality with its CI), ``provenance.json`` and
``run.json``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mame_eval.errors import InputError
from mame_eval.journeys.record import RunRecord
from mame_eval.provenance import describe_input

__all__ = ["mrmc_run"]


def mrmc_run(ratings: Path, *, reader: str = "reader", modality: str = "modality",
             case: str = "case", truth: str = "truth", score: str = "score",
             covariance: str = "jackknife", out: Path | None = None) -> RunRecord:
    """Run the MRMC analysis of the CSV ``ratings``.

    Returns:
        a :class:`RunRecord` whose ``summary`` is the JSON result of
        :func:`mame_eval.studies.ratings.mrmc_analysis` and whose ``notes`` say why a test is
        undefined or an interval is a point; written to ``out`` when given.
    """
    from mame_eval.studies.ratings import mrmc_analysis

    ratings = Path(ratings)
    if not ratings.is_file():
        raise InputError(f"{ratings}: file not found")
    try:
        frame = pd.read_csv(ratings)
    except Exception as exc:
        raise InputError(f"{ratings}: not a readable CSV ({exc})") from None
    try:
        result, notes = mrmc_analysis(frame, reader=reader, modality=modality, case=case,
                                      truth=truth, score=score, covariance=covariance)
    except InputError as exc:
        raise InputError(f"{ratings}: {exc}") from exc
    record = RunRecord(
        kind="mrmc", out=Path(out) if out is not None else Path("."), summary=result,
        notes=list(notes), inputs={"ratings": describe_input(ratings)},
        settings={"reader": reader, "modality": modality, "case": case, "truth": truth,
                  "score": score, "covariance": covariance})
    record.documents["mrmc"] = result
    record.tables["modalities"] = pd.DataFrame([
        {"modality": name, "auc": m["auc"], "se": m["se"], "df": m["df"],
         "ci_low": m["ci"][0], "ci_high": m["ci"][1], "n_readers": len(m["readers"])}
        for name, m in result["modalities"].items()])
    return record.write() if out is not None else record
