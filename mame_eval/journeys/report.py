"""``mame-eval report REPORT.toml --out DIR``: the paper's figures and tables, regenerated from
existing run folders, as one self-contained HTML page and one PDF.

A report definition (``reports/paper.toml``, ``reports/demo.toml``) lists sections; each names
its type and the run folders it is built from, and the command that makes each run::

    title = "MAM-E, regenerated"
    root = "runs"                    # run paths are relative to this (default: current folder)

    [[sections]]
    type = "sweep"                   # diversity sweep fid images training study explain cad
    title = "Table 3 — diversity"    # mrmc memorization augment generic
    [[sections.runs]]
    path = "sweeps/table3-fusion"
    label = "fusion"
    command = "mame-eval sweep generation/table3-fusion.toml"

Runs are found by their ``run.json``; a run that is missing (or unfinished) is a note in its
section with the command that would produce it — never a crash. Nothing is recomputed.
Outputs: ``report.html``, ``report.pdf``, ``assets/`` (image sheets and training curves the
report draws), ``provenance.json`` and ``run.json`` (kind ``report``: every input run with its
hash).
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from mame_eval.config import load_config
from mame_eval.errors import InputError
from mame_eval.journeys.record import RUN_FILE, RunRecord, read_run
from mame_eval.reports.content import Missing, Report, Section
from mame_eval.reports.sections import BUILDERS

__all__ = ["ReportDefinition", "build_report", "report_run"]

SectionType = Literal["diversity", "sweep", "fid", "images", "training", "study", "explain",
                      "cad", "mrmc", "memorization", "augment", "generic"]

#: the run kind each section type reads (images and training folders have no run.json)
_KINDS: dict[str, tuple[str, ...]] = {
    "diversity": ("diversity", "sweep"), "sweep": ("sweep",), "fid": ("fid",),
    "study": ("study analyze",), "explain": ("explain",), "cad": ("train cad",),
    "mrmc": ("mrmc",), "memorization": ("memorization",), "augment": ("augment",),
}


class RunSpec(BaseModel):
    """One run folder a section is built from."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="Run folder, relative to the report's root.")
    label: str | None = Field(None, description="Name shown in tables (default: folder name).")
    command: str = Field("", description="The command that produces this run (shown when "
                         "it is missing).")
    caption: str = ""


class SectionSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: SectionType
    title: str
    intro: str = ""
    runs: list[RunSpec] = Field(min_length=1)


class ReportDefinition(BaseModel):
    """A report definition (``reports/NAME.toml``); unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    title: str
    subtitle: str = ""
    root: Path = Field(Path("."), description="Folder the run paths are relative to.")
    sections: list[SectionSpec] = Field(min_length=1)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "section"


# --------------------------------------------------------------------------- resolving runs


def _run_record(spec: RunSpec, folder: Path, kinds: tuple[str, ...]) -> dict | Missing:
    """The run.json of ``folder`` (or of its ``analysis/`` sub-folder: a study), or why not."""
    candidates = [folder, folder / "analysis"]
    path = next((c for c in candidates if (c / RUN_FILE).is_file()), None)
    label = spec.label or folder.name
    if path is None:
        if not folder.exists():
            reason = "not run"
        elif "study analyze" in kinds and (folder / "study.toml").is_file():
            reason = "created, not analysed yet"
        else:
            reason = "no run.json (unfinished, or written by an older mame-eval: rerun the " \
                "command)"
        return Missing(label, str(folder), spec.command, reason)
    try:
        run = read_run(path)
    except InputError as exc:
        return Missing(label, str(folder), spec.command, str(exc))
    if kinds and run["kind"] not in kinds:
        return Missing(label, str(folder), spec.command,
                       f"a {run['kind']!r} run, expected {' or '.join(map(repr, kinds))}")
    run["label"] = label
    return run


def _image_run(spec: RunSpec, folder: Path, assets: Path) -> dict | Missing:
    """A folder of images (or a generation run: images/ [+ masks/]) as a contact sheet."""
    from mame_eval.generation.manifest import read_manifest
    from mame_eval.images import image_files, load_gray
    from mame_eval.provenance import describe_input
    from mame_eval.reports.contact_sheet import contact_sheet

    label = spec.label or folder.name
    if not folder.is_dir():
        return Missing(label, str(folder), spec.command)
    images_dir = folder / "images" if (folder / "images").is_dir() else folder
    files = image_files(images_dir)[:12]
    if not files:
        return Missing(label, str(folder), spec.command, "no images in the folder")
    masks_dir = images_dir.parent / "masks" if images_dir != folder or \
        (folder / "masks").is_dir() else None
    pictures, boxes, captions = [], [], []
    rows = {r.get("file"): r for r in read_manifest(folder).values()} \
        if (folder / "manifest.jsonl").is_file() else {}
    for f in files:
        pictures.append(load_gray(f))
        mask_file = masks_dir / f.name if masks_dir is not None else None
        box = []
        if mask_file is not None and mask_file.is_file():
            import numpy as np

            ys, xs = np.nonzero(load_gray(mask_file) > 127)
            if len(xs):
                box = [(xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)]
        boxes.append(box)
        row = rows.get(f"images/{f.name}") or rows.get(f.name) or {}
        captions.append(f"seed {row['seed']}, g {row.get('guidance_scale', '?')}"
                        if "seed" in row else f.stem[:24])
    sheet = contact_sheet(pictures, assets / f"{_slug(label)}.png", captions=captions,
                          boxes=boxes, cols=min(6, len(pictures)), tile_inches=1.5)
    command = spec.command
    first = next(iter(rows.values()), {})
    return {"folder": str(folder), "kind": "images", "label": label, "sheet": str(sheet),
            "caption": spec.caption or (f"{first.get('prompt', '')} — model "
                                        f"{first.get('model', '?')}" if first else ""),
            "command_line": command, "created": first.get("time", ""),
            "inputs": {"images": describe_input(images_dir, image_files(images_dir))},
            "settings": {k: first[k] for k in ("model", "prompt", "guidance_scale", "steps",
                                               "scheduler") if k in first}}


def _training_run(spec: RunSpec, folder: Path, assets: Path) -> dict | Missing:
    """A training output folder: its newest validation grid and its loss curve."""
    import json

    import pandas as pd

    from mame_eval.reports.style import save_figure
    from mame_eval.reports.training import loss_figure

    label = spec.label or folder.name
    grids = sorted((folder / "validation").glob("step-*.png"))
    log = folder / "logs" / "train_log.csv"
    if not grids and not log.is_file():
        return Missing(label, str(folder), spec.command,
                       "not run" if not folder.exists() else "no validation grids or log")
    images = []
    if grids:
        step = int(grids[-1].stem.split("-")[1])
        images.append({"title": f"{label}: validation grid at step {step}",
                       "path": str(grids[-1]), "dark": True,
                       "caption": "fixed noise, one column per validation prompt"})
    if log.is_file():
        frame = pd.read_csv(log)
        if len(frame):
            fig = loss_figure(frame, label)
            path = save_figure(fig, assets / f"{_slug(label)}-loss", formats=("png",))[0]
            images.append({"title": f"{label}: training loss", "path": str(path),
                           "caption": f"{len(frame)} logged steps"})
    info_path = folder / "train_info.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    return {"folder": str(folder), "kind": "training", "label": label, "images": images,
            "command_line": spec.command, "settings": info.get("config", {}),
            "versions": info.get("versions", {}), "device": info.get("device", ""),
            "wall_time_s": (info.get("result") or {}).get("wall_time_s", "")}


# --------------------------------------------------------------------------- the journey


def build_report(definition: ReportDefinition, assets: Path,
                 progress: Callable[[int, int], None] | None = None) -> Report:
    """The report's content: every section built from the runs that exist."""
    from mame_eval import __version__

    root = Path(definition.root)
    sections = []
    for k, spec in enumerate(definition.sections):
        section = Section(key=f"s{k + 1}-{_slug(spec.title)}", title=spec.title,
                          intro=spec.intro)
        runs = []
        for run_spec in spec.runs:
            folder = root / run_spec.path
            if spec.type == "images":
                found = _image_run(run_spec, folder, assets)
            elif spec.type == "training":
                found = _training_run(run_spec, folder, assets)
            else:
                found = _run_record(run_spec, folder, _KINDS.get(spec.type, ()))
            if isinstance(found, Missing):
                section.missing.append(found)
            else:
                runs.append(found)
        section.runs = runs
        if runs:
            BUILDERS[spec.type](section, runs)
        sections.append(section)
        if progress:
            progress(k + 1, len(definition.sections))
    created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return Report(definition.title, definition.subtitle, created, sections, __version__)


def report_run(definition: Path | str | ReportDefinition, out: Path, overrides=(),
               progress: Callable[[int, int], None] | None = None) -> RunRecord:
    """Render ``definition`` into ``out``: ``report.html``, ``report.pdf``, ``assets/``,
    ``provenance.json`` and ``run.json``.

    Raises:
        ConfigError: an invalid definition. InputError: ``out`` is a file.
    """
    from mame_eval.reports.render import render_html, render_pdf

    if not isinstance(definition, ReportDefinition):
        source = Path(definition)
        definition = load_config(ReportDefinition, source, list(overrides),
                                 what="report definition")
    else:
        source = None
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a folder")
    assets = out / "assets"
    assets.mkdir(parents=True, exist_ok=True)
    report = build_report(definition, assets, progress)
    record = RunRecord(kind="report", out=out)
    html = render_html(report, out / "report.html")
    pdf = render_pdf(report, out / "report.pdf")
    record.extra_files += [html, pdf, assets]
    record.settings = definition.model_dump(mode="json")
    record.inputs = {"definition": str(source) if source else "(in memory)",
                     **{f"run {r.get('label')}": {"path": r["folder"], "kind": r["kind"],
                                                  "created": r.get("created", "")}
                        for r in report.runs}}
    missing = [m for s in report.sections for m in s.missing]
    for m in missing:
        record.note(f"{m.label}: {m.reason} ({m.path})"
                    + (f" — run: {m.command}" if m.command else ""))
    record.summary = {"sections": len(report.sections), "runs": len(report.runs),
                      "missing": len(missing), "html": str(html), "pdf": str(pdf)}
    return record.write()
