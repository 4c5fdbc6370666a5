"""Report sections built from run folders: one builder per kind of section.

Each builder takes the resolved runs of its section (their ``run.json`` records, or a
:class:`~mame_eval.reports.content.Missing` for a run that does not exist) and returns the
section's blocks. Builders only read what runs wrote (tables, figures, documents): nothing is
recomputed, so a report shows exactly the numbers the commands printed. A column a run lacks
(an older version, a metric it did not measure) is left out, never invented.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from mame_eval.reports.content import Image, Paragraph, Section, Table, fmt, fmt_ci

__all__ = ["BUILDERS", "generic_blocks"]


# --------------------------------------------------------------------------- reading runs


def _table(run: dict, name: str) -> pd.DataFrame | None:
    """A table the run wrote (by its name in run.json), or None."""
    file = run.get("outputs", {}).get("tables", {}).get(name)
    path = Path(run["folder"]) / (file or f"{name}.csv")
    if not path.is_file():
        return None
    try:
        return pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError):
        return None


def _document(run: dict, name: str) -> dict | None:
    file = run.get("outputs", {}).get("documents", {}).get(name)
    path = Path(run["folder"]) / (file or f"{name}.json")
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _figure(run: dict, name: str, title: str, caption: str = "", wide: bool = False,
            dark: bool = False) -> Image | None:
    files = run.get("outputs", {}).get("figures", {}).get(name) or [f"{name}.png"]
    png = next((Path(run["folder"]) / f for f in files if f.endswith(".png")), None)
    if png is None or not png.is_file():
        return None
    return Image(title, png, caption, wide=wide, dark=dark)


def _label(run: dict) -> str:
    return run.get("label") or Path(run["folder"]).name


def _has(frame: pd.DataFrame, *columns: str) -> bool:
    return all(c in frame.columns for c in columns)


def _notes(run: dict) -> list[Paragraph]:
    return [Paragraph(f"{_label(run)}: {n}", kind="note") for n in run.get("notes", [])]


def generic_blocks(run: dict, tables: list[str] | None = None,
                   figures: list[str] | None = None) -> list:
    """The tables and figures a run lists in its run.json (all of them, or those named), as
    they are: for kinds without a dedicated builder."""
    blocks: list = []
    outputs = run.get("outputs", {})
    for name in outputs.get("tables", {}) if tables is None else tables:
        frame = _table(run, name)
        if frame is None or frame.empty:
            continue
        shown = frame.head(30)
        rows = [[fmt(v) if isinstance(v, float) else str(v) for v in r]
                for r in shown.itertuples(index=False)]
        note = f"first 30 of {len(frame)} rows" if len(frame) > 30 else ""
        blocks.append(Table(f"{_label(run)}: {name}.csv", list(map(str, frame.columns)), rows,
                            note))
    for name in outputs.get("figures", {}) if figures is None else figures:
        image = _figure(run, name, f"{_label(run)}: {name}", wide=True)
        if image is not None:
            blocks.append(image)
    return blocks


# --------------------------------------------------------------------------- diversity, sweep


def _ms_ssim_column(run: dict) -> pd.DataFrame | None:
    """``guidance, mean, ci_low, ci_high, n_images`` of a diversity run or a sweep run."""
    if run["kind"] == "diversity":
        frame = _table(run, "diversity")
        if frame is None or not _has(frame, "mean", "ci_low", "ci_high"):
            return None
        return frame.assign(n_pairs=frame.get("n_pairs"))
    frame = _table(run, "sweep")
    if frame is None or not _has(frame, "ms_ssim", "ms_ssim_ci_low", "ms_ssim_ci_high"):
        return None
    per_prompt = _table(run, "diversity")
    n_images = None
    if per_prompt is not None and "n_images" in per_prompt:
        synthetic = per_prompt[per_prompt.get("source", "synthetic") == "synthetic"]
        n_images = synthetic.groupby("guidance")["n_images"].first()
    return pd.DataFrame({
        "guidance": frame["guidance"], "mean": frame["ms_ssim"],
        "ci_low": frame["ms_ssim_ci_low"], "ci_high": frame["ms_ssim_ci_high"],
        "n_images": [n_images.get(g) if n_images is not None else None
                     for g in frame["guidance"]],
        "n_pairs": None})


def _trend_text(run: dict) -> list[Paragraph]:
    """The paired trend across guidance a run's summary states, if it has one."""
    out = []
    for key, value in (run.get("summary") or {}).items():
        if "trend" in key and isinstance(value, str):
            out.append(Paragraph(f"{_label(run)}: {value}"))
        elif "trend" in key and isinstance(value, dict) and "text" in value:
            out.append(Paragraph(f"{_label(run)}: {value['text']}"))
    return out


def diversity_section(section: Section, runs: list[dict]) -> None:
    """Paper Table 3: mean MS-SSIM per guidance scale (rows) and model (columns), each with
    its 95 % CI, then each run's diversity figure."""
    columns, counts = {}, {}
    for run in runs:
        frame = _ms_ssim_column(run)
        if frame is None:
            section.blocks.append(Paragraph(f"{_label(run)}: no MS-SSIM in this run",
                                            kind="note"))
            continue
        columns[_label(run)] = {
            (None if pd.isna(r.guidance) else float(r.guidance)):
                fmt_ci(r.mean, r.ci_low, r.ci_high) for r in frame.itertuples()}
        n = sorted({int(v) for v in frame["n_images"].dropna()})
        counts[_label(run)] = ", ".join(map(str, n)) if n else "?"
    if columns:
        scales = sorted({g for c in columns.values() for g in c},
                        key=lambda g: -1 if g is None else g)
        rows = [["folder" if g is None else f"{g:g}",
                 *[c.get(g, "–") for c in columns.values()]] for g in scales]
        note = "mean MS-SSIM [95 % bootstrap CI over images] (lower = more diverse); n images " \
               "per scale: " + "; ".join(f"{k} {v}" for k, v in counts.items())
        section.blocks.append(Table("MS-SSIM by guidance scale", ["guidance", *columns], rows,
                                    note))
    for run in runs:
        section.blocks += _trend_text(run)
        name = "diversity" if run["kind"] == "diversity" else "tradeoff"
        image = _figure(run, name, f"{_label(run)}: diversity against guidance",
                        wide=run["kind"] == "sweep")
        if image is not None:
            section.blocks.append(image)
        section.blocks += _notes(run)


def _fid_header(has_inf: bool) -> list[str]:
    """FID columns: with FID∞ the interval (for the true FID) sits beside FID∞, not the
    plug-in FID it need not contain (the plug-in is biased upwards at finite N)."""
    return ["FID", "FID∞ [CI]", "KID ± sd"] if has_inf else ["FID [CI]", "KID ± sd"]


def _fid_cells(row, has_inf: bool | None = None) -> list[str]:
    if has_inf is None:
        has_inf = "fid_inf" in row
    kid = (f"{fmt(row.get('kid'), 4)} ± {fmt(row.get('kid_std'), 4)}"
           if not pd.isna(row.get("kid", np.nan)) else "–")
    if not has_inf:
        return [fmt_ci(row.get("fid"), row.get("fid_ci_low"), row.get("fid_ci_high"), 2), kid]
    if pd.isna(row.get("fid_inf", np.nan)):  # an older run beside newer ones
        return [fmt_ci(row.get("fid"), row.get("fid_ci_low"), row.get("fid_ci_high"), 2), "–",
                kid]
    inf = fmt_ci(row.get("fid_inf"), row.get("fid_ci_low"), row.get("fid_ci_high"), 2)
    if row.get("fid_interval_valid") is False or row.get("fid_interval_valid") == 0:
        inf += " (unreliable: fewer images than feature dimensions)"
    return [fmt(row.get("fid"), 2), inf, kid]


PRDC_COLUMNS = ("precision", "recall", "density", "coverage")


def _prdc_cells(row) -> list[str]:
    return [fmt_ci(row.get(n), row.get(f"{n}_ci_low"), row.get(f"{n}_ci_high"))
            if not pd.isna(row.get(n, np.nan)) else "–" for n in PRDC_COLUMNS]


def sweep_section(section: Section, runs: list[dict]) -> None:
    """Per guidance scale: diversity, FID/KID (with n and CIs) and prompt adherence; the
    adherence table per attribute (concept extrapolation apart); the trade-off figure."""
    for run in runs:
        label = _label(run)
        table = _table(run, "sweep")
        if table is None:
            section.blocks.append(Paragraph(f"{label}: sweep.csv missing", kind="note"))
            continue
        header, rows = ["guidance", "n images"], []
        has_div = _has(table, "ms_ssim", "ms_ssim_ci_low")
        has_fid = _has(table, "fid", "fid_ci_low")
        if has_div:
            header.append("MS-SSIM [CI]")
        if has_fid:
            header += _fid_header("fid_inf" in table)
        if "mean_adherence" in table:
            header.append("mean adherence")
        has_copy = _has(table, "copy_rate", "copy_rate_ci_low", "copy_rate_ci_high")
        if has_copy:
            header.append("copy rate [exact CI]")
        for r in table.to_dict("records"):
            row = [f"{r['guidance']:g}", fmt(r.get("n_images"), 0)]
            if has_div:
                row.append(fmt_ci(r["ms_ssim"], r["ms_ssim_ci_low"], r["ms_ssim_ci_high"]))
            if has_fid:
                row += _fid_cells(r, "fid_inf" in table)
            if "mean_adherence" in table:
                row.append(fmt(r.get("mean_adherence")))
            if has_copy:
                row.append(fmt_ci(r["copy_rate"], r["copy_rate_ci_low"], r["copy_rate_ci_high"]))
            rows.append(row)
        features = (run.get("inputs") or {}).get("fid_features")
        note = "95 % CIs; " + (f"FID/KID on {features} features; " if has_fid else "") + \
            "adherence = share of images whose measured attribute is the one asked for"
        section.blocks.append(Table(f"{label}: per guidance scale", header, rows, note))
        fidelity = _table(run, "fidelity")
        if fidelity is not None and not fidelity.empty:
            rows = [[f"{r.guidance:g}", str(r.attribute), fmt(r.n, 0),
                     fmt_ci(r.accuracy, r.ci_low, r.ci_high)]
                    for r in fidelity.itertuples()]
            section.blocks.append(Table(
                f"{label}: prompt adherence per attribute", ["guidance", "attribute", "n",
                                                             "adherence [exact CI]"], rows,
                "'|extrapolated': vendor + attribute combinations never seen in training "
                "(concept extrapolation)"))
        trends = _table(run, "trends")
        if trends is not None and not trends.empty and _has(trends, "metric", "change"):
            rows = [[str(r["metric"]), f"{r['from_guidance']:g} → {r['to_guidance']:g}",
                     fmt_ci(r["change"], r["change_ci_low"], r["change_ci_high"]),
                     fmt_ci(r["slope"], r["slope_ci_low"], r["slope_ci_high"])]
                    for r in trends.to_dict("records")]
            section.blocks.append(Table(
                f"{label}: trends across guidance", ["metric", "scales", "change [CI]",
                                                     "slope per unit guidance [CI]"], rows,
                "paired percentile bootstrap over the seeds that every scale shares; FID∞ "
                "(when the sets are large enough) by paired subsampling without replacement, "
                "because resampling with replacement inflates FID"))
        section.blocks += _trend_text(run)
        image = _figure(run, "tradeoff", f"{label}: the fidelity–diversity trade-off",
                        wide=True)
        if image is not None:
            section.blocks.append(image)
        section.blocks += _notes(run)


def fid_section(section: Section, runs: list[dict]) -> None:
    """One row per fid run: n, features, FID, FID∞ with the interval for the true FID,
    KID ± sd, and precision / recall / density / coverage with their intervals."""
    found = []
    for run in runs:
        table = _table(run, "fid")
        if table is not None and not table.empty:
            found.append((run, table.iloc[0].to_dict()))
    has_inf = any(not pd.isna(r.get("fid_inf", np.nan)) for _, r in found)
    has_prdc = any(not pd.isna(r.get("precision", np.nan)) for _, r in found)
    rows = []
    for run, r in found:
        rows.append([_label(run), fmt(r.get("n_real"), 0), fmt(r.get("n_synthetic"), 0),
                     str(r.get("features", "")), *_fid_cells(r, has_inf),
                     *(_prdc_cells(r) if has_prdc else [])])
    if rows:
        header = ["run", "n real", "n synthetic", "features", *_fid_header(has_inf),
                  *([f"{n} [CI]" for n in PRDC_COLUMNS] if has_prdc else [])]
        note = ("95 % intervals. FID∞ (Chong & Forsyth 2020): FID extrapolated to 1/N = 0; "
                "its interval is for the true FID. The plug-in FID is biased upwards at finite "
                "N (FID − FID∞ is that bias). Precision/recall: k = 3 (Kynkäänniemi 2019); "
                "density/coverage: k = 5 (Naeem 2020); their intervals (subsampling) are for "
                "the metrics at this N." if has_inf else "")
        section.blocks.append(Table("FID and KID", header, rows, note))
    for run in runs:
        section.blocks += _notes(run)


# --------------------------------------------------------------------------- images, training


def images_section(section: Section, runs: list[dict]) -> None:
    """Sheets of generated or synthesized images (paper Figs 12–16): made by the report
    journey (``run["sheet"]``), since a generation run has no figure of its own."""
    for run in runs:
        sheet = run.get("sheet")
        if sheet is not None:
            section.blocks.append(Image(f"{_label(run)}", Path(sheet), run.get("caption", ""),
                                        wide=True, dark=True))


def training_section(section: Section, runs: list[dict]) -> None:
    """A training run: its last validation grid (fixed noise) and its loss curve."""
    for run in runs:
        for image in run.get("images", []):
            section.blocks.append(Image(image["title"], Path(image["path"]),
                                        image.get("caption", ""), wide=True,
                                        dark=image.get("dark", False)))


# --------------------------------------------------------------------------- reader study


def study_section(section: Section, runs: list[dict]) -> None:
    """The reader study (paper Fig 17): per-reader AUROC with CI, the reader-averaged MRMC
    result, agreement, the blinding audit and the ROC figure."""
    for run in runs:
        label = _label(run)
        results = _document(run, "results") or {}
        readers = _table(run, "readers")
        if readers is not None and not readers.empty:
            lo = "ci_lo" if "ci_lo" in readers else "ci_low"
            hi = "ci_hi" if "ci_hi" in readers else "ci_high"
            rows = [[str(r["reader"]), fmt(r.get("n_cases"), 0),
                     fmt_ci(r["auroc"], r.get(lo), r.get(hi)),
                     fmt(r.get("accuracy")), fmt(r.get("sensitivity")),
                     fmt(r.get("specificity"))]
                    for r in readers.to_dict("records")]
            section.blocks.append(Table(
                f"{label}: readers", ["reader", "n cases", "AUROC [95 % CI]", "accuracy",
                                      "sensitivity", "specificity"], rows,
                "positive = real; AUROC 0.5 = readers cannot tell real from synthetic"))
        average = results.get("average") or {}
        auc = average.get("auroc", average.get("auc"))
        if auc is not None:
            ci = average.get("ci") or [None, None]
            n_readers = average.get("n_readers", len(readers) if readers is not None else "?")
            section.blocks.append(Paragraph(
                f"{label}: reader-averaged AUROC {fmt_ci(auc, ci[0], ci[1])} "
                f"({n_readers} readers, {results.get('n_cases', '?')} cases, "
                f"{average.get('method', 'Obuchowski–Rockette, Hillis df')}; score used: "
                f"{results.get('score_used', 'final')})."))
            if average.get("ci_note"):
                section.blocks.append(Paragraph(f"{label}: {average['ci_note']}",
                                                kind="note"))
        agreement = results.get("agreement")
        if isinstance(agreement, dict) and agreement.get("krippendorff_alpha") is not None:
            section.blocks.append(Paragraph(
                f"{label}: agreement between readers: Krippendorff's α (ordinal) "
                f"{fmt(agreement['krippendorff_alpha'])}."))
        audit = _table(run, "blinding_audit")
        if audit is None:
            audit_path = Path(run["folder"]).parent / "blinding_audit.csv"
            audit = pd.read_csv(audit_path) if audit_path.is_file() else None
        if audit is not None and not audit.empty and _has(audit, "statistic", "auroc"):
            lo = "ci_low" if "ci_low" in audit else "ci_lo"
            hi = "ci_high" if "ci_high" in audit else "ci_hi"
            rows = [[str(r["statistic"]), fmt_ci(r["auroc"], r.get(lo), r.get(hi)),
                     "leaks" if r.get("leaks") in (True, "True", 1) else ""]
                    for r in audit.to_dict("records")]
            section.blocks.append(Table(
                f"{label}: blinding audit (pixel statistics of the blinded cases)",
                ["statistic", "AUROC real vs synthetic [CI]", ""], rows,
                "a statistic that separates the classes (CI excluding 0.5) would let a reader "
                "tell real from synthetic without judging anatomy"))
            audit_png = Path(run["folder"]).parent / "blinding_audit.png"
            if audit_png.is_file():
                section.blocks.append(Image(f"{label}: blinding audit", audit_png, wide=True))
        image = _figure(run, "roc", f"{label}: ROC curves per reader")
        if image is not None:
            section.blocks.append(image)
        section.blocks += _notes(run)


# --------------------------------------------------------------------------- XAI, CAD, MRMC


_SCORES = (("relevance_mass", "relevance mass"), ("pointing_game", "pointing game"),
           ("energy_pointing", "energy pointing"))


def _sanity_blocks(run: dict) -> list:
    """The model-randomisation check (Adebayo et al. 2018) of an explain run: per method,
    pooled over groups, map similarity after full randomisation and the randomised model's
    localisation beside the trained model's, with the verdict; then the curve figure."""
    blocks: list = []
    label = _label(run)
    table = _table(run, "sanity")
    if table is None or table.empty or not _has(table, "group", "method", "depth"):
        return blocks
    pooled = table[table["group"] == "all"]
    full_depth = pooled["depth"].max()
    rows = []
    for method in dict.fromkeys(pooled["method"]):
        sub = pooled[pooled["method"] == method].set_index("depth")
        if full_depth not in sub.index or 0 not in sub.index:
            continue
        full, trained = sub.loc[full_depth], sub.loc[0]
        fails = full.get("fails_check")
        verdict = "–" if pd.isna(fails) else ("fails" if str(fails).lower() in ("true", "1")
                                              else "passes")
        head = sub.loc[1] if 1 in sub.index else {}
        row = [str(method), fmt(full.get("n_images"), 0),
               fmt(head.get("spearman_mean"), 2),
               fmt_ci(full.get("spearman_mean"), full.get("spearman_ci_low"),
                      full.get("spearman_ci_high"), 2),
               fmt(full.get("ssim_mean"), 2)]
        for key in ("pointing_game", "relevance_mass"):
            after = fmt_ci(full.get(f"{key}_mean"), full.get(f"{key}_ci_low"),
                           full.get(f"{key}_ci_high"), 2)
            row.append(f"{fmt(trained.get(f'{key}_mean'), 2)} → {after}")
        row.append(verdict)
        rows.append(row)
    if rows:
        threshold = (run.get("settings", {}).get("sanity", {}) or {}).get("fails_if", "")
        blocks.append(Table(
            f"{label}: sanity check — maps of a randomised model", [
                "method", "n", "ρ, head randomised", "ρ after full randomisation [CI]",
                "SSIM",
                "pointing game: trained → randomised", "relevance mass: trained → randomised",
                "verdict"], rows,
            "cascading randomisation of the classifier from the lesion head down (Adebayo "
            "et al. 2018); ρ = Spearman rank correlation of |map| between the trained and the "
            "fully randomised model; a method fails when " + (threshold or "mean ρ > 0.5")
            + ". A localisation score that survives randomisation reflects the image (e.g. "
            "the bright lesion), not the model: read real-vs-synthetic differences against "
            "the randomised column."))
    image = _figure(run, "sanity", f"{label}: map similarity vs randomisation depth")
    if image is not None:
        blocks.append(image)
    return blocks


def explain_section(section: Section, runs: list[dict]) -> None:
    """Paper Figs 18–20, with numbers: localisation per group and method with CIs, real vs
    inpainted differences, the model-randomisation sanity check, the heatmap sheet."""
    for run in runs:
        label = _label(run)
        summary = _table(run, "summary")
        if summary is not None and not summary.empty:
            present = [(k, name) for k, name in _SCORES if f"{k}_mean" in summary]
            randomized = [(k, name) for k, name in present
                          if f"{k}_randomized_mean" in summary]
            rows = [[str(r["group"]), str(r["method"]), fmt(r.get("n_scored"), 0),
                     *[fmt_ci(r[f"{k}_mean"], r.get(f"{k}_ci_low"), r.get(f"{k}_ci_high"))
                       for k, _ in present],
                     *[fmt(r.get(f"{k}_randomized_mean")) for k, _ in randomized]]
                    for r in summary.to_dict("records")]
            section.blocks.append(Table(
                f"{label}: where the attribution falls", ["group", "method", "n",
                                                          *[n for _, n in present],
                                                          *[f"{n}, randomised model"
                                                            for _, n in randomized]], rows,
                "95 % CIs (pointing game: exact Clopper–Pearson; others: bootstrap); "
                "relevance mass = share of positive attribution inside the lesion; "
                "randomised model = the same score with every layer re-initialised"))
        comparison = _table(run, "comparison")
        if comparison is not None and not comparison.empty:
            keep = comparison[comparison["score"].isin([k for k, _ in _SCORES])]
            rows = [[f"{r['group_b']} − {r['group_a']}", str(r["method"]), str(r["score"]),
                     fmt_ci(r["difference"], r.get("ci_low"), r.get("ci_high")),
                     fmt(r.get("p_holm", r.get("p_value")))]
                    for r in keep.to_dict("records")]
            if rows:
                section.blocks.append(Table(f"{label}: group differences",
                                            ["difference", "method", "score", "estimate [CI]",
                                             "p (Holm)"], rows))
        section.blocks += _sanity_blocks(run)
        image = _figure(run, "heatmaps", f"{label}: attribution maps", wide=True, dark=True)
        if image is not None:
            section.blocks.append(image)
        section.blocks += _notes(run)


def cad_section(section: Section, runs: list[dict]) -> None:
    for run in runs:
        metrics = _document(run, "metrics") or {}
        lesion = metrics.get("lesion", {})
        if lesion.get("auroc") is not None:
            ci = lesion.get("ci") or [None, None]
            accuracy = ""
            if lesion.get("accuracy") is not None:
                acc_ci = lesion.get("accuracy_ci") or [None, None]
                accuracy = (f"; accuracy at p ≥ {lesion.get('threshold', 0.5)} "
                            f"{fmt_ci(lesion['accuracy'], *acc_ci)} (exact CI)")
            section.blocks.append(Paragraph(
                f"{_label(run)}: held-out lesion AUROC {fmt_ci(lesion['auroc'], *ci)} "
                f"(n = {lesion.get('n_pos')} lesion, {lesion.get('n_neg')} healthy images)"
                f"{accuracy}."))
        elif lesion.get("note"):
            section.blocks.append(Paragraph(
                f"{_label(run)}: no held-out lesion AUROC: {lesion['note']}", kind="note"))
        rows = []
        for name, entry in (metrics.get("attributes") or {}).items():
            if entry.get("accuracy") is not None:
                ci = entry.get("ci") or [None, None]
                rows.append([name, fmt(entry.get("n"), 0), fmt_ci(entry["accuracy"], *ci)])
        if rows:
            section.blocks.append(Table(f"{_label(run)}: attribute heads (held out)",
                                        ["attribute", "n", "accuracy [exact CI]"], rows))


def mrmc_section(section: Section, runs: list[dict]) -> None:
    for run in runs:
        result = _document(run, "mrmc") or run.get("summary") or {}
        rows = [[name, fmt_ci(m["auc"], *m["ci"]), fmt(m.get("df"), 1),
                 str(len(m.get("readers", {})))]
                for name, m in (result.get("modalities") or {}).items()]
        if rows:
            section.blocks.append(Table(f"{_label(run)}: reader-averaged AUC",
                                        ["modality", "AUC [95 % CI]", "df", "readers"], rows))
        comparison = result.get("comparison")
        if comparison:
            section.blocks.append(Paragraph(
                f"{_label(run)}: random readers and cases F = {fmt(comparison.get('F'))}, "
                f"ddf = {fmt(comparison.get('ddf'), 1)}, p = {fmt(comparison.get('p'), 4)}."))
        section.blocks += _notes(run)


def memorization_section(section: Section, runs: list[dict]) -> None:
    """The memorization audit: copy rate with its exact CI against a calibrated threshold,
    the closest synthetic–training pairs and the similarity distributions."""
    rows = []
    for run in runs:
        s = run.get("summary") or {}
        if "copy_rate" not in s:
            continue
        ci = s.get("copy_rate_ci") or [None, None]
        auc_ci = s.get("dcr_auroc_ci") or [None, None]
        rows.append([_label(run), f"{s.get('flagged')} / {s.get('n_synthetic')}",
                     fmt_ci(s["copy_rate"], *ci), fmt(s.get("threshold")),
                     f"{fmt(s.get('alpha'), 3)} ({s.get('n_null')} null images)",
                     fmt_ci(s.get("dcr_auroc"), *auc_ci)])
    if rows:
        section.blocks.append(Table(
            "Copies of training images", ["run", "flagged", "copy rate [exact CI]",
                                          "MS-SSIM threshold", "false-flag rate α",
                                          "AUROC synthetic closer than held-out [CI]"], rows,
            "a flag means: closer to a training image than held-out real images are, at the "
            "stated false-flag rate; AUROC 0.5 = synthetic images are as close to the training "
            "set as unseen real images"))
    for run in runs:
        for name, title in (("closest_pairs", "the closest synthetic–training pairs"),
                            ("similarity", "similarity to the nearest training image")):
            image = _figure(run, name, f"{_label(run)}: {title}", wide=True)
            if image is not None:
                section.blocks.append(image)
        section.blocks += _notes(run)


def augment_section(section: Section, runs: list[dict]) -> None:
    """The augmentation study: each arm against the real-only baseline on the same real test
    set (paired DeLong over test cases, t over training seeds), and the study's figure."""
    for run in runs:
        label = _label(run)
        summary = run.get("summary") or {}
        if "n_test_pos" in summary:
            section.blocks.append(Paragraph(
                f"{label}: test set of {summary['n_test_pos']} lesion + "
                f"{summary['n_test_neg']} healthy real images (identical for every arm), "
                f"{len(summary.get('seeds', []))} training seeds per arm."))
        comparison = _table(run, "comparison")
        if comparison is not None and not comparison.empty:
            rows = [[f"{r['arm']} ×{r['synthetic_ratio']:g}" if r["arm"] == "synthetic"
                     else str(r["arm"]), f"{r['real_fraction']:g}", fmt(r.get("n_seeds"), 0),
                     fmt(r.get("auroc_baseline")), fmt(r.get("auroc_arm")),
                     fmt_ci(r["difference"], r.get("delong_ci_low"), r.get("delong_ci_high")),
                     fmt_ci(r["difference"], r.get("seed_ci_low"), r.get("seed_ci_high")),
                     fmt(r.get("delong_p_holm"), 4)]
                    for r in comparison.to_dict("records")]
            section.blocks.append(Table(
                f"{label}: AUROC difference to the real-only baseline",
                ["arm", "real fraction", "seeds", "baseline AUROC", "arm AUROC",
                 "difference [DeLong CI]", "difference [seed t-CI]", "p (Holm)"], rows,
                "means over seeds; DeLong CI over test cases (paired), t-CI over seeds"))
        image = _figure(run, "augment", f"{label}: AUROC by arm, ratio and real fraction",
                        wide=True)
        if image is not None:
            section.blocks.append(image)
        section.blocks += _notes(run)


def generic_section(section: Section, runs: list[dict]) -> None:
    """Memorization, augmentation and any other run kind: its summary line, tables and
    figures as the run wrote them."""
    for run in runs:
        for key, value in (run.get("summary") or {}).items():
            if isinstance(value, str):
                section.blocks.append(Paragraph(f"{_label(run)}: {key}: {value}"))
        section.blocks += generic_blocks(run)
        section.blocks += _notes(run)


BUILDERS: dict[str, Callable[[Section, list[dict]], None]] = {
    "diversity": diversity_section,
    "sweep": sweep_section,
    "fid": fid_section,
    "images": images_section,
    "training": training_section,
    "study": study_section,
    "explain": explain_section,
    "cad": cad_section,
    "mrmc": mrmc_section,
    "memorization": memorization_section,
    "augment": augment_section,
    "generic": generic_section,
}
