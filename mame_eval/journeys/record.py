"""The result record every journey returns, and the one layout every measuring command writes.

A journey (``diversity``, ``fid``, ``sweep``, ``explain``, ``train cad``, ``mrmc``,
``study analyze``, ``memorization``, ``augment``, ``report``) validates its inputs, calls the
calculations (arrays in, numbers out), and returns a :class:`RunRecord`: its tables, figures,
JSON documents, headline numbers, notes and provenance. :meth:`RunRecord.write` puts them in
the run folder in one layout::

    OUT/<table>.csv            one per table
    OUT/<figure>.png, .pdf     one pair per figure (vector PDF)
    OUT/<document>.json        one per document (e.g. metrics.json, summary.json)
    OUT/provenance.json        versions, device, settings, inputs with hashes, wall time
    OUT/run.json               all of provenance + kind, outputs and the headline summary

``mame-eval report`` finds runs by their ``run.json`` (:func:`find_runs`) and reads each with
:func:`read_run`, so a report never guesses file names.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from mame_eval.errors import InputError
from mame_eval.io import atomic_path, write_json
from mame_eval.provenance import command_line, provenance

__all__ = ["RUN_FILE", "RUN_SCHEMA", "RunRecord", "find_runs", "read_run"]

RUN_FILE = "run.json"
RUN_SCHEMA = "mame-eval/run@1"


@dataclass
class RunRecord:
    """One journey's result.

    Attributes:
        kind: the journey (``"diversity"``, ``"sweep"``, …); names the run in reports.
        out: the run folder.
        settings: every setting that shapes the numbers (JSON-serialisable).
        inputs: what was read, with content hashes (:func:`mame_eval.provenance.describe_input`).
        tables: name → DataFrame, written as ``name.csv``.
        figures: name → :class:`matplotlib.figure.Figure`, written as ``name.png`` + ``.pdf``.
        documents: name → JSON-serialisable object, written as ``name.json``.
        summary: the headline numbers (each estimate with its n and CI) for the terminal and
            the report.
        notes: warnings and explanations for the user, each once.
        device: where the numbers were computed (``"cpu (2 threads)"``).
        extra_files: files the journey wrote itself (images, logs), listed as outputs.
        provenance_extra: more keys for ``provenance.json`` (kept for compatibility).
    """

    kind: str
    out: Path
    settings: dict = field(default_factory=dict)
    inputs: dict = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    documents: dict[str, Any] = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    device: str = "cpu"
    extra_files: list[Path] = field(default_factory=list)
    provenance_extra: dict = field(default_factory=dict)
    csv_float_format: str | None = None
    started: float = field(default_factory=time.perf_counter)
    files: list[Path] = field(default_factory=list)

    @property
    def table(self) -> pd.DataFrame:
        """The main table: the one named like the run's kind, else the first."""
        if self.kind in self.tables:
            return self.tables[self.kind]
        if not self.tables:
            raise KeyError(f"run {self.kind!r} has no table")
        return next(iter(self.tables.values()))

    def note(self, message: str) -> None:
        """Add a note once (the same warning from every guidance scale is one note)."""
        if message not in self.notes:
            self.notes.append(message)

    def write(self, dpi: int = 300) -> RunRecord:
        """Write every output, then ``provenance.json`` and ``run.json`` last (a folder with a
        ``run.json`` is complete). Figures are closed after saving. Returns ``self``."""
        from mame_eval.reports.style import save_figure

        out = Path(self.out)
        out.mkdir(parents=True, exist_ok=True)
        outputs: dict[str, dict] = {"tables": {}, "figures": {}, "documents": {}, "files": []}
        files: list[Path] = []
        for name, table in self.tables.items():
            path = out / f"{name}.csv"
            with atomic_path(path) as tmp:
                table.to_csv(tmp, index=False, na_rep="", float_format=self.csv_float_format)
            outputs["tables"][name] = path.name
            files.append(path)
        for name, fig in self.figures.items():
            paths = save_figure(fig, out / name, dpi=dpi)
            fig.clear()
            outputs["figures"][name] = [p.name for p in paths]
            files += paths
        for name, doc in self.documents.items():
            path = out / f"{name}.json"
            write_json(path, doc)
            outputs["documents"][name] = path.name
            files.append(path)
        for path in self.extra_files:
            outputs["files"].append(_relative(Path(path), out))
        prov = provenance(command=self.kind, settings=self.settings, inputs=self.inputs,
                          device=self.device,
                          wall_time_s=time.perf_counter() - self.started,
                          command_line=command_line(f"{self.kind} (library call)"),
                          notes=list(self.notes), **self.provenance_extra)
        write_json(out / "provenance.json", prov)
        files.append(out / "provenance.json")
        write_json(out / RUN_FILE, {"schema": RUN_SCHEMA, "kind": self.kind, **prov,
                                    "outputs": outputs, "summary": self.summary})
        files.append(out / RUN_FILE)
        self.files = files
        return self


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def read_run(folder: Path | str) -> dict:
    """The ``run.json`` of a run folder, with ``"folder"`` added.

    Raises:
        InputError: no ``run.json`` (the command did not finish or predates run records), or
            it is not a run record of this toolkit.
    """
    folder = Path(folder)
    path = folder / RUN_FILE if folder.is_dir() else folder
    if not path.is_file():
        raise InputError(f"{folder}: no {RUN_FILE} (not a finished mame-eval run folder)")
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: unreadable run record ({exc})") from exc
    if not isinstance(run, dict) or run.get("schema") != RUN_SCHEMA:
        raise InputError(f"{path}: not a mame-eval run record (schema {RUN_SCHEMA!r})")
    run["folder"] = str(path.parent)
    return run


def find_runs(root: Path | str, kind: str | None = None) -> list[dict]:
    """Every run record below ``root`` (of ``kind`` when given), newest first."""
    root = Path(root)
    if not root.exists():
        return []
    runs = []
    for path in root.rglob(RUN_FILE):
        try:
            run = read_run(path)
        except InputError:
            continue
        if kind is None or run["kind"] == kind:
            runs.append(run)
    return sorted(runs, key=lambda r: r.get("created", ""), reverse=True)
