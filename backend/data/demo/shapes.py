"""Synthetic scenes: coloured shapes on textured backgrounds with distractors. Pure PIL, deterministic."""
from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFilter

COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 230), "yellow": (235, 210, 40)}
SHAPES = ("square", "circle", "triangle")
CATEGORIES = [f"{c} {s}" for c in COLOURS for s in SHAPES]
SIZE = 224
"""Scene side in pixels: 7x7 merged visual tokens for the demo model (14x14 patches of 16 px)."""
MAX_SHAPES = 2
"""Shapes per scene: the question names one by colour, the other is there to be told apart."""


@dataclass
class Scene:
    image: Image.Image
    boxes: list[list]  # [x1, y1, x2, y2, "colour shape"], tight pixel boxes


def _background(rng: random.Random, size: int) -> Image.Image:
    base = tuple(rng.randint(90, 170) for _ in range(3))
    im = Image.new("RGB", (size, size), base)
    draw = ImageDraw.Draw(im)
    step = rng.choice([6, 8, 12])
    tint = tuple(max(0, min(255, v + rng.randint(-30, 30))) for v in base)
    for k in range(-size, size, step):  # diagonal stripes: texture, no colour of its own
        draw.line([(k, 0), (k + size, size)], fill=tint, width=2)
    for _ in range(rng.randint(3, 6)):  # grey distractor specks and strokes
        x, y = rng.randrange(size), rng.randrange(size)
        g = rng.randint(60, 200)
        draw.line([(x, y), (x + rng.randint(-12, 12), y + rng.randint(-12, 12))], fill=(g, g, g), width=2)
    return im.filter(ImageFilter.GaussianBlur(0.6))


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], colour) -> None:
    x1, y1, x2, y2 = box
    if shape == "square":
        draw.rectangle(box, fill=colour)
    elif shape == "circle":
        draw.ellipse(box, fill=colour)
    else:
        draw.polygon([((x1 + x2) / 2, y1), (x2, y2), (x1, y2)], fill=colour)


def _overlaps(a, b, margin: int = 4) -> bool:
    return not (a[2] + margin <= b[0] or b[2] + margin <= a[0] or a[3] + margin <= b[1] or b[3] + margin <= a[1])


def make_scene(seed: int, max_shapes: int = MAX_SHAPES, size: int = SIZE) -> Scene:
    """1..max_shapes shapes of distinct colours (the colour alone tells them apart), not overlapping."""
    rng = random.Random(seed)
    im = _background(rng, size)
    draw = ImageDraw.Draw(im)
    boxes: list[list] = []
    colours = rng.sample(list(COLOURS), rng.randint(1, max_shapes))
    for category in [f"{c} {rng.choice(SHAPES)}" for c in colours]:
        for _ in range(50):
            side = rng.randint(size // 4, size * 2 // 5)
            w = side + rng.randint(-side // 4, side // 4)
            x1, y1 = rng.randint(2, size - w - 2), rng.randint(2, size - side - 2)
            box = (x1, y1, x1 + w, y1 + side)
            if not any(_overlaps(box, b) for b in boxes):
                break
        else:
            continue
        colour_name, shape = category.split()
        colour = tuple(max(0, min(255, v + rng.randint(-20, 20))) for v in COLOURS[colour_name])
        _draw_shape(draw, shape, box, colour)
        boxes.append([*box, category])
    return Scene(im, boxes)
