"""Drawing boxes on images: truth in green, predictions in red, labels above."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

from PIL import Image, ImageDraw, ImageFont

TRUTH = (34, 197, 94)
PREDICTION = (239, 68, 68)


def draw_boxes(image: Image.Image | str | Path, layers: Iterable[tuple[Sequence[Sequence], tuple[int, int, int]]],
               max_side: int = 640) -> Image.Image:
    """A copy of `image` (scaled to fit `max_side`) with each layer's [x1, y1, x2, y2, label?] boxes drawn."""
    im = Image.open(image) if isinstance(image, (str, Path)) else image
    im = im.convert("RGB")
    scale = min(1.0, max_side / max(im.size))
    if scale < 1.0:
        im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))))
    else:
        im = im.copy()
    draw = ImageDraw.Draw(im)
    line = max(2, round(max(im.size) / 200))
    font = ImageFont.load_default(size=max(11, round(max(im.size) / 40)))
    for boxes, color in layers:
        for box in boxes:
            x1, y1, x2, y2 = (float(v) * scale for v in box[:4])
            draw.rectangle([x1, y1, x2, y2], outline=color, width=line)
            if len(box) > 4 and box[4] not in (None, ""):
                text = str(box[4])
                tb = draw.textbbox((x1, y1), text, font=font)
                ty = y1 - (tb[3] - tb[1]) - 4 if y1 - (tb[3] - tb[1]) - 4 >= 0 else y1
                draw.rectangle([x1, ty, x1 + tb[2] - tb[0] + 6, ty + tb[3] - tb[1] + 4], fill=color)
                draw.text((x1 + 3, ty), text, fill=(255, 255, 255), font=font)
    return im


def placeholder(text: str, size: tuple[int, int] = (320, 240)) -> Image.Image:
    """A grey picture saying why there is no image (a file deleted or unreadable), for galleries."""
    im = Image.new("RGB", size, (229, 231, 235))
    draw = ImageDraw.Draw(im)
    font = ImageFont.load_default(size=14)
    words, lines, line = text.split(), [], ""
    for w in words:  # wrap to the width
        if line and draw.textlength(f"{line} {w}", font=font) > size[0] - 20:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    lines.append(line)
    for i, ln in enumerate(lines):
        draw.text((10, 10 + 18 * i), ln, fill=(75, 85, 99), font=font)
    return im


def draw_file(path: str | Path, layers: Iterable[tuple[Sequence[Sequence], tuple[int, int, int]]],
              max_side: int = 640) -> Image.Image:
    """`draw_boxes` of an image file; a placeholder when the file is missing or unreadable (never raises for it)."""
    try:
        return draw_boxes(path, layers, max_side)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        missing = isinstance(e, FileNotFoundError)
        return placeholder(f"{Path(path).name}: {'the image is no longer on disk' if missing else 'the image cannot be read'}",
                           (max_side, max_side * 3 // 4))
