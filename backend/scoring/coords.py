"""Coordinate conventions per model family, and conversion at the prompt/parse edge.

Storage keeps absolute pixels of the original image. A model sees either a frame
normalised to 0..scale (Qwen2-VL, Qwen3-VL) or absolute pixels of the resized input
its processor produced (Qwen2.5-VL). Pure Python, no torch.
"""
from __future__ import annotations

from typing import Sequence

from backend.scoring.families import convention


def model_frame(family: str | None, image_size: Sequence[int], input_size: Sequence[int] | None = None) -> tuple[float, float]:
    """Width and height of the frame the family's coordinates live in.

    `family=None` means boxes already are absolute pixels of the original image. A family that
    writes pixels of the resized input needs `input_size`: the size the loaded processor really
    resizes this image to (backend/engine/model_input.py answers it).
    """
    width, height = image_size
    if family is None:
        return float(width), float(height)
    conv = convention(family)
    if conv.kind == "normalized":
        return float(conv.scale), float(conv.scale)
    if input_size is None:
        raise ValueError(f"{family} writes pixels of the resized input: the input size of this "
                         f"{int(width)}x{int(height)} image is needed")
    return float(input_size[0]), float(input_size[1])


def to_model(box: Sequence[float], family: str | None, image_size: Sequence[int],
             input_size: Sequence[int] | None = None) -> list[float]:
    """Original-image pixels -> the family's frame (unrounded)."""
    fw, fh = model_frame(family, image_size, input_size)
    sx, sy = fw / image_size[0], fh / image_size[1]
    return [box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy]


def from_model(box: Sequence[float], family: str | None, image_size: Sequence[int],
               input_size: Sequence[int] | None = None) -> list[float]:
    """The family's frame -> original-image pixels."""
    fw, fh = model_frame(family, image_size, input_size)
    sx, sy = image_size[0] / fw, image_size[1] / fh
    return [box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy]


def to_model_int(box: Sequence[float], family: str | None, image_size: Sequence[int],
                 input_size: Sequence[int] | None = None) -> list[int]:
    """Integer coordinates as a prompt or a target answer writes them."""
    return [int(round(v)) for v in to_model(box, family, image_size, input_size)]
