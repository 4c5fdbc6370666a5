"""Render a :class:`~mame_eval.reports.content.Report` as one self-contained HTML page (Jinja2,
figures embedded) and as a PDF (ReportLab's page layout: tables split across pages with their
header repeated, figures scaled to the text width)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from mame_eval.io import atomic_path, write_text
from mame_eval.reports.content import Image, Paragraph, Report, Table

__all__ = ["render_html", "render_pdf"]

_TEMPLATES = Path(__file__).with_name("templates")


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def render_html(report: Report, target: Path) -> Path:
    """Write ``target`` (one file: figures are embedded as data URIs)."""
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(loader=FileSystemLoader(_TEMPLATES),
                      autoescape=select_autoescape(["html", "j2"]), trim_blocks=True,
                      lstrip_blocks=True)
    images = {b.path: _data_uri(b.path) for s in report.sections for b in s.blocks
              if isinstance(b, Image)}
    html = env.get_template("report.html.j2").render(report=report, images=images)
    write_text(target, html)
    return target


def render_pdf(report: Report, target: Path) -> Path:
    """Write ``target``: A4, numbered sections, tables and figures, the provenance appendix."""
    from xml.sax.saxutils import escape

    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
    from reportlab.lib.units import mm
    from reportlab.lib.utils import ImageReader
    from reportlab.platypus import (
        CondPageBreak,
        KeepTogether,
        SimpleDocTemplate,
        Spacer,
        TableStyle,
    )
    from reportlab.platypus import Image as RLImage
    from reportlab.platypus import Paragraph as RLParagraph
    from reportlab.platypus import Table as RLTable

    styles = getSampleStyleSheet()
    body = ParagraphStyle("body", parent=styles["BodyText"], fontSize=9, leading=12)
    small = ParagraphStyle("small", parent=body, fontSize=7.5, leading=9.5,
                           textColor=colors.HexColor("#555555"))
    note = ParagraphStyle("note", parent=small, textColor=colors.HexColor("#a04000"))
    cell = ParagraphStyle("cell", parent=body, fontSize=7.5, leading=9)
    head = ParagraphStyle("head", parent=cell, fontName="Helvetica-Bold")
    h1 = ParagraphStyle("h1", parent=styles["Title"], fontSize=18, leading=22, alignment=0)
    h2 = ParagraphStyle("h2", parent=styles["Heading2"], fontSize=13, spaceBefore=10)
    h3 = ParagraphStyle("h3", parent=styles["Heading4"], fontSize=9.5, spaceBefore=6)

    doc = SimpleDocTemplate(str(target), pagesize=A4, leftMargin=16 * mm,
                            rightMargin=16 * mm, topMargin=16 * mm, bottomMargin=16 * mm,
                            title=report.title, author=f"mame-eval {report.version}")
    width = doc.width

    def para(text: str, style=body):
        return RLParagraph(escape(str(text)), style)

    def table(block: Table):
        data = [[para(c, head) for c in block.columns]]
        data += [[para(c, cell) for c in row] for row in block.rows]
        t = RLTable(data, repeatRows=1, hAlign="LEFT")
        t.setStyle(TableStyle([
            ("LINEBELOW", (0, 0), (-1, 0), 0.8, colors.black),
            ("LINEBELOW", (0, 1), (-1, -1), 0.25, colors.HexColor("#cccccc")),
            ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ("LEFTPADDING", (0, 0), (-1, -1), 3), ("RIGHTPADDING", (0, 0), (-1, -1), 5),
        ]))
        out = [para(block.title, h3), t]
        if block.note:
            out.append(para(block.note, small))
        return out

    def image(block: Image):
        reader = ImageReader(str(block.path))
        w, h = reader.getSize()
        max_w = width if block.wide else min(width, 95 * mm)
        scale = min(max_w / w, (doc.height * 0.8) / h)
        caption = block.title + (f" — {block.caption}" if block.caption else "")
        return KeepTogether([RLImage(str(block.path), width=w * scale, height=h * scale,
                                     hAlign="LEFT"), para(caption, small), Spacer(1, 6)])

    story = [para(report.title, h1)]
    if report.subtitle:
        story.append(para(report.subtitle, small))
    story.append(para(f"Generated {report.created} by mame-eval {report.version} from "
                      f"{len(report.runs)} run(s). Every estimate is shown with its 95 % "
                      "confidence interval and n.", small))
    for k, section in enumerate(report.sections, 1):
        head_block = [para(f"{k}. {section.title}", h2)]
        if section.intro:
            head_block.append(para(section.intro, small))
        for m in section.missing:
            text = f"{m.label}: {m.reason} ({m.path})"
            if m.command:
                text += f" — produce it with: {m.command}"
            head_block.append(para(text, note))
        flowables = []
        for block in section.blocks:
            if isinstance(block, Table):
                flowables.append(table(block))
            elif isinstance(block, Image):
                flowables.append([image(block)])
            elif isinstance(block, Paragraph):
                flowables.append([para(block.text, note if block.kind == "note" else body)])
        # a heading never ends a page: it stays with its section's first block
        first = flowables.pop(0) if flowables else []
        story += [CondPageBreak(40 * mm), KeepTogether(head_block + first)]
        story += [f for group in flowables for f in group]
    story += [CondPageBreak(80 * mm),
              para(f"{len(report.sections) + 1}. Provenance of every run", h2)]
    for run in report.runs:
        story.append(para(f"{run.get('label') or run['folder']} ({run['kind']})", h3))
        lines = [f"folder: {run['folder']}",
                 f"command: {run.get('command_line') or run.get('command', '')}",
                 f"created: {run.get('created', '')}; device: {run.get('device', '')}; "
                 f"wall time: {run.get('wall_time_s', '')} s",
                 "versions: " + ", ".join(f"{k} {v}" for k, v in
                                          (run.get("versions") or {}).items())]
        for name, inp in (run.get("inputs") or {}).items():
            if isinstance(inp, dict) and inp.get("sha256"):
                lines.append(f"input {name}: {inp.get('path', '')} — {inp.get('n_files')} "
                             f"file(s), sha256 {inp['sha256'][:16]}…")
        settings = json.dumps(run.get("settings", {}), default=str)
        lines.append("settings: " + (settings if len(settings) < 600 else
                                     settings[:600] + " … (full settings in run.json)"))
        story += [para(line, small) for line in lines]

    def footer(canvas, doc_):
        canvas.saveState()
        canvas.setFont("Helvetica", 7)
        canvas.drawRightString(A4[0] - 16 * mm, 9 * mm, f"{report.title} — page {doc_.page}")
        canvas.restoreState()

    with atomic_path(target) as tmp:
        doc.filename = str(tmp)
        doc.build(story, onFirstPage=footer, onLaterPages=footer)
    return target
