"""``mame-eval demo``: the offline journey end to end on phantoms (DESIGN §2, §5).

Each step writes into its own sub-folder of ``out`` and is resumable: rerunning the demo
re-uses what is already there.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from mame_eval.reports.contact_sheet import contact_sheet


@dataclass
class DemoSummary:
    """Headline numbers and file locations of a demo run."""

    out: Path
    lines: list[tuple[str, str]] = field(default_factory=list)
    wall_time_s: float = 0.0

    def add(self, label: str, value: str) -> None:
        self.lines.append((label, value))

    def render(self) -> str:
        width = max(len(k) for k, _ in self.lines) if self.lines else 0
        body = "\n".join(f"  {k.ljust(width)}  {v}" for k, v in self.lines)
        return f"demo finished in {self.wall_time_s:.0f} s — {self.out}\n{body}"


def _prepared_preview(prepared: Path, out: Path, n: int = 16) -> Path:
    """Contact sheet of the first prepared healthy and lesion images, boxes drawn."""
    images, captions, boxes = [], [], []
    for sub, key in (("healthy", None), ("lesion", "box")):
        meta = prepared / sub / "metadata.jsonl"
        rows = [json.loads(line) for line in meta.read_text().splitlines() if line.strip()]
        for row in rows[: n // 2]:
            images.append(np.asarray(Image.open(prepared / sub / row["file_name"]))[..., 0])
            captions.append(row["prompt"].replace("a ", "", 1).replace(" mammogram", "")[:48])
            boxes.append([tuple(row[key])] if key else [])
    return contact_sheet(images, out, captions=captions, boxes=boxes,
                         title="prepared (mirrored, 512 px, prompts)")


def run_demo(out: Path, n: int = 48, seed: int = 0,
             progress: Callable[[int, int], None] | None = None) -> DemoSummary:
    """Phantoms → prepare → preview. Later stages are added as the toolkit grows."""
    from mame_eval.data.phantoms import write_phantom_dataset
    from mame_eval.data.prepare import prepare_dataset

    start = time.perf_counter()
    out = Path(out)
    steps = 3
    summary = DemoSummary(out)
    raw = out / "phantoms"
    if not (raw / "breast-level_annotations.csv").is_file():
        write_phantom_dataset(raw, n=n, seed=seed, population="mixed", preview=True)
    summary.add("phantoms", f"{raw} ({n} images, preview: {raw / 'preview.png'})")
    if progress:
        progress(1, steps)
    prepared = out / "prepared"
    report = prepare_dataset(raw, prepared, workers=1)
    c = report.counts
    summary.add("prepared", f"{prepared} ({c['healthy']} healthy, {c['lesion_samples']} "
                f"lesion samples, {c['skipped']} skipped; {report.family} prompts)")
    if progress:
        progress(2, steps)
    sheet = _prepared_preview(prepared, out / "prepared_preview.png")
    summary.add("preview", str(sheet))
    if progress:
        progress(3, steps)
    summary.wall_time_s = time.perf_counter() - start
    return summary
