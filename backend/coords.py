"""Coordinate conventions per model family, and conversion at the prompt/parse edge.

Storage keeps absolute pixels of the original image. A model sees either a frame
normalised to 0..scale (Qwen2-VL, Qwen3-VL) or absolute pixels of the resized input
its processor produced (Qwen2.5-VL). Pure Python, no torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Sequence


@dataclass(frozen=True)
class Convention:
    """How a model family writes box coordinates."""
    kind: Literal["normalized", "resized_pixels"]
    scale: int = 1000          # normalized: coordinates run 0..scale on both axes
    factor: int = 28           # resized_pixels: sides are multiples of patch * merge size
    min_pixels: int = 56 * 56
    max_pixels: int = 28 * 28 * 16384

    def describe(self) -> str:
        if self.kind == "normalized":
            return f"integers normalised to 0-{self.scale}"
        return "integer pixel coordinates of the resized image"


# One entry per model family; the family registry in the training code points here.
CONVENTIONS: dict[str, Convention] = {
    "qwen2_vl": Convention("normalized", scale=1000),
    # min/max pixels must equal what the processor is loaded with (backend/families.py).
    "qwen2_5_vl": Convention("resized_pixels", factor=28, min_pixels=3136, max_pixels=401408),
    "qwen3_vl": Convention("normalized", scale=1000),
    # The demo model is tiny: a 0-100 grid keeps answers short and is plenty for its images.
    "demo": Convention("normalized", scale=100),
}


def convention(family: str) -> Convention:
    try:
        return CONVENTIONS[family]
    except KeyError:
        raise ValueError(f"unknown model family '{family}' (known: {', '.join(CONVENTIONS)})") from None


def smart_resize(height: int, width: int, factor: int = 28, min_pixels: int = 56 * 56,
                 max_pixels: int = 28 * 28 * 16384) -> tuple[int, int]:
    """(height, width) of the Qwen2-VL / Qwen2.5-VL processor's resized input.

    Same rule as transformers' `smart_resize`: sides rounded to multiples of `factor`,
    then scaled to keep the pixel count inside [min_pixels, max_pixels].
    """
    if min(height, width) <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def model_frame(family: str | None, image_size: Sequence[int], input_size: Sequence[int] | None = None) -> tuple[float, float]:
    """Width and height of the frame the family's coordinates live in.

    `family=None` means boxes already are absolute pixels of the original image.
    `input_size` overrides the computed resized size when the processor ran with
    non-default min/max pixels.
    """
    width, height = image_size
    if family is None:
        return float(width), float(height)
    conv = convention(family)
    if conv.kind == "normalized":
        return float(conv.scale), float(conv.scale)
    if input_size is not None:
        return float(input_size[0]), float(input_size[1])
    h, w = smart_resize(int(height), int(width), conv.factor, conv.min_pixels, conv.max_pixels)
    return float(w), float(h)


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
