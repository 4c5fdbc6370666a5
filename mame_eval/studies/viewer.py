"""The reader's viewer as a Streamlit components-v2 element (``viewer.js`` + ``viewer.css``).

The component runs in the page itself (no iframe): it owns the keyboard, so one physical key
press is one event it can reason about (see ``viewer.js``), and it draws the case on a canvas:
window/level through a lookup table on the 8-bit pixels, invert, a magnifier, zoom that shows
pixels (no smoothing) beyond one image pixel per device pixel, fit and 1:1 in device pixels
(HiDPI screens included). It sends two events back, ``rate`` and ``nav``.

Registered once per process (importing this module); case images are read and encoded once and
kept in memory (:func:`case_data_url`), so a rerun costs no disk read and no base64 encoding.
"""

from __future__ import annotations

import base64
import functools
import html
import re
from pathlib import Path

import streamlit as st

__all__ = ["case_data_url", "instructions_html", "viewer"]

_HERE = Path(__file__).parent
_JS = (_HERE / "viewer.js").read_text(encoding="utf-8")
_CSS = (_HERE / "viewer.css").read_text(encoding="utf-8")

#: mount as ``viewer(key=..., data=..., on_rate_change=..., on_nav_change=...)``
viewer = st.components.v2.component("mame_eval_reader_viewer", js=_JS, css=_CSS)


@functools.lru_cache(maxsize=512)
def _encoded(path: str, mtime_ns: int, size: int) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def case_data_url(path: Path) -> str:
    """The case PNG as a ``data:`` URL, exactly its bytes (cached per file version)."""
    stat = Path(path).stat()
    return _encoded(str(path), stat.st_mtime_ns, stat.st_size)


def _inline(text: str) -> str:
    out = html.escape(text, quote=False)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", out)


@functools.lru_cache(maxsize=64)
def instructions_html(markdown: str) -> str:
    """The protocol's instructions (a Markdown subset: paragraphs, ``* `` bullets, ``**bold**``,
    ```code```) as HTML for the viewer's instructions panel; everything else is escaped."""
    blocks: list[str] = []
    para: list[str] = []
    items: list[str] = []

    def flush() -> None:
        if para:
            blocks.append("<p>" + _inline(" ".join(para)) + "</p>")
            para.clear()
        if items:
            blocks.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in items) + "</ul>")
            items.clear()

    for line in markdown.strip().splitlines():
        stripped = line.strip()
        if not stripped:
            flush()
        elif stripped.startswith(("* ", "- ")):
            if para:
                flush()
            items.append(stripped[2:])
        elif items and line.startswith(" "):
            items[-1] += " " + stripped  # a wrapped bullet
        else:
            if items:
                flush()
            para.append(stripped)
    flush()
    return "".join(blocks)
