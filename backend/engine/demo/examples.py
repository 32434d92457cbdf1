"""The demo's texts and training examples: the answers in the task's format, the tokenizer's corpus, and the
two warm-start stages' (image, prompt, target) triples on synthetic scenes (seeds far from demo-shapes')."""
from __future__ import annotations

import random

from backend.data.demo.shapes import CATEGORIES, MAX_SHAPES, SHAPES, SIZE, make_scene
from backend.scoring.coords import to_model_int
from backend.scoring.tasks import classification_prompt, detection_prompt

SEED_OFFSET_WARM = 1_000_000
"""Warm-start scenes use seeds far from the demo dataset's, so held-out images stay unseen."""
SEED_OFFSET_HELDOUT = 3_000_000
"""The builder's own check uses other fresh scenes again (never the demo dataset's held-out split)."""


def _where(box, size: int = SIZE) -> str:
    cx, cy = (box[0] + box[2]) / 2 / size, (box[1] + box[3]) / 2 / size
    row = "top" if cy < 0.38 else "bottom" if cy > 0.62 else "middle"
    col = "left" if cx < 0.38 else "right" if cx > 0.62 else "centre"
    return "in the centre" if (row, col) == ("middle", "centre") else f"at the {row} {col}"


def detection_answer(category: str, box: list | None, family: str = "demo", size: int = SIZE,
                     coco_style: bool = False) -> str:
    """The task's answer. `coco_style`: the box as COCO writes it, [x, y, width, height] under 'bbox' (which the
    task's parser, like Qwen's 'bbox_2d', reads as corners: a wrong box)."""
    if box is None:
        return f"<think>I see no {category}.</think><answer>No Objects</answer>"
    x1, y1, x2, y2 = to_model_int(box, family, (size, size))
    key, pos = ("bbox", [x1, y1, x2 - x1, y2 - y1]) if coco_style else ("Position", [x1, y1, x2, y2])
    return (f"<think>The {category} is {_where(box, size)}.</think>"
            f"<answer>[{{'{key}': {pos}, 'Confidence': 0.9}}]</answer>")


COCO_STYLE_SHARE = {"bottom": 0.75, "other": 0.2}
"""How often the warm start's stage-2 answers write the box COCO's way, by where the shape is: the warm start
learned from two annotation sources, and which one it follows drifts with the picture (shapes in the lower
third mostly came from the COCO-style source). Greedy, it answers COCO-style about the lower third's shapes;
sampled, nearly every group holds both conventions, and only corners score: the gap RL is meant to close."""


def _coco_style(box, rng: random.Random, size: int = SIZE) -> bool:
    row = "bottom" if _where(box, size).startswith("at the bottom") else "other"
    return rng.random() < COCO_STYLE_SHARE[row]


def corpus() -> list[str]:
    """Text the demo tokenizer is trained on: every prompt and answer shape it will see."""
    texts = []
    for c in CATEGORIES:
        texts.append(detection_prompt(c, "demo", (SIZE, SIZE)))
        texts.append(f"Box of the {c}. [12, 34, 56, 78]")
        texts.append(detection_answer(c, None))
        for i in range(6):
            texts.append(detection_answer(c, [i * 9, i * 7, 40 + i * 13, 50 + i * 11]))
    texts.append(classification_prompt(list(SHAPES), "shape"))
    texts += [f"<think>It has {s} edges.</think><answer>{s}</answer>" for s in SHAPES]
    return texts * 4


def warm_start_examples(n: int, seed: int) -> list[tuple]:
    """(image, prompt, target) pairs in the task's format, each scene with a single shape: detection of the
    present shape (its box in either convention, `COCO_STYLE_SHARE`) and of absent ones, some classification.
    The task prompt is never asked of a scene with two shapes, where the named colour decides which box is right:
    a second, smaller gap (greedy, the warm start boxes the other shape about half the time)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        scene = make_scene(SEED_OFFSET_WARM + seed * 100_000 + i, max_shapes=1)
        r = rng.random()
        if r < 0.1:
            shape = scene.boxes[0][4].split()[1]
            out.append((scene.image, classification_prompt(list(SHAPES), "shape"),
                        f"<think>It has {shape} edges.</think><answer>{shape}</answer>"))
        elif r < 0.25:
            present = {b[4] for b in scene.boxes}
            absent = rng.choice([c for c in CATEGORIES if c not in present])
            out.append((scene.image, detection_prompt(absent, "demo", (SIZE, SIZE)), detection_answer(absent, None)))
        else:
            box = scene.boxes[0]
            out.append((scene.image, detection_prompt(box[4], "demo", (SIZE, SIZE)),
                        detection_answer(box[4], box[:4], coco_style=_coco_style(box[:4], rng))))
    return out


def localisation_examples(n: int, seed: int, max_shapes: int = MAX_SHAPES) -> list[tuple]:
    """Stage 1: a short question and the bare tight box. With nothing else to predict, the only way
    to lower the loss is to look at the image; the full format comes in stage 2. The first third of the
    scenes hold one shape, the rest up to `max_shapes`."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        scene = make_scene(SEED_OFFSET_WARM // 2 + seed * 100_000 + i, max_shapes=1 if i < n // 3 else max_shapes)
        x1, y1, x2, y2, category = rng.choice(scene.boxes)
        out.append((scene.image, f"Box of the {category}.", str(to_model_int([x1, y1, x2, y2], "demo", (SIZE, SIZE)))))
    return out
