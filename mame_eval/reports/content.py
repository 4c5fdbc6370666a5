"""What a report holds, independent of how it is rendered: sections of paragraphs, tables and
images, each section with the runs it was built from or the commands that would produce them.

:mod:`mame_eval.reports.sections` fills these from run folders;
:mod:`mame_eval.reports.render` writes them as HTML (Jinja2) and PDF (ReportLab).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Image", "Missing", "Paragraph", "Report", "Section", "Table", "fmt", "fmt_ci"]


@dataclass
class Paragraph:
    text: str
    kind: str = "text"  # "text" or "note" (a warning a reader must see)


@dataclass
class Table:
    """A table of already formatted cells (estimates with their CIs, counts)."""

    title: str
    columns: list[str]
    rows: list[list[str]]
    note: str = ""


@dataclass
class Image:
    """A figure (PNG for both renderers; the run's vector PDF is linked from the HTML)."""

    title: str
    path: Path
    caption: str = ""
    wide: bool = False  # a page-wide figure; else one column wide
    dark: bool = False  # a mammogram panel on black


@dataclass
class Missing:
    """A run the section needs that does not exist (yet): what it is and how to make it."""

    label: str
    path: str
    command: str
    reason: str = "not run"


@dataclass
class Section:
    key: str
    title: str
    intro: str = ""
    blocks: list[Paragraph | Table | Image] = field(default_factory=list)
    missing: list[Missing] = field(default_factory=list)
    runs: list[dict] = field(default_factory=list)  # the run.json records used

    @property
    def empty(self) -> bool:
        return not self.blocks


@dataclass
class Report:
    title: str
    subtitle: str
    created: str
    sections: list[Section]
    version: str

    @property
    def runs(self) -> list[dict]:
        """Every run used, once, in section order (the provenance appendix)."""
        seen, out = set(), []
        for section in self.sections:
            for run in section.runs:
                if run["folder"] not in seen:
                    seen.add(run["folder"])
                    out.append(run)
        return out


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def fmt(value, digits: int = 3) -> str:
    """A number for a table cell: fixed digits, integers as integers, blanks as an en dash."""
    if _missing(value):
        return "–"
    if isinstance(value, (int,)) or (isinstance(value, float) and value.is_integer()
                                     and abs(value) >= 1 and digits == 0):
        return f"{int(value)}"
    return f"{float(value):.{digits}f}"


def fmt_ci(estimate, low, high, digits: int = 3) -> str:
    """``0.412 [0.398, 0.427]``; the estimate alone when it has no interval."""
    if _missing(estimate):
        return "–"
    if _missing(low) or _missing(high):
        return f"{fmt(estimate, digits)} (no CI)"
    return f"{fmt(estimate, digits)} [{fmt(low, digits)}, {fmt(high, digits)}]"
