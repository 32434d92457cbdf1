"""What the model sees: for a loaded processor and an image, the size it is really resized to, the
coordinate frame the prompt, rewards, evaluation, predictions and drawings use, and its visual tokens.

The one owner of that answer. Each kind of processor (how it turns an image into visual tokens) is one
`ImageRule` (backend/engine/image_rules.py), recognised from the loaded processor itself: it reads the limits the processor really holds
and runs the library's own resize/tiling rule, and `apply_pixel_limits` checks it against the processor's real
output, so a checkpoint folder's own limits can never silently put the model in another frame than the one the
rewards score in.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

from backend.engine.image_rules import RULES, ImageRule, image_processor_of
from backend.scoring.coords import model_frame


@dataclass(frozen=True)
class ImageView:
    original: tuple[int, int]
    """Width, height of the stored (original) image."""
    input: tuple[int, int]
    """Width, height the processor resizes it to: what the vision tower sees."""
    frame: tuple[int, int]
    """Width, height of the frame the family's coordinates live in (0..scale, or the input pixels)."""
    visual_tokens: int
    """Tokens the image takes in the prompt."""

    def to_json(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def rule(processor) -> ImageRule:
    """The rule of this processor's kind (one sentence when none fits)."""
    ip = image_processor_of(processor)
    for r in RULES:
        if r.handles(ip):
            return r
    raise ValueError(f"the image processor {type(ip).__name__} is of no kind this project knows how to size")


def pixel_limits(processor) -> tuple[int, int]:
    """(min_pixels, max_pixels) the processor holds now."""
    return rule(processor).limits(image_processor_of(processor))


def engine_kwargs(processor) -> dict:
    """What a vLLM engine's processor needs (mm_processor_kwargs) to size images as this one does."""
    return rule(processor).engine_kwargs(image_processor_of(processor))


def _positive(original: Sequence[int]) -> tuple[int, int]:
    w, h = int(original[0]), int(original[1])
    if w <= 0 or h <= 0:
        raise ValueError(f"image size must be positive, got {w}x{h}")
    return w, h


def input_size(processor, original: Sequence[int]) -> tuple[int, int]:
    """(w, h) the processor resizes an image of size `original` (w, h) to: the library's own rule."""
    return rule(processor).input_size(image_processor_of(processor), *_positive(original))


def at_input_size(processor, image):
    """`image` (RGB) already at the size the processor feeds it, so that a second engine preprocessing it (vLLM)
    resizes it no further and expands it to the same tokens (TRL #6401); the image itself where the processor's
    rule would move even that size again (limits too close together)."""
    size = input_size(processor, image.size)
    if size == image.size or input_size(processor, size) != size:
        return image.convert("RGB")
    return image.convert("RGB").resize(size)


def image_view(processor, family: str, original: Sequence[int]) -> ImageView:
    """What the model of `family`, fed by `processor`, sees of an image of size `original` (w, h)."""
    w, h = _positive(original)
    r = rule(processor)
    rw, rh = r.input_size(image_processor_of(processor), w, h)
    fw, fh = model_frame(family, (w, h), (rw, rh))
    return ImageView((w, h), (rw, rh), (int(fw), int(fh)), r.visual_tokens(processor, w, h))


def fed(processor, image) -> tuple[tuple[int, int], int]:
    """((w, h), visual tokens) the whole processor call (as training and generation make it) produced."""
    return rule(processor).fed(processor, image)


def fed_size(processor, image) -> tuple[int, int]:
    """(w, h) the whole processor call (as training and generation make it) produced for an image."""
    return fed(processor, image)[0]


def _probe_sizes(min_pixels: int, max_pixels: int) -> list[tuple[int, int]]:
    """A 4:3 image just over max_pixels (capped at 4 MP, to stay fast) and one under min_pixels."""
    big = min(2 * max_pixels, 4_000_000)
    small = max(min_pixels // 4, 64)
    return [(max(1, int((big * 4 / 3) ** 0.5)), max(1, int((big * 3 / 4) ** 0.5))),
            (max(2, int((small * 4 / 3) ** 0.5)), max(2, int((small * 3 / 4) ** 0.5)))]


def apply_pixel_limits(processor, family: str, min_pixels: int, max_pixels: int) -> None:
    """Make the processor resize within [min_pixels, max_pixels] whatever its folder said, and check it.

    Raises ValueError (one sentence) if the processor still resizes differently afterwards.
    """
    from PIL import Image
    if not 0 < min_pixels <= max_pixels:
        raise ValueError(f"min_pixels ({min_pixels}) must be positive and at most max_pixels ({max_pixels})")
    r = rule(processor)
    r.set_limits(processor, min_pixels, max_pixels)
    for w, h in _probe_sizes(min_pixels, max_pixels):
        view = image_view(processor, family, (w, h))
        got, tokens = r.fed(processor, Image.new("RGB", (w, h)))
        if got != view.input or tokens != view.visual_tokens:
            raise ValueError(f"the model's processor ignores the image-size limits {min_pixels}..{max_pixels} "
                             f"pixels (a {w}x{h} image became {got[0]}x{got[1]}, expected "
                             f"{view.input[0]}x{view.input[1]}); the coordinate frame would be wrong")
