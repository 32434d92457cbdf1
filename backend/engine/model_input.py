"""What the model sees: for a loaded processor and an image, the size it is really resized to, the
coordinate frame the prompt, rewards, evaluation, predictions and drawings use, and its visual tokens.

The one owner of that answer. It reads the limits the processor really holds and runs the library's
own resize rule, and `apply_pixel_limits` checks it against the processor's real output
(`image_grid_thw` x patch size), so a checkpoint folder's own `min_pixels`/`max_pixels` can never
silently put the model in another frame than the one the rewards score in.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

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
    """Tokens the image takes in the prompt (patches merged merge_size x merge_size)."""

    def to_json(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def _image_processor(processor):
    return getattr(processor, "image_processor", processor)


def pixel_limits(processor) -> tuple[int, int]:
    """(min_pixels, max_pixels) the processor holds now."""
    size = _image_processor(processor).size
    get = size.get if isinstance(size, dict) else lambda k: getattr(size, k, None)
    return int(get("shortest_edge")), int(get("longest_edge"))


def input_size(processor, original: Sequence[int]) -> tuple[int, int]:
    """(w, h) the processor resizes an image of size `original` (w, h) to: the library's own rule."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize
    ip = _image_processor(processor)
    min_pixels, max_pixels = pixel_limits(processor)
    w, h = int(original[0]), int(original[1])
    if w <= 0 or h <= 0:
        raise ValueError(f"image size must be positive, got {w}x{h}")
    rh, rw = smart_resize(h, w, factor=ip.patch_size * ip.merge_size, min_pixels=min_pixels, max_pixels=max_pixels)
    return rw, rh


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
    ip = _image_processor(processor)
    w, h = int(original[0]), int(original[1])
    rw, rh = input_size(processor, (w, h))
    fw, fh = model_frame(family, (w, h), (rw, rh))
    tokens = (rh // ip.patch_size) * (rw // ip.patch_size) // (ip.merge_size ** 2)
    return ImageView((w, h), (rw, rh), (int(fw), int(fh)), tokens)


def fed_size(processor, image) -> tuple[int, int]:
    """(w, h) the whole processor call (as training and generation make it) produced for an image."""
    ip = _image_processor(processor)
    if processor is ip:
        out = ip(images=[image], return_tensors="pt")
    else:
        token = getattr(processor, "image_token", None) or "<|image_pad|>"
        out = processor(text=[token], images=[image], return_tensors="pt")
    _, gh, gw = (int(v) for v in out["image_grid_thw"][0])
    return gw * ip.patch_size, gh * ip.patch_size


def _probe_sizes(min_pixels: int, max_pixels: int) -> list[tuple[int, int]]:
    """A 4:3 image just over max_pixels (capped at 4 MP, to stay fast) and one under min_pixels."""
    big = min(2 * max_pixels, 4_000_000)
    small = max(min_pixels // 4, 64)
    return [(max(1, int((big * 4 / 3) ** 0.5)), max(1, int((big * 3 / 4) ** 0.5))),
            (max(2, int((small * 4 / 3) ** 0.5)), max(2, int((small * 3 / 4) ** 0.5)))]


def apply_pixel_limits(processor, family: str, min_pixels: int, max_pixels: int) -> None:
    """Make the processor resize within [min_pixels, max_pixels] whatever its folder said, and check it.

    A published checkpoint's `min_pixels`/`max_pixels` reach both the image processor and the
    tokenizer's init kwargs, which the processor merges into every call; both are overridden.
    Raises ValueError (one sentence) if the processor still resizes differently afterwards.
    """
    from PIL import Image
    if not 0 < min_pixels <= max_pixels:
        raise ValueError(f"min_pixels ({min_pixels}) must be positive and at most max_pixels ({max_pixels})")
    size = {"shortest_edge": int(min_pixels), "longest_edge": int(max_pixels)}
    ip = _image_processor(processor)
    ip.size = type(ip.size)(**size) if not isinstance(ip.size, dict) else size
    for holder in (getattr(processor, "tokenizer", None), processor):
        init_kwargs: dict[str, Any] | None = getattr(holder, "init_kwargs", None)
        if isinstance(init_kwargs, dict):
            init_kwargs.pop("min_pixels", None)
            init_kwargs.pop("max_pixels", None)
            if "size" in init_kwargs:
                init_kwargs["size"] = dict(size)
    for w, h in _probe_sizes(min_pixels, max_pixels):
        expected = image_view(processor, family, (w, h)).input
        got = fed_size(processor, Image.new("RGB", (w, h)))
        if got != expected:
            raise ValueError(f"the model's processor ignores the image-size limits {min_pixels}..{max_pixels} "
                             f"pixels (a {w}x{h} image became {got[0]}x{got[1]}, expected "
                             f"{expected[0]}x{expected[1]}); the coordinate frame would be wrong")
