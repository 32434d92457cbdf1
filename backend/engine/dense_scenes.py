"""Dense scenes: how many boxes the busiest images hold, and whether their answers fit max_completion_length."""
from __future__ import annotations

import math
from typing import Callable

from backend.scoring.tasks import Size, frame_solution, target_completion

HEADROOM = 1.25
"""The suggested max_completion_length leaves this much room over the bare answer for the model's reasoning."""


def dense_scenes(dataset: dict, family: str, count_tokens: Callable[[str], int], max_completion_length: int,
                 input_size_of: Callable[[Size], Size] | None = None) -> dict | None:
    """Boxes per image (min, max), and the longest answer one prompt asks for (the image and class with the most
    boxes) in tokens, written in the family's answer format; with the max_completion_length that fits it.
    None for tasks without boxes."""
    if dataset["task"] != "detection" or not dataset["samples"]:
        return None
    per_image = [len(s.get("boxes", [])) for s in dataset["samples"]]
    densest, category, boxes = None, None, []
    for s in dataset["samples"]:
        by_class: dict[str, list] = {}
        for *box, label in s.get("boxes", []):
            by_class.setdefault(label, []).append(box)
        for c, bs in by_class.items():
            if len(bs) > len(boxes):
                densest, category, boxes = s, c, bs
    if densest is None:
        return None
    size = (densest["width"], densest["height"])
    solution = {**frame_solution(size, family, input_size_of(size) if input_size_of else None), "boxes": boxes}
    tokens = count_tokens(target_completion("detection", solution, category))
    fits = math.ceil(tokens * HEADROOM / 64) * 64
    return {"boxes_per_image": [min(per_image), max(per_image)], "densest_image": densest["file"],
            "densest_class": category, "densest_boxes": len(boxes), "answer_tokens": tokens,
            "max_completion_length": max_completion_length, "fits": tokens * HEADROOM <= max_completion_length,
            "suggested_max_completion_length": fits}


def dense_advice(line: dict | None) -> list[str]:
    """A sentence when the densest answer would be cut off."""
    if not line or line["fits"]:
        return []
    lo, hi = line["boxes_per_image"]
    boxes = "box" if line["densest_boxes"] == 1 else "boxes"
    return [f"Dense scenes: images hold {lo}–{hi} boxes; '{line['densest_image']}' has {line['densest_boxes']} "
            f"'{line['densest_class']}' {boxes}, an answer of about {line['answer_tokens']} tokens before any "
            f"reasoning, over max_completion_length {line['max_completion_length']}: answers would be cut off and "
            f"score low. Set max_completion_length to {line['suggested_max_completion_length']} or more."]
