"""Model shapes for the GPU memory estimate: the published checkpoints' sizes (every family's), a local folder's
config.json, and each kind of processor's rule for the visual tokens of an image no processor has seen (Qwen's
dynamic resize, Gemma 3's fixed square, SmolVLM's longest-edge tiles, InternVL's aspect-ratio grid). Pure Python,
no torch: the page estimates without loading a processor; tests check every rule against the real processor
(backend/engine/image_rules.py)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs of a model; parameter counts in billions."""
    name: str
    language_params_b: float
    vision_params_b: float
    hidden: int
    layers: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied_embeddings: bool
    vision_hidden: int
    vision_intermediate: int
    vision_heads: int
    vision_mlp_matrices: int = 3
    """3 for a SwiGLU MLP (Qwen2.5-VL), 2 for fc1/fc2 (Qwen2-VL, Qwen3-VL)."""
    patch: int = 14
    merge: int = 2
    """A visual token is merge x merge patches of patch x patch pixels."""
    tiling: str = "dynamic"
    """How an image becomes visual tokens: "dynamic" (Qwen: any size on the patch grid within min/max pixels),
    "square" (Gemma 3: one fixed tile), "longest_edge" (SmolVLM: the longest edge resized, cut into tiles, plus the
    whole image as one more), "grid" (InternVL: the grid of tiles closest to the aspect ratio, plus a thumbnail)."""
    tile: int = 0
    """A tile's side in pixels (tiled kinds)."""

    @property
    def tile_tokens(self) -> int:
        """Visual tokens of one tile."""
        return (self.tile // self.patch // self.merge) ** 2

    @property
    def total_params_b(self) -> float:
        return self.language_params_b + self.vision_params_b

    @property
    def pixels_per_token(self) -> int:
        return (self.patch * self.merge) ** 2

    @property
    def language_linear_params(self) -> float:
        """Parameters of the 7 projections in all decoder layers (what 4-bit quantises)."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        per_layer = self.hidden * q + 2 * self.hidden * kv + q * self.hidden + 3 * self.hidden * self.intermediate
        return float(self.layers * per_layer)

    def lora_params(self, rank: int) -> float:
        """LoRA A and B of the 7 projections per layer: rank x (in + out) each."""
        h, i = self.hidden, self.intermediate
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        per_layer = (h + q) + 2 * (h + kv) + (q + h) + 2 * (h + i) + (i + h)
        return float(self.layers * rank * per_layer)


def _shape(name, language_b, vision_b, **kw) -> ModelShape:
    return ModelShape(name, language_b, vision_b, **kw)


_QWEN2_VISION = dict(vision_hidden=1280, vision_intermediate=5120, vision_heads=16, vision_mlp_matrices=2)
_QWEN25_VISION = dict(vision_hidden=1280, vision_intermediate=3420, vision_heads=16, vision_mlp_matrices=3)
_QWEN3_VISION_S = dict(vision_hidden=1024, vision_intermediate=4096, vision_heads=16, vision_mlp_matrices=2, patch=16)
_QWEN3_VISION_L = dict(vision_hidden=1152, vision_intermediate=4304, vision_heads=16, vision_mlp_matrices=2, patch=16)
# SigLIP so400m at 896 px, its 64x64 patches pooled 4x4 into 256 tokens (Gemma 3).
_GEMMA3_VISION = dict(vision_hidden=1152, vision_intermediate=4304, vision_heads=16, vision_mlp_matrices=2, patch=14,
                      merge=4, tiling="square", tile=896)
# SmolVLM2: SigLIP base at 512-px tiles (256M, 500M) or so400m at 384-px tiles (2.2B), pixel-shuffled into 64 / 81
# tokens a tile.
_SMOLVLM_VISION_512 = dict(vision_hidden=768, vision_intermediate=3072, vision_heads=12, vision_mlp_matrices=2,
                           patch=16, merge=4, tiling="longest_edge", tile=512)
_SMOLVLM_VISION_384 = dict(vision_hidden=1152, vision_intermediate=4304, vision_heads=16, vision_mlp_matrices=2,
                           patch=14, merge=3, tiling="longest_edge", tile=384)
# InternViT-300M: 448-px tiles of 14-px patches, pixel-shuffled by 0.5 into 256 tokens a tile.
_INTERNVL_VISION = dict(vision_hidden=1024, vision_intermediate=4096, vision_heads=16, vision_mlp_matrices=2,
                        patch=14, merge=2, tiling="grid", tile=448)

MODEL_SHAPES: dict[str, ModelShape] = {s.name: s for s in (
    _shape("Qwen/Qwen2-VL-2B-Instruct", 1.54, 0.67, hidden=1536, layers=28, intermediate=8960, heads=12,
           kv_heads=2, head_dim=128, vocab=151936, tied_embeddings=True, **_QWEN2_VISION),
    _shape("Qwen/Qwen2-VL-7B-Instruct", 7.62, 0.67, hidden=3584, layers=28, intermediate=18944, heads=28,
           kv_heads=4, head_dim=128, vocab=152064, tied_embeddings=False, **_QWEN2_VISION),
    _shape("Qwen/Qwen2.5-VL-3B-Instruct", 3.09, 0.67, hidden=2048, layers=36, intermediate=11008, heads=16,
           kv_heads=2, head_dim=128, vocab=151936, tied_embeddings=True, **_QWEN25_VISION),
    _shape("Qwen/Qwen2.5-VL-7B-Instruct", 7.62, 0.67, hidden=3584, layers=28, intermediate=18944, heads=28,
           kv_heads=4, head_dim=128, vocab=152064, tied_embeddings=False, **_QWEN25_VISION),
    _shape("Qwen/Qwen3-VL-2B-Instruct", 1.72, 0.41, hidden=2048, layers=28, intermediate=6144, heads=16,
           kv_heads=8, head_dim=128, vocab=151936, tied_embeddings=True, **_QWEN3_VISION_S),
    _shape("Qwen/Qwen3-VL-4B-Instruct", 4.02, 0.41, hidden=2560, layers=36, intermediate=9728, heads=32,
           kv_heads=8, head_dim=128, vocab=151936, tied_embeddings=True, **_QWEN3_VISION_S),
    _shape("Qwen/Qwen3-VL-8B-Instruct", 8.19, 0.58, hidden=4096, layers=36, intermediate=12288, heads=32,
           kv_heads=8, head_dim=128, vocab=151936, tied_embeddings=False, **_QWEN3_VISION_L),
    # The families beyond Qwen, from their published configs; parameter counts summed from those layer sizes
    # (InternVL 3.5's language models are Qwen3-0.6B/1.7B/4B/8B).
    _shape("google/gemma-3-4b-it", 3.88, 0.42, hidden=2560, layers=34, intermediate=10240, heads=8, kv_heads=4,
           head_dim=256, vocab=262208, tied_embeddings=True, **_GEMMA3_VISION),
    _shape("google/gemma-3-12b-it", 11.77, 0.42, hidden=3840, layers=48, intermediate=15360, heads=16, kv_heads=8,
           head_dim=256, vocab=262208, tied_embeddings=True, **_GEMMA3_VISION),
    _shape("HuggingFaceTB/SmolVLM2-256M-Video-Instruct", 0.135, 0.093, hidden=576, layers=30, intermediate=1536,
           heads=9, kv_heads=3, head_dim=64, vocab=49280, tied_embeddings=True, **_SMOLVLM_VISION_512),
    _shape("HuggingFaceTB/SmolVLM2-500M-Video-Instruct", 0.362, 0.093, hidden=960, layers=32, intermediate=2560,
           heads=15, kv_heads=5, head_dim=64, vocab=49280, tied_embeddings=True, **_SMOLVLM_VISION_512),
    _shape("HuggingFaceTB/SmolVLM2-2.2B-Instruct", 1.71, 0.43, hidden=2048, layers=24, intermediate=8192, heads=32,
           kv_heads=32, head_dim=64, vocab=49280, tied_embeddings=True, **_SMOLVLM_VISION_384),
    _shape("OpenGVLab/InternVL3_5-1B-HF", 0.60, 0.30, hidden=1024, layers=28, intermediate=3072, heads=16,
           kv_heads=8, head_dim=128, vocab=151936, tied_embeddings=True, **_INTERNVL_VISION),
    _shape("OpenGVLab/InternVL3_5-2B-HF", 1.72, 0.30, hidden=2048, layers=28, intermediate=6144, heads=16,
           kv_heads=8, head_dim=128, vocab=151936, tied_embeddings=True, **_INTERNVL_VISION),
    _shape("OpenGVLab/InternVL3_5-4B-HF", 4.02, 0.30, hidden=2560, layers=36, intermediate=9728, heads=32,
           kv_heads=8, head_dim=128, vocab=151936, tied_embeddings=True, **_INTERNVL_VISION),
    _shape("OpenGVLab/InternVL3_5-8B-HF", 8.19, 0.30, hidden=4096, layers=36, intermediate=12288, heads=32,
           kv_heads=8, head_dim=128, vocab=151936, tied_embeddings=False, **_INTERNVL_VISION),
)}


def _side(size) -> int:
    """A patch size written as one side or as [height, width] (InternVL's config)."""
    return int(size[0]) if isinstance(size, (list, tuple)) else int(size)


def _tiles_of(config: dict, vision: dict, patch: int) -> dict:
    """The tiled families' image rule from their config: the tile (the tower's input size) and the merge that
    makes a tile's tokens. Empty for Qwen's dynamic resize."""
    kind = config.get("model_type")
    tile = _side(vision.get("image_size", 0))
    if kind == "gemma3":  # its patches pooled into mm_tokens_per_image tokens
        return dict(tiling="square", tile=tile,
                    merge=round((tile // patch) / math.isqrt(config.get("mm_tokens_per_image", 256))))
    if kind in ("smolvlm", "idefics3"):  # pixel shuffle by scale_factor
        return dict(tiling="longest_edge", tile=tile, merge=int(config.get("scale_factor", 2)))
    if kind == "internvl":  # pixel shuffle by downsample_ratio
        return dict(tiling="grid", tile=tile, merge=round(1 / config.get("downsample_ratio", 0.5)))
    return dict(merge=vision.get("spatial_merge_size", 2))


def shape_from_config(config: dict, name: str) -> ModelShape:
    """The shape of a model from its config.json (a local folder: nothing to download), for every family's layout
    (Qwen's depth/num_heads/embed_dim, the SigLIP and InternViT towers' num_hidden_layers/num_attention_heads).
    Parameter counts are summed from the layer sizes (biases, norms and patch embeddings left out)."""
    text = config.get("text_config") or config
    vision = config.get("vision_config") or {}
    h, layers, inter = text["hidden_size"], text["num_hidden_layers"], text["intermediate_size"]
    heads, kv = text["num_attention_heads"], text.get("num_key_value_heads", text["num_attention_heads"])
    head_dim = text.get("head_dim") or h // heads
    vocab, tied = text["vocab_size"], bool(config.get("tie_word_embeddings", text.get("tie_word_embeddings", False)))
    q = heads * head_dim
    language = layers * (h * q + 2 * h * kv * head_dim + q * h + 3 * h * inter) + vocab * h * (1 if tied else 2)
    vh = vision.get("hidden_size") if config.get("model_type") != "qwen2_vl" else vision.get("embed_dim")
    vh = vh or vision.get("embed_dim") or vision.get("hidden_size", 1280)
    matrices = 3 if config.get("model_type") == "qwen2_5_vl" else 2
    vi = vision.get("intermediate_size") or int(vh * vision.get("mlp_ratio", 4))
    depth = vision.get("depth") or vision.get("num_hidden_layers", 32)
    vision_params = depth * (4 * vh * vh + matrices * vh * vi)
    patch = _side(vision.get("patch_size", 14))
    return ModelShape(name, language / 1e9, vision_params / 1e9, hidden=h, layers=layers, intermediate=inter,
                      heads=heads, kv_heads=kv, head_dim=head_dim, vocab=vocab, tied_embeddings=tied,
                      vision_hidden=vh, vision_intermediate=vi,
                      vision_heads=vision.get("num_heads") or vision.get("num_attention_heads", 16),
                      vision_mlp_matrices=matrices, patch=patch, **_tiles_of(config, vision, patch))


def model_shape(model: str) -> ModelShape:
    """The shape of a model: a local folder (its config.json), a hub id of the table, or a name
    containing e.g. 'qwen2.5-vl-7b'."""
    config = Path(model).expanduser() / "config.json"
    if config.is_file():
        return shape_from_config(json.loads(config.read_text()), model)
    if model in MODEL_SHAPES:
        return MODEL_SHAPES[model]
    lowered = model.lower().replace("_", "-")
    for name, shape in MODEL_SHAPES.items():
        key = name.split("/")[1].lower().replace("_", "-").replace("-instruct", "")
        if key in lowered:
            return shape
    raise ValueError(f"no memory shape for '{model}' (known: {', '.join(MODEL_SHAPES)}); "
                     f"give its parameter counts with approximate_shape()")


def family_limits(model: str | ModelShape) -> tuple[int, int]:
    """(min_pixels, max_pixels) the processor gets when a run sets none: the model's family's defaults
    (backend/scoring/families.py) for a published checkpoint, a name containing one, or a local folder;
    Visual-RFT's 3136..401408 for a model of no known family."""
    from backend.engine.families import family_of_folder
    from backend.scoring.families import KNOWN_MODELS, get_family
    name = model.name if isinstance(model, ModelShape) else model
    family = KNOWN_MODELS.get(name)
    if family is None and (Path(name).expanduser() / "config.json").is_file():
        try:
            family = family_of_folder(Path(name).expanduser())
        except ValueError:
            family = None
    if family is None:
        try:
            family = KNOWN_MODELS.get(model_shape(name).name)
        except ValueError:
            family = None
    if family is None:
        return 3136, 401408
    f = get_family(family)
    return f.min_pixels, f.max_pixels


def approximate_shape(language_params_b: float, vision_params_b: float, name: str = "custom") -> ModelShape:
    """A shape for other parameter counts: the nearest known language model, widened to match."""
    nearest = min(MODEL_SHAPES.values(), key=lambda s: abs(math.log(s.language_params_b / language_params_b)))
    scale = math.sqrt(language_params_b / nearest.language_params_b)
    return replace(nearest, name=name, language_params_b=language_params_b, vision_params_b=vision_params_b,
                   hidden=max(64, round(nearest.hidden * scale / 64) * 64),
                   intermediate=max(64, round(nearest.intermediate * scale / 64) * 64))


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """The Qwen processors' resize rule, for estimates made where no processor is loaded (the page
    does not import transformers). What a loaded model really sees is backend/engine/model_input.py's answer;
    tests/test_model_input.py checks the two agree on photo sizes."""
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


def visual_tokens_for(width: int, height: int, shape: ModelShape | str = "Qwen/Qwen2.5-VL-7B-Instruct",
                      max_pixels: int | None = None, min_pixels: int = 3136) -> int:
    """Visual tokens one image becomes, by the rule of the shape's kind of processor. For Qwen's dynamic resize
    max_pixels=None is no cap (as the measured runs had); for the tiled kinds it is the family's default limit."""
    shape = model_shape(shape) if isinstance(shape, str) else shape
    if shape.tiling == "dynamic":
        factor = shape.patch * shape.merge
        h, w = smart_resize(height, width, factor, min_pixels, max_pixels if max_pixels else 10 ** 12)
        return (h // factor) * (w // factor)
    if max_pixels is None:
        max_pixels = family_limits(shape)[1]
    return shape.tile_tokens * _TILES[shape.tiling](width, height, shape.tile, min_pixels, max_pixels)


def _square_tiles(width: int, height: int, tile: int, min_pixels: int, max_pixels: int) -> int:
    """Gemma 3: the image stretched to one square (pan-and-scan kept off)."""
    return 1


SMOLVLM_MAX_SIDE = 4096
"""SmolVLM's processor never resizes a side past this (MAX_IMAGE_SIZE in transformers)."""


def _longest_edge_tiles(width: int, height: int, tile: int, min_pixels: int, max_pixels: int) -> int:
    """SmolVLM (`get_number_of_image_patches`): the longest edge resized to the largest multiple of the tile within
    sqrt(max_pixels), the other kept in proportion (rounded up to even); both sides rounded up to whole tiles; more
    than one tile adds the whole image as one more."""
    longest = max(tile, math.isqrt(max_pixels) // tile * tile)
    aspect = width / height
    if width >= height:
        w, h = longest, int(longest / aspect)
        h += h % 2
    else:
        h, w = longest, int(longest * aspect)
        w += w % 2
    if w >= h and w > SMOLVLM_MAX_SIDE:
        w, h = SMOLVLM_MAX_SIDE, int(SMOLVLM_MAX_SIDE / aspect)
    elif h > w and h > SMOLVLM_MAX_SIDE:
        h, w = SMOLVLM_MAX_SIDE, int(SMOLVLM_MAX_SIDE * aspect)
    w, h = max(w, 1), max(h, 1)
    rows, cols = math.ceil(h / tile), math.ceil(w / tile)
    return rows * cols + 1 if rows * cols > 1 else 1


def _grid_tiles(width: int, height: int, tile: int, min_pixels: int, max_pixels: int) -> int:
    """InternVL (`get_optimal_tiled_canvas`): of the grids of min..max tiles, the one closest to the image's aspect
    ratio (on a tie, more tiles while the image's area exceeds half of theirs); more than one tile adds a
    thumbnail."""
    lo = max(1, min_pixels // tile ** 2)
    hi = max(lo, max_pixels // tile ** 2)
    grids = sorted([(c, r) for c in range(1, hi + 1) for r in range(1, hi + 1) if lo <= c * r <= hi],
                   key=lambda g: g[0] * g[1])
    aspect, area = width / height, width * height
    best, best_diff = (1, 1), float("inf")
    for cols, rows in grids:
        diff = abs(aspect - cols / rows)
        if diff < best_diff:
            best, best_diff = (cols, rows), diff
        elif diff == best_diff and area > 0.5 * tile * tile * cols * rows:
            best = (cols, rows)
    n = best[0] * best[1]
    return n + 1 if n > 1 else 1


_TILES = {"square": _square_tiles, "longest_edge": _longest_edge_tiles, "grid": _grid_tiles}
