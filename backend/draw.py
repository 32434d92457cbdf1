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
