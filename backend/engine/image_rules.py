"""How each kind of image processor turns an image into what the model sees, one `ImageRule` per kind (Qwen's
dynamic resize, Gemma 3's fixed square, SmolVLM's longest-edge tiles, InternVL's aspect-ratio grid of tiles):
its limits, the size it feeds by the library's own rule, its visual tokens, a real processor call to check them
against, and what a vLLM engine's processor needs to size alike. A kind is recognised from the loaded processor
(backend/engine/model_input.py asks); a family whose processor is of a known kind needs nothing here.
"""
from __future__ import annotations

from typing import Any


def image_processor_of(processor):
    return getattr(processor, "image_processor", processor)


def _size_get(size, key):
    return size.get(key) if isinstance(size, dict) else getattr(size, key, None)


class ImageRule:
    """How one kind of processor turns an image into what the model sees."""

    def handles(self, ip) -> bool:
        raise NotImplementedError

    def limits(self, ip) -> tuple[int, int]:
        """(min_pixels, max_pixels) the processor holds now."""
        raise NotImplementedError

    def set_limits(self, processor, min_pixels: int, max_pixels: int) -> None:
        raise NotImplementedError

    def input_size(self, ip, w: int, h: int) -> tuple[int, int]:
        """(w, h) the image is resized to, by the library's own rule."""
        raise NotImplementedError

    def visual_tokens(self, processor, w: int, h: int) -> int:
        raise NotImplementedError

    def fed(self, processor, image) -> tuple[tuple[int, int], int]:
        """((w, h), visual tokens) from a real processor call, as training and generation make it."""
        raise NotImplementedError

    def engine_kwargs(self, ip) -> dict:
        """vLLM's mm_processor_kwargs that make its processor resize like this one."""
        return {}


class DynamicResize(ImageRule):
    """Qwen2-VL, Qwen2.5-VL, Qwen3-VL: any size, rounded to the patch grid within min/max pixels
    (`smart_resize`); one token per merge_size x merge_size patches."""

    def handles(self, ip) -> bool:
        return all(hasattr(ip, a) for a in ("patch_size", "merge_size", "temporal_patch_size"))

    def limits(self, ip):
        return int(_size_get(ip.size, "shortest_edge")), int(_size_get(ip.size, "longest_edge"))

    def set_limits(self, processor, min_pixels, max_pixels):
        size = {"shortest_edge": int(min_pixels), "longest_edge": int(max_pixels)}
        ip = image_processor_of(processor)
        ip.size = type(ip.size)(**size) if not isinstance(ip.size, dict) else size
        # A published checkpoint's min/max_pixels also reach the tokenizer's init kwargs, which the processor
        # merges into every call.
        for holder in (getattr(processor, "tokenizer", None), processor):
            init_kwargs: dict[str, Any] | None = getattr(holder, "init_kwargs", None)
            if isinstance(init_kwargs, dict):
                init_kwargs.pop("min_pixels", None)
                init_kwargs.pop("max_pixels", None)
                if "size" in init_kwargs:
                    init_kwargs["size"] = dict(size)

    def input_size(self, ip, w, h):
        from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize
        lo, hi = self.limits(ip)
        rh, rw = smart_resize(h, w, factor=ip.patch_size * ip.merge_size, min_pixels=lo, max_pixels=hi)
        return rw, rh

    def visual_tokens(self, processor, w, h):
        ip = image_processor_of(processor)
        rw, rh = self.input_size(ip, w, h)
        return (rh // ip.patch_size) * (rw // ip.patch_size) // (ip.merge_size ** 2)

    def fed(self, processor, image):
        ip = image_processor_of(processor)
        if processor is ip:
            out = ip(images=[image], return_tensors="pt")
        else:
            token = getattr(processor, "image_token", None) or "<|image_pad|>"
            out = processor(text=[token], images=[image], return_tensors="pt")
        _, gh, gw = (int(v) for v in out["image_grid_thw"][0])
        return (gw * ip.patch_size, gh * ip.patch_size), gh * gw // ip.merge_size ** 2

    def engine_kwargs(self, ip):
        lo, hi = self.limits(ip)
        return {"min_pixels": lo, "max_pixels": hi}


class FixedSquare(ImageRule):
    """Gemma 3: every image stretched to the one size its vision tower was built for (896x896), a fixed
    number of tokens (`image_seq_length`); pan-and-scan crops (extra images, extra tokens) kept off."""

    def handles(self, ip) -> bool:
        return hasattr(ip, "do_pan_and_scan")

    def limits(self, ip):
        w, h = self.input_size(ip, 1, 1)
        return w * h, w * h

    def set_limits(self, processor, min_pixels, max_pixels):
        ip = image_processor_of(processor)
        ip.do_pan_and_scan = False
        w, h = self.input_size(ip, 1, 1)
        if not min_pixels <= w * h <= max_pixels:
            raise ValueError(f"this model sees every image as one {w}x{h} square ({w * h} pixels); image-size "
                             f"limits {min_pixels}..{max_pixels} cannot change that")

    def input_size(self, ip, w, h):
        return int(_size_get(ip.size, "width")), int(_size_get(ip.size, "height"))

    def visual_tokens(self, processor, w, h):
        return int(processor.image_seq_length)

    def fed(self, processor, image):
        out = processor(text=[processor.image_token], images=[image], return_tensors="pt")
        ph, pw = out["pixel_values"].shape[-2:]
        return (int(pw), int(ph)), int((out["input_ids"][0] == processor.tokenizer.image_token_id).sum())

    def engine_kwargs(self, ip):
        return {"do_pan_and_scan": False}


class LongestEdgeTiles(ImageRule):
    """SmolVLM: the longest edge resized to `size.longest_edge` (up or down), both sides rounded up to whole
    tiles of `max_image_size`, the tiles plus the whole image squashed to one tile, `image_seq_len` tokens each.
    The limits are the tile (min) and the square of the longest edge (max)."""

    def handles(self, ip) -> bool:
        return hasattr(ip, "do_image_splitting") and hasattr(ip, "max_image_size")

    @staticmethod
    def _tile(ip) -> int:
        return int(_size_get(ip.max_image_size, "longest_edge"))

    def limits(self, ip):
        return self._tile(ip) ** 2, int(_size_get(ip.size, "longest_edge")) ** 2

    def set_limits(self, processor, min_pixels, max_pixels):
        ip = image_processor_of(processor)
        ip.do_image_splitting = True
        tile = self._tile(ip)
        ip.size = {"longest_edge": max(tile, int(max_pixels ** 0.5) // tile * tile)}

    def _patches(self, ip, w, h) -> tuple[int, int, int]:
        return ip.get_number_of_image_patches(h, w)  # the library's own rule: (tiles + 1 or 0, rows, cols)

    def input_size(self, ip, w, h):
        n, rows, cols = self._patches(ip, w, h)
        tile = self._tile(ip)
        return (cols * tile, rows * tile) if n else (tile, tile)

    def visual_tokens(self, processor, w, h):
        return processor.image_seq_len * max(1, self._patches(image_processor_of(processor), w, h)[0])

    def fed(self, processor, image):
        ip = image_processor_of(processor)
        tiles = ip(images=[[image]], return_row_col_info=True)
        rows, cols, tile = int(tiles["rows"][0][0]), int(tiles["cols"][0][0]), int(tiles["pixel_values"].shape[-1])
        out = processor(text=[processor.image_token], images=[[image]], return_tensors="pt")
        tokens = int((out["input_ids"][0] == processor.image_token_id).sum())
        return ((cols * tile, rows * tile) if rows else (tile, tile)), tokens

    def engine_kwargs(self, ip):
        return {"size": {"longest_edge": int(_size_get(ip.size, "longest_edge"))}}


class AspectGridTiles(ImageRule):
    """InternVL (GotOcr2's image processor): the image stretched onto the grid of `size` tiles closest to its
    aspect ratio with min..max_patches tiles (`get_optimal_tiled_canvas`), plus a thumbnail when there are
    several, `image_seq_length` tokens each. The limits are min/max_patches x the tile's area."""

    def handles(self, ip) -> bool:
        return hasattr(ip, "crop_to_patches") and hasattr(ip, "max_patches")

    @staticmethod
    def _tile(ip) -> tuple[int, int]:
        return int(_size_get(ip.size, "width")), int(_size_get(ip.size, "height"))

    def limits(self, ip):
        tw, th = self._tile(ip)
        return ip.min_patches * tw * th, ip.max_patches * tw * th

    def set_limits(self, processor, min_pixels, max_pixels):
        ip = image_processor_of(processor)
        tw, th = self._tile(ip)
        ip.crop_to_patches = True
        ip.min_patches = max(1, min_pixels // (tw * th))
        ip.max_patches = max(ip.min_patches, max_pixels // (tw * th))

    def input_size(self, ip, w, h):
        from transformers.models.got_ocr2.image_processing_got_ocr2 import get_optimal_tiled_canvas
        tw, th = self._tile(ip)
        cols, rows = get_optimal_tiled_canvas((h, w), (th, tw), ip.min_patches, ip.max_patches)
        return cols * tw, rows * th

    def visual_tokens(self, processor, w, h):
        return processor.image_seq_length * image_processor_of(processor).get_number_of_image_patches(h, w)

    def fed(self, processor, image):
        """The processor's output holds its tiles, not their grid: the canvas is read back from the tiles and the
        thumbnail (which of the grids of that many tiles reassembles the thumbnail), the tokens counted. The tiling
        depends on the size alone, so a gradient of the image's size is fed: it tells every grid apart."""
        import numpy as np
        import torch
        from PIL import Image
        w, h = image.size
        ramp = np.zeros((h, w, 3), dtype=np.uint8)
        ramp[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
        ramp[..., 1] = np.linspace(0, 255, h, dtype=np.uint8)[:, None]
        out = processor(text=[processor.image_token], images=[Image.fromarray(ramp)], return_tensors="pt")
        tokens = int((out["input_ids"][0] == processor.image_token_id).sum())
        tiles = out["pixel_values"]  # (tiles [+ thumbnail], 3, th, tw)
        th, tw = tiles.shape[-2:]
        if len(tiles) == 1:
            return (int(tw), int(th)), tokens
        grid, thumb = tiles[:-1], tiles[-1:]
        best, best_err = None, float("inf")
        for cols in range(1, len(grid) + 1):
            if len(grid) % cols:
                continue
            rows = len(grid) // cols
            canvas = grid.reshape(rows, cols, 3, th, tw).permute(2, 0, 3, 1, 4).reshape(1, 3, rows * th, cols * tw)
            err = float((torch.nn.functional.interpolate(canvas, size=(th, tw), mode="area") - thumb).abs().mean())
            if err < best_err:
                best, best_err = (cols * int(tw), rows * int(th)), err
        return best, tokens

    def engine_kwargs(self, ip):
        # The HF layout's processor kwargs (vLLM runs the checkpoint's own HF processor for it).
        return {"crop_to_patches": True, "min_patches": ip.min_patches, "max_patches": ip.max_patches}


RULES: list[ImageRule] = [DynamicResize(), FixedSquare(), LongestEdgeTiles(), AspectGridTiles()]
