"""The 4×4 contact sheet of the first images, as a radiologist would see them.

Each tile is the VOI-windowed image (MONOCHROME1 inverted back), mass boxes outlined in colour
(round orange, oval cyan, spiculated red), with a caption: vendor, view, laterality, density,
``M1`` for MONOCHROME1 files and the mass shapes.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mame_eval.data.phantoms.render import Phantom


def preview_tile(ph: Phantom, tile_h: int) -> tuple[Image.Image, str]:
    height, width = ph.pixels.shape
    tile_w = max(1, round(width * tile_h / height))
    disp = np.rint(ph.display() * 255).astype(np.uint8)
    img = Image.fromarray(disp).resize((tile_w, tile_h), Image.LANCZOS).convert("RGB")
    draw = ImageDraw.Draw(img)
    sx, sy = tile_w / width, tile_h / height
    colours = {"round": (255, 170, 0), "oval": (0, 200, 255), "spiculated": (255, 60, 60)}
    for m in ph.masses:
        x0, y0, x1, y1 = m.box
        pad = 2
        draw.rectangle([x0 * sx - pad, y0 * sy - pad, x1 * sx + pad, y1 * sy + pad],
                       outline=colours.get(m.shape, (255, 0, 0)), width=2)
    s = ph.spec
    caption = f"{s.vendor} {s.view} {s.laterality} dens {s.density}"
    if ph.photometric == "MONOCHROME1":
        caption += " M1"
    if ph.masses:
        caption += " | " + ",".join(m.shape for m in ph.masses)
    return img, caption


def preview_sheet(tiles: list[tuple[Image.Image, str]]) -> bytes:
    cols = 4
    rows = math.ceil(len(tiles) / cols)
    tile_w, tile_h = tiles[0][0].size
    cap_h = 16
    gap = 4
    sheet = Image.new("RGB", (cols * (tile_w + gap) + gap, rows * (tile_h + cap_h + gap) + gap),
                      (40, 40, 40))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for i, (img, caption) in enumerate(tiles):
        x = gap + (i % cols) * (tile_w + gap)
        y = gap + (i // cols) * (tile_h + cap_h + gap)
        draw.text((x + 2, y + 2), caption, fill=(255, 255, 120), font=font)
        sheet.paste(img, (x, y + cap_h))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    return buf.getvalue()
